# -*- coding: utf-8 -*-
"""The scratch cluster's port choice, against real sockets (the cluster itself runs in the integration tests)."""
from __future__ import annotations

import socket

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import backup, scratch
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock.getsockname()[1]
    sock.close()


def test_a_port_something_listens_on_is_not_free(listener):
    assert scratch.port_is_free(listener) is False


def test_a_port_bound_on_every_address_is_not_free():
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen(1)
        assert scratch.port_is_free(sock.getsockname()[1]) is False


def test_a_port_let_go_is_free_again(listener):
    port = listener
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    assert free != port and scratch.port_is_free(free) is True


def test_an_explicit_port_in_use_is_refused_naming_the_option(listener):
    with pytest.raises(FediflowError, match="scratch_port %d is in use" % listener):
        scratch.pick_port(listener)


def test_a_picked_port_is_free(listener):
    port = scratch.pick_port()
    assert port != listener and scratch.port_is_free(port)


@pytest.mark.parametrize("port", [80, -1, 70000])
def test_scratch_port_out_of_range_is_bad_input(port):
    p = {"mode": "logical", "verify": "restore", "format": "custom", "compression": "gzip", "dest": "/var/tmp/x",
         "scratch_port": port}
    with pytest.raises(FediflowError, match="scratch_port must be between 1024 and 65535"):
        backup.validate(p)


def test_leftovers_names_only_scratch_directories(tmp_path):
    (tmp_path / (scratch.SCRATCH_PREFIX + "abc")).mkdir()
    (tmp_path / "other").mkdir()
    assert scratch.leftovers(str(tmp_path)) == [scratch.SCRATCH_PREFIX + "abc"]
    assert scratch.leftovers(str(tmp_path / "missing")) == []
