# Shared by the benchmark scripts, sourced from the repository root: builds the release
# binaries (unless SKIP_BUILD is set) and sets BIN, WORK, MASTER_KEY and ADMIN.
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin keyward --bin keyward-bench
BIN="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d)"
MASTER_KEY="$(head -c 32 /dev/urandom | base64)"
PY=target/tools/venv/bin/python # tests/tools.sh's venv: grpcio, xds-protos
ADMIN="kwbench_admin_$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"

wait_ready() { # wait_ready <gRPC port>: returns once a started server answers; exits after 10 s
  for _ in $(seq 1 100); do
    "$BIN/keyward-bench" run --addr "127.0.0.1:$1" --target health --requests 1 --warmup 0s >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "server did not start" >&2; exit 1
}

cpu_ticks() { # cpu_ticks <pid>: the process's user and system CPU time so far, in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

machine() { # this machine in one line: cores, CPU model, memory, kernel
  echo "$(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
}

check_frame() { # check_frame <file> <key>: a gRPC frame of the CheckRequest Envoy's ext_authz sends
  # for `GET /v1/things` with the key as a bearer token, built with Envoy's own stubs (xds-protos)
  "$PY" - "$1" "$2" <<'PY'
import struct, sys
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
headers = {":method": "GET", ":path": "/v1/things", ":authority": "api.example.com", ":scheme": "http",
           "authorization": f"Bearer {sys.argv[2]}", "user-agent": "curl/8.0", "accept": "*/*",
           "x-forwarded-proto": "http", "x-request-id": "5d2b7c2e-1f0a-4f7e-9c55-0e6d0c1b2a3f"}
http = attribute_context_pb2.AttributeContext.HttpRequest(
    id="17345236481726354", method="GET", headers=headers, path="/v1/things",
    host="api.example.com", scheme="http", protocol="HTTP/1.1")
request = attribute_context_pb2.AttributeContext.Request(http=http)
message = external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext(request=request))
body = message.SerializeToString()
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(body)) + body)
PY
}

check_admits() { # check_admits <addr> <frame file>: exits unless that Check is admitted, since a
  # denial is a gRPC OK too (h2load cannot tell) and costs less, which would flatter the figure
  "$PY" - "$1" "$2" <<'PY'
import sys, grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
request = external_auth_pb2.CheckRequest.FromString(open(sys.argv[2], "rb").read()[5:])
answer = external_auth_pb2_grpc.AuthorizationStub(grpc.insecure_channel(sys.argv[1])).Check(request)
if answer.status.code != 0 or not answer.HasField("ok_response"):
    sys.exit(f"the Check does not admit: {answer}")
PY
}
