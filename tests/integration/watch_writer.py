"""One region's writer for the split-brain watcher (watcher_fixtures.py): run inside the region's network
namespace, as the region's own application would, it tries a write on its region's PostgreSQL every
``--period`` seconds and prints one JSON line per acknowledged write. Bounded by ``--max-s`` and by the
stop file. The password comes from PGPASSWORD (never the command line)."""
import argparse
import json
import os
import sys
import time

import psycopg2


def main():
    parser = argparse.ArgumentParser()
    for name in ("host", "port", "region", "stop-file", "sslmode", "sslrootcert"):
        parser.add_argument("--" + name, default="")
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--period", type=float, default=0.1)
    parser.add_argument("--max-s", type=float, default=900)
    args = parser.parse_args()
    end = time.monotonic() + args.max_s
    conn, seq = None, 0
    tls = {"sslmode": args.sslmode or "prefer"}
    if args.sslrootcert:
        tls["sslrootcert"] = args.sslrootcert
    while time.monotonic() < end and not os.path.exists(args.stop_file):
        seq += 1
        started = time.time()
        try:
            if conn is None or conn.closed:
                conn = psycopg2.connect(host=args.host, port=int(args.port), user=args.user, dbname="postgres",
                                        connect_timeout=1, application_name="split-brain-watcher",
                                        options="-c statement_timeout=1000", **tls)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("INSERT INTO dr_watch (region, seq, at) VALUES (%s, %s, now())", (args.region, seq))
            print(json.dumps({"region": args.region, "seq": seq, "t0": started, "t1": time.time()}), flush=True)
        except psycopg2.Error as exc:
            if conn is not None:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
            conn = None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(json.dumps({"region": args.region, "seq": seq, "error": first[:200], "t0": started}), flush=True)
        time.sleep(max(0.0, args.period - (time.time() - started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
