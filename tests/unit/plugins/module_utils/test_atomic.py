# -*- coding: utf-8 -*-
"""atomic: the one atomic, durable file replacement. Every path here is under tmp_path."""
from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import atomic


def _leftovers(directory):
    return sorted(name for name in os.listdir(directory) if name.startswith("."))


@pytest.fixture
def fsyncs(monkeypatch):
    """Every os.fsync call, as the kind of file it was made on ("file" / "dir"); the real fsync still runs."""
    seen = []
    real = os.fsync

    def counting(fd):
        seen.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real(fd)
    monkeypatch.setattr(os, "fsync", counting)
    return seen


def test_write_creates_and_replaces_with_the_mode_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "state.json"
    atomic.write_atomic(str(path), "first\n")
    assert path.read_text() == "first\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    atomic.write_atomic(str(path), b"second\n", mode=0o640)
    assert path.read_bytes() == b"second\n" and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


def test_the_file_and_then_its_directory_are_fsynced(tmp_path, fsyncs):
    atomic.write_atomic(str(tmp_path / "a"), "x")
    assert fsyncs == ["file", "dir"]


def test_the_temp_file_is_never_wider_than_0600_nor_than_the_mode(tmp_path):
    seen = {}
    for mode in (0o644, 0o400):
        path = tmp_path / ("f%o" % mode)
        with atomic.replacing(str(path), mode=mode) as handle:
            seen[mode] = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            assert not path.exists()  # nothing visible under the name before the block ends
            handle.write(b"data")
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert seen == {0o644: 0o600, 0o400: 0o400}


def test_a_failure_while_writing_keeps_the_old_file_and_removes_the_temp_file(tmp_path, fsyncs):
    path = tmp_path / "ledger.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic.replacing(str(path)) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("disk gone")
    assert path.read_text() == "old" and _leftovers(tmp_path) == [] and fsyncs == []


def test_a_failing_fsync_keeps_the_old_file_and_removes_the_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("old")

    def broken(_fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output error"):
        atomic.write_atomic(str(path), "new")
    assert path.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_failing_rename_keeps_the_target_and_removes_the_temp_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        atomic.write_atomic(str(target), "new")  # a non-empty directory cannot be replaced by a file
    assert (target / "inside").read_text() == "kept" and _leftovers(tmp_path) == []


def test_json_is_indented_sorted_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "manifest.json"
    atomic.write_json_atomic(str(path), {"b": 1, "a": [1, 2]})
    text = path.read_text()
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"') and "\n  " in text


def test_temp_names_are_the_ones_snapshots_and_ledgers_skip(tmp_path):
    fd, path = atomic.create_temp(str(tmp_path))
    os.close(fd)
    assert atomic.TEMP_RE.match(os.path.basename(path)) and os.path.dirname(path) == str(tmp_path)
    assert not atomic.TEMP_RE.match("manifest.json")
    atomic.discard(path)
    atomic.discard(path)  # already gone: fine
    assert _leftovers(tmp_path) == []


def test_create_temp_relative_to_a_directory_descriptor_never_follows_a_symlink(tmp_path):
    dfd = os.open(str(tmp_path), os.O_RDONLY)
    try:
        fd, name = atomic.create_temp(dir_fd=dfd)
        os.close(fd)
        assert os.sep not in name and (tmp_path / name).is_file()
        atomic.discard(name, dir_fd=dfd)
        assert not (tmp_path / name).exists()
    finally:
        os.close(dfd)
