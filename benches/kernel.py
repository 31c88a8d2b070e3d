#!/usr/bin/env python3
"""Kernel benchmark: our kernel against Debian's cloud kernel, side by side in one run.

For each architecture it builds images/hello.toml's direct-boot artifacts (our kernel, our
initramfs, our command line), downloads Debian's cloud kernel package with `apt-get download`
(cached under ~/.cache/hostos/bench-debian), and boots both kernels RUNS times, alternating,
with the same QEMU command line, initramfs and kernel command line (`-kernel`, TCG unless
KVM=1).

Kernel start -> init is timed on the host clock: from the kernel's first console line
("Linux version", printed through an early console, `earlycon=` added for both kernels) to
init's banner. The kernel's own clock is no good for this under TCG: on x86_64 its zero moves
by up to 0.3 s from one boot to the next (early timestamps stay at 0 until the TSC or the
timer interrupt starts), so init's "started N s after kernel start" is shown only beside it.
It reports the medians, their ratio (target <= 0.4), and both kernels' sizes.

    benches/kernel.py                        # both arches, 5 runs each
    RUNS=3 ARCHES=aarch64 benches/kernel.py
    EXTRA_CMDLINE=quiet benches/kernel.py    # both kernels told to be quiet
    EXTRA_CMDLINE="initcall_debug loglevel=7" LOGS=target/bench-kernel/logs benches/kernel.py

EXTRA_CMDLINE is appended for both kernels; LOGS keeps each boot's console up to the banner
(for finding where the time goes: `initcall_debug` prints each initcall's duration).
DEBIAN_VERSION picks the package (default: what linux-image-cloud-<arch> depends on now).
"""
import glob
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from boot import boot_once, qemu_args  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "5"))
ARCHES = os.environ.get("ARCHES", "x86_64 aarch64").split()
OUT = os.path.join(REPO, "target", "bench-kernel")
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hostos", "bench-debian")
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# The early console each kernel prints its first line through: the PC's COM1, QEMU virt's PL011.
EARLYCON = {"x86_64": "earlycon=uart8250,io,0x3f8,115200", "aarch64": "earlycon=pl011,0x9000000"}
FIRST_LINE = b"Linux version"


def debian_package(arch):
    """The versioned cloud kernel package, e.g. linux-image-6.1.0-57-cloud-amd64."""
    deb = DEB_ARCH[arch]
    if os.environ.get("DEBIAN_VERSION"):
        return f"linux-image-{os.environ['DEBIAN_VERSION']}-cloud-{deb}"
    meta = f"linux-image-cloud-{deb}" + (":arm64" if deb == "arm64" else "")
    out = subprocess.run(["apt-cache", "depends", meta], check=True, capture_output=True, text=True).stdout
    m = re.search(r"Depends: (linux-image-\S+-cloud-" + deb + ")", out)
    if not m:
        sys.exit(f"kernel bench: `apt-cache depends {meta}` names no kernel package (apt-get update?):\n{out}")
    return m.group(1)


def debian_kernel(arch):
    """Downloads (once) and unpacks Debian's cloud kernel; returns (package, vmlinuz, config)."""
    pkg = debian_package(arch)
    d = os.path.join(CACHE, pkg)
    found = glob.glob(os.path.join(d, "root", "boot", "vmlinuz-*"))
    if not found:
        os.makedirs(d, exist_ok=True)
        name = pkg + (":arm64" if arch == "aarch64" else "")
        subprocess.run(["apt-get", "download", "-q", name], cwd=d, check=True)
        debs = glob.glob(os.path.join(d, f"{pkg}_*.deb"))
        if len(debs) != 1:
            sys.exit(f"kernel bench: expected one {pkg}_*.deb in {d}, found {debs}")
        subprocess.run(["dpkg-deb", "-x", debs[0], os.path.join(d, "root")], check=True)
        found = glob.glob(os.path.join(d, "root", "boot", "vmlinuz-*"))
    config = glob.glob(os.path.join(d, "root", "boot", "config-*"))
    return pkg, found[0], config[0] if config else None


def with_kernel(argv, kernel):
    argv = list(argv)
    argv[argv.index("-kernel") + 1] = kernel
    return argv


def main():
    builder = os.path.join(REPO, "target", "release", "builder")
    subprocess.run(["cargo", "build", "--release", "-q", "--locked", "-p", "builder"], cwd=REPO, check=True)
    subprocess.run([os.path.join(REPO, "scripts", "demo-aci.sh")], cwd=REPO, check=True)
    extra = os.environ.get("EXTRA_CMDLINE", "").strip()
    logs = os.environ.get("LOGS")
    if logs:
        os.makedirs(logs, exist_ok=True)
    accel = "kvm" if os.environ.get("KVM") == "1" else "tcg"
    print(f"# {' '.join(sys.argv)} (RUNS={RUNS}, accel={accel}, EXTRA_CMDLINE={extra!r})")
    for arch in ARCHES:
        subprocess.run([builder, "build", "images/hello.toml", "--arch", arch, "--format", "raw,kernel", "-o", OUT],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        d = os.path.join(OUT, arch)
        img = os.path.join(OUT, f"hello-{arch}.img")
        cmdline = " ".join([open(os.path.join(d, "cmdline")).read().strip(), EARLYCON[arch], extra]).strip()
        pkg, deb_vmlinuz, deb_config = debian_kernel(arch)
        if deb_config:
            # For comparing hardening: kernel-hardening-checker -c on this and on ours.
            print(f"{arch}: {pkg}'s config: {deb_config}")
        ours = qemu_args(arch, d, cmdline, img)
        kernels = [("ours", ours), (pkg, with_kernel(ours, deb_vmlinuz))]
        results = {name: ([], [], []) for name, _ in kernels}
        for run in range(RUNS):
            for name, argv in kernels:
                log = os.path.join(logs, f"{arch}-{name}-{run}.log") if logs else None
                host, to_init, first_line = boot_once(argv, log, FIRST_LINE)
                if first_line is None:
                    sys.exit(f"kernel bench: {arch} {name} printed no {FIRST_LINE.decode()!r} line "
                             f"through {EARLYCON[arch]}")
                results[name][0].append(host - first_line)
                results[name][1].append(to_init)
                results[name][2].append(host)
        print(f"{arch}: kernel sizes: ours {os.path.getsize(os.path.join(d, 'vmlinuz')) // 1024} KiB, "
              f"{pkg} {os.path.getsize(deb_vmlinuz) // 1024} KiB")
        for name, (kernel, to_init, host) in results.items():
            print(f"{arch} {name}: kernel start -> init median {statistics.median(kernel):.3f} s "
                  f"(min {min(kernel):.3f}, max {max(kernel):.3f}); "
                  f"init's own clock median {statistics.median(to_init):.3f} s; "
                  f"QEMU start -> init banner median {statistics.median(host):.2f} s")
        ratio = statistics.median(results["ours"][0]) / statistics.median(results[pkg][0])
        print(f"{arch}: ratio ours / Debian (kernel start -> init, medians) {ratio:.2f} (target <= 0.40)")


if __name__ == "__main__":
    main()
