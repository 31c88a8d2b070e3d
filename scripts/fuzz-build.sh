#!/usr/bin/env bash
# Builds every cargo-fuzz target in aci/fuzz with the stable toolchain, installing cargo-fuzz
# first if it is missing. Only stable Rust exists here: cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address, -Cpasses=sancov-module), which RUSTC_BOOTSTRAP=1 lets stable accept.
#
#   scripts/fuzz-build.sh                  # build all targets (ASan, release with debug asserts)
#   FUZZ_SECONDS=30 scripts/fuzz-build.sh  # build, then run each target for 30 s
#   FUZZ_BUILD_ARGS="-s none" scripts/fuzz-build.sh   # without a sanitizer
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cd "$repo/aci"
# shellcheck disable=SC2086  # FUZZ_BUILD_ARGS is a list of flags
cargo fuzz build ${FUZZ_BUILD_ARGS:-}
if [[ -n "${FUZZ_SECONDS:-}" ]]; then
    for target in $(cargo fuzz list); do
        echo "fuzz: running $target for ${FUZZ_SECONDS}s"
        # shellcheck disable=SC2086
        cargo fuzz run ${FUZZ_BUILD_ARGS:-} "$target" -- -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048
    done
fi
