# -*- coding: utf-8 -*-
"""meta/runtime.yml's action groups hold exactly the modules that take the group's options (its doc
fragment): `module_defaults: {group/fediflow.dr.postgres: {login_host: ...}}` gives the options to every
member, and a member without them fails with "Unsupported parameters" (pg_ctl once was one).
pg_clients (the TLS settings the playbooks give every PostgreSQL client module) adds
community.postgresql's client modules, which take ssl_mode and ca_cert too."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
GROUPS = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["action_groups"]
FRAGMENT = {"postgres": "postgres", "aws": "aws", "redis": "redis", "pg_clients": "postgres"}


def _doc(module_path):
    return yaml.safe_load(re.search(r'DOCUMENTATION = r?(?:"""|\'\'\')(.*?)(?:"""|\'\'\')', module_path.read_text(), re.S).group(1))


def _fragments(module_path):
    return set(_doc(module_path).get("extends_documentation_fragment") or [])


def test_every_group_is_known():
    assert set(GROUPS) == set(FRAGMENT)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_a_group_holds_exactly_the_modules_with_its_options(group):
    own = sorted(m for m in GROUPS[group] if "." not in m)
    with_fragment = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py")
                           if "fediflow.dr.%s" % FRAGMENT[group] in _fragments(p))
    assert with_fragment and own == with_fragment, group


def test_the_community_postgresql_members_take_the_tls_options():
    others = [m for m in GROUPS["pg_clients"] if "." in m]
    assert others and all(m.startswith("community.postgresql.") for m in others)
    assert "community.postgresql.postgresql_pg_hba" not in others  # a file editor: no connection options
    installed = ROOT.parents[1] / "community" / "postgresql" / "plugins" / "modules"
    if not installed.is_dir():
        pytest.skip("community.postgresql is not installed beside this collection")
    for fqcn in others:
        assert "community.postgresql.postgres" in _fragments(installed / (fqcn.rsplit(".", 1)[1] + ".py")), fqcn
