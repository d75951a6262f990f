# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every entry point of the lab role that something includes with `tasks_from` - the lab's playbooks and tasks, and
the two hooks of fediflow.dr the lab inventory names (fence method role: fence.yml; the drill's outage injector:
outage.yml) - has an argument spec, checked as fediflow.dr checks its own roles' (its helpers, with this collection's
prefix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.fediflow.dr.tests.unit.roles import test_entry_points as product

COLLECTION_ROOT = Path(__file__).resolve().parents[3]
PREFIX = "fediflow.dr_lab."
# included by name from fediflow.dr's hooks, which read the role and its tasks_from from the lab inventory
HOOKS = [("inventories/lab: fediflow_fence", "lab", "fence.yml"),
         ("inventories/lab: fediflow_drill_outage_role", "lab", "outage.yml")]
# included by the repository's integration tests (tests/integration/playbooks/lab_redis_conf.yml)
TESTS = [("tests/integration/playbooks/lab_redis_conf.yml", "lab", "redis_conf.yml")]
FOUND = product.uses(COLLECTION_ROOT, ("roles", "playbooks"), PREFIX) + HOOKS + TESTS


def test_the_lab_playbooks_includes_are_found():
    found = {(role, name): users for role, name, users in product.entry_points(FOUND)}
    assert "playbooks/lab_up.yml" in found[("lab", "health")] and "playbooks/lab_region.yml" in found[("lab", "region")]
    assert "roles/lab/tasks/outage.yml" in found[("lab", "redis")]


def test_no_templated_tasks_from():
    assert not [use for use in FOUND if "{{" in use[2]]


@pytest.mark.parametrize("role,entry_point,used_by", product.entry_points(FOUND), ids=lambda v: v if isinstance(v, str) else "")
def test_entry_point_has_an_argument_spec(role, entry_point, used_by):
    product.check_entry_point(COLLECTION_ROOT, role, entry_point, used_by)
