"""Contract test of keyward's gRPC API from a real grpcio client.

Generates Python stubs from proto/ with grpc_tools.protoc, then talks to the server at
$KEYWARD_TEST_GRPC_ADDR with the admin key in $KEYWARD_TEST_ADMIN_KEY.
Run with the venv of tests/tools.sh: target/tools/bin/python tests/python/client_test.py
KEYWARD_TEST_CODEGEN_ONLY=1 stops after generating and importing the stubs (no server needed).
"""

import importlib
import os
import sys
import tempfile
from pathlib import Path

import grpc
import grpc_tools
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"


def fail(msg):
    print(f"client_test: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print(f"client_test: ok: {msg}")


def generate_stubs(out_dir):
    """Compiles every .proto under proto/ into out_dir and puts it on sys.path."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]
    if protoc.main(args) != 0:
        fail(f"grpc_tools.protoc failed on {protos}")
    sys.path.insert(0, str(out_dir))


def main():
    with tempfile.TemporaryDirectory(prefix="keyward-pystubs-") as gen:
        generate_stubs(gen)
        pb = importlib.import_module("keyward.v1.api_key_service_pb2")
        key_pb = importlib.import_module("keyward.v1.api_key_pb2")
        svc = importlib.import_module("keyward.v1.api_key_service_pb2_grpc")
        # From the vendored proto/google/rpc, so a client needs nothing else to decode errors.
        status_pb = importlib.import_module("google.rpc.status_pb2")
        details_pb = importlib.import_module("google.rpc.error_details_pb2")
        if os.environ.get("KEYWARD_TEST_CODEGEN_ONLY"):
            print("client_test: ok: stubs generated and imported")
            return

        addr = os.environ.get("KEYWARD_TEST_GRPC_ADDR") or fail("KEYWARD_TEST_GRPC_ADDR is not set")
        admin_key = os.environ.get("KEYWARD_TEST_ADMIN_KEY") or fail("KEYWARD_TEST_ADMIN_KEY is not set")
        auth = [("authorization", f"Bearer {admin_key}")]
        with grpc.insecure_channel(addr) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)

            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10)
            check(health.status == health_pb2.HealthCheckResponse.SERVING,
                  f"health Check('') is SERVING (got {health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)})")

            stub = svc.ApiKeyServiceStub(channel)
            created = stub.CreateApiKey(pb.CreateApiKeyRequest(
                api_key=key_pb.ApiKey(name="python client", scopes=["verify", "app:read"])),
                metadata=auth, timeout=10)
            check(created.secret != "" and created.api_key.id != "",
                  f"CreateApiKey returned id {created.api_key.id!r} and a secret")

            def verify(scopes, want_valid, want_code):
                got = stub.VerifyApiKey(pb.VerifyApiKeyRequest(key=created.secret, required_scopes=scopes),
                                        metadata=auth, timeout=10)
                code = key_pb.VerificationCode.Name(got.code)
                check(got.valid == want_valid and code == want_code,
                      f"VerifyApiKey(required_scopes={scopes}) -> valid={want_valid} {want_code} "
                      f"(got valid={got.valid} {code})")

            verify(["app:read"], True, "VERIFICATION_CODE_VALID")
            verify(["app:write"], False, "VERIFICATION_CODE_INSUFFICIENT_SCOPE")

            deleted = stub.DeleteApiKey(pb.DeleteApiKeyRequest(id=created.api_key.id), metadata=auth, timeout=10)
            status = key_pb.ApiKeyStatus.Name(deleted.api_key.status)
            check(status == "API_KEY_STATUS_REVOKED", f"DeleteApiKey -> API_KEY_STATUS_REVOKED (got {status})")

            verify(["app:read"], False, "VERIFICATION_CODE_REVOKED")

            # The error details travel as a google.rpc.Status in the grpc-status-details-bin trailer.
            try:
                stub.CreateApiKey(pb.CreateApiKeyRequest(api_key=key_pb.ApiKey(name="")), metadata=auth, timeout=10)
                fail("CreateApiKey with a blank name succeeded; want INVALID_ARGUMENT")
            except grpc.RpcError as err:
                trailer = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
                check(err.code() == grpc.StatusCode.INVALID_ARGUMENT and trailer is not None,
                      f"a blank name -> INVALID_ARGUMENT with grpc-status-details-bin (got {err.code().name})")
                status = status_pb.Status.FromString(trailer)
                info, bad = details_pb.ErrorInfo(), details_pb.BadRequest()
                for detail in status.details:
                    if detail.Is(info.DESCRIPTOR):
                        detail.Unpack(info)
                    elif detail.Is(bad.DESCRIPTOR):
                        detail.Unpack(bad)
                check(info.domain == "keyward.v1" and info.reason != "",
                      f"ErrorInfo decoded: domain {info.domain!r}, reason {info.reason!r}")
                fields = [v.field for v in bad.field_violations]
                check("api_key.name" in fields, f"BadRequest decoded: field violations {fields}")

            try:
                stub.GetCallerApiKey(pb.GetCallerApiKeyRequest(), timeout=10)
                fail("GetCallerApiKey without credentials succeeded; want UNAUTHENTICATED")
            except grpc.RpcError as err:
                check(err.code() == grpc.StatusCode.UNAUTHENTICATED,
                      f"a call without credentials -> UNAUTHENTICATED (got {err.code().name}: {err.details()})")

    print("client_test: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except grpc.FutureTimeoutError:
        fail(f"no connection to {os.environ.get('KEYWARD_TEST_GRPC_ADDR')} within 10s")
    except grpc.RpcError as err:
        fail(f"unexpected gRPC error {err.code().name}: {err.details()}")
