#!/usr/bin/env bash
# Builds the pod test images: OUTDIR/busybox-amd64.aci and OUTDIR/busybox-arm64.aci, ACIs of
# Debian's busybox-static (amd64: the installed /bin/busybox; arm64: the binary
# scripts/setup.sh unpacks), each signed with SECRET_KEY (OUTDIR/X.aci.minisig beside it).
#
#   scripts/busybox-aci.sh OUTDIR SECRET_KEY
#
# Each image is `example.com/busybox` unless BUSYBOX_ACI_NAME says otherwise (labels version=1.0, os=linux, arch=amd64 or aarch64,
# appc's name for arm64), app exec ["/bin/sh"] as user 0 group 0; the rootfs holds busybox, the applet links tests use,
# /etc/passwd and /etc/group (root; `app` uid 1000 gid 1000, also in `staff` gid 50; nobody),
# empty /etc/hosts, /etc/hostname and /etc/resolv.conf for init to mount over, and the empty
# mount-point directories (/proc, /sys, /dev, /tmp, /run).
#
# The build is deterministic (builder aci build: sorted entries, mtime 0, owners 0): the same
# busybox gives the same Image ID. Prints one `FILE: sha512-...` line per image on stdout.
#
# Environment:
#   HOSTOS_BUILDER   the builder binary (default: `cargo run -q -p builder --release --`)
#   BUSYBOX_ACI_VARIANT  a word written to /etc/hostos-variant, so a variant gets its own
#                    Image ID (the test fixtures' untrusted and tampered images)
#   BUSYBOX_ACI_NAME     the image name instead of example.com/busybox (the fetch tests'
#                    images.test/... names, which their discovery server answers for)
#   BUSYBOX_ACI_EXTRA    a directory whose contents are copied into each rootfs (the fetch
#                    tests' large image: a file of filler bytes)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

if [ $# -ne 2 ]; then
  echo "usage: $0 OUTDIR SECRET_KEY" >&2
  exit 2
fi
out="$1"
key="$2"
variant="${BUSYBOX_ACI_VARIANT:-}"
name="${BUSYBOX_ACI_NAME:-example.com/busybox}"
extra="${BUSYBOX_ACI_EXTRA:-}"

die() { echo "busybox-aci.sh: $*" >&2; exit 1; }

[ -z "$extra" ] || [ -d "$extra" ] || die "BUSYBOX_ACI_EXTRA=$extra is not a directory"

[ -f "$key" ] || die "secret key $key does not exist (make one with: builder key generate -o NAME)"
if [ -n "${HOSTOS_BUILDER:-}" ]; then
  [ -x "$HOSTOS_BUILDER" ] || die "HOSTOS_BUILDER=$HOSTOS_BUILDER is not an executable"
  builder=("$HOSTOS_BUILDER")
else
  builder=(cargo run -q --locked --manifest-path "$repo/Cargo.toml" -p builder --release --)
fi

bb_amd64=/bin/busybox
bb_arm64="${XDG_CACHE_HOME:-$HOME/.cache}/hostos/busybox-arm64/bin/busybox"
[ -x "$bb_amd64" ] || die "$bb_amd64 is missing: install the Debian package busybox-static"
[ -x "$bb_arm64" ] || die "$bb_arm64 is missing: run scripts/setup.sh (it unpacks busybox-static:arm64)"
file -b "$bb_amd64" | grep -q 'x86-64.*statically linked' ||
  die "$bb_amd64 is not a static x86-64 binary: install the Debian package busybox-static"
file -b "$bb_arm64" | grep -q 'aarch64.*statically linked' ||
  die "$bb_arm64 is not a static aarch64 binary: rerun scripts/setup.sh"

# What the pod tests and the examples run inside apps (httpd, wget and nc for images/pods.toml). Checked against the amd64 binary's applet list (the arm64
# one cannot run here; Debian builds both from one configuration).
applets=(sh ash echo cat sleep ls mkdir rmdir id grep true false head tail dd env printf test
  wc rm touch sync kill stat tee sed awk seq hostname uname readlink date chmod chown ln mv cp
  find xargs nproc free df mount umount ps whoami cut tr sort uniq yes basename dirname expr pwd
  timeout mkfifo httpd wget nc)
have="$("$bb_amd64" --list)"
wanted=()
for a in "${applets[@]}"; do
  grep -qx -- "$a" <<<"$have" || die "$bb_amd64 has no applet $a"
  wanted+=("$a")
done

mkdir -p "$out"
work="$(mktemp -d "${TMPDIR:-/tmp}/busybox-aci.XXXXXX")"
trap 'rm -rf "$work"' EXIT

build_one() {
  # The file says arm64 (Debian's name); the label says aarch64, as appc requires for linux.
  local arch="$1" label="$2" busybox="$3"
  local dir="$work/$arch" rootfs="$work/$arch/rootfs"
  mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,run,root,home/app}
  chmod 1777 "$rootfs/tmp"
  chmod 0700 "$rootfs/root"
  install -m 0755 "$busybox" "$rootfs/bin/busybox"
  for a in "${wanted[@]}"; do
    ln -s busybox "$rootfs/bin/$a"
  done
  cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
EOF
  : >"$rootfs/etc/hosts"
  : >"$rootfs/etc/hostname"
  : >"$rootfs/etc/resolv.conf"
  if [ -n "$variant" ]; then
    printf '%s\n' "$variant" >"$rootfs/etc/hostos-variant"
  fi
  if [ -n "$extra" ]; then
    cp -R "$extra/." "$rootfs/"
  fi
  cat >"$dir/manifest" <<EOF
{
  "acKind": "ImageManifest",
  "acVersion": "0.8.11",
  "name": "$name",
  "labels": [
    {"name": "version", "value": "1.0"},
    {"name": "os", "value": "linux"},
    {"name": "arch", "value": "$label"}
  ],
  "app": {
    "exec": ["/bin/sh"],
    "user": "0",
    "group": "0"
  }
}
EOF
  local aci="$out/busybox-$arch.aci"
  "${builder[@]}" -q aci build "$dir" -o "$aci"
  "${builder[@]}" -q aci sign "$aci" --key "$key" >/dev/null
  [ -f "$aci.minisig" ] || die "builder aci sign wrote no $aci.minisig"
}

build_one amd64 amd64 "$bb_amd64"
build_one arm64 aarch64 "$bb_arm64"
