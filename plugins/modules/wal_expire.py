#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wal_expire
short_description: Remove from every repository of the WAL archive the WAL no retained base backup needs
version_added: 0.4.0
description:
  - "Reads the WAL archive's configuration (O(wal_config), the JSON file the replication role writes for
    C(fediflow_wal.py), or O(repositories)) and the backup ledgers that use the archive (O(ledgers): every
    region's, since after a failover the other region's host backs up into the same archive), then removes
    from B(each) repository the WAL segments, C(.partial) and C(.backup) files whose position is before the
    B(start) of the oldest retained B(verified) physical backup (minus O(margin_segments))."
  - "Positions are compared by segment number, never by file name (names sort by timeline first): a
    timeline 1 segment after a fork is kept when it is not older than the bound, a timeline 2 segment
    before it goes. Every C(.history) file is kept, and so is the C(.backup) label of every retained backup,
    and every file archived within O(keep_days) (the PITR window, whatever the ledger says)."
  - "Nothing is removed when the ledgers hold fewer verified physical backups than O(min_verified_backups),
    when a verified backup's start LSN cannot be read, or when a ledger cannot be read anywhere (its backups
    might need the WAL)."
  - "Each repository is listed and expired independently: one that does not answer is reported
    (RV(degraded), a warning) and left as it is, the others are expired; the module fails only when no
    repository answers. A rerun finishes an interrupted expiry and then changes nothing."
  - "Runs where the WAL configuration file is (the database host), with the system Python: standard library
    only (S3 through the archive command's own SigV4 client); the credentials come from that file or
    O(repositories), never from argv, and never appear in the result."
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  wal_config:
    description:
      - "The WAL archive's configuration file (C(replication_wal_config_file), for example
        C(/var/lib/postgresql/15/fediflow-wal.json)): one repository, or several under C(repositories), one per region."
      - Exactly one of O(wal_config) and O(repositories).
    type: path
  repositories:
    description:
      - The archive's repositories given here instead of O(wal_config), each as in the configuration file
        (C(name), C(backend) C(s3) or C(dir), C(bucket), C(prefix), C(region), C(endpoint_url), C(access_key),
        C(secret_key), C(repo) for a directory).
    type: list
    elements: dict
  ledgers:
    description:
      - The backup ledgers whose physical backups are weighed; at least one. A C(path) is a local ledger
        directory (C(backup_dest/physical)); an C(s3_prefix) (C(postgres/us-east-1/physical)) is read in
        B(every) S3 repository of the archive that answers (the region backup buckets), the union counting.
      - A ledger that cannot be read anywhere fails the run before anything is removed.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: A local ledger directory.
        type: path
      s3_prefix:
        description: A ledger prefix in the archive's S3 repositories.
        type: str
  access_key:
    description:
      - The WAL expiry's own S3 identity (access key id), used for B(every) S3 repository instead of the credentials in
        O(wal_config) or O(repositories). The WAL archive's identity may put and get WAL but not delete it; the
        expiry's may list and delete under the WAL prefix and read the ledgers' manifests, nothing else
        (C(docs/storage-security.md)). Give it with O(secret_key); empty - the repositories' own credentials.
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description: The secret access key of O(access_key).
    type: str
    aliases: [aws_secret_access_key]
  backup_clusters:
    description: Weigh only backups of these clusters (the manifest's C(cluster)); empty - every backup of the ledgers.
    type: list
    elements: str
    default: []
  keep_days:
    description:
      - Never remove a file archived less than this many days ago, whatever the ledger says (the PITR window
        you promise; the backup role passes C(backup_retention_days)). V(0) - the ledger alone decides.
    type: float
    default: 1
  margin_segments:
    description: Keep this many segments before the oldest retained backup's start segment as well.
    type: int
    default: 0
  min_verified_backups:
    description: Remove nothing unless the ledgers hold at least this many verified physical backups.
    type: int
    default: 1
  wal_segment_size:
    description: The cluster's WAL segment size in bytes (C(SHOW wal_segment_size)); archive names impossible for it are refused.
    type: int
    default: 16777216
seealso:
  - module: fediflow.dr.pg_backup_verify
  - module: fediflow.dr.pitr_restore
notes:
  - Retention of the backups themselves is M(fediflow.dr.pg_backup_verify)'s; run this after it (the backup role does).
  - A verified backup that is later removed by retention frees its WAL at the next run.
"""

EXAMPLES = r"""
- name: Expire the WAL archive after the nightly physical backup (both regions' ledgers weighed)
  fediflow.dr.wal_expire:
    wal_config: /var/lib/postgresql/15/fediflow-wal.json
    ledgers:
      - path: /var/backups/fediflow/physical
      - s3_prefix: postgres/us-east-1/physical
      - s3_prefix: postgres/eu-west-1/physical
    keep_days: 30
  register: wal_expiry

- name: What would go, and how big the archive is (check mode, nothing removed)
  fediflow.dr.wal_expire:
    wal_config: /var/lib/postgresql/15/fediflow-wal.json
    ledgers: [{path: /var/backups/fediflow/physical}]
    keep_days: 0
  check_mode: true

- name: A directory archive, two verified backups required, one spare segment
  fediflow.dr.wal_expire:
    repositories:
      - {name: nfs, backend: dir, repo: /srv/wal-archive}
    ledgers: [{path: /var/backups/fediflow/physical}]
    min_verified_backups: 2
    margin_segments: 1
"""

RETURN = r"""
repositories:
  description:
    - Per repository, in the configuration's order - C(name), C(answered), C(error) (null when all went well),
      C(before) and C(after) (C(segments) = whole WAL segments, C(files) = every WAL file incl. history,
      C(bytes)), C(removed) (files; in check mode, would be removed), C(removed_bytes), C(oldest_kept_segment),
      C(kept_in_window) (older than the bound but kept by O(keep_days)), C(first_removed), C(last_removed),
      C(locked) (files S3 Object Lock still holds - left, a warning, never an error; a later run expires them) and
      C(locked_until) (the latest end of their retention).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: us-east-1, answered: true, error: null, before: {segments: 412, files: 415, bytes: 6912212992},
       after: {segments: 12, files: 15, bytes: 201327616}, removed: 400, removed_bytes: 6710886400,
       oldest_kept_segment: "000000010000000000000191", kept_in_window: 0}
    - {name: eu-west-1, answered: false, error: "cannot talk to S3 at http://198.18.0.12:15001 ..."}
removed:
  description: Files removed in every repository together (in check mode, that would be removed).
  returned: always
  type: int
removed_bytes:
  description: Their bytes.
  returned: always
  type: int
degraded:
  description: Whether a repository did not answer or not every file could be removed (see RV(not_answered)).
  returned: always
  type: bool
not_answered:
  description: Names of the repositories with an error (left as they were).
  returned: always
  type: list
  elements: str
skipped_manifests:
  description:
    - Manifests read from a repository or the local ledger that failed their checks as untrusted input (an id that
      is no backup id, a path leaving the backup, a size or shape that is not a manifest's), each with C(where) and
      C(error). They were left out - never downloaded, restored, pruned or deleted - and each is also a warning;
      the others were used as usual.
  returned: always
  type: list
  elements: dict
bound:
  description:
    - What the expiry keeps from - C(segno), C(segment) (the first segment kept), C(start_segment), the oldest
      retained verified backup C(backup_id), its C(start_lsn), C(timeline), C(stop_time), C(margin_segments),
      C(verified_backups). Null when nothing may expire (see RV(reason)).
  returned: always
  type: dict
reason:
  description:
    - Why nothing may expire (too few verified base backups, or a manifest in the ledgers that could not be trusted
      - see RV(skipped_manifests); its backup may still need old WAL, so everything is kept), or null.
  returned: always
  type: str
pitr_window:
  description: How far back PITR reaches - C(from) (end of the oldest verified backup), C(days), C(backup_id).
  returned: always
  type: dict
ledgers:
  description: Each ledger read - C(ledger), C(backups), C(read_from) (local, or the repositories that answered), C(errors).
  returned: always
  type: list
  elements: dict
backups_weighed:
  description: Distinct backups (every kind) found in the ledgers.
  returned: always
  type: int
duration_s:
  description: Wall time of the run in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import walexpire
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    spec = dict(
        wal_config={"type": "path"},
        repositories={"type": "list", "elements": "dict", "no_log": True},
        ledgers={"type": "list", "elements": "dict", "required": True,
                 "options": {"path": {"type": "path"}, "s3_prefix": {"type": "str"}}},
        access_key={"type": "str", "no_log": True, "aliases": ["aws_access_key_id"]},
        secret_key={"type": "str", "no_log": True, "aliases": ["aws_secret_access_key"]},
        backup_clusters={"type": "list", "elements": "str", "default": []},
        keep_days={"type": "float", "default": 1},
        margin_segments={"type": "int", "default": 0},
        min_verified_backups={"type": "int", "default": 1},
        wal_segment_size={"type": "int", "default": 16777216},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[("wal_config", "repositories")],
                           required_together=[("access_key", "secret_key")],
                           required_one_of=[("wal_config", "repositories")])
    run_module(module, walexpire.expire, dict(module.params), check_mode=module.check_mode, warn=module.warn)


if __name__ == "__main__":
    main()
