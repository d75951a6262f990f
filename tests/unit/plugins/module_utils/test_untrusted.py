# -*- coding: utf-8 -*-
"""Everything read back from storage is untrusted input: hostile local ledgers and hostile archives,
each refused before anything is deleted, extracted or written outside the target (real temp
directories, real tar files). The S3 side (downloads, deletions, listings, snapshots) is proven
against the lab's S3 in tests/integration/test_untrusted_storage.py."""
from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import backup, ledger, pitr_run, repos as repositories
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

SHA = "ab" * 32


def _manifest(backup_id, stop="2026-11-20T00:00:00.000000Z", ok=True, **kw):
    m = {"id": backup_id, "kind": "logical", "stop_time": stop, "verification": {"ok": ok},
         "files": [{"path": "db.dump", "size": 3, "sha256": SHA}]}
    m.update(kw)
    return m


def _put(dest, name, manifest):
    bdir = dest / name
    bdir.mkdir(parents=True, exist_ok=True)
    (bdir / "db.dump").write_bytes(b"abc")
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (bdir / "manifest.json").write_text(text)
    return bdir


@pytest.fixture
def dest(tmp_path):
    """A ledger directory with a sibling file outside it that nothing may delete."""
    (tmp_path / "outside.txt").write_text("keep me")
    led = tmp_path / "ledger"
    led.mkdir()
    return led


# ---------------------------------------------------------------- local ledger: deletions

@pytest.mark.parametrize("bad_id", ["..", "", ".", "a/../.."])
def test_removal_of_an_id_that_is_no_id_is_refused_and_deletes_nothing(dest, bad_id):
    _put(dest, "b1", _manifest("b1"))
    with pytest.raises(FediflowError, match="not an id"):
        ledger.remove_local(str(dest), bad_id)
    assert (dest / "b1" / "manifest.json").exists() and (dest.parent / "outside.txt").exists()


def test_a_manifest_with_an_empty_id_cannot_make_retention_delete_the_ledger(dest):
    """On main the manifest of ``evil`` (id "") joined the ledger; retention removed id "": rmtree(dest)."""
    for i in range(3):
        _put(dest, "b%d" % i, _manifest("b%d" % i, stop="2026-11-2%dT00:00:00.000000Z" % i))
    _put(dest, "evil", _manifest("", stop="2026-01-01T00:00:00.000000Z", ok=False))
    entries = repositories.ledger_union(str(dest), None)
    repositories.prune_each(str(dest), None, entries, lambda held: ledger.plan_retention(
        held, ledger.parse_iso("2026-11-25T00:00:00Z"), retention_count=2), ledger.remove_local)
    assert sorted(os.listdir(dest)) == ["b1", "b2", "evil"]   # b0 pruned, nothing else
    assert (dest.parent / "outside.txt").exists()


def test_a_manifest_whose_id_is_another_backups_cannot_delete_that_backup(dest):
    _put(dest, "b1", _manifest("b1", stop="2026-11-24T00:00:00.000000Z"))
    _put(dest, "b2", _manifest("b2", stop="2026-11-25T00:00:00.000000Z"))
    _put(dest, "x", _manifest("b1", stop="2026-01-01T00:00:00.000000Z"))   # claims to be b1
    skipped = []
    found = ledger.list_local(str(dest), skipped)
    assert sorted(m["id"] for m in found) == ["b1", "b2"]
    assert found[0]["stop_time"].startswith("2026-11-24")   # b1's own manifest, not the impostor's
    assert len(skipped) == 1 and "x/manifest.json" in skipped[0]["where"] and "not the name" in skipped[0]["error"]


def test_a_symlinked_backup_directory_is_not_a_backup_and_is_never_removed_through(dest, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _put(elsewhere, "b9", _manifest("b9"))
    os.symlink(str(elsewhere / "b9"), str(dest / "b9"))
    skipped = []
    assert ledger.list_local(str(dest), skipped) == [] and "symlink" in skipped[0]["error"]
    with pytest.raises(FediflowError, match="is a symlink"):
        ledger.remove_local(str(dest), "b9")
    assert (elsewhere / "b9" / "manifest.json").exists()


# ---------------------------------------------------------------- local ledger: malformed manifests

BAD = {   # what: (the directory it lies in, the manifest)
    "not JSON": ("m", "{oops"),
    "not an object": ("m", "[1, 2]"),
    "id '..'": ("m", _manifest("..")),
    "id empty": ("m", _manifest("")),
    "id too long": ("x" * 200, _manifest("x" * 200)),
    "path '..'": ("m", _manifest("m", files=[{"path": "../escape", "size": 1, "sha256": SHA}])),
    "absolute path": ("m", _manifest("m", files=[{"path": "/etc/passwd", "size": 1, "sha256": SHA}])),
    "a file twice": ("m", _manifest("m", files=[{"path": "db.dump", "size": 3, "sha256": SHA}] * 2)),
    "no sha256": ("m", _manifest("m", files=[{"path": "db.dump", "size": 3}])),
    "negative size": ("m", _manifest("m", files=[{"path": "db.dump", "size": -1, "sha256": SHA}])),
    "stop_time not a time": ("m", _manifest("m", stop=12)),
    "verification not a mapping": ("m", _manifest("m", verification=True)),
    "stop_lsn not an LSN": ("m", _manifest("m", stop_lsn="0/1; DROP")),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_a_malformed_manifest_among_good_ones_is_skipped_and_reported(dest, what):
    """On main one of these made list_local raise (every backup, PITR and cache run failed) or was trusted."""
    _put(dest, "good1", _manifest("good1"))
    name, bad = BAD[what]
    _put(dest, name, bad)
    _put(dest, "good2", _manifest("good2"))
    skipped = []
    assert [m["id"] for m in ledger.list_local(str(dest), skipped)] == ["good1", "good2"]
    assert len(skipped) == 1 and skipped[0]["where"] == str(dest / name / "manifest.json")
    assert "refused" in skipped[0]["error"]


def test_a_huge_manifest_is_refused_unread(dest):
    _put(dest, "good", _manifest("good"))
    _put(dest, "big", _manifest("big", padding="x" * (9 * 1024 * 1024)))
    skipped = []
    assert [m["id"] for m in ledger.list_local(str(dest), skipped)] == ["good"]
    assert "more than the" in skipped[0]["error"]


def test_the_skipped_manifests_reach_the_result_as_a_list_and_warnings(dest):
    _put(dest, "m", "{oops")
    skipped, result = [], {}
    repositories.ledger_union(str(dest), None, skipped)
    repositories.report_skipped(result, skipped)
    assert result["skipped_manifests"][0]["where"].endswith("m/manifest.json")
    assert result["warnings"][0].startswith("malformed manifest skipped, not trusted: ")


# ---------------------------------------------------------------- hostile archives

def _tar(path, members):
    """members: (name, kind, extra) with kind file/dir/symlink/hardlink/chardev/fifo."""
    with tarfile.open(str(path), "w") as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o600
            data = None
            if kind == "file":
                data = (extra or b"data")
                info.size = len(data)
                info.mode = 0o4755 if extra == b"suid" else 0o600
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o700
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == "chardev":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


HOSTILE = {
    "dotdot": [("PG_VERSION", "file", b"15\n"), ("../escaped", "file", b"owned")],
    "absolute": [("PG_VERSION", "file", b"15\n"), ("{outside}/escaped", "file", b"owned")],
    "symlink out, then through it": [("PG_VERSION", "file", b"15\n"), ("l", "symlink", "{outside}"),
                                     ("l/escaped", "file", b"owned")],
    "relative symlink out": [("PG_VERSION", "file", b"15\n"), ("base/l", "symlink", "../../.."),
                             ("base/l/escaped", "file", b"owned")],
    "symlink to the parent through a symlink": [("PG_VERSION", "file", b"15\n"), ("s", "symlink", "."),
                                                ("t", "symlink", "s/..")],
    "hardlink out": [("PG_VERSION", "file", b"15\n"), ("h", "hardlink", "../outside.txt")],
    "hardlink absolute": [("PG_VERSION", "file", b"15\n"), ("h", "hardlink", "{outside}/outside.txt")],
    "device": [("PG_VERSION", "file", b"15\n"), ("disk", "chardev", None)],
    "fifo": [("PG_VERSION", "file", b"15\n"), ("pipe", "fifo", None)],
    "setuid file": [("PG_VERSION", "file", b"15\n"), ("tool", "file", b"suid")],
    "a member twice": [("PG_VERSION", "file", b"15\n"), ("global/pg_control", "file", b"good"),
                       ("global/pg_control", "file", b"evil")],
}


def _hostile_backup(tmp_path, what):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "outside.txt").write_text("keep me")
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    members = [(n.format(outside=str(outside)), k, e.format(outside=str(outside)) if isinstance(e, str) else e)
               for n, k, e in HOSTILE[what]]
    _tar(backup_dir / "base.tar", members)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return outside, backup_dir, data_dir


def _tree(path):
    return sorted(os.path.relpath(os.path.join(r, n), str(path)) for r, ds, fs in os.walk(str(path)) for n in ds + fs)


@pytest.mark.parametrize("what", sorted(HOSTILE))
@pytest.mark.parametrize("extract", ["python", "gnu-tar"])
def test_a_hostile_archive_is_refused_before_anything_is_extracted(tmp_path, what, extract):
    """On main: the python path extracted with the fully_trusted filter (wrote outside, made devices); GNU tar
    extracted every other member before (or instead of) failing."""
    outside, backup_dir, data_dir = _hostile_backup(tmp_path, what)
    run = backup.extract_with_tarfile if extract == "python" else pitr_run.extract_tars
    with pytest.raises(FediflowError, match="refused"):
        run(str(backup_dir), str(data_dir))
    assert _tree(outside) == ["outside.txt"] and (outside / "outside.txt").read_text() == "keep me"
    assert _tree(data_dir) == []   # refused before anything was extracted
    assert not (tmp_path / "escaped").exists()


def test_a_plain_backup_holding_a_symlink_is_refused_before_it_is_copied(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "PG_VERSION").write_text("15\n")
    os.symlink("/etc/shadow", str(plain / "shadow"))
    with pytest.raises(FediflowError, match="refused"):
        backup.check_plain(str(plain))


def test_a_good_archive_still_extracts(tmp_path):
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    _tar(backup_dir / "base.tar", [("PG_VERSION", "file", b"15\n"), ("base", "dir", None),
                                   ("base/1", "dir", None), ("base/1/1259", "file", b"rel"),
                                   ("pg_wal", "dir", None), ("pg_tblspc", "dir", None)])
    _tar(backup_dir / "pg_wal.tar", [("000000010000000000000002", "file", b"wal")])
    for run in (backup.extract_with_tarfile, pitr_run.extract_tars):
        data_dir = tmp_path / run.__name__
        data_dir.mkdir()
        run(str(backup_dir), str(data_dir))
        assert (data_dir / "base" / "1" / "1259").read_bytes() == b"rel"
        assert (data_dir / "pg_wal" / "000000010000000000000002").read_bytes() == b"wal"
