"""fediflow.dr.health_check run as a user runs it (`ansible localhost -m ...`) against real servers:
a private HTTP server started by this file on a free loopback port (it stands for the application's
health URLs and federation peers, and counts the requests it gets, so the probes are checked on the
server side), closed ports for dead endpoints, and a throwaway PostgreSQL primary + streaming standby
(pair_fixtures.py) for the database probes. The last tests probe the lab's doubles, each a private
process on its own free port: the Kubernetes API is a local double (no real Kubernetes can run here)
whose /_app/healthz stands for the application's health URL, and federation peers are the local
`web` double. Neither the shared lab nor its ports are used."""
import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import kubernetes
import pytest

from doubles_fixtures import free_port, start_double, write_kubeconfig
from lab_fixtures import module
from pair_fixtures import make_pair

MODULE = "fediflow.dr.health_check"


class Web:
    """The HTTP server's behaviour and what it saw. /flap answers 503 to its first `flap_after`
    requests, then 200; /together/N answers 200 only when 3 such requests are in flight at once;
    /hang answers when the test ends."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = []
        self.flap_after = 1
        self.together = threading.Barrier(3, timeout=4)
        self.release = threading.Event()

    def hits(self, path):
        with self.lock:
            return sum(1 for p, _q in self.seen if p == path)

    def answer(self, path):
        with self.lock:
            count = sum(1 for p, _q in self.seen if p == path)
        if path in ("/ok", "/ok2", "/ok3"):
            return 200, {}
        if path == "/down":
            return 503, {}
        if path == "/moved":
            return 302, {"Location": "/ok"}
        if path == "/flap":
            return (503 if count <= self.flap_after else 200), {}
        if path.startswith("/together/"):
            try:
                self.together.wait()
            except threading.BrokenBarrierError:
                return 504, {}
            return 200, {}
        if path == "/hang":
            self.release.wait(60)
            return 200, {}
        return 404, {}


@pytest.fixture
def web():
    state = Web()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            url = urlsplit(self.path)
            with state.lock:
                state.seen.append((url.path, url.query))
            status, headers = state.answer(url.path)
            body = b"ok" if status == 200 else b"no"
            self.send_response(status)
            for key, value in dict(headers, **{"Content-Length": str(len(body))}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base = "http://127.0.0.1:%d" % server.server_address[1]
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def _names(rnd):
    return {t["name"]: t for t in rnd["targets"]}


def _iso(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_all_up_answers_in_round_one_and_check_mode_probes_the_same(web):
    urls = [web.base + "/ok", web.base + "/ok2", {"url": web.base + "/moved", "name": "moved"}]
    res = module(MODULE, {"urls": urls, "rounds": 3, "interval": 5})
    assert not res.get("failed"), res.get("msg")
    assert (res["state"], res["rounds_run"], res["consecutive_failures"], res["first_failure"]) == ("up", 1, 0, None)
    assert res["changed"] is False and res["healthy_ratio"] == 1.0 and res["duration_s"] < 5  # no interval waited
    targets = _names(res["rounds"][0])
    assert targets["moved"]["status"] == 302 and targets["moved"]["ok"] is True  # redirects are not followed
    assert targets[web.base + "/ok"]["kind"] == "http" and targets[web.base + "/ok"]["latency_s"] < 5
    assert "is healthy: 3 of 3 targets answered in round 1" in res["msg"]
    assert [web.hits(p) for p in ("/ok", "/ok2", "/moved")] == [1, 1, 1]  # the server saw one round

    checked = module(MODULE, {"urls": urls, "rounds": 3, "interval": 5}, check_mode=True, diff=True)
    assert (checked["state"], checked["changed"], checked.get("diff")) == ("up", False, None)
    assert [web.hits(p) for p in ("/ok", "/ok2", "/moved")] == [2, 2, 2]  # check mode probes too


def test_dead_endpoint_is_down_after_every_round(web):
    dead = "http://127.0.0.1:%d/healthz" % free_port()
    res = module(MODULE, {"name": "us-east-1", "urls": [dead], "rounds": 3, "interval": 0.2, "expect": "down"})
    assert not res.get("failed"), res.get("msg")
    assert (res["state"], res["rounds_run"], res["consecutive_failures"]) == ("down", 3, 3)
    assert res["duration_s"] >= 0.4 and res["phases"]["wait"] > 0
    starts = [_iso(r["started"]) for r in res["rounds"]]
    assert all((b - a).total_seconds() >= 0.19 for a, b in zip(starts, starts[1:]))
    assert res["first_failure"] == res["rounds"][0]["started"]
    assert all(_names(r)[dead]["error"] == "Connection refused" for r in res["rounds"])

    failed = module(MODULE, {"name": "us-east-1", "urls": [dead, web.base + "/down"], "rounds": 2, "interval": 0})
    assert failed["failed"] and failed["state"] == "down" and failed["rounds_run"] == 2
    assert failed["msg"].startswith("health check failed (expect=up): us-east-1 is down: 2 unhealthy round(s)")
    assert "%s: Connection refused" % dead in failed["msg"]
    assert "%s/down: HTTP 503 (accepted: 200-399)" % web.base in failed["msg"]
    assert web.hits("/down") == 2


def test_failover_guard_fails_while_the_region_answers(web):
    res = module(MODULE, {"name": "us-east-1", "urls": [web.base + "/ok"], "rounds": 3, "interval": 0.2,
                          "expect": "down"})
    assert res["failed"] and res["state"] == "up" and res["rounds_run"] == 1
    assert res["msg"] == "us-east-1 is healthy: 1 of 1 targets answered in round 1 (expect=down: it is not down)"


def test_flapping_target_comes_up_in_round_two(web):
    web.flap_after = 1  # the first request gets 503, the next ones 200
    res = module(MODULE, {"urls": [web.base + "/flap"], "rounds": 3, "interval": 0.2})
    assert not res.get("failed"), res.get("msg")
    assert (res["state"], res["rounds_run"], res["consecutive_failures"]) == ("up", 2, 0)
    assert [r["healthy"] for r in res["rounds"]] == [False, True]
    assert [r["targets"][0]["status"] for r in res["rounds"]] == [503, 200]
    assert web.hits("/flap") == 2 and res["duration_s"] >= 0.2


def test_share_of_targets_decides(web):
    dead = "http://127.0.0.1:%d/" % free_port()
    urls = [web.base + "/ok", web.base + "/ok2", web.base + "/ok3", web.base + "/down", dead]
    res = module(MODULE, {"urls": urls, "min_healthy_ratio": 0.5, "rounds": 1})
    assert (res["state"], res["healthy_ratio"]) == ("up", 0.6) and not res.get("failed")
    res = module(MODULE, {"urls": urls, "min_healthy_ratio": 0.7, "rounds": 1, "expect": "any"})
    assert (res["state"], res["healthy_ratio"], res.get("failed", False)) == ("down", 0.6, False)
    urls[3] = {"url": web.base + "/down", "status": [503]}  # a 503 that is expected
    res = module(MODULE, {"urls": urls, "min_healthy_ratio": 0.7, "rounds": 1})
    assert (res["state"], res["healthy_ratio"]) == ("up", 0.8)


def test_probes_run_concurrently_and_a_hung_url_times_out(web):
    """/together/N only answers 200 when all three are in flight at once; /hang never answers in time."""
    urls = [{"url": web.base + "/together/%d" % i, "name": "t%d" % i} for i in range(3)]
    urls.append({"url": web.base + "/hang", "name": "hang"})
    res = module(MODULE, {"urls": urls, "timeout": 0.5, "rounds": 1, "expect": "any", "min_healthy_ratio": 0.75})
    targets = _names(res["rounds"][0])
    assert [targets["t%d" % i]["status"] for i in range(3)] == [200, 200, 200]
    assert targets["hang"]["ok"] is False and targets["hang"]["error"] == "no answer within 0.5s (timed out)"
    assert 0.4 < targets["hang"]["latency_s"] < 1.5
    assert res["state"] == "up" and res["phases"]["probe"] < 2.5  # the longest probe, not the sum


def test_query_tokens_and_url_passwords_never_reach_the_output(web):
    token, password = "tok-7f3a9c1e5b", "pw-c0ffee-42"
    urls = [web.base + "/ok?token=" + token, web.base.replace("//", "//probe:%s@" % password) + "/down?k=" + token]
    res = module(MODULE, {"urls": urls, "rounds": 1, "expect": "any"})
    names = sorted(_names(res["rounds"][0]))
    assert names == ["http://127.0.0.1:%s/ok?********" % web.base.rsplit(":", 1)[1],
                     "http://probe:********@127.0.0.1:%s/down?********" % web.base.rsplit(":", 1)[1]]
    text = json.dumps(res)  # the whole result, the echoed options (invocation) included
    assert token not in text and password not in text
    with web.lock:
        assert ("/ok", "token=" + token) in web.seen  # the request itself carried the token

    shown = module(MODULE, {"urls": [urls[0]], "rounds": 1, "redact_query_strings": False})
    assert shown["rounds"][0]["targets"][0]["name"].endswith("token=" + token)


@pytest.mark.parametrize("args, message", [
    ({"rounds": 0}, "rounds must be a whole number of at least 1, got 0"),
    ({"interval": -1}, "interval must be 0 or more seconds"),
    ({"min_healthy_ratio": 0}, "min_healthy_ratio must be more than 0 and at most 1"),
    ({"min_healthy_ratio": 1.5}, "min_healthy_ratio must be more than 0 and at most 1"),
    ({"urls": []}, "no target: give urls, or login_host / login_unix_socket"),
    ({"urls": ["BASE/ok", "ftp://127.0.0.1/"]}, "urls[1].url must be an http:// or https:// URL"),
    ({"urls": [{"url": "BASE/ok", "status": [999]}]}, "urls[0].status must list HTTP status codes"),
    ({"expect": "maybe"}, "expect"),
])
def test_bad_input_is_refused_before_anything_is_probed(web, args, message):
    full = json.loads(json.dumps(dict({"urls": ["BASE/ok"], "rounds": 1}, **args)).replace("BASE", web.base))
    res = module(MODULE, full)
    assert res["failed"] and message in res["msg"], res["msg"]
    with web.lock:
        assert web.seen == []


# ---------------------------------------------------------------- PostgreSQL

@pytest.fixture(scope="module")
def pair():
    built = make_pair()
    yield built
    built.destroy()


def _pg(pair, node, **extra):
    args = {"login_host": "127.0.0.1", "login_port": node.port, "login_password": pair.password,
            "rounds": 1, "connect_timeout": 3}
    args.update(extra)
    return args


def test_postgres_primary_versus_standby(pair, web):
    assert pair.primary.one("SELECT pg_is_in_recovery()") is False  # checked independently
    assert pair.standby.one("SELECT pg_is_in_recovery()") is True

    res = module(MODULE, _pg(pair, pair.primary))
    assert not res.get("failed"), res.get("msg")
    (target,) = res["rounds"][0]["targets"]
    assert (target["kind"], target["name"], target["ok"], target["status"], target["error"]) == (
        "postgres", "127.0.0.1:%d/postgres" % pair.primary.port, True, "primary", None)

    res = module(MODULE, _pg(pair, pair.standby, expect="any"))
    (target,) = res["rounds"][0]["targets"]
    assert res["state"] == "down" and (target["ok"], target["status"]) == (False, "standby")
    assert target["error"] == "in recovery (a standby): does not accept writes"

    res = module(MODULE, _pg(pair, pair.standby, pg_check="connect"))
    assert res["state"] == "up" and res["rounds"][0]["targets"][0]["status"] == "standby"

    # the application answers in the standby region, its database is not promoted yet: half ok
    res = module(MODULE, _pg(pair, pair.standby, urls=[web.base + "/ok"], min_healthy_ratio=0.5))
    assert (res["state"], res["healthy_ratio"]) == ("up", 0.5)
    assert pair.password not in json.dumps(res)

    guard = module(MODULE, _pg(pair, pair.primary, expect="down", name="us-east-1"))
    assert guard["failed"] and "us-east-1 is healthy: 1 of 1 targets answered in round 1" in guard["msg"]


def test_postgres_down_and_login_refused(pair):
    gone = free_port()
    res = module(MODULE, {"login_host": "127.0.0.1", "login_port": gone, "rounds": 2, "interval": 0.1,
                          "expect": "down", "connect_timeout": 2})
    assert not res.get("failed"), res.get("msg")
    assert (res["state"], res["consecutive_failures"]) == ("down", 2)
    assert all(r["targets"][0]["error"] == "Connection refused" for r in res["rounds"])
    assert not res.get("warnings")

    res = module(MODULE, _pg(pair, pair.primary, login_password="not-the-password", expect="any"))
    (target,) = res["rounds"][0]["targets"]
    assert res["state"] == "down" and "password authentication failed" in target["error"]
    assert any("answered but refused the login" in w for w in res.get("warnings", [])), res.get("warnings")
    assert "not-the-password" not in json.dumps(res) and pair.password not in json.dumps(res)


# ---------------------------------------------------------------- the lab's doubles

def test_app_health_url_after_the_configmap_flip(k8s_double, tmp_path):
    """The Kubernetes API is a local double (no real Kubernetes can run here): its /_app/healthz answers
    503 while app-config says DATABASE_ROLE=standby, 200 once the failover flipped it to primary."""
    app = {"url": k8s_double.url + "/_app/healthz", "name": "eu-west-1 app", "status": [200]}
    res = module(MODULE, {"urls": [app], "rounds": 2, "interval": 0.1})
    assert res["failed"] and res["rounds"][-1]["targets"][0]["status"] == 503
    assert "eu-west-1 app: HTTP 503 (accepted: 200)" in res["msg"]

    api = kubernetes.config.new_client_from_config(config_file=str(write_kubeconfig(tmp_path / "kc", k8s_double.url)))
    kubernetes.client.CoreV1Api(api).patch_namespaced_config_map(
        "app-config", "fediflow", {"data": {"DATABASE_ROLE": "primary"}})
    res = module(MODULE, {"urls": [app], "rounds": 2, "interval": 0.1})
    assert (res.get("failed", False), res["state"], res["rounds_run"]) == (False, "up", 1)


def test_federation_peers_reachable_by_share(tmp_path):
    """Federation peers are the local `web` double (no real peer can run here): 2 of 3 peers answer
    their nodeinfo, enough for min_healthy_ratio 0.5, not for 1.0."""
    web = start_double("web", tmp_path / "web", "--peer", "social.example", "--peer", "toot.example")
    try:
        urls = [{"url": "%s/peers/%s/.well-known/nodeinfo" % (web.url, peer), "name": peer}
                for peer in ("social.example", "toot.example", "gone.example")]
        res = module(MODULE, {"name": "federation", "urls": urls, "min_healthy_ratio": 0.5, "rounds": 1})
        assert (res.get("failed", False), res["state"], res["healthy_ratio"]) == (False, "up", 0.6667)
        res = module(MODULE, {"name": "federation", "urls": urls, "rounds": 2, "interval": 0})
        assert res["failed"] and "gone.example: HTTP 404" in res["msg"]
        seen = [(r["path"], r["status"]) for r in web.requests()]
        assert seen.count(("/peers/gone.example/.well-known/nodeinfo", 404)) == 3  # 1 + 2 rounds
        assert seen.count(("/peers/social.example/.well-known/nodeinfo", 200)) == 3
    finally:
        web.stop()
