"""PITR benchmark: fediflow.dr.pitr_restore against the manual steps, same base backup, same
WAL archive, same target, measured in the same run (ratio, not absolute times).

A throwaway PostgreSQL cluster (loopback, its own port, WAL archived by the collection's
fediflow_wal.py into a directory) holds a pgbench database of scale BENCH_SCALE (default 70,
~1.1 GB) in BENCH_DIR (default /var/tmp/fediflow-bench-pitr, its own, not the other benches').
A physical base backup is taken with pg_backup_verify (tar, no compression), then pgbench writes
~BENCH_WAL_MB (default 300) MB of WAL; the target time is taken halfway. Not a test: it prints.

  manual: extract base.tar + pg_wal.tar into a new directory, write port / restore_command
      (fediflow_wal.py fetch) / recovery_target_time / recovery_target_action=pause into
      postgresql.auto.conf, touch recovery.signal, pg_ctl start -w, poll until paused.
  ours:   `ansible localhost -m fediflow.dr.pitr_restore` with switch=false, action=pause
      (preflight of ledger + archive, the same restore, recovery polled to the target, then the
      integrity checks: row counts of every table, amcheck when installed).
Goal: ours <= 1.2x manual. BENCH_ROUNDS (default 2) alternated rounds, best of each shown.
`BENCH_SCALE=5 BENCH_WAL_MB=50 python bench/bench_pitr.py` for a quick run.
"""
import datetime
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from _common import BIN, PGBIN, ROOT, as_pg, free_port, pg_env, poll

SCALE = int(float(os.environ.get("BENCH_SCALE", "70")))
WAL_MB = int(float(os.environ.get("BENCH_WAL_MB", "300")))
BASE = Path(os.environ.get("BENCH_DIR", "/var/tmp/fediflow-bench-pitr"))
PGDATA = BASE / "pgdata"
ARCHIVE = BASE / "wal-archive"
TOOLS = BASE / "tools"
WAL_CONFIG = BASE / "fediflow-wal.json"
BACKUPS = BASE / "backups"
PASSWORD = "bench-only-not-secret"


def env(port, db="bench"):
    return pg_env(port, PASSWORD, db)


def psql(port, sql):
    out = subprocess.run([PGBIN / "psql", "-XAtq", "-c", sql], env=env(port), capture_output=True, text=True, check=True)
    return out.stdout.strip()


def chown(path):
    subprocess.run(["chown", "-R", "postgres:", str(path)], check=True)


def setup():
    """A fresh cluster with archiving, pgbench data, a base backup, WAL; returns (port, target time)."""
    if BASE.exists():
        stop(PGDATA)
        shutil.rmtree(BASE)
    for path in (BASE, ARCHIVE, TOOLS, BACKUPS):
        path.mkdir(parents=True)
    for src in (ROOT / "roles/replication/files/fediflow_wal.py", ROOT / "plugins/module_utils/walarchive.py"):
        shutil.copy(src, TOOLS)
    WAL_CONFIG.write_text(json.dumps({"backend": "dir", "repo": str(ARCHIVE)}))
    os.chmod(WAL_CONFIG, 0o600)
    chown(BASE)
    pw = BASE / "pw"
    pw.write_text(PASSWORD + "\n")
    chown(pw)
    as_pg([PGBIN / "initdb", "-D", PGDATA, "-U", "postgres", "--pwfile", pw, "--auth=scram-sha-256"],
          stdout=subprocess.DEVNULL)
    pw.unlink()
    port = free_port()
    with open(PGDATA / "postgresql.auto.conf", "a", encoding="utf-8") as handle:
        handle.write("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n"
                     "wal_level = replica\narchive_mode = on\n"
                     "archive_command = '/usr/bin/python3 %s/fediflow_wal.py --config %s push %%p %%f'\n"
                     "max_wal_size = '1GB'\nshared_buffers = '256MB'\n" % (port, BASE, TOOLS, WAL_CONFIG))
    as_pg([PGBIN / "pg_ctl", "start", "-D", PGDATA, "-l", BASE / "server.log", "-w"], stdout=subprocess.DEVNULL)
    subprocess.run([PGBIN / "createdb", "bench"], env=env(port, "postgres"), check=True)
    t0 = time.monotonic()
    subprocess.run([PGBIN / "pgbench", "-i", "-q", "-s", str(SCALE), "bench"], env=env(port), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    psql(port, "CREATE EXTENSION IF NOT EXISTS amcheck")
    print("pgbench scale %d created in %.0fs" % (SCALE, time.monotonic() - t0))
    t0 = time.monotonic()
    res = module("fediflow.dr.pg_backup_verify", {
        "mode": "physical", "compression": "none", "verify": "list", "login_host": "127.0.0.1", "login_port": port,
        "login_password": PASSWORD, "dest": str(BACKUPS), "cluster_name": "bench"})
    if not res.get("verified"):
        raise SystemExit("base backup failed: %s" % res.get("msg"))
    print("base backup %s (%.0f MB) in %.0fs" % (res["backup_id"], res["size_bytes"] / 1e6, time.monotonic() - t0))
    start_lsn = psql(port, "SELECT pg_current_wal_lsn()")
    target = None
    t0 = time.monotonic()
    while True:
        subprocess.run([PGBIN / "pgbench", "-n", "-c", "2", "-j", "2", "-t", "2000", "bench"], env=env(port), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        written = int(psql(port, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '%s')" % start_lsn))
        if target is None and written >= WAL_MB * 1e6 / 2:
            # the form PostgreSQL's recovery_target_time accepts (it rejects 2026-11-26T02:47:52Z)
            target = psql(port, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')")
        if written >= WAL_MB * 1e6:
            break
    seg = psql(port, "SELECT pg_walfile_name(pg_switch_wal())")
    if not poll(lambda: psql(port, "SELECT last_archived_wal >= '%s' FROM pg_stat_archiver" % seg) == "t", 300):
        raise SystemExit("WAL not archived")
    print("%d MB of WAL written and archived in %.0fs; target %s" % (written / 1e6, time.monotonic() - t0, target))
    return port, target


def stop(data_dir):
    if (Path(data_dir) / "postmaster.pid").exists():
        as_pg([PGBIN / "pg_ctl", "stop", "-D", data_dir, "-m", "immediate", "-w"], check=False,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def module(name, params):
    run_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                   ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".build" / "collections"),
                   ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = subprocess.run([BIN / "ansible", "localhost", "-c", "local", "-i", "localhost,", "-m", name,
                           "-a", json.dumps(params), "-e", "ansible_python_interpreter=%s" % sys.executable],
                          cwd=ROOT, env=run_env, capture_output=True, text=True, check=False)
    return next(iter(json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"].values()))


def manual(target):
    """The steps by hand, timed per phase."""
    phases = {}
    new = BASE / "manual"
    backup = BACKUPS / sorted(os.listdir(BACKUPS))[-1]
    t0 = time.monotonic()
    new.mkdir(mode=0o700)
    with tarfile.open(backup / "base.tar") as tar:
        tar.extractall(new, filter="fully_trusted")
    with tarfile.open(backup / "pg_wal.tar") as tar:
        tar.extractall(new / "pg_wal", filter="fully_trusted")
    (new / "postmaster.pid").unlink(missing_ok=True)
    port = free_port()
    with open(new / "postgresql.auto.conf", "a", encoding="utf-8") as handle:
        handle.write("port = %d\nrestore_command = '/usr/bin/python3 %s/fediflow_wal.py --config %s fetch %%f %%p'\n"
                     "recovery_target_time = '%s'\nrecovery_target_action = 'pause'\n" % (port, TOOLS, WAL_CONFIG, target))
    (new / "recovery.signal").write_text("")
    chown(new)
    phases["extract+settings"] = round(time.monotonic() - t0, 2)
    t1 = time.monotonic()
    as_pg([PGBIN / "pg_ctl", "start", "-D", new, "-l", BASE / "manual.log", "-w", "-t", "3600"], stdout=subprocess.DEVNULL)
    if not poll(lambda: psql(port, "SELECT pg_get_wal_replay_pause_state()") == "paused", 3600):
        raise SystemExit("manual restore did not pause at the target")
    phases["recovery"] = round(time.monotonic() - t1, 2)
    total = time.monotonic() - t0
    stop(new)
    shutil.rmtree(new)
    return total, phases


def ours(target):
    port = free_port()
    t0 = time.monotonic()
    res = module("fediflow.dr.pitr_restore", {
        "data_dir": str(PGDATA), "target_time": target, "action": "pause", "switch": False, "restore_port": port,
        "backup_dest": str(BACKUPS), "wal_config": str(WAL_CONFIG), "wal_tool": str(TOOLS / "fediflow_wal.py"),
        "login_host": "127.0.0.1", "login_password": PASSWORD, "db": "bench"})
    total = time.monotonic() - t0
    if res.get("failed"):
        raise SystemExit("pitr_restore failed: %s" % res.get("msg"))
    stop(res["new_data_dir"])
    shutil.rmtree(res["new_data_dir"])
    return total, res


def main():
    port, target = setup()
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    manuals, ourss = [], []
    try:
        for _round in range(rounds):  # alternated, so neither side always gets the warmer cache
            manuals.append(manual(target))
            ourss.append(ours(target))
    finally:
        stop(PGDATA)
    t_manual, p_manual = min(manuals, key=lambda r: r[0])
    t_ours, res = min(ourss, key=lambda r: r[0])
    print("\nrounds: manual %s s; ours %s s (best of each below)" % (
        ", ".join("%.2f" % r[0] for r in manuals), ", ".join("%.2f" % r[0] for r in ourss)))
    print("\npgbench scale %d, ~%d MB WAL, target %s; ours = whole `ansible` call (module duration_s in brackets)\n"
          % (SCALE, WAL_MB, target))
    head = "%-34s %10s %18s %16s  %s"
    print(head % ("measure", "manual s", "ours s [module]", "ratio [module]", "goal"))
    print(head % ("PITR to a time, paused at target", "%.2f" % t_manual, "%.2f [%.2f]" % (t_ours, res["duration_s"]),
                  "%.2f [%.2f]" % (t_ours / t_manual, res["duration_s"] / t_manual), "<= 1.2x manual"))
    print("\nmanual phases: %s" % json.dumps(p_manual))
    print("ours phases:   %s" % json.dumps(res["phases"]))
    print("ours: base %s, WAL segments replayed %s, reached %s" % (
        res["base_backup"]["id"], res["wal_segments_replayed"], json.dumps(res["reached"])))
    print("generated %s" % datetime.datetime.now(datetime.timezone.utc).isoformat())


if __name__ == "__main__":
    main()
