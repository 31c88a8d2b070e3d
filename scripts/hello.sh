#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install what is missing, build
# images/hello.toml's signed disk image for this machine's architecture (or ARCH=aarch64) and
# boot it under QEMU through the firmware (OVMF / AAVMF) with the serial console on this
# terminal: init verifies and starts the declared pod, whose output appears as `hello/greeter:`. The guest's power button is pressed after
# POWERDOWN_AFTER seconds after init is ready (default 15; 0 = never, quit QEMU with Ctrl-A X).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

"$repo/scripts/setup.sh"
arch="${ARCH:-$(uname -m)}"
after="${POWERDOWN_AFTER:-15}"
args=(run images/hello.toml --arch "$arch" -o out)
if [ "$after" != 0 ]; then args+=(--powerdown-after "$after"); fi
# The same build of the builder as scripts/test.sh makes, so neither rebuilds the other's.
cargo build --release --locked -p builder
# The pod's image: Debian's busybox-static as a signed ACI, in images/aci/.
"$repo/scripts/demo-aci.sh"
"$repo/target/release/builder" "${args[@]}"
