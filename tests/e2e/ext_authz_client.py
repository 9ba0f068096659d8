"""Calls envoy.service.auth.v3.Authorization/Check as Envoy's ext_authz filter does, with
Envoy's own generated stubs (PyPI xds-protos), for tests/e2e/edge.rs.

    python ext_authz_client.py HOST:PORT < cases.json > answers.json

Each case is {"method", "path", "host", "headers": {name: value}}; the request's
AttributeContext is filled as Envoy fills it (pseudo-headers in `headers` too, names in
lower case). Each answer is {"grpc_code", "allowed", "status", "headers", "headers_to_remove",
"body"}.
"""

import json
import sys

import grpc
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import timestamp_pb2


def peer(host, port):
    return attribute_context_pb2.AttributeContext.Peer(
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))
    )


def check_request(case, number):
    headers = {name.lower(): value for name, value in case.get("headers", {}).items()}
    headers.update({":method": case["method"], ":path": case["path"], ":authority": case["host"], ":scheme": "http"})
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id=f"edge-test-{number}",
        method=case["method"],
        headers=headers,
        path=case["path"],
        host=case["host"],
        scheme="http",
        protocol="HTTP/1.1",
    )
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            source=peer("10.0.0.7", 51234),
            destination=peer("10.0.0.1", 8000),
            request=attribute_context_pb2.AttributeContext.Request(time=now, http=http),
        )
    )


def answer(response):
    kind = response.WhichOneof("http_response")
    if kind == "ok_response":
        ok = response.ok_response
        return {
            "grpc_code": response.status.code,
            "allowed": True,
            "status": 200,
            "headers": {h.header.key: h.header.value for h in ok.headers},
            "headers_to_remove": list(ok.headers_to_remove),
            "body": "",
        }
    denied = response.denied_response
    return {
        "grpc_code": response.status.code,
        "allowed": False,
        "status": denied.status.code,
        "headers": {h.header.key: h.header.value for h in denied.headers},
        "headers_to_remove": [],
        "body": denied.body,
    }


def main():
    cases = json.load(sys.stdin)
    with grpc.insecure_channel(sys.argv[1]) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        answers = [answer(stub.Check(check_request(case, n), timeout=30)) for n, case in enumerate(cases)]
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
