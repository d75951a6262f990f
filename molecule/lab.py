"""Shared by the Molecule verifiers (testinfra): the lab inventory's resolved host variables and
its home-roles check, taken from tests/integration/lab_fixtures.py (FEDIFLOW_LAB_INVENTORY, else
inventories/lab/hosts.yml) so the scenarios and the integration tests judge the lab the same way."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from lab_fixtures import inventory, lab_is_home, listening, pg_role  # noqa: E402  pylint: disable=wrong-import-position

__all__ = ["ROOT", "inventory", "lab_is_home", "listening", "pg_role", "listening_ports"]


def listening_ports(primary, standby):
    """(address, port) of every TCP service the lab serves, from the inventory: both PostgreSQL clusters
    and Redis servers, each region's Kubernetes double, S3 and sshd (in the region's namespace), moto and the
    Slack double (in the global namespace)."""
    glob = primary["lab_net_global_address"]
    ports = {"moto": (glob, primary["lab_moto_port"]), "slack double": (glob, primary["lab_slack_port"])}
    for hvars in (primary, standby):
        region = hvars["fediflow_region"]
        ports["postgres " + region] = (hvars["fediflow_pg_host"], hvars["fediflow_pg_port"])
        ports["redis " + region] = (hvars["fediflow_redis_host"], hvars["fediflow_redis_port"])
        ports["sshd " + region] = (hvars["lab_net_address"], 22)
        api = str(hvars.get("fediflow_k8s_api_url", "")).rsplit("//", maxsplit=1)[-1]
        if api.rsplit(":", 1)[-1].isdigit():
            ports["kubernetes double " + region] = tuple(api.rsplit(":", 1))
        s3 = str(hvars.get("fediflow_s3_endpoint_url", "")).rsplit("//", maxsplit=1)[-1]
        if s3.rsplit(":", 1)[-1].isdigit():
            ports["s3 " + region] = tuple(s3.rsplit(":", 1))
    return ports
