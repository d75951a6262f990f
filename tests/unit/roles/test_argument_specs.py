# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every role's meta/argument_specs.yml documents exactly the variables of its defaults/main.yml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

# tests/unit/roles/<this file> -> the collection root (same layout in the .build copy).
COLLECTION_ROOT = Path(__file__).resolve().parents[3]
ROLES = sorted(p.parent.parent for p in COLLECTION_ROOT.glob("roles/*/defaults/main.yml"))

# Python types a literal default may have for each spec type.
LITERAL_TYPES = {
    "str": (str,),
    "path": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def _load(path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _is_template(value):
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _defaults(role):
    return _load(role / "defaults" / "main.yml") or {}


def _options(role):
    spec = _load(role / "meta" / "argument_specs.yml") or {}
    main = (spec.get("argument_specs") or {}).get("main") or {}
    return main.get("options") or {}


def test_roles_found():
    assert ROLES, "no roles/*/defaults/main.yml under %s" % COLLECTION_ROOT


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_exists(role):
    assert (role / "meta" / "argument_specs.yml").is_file()


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_names_match(role):
    defaults, options = set(_defaults(role)), set(_options(role))
    assert not defaults - options, "in defaults, not in the spec: %s" % sorted(defaults - options)
    assert not options - defaults, "in the spec, not in defaults: %s" % sorted(options - defaults)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_options_have_type_and_description(role):
    for name, option in _options(role).items():
        assert option.get("type") in LITERAL_TYPES, "%s: missing or unknown type" % name
        assert option.get("description"), "%s: no description" % name
        if option["type"] == "list":
            assert option.get("elements"), "%s: list without elements" % name


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_defaults_equal_defaults(role):
    defaults = _defaults(role)
    for name, option in _options(role).items():
        if "default" in option and name in defaults:
            assert not _is_template(defaults[name]), "%s: spec default for a templated default" % name
            assert option["default"] == defaults[name], "%s: spec default differs" % name


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_literal_defaults_match_type(role):
    options = _options(role)
    for name, value in _defaults(role).items():
        spec_type = options.get(name, {}).get("type")
        if _is_template(value) or spec_type not in LITERAL_TYPES:
            continue
        assert isinstance(value, LITERAL_TYPES[spec_type]), "%s: %r is not a %s" % (name, value, spec_type)
        if spec_type in ("int", "float"):
            assert not isinstance(value, bool), "%s: %r is not a %s" % (name, value, spec_type)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_use_role_prefix(role):
    bad = [name for name in _defaults(role) if not name.startswith(role.name + "_")]
    assert not bad, "not prefixed with %s_: %s" % (role.name, bad)
