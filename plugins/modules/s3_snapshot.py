#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: s3_snapshot
short_description: Point-in-time snapshots of a directory tree in S3, restore, verification and retention
version_added: 0.2.0
description:
  - Keeps snapshots of a directory tree (for example the media storage) in S3 under
    C(s3://<s3_bucket>/<s3_prefix>/). Each distinct file content is stored once, as
    C(objects/<ab>/<sha256>); a snapshot is its manifest C(snapshots/<id>.json), the backup
    ledger entry (id, kind C(snapshot), region, start/stop time, every file with path, size,
    mode, mtime, owner and sha256, directories, symlinks, totals, verification).
  - The manifest is written last, after every new object has been uploaded and checked, so a
    snapshot without its manifest does not exist. A run that fails or is killed leaves only
    unreferenced objects; the next run reuses them and garbage collection removes the rest.
  - V(present) takes a snapshot of O(src). A file is read again only when its size, mtime,
    ctime or inode differ from the previous snapshot of the same host and directory (as git
    and restic do), so an edit that keeps size and mtime is still caught, C(utime) cannot put a
    ctime back. Files changed within the timestamp granularity before the previous scan are
    re-read too. A snapshot identical to the previous one (same paths, contents, modes, mtimes,
    owners, link targets) is not written again, the run reports C(changed=false) and the
    previous snapshot's id. Files whose inode or ctime moved without a content change (for
    example after restoring into O(src)) are re-read on every run until a snapshot is written.
  - New objects are checked before upload against one paginated listing of C(objects/) (or a
    HEAD per object when at most 256 files changed). Files below O(multipart_threshold_mb) are
    read once and sent with their SHA-256 (C(x-amz-checksum-sha256)), so S3 rejects a body that
    does not match; larger ones go up as multipart uploads with per-part SHA-256 checksums and
    their sha256 as metadata. After upload every new object's size and sha256 are checked.
  - V(restored) restores a snapshot (O(snapshot_id), V(latest), or the newest that finished
    before O(before)) into O(dest). Every file is written to a temporary file beside its
    target while its sha256 is computed, and renamed into place only when it matches; a
    damaged object fails the run naming the file and leaves no partial file. Files already in
    O(dest) with the right content are kept (only mode, mtime and owner are fixed). Modes and
    mtimes of files and directories are restored, and owners when running as root.
  - V(absent) removes the snapshot O(snapshot_id), or applies the retention options. Manifests
    are removed first, then the objects no remaining snapshot references. Retention options
    also apply after V(present).
  - V(verified) checks that every object of a snapshot exists with the right size and SHA-256
    (the checksum S3 stored at upload, else the sha256 metadata); with O(deep=true) every object
    is downloaded and hashed. The run fails when anything is missing or wrong.
  - With O(repositories) (one bucket per region), V(present) snapshots into the first one that answers (the
    host's own region first), then makes every other one hold the same snapshot (same id) - the objects it lacks,
    from the local file when its content is unchanged, else copied from the first, each checked, then the
    manifest. An unchanged tree costs one C(HEAD) per other repository; a repository that missed a snapshot (it
    was down) gets it on the next run. Retention runs in each repository that holds the snapshot. RV(copies) says
    which hold it; fewer than O(required_copies) fails the run. V(restored) and V(verified) read from the first
    repository that answers and holds the selection (the surviving region's after a region is lost).
  - Symlinks are recorded with their target and never followed; empty directories are kept;
    hard links are stored as separate files (their content once); sockets, FIFOs and devices
    are skipped and listed in RV(skipped).
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.aws
  - fediflow.dr.repositories
  - fediflow.dr.repositories.copies
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
attributes:
  idempotent:
    support: full
    details:
      - V(present) on an unchanged tree writes no new snapshot. Garbage collection and stale
        lock removal happen once.
options:
  state:
    description: What to do (see the description).
    type: str
    choices: [ present, restored, absent, verified ]
    default: present
  s3_bucket:
    description:
      - Bucket holding the snapshots; the one-repository shorthand of O(repositories). One of the two is required.
    type: str
  s3_prefix:
    description:
      - Key prefix of this snapshot repository inside O(s3_bucket), or inside each of O(repositories) after the
        repository's own prefix.
    type: str
    default: ''
  src:
    description: Directory to snapshot. Required with O(state=present).
    type: path
  dest:
    description: Directory to restore into (created when missing). Required with O(state=restored).
    type: path
  snapshot_id:
    description:
      - Snapshot to restore or verify (V(latest), the default, is the newest), or to remove
        with O(state=absent).
    type: str
  before:
    description:
      - Restore or verify the newest snapshot that finished strictly before this ISO 8601
        timestamp, which must include a time zone (C(2026-11-25T14:30:00Z),
        C(2026-11-25T15:30:00+01:00)).
    type: str
  exclude:
    description:
      - Glob patterns of paths to leave out. A pattern holding or starting with C(/) matches the
        path relative to O(src) (C(/cache), C(tmp/*.part)); one without matches a file or
        directory name at any depth (C(*.tmp)). An excluded directory is not descended.
      - On restore, files in O(dest) matching the snapshot's patterns are never deleted.
    type: list
    elements: str
    default: []
  parallel:
    description: Threads for hashing, uploads, downloads and checks (1 to 64).
    type: int
    default: 4
  multipart_threshold_mb:
    description: Files of this size (MiB) and larger are uploaded as multipart uploads with parts of this size.
    type: int
    default: 64
  force_hash:
    description: Read and hash every file, whatever its stat says.
    type: bool
    default: false
  force:
    description: Allow restoring into a non-empty O(dest).
    type: bool
    default: false
  delete_extra:
    description:
      - When restoring, delete files, symlinks and directories in O(dest) that are not in the
        snapshot (except those matching the snapshot's O(exclude) patterns). Without it nothing
        outside the snapshot is deleted.
    type: bool
    default: false
  deep:
    description: With O(state=verified), download every object and check its sha256.
    type: bool
    default: false
  keep_last:
    description: Keep the newest N snapshots. Must be at least 1.
    type: int
  keep_within:
    description:
      - Keep every snapshot that finished within this duration of the newest snapshot (not of
        now, so a pause in backups never lets retention remove the last good ones), for example
        V(7d), V(12h), V(1w2d), V(90m) (C(m) is minutes).
    type: str
  keep_hourly:
    description: Keep the newest snapshot of each of the last N hours (UTC) that have one. At least 1.
    type: int
  keep_daily:
    description: Keep the newest snapshot of each of the last N days (UTC) that have one. At least 1.
    type: int
  keep_weekly:
    description: Keep the newest snapshot of each of the last N ISO weeks that have one. At least 1.
    type: int
  tags:
    description:
      - Labels stored in the manifest (for example C(region), C(kind)). C(region) also fills the
        ledger's region (default O(region)).
    type: dict
    default: {}
  ledger_dir:
    description:
      - Also write each new snapshot's manifest to C(<ledger_dir>/<snapshot_id>/manifest.json)
        (the local backup ledger), and remove it when the snapshot is removed.
    type: path
  s3_sse:
    description: Server-side encryption of uploaded objects and manifests.
    type: str
    choices: [ AES256, aws:kms ]
    default: AES256
  s3_kms_key_id:
    description: KMS key for O(s3_sse=aws:kms).
    type: str
  s3_storage_class:
    description:
      - Storage class of content objects, for example C(STANDARD_IA). Manifests stay C(STANDARD).
        Archive classes (C(GLACIER), C(DEEP_ARCHIVE)) need an S3 restore before a snapshot can be restored.
    type: str
notes:
  - Retention follows restic's C(forget) policy; a snapshot is kept when any option keeps it,
    and the newest snapshot is always kept. O(keep_last=0) is refused.
  - Runs that write lock the repository with small objects under C(locks/). Snapshots run side
    by side; garbage collection skips deleting objects while another run's lock is fresh (a lock
    of a process gone from this host, or older than a day, is stale and removed). A snapshot run
    takes its lock only once it has something to write, then checks that its parent snapshot and
    every object it needs beyond the parent's still exist before writing the manifest (else it
    fails and writes nothing); an unchanged tree costs no lock.
  - In a versioned bucket, deleted objects stay as noncurrent versions until a lifecycle rule expires them.
  - The credentials are taken from the options or the usual C(AWS_*) environment variables and never returned.
seealso:
  - module: fediflow.dr.pg_backup_verify
"""

EXAMPLES = r"""
- name: Snapshot the media storage every 15 minutes, keep a sensible history
  fediflow.dr.s3_snapshot:
    src: /var/lib/fediflow/media
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: files/media
    exclude: ["*.tmp", "/cache"]
    parallel: 8
    tags:
      region: us-east-1
      kind: media
    ledger_dir: /var/backups/fediflow/ledger/media
    keep_within: 2d
    keep_daily: 14
    keep_weekly: 8

- name: Restore the media as it was before the incident
  fediflow.dr.s3_snapshot:
    state: restored
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: files/media
    before: "2026-11-25T14:30:00Z"
    dest: /var/lib/fediflow/media
    force: true

- name: Prove last night's snapshot is complete by re-hashing every object
  fediflow.dr.s3_snapshot:
    state: verified
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: files/media
    deep: true

- name: Remove one snapshot
  fediflow.dr.s3_snapshot:
    state: absent
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: files/media
    snapshot_id: 20261125T223151Z-snapshot-3f9a1c
"""

RETURN = r"""
repository:
  description: The repository the snapshot was taken in, or restored / verified from.
  returned: when O(state) is V(present), V(restored) or V(verified)
  type: str
copies:
  description:
    - One per repository - C(repository), C(bucket), C(prefix), C(region), C(ok) (null in check mode), C(error),
      C(objects_copied) - with RV(copies_ok), RV(copies_required), RV(degraded), RV(complete) as
      M(fediflow.dr.pg_backup_verify) returns them. The local ledger entry (O(ledger_dir)) carries the list too.
  returned: when O(state=present)
  type: list
  elements: dict
copies_ok:
  description: Repositories holding the snapshot.
  returned: when O(state=present) and not in check mode
  type: int
copies_required:
  description: Copies needed (O(required_copies), 0 resolved to every repository).
  returned: when O(state=present) and not in check mode
  type: int
degraded:
  description: Fewer copies than repositories.
  returned: when O(state=present) and not in check mode
  type: bool
complete:
  description: At least O(required_copies) copies (else the run failed).
  returned: when O(state=present) and not in check mode
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
retention:
  description: Per repository, what retention removed (C(removed), C(objects_deleted), C(bytes_deleted), C(gc_skipped)).
  returned: when retention ran
  type: dict
snapshot_id:
  description:
    - The snapshot taken (or, when the tree was unchanged, the previous one), restored or
      verified. Null in check mode when a new snapshot would be written.
  returned: state is present, restored or verified
  type: str
  sample: 20261125T223151Z-snapshot-3f9a1c
snapshot_written:
  description: Whether a new snapshot manifest was written.
  returned: state is present
  type: bool
parent_id:
  description: The previous snapshot of the same host and directory that this one was compared with.
  returned: state is present
  type: str
manifest_key:
  description: S3 key of the snapshot's manifest (null in check mode for a new snapshot).
  returned: state is present
  type: str
  sample: files/media/snapshots/20261125T223151Z-snapshot-3f9a1c.json
ledger_path:
  description: Local copy of the manifest.
  returned: when O(ledger_dir) is set and a snapshot was written
  type: str
start_time:
  description: When the snapshot started (UTC, ISO 8601).
  returned: when a snapshot was written
  type: str
stop_time:
  description: When the snapshot finished (taken, restored or verified snapshot).
  returned: when a snapshot was written, restored or verified
  type: str
files_total:
  description: Files in the snapshot.
  returned: state is present, restored or verified
  type: int
bytes_total:
  description: Bytes of all files in the snapshot.
  returned: state is present
  type: int
dirs_total:
  description: Directories in the snapshot, the root included.
  returned: state is present
  type: int
symlinks_total:
  description: Symlinks in the snapshot.
  returned: state is present
  type: int
skipped:
  description: Special files left out (sockets, FIFOs, devices), with their type.
  returned: state is present
  type: list
  elements: dict
files_hashed:
  description: Files read and hashed (new, changed or racily clean); the others were matched by stat.
  returned: state is present
  type: int
files_unchanged:
  description: Files whose size, mtime, ctime and inode matched the previous snapshot (not read).
  returned: state is present
  type: int
objects_uploaded:
  description: Distinct contents uploaded (predicted in check mode).
  returned: state is present
  type: int
bytes_uploaded:
  description: Bytes uploaded (predicted in check mode).
  returned: state is present
  type: int
objects_reused:
  description: Distinct contents of the snapshot already in S3.
  returned: state is present
  type: int
bytes_reused:
  description: Bytes of the reused contents.
  returned: state is present
  type: int
unique_objects:
  description: Distinct contents in the snapshot.
  returned: state is present
  type: int
unique_bytes:
  description: Bytes of the distinct contents.
  returned: state is present
  type: int
changes:
  description: Counts of paths added, changed and removed (against the previous snapshot, or against O(dest) when restoring).
  returned: state is present or restored
  type: dict
  sample: {added: 3, changed: 1, removed: 0}
dest:
  description: The restore directory.
  returned: state is restored
  type: str
files_written:
  description: Files downloaded and written (their content differed or was missing).
  returned: state is restored
  type: int
bytes_written:
  description: Bytes downloaded and written.
  returned: state is restored
  type: int
symlinks_written:
  description: Symlinks created.
  returned: state is restored
  type: int
dirs_created:
  description: Directories created.
  returned: state is restored
  type: int
deleted:
  description: Paths deleted from O(dest) because of O(delete_extra).
  returned: state is restored
  type: list
  elements: str
extra_kept:
  description: Paths in O(dest) outside the snapshot (and not matching its O(exclude) patterns) that were kept.
  returned: state is restored
  type: int
ok:
  description: Whether the verification passed.
  returned: state is verified
  type: bool
method:
  description: How the objects were checked.
  returned: state is verified
  type: str
objects_checked:
  description: Distinct objects checked.
  returned: state is verified
  type: int
missing:
  description: Files whose object is missing.
  returned: state is verified
  type: list
  elements: str
wrong_size:
  description: Files whose object has another size.
  returned: state is verified
  type: list
  elements: str
mismatched:
  description: Files whose object's checksum (or content, with O(deep)) does not match.
  returned: state is verified
  type: list
  elements: str
removed:
  description: Snapshots removed (predicted in check mode), with their stop time.
  returned: state is absent, or retention options were given
  type: list
  elements: dict
kept:
  description: Snapshots kept, with the reasons.
  returned: state is absent, or retention options were given
  type: list
  elements: dict
objects_deleted:
  description: Unreferenced objects deleted by garbage collection (predicted in check mode).
  returned: state is absent, or retention options were given
  type: int
bytes_deleted:
  description: Bytes of the deleted objects.
  returned: state is absent, or retention options were given
  type: int
gc_skipped:
  description: Why garbage collection kept unreferenced objects (another run in progress), else null.
  returned: state is absent, or retention options were given
  type: str
stale_locks_removed:
  description: Locks of runs that died, removed.
  returned: state is absent, or retention options were given
  type: int
phases:
  description: Seconds per phase (connect, lock, parent, scan, hash_upload, verify, manifest, compare, download, ledger, gc ...).
  returned: success
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import repos, snapshot
from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    spec = aws_common_argument_spec()
    spec.update(repos.argument_spec())
    spec.update(
        state={"type": "str", "default": "present", "choices": list(snapshot.STATES)},
        s3_bucket={"type": "str"},
        s3_prefix={"type": "str", "default": ""},
        src={"type": "path"},
        dest={"type": "path"},
        snapshot_id={"type": "str"},
        before={"type": "str"},
        exclude={"type": "list", "elements": "str", "default": []},
        parallel={"type": "int", "default": 4},
        multipart_threshold_mb={"type": "int", "default": 64},
        force_hash={"type": "bool", "default": False},
        force={"type": "bool", "default": False},
        delete_extra={"type": "bool", "default": False},
        deep={"type": "bool", "default": False},
        keep_last={"type": "int"},
        keep_within={"type": "str"},
        keep_hourly={"type": "int"},
        keep_daily={"type": "int"},
        keep_weekly={"type": "int"},
        tags={"type": "dict", "default": {}},
        ledger_dir={"type": "path"},
        s3_sse={"type": "str", "default": "AES256", "choices": ["AES256", "aws:kms"]},
        s3_kms_key_id={"type": "str"},
        s3_storage_class={"type": "str"},
    )
    module = AnsibleModule(
        argument_spec=spec,
        supports_check_mode=True,
        required_if=[("state", "present", ["src"]), ("state", "restored", ["dest"])],
        mutually_exclusive=[("snapshot_id", "before"), ("repositories", "s3_bucket")],
        required_one_of=[("repositories", "s3_bucket")],
    )
    run_module(module, snapshot.run, module.params, check_mode=module.check_mode)


if __name__ == "__main__":
    main()
