//! The notifier thread: turns the coherence layer's [`Change`]s into kernel invalidations
//! (`FUSE_NOTIFY_INVAL_ENTRY`, `FUSE_NOTIFY_INVAL_INODE`, `FUSE_NOTIFY_DELETE`).
//!
//! Rules (libfuse's, for not deadlocking the kernel against ourselves):
//! - never called from a request handler: only this thread talks to the kernel unasked;
//! - no lock is held while calling the kernel (inode numbers are looked up first, and the
//!   inode table's lock is released before each call);
//! - only entries the kernel has looked up are named: a node missing from the inode table
//!   has nothing cached (a cached dentry holds a lookup count).
//!
//! What each change becomes:
//! - message gone (expunged, or UIDVALIDITY changed): `delete(dir, ino, name)`; an inotify
//!   watch on the message file gets `IN_DELETE_SELF`; a watch on its directory gets nothing
//!   (observed on Linux 6.18: the kernel's handling of FUSE_NOTIFY_DELETE does not notify
//!   the directory's watchers);
//! - message new: `inval_entry(dir, name)`, dropping a cached negative lookup;
//! - message changed (flags, keywords, dates): `inval_inode(ino, -1)`, attributes only (the
//!   bytes of a UID never change, so its page cache stays);
//! - mailbox created / deleted / renamed: `inval_entry` / `delete` on its parent;
//! - every directory whose listing or attributes changed: `inval_inode(dir, 0)`, which drops
//!   its attributes and its cached readdir pages.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{INodeNo, Notifier};
use log::debug;

use super::inode::{InodeTable, Node, ROOT_INO};
use super::naming::{Layout, Naming, Sub};
use crate::coherence::Change;
use crate::coherence::baseline::Baseline;
use crate::coherence::diff::ListDiff;
use crate::store::{MailboxName, MailboxView, MessageKey};

/// Counters for the status report.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Invalidations sent to the kernel (all kinds).
    pub sent: AtomicU64,
    /// Of those, the kernel answered with an error other than "not cached".
    pub failed: AtomicU64,
}

/// The kernel's caches, as the notifier tells them what changed: `fuser::Notifier` on a
/// mount, a recorder in tests.
pub trait KernelCaches: Send + 'static {
    /// `FUSE_NOTIFY_DELETE`: `child`, named `name` in `parent`, is gone.
    fn delete(&self, parent: u64, child: u64, name: &OsStr) -> std::io::Result<()>;
    /// `FUSE_NOTIFY_INVAL_ENTRY`: forget what `name` in `parent` resolves to.
    fn inval_entry(&self, parent: u64, name: &OsStr) -> std::io::Result<()>;
    /// `FUSE_NOTIFY_INVAL_INODE`: `offset` -1: attributes only; 0: attributes and all
    /// cached data (a directory's readdir cache).
    fn inval_inode(&self, ino: u64, offset: i64) -> std::io::Result<()>;
}

impl KernelCaches for Notifier {
    fn delete(&self, parent: u64, child: u64, name: &OsStr) -> std::io::Result<()> {
        Notifier::delete(self, INodeNo(parent), INodeNo(child), name)
    }
    fn inval_entry(&self, parent: u64, name: &OsStr) -> std::io::Result<()> {
        Notifier::inval_entry(self, INodeNo(parent), name)
    }
    fn inval_inode(&self, ino: u64, offset: i64) -> std::io::Result<()> {
        Notifier::inval_inode(self, INodeNo(ino), offset, 0)
    }
}

/// What the notifier is told: a change the watcher saw in the store, or what a change made
/// through the mount needs dropped from the kernel's caches.
#[derive(Debug)]
pub enum Notice {
    /// The store changed (from the watcher, or a write through the mount).
    Store(Change),
    /// `name` in directory `parent` no longer means what the kernel may hold (a `mv`
    /// made the kernel keep the name it was given; the message got another).
    Entry {
        /// The directory's inode.
        parent: u64,
        /// The name.
        name: std::ffi::OsString,
    },
}

/// Starts the notifier thread; it ends when the sending side of `changes` is dropped.
pub fn spawn(
    changes: Receiver<Notice>,
    notifier: impl KernelCaches,
    inodes: Arc<InodeTable>,
    naming: Naming,
    stats: Arc<NotifyStats>,
) -> std::io::Result<JoinHandle<()>> {
    let n = Invalidator {
        notifier,
        inodes,
        naming,
        stats,
    };
    std::thread::Builder::new()
        .name("notifier".into())
        .spawn(move || n.run(&changes))
}

/// Each change is applied again after these delays. A request that read the store just
/// before the change can reply after the invalidation and so put the old entry back into
/// the kernel's caches (a lookup, a readdirplus, a listing being filled): the replays drop
/// it again once such requests have finished. Invalidating an entry twice is harmless.
const REPLAY_AFTER: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(500)];

struct Invalidator<K: KernelCaches> {
    notifier: K,
    inodes: Arc<InodeTable>,
    naming: Naming,
    stats: Arc<NotifyStats>,
}

impl<K: KernelCaches> Invalidator<K> {
    /// Applies changes as they come, and each again after [`REPLAY_AFTER`]; returns when
    /// the sending side is gone and no replay is due.
    fn run(&self, changes: &Receiver<Notice>) {
        // One queue per replay round; each is in time order (a fixed delay per round).
        let mut rounds: Vec<VecDeque<(Instant, Change)>> =
            REPLAY_AFTER.iter().map(|_| VecDeque::new()).collect();
        loop {
            let now = Instant::now();
            for r in 0..rounds.len() {
                while rounds[r].front().is_some_and(|(at, _)| *at <= now) {
                    if let Some((_, change)) = rounds[r].pop_front() {
                        self.apply(change.clone());
                        if r + 1 < rounds.len() {
                            let wait = REPLAY_AFTER[r + 1].saturating_sub(REPLAY_AFTER[r]);
                            rounds[r + 1].push_back((now + wait, change));
                        }
                    }
                }
            }
            let due = rounds
                .iter()
                .filter_map(|q| q.front().map(|(at, _)| *at))
                .min();
            let next = match due {
                Some(at) => changes.recv_timeout(at.saturating_duration_since(now)),
                None => changes.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(Notice::Store(change)) => {
                    self.apply(change.clone());
                    rounds[0].push_back((Instant::now() + REPLAY_AFTER[0], change));
                }
                Ok(Notice::Entry { parent, name }) => self.inval_entry(parent, &name),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn apply(&self, change: Change) {
        match change {
            Change::Mailbox { name, old, new } => self.mailbox(&name, &old, new.as_deref()),
            Change::Scope { old, new, .. } => self.scope(&ListDiff::between(&old, &new)),
            Change::Root { .. } => self.everything(),
        }
    }

    /// Drops every top-level entry (and with it everything cached below) and the root's
    /// listing: the next request of any path reaches mailfs.
    fn everything(&self) {
        for (ino, node) in self.inodes.top_level() {
            if let Node::Folder(name) = &node
                && let Some(level) = name.0.first()
            {
                self.delete(ROOT_INO, ino, &self.naming.folder_name(level));
            }
        }
        self.inval_inode(ROOT_INO, 0);
    }

    fn mailbox(&self, name: &MailboxName, old: &Baseline, new: Option<&MailboxView>) {
        let mailbox = Arc::new(name.clone());
        let Some(dir) = self.inodes.known(&Node::Folder(mailbox.clone())) else {
            return; // nothing below an unknown folder can be cached
        };
        // Where the messages are listed: the mailbox's directory, or in the Maildir layout
        // its `cur/` (whose names carry the flags).
        let list_dir = match self.naming.layout {
            Layout::Eml => Some(dir),
            Layout::Maildir => {
                let mut levels = name.0.clone();
                levels.push(Sub::Cur.level());
                self.inodes
                    .known(&Node::Folder(Arc::new(MailboxName(levels))))
            }
        };
        let node = |uid_validity: u32, key: &MessageKey| Node::Message {
            mailbox: mailbox.clone(),
            uid_validity,
            key: key.clone(),
        };
        let name_in = |view: Option<&MailboxView>, key: &MessageKey| {
            view.and_then(|v| v.get(key).map(|m| self.naming.listed_name(v, &m)))
                .unwrap_or_else(|| self.naming.message_name(key))
        };
        // A digest names no message: the watcher keeps digests only where names are
        // keys (`Baselines::Digests` for the eml layout).
        debug_assert!(old.view().is_some() || self.naming.layout == Layout::Eml);
        let old_view = old.view().map(|v| &**v);
        let Some(new) = new else {
            // Not found now: nothing it held may be served. (If the mailbox is really
            // gone, its parent's list change also deletes the directory's entry.)
            if let Some(list_dir) = list_dir {
                for key in old.keys() {
                    if let Some(ino) = self.inodes.known(&node(old.uid_validity(), &key)) {
                        self.delete(list_dir, ino, &name_in(old_view, &key));
                    }
                }
                if list_dir != dir {
                    self.inval_inode(list_dir, 0);
                }
            }
            self.inval_inode(dir, 0);
            return;
        };
        let d = old.diff(new);
        if d.is_empty() {
            return;
        }
        if let Some(list_dir) = list_dir {
            for key in &d.removed {
                if let Some(ino) = self.inodes.known(&node(old.uid_validity(), key)) {
                    self.delete(list_dir, ino, &name_in(old_view, key));
                }
            }
            for key in &d.added {
                self.inval_entry(list_dir, &name_in(Some(new), key));
            }
            for key in &d.changed {
                if let Some(ino) = self.inodes.known(&node(new.uid_validity, key)) {
                    self.inval_inode(ino, -1);
                }
                // A Maildir name carries the flags: the old name is gone, the new one new.
                let (was, is) = (name_in(old_view, key), name_in(Some(new), key));
                if was != is {
                    self.inval_entry(list_dir, &was);
                    self.inval_entry(list_dir, &is);
                }
            }
            if list_dir != dir {
                self.inval_inode(list_dir, 0);
            }
        }
        self.inval_inode(dir, 0);
    }

    fn scope(&self, d: &ListDiff) {
        let mut parents: Vec<u64> = Vec::new();
        let parent_of = |name: &MailboxName| {
            let levels = &name.0[..name.0.len().saturating_sub(1)];
            self.inodes
                .known(&Node::Folder(Arc::new(MailboxName(levels.to_vec()))))
        };
        let last = |name: &MailboxName| self.naming.folder_name(name.0.last().map_or("", |s| s));
        for name in &d.removed {
            let Some(parent) = parent_of(name) else {
                continue;
            };
            if let Some(ino) = self.inodes.known(&Node::Folder(Arc::new(name.clone()))) {
                self.delete(parent, ino, &last(name));
            } else {
                self.inval_entry(parent, &last(name));
            }
            parents.push(parent);
        }
        for name in &d.added {
            let Some(parent) = parent_of(name) else {
                continue;
            };
            self.inval_entry(parent, &last(name));
            parents.push(parent);
        }
        for name in &d.changed {
            if let Some(ino) = self.inodes.known(&Node::Folder(Arc::new(name.clone()))) {
                self.inval_inode(ino, 0);
            }
        }
        parents.sort_unstable();
        parents.dedup();
        for p in parents {
            self.inval_inode(p, 0);
        }
    }

    fn delete(&self, parent: u64, child: u64, name: &OsStr) {
        let r = self.notifier.delete(parent, child, name);
        self.count("delete", r);
    }

    fn inval_entry(&self, parent: u64, name: &OsStr) {
        let r = self.notifier.inval_entry(parent, name);
        self.count("inval_entry", r);
    }

    /// `offset` -1: attributes only; 0: attributes and all cached data (a directory's
    /// readdir cache).
    fn inval_inode(&self, ino: u64, offset: i64) {
        let r = self.notifier.inval_inode(ino, offset);
        self.count("inval_inode", r);
    }

    fn count(&self, what: &str, r: std::io::Result<()>) {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(()) => {}
            // Not (or no longer) cached by the kernel: nothing to invalidate.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                debug!("notify {what}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MailFlags;
    use crate::store::MailStore;
    use crate::store::memory::MemoryStore;
    use parking_lot::Mutex;

    /// What the kernel was told.
    #[derive(Debug, Default, Clone)]
    struct Told(Arc<Mutex<Vec<String>>>);

    impl KernelCaches for Told {
        fn delete(&self, parent: u64, child: u64, name: &OsStr) -> std::io::Result<()> {
            let name = name.to_string_lossy();
            self.0
                .lock()
                .push(format!("delete {parent} {child} {name}"));
            Ok(())
        }
        fn inval_entry(&self, parent: u64, name: &OsStr) -> std::io::Result<()> {
            let name = name.to_string_lossy();
            self.0.lock().push(format!("inval_entry {parent} {name}"));
            Ok(())
        }
        fn inval_inode(&self, ino: u64, offset: i64) -> std::io::Result<()> {
            self.0.lock().push(format!("inval_inode {ino} {offset}"));
            Ok(())
        }
    }

    /// A delivery, a flag change and an expunge in one change become exactly: the new
    /// name's negative entry dropped, the changed message's attributes dropped (not its
    /// pages), the expunged one deleted, the directory's listing dropped; messages the
    /// kernel never looked up are not named; a mailbox created and one deleted are told
    /// to their parent.
    #[test]
    fn each_change_becomes_the_invalidations_it_needs() {
        each_change_becomes(|view| Baseline::View(view.clone()));
    }

    /// The same from the digest of the old view (what the watcher keeps of a small
    /// mailbox in the eml layout): the same invalidations, by the same names.
    #[test]
    fn a_digest_baseline_gives_the_same_invalidations() {
        each_change_becomes(|view| {
            let digest = Baseline::of(view, true);
            assert!(digest.view().is_none(), "a digest");
            digest
        });
    }

    fn each_change_becomes(baseline: fn(&Arc<MailboxView>) -> Baseline) {
        let store = MemoryStore::default();
        store.create("INBOX", 7);
        for _ in 0..3 {
            store.save("INBOX", b"x", MailFlags::default());
        }
        store.create("Old", 8);
        let inbox = crate::store::MailboxName::parse("INBOX");
        let before = store.view(&inbox).unwrap();
        let list_before = store
            .mailboxes(&crate::store::MailboxName(Vec::new()))
            .unwrap();
        let inodes = Arc::new(InodeTable::default());
        let node = |uid| Node::Message {
            mailbox: Arc::new(inbox.clone()),
            uid_validity: 7,
            key: MessageKey::Uid(uid),
        };
        let dir = inodes.remember(&Node::Folder(Arc::new(inbox.clone())));
        let (one, two) = (inodes.remember(&node(1)), inodes.remember(&node(2)));
        let old_dir = inodes.remember(&Node::Folder(Arc::new(crate::store::MailboxName::parse(
            "Old",
        ))));
        store.set_flags("INBOX", 1, MailFlags::SEEN);
        store.expunge("INBOX", 2);
        store.expunge("INBOX", 3); // never looked up: nothing to name
        store.save("INBOX", b"y", MailFlags::default());
        store.delete("Old");
        store.create("New", 9);
        let after = store.view(&inbox).unwrap();
        let list_after = store
            .mailboxes(&crate::store::MailboxName(Vec::new()))
            .unwrap();
        let told = Told::default();
        let inv = Invalidator {
            notifier: told.clone(),
            inodes,
            naming: Naming::default(),
            stats: Arc::new(NotifyStats::default()),
        };
        inv.apply(Change::Mailbox {
            name: inbox.clone(),
            old: baseline(&before),
            new: Some(after),
        });
        inv.apply(Change::Scope {
            scope: crate::store::MailboxName(Vec::new()),
            old: list_before,
            new: list_after,
        });
        assert_eq!(
            *told.0.lock(),
            vec![
                format!("delete {dir} {two} 2.eml"),
                format!("inval_entry {dir} 4.eml"),
                format!("inval_inode {one} -1"),
                format!("inval_inode {dir} 0"),
                format!("delete {ROOT_INO} {old_dir} Old"),
                format!("inval_entry {ROOT_INO} New"),
                format!("inval_inode {ROOT_INO} 0"),
            ]
        );
        assert_eq!(inv.stats.sent.load(Ordering::Relaxed), 7);
    }
}
