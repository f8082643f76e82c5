//! What changed between two snapshots: two views of one mailbox, or two mailbox lists of one
//! scope. Pure functions over immutable values; the FUSE layer turns the result into kernel
//! invalidations.

use std::cmp::Ordering;

use crate::store::messages;
use crate::store::{MailboxEntry, MailboxName, MailboxView, MessageKey, MessageMeta};

/// The difference between two views of one mailbox.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ViewDiff {
    /// UIDVALIDITY changed: every old message is gone and every new one is new (new inode
    /// numbers), whatever their UIDs.
    pub uid_validity_changed: bool,
    /// Messages only in the new view.
    pub added: Vec<MessageKey>,
    /// Messages only in the old view.
    pub removed: Vec<MessageKey>,
    /// Messages in both whose presented metadata differs (flags, keywords, dates, size,
    /// readability).
    pub changed: Vec<MessageKey>,
    /// The mailbox's own attributes differ (mtime, owner, UIDNEXT, GUID, ...).
    pub mailbox_changed: bool,
}

impl ViewDiff {
    /// Compares `old` with `new` (both sorted by key, as views are).
    pub fn between(old: &MailboxView, new: &MailboxView) -> ViewDiff {
        let mailbox_changed = old.uid_validity != new.uid_validity
            || old.uid_next != new.uid_next
            || old.guid != new.guid
            || old.owner != new.owner
            || old.mtime != new.mtime;
        if old.uid_validity != new.uid_validity {
            return ViewDiff::renewed(old.all().map(|m| m.key.clone()).collect(), new);
        }
        let mut d = ViewDiff {
            mailbox_changed,
            ..ViewDiff::default()
        };
        // Chunks the two views share are the same messages: skipped unseen, so a diff after
        // one delivery into a large mailbox costs a chunk, not the mailbox.
        messages::merge_chunked(&old.messages, &new.messages, |a, b| match (a, b) {
            (Some(a), None) => d.removed.push(a.key.clone()),
            (None, Some(b)) => d.added.push(b.key.clone()),
            (Some(a), Some(b)) => {
                if !same_presentation(old, &a, new, &b) {
                    d.changed.push(b.key.clone());
                }
            }
            (None, None) => {}
        });
        merge(&old.pending, &new.pending, &mut d, |a, b| {
            same_presentation(old, a, new, b)
        });
        d
    }

    /// A new UIDVALIDITY: every old message (`removed`) is gone and every message of `new`
    /// is new.
    pub(super) fn renewed(removed: Vec<MessageKey>, new: &MailboxView) -> ViewDiff {
        ViewDiff {
            uid_validity_changed: true,
            added: new.all().map(|m| m.key.clone()).collect(),
            removed,
            changed: Vec::new(),
            mailbox_changed: true,
        }
    }

    /// True when nothing differs.
    pub fn is_empty(&self) -> bool {
        !self.uid_validity_changed
            && !self.mailbox_changed
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
    }
}

/// Walks two key-sorted lists in step.
fn merge(
    old: &[MessageMeta],
    new: &[MessageMeta],
    d: &mut ViewDiff,
    same: impl Fn(&MessageMeta, &MessageMeta) -> bool,
) {
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let ord = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.key.cmp(&b.key),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                d.removed.push(old[i].key.clone());
                i += 1;
            }
            Ordering::Greater => {
                d.added.push(new[j].key.clone());
                j += 1;
            }
            Ordering::Equal => {
                if !same(&old[i], &new[j]) {
                    d.changed.push(new[j].key.clone());
                }
                i += 1;
                j += 1;
            }
        }
    }
}

/// True if a message would be presented identically (attributes and xattrs). Keywords are
/// compared by name, since a keyword table can grow between views.
fn same_presentation(ov: &MailboxView, a: &MessageMeta, nv: &MailboxView, b: &MessageMeta) -> bool {
    a.size == b.size
        && a.virtual_size == b.virtual_size
        && a.received == b.received
        && a.saved == b.saved
        && a.flags == b.flags
        && a.guid == b.guid
        && a.owner == b.owner
        && a.problem == b.problem
        && (a.keywords == b.keywords && ov.keyword_names == nv.keyword_names
            || ov.flags_string(a) == nv.flags_string(b))
}

/// The difference between two mailbox lists of one scope.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListDiff {
    /// Names only in the new list.
    pub added: Vec<MailboxName>,
    /// Names only in the old list.
    pub removed: Vec<MailboxName>,
    /// Names in both whose entry differs (selectable, owner, mtime).
    pub changed: Vec<MailboxName>,
}

impl ListDiff {
    /// Compares two name-sorted lists.
    pub fn between(old: &[MailboxEntry], new: &[MailboxEntry]) -> ListDiff {
        let mut d = ListDiff::default();
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let ord = match (old.get(i), new.get(j)) {
                (Some(a), Some(b)) => a.name.cmp(&b.name),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match ord {
                Ordering::Less => {
                    d.removed.push(old[i].name.clone());
                    i += 1;
                }
                Ordering::Greater => {
                    d.added.push(new[j].name.clone());
                    j += 1;
                }
                Ordering::Equal => {
                    if old[i] != new[j] {
                        d.changed.push(new[j].name.clone());
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::format::MailFlags;
    use crate::store::FileOwner;

    fn meta(uid: u32, flags: MailFlags, keywords: u32) -> MessageMeta {
        let keywords = crate::store::KeywordSet::from_mask(keywords);
        MessageMeta {
            key: MessageKey::Uid(uid),
            size: 10,
            virtual_size: 11,
            received: 1,
            saved: 2,
            flags,
            keywords,
            guid: "g".into(),
            owner: FileOwner::default(),
            locator: crate::store::Locator::Sdbox,
            problem: None,
        }
    }

    fn view(uv: u32, messages: Vec<MessageMeta>, keywords: &[&str]) -> MailboxView {
        MailboxView {
            id: crate::store::ViewId::new(),
            name: MailboxName::parse("INBOX"),
            uid_validity: uv,
            uid_next: messages.len() as u32 + 1,
            guid: None,
            messages: crate::store::Messages::from_sorted(messages),
            pending: Vec::new(),
            keyword_names: Arc::new(keywords.iter().map(|s| s.to_string()).collect()),
            owner: FileOwner::default(),
            mtime: 0,
        }
    }

    #[test]
    fn finds_added_removed_and_changed_messages() {
        let e = MailFlags::default();
        let old = view(7, vec![meta(1, e, 0), meta(2, e, 0), meta(3, e, 0)], &["a"]);
        let new = view(
            7,
            vec![meta(1, e, 0), meta(3, MailFlags::SEEN, 0), meta(4, e, 0)],
            &["a"],
        );
        let d = ViewDiff::between(&old, &new);
        assert_eq!(d.added, [MessageKey::Uid(4)]);
        assert_eq!(d.removed, [MessageKey::Uid(2)]);
        assert_eq!(d.changed, [MessageKey::Uid(3)]);
        assert!(!d.uid_validity_changed);
        assert!(ViewDiff::between(&new, &new).is_empty());
    }

    #[test]
    fn keywords_compare_by_name() {
        let e = MailFlags::default();
        // Same keyword "b" at another index: unchanged. A new keyword on a message: changed.
        let old = view(1, vec![meta(1, e, 0b10), meta(2, e, 0)], &["a", "b"]);
        let new = view(1, vec![meta(1, e, 0b01), meta(2, e, 0b10)], &["b", "c"]);
        let d = ViewDiff::between(&old, &new);
        assert_eq!(d.changed, [MessageKey::Uid(2)]);
    }

    #[test]
    fn new_uidvalidity_replaces_everything() {
        let e = MailFlags::default();
        let d = ViewDiff::between(
            &view(1, vec![meta(1, e, 0)], &[]),
            &view(2, vec![meta(1, e, 0)], &[]),
        );
        assert!(d.uid_validity_changed && d.mailbox_changed);
        assert_eq!((d.added.len(), d.removed.len()), (1, 1));
    }

    #[test]
    fn lists_diff_by_name() {
        let entry = |n: &str, sel: bool| MailboxEntry {
            name: MailboxName::parse(n),
            selectable: sel,
            owner: FileOwner::default(),
            mtime: 0,
        };
        let old = [entry("A", true), entry("B", true), entry("C", true)];
        let new = [entry("A", true), entry("C", false), entry("D", true)];
        let d = ListDiff::between(&old, &new);
        assert_eq!(d.added, [MailboxName::parse("D")]);
        assert_eq!(d.removed, [MailboxName::parse("B")]);
        assert_eq!(d.changed, [MailboxName::parse("C")]);
    }
}
