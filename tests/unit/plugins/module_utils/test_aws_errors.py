# -*- coding: utf-8 -*-
"""aws.error_text / error_status / is_client_error: the one place AWS errors are read, on botocore's own
exception classes."""
from __future__ import annotations

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import aws

exceptions = pytest.importorskip("botocore.exceptions")


def _client_error(code, message, status, cls=None):
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return (cls or exceptions.ClientError)(response, "PutObject")


def test_a_client_error_gives_its_code_message_and_status():
    exc = _client_error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412)
    assert aws.is_client_error(exc)
    assert aws.error_text(exc) == ("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
    assert aws.error_status(exc) == 412


def test_a_modeled_subclass_is_a_client_error_too():
    class NoSuchHostedZone(exceptions.ClientError):
        pass
    exc = _client_error("NoSuchHostedZone", "No hosted zone found with ID: Z1", 404, cls=NoSuchHostedZone)
    assert aws.is_client_error(exc) and aws.error_text(exc) == ("NoSuchHostedZone", "No hosted zone found with ID: Z1")


def test_an_answer_without_a_message_falls_back_to_the_error_text():
    exc = exceptions.ClientError({"Error": {"Code": "500"}}, "GetObject")
    code, message = aws.error_text(exc)
    assert code == "500" and "GetObject" in message and aws.error_status(exc) is None


def test_no_answer_is_named_by_its_class_and_first_line():
    exc = exceptions.EndpointConnectionError(endpoint_url="http://198.18.0.9:9000/bucket")
    assert not aws.is_client_error(exc) and aws.error_status(exc) is None
    code, message = aws.error_text(exc)
    assert code == "EndpointConnectionError" and "198.18.0.9" in message
    assert aws.error_text(RuntimeError("line one\nline two")) == ("RuntimeError", "line one")
    assert aws.error_text(RuntimeError()) == ("RuntimeError", "")
