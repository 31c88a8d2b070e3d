#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing, then runs
# unit tests, builder round trips, interop tests, the QEMU boot tests on both architectures,
# and builds the fuzz targets. Kernels are cached under ~/.cache/hostos (by content hash).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

"$repo/scripts/setup.sh"

echo "test: cargo test --workspace (unit, interop, QEMU boot tests)" >&2
cargo test --workspace --locked

echo "test: building the fuzz targets" >&2
"$repo/scripts/fuzz-build.sh"
echo "test: all passed" >&2
