"""WAL push per 16 MiB segment to S3 (the lab's moto): the collection's archive command
(``fediflow_wal.py --config FILE push``, system Python, no boto3) against the runbook's
``aws s3 cp`` (awscli 1.45, in its own venv so the project's pinned botocore is untouched),
each run the way PostgreSQL runs an archive_command: one ``/bin/sh -c`` process per segment.
Also the lab's default: the same command pushing every segment to **both regions' buckets** at once
(``{"repositories": [...]}``, each region's own S3), the cost of the second copy side by side.

pgBackRest's ``archive-push`` (0.12 s per segment in BENCH.md) is the goal's anchor; it speaks
only HTTPS to S3 and needs a TLS front for moto, so it is quoted from BENCH.md, not run here.
Also shown, for reading the numbers: moto's own time for the same PUT from an already-running
process over a warm connection (the floor no per-segment process can go below).

Usage: python bench/bench_wal_push.py [-n SEGMENTS]   (the lab must be up: make lab-up)
"""
import argparse
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import boto3

from _common import ROOT, lab_hostvars, s3_endpoint

SEGMENT_SIZE = 16 * 1024 * 1024
PGBACKREST_S = 0.12  # BENCH.md: pgBackRest archive-push to S3, per segment, measured on this machine kind
AWS_VENV = Path(os.environ.get("FEDIFLOW_BENCH_VENV", "/var/tmp/fediflow-bench-venv"))
AWSCLI_PIN = "awscli==1.45.*"


def aws_cli():
    """awscli in its own venv (created on first use with pip from PyPI)."""
    aws = AWS_VENV / "bin" / "aws"
    if not aws.exists():
        print("installing %s into %s (first run only)" % (AWSCLI_PIN, AWS_VENV), flush=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(AWS_VENV)], check=True)
        subprocess.run([str(AWS_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", AWSCLI_PIN],
                       check=True)
    version = subprocess.run([str(aws), "--version"], capture_output=True, text=True, check=True)
    return str(aws), (version.stdout or version.stderr).split()[0]


def timed_sh(command, env):
    t0 = time.perf_counter()
    proc = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit("failed (rc=%d): %s\n%s" % (proc.returncode, command, proc.stderr.strip()))
    return took


def row(label, times, anchor):
    mean, median = statistics.mean(times), statistics.median(times)
    return "%-44s %8.3f %8.3f %8.3f %8.3f %9s" % (label, mean, median, min(times), max(times),
                                                  "%.2fx" % (median / anchor) if anchor else "-")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("-n", "--segments", type=int, default=20)
    args = parser.parse_args()

    hv, hv2 = lab_hostvars()
    endpoint, region, bucket = s3_endpoint(hv), hv["fediflow_region"], hv["fediflow_backup_bucket"]
    try:
        urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
    except OSError as exc:
        raise SystemExit("moto is not answering at %s (%s): start the lab first (make lab-up)" % (endpoint, exc))
    aws, aws_version = aws_cli()
    run = uuid.uuid4().hex[:10]
    ours_prefix, aws_prefix = "bench/wal-push-%s/ours" % run, "bench/wal-push-%s/aws" % run
    two_prefix = "bench/wal-push-%s/two" % run
    s3_2 = boto3.client("s3", endpoint_url=s3_endpoint(hv2), region_name=hv2["fediflow_region"],
                        aws_access_key_id=hv2["fediflow_aws_access_key"],
                        aws_secret_access_key=hv2["fediflow_aws_secret_key"])
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=hv["fediflow_aws_access_key"],
                      aws_secret_access_key=hv["fediflow_aws_secret_key"])

    work = tempfile.mkdtemp(prefix="fediflow-bench-wal-", dir="/var/tmp")
    try:
        for name in ("walarchive.py", "fediflow_wal.py"):
            src = ROOT / ("plugins/module_utils" if name == "walarchive.py" else "roles/replication/files") / name
            shutil.copy(str(src), work)
        cfg = os.path.join(work, "wal.json")
        with open(os.open(cfg, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as handle:
            json.dump({"backend": "s3", "bucket": bucket, "prefix": ours_prefix, "endpoint_url": endpoint,
                       "region": region, "access_key": hv["fediflow_aws_access_key"],
                       "secret_key": hv["fediflow_aws_secret_key"], "sse": "AES256"}, handle)
        cfg2 = os.path.join(work, "wal-two.json")  # the lab's default: a copy in each region's bucket
        with open(os.open(cfg2, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as handle:
            json.dump({"repositories": [
                {"name": h["fediflow_region"], "backend": "s3", "bucket": h["fediflow_backup_bucket"], "prefix": two_prefix,
                 "endpoint_url": s3_endpoint(h), "region": h["fediflow_region"], "access_key": h["fediflow_aws_access_key"],
                 "secret_key": h["fediflow_aws_secret_key"], "sse": "AES256"} for h in (hv, hv2)]}, handle)
        aws_env = dict(os.environ, AWS_ACCESS_KEY_ID=hv["fediflow_aws_access_key"],
                       AWS_SECRET_ACCESS_KEY=hv["fediflow_aws_secret_key"], AWS_DEFAULT_REGION=region)
        segments = []
        for i in range(args.segments + 1):  # the first of each is a warm-up, not counted
            path = os.path.join(work, "%024X" % (i + 1))
            with open(path, "wb") as handle:
                handle.write(os.urandom(SEGMENT_SIZE))
            segments.append(path)
        print("%d segments of 16 MiB (+1 warm-up) -> s3://%s/bench/wal-push-%s/ at %s; %s, system %s" % (
            args.segments, bucket, run, endpoint, aws_version,
            subprocess.run(["/usr/bin/python3", "--version"], capture_output=True, text=True, check=True).stdout.strip()))

        ours, anchor, two = [], [], []
        script = os.path.join(work, "fediflow_wal.py")
        for i, path in enumerate(segments):  # interleaved, so load changes hit all alike
            name = os.path.basename(path)
            t_ours = timed_sh("/usr/bin/python3 %s --config %s push %s %s" % (
                shlex.quote(script), shlex.quote(cfg), shlex.quote(path), name), os.environ)
            t_two = timed_sh("/usr/bin/python3 %s --config %s push %s %s" % (
                shlex.quote(script), shlex.quote(cfg2), shlex.quote(path), name), os.environ)
            t_aws = timed_sh("%s s3 cp --only-show-errors --sse AES256 --endpoint-url %s %s s3://%s/%s/%s" % (
                shlex.quote(aws), shlex.quote(endpoint), shlex.quote(path), bucket, aws_prefix, name), aws_env)
            if i:
                ours.append(t_ours)
                anchor.append(t_aws)
                two.append(t_two)

        # moto's own time for the same PUT, from this process over a warm connection
        spec = importlib.util.spec_from_file_location("walarchive_bench", os.path.join(work, "walarchive.py"))
        walarchive = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(walarchive)
        wcfg = walarchive.load_config(cfg)
        archive = walarchive.S3Archive(wcfg, walarchive.resolve_credentials(wcfg, {}, lambda: None))
        floor = []
        with open(segments[0], "rb") as handle:
            data = handle.read()
        sha = hashlib.sha256(data).hexdigest()
        archive.head(archive.key("warm-up"))
        for i in range(min(args.segments, 10)):
            t0 = time.perf_counter()
            status, _h, _b = archive.request("PUT", "%s/floor-%d" % (ours_prefix, i), body=data, payload_hash=sha,
                                             headers={"Content-Length": str(len(data))})
            floor.append(time.perf_counter() - t0)
            assert status == 200, status
        archive.close()

        # the outcome, checked independently
        for path in segments:
            name = os.path.basename(path)
            head = s3.head_object(Bucket=bucket, Key="%s/%s" % (ours_prefix, name))
            assert head["ContentLength"] == SEGMENT_SIZE and head["ServerSideEncryption"] == "AES256"
            assert s3.head_object(Bucket=bucket, Key="%s/%s" % (aws_prefix, name))["ContentLength"] == SEGMENT_SIZE
            for client, where in ((s3, bucket), (s3_2, hv2["fediflow_backup_bucket"])):  # a copy in each region
                assert client.head_object(Bucket=where, Key="%s/%s" % (two_prefix, name))["ContentLength"] == SEGMENT_SIZE

        aws_median = statistics.median(anchor)
        print()
        print("%-44s %8s %8s %8s %8s %9s" % ("per 16 MiB segment (seconds)", "mean", "median", "min", "max",
                                             "vs aws cp"))
        print(row("runbook: aws s3 cp (awscli, process/segment)", anchor, aws_median))
        print(row("fediflow_wal.py push (process/segment)", ours, aws_median))
        print(row("fediflow_wal.py push, both regions (default)", two, aws_median))
        print(row("moto floor: PUT from a running process", floor, aws_median))
        print("%-44s %8s %8.3f %8s %8s %9s" % ("anchor: pgBackRest archive-push (BENCH.md)", "", PGBACKREST_S, "", "",
                                               "%.2fx" % (PGBACKREST_S / aws_median)))
        print()
        print("fediflow_wal.py / aws s3 cp = %.2fx (median); fediflow_wal.py / pgBackRest's %.2f s = %.2fx "
              "(goal <= 1.0x; pgBackRest not run here: needs a TLS front for moto)" % (
                  statistics.median(ours) / aws_median, PGBACKREST_S, statistics.median(ours) / PGBACKREST_S))
        print("to both regions (two repositories, at once): %.3f s = %.2fx one repository, %.2fx pgBackRest's %.2f s "
              "(to one)" % (statistics.median(two), statistics.median(two) / statistics.median(ours),
                            statistics.median(two) / PGBACKREST_S, PGBACKREST_S))
    finally:
        shutil.rmtree(work)
        delete_prefix(s3, bucket, "bench/wal-push-%s/" % run)
        delete_prefix(s3_2, hv2["fediflow_backup_bucket"], "bench/wal-push-%s/" % run)


def delete_prefix(s3, bucket, prefix):
    """Remove every version under the prefix (the lab's buckets are versioned)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if doomed:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})


if __name__ == "__main__":
    main()
