# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Configuration backups (the ``config_export`` module): Kubernetes objects and configuration
files exported into a staging directory that ``s3_snapshot`` then ships to S3.

Layout of ``dest`` (mode 0700)::

    k8s/<namespace>/<kind>/<name>.yaml        an object, normalised (see ``normalize``)
    k8s/<namespace>/secrets/<name>.yaml.enc   a Secret, encrypted (never in clear on disk)
    files/<absolute path>                     a copy of a file of ``paths`` (mode kept)
    files/<absolute path>.enc                 a file matching ``secret_paths``, encrypted
    index.json                                what was exported (no timestamps)
    .fingerprints/<relative path>.json        sidecars of the encrypted files (keep out of S3)

Encrypted files are in the **age** format (age-encryption.org/v1, https://age-encryption.org/v1),
written and read with ``pyrage``: a file is encrypted to every recipient of ``encrypt_to`` (age
X25519 public keys, ``age1...``), so the host running the backup holds only public keys and cannot
decrypt what it wrote. In a disaster an operator decrypts any ``.enc`` file without this collection,
with the private key and the ``age`` CLI (Debian's ``age`` package)::

    age -d -i config-backup-key.txt -o db.yaml k8s/fediflow/secrets/db.yaml.enc

Exports made before 0.3.0 used a format of our own (magic ``FFDRENC``, X25519 + HKDF-SHA256 +
ChaCha20-Poly1305, see ``decrypt_legacy``). Such files are still read (``state=decrypted`` with
``legacy_private_key``, to restore existing backups), never written: the first export after the
upgrade re-encrypts every secret to age, since the sidecars of format 2 no longer match.

Deterministic output: objects are written as YAML with sorted keys after server-set fields are
removed, and a file is only rewritten when its bytes change, so an unchanged cluster leaves
every file (content, mode, mtime, inode) as it was and ``s3_snapshot`` writes no new snapshot.
Ciphertext differs on every encryption (age draws a fresh file key and ephemeral share), so a
secret is only re-encrypted when its plaintext changed. To know that without keeping the
plaintext or a plain hash of it (a plain sha256 of a low-entropy secret can be guessed offline),
each encrypted file has a sidecar holding HMAC-SHA256(k, relative path + NUL + plaintext) with
``k = HMAC-SHA256(FP_INFO, the sorted recipients joined by newlines)``, plus the sha256 of the
ciphertext file. When the HMAC and the ciphertext's sha256 both match the old file is kept. The
key is derived from *public* keys, so the sidecar still lets someone holding them test guesses of a
secret; that is why the sidecars live under ``.fingerprints/`` and the backup role excludes them
from the S3 snapshot: they stay on the backup host, whose process saw the plaintext anyway.
Changing the recipients changes the key, so every secret is re-encrypted to the new recipients on
the next run. Sidecars lost (a new host): every secret is re-encrypted once.
"""

from __future__ import annotations

import base64
import fnmatch
import glob
import hashlib
import hmac
import json
import os
import re
import stat as st

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer
from ansible_collections.fediflow.dr.plugins.module_utils.snapshot import diff_text  # same +/~/- listing
from ansible_collections.fediflow.dr.plugins.module_utils import atomic, k8s_failover

try:
    import pyrage
    HAS_PYRAGE = True
except ImportError:  # pragma: no cover - reported by require_pyrage()
    HAS_PYRAGE = False

try:  # only to read configuration backups of the old FFDRENC format (before 0.3.0)
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported by decrypt_legacy()
    HAS_CRYPTOGRAPHY = False

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover
    HAS_YAML = False

AGE_MAGIC = b"age-encryption.org/v1\n"
# an age X25519 recipient: Bech32, human-readable part "age", 32 bytes of key + checksum = 58 characters
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
RECIPIENT_RE = re.compile(r"^age1[%s]{58}$" % _BECH32)
IDENTITY_RE = re.compile(r"^AGE-SECRET-KEY-1[%s]{58}$" % _BECH32.upper())
# index.json and sidecar format: 2 = age (1 was FFDRENC, whose sidecars no longer match: re-encrypted)
VERSION = 2
FP_INFO = b"fediflow.dr/config-export/fingerprint/v2"
# the old format, read only
LEGACY_MAGIC = b"FFDRENC"
LEGACY_VERSION = 1
LEGACY_HEADER_LEN = len(LEGACY_MAGIC) + 1 + 32 + 12
LEGACY_KDF_INFO = b"fediflow.dr/config-export/v1"
ENC_SUFFIX = ".enc"
FP_DIR = ".fingerprints"
INDEX = "index.json"
STATES = ("exported", "decrypted")

# kind (plural) -> (API class, list method, apiVersion, Kind)
KINDS = {
    "deployments": ("AppsV1Api", "list_namespaced_deployment", "apps/v1", "Deployment"),
    "statefulsets": ("AppsV1Api", "list_namespaced_stateful_set", "apps/v1", "StatefulSet"),
    "daemonsets": ("AppsV1Api", "list_namespaced_daemon_set", "apps/v1", "DaemonSet"),
    "services": ("CoreV1Api", "list_namespaced_service", "v1", "Service"),
    "configmaps": ("CoreV1Api", "list_namespaced_config_map", "v1", "ConfigMap"),
    "secrets": ("CoreV1Api", "list_namespaced_secret", "v1", "Secret"),
    "persistentvolumeclaims": ("CoreV1Api", "list_namespaced_persistent_volume_claim", "v1",
                               "PersistentVolumeClaim"),
    "cronjobs": ("BatchV1Api", "list_namespaced_cron_job", "batch/v1", "CronJob"),
}
DEFAULT_KINDS = ("deployments", "configmaps", "secrets")
SECRET_KINDS = ("secrets",)
# set by the API server: they change without the object changing
SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "selfLink", "generation", "creationTimestamp")


# ---------------------------------------------------------------- encryption (age)

def require_pyrage():
    if not HAS_PYRAGE:
        raise FediflowError("the python 'pyrage' library (age encryption, PyPI 'pyrage') is required on the host "
                            "running config_export")


def check_recipients(values, option="encrypt_to"):
    """The age X25519 recipients of ``option`` (a string or a list of ``age1...`` strings), checked
    for their syntax before anything is touched: ``[str]``, sorted, without duplicates."""
    if isinstance(values, str):
        values = [values]
    out = []
    for index, value in enumerate(values or []):
        text = str(value).strip()
        if not RECIPIENT_RE.match(text):
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise FediflowError("%s[%d] is not an age X25519 recipient (age1 followed by 58 Bech32 characters, "
                                "as printed by age-keygen), got '%s'" % (option, index, shown))
        out.append(text)
    return sorted(set(out))


def load_recipients(values, option="encrypt_to"):
    """``pyrage`` recipient objects for ``values`` (checked by ``check_recipients``, then by pyrage,
    which also verifies the Bech32 checksum)."""
    require_pyrage()
    objects = []
    for index, text in enumerate(check_recipients(values, option)):
        try:
            objects.append(pyrage.x25519.Recipient.from_str(text))
        except pyrage.RecipientError as exc:
            raise FediflowError("%s: '%s' is not a valid age recipient (%s)" % (option, text, exc))
    if not objects:
        raise FediflowError("%s: at least one age recipient is required" % option)
    return objects


def load_identities(text, option="private_key"):
    """``pyrage`` identities from the text of an age identity file (``age-keygen`` output: comment
    lines starting with ``#``, one ``AGE-SECRET-KEY-1...`` per line). The key never appears in a message."""
    require_pyrage()
    identities = []
    for number, line in enumerate(str(text or "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not IDENTITY_RE.match(line):
            raise FediflowError("%s: line %d is not an age X25519 identity (AGE-SECRET-KEY-1..., the secret line of "
                                "age-keygen's output); an FFDRENC-era key goes in legacy_private_key" % (option, number))
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise FediflowError("%s: line %d is not a valid age identity (bad Bech32 checksum)" % (option, number))
    if not identities:
        raise FediflowError("%s holds no age identity (AGE-SECRET-KEY-1...)" % option)
    return identities


def generate_identity():
    """(identity file text, recipient) of a fresh age X25519 key pair, as ``age-keygen`` makes them."""
    require_pyrage()
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    return "# public key: %s\n%s\n" % (recipient, identity), recipient


def encrypt(plaintext, recipients):
    """Encrypt bytes to every age recipient (``age1...`` strings or pyrage objects): an age file."""
    require_pyrage()
    if not recipients or isinstance(recipients, str) or isinstance(recipients[0], str):
        recipients = load_recipients(recipients)
    return pyrage.encrypt(plaintext, list(recipients))


def file_format(blob):
    """``age``, ``ffdrenc`` (the old format, read only) or None."""
    if blob.startswith(AGE_MAGIC):
        return "age"
    if blob.startswith(LEGACY_MAGIC):
        return "ffdrenc"
    return None


def decrypt(blob, identities=None, legacy_key=None):
    """Decrypt an age file with ``identities`` (pyrage objects or identity file text), or a file of
    the old FFDRENC format with ``legacy_key``."""
    kind = file_format(blob)
    if kind == "ffdrenc":
        if legacy_key is None:
            raise FediflowError("the file is in the old FFDRENC format (written before 0.3.0): give its X25519 key "
                                "in legacy_private_key")
        return decrypt_legacy(blob, legacy_key)
    if kind is None:
        raise FediflowError("not an age encrypted file (no age-encryption.org/v1 header; armored files are not read)")
    if identities is None:
        raise FediflowError("the file is in the age format: give the age identity in private_key")
    if isinstance(identities, str):
        identities = load_identities(identities)
    require_pyrage()
    try:
        return pyrage.decrypt(blob, list(identities))
    except pyrage.DecryptError as exc:
        reason = str(exc)
        if "no matching keys" in reason.lower():
            raise FediflowError("decryption failed: no identity of private_key is a recipient of this file (wrong key, "
                                "or its header was altered)")
        raise FediflowError("decryption failed: the file was altered or truncated (age: %s)" % reason[:120])


def fingerprint_key(recipients):
    """Key of the sidecars' HMAC, from the sorted recipients (public): a new recipient set re-encrypts."""
    return hmac.new(FP_INFO, "\n".join(check_recipients(recipients)).encode(), hashlib.sha256).digest()


def fingerprint(fp_key, rel, plaintext):
    return hmac.new(fp_key, rel.encode("utf-8") + b"\0" + plaintext, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- the old FFDRENC format (read only)
#
#    magic  b"FFDRENC" (7 bytes), version 0x01 (1 byte), ephemeral X25519 public key (32 bytes),
#    nonce (12 bytes), ChaCha20-Poly1305 ciphertext of the plaintext with its 16-byte tag;
#    key = HKDF-SHA256(X25519(ephemeral, recipient), salt = ephemeral_pub + recipient_pub,
#                      info = b"fediflow.dr/config-export/v1", length = 32); the 52-byte header is
#    the AEAD's associated data.

def _b64_key(text, what):
    try:
        raw = base64.b64decode(str(text).strip(), validate=True)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise FediflowError("%s must be a base64 raw 32-byte X25519 key or its PEM text" % what)
    return raw


def load_legacy_key(text, option="legacy_private_key"):
    """The X25519 private key of FFDRENC files: base64 of its 32 raw bytes, or PEM."""
    if not HAS_CRYPTOGRAPHY:
        raise FediflowError("the python 'cryptography' library is required to read FFDRENC files (before 0.3.0)")
    text = str(text or "").strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise FediflowError("%s is not a readable PEM private key" % option)
        if not isinstance(key, X25519PrivateKey):
            raise FediflowError("%s is a PEM key but not an X25519 one" % option)
        return key
    return X25519PrivateKey.from_private_bytes(_b64_key(text, option))


def decrypt_legacy(blob, private_key):
    """Decrypt an FFDRENC file (format version 1) with its recipient's X25519 private key."""
    if not HAS_CRYPTOGRAPHY or not isinstance(private_key, X25519PrivateKey):
        private_key = load_legacy_key(private_key)
    if len(blob) < LEGACY_HEADER_LEN + 16 or not blob.startswith(LEGACY_MAGIC):
        raise FediflowError("not an FFDRENC encrypted file (bad magic or too short)")
    version = blob[len(LEGACY_MAGIC)]
    if version != LEGACY_VERSION:
        raise FediflowError("FFDRENC format version %d is not supported (this collection reads %d)"
                            % (version, LEGACY_VERSION))
    header = blob[:LEGACY_HEADER_LEN]
    eph_pub = header[len(LEGACY_MAGIC) + 1:len(LEGACY_MAGIC) + 33]
    nonce = header[len(LEGACY_MAGIC) + 33:]
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:
        raise FediflowError("decryption failed: the file's ephemeral key is invalid")
    rcpt_pub = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + rcpt_pub, info=LEGACY_KDF_INFO).derive(shared)
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, blob[LEGACY_HEADER_LEN:], header)
    except InvalidTag:
        raise FediflowError("decryption failed: wrong legacy_private_key, or the file was altered or truncated")


# ---------------------------------------------------------------- Kubernetes objects (pure)

def normalize(obj, kind):
    """A copy of an API object (plain data) without what the server sets on its own
    (``SERVER_METADATA``, ``status``), with ``apiVersion``/``kind`` filled in (list items
    lack them): the same object always gives the same bytes, and it can be re-applied."""
    _cls, _method, api_version, kind_name = KINDS[kind]
    out = json.loads(json.dumps(obj))
    out.pop("status", None)
    out["apiVersion"] = api_version
    out["kind"] = kind_name
    meta = out.setdefault("metadata", {})
    for key in SERVER_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("deployment.kubernetes.io/revision", None)
    if not annotations:
        meta.pop("annotations", None)
    return out


def dump_yaml(obj):
    if not HAS_YAML:
        raise FediflowError("the python 'PyYAML' library is required on the host running config_export")
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, allow_unicode=True).encode("utf-8")


def object_path(namespace, kind, name):
    rel = "k8s/%s/%s/%s.yaml" % (namespace, kind, name)
    return rel + ENC_SUFFIX if kind in SECRET_KINDS else rel


def render_objects(objects):
    """``[(namespace, kind, object)]`` -> ``{relpath: {"data", "secret", "mode"}}``."""
    out = {}
    for namespace, kind, obj in objects:
        name = (obj.get("metadata") or {}).get("name")
        if not name or "/" in name or name in (".", ".."):
            raise FediflowError("%s in namespace '%s' has an unusable name %r" % (kind, namespace, name))
        out[object_path(namespace, kind, name)] = {
            "data": dump_yaml(normalize(obj, kind)), "secret": kind in SECRET_KINDS, "mode": 0o600}
    return out


def fetch_objects(kubeconfig, context, namespaces, kinds, label_selector=None):
    """List every object of ``kinds`` in ``namespaces`` through the official client, as the
    plain JSON the API returned."""
    try:
        from kubernetes import client as k8s_client  # pylint: disable=import-outside-toplevel
        from kubernetes.client.rest import ApiException  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise FediflowError("the python 'kubernetes' client is required on the host running config_export")
    # one way to reach a cluster for the whole collection (kubeconfig / context, exec auth, in-cluster)
    api_client = k8s_failover.connect({"kubeconfig": kubeconfig, "context": context})
    objects = []
    apis = {}
    try:
        for namespace in namespaces:
            for kind in kinds:
                cls, method, _v, _k = KINDS[kind]
                api = apis.setdefault(cls, getattr(k8s_client, cls)(api_client))
                kwargs = {"_preload_content": False, "_request_timeout": 30}
                if label_selector:
                    kwargs["label_selector"] = label_selector
                try:
                    response = getattr(api, method)(namespace, **kwargs)
                except ApiException as exc:
                    raise FediflowError("kubernetes: listing %s in namespace '%s' failed: %s %s"
                                        % (kind, namespace, exc.status, exc.reason))
                except Exception as exc:  # urllib3 connection errors
                    raise FediflowError("kubernetes API of kubeconfig %s unreachable while listing %s: %s"
                                        % (kubeconfig or "(default)", kind, str(exc).splitlines()[0][:200]))
                items = json.loads(response.data).get("items") or []
                objects.extend((namespace, kind, item) for item in items)
    finally:
        api_client.close()
    return objects


# ---------------------------------------------------------------- files

def is_secret_path(path, secret_globs):
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in secret_globs)


def collect_files(paths, secret_globs):
    """Files of ``paths`` (files or directory trees) and of ``secret_globs``:
    ``({relpath: {"src", "secret", "mode"}}, skipped)``. Symlinks and special files are skipped."""
    out, skipped = {}, []
    globbed = set()
    for pattern in secret_globs:
        globbed.update(os.path.normpath(x) for x in glob.glob(pattern, recursive=True))

    def add(path):
        info = os.lstat(path)
        if not st.S_ISREG(info.st_mode):
            skipped.append(path)
            return
        # secret when the glob finds it or the pattern matches the path: never copied in clear
        secret = path in globbed or is_secret_path(path, secret_globs)
        rel = "files" + path + (ENC_SUFFIX if secret else "")
        out[rel] = {"src": path, "secret": secret, "mode": 0o600 if secret else st.S_IMODE(info.st_mode)}

    for raw in paths:
        path = os.path.normpath(raw)
        if not os.path.lexists(path):
            raise FediflowError("paths entry '%s' does not exist" % raw)
        if os.path.isdir(path) and not os.path.islink(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    add(os.path.join(root, name))
        else:
            add(path)
    for path in sorted(globbed):
        if os.path.isfile(path) and not os.path.islink(path):
            add(path)
    if any(rel + ENC_SUFFIX in out for rel in out):
        raise FediflowError("internal error: a secret file would be exported in clear")
    return out, sorted(set(skipped))


# ---------------------------------------------------------------- plan (pure over the file system)

def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def managed_files(dest):
    """Relative paths of files the module owns under ``dest`` (k8s/, files/, index.json)."""
    found = []
    for top in ("k8s", "files"):
        base = os.path.join(dest, top)
        for root, _dirs, names in os.walk(base):
            found.extend(os.path.relpath(os.path.join(root, n), dest) for n in names)
    if os.path.exists(os.path.join(dest, INDEX)):
        found.append(INDEX)
    return sorted(found)


def sidecar_path(dest, rel):
    return os.path.join(dest, FP_DIR, rel + ".json")


def plan(dest, wanted, fp_key):
    """Compare what is wanted with ``dest``: ``{"added", "changed", "removed"}`` relative paths.

    ``wanted[rel]`` has ``data`` (plaintext bytes), ``secret`` and ``mode``. A clear file
    changes when its bytes or mode differ; an encrypted one when its plaintext fingerprint or
    the sha256 of the ciphertext differ from its sidecar."""
    changes = {"added": [], "changed": [], "removed": []}
    for rel in sorted(wanted):
        item = wanted[rel]
        target = os.path.join(dest, rel)
        if not os.path.lexists(target):
            changes["added"].append(rel)
            continue
        info = os.lstat(target)
        if not st.S_ISREG(info.st_mode) or st.S_IMODE(info.st_mode) != item["mode"]:
            changes["changed"].append(rel)
            continue
        if item["secret"]:
            side = _read(sidecar_path(dest, rel))
            try:
                side = json.loads(side) if side else {}
            except ValueError:
                side = {}
            current = _read(target)
            same = (side.get("version") == VERSION and current is not None
                    and hmac.compare_digest(str(side.get("hmac", "")), fingerprint(fp_key, rel, item["data"]))
                    and side.get("ciphertext_sha256") == _sha256(current))
        else:
            same = _read(target) == item["data"]
        if not same:
            changes["changed"].append(rel)
    changes["removed"] = [rel for rel in managed_files(dest) if rel not in wanted]
    return changes


# ---------------------------------------------------------------- writing

def _makedirs(path):
    os.makedirs(path, mode=0o700, exist_ok=True)


def _write(path, data, mode):
    """``atomic.write_atomic`` (its temp file is named as s3_snapshot ignores it), its directory made first."""
    _makedirs(os.path.dirname(path))
    atomic.write_atomic(path, data, mode)


def _prune_empty_dirs(dest):
    for top in ("k8s", "files", FP_DIR):
        base = os.path.join(dest, top)
        for root, _dirs, _names in os.walk(base, topdown=False):
            if root != base and not os.listdir(root):
                os.rmdir(root)


def apply(dest, wanted, changes, recipients, fp_key):
    for rel in changes["added"] + changes["changed"]:
        item = wanted[rel]
        target = os.path.join(dest, rel)
        if item["secret"]:
            blob = encrypt(item["data"], recipients)
            _write(target, blob, item["mode"])
            _write(sidecar_path(dest, rel), (json.dumps({
                "version": VERSION, "hmac": fingerprint(fp_key, rel, item["data"]),
                "ciphertext_sha256": _sha256(blob)}, sort_keys=True) + "\n").encode(), 0o600)
        else:
            _write(target, item["data"], item["mode"])
    for rel in changes["removed"]:
        os.unlink(os.path.join(dest, rel))
        side = sidecar_path(dest, rel)
        if os.path.exists(side):
            os.unlink(side)
    _prune_empty_dirs(dest)


# ---------------------------------------------------------------- the module's entry points

def validate(params):
    p = dict(params)
    p["state"] = p.get("state") or "exported"
    if p["state"] not in STATES:
        raise FediflowError("state must be one of %s, got '%s'" % (", ".join(STATES), p["state"]))
    dest = p.get("dest")
    if not dest or not os.path.isabs(dest):
        raise FediflowError("dest must be an absolute directory path, got '%s'" % dest)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise FediflowError("dest '%s' exists and is not a directory" % dest)
    if p["state"] == "decrypted":
        src = p.get("src")
        if not src or not os.path.isabs(src) or not os.path.exists(src):
            raise FediflowError("src must be an existing absolute path (an export or a restored snapshot) "
                                "with state=decrypted, got '%s'" % src)
        if not p.get("private_key") and not p.get("legacy_private_key"):
            raise FediflowError("private_key (the age identity) is required with state=decrypted; "
                                "legacy_private_key reads files of the old FFDRENC format")
        p["identities"] = load_identities(p["private_key"]) if p.get("private_key") else None
        p["legacy_key"] = load_legacy_key(p["legacy_private_key"]) if p.get("legacy_private_key") else None
        return p
    kinds = list(DEFAULT_KINDS) if p.get("kinds") is None else [str(k) for k in p["kinds"]]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise FediflowError("kinds: %s not supported; choose from %s" % (", ".join(unknown), ", ".join(sorted(KINDS))))
    p["kinds"] = kinds
    p["namespaces"] = [str(n) for n in (p.get("namespaces") or [])]
    for namespace in p["namespaces"]:
        if not namespace or "/" in namespace or namespace in (".", ".."):
            raise FediflowError("namespaces: '%s' is not a namespace name" % namespace)
    p["paths"] = [str(x) for x in (p.get("paths") or [])]
    p["secret_paths"] = [str(x) for x in (p.get("secret_paths") or [])]
    for option in ("paths", "secret_paths"):
        for path in p[option]:
            if not os.path.isabs(path):
                raise FediflowError("%s entries must be absolute paths, got '%s'" % (option, path))
    # syntax first (no library needed to refuse a bad value), then pyrage parses them
    p["encrypt_to"] = check_recipients(p.get("encrypt_to"))
    needs_key = ("secrets" in kinds and p["namespaces"]) or p["secret_paths"]
    if needs_key and not p["encrypt_to"]:
        raise FediflowError("encrypt_to (age recipients, age1..., made with age-keygen) is required to export "
                            "secrets or secret_paths: secrets are never written in clear")
    p["recipients"] = load_recipients(p["encrypt_to"]) if p["encrypt_to"] else None
    if not p["namespaces"] and not p["paths"] and not p["secret_paths"]:
        raise FediflowError("nothing to export: give namespaces, paths or secret_paths")
    return p


def export(params, check_mode=False):
    """Export (state=exported) or decrypt (state=decrypted); returns the module result."""
    timer = Timer()
    p = validate(params)
    if p["state"] == "decrypted":
        return decrypt_tree(p["src"], p["dest"], p["identities"], p["legacy_key"], check_mode, timer)
    wanted, counts = {}, {}
    with timer.phase("kubernetes"):
        if p["namespaces"] and p["kinds"]:
            objects = fetch_objects(p.get("kubeconfig"), p.get("context"), p["namespaces"], p["kinds"],
                                    p.get("label_selector"))
            for _ns, kind, _obj in objects:
                counts[kind] = counts.get(kind, 0) + 1
            wanted.update(render_objects(objects))
    with timer.phase("files"):
        files, skipped = collect_files(p["paths"], p["secret_paths"])
        for rel, item in files.items():
            data = _read(item["src"])
            if data is None:
                raise FediflowError("file '%s' vanished while exporting" % item["src"])
            wanted[rel] = {"data": data, "secret": item["secret"], "mode": item["mode"]}
    for rel, item in wanted.items():
        if item["secret"] and not p["recipients"]:
            raise FediflowError("'%s' is secret and encrypt_to is not set" % rel)
    index = {"format": "fediflow.dr/config-export", "version": VERSION, "encryption": "age",
             "encrypt_to": p["encrypt_to"],
             "namespaces": p["namespaces"], "kinds": p["kinds"], "label_selector": p.get("label_selector"),
             "paths": p["paths"], "secret_paths": p["secret_paths"], "skipped": skipped,
             "exported": sorted(wanted)}
    wanted[INDEX] = {"data": (json.dumps(index, indent=1, sort_keys=True) + "\n").encode(), "secret": False,
                     "mode": 0o600}
    fp_key = fingerprint_key(p["encrypt_to"]) if p["encrypt_to"] else b""
    dest = p["dest"]
    dest_exists = os.path.isdir(dest)
    dest_mode_ok = dest_exists and st.S_IMODE(os.stat(dest).st_mode) == 0o700
    with timer.phase("plan"):
        changes = plan(dest, wanted, fp_key) if dest_exists else {
            "added": sorted(wanted), "changed": [], "removed": []}
    changed = bool(changes["added"] or changes["changed"] or changes["removed"]) or not dest_mode_ok
    if changed and not check_mode:
        with timer.phase("write"):
            _makedirs(dest)
            os.chmod(dest, 0o700)
            apply(dest, wanted, changes, p["recipients"], fp_key)
    encrypted = sorted(rel for rel, item in wanted.items() if item["secret"])
    return {
        "changed": changed,
        "dest": dest,
        "objects": counts,
        "objects_total": sum(counts.values()),
        "files_total": len(files),
        "encrypted": len(encrypted),
        "encrypted_written": len([r for r in changes["added"] + changes["changed"] if wanted[r]["secret"]]),
        "paths": sorted(wanted),
        "skipped": skipped,
        "changes": {k: len(v) for k, v in changes.items()},
        "changed_paths": changes,
        "diff": {"prepared": diff_text(changes)},
        "phases": timer.phases,
        "duration_s": timer.elapsed(),
    }


def decrypt_tree(src, dest, identities, legacy_key=None, check_mode=False, timer=None):
    """Decrypt one ``.enc`` file, or every ``.enc`` file under a directory (an export or a
    restored snapshot), into ``dest`` (0700) without the suffix, files 0600. Each file is read in
    its own format: age with ``identities``, the old FFDRENC with ``legacy_key``. Every file is
    decrypted before anything is written; plaintext that is already there and equal is left alone."""
    timer = timer or Timer()
    if os.path.isdir(src):
        pairs = []
        for root, dirs, names in os.walk(src):
            dirs[:] = sorted(d for d in dirs if d != FP_DIR)
            for name in sorted(names):
                if name.endswith(ENC_SUFFIX):
                    full = os.path.join(root, name)
                    pairs.append((full, os.path.relpath(full, src)[:-len(ENC_SUFFIX)]))
    else:
        name = os.path.basename(src)
        pairs = [(src, name[:-len(ENC_SUFFIX)] if name.endswith(ENC_SUFFIX) else name + ".plain")]
    if not pairs:
        raise FediflowError("no %s files under '%s'" % (ENC_SUFFIX, src))
    changes = {"added": [], "changed": [], "removed": []}
    plain, formats = {}, {}
    for full, rel in pairs:
        blob = _read(full)
        formats[rel] = file_format(blob)
        try:
            plain[rel] = decrypt(blob, identities, legacy_key)
        except FediflowError as exc:
            raise FediflowError("%s: %s" % (full, exc.message))
        current = _read(os.path.join(dest, rel))
        if current is None:
            changes["added"].append(rel)
        elif current != plain[rel]:
            changes["changed"].append(rel)
    changed = bool(changes["added"] or changes["changed"])
    if changed and not check_mode:
        _makedirs(dest)
        os.chmod(dest, 0o700)
        for rel in changes["added"] + changes["changed"]:
            _write(os.path.join(dest, rel), plain[rel], 0o600)
    return {"changed": changed, "dest": dest, "decrypted": len(pairs), "paths": sorted(plain),
            "formats": {kind: sorted(r for r, f in formats.items() if f == kind) for kind in set(formats.values())},
            "changes": {k: len(v) for k, v in changes.items()}, "changed_paths": changes,
            "diff": {"prepared": diff_text(changes)}, "duration_s": timer.elapsed()}
