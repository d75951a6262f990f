# -*- coding: utf-8 -*-
"""LAB ONLY: the lab network's planning (names, validation, plan/diff) on plain dicts, no machine.

The real namespaces, routes and nftables tables are exercised in tests/integration/test_lab_network.py."""
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr_lab.plugins.module_utils import labnet
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

REGIONS = {"us-east-1": "198.18.0.11", "eu-west-1": "198.18.0.12"}


def _layout(index=0, bridge="198.18.0.1/24", glob="198.18.0.10", regions=None):
    return labnet.spec(index, bridge, glob, dict(REGIONS if regions is None else regions))


def _machine(layout, states=None):
    """What observe() reports for a lab made and left in ``states`` (the plan's fixed point)."""
    states = states or {}
    blackholed = sorted(n["address"] for name, n in layout["nodes"].items()
                        if labnet.MEANING[states.get(name, "up")]["blackholed"])
    nodes = {}
    for name, node in layout["nodes"].items():
        meaning = labnet.MEANING[states.get(name, "up")]
        nodes[name] = {"netns": True, "host_if": True, "host_if_master": layout["bridge"]["name"],
                       "host_if_up": True, "lo_up": True, "if_exists": True, "if_up": meaning["link_up"],
                       "addresses": [node["cidr"]], "default_route": False,
                       "blackholes": [a for a in blackholed if a != node["address"]],
                       "isolated": meaning["isolated"], "pids": [] if not meaning["processes"] else [4242]}
    return {"range_blackhole": "ours", "bridge": {"exists": True, "up": True, "addresses": [layout["bridge"]["cidr"]]},
            "root_blackholes": blackholed, "root_addresses": [(layout["bridge"]["name"], layout["bridge"]["cidr"])],
            "root_routes": [], "other_labs": [], "stale_links": [], "stale_netns": {}, "nodes": nodes}


def _nothing(layout):
    return {"range_blackhole": None, "bridge": {"exists": False, "up": False, "addresses": []},
            "root_blackholes": [], "root_addresses": [], "root_routes": [], "other_labs": [],
            "stale_links": [], "stale_netns": {}, "nodes": {name: {} for name in layout["nodes"]}}


def _argvs(steps):
    return [step["argv"] for step in steps if step["argv"]]


def test_names_derive_from_the_lab_index_and_fit_ifnamsiz():
    layout = _layout(index=255, bridge="198.19.255.1/24", glob="198.19.255.10",
                     regions={"ap-southeast-2-long-region-name": "198.19.255.254"})
    assert layout["bridge"]["name"] == "fdlab255"
    node = layout["nodes"]["ap-southeast-2-long-region-name"]
    assert node["netns"] == "fdl255-ap-southeast-2-long-region-name"
    assert node["host_if"] == "fdl255h254" and len(node["host_if"]) <= labnet.IFNAMSIZ
    assert list(layout["nodes"]) == ["global", "ap-southeast-2-long-region-name"]
    assert layout["nodes"]["global"]["netns"] == "fdl255-global"


def test_two_labs_share_no_name():
    one, two = _layout(0), _layout(1, "198.18.1.1/24", "198.18.1.10", {"us-east-1": "198.18.1.11"})
    names_one = {one["bridge"]["name"]} | {v for n in one["nodes"].values() for v in (n["netns"], n["host_if"])}
    names_two = {two["bridge"]["name"]} | {v for n in two["nodes"].values() for v in (n["netns"], n["host_if"])}
    assert not names_one & names_two


@pytest.mark.parametrize("kwargs, message", [
    ({"index": 256}, "lab_index must be an integer from 0 to 255"),
    ({"index": True}, "lab_index must be an integer"),
    ({"bridge": "10.0.0.1/24"}, "inside 198.18.0.0/15"),
    ({"bridge": "198.18.0.1/31"}, "prefix from /16 to /30"),
    ({"bridge": "198.18.0.0/24"}, "not a host address"),
    ({"bridge": "nonsense"}, "bridge_address must be an IPv4 address with a prefix"),
    ({"glob": "198.18.1.10"}, "global_address 198.18.1.10 is not a host address of the lab subnet"),
    ({"glob": "198.18.0.1"}, "already used by bridge_address"),
    ({"regions": {"us-east-1": "198.18.0.10"}}, "regions.us-east-1 198.18.0.10 is already used by global_address"),
    ({"regions": {"global": "198.18.0.11"}}, "not a usable region name"),
    ({"regions": {"US East": "198.18.0.11"}}, "not a usable region name"),
    ({"regions": {"us-east-1": "198.18.0.255"}}, "not a host address"),
    ({"regions": {}}, "at least one region"),
])
def test_bad_options_are_refused_naming_the_option(kwargs, message):
    with pytest.raises(FediflowError, match=message):
        _layout(**kwargs)


def test_a_fresh_lab_is_made_safety_net_first_and_without_a_default_route():
    layout = _layout()
    steps = labnet.plan(_nothing(layout), labnet.wanted(layout, {}))
    argvs = _argvs(steps)
    assert argvs[0] == ["ip", "route", "add", "blackhole", "198.18.0.0/15", "proto", labnet.ROUTE_PROTO]
    assert ["ip", "link", "add", "fdlab0", "type", "bridge"] in argvs
    assert ["ip", "addr", "add", "198.18.0.1/24", "dev", "fdlab0"] in argvs
    assert ["ip", "netns", "add", "fdl0-us-east-1"] in argvs
    assert ["ip", "link", "add", "fdl0h11", "type", "veth", "peer", "name", "eth0", "netns", "fdl0-us-east-1"] in argvs
    assert ["ip", "-n", "fdl0-eu-west-1", "addr", "add", "198.18.0.12/24", "dev", "eth0"] in argvs
    assert ["ip", "-n", "fdl0-global", "link", "set", "lo", "up"] in argvs
    assert ["ip", "-n", "fdl0-global", "link", "set", "eth0", "up"] in argvs
    # nothing adds a route other than the blackhole: no default route anywhere
    assert not [a for a in argvs if "route" in a and "add" in a and "blackhole" not in a]
    assert all(isinstance(arg, str) for argv in argvs for arg in argv)


@pytest.mark.parametrize("states", [{}, {"us-east-1": "partitioned"}, {"us-east-1": "down", "eu-west-1": "partitioned"}])
def test_a_lab_in_its_wanted_state_plans_nothing(states):
    layout = _layout()
    assert labnet.plan(_machine(layout, states), labnet.wanted(layout, states)) == []


def test_partition_isolates_inside_and_blackholes_from_everywhere_else_and_keeps_processes():
    layout = _layout()
    steps = labnet.plan(_machine(layout), labnet.wanted(layout, {"us-east-1": "partitioned"}))
    argvs = _argvs(steps)
    assert argvs[0] == ["ip", "netns", "exec", "fdl0-us-east-1", "nft", "-f", "/dev/stdin"]
    assert steps[0]["input"] == labnet.NFT_RULESET and 'iifname "lo" accept' in labnet.NFT_RULESET
    assert ["ip", "route", "add", "blackhole", "198.18.0.11/32", "proto", labnet.ROUTE_PROTO] in argvs
    for other in ("fdl0-global", "fdl0-eu-west-1"):
        assert ["ip", "-n", other, "route", "add", "blackhole", "198.18.0.11/32", "proto", labnet.ROUTE_PROTO] in argvs
    assert not [a for a in argvs if a[:3] == ["ip", "-n", "fdl0-us-east-1"] and "blackhole" in a]
    assert not [s for s in steps if s.get("op") == "stop_processes"]
    assert not [a for a in argvs if "down" in a or "del" in a]
    assert len(argvs) == 4


def test_down_isolates_first_then_stops_processes_then_the_link():
    layout = _layout()
    steps = labnet.plan(_machine(layout), labnet.wanted(layout, {"us-east-1": "down"}))
    what = [s.get("op") or s["argv"][:6] for s in steps]
    stop = what.index("stop_processes")
    assert steps[stop]["netns"] == "fdl0-us-east-1" and steps[stop]["pids"] == [4242]
    assert what[-1] == ["ip", "-n", "fdl0-us-east-1", "link", "set", "eth0"] and steps[-1]["argv"][-1] == "down"
    assert all("blackhole" in s["argv"] or "nft" in s["argv"] for s in steps[:stop])


def test_partitioned_to_down_only_stops_and_sets_the_link_down():
    layout = _layout()
    steps = labnet.plan(_machine(layout, {"us-east-1": "partitioned"}), labnet.wanted(layout, {"us-east-1": "down"}))
    assert [s.get("op") or s["argv"][-1] for s in steps] == ["stop_processes", "down"]


def test_down_freezes_the_durable_processes_and_stops_only_the_others():
    layout = _layout()
    machine = _machine(layout)
    machine["nodes"]["us-east-1"]["pids"] = [4242, 4343]
    want = labnet.wanted(layout, {"us-east-1": "down"})
    want["nodes"]["us-east-1"].update(keep_pids=[4343], freeze_pids=[4343])
    steps = labnet.plan(machine, want)
    ops = [s.get("op") for s in steps if s.get("op")]
    assert ops == ["freeze", "stop_processes"]
    freeze = next(s for s in steps if s.get("op") == "freeze")
    stop = next(s for s in steps if s.get("op") == "stop_processes")
    assert freeze["pids"] == [4343] and stop["keep"] == [4343]


def test_a_down_region_with_only_its_frozen_processes_left_needs_nothing():
    layout = _layout()
    machine = _machine(layout, {"us-east-1": "down"})
    machine["nodes"]["us-east-1"]["pids"] = [4343]
    want = labnet.wanted(layout, {"us-east-1": "down"})
    want["nodes"]["us-east-1"].update(keep_pids=[4343], freeze_pids=[])
    assert labnet.plan(machine, want) == []
    # without the record, the same process would be stopped
    assert [s.get("op") for s in labnet.plan(machine, labnet.wanted(layout, {"us-east-1": "down"}))] == ["stop_processes"]


def test_durable_pids_keeps_only_the_recorded_process_that_is_still_the_same(monkeypatch):
    layout = _layout()
    monkeypatch.setattr(labnet, "start_ticks", {11: "100", 12: "999"}.get)
    records = {"eu-west-1": {"state": "down", "frozen_processes": [
        {"pid": 11, "start": "100"}, {"pid": 12, "start": "200"}, {"pid": 13, "start": "300"}, {"pid": "x"}]}}
    out = labnet.durable_pids(_machine(layout), layout, records, {"eu-west-1": "down"}, "us-east-1", [])
    assert out == {"eu-west-1": {"keep": [11], "freeze": []}}


def test_up_after_down_sets_the_link_up_before_it_opens_the_region():
    layout = _layout()
    steps = labnet.plan(_machine(layout, {"us-east-1": "down"}), labnet.wanted(layout, {}))
    argvs = _argvs(steps)
    assert argvs[0] == ["ip", "-n", "fdl0-us-east-1", "link", "set", "eth0", "up"]
    assert argvs[-1] == ["ip", "netns", "exec", "fdl0-us-east-1", "nft", "delete", "table", "inet", labnet.NFT_TABLE]
    assert ["ip", "route", "del", "blackhole", "198.18.0.11/32", "proto", labnet.ROUTE_PROTO] in argvs
    assert ["ip", "-n", "fdl0-global", "route", "del", "blackhole", "198.18.0.11/32", "proto", labnet.ROUTE_PROTO] in argvs
    assert len(argvs) == 5


def test_a_default_route_found_in_a_namespace_is_removed():
    layout = _layout()
    machine = _machine(layout)
    machine["nodes"]["eu-west-1"]["default_route"] = True
    assert _argvs(labnet.plan(machine, labnet.wanted(layout, {}))) == [
        ["ip", "-n", "fdl0-eu-west-1", "route", "del", "default"]]


def test_a_namespace_deleted_by_hand_is_made_again_with_its_orphaned_link_replaced():
    layout = _layout()
    machine = _machine(layout)
    machine["nodes"]["us-east-1"] = {"netns": False, "host_if": True, "host_if_master": "fdlab0", "host_if_up": True}
    argvs = _argvs(labnet.plan(machine, labnet.wanted(layout, {})))
    assert argvs[:3] == [["ip", "netns", "add", "fdl0-us-east-1"], ["ip", "link", "del", "fdl0h11"],
                         ["ip", "link", "add", "fdl0h11", "type", "veth", "peer", "name", "eth0",
                          "netns", "fdl0-us-east-1"]]
    assert ["ip", "link", "set", "fdl0h11", "master", "fdlab0"] in argvs


def test_stale_namespaces_of_this_lab_are_emptied_and_removed():
    layout = _layout()
    machine = _machine(layout)
    machine["stale_netns"] = {"fdl0-ap-south-1": [77]}
    machine["stale_links"] = ["fdl0h13"]
    steps = labnet.plan(machine, labnet.wanted(layout, {}))
    assert [s.get("op") or s["argv"] for s in steps] == [
        "stop_processes", ["ip", "netns", "del", "fdl0-ap-south-1"], ["ip", "link", "del", "fdl0h13"]]
    assert steps[2]["missing_ok"]


def test_absent_stops_processes_before_deleting_namespaces_and_keeps_another_labs_safety_net():
    layout = _layout()
    machine = _machine(layout, {"us-east-1": "partitioned"})
    steps = labnet.plan_absent(machine, layout)
    ops = [s.get("op") or s["argv"][:3] for s in steps]
    assert ops[:3] == ["stop_processes"] * 3
    assert ops.count(["ip", "netns", "del"]) == 3
    assert ["ip", "link", "del", "fdlab0"] in _argvs(steps)
    assert ["ip", "route", "del", "blackhole", "198.18.0.11/32", "proto", labnet.ROUTE_PROTO] in _argvs(steps)
    assert _argvs(steps)[-1] == ["ip", "route", "del", "blackhole", "198.18.0.0/15", "proto", labnet.ROUTE_PROTO]
    machine["other_labs"] = ["fdlab7"]
    assert "198.18.0.0/15" not in [a[4] for a in _argvs(labnet.plan_absent(machine, layout)) if len(a) > 4]
    machine["other_labs"], machine["range_blackhole"] = [], "other"
    assert "198.18.0.0/15" not in [a[4] for a in _argvs(labnet.plan_absent(machine, layout)) if len(a) > 4]
    assert labnet.plan_absent(_nothing(layout), layout) == []


def test_conflicts_name_addresses_and_routes_of_the_subnet_that_are_not_this_labs():
    layout = _layout()
    machine = _machine(layout)
    machine["root_routes"] = [{"dst": "198.18.0.0/24", "dev": "fdlab0"}, {"dst": "default", "dev": "eth0"},
                              {"dst": "198.18.0.0/15", "type": "blackhole", "protocol": labnet.ROUTE_PROTO},
                              {"dst": "198.18.1.0/24", "dev": "fdlab1"}]
    assert labnet.conflicts(machine, layout) == []
    machine["root_addresses"].append(("fdlab9", "198.18.0.1/24"))
    machine["root_routes"].append({"dst": "198.18.0.64/26", "dev": "eth1"})
    assert labnet.conflicts(machine, layout) == ["address 198.18.0.1/24 on fdlab9", "route 198.18.0.64/26 dev eth1"]


def test_summary_reads_each_nodes_state_from_the_machine():
    layout = _layout()
    machine = _machine(layout, {"us-east-1": "down", "eu-west-1": "partitioned"})
    machine["nodes"]["global"] = {}
    assert labnet.summary(machine, layout) == {"global": "absent", "us-east-1": "down", "eu-west-1": "partitioned"}


def test_the_state_file_round_trips_and_refuses_garbage(tmp_path):
    path = str(tmp_path / "run" / "network.json")
    assert labnet.read_states(path) == {}
    records = {"us-east-1": {"state": "down", "since": "x", "stopped_processes": [{"pid": 1, "argv": ["a"]}]},
               "eu-west-1": {"state": "up", "since": "y"}}
    labnet.write_states(path, 3, records)
    assert labnet.read_states(path) == records
    (tmp_path / "run" / "network.json").write_text("[1, 2]")
    with pytest.raises(FediflowError, match="has no 'regions' map"):
        labnet.read_states(path)


def test_records_keep_the_since_of_a_node_whose_state_did_not_change():
    layout = _layout()
    old = {"us-east-1": {"state": "down", "since": "then", "stopped_processes": []}}
    new = labnet.recorded_states(old, {"us-east-1": "down", "eu-west-1": "partitioned"}, layout)
    assert new["us-east-1"] is old["us-east-1"]
    assert new["eu-west-1"]["state"] == "partitioned" and new["global"]["state"] == "up"
    assert labnet.merge_stopped([{"pid": 1, "argv": ["a"]}], [{"pid": 2, "argv": ["a"]}, {"pid": 3, "argv": ["b"]}]) == [
        {"pid": 1, "argv": ["a"]}, {"pid": 3, "argv": ["b"]}]
