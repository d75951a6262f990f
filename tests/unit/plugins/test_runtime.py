# -*- coding: utf-8 -*-
"""meta/runtime.yml states what is true: requires_ansible is the ansible-core minor version the tool chain
pins and tests (requirements-dev.txt, the execution environment), the roles claim the same, and every
plugin_routing redirect of a module names a module that exists, with a deprecation that says when the
old name goes and what to use instead."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
RUNTIME = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
MODULES = ROOT / "plugins" / "modules"


def _pinned(text, where):
    found = re.findall(r"ansible-core==(\d+)\.(\d+)\.\d+", text)
    assert len(found) == 1, where
    return "%s.%s" % found[0]


def test_requires_ansible_is_the_tested_minor_version():
    tested = _pinned((ROOT / "requirements-dev.txt").read_text(), "requirements-dev.txt")
    assert RUNTIME["requires_ansible"] == ">=%s.0" % tested
    assert _pinned((ROOT / "execution-environment.yml").read_text(), "execution-environment.yml") == tested


@pytest.mark.parametrize("meta", sorted((ROOT / "roles").glob("*/meta/main.yml")), ids=lambda p: p.parts[-3])
def test_every_role_claims_the_same_minimum(meta):
    tested = _pinned((ROOT / "requirements-dev.txt").read_text(), "requirements-dev.txt")
    assert str(yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"]) == tested


def test_module_redirects_point_at_modules_and_say_when_the_old_name_goes():
    version = tuple(int(x) for x in str(yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]).split("."))
    routes = RUNTIME["plugin_routing"]["modules"]
    assert "notify" in routes  # renamed to incident_notify: `notify` is a task keyword
    for old, route in routes.items():
        assert not (MODULES / (old + ".py")).exists(), old  # a redirect, not a second copy
        namespace, collection, new = route["redirect"].split(".")
        assert (namespace, collection) == ("fediflow", "dr") and (MODULES / (new + ".py")).is_file(), old
        deprecation = route["deprecation"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", str(deprecation["removal_version"])), old
        assert tuple(int(x) for x in str(deprecation["removal_version"]).split(".")) > version, old
        assert route["redirect"] in deprecation["warning_text"], old
