"""lab_down stops everything the lab started (PostgreSQL, Redis, moto, doubles) and removes only the lab's own directory;
lab_up then rebuilds the lab from nothing. Marked restarts_lab: conftest runs it last."""
import os
import socket

import pytest

from lab_fixtures import playbook, recap


def _port_open(port):
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", int(port))) == 0


@pytest.mark.restarts_lab
def test_lab_down_then_up_from_nothing(lab, tmp_path):
    primary, standby = lab["primary"], lab["standby"]
    lab_dir = primary["fediflow_lab_dir"]
    neighbour = os.path.join(os.path.dirname(lab_dir), "not-the-labs-%s" % os.getpid())
    os.makedirs(neighbour)
    try:
        ports = [primary["fediflow_pg_port"], standby["fediflow_pg_port"], primary["lab_moto_port"],
                 primary["lab_slack_port"], primary["fediflow_redis_port"], standby["fediflow_redis_port"]]
        ports += [h["fediflow_k8s_api_url"].rsplit(":", 1)[1] for h in (primary, standby)]
        assert all(_port_open(p) for p in ports)
        playbook("lab_down.yml")
        assert not os.path.exists(lab_dir)
        assert os.path.isdir(neighbour)
        assert not [p for p in ports if _port_open(p)]
        # a second lab_down on a lab that is gone is harmless
        playbook("lab_down.yml")
        proc, took = playbook("lab_up.yml")
        assert all(c["failed"] == 0 for c in recap(proc.stdout).values())
        assert all(_port_open(p) for p in ports)
        print("lab_up from nothing: %.1fs" % took)
    finally:
        os.rmdir(neighbour)
