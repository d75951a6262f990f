# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every role entry point the repository includes with `tasks_from` (playbooks, roles, test playbooks, molecule,
playbooks written inline by integration tests) has an entry in that role's meta/argument_specs.yml, with a short
description, a description, and a type and description for each option: Ansible validates the entry point's
variables when it is included, and the generated README documents it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

COLLECTION_ROOT = Path(__file__).resolve().parents[3]
SOURCES = ("roles", "playbooks", "molecule", "tests/integration")
INCLUDES = {"include_role", "import_role"}
PREFIX = "fediflow.dr."  # this collection's roles; the lab collection (fediflow.dr_lab) checks its own with these helpers
# A templated tasks_from, and the entry points its template can name (the playbook refuses any other value first).
TEMPLATED = {
    ("playbooks/incident_update.yml", "comms", "{{ incident_state | default('update') }}.yml"): ["open", "update", "close", "status"],
}


def inline(prefix=PREFIX):
    """A role include written inline in Python (a playbook an integration test writes), for roles of ``prefix``."""
    return re.compile(r"name:\s*%s(\w+)\s*\n\s*tasks_from:\s*['\"]?([^'\"\s]+)" % re.escape(prefix))


INLINE = inline()
TYPES = {"str", "path", "int", "float", "bool", "list", "dict", "raw"}


def _tasks(node):
    """Every mapping in a loaded YAML document (tasks, blocks, plays)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _tasks(value)
    elif isinstance(node, list):
        for item in node:
            yield from _tasks(item)


def includes_in_yaml(text, prefix=PREFIX):
    for task in _tasks(yaml.safe_load(text)):
        for key, args in task.items():
            if key.rsplit(".", 1)[-1] in INCLUDES and isinstance(args, dict) and args.get("tasks_from"):
                name = str(args.get("name") or args.get("role") or "")
                if name.startswith(prefix):
                    yield name[len(prefix):], str(args["tasks_from"])


def uses(root=COLLECTION_ROOT, sources=SOURCES, prefix=PREFIX):
    found = []
    for top in sources:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.suffix in (".yml", ".yaml") and path.is_file():
                try:
                    pairs = list(includes_in_yaml(path.read_text(encoding="utf-8"), prefix))
                except yaml.YAMLError:
                    continue  # Jinja templates shipped as .yml.j2 are not YAML yet; .yml ones are checked by lint
            elif path.suffix == ".py" and path.is_file():
                pairs = inline(prefix).findall(path.read_text(encoding="utf-8"))
            else:
                continue
            found += [(rel, role, tasks_from) for role, tasks_from in pairs]
    return found


def entry_points(found=None):
    """(role, entry point, the files that include it), one per entry point, of ``found`` (default: uses())."""
    wanted = {}
    for rel, role, tasks_from in uses() if found is None else found:
        if "{{" in tasks_from:
            names = TEMPLATED.get((rel, role, tasks_from), [None])
        else:
            names = [re.sub(r"\.ya?ml$", "", tasks_from)]
        for name in names:
            wanted.setdefault((role, str(name)), set()).add(rel)
    return [(role, name, sorted(users)) for (role, name), users in sorted(wanted.items())]


def _spec(role, root=COLLECTION_ROOT):
    path = root / "roles" / role / "meta" / "argument_specs.yml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("argument_specs") or {} if path.is_file() else {}


def test_the_scan_finds_includes():
    text = """
- name: A play
  hosts: all
  tasks:
    - name: In a block
      block:
        - name: One
          ansible.builtin.include_role:
            name: fediflow.dr.replication
            tasks_from: rejoin.yml
        - name: Not ours
          import_role: {name: community.x.y, tasks_from: z.yml}
"""
    assert list(includes_in_yaml(text)) == [("replication", "rejoin.yml")]
    assert INLINE.findall("      name: fediflow.dr.replication\n        tasks_from: rejoin.yml\n") == [("replication", "rejoin.yml")]


def test_entry_points_found():
    found = {(role, name): users for role, name, users in entry_points()}
    assert "roles/failback/tasks/rejoin.yml" in found[("replication", "rejoin")]
    assert "playbooks/failover.yml" in found[("lease", "acquire")]


def test_every_templated_tasks_from_is_declared():
    templated = {(rel, role, tf) for rel, role, tf in uses() if "{{" in tf}
    assert templated == set(TEMPLATED), "declare what each templated tasks_from can name in TEMPLATED"


@pytest.mark.parametrize("role,entry_point,used_by", entry_points(), ids=lambda v: v if isinstance(v, str) else "")
def test_entry_point_has_an_argument_spec(role, entry_point, used_by):
    check_entry_point(COLLECTION_ROOT, role, entry_point, used_by)


def check_entry_point(root, role, entry_point, used_by):
    """The entry point's tasks file exists and its argument spec describes it and each option (type, description)."""
    assert (root / "roles" / role / "tasks" / (entry_point + ".yml")).is_file(), "no tasks file"
    spec = _spec(role, root).get(entry_point)
    assert spec, "roles/%s/meta/argument_specs.yml has no entry point %s (used by %s)" % (role, entry_point, used_by)
    assert spec.get("short_description") and spec.get("description"), "%s.%s: no (short_)description" % (role, entry_point)
    for name, option in (spec.get("options") or {}).items():
        assert option.get("type") in TYPES and option.get("description"), "%s.%s: %s needs a type and a description" % (
            role, entry_point, name)
