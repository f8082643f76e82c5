//! The watcher's use of inotify ([`crate::sys::Inotify`], the one wrapper): the events
//! that can change what a watched directory presents, and what one read of the queue fired.

use std::collections::HashSet;
use std::io;

use crate::sys::Inotify;

/// Events that can change what a directory (or a file in it) presents.
pub const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

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

impl Fired {
    /// Reads every event queued on `inotify` without blocking, adding it here.
    pub fn read(&mut self, inotify: &Inotify) -> io::Result<()> {
        inotify.read_events(|ev| {
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                self.overflow = true;
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                self.dropped.insert(ev.wd);
            } else if ev.wd >= 0 {
                self.changed.insert(ev.wd);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::wait_readable;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn reports_changes_in_a_watched_directory() {
        let dir = std::env::temp_dir().join(format!("mailfs-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ino = Inotify::new().unwrap();
        let wd = ino.add_watch(&dir, MASK).unwrap();
        let mut fired = Fired::default();
        fired.read(&ino).unwrap();
        assert!(fired.changed.is_empty(), "nothing happened yet");
        std::fs::write(dir.join("f"), b"x").unwrap();
        assert!(wait_readable(&[ino.as_raw_fd()], Some(Duration::from_secs(5))).unwrap()[0]);
        fired.read(&ino).unwrap();
        assert!(fired.changed.contains(&wd));
        std::fs::remove_dir_all(&dir).unwrap();
        wait_readable(&[ino.as_raw_fd()], Some(Duration::from_secs(5))).unwrap();
        let mut fired = Fired::default();
        fired.read(&ino).unwrap();
        assert!(fired.dropped.contains(&wd), "{fired:?}");
        assert!(
            ino.add_watch(&dir, MASK).is_err(),
            "a missing directory cannot be watched"
        );
    }
}
