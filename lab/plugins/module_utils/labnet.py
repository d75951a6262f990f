# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LAB ONLY. The lab's regions as separate network hosts (used by ``lab_network``).

Each region, and the global services, is a Linux network namespace with one veth whose other end
is a port of a lab bridge in the root namespace; the bridge's address is the controller's. No
namespace has a default route and the root namespace blackholes the whole lab range
(198.18.0.0/15, the benchmarking range), so no lab packet can ever follow the host's default route.

A region can be taken

- ``partitioned``: its processes keep running, an nftables table inside its namespace drops every
  packet that is not on loopback, and a /32 blackhole route to its address in the root namespace
  and in every other lab namespace makes a connection attempt fail locally;
- ``down``: partitioned, then every process in its namespace stopped (SIGTERM, then SIGKILL after
  a deadline) and its link set down;
- ``up``: the link up, the blackholes and the nftables table removed.

Everything is computed as plain data first: ``observe()`` reads the current state with ``ip -j``,
``wanted()`` builds the target from the options, ``plan()`` diffs them into steps (argument lists,
never shell strings), ``apply()`` runs them. Names derive from the lab index, so two labs on one
machine never share a namespace, a link or a route.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import time

from ansible_collections.fediflow.dr.plugins.module_utils import atomic
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer, run, wait_until
from ansible_collections.fediflow.dr_lab.plugins.module_utils.process import (
    ip_program, process_argv, process_state, read_pid, start_ticks, terminate)

# The whole benchmarking range (RFC 2544): every lab address lives inside it.
LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
# Routes the lab makes carry this protocol number, so they are found (and removed) by it alone.
ROUTE_PROTO = "251"
# nftables table that isolates a partitioned or down region (inside its namespace).
NFT_TABLE = "fediflow_lab_isolate"
# The interface name inside every namespace (each namespace has its own names, as a host has).
NS_IF = "eth0"
IFNAMSIZ = 15  # longest interface name Linux accepts (IFNAMSIZ 16 with the NUL)
MAX_LAB_INDEX = 255
GLOBAL = "global"
STATES = ("up", "partitioned", "down")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")

NFT_RULESET = """table inet %(table)s {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "lo" accept
    counter drop comment "fediflow lab: region isolated"
  }
  chain output {
    type filter hook output priority filter; policy accept;
    oifname "lo" accept
    counter drop comment "fediflow lab: region isolated"
  }
}
""" % {"table": NFT_TABLE}


# ---------------------------------------------------------------------------------------------
# names and the wanted state (pure)


def names(lab_index, node):
    """Namespace and root-side interface names of ``node`` (a region or ``global``) in lab ``lab_index``.

    The host interface is named by the node's host number in the subnet, so it fits IFNAMSIZ
    whatever the region is called: lab 0, 198.18.0.11 -> ``fdl0h11``."""
    return {"netns": "fdl%d-%s" % (lab_index, node["name"]),
            "host_if": "fdl%dh%d" % (lab_index, node["host_number"])}


def bridge_name(lab_index):
    return "fdlab%d" % lab_index


def spec(lab_index, bridge_address, global_address, regions):
    """Validate the options and return the lab's layout as plain data (raises FediflowError).

    ``regions`` maps a region name to its address. The layout names every node (``global`` first,
    then the regions in the order given) with its namespace, interfaces and address."""
    if not isinstance(lab_index, int) or isinstance(lab_index, bool) or not 0 <= lab_index <= MAX_LAB_INDEX:
        raise FediflowError("lab_index must be an integer from 0 to %d, got %r" % (MAX_LAB_INDEX, lab_index))
    try:
        bridge = ipaddress.ip_interface(str(bridge_address))
    except ValueError:
        raise FediflowError("bridge_address must be an IPv4 address with a prefix (198.18.N.1/24), got %r"
                            % (bridge_address,))
    subnet = bridge.network
    if bridge.version != 4 or not subnet.subnet_of(LAB_RANGE) or not 16 <= subnet.prefixlen <= 30:
        raise FediflowError("bridge_address %s: the lab's subnet must lie inside %s with a prefix from /16 to /30"
                            % (bridge_address, LAB_RANGE))
    if bridge.ip in (subnet.network_address, subnet.broadcast_address):
        raise FediflowError("bridge_address %s is not a host address of its subnet" % bridge_address)
    if not isinstance(regions, dict) or not regions:
        raise FediflowError("regions must map at least one region name to its address")
    members = [(GLOBAL, global_address, "global_address")]
    for region, address in regions.items():
        if region == GLOBAL or not NAME.match(str(region)):
            raise FediflowError("regions: %r is not a usable region name (lower-case letters, digits and '-', "
                                "at most 32 characters, not '%s')" % (region, GLOBAL))
        members.append((str(region), address, "regions.%s" % region))
    nodes, seen = {}, {str(bridge.ip): "bridge_address"}
    bname = bridge_name(lab_index)
    for name, address, option in members:
        try:
            addr = ipaddress.ip_address(str(address))
        except ValueError:
            raise FediflowError("%s must be an IPv4 address, got %r" % (option, address))
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise FediflowError("%s %s is not a host address of the lab subnet %s (bridge_address)"
                                % (option, addr, subnet))
        if str(addr) in seen:
            raise FediflowError("%s %s is already used by %s" % (option, addr, seen[str(addr)]))
        seen[str(addr)] = option
        node = {"name": name, "address": str(addr), "cidr": "%s/%d" % (addr, subnet.prefixlen),
                "host_number": int(addr) - int(subnet.network_address)}
        node.update(names(lab_index, node))
        node["interface"] = NS_IF
        nodes[name] = node
    for ifname in [bname] + [n["host_if"] for n in nodes.values()]:
        if len(ifname) > IFNAMSIZ:
            raise FediflowError("interface name %s is longer than %d characters (IFNAMSIZ)" % (ifname, IFNAMSIZ))
    return {"lab_index": lab_index, "subnet": str(subnet), "bridge": {"name": bname, "cidr": str(bridge)},
            "nodes": nodes}


def wanted(layout, states):
    """The target state: the layout with each node's state (``up`` unless ``states`` says otherwise)."""
    out = {"range_blackhole": True, "bridge": dict(layout["bridge"]), "nodes": {}}
    for name, node in layout["nodes"].items():
        out["nodes"][name] = dict(node, state=states.get(name, "up"))
    return out


# What each node state means on the machine.
MEANING = {
    "up": {"isolated": False, "blackholed": False, "link_up": True, "processes": True},
    "partitioned": {"isolated": True, "blackholed": True, "link_up": True, "processes": True},
    "down": {"isolated": True, "blackholed": True, "link_up": False, "processes": False},
}


# ---------------------------------------------------------------------------------------------
# plan (pure): current + wanted -> steps


def _cmd(what, argv, **extra):
    step = {"what": what, "argv": argv}
    step.update(extra)
    return step


def _ns_ip(netns, *args):
    return ["ip", "-n", netns] + list(args)


def _blackhole(netns, address, verb):
    argv = ["ip", "route", verb, "blackhole", "%s/32" % address, "proto", ROUTE_PROTO]
    return argv if netns is None else ["ip", "-n", netns] + argv[1:]


def plan(current, want):
    """Steps that turn ``current`` (from observe) into ``want`` (from wanted); [] when nothing to do.

    Phases, in order: the range blackhole (a safety net before anything else), the topology, the
    isolation that a node gains (nft table, blackholes), processes stopped, links set, the isolation
    a node loses. So a region goes dark at once, and is opened only after its link is back."""
    steps = []
    if not current["range_blackhole"]:
        steps.append(_cmd("blackhole the lab range in the root namespace",
                          ["ip", "route", "add", "blackhole", str(LAB_RANGE), "proto", ROUTE_PROTO]))
    steps += _plan_stale(current)
    steps += _plan_bridge(current["bridge"], want["bridge"])
    nodes = want["nodes"]
    cur_nodes = current["nodes"]
    for name, node in nodes.items():
        steps += _plan_node(cur_nodes.get(name) or {}, node, want["bridge"]["name"])
    gain, lose = _plan_isolation(current, want)
    steps += gain
    for name, node in nodes.items():
        cur = cur_nodes.get(name) or {}
        if MEANING[node["state"]]["processes"]:
            continue
        keep = set(node.get("keep_pids") or [])
        freeze_now = [pid for pid in node.get("freeze_pids") or [] if pid in (cur.get("pids") or [])]
        if freeze_now:
            steps.append(_cmd("freeze the durable processes of %s (SIGSTOP: unreachable, data kept)" % name, None,
                              op="freeze", netns=node["netns"], pids=freeze_now))
        if [pid for pid in cur.get("pids") or [] if pid not in keep]:
            steps.append(_cmd("stop the processes of %s" % name, None, op="stop_processes",
                              netns=node["netns"], pids=list(cur["pids"]), keep=sorted(keep)))
    for name, node in nodes.items():
        cur = cur_nodes.get(name) or {}
        link_up = MEANING[node["state"]]["link_up"]
        if bool(cur.get("if_up")) != link_up:
            steps.append(_cmd("set the link of %s %s" % (name, "up" if link_up else "down"),
                              _ns_ip(node["netns"], "link", "set", NS_IF, "up" if link_up else "down")))
    return steps + lose


def _plan_bridge(cur, want):
    steps = []
    name = want["name"]
    if not cur.get("exists"):
        steps.append(_cmd("create the lab bridge", ["ip", "link", "add", name, "type", "bridge"]))
    if want["cidr"] not in (cur.get("addresses") or []):
        steps.append(_cmd("address the lab bridge (the controller)", ["ip", "addr", "add", want["cidr"], "dev", name]))
    if not cur.get("up"):
        steps.append(_cmd("set the lab bridge up", ["ip", "link", "set", name, "up"]))
    return steps


def _plan_node(cur, node, bridge):
    name, netns, host_if = node["name"], node["netns"], node["host_if"]
    steps = []
    if not cur.get("netns"):
        steps.append(_cmd("create the namespace of %s" % name, ["ip", "netns", "add", netns]))
    if cur.get("host_if") and not cur.get("if_exists"):
        # the root end lost its peer (the namespace was deleted by hand): make the pair again
        steps.append(_cmd("remove the orphaned link of %s" % name, ["ip", "link", "del", host_if]))
    if not (cur.get("host_if") and cur.get("if_exists")):
        steps.append(_cmd("link %s to the lab bridge" % name,
                          ["ip", "link", "add", host_if, "type", "veth", "peer", "name", NS_IF, "netns", netns]))
        cur = dict(cur, host_if_master=None, host_if_up=False, lo_up=cur.get("lo_up"), addresses=[])
    if cur.get("host_if_master") != bridge:
        steps.append(_cmd("attach %s to the lab bridge" % name, ["ip", "link", "set", host_if, "master", bridge]))
    if not cur.get("host_if_up"):
        steps.append(_cmd("set the bridge port of %s up" % name, ["ip", "link", "set", host_if, "up"]))
    if not cur.get("lo_up"):
        steps.append(_cmd("set the loopback of %s up" % name, _ns_ip(netns, "link", "set", "lo", "up")))
    if node["cidr"] not in (cur.get("addresses") or []):
        steps.append(_cmd("address %s" % name, _ns_ip(netns, "addr", "add", node["cidr"], "dev", NS_IF)))
    if cur.get("default_route"):
        # never expected; a default route would let lab packets leave the lab
        steps.append(_cmd("remove the default route of %s" % name, _ns_ip(netns, "route", "del", "default")))
    return steps


def _plan_isolation(current, want):
    """(steps that add isolation, steps that remove it): the nft table inside a node first and
    its blackholes elsewhere after (a node goes dark from its own side first); removal the other
    way round (blackholes, then the table)."""
    gain, lose = [], []
    nodes = want["nodes"]
    cur_nodes = current["nodes"]
    for name, node in nodes.items():
        isolated = bool((cur_nodes.get(name) or {}).get("isolated"))
        if MEANING[node["state"]]["isolated"] and not isolated:
            gain.append(_cmd("isolate %s (nftables drop of all but loopback)" % name,
                             ["ip", "netns", "exec", node["netns"], "nft", "-f", "/dev/stdin"], input=NFT_RULESET))
    blackholed = {n["address"] for n in nodes.values() if MEANING[n["state"]]["blackholed"]}
    # blackholes in the root namespace (None) and in each node's namespace (never to itself)
    places = [(None, "the root namespace", set(current.get("root_blackholes") or []), None)]
    for name, node in nodes.items():
        have = set((cur_nodes.get(name) or {}).get("blackholes") or [])
        places.append((node["netns"], "the namespace of %s" % name, have, node["address"]))
    for netns, where, have, own in places:
        should = blackholed - {own}
        for address in sorted(should - have, key=ipaddress.ip_address):
            gain.append(_cmd("blackhole %s in %s" % (address, where), _blackhole(netns, address, "add")))
        for address in sorted(have - should, key=ipaddress.ip_address):
            lose.append(_cmd("remove the blackhole to %s in %s" % (address, where), _blackhole(netns, address, "del")))
    for name, node in nodes.items():
        isolated = bool((cur_nodes.get(name) or {}).get("isolated"))
        if not MEANING[node["state"]]["isolated"] and isolated:
            lose.append(_cmd("remove the isolation of %s" % name,
                             ["ip", "netns", "exec", node["netns"], "nft", "delete", "table", "inet", NFT_TABLE]))
    return gain, lose


def _plan_stale(current):
    """Namespaces and links of this lab that the options no longer name (a region left the
    inventory): their processes stopped, then removed."""
    steps = []
    for netns, pids in sorted((current.get("stale_netns") or {}).items()):
        if pids:
            steps.append(_cmd("stop the processes of the stale namespace %s" % netns, None, op="stop_processes",
                              netns=netns, pids=list(pids)))
        steps.append(_cmd("remove the stale namespace %s" % netns, ["ip", "netns", "del", netns]))
    for ifname in current.get("stale_links") or []:
        steps.append(_cmd("remove the stale link %s" % ifname, ["ip", "link", "del", ifname], missing_ok=True))
    return steps


def plan_absent(current, layout):
    """Steps that remove everything this lab made (its processes first: a namespace with a live
    process would outlive ``ip netns del``)."""
    steps = []
    for name, node in layout["nodes"].items():
        cur = current["nodes"].get(name) or {}
        if cur.get("pids"):
            steps.append(_cmd("stop the processes of %s" % name, None, op="stop_processes",
                              netns=node["netns"], pids=list(cur["pids"])))
    for name, node in layout["nodes"].items():
        cur = current["nodes"].get(name) or {}
        if cur.get("netns"):
            steps.append(_cmd("remove the namespace of %s" % name, ["ip", "netns", "del", node["netns"]]))
        if cur.get("host_if") and not (cur.get("netns") and cur.get("if_exists")):
            # deleting a namespace deletes its veth pair; only an orphaned root end is left to remove
            steps.append(_cmd("remove the link of %s" % name, ["ip", "link", "del", node["host_if"]]))
    if current["bridge"].get("exists"):
        steps.append(_cmd("remove the lab bridge", ["ip", "link", "del", layout["bridge"]["name"]]))
    for address in sorted(current.get("root_blackholes") or [], key=ipaddress.ip_address):
        steps.append(_cmd("remove the blackhole to %s in the root namespace" % address,
                          _blackhole(None, address, "del")))
    steps += _plan_stale(current)
    if current["range_blackhole"] == "ours" and not current.get("other_labs"):
        steps.append(_cmd("remove the lab range blackhole (no other lab on this machine)",
                          ["ip", "route", "del", "blackhole", str(LAB_RANGE), "proto", ROUTE_PROTO]))
    return steps


def summary(current, layout):
    """Each node's state as seen on the machine: absent, up, partitioned or down."""
    out = {}
    for name in layout["nodes"]:
        cur = current["nodes"].get(name) or {}
        if not cur.get("netns"):
            out[name] = "absent"
        elif cur.get("isolated") and not cur.get("if_up"):
            out[name] = "down"
        else:
            out[name] = "partitioned" if cur.get("isolated") else "up"
    return out


def conflicts(current, layout):
    """Lab-range addresses or routes on this machine that are not this lab's (another lab on the
    same subnet, or a real network using the range): the lab refuses to act beside them."""
    subnet = ipaddress.ip_network(layout["subnet"])
    bridge = layout["bridge"]["name"]
    found = []
    for ifname, cidr in current.get("root_addresses") or []:
        if ifname != bridge and ipaddress.ip_interface(cidr).network.overlaps(subnet):
            found.append("address %s on %s" % (cidr, ifname))
    for route in current.get("root_routes") or []:
        dst = route.get("dst")
        if not dst or dst == "default" or route.get("dev") == bridge or route.get("protocol") == ROUTE_PROTO:
            continue
        try:
            net = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
        except ValueError:
            continue
        if net.version == 4 and net.overlaps(subnet):
            found.append("route %s%s" % (dst, " dev %s" % route["dev"] if route.get("dev") else ""))
    return found


# ---------------------------------------------------------------------------------------------
# observe (reads the machine, changes nothing)


def nft_program():
    """Path of ``nft`` (Debian's nftables, in /usr/sbin, which a non-login PATH may lack)."""
    return shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin") or "nft"


def _resolve(argv):
    """``argv`` with ``ip`` (and ``nft`` run through ``ip netns exec``) as full paths."""
    argv = list(argv)
    if argv[0] == "ip":
        argv[0] = ip_program()
        if argv[1:3] == ["netns", "exec"] and argv[4:5] == ["nft"]:
            argv[4] = nft_program()
    return argv


def _ip_json(*args):
    result = run([ip_program()] + ["-j"] + list(args), timeout=30)
    if result.rc != 0:
        return None
    text = result.stdout.strip()
    return json.loads(text) if text else []


def netns_list():
    data = _ip_json("netns", "list") or []
    return {entry["name"] for entry in data}


def netns_pids(netns):
    result = run([ip_program(), "netns", "pids", netns], timeout=30)
    if result.rc != 0:
        return []
    return sorted(int(p) for p in result.stdout.split() if p.isdigit())


def _link(links, ifname):
    return next((link for link in links if link.get("ifname") == ifname), None)


def _up(link):
    return bool(link) and "UP" in (link.get("flags") or [])


def _addresses(addrs, ifname):
    for entry in addrs or []:
        if entry.get("ifname") == ifname:
            return ["%s/%s" % (a["local"], a["prefixlen"]) for a in entry.get("addr_info") or []
                    if a.get("family") == "inet"]
    return []


def _blackholes(netns, subnet):
    args = ([] if netns is None else ["-n", netns]) + ["route", "show", "type", "blackhole", "proto", ROUTE_PROTO]
    out = []
    for route in _ip_json(*args) or []:
        try:
            address = ipaddress.ip_address(route.get("dst", ""))  # a /32 is shown without its prefix
        except ValueError:
            continue
        if address in subnet:
            out.append(str(address))
    return out


def _isolated(netns):
    result = run([ip_program(), "netns", "exec", netns, nft_program(), "-j", "list", "tables"], timeout=30)
    if result.rc != 0:
        raise FediflowError("cannot list the nftables tables of namespace %s: %s (is Debian's nftables installed?)"
                            % (netns, result.stderr.strip() or result.stdout.strip()))
    data = json.loads(result.stdout or "{}")
    return any((item.get("table") or {}).get("name") == NFT_TABLE and item["table"].get("family") == "inet"
               for item in data.get("nftables") or [])


def observe(layout):
    """The machine's current lab state as plain data (see ``plan``)."""
    subnet = ipaddress.ip_network(layout["subnet"])
    links = _ip_json("link", "show") or []
    addrs = _ip_json("addr", "show") or []
    bname = layout["bridge"]["name"]
    bridge = _link(links, bname)
    routes = _ip_json("route", "show") or []
    ranges = [r for r in _ip_json("route", "show", "type", "blackhole") or [] if r.get("dst") == str(LAB_RANGE)]
    prefix = "fdl%d" % layout["lab_index"]
    own_links = {node["host_if"] for node in layout["nodes"].values()}
    own_netns = {node["netns"] for node in layout["nodes"].values()}
    current = {
        # "ours" (made by a lab), "other" (someone else's: left alone) or None
        "range_blackhole": ("ours" if any(str(r.get("protocol")) == ROUTE_PROTO for r in ranges) else
                            "other" if ranges else None),
        "bridge": {"exists": bridge is not None, "up": _up(bridge), "addresses": _addresses(addrs, bname)},
        "root_blackholes": _blackholes(None, subnet),
        "root_addresses": [(e["ifname"], "%s/%s" % (a["local"], a["prefixlen"])) for e in addrs
                           for a in e.get("addr_info") or [] if a.get("family") == "inet"],
        "root_routes": routes,
        "other_labs": sorted(link["ifname"] for link in links
                             if re.match(r"^fdlab\d+$", link.get("ifname", "")) and link["ifname"] != bname),
        "stale_links": sorted(link["ifname"] for link in links
                              if re.match(r"^%sh\d+$" % prefix, link.get("ifname", ""))
                              and link["ifname"] not in own_links),
        "nodes": {},
    }
    existing = netns_list()
    current["stale_netns"] = {name: netns_pids(name) for name in sorted(existing)
                              if name.startswith(prefix + "-") and name not in own_netns}
    for name, node in layout["nodes"].items():
        host = _link(links, node["host_if"])
        cur = {"netns": node["netns"] in existing, "host_if": host is not None,
               "host_if_master": (host or {}).get("master"), "host_if_up": _up(host)}
        if cur["netns"]:
            ns_links = _ip_json("-n", node["netns"], "link", "show") or []
            ns_if = _link(ns_links, NS_IF)
            cur.update({
                "lo_up": _up(_link(ns_links, "lo")),
                "if_exists": ns_if is not None,
                "if_up": _up(ns_if),
                "addresses": _addresses(_ip_json("-n", node["netns"], "addr", "show"), NS_IF),
                "default_route": any(r.get("dst") == "default" for r in
                                     _ip_json("-n", node["netns"], "route", "show", "table", "all") or []),
                "blackholes": _blackholes(node["netns"], subnet),
                "isolated": _isolated(node["netns"]),
                "pids": netns_pids(node["netns"]),
            })
        current["nodes"][name] = cur
    return current


# ---------------------------------------------------------------------------------------------
# apply


def freeze(netns, pids):
    """SIGSTOP each of ``pids`` that lives in ``netns``; returns them ({pid, argv, start}) once stopped."""
    inside = set(netns_pids(netns))
    frozen = []
    for pid in pids:
        if pid not in inside:
            continue
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        frozen.append({"pid": pid, "argv": process_argv(pid) or [], "start": start_ticks(pid)})
    if not wait_until(lambda: all(process_state(p["pid"]) in ("T", None) for p in frozen), 5.0)[0]:
        raise FediflowError("processes %s in namespace %s did not stop on SIGSTOP"
                            % ([p["pid"] for p in frozen], netns))
    return frozen


def still_frozen(records):
    """The recorded frozen processes ({pid, argv, start}) that are still the same ones (pid and start time):
    a process gone, or a pid reused since, is never signalled."""
    return [proc for proc in records or [] if isinstance(proc, dict) and isinstance(proc.get("pid"), int)
            and proc.get("start") and start_ticks(proc["pid"]) == proc["start"]]


def thaw(frozen):
    """SIGCONT each recorded frozen process that is still the same one; returns those woken ({pid, argv})."""
    thawed = []
    for proc in still_frozen(frozen):
        try:
            os.kill(proc["pid"], signal.SIGCONT)
        except ProcessLookupError:
            continue
        thawed.append({"pid": proc["pid"], "argv": proc.get("argv") or []})
    return thawed


def stop_processes(netns, timeout, keep=()):
    """Stop every process in ``netns`` but the pids in ``keep``: SIGTERM (and SIGCONT, so that a frozen
    one handles it), wait up to ``timeout`` s, SIGKILL, wait 5 s.

    Returns the processes found ({pid, argv}), the signals sent as ``kill`` argument lists and
    how they ended; raises when one survives."""
    spared = set(keep)

    def others():
        return [pid for pid in netns_pids(netns) if pid not in (1, os.getpid()) and pid not in spared]

    found = [{"pid": pid, "argv": process_argv(pid) or []} for pid in others()]
    signals = []

    def send(sig, pids):
        if not pids:
            return
        signals.append(["kill", "-%s" % sig.name[3:]] + [str(pid) for pid in pids])
        for pid in pids:
            try:
                if sig == signal.SIGTERM:
                    terminate(pid)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                pass

    send(signal.SIGTERM, [proc["pid"] for proc in found])
    if wait_until(lambda: not others(), timeout)[0]:
        return {"netns": netns, "ended": "terminated", "processes": found, "signals": signals}
    # the namespace's processes now, not only the ones seen first (one may have forked meanwhile)
    left = others()
    known = {proc["pid"] for proc in found}
    found += [{"pid": pid, "argv": process_argv(pid) or []} for pid in left if pid not in known]
    send(signal.SIGKILL, left)
    if not wait_until(lambda: not others(), 5.0)[0]:
        raise FediflowError("processes %s in namespace %s survived SIGKILL (stuck in the kernel?)"
                            % (others(), netns))
    return {"netns": netns, "ended": "killed", "processes": found, "signals": signals}


def _link_exists(ifname):
    return run([ip_program(), "link", "show", "dev", ifname], timeout=30).rc == 0


def apply(steps, stop_timeout):
    """Run ``steps`` in order; returns (commands run, stop results, frozen processes). Stops at the first failure."""
    commands, stopped, frozen = [], [], []
    for step in steps:
        if step.get("op") == "freeze":
            now = freeze(step["netns"], step["pids"])
            frozen += now
            if now:
                commands.append(["kill", "-STOP"] + [str(proc["pid"]) for proc in now])
            continue
        if step.get("op") == "stop_processes":
            outcome = stop_processes(step["netns"], stop_timeout, keep=step.get("keep") or ())
            stopped.append(outcome)
            commands += outcome["signals"]
            continue
        if step.get("missing_ok") and not _link_exists(step["argv"][-1]):
            continue  # went with its namespace
        result = run(_resolve(step["argv"]), input_text=step.get("input"), timeout=60)
        commands.append(step["argv"])
        if result.rc != 0:
            why = (result.stderr or result.stdout).strip()
            raise FediflowError("%s failed: %s: %s" % (step["what"], " ".join(step["argv"]), why), commands=commands)
    return commands, stopped, frozen


# ---------------------------------------------------------------------------------------------
# the state file (each region's recorded state, so ``up`` knows what to restore)


def read_states(state_file):
    try:
        with open(state_file, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FediflowError("state_file %s is unreadable (%s): remove it only if the lab network is absent"
                            % (state_file, exc))
    regions = data.get("regions") if isinstance(data, dict) else None
    if not isinstance(regions, dict):
        raise FediflowError("state_file %s has no 'regions' map" % state_file)
    return {name: entry for name, entry in regions.items()
            if isinstance(entry, dict) and entry.get("state") in STATES}


def write_states(state_file, lab_index, records):
    os.makedirs(os.path.dirname(os.path.abspath(state_file)), exist_ok=True)
    atomic.write_json_atomic(state_file, {"lab_index": lab_index, "regions": records})


# ---------------------------------------------------------------------------------------------
# the module's one entry point


def durable_pids(current, layout, records, states, region, pid_files):
    """Per node: the pids ``down`` keeps frozen (``keep``) and those still to freeze (``freeze``).

    A node already down keeps the frozen processes its record names (when still the same ones); the
    region going down now freezes the live processes of ``pid_files`` that run in its namespace
    (``current``: what observe() found there)."""
    out = {}
    for name in layout["nodes"]:
        if states.get(name, "up") != "down":
            continue
        keep = [proc["pid"] for proc in still_frozen((records.get(name) or {}).get("frozen_processes"))]
        freeze_now = []
        if name == region:
            inside = set((current["nodes"].get(name) or {}).get("pids") or [])
            for pid_file in pid_files or []:
                pid = read_pid(pid_file)
                if pid and pid in inside:
                    keep.append(pid)
                    if process_state(pid) != "T":
                        freeze_now.append(pid)
        out[name] = {"keep": sorted(set(keep)), "freeze": sorted(set(freeze_now))}
    return out


def ensure(state, lab_index, bridge_address, global_address, regions, state_file, region=None,
           stop_timeout=10.0, check_mode=False, durable_pid_files=None):
    """Bring the lab network (``present``/``absent``) or one region (``up``/``partitioned``/``down``)
    to ``state``; returns the module result as a plain dict.

    ``durable_pid_files``: services whose data a region outage must not erase (its object storage): ``down``
    freezes them (SIGSTOP; isolated, they are unreachable) instead of ending them, ``up`` wakes them."""
    timer = Timer()
    layout = spec(lab_index, bridge_address, global_address, regions)
    if state in STATES and region not in layout["nodes"]:
        raise FediflowError("region must be one of %s for state=%s, got %r"
                            % (", ".join(sorted(layout["nodes"])), state, region))
    if stop_timeout <= 0:
        raise FediflowError("stop_timeout must be greater than 0, got %s" % stop_timeout)
    # absent needs no record (and must clean up even beside an unreadable state file)
    records = {} if state == "absent" else {
        name: entry for name, entry in read_states(state_file).items() if name in layout["nodes"]}
    states = {name: entry["state"] for name, entry in records.items()}
    with timer.phase("observe"):
        current = observe(layout)
    before = summary(current, layout)
    result = {"state": state, "lab_index": lab_index, "region": region, "restart_required": False,
              "stopped_processes": [], "frozen_processes": [], "thawed_processes": [],
              "bridge": dict(layout["bridge"])}
    if state == "absent":
        steps = plan_absent(current, layout)
        new_records = None
        after = {name: "absent" for name in layout["nodes"]}
    else:
        found = conflicts(current, layout)
        if found:
            raise FediflowError("lab subnet %s is in use outside lab %d: %s; choose another lab index and subnet"
                                % (layout["subnet"], lab_index, "; ".join(found)))
        if state in STATES:
            missing = [name for name, seen in before.items() if seen == "absent"]
            if missing or not current["bridge"]["exists"]:
                raise FediflowError("lab network %d is not present (missing: %s): run lab_network state=present first"
                                    % (lab_index, ", ".join(missing) or "the bridge"))
            previous = states.get(region, "up")
            states[region] = state
            result["previous_state"] = previous
            if previous == "down" and state != "down":
                result["restart_required"] = True
                result["stopped_processes"] = records[region].get("stopped_processes") or []
        want = wanted(layout, states)
        for name, pids in durable_pids(current, layout, records, states, region, durable_pid_files).items():
            want["nodes"][name].update(keep_pids=pids["keep"], freeze_pids=pids["freeze"])
        steps = plan(current, want)
        new_records = recorded_states(records, states, layout)
        after = {name: states.get(name, "up") for name in layout["nodes"]}
    to_thaw = still_frozen((records.get(region) or {}).get("frozen_processes")) if result["restart_required"] else []
    result["changed"] = bool(steps) or bool(to_thaw) or (new_records != records if new_records is not None
                                                         else os.path.exists(state_file))
    result["actions"] = [step["what"] for step in steps] + (
        ["wake the frozen processes of %s (SIGCONT)" % region] if to_thaw else [])
    result["commands"] = [step["argv"] for step in steps if step["argv"]]
    result["diff"] = {"before": {"bridge": layout["bridge"]["name"] if current["bridge"]["exists"] else None,
                                 "nodes": before},
                      "after": {"bridge": None if state == "absent" else layout["bridge"]["name"], "nodes": after}}
    result["nodes"] = {name: {"netns": n["netns"], "address": n["address"], "interface": n["interface"],
                              "host_interface": n["host_if"], "state": after[name]}
                       for name, n in layout["nodes"].items()}
    if check_mode or not result["changed"]:
        result["duration_s"] = timer.elapsed()
        return result
    with timer.phase("apply"):
        try:
            commands, stopped, frozen = apply(steps, stop_timeout)
        except FediflowError as exc:
            result["commands"] = exc.details.get("commands") or []
            raise FediflowError(exc.message, result=result)
        if to_thaw:
            # after the link is up and the isolation gone: it answers at once
            result["thawed_processes"] = thaw(to_thaw)
            if result["thawed_processes"]:
                commands.append(["kill", "-CONT"] + [str(proc["pid"]) for proc in result["thawed_processes"]])
    result["commands"] = commands
    result["frozen_processes"] = [{"pid": proc["pid"], "argv": proc["argv"]} for proc in frozen]
    if stopped and state != "up":
        result["stopped_processes"] = [proc for entry in stopped for proc in entry["processes"]]
    if state == "absent":
        with timer.phase("verify"):
            # the kernel removes a deleted namespace's links a moment later (asynchronously)
            if not wait_until(lambda: not _leftovers(observe(layout)), 15.0)[0]:
                left = _leftovers(observe(layout))
            else:
                left = []
        if left:
            raise FediflowError("lab network %d not fully removed: %s" % (lab_index, "; ".join(left)), result=result)
        if os.path.exists(state_file):
            os.unlink(state_file)
            result["actions"].append("remove the state file")
    else:
        if state == "down" and stopped:
            # what a later `up` must restart: what was stopped now, beside what was stopped before
            old = records.get(region, {}).get("stopped_processes") or []
            new_records[region] = dict(new_records[region], stopped_processes=merge_stopped(old, result["stopped_processes"]))
        if state == "down" and frozen:
            # what a later `up` wakes (pid and start time: never a reused pid)
            now = {proc["pid"] for proc in frozen}
            old = records.get(region, {}).get("frozen_processes") or []
            new_records[region] = dict(new_records[region], frozen_processes=[
                proc for proc in old if proc.get("pid") not in now] + frozen)
        write_states(state_file, lab_index, new_records)
    result["phases"] = timer.phases
    result["duration_s"] = timer.elapsed()
    return result


def merge_stopped(old, new):
    seen, out = set(), []
    for proc in list(old) + list(new):
        key = tuple(proc.get("argv") or [str(proc.get("pid"))])
        if key not in seen:
            seen.add(key)
            out.append(proc)
    return out


def recorded_states(records, states, layout):
    """The state file's new content: every node's state; a node that stays in its state keeps its record."""
    out = {}
    for name in layout["nodes"]:
        state = states.get(name, "up")
        old = records.get(name) or {}
        if old.get("state") == state:
            out[name] = old
        else:
            out[name] = {"state": state, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return out


def _leftovers(current):
    """What of this lab is still on the machine (after ``absent``)."""
    left = []
    if current["bridge"]["exists"]:
        left.append("bridge")
    for name, cur in current["nodes"].items():
        if cur.get("netns"):
            left.append("namespace of %s" % name)
        if cur.get("host_if"):
            left.append("link of %s" % name)
    if current.get("root_blackholes"):
        left.append("blackholes %s" % ", ".join(current["root_blackholes"]))
    left += ["stale namespace %s" % name for name in current.get("stale_netns") or {}]
    left += ["stale link %s" % name for name in current.get("stale_links") or []]
    return left
