#!/usr/bin/env python3
"""Cold kernel build benchmark: `builder kernel --arch A` from an empty cache, and where its
CPU time goes.

For each architecture it runs target/release/builder kernel with HOSTOS_CACHE pointing at an
empty directory (target/bench-kernel-build/cache-ARCH, emptied first), so the time includes
unpacking Debian's kernel source, tinyconfig and the fragments, the build itself and copying
the result: what a user's first `builder build` of that arch pays. The compiler is reached
through a shim on PATH (same name, same --version, so the cache key and the build are
unchanged) that records each compile's CPU seconds and output file; the report groups them
by source directory, so a trim's effect on build cost can be read off before and after.

    benches/kernel-build.py                  # both arches, one after the other
    ARCHES=x86_64 benches/kernel-build.py
    JOBS=2 TOP=30 benches/kernel-build.py
    REPORT=1 benches/kernel-build.py         # only the report, from the last run's records

Run it on a quiet machine: the two build jobs (default: one per CPU) take all of it. The cache
directories are kept for inspection (each holds a full cache entry, ~2 GiB with the source).
"""
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "target", "bench-kernel-build")
ARCHES = os.environ.get("ARCHES", "x86_64 aarch64").split()
TOP = int(os.environ.get("TOP", "20"))
COMPILER = {"x86_64": "gcc", "aarch64": "aarch64-linux-gnu-gcc"}

# Runs the real compiler as a child, then has bash's `times` (run in the shim's own process,
# not a subshell, whose child times would be zero) report its CPU: the second line is the
# children's user and system time. One file per shim PID, so parallel compiles never
# interleave; a reused PID appends another three-line record.
SHIM = """#!/bin/bash
out=""; prev=""
for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done
"{real}" "$@"; rc=$?
{{ times; echo "$out"; }} >> "{log}/$$"
exit $rc
"""


def seconds(t):
    """bash `times` field such as 1m2.345s."""
    m, s = t.rstrip("s").split("m")
    return int(m) * 60 + float(s)


def compiles(log):
    """(CPU seconds, output file) of each compile the shims recorded; None for the compiler
    runs without -o (the cache key's --version)."""
    for name in os.listdir(log):
        with open(os.path.join(log, name)) as f:
            lines = f.read().split("\n")
        for i in range(0, len(lines) - 2, 3):
            user, system = lines[i + 1].split()
            out = lines[i + 2].strip()
            yield (seconds(user) + seconds(system), out) if out else None


# Subsystems for the summary, first match wins: what the compile CPU buys. The first four
# are what no configuration of this product can drop (the README argues from them).
SUBSYSTEMS = [
    ("kernel core: kernel mm lib block ipc security crypto init, the VFS",
     re.compile(r"^(kernel|mm|lib|block|ipc|security|crypto|init|certs)/|^fs/[^/]+$|^fs/(proc|kernfs|sysfs|iomap|nls|ramfs|devpts|notify|quota)/")),
    ("arch", re.compile(r"^arch/")),
    ("ACPI + PNP", re.compile(r"^drivers/(acpi|pnp)/")),
    ("host tools (objtool, kconfig, ...)", re.compile(r"^(tools|scripts)/")),
    ("IPv6", re.compile(r"^net/ipv6/(?!netfilter)")),
    ("bridge, netfilter, qdiscs", re.compile(r"^net/(bridge|netfilter|sched|8021q|llc|802)/|^net/ipv[46]/netfilter/")),
    ("networking core + IPv4, unix, packet", re.compile(r"^net/")),
    ("ext4 + jbd2", re.compile(r"^fs/(ext4|jbd2)/")),
    ("other filesystems (erofs, overlayfs, vfat, ...)", re.compile(r"^fs/")),
    ("cloud disks and NICs, device-mapper", re.compile(r"^drivers/(scsi|nvme|hv|md|net/hyperv|net/ethernet)/")),
    ("other drivers (PCI, virtio, TTY, input, RTC, EFI, ...)", re.compile(r"^drivers/")),
]


def subsystem(path):
    """The SUBSYSTEMS entry a compile (its path inside the build directory) is charged to."""
    return next((name for name, rx in SUBSYSTEMS if rx.search(path)), "other")


def group(path):
    """The directory a compile is charged to: two levels, three under drivers/ arch/ net/ fs/."""
    parts = path.split("/")[:-1]
    depth = 3 if parts and parts[0] in ("drivers", "arch", "net", "fs") else 2
    return "/".join(parts[:depth]) or "."


def bench(arch, builder, shim_dir):
    cache = os.path.join(OUT, f"cache-{arch}")
    log = os.path.join(OUT, f"compiles-{arch}")
    if os.environ.get("REPORT") == "1":
        report(arch, cache, log, None, None)
        return
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(cache)
    shutil.rmtree(log, ignore_errors=True)
    os.makedirs(log)
    name = COMPILER[arch]
    real = shutil.which(name)
    if not real:
        sys.exit(f"kernel build bench: {name} not found (apt-get install "
                 f"{'gcc' if arch == 'x86_64' else 'gcc-aarch64-linux-gnu'})")
    shim = os.path.join(shim_dir, name)
    with open(shim, "w") as f:
        f.write(SHIM.format(real=real, log=log))
    os.chmod(shim, 0o755)
    env = dict(os.environ, HOSTOS_CACHE=cache, PATH=shim_dir + os.pathsep + os.environ["PATH"])
    argv = [builder, "kernel", "--arch", arch]
    if os.environ.get("JOBS"):
        argv += ["--jobs", os.environ["JOBS"]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report(arch, cache, log, wall, cpu)


def report(arch, cache, log, wall, cpu):
    kernel_cache = os.path.join(cache, "kernel")
    builds = os.listdir(kernel_cache) if os.path.isdir(kernel_cache) else []
    build_dirs = [os.path.join(kernel_cache, d) for d in builds if d.startswith(f"build-{arch}-")]
    if not build_dirs or not os.path.isdir(log):
        sys.exit(f"kernel build bench: no {arch} run to report in {OUT} (run it without REPORT=1 first)")
    prefix = build_dirs[0] + "/"
    by_dir, by_sub, n, compile_cpu = {}, {}, 0, 0.0
    for record in compiles(log):
        if record:
            c, out = record
            rel = out[len(prefix):] if out.startswith(prefix) else out
            for table, key in ((by_dir, group(rel)), (by_sub, subsystem(rel))):
                entry = table.setdefault(key, [0.0, 0])
                entry[0] += c
                entry[1] += 1
            n += 1
            compile_cpu += c
    if wall is not None:
        print(f"{arch}: cold build {int(wall // 60)} min {wall % 60:.0f} s wall, {cpu:.0f} s CPU; "
              f"{n} compiles, {compile_cpu:.0f} s CPU (the rest: unpack, objtool, make, link)")
    else:
        print(f"{arch}: {n} compiles, {compile_cpu:.0f} s CPU (the last run's records)")
    print(f"  {'CPU s':>7} {'files':>5}  subsystem")
    for g, (c, k) in sorted(by_sub.items(), key=lambda kv: -kv[1][0]):
        print(f"  {c:7.1f} {k:5d}  {g}")
    print(f"  {'CPU s':>7} {'files':>5}  directory")
    for g, (c, k) in sorted(by_dir.items(), key=lambda kv: -kv[1][0])[:TOP]:
        print(f"  {c:7.1f} {k:5d}  {g}")


def main():
    builder = os.path.join(REPO, "target", "release", "builder")
    if os.environ.get("REPORT") != "1":
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "builder"], cwd=REPO, check=True)
    os.makedirs(OUT, exist_ok=True)
    print(f"# {' '.join(sys.argv)} (ARCHES={' '.join(ARCHES)}, {os.cpu_count()} CPUs)")
    for arch in ARCHES:
        # One shim directory per arch: the aarch64 build's host tools also run `gcc`, and must
        # not be charged to the x86_64 records.
        with tempfile.TemporaryDirectory() as shim_dir:
            bench(arch, builder, shim_dir)


if __name__ == "__main__":
    main()
