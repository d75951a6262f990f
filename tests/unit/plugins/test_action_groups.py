# -*- coding: utf-8 -*-
"""meta/runtime.yml's action groups hold exactly the modules that take the group's options (its doc
fragment): `module_defaults: {group/fediflow.dr.postgres: {login_host: ...}}` gives the options to every
member, and a member without them fails with "Unsupported parameters" (pg_ctl once was one)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
GROUPS = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["action_groups"]


def _fragments(module_path):
    doc = re.search(r'DOCUMENTATION = r?"""(.*?)"""', module_path.read_text(), re.S).group(1)
    return set(yaml.safe_load(doc).get("extends_documentation_fragment") or [])


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_a_group_holds_exactly_the_modules_with_its_options(group):
    with_fragment = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py")
                           if "fediflow.dr.%s" % group in _fragments(p))
    assert with_fragment, group
    assert sorted(GROUPS[group]) == with_fragment
