#!/usr/bin/env python3
"""Boot benchmark: builds images/hello.toml per architecture with the builder (then rebuilds it
with a warm cache and times that), reports the sizes of the UKI, the raw image as allocated on
disk and the .img.zst, then boots each image RUNS times under QEMU (TCG unless KVM=1) in every
way it boots: directly (-kernel, with the disk attached) and through each firmware with
`builder run IMAGE --firmware F` (what users run: OVMF on x86_64, AAVMF and U-Boot on aarch64).
It reports the time from start to init's banner and the kernel-start-to-init time init prints.

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


def qemu_args(arch, d, cmdline, disk):
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
        "-drive", f"file={disk},format=raw,if=virtio,snapshot=on",
    ]


def console_until(argv, until, timeout, what, on_output=None):
    """Runs argv (QEMU, or builder run) and reads its console until until(console) returns
    something true, which it returns with the console so far. on_output(console, seconds)
    sees the console after each read. Fails with the console's tail when QEMU exits first or
    `what` does not happen within timeout seconds. QEMU is killed either way."""
    start = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    buf = b""
    try:
        while True:
            chunk = p.stdout.read1(4096)
            if not chunk:
                raise RuntimeError(f"QEMU exited before {what}:\n{buf[-3000:].decode(errors='replace')}")
            buf += chunk
            if on_output:
                on_output(buf, time.monotonic() - start)
            done = until(buf)
            if done:
                return done, buf
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"no {what} within {timeout} s:\n{buf[-3000:].decode(errors='replace')}")
    finally:
        # builder run's QEMU runs in the same session: end them together.
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
        p.wait()


def boot_once(argv, log=None, mark=None):
    """Boots argv until init's banner; returns (host seconds to the banner, init's own
    kernel-start-to-init seconds, host seconds to the first console output containing `mark`,
    or None without one). With `log`, the console up to the banner is written there."""
    start = time.monotonic()
    at_mark = []

    def watch(buf, seconds):
        if mark and not at_mark and mark in buf:
            at_mark.append(seconds)

    m, buf = console_until(argv, BANNER.search, 300, "init's banner", watch)
    host = time.monotonic() - start
    if log:
        with open(log, "wb") as f:
            f.write(buf)
    return host, float(m.group(2)), at_mark[0] if at_mark else None


def main():
    builder = [os.path.join(REPO, "target", "release", "builder")]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "builder"], cwd=REPO, check=True)
    # The signed busybox images images/hello.toml's pod runs.
    subprocess.run([os.path.join(REPO, "scripts", "demo-aci.sh")], cwd=REPO, check=True)
    print(f"# {' '.join(sys.argv)} (RUNS={RUNS}, accel={'kvm' if os.environ.get('KVM') == '1' else 'tcg'})")
    for arch in ARCHES:
        cmd = builder + ["build", "images/hello.toml", "--arch", arch, "--format", "raw,zst,kernel", "-o", OUT]
        first = subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        again = subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        build_s = time.monotonic() - t0
        uki = re.search(rb"UKI (\d+) KiB", again.stderr or first.stderr)
        d = os.path.join(OUT, arch)
        img = os.path.join(OUT, f"hello-{arch}.img")
        cmdline = open(os.path.join(d, "cmdline")).read().strip()
        allocated = os.stat(img).st_blocks * 512 / 2**20
        zst = os.path.getsize(img + ".zst") / 2**20
        init_bin = os.path.join(REPO, "target", "guest", "rustup" if arch == "x86_64" else "debian-rustc",
                                f"{arch}-unknown-linux-gnu", "guest", "init")
        print(f"{arch}: rebuild (warm kernel cache) {build_s:.2f} s; UKI {int(uki.group(1)) if uki else '?'} KiB; "
              f"raw image {os.path.getsize(img) / 2**20:.0f} MiB, {allocated:.1f} MiB allocated; "
              f".img.zst {zst:.1f} MiB; init {os.path.getsize(init_bin) / 1024:.0f} KiB")
        modes = [("direct -kernel", qemu_args(arch, d, cmdline, img))]
        firmwares = ["ovmf"] if arch == "x86_64" else ["aavmf", "u-boot"]
        for fw in firmwares:
            modes.append((fw, builder + ["run", img, "--firmware", fw]))
            modes.append((f"{fw} --cpus 1", builder + ["run", img, "--firmware", fw, "--cpus", "1"]))
        for name, argv in modes:
            to_banner, kernel_to_init = [], []
            for _ in range(RUNS):
                a, b, _ = boot_once(argv)
                to_banner.append(a)
                kernel_to_init.append(b)
            print(f"{arch} {name}: start -> init banner: median {statistics.median(to_banner):.2f} s "
                  f"(min {min(to_banner):.2f}, max {max(to_banner):.2f}); "
                  f"kernel start -> init (init's own clock): median {statistics.median(kernel_to_init):.2f} s")


if __name__ == "__main__":
    main()
