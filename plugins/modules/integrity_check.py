#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: integrity_check
short_description: Check that the database, file storage, application configuration and security settings are whole
version_added: 0.3.0
description:
  - The integrity validation after a backup, a restore or a failover. Each check compares what is with what should
    be and returns C(name), C(category), C(target), C(ok), C(compared) (C(expected) and C(actual)) and C(details).
  - "Database (a PostgreSQL connection, O(login_host) or O(login_unix_socket), to the primary):
    C(db_amcheck) - C(bt_index_check) of the C(amcheck) extension on the O(amcheck_max_indexes) largest B-tree
    indexes of O(db), when the extension is installed there (else it passes, saying amcheck is not installed);
    C(db_sequences) - every sequence owned by a column (C(serial), identity) is at or ahead of the column's max
    (a sequence behind hands out ids that exist); C(db_row_counts) - every table the newest verified logical backup
    of O(db) counted (the ledger: O(ledger_dirs), O(ledger_s3)) has at least that many rows, minus
    O(row_count_tolerance). Tables may grow; a missing table or rows missing beyond the tolerance fail."
  - "File storage: C(media_snapshot) - the newest snapshot under O(media_s3_bucket)/O(media_s3_prefix) verifies, as
    M(fediflow.dr.s3_snapshot) with C(state=verified) checks it."
  - "Application configuration: C(app_database_role) - the configmap key of each region of O(app_configmaps) holds
    the expected value (C(primary) where PostgreSQL really is primary, C(standby) elsewhere);
    C(app_dns_record) - O(dns_record) in O(dns_zone) serves exactly O(dns_expected) (the primary region's endpoint)."
  - "Security: C(pg_hba_trust) - no C(trust) line in pg_hba (read through C(pg_hba_file_rules)) for a non-local
    address; C(local) (socket) lines may trust, and C(trust) for loopback addresses only is allowed and listed in
    C(details.notes); a line PostgreSQL cannot parse fails. C(backup_file_modes) - every regular file under
    O(backup_paths) has no group or other permission (C(0600) or stricter); a path that does not exist is listed,
    not failed. C(bucket_security) - every bucket of O(buckets) has default encryption, all four public access
    block settings on (a bucket without a public access block fails), no ACL grant to everyone or to any
    authenticated AWS user, versioning enabled and Object Lock on with a default retention (the backup buckets'
    copies must survive whoever holds a key; C(details.buckets) has each bucket's C(versioning) and
    C(object_lock)). C(report_secrets) - no value of O(secrets) occurs in any file under O(report_dir);
    the file and the variable's name are reported, never the value."
  - By default every check whose inputs are given runs; O(checks) picks some (their inputs are then required).
  - "Every check runs, even when an earlier one failed or could not run (a server down is a failed check with the
    reason). With O(fail_on_error) the module fails after all of them, naming the failed checks, with every
    verdict in RV(checks); without it, it returns them and RV(ok)."
  - Only reads, so RV(changed) is always false and check mode runs the checks exactly like a normal run.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.postgres
  - fediflow.dr.aws
  - fediflow.dr.attributes
attributes:
  check_mode:
    support: full
    details: Read-only - a check-mode run checks exactly like a normal one.
  diff_mode:
    support: N/A
    details: Nothing is changed, so there is no diff.
  idempotent:
    support: full
options:
  checks:
    description:
      - The checks to run. Empty - every check whose inputs are given.
    type: list
    elements: str
    choices: [ db_amcheck, db_sequences, db_row_counts, media_snapshot, app_database_role, app_dns_record,
               pg_hba_trust, backup_file_modes, bucket_security, report_secrets ]
    default: []
  target:
    description: What is checked (a region or host name), copied into every check's C(target).
    type: str
  fail_on_error:
    description:
      - Fail when a check fails (after every check ran, RV(checks) holding all verdicts). V(false) returns them and
        RV(ok), so that a role can report every check before it fails.
    type: bool
    default: true
  row_count_tolerance:
    description:
      - Share of a table's rows in the ledger that may be missing (from V(0), none, up to but not including V(1)),
        rounded down per table. Growth is always allowed.
    type: float
    default: 0.0
  amcheck_max_indexes:
    description: How many B-tree indexes C(db_amcheck) checks, largest first. V(0) checks none.
    type: int
    default: 10
  ledger_dirs:
    description: Local backup repositories of logical backups (the C(dest) of M(fediflow.dr.pg_backup_verify)).
    type: list
    elements: path
    default: []
  ledger_s3:
    description: Backup ledgers in S3, each a dict with C(bucket) and C(prefix) (the C(s3_prefix) of the logical backups).
    type: list
    elements: dict
    default: []
  media_s3_bucket:
    description: Bucket of the media snapshots (M(fediflow.dr.s3_snapshot)'s C(s3_bucket)).
    type: str
  media_s3_prefix:
    description: Prefix of the media snapshots (M(fediflow.dr.s3_snapshot)'s C(s3_prefix)).
    type: str
    default: ''
  media_deep:
    description: Download every object of the newest media snapshot and check its sha256, instead of its stored checksum.
    type: bool
    default: false
  app_configmaps:
    description:
      - One entry per region - C(region), C(expected) (the value the key must hold), C(kubeconfig), C(context),
        C(host), C(api_key), C(validate_certs), C(ca_cert) (as M(fediflow.dr.k8s_failover) connects),
        C(namespace) (default C(default)), C(name) (the configmap, default C(app-config)) and C(key)
        (default C(DATABASE_ROLE)).
    type: list
    elements: dict
    default: []
  dns_zone:
    description: Hosted zone of O(dns_record).
    type: str
  dns_record:
    description: The application's record.
    type: str
  dns_type:
    description: Type of O(dns_record).
    type: str
    choices: [ A, AAAA, CNAME ]
    default: A
  dns_expected:
    description: The values O(dns_record) must serve (the primary region's endpoint).
    type: list
    elements: str
    default: []
  backup_paths:
    description: Directories (or files) whose regular files must be readable by their owner only.
    type: list
    elements: path
    default: []
  buckets:
    description: Backup buckets that must have default encryption and block public access.
    type: list
    elements: str
    default: []
  s3_endpoints:
    description:
      - Bucket name -> the S3 endpoint URL that holds it, for buckets of O(buckets), O(media_s3_bucket) and
        O(ledger_s3) that live apart (an S3-compatible store per region; the lab's S3 per region). A bucket
        not named here is reached at O(endpoint_url) (or AWS's regional endpoint).
    type: dict
    default: {}
  report_dir:
    description: Directory of reports (drills, validations) scanned for the values of O(secrets).
    type: path
  secrets:
    description:
      - Variable name -> secret value, looked for in every file under O(report_dir). Values shorter than 4
        characters are not scanned (listed by name). Never shown.
    type: dict
    default: {}
notes:
  - The PostgreSQL options are optional - without O(login_host) and O(login_unix_socket) no database check runs.
    O(db) must be the application's database for C(db_row_counts), C(db_sequences) and C(db_amcheck).
  - The AWS options are used by C(bucket_security), C(media_snapshot), C(app_dns_record) and O(ledger_s3);
    O(s3_endpoints) moves a bucket to its own endpoint, Route53 stays at O(endpoint_url).
  - Bad input (O(row_count_tolerance) out of range, a relative path, an O(app_configmaps) entry without region or
    expected, a check in O(checks) without its inputs, nothing to check) is refused before anything is read.
seealso:
  - module: fediflow.dr.pg_backup_verify
  - module: fediflow.dr.s3_snapshot
  - module: fediflow.dr.dr_report
"""

EXAMPLES = r"""
- name: Database and pg_hba of the primary, backup file modes on its host
  fediflow.dr.integrity_check:
    target: us-east-1
    login_host: db.us-east-1.internal
    login_password: "{{ vault_pg_superuser_password }}"
    db: fediflow
    row_count_tolerance: 0.01
    ledger_dirs: [/var/backups/fediflow/logical]
    backup_paths: [/var/backups/fediflow]
    fail_on_error: false
  register: db_checks

- name: Media snapshot, configmaps, DNS, buckets and reports (from the controller)
  fediflow.dr.integrity_check:
    target: us-east-1
    media_s3_bucket: fediflow-backups-us-east-1
    media_s3_prefix: media/us-east-1
    app_configmaps:
      - {region: us-east-1, expected: primary, kubeconfig: ~/.kube/us-east-1, namespace: fediflow}
      - {region: eu-west-1, expected: standby, kubeconfig: ~/.kube/eu-west-1, namespace: fediflow}
    dns_zone: fediflow.example.
    dns_record: app.fediflow.example.
    dns_expected: [192.0.2.10]
    buckets: [fediflow-backups-us-east-1, fediflow-backups-eu-west-1]
    report_dir: /var/lib/fediflow/reports
    secrets:
      fediflow_pg_superuser_password: "{{ vault_pg_superuser_password }}"
"""

RETURN = r"""
ok:
  description: Whether every check passed.
  returned: always
  type: bool
checks:
  description:
    - One entry per check run - C(name), C(category) (V(database), V(file_storage), V(app_config), V(security)),
      C(target), C(ok), C(compared) (C(expected) and C(actual)), C(details) (what was looked at; C(error) when the
      check could not run), C(start) (ISO 8601 UTC) and C(duration_s).
  returned: always
  type: list
  elements: dict
  sample:
    - name: db_row_counts
      category: database
      target: us-east-1
      ok: false
      compared: {expected: "rows per table >= ledger of backup 20261126T041500Z-logical-3f9a1c minus 0.0%",
                 actual: "1 of 6 tables short"}
      details: {backup_id: 20261126T041500Z-logical-3f9a1c, tables: 6,
                short: [{table: public.follows, ledger: 2000, actual: 0, allowed_missing: 0, ok: false}]}
failed_checks:
  description: Names of the failed checks (with their target).
  returned: always
  type: list
  elements: str
  sample: ["pg_hba_trust (us-east-1)"]
msg:
  description: One line - how many checks failed and which, or that all passed.
  returned: always
  type: str
phases:
  description: Seconds spent per check (and connecting).
  returned: always
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import integrity
from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module
from ansible_collections.fediflow.dr.plugins.module_utils.postgres import postgres_common_argument_spec


def main():
    spec = postgres_common_argument_spec()
    spec.update(aws_common_argument_spec())
    spec.update(
        checks={"type": "list", "elements": "str", "default": [], "choices": list(integrity.CHECKS)},
        target={"type": "str"},
        fail_on_error={"type": "bool", "default": True},
        row_count_tolerance={"type": "float", "default": 0.0},
        amcheck_max_indexes={"type": "int", "default": 10},
        ledger_dirs={"type": "list", "elements": "path", "default": []},
        ledger_s3={"type": "list", "elements": "dict", "default": []},
        media_s3_bucket={"type": "str"},
        media_s3_prefix={"type": "str", "default": ""},
        media_deep={"type": "bool", "default": False},
        app_configmaps={"type": "list", "elements": "dict", "default": []},
        dns_zone={"type": "str"},
        dns_record={"type": "str"},
        dns_type={"type": "str", "default": "A", "choices": ["A", "AAAA", "CNAME"]},
        dns_expected={"type": "list", "elements": "str", "default": []},
        backup_paths={"type": "list", "elements": "path", "default": []},
        buckets={"type": "list", "elements": "str", "default": []},
        s3_endpoints={"type": "dict", "default": {}},
        report_dir={"type": "path"},
        secrets={"type": "dict", "default": {}, "no_log": True},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    # api keys of the configmap connections are secrets too
    module.no_log_values.update(e.get("api_key") for e in module.params["app_configmaps"] or []
                                if isinstance(e, dict) and e.get("api_key"))
    run_module(module, integrity.run, dict(module.params))


if __name__ == "__main__":
    main()
