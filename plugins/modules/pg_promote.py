#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_promote
short_description: Promote a PostgreSQL streaming standby, guarded against split-brain and replay lag
version_added: 0.2.0
description:
  - Promotes the standby the connection options point at (C(pg_promote())), then polls with
    one deadline (O(timeout)) until it has left recovery and a transaction can take a
    transaction id (in a transaction that is rolled back, so nothing is written).
  - "Split-brain guard: before promoting, the old primary (O(old_primary_host) /
    O(old_primary_port), else the upstream the standby streams from in C(pg_stat_wal_receiver),
    else the host in its C(primary_conninfo)) is asked whether it accepts writes. Reachable and
    not in recovery means it does (C(default_transaction_read_only) is no fence: any session lifts
    it): the module refuses. B(Unreachable is not down): an old primary that cannot be reached
    (connection refused, no route, unknown host, no answer in time) may be alive behind a partition
    and taking writes, so it only counts as safe with a fence that succeeded (O(old_primary_fenced_by):
    what fenced it, for example an inventory fence method of the region_failover role, and what that
    proved) or the operator's assertion that it is down (O(old_primary_confirmed_down)), both recorded
    in the result; without either the module refuses and names both ways forward. A server that answers
    but cannot be asked (login refused, starting up, shutting down) blocks, as does an old primary that
    cannot be located."
  - When O(old_primary_data_dir) is given, C(pg_ctl status) on this host is consulted first; a
    stopped cluster is down, whatever the network says.
  - "Lag guard: O(max_lag_bytes) bounds the WAL received but not yet replayed
    (C(pg_last_wal_receive_lsn()) - C(pg_last_wal_replay_lsn())), O(max_lag_seconds) the age of
    the last replayed transaction while something received is still unreplayed (on an idle
    primary that age grows with no lag at all, so received = replayed counts as no lag). It is
    checked before anything else is touched. Received WAL is replayed before the node opens for
    writes, so this lag costs promotion time; the data-loss window is the WAL the standby never
    received, reported as RV(lag.unreceived_bytes) when the old primary can still be asked."
  - "Fencing (O(fence_old_primary)), done before promoting when the old primary is still up:
    V(stop) runs C(pg_ctl stop -m fast) on O(old_primary_data_dir) (the old primary must be on
    the host the module runs on); a fast shutdown sends the WAL up to its shutdown checkpoint to
    connected standbys before exiting, and the module then waits until the standby has replayed past
    that checkpoint (as with O(wait_replay_lsn)). An old primary on another host is stopped there first
    (M(fediflow.dr.pg_ctl) returns its last checkpoint as C(control.checkpoint_lsn)), then
    named here with O(wait_replay_lsn) and O(old_primary_fenced_by): zero acknowledged writes lost."
  - O(force=true) lets failed guards pass; they are still evaluated and listed in
    RV(overridden).
  - A node that is not in recovery is already promoted; nothing is done (C(changed=false)).
    Check mode reads both servers, evaluates the guards and reports what would be done, touching
    nothing; a guard that would refuse fails in check mode too.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.postgres
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  old_primary_host:
    description:
      - Host (or Unix socket directory) of the old primary, for the split-brain guard.
      - Defaults to the upstream the standby streams from (C(pg_stat_wal_receiver.sender_host)),
        else the host of its C(primary_conninfo).
    type: str
  old_primary_port:
    description:
      - Port of the old primary. Defaults to the port found with the host, else 5432.
    type: int
  old_primary_login_user:
    description:
      - Role to log in to the old primary as. Defaults to O(login_user) (a physical standby
        has the primary's roles).
    type: str
  old_primary_login_password:
    description:
      - Password of O(old_primary_login_user). Defaults to O(login_password).
    type: str
  old_primary_data_dir:
    description:
      - Data directory of the old primary when it runs on the host this module runs on. Its
        C(pg_ctl status) is consulted by the split-brain guard; O(fence_old_primary=stop) needs it.
    type: path
  old_primary_cluster:
    description:
      - The old primary's Debian packaged cluster (C(VERSION/NAME), as C(pg_lsclusters) names it) - the
        O(fence_old_primary=stop) fence runs C(pg_ctlcluster) (see M(fediflow.dr.pg_ctl)). Unset - C(pg_ctl -D).
    type: str
  old_primary_os_user:
    description: OS user owning the old primary's cluster, to run C(pg_ctl) as.
    type: str
    default: postgres
  old_primary_bin_dir:
    description:
      - Directory holding C(pg_ctl) for the old primary. By default C(pg_config --bindir), else the
        newest C(/usr/lib/postgresql/*/bin) or C(/usr/pgsql-*/bin).
    type: path
  fence_old_primary:
    description:
      - Fence the old primary before promoting when it is still up (see the description).
    type: str
    choices: [ none, stop ]
    default: none
  old_primary_fenced_by:
    description:
      - "What fenced the old primary before this run and what that proved, in one sentence (for example
        C(lab: no postmaster left in the region's namespace) or C(aws_ec2: instance i-0abc stopped))."
      - With it, an old primary that cannot be reached counts as down; it is recorded in
        C(guards.split_brain.fenced_by). An old primary that still answers blocks all the same (the fence did
        not hold).
    type: str
  old_primary_confirmed_down:
    description:
      - The operator's assertion that the old primary is down (its host is off, its region is lost). With it, an
        old primary that cannot be reached counts as down; recorded in C(guards.split_brain.confirmed_down).
      - Only for the person who knows; a partition looks exactly like an outage from here.
    type: bool
    default: false
  wait_replay_lsn:
    description:
      - Before promoting, wait (within O(timeout)) until the standby has replayed past this LSN - the
        stopped old primary's last (shutdown) checkpoint in a planned switchover; refused (guard C(catch_up))
        when it does not get there, since promoting would lose what the old primary acknowledged.
    type: str
  max_lag_bytes:
    description:
      - Refuse when more than this many bytes of received WAL are not replayed yet. No bound when omitted.
    type: int
  max_lag_seconds:
    description:
      - Refuse when replay is more than this many seconds behind (only counted while received WAL is
        unreplayed). No bound when omitted.
    type: float
  force:
    description:
      - Promote even when a guard fails. The guards are still evaluated and reported in RV(overridden).
    type: bool
    default: false
  timeout:
    description:
      - Seconds for the whole run after the first connection - fencing, catch-up and promotion -
        until the node accepts writes.
    type: int
    default: 60
  lag_check_only:
    description:
      - Only inspect the standby and apply the lag guard (O(max_lag_bytes), O(max_lag_seconds)), then return -
        nothing is probed, fenced or promoted (C(changed=false)). A planned switchover asks this before it stops the
        old primary, so that a standby too far behind never leaves production with no primary.
    type: bool
    default: false
  wait_writable:
    description:
      - Wait until the promoted node accepts writes. With V(false) the module returns right after
        requesting the promotion; RV(in_recovery) and RV(timeline) may still show the standby.
    type: bool
    default: true
notes:
  - Connection options (O(login_host) ...) point at the standby to promote.
  - In a cascade, the upstream the standby streams from is itself a standby (state C(in_recovery), which
    does not block); point O(old_primary_host) at the real primary so that the guard asks it.
  - The old primary is probed with O(connect_timeout); a host that silently drops packets costs that long.
seealso:
  - module: fediflow.dr.pg_ctl
  - name: pg_promote()
    description: PostgreSQL's recovery control functions.
    link: https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-RECOVERY-CONTROL
"""

EXAMPLES = r"""
- name: Promote the eu-west-1 standby once the primary region is gone
  fediflow.dr.pg_promote:
    login_host: db.eu-west-1.internal
    login_password: "{{ vault_pg_superuser_password }}"
    old_primary_host: db.us-east-1.internal
    max_lag_seconds: 60

- name: Planned switchover on one host - stop the old primary first, then promote
  fediflow.dr.pg_promote:
    login_host: 127.0.0.1
    login_port: 15433
    login_password: "{{ fediflow_pg_superuser_password }}"
    old_primary_host: 127.0.0.1
    old_primary_port: 15432
    old_primary_data_dir: /var/tmp/fediflow-lab/us-east-1/pgdata
    fence_old_primary: stop
  register: promotion

- name: Planned switchover across hosts - the old primary was stopped on its host first (fediflow.dr.pg_ctl)
  fediflow.dr.pg_promote:
    login_host: db.eu-west-1.internal
    login_password: "{{ vault_pg_superuser_password }}"
    old_primary_host: db.us-east-1.internal
    old_primary_fenced_by: "stopped on its host (pg_ctl stop -m fast, cluster state shut down)"
    wait_replay_lsn: "{{ old_primary_stop.control.checkpoint_lsn }}"

- name: The old primary's region is lost (the operator knows) - promote without a fence (recorded)
  fediflow.dr.pg_promote:
    login_host: db.eu-west-1.internal
    login_password: "{{ vault_pg_superuser_password }}"
    old_primary_host: db.us-east-1.internal
    old_primary_confirmed_down: true
"""

RETURN = r"""
promoted:
  description: Whether the node was promoted in this run (would be, in check mode).
  returned: always
  type: bool
in_recovery:
  description: C(pg_is_in_recovery()) after the run (before it, in check mode).
  returned: always
  type: bool
timeline:
  description:
    - Timeline after the run, from the current WAL file name (right after a promotion
      C(pg_control_checkpoint()) still shows the old one until the next checkpoint).
  returned: always
  type: int
  sample: 2
timeline_before:
  description: Timeline before the run.
  returned: always
  type: int
  sample: 1
promote_lsn:
  description: Where the new timeline branches off (the last WAL record replayed before promotion).
  returned: when promoted
  type: str
  sample: 0/30B2B20
time_to_writable_s:
  description: Seconds from requesting the promotion to the first transaction id taken.
  returned: when promoted and O(wait_writable)
  type: float
  sample: 0.08
lag:
  description: Replication lag of the standby at promotion (measured before the guards, refreshed just before promoting).
  returned: when the node was in recovery
  type: dict
  contains:
    bytes:
      description: WAL received but not replayed (replayed before the node opens for writes). Null when not streaming.
      type: int
    seconds:
      description: Replay delay, 0 when everything received is replayed. Null when it cannot be measured.
      type: float
    caught_up:
      description: Received = replayed.
      type: bool
    receive_lsn:
      description: C(pg_last_wal_receive_lsn()).
      type: str
    replay_lsn:
      description: C(pg_last_wal_replay_lsn()).
      type: str
    replay_paused:
      description: Whether replay was paused (C(pg_wal_replay_pause())); promotion ends the pause.
      type: bool
    unreceived_bytes:
      description:
        - WAL the old primary had flushed that the standby did not hold (neither received nor
          replayed from its own C(pg_wal) or the archive) - the data-loss window.
          Null when the old primary could not be asked (it is then unknown).
      type: int
guards:
  description: The guards' verdicts, each with C(ok), C(status) and a C(detail) sentence.
  returned: when the node was in recovery
  type: dict
  contains:
    lag:
      description: >-
        C(status) is C(not_requested), C(within_bounds) or C(exceeded); also C(bytes), C(seconds), C(max_bytes),
        C(max_seconds).
      type: dict
    split_brain:
      description: >-
        C(status) of the old primary (C(writable), C(read_only), C(in_recovery), C(stopped), C(unreachable),
        C(no_answer), C(unknown), C(not_checked)), C(target) (host:port), C(source) (options, pg_stat_wal_receiver,
        primary_conninfo), C(pg_ctl_state) when O(old_primary_data_dir) is given, C(error) when it did not answer,
        C(fenced_by) / C(confirmed_down) when given.
      type: dict
    catch_up:
      description: >-
        With O(wait_replay_lsn) or a V(stop) fence - C(status) C(replayed) or C(behind), C(wait_replay_lsn),
        C(replay_lsn), C(waited_s).
      type: dict
  sample:
    split_brain: {ok: true, status: unreachable, target: "127.0.0.1:15432", source: options, fenced_by: "lab: ...",
                  detail: "the old primary at 127.0.0.1:15432 cannot be reached (Connection refused); fenced: lab: ..."}
forced:
  description: The value of O(force).
  returned: always
  type: bool
overridden:
  description: Guards that failed and were let through by O(force).
  returned: always
  type: list
  elements: str
  sample: [split_brain]
fence:
  description: >-
    What O(fence_old_primary) did - C(mode), C(changed), and for V(stop) the C(pg_ctl) commands, the
    C(cluster_state) after the stop and its shutdown C(checkpoint_lsn).
  returned: always
  type: dict
wal_receiver:
  description:
    - The standby's C(pg_stat_wal_receiver) row before promotion - C(status), C(sender_host), C(sender_port),
      C(received_tli), C(last_msg_age_s) - or null when no WAL receiver runs.
    - When the old primary does not answer but this still shows C(streaming), the module warns - the old primary
      may only be unreachable from the host the module runs on.
  returned: when the node was in recovery
  type: dict
default_transaction_read_only:
  description: Whether the promoted node defaults to read-only transactions (a warning is given when it does).
  returned: when the node is not in recovery after the run
  type: bool
actions:
  description: What was done (or would be done, in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["fence: pg_ctl stop -m fast -D /srv/pg (stopped)", "SELECT pg_promote(wait => false)"]
msg:
  description: One line saying what was done and why (the guard outcomes).
  returned: always
  type: str
phases:
  description: Seconds spent per phase (inspect, old_primary, fence, catch_up, promote).
  returned: when promoted
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils import promote
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module
from ansible_collections.fediflow.dr.plugins.module_utils.postgres import postgres_common_argument_spec


def main():
    spec = postgres_common_argument_spec()
    spec.update(
        old_primary_host={"type": "str"},
        old_primary_port={"type": "int"},
        old_primary_login_user={"type": "str"},
        old_primary_login_password={"type": "str", "no_log": True},
        old_primary_data_dir={"type": "path"},
        old_primary_cluster={"type": "str"},
        old_primary_os_user={"type": "str", "default": "postgres"},
        old_primary_bin_dir={"type": "path"},
        fence_old_primary={"type": "str", "default": "none", "choices": list(promote.FENCE_MODES)},
        old_primary_fenced_by={"type": "str"},
        old_primary_confirmed_down={"type": "bool", "default": False},
        wait_replay_lsn={"type": "str"},
        max_lag_bytes={"type": "int"},
        max_lag_seconds={"type": "float"},
        force={"type": "bool", "default": False},
        timeout={"type": "int", "default": 60},
        wait_writable={"type": "bool", "default": True},
        lag_check_only={"type": "bool", "default": False},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    run_module(module, promote.ensure, dict(module.params), check_mode=module.check_mode, warn=module.warn)


if __name__ == "__main__":
    main()
