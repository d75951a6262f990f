"""Molecule `default` verifier (testinfra, local backend): after lab up + the scheduled backup run,
the lab's services listen on the inventory's ports, region 1 is the primary and region 2 streams
from it, and the backup ledger holds a verified physical and logical backup (read from the
manifests, not from the playbook's output)."""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from lab import inventory, lab_is_home, listening, listening_ports  # noqa: E402  pylint: disable=wrong-import-position

PRIMARY, STANDBY = inventory()


def test_services_listen_on_the_inventory_addresses(host):  # pylint: disable=unused-argument
    # each service lives in its region's (or the global) network namespace: connect from the controller
    for name, (address, port) in listening_ports(PRIMARY, STANDBY).items():
        assert listening(address, port), name


def test_home_roles():
    assert lab_is_home(PRIMARY, STANDBY)


def test_backup_ledger_has_verified_backups(host):
    manifests = glob.glob(os.path.join(PRIMARY["fediflow_backup_dir"], "**", "*.json"), recursive=True)
    kinds = set()
    for path in manifests:
        try:
            with open(path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except (ValueError, OSError):
            continue
        if isinstance(doc, dict) and (doc.get("verification") or {}).get("ok") is True:
            kinds.add(doc.get("kind"))
    assert {"physical", "logical"} <= kinds, (kinds, manifests[:5])
    assert host.file(PRIMARY["fediflow_backup_dir"]).is_directory
