//! The in-memory index ("map" in Dovecot's terms): base header, extensions in ext_id
//! order, keyword names and the message records; plus the rules that apply transaction-log
//! records to it (Dovecot's `mail_index_sync_record()` and friends in
//! `src/lib-index/mail-index-sync-{update,ext,keywords}.c`, 2.3.19.1).
//!
//! Invariants kept by [`Applier`]:
//! - records are sorted by UID, every UID is non-zero and below `next_uid`;
//! - `next_uid` never decreases;
//! - `exts[i]` is the extension a log record calls ext_id `i`, and each extension's record
//!   bytes lie inside `record_size` at `record_offset` (laid out as `sync_ext_reorder`);
//! - `keywords[i]` is the name of bit `i` of the `keywords` extension's record bitmask.
//!
//! A record that breaks the format's rules is an error: the caller keeps its previous state
//! (a refresh is all or nothing), so a damaged log never yields a half-applied view.

use crate::format::FormatError;
use crate::format::index::{
    BASE_HEADER_SIZE, EXT_HEADER_MAX_SIZE, EXT_RECORD_MAX_SIZE, IndexFile, IndexHeader,
    KEYWORDS_EXT, RECORD_MIN_SIZE, layout_records,
};
use crate::format::log::{self, ExtIntro, Record};
use crate::format::{MailFlags, le};

use super::records::{Records, record_uid};

/// Offset of `log_file_tail_offset` in the base header (`struct mail_index_header`).
const TAIL_OFFSET_AT: usize = 64;
/// Offset of `next_uid` in the base header.
const NEXT_UID_AT: usize = 28;
/// Offsets of the counters the sync code maintains (`messages_count`,
/// `seen_messages_count`, `deleted_messages_count`).
const MESSAGES_COUNT_AT: usize = 32;
const SEEN_COUNT_AT: usize = 40;
const DELETED_COUNT_AT: usize = 44;
/// `MAIL_TRANSACTION_EXT_INTRO_FLAG_NO_SHRINK`.
const INTRO_NO_SHRINK: u16 = 0x01;

/// One extension of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext {
    /// Its registered name (`cache`, `keywords`, `mdbox`, `map`, ...).
    pub name: String,
    /// Reset generation; updates introduced with another reset_id are ignored.
    pub reset_id: u32,
    /// Extension header bytes (`hdr_size` long).
    pub hdr: Vec<u8>,
    /// Where its bytes start inside each record (0 if none).
    pub record_offset: u16,
    /// Bytes per record (0 = header-only extension).
    pub record_size: u16,
    /// Alignment of the record bytes.
    pub record_align: u16,
}

impl Ext {
    /// This extension's bytes inside one record.
    pub fn slice<'r>(&self, rec: &'r [u8]) -> Option<&'r [u8]> {
        if self.record_size == 0 {
            return None;
        }
        let start = usize::from(self.record_offset);
        rec.get(start..start + usize::from(self.record_size))
    }
}

/// The whole index state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexState {
    /// Base header bytes (at least [`BASE_HEADER_SIZE`]).
    pub base: Vec<u8>,
    /// Extensions in ext_id order.
    pub exts: Vec<Ext>,
    /// Keyword names in keyword-index order.
    pub keywords: Vec<String>,
    /// Message records sorted by UID.
    pub records: Records,
}

/// What a batch of records changed, by UID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// New messages.
    pub appended: Vec<u32>,
    /// Removed messages.
    pub expunged: Vec<u32>,
    /// Messages whose flags, keywords or extension data changed.
    pub changed: Vec<u32>,
    /// The index was reset or replaced (new UIDVALIDITY or index identity): treat every
    /// message as new.
    pub reset: bool,
}

impl Delta {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.reset
            && self.appended.is_empty()
            && self.expunged.is_empty()
            && self.changed.is_empty()
    }

    /// Sorts and de-duplicates the lists; drops `changed` entries for messages that were
    /// appended or expunged in the same batch.
    pub fn normalize(&mut self) {
        for v in [&mut self.appended, &mut self.expunged, &mut self.changed] {
            v.sort_unstable();
            v.dedup();
        }
        let (app, exp) = (&self.appended, &self.expunged);
        self.changed
            .retain(|u| app.binary_search(u).is_err() && exp.binary_search(u).is_err());
        // A message appended and expunged in the same batch was never seen by the
        // holder of the previous view: it is neither new nor gone.
        let both: Vec<u32> = app
            .iter()
            .copied()
            .filter(|u| exp.binary_search(u).is_ok())
            .collect();
        self.appended.retain(|u| both.binary_search(u).is_err());
        self.expunged.retain(|u| both.binary_search(u).is_err());
    }
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl IndexState {
    /// The state of a mailbox with no `dovecot.index`, before its log is applied
    /// (`mail_index_header` defaults: major 7, minor 3, next_uid 1, first_recent_uid 1).
    pub fn empty(indexid: u32) -> IndexState {
        let hdr = IndexHeader {
            major_version: 7,
            minor_version: 3,
            base_header_size: BASE_HEADER_SIZE as u16,
            header_size: BASE_HEADER_SIZE as u32,
            record_size: 8,
            compat_flags: 1,
            indexid,
            flags: 0,
            uid_validity: 0,
            next_uid: 1,
            messages_count: 0,
            seen_messages_count: 0,
            deleted_messages_count: 0,
            first_recent_uid: 1,
            first_unseen_uid_lowwater: 0,
            first_deleted_uid_lowwater: 0,
            log_file_seq: 0,
            log_file_tail_offset: 0,
            log_file_head_offset: 0,
            log2_rotate_time: 0,
            last_temp_file_scan: 0,
            day_stamp: 0,
            day_first_uid: [0; 8],
        };
        IndexState {
            base: hdr.to_base_bytes().to_vec(),
            exts: Vec::new(),
            keywords: Vec::new(),
            records: Records::new(8),
        }
    }

    /// The state a `dovecot.index` snapshot holds.
    pub fn from_file(file: &IndexFile) -> Result<IndexState, FormatError> {
        check_record_layout(file)?;
        let exts: Vec<Ext> = file
            .extensions
            .iter()
            .map(|e| Ext {
                name: e.name.clone(),
                reset_id: e.reset_id,
                hdr: e.data.clone(),
                record_offset: e.record_offset,
                record_size: e.record_size,
                record_align: e.record_align,
            })
            .collect();
        let keywords = match exts.iter().find(|e| e.name == KEYWORDS_EXT) {
            Some(k) => {
                let names = crate::format::index::parse_keywords_header(&k.hdr)?;
                // mail_index_map_parse_keywords(): every keyword needs a bit in the record.
                if usize::from(k.record_size) * 8 < names.len() {
                    return Err(FormatError::new(
                        0,
                        format!(
                            "{} keywords do not fit into the {}-byte keyword bitmask",
                            names.len(),
                            k.record_size
                        ),
                    ));
                }
                names
            }
            None => Vec::new(),
        };
        let record_size = file.header.record_size as usize;
        // Bits past the last keyword mean nothing (Dovecot only ever looks up bits below
        // the keyword count); clear them so that equal states compare equal. Cleared
        // while the records are pushed, before their chunks are packed.
        let mut clear = None;
        if let Some(k) = exts.iter().find(|e| e.name == KEYWORDS_EXT)
            && k.record_size > 0
        {
            let (off, size, n) = (
                usize::from(k.record_offset),
                usize::from(k.record_size),
                keywords.len(),
            );
            if n < size * 8 {
                clear = Some((off, size, n));
            }
        }
        let mut records = Records::new(record_size);
        let mut buf = Vec::with_capacity(record_size);
        for rec in &file.records {
            buf.clear();
            buf.extend_from_slice(rec);
            if let Some((off, size, n)) = clear
                && let Some(bits) = buf.get_mut(off..off + size)
            {
                for (i, b) in bits.iter_mut().enumerate() {
                    let keep = n.saturating_sub(i * 8).min(8);
                    *b &= if keep == 8 { 0xff } else { (1u8 << keep) - 1 };
                }
            }
            records.push_sorted(&buf);
        }
        records.seal();
        let mut base = file.base_bytes.clone();
        if base.len() < BASE_HEADER_SIZE {
            base.resize(BASE_HEADER_SIZE, 0);
        }
        Ok(IndexState {
            base,
            exts,
            keywords,
            records,
        })
    }

    /// The decoded base header.
    pub fn header(&self) -> IndexHeader {
        let mut raw = [0u8; BASE_HEADER_SIZE];
        let n = self.base.len().min(BASE_HEADER_SIZE);
        raw[..n].copy_from_slice(&self.base[..n]);
        let mut h = IndexHeader::from_base_bytes(&raw);
        h.record_size = self.records.record_size() as u32;
        h.messages_count = self.records.len() as u32;
        h
    }

    /// An extension by name, with its ext_id.
    pub fn ext(&self, name: &str) -> Option<(usize, &Ext)> {
        self.exts.iter().enumerate().find(|(_, e)| e.name == name)
    }

    /// Keyword names set in a record, in keyword-index order.
    pub fn record_keywords(&self, rec: &[u8]) -> Vec<&str> {
        self.record_keyword_indexes(rec)
            .map(|i| self.keywords[i].as_str())
            .collect()
    }

    /// Indexes (into [`IndexState::keywords`]) of the keywords set in a record, in order.
    pub fn record_keyword_indexes<'a>(&'a self, rec: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        let bits = self
            .ext(KEYWORDS_EXT)
            .and_then(|(_, ext)| ext.slice(rec))
            .unwrap_or_default();
        (0..self.keywords.len())
            .filter(move |i| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
    }

    fn next_uid(&self) -> u32 {
        le::u32_at(&self.base, NEXT_UID_AT).unwrap_or(0)
    }

    /// Lays records out again after extension sizes changed (`sync_ext_reorder`):
    /// `grown` is (ext index, old record size) for an extension whose record grew, so
    /// that only its old bytes are copied.
    fn relayout(&mut self, old: &[(u16, u16)], grown: Option<(usize, u16)>) -> Result<(), String> {
        let sizes: Vec<(u16, u16)> = self
            .exts
            .iter()
            .map(|e| (e.record_size, e.record_align))
            .collect();
        let (offsets, record_size) = layout_records(&sizes)
            .ok_or_else(|| format!("extensions {sizes:?} cannot be laid out in a record"))?;
        let moves: Vec<(usize, usize, usize)> = self
            .exts
            .iter()
            .enumerate()
            .filter(|(_, e)| e.record_size > 0)
            .map(|(i, e)| {
                let (old_off, old_size) = old.get(i).copied().unwrap_or((0, 0));
                let mut copy = usize::from(e.record_size.min(old_size));
                if let Some((g, old_len)) = grown
                    && g == i
                {
                    copy = copy.min(usize::from(old_len));
                }
                (usize::from(old_off), usize::from(offsets[i]), copy)
            })
            .collect();
        self.records = self.records.relayout(record_size as usize, |src, dst| {
            // uid and flags, then each extension's bytes at their new offset; bytes that
            // belong to no extension stay zero.
            let base = src.len().min(RECORD_MIN_SIZE as usize).min(dst.len());
            dst[..base].copy_from_slice(&src[..base]);
            for &(from, to, len) in &moves {
                if len == 0 || from == 0 {
                    continue;
                }
                if let (Some(s), Some(d)) = (src.get(from..from + len), dst.get_mut(to..to + len)) {
                    d.copy_from_slice(s);
                }
            }
        });
        for (e, off) in self.exts.iter_mut().zip(offsets) {
            e.record_offset = if e.record_size > 0 { off } else { 0 };
        }
        Ok(())
    }

    fn layout_snapshot(&self) -> Vec<(u16, u16)> {
        self.exts
            .iter()
            .map(|e| (e.record_offset, e.record_size))
            .collect()
    }

    /// Adds an extension at the end of the list (a new ext_id) and lays records out again.
    fn add_ext(
        &mut self,
        name: String,
        reset_id: u32,
        hdr_size: u32,
        rec: (u16, u16),
    ) -> Result<usize, String> {
        let old = self.layout_snapshot();
        self.exts.push(Ext {
            name,
            reset_id,
            hdr: vec![0; hdr_size as usize],
            record_offset: 0,
            record_size: rec.0,
            record_align: rec.1,
        });
        // Even a header-only extension can change the record size: it is rounded up to the
        // largest alignment of all extensions (`sync_ext_reorder`).
        self.relayout(&old, None)?;
        Ok(self.exts.len() - 1)
    }
}

/// Where extension updates currently go (Dovecot's `cur_ext_map_idx`/`cur_ext_ignore`).
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// No intro seen yet.
    None,
    /// After an intro: updates go to `ext`, with record stride from the intro's size.
    Ext {
        ext: usize,
        record_size: u16,
        ignore: bool,
    },
}

/// Applies decoded log records to a state, collecting a [`Delta`].
#[derive(Debug)]
pub struct Applier<'s> {
    st: &'s mut IndexState,
    cursor: Cursor,
    /// What changed.
    pub delta: Delta,
    /// Records of types this reader does not know (skipped, as Dovecot does).
    pub unknown_records: u32,
    /// An external INDEX_DELETED was seen: the mailbox is being deleted.
    pub deleted: bool,
}

fn corrupt(offset: u64, what: impl Into<String>) -> FormatError {
    FormatError {
        offset,
        what: what.into(),
    }
}

impl<'s> Applier<'s> {
    /// Starts applying to `st`.
    pub fn new(st: &'s mut IndexState) -> Applier<'s> {
        Applier {
            st,
            cursor: Cursor::None,
            delta: Delta::default(),
            unknown_records: 0,
            deleted: false,
        }
    }

    /// Applies one framed record.
    pub fn apply(&mut self, raw: &log::RawRecord<'_>) -> Result<(), FormatError> {
        let at = raw.offset;
        let external = raw.is_external();
        match log::decode(raw)? {
            Record::Append(recs) => {
                for r in recs {
                    let next = self.st.next_uid();
                    if r.uid < next || r.uid == 0 {
                        return Err(corrupt(
                            at,
                            format!("append uid {} below next_uid {next}", r.uid),
                        ));
                    }
                    let mut rec = vec![0u8; self.st.records.record_size()];
                    rec[..4].copy_from_slice(&r.uid.to_le_bytes());
                    rec[4] = r.flags;
                    self.st.records.push_sorted(&rec);
                    put_u32(&mut self.st.base, NEXT_UID_AT, r.uid + 1);
                    self.count_flags(0, r.flags);
                    self.delta.appended.push(r.uid);
                }
            }
            Record::Expunge { ranges, .. } => {
                if external {
                    for (lo, hi) in ranges {
                        let uids = self.st.records.update_range(lo, hi, |_| {});
                        self.expunge(&uids);
                    }
                }
            }
            Record::ExpungeGuid { items, .. } => {
                if external {
                    let uids: Vec<u32> = items.iter().map(|(u, _)| *u).collect();
                    self.expunge(&uids);
                }
            }
            Record::FlagUpdate(updates) => {
                for u in updates {
                    let mut changes = Vec::new();
                    let touched = self.st.records.update_range(u.uid1, u.uid2, |rec| {
                        let old = rec[4];
                        rec[4] = (old & !u.remove) | u.add;
                        changes.push((old, rec[4]));
                    });
                    for (old, new) in changes {
                        self.count_flags(old, new);
                    }
                    self.delta.changed.extend(touched);
                }
            }
            Record::HeaderUpdate(items) => {
                let tail = le::u32_at(&self.st.base, TAIL_OFFSET_AT).unwrap_or(0);
                let next = self.st.next_uid();
                for item in items {
                    let start = item.offset as usize;
                    let end = start + item.data.len();
                    let Some(dst) = self.st.base.get_mut(start..end) else {
                        return Err(corrupt(at, "header update outside the base header"));
                    };
                    dst.copy_from_slice(item.data);
                }
                // The tail offset is the syncing process's bookkeeping; next_uid only grows.
                put_u32(&mut self.st.base, TAIL_OFFSET_AT, tail);
                if self.st.next_uid() < next {
                    put_u32(&mut self.st.base, NEXT_UID_AT, next);
                }
            }
            Record::ExtIntro(intros) => {
                for intro in intros {
                    self.intro(&intro, at)?;
                }
            }
            Record::ExtReset {
                new_reset_id,
                preserve_data,
            } => {
                let Cursor::Ext { ext, .. } = self.cursor else {
                    return Err(corrupt(at, "extension reset without intro"));
                };
                let e = &mut self.st.exts[ext];
                e.reset_id = new_reset_id;
                if !preserve_data {
                    e.hdr.iter_mut().for_each(|b| *b = 0);
                    let (off, size) = (usize::from(e.record_offset), usize::from(e.record_size));
                    if size > 0 {
                        let touched = self.st.records.update_range(1, u32::MAX, |rec| {
                            if let Some(s) = rec.get_mut(off..off + size) {
                                s.fill(0);
                            }
                        });
                        self.delta.changed.extend(touched);
                    }
                }
            }
            Record::ExtHdrUpdate(items) | Record::ExtHdrUpdate32(items) => {
                let Cursor::Ext { ext, ignore, .. } = self.cursor else {
                    return Err(corrupt(at, "extension header update without intro"));
                };
                if !ignore {
                    let hdr = &mut self.st.exts[ext].hdr;
                    for item in items {
                        let start = item.offset as usize;
                        let Some(dst) = hdr.get_mut(start..start + item.data.len()) else {
                            return Err(corrupt(at, "extension header update outside its header"));
                        };
                        dst.copy_from_slice(item.data);
                    }
                }
            }
            Record::ExtRecUpdate(payload) => {
                let Some((ext, record_size)) = self.ext_target(at, "record update")? else {
                    return Ok(());
                };
                let next = self.st.next_uid();
                let e = &self.st.exts[ext];
                let (off, size) = (usize::from(e.record_offset), usize::from(e.record_size));
                if usize::from(record_size) > size {
                    return Err(corrupt(
                        at,
                        "extension record update larger than the record",
                    ));
                }
                for (uid, data) in log::ext_rec_updates(payload, record_size, at)? {
                    if uid == 0 || uid >= next {
                        return Err(corrupt(
                            at,
                            format!("extension record update for uid {uid}"),
                        ));
                    }
                    if let Some(rec) = self.st.records.get_mut(uid)
                        && let Some(dst) = rec.get_mut(off..off + size)
                    {
                        let n = data.len().min(size);
                        dst[..n].copy_from_slice(&data[..n]);
                        dst[n..].fill(0);
                        self.delta.changed.push(uid);
                    }
                }
            }
            Record::ExtAtomicInc(items) => {
                let Some((ext, record_size)) = self.ext_target(at, "increment")? else {
                    return Ok(());
                };
                let next = self.st.next_uid();
                let off = usize::from(self.st.exts[ext].record_offset);
                let width = usize::from(record_size);
                if !matches!(width, 1 | 2 | 4 | 8) {
                    return Err(corrupt(
                        at,
                        format!("extension increment of a {width}-byte value"),
                    ));
                }
                for (uid, diff) in items {
                    if uid == 0 || uid >= next {
                        return Err(corrupt(at, format!("extension increment for uid {uid}")));
                    }
                    let Some(rec) = self.st.records.get_mut(uid) else {
                        continue;
                    };
                    let Some(field) = rec.get_mut(off..off + width) else {
                        return Err(corrupt(at, "extension increment outside the record"));
                    };
                    let mut buf = [0u8; 8];
                    buf[..width].copy_from_slice(field);
                    let cur = u64::from_le_bytes(buf);
                    let max = if width == 8 {
                        u64::MAX
                    } else {
                        (1u64 << (width * 8)) - 1
                    };
                    // Dovecot skips an increment that would leave the value's range.
                    let new = if diff >= 0 {
                        cur.checked_add(diff as u64).filter(|v| *v <= max)
                    } else {
                        cur.checked_sub(u64::from(diff.unsigned_abs()))
                    };
                    match new {
                        Some(v) => {
                            field.copy_from_slice(&v.to_le_bytes()[..width]);
                            self.delta.changed.push(uid);
                        }
                        None => {
                            return Err(corrupt(
                                at,
                                format!("extension increment of uid {uid} leaves its range"),
                            ));
                        }
                    }
                }
            }
            Record::KeywordUpdate { add, name, ranges } => {
                let name = String::from_utf8_lossy(name).into_owned();
                let idx = match self
                    .st
                    .keywords
                    .iter()
                    .position(|k| k.eq_ignore_ascii_case(&name))
                {
                    Some(i) => i,
                    None => self.add_keyword(name).map_err(|e| corrupt(at, e))?,
                };
                let size = self.st.ext(KEYWORDS_EXT).map_or(0, |(_, e)| e.record_size);
                if idx / 8 >= usize::from(size) {
                    if !add {
                        return Ok(());
                    }
                    self.grow_keywords().map_err(|e| corrupt(at, e))?;
                }
                let Some((_, ext)) = self.st.ext(KEYWORDS_EXT) else {
                    return Err(corrupt(at, "keywords extension missing"));
                };
                if idx / 8 >= usize::from(ext.record_size) {
                    return Err(corrupt(at, "keyword index beyond the keyword bitmask"));
                }
                let byte = usize::from(ext.record_offset) + idx / 8;
                let mask = 1u8 << (idx % 8);
                for (lo, hi) in ranges {
                    let touched = self.st.records.update_range(lo, hi, |rec| {
                        if let Some(b) = rec.get_mut(byte) {
                            if add { *b |= mask } else { *b &= !mask }
                        }
                    });
                    self.delta.changed.extend(touched);
                }
            }
            Record::KeywordReset(ranges) => {
                if let Some((_, ext)) = self.st.ext(KEYWORDS_EXT) {
                    let (off, size) =
                        (usize::from(ext.record_offset), usize::from(ext.record_size));
                    for (lo, hi) in ranges {
                        let touched = self.st.records.update_range(lo, hi, |rec| {
                            if let Some(s) = rec.get_mut(off..off + size) {
                                s.fill(0);
                            }
                        });
                        self.delta.changed.extend(touched);
                    }
                }
            }
            Record::ModseqUpdate(_) | Record::Boundary { .. } | Record::AttributeUpdate(_) => {}
            Record::IndexDeleted => self.deleted = external || self.deleted,
            Record::IndexUndeleted => self.deleted = false,
            Record::Unknown(_) => self.unknown_records += 1,
        }
        Ok(())
    }

    /// The extension and record stride that extension record updates go to, or `None`
    /// when the current intro said to ignore them (an outdated reset_id).
    fn ext_target(&self, at: u64, what: &str) -> Result<Option<(usize, u16)>, FormatError> {
        match self.cursor {
            Cursor::None => Err(corrupt(at, format!("extension {what} without intro"))),
            Cursor::Ext { ignore: true, .. } => Ok(None),
            Cursor::Ext {
                ext, record_size, ..
            } => Ok(Some((ext, record_size))),
        }
    }

    fn count_flags(&mut self, old: u8, new: u8) {
        for (bit, at) in [
            (MailFlags::SEEN.0, SEEN_COUNT_AT),
            (MailFlags::DELETED.0, DELETED_COUNT_AT),
        ] {
            let c = le::u32_at(&self.st.base, at).unwrap_or(0);
            let c = match (old & bit != 0, new & bit != 0) {
                (false, true) => c.saturating_add(1),
                (true, false) => c.saturating_sub(1),
                _ => c,
            };
            put_u32(&mut self.st.base, at, c);
        }
        put_u32(
            &mut self.st.base,
            MESSAGES_COUNT_AT,
            self.st.records.len() as u32,
        );
    }

    fn expunge(&mut self, uids: &[u32]) {
        for &uid in uids {
            let flags = self.st.records.get(uid).map(|r| r[4]);
            if let Some(flags) = flags
                && self.st.records.remove(uid)
            {
                self.count_flags(flags, 0);
                self.delta.expunged.push(uid);
            }
        }
    }

    fn intro(&mut self, intro: &ExtIntro<'_>, at: u64) -> Result<(), FormatError> {
        let ext = if intro.ext_id != u32::MAX {
            let id = intro.ext_id as usize;
            if id >= self.st.exts.len() {
                return Err(corrupt(at, format!("extension intro for unknown id {id}")));
            }
            Some(id)
        } else {
            if intro.name.is_empty() {
                return Err(corrupt(at, "extension intro without id or name"));
            }
            let name = String::from_utf8_lossy(intro.name);
            self.st.ext(&name).map(|(i, _)| i)
        };
        let name = match ext {
            Some(i) => self.st.exts[i].name.clone(),
            None => String::from_utf8_lossy(intro.name).into_owned(),
        };
        // mail_index_map_ext_hdr_check(): limits Dovecot itself enforces.
        if intro.record_size >= EXT_RECORD_MAX_SIZE {
            return Err(corrupt(
                at,
                format!("extension {name}: record size too large"),
            ));
        }
        if intro.hdr_size > EXT_HEADER_MAX_SIZE {
            return Err(corrupt(
                at,
                format!("extension {name}: header size {} too large", intro.hdr_size),
            ));
        }
        if intro.record_size > 0 && !intro.record_align.is_power_of_two() {
            return Err(corrupt(
                at,
                format!("extension {name}: record alignment {}", intro.record_align),
            ));
        }
        if name == KEYWORDS_EXT {
            return Err(corrupt(at, "extension intro for keywords"));
        }
        let Some(i) = ext else {
            let i = self
                .st
                .add_ext(
                    name,
                    intro.reset_id,
                    intro.hdr_size,
                    (intro.record_size, intro.record_align),
                )
                .map_err(|e| corrupt(at, e))?;
            self.cursor = Cursor::Ext {
                ext: i,
                record_size: intro.record_size,
                ignore: false,
            };
            return Ok(());
        };
        let ignore = intro.reset_id != self.st.exts[i].reset_id;
        if !ignore {
            self.resize(i, intro).map_err(|e| corrupt(at, e))?;
        }
        self.cursor = Cursor::Ext {
            ext: i,
            record_size: intro.record_size,
            ignore,
        };
        Ok(())
    }

    /// `sync_ext_resize`: grow always, shrink unless NO_SHRINK.
    fn resize(&mut self, i: usize, intro: &ExtIntro<'_>) -> Result<(), String> {
        let no_shrink = intro.flags & INTRO_NO_SHRINK != 0;
        let old = self.st.layout_snapshot();
        let e = &mut self.st.exts[i];
        let new_hdr = intro.hdr_size as usize;
        if align8(new_hdr) >= align8(e.hdr.len()) || !no_shrink {
            e.hdr.resize(new_hdr, 0);
        }
        let mut reorder = false;
        if e.record_align < intro.record_align
            || (e.record_align > intro.record_align && !no_shrink)
        {
            e.record_align = intro.record_align;
            reorder = true;
        }
        let old_size = e.record_size;
        if e.record_size < intro.record_size || (e.record_size > intro.record_size && !no_shrink) {
            e.record_size = intro.record_size;
            reorder = true;
        }
        if reorder {
            self.st.relayout(&old, Some((i, old_size)))?;
        }
        Ok(())
    }

    /// Appends a keyword, as `keywords_header_add()` does: creates the `keywords` extension
    /// at the end of the list if it does not exist yet, and re-registers it -- header grown
    /// to what the names need plus 128 spare bytes, bitmask re-sized for the new count --
    /// whenever the names outgrow the header or the bitmask is full. Returns its index.
    fn add_keyword(&mut self, name: String) -> Result<usize, String> {
        self.st.keywords.push(name);
        let count = self.st.keywords.len();
        let used = keywords_header_used(&self.st.keywords);
        let size = keyword_record_size(count);
        let i = match self.st.ext(KEYWORDS_EXT) {
            None => self
                .st
                .add_ext(KEYWORDS_EXT.to_string(), 0, (used + 128) as u32, (size, 1))?,
            Some((i, e)) => {
                if used > e.hdr.len() || usize::from(e.record_size) * 8 < count {
                    let old = self.st.layout_snapshot();
                    let e = &mut self.st.exts[i];
                    e.hdr.resize(used + 128, 0);
                    let old_size = e.record_size;
                    if e.record_size != size {
                        e.record_size = size;
                        self.st.relayout(&old, Some((i, old_size)))?;
                    }
                }
                i
            }
        };
        let hdr_size = self.st.exts[i].hdr.len();
        self.st.exts[i].hdr = keywords_header_bytes(&self.st.keywords, hdr_size);
        Ok(count - 1)
    }

    fn grow_keywords(&mut self) -> Result<(), String> {
        let Some((i, _)) = self.st.ext(KEYWORDS_EXT) else {
            return Ok(());
        };
        let old = self.st.layout_snapshot();
        let old_size = self.st.exts[i].record_size;
        let size = keyword_record_size(self.st.keywords.len());
        if size > old_size {
            self.st.exts[i].record_size = size;
            self.st.relayout(&old, Some((i, old_size)))?;
        }
        Ok(())
    }
}

/// Bytes the keyword-names header needs (`struct mail_index_keyword_header`, one
/// `mail_index_keyword_header_rec` per keyword, the NUL-terminated names), padded to 4.
fn keywords_header_used(names: &[String]) -> usize {
    let raw = 4 + 8 * names.len() + names.iter().map(|n| n.len() + 1).sum::<usize>();
    raw.div_ceil(4) * 4
}

/// The keyword-names header as Dovecot lays it out, zero-padded to `hdr_size`.
fn keywords_header_bytes(names: &[String], hdr_size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(hdr_size);
    out.extend_from_slice(&(names.len() as u32).to_le_bytes());
    let mut name_offset = 0u32;
    for n in names {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&name_offset.to_le_bytes());
        name_offset += n.len() as u32 + 1;
    }
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out.resize(hdr_size.max(out.len()), 0);
    out
}

/// Largest record Dovecot lays out: extension offsets are u16 (`sync_ext_reorder`).
const RECORD_SIZE_MAX: u32 = 65535;

/// Checks what Dovecot never writes and a reader must not trust: a record size beyond what
/// u16 extension offsets can address, extension records outside the record, over the
/// uid/flags bytes, or overlapping each other (`sync_ext_reorder` never overlaps them).
fn check_record_layout(file: &IndexFile) -> Result<(), FormatError> {
    let record_size = file.header.record_size;
    if record_size > RECORD_SIZE_MAX {
        return Err(FormatError::new(
            8,
            format!("record size {record_size} is larger than Dovecot ever lays out"),
        ));
    }
    let mut areas: Vec<(u32, u32, &str)> = file
        .extensions
        .iter()
        .filter(|e| e.record_size > 0)
        .map(|e| {
            let start = u32::from(e.record_offset);
            (start, start + u32::from(e.record_size), e.name.as_str())
        })
        .collect();
    areas.sort_unstable();
    let mut prev_end = RECORD_MIN_SIZE; // uid (4 bytes) and flags (1 byte)
    let mut prev_name = "the uid and flags";
    for (start, end, name) in areas {
        if start < prev_end || end > record_size {
            return Err(FormatError::new(
                0,
                format!(
                    "extension {name} (record bytes {start}..{end}) overlaps {prev_name} or \
                     leaves the {record_size}-byte record"
                ),
            ));
        }
        prev_end = end;
        prev_name = name;
    }
    Ok(())
}

/// Keyword bitmask size (`keywords_ext_register`): one bit per keyword, plus one spare byte
/// when the byte count is not a multiple of 4.
fn keyword_record_size(count: usize) -> u16 {
    let bytes = count.div_ceil(8).max(1);
    let bytes = if !bytes.is_multiple_of(4) {
        bytes + 1
    } else {
        bytes
    };
    u16::try_from(bytes).unwrap_or(u16::MAX)
}

/// The UIDs of a state's records.
pub fn uids(st: &IndexState) -> impl Iterator<Item = u32> + '_ {
    st.records.iter().map(record_uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_record_size_follows_dovecot() {
        assert_eq!(keyword_record_size(1), 2);
        assert_eq!(keyword_record_size(8), 2);
        assert_eq!(keyword_record_size(9), 3);
        assert_eq!(keyword_record_size(17), 4);
        assert_eq!(keyword_record_size(32), 4);
        assert_eq!(keyword_record_size(33), 6);
    }

    #[test]
    fn keyword_header_matches_dovecots_layout() {
        let names = vec!["$Label1".to_string(), "work".to_string()];
        // 4 + 2*8 + 8 + 5 = 33 -> 36.
        assert_eq!(keywords_header_used(&names), 36);
        let bytes = keywords_header_bytes(&names, 164);
        assert_eq!(bytes.len(), 164);
        let parsed = crate::format::index::parse_keywords_header(&bytes).unwrap();
        assert_eq!(parsed, names);
    }

    #[test]
    fn delta_normalizes() {
        let mut d = Delta {
            appended: vec![5, 3, 5],
            expunged: vec![5],
            changed: vec![3, 2, 2],
            reset: false,
        };
        d.normalize();
        assert_eq!(d.appended, vec![3]);
        assert!(d.expunged.is_empty(), "5 came and went within the batch");
        assert_eq!(d.changed, vec![2]);
    }
}
