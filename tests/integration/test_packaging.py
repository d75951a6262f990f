"""The collection as users get it: `ansible-galaxy collection build` makes a clean tarball, and
`ansible-galaxy collection install` puts it into an empty path together with its dependencies,
resolved by ansible-galaxy itself from galaxy.yml's ranges (no --no-deps). Galaxy is unreachable
here, so the install is --offline and the dependency sources are the installed copies
scripts/setup.sh made from the `ansible` package (.build/collections: a directory with MANIFEST.json
is a source ansible-galaxy accepts, as a tarball is); nothing else is on the collections path (not
this checkout, not the `ansible` package's own collections in the venv's site-packages). From that
path the playbooks, roles and modules resolve: playbooks are syntax-checked (every module and role
must resolve), modules render with ansible-doc. No lab needed for those; one playbook,
fediflow.dr.backup, really runs from the installed copy against the lab (its modules, module_utils,
roles and dependency collections all from the install). The lab is not product: it is its own collection
(fediflow.dr_lab, lab/), and nothing of it - no file, no collection only it needs - is in the tarball."""
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from lab_fixtures import INVENTORY, recap

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEPS = ROOT / ".build" / "collections" / "ansible_collections"
DEPENDENCIES = yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"]
LAB_DEPENDENCIES = yaml.safe_load((ROOT / "lab" / "galaxy.yml").read_text())["dependencies"]
PLAYBOOKS = sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml"))


def _env(collections):
    """No setting of this checkout (its ansible.cfg points at .build/collections): an empty config, and only
    `collections` to find collections in (ansible otherwise also looks in sys.path, where the venv's `ansible`
    package holds hundreds of collections and would hide a missing dependency)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    cfg = Path(collections).parent / "ansible.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("[defaults]\n")
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False", ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(cfg))
    return env


def _install(work, coll, *sources):
    """ansible-galaxy as a user runs it offline: no --no-deps, so it resolves every dependency among `sources`."""
    return subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(coll)] + [str(s) for s in sources],
                          capture_output=True, text=True, check=False, env=_env(coll), cwd=work)


def _dependency_sources():
    sources = {name: DEPS.joinpath(*name.split(".")) for name in DEPENDENCIES}
    missing = sorted(name for name, path in sources.items() if not (path / "MANIFEST.json").is_file())
    assert not missing, "dependency collections missing from %s (run scripts/setup.sh): %s" % (DEPS, missing)
    return sources


def _installed_collections(coll):
    found = {}
    for manifest in (coll / "ansible_collections").glob("*/*/MANIFEST.json"):
        info = json.loads(manifest.read_text())["collection_info"]
        found["%s.%s" % (info["namespace"], info["name"])] = manifest.parent
    return found


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    work = tmp_path_factory.mktemp("build")
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work), str(ROOT)],
                           capture_output=True, text=True, check=False, env=_env(work / "none"))
    assert build.returncode == 0, build.stdout + build.stderr
    return next(work.glob("fediflow-dr-*.tar.gz"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory, tarball):
    work = tmp_path_factory.mktemp("galaxy")
    coll = work / "collections"
    inst = _install(work, coll, tarball, *_dependency_sources().values())
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return {"tarball": tarball, "collections": coll, "work": work}


def test_install_brings_exactly_the_declared_dependencies(installed):
    found = _installed_collections(installed["collections"])
    assert set(found) == {"fediflow.dr"} | set(DEPENDENCIES), sorted(found)
    for name, path in found.items():
        assert not path.is_symlink() and (path / "FILES.json").is_file(), name  # copies made by ansible-galaxy
    with tarfile.open(installed["tarball"]) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["dependencies"] == DEPENDENCIES  # what ansible-galaxy resolved against


def test_install_refuses_without_the_dependencies(tmp_path, tarball):
    """The offline install really resolves: the tarball alone does not install (nothing found elsewhere)."""
    inst = _install(tmp_path, tmp_path / "collections", tarball)
    assert inst.returncode != 0 and "Failed to resolve the requested dependencies" in inst.stderr, inst.stdout + inst.stderr
    assert "dependency of fediflow.dr" in inst.stderr and not _installed_collections(tmp_path / "collections")


def test_install_refuses_a_dependency_older_than_galaxy_yml_allows(tmp_path, tarball):
    """ansible-galaxy checks galaxy.yml's version ranges: a dependency at 0.0.1 is refused, naming the range."""
    name, wanted = next((n, v) for n, v in DEPENDENCIES.items() if str(v).startswith(">="))
    namespace, collection = name.split(".")
    old = tmp_path / "old" / namespace / collection
    old.mkdir(parents=True)
    (old / "FILES.json").write_text(json.dumps({"files": [], "format": 1}))
    info = {"namespace": namespace, "name": collection, "version": "0.0.1", "dependencies": {}, "authors": ["test"],
            "readme": "README.md", "license": [], "license_file": None, "tags": [], "description": "too old",
            "repository": None, "documentation": None, "homepage": None, "issues": None}
    (old / "MANIFEST.json").write_text(json.dumps({"collection_info": info, "format": 1, "file_manifest_file": {
        "name": "FILES.json", "ftype": "file", "chksum_type": "sha256", "chksum_sha256": None, "format": 1}}))
    sources = dict(_dependency_sources(), **{name: old})
    inst = _install(tmp_path, tmp_path / "collections", tarball, *sources.values())
    assert inst.returncode != 0 and "%s:%s" % (name, wanted) in inst.stderr, inst.stdout + inst.stderr
    assert not _installed_collections(tmp_path / "collections")


def test_tarball_is_clean(installed):
    with tarfile.open(installed["tarball"]) as tar:
        names = tar.getnames()
    for bad in (".venv/", ".build/", ".git/", "tests/output/", "__pycache__", ".pytest_cache"):
        assert not [n for n in names if bad in n + "/"], bad
    for needed in ("MANIFEST.json", "meta/runtime.yml", "plugins/modules/pg_promote.py", "roles/region_failover/tasks/main.yml",
                   "playbooks/failover.yml", "roles/dr_drill/files/drill_heartbeat.py", "inventories/production.example/hosts.yml"):
        assert needed in names, needed


def _lab_files():
    """What the lab is made of (its roles, plugins and playbooks), by the names they have in the lab collection (lab/)."""
    lab = ROOT / "lab"
    return sorted({p.relative_to(lab).as_posix() for top in ("roles", "plugins", "playbooks") for p in (lab / top).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts})


def test_no_lab_file_ships(installed):
    """Neither the lab collection's files (under their own names or under lab/) nor the lab's inventory, its tests,
    scenarios and benchmarks are in the tarball: no roles/lab, no lab_* module, no labnet/labfence/process
    module_utils, no lab playbook."""
    with tarfile.open(installed["tarball"]) as tar:
        names = set(tar.getnames())
    lab_files = _lab_files()
    assert {"roles/lab/tasks/main.yml", "plugins/modules/lab_network.py", "plugins/module_utils/labnet.py",
            "playbooks/lab_up.yml"} <= set(lab_files), lab_files[:10]  # the list below really holds the lab
    shipped = sorted(n for n in names if n in set(lab_files))
    assert not shipped, shipped
    lab_like = re.compile(r"^(lab|bench|molecule|inventories/lab|tests/integration)(/|$)|^roles/lab(/|$)|^plugins/modules/lab_"
                          r"|^plugins/module_utils/(labnet|labfence|process)\.py$|^playbooks/lab_")
    assert not sorted(n for n in names if lab_like.search(n))
    # and the playbooks, roles and plugins that ship name nothing of the lab collection (its hooks are generic)
    with tarfile.open(installed["tarball"]) as tar:
        naming = sorted(m.name for m in tar.getmembers() if m.isfile() and m.name.startswith(("playbooks/", "roles/", "plugins/"))
                        and b"fediflow.dr_lab" in tar.extractfile(m).read())
    assert not naming, naming


def test_no_lab_only_dependency_ships(installed):
    """galaxy.yml declares what the product uses; what only the lab uses (community.aws for its SES identities,
    community.crypto for its CA and keys) is the lab collection's dependency, not the product's."""
    with tarfile.open(installed["tarball"]) as tar:
        declared = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]["dependencies"]
    lab_only = sorted(set(LAB_DEPENDENCIES) - set(DEPENDENCIES) - {"fediflow.dr"})
    assert {"community.aws", "community.crypto"} <= set(lab_only), lab_only
    assert not set(declared) & set(lab_only), sorted(declared)
    assert "fediflow.dr_lab" not in declared


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


def test_every_module_documents_from_the_installed_collection(installed):
    env = _env(installed["collections"])
    listing = subprocess.run([str(BIN / "ansible-doc"), "--list", "fediflow.dr", "--json"], capture_output=True, text=True,
                             check=True, env=env, cwd=installed["work"])
    wanted = {"fediflow.dr.%s" % p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__"}
    assert set(json.loads(listing.stdout)) == wanted
    proc = subprocess.run([str(BIN / "ansible-doc"), "-t", "module", "--json"] + sorted(wanted), capture_output=True, text=True,
                          check=False, env=env, cwd=installed["work"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    docs = json.loads(proc.stdout)
    assert set(docs) == wanted
    for name, doc in docs.items():
        assert doc["doc"]["short_description"] and doc["doc"]["options"] is not None and doc["examples"], name
        assert str(installed["collections"]) in doc["doc"]["filename"], name


@pytest.mark.slow
def test_backup_runs_from_the_installed_collection(installed, lab):
    """`ansible-playbook fediflow.dr.backup` with only the tarball's copy and the dependencies ansible-galaxy
    installed beside it on the collections path."""
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
