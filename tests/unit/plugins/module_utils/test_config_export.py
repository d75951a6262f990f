# -*- coding: utf-8 -*-
"""config_export as plain data: the encrypted file format (round trip, wrong key, tampering,
version byte), object normalisation, and exports of real files into a temporary directory.
The Kubernetes side is proven by the integration tier against the lab's API double."""
from __future__ import annotations

import base64
import json
import os

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import config_export as ce
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

SECRET = b"s3cr3t-db-password-\xf0\x9f\x94\x91"


@pytest.fixture(scope="module")
def keys():
    return ce.generate_keypair()


def test_round_trip_and_format(keys):
    private, public = keys
    blob = ce.encrypt(SECRET, public)
    assert blob[:7] == b"FFDRENC" and blob[7] == ce.VERSION == 1
    assert len(blob) == ce.HEADER_LEN + len(SECRET) + 16
    assert SECRET not in blob
    assert ce.decrypt(blob, private) == SECRET


def test_fresh_ephemeral_key_and_nonce_per_encryption(keys):
    _private, public = keys
    one, two = ce.encrypt(SECRET, public), ce.encrypt(SECRET, public)
    assert one[8:40] != two[8:40] and one[40:52] != two[40:52] and one != two


def test_wrong_key_fails(keys):
    _private, public = keys
    other_private, _other_public = ce.generate_keypair()
    with pytest.raises(FediflowError, match="wrong private key, or the file was altered"):
        ce.decrypt(ce.encrypt(SECRET, public), other_private)


@pytest.mark.parametrize("where", [0, 7, 8, 45, ce.HEADER_LEN, -1])
def test_any_altered_byte_fails(keys, where):
    private, public = keys
    blob = bytearray(ce.encrypt(SECRET, public))
    blob[where] ^= 0x01
    with pytest.raises(FediflowError):
        ce.decrypt(bytes(blob), private)


def test_truncated_fails(keys):
    private, public = keys
    blob = ce.encrypt(SECRET, public)
    with pytest.raises(FediflowError, match="altered or truncated"):
        ce.decrypt(blob[:-1], private)
    with pytest.raises(FediflowError, match="too short"):
        ce.decrypt(blob[:20], private)


def test_unknown_version_is_named(keys):
    private, public = keys
    blob = bytearray(ce.encrypt(SECRET, public))
    blob[7] = 2
    with pytest.raises(FediflowError, match="format version 2 is not supported"):
        ce.decrypt(bytes(blob), private)


def test_keys_are_checked_and_pem_private_keys_work(keys):
    from cryptography.hazmat.primitives import serialization
    private, public = keys
    with pytest.raises(FediflowError, match="encrypt_to must be a base64 raw 32-byte X25519 key"):
        ce.load_public_key("bm90IGEga2V5")
    key = ce.load_private_key(private)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    assert ce.decrypt(ce.encrypt(SECRET, public), pem) == SECRET


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
    new_private, new_public = ce.generate_keypair()
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
    wrong = base64.b64encode(b"\x01" * 32).decode()
    with pytest.raises(FediflowError, match="terraform.tfstate.enc: decryption failed"):
        ce.export({"state": "decrypted", "src": str(stage), "dest": str(tmp_path / "x"), "private_key": wrong})
