//! Honest mailbox directory times: a mailbox directory's mtime (and ctime) moves whenever
//! its listing or any message's flags change, for every backend.
//!
//! Why: what a store's own directory shows is not enough. Dovecot delivers into a dbox
//! mailbox without touching `mailboxes/<name>/` (sdbox adds `u.N` to `dbox-Mails/`, mdbox
//! appends to `storage/` and to the index log), and a flag change of a dbox message is an
//! index log record only; an IMAP store has no directory at all. Tools that skip
//! directories whose mtime did not move (`notmuch new`, `make`, backup tools) then miss new
//! mail. So the presented time is `max(store's mtime, changed)`, where `changed` is when
//! mailfs noticed the mailbox's presented content (messages, flags, keywords, dates,
//! UIDVALIDITY) differ from the view it last presented.
//!
//! Invariants:
//! - Monotonic within a mount: `changed` only grows (each change is at least 1 ns after the
//!   previous one), and the store's time is folded in with `max`.
//! - Stable: a view equal in presented content to the last one (rebuilt, or evicted and
//!   re-read) never moves the time, so an unchanged mount backs up as a no-op.
//! - Consistent: a mailbox whose content mailfs never presented has no `changed`, and its
//!   time is the store's; the first view presented is the baseline and moves nothing.
//! - Small per mailbox: the mailboxes seen are kept by a 64-bit hash of their name (under
//!   keys drawn at random per mount), not by name, as a tree of ten thousand users sees
//!   ten thousand mailboxes. Two names with one hash (probability about n^2 / 2^65 for n
//!   mailboxes) would share one clock: spurious moves, never a missed one.
//! - Across a remount the clock starts again from the store's times (nothing is persisted).
//! - Bounded: baselines for at most [`BASELINES`] mailboxes are kept (a small view as its
//!   digest: `coherence::baseline`); a mailbox whose baseline was dropped counts as changed
//!   when next seen (a spurious move is a rescan for a client; a missed one would be lost
//!   mail).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;

use crate::coherence::baseline::Baseline;
use crate::store::{MailboxName, MailboxView};

/// Mailboxes whose last presented view is kept to compare the next one with.
const BASELINES: NonZeroUsize = NonZeroUsize::new(1024).expect("non-zero");

/// The change clock of every mailbox presented.
#[derive(Debug)]
pub(super) struct DirTimes {
    /// The view last presented per mailbox (most recently used kept).
    baselines: Mutex<LruCache<MailboxName, Baseline>>,
    /// When each mailbox's presented content last changed, if it did during this mount;
    /// a mailbox seen at all has an entry (`None` until its first change). Keyed by
    /// [`DirTimes::key`].
    changed: Mutex<HashMap<u64, Option<SystemTime>>>,
    /// The keys of the name hash.
    keys: RandomState,
}

impl Default for DirTimes {
    fn default() -> Self {
        DirTimes {
            baselines: Mutex::new(LruCache::new(BASELINES)),
            changed: Mutex::new(HashMap::new()),
            keys: RandomState::new(),
        }
    }
}

/// True when `new` presents something `old` did not: a message added, removed, or with
/// other flags, keywords, dates or size; a new UIDVALIDITY.
fn presented_change(old: &Baseline, new: &MailboxView) -> bool {
    let d = old.diff(new);
    d.uid_validity_changed || !d.added.is_empty() || !d.removed.is_empty() || !d.changed.is_empty()
}

impl DirTimes {
    /// What `changed` knows a mailbox by.
    fn key(&self, mailbox: &MailboxName) -> u64 {
        self.keys.hash_one(mailbox)
    }

    /// True once a view of `mailbox` was presented (its time is then kept current by
    /// [`DirTimes::observe`]).
    pub(super) fn seen(&self, mailbox: &MailboxName) -> bool {
        self.changed.lock().contains_key(&self.key(mailbox))
    }

    /// When `mailbox`'s presented content last changed during this mount.
    pub(super) fn changed(&self, mailbox: &MailboxName) -> Option<SystemTime> {
        self.changed
            .lock()
            .get(&self.key(mailbox))
            .copied()
            .flatten()
    }

    /// Records `view` as presented now for `name` (the presented name: a multi-user
    /// store's views carry the user's own names, which two users share): moves the
    /// mailbox's change time if its content differs from the previous view presented.
    /// Locks are leaves: the comparison runs with neither held.
    pub(super) fn observe(&self, name: &MailboxName, view: &Arc<MailboxView>) {
        let previous = self.baselines.lock().get(name).cloned();
        let moved = match &previous {
            // The view presented last (every request's common case): nothing to do.
            Some(old) if old.is_of(view) => return,
            Some(old) => presented_change(old, view),
            // Seen before but its baseline was dropped: assume a change (see the module).
            None => self.seen(name),
        };
        // Made before the lock is taken: a digest hashes every message of the view.
        let kept = Baseline::of(view, true);
        self.baselines.lock().put(name.clone(), kept);
        let mut changed = self.changed.lock();
        let slot = changed.entry(self.key(name)).or_insert(None);
        if moved {
            let now = SystemTime::now();
            *slot = Some(match *slot {
                Some(t) if t >= now => t + Duration::from_nanos(1),
                _ => now,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MailFlags;
    use crate::store::MailStore;
    use crate::store::memory::MemoryStore;

    #[test]
    fn moves_on_a_presented_change_only() {
        let store = MemoryStore::default();
        store.create("INBOX", 7);
        let uid = store.save("INBOX", b"Subject: a\n\nA\n", MailFlags::default());
        let name = MailboxName::parse("INBOX");
        let view = || store.view(&name).expect("view");
        let times = DirTimes::default();
        assert!(!times.seen(&name));
        times.observe(&name, &view());
        assert!(times.seen(&name));
        assert_eq!(times.changed(&name), None, "the first view is the baseline");
        // The same content again (a rebuilt view): no move.
        let same = Arc::new((*view()).clone());
        times.observe(&name, &same);
        assert_eq!(times.changed(&name), None);
        // A flag change moves it; a delivery moves it further.
        store.set_flags("INBOX", uid, MailFlags::SEEN);
        times.observe(&name, &view());
        let t1 = times.changed(&name).expect("a flag change moves the time");
        store.save("INBOX", b"Subject: b\n\nB\n", MailFlags::default());
        times.observe(&name, &view());
        let t2 = times.changed(&name).expect("a delivery moves the time");
        assert!(t2 > t1, "monotonic: {t1:?} then {t2:?}");
        // Unchanged again: stable.
        times.observe(&name, &Arc::new((*view()).clone()));
        assert_eq!(times.changed(&name), Some(t2));
        // An expunge moves it.
        store.expunge("INBOX", uid);
        times.observe(&name, &view());
        assert!(times.changed(&name) > Some(t2), "an expunge moves the time");

        // Another mailbox has a clock of its own.
        store.create("Other", 8);
        let other = MailboxName::parse("Other");
        assert!(!times.seen(&other));
        let t3 = times.changed(&name);
        times.observe(&other, &store.view(&other).expect("view"));
        store.save("Other", b"Subject: c\n\nC\n", MailFlags::default());
        times.observe(&other, &store.view(&other).expect("view"));
        assert!(times.seen(&other) && times.changed(&other) > t3);
        assert_eq!(times.changed(&name), t3, "INBOX's clock did not move");
    }
}
