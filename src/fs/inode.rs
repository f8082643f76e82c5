//! Inode numbers and the kernel's lookup counts.
//!
//! An inode number is a hash of what the node *is*: a folder's name, or a message's
//! `(mailbox, uid_validity, uid)` (or pending base name); a message's keeps UID order
//! within its mailbox ([`UID_BITS`]). So the same message keeps its
//! number across lookups, forgets and remounts, and a new UIDVALIDITY gives every message a
//! new one. Collisions of the 64-bit hash are detected and resolved by probing (logged).
//!
//! Lookup-count contract (fuser `INodeNo` docs): every successful `lookup` reply and every
//! `readdirplus` entry other than `.`/`..` adds one; `forget(n)` removes n. A node leaves the
//! table when its count reaches zero. The root is permanent.

use std::collections::HashMap;
use std::sync::Arc;

use log::{error, warn};
use parking_lot::Mutex;

use crate::store::{MailboxName, MessageKey};

mod counts;

use self::counts::Counts;

/// The root directory's inode number (FUSE_ROOT_ID).
pub const ROOT_INO: u64 = 1;

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// A directory: the root (empty name) or a mailbox hierarchy level.
    Folder(Arc<MailboxName>),
    /// A message file.
    Message {
        /// Its mailbox.
        mailbox: Arc<MailboxName>,
        /// The mailbox's UIDVALIDITY when the node was made.
        uid_validity: u32,
        /// UID or pending base.
        key: MessageKey,
    },
    /// A file being written into a mailbox (`cp` into the mount), by its staging id:
    /// saved by Dovecot when closed (see `staging`).
    Staged(u64),
}

impl Node {
    /// The root folder.
    pub fn root() -> Node {
        Node::Folder(Arc::new(MailboxName(Vec::new())))
    }

    /// A message whose natural number is its mailbox prefix and UID ([`UID_BITS`]).
    fn is_ordered_message(&self) -> bool {
        matches!(self, Node::Message { key: MessageKey::Uid(uid), .. } if *uid < 1 << UID_BITS)
    }

    /// The natural inode number of this node (before collision probing).
    fn hash(&self) -> u64 {
        let mut h = Fnv64::new();
        match self {
            Node::Folder(name) => {
                if name.0.is_empty() {
                    return ROOT_INO;
                }
                h.write(b"F");
                for level in &name.0 {
                    h.write(level.as_bytes());
                    h.write(&[0]);
                }
            }
            Node::Message {
                mailbox,
                uid_validity,
                key,
            } => {
                h.write(b"M");
                for level in &mailbox.0 {
                    h.write(level.as_bytes());
                    h.write(&[0]);
                }
                h.write(&uid_validity.to_le_bytes());
                match key {
                    MessageKey::Uid(uid) if *uid < 1 << UID_BITS => {
                        let v = (h.finish() >> UID_BITS << UID_BITS) | u64::from(*uid);
                        return if v <= ROOT_INO { v + 2 } else { v };
                    }
                    MessageKey::Uid(uid) => h.write(&uid.to_le_bytes()),
                    MessageKey::Pending(base) => {
                        h.write(b"P");
                        h.write(base);
                    }
                }
            }
            Node::Staged(id) => {
                h.write(b"S");
                h.write(&id.to_le_bytes());
            }
        }
        let v = h.finish();
        // 0 is invalid and 1 is the root.
        if v <= ROOT_INO { v + 2 } else { v }
    }
}

/// Message inode numbers keep UID order within a mailbox: the top 40 bits name the
/// mailbox (a hash of its name and UIDVALIDITY), the low 24 bits are the UID. Tools that
/// walk a big directory in inode order (gnulib's fts, under GNU `find`, `grep -r`, `du`,
/// `chmod -R`, sorts the entries of a directory with more than 10,000 of them by inode
/// number) then read the messages in UID order, which is the order the IMAP backend's
/// read-ahead recognises and the order of the store's own files (mdbox m.* files,
/// Maildir files by creation). UIDs from 2^24 on are hashed like other nodes. Two
/// mailboxes share a 40-bit prefix with probability about n²/2^41 for n mailboxes (0.5 %
/// for 100,000); their equal UIDs then collide and are probed apart (logged).
const UID_BITS: u32 = 24;

/// FNV-1a, then a final avalanche (splitmix64) so nearby keys spread over all 64 bits.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A node other than a message with a small UID at its natural number: folders, staged
/// files, pending messages, and messages that were probed away from a collision.
#[derive(Debug)]
struct Slot {
    node: Node,
    lookups: u64,
}

/// Messages held at their natural numbers `prefix | uid` ([`UID_BITS`]), by mailbox: the
/// prefix names a `(mailbox, UIDVALIDITY)` entry, whose [`Counts`] hold the lookup count
/// of each held UID. No entry per message: the kernel holds an inode for every message a
/// `readdirplus` listed, so what a held message costs is per message of every listed
/// mailbox (4-8 bytes here, against 22 for a map entry each).
///
/// Invariants: a prefix names at most one entry (a mailbox whose prefix another holds has
/// its messages probed into [`Slots::others`]); an entry holds at least one message and
/// goes with its last.
#[derive(Debug, Default)]
struct Mailboxes {
    entries: Vec<Option<MailboxEntry>>,
    free: Vec<u32>,
    by_prefix: HashMap<u64, u32>,
}

#[derive(Debug)]
struct MailboxEntry {
    name: Arc<MailboxName>,
    uid_validity: u32,
    prefix: u64,
    counts: Counts,
}

/// The mailbox prefix of a natural message number.
fn prefix_of(ino: u64) -> u64 {
    ino >> UID_BITS
}

/// The UID of a natural message number.
fn uid_of_ino(ino: u64) -> u32 {
    (ino & ((1 << UID_BITS) - 1)) as u32
}

impl Mailboxes {
    /// The entry id and lookup count of the message held at natural number `ino`.
    fn natural(&self, ino: u64) -> Option<(u32, u32)> {
        let id = *self.by_prefix.get(&prefix_of(ino))?;
        let count = self.entry(id).counts.get(uid_of_ino(ino));
        (count > 0).then_some((id, count))
    }

    fn entry(&self, id: u32) -> &MailboxEntry {
        self.entries[id as usize]
            .as_ref()
            .expect("a prefix's mailbox entry is kept")
    }

    /// Whether `id` is the entry of `(name, uid_validity)`.
    fn is(&self, id: u32, name: &Arc<MailboxName>, uid_validity: u32) -> bool {
        let e = self.entry(id);
        e.uid_validity == uid_validity && (Arc::ptr_eq(&e.name, name) || e.name == *name)
    }

    /// Holds the message at natural number `ino` with one lookup; false (nothing held)
    /// when another mailbox holds the prefix.
    fn add(&mut self, name: &Arc<MailboxName>, uid_validity: u32, ino: u64) -> bool {
        let prefix = prefix_of(ino);
        let id = match self.by_prefix.get(&prefix) {
            Some(&id) if self.is(id, name, uid_validity) => id,
            Some(_) => return false,
            None => {
                let entry = MailboxEntry {
                    name: name.clone(),
                    uid_validity,
                    prefix,
                    counts: Counts::default(),
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        self.entries[id as usize] = Some(entry);
                        id
                    }
                    None => {
                        self.entries.push(Some(entry));
                        (self.entries.len() - 1) as u32
                    }
                };
                self.by_prefix.insert(prefix, id);
                id
            }
        };
        self.set(id, ino, 1);
        true
    }

    /// Sets the count of the message at natural number `ino` of entry `id`; at 0 it goes,
    /// and the entry with its last message.
    fn set(&mut self, id: u32, ino: u64, count: u32) {
        let Some(Some(e)) = self.entries.get_mut(id as usize) else {
            return;
        };
        e.counts.set(uid_of_ino(ino), count);
        if e.counts.held() == 0 {
            self.by_prefix.remove(&e.prefix);
            self.entries[id as usize] = None;
            self.free.push(id);
        }
    }

    fn node(&self, id: u32, ino: u64) -> Node {
        let e = self.entry(id);
        Node::Message {
            mailbox: e.name.clone(),
            uid_validity: e.uid_validity,
            key: MessageKey::Uid(uid_of_ino(ino)),
        }
    }

    /// Number of messages held at their natural numbers.
    fn held(&self) -> usize {
        self.entries.iter().flatten().map(|e| e.counts.held()).sum()
    }
}

/// The table's state under its one lock. Invariants: an inode number is held at most
/// once: by a mailbox entry's count (a message at its natural number) or by `others`;
/// `by_node` is `others` reversed for the nodes not at their natural number (so a node
/// probed past a number that was taken then is still found after that number is freed: a
/// probe walk alone would stop at the gap).
#[derive(Debug, Default)]
struct Slots {
    others: HashMap<u64, Slot>,
    by_node: HashMap<Node, u64>,
    mailboxes: Mailboxes,
}

/// What one inode number holds, looked up.
enum Held<'a> {
    /// A message at its natural number: its entry id and lookup count.
    Message(u32, u32),
    Other(&'a Slot),
    Free,
}

impl Slots {
    fn held(&self, ino: u64) -> Held<'_> {
        if let Some((id, count)) = self.mailboxes.natural(ino) {
            return Held::Message(id, count);
        }
        match self.others.get(&ino) {
            Some(s) => Held::Other(s),
            None => Held::Free,
        }
    }

    /// Whether `ino` holds `node`.
    fn holds(&self, ino: u64, node: &Node) -> Option<bool> {
        match self.held(ino) {
            Held::Message(id, _) => Some(match node {
                Node::Message {
                    mailbox,
                    uid_validity,
                    key: MessageKey::Uid(uid),
                } => *uid == uid_of_ino(ino) && self.mailboxes.is(id, mailbox, *uid_validity),
                _ => false,
            }),
            Held::Other(s) => Some(s.node == *node),
            Held::Free => None,
        }
    }

    /// The number `node` has here, or would get: its natural number, probed past numbers
    /// held by other nodes.
    fn find(&self, node: &Node) -> (u64, bool) {
        let mut ino = node.hash();
        loop {
            match self.holds(ino, node) {
                Some(true) => return (ino, true),
                Some(false) => ino = next_probe(ino),
                // Past a gap (`by_node`), asked only here: hashing a node hashes its
                // mailbox's name, and the walk finds almost every held node first.
                None => match self.by_node.get(node) {
                    Some(&held) => return (held, true),
                    None => return (ino, false),
                },
            }
        }
    }

    fn get(&self, ino: u64) -> Option<Node> {
        match self.held(ino) {
            Held::Message(id, _) => Some(self.mailboxes.node(id, ino)),
            Held::Other(s) => Some(s.node.clone()),
            Held::Free => None,
        }
    }

    /// Inserts `node` at the free number `ino` with one lookup.
    fn insert(&mut self, ino: u64, node: &Node) {
        if let Node::Message {
            mailbox,
            uid_validity,
            key: MessageKey::Uid(_),
        } = node
            && ino == node.hash()
            && node.is_ordered_message()
            && self.mailboxes.add(mailbox, *uid_validity, ino)
        {
            return;
        }
        self.put_other(
            ino,
            Slot {
                node: node.clone(),
                lookups: 1,
            },
        );
    }

    /// Holds `slot` at the free number `ino` in `others`.
    fn put_other(&mut self, ino: u64, slot: Slot) {
        if ino != slot.node.hash() {
            self.by_node.insert(slot.node.clone(), ino);
        }
        self.others.insert(ino, slot);
    }

    /// Removes what `ino` holds, if anything, and returns it with its lookup count.
    fn remove(&mut self, ino: u64) -> Option<(Node, u64)> {
        if let Some((id, count)) = self.mailboxes.natural(ino) {
            let node = self.mailboxes.node(id, ino);
            self.mailboxes.set(id, ino, 0);
            return Some((node, u64::from(count)));
        }
        let slot = self.others.remove(&ino)?;
        if self.by_node.get(&slot.node) == Some(&ino) {
            self.by_node.remove(&slot.node);
        }
        Some((slot.node, slot.lookups))
    }
}

/// The nodes the kernel currently knows. Guarded by one mutex; the lock is never held while
/// doing I/O or replying to the kernel.
#[derive(Debug)]
pub struct InodeTable {
    slots: Mutex<Slots>,
}

impl Default for InodeTable {
    fn default() -> Self {
        let mut slots = Slots::default();
        slots.put_other(
            ROOT_INO,
            Slot {
                node: Node::root(),
                lookups: 1,
            },
        );
        InodeTable {
            slots: Mutex::new(slots),
        }
    }
}

impl InodeTable {
    /// The inode number `node` has or would get, without counting a lookup.
    pub fn peek_ino(&self, node: &Node) -> u64 {
        self.slots.lock().find(node).0
    }

    /// The inode number of `node` if the kernel currently holds it (has looked it up and
    /// not forgotten it).
    pub fn known(&self, node: &Node) -> Option<u64> {
        match self.slots.lock().find(node) {
            (ino, true) => Some(ino),
            (_, false) => None,
        }
    }

    /// The nodes the kernel holds directly below the root.
    pub fn top_level(&self) -> Vec<(u64, Node)> {
        self.slots
            .lock()
            .others
            .iter()
            .filter(|(_, s)| matches!(&s.node, Node::Folder(n) if n.0.len() == 1))
            .map(|(ino, s)| (*ino, s.node.clone()))
            .collect()
    }

    /// Records one kernel lookup of `node` and returns its inode number.
    pub fn remember(&self, node: &Node) -> u64 {
        let mut slots = self.slots.lock();
        let (ino, held) = slots.find(node);
        if !held {
            if ino != node.hash() {
                warn!("inode number collision for {node:?}: probed to {ino:#x}");
            }
            slots.insert(ino, node);
            return ino;
        }
        if let Held::Message(id, count) = slots.held(ino) {
            if let Some(n) = count.checked_add(1) {
                slots.mailboxes.set(id, ino, n);
                return ino;
            }
            // u32::MAX lookups: on in a full slot (same number, same node).
            let (node, lookups) = slots.remove(ino).expect("held");
            slots.put_other(
                ino,
                Slot {
                    node,
                    lookups: lookups + 1,
                },
            );
            return ino;
        }
        if let Some(s) = slots.others.get_mut(&ino) {
            s.lookups += 1;
        }
        ino
    }

    /// Makes inode `ino` stand for `node` from now on, keeping its lookup count: after a
    /// rename the kernel holds the renamed inode under its new name, which may mean
    /// another node here (a message moved to another mailbox answers there as a ghost).
    pub fn rebind(&self, ino: u64, node: Node) {
        if ino == ROOT_INO {
            return;
        }
        let mut slots = self.slots.lock();
        if let Some((_, lookups)) = slots.remove(ino) {
            slots.put_other(ino, Slot { node, lookups });
        }
    }

    /// The node behind an inode number the kernel sent.
    pub fn get(&self, ino: u64) -> Option<Node> {
        self.slots.lock().get(ino)
    }

    /// Drops `n` lookups; the node is removed at zero (and returned). The root is never
    /// removed.
    pub fn forget(&self, ino: u64, n: u64) -> Option<Node> {
        if ino == ROOT_INO {
            return None;
        }
        let mut slots = self.slots.lock();
        let lookups = match slots.held(ino) {
            Held::Message(_, count) => u64::from(count),
            Held::Other(s) => s.lookups,
            Held::Free => return None,
        };
        if n > lookups {
            error!("kernel forgot {n} lookups of inode {ino:#x} but only {lookups} were counted");
        }
        let left = lookups.saturating_sub(n);
        if left == 0 {
            return slots.remove(ino).map(|(node, _)| node);
        }
        if let Held::Message(id, _) = slots.held(ino) {
            // left < lookups <= u32::MAX
            slots.mailboxes.set(id, ino, left as u32);
        } else if let Some(s) = slots.others.get_mut(&ino) {
            s.lookups = left;
        }
        None
    }

    /// Number of nodes held (for tests and statistics).
    pub fn len(&self) -> usize {
        let slots = self.slots.lock();
        slots.mailboxes.held() + slots.others.len()
    }

    /// Always false: the root is always present.
    pub fn is_empty(&self) -> bool {
        false
    }
}

fn next_probe(ino: u64) -> u64 {
    let next = ino.wrapping_add(0x9e37_79b9_7f4a_7c15);
    if next <= ROOT_INO { next + 2 } else { next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(mb: &str, uv: u32, uid: u32) -> Node {
        Node::Message {
            mailbox: Arc::new(MailboxName::parse(mb)),
            uid_validity: uv,
            key: MessageKey::Uid(uid),
        }
    }

    #[test]
    fn numbers_are_stable_and_depend_on_identity() {
        let t = InodeTable::default();
        let a = t.remember(&msg("INBOX", 5, 1));
        assert_eq!(t.remember(&msg("INBOX", 5, 1)), a);
        assert_ne!(
            t.remember(&msg("INBOX", 6, 1)),
            a,
            "new UIDVALIDITY, new inode"
        );
        assert_ne!(t.remember(&msg("Work", 5, 1)), a);
        assert_eq!(
            InodeTable::default().peek_ino(&msg("INBOX", 5, 1)),
            a,
            "stable"
        );
        assert_eq!(t.remember(&Node::root()), ROOT_INO);
    }

    /// Within a mailbox, inode order is UID order (what fts-based tools walk in), and
    /// numbers of different mailboxes or UIDVALIDITYs do not mix.
    #[test]
    fn message_numbers_follow_uid_order_within_a_mailbox() {
        let t = InodeTable::default();
        let inbox: Vec<u64> = [1, 2, 3, 10, 5000, (1 << UID_BITS) - 1]
            .iter()
            .map(|&u| t.peek_ino(&msg("INBOX", 5, u)))
            .collect();
        assert!(inbox.windows(2).all(|w| w[0] < w[1]), "{inbox:x?}");
        assert_eq!(inbox[1] - inbox[0], 1);
        let prefix = |ino: u64| ino >> UID_BITS;
        assert_ne!(prefix(t.peek_ino(&msg("Work", 5, 1))), prefix(inbox[0]));
        assert_ne!(prefix(t.peek_ino(&msg("INBOX", 6, 1))), prefix(inbox[0]));
        // Beyond 24 bits: hashed, still distinct and stable.
        let big = t.peek_ino(&msg("INBOX", 5, 1 << UID_BITS));
        assert_ne!(prefix(big), prefix(inbox[0]));
        assert_eq!(t.peek_ino(&msg("INBOX", 5, 1 << UID_BITS)), big);
    }

    #[test]
    fn forget_removes_at_zero_and_keeps_root() {
        let t = InodeTable::default();
        let n = msg("INBOX", 1, 9);
        let ino = t.remember(&n);
        t.remember(&n);
        assert_eq!(t.forget(ino, 1), None);
        assert_eq!(t.get(ino), Some(n.clone()));
        assert_eq!(t.known(&n), Some(ino));
        assert_eq!(t.forget(ino, 1), Some(n.clone()));
        assert_eq!(t.get(ino), None);
        assert_eq!(t.known(&n), None);
        t.forget(ROOT_INO, 100);
        assert!(t.get(ROOT_INO).is_some());
    }

    #[test]
    fn held_messages_cost_no_slot_of_their_own() {
        let t = InodeTable::default();
        for uid in 1..=100 {
            t.remember(&msg("INBOX", 7, uid));
        }
        let slots = t.slots.lock();
        assert_eq!(slots.mailboxes.held(), 100);
        assert_eq!(slots.others.len(), 1, "the root only");
        assert_eq!(slots.mailboxes.by_prefix.len(), 1);
        drop(slots);
        assert_eq!(t.len(), 101);
    }

    /// Two mailboxes whose numbers share a prefix (found by search: 40 bits collide
    /// after about a million UIDVALIDITYs): the first holds the prefix, the second's
    /// messages are probed into full slots, and every number answers with its own node.
    #[test]
    fn a_mailbox_whose_prefix_is_taken_is_probed_past() {
        let mut seen: HashMap<u64, u32> = HashMap::new();
        let (a, b) = (1..8_000_000u32)
            .find_map(|uv| {
                let prefix = prefix_of(msg("INBOX", uv, 1).hash());
                seen.insert(prefix, uv).map(|earlier| (earlier, uv))
            })
            .expect("a 40-bit collision within 8,000,000 tries");
        drop(seen);
        let t = InodeTable::default();
        let first: Vec<u64> = (1..=3).map(|u| t.remember(&msg("INBOX", a, u))).collect();
        let second: Vec<u64> = (2..=4).map(|u| t.remember(&msg("INBOX", b, u))).collect();
        assert_eq!(
            first[1] & ((1 << UID_BITS) - 1),
            2,
            "the first at its natural number"
        );
        assert!(second.iter().all(|ino| !first.contains(ino)));
        assert_eq!(
            t.slots.lock().others.len(),
            4,
            "the root and the second's three"
        );
        for (i, ino) in first.iter().enumerate() {
            assert_eq!(t.get(*ino), Some(msg("INBOX", a, i as u32 + 1)));
        }
        for (i, ino) in second.iter().enumerate() {
            assert_eq!(t.get(*ino), Some(msg("INBOX", b, i as u32 + 2)));
            assert_eq!(t.known(&msg("INBOX", b, i as u32 + 2)), Some(*ino));
        }
        for ino in &first {
            t.forget(*ino, 1);
        }
        // The prefix is free again, but the second's messages keep their numbers.
        assert_eq!(t.remember(&msg("INBOX", b, 3)), second[1]);
        assert_eq!(t.len(), 4);
    }

    /// A number taken by another node (here by a rename's rebind) sends the message to
    /// the next probe, and each number still answers with its own node.
    #[test]
    fn a_taken_number_is_probed_past() {
        let t = InodeTable::default();
        let a = msg("INBOX", 5, 3);
        let ino = t.remember(&a);
        let folder = Node::Folder(Arc::new(MailboxName::parse("Moved")));
        t.rebind(ino, folder.clone());
        assert_eq!(t.get(ino), Some(folder.clone()));
        assert_eq!(t.known(&a), None);
        let probed = t.remember(&a);
        assert_ne!(probed, ino);
        assert_eq!(t.get(probed), Some(a.clone()));
        assert_eq!(t.get(ino), Some(folder));
        assert_eq!(t.known(&a), Some(probed));
        assert_eq!(t.forget(probed, 1), Some(a));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn mailbox_entries_go_with_their_last_message() {
        let t = InodeTable::default();
        let x = t.remember(&msg("INBOX", 1, 1));
        let y = t.remember(&msg("INBOX", 1, 2));
        let z = t.remember(&msg("Work", 1, 1));
        assert_eq!(t.slots.lock().mailboxes.by_prefix.len(), 2);
        t.forget(z, 1);
        t.forget(x, 1);
        assert_eq!(t.slots.lock().mailboxes.by_prefix.len(), 1);
        assert_eq!(t.get(y), Some(msg("INBOX", 1, 2)));
        t.forget(y, 1);
        let slots = t.slots.lock();
        assert!(slots.mailboxes.by_prefix.is_empty());
        assert_eq!(slots.mailboxes.free.len(), 2, "ids reused");
    }

    #[test]
    fn counts_past_u32_move_to_a_full_slot() {
        let t = InodeTable::default();
        let a = msg("INBOX", 1, 1);
        let ino = t.remember(&a);
        let mut slots = t.slots.lock();
        let Held::Message(id, 1) = slots.held(ino) else {
            panic!("held once at its natural number");
        };
        slots.mailboxes.set(id, ino, u32::MAX);
        drop(slots);
        assert_eq!(t.remember(&a), ino);
        assert_eq!(
            t.slots.lock().others.get(&ino).map(|s| s.lookups),
            Some(u64::from(u32::MAX) + 1)
        );
        assert_eq!(t.forget(ino, u64::from(u32::MAX)), None);
        assert_eq!(t.forget(ino, 1), Some(a));
    }
}
