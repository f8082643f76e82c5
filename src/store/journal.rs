//! Name-level change journals for Maildir directories: which file names appeared in or
//! left `cur/` and `new/` since a journal was armed, read from inotify, so that a view can
//! be updated by what changed instead of re-reading a directory of 100,000 names.
//!
//! One inotify instance per store (instances are a scarce per-user resource), shared by
//! every journal; [`JournalHub::drain`] reads whatever the kernel has queued and hands each
//! event to the journal of its watch descriptor.
//!
//! Invariant the user of a journal relies on: a journal is armed *before* the directory
//! listing it continues from is read. Every change after the listing started is then in
//! the journal (possibly also already in the listing: replaying an event whose effect is
//! already there must be harmless, which holds for "name present / name absent" replayed
//! in order). Anything the journal cannot vouch for -- a queue overflow, the directory
//! itself removed or moved, a subdirectory, an unreadable event -- marks it *lost*, and the
//! caller falls back to reading the directory.
//!
//! Only meaningful where inotify sees every writer (a local filesystem); the store enables
//! journals only when the watcher uses inotify (`StoreConfig::journals`).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::sys::Inotify;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// One name change in a journaled directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEvent {
    /// Which of the journal's directories (index into the list it was armed with).
    pub dir: usize,
    /// The name is there now (created, moved in) or not (deleted, moved out).
    pub present: bool,
    /// The file name.
    pub name: Vec<u8>,
}

/// Where a watch descriptor's events go: a journal's queue, and which of its directories.
type Route = (Arc<Mutex<Queue>>, usize);

#[derive(Debug, Default)]
struct Queue {
    events: Vec<NameEvent>,
    lost: bool,
}

/// The shared inotify instance of one store.
#[derive(Debug)]
pub struct JournalHub {
    inotify: Inotify,
    /// Watch descriptor -> (journal queue, directory index in that journal).
    routes: Mutex<HashMap<i32, Route>>,
    /// Serializes reads of the descriptor, so that events are handed out in order.
    reading: Mutex<()>,
}

impl JournalHub {
    /// A new non-blocking instance.
    pub fn new() -> io::Result<JournalHub> {
        Ok(JournalHub {
            inotify: Inotify::new()?,
            routes: Mutex::new(HashMap::new()),
            reading: Mutex::new(()),
        })
    }

    /// Arms a journal on `dirs` (each must exist). Events before this call are not in it.
    pub fn arm(self: &Arc<Self>, dirs: &[&Path]) -> io::Result<Journal> {
        // Made first, so that any early return removes the watches already added (Drop).
        let mut journal = Journal {
            hub: self.clone(),
            wds: Vec::new(),
            queue: Arc::new(Mutex::new(Queue::default())),
        };
        // Events queued before the watches exist belong to earlier journals.
        self.drain();
        for (i, dir) in dirs.iter().enumerate() {
            let wd = self.inotify.add_watch(dir, MASK)?;
            // Two directories of one store can share a watch descriptor only if they are
            // the same directory; a route already taken means the journal cannot tell them
            // apart: refuse (without touching the other journal's watch).
            let mut routes = self.routes.lock();
            if routes.contains_key(&wd) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "directory already journaled",
                ));
            }
            routes.insert(wd, (journal.queue.clone(), i));
            drop(routes);
            journal.wds.push(wd);
        }
        Ok(journal)
    }

    /// Reads every queued event and hands it to its journal.
    pub fn drain(&self) {
        let _reading = self.reading.lock();
        let routes = self.routes.lock();
        let read = self.inotify.read_events(|ev| {
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                for (q, _) in routes.values() {
                    q.lock().lost = true;
                }
                return;
            }
            let Some((queue, dir)) = routes.get(&ev.wd) else {
                return;
            };
            let mut q = queue.lock();
            let gone =
                libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED | libc::IN_UNMOUNT;
            if ev.mask & gone != 0 || ev.mask & libc::IN_ISDIR != 0 || ev.name.is_empty() {
                q.lost = true;
                return;
            }
            q.events.push(NameEvent {
                dir: *dir,
                present: ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0,
                name: ev.name.to_vec(),
            });
        });
        if read.is_err() {
            // Nothing can be vouched for any more.
            for (q, _) in routes.values() {
                q.lock().lost = true;
            }
        }
    }
}

/// The changes of a set of directories since it was armed.
#[derive(Debug)]
pub struct Journal {
    hub: Arc<JournalHub>,
    wds: Vec<i32>,
    queue: Arc<Mutex<Queue>>,
}

impl Journal {
    /// Everything recorded since the last call (or since arming), in order; `None` if the
    /// journal lost track (then it stays lost: arm a new one).
    pub fn take(&self) -> Option<Vec<NameEvent>> {
        self.hub.drain();
        let mut q = self.queue.lock();
        if q.lost {
            return None;
        }
        Some(std::mem::take(&mut q.events))
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let mut routes = self.hub.routes.lock();
        for wd in &self.wds {
            routes.remove(wd);
            self.hub.inotify.remove_watch(*wd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mailfs-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("cur")).unwrap();
        std::fs::create_dir_all(d.join("new")).unwrap();
        d
    }

    #[test]
    fn records_name_changes_in_order_per_directory() {
        let d = tmpdir("order");
        let hub = Arc::new(JournalHub::new().unwrap());
        let j = hub.arm(&[&d.join("cur"), &d.join("new")]).unwrap();
        std::fs::write(d.join("new/a"), b"x").unwrap();
        std::fs::rename(d.join("new/a"), d.join("cur/a:2,S")).unwrap();
        std::fs::remove_file(d.join("cur/a:2,S")).unwrap();
        let ev = j.take().expect("not lost");
        let got: Vec<(usize, bool, &[u8])> =
            ev.iter().map(|e| (e.dir, e.present, &e.name[..])).collect();
        assert_eq!(
            got,
            vec![
                (1, true, &b"a"[..]),
                (1, false, &b"a"[..]),
                (0, true, &b"a:2,S"[..]),
                (0, false, &b"a:2,S"[..]),
            ]
        );
        assert_eq!(j.take(), Some(Vec::new()), "taken once");
        // Another journal on another directory does not see these.
        let d2 = tmpdir("other");
        let j2 = hub.arm(&[&d2.join("cur")]).unwrap();
        std::fs::write(d.join("cur/b"), b"x").unwrap();
        assert_eq!(j2.take(), Some(Vec::new()));
        assert_eq!(j.take().map(|e| e.len()), Some(1));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&d2);
    }

    #[test]
    fn a_removed_directory_or_subdirectory_loses_the_journal() {
        let d = tmpdir("lost");
        let hub = Arc::new(JournalHub::new().unwrap());
        let j = hub.arm(&[&d.join("cur"), &d.join("new")]).unwrap();
        std::fs::create_dir(d.join("cur/sub")).unwrap();
        assert_eq!(j.take(), None);
        // A directory is journaled once at a time.
        assert!(hub.arm(&[&d.join("cur")]).is_err());
        drop(j);
        let j = hub.arm(&[&d.join("cur"), &d.join("new")]).unwrap();
        std::fs::remove_dir_all(d.join("new")).unwrap();
        assert_eq!(j.take(), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
