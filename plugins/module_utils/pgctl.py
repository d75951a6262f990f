# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start, stop, restart and reload a PostgreSQL cluster with ``pg_ctl`` (used by ``pg_ctl``).

Runs as the cluster's OS owner (PostgreSQL refuses root), through argument lists only. A cluster of
Debian's packaged layout (``postgresql-common``: configuration in ``/etc/postgresql/VERSION/NAME``,
apart from the data directory) is named by ``cluster`` (``VERSION/NAME``, as ``pg_lsclusters``
shows it) and controlled with ``pg_ctlcluster``, which reads that configuration directory and goes
through ``systemctl`` where systemd supervises the cluster.
``pg_ctl -w`` returns once the postmaster accepts connections, which for a standby is
*before* recovery has caught up: callers that need a writable primary poll
``pg_is_in_recovery()`` themselves.
"""

from __future__ import annotations

import glob
import os
import re

from ansible_collections.fediflow.dr.plugins.module_utils.common import (
    FediflowError, Timer, last_lines, run)

STATES = ("started", "stopped", "restarted", "reloaded")
STOP_MODES = ("smart", "fast", "immediate")


def _version_key(path):
    match = re.search(r"/(\d+)(?:\.\d+)?/bin$", path)
    return int(match.group(1)) if match else 0


def find_bindir(explicit=None):
    """Where PostgreSQL's server programs are: ``explicit``, else ``pg_config --bindir``,
    else the newest ``/usr/lib/postgresql/*/bin`` / ``/usr/pgsql-*/bin``."""
    if explicit:
        if not os.path.isfile(os.path.join(explicit, "pg_ctl")):
            raise FediflowError("bin_dir '%s' has no pg_ctl" % explicit)
        return explicit
    try:
        res = run(["pg_config", "--bindir"], timeout=10)
        candidate = res.stdout.strip()
        if res.rc == 0 and os.path.isfile(os.path.join(candidate, "pg_ctl")):
            return candidate
    except FediflowError:
        pass
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin"),
                   key=_version_key)
    found = [d for d in found if os.path.isfile(os.path.join(d, "pg_ctl"))]
    if not found:
        raise FediflowError("no PostgreSQL server programs found: set bin_dir "
                            "(pg_config --bindir found none, nor /usr/lib/postgresql/*/bin)")
    return found[-1]


CLUSTER_RE = re.compile(r"^(\d+(?:\.\d+)?)/([A-Za-z0-9_.]+)$")


def split_cluster(cluster):
    """``VERSION/NAME`` of a Debian packaged cluster (``15/main``) as (version, name)."""
    match = CLUSTER_RE.match(cluster or "")
    if not match:
        raise FediflowError("cluster must be VERSION/NAME of a Debian packaged cluster, as pg_lsclusters shows "
                            "it (e.g. 15/main; the name of letters, digits, '_' and '.'), got '%s'" % cluster)
    return match.group(1), match.group(2)


def control_argv(bindir, action, data_dir, cluster=None, log_file=None, mode="fast", timeout=60, conf_root=None):
    """The argument list that runs ``action`` (start, stop, restart, reload) on a cluster: ``pg_ctlcluster``
    for a Debian packaged ``cluster``, else ``pg_ctl -D data_dir`` (waiting up to ``timeout``).

    A stop of a packaged cluster whose configuration directory is gone (``conf_root``/VERSION/NAME: removed
    by hand, lost with /etc) uses ``pg_ctl -D data_dir``: pg_ctlcluster no longer knows the cluster, the
    server still runs and must still be stoppable."""
    if cluster:
        version, name = split_cluster(cluster)
        root = conf_root or os.environ.get("PG_CLUSTER_CONF_ROOT") or "/etc/postgresql"
        if not (action == "stop" and not os.path.isdir(os.path.join(root, version, name))):
            return ["pg_ctlcluster"] + (["-m", mode] if action in ("stop", "restart") else []) + [version, name, action]
    argv = [os.path.join(bindir, "pg_ctl"), action, "-D", data_dir]
    if action in ("start", "restart") and log_file:
        argv += ["-l", log_file]
    if action in ("start", "stop", "restart"):
        argv += ["-w", "-t", str(int(timeout))]
    if action in ("stop", "restart"):
        argv += ["-m", mode]
    return argv


def control(bindir, action, data_dir, os_user, log_file=None, mode="fast", timeout=60, cluster=None):
    """Run ``action`` on the cluster (see ``control_argv``); raises with the server log's last lines when it
    fails. ``pg_ctlcluster`` runs as root when this runs as root (it becomes the cluster's owner itself)."""
    argv = control_argv(bindir, action, data_dir, cluster, log_file, mode, timeout)
    packaged = argv[0] == "pg_ctlcluster"
    user = None if packaged and os.geteuid() == 0 else os_user
    res = run(argv, user=user, timeout=timeout + 30, cwd="/")
    if res.rc != 0:
        hint = ""
        if log_file and action in ("start", "restart") and os.path.exists(log_file):
            hint = "; server log %s: %s" % (log_file, _tail(log_file))
        what = " ".join(argv[:1] + argv[-3:] if packaged else argv[:4])
        raise FediflowError("%s failed (rc=%s): %s%s" % (what, res.rc, last_lines(res.stderr or res.stdout), hint),
                            command=res.as_dict())
    return res


def status(bindir, data_dir, os_user):
    """``running`` / ``stopped`` / ``absent`` (no cluster in ``data_dir``), and the pid."""
    if not os.path.isfile(os.path.join(data_dir, "PG_VERSION")):
        return {"state": "absent", "pid": None}
    res = run([os.path.join(bindir, "pg_ctl"), "status", "-D", data_dir], user=os_user, timeout=30)
    if res.rc == 0:
        match = re.search(r"PID: (\d+)", res.stdout)
        return {"state": "running", "pid": int(match.group(1)) if match else None}
    if res.rc == 3:
        return {"state": "stopped", "pid": None}
    raise FediflowError("pg_ctl status -D %s failed (rc=%s): %s"
                        % (data_dir, res.rc, last_lines(res.stderr or res.stdout)))


# pg_controldata lines read back (LC_ALL=C keeps their names stable).
CONTROL_FIELDS = {
    "Database cluster state": "cluster_state",
    "Latest checkpoint location": "checkpoint_lsn",
    "Latest checkpoint's REDO location": "redo_lsn",
    "Latest checkpoint's TimeLineID": "timeline",
}


def parse_controldata(text):
    """The fields of ``CONTROL_FIELDS`` from ``pg_controldata`` output; the timeline as an int."""
    out = {}
    for line in (text or "").splitlines():
        name, sep, value = line.partition(":")
        key = CONTROL_FIELDS.get(name.strip())
        if sep and key:
            out[key] = value.strip()
    if "timeline" in out:
        try:
            out["timeline"] = int(out["timeline"])
        except ValueError:
            out["timeline"] = None
    return out


def controldata(bindir, data_dir, os_user):
    """What the control file of a (stopped) cluster says: its state (``shut down``, ``shut down in
    recovery``, ``in production`` = crashed or running ...), the latest checkpoint's location and timeline.
    After a clean stop of a primary, the standbys that were connected hold its WAL up to that checkpoint."""
    res = run([os.path.join(bindir, "pg_controldata"), "--pgdata=" + data_dir], user=os_user, timeout=30,
              cwd="/", env={"LC_ALL": "C"})
    if res.rc != 0:
        raise FediflowError("pg_controldata --pgdata=%s failed (rc=%s): %s"
                            % (data_dir, res.rc, last_lines(res.stderr or res.stdout)))
    return parse_controldata(res.stdout)


def plan(current_state, wanted):
    """Actions to reach ``wanted`` from ``current_state`` ('running'/'stopped')."""
    if wanted == "started":
        return [] if current_state == "running" else ["start"]
    if wanted == "stopped":
        return ["stop"] if current_state == "running" else []
    if wanted == "restarted":
        return ["restart"] if current_state == "running" else ["start"]
    if wanted == "reloaded":
        return ["reload"] if current_state == "running" else ["start"]
    raise FediflowError("state must be one of %s, got '%s'" % (", ".join(STATES), wanted))


def _tail(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            handle.seek(max(0, os.path.getsize(path) - 4096))
            return last_lines(handle.read(), 3)
    except OSError:
        return "(unreadable)"


def ensure(data_dir, state="started", os_user="postgres", bin_dir=None, log_file=None,
           stop_mode="fast", timeout=60, check_mode=False, cluster=None):
    timer = Timer()
    if cluster:
        split_cluster(cluster)  # refused before anything runs
    if state not in STATES:
        raise FediflowError("state must be one of %s, got '%s'" % (", ".join(STATES), state))
    if stop_mode not in STOP_MODES:
        raise FediflowError("stop_mode must be one of %s, got '%s'" % (", ".join(STOP_MODES), stop_mode))
    bindir = find_bindir(bin_dir)
    if cluster:
        log_file = None  # the cluster's own (pg_createcluster -l, or /var/log/postgresql): pg_ctlcluster shows it
    else:
        log_file = log_file or os.path.join(os.path.dirname(os.path.abspath(data_dir)),
                                            os.path.basename(os.path.abspath(data_dir)) + ".log")
    before = status(bindir, data_dir, os_user)
    if before["state"] == "absent":
        raise FediflowError("data_dir '%s' holds no PostgreSQL cluster (no PG_VERSION): "
                            "initdb or restore it first" % data_dir)
    actions = plan(before["state"], state)
    after_state = "stopped" if state == "stopped" else "running"
    result = {
        "changed": bool(actions), "actions": actions, "bin_dir": bindir, "log_file": log_file,
        "cluster": cluster or None,
        "diff": {"before": {"state": before["state"], "pid": before["pid"]},
                 "after": {"state": after_state}},
        "commands": [],
    }
    if check_mode or not actions:
        result.update(state=after_state if actions else before["state"], pid=before["pid"],
                      duration_s=timer.elapsed())
        if before["state"] == "stopped":
            result["control"] = controldata(bindir, data_dir, os_user)
        return result
    for action in actions:
        with timer.phase(action):
            result["commands"].append(control(bindir, action, data_dir, os_user, log_file, stop_mode, timeout,
                                              cluster).as_dict())
    after = status(bindir, data_dir, os_user)
    result.update(state=after["state"], pid=after["pid"], phases=timer.phases,
                  duration_s=timer.elapsed())
    result["diff"]["after"]["pid"] = after["pid"]
    if after["state"] == "stopped":
        result["control"] = controldata(bindir, data_dir, os_user)
    return result
