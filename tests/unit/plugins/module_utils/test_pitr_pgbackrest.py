"""pitr_restore on the pgBackRest engine, the plain part (module_utils/pitr_pgbackrest.py): its options refused
naming the option, pgBackRest's info and repo-ls read as untrusted input into the ledger and the archive index the
native engine's PITR logic reads, the restore's argv per target, the recovery's restore_command, and pgBackRest's own
recovery settings taken out of postgresql.auto.conf. The info fixture is pgBackRest 2.45's real output; the listing
is shaped as its repo-ls --recurse --output=json prints the lab's archive."""
import copy
import json
import shlex
from pathlib import Path

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest, pitr, pitr_pgbackrest, pitr_run
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError
from ansible_collections.fediflow.dr.plugins.module_utils.untrusted import Untrusted

INFO = (Path(__file__).parent / "fixtures" / "pgbackrest_info_2.45.json").read_text()
NAMES = {1: "us-east-1", 2: "eu-west-1"}
SHA = "9a055c1ddff9863ad076d425c68fe51ee2c2d7a1"


def _listing(segments, histories=(), at=1796664950):
    doc = {".": {"type": "path"}, "0000000100000000": {"type": "path"},
           "archive.info": {"type": "file", "size": 253, "time": at}}
    for i, name in enumerate(segments):
        doc["%s/%s-%s.lz4" % (name[:16], name, SHA)] = {"type": "file", "size": 69330, "time": at + 10 * i}
    doc["0000000100000000/000000010000000000000006.00000028.backup"] = {"type": "file", "size": 371, "time": at}
    doc["0000000100000000/00000001000000000000000B.partial-%s.lz4" % SHA] = {"type": "file", "size": 9, "time": at}
    for name in histories:
        doc[name] = {"type": "file", "size": 42, "time": at}
    return json.dumps(doc)


def _seg(n, tli=1):
    return "%08X%08X%08X" % (tli, 0, n)


@pytest.fixture
def params(tmp_path):
    config = tmp_path / "backup.conf"
    config.write_text("[global]\n")
    binary = tmp_path / "pgbackrest"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return {"engine": "pgbackrest", "data_dir": str(tmp_path / "pgdata"), "target_time": "2026-12-07T17:37:00Z",
            "timeout": 60, "amcheck_max_indexes": 10, "login_port": 5432, "connect_timeout": 10, "timeline": "auto",
            "pgbackrest": {"config": str(config), "stanza": "fediflow", "repositories": ["us-east-1", "eu-west-1"],
                           "binary": str(binary)}}


def test_the_pgbackrest_engine_needs_no_native_ledger_or_wal_tool(params):
    target, timeline, engine = pitr_run.validate(params)
    assert target["kind"] == "time" and timeline == "auto"
    assert engine["archive_config"] == engine["config"] == params["pgbackrest"]["config"]  # the default
    assert engine["repositories"] == ["us-east-1", "eu-west-1"]


@pytest.mark.parametrize("change, words", [
    ({"engine": "native"}, "give engine=pgbackrest with it"),
    ({"engine": "barman"}, "engine must be native or pgbackrest"),
    ({"pgbackrest": None}, "engine=pgbackrest needs the pgbackrest option"),
    ({"wal_config": "/etc/fediflow-wal.json"}, "wal_config: the native engine's ledger and WAL archive"),
    ({"backup_dest": "/b", "s3_bucket": "x"}, "backup_dest, s3_bucket: the native engine's"),
    ({"pgbackrest": {"stanza": "a b"}}, "pgbackrest.stanza 'a b'"),
    ({"pgbackrest": {"config": "backup.conf"}}, "pgbackrest.config 'backup.conf' must be an absolute path"),
    ({"pgbackrest": {"config": "/nonexistent/backup.conf"}}, "pgbackrest.config '/nonexistent/backup.conf' is not a file"),
    ({"pgbackrest": {"archive_config": "/nonexistent/wal.conf"}}, "pgbackrest.archive_config '/nonexistent/wal.conf'"),
    ({"pgbackrest": {"repositories": []}}, "pgbackrest.repositories must name each repository"),
    ({"pgbackrest": {"repositories": ["a", "a"]}}, "pgbackrest.repositories must name each repository"),
    ({"pgbackrest": {"repositories": ["a", "b", "c", "d", "e"]}}, "at most 4"),
    ({"pgbackrest": {"repositories": ["../x"]}}, "pgbackrest.repositories"),
    ({"pgbackrest": {"binary": "/nonexistent/pgbackrest"}}, "pgbackrest.binary '/nonexistent/pgbackrest' is not an executable"),
])
def test_bad_input_is_refused_naming_the_option(params, change, words):
    p = copy.deepcopy(params)
    for key, value in change.items():
        if key == "pgbackrest" and value is not None:
            p["pgbackrest"].update(value)
        else:
            p[key] = value
    with pytest.raises(FediflowError) as err:
        pitr_run.validate(p)
    assert words in err.value.message


def test_the_archive_id_is_the_current_databases():
    assert pitr_pgbackrest.archive_id(INFO, "exp", NAMES) == "15-1"
    doc = json.loads(INFO)
    doc[0]["archive"].append({"database": {"id": 2, "repo-key": 1}, "id": "16-2", "min": "x", "max": "y"})
    assert pitr_pgbackrest.archive_id(json.dumps(doc), "exp", NAMES) == "16-2"   # after a stanza-upgrade
    assert pitr_pgbackrest.archive_id(INFO, "other", NAMES) is None
    doc[0]["archive"][0]["id"] = "../../backup"
    with pytest.raises(Untrusted, match="archive id"):
        pitr_pgbackrest.archive_id(json.dumps(doc), "exp", NAMES)


def test_the_listing_gives_segments_and_history_files_only():
    segments, histories = pitr_pgbackrest.archive_listing(
        _listing([_seg(6), _seg(7), "000000020000000000000007"], ["00000002.history"]), "repo-ls")
    assert segments == [(_seg(6), 1796664950), (_seg(7), 1796664960), ("000000020000000000000007", 1796664970)]
    assert histories == ["00000002.history"]   # no .partial, .backup or archive.info


@pytest.mark.parametrize("doc", [
    "[]", "not json",
    json.dumps({"0000000100000000/%s-%s.lz4" % (_seg(6), SHA): {"type": "file", "time": "yesterday"}}),
    json.dumps({"0000000200000000/%s-%s.lz4" % (_seg(6), SHA): {"type": "file", "time": 1}}),
])
def test_a_malformed_listing_is_refused(doc):
    with pytest.raises(Untrusted):
        pitr_pgbackrest.archive_listing(doc, "repo-ls")


def test_the_union_keeps_every_segment_with_its_earliest_time():
    assert pitr_pgbackrest.union([[("A", 5), ("B", 9)], [("B", 7), ("C", 8)]]) == [("A", 5), ("B", 7), ("C", 8)]


def test_the_ledger_and_the_archive_feed_the_native_choice_and_bounds():
    """parse_info's entries and the listing's index through pitr.choose_base / check_archive, as preflight does."""
    info = pgbackrest.parse_info(INFO, "exp", NAMES)
    for entry in info["backups"]:   # the proof as the annotations give it: both fulls verified, the incr not
        entry["verification"]["ok"] = entry["type"] == "full"
    segments, _h = pitr_pgbackrest.archive_listing(_listing([_seg(n) for n in range(6, 12)], at=1796664950), "r")
    index = pitr.archive_index(segments, {})
    target = pitr.parse_target({"target_time": "2026-12-07T17:36:15Z"})   # after the incr (17:36:09), before repo2's full
    lineage = index["lineage"][pitr.choose_timeline(index, target)]
    base, why = pitr.choose_base(info["backups"], target, lineage)
    assert base["id"] == "20261207-173553F" and why.startswith("newest verified")   # not the unverified incr
    bounds = pitr.check_archive(index, base, target, lineage)
    assert bounds["first_segment"] == _seg(6) and bounds["last_segment"] == _seg(11)
    later = pitr.parse_target({"target_time": "2026-12-07T17:36:30Z"})   # after repo2's full (17:36:23)
    base, _why = pitr.choose_base(info["backups"], later, lineage)
    assert base["id"] == "20261207-173611F" and base["manifest"]["repositories"] == ["eu-west-1"]
    with pytest.raises(FediflowError, match="after the newest archived WAL"):
        pitr.check_archive(index, base, pitr.parse_target({"target_time": "2026-12-07T17:40:00Z"}), lineage)
    early = pitr.parse_target({"target_time": "2026-12-07T17:35:00Z"})
    with pytest.raises(FediflowError, match="before the end of the oldest verified base backup 20261207-173553F"):
        pitr.choose_base(info["backups"], early, lineage)


@pytest.mark.parametrize("given, wanted, unwanted", [
    ({"target_time": "2026-12-07T17:36:30Z", "inclusive": False},
     ["--type=time", "--target=2026-12-07 17:36:30.000000+00", "--target-exclusive", "--target-action=promote",
      "--target-timeline=2"], []),
    ({"target_name": "after-b", "inclusive": False, "action": "pause"},
     ["--type=name", "--target=after-b", "--target-action=pause"], ["--target-exclusive"]),
    ({"target_lsn": "0/7000060"}, ["--type=lsn", "--target=0/7000060"], ["--target-exclusive"]),
    ({"target_latest": True}, ["--type=default", "--target-timeline=2"], ["--target-action=promote"]),
])
def test_the_restore_argv_per_target(given, wanted, unwanted):
    opts = {"binary": "/usr/bin/pgbackrest", "config": "/etc/pgbackrest/backup.conf", "stanza": "fediflow"}
    argv = pitr_pgbackrest.restore_argv(opts, "20261207-173553F", 2, "/d/main.pitr-x", pitr.parse_target(given), 2)
    assert argv[:3] == ["/usr/bin/pgbackrest", "--config=/etc/pgbackrest/backup.conf", "--stanza=fediflow"]
    assert argv[-1] == "restore" and {"--set=20261207-173553F", "--repo=2", "--pg1-path=/d/main.pitr-x", "--no-delta"} <= set(argv)
    assert set(wanted) <= set(argv) and not set(unwanted) & set(argv)
    assert any(a.startswith("--target=") for a in argv) is ("target_latest" not in given)


def test_the_recovery_fetches_synchronously_from_every_repository_into_its_own_directory():
    opts = {"binary": "/usr/bin/pgbackrest", "archive_config": "/etc/pgbackrest/wal conf", "stanza": "fediflow"}
    cmd = pitr_pgbackrest.restore_command(opts, "/var/lib/postgresql/15/main.pitr-20261207T000000.000000Z")
    assert cmd.endswith(' archive-get %f "%p"') and "--repo" not in cmd
    assert shlex.split(cmd[:-len(' archive-get %f "%p"')]) == [
        "/usr/bin/pgbackrest", "--config=/etc/pgbackrest/wal conf", "--stanza=fediflow",
        "--pg1-path=/var/lib/postgresql/15/main.pitr-20261207T000000.000000Z", "--no-archive-async"]
    with pytest.raises(FediflowError, match="data_dir"):
        pitr_pgbackrest.restore_command(opts, "relative")


# what pgBackRest 2.45's restore left in the restored postgresql.auto.conf (the lab's, verbatim)
AUTO = """# Do not edit this file manually!
# It will be overwritten by the ALTER SYSTEM command.
archive_command = '/usr/bin/pgbackrest --config=/var/tmp/x/etc/wal.conf --stanza=it-517e374d archive-push %p'

# Recovery settings generated by pgBackRest restore on 2026-12-07 21:01:35
restore_command = 'pgbackrest --config=/var/tmp/x/etc/backup.conf --pg1-path=/var/tmp/x/r1 --repo=1 --stanza=it-517e374d archive-get %f "%p"'
recovery_target_name = 'after-a'
recovery_target_action = 'promote'
recovery_target_timeline = '1'
"""


def test_pgbackrests_recovery_settings_are_taken_out_and_the_rest_kept():
    out = pitr_pgbackrest.strip_generated(AUTO)
    assert out == AUTO.split("\n\n# Recovery", maxsplit=1)[0] + "\n"
    assert pitr_pgbackrest.strip_generated(out) == out
    later = out + "work_mem = '64MB'\n"   # a setting after the block stays, a restore_command outside it too
    assert pitr_pgbackrest.strip_generated(AUTO + "work_mem = '64MB'\n") == later
    mine = "restore_command = 'my own'\n"
    assert pitr_pgbackrest.strip_generated(mine) == mine and pitr_pgbackrest.strip_generated("") == ""


def test_the_module_block_after_a_pgbackrest_restore_leaves_no_recovery_target_behind():
    """The switch removes the module's block after promotion: with pgBackRest's lines gone first, nothing of the
    restore's target is left to stop a later standby of the cluster."""
    text = pitr.replace_block(pitr_pgbackrest.strip_generated(AUTO), {"restore_command": "x", "recovery_target_name": "a"})
    assert "recovery_target" not in pitr.replace_block(text, {}) and "archive-push" in pitr.replace_block(text, {})


def test_holders_in_the_configurations_order():
    assert pitr_pgbackrest.holders_in_order(["us-east-1", "eu-west-1"], ["eu-west-1", "us-east-1"]) == \
        [(1, "us-east-1"), (2, "eu-west-1")]
    assert pitr_pgbackrest.holders_in_order(["us-east-1", "eu-west-1"], ["eu-west-1"]) == [(2, "eu-west-1")]


def test_a_backups_end_is_read_as_the_next_whole_second():
    entry = pgbackrest.parse_info(INFO, "exp", NAMES)["backups"][0]
    assert entry["stop_time"] == "2026-12-07T17:36:06Z"
    assert pitr_pgbackrest.consistent_by(entry)["stop_time"] == "2026-12-07T17:36:07Z" and entry["stop_time"].endswith("06Z")
