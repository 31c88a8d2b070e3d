#!/usr/bin/env bash
# The demo images images/hello.toml embeds: images/aci/busybox-{amd64,arm64}.aci, signed with
# a demo key made here once (images/aci/demo.key, demo.pub; the declaration trusts demo.pub).
# Run by scripts/hello.sh and scripts/test.sh; images/aci/ is not committed.
#
#   scripts/demo-aci.sh
#
# Environment: HOSTOS_BUILDER, the builder binary (default: target/release/builder).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/images/aci"
builder="${HOSTOS_BUILDER:-$repo/target/release/builder}"
mkdir -p "$out"
if [ ! -f "$out/demo.key" ]; then
  "$builder" key generate -o "$out/demo" >&2
fi
HOSTOS_BUILDER="$builder" "$repo/scripts/busybox-aci.sh" "$out" "$out/demo.key" >/dev/null
