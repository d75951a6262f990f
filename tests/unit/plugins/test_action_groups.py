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


# The options each group's module_defaults give, from the shared argument spec the group stands for.
def _group_options(group):
    from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
    from ansible_collections.fediflow.dr.plugins.module_utils.postgres import postgres_common_argument_spec
    from ansible_collections.fediflow.dr.plugins.module_utils.redisconn import redis_common_argument_spec
    postgres = postgres_common_argument_spec()
    return {"postgres": postgres, "aws": aws_common_argument_spec(), "redis": redis_common_argument_spec(),
            "pg_clients": {name: postgres[name] for name in ("ssl_mode", "ca_cert")}}[group]


class _Captured(Exception):
    def __init__(self, spec):
        super().__init__("argument_spec captured")
        self.spec = spec


def _module_spec(fqcn, monkeypatch):
    """The argument_spec a module's main() gives AnsibleModule (captured there: nothing of the module runs)."""
    import importlib
    namespace, collection, name = fqcn.split(".")
    module = importlib.import_module("ansible_collections.%s.%s.plugins.modules.%s" % (namespace, collection, name))

    def capture(*args, **kwargs):
        raise _Captured(kwargs.get("argument_spec", args[0] if args else None))
    monkeypatch.setattr(module, "AnsibleModule", capture)
    with pytest.raises(_Captured) as captured:
        module.main()
    return captured.value.spec


@pytest.mark.parametrize("group,member", [(g, m) for g in sorted(GROUPS) for m in GROUPS[g]])
def test_every_member_takes_every_option_of_its_group(group, member, monkeypatch):
    fqcn = member if "." in member else "fediflow.dr." + member
    try:
        spec = _module_spec(fqcn, monkeypatch)
    except ImportError as exc:  # community.postgresql not installed beside this collection
        pytest.skip("%s: %s" % (fqcn, exc))
    for option, wanted in _group_options(group).items():
        assert option in spec, "%s takes no %s, an option of group %s" % (fqcn, option, group)
        if not fqcn.startswith("fediflow.dr."):
            continue  # another collection's spec: the name is the contract
        assert spec[option] == wanted, "%s: %s differs from the group's shared spec" % (fqcn, option)


def test_the_capture_tells_a_module_without_the_options(monkeypatch):
    spec = _module_spec("fediflow.dr.pg_ctl", monkeypatch)
    assert "login_host" not in spec and "data_dir" in spec
