"""LAB ONLY: each region's host answers SSH inside its namespace, as a real host does, and fails
as a region does: lab/playbooks/lab_network.yml makes a throw-away lab's hosts (index 251, a private
inventory from scripts/lab_inventory.py), lab/playbooks/lab_region.yml partitions them, takes them
down and brings them up; `ssh` and `ansible -m ping` (become) over SSH check each state; removing
them leaves nothing (namespaces, links, routes, the user, its sudo rule)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab_fixtures import BIN, ROOT, ansible_env, playbook_path, recap
from netns_fixtures import netns_pids, require_lab_tools, route_type, snapshot, user_exists

INDEX = 251
USER = "fediflow%d" % INDEX
ADDRESS = {"us-east-1": "198.18.251.11", "eu-west-1": "198.18.251.12"}
HOST = {"us-east-1": "pg-us-east-1", "eu-west-1": "pg-eu-west-1"}


def _play(lab, name, *extra, check=True):
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", lab["inventory"], str(playbook_path(name))]
                          + list(extra), cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=False,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc


def _said(proc):
    """The playbook's output with whitespace runs made one space (the YAML callback folds long lines)."""
    return " ".join(proc.stdout.split())


def _ssh(lab, region, *command):
    return subprocess.run(["ssh", "-i", lab["key"], "-o", "UserKnownHostsFile=%s" % lab["known_hosts"],
                           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                           "-F", "/dev/null", "%s@%s" % (USER, ADDRESS[region])] + list(command),
                          capture_output=True, text=True, check=False, timeout=60)


def _ansible(lab, region, *args):
    """An ad hoc module on a region's host over SSH with become, as AWX reaches real hosts."""
    ssh_args = "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % lab["known_hosts"]
    env = ansible_env()
    env.update(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = subprocess.run([str(BIN / "ansible"), HOST[region], "-i", lab["inventory"], "--become",
                           "-e", json.dumps({"ansible_connection": "ssh", "ansible_host": ADDRESS[region],
                                             "ansible_user": USER, "ansible_ssh_private_key_file": lab["key"],
                                             "ansible_ssh_common_args": ssh_args,
                                             # no ControlPersist master: one left from before a region went
                                             # down would hang the next connection (see docs)
                                             "ansible_ssh_args": "-o ControlMaster=no",
                                             "ansible_python_interpreter": "/usr/bin/python3"})] + list(args),
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120)
    data = json.loads(proc.stdout)
    return next(iter(data["plays"][0]["tasks"][0]["hosts"].values())), data["stats"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_lab_tools()
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("Debian's openssh-server is missing: run `sudo bash scripts/setup.sh`")
    work = tmp_path_factory.mktemp("labssh")
    # not under pytest's 0700 temporary directory: the lab user reads its authorized key from the lab dir
    lab_dir = Path("/var/tmp/fediflow-lab-test-%d" % INDEX)
    shutil.rmtree(lab_dir, ignore_errors=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "lab_inventory.py"), "--offset", "45000", "--lab-index",
                    str(INDEX), "--lab-dir", str(lab_dir), "--out", str(work / "inventory")], check=True,
                   capture_output=True)
    info = {"inventory": str(work / "inventory" / "hosts.yml"), "key": str(lab_dir / "ssh" / "id_ed25519"),
            "known_hosts": str(lab_dir / "ssh" / "known_hosts"), "lab_dir": lab_dir}
    _play(info, "lab_network.yml", "-e", "state=absent")  # what an interrupted earlier run left
    info["before"] = snapshot(INDEX)
    assert not info["before"]["netns"] and not user_exists(USER), info["before"]
    info["made"] = _play(info, "lab_network.yml")
    yield info
    _play(info, "lab_network.yml", "-e", "state=absent", check=False)
    shutil.rmtree(lab_dir, ignore_errors=True)


def test_made_once_then_nothing_changes(lab):
    assert recap(lab["made"].stdout)[HOST["us-east-1"]]["changed"] > 0
    again = _play(lab, "lab_network.yml")
    assert all(counters["changed"] == 0 for counters in recap(again.stdout).values()), again.stdout[-3000:]


@pytest.mark.parametrize("region", sorted(ADDRESS))
def test_ssh_reaches_the_regions_host_inside_its_namespace_with_sudo(lab, region):
    proc = _ssh(lab, region, "sudo", "-n", "ip", "-j", "addr", "show", "dev", "eth0")
    assert proc.returncode == 0, proc.stderr
    assert ADDRESS[region] in [a["local"] for a in json.loads(proc.stdout)[0]["addr_info"]]
    assert _ssh(lab, region, "sudo", "-n", "true").returncode == 0
    assert _ssh(lab, region, "id", "-un").stdout.strip() == USER
    # key only, not root: root's login is refused even with the lab's key
    refused = subprocess.run(["ssh", "-i", lab["key"], "-o", "UserKnownHostsFile=%s" % lab["known_hosts"],
                              "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-F", "/dev/null",
                              "root@%s" % ADDRESS[region], "true"], capture_output=True, text=True, check=False,
                             timeout=60)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_sshd_listens_on_the_region_address_only(lab):
    ss = subprocess.run(["ip", "netns", "exec", "fdl251-us-east-1", "ss", "-Hltn"], capture_output=True, text=True,
                        check=True).stdout
    assert "%s:22" % ADDRESS["us-east-1"] in ss and "0.0.0.0:22" not in ss and "[::]:22" not in ss, ss


def test_ansible_pings_over_ssh_and_becomes_root(lab):
    pong, stats = _ansible(lab, "us-east-1", "-m", "ansible.builtin.ping")
    assert pong.get("ping") == "pong", pong
    assert stats[HOST["us-east-1"]]["ok"] == 1
    whoami, _stats = _ansible(lab, "eu-west-1", "-m", "ansible.builtin.command", "-a", "whoami")
    assert whoami.get("stdout") == "root", whoami


def test_partitioned_region_refuses_ssh_until_up(lab):
    cut = _play(lab, "lab_region.yml", "-e", "region=us-east-1", "-e", "state=partitioned")
    assert "lab region us-east-1: up -> partitioned" in _said(cut)
    try:
        assert _ssh(lab, "us-east-1", "true").returncode == 255
        assert route_type(ADDRESS["us-east-1"]).startswith("blackhole")
        assert _ssh(lab, "eu-west-1", "true").returncode == 0
        assert netns_pids("fdl251-us-east-1"), "a partitioned region keeps running"
        again = _play(lab, "lab_region.yml", "-e", "region=us-east-1", "-e", "state=partitioned")
        assert all(counters["changed"] == 0 for counters in recap(again.stdout).values())
    finally:
        _play(lab, "lab_region.yml", "-e", "region=us-east-1", "-e", "state=up")
    assert _ssh(lab, "us-east-1", "sudo", "-n", "true").returncode == 0


def test_down_region_loses_sshd_and_up_starts_it_again(lab):
    down = _play(lab, "lab_region.yml", "-e", "region=eu-west-1", "-e", "state=down")
    assert "lab region eu-west-1: up -> down" in _said(down)
    try:
        assert not netns_pids("fdl251-eu-west-1")
        assert _ssh(lab, "eu-west-1", "true").returncode == 255
    finally:
        up = _play(lab, "lab_region.yml", "-e", "region=eu-west-1", "-e", "state=up")
    assert "1 process(es) to restart" in _said(up)
    assert _ssh(lab, "eu-west-1", "sudo", "-n", "true").returncode == 0
    pong, _stats = _ansible(lab, "eu-west-1", "-m", "ansible.builtin.ping")
    assert pong.get("ping") == "pong", pong


def test_zz_absent_leaves_nothing(lab):
    gone = _play(lab, "lab_network.yml", "-e", "state=absent")
    assert recap(gone.stdout)[HOST["us-east-1"]]["failed"] == 0
    assert snapshot(INDEX) == lab["before"]
    assert not user_exists(USER)
    assert not Path("/etc/sudoers.d/fediflow-lab-%s" % USER).exists()
    assert not Path("/home/%s" % USER).exists()
    assert not netns_pids("fdl251-us-east-1")
