//! The top-level error of the boot: which step failed, with the module error as its source.

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mounting the early filesystems failed")]
    Mount(#[from] crate::mount::MountError),
    #[error("attaching stdio to the console failed")]
    Console(#[from] crate::console::ConsoleError),
    #[error("loading the host declaration failed")]
    Declaration(#[from] crate::decl::DeclError),
    #[error("setting the hostname failed")]
    Hostname(#[from] crate::hostname::HostnameError),
    #[error("setting up signal handling failed")]
    Signals(#[from] crate::signals::SignalError),
    #[error("reaping children failed")]
    Reap(#[from] crate::reap::ReapError),
    #[error("watching for the power button failed")]
    PowerButton(#[from] crate::power_button::PowerButtonError),
    #[error("waiting for events (poll) failed")]
    Poll(#[source] Errno),
    #[error("shutting down failed")]
    Shutdown(#[from] crate::shutdown::ShutdownError),
    #[error(
        "refusing to run as process {pid}: hostos-init is PID1 of a host image and would remount this system; run it as the first process of a VM"
    )]
    NotPid1 { pid: i32 },
}
