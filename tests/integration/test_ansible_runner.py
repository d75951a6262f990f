"""The AWX job templates' playbooks run through ansible-runner (the engine AWX uses) against the
real lab, with a private data dir built the way AWX builds it from a template (runner_fixtures).
The drill template's run (its survey default moves production to eu-west-1 and back) is the one
full drill of test_drill.py, checked there: one full drill per session instead of two."""
import pytest

from runner_fixtures import run_template, secrets_absent

pytestmark = pytest.mark.slow  # long role / playbook runs: not in `make test-quick`


def test_backup_template_under_ansible_runner(lab, tmp_path):
    result, artifacts, extravars, _took = run_template("fediflow.dr backup", lab, tmp_path / "runner")
    assert result.status == "successful" and result.rc == 0, (artifacts / "stdout").read_text()[-3000:]
    assert (artifacts / "job_events").is_dir() and any((artifacts / "job_events").iterdir())
    stats = result.stats
    assert not stats["failures"] and not stats["dark"]
    secrets_absent(artifacts, extravars)
