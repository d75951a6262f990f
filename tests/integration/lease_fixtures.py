"""Helpers of the DR lease tests: the inventory's lease stores (resolved by Ansible, as the playbooks see them),
the lease document read straight from each store with boto3 (the outcome checked apart from the module), the
module driven directly, and a playbook started in the background."""
import json
import subprocess
import time

import boto3
import pytest

from lab_fixtures import BIN, INVENTORY, ROOT, ansible_env, keep_log, module, playbook_path


def resolved(var):
    """An inventory variable templated by Ansible (on localhost, as the lease role reads it)."""
    env = dict(ansible_env(), ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = subprocess.run([str(BIN / "ansible"), "localhost", "-i", str(INVENTORY), "-m", "ansible.builtin.debug",
                           "-a", "var=%s" % var], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"][var]


class Lease:
    """The lab's lease: its stores and environment from the inventory, the module, the documents."""

    def __init__(self, hv):
        self.stores = resolved("fediflow_lease_stores")
        self.environment = resolved("fediflow_lease_environment")
        self.creds = {"access_key": hv["fediflow_aws_access_key"], "secret_key": hv["fediflow_aws_secret_key"]}
        self.held = []

    def run(self, environment=None, netns=None, check_mode=False, **args):
        """The module (its result); an acquisition it makes is given back by ``clear``."""
        args = dict(self.creds, stores=self.stores, environment=environment or self.environment, **args)
        res = module("fediflow.dr.dr_lease", args, check_mode=check_mode, netns=netns)
        if (res.get("lease") or {}).get("token") and res.get("acquired") and not res.get("reentrant"):
            self.held.append((environment or self.environment, res["lease"]["token"]))
        return res

    def documents(self, environment=None):
        """{store: the lease document} read with boto3 from every store that answers (None: no document)."""
        out = {}
        for store in self.stores:
            client = boto3.client("s3", endpoint_url=store["endpoint_url"], region_name=store["region"],
                                  aws_access_key_id=self.creds["access_key"], aws_secret_access_key=self.creds["secret_key"],
                                  config=boto3.session.Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
            key = "fediflow-lease/%s.json" % (environment or self.environment)
            try:
                out[store["name"]] = json.loads(client.get_object(Bucket=store["bucket"], Key=key)["Body"].read())
            except client.exceptions.NoSuchKey:
                out[store["name"]] = None
            except Exception:  # pylint: disable=broad-except  # a store that is down
                continue
        return out

    def holders(self, environment=None):
        """{token: (operation, stores holding it)} of the entries in the documents (expiry not judged)."""
        out = {}
        for name, doc in self.documents(environment).items():
            released = {r["token"] for r in (doc or {}).get("released", [])}
            for holder in (doc or {}).get("holders", []):
                if holder["token"] not in released:
                    out.setdefault(holder["token"], (holder["operation"], set()))[1].add(name)
        return out

    def clear(self):
        for environment, token in self.held:
            self.run(environment=environment, state="released", token=token)
        self.held = []


@pytest.fixture
def lab_lease(lab):
    lease = Lease(lab["primary"])
    yield lease
    lease.clear()


def said(stdout):
    """A playbook's output with the YAML callback's folding and quote doubling undone."""
    return " ".join(stdout.split()).replace("''", "'")


class Background:
    """A playbook started now, its output kept (tests/output/playbooks) when it ends."""

    def __init__(self, name, *extra):
        self.name = name
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([str(BIN / "ansible-playbook"), "-i", str(INVENTORY), str(playbook_path(name)),
                                      *extra], cwd=ROOT, env=ansible_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout=900):
        out, _err = self.proc.communicate(timeout=timeout)
        keep_log(self.name, _Done(self.proc.returncode, out), time.monotonic() - self.t0)
        return self.proc.returncode, out


class _Done:  # what keep_log reads of a finished process
    def __init__(self, returncode, stdout):
        self.returncode, self.stdout, self.stderr = returncode, stdout, ""
