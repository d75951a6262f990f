"""The AWS options validate_certs / aws_ca_bundle (amazon.aws's names) against a real HTTPS endpoint: a
private moto_server (never the lab's) serving a certificate signed by a throwaway test CA (tls_fixtures).
fediflow.dr.s3_snapshot stands for every AWS-facing module (they share module_utils/aws.client): with the
right CA bundle it stores a snapshot, with another CA it fails naming the certificate problem and stores
nothing, with validate_certs=false it is told nothing is verified and still works, and a bundle that is not
a file is refused before any request."""
import os
import subprocess
import sys
import tempfile

import boto3
import pytest

from doubles_fixtures import free_port
from lab_fixtures import module, poll
from tls_fixtures import make_pki

CREDS = {"access_key": "testing-tls", "secret_key": "testing-tls-secret", "region": "us-east-1"}


@pytest.fixture(scope="module")
def https_moto():
    pki = make_pki()
    work = tempfile.mkdtemp(prefix="fediflow-aws-tls-", dir="/var/tmp")
    paths = {}
    for name in ("ca", "other_ca", "server_cert", "server_key"):
        paths[name] = os.path.join(work, name + ".pem")
        with open(paths[name], "wb") as handle:
            handle.write(pki[name])
    port = free_port()
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p",
                             str(port), "-c", paths["server_cert"], "-k", paths["server_key"]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = "https://127.0.0.1:%d" % port
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", verify=paths["ca"],
                      aws_access_key_id=CREDS["access_key"], aws_secret_access_key=CREDS["secret_key"])

    def up():
        try:
            s3.list_buckets()
            return True
        except Exception:  # pylint: disable=broad-except
            return proc.poll() is not None  # died: stop polling, asserted below
    try:
        assert poll(up, 30, interval=0.1) and proc.poll() is None, "moto_server (TLS) did not start on %d" % port
        s3.create_bucket(Bucket="tls-bucket")
        yield {"endpoint": endpoint, "s3": s3, "paths": paths, "work": work}
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["rm", "-rf", "--", work], check=False)


def _snapshot(moto, src, **extra):
    args = dict(CREDS, endpoint_url=moto["endpoint"], state="present", src=str(src), s3_bucket="tls-bucket",
                s3_prefix="tls")
    args.update(extra)
    return module("fediflow.dr.s3_snapshot", args)


def _stored(moto):
    return moto["s3"].list_objects_v2(Bucket="tls-bucket").get("KeyCount", 0)


def test_the_right_ca_bundle_verifies_the_endpoint(https_moto, tmp_path):
    (tmp_path / "a.txt").write_text("hello over verified TLS\n")
    wrong = _snapshot(https_moto, tmp_path, aws_ca_bundle=https_moto["paths"]["other_ca"])
    assert wrong.get("failed") and "certificate verify failed" in wrong["msg"].lower(), wrong
    assert _stored(https_moto) == 0  # nothing half-written
    res = _snapshot(https_moto, tmp_path, aws_ca_bundle=https_moto["paths"]["ca"])
    assert not res.get("failed"), res.get("msg")
    assert res["changed"] and _stored(https_moto) > 0
    assert CREDS["secret_key"] not in str(res)


def test_validate_certs_false_skips_verification_and_bad_bundles_are_refused(https_moto, tmp_path):
    (tmp_path / "b.txt").write_text("unverified\n")
    res = _snapshot(https_moto, tmp_path, validate_certs=False, s3_prefix="tls-unverified")
    assert not res.get("failed"), res.get("msg")
    before = _stored(https_moto)
    for extra, message in (({"aws_ca_bundle": str(tmp_path / "missing.pem")}, "aws_ca_bundle"),
                           ({"aws_ca_bundle": https_moto["paths"]["ca"], "validate_certs": False},
                            "validate_certs is false")):
        refused = _snapshot(https_moto, tmp_path, s3_prefix="tls-refused", **extra)
        assert refused.get("failed") and message in refused["msg"], refused
    assert _stored(https_moto) == before
