# -*- coding: utf-8 -*-
"""Every collection a shipped playbook, role, inventory or plugin uses is declared where an install
reads it: galaxy.yml's dependencies (ansible-galaxy installs them with the tarball) and the execution
environment's ee-requirements.yml (ansible-builder installs them into the image), with the same version
ranges; and nothing is declared that nothing uses. A use is a fully qualified name the way Ansible
resolves it: a task's module (`amazon.aws.s3_object:`), a module_defaults action group
(`group/amazon.aws.aws`), a role (`include_role: name:`, `roles:`, role dependencies), a filter, test or
lookup in a Jinja expression (`| community.general.dict_kv`, `lookup('ns.coll.x', ...)`), a connection,
become or inventory plugin, an action group member in meta/runtime.yml, a doc fragment or a Python import
(`ansible_collections.ns.coll`). Prose (comments, descriptions, `seealso` links) is not a use.
ansible.builtin and ansible.legacy ship with ansible-core; every other namespace.collection needs declaring."""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SELF = "fediflow.dr"
CORE = {"ansible.builtin", "ansible.legacy"}
SCANNED = ("playbooks", "roles", "plugins", "inventories", "meta")
# Declared although no file names it: {collection: why}. Empty today; a dependency kept for a reason
# other than a use in a shipped file says the reason here.
KEPT = {}

NAME = r"[a-z0-9_]+"
FQCN = r"%s\.%s(?:\.%s)+" % (NAME, NAME, NAME)
KEY = re.compile(r"(?:group/)?(%s)" % FQCN)
JINJA = [re.compile(r"\|\s*(%s)" % FQCN),  # filter
         re.compile(r"\bis\s+(?:not\s+)?(%s)" % FQCN),  # test
         re.compile(r"\b(?:lookup|query|q)\(\s*['\"](%s)['\"]" % FQCN),  # lookup
         # a filter or test by name: map('ns.coll.f', ...), select('ns.coll.t'), selectattr('a.dotted.attr', 'ns.coll.t')
         re.compile(r"\b(?:map|select|reject)\(\s*['\"](%s)['\"]" % FQCN),
         re.compile(r"\b(?:selectattr|rejectattr)\(\s*['\"][^'\"]*['\"]\s*,\s*['\"](%s)['\"]" % FQCN)]
# keys whose value is a plugin or playbook name
PLUGIN_VALUE = {"connection", "ansible_connection", "become_method", "ansible_become_method", "plugin", "strategy",
                "import_playbook", "ansible.builtin.import_playbook"}
ROLE_CALL = {"include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role"}


def collection_of(fqcn):
    """namespace.collection of a fully qualified name (or of a collection name itself)."""
    return ".".join(fqcn.split(".")[:2])


class _Loader(yaml.SafeLoader):
    """safe_load that keeps going over Ansible's own tags (!unsafe, !vault): their values are scanned as text."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None)


def _role_names(value):
    for item in value if isinstance(value, list) else []:
        name = item if isinstance(item, str) else (item or {}).get("role") or (item or {}).get("name")
        if isinstance(name, str) and re.fullmatch(FQCN, name):
            yield name


def uses_in_data(data):
    """Fully qualified names a loaded playbook, task file, role meta, inventory or runtime.yml uses."""
    found = set()
    if isinstance(data, dict):
        for key, value in data.items():
            key = str(key)
            match = KEY.fullmatch(key)
            if match:
                found.add(match.group(1))  # a task's module or a module_defaults entry
            if key in PLUGIN_VALUE and isinstance(value, str) and re.fullmatch(FQCN, value):
                found.add(value)
            if key in ROLE_CALL and isinstance(value, dict):
                found.update(_role_names([value]))
            if key in ("roles", "dependencies"):
                found.update(_role_names(value))
            if key == "collections" and isinstance(value, list):
                found.update(c for c in value if isinstance(c, str) and re.fullmatch(r"%s\.%s" % (NAME, NAME), c))
            if key == "action_groups" and isinstance(value, dict):
                found.update(m for members in value.values() for m in members or [] if isinstance(m, str) and re.fullmatch(FQCN, m))
            found |= uses_in_data(value)
    elif isinstance(data, list):
        for item in data:
            found |= uses_in_data(item)
    elif isinstance(data, str):
        found |= uses_in_text(data)
    return found


def uses_in_text(text):
    """Filters, tests and lookups named in Jinja (a template, a task's string, a bare `when:`)."""
    return {m.group(1) for rx in JINJA for m in rx.finditer(text)}


def uses_in_python(source):
    """Imports from another collection, and doc fragments a module extends."""
    found = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "ansible_collections" and len(parts) >= 3:
                found.add("%s.%s" % (parts[1], parts[2]))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets) \
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            doc = yaml.safe_load(node.value.value) or {}
            fragments = doc.get("extends_documentation_fragment") if isinstance(doc, dict) else None
            found.update(f for f in ([fragments] if isinstance(fragments, str) else fragments or []) if re.fullmatch(FQCN, f))
    return found


def scan(root):
    """{namespace.collection: sorted files that use it}, for everything but ansible-core's and this collection."""
    where = defaultdict(set)
    for top in SCANNED:
        for path in sorted((root / top).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            if path.suffix in (".yml", ".yaml"):
                used = uses_in_data(yaml.load(path.read_text(), Loader=_Loader))  # noqa: S506 - a SafeLoader subclass
            elif path.suffix == ".j2":
                used = uses_in_text(path.read_text())
            elif path.suffix == ".py":
                used = uses_in_python(path.read_text())
            else:
                continue
            for fqcn in used:
                coll = collection_of(fqcn)
                if coll not in CORE and coll != SELF:
                    where[coll].add(str(path.relative_to(root)))
    return {coll: sorted(files) for coll, files in where.items()}


USED = scan(ROOT)
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"] or {}
EE = {c["name"]: c.get("version", "*") for c in yaml.safe_load((ROOT / "ee-requirements.yml").read_text())["collections"]}


def test_the_scan_sees_the_uses_it_is_meant_to_see(tmp_path):
    """The scanner itself, on a made-up collection: each kind of use counts, prose does not."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "p.yml").write_text(
        "- name: A play\n"
        "  hosts: all\n"
        "  connection: ns1.conn.kubectl\n"
        "  module_defaults:\n"
        "    group/ns2.grp.all: {}\n"
        "  roles:\n"
        "    - ns3.roles.a_role\n"
        "  tasks:\n"
        "    - name: A module  # ns9.comment.mod is prose\n"
        "      ns4.mod.thing:\n"
        "        value: \"{{ x | ns5.filt.dict_kv('k') }}\"\n"
        "      when: x is ns6.test.truthy and lookup('ns7.look.env', 'X')\n"
        "      vars:\n"
        "        mapped: \"{{ xs | map('ns15.map.dict_kv', 'k') | selectattr('a', 'ns16.sel.t') | selectattr('ns17.attr.path', 'defined') | list }}\"\n"
        "    - name: A role\n"
        "      ansible.builtin.include_role:\n"
        "        name: ns8.incl.other\n"
        "    - name: Prose\n"
        "      ansible.builtin.debug:\n"
        "        msg: see the ns10.prose.module docs at docs.example.com\n")
    (tmp_path / "plugins" / "modules").mkdir(parents=True)
    (tmp_path / "plugins" / "modules" / "m.py").write_text(
        'DOCUMENTATION = r"""\nmodule: m\nextends_documentation_fragment:\n  - ns11.frag.aws\nseealso:\n'
        '  - module: ns12.seealso.route53\n"""\n'
        "from ansible_collections.ns13.imp.plugins.module_utils.x import y\n")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "runtime.yml").write_text("action_groups:\n  g:\n    - own\n    - ns14.member.mod\n")
    found = scan(tmp_path)
    assert set(found) == {"ns1.conn", "ns2.grp", "ns3.roles", "ns4.mod", "ns5.filt", "ns6.test", "ns7.look", "ns8.incl",
                          "ns11.frag", "ns13.imp", "ns14.member", "ns15.map", "ns16.sel"}, sorted(found)
    assert found["ns4.mod"] == ["playbooks/p.yml"] and found["ns11.frag"] == ["plugins/modules/m.py"]


def test_the_scan_finds_what_this_collection_is_known_to_use():
    assert {"amazon.aws", "community.postgresql", "kubernetes.core", "community.general"} <= set(USED), sorted(USED)


@pytest.mark.parametrize("collection", sorted(USED))
def test_every_used_collection_is_declared_for_galaxy_and_the_execution_environment(collection):
    where = ", ".join(USED[collection][:5])
    assert collection in GALAXY, "%s is used (%s) but not in galaxy.yml dependencies" % (collection, where)
    assert collection in EE, "%s is used (%s) but not in ee-requirements.yml" % (collection, where)


def test_nothing_is_declared_that_nothing_uses():
    assert set(KEPT) <= set(GALAXY), sorted(set(KEPT) - set(GALAXY))
    for declared, name in ((GALAXY, "galaxy.yml"), (EE, "ee-requirements.yml")):
        unused = sorted(set(declared) - set(USED) - set(KEPT))
        assert not unused, "%s declares %s, which no playbook, role, inventory or plugin uses" % (name, unused)


def test_galaxy_and_the_execution_environment_ask_for_the_same_versions():
    assert set(EE) == set(GALAXY)
    for collection, version in GALAXY.items():
        assert str(EE[collection]) == str(version), collection
