# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""No role default reads an unprefixed global (a `-e force=true` meant for one playbook must not steer a role
another playbook or the drill includes): a template in roles/*/defaults/main.yml names only the role's own
variables, the inventory's fediflow_* settings, Ansible's magic variables and Jinja's own names. The playbooks
map their documented `-e` names (target_region, force, region, break_lease, ...) onto the role's variables."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jinja2 import Environment, nodes

COLLECTION_ROOT = Path(__file__).resolve().parents[3]
DEFAULTS = sorted(COLLECTION_ROOT.glob("roles/*/defaults/main.yml"))

# Ansible's magic and connection variables, and Jinja/Ansible global functions.
MAGIC = {
    "hostvars", "groups", "group_names", "inventory_hostname", "inventory_hostname_short", "inventory_dir",
    "inventory_file", "playbook_dir", "role_path", "role_name", "play_hosts", "omit", "lookup", "query", "q", "now",
    "range", "dict", "lipsum", "cycler", "joiner", "namespace", "undef", "true", "false", "none", "True", "False", "None",
}
# Extra variables AWX / Automation Controller sets on every job it launches (who launched it, the job id):
# the controller's own magic variables, not a user's playbook option.
CONTROLLER = {"awx_user_name", "tower_user_name", "awx_job_id", "tower_job_id"}


def globals_read(template):
    """Names a Jinja template reads that it does not set itself (loop variables, {% set %})."""
    tree = Environment().parse(template)
    names = list(tree.find_all(nodes.Name))
    stored = {n.name for n in names if n.ctx != "load"}
    return {n.name for n in names if n.ctx == "load"} - stored


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def foreign(role, value):
    found = set()
    for text in strings(value):
        if "{{" in text or "{%" in text:
            found |= globals_read(text)
    allowed = (role + "_", "fediflow_", "ansible_")
    return sorted(n for n in found if not (n.startswith(allowed) or n in MAGIC or n in CONTROLLER))


def test_the_scan_finds_an_unprefixed_global():
    assert foreign("recover", "{{ region | default('') }}") == ["region"]
    assert foreign("recover", {"a": ["{{ hostvars[x].fediflow_region }}"]}) == ["x"]
    assert foreign("recover", "{% for h in groups.all %}{{ h }}{% endfor %}{{ recover_x | default(fediflow_y) }}") == []
    assert foreign("dr_drill", "{{ region_failover_detect_threshold | default(3) }}") == ["region_failover_detect_threshold"]


def test_defaults_found():
    assert DEFAULTS, "no roles/*/defaults/main.yml under %s" % COLLECTION_ROOT


@pytest.mark.parametrize("path", DEFAULTS, ids=lambda p: p.parent.parent.name)
def test_defaults_read_no_unprefixed_global(path):
    role = path.parent.parent.name
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    bad = {name: foreign(role, value) for name, value in data.items() if foreign(role, value)}
    assert not bad, "%s defaults read variables that are not %s_*, fediflow_* or Ansible's: %s" % (role, role, bad)
