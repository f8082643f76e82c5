//! Linux inotify, and what a thread waiting on it needs: an eventfd other threads wake it
//! with, and poll(2) over several descriptors with a timeout.
//!
//! One wrapper for both users: the watcher (`coherence`: which watches fired) and the
//! Maildir name journals (`store::journal`: which names came and went). Each passes its
//! own event mask and interprets the events itself.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use super::cstring;

/// A non-blocking inotify instance.
#[derive(Debug)]
pub struct Inotify {
    fd: OwnedFd,
}

/// One event read from an [`Inotify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The watch descriptor (-1 for `IN_Q_OVERFLOW`).
    pub wd: i32,
    /// `IN_*` bits.
    pub mask: u32,
    /// The name in the watched directory, without its NUL padding; empty for events on the
    /// watched directory itself.
    pub name: &'a [u8],
}

impl Inotify {
    /// A non-blocking, close-on-exec instance.
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by inotify_init1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify { fd })
    }

    /// Watches `path` for the events in `mask` (`IN_*`); returns its watch descriptor (the
    /// same one for the same inode: a second call on it replaces the mask).
    pub fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = cstring(path.as_os_str())?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call; the fd is ours.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Stops watching `wd` (errors ignored: the kernel may already have dropped it).
    pub fn remove_watch(&self, wd: i32) {
        // SAFETY: plain integer arguments; an unknown wd only returns EINVAL.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// Reads every queued event without blocking, calling `each` for each in order.
    /// Returns once the queue is empty.
    pub fn read_events(&self, mut each: impl FnMut(Event<'_>)) -> io::Result<()> {
        const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match read(self.fd.as_raw_fd(), &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => Ok(()),
                        io::ErrorKind::Interrupted => continue,
                        _ => Err(e),
                    };
                }
            };
            if n == 0 {
                return Ok(());
            }
            let mut bytes = &buf[..n];
            while bytes.len() >= HEADER {
                // SAFETY: the kernel writes whole events (never split across reads) and at
                // least HEADER bytes remain; read_unaligned copes with the byte buffer, and
                // any bit pattern is a valid `inotify_event` (plain integers).
                let ev: libc::inotify_event = unsafe {
                    std::ptr::read_unaligned(bytes.as_ptr().cast::<libc::inotify_event>())
                };
                let total = HEADER + ev.len as usize;
                let Some(raw_name) = bytes.get(HEADER..total) else {
                    break;
                };
                let name = &raw_name[..raw_name
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(raw_name.len())];
                each(Event {
                    wd: ev.wd,
                    mask: ev.mask,
                    name,
                });
                bytes = &bytes[total..];
            }
        }
    }
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// `read(2)` into `buf`; the number of bytes read.
fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; a bad fd only fails.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast::<libc::c_void>(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// An eventfd: other threads [`Wake::wake`] a thread out of [`wait_readable`].
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
        let mut v = [0u8; 8];
        // EAGAIN when nothing is pending: nothing to clear.
        let _ = read(self.fd.as_raw_fd(), &mut v);
    }
}

impl AsRawFd for Wake {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: forever). Returns
/// which were readable (none when a signal interrupted the wait).
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
    fn reads_events_with_their_names() {
        let dir = std::env::temp_dir().join(format!("mailfs-sys-inotify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ino = Inotify::new().unwrap();
        let wd = ino
            .add_watch(&dir, libc::IN_CREATE | libc::IN_DELETE | libc::IN_ONLYDIR)
            .unwrap();
        let mut seen = Vec::new();
        ino.read_events(|ev| seen.push((ev.wd, ev.mask, ev.name.to_vec())))
            .unwrap();
        assert!(seen.is_empty(), "nothing happened yet");
        std::fs::write(dir.join("a-name"), b"x").unwrap();
        std::fs::remove_file(dir.join("a-name")).unwrap();
        assert!(wait_readable(&[ino.as_raw_fd()], Some(Duration::from_secs(5))).unwrap()[0]);
        ino.read_events(|ev| seen.push((ev.wd, ev.mask, ev.name.to_vec())))
            .unwrap();
        assert_eq!(
            seen,
            vec![
                (wd, libc::IN_CREATE, b"a-name".to_vec()),
                (wd, libc::IN_DELETE, b"a-name".to_vec()),
            ]
        );
        ino.remove_watch(wd);
        ino.remove_watch(wd); // already gone: ignored
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            ino.add_watch(&dir, libc::IN_CREATE).is_err(),
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
