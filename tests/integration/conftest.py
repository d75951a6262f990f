"""Shared fixtures of the integration tier.

The lab doubles (Kubernetes API, Slack) run as local processes: no real Kubernetes API
server can run on this machine. Lab fixtures (the real PostgreSQL/moto lab) live in
lab_fixtures.py.
"""
import json
import os
import subprocess
import sys

import pytest

from doubles_fixtures import ROOT, SEED, start_double, write_kubeconfig

# pytest-xdist: every worker after the first gets a lab of its own (every lab port shifted, its own
# state directory), written by scripts/lab_inventory.py before lab_fixtures reads the inventory, so
# two workers never share a cluster, a port or a file. Tests that move production (failover, drill)
# then only ever move their own worker's lab. Worker gw0 (or a run without xdist) uses
# FEDIFLOW_LAB_INVENTORY, else inventories/lab.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_OWN_LAB = _WORKER not in ("", "gw0")  # this worker made its lab and takes it down
WORKER_LAB_OFFSET = 3000  # gw1's ports are 18xxx: clear of the shared lab (15xxx) and the helpers' 16xxx/17xxx labs
if _OWN_LAB:
    if os.environ.get("FEDIFLOW_LAB_INVENTORY"):
        raise pytest.UsageError("FEDIFLOW_LAB_INVENTORY names one lab: run it without -n (xdist gives each worker its own lab)")
    _INDEX = int(_WORKER[2:])
    _OUT = ROOT / "tests" / "output" / "labs" / _WORKER
    subprocess.run([sys.executable, str(ROOT / "scripts" / "lab_inventory.py"), "--offset", str(WORKER_LAB_OFFSET * _INDEX),
                    "--lab-dir", "/var/tmp/fediflow-lab-%s" % _WORKER, "--out", str(_OUT)],
                   check=True, capture_output=True, text=True)
    os.environ["FEDIFLOW_LAB_INVENTORY"] = str(_OUT / "hosts.yml")

from lab_fixtures import inventory, lab_is_home, playbook  # noqa: E402  pylint: disable=wrong-import-position

# What lab_up says (lab/roles/lab/tasks/preflight.yml, collection fediflow.dr_lab) when it finds the lab failed over.
LAB_LEFT_FAILED_OVER = "the lab is failed over"


@pytest.fixture
def seed_file(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED))
    return path


@pytest.fixture
def k8s_double(tmp_path, seed_file):
    double = start_double("k8s", tmp_path / "k8s", "--seed", seed_file)
    yield double
    double.stop()


@pytest.fixture
def slack_double(tmp_path):
    double = start_double("slack", tmp_path / "slack")
    yield double
    double.stop()


@pytest.fixture
def kubeconfig(tmp_path, k8s_double):
    return write_kubeconfig(tmp_path / "kubeconfig", k8s_double.url)


def pytest_configure(config):
    config.addinivalue_line("markers", "restarts_lab: tears the shared lab down and up again; runs last")
    config.addinivalue_line("markers", "slow: a long role or playbook run; left out of `make test-quick`")


def pytest_collection_modifyitems(items):
    """One lab (no xdist): tests that restart it run after every other test, whatever their file names.

    xdist workers (--dist loadfile, a lab per worker): the files that hold such tests go first, then the
    files with slow tests, each file kept whole and in its own order. xdist hands files out in this order,
    so the longest ones start first and the short ones fill the gaps at the end (instead of one worker
    finishing a long failover file alone while the other has nothing left)."""
    if not _WORKER:
        items.sort(key=lambda item: item.get_closest_marker("restarts_lab") is not None)
        return
    weight = {}
    for item in items:
        here = 0 if item.get_closest_marker("restarts_lab") else 1 if item.get_closest_marker("slow") else 2
        weight[item.fspath] = min(weight.get(item.fspath, 2), here)
    items.sort(key=lambda item: weight[item.fspath])


@pytest.fixture(scope="session")
def lab():
    """The real lab, brought up with lab/playbooks/lab_up.yml (idempotent) once per session.

    ``was_up``: the lab was already in its home roles before this run (e.g. the Molecule tier left it
    so), which makes this run a second lab_up whose recap test_lab checks. A worker's own lab
    (xdist gw1 and later) is taken down again at the end of the session."""
    primary, standby = inventory()
    was_up = lab_is_home(primary, standby)
    proc, took = playbook("lab_up.yml", check=False)
    if proc.returncode != 0 and LAB_LEFT_FAILED_OVER in proc.stdout:
        # A run stopped in the middle of a failover test (a killed CI job, a machine restarted) leaves
        # this test lab failed over; lab_up rightly refuses to "repair" that. The test tier owns its lab:
        # it starts over from a fresh one rather than failing every test of the session at set-up.
        sys.stderr.write("the test lab was left failed over by an earlier run: taking it down and up again\n")
        playbook("lab_down.yml")
        proc, took = playbook("lab_up.yml", check=False)
    if proc.returncode != 0:
        raise AssertionError("lab_up.yml failed (rc=%s):\n%s\n%s" % (proc.returncode, proc.stdout[-6000:],
                                                                     proc.stderr[-3000:]))
    yield {"primary": primary, "standby": standby, "up_s": took, "stdout": proc.stdout, "was_up": was_up}
    if _OWN_LAB:
        playbook("lab_down.yml")
