#!/usr/bin/env python3
"""Fetch-at-boot benchmark. Makes a signed 10 MiB ACI (`bench.test/app`: the demo busybox
rootfs plus 10 MiB of random bytes, signed with images/aci/demo.key), serves it over HTTPS from
this machine with a CA made here (openssl), and boots benches/fetch/fetch.toml's image RUNS
times per architecture under QEMU (TCG unless KVM=1), directly (-kernel) on a fresh copy of the
disk each time, with QEMU's user network and `bench.test` (10.0.2.100:443) forwarded to the
server. From init's own console lines it reports:

- init start -> DHCP lease (`init: net eth0: lease ... (N ms after init start)`);
- lease -> the fetched app's exec (`started pid ... N ms after init start` minus the above);
- the guest's fetch throughput (`fetched and verified (B bytes in T ms, ...)`) beside the same
  fetch by `builder aci fetch` on this machine (`--store`, so it also unpacks), and the ratio;
- init's peak resident memory by the end of the fetch (VmHWM, on the same line).

    benches/fetch.py                 # both arches, 3 runs each
    RUNS=5 ARCHES=x86_64 benches/fetch.py
"""
import http.server
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "3"))
ARCHES = os.environ.get("ARCHES", "x86_64 aarch64").split()
OUT = os.path.join(REPO, "target", "bench-fetch")
NAME = "bench.test/app"
FILLER = 10 << 20
LEASE = re.compile(rb"init: net \S+: lease \S+, .* \((\d+) ms after init start\)")
STARTED = re.compile(rb"init: pod app/main: started pid \d+ (\d+) ms after init start")
FETCHED = re.compile(rb"init: pod app/main: image \S+ fetched and verified \((\d+) bytes in (\d+) ms, "
                     rb"init peak resident memory (\d+) KiB\)")
LABEL = {"x86_64": "amd64", "aarch64": "aarch64"}

sys.path.insert(0, os.path.join(REPO, "benches"))
from boot import console_until, qemu_args  # noqa: E402


def run(argv, **kw):
    return subprocess.run(argv, cwd=REPO, check=True, **kw)


def make_ca(dir):
    """A CA and a certificate for bench.test signed by it; returns (ca.pem, cert.pem, key.pem)."""
    ca_key, ca, key, csr, cert = (os.path.join(dir, n) for n in
                                  ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "3650", "-subj", "/CN=hostos bench CA"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=bench.test"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ext = os.path.join(dir, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:bench.test\nbasicConstraints=CA:FALSE\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "3650", "-extfile", ext], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ca, cert, key


def serve(root, cert, key):
    """An HTTPS server on 127.0.0.1 for appc discovery and files under `root`; returns its port."""
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=root, **kw)

        def do_GET(self):
            if "ac-discovery=1" in self.path:
                body = (b'<meta name="ac-discovery" content="bench.test/ '
                        b'https://bench.test/aci/{name}-{version}-{os}-{arch}.{ext}">')
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd.server_address[1]


def boot_once(argv):
    s, buf = console_until(argv, STARTED.search, 600, "the app's start")
    lease, fetched = LEASE.search(buf), FETCHED.search(buf)
    if not lease or not fetched:
        raise RuntimeError(f"no lease or fetch line:\n{buf[-3000:].decode(errors='replace')}")
    return (int(lease.group(1)), int(s.group(1)), int(fetched.group(1)),
            int(fetched.group(2)), int(fetched.group(3)))


def main():
    run(["cargo", "build", "--release", "-q", "-p", "builder"])
    run([os.path.join(REPO, "scripts", "demo-aci.sh")], stdout=subprocess.DEVNULL)
    builder = os.path.join(REPO, "target", "release", "builder")
    key = os.path.join(REPO, "images", "aci", "demo.key")
    os.makedirs(OUT, exist_ok=True)
    work = tempfile.mkdtemp(dir=OUT)
    try:
        ca, cert, server_key = make_ca(work)
        shutil.copyfile(ca, os.path.join(OUT, "ca.pem"))
        extra = os.path.join(work, "extra", "var")
        os.makedirs(extra)
        with open(os.path.join(extra, "filler"), "wb") as f:
            f.write(os.urandom(FILLER))
        acis = os.path.join(work, "acis")
        env = dict(os.environ, BUSYBOX_ACI_NAME=NAME, BUSYBOX_ACI_EXTRA=os.path.dirname(extra),
                   HOSTOS_BUILDER=builder)
        run([os.path.join(REPO, "scripts", "busybox-aci.sh"), acis, key], env=env, stdout=subprocess.DEVNULL)
        served = os.path.join(work, "www", "aci", "bench.test")
        os.makedirs(served)
        for arch in ARCHES:
            label = LABEL[arch]
            src = os.path.join(acis, f"busybox-{'amd64' if arch == 'x86_64' else 'arm64'}.aci")
            dst = os.path.join(served, f"app-1.0-linux-{label}.aci")
            shutil.copyfile(src, dst)
            shutil.copyfile(src + ".minisig", dst + ".minisig")
        port = serve(os.path.join(work, "www"), cert, server_key)
        print(f"# {' '.join(sys.argv)} (RUNS={RUNS}, accel={'kvm' if os.environ.get('KVM') == '1' else 'tcg'}, "
              f"image {os.path.getsize(dst) >> 10} KiB)")
        trust = os.path.join(work, "trust")
        demo_pub = os.path.join(REPO, "images", "aci", "demo.pub")
        key_id = open(demo_pub).readline().split()[-1]
        busybox = shutil.which("busybox") or sys.exit("busybox not found (apt-get install busybox-static)")
        for arch in ARCHES:
            # The host's fetch of the same image, same server, into a fresh store.
            host = []
            for _ in range(RUNS):
                store = tempfile.mkdtemp(dir=work)
                shutil.rmtree(trust, ignore_errors=True)
                os.makedirs(os.path.join(trust, "prefix.d", "bench.test"))
                shutil.copyfile(demo_pub, os.path.join(trust, "prefix.d", "bench.test", f"{key_id}.pub"))
                t = time.monotonic()
                run([builder, "-q", "aci", "fetch", f"{NAME}:1.0,os=linux,arch={LABEL[arch]}", "--trust", trust,
                     "--store", store, "--ca", ca, "--connect-to", f"bench.test:443:127.0.0.1:{port}"])
                host.append(time.monotonic() - t)
                shutil.rmtree(store)
            run([builder, "build", "benches/fetch/fetch.toml", "--arch", arch, "--format", "raw,kernel",
                 "-o", OUT], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            d = os.path.join(OUT, arch)
            image = os.path.join(OUT, f"bench-fetch-{arch}.img")
            cmdline = open(os.path.join(d, "cmdline")).read().strip()
            results = []
            for _ in range(RUNS):
                disk = os.path.join(work, "disk.img")
                shutil.copyfile(image, disk)
                run(["qemu-img", "resize", "-q", "-f", "raw", disk, "256M"])
                argv = [a.replace(",snapshot=on", "") for a in qemu_args(arch, d, cmdline, disk)]
                argv += ["-netdev", f"user,id=net0,guestfwd=tcp:10.0.2.100:443-cmd:{busybox} nc 127.0.0.1 {port}",
                         "-device", "virtio-net-pci,netdev=net0,romfile=" if arch == "x86_64"
                         else "virtio-net-pci,netdev=net0"]
                results.append(boot_once(argv))
            size = results[0][2]
            guest = [r[2] / (r[3] / 1000) for r in results]
            host_rate = [size / h for h in host]
            med = statistics.median
            print(f"{arch}: init start -> lease median {med(r[0] for r in results)} ms "
                  f"(min {min(r[0] for r in results)}); lease -> fetched app's exec median "
                  f"{med(r[1] - r[0] for r in results)} ms; guest fetch {med(guest) / 2**20:.2f} MiB/s "
                  f"vs host `builder aci fetch --store` {med(host_rate) / 2**20:.2f} MiB/s "
                  f"(ratio {med(guest) / med(host_rate):.2f}); init peak RSS median {med(r[4] for r in results)} KiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
