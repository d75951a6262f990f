"""s3_snapshot against `aws s3 sync` on the lab's moto (see shared BENCH.md).

A deterministic tree (10,000 files, ~1.04 GB, 20 % duplicate contents; BENCH_SCALE=0.1 for
a tenth) is generated once under /var/tmp/fediflow-bench/snapshot-tree-N and copied to a work
tree per run.
Measured in the same run, the anchor first:
  1. first upload: `aws s3 sync` vs the first snapshot (whole `ansible` call and duration_s);
  2. the unchanged tree again;
  3. 10 edits that keep size and mtime (plus 1 % churn): files left stale in S3 by each;
  4. storage after 6 snapshots, each after 1 % churn, vs the runbook's 6 full copies.
  5. the 5-minute media schedule (docs/schedules.md: 288 runs a day): the unchanged-tree run's S3
     requests, counted by kind through a small counting proxy in front of moto, and its seconds, per
     run and per day, with the snapshot in one region and in both (two repositories, as
     fediflow_backup_repositories has it); then the schedule itself as it runs for a user, `ansible-playbook
     playbooks/backup.yml --tags backup_media` against the lab inventory (SSH, the primary probe, the
     lab's media tree), per run and per day. BENCH_CADENCE_ONLY=1 measures the first snapshot and 5. only.
The module runs through `ansible localhost -m fediflow.dr.s3_snapshot` as a user runs it.
awscli (not a project dependency) lives in its own venv, /var/tmp/fediflow-bench-venv.
Everything goes to a scratch bucket that is deleted at the end (moto keeps it in memory).
"""
import collections
import hashlib
import http.client
import http.server
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import boto3

from _common import BIN, INVENTORY, ROOT, ansible_env, lab_hostvars, s3_endpoint

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
FILES = max(50, int(10000 * SCALE))
TARGET_BYTES = int(1.04e9 * SCALE)
BASE = Path("/var/tmp/fediflow-bench")
PRISTINE = BASE / ("snapshot-tree-%d" % FILES)
WORK = BASE / ("snapshot-work-%d" % os.getpid())  # a run's own copy: two runs never share it
AWS_VENV = Path("/var/tmp/fediflow-bench-venv")
BUCKET = "fediflow-bench-snapshot"
PARALLEL = 10  # awscli's default max_concurrent_requests
RUNS_PER_DAY = 288  # the media schedule: every 5 minutes (fediflow_schedules.media_interval_s 300)
# S3 Standard request list prices (us-east-1, USD per 1,000 requests), for the per-day cost line
PRICE_PER_1000 = {"PUT/POST/LIST": 0.005, "GET/HEAD": 0.0004, "DELETE": 0.0}
CADENCE_ONLY = os.environ.get("BENCH_CADENCE_ONLY") == "1"


def lab():
    """moto's endpoint and credentials from the lab inventory (the lab must be up)."""
    hvars, other = lab_hostvars()[:2]
    for host in (hvars, other):
        try:
            urllib.request.urlopen(s3_endpoint(host) + "/moto-api/", timeout=3).close()
        except OSError:
            sys.exit("moto is not answering at %s: run `make lab-up` first" % s3_endpoint(host))
    return {"endpoint_url": s3_endpoint(hvars), "region": hvars["fediflow_region"],
            "other_endpoint_url": s3_endpoint(other), "other_region": other["fediflow_region"],
            "AWS_ACCESS_KEY_ID": hvars["fediflow_aws_access_key"],
            "AWS_SECRET_ACCESS_KEY": hvars["fediflow_aws_secret_key"]}


def repositories(first_url, second_url, conn):
    """Both regions' buckets, the snapshot's own region first (as fediflow_backup_repositories lists them)."""
    return [{"name": conn["region"], "bucket": BUCKET, "region": conn["region"], "endpoint_url": first_url},
            {"name": conn["other_region"], "bucket": BUCKET, "region": conn["other_region"], "endpoint_url": second_url}]


def generate():
    """The pristine tree, made once: lognormal sizes scaled to the target, every 5th file a
    copy of an earlier one (20 % duplicates), fixed mtimes."""
    stamp = PRISTINE / ".complete"
    if stamp.exists():
        return json.loads(stamp.read_text())
    shutil.rmtree(str(PRISTINE), ignore_errors=True)
    rng = random.Random(42)
    sizes = [min(max(int(rng.lognormvariate(11.0, 1.0)), 512), 8 << 20) for _i in range(FILES)]
    factor = TARGET_BYTES / float(sum(sizes))
    sizes = [max(1, int(s * factor)) for s in sizes]
    names = ["d%03d/f%05d.bin" % (i % 100, i) for i in range(FILES)]
    total = 0
    for i, name in enumerate(names):
        source = i - 3 if i % 5 == 4 else i
        data = random.Random(source).randbytes(sizes[source])
        path = PRISTINE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(str(path), (1700000000 + i, 1700000000 + i))
        total += len(data)
    info = {"files": FILES, "bytes": total, "names": names}
    stamp.write_text(json.dumps(info))
    return info


def request_kind(method, path):
    """The S3 request class a bill counts: a GET of the bucket (list-type / prefix query) is a LIST."""
    query = urllib.parse.urlsplit(path).query
    if method == "GET" and ("list-type" in query or urllib.parse.urlsplit(path).path.strip("/").count("/") == 0):
        return "LIST"
    return method


class CountingProxy:
    """A plain HTTP proxy in front of moto that counts the requests passing through, by kind."""

    def __init__(self, upstream):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.counts = collections.Counter()
        self.bytes = collections.Counter()  # bytes sent to S3 (up) and received from it (down)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):
                pass

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                conn.request(self.command, self.path, body=body,
                             headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                proxy.counts[request_kind(self.command, self.path)] += 1
                proxy.bytes["up"] += len(body or b"")
                proxy.bytes["down"] += len(data)
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def per_day_cost(counts):
    """USD per day of RUNS_PER_DAY runs with these request counts, at PRICE_PER_1000."""
    cls = {"PUT": "PUT/POST/LIST", "POST": "PUT/POST/LIST", "LIST": "PUT/POST/LIST", "GET": "GET/HEAD",
           "HEAD": "GET/HEAD", "DELETE": "DELETE"}
    return sum(n * RUNS_PER_DAY * PRICE_PER_1000[cls[k]] / 1000.0 for k, n in counts.items())


def schedule_runs(runs=3):
    """The media schedule as it runs for a user: the playbook with --tags backup_media against the lab."""
    walls, changed = [], []
    for _i in range(runs):
        t0 = time.monotonic()
        proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(INVENTORY), "playbooks/backup.yml",
                               "--tags", "backup_media"], cwd=str(ROOT), env=ansible_env(), capture_output=True,
                              text=True, check=False)
        walls.append(time.monotonic() - t0)
        if proc.returncode != 0 or "Snapshot the media store" not in proc.stdout:
            sys.exit("backup.yml --tags backup_media failed (rc %d): %s" % (proc.returncode, proc.stdout[-2000:]))
        changed.append("changed: [" in proc.stdout.split("Snapshot the media store", 1)[1].split("TASK [", 1)[0])
    return walls, changed


def counted_run(conn, two_regions):
    """The unchanged tree snapshotted again through counting proxies (one per region's endpoint)."""
    proxies = [CountingProxy(conn["endpoint_url"])] + ([CountingProxy(conn["other_endpoint_url"])] if two_regions else [])
    try:
        repos = repositories(proxies[0].url, proxies[1].url, conn) if two_regions else None
        res, wall = ansible_snapshot(dict(conn, endpoint_url=proxies[0].url), "snap2" if two_regions else "snap", WORK, repos)
    finally:
        for proxy in proxies:
            proxy.close()
    assert not res["changed"], res
    counts = collections.Counter()
    moved = collections.Counter()
    for proxy in proxies:
        counts.update(proxy.counts)
        moved.update(proxy.bytes)
    return res, wall, dict(sorted(counts.items())), moved, [sum(p.counts.values()) for p in proxies]


def cadence(conn, rows):
    """5. The unchanged tree at the media schedule's rate: S3 requests and seconds, per run and per day, with the
    snapshot in one region and in both (as fediflow_backup_repositories has it)."""
    s3b = boto3.client("s3", endpoint_url=conn["other_endpoint_url"], region_name=conn["other_region"],
                       aws_access_key_id=conn["AWS_ACCESS_KEY_ID"], aws_secret_access_key=conn["AWS_SECRET_ACCESS_KEY"])
    drop_bucket(s3b)
    s3b.create_bucket(Bucket=BUCKET, **({} if conn["other_region"] == "us-east-1" else
                                        {"CreateBucketConfiguration": {"LocationConstraint": conn["other_region"]}}))
    try:
        both = repositories(conn["endpoint_url"], conn["other_endpoint_url"], conn)
        first, first_wall = ansible_snapshot(conn, "snap2", WORK, both)  # the tree into both regions once
        copies = ", ".join("%s %s" % (c["repository"], "ok" if c["ok"] else "FAILED") for c in first.get("copies", []))
        rows.append(("first snapshot, both regions", "-", "ansible %.1fs (module %.1fs; copies %s)" % (
            first_wall, first["duration_s"], copies), "-", "-"))
        for two_regions in (False, True):
            res, wall, counts, moved, per_region = counted_run(conn, two_regions)
            total = sum(counts.values())
            where = "both regions" if two_regions else "one region"
            rows.append(("unchanged run, %s: S3 requests" % where, "-", "%d (%s%s); %s down, %s up; module %.2fs" % (
                total, ", ".join("%s %d" % kv for kv in counts.items()),
                "; per region %s" % "+".join(str(n) for n in per_region) if two_regions else "",
                gb(moved["down"]), gb(moved["up"]), res["duration_s"]), "-", "-"))
            rows.append(("  x %d runs a day (every 5 min)" % RUNS_PER_DAY, "-",
                         "%d requests, %s down; module %.0f s, ansible call %.0f s; requests $%.4f/day" % (
                             total * RUNS_PER_DAY, gb(moved["down"] * RUNS_PER_DAY), res["duration_s"] * RUNS_PER_DAY,
                             wall * RUNS_PER_DAY, per_day_cost(counts)), "-", "small"))
    finally:
        drop_bucket(s3b)
    walls, changed = schedule_runs()
    unchanged = [w for w, c in zip(walls, changed) if not c] or walls
    median = statistics.median(unchanged)
    rows.append(("schedule: backup.yml --tags backup_media (the lab: both regions)", "-",
                 "median %.1f s a run (%s; %d of %d wrote a snapshot) = %.0f s/day, %.1f%% of the day" % (
                     median, ", ".join("%.1f" % w for w in walls), sum(changed), len(walls), median * RUNS_PER_DAY,
                     100.0 * median * RUNS_PER_DAY / 86400), "-", "-"))


def ansible_snapshot(conn, prefix, src, repos=None):
    args = {"endpoint_url": conn["endpoint_url"], "region": conn["region"],
            "s3_prefix": prefix, "src": str(src), "parallel": PARALLEL}
    args.update({"repositories": repos} if repos else {"s3_bucket": BUCKET})
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m",
                           "fediflow.dr.s3_snapshot", "-a", json.dumps(args),
                           "-e", "ansible_python_interpreter=%s" % sys.executable],
                          cwd=str(ROOT), env=dict(ansible_env(json_callback=True), **{k: v for k, v in conn.items() if k.startswith("AWS_")}),
                          capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    res = next(iter(json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"].values()))
    if res.get("failed"):
        sys.exit("s3_snapshot failed: %s" % res.get("msg"))
    return res, wall


def aws_sync(conn, src, dest_prefix):
    if not (AWS_VENV / "bin" / "aws").exists():
        subprocess.run([sys.executable, "-m", "venv", str(AWS_VENV)], check=True)
        subprocess.run([str(AWS_VENV / "bin" / "pip"), "install", "-q", "awscli==1.45.*"], check=True)
    run_env = dict(os.environ, AWS_DEFAULT_REGION=conn["region"],
                   **{k: v for k, v in conn.items() if k.startswith("AWS_")})
    t0 = time.monotonic()
    subprocess.run([str(AWS_VENV / "bin" / "aws"), "--endpoint-url", conn["endpoint_url"], "s3", "sync",
                    "--only-show-errors", str(src), "s3://%s/%s/" % (BUCKET, dest_prefix)],
                   env=run_env, check=True)
    return time.monotonic() - t0


def rewrite(path, data, keep_mtime):
    before = os.stat(str(path))
    path.write_bytes(data)
    if keep_mtime:
        os.utime(str(path), ns=(before.st_atime_ns, before.st_mtime_ns))


def churn(info, step, fraction=0.01):
    rng = random.Random(1000 + step)
    for name in rng.sample(info["names"], max(1, int(len(info["names"]) * fraction))):
        path = WORK / name
        rewrite(path, rng.randbytes(path.stat().st_size), keep_mtime=False)


def prefix_bytes(s3, prefix):
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def drop_bucket(s3):
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})
        s3.delete_bucket(Bucket=BUCKET)
    except s3.exceptions.NoSuchBucket:
        pass


def gb(n):
    return "%.2f GB" % (n / 1e9) if n >= 1e8 else "%.1f MB" % (n / 1e6)


def main():
    conn = lab()
    s3 = boto3.client("s3", endpoint_url=conn["endpoint_url"], region_name=conn["region"],
                      aws_access_key_id=conn["AWS_ACCESS_KEY_ID"], aws_secret_access_key=conn["AWS_SECRET_ACCESS_KEY"])
    t0 = time.monotonic()
    info = generate()
    print("tree: %d files, %s (%s), generated/reused in %.1fs"
          % (info["files"], gb(info["bytes"]), PRISTINE, time.monotonic() - t0))
    shutil.rmtree(str(WORK), ignore_errors=True)
    subprocess.run(["cp", "-a", str(PRISTINE), str(WORK)], check=True)
    (WORK / ".complete").unlink()
    drop_bucket(s3)
    s3.create_bucket(Bucket=BUCKET)
    rows = []
    try:
        if CADENCE_ONLY:
            snap1, wall1 = ansible_snapshot(conn, "snap", WORK)
            rows.append(("first upload", "-", "ansible %.1fs (module %.1fs, %d of %d objects sent)" % (
                wall1, snap1["duration_s"], snap1["objects_uploaded"], snap1["files_total"]), "-", "-"))
            snap2, wall2 = ansible_snapshot(conn, "snap", WORK)
            assert not snap2["changed"], snap2
            rows.append(("unchanged tree", "-", "module %.2fs, ansible call %.2fs" % (snap2["duration_s"], wall2), "-", "-"))
            cadence(conn, rows)
            return print_rows(rows, info, snap2)
        sync1 = aws_sync(conn, WORK, "sync")
        snap1, wall1 = ansible_snapshot(conn, "snap", WORK)
        rows.append(("first upload", "aws s3 sync %.1fs" % sync1,
                     "ansible %.1fs (module %.1fs, %d of %d objects sent)" % (
                         wall1, snap1["duration_s"], snap1["objects_uploaded"], snap1["files_total"]),
                     "%.2f" % (wall1 / sync1), "-"))
        sync2 = aws_sync(conn, WORK, "sync")
        snap2, wall2 = ansible_snapshot(conn, "snap", WORK)
        assert not snap2["changed"], snap2
        rows.append(("unchanged tree", "aws s3 sync %.2fs" % sync2,
                     "module %.2fs, ansible call %.2fs" % (snap2["duration_s"], wall2),
                     "%.3f / %.2f" % (snap2["duration_s"] / sync2, wall2 / sync2), "<= 0.1 / <= 0.4"))
        edited = [n for i, n in enumerate(info["names"]) if i % 5 != 4][3::max(1, FILES // 12)][:10]
        for name in edited:
            path = WORK / name
            rewrite(path, random.Random(name).randbytes(path.stat().st_size), keep_mtime=True)
        churn(info, 1)
        sync3 = aws_sync(conn, WORK, "sync")
        snap3, _wall3 = ansible_snapshot(conn, "snap", WORK)
        local = {n: hashlib.sha256((WORK / n).read_bytes()).hexdigest() for n in edited}
        stale_sync = sum(hashlib.sha256(s3.get_object(Bucket=BUCKET, Key="sync/" + n)["Body"].read()).hexdigest()
                         != local[n] for n in edited)
        manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=snap3["manifest_key"])["Body"].read())
        ours = {f["path"]: f["sha256"] for f in manifest["files"]}
        stale_ours = sum(ours[n] != local[n] for n in edited)
        rows.append(("edits keeping size+mtime", "stale %d of %d (sync %.1fs)" % (stale_sync, len(edited), sync3),
                     "stale %d of %d (module %.1fs)" % (stale_ours, len(edited), snap3["duration_s"]), "-", "0 stale"))
        steps = [snap3["duration_s"]]
        for step in range(2, 6):
            churn(info, step)
            res, _wall = ansible_snapshot(conn, "snap", WORK)
            steps.append(res["duration_s"])
        count = len(s3.list_objects_v2(Bucket=BUCKET, Prefix="snap/snapshots/").get("Contents", []))
        stored = prefix_bytes(s3, "snap")
        rows.append(("storage, %d snapshots, 1%% churn" % count, "6 full copies %s" % gb(6 * info["bytes"]),
                     "%s (%.2fx the tree)" % (gb(stored), stored / float(info["bytes"])),
                     "%.3f" % (stored / (6.0 * info["bytes"])), "<= 1.05x tree"))
        print("churn snapshots, module seconds: %s" % ", ".join("%.1f" % s for s in steps))
        cadence(conn, rows)
        print_rows(rows, info, snap2)
    finally:
        drop_bucket(s3)
        shutil.rmtree(str(WORK), ignore_errors=True)


def print_rows(rows, info, unchanged):
    print("phases of the unchanged run: %s" % unchanged["phases"])
    width = [max(len(str(r[i])) for r in rows + [("measure", "anchor", "fediflow.dr", "ratio", "goal")])
             for i in range(5)]
    print()
    for row in [("measure", "anchor", "fediflow.dr", "ratio", "goal")] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, width)))
    prices = ", ".join("%s $%s" % kv for kv in PRICE_PER_1000.items())
    print("\n(BENCH_SCALE=%s: %d files, %s; parallel=%d for both tools; request prices: S3 Standard us-east-1 list"
          " prices, %s per 1,000)" % (SCALE, info["files"], gb(info["bytes"]), PARALLEL, prices))


if __name__ == "__main__":
    main()
