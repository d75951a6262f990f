"""Shared by the Molecule verifiers (testinfra): the lab inventory's resolved host variables and
its home-roles check, taken from tests/integration/lab_fixtures.py (FEDIFLOW_LAB_INVENTORY, else
inventories/lab/hosts.yml) so the scenarios and the integration tests judge the lab the same way."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from lab_fixtures import inventory, lab_is_home, pg_role  # noqa: E402  pylint: disable=wrong-import-position

__all__ = ["ROOT", "inventory", "lab_is_home", "pg_role", "listening_ports"]


def listening_ports(primary, standby):
    """The TCP ports the lab serves, from the inventory: both PostgreSQL clusters, moto, the doubles."""
    ports = {"postgres " + primary["fediflow_region"]: primary["fediflow_pg_port"],
             "postgres " + standby["fediflow_region"]: standby["fediflow_pg_port"],
             "moto": primary["lab_moto_port"], "slack double": primary["lab_slack_port"]}
    for hvars in (primary, standby):
        api = str(hvars.get("fediflow_k8s_api_url", ""))
        if api.rsplit(":", 1)[-1].isdigit():
            ports["kubernetes double " + hvars["fediflow_region"]] = int(api.rsplit(":", 1)[-1])
    return ports
