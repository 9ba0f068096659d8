# Shared by the benchmark scripts, sourced from the repository root: builds the release
# binaries (unless SKIP_BUILD is set) and sets BIN, WORK, MASTER_KEY and ADMIN.
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --bin keyward --bin keyward-bench
BIN="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d)"
MASTER_KEY="$(head -c 32 /dev/urandom | base64)"
ADMIN="kwbench_admin_$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"

wait_ready() { # wait_ready <gRPC port>: returns once a started server answers; exits after 10 s
  for _ in $(seq 1 100); do
    "$BIN/keyward-bench" run --addr "127.0.0.1:$1" --target health --requests 1 --warmup 0s >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "server did not start" >&2; exit 1
}

machine() { # this machine in one line: cores, CPU model, memory, kernel
  echo "$(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
}
