//! The one place where store errors become errno values, and where they are logged.
//!
//! "Not found" is ordinary (a message expunged under us) and gives `ENOENT` without a log
//! line. Everything else -- a corrupt uidlist, a file where a directory should be, an
//! unreadable message -- gives `EIO` and one warning naming the path. The same message is
//! logged at most once a minute, so a tool retrying in a loop cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fuser::Errno;
use log::warn;
use lru::LruCache;
use parking_lot::Mutex;

use crate::error::{Error, Refusal};

const REPEAT_AFTER: Duration = Duration::from_secs(60);

/// Maps errors to errno values and logs them.
#[derive(Debug)]
pub struct ErrorReporter {
    recent: Mutex<LruCache<String, Instant>>,
    eio: AtomicU64,
}

impl Default for ErrorReporter {
    fn default() -> Self {
        ErrorReporter {
            recent: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(256).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            eio: AtomicU64::new(0),
        }
    }
}

impl ErrorReporter {
    /// The errno for `err`, logging it (once a minute per distinct message) unless it is an
    /// ordinary "not found". `op` names the FUSE operation for the log line.
    pub fn errno(&self, op: &str, err: &Error) -> Errno {
        if err.is_not_found() {
            return Errno::ENOENT;
        }
        if let Error::Refused { why, .. } = err {
            return refusal_errno(*why);
        }
        if let Error::Server { why, .. } = err {
            // The server's own words, once: what an admin needs to act on.
            self.log_once(&format!("{op}: {err}"));
            return why.map_or(Errno::ENOENT, refusal_errno);
        }
        self.log_once(&format!("{op}: {err}; returning EIO"));
        self.eio.fetch_add(1, Ordering::Relaxed);
        Errno::EIO
    }

    /// Logs `line` unless the same line was logged within [`REPEAT_AFTER`].
    fn log_once(&self, line: &str) {
        let now = Instant::now();
        let fresh = {
            let mut recent = self.recent.lock();
            match recent.get(line) {
                Some(at) if now.duration_since(*at) < REPEAT_AFTER => false,
                _ => {
                    recent.put(line.to_string(), now);
                    true
                }
            }
        };
        if fresh {
            warn!("{line}");
        }
    }

    /// The errno for a read by inode (a file the kernel opened by itself) that failed
    /// with `err`: a message gone since the kernel opened it is ESTALE (its open file
    /// cannot be served any more; documented in docs/semantics.md), logged at debug only.
    pub fn read_by_inode_errno(&self, ino: u64, err: &Error) -> Errno {
        if err.is_not_found() {
            log::debug!("read of inode {ino}: {err}; returning ESTALE");
            return Errno::ESTALE;
        }
        self.errno("read", err)
    }

    /// How many requests got EIO.
    pub fn eio_count(&self) -> u64 {
        self.eio.load(Ordering::Relaxed)
    }
}

/// The errno of a refusal. Refusals are answers, not faults: none is logged here.
fn refusal_errno(why: Refusal) -> Errno {
    match why {
        Refusal::ReadOnly => Errno::EROFS,
        Refusal::NotEmpty => Errno::ENOTEMPTY,
        Refusal::IsDirectory => Errno::EISDIR,
        Refusal::NotDirectory => Errno::ENOTDIR,
        Refusal::Exists => Errno::EEXIST,
        Refusal::Busy => Errno::EBUSY,
        Refusal::Invalid => Errno::EINVAL,
        Refusal::Denied => Errno::EACCES,
        Refusal::Quota => Errno::EDQUOT,
        Refusal::CrossesStores => Errno::EXDEV,
        Refusal::Unsupported => Errno::EOPNOTSUPP,
        Refusal::NotPermitted => Errno::EPERM,
        Refusal::Unavailable => Errno::EIO,
        Refusal::TooLarge => Errno::EFBIG,
        Refusal::NoSpace => Errno::ENOSPC,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_not_found_to_enoent_and_the_rest_to_eio() {
        let r = ErrorReporter::default();
        assert_eq!(r.errno("lookup", &Error::not_found("x")), Errno::ENOENT);
        let io = Error::io("/x", std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(r.errno("open", &io), Errno::ENOENT);
        let bad = Error::layout("/x/cur", "expected a directory");
        assert_eq!(r.errno("readdir", &bad), Errno::EIO);
        let denied = Error::io("/x", std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(r.errno("read", &denied), Errno::EIO);
        assert_eq!(
            r.errno("unlink", &Error::refused(Refusal::ReadOnly, "x")),
            Errno::EROFS
        );
        assert_eq!(
            r.errno("rmdir", &Error::refused(Refusal::NotEmpty, "x")),
            Errno::ENOTEMPTY
        );
        assert_eq!(r.eio_count(), 2, "refusals are not faults");
        assert_eq!(
            r.read_by_inode_errno(9, &Error::not_found("x")),
            Errno::ESTALE
        );
    }
}
