//! Base-name key -> UID for every `dovecot-uidlist` record, as the Maildir continuation
//! keeps it between builds: one per message of the mailbox, so its size is per message.
//!
//! A hash map of `u64 -> u32` costs 34 bytes a message at 1,000,000 (16-byte buckets,
//! a control byte, at most 7/8 full, rounded up to a power of two). Here the records of
//! the full build are two sorted columns (12 bytes a message) searched by bisection, and
//! the few added later (lines Dovecot appended since) a small map, merged into the
//! columns when it grows past a sixteenth of them (so a delivery costs a map insert, and
//! the merge's rewrite is spread over many).
//!
//! Invariant: a key is in at most one of `keys` and `recent`; `keys` is sorted and
//! `uids[i]` is the UID of `keys[i]`.

use crate::store::files::FnvMap;

/// Fewest entries `recent` holds before a merge is considered.
const MERGE_MIN: usize = 1024;

/// Base-name keys and their UIDs (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct BaseIndex {
    keys: Vec<u64>,
    uids: Vec<u32>,
    recent: FnvMap<u64, u32>,
}

impl BaseIndex {
    /// From `(key, uid)` pairs in any order; `None` when two share a key.
    pub(super) fn new(mut pairs: Vec<(u64, u32)>) -> Option<BaseIndex> {
        pairs.sort_unstable_by_key(|&(key, _)| key);
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        let (keys, uids) = pairs.into_iter().unzip();
        Some(BaseIndex {
            keys,
            uids,
            recent: FnvMap::default(),
        })
    }

    /// The UID of `key`.
    pub(super) fn get(&self, key: u64) -> Option<u32> {
        match self.keys.binary_search(&key) {
            Ok(i) => Some(self.uids[i]),
            Err(_) => self.recent.get(&key).copied(),
        }
    }

    /// Adds `key`; false (and nothing changed) when it is already there.
    pub(super) fn insert(&mut self, key: u64, uid: u32) -> bool {
        if self.keys.binary_search(&key).is_ok() || self.recent.contains_key(&key) {
            return false;
        }
        self.recent.insert(key, uid);
        if self.recent.len() >= MERGE_MIN.max(self.keys.len() / 16) {
            self.merge();
        }
        true
    }

    /// Number of keys.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.keys.len() + self.recent.len()
    }

    /// Moves `recent` into the sorted columns.
    fn merge(&mut self) {
        let mut added: Vec<(u64, u32)> = self.recent.drain().collect();
        added.sort_unstable_by_key(|&(key, _)| key);
        let n = self.keys.len() + added.len();
        let (mut keys, mut uids) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut old = self
            .keys
            .iter()
            .copied()
            .zip(self.uids.iter().copied())
            .peekable();
        let mut new = added.into_iter().peekable();
        loop {
            let next = match (old.peek(), new.peek()) {
                (Some(a), Some(b)) if a.0 < b.0 => old.next(),
                (Some(_), Some(_)) => new.next(),
                (Some(_), None) => old.next(),
                (None, Some(_)) => new.next(),
                (None, None) => break,
            };
            if let Some((key, uid)) = next {
                keys.push(key);
                uids.push(uid);
            }
        }
        self.keys = keys;
        self.uids = uids;
        self.recent.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys spread like hashes (a fixed odd multiplier, so the test is repeatable).
    fn key(i: u64) -> u64 {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn finds_every_key_before_and_after_merges() {
        let mut b = BaseIndex::new((0..5000).map(|i| (key(i), i as u32)).collect()).unwrap();
        for i in 5000..20_000 {
            assert!(b.insert(key(i), i as u32), "{i}");
        }
        assert!(b.keys.len() > 5000, "merged at least once");
        assert_eq!(b.len(), 20_000);
        for i in 0..20_000 {
            assert_eq!(b.get(key(i)), Some(i as u32), "{i}");
        }
        assert_eq!(b.get(key(20_000)), None);
        assert!(b.keys.windows(2).all(|w| w[0] < w[1]), "sorted");
    }

    #[test]
    fn a_repeated_key_is_refused() {
        assert!(BaseIndex::new(vec![(7, 1), (3, 2), (7, 3)]).is_none());
        let mut b = BaseIndex::new(vec![(7, 1), (3, 2)]).unwrap();
        assert!(!b.insert(7, 9), "in the columns");
        assert!(b.insert(8, 10));
        assert!(!b.insert(8, 11), "in the recent map");
        assert_eq!((b.get(7), b.get(8)), (Some(1), Some(10)));
    }
}
