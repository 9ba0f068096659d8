#!/usr/bin/env bash
# Proves the Dockerfile's build stages get complete inputs, without a container engine or
# network (no base image can be pulled here): it replays the planner and builder stages'
# COPY/RUN steps on a scratch copy of the build context.
#   1. the build context: the working tree minus .dockerignore's patterns (as `COPY . .` sees it);
#   2. the planner's `sh docker/skeleton.sh /skeleton` on that context;
#   3. the skeleton (step 1 of the builder) and the context (step 2) each resolve the whole
#      workspace from Cargo.lock offline: every member's manifest is there and the lock file
#      is current, for the host platform (what the image builds);
#   4. static checks: EXPOSE names the default ports of config.rs; the stage order is as above.
# It does not compile (a release build of the stub tree takes many minutes on a small machine),
# so a dependency that fails to build only in the image's toolchain is not caught here.
# Needs cargo with the crates already fetched (any earlier `cargo build --locked` did that).
# Run from anywhere: bash tests/dockerfile.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
die() { echo "dockerfile: FAIL: $*" >&2; exit 1; }
step() { echo "dockerfile: == $*"; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
HOST="$(rustc -vV | sed -n 's/^host: //p')"

step "static checks"
grpc_port="$(sed -n 's/.*env = "KEYWARD_GRPC_ADDR", default_value = "[^"]*:\([0-9]*\)".*/\1/p' crates/server/src/config.rs)"
http_port="$(sed -n 's/.*env = "KEYWARD_HTTP_ADDR", default_value = "[^"]*:\([0-9]*\)".*/\1/p' crates/server/src/config.rs)"
[ -n "$grpc_port" ] && [ -n "$http_port" ] || die "could not read the default ports from crates/server/src/config.rs"
expose="$(grep -E '^EXPOSE ' Dockerfile | cut -d' ' -f2- | tr ' ' '\n')"
for port in "$grpc_port" "$http_port"; do
  grep -qx "$port" <<<"$expose" || die "Dockerfile does not EXPOSE $port (a default port in config.rs)"
done
grep -q '^RUN sh docker/skeleton.sh /skeleton$' Dockerfile || die "the planner stage no longer runs docker/skeleton.sh /skeleton"
grep -q '^COPY --from=planner /skeleton/ ./$' Dockerfile || die "the builder stage no longer copies the skeleton"
grep -q '^USER 10001:10001$' Dockerfile || die "the image no longer runs as the numeric non-root user"

step "build context (the working tree minus .dockerignore)"
# .dockerignore patterns are relative to the context root; `**/x` matches x at any depth.
excludes=()
while IFS= read -r pattern; do
  pattern="${pattern%/}"
  case "$pattern" in
    '' | '#'*) continue ;;
    '!'*) die ".dockerignore exception '$pattern' is not replayed by this script" ;;
    '**/'*) excludes+=(--no-anchored "--exclude=${pattern#\*\*/}") ;;
    *) excludes+=(--anchored "--exclude=./$pattern") ;;
  esac
done <.dockerignore
mkdir "$TMP/context"
tar --no-wildcards-match-slash "${excludes[@]}" -cf - . | tar -xf - -C "$TMP/context"
[ ! -e "$TMP/context/target" ] || die ".dockerignore no longer keeps target/ out of the context"
echo "$(find "$TMP/context" -type f | wc -l) files"

step "planner: sh docker/skeleton.sh /skeleton"
(cd "$TMP/context" && sh docker/skeleton.sh "$TMP/skeleton")

resolve() {
  (cd "$1" && cargo metadata --locked --offline --format-version 1 --filter-platform "$HOST" >/dev/null) ||
    die "$2 does not resolve offline from Cargo.lock (see above)"
  (cd "$1" && cargo tree --locked --offline --target "$HOST" -p keyward-server -e normal,build >/dev/null) ||
    die "$2: keyward-server's dependency tree does not resolve"
}
step "builder step 1: the skeleton resolves the workspace"
resolve "$TMP/skeleton" "the skeleton"
# Every workspace member of the full tree has its manifest in the skeleton.
members() { (cd "$1" && cargo metadata --no-deps --offline --format-version 1) | grep -o '"name":"keyward[^"]*","version"' | sort; }
[ "$(members "$TMP/skeleton")" = "$(members "$ROOT")" ] || die "the skeleton's packages differ from the workspace's"

step "builder step 2: the context resolves the workspace and holds the protos build.rs compiles"
resolve "$TMP/context" "the build context"
for dir in $(sed -n 's/.*"\(proto[^"]*\)".*/\1/p' build.rs | grep -v '\.proto$' | sort -u); do
  [ -e "$TMP/context/$dir" ] || die "build.rs reads $dir, which the build context lacks"
done
[ -n "$(find "$TMP/context/proto" -name '*.proto')" ] || die "the build context has no protos"

echo "dockerfile: the image's build inputs are complete"
