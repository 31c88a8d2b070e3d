//! Entry point of init: refuse unless PID 1, then hand over to `init::pid1`.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

fn main() {
    if let Err(e) = init::pid1::check_pid1() {
        // The one exit init may take: it is not the machine's init, so nothing depends on it.
        eprintln!("init: {}", init::fatal::chain(&e));
        std::process::exit(1);
    }
    init::pid1::run()
}
