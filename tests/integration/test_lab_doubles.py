"""Integration tests of the lab's HTTP doubles (lab/roles/lab/files/lab_doubles.py).

No real Kubernetes API server (nor Slack) can run on this machine: every test here
talks to a local double started on a loopback port by doubles_fixtures.py.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest
import requests
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent))  # doubles_fixtures.py sits beside this file, any import mode
from doubles_fixtures import DOUBLES, start_double, write_kubeconfig  # noqa: E402

NS = "fediflow"
ANSIBLE = Path(sys.executable).with_name("ansible")
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def clients(kubeconfig_path):
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig_path))
    return kubernetes.client.AppsV1Api(api), kubernetes.client.CoreV1Api(api)


def writes(double):
    return [r for r in double.requests() if r["method"] != "GET"]


def collections_path():
    """site-packages/ansible_collections of the `ansible` package (holds kubernetes.core)."""
    spec = importlib.util.find_spec("ansible_collections.kubernetes.core")
    return str(Path(spec.submodule_search_locations[0]).parents[2])


def run_module(module, args, tmp_path, *options):
    """`ansible localhost -m MODULE -a JSON` with the json callback; returns the host result."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="False", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
               TMPDIR=str(tmp_path))  # kubernetes.core's discovery cache goes to TMPDIR
    proc = subprocess.run(
        [str(ANSIBLE), "localhost", "-m", module, "-a", json.dumps(args),
         "-e", f"ansible_python_interpreter={sys.executable}", *options],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)  # no repo ansible.cfg
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_official_client_reads_scales_patches_and_restarts(k8s_double, kubeconfig):
    """The API server is a local double (no real Kubernetes can run here): the official
    kubernetes client reads, scales, patches and rollout-restarts against it."""
    apps, core = clients(kubeconfig)
    dep = apps.read_namespaced_deployment("api", NS)
    assert (dep.spec.replicas, dep.status.ready_replicas) == (2, 2)
    assert dep.spec.template.spec.containers[0].image == "ghcr.io/fediflow/api:1.4.2"
    assert [d.metadata.name for d in apps.list_namespaced_deployment(NS).items] == ["api", "worker"]
    assert len(apps.list_deployment_for_all_namespaces().items) == 2

    scale = apps.patch_namespaced_deployment_scale("api", NS, {"spec": {"replicas": 5}})
    assert (scale.kind, scale.spec.replicas) == ("Scale", 5)
    assert apps.read_namespaced_deployment_scale("api", NS).spec.replicas == 5
    dep = apps.read_namespaced_deployment("api", NS)
    assert (dep.spec.replicas, dep.status.replicas, dep.status.ready_replicas, dep.status.available_replicas,
            dep.status.updated_replicas) == (5, 5, 5, 5, 5)
    assert dep.status.observed_generation == dep.metadata.generation == 2

    cm = core.patch_namespaced_config_map("app-config", NS, {"data": {"DATABASE_ROLE": "primary"}})
    assert cm.data == {"DATABASE_ROLE": "primary", "REGION": "eu-west-1"}
    assert core.read_namespaced_config_map("app-config", NS).data["DATABASE_ROLE"] == "primary"

    stamp = "2026-01-01T00:00:00Z"
    before = int(dep.metadata.resource_version)
    apps.patch_namespaced_deployment(
        "api", NS, {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}})
    dep = apps.read_namespaced_deployment("api", NS)
    assert dep.spec.template.metadata.annotations[RESTARTED_AT] == stamp
    assert dep.spec.template.spec.containers[0].image == "ghcr.io/fediflow/api:1.4.2"  # merged, not replaced
    assert dep.status.observed_generation == dep.metadata.generation == 3
    assert int(dep.metadata.resource_version) > before

    recorded = writes(k8s_double)
    assert [(r["method"], r["path"]) for r in recorded] == [
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/api/scale"),
        ("PATCH", f"/api/v1/namespaces/{NS}/configmaps/app-config"),
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/api"),
    ]
    assert recorded[0]["body"] == {"spec": {"replicas": 5}}
    assert recorded[1]["body"] == {"data": {"DATABASE_ROLE": "primary"}}
    assert recorded[2]["body"]["spec"]["template"]["metadata"]["annotations"] == {RESTARTED_AT: stamp}
    assert recorded[2]["content_type"] == "application/strategic-merge-patch+json"
    lines = [json.loads(line) for line in k8s_double.record.read_text().splitlines()]
    assert lines == k8s_double.requests()
    assert any(r["path"] == f"/apis/apps/v1/namespaces/{NS}/deployments/api" and r["method"] == "GET" for r in lines)
    k8s_double.clear()
    assert k8s_double.requests() == [] and k8s_double.record.read_text() == ""


def test_state_survives_restart_and_sigterm_is_clean(k8s_double, kubeconfig, seed_file):
    """The API server is a local double (no real Kubernetes can run here); its state file
    is reloaded on restart, so a scale survives it and the seed is not re-applied; two
    doubles sharing a directory keep separate states."""
    apps = clients(kubeconfig)[0]
    apps.patch_namespaced_deployment_scale("worker", NS, {"spec": {"replicas": 4}})
    assert k8s_double.stop() == 0
    state = json.loads(k8s_double.record.with_suffix(".state.json").read_text())
    assert state["objects"]["deployments"][f"{NS}/worker"]["spec"]["replicas"] == 4
    workdir = k8s_double.record.parent
    again = start_double("k8s", workdir, "--seed", seed_file)
    other = start_double("k8s", workdir, "--seed", seed_file, name="other-region")  # same dir, own state
    try:
        apps = clients(write_kubeconfig(workdir / "kc2", again.url))[0]
        assert apps.read_namespaced_deployment("worker", NS).spec.replicas == 4
        apps = clients(write_kubeconfig(workdir / "kc3", other.url))[0]
        assert apps.read_namespaced_deployment("worker", NS).spec.replicas == 1
    finally:
        assert again.stop() == 0 and other.stop() == 0


def test_not_found_and_already_exists_are_kubernetes_status(k8s_double, kubeconfig):
    """The API server is a local double (no real Kubernetes can run here); its errors
    are kind: Status objects like a real API server's."""
    apps, core = clients(kubeconfig)
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("missing", NS)
    body = json.loads(err.value.body)
    assert err.value.status == 404
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "NotFound", 404)
    assert body["details"] == {"name": "missing", "group": "apps", "kind": "deployments"}
    raw = requests.get(f"{k8s_double.url}/api/v1/namespaces/{NS}/secrets/nope", timeout=5)
    assert (raw.status_code, raw.json()["reason"], raw.json()["message"]) == (404, "NotFound", 'secrets "nope" not found')

    manifest = {"metadata": {"name": "app-config"}, "data": {"X": "1"}}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, manifest)
    body = json.loads(err.value.body)
    assert (err.value.status, body["kind"], body["reason"], body["code"]) == (409, "Status", "AlreadyExists", 409)

    created = core.create_namespaced_config_map(NS, {"metadata": {"name": "drill"}, "data": {"A": "b"}})
    assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.resource_version
    assert core.delete_namespaced_config_map("drill", NS).status == "Success"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("drill", NS)
    assert err.value.status == 404


def test_bearer_token_is_enforced(tmp_path, seed_file):
    """The API server is a local double (no real Kubernetes can run here); with
    --token-file it answers 401 Status without the right bearer token."""
    (tmp_path / "token").write_text("s3cr3t-lab-token\n")
    double = start_double("k8s", tmp_path / "auth", "--seed", seed_file, "--token-file", tmp_path / "token")
    try:
        url = f"{double.url}/apis/apps/v1/namespaces/{NS}/deployments/api"
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            resp = requests.get(url, headers=headers, timeout=5)
            assert resp.status_code == 401
            assert (resp.json()["kind"], resp.json()["reason"]) == ("Status", "Unauthorized")
        ok = requests.get(url, headers={"Authorization": "Bearer s3cr3t-lab-token"}, timeout=5)
        assert ok.status_code == 200 and ok.json()["metadata"]["name"] == "api"
        apps = clients(write_kubeconfig(tmp_path / "kc", double.url, token="s3cr3t-lab-token"))[0]
        assert apps.read_namespaced_deployment("api", NS).spec.replicas == 2
        apps = clients(write_kubeconfig(tmp_path / "kc-bad", double.url, token="nope"))[0]
        with pytest.raises(ApiException) as err:
            apps.read_namespaced_deployment("api", NS)
        assert err.value.status == 401
        assert "s3cr3t-lab-token" not in double.record.read_text()
        assert [r["status"] for r in double.requests()][:3] == [401, 401, 200]
    finally:
        double.stop()


def test_ansible_k8s_info(k8s_double, kubeconfig, tmp_path):
    """The API server is a local double (no real Kubernetes can run here);
    kubernetes.core.k8s_info discovers and lists deployments through it."""
    result = run_module("kubernetes.core.k8s_info", {
        "kubeconfig": str(kubeconfig), "api_version": "apps/v1", "kind": "Deployment", "namespace": NS,
        "label_selectors": ["app=api"]}, tmp_path)
    assert result["api_found"] is True
    assert [(r["metadata"]["name"], r["spec"]["replicas"]) for r in result["resources"]] == [("api", 2)]
    paths = {r["path"] for r in k8s_double.requests()}
    assert {"/version", "/apis", "/apis/apps/v1", f"/apis/apps/v1/namespaces/{NS}/deployments"} <= paths


def test_ansible_k8s_scale(k8s_double, kubeconfig, tmp_path):
    """The API server is a local double (no real Kubernetes can run here);
    kubernetes.core.k8s_scale patches the scale subresource and its wait succeeds."""
    result = run_module("kubernetes.core.k8s_scale", {
        "kubeconfig": str(kubeconfig), "api_version": "apps/v1", "kind": "Deployment", "namespace": NS,
        "name": "api", "replicas": 3, "wait": True, "wait_timeout": 30}, tmp_path)
    assert result["changed"] is True
    assert (result["result"]["spec"]["replicas"], result["result"]["status"]["readyReplicas"]) == (3, 3)
    scale_patches = [r for r in writes(k8s_double) if r["path"].endswith("/deployments/api/scale")]
    assert [(r["method"], r["body"]["spec"]) for r in scale_patches] == [("PATCH", {"replicas": 3})]
    apps = clients(kubeconfig)[0]
    assert apps.read_namespaced_deployment_scale("api", NS).spec.replicas == 3


def test_ansible_k8s_patched(k8s_double, kubeconfig, tmp_path):
    """The API server is a local double (no real Kubernetes can run here);
    kubernetes.core.k8s state=patched flips DATABASE_ROLE (check mode stores nothing)
    and restarts a deployment."""
    base = {"kubeconfig": str(kubeconfig), "state": "patched"}
    promote = dict(base, definition={"apiVersion": "v1", "kind": "ConfigMap", "data": {"DATABASE_ROLE": "primary"},
                                     "metadata": {"name": "app-config", "namespace": NS}})
    result = run_module("kubernetes.core.k8s", promote, tmp_path, "--check")  # sends ?dryRun=All
    assert result["changed"] is True and result["result"]["data"]["DATABASE_ROLE"] == "primary"
    (dry,) = writes(k8s_double)
    assert dry["query"] == {"dryRun": "All"}
    core = clients(kubeconfig)[1]
    assert core.read_namespaced_config_map("app-config", NS).data["DATABASE_ROLE"] == "standby"
    k8s_double.clear()

    result = run_module("kubernetes.core.k8s", promote, tmp_path)
    assert result["changed"] is True
    assert result["result"]["data"] == {"DATABASE_ROLE": "primary", "REGION": "eu-west-1"}
    result = run_module("kubernetes.core.k8s", dict(base, definition={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "worker", "namespace": NS},
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2026-01-01T00:00:00Z"}}}}}), tmp_path)
    assert result["changed"] is True
    assert result["result"]["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == "2026-01-01T00:00:00Z"
    patches = [(r["method"], r["path"]) for r in writes(k8s_double)]
    assert patches == [("PATCH", f"/api/v1/namespaces/{NS}/configmaps/app-config"),
                       ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/worker")]
    assert core.read_namespaced_config_map("app-config", NS).data["DATABASE_ROLE"] == "primary"


def test_slack_records_posted_message(slack_double):
    """The Slack webhook is a local double, as is the lab's Kubernetes API server (no real
    Kubernetes or Slack can run here); a posted message is answered ok and recorded."""
    message = {"text": "DR drill: failover to eu-central-1 complete", "blocks": []}
    resp = requests.post(f"{slack_double.url}/services/T000/B000/XXXX", json=message, timeout=5)
    assert (resp.status_code, resp.text) == (200, "ok")
    (entry,) = slack_double.requests()
    assert (entry["method"], entry["path"], entry["body"]) == ("POST", "/services/T000/B000/XXXX", message)
    assert json.loads(slack_double.record.read_text()) == entry


def test_slack_rejects_invalid_json(slack_double):
    """The Slack webhook is a local double, as is the lab's Kubernetes API server (no real
    Kubernetes or Slack can run here); a body that is not JSON gets 400 invalid_payload."""
    resp = requests.post(f"{slack_double.url}/services/T/B/X", data="{not json",
                         headers={"Content-Type": "application/json"}, timeout=5)
    assert (resp.status_code, resp.text) == (400, "invalid_payload")
    (entry,) = slack_double.requests()
    assert (entry["status"], entry["body"], entry["raw"]) == (400, None, "{not json")


def test_slack_fail_injection(slack_double):
    """The Slack webhook is a local double, as is the lab's Kubernetes API server (no real
    Kubernetes or Slack can run here); POST /_fail makes the next N posts fail."""
    resp = requests.post(f"{slack_double.url}/_fail", json={"count": 2, "status": 500}, timeout=5)
    assert resp.status_code == 200
    hook = f"{slack_double.url}/services/T/B/X"
    codes = [requests.post(hook, json={"text": f"try {i}"}, timeout=5).status_code for i in range(3)]
    assert codes == [500, 500, 200]
    assert [(r["path"], r["status"]) for r in slack_double.requests()] == [("/services/T/B/X", s) for s in codes]
    requests.post(f"{slack_double.url}/_fail", json={"count": 1, "status": 429}, timeout=5)
    limited = requests.post(hook, json={"text": "rate"}, timeout=5)
    assert (limited.status_code, limited.headers.get("Retry-After")) == (429, "1")
    assert slack_double.stop() == 0  # SIGTERM is a clean shutdown


def test_app_healthz_follows_ready_replicas_and_database_role(k8s_double, kubeconfig):
    """The API server is a local double (no real Kubernetes can run here); its /_app/healthz stands
    for the application's health URL behind the region's ingress: 200 only while the api deployment
    has ready replicas and app-config says DATABASE_ROLE=primary. It is not recorded."""
    apps, core = clients(kubeconfig)
    url = f"{k8s_double.url}/_app/healthz"

    def health():
        resp = requests.get(url, timeout=5)
        return resp.status_code, resp.json()

    assert health() == (503, {"ok": False, "deployment": "api", "ready_replicas": 2, "database_role": "standby"})
    core.patch_namespaced_config_map("app-config", NS, {"data": {"DATABASE_ROLE": "primary"}})
    assert health() == (200, {"ok": True, "deployment": "api", "ready_replicas": 2, "database_role": "primary"})
    apps.patch_namespaced_deployment_scale("api", NS, {"spec": {"replicas": 0}})
    assert health() == (503, {"ok": False, "deployment": "api", "ready_replicas": 0, "database_role": "primary"})
    apps.patch_namespaced_deployment_scale("api", NS, {"spec": {"replicas": 1}})
    assert health()[0] == 200
    core.delete_namespaced_config_map("app-config", NS)
    assert health() == (503, {"ok": False, "deployment": "api", "ready_replicas": 1, "database_role": None})
    assert requests.post(url, json={}, timeout=5).status_code == 405
    assert not [r for r in k8s_double.requests() if r["path"] == "/_app/healthz"]
    assert "_app/healthz" not in k8s_double.log.read_text()


def test_app_healthz_is_open_and_its_target_configurable(tmp_path, seed_file):
    """The API server is a local double (no real Kubernetes can run here); /_app/healthz needs no
    token (the ingress is not the API) and watches --app-deployment / --app-namespace / --app-configmap."""
    (tmp_path / "token").write_text("s3cr3t-lab-token\n")
    double = start_double("k8s", tmp_path / "auth", "--seed", seed_file, "--token-file", tmp_path / "token",
                          "--app-deployment", "worker")
    other = start_double("k8s", tmp_path / "other", "--seed", seed_file, "--app-namespace", "elsewhere")
    try:
        resp = requests.get(f"{double.url}/_app/healthz", timeout=5)
        assert (resp.status_code, resp.json()) == (
            503, {"ok": False, "deployment": "worker", "ready_replicas": 1, "database_role": "standby"})
        assert requests.get(f"{double.url}/apis/apps/v1/namespaces/{NS}/deployments/api", timeout=5).status_code == 401
        resp = requests.get(f"{other.url}/_app/healthz", timeout=5)  # nothing there
        assert (resp.status_code, resp.json()) == (
            503, {"ok": False, "deployment": "api", "ready_replicas": 0, "database_role": None})
    finally:
        assert double.stop() == 0 and other.stop() == 0


def test_web_double_answers_nodeinfo_for_its_peers(tmp_path):
    """Federation peers are a local double (no real peer instance can run here): nodeinfo
    discovery answers for each --peer NAME, 404 for others; requests are recorded."""
    web = start_double("web", tmp_path / "web", "--peer", "mastodon.example", "--peer", "pixel.example")
    try:
        resp = requests.get(f"{web.url}/peers/mastodon.example/.well-known/nodeinfo", timeout=5)
        assert resp.status_code == 200
        (link,) = resp.json()["links"]
        assert link == {"rel": "http://nodeinfo.diaspora.software/ns/schema/2.0",
                        "href": f"{web.url}/peers/mastodon.example/nodeinfo/2.0"}
        info = requests.get(link["href"], timeout=5).json()
        assert (info["version"], info["protocols"], info["metadata"]) == (
            "2.0", ["activitypub"], {"nodeName": "mastodon.example"})
        assert requests.get(f"{web.url}/peers/pixel.example/.well-known/nodeinfo", timeout=5).status_code == 200
        gone = requests.get(f"{web.url}/peers/gone.example/.well-known/nodeinfo", timeout=5)
        assert (gone.status_code, gone.json()) == (404, {"error": "not found"})
        assert requests.get(f"{web.url}/elsewhere", timeout=5).status_code == 404
        assert requests.post(f"{web.url}/peers/pixel.example/.well-known/nodeinfo", timeout=5).status_code == 405
        assert requests.get(f"{web.url}/healthz", timeout=5).text == "ok"
        assert [(r["method"], r["path"], r["status"]) for r in web.requests()] == [
            ("GET", "/peers/mastodon.example/.well-known/nodeinfo", 200),
            ("GET", "/peers/mastodon.example/nodeinfo/2.0", 200),
            ("GET", "/peers/pixel.example/.well-known/nodeinfo", 200),
            ("GET", "/peers/gone.example/.well-known/nodeinfo", 404),
            ("GET", "/elsewhere", 404),
            ("POST", "/peers/pixel.example/.well-known/nodeinfo", 405)]
    finally:
        assert web.stop() == 0  # SIGTERM is a clean shutdown


def test_web_double_needs_a_peer(tmp_path):
    """Federation peers are a local double; without --peer it refuses to start."""
    proc = subprocess.run([sys.executable, str(DOUBLES), "web", "--port", "1", "--record", str(tmp_path / "r.jsonl")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "--peer" in proc.stderr
