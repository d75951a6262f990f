# -*- coding: utf-8 -*-
"""The WAL archive command's contract: identical re-push succeeds, a different file under
the same name fails, nothing partial is ever visible. The S3 backend's pure parts (SigV4
against AWS's published examples, configuration, credential chain, push decisions, retries,
listing) are checked here with plain data; the S3 round trips run against the lab's moto in
tests/integration/test_wal_s3.py."""
from __future__ import annotations

import hashlib
import json
import os
import random

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import walarchive
from ansible_collections.fediflow.dr.plugins.module_utils.walarchive import ArchiveError, TransientError

SEG = "000000010000000000000003"


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "archive"
    path.mkdir()
    return str(path)


def _segment(tmp_path, content=b"x" * 4096, name="seg"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def test_push_then_fetch_round_trip(tmp_path, repo):
    src = _segment(tmp_path, os.urandom(16384))
    assert walarchive.push(repo, src, SEG) == "archived"
    dest = str(tmp_path / "restored")
    assert walarchive.fetch(repo, SEG, dest) == "fetched"
    assert open(dest, "rb").read() == open(src, "rb").read()
    assert sorted(os.listdir(repo)) == [SEG]  # no temp file left behind


def test_identical_repush_succeeds(tmp_path, repo):
    src = _segment(tmp_path)
    walarchive.push(repo, src, SEG)
    assert walarchive.push(repo, src, SEG) == "already-archived"


def test_different_contents_under_same_name_fails(tmp_path, repo):
    walarchive.push(repo, _segment(tmp_path, b"a" * 100, "one"), SEG)
    with pytest.raises(ArchiveError, match="different contents"):
        walarchive.push(repo, _segment(tmp_path, b"b" * 100, "two"), SEG)
    assert open(os.path.join(repo, SEG), "rb").read() == b"a" * 100


def test_missing_source_leaves_nothing(tmp_path, repo):
    with pytest.raises(OSError):
        walarchive.push(repo, str(tmp_path / "gone"), SEG)
    assert os.listdir(repo) == []


def test_bad_names_and_missing_repo_are_refused(tmp_path, repo):
    src = _segment(tmp_path)
    with pytest.raises(ArchiveError, match="not a WAL file name"):
        walarchive.push(repo, src, "../etc/passwd")
    with pytest.raises(ArchiveError, match="does not exist"):
        walarchive.push(str(tmp_path / "nope"), src, SEG)
    walarchive.push(repo, src, "00000002.history")
    walarchive.push(repo, src, SEG + ".00000028.backup")


def test_fetch_missing_segment_fails(tmp_path, repo):
    with pytest.raises(ArchiveError, match="not in the archive"):
        walarchive.fetch(repo, SEG, str(tmp_path / "x"))
    assert not os.path.exists(str(tmp_path / "x"))


def test_status_reports_newest_segment_and_age(tmp_path, repo):
    assert walarchive.status(repo)["last_segment"] is None
    older = "000000010000000000000002"
    for name in (older, SEG):
        walarchive.push(repo, _segment(tmp_path, name.encode(), name), name)
    os.utime(os.path.join(repo, SEG), (1000.0, 1000.0))
    st = walarchive.status(repo, now=1060.0)
    assert st["segments"] == 2
    assert st["last_segment"] == SEG
    assert st["age_s"] == 60.0


def test_cli_exit_codes(tmp_path, repo):
    src = _segment(tmp_path)
    assert walarchive.main(["--repo", repo, "push", src, SEG]) == (0, "", "")
    code, _out, err = walarchive.main(["--repo", repo, "push", _segment(tmp_path, b"z", "o"), SEG])
    assert code == 1 and "different contents" in err
    code, out, _err = walarchive.main(["--repo", repo, "status"])
    assert code == 0 and json.loads(out)["segments"] == 1


def test_cli_config_file_selects_the_dir_backend(tmp_path, repo):
    cfg = tmp_path / "wal.json"
    cfg.write_text(json.dumps({"backend": "dir", "repo": repo}))
    assert walarchive.main(["--config", str(cfg), "push", _segment(tmp_path), SEG]) == (0, "", "")
    code, _out, err = walarchive.main(["--config", str(cfg), "fetch", "000000010000000000000009", str(tmp_path / "r")])
    assert code == 1 and err == "fediflow-wal fetch: 000000010000000000000009 is not in the archive\n"
    cfg.write_text(json.dumps({"backend": "s3", "region": "us-east-1"}))
    code, _out, err = walarchive.main(["--config", str(cfg), "status"])
    assert code == 1 and "'bucket' is required for the s3 backend" in err


# --- AWS Signature Version 4: the S3 examples of AWS's "Examples of how to calculate" page

EXAMPLE_CREDS = {"access_key": "AKIAIOSFODNN7EXAMPLE", "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
EXAMPLE_HOST = {"Host": "examplebucket.s3.amazonaws.com"}
EXAMPLE_DATE = "20130524T000000Z"
EMPTY = walarchive.EMPTY_SHA256


def test_sigv4_get_object_example():
    hdrs = walarchive.sign("GET", "/test.txt", None, dict(EXAMPLE_HOST, Range="bytes=0-9"), EMPTY,
                           EXAMPLE_CREDS, "us-east-1", EXAMPLE_DATE)
    assert hdrs["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    assert hdrs["x-amz-date"] == EXAMPLE_DATE and hdrs["x-amz-content-sha256"] == EMPTY


def test_canonical_request_of_the_get_object_example():
    headers = dict(EXAMPLE_HOST, Range="bytes=0-9")
    headers.update({"x-amz-content-sha256": EMPTY, "x-amz-date": EXAMPLE_DATE})
    text, signed = walarchive.canonical_request("GET", "/test.txt", None, headers, EMPTY)
    assert text == "\n".join(["GET", "/test.txt", "", "host:examplebucket.s3.amazonaws.com", "range:bytes=0-9",
                              "x-amz-content-sha256:" + EMPTY, "x-amz-date:20130524T000000Z", "",
                              "host;range;x-amz-content-sha256;x-amz-date", EMPTY])
    assert signed == "host;range;x-amz-content-sha256;x-amz-date"
    assert hashlib.sha256(text.encode()).hexdigest() == "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"


@pytest.mark.parametrize("method, path, params, extra, body, signature", [
    ("PUT", "/test$file.text", None,
     {"Date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY"}, b"Welcome to Amazon S3.",
     "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
    ("GET", "/", {"lifecycle": ""}, {}, b"", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    ("GET", "/", {"prefix": "J", "max-keys": "2"}, {}, b"", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
], ids=["put-object", "get-bucket-lifecycle", "list-objects"])
def test_sigv4_other_s3_examples(method, path, params, extra, body, signature):
    hdrs = walarchive.sign(method, path, params, dict(EXAMPLE_HOST, **extra), hashlib.sha256(body).hexdigest(),
                           EXAMPLE_CREDS, "us-east-1", EXAMPLE_DATE)
    assert hdrs["Authorization"].endswith(", Signature=" + signature)


def test_canonical_query_and_uri_encoding():
    params = {"prefix": "wal/us east-1/", "list-type": "2", "continuation-token": "a+b=c"}
    assert walarchive.canonical_query(params) == "continuation-token=a%2Bb%3Dc&list-type=2&prefix=wal%2Fus%20east-1%2F"
    assert walarchive.canonical_query(None) == ""
    text, _signed = walarchive.canonical_request("PUT", "/bucket/wal/a b+c~", None,
                                                 {"Host": "h", "X-Amz-Meta-Note": "  a   b "}, EMPTY)
    lines = text.split("\n")
    assert lines[1] == "/bucket/wal/a%20b%2Bc~"  # S3: slashes kept, encoded once
    assert "x-amz-meta-note:a b" in lines


def test_session_token_is_sent_and_signed():
    creds = dict(EXAMPLE_CREDS, session_token="tok")
    hdrs = walarchive.sign("HEAD", "/k", None, EXAMPLE_HOST, EMPTY, creds, "eu-west-1", EXAMPLE_DATE)
    assert hdrs["x-amz-security-token"] == "tok"
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token," in hdrs["Authorization"]
    assert "/20130524/eu-west-1/s3/aws4_request" in hdrs["Authorization"]


# --- configuration and credentials

S3_CFG = {"backend": "s3", "bucket": "wal-bucket", "region": "us-east-1", "prefix": "/wal/us-east-1/"}


@pytest.mark.parametrize("change, message", [
    ({"bucket": None}, "'bucket' is required for the s3 backend"),
    ({"region": ""}, "'region' is required for the s3 backend"),
    ({"bucket": "Bad_Bucket"}, "'bucket' 'Bad_Bucket' is not a valid S3 bucket name"),
    ({"sse": "aes"}, "'sse' must be null, 'AES256' or 'aws:kms'"),
    ({"kms_key_id": "alias/wal"}, "'kms_key_id' needs 'sse': 'aws:kms'"),
    ({"access_key": "AKIA"}, "'secret_key' is missing"),
    ({"secret_key": "s"}, "'access_key' is missing"),
    ({"endpoint_url": "ftp://moto"}, "'endpoint_url' must be http"),
    ({"bukcet": "x"}, r"unknown key\(s\) bukcet"),
    ({"backend": "gcs"}, "'backend' must be 's3' or 'dir'"),
    ({"prefix": 5}, "'prefix' must be a string"),
])
def test_config_validation_names_the_key(change, message):
    with pytest.raises(ArchiveError, match=message):
        walarchive.validate_config(dict(S3_CFG, **change), "config /etc/wal.json")


def test_config_is_normalized_and_dir_backend_needs_an_absolute_repo():
    cfg = walarchive.validate_config(dict(S3_CFG, sse="aws:kms", kms_key_id="alias/wal", endpoint_url=""))
    assert cfg["prefix"] == "wal/us-east-1" and "endpoint_url" not in cfg
    with pytest.raises(ArchiveError, match="'repo' .* is required for the dir backend"):
        walarchive.validate_config({"backend": "dir", "repo": "relative/dir"})


def test_config_file_with_credentials_must_be_private(tmp_path):
    path = tmp_path / "wal.json"
    path.write_text(json.dumps(dict(S3_CFG, access_key="AKIA", secret_key="hunter2")))
    os.chmod(str(path), 0o644)
    with pytest.raises(ArchiveError, match="readable by group/others .mode 0644.") as info:
        walarchive.load_config(str(path))
    assert "hunter2" not in str(info.value)
    os.chmod(str(path), 0o600)
    assert walarchive.load_config(str(path))["secret_key"] == "hunter2"
    path.write_text("{not json")
    with pytest.raises(ArchiveError, match="is not valid JSON"):
        walarchive.load_config(str(path))


def _no_imds():
    raise AssertionError("the instance metadata service must not be asked")


def test_credential_chain_config_then_environment_then_instance_role():
    env = {"AWS_ACCESS_KEY_ID": "env-ak", "AWS_SECRET_ACCESS_KEY": "env-sk", "AWS_SESSION_TOKEN": "env-tok"}
    role = {"access_key": "role-ak", "secret_key": "role-sk", "session_token": "role-tok", "source": "ec2-instance-role"}
    cfg = {"access_key": "cfg-ak", "secret_key": "cfg-sk"}
    assert walarchive.resolve_credentials(cfg, env, _no_imds) == {
        "access_key": "cfg-ak", "secret_key": "cfg-sk", "session_token": None, "source": "config"}
    assert walarchive.resolve_credentials({}, env, _no_imds) == {
        "access_key": "env-ak", "secret_key": "env-sk", "session_token": "env-tok", "source": "environment"}
    assert walarchive.resolve_credentials({}, {"AWS_ACCESS_KEY_ID": "half"}, lambda: role) == role
    with pytest.raises(ArchiveError, match="no AWS credentials"):
        walarchive.resolve_credentials({}, {}, lambda: None)
    assert walarchive.imds_credentials(environ={"AWS_EC2_METADATA_DISABLED": "true"}) is None


# --- S3 backend logic

def test_addressing_path_style_with_an_endpoint_virtual_host_on_aws():
    creds = dict(EXAMPLE_CREDS)
    lab = walarchive.S3Archive(walarchive.validate_config(dict(S3_CFG, endpoint_url="http://127.0.0.1:15000")), creds)
    assert (lab.host_header, lab.path(lab.key(SEG))) == ("127.0.0.1:15000", "/wal-bucket/wal/us-east-1/" + SEG)
    aws = walarchive.S3Archive(walarchive.validate_config(S3_CFG), creds)
    assert aws.endpoint == "https://wal-bucket.s3.us-east-1.amazonaws.com"
    assert (aws.path(aws.key(SEG)), aws.path()) == ("/wal/us-east-1/" + SEG, "/")
    dotted = walarchive.S3Archive(walarchive.validate_config(dict(S3_CFG, bucket="wal.example", prefix="")), creds)
    assert (dotted.host_header, dotted.path(dotted.key(SEG))) == ("s3.us-east-1.amazonaws.com", "/wal.example/" + SEG)


def test_plan_push_from_the_head_of_the_key():
    sha, md5 = "ab" * 32, "cd" * 16
    assert walarchive.plan_push(None, 10, sha, md5, SEG) == "put"
    assert walarchive.plan_push({"content-length": "10", "x-amz-meta-sha256": sha}, 10, sha, md5, SEG) == "already-archived"
    assert walarchive.plan_push({"content-length": "10", "etag": '"%s"' % md5}, 10, sha, md5, SEG) == "already-archived"
    for head, why in (({"content-length": "11", "x-amz-meta-sha256": sha}, "size 11, not 10"),
                      ({"content-length": "10", "x-amz-meta-sha256": "ef" * 32}, "sha256 efefefefefef..., not abab"),
                      ({"content-length": "10", "etag": '"0a1b-2"'}, "it has no x-amz-meta-sha256 to compare")):
        with pytest.raises(ArchiveError, match="already archived with different contents .%s" % why):
            walarchive.plan_push(head, 10, sha, md5, SEG)


def test_transient_failures_are_retried_with_bounded_jittered_backoff():
    delays = walarchive.backoff_delays(3, 0.2, random.Random(7))
    assert all(0.1 * 2 ** i <= d <= 0.2 * 2 ** i for i, d in enumerate(delays)) and len(delays) == 3
    calls, slept = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("S3 PUT: HTTP 503 SlowDown")
        return "ok"
    assert walarchive.with_retries(flaky, [0.1, 0.2, 0.4], sleep=slept.append) == "ok" and slept == [0.1, 0.2]

    def down():
        raise TransientError("cannot talk to S3: connection refused")
    with pytest.raises(ArchiveError, match="refused .gave up after 4 attempts in"):
        walarchive.with_retries(down, [0, 0, 0], sleep=slept.append)
    ticks = iter([0.0, 5.0])  # the first retry would start after the 5.5 s budget
    with pytest.raises(ArchiveError, match="gave up after 1 attempt in 5.0s"):
        walarchive.with_retries(down, [1.0], budget_s=5.5, sleep=slept.append, clock=lambda: next(ticks))

    def denied():
        calls.append(1)
        raise ArchiveError("S3 PUT: HTTP 403 AccessDenied")
    before = len(calls)
    with pytest.raises(ArchiveError, match="403"):
        walarchive.with_retries(denied, [0, 0, 0], sleep=slept.append)
    assert len(calls) == before + 1  # not retried


LIST_PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated>
<Contents><Key>wal/us-east-1/000000010000000000000002</Key><LastModified>2013-05-24T00:00:00.500Z</LastModified></Contents>
<Contents><Key>wal/us-east-1/00000002.history</Key><LastModified>2013-05-24T00:10:00.000Z</LastModified></Contents>
<Contents><Key>wal/us-east-1/000000010000000000000001</Key><LastModified>2013-05-24T00:05:00.000Z</LastModified></Contents>
<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken></ListBucketResult>"""


def test_listing_pages_and_status_ignore_history_and_backup_files():
    entries, token = walarchive.parse_list_page(LIST_PAGE.encode(), "wal/us-east-1/")
    assert token == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="
    assert entries[0] == ("000000010000000000000002", 1369353600.5)
    last = LIST_PAGE.replace("<IsTruncated>true", "<IsTruncated>false")
    assert walarchive.parse_list_page(last.encode(), "wal/us-east-1/")[1] is None
    entries.append((SEG + ".00000028.backup", 1369354000.0))
    assert walarchive.summarize(entries, now=1369353660.5) == {
        "segments": 2, "last_segment": "000000010000000000000002", "last_archived_at": 1369353600.5, "age_s": 60.0}


# --- several repositories (a bucket per region): directory repositories, one of them "down" (gone)

def _multi(tmp_path, names=("us-east-1", "eu-west-1"), required=None, make=None):
    repos = []
    for name in names:
        path = tmp_path / ("repo-" + name)
        if make is None or name in make:
            path.mkdir(exist_ok=True)
        repos.append({"name": name, "backend": "dir", "repo": str(path)})
    cfg = {"repositories": repos}
    if required is not None:
        cfg["required_copies"] = required
    path = tmp_path / "wal.json"
    path.write_text(json.dumps(cfg))
    return str(path), [r["repo"] for r in repos]


def test_push_writes_every_repository_and_fetch_reads_the_first_that_has_it(tmp_path):
    cfg, (first, second) = _multi(tmp_path)
    src = _segment(tmp_path)
    assert walarchive.main(["--config", cfg, "push", src, SEG]) == (0, "", "")
    assert os.path.isfile(os.path.join(first, SEG)) and os.path.isfile(os.path.join(second, SEG))
    os.unlink(os.path.join(first, SEG))  # the first repository lost it: the second serves
    assert walarchive.main(["--config", cfg, "fetch", SEG, str(tmp_path / "got")]) == (0, "", "")
    assert (tmp_path / "got").read_bytes() == b"x" * 4096
    code, _out, err = walarchive.main(["--config", cfg, "fetch", "000000010000000000000009", str(tmp_path / "n")])
    assert code == 1 and "in none of the 2 repositories" in err


def test_a_repository_that_is_down_fails_the_push_until_it_answers_and_the_copy_made_is_kept(tmp_path):
    cfg, (first, second) = _multi(tmp_path, make=["us-east-1"])
    src = _segment(tmp_path)
    code, _out, err = walarchive.main(["--config", cfg, "push", src, SEG])
    assert code == 1 and "in 1 of 2 repositories, 2 required" in err and "eu-west-1:" in err
    assert os.path.isfile(os.path.join(first, SEG))  # kept: PostgreSQL's retry completes the rest
    os.mkdir(second)  # the region is back
    assert walarchive.main(["--config", cfg, "push", src, SEG]) == (0, "", "")
    assert os.path.isfile(os.path.join(second, SEG))


def test_fewer_required_copies_succeed_and_say_which_repository_lacks_the_segment(tmp_path):
    cfg, _repos = _multi(tmp_path, required=1, make=["eu-west-1"])
    code, _out, err = walarchive.main(["--config", cfg, "push", _segment(tmp_path), SEG])
    assert code == 0 and "archived in 1 of 2 repositories (required_copies 1); missing in us-east-1:" in err


def test_status_is_the_segment_every_answering_repository_holds_and_says_who_did_not_answer(tmp_path):
    cfg, (first, second, _third) = _multi(tmp_path, names=("a", "b", "c"), make=["a", "b"])
    for repo, names in ((first, [SEG, "000000010000000000000004"]), (second, [SEG])):
        for name in names:
            walarchive.push(repo, _segment(tmp_path), name)
    code, out, _err = walarchive.main(["--config", cfg, "status"])
    status = json.loads(out)
    assert code == 0 and status["last_segment"] == SEG and status["answering"] == 2 and status["degraded"] is True
    assert status["repositories"]["a"]["last_segment"] == "000000010000000000000004"
    assert "error" in status["repositories"]["c"]
    archive = walarchive.open_archive(walarchive.load_config(cfg))
    assert [name for name, _at in archive.list_objects()] == [SEG, "000000010000000000000004"]  # the union


def test_no_repository_answering_a_listing_fails(tmp_path):
    cfg, _repos = _multi(tmp_path, make=[])
    with pytest.raises(ArchiveError, match="no repository answered"):
        walarchive.open_archive(walarchive.load_config(cfg)).list_objects()


@pytest.mark.parametrize("cfg, message", [
    ({"repositories": []}, "'repositories' must be a non-empty list"),
    ({"repositories": [{"name": "a", "backend": "dir", "repo": "/a"}], "copies": 1}, "unknown key(s) copies"),
    ({"repositories": [{"backend": "dir", "repo": "/a"}]}, "repositories[0] needs a unique 'name'"),
    ({"repositories": [{"name": "a", "backend": "dir", "repo": "/a"}, {"name": "a", "backend": "dir", "repo": "/b"}]},
     "repositories[1] needs a unique 'name'"),
    ({"repositories": [{"name": "a", "backend": "dir", "repo": "/a"}], "required_copies": 2},
     "'required_copies' must be a whole number from 1 to 1"),
    ({"repositories": [{"name": "a", "backend": "dir", "repo": "/a"}], "required_copies": True}, "'required_copies'"),
    ({"repositories": [{"name": "eu", "backend": "s3", "region": "eu-west-1"}]},
     "repository 'eu': 'bucket' is required for the s3 backend"),
])
def test_several_repositories_are_validated_naming_the_key_and_the_repository(cfg, message):
    with pytest.raises(ArchiveError) as err:
        walarchive.validate_multi(cfg)
    assert message in str(err.value)


def test_a_repository_holding_credentials_makes_the_file_private(tmp_path):
    path = tmp_path / "wal.json"
    path.write_text(json.dumps({"repositories": [
        {"name": "a", "backend": "dir", "repo": "/a"},
        {"name": "b", "backend": "s3", "bucket": "bkt", "region": "eu-west-1", "access_key": "k", "secret_key": "s"}]}))
    os.chmod(path, 0o644)
    with pytest.raises(ArchiveError, match="readable by group/others"):
        walarchive.load_config(str(path))
    os.chmod(path, 0o600)
    assert walarchive.load_config(str(path))["required_copies"] == 2


# --- restore_command exit statuses: 1 only for "not in the archive" (PostgreSQL: end of archive)


def test_fetch_exit_status_not_found_is_1_hard_error_aborts(tmp_path, repo):
    assert walarchive.fetch_exit_code(walarchive.NotInArchive("x"), str(tmp_path)) == 1
    assert walarchive.fetch_exit_code(ArchiveError("checksum mismatch"), str(tmp_path)) == walarchive.EXIT_ABORT > 125
    assert walarchive.fetch_exit_code(PermissionError(13, "Permission denied"), str(tmp_path)) > 125
    (tmp_path / "standby.signal").write_text("")  # standby mode: 1, the standby retries (streaming, then the archive)
    assert walarchive.fetch_exit_code(ArchiveError("S3 unreachable"), str(tmp_path)) == 1


def test_a_history_file_no_answering_repository_holds_is_not_found_even_during_a_promotion(tmp_path):
    """At a promotion PostgreSQL asks for the next timeline's history file (which does not exist) after
    standby.signal is gone: with a repository down, a hard exit there would shut the new primary down."""
    down = ArchiveError("00000003.history: not found where asked, and us-east-1: cannot talk to S3")
    assert not (tmp_path / "standby.signal").exists()
    assert walarchive.fetch_exit_code(down, str(tmp_path), name="00000003.history") == 1
    # a WAL segment in the same situation still stops an archive recovery
    assert walarchive.fetch_exit_code(down, str(tmp_path), name="000000020000000000000003") == walarchive.EXIT_ABORT
    # a history file a repository holds damaged exists: never taken for absent (its timeline number is taken)
    damaged = walarchive.CorruptObject("00000003.history (s3://b/wal/00000003.history) is corrupt")
    assert walarchive.fetch_exit_code(damaged, str(tmp_path), name="00000003.history") == walarchive.EXIT_ABORT


def _fetch_through_sh(tool_dir, repo, name, dest, cwd):
    """As PostgreSQL runs restore_command: a string through /bin/sh, in the data directory."""
    import shlex
    import subprocess
    import sys
    cmd = " ".join(shlex.quote(x) for x in (sys.executable, os.path.join(tool_dir, "fediflow_wal.py"), "--repo", repo,
                                            "fetch", name, dest))
    return subprocess.run(["/bin/sh", "-c", cmd], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture
def wal_tool(tmp_path):
    """The installed pair, as the replication role lays it out: fediflow_wal.py beside walarchive.py."""
    import shutil
    here = os.path.dirname(walarchive.__file__)
    root = os.path.abspath(os.path.join(here, "..", ".."))
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(os.path.join(root, "roles", "replication", "files", "fediflow_wal.py"), str(tools))
    shutil.copy(walarchive.__file__, str(tools))
    return str(tools)


def test_restore_command_exit_statuses_as_postgresql_sees_them(tmp_path, repo, wal_tool):
    data_dir = tmp_path / "pgdata"
    data_dir.mkdir()
    dest = str(data_dir / "RECOVERYXLOG")
    assert walarchive.push(repo, _segment(tmp_path, os.urandom(8192)), SEG) == "archived"
    assert _fetch_through_sh(wal_tool, repo, SEG, dest, str(data_dir)).returncode == 0
    res = _fetch_through_sh(wal_tool, repo, "000000010000000000000009", dest, str(data_dir))
    assert res.returncode == 1 and "is not in the archive" in res.stderr
    # a hard error: the segment cannot be read (here: a directory where the file should be)
    os.mkdir(os.path.join(repo, "00000001000000000000000A"))
    res = _fetch_through_sh(wal_tool, repo, "00000001000000000000000A", dest, str(data_dir))
    assert res.returncode > 125, (res.returncode, res.stderr)
    # the same error in a standby's data directory: 1 (it retries, streaming meanwhile)
    (data_dir / "standby.signal").write_text("")
    assert _fetch_through_sh(wal_tool, repo, "00000001000000000000000A", dest, str(data_dir)).returncode == 1


def test_multi_repository_fetch_error_in_one_and_absent_in_the_other_aborts(tmp_path):
    """Not found in one repository and an error in the other: the segment may be in the failing one - not "end of
    archive"."""
    good = tmp_path / "a"
    bad = tmp_path / "b"
    good.mkdir()
    bad.mkdir()
    os.mkdir(str(bad / SEG))
    cfg = tmp_path / "wal.json"
    cfg.write_text(json.dumps({"repositories": [{"name": "a", "backend": "dir", "repo": str(good)},
                                                {"name": "b", "backend": "dir", "repo": str(bad)}]}))
    os.chmod(str(cfg), 0o600)
    code, _out, err = walarchive.main(["--config", str(cfg), "fetch", SEG, str(tmp_path / "got")])
    assert code == walarchive.EXIT_ABORT and "b:" in err
