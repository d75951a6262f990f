"""fediflow.dr.redis_cache against the lab's real Redis servers (Debian redis-server, one per
region, region 2 a replica) and a scratch redis-server started on a free port by these tests.
S3 is moto (the lab's). Every outcome is checked independently with the redis client, boto3
and sha256 of the files on disk, not only through the module's result.
"""
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import time
import uuid

import boto3
import pytest
import redis

from lab_fixtures import module, poll, s3_endpoint
from redis_fixtures import critical_keys as _critical_keys, redis_client as _client, redis_value as _value, region_redis

MODULE = "fediflow.dr.redis_cache"
TTL_TOLERANCE_MS = 5000


def _conn(hv):
    out = {"redis_host": hv["fediflow_redis_host"], "redis_port": int(hv["fediflow_redis_port"]),
           "redis_password": hv["fediflow_redis_password"]}
    if hv.get("fediflow_redis_tls"):
        out.update(redis_tls=True, redis_tls_ca_cert=hv["fediflow_redis_tls_ca_cert"])
    return out


def _aws(hv):
    return {"endpoint_url": s3_endpoint(hv), "access_key": hv["fediflow_aws_access_key"],
            "secret_key": hv["fediflow_aws_secret_key"], "region": hv["fediflow_region"]}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def scratch_redis(tmp_path, lab):
    """A redis-server of our own on a free loopback port, with the lab's password (config 0600)."""
    password = lab["primary"]["fediflow_redis_password"]
    port = _free_port()
    conf = tmp_path / "scratch-redis.conf"
    conf.write_text("bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly no\nrequirepass %s\n" % (
        port, tmp_path, password))
    conf.chmod(0o600)
    with open(tmp_path / "scratch-redis.log", "wb") as log:
        proc = subprocess.Popen(["redis-server", str(conf)], stdout=log, stderr=subprocess.STDOUT)  # pylint: disable=consider-using-with
    client = _client("127.0.0.1", port, password)

    def up():
        try:
            return client.ping()
        except redis.exceptions.ConnectionError:
            return False

    assert poll(up, 10), (tmp_path / "scratch-redis.log").read_text()
    yield {"redis_host": "127.0.0.1", "redis_port": port, "redis_password": password, "client": client}
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def cache_backup(lab, tmp_path_factory):
    """One backup of the primary region's critical keys, copied to S3 (moto), for the restores."""
    primary = lab["primary"]
    dest = str(tmp_path_factory.mktemp("cache-backups"))
    prefix = "cache-test/%s" % uuid.uuid4().hex[:8]
    args = dict(_conn(primary), **_aws(primary))
    args.update(state="backup", dest=dest, patterns=primary["fediflow_redis_critical_patterns"],
                region_name=primary["fediflow_region"], source_name="pg-us-east-1",
                s3_bucket=primary["fediflow_backup_bucket"], s3_prefix=prefix)
    result = module(MODULE, args)
    assert not result.get("failed"), result.get("msg")
    print("cache backup of %d keys: %.2fs %s" % (result["keys_saved"], result["duration_s"], result["phases"]))
    return {"dest": dest, "prefix": prefix, "result": result, "args": args}


def _restore_args(cache_backup, target, **extra):
    args = {"state": "restore", "dest": cache_backup["dest"], "redis_host": target["redis_host"],
            "redis_port": target["redis_port"], "redis_password": target["redis_password"]}
    args.update({k: target[k] for k in ("redis_tls", "redis_tls_ca_cert") if k in target})
    args.update(extra)
    return args


def test_lab_has_two_redis_servers_region_2_replicating(lab):
    primary, standby = lab["primary"], lab["standby"]
    one = region_redis(primary)
    two = region_redis(standby)
    info_one, info_two = one.info("replication"), two.info("replication")
    assert info_one["role"] == "master" and info_one["connected_slaves"] >= 1
    assert info_two["role"] == "slave" and info_two["master_port"] == int(primary["fediflow_redis_port"])
    assert info_two["master_link_status"] == "up"
    key = "lab:probe:%s" % uuid.uuid4().hex
    one.set(key, "x", ex=60)
    assert poll(lambda: two.get(key) == b"x", 10)
    one.delete(key)
    # the seed: a few thousand critical keys of every type with TTLs, and noise
    critical = _critical_keys(one, primary["fediflow_redis_critical_patterns"])
    assert len(critical) >= 2500
    assert {one.type(k).decode() for k in critical} == {"string", "hash", "list", "set", "zset"}
    assert sum(1 for k in critical if one.pttl(k) > 0) > 1000
    assert one.dbsize() > len(critical)
    with pytest.raises(redis.exceptions.ReadOnlyError):
        two.set(key, "y")
    # the password is in a 0600 file, not on redis-server's command line
    conf = os.path.join(primary["fediflow_lab_dir"], "us-east-1", "redis", "redis.conf")
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    pid = int(open(os.path.join(primary["fediflow_lab_dir"], "run", "redis-us-east-1.pid")).read().split()[0])
    assert primary["fediflow_redis_password"].encode() not in open("/proc/%d/cmdline" % pid, "rb").read()


def test_backup_is_in_the_ledger_with_checksums_and_in_s3(lab, cache_backup):
    primary = lab["primary"]
    result = cache_backup["result"]
    backup_dir = os.path.join(cache_backup["dest"], result["backup_id"])
    with open(os.path.join(backup_dir, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    assert manifest["kind"] == "cache" and manifest["id"] == result["backup_id"]
    assert manifest["verification"]["ok"] is True and manifest["start_time"] <= manifest["stop_time"]
    for entry in manifest["files"]:
        path = os.path.join(backup_dir, entry["path"])
        with open(path, "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == entry["sha256"]
        assert os.path.getsize(path) == entry["size"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [n for n in os.listdir(cache_backup["dest"]) if n.startswith(".")]
    with gzip.open(os.path.join(backup_dir, "keys.jsonl.gz"), "rb") as handle:
        import base64  # pylint: disable=import-outside-toplevel
        saved = {base64.b64decode(json.loads(line)["k"]) for line in handle}
    one = region_redis(primary)
    assert saved == _critical_keys(one, primary["fediflow_redis_critical_patterns"])
    assert not [k for k in saved if k.startswith((b"cache:", b"rack:"))]  # noise is not backed up
    s3 = boto3.client("s3", endpoint_url=s3_endpoint(primary), region_name=primary["fediflow_region"],
                      aws_access_key_id=primary["fediflow_aws_access_key"],
                      aws_secret_access_key=primary["fediflow_aws_secret_key"])
    prefix = "%s/%s/" % (cache_backup["prefix"], result["backup_id"])
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=primary["fediflow_backup_bucket"], Prefix=prefix)["Contents"]}
    assert keys == {prefix + "manifest.json", prefix + "keys.jsonl.gz"}
    head = s3.head_object(Bucket=primary["fediflow_backup_bucket"], Key=prefix + "keys.jsonl.gz")
    assert head["ServerSideEncryption"] == "AES256"


def test_restore_keeps_type_value_ttl_and_check_mode_predicts(lab, cache_backup, scratch_redis):
    primary = lab["primary"]
    one = region_redis(primary)
    target = scratch_redis["client"]
    args = _restore_args(cache_backup, scratch_redis)
    predicted = module(MODULE, args, check_mode=True, diff=True)
    assert predicted["changed"] is True and target.dbsize() == 0
    assert len([k for k in predicted["diff"]["after"]["keys_written"] if not k.startswith("... and")]) == 200
    done = module(MODULE, args)
    assert not done.get("failed"), done.get("msg")
    assert done["changed"] is True
    assert done["counts"] == predicted["counts"] == predicted["diff"]["after"]["counts"]
    assert done["counts"]["restored"] == cache_backup["result"]["keys_saved"] and done["counts"]["failed"] == 0
    assert len(done["keys"]) == done["counts"]["total"]
    print("cache restore of %d keys: %.2fs %s" % (done["counts"]["restored"], done["duration_s"], done["phases"]))
    for key in _critical_keys(one, primary["fediflow_redis_critical_patterns"]):
        assert _value(target, key) == _value(one, key), key
        src_ttl, dst_ttl = one.pttl(key), target.pttl(key)
        if src_ttl < 0:
            assert dst_ttl == -1, key
        else:
            assert abs(src_ttl - dst_ttl) <= TTL_TOLERANCE_MS, (key, src_ttl, dst_ttl)
    # idempotent: nothing written the second time
    again = module(MODULE, args)
    assert again["changed"] is False and again["counts"]["restored"] == 0
    assert again["counts"]["already_present"] == again["counts"]["total"]


def test_present_newer_key_is_kept_unless_overwrite(lab, cache_backup, scratch_redis):
    target = scratch_redis["client"]
    args = _restore_args(cache_backup, scratch_redis)
    assert module(MODULE, args)["changed"] is True
    key = b"settings:flag:1"
    target.set(key, "newer")
    kept = module(MODULE, args)
    assert kept["changed"] is False and target.get(key) == b"newer"
    assert {"key": "settings:flag:1", "outcome": "already_present"} in kept["keys"]
    replaced = module(MODULE, dict(args, overwrite=True))
    assert replaced["changed"] is True and replaced["counts"]["replaced"] == 1
    assert target.get(key) == b"on"
    assert module(MODULE, dict(args, overwrite=True))["changed"] is False


def test_too_many_failed_keys_fail_the_step(cache_backup, scratch_redis):
    """A real fault: the target is out of memory (maxmemory 1 byte, noeviction): every RESTORE fails."""
    target = scratch_redis["client"]
    target.config_set("maxmemory-policy", "noeviction")
    target.config_set("maxmemory", "1")
    args = _restore_args(cache_backup, scratch_redis)
    failed = module(MODULE, args)
    assert failed.get("failed") is True
    assert "max_failed_share" in failed["msg"] and failed["counts"]["failed"] == failed["counts"]["total"]
    assert failed["keys"][0]["outcome"] == "failed" and "maxmemory" in failed["keys"][0]["error"]
    tolerated = module(MODULE, dict(args, max_failed_share=1.0))
    assert not tolerated.get("failed") and tolerated["changed"] is False
    target.config_set("maxmemory", "0")


def test_restore_from_s3_when_the_local_ledger_is_gone(lab, cache_backup, scratch_redis, tmp_path):
    primary = lab["primary"]
    args = _restore_args(cache_backup, scratch_redis, dest=str(tmp_path / "empty"),
                         s3_bucket=primary["fediflow_backup_bucket"], s3_prefix=cache_backup["prefix"], **_aws(primary))
    done = module(MODULE, args)
    assert not done.get("failed"), done.get("msg")
    assert done["backup_where"] == ["s3"] and done["backup_id"] == cache_backup["result"]["backup_id"]
    assert scratch_redis["client"].dbsize() == done["counts"]["restored"] > 0
    assert not os.listdir(tmp_path / "empty")  # the downloaded copy is removed


@pytest.mark.slow
def test_failover_warm_up_promotes_region_2_and_restores_after_a_flush(lab, cache_backup):
    """Region 2 is a replica: refused without promote_replica; with it, made writable, flushed,
    restored; then put back as a replica of region 1 so the lab stays home."""
    primary, standby = lab["primary"], lab["standby"]
    two = region_redis(standby)
    target = _conn(standby)
    args = _restore_args(cache_backup, target)
    refused = module(MODULE, args)
    assert refused.get("failed") and "replica" in refused["msg"] and "promote_replica" in refused["msg"]
    predicted = module(MODULE, dict(args, promote_replica=True), check_mode=True)
    assert predicted["promoted"] is True and two.info("replication")["role"] == "slave"
    try:
        done = module(MODULE, dict(args, promote_replica=True))
        assert not done.get("failed"), done.get("msg")
        assert done["promoted"] is True and two.info("replication")["role"] == "master"
        assert done["counts"]["already_present"] == done["counts"]["total"]  # it had replicated them
        two.flushdb()
        warm = module(MODULE, dict(args, promote_replica=True))
        assert warm["promoted"] is False and warm["counts"]["restored"] == warm["counts"]["total"] - warm["counts"]["expired"]
        assert two.dbsize() == warm["counts"]["restored"]
        print("warm-up of region 2 after a flush: %d keys in %.2fs" % (warm["counts"]["restored"], warm["duration_s"]))
    finally:
        two.replicaof(primary["fediflow_redis_host"], int(primary["fediflow_redis_port"]))
        assert poll(lambda: two.info("replication").get("master_link_status") == "up", 30)


@pytest.mark.parametrize("case", ["pattern", "down", "password", "share", "tls_ca"])
def test_bad_input_fails_clearly_and_writes_nothing(lab, tmp_path, case):
    primary = lab["primary"]
    dest = tmp_path / "dest"
    args = dict(_conn(primary), state="backup", dest=str(dest), patterns=["settings:*", "nothing-here:*"])
    if case == "pattern":
        expect = ["patterns", "'nothing-here:*'", "allow_empty_patterns"]
    elif case == "down":
        args.update(patterns=["settings:*"], redis_port=_free_port())
        expect = ["cannot connect to Redis", "redis_port"]
    elif case == "password":
        args.update(patterns=["settings:*"], redis_password="wrong-" + uuid.uuid4().hex)
        expect = ["redis_password"]
    elif case == "share":
        args.update(state="restore", max_failed_share=1.5)
        expect = ["max_failed_share"]
    else:
        args.update(redis_tls_ca_cert=str(tmp_path / "missing.pem"))
        expect = ["redis_tls_ca_cert"]
    result = module(MODULE, args)
    assert result.get("failed") is True
    assert all(text in result["msg"] for text in expect), result["msg"]
    assert args["redis_password"] not in result["msg"]
    assert not dest.exists()


def test_allow_empty_patterns_reports_them(lab, tmp_path):
    primary = lab["primary"]
    args = dict(_conn(primary), state="backup", dest=str(tmp_path / "dest"), patterns=["settings:*", "nothing-here:*"],
                allow_empty_patterns=True)
    predicted = module(MODULE, args, check_mode=True)
    assert predicted["changed"] is True and not (tmp_path / "dest").exists()
    done = module(MODULE, args)
    assert done["empty_patterns"] == ["nothing-here:*"] and done["keys_matched"]["settings:*"] == done["keys_saved"]
    shutil.rmtree(tmp_path / "dest")


@pytest.mark.slow
def test_backup_role_and_cache_warmup_role_after_a_failover(lab):
    """The roles as users run them: playbooks/backup.yml --tags backup_cache on the primary
    region, then playbooks/cache_warmup.yml on region 2 (still a replica: promoted first).
    Keys deleted on region 1 after the backup (the deletion replicates) come back in region 2."""
    from lab_fixtures import playbook  # pylint: disable=import-outside-toplevel
    primary, standby = lab["primary"], lab["standby"]
    one = region_redis(primary)
    two = region_redis(standby)
    playbook("backup.yml", "--tags", "backup_cache")
    ledger_dir = os.path.join(primary["fediflow_backup_dir"], "cache")
    manifests = [json.load(open(os.path.join(ledger_dir, d, "manifest.json"), encoding="utf-8"))
                 for d in os.listdir(ledger_dir) if not d.startswith(".")]
    newest = max(manifests, key=lambda m: m["stop_time"])
    assert newest["kind"] == "cache" and newest["region"] == primary["fediflow_region"]
    lost = sorted(one.scan_iter(match="session:*", count=1000))[:25]
    saved = {k: (_value(one, k), one.pttl(k)) for k in lost}
    saved_at = time.monotonic()
    one.delete(*lost)
    assert poll(lambda: two.exists(*lost) == 0, 10)
    try:
        proc, took = playbook("cache_warmup.yml")
        assert two.info("replication")["role"] == "master"
        elapsed_ms = (time.monotonic() - saved_at) * 1000
        for key in lost:
            assert _value(two, key) == saved[key][0], key
            assert abs(two.pttl(key) - (saved[key][1] - elapsed_ms)) <= TTL_TOLERANCE_MS, key
        flat = " ".join(proc.stdout.split())
        assert "promoted=True" in flat and re.search(r"restored'+: 25,", flat), proc.stdout[-2000:]
        print("cache_warmup playbook: %.1fs" % took)
    finally:
        # the lab goes home: region 1 gets its keys back (a restore into a primary), region 2 follows it again
        back = module(MODULE, {"state": "restore", "dest": ledger_dir, "backup_id": newest["id"], **_conn(primary)})
        assert not back.get("failed"), back.get("msg")
        two.replicaof(primary["fediflow_redis_host"], int(primary["fediflow_redis_port"]))
        assert poll(lambda: two.info("replication").get("master_link_status") == "up", 30)
    assert back["counts"]["restored"] == 25


def test_unreachable_s3_ledger_falls_back_to_the_local_one(lab, cache_backup, scratch_redis, tmp_path):
    """After a region outage its bucket may be gone (here: a bucket that does not exist in moto)."""
    primary = lab["primary"]
    gone = "no-such-bucket-%s" % uuid.uuid4().hex[:8]
    args = _restore_args(cache_backup, scratch_redis, s3_bucket=gone, **_aws(primary))
    done = module(MODULE, args)
    assert not done.get("failed"), done.get("msg")
    assert done["backup_where"] == ["local"] and gone in done["s3_error"]
    assert scratch_redis["client"].dbsize() == done["counts"]["restored"] > 0
    nothing_local = module(MODULE, dict(args, dest=str(tmp_path / "empty")))
    assert nothing_local.get("failed") and "s3_bucket '%s'" % gone in nothing_local["msg"]


def test_lab_redis_serves_tls_only_verified_against_the_lab_ca(lab, tmp_path):
    """Each region's Redis takes TLS only (no plain-text port), its replica link is TLS, and a client that
    trusts another CA is refused before it sends the password."""
    primary, standby = lab["primary"], lab["standby"]
    if not primary.get("fediflow_redis_tls"):
        pytest.skip("this inventory's Redis serves no TLS")
    plain = _client(primary["fediflow_redis_host"], primary["fediflow_redis_port"], primary["fediflow_redis_password"],
                    socket_timeout=3)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()  # a plain-text client gets no answer it understands
    assert region_redis(primary).ping() is True
    assert region_redis(standby).info("replication")["master_link_status"] == "up"  # replicated over TLS
    from tls_fixtures import make_pki  # pylint: disable=import-outside-toplevel
    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_pki()["other_ca"])
    result = module(MODULE, dict(_conn(primary), redis_tls_ca_cert=str(other), state="backup",
                                 dest=str(tmp_path / "dest"), patterns=["settings:*"]))
    assert result.get("failed") is True and "certificate verify failed" in result["msg"], result.get("msg")
    assert primary["fediflow_redis_password"] not in result["msg"] and not (tmp_path / "dest").exists()
