//! The UID messages of a view, stored so that a view and its rebuilt successor share what
//! did not change.
//!
//! Messages are kept sorted by UID in chunks of at most [`CHUNK`] behind `Arc`s (as index
//! records are, see `index::records`), each packed into columns ([`Chunk`]: a row of
//! bit columns once the chunk is sealed, its GUID and shaped Maildir name beside).
//! Cloning copies the chunk pointers only;
//! replacing, removing or appending a message copies only the chunk it is in. A rebuild
//! after one delivery into 100,000 messages therefore costs one chunk, not the mailbox;
//! and a diff of two views skips the chunks they share without looking inside
//! ([`merge_chunked`]). Reading a message unpacks it: callers get an owned
//! [`MessageMeta`].
//!
//! Invariants: chunks are never empty; UIDs strictly increase across the whole list;
//! `first_uids[i]` is the UID of `chunks[i]`'s first message; `len` is the total count.

use std::fmt;
use std::sync::Arc;

use super::packed::Chunk;
use super::{MessageKey, MessageMeta};

/// Most messages in one chunk.
pub const CHUNK: usize = 256;

/// UID-sorted messages with structural sharing.
#[derive(Clone, Default)]
pub struct Messages {
    chunks: Vec<Arc<Chunk>>,
    first_uids: Vec<u32>,
    len: usize,
}

/// What the read-ahead needs of a message, read without unpacking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Brief {
    /// Its UID.
    pub uid: u32,
    /// [`MessageMeta::size`].
    pub size: u64,
    /// No [`MessageMeta::problem`].
    pub readable: bool,
}

/// The UID of a message (pending ones never go into [`Messages`]; they sort last).
pub fn uid_of(m: &MessageMeta) -> u32 {
    match m.key {
        MessageKey::Uid(u) => u,
        MessageKey::Pending(_) => u32::MAX,
    }
}

impl PartialEq for Messages {
    fn eq(&self, other: &Messages) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Messages {}

impl fmt::Debug for Messages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Messages {
    /// From messages sorted by UID.
    pub fn from_sorted(messages: impl IntoIterator<Item = MessageMeta>) -> Messages {
        let mut out = Messages::default();
        for m in messages {
            out.push(m);
        }
        out
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All messages in UID order.
    pub fn iter(&self) -> impl Iterator<Item = MessageMeta> + '_ {
        self.iter_from(0)
    }

    /// All UIDs in order (nothing unpacked).
    #[cfg(test)]
    pub fn uids(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| (0..c.len()).map(move |i| c.uid(i)))
    }

    /// The messages from position `pos` on (0-based, in UID order); O(chunks) to start.
    pub fn iter_from(&self, pos: usize) -> impl Iterator<Item = MessageMeta> + '_ {
        let mut ci = 0;
        let mut skip = pos.min(self.len);
        while ci < self.chunks.len() && skip >= self.chunks[ci].len() {
            skip -= self.chunks[ci].len();
            ci += 1;
        }
        self.iter_at(ci, skip)
    }

    /// The messages from message `i` of chunk `ci` on.
    fn iter_at(&self, ci: usize, i: usize) -> impl Iterator<Item = MessageMeta> + '_ {
        self.read_at(ci, i, Chunk::get)
    }

    /// `read` of each message from message `i` of chunk `ci` on.
    fn read_at<'s, T: 's>(
        &'s self,
        ci: usize,
        i: usize,
        read: fn(&Chunk, usize) -> T,
    ) -> impl Iterator<Item = T> + 's {
        self.chunks
            .get(ci..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(n, c)| {
                let from = if n == 0 { i.min(c.len()) } else { 0 };
                (from..c.len()).map(move |k| read(c, k))
            })
    }

    /// The highest UID, if any.
    pub fn last_uid(&self) -> Option<u32> {
        self.chunks.last().and_then(|c| c.last_uid())
    }

    /// (chunk, index in chunk) of `uid`: `Ok` if present, `Err` where it would go.
    fn locate(&self, uid: u32) -> Result<(usize, usize), (usize, usize)> {
        let ci = match self.first_uids.binary_search(&uid) {
            Ok(ci) => return Ok((ci, 0)),
            Err(0) => return Err((0, 0)),
            Err(ci) => ci - 1,
        };
        match self.chunks[ci].search(uid) {
            Ok(i) => Ok((ci, i)),
            Err(i) => Err((ci, i)),
        }
    }

    /// The message with `uid`.
    pub fn get(&self, uid: u32) -> Option<MessageMeta> {
        let (ci, i) = self.locate(uid).ok()?;
        Some(self.chunks[ci].get(i))
    }

    /// The position of the message with `uid` in UID order (for [`Messages::iter_from`]).
    pub fn position(&self, uid: u32) -> Option<usize> {
        let (ci, i) = self.locate(uid).ok()?;
        Some(self.chunks[..ci].iter().map(|c| c.len()).sum::<usize>() + i)
    }

    /// The messages with UIDs above `uid`, in UID order.
    pub fn iter_after(&self, uid: u32) -> impl Iterator<Item = MessageMeta> + '_ {
        let (ci, i) = self.locate_after(uid);
        self.iter_at(ci, i)
    }

    /// The [`Brief`]s of the messages with UIDs above `uid`, in UID order.
    pub fn briefs_after(&self, uid: u32) -> impl Iterator<Item = Brief> + '_ {
        let (ci, i) = self.locate_after(uid);
        self.read_at(ci, i, Chunk::brief)
    }

    /// (chunk, index in chunk) of the first message with a UID above `uid`.
    fn locate_after(&self, uid: u32) -> (usize, usize) {
        match self.locate(uid) {
            Ok((ci, i)) => (ci, i + 1),
            Err(at) => at,
        }
    }

    /// Appends a message whose UID is above every present one; otherwise inserts it in
    /// place (replacing one with the same UID).
    pub fn push(&mut self, m: MessageMeta) {
        let uid = uid_of(&m);
        if self.last_uid().is_some_and(|last| last >= uid) {
            self.upsert(m);
            return;
        }
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                let chunk = Arc::make_mut(last);
                chunk.push(m);
                if chunk.len() == CHUNK {
                    chunk.seal();
                }
            }
            _ => {
                self.first_uids.push(uid);
                // Grown as filled, never reserved whole: a small mailbox's view (and the
                // watcher's baseline of it, kept while the kernel holds the directory)
                // must cost its messages, not a chunk. A chunk is fitted to what it
                // holds when it fills.
                let mut chunk = Chunk::default();
                chunk.push(m);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// Replaces the message with `m`'s UID, or inserts `m` where it belongs.
    pub fn upsert(&mut self, m: MessageMeta) {
        let uid = uid_of(&m);
        match self.locate(uid) {
            Ok((ci, i)) => Arc::make_mut(&mut self.chunks[ci]).set(i, m),
            Err(_) if self.chunks.is_empty() => self.push(m),
            Err((ci, i)) => {
                let chunk = Arc::make_mut(&mut self.chunks[ci]);
                chunk.insert(i, m);
                self.first_uids[ci] = chunk.uid(0);
                self.len += 1;
                if chunk.len() > 2 * CHUNK {
                    let tail = chunk.split_off(CHUNK);
                    self.first_uids.insert(ci + 1, tail.uid(0));
                    self.chunks.insert(ci + 1, Arc::new(tail));
                }
            }
        }
    }

    /// Seals every chunk a change opened (see [`Chunk::seal`]), except a last one that is
    /// not full, which appends keep filling, and chunks shared with another list (sealing
    /// one would copy it); the rule `Records::seal` follows. Called when a refresh has
    /// made its changes, so that a chunk is unpacked once per refresh however many of its
    /// messages change.
    pub fn seal(&mut self) {
        let n = self.chunks.len();
        for (i, chunk) in self.chunks.iter_mut().enumerate() {
            if i + 1 == n && chunk.len() < CHUNK {
                continue;
            }
            if let Some(chunk) = Arc::get_mut(chunk).filter(|c| c.is_open()) {
                chunk.seal();
            }
        }
    }

    /// Removes the message with `uid`; false if there was none.
    pub fn remove(&mut self, uid: u32) -> bool {
        let Ok((ci, i)) = self.locate(uid) else {
            return false;
        };
        let chunk = Arc::make_mut(&mut self.chunks[ci]);
        chunk.remove(i);
        self.len -= 1;
        if chunk.is_empty() {
            self.chunks.remove(ci);
            self.first_uids.remove(ci);
        } else {
            self.first_uids[ci] = chunk.uid(0);
        }
        true
    }
}

/// Walks two UID-sorted message lists in step, calling `pair(old, new)` for every UID in
/// either (`None` on the side that lacks it), except inside chunks the two share: those are
/// identical and skipped whole.
pub fn merge_chunked(
    old: &Messages,
    new: &Messages,
    mut pair: impl FnMut(Option<MessageMeta>, Option<MessageMeta>),
) {
    let (a, b) = (&old.chunks, &new.chunks);
    let (mut ci, mut cj) = (0usize, 0usize);
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        if i == 0 && j == 0 && ci < a.len() && cj < b.len() && Arc::ptr_eq(&a[ci], &b[cj]) {
            ci += 1;
            cj += 1;
            continue;
        }
        let x = a.get(ci).map(|c| c.uid(i));
        let y = b.get(cj).map(|c| c.uid(j));
        let (take_a, take_b) = match (x, y) {
            (None, None) => break,
            (Some(_), None) => (true, false),
            (None, Some(_)) => (false, true),
            (Some(x), Some(y)) => match x.cmp(&y) {
                std::cmp::Ordering::Less => (true, false),
                std::cmp::Ordering::Greater => (false, true),
                std::cmp::Ordering::Equal => (true, true),
            },
        };
        pair(take_a.then(|| a[ci].get(i)), take_b.then(|| b[cj].get(j)));
        if take_a {
            i += 1;
            if i == a[ci].len() {
                ci += 1;
                i = 0;
            }
        }
        if take_b {
            j += 1;
            if j == b[cj].len() {
                cj += 1;
                j = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FileOwner, MailFlags};

    fn msg(uid: u32, flags: u8) -> MessageMeta {
        MessageMeta {
            key: MessageKey::Uid(uid),
            size: u64::from(uid) * 10,
            virtual_size: 0,
            received: 0,
            saved: 0,
            flags: MailFlags(flags),
            keywords: crate::store::KeywordSet::default(),
            guid: "".into(),
            owner: FileOwner::default(),
            locator: crate::store::Locator::Sdbox,
            problem: None,
        }
    }

    fn uids(m: &Messages) -> Vec<u32> {
        m.iter().map(|x| uid_of(&x)).collect()
    }

    fn check_invariants(m: &Messages) {
        assert_eq!(m.len(), m.iter().count());
        assert!(m.chunks.iter().all(|c| !c.is_empty()));
        let u = uids(m);
        assert!(u.windows(2).all(|w| w[0] < w[1]), "sorted");
        for (c, f) in m.chunks.iter().zip(&m.first_uids) {
            assert_eq!(c.uid(0), *f);
        }
        assert!(m.uids().eq(u));
    }

    #[test]
    fn push_get_remove_upsert_keep_order_and_counts() {
        let mut m = Messages::from_sorted((1..=1000).map(|u| msg(u * 2, 0)));
        check_invariants(&m);
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get(500).map(|x| x.size), Some(5000));
        assert!(m.get(501).is_none());
        assert!(m.remove(2));
        assert!(!m.remove(2));
        m.upsert(msg(3, 1));
        m.upsert(msg(3, 2));
        m.push(msg(1, 0)); // below the last: inserted in place
        check_invariants(&m);
        assert_eq!(m.get(3).map(|x| x.flags.0), Some(2));
        assert_eq!(&uids(&m)[..3], &[1, 3, 4]);
        for u in (1..=1000).map(|u| u * 2) {
            m.remove(u);
        }
        check_invariants(&m);
        assert_eq!(uids(&m), vec![1, 3]);
        m.upsert(msg(3, 7));
        assert_eq!(m.len(), 2, "replaced, not added");
        assert_eq!(m.get(3).map(|x| x.flags.0), Some(7));
    }

    /// Memory follows the messages: three messages do not reserve a chunk, and full
    /// chunks hold no spare room.
    #[test]
    fn chunks_reserve_only_what_they_hold() {
        let small = Messages::from_sorted((1..=3).map(|u| msg(u, 0)));
        assert!(
            small.chunks[0].row_capacity() <= 4,
            "{}",
            small.chunks[0].row_capacity()
        );
        let big = Messages::from_sorted((1..=2 * CHUNK as u32).map(|u| msg(u, 0)));
        assert!(big.chunks.iter().all(|c| c.row_capacity() == CHUNK));
    }

    #[test]
    fn iter_after_starts_above_any_uid() {
        // Even UIDs only, over several chunks.
        let m = Messages::from_sorted((1..=2 * CHUNK as u32 + 3).map(|u| msg(u * 2, 0)));
        let last = 2 * (2 * CHUNK as u32 + 3);
        for uid in [
            0,
            1,
            2,
            3,
            CHUNK as u32 * 2,
            CHUNK as u32 * 2 + 1,
            last - 1,
            last,
            last + 9,
        ] {
            let got: Vec<u32> = m.iter_after(uid).map(|x| uid_of(&x)).collect();
            let want: Vec<u32> = m.uids().filter(|&u| u > uid).collect();
            assert_eq!(got, want, "after {uid}");
        }
    }

    /// Briefs read without unpacking say what the unpacked messages say, spilled ones
    /// (a size past 32 bits, a problem) included.
    #[test]
    fn briefs_match_the_unpacked_messages() {
        let m = Messages::from_sorted((1..=2 * CHUNK as u32 + 9).map(|u| {
            let mut m = msg(u, 0);
            if u % 7 == 0 {
                m.size = (1 << 32) + u64::from(u);
            }
            if u % 11 == 0 {
                m.problem = Some(Arc::new("truncated".into()));
            }
            m
        }));
        for after in [0, 5, CHUNK as u32, 2 * CHUNK as u32 + 9] {
            let briefs: Vec<Brief> = m.briefs_after(after).collect();
            let want: Vec<Brief> = m
                .iter_after(after)
                .map(|x| Brief {
                    uid: uid_of(&x),
                    size: x.size,
                    readable: x.problem.is_none(),
                })
                .collect();
            assert_eq!(briefs, want, "after {after}");
        }
    }

    #[test]
    fn iter_from_starts_at_any_position() {
        let m = Messages::from_sorted((1..=3 * CHUNK as u32 + 5).map(|u| msg(u, 0)));
        for pos in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK,
            3 * CHUNK + 5,
            10_000,
        ] {
            let got: Vec<u32> = m.iter_from(pos).map(|x| uid_of(&x)).collect();
            let want: Vec<u32> = m.uids().skip(pos).collect();
            assert_eq!(got, want, "from {pos}");
        }
    }

    #[test]
    fn position_is_the_index_in_uid_order() {
        let mut m = Messages::from_sorted((1..=3 * CHUNK as u32 + 5).map(|u| msg(u * 3, 0)));
        m.remove(6);
        for (i, x) in m.uids().enumerate() {
            assert_eq!(m.position(x), Some(i));
        }
        assert_eq!(m.position(6), None, "removed");
        assert_eq!(m.position(4), None, "never there");
    }

    #[test]
    fn many_inserts_in_one_chunk_split_it() {
        let mut m = Messages::from_sorted([msg(1, 0), msg(100_000, 0)]);
        for u in 2..3000 {
            m.upsert(msg(u, 0));
        }
        check_invariants(&m);
        assert!(m.chunks.iter().all(|c| c.len() <= 2 * CHUNK + 1));
        assert_eq!(m.len(), 3000);
    }

    #[test]
    fn a_change_copies_one_chunk_and_merge_skips_the_rest() {
        let old = Messages::from_sorted((1..=10 * CHUNK as u32).map(|u| msg(u, 0)));
        let mut new = old.clone();
        new.upsert(msg(5, 1));
        new.remove(7 * CHUNK as u32);
        new.push(msg(20 * CHUNK as u32, 0));
        let shared = old
            .chunks
            .iter()
            .filter(|a| new.chunks.iter().any(|b| Arc::ptr_eq(a, b)))
            .count();
        assert_eq!(shared, 8, "two of ten chunks copied");
        // Full chunks are sealed as they fill; a change opens its chunk until `seal`,
        // which packs it again and leaves the shared chunks (and the last) alone.
        assert!(old.chunks.iter().all(|c| !c.is_open()));
        assert_eq!(new.chunks.iter().filter(|c| c.is_open()).count(), 3);
        let before = new.clone();
        new.seal();
        assert_eq!(
            new.chunks.iter().filter(|c| c.is_open()).count(),
            3,
            "shared"
        );
        drop(before);
        new.seal();
        let open: Vec<bool> = new.chunks.iter().map(|c| c.is_open()).collect();
        assert_eq!(open.iter().filter(|&&o| o).count(), 1);
        assert!(
            open[open.len() - 1],
            "the last chunk, which appends fill, stays open"
        );
        assert_eq!(new.get(5), Some(msg(5, 1)));
        assert_eq!(new.len(), 10 * CHUNK);
        let mut seen = Vec::new();
        merge_chunked(&old, &new, |a, b| {
            seen.push((a.map(|x| uid_of(&x)), b.map(|x| uid_of(&x))));
        });
        // Only the two unshared chunks and the appended message are walked.
        assert_eq!(seen.len(), 2 * CHUNK + 1);
        let differing: Vec<_> = seen.iter().filter(|(a, b)| a != b).copied().collect();
        assert_eq!(
            differing,
            vec![
                (Some(7 * CHUNK as u32), None),
                (None, Some(20 * CHUNK as u32))
            ]
        );
    }

    #[test]
    fn merge_of_unrelated_lists_visits_every_uid() {
        let a = Messages::from_sorted([1, 3, 5].map(|u| msg(u, 0)));
        let b = Messages::from_sorted([2, 3, 6].map(|u| msg(u, 0)));
        let mut seen = Vec::new();
        merge_chunked(&a, &b, |x, y| {
            seen.push((x.map(|m| uid_of(&m)), y.map(|m| uid_of(&m))))
        });
        assert_eq!(
            seen,
            vec![
                (Some(1), None),
                (None, Some(2)),
                (Some(3), Some(3)),
                (Some(5), None),
                (None, Some(6))
            ]
        );
    }
}
