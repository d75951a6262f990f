# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LAB ONLY. The lab's fence: stop a region's PostgreSQL through the lab's control plane (``lab_fence``).

A cloud provider stops an instance it can no longer reach over the network through its own API; the
lab's equivalent is the controller acting on the region's network namespace directly (it is root on
the machine the namespaces live on), whatever the region's network does - partitioned or down.

1. the postmaster is the pid on the first line of ``DATA_DIR/postmaster.pid``, and only when that
   process lives in the region's namespace and runs with its working directory in ``DATA_DIR``;
2. it is stopped the way ``pg_ctl stop -m immediate`` does (SIGQUIT: a fence is about speed, the data
   directory stays crash-consistent and failback rewinds it), or with ``mode=fast`` SIGINT first (a
   shutdown checkpoint - which a partitioned primary may not finish: its walsenders wait for a standby
   they cannot reach) and SIGQUIT after ``timeout``; SIGKILL of what is left of its processes after
   that - always with SIGCONT, so that a frozen process handles the signal;
3. ``standby.signal`` is written into the data directory, so that whoever starts the old primary
   again (the lab bringing the region back, an operator) gets a read-only server in recovery, never
   a second primary, until ``failback.yml`` rejoins it;
4. the proof: no process in the namespace has its working directory in ``DATA_DIR`` (the postmaster
   and every backend run there), read from ``/proc``, not over the network.
"""

from __future__ import annotations

import os
import pwd
import signal

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer, wait_until
from ansible_collections.fediflow.dr_lab.plugins.module_utils.process import netns_inode, pid_netns_inode


MODES = ("immediate", "fast")


def _cwd(pid):
    try:
        return os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        return None


def cluster_pids(inode, data_dir):
    """Pids of the processes in the namespace (its inode) that run in ``data_dir`` (a cluster's processes)."""
    real = os.path.realpath(data_dir)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid_netns_inode(pid) != inode:
            continue
        cwd = _cwd(pid)
        if cwd and (cwd == real or cwd.startswith(real + os.sep)):
            found.append(pid)
    return sorted(found)


def postmaster_pid(data_dir):
    """The pid on the first line of ``data_dir/postmaster.pid``, None without one."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), "r", encoding="ascii", errors="replace") as handle:
            first = handle.readline().strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None


def _signal(pids, sig):
    sent = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            os.kill(pid, signal.SIGCONT)
            sent.append(pid)
        except ProcessLookupError:
            pass
    return sent


def validate(p):
    if not p.get("netns"):
        raise FediflowError("netns is required: the region's network namespace")
    if not p.get("data_dir") or not os.path.isabs(p["data_dir"]):
        raise FediflowError("data_dir must be an absolute path, got '%s'" % p.get("data_dir"))
    if (p.get("mode") or "immediate") not in MODES:
        raise FediflowError("mode must be one of %s, got '%s'" % (", ".join(MODES), p.get("mode")))
    if p.get("timeout") is None or p["timeout"] <= 0:
        raise FediflowError("timeout must be a positive number of seconds, got %s" % p.get("timeout"))
    try:
        pwd.getpwnam(p.get("os_user") or "postgres")
    except KeyError:
        raise FediflowError("os_user '%s' does not exist on the controller" % p.get("os_user"))


def _mark_standby(data_dir, os_user):
    path = os.path.join(data_dir, "standby.signal")
    if os.path.exists(path):
        return False
    entry = pwd.getpwnam(os_user)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchown(fd, entry.pw_uid, entry.pw_gid)
    finally:
        os.close(fd)
    return True


def fence(p, check_mode=False):
    """Stop the cluster of ``p['data_dir']`` in namespace ``p['netns']`` and prove it (see the module docs)."""
    timer = Timer()
    validate(p)
    netns, data_dir = p["netns"], p["data_dir"]
    os_user = p.get("os_user") or "postgres"
    inode = netns_inode(netns)
    if inode is None:
        raise FediflowError("network namespace '%s' does not exist (the lab's region is not there)" % netns)
    if not os.path.isfile(os.path.join(data_dir, "PG_VERSION")):
        raise FediflowError("data_dir '%s' holds no PostgreSQL cluster (no PG_VERSION)" % data_dir)
    before = cluster_pids(inode, data_dir)
    mark = p.get("mark_standby", True) and not os.path.exists(os.path.join(data_dir, "standby.signal"))
    result = {"netns": netns, "data_dir": data_dir, "postmaster_pid": None, "signals": [], "actions": [],
              "processes_before": len(before), "marked_standby": False,
              "diff": {"before": {"running": bool(before)}, "after": {"running": False}}}
    if check_mode:
        if before:
            result["actions"].append("would stop the cluster's %d process(es) in %s (%s, then SIGKILL)"
                                     % (len(before), netns, "SIGINT, SIGQUIT" if p.get("mode") == "fast" else "SIGQUIT"))
        if mark:
            result["actions"].append("would write %s/standby.signal" % data_dir)
        result.update(changed=bool(before) or bool(mark), fenced=True,
                      proved="(check mode) %d process(es) of the cluster in %s now" % (len(before), netns),
                      duration_s=timer.elapsed())
        return result
    timeout = float(p["timeout"])
    if before:
        master = postmaster_pid(data_dir)
        if master not in before:
            master = None  # a stale postmaster.pid, or not in this namespace: never signalled
        result["postmaster_pid"] = master
        stopped = False
        if master and (p.get("mode") or "immediate") == "fast":
            result["signals"].append(["kill", "-INT", str(master)])
            _signal([master], signal.SIGINT)
            with timer.phase("fast"):
                stopped = wait_until(lambda: not cluster_pids(inode, data_dir), timeout, interval=0.05)[0]
        if master and not stopped and _signal([master], signal.SIGQUIT):
            result["signals"].append(["kill", "-QUIT", str(master)])
            with timer.phase("immediate"):
                wait_until(lambda: not cluster_pids(inode, data_dir), timeout, interval=0.05)
        left = cluster_pids(inode, data_dir)
        if left:
            result["signals"].append(["kill", "-KILL"] + [str(pid) for pid in left])
            _signal(left, signal.SIGKILL)
            wait_until(lambda: not cluster_pids(inode, data_dir), 5.0, interval=0.05)
        result["actions"].append("stopped the cluster's %d process(es) in %s (%s)" % (
            len(before), netns, ", ".join(" ".join(s[:2]) for s in result["signals"]) or "already exiting"))
    after = cluster_pids(inode, data_dir)
    if after:
        raise FediflowError("fence failed: %d process(es) of %s still run in %s after SIGKILL: %s"
                            % (len(after), data_dir, netns, after), result=dict(result, duration_s=timer.elapsed()))
    if mark:
        result["marked_standby"] = _mark_standby(data_dir, os_user)
        if result["marked_standby"]:
            result["actions"].append("wrote %s/standby.signal (a restart comes up read-only, in recovery)" % data_dir)
    result.update(
        changed=bool(before) or result["marked_standby"], fenced=True,
        proved="no process of the cluster %s left in namespace %s (%s; read from /proc by the lab's control plane)"
               % (data_dir, netns, "stopped %d" % len(before) if before else "none was running"),
        duration_s=timer.elapsed(), phases=timer.phases)
    return result
