# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each role's README.md is what scripts/role_readme.py renders from its argument_specs.yml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

COLLECTION_ROOT = Path(__file__).resolve().parents[3]


def test_role_readmes_match_their_argument_specs():
    proc = subprocess.run([sys.executable, str(COLLECTION_ROOT / "scripts" / "role_readme.py"), "--check",
                           str(COLLECTION_ROOT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_role_has_a_readme():
    for spec in COLLECTION_ROOT.glob("roles/*/meta/argument_specs.yml"):
        assert (spec.parent.parent / "README.md").is_file(), spec
