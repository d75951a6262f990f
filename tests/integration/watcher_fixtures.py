"""The split-brain watcher: while a failover, failback, partition or drill runs, a writer in every region's
namespace (tests/integration/watch_writer.py, as that region's application) tries a write on its region's
PostgreSQL several times a second, and records every acknowledged one.

Two rules, checked afterwards:
- never two writers at once: an acknowledgement from one region between two acknowledgements of another
  region less than ``window`` seconds apart (that region stayed writable across the instant the other took
  a write) is a violation;
- nothing acknowledged is missing from the final primary, except, after an unplanned failover, a contiguous
  tail of the old primary's acknowledgements that never reached the standby (asynchronous replication: the
  data-loss window, counted and reported, never a hole in the middle).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab_fixtures import lab_netns, pg_connect, pg_tls

WRITER = Path(__file__).resolve().parent / "watch_writer.py"


def ensure_table(primary):
    with pg_connect(primary) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS dr_watch (id bigserial PRIMARY KEY, region text NOT NULL, "
                    "seq int NOT NULL, at timestamptz NOT NULL, UNIQUE (region, seq))")
        cur.execute("TRUNCATE dr_watch")


def two_writers(acks, window):
    """Violations of "one writer at a time": (x1, y, x2) with x1, x2 acknowledged by one region less than
    ``window`` s apart and y by another region between them."""
    by_time = sorted(acks, key=lambda a: a["t1"])
    out = []
    last = {}
    for i, ack in enumerate(by_time):
        prev = last.get(ack["region"])
        if prev is not None and ack["t1"] - by_time[prev]["t1"] <= window:
            between = by_time[prev + 1:i]
            other = [b for b in between if b["region"] != ack["region"]]
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


class Watcher:
    def __init__(self, hosts, period=0.1, window=1.0, max_s=900):
        self.hosts, self.period, self.window, self.max_s = hosts, period, window, max_s
        self.dir = Path(tempfile.mkdtemp(prefix="fediflow-watch-"))
        os.chmod(self.dir, 0o755)
        self.stop_file = self.dir / "stop"
        self.procs = []

    def start(self):
        ensure_table(self.hosts[0])
        for hv in self.hosts:
            out = open(self.dir / ("%s.jsonl" % hv["fediflow_region"]), "w", encoding="utf-8")  # pylint: disable=consider-using-with
            tls = pg_tls(hv)
            argv = ["ip", "netns", "exec", lab_netns(hv), sys.executable, str(WRITER),
                    "--host", hv["fediflow_pg_host"], "--port", str(hv["fediflow_pg_port"]),
                    "--user", hv["fediflow_pg_superuser"], "--region", hv["fediflow_region"],
                    "--stop-file", str(self.stop_file), "--period", str(self.period), "--max-s", str(self.max_s),
                    "--sslmode", tls["sslmode"], "--sslrootcert", tls.get("sslrootcert", "")]
            env = dict(os.environ, PGPASSWORD=hv["fediflow_pg_superuser_password"])
            self.procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env), out))  # pylint: disable=consider-using-with
        return self

    def records(self):
        out = []
        for path in self.dir.glob("*.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line being written
        return out

    def acks(self, region=None, after=None):
        return [r for r in self.records() if "t1" in r and (region is None or r["region"] == region)
                and (after is None or r["t1"] > after)]

    def stop(self):
        self.stop_file.touch()
        for proc, out in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            out.close()
        self.procs = []

    def check(self, final_primary, lost_region=None, lost_until=None):
        """Stop the writers; the summary: acknowledged writes per region, two-writer violations, missing
        acknowledged writes (those allowed: the lost tail of ``lost_region``, the old primary after an
        unplanned failover)."""
        self.stop()
        acks = self.acks()
        with pg_connect(final_primary) as conn, conn.cursor() as cur:
            cur.execute("SELECT region, seq FROM dr_watch")
            present = set(cur.fetchall())
        lost = missing(acks, present)
        regions = sorted({a["region"] for a in acks})
        return {"acked": {r: len([a for a in acks if a["region"] == r]) for r in regions},
                "two_writers": two_writers(acks, self.window), "missing": lost,
                "lost_is_tail": lost_tail(acks, lost, lost_region, lost_until) if lost_region else not lost,
                "window_s": self.window, "checked_at": time.time()}
