# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The split-brain watcher: writers in every region and the verdict on what they were told.

A writer (``python -m ansible_collections.fediflow.dr.plugins.module_utils.splitbrain write ...``) runs
where a region's own application runs and tries a write on its region's PostgreSQL every ``--period``
seconds (a short connect and statement timeout), printing one JSON line per attempt: acknowledged
(``t1`` = when the commit returned) or refused (``error``). Bounded by ``--max-s`` and a stop file.
The password comes from libpq's password file (PGPASSFILE), never the command line or the environment.

The verdict (``summarize``, pure on plain records):

- **writers at once**: an acknowledgement of one region between two acknowledgements of another region
  less than ``window`` seconds apart - that region stayed writable across the instant the other took a
  write. A clean hand-over (failover, failback) has none;
- **lost**: acknowledged writes not on the final primary. After a planned switchover there must be none;
  after an unplanned failover only a tail of the old primary's acknowledgements (the asynchronous
  replication window: never a hole in the middle) may be missing - counted and reported.

Used by the drill's ``partition`` scenario (roles/dr_drill) and by the integration tests' watcher.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TABLE_SQL = ("CREATE TABLE IF NOT EXISTS dr_watch (id bigserial PRIMARY KEY, region text NOT NULL, "
             "seq int NOT NULL, at timestamptz NOT NULL, UNIQUE (region, seq))")


def two_writers(acks, window):
    """Violations of "one writer at a time": (x1, y, x2) with x1, x2 acknowledged by one region at most
    ``window`` s apart and y by another region between them."""
    by_time = sorted(acks, key=lambda a: a["t1"])
    out, last = [], {}
    for i, ack in enumerate(by_time):
        prev = last.get(ack["region"])
        if prev is not None and ack["t1"] - by_time[prev]["t1"] <= window:
            other = [b for b in by_time[prev + 1:i] if b["region"] != ack["region"]]
            if other:
                out.append((by_time[prev], other[0], ack))
        last[ack["region"]] = i
    return out


def missing(acks, present):
    """Acknowledged writes not in ``present`` (a set of (region, seq))."""
    return [a for a in acks if (a["region"], a["seq"]) not in present]


def lost_tail(acks, lost, region, until):
    """True when the ``lost`` acknowledgements are all ``region``'s and form the tail of what it acknowledged
    before ``until`` (the failover's end): every one of its acknowledgements between the first lost one and
    ``until`` is lost too - a window at the end, never a hole in the middle."""
    if not lost:
        return True
    if any(a["region"] != region for a in lost):
        return False
    gone = {(a["region"], a["seq"]) for a in lost}
    first = min(a["t1"] for a in lost)
    return all((a["region"], a["seq"]) in gone for a in acks if a["region"] == region and first <= a["t1"] < until)


def read_records(paths):
    """The JSON lines of the writers' output files (a line being written is skipped)."""
    out = []
    for path in paths:
        try:
            with open(path, "r", encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("region"), str) and isinstance(record.get("seq"), int):
                out.append(record)
    return out


def summarize(records, present, window=1.0, lost_region=None, lost_until=None):
    """The verdict on the writers' records and the final primary's rows (see the module docstring)."""
    acks = [r for r in records if isinstance(r.get("t1"), (int, float))]
    lost = missing(acks, present)
    regions = sorted({a["region"] for a in acks})
    violations = two_writers(acks, window)
    return {
        "acked": {r: len([a for a in acks if a["region"] == r]) for r in regions},
        "refused": len([r for r in records if "error" in r]),
        "writers_at_once": len(violations), "two_writers": violations[:10],
        "lost": len(lost), "missing": lost[:50],
        "lost_is_tail": lost_tail(acks, lost, lost_region, lost_until if lost_until is not None else float("inf"))
        if lost_region else not lost,
        "window_s": window,
    }


# ---------------------------------------------------------------- the writer and the command line

def _connect(args):
    import psycopg2  # pylint: disable=import-outside-toplevel
    tls = {"sslmode": args.sslmode or "prefer"}
    if args.sslrootcert:
        tls["sslrootcert"] = args.sslrootcert
    conn = psycopg2.connect(host=args.host, port=int(args.port), user=args.user, dbname=args.db, connect_timeout=1,
                            application_name="fediflow.dr split-brain watcher",
                            options="-c statement_timeout=1000", **tls)
    conn.autocommit = True
    return conn


def write(args, out=sys.stdout):
    import psycopg2  # pylint: disable=import-outside-toplevel
    end = time.monotonic() + args.max_s
    conn, seq = None, 0
    while time.monotonic() < end and not os.path.exists(args.stop_file):
        seq += 1
        started = time.time()
        try:
            if conn is None or conn.closed:
                conn = _connect(args)
            with conn.cursor() as cur:
                cur.execute("INSERT INTO dr_watch (region, seq, at) VALUES (%s, %s, now())", (args.region, seq))
            out.write(json.dumps({"region": args.region, "seq": seq, "t0": started, "t1": time.time()}) + "\n")
        except psycopg2.Error as exc:
            if conn is not None:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
            conn = None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            out.write(json.dumps({"region": args.region, "seq": seq, "error": first[:200], "t0": started}) + "\n")
        out.flush()
        time.sleep(max(0.0, args.period - (time.time() - started)))


def prepare(args):
    """The watcher's table on the primary, emptied."""
    conn = _connect(args)
    try:
        with conn.cursor() as cur:
            cur.execute(TABLE_SQL)
            cur.execute("TRUNCATE dr_watch")
    finally:
        conn.close()


def verdict(args, out=sys.stdout):
    """summarize() of the records files against the final primary's dr_watch, as JSON."""
    conn = _connect(args)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT region, seq FROM dr_watch")
            present = set(cur.fetchall())
    finally:
        conn.close()
    result = summarize(read_records(args.records), present, args.window, args.lost_region or None,
                       args.lost_until if args.lost_until else None)
    out.write(json.dumps(result) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="fediflow.dr split-brain watcher")
    parser.add_argument("action", choices=["write", "prepare", "summarize"])
    for name in ("host", "port", "region", "stop-file", "sslmode", "sslrootcert", "lost-region", "out"):
        parser.add_argument("--" + name, default="")
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--db", default="postgres")
    parser.add_argument("--period", type=float, default=0.1)
    parser.add_argument("--max-s", type=float, default=900)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--lost-until", type=float, default=0.0)
    parser.add_argument("--records", nargs="*", default=[])
    args = parser.parse_args(argv)
    # sslmode / sslrootcert default to libpq's PGSSLMODE / PGSSLROOTCERT
    args.sslmode = args.sslmode or os.environ.get("PGSSLMODE", "")
    args.sslrootcert = args.sslrootcert or os.environ.get("PGSSLROOTCERT", "")
    if args.action == "write" and args.out:
        # the writer's records are results of the drill: private (0600), whatever the caller's umask
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            write(args, out)
        return 0
    {"write": write, "prepare": prepare, "summarize": verdict}[args.action](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
