# -*- coding: utf-8 -*-
"""config_export as plain data: the age encryption (written with the collection, read with pyrage
and Debian's age CLI; wrong key, tampering, recipients checked), the old FFDRENC files still read,
object normalisation, and exports of real files into a temporary directory. The Kubernetes side
is proven by the integration tier against the lab's API double."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import pyrage

from ansible_collections.fediflow.dr.plugins.module_utils import config_export as ce
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

SECRET = b"s3cr3t-db-password-\xf0\x9f\x94\x91"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def keys():
    """(identity file text, recipient) of a fresh age key pair."""
    return ce.generate_identity()


@pytest.fixture(scope="module")
def legacy():
    """A secret file written by config_export before the move to age (FFDRENC v1), with its key."""
    meta = json.loads((FIXTURES / "ffdrenc-v1.json").read_text())
    return base64.b64decode(meta["file_b64"]), meta


def test_writes_age_that_pyrage_opens(keys):
    identity, recipient = keys
    blob = ce.encrypt(SECRET, [recipient])
    assert blob.startswith(b"age-encryption.org/v1\n-> X25519 ") and b"FFDRENC" not in blob
    assert SECRET not in blob
    # decrypted with pyrage directly, not through the collection
    assert pyrage.decrypt(blob, [pyrage.x25519.Identity.from_str(identity.splitlines()[-1])]) == SECRET
    assert ce.decrypt(blob, identity) == SECRET
    assert ce.encrypt(SECRET, [recipient]) != blob  # a fresh file key every time


def test_every_recipient_can_decrypt():
    ids = [pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()]
    blob = ce.encrypt(SECRET, [str(i.to_public()) for i in ids])
    for identity in ids:
        assert pyrage.decrypt(blob, [identity]) == SECRET
    outsider = pyrage.x25519.Identity.generate()
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(blob, [outsider])


def test_wrong_key_is_refused_clearly(keys):
    _identity, recipient = keys
    other, _other_recipient = ce.generate_identity()
    with pytest.raises(FediflowError, match="no identity of private_key is a recipient of this file") as err:
        ce.decrypt(ce.encrypt(SECRET, [recipient]), other)
    assert "AGE-SECRET-KEY" not in str(err.value)


@pytest.mark.parametrize("where", ["header", "body", "last", "truncated"])
def test_tampered_file_is_refused(keys, where):
    identity, recipient = keys
    blob = bytearray(ce.encrypt(SECRET, [recipient]))
    if where == "truncated":
        blob = blob[:-1]
    else:
        index = {"header": 40, "body": blob.index(b"\n---") + 60, "last": len(blob) - 1}[where]
        blob[index] ^= 0x01
    with pytest.raises(FediflowError, match="decryption failed"):
        ce.decrypt(bytes(blob), identity)


def test_not_an_encrypted_file_and_missing_key_are_named(keys, legacy):
    identity, recipient = keys
    with pytest.raises(FediflowError, match="not an age encrypted file"):
        ce.decrypt(b"apiVersion: v1\n", identity)
    with pytest.raises(FediflowError, match="give the age identity in private_key"):
        ce.decrypt(ce.encrypt(SECRET, [recipient]), None, legacy[1]["private_key"])
    with pytest.raises(FediflowError, match="old FFDRENC format .* legacy_private_key"):
        ce.decrypt(legacy[0], identity)


def test_old_ffdrenc_file_is_still_read(legacy):
    blob, meta = legacy
    assert blob.startswith(b"FFDRENC\x01")
    assert ce.decrypt(blob, None, meta["private_key"]).decode() == meta["plaintext"]
    with pytest.raises(FediflowError, match="wrong legacy_private_key, or the file was altered"):
        ce.decrypt(blob, None, base64.b64encode(b"\x01" * 32).decode())
    altered = bytearray(blob)
    altered[-3] ^= 0x01
    with pytest.raises(FediflowError, match="altered or truncated"):
        ce.decrypt(bytes(altered), None, meta["private_key"])
    altered = bytearray(blob)
    altered[7] = 2
    with pytest.raises(FediflowError, match="FFDRENC format version 2 is not supported"):
        ce.decrypt(bytes(altered), None, meta["private_key"])


@pytest.mark.parametrize("value, position", [
    ("msa14BH8BX3+OvtzzePM7e2oReW5RZL/QCmoSp7RqEw=", 0),  # an FFDRENC-era base64 key
    ("age1xyz", 0),
    ("AGE-SECRET-KEY-1" + "Q" * 58, 0),  # a private key given as recipient
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA", 1),
])
def test_recipients_are_checked_naming_the_option(keys, value, position):
    values = [keys[1], value] if position else [value]
    with pytest.raises(FediflowError, match=r"encrypt_to\[%d\] is not an age X25519 recipient" % position):
        ce.check_recipients(values)


def test_bad_checksum_and_identity_lines_are_refused(keys):
    identity, recipient = keys
    flipped = recipient[:-1] + ("q" if recipient[-1] != "q" else "p")
    with pytest.raises(FediflowError, match="encrypt_to: .* is not a valid age recipient"):
        ce.load_recipients([flipped])
    with pytest.raises(FediflowError, match="private_key: line 1 is not an age X25519 identity"):
        ce.load_identities("gHtc6eWJ/oXeSzbv/mEGNm0Z/nnqJSnoD0klGdbZuWU=")
    with pytest.raises(FediflowError, match="holds no age identity"):
        ce.load_identities("# public key: %s\n" % recipient)
    assert len(ce.load_identities(identity + ce.generate_identity()[0])) == 2


def test_debian_age_cli_opens_what_the_collection_wrote(tmp_path, keys):
    """What an operator does in a disaster: Debian's age CLI and the key file, no collection."""
    age = shutil.which("age")
    assert age, "Debian's age CLI is missing: run scripts/setup.sh"
    identity, recipient = keys
    key = tmp_path / "key.txt"
    key.write_text(identity)
    os.chmod(str(key), 0o600)
    enc = tmp_path / "db.yaml.enc"
    enc.write_bytes(ce.encrypt(SECRET, [recipient]))
    proc = subprocess.run([age, "-d", "-i", str(key), str(enc)], capture_output=True, check=False, timeout=30)
    assert proc.returncode == 0 and proc.stdout == SECRET, proc.stderr
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(ce.generate_identity()[0])
    refused = subprocess.run([age, "-d", "-i", str(wrong), str(enc)], capture_output=True, check=False, timeout=30)
    assert refused.returncode != 0 and refused.stdout == b""
    # and age-keygen's key file is what private_key takes
    made = tmp_path / "made.txt"
    subprocess.run(["age-keygen", "-o", str(made)], capture_output=True, check=True, timeout=30)
    public = subprocess.run(["age-keygen", "-y", str(made)], capture_output=True, check=True, text=True).stdout.strip()
    assert os.stat(str(made)).st_mode & 0o077 == 0
    assert ce.decrypt(ce.encrypt(SECRET, [public]), made.read_text()) == SECRET


def test_normalize_strips_server_fields_as_plain_data():
    obj = {"metadata": {"name": "app-config", "namespace": "fediflow", "uid": "u-1", "resourceVersion": "42",
                        "creationTimestamp": "2026-11-25T00:00:00Z", "generation": 3,
                        "managedFields": [{"manager": "kubectl"}], "labels": {"app": "x"},
                        "annotations": {"deployment.kubernetes.io/revision": "4"}},
           "data": {"A": "1"}, "status": {"replicas": 1}}
    out = ce.normalize(obj, "configmaps")
    assert out == {"apiVersion": "v1", "kind": "ConfigMap", "data": {"A": "1"},
                   "metadata": {"name": "app-config", "namespace": "fediflow", "labels": {"app": "x"}}}
    assert obj["metadata"]["uid"] == "u-1"  # the input is not modified
    again = dict(obj, metadata=dict(obj["metadata"], resourceVersion="43", uid="u-2"))
    assert ce.dump_yaml(ce.normalize(again, "configmaps")) == ce.dump_yaml(out)


def test_render_objects_marks_secrets_and_refuses_bad_names():
    rendered = ce.render_objects([("ns", "secrets", {"metadata": {"name": "db"}, "data": {"p": "eA=="}}),
                                  ("ns", "configmaps", {"metadata": {"name": "c"}})])
    assert rendered["k8s/ns/secrets/db.yaml.enc"]["secret"]
    assert not rendered["k8s/ns/configmaps/c.yaml"]["secret"]
    with pytest.raises(FediflowError, match="unusable name"):
        ce.render_objects([("ns", "configmaps", {"metadata": {"name": "../x"}})])


@pytest.mark.parametrize("change, message", [
    ({"dest": "relative"}, "dest must be an absolute directory path"),
    ({"kinds": ["pods"]}, "kinds: pods not supported"),
    ({"encrypt_to": None}, "encrypt_to .* is required to export secrets"),
    ({"encrypt_to": ["msa14BH8BX3+OvtzzePM7e2oReW5RZL/QCmoSp7RqEw="]}, r"encrypt_to\[0\] is not an age X25519 recipient"),
    ({"state": "decrypted", "src": "/"}, "private_key .* is required with state=decrypted"),
    ({"state": "decrypted", "src": "/", "private_key": "not-a-key"}, "private_key: line 1 is not an age"),
    ({"paths": ["etc/app"]}, "paths entries must be absolute"),
    ({"namespaces": [], "paths": []}, "nothing to export"),
    ({"state": "decrypted", "src": "/nonexistent"}, "src must be an existing absolute path"),
])
def test_bad_input_is_refused(tmp_path, keys, change, message):
    params = {"dest": str(tmp_path / "d"), "namespaces": ["fediflow"], "encrypt_to": keys[1]}
    params.update(change)
    with pytest.raises(FediflowError, match=message):
        ce.validate(params)


def _tree(tmp_path):
    etc = tmp_path / "etc" / "app"
    etc.mkdir(parents=True)
    (etc / "app.env").write_text("LOG_LEVEL=info\n")
    os.chmod(str(etc / "app.env"), 0o640)
    tf = tmp_path / "terraform"
    tf.mkdir()
    (tf / "terraform.tfstate").write_text(json.dumps({"password": "tf-secret-value"}))
    return etc, tf


def test_files_export_encrypts_secret_paths_and_is_idempotent(tmp_path, keys):
    private, public = keys
    etc, tf = _tree(tmp_path)
    dest = tmp_path / "stage"
    params = {"dest": str(dest), "paths": [str(etc), str(tf)], "secret_paths": [str(tf) + "/**/*.tfstate"],
              "encrypt_to": public}
    check = ce.export(params, check_mode=True)
    assert check["changed"] and not dest.exists()
    first = ce.export(params)
    assert first["changed"] and first["encrypted"] == first["encrypted_written"] == 1
    assert oct(os.stat(str(dest)).st_mode & 0o777) == "0o700"
    copied = dest / ("files" + str(etc)) / "app.env"
    assert copied.read_text() == "LOG_LEVEL=info\n" and os.stat(str(copied)).st_mode & 0o777 == 0o640
    enc = dest / ("files" + str(tf)) / "terraform.tfstate.enc"
    assert not (dest / ("files" + str(tf)) / "terraform.tfstate").exists()
    for root, _dirs, names in os.walk(str(dest)):
        for name in names:
            with open(os.path.join(root, name), "rb") as handle:
                assert b"tf-secret-value" not in handle.read()
    assert b"tf-secret-value" in ce.decrypt(enc.read_bytes(), private)
    before = {p: os.stat(str(dest / p)) for p in first["paths"]}
    second = ce.export(params)
    assert not second["changed"] and second["encrypted_written"] == 0, second["changed_paths"]
    assert {p: (s.st_mtime_ns, s.st_ino) for p, s in before.items()} == \
        {p: (os.stat(str(dest / p)).st_mtime_ns, os.stat(str(dest / p)).st_ino) for p in first["paths"]}

    (tf / "terraform.tfstate").write_text(json.dumps({"password": "rotated"}))
    (etc / "app.env").unlink()
    third = ce.export(params, check_mode=True)
    assert third["changed"] and third["changed_paths"]["changed"] == ["files%s/terraform.tfstate.enc" % tf, "index.json"]
    assert third["changed_paths"]["removed"] == ["files%s/app.env" % etc]
    assert "- files%s/app.env" % etc in third["diff"]["prepared"]
    ce.export(params)
    assert ce.decrypt(enc.read_bytes(), private) == b'{"password": "rotated"}'
    assert not copied.exists() and not copied.parent.exists()


def test_new_recipient_re_encrypts(tmp_path, keys):
    _etc, tf = _tree(tmp_path)
    params = {"dest": str(tmp_path / "stage"), "secret_paths": [str(tf / "*.tfstate")], "encrypt_to": keys[1]}
    ce.export(params)
    new_private, new_public = ce.generate_identity()
    moved = ce.export(dict(params, encrypt_to=new_public))
    assert moved["changed"] and moved["encrypted_written"] == 1
    enc = tmp_path / "stage" / ("files" + str(tf)) / "terraform.tfstate.enc"
    assert b"tf-secret-value" in ce.decrypt(enc.read_bytes(), new_private)


def test_decrypt_tree(tmp_path, keys):
    private, public = keys
    _etc, tf = _tree(tmp_path)
    stage = tmp_path / "stage"
    ce.export({"dest": str(stage), "secret_paths": [str(tf / "*.tfstate")], "encrypt_to": public})
    out = tmp_path / "plain"
    result = ce.export({"state": "decrypted", "src": str(stage), "dest": str(out), "private_key": private})
    rel = "files%s/terraform.tfstate" % tf
    assert result["changed"] and result["paths"] == [rel] and result["decrypted"] == 1
    assert (out / rel).read_text() == json.dumps({"password": "tf-secret-value"})
    assert os.stat(str(out / rel)).st_mode & 0o777 == 0o600
    again = ce.export({"state": "decrypted", "src": str(stage), "dest": str(out), "private_key": private})
    assert not again["changed"]
    wrong = ce.generate_identity()[0]
    with pytest.raises(FediflowError, match="terraform.tfstate.enc: decryption failed"):
        ce.export({"state": "decrypted", "src": str(stage), "dest": str(tmp_path / "x"), "private_key": wrong})
    assert not (tmp_path / "x").exists()


def test_old_export_is_restored_and_re_encrypted_to_age(tmp_path, keys, legacy):
    """An export of the FFDRENC era (its file and format-1 sidecar): state=decrypted reads a tree
    holding both formats, and the next export writes the secret in age, nothing in FFDRENC."""
    identity, recipient = keys
    blob, meta = legacy
    _etc, tf = _tree(tmp_path)
    stage = tmp_path / "stage"
    params = {"dest": str(stage), "secret_paths": [str(tf / "*.tfstate")], "encrypt_to": recipient}
    ce.export(params)
    rel = "files%s/terraform.tfstate.enc" % tf
    old = stage / "k8s" / "fediflow" / "secrets" / "db.yaml.enc"
    old.parent.mkdir(parents=True)
    old.write_bytes(blob)
    out = tmp_path / "plain"
    both = {"state": "decrypted", "src": str(stage), "dest": str(out), "private_key": identity,
            "legacy_private_key": meta["private_key"]}
    result = ce.export(both)
    assert result["formats"] == {"age": [rel[:-4]], "ffdrenc": ["k8s/fediflow/secrets/db.yaml"]}, result
    assert (out / "k8s/fediflow/secrets/db.yaml").read_text() == meta["plaintext"]
    assert meta["private_key"] not in json.dumps(result)
    with pytest.raises(FediflowError, match="db.yaml.enc: the file is in the old FFDRENC format"):
        ce.export(dict(both, legacy_private_key=None, dest=str(tmp_path / "y")))

    # the FFDRENC era's sidecar (format 1) no longer matches: the secret is re-encrypted to age
    old.unlink()
    (stage / rel).write_bytes(blob)
    side = stage / ".fingerprints" / (rel + ".json")
    side.write_text(json.dumps(dict(json.loads(side.read_text()), version=1)))
    assert ce.export(params, check_mode=True)["changed_paths"]["changed"] == [rel]
    again = ce.export(params)
    assert again["encrypted_written"] == 1 and (stage / rel).read_bytes().startswith(b"age-encryption.org/v1\n")
    assert not ce.export(params)["changed"]
    index = json.loads((stage / "index.json").read_text())
    assert index["encryption"] == "age" and index["encrypt_to"] == [recipient] and index["version"] == 2
