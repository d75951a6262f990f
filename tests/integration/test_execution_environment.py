"""The execution environment AWX runs the collection in: `ansible-builder create` turns
execution-environment.yml into a build context, and `ansible-builder introspect` finds the
collection's own Python and system dependencies (meta/execution-environment.yml) in an installed
copy. Building the image itself needs podman or docker, which this machine does not have: the
test stops at the build context, which is everything the image build consumes."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(tmp):
    cfg = tmp / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(cfg), ANSIBLE_COLLECTIONS_PATH=str(tmp / "coll"))
    return env


def _build_tarball(tmp, dest):
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(dest), str(ROOT)],
                   check=True, capture_output=True, env=_env(tmp))
    return next(dest.glob("fediflow-dr-*.tar.gz"))


def test_builder_creates_the_build_context(tmp_path):
    for name in ("execution-environment.yml", "ee-requirements.yml", "requirements.txt", "bindep.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    tarball = _build_tarball(tmp_path, tmp_path / "ee-collections")
    proc = subprocess.run([str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml", "-c", "ctx"],
                          cwd=tmp_path, capture_output=True, text=True, check=False, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ctx = tmp_path / "ctx"
    containerfile = next(p for p in (ctx / "Containerfile", ctx / "Dockerfile") if p.exists()).read_text()
    assert "ansible-core==2.19.14" in containerfile and "ansible-runner==2.4.3" in containerfile
    assert "ansible-galaxy collection install --no-deps /build/collections/fediflow-dr-" in containerfile
    assert (ctx / "_build" / "collections" / tarball.name).is_file()
    galaxy = yaml.safe_load((ctx / "_build" / "requirements.yml").read_text())
    # the image gets every dependency the tarball declares (a Galaxy install resolves them the same way)
    wanted = set(yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"])
    assert {c["name"] for c in galaxy["collections"]} == wanted
    assert "boto3" in (ctx / "_build" / "requirements.txt").read_text()
    assert "pyrage==" in (ctx / "_build" / "requirements.txt").read_text()  # config_export writes age
    assert "postgresql-client" in (ctx / "_build" / "bindep.txt").read_text()


def test_introspect_finds_the_collection_dependencies(tmp_path):
    tarball = _build_tarball(tmp_path, tmp_path / "dist")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "--no-deps", "-p", str(tmp_path / "coll"),
                    str(tarball)], check=True, capture_output=True, env=_env(tmp_path))
    proc = subprocess.run([str(BIN / "ansible-builder"), "introspect", "--sanitize", str(tmp_path / "coll")],
                          capture_output=True, text=True, check=True, env=_env(tmp_path))
    data = yaml.safe_load(proc.stdout.split("---", 1)[1])
    python = " ".join(data["python"])
    system = " ".join(data["system"])
    for lib in ("boto3", "psycopg2", "kubernetes", "cryptography", "pyrage"):
        assert lib in python and "from collection fediflow.dr" in python, lib
    for pkg in ("postgresql-client", "zstd", "lz4"):
        assert pkg in system, pkg
