#!/usr/bin/env python3
"""Pods benchmark: builds benches/pods/pods.toml (three pods of the demo busybox image) per
architecture and boots the same disk RUNS times under QEMU (TCG unless KVM=1), directly
(-kernel, the disk attached and kept between boots). The first boot imports the embedded image
into the store on the data partition and renders it; later boots find it there. From init's
own console lines it reports, per boot kind: init start -> first app's exec, and the pod start
latency from "prepared" to exec (init's `started pid ... (N ms after prepared)`), and init's
resident memory once the three pods run (`init: pod all: all started: ...`). Also the size of
the stripped init per arch.

    benches/pods.py                 # both arches, 3 runs each
    RUNS=5 ARCHES=x86_64 benches/pods.py
"""
import os
import re
import shutil
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "3"))
ARCHES = os.environ.get("ARCHES", "x86_64 aarch64").split()
OUT = os.path.join(REPO, "target", "bench-pods")
STARTED = re.compile(rb"init: pod \S+: started pid \d+ (\d+) ms after init start \(([0-9.]+) ms after prepared\)")
ALL = re.compile(rb"init: pod all: all started: (\d+) apps running, init resident memory (\d+) KiB")

sys.path.insert(0, os.path.join(REPO, "benches"))
from boot import console_until, qemu_args  # noqa: E402


def boot_once(argv):
    m, buf = console_until(argv, ALL.search, 300, "every pod's start")
    starts = STARTED.findall(buf)
    first = min(int(s[0]) for s in starts)
    prepared = [float(s[1]) for s in starts]
    return first, prepared, int(m.group(1)), int(m.group(2))


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "builder"], cwd=REPO, check=True)
    subprocess.run([os.path.join(REPO, "scripts", "demo-aci.sh")], cwd=REPO, check=True)
    builder = os.path.join(REPO, "target", "release", "builder")
    print(f"# {' '.join(sys.argv)} (RUNS={RUNS}, accel={'kvm' if os.environ.get('KVM') == '1' else 'tcg'})")
    for arch in ARCHES:
        subprocess.run([builder, "build", "benches/pods/pods.toml", "--arch", arch, "--format", "raw,kernel",
                        "-o", OUT], cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        d = os.path.join(OUT, arch)
        disk = os.path.join(OUT, f"bench-pods-{arch}-bench.img")
        shutil.copyfile(os.path.join(OUT, f"bench-pods-{arch}.img"), disk)
        cmdline = open(os.path.join(d, "cmdline")).read().strip()
        argv = [a.replace(",snapshot=on", "") for a in qemu_args(arch, d, cmdline, disk)]
        init_bin = os.path.join(REPO, "target", "guest", "rustup" if arch == "x86_64" else "debian-rustc",
                                f"{arch}-unknown-linux-gnu", "guest", "init")
        print(f"{arch}: init {os.path.getsize(init_bin)} bytes ({os.path.getsize(init_bin) / 2**20:.2f} MiB)")
        first = boot_once(argv)
        later = [boot_once(argv) for _ in range(RUNS)]
        print(f"{arch} first boot (import + render): init start -> first exec {first[0]} ms; "
              f"prepared -> exec median {statistics.median(first[1]):.1f} ms; "
              f"{first[2]} apps, init RSS {first[3]} KiB")
        print(f"{arch} later boots (image in the store), {RUNS} runs: init start -> first exec median "
              f"{statistics.median(r[0] for r in later)} ms (min {min(r[0] for r in later)}); "
              f"prepared -> exec median {statistics.median(p for r in later for p in r[1]):.1f} ms "
              f"(min {min(p for r in later for p in r[1]):.1f}); "
              f"init RSS median {statistics.median(r[3] for r in later)} KiB")
        os.remove(disk)


if __name__ == "__main__":
    main()
