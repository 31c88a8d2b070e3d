#!/usr/bin/env bash
# Builds every cargo-fuzz target (aci/fuzz, hostnet/fuzz) with the stable toolchain, installing cargo-fuzz
# first if it is missing. Only stable Rust exists here: cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address, -Cpasses=sancov-module), which RUSTC_BOOTSTRAP=1 lets stable accept.
#
#   scripts/fuzz-build.sh                  # build all targets (ASan, release with debug asserts)
#   FUZZ_SECONDS=60 scripts/fuzz-build.sh  # build, then run each target for 60 s
#   FUZZ_BUILD_ARGS="-s none" scripts/fuzz-build.sh   # without a sanitizer
#
# Each run starts from a fresh corpus in a temp dir (nothing is left in the tree) and a crash,
# leak, timeout or going over the memory limit fails the script; libFuzzer writes the input
# that did it under <crate>/fuzz/artifacts/<target>/.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
for crate in aci hostnet; do
    cd "$repo/$crate"
    # cargo fuzz has no --locked: check the committed lock file first, so a stale one fails
    # here instead of being rewritten by the build.
    if ! cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null; then
        echo "fuzz: $crate/fuzz/Cargo.lock is out of date; run \`cargo update -w --manifest-path $crate/fuzz/Cargo.toml\` and commit it" >&2
        exit 1
    fi
    # shellcheck disable=SC2086  # FUZZ_BUILD_ARGS is a list of flags
    cargo fuzz build ${FUZZ_BUILD_ARGS:-}
    if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 &&
        ! git -C "$repo" diff --quiet -- "$crate/fuzz/Cargo.lock"; then
        echo "fuzz: $crate/fuzz/Cargo.lock changed during the build; commit the updated lock" >&2
        exit 1
    fi
    if [[ -n "${FUZZ_SECONDS:-}" ]]; then
        corpus_root="$(mktemp -d)"
        for target in $(cargo fuzz list); do
            echo "fuzz: running $crate/$target for ${FUZZ_SECONDS}s" >&2
            mkdir -p "$corpus_root/$target"
            # shellcheck disable=SC2086
            if ! cargo fuzz run ${FUZZ_BUILD_ARGS:-} "$target" "$corpus_root/$target" -- \
                -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=30; then
                rm -rf "$corpus_root"
                exit 1
            fi
        done
        rm -rf "$corpus_root"
    fi
done
