//! `QemuConfig` for tests: `hostos-qemu`'s configuration with the harness's defaults applied
//! (console log in `target/qemu-tests-logs/`, `QEMU_TESTS_ECHO`, `QEMU_TESTS_KVM`), so every
//! test boots the command line `builder run` boots.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use hostos_qemu::{CommandLine, DiskBus, DiskFormat, Firmware, Serial, Vm};

use crate::{Arch, HarnessError, env_flag, host_arch, logs_dir};

/// A guest to boot; `start()` turns it into a running [`Vm`].
#[derive(Clone, Debug)]
pub struct QemuConfig {
    inner: hostos_qemu::QemuConfig,
}

impl QemuConfig {
    pub fn new(arch: Arch) -> QemuConfig {
        // Nested KVM fails on the development machine, so TCG unless asked.
        let kvm = env_flag("QEMU_TESTS_KVM") && arch == host_arch();
        QemuConfig {
            inner: hostos_qemu::QemuConfig::new(arch)
                .log_dir(logs_dir())
                .echo(env_flag("QEMU_TESTS_ECHO"))
                .kvm(kvm),
        }
    }

    fn map(self, f: impl FnOnce(hostos_qemu::QemuConfig) -> hostos_qemu::QemuConfig) -> Self {
        QemuConfig {
            inner: f(self.inner),
        }
    }

    pub fn kernel(self, path: impl Into<PathBuf>) -> Self {
        self.map(|c| c.kernel(path))
    }

    pub fn initrd(self, path: impl Into<PathBuf>) -> Self {
        self.map(|c| c.initrd(path))
    }

    /// The kernel command line (only used with `kernel`).
    pub fn append(self, cmdline: impl Into<String>) -> Self {
        self.map(|c| c.append(cmdline))
    }

    /// Attaches a writable virtio-blk disk; disks appear in the order they are added.
    pub fn disk(self, path: impl Into<PathBuf>, format: DiskFormat) -> Self {
        self.map(|c| c.disk(path, format))
    }

    /// Attaches a virtio-blk disk whose writes go to a throwaway overlay, so tests running in
    /// parallel can boot the same built image.
    pub fn disk_snapshot(self, path: impl Into<PathBuf>, format: DiskFormat) -> Self {
        self.map(|c| c.disk_snapshot(path, format))
    }

    /// The controller every disk hangs off (virtio-blk unless set).
    pub fn disk_bus(self, bus: DiskBus) -> Self {
        self.map(|c| c.disk_bus(bus))
    }

    pub fn firmware(self, firmware: Firmware) -> Self {
        self.map(|c| c.firmware(firmware))
    }

    /// Guest RAM; 512 MiB unless set.
    pub fn memory_mib(self, mib: u32) -> Self {
        self.map(|c| c.memory_mib(mib))
    }

    /// Virtual CPUs; 1 unless set, because the test machine has two cores shared by everything.
    pub fn cpus(self, cpus: u32) -> Self {
        self.map(|c| c.cpus(cpus))
    }

    /// A virtio-net NIC on QEMU's user-mode network (10.0.2.0/24, DHCP, DNS at 10.0.2.3).
    pub fn user_network(self) -> Self {
        self.map(|c| c.user_network())
    }

    /// Forwards the guest's connections to `guest_ip:guest_port` on the user network to `host`
    /// (one `busybox nc` per connection), so each VM can have its own server behind one fixed
    /// address, e.g. an [`ImageServer`](crate::image_server::ImageServer) at 10.0.2.100:443.
    /// Implies [`user_network`](Self::user_network).
    pub fn guest_forward(self, guest_ip: Ipv4Addr, guest_port: u16, host: SocketAddr) -> Self {
        self.map(|c| c.guest_forward(guest_ip, guest_port, host))
    }

    /// Where the serial console goes (tests read it: [`Serial::Stdio`] unless set).
    pub fn serial(self, serial: Serial) -> Self {
        self.map(|c| c.serial(serial))
    }

    /// Arguments appended verbatim after the shared ones.
    pub fn extra_args<I, S>(self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.map(|c| c.extra_args(args))
    }

    /// Names the run: the console log is `target/qemu-tests-logs/<name>-<arch>.log`. Defaults to
    /// the test's name (libtest names each test's thread after it).
    pub fn name(self, name: impl Into<String>) -> Self {
        self.map(|c| c.name(name))
    }

    /// Runs this QEMU binary instead of `qemu-system-<arch>` from `PATH`.
    pub fn qemu_binary(self, path: impl Into<PathBuf>) -> Self {
        self.map(|c| c.qemu_binary(path))
    }

    /// The shared configuration, for what this wrapper does not forward.
    pub fn into_inner(self) -> hostos_qemu::QemuConfig {
        self.inner
    }

    /// The command line `start` would run, with per-VM files placed in `run_dir`.
    pub fn command_line(
        &self,
        run_dir: &std::path::Path,
        qmp_socket: &std::path::Path,
    ) -> Result<CommandLine, HarnessError> {
        self.inner.command_line(run_dir, qmp_socket)
    }

    /// Boots the guest. The returned [`Vm`] owns the QEMU process and kills it when dropped.
    pub fn start(self) -> Result<Vm, HarnessError> {
        self.inner.start()
    }
}
