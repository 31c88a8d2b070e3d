#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing, then runs
# unit tests, builder round trips, interop tests, the QEMU boot tests on both architectures,
# and builds the fuzz targets and runs each for 60 s. Kernels are cached under ~/.cache/hostos
# (by content hash).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

"$repo/scripts/setup.sh"

# One release build of the builder, the same as scripts/hello.sh makes; the QEMU tests use it
# (HOSTOS_BUILDER) instead of building their own.
echo "test: building the builder" >&2
cargo build --release --locked -p builder
export HOSTOS_BUILDER="$repo/target/release/builder"
# The signed busybox images images/hello.toml's pod runs (images/aci/, not committed).
"$repo/scripts/demo-aci.sh"

# The builder as an installed tool: `cargo install`, then build and verify an image from a
# directory outside this checkout (the install reuses the build above).
echo "test: cargo install --path builder, then build and verify from another directory" >&2
elsewhere="$(mktemp -d)"
trap 'rm -rf "$elsewhere"' EXIT
cargo install --quiet --locked --path builder --root "$elsewhere/root" --target-dir "$repo/target"
cp -r images/hello.toml images/aci "$elsewhere/"
(
  cd "$elsewhere"
  "$elsewhere/root/bin/builder" key generate -o release >/dev/null
  "$elsewhere/root/bin/builder" build hello.toml --arch x86_64 --key release.key -o out >/dev/null
  "$elsewhere/root/bin/builder" verify out/hello-x86_64.img --key release.pub
)
rm -rf "$elsewhere"
trap - EXIT

# Both kernels, before the tests: the builder's hardening test reads their merged configs from
# the cache (and fails, naming the command, if they are missing), and every boot test uses them.
echo "test: building (or reusing) both kernels" >&2
"$HOSTOS_BUILDER" kernel --arch x86_64 >/dev/null
"$HOSTOS_BUILDER" kernel --arch aarch64 >/dev/null

echo "test: cargo test --workspace (unit, round trips, interop, QEMU boot tests)" >&2
cargo test --workspace --locked

echo "test: building the fuzz targets and running each for 60 s" >&2
FUZZ_SECONDS=60 "$repo/scripts/fuzz-build.sh"
echo "test: all passed" >&2
