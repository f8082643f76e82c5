//! A small safe wrapper around Linux inotify (directories only), and an eventfd used to
//! wake the watcher thread. Only what the watcher needs: add/remove a watch, read the
//! watch descriptors that fired, wait on several descriptors with a timeout.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// Events that can change what a directory (or a file in it) presents.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// An inotify instance.
#[derive(Debug)]
pub struct Inotify {
    fd: OwnedFd,
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct Fired {
    /// Watch descriptors that reported a change.
    pub changed: HashSet<i32>,
    /// Watch descriptors the kernel dropped (directory deleted or filesystem unmounted).
    pub dropped: HashSet<i32>,
    /// The kernel's queue overflowed: events were lost, so everything must be re-checked.
    pub overflow: bool,
}

impl Inotify {
    /// A non-blocking, close-on-exec instance.
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 has no pointer arguments.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify { fd })
    }

    /// Watches directory `dir`; returns its watch descriptor (the same one for the same
    /// directory inode).
    pub fn add(&self, dir: &Path) -> io::Result<i32> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a valid NUL-terminated path; the fd is ours.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Stops watching `wd` (errors ignored: the kernel may already have dropped it).
    pub fn remove(&self, wd: i32) {
        // SAFETY: plain integer arguments; an unknown wd only returns EINVAL.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// Reads every queued event without blocking.
    pub fn read(&self, fired: &mut Fired) -> io::Result<()> {
        crate::store::journal::read_events(self.fd.as_raw_fd(), |ev, _name| {
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                fired.overflow = true;
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                fired.dropped.insert(ev.wd);
            } else if ev.wd >= 0 {
                fired.changed.insert(ev.wd);
            }
        })
    }
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An eventfd: other threads [`Wake::wake`] the watcher out of its wait.
#[derive(Debug)]
pub struct Wake {
    fd: OwnedFd,
}

impl Wake {
    /// A non-blocking eventfd.
    pub fn new() -> io::Result<Wake> {
        // SAFETY: eventfd has no pointer arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Wake { fd })
    }

    /// Wakes the waiting thread (never blocks).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64; a full counter only returns EAGAIN,
        // which still leaves the fd readable.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&raw const one).cast::<libc::c_void>(),
                8,
            )
        };
    }

    /// Clears pending wake-ups.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN when nothing is pending.
        unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut v).cast::<libc::c_void>(), 8) };
    }
}

impl AsRawFd for Wake {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: forever). Returns
/// which were readable.
pub fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| {
        i32::try_from(t.as_millis().max(u128::from(!t.is_zero()))).unwrap_or(i32::MAX)
    });
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_changes_in_a_watched_directory() {
        let dir = std::env::temp_dir().join(format!("mailfs-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ino = Inotify::new().unwrap();
        let wd = ino.add(&dir).unwrap();
        let mut fired = Fired::default();
        ino.read(&mut fired).unwrap();
        assert!(fired.changed.is_empty(), "nothing happened yet");
        std::fs::write(dir.join("f"), b"x").unwrap();
        assert!(wait_readable(&[ino.as_raw_fd()], Some(Duration::from_secs(5))).unwrap()[0]);
        ino.read(&mut fired).unwrap();
        assert!(fired.changed.contains(&wd));
        std::fs::remove_dir_all(&dir).unwrap();
        wait_readable(&[ino.as_raw_fd()], Some(Duration::from_secs(5))).unwrap();
        let mut fired = Fired::default();
        ino.read(&mut fired).unwrap();
        assert!(fired.dropped.contains(&wd), "{fired:?}");
        assert!(
            ino.add(&dir).is_err(),
            "a missing directory cannot be watched"
        );
    }

    #[test]
    fn wake_interrupts_a_wait() {
        let w = Wake::new().unwrap();
        assert!(!wait_readable(&[w.as_raw_fd()], Some(Duration::ZERO)).unwrap()[0]);
        w.wake();
        assert!(wait_readable(&[w.as_raw_fd()], None).unwrap()[0]);
        w.drain();
        assert!(!wait_readable(&[w.as_raw_fd()], Some(Duration::ZERO)).unwrap()[0]);
    }
}
