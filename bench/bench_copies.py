"""What the second region's copy costs (issue "Survive the loss of a whole region", shared/BENCH.md).

Same run, same database, same tree, each row beside the one it is compared with:
  1. physical backup (the backup role's defaults: zstd, verify=list) with no repository, with the
     host's own region's bucket, and with both regions' buckets (fediflow_backup_repositories): the
     whole module call and its ``upload`` phase;
  2. logical backup (pg_dump, verify=list) the same three ways;
  3. the unchanged-tree media snapshot (what the 5-minute schedule runs 288 times a day) into one
     region vs both (the second repository costs a HEAD when it already holds the snapshot).
Each region's bucket is the lab's own S3 in that region's namespace (moto; scratch prefixes, removed at
the end). The database is bench_backup.py's pgbench cluster (BENCH_SCALE, default 70 = 1.1 GB); the
tree is bench_s3_snapshot.py's (BENCH_SCALE 1 = 10,000 files, 1.04 GB). Not a test: it prints.
"""
import json
import os
import subprocess
import sys
import time

import boto3

from _common import BIN, PGBIN, ROOT, ansible_env, as_pg, lab_hostvars, s3_endpoint
from bench_backup import PASSWORD, PGDATA, cluster, fresh
from bench_s3_snapshot import PRISTINE, generate

PREFIX = "bench-copies"
RUNS = int(os.environ.get("BENCH_RUNS", "2"))


def repositories(primary, standby):
    return [{"name": hv["fediflow_region"], "bucket": hv["fediflow_backup_bucket"], "region": hv["fediflow_region"],
             "endpoint_url": s3_endpoint(hv)} for hv in (primary, standby)]


def call(module, args):
    """One ad hoc ``ansible`` call, as a user runs it: (result, wall seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible"), "localhost", "-c", "local", "-i", "localhost,", "-m",
                           "fediflow.dr." + module, "-a", json.dumps(args),
                           "-e", "ansible_python_interpreter=%s" % sys.executable],
                          cwd=str(ROOT), env=ansible_env(json_callback=True), capture_output=True, text=True,
                          check=False)
    wall = time.monotonic() - t0
    res = next(iter(json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"].values()))
    if res.get("failed"):
        sys.exit("%s failed: %s" % (module, res.get("msg")))
    return res, wall


def backup(port, mode, repos, aws):
    args = dict(aws, mode=mode, verify="list", login_host="127.0.0.1", login_port=port, login_password=PASSWORD,
                db="bench", dest=str(fresh("copies-%s-%d" % (mode, len(repos)))),
                compression="zstd" if mode == "physical" else "gzip", s3_prefix="%s/%s" % (PREFIX, mode))
    if repos:
        args["repositories"] = repos
    res, wall = call("pg_backup_verify", args)
    return {"wall": wall, "module": res["duration_s"], "upload": (res.get("phases") or {}).get("upload", 0.0),
            "bytes": res["size_bytes"], "copies": res.get("copies_ok", 0)}


def snapshot(repos, aws, src):
    res, wall = call("s3_snapshot", dict(aws, src=str(src), repositories=repos, s3_prefix=PREFIX + "/media",
                                         parallel=10))
    return {"wall": wall, "module": res["duration_s"], "copies": res.get("copies_ok")}


def best(rows):
    return min(rows, key=lambda r: r["wall"])


def clean(primary, standby):
    for hv in (primary, standby):
        s3 = boto3.client("s3", endpoint_url=s3_endpoint(hv), region_name=hv["fediflow_region"],
                          aws_access_key_id=hv["fediflow_aws_access_key"],
                          aws_secret_access_key=hv["fediflow_aws_secret_key"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=hv["fediflow_backup_bucket"],
                                                                 Prefix=PREFIX + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=hv["fediflow_backup_bucket"], Delete={"Objects": keys})


def main():
    primary, standby = lab_hostvars()
    aws = {"access_key": primary["fediflow_aws_access_key"], "secret_key": primary["fediflow_aws_secret_key"]}
    both = repositories(primary, standby)
    port = cluster()
    generate()
    try:
        print("\nrepositories: %s; best of %d runs each; wall = the whole `ansible` call\n"
              % (", ".join("%s (%s)" % (r["name"], r["endpoint_url"]) for r in both), RUNS))
        head = "%-34s %10s %10s %10s %12s %14s"
        print(head % ("measure", "local s", "1 region s", "2 regions s", "2 vs 1", "upload 1 -> 2"))
        for mode in ("physical", "logical"):
            got = {n: best([backup(port, mode, both[:n], aws) for _i in range(RUNS)]) for n in (0, 1, 2)}
            print(head % ("%s backup (%.0f MB)" % (mode, got[2]["bytes"] / 1e6), "%.2f" % got[0]["wall"],
                          "%.2f" % got[1]["wall"], "%.2f" % got[2]["wall"],
                          "%.2fx" % (got[2]["wall"] / got[1]["wall"]),
                          "%.2f -> %.2f s" % (got[1]["upload"], got[2]["upload"])))
        src = PRISTINE
        first1 = snapshot(both[:1], aws, src)   # the first snapshot, then only the unchanged tree is timed
        one = best([snapshot(both[:1], aws, src) for _i in range(RUNS)])
        clean(primary, standby)
        snapshot(both, aws, src)
        two = best([snapshot(both, aws, src) for _i in range(RUNS)])
        print(head % ("unchanged tree snapshot (module s)", "-", "%.3f" % one["module"], "%.3f" % two["module"],
                      "%.2fx" % (two["module"] / one["module"]), "-"))
        print(head % ("unchanged tree snapshot (wall s)", "-", "%.2f" % one["wall"], "%.2f" % two["wall"],
                      "%.2fx" % (two["wall"] / one["wall"]), "-"))
        per_day = (288 * one["module"], 288 * two["module"], first1["wall"])
        print("\nper day at the 5-minute media schedule (288 runs): %.0f s one region, %.0f s both (module time); "
              "first snapshot of the tree into one region %.1f s" % per_day)
    finally:
        clean(primary, standby)
        as_pg([PGBIN / "pg_ctl", "stop", "-D", PGDATA, "-m", "fast", "-w"], stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
