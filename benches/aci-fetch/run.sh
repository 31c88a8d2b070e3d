#!/usr/bin/env bash
# ACI fetch + verify + unpack benchmark (design.md §6 target: >= 0.8x of `sha512sum` + `tar x`).
#
# Builds a ~200 MB ACI (gzip, what the reference tools use), serves it with
# `python3 -m http.server` on 127.0.0.1:80 (discovery needs the default port), then times two
# comparisons, best of RUNS each, with `sync` before every timed command:
#   with download: baseline  curl -o FILE && sha512sum FILE && tar -xf FILE -C DIR
#                  ours      builder aci fetch NAME --store STORE  (one command: discovery,
#                            the signature and its key first, the download teed into the
#                            BLAKE2b prehash and the store's temp blob only; once the signature
#                            verifies, the blob is decompressed, hashed (Image ID) and unpacked;
#                            fsync and rename into the store after the manifest check)
#   file only:     baseline  sha512sum FILE && tar -xf FILE -C DIR
#                  ours      builder aci extract FILE DIR --trust T  (the file is read once for
#                            the signature, and only after it verifies read again to unpack;
#                            the tree is renamed into DIR after the manifest's name is admitted)
# and prints baseline/ours as a speed ratio (>= 0.8 is the target; > 1 means we are faster).
# Needs root (port 80), python3, curl, tar, bc. SIZE_MB (default 200), RUNS (default 3) and
# COMPRESSION (default gzip) tune it.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
size_mb="${SIZE_MB:-200}"
runs="${RUNS:-3}"
compression="${COMPRESSION:-gzip}"
work="$(mktemp -d /tmp/aci-bench.XXXXXX)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

for tool in python3 curl tar sha512sum bc; do
    command -v "$tool" >/dev/null || { echo "missing $tool (Debian: python3, curl, tar, coreutils, bc)" >&2; exit 1; }
done

cargo build --release -q -p builder --manifest-path "$repo/Cargo.toml"
builder="$repo/target/release/builder"

echo "bench: generating a ${size_mb} MB tree"
python3 - "$work/img" "$size_mb" <<'PY'
import os, sys, random, base64, platform
root, mb = sys.argv[1], int(sys.argv[2])
arch = {"x86_64": "amd64"}.get(platform.machine(), platform.machine())
rng = random.Random(42)
os.makedirs(f"{root}/rootfs", exist_ok=True)
with open(f"{root}/manifest", "w") as f:
    f.write('{"acKind":"ImageManifest","acVersion":"0.8.11","name":"localhost/bench",'
            '"labels":[{"name":"version","value":"1.0.0"},{"name":"os","value":"linux"},'
            '{"name":"arch","value":"%s"}]}' % arch)
total, i = 0, 0
while total < mb << 20:
    d = f"{root}/rootfs/d{i // 100:03d}"
    os.makedirs(d, exist_ok=True)
    size = rng.choice([4 << 10, 64 << 10, 256 << 10, 1 << 20])
    raw = rng.randbytes(size // 2)
    # Half incompressible, half text-like: roughly what binaries plus text look like.
    data = raw + base64.b64encode(rng.randbytes(size // 4))[: size - len(raw)]
    with open(f"{d}/f{i}", "wb") as f:
        f.write(data)
    total += len(data); i += 1
print(f"bench: {i} files")
PY

mkdir -p "$work/www/files"
"$builder" aci build "$work/img" -o "$work/www/files/bench.aci" --compression "$compression" >/dev/null
(cd "$work" && "$builder" key generate -o bench >/dev/null)
"$builder" aci sign "$work/www/files/bench.aci" --key "$work/bench.key" >/dev/null
"$builder" aci trust --trust "$work/trust" --root "$work/bench.pub" >/dev/null
# Discovery: GET http://localhost/bench?ac-discovery=1 (http.server ignores the query).
cat > "$work/www/bench" <<'HTML'
<html><head>
<meta name="ac-discovery" content="localhost/bench http://localhost/files/bench.{ext}">
</head></html>
HTML
ls -l "$work/www/files/"

(cd "$work/www" && exec python3 -m http.server 80 --bind 127.0.0.1 >/dev/null 2>&1) &
server_pid=$!
for _ in $(seq 50); do curl -sf -o /dev/null http://localhost/bench && break; sleep 0.1; done

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc -l; }
# min CURRENT NEW: the smaller (an empty CURRENT takes NEW).
min() { if [[ -z "$1" ]] || (( $(echo "$2 < $1" | bc -l) )); then echo "$2"; else echo "$1"; fi; }
aci="$work/www/files/bench.aci"
best_base=""; best_ours=""; best_fbase=""; best_fours=""
for run in $(seq "$runs"); do
    rm -rf "$work/out-base" "$work/store" "$work/dl.aci" "$work/out-fbase" "$work/out-fours"
    mkdir -p "$work/out-base" "$work/out-fbase"

    sync; t0=$(now)
    curl -sf -o "$work/dl.aci" http://localhost/files/bench.aci \
        && sha512sum "$work/dl.aci" >/dev/null \
        && tar -xf "$work/dl.aci" -C "$work/out-base"
    t1=$(now)
    sync; t2=$(now)
    "$builder" aci fetch localhost/bench --insecure-http --trust "$work/trust" \
        --store "$work/store" >"$work/fetch.out" 2>"$work/fetch.err"
    t3=$(now)

    sync; t4=$(now)
    sha512sum "$aci" >/dev/null && tar -xf "$aci" -C "$work/out-fbase"
    t5=$(now)
    sync; t6=$(now)
    "$builder" aci extract "$aci" "$work/out-fours" --trust "$work/trust" >/dev/null
    t7=$(now)

    base=$(elapsed "$t0" "$t1"); ours=$(elapsed "$t2" "$t3")
    fbase=$(elapsed "$t4" "$t5"); fours=$(elapsed "$t6" "$t7")
    printf 'run %d: with download: baseline %.2f s, ours %.2f s | file only: baseline %.2f s, ours %.2f s\n' \
        "$run" "$base" "$ours" "$fbase" "$fours"
    best_base=$(min "$best_base" "$base"); best_ours=$(min "$best_ours" "$ours")
    best_fbase=$(min "$best_fbase" "$fbase"); best_fours=$(min "$best_fours" "$fours")
done
tree="$(sed -n 's/^tree //p' "$work/fetch.out")"
diff -r "$work/out-base/rootfs" "$tree" >/dev/null && echo "bench: fetched tree identical to tar's"
diff -r "$work/out-fbase/rootfs" "$work/out-fours/rootfs" >/dev/null && echo "bench: extracted tree identical to tar's"
printf 'best of %d, with download: baseline (curl + sha512sum + tar x) %.2f s, ours (builder aci fetch --store) %.2f s, ratio %.2f\n' \
    "$runs" "$best_base" "$best_ours" "$(echo "$best_base / $best_ours" | bc -l)"
printf 'best of %d, file only: baseline (sha512sum + tar x) %.2f s, ours (builder aci extract --trust) %.2f s, ratio %.2f\n' \
    "$runs" "$best_fbase" "$best_fours" "$(echo "$best_fbase / $best_fours" | bc -l)"
echo "ratio = baseline time / our time; the target (design.md §6) is >= 0.8"
