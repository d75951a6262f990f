# -*- coding: utf-8 -*-
"""The pure parts of redis_cache: input checks, record format, TTL arithmetic, the restore plan,
outcome counts, backup selection from the ledger, connection arguments. No Redis needed."""
from __future__ import annotations

import gzip
import os

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import rediscache, redisconn
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def _p(**kw):
    p = {"state": "backup", "dest": "/var/backups/cache", "patterns": ["session:*"], "max_failed_share": 0.05,
         "batch_size": 500, "scan_count": 1000, "retention_count": None, "retention_days": None, "backup_id": None,
         "s3_sse": "AES256", "redis_host": "127.0.0.1", "redis_port": 6379, "redis_db": 0,
         "redis_connect_timeout": 10, "redis_tls": False, "redis_tls_ca_cert": None}
    p.update(kw)
    return p


@pytest.mark.parametrize("change, message", [
    ({"state": "sync"}, "state must be backup or restore"),
    ({"dest": "relative"}, "dest must be an absolute directory path"),
    ({"patterns": []}, "patterns must list at least one key pattern"),
    ({"patterns": ["a:*", " "]}, "patterns must not contain an empty pattern"),
    ({"max_failed_share": 1.5}, "max_failed_share must be between 0 and 1"),
    ({"max_failed_share": -0.1}, "max_failed_share must be between 0 and 1"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"retention_count": 0}, "retention_count must be at least 1"),
    ({"backup_id": "../etc"}, "is not a backup id"),
    ({"redis_port": 0}, "redis_port must be between 1 and 65535"),
    ({"redis_host": ""}, "redis_host must not be empty"),
    ({"redis_db": -1}, "redis_db must be 0 or more"),
    ({"redis_connect_timeout": 0}, "redis_connect_timeout must be greater than 0"),
    ({"redis_tls_ca_cert": "/etc/ca.pem"}, "redis_tls_ca_cert is set but redis_tls is false"),
    ({"redis_tls": True, "redis_tls_ca_cert": "/nonexistent/ca.pem"}, "redis_tls_ca_cert '/nonexistent/ca.pem' does not exist"),
])
def test_bad_input_is_refused_naming_the_option(change, message):
    with pytest.raises(FediflowError, match=message.replace("(", r"\(").replace(".", r"\.")):
        rediscache.validate(_p(**change))


def test_restore_needs_no_patterns():
    rediscache.validate(_p(state="restore", patterns=[]))


def test_record_round_trip_keeps_binary_keys_and_payloads():
    key, payload = b"session:\xff\x00bin", b"\x00\x0bpayload\xfe"
    line = rediscache.encode_record(key, "string", 5000, 1700000000000, payload, 3, digest="abc")
    record = rediscache.decode_record(line)
    assert record == {"key": key, "type": "string", "pttl": 5000, "at_ms": 1700000000000, "dump": payload,
                      "pattern": 3, "digest": "abc"}
    assert rediscache.key_text(key) == "session:\\xff\x00bin"


def _rec(key, pttl=-1, at_ms=1000, dump=b"v1", digest=None):
    return {"key": key, "type": "string", "pttl": pttl, "at_ms": at_ms, "dump": dump, "digest": digest}


@pytest.mark.parametrize("pttl, now, expected", [
    (-1, 10 ** 9, 0),        # no TTL: restored without expiry
    (60000, 1000, 60000),    # restored at the instant of the backup: the full TTL
    (60000, 21000, 40000),   # 20 s later: 40 s left
    (60000, 61000, None),    # exactly run out: expired
    (60000, 99000, None),
    (60000, 500, 60000),     # a clock behind the backup never adds TTL
])
def test_remaining_ttl_subtracts_the_time_since_the_backup(pttl, now, expected):
    assert rediscache.remaining_ttl(_rec(b"k", pttl=pttl, at_ms=1000), now) == expected


def test_plan_keeps_present_keys_and_skips_expired_ones():
    records = [_rec(b"absent"), _rec(b"present"), _rec(b"gone", pttl=100), _rec(b"ttl", pttl=50000)]
    plan = rediscache.plan_restore(records, {b"absent": None, b"present": True, b"ttl": None}, 11000)
    assert [(s["record"]["key"], s["action"], s["ttl_ms"]) for s in plan] == [
        (b"absent", "restored", 0), (b"present", "already_present", 0), (b"gone", "expired", None),
        (b"ttl", "restored", 40000)]


def test_overwrite_replaces_only_a_different_value():
    records = [_rec(b"same"), _rec(b"other"), _rec(b"hash", dump=b"d1", digest="x")]
    current = {b"same": {"dump": b"v1", "digest": None}, b"other": {"dump": b"v2", "digest": None},
               b"hash": {"dump": b"d2", "digest": "x"}}  # same content, other hash-table order
    actions = [s["action"] for s in rediscache.plan_restore(records, current, 1000, overwrite=True)]
    assert actions == ["already_present", "replaced", "already_present"]
    without = [s["action"] for s in rediscache.plan_restore(records, current, 1000, overwrite=False)]
    assert without == ["already_present"] * 3


def test_value_digest_ignores_order_and_tells_contents_apart():
    assert rediscache.value_digest("hash", {b"a": b"1", b"b": b"2"}) == rediscache.value_digest("hash", {b"b": b"2", b"a": b"1"})
    assert rediscache.value_digest("hash", {b"a": b"1"}) != rediscache.value_digest("hash", {b"a": b"2"})
    assert rediscache.value_digest("set", {b"x", b"y"}) != rediscache.value_digest("hash", {b"x": b"y"})
    assert rediscache.value_digest("string", b"x") is None


def test_counts_and_failed_share():
    counts = rediscache.summarize(["restored", "restored", "failed", "expired"])
    assert counts == {"restored": 2, "replaced": 0, "already_present": 0, "expired": 1, "failed": 1, "total": 4}
    assert rediscache.failed_share(counts) == 0.25
    assert rediscache.failed_share(rediscache.summarize([])) == 0.0


def test_diff_lists_written_keys_up_to_a_limit():
    keys = [{"key": "k%d" % i, "outcome": "restored"} for i in range(rediscache.DIFF_KEY_LIMIT + 5)]
    keys.append({"key": "kept", "outcome": "already_present"})
    diff = rediscache.restore_diff(keys, promote=True)
    assert diff["before"]["role"] == "replica" and diff["after"]["role"] == "primary"
    assert len(diff["after"]["keys_written"]) == rediscache.DIFF_KEY_LIMIT + 1
    assert diff["after"]["keys_written"][-1] == "... and 5 more" and "kept" not in diff["after"]["keys_written"]
    assert diff["after"]["counts"]["restored"] == rediscache.DIFF_KEY_LIMIT + 5 and diff["after"]["counts"]["total"] == len(keys)


def _m(backup_id, stop, ok=True, kind="cache"):
    return {"id": backup_id, "kind": kind, "stop_time": stop, "verification": {"ok": ok}}


def test_newest_verified_cache_backup_is_chosen():
    manifests = [_m("a", "2026-11-26T01:00:00Z"), _m("b", "2026-11-26T03:00:00Z", ok=False),
                 _m("c", "2026-11-26T02:00:00Z"), _m("d", "2026-11-26T04:00:00Z", kind="logical")]
    assert rediscache.newest_backup(manifests)["id"] == "c"
    assert rediscache.newest_backup(manifests, "a")["id"] == "a"
    with pytest.raises(FediflowError, match="backup_id 'd' is not a cache backup"):
        rediscache.newest_backup(manifests, "d")
    with pytest.raises(FediflowError, match="no verified cache backup"):
        rediscache.newest_backup([_m("b", "x", ok=False)])


def test_empty_patterns_fail_naming_them_unless_allowed():
    with pytest.raises(FediflowError, match="'trends:\\*' matched no key"):
        rediscache._check_patterns({"session:*": 3, "trends:*": 0}, False)  # pylint: disable=protected-access
    assert rediscache._check_patterns({"session:*": 3, "trends:*": 0}, True) == ["trends:*"]  # pylint: disable=protected-access


def test_verify_files_refuses_a_changed_file(tmp_path):
    path = tmp_path / rediscache.DATA_FILE
    with gzip.open(path, "wb") as handle:
        handle.write((rediscache.encode_record(b"k", "string", -1, 1, b"v", 0) + "\n").encode())
    from ansible_collections.fediflow.dr.plugins.module_utils import ledger  # pylint: disable=import-outside-toplevel
    manifest = {"id": "x", "files": ledger.file_entries(str(tmp_path))}
    rediscache.verify_files(str(tmp_path), manifest)
    assert [r["key"] for r in rediscache.read_records(str(path))] == [b"k"]
    with open(path, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(FediflowError, match="does not match its manifest checksum"):
        rediscache.verify_files(str(tmp_path), manifest)
    os.unlink(path)
    with pytest.raises(FediflowError, match="is missing"):
        rediscache.verify_files(str(tmp_path), manifest)


def test_client_kwargs_tls_and_secrets():
    kwargs = redisconn.client_kwargs(_p(redis_password="s3cret", redis_user="backup", redis_tls=True,
                                        redis_tls_validate_certs=False))
    assert kwargs["password"] == "s3cret" and kwargs["username"] == "backup"
    assert kwargs["ssl"] is True and kwargs["ssl_cert_reqs"] == "none"
    plain = redisconn.client_kwargs(_p())
    assert "ssl" not in plain and plain["password"] is None
    assert redisconn.describe(_p(redis_password="s3cret")) == "127.0.0.1:6379/0"
