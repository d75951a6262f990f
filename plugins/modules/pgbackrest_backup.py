#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pgbackrest_backup
short_description: Take a pgBackRest backup (full, differential or incremental) into every repository
version_added: 0.4.0
description:
  - Takes a pgBackRest backup of O(type) of one stanza into each repository of its configuration in turn
    (pgBackRest 2.45 writes a backup to one repository per run), so every region holds a copy. The stanza is
    created first in a repository that has none (C(stanza-create)).
  - A repository whose backup fails is B(degraded) - reported with pgBackRest's message - and the others still get
    theirs; the run fails when fewer than O(required_copies) repositories hold the new backup. pgBackRest itself
    makes a V(diff) or V(incr) a full one in a repository that has no full backup yet.
  - What C(pgbackrest info) says of the new backups is read as untrusted input and returned as ledger-shaped
    entries (label, type, prior backup, repositories, WAL and LSN range, sizes, times).
  - Runs pgBackRest as O(os_user) with the configuration file O(config) (written by M(fediflow.dr.pgbackrest_config)
    with the backup identity's keys); no secret is passed in argv or the environment.
  - Each new backup is then proven (O(verify)) - V(list) runs C(pgbackrest verify --set) in every repository that holds
    one (each file against the backup's own manifest, the WAL it needs); V(restore) also restores the first
    repository's backup (C(pgbackrest restore --set)) into a scratch cluster on this host (a 0700 directory, a socket
    only, archiving off, removed afterwards), recovers it to consistency from the WAL the backup holds
    (C(archive-copy)) and compares its per-table row counts with the source's, counted when that backup ended
    (what changed during it is allowed, as for a native physical backup). A repository whose backup fails its
    check counts as no copy.
  - Each new backup's proof is recorded on it in its repository (C(pgbackrest annotate),
    C(fediflow-verified=list|restore|failed) and C(fediflow-verified-at)) - the repository is this engine's ledger,
    read with C(pgbackrest info) by PITR, validate, retention and reports in any region. A backup whose proof cannot
    be recorded counts as no copy.
  - Retention (O(retention_full), O(retention_days)) runs once the new backups are proven, through
    C(pgbackrest expire) per repository - backups and the WAL only they needed, together. A full backup and the
    differentials and incrementals depending on it are judged as one chain; the chain holding the newest verified
    backup is never expired (pgBackRest expires the oldest chains only, so every newer one stays too).
  - See C(docs/pgbackrest.md) for what the pgBackRest engine does today.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.postgres
attributes:
  check_mode:
    support: full
    details: Reads C(pgbackrest info) and reports what would be backed up where; takes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run takes a new backup, as a scheduled backup job does.
options:
  config:
    description: The pgBackRest configuration file (the backup identity's).
    type: path
    required: true
  stanza:
    description: The stanza.
    type: str
    required: true
  type:
    description:
      - The backup type. V(auto) - the schedule's, per repository (O(full_interval_s), O(diff_interval_s)) - a full
        when the repository's newest full ended that long ago or it has none (a repository back after its region's
        outage starts a fresh chain), a differential when its newest full or differential ended O(diff_interval_s)
        ago, else an incremental; one scheduled job (every 4 hours) makes the weekly full and the daily
        differential, and a missed run is made up by the next one.
    type: str
    choices: [auto, full, diff, incr]
    default: auto
  full_interval_s:
    description: With O(type=auto), a full backup at least this often (seconds; the inventory's schedule).
    type: int
    default: 604800
  diff_interval_s:
    description: With O(type=auto), a differential at least this often (seconds; at most O(full_interval_s)).
    type: int
    default: 86400
  repositories:
    description:
      - The names of the configuration's repositories, in its order (C(repo1), C(repo2), ...) - the names the
        repository list gave M(fediflow.dr.pgbackrest_config).
    type: list
    elements: str
    required: true
  required_copies:
    description: How many repositories must hold the new backup; V(0) - every one.
    type: int
    default: 0
  os_user:
    description: The OS user pgBackRest runs as (the cluster's owner).
    type: str
    default: postgres
  binary:
    description: The C(pgbackrest) program; unset - the one on C(PATH), else C(/usr/bin/pgbackrest).
    type: path
  timeout:
    description: Seconds one repository's backup (or its verification, or the restore) may take.
    type: int
    default: 86400
  verify:
    description:
      - How the new backups are proven. V(none) - not at all; V(list) - C(pgbackrest verify) in each repository;
        V(restore) - also a restore into a scratch cluster and the row counts (needs the connection options, to
        count the source's rows).
    type: str
    choices: [none, list, restore]
    default: list
  bin_dir:
    description: Directory of the PostgreSQL programs (the scratch cluster's); discovered when omitted.
    type: path
  scratch_dir:
    description: Parent directory of the scratch cluster (must be reachable by O(os_user)).
    type: path
    default: /var/tmp
  scratch_port:
    description: Port of the scratch cluster (it names its socket; nothing listens on TCP); unset - a free one.
    type: int
  verify_host_name:
    description: The name recorded as where the restore ran; defaults to this host's name.
    type: str
  retention_full:
    description:
      - Full backups (each with the differentials and incrementals depending on it) kept per repository. With
        O(retention_days) too, a chain is expired only when both say so. Unset (and O(retention_days) unset) - no
        expiry.
    type: int
  retention_days:
    description: Chains whose full backup ended within this many days are kept.
    type: int
  expire_config:
    description:
      - The configuration file C(expire) runs with - the WAL expiry identity's (it deletes backups and WAL; the backup
        identity never deletes WAL, docs/storage-security.md). Unset - O(config).
    type: path
  probe_timeout:
    description:
      - Seconds a repository's S3 endpoint (as O(config) names it) has to take a TCP connection before the run leaves
        it out - reported, its backup degraded - instead of letting pgBackRest retry it for minutes (a lost region's).
    type: int
    default: 3
"""

EXAMPLES = r"""
- name: The 4-hourly incremental, into every region's repository
  fediflow.dr.pgbackrest_backup:
    config: /etc/pgbackrest/backup.conf
    stanza: fediflow
    type: incr
    repositories: [us-east-1, eu-west-1]
  register: pgbackrest_run

- name: The weekly full, proven by a restore; two weeks of chains kept, never the newest verified one expired
  fediflow.dr.pgbackrest_backup:
    config: /etc/pgbackrest/backup.conf
    stanza: fediflow
    type: full
    repositories: [us-east-1, eu-west-1]
    verify: restore
    login_host: 127.0.0.1
    login_password: "{{ fediflow_pg_superuser_password }}"
    retention_full: 2
    retention_days: 14
    expire_config: /etc/pgbackrest/expire.conf   # the WAL expiry identity's keys
"""

RETURN = r"""
stanza:
  description: The stanza.
  returned: always
  type: str
type:
  description:
    - The type asked for (V(auto) - each repository's is in RV(repositories)); pgBackRest makes a diff or incr a full
      one in a repository without a full backup.
  returned: always
  type: str
repositories:
  description:
    - Per repository - C(ok), C(rc), C(duration_s), C(detail) (pgBackRest's message when it failed), C(type) and
      C(why) (the type taken there and why), C(backup) (the new label), C(verified) (the level recorded on it,
      V(list) or V(restore); null when not proven).
  returned: always
  type: dict
  sample: {us-east-1: {ok: true, rc: 0, duration_s: 12.4, detail: "", backup: 20261207-173553F_20261207-180102I}}
backups:
  description:
    - The new backups as C(pgbackrest info) describes them - C(id) (the label), C(type), C(prior), C(references),
      C(repositories), C(start_wal), C(stop_wal), C(start_lsn), C(stop_lsn), C(size), C(delta), C(repo_size),
      C(repo_delta) (bytes), C(started_at), C(finished_at) (epoch seconds), C(error).
  returned: always
  type: list
  elements: dict
copies:
  description: How many repositories hold the new backup.
  returned: when a backup was taken
  type: int
degraded:
  description: The repositories whose backup failed.
  returned: when a backup was taken
  type: list
  elements: str
required_copies:
  description: The copies the run needed.
  returned: always
  type: int
stanza_created:
  description: The repositories that had no stanza, and whether C(stanza-create) made it (C(ok), C(detail)).
  returned: when a repository had no stanza
  type: dict
verification:
  description:
    - C(level), C(ok), C(repositories) (per repository - C(ok), C(method), C(detail)) and, for V(restore),
      C(restore) - C(ok), C(backup), C(repository), C(recovery_s), C(tables) (C(table), C(source), C(restored),
      C(allowed_delta), C(ok)), C(tables_compared), C(where) (C(host), C(port), C(data_dir), C(removed)), C(detail).
  returned: when O(verify) is not V(none) and a backup was taken
  type: dict
expired:
  description:
    - Per repository - C(keep_full) (the count C(expire) ran with; null - nothing to expire), C(expire) (the planned
      C({id, reason})), C(expired) (the labels C(info) no longer shows afterwards), C(ok), C(detail).
  returned: when O(retention_full) or O(retention_days) is set and the backup has its copies
  type: dict
would_expire:
  description: In check mode, what retention would expire of the backups there now (as RV(expired) plans it).
  returned: in check mode
  type: dict
unreachable:
  description: In check mode, the repositories whose endpoint took no connection (name to why).
  returned: in check mode
  type: dict
phases:
  description: Seconds per phase (C(stanza_create), C(backup_<repository>), C(verify), C(annotate), C(expire)).
  returned: when a backup was taken
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest_run
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    module = AnsibleModule(argument_spec=pgbackrest_run.BACKUP_SPEC, supports_check_mode=True)
    run_module(module, pgbackrest_run.backup, module.params, module.check_mode)


if __name__ == "__main__":
    main()
