#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_export
short_description: Export Kubernetes objects and configuration files for backup, secrets encrypted
version_added: 0.2.0
description:
  - V(exported) writes the configuration of a platform into a staging directory O(dest) (mode
    C(0700)) that M(fediflow.dr.s3_snapshot) then ships to S3, replacing the runbook's tarball of
    C(kubectl get all), configmaps, secrets in clear, terraform state and C(/etc) directories.
  - Kubernetes objects of O(kinds) in O(namespaces) are listed through the official C(kubernetes)
    client and written as C(k8s/<namespace>/<kind>/<name>.yaml), YAML with sorted keys, without
    C(status) and the fields the server sets (C(metadata.managedFields), C(resourceVersion),
    C(uid), C(selfLink), C(generation), C(creationTimestamp)), so an unchanged object gives the
    same bytes and can be re-applied.
  - Files and directory trees of O(paths) are copied to C(files/<absolute path>) keeping their mode.
  - B(Secrets are encrypted inside the module process and never written in clear). Every
    Secret object, and every file matching O(secret_paths) (terraform state holds secrets), is
    written as C(<path>.enc), a file in the standard B(age) format (C(age-encryption.org/v1), written
    with the C(pyrage) library) encrypted to every age X25519 recipient of O(encrypt_to). The host
    running the backup holds only public keys and cannot decrypt its own backups; only a holder of
    a private key can, with O(state=decrypted) or, without this collection, with the C(age) CLI
    (C(age -d -i key.txt -o db.yaml db.yaml.enc)).
  - Exports written before 0.3.0 used a format of this collection's own (magic C(FFDRENC)). Such
    files are still read (O(state=decrypted) with O(legacy_private_key)) so existing backups can be
    restored; nothing is written in it any more. The first export after the upgrade re-encrypts
    every secret of O(dest) to age.
  - Only files whose content changed are rewritten, so an unchanged configuration leaves O(dest)
    untouched and the snapshot after it writes nothing. Ciphertext changes on every encryption, so
    a secret is re-encrypted only when its plaintext changed (or O(encrypt_to) changed), told by a
    keyed fingerprint (HMAC-SHA256 with a key derived from O(encrypt_to)) kept in C(.fingerprints/)
    beside the export. Keep C(.fingerprints/) out of S3 (O(fediflow.dr.s3_snapshot#module:exclude)), since with the
    public key it allows guessing a secret's value.
  - Objects and files that are no longer there are removed from O(dest); nothing outside
    C(k8s/), C(files/), C(index.json) and C(.fingerprints/) is touched.
  - V(decrypted) decrypts one C(.enc) file, or every C(.enc) file under O(src) (an export or a
    snapshot restored with M(fediflow.dr.s3_snapshot)), into O(dest) with the O(private_key) (age
    files) or O(legacy_private_key) (FFDRENC files). Every file is decrypted before any is written.
author:
  - FediFlow SRE (@fediflow)
extends_documentation_fragment:
  - fediflow.dr.attributes
  - fediflow.dr.attributes.ALL_SUPPORTED
options:
  state:
    description: V(exported) exports, V(decrypted) decrypts an export for a restore.
    type: str
    choices: [ exported, decrypted ]
    default: exported
  dest:
    description: Staging directory of the export (created with mode C(0700)), or where decrypted files go.
    type: path
    required: true
  namespaces:
    description: Kubernetes namespaces to export. Empty exports no Kubernetes objects.
    type: list
    elements: str
    default: []
  kinds:
    description:
      - Kinds of objects to export, by their plural name.
      - The default is what the lab's Kubernetes double serves; add V(services), V(statefulsets)
        and others for a real cluster.
    type: list
    elements: str
    choices: [ deployments, statefulsets, daemonsets, services, configmaps, secrets, persistentvolumeclaims, cronjobs ]
    default: [ deployments, configmaps, secrets ]
  label_selector:
    description: Only objects matching this label selector (C(app=api,tier!=cache)).
    type: str
  kubeconfig:
    description: Kubeconfig file. Default, C(KUBECONFIG) or C(~/.kube/config).
    type: path
  context:
    description: Context of the kubeconfig. Default, its current context.
    type: str
  paths:
    description:
      - Absolute paths of files and directory trees to copy (for example C(/etc/app),
        C(/etc/prometheus)). Symlinks, sockets and devices are skipped and listed in RV(skipped).
    type: list
    elements: path
    default: []
  secret_paths:
    description:
      - Glob patterns (absolute, C(**) recursive) of files to export encrypted, for example
        C(/srv/terraform/**/*.tfstate). They win over O(paths); a file matching both is only
        written encrypted.
    type: list
    elements: str
    default: []
  encrypt_to:
    description:
      - The age X25519 recipients (public keys, C(age1...)) every secret is encrypted to; each of
        their private keys can decrypt. Make a key pair with C(age-keygen -o key.txt) (Debian's
        C(age) package) where the private key is to live (with the operators or in a vault, never
        on a backup host), and give its public key (C(age-keygen -y key.txt)) here. Two recipients
        (for example two operators, or an operator and an offline escrow key) keep the backups
        readable when one key is lost.
      - Checked before anything is done; a value that is not C(age1) followed by 58 Bech32
        characters is refused, naming its position.
      - Required when secrets or O(secret_paths) are exported.
    type: list
    elements: str
  src:
    description: With O(state=decrypted), an encrypted file or a directory holding C(.enc) files.
    type: path
  private_key:
    description:
      - With O(state=decrypted), the text of an age identity file as C(age-keygen) writes it
        (comment lines starting with C(#), one or more C(AGE-SECRET-KEY-1...) lines), for files in
        the age format.
    type: str
  legacy_private_key:
    description:
      - With O(state=decrypted), the X25519 private key of exports written before 0.3.0 in the
        old C(FFDRENC) format, base64 of its 32 raw bytes or the PEM text. Only needed to restore
        such backups; give it together with O(private_key) when a tree holds both formats.
    type: str
notes:
  - Needs the C(kubernetes), C(pyrage) and C(PyYAML) python libraries on the host running it
    (C(cryptography) too, only to read C(FFDRENC) files).
  - In a disaster, without this collection, C(age -d -i key.txt -o out.yaml file.enc) decrypts any
    C(.enc) file of an export (age format); the C(.fingerprints/) sidecars are not needed.
  - Uses C(list) calls only; the credentials of the kubeconfig need C(list) on the kinds exported.
seealso:
  - module: fediflow.dr.s3_snapshot
"""

EXAMPLES = r"""
- name: Export the application's configuration, secrets encrypted to the restore key
  fediflow.dr.config_export:
    dest: /var/backups/fediflow/config-staging
    kubeconfig: /etc/fediflow/kubeconfig
    namespaces: [fediflow]
    kinds: [deployments, statefulsets, services, configmaps, secrets]
    paths: [/etc/app, /etc/prometheus, /etc/grafana]
    secret_paths: ["/srv/terraform/**/*.tfstate"]
    encrypt_to: "{{ fediflow_config_backup_recipients }}"

- name: Ship it to S3, leaving the fingerprints on the host
  fediflow.dr.s3_snapshot:
    src: /var/backups/fediflow/config-staging
    s3_bucket: fediflow-backups-us-east-1
    s3_prefix: config/us-east-1
    exclude: ["/.fingerprints"]

- name: Decrypt a restored configuration snapshot (on the restore host, which has the key)
  fediflow.dr.config_export:
    state: decrypted
    src: /restore/config
    dest: /restore/config-plain
    private_key: "{{ vault_config_backup_age_identity }}"

- name: Restore a backup written before 0.3.0 (FFDRENC files; age files of the same tree too)
  fediflow.dr.config_export:
    state: decrypted
    src: /restore/config-2026-10
    dest: /restore/config-2026-10-plain
    private_key: "{{ vault_config_backup_age_identity }}"
    legacy_private_key: "{{ vault_config_backup_private_key }}"
"""

RETURN = r"""
dest:
  description: The staging (or decryption) directory.
  returned: always
  type: str
objects:
  description: Kubernetes objects exported, per kind.
  returned: state=exported
  type: dict
  sample: {deployments: 3, configmaps: 1, secrets: 2}
objects_total:
  description: Kubernetes objects exported.
  returned: state=exported
  type: int
files_total:
  description: Files exported from O(paths) and O(secret_paths).
  returned: state=exported
  type: int
encrypted:
  description: Files of the export that are encrypted (secrets and O(secret_paths)).
  returned: state=exported
  type: int
encrypted_written:
  description: Encrypted files written by this run (a secret is re-encrypted only when it changed).
  returned: state=exported
  type: int
decrypted:
  description: Files decrypted.
  returned: state=decrypted
  type: int
formats:
  description: The decrypted files (relative to O(dest)) per encryption format, V(age) or V(ffdrenc) (before 0.3.0).
  returned: state=decrypted
  type: dict
  sample: {age: [k8s/fediflow/secrets/db.yaml], ffdrenc: [files/srv/terraform/terraform.tfstate]}
paths:
  description: Every file of the export (or decrypted), relative to O(dest).
  returned: always
  type: list
  elements: str
  sample: [files/etc/app/app.env, index.json, k8s/fediflow/configmaps/app-config.yaml, k8s/fediflow/secrets/db.yaml.enc]
skipped:
  description: Paths not exported (symlinks, sockets, devices).
  returned: state=exported
  type: list
  elements: str
changes:
  description: How many files were (or in check mode would be) added, changed and removed.
  returned: always
  type: dict
  sample: {added: 0, changed: 1, removed: 0}
changed_paths:
  description: The relative paths added, changed and removed.
  returned: always
  type: dict
phases:
  description: Seconds spent per phase.
  returned: state=exported
  type: dict
duration_s:
  description: Wall time of the module, in seconds.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fediflow.dr.plugins.module_utils.modrun import run_module

from ansible_collections.fediflow.dr.plugins.module_utils import config_export


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "default": "exported", "choices": list(config_export.STATES)},
            "dest": {"type": "path", "required": True},
            "namespaces": {"type": "list", "elements": "str", "default": []},
            "kinds": {"type": "list", "elements": "str", "default": list(config_export.DEFAULT_KINDS),
                      "choices": list(config_export.KINDS)},
            "label_selector": {"type": "str"},
            "kubeconfig": {"type": "path"},
            "context": {"type": "str"},
            "paths": {"type": "list", "elements": "path", "default": []},
            "secret_paths": {"type": "list", "elements": "str", "default": [], "no_log": False},
            "encrypt_to": {"type": "list", "elements": "str", "no_log": False},
            "src": {"type": "path"},
            "private_key": {"type": "str", "no_log": True},
            "legacy_private_key": {"type": "str", "no_log": True},
        },
        supports_check_mode=True,
        required_if=[("state", "decrypted", ["src"]),
                     ("state", "decrypted", ["private_key", "legacy_private_key"], True)],
    )
    run_module(module, config_export.export, module.params, check_mode=module.check_mode)


if __name__ == "__main__":
    main()
