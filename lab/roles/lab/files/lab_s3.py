# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LAB ONLY. A region's S3: moto's server with IAM enforcement on, and the identities of the lab.

    lab_s3.py --host ADDR --port PORT --identities FILE [--tls-port PORT --tls-cert FILE --tls-key FILE]

FILE (JSON, 0600): ``{"identities": [{"name", "access_key", "secret_key", "policy": <IAM policy document>}]}``.
Each identity becomes an IAM user of moto's account with that access key and its policy inline, before the
server answers anything; ``INITIAL_NO_AUTH_ACTION_COUNT`` is 0, so every S3 call is signed by one of them
and checked against its policy (a bad signature, an unknown key or a call the policy does not allow is denied
as S3 denies it). What the lab carries on top of moto 5 (each said where it is done):

* moto issue #5948 (``_raw_query_for_signature``): moto rebuilds the request URL through werkzeug, which
  decodes ``%2F`` in the query string, so a correctly signed ListObjectsV2 whose ``prefix`` holds a ``/`` fails
  with SignatureDoesNotMatch. The signature is checked against the query string as it came over the wire.
* IAM evaluation of S3 calls (``_s3_decision``): moto matches Action and Resource but checks only
  ``StringEquals`` conditions and never for S3 (its condition context is empty), checks a DeleteObjects
  request against the bucket instead of each key, and maps the Object Lock calls to unrelated actions. Here
  an S3 call is judged as AWS judges it for an IAM user's policy: an explicit Deny wins, else an Allow is
  needed; ``s3:prefix`` is known to ListBucket / ListBucketVersions; conditions ``StringEquals``,
  ``StringNotEquals``, ``StringLike``, ``StringNotLike`` (an unknown operator is refused at start-up, never
  silently ignored); DeleteObjects needs s3:DeleteObject (s3:DeleteObjectVersion with a version id) on every
  key; ``x-amz-bypass-governance-retention`` needs s3:BypassGovernanceRetention.
* Object Lock configuration (``_lock_configuration``): moto answers a default retention of N days with
  ``Years: 0`` too (AWS names only the one set, so amazon.aws.s3_bucket saw a change at every lab_up) and refuses
  to change the default retention of a bucket that holds objects (AWS allows it once Object Lock is on).
* A TLS front (``--tls-port``): the same S3 over HTTPS, with a certificate of the lab CA, for clients that speak only
  HTTPS to S3 (pgBackRest). moto's own ``-c/-k`` server (werkzeug) ends every TLS connection without a close_notify
  and pgBackRest, which reuses connections, fails with "TLS error ... unexpected eof while reading" after a 60 s
  timeout; the front terminates TLS itself (asyncio: a clean TLS shutdown on every close) and relays the bytes to the
  HTTP server in the same process, so the Host header and the signature are the client's own.
"""

import argparse
import asyncio
import fnmatch
import json
import os
import ssl
import sys
import threading
from urllib.parse import parse_qs, urlsplit

CONDITION_OPERATORS = ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike")


def _listify(value):
    return value if isinstance(value, list) else [value]


def check_policy(doc, where):
    """Refuse a policy this evaluator would not judge as AWS does."""
    statements = _listify(doc.get("Statement") or [])
    if not statements:
        raise SystemExit("%s: the policy has no Statement" % where)
    for st in statements:
        if st.get("Effect") not in ("Allow", "Deny") or not ("Action" in st or "NotAction" in st):
            raise SystemExit("%s: every statement needs Effect Allow/Deny and Action" % where)
        for op in (st.get("Condition") or {}):
            if op not in CONDITION_OPERATORS:
                raise SystemExit("%s: condition operator %s is not evaluated by the lab (%s)"
                                 % (where, op, ", ".join(CONDITION_OPERATORS)))


def _matches(patterns, value, fold=False):
    value = value.lower() if fold else value
    return any(fnmatch.fnmatchcase(value, p.lower() if fold else p) for p in _listify(patterns))


def _condition_met(conditions, context):
    for op, pairs in (conditions or {}).items():
        for key, expected in pairs.items():
            actual = context.get(key)
            if op in ("StringEquals", "StringLike"):
                if actual is None:
                    return False
                ok = actual in _listify(expected) if op == "StringEquals" else _matches(expected, actual)
            else:
                ok = actual is None or (actual not in _listify(expected) if op == "StringNotEquals"
                                        else not _matches(expected, actual))
            if not ok:
                return False
    return True


def statement_effect(st, action, resource, context):
    """'Allow', 'Deny' or None (the statement does not apply to this request)."""
    if "NotAction" in st:
        if _matches(st["NotAction"], action, fold=True):
            return None
    elif not _matches(st["Action"], action, fold=True):
        return None
    if "NotResource" in st:
        if _matches(st["NotResource"], resource):
            return None
    elif not _matches(st.get("Resource", "*"), resource):
        return None
    if not _condition_met(st.get("Condition"), context):
        return None
    return st["Effect"]


def decide(documents, requests):
    """True when every ``(action, resource, context)`` is allowed by the documents and none denied."""
    for action, resource, context in requests:
        effects = {statement_effect(st, action, resource, context)
                   for doc in documents for st in _listify(doc.get("Statement") or [])}
        if "Deny" in effects or "Allow" not in effects:
            return False
    return True


def s3_requests(action, resource, method, path, body, headers):
    """What one S3 call needs allowed: ``[(action, resource, context)]``."""
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    context = {}
    if action in ("s3:ListBucket", "s3:ListBucketVersions"):
        context["s3:prefix"] = (query.get("prefix") or [""])[0]
    out = [(action, resource, context)]
    if method == "POST" and "delete" in query and "/" not in resource.split(":::", 1)[1]:
        import xml.etree.ElementTree as ET  # pylint: disable=import-outside-toplevel
        root = ET.fromstring(body or b"<Delete/>")
        ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        out = []
        for obj in root.iter(ns + "Object"):
            key = obj.findtext(ns + "Key") or ""
            what = "s3:DeleteObjectVersion" if obj.findtext(ns + "VersionId") else "s3:DeleteObject"
            out.append((what, "%s/%s" % (resource, key), {}))
    if str(headers.get("x-amz-bypass-governance-retention", "")).lower() == "true":
        out.append(("s3:BypassGovernanceRetention", resource, {}))
    return out


def patch_moto():
    """The lab's fixes to moto (see the module's docstring), applied before the server starts."""
    from moto.core.authorization import ActionAuthenticatorMixin  # pylint: disable=import-outside-toplevel
    from moto.iam import access_control  # pylint: disable=import-outside-toplevel
    from moto.s3 import responses as s3responses  # pylint: disable=import-outside-toplevel

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action  # pylint: disable=protected-access

    def _raw_query_for_signature(self, iam_request_cls, resource="*"):
        environ = getattr(getattr(self, "request", None), "environ", None)
        uri = getattr(self, "uri", None)
        if environ is None or not uri:
            return original(self, iam_request_cls, resource)
        raw = environ.get("QUERY_STRING", "")
        self.uri = uri.split("?", 1)[0] + ("?" + raw if raw else "")
        try:
            return original(self, iam_request_cls, resource)
        finally:
            self.uri = uri

    def _s3_decision(self, resource):
        # pylint: disable=protected-access
        documents = [access_control.IAMPolicy(p)._policy_json for p in self._access_key.collect_policies()]
        headers = {k.lower(): v for k, v in dict(self._headers).items()}
        if not decide(documents, s3_requests(self._action, resource, self._method, self._path, self._body, headers)):
            self._raise_access_denied()

    ActionAuthenticatorMixin._authenticate_and_authorize_action = _raw_query_for_signature  # pylint: disable=protected-access
    _lock_configuration()
    access_control.S3IAMRequest.check_action_permitted = _s3_decision
    actions = s3responses.ACTION_MAP
    actions["BUCKET"]["HEAD"]["DEFAULT"] = "ListBucket"  # HeadBucket is authorised as s3:ListBucket on AWS
    actions["BUCKET"]["GET"]["public_access_block"] = "GetBucketPublicAccessBlock"
    actions["BUCKET"]["GET"]["publicAccessBlock"] = "GetBucketPublicAccessBlock"
    actions["BUCKET"]["GET"]["encryption"] = "GetEncryptionConfiguration"
    actions["BUCKET"]["GET"]["object-lock"] = "GetBucketObjectLockConfiguration"
    actions["BUCKET"]["PUT"]["object-lock"] = "PutBucketObjectLockConfiguration"
    actions["KEY"]["GET"]["retention"] = "GetObjectRetention"
    actions["KEY"]["PUT"]["retention"] = "PutObjectRetention"
    actions["KEY"]["GET"]["legal-hold"] = "GetObjectLegalHold"
    actions["KEY"]["PUT"]["legal-hold"] = "PutObjectLegalHold"


def _lock_configuration():
    from moto.s3.models import S3Backend  # pylint: disable=import-outside-toplevel

    get_original, put_original = S3Backend.get_object_lock_configuration, S3Backend.put_object_lock_configuration

    def get_lock(self, bucket_name):
        enabled, mode, days, years = get_original(self, bucket_name)
        return enabled, mode, days or None, years or None

    def put_lock(self, bucket_name, lock_enabled, mode=None, days=None, years=None):
        bucket = self.get_bucket(bucket_name)
        if bucket.object_lock_enabled and lock_enabled:
            bucket.default_lock_mode, bucket.default_lock_days, bucket.default_lock_years = mode, days, years
            return None
        return put_original(self, bucket_name, lock_enabled, mode, days, years)

    S3Backend.get_object_lock_configuration = get_lock
    S3Backend.put_object_lock_configuration = put_lock


def seed_identities(identities):
    """Each identity an IAM user of moto's default account, with its fixed access key and inline policy."""
    from moto.core import DEFAULT_ACCOUNT_ID  # pylint: disable=import-outside-toplevel
    from moto.iam.models import iam_backends  # pylint: disable=import-outside-toplevel

    backend = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for ident in identities:
        backend.create_user(region_name="us-east-1", user_name=ident["name"])
        backend.put_user_policy(ident["name"], "fediflow", json.dumps(ident["policy"]))
        key = backend.create_access_key(ident["name"])
        backend.access_keys.pop(key.access_key_id, None)
        key.access_key_id, key.secret_access_key = ident["access_key"], ident["secret_key"]
        backend.access_keys[key.access_key_id] = key


def load_identities(path):
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    identities = data.get("identities") if isinstance(data, dict) else None
    if not isinstance(identities, list) or not identities:
        raise SystemExit("%s: 'identities' must be a non-empty list" % path)
    keys = set()
    for ident in identities:
        for field in ("name", "access_key", "secret_key", "policy"):
            if not ident.get(field):
                raise SystemExit("%s: every identity needs %s" % (path, field))
        if ident["access_key"] in keys:
            raise SystemExit("%s: access key of %s used twice" % (path, ident["name"]))
        keys.add(ident["access_key"])
        check_policy(ident["policy"], "%s: %s" % (path, ident["name"]))
    return identities


async def _relay(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


def _tls_front(host, port, http_port, cert, key, ready):
    """Serve HTTPS on host:port, every connection relayed to the HTTP server on host:http_port (a thread)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, http_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_relay(client_reader, upstream_writer), _relay(upstream_reader, client_writer))

    async def serve():
        server = await asyncio.start_server(handle, host, port, ssl=context)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def start_tls_front(host, port, http_port, cert, key, timeout=10.0):
    ready = threading.Event()
    thread = threading.Thread(target=_tls_front, args=(host, port, http_port, cert, key, ready), daemon=True,
                              name="tls-front")
    thread.start()
    if not ready.wait(timeout):
        raise SystemExit("the TLS front on %s:%s did not start within %.0f s" % (host, port, timeout))
    return thread


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--identities", required=True)
    parser.add_argument("--tls-port", type=int, help="also serve HTTPS here (the TLS front)")
    parser.add_argument("--tls-cert", help="the TLS front's certificate (PEM)")
    parser.add_argument("--tls-key", help="the TLS front's private key (PEM)")
    args = parser.parse_args(argv)
    if args.tls_port and not (args.tls_cert and args.tls_key):
        parser.error("--tls-port needs --tls-cert and --tls-key")
    identities = load_identities(args.identities)
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # read by moto.settings at import: every call checked
    from moto import server  # pylint: disable=import-outside-toplevel
    patch_moto()
    seed_identities(identities)
    if args.tls_port:
        start_tls_front(args.host, args.tls_port, args.port, args.tls_cert, args.tls_key)
    server.main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    sys.exit(main())
