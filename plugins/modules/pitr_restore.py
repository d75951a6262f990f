#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pitr_restore
short_description: Point-in-time restore of a PostgreSQL cluster from the backup ledger and the WAL archive
version_added: 0.3.0
description:
  - "Preflight, before anything is stopped or written: exactly one target (O(target_time) with a
    time zone, O(target_lsn), O(target_xid), O(target_name) or O(target_latest)); the WAL archive
    (the collection's own backend, read through O(wal_config)) listed with its timeline history
    files; the recovery timeline chosen (O(timeline)), refusing a target that could be on either
    side of a fork; the newest B(verified) physical base backup of the ledger (O(backup_dest)
    and/or every repository of O(repositories) that answers, or O(s3_bucket)) that ends before the target and lies on that timeline's history; a
    target before the oldest verified backup's end, after the newest archived WAL, or behind a
    gap in the archive refused, naming the backup or segment."
  - "Restore: the base backup goes into a B(new) data directory beside O(data_dir)
    (C(DATA_DIR.pitr-TIMESTAMP)), with the running cluster's configuration files
    (O(keep_config)), C(recovery.signal) and C(recovery_target_*), C(recovery_target_timeline),
    C(recovery_target_inclusive), C(restore_command) (C(fediflow_wal.py fetch)) and
    C(recovery_target_action=pause) in C(postgresql.auto.conf). It starts on O(restore_port)
    and is polled (C(pg_get_wal_replay_pause_state())) until it is paused at the target,
    read-only; a server that stops (for instance C(recovery ended before configured recovery
    target was reached)) fails the run with the line from its log. O(target_latest) replays the
    whole archive as a standby (C(standby.signal)) instead, until it reaches the last archived
    segment. With O(switch), once the old cluster is stopped, the WAL in its C(pg_wal) that the
    archive does not hold yet (the segment it was writing, up to C(archive_timeout) of commits,
    and any segment not archived yet) is copied into the restore's C(pg_wal) and replayed up to
    the old cluster's last checkpoint before promotion (only when the old cluster is on the
    timeline restored; recycled segments are recognized by their page address and left out)."
  - "Verification, still beside the running cluster: every table of O(db) counted, C(amcheck)'s
    C(bt_index_check) on the largest B-tree indexes when the extension is installed, and
    O(sentinel_query) (its first column must be true). A failure removes the new directory
    (O(keep_failed) keeps it) and leaves the old cluster running, untouched."
  - "Switch (O(switch=true)): the old cluster is stopped (fast) and its data directory renamed
    C(DATA_DIR.pre-pitr-TIMESTAMP) - never deleted; the restore takes its place and starts on
    the cluster's own port; it replays to the target again and pauses; with O(action=promote)
    it is resumed, which ends recovery on a new timeline, and the recovery settings are removed.
    If the restored cluster does not come up there, the rename is undone and the old cluster
    started again. O(switch=false) leaves the restore running on O(restore_port) with archiving
    off, the old cluster untouched (drills, inspection)."
  - "A standby is refused before anything is read or touched when O(switch=true): a data directory with
    C(standby.signal) (running, or stopped - a failover fences an old primary so) or a running server in recovery
    that is no paused restore. Restored in place it would be a second primary on a forked history; run the
    restore on the primary, or beside the standby with O(switch=false)."
  - "Standbys of the cluster stay on the old history when it is restored in place: a later failover could
    promote what the restore undid. C(left_behind) names every one - the WAL receivers that streamed from the
    cluster before (C(pg_stat_replication)) and the hosts given in O(standbys) - with how to re-seed it (pg_rewind
    onto the restored cluster, else a fresh clone); the role M(fediflow.dr.pitr_restore) re-seeds them (the
    replication role's rejoin) or stops and fences them."
  - A second run with the same target finds the marker C(fediflow_pitr.json) the switch wrote in O(data_dir) and
    changes nothing (the writes made since are not rolled back again); O(force=true) restores again.
  - "O(engine=pgbackrest): the same contract on pgBackRest's repositories (see O(pgbackrest)). The ledger is
    C(pgbackrest info) - every backup of every repository that answers, verified when its C(fediflow-verified)
    annotation says so (M(fediflow.dr.pgbackrest_backup) writes it after its verification); a repository info cannot
    read is reported (C(repositories_down), a warning), its backups unknown, never taken for none. The WAL archive is
    the repositories' C(archive/STANZA/ARCHIVE_ID) (C(pgbackrest repo-ls), the timeline history files by
    C(pgbackrest repo-get)): the timeline, the base backup (the newest verified ending before the target, on the
    target timeline's history) and the archive's bounds and gaps are checked as for the native engine, before
    anything stops. The base backup goes into the new data directory by C(pgbackrest restore --set=LABEL --repo=KEY
    --pg1-path=NEW --type=time|lsn|xid|name|default --target=... --target-timeline=...) from the first repository
    holding it (the configuration's order), the next one when that fails; pgBackRest's own recovery settings are
    taken out of C(postgresql.auto.conf) and the module's block written instead, whose C(restore_command) is
    C(pgbackrest archive-get) with O(pgbackrest.archive_config), every repository, C(--pg1-path) of the directory the
    cluster runs in and synchronous fetching (see the notes). Recovery, checks, switch, old directory kept and marker
    are the native engine's."
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.postgres
  - fediflow.dr.aws
  - fediflow.dr.repositories
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  data_dir:
    description: Data directory of the cluster to restore (it may be missing after a disaster).
    type: path
    required: true
  target_time:
    description:
      - Recover up to this time, ISO 8601 with a time zone (C(2026-11-25T14:03:00Z), C(+02:00)).
        A bare local time is refused.
    type: str
  target_lsn:
    description: Recover up to this WAL location (C(0/3000148)).
    type: str
  target_xid:
    description: Recover up to this transaction id. When the running cluster answers, an aborted or unfinished one is refused.
    type: str
  target_name:
    description: Recover up to this restore point (C(pg_create_restore_point())).
    type: str
  target_latest:
    description: Recover everything the archive holds.
    type: bool
    default: false
  inclusive:
    description: Stop just after (V(true)) or just before (V(false)) the target; for O(target_time), O(target_lsn), O(target_xid).
    type: bool
    default: true
  action:
    description: After the target is reached and verified, open the cluster for writes (V(promote)) or leave it paused, read-only (V(pause)).
    type: str
    choices: [ promote, pause ]
    default: promote
  timeline:
    description:
      - V(auto) follows the newest timeline unless the archive forks with WAL on both sides and the target may be
        on either (refused); V(latest) always follows the newest; a number follows that timeline.
    type: str
    default: auto
  backup_dest:
    description: Local ledger directory of physical backups (O(fediflow.dr.pg_backup_verify#module:dest) of mode=physical).
    type: path
  s3_bucket:
    description:
      - Bucket of the S3 ledger (also searched when O(backup_dest) is given; local copies are preferred); the
        one-repository shorthand of O(repositories).
    type: str
  s3_prefix:
    description: Key prefix of the S3 ledger of physical backups (after each repository's own prefix).
    type: str
    default: ""
  backup_id:
    description: Restore this backup instead of choosing one. It must be verified and end before the target.
    type: str
  backup_cluster:
    description: Only consider backups whose ledger manifest names this cluster (C(cluster_name) of pg_backup_verify).
    type: str
  engine:
    description:
      - The backup and WAL engine whose backups and archive the restore reads - V(native) (the collection's ledger,
        O(backup_dest) / O(repositories) / O(s3_bucket), and C(fediflow_wal.py)'s archive, O(wal_config)) or
        V(pgbackrest) (pgBackRest's repositories, O(pgbackrest)).
      - With V(pgbackrest), O(backup_dest), O(s3_bucket), O(repositories), O(backup_cluster), O(wal_config) and
        O(wal_tool) are refused (they name the native engine's ledger and archive).
    type: str
    choices: [ native, pgbackrest ]
    default: native
  pgbackrest:
    description:
      - The pgBackRest stanza to restore from, for O(engine=pgbackrest) (refused with the native engine). The files
        are the ones M(fediflow.dr.pgbackrest_config) writes; pgBackRest runs as O(os_user).
    type: dict
    suboptions:
      config:
        description:
          - The configuration file of the backup identity (C(info), C(repo-ls), C(repo-get) and C(restore) read the
            repositories with it).
        type: path
        required: true
      archive_config:
        description:
          - The configuration file the restored cluster's C(restore_command) names while it recovers - the WAL
            identity's, the one C(archive_command) uses. Default O(pgbackrest.config).
        type: path
      stanza:
        description: The stanza (the cluster's name in pgBackRest).
        type: str
        required: true
      repositories:
        description:
          - The inventory's name of each repository of the configuration, in its order (C(repo1), C(repo2), ...; at
            most 4) - the host's own region first, as the repository list has it. A backup is restored from the
            first one holding it; results and warnings name repositories so.
        type: list
        elements: str
        required: true
      binary:
        description: The C(pgbackrest) program. Default the one on C(PATH), else C(/usr/bin/pgbackrest).
        type: path
  wal_config:
    description:
      - The JSON configuration of C(fediflow_wal.py) (the replication role's C(replication_wal_config_file)).
      - Required with O(engine=native).
    type: path
  wal_tool:
    description:
      - Path of C(fediflow_wal.py) on this host (the replication role installs it in C(replication_tools_dir)).
      - Required with O(engine=native).
    type: path
  wal_python:
    description: Python that runs O(wal_tool) in C(restore_command).
    type: path
    default: /usr/bin/python3
  wal_segment_size:
    description: WAL segment size of the cluster in bytes.
    type: int
    default: 16777216
  restore_port:
    description: Port of the restored cluster while it is verified (and afterwards with O(switch=false)). Default a free port.
    type: int
  switch:
    description: Replace O(data_dir) with the verified restore (see the description), or leave it beside it.
    type: bool
    default: true
  keep_config:
    description:
      - Copy the running cluster's configuration into the restore - C(postgresql.conf), C(pg_hba.conf),
        C(pg_ident.conf) and C(postgresql.auto.conf); from a separate O(config_dir), every C(*.conf) file there and
        C(conf.d), with C(data_directory), C(hba_file), C(ident_file) and C(external_pid_file) commented out in the copy
        of C(postgresql.conf) (the restore beside the cluster must not use the cluster's files).
      - A restore that has no configuration after that (a base backup of a Debian cluster, nothing to copy) gets an
        empty C(postgresql.conf) and a C(pg_hba.conf) for the socket, loopback and O(login_host) (C(config_written)).
    type: bool
    default: true
  config_dir:
    description:
      - Where the cluster's C(postgresql.conf), C(pg_hba.conf) and C(pg_ident.conf) live - Debian's packaged layout
        keeps them in C(/etc/postgresql/VERSION/NAME). Default O(data_dir) (C(initdb)'s layout).
    type: path
  cluster:
    description:
      - The Debian packaged cluster in O(data_dir) (C(VERSION/NAME), as C(pg_lsclusters) names it). The old cluster
        is stopped and the switched-in restore started with C(pg_ctlcluster) (see M(fediflow.dr.pg_ctl)), reading
        O(config_dir); the copies made for the side start are removed from the data directory at the switch.
    type: str
  standbys:
    description:
      - The cluster's other database hosts as the caller knows them (the role passes the inventory's), returned in
        C(left_behind) after an in-place restore beside the WAL receivers C(pg_stat_replication) showed; one that
        streamed is matched by its slot (the application name it streams with) or its address.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The host's name (the inventory's).
        type: str
        required: true
      host:
        description: Its PostgreSQL address.
        type: str
      port:
        description: Its PostgreSQL port.
        type: int
      slot:
        description: The replication slot (and application name) it streams with.
        type: str
      data_dir:
        description: Its data directory (for the re-seed instructions).
        type: str
      state:
        description: What the caller saw before the restore (C(standby), C(stopped standby), C(down), C(unreachable)).
        type: str
  sentinel_query:
    description: A query run on the restored cluster before the switch; its first column must be true.
    type: str
  amcheck:
    description: Run C(bt_index_check) on the largest B-tree indexes when the C(amcheck) extension is installed in O(db).
    type: bool
    default: true
  amcheck_max_indexes:
    description: How many indexes C(amcheck) checks, largest first.
    type: int
    default: 10
  verify_jobs:
    description: Connections that count tables and run C(amcheck) at once.
    type: int
    default: 4
  keep_failed:
    description: Keep the new data directory of a failed restore for inspection (it is stopped).
    type: bool
    default: false
  force:
    description: Restore again although O(data_dir) was already restored to this target.
    type: bool
    default: false
  os_user:
    description: OS user owning the cluster; PostgreSQL programs run as this user.
    type: str
    default: postgres
  bin_dir:
    description: Directory of C(pg_ctl). By default C(pg_config --bindir), else the newest C(/usr/lib/postgresql/*/bin).
    type: path
  log_file:
    description: Server log of the cluster after the switch. Default C(DATA_DIR.log) beside O(data_dir).
    type: path
  timeout:
    description: Seconds allowed for each wait - recovery to the target, the restart after the switch, the promotion.
    type: int
    default: 3600
notes:
  - Connection options (O(login_host), O(login_port) ...) are the cluster's own; the restored cluster is reached at
    O(login_host) and O(restore_port) while it is verified, with the roles and passwords of the base backup.
  - An O(target_xid) or O(target_name) whose position is unknown (no commit timestamp) gets the oldest usable backup.
  - O(target_latest) is the end of the WAL archive when the restore runs; WAL of a still running cluster that is not
    archived yet (its current segment) is not included. It is meant for a cluster that is gone or down.
  - "With O(engine=pgbackrest) the recovery's C(restore_command) fetches WAL synchronously (C(--no-archive-async)):
    pgBackRest 2.45's asynchronous C(archive-get) shares its lock with the running cluster's asynchronous
    C(archive-push) and can time out on a segment that exists (pgbackrest/pgbackrest#2806), which would end recovery
    before the target. Each segment costs one round trip to S3."
  - "With O(engine=pgbackrest), tablespaces are not mapped elsewhere: pgBackRest restores each to the location it
    recorded, which the running cluster's tablespace occupies (pgBackRest refuses a directory that holds files)."
  - After O(switch=true) with O(action=pause), the cluster stays in recovery at the target; C(SELECT
    pg_wal_replay_resume()) opens it (a new timeline); then remove the C(fediflow.dr pitr_restore) block from its
    C(postgresql.auto.conf) so the recovery settings cannot apply to a later standby.
seealso:
  - module: fediflow.dr.pg_backup_verify
  - module: fediflow.dr.pgbackrest_backup
  - module: fediflow.dr.pgbackrest_config
  - name: Recovery target settings
    description: PostgreSQL 15 recovery targets.
    link: https://www.postgresql.org/docs/15/runtime-config-wal.html#RUNTIME-CONFIG-WAL-RECOVERY-TARGET
"""

EXAMPLES = r"""
- name: Undo a bad migration - restore the primary to just before it, verified before the switch
  fediflow.dr.pitr_restore:
    data_dir: /var/lib/postgresql/15/main
    target_time: "2026-11-25T14:03:00+00:00"
    inclusive: false
    backup_dest: /var/backups/fediflow/physical
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: postgres/us-east-1/physical
    wal_config: /var/lib/postgresql/15/fediflow-wal.json
    wal_tool: /usr/local/lib/fediflow-dr/fediflow_wal.py
    login_password: "{{ vault_pg_superuser_password }}"
    db: fediflow
    sentinel_query: SELECT count(*) > 0 FROM accounts
  register: pitr

- name: Drill - restore to a named point beside the running cluster, paused for inspection
  fediflow.dr.pitr_restore:
    data_dir: /var/lib/postgresql/15/main
    target_name: drill-2026-11-25
    action: pause
    switch: false
    restore_port: 25432
    backup_dest: /var/backups/fediflow/physical
    wal_config: /var/lib/postgresql/15/fediflow-wal.json
    wal_tool: /usr/local/lib/fediflow-dr/fediflow_wal.py
    login_password: "{{ vault_pg_superuser_password }}"

- name: The same on the pgBackRest engine - the ledger and the WAL archive are its repositories
  fediflow.dr.pitr_restore:
    engine: pgbackrest
    pgbackrest:
      config: /etc/pgbackrest/backup.conf        # the backup identity's (pgbackrest_config)
      archive_config: /etc/pgbackrest/wal.conf   # the WAL identity's, for restore_command
      stanza: fediflow
      repositories: [us-east-1, eu-west-1]       # repo1, repo2 of those files
    data_dir: /var/lib/postgresql/15/main
    target_time: "2026-11-25T14:03:00+00:00"
    inclusive: false
    login_password: "{{ vault_pg_superuser_password }}"
    db: fediflow
"""

RETURN = r"""
target:
  description: The target as understood - C(kind), C(value) (time normalized to UTC), C(inclusive), C(action),
    C(timeline) followed and its C(lineage).
  returned: always
  type: dict
  sample: {kind: time, value: "2026-11-25 14:03:00.000000+00", inclusive: false, action: promote, timeline: 2, lineage: [1, 2]}
base_backup:
  description:
    - The base backup chosen - C(id), C(stop_time), C(start_lsn), C(stop_lsn), C(timeline), C(where) (V(local), else the
      first repository holding it), C(why), C(read_from) (the repository it was downloaded from, or with
      O(engine=pgbackrest) restored from; its label is C(id)).
  returned: always
  type: dict
repositories_down:
  description: Repositories of O(repositories) (or O(pgbackrest.repositories)) that did not answer (for example a lost
    region's), with why.
  returned: when one did not answer
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
archive:
  description:
    - The WAL the restore reads - C(first_segment), C(last_segment), C(segments_available), C(end_lsn),
      C(newest_archived_at), C(gap_at), C(backend) (V(dir), V(s3), V(pgbackrest)).
    - With O(engine=pgbackrest) also C(stanza), C(archive_id) (C(15-1)) and C(repositories).
  returned: always
  type: dict
recovery_settings:
  description: The settings written to C(postgresql.auto.conf) for recovery (C(restore_command) holds no secret - only the config path).
  returned: always
  type: dict
marker:
  description: The marker of the earlier restore (C(target), C(kind), C(base_backup), C(at), C(kept_data_dir)).
  returned: when state is already_restored
  type: dict
cluster_before:
  description: C(state) (running, stopped, absent) and C(pid) of the cluster in O(data_dir) before the run; on the
    refusal of a standby also C(standby) and C(upstream) (the C(host:port) it streamed from).
  returned: always
  type: dict
standbys_before:
  description: The WAL receivers that streamed from the cluster before the restore (C(pg_stat_replication) -
    C(application_name), C(client_addr), C(state), C(sync_state), C(replay_lsn)).
  returned: when O(switch=true) and the cluster was running
  type: list
  elements: dict
left_behind:
  description:
    - The standbys the restore in place leaves on the old history (a later failover could promote it) - C(name),
      C(address), C(slot), C(data_dir), C(in_inventory) (named in O(standbys)), C(streamed) (seen in
      C(pg_stat_replication)), C(state_before), C(replay_lsn_before), and C(howto) (the commands that re-seed it
      onto the restored cluster). In check mode, who would be.
  returned: when O(switch=true)
  type: list
  elements: dict
  sample: [{name: pg-eu-west-1, address: "198.18.9.12:24433", slot: standby_eu_west_1, streamed: true,
            in_inventory: true, state_before: streaming, replay_lsn_before: 0/5000148, howto: "on pg-eu-west-1: ..."}]
new_timeline:
  description: The timeline the restored cluster opens - after O(action=promote) the one it is on; after V(pause)
    or in check mode the one its promotion will create.
  returned: when O(switch=true)
  type: int
fork_lsn:
  description: Where the new timeline branched off the old history (its history file's switchpoint).
  returned: when promoted in place
  type: str
new_data_dir:
  description: Where the restore was built (after a switch it lives in O(data_dir)).
  returned: when changed
  type: str
kept_data_dir:
  description: The old data directory, renamed with a timestamp.
  returned: when switched
  type: str
unarchived_wal:
  description:
    - O(target_latest) with O(switch) - the old cluster's WAL not in the archive yet, replayed from its C(pg_wal).
    - C(segments) copied (empty when the archive had everything), C(source), C(old_cluster_state) and
      C(old_checkpoint_lsn) (from C(pg_controldata)), C(skipped) with the reason when the old cluster is on another timeline.
  returned: when O(target_latest) switched over an existing data directory
  type: dict
  sample: {"segments": ["000000010000000000000007"], "source": "/var/lib/postgresql/15/main.pre-pitr-20261207T064000Z/pg_wal",
           "old_cluster_state": "shut down", "old_checkpoint_lsn": "0/7000028"}
restore_port:
  description: Port of the restored cluster while it was verified.
  returned: when changed
  type: int
port:
  description: Port the restored cluster runs on at the end.
  returned: on success when changed
  type: int
switched:
  description: Whether the restore replaced O(data_dir).
  returned: always
  type: bool
state:
  description: C(promoted), C(paused) (at the target, read-only) or C(already_restored).
  returned: on success
  type: str
reached:
  description: Where recovery stopped - C(lsn) (C(pg_last_wal_replay_lsn())), C(time) (last replayed commit), C(timeline).
  returned: when recovery ran
  type: dict
wal_segments_replayed:
  description: WAL segments from the base backup's start to the reached LSN.
  returned: when recovery ran
  type: int
verification:
  description: The integrity checks - C(ok), C(row_counts) per table, C(unreadable_tables) (when a count failed),
    C(amcheck) (C(available), C(indexes)), C(sentinel).
  returned: when recovery ran
  type: dict
config_from_current:
  description: Configuration files copied from the running cluster into the restore.
  returned: when changed
  type: list
  elements: str
config_written:
  description: Configuration files the restore had none of, written (see O(keep_config)).
  returned: when changed
  type: list
  elements: str
xid_check:
  description: For O(target_xid), what the running cluster said about it (C(status), C(commit_time)) or why it could not be asked.
  returned: when O(target_xid) is given
  type: dict
time_to_writable_s:
  description: Seconds from resuming replay to the first moment the cluster accepted writes.
  returned: when promoted
  type: float
rolled_back:
  description: The switch failed and was undone (old data directory back in place and started).
  returned: on a failed switch
  type: bool
failed_data_dir:
  description: The restore's data directory kept after a failure (O(keep_failed), or a failed switch).
  returned: on failure
  type: str
log_file:
  description: Server log of the failed restore.
  returned: on failure
  type: str
commands:
  description: The C(pg_ctl) commands run (argv, rc, duration_s), and with O(engine=pgbackrest) the C(pgbackrest restore).
  returned: always
  type: list
  elements: dict
msg:
  description: One line saying what was done.
  returned: always
  type: str
phases:
  description: Seconds per phase (preflight, download, extract or with O(engine=pgbackrest) restore, recovery, verify,
    switch or open).
  returned: always
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import pitr_pgbackrest, pitr_run, repos
from ansible_collections.fediflow.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module
from ansible_collections.fediflow.dr.plugins.module_utils.postgres import postgres_common_argument_spec


def main():
    spec = postgres_common_argument_spec()
    spec.update(aws_common_argument_spec())
    spec.update(repos.argument_spec(write=False))
    spec.update(
        data_dir={"type": "path", "required": True},
        target_time={"type": "str"},
        target_lsn={"type": "str"},
        target_xid={"type": "str"},
        target_name={"type": "str"},
        target_latest={"type": "bool", "default": False},
        inclusive={"type": "bool", "default": True},
        action={"type": "str", "default": "promote", "choices": ["promote", "pause"]},
        timeline={"type": "str", "default": "auto"},
        backup_dest={"type": "path"},
        s3_bucket={"type": "str"},
        s3_prefix={"type": "str", "default": ""},
        backup_id={"type": "str"},
        backup_cluster={"type": "str"},
        engine={"type": "str", "default": "native", "choices": list(pitr_pgbackrest.ENGINES)},
        pgbackrest={"type": "dict", "options": pitr_pgbackrest.SPEC},
        wal_config={"type": "path"},
        wal_tool={"type": "path"},
        wal_python={"type": "path", "default": "/usr/bin/python3"},
        wal_segment_size={"type": "int", "default": 16777216},
        restore_port={"type": "int"},
        switch={"type": "bool", "default": True},
        keep_config={"type": "bool", "default": True},
        config_dir={"type": "path"},
        cluster={"type": "str"},
        standbys={"type": "list", "elements": "dict", "default": [], "options": {
            "name": {"type": "str", "required": True}, "host": {"type": "str"}, "port": {"type": "int"},
            "slot": {"type": "str"}, "data_dir": {"type": "str"}, "state": {"type": "str"}}},
        sentinel_query={"type": "str"},
        amcheck={"type": "bool", "default": True},
        amcheck_max_indexes={"type": "int", "default": 10},
        verify_jobs={"type": "int", "default": 4},
        keep_failed={"type": "bool", "default": False},
        force={"type": "bool", "default": False},
        os_user={"type": "str", "default": "postgres"},
        bin_dir={"type": "path"},
        log_file={"type": "path"},
        timeout={"type": "int", "default": 3600},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[["repositories", "s3_bucket"]])
    run_module(module, pitr_run.ensure, dict(module.params), check_mode=module.check_mode, warn=module.warn)


if __name__ == "__main__":
    main()
