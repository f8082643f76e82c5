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
use std::collections::hash_map::Entry;
use std::sync::Arc;

use log::{error, warn};
use parking_lot::Mutex;

use crate::store::{MailboxName, MessageKey};

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

#[derive(Debug)]
struct Slot {
    node: Node,
    lookups: u64,
}

/// The nodes the kernel currently knows. Guarded by one mutex; the lock is never held while
/// doing I/O or replying to the kernel.
#[derive(Debug)]
pub struct InodeTable {
    slots: Mutex<HashMap<u64, Slot>>,
}

impl Default for InodeTable {
    fn default() -> Self {
        let mut slots = HashMap::new();
        slots.insert(
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
        let slots = self.slots.lock();
        let mut ino = node.hash();
        loop {
            match slots.get(&ino) {
                Some(slot) if slot.node != *node => ino = next_probe(ino),
                _ => return ino,
            }
        }
    }

    /// The inode number of `node` if the kernel currently holds it (has looked it up and
    /// not forgotten it).
    pub fn known(&self, node: &Node) -> Option<u64> {
        let slots = self.slots.lock();
        let mut ino = node.hash();
        loop {
            match slots.get(&ino) {
                Some(slot) if slot.node == *node => return Some(ino),
                Some(_) => ino = next_probe(ino),
                None => return None,
            }
        }
    }

    /// The nodes the kernel holds directly below the root.
    pub fn top_level(&self) -> Vec<(u64, Node)> {
        self.slots
            .lock()
            .iter()
            .filter(|(_, s)| matches!(&s.node, Node::Folder(n) if n.0.len() == 1))
            .map(|(ino, s)| (*ino, s.node.clone()))
            .collect()
    }

    /// Records one kernel lookup of `node` and returns its inode number.
    pub fn remember(&self, node: &Node) -> u64 {
        let mut slots = self.slots.lock();
        let mut ino = node.hash();
        loop {
            match slots.entry(ino) {
                Entry::Occupied(mut e) => {
                    if e.get().node == *node {
                        e.get_mut().lookups += 1;
                        return ino;
                    }
                    warn!(
                        "inode number collision at {ino:#x}: {node:?} vs {:?}",
                        e.get().node
                    );
                    ino = next_probe(ino);
                }
                Entry::Vacant(e) => {
                    e.insert(Slot {
                        node: node.clone(),
                        lookups: 1,
                    });
                    return ino;
                }
            }
        }
    }

    /// Makes inode `ino` stand for `node` from now on, keeping its lookup count: after a
    /// rename the kernel holds the renamed inode under its new name, which may mean
    /// another node here (a message moved to another mailbox answers there as a ghost).
    pub fn rebind(&self, ino: u64, node: Node) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(slot) = self.slots.lock().get_mut(&ino) {
            slot.node = node;
        }
    }

    /// The node behind an inode number the kernel sent.
    pub fn get(&self, ino: u64) -> Option<Node> {
        self.slots.lock().get(&ino).map(|s| s.node.clone())
    }

    /// Drops `n` lookups; the node is removed at zero (and returned). The root is never
    /// removed.
    pub fn forget(&self, ino: u64, n: u64) -> Option<Node> {
        if ino == ROOT_INO {
            return None;
        }
        let mut slots = self.slots.lock();
        if let Entry::Occupied(mut e) = slots.entry(ino) {
            let slot = e.get_mut();
            if n > slot.lookups {
                error!(
                    "kernel forgot {n} lookups of inode {ino:#x} but only {} were counted",
                    slot.lookups
                );
            }
            slot.lookups = slot.lookups.saturating_sub(n);
            if slot.lookups == 0 {
                return Some(e.remove().node);
            }
        }
        None
    }

    /// Number of nodes held (for tests and statistics).
    pub fn len(&self) -> usize {
        self.slots.lock().len()
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
}
