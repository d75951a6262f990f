#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_backup_verify
short_description: Take a PostgreSQL backup and prove it restores
version_added: 0.2.0
description:
  - Takes a logical (C(pg_dump)) or physical (C(pg_basebackup) with a backup manifest) backup
    into a local backup repository O(dest), verifies it, writes its ledger manifest (id, kind,
    start/stop time and LSN, snapshot, every file with size and sha256, verification result),
    writes it to every repository of O(repositories) (one S3 bucket per region) or to O(s3_bucket), and applies
    retention.
  - Verification levels, each including the ones before it. V(list) reads the dump's table of
    contents (C(pg_restore --list)) or checks a physical backup against PostgreSQL's own
    C(backup_manifest) (C(pg_verifybackup) for plain format; for tar format every file inside
    the tars is streamed and checked against the manifest's SHA256, which C(pg_verifybackup)
    15 cannot do, and C(pg_wal.tar) must hold every WAL segment from the backup's start to its
    end LSN (C(backup_manifest) C(WAL-Ranges)), whole, and C(pg_waldump) must read every record
    in that range - a backup whose WAL is missing or damaged fails V(list) and does not count as
    verified for retention or PITR). V(checksum) also re-hashes every file against the ledger. V(restore) also
    restores the backup into a scratch cluster on the host this module runs on - a fresh C(initdb) cluster
    and C(pg_restore) for a logical backup, the base backup itself for a physical one - and compares
    per-table row counts with the source, then stops the cluster with C(pg_ctl) and removes it (also
    when the restore fails). Never a database on the source server - nothing of the restore reaches
    production's disk, WAL, standbys or archive.
  - The scratch cluster lives in a new 0700 directory under O(scratch_dir), runs as O(os_user) on a port
    checked free, listens on no TCP address (its only socket is inside that directory), with archiving
    and replication off. The verification record says where it ran (C(where) with host, port, data directory,
    whether it was removed).
  - To keep restores off the production host, run the restore verification on another host (a verify
    host) with O(backup_id) - the backup is read from its repositories and the updated ledger entry is
    written back to them; the C(fediflow.dr.backup) role does this (C(backup_verify_host)).
  - Row counts for V(restore) are taken in the same snapshot C(pg_dump) uses (logical, exact).
    For physical backups they are taken when the backup ends, and each table may differ by the
    inserts and deletes that happened during the backup (from C(pg_stat_user_tables)); on an idle
    source the comparison is exact.
  - With O(backup_id), no backup is taken; that backup (local, else downloaded from the first repository that
    holds it and answers, checked against its manifest) is verified and its ledger entry gets the result.
  - Nothing is half-visible. The backup is built in a hidden C(.partial-*) directory and its
    manifest is written last; in S3 the manifest is uploaded after every file has been
    uploaded and checked. A failed backup is kept in the ledger as failed and nothing is
    uploaded or pruned after it. Retention never removes the newest verified backup, and runs
    per location (the local O(dest) and each repository).
  - A backup with fewer copies than O(required_copies) fails the run after its copies are made (nothing pruned);
    one with enough but not every repository is C(degraded) (a warning).
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.postgres
  - fediflow.dr.aws
  - fediflow.dr.repositories
  - fediflow.dr.repositories.copies
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
attributes:
  idempotent:
    support: none
    details: Every run without O(backup_id) takes a new backup, as a backup job should.
options:
  mode:
    description: Logical (C(pg_dump) of O(db)) or physical (C(pg_basebackup) of the whole cluster).
    type: str
    choices: [ logical, physical ]
    default: logical
  format:
    description:
      - For V(logical), V(custom) (one file) or V(directory) (parallel dump with O(jobs)).
      - For V(physical), V(tar) or V(plain).
      - Defaults to V(custom) for logical and V(tar) for physical.
    type: str
    choices: [ custom, directory, tar, plain ]
  compression:
    description:
      - Compression. C(pg_dump) 15 offers V(gzip) or V(none); C(pg_basebackup) (tar format) also V(lz4) and V(zstd).
      - Compression happens once; the file is never compressed twice.
    type: str
    choices: [ none, gzip, lz4, zstd ]
    default: gzip
  compression_level:
    description: Compression level (C(pg_dump) caps it at 9).
    type: int
  compress_at:
    description: For physical backups, compress on the V(server) (less network) or the V(client).
    type: str
    choices: [ server, client ]
    default: server
  jobs:
    description: Parallel jobs for directory-format dumps and for restores into the scratch database.
    type: int
    default: 2
  verify:
    description: Verification level (see the description).
    type: str
    choices: [ none, list, checksum, restore ]
    default: list
  backup_id:
    description: Verify this existing backup instead of taking a new one.
    type: str
  dest:
    description: Local backup repository directory (created 0700). Each backup is a subdirectory named by its id.
    type: path
    required: true
  s3_bucket:
    description:
      - Upload verified backups to this bucket (and include its ledger in retention); the one-repository shorthand
        of O(repositories).
    type: str
  s3_prefix:
    description:
      - Key prefix in O(s3_bucket), or in each of O(repositories) after the repository's own prefix; a backup lives
        under C(<prefix>/<backup_id>/).
    type: str
    default: ''
  s3_sse:
    description: Server-side encryption for uploaded objects.
    type: str
    choices: [ AES256, aws:kms ]
    default: AES256
  s3_kms_key_id:
    description: KMS key for O(s3_sse=aws:kms).
    type: str
  s3_storage_class:
    description: Storage class of uploaded objects, for example C(STANDARD_IA).
    type: str
  retention_count:
    description: Keep the newest N backups of this O(mode). Must be at least 1.
    type: int
  retention_days:
    description:
      - Keep backups of this O(mode) younger than N days. Must be at least 1.
      - With O(retention_count) too, a backup is removed only when both allow it.
    type: int
  tags:
    description: Free-form labels stored in the manifest (for example region, schedule).
    type: dict
    default: {}
  region_name:
    description:
      - The DR (inventory) region this backup belongs to, recorded in the manifest; with O(cluster_name) (and the
        database of a logical backup) it names the source whose backups retention weighs together.
      - Never taken from O(region), the AWS API region of the S3 options - unset, the backup names no region.
    type: str
  cluster_name:
    description: A name for the source cluster, recorded in the manifest.
    type: str
  bin_dir:
    description: Directory of the PostgreSQL client programs; discovered when omitted.
    type: path
  os_user:
    description: OS user that runs the scratch cluster of a physical restore verification.
    type: str
    default: postgres
  scratch_dir:
    description: Parent directory for the scratch cluster (must be reachable by O(os_user)).
    type: path
    default: /var/tmp
  record_row_counts:
    description:
      - Record per-table row counts of the source in the manifest (what a restore verification compares against),
        in the snapshot of the dump (logical) or when the backup ends (physical).
      - Defaults to true when O(verify=restore); set it when the restore verification runs later on a verify host
        (O(backup_id)).
    type: bool
  scratch_port:
    description:
      - Port of the scratch cluster (it names its socket; nothing listens on TCP). Refused when something uses it.
      - Unset, a free port is picked (and checked free again just before the cluster starts).
    type: int
  verify_host_name:
    description:
      - The name recorded as where a restore verification ran (C(verification.where.host)), for example the
        inventory name of the verify host. Defaults to this host's name (C(hostname)).
    type: str
  command_timeout:
    description: Seconds any single backup or restore command may run.
    type: int
    default: 7200
notes:
  - The password reaches C(pg_dump), C(pg_basebackup) and C(pg_restore) through a password file of their own
    (E(PGPASSFILE), mode 0600 in a 0700 directory, removed when the program ends), never the command line or their environment.
  - O(retention_count=0) is refused; with O(verify=none) nothing counts as verified, so retention removes nothing.
seealso:
  - name: pg_verifybackup
    description: PostgreSQL's own backup manifest verification.
    link: https://www.postgresql.org/docs/15/app-pgverifybackup.html
"""

EXAMPLES = r"""
- name: Nightly logical backup, proven by a restore, kept 14 days, copied to S3
  fediflow.dr.pg_backup_verify:
    mode: logical
    verify: restore
    login_host: db.internal
    login_user: backup
    login_password: "{{ vault_backup_password }}"
    db: fediflow
    dest: /var/backups/fediflow
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: postgres/logical
    s3_storage_class: STANDARD_IA
    retention_days: 14

- name: Physical base backup (zstd on the server), every file checked against its manifest
  fediflow.dr.pg_backup_verify:
    mode: physical
    compression: zstd
    verify: list
    login_host: db.internal
    login_user: replicator
    login_password: "{{ vault_replication_password }}"
    dest: /var/backups/fediflow-base
    retention_count: 7

- name: Re-verify last week's backup by restoring it, on a verify host (read from the repository)
  fediflow.dr.pg_backup_verify:
    backup_id: 20261118T020000Z-logical-3f9a1c
    verify: restore
    dest: /var/tmp/fediflow-verify-work
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: postgres/logical
    db: fediflow
    verify_host_name: "{{ inventory_hostname }}"
  delegate_to: db1.eu-west-1.fediflow.example
"""

RETURN = r"""
backup_id:
  description: Id of the backup taken or verified (null in check mode).
  returned: always
  type: str
  sample: 20261125T223151Z-logical-3f9a1c
verified:
  description: Whether the backup passed verification.
  returned: always
  type: bool
verification:
  description:
    - The verification record (level, ok, steps with what was compared, per-table counts for restores).
    - For V(restore), C(where) - C(host) (O(verify_host_name)), C(port), C(data_dir), C(socket_dir) of the scratch
      cluster and C(removed) (it was stopped and deleted) - also when the restore failed.
  returned: when a backup was taken or verified
  type: dict
  sample:
    level: restore
    ok: true
    where: {host: pg-eu-west-1, port: 41234, data_dir: /var/tmp/fediflow-verify-k2x9/data,
            socket_dir: /var/tmp/fediflow-verify-k2x9, removed: true}
files:
  description: Files of the backup with size and sha256.
  returned: when a backup was taken or verified
  type: list
  elements: dict
backup_path:
  description: Local directory of the backup taken.
  returned: when a backup was taken
  type: str
size_bytes:
  description: Total size of the backup files.
  returned: when a backup was taken
  type: int
start_lsn:
  description: WAL position where the backup starts.
  returned: when a backup was taken
  type: str
stop_lsn:
  description: WAL position where the backup is consistent.
  returned: when a backup was taken
  type: str
s3_keys:
  description: Objects uploaded, the manifest last.
  returned: always
  type: list
  elements: str
copies:
  description:
    - One per repository - C(repository), C(bucket), C(prefix), C(region), C(ok), C(error) (why the copy failed,
      C(repository down ...) when it did not answer), C(keys) written. The ledger manifest carries the same list
      (without C(keys)).
  returned: when a backup was taken and there are repositories
  type: list
  elements: dict
copies_ok:
  description: Repositories holding the backup (files and manifest).
  returned: when a backup was taken and there are repositories
  type: int
copies_required:
  description: Copies needed (O(required_copies), 0 resolved to every repository).
  returned: when a backup was taken and there are repositories
  type: int
degraded:
  description: Fewer copies than repositories (a repository down or a copy that failed).
  returned: when a backup was taken and there are repositories
  type: bool
complete:
  description: At least O(required_copies) copies (else the run failed).
  returned: when a backup was taken and there are repositories
  type: bool
repositories_down:
  description: Repositories that did not answer, with why.
  returned: always
  type: dict
skipped_manifests:
  description:
    - Manifests read from a repository or the local ledger that failed their checks as untrusted input (an id that
      is no backup id, a path leaving the backup, a size or shape that is not a manifest's), each with C(where) and
      C(error). They were left out - never downloaded, restored, pruned or deleted - and each is also a warning;
      the others were used as usual.
  returned: when a malformed manifest was met
  type: list
  elements: dict
ledger_written:
  description:
    - Repositories whose ledger entry got the verification result, when a backup verified with O(backup_id) was
      read from the repositories (none is local here, as on a verify host).
  returned: when O(backup_id) was verified from a repository
  type: list
  elements: str
source:
  description: Where a backup verified with O(backup_id) was read from (V(local) or a repository's name).
  returned: when O(backup_id) was verified
  type: str
pruned:
  description:
    - Backups removed by retention, with the reason and where (V(local), repository names).
    - "C(locked) - the repositories where a copy is under S3 Object Lock (retention not over, or a legal hold), each
      with C(until) and C(why). That copy is left as it is (a warning, never a failure) and retention tries again at
      its next run."
  returned: always
  type: list
  elements: dict
would_prune:
  description: In check mode, the backups retention would remove after a new verified backup.
  returned: check mode
  type: list
  elements: dict
commands:
  description: Commands run (no secrets), with exit codes and durations.
  returned: always
  type: list
  elements: dict
phases:
  description: Seconds per phase (backup, manifest, verify_*, upload, retention).
  returned: success
  type: dict
manifest:
  description: The ledger manifest as written.
  returned: when a backup was taken or verified
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module

from ansible_collections.fediflow.dr.plugins.module_utils import backup_run, repos
from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.fediflow.dr.plugins.module_utils.postgres import postgres_common_argument_spec


def main():
    spec = postgres_common_argument_spec()
    spec.update(aws_common_argument_spec())
    spec.update(repos.argument_spec())
    spec.update(
        mode={"type": "str", "default": "logical", "choices": ["logical", "physical"]},
        format={"type": "str", "choices": ["custom", "directory", "tar", "plain"]},
        compression={"type": "str", "default": "gzip", "choices": ["none", "gzip", "lz4", "zstd"]},
        compression_level={"type": "int"},
        compress_at={"type": "str", "default": "server", "choices": ["server", "client"]},
        jobs={"type": "int", "default": 2},
        verify={"type": "str", "default": "list", "choices": ["none", "list", "checksum", "restore"]},
        backup_id={"type": "str"},
        dest={"type": "path", "required": True},
        s3_bucket={"type": "str"},
        s3_prefix={"type": "str", "default": ""},
        s3_sse={"type": "str", "default": "AES256", "choices": ["AES256", "aws:kms"]},
        s3_kms_key_id={"type": "str"},
        s3_storage_class={"type": "str"},
        retention_count={"type": "int"},
        retention_days={"type": "int"},
        tags={"type": "dict", "default": {}},
        region_name={"type": "str"},
        cluster_name={"type": "str"},
        bin_dir={"type": "path"},
        os_user={"type": "str", "default": "postgres"},
        scratch_dir={"type": "path", "default": "/var/tmp"},
        record_row_counts={"type": "bool"},
        scratch_port={"type": "int"},
        verify_host_name={"type": "str"},
        command_timeout={"type": "int", "default": 7200},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[["repositories", "s3_bucket"]])
    params = dict(module.params)
    if not params["format"]:
        params["format"] = "custom" if params["mode"] == "logical" else "tar"
    run_module(module, backup_run.ensure, params, check_mode=module.check_mode)


if __name__ == "__main__":
    main()
