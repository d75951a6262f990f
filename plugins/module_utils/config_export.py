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

Encrypted file format, version 1 (public-key hybrid encryption; the backup host holds only
the recipient's public key and cannot decrypt what it wrote)::

    magic  b"FFDRENC"            7 bytes
    version 0x01                 1 byte
    ephemeral X25519 public key  32 bytes  (a fresh key pair per file)
    nonce                        12 bytes  (random)
    ChaCha20-Poly1305 ciphertext of the plaintext, with its 16-byte tag

    key = HKDF-SHA256(X25519(ephemeral, recipient), salt = ephemeral_pub + recipient_pub,
                      info = b"fediflow.dr/config-export/v1", length = 32)
    the 52-byte header (magic .. nonce) is the AEAD's associated data, so no header byte
    can be changed without the decryption failing.

Deterministic output: objects are written as YAML with sorted keys after server-set fields are
removed, and a file is only rewritten when its bytes change, so an unchanged cluster leaves
every file (content, mode, mtime, inode) as it was and ``s3_snapshot`` writes no new snapshot.
Ciphertext differs on every encryption (fresh ephemeral key, random nonce), so a secret is
only re-encrypted when its plaintext changed. To know that without keeping the plaintext or
a plain hash of it (a plain sha256 of a low-entropy secret can be guessed offline), each
encrypted file has a sidecar holding HMAC-SHA256(k, relative path + NUL + plaintext) with
``k = HKDF-SHA256(recipient public key, info = b"fediflow.dr/config-export/fingerprint/v1")``,
plus the sha256 of the ciphertext file. When the HMAC and the ciphertext's sha256 both match
the old file is kept. The key is derived from the *public* key, so the sidecar still lets
someone holding the public key test guesses of a secret; that is why the sidecars live under
``.fingerprints/`` and the backup role excludes them from the S3 snapshot: they stay on the
backup host, whose process saw the plaintext anyway. Changing the recipient changes the key,
so every secret is re-encrypted to the new recipient on the next run. Sidecars lost (a new
host): every secret is re-encrypted once.
"""

from __future__ import annotations

import base64
import fnmatch
import glob
import hashlib
import hmac
import json
import os
import secrets
import stat as st

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer
from ansible_collections.fediflow.dr.plugins.module_utils.snapshot import diff_text  # same +/~/- listing
from ansible_collections.fediflow.dr.plugins.module_utils import k8s_failover

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported by require_cryptography()
    HAS_CRYPTOGRAPHY = False

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover
    HAS_YAML = False

MAGIC = b"FFDRENC"
VERSION = 1
HEADER_LEN = len(MAGIC) + 1 + 32 + 12
KDF_INFO = b"fediflow.dr/config-export/v1"
FP_INFO = b"fediflow.dr/config-export/fingerprint/v1"
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


# ---------------------------------------------------------------- encryption

def require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise FediflowError("the python 'cryptography' library is required on the host running config_export")


def _b64_key(text, what):
    try:
        raw = base64.b64decode(str(text).strip(), validate=True)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise FediflowError("%s must be a base64 raw 32-byte X25519 key" % what)
    return raw


def load_public_key(text, option="encrypt_to"):
    """A base64 raw X25519 public key (``openssl pkey -pubout -outform DER | tail -c 32 | base64``)."""
    require_cryptography()
    return X25519PublicKey.from_public_bytes(_b64_key(text, option))


def load_private_key(text, option="private_key"):
    """A base64 raw X25519 private key, or a PEM one (``openssl genpkey -algorithm X25519``)."""
    require_cryptography()
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


def raw_public(key):
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_keypair():
    """(private, public) as base64 raw X25519 keys: ``encrypt_to`` takes the public one."""
    require_cryptography()
    key = X25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    return base64.b64encode(private).decode(), base64.b64encode(raw_public(key.public_key())).decode()


def _derive(shared, eph_pub, rcpt_pub):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + rcpt_pub, info=KDF_INFO).derive(shared)


def encrypt(plaintext, recipient):
    """Encrypt bytes to an X25519 public key (object or base64 text); see the module docstring."""
    require_cryptography()
    if not isinstance(recipient, X25519PublicKey):
        recipient = load_public_key(recipient)
    ephemeral = X25519PrivateKey.generate()
    eph_pub = raw_public(ephemeral.public_key())
    key = _derive(ephemeral.exchange(recipient), eph_pub, raw_public(recipient))
    nonce = secrets.token_bytes(12)
    header = MAGIC + bytes([VERSION]) + eph_pub + nonce
    return header + ChaCha20Poly1305(key).encrypt(nonce, plaintext, header)


def decrypt(blob, private_key):
    """Decrypt what ``encrypt`` produced with the recipient's private key (object or text)."""
    require_cryptography()
    if not isinstance(private_key, X25519PrivateKey):
        private_key = load_private_key(private_key)
    if len(blob) < HEADER_LEN + 16 or not blob.startswith(MAGIC):
        raise FediflowError("not a fediflow.dr encrypted file (bad magic or too short)")
    version = blob[len(MAGIC)]
    if version != VERSION:
        raise FediflowError("encrypted file format version %d is not supported (this collection reads %d)"
                            % (version, VERSION))
    header = blob[:HEADER_LEN]
    eph_pub = header[len(MAGIC) + 1:len(MAGIC) + 33]
    nonce = header[len(MAGIC) + 33:]
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:
        raise FediflowError("decryption failed: the file's ephemeral key is invalid")
    key = _derive(shared, eph_pub, raw_public(private_key.public_key()))
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, blob[HEADER_LEN:], header)
    except InvalidTag:
        raise FediflowError("decryption failed: wrong private key, or the file was altered or truncated")


def fingerprint_key(recipient):
    require_cryptography()
    if not isinstance(recipient, X25519PublicKey):
        recipient = load_public_key(recipient)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=FP_INFO).derive(raw_public(recipient))


def fingerprint(fp_key, rel, plaintext):
    return hmac.new(fp_key, rel.encode("utf-8") + b"\0" + plaintext, hashlib.sha256).hexdigest()


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


def write_atomic(path, data, mode):
    """Temp file beside the target (named as s3_snapshot ignores it), fsync, rename."""
    _makedirs(os.path.dirname(path))
    tmp = os.path.join(os.path.dirname(path), ".fediflow-%s.tmp" % secrets.token_hex(8))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _prune_empty_dirs(dest):
    for top in ("k8s", "files", FP_DIR):
        base = os.path.join(dest, top)
        for root, _dirs, _names in os.walk(base, topdown=False):
            if root != base and not os.listdir(root):
                os.rmdir(root)


def apply(dest, wanted, changes, recipient, fp_key):
    for rel in changes["added"] + changes["changed"]:
        item = wanted[rel]
        target = os.path.join(dest, rel)
        if item["secret"]:
            blob = encrypt(item["data"], recipient)
            write_atomic(target, blob, item["mode"])
            write_atomic(sidecar_path(dest, rel), (json.dumps({
                "version": VERSION, "hmac": fingerprint(fp_key, rel, item["data"]),
                "ciphertext_sha256": _sha256(blob)}, sort_keys=True) + "\n").encode(), 0o600)
        else:
            write_atomic(target, item["data"], item["mode"])
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
        if not p.get("private_key"):
            raise FediflowError("private_key is required with state=decrypted")
        p["private_key_obj"] = load_private_key(p["private_key"])
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
    needs_key = ("secrets" in kinds and p["namespaces"]) or p["secret_paths"]
    if needs_key and not p.get("encrypt_to"):
        raise FediflowError("encrypt_to (the recipient's base64 X25519 public key) is required to export "
                            "secrets or secret_paths: secrets are never written in clear")
    p["recipient"] = load_public_key(p["encrypt_to"]) if p.get("encrypt_to") else None
    if not p["namespaces"] and not p["paths"] and not p["secret_paths"]:
        raise FediflowError("nothing to export: give namespaces, paths or secret_paths")
    return p


def export(params, check_mode=False):
    """Export (state=exported) or decrypt (state=decrypted); returns the module result."""
    timer = Timer()
    p = validate(params)
    if p["state"] == "decrypted":
        return decrypt_tree(p["src"], p["dest"], p["private_key_obj"], check_mode, timer)
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
        if item["secret"] and p["recipient"] is None:
            raise FediflowError("'%s' is secret and encrypt_to is not set" % rel)
    recipient_b64 = base64.b64encode(raw_public(p["recipient"])).decode() if p["recipient"] else None
    index = {"format": "fediflow.dr/config-export", "version": VERSION, "encrypt_to": recipient_b64,
             "namespaces": p["namespaces"], "kinds": p["kinds"], "label_selector": p.get("label_selector"),
             "paths": p["paths"], "secret_paths": p["secret_paths"], "skipped": skipped,
             "exported": sorted(wanted)}
    wanted[INDEX] = {"data": (json.dumps(index, indent=1, sort_keys=True) + "\n").encode(), "secret": False,
                     "mode": 0o600}
    fp_key = fingerprint_key(p["recipient"]) if p["recipient"] else b""
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
            apply(dest, wanted, changes, p["recipient"], fp_key)
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


def decrypt_tree(src, dest, private_key, check_mode=False, timer=None):
    """Decrypt one ``.enc`` file, or every ``.enc`` file under a directory (an export or a
    restored snapshot), into ``dest`` (0700) without the suffix, files 0600. Plaintext that is
    already there and equal is left alone."""
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
    plain = {}
    for full, rel in pairs:
        try:
            plain[rel] = decrypt(_read(full), private_key)
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
            write_atomic(os.path.join(dest, rel), plain[rel], 0o600)
    return {"changed": changed, "dest": dest, "decrypted": len(pairs), "paths": sorted(plain),
            "changes": {k: len(v) for k, v in changes.items()}, "changed_paths": changes,
            "diff": {"prepared": diff_text(changes)}, "duration_s": timer.elapsed()}
