"""Helpers of the s3_snapshot integration tests.

Each test gets its own snapshot repository (a uuid prefix) in the lab's backup bucket on
moto. The module is driven the way a user drives it (`ansible localhost -m
fediflow.dr.s3_snapshot`); the outcome is checked independently with boto3 and the file
system. Credentials reach ansible through the `AWS_*` environment, never its argv.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid

import boto3
import pytest

from lab_fixtures import BIN, ROOT, ansible_env, module, s3_endpoint

MODULE = "fediflow.dr.s3_snapshot"


class Repo:
    def __init__(self, lab, prefix):
        hvars = lab["primary"]
        self.bucket = hvars["fediflow_backup_bucket"]
        self.prefix = prefix
        self.conn = {"endpoint_url": s3_endpoint(hvars), "region": hvars["fediflow_region"]}
        self.s3 = boto3.client("s3", endpoint_url=self.conn["endpoint_url"], region_name=self.conn["region"],
                               aws_access_key_id=hvars["fediflow_aws_access_key"],
                               aws_secret_access_key=hvars["fediflow_aws_secret_key"])

    def args(self, **kw):
        args = dict(self.conn, s3_bucket=self.bucket, s3_prefix=self.prefix)
        args.update(kw)
        return args

    def run(self, check_mode=False, diff=False, **kw):
        return module(MODULE, self.args(**kw), check_mode=check_mode, diff=diff)

    def keys(self, sub):
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix="%s/%s/" % (self.prefix, sub)):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    def objects(self):
        return {k.rsplit("/", 1)[-1]: size for k, size in self.keys("objects").items()}

    def snapshots(self):
        return sorted(k.rsplit("/", 1)[-1][:-5] for k in self.keys("snapshots"))

    def manifest(self, snapshot_id):
        body = self.s3.get_object(Bucket=self.bucket, Key="%s/snapshots/%s.json" % (self.prefix, snapshot_id))
        return json.loads(body["Body"].read())

    def object_key(self, digest):
        return "%s/objects/%s/%s" % (self.prefix, digest[:2], digest)


@pytest.fixture
def repo(lab, monkeypatch):
    hvars = lab["primary"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", hvars["fediflow_aws_access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", hvars["fediflow_aws_secret_key"])
    return Repo(lab, "test-snapshot/%s" % uuid.uuid4().hex[:12])


def ansible_argv(args, check_mode=False, prefix=()):
    """The argv of one ad hoc module call, for runs the test has to control (kill it, drop
    capabilities); results of ordinary runs come from lab_fixtures.module."""
    argv = list(prefix) + [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", MODULE,
                           "-a", json.dumps(args), "-e", "ansible_python_interpreter=%s" % sys.executable]
    return argv + (["--check"] if check_mode else [])


def run_json(argv):
    env = ansible_env()
    env["ANSIBLE_LOAD_CALLBACK_PLUGINS"] = "1"
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    data = json.loads(proc.stdout)
    return next(iter(data["plays"][0]["tasks"][0]["hosts"].values()))


def descendants(pid):
    """Every live descendant of ``pid`` (ansible's workers call setsid(), so a process group
    kill of the CLI would miss the module process)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, encoding="utf-8") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_9(proc):
    """SIGKILL a process and all its descendants at once (a crash, not a shutdown)."""
    victims = [proc.pid] + descendants(proc.pid)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    return victims


def make_tree(root, files, modes=None):
    """Write {relative path: bytes}; returns {path: sha256}."""
    digests = {}
    for rel, data in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    for rel, mode in (modes or {}).items():
        os.chmod(os.path.join(str(root), rel), mode)
    return digests


def tree_state(root):
    """Everything restore promises, per path: type, mode, mtime, owner, content or link target."""
    state = {}
    for base, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            full = os.path.join(base, name)
            info = os.lstat(full)
            rel = os.path.relpath(full, str(root))
            if os.path.islink(full):
                state[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                state[rel] = ("dir", oct(info.st_mode & 0o7777), info.st_mtime_ns, info.st_uid)
            else:
                with open(full, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                state[rel] = ("file", oct(info.st_mode & 0o7777), info.st_mtime_ns, info.st_uid, digest)
    return state
