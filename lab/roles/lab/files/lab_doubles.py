"""Local HTTP test doubles for the fediflow.dr lab (stdlib only, Python 3.11+).

No Kubernetes API server, Slack or federation peer can run in the lab, so these loopback
stand-ins speak just enough of their protocols for the official ``kubernetes`` client and
for the kubernetes.core modules (k8s, k8s_info, k8s_scale: discovery + dynamic client),
for Slack webhooks, and for nodeinfo discovery.

    python lab_doubles.py k8s --host 127.0.0.1 --port PORT --seed SEED.json \\
        --record RECORD.jsonl [--state STATE.json] [--token-file FILE] \\
        [--app-namespace fediflow] [--app-deployment api] [--app-configmap app-config]
    python lab_doubles.py slack --host 127.0.0.1 --port PORT --record RECORD.jsonl
    python lab_doubles.py web --host 127.0.0.1 --port PORT --record RECORD.jsonl \\
        --peer NAME [--peer NAME ...]

All: a ThreadingHTTPServer bound to --host only, one stderr line per request, exit 0
on SIGTERM/SIGINT; GET /healthz (also /readyz, /livez) answers 200 "ok". Every request
except those health probes, the k8s double's /_app/healthz and test-only endpoints
is appended to RECORD.jsonl before it is answered, as one line
{"ts", "method", "path", "query" (param -> last value), "content_type", "body" (parsed
JSON or null; a non-JSON body is kept as text in "raw"), "status" (answered)}. The
Authorization header is never recorded. Test-only endpoints: GET /_requests (the
recorded list), DELETE /_requests (truncates the record file).

k8s: GET /version, /healthz, /readyz, discovery (/api, /api/v1, /apis, /apis/apps,
/apis/apps/v1; anything else, e.g. /openapi/v2, is 404). configmaps and secrets (v1)
and deployments (apps/v1): list (per namespace or all; labelSelector k=v, k!=v, k, !k;
fieldSelector on dotted paths), get, POST, PUT, PATCH (merge-patch or strategic-merge-
patch), DELETE; namespaces: list, get; deployments/scale (kind Scale, autoscaling/v1):
GET, PATCH, PUT. Writes with ?dryRun=All (kubernetes.core check mode) are answered but
not stored. Errors are kind: Status objects: 404 NotFound, 409 AlreadyExists, 409
Conflict (stale metadata.resourceVersion in a PUT/PATCH), 401 Unauthorized (with
--token-file, when "Authorization: Bearer <token>" is missing or wrong; probes and
test-only endpoints are open), 405, 415, 422 Invalid. No watch.
The k8s double also stands for the application's health URL behind that region's
ingress: GET /_app/healthz (open without a token, not recorded, like the probes)
answers 200 {"ok": true, "deployment": NAME, "ready_replicas": N, "database_role":
VALUE} when the deployment --app-deployment (default api) in --app-namespace (default
fediflow) has status.readyReplicas > 0 and the configmap --app-configmap (default
app-config) there has DATABASE_ROLE == "primary"; otherwise 503 with the same JSON and
"ok": false (also when they do not exist: ready_replicas 0, database_role null).
Strategic merge is a recursive merge (null deletes a key) in which lists of objects
that all carry "name" (containers, env, volumes) merge by name; other lists are replaced.
The double is always "rolled out": after each write, a deployment's status.replicas,
readyReplicas, availableReplicas and updatedReplicas equal spec.replicas at once and
status.observedGeneration equals metadata.generation, which is bumped whenever anything
outside metadata/status changes (e.g. a rollout restart, a patch that sets
spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]). Every write
bumps resourceVersion (one counter for all objects, as etcd's).

Seed format (used only while no state file exists; secrets are given in plain text):
    {"namespaces": {"fediflow": {
        "labels": {"team": "sre"},                                  # optional
        "deployments": {"api": {"replicas": 2, "image": "repo/api:1",
                                "labels": {"tier": "web"}}},        # labels optional
        "configmaps": {"app-config": {"DATABASE_ROLE": "standby"}}, # name -> data
        "secrets": {"db": {"password": "plain"}}}}}                 # name -> stringData
A seeded deployment has selector app=NAME, pod labels app=NAME (+ labels) and one
container named NAME (image busybox unless given). The state, {"resourceVersion": N,
"objects": {PLURAL: {"NS/NAME" or "NAME": object}}}, is saved after every write (temp
file + os.replace, mode 0600: it holds secrets) to --state, by default the record path
with .jsonl replaced by .state.json (one state per double even when several share a
directory: dir/k8s-eu-requests.jsonl -> dir/k8s-eu-requests.state.json), and reloaded
at start, so a restart keeps state; delete that file to start again from the seed.

slack: POST /services/... with a JSON object body (or form field payload=JSON) -> 200
"ok"; any other body -> 400 "invalid_payload" (as Slack); other paths -> 404
"no_service". Test-only POST /_fail {"count": N, "status": 500} makes the next N
webhook posts answer that status (a 429 carries Retry-After: 1).

web: federation peers, one per --peer NAME. GET /peers/NAME/.well-known/nodeinfo ->
200 {"links": [{"rel": "http://nodeinfo.diaspora.software/ns/schema/2.0", "href":
".../peers/NAME/nodeinfo/2.0"}]} (nodeinfo discovery, as a real server answers), and
GET /peers/NAME/nodeinfo/2.0 -> 200, a small nodeinfo 2.0 document (software fediflow,
protocols [activitypub], metadata.nodeName NAME); other names or paths -> 404
{"error": "not found"}, other methods on a peer path -> 405.
"""
import argparse
import base64
import copy
import hmac
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import namedtuple
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/livez"})
APP_HEALTH_PATH = "/_app/healthz"
NODEINFO_SCHEMA = "http://nodeinfo.diaspora.software/ns/schema/2.0"
PEER_PATH = re.compile(r"/peers/([^/]+)/(\.well-known/nodeinfo|nodeinfo/2\.0)")


def log(message):
    print(f"[lab_doubles] {message}", file=sys.stderr, flush=True)


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def atomic_write_json(path, data):
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ------------------------------------------------------------------ shared serving code
Reply = namedtuple("Reply", "status body headers", defaults=({},))  # body: dict/list -> JSON, str -> text


class Request:
    def __init__(self, method, target, headers, raw):
        url = urlsplit(target)
        self.method, self.path, self.headers, self.raw = method, url.path, headers, raw
        self.query = dict(parse_qsl(url.query, keep_blank_values=True))
        self.content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        self.body, self.is_json = None, not raw
        text = raw.decode("utf-8", "replace")
        if self.content_type == "application/x-www-form-urlencoded":
            text = dict(parse_qsl(text)).get("payload", "")
        if raw:
            try:
                self.body, self.is_json = json.loads(text), True
            except ValueError:
                pass

    def record_entry(self, status):
        entry = {"ts": time.time(), "method": self.method, "path": self.path, "query": self.query,
                 "content_type": self.content_type or None, "body": self.body, "status": status}
        if not self.is_json:
            entry["raw"] = self.raw.decode("utf-8", "replace")[:4096]
        return entry


class Recorder:
    """Append-only JSONL request log; the file is the single source of truth."""

    def __init__(self, path):
        self.path, self.lock = path, threading.Lock()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        open(path, "a", encoding="utf-8").close()

    def record(self, entry):
        with self.lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")

    def entries(self):
        with self.lock, open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def clear(self):
        with self.lock:
            open(self.path, "w", encoding="utf-8").close()


class App:
    """One double: `control` answers test-only endpoints (None if not one), `handle` the rest.
    Requests to `unrecorded` paths are neither recorded nor logged."""

    name = "double"
    unrecorded = PROBE_PATHS

    def __init__(self, recorder):
        self.recorder = recorder

    def control(self, req):
        if req.path != "/_requests":
            return None
        if req.method == "DELETE":
            self.recorder.clear()
            return Reply(200, {"cleared": True})
        return Reply(200, self.recorder.entries()) if req.method == "GET" else Reply(405, "method not allowed")

    def handle(self, req):
        raise NotImplementedError

    def crash(self, exc):
        return Reply(500, f"internal error: {exc}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fediflow-lab-double/1.0"
    disable_nagle_algorithm = True  # else header and body writes hit the 40 ms delayed-ACK stall

    def _serve(self):
        app = self.server.app
        length = int(self.headers.get("Content-Length") or 0)
        req = Request(self.command, self.path, self.headers, self.rfile.read(length) if length else b"")
        reply = app.control(req)
        if reply is None:
            try:
                reply = app.handle(req)
            except Exception as exc:  # a bug in the double must still answer
                traceback.print_exc()
                reply = app.crash(exc)
            if req.path not in app.unrecorded:
                app.recorder.record(req.record_entry(reply.status))
        text = isinstance(reply.body, str)
        data = (reply.body if text else json.dumps(reply.body)).encode()
        self.send_response(reply.status)
        headers = {"Content-Type": "text/plain; charset=utf-8" if text else "application/json",
                   "Content-Length": str(len(data)), **reply.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_request(self, code="-", size="-"):
        if urlsplit(self.path).path not in self.server.app.unrecorded:
            self.log_message('"%s" %s', self.requestline, code)

    def log_message(self, fmt, *args):
        sys.stderr.write(f"[{self.server.app.name}] {fmt % args}\n")


def serve(app, host, port):
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads, server.app = True, app

    def stop(signum, _frame):  # shutdown() blocks until serve_forever returns: not in this thread
        log(f"{app.name}: signal {signum}, shutting down")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"{app.name} double listening on http://{host}:{server.server_address[1]}")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log(f"{app.name} double stopped")
    return 0


# ------------------------------------------------------------------------ slack double
class SlackApp(App):
    name = "slack"

    def __init__(self, recorder):
        super().__init__(recorder)
        self.lock, self.fail_count, self.fail_status = threading.Lock(), 0, 500

    def control(self, req):
        if req.path != "/_fail":
            return super().control(req)
        body = req.body if isinstance(req.body, dict) else {}
        count, status = body.get("count", 1), body.get("status", 500)
        if req.method != "POST" or not isinstance(count, int) or count < 0 or status not in range(100, 600):
            return Reply(400, 'expected POST {"count": N, "status": CODE}')
        with self.lock:
            self.fail_count, self.fail_status = count, status
        return Reply(200, {"count": count, "status": status})

    def handle(self, req):
        if req.path in PROBE_PATHS:
            return Reply(200, "ok")
        if not req.path.startswith("/services/"):
            return Reply(404, "no_service")
        if req.method != "POST":
            return Reply(405, "invalid_method")
        with self.lock:
            if self.fail_count > 0:
                self.fail_count -= 1
                return Reply(self.fail_status, "injected_failure",
                             {"Retry-After": "1"} if self.fail_status == 429 else {})
        if not req.is_json or not isinstance(req.body, dict):
            return Reply(400, "invalid_payload")
        return Reply(200, "ok")


# -------------------------------------------------------------------------- web double
class WebApp(App):
    """Federation peers: nodeinfo discovery for each configured peer name."""

    name = "web"

    def __init__(self, recorder, peers, host="127.0.0.1", port=0):
        super().__init__(recorder)
        self.peers, self.address = tuple(dict.fromkeys(peers)), f"{host}:{port}"

    def handle(self, req):
        if req.path in PROBE_PATHS:
            return Reply(200, "ok")
        match = PEER_PATH.fullmatch(req.path)
        if match is None or match.group(1) not in self.peers:
            return Reply(404, {"error": "not found"})
        if req.method != "GET":
            return Reply(405, {"error": "method not allowed"})
        name, base = match.group(1), f"http://{req.headers.get('Host') or self.address}/peers/{match.group(1)}"
        if match.group(2) == ".well-known/nodeinfo":
            return Reply(200, {"links": [{"rel": NODEINFO_SCHEMA, "href": f"{base}/nodeinfo/2.0"}]})
        return Reply(200, {"version": "2.0", "software": {"name": "fediflow", "version": "lab"},
                           "protocols": ["activitypub"], "services": {"inbound": [], "outbound": []},
                           "openRegistrations": False, "usage": {"users": {"total": 1}},
                           "metadata": {"nodeName": name}})


def peer_name(text):
    if not text or "/" in text or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"not a peer name: {text!r}")
    return text


# -------------------------------------------------------------------------- k8s double
class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code = code
        self.status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "details": details or {}, "code": code}


NO_ROUTE = (404, "NotFound", "the server could not find the requested resource")
NOT_ALLOWED = (405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def normalize_configmap(obj):
    obj["data"] = obj.get("data") or {}
    if not all(isinstance(v, str) for v in obj["data"].values()):
        raise ApiError(422, "Invalid", f'ConfigMap "{obj["metadata"]["name"]}" is invalid: data values must be strings')


def normalize_secret(obj):
    obj["data"], obj["type"] = obj.get("data") or {}, obj.get("type") or "Opaque"
    for key, value in (obj.pop("stringData", None) or {}).items():
        obj["data"][key] = base64.b64encode(str(value).encode()).decode()


def normalize_deployment(obj):
    name, spec = obj["metadata"]["name"], obj.setdefault("spec", {})
    replicas = spec.setdefault("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ApiError(422, "Invalid", f'Deployment.apps "{name}" is invalid: spec.replicas: must be >= 0')
    match = spec.setdefault("selector", {}).setdefault("matchLabels", {"app": name})
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("labels", dict(match))
    template.setdefault("spec", {}).setdefault("containers", [{"name": name, "image": "busybox"}])
    spec.setdefault("strategy", {"type": "RollingUpdate",
                                 "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})


def normalize_namespace(obj):
    obj["spec"], obj["status"] = obj.get("spec") or {"finalizers": ["kubernetes"]}, {"phase": "Active"}


@dataclass(frozen=True)
class ResourceType:
    plural: str
    group: str
    kind: str
    namespaced: bool
    normalize: object
    short_names: tuple = ()
    verbs: tuple = ("create", "delete", "get", "list", "patch", "update")

    @property
    def api_version(self):
        return f"{self.group}/v1" if self.group else "v1"

    def discovery(self):
        return {"name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                "kind": self.kind, "verbs": list(self.verbs), "shortNames": list(self.short_names)}

    def error(self, code, reason, name, message):
        qualified = f"{self.plural}.{self.group}" if self.group else self.plural
        return ApiError(code, reason, message.format(f'{qualified} "{name}"'),
                        {"name": name, "group": self.group, "kind": self.plural})


TYPES = {t.plural: t for t in (
    ResourceType("namespaces", "", "Namespace", False, normalize_namespace, ("ns",), ("get", "list")),
    ResourceType("configmaps", "", "ConfigMap", True, normalize_configmap, ("cm",)),
    ResourceType("secrets", "", "Secret", True, normalize_secret),
    ResourceType("deployments", "apps", "Deployment", True, normalize_deployment, ("deploy",)),
)}
SCALE_DISCOVERY = {"name": "deployments/scale", "singularName": "", "namespaced": True, "group": "autoscaling",
                   "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}
PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def merge_patch(target, patch, strategic=False):
    """RFC 7386 merge; `strategic` also merges lists of named objects by name."""
    if strategic and isinstance(patch, list) and isinstance(target, list) and all(
            isinstance(i, dict) and "name" in i for i in patch + target):
        merged = {item["name"]: copy.deepcopy(item) for item in target}
        for item in patch:
            merged[item["name"]] = merge_patch(merged.get(item["name"]), item, True)
        return list(merged.values())
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif not key.startswith("$"):  # strategic-merge directives ($patch, $retainKeys) are ignored
            result[key] = merge_patch(result.get(key), value, strategic)
    return result


def selector_match(selector, lookup):
    """k=v, k==v, k!=v, and (labels) k, !k; comma = AND. lookup(key) -> value or None."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        key, op, value = term.partition("!=") if "!=" in term else term.replace("==", "=").partition("=")
        key, value = key.strip(), value.strip()
        actual = lookup(key.lstrip("!"))
        if (op == "!=" and actual == value) or (op == "=" and actual != value) \
                or (not op and (actual is None) != key.startswith("!")):
            return False
    return True


def dotted(obj, path):
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def scale_of(dep):
    meta = dep["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
            "spec": {"replicas": dep["spec"]["replicas"]},
            "status": {"replicas": dep["status"]["replicas"],
                       "selector": ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())}}


class Store:
    """All objects under one lock; saved to `path` after every write, reloaded at start."""

    def __init__(self, path, seed_path):
        self.path, self.lock, self.rv, self.dry_run = path, threading.RLock(), 0, False
        self.objects = {plural: {} for plural in TYPES}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
            self.rv, self.objects = state["resourceVersion"], {**self.objects, **state["objects"]}
            log(f"k8s: state reloaded from {path}")
            return
        seed = {}
        if seed_path:
            with open(seed_path, encoding="utf-8") as fh:
                seed = json.load(fh)
        for ns, spec in seed.get("namespaces", {}).items():
            self.create(TYPES["namespaces"], None, {"metadata": {"name": ns, "labels": spec.get("labels", {})}})
            for name, dep in spec.get("deployments", {}).items():
                labels = {"app": name, **dep.get("labels", {})}
                containers = [{"name": name, "image": dep.get("image", "busybox")}]
                self.create(TYPES["deployments"], ns, {"metadata": {"name": name, "labels": labels}, "spec": {
                    "replicas": dep.get("replicas", 1), "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}}}})
            for name, data in spec.get("configmaps", {}).items():
                self.create(TYPES["configmaps"], ns, {"metadata": {"name": name}, "data": data})
            for name, data in spec.get("secrets", {}).items():
                self.create(TYPES["secrets"], ns, {"metadata": {"name": name}, "stringData": data})
        self.save()

    def save(self):
        atomic_write_json(self.path, {"resourceVersion": self.rv, "objects": self.objects})

    @staticmethod
    def key(ns, name):
        return f"{ns}/{name}" if ns else name

    def get(self, rtype, ns, name):
        obj = self.objects[rtype.plural].get(self.key(ns, name))
        if obj is None:
            raise rtype.error(404, "NotFound", name, "{} not found")
        return obj

    def list(self, rtype, ns, query):
        items = sorted((copy.deepcopy(o) for o in self.objects[rtype.plural].values()
                        if (ns is None or o["metadata"].get("namespace") == ns)
                        and selector_match(query.get("labelSelector"), (o["metadata"].get("labels") or {}).get)
                        and selector_match(query.get("fieldSelector"), lambda path, o=o: dotted(o, path))),
                       key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return {"apiVersion": rtype.api_version, "kind": rtype.kind + "List",
                "metadata": {"resourceVersion": str(self.rv)}, "items": items}

    def create(self, rtype, ns, body):
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{rtype.kind}: metadata.name: Required value")
        if ns and meta.setdefault("namespace", ns) != ns:
            raise ApiError(400, "BadRequest",
                           "the namespace of the provided object does not match the namespace sent on the request")
        if ns and ns not in self.objects["namespaces"]:
            raise TYPES["namespaces"].error(404, "NotFound", ns, "{} not found")
        if self.key(ns, name) in self.objects[rtype.plural]:
            raise rtype.error(409, "AlreadyExists", name, "{} already exists")
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        meta.pop("resourceVersion", None)
        return self.write(rtype, None, body)

    def patch(self, rtype, old, patch, content_type):
        if content_type not in PATCH_TYPES:
            raise ApiError(415, "UnsupportedMediaType", f"the lab double does not support patch type {content_type!r}")
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        new = merge_patch(old, patch, strategic=content_type == PATCH_TYPES[1])
        new["metadata"]["resourceVersion"] = (patch.get("metadata") or {}).get("resourceVersion")  # precondition
        return self.write(rtype, old, new)

    def delete(self, rtype, obj):
        meta = obj["metadata"]
        if not self.dry_run:
            del self.objects[rtype.plural][self.key(meta.get("namespace"), meta["name"])]
            self.rv += 1
            self.save()
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": meta["name"], "group": rtype.group, "kind": rtype.plural, "uid": meta["uid"]}}

    def write(self, rtype, old, new):
        """Store `new` (a create when `old` is None): server fields, generation, status, resourceVersion."""
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        meta = new.setdefault("metadata", {})
        if old is not None:
            name = old["metadata"]["name"]
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            if meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
                raise rtype.error(409, "Conflict", name, "Operation cannot be fulfilled on {}: the object has been "
                                  "modified; please apply your changes to the latest version and try again")
            for key in ("name", "namespace", "uid", "creationTimestamp", "generation"):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
            new["status"] = old.get("status")  # status is not writable through the main resource
        rtype.normalize(new)
        if old is not None and any(new.get(k) != old.get(k) for k in (set(new) | set(old)) - {"metadata", "status"}):
            meta["generation"] += 1
        if rtype.plural == "deployments":  # always rolled out
            replicas = new["spec"]["replicas"]
            new["status"] = {"observedGeneration": meta["generation"], "replicas": replicas,
                             "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                             "conditions": [{"type": kind, "status": "True", "reason": reason, "lastUpdateTime": now()}
                                            for kind, reason in (("Available", "MinimumReplicasAvailable"),
                                                                 ("Progressing", "NewReplicaSetAvailable"))]}
        if self.dry_run:  # ?dryRun=All (kubernetes.core check mode): validated, answered, not stored
            meta["resourceVersion"] = str(self.rv)
            return copy.deepcopy(new)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        self.objects[rtype.plural][self.key(meta.get("namespace"), meta["name"])] = new
        self.save()
        return copy.deepcopy(new)


AppTarget = namedtuple("AppTarget", "namespace deployment configmap", defaults=("fediflow", "api", "app-config"))


class K8sApp(App):
    name = "k8s"
    unrecorded = PROBE_PATHS | {APP_HEALTH_PATH}

    def __init__(self, recorder, store, token=None, port=0, app=AppTarget()):
        super().__init__(recorder)
        self.store, self.token, self.port, self.app = store, token, port, app

    def crash(self, exc):
        return Reply(500, ApiError(500, "InternalError", f"lab double error: {exc}").status)

    def handle(self, req):
        if req.path in PROBE_PATHS:
            return Reply(200, "ok")
        if req.path == APP_HEALTH_PATH:  # open, like the probes: the ingress of the application
            return self.app_health(req)
        try:
            sent = req.headers.get("Authorization", "").encode("utf-8", "replace")
            if self.token and not hmac.compare_digest(sent, f"Bearer {self.token}".encode()):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            with self.store.lock:
                self.store.dry_run = req.query.get("dryRun") == "All"
                try:
                    return Reply(*self.route(req))
                finally:
                    self.store.dry_run = False
        except ApiError as err:
            return Reply(err.code, err.status)

    def app_health(self, req):
        """200 when the app deployment has ready replicas and the configmap says DATABASE_ROLE=primary."""
        if req.method != "GET":
            return Reply(405, ApiError(*NOT_ALLOWED).status)
        app = self.app
        with self.store.lock:
            dep = self.store.objects["deployments"].get(Store.key(app.namespace, app.deployment))
            cm = self.store.objects["configmaps"].get(Store.key(app.namespace, app.configmap))
            ready = ((dep or {}).get("status") or {}).get("readyReplicas") or 0
            role = ((cm or {}).get("data") or {}).get("DATABASE_ROLE")
        ok = ready > 0 and role == "primary"
        return Reply(200 if ok else 503, {"ok": ok, "deployment": app.deployment, "ready_replicas": ready,
                                          "database_role": role})

    def route(self, req):
        parts = [p for p in req.path.split("/") if p]
        document = self.discovery(parts)
        if document is not None:
            if req.method != "GET":
                raise ApiError(*NOT_ALLOWED)
            return 200, document
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif parts[:3] == ["apis", "apps", "v1"]:
            group, rest = "apps", parts[3:]
        else:
            raise ApiError(*NO_ROUTE)
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":  # .../namespaces/NS/PLURAL[/NAME[/SUB]]
            ns, rest = rest[1], rest[2:]
        rtype = TYPES.get(rest[0])
        name, sub = (rest[1:] + [None, None])[:2]
        if rtype is None or rtype.group != group or len(rest) > 3 or (name and bool(ns) != rtype.namespaced) \
                or (ns and not rtype.namespaced) or (sub and (rtype.plural, sub) != ("deployments", "scale")):
            raise ApiError(*NO_ROUTE)
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(req.method)
        verb = "list" if verb == "get" and name is None else verb
        if verb not in rtype.verbs or (name is None) != (verb in ("list", "create")) or (sub and verb == "delete"):
            raise ApiError(*NOT_ALLOWED)
        store = self.store
        if verb == "list":
            return 200, store.list(rtype, ns, req.query)
        if verb == "create":
            return 201, store.create(rtype, ns, copy.deepcopy(req.body))
        obj = store.get(rtype, ns, name)
        if sub:  # deployments/scale
            if verb != "get":
                body = req.body if isinstance(req.body, dict) else {}
                wanted = merge_patch(scale_of(obj), body) if verb == "patch" else body
                replicas = (wanted.get("spec") or {}).get("replicas")
                if not isinstance(replicas, int) or isinstance(replicas, bool):
                    raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: integer')
                new = merge_patch(obj, {"spec": {"replicas": replicas}})
                new["metadata"]["resourceVersion"] = (body.get("metadata") or {}).get("resourceVersion")
                obj = store.write(rtype, obj, new)
            return 200, scale_of(obj)
        if verb == "get":
            return 200, copy.deepcopy(obj)
        if verb == "update":
            return 200, store.write(rtype, obj, copy.deepcopy(req.body))
        if verb == "patch":
            return 200, store.patch(rtype, obj, req.body, req.content_type)
        return 200, store.delete(rtype, obj)

    def discovery(self, parts):
        apps = {"groupVersion": "apps/v1", "version": "v1"}  # preferredVersion must equal a versions entry
        documents = {
            ("version",): {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fediflow-lab", "gitTreeState": "clean",
                           "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5", "compiler": "gc",
                           "platform": "linux/amd64"},
            ("api",): {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]},
            ("apis",): {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "apps", "versions": [apps], "preferredVersion": apps}]},
            ("apis", "apps"): {"kind": "APIGroup", "apiVersion": "v1", "name": "apps", "versions": [apps],
                               "preferredVersion": apps},
        }
        for path, version, extra in ((("api", "v1"), "v1", []), (("apis", "apps", "v1"), "apps/v1", [SCALE_DISCOVERY])):
            documents[path] = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": version,
                               "resources": [t.discovery() for t in TYPES.values() if t.api_version == version] + extra}
        return documents.get(tuple(parts))


# --------------------------------------------------------------------------------- CLI
def main(argv=None):
    parser = argparse.ArgumentParser(
        description="fediflow.dr lab HTTP doubles (Kubernetes API, Slack webhook, federation peers)")
    sub = parser.add_subparsers(dest="double", required=True)
    for name in ("k8s", "slack", "web"):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--record", required=True, help="JSONL file every request is appended to")
        if name == "k8s":
            p.add_argument("--seed", help="seed JSON, used only while the state file does not exist")
            p.add_argument("--state", help="state file (default: RECORD minus .jsonl, plus .state.json)")
            p.add_argument("--token-file", help="require 'Authorization: Bearer <token in this file>'")
            p.add_argument("--app-namespace", default="fediflow", help="namespace of the app for /_app/healthz")
            p.add_argument("--app-deployment", default="api", help="deployment whose ready replicas /_app/healthz needs")
            p.add_argument("--app-configmap", default="app-config",
                           help="configmap whose DATABASE_ROLE must be primary for /_app/healthz")
        if name == "web":
            p.add_argument("--peer", action="append", required=True, type=peer_name,
                           help="a federation peer answering /peers/NAME/.well-known/nodeinfo (repeatable)")
    args = parser.parse_args(argv)
    recorder = Recorder(args.record)
    if args.double == "slack":
        return serve(SlackApp(recorder), args.host, args.port)
    if args.double == "web":
        return serve(WebApp(recorder, args.peer, args.host, args.port), args.host, args.port)
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as fh:
            token = fh.read().strip()
    state = args.state or os.path.splitext(os.path.abspath(args.record))[0] + ".state.json"
    app = AppTarget(args.app_namespace, args.app_deployment, args.app_configmap)
    return serve(K8sApp(recorder, Store(state, args.seed), token, args.port, app), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
