"""LAB ONLY: fediflow.dr_lab.lab_network makes the lab's regions real, separately failing network hosts.

A throw-away lab (index 250, 198.18.250.0/24) is made, partitioned, taken down, brought up and
removed, and each step is checked on the machine itself: namespaces and links with `ip`, the route
lookup (a blackhole proves no SYN leaves), real TCP connections from the controller and from other
namespaces, the processes in a namespace, and a list of everything before and after."""
import json
import os
import sys

import pytest

from lab_fixtures import module, poll
from netns_fixtures import (IP, LISTENER, Listener, ip_json, kernel_route, netns_pids, probe, require_lab_tools, route_type,
                            run, snapshot)

INDEX = 250
PORT = 7777
REGIONS = {"us-east-1": "198.18.250.11", "eu-west-1": "198.18.250.12"}
GLOBAL = "198.18.250.10"
NS = {"global": "fdl250-global", "us-east-1": "fdl250-us-east-1", "eu-west-1": "fdl250-eu-west-1"}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    require_lab_tools()
    state_file = str(tmp_path_factory.mktemp("labnet") / "network.json")
    args = {"lab_index": INDEX, "bridge_address": "198.18.250.1/24", "global_address": GLOBAL,
            "regions": REGIONS, "state_file": state_file, "stop_timeout": 5}
    module("fediflow.dr_lab.lab_network", dict(args, state="absent"))  # what an interrupted earlier run left
    before = snapshot(INDEX)
    assert not before["netns"] and not before["links"] and not before["routes"], before
    made = module("fediflow.dr_lab.lab_network", dict(args, state="present"))
    assert made.get("changed") and not made.get("failed"), made
    yield {"args": args, "made": made, "before": before, "state_file": state_file}
    module("fediflow.dr_lab.lab_network", dict(args, state="absent"))


def _region(net, state, region="us-east-1", **kwargs):
    result = module("fediflow.dr_lab.lab_network", dict(net["args"], state=state, region=region), **kwargs)
    assert not result.get("failed"), result
    return result


@pytest.fixture
def listener(net):
    """A listener in us-east-1 (on every address of its namespace), stopped afterwards."""
    srv = Listener(NS["us-east-1"], PORT, "us-east-1")
    yield srv
    srv.stop()


def test_every_region_is_a_namespace_with_its_address_and_no_default_route(net):
    assert set(NS.values()) <= {entry["name"] for entry in ip_json("netns", "list")}
    for name, netns in NS.items():
        addresses = ip_json("addr", "show", "dev", "eth0", netns=netns)[0]["addr_info"]
        assert ({"global": GLOBAL}.get(name) or REGIONS[name]) in [a["local"] for a in addresses]
        routes = run([IP, "netns", "exec", netns, "ip", "route"]).stdout
        assert "default" not in routes and "198.18.250.0/24 dev eth0" in routes, routes
        assert "UP" in ip_json("link", "show", "dev", "lo", netns=netns)[0]["flags"]
        # anything outside the lab subnet is unreachable from a namespace: no route to leave by
        assert route_type("192.0.2.1", netns=netns) == "none"
        assert kernel_route("192.0.2.1", netns=netns).startswith("error"), kernel_route("192.0.2.1", netns=netns)
    bridge = ip_json("addr", "show", "dev", "fdlab250")[0]
    assert "198.18.250.1" in [a["local"] for a in bridge["addr_info"]]
    assert route_type("198.19.255.254").startswith("blackhole"), "the lab range must be blackholed in the root namespace"
    assert net["made"]["nodes"]["us-east-1"]["netns"] == NS["us-east-1"]


def test_present_again_changes_nothing_also_in_check_mode(net):
    assert not module("fediflow.dr_lab.lab_network", dict(net["args"], state="present"))["changed"]
    assert not module("fediflow.dr_lab.lab_network", dict(net["args"], state="present"), check_mode=True)["changed"]


def test_the_controller_and_other_regions_reach_a_region(net, listener):
    assert probe(REGIONS["us-east-1"], PORT) == "ok hello from us-east-1"
    assert probe(REGIONS["us-east-1"], PORT, netns=NS["global"]) == "ok hello from us-east-1"
    assert probe(REGIONS["us-east-1"], PORT, netns=NS["eu-west-1"]) == "ok hello from us-east-1"


def test_partitioned_region_keeps_running_but_nothing_crosses(net, listener):
    predicted = _region(net, "partitioned", check_mode=True)
    assert predicted["changed"] and probe(REGIONS["us-east-1"], PORT).startswith("ok")  # check mode cut nothing
    cut = _region(net, "partitioned", diff=True)
    assert cut["changed"] and cut["previous_state"] == "up" and cut["stopped_processes"] == []
    assert cut["diff"]["before"]["nodes"]["us-east-1"] == "up" and cut["diff"]["after"]["nodes"]["us-east-1"] == "partitioned"
    try:
        assert not _region(net, "partitioned")["changed"]
        # nothing outside reaches it, and the lookup proves the attempt dies here (no SYN leaves)
        for where in (None, NS["global"], NS["eu-west-1"]):
            assert probe(REGIONS["us-east-1"], PORT, netns=where).startswith("error"), where
            assert route_type(REGIONS["us-east-1"], netns=where).startswith("blackhole"), where
            assert kernel_route(REGIONS["us-east-1"], netns=where).startswith("error"), where
        # it still runs, and answers on its own loopback
        assert listener.proc.poll() is None
        assert probe("127.0.0.1", PORT, netns=NS["us-east-1"]) == "ok hello from us-east-1"
        assert probe(REGIONS["us-east-1"], PORT, netns=NS["us-east-1"]) == "ok hello from us-east-1"
        # it reaches nothing: its packets out are dropped by its own nftables table
        assert probe(GLOBAL, 22, netns=NS["us-east-1"], timeout=1).startswith("error")
        table = json.loads(run([IP, "netns", "exec", NS["us-east-1"], "nft", "-j", "list", "table", "inet",
                                "fediflow_lab_isolate"]).stdout)
        drops = [r["rule"] for r in table["nftables"] if "rule" in r and r["rule"]["chain"] == "output"]
        assert any(e.get("counter", {}).get("packets", 0) > 0 for r in drops for e in r["expr"]), drops
        # the other region is untouched
        assert route_type(REGIONS["eu-west-1"]).startswith("unicast")
        with open(net["state_file"], encoding="utf-8") as handle:
            assert json.load(handle)["regions"]["us-east-1"]["state"] == "partitioned"
    finally:
        back = _region(net, "up")
    assert back["changed"] and not back["restart_required"]
    assert probe(REGIONS["us-east-1"], PORT, netns=NS["global"]) == "ok hello from us-east-1"
    assert route_type(REGIONS["us-east-1"]).startswith("unicast")
    assert not _region(net, "up")["changed"]


def test_down_stops_every_process_in_the_region_and_up_says_what_to_restart(net, listener):
    assert netns_pids(NS["us-east-1"])
    down = _region(net, "down")
    try:
        assert down["changed"] and not netns_pids(NS["us-east-1"])
        assert listener.argv in [p["argv"] for p in down["stopped_processes"]]
        assert "UP" not in ip_json("link", "show", "dev", "eth0", netns=NS["us-east-1"])[0]["flags"]
        for where in (None, NS["global"], NS["eu-west-1"]):
            assert route_type(REGIONS["us-east-1"], netns=where).startswith("blackhole"), where
        again = _region(net, "down")
        assert not again["changed"] and again["previous_state"] == "down"
        # present keeps a region that is down, down
        assert not module("fediflow.dr_lab.lab_network", dict(net["args"], state="present"))["changed"]
    finally:
        up = _region(net, "up")
    assert up["changed"] and up["previous_state"] == "down" and up["restart_required"]
    assert listener.argv in [p["argv"] for p in up["stopped_processes"]]
    assert "UP" in ip_json("link", "show", "dev", "eth0", netns=NS["us-east-1"])[0]["flags"]
    restarted = Listener(NS["us-east-1"], PORT + 1, "us-east-1 again")
    try:
        assert probe(REGIONS["us-east-1"], PORT + 1, netns=NS["eu-west-1"]) == "ok hello from us-east-1 again"
        assert probe(REGIONS["us-east-1"], PORT + 1) == "ok hello from us-east-1 again"
    finally:
        restarted.stop()


def test_lab_service_runs_a_service_inside_a_regions_namespace(net, tmp_path):
    args = {"name": "probe", "argv": [sys.executable, "-c", LISTENER, str(PORT + 2), "svc"],
            "netns": NS["eu-west-1"], "pid_file": str(tmp_path / "svc.pid"), "timeout": 10}
    started = module("fediflow.dr_lab.lab_service", args)
    try:
        assert started["changed"] and _netns_of(started["pid"]) == _netns_inode(NS["eu-west-1"]), started
        assert poll(lambda: probe(REGIONS["eu-west-1"], PORT + 2, netns=NS["global"]).startswith("ok"), 10)
        assert not module("fediflow.dr_lab.lab_service", args)["changed"]
        # the same service wanted in another namespace: the running one is not it
        moved = module("fediflow.dr_lab.lab_service", dict(args, netns=NS["us-east-1"]))
        assert moved["actions"] == ["stop", "start"] and _netns_of(moved["pid"]) == _netns_inode(NS["us-east-1"])
    finally:
        stopped = module("fediflow.dr_lab.lab_service", dict(args, state="stopped"))
    assert stopped["changed"] and not os.path.exists(args["pid_file"])


def _netns_of(pid):
    return os.stat("/proc/%d/ns/net" % pid).st_ino


def _netns_inode(netns):
    return os.stat("/run/netns/%s" % netns).st_ino


def test_region_operations_refuse_an_unknown_region(net):
    result = module("fediflow.dr_lab.lab_network", dict(net["args"], state="down", region="mars-1"))
    assert result["failed"] and "region must be one of eu-west-1, global, us-east-1" in result["msg"]


def test_zz_absent_removes_everything_it_made(net):
    survivor = Listener(NS["eu-west-1"], PORT, "eu-west-1")  # a process absent must stop
    _region(net, "partitioned", region="eu-west-1")
    gone = module("fediflow.dr_lab.lab_network", dict(net["args"], state="absent"))
    assert gone["changed"] and not gone.get("failed"), gone
    assert survivor.proc.wait(timeout=10) is not None
    assert survivor.argv in [p["argv"] for p in gone["stopped_processes"]]
    after = snapshot(INDEX)
    assert after == net["before"], (net["before"], after)
    assert not [n for n in (e["name"] for e in ip_json("netns", "list")) if n.startswith("fdl250-")]
    with pytest.raises(FileNotFoundError):
        open(net["state_file"], encoding="utf-8").close()
    assert not module("fediflow.dr_lab.lab_network", dict(net["args"], state="absent"))["changed"]
    refused = module("fediflow.dr_lab.lab_network", dict(net["args"], state="up", region="us-east-1"))
    assert refused["failed"] and "is not present" in refused["msg"], refused
