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
    written as C(<path>.enc), encrypted to the public key O(encrypt_to) (X25519 + HKDF-SHA256 +
    ChaCha20-Poly1305, a fresh ephemeral key per file). The host running the backup cannot decrypt
    its own backups; only the holder of the private key can (O(state=decrypted)).
  - Encrypted file format version 1 - C(FFDRENC) (7 bytes), version byte C(0x01), the ephemeral
    X25519 public key (32 bytes), a random nonce (12 bytes), then the ChaCha20-Poly1305 ciphertext
    and tag. The key is HKDF-SHA256 of the X25519 shared secret with salt ephemeral public key +
    recipient public key and info C(fediflow.dr/config-export/v1); the 52-byte header is the
    associated data.
  - Only files whose content changed are rewritten, so an unchanged configuration leaves O(dest)
    untouched and the snapshot after it writes nothing. Ciphertext changes on every encryption, so
    a secret is re-encrypted only when its plaintext changed, told by a keyed fingerprint
    (HMAC-SHA256 with a key derived from O(encrypt_to)) kept in C(.fingerprints/) beside the
    export. Keep C(.fingerprints/) out of S3 (O(fediflow.dr.s3_snapshot#module:exclude)), since with the
    public key it allows guessing a secret's value.
  - Objects and files that are no longer there are removed from O(dest); nothing outside
    C(k8s/), C(files/), C(index.json) and C(.fingerprints/) is touched.
  - V(decrypted) decrypts one C(.enc) file, or every C(.enc) file under O(src) (an export or a
    snapshot restored with M(fediflow.dr.s3_snapshot)), into O(dest) with the O(private_key).
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
      - The recipient's X25519 public key, base64 of its 32 raw bytes, for example from
        C(openssl genpkey -algorithm X25519 -out key.pem) and
        C(openssl pkey -in key.pem -pubout -outform DER | tail -c 32 | base64).
      - Required when secrets or O(secret_paths) are exported.
    type: str
  src:
    description: With O(state=decrypted), an encrypted file or a directory holding C(.enc) files.
    type: path
  private_key:
    description:
      - With O(state=decrypted), the recipient's X25519 private key, base64 of its 32 raw bytes
        (C(openssl pkey -in key.pem -outform DER | tail -c 32 | base64)) or the PEM text.
    type: str
notes:
  - Needs the C(kubernetes), C(cryptography) and C(PyYAML) python libraries on the host running it.
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
    encrypt_to: "{{ fediflow_config_backup_public_key }}"

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
    private_key: "{{ vault_config_backup_private_key }}"
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
            "encrypt_to": {"type": "str"},
            "src": {"type": "path"},
            "private_key": {"type": "str", "no_log": True},
        },
        supports_check_mode=True,
        required_if=[("state", "decrypted", ["src", "private_key"])],
    )
    run_module(module, config_export.export, module.params, check_mode=module.check_mode)


if __name__ == "__main__":
    main()
