"""The WAL archive's size and growth per day at the lab's settings, before and after expiry.

Measured on the lab (the us-east-1 primary archiving to both regions' buckets): the archive's
``archive_timeout`` and ``wal_segment_size`` read from the server; a light application-like writer (one
small WAL record every few seconds, as a heartbeat does: enough for ``archive_timeout`` to switch a
segment each period) runs for a window; the segments each bucket gained in it give the growth per day.
Then a physical backup is taken into a private ledger and ``fediflow.dr.wal_expire`` runs (weighing that
ledger, the lab hosts' local ledgers and every region's S3 ledger: nothing a lab backup needs goes), and
the archive is listed again with boto3. The table shows, side by side, the archive without expiry (grows
by the measured rate forever) and with it (bounded by the retention window: WAL older than the oldest
retained backup goes, so the net growth once retention is full is zero), and the same model at the
production example's 60 s ``archive_timeout`` (the issue's "about 23 GB a day idle"). No assertion.

Usage: python bench/bench_wal_expire.py [--window SECONDS] [--retention-days N]  (the lab must be up)
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import boto3
import psycopg2

from _common import BIN, ROOT, ansible_env, lab_hostvars, poll

PREFIX = "wal/us-east-1/"
GIB = 1024 ** 3
MIB = 1024 ** 2


def connect(hv, db="postgres"):
    return psycopg2.connect(host=hv["fediflow_pg_host"], port=hv["fediflow_pg_port"], user="postgres", dbname=db,
                            password=hv["fediflow_pg_superuser_password"], connect_timeout=5, sslmode="verify-full",
                            sslrootcert=hv["fediflow_pg_ca_cert"])


def ask(hv, sql, args=None):
    conn = connect(hv)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchone()[0]
    finally:
        conn.close()


def listing(hv):
    """[(name, last_modified epoch, size)] of the WAL archive in this region's bucket."""
    client = boto3.client("s3", endpoint_url=hv["fediflow_s3_endpoint_url"], region_name=hv["fediflow_region"],
                          aws_access_key_id=hv["fediflow_aws_access_key"], aws_secret_access_key=hv["fediflow_aws_secret_key"])
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=hv["fediflow_backup_bucket"], Prefix=PREFIX):
        for obj in page.get("Contents", []):
            out.append((obj["Key"][len(PREFIX):], obj["LastModified"].timestamp(), obj["Size"]))
    return out


def whole(entries):
    return [e for e in entries if len(e[0]) == 24]


def module(name, args, netns=None):
    fd, path = tempfile.mkstemp(prefix="fediflow-bench-args-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
        env = ansible_env()
        env["PYTHONPATH"] = str(ROOT / ".build" / "collections")
        ip = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
        inside = [ip, "netns", "exec", netns] if netns else []
        proc = subprocess.run(inside + [str(BIN / "python"), "-m", "ansible_collections.fediflow.dr.plugins.modules." + name,
                                        path], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    finally:
        os.unlink(path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        sys.exit("%s gave no result: %s" % (name, proc.stderr[-2000:]))
    result = json.loads(lines[-1])
    if result.get("failed"):
        sys.exit("%s failed: %s" % (name, result.get("msg")))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--window", type=float, default=100.0, help="seconds of writing measured (default 100)")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="seconds between writes (default 5)")
    parser.add_argument("--retention-days", type=float, default=30.0,
                        help="the retention window of the model (backup_retention_days, default 30)")
    parser.add_argument("--backup-interval-days", type=float, default=1.0, help="days between physical backups (default 1)")
    args = parser.parse_args()
    primary, standby = lab_hostvars()
    timeout_s = int(ask(primary, "SELECT setting FROM pg_settings WHERE name = 'archive_timeout'"))
    segment = int(ask(primary, "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"))
    regions = (primary, standby)

    print("measuring %.0f s of a heartbeat write every %.0f s (archive_timeout %d s, segment %d MiB, %d repositories)"
          % (args.window, args.heartbeat, timeout_s, segment // MIB, len(regions)), flush=True)
    start = time.time()
    while time.time() - start < args.window:
        ask(primary, "SELECT pg_logical_emit_message(false, 'fediflow-bench-wal-expire', 'heartbeat')::text")
        time.sleep(args.heartbeat)  # the writer's own pace (an application's heartbeat), not a wait for a result
    end = time.time()
    last = ask(primary, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    poll(lambda: ask(primary, "SELECT coalesce(last_archived_wal, '') >= %s FROM pg_stat_archiver", (last,)) or
         time.time() - end > timeout_s + 30, timeout_s + 40, interval=0.5)
    before = {hv["fediflow_region"]: listing(hv) for hv in regions}
    gained = {r: [e for e in whole(entries) if start <= e[1] <= end + 2] for r, entries in before.items()}
    per_day = {r: len(g) * segment * 86400.0 / (end - start) for r, g in gained.items()}

    work = tempfile.mkdtemp(prefix="fediflow-bench-wal-expire-", dir="/var/tmp")
    shutil.chown(work, "postgres")
    try:
        ledger_dir = os.path.join(work, "backups")
        res = module("pg_backup_verify", {
            "mode": "physical", "compression": "zstd", "verify": "list", "dest": ledger_dir, "cluster_name": "bench",
            "login_host": primary["fediflow_pg_host"], "login_port": primary["fediflow_pg_port"],
            "login_password": primary["fediflow_pg_superuser_password"], "ssl_mode": "verify-full",
            "ca_cert": primary["fediflow_pg_ca_cert"]})
        if not res.get("verified"):
            sys.exit("the physical backup did not verify: %s" % res.get("msg"))
        local = [os.path.join(hv["fediflow_backup_dir"], "physical") for hv in regions]
        ledgers = [{"path": ledger_dir}] + [{"path": path} for path in local if os.path.isdir(path)]
        ledgers += [{"s3_prefix": "postgres/%s/physical" % hv["fediflow_region"]} for hv in regions]
        wal_config = os.path.join(os.path.dirname(primary["fediflow_pg_data_dir"]), "fediflow-wal.json")
        netns = "fdl%d-%s" % (int(primary["lab_net_index"]), primary["fediflow_region"])
        expiry = module("wal_expire", {"wal_config": wal_config, "ledgers": ledgers, "keep_days": 0,
                                       "wal_segment_size": segment}, netns=netns)
        # check mode, nothing removed: what goes once retention has pruned every older backup (the bench's
        # backup the oldest retained), the steady state of a full retention window
        steady = module("wal_expire", {"wal_config": wal_config, "ledgers": [{"path": ledger_dir}], "keep_days": 0,
                                       "wal_segment_size": segment, "_ansible_check_mode": True}, netns=netns)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    after = {hv["fediflow_region"]: listing(hv) for hv in regions}

    window_days = args.retention_days + args.backup_interval_days
    rows = []
    for hv in regions:
        region = hv["fediflow_region"]
        b, a = before[region], after[region]
        rate = per_day[region]
        rows.append((region, "archive now (every lab ledger weighed)", "%d seg, %.1f MiB" % (len(whole(b)), sum(e[2] for e in b) / MIB),
                     "%d seg, %.1f MiB" % (len(whole(a)), sum(e[2] for e in a) / MIB)))
        pred = [r for r in steady["repositories"] if r["name"] == region][0]
        rows.append((region, "archive with only the new backup retained", "%d seg, %.1f MiB" % (
            pred["before"]["segments"], pred["before"]["bytes"] / MIB), "%d seg, %.1f MiB (check mode)" % (
            pred["after"]["segments"], pred["after"]["bytes"] / MIB)))
        rows.append((region, "growth per day (measured)", "%.2f GiB/day" % (rate / GIB),
                     "%.2f GiB/day, net 0 once retention is full" % (rate / GIB)))
        for days in (30, 90, 365):
            rows.append((region, "size after %d days" % days, "%.1f GiB" % (rate * days / GIB),
                         "%.1f GiB (bounded: %.0f days of WAL)" % (rate * min(days, window_days) / GIB, min(days, window_days))))
    model = 86400.0 / 60 * segment
    rows.append(("model", "per repository at archive_timeout 60 s", "%.1f GiB/day, %.0f GiB a year" % (model / GIB, model * 365 / GIB),
                 "at most %.0f GiB (%.0f days)" % (model * window_days / GIB, window_days)))
    widths = [max(len(str(r[i])) for r in rows + [("repository", "", "without expiry", "with wal_expire")]) for i in range(4)]
    line = "  ".join("%%-%ds" % w for w in widths)
    print()
    print(line % ("repository", "", "without expiry", "with wal_expire"))
    print(line % tuple("-" * w for w in widths))
    for row in rows:
        print(line % row)
    print()
    print("segments archived in the %.0f s window: %s; wal_expire removed %d files (%.1f MiB) in %.2f s, bound %s (backup %s)"
          % (end - start, ", ".join("%s %d" % (r, len(g)) for r, g in gained.items()), expiry["removed"],
             expiry["removed_bytes"] / MIB, expiry["duration_s"], (expiry.get("bound") or {}).get("segment"),
             (expiry.get("bound") or {}).get("backup_id")))
    print("model: the retention window is %.0f days of backups + %.0f day between backups (--retention-days, "
          "--backup-interval-days); an idle server that writes nothing switches no segment" % (
              args.retention_days, args.backup_interval_days))


if __name__ == "__main__":
    main()
