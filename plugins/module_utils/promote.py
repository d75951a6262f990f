# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Promote a streaming standby, guarded against split-brain and replay lag (``pg_promote``).

Order of a run, each step only reading until the guards have passed:

1. validate the options (bad input is refused before anything is touched);
2. read the standby: in recovery?, timeline, received / replayed LSN, replay age;
   a node that is not in recovery is already promoted: nothing to do (``changed=false``);
3. lag guard (``max_lag_bytes`` / ``max_lag_seconds``) - before any fencing, so a refused
   promotion never leaves the old primary stopped with nobody promoted;
4. probe the old primary (``old_primary_host``/``old_primary_port``, else the host the
   standby streams from): writable / read-only / in recovery / stopped / unreachable /
   no answer / unknown; fence it when asked (``stop`` via pg_ctl on this host), then probe again;
5. split-brain guard on that outcome. **Unreachable is not down**: an old primary that cannot be
   reached (nothing listens, no route, no answer in time) may be alive behind a partition, so it
   only counts as safe with a fence that succeeded (``old_primary_fenced_by``: what fenced it and
   what that proved) or the operator's assertion (``old_primary_confirmed_down``); ``force``
   records failed guards as overridden;
6. planned switchover: wait until the standby has replayed the stopped old primary's last WAL
   (``wait_replay_lsn``, its shutdown checkpoint): no acknowledged write is left behind;
7. ``pg_promote(wait => false)`` and poll, with one deadline, until the node leaves recovery
   and a transaction can take a transaction id (rolled back: nothing is written).

The pure parts (LSN arithmetic, lag assessment, guard decisions, error classification) take
plain values so they are unit-tested without a server; the rest is proven by the integration
tier on a real primary + standby pair.
"""

from __future__ import annotations

import time

from ansible_collections.fediflow.dr.plugins.module_utils import pgctl, postgres
from ansible_collections.fediflow.dr.plugins.module_utils.common import (
    FediflowError, Timer, wait_until)

FENCE_MODES = ("none", "stop")

# Old-primary states. Safe on their own: stopped (pg_ctl status on this host) and in recovery.
# Unreachable (nothing listens there, no route, unknown host) and no_answer (no answer in time) are
# what a partition looks like from one side: safe only with a fence that succeeded or the operator's
# assertion that it is down. read_only (default_transaction_read_only) is no fence: any session can
# lift it. writable, and a server that answers but cannot be asked (unknown), block.
SAFE_STATES = ("stopped", "in_recovery")
CANNOT_REACH = ("unreachable", "no_answer")


def validate(p):
    """Refuse bad input before anything is touched; messages name the option."""
    if p.get("timeout") is None or p["timeout"] <= 0:
        raise FediflowError("timeout must be a positive number of seconds, got %s" % p.get("timeout"))
    for opt in ("max_lag_bytes", "max_lag_seconds"):
        if p.get(opt) is not None and p[opt] < 0:
            raise FediflowError("%s must be 0 or more, got %s" % (opt, p[opt]))
    fence = p.get("fence_old_primary") or "none"
    if fence == "read_only":
        raise FediflowError("fence_old_primary=read_only is no fence (default_transaction_read_only is lifted by any "
                            "session's SET): stop the old primary (fence_old_primary=stop on its host, or pg_ctl stop "
                            "there and wait_replay_lsn), then promote")
    if fence not in FENCE_MODES:
        raise FediflowError("fence_old_primary must be one of %s, got '%s'" % (", ".join(FENCE_MODES), fence))
    if fence == "stop" and not p.get("old_primary_data_dir"):
        raise FediflowError("fence_old_primary=stop needs old_primary_data_dir (pg_ctl stops the old "
                            "primary, so it must be on the host this module runs on)")
    if p.get("old_primary_cluster"):
        try:
            pgctl.split_cluster(p["old_primary_cluster"])
        except FediflowError as exc:
            raise FediflowError("old_primary_" + exc.message)
    if p.get("wait_replay_lsn"):
        try:
            lsn_to_int(p["wait_replay_lsn"])
            int(str(p["wait_replay_lsn"]).partition("/")[0], 16)
        except (FediflowError, ValueError):
            raise FediflowError("wait_replay_lsn must be an LSN like 0/3000028, got '%s'" % p["wait_replay_lsn"])
    port = p.get("old_primary_port")
    if port is not None and not 0 < int(port) < 65536:
        raise FediflowError("old_primary_port must be between 1 and 65535, got %s" % port)
    postgres.validate_conn(p)


# ---------------------------------------------------------------- pure helpers

def lsn_to_int(lsn):
    """'16/B374D848' -> byte position; None stays None."""
    if lsn is None:
        return None
    high, sep, low = str(lsn).partition("/")
    if not sep or not low:
        raise FediflowError("not an LSN: '%s'" % lsn)
    return (int(high, 16) << 32) + int(low, 16)


def timeline_of_walfile(name):
    """Timeline of a WAL file name: its first 8 hex digits ('000000020000000000000003' -> 2)."""
    if not name or len(name) < 8:
        return None
    return int(name[:8], 16)


def assess_lag(receive_lsn, replay_lsn, replay_age_s):
    """Replay lag of a standby from its receive/replay LSNs and the age of the last replayed
    transaction.

    ``replay_age_s`` (now() - pg_last_xact_replay_timestamp()) keeps growing on an idle
    primary although nothing is missing, so it only counts while something received is not
    replayed yet: received == replayed means no lag, whatever the age.
    Without streaming (no receive LSN) the lag cannot be measured: bytes/seconds are None.
    """
    receive, replay = lsn_to_int(receive_lsn), lsn_to_int(replay_lsn)
    if receive is None or replay is None:
        return {"bytes": None, "seconds": None, "caught_up": None}
    lag_bytes = max(0, receive - replay)
    if lag_bytes == 0:
        return {"bytes": 0, "seconds": 0.0, "caught_up": True}
    seconds = None if replay_age_s is None else round(max(0.0, float(replay_age_s)), 3)
    return {"bytes": lag_bytes, "seconds": seconds, "caught_up": False}


def lag_guard(lag, max_bytes=None, max_seconds=None):
    """The lag guard's verdict for ``lag`` (from assess_lag) against the bounds."""
    out = {"ok": True, "max_bytes": max_bytes, "max_seconds": max_seconds,
           "bytes": lag.get("bytes"), "seconds": lag.get("seconds")}
    if max_bytes is None and max_seconds is None:
        out.update(status="not_requested", detail="no max_lag_bytes / max_lag_seconds given")
        return out
    problems = []
    if max_bytes is not None:
        if lag.get("bytes") is None:
            problems.append("replay lag in bytes cannot be measured (no WAL received by streaming)")
        elif lag["bytes"] > max_bytes:
            problems.append("%s bytes received but not replayed > max_lag_bytes=%s" % (lag["bytes"], max_bytes))
    if max_seconds is not None:
        if lag.get("seconds") is None:
            problems.append("replay lag in seconds cannot be measured (no replayed transaction timestamp)")
        elif lag["seconds"] > max_seconds:
            problems.append("replay is %ss behind > max_lag_seconds=%s" % (lag["seconds"], max_seconds))
    if problems:
        out.update(ok=False, status="exceeded", detail="; ".join(problems))
    else:
        out.update(status="within_bounds", detail="replay lag within the bounds")
    return out


def old_primary_state(in_recovery, read_only):
    """State of a reachable old primary from pg_is_in_recovery() and default_transaction_read_only."""
    if in_recovery:
        return "in_recovery"
    return "read_only" if read_only else "writable"


def split_brain_guard(probe, would_fence=None, fenced_by=None, confirmed_down=False):
    """Verdict on the old primary's state (``probe`` from probe_old_primary).

    ``would_fence`` names the fence check mode predicts (the state is the one before fencing);
    ``fenced_by`` says what fenced the old primary outside this module and what that proved (a fence
    method of the inventory that succeeded); ``confirmed_down`` is the operator's assertion that it is
    down. Either makes an old primary that cannot be reached safe - nothing else does.
    """
    status = probe.get("status")
    out = dict(probe)
    if fenced_by:
        out["fenced_by"] = fenced_by
    if confirmed_down:
        out["confirmed_down"] = True
    target = probe.get("target")
    if status in SAFE_STATES:
        out.update(ok=True, detail={
            "stopped": "the old primary's cluster is stopped (pg_ctl status)",
            "in_recovery": "the old primary is in recovery (a standby): it does not accept writes",
        }[status])
    elif status in CANNOT_REACH and (fenced_by or confirmed_down):
        why = ("fenced: %s" % fenced_by) if fenced_by else "the operator confirmed it down (confirmed_down)"
        out.update(ok=True, detail="the old primary at %s cannot be reached (%s); %s" % (target, probe.get("error"), why))
    elif would_fence:
        out.update(ok=True, detail="the old primary is %s; fence_old_primary=%s would fence it first"
                   % (status, would_fence))
    elif status in CANNOT_REACH:
        out.update(ok=False, detail="the old primary at %s cannot be reached (%s), which is not the same as down: it may "
                   "be alive behind a partition, taking writes. Fence it (a fence method for its region in the inventory, "
                   "or old_primary_fenced_by after fencing it yourself), or, if you know it is down, assert it "
                   "(confirmed_down / -e source_confirmed_down=true)" % (target, probe.get("error")))
    elif status == "writable":
        contradicted = (" although it was reported fenced (%s)" % fenced_by) if fenced_by else ""
        out.update(ok=False, detail="the old primary at %s still accepts writes%s: promoting now would give two "
                   "primaries (split-brain). Stop it, set fence_old_primary, or force=true" % (target, contradicted))
    elif status == "read_only":
        out.update(ok=False, detail="the old primary at %s is up with default_transaction_read_only = on, which any "
                   "session can lift: stop it (pg_ctl stop, or fence_old_primary=stop on its host), or force=true"
                   % target)
    elif status == "not_checked":
        out.update(ok=False, detail="cannot check the old primary: set old_primary_host (the standby names no "
                   "upstream in pg_stat_wal_receiver / primary_conninfo), or force=true")
    else:
        out.update(ok=False, detail="the old primary at %s answered but its state is unknown (%s): a server that answers "
                   "is not down - fix the old_primary_login_* options, stop it, or force=true" % (target, probe.get("error")))
    return out


def blockers(guards, force):
    """Names of failed guards; with ``force`` they are overridden, not blocking."""
    failed = [name for name, guard in sorted(guards.items()) if not guard.get("ok")]
    return ([], failed) if force else (failed, [])


def upstream_target(p, receiver, conninfo):
    """Where the old primary is: the options first, else the host the standby streams from
    (pg_stat_wal_receiver), else its primary_conninfo (a dict from psycopg2's parse_dsn)."""
    if p.get("old_primary_host"):
        return {"host": p["old_primary_host"], "port": p.get("old_primary_port") or 5432, "source": "options"}
    if receiver and receiver.get("sender_host"):
        return {"host": receiver["sender_host"], "port": p.get("old_primary_port") or receiver.get("sender_port") or 5432,
                "source": "pg_stat_wal_receiver"}
    host = (conninfo or {}).get("host") or (conninfo or {}).get("hostaddr")
    if host:
        return {"host": host, "port": p.get("old_primary_port") or int((conninfo or {}).get("port") or 5432),
                "source": "primary_conninfo"}
    return None


def old_primary_params(p, target):
    """Connection options for the old primary: its own login options, else the standby's."""
    params = dict(p)
    params.update(login_host=target["host"], login_port=int(target["port"]), login_unix_socket="")
    if p.get("old_primary_login_user"):
        params["login_user"] = p["old_primary_login_user"]
    if p.get("old_primary_login_password"):
        params["login_password"] = p["old_primary_login_password"]
    return params


# ---------------------------------------------------------------- talking to servers

def _one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def _exec(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)


def standby_facts(conn):
    """What the node says about itself; only read-only queries."""
    in_recovery, replay_paused = _one(
        conn, "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END")
    facts = {"in_recovery": in_recovery, "replay_paused": replay_paused}
    if not in_recovery:
        walfile, read_only = _one(conn, "SELECT pg_walfile_name(pg_current_wal_lsn()), "
                                        "current_setting('default_transaction_read_only')")
        facts.update(timeline=timeline_of_walfile(walfile), default_transaction_read_only=read_only == "on")
        return facts
    row = _one(conn, """
        SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
               extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
               (SELECT timeline_id FROM pg_control_checkpoint())""")
    facts.update(receive_lsn=row[0], replay_lsn=row[1], replay_age_s=row[2], timeline=row[3])
    receiver = _one(conn, "SELECT status, sender_host, sender_port, received_tli, "
                          "round(extract(epoch FROM now() - last_msg_receipt_time)::numeric, 3)::float8 "
                          "FROM pg_stat_wal_receiver")
    facts["wal_receiver"] = (dict(zip(("status", "sender_host", "sender_port", "received_tli", "last_msg_age_s"),
                                      receiver)) if receiver else None)
    if receiver and receiver[3]:
        # the checkpoint's timeline can trail the one being received
        facts["timeline"] = max(facts["timeline"] or 0, receiver[3])
    try:
        conn_text = _one(conn, "SELECT current_setting('primary_conninfo')")[0]
    except Exception:  # pylint: disable=broad-except
        conn_text = ""  # reading primary_conninfo needs superuser or pg_read_all_settings
    facts["primary_conninfo"] = _parse_conninfo(conn_text)
    return facts


def _parse_conninfo(text):
    if not text:
        return {}
    try:
        from psycopg2.extensions import parse_dsn  # pylint: disable=import-outside-toplevel
        parsed = parse_dsn(text)
    except Exception:  # pylint: disable=broad-except
        return {}
    return {k: parsed[k] for k in ("host", "hostaddr", "port") if parsed.get(k)}


def probe_old_primary(p, target, connect_timeout):
    """State of the old primary; never raises for an unreachable server."""
    probe = {"target": None, "source": None}
    if p.get("old_primary_data_dir"):
        bindir = pgctl.find_bindir(p.get("old_primary_bin_dir"))
        local = pgctl.status(bindir, p["old_primary_data_dir"], p.get("old_primary_os_user") or "postgres")
        if local["state"] == "absent":
            raise FediflowError("old_primary_data_dir '%s' holds no PostgreSQL cluster (no PG_VERSION)"
                                % p["old_primary_data_dir"])
        probe.update(data_dir=p["old_primary_data_dir"], pg_ctl_state=local["state"])
        if local["state"] == "stopped":
            probe.update(status="stopped", target=_fmt(target), source=(target or {}).get("source"))
            return probe
        if not target:
            probe.update(status="unknown", error="running (pg_ctl status), and no old_primary_host to ask "
                                                 "whether it accepts writes")
            return probe
    if not target:
        probe["status"] = "not_checked"
        return probe
    probe.update(target=_fmt(target), source=target["source"])
    params = old_primary_params(p, target)
    params["connect_timeout"] = connect_timeout
    try:
        conn = postgres.connect(params)
    except FediflowError as exc:
        # nothing answered (unreachable, no_answer: what a partition looks like too) or a server answered
        # and would not let us in (unknown: alive, never down)
        kind = postgres.classify_connect_error(exc.message)
        status = {"unreachable": "unreachable", "timeout": "no_answer"}.get(kind, "unknown")
        probe.update(status=status, error=exc.message.rsplit(": ", 1)[-1].strip())
        if probe["status"] in CANNOT_REACH and probe.get("pg_ctl_state") == "running":
            # pg_ctl says it runs here: not answering at that address does not make it down
            probe.update(status="unknown", error="running (pg_ctl status) but no answer at %s: %s"
                         % (probe["target"], probe["error"]))
        return probe
    try:
        # read-only only counts server-wide (configuration file / command line): a per-role or
        # per-database setting, which our session would also see, leaves other sessions writable
        in_recovery, read_only, flush_lsn = _one(conn, """
            SELECT pg_is_in_recovery(),
                   (SELECT setting = 'on' AND source IN ('configuration file', 'command line')
                      FROM pg_settings WHERE name = 'default_transaction_read_only'),
                   CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_flush_lsn()::text END""")
    finally:
        conn.close()
    probe.update(status=old_primary_state(in_recovery, bool(read_only)), flush_lsn=flush_lsn)
    return probe


def _fmt(target):
    return "%s:%s" % (target["host"], target["port"]) if target else None


def fence_stop(p, deadline, actions):
    """Stop the old primary (local) with pg_ctl -m fast: clients are disconnected, and the
    walsenders ship the WAL up to the shutdown checkpoint to connected standbys before the
    server exits, so nothing committed is left behind on it."""
    res = pgctl.ensure(p["old_primary_data_dir"], state="stopped",
                       os_user=p.get("old_primary_os_user") or "postgres", bin_dir=p.get("old_primary_bin_dir"),
                       stop_mode="fast", timeout=max(1, int(deadline - time.monotonic())),
                       cluster=p.get("old_primary_cluster"))
    done = "stopped" if res["changed"] else "already stopped"
    actions.append("fence: pg_ctl stop -m fast -D %s (%s)" % (p["old_primary_data_dir"], done))
    control = res.get("control") or {}
    out = {"mode": "stop", "changed": res["changed"], "pg_ctl": res.get("commands", []),
           "cluster_state": control.get("cluster_state")}
    if control.get("cluster_state") == "shut down":
        out["checkpoint_lsn"] = control.get("checkpoint_lsn")  # the standby waits for it (wait_replay_lsn)
    return out


# What the standby holds of its upstream's WAL: streamed (receive) or already replayed. A standby
# that restarted replays what its pg_wal holds, while its WAL receiver reports only the segment
# start it streams from until new WAL arrives - and a primary fenced read-only may write none.
HELD_LSN_SQL = "SELECT GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text"


def wait_replayed(conn, target_lsn, deadline):
    """Poll the standby until it has replayed past ``target_lsn`` (the stopped old primary's shutdown
    checkpoint: replay ends past the record's start once that record is replayed)."""
    target = lsn_to_int(target_lsn)

    def replayed():
        got = _one(conn, "SELECT pg_last_wal_replay_lsn()::text")[0]
        return got is not None and lsn_to_int(got) > target
    return wait_until(replayed, max(0.0, deadline - time.monotonic()), interval=0.02, max_interval=0.2)


def _writable(conn):
    """Out of recovery and able to take a transaction id, in a transaction rolled back."""
    try:
        if _one(conn, "SELECT pg_is_in_recovery()")[0]:
            return False
        conn.autocommit = False
        try:
            _one(conn, "SELECT txid_current()")
        finally:
            conn.rollback()
            conn.autocommit = True
        return True
    except Exception as exc:  # pylint: disable=broad-except
        if "recovery" in str(exc).lower():
            return False
        raise


# ---------------------------------------------------------------- the module's entry point

def ensure(p, check_mode=False, warn=None):
    """Promote the standby ``p`` connects to (see the module documentation); a plain dict back.

    ``warn`` receives warning sentences (the module passes ``module.warn``); without it they are
    collected in the result's ``warnings`` list.
    """
    timer = Timer()
    validate(p)
    result = {"changed": False, "promoted": False, "forced": bool(p.get("force")), "overridden": [],
              "actions": [], "guards": {}, "fence": {"mode": p.get("fence_old_primary") or "none", "changed": False},
              "time_to_writable_s": None, "promote_lsn": None}
    if warn is None:
        def warn(text):
            result.setdefault("warnings", []).append(text)
    conn = postgres.connect(p)
    try:
        return _run(p, conn, check_mode, timer, result, warn)
    except FediflowError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("psycopg2"):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FediflowError("PostgreSQL error during pg_promote: %s" % first, result=_partial(result, timer))
    finally:
        conn.close()


def _run(p, conn, check_mode, timer, result, warn):
    deadline = time.monotonic() + float(p["timeout"])
    with timer.phase("inspect"):
        before = standby_facts(conn)
    result.update(timeline_before=before.get("timeline"), in_recovery=before["in_recovery"],
                  timeline=before.get("timeline"))
    diff_before = {"in_recovery": before["in_recovery"], "timeline": before.get("timeline")}
    if not before["in_recovery"]:
        result.update(msg="already promoted: not in recovery (timeline %s)" % before.get("timeline"),
                      diff={"before": diff_before, "after": dict(diff_before)},
                      default_transaction_read_only=before.get("default_transaction_read_only"),
                      duration_s=timer.elapsed())
        return result

    if p.get("lag_check_only"):
        lag = assess_lag(before.get("receive_lsn"), before.get("replay_lsn"), before.get("replay_age_s"))
        guard = lag_guard(lag, p.get("max_lag_bytes"), p.get("max_lag_seconds"))
        result.update(lag=lag, guards={"lag": guard})
        if not guard["ok"] and not p.get("force"):
            raise FediflowError("refusing to promote: %s (raise the bound or force=true)" % guard["detail"],
                                result=_partial(result, timer))
        result.update(msg="lag guard only: %s" % guard["status"], duration_s=timer.elapsed())
        return result
    _check_guards(p, conn, before, check_mode, deadline, timer, result, warn)
    overridden = result["overridden"]
    if check_mode:
        result["actions"].append("would run SELECT pg_promote(wait => false) and wait until writable")
        result.update(changed=True, promoted=True, msg=_why(result["guards"], overridden, "would promote"),
                      diff={"before": diff_before,
                            "after": {"in_recovery": False, "timeline": (before.get("timeline") or 0) + 1}},
                      duration_s=timer.elapsed())
        return result

    with timer.phase("promote"):
        _promote(p, conn, deadline, timer, result)
    after = standby_facts(conn)
    if not after["in_recovery"]:
        # static after recovery: the last record replayed, where the new timeline branches off
        result["promote_lsn"] = _one(conn, "SELECT pg_last_wal_replay_lsn()::text")[0]
    result.update(in_recovery=after["in_recovery"], timeline=after.get("timeline"),
                  default_transaction_read_only=after.get("default_transaction_read_only"),
                  msg=_why(result["guards"], overridden, "promoted"),
                  diff={"before": diff_before,
                        "after": {"in_recovery": after["in_recovery"], "timeline": after.get("timeline")}})
    if after.get("default_transaction_read_only"):
        warn(
            "the promoted node has default_transaction_read_only = on: applications will not be able to write")
    result.update(duration_s=timer.elapsed(), phases=timer.phases)
    return result


def _check_guards(p, conn, before, check_mode, deadline, timer, result, warn):  # pylint: disable=too-many-arguments
    """Lag guard, old-primary probe (+ fence), split-brain guard; raises when one blocks."""
    fence = result["fence"]["mode"]
    lag = assess_lag(before.get("receive_lsn"), before.get("replay_lsn"), before.get("replay_age_s"))
    lag.update(receive_lsn=before.get("receive_lsn"), replay_lsn=before.get("replay_lsn"),
               replay_paused=before.get("replay_paused"), unreceived_bytes=None)
    result.update(lag=lag, wal_receiver=before.get("wal_receiver"))
    guards = result["guards"]
    guards["lag"] = lag_guard(lag, p.get("max_lag_bytes"), p.get("max_lag_seconds"))
    if not guards["lag"]["ok"] and not p.get("force"):
        # before any fencing: a refused promotion never leaves the old primary stopped
        raise FediflowError("refusing to promote: %s (raise the bound or force=true)" % guards["lag"]["detail"],
                            result=_partial(result, timer))

    target = upstream_target(p, before.get("wal_receiver"), before.get("primary_conninfo"))
    connect_timeout = int(p.get("connect_timeout") or 10)
    with timer.phase("old_primary"):
        probe = probe_old_primary(p, target, connect_timeout)
    needs_fence = fence == "stop" and probe.get("pg_ctl_state") == "running" and probe["status"] != "in_recovery"
    would_fence = None
    if needs_fence and check_mode:
        would_fence = fence
        result["actions"].append("would fence the old primary (fence_old_primary=%s)" % fence)
        result["fence"].update(changed=True, predicted=True)
    elif needs_fence:
        with timer.phase("fence"):
            result["fence"] = fence_stop(p, deadline, result["actions"])
        probe = probe_old_primary(p, target, connect_timeout)
    if probe.get("flush_lsn"):
        received = _one(conn, HELD_LSN_SQL)[0]
        if received:
            lag["unreceived_bytes"] = max(0, lsn_to_int(probe["flush_lsn"]) - lsn_to_int(received))
    guards["split_brain"] = split_brain_guard(probe, would_fence, fenced_by=p.get("old_primary_fenced_by"),
                                              confirmed_down=bool(p.get("old_primary_confirmed_down")))
    wait_lsn = p.get("wait_replay_lsn") or result["fence"].get("checkpoint_lsn")
    if wait_lsn and not check_mode and guards["split_brain"]["ok"]:
        # planned switchover: the old primary was stopped cleanly, its walsenders sent the standby
        # everything up to the shutdown checkpoint; promote only once that is replayed
        with timer.phase("catch_up"):
            caught, waited = wait_replayed(conn, wait_lsn, deadline)
        replayed = _one(conn, "SELECT pg_last_wal_replay_lsn()::text")[0]
        guards["catch_up"] = {
            "ok": bool(caught), "wait_replay_lsn": wait_lsn, "replay_lsn": replayed, "waited_s": waited,
            "status": "replayed" if caught else "behind",
            "detail": ("the standby replayed the old primary's WAL past %s (its last checkpoint): nothing it "
                       "acknowledged is left behind" % wait_lsn) if caught else
                      ("the standby replayed only up to %s, not past the old primary's last checkpoint %s within "
                       "timeout: promoting would lose what it acknowledged after that. Let the standby fetch the "
                       "missing WAL (its restore_command, or start the old primary again so that it streams it), or "
                       "force=true" % (replayed, wait_lsn))}
    elif wait_lsn:
        guards["catch_up"] = {"ok": True, "wait_replay_lsn": wait_lsn, "status": "not_checked",
                              "detail": "would wait until the standby replayed past %s" % wait_lsn}
    receiver = before.get("wal_receiver") or {}
    if probe["status"] in CANNOT_REACH and receiver.get("status") == "streaming":
        warn(
            "the old primary did not answer here, but the standby's WAL receiver still reported 'streaming' "
            "from %s:%s (last message %ss ago): if the old primary is only unreachable from this host, it may "
            "still take writes" % (receiver.get("sender_host"), receiver.get("sender_port"),
                                   receiver.get("last_msg_age_s")))
    blocking, result["overridden"] = blockers(guards, p.get("force"))
    if blocking:
        raise FediflowError("refusing to promote: %s" % "; ".join(guards[g]["detail"] for g in blocking),
                            result=_partial(result, timer))


def _promote(p, conn, deadline, timer, result):
    """pg_promote(wait => false), then poll (10 ms growing to 100 ms, finer than pg_promote's
    own 100 ms wait loop) until the node takes a transaction id, all within ``timeout``."""
    row = _one(conn, "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, "
                     "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8")
    result["lag"].update(assess_lag(*row), receive_lsn=row[0], replay_lsn=row[1])  # lag at promotion
    t_promote = time.monotonic()
    _one(conn, "SELECT pg_promote(wait => false)")
    result["actions"].append("SELECT pg_promote(wait => false)")
    result.update(changed=True, promoted=True)
    if not p.get("wait_writable", True):
        return
    writable = wait_until(lambda: _writable(conn), max(0.0, deadline - time.monotonic()),
                          interval=0.01, max_interval=0.1)[0]
    if not writable:
        raise FediflowError(
            "promotion requested, but the node was not writable within timeout=%ss; PostgreSQL continues "
            "the promotion in the background - check pg_is_in_recovery()" % p["timeout"],
            result=_partial(result, timer))
    result["time_to_writable_s"] = round(time.monotonic() - t_promote, 3)


def _why(guards, overridden, verb):
    text = "%s: %s" % (verb, "; ".join("%s %s" % (name, g.get("status")) for name, g in sorted(guards.items())))
    if overridden:
        text += " (force=true overrode: %s)" % ", ".join(overridden)
    return text


def _partial(result, timer):
    out = dict(result)
    out.pop("msg", None)
    out["duration_s"] = timer.elapsed()
    return out
