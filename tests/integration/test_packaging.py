"""The collection as users get it: `ansible-galaxy collection build` makes a clean tarball,
`ansible-galaxy collection install` puts it into an empty path, and the playbooks, roles and
modules resolve from that installed copy (not from this checkout). No lab needed: playbooks are
syntax-checked (every module and role must resolve), modules render with ansible-doc. One playbook, fediflow.dr.backup, really runs from the
installed copy against the lab (its modules, module_utils and roles all from the tarball)."""
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lab_fixtures import INVENTORY, recap

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEPS = ROOT / ".build" / "collections" / "ansible_collections"
PLAYBOOKS = sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml"))


def _env(collections):
    """No setting of this checkout (its ansible.cfg points at .build/collections): an empty config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    cfg = Path(collections).parent / "ansible.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("[defaults]\n")
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(cfg))
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("galaxy")
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work), str(ROOT)],
                           capture_output=True, text=True, check=False, env=_env(work / "none"))
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next(work.glob("fediflow-dr-*.tar.gz"))
    coll = work / "collections"
    # the dependency collections, linked in so that only fediflow.dr comes from the tarball
    for ns in ("amazon", "community", "kubernetes"):
        (coll / "ansible_collections").mkdir(parents=True, exist_ok=True)
        os.symlink(DEPS / ns, coll / "ansible_collections" / ns)
    inst = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "--no-deps", "-p", str(coll), str(tarball)],
                          capture_output=True, text=True, check=False, env=_env(coll), cwd=work)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return {"tarball": tarball, "collections": coll, "work": work}


def test_tarball_is_clean(installed):
    with tarfile.open(installed["tarball"]) as tar:
        names = tar.getnames()
    for bad in (".venv/", ".build/", ".git/", "tests/output/", "__pycache__", ".pytest_cache"):
        assert not [n for n in names if bad in n + "/"], bad
    for needed in ("MANIFEST.json", "meta/runtime.yml", "plugins/modules/pg_promote.py", "roles/region_failover/tasks/main.yml",
                   "playbooks/failover.yml", "roles/dr_drill/files/drill_heartbeat.py", "inventories/lab/hosts.yml"):
        assert needed in names, needed


def test_installed_copy_is_the_one_used(installed):
    dest = installed["collections"] / "ansible_collections" / "fediflow" / "dr"
    assert (dest / "MANIFEST.json").is_file() and not dest.is_symlink()
    listing = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "list", "fediflow.dr"], capture_output=True,
                             text=True, check=True, env=_env(installed["collections"]), cwd=installed["work"])
    assert str(installed["collections"]) in listing.stdout and str(ROOT) not in listing.stdout


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_playbook_resolves_from_the_installed_collection(installed, name):
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "--syntax-check", "fediflow.dr.%s" % name],
                          capture_output=True, text=True, check=False, env=_env(installed["collections"]),
                          cwd=installed["work"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert str(installed["collections"]) in proc.stdout or "playbook:" in proc.stdout


def test_modules_document_from_the_installed_collection(installed):
    proc = subprocess.run([str(BIN / "ansible-doc"), "--list", "fediflow.dr", "--json"], capture_output=True, text=True,
                          check=True, env=_env(installed["collections"]), cwd=installed["work"])
    modules = set(__import__("json").loads(proc.stdout))
    assert {"fediflow.dr.pg_promote", "fediflow.dr.route53_failover", "fediflow.dr.k8s_failover", "fediflow.dr.incident_notify",
            "fediflow.dr.health_check", "fediflow.dr.dr_report", "fediflow.dr.pg_backup_verify"} <= modules


@pytest.mark.slow
def test_backup_runs_from_the_installed_collection(installed, lab):
    """`ansible-playbook fediflow.dr.backup` with only the tarball's copy on the collections path."""
    coll = installed["collections"]
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(INVENTORY), "-vv", "fediflow.dr.backup",
                           "-e", "ansible_python_interpreter=%s" % sys.executable],
                          capture_output=True, text=True, check=False, env=_env(coll), cwd=installed["work"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    counters = recap(proc.stdout)
    assert counters and all(c["failed"] == 0 for c in counters.values()), counters
    # -vv prints every task's path: all of them are in the installed copy, none in this checkout
    paths = re.findall(r"^task path: (\S+):\d+$", proc.stdout, re.M)
    dest = str(coll / "ansible_collections" / "fediflow" / "dr") + "/"
    assert paths and all(p.startswith(dest) for p in paths), sorted(set(p for p in paths if not p.startswith(dest)))[:5]
