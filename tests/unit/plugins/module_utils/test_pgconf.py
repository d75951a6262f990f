# -*- coding: utf-8 -*-
"""Configuration files of both layouts (initdb's, Debian's) as files in a temporary directory."""
from __future__ import annotations

import os

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import pgconf

DEBIAN_CONF = """data_directory = '/var/lib/postgresql/15/main'\t# use data in another directory
hba_file = '/etc/postgresql/15/main/pg_hba.conf'
  ident_file '/etc/postgresql/15/main/pg_ident.conf'
external_pid_file = '/var/run/postgresql/15-main.pid'
port = 5432
#data_directory = 'ConfigDir'
include_dir = 'conf.d'
data_directory_mode = 0700
"""


def _tree(root, files):
    for name, text in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_detach_comments_out_only_the_settings_that_name_the_clusters_files():
    out = pgconf.detach(DEBIAN_CONF).splitlines()
    assert [line.startswith(pgconf.MARK) for line in out] == [True, True, True, True, False, False, False, False]
    assert out[4] == "port = 5432" and out[7] == "data_directory_mode = 0700"  # a longer name is not one of them


def test_a_separate_configuration_directory_is_copied_detached(tmp_path):
    etc, data, dest = tmp_path / "etc", tmp_path / "data", tmp_path / "new"
    _tree(str(etc), {"postgresql.conf": DEBIAN_CONF, "pg_hba.conf": "local all all peer\n", "pg_ident.conf": "",
                     "fediflow.local.conf": "port = 1\n", "start.conf": "auto\n", "conf.d/x.conf": "work_mem = 1MB\n"})
    _tree(str(data), {"PG_VERSION": "15\n", "postgresql.auto.conf": "wal_level = replica\n",
                      "postgresql.conf": "# pg_rewind brought this from a plain primary\n"})
    os.makedirs(dest)
    copied = pgconf.copy_config(str(etc), str(data), str(dest))
    assert sorted(copied) == ["conf.d", "fediflow.local.conf", "pg_hba.conf", "pg_ident.conf", "postgresql.auto.conf",
                              "postgresql.conf"]
    text = _read(dest / "postgresql.conf")
    assert "\ndata_directory = " not in "\n" + text and "port = 5432" in text  # the /etc one, detached
    assert _read(dest / "conf.d" / "x.conf") == "work_mem = 1MB\n"
    assert _read(dest / "postgresql.auto.conf") == "wal_level = replica\n"
    assert not (dest / "start.conf").exists()


def test_a_plain_data_directory_copies_its_own_conf_files_the_included_ones_too(tmp_path):
    """The replication role's host settings (listen address, TLS) are in fediflow.local.conf, included by
    postgresql.conf: a restore without it would listen on localhost only, unreachable where it is probed."""
    data, dest = tmp_path / "data", tmp_path / "new"
    _tree(str(data), {"postgresql.conf": "data_directory = '/x'\ninclude_if_exists = 'fediflow.local.conf'\n",
                      "pg_hba.conf": "h\n", "postgresql.auto.conf": "a\n", "fediflow.local.conf": "ssl = on\n",
                      "PG_VERSION": "15\n"})
    os.makedirs(dest)
    copied = pgconf.copy_config(str(data), str(data), str(dest))
    assert sorted(copied) == ["fediflow.local.conf", "pg_hba.conf", "postgresql.auto.conf", "postgresql.conf"]
    assert _read(dest / "postgresql.conf").startswith("data_directory = '/x'\n")  # its own: as it was
    assert _read(dest / "fediflow.local.conf") == "ssl = on\n" and not (dest / "PG_VERSION").exists()


def test_ensure_minimal_writes_only_what_is_missing(tmp_path):
    _tree(str(tmp_path), {"pg_hba.conf": "mine\n"})
    assert pgconf.ensure_minimal(str(tmp_path), ["local all all peer"]) == ["postgresql.conf", "pg_ident.conf"]
    assert _read(tmp_path / "pg_hba.conf") == "mine\n"
    assert pgconf.ensure_minimal(str(tmp_path), ["x"]) == []
    os.unlink(tmp_path / "pg_hba.conf")
    assert pgconf.ensure_minimal(str(tmp_path), ["local all all peer", "host all all 127.0.0.1/32 scram-sha-256"]) == [
        "pg_hba.conf"]
    assert _read(tmp_path / "pg_hba.conf") == "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
    assert oct(os.stat(tmp_path / "pg_hba.conf").st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("host, extra", [
    (None, []), ("127.0.0.1", []), ("198.18.0.11", ["host all all 198.18.0.11/32 scram-sha-256"]),
    ("fd00::5", ["host all all fd00::5/128 scram-sha-256"]), ("db.example", []),
])
def test_a_restore_without_configuration_is_reachable_where_it_is_probed(host, extra):
    lines = pgconf.minimal_hba(host)
    assert lines[:3] == ["local all all peer", "host all all 127.0.0.1/32 scram-sha-256",
                         "host all all ::1/128 scram-sha-256"] and lines[3:] == extra
