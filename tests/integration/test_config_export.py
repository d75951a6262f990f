"""fediflow.dr.config_export against the lab, driven through ansible like a user does.

The Kubernetes API here is the lab's local HTTP double (no API server can run on this
machine), reached with the official kubernetes client through the lab's kubeconfig; S3 is
the lab's moto. The outcome is checked independently: the kubernetes client for what the API
holds, the bytes of every exported file and S3 object for the secret's plaintext, and the
decryption done by Debian's age CLI with a key made by age-keygen (what an operator has in a
disaster), not by the collection's own code.
"""
import base64
import os
import shutil
import subprocess
import uuid

import kubernetes
import pytest
import yaml

from lab_fixtures import module, s3_endpoint
from snapshot_fixtures import repo  # noqa: F401 pylint: disable=unused-import

MODULE = "fediflow.dr.config_export"
NAMESPACE = "fediflow"


def _decrypt(blob, key_file):
    """``age -d -i key_file`` (Debian's age), the ciphertext on stdin: the plaintext bytes."""
    assert blob.startswith(b"age-encryption.org/v1\n"), blob[:30]
    proc = subprocess.run([shutil.which("age") or "age", "-d", "-i", str(key_file)], input=blob, capture_output=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def _all_bytes(root):
    for base, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                yield path, handle.read()


@pytest.fixture
def k8s(lab):
    p = lab["primary"]
    kubeconfig = os.path.join(p["fediflow_lab_dir"], "run", "kubeconfig-%s" % p["fediflow_region"])
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    core = kubernetes.client.CoreV1Api(api)
    tag = "cfgexp-%s" % uuid.uuid4().hex[:10]
    plaintext = "pw-%s-%s" % (tag, uuid.uuid4().hex)
    labels = {"fediflow-test": tag}
    core.create_namespaced_secret(NAMESPACE, {"metadata": {"name": tag, "labels": labels},
                                              "stringData": {"password": plaintext}})
    core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": tag, "labels": labels},
                                                  "data": {"LOG_LEVEL": "info"}})
    yield {"kubeconfig": kubeconfig, "core": core, "tag": tag, "plaintext": plaintext,
           "selector": "fediflow-test=%s" % tag}
    for delete in (core.delete_namespaced_secret, core.delete_namespaced_config_map):
        try:
            delete(tag, NAMESPACE)
        except kubernetes.client.rest.ApiException:
            pass
    api.close()


@pytest.fixture
def keypair(tmp_path):
    """(private key file, recipient) made by Debian's age-keygen, as an operator makes them."""
    key = tmp_path / "config-backup-key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], capture_output=True, check=True, timeout=60)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], capture_output=True, check=True, text=True,
                               timeout=60).stdout.strip()
    return key, recipient


def test_export_encrypts_secrets_matches_the_api_and_is_idempotent(k8s, keypair, tmp_path):
    private, public = keypair
    dest = tmp_path / "config-staging"
    args = {"dest": str(dest), "namespaces": [NAMESPACE], "kubeconfig": k8s["kubeconfig"], "encrypt_to": public}

    first = module(MODULE, args)
    assert first["changed"] and not first.get("failed"), first
    assert first["objects"]["secrets"] >= 1 and first["objects"]["deployments"] == 3, first
    assert os.stat(str(dest)).st_mode & 0o777 == 0o700
    assert first["duration_s"] > 0

    plain = k8s["plaintext"].encode()
    encoded = base64.b64encode(plain)
    for path, data in _all_bytes(str(dest)):
        assert plain not in data and encoded not in data, "secret in clear in %s" % path
    enc = dest / "k8s" / NAMESPACE / "secrets" / ("%s.yaml.enc" % k8s["tag"])
    assert not (dest / "k8s" / NAMESPACE / "secrets" / ("%s.yaml" % k8s["tag"])).exists()
    secret = yaml.safe_load(_decrypt(enc.read_bytes(), private))
    assert base64.b64decode(secret["data"]["password"]) == plain
    assert secret["kind"] == "Secret" and "resourceVersion" not in secret["metadata"]

    for name in ("app-config", k8s["tag"]):
        live = k8s["core"].read_namespaced_config_map(name, NAMESPACE)
        exported = yaml.safe_load((dest / "k8s" / NAMESPACE / "configmaps" / ("%s.yaml" % name)).read_text())
        assert exported["data"] == live.data and exported["metadata"]["name"] == live.metadata.name
        assert exported["metadata"].get("labels") == live.metadata.labels
        assert set(exported["metadata"]) <= {"name", "namespace", "labels", "annotations"}

    # idempotency on this test's own objects (others may scale deployments meanwhile)
    own = dict(args, dest=str(tmp_path / "own"), label_selector=k8s["selector"], kinds=["configmaps", "secrets"])
    assert module(MODULE, own)["changed"]
    again = module(MODULE, own)
    assert not again["changed"] and again["encrypted_written"] == 0, again
    assert not module(MODULE, own, check_mode=True)["changed"]

    k8s["core"].patch_namespaced_secret(k8s["tag"], NAMESPACE, {"stringData": {"password": "rotated"}})
    predicted = module(MODULE, own, check_mode=True, diff=True)
    rel = "k8s/%s/secrets/%s.yaml.enc" % (NAMESPACE, k8s["tag"])
    assert predicted["changed"] and predicted["changed_paths"]["changed"] == [rel], predicted
    assert "~ %s" % rel in predicted["diff"]["prepared"]
    rotated = module(MODULE, own)
    assert rotated["changed"] and rotated["encrypted_written"] == 1
    secret = yaml.safe_load(_decrypt((tmp_path / "own" / rel).read_bytes(), private))
    assert base64.b64decode(secret["data"]["password"]) == b"rotated"


def test_snapshot_of_the_export_holds_no_plaintext_in_s3(k8s, keypair, repo, tmp_path):  # noqa: F811
    private, public = keypair
    dest = tmp_path / "config-staging"
    result = module(MODULE, {"dest": str(dest), "namespaces": [NAMESPACE], "kubeconfig": k8s["kubeconfig"],
                             "encrypt_to": public, "label_selector": k8s["selector"]})
    assert result["changed"] and result["encrypted"] == 1, result
    first = repo.run(state="present", src=str(dest), exclude=["/.fingerprints"])
    assert first["changed"] and first["snapshot_written"], first
    manifest = repo.manifest(first["snapshot_id"])
    paths = {f["path"] for f in manifest["files"]}
    assert "k8s/%s/secrets/%s.yaml.enc" % (NAMESPACE, k8s["tag"]) in paths
    assert not any(p.startswith(".fingerprints") for p in paths)

    plain = k8s["plaintext"].encode()
    encoded = base64.b64encode(plain)
    keys = list(repo.keys("objects")) + list(repo.keys("snapshots"))
    assert keys
    for key in keys:
        body = repo.s3.get_object(Bucket=repo.bucket, Key=key)["Body"].read()
        assert plain not in body and encoded not in body, "secret in clear in s3://%s/%s" % (repo.bucket, key)

    # unchanged configuration: the export leaves the files alone, so no new snapshot
    assert not module(MODULE, {"dest": str(dest), "namespaces": [NAMESPACE], "kubeconfig": k8s["kubeconfig"],
                               "encrypt_to": public, "label_selector": k8s["selector"]})["changed"]
    again = repo.run(state="present", src=str(dest), exclude=["/.fingerprints"])
    assert not again["changed"] and again["snapshot_id"] == first["snapshot_id"], again

    # restore from S3 and decrypt with the private key (the restore path)
    restored = repo.run(state="restored", dest=str(tmp_path / "restore"))
    assert not restored.get("failed"), restored
    rel = "k8s/%s/secrets/%s.yaml.enc" % (NAMESPACE, k8s["tag"])
    by_hand = yaml.safe_load(_decrypt((tmp_path / "restore" / rel).read_bytes(), private))
    assert base64.b64decode(by_hand["data"]["password"]) == plain
    identity = private.read_text()
    secret_line = identity.strip().splitlines()[-1]
    out = module(MODULE, {"state": "decrypted", "src": str(tmp_path / "restore"), "dest": str(tmp_path / "plain"),
                          "private_key": identity})
    assert out["changed"] and out["decrypted"] == 1 and out["formats"] == {"age": [rel[:-4]]}, out
    assert secret_line not in str(out)
    secret = yaml.safe_load((tmp_path / "plain" / "k8s" / NAMESPACE / "secrets" / ("%s.yaml" % k8s["tag"])).read_text())
    assert base64.b64decode(secret["data"]["password"]) == plain


@pytest.mark.slow
def test_backup_role_exports_and_snapshots_the_configuration(lab, k8s, tmp_path):
    """playbooks/backup.yml with only the configuration backup on (inventory values given as
    extra vars): the snapshot lands under config/<region>/ and holds the secret encrypted only, to
    the lab inventory's recipient, whose private key lab_up made in the lab directory (0600)."""
    import json
    import stat
    import boto3
    from lab_fixtures import playbook, recap
    p = lab["primary"]
    private = os.path.join(p["fediflow_lab_dir"], "age", "config-backup.txt")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    # under config/: the backup identity may write there only (the lab S3 enforces the IAM policies)
    prefix = "config/test-%s/%s" % (uuid.uuid4().hex[:8], p["fediflow_region"])
    extra = {"fediflow_kubeconfig": k8s["kubeconfig"],
             "backup_dest": str(tmp_path / "backups"), "backup_config_s3_prefix": prefix,
             "backup_logical": False, "backup_physical": False, "backup_wal_check": False, "backup_media": False}
    proc, _took = playbook("backup.yml", "--limit", "pg-%s" % p["fediflow_region"], "-e", json.dumps(extra))
    assert "Export the configuration" in proc.stdout
    # the schedule's config-only run (docs/schedules.md): --tags backup_config, nothing else runs
    tagged, _took = playbook("backup.yml", "--limit", "pg-%s" % p["fediflow_region"], "--tags", "backup_config",
                             "-e", json.dumps(dict(extra, backup_logical=True, backup_physical=True)))
    assert "Export the configuration" in tagged.stdout and "Logical backup" not in tagged.stdout
    assert "Configuration backup" in proc.stdout
    s3 = boto3.client("s3", endpoint_url=s3_endpoint(p), region_name=p["fediflow_region"],
                      aws_access_key_id=p["fediflow_aws_access_key"], aws_secret_access_key=p["fediflow_aws_secret_key"])
    listed = s3.list_objects_v2(Bucket=p["fediflow_backup_bucket"], Prefix=prefix + "/").get("Contents", [])
    snapshots = [o["Key"] for o in listed if "/snapshots/" in o["Key"]]
    assert len(snapshots) == 1, [o["Key"] for o in listed]
    manifest = json.loads(s3.get_object(Bucket=p["fediflow_backup_bucket"], Key=snapshots[0])["Body"].read())
    files = {f["path"]: f for f in manifest["files"]}
    enc = "k8s/%s/secrets/%s.yaml.enc" % (NAMESPACE, k8s["tag"])
    assert enc in files and "k8s/%s/configmaps/app-config.yaml" % NAMESPACE in files
    assert manifest["tags"]["kind"] == "config" and not any(f.startswith(".fingerprints") for f in files)
    plain = k8s["plaintext"].encode()
    for obj in listed:
        body = s3.get_object(Bucket=p["fediflow_backup_bucket"], Key=obj["Key"])["Body"].read()
        assert plain not in body and base64.b64encode(plain) not in body, obj["Key"]
    blob = s3.get_object(Bucket=p["fediflow_backup_bucket"],
                         Key="%s/objects/%s/%s" % (prefix, files[enc]["sha256"][:2], files[enc]["sha256"]))["Body"].read()
    assert base64.b64decode(yaml.safe_load(_decrypt(blob, private))["data"]["password"]) == plain

    playbook("backup.yml", "--limit", "pg-%s" % p["fediflow_region"], "-e", json.dumps(extra))
    listed = s3.list_objects_v2(Bucket=p["fediflow_backup_bucket"], Prefix=prefix + "/snapshots/").get("Contents", [])
    assert len(listed) == 1, "an unchanged configuration wrote a new snapshot"
    checked, _took = playbook("backup.yml", "--limit", "pg-%s" % p["fediflow_region"], "--tags", "backup_config",
                              "--check", "-e", json.dumps(extra))
    assert recap(checked.stdout)["pg-%s" % p["fediflow_region"]]["changed"] == 0, checked.stdout[-3000:]
