//! Message records of an index view, stored so that a refresh costs what changed.
//!
//! Records are fixed-size byte strings laid out as in `dovecot.index` (uid at 0, flags at
//! 4, extension bytes at their `record_offset`), kept sorted by UID in chunks of at most
//! [`CHUNK`] records behind `Arc`s. Cloning a `Records` copies only the chunk pointers;
//! changing a record copies only its chunk (copy on write). So a view and its refreshed
//! successor share every chunk the refresh did not touch.
//!
//! Memory: `record_size` bytes per message plus, per chunk, one `Arc` (16 bytes of
//! header + the `Vec`) -- under 0.1 byte per message at `CHUNK` = 512.

use std::sync::Arc;

/// Most records in one chunk. Appends fill the last chunk up to this size.
pub const CHUNK: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Chunk {
    /// `len * record_size` bytes.
    bytes: Vec<u8>,
}

/// UID-sorted fixed-size records with structural sharing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records {
    record_size: usize,
    chunks: Vec<Arc<Chunk>>,
    /// First UID of each chunk (same length as `chunks`; chunks are never empty).
    first_uids: Vec<u32>,
    len: usize,
}

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

/// Reads the UID (bytes 0..4) of a record.
pub fn record_uid(rec: &[u8]) -> u32 {
    crate::format::index::record_uid(rec).unwrap_or(0)
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
        Some(record_uid(&c.bytes[c.bytes.len() - rs..]))
    }

    /// Appends a record whose UID is above every present one (the caller checks). The
    /// record is truncated or zero-padded to `record_size`.
    pub fn push_sorted(&mut self, rec: &[u8]) {
        let rs = self.record_size;
        let uid = record_uid(rec);
        let need_new = self
            .chunks
            .last()
            .is_none_or(|c| c.bytes.len() / rs >= CHUNK);
        if need_new {
            self.chunks.push(Arc::new(Chunk {
                bytes: Vec::with_capacity(rs * 16),
            }));
            self.first_uids.push(uid);
        }
        let Some(last) = self.chunks.last_mut() else {
            return;
        };
        let bytes = &mut Arc::make_mut(last).bytes;
        let start = bytes.len();
        bytes.resize(start + rs, 0);
        let n = rec.len().min(rs);
        bytes[start..start + n].copy_from_slice(&rec[..n]);
        self.len += 1;
    }

    /// Locates a UID: (chunk index, record index within chunk).
    fn locate(&self, uid: u32) -> Option<(usize, usize)> {
        let ci = match self.first_uids.binary_search(&uid) {
            Ok(i) => return Some((i, 0)),
            Err(0) => return None,
            Err(i) => i - 1,
        };
        let rs = self.record_size;
        let bytes = &self.chunks[ci].bytes;
        let n = bytes.len() / rs;
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let u = record_uid(&bytes[mid * rs..]);
            match u.cmp(&uid) {
                std::cmp::Ordering::Equal => return Some((ci, mid)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// The record with this UID.
    pub fn get(&self, uid: u32) -> Option<&[u8]> {
        let (ci, ri) = self.locate(uid)?;
        let rs = self.record_size;
        self.chunks[ci].bytes.get(ri * rs..(ri + 1) * rs)
    }

    /// Mutable access to the record with this UID (copies its chunk if shared).
    pub fn get_mut(&mut self, uid: u32) -> Option<&mut [u8]> {
        let (ci, ri) = self.locate(uid)?;
        let rs = self.record_size;
        Arc::make_mut(&mut self.chunks[ci])
            .bytes
            .get_mut(ri * rs..(ri + 1) * rs)
    }

    /// Calls `f` for every record whose UID is in `lo..=hi`, mutably. Returns the UIDs
    /// visited. Only chunks that overlap the range are copied.
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
            let n = chunk.bytes.len() / rs;
            let any = (0..n).any(|i| {
                let u = record_uid(&chunk.bytes[i * rs..]);
                u >= lo && u <= hi
            });
            if !any {
                continue;
            }
            let bytes = &mut Arc::make_mut(&mut self.chunks[ci]).bytes;
            for rec in bytes.chunks_exact_mut(rs) {
                let u = record_uid(rec);
                if u >= lo && u <= hi {
                    f(rec);
                    touched.push(u);
                }
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
        let bytes = &mut Arc::make_mut(&mut self.chunks[ci]).bytes;
        bytes.drain(ri * rs..(ri + 1) * rs);
        if bytes.is_empty() {
            self.chunks.remove(ci);
            self.first_uids.remove(ci);
        } else if ri == 0 {
            self.first_uids[ci] = record_uid(bytes);
        }
        self.len -= 1;
        true
    }

    /// Iterates all records in UID order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let rs = self.record_size;
        self.chunks
            .iter()
            .flat_map(move |c| c.bytes.chunks_exact(rs))
    }

    /// Rebuilds with a new record layout: `map(old_record, new_record)` fills each new
    /// record (pre-zeroed, `new_size` bytes). Touches every record; used only when an
    /// extension is added or resized.
    pub fn relayout(&self, new_size: usize, mut map: impl FnMut(&[u8], &mut [u8])) -> Records {
        let mut out = Records::new(new_size);
        let mut buf = vec![0u8; out.record_size];
        for rec in self.iter() {
            buf.fill(0);
            map(rec, &mut buf);
            out.push_sorted(&buf);
        }
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
        fn rec(c: &[Arc<Chunk>], ci: usize, i: usize, rs: usize) -> Option<&[u8]> {
            c.get(ci).and_then(|c| c.bytes.get(i * rs..(i + 1) * rs))
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
                if i * rs >= a[ci].bytes.len() {
                    (ci, i) = (ci + 1, 0);
                }
            }
            if take_b {
                j += 1;
                if j * rs >= b[cj].bytes.len() {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
