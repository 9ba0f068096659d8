"""Hooks of tests/schemathesis.sh. The run authenticates with one admin key; the cases it
drops are those that would rotate, revoke or change that key (named by its id or its
number), so the run cannot lock itself out, and valid-by-the-document cases with a
made-up page token (a page token is only ever one the server issued). Every other case runs."""

import os
import uuid

import schemathesis

RUN_KEY = {os.environ["KEYWARD_RUN_KEY_ID"], os.environ["KEYWARD_RUN_KEY_NUMBER"]}
GUARDED = {"ApiKeyService_RotateApiKey", "ApiKeyService_DeleteApiKey", "ApiKeyService_UpdateApiKey"}


@schemathesis.hook
def filter_case(context, case):
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and (case.query or {}).get("page_token"):
        return False
    if case.operation.definition.raw.get("operationId") not in GUARDED:
        return True
    return str((case.path_parameters or {}).get("id")) not in RUN_KEY


def _fresh(value):
    """A fresh UUID in place of a generated one: a request_id names one logical request,
    and the generator offers the same few UUIDs to every operation."""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return value
    return str(uuid.uuid4())


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and "requestId" in body:
        body = {**body, "requestId": _fresh(body["requestId"])}
    return body


@schemathesis.hook
def map_query(context, query):
    if isinstance(query, dict) and "request_id" in query:
        query = {**query, "request_id": _fresh(query["request_id"])}
    return query
