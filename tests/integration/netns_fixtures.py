"""Helpers for the lab network tests (LAB ONLY): what the machine holds, route lookups, a tiny TCP
listener and a connection probe run inside network namespaces with `ip netns exec`.

Each test module uses a throw-away lab index of its own (never the shared lab's), and checks the
machine with `ip`, `nft` and real TCP connections, not with the module's own report."""
import json
import os
import pwd
import subprocess
import sys
import time

import pytest

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
LAB_RANGE = "198.18.0.0/15"
ROUTE_PROTO = "251"

# A TCP listener that answers every connection with one line; bounded (count and time).
LISTENER = r"""
import socket, sys, time
port, name = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(16)
srv.settimeout(0.5)
deadline = time.monotonic() + 600
for _ in range(100000):
    if time.monotonic() > deadline:
        break
    try:
        conn, _addr = srv.accept()
    except socket.timeout:
        continue
    conn.sendall(("hello from %s\n" % name).encode())
    conn.close()
"""

# One connection attempt: prints "ok <reply>" or "error <errno name or exception>"; with a 4th argument
# "connect", "ok" as soon as the connection is made (for servers that wait for the client to speak first).
PROBE = r"""
import errno, socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as conn:
        print("ok" if sys.argv[4:] == ["connect"] else "ok " + conn.recv(100).decode().strip())
except OSError as exc:
    print("error " + (errno.errorcode.get(exc.errno) or type(exc).__name__))
"""


def run(argv, check=True, timeout=60):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (rc=%s): %s %s" % (argv, proc.returncode, proc.stdout, proc.stderr))
    return proc


def ip_json(*args, netns=None):
    argv = [IP] + (["-n", netns] if netns else []) + ["-j"] + list(args)
    out = run(argv).stdout.strip()
    return json.loads(out) if out else []


def route_type(address, netns=None):
    """How ``address`` is routed in the root namespace or ``netns``: the type of the most specific route
    that covers it ('blackhole', 'unicast dev fdlab250', ...), or 'none' when no route does."""
    def prefixlen(route):
        dst = route.get("dst", "")
        return 0 if dst == "default" else int(dst.partition("/")[2] or 32)

    routes = ip_json("route", "show", "match", address, netns=netns)
    if not routes:
        return "none"
    best = max(routes, key=prefixlen)
    return best.get("type", "unicast") + (" dev %s" % best["dev"] if best.get("dev") else "")


def kernel_route(address, netns=None):
    """The kernel's own lookup (`ip route get`): 'dev IFNAME' or 'error: <why it refused>'."""
    argv = [IP] + (["-n", netns] if netns else []) + ["-j", "route", "get", address]
    proc = run(argv, check=False)
    if proc.returncode != 0:
        return "error: " + proc.stderr.strip()
    route = json.loads(proc.stdout)[0]
    return "%s dev %s" % (route.get("type", "unicast"), route.get("dev"))


def probe(address, port, netns=None, timeout=2.0, connect_only=False):
    argv = ([IP, "netns", "exec", netns] if netns else []) + [sys.executable, "-c", PROBE, address, str(port),
                                                              str(timeout)] + (["connect"] if connect_only else [])
    return run(argv, timeout=timeout + 30).stdout.strip()


def netns_pids(netns):
    proc = run([IP, "netns", "pids", netns], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


class Listener:
    """The tiny TCP listener, started inside ``netns`` (a stand-in for a region's service)."""

    def __init__(self, netns, port, name):
        self.argv = [sys.executable, "-c", LISTENER, str(port), name]
        self.proc = subprocess.Popen([IP, "netns", "exec", netns] + self.argv,  # pylint: disable=consider-using-with
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.port = port
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.proc.poll() is None:
            if probe("127.0.0.1", port, netns=netns, timeout=1).startswith("ok"):
                return
            time.sleep(0.1)
        raise AssertionError("listener in %s did not start: %s" % (netns, self.proc.stderr.read().decode()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def snapshot(index):
    """Everything of lab ``index`` on this machine: namespaces, links, lab routes, the range blackhole,
    nft tables in the root namespace. Equal before a test makes the lab and after it removes it."""
    prefix = "fdl%d" % index
    netns = sorted(entry["name"] for entry in ip_json("netns", "list") if entry["name"].startswith(prefix + "-"))
    links = sorted(link["ifname"] for link in ip_json("link", "show")
                   if link["ifname"] == "fdlab%d" % index or link["ifname"].startswith(prefix + "h"))
    routes = sorted(r.get("dst", "") for r in ip_json("route", "show", "proto", ROUTE_PROTO)
                    if r.get("dst", "").startswith("198.18.%d." % index))
    rng = [r for r in ip_json("route", "show", "type", "blackhole") if r.get("dst") == LAB_RANGE]
    others = sorted(link["ifname"] for link in ip_json("link", "show")
                    if link["ifname"].startswith("fdlab") and link["ifname"] != "fdlab%d" % index)
    return {"netns": netns, "links": links, "routes": routes, "range_blackhole": bool(rng), "other_labs": others}


def user_exists(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def require_lab_tools():
    """Skip (saying why) where the machine cannot hold namespaces: not root, or no ip / nft."""
    if os.geteuid() != 0:
        pytest.skip("the lab network needs root (network namespaces, routes, nftables)")
    for program in (IP, "/usr/sbin/nft"):
        if not os.path.exists(program):
            pytest.skip("%s missing: run `sudo bash scripts/setup.sh`" % program)
