//! The kernel's lookup counts of one mailbox's messages held at their natural inode
//! numbers, by UID. The kernel holds an inode for every message a `readdirplus` listed,
//! so this is per message of every listed mailbox: a few held messages are a short sorted
//! list (8 bytes each), many are pages of 64 UIDs' counts (a byte a UID, a page only
//! where some UID in it is held), instead of a hash map entry each (22 bytes measured).
//! A count is 1 after a listing and grows by one a lookup until the kernel forgets the
//! inode; one past 254 is kept beside the pages (`large`), its byte saying so.
//!
//! Invariants: no count is 0 (a UID whose count reaches 0 is removed); `held` is the
//! number of UIDs with a count; a page is dropped with its last held UID; a UID is in
//! `large` exactly when its byte is [`LARGE`].

use std::collections::HashMap;

/// Most UIDs kept as a list before the counts move to pages.
const FEW: usize = 64;
/// UIDs per page.
const PAGE: usize = 64;
/// A page's byte for a count kept in `large`.
const LARGE: u8 = u8::MAX;

/// Lookup counts by UID (see the module documentation).
#[derive(Debug)]
pub(super) enum Counts {
    /// Sorted by UID.
    Few(Vec<(u32, u32)>),
    /// Page number (UID / [`PAGE`]) -> the page.
    Many {
        pages: HashMap<u32, Box<Page>>,
        /// Counts of [`LARGE`] or more, by UID.
        large: HashMap<u32, u32>,
        held: usize,
    },
}

/// The counts of [`PAGE`] consecutive UIDs (0: not held).
#[derive(Debug)]
pub(super) struct Page {
    counts: [u8; PAGE],
    held: u32,
}

impl Default for Counts {
    fn default() -> Self {
        Counts::Few(Vec::new())
    }
}

impl Counts {
    /// The count of `uid` (0 when not held).
    pub(super) fn get(&self, uid: u32) -> u32 {
        match self {
            Counts::Few(list) => list
                .binary_search_by_key(&uid, |&(u, _)| u)
                .map_or(0, |i| list[i].1),
            Counts::Many { pages, large, .. } => {
                match pages
                    .get(&(uid / PAGE as u32))
                    .map_or(0, |p| p.counts[uid as usize % PAGE])
                {
                    LARGE => large.get(&uid).copied().unwrap_or_default(),
                    byte => u32::from(byte),
                }
            }
        }
    }

    /// Number of UIDs held.
    pub(super) fn held(&self) -> usize {
        match self {
            Counts::Few(list) => list.len(),
            Counts::Many { held, .. } => *held,
        }
    }

    /// Sets the count of `uid` (0 removes it).
    pub(super) fn set(&mut self, uid: u32, count: u32) {
        if let Counts::Few(list) = self {
            match list.binary_search_by_key(&uid, |&(u, _)| u) {
                Ok(i) if count == 0 => {
                    list.remove(i);
                }
                Ok(i) => list[i].1 = count,
                Err(_) if count == 0 => {}
                Err(i) if list.len() < FEW => list.insert(i, (uid, count)),
                Err(_) => {
                    let mut many = Counts::Many {
                        pages: HashMap::new(),
                        large: HashMap::new(),
                        held: 0,
                    };
                    for &(u, c) in list.iter() {
                        many.set(u, c);
                    }
                    many.set(uid, count);
                    *self = many;
                }
            }
            return;
        }
        let Counts::Many { pages, large, held } = self else {
            return;
        };
        let byte = match u8::try_from(count) {
            Ok(byte) if byte < LARGE => byte,
            _ => {
                large.insert(uid, count);
                LARGE
            }
        };
        let page_no = uid / PAGE as u32;
        let slot = uid as usize % PAGE;
        let Some(page) = pages.get_mut(&page_no) else {
            if count != 0 {
                let mut page = Box::new(Page {
                    counts: [0; PAGE],
                    held: 1,
                });
                page.counts[slot] = byte;
                pages.insert(page_no, page);
                *held += 1;
            }
            return;
        };
        // A large count that is no longer one (the map is touched only then: this is
        // every lookup and forget of a listed message).
        if page.counts[slot] == LARGE && byte != LARGE {
            large.remove(&uid);
        }
        match (page.counts[slot], count) {
            (0, 0) => {}
            (0, _) => {
                page.held += 1;
                *held += 1;
            }
            (_, 0) => {
                page.held -= 1;
                *held -= 1;
            }
            _ => {}
        }
        page.counts[slot] = byte;
        if page.held == 0 {
            pages.remove(&page_no);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain map, through the move from list to pages and back to empty.
    #[test]
    fn counts_match_a_map_through_every_shape() {
        let mut c = Counts::default();
        let mut want: HashMap<u32, u32> = HashMap::new();
        let uids: Vec<u32> = (0..3000u32).map(|i| (i * 7919) % 20_000).collect();
        for (n, &uid) in uids.iter().enumerate() {
            // Small ones, and some past what a page's byte holds.
            let count = match n % 7 {
                5 => 254 + (n % 3) as u32,
                6 => 70_000 + n as u32,
                _ => (n % 5) as u32 + 1,
            };
            c.set(uid, count);
            want.insert(uid, count);
            if n == FEW - 1 {
                assert!(matches!(c, Counts::Few(_)), "a list up to {FEW}");
            }
        }
        assert!(matches!(c, Counts::Many { .. }));
        assert_eq!(c.held(), want.len());
        for uid in 0..20_000 {
            assert_eq!(c.get(uid), want.get(&uid).copied().unwrap_or(0), "{uid}");
        }
        // A large count back to a small one, and a small one up past a byte.
        for (n, &uid) in uids.iter().enumerate().step_by(3) {
            let count = if want[&uid] >= 255 { 3 } else { 300 + n as u32 };
            c.set(uid, count);
            want.insert(uid, count);
        }
        for uid in 0..20_000 {
            assert_eq!(c.get(uid), want.get(&uid).copied().unwrap_or(0), "{uid}");
        }
        for &uid in &uids {
            c.set(uid, 0);
        }
        assert_eq!(c.held(), 0);
        let Counts::Many { pages, large, .. } = &c else {
            panic!("still pages");
        };
        assert!(pages.is_empty(), "every page dropped with its last UID");
        assert!(large.is_empty(), "and every large count");
    }

    #[test]
    fn setting_zero_where_nothing_is_held_changes_nothing() {
        let mut c = Counts::default();
        c.set(5, 0);
        assert_eq!(c.held(), 0);
        c.set(5, 2);
        c.set(6, 0);
        assert_eq!((c.held(), c.get(5), c.get(6)), (1, 2, 0));
    }
}
