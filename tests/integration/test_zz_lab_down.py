"""lab_down stops everything the lab started (PostgreSQL, Redis, moto, doubles) and removes only the lab's own directory;
lab_up then rebuilds the lab from nothing. Marked restarts_lab: conftest runs it last."""
import os

import pytest

from lab_fixtures import listening, playbook, recap
from netns_fixtures import IP, run


def _netns_names():
    return [line.split()[0] for line in run([IP, "netns", "list"]).stdout.splitlines() if line.strip()]


def _lab_pids(primary, standby):
    """The pids the lab's service manager recorded (moto, doubles, Redis, sshd: <lab_dir>/run/*.pid) and each
    region's postmaster (postmaster.pid), read while the lab is up."""
    run_dir = os.path.join(primary["fediflow_lab_dir"], "run")
    files = [os.path.join(run_dir, n) for n in os.listdir(run_dir) if n.endswith(".pid")]
    files += [os.path.join(h["fediflow_pg_data_dir"], "postmaster.pid") for h in (primary, standby)]
    pids = set()
    for path in files:
        with open(path, encoding="utf-8") as handle:
            pid = int(handle.readline().split()[0])  # lab_service writes "PID STARTTIME", PostgreSQL "PID"
        pids.add((pid, _started(pid)))
    return pids


def _started(pid):
    """The process's start time in clock ticks (/proc/PID/stat field 22), None when it is gone: a pid the
    kernel handed to a new process meanwhile does not count as the old one."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.restarts_lab
def test_lab_down_then_up_from_nothing(lab, tmp_path):
    primary, standby = lab["primary"], lab["standby"]
    lab_dir = primary["fediflow_lab_dir"]
    neighbour = os.path.join(os.path.dirname(lab_dir), "not-the-labs-%s" % os.getpid())
    os.makedirs(neighbour)
    try:
        glob = primary["lab_net_global_address"]
        ports = [(h["fediflow_pg_host"], h["fediflow_pg_port"]) for h in (primary, standby)]
        ports += [(h["fediflow_redis_host"], h["fediflow_redis_port"]) for h in (primary, standby)]
        ports += [tuple(h["fediflow_k8s_api_url"].split("//")[1].rsplit(":", 1)) for h in (primary, standby)]
        ports += [(h["lab_net_address"], 22) for h in (primary, standby)]
        ports += [(glob, primary["lab_moto_port"]), (glob, primary["lab_slack_port"]), (glob, primary["lab_peers_port"])]
        assert all(listening(*p) for p in ports), [p for p in ports if not listening(*p)]
        # a region of Debian's packaged layout keeps its configuration in /etc/postgresql (pg_createcluster)
        debian = [h["fediflow_pg_config_dir"] for h in (primary, standby) if h.get("fediflow_pg_cluster")]
        assert debian and all(os.path.isfile(os.path.join(d, "postgresql.conf")) for d in debian), debian
        pids = _lab_pids(primary, standby)
        assert len(pids) >= 9 and all(started for _pid, started in pids), pids  # moto, Slack, peers; per region
        # sshd, Redis, Kubernetes; two postmasters
        playbook("lab_down.yml")
        assert not os.path.exists(lab_dir)
        assert os.path.isdir(neighbour)
        assert not [d for d in debian if os.path.exists(d)]  # pg_dropcluster
        # nothing of the lab is left to answer (no probe: without the lab's routes a SYN to a lab address
        # would follow the host's default route): no namespace of this lab, no process of its directory
        assert not [n for n in _netns_names() if n.startswith("fdl%d-" % int(primary["lab_net_index"]))]
        assert not [pid for pid, started in pids if started is not None and _started(pid) == started]
        # a second lab_down on a lab that is gone is harmless
        playbook("lab_down.yml")
        proc, took = playbook("lab_up.yml")
        assert all(c["failed"] == 0 for c in recap(proc.stdout).values())
        assert all(listening(*p) for p in ports), [p for p in ports if not listening(*p)]
        print("lab_up from nothing: %.1fs" % took)
    finally:
        os.rmdir(neighbour)
