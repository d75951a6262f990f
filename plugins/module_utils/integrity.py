# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integrity validation (``integrity_check``): after a backup, a restore or a failover, is the
system whole? Each check compares what is with what should be and says so as plain data:

- database: ``db_amcheck`` (amcheck's ``bt_index_check`` on the largest B-tree indexes, where the
  extension is installed), ``db_sequences`` (every sequence owned by a column is at or ahead of
  the column's max), ``db_row_counts`` (every table against the per-table row counts the newest
  verified logical backup recorded in the ledger, within a tolerance);
- file_storage: ``media_snapshot`` (the newest media snapshot verifies, s3_snapshot's verify);
- app_config: ``app_database_role`` (each region's configmap says DATABASE_ROLE=primary where
  PostgreSQL really is primary, standby elsewhere), ``app_dns_record`` (the app record serves the
  primary region's endpoint);
- security: ``pg_hba_trust`` (no ``trust`` line for non-local addresses; loopback trust allowed
  and reported), ``backup_file_modes`` (backup files readable by their owner only),
  ``bucket_security`` (default encryption, every public access block setting on, no public ACL
  grant), ``report_secrets`` (no secret value of the inventory in any report file: the file and
  the variable's name are reported, never the value).

Every check is read-only, returns ``{name, category, target, ok, compared, details}`` and never
raises: a check that cannot run (server down, bucket missing) fails with the reason, so one run
reports every check. The comparisons are pure functions, unit-tested with plain data.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import time

from ansible_collections.fediflow.dr.plugins.module_utils import aws, backup, ledger, postgres, route53
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer

CHECKS = {
    "db_amcheck": "database",
    "db_sequences": "database",
    "db_row_counts": "database",
    "media_snapshot": "file_storage",
    "app_database_role": "app_config",
    "app_dns_record": "app_config",
    "pg_hba_trust": "security",
    "backup_file_modes": "security",
    "bucket_security": "security",
    "report_secrets": "security",
}
CATEGORIES = ("database", "file_storage", "app_config", "security")
PUBLIC_GROUPS = ("http://acs.amazonaws.com/groups/global/AllUsers",
                 "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")
BLOCK_KEYS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
MIN_SECRET_LEN = 4          # shorter values would match everywhere
SCAN_MAX_BYTES = 64 * 1024 * 1024
LISTED = 20                 # offenders listed in a check's details
MEDIA_PARALLEL = 8          # HEAD requests at once when verifying the media snapshot (as the backup role takes it)


def check(name, ok, compared, details=None, target=None):
    """One check's verdict, in the shape every check returns."""
    return {"name": name, "category": CHECKS[name], "target": target, "ok": bool(ok),
            "compared": compared, "details": details or {}}


# ---------------------------------------------------------------- input

def validate(p):
    """Refuse bad input before anything is read; returns the names of the checks to run."""
    tolerance = p.get("row_count_tolerance")
    if tolerance is None or not 0 <= float(tolerance) < 1:
        raise FediflowError("row_count_tolerance must be a fraction from 0 (no row may be missing) up to but "
                            "not including 1, got %s" % tolerance)
    if int(p.get("amcheck_max_indexes") or 0) < 0:
        raise FediflowError("amcheck_max_indexes must be >= 0, got %s" % p.get("amcheck_max_indexes"))
    for index, entry in enumerate(p.get("app_configmaps") or []):
        if not isinstance(entry, dict) or not entry.get("region") or not entry.get("expected"):
            raise FediflowError("app_configmaps[%d] must be a dict with region and expected (and kubeconfig, "
                                "namespace, name, key)" % index)
    for bucket, url in (p.get("s3_endpoints") or {}).items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise FediflowError("s3_endpoints.%s must be an http(s) URL, got %r" % (bucket, url))
    for index, entry in enumerate(p.get("ledger_s3") or []):
        if not isinstance(entry, dict) or not entry.get("bucket"):
            raise FediflowError("ledger_s3[%d] must be a dict with bucket (and prefix)" % index)
    for option in ("ledger_dirs", "backup_paths"):
        for path in p.get(option) or []:
            if not os.path.isabs(path):
                raise FediflowError("%s must hold absolute paths, got '%s'" % (option, path))
    if p.get("report_dir") and not os.path.isabs(p["report_dir"]):
        raise FediflowError("report_dir must be an absolute path, got '%s'" % p["report_dir"])
    if p.get("dns_expected"):
        route53.check_values(p.get("dns_type") or "A", p["dns_expected"], "dns_expected")
    has_db = bool(p.get("login_host") or p.get("login_unix_socket"))
    if has_db:
        postgres.validate_conn(p)
    inputs = {
        "db_amcheck": has_db, "db_sequences": has_db, "pg_hba_trust": has_db,
        "db_row_counts": has_db and bool(p.get("ledger_dirs") or p.get("ledger_s3")),
        "media_snapshot": bool(p.get("media_s3_bucket")),
        "app_database_role": bool(p.get("app_configmaps")),
        "app_dns_record": bool(p.get("dns_zone") and p.get("dns_record") and p.get("dns_expected")),
        "backup_file_modes": bool(p.get("backup_paths")),
        "bucket_security": bool(p.get("buckets")),
        "report_secrets": bool(p.get("report_dir")),
    }
    wanted = list(p.get("checks") or [])
    if not wanted:
        wanted = [name for name in CHECKS if inputs[name]]
        if not wanted:
            raise FediflowError("nothing to check: give a PostgreSQL connection (login_host), media_s3_bucket, "
                                "app_configmaps, dns_zone/dns_record/dns_expected, backup_paths, buckets or report_dir")
    needs = {"db_amcheck": "login_host or login_unix_socket", "db_sequences": "login_host or login_unix_socket",
             "pg_hba_trust": "login_host or login_unix_socket",
             "db_row_counts": "a PostgreSQL connection and ledger_dirs or ledger_s3",
             "media_snapshot": "media_s3_bucket", "app_database_role": "app_configmaps",
             "app_dns_record": "dns_zone, dns_record and dns_expected", "backup_file_modes": "backup_paths",
             "bucket_security": "buckets", "report_secrets": "report_dir"}
    for name in wanted:
        if name not in CHECKS:
            raise FediflowError("checks: unknown check '%s' (known: %s)" % (name, ", ".join(CHECKS)))
        if not inputs[name]:
            raise FediflowError("checks lists %s, which needs %s" % (name, needs[name]))
    return [name for name in CHECKS if name in wanted]


# ---------------------------------------------------------------- pure comparisons

def compare_row_counts(expected, actual, tolerance):
    """Tables of the ledger (``expected``) against the live counts. A table may have grown (the
    application writes); fewer rows than the ledger's by more than ``tolerance`` (a fraction of
    the ledger's count, rounded down) or a missing table fails. Returns (ok, rows)."""
    rows = []
    for table in sorted(expected):
        want, got = expected[table], actual.get(table)
        allowed = int(want * tolerance)
        good = got is not None and got >= want - allowed
        rows.append({"table": table, "ledger": want, "actual": got, "allowed_missing": allowed, "ok": good})
    return all(r["ok"] for r in rows), rows


def sequence_verdicts(rows):
    """``rows``: dicts with sequence, table, column, last_value (None: never used), increment and
    max_value (None: empty table). A sequence behind its column's max hands out ids that exist."""
    out = []
    for row in rows:
        last, top, step = row.get("last_value"), row.get("max_value"), row.get("increment") or 1
        if top is None:
            good = True
        elif step < 0:
            good = last is not None and last <= top  # descending: the next value is below the min; not checked further
        else:
            good = last is not None and last >= top
        out.append(dict(row, ok=good))
    return all(r["ok"] for r in out), out


def hba_network(address, netmask):
    """The network of a pg_hba host line, or None for a keyword/host name (all, samehost, samenet, names)."""
    if not address:
        return None
    try:
        if "/" in address:
            return ipaddress.ip_network(address, strict=False)
        if netmask:  # pg_hba_file_rules gives a mask for IPv6 too (ffff:...), which ip_network refuses
            prefix = bin(int(ipaddress.ip_address(netmask))).count("1")
            return ipaddress.ip_network("%s/%d" % (address, prefix), strict=False)
        return ipaddress.ip_network(address)
    except ValueError:
        return None


def is_loopback(network):
    return network is not None and any(
        network.version == lo.version and network.subnet_of(lo) for lo in LOOPBACK)


def hba_verdicts(rules):
    """``rules``: rows of pg_hba_file_rules (line_number, type, database, user_name, address,
    netmask, auth_method, error). Socket (``local``) trust is allowed; ``trust`` on host lines
    fails unless the address is loopback only (allowed, listed as a note); a line PostgreSQL
    cannot parse fails. Returns (ok, offending, notes)."""
    offending, notes = [], []
    for rule in rules:
        line = {"line": rule.get("line_number"), "type": rule.get("type"), "database": rule.get("database"),
                "user": rule.get("user_name"), "address": rule.get("address"), "netmask": rule.get("netmask"),
                "method": rule.get("auth_method")}
        if rule.get("error"):
            offending.append(dict(line, why="cannot be parsed: %s" % rule["error"]))
            continue
        if rule.get("auth_method") != "trust" or rule.get("type") == "local":
            continue
        if is_loopback(hba_network(rule.get("address"), rule.get("netmask"))):
            notes.append(dict(line, why="trust on loopback only (allowed: local addresses)"))
        else:
            offending.append(dict(line, why="trust for a non-local address: anyone who reaches the port logs in "
                                            "without a password"))
    return not offending, offending, notes


def loose_files(entries):
    """``entries``: (path, mode) of regular files. Any group/other permission bit is too loose
    (backups hold the whole database: 0600 or stricter)."""
    return [{"path": path, "mode": "%04o" % stat.S_IMODE(mode)} for path, mode in entries
            if stat.S_IMODE(mode) & 0o077]


def bucket_verdict(encryption_rules, public_block, acl_grants):
    """Problems of a bucket (empty: fine). ``encryption_rules``: the default-encryption rules
    (None: none configured); ``public_block``: the PublicAccessBlockConfiguration (None: none);
    ``acl_grants``: the bucket ACL's grants."""
    problems = []
    algos = [((r.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm")) for r in encryption_rules or []]
    if not [a for a in algos if a]:
        problems.append("no default encryption")
    if public_block is None:
        problems.append("no public access block")
    else:
        off = [k for k in BLOCK_KEYS if not public_block.get(k)]
        if off:
            problems.append("public access block off: %s" % ", ".join(off))
    public = sorted(set("%s %s" % ((g.get("Grantee") or {}).get("URI", "").rsplit("/", 1)[-1], g.get("Permission"))
                        for g in acl_grants or [] if (g.get("Grantee") or {}).get("URI") in PUBLIC_GROUPS))
    if public:
        problems.append("public ACL grant: %s" % ", ".join(public))
    return problems


def immutability_verdict(versioning, lock):
    """Problems of a backup bucket's immutability (empty: fine). ``versioning``: GetBucketVersioning's Status
    (None: never enabled); ``lock``: the ObjectLockConfiguration (None: Object Lock not enabled). A copy must
    survive whoever holds a key: versioning on, Object Lock on with a default retention."""
    problems = []
    if versioning != "Enabled":
        problems.append("versioning %s" % (versioning or "never enabled").lower())
    if not lock or lock.get("ObjectLockEnabled") != "Enabled":
        problems.append("no Object Lock")
    else:
        retention = (lock.get("Rule") or {}).get("DefaultRetention") or {}
        if not (retention.get("Days") or retention.get("Years")):
            problems.append("Object Lock without a default retention")
    return problems


def find_secrets(text, secrets):
    """Names of the ``secrets`` (name -> value) whose value occurs in ``text``."""
    return sorted(name for name, value in secrets.items()
                  if isinstance(value, str) and len(value) >= MIN_SECRET_LEN and value in text)


def usable_secrets(secrets):
    """The secrets worth scanning for (string values of at least MIN_SECRET_LEN characters) and the
    names skipped."""
    usable, skipped = {}, []
    for name, value in sorted((secrets or {}).items()):
        if isinstance(value, str) and len(value) >= MIN_SECRET_LEN:
            usable[name] = value
        elif value not in (None, ""):
            skipped.append(name)
    return usable, skipped


def newest_counted_backup(manifests, db=None):
    """The newest verified logical backup (of ``db`` when given) that recorded row counts."""
    pool = [m for m in manifests if m.get("kind") == "logical" and ledger.is_verified(m)
            and (m.get("source") or {}).get("row_counts") is not None
            and (db is None or (m.get("source") or {}).get("database") == db)]
    return max(pool, key=ledger.sort_key) if pool else None


def summarize(checks):
    """(ok, failed names, one-line message)."""
    failed = ["%s (%s)" % (c["name"], c["target"]) if c.get("target") else c["name"] for c in checks if not c["ok"]]
    if failed:
        return False, failed, "%d of %d integrity checks failed: %s" % (len(failed), len(checks), ", ".join(failed))
    return True, [], "all %d integrity checks passed" % len(checks)


# ---------------------------------------------------------------- database

def _amcheck(conn, p):
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'")
        if cur.fetchone()[0] == 0:
            return True, {"expected": "bt_index_check passes", "actual": "amcheck not installed in %s" % p["db"]}, {
                "available": False, "note": "CREATE EXTENSION amcheck in %s to check indexes" % p["db"]}
        cur.execute("""SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                       JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready
                         AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
                       ORDER BY pg_relation_size(c.oid) DESC, 1 LIMIT %s""", (int(p["amcheck_max_indexes"]),))
        indexes = [row[0] for row in cur.fetchall()]
    bad = []
    for index in indexes:
        with conn.cursor() as cur:
            try:
                cur.execute("SELECT bt_index_check(%s::regclass)", (index,))
            except Exception as exc:  # pylint: disable=broad-except  # psycopg2.Error: the index is corrupt
                bad.append({"index": index, "error": _first_line(exc)})
    return not bad, {"expected": "bt_index_check passes on the %d largest B-tree indexes" % len(indexes),
                     "actual": "%d failed" % len(bad)}, {"available": True, "indexes": indexes, "failed": bad}


def _sequences(conn):
    with conn.cursor() as cur:
        cur.execute("""SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname),
                              quote_ident(tn.nspname) || '.' || quote_ident(t.relname), quote_ident(a.attname),
                              ps.last_value, ps.increment_by
                       FROM pg_depend d
                       JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                       JOIN pg_namespace sn ON sn.oid = s.relnamespace
                       JOIN pg_class t ON t.oid = d.refobjid
                       JOIN pg_namespace tn ON tn.oid = t.relnamespace
                       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
                       JOIN pg_sequences ps ON ps.schemaname = sn.nspname AND ps.sequencename = s.relname
                       WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                         AND d.deptype IN ('a', 'i')
                       ORDER BY 1""")
        owned = cur.fetchall()
        rows = []
        for seq, table, column, last, step in owned:
            # names come quoted from quote_ident above
            cur.execute("SELECT max(%s) FROM %s" % (column, table))
            top = cur.fetchone()[0]
            rows.append({"sequence": seq, "table": table, "column": column, "last_value": last,
                         "increment": step, "max_value": top})
    ok, rows = sequence_verdicts(rows)
    behind = [r for r in rows if not r["ok"]]
    return ok, {"expected": "every owned sequence >= max(column)",
                "actual": "%d of %d behind" % (len(behind), len(rows))}, {
        "sequences": len(rows), "behind": behind[:LISTED]}


def _ledger_manifests(p, skipped=None):
    """The ledgers' manifests (a malformed one left out, recorded in ``skipped``) and where they were read."""
    manifests, sources = [], []
    for path in p.get("ledger_dirs") or []:
        manifests += ledger.list_local(path, skipped)
        sources.append(path)
    for entry in p.get("ledger_s3") or []:
        from ansible_collections.fediflow.dr.plugins.module_utils.s3store import S3Backups  # pylint: disable=import-outside-toplevel
        store = S3Backups(s3_params(p, entry["bucket"]), entry["bucket"], entry.get("prefix"))
        manifests += store.list_manifests(skipped)
        sources.append("s3://%s/%s" % (entry["bucket"], (entry.get("prefix") or "").strip("/")))
    return manifests, sources


def _row_counts(conn, p):
    skipped = []
    manifests, sources = _ledger_manifests(p, skipped)
    newest = newest_counted_backup(manifests, p["db"])
    if newest is None:
        return False, {"expected": "row counts of the newest verified logical backup of %s" % p["db"],
                       "actual": "no such backup in the ledger"}, {"ledger": sources, "skipped_manifests": skipped}
    actual = backup.row_counts(conn)
    expected = newest["source"]["row_counts"]
    ok, rows = compare_row_counts(expected, actual, float(p["row_count_tolerance"]))
    short = [r for r in rows if not r["ok"]]
    return ok, {"expected": "rows per table >= ledger of backup %s minus %s%%" % (
        newest["id"], round(float(p["row_count_tolerance"]) * 100, 3)),
        "actual": "%d of %d tables short" % (len(short), len(rows))}, {
        "backup_id": newest["id"], "backup_stop_time": newest.get("stop_time"), "ledger": sources,
        "skipped_manifests": skipped,
        "tables": len(rows), "short": short[:LISTED],
        "new_tables": sorted(set(actual) - set(expected))[:LISTED]}


def _pg_hba(conn):
    with conn.cursor() as cur:
        cur.execute("""SELECT line_number, type, array_to_string(database, ','), array_to_string(user_name, ','),
                              address, netmask, auth_method, error FROM pg_hba_file_rules ORDER BY line_number""")
        keys = ("line_number", "type", "database", "user_name", "address", "netmask", "auth_method", "error")
        rules = [dict(zip(keys, row)) for row in cur.fetchall()]
        cur.execute("SELECT current_setting('hba_file')")
        path = cur.fetchone()[0]
    ok, offending, notes = hba_verdicts(rules)
    return ok, {"expected": "no trust line for a non-local address", "actual": "%d such line(s)" % len(offending)}, {
        "hba_file": path, "lines": len(rules), "offending": offending, "notes": notes}


# ---------------------------------------------------------------- files, S3, Kubernetes, DNS

def _backup_files(p):
    entries, missing = [], []
    for root in p["backup_paths"]:
        if not os.path.exists(root):
            missing.append(root)
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                full = os.path.join(dirpath, name)
                info = os.lstat(full)
                if stat.S_ISREG(info.st_mode):
                    entries.append((full, info.st_mode))
    loose = loose_files(entries)
    details = {"files": len(entries), "loose": loose[:LISTED]}
    if missing:
        details["not_present"] = missing
    return not loose, {"expected": "backup files 0600 or stricter", "actual": "%d of %d looser" % (
        len(loose), len(entries))}, details


def s3_params(p, bucket):
    """The options to reach ``bucket``: ``p`` with the bucket's own endpoint from ``s3_endpoints`` (a bucket
    not listed there is reached at ``endpoint_url``)."""
    endpoint = (p.get("s3_endpoints") or {}).get(bucket)
    return dict(p, endpoint_url=endpoint) if endpoint else p


def _buckets(p):
    verdicts = []
    for bucket in p["buckets"]:
        s3 = aws.client("s3", s3_params(p, bucket))
        try:
            rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        except Exception as exc:  # pylint: disable=broad-except
            if aws.error_text(exc)[0] != "ServerSideEncryptionConfigurationNotFoundError":
                raise FediflowError("bucket %s: GetBucketEncryption failed: %s" % (bucket, aws.error_text(exc)[0]))
            rules = None
        try:
            block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        except Exception as exc:  # pylint: disable=broad-except
            if aws.error_text(exc)[0] != "NoSuchPublicAccessBlockConfiguration":
                raise FediflowError("bucket %s: GetPublicAccessBlock failed: %s" % (bucket, aws.error_text(exc)[0]))
            block = None
        grants = s3.get_bucket_acl(Bucket=bucket).get("Grants") or []
        versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
        try:
            lock = s3.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration")
        except Exception as exc:  # pylint: disable=broad-except
            if aws.error_text(exc)[0] != "ObjectLockConfigurationNotFoundError":
                raise FediflowError("bucket %s: GetObjectLockConfiguration failed: %s" % (bucket, aws.error_text(exc)[0]))
            lock = None
        verdicts.append({"bucket": bucket, "problems": bucket_verdict(rules, block, grants) + immutability_verdict(versioning, lock),
                         "versioning": versioning, "object_lock": lock})
    bad = [v for v in verdicts if v["problems"]]
    return not bad, {"expected": "default encryption, all 4 public access blocks on, no public ACL grant, versioning and "
                                 "Object Lock (a default retention) on",
                     "actual": "; ".join("%s: %s" % (v["bucket"], ", ".join(v["problems"])) for v in bad) or "as expected"}, {
        "buckets": verdicts}


def _media_snapshot(p):
    from ansible_collections.fediflow.dr.plugins.module_utils import snapshot  # pylint: disable=import-outside-toplevel
    reach = s3_params(p, p["media_s3_bucket"])
    params = {k: reach.get(k) for k in aws.aws_common_argument_spec()}  # TLS options included
    params.update(state="verified", s3_bucket=p["media_s3_bucket"], s3_prefix=p.get("media_s3_prefix") or "",
                  snapshot_id="latest", deep=bool(p.get("media_deep")), parallel=MEDIA_PARALLEL)
    where = "s3://%s/%s" % (p["media_s3_bucket"], (p.get("media_s3_prefix") or "").strip("/"))
    try:
        got = snapshot.run(params)
    except FediflowError as exc:
        partial = exc.details.get("result") or {}
        return False, {"expected": "the newest snapshot in %s verifies" % where, "actual": exc.message}, {
            "snapshot_id": partial.get("snapshot_id"), "missing": partial.get("missing"),
            "mismatched": partial.get("mismatched")}
    return True, {"expected": "the newest snapshot in %s verifies" % where,
                  "actual": "snapshot %s: %d objects intact" % (got["snapshot_id"], got["objects_checked"])}, {
        "snapshot_id": got["snapshot_id"], "stop_time": got.get("stop_time"), "method": got.get("method"),
        "files": got.get("files_total")}


def read_configmap_value(entry):
    """The configmap key's value in one region's cluster (None when the key is not set)."""
    from ansible_collections.fediflow.dr.plugins.module_utils import k8s_failover  # pylint: disable=import-outside-toplevel
    auth = {k: entry.get(k) for k in ("kubeconfig", "context", "host", "api_key", "ca_cert")}
    auth["validate_certs"] = entry.get("validate_certs", True)
    api = k8s_failover.connect(auth)
    cluster = k8s_failover.Cluster(api, entry.get("namespace") or "default", secrets=[entry.get("api_key")])
    try:
        data = (cluster.get_configmap(entry.get("name") or "app-config").get("data") or {})
    finally:
        cluster.close()
    return data.get(entry.get("key") or "DATABASE_ROLE")


def _app_database_role(p):
    rows = []
    for entry in p["app_configmaps"]:
        key = entry.get("key") or "DATABASE_ROLE"
        where = "%s/%s" % (entry.get("namespace") or "default", entry.get("name") or "app-config")
        try:
            value = read_configmap_value(entry)
            error = None
        except FediflowError as exc:
            value, error = None, exc.message
        rows.append({"region": entry["region"], "configmap": where, "key": key, "expected": entry["expected"],
                     "actual": value, "ok": error is None and value == entry["expected"], "error": error})
    bad = [r for r in rows if not r["ok"]]
    return not bad, {"expected": {r["region"]: r["expected"] for r in rows},
                     "actual": {r["region"]: r["actual"] for r in rows}}, {"configmaps": rows}


def _dns_record(p):
    client = aws.client("route53", p)
    rtype = p.get("dns_type") or "A"
    zone = route53.find_zone(client, {"zone": p["dns_zone"]})
    name = route53.normalize_name(p["dns_record"])
    served = route53.served(route53.current_record_sets(client, zone["id"], name, rtype))
    actual = sorted(route53.canonical_value(rtype, v) for v in served["value"])
    expected = sorted(route53.canonical_value(rtype, v) for v in p["dns_expected"])
    return actual == expected, {"expected": expected, "actual": actual}, {
        "record": name, "type": rtype, "zone_id": zone["id"], "set_identifier": served["set_identifier"]}


def _report_secrets(p):
    secrets, skipped = usable_secrets(p.get("secrets"))
    root = p["report_dir"]
    found, scanned, too_big = [], 0, []
    if os.path.isdir(root):
        for dirpath, _dirs, files in os.walk(root):
            for name in sorted(files):
                full = os.path.join(dirpath, name)
                if not os.path.isfile(full):
                    continue
                if os.path.getsize(full) > SCAN_MAX_BYTES:
                    too_big.append(full)
                    continue
                with open(full, "rb") as handle:
                    text = handle.read().decode("utf-8", errors="replace")
                scanned += 1
                names = find_secrets(text, secrets)
                if names:
                    found.append({"file": full, "variables": names})
    details = {"report_dir": root, "files_scanned": scanned, "secrets_checked": sorted(secrets),
               "found": found[:LISTED]}
    if skipped:
        details["secrets_too_short_to_scan"] = skipped
    if too_big:
        details["not_scanned_too_big"] = too_big[:LISTED]
    if not os.path.isdir(root):
        details["note"] = "no report directory yet: nothing to scan"
    return not found, {"expected": "no secret value in any report file",
                       "actual": "%d file(s) hold one" % len(found)}, details


# ---------------------------------------------------------------- entry point

def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _guarded(name, func, target, *args):
    """Run one check; whatever goes wrong becomes its failed verdict. Adds when it started
    (ISO 8601 UTC) and how long it took, for the step of a report."""
    started, t0 = ledger.iso(ledger.utcnow()), time.monotonic()
    try:
        ok, compared, details = func(*args)
        verdict = check(name, ok, compared, details, target)
    except FediflowError as exc:
        verdict = cannot_run(name, exc.message, target)
    except Exception as exc:  # pylint: disable=broad-except  # one broken check must not hide the others
        verdict = cannot_run(name, "%s: %s" % (type(exc).__name__, _first_line(exc)), target)
    verdict.update(start=started, duration_s=round(time.monotonic() - t0, 3))
    return verdict


def cannot_run(name, message, target=None):
    return check(name, False, {"expected": "the check can run", "actual": message}, {"error": message}, target)


def run(p):
    """Run the selected checks (read-only: check mode runs them alike); ``fail_on_error`` raises
    after all of them ran, with every verdict in the result."""
    timer = Timer()
    names = validate(p)
    target = p.get("target") or None
    checks = []
    db_names = [n for n in names if n in ("db_amcheck", "db_sequences", "db_row_counts", "pg_hba_trust")]
    if db_names:
        db_funcs = {"db_amcheck": lambda c: _amcheck(c, p), "db_sequences": _sequences,
                    "db_row_counts": lambda c: _row_counts(c, p), "pg_hba_trust": _pg_hba}
        conn = None
        try:
            with timer.phase("connect"):
                conn = postgres.connect(p)
        except FediflowError as exc:
            failed_at = ledger.iso(ledger.utcnow())
            checks += [dict(cannot_run(n, exc.message, target), start=failed_at, duration_s=timer.phases["connect"])
                       for n in db_names]
        if conn is not None:
            try:
                for name in db_names:
                    with timer.phase(name):
                        checks.append(_guarded(name, db_funcs[name], target, conn))
            finally:
                conn.close()
    others = {"media_snapshot": _media_snapshot, "app_database_role": _app_database_role,
              "app_dns_record": _dns_record, "backup_file_modes": _backup_files, "bucket_security": _buckets,
              "report_secrets": _report_secrets}
    for name in names:
        if name in others:
            with timer.phase(name):
                checks.append(_guarded(name, others[name], target, p))
    order = list(CHECKS)
    checks.sort(key=lambda c: order.index(c["name"]))
    ok, failed, msg = summarize(checks)
    result = {"changed": False, "ok": ok, "checks": checks, "failed_checks": failed, "msg": msg,
              "phases": timer.phases, "duration_s": timer.elapsed()}
    if not ok and p.get("fail_on_error", True):
        raise FediflowError(msg, result=result)
    return result
