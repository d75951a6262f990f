"""A whole lab region fails, for real: its database host is a network namespace (PostgreSQL over SSH,
Redis, the Kubernetes double and the region's own S3 started there), so `lab/playbooks/lab_region.yml` can
partition it or take it down and bring it back. Checked from outside the playbook: TCP probes from the
controller and from the other region's namespace, psql inside the partitioned region, the route table,
/proc, psycopg2, redis-py and boto3 afterwards. The lab is this worker's own; the module fixture puts it
back in its home state (lab_up).
"""
import os
import subprocess
import uuid
from urllib.parse import urlsplit

import boto3
import psycopg2
import pytest

from lab_fixtures import RESUME_S, back_home, lab_region, pg_connect, pg_streaming, poll, s3_endpoint
from netns_fixtures import IP, probe, route_type, run
from redis_fixtures import region_redis

pytestmark = [pytest.mark.restarts_lab, pytest.mark.slow]


def _netns(hv):
    return "fdl%d-%s" % (int(hv["lab_net_index"]), hv["fediflow_region"])


def _endpoints(hv):
    """(what, address, port) of every service the region's host runs."""
    k8s = hv["fediflow_k8s_api_url"].rsplit(":", 1)
    return [("postgresql", hv["fediflow_pg_host"], int(hv["fediflow_pg_port"])),
            ("redis", hv["fediflow_redis_host"], int(hv["fediflow_redis_port"])),
            ("kubernetes", k8s[0].split("//")[1], int(k8s[1])),
            ("s3", urlsplit(s3_endpoint(hv)).hostname, urlsplit(s3_endpoint(hv)).port),
            ("sshd", hv["lab_net_address"], 22)]


def _reach(hv, netns=None):
    """{service: probe result} from the root namespace (the controller) or from ``netns``."""
    return {what: probe(address, port, netns=netns, timeout=1.5, connect_only=True)
            for what, address, port in _endpoints(hv)}


def _marker_row(primary):
    marker = "outage-%s" % uuid.uuid4().hex[:12]
    with pg_connect(primary, "fediflow") as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO accounts (username, domain) VALUES (%s, 'outage.example')", (marker,))
    return marker


def _has_row(hv, marker):
    try:
        with pg_connect(hv, "fediflow") as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM accounts WHERE username = %s", (marker,))
            return cur.fetchone()[0] == 1
    except psycopg2.Error:  # the server does not answer (yet): poll again
        return False


def _s3(hv):
    """A client of the region's own S3 (its moto), which fails fast when the region is dark."""
    return boto3.client("s3", endpoint_url=s3_endpoint(hv), region_name=hv["fediflow_region"],
                        aws_access_key_id=hv["fediflow_aws_access_key"],
                        aws_secret_access_key=hv["fediflow_aws_secret_key"],
                        config=boto3.session.Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))


def _proc_state(pid):
    with open("/proc/%s/stat" % pid, encoding="utf-8") as handle:
        return handle.read().rsplit(")", 1)[-1].split()[0]


def _redis_role(hv):
    """The Redis's replication role and, for a replica, its link to the primary."""
    client = region_redis(hv)
    try:
        info = client.info("replication")
        return info["role"], info.get("master_link_status")
    finally:
        client.close()


@pytest.fixture(scope="module")
def home(lab):
    """The worker's lab in its home state before and after (lab_up starts again what a test left down)."""
    yield lab
    back_home(lab)


def test_partitioned_primary_keeps_writing_inside_while_nothing_outside_reaches_it(home):
    primary, standby = home["primary"], home["standby"]
    before = _reach(primary)
    assert all(r.startswith("ok") for r in before.values()), before
    out = lab_region(primary, "partitioned")
    assert "up -> partitioned" in out
    try:
        # nothing from the controller or the other region reaches any of the region's services
        for where, netns in (("controller", None), ("the other region", _netns(standby))):
            reached = _reach(primary, netns)
            assert all(r.startswith("error") for r in reached.values()), (where, reached)
        # no packet can follow a default route: the region's address resolves to a blackhole outside it
        assert route_type(primary["lab_net_address"]) == "blackhole"
        assert route_type(primary["lab_net_address"], netns=_netns(standby)) == "blackhole"
        # inside the region, the primary still takes writes (TCP to its own address, TLS, as a local app would)
        marker = "partitioned-%s" % uuid.uuid4().hex[:12]
        psql = os.path.join(run(["pg_config", "--bindir"]).stdout.strip(), "psql")
        env = dict(os.environ, PGPASSWORD=primary["fediflow_pg_superuser_password"],
                   PGSSLMODE="verify-full", PGSSLROOTCERT=primary["fediflow_pg_ca_cert"], PGCONNECT_TIMEOUT="5")
        inside = subprocess.run([IP, "netns", "exec", _netns(primary), psql, "-X", "-At", "-h", primary["fediflow_pg_host"],
                                 "-p", str(primary["fediflow_pg_port"]), "-U", primary["fediflow_pg_superuser"],
                                 "-d", "fediflow", "-v", "marker=%s" % marker],
                                input="INSERT INTO accounts (username, domain) VALUES (:'marker', 'inside.example') "
                                      "RETURNING 1;\n",
                                env=env, capture_output=True, text=True, check=False, timeout=30)
        assert inside.returncode == 0 and inside.stdout.strip().startswith("1"), (inside.stdout, inside.stderr)
    finally:
        back = lab_region(primary, "up")
    assert "partitioned -> up" in back
    reached = _reach(primary)
    assert all(r.startswith("ok") for r in reached.values()), reached
    # the write made inside the partition is there and reaches the standby once the link is back
    assert _has_row(primary, marker)
    assert poll(lambda: _has_row(standby, marker), timeout=RESUME_S)


def _archive_the_marker(primary):
    """Switch WAL and wait until the segment holding what was written is archived (in every region's bucket:
    the lab's WAL archive requires all copies); returns its name."""
    with pg_connect(primary) as conn, conn.cursor() as cur:
        # the segment that ends with the switch (at a segment's start nothing is switched: then the previous one,
        # which holds everything written so far)
        cur.execute("SELECT pg_walfile_name(pg_switch_wal())")
        segment = cur.fetchone()[0]

        seen = []

        def archived():
            # a transaction keeps one statistics snapshot (PostgreSQL 15), and psycopg2's `with conn` is one
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver")
            seen[:] = cur.fetchone()
            last = seen[0] or ""
            return last[8:] >= segment[8:] and last[:8] == segment[:8]
        assert poll(archived, timeout=60), (segment, seen)
    return segment


def _fetch_in_region(hv, segment):
    """The region's own restore_command (fediflow_wal.py fetch, as postgres, in the region's namespace, its
    configuration: its own region's bucket first) fetches ``segment``; returns its size."""
    base = os.path.dirname(hv["fediflow_pg_data_dir"])
    dest = os.path.join(base, "outage-fetch-" + segment)
    proc = subprocess.run([IP, "netns", "exec", _netns(hv), "runuser", "-u", hv["fediflow_pg_os_user"], "--",
                           "/usr/bin/python3", os.path.join(hv["fediflow_tools_dir"], "fediflow_wal.py"),
                           "--config", os.path.join(base, "fediflow-wal.json"), "fetch", segment, dest],
                          cwd="/", capture_output=True, text=True, timeout=60, check=False)
    try:
        assert proc.returncode == 0, proc.stderr
        return os.path.getsize(dest)
    finally:
        if os.path.exists(dest):
            os.unlink(dest)


def test_down_region_is_dark_from_everywhere_and_up_brings_it_back_with_its_data(home):
    primary, standby = home["primary"], home["standby"]
    assert poll(lambda: pg_streaming(standby), timeout=RESUME_S)
    marker = _marker_row(primary)
    assert poll(lambda: _has_row(standby, marker), timeout=30)  # on both regions before the outage
    bucket, key = primary["fediflow_backup_bucket"], "outage-test/%s" % marker
    _s3(primary).put_object(Bucket=bucket, Key=key, Body=marker.encode())
    with open(os.path.join(primary["fediflow_lab_dir"], "run", "s3-%s.pid" % primary["fediflow_region"]),
              encoding="ascii") as handle:
        s3_pid = handle.read().split()[0]
    segment = _archive_the_marker(primary)
    out = lab_region(primary, "down")
    assert "up -> down" in out and "1 frozen" in out
    try:
        # nothing runs there but the region's S3, frozen (SIGSTOP): an outage makes S3 unreachable, not empty
        assert run([IP, "netns", "pids", _netns(primary)]).stdout.split() == [s3_pid]
        assert _proc_state(s3_pid) == "T"
        for where, netns in (("controller", None), ("the other region", _netns(standby))):
            reached = _reach(primary, netns)
            assert all(r.startswith("error") for r in reached.values()), (where, reached)
        # the other region is untouched: its standby answers (and has the row)
        assert _has_row(standby, marker)
        # the WAL up to the outage is in the surviving region's own bucket: its restore_command gets it alone
        assert _fetch_in_region(standby, segment) == 16 * 1024 * 1024
    finally:
        back = lab_region(primary, "up")
    assert "down -> up" in back and "1 woken" in back
    reached = _reach(primary)
    assert all(r.startswith("ok") for r in reached.values()), reached
    # the region's S3 is the same process, running again, with the object written before the outage
    assert _proc_state(s3_pid) != "T"
    got = _s3(primary).get_object(Bucket=bucket, Key=key)["Body"].read()
    _s3(primary).delete_object(Bucket=bucket, Key=key)
    assert got == marker.encode()
    # PostgreSQL came back as it was (primary, its data) in the region's namespace, started over SSH
    assert _has_row(primary, marker)
    pids = set(run([IP, "netns", "pids", _netns(primary)]).stdout.split())
    with open(os.path.join(primary["fediflow_pg_data_dir"], "postmaster.pid"), encoding="utf-8") as handle:
        assert handle.readline().strip() in pids
    assert poll(lambda: pg_streaming(standby), timeout=RESUME_S)
    marker2 = _marker_row(primary)
    assert poll(lambda: _has_row(standby, marker2), timeout=30)
    # Redis came back as it was: region 1's the primary, region 2's replica links to it again (over TLS in the
    # lab); a cache, it kept nothing in memory (lab_up seeds it again)
    assert _redis_role(primary) == ("master", None)
    assert poll(lambda: _redis_role(standby) == ("slave", "up"), timeout=60)
