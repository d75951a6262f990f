"""The split-brain watcher: while a failover, failback, partition or drill runs, a writer in every region's
namespace (fediflow.dr module_utils/splitbrain.py, as that region's application) tries a write on its region's
PostgreSQL several times a second, and records every acknowledged one.

Two rules, checked afterwards:
- never two writers at once: an acknowledgement from one region between two acknowledgements of another
  region less than ``window`` seconds apart (that region stayed writable across the instant the other took
  a write) is a violation;
- nothing acknowledged is missing from the final primary, except, after an unplanned failover, a contiguous
  tail of the old primary's acknowledgements that never reached the standby (asynchronous replication: the
  data-loss window, counted and reported, never a hole in the middle).
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab_fixtures import COLLECTIONS, lab_netns, pg_connect, pg_tls

sys.path.insert(0, str(COLLECTIONS))  # the collection as built (scripts/setup.sh): its module_utils hold the rules
from ansible_collections.fediflow.dr.plugins.module_utils.splitbrain import (  # noqa: E402 pylint: disable=wrong-import-position
    TABLE_SQL, read_records, summarize, two_writers)

WRITER = "ansible_collections.fediflow.dr.plugins.module_utils.splitbrain"


def ensure_table(primary, db="postgres"):
    with pg_connect(primary, db) as conn, conn.cursor() as cur:
        cur.execute(TABLE_SQL)
        cur.execute("TRUNCATE dr_watch")


class Watcher:
    def __init__(self, hosts, period=0.1, window=1.0, max_s=900, db="postgres"):
        # db: the drill's own partition watcher owns dr_watch in postgres; a watcher around the drill writes elsewhere
        self.hosts, self.period, self.window, self.max_s, self.db = hosts, period, window, max_s, db
        self.dir = Path(tempfile.mkdtemp(prefix="fediflow-watch-"))
        os.chmod(self.dir, 0o755)
        self.stop_file = self.dir / "stop"
        self.procs = []

    def start(self):
        ensure_table(self.hosts[0], self.db)
        for hv in self.hosts:
            out = open(self.dir / ("%s.jsonl" % hv["fediflow_region"]), "w", encoding="utf-8")  # pylint: disable=consider-using-with
            tls = pg_tls(hv)
            argv = ["ip", "netns", "exec", lab_netns(hv), sys.executable, "-m", WRITER, "write",
                    "--host", hv["fediflow_pg_host"], "--port", str(hv["fediflow_pg_port"]),
                    "--user", hv["fediflow_pg_superuser"], "--db", self.db, "--region", hv["fediflow_region"],
                    "--stop-file", str(self.stop_file), "--period", str(self.period), "--max-s", str(self.max_s),
                    "--sslmode", tls["sslmode"], "--sslrootcert", tls.get("sslrootcert", "")]
            env = dict(os.environ, PGPASSWORD=hv["fediflow_pg_superuser_password"], PYTHONPATH=str(COLLECTIONS))
            self.procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env), out))  # pylint: disable=consider-using-with
        return self

    def records(self):
        return read_records(sorted(self.dir.glob("*.jsonl")))

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
        with pg_connect(final_primary, self.db) as conn, conn.cursor() as cur:
            cur.execute("SELECT region, seq FROM dr_watch")
            present = set(cur.fetchall())
        out = summarize(self.records(), present, self.window, lost_region, lost_until)
        out["checked_at"] = time.time()
        return out

    def writers_at_once(self):
        """Stop the writers; the two-writer violations alone (where acknowledged writes may rightly be missing
        afterwards: a drill restores a point in time)."""
        self.stop()
        return two_writers(self.acks(), self.window)
