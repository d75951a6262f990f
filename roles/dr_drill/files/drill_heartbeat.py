"""DR drill heartbeat writer: commit a row to the primary every PERIOD seconds and record each
acknowledged row (id, commit time) in STATE (JSON, replaced atomically), until the primary
stops answering or MAX_S pass. What the drill then finds in the surviving region, compared with
the last acknowledged row, is the data a failover really lost (RPO). With --stop-file the writer
also ends (exit 0) when that file appears: the pitr scenario stops it once the restore is done.

    drill_heartbeat.py --host H --port P --db DB --user U --state FILE [--period 0.1] [--max-s 300] [--stop-file F]

The password comes from libpq's password file (PGPASSFILE; never argv). Table: dr_heartbeat (id bigserial, at timestamptz).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import psycopg2


def save(path, data):
    fd, tmp = tempfile.mkstemp(prefix=".hb-", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    for name in ("host", "db", "user", "state"):
        ap.add_argument("--" + name, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--period", type=float, default=0.1)
    ap.add_argument("--max-s", type=float, default=300)
    ap.add_argument("--stop-file", default="")
    args = ap.parse_args()
    # A lost region answers nothing, not even a reset: without tcp_user_timeout a commit sent into it would wait
    # for TCP's own retries (minutes). 3 s unacknowledged by the peer's kernel = the primary is gone.
    conn = psycopg2.connect(host=args.host, port=args.port, dbname=args.db, user=args.user, connect_timeout=5,
                            tcp_user_timeout=3000, keepalives=1, keepalives_idle=1, keepalives_interval=1,
                            keepalives_count=3)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS dr_heartbeat (id bigserial PRIMARY KEY, "
                    "at timestamptz NOT NULL DEFAULT clock_timestamp())")
    state = {"started": time.time(), "acked": 0, "last_id": None, "last_at": None, "error": None}
    end = time.monotonic() + args.max_s
    while time.monotonic() < end:
        tick = time.monotonic()
        if args.stop_file and os.path.exists(args.stop_file):
            state["stopped"] = True
            save(args.state, state)
            return 0
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO dr_heartbeat DEFAULT VALUES RETURNING id, extract(epoch FROM at)::float8")
                state["last_id"], state["last_at"] = cur.fetchone()
                state["acked"] += 1
        except psycopg2.Error as exc:  # the primary is gone: that is what the drill waits for
            state["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            save(args.state, state)
            return 0
        save(args.state, state)
        time.sleep(max(0.0, args.period - (time.monotonic() - tick)))  # the heartbeat period
    state["error"] = "max-s reached: the primary never went away"
    save(args.state, state)
    return 1


if __name__ == "__main__":
    sys.exit(main())
