"""Lab RTO of a region failover: kill the primary (pg_ctl stop -m immediate), run
playbooks/failover.yml, and time kill -> first successful write in region 2 with DNS switched,
broken into detection / promotion / DNS / Kubernetes / checks (the role's own step marks).

Anchor, measured in the same run on the same lab: the bare promotion a runbook does by hand
(``SELECT pg_promote(true, 60)`` then an INSERT, BENCH.md: 0.14 s), after the same kill.
Goals (issue #7 / BENCH.md): orchestration after detection <= 3 s including DNS and Kubernetes;
total <= the detection window + 5 s. Detection here uses the lab window (3 checks, 1 s apart)
instead of the runbook's 3 x 30 s; the table shows both.

A heartbeat writer commits a row to region 1 every 20 ms until the kill and then tries region 2
every 20 ms: the first row region 2 accepts is "first successful write"; rows acknowledged by
region 1 but missing in region 2 afterwards are the data actually lost (RPO).

The lab ends in its home roles (failback.yml -e switch_back=true after each failover).
Usage: python bench/bench_failover.py   (the lab must be up: make lab-up)
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
import psycopg2

from _common import BIN, INVENTORY, ROOT, ansible_env, lab_hostvars

ANCHOR_PROMOTE_S = 0.14  # BENCH.md: pg_promote(true, 60) then INSERT, measured on this machine kind
DETECT_INTERVAL_S, DETECT_THRESHOLD = 1.0, 3


def playbook(name, *extra):
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(INVENTORY), str(ROOT / "playbooks" / name), *extra],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit("%s failed:\n%s" % (name, proc.stdout[-4000:]))
    return proc


def connect(hv, timeout=1):
    conn = psycopg2.connect(host=hv["fediflow_pg_host"], port=hv["fediflow_pg_port"], user=hv["fediflow_pg_superuser"],
                            password=hv["fediflow_pg_superuser_password"], dbname=hv["fediflow_app_db"],
                            connect_timeout=timeout)
    conn.autocommit = True
    return conn


def kill(hv):
    bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["runuser", "-u", "postgres", "--", bindir + "/pg_ctl", "stop", "-m", "immediate", "-w",
                    "-D", hv["fediflow_pg_data_dir"]], cwd="/", check=True, capture_output=True)


class Heartbeat(threading.Thread):
    """Writes to region 1 until `killed` is set, then to region 2 until one write succeeds."""

    def __init__(self, primary, standby):
        super().__init__(daemon=True)
        self.primary, self.standby = primary, standby
        self.killed, self.stop = threading.Event(), threading.Event()
        self.last_acked_id, self.first_ok_at = None, None

    def run(self):
        conn = connect(self.primary)
        while not self.killed.is_set():
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO bench_heartbeat (region) VALUES ('r1') RETURNING id")
                    self.last_acked_id = cur.fetchone()[0]
            except psycopg2.Error:
                break
            time.sleep(0.02)  # heartbeat period, not a wait for a condition
        conn2 = None
        while not self.stop.is_set():
            try:
                conn2 = conn2 or connect(self.standby)
                with conn2.cursor() as cur:
                    cur.execute("INSERT INTO bench_heartbeat (region) VALUES ('r2')")
                self.first_ok_at = time.monotonic()
                return
            except psycopg2.Error:
                if conn2 is not None and conn2.closed:
                    conn2 = None
            time.sleep(0.02)


class DnsWatch(threading.Thread):
    def __init__(self, hv, want):
        super().__init__(daemon=True)
        self.client = boto3.client("route53", endpoint_url=hv["fediflow_aws_endpoint_url"], region_name="us-east-1",
                                   aws_access_key_id=hv["fediflow_aws_access_key"],
                                   aws_secret_access_key=hv["fediflow_aws_secret_key"])
        zones = self.client.list_hosted_zones()["HostedZones"]
        self.zone = [z["Id"] for z in zones if z["Name"] == hv["fediflow_dns_zone"]][0]
        self.name, self.want, self.at, self.stop = hv["fediflow_app_record"], want, None, threading.Event()

    def run(self):
        while not self.stop.is_set():
            sets = self.client.list_resource_record_sets(HostedZoneId=self.zone, StartRecordName=self.name,
                                                         StartRecordType="A", MaxItems="1")["ResourceRecordSets"]
            if sets and [r["Value"] for r in sets[0]["ResourceRecords"]] == [self.want]:
                self.at = time.monotonic()
                return
            time.sleep(0.05)


def prepare(primary, standby):
    with connect(primary) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_heartbeat (id bigserial PRIMARY KEY, region text,"
                    " at timestamptz DEFAULT clock_timestamp())")
        cur.execute("SELECT pg_current_wal_lsn()::text")
        lsn = cur.fetchone()[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with connect(standby) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))
            if cur.fetchone()[0]:
                return
        time.sleep(0.1)
    sys.exit("the standby did not replay the heartbeat table")


def lost(standby, last_acked_id):
    with connect(standby) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM bench_heartbeat WHERE region = 'r1'")
        present = cur.fetchone()[0]
    return max(0, (last_acked_id or 0) - present)


def run_failover(primary, standby, out):
    prepare(primary, standby)
    beat, dns = Heartbeat(primary, standby), DnsWatch(primary, standby["fediflow_app_endpoint"])
    beat.start()
    time.sleep(0.3)  # let a few heartbeats land on region 1
    t_kill, t_kill_epoch = time.monotonic(), time.time()
    kill(primary)
    beat.killed.set()
    dns.start()
    proc = subprocess.Popen([str(BIN / "ansible-playbook"), "-i", str(INVENTORY), str(ROOT / "playbooks" / "failover.yml"),
                             "-e", "target_region=%s" % standby["fediflow_region"],
                             "-e", "region_failover_detect_interval_s=%s" % DETECT_INTERVAL_S,
                             "-e", "region_failover_detect_threshold=%s" % DETECT_THRESHOLD,
                             "-e", "region_failover_detect_timeout_s=0.5",
                             "-e", "region_failover_result_file=%s" % out],
                            cwd=ROOT, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stdout = proc.communicate()[0]
    t_done = time.monotonic()
    beat.join(30)
    dns.join(30)
    beat.stop.set()
    dns.stop.set()
    if proc.returncode or beat.first_ok_at is None or dns.at is None:
        print("failover.yml failed or region 2 never took a write / DNS never switched:\n" + stdout[-4000:])
        playbook("failback.yml", "-e", "switch_back=true")  # leave the lab in its home roles
        sys.exit(1)
    res = json.loads(Path(out).read_text())
    return {"kill": t_kill, "kill_epoch": t_kill_epoch, "write": beat.first_ok_at, "dns": dns.at, "done": t_done, "result": res,
            "lost_rows": lost(standby, beat.last_acked_id)}


def run_anchor(primary, standby):
    """The runbook's bare promotion after the same kill: pg_promote(true, 60), then an INSERT."""
    prepare(primary, standby)
    kill(primary)
    conn = connect(standby)
    t0 = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_promote(true, 60)")
        cur.execute("INSERT INTO bench_heartbeat (region) VALUES ('anchor')")
    took = time.monotonic() - t0
    conn.close()
    return took


def main():
    primary, standby = lab_hostvars()
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_failover(primary, standby, os.path.join(tmp, "result.json"))
        playbook("failback.yml", "-e", "switch_back=true")
        anchor = run_anchor(primary, standby)
        playbook("failback.yml", "-e", "switch_back=true")

    steps = {s["step"]: s["duration_s"] for s in ours["result"]["steps"]}
    k = ours["kill"]
    startup = ours["result"]["started_at"] - ours["kill_epoch"]  # the role's first mark is wall-clock epoch
    write_s, dns_s = ours["write"] - k, ours["dns"] - k
    rto = max(write_s, dns_s)
    orchestration = steps.get("fence", 0.0) + steps["promote"] + steps["dns"] + steps["kubernetes"]
    window = DETECT_INTERVAL_S * (DETECT_THRESHOLD - 1)
    print("Region failover on the lab (kill -> first successful write in region 2 with DNS switched)")
    print("%-52s %10s  %s" % ("measure", "seconds", "anchor / goal"))
    rows = [
        ("detection (%d checks, %.0f s apart; step)" % (DETECT_THRESHOLD, DETECT_INTERVAL_S), steps["detect"],
         "window %.1f s here; runbook 3 x 30 s = 60-90 s" % window),
        ("fence (the lab's control plane; lag guard first)", steps.get("fence", 0.0), "before anything moves"),
        ("promotion (pg_promote step: guards, promote, writable)", steps["promote"],
         "bare pg_promote+INSERT %.3f s now (BENCH.md %.2f s)" % (anchor, ANCHOR_PROMOTE_S)),
        ("DNS (route53_failover step, moto INSYNC at once)", steps["dns"], ""),
        ("Kubernetes (k8s_failover step: scale, configmap, restart)", steps["kubernetes"], ""),
        ("old primary stop + WAL archive reconfig", steps["old_primary"] + steps["archive"], "after the write"),
        ("notify (Slack + SES)", steps["notify"], "after the write"),
        ("post-recovery checks (db, app, federation)", steps["checks"], "after the write"),
        ("ansible-playbook start-up before the first step", startup, ""),
        ("orchestration after detection (fence+DNS+promote+k8s)", orchestration, "goal <= 3 s: %s (%.1fx the goal)" % (
            "met" if orchestration <= 3 else "NOT met", orchestration / 3)),
        ("first successful write in region 2 after the kill", write_s, ""),
        ("DNS pointing at region 2 after the kill", dns_s, ""),
        ("RTO (both)", rto, "goal <= window + 5 s = %.1f s: %s" % (window + 5, "met" if rto <= window + 5 else "NOT met")),
        ("whole playbook after the kill", ours["done"] - k, ""),
    ]
    for name, value, note in rows:
        print("%-52s %10.3f  %s" % (name, value, note))
    print("%-52s %10d  %s" % ("heartbeats acknowledged by region 1 and lost (RPO)", ours["lost_rows"],
                              "data-loss tolerance 60 s"))
    print("orchestration vs the bare promotion: %.1fx (it adds guards, DNS and Kubernetes)" % (orchestration / anchor))


if __name__ == "__main__":
    main()
