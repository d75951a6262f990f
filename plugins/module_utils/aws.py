# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS connection options (as amazon.aws names them) and a boto3 client factory."""

from __future__ import annotations

import os

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, require_readable_file


def aws_common_argument_spec():
    """The argument spec matching ``doc_fragments/aws.py``."""
    return {
        "region": {"type": "str", "aliases": ["aws_region"]},
        "endpoint_url": {"type": "str", "aliases": ["aws_endpoint_url"]},
        "access_key": {"type": "str", "no_log": True,
                       "aliases": ["aws_access_key_id", "aws_access_key"]},
        "secret_key": {"type": "str", "no_log": True,
                       "aliases": ["aws_secret_access_key", "aws_secret_key"]},
        "session_token": {"type": "str", "no_log": True, "aliases": ["aws_session_token"]},
        "profile": {"type": "str", "aliases": ["aws_profile"]},
        "validate_certs": {"type": "bool", "default": True},
        "aws_ca_bundle": {"type": "path"},
    }


def tls_verify(params):
    """botocore's ``verify``: False (validate_certs off), a CA bundle path, or None (AWS_CA_BUNDLE,
    then botocore's own bundle). Bad TLS options are refused before any request."""
    bundle = params.get("aws_ca_bundle")
    if params.get("validate_certs") is False:
        if bundle:
            raise FediflowError("aws_ca_bundle is given but validate_certs is false: nothing would be verified "
                                "(drop one of them)")
        return False
    require_readable_file(bundle, "aws_ca_bundle")
    return bundle or None


def client(service, params, max_attempts=8, connect_timeout=5, read_timeout=60, session=None):
    """A boto3 client honouring the module options first, then the ``AWS_*`` environment.

    Retries use botocore's ``standard`` mode (jittered exponential back-off), the same
    policy amazon.aws applies with ``AWSRetry.jittered_backoff``. A caller that must not wait for an
    endpoint of a lost region (a probe, the lease) lowers ``max_attempts`` and the timeouts. A caller
    making several clients with the same credentials (one per region) passes one ``session``
    (``aws.session_for(params)``): the service model is loaded once.
    """
    try:
        from botocore.config import Config  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise FediflowError("boto3 and botocore are required on the managed node")
    verify = tls_verify(params)
    region = params.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = params.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
    session = session or session_for(params)
    config = Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                    connect_timeout=connect_timeout, read_timeout=read_timeout)
    return session.client(service, region_name=region or None, endpoint_url=endpoint or None, config=config,
                          verify=verify)


def session_for(params):
    """A boto3 session of the module's credentials (access key, secret key, session token, profile)."""
    try:
        import boto3  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise FediflowError("boto3 and botocore are required on the managed node")
    region = params.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.session.Session(
        aws_access_key_id=params.get("access_key") or None,
        aws_secret_access_key=params.get("secret_key") or None,
        aws_session_token=params.get("session_token") or None,
        profile_name=params.get("profile") or None,
        region_name=region or None,
    )


# ---------------------------------------------------------------- errors (the one place that reads them)

def is_client_error(exc):
    """botocore's ClientError and its modeled subclasses (NoSuchHostedZone ...): an answer from AWS, not a failure
    to reach it. Without importing botocore here."""
    return any(cls.__name__ == "ClientError" for cls in type(exc).__mro__) and isinstance(
        getattr(exc, "response", None), dict)


def error_text(exc):
    """``(code, message)`` of an AWS error: a ClientError's ``Error.Code`` and ``Error.Message``; for anything else
    (no answer, a BotoCoreError) its class name and the first line of its text."""
    resp = getattr(exc, "response", None)
    err = (resp.get("Error") or {}) if isinstance(resp, dict) else {}
    lines = str(exc).splitlines()
    return err.get("Code") or type(exc).__name__, err.get("Message") or (lines[0] if lines else "")


def error_status(exc):
    """The HTTP status of the answer an AWS error carries (None for a connection failure)."""
    resp = getattr(exc, "response", None)
    return (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode") if isinstance(resp, dict) else None
