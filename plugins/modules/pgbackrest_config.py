#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pgbackrest_config
short_description: Write a pgBackRest configuration file with one S3 repository per entry of the repository list
version_added: 0.4.0
description:
  - Writes the configuration file of one pgBackRest stanza (one PostgreSQL cluster) whose repositories are the
    inventory's repository list - one S3 bucket per region, as the native engine writes to - so that
    C(archive-push) sends every WAL segment to every region and a backup can be taken into each.
  - The file holds the S3 secret of one identity; it is written atomically, mode C(0600), owned by O(owner)
    (pgBackRest runs as the database's OS user). No secret ever goes to argv, C(archive_command) or the
    environment. Keep one file per identity (docs/storage-security.md) - the WAL identity's for
    C(archive_command), the backup identity's for the backup jobs - both naming the same repositories.
  - Each repository keeps every full backup as far as pgBackRest's own automatic expiry is concerned
    (C(repoN-retention-full=9999999)) - retention is M(fediflow.dr.pgbackrest_backup)'s, run once a new backup is
    proven, so an expiry at the end of C(backup) can never remove the newest verified backup before the new one
    has passed its check.
  - Every option is checked before anything is written; a bad one is refused naming it. pgBackRest speaks only
    HTTPS to S3, so an C(http://) endpoint is refused.
  - The spool, log and lock directories are made (mode C(0750), owned by O(owner)) when missing.
  - The returned C(archive_command) and C(restore_command) use the file by path, with asynchronous archiving
    (C(archive-async)) and its spool when O(archive_async) is on.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  path:
    description: The configuration file (its directory is made, C(0750), when missing).
    type: path
    required: true
  owner:
    description: The OS user pgBackRest runs as (the cluster's owner); it owns the file and the directories.
    type: str
    default: postgres
  stanza:
    description: The stanza (pgBackRest's name for a cluster and its backups); letters, digits, C(_) or C(-).
    type: str
    required: true
  pg:
    description: The cluster of the stanza.
    type: dict
    required: true
    suboptions:
      data_dir:
        description: Its data directory (C(pg1-path)).
        type: path
        required: true
      port:
        description: Its port (C(pg1-port)).
        type: int
      socket_dir:
        description: Its Unix socket directory (C(pg1-socket-path)).
        type: path
      user:
        description: The database user pgBackRest connects as (C(pg1-user)); unset - the OS user's name.
        type: str
  repositories:
    description:
      - The repositories, in order (pgBackRest's C(repo1), C(repo2), ...; at most 4). Each one's C(endpoint_url)
        must be C(https://); unset - the regional AWS endpoint of its C(region), which is required.
      - Inside its bucket each repository lives under C(<prefix>/pgbackrest).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The repository's name (the inventory's; reported with each backup).
        type: str
        required: true
      bucket:
        description: Its S3 bucket.
        type: str
        required: true
      prefix:
        description: Key prefix inside the bucket.
        type: str
        default: ''
      region:
        description: The bucket's region.
        type: str
      endpoint_url:
        description: An S3 endpoint URL (C(https://host[:port])) other than AWS's regional one.
        type: str
  access_key:
    description: The identity's access key. Unset - the instance's role (C(s3-key-type=auto)).
    type: str
  secret_key:
    description: The identity's secret key.
    type: str
  ca_file:
    description: CA bundle the repositories' TLS certificates are verified against (C(repoN-storage-ca-file)).
    type: path
  archive_async:
    description: Asynchronous C(archive-push) / C(archive-get) with a spool (O(spool_path)).
    type: bool
    default: true
  spool_path:
    description: The asynchronous archiving spool.
    type: path
    default: /var/spool/pgbackrest
  log_path:
    description: pgBackRest's log directory.
    type: path
    default: /var/log/pgbackrest
  lock_path:
    description: pgBackRest's lock directory.
    type: path
    default: /tmp/pgbackrest
  process_max:
    description: Parallel processes for backup, restore and asynchronous archiving.
    type: int
    default: 2
  compress_type:
    description: Compression of backups and WAL.
    type: str
    choices: [none, gz, lz4, zst, bz2]
    default: lz4
  compress_level:
    description: Compression level (pgBackRest's default for the type when unset).
    type: int
  cipher_pass:
    description: Encrypt each repository with C(aes-256-cbc) and this passphrase (C(repoN-cipher-pass)).
    type: str
  archive_push_queue_max:
    description: Size (e.g. V(4GiB)) at which asynchronous C(archive-push) drops WAL rather than fill the disk. Unset - never.
    type: str
  archive_get_timeout:
    description:
      - With O(archive_async), how long C(restore_command) (C(archive-get)) waits for the asynchronous fetch before it
        answers "not yet" and PostgreSQL tries again (C(archive-timeout) of C([global:archive-get])). Short, so a
        standby's promotion never waits out a fetch from a repository that does not answer (pgBackRest's own
        default, 60 s, held one a whole minute when a region was lost).
    type: int
    default: 5
"""

EXAMPLES = r"""
- name: pgBackRest for the primary, WAL identity (archive_command)
  fediflow.dr.pgbackrest_config:
    path: /etc/pgbackrest/wal.conf
    stanza: fediflow
    pg: {data_dir: /var/lib/postgresql/15/main, port: 5432}
    repositories:
      - {name: us-east-1, bucket: fediflow-backups-us-east-1, region: us-east-1}
      - {name: eu-west-1, bucket: fediflow-backups-eu-west-1, region: eu-west-1}
    access_key: "{{ fediflow_s3_wal_access_key }}"
    secret_key: "{{ fediflow_s3_wal_secret_key }}"
  register: pgbackrest_wal
"""

RETURN = r"""
path:
  description: The configuration file.
  returned: always
  type: str
stanza:
  description: The stanza.
  returned: always
  type: str
repositories:
  description: The repositories as pgBackRest numbers them.
  returned: always
  type: list
  elements: dict
  sample: [{key: 1, name: us-east-1, bucket: fediflow-backups-us-east-1, path: /pgbackrest}]
archive_command:
  description: The C(archive_command) that pushes WAL with this file (no secret in it).
  returned: always
  type: str
  sample: /usr/bin/pgbackrest --config=/etc/pgbackrest/wal.conf --stanza=fediflow archive-push %p
restore_command:
  description: The C(restore_command) that fetches WAL with this file.
  returned: always
  type: str
directories:
  description: The spool, log and lock directories made (or that would be made in check mode).
  returned: always
  type: list
  elements: str
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fediflow.dr.plugins.module_utils import pgbackrest_run
from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module


def main():
    module = AnsibleModule(argument_spec=pgbackrest_run.CONFIG_SPEC, supports_check_mode=True)
    run_module(module, pgbackrest_run.configure, module.params, module.check_mode)


if __name__ == "__main__":
    main()
