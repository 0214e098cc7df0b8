//! Errors that are the proxy's own limits, not a backend's fault: out of
//! file descriptors (the process's or the system's), socket buffers,
//! memory, or local ports. A connect or probe that fails this way says
//! nothing about the backend, so it must not eject it: during an fd flood
//! every backend would fail the same way, and every pinned client would
//! be re-pinned or refused for nothing.

use std::error::Error;
use std::io;

/// Whether `error` is one of the proxy's own limits.
pub fn is_local_limit(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Whether an error chain (a client library's error wrapping the socket's)
/// ends in one of the proxy's own limits.
pub fn chain_has_local_limit(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        next = match e.downcast_ref::<io::Error>() {
            Some(io) if is_local_limit(io) => return true,
            // An io::Error that wraps another error hides it from `source()`.
            Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)).or_else(|| e.source()),
            None => e.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxys_own_limits_are_told_from_a_backend_refusing() {
        assert!(is_local_limit(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_local_limit(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_local_limit(&io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        assert!(!is_local_limit(&io::Error::new(io::ErrorKind::TimedOut, "slow")));
        let wrapped = io::Error::other(io::Error::from_raw_os_error(libc::EMFILE));
        assert!(chain_has_local_limit(&wrapped));
        assert!(!chain_has_local_limit(&io::Error::from_raw_os_error(libc::EHOSTUNREACH)));
    }
}
