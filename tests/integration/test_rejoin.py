"""The failback's rejoin (roles/replication, tasks_from rejoin.yml: pg_rewind, then the node starts
as a standby and streams) on a throwaway primary + standby pair (pair_fixtures.py), never the
shared lab: the old primary dies, the standby is promoted, the old primary rejoins it. Run through
ansible-playbook as failback.yml runs it; the outcome is checked with psycopg2 on both servers.
"""
import os
import pwd
import time

import pytest
import yaml

from lab_fixtures import BIN, ROOT, ansible_env, keep_log, poll
from pair_fixtures import REPLICATOR, make_pair

# pg_rewind needs hint bits WAL-logged; the lab's wal_keep_size keeps the dead primary's WAL back
# to the checkpoint before the divergence (its crash recovery would otherwise recycle it); no
# autovacuum: an idle primary writes nothing of its own (an ANALYZE of the probe table would).
PAIR_SETTINGS = "wal_log_hints = on\nwal_keep_size = 256MB\nautovacuum = off\n"
REJOIN = """
- name: The old primary rejoins the promoted standby (as failback.yml does it)
  hosts: old
  gather_facts: false
  tasks:
    - name: Rejoin
      ansible.builtin.include_role:
        name: fediflow.dr.replication
        tasks_from: rejoin.yml
      vars:
        replication_role: standby
        replication_primary_host: new
"""


# pg_rewind in a test bin directory (every other program a link to the real one): before it runs the
# real pg_rewind, it leaves the serving primary where an idle primary sits right after an
# archive_timeout segment switch - the state the lab's failback met at random. Important WAL (a
# committed transaction), then the background writer's standby snapshot that follows it (within
# 15 s; unimportant WAL), then archive_timeout=1 s: the checkpointer switches to a new segment (the
# switch record is unimportant too). After that nothing is written: no snapshot (nothing important
# since the last), no switch (same), and the insert position stays just past the new segment's
# page header, beyond the flushed WAL. Each wait polls with a deadline; not reaching the state fails.
PG_REWIND_AT_A_SWITCH = r"""#!/bin/bash
set -euo pipefail
# what the rejoin gave it to log in with (test_rejoin checks it): never PGPASSWORD, a private password file
{ echo "PGPASSWORD=${PGPASSWORD-unset}"; echo "PGPASSFILE=${PGPASSFILE-unset}"
  stat -c '%%a %%U' "$PGPASSFILE" "$(dirname "$PGPASSFILE")"; } > "%(record)s"
src=""
for arg in "$@"; do case "$arg" in --source-server=*) src="${arg#--source-server=}" ;; esac; done
q() { "%(bindir)s/psql" -X -At -d "$src" -c "$1"; }
until_true() {  # SQL condition, seconds
  local end=$((SECONDS + $2))
  until [ "$(q "$1")" = t ]; do
    [ $SECONDS -lt $end ] || { echo "test pg_rewind: not reached within $2 s: $1" >&2; exit 3; }
    sleep 0.1
  done
}
q "ALTER SYSTEM SET archive_timeout = 0" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null
q "SELECT txid_current()" >/dev/null
after=$(q "SELECT pg_current_wal_insert_lsn()")
until_true "SELECT pg_current_wal_insert_lsn() > '$after'::pg_lsn" 30
q "ALTER SYSTEM SET archive_timeout = 1" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null
until_true "SELECT (pg_walfile_name_offset(pg_current_wal_insert_lsn())).file_offset = 40
                   AND pg_current_wal_flush_lsn() < pg_current_wal_insert_lsn()" 30
q "ALTER SYSTEM RESET archive_timeout" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null
echo "test pg_rewind: serving primary at $(q "SELECT pg_current_wal_insert_lsn() || ' inserted, ' || pg_current_wal_flush_lsn() || ' flushed'")" >&2
exec "%(bindir)s/pg_rewind" "$@"
"""


def _bin_with_pg_rewind_at_a_switch(pair):
    """A bin directory for replication_pg_bin_dir: links to the real programs, pg_rewind wrapped."""
    path = os.path.join(pair.base, "bin")
    os.mkdir(path)
    for name in os.listdir(pair.bindir):
        if name != "pg_rewind":
            os.symlink(os.path.join(pair.bindir, name), os.path.join(path, name))
    script = os.path.join(path, "pg_rewind")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(PG_REWIND_AT_A_SWITCH % {"bindir": pair.bindir, "record": os.path.join(pair.base, "pg_rewind-login")})
    ent = pwd.getpwnam("postgres")
    os.chown(path, ent.pw_uid, ent.pw_gid)
    os.chmod(script, 0o755)
    return path


@pytest.fixture
def pair():
    built = make_pair(PAIR_SETTINGS)
    yield built
    built.destroy()


def _host(node, region):
    return {"fediflow_region": region, "fediflow_pg_host": "127.0.0.1", "fediflow_pg_port": node.port,
            "fediflow_pg_data_dir": node.data_dir, "fediflow_pg_socket_dir": node.socket_dir}


def _inventory(pair, path):
    inv = {"all": {
        "hosts": {"old": _host(pair.primary, "pair-old"), "new": _host(pair.standby, "pair-new")},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "fediflow_pg_superuser_password": pair.password, "fediflow_replication_user": REPLICATOR,
                 "fediflow_replication_password": pair.repl_password, "fediflow_wal_backend": "dir",
                 "fediflow_wal_archive_dir": pair.base + "/wal-archive", "fediflow_tools_dir": pair.base + "/tools"}}}
    path.write_text(yaml.safe_dump(inv))
    return path


def _rejoin(pair, tmp_path, *extra):
    import subprocess  # pylint: disable=import-outside-toplevel
    play = tmp_path / "rejoin.yml"
    play.write_text(REJOIN)
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(_inventory(pair, tmp_path / "hosts.yml")), str(play),
                           *extra],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, check=False)
    keep_log("rejoin.yml", proc, time.monotonic() - t0)
    return proc


def test_rewound_node_streams_when_the_serving_primary_idles_right_after_a_wal_segment_switch(pair, tmp_path):
    """pg_rewind makes the rewound node replay up to the serving primary's WAL insert position before
    it accepts connections. Right after an archive_timeout segment switch that position lies past the
    new segment's page header, where an idle primary writes nothing (the switch is no activity: no
    further switch, no standby snapshot). In the lab (archive_timeout=20 s) the switch fell between the
    rejoin's CHECKPOINT and pg_rewind at random, more often on a loaded machine: the rewound node never
    became consistent, pg_ctl start -w gave up after 60 s and the failback failed. The test pg_rewind
    (PG_REWIND_AT_A_SWITCH) puts the serving primary in that state every time."""
    old, new = pair.primary, pair.standby
    old.query("CREATE TABLE dr_rejoin_probe (id serial PRIMARY KEY, v text)")
    old.query("INSERT INTO dr_rejoin_probe (v) SELECT 'before' FROM generate_series(1, 100)")
    assert pair.wait_replayed()
    old.stop("immediate")  # the primary dies (not shut down cleanly: pg_rewind runs its crash recovery)
    new.one("SELECT pg_promote()")
    assert new.one("SELECT pg_is_in_recovery()") is False
    new.query("INSERT INTO dr_rejoin_probe (v) VALUES ('written after the promotion')")
    # what failback.yml's first play does on the serving primary: the returning node's slot
    new.query("SELECT pg_create_physical_replication_slot('standby_pair_old')")

    proc = _rejoin(pair, tmp_path, "-e", "replication_pg_bin_dir=%s" % _bin_with_pg_rewind_at_a_switch(pair))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # pg_rewind logged in with a password file: 0600 in a fresh 0700 directory, both the postgres user's,
    # never PGPASSWORD; the directory is gone now, and no password file lies beside the data directory
    with open(os.path.join(pair.base, "pg_rewind-login"), encoding="utf-8") as handle:
        login = handle.read().splitlines()
    assert login[0] == "PGPASSWORD=unset", login
    passfile = login[1].split("=", 1)[1]
    assert os.path.basename(os.path.dirname(passfile)).startswith("fediflow-pgpass-"), login
    assert login[2:] == ["600 postgres", "700 postgres"], login
    assert not os.path.exists(os.path.dirname(passfile))  # (not a count of /tmp: other tests run beside this one)
    assert not os.path.exists(os.path.join(os.path.dirname(old.data_dir), "rewind.pgpass"))
    assert pair.password not in proc.stdout + proc.stderr
    assert "rewound with pg_rewind" in proc.stdout and "cloned afresh" not in proc.stdout
    assert old.one("SELECT pg_is_in_recovery()") is True
    assert old.one("SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert old.one("SELECT count(*) FROM dr_rejoin_probe") == 101
    new.query("INSERT INTO dr_rejoin_probe (v) VALUES ('after the rejoin')")
    assert poll(lambda: old.one("SELECT count(*) FROM dr_rejoin_probe WHERE v = 'after the rejoin'") == 1, 30)
