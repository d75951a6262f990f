"""Backup benchmarks: pg_backup_verify against the runbook's pipeline and the floors named in
shared/BENCH.md, measured in the same run on the same database (ratios, not absolute times).

A throwaway PostgreSQL cluster (no archiving, loopback, its own port) holds a pgbench database
of scale BENCH_SCALE (default 70, ~1.1 GB); it is kept under /var/tmp/fediflow-bench between
runs. `BENCH_SCALE=5 python bench/bench_backup.py` for a quick run. Not a test: it prints.

Rows (anchor -> ours):
  logical + list-verify: floor `pg_dump -Fc -Z0 > /dev/null` and the runbook's
      `pg_dump -Fc -Z9 | gzip -9` + `pg_restore --list` -> pg_backup_verify verify=list
  logical + verify by restore: sequential pg_dump -Z1, pg_restore -j2 into scratch, row counts
      -> pg_backup_verify verify=restore
  physical: `pg_basebackup -Ft --compress=server-zstd` (pgBackRest's 5.6 s from BENCH.md is
      quoted, not run: it needs TLS to reach S3 and its own stanza) -> pg_backup_verify
      physical zstd verify=list (every file checked against backup_manifest)
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import BIN, PGBIN, ROOT, as_pg, free_port, pg_env

SCALE = int(float(os.environ.get("BENCH_SCALE", "70")))
BASE = Path(os.environ.get("BENCH_DIR", "/var/tmp/fediflow-bench"))
PGDATA = BASE / "pgdata"
OUT = BASE / "out"
PASSWORD = "bench-only-not-secret"


def env(port):
    return pg_env(port, PASSWORD)


def cluster():
    """Start (creating if needed) the bench cluster; returns its port."""
    BASE.mkdir(parents=True, exist_ok=True)
    shutil.chown(BASE, "postgres")
    port = free_port()
    if not (PGDATA / "PG_VERSION").exists():
        pw = BASE / "pw"
        pw.write_text(PASSWORD + "\n")
        shutil.chown(pw, "postgres")
        as_pg([PGBIN / "initdb", "-D", PGDATA, "-U", "postgres", "--pwfile", pw, "--auth=scram-sha-256"],
              stdout=subprocess.DEVNULL)
        pw.unlink()
    with open(PGDATA / "postgresql.auto.conf", "a", encoding="utf-8") as handle:
        handle.write("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n"
                     "archive_mode = off\nmax_wal_size = '4GB'\nshared_buffers = '256MB'\n" % (port, BASE))
    as_pg([PGBIN / "pg_ctl", "start", "-D", PGDATA, "-l", BASE / "server.log", "-w"], stdout=subprocess.DEVNULL)
    e = env(port)
    marker = BASE / ("scale-%d" % SCALE)
    if not marker.exists():
        for old in glob.glob(str(BASE / "scale-*")):
            os.unlink(old)
        subprocess.run([PGBIN / "dropdb", "--if-exists", "bench"], env=e, check=True)
        subprocess.run([PGBIN / "createdb", "bench"], env=e, check=True)
        t0 = time.monotonic()
        subprocess.run([PGBIN / "pgbench", "-i", "-q", "-s", str(SCALE), "bench"], env=e, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("created pgbench scale %d in %.0fs" % (SCALE, time.monotonic() - t0))
        marker.write_text("")
    return port


def timed(fn):
    t0 = time.monotonic()
    out = fn()
    return time.monotonic() - t0, out


def size(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fresh(name):
    path = OUT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def runbook(port):
    target = fresh("runbook") / "db.dump.gz"
    with open(target, "wb") as out:
        dump = subprocess.Popen([PGBIN / "pg_dump", "-Fc", "-Z9", "bench"], env=env(port), stdout=subprocess.PIPE)
        gz = subprocess.run(["gzip", "-9"], stdin=dump.stdout, stdout=out, check=True)
        dump.stdout.close()
        dump.wait()
    listed = subprocess.run([PGBIN / "pg_restore", "--list", target], capture_output=True, check=False)
    return {"bytes": size(target), "list_rc": listed.returncode, "gzip_rc": gz.returncode}


def floor(port):
    with open(os.devnull, "wb") as null:
        subprocess.run([PGBIN / "pg_dump", "-Fc", "-Z0", "bench"], env=env(port), stdout=null, check=True)
    return {"bytes": None}


def sequential_restore(port):
    e = env(port)
    target = fresh("sequential") / "db.dump"
    subprocess.run([PGBIN / "pg_dump", "-Fc", "-Z1", "-f", target, "bench"], env=e, check=True)
    subprocess.run([PGBIN / "dropdb", "--if-exists", "bench_scratch"], env=e, check=True)
    subprocess.run([PGBIN / "createdb", "bench_scratch"], env=e, check=True)
    subprocess.run([PGBIN / "pg_restore", "-j2", "-d", "bench_scratch", target], env=e, check=True)
    for table in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"):
        subprocess.run([PGBIN / "psql", "-qAt", "-d", "bench_scratch", "-c", "SELECT count(*) FROM %s" % table],
                       env=e, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([PGBIN / "dropdb", "bench_scratch"], env=e, check=True)
    return {"bytes": size(target)}


def basebackup(port):
    target = fresh("basebackup")
    subprocess.run([PGBIN / "pg_basebackup", "-D", target, "-Ft", "--compress=server-zstd", "-X", "stream",
                    "--checkpoint=fast"], env=env(port), check=True)
    return {"bytes": size(target)}


def ours(port, **args):
    """pg_backup_verify the way a user runs it (an ad hoc ansible call)."""
    dest = fresh("ours-%s-%s" % (args.get("mode", "logical"), args.get("verify", "list")))
    params = dict(login_host="127.0.0.1", login_port=port, login_password=PASSWORD, db="bench", dest=str(dest))
    params.update(args)
    run_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                   ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".build" / "collections"),
                   ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = subprocess.run([BIN / "ansible", "localhost", "-c", "local", "-i", "localhost,", "-m",
                           "fediflow.dr.pg_backup_verify", "-a", json.dumps(params),
                           "-e", "ansible_python_interpreter=%s" % sys.executable],
                          cwd=ROOT, env=run_env, capture_output=True, text=True, check=False)
    res = next(iter(json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"].values()))
    if res.get("failed") or not res.get("verified"):
        raise SystemExit("pg_backup_verify failed: %s" % res.get("msg"))
    return {"bytes": res["size_bytes"], "module_s": res["duration_s"], "phases": res.get("phases")}


def main():
    port = cluster()
    rows = []
    try:
        t_floor = timed(lambda: floor(port))[0]
        t_runbook, rb = timed(lambda: runbook(port))
        t_list, ol = timed(lambda: ours(port, verify="list", compression="none"))
        t_list1, ol1 = timed(lambda: ours(port, verify="list", compression="gzip", compression_level=1))
        t_seq, sq = timed(lambda: sequential_restore(port))
        t_rest, orr = timed(lambda: ours(port, verify="restore", compression="gzip", compression_level=1))
        t_base, bb = timed(lambda: basebackup(port))
        t_phys, op = timed(lambda: ours(port, mode="physical", compression="zstd", verify="list"))
        rows = [
            ("logical + list-verify (Z0)", "floor pg_dump -Z0 >/dev/null", t_floor, None, t_list, ol, "<= 1.1x floor"),
            ("logical + list-verify (gzip 1)", "floor pg_dump -Z0 >/dev/null", t_floor, None, t_list1, ol1, "<= 1.1x floor"),
            ("logical, runbook pipeline", "pg_dump -Z9 | gzip -9 + list", t_runbook, rb["bytes"], t_list1, ol1,
             "runbook's list-verify exits %d" % rb["list_rc"]),
            ("logical + verify by restore", "sequential dump, restore -j2, counts", t_seq, sq["bytes"], t_rest, orr,
             "<= 0.9x"),
            ("physical, every file checked", "pg_basebackup -Ft server-zstd", t_base, bb["bytes"], t_phys, op,
             "<= 0.6x pgBackRest (5.6 s in BENCH.md)"),
        ]
    finally:
        as_pg([PGBIN / "pg_ctl", "stop", "-D", PGDATA, "-m", "fast", "-w"], stdout=subprocess.DEVNULL)
    print("\npgbench scale %d; ours = whole `ansible` call wall time (module duration_s in brackets)\n" % SCALE)
    head = "%-32s %-38s %9s %9s %16s %13s  %s"
    print(head % ("measure", "anchor", "anchor s", "anchor MB", "ours s", "ratio [module]", "goal"))
    for name, anchor, ta, ba, to, res, goal in rows:
        print(head % (name, anchor, "%.2f" % ta, "%.1f" % (ba / 1e6) if ba else "-",
                      "%.2f [%.2f]" % (to, res["module_s"]), "%.2f [%.2f]" % (to / ta, res["module_s"] / ta), goal))
    print("\nour bytes: " + ", ".join("%s %.1f MB" % (r[0], r[5]["bytes"] / 1e6) for r in rows))
    print("module phases: " + json.dumps({r[0]: r[5]["phases"] for r in rows}))


if __name__ == "__main__":
    main()
