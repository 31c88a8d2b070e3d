#!/usr/bin/env python3
"""Boot benchmark: builds images/hello.toml per architecture with the builder, reports artifact
sizes, then boots each image RUNS times under QEMU (TCG unless KVM=1) and reports the time from
QEMU start to init's banner and the kernel-start-to-init time init itself prints.

    benches/boot.py                 # both arches, 5 runs each
    RUNS=10 ARCHES=x86_64 benches/boot.py
"""
import os
import re
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "5"))
ARCHES = os.environ.get("ARCHES", "x86_64 aarch64").split()
OUT = os.path.join(REPO, "target", "bench-boot")
BANNER = re.compile(rb"init: hostos-init \S+ \((\w+)\) started ([0-9.]+) s after kernel start")


def qemu_args(arch, d, cmdline):
    if arch == "x86_64":
        base = ["qemu-system-x86_64", "-machine", "q35", "-cpu", "max"]
    else:
        base = ["qemu-system-aarch64", "-machine", "virt", "-cpu", "max,pauth-impdef=on"]
    accel = "kvm" if os.environ.get("KVM") == "1" else "tcg"
    return base + [
        "-accel", accel, "-m", "512", "-smp", "2", "-nodefaults", "-no-reboot",
        "-display", "none", "-serial", "stdio", "-device", "virtio-rng-pci",
        "-kernel", os.path.join(d, "vmlinuz"), "-initrd", os.path.join(d, "initramfs.cpio.zst"),
        "-append", cmdline,
    ]


def boot_once(arch, d, cmdline):
    start = time.monotonic()
    p = subprocess.Popen(qemu_args(arch, d, cmdline), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    buf = b""
    try:
        while True:
            chunk = p.stdout.read1(4096)
            if not chunk:
                raise RuntimeError(f"QEMU exited before the banner:\n{buf[-2000:].decode(errors='replace')}")
            buf += chunk
            m = BANNER.search(buf)
            if m:
                return time.monotonic() - start, float(m.group(2))
            if time.monotonic() - start > 300:
                raise RuntimeError("no banner within 300 s")
    finally:
        p.kill()
        p.wait()


def main():
    builder = [os.path.join(REPO, "target", "release", "builder")]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "builder"], cwd=REPO, check=True)
    print(f"# {' '.join(sys.argv)} (RUNS={RUNS}, accel={'kvm' if os.environ.get('KVM') == '1' else 'tcg'})")
    for arch in ARCHES:
        t0 = time.monotonic()
        subprocess.run(builder + ["build", "images/hello.toml", "--arch", arch, "-o", OUT], cwd=REPO,
                       check=True, stdout=subprocess.DEVNULL)
        build_s = time.monotonic() - t0
        d = os.path.join(OUT, arch)
        cmdline = open(os.path.join(d, "cmdline")).read().strip()
        size = lambda f: os.path.getsize(os.path.join(d, f)) / 1024
        init_bin = os.path.join(REPO, "target", "guest", "rustup" if arch == "x86_64" else "debian-rustc",
                                f"{arch}-unknown-linux-gnu", "guest", "init")
        print(f"{arch}: rebuild {build_s:.2f} s; kernel {size('vmlinuz'):.0f} KiB, "
              f"initramfs {size('initramfs.cpio.zst'):.0f} KiB, init {os.path.getsize(init_bin) / 1024:.0f} KiB")
        to_banner, kernel_to_init = [], []
        for _ in range(RUNS):
            a, b = boot_once(arch, d, cmdline)
            to_banner.append(a)
            kernel_to_init.append(b)
        print(f"{arch}: QEMU start -> init banner: median {statistics.median(to_banner):.2f} s "
              f"(min {min(to_banner):.2f}, max {max(to_banner):.2f}); "
              f"kernel start -> init (init's own clock): median {statistics.median(kernel_to_init):.2f} s")


if __name__ == "__main__":
    main()
