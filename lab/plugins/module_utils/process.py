# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Detached service processes with a pid file and a health URL (used by ``lab_service``).

A service is "running" when its pid file names a live process whose command line is
exactly the wanted ``argv``. Starting waits on the health URL with a deadline (never a
fixed sleep); a process that dies while starting is reported with the tail of its log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

from ansible.module_utils.urls import open_url

from ansible_collections.fediflow.dr.plugins.module_utils import atomic
from ansible_collections.fediflow.dr.plugins.module_utils.common import (
    FediflowError, Timer, last_lines, wait_until)


def ip_program():
    """Path of iproute2's ``ip`` (in /usr/sbin or /sbin, which a non-login PATH may lack)."""
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") or "ip"


def netns_argv(netns):
    """The prefix that runs a program inside network namespace ``netns`` ([] for none).

    ``ip netns exec`` execs the program, so the started pid is the program's own."""
    return [ip_program(), "netns", "exec", netns] if netns else []


def netns_inode(netns):
    """Inode of the named network namespace (/run/netns/NAME), or None when it does not exist."""
    try:
        return os.stat(os.path.join("/run/netns", netns)).st_ino
    except OSError:
        return None


def pid_netns_inode(pid):
    """Inode of the network namespace ``pid`` lives in, or None when it is gone."""
    try:
        return os.stat("/proc/%d/ns/net" % pid).st_ino
    except OSError:
        return None


def _stat_field(pid, field):
    """Field ``field`` (1-based, as proc(5) numbers them) of /proc/PID/stat, None when the process is gone.
    Counted after the command name, which may hold spaces and parentheses."""
    try:
        with open("/proc/%d/stat" % pid, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[field - 3]
    except (OSError, IndexError):
        return None


def start_ticks(pid):
    """Start time of ``pid`` (/proc/PID/stat field 22): with the pid it names one process."""
    return _stat_field(pid, 22)


def process_state(pid):
    """The one-letter state of ``pid`` (/proc/PID/stat field 3: R, S, T stopped, Z ...), None when gone."""
    return _stat_field(pid, 3)


def terminate(pid):
    """SIGTERM ``pid``, then SIGCONT, so that a frozen (SIGSTOPped) process handles it too.
    Raises ProcessLookupError when it is gone."""
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGCONT)


def read_pid(pid_file):
    """The pid in ``pid_file`` if that process is still the one we started, else None.

    The file holds "PID START_TICKS"; after a reboot or pid reuse the ticks differ, so a stale
    pid file never leads to signalling somebody else's process."""
    try:
        with open(pid_file, "r", encoding="ascii") as handle:
            pid_text, _sep, ticks = handle.read().strip().partition(" ")
        pid = int(pid_text or 0)
    except (OSError, ValueError):
        return None
    if not pid or not ticks or ticks != start_ticks(pid):
        return None
    return pid


def process_argv(pid):
    """The command line of ``pid`` as a list, or None when it is gone (or a zombie)."""
    if process_state(pid) in (None, "Z"):
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0")[:-1]]


def healthy(url, timeout=1.0):
    if not url:
        return True
    try:
        with open_url(url, timeout=timeout, validate_certs=True, use_proxy=False) as resp:
            return 200 <= resp.status < 300
    except Exception:  # pylint: disable=broad-except
        # any failure (refused, timeout, HTTP error) means "not healthy yet"
        return False


def status(argv, pid_file, health_url=None, match_argv=True, netns=None):
    """Current state as plain data: ``{'state': 'started'|'stopped', 'pid', 'argv_matches', 'healthy'}``.

    With ``match_argv=False`` a live, healthy process from the pid file counts whatever its
    command line (for a stateful service that another checkout of the lab started). With
    ``netns``, a process outside that network namespace never matches."""
    pid = read_pid(pid_file)
    running_argv = process_argv(pid) if pid else None
    if running_argv is None:
        return {"state": "stopped", "pid": None, "argv_matches": False, "healthy": False}
    # a script started through its shebang shows up as [interpreter, script, args...]
    matches = running_argv == list(argv) or running_argv[1:] == list(argv) or not match_argv
    if netns and pid_netns_inode(pid) != netns_inode(netns):
        matches = False
    return {"state": "started", "pid": pid, "argv_matches": matches,
            "healthy": matches and healthy(health_url)}


def plan(current, wanted_state):
    """What must happen to reach ``wanted_state``: a list of actions (empty = nothing)."""
    if wanted_state == "stopped":
        return ["stop"] if current["state"] == "started" else []
    if current["state"] == "stopped":
        return ["start"]
    if not current["argv_matches"] or not current["healthy"]:
        return ["stop", "start"]
    return []


def _write_pid(pid_file, pid):
    atomic.write_atomic(pid_file, "%d %s\n" % (pid, start_ticks(pid)))


def start(argv, pid_file, log_file, health_url=None, timeout=30.0, env=None, chdir=None, netns=None):
    if netns and netns_inode(netns) is None:
        raise FediflowError("network namespace %s does not exist (make the lab network first: "
                            "fediflow.dr_lab.lab_network state=present)" % netns)
    for path in (pid_file, log_file):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    run_env = dict(os.environ)
    run_env.update(env or {})
    with open(log_file, "ab") as log:
        try:
            proc = subprocess.Popen(  # pylint: disable=consider-using-with
                netns_argv(netns) + list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=run_env, cwd=chdir or "/", start_new_session=True, close_fds=True)
        except OSError as exc:
            raise FediflowError("cannot start %s: %s" % (argv[0], exc))
    _write_pid(pid_file, proc.pid)

    want_ns = netns_inode(netns) if netns else None

    def outside_ns():
        return want_ns is not None and pid_netns_inode(proc.pid) != want_ns

    def ready():
        if proc.poll() is not None:
            return "exited"
        # `ip netns exec` enters the namespace, then execs the program: until it has, the pid is still in
        # the caller's namespace, and status() (which matches by namespace) would not see the service -
        # a second run right away would start another one. Ready means inside the namespace, then healthy.
        if outside_ns():
            return None
        return "ready" if healthy(health_url) else None

    outcome, waited = wait_until(ready, timeout)
    if outcome != "ready":
        tail = ""
        try:
            with open(log_file, "r", encoding="utf-8", errors="replace") as handle:
                tail = last_lines(handle.read())
        except OSError:
            pass
        if proc.poll() is None:
            stop_pid(proc.pid, 5.0)
        _remove(pid_file)
        if outcome == "exited":
            why = "exited with code %s" % proc.returncode
        elif outside_ns():
            why = "did not enter network namespace %s within %ss" % (netns, timeout)
        else:
            why = "did not answer %s within %ss" % (health_url, timeout)
        raise FediflowError("%s %s; last log lines: %s" % (os.path.basename(argv[0]), why, tail))
    return proc.pid, waited


def stop_pid(pid, timeout):
    """SIGTERM (a frozen process woken to handle it), wait for exit up to ``timeout``, then SIGKILL.
    Returns how it ended."""
    try:
        terminate(pid)
    except ProcessLookupError:
        return "gone"

    def gone():
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return process_argv(pid) is None

    done = wait_until(gone, timeout)[0]
    if done:
        return "terminated"
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "terminated"
    wait_until(gone, 5.0)
    return "killed"


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def ensure(name, argv, pid_file, log_file, state="started", health_url=None, timeout=30.0,
           env=None, chdir=None, check_mode=False, match_argv=True, netns=None):
    """Bring service ``name`` to ``state``; returns the module result as a plain dict."""
    timer = Timer()
    if not argv:
        raise FediflowError("argv must name the program to run for service '%s'" % name)
    before = status(argv, pid_file, health_url, match_argv, netns)
    actions = plan(before, state)
    result = {
        "changed": bool(actions), "name": name, "actions": actions, "pid": before["pid"],
        "diff": {"before": {"state": before["state"], "pid": before["pid"]},
                 "after": {"state": state}},
    }
    if check_mode or not actions:
        result["state"] = before["state"] if not actions else state
        result["duration_s"] = timer.elapsed()
        return result
    if "stop" in actions:
        with timer.phase("stop"):
            result["stop"] = stop_pid(before["pid"], timeout)
        _remove(pid_file)
        result["pid"] = None
    if "start" in actions:
        with timer.phase("start"):
            try:
                pid, waited = start(argv, pid_file, log_file, health_url, timeout, env, chdir, netns)
            except FediflowError as exc:
                raise FediflowError("service '%s': %s" % (name, exc.message))
        result["pid"] = pid
        result["health_wait_s"] = waited
    result["state"] = state
    result["diff"]["after"]["pid"] = result["pid"]
    result["phases"] = timer.phases
    result["duration_s"] = timer.elapsed()
    return result
