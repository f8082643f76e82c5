//! Message records of an index view, stored so that a refresh costs what changed.
//!
//! Records are fixed-size byte strings laid out as in `dovecot.index` (uid at 0, flags at
//! 4, extension bytes at their `record_offset`), kept sorted by UID in chunks of at most
//! [`CHUNK`] records behind `Arc`s. Cloning a `Records` copies only the chunk pointers;
//! changing a record copies only its chunk (copy on write). So a view and its refreshed
//! successor share every chunk the refresh did not touch.
//!
//! A chunk is plain (`len * record_size` bytes) or packed: the records cut into 32-bit
//! little-endian words, one [`BitColumns`] column per word, each column stored against
//! the UID column when that is smaller. A chunk is packed once it is finished: when an
//! append fills it, and by [`Records::seal`], which packs every plain chunk but a last
//! one that is not full, once a batch of changes is applied. Reads of a packed chunk
//! decode one record at a time into a [`Record`]; changing a record of a packed chunk
//! first makes the chunk plain again (the next `seal` packs it back).
//!
//! Invariants: packing is lossless ([`Records::get`] and [`Records::iter`] give back
//! exactly the bytes pushed or written); a packed chunk is never changed in place; `seal`
//! packs only chunks no other `Records` shares (packing a shared one would copy it), so
//! chunks a refresh did not touch stay the very same `Arc`s as in the view before.
//!
//! Memory: a packed chunk takes the bits its columns' ranges need -- counting UIDs 9 bits
//! a record, constant flags none, a map UID counting with the UID none, a growing cache
//! offset about 18 -- plus 100-200 bytes a chunk (the `Arc`, the column codes). Measured
//! by the tests at 100,000 records: 12-byte records with equal flags and no cache offsets
//! 1.4 bytes a message instead of 12, mdbox-like 36-byte ones 5.3 instead of 36. The last
//! chunk, and every chunk of records larger than [`INLINE`] bytes, stay plain:
//! `record_size` bytes a message plus, per chunk, the `Arc`.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::bitpack::BitColumns;

/// Most records in one chunk. Appends fill the last chunk up to this size.
pub const CHUNK: usize = 512;

/// Largest record size that is packed; a [`Record`] decoded from a packed chunk holds at
/// most this many bytes.
pub const INLINE: usize = 64;

/// One record as read: borrowed from a plain chunk, or decoded from a packed one. Derefs
/// to the record's bytes.
#[derive(Clone, Copy)]
pub enum Record<'a> {
    /// The bytes of a plain chunk.
    Borrowed(&'a [u8]),
    /// Decoded from a packed chunk: the first `len` bytes.
    Inline {
        /// The record's bytes, then zeros.
        bytes: [u8; INLINE],
        /// The record size.
        len: u8,
    },
}

impl Deref for Record<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Record::Borrowed(b) => b,
            Record::Inline { bytes, len } => &bytes[..usize::from(*len)],
        }
    }
}

impl AsRef<[u8]> for Record<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for Record<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Record<'_> {}

impl PartialEq<[u8]> for Record<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<&[u8]> for Record<'_> {
    fn eq(&self, other: &&[u8]) -> bool {
        **self == **other
    }
}

#[derive(Debug, Clone)]
enum Chunk {
    /// `len * record_size` bytes.
    Plain(Vec<u8>),
    /// `ceil(record_size / 4)` word columns (see the module documentation).
    Packed(BitColumns),
}

/// The 32-bit little-endian word `c` of a record (zero-padded past its end).
fn word(rec: &[u8], c: usize) -> u32 {
    let mut w = [0u8; 4];
    let s = rec.get(c * 4..).unwrap_or_default();
    let n = s.len().min(4);
    w[..n].copy_from_slice(&s[..n]);
    u32::from_le_bytes(w)
}

impl Chunk {
    /// Number of records.
    fn len(&self, rs: usize) -> usize {
        match self {
            Chunk::Plain(b) => b.len() / rs,
            Chunk::Packed(p) => p.rows(),
        }
    }

    /// The UID of record `i` (in range).
    fn uid(&self, i: usize, rs: usize) -> u32 {
        match self {
            Chunk::Plain(b) => record_uid(&b[i * rs..]),
            Chunk::Packed(p) => p.get(i, 0),
        }
    }

    /// Record `i`, if in range.
    fn record(&self, i: usize, rs: usize) -> Option<Record<'_>> {
        match self {
            Chunk::Plain(b) => b.get(i * rs..(i + 1) * rs).map(Record::Borrowed),
            Chunk::Packed(p) => (i < p.rows()).then(|| {
                let mut bytes = [0u8; INLINE];
                for c in 0..p.columns() {
                    bytes[c * 4..c * 4 + 4].copy_from_slice(&p.get(i, c).to_le_bytes());
                }
                Record::Inline {
                    bytes,
                    len: rs as u8,
                }
            }),
        }
    }

    /// The index of the first record whose UID is at least `uid` (binary search).
    fn lower_bound(&self, uid: u32, rs: usize) -> usize {
        let (mut lo, mut hi) = (0usize, self.len(rs));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.uid(mid, rs) < uid {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The bytes of a plain chunk, decoding a packed one first.
    fn plain_mut(&mut self, rs: usize) -> &mut Vec<u8> {
        if let Chunk::Packed(p) = self {
            let n = p.rows();
            let mut bytes = Vec::with_capacity(n * rs);
            for i in 0..n {
                if let Some(rec) = self.record(i, rs) {
                    bytes.extend_from_slice(&rec);
                }
            }
            *self = Chunk::Plain(bytes);
        }
        match self {
            Chunk::Plain(b) => b,
            Chunk::Packed(_) => unreachable!("decoded above"),
        }
    }

    /// Packs a plain chunk of records no larger than [`INLINE`] bytes.
    fn pack(&mut self, rs: usize) {
        let Chunk::Plain(b) = self else {
            return;
        };
        if rs > INLINE {
            return;
        }
        let columns = rs.div_ceil(4);
        let against_uid: &[usize] = &[0];
        let references: Vec<&[usize]> = (0..columns)
            .map(|c| if c == 0 { &[][..] } else { against_uid })
            .collect();
        let packed = BitColumns::pack(
            b.len() / rs,
            columns,
            |r, c| word(&b[r * rs..(r + 1) * rs], c),
            &references,
        );
        *self = Chunk::Packed(packed);
    }

    fn is_packed(&self) -> bool {
        matches!(self, Chunk::Packed(_))
    }

    /// Heap bytes held by the chunk's contents.
    fn heap_bytes(&self) -> usize {
        match self {
            Chunk::Plain(b) => b.capacity(),
            Chunk::Packed(p) => p.heap_bytes(),
        }
    }
}

/// UID-sorted fixed-size records with structural sharing.
#[derive(Debug, Clone)]
pub struct Records {
    record_size: usize,
    chunks: Vec<Arc<Chunk>>,
    /// First UID of each chunk (same length as `chunks`; chunks are never empty).
    first_uids: Vec<u32>,
    len: usize,
}

/// Equal when the records are: plain and packed chunks, and chunk boundaries, do not count.
impl PartialEq for Records {
    fn eq(&self, other: &Records) -> bool {
        self.record_size == other.record_size
            && self.len == other.len
            && self.iter().eq(other.iter())
    }
}

impl Eq for Records {}

/// What [`Records::delta`] found, each list in ascending UID order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordDelta {
    /// UIDs only in the newer records.
    pub added: Vec<u32>,
    /// UIDs only in the older records.
    pub removed: Vec<u32>,
    /// UIDs in both whose record bytes differ.
    pub changed: Vec<u32>,
}

/// Reads the UID (bytes 0..4) of a record (a `&[u8]`, a [`Record`], ...).
pub fn record_uid(rec: impl AsRef<[u8]>) -> u32 {
    crate::format::index::record_uid(rec.as_ref()).unwrap_or(0)
}

impl Records {
    /// No records, each `record_size` (>= 8) bytes.
    pub fn new(record_size: usize) -> Records {
        Records {
            record_size: record_size.max(8),
            chunks: Vec::new(),
            first_uids: Vec::new(),
            len: 0,
        }
    }

    /// Builds from records already sorted by UID (each exactly `record_size` bytes).
    pub fn from_sorted<'a>(record_size: usize, recs: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut r = Records::new(record_size);
        for rec in recs {
            r.push_sorted(rec);
        }
        r
    }

    /// Bytes per record.
    pub fn record_size(&self) -> usize {
        self.record_size
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest UID, if any.
    pub fn last_uid(&self) -> Option<u32> {
        let c = self.chunks.last()?;
        let rs = self.record_size;
        Some(c.uid(c.len(rs) - 1, rs))
    }

    /// Appends a record whose UID is above every present one (the caller checks). The
    /// record is truncated or zero-padded to `record_size`. A chunk this fills is packed.
    pub fn push_sorted(&mut self, rec: &[u8]) {
        let rs = self.record_size;
        let uid = record_uid(rec);
        let need_new = self.chunks.last().is_none_or(|c| c.len(rs) >= CHUNK);
        if need_new {
            self.chunks
                .push(Arc::new(Chunk::Plain(Vec::with_capacity(rs * 16))));
            self.first_uids.push(uid);
        }
        let Some(last) = self.chunks.last_mut() else {
            return;
        };
        let chunk = Arc::make_mut(last);
        let bytes = chunk.plain_mut(rs);
        let start = bytes.len();
        bytes.resize(start + rs, 0);
        let n = rec.len().min(rs);
        bytes[start..start + n].copy_from_slice(&rec[..n]);
        if bytes.len() / rs >= CHUNK {
            chunk.pack(rs);
        }
        self.len += 1;
    }

    /// Packs every finished plain chunk: all but the last, and the last too when it is
    /// full. A chunk another `Records` shares is left as it is (packing would copy it).
    /// Call once a batch of changes is applied; costs nothing for chunks already packed.
    pub fn seal(&mut self) {
        let rs = self.record_size;
        if rs > INLINE {
            return;
        }
        let n = self.chunks.len();
        for (i, c) in self.chunks.iter_mut().enumerate() {
            if c.is_packed() || (i + 1 == n && c.len(rs) < CHUNK) {
                continue;
            }
            if let Some(chunk) = Arc::get_mut(c) {
                chunk.pack(rs);
            }
        }
    }

    /// Locates a UID: (chunk index, record index within chunk).
    fn locate(&self, uid: u32) -> Option<(usize, usize)> {
        let ci = match self.first_uids.binary_search(&uid) {
            Ok(i) => return Some((i, 0)),
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let rs = self.record_size;
        let chunk = &self.chunks[ci];
        let ri = chunk.lower_bound(uid, rs);
        (ri < chunk.len(rs) && chunk.uid(ri, rs) == uid).then_some((ci, ri))
    }

    /// The record with this UID.
    pub fn get(&self, uid: u32) -> Option<Record<'_>> {
        let (ci, ri) = self.locate(uid)?;
        self.chunks[ci].record(ri, self.record_size)
    }

    /// Mutable access to the record with this UID (copies its chunk if shared, decodes
    /// it if packed).
    pub fn get_mut(&mut self, uid: u32) -> Option<&mut [u8]> {
        let (ci, ri) = self.locate(uid)?;
        let rs = self.record_size;
        Arc::make_mut(&mut self.chunks[ci])
            .plain_mut(rs)
            .get_mut(ri * rs..(ri + 1) * rs)
    }

    /// Calls `f` for every record whose UID is in `lo..=hi`, mutably. Returns the UIDs
    /// visited. Only chunks that overlap the range are copied (and decoded).
    pub fn update_range(&mut self, lo: u32, hi: u32, mut f: impl FnMut(&mut [u8])) -> Vec<u32> {
        let mut touched = Vec::new();
        if lo > hi || self.chunks.is_empty() {
            return touched;
        }
        let rs = self.record_size;
        let start = match self.first_uids.binary_search(&lo) {
            Ok(i) => i,
            Err(0) => 0,
            Err(i) => i - 1,
        };
        for ci in start..self.chunks.len() {
            if self.first_uids[ci] > hi {
                break;
            }
            let chunk = &self.chunks[ci];
            let from = chunk.lower_bound(lo, rs);
            if from >= chunk.len(rs) || chunk.uid(from, rs) > hi {
                continue;
            }
            let bytes = Arc::make_mut(&mut self.chunks[ci]).plain_mut(rs);
            for rec in bytes[from * rs..].chunks_exact_mut(rs) {
                let u = record_uid(&*rec);
                if u > hi {
                    break;
                }
                f(rec);
                touched.push(u);
            }
        }
        touched
    }

    /// Removes the record with this UID; true if it existed.
    pub fn remove(&mut self, uid: u32) -> bool {
        let Some((ci, ri)) = self.locate(uid) else {
            return false;
        };
        let rs = self.record_size;
        let bytes = Arc::make_mut(&mut self.chunks[ci]).plain_mut(rs);
        bytes.drain(ri * rs..(ri + 1) * rs);
        if bytes.is_empty() {
            self.chunks.remove(ci);
            self.first_uids.remove(ci);
        } else if ri == 0 {
            self.first_uids[ci] = record_uid(&bytes[..]);
        }
        self.len -= 1;
        true
    }

    /// Iterates all records in UID order.
    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> {
        let rs = self.record_size;
        self.chunks
            .iter()
            .flat_map(move |c| (0..c.len(rs)).filter_map(move |i| c.record(i, rs)))
    }

    /// Rebuilds with a new record layout: `map(old_record, new_record)` fills each new
    /// record (pre-zeroed, `new_size` bytes). Touches every record; used only when an
    /// extension is added or resized. The result is sealed.
    pub fn relayout(&self, new_size: usize, mut map: impl FnMut(&[u8], &mut [u8])) -> Records {
        let mut out = Records::new(new_size);
        let mut buf = vec![0u8; out.record_size];
        for rec in self.iter() {
            buf.fill(0);
            map(&rec, &mut buf);
            out.push_sorted(&buf);
        }
        out.seal();
        out
    }

    /// What differs from `old` to `self`, by UID: records only in `self`, records only in
    /// `old`, and records in both whose bytes differ (flags, keywords, any extension such
    /// as the cache offset). Chunks the two share are skipped unseen, so the cost follows
    /// what a refresh touched. `None` when the record layouts differ (compare everything).
    pub fn delta(&self, old: &Records) -> Option<RecordDelta> {
        if self.record_size != old.record_size {
            return None;
        }
        let rs = self.record_size;
        let (a, b) = (&old.chunks, &self.chunks);
        let mut d = RecordDelta::default();
        let (mut ci, mut cj, mut i, mut j) = (0usize, 0usize, 0usize, 0usize);
        fn rec(c: &[Arc<Chunk>], ci: usize, i: usize, rs: usize) -> Option<Record<'_>> {
            c.get(ci).and_then(|c| c.record(i, rs))
        }
        loop {
            if i == 0 && j == 0 && ci < a.len() && cj < b.len() && Arc::ptr_eq(&a[ci], &b[cj]) {
                ci += 1;
                cj += 1;
                continue;
            }
            let (x, y) = (rec(a, ci, i, rs), rec(b, cj, j, rs));
            let (take_a, take_b) = match (x, y) {
                (None, None) => break,
                (Some(x), None) => {
                    d.removed.push(record_uid(x));
                    (true, false)
                }
                (None, Some(y)) => {
                    d.added.push(record_uid(y));
                    (false, true)
                }
                (Some(x), Some(y)) => match record_uid(x).cmp(&record_uid(y)) {
                    std::cmp::Ordering::Less => {
                        d.removed.push(record_uid(x));
                        (true, false)
                    }
                    std::cmp::Ordering::Greater => {
                        d.added.push(record_uid(y));
                        (false, true)
                    }
                    std::cmp::Ordering::Equal => {
                        if x != y {
                            d.changed.push(record_uid(y));
                        }
                        (true, true)
                    }
                },
            };
            if take_a {
                i += 1;
                if i >= a[ci].len(rs) {
                    (ci, i) = (ci + 1, 0);
                }
            }
            if take_b {
                j += 1;
                if j >= b[cj].len(rs) {
                    (cj, j) = (cj + 1, 0);
                }
            }
        }
        Some(d)
    }

    /// How many chunks two record sets share (for tests of structural sharing).
    pub fn shared_chunks(&self, other: &Records) -> usize {
        self.chunks
            .iter()
            .filter(|a| other.chunks.iter().any(|b| Arc::ptr_eq(a, b)))
            .count()
    }

    /// Heap bytes held (for the memory tests): the chunk list, the first UIDs and every
    /// chunk with its `Arc`, shared ones included.
    pub fn heap_bytes(&self) -> usize {
        let arc = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Chunk>();
        self.chunks.capacity() * std::mem::size_of::<Arc<Chunk>>()
            + self.first_uids.capacity() * std::mem::size_of::<u32>()
            + self
                .chunks
                .iter()
                .map(|c| arc + c.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::testutil::XorShift;

    #[test]
    fn delta_looks_only_at_unshared_chunks_and_finds_every_change() {
        let old = Records::from_sorted(
            8,
            (1..=(4 * CHUNK as u32))
                .map(|u| rec(u, 0))
                .collect::<Vec<_>>()
                .iter()
                .map(|r| &r[..]),
        );
        let mut new = old.clone();
        assert_eq!(new.delta(&old), Some(RecordDelta::default()));
        if let Some(r) = new.get_mut(3) {
            r[4] = 1;
        }
        assert!(new.remove(2 * CHUNK as u32 + 1));
        new.push_sorted(&rec(9 * CHUNK as u32, 0));
        let d = new.delta(&old).expect("same layout");
        assert_eq!(d.changed, vec![3]);
        assert_eq!(d.removed, vec![2 * CHUNK as u32 + 1]);
        assert_eq!(d.added, vec![9 * CHUNK as u32]);
        let other = Records::new(12);
        assert_eq!(other.delta(&old), None);
    }

    fn rec(uid: u32, flags: u8) -> [u8; 8] {
        let mut r = [0u8; 8];
        r[..4].copy_from_slice(&uid.to_le_bytes());
        r[4] = flags;
        r
    }

    fn build(uids: impl Iterator<Item = u32>) -> Records {
        let mut r = Records::new(8);
        for u in uids {
            r.push_sorted(&rec(u, 0));
        }
        r
    }

    #[test]
    fn finds_updates_and_removes_across_chunks() {
        let mut r = build((1..=2000).map(|u| u * 2));
        assert_eq!(r.len(), 2000);
        assert_eq!(r.get(1000).map(record_uid), Some(1000));
        assert!(r.get(1001).is_none());
        assert!(r.get(0).is_none() && r.get(5000).is_none());
        let touched = r.update_range(1020, 1030, |x| x[4] = 8);
        assert_eq!(touched, vec![1020, 1022, 1024, 1026, 1028, 1030]);
        assert_eq!(r.get(1024).map(|x| x[4]), Some(8));
        assert!(
            r.remove(CHUNK as u32 * 2 + 2),
            "first record of the second chunk"
        );
        assert!(!r.remove(CHUNK as u32 * 2 + 2));
        assert_eq!(r.len(), 1999);
        let all: Vec<u32> = r.iter().map(record_uid).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r.last_uid(), Some(4000));
    }

    #[test]
    fn a_refresh_shares_untouched_chunks() {
        let base = build(1..=(CHUNK as u32 * 10));
        let mut next = base.clone();
        next.push_sorted(&rec(CHUNK as u32 * 10 + 1, 0));
        next.update_range(3, 3, |x| x[4] = 1);
        // The first chunk (flag change) was copied; the append opened an 11th chunk
        // because the 10th was full; the other 9 are shared.
        assert_eq!(base.shared_chunks(&next), 9);
        assert_eq!(next.len(), CHUNK * 10 + 1);
        assert_eq!(
            base.get(3).map(|x| x[4]),
            Some(0),
            "the old view is unchanged"
        );
    }

    #[test]
    fn relayout_keeps_order_and_data() {
        let r = build(1..=700);
        let wide = r.relayout(16, |old, new| {
            new[..8].copy_from_slice(old);
            new[12] = 7;
        });
        assert_eq!(wide.len(), 700);
        assert_eq!(
            wide.get(650).map(|x| (record_uid(x), x[12])),
            Some((650, 7))
        );
    }

    /// A record of `rs` bytes for `uid`: mostly constant or counting words, some noise,
    /// as index records are.
    fn random_rec(rng: &mut XorShift, rs: usize, uid: u32) -> Vec<u8> {
        let mut r = vec![0u8; rs];
        for (i, b) in r.iter_mut().enumerate().skip(4) {
            *b = match rng.below(4) {
                0 => rng.next() as u8,
                1 => (uid as u8).wrapping_add(i as u8),
                _ => 0,
            };
        }
        if rng.below(3) == 0 {
            r[4] = rng.next() as u8;
        }
        r[..4].copy_from_slice(&uid.to_le_bytes());
        r
    }

    /// `r` holds exactly the model's records, through `get`, `iter`, `last_uid` and `len`.
    fn same_as(r: &Records, model: &std::collections::BTreeMap<u32, Vec<u8>>) {
        assert_eq!(r.len(), model.len());
        let all: Vec<Vec<u8>> = r.iter().map(|x| x.to_vec()).collect();
        let want: Vec<Vec<u8>> = model.values().cloned().collect();
        assert!(all == want, "iter differs from the model");
        for (&uid, rec) in model {
            assert_eq!(r.get(uid).as_deref(), Some(&rec[..]), "uid {uid}");
        }
        assert_eq!(r.last_uid(), model.keys().next_back().copied());
    }

    fn packed_chunks(r: &Records) -> usize {
        r.chunks.iter().filter(|c| c.is_packed()).count()
    }

    #[test]
    fn sealed_records_give_back_exactly_what_was_pushed_and_change_like_plain_ones() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for rs in [8usize, 12, 13, 36, 40, 64, 65, 100] {
            let mut model = std::collections::BTreeMap::new();
            let mut sealed = Records::new(rs);
            let mut uid = 0u32;
            for _ in 0..(3 * CHUNK + 77) {
                // Mostly counting UIDs, sometimes a gap, once a huge one.
                uid += 1 + if rng.below(10) == 0 {
                    rng.below(1000) as u32
                } else {
                    0
                };
                if model.len() == 2 * CHUNK {
                    uid += 3_000_000_000;
                }
                let rec = random_rec(&mut rng, rs, uid);
                sealed.push_sorted(&rec);
                model.insert(uid, rec);
            }
            // A plain copy: the same records, never packed.
            let mut plain = Records::new(rs);
            for c in &sealed.chunks {
                plain.chunks.push(Arc::new(Chunk::Plain(
                    (0..c.len(rs))
                        .flat_map(|i| c.record(i, rs).unwrap().to_vec())
                        .collect(),
                )));
            }
            plain.first_uids = sealed.first_uids.clone();
            plain.len = sealed.len;
            let packable = rs <= INLINE;
            let filled = if packable { 3 } else { 0 };
            assert_eq!(
                packed_chunks(&sealed),
                filled,
                "appends pack a chunk they fill"
            );
            sealed.seal();
            assert_eq!(packed_chunks(&sealed), filled, "rs {rs}");
            assert_eq!(packed_chunks(&plain), 0);
            same_as(&sealed, &model);
            same_as(&plain, &model);
            assert_eq!(sealed, plain);
            assert_eq!(sealed.delta(&plain), Some(RecordDelta::default()));

            let uids: Vec<u32> = model.keys().copied().collect();
            for round in 0..40 {
                let pick = uids[rng.below(uids.len() as u64) as usize];
                match round % 5 {
                    0 => {
                        let b = rng.next() as u8;
                        let at = 4 + rng.below(rs as u64 - 4) as usize;
                        for r in [&mut sealed, &mut plain] {
                            if let Some(x) = r.get_mut(pick) {
                                x[at] = b;
                            }
                        }
                        if let Some(x) = model.get_mut(&pick) {
                            x[at] = b;
                        }
                    }
                    1 => {
                        let hi = pick.saturating_add(rng.below(800) as u32);
                        let f = |x: &mut [u8]| x[rs - 1] ^= 0x5a;
                        let t1 = sealed.update_range(pick, hi, f);
                        let t2 = plain.update_range(pick, hi, f);
                        let mut t3 = Vec::new();
                        for (&u, x) in model.range_mut(pick..=hi) {
                            f(x);
                            t3.push(u);
                        }
                        assert_eq!(t1, t3);
                        assert_eq!(t2, t3);
                    }
                    2 => {
                        let had = model.remove(&pick).is_some();
                        assert_eq!(sealed.remove(pick), had);
                        assert_eq!(plain.remove(pick), had);
                    }
                    3 => {
                        let next = model.keys().next_back().map_or(1, |u| u + 1);
                        let rec = random_rec(&mut rng, rs, next);
                        sealed.push_sorted(&rec);
                        plain.push_sorted(&rec);
                        model.insert(next, rec);
                    }
                    _ => sealed.seal(),
                }
                same_as(&sealed, &model);
                same_as(&plain, &model);
            }
            sealed.seal();
            same_as(&sealed, &model);
            assert_eq!(sealed, plain);
            assert_eq!(sealed.delta(&plain), Some(RecordDelta::default()));
            if packable {
                let last = sealed.chunks.len() - 1;
                assert!(sealed.chunks[..last].iter().all(|c| c.is_packed()));
            }
        }
    }

    #[test]
    fn sealing_a_changed_clone_keeps_every_untouched_chunk_shared() {
        let mut rng = XorShift(7);
        let n = 6 * CHUNK as u32 + 100;
        let mut old = Records::new(36);
        for uid in 1..=n {
            old.push_sorted(&random_rec(&mut rng, 36, uid));
        }
        old.seal();
        assert_eq!(packed_chunks(&old), 6);
        let mut new = old.clone();
        let uid = 2 * CHUNK as u32 + 5;
        if let Some(x) = new.get_mut(uid) {
            x[20] ^= 1;
        }
        assert!(!new.chunks[2].is_packed(), "a changed chunk is decoded");
        new.seal();
        assert!(new.chunks[2].is_packed(), "and packed again by seal");
        assert!(!Arc::ptr_eq(&old.chunks[2], &new.chunks[2]));
        for (i, (a, b)) in old.chunks.iter().zip(&new.chunks).enumerate() {
            if i != 2 {
                assert!(Arc::ptr_eq(a, b), "chunk {i} is still shared");
            }
        }
        assert_eq!(old.shared_chunks(&new), old.chunks.len() - 1);
        let d = new.delta(&old).expect("same layout");
        assert_eq!(d.changed, vec![uid]);
        assert!(d.added.is_empty() && d.removed.is_empty());
        assert_eq!(old.get(uid).map(|x| x[20] ^ 1), new.get(uid).map(|x| x[20]));
    }

    /// Heap bytes per record of `n` records made by `rec(uid)`, after every chunk was
    /// decoded by a change to every record (their flags) and then sealed.
    fn bytes_per_record(rs: usize, n: u32, rec: impl Fn(u32) -> Vec<u8>) -> f64 {
        let mut r = Records::new(rs);
        for uid in 1..=n {
            let mut x = rec(uid);
            x[4] = 0;
            r.push_sorted(&x);
        }
        r.update_range(1, u32::MAX, |x| x[4] = rec(record_uid(&*x))[4]);
        assert_eq!(packed_chunks(&r), 0, "a change decodes its chunks");
        r.seal();
        assert!(r.iter().map(|x| x.to_vec()).eq((1..=n).map(&rec)));
        r.heap_bytes() as f64 / f64::from(n)
    }

    #[test]
    fn sealed_records_take_far_less_than_their_bytes() {
        // Maildir: uid, flags, and a cache offset not yet written.
        let maildir = bytes_per_record(12, 100_000, |uid| {
            let mut r = vec![0u8; 12];
            r[..4].copy_from_slice(&uid.to_le_bytes());
            r[4] = 0x08; // \Seen
            r
        });
        // mdbox: uid, flags, cache offset (growing), map uid (counting with the UID),
        // save date, keywords, modseq (8 bytes), and 4 bytes more.
        let mut rng = XorShift(11);
        let cache: Vec<u32> = (0..=100_000u32)
            .scan(4096u32, |at, _| {
                *at += 200 + rng.below(400) as u32;
                Some(*at)
            })
            .collect();
        let mdbox = bytes_per_record(36, 100_000, |uid| {
            let mut r = vec![0u8; 36];
            r[..4].copy_from_slice(&uid.to_le_bytes());
            r[4] = 0x08;
            r[8..12].copy_from_slice(&cache[uid as usize].to_le_bytes());
            r[12..16].copy_from_slice(&(uid + 70_000).to_le_bytes());
            r[16..20].copy_from_slice(&(1_700_000_000 + uid * 7).to_le_bytes());
            r[24..32].copy_from_slice(&u64::from(uid + 3).to_le_bytes());
            r
        });
        // Maildir again, every message cached.
        let cached = bytes_per_record(12, 100_000, |uid| {
            let mut r = vec![0u8; 12];
            r[..4].copy_from_slice(&uid.to_le_bytes());
            r[4] = 0x08;
            r[8..12].copy_from_slice(&cache[uid as usize].to_le_bytes());
            r
        });
        // The mdbox map index: uid, flags, file id, offset in it, size.
        let map = bytes_per_record(20, 100_000, |uid| {
            let mut r = vec![0u8; 20];
            r[..4].copy_from_slice(&uid.to_le_bytes());
            r[8..12].copy_from_slice(&(uid / 300 + 1).to_le_bytes());
            r[12..16].copy_from_slice(&((uid % 300) * 3000).to_le_bytes());
            r[16..20].copy_from_slice(&(2000 + uid % 1000).to_le_bytes());
            r
        });
        eprintln!(
            "heap bytes per record: maildir {maildir:.2} (cached {cached:.2}), mdbox {mdbox:.2}, \
             map {map:.2}"
        );
        assert!(maildir < 2.0, "{maildir} bytes per 12-byte record");
        assert!(cached < 5.0, "{cached} bytes per cached 12-byte record");
        assert!(mdbox < 12.0, "{mdbox} bytes per 36-byte record");
        assert!(map < 10.0, "{map} bytes per 20-byte record");
    }
}
