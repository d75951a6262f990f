"""Shared fixtures of the integration tier.

The lab doubles (Kubernetes API, Slack) run as local processes: no real Kubernetes API
server can run on this machine. Lab fixtures (the real PostgreSQL/moto lab) live in
lab_fixtures.py.
"""
import json

import pytest

from doubles_fixtures import SEED, start_double, write_kubeconfig
from lab_fixtures import inventory, playbook


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


def pytest_collection_modifyitems(items):
    """Tests that restart the shared lab run after every other test, whatever their file names."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_lab") is not None)


@pytest.fixture(scope="session")
def lab():
    """The real lab, brought up with playbooks/lab_up.yml (idempotent) once per session."""
    proc, took = playbook("lab_up.yml")
    primary, standby = inventory()
    return {"primary": primary, "standby": standby, "up_s": took, "stdout": proc.stdout}
