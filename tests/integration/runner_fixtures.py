"""AWX job templates run the way AWX runs them: ansible-runner (the engine AWX uses) with a private
data dir built from the template (extra vars from the survey defaults, the credentials injected as
their credential types say: extra vars or the AWS environment), the project checkout and the
inventory. Artifacts land in the runner's artifact dir. Used by test_ansible_runner (the backup
template) and test_drill (the drill template: the file's one full drill runs through it)."""
import json
import time

import ansible_runner
import yaml

from lab_fixtures import INVENTORY, ROOT, ansible_env

_AWX = yaml.safe_load((ROOT / "awx" / "fediflow-dr.awx.yml").read_text())
TEMPLATES = {t["name"]: t for t in _AWX["job_templates"]}
CREDENTIAL_TYPES = {c["name"]: c for c in _AWX["credential_types"]}


def survey_defaults(template):
    spec = (template["related"]["survey_spec"] or {}).get("spec", [])
    return {q["variable"]: q["default"] for q in spec if q.get("default") not in (None, "")}


def injected(template, lab):
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


def run_template(template_name, lab, private, launch_vars=None):
    """Launch a job template (its job_tags too, as AWX passes them); launch_vars are the extra variables given at launch (as AWX's
    "prompt on launch" passes them) on top of the survey answers. Returns (result, artifacts dir,
    the extra vars given, seconds). The job's whole stdout is also kept under tests/output/playbooks."""
    from lab_fixtures import keep_log  # pylint: disable=import-outside-toplevel
    template = TEMPLATES[template_name]
    extravars, env = injected(template, lab)
    extravars.update(survey_defaults(template))
    extravars.update(launch_vars or {})
    env.update({k: v for k, v in ansible_env().items() if k.startswith("ANSIBLE_") or k == "PATH"})
    private.mkdir(parents=True)
    t0 = time.monotonic()
    result = ansible_runner.run(private_data_dir=str(private), project_dir=str(ROOT), playbook=template["playbook"],
                                inventory=str(INVENTORY), extravars=extravars, tags=template.get("job_tags") or None,
                                envvars=env, quiet=True, ident="job")
    took = time.monotonic() - t0
    artifacts = private / "artifacts" / "job"
    stdout = (artifacts / "stdout").read_text() if (artifacts / "stdout").exists() else ""

    class _Proc:  # what keep_log reads of a finished process
        returncode = result.rc
    _Proc.stdout, _Proc.stderr = stdout, json.dumps({"status": result.status})
    keep_log("awx-" + template_name.replace(" ", "_"), _Proc, took)
    return result, artifacts, extravars, took


def secrets_absent(artifacts, extravars):
    stdout = (artifacts / "stdout").read_text()
    for var, value in extravars.items():
        if "password" in var or "webhook" in var:
            assert value not in stdout, var
