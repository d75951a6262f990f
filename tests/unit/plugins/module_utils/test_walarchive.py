# -*- coding: utf-8 -*-
"""The WAL archive command's contract: identical re-push succeeds, a different file under
the same name fails, nothing partial is ever visible."""
from __future__ import annotations

import json
import os

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import walarchive
from ansible_collections.fediflow.dr.plugins.module_utils.walarchive import ArchiveError

SEG = "000000010000000000000003"


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "archive"
    path.mkdir()
    return str(path)


def _segment(tmp_path, content=b"x" * 4096, name="seg"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def test_push_then_fetch_round_trip(tmp_path, repo):
    src = _segment(tmp_path, os.urandom(16384))
    assert walarchive.push(repo, src, SEG) == "archived"
    dest = str(tmp_path / "restored")
    assert walarchive.fetch(repo, SEG, dest) == "fetched"
    assert open(dest, "rb").read() == open(src, "rb").read()
    assert sorted(os.listdir(repo)) == [SEG]  # no temp file left behind


def test_identical_repush_succeeds(tmp_path, repo):
    src = _segment(tmp_path)
    walarchive.push(repo, src, SEG)
    assert walarchive.push(repo, src, SEG) == "already-archived"


def test_different_contents_under_same_name_fails(tmp_path, repo):
    walarchive.push(repo, _segment(tmp_path, b"a" * 100, "one"), SEG)
    with pytest.raises(ArchiveError, match="different contents"):
        walarchive.push(repo, _segment(tmp_path, b"b" * 100, "two"), SEG)
    assert open(os.path.join(repo, SEG), "rb").read() == b"a" * 100


def test_missing_source_leaves_nothing(tmp_path, repo):
    with pytest.raises(OSError):
        walarchive.push(repo, str(tmp_path / "gone"), SEG)
    assert os.listdir(repo) == []


def test_bad_names_and_missing_repo_are_refused(tmp_path, repo):
    src = _segment(tmp_path)
    with pytest.raises(ArchiveError, match="not a WAL file name"):
        walarchive.push(repo, src, "../etc/passwd")
    with pytest.raises(ArchiveError, match="does not exist"):
        walarchive.push(str(tmp_path / "nope"), src, SEG)
    walarchive.push(repo, src, "00000002.history")
    walarchive.push(repo, src, SEG + ".00000028.backup")


def test_fetch_missing_segment_fails(tmp_path, repo):
    with pytest.raises(ArchiveError, match="not in the archive"):
        walarchive.fetch(repo, SEG, str(tmp_path / "x"))
    assert not os.path.exists(str(tmp_path / "x"))


def test_status_reports_newest_segment_and_age(tmp_path, repo):
    assert walarchive.status(repo)["last_segment"] is None
    older = "000000010000000000000002"
    for name in (older, SEG):
        walarchive.push(repo, _segment(tmp_path, name.encode(), name), name)
    os.utime(os.path.join(repo, SEG), (1000.0, 1000.0))
    st = walarchive.status(repo, now=1060.0)
    assert st["segments"] == 2
    assert st["last_segment"] == SEG
    assert st["age_s"] == 60.0


def test_cli_exit_codes(tmp_path, repo):
    src = _segment(tmp_path)
    assert walarchive.main(["--repo", repo, "push", src, SEG]) == (0, "", "")
    code, _out, err = walarchive.main(["--repo", repo, "push", _segment(tmp_path, b"z", "o"), SEG])
    assert code == 1 and "different contents" in err
    code, out, _err = walarchive.main(["--repo", repo, "status"])
    assert code == 0 and json.loads(out)["segments"] == 1
