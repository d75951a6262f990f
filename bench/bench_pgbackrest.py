"""pgBackRest as the engine (issue 21, shared/BENCH.md): the collection's pgBackRest modules against raw
`pgbackrest` commands and the native engine, side by side in one run, at pgbench scale 70 (~1.1 GB) and 280
(~4.4 GB), with how each figure grows from one size to the other.

Rows, per scale (BENCH_SCALES, default "70,280"; a database per scale is kept under BENCH_DIR between runs):
  full / incr / diff backups, into both regions' repositories (each region's S3 of the lab, pgBackRest through
      its TLS front): raw `pgbackrest backup --repo=1` + `--repo=2` vs fediflow.dr.pgbackrest_backup (the whole
      `ansible` call and its duration_s) with the configuration pgbackrest_config writes by default (lz4,
      process-max 2, bundles, archive-copy, async archiving) and the module's default proof (verify=list:
      `pgbackrest verify` of each new backup, shown apart); the incr after 1 % of pgbench_accounts' rows changed (random rows, as
      pgbench's own updates fall), the diff after a second 1 %; the native engine's full
      (pg_backup_verify physical with the backup role's defaults: zstd, verify=list, both regions) beside them -
      it has no incremental;
  restore: `pgbackrest restore` of the newest backup (full + incr) into a new directory (what PITR starts from);
  WAL: segments archived per second while pgbench writes at full speed for BENCH_WAL_S (default 30) seconds,
      native (fediflow_wal.py, both regions) vs pgBackRest async to one and to two repositories, and the lag left
      when pgbench stops (segments not yet archived; seconds until the archiver caught up).
Not a test: it prints. The lab must be up (make lab-up; FEDIFLOW_LAB_INVENTORY for another lab).
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import BIN, PGBIN, ROOT, ansible_env, as_pg, free_port, lab_hostvars, poll, s3_endpoint

sys.path.insert(0, str(ROOT / ".build" / "collections"))
from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest  # noqa: E402  pylint: disable=wrong-import-position

SCALES = [int(x) for x in os.environ.get("BENCH_SCALES", "70,280").split(",") if x.strip()]
BASE = Path(os.environ.get("BENCH_DIR", "/var/tmp/fediflow-bench-pgbackrest"))
WAL_S = int(os.environ.get("BENCH_WAL_S", "30"))


def call(module, args):
    """One ad hoc ``ansible`` call, as a user runs it: (result, wall seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible"), "localhost", "-c", "local", "-i", "localhost,", "-m",
                           "fediflow.dr." + module, "-a", json.dumps(args),
                           "-e", "ansible_python_interpreter=%s" % sys.executable],
                          cwd=str(ROOT), env=ansible_env(json_callback=True), capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    res = next(iter(json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"].values()))
    if res.get("failed"):
        sys.exit("%s failed: %s" % (module, res.get("msg")))
    return res, wall


class Cluster:
    def __init__(self, scale):
        self.scale = scale
        self.base = BASE / ("s%d" % scale)
        self.data = self.base / "pgdata"
        self.sock = self.base / "run"
        self.port = free_port()

    def env(self, db="bench"):
        return dict(os.environ, PGHOST=str(self.sock), PGPORT=str(self.port), PGUSER="postgres", PGDATABASE=db)

    def sql(self, text, db="bench"):
        out = as_pg([PGBIN / "psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h", self.sock, "-p", self.port, "-d", db,
                     "-c", text], capture_output=True, text=True)
        return out.stdout.strip()

    def start(self):
        for path in (BASE, self.base, self.sock):
            path.mkdir(parents=True, exist_ok=True)
            shutil.chown(path, "postgres")
        if not (self.data / "PG_VERSION").exists():
            as_pg([PGBIN / "initdb", "-D", self.data, "-U", "postgres", "--auth-local=peer",
                   "--auth-host=scram-sha-256", "--no-sync"], stdout=subprocess.DEVNULL)
        if (self.data / "postmaster.pid").exists():   # left running by an interrupted run: its port is stale
            self.stop()
        with open(self.data / "postgresql.auto.conf", "a", encoding="utf-8") as handle:
            handle.write("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nwal_level = replica\n"
                         "archive_mode = on\narchive_command = '/bin/false'\narchive_timeout = 20\n"
                         "max_wal_size = '4GB'\nshared_buffers = '256MB'\n" % (self.port, self.sock))
        as_pg([PGBIN / "pg_ctl", "start", "-D", self.data, "-l", self.base / "server.log", "-w"], stdout=subprocess.DEVNULL)
        marker = self.base / "pgbench-ready"
        if not marker.exists():
            as_pg([PGBIN / "createdb", "-h", self.sock, "-p", self.port, "bench"], check=False, stderr=subprocess.DEVNULL)
            t0 = time.monotonic()
            as_pg([PGBIN / "pgbench", "-i", "-q", "-s", self.scale, "-h", self.sock, "-p", self.port, "bench"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print("created pgbench scale %d in %.0f s" % (self.scale, time.monotonic() - t0))
            marker.write_text("")

    def stop(self):
        as_pg([PGBIN / "pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w"], check=False, stdout=subprocess.DEVNULL)

    def archive_command(self, command):
        self.sql("ALTER SYSTEM SET archive_command = '%s'" % command.replace("'", "''"))
        self.sql("SELECT pg_reload_conf()")
        poll(lambda: self.sql("SHOW archive_command") == command, 10)

    def churn(self, fraction=0.01):
        """``fraction`` of pgbench_accounts' rows changed, chosen at random (as pgbench's updates fall)."""
        rows = int(self.sql("SELECT count(*) FROM pgbench_accounts"))
        self.sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN "
                 "(SELECT 1 + floor(random() * %d)::int FROM generate_series(1, %d))" % (rows, int(rows * fraction)))
        self.sql("CHECKPOINT")

    def archived(self):
        return int(self.sql("SELECT archived_count FROM pg_stat_archiver"))

    def unarchived(self):
        """Segments written but not archived yet (.ready files in pg_wal/archive_status)."""
        status = self.data / "pg_wal" / "archive_status"
        return sum(1 for name in os.listdir(status) if name.endswith(".ready"))


def pgbr(config, stanza, name, *options, check=True):
    argv = pgbackrest.command(pgbackrest.binary(), config, stanza, name, *options)
    t0 = time.monotonic()
    proc = as_pg(argv, check=False, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit("pgbackrest %s failed: %s" % (name, proc.stdout[-2000:] + proc.stderr[-2000:]))
    return time.monotonic() - t0, proc


def wal_rate(cluster, command, seconds):
    cluster.archive_command(command)
    cluster.sql("SELECT pg_switch_wal()")
    poll(lambda: cluster.unarchived() == 0, 120, interval=0.5)
    before = cluster.archived()
    as_pg([PGBIN / "pgbench", "-n", "-c", "2", "-j", "2", "-T", seconds, "-b", "simple-update", "-h", cluster.sock,
           "-p", cluster.port, "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = cluster.archived() - before
    lag = cluster.unarchived()
    t0 = time.monotonic()
    caught = poll(lambda: cluster.unarchived() == 0, 300, interval=0.2)
    return {"rate": done / float(seconds), "lag": lag, "catch_up": (time.monotonic() - t0) if caught else None,
            "archived": done}


def native_wal_config(work, hvs):
    tools = work / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "roles/replication/files/fediflow_wal.py", ROOT / "plugins/module_utils/walarchive.py"):
        shutil.copy(str(src), tools)
    cfg = work / "wal.json"
    repos = [{"name": hv["fediflow_region"], "backend": "s3", "bucket": hv["fediflow_backup_bucket"],
              "prefix": "bench/pgbackrest-native-wal", "endpoint_url": s3_endpoint(hv), "region": hv["fediflow_region"],
              "access_key": hv["fediflow_aws_access_key"], "secret_key": hv["fediflow_aws_secret_key"]} for hv in hvs]
    with open(os.open(str(cfg), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump({"repositories": repos}, handle)
    for path in (work, tools, cfg, tools / "fediflow_wal.py", tools / "walarchive.py"):
        shutil.chown(path, "postgres")
    return "/usr/bin/python3 %s --config %s push %%p %%f" % (tools / "fediflow_wal.py", cfg)


def measure(scale, hvs):
    regions = [hv["fediflow_region"] for hv in hvs]
    cluster = Cluster(scale)
    cluster.start()
    out = {}
    try:
        size = int(cluster.sql("SELECT pg_database_size('bench')"))
        out["db_bytes"] = size
        stanza = "bench%d-%d" % (scale, int(time.time()))
        etc = cluster.base / "etc"
        pg = {"data_dir": str(cluster.data), "port": cluster.port, "socket_dir": str(cluster.sock)}
        common = {"stanza": stanza, "owner": "postgres", "pg": pg,
                  "ca_file": hvs[0]["fediflow_pg_ca_cert"], "access_key": hvs[0]["fediflow_aws_access_key"],
                  "secret_key": hvs[0]["fediflow_aws_secret_key"], "spool_path": str(cluster.base / "spool"),
                  "log_path": str(cluster.base / "log"), "lock_path": str(cluster.base / "lock")}
        repos = [{"name": hv["fediflow_region"], "bucket": hv["fediflow_backup_bucket"], "region": hv["fediflow_region"],
                  "endpoint_url": hv["fediflow_s3_tls_endpoint_url"]} for hv in hvs]
        both, _w = call("pgbackrest_config", dict(common, path=str(etc / "both.conf"), repositories=repos))
        one, _w = call("pgbackrest_config", dict(common, path=str(etc / "one.conf"), repositories=repos[:1]))
        pgbr(both["path"], stanza, "stanza-create")   # before archiving starts (it takes the archive lock)
        cluster.archive_command(both["archive_command"])

        def raw(kind):
            took = 0.0
            for key in (1, 2):
                took += pgbr(both["path"], stanza, "backup", "--type=" + kind, "--repo=%d" % key)[0]
            return took

        def engine(kind):
            res, wall = call("pgbackrest_backup", {"config": both["path"], "stanza": stanza, "type": kind,
                                                   "repositories": regions})
            return res, wall

        # raw pgBackRest: full, 1 % churn, incr, 1 % churn, diff
        out["raw"] = {"full": raw("full")}
        cluster.churn()
        out["raw"]["incr"] = raw("incr")
        cluster.churn()
        out["raw"]["diff"] = raw("diff")
        # the collection's module: the same sequence, each after its own full
        out["engine"], out["engine_module"], out["engine_bytes"], out["engine_verify"] = {}, {}, {}, {}
        for kind in ("full", "incr", "diff"):
            if kind != "full":
                cluster.churn()
            res, wall = engine(kind)
            out["engine"][kind], out["engine_module"][kind] = wall, res["duration_s"]
            out["engine_verify"][kind] = (res.get("phases") or {}).get("verify", 0.0)
            out["engine_bytes"][kind] = sum(b["repo_delta"] for b in res["backups"])
        # native engine's full, what the backup role runs by default (zstd, verify=list), both regions
        native_dest = cluster.base / "native"
        shutil.rmtree(native_dest, ignore_errors=True)
        native_dest.mkdir(parents=True)
        pw = "bench-only-native"
        cluster.sql("ALTER USER postgres PASSWORD '%s'" % pw)
        native, nwall = call("pg_backup_verify", {
            "mode": "physical", "verify": "list", "compression": "zstd", "login_host": "127.0.0.1",
            "login_port": cluster.port, "login_password": pw, "db": "bench", "dest": str(native_dest),
            "s3_prefix": "bench/pgbackrest-native", "access_key": hvs[0]["fediflow_aws_access_key"],
            "secret_key": hvs[0]["fediflow_aws_secret_key"],
            "repositories": [{"name": hv["fediflow_region"], "bucket": hv["fediflow_backup_bucket"],
                              "region": hv["fediflow_region"], "endpoint_url": s3_endpoint(hv)} for hv in hvs]})
        out["native_full"] = nwall
        out["native_bytes"] = native["size_bytes"]
        # restore of the newest backup (the engine's diff: full + diff) into a new directory
        target = cluster.base / "restored"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(mode=0o700)
        shutil.chown(target, "postgres")
        took, _p = pgbr(both["path"], stanza, "restore", "--pg1-path=%s" % target, "--repo=1",
                        "--type=immediate", "--target-action=promote")
        out["restore"] = took
        shutil.rmtree(target, ignore_errors=True)
        # WAL sustained under pgbench at full speed
        work = cluster.base / "native-wal"
        out["wal"] = {"native 2 repos": wal_rate(cluster, native_wal_config(work, hvs), WAL_S),
                      "pgBackRest async 1 repo": wal_rate(cluster, one["archive_command"], WAL_S),
                      "pgBackRest async 2 repos": wal_rate(cluster, both["archive_command"], WAL_S)}
        cluster.archive_command("/bin/false")
    finally:
        cluster.stop()
    return out


def main():
    hvs = lab_hostvars()
    if not all(hv.get("fediflow_s3_tls_endpoint_url") for hv in hvs):
        sys.exit("the lab inventory names no S3 TLS front (fediflow_s3_tls_endpoint_url): pgBackRest needs HTTPS")
    results = {s: measure(s, hvs) for s in SCALES}
    cols = SCALES
    head = "%-46s" + " %16s" * len(cols) + ("  %s" % ("%d/%d" % (cols[-1], cols[0])) if len(cols) > 1 else "")
    print("\npgBackRest %s; lab S3 of %s (moto behind the TLS front); 2 cores\n"
          % (pgbackrest_version(), ", ".join(hv["fediflow_region"] for hv in hvs)))
    print(head % tuple(["measure"] + ["scale %d (%.1f GB)" % (s, results[s]["db_bytes"] / 1e9) for s in cols]))

    def row(name, get, fmt="%.1f s"):
        vals = [get(results[s]) for s in cols]
        growth = ("  %.2fx" % (vals[-1] / vals[0]) if len(cols) > 1 and vals[0] else "")
        print(("%-46s" + " %16s" * len(cols)) % tuple([name] + [fmt % v if v is not None else "-" for v in vals]) + growth)

    for kind in ("full", "incr", "diff"):
        row("%s: raw pgbackrest, both repos" % kind, lambda r, k=kind: r["raw"][k])
        row("%s: pgbackrest_backup (ansible call)" % kind, lambda r, k=kind: r["engine"][k])
        row("%s: pgbackrest_backup duration_s" % kind, lambda r, k=kind: r["engine_module"][k])
        row("%s:   of which verify=list (default)" % kind, lambda r, k=kind: r["engine_verify"][k])
        row("%s: engine / raw (whole call)" % kind, lambda r, k=kind: r["engine"][k] / r["raw"][k], "%.2fx")
        row("%s: engine / raw (module, verify aside)" % kind,
            lambda r, k=kind: (r["engine_module"][k] - r["engine_verify"][k]) / r["raw"][k], "%.2fx")
        row("%s: repository bytes (both repos)" % kind, lambda r, k=kind: r["engine_bytes"][k] / 1e6, "%.1f MB")
    row("incr / full (engine)", lambda r: r["engine"]["incr"] / r["engine"]["full"], "%.2fx")
    row("diff / full (engine)", lambda r: r["engine"]["diff"] / r["engine"]["full"], "%.2fx")
    row("full: native pg_backup_verify (zstd, list)", lambda r: r["native_full"])
    row("full: native / engine", lambda r: r["native_full"] / r["engine"]["full"], "%.2fx")
    row("full: native bytes (one copy)", lambda r: r["native_bytes"] / 1e6, "%.1f MB")
    row("restore (pgbackrest restore, newest)", lambda r: r["restore"])
    for name in ("native 2 repos", "pgBackRest async 1 repo", "pgBackRest async 2 repos"):
        row("WAL %s: segments/s" % name, lambda r, n=name: r["wal"][n]["rate"], "%.2f")
        row("WAL %s: unarchived at end" % name, lambda r, n=name: r["wal"][n]["lag"], "%d")
        row("WAL %s: catch-up" % name, lambda r, n=name: r["wal"][n]["catch_up"])
    print("\nchurn: 1 %% of pgbench_accounts' rows at random before the incr, another 1 %% before the diff; WAL: "
          "pgbench simple-update, 2 clients, %d s" % WAL_S)


def pgbackrest_version():
    return subprocess.run([pgbackrest.binary(), "version"], capture_output=True, text=True, check=False).stdout.strip()


if __name__ == "__main__":
    main()
