# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dr_drill role's scenario table is consistent: every known scenario has its task file, the
default order and the inventories' fediflow_drill_scenarios name only known scenarios, and the
playbook's drill_failover=false skips exactly the three scenarios that move production (or work where it
moved)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

COLLECTION_ROOT = Path(__file__).resolve().parents[3]
ROLE = COLLECTION_ROOT / "roles" / "dr_drill"


def _yaml(path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _known():
    return _yaml(ROLE / "vars" / "main.yml")["_dr_drill_known"]


def _default_order():
    text = _yaml(ROLE / "defaults" / "main.yml")["dr_drill_scenarios"]
    match = re.search(r"default\((\[.*?\])\)", text)
    assert match, text
    return yaml.safe_load(match.group(1))


def test_every_known_scenario_has_its_task_file():
    for name in _known():
        assert (ROLE / "tasks" / ("%s.yml" % name.replace("-", "_"))).is_file(), name


# scenarios only the lab can run (it partitions a region through its control plane): not in the default order
LAB_ONLY = ["partition"]


def test_default_order_is_every_scenario_once():
    order = _default_order()
    assert sorted(order + LAB_ONLY) == sorted(_known()) and len(set(order)) == len(order)
    assert order.index("pitr") < order.index("region-failover") < order.index("failback")


@pytest.mark.parametrize("inventory", ["lab", "production.example"])
def test_inventory_scenarios_are_known_and_in_the_default_order(inventory):
    path = COLLECTION_ROOT / "inventories" / inventory / "group_vars" / "all" / "drill.yml"
    if not path.is_file():
        pytest.skip("%s not in this copy" % path)
    scenarios = _yaml(path)["fediflow_drill_scenarios"]
    assert scenarios == _default_order() + (LAB_ONLY if inventory == "lab" else [])


def _tasks(tasks):
    """Every task of a list, those inside blocks (block, rescue, always) too."""
    for task in tasks or []:
        yield task
        for section in ("block", "rescue", "always"):
            yield from _tasks(task.get(section))


def test_drill_failover_false_skips_the_scenarios_that_move_production():
    play = _yaml(COLLECTION_ROOT / "playbooks" / "dr_drill.yml")[0]
    skip = [t for t in _tasks(play["tasks"]) if (t.get("ansible.builtin.include_role") or {}).get("name")
            == "fediflow.dr.dr_drill"][0]["vars"]["dr_drill_skip"]
    moving = ["region-failover", "region-recover", "failback", "partition"]
    assert str(moving) in skip and set(moving) <= set(_known())
