"""AWX objects as code (awx/fediflow-dr.awx.yml), checked without an AWX server: the resource
kinds are the ones awxkit's `awx import` knows (its own EXPORTABLE_RESOURCES), every reference
points at an object in the file (or a built-in credential type), each job template runs a playbook
of this collection, every survey variable is a documented role argument or playbook variable,
region choices are the inventory's regions, and the schedules are valid RRULEs."""
import re
from pathlib import Path

import pytest
import yaml
from awxkit.api.pages.api import EXPORTABLE_RESOURCES
from dateutil.rrule import rrulestr

ROOT = Path(__file__).resolve().parents[2]
DATA = yaml.safe_load((ROOT / "awx" / "fediflow-dr.awx.yml").read_text(encoding="utf-8"))
BUILTIN_CREDENTIAL_TYPES = {"Amazon Web Services"}


def _role_arguments():
    names = set()
    for spec in ROOT.glob("roles/*/meta/argument_specs.yml"):
        for entry in (yaml.safe_load(spec.read_text(encoding="utf-8"))["argument_specs"] or {}).values():
            names |= set((entry.get("options") or {}))
    return names


def _playbook_variables(playbook):
    """Variables a playbook documents in its header comments (`-e name=...` or `name:`)."""
    header = "".join(line for line in (ROOT / playbook).read_text(encoding="utf-8").splitlines(True)
                     if line.startswith("#"))
    return set(re.findall(r"-e (\w+)=", header)) | set(re.findall(r"^# (\w+):", header, re.M))


def _regions():
    hv = ROOT / "inventories" / "production.example" / "host_vars"
    return sorted(yaml.safe_load(p.read_text(encoding="utf-8"))["fediflow_region"] for p in hv.glob("*.yml"))


def test_only_resource_kinds_awxkit_imports():
    assert set(DATA) <= set(EXPORTABLE_RESOURCES), set(DATA) - set(EXPORTABLE_RESOURCES)


def test_references_resolve():
    keys = {kind: [a["natural_key"] for a in DATA.get(kind, [])] for kind in DATA}
    for template in DATA["job_templates"]:
        assert template["project"] in keys["projects"]
        assert template["inventory"] in keys["inventory"]
        assert template["execution_environment"] in keys["execution_environments"]
        assert template["natural_key"]["organization"] in keys["organizations"]
        for cred in template["related"]["credentials"]:
            ctype = cred["credential_type"]
            assert ctype in keys["credential_types"] or ctype["name"] in BUILTIN_CREDENTIAL_TYPES, ctype
    for schedule in DATA["schedules"] if "schedules" in DATA else []:
        assert schedule["unified_job_template"] in [t["natural_key"] for t in DATA["job_templates"]]


@pytest.mark.parametrize("template", DATA["job_templates"], ids=lambda t: t["name"])
def test_job_template(template):
    assert (ROOT / template["playbook"]).is_file()
    allowed = _role_arguments() | _playbook_variables(template["playbook"])
    survey = template["related"]["survey_spec"]
    assert template["survey_enabled"] == bool(survey)
    for question in (survey or {}).get("spec", []):
        assert question["variable"] in allowed, "%s: %s is neither a role argument nor documented in %s" % (
            template["name"], question["variable"], template["playbook"])
        if question["type"] == "multiplechoice":
            assert question["default"] in question["choices"]
        if question["variable"].endswith("_region"):
            assert sorted(question["choices"]) == _regions()
    for schedule in template["related"]["schedules"]:
        dtstart, rule = schedule["rrule"].split(" ", 1)
        assert next(iter(rrulestr(rule, dtstart=__import__("datetime").datetime.strptime(dtstart[8:], "%Y%m%dT%H%M%SZ"))))


def test_credential_types_inject_inventory_variables():
    inventory = {}
    for p in (ROOT / "inventories" / "production.example" / "group_vars" / "all").glob("*.yml"):
        inventory.update(yaml.safe_load(p.read_text(encoding="utf-8")))
    for ctype in DATA["credential_types"]:
        fields = {f["id"] for f in ctype["inputs"]["fields"]}
        assert all(f.get("secret") for f in ctype["inputs"]["fields"]), "secrets must be masked in AWX"
        for var, value in ctype["injectors"]["extra_vars"].items():
            assert var in inventory, var
            assert re.fullmatch(r"\{\{ (\w+) \}\}", value).group(1) in fields
