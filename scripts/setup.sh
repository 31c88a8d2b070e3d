#!/usr/bin/env bash
# Installs everything the build and the test suite need on Debian 12 (bookworm).
# Idempotent: each step checks first and does nothing when already satisfied.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

# Rust itself is not a Debian package on bookworm in a usable version: the x86_64 toolchain
# comes from rustup (pinned by rust-toolchain.toml, with rustfmt and clippy). Say so first,
# in one line, rather than after minutes of apt. cargo-fuzz is installed by
# scripts/fuzz-build.sh from crates.io when needed.
if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
  log "cargo/rustup not found: install Rust with rustup (https://rustup.rs), then rerun"; exit 1
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    log "not root and no sudo: cannot install packages"; exit 1; fi
fi

export DEBIAN_FRONTEND=noninteractive
need_update=0

# QEMU 10 comes from bookworm-backports (bookworm's 7.2 conflicts with the qemu-utils already
# on this machine kind).
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "adding bookworm-backports"
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  need_update=1
fi

# The aarch64 Rust standard library and cross libc come from Debian's arm64 packages.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "adding dpkg architecture arm64"
  $SUDO dpkg --add-architecture arm64
  need_update=1
fi

BACKPORTS=(qemu-system-x86 qemu-system-arm qemu-utils)
PACKAGES=(
  ovmf qemu-efi-aarch64 u-boot-qemu
  systemd-boot-efi systemd-boot-efi:arm64
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu
  rustc-web libstd-rust-web-dev:arm64
  linux-source-6.1
  build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils zstd kmod
  binutils dosfstools gdisk minisign busybox-static python3 file
  erofs-utils cryptsetup-bin e2fsprogs
)

missing=()
for p in "${BACKPORTS[@]}" "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ] || [ "$need_update" = 1 ]; then
  log "installing: ${missing[*]:-(none, sources changed)}"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q -t bookworm-backports "${BACKPORTS[@]}"
  $SUDO apt-get install -y -q "${PACKAGES[@]}"
else
  log "all packages present"
fi

# busybox for aarch64 test payloads: not multi-arch, so unpack the arm64 .deb without installing.
BB_ARM64="${XDG_CACHE_HOME:-$HOME/.cache}/hostos/busybox-arm64/bin/busybox"
if [ ! -x "$BB_ARM64" ]; then
  log "fetching busybox-static:arm64"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q busybox-static:arm64)
  mkdir -p "$(dirname "$(dirname "$BB_ARM64")")"
  dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$tmp/x"
  install -D -m 0755 "$tmp/x/bin/busybox" "$BB_ARM64"
  rm -rf "$tmp"
fi

# Every crate the workspace locks, for every target: builder's build script builds init with
# `cargo --offline` (a nested cargo must not touch the network or the lock), so init's own
# dependencies must already be in the registry cache, which `cargo build -p builder` alone does
# not ensure on a fresh machine.
repo="$(cd "$(dirname "$0")/.." && pwd)"
log "cargo fetch --locked"
(cd "$repo" && cargo fetch --locked --quiet)

log "done"
