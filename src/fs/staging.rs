//! Files written into a mailbox directory (`cp msg.eml MNT/box/`, `rsync`, `tar -x`),
//! held in memory until they are closed, then saved by the mount's writer (Dovecot) as one
//! new message. mailfs never writes a store file.
//!
//! A staged file's life:
//! - `create` makes it [`Phase::Writing`] under its name in its mailbox directory (listed,
//!   readable, writable at any offset, up to [`Limits::file`] bytes; all staged files
//!   together up to [`Limits::total`]; beyond, the write fails with EFBIG or ENOSPC and
//!   the file can no longer become a message).
//! - It is saved when the thread (or another thread of the process) that created it
//!   closes it with something written: `close()` returns only after Dovecot confirmed the
//!   save (or with its error). Other closes save nothing: the shell's `cmd > file` opens,
//!   `dup2()`s and closes the spare descriptor before `cmd` writes (a FLUSH with nothing
//!   written yet), `( a; b ) > file` runs commands that each close an inherited
//!   descriptor as they exit, and a child's `exec` closes the close-on-exec descriptors
//!   it inherited while its parent is still writing. Whatever was not saved by its writer
//!   is saved when the kernel releases the last descriptor (then `close()` does not wait
//!   for it, and an error only reaches the log). An empty file is never saved; a file
//!   closed by its writer as a signal kills it is discarded (an interrupted `cp`).
//! - Saved, the file stays a *ghost* under its name for [`GHOST_TTL`] after its last
//!   handle is released, answering lookups, `stat`, `utime`, `chmod`, `rename` and
//!   `unlink` (`rsync` renames its temporary file after closing it; `tar` sets times
//!   after closing) without creating anything more; it is no longer listed (the message
//!   is, as `<uid>.eml`). Unlinking a ghost only forgets it.
//!
//! Locks: the table's mutex and each file's mutex are leaves, never held together, during
//! I/O, or while replying.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::error::{Error, Refusal, Result};
use crate::store::MailboxName;

/// How long a saved file stays a ghost after its last handle was released.
pub const GHOST_TTL: Duration = Duration::from_secs(60);

/// How much may be staged.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes one staged file may hold (`--max-message-size`).
    pub file: u64,
    /// Bytes all staged files together may hold.
    pub total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file: 64 << 20,
            total: 1 << 30,
        }
    }
}

/// Where a staged file is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Being written; saved at the first close.
    Writing,
    /// Saved by Dovecot; `size` bytes.
    Saved,
    /// Will never become a message (a write failed, or its writer was killed).
    Failed,
}

/// One staged file.
#[derive(Debug)]
pub struct Staged {
    /// Its staging id (its node is `Node::Staged(id)`).
    pub id: u64,
    /// The mailbox it goes into, and its name there.
    place: Mutex<(Arc<MailboxName>, OsString)>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    data: Vec<u8>,
    size: u64,
    phase: Phase,
    created: SystemTime,
    /// Open handles; and when the last one was released.
    handles: usize,
    released: Option<Instant>,
    /// Owner of the file (the creator), presented while it is staged.
    uid: u32,
    gid: u32,
    /// Who created it.
    writer: Writer,
}

/// The thread that created a staged file, and its process: their closes save it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Writer {
    /// The creating thread (a FUSE request's `pid` is its caller's thread id).
    pub tid: u32,
    /// Its process (thread group).
    pub process: u32,
}

/// What `stat` shows of a staged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedAttr {
    /// Its size.
    pub size: u64,
    /// When it was created.
    pub created: SystemTime,
    /// Its creator.
    pub uid: u32,
    /// Its creator's group.
    pub gid: u32,
}

impl Staged {
    /// Its mailbox and name.
    pub fn place(&self) -> (Arc<MailboxName>, OsString) {
        self.place.lock().clone()
    }

    /// Who created it.
    pub fn writer(&self) -> Writer {
        self.state.lock().writer
    }

    /// Where it is in its life.
    pub fn phase(&self) -> Phase {
        self.state.lock().phase.clone()
    }

    /// What `stat` shows.
    pub fn attr(&self) -> StagedAttr {
        let st = self.state.lock();
        StagedAttr {
            size: st.size,
            created: st.created,
            uid: st.uid,
            gid: st.gid,
        }
    }

    /// Reads `[offset, offset + size)` of what was written so far (nothing once saved:
    /// the message is read as `<uid>.eml`).
    pub fn read(&self, offset: u64, size: u32) -> Vec<u8> {
        let st = self.state.lock();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(st.data.len());
        let end = start.saturating_add(size as usize).min(st.data.len());
        st.data[start..end].to_vec()
    }
}

/// A process's recent saves into one mailbox: the messages from UID `first_uid` on may be
/// its own.
#[derive(Debug, Clone, Copy)]
struct Deliveries {
    first_uid: u32,
    last: Instant,
}

/// The staged files of a mount.
#[derive(Debug, Default)]
pub struct Staging {
    by_id: Mutex<HashMap<u64, Arc<Staged>>>,
    /// Per (process, mailbox): its saves of the last [`GHOST_TTL`].
    deliveries: Mutex<HashMap<(u32, MailboxName), Deliveries>>,
    next_id: AtomicU64,
    /// Bytes held by all staged files.
    total: AtomicU64,
    limits: Limits,
}

impl Staging {
    /// An empty table with `limits`.
    pub fn new(limits: Limits) -> Staging {
        Staging {
            limits,
            next_id: AtomicU64::new(1),
            ..Staging::default()
        }
    }

    /// A new, empty staged file `name` in `mailbox`, with its first handle open; a ghost
    /// or staged file of that name is replaced (its phase kept where it was: a ghost's
    /// message stays saved).
    pub fn create(
        &self,
        mailbox: Arc<MailboxName>,
        name: &OsStr,
        (uid, gid): (u32, u32),
        writer: Writer,
    ) -> Arc<Staged> {
        self.expire();
        if let Some(old) = self.find(&mailbox, name) {
            self.drop_file(&old);
        }
        self.insert(
            mailbox,
            name,
            State {
                data: Vec::new(),
                size: 0,
                phase: Phase::Writing,
                created: SystemTime::now(),
                handles: 1,
                released: None,
                uid,
                gid,
                writer,
            },
        )
    }

    /// Puts a new file in the table under the next staging id.
    fn insert(&self, mailbox: Arc<MailboxName>, name: &OsStr, state: State) -> Arc<Staged> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let staged = Arc::new(Staged {
            id,
            place: Mutex::new((mailbox, name.to_os_string())),
            state: Mutex::new(state),
        });
        self.by_id.lock().insert(id, staged.clone());
        staged
    }

    /// A ghost named `name` in `mailbox` showing `attr`, as if a file saved there had just
    /// been released: the name a message was moved to (`mv a/12.eml b/` leaves the message
    /// in b under the UID Dovecot gave it; `mv` then looks at `b/12.eml`). Replaces a
    /// ghost of that name.
    /// Returns its staging id (None if a file being written has that name: it keeps it).
    pub fn ghost(&self, mailbox: Arc<MailboxName>, name: &OsStr, attr: StagedAttr) -> Option<u64> {
        self.expire();
        if let Some(old) = self.find(&mailbox, name) {
            if old.phase() == Phase::Writing {
                return None;
            }
            self.drop_file(&old);
        }
        let ghost = self.insert(
            mailbox,
            name,
            State {
                data: Vec::new(),
                size: attr.size,
                phase: Phase::Saved,
                created: attr.created,
                handles: 0,
                released: Some(Instant::now()),
                uid: attr.uid,
                gid: attr.gid,
                writer: Writer::default(),
            },
        );
        Some(ghost.id)
    }

    /// The staged file (or ghost) with staging id `id`.
    pub fn get(&self, id: u64) -> Option<Arc<Staged>> {
        self.by_id.lock().get(&id).cloned()
    }

    /// The staged file or ghost named `name` in `mailbox`.
    pub fn find(&self, mailbox: &MailboxName, name: &OsStr) -> Option<Arc<Staged>> {
        self.by_id
            .lock()
            .values()
            .find(|s| {
                let place = s.place.lock();
                *place.0 == *mailbox && place.1 == name
            })
            .cloned()
    }

    /// The files being written into `mailbox` (not ghosts), for its listing.
    pub fn writing_in(&self, mailbox: &MailboxName) -> Vec<Arc<Staged>> {
        let all: Vec<Arc<Staged>> = self.by_id.lock().values().cloned().collect();
        all.into_iter()
            .filter(|s| *s.place.lock().0 == *mailbox && s.phase() == Phase::Writing)
            .collect()
    }

    /// Writes `data` at `offset`; the count written. Past a limit the file fails for good.
    pub fn write(&self, staged: &Staged, offset: u64, data: &[u8]) -> Result<usize> {
        let mut st = staged.state.lock();
        match st.phase {
            Phase::Writing => {}
            Phase::Saved => {
                return Err(Error::refused(
                    Refusal::NotPermitted,
                    "writing into a message already saved (messages are immutable)",
                ));
            }
            Phase::Failed => {
                return Err(Error::refused(
                    Refusal::Unavailable,
                    "writing into a file that can no longer be saved",
                ));
            }
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > self.limits.file {
            self.fail(&mut st);
            return Err(Error::refused(
                Refusal::TooLarge,
                format!("a message larger than {} bytes", self.limits.file),
            ));
        }
        let grow = end.saturating_sub(st.data.len() as u64);
        if grow > 0 {
            let total = self.total.fetch_add(grow, Ordering::Relaxed) + grow;
            if total > self.limits.total {
                self.total.fetch_sub(grow, Ordering::Relaxed);
                self.fail(&mut st);
                return Err(Error::refused(
                    Refusal::NoSpace,
                    format!("more than {} bytes staged at once", self.limits.total),
                ));
            }
            st.data.resize(end as usize, 0);
        }
        st.data[offset as usize..end as usize].copy_from_slice(data);
        st.size = st.data.len() as u64;
        Ok(data.len())
    }

    /// Truncates (or extends with zeros) a file being written.
    pub fn set_size(&self, staged: &Staged, size: u64) -> Result<()> {
        let mut st = staged.state.lock();
        if st.phase != Phase::Writing {
            // A ghost keeps its size: the message is saved.
            return if size == st.size {
                Ok(())
            } else {
                Err(Error::refused(
                    Refusal::NotPermitted,
                    "resizing a message already saved (messages are immutable)",
                ))
            };
        }
        if size > self.limits.file {
            return Err(Error::refused(
                Refusal::TooLarge,
                format!("a message larger than {} bytes", self.limits.file),
            ));
        }
        let old = st.data.len() as u64;
        if size > old {
            self.total.fetch_add(size - old, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(old - size, Ordering::Relaxed);
        }
        st.data.resize(size as usize, 0);
        st.size = size;
        Ok(())
    }

    /// The bytes to save, if the file is still to be saved and has any; it is then marked
    /// saved or failed by [`Staging::saved`].
    pub fn to_save(&self, staged: &Staged) -> Option<(Arc<MailboxName>, Vec<u8>)> {
        let st = staged.state.lock();
        (st.phase == Phase::Writing && !st.data.is_empty())
            .then(|| (staged.place.lock().0.clone(), st.data.clone()))
    }

    /// Records how the save went: saved (the bytes are dropped; the size stays for
    /// `stat`), or failed (never to be saved).
    pub fn saved(&self, staged: &Staged, ok: bool) {
        let mut st = staged.state.lock();
        if ok {
            st.phase = Phase::Saved;
            let held = st.data.len() as u64;
            st.data = Vec::new();
            self.total.fetch_sub(held, Ordering::Relaxed);
        } else {
            self.fail(&mut st);
        }
    }

    /// Marks the file as never to be saved (its writer was killed).
    pub fn discard(&self, staged: &Staged) {
        let mut st = staged.state.lock();
        if st.phase == Phase::Writing {
            self.fail(&mut st);
        }
    }

    fn fail(&self, st: &mut State) {
        st.phase = Phase::Failed;
        let held = st.data.len() as u64;
        st.data = Vec::new();
        self.total.fetch_sub(held, Ordering::Relaxed);
    }

    /// One more handle on the file (an `open`).
    pub fn opened(&self, staged: &Staged) {
        let mut st = staged.state.lock();
        st.handles += 1;
        st.released = None;
    }

    /// One handle fewer (a `release`); whether it was the last. A failed file with no
    /// handle left is forgotten.
    pub fn released(&self, staged: &Staged) -> bool {
        let (last, gone) = {
            let mut st = staged.state.lock();
            st.handles = st.handles.saturating_sub(1);
            if st.handles == 0 {
                st.released = Some(Instant::now());
            }
            (
                st.handles == 0,
                st.handles == 0 && st.phase == Phase::Failed,
            )
        };
        if gone {
            self.drop_file(staged);
        }
        last
    }

    /// Renames the file (within its mailbox or into another while it is being written).
    pub fn rename(&self, staged: &Staged, to: Arc<MailboxName>, name: &OsStr) -> Result<()> {
        let same_box = *staged.place.lock().0 == *to;
        if !same_box && staged.phase() != Phase::Writing {
            return Err(Error::refused(
                Refusal::CrossesStores,
                "moving a message already saved by renaming its staged name",
            ));
        }
        if let Some(other) = self.find(&to, name)
            && other.id != staged.id
        {
            self.drop_file(&other);
        }
        *staged.place.lock() = (to, name.to_os_string());
        Ok(())
    }

    /// Forgets the file: a file being written is discarded, a ghost just forgotten (its
    /// message stays).
    pub fn unlink(&self, staged: &Staged) {
        self.discard(staged);
        self.drop_file(staged);
    }

    fn drop_file(&self, staged: &Staged) {
        if self.by_id.lock().remove(&staged.id).is_some() {
            let mut st = staged.state.lock();
            let held = st.data.len() as u64;
            st.data = Vec::new();
            self.total.fetch_sub(held, Ordering::Relaxed);
        }
    }

    /// Records that thread `pid` saved a message into `mailbox`, whose next UID was
    /// `uid_next` before the save.
    pub fn delivered(&self, pid: u32, mailbox: &MailboxName, uid_next: u32) {
        let mut all = self.deliveries.lock();
        let now = Instant::now();
        all.retain(|_, d| now.duration_since(d.last) <= GHOST_TTL);
        all.entry((pid, mailbox.clone()))
            .and_modify(|d| d.last = now)
            .or_insert(Deliveries {
                first_uid: uid_next,
                last: now,
            });
    }

    /// The first UID that may be a message thread `pid` saved into `mailbox` within the
    /// last [`GHOST_TTL`] (every message since its first save there counts).
    pub fn delivered_since(&self, pid: u32, mailbox: &MailboxName) -> Option<u32> {
        let all = self.deliveries.lock();
        all.get(&(pid, mailbox.clone()))
            .filter(|d| d.last.elapsed() <= GHOST_TTL)
            .map(|d| d.first_uid)
    }

    /// Forgets ghosts released more than [`GHOST_TTL`] ago.
    pub fn expire(&self) {
        let all: Vec<Arc<Staged>> = self.by_id.lock().values().cloned().collect();
        for s in all {
            let old = {
                let st = s.state.lock();
                st.phase != Phase::Writing
                    && st.handles == 0
                    && st.released.is_some_and(|at| at.elapsed() > GHOST_TTL)
            };
            if old {
                self.drop_file(&s);
            }
        }
    }

    /// Bytes held by all staged files.
    pub fn held(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox() -> Arc<MailboxName> {
        Arc::new(MailboxName::parse("INBOX"))
    }

    #[test]
    fn a_file_is_written_saved_once_and_kept_as_a_ghost() {
        let staging = Staging::new(Limits::default());
        let f = staging.create(inbox(), OsStr::new("msg.eml"), (1, 1), Writer::default());
        assert!(
            staging.to_save(&f).is_none(),
            "nothing written: nothing to save"
        );
        assert_eq!(staging.write(&f, 0, b"Subject: x\n").unwrap(), 11);
        assert_eq!(staging.write(&f, 11, b"\nbody\n").unwrap(), 6);
        staging.write(&f, 0, b"s").unwrap(); // overwrite in place
        assert_eq!(f.read(0, 100), b"subject: x\n\nbody\n");
        assert_eq!(staging.writing_in(&inbox()).len(), 1);
        let (mailbox, bytes) = staging.to_save(&f).expect("to save");
        assert_eq!(*mailbox, *inbox());
        assert_eq!(bytes.len(), 17);
        staging.saved(&f, true);
        assert!(staging.to_save(&f).is_none(), "saved once only");
        assert_eq!(staging.held(), 0);
        assert_eq!(f.attr().size, 17, "a ghost keeps its size");
        assert!(
            staging.writing_in(&inbox()).is_empty(),
            "a ghost is not listed"
        );
        assert!(
            staging.write(&f, 0, b"x").is_err(),
            "messages are immutable"
        );
        assert!(staging.released(&f), "the last handle");
        // rsync renames its temporary file after closing it.
        staging
            .rename(&f, inbox(), OsStr::new("final.eml"))
            .unwrap();
        assert!(staging.find(&inbox(), OsStr::new("final.eml")).is_some());
        staging.unlink(&f);
        assert!(staging.get(f.id).is_none());
    }

    #[test]
    fn limits_fail_a_file_for_good_and_free_its_bytes() {
        let staging = Staging::new(Limits {
            file: 10,
            total: 15,
        });
        let a = staging.create(inbox(), OsStr::new("a"), (1, 1), Writer::default());
        let err = staging.write(&a, 0, &[b'x'; 11]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    why: Refusal::TooLarge,
                    ..
                }
            ),
            "{err}"
        );
        assert!(staging.to_save(&a).is_none(), "never saved");
        let b = staging.create(inbox(), OsStr::new("b"), (1, 1), Writer::default());
        let c = staging.create(inbox(), OsStr::new("c"), (1, 1), Writer::default());
        staging.write(&b, 0, &[b'x'; 10]).unwrap();
        let err = staging.write(&c, 0, &[b'x'; 6]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    why: Refusal::NoSpace,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(staging.held(), 10);
        staging.discard(&b);
        assert_eq!(staging.held(), 0);
        assert!(staging.to_save(&b).is_none());
        // A failed file with no handle left is forgotten.
        staging.released(&c);
        assert!(staging.get(c.id).is_none());
    }
}
