#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_cache
short_description: Back up the critical Redis cache keys and warm a Redis up from such a backup
version_added: 0.3.0
description:
  - V(backup) finds the keys matching O(patterns) with C(SCAN) and reads each one's C(TYPE),
    C(PTTL) and C(DUMP) (type, value and remaining TTL) in batches of O(batch_size), each batch
    inside C(MULTI)/C(EXEC). The records are written, gzip-compressed JSON lines, into a new
    backup directory under O(dest) with files of mode C(0600), read back to verify, and recorded
    in the backup ledger (a C(manifest.json) with sizes and sha256 checksums, written last);
    the backup is then written to every repository of O(repositories) (or to O(s3_bucket)), files first,
    manifest last, encrypted with O(s3_sse).
  - "Consistency: each batch is atomic, the key set as a whole is not a point-in-time snapshot
    (keys written or deleted while the scan runs may or may not be in it). The manifest records
    C(start_time) and C(stop_time), and each batch the millisecond it was read."
  - A pattern that matches no key fails the backup, naming the pattern, unless
    O(allow_empty_patterns=true). Nothing is written when Redis cannot be reached.
  - V(restore) (cache warm-up) writes the keys of a backup (O(backup_id), else the newest
    verified cache backup in the ledger of O(dest) and every repository that answers) into the Redis server the
    connection options name, with C(RESTORE), keeping type, value and TTL. A repository that is down (a lost
    region) is skipped (RV(s3_error) says why); the backup is read from the first one that holds it. A key gets the TTL it
    had at backup time minus the time elapsed since it was read; a key whose TTL ran out in
    between is not written and counted as V(expired).
  - A key already present in the target is newer than the backup and kept (V(already_present)),
    unless O(overwrite=true); even then a key whose value equals the backup's is not rewritten,
    so a second restore writes nothing (V(changed=false)).
  - A target that is a replica is refused (it is read-only), unless O(promote_replica=true);
    then it is made a writable primary first (C(REPLICAOF NO ONE)), as an on-call engineer
    does after a region failover.
  - Check mode predicts the counts (nothing is written, a replica is not promoted); C(--diff)
    shows the counts, the keys that would be written (the first 200) and the role change.
  - The result has the count of each outcome and, per key, its outcome (and error) in RV(keys);
    nothing is logged per key. The step fails when the share of failed keys exceeds
    O(max_failed_share).
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.redis
  - fediflow.dr.aws
  - fediflow.dr.repositories
  - fediflow.dr.repositories.copies
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
attributes:
  idempotent:
    support: partial
    details: V(restore) is idempotent; every V(backup) run takes a new backup, as a backup job should.
options:
  state:
    description: V(backup) takes a backup of the critical keys, V(restore) warms a Redis up from one.
    type: str
    choices: [ backup, restore ]
    required: true
  dest:
    description:
      - Local cache backup repository (created C(0700)); each backup is a subdirectory named by its id.
      - For V(restore), the local ledger searched for the backup (the repositories too).
    type: path
    required: true
  patterns:
    description:
      - Key patterns of the critical set (C(SCAN MATCH) glob syntax), for example C(session:*).
      - Required for V(backup); a key matching several patterns is saved once.
    type: list
    elements: str
    default: []
  allow_empty_patterns:
    description: Accept a pattern that matches no key (it is reported in RV(empty_patterns)).
    type: bool
    default: false
  backup_id:
    description: For V(restore), the backup to restore instead of the newest verified one.
    type: str
  overwrite:
    description: For V(restore), replace a key present in the target when its value differs from the backup's.
    type: bool
    default: false
  promote_replica:
    description:
      - For V(restore), make a replica target a writable primary (C(REPLICAOF NO ONE)) before restoring.
      - Without it, a replica target is refused.
    type: bool
    default: false
  max_failed_share:
    description: For V(restore), fail when more than this share (0 to 1) of the backup's keys failed to restore.
    type: float
    default: 0.05
  batch_size:
    description: Keys read or written per round trip (and per C(MULTI)/C(EXEC) when backing up).
    type: int
    default: 500
  scan_count:
    description: C(COUNT) hint of each C(SCAN) call.
    type: int
    default: 1000
  region_name:
    description: Region recorded in the manifest; retention weighs only backups of the same region and O(source_name).
    type: str
  source_name:
    description: Name of the Redis source recorded in the manifest (for example the inventory host).
    type: str
  tags:
    description: Free-form labels stored in the manifest.
    type: dict
    default: {}
  s3_bucket:
    description:
      - Upload the backup to this bucket (V(backup)); also search its ledger (V(restore)). The one-repository
        shorthand of O(repositories).
    type: str
  s3_prefix:
    description:
      - Key prefix in O(s3_bucket), or in each of O(repositories) after its own prefix; a backup lives under
        C(<prefix>/<backup_id>/).
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
  retention_count:
    description: Keep the newest N cache backups of this source. Must be at least 1.
    type: int
  retention_days:
    description:
      - Keep cache backups of this source younger than N days. Must be at least 1.
      - With O(retention_count) too, a backup is removed only when both allow it.
    type: int
notes:
  - The C(DUMP) payload is Redis's own serialization; restore into the same or a newer Redis version.
  - See C(docs/redis.md) in the collection for how the warm-up fits the recovery runbook.
seealso:
  - module: fediflow.dr.pg_backup_verify
"""

EXAMPLES = r"""
- name: Back up the critical cache keys of the primary region, copy to S3, keep 24
  fediflow.dr.redis_cache:
    state: backup
    redis_host: cache1.us-east-1.fediflow.example
    redis_password: "{{ vault_redis_password }}"
    redis_tls: true
    patterns: ["settings:*", "trends:*", "feed:home:*", "session:*"]
    dest: /var/backups/fediflow/cache
    region_name: us-east-1
    source_name: cache1.us-east-1
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: cache/us-east-1
    retention_count: 24

- name: After a failover, warm the surviving region's Redis up from the newest backup
  fediflow.dr.redis_cache:
    state: restore
    redis_host: cache1.eu-west-1.fediflow.example
    redis_password: "{{ vault_redis_password }}"
    redis_tls: true
    promote_replica: true
    dest: /var/backups/fediflow/cache
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: cache/us-east-1
  register: warmup

- name: Show what happened
  ansible.builtin.debug:
    msg: "{{ warmup.counts }}"
"""

RETURN = r"""
backup_id:
  description: Id of the backup taken (V(backup); null in check mode) or restored (V(restore)).
  returned: always
  type: str
  sample: 20261126T043000Z-cache-3f9a1c
backup_path:
  description: Local directory of the new backup.
  returned: when a backup was taken
  type: str
key_count:
  description: Keys matched by O(patterns) (each once).
  returned: when O(state=backup)
  type: int
keys_matched:
  description: Keys matched per pattern.
  returned: when O(state=backup)
  type: dict
  sample: {"session:*": 800, "trends:*": 200}
empty_patterns:
  description: Patterns that matched nothing (only with O(allow_empty_patterns=true)).
  returned: when O(state=backup)
  type: list
  elements: str
keys_saved:
  description: Keys written into the backup.
  returned: when a backup was taken
  type: int
keys:
  description:
    - One entry per key of the backup with C(key), C(outcome) (V(restored), V(replaced),
      V(already_present), V(expired), V(failed)) and C(error) for a failure; predicted in check mode.
  returned: when O(state=restore)
  type: list
  elements: dict
  sample: [{"key": "session:42", "outcome": "restored"}]
vanished:
  description: Keys found by SCAN that were gone (deleted or expired) when read.
  returned: when a backup was taken
  type: int
types:
  description: Saved keys per Redis type.
  returned: when a backup was taken
  type: dict
  sample: {"hash": 51, "string": 1800, "zset": 1200}
files:
  description: Files of the backup with size and sha256, as in the manifest.
  returned: when a backup was taken
  type: list
  elements: dict
size_bytes:
  description: Size of the backup's files.
  returned: when a backup was taken
  type: int
manifest:
  description: The ledger manifest written for the backup.
  returned: when a backup was taken
  type: dict
start_time:
  description: When the backup started reading keys (UTC, ISO 8601).
  returned: when a backup was taken
  type: str
stop_time:
  description: When the backup finished reading keys (UTC, ISO 8601).
  returned: when a backup was taken
  type: str
s3_keys:
  description: Objects uploaded, the manifest last.
  returned: when O(state=backup)
  type: list
  elements: str
copies:
  description:
    - One per repository (C(repository), C(bucket), C(prefix), C(region), C(ok), C(error), C(keys)), as
      M(fediflow.dr.pg_backup_verify) returns them; with RV(copies_ok), RV(copies_required), RV(degraded),
      RV(complete).
  returned: when a backup was taken and there are repositories
  type: list
  elements: dict
copies_ok:
  description: Repositories holding the backup.
  returned: when a backup was taken and there are repositories
  type: int
copies_required:
  description: Copies needed (O(required_copies), 0 resolved to every repository).
  returned: when a backup was taken and there are repositories
  type: int
degraded:
  description: Fewer copies than repositories.
  returned: when a backup was taken and there are repositories
  type: bool
complete:
  description: At least O(required_copies) copies (else the run failed).
  returned: when a backup was taken and there are repositories
  type: bool
repositories_down:
  description: Repositories that did not answer, with why.
  returned: when O(state=backup)
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
pruned:
  description: Backups removed by retention (per location), with the reason and where.
  returned: when O(state=backup)
  type: list
  elements: dict
source_role:
  description: Replication role of the backed-up Redis (V(master) or V(slave)).
  returned: when O(state=backup)
  type: str
counts:
  description: Keys per outcome, and C(total).
  returned: when O(state=restore)
  type: dict
  sample: {"already_present": 0, "expired": 3, "failed": 0, "replaced": 0, "restored": 2997, "total": 3000}
failed_share:
  description: Share of the backup's keys that failed.
  returned: when O(state=restore)
  type: float
promoted:
  description: Whether the target was (would be, in check mode) made a primary with C(REPLICAOF NO ONE).
  returned: when O(state=restore)
  type: bool
role_before:
  description: Role of the target before the restore (V(primary) or V(replica)).
  returned: when O(state=restore)
  type: str
backup_stop_time:
  description: When the restored backup finished reading keys.
  returned: when O(state=restore)
  type: str
backup_where:
  description: Where the restored backup is held (V(local), repository names).
  returned: when O(state=restore)
  type: list
  elements: str
s3_error:
  description:
    - Why a repository was skipped (down, for example the lost region's bucket, or a copy that could not be
      read), else null.
  returned: when O(state=restore)
  type: str
phases:
  description: Seconds spent per phase (connect, scan, dump, verify, upload, read, restore ...).
  returned: success
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module

from ansible_collections.fediflow.dr.plugins.module_utils import rediscache, repos
from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.fediflow.dr.plugins.module_utils.redisconn import REDIS_IMPORT_ERROR, redis_common_argument_spec


def main():
    spec = redis_common_argument_spec()
    spec.update(aws_common_argument_spec())
    spec.update(repos.argument_spec())
    spec.update(
        state={"type": "str", "required": True, "choices": ["backup", "restore"]},
        dest={"type": "path", "required": True},
        patterns={"type": "list", "elements": "str", "default": []},
        allow_empty_patterns={"type": "bool", "default": False},
        backup_id={"type": "str"},
        overwrite={"type": "bool", "default": False},
        promote_replica={"type": "bool", "default": False},
        max_failed_share={"type": "float", "default": 0.05},
        batch_size={"type": "int", "default": 500},
        scan_count={"type": "int", "default": 1000},
        region_name={"type": "str"},
        source_name={"type": "str"},
        tags={"type": "dict", "default": {}},
        s3_bucket={"type": "str"},
        s3_prefix={"type": "str", "default": ""},
        s3_sse={"type": "str", "default": "AES256", "choices": ["AES256", "aws:kms"]},
        s3_kms_key_id={"type": "str"},
        retention_count={"type": "int"},
        retention_days={"type": "int"},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[["repositories", "s3_bucket"]])
    if REDIS_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR, duration_s=0.0)
    run_module(module, rediscache.ensure, dict(module.params), check_mode=module.check_mode)


if __name__ == "__main__":
    main()
