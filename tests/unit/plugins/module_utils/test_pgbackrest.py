"""pgBackRest configuration and info parsing (module_utils/pgbackrest.py). The info fixture is real output of
pgBackRest 2.45 (Debian's) for a stanza with a full and an incremental backup in repo1 and a full in repo2."""
import configparser
import copy
import json
import os
import stat
from pathlib import Path

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest, pgbackrest_run
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError
from ansible_collections.fediflow.dr.plugins.module_utils.untrusted import Untrusted

INFO = (Path(__file__).parent / "fixtures" / "pgbackrest_info_2.45.json").read_text()
REPOS = [{"name": "us-east-1", "bucket": "b1", "prefix": "", "region": "us-east-1", "endpoint_url": "https://198.18.0.11:15011"},
         {"name": "eu-west-1", "bucket": "b2", "prefix": "x/y", "region": "eu-west-1", "endpoint_url": None}]
IDENTITY = {"access_key": "AKIAWAL", "secret_key": "wal-secret"}
SETTINGS = {"spool_path": "/var/spool/pgbackrest", "log_path": "/var/log/pgbackrest", "lock_path": "/tmp/pgbackrest",
            "archive_async": True, "process_max": 2, "compress_type": "lz4", "ca_file": "/etc/ssl/lab-ca.crt"}
PG = {"data_dir": "/var/lib/postgresql/15/main", "port": 5432, "socket_dir": "/run/postgresql"}


def _parse(text):
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(text)
    return cfg


def test_config_names_every_repository_with_its_identity_and_the_stanza():
    cfg = _parse(pgbackrest.render_config("fediflow", PG, REPOS, IDENTITY, SETTINGS))
    g = cfg["global"]
    assert g["repo1-type"] == g["repo2-type"] == "s3"
    assert (g["repo1-s3-bucket"], g["repo1-s3-endpoint"], g["repo1-storage-port"], g["repo1-s3-uri-style"]) == \
        ("b1", "198.18.0.11", "15011", "path")
    assert g["repo2-s3-endpoint"] == "s3.eu-west-1.amazonaws.com" and "repo2-s3-uri-style" not in g
    assert (g["repo1-path"], g["repo2-path"]) == ("/pgbackrest", "/x/y/pgbackrest")
    assert g["repo1-s3-key"] == g["repo2-s3-key"] == "AKIAWAL" and g["repo2-s3-key-secret"] == "wal-secret"
    assert g["repo1-storage-ca-file"] == "/etc/ssl/lab-ca.crt"
    assert (g["archive-async"], g["spool-path"]) == ("y", "/var/spool/pgbackrest")
    assert dict(cfg["fediflow"]) == {"pg1-path": PG["data_dir"], "pg1-port": "5432", "pg1-socket-path": "/run/postgresql"}


def test_without_keys_the_instance_role_serves():
    g = _parse(pgbackrest.render_config("s", PG, REPOS[:1], {}, SETTINGS))["global"]
    assert g["repo1-s3-key-type"] == "auto" and "repo1-s3-key" not in g


@pytest.mark.parametrize("change, option", [
    (lambda r, i, s, p: r[0].update(endpoint_url="http://198.18.0.11:15001"), "endpoint_url"),
    (lambda r, i, s, p: r[0].update(endpoint_url="https://h/path"), "endpoint_url"),
    (lambda r, i, s, p: r[0].update(region=None), "region"),
    (lambda r, i, s, p: r[0].update(bucket="b\nrepo1-path=/elsewhere"), "bucket"),
    (lambda r, i, s, p: i.update(secret_key="s\nrepo1-s3-key=x"), "secret_key"),
    (lambda r, i, s, p: i.update(secret_key=None), "secret key"),
    (lambda r, i, s, p: s.update(spool_path="relative"), "spool_path"),
    (lambda r, i, s, p: s.update(log_path="/var/../etc"), "log_path"),
    (lambda r, i, s, p: s.update(compress_type="rar"), "compress_type"),
    (lambda r, i, s, p: s.update(process_max=0), "process_max"),
    (lambda r, i, s, p: p.update(data_dir="pgdata"), "pg.data_dir"),
    (lambda r, i, s, p: r.extend([dict(REPOS[1], name=n) for n in "abc"]), "at most 4"),
])
def test_bad_input_is_refused_naming_the_option(change, option):
    repos, ident, settings, pg = copy.deepcopy(REPOS), dict(IDENTITY), dict(SETTINGS), dict(PG)
    change(repos, ident, settings, pg)
    with pytest.raises(FediflowError, match=option):
        pgbackrest.render_config("fediflow", pg, repos, ident, settings)


@pytest.mark.parametrize("stanza", ["", "a b", "../x", "x\n[global]", "-x", "a" * 64])
def test_a_bad_stanza_is_refused(stanza):
    with pytest.raises(FediflowError, match="stanza"):
        pgbackrest.render_config(stanza, PG, REPOS, IDENTITY, SETTINGS)


def test_secrets_are_redacted_and_never_in_the_commands():
    text = pgbackrest.render_config("fediflow", PG, REPOS, dict(IDENTITY, secret_key="s3cr3t"),
                                    dict(SETTINGS, cipher_pass="c1pher"))
    shown = pgbackrest.redact(text)
    assert "s3cr3t" in text and "c1pher" in text
    assert "s3cr3t" not in shown and "c1pher" not in shown and "AKIAWAL" not in shown
    assert "repo1-s3-key-secret=********" in shown and "repo1-cipher-pass=********" in shown
    cmd = pgbackrest.archive_command("/usr/bin/pgbackrest", "/etc/pgbackrest/wal.conf", "fediflow")
    assert cmd == "/usr/bin/pgbackrest --config=/etc/pgbackrest/wal.conf --stanza=fediflow archive-push %p"
    assert "archive-get %f \"%p\"" in pgbackrest.restore_command("/usr/bin/pgbackrest", "/etc/pgbackrest/wal.conf", "fediflow")
    argv = pgbackrest.command("/usr/bin/pgbackrest", "/etc/pgbackrest/b.conf", "fediflow", "backup", "--type=incr", "--repo=2")
    assert argv == ["/usr/bin/pgbackrest", "--config=/etc/pgbackrest/b.conf", "--stanza=fediflow", "--type=incr", "--repo=2",
                    "backup"]


def test_info_of_real_pgbackrest_becomes_ledger_entries():
    info = pgbackrest.parse_info(INFO, "exp", {1: "us-east-1", 2: "eu-west-1"})
    entries = info["backups"]
    assert info["repositories"] == {"us-east-1": {"ok": True, "code": 0, "message": "ok"},
                                    "eu-west-1": {"ok": True, "code": 0, "message": "ok"}}
    assert [(e["id"], e["type"], e["repositories"], e["prior"]) for e in entries] == [
        ("20261207-173553F", "full", ["us-east-1"], None),
        ("20261207-173553F_20261207-173607I", "incr", ["us-east-1"], "20261207-173553F"),
        ("20261207-173611F", "full", ["eu-west-1"], None)]
    full, incr = entries[0], entries[1]
    assert full["start_lsn"] == "0/6000028" and full["stop_wal"] == "000000010000000000000006"
    assert incr["repo_delta"] < full["repo_delta"] and incr["references"] == ["20261207-173553F"]
    assert pgbackrest.newest(entries, "full")["id"] == "20261207-173611F"
    other = pgbackrest.parse_info(INFO, "another-stanza", {1: "a", 2: "b"})
    assert other["backups"] == [] and not other["repositories"]["a"]["ok"]


def test_ledger_fields_and_the_proof_read_from_annotations():
    """The entries carry what the ledger's readers read of a native manifest (kind, stop_time, the timeline, the
    verification); the proof is the backup's fediflow-verified annotation, exactly as this collection writes it."""
    doc = json.loads(INFO)
    stamp = "2026-12-07T18:00:00Z"
    doc[0]["backup"][0]["annotation"] = {"fediflow-verified": "restore", "fediflow-verified-at": stamp}
    doc[0]["backup"][1]["annotation"] = {"fediflow-verified": "failed", "fediflow-verified-at": stamp}
    doc[0]["backup"][2]["annotation"] = {"fediflow-verified": "restore", "fediflow-verified-at": "yesterday"}
    entries = pgbackrest.parse_info(json.dumps(doc), "exp", {1: "us-east-1", 2: "eu-west-1"})["backups"]
    full, incr, other = entries
    assert full["kind"] == "physical" and full["source"] == {"timeline": 1}
    assert full["stop_time"] == pgbackrest.iso(doc[0]["backup"][0]["timestamp"]["stop"])
    assert full["verification"] == {"ok": True, "level": "restore", "at": stamp, "detail": ""}
    assert not incr["verification"]["ok"] and "failed" in incr["verification"]["detail"]
    assert not other["verification"]["ok"] and "malformed" in other["verification"]["detail"]
    plain = pgbackrest.parse_info(INFO, "exp", {1: "us-east-1", 2: "eu-west-1"})["backups"][0]
    assert plain["verification"]["ok"] is False     # no annotation: no proof
    doc[0]["backup"][0]["error"] = True              # pgBackRest found page checksum errors: never a proof
    entries = pgbackrest.parse_info(json.dumps(doc), "exp", {1: "us-east-1", 2: "eu-west-1"})["backups"]
    assert not entries[0]["verification"]["ok"] and "checksum" in entries[0]["verification"]["detail"]
    doc[0]["backup"][0]["annotation"] = ["fediflow-verified=restore"]
    entries = pgbackrest.parse_info(json.dumps(doc), "exp", {1: "us-east-1", 2: "eu-west-1"})["backups"]
    assert not entries[0]["verification"]["ok"]


def test_verification_annotations_round_trip():
    opts = pgbackrest.verification_annotations("list", True, 1796666400)
    assert opts == ["--annotation=fediflow-verified=list", "--annotation=fediflow-verified-at=2026-12-07T18:00:00Z"]
    assert pgbackrest.verification_annotations("restore", False, 0)[0] == "--annotation=fediflow-verified=failed"
    with pytest.raises(FediflowError, match="level"):
        pgbackrest.verification_annotations("checksum", True, 0)


def test_a_repository_info_could_not_read_is_reported_not_taken_for_empty():
    """pgBackRest's info exits 0 with status 99 per repository it could not read (seen on the lab: a 403)."""
    doc = json.loads(INFO)
    doc[0]["repo"][1]["status"] = {"code": 99, "message": "[ProtocolError] HTTP request failed with 403 (FORBIDDEN)"}
    doc[0]["backup"] = [b for b in doc[0]["backup"] if b["database"]["repo-key"] == 1]
    info = pgbackrest.parse_info(json.dumps(doc), "exp", {1: "us-east-1", 2: "eu-west-1"})
    assert info["repositories"]["us-east-1"]["ok"] and not info["repositories"]["eu-west-1"]["ok"]
    assert "403" in info["repositories"]["eu-west-1"]["message"] and len(info["backups"]) == 2


def _hostile(mutate):
    doc = json.loads(INFO)
    mutate(doc[0]["backup"][1])
    return json.dumps(doc)


@pytest.mark.parametrize("mutate, what", [
    (lambda b: b.update(label="../../etc"), "label"),
    (lambda b: b.update(label="20261207-173553F_20261207-173607X"), "label"),
    (lambda b: b.update(type="full"), "does not match its label"),
    (lambda b: b.update(type="snapshot"), "type"),
    (lambda b: b.update(prior=None), "without a prior"),
    (lambda b: b.update(reference=["x; rm -rf /"]), "reference"),
    (lambda b: b["lsn"].update(stop="0/6000C70; DROP"), "lsn.stop"),
    (lambda b: b["archive"].update(start="../000000010000000000000008"), "archive.start"),
    (lambda b: b["info"].update(size=-1), "info.size"),
    (lambda b: b["info"].update(size=True), "info.size"),
    (lambda b: b["timestamp"].update(stop=1), "stopped before it started"),
    (lambda b: b["database"].update(**{"repo-key": 7}), "repository key 7"),
    (lambda b: b.update(error="no"), "error"),
    (lambda b: b.update(lsn=[]), "lsn must be an object"),
])
def test_hostile_info_is_refused(mutate, what):
    with pytest.raises(Untrusted, match=what):
        pgbackrest.parse_info(_hostile(mutate), "exp", {1: "us-east-1", 2: "eu-west-1"})


@pytest.mark.parametrize("text, what", [("not json", "not valid JSON"), ("{}", "not a list"),
                                        ("x" * (pgbackrest.MAX_INFO_BYTES + 1), "more than")])
def test_info_that_is_no_info_is_refused(text, what):
    with pytest.raises(Untrusted, match=what):
        pgbackrest.parse_info(text, "exp", {1: "a"})


def test_one_label_naming_two_backups_is_refused():
    doc = json.loads(INFO)
    twin = copy.deepcopy(doc[0]["backup"][0])
    twin["database"]["repo-key"] = 2
    twin["lsn"]["stop"] = "0/7000000"
    doc[0]["backup"].append(twin)
    with pytest.raises(Untrusted, match="two different backups"):
        pgbackrest.parse_info(json.dumps(doc), "exp", {1: "a", 2: "b"})
    twin["lsn"]["stop"] = doc[0]["backup"][0]["lsn"]["stop"]   # the same backup in both: one entry, two repositories
    entries = pgbackrest.parse_info(json.dumps(doc), "exp", {1: "a", 2: "b"})["backups"]
    assert entries[0]["repositories"] == ["a", "b"]


def _params(tmp_path, **over):
    p = {"path": str(tmp_path / "etc" / "pgbackrest.conf"), "owner": _me(), "stanza": "fediflow", "pg": dict(PG),
         "repositories": copy.deepcopy(REPOS), "access_key": "AKIAWAL", "secret_key": "wal-secret", "ca_file": None,
         "archive_async": True, "spool_path": str(tmp_path / "spool"), "log_path": str(tmp_path / "log"),
         "lock_path": str(tmp_path / "lock"), "process_max": 2, "compress_type": "lz4", "compress_level": None,
         "cipher_pass": None, "archive_push_queue_max": None, "archive_get_timeout": 5}
    p.update(over)
    return p


def _me():
    import pwd  # pylint: disable=import-outside-toplevel
    return pwd.getpwuid(os.getuid()).pw_name


def test_configure_writes_a_private_file_once_and_check_mode_predicts(tmp_path):
    p = _params(tmp_path)
    predicted = pgbackrest_run.configure(p, check_mode=True)
    assert predicted["changed"] and not os.path.exists(p["path"]) and len(predicted["directories"]) == 4
    done = pgbackrest_run.configure(p, check_mode=False)
    assert done["changed"] and stat.S_IMODE(os.stat(p["path"]).st_mode) == 0o600
    assert all(stat.S_IMODE(os.stat(d).st_mode) == 0o750 for d in done["directories"])
    assert "wal-secret" not in json.dumps(done) and "wal-secret" in Path(p["path"]).read_text()
    assert done["archive_command"].endswith("--config=%s --stanza=fediflow archive-push %%p" % p["path"])
    again = pgbackrest_run.configure(p, check_mode=False)
    assert not again["changed"] and again["diff"]["before"] == again["diff"]["after"]
    os.chmod(p["path"], 0o644)
    assert pgbackrest_run.configure(p, check_mode=False)["changed"]
    assert stat.S_IMODE(os.stat(p["path"]).st_mode) == 0o600


def test_configure_refuses_before_writing_anything(tmp_path):
    p = _params(tmp_path, repositories=[dict(REPOS[0], endpoint_url="http://198.18.0.11:15001")])
    with pytest.raises(FediflowError, match="endpoint_url"):
        pgbackrest_run.configure(p, check_mode=False)
    assert not any(tmp_path.iterdir())
    link = tmp_path / "link.conf"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FediflowError, match="symbolic link"):
        pgbackrest_run.configure(_params(tmp_path, path=str(link)), check_mode=False)
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(FediflowError, match="owner"):
        pgbackrest_run.configure(_params(tmp_path, owner="no-such-user-x"), check_mode=False)


def _backup_params(tmp_path, **over):
    config = tmp_path / "backup.conf"
    config.write_text("[global]\n")
    p = {"config": str(config), "stanza": "fediflow", "type": "incr", "repositories": ["us-east-1", "eu-west-1"],
         "required_copies": 0, "os_user": _me(), "binary": str(tmp_path / "no-pgbackrest-here"), "timeout": 60,
         "verify": "list"}
    p.update(over)
    return p


@pytest.mark.parametrize("over, option", [
    ({"stanza": "../x"}, "stanza"),
    ({"config": "/nonexistent/backup.conf"}, "config"),
    ({"config": "relative.conf"}, "config"),
    ({"repositories": []}, "repositories"),
    ({"repositories": ["a", "a"]}, "repositories"),
    ({"repositories": ["a b"]}, "repositories"),
    ({"required_copies": 3}, "required_copies"),
    ({"required_copies": -1}, "required_copies"),
    ({"timeout": 0}, "timeout"),
    ({"verify": "restore", "login_port": 70000}, "login_port"),
])
def test_backup_refuses_bad_input_before_running_anything(tmp_path, over, option):
    """The binary does not exist: a refusal that got as far as running pgBackRest would say "program not found"."""
    with pytest.raises(FediflowError, match=option):
        pgbackrest_run.backup(_backup_params(tmp_path, **over), check_mode=False)


def test_backup_config_through_a_symlink_is_refused(tmp_path):
    link = tmp_path / "link.conf"
    link.symlink_to(tmp_path / "backup.conf")
    with pytest.raises(FediflowError, match="config"):
        pgbackrest_run.backup(_backup_params(tmp_path, config=str(link)), check_mode=False)


def _entry(label, stop, verified=False, repos=("us-east-1",)):
    kind = "full" if label.endswith("F") else ("diff" if label.endswith("D") else "incr")
    return {"id": label, "type": kind, "repositories": list(repos), "started_at": stop - 60, "finished_at": stop,
            "stop_time": pgbackrest.iso(stop), "verification": {"ok": verified}, "error": False}


DAY = 86400
NOW = 1796666400  # 2026-12-07T18:00:00Z


def _now():
    import datetime  # pylint: disable=import-outside-toplevel
    return datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc)


def _chains(verified):
    """Three weekly chains (full + an incremental), oldest first; ``verified``: the labels proven."""
    out = []
    for week, label in enumerate(("20261116-000000F", "20261123-000000F", "20261130-000000F")):
        stop = NOW - (3 - week) * 7 * DAY
        incr = label + "_%s-120000I" % label[:8]
        out += [_entry(label, stop, label in verified), _entry(incr, stop + DAY // 2, incr in verified)]
    return out


def test_expiry_removes_the_oldest_chains_whole():
    entries = _chains({"20261130-000000F"})
    keep, gone = pgbackrest.plan_expiry(entries, "us-east-1", _now(), retention_full=2)
    assert keep == 2
    assert [i for i, _r in gone] == ["20261116-000000F", "20261116-000000F_20261116-120000I"]


def test_expiry_never_removes_the_chain_of_the_newest_verified_backup():
    # only the oldest chain's incremental is proven: retention_full=1 would keep the newest chain only, but the
    # newest verified backup is in the oldest chain - nothing may go
    entries = _chains({"20261116-000000F_20261116-120000I"})
    keep, gone = pgbackrest.plan_expiry(entries, "us-east-1", _now(), retention_full=1)
    assert (keep, gone) == (None, [])
    # the middle chain proven: the oldest goes, the middle and the newer one stay (count 1 + protected)
    keep, gone = pgbackrest.plan_expiry(_chains({"20261123-000000F"}), "us-east-1", _now(), retention_full=1)
    assert keep == 2 and [i for i, _r in gone][0] == "20261116-000000F"


def test_expiry_with_nothing_verified_removes_nothing():
    assert pgbackrest.plan_expiry(_chains(set()), "us-east-1", _now(), retention_full=1) == (None, [])


def test_expiry_by_days_and_by_both():
    entries = _chains({"20261130-000000F"})
    keep, gone = pgbackrest.plan_expiry(entries, "us-east-1", _now(), retention_days=10)
    assert keep == 1 and {i for i, _r in gone} >= {"20261116-000000F", "20261123-000000F"}
    # both given: a chain goes only when both say so (the middle one is beyond count 1 but within 20 days)
    keep, gone = pgbackrest.plan_expiry(entries, "us-east-1", _now(), retention_full=1, retention_days=20)
    assert keep == 2 and [i for i, _r in gone] == ["20261116-000000F", "20261116-000000F_20261116-120000I"]


def test_expiry_is_per_repository_and_keeps_everything_when_a_full_is_missing():
    entries = _chains({"20261130-000000F"}) + [_entry("20261201-000000F", NOW - DAY, True, ("eu-west-1",))]
    assert pgbackrest.plan_expiry(entries, "eu-west-1", _now(), retention_full=1) == (None, [])
    orphan = [e for e in _chains({"20261130-000000F"}) if e["id"] != "20261123-000000F"]
    assert pgbackrest.plan_expiry(orphan, "us-east-1", _now(), retention_full=1) == (None, [])


def test_the_configuration_keeps_every_full_for_pgbackrests_own_expiry(tmp_path):
    """retention is the backup module's, after the proof: pgBackRest's automatic expiry at the end of backup keeps all."""
    g = _parse(pgbackrest.render_config("fediflow", PG, REPOS, IDENTITY, SETTINGS))["global"]
    assert g["repo1-retention-full"] == g["repo2-retention-full"] == "9999999"
    # and restore_command answers "not yet" within seconds while the asynchronous fetch has nothing: a standby's
    # promotion never waits out pgBackRest's 60 s default on a repository that does not answer
    parsed = _parse(pgbackrest.render_config("fediflow", PG, REPOS, IDENTITY, SETTINGS))
    assert parsed["global:archive-get"]["archive-timeout"] == "5"
    with pytest.raises(FediflowError, match="archive_get_timeout"):
        pgbackrest.render_config("fediflow", PG, REPOS, IDENTITY, dict(SETTINGS, archive_get_timeout=0))


@pytest.mark.parametrize("option", ["retention_full", "retention_days"])
def test_backup_refuses_a_retention_below_one(tmp_path, option):
    config = tmp_path / "b.conf"
    config.write_text("[global]\n")
    p = {"config": str(config), "stanza": "fediflow", "repositories": ["us-east-1"], "required_copies": 0, "timeout": 60,
         "verify": "none", option: 0}
    with pytest.raises(FediflowError, match=option):
        pgbackrest_run._check_backup_params(p)  # pylint: disable=protected-access


def test_the_schedule_chooses_the_type_per_repository():
    week, day = 7 * DAY, DAY
    entries = _chains({"20261130-000000F"})   # newest full: 7 days before NOW, its incremental half a day later
    full, why = pgbackrest.choose_type(entries, "us-east-1", NOW, week, day)
    assert full == "full" and "every 168.0 h" in why
    assert pgbackrest.choose_type(entries, "us-east-1", NOW - 3 * DAY, week, day)[0] == "diff"
    recent = entries + [_entry("20261130-000000F_20261206-000000D", NOW - 12 * 3600)]
    assert pgbackrest.choose_type(recent, "us-east-1", NOW - 3600, week, day)[0] == "incr"   # the diff 11 h old
    assert pgbackrest.choose_type(recent, "us-east-1", NOW - 3600 + day, week, day)[0] == "full"
    # a repository with no full (back after its region's outage) starts a chain; one with an errored full too
    assert pgbackrest.choose_type(entries, "eu-west-1", NOW, week, day)[0] == "full"
    broken = [dict(e, error=True) if e["type"] == "full" else e for e in _chains(set())]
    assert pgbackrest.choose_type([dict(e, error=e.get("error", False)) for e in broken], "us-east-1", NOW - 5 * DAY,
                                  week, day)[0] == "full"


def _hostvars(**over):
    hv = {"fediflow_backup_engine": "pgbackrest", "fediflow_region": "eu-west-1",
          "fediflow_pg_data_dir": "/var/lib/postgresql/15/main",
          "fediflow_backup_repositories": [
              {"name": "us-east-1", "bucket": "b1", "region": "us-east-1", "endpoint_url": "http://198.18.0.11:15001"},
              {"name": "eu-west-1", "bucket": "b2", "region": "eu-west-1", "endpoint_url": None}],
          "fediflow_pgbackrest_endpoints": {"us-east-1": "https://198.18.0.11:15011"}}
    hv.update(over)
    return hv


def test_host_setup_places_the_engine_per_cluster_and_puts_the_hosts_region_first():
    setup = pgbackrest.host_setup(_hostvars())
    assert setup["engine"] == "pgbackrest" and setup["stanza"] == "fediflow"
    assert setup["dir"] == "/var/lib/postgresql/15/pgbackrest"
    assert setup["configs"] == {k: "/var/lib/postgresql/15/pgbackrest/%s.conf" % k for k in ("wal", "backup", "expire")}
    assert setup["repository_names"] == ["eu-west-1", "us-east-1"]
    assert setup["restore"] == {"config": setup["configs"]["backup"], "archive_config": setup["configs"]["wal"],
                                "stanza": "fediflow", "repositories": ["eu-west-1", "us-east-1"]}
    # an http endpoint (the native engine's, the lab's moto) is replaced by the https one given, else dropped
    assert [r["endpoint_url"] for r in setup["repositories"]] == [None, "https://198.18.0.11:15011"]
    # the configuration module takes the entries as they are (repos.normalize, then pgBackRest's options)
    text = pgbackrest.render_config(setup["stanza"], PG, pgbackrest_run.repos.normalize(
        {"repositories": setup["repositories"], "s3_prefix": ""}), IDENTITY, SETTINGS)
    assert "repo1-s3-endpoint=s3.eu-west-1.amazonaws.com" in text and "repo2-s3-endpoint=198.18.0.11" in text
    own = pgbackrest.host_setup(_hostvars(fediflow_pgbackrest_dir="/srv/pgbr/", fediflow_pgbackrest_stanza="app-1"))
    assert own["configs"]["wal"] == "/srv/pgbr/wal.conf" and own["stanza"] == "app-1"
    assert pgbackrest.host_setup(_hostvars(fediflow_backup_engine=None))["engine"] == "native"


@pytest.mark.parametrize("over, option", [
    ({"fediflow_backup_engine": "barman"}, "fediflow_backup_engine"),
    ({"fediflow_pgbackrest_stanza": "a b"}, "fediflow_pgbackrest_stanza"),
    ({"fediflow_pgbackrest_dir": "relative/dir"}, "fediflow_pgbackrest_dir"),
    ({"fediflow_pg_data_dir": None}, "fediflow_pgbackrest_dir"),
    ({"fediflow_pgbackrest_endpoints": ["https://x"]}, "fediflow_pgbackrest_endpoints"),
])
def test_host_setup_refuses_bad_inventory_naming_the_variable(over, option):
    with pytest.raises(FediflowError, match=option):
        pgbackrest.host_setup(_hostvars(**over))


def test_a_repository_whose_endpoint_takes_no_connection_is_left_out_quickly(tmp_path):
    """A listening socket answers; a closed port (nothing listens) is named with why, within the probe's time."""
    import socket  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    config = tmp_path / "backup.conf"
    config.write_text("[global]\nrepo1-type=s3\nrepo1-s3-endpoint=127.0.0.1\nrepo1-storage-port=%d\n"
                      "repo2-type=s3\nrepo2-s3-endpoint=127.0.0.1\nrepo2-storage-port=%d\nrepo3-type=posix\n"
                      % (server.getsockname()[1], closed_port))
    t0 = time.monotonic()
    try:
        down = pgbackrest_run.unreachable({"config": str(config), "probe_timeout": 2}, ["a", "b", "c"])
    finally:
        server.close()
    assert list(down) == ["b"] and "127.0.0.1:%d" % closed_port in down["b"]
    assert time.monotonic() - t0 < 2
    config.write_text("[global]\nrepo1-s3-endpoint=h\nrepo1-storage-port=https\n")
    with pytest.raises(FediflowError, match="repo1-storage-port"):
        pgbackrest_run.unreachable({"config": str(config)}, ["a"])
