# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""inventories/production.example defines every variable the roles read from the lab inventory
(minus the lab-only ones), per group and per host, so a user copying it misses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
LAB = ROOT / "inventories" / "lab"
PROD = ROOT / "inventories" / "production.example"
# the lab's SSH plumbing to its namespaced region hosts (a production inventory names real hosts, its
# user and become in group_vars/all, and lets Ansible discover the host's python3)
LAB_SSH = {"ansible_connection", "ansible_host", "ansible_python_interpreter", "ansible_ssh_private_key_file",
           "ansible_ssh_common_args", "ansible_ssh_timeout"}
LAB_ONLY = LAB_SSH | {"fediflow_lab_dir",
                      "fediflow_k8s_api_url",  # the lab starts its Kubernetes double there; roles use the kubeconfig
                      # the drill's region outage and partition through the lab collection's injector, inside its namespaces
                      "fediflow_drill_outage_role", "fediflow_drill_outage_tasks_from", "fediflow_drill_app_exec"}


def _vars(*paths):
    out = {}
    for path in paths:
        for file in sorted(path.glob("*.yml")) if path.is_dir() else [path]:
            out.update(yaml.safe_load(file.read_text(encoding="utf-8")) or {})
    return {k: v for k, v in out.items() if not k.startswith("lab_")}


def _hosts(inv):
    data = yaml.safe_load((inv / "hosts.yml").read_text(encoding="utf-8"))
    return {group: list(body["hosts"]) for group, body in data["all"]["children"].items()}


def test_same_groups():
    assert set(_hosts(LAB)) == set(_hosts(PROD)) == {"region_primary", "region_secondary"}


def test_all_group_variables_present():
    missing = set(_vars(LAB / "group_vars" / "all")) - set(_vars(PROD / "group_vars" / "all")) - LAB_ONLY
    assert not missing, "production.example lacks %s" % sorted(missing)


@pytest.mark.parametrize("group", ["region_primary", "region_secondary"])
def test_region_variables_present(group):
    lab = _vars(LAB / "group_vars" / ("%s.yml" % group))
    prod = _vars(PROD / "group_vars" / ("%s.yml" % group))
    prod_all = _vars(PROD / "group_vars" / "all")
    assert set(lab) - LAB_ONLY <= set(prod) | set(prod_all), sorted(set(lab) - LAB_ONLY - set(prod) - set(prod_all))
    assert lab["fediflow_pg_role"] == prod["fediflow_pg_role"]


@pytest.mark.parametrize("group", ["region_primary", "region_secondary"])
def test_host_variables_present(group):
    lab_host, prod_host = _hosts(LAB)[group][0], _hosts(PROD)[group][0]
    lab = _vars(LAB / "host_vars" / ("%s.yml" % lab_host))
    prod = _vars(PROD / "host_vars" / ("%s.yml" % prod_host))
    assert set(lab) - LAB_ONLY <= set(prod), "missing for %s: %s" % (prod_host, sorted(set(lab) - set(prod)))


def test_secrets_come_from_the_vault():
    values = _vars(PROD / "group_vars" / "all")
    for key in ("fediflow_pg_superuser_password", "fediflow_replication_password", "fediflow_slack_webhook_url"):
        assert values[key].startswith("{{ vault_"), key
