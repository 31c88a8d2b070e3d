//! Setting the kernel hostname from the declaration.

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum HostnameError {
    #[error("cannot set the hostname to {hostname:?}")]
    SetHostname {
        hostname: String,
        #[source]
        source: Errno,
    },
}

pub fn set_hostname(hostname: &str) -> Result<(), HostnameError> {
    nix::unistd::sethostname(hostname).map_err(|source| HostnameError::SetHostname {
        hostname: hostname.to_owned(),
        source,
    })
}
