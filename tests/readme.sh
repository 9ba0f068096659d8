#!/usr/bin/env bash
# README.md's shell examples, run as its reader would run them: every ```sh, ```bash,
# ```shell and ```console block (of a console block, the `$ ` lines), in order, in one shell
# (a variable set in one block is there in the next), from a fresh directory, with
# target/tools/bin on PATH (bash tests/tools.sh) and no KEYWARD_* variable inherited.
# The blocks run in a network namespace of their own with only a loopback interface, so
# README's own ports (50051, 8080) are free whatever else runs here, and an example that
# reaches a host outside the machine fails.
#
# The line before a block may say how to run it (an HTML comment, invisible on GitHub):
#   <!-- readme-test: skip (why) -->  not run; the reason is required
#   <!-- readme-test: serve -->       starts the service: its `cargo run --release --bin keyward`
#                                     runs target/debug/keyward in the background instead (after
#                                     stopping the one started before), then waits until gRPC
#                                     health answers SERVING and REST answers
# Any other block must exit 0: `set -euo pipefail`, and curl fails on a 4xx or 5xx answer.
#
# Run from anywhere after `cargo build --bin keyward`: bash tests/readme.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
die() { echo "readme: FAIL: $*" >&2; exit 1; }

if [ -z "${KEYWARD_README_NETNS:-}" ]; then
  bash tests/tools.sh
  BIN="$PWD/${CARGO_TARGET_DIR:-target}/debug/keyward"
  [ -x "$BIN" ] || die "$BIN not found: run 'cargo build --bin keyward' first"
  # As root, a network namespace alone; otherwise inside a user namespace of our own.
  as_user=(); [ "$(id -u)" = 0 ] || as_user=(--map-root-user)
  unshare --net "${as_user[@]}" true 2>/dev/null ||
    die "cannot create a network namespace (unshare --net ${as_user[*]}): this test needs one"
  exec unshare --net "${as_user[@]}" env KEYWARD_README_NETNS=1 KEYWARD_README_BIN="$BIN" bash "$PWD/tests/readme.sh"
fi

ip link set lo up
TOOLS_BIN="$PWD/target/tools/bin"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# The blocks, each after the line number it starts at, as one script.
python3 - README.md >"$TMP/blocks.sh" <<'PY'
import re
import sys

SHELLS = {"sh", "bash", "shell", "console"}
SERVE = re.compile(r"cargo run --release --bin keyward( --)?")
MARK = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")


def fail(line, message):
    sys.exit(f"readme: FAIL: README.md:{line}: {message}")


lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
mark, mark_line, fence, block = None, 0, None, []
for number, text in enumerate(lines, 1):
    if fence is None:
        if text.startswith("```"):
            language = text[3:].strip()
            if not language:
                fail(number, "a code block without a language: say sh, console, toml, ...")
            fence, block, start = language, [], number
        elif MARK.search(text):
            if mark is not None:
                fail(number, "two readme-test comments in a row")
            mark, mark_line = MARK.search(text).group(1), number
        elif text.strip() and mark is not None:
            fail(mark_line, "a readme-test comment must come right before the block it is about")
        continue
    if not text.startswith("```"):
        block.append(text)
        continue
    # The block ends here.
    if mark is not None and fence not in SHELLS:
        fail(mark_line, f"a readme-test comment before a {fence} block, which is never run")
    if fence in SHELLS:
        if fence == "console":
            commands, going_on = [], False
            for line in block:
                if going_on or line.startswith("$ "):
                    commands.append(line[2:] if not going_on else line)
                    going_on = line.endswith("\\")
            block = commands
        if mark is not None and mark.startswith("skip"):
            if not re.fullmatch(r"skip \(.+\)", mark):
                fail(mark_line, "a skipped block says why: <!-- readme-test: skip (why) -->")
            print(f"echo 'readme: skipped the block at README.md:{start} {mark[5:]}'")
        elif mark is not None and mark != "serve":
            fail(mark_line, f"unknown readme-test comment {mark!r}: skip (why) or serve")
        else:
            if mark == "serve":
                if not any(SERVE.search(line) for line in block):
                    fail(mark_line, "a serve block without `cargo run --release --bin keyward`")
                block = [SERVE.sub("readme_serve", line) for line in block]
            print(f"README_LINE={start}")
            print("\n".join(block))
    fence, mark = None, None
if fence is not None:
    fail(start, "a code block that never ends")
if mark is not None:
    fail(mark_line, "a readme-test comment at the end, before no block")
PY

cat >"$TMP/run.sh" <<'SH'
# How the blocks run (the preamble; the blocks follow it).
set -eEuo pipefail
unset $(compgen -e | grep '^KEYWARD_' | grep -v '^KEYWARD_README_' || true)
PATH="$TOOLS_BIN:$PATH"
README_LINE=0
SERVER_PID=""
trap '{ set +x; } 2>/dev/null; echo "readme: FAIL: the block at README.md:$README_LINE (its last + line above)" >&2' ERR
curl() { command curl --fail-with-body --max-time 30 "$@"; }
readme_stop() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=""
}
readme_serve() {
  { set +x; } 2>/dev/null
  readme_stop
  "$KEYWARD_README_BIN" "$@" >>"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + 60))
  until grpcurl -plaintext -max-time 2 localhost:50051 grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"' &&
    command curl -sf --max-time 2 localhost:8080/api/v1/health >/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "readme: the server exited" >&2; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "readme: the server did not serve within 60 s" >&2; return 1; }
    sleep 0.5
  done
  set -x
}
trap 'readme_stop' EXIT
set -x
SH
cat "$TMP/blocks.sh" >>"$TMP/run.sh"

mkdir "$TMP/home"
cd "$TMP/home"
export TOOLS_BIN SERVER_LOG="$TMP/server.log"
if ! bash "$TMP/run.sh"; then
  echo "readme: ---- server log ----" >&2
  cat "$SERVER_LOG" >&2 2>/dev/null || true
  exit 1
fi
echo "readme: every shell block of README.md ran"
