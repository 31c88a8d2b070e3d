//! hostos-init: PID1 of the host image. It mounts the early filesystems, applies the host
//! declaration, reaps orphans and turns signals and the power button into an orderly
//! power-off. See `console` for the lines it prints, which tests rely on.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod clock;
pub mod console;
pub mod decl;
pub mod error;
pub mod fatal;
pub mod fetch;
pub mod hostname;
pub mod mount;
pub mod net;
pub mod pid1;
pub mod pod;
pub mod power_button;
pub mod reap;
pub mod shutdown;
pub mod signals;
pub mod storage;
pub mod supervise;
