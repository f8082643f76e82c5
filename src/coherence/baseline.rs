//! What is kept of a mailbox view the kernel may have been shown, to diff the next view
//! against: the view itself, or for a small view its digest.
//!
//! Why: a tree of ten thousand users keeps a baseline for every mailbox directory the
//! kernel holds, long after the store's caches let the views go. A whole view of three
//! messages costs about 1.35 KB (each message's locator, the view's name and GUID, a chunk
//! of 136-byte records), where a diff needs only the mailbox's presented fields and each
//! message's key and presented fields, and of the latter only whether they differ.
//!
//! Invariants:
//! - A digest diffs like the view it was made from ([`Baseline::diff`] equals
//!   [`ViewDiff::between`]): keys (added, removed) and mailbox fields exactly; a message's
//!   presented fields as a 64-bit fingerprint (SipHash-1-3 under keys drawn at random once
//!   per process, so the store's contents cannot arrange a collision). A collision, with
//!   probability 2^-64 per changed message, would leave that message's attributes in the
//!   kernel until the attribute timeout; never bytes (a UID's bytes never change), never a
//!   message added or removed.
//! - Only views of at most [`DIGEST_MAX`] messages are digested. A larger view is kept
//!   whole: its chunks are shared with the store's later views, and a diff skips the shared
//!   ones, so a re-check after one delivery costs a chunk; a digest would hash every message
//!   at every re-check.
//! - A digest knows which view it was made from by the view's
//!   [`ViewId`](crate::store::ViewId) (unique to one view value: a clone gets its own),
//!   keeping nothing of the view alive.
//! - A digest gives no message names: it is for places that name messages by key (the eml
//!   layout) or name none (directory times).

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, OnceLock};

use super::diff::ViewDiff;
use crate::store::messages::uid_of;
use crate::store::{FileOwner, MailboxView, MessageKey, MessageMeta};

/// Views of at most this many messages are kept as digests (one chunk of the store's).
pub const DIGEST_MAX: usize = crate::store::messages::CHUNK;

/// A view as kept for diffing.
#[derive(Debug, Clone)]
pub enum Baseline {
    /// The whole view.
    View(Arc<MailboxView>),
    /// A small view's digest.
    Digest(Arc<ViewDigest>),
}

/// A small view's presented content: see the module documentation.
#[derive(Debug)]
pub struct ViewDigest {
    /// The [`ViewId`](crate::store::ViewId) of the view this digest was made from.
    of: u64,
    uid_validity: u32,
    uid_next: u32,
    /// Fingerprint of the mailbox GUID.
    guid: u64,
    owner: FileOwner,
    mtime: i64,
    /// UID messages: UID and fingerprint, in UID order.
    messages: Box<[(u32, u64)]>,
    /// Messages without a UID: base name and fingerprint, in key order.
    pending: Box<[(Arc<[u8]>, u64)]>,
}

impl Baseline {
    /// `view` kept whole, or as a digest when `digest` allows it and the view is small.
    pub fn of(view: &Arc<MailboxView>, digest: bool) -> Baseline {
        if digest && view.messages.len() + view.pending.len() <= DIGEST_MAX {
            Baseline::Digest(Arc::new(ViewDigest::of(view)))
        } else {
            Baseline::View(view.clone())
        }
    }

    /// True if this was made from `view` itself (not merely an equal one).
    pub fn is_of(&self, view: &Arc<MailboxView>) -> bool {
        match self {
            Baseline::View(v) => Arc::ptr_eq(v, view),
            Baseline::Digest(d) => d.of == view.id.get(),
        }
    }

    /// The whole view, when kept.
    pub fn view(&self) -> Option<&Arc<MailboxView>> {
        match self {
            Baseline::View(v) => Some(v),
            Baseline::Digest(_) => None,
        }
    }

    /// UIDVALIDITY of the view.
    pub fn uid_validity(&self) -> u32 {
        match self {
            Baseline::View(v) => v.uid_validity,
            Baseline::Digest(d) => d.uid_validity,
        }
    }

    /// The keys of every message, UID ones first (as [`MailboxView::all`]).
    pub fn keys(&self) -> Vec<MessageKey> {
        match self {
            Baseline::View(v) => v.all().map(|m| m.key.clone()).collect(),
            Baseline::Digest(d) => d.keys().collect(),
        }
    }

    /// True if the view has a message with `key`.
    #[cfg(test)]
    pub fn has(&self, key: &MessageKey) -> bool {
        match (self, key) {
            (Baseline::View(v), _) => v.get(key).is_some(),
            (Baseline::Digest(d), MessageKey::Uid(uid)) => {
                d.messages.binary_search_by_key(uid, |e| e.0).is_ok()
            }
            (Baseline::Digest(d), MessageKey::Pending(base)) => {
                d.pending.iter().any(|(b, _)| b == base)
            }
        }
    }

    /// What differs in `new` from this view.
    pub fn diff(&self, new: &MailboxView) -> ViewDiff {
        match self {
            Baseline::View(old) => ViewDiff::between(old, new),
            Baseline::Digest(old) => old.diff(new),
        }
    }
}

impl ViewDigest {
    fn of(view: &Arc<MailboxView>) -> ViewDigest {
        ViewDigest {
            of: view.id.get(),
            uid_validity: view.uid_validity,
            uid_next: view.uid_next,
            guid: fingerprint_of(&view.guid),
            owner: view.owner,
            mtime: view.mtime,
            messages: view
                .messages
                .iter()
                .map(|m| (uid_of(&m), fingerprint(view, &m)))
                .collect(),
            pending: view
                .pending
                .iter()
                .filter_map(|m| match &m.key {
                    MessageKey::Pending(base) => Some((base.clone(), fingerprint(view, m))),
                    MessageKey::Uid(_) => None,
                })
                .collect(),
        }
    }

    fn keys(&self) -> impl Iterator<Item = MessageKey> + '_ {
        self.messages
            .iter()
            .map(|&(uid, _)| MessageKey::Uid(uid))
            .chain(
                self.pending
                    .iter()
                    .map(|(b, _)| MessageKey::Pending(b.clone())),
            )
    }

    /// As [`ViewDiff::between`] the view this digest was made from and `new`.
    fn diff(&self, new: &MailboxView) -> ViewDiff {
        let mailbox_changed = self.uid_validity != new.uid_validity
            || self.uid_next != new.uid_next
            || self.guid != fingerprint_of(&new.guid)
            || self.owner != new.owner
            || self.mtime != new.mtime;
        if self.uid_validity != new.uid_validity {
            return ViewDiff::renewed(self.keys().collect(), new);
        }
        let mut d = ViewDiff {
            mailbox_changed,
            ..ViewDiff::default()
        };
        let old = self.messages.iter().map(|&(uid, print)| (uid, print));
        let now = new.messages.iter().map(|m| (uid_of(&m), m));
        merge(old, now, new, &mut d, MessageKey::Uid);
        let old = self.pending.iter().map(|(b, print)| (b.clone(), *print));
        let now = new.pending.iter().filter_map(|m| match &m.key {
            MessageKey::Pending(b) => Some((b.clone(), m)),
            MessageKey::Uid(_) => None,
        });
        merge(old, now, new, &mut d, MessageKey::Pending);
        d
    }
}

/// Walks the digest's (key, fingerprint) list and the view's (key, message) list, both in
/// key order, in step.
fn merge<K: Ord + Clone, M: std::borrow::Borrow<MessageMeta>>(
    old: impl Iterator<Item = (K, u64)>,
    new: impl Iterator<Item = (K, M)>,
    view: &MailboxView,
    d: &mut ViewDiff,
    key: impl Fn(K) -> MessageKey,
) {
    let (mut old, mut new) = (old.peekable(), new.peekable());
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => return,
            (Some(_), None) => d.removed.extend(old.by_ref().map(|(k, _)| key(k))),
            (None, Some(_)) => d.added.extend(new.by_ref().map(|(k, _)| key(k))),
            (Some((a, print)), Some((b, m))) => match a.cmp(b) {
                std::cmp::Ordering::Less => {
                    d.removed.push(key(a.clone()));
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    d.added.push(key(b.clone()));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if *print != fingerprint(view, m.borrow()) {
                        d.changed.push(key(b.clone()));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}

/// The process's fingerprint keys, drawn at random once.
fn keys() -> &'static RandomState {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new)
}

fn fingerprint_of(value: &impl Hash) -> u64 {
    keys().hash_one(value)
}

/// A message's presented fields, as `diff::same_presentation` compares them: equal
/// presentations give equal fingerprints (keywords by name, in the view's keyword order,
/// as the flags string shows them).
fn fingerprint(view: &MailboxView, m: &MessageMeta) -> u64 {
    let mut h = keys().build_hasher();
    (m.size, m.virtual_size, m.received, m.saved, m.flags).hash(&mut h);
    (&m.guid, m.owner, m.problem.as_deref()).hash(&mut h);
    for i in m.keywords.iter() {
        if let Some(name) = view.keyword_names.get(i) {
            name.hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MailFlags;
    use crate::store::memory::MemoryStore;
    use crate::store::{MailStore, MailboxName};

    /// The digest of a view diffs exactly as the view does, through deliveries, flag and
    /// keyword changes, expunges, mailbox changes and a new UIDVALIDITY.
    #[test]
    fn a_digest_diffs_as_its_view() {
        let store = MemoryStore::default();
        store.create("INBOX", 7);
        let inbox = MailboxName::parse("INBOX");
        let view = || store.view(&inbox).expect("view");
        let mut uids = Vec::new();
        for i in 0..5u8 {
            uids.push(store.save(
                "INBOX",
                &[b'x'; 3][..=usize::from(i % 3)],
                MailFlags::default(),
            ));
        }
        let steps: Vec<Box<dyn Fn()>> = vec![
            Box::new(|| {}),
            Box::new(|| store.set_flags("INBOX", uids[1], MailFlags::SEEN)),
            Box::new(|| store.set_keywords("INBOX", uids[2], &["$Junk"])),
            Box::new(|| {
                store.save("INBOX", b"new", MailFlags::FLAGGED);
            }),
            Box::new(|| store.expunge("INBOX", uids[0])),
            Box::new(|| {
                store.expunge("INBOX", uids[3]);
                store.set_flags("INBOX", uids[4], MailFlags::ANSWERED);
                store.save("INBOX", b"more", MailFlags::default());
            }),
            Box::new(|| store.create("INBOX", 8)),
        ];
        let mut old = view();
        for (i, step) in steps.iter().enumerate() {
            let digest = Baseline::of(&old, true);
            assert!(matches!(digest, Baseline::Digest(_)));
            assert!(digest.is_of(&old));
            step();
            let new = view();
            let whole = ViewDiff::between(&old, &new);
            assert_eq!(digest.diff(&new), whole, "step {i}");
            assert_eq!(i == 0, whole.is_empty(), "step {i} changes something");
            let copy = Arc::new((*new).clone());
            assert!(
                !Baseline::of(&new, true).is_of(&copy),
                "identity, not equality"
            );
            assert!(Baseline::of(&new, true).diff(&copy).is_empty());
            old = new;
        }
    }

    /// Messages without a UID yet (pending Maildir files) are diffed by base name.
    #[test]
    fn a_digest_diffs_pending_messages_by_name() {
        let store = MemoryStore::default();
        store.create("INBOX", 7);
        store.save("INBOX", b"x", MailFlags::default());
        let base = store.view(&MailboxName::parse("INBOX")).expect("view");
        let template = base.messages.iter().next().expect("a message").clone();
        let with = |names: &[(&str, MailFlags)]| {
            let mut v = (*base).clone();
            v.pending = names
                .iter()
                .map(|&(n, flags)| MessageMeta {
                    key: MessageKey::Pending(Arc::from(n.as_bytes())),
                    flags,
                    ..template.clone()
                })
                .collect();
            Arc::new(v)
        };
        let none = MailFlags::default();
        let old = with(&[("a", none), ("b", none), ("c", none)]);
        let new = with(&[("b", MailFlags::SEEN), ("c", none), ("d", none)]);
        let d = Baseline::of(&old, true).diff(&new);
        assert_eq!(d, ViewDiff::between(&old, &new));
        assert_eq!(d.removed, vec![MessageKey::Pending(Arc::from(&b"a"[..]))]);
        assert_eq!(d.changed, vec![MessageKey::Pending(Arc::from(&b"b"[..]))]);
        assert_eq!(d.added, vec![MessageKey::Pending(Arc::from(&b"d"[..]))]);
        let keys = Baseline::of(&old, true).keys();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys, Baseline::of(&old, false).keys());
    }

    /// A digest holds none of its view's messages: the view is freed once its other
    /// holders let go, where a whole baseline keeps it; large views are kept whole.
    #[test]
    fn a_digest_lets_its_view_go() {
        let store = MemoryStore::default();
        store.create("INBOX", 7);
        store.save("INBOX", b"x", MailFlags::default());
        let view = store.view(&MailboxName::parse("INBOX")).expect("view");
        let digest = Baseline::of(&view, true);
        let whole = Baseline::of(&view, false);
        assert!(matches!(whole, Baseline::View(_)));
        assert_eq!(
            Arc::strong_count(&view),
            3,
            "the store's, the test's, the whole one"
        );
        drop(whole);
        assert_eq!(
            Arc::strong_count(&view),
            2,
            "the digest holds no strong reference"
        );
        assert!(digest.has(&MessageKey::Uid(1)));
        assert!(!digest.has(&MessageKey::Uid(2)));

        let mut big = (*view).clone();
        let one = big.messages.iter().next().expect("a message").clone();
        big.messages =
            crate::store::messages::Messages::from_sorted((1..=DIGEST_MAX as u32 + 1).map(|uid| {
                MessageMeta {
                    key: MessageKey::Uid(uid),
                    ..one.clone()
                }
            }));
        let big = Arc::new(big);
        assert!(matches!(Baseline::of(&big, true), Baseline::View(_)));
    }
}
