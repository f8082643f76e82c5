//! The process: its signal mask.

use std::io;

/// A set of signals that [`block_signals`] blocked, for [`wait_signal`].
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl std::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalSet")
    }
}

/// Blocks `signals` in the calling thread (`pthread_sigmask(SIG_BLOCK)`); threads it starts
/// afterwards inherit the mask. Numbers that are not signals are ignored.
pub fn block_signals(signals: &[libc::c_int]) -> SignalSet {
    // SAFETY: all-zero is a valid sigset_t to pass to sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; sigaddset only fails (EINVAL) for a number that
    // is not a signal; pthread_sigmask reads `set` and only changes this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    SignalSet(set)
}

/// Waits for one of the signals of `set` (`sigwait`, which takes it off the pending set);
/// returns its number.
pub fn wait_signal(set: &SignalSet) -> io::Result<libc::c_int> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set.0` is an initialised sigset_t and `sig` a valid out-pointer.
    let rc = unsafe { libc::sigwait(&set.0, &mut sig) };
    if rc == 0 {
        Ok(sig)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_is_waited_for() {
        // SIGUSR2 in this test thread only (the mask is per thread); raise() sends it to
        // this thread, where it stays pending until sigwait takes it.
        let set = block_signals(&[libc::SIGUSR2]);
        // SAFETY: raise takes a signal number only.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        assert_eq!(wait_signal(&set).unwrap(), libc::SIGUSR2);
    }
}
