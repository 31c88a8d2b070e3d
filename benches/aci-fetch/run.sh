#!/usr/bin/env bash
# ACI fetch + verify + unpack benchmark (design.md §6 target: >= 0.8x of `sha512sum` + `tar x`).
#
# Builds a ~200 MB ACI (gzip, what the reference tools use), serves it with
# `python3 -m http.server` on 127.0.0.1:80 (discovery needs the default port), then times:
#   baseline: curl -o FILE  +  sha512sum FILE  +  tar -xzf FILE
#   ours:     builder aci fetch (discovery, download, minisign signature and trust check)
#             + builder aci extract (decompress, Image ID while streaming, safe unpack)
# and prints ours/baseline as a speed ratio (>1 means we are faster).
# Needs root (port 80), python3, curl, tar. SIZE_MB (default 200) and RUNS (default 3) tune it.
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

for tool in python3 curl tar sha512sum; do
    command -v "$tool" >/dev/null || { echo "missing $tool (Debian: python3, curl, tar, coreutils)" >&2; exit 1; }
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
best_base=""; best_ours=""
for run in $(seq "$runs"); do
    rm -rf "$work/out-base" "$work/out-ours" "$work/dl.aci" "$work/fetched.aci"
    mkdir -p "$work/out-base"
    sync; t0=$(now)
    curl -sf -o "$work/dl.aci" http://localhost/files/bench.aci
    sha512sum "$work/dl.aci" >/dev/null
    tar -xf "$work/dl.aci" -C "$work/out-base"
    t1=$(now)
    sync; t2=$(now)
    "$builder" aci fetch localhost/bench --insecure-http --trust "$work/trust" -o "$work/fetched.aci" >/dev/null 2>&1
    t2a=$(now)
    "$builder" aci extract "$work/fetched.aci" "$work/out-ours" >/dev/null
    t3=$(now)
    base=$(echo "$t1 - $t0" | bc -l); ours=$(echo "$t3 - $t2" | bc -l)
    fetch=$(echo "$t2a - $t2" | bc -l); extract=$(echo "$t3 - $t2a" | bc -l)
    printf 'run %d: baseline %.2f s, ours %.2f s (fetch+verify %.2f s, extract %.2f s)\n' \
        "$run" "$base" "$ours" "$fetch" "$extract"
    if [[ -z "$best_base" ]] || (( $(echo "$base < $best_base" | bc -l) )); then best_base=$base; fi
    if [[ -z "$best_ours" ]] || (( $(echo "$ours < $best_ours" | bc -l) )); then best_ours=$ours; fi
done
diff -r "$work/out-base/rootfs" "$work/out-ours/rootfs" >/dev/null && echo "bench: both trees identical"
printf 'best of %d: baseline (curl + sha512sum + tar x) %.2f s, ours (fetch + verify + extract) %.2f s\n' \
    "$runs" "$best_base" "$best_ours"
printf 'ratio (baseline/ours, >= 0.8 is the target): %.2f\n' "$(echo "$best_base / $best_ours" | bc -l)"
