"""Start the lab's local HTTP doubles (lab/roles/lab/files/lab_doubles.py) for tests.

No real Kubernetes API server or Slack can run on this machine, so tests talk to
the doubles, each started as a subprocess on a free loopback port and polled on
/healthz until it answers (bounded by a deadline).
"""
import json
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
DOUBLES = ROOT / "lab" / "roles" / "lab" / "files" / "lab_doubles.py"
SEED = {
    "namespaces": {
        "fediflow": {
            "deployments": {
                "api": {"replicas": 2, "image": "ghcr.io/fediflow/api:1.4.2"},
                "worker": {"replicas": 1, "image": "ghcr.io/fediflow/worker:1.4.2"},
            },
            "configmaps": {"app-config": {"DATABASE_ROLE": "standby", "REGION": "eu-west-1"}},
            "secrets": {"db-credentials": {"password": "lab-only"}},
        }
    }
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc, timeout=10):
    """SIGTERM and wait (SIGKILL after ``timeout``); the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


@dataclass
class Double:
    proc: subprocess.Popen
    url: str
    record: Path
    log: Path
    args: list

    def requests(self):
        with urllib.request.urlopen(self.url + "/_requests", timeout=5) as resp:
            return json.load(resp)

    def clear(self):
        req = urllib.request.Request(self.url + "/_requests", method="DELETE")
        urllib.request.urlopen(req, timeout=5).close()

    def stop(self, timeout=10):
        """SIGTERM and wait; returns the exit code (0 = clean shutdown)."""
        return stop_process(self.proc, timeout)


def start_double(kind, workdir, *extra, name=None, deadline=20.0):
    """Start `lab_doubles.py KIND` on a free loopback port; wait until /healthz is ok.

    Its files are WORKDIR/NAME_requests.jsonl (record; a k8s double keeps its state in
    NAME_requests.state.json beside it) and WORKDIR/NAME.log; NAME defaults to KIND."""
    workdir, name = Path(workdir), name or kind
    workdir.mkdir(parents=True, exist_ok=True)
    record, log = workdir / f"{name}_requests.jsonl", workdir / f"{name}.log"
    for _attempt in range(3):  # another process may grab the port between probe and bind
        port = free_port()
        args = [sys.executable, str(DOUBLES), kind, "--host", "127.0.0.1", "--port", str(port),
                "--record", str(record), *map(str, extra)]
        with open(log, "ab") as err:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        double = Double(proc, f"http://127.0.0.1:{port}", record, log, args)
        end = time.monotonic() + deadline
        while time.monotonic() < end and proc.poll() is None:
            try:
                with urllib.request.urlopen(double.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200 and resp.read() == b"ok":
                        return double
            except OSError:
                time.sleep(0.05)  # poll interval inside the deadline
        double.stop()
    raise RuntimeError(f"{kind} double did not become healthy:\n{log.read_text()}")


def write_kubeconfig(path, server, token=None):
    user = {"token": token} if token else {}
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": server}}],
        "users": [{"name": "lab", "user": user}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab", "namespace": "fediflow"}}],
    }
    Path(path).write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    return Path(path)


@dataclass
class Moto:
    proc: subprocess.Popen
    url: str
    log: Path

    def data(self):
        """moto's backend models as JSON (GET /moto-api/data.json): what a test can observe over HTTP
        (SES messages, SNS SMS and topic notifications, ...)."""
        with urllib.request.urlopen(self.url + "/moto-api/data.json", timeout=10) as resp:
            return json.load(resp)

    def stop(self, timeout=10):
        return stop_process(self.proc, timeout)


def start_moto(workdir, deadline=30.0):
    """A private moto_server (the venv's) on a free loopback port, polled on /moto-api/ until it answers."""
    log = Path(workdir) / "moto.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    moto_server = Path(sys.executable).parent / "moto_server"
    for _attempt in range(3):  # another process may take the port between probe and bind
        port = free_port()
        url = "http://127.0.0.1:%d" % port
        with open(log, "ab") as err:
            proc = subprocess.Popen([str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        moto = Moto(proc, url, log)
        end = time.monotonic() + deadline
        while time.monotonic() < end and proc.poll() is None:
            try:
                with urllib.request.urlopen(url + "/moto-api/", timeout=1) as resp:
                    if resp.status == 200:
                        return moto
            except OSError:
                time.sleep(0.1)  # poll interval inside the deadline
        moto.stop()
    raise RuntimeError("moto_server did not answer:\n%s" % log.read_text())
