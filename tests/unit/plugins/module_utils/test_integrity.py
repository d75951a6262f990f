# -*- coding: utf-8 -*-
"""integrity_check's comparisons as plain data: row counts against the ledger, sequences, pg_hba
lines, file modes, bucket settings, the secret scan, which checks run, bad input, and one broken
check not hiding the others. The checks against PostgreSQL, S3, Route53 and the Kubernetes double
run in the integration tier (tests/integration/test_validate.py)."""
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import integrity, postgres
from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError


def _params(**kw):
    params = {k: v.get("default") for k, v in postgres.postgres_common_argument_spec().items()}
    params.update({k: None for k in aws_common_argument_spec()})
    params.update(checks=[], target=None, fail_on_error=True, row_count_tolerance=0.0, amcheck_max_indexes=10,
                  ledger_dirs=[], ledger_s3=[], media_s3_bucket=None, media_s3_prefix="", media_deep=False,
                  app_configmaps=[], dns_zone=None, dns_record=None, dns_type="A", dns_expected=[], backup_paths=[],
                  buckets=[], report_dir=None, secrets={})
    params.update(kw)
    return params


# ---------------------------------------------------------------- row counts

def test_row_counts_equal_pass_and_growth_is_allowed():
    ok, rows = integrity.compare_row_counts({"a": 10, "b": 5}, {"a": 10, "b": 50, "new": 1}, 0.0)
    assert ok and [r["table"] for r in rows] == ["a", "b"]


def test_a_truncated_table_fails_whatever_the_tolerance_below_one():
    ok, rows = integrity.compare_row_counts({"follows": 2000, "accounts": 200}, {"follows": 0, "accounts": 200}, 0.5)
    assert not ok
    assert [r for r in rows if not r["ok"]] == [
        {"table": "follows", "ledger": 2000, "actual": 0, "allowed_missing": 1000, "ok": False}]


@pytest.mark.parametrize("actual, tolerance, ok", [(99, 0.01, True), (98, 0.01, False), (95, 0.05, True), (99, 0.0, False)])
def test_tolerance_is_a_share_of_the_ledger_rounded_down(actual, tolerance, ok):
    assert integrity.compare_row_counts({"t": 100}, {"t": actual}, tolerance)[0] is ok


def test_a_table_gone_fails():
    ok, rows = integrity.compare_row_counts({"t": 0}, {}, 0.5)
    assert not ok and rows[0]["actual"] is None


def test_newest_counted_backup_ignores_unverified_physical_uncounted_and_other_databases():
    def manifest(backup_id, stop, kind="logical", ok=True, counts=True, db="fediflow"):
        return {"id": backup_id, "kind": kind, "stop_time": stop, "verification": {"ok": ok},
                "source": {"database": db, "row_counts": {"t": 1} if counts else None}}
    ledger = [manifest("a", "2026-01-01T00:00:00Z"), manifest("b", "2026-01-03T00:00:00Z", ok=False),
              manifest("c", "2026-01-04T00:00:00Z", kind="physical"), manifest("d", "2026-01-05T00:00:00Z", counts=False),
              manifest("e", "2026-01-06T00:00:00Z", db="other"), manifest("f", "2026-01-02T00:00:00Z")]
    assert integrity.newest_counted_backup(ledger, "fediflow")["id"] == "f"
    assert integrity.newest_counted_backup(ledger, "nope") is None


# ---------------------------------------------------------------- sequences

def test_sequences_behind_their_column_fail_empty_tables_and_unused_sequences_do_not():
    rows = [{"sequence": "ok", "last_value": 10, "increment": 1, "max_value": 10},
            {"sequence": "behind", "last_value": 1, "increment": 1, "max_value": 200},
            {"sequence": "empty", "last_value": None, "increment": 1, "max_value": None},
            {"sequence": "never_called", "last_value": None, "increment": 1, "max_value": 3}]
    ok, out = integrity.sequence_verdicts(rows)
    assert not ok
    assert [r["sequence"] for r in out if not r["ok"]] == ["behind", "never_called"]


# ---------------------------------------------------------------- pg_hba

def _rule(line, kind, address, method, netmask=None, error=None):
    return {"line_number": line, "type": kind, "database": "all", "user_name": "all", "address": address,
            "netmask": netmask, "auth_method": method, "error": error}


def test_trust_for_any_address_fails_socket_trust_passes_loopback_trust_is_a_note():
    ok, offending, notes = integrity.hba_verdicts([
        _rule(1, "local", None, "trust"), _rule(2, "host", "127.0.0.1", "trust", "255.255.255.255"),
        _rule(3, "host", "::1", "trust", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        _rule(4, "host", "0.0.0.0", "trust", "0.0.0.0"), _rule(5, "hostssl", "10.0.0.0", "scram-sha-256", "255.0.0.0")])
    assert not ok
    assert [o["line"] for o in offending] == [4]
    assert [n["line"] for n in notes] == [2, 3]


@pytest.mark.parametrize("address, netmask", [("samehost", None), ("samenet", None), ("all", None),
                                              ("db.example", None), ("127.0.0.0", "128.0.0.0"), ("10.1.2.3/32", None)])
def test_trust_for_anything_but_loopback_fails(address, netmask):
    assert not integrity.hba_verdicts([_rule(1, "host", address, "trust", netmask)])[0]


def test_a_line_postgres_cannot_parse_fails():
    ok, offending, _notes = integrity.hba_verdicts([_rule(7, None, None, None, error="invalid authentication method")])
    assert not ok and "cannot be parsed" in offending[0]["why"]


# ---------------------------------------------------------------- files, buckets, secrets

def test_loose_files_are_those_with_any_group_or_other_bit():
    entries = [("/b/a", 0o100600), ("/b/b", 0o100400), ("/b/c", 0o100640), ("/b/d", 0o100604)]
    assert integrity.loose_files(entries) == [{"path": "/b/c", "mode": "0640"}, {"path": "/b/d", "mode": "0604"}]


ENCRYPTED = [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
BLOCKED = {k: True for k in integrity.BLOCK_KEYS}
OWNER = [{"Grantee": {"Type": "CanonicalUser", "ID": "x"}, "Permission": "FULL_CONTROL"}]


def test_an_encrypted_blocked_private_bucket_is_fine():
    assert integrity.bucket_verdict(ENCRYPTED, BLOCKED, OWNER) == []


def test_bucket_problems_are_each_named():
    public = OWNER + [{"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
                       "Permission": "READ"}]
    assert integrity.bucket_verdict(None, None, public) == [
        "no default encryption", "no public access block", "public ACL grant: AllUsers READ"]
    assert integrity.bucket_verdict(ENCRYPTED, dict(BLOCKED, BlockPublicPolicy=False), OWNER) == [
        "public access block off: BlockPublicPolicy"]


def test_secrets_are_found_by_name_and_short_values_are_not_scanned():
    usable, skipped = integrity.usable_secrets({"pw": "hunter22", "short": "ab", "empty": "", "none": None})
    assert usable == {"pw": "hunter22"} and skipped == ["short"]
    assert integrity.find_secrets("the password is hunter22.", usable) == ["pw"]
    assert integrity.find_secrets("nothing here", usable) == []


def test_report_scan_names_the_file_and_variable_never_the_value(tmp_path):
    (tmp_path / "ok.md").write_text("all fine\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "leak.json").write_text('{"x": "s3cr3t-value"}')
    result = integrity.run(_params(report_dir=str(tmp_path), secrets={"vault_pw": "s3cr3t-value"}, fail_on_error=False))
    verdict = result["checks"][0]
    assert not result["ok"] and verdict["name"] == "report_secrets" and verdict["category"] == "security"
    assert verdict["details"]["found"] == [{"file": str(tmp_path / "sub" / "leak.json"), "variables": ["vault_pw"]}]
    assert "s3cr3t-value" not in repr(result)


def test_file_modes_check_lists_missing_paths_without_failing(tmp_path):
    (tmp_path / "dump").write_text("x")
    (tmp_path / "dump").chmod(0o600)
    result = integrity.run(_params(backup_paths=[str(tmp_path), str(tmp_path / "absent")]))
    verdict = result["checks"][0]
    assert result["ok"] and verdict["details"]["files"] == 1
    assert verdict["details"]["not_present"] == [str(tmp_path / "absent")]
    assert verdict["start"].endswith("Z") and verdict["duration_s"] >= 0


# ---------------------------------------------------------------- which checks, bad input, failures

def test_default_runs_every_check_whose_inputs_are_given():
    assert integrity.validate(_params(login_host="db", buckets=["b"])) == [
        "db_amcheck", "db_sequences", "pg_hba_trust", "bucket_security"]
    assert integrity.validate(_params(login_host="db", ledger_dirs=["/l"]))[:3] == [
        "db_amcheck", "db_sequences", "db_row_counts"]


@pytest.mark.parametrize("kw, message", [
    ({"row_count_tolerance": 1.0, "buckets": ["b"]}, "row_count_tolerance must be a fraction"),
    ({"row_count_tolerance": -0.1, "buckets": ["b"]}, "row_count_tolerance must be a fraction"),
    ({"amcheck_max_indexes": -1, "buckets": ["b"]}, "amcheck_max_indexes must be >= 0"),
    ({}, "nothing to check"),
    ({"checks": ["db_row_counts"], "login_host": "db"}, "checks lists db_row_counts, which needs"),
    ({"checks": ["bucket_security"]}, "checks lists bucket_security, which needs buckets"),
    ({"backup_paths": ["relative/dir"]}, "backup_paths must hold absolute paths"),
    ({"app_configmaps": [{"region": "r"}]}, "app_configmaps[0] must be a dict with region and expected"),
    ({"ledger_s3": [{"prefix": "p"}], "login_host": "db"}, "ledger_s3[0] must be a dict with bucket"),
    ({"dns_zone": "z.", "dns_record": "a.z.", "dns_expected": ["not-an-ip"]}, "dns_expected"),
    ({"login_host": "db", "login_port": 0}, "login_port must be between 1 and 65535"),
    ({"buckets": ["b"], "s3_endpoints": {"b": "198.18.0.11:15001"}}, "s3_endpoints.b must be an http(s) URL"),
])
def test_bad_input_is_refused_naming_the_option(kw, message):
    with pytest.raises(FediflowError) as err:
        integrity.validate(_params(**kw))
    assert message in err.value.message


def test_each_bucket_is_reached_at_its_own_endpoint_else_at_endpoint_url():
    p = _params(endpoint_url="http://global:1", s3_endpoints={"b1": "http://r1:2"})
    assert integrity.s3_params(p, "b1")["endpoint_url"] == "http://r1:2"
    assert integrity.s3_params(p, "b2")["endpoint_url"] == "http://global:1"
    assert p["endpoint_url"] == "http://global:1"  # the caller's options are not changed


def test_a_check_that_cannot_run_fails_alone_and_fail_on_error_raises_after_all(tmp_path, monkeypatch):
    def broken(_p):
        raise RuntimeError("boom\nmore")
    monkeypatch.setattr(integrity, "_buckets", broken)
    params = _params(buckets=["b"], report_dir=str(tmp_path), secrets={})
    result = integrity.run(dict(params, fail_on_error=False))
    assert [(c["name"], c["ok"]) for c in result["checks"]] == [("bucket_security", False), ("report_secrets", True)]
    assert result["checks"][0]["details"]["error"] == "RuntimeError: boom"
    assert result["failed_checks"] == ["bucket_security"] and result["changed"] is False
    with pytest.raises(FediflowError) as err:
        integrity.run(params)
    assert err.value.message == "1 of 2 integrity checks failed: bucket_security"
    assert len(err.value.details["result"]["checks"]) == 2


def test_summary_names_failed_checks_with_their_target():
    checks = [integrity.check("pg_hba_trust", False, {}, target="us-east-1"), integrity.check("db_sequences", True, {})]
    assert integrity.summarize(checks) == (False, ["pg_hba_trust (us-east-1)"],
                                           "1 of 2 integrity checks failed: pg_hba_trust (us-east-1)")
