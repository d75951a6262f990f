"""The AWX job templates' playbooks run through ansible-runner (the engine AWX uses) against the
real lab, with a private data dir built the way AWX builds it from a template: extra vars from the
survey defaults, the credentials injected as the credential types say (extra vars / AWS
environment), the project checkout and the inventory. Artifacts land in the runner's artifact dir.
The drill template's default moves production to eu-west-1 and back (the lab's Kubernetes API and
Slack are local doubles)."""
import json
from pathlib import Path

import ansible_runner
import pytest
import yaml

from lab_fixtures import INVENTORY, ROOT, ansible_env, lab_is_home, rebuild_lab_unless_home

pytestmark = pytest.mark.slow  # long role / playbook runs: not in `make test-quick`

TEMPLATES = {t["name"]: t for t in yaml.safe_load((ROOT / "awx" / "fediflow-dr.awx.yml").read_text())["job_templates"]}
CREDENTIAL_TYPES = {c["name"]: c for c in yaml.safe_load((ROOT / "awx" / "fediflow-dr.awx.yml").read_text())["credential_types"]}


def _survey_defaults(template):
    spec = (template["related"]["survey_spec"] or {}).get("spec", [])
    return {q["variable"]: q["default"] for q in spec if q.get("default") not in (None, "")}


def _injected(template, lab):
    """What AWX injects for the template's credentials, with the lab's values as the inputs."""
    primary = lab["primary"]
    inputs = {"FediFlow PostgreSQL": {"superuser_password": primary["fediflow_pg_superuser_password"],
                                      "replication_password": primary["fediflow_replication_password"]},
              "FediFlow Slack webhook": {"webhook_url": primary["fediflow_slack_webhook_url"]}}
    extravars, env = {}, {}
    for cred in template["related"]["credentials"]:
        ctype = cred["credential_type"]["name"]
        if ctype == "Amazon Web Services":  # AWX's built-in type: environment variables
            env.update(AWS_ACCESS_KEY_ID=primary["fediflow_aws_access_key"],
                       AWS_SECRET_ACCESS_KEY=primary["fediflow_aws_secret_key"])
            continue
        for var, value in CREDENTIAL_TYPES[ctype]["injectors"]["extra_vars"].items():
            field = value.strip("{} ")
            extravars[var] = inputs[ctype][field]
    return extravars, env


def _run(template_name, lab, tmp_path):
    template = TEMPLATES[template_name]
    extravars, env = _injected(template, lab)
    extravars.update(_survey_defaults(template))
    env.update({k: v for k, v in ansible_env().items() if k.startswith("ANSIBLE_") or k == "PATH"})
    private = tmp_path / "runner"
    private.mkdir()
    result = ansible_runner.run(private_data_dir=str(private), project_dir=str(ROOT), playbook=template["playbook"],
                                inventory=str(INVENTORY), extravars=extravars,
                                envvars=env, quiet=True, ident="job")
    artifacts = private / "artifacts" / "job"
    return result, artifacts, extravars


def _secrets_absent(artifacts, extravars):
    stdout = (artifacts / "stdout").read_text()
    for var, value in extravars.items():
        if "password" in var or "webhook" in var:
            assert value not in stdout, var


def test_backup_template_under_ansible_runner(lab, tmp_path):
    result, artifacts, extravars = _run("fediflow.dr backup", lab, tmp_path)
    assert result.status == "successful" and result.rc == 0, (artifacts / "stdout").read_text()[-3000:]
    assert (artifacts / "job_events").is_dir() and any((artifacts / "job_events").iterdir())
    stats = result.stats
    assert not stats["failures"] and not stats["dark"]
    _secrets_absent(artifacts, extravars)


@pytest.mark.restarts_lab
def test_drill_template_under_ansible_runner(lab, tmp_path):
    primary, standby = lab["primary"], lab["standby"]
    assert lab_is_home(primary, standby)
    try:
        result, artifacts, extravars = _run("fediflow.dr DR drill", lab, tmp_path)
        assert result.status == "successful" and result.rc == 0, (artifacts / "stdout").read_text()[-3000:]
        assert extravars["drill_failover"] == "true"  # the survey default: the full drill
        report = json.loads(Path(primary["fediflow_lab_dir"], "reports", "latest.json").read_text())
        assert report["ok"] and {"region-failover", "failback"} <= {s["name"] for s in report["steps"]}
        assert lab_is_home(primary, standby)
        _secrets_absent(artifacts, extravars)
    finally:
        rebuild_lab_unless_home(primary, standby, ROOT / "tests" / "output" / "runner-logs")
