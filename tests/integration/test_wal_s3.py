"""The WAL archive command's S3 backend against the lab's real moto, run exactly as PostgreSQL
runs it: ``runuser -u postgres -- /usr/bin/python3 fediflow_wal.py --config FILE push %p %f``
with the system Python (no boto3), the script and its config in a postgres-readable directory
under /var/tmp. Every outcome is checked independently with boto3.

Moto accepts any signature by default, so the lab's moto cannot tell a wrong secret key from
the right one. The credential checks therefore also run against a second, private moto that
this module starts with authentication on (``INITIAL_NO_AUTH_ACTION_COUNT``: an IAM user with
an s3:* policy is created first); it recomputes every signature with botocore, which makes it
an independent check of our SigV4 signing too.
"""
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from lab_fixtures import BIN, ROOT, poll, s3_endpoint

SEGMENT_SIZE = 16 * 1024 * 1024
SEG = "000000010000000000000001"


@pytest.fixture(scope="module")
def tools():
    """The command and its config/segment directory, readable by postgres (tmp_path is not)."""
    top = tempfile.mkdtemp(prefix="fediflow-wal-s3-", dir="/var/tmp")
    os.chmod(top, 0o755)
    for src in (ROOT / "plugins" / "module_utils" / "walarchive.py",
                ROOT / "roles" / "replication" / "files" / "fediflow_wal.py"):
        shutil.copy(str(src), top)
        os.chmod(os.path.join(top, src.name), 0o644)
    # as the replication role installs it: byte-compiled, since postgres cannot write __pycache__ there
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", top], check=True)
    work = os.path.join(top, "work")
    os.mkdir(work, 0o700)
    pg = pwd.getpwnam("postgres")
    os.chown(work, pg.pw_uid, pg.pw_gid)
    yield {"dir": top, "work": work, "script": os.path.join(top, "fediflow_wal.py"), "uid": pg.pw_uid,
           "gid": pg.pw_gid}
    shutil.rmtree(top)


@pytest.fixture(scope="module")
def conn(lab):
    p = lab["primary"]
    return {"endpoint_url": s3_endpoint(p), "region": p["fediflow_region"],
            "access_key": p["fediflow_aws_access_key"], "secret_key": p["fediflow_aws_secret_key"],
            "bucket": p["fediflow_backup_bucket"]}


@pytest.fixture(scope="module")
def s3(conn):
    return boto3.client("s3", endpoint_url=conn["endpoint_url"], region_name=conn["region"],
                        aws_access_key_id=conn["access_key"], aws_secret_access_key=conn["secret_key"])


@pytest.fixture
def prefix(s3, conn):
    """A fresh key prefix per test, removed from the lab's bucket afterwards (every version: the
    bucket is versioned). The private moto of the credential test is thrown away whole."""
    name = "wal-test/%s" % uuid.uuid4().hex[:12]
    yield name
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=conn["bucket"], Prefix=name + "/"):
        doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if doomed:
            s3.delete_objects(Bucket=conn["bucket"], Delete={"Objects": doomed, "Quiet": True})


def _own(tools, path, mode=0o600):
    os.chown(path, tools["uid"], tools["gid"])
    os.chmod(path, mode)
    return path


def config(tools, conn, prefix, **overrides):
    cfg = {"backend": "s3", "bucket": conn["bucket"], "prefix": prefix, "endpoint_url": conn["endpoint_url"],
           "region": conn["region"], "access_key": conn["access_key"], "secret_key": conn["secret_key"],
           "sse": "AES256"}
    cfg.update(overrides)
    path = os.path.join(tools["work"], "wal-%s.json" % uuid.uuid4().hex[:8])
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({k: v for k, v in cfg.items() if v is not None}, handle)
    return _own(tools, path)


def segment(tools, content, name=None):
    path = os.path.join(tools["work"], name or "seg-%s" % uuid.uuid4().hex[:8])
    with open(path, "wb") as handle:
        handle.write(content)
    return _own(tools, path)


def wal(tools, cfg, *args, env=None):
    """Run the command as PostgreSQL does; the result carries ``took`` (seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "/usr/bin/python3", tools["script"], "--config", cfg,
                           *args], capture_output=True, text=True, timeout=120, check=False, env=env, cwd="/")
    proc.took = time.monotonic() - t0
    return proc


@pytest.mark.slow
def test_push_archives_a_real_sized_segment(tools, conn, s3, prefix):
    data = os.urandom(SEGMENT_SIZE)
    proc = wal(tools, config(tools, conn, prefix), "push", segment(tools, data), SEG)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    head = s3.head_object(Bucket=conn["bucket"], Key="%s/%s" % (prefix, SEG))
    assert head["ContentLength"] == SEGMENT_SIZE
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    body = s3.get_object(Bucket=conn["bucket"], Key="%s/%s" % (prefix, SEG))["Body"].read()
    assert body == data
    print("push of one 16 MiB segment as postgres: %.3fs" % proc.took)


def test_repush_identical_succeeds_and_different_contents_are_refused(tools, conn, s3, prefix):
    cfg = config(tools, conn, prefix)
    data = os.urandom(65536)
    src = segment(tools, data)
    assert wal(tools, cfg, "push", src, SEG).returncode == 0
    key = "%s/%s" % (prefix, SEG)
    before = s3.head_object(Bucket=conn["bucket"], Key=key)
    proc = wal(tools, cfg, "push", src, SEG)
    assert (proc.returncode, proc.stderr) == (0, "")
    proc = wal(tools, cfg, "push", segment(tools, os.urandom(65536)), SEG)
    assert proc.returncode == 1
    assert "already archived with different contents" in proc.stderr and "refusing to overwrite" in proc.stderr
    assert proc.stderr.count("\n") == 1
    after = s3.head_object(Bucket=conn["bucket"], Key=key)
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    assert s3.get_object(Bucket=conn["bucket"], Key=key)["Body"].read() == data


def _load_walarchive(tools):
    spec = importlib.util.spec_from_file_location("walarchive_under_test", os.path.join(tools["dir"], "walarchive.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_process(walarchive, cfg_path, archive_class=None):
    """The S3 backend driven from this process (same file, same config) for what a CLI run cannot show."""
    cfg = walarchive.load_config(cfg_path)
    return (archive_class or walarchive.S3Archive)(cfg, walarchive.resolve_credentials(cfg, {}, lambda: None))


def test_racing_writer_is_never_overwritten(tools, conn, s3, prefix):
    """Another writer creates the key between our HEAD and our PUT: the conditional create
    (If-None-Match: *) gets 412 from S3, and the push compares instead of overwriting."""
    walarchive = _load_walarchive(tools)

    class LateArchive(walarchive.S3Archive):
        """Its first HEAD answers as it would have just before the other writer's PUT."""
        raced = False

        def head(self, key):
            if not self.raced:
                self.raced = True
                return None
            return super().head(key)

    cfg = config(tools, conn, prefix)
    key = "%s/%s" % (prefix, SEG)
    theirs = os.urandom(4096)
    s3.put_object(Bucket=conn["bucket"], Key=key, Body=theirs,
                  Metadata={"sha256": hashlib.sha256(theirs).hexdigest()})
    archive = _in_process(walarchive, cfg, LateArchive)
    with pytest.raises(walarchive.ArchiveError, match="already archived with different contents"):
        archive.push(segment(tools, os.urandom(4096)), SEG)
    assert s3.get_object(Bucket=conn["bucket"], Key=key)["Body"].read() == theirs
    archive.close()
    archive = _in_process(walarchive, cfg, LateArchive)
    assert archive.push(segment(tools, theirs), SEG) == "already-archived"
    archive.close()


def test_fetch_round_trip_missing_and_corrupt(tools, conn, s3, prefix):
    cfg = config(tools, conn, prefix)
    data = os.urandom(SEGMENT_SIZE)
    assert wal(tools, cfg, "push", segment(tools, data), SEG).returncode == 0
    dest = os.path.join(tools["work"], "RECOVERYXLOG")
    proc = wal(tools, cfg, "fetch", SEG, dest)
    assert (proc.returncode, proc.stderr) == (0, "")
    with open(dest, "rb") as handle:
        assert handle.read() == data
    assert not [n for n in os.listdir(tools["work"]) if "fediflow-tmp" in n]
    os.unlink(dest)
    proc = wal(tools, cfg, "fetch", "000000010000000000000099", dest)
    assert (proc.returncode, proc.stderr) == (1, "fediflow-wal fetch: 000000010000000000000099 is not in the archive\n")
    assert not os.path.exists(dest)
    # an object whose bytes do not match its recorded sha256 is refused, nothing is left behind
    s3.put_object(Bucket=conn["bucket"], Key="%s/00000002.history" % prefix, Body=b"1\t0/3000000\tno recovery target\n",
                  Metadata={"sha256": "0" * 64})
    proc = wal(tools, cfg, "fetch", "00000002.history", dest)
    # a hard error, not "not in the archive": restore_command exits > 125 so that an archive recovery stops
    # instead of taking it for the end of the archive (walarchive.EXIT_ABORT)
    assert proc.returncode == 255 and "is corrupt" in proc.stderr
    assert not os.path.exists(dest) and not [n for n in os.listdir(tools["work"]) if "fediflow-tmp" in n]


def test_status_reports_the_newest_whole_segment(tools, conn, s3, prefix):
    cfg = config(tools, conn, prefix)
    for name in ("000000010000000000000002", "000000010000000000000003", "00000002.history",
                 "000000010000000000000003.00000028.backup"):
        assert wal(tools, cfg, "push", segment(tools, name.encode()), name).returncode == 0
    proc = wal(tools, cfg, "status")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["segments"] == 2 and status["last_segment"] == "000000010000000000000003"
    last = s3.head_object(Bucket=conn["bucket"], Key="%s/000000010000000000000003" % prefix)["LastModified"]
    assert abs(status["last_archived_at"] - last.timestamp()) < 1.0
    assert 0 <= status["age_s"] < 120
    # the same through ListObjectsV2 pages of two keys (continuation tokens)
    archive = _in_process(_load_walarchive(tools), cfg)
    assert len(archive.list_objects(page_size=2)) == 4
    archive.close()


def test_credentials_from_the_environment(tools, conn, s3, prefix):
    cfg = config(tools, conn, prefix, access_key=None, secret_key=None)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=conn["access_key"], AWS_SECRET_ACCESS_KEY=conn["secret_key"],
               AWS_EC2_METADATA_DISABLED="true")
    proc = wal(tools, cfg, "push", segment(tools, b"env"), SEG, env=env)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert s3.head_object(Bucket=conn["bucket"], Key="%s/%s" % (prefix, SEG))["ContentLength"] == 3
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    proc = wal(tools, cfg, "push", segment(tools, b"none"), "000000010000000000000002", env=env)
    assert proc.returncode == 1 and "no AWS credentials" in proc.stderr


def test_config_with_credentials_must_be_private(tools, conn, prefix):
    cfg = config(tools, conn, prefix)
    os.chmod(cfg, 0o644)
    proc = wal(tools, cfg, "push", segment(tools, b"x"), SEG)
    assert proc.returncode == 1 and "readable by group/others" in proc.stderr
    assert conn["secret_key"] not in proc.stderr


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_fails_fast_with_one_line(tools, conn, prefix):
    cfg = config(tools, conn, prefix, endpoint_url="http://127.0.0.1:%d" % _free_port())
    proc = wal(tools, cfg, "push", segment(tools, os.urandom(SEGMENT_SIZE)), SEG)
    assert proc.returncode == 1
    assert "cannot talk to S3" in proc.stderr and "gave up after 4 attempts" in proc.stderr
    assert proc.stderr.count("\n") == 1 and conn["secret_key"] not in proc.stderr
    assert proc.took < 5, proc.took


@pytest.fixture(scope="module")
def auth_moto(tools):
    """A private moto that checks signatures: its first 4 calls (unauthenticated) make an IAM
    user with an s3:* policy and a bucket; every later call must be signed with that key."""
    port = _free_port()
    endpoint = "http://127.0.0.1:%d" % port
    log = open(os.path.join(tools["dir"], "moto-auth.log"), "wb")
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4"))

    def up():
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):
                return True
        except OSError:
            return proc.poll() is not None
    try:
        assert poll(up, timeout=30) and proc.poll() is None, "private moto did not start"
        boot = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "boot",
                "aws_secret_access_key": "boot"}
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="wal-archiver")
        key = iam.create_access_key(UserName="wal-archiver")["AccessKey"]
        iam.put_user_policy(UserName="wal-archiver", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                          aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket="wal-auth")
        yield {"endpoint_url": endpoint, "region": "us-east-1", "bucket": "wal-auth", "access_key": key["AccessKeyId"],
               "secret_key": key["SecretAccessKey"], "s3": s3}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_signatures_are_verified_and_a_wrong_secret_fails_clearly(tools, auth_moto, prefix):
    s3 = auth_moto["s3"]
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):  # the private moto does check
        boto3.client("s3", endpoint_url=auth_moto["endpoint_url"], region_name="us-east-1",
                     aws_access_key_id=auth_moto["access_key"], aws_secret_access_key="wrong").list_buckets()
    good = config(tools, auth_moto, prefix)
    data = os.urandom(SEGMENT_SIZE)
    proc = wal(tools, good, "push", segment(tools, data), SEG)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert s3.head_object(Bucket="wal-auth", Key="%s/%s" % (prefix, SEG))["Metadata"]["sha256"] == \
        hashlib.sha256(data).hexdigest()
    dest = os.path.join(tools["work"], "from-auth")
    assert wal(tools, good, "fetch", SEG, dest).returncode == 0
    with open(dest, "rb") as handle:
        assert handle.read() == data
    wrong = "Wr0ng" + auth_moto["secret_key"][5:]
    bad = config(tools, auth_moto, prefix, secret_key=wrong)
    for args in (("push", segment(tools, b"x"), "000000010000000000000002"), ("fetch", SEG, dest + ".2")):
        proc = wal(tools, bad, *args)
        # push: 1 (PostgreSQL retries archiving); fetch: a hard error stops an archive recovery (> 125)
        assert proc.returncode == (1 if args[0] == "push" else 255), args
        assert "HTTP 403" in proc.stderr and ("secret_key" in proc.stderr or "credentials rejected" in proc.stderr)
        assert proc.stderr.count("\n") == 1
        assert wrong not in proc.stderr and auth_moto["secret_key"] not in proc.stderr
    assert not os.path.exists(dest + ".2")
    with pytest.raises(ClientError):
        s3.head_object(Bucket="wal-auth", Key="%s/000000010000000000000002" % prefix)
