#!/bin/sh
# Writes the dependency-only skeleton of the workspace under $1: Cargo.lock, every package's
# Cargo.toml, and a stub for every target (lib, bins, build script, tests). The Dockerfile's
# planner stage runs it on the full build context, so the builder stage can compile the
# dependencies in a layer that changes only when a manifest or Cargo.lock does.
#
# The list comes from `cargo metadata --no-deps` (no network, no registry), not from a
# hand-kept list: a crate added to the workspace is in the skeleton without editing the
# Dockerfile. tests/dockerfile.sh replays this script and resolves the result offline.
#
# Usage (from the workspace root): sh docker/skeleton.sh /skeleton
set -eu

out="${1:?usage: skeleton.sh OUTDIR}"
root="$(pwd -P)"
meta="$(cargo metadata --no-deps --offline --locked --format-version 1)"

# Absolute paths from the metadata, as paths relative to the workspace root.
field() {
  printf '%s\n' "$meta" | grep -o "\"$1\":\"[^\"]*\"" | sed "s/^\"$1\":\"//; s/\"\$//" | sort -u |
    while read -r path; do
      case "$path" in
        "$root"/*) printf '%s\n' "${path#"$root"/}" ;;
        *) echo "skeleton.sh: $path is outside the workspace root $root" >&2; exit 1 ;;
      esac
    done
}

# The builder stage forgets the stub builds by the `keyward` prefix of their artifacts; a
# package named otherwise would keep its stub build, so it is refused here.
for name in $(printf '%s\n' "$meta" | grep -o '"id":"path+file://[^"]*"' | sed 's/.*#//; s/@.*//'); do
  case "$name" in
    keyward*) ;;
    *) echo "skeleton.sh: package $name does not start with keyward (see the Dockerfile's rm step)" >&2; exit 1 ;;
  esac
done

mkdir -p "$out"
cp Cargo.lock "$out/Cargo.lock"
for manifest in $(field manifest_path); do
  mkdir -p "$out/$(dirname "$manifest")"
  cp "$manifest" "$out/$manifest"
done
for src in $(field src_path); do
  mkdir -p "$out/$(dirname "$src")"
  printf '#![allow(warnings)]\nfn main() {}\n' >"$out/$src"
done
echo "skeleton.sh: $(field manifest_path | wc -l) manifests, $(field src_path | wc -l) stub targets in $out"
