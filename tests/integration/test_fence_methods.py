"""The aws_ec2 and command fence methods of role region_failover (tasks fence_aws_ec2.yml, fence_command.yml,
fence_validate.yml), run through ansible-playbook as the role's fence.yml runs them: a small playbook
(playbooks/fence_method.yml) includes the method's task file on a target host t-CASE for the old primary's
host o-CASE, whose fediflow_fence the test writes into a throwaway inventory. One run fences every case of a
batch side by side (forks; the recap counts each target's changes), so the file makes four runs: the fences,
the re-run of an isolation, check mode, the refusals of bad settings. No lab is needed.

EC2 is a private moto_server on a free loopback port, its instances made with boto3 (run_instances). What moto
fakes: state transitions are instant (StopInstances leaves an instance "stopped" at once, where EC2 passes
through "stopping" for a minute or so, so the module's wait returns at its first look), nothing runs on the
instances, and security groups filter no traffic (a real swap refuses new connections and leaves the ones
already open alone - docs/fencing.md). What the fence did is checked with boto3 against moto's state, not read
from the fence's own result only. The command method runs real programs (this Python) on the controller.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml

from doubles_fixtures import start_moto
from lab_fixtures import BIN, ROOT, ansible_env, keep_log, recap

REGION = "us-east-1"
# long enough that Ansible's masking of no_log values (every occurrence in the output) hits nothing else
ACCESS_KEY, SECRET_KEY = "fence-test-access-key", "fence-test-secret-key-2f9c"
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
TAG = "fediflow-fence:previous-security-groups"
GHOST = "i-0123456789abcdef0"  # an instance id that does not exist
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}

SECRET = "outlet-password-7c1e"
# the fence: records the secret it was given in its environment (so the test sees it arrived) and says so
FENCE = "import os, sys; open(sys.argv[1], 'w').write(os.environ['PDU_PASSWORD']); print('outlet off, password', os.environ['PDU_PASSWORD'])"
# the proof: exits 0 from its second run on (a switch that reports the outlet off a moment later)
VERIFY = ("import os, sys; p = sys.argv[1]; n = os.path.getsize(p) if os.path.exists(p) else 0; "
          "open(p, 'a').write('x'); sys.exit(0 if n >= 1 else 1)")


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ec2(moto):
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto.url,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


def launch(ec2, count=1):
    image = ec2.describe_images()["Images"][0]["ImageId"]
    res = ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType="t3.micro")
    return [i["InstanceId"] for i in res["Instances"]]


def state(ec2, instance_id):
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def interfaces(ec2, instance_id):
    return ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])["NetworkInterfaces"]


def isolation_group(ec2, instance_id):
    """A security group without rules in the instance's VPC."""
    vpc = interfaces(ec2, instance_id)[0]["VpcId"]
    return ec2.create_security_group(GroupName="fence-iso-%s" % instance_id, Description="no rules", VpcId=vpc)["GroupId"]


def play(name, inventory, *extra, env=None):
    t0 = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "-f", "16", str(PLAYBOOKS / name), *extra],
                          cwd=ROOT, env=dict(ansible_env(), **(env or {})), capture_output=True, text=True, check=False,
                          timeout=300)
    keep_log(name, proc, time.monotonic() - t0)
    return proc


def write_inventory(path, cases, moto=None, results=None, target_vars=None):
    """Old primary host o-NAME with fediflow_fence ``cases[NAME]`` (group fenced), and with ``results`` (a
    directory) its target host t-NAME (group targets; more variables from ``target_vars[NAME]``) that fences it
    and writes results/NAME.json. Hosts and localhost are local, this Python; the role's AWS connection comes
    from the shared inventory variables (fediflow_aws_*), as in a user's inventory, when ``moto`` is given."""
    fenced = {"o-%s" % name: dict(LOCAL, fediflow_region=REGION, fediflow_fence=spec) for name, spec in cases.items()}
    targets = {"t-%s" % name: dict(LOCAL, fence_host="o-%s" % name, fence_result_file=str(Path(results) / ("%s.json" % name)),
                                   **(target_vars or {}).get(name, {}))
               for name in cases} if results else {}
    inv_vars = {"region_failover_api_host": "localhost"}
    if moto is not None:
        inv_vars.update(fediflow_aws_endpoint_url=moto.url, fediflow_aws_access_key=ACCESS_KEY,
                        fediflow_aws_secret_key=SECRET_KEY)
    path.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": dict(LOCAL)}, "vars": inv_vars,
                                            "children": {"fenced": {"hosts": fenced}, "targets": {"hosts": targets}}}}))
    return path


def fence_batch(workdir, cases, moto, *extra, target_vars=None, env=None):
    """Fence every case in one run; {NAME: result, ...} with the run's recap ("recap": {NAME: counters}) and
    output ("out"). The play must succeed: a fence that fails says so in its result (ok=false), never by failing
    the play. No secret may appear in the output or a result."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = play("fence_method.yml", write_inventory(workdir / "hosts.yml", cases, moto, workdir, target_vars), *extra, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    out = {name: json.loads((workdir / ("%s.json" % name)).read_text()) for name in cases}
    for name, result in out.items():
        assert set(result) >= {"method", "ok", "proved", "actions", "detail"}, (name, result)
    everything = proc.stdout + proc.stderr + json.dumps(out)
    assert SECRET_KEY not in everything and SECRET not in everything
    counts = recap(proc.stdout)
    out["recap"] = {name: counts["t-%s" % name] for name in cases}
    out["out"] = proc.stdout
    return out


def ec2_case(ids, **kw):
    return dict({"method": "aws_ec2", "instance_ids": ids}, **kw)


@pytest.fixture(scope="module")
def fenced(tmp_path_factory, ec2, moto):
    """One run (with -vvv: no secret may show even then) of every fence that acts."""
    work = tmp_path_factory.mktemp("fences")
    w = {"stop": launch(ec2, 2), "stopped": launch(ec2), "missing": launch(ec2), "isolate": launch(ec2), "chain": launch(ec2)}
    ec2.stop_instances(InstanceIds=w["stopped"])
    w["isolate_eni"] = interfaces(ec2, w["isolate"][0])[0]
    w["iso"] = isolation_group(ec2, w["isolate"][0])
    w["isolate_spec"] = ec2_case(w["isolate"], action="isolate", isolation_security_group_ids=[w["iso"]], wait_timeout_s=60)
    w["marker"], w["counter"], w["counter_fail"] = work / "fenced", work / "verify-runs", work / "verify-after-failed-fence"
    cases = {
        "stop": ec2_case(w["stop"]),
        "stopped": ec2_case(w["stopped"], action="stop"),
        # the connection from fediflow_fence (a region's own endpoint and keys) wins over the role's
        "missing": ec2_case(w["missing"] + [GHOST], region=REGION, endpoint_url=moto.url, access_key=ACCESS_KEY,
                            secret_key=SECRET_KEY),
        "isolate": w["isolate_spec"],
        # no connection anywhere in the inventory: the usual AWS chain (here the environment) reaches moto
        "chain": ec2_case(w["chain"]),
        # the EC2 API itself does not answer
        "no-api": ec2_case(w["stop"], endpoint_url="http://127.0.0.1:9"),
        "cmd-ok": {"method": "command", "argv": [sys.executable, "-c", FENCE, str(w["marker"])],
                   "verify_argv": [sys.executable, "-c", VERIFY, str(w["counter"])], "timeout_s": 30, "verify_timeout_s": 20,
                   "environment": {"PDU_PASSWORD": SECRET}},
        "cmd-fail": {"method": "command",
                     "argv": [sys.executable, "-c", "import sys; print('outlet 4 busy', file=sys.stderr); sys.exit(3)"],
                     "verify_argv": [sys.executable, "-c", VERIFY, str(w["counter_fail"])]},
        "verify-fail": {"method": "command", "argv": [sys.executable, "-c", "pass"], "verify_timeout_s": 2,
                        "verify_argv": [sys.executable, "-c", "import sys; print('outlet 4 on'); sys.exit(1)"]},
    }
    closed = {"fediflow_aws_endpoint_url": "http://127.0.0.1:9", "fediflow_aws_access_key": "not-this-case-s-key",
              "fediflow_aws_secret_key": "not-this-case-s-secret"}
    unset = {"fediflow_aws_endpoint_url": "", "fediflow_aws_access_key": "", "fediflow_aws_secret_key": ""}
    chain = {"AWS_URL": moto.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    w["run"] = fence_batch(work, cases, moto, "-vvv", target_vars={"missing": closed, "chain": unset}, env=chain)
    return w


# --- aws_ec2 -------------------------------------------------------------------------------------------------


def test_stop_stops_every_instance_and_proves_it(fenced, ec2):
    ids, result = fenced["stop"], fenced["run"]["stop"]
    assert result["ok"] is True and result["method"] == "aws_ec2" and result["detail"] == "", result
    assert [state(ec2, i) for i in ids] == ["stopped", "stopped"]
    assert result["proved"] == "instance %s state stopped, %s state stopped (ec2 DescribeInstances in %s)" % (ids[0], ids[1], REGION)
    assert result["actions"] == ["stopped %s (was running; StopInstances, waited until stopped, at most 300 s)" % i for i in ids]
    assert fenced["run"]["recap"]["stop"]["changed"] == 1  # the stop


def test_already_stopped_changes_nothing_and_says_so(fenced, ec2):
    (instance,), result = fenced["stopped"], fenced["run"]["stopped"]
    assert result["ok"] is True, result
    assert result["actions"] == ["%s already stopped: nothing changed" % instance]
    assert result["proved"] == "instance %s state stopped (ec2 DescribeInstances in %s)" % (instance, REGION)
    assert fenced["run"]["recap"]["stopped"]["changed"] == 0 and state(ec2, instance) == "stopped"


def test_missing_instance_refuses_and_touches_nothing(fenced, ec2):
    """The connection comes from this case's fediflow_fence: its target's fediflow_aws_endpoint_url (the role's
    default) names a closed port, so a fence that ignored its own would fail to read, not find one id missing."""
    (instance,), result = fenced["missing"], fenced["run"]["missing"]
    assert result["ok"] is False and result["proved"] == "nothing", result
    assert "instance %s not found" % GHOST in result["detail"] and "nothing was done" in result["detail"]
    assert "source_confirmed_down=true" in result["detail"]  # what to do next
    assert instance not in result["detail"]
    assert state(ec2, instance) == "running" and fenced["run"]["recap"]["missing"]["changed"] == 0


def test_without_a_configured_connection_the_usual_aws_chain_is_used(fenced, ec2):
    """Empty endpoint and keys in the inventory mean the usual AWS credential chain (here the environment; on a
    controller in AWS, its instance profile)."""
    result = fenced["run"]["chain"]
    assert result["ok"] is True and state(ec2, fenced["chain"][0]) == "stopped", result


def test_an_ec2_api_that_does_not_answer_is_no_proof(fenced):
    result = fenced["run"]["no-api"]
    assert result["ok"] is False and result["proved"] == "nothing", result
    assert result["detail"].startswith("aws_ec2 fence of o-no-api (stop, %s): DescribeInstances failed: " % REGION), result["detail"]
    assert result["actions"] == [] and fenced["run"]["recap"]["no-api"]["changed"] == 0


def test_isolate_swaps_the_groups_and_records_the_old_ones(fenced, ec2):
    (instance,), eni, iso, result = fenced["isolate"], fenced["isolate_eni"], fenced["iso"], fenced["run"]["isolate"]
    before = sorted(g["GroupId"] for g in eni["Groups"])
    assert result["ok"] is True, result
    (now,) = interfaces(ec2, instance)
    assert [g["GroupId"] for g in now["Groups"]] == [iso]
    assert {t["Key"]: t["Value"] for t in now.get("TagSet", [])}[TAG] == " ".join(before)
    assert result["previous_security_groups"] == [{
        "instance_id": instance, "network_interface_id": eni["NetworkInterfaceId"], "security_group_ids": before,
        "from": "the interface before this fence"}]
    assert result["proved"].startswith("network interface %s (%s) carries only security groups %s"
                                       % (eni["NetworkInterfaceId"], instance, iso)), result["proved"]
    assert "connections already open are not cut" in result["proved"]
    assert state(ec2, instance) == "running" and fenced["run"]["recap"]["isolate"]["changed"] == 1


def test_isolate_again_changes_nothing_and_reads_the_old_groups_from_the_tag(fenced, ec2, moto, tmp_path):
    (instance,), eni, iso = fenced["isolate"], fenced["isolate_eni"], fenced["iso"]
    run = fence_batch(tmp_path, {"again": fenced["isolate_spec"]}, moto)
    again = run["again"]
    assert again["ok"] is True and run["recap"]["again"]["changed"] == 0, again
    assert again["actions"] == ["%s (%s) already carries only %s: nothing changed" % (eni["NetworkInterfaceId"], instance, iso)]
    assert again["previous_security_groups"][0]["security_group_ids"] == sorted(g["GroupId"] for g in eni["Groups"])
    assert again["previous_security_groups"][0]["from"] == "its tag %s" % TAG
    assert [g["GroupId"] for g in interfaces(ec2, instance)[0]["Groups"]] == [iso]


# --- command -------------------------------------------------------------------------------------------------


def test_command_fence_runs_then_polls_the_proof(fenced):
    result = fenced["run"]["cmd-ok"]
    assert result["ok"] is True and result["detail"] == "", result
    assert fenced["marker"].read_text() == SECRET  # the environment reached the program (and no output held it)
    assert "password ********" in result["fence"]["stdout"]
    assert fenced["counter"].read_text() == "xx" and result["verify"]["attempts"] == 2
    assert result["proved"].startswith("verify command exited 0 (attempt 2,"), result["proved"]
    assert [a.split(":")[0] for a in result["actions"]] == ["ran the fence command", "ran the verify command"]
    assert fenced["run"]["recap"]["cmd-ok"]["changed"] == 1


def test_command_fence_failing_is_not_ok(fenced):
    result = fenced["run"]["cmd-fail"]
    assert result["ok"] is False and result["proved"] == "nothing", result
    assert "exited 3: outlet 4 busy" in result["detail"] and "source_confirmed_down=true" in result["detail"]
    assert not fenced["counter_fail"].exists()  # no proof is looked for after a fence that failed


def test_command_verify_never_passing_is_not_ok(fenced):
    result = fenced["run"]["verify-fail"]
    assert result["ok"] is False, result
    assert "did not exit 0 within 2" in result["detail"] and "outlet 4 on" in result["detail"], result["detail"]
    assert result["verify"]["attempts"] >= 2 and result["verify"]["rc"] == 1


# --- check mode ----------------------------------------------------------------------------------------------


def test_check_mode_predicts_and_changes_nothing(tmp_path, ec2, moto):
    (stop,), (isolate,) = launch(ec2), launch(ec2)
    (eni,), iso = interfaces(ec2, isolate), isolation_group(ec2, isolate)
    marker = tmp_path / "fenced"
    cases = {"stop": ec2_case([stop]),
             "isolate": ec2_case([isolate], action="isolate", isolation_security_group_ids=[iso]),
             "cmd": {"method": "command", "argv": [sys.executable, "-c", FENCE, str(marker)], "environment": {"PDU_PASSWORD": SECRET}},
             "cmd-missing": {"method": "command", "argv": ["/nonexistent/fence-agent", "--off"]}}
    run = fence_batch(tmp_path, cases, moto, "--check")

    assert run["stop"]["ok"] is True and run["stop"]["proved"].startswith("nothing (check mode"), run["stop"]
    assert run["stop"]["actions"] == ["would stop %s (was running) and wait until it is stopped (StopInstances, at most 300 s)" % stop]
    assert state(ec2, stop) == "running"

    assert run["isolate"]["ok"] is True and run["isolate"]["actions"][0].startswith(
        "would replace the security groups of %s (%s): " % (eni["NetworkInterfaceId"], isolate)), run["isolate"]
    (now,) = interfaces(ec2, isolate)
    assert now["Groups"] == eni["Groups"] and not now.get("TagSet")

    assert run["cmd"]["ok"] is True and run["cmd"]["actions"][0].startswith("would run the fence command: %s" % sys.executable)
    assert not marker.exists()
    assert run["cmd-missing"]["ok"] is False
    assert "fence program not found on this host: /nonexistent/fence-agent" in run["cmd-missing"]["detail"]
    # predicted changes: the stop, the swap, the fence command
    assert {name: c["changed"] for name, c in run["recap"].items()} == {"stop": 1, "isolate": 1, "cmd": 1, "cmd-missing": 0}


# --- role ----------------------------------------------------------------------------------------------------


def test_role_fence_records_what_the_named_role_proved(tmp_path):
    """Method role: the role named in fediflow_fence runs its tasks_from, and the region_failover_fence_role_result
    it sets is recorded like any other method's. The lab collection's fence (fediflow.dr_lab.lab, fence.yml) on a
    namespace that does not exist proves nothing: ok=false with the lab fence's own reason, and the play goes on."""
    cases = {"role-lab": {"method": "role", "role": "fediflow.dr_lab.lab", "tasks_from": "fence.yml", "netns": "fdl249-nowhere-1",
                          "data_dir": str(tmp_path / "pgdata"), "os_user": "root", "timeout_s": 2}}
    result = fence_batch(tmp_path / "work", cases, None)["role-lab"]
    assert result["method"] == "role" and result["ok"] is False and result["proved"] == "nothing" and result["actions"] == [], result
    assert "network namespace 'fdl249-nowhere-1' does not exist" in result["detail"], result


# --- validation ----------------------------------------------------------------------------------------------


def test_bad_fence_settings_are_refused_naming_host_and_key(tmp_path):
    bad = {
        "no-ids": {"method": "aws_ec2"},
        "isolate-no-groups": {"method": "aws_ec2", "instance_ids": [GHOST], "action": "isolate"},
        "argv-string": {"method": "command", "argv": "/usr/sbin/fence_ipmilan --off"},
        "typo": {"method": "aws_ec2", "instance_id": [GHOST]},
        "stonith": {"method": "stonith"},
        "bad-action": {"method": "aws_ec2", "instance_ids": [GHOST], "action": "terminate"},
        "verify-string": {"method": "command", "argv": ["/bin/true"], "verify_argv": "/bin/true"},
        "secret-env": {"method": "command", "argv": ["/bin/true"], "environment": {"BAD NAME": SECRET}},
        "role-none": {"method": "role"},
        "role-short": {"method": "role", "role": "lab", "tasks_from": "fence.yml"},
        "role-path": {"method": "role", "role": "fediflow.dr_lab.lab", "tasks_from": "../../x.yml"},
    }
    good = {"ok-ec2": ec2_case([GHOST], action="isolate", isolation_security_group_ids=["sg-0123456789abcdef0"]),
            "ok-cmd": {"method": "command", "argv": ["/bin/true"]},
            "ok-none": {"method": "none"},
            "ok-role": {"method": "role", "role": "fediflow.dr_lab.lab", "tasks_from": "fence.yml", "netns": "fdl6-us-east-1"}}
    proc = play("fence_validate.yml", write_inventory(tmp_path / "hosts.yml", dict(bad, **good)))
    assert proc.returncode != 0
    counts = recap(proc.stdout)
    assert {h: counts["o-%s" % h]["failed"] for h in list(bad) + list(good)} == dict({h: 1 for h in bad}, **{h: 0 for h in good})
    expect = {"no-ids": "key instance_ids must be a non-empty list",
              "isolate-no-groups": "key isolation_security_group_ids must be",
              "argv-string": "key argv must be a non-empty list of strings",
              "typo": "unknown key instance_id for method aws_ec2",
              "stonith": "key method must be one of role, aws_ec2, command, none (got 'stonith')",
              "bad-action": "key action must be stop or isolate (got 'terminate')",
              "verify-string": "key verify_argv, when given, must be",
              "secret-env": "key environment must be a mapping of variable names",
              "role-none": "method role needs key role, the fully qualified name of the role that fences (namespace.collection.role, got nothing)",
              "role-short": "method role needs key role",
              "role-path": "method role needs key role, the fully qualified name of the role that fences (namespace.collection.role, "
                           "got fediflow.dr_lab.lab), and key tasks_from, when given, a task file name of that role (got ../../x.yml)"}
    flat = " ".join(proc.stdout.split())
    for host, text in expect.items():
        assert "fediflow_fence of host o-%s: %s" % (host, text) in flat, (host, proc.stdout[-4000:])
    assert SECRET not in proc.stdout + proc.stderr
