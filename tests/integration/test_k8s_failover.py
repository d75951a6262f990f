"""fediflow.dr.k8s_failover driven through ansible like a user does.

The Kubernetes API here is a local double (lab/roles/lab/files/lab_doubles.py, started per test on a
free loopback port; no API server can run on this machine), reached with the official kubernetes
client through a kubeconfig or host + api_key. It does not use the shared lab. The outcome is
checked independently: the double's objects read over HTTP, and its /_requests record of every
call made (method, path, patch body). The double is always rolled out at once, so the waiting
itself is covered by the unit tier.
"""
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from doubles_fixtures import start_double, write_kubeconfig
from lab_fixtures import module

MODULE = "fediflow.dr.k8s_failover"
NS = "fediflow"
APPS = "/apis/apps/v1/namespaces/%s/deployments" % NS
CONFIGMAP = "/api/v1/namespaces/%s/configmaps/app-config" % NS
RESTART = "kubectl.kubernetes.io/restartedAt"
OTHER_VALUE = "smtp-pw-7f3c2a9e-never-in-output"


def _http(url, method="GET", body=None, content_type="application/merge-patch+json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": content_type} if data else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)


def _state(double):
    """Replicas, restart annotations and configmap data as the double holds them."""
    deps = {}
    for name in ("api", "worker"):
        dep = _http("%s%s/%s" % (double.url, APPS, name))
        annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
        deps[name] = {"replicas": dep["spec"]["replicas"], "restartedAt": annotations.get(RESTART),
                      "generation": dep["metadata"]["generation"]}
    return {"deployments": deps, "configmap": _http(double.url + CONFIGMAP)["data"]}


def _writes(double):
    return [(r["method"], r["path"], r["body"]) for r in double.requests() if r["method"] != "GET"]


def _args(kubeconfig, **kw):
    args = {"kubeconfig": str(kubeconfig), "namespace": NS, "replicas": {"api": 5, "worker": 3},
            "configmap": "app-config", "configmap_data": {"DATABASE_ROLE": "primary"}}
    args.update(kw)
    return args


@pytest.fixture
def cluster(k8s_double):
    """The seeded double (api 2, worker 1, DATABASE_ROLE=standby) plus a configmap key that is not
    the module's business; the request record starts empty."""
    _http(k8s_double.url + CONFIGMAP, "PATCH", {"data": {"SMTP_PASSWORD": OTHER_VALUE}})
    k8s_double.clear()
    return k8s_double


def test_failover_scales_patches_restarts_then_a_second_run_changes_nothing(cluster, kubeconfig):
    res = module(MODULE, _args(kubeconfig), diff=True)
    assert res.get("failed") is not True, res.get("msg")
    assert res["changed"] is True and res["namespace"] == NS
    assert res["deployments"] == {"api": {"replicas_before": 2, "replicas_after": 5, "restarted": True, "ready": True},
                                  "worker": {"replicas_before": 1, "replicas_after": 3, "restarted": True,
                                             "ready": True}}
    assert res["configmap"] == {"name": "app-config", "changed": True, "before": {"DATABASE_ROLE": "standby"},
                                "after": {"DATABASE_ROLE": "primary"}}
    assert res["restarted"] == ["api", "worker"]
    assert set(res["phases"]) == {"read", "configmap", "scale", "restart", "wait"} and res["duration_s"] > 0
    assert res["diff"]["before"]["deployments"]["api"]["replicas"] == 2
    assert res["diff"]["after"]["configmap"] == {"app-config": {"DATABASE_ROLE": "primary"}}
    assert OTHER_VALUE not in json.dumps(res) and "eu-west-1" not in json.dumps(res)

    state = _state(cluster)
    assert state["configmap"] == {"DATABASE_ROLE": "primary", "REGION": "eu-west-1", "SMTP_PASSWORD": OTHER_VALUE}
    assert {n: d["replicas"] for n, d in state["deployments"].items()} == {"api": 5, "worker": 3}
    assert all(d["restartedAt"] for d in state["deployments"].values())
    writes = _writes(cluster)
    assert [(m, p) for m, p, _b in writes] == [
        ("PATCH", CONFIGMAP), ("PATCH", APPS + "/api/scale"), ("PATCH", APPS + "/worker/scale"),
        ("PATCH", APPS + "/api"), ("PATCH", APPS + "/worker")]
    assert writes[0][2] == {"data": {"DATABASE_ROLE": "primary"}}  # only the named key is sent
    assert writes[1][2] == {"spec": {"replicas": 5}} and writes[2][2] == {"spec": {"replicas": 3}}
    assert writes[3][2]["spec"]["template"]["metadata"]["annotations"][RESTART] \
        == state["deployments"]["api"]["restartedAt"]

    cluster.clear()
    again = module(MODULE, _args(kubeconfig), diff=True)
    assert again["changed"] is False and again["restarted"] == [] and again["actions"] == []
    assert {n: d["ready"] for n, d in again["deployments"].items()} == {"api": True, "worker": True}
    assert cluster.requests() and _writes(cluster) == []
    assert _state(cluster) == state


def test_check_mode_writes_nothing_and_predicts_the_real_run(cluster, kubeconfig):
    before = _state(cluster)
    predicted = module(MODULE, _args(kubeconfig), check_mode=True, diff=True)
    assert predicted["changed"] is True and predicted["restarted"] == ["api", "worker"]
    assert predicted["diff"]["after"]["deployments"]["worker"]["replicas"] == 3
    assert _writes(cluster) == [] and _state(cluster) == before

    real = module(MODULE, _args(kubeconfig))
    for key in ("changed", "deployments", "configmap", "restarted", "actions"):
        assert real[key] == predicted[key], key


def test_missing_deployment_and_configmap_are_refused_before_any_write(cluster, kubeconfig):
    before = _state(cluster)
    res = module(MODULE, _args(kubeconfig, replicas={"api": 5, "ghost": 1}, configmap="no-such-config"))
    assert res["failed"] is True and res["changed"] is False
    assert "deployment 'ghost'" in res["msg"] and "configmap 'no-such-config'" in res["msg"]
    assert "nothing was changed" in res["msg"]
    assert _writes(cluster) == [] and _state(cluster) == before


@pytest.mark.parametrize("args, message", [
    ({"replicas": {"api": -1}}, "replicas.api must be an integer >= 0"),
    ({"configmap": None}, "configmap and configmap_data go together"),
    ({"configmap_data": {"PORT": 5432}}, "configmap_data.PORT must be a string"),
])
def test_bad_input_is_refused_before_any_request(cluster, kubeconfig, args, message):
    res = module(MODULE, _args(kubeconfig, **args))
    assert res["failed"] is True and message in res["msg"]
    assert cluster.requests() == []


def test_token_protected_api_with_host_and_api_key(tmp_path, seed_file):
    token = "lab-token-3b9d6c1e0f"
    (tmp_path / "token").write_text(token + "\n")
    double = start_double("k8s", tmp_path / "k8s-auth", "--seed", seed_file, "--token-file", tmp_path / "token")
    try:
        direct = {"host": double.url, "namespace": NS, "replicas": {"api": 5, "worker": 3},
                  "configmap": "app-config", "configmap_data": {"DATABASE_ROLE": "primary"}}
        for bad in ({}, {"api_key": "wrong-" + token}):
            res = module(MODULE, dict(direct, **bad))
            assert res["failed"] is True and "401" in res["msg"] and "nothing was changed" in res["msg"], res["msg"]
        assert [r["status"] for r in double.requests()] == [401, 401]  # stopped at the first read
        assert _writes(double) == []

        res = module(MODULE, dict(direct, api_key=token))
        assert res.get("failed") is not True, res.get("msg")
        assert res["changed"] is True and res["restarted"] == ["api", "worker"]
        assert token not in json.dumps(res)
        assert {r["status"] for r in double.requests()[2:]} == {200}

        token_kubeconfig = write_kubeconfig(tmp_path / "kubeconfig-token", double.url, token=token)
        again = module(MODULE, _args(token_kubeconfig))
        assert again.get("failed") is not True and again["changed"] is False, again.get("msg")
    finally:
        double.stop()


def test_restart_never_scales_and_patches_without_restarting(cluster, kubeconfig):
    res = module(MODULE, _args(kubeconfig, restart="never"))
    assert res["changed"] is True and res["restarted"] == []
    assert not any(d["restarted"] for d in res["deployments"].values())
    state = _state(cluster)
    assert state["configmap"]["DATABASE_ROLE"] == "primary"
    assert {n: (d["replicas"], d["restartedAt"]) for n, d in state["deployments"].items()} \
        == {"api": (5, None), "worker": (3, None)}
    assert [p for _m, p, _b in _writes(cluster)] == [CONFIGMAP, APPS + "/api/scale", APPS + "/worker/scale"]


def test_restart_always_restarts_even_when_nothing_else_changes(cluster, kubeconfig):
    module(MODULE, _args(kubeconfig))
    first = _state(cluster)
    cluster.clear()
    res = module(MODULE, _args(kubeconfig, restart="always"))
    assert res["changed"] is True and res["restarted"] == ["api", "worker"]
    assert [p for _m, p, _b in _writes(cluster)] == [APPS + "/api", APPS + "/worker"]
    after = _state(cluster)
    for name in ("api", "worker"):
        assert after["deployments"][name]["restartedAt"] != first["deployments"][name]["restartedAt"]
        assert after["deployments"][name]["generation"] == first["deployments"][name]["generation"] + 1


def test_deployment_scaled_up_from_zero_is_not_restarted(cluster, kubeconfig):
    _http(cluster.url + APPS + "/worker/scale", "PATCH", {"spec": {"replicas": 0}})
    cluster.clear()
    res = module(MODULE, _args(kubeconfig))
    assert res["deployments"]["worker"] == {"replicas_before": 0, "replicas_after": 3, "restarted": False,
                                            "ready": True}
    assert res["restarted"] == ["api"]
    assert [p for _m, p, _b in _writes(cluster)] == [CONFIGMAP, APPS + "/api/scale", APPS + "/worker/scale",
                                                     APPS + "/api"]
    assert _state(cluster)["deployments"]["worker"]["restartedAt"] is None


class _FailingProxy:
    """Forwards every request to the double, except one (method, path) answered with a 500 Status:
    a write that fails midway, with the real double behind everything else."""

    def __init__(self, upstream, method, path):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                if (self.command, self.path.split("?")[0]) == (method, path):
                    proxy.failed += 1
                    status, data = 500, json.dumps({"kind": "Status", "status": "Failure", "code": 500,
                                                    "reason": "InternalError", "message": "etcdserver: timeout"})
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                    req = urllib.request.Request(upstream + self.path, data=body, method=self.command, headers=headers)
                    try:
                        with urllib.request.urlopen(req, timeout=5) as resp:
                            status, data = resp.status, resp.read().decode()
                    except urllib.error.HTTPError as err:
                        status, data = err.code, err.read().decode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

            do_GET = do_PATCH = _forward

            def log_message(self, *args):
                pass

        self.failed = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_write_failing_midway_reports_what_was_done_and_what_was_not(cluster, kubeconfig):
    proxy = _FailingProxy(cluster.url, "PATCH", APPS + "/worker/scale")
    try:
        args = _args(kubeconfig, host=proxy.url)
        del args["kubeconfig"]
        res = module(MODULE, args)
    finally:
        proxy.close()
    assert proxy.failed == 1
    assert res["failed"] is True and res["changed"] is True
    assert "deployment worker: scale 1 -> 3 failed" in res["msg"] and "500" in res["msg"]
    assert "Done: configmap app-config: set DATABASE_ROLE; deployment api: scale 2 -> 5." in res["msg"]
    assert "Not done: deployment worker: scale 1 -> 3; deployment api: rollout restart; " \
           "deployment worker: rollout restart." in res["msg"]
    assert "restart=always" in res["msg"]
    assert res["actions"] == ["configmap app-config: set DATABASE_ROLE", "deployment api: scale 2 -> 5"]
    assert res["deployments"]["worker"]["replicas_after"] == 1 and res["restarted"] == []
    state = _state(cluster)
    assert state["configmap"]["DATABASE_ROLE"] == "primary"
    assert {n: (d["replicas"], d["restartedAt"]) for n, d in state["deployments"].items()} \
        == {"api": (5, None), "worker": (1, None)}

    finish = module(MODULE, _args(kubeconfig, restart="always"))  # as the message says
    assert finish["changed"] is True and finish["restarted"] == ["api", "worker"]
    assert {n: d["replicas"] for n, d in _state(cluster)["deployments"].items()} == {"api": 5, "worker": 3}
