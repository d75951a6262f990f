"""pgBackRest on a throwaway cluster of the lab (pitr_fixtures.ArchivedCluster), shared by the pgBackRest tests:
one repository per region - each region's backup bucket on that region's own S3, reached through its TLS front (the
lab CA's certificate; pgBackRest speaks only HTTPS to S3) - with the lab's IAM enforcement on and two identities, as
the native engine has them: the WAL identity's file for archive_command, the backup identity's for stanza-create,
backups, info and restore. A stanza of its own per run keeps it apart inside the lab's repositories (Object Lock
keeps them a day; nothing else reads there); destroying the cluster removes everything else it made."""
import os
import subprocess
import sys
import uuid

from lab_fixtures import COLLECTIONS, inventory, module
from pair_fixtures import OS_USER

# the collection as scripts/setup.sh built it (its plain logic: the argv of a command, the info parser)
sys.path.insert(0, str(COLLECTIONS))
from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest  # noqa: E402  pylint: disable=wrong-import-position


def repositories(prefix=""):
    """The lab's repository list for pgBackRest: each region's backup bucket through its S3's TLS front."""
    out = []
    for hv in inventory():
        assert hv.get("fediflow_s3_tls_endpoint_url"), "the lab inventory gives each region's S3 a TLS front"
        out.append({"name": hv["fediflow_region"], "bucket": hv["fediflow_backup_bucket"], "prefix": prefix,
                    "region": hv["fediflow_region"], "endpoint_url": hv["fediflow_s3_tls_endpoint_url"]})
    return out


def regions():
    return [hv["fediflow_region"] for hv in inventory()]


def configure(cluster, primary, stanza=None):
    """pgbackrest_config for ``cluster``: the WAL identity's file, the backup identity's and the WAL expiry identity's
    (pgbackrest expire), in the cluster's own directory. Returns ``{cluster, stanza, wal, backup, expire, common,
    primary}`` (wal/backup/expire: the modules' results)."""
    stanza = stanza or "it-%s" % uuid.uuid4().hex[:8]
    etc = os.path.join(cluster.base, "etc")
    common = {"stanza": stanza, "owner": OS_USER, "repositories": repositories(),
              "pg": {"data_dir": cluster.data_dir, "port": cluster.node.port, "socket_dir": cluster.node.socket_dir},
              "ca_file": primary["fediflow_pg_ca_cert"], "spool_path": os.path.join(cluster.base, "spool"),
              "log_path": os.path.join(cluster.base, "log"), "lock_path": os.path.join(cluster.base, "lock")}
    wal = module("fediflow.dr.pgbackrest_config", dict(common, path=os.path.join(etc, "wal.conf"),
                                                       access_key=primary["fediflow_s3_wal_access_key"],
                                                       secret_key=primary["fediflow_s3_wal_secret_key"]))
    backup = module("fediflow.dr.pgbackrest_config", dict(common, path=os.path.join(etc, "backup.conf"),
                                                          access_key=primary["fediflow_s3_backup_access_key"],
                                                          secret_key=primary["fediflow_s3_backup_secret_key"]))
    expire = module("fediflow.dr.pgbackrest_config", dict(common, path=os.path.join(etc, "expire.conf"),
                                                          access_key=primary["fediflow_s3_wal_expire_access_key"],
                                                          secret_key=primary["fediflow_s3_wal_expire_secret_key"]))
    assert not any(r.get("failed") for r in (wal, backup, expire)), (wal.get("msg"), backup.get("msg"), expire.get("msg"))
    return {"cluster": cluster, "stanza": stanza, "wal": wal, "backup": backup, "expire": expire, "common": common,
            "primary": primary}


def run_pgbackrest(engine, name, *options, config="backup", args=(), timeout=300):
    """A pgBackRest command as the cluster's OS user with one of the engine's files (``backup`` or ``wal``);
    ``args``: its arguments (after the command's name)."""
    argv = pgbackrest.command(pgbackrest.binary(), engine[config]["path"], engine["stanza"], name, *options) + list(args)
    return subprocess.run(["runuser", "-u", OS_USER, "--"] + argv, cwd="/", capture_output=True, text=True,
                          timeout=timeout, check=False)


def take_backup(engine, kind, check_mode=False, config=None, **extra):
    """fediflow.dr.pgbackrest_backup of ``kind`` into every region's repository."""
    return module("fediflow.dr.pgbackrest_backup", dict({
        "config": config or engine["backup"]["path"], "stanza": engine["stanza"], "type": kind,
        "repositories": regions()}, **extra), check_mode=check_mode)


def archive_through_pgbackrest(engine):
    """The cluster's archive_command becomes the WAL identity's archive-push (reloaded, polled until in effect)."""
    from lab_fixtures import poll
    node = engine["cluster"].node
    node.query("ALTER SYSTEM SET archive_command = %s", (engine["wal"]["archive_command"],))
    node.query("SELECT pg_reload_conf()")
    assert poll(lambda: node.one("SHOW archive_command") == engine["wal"]["archive_command"], 10)
