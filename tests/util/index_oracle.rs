//! The index engine (`mailfs::index`) against Dovecot: `doveadm dump` of an index and of a
//! transaction log parsed into plain values, and comparisons of `IndexView`s with each
//! other and with doveadm.
//!
//! Oracles, in the order of trust:
//! - `doveadm fetch 'uid flags'`: UIDs, system flags (`\Answered \Flagged \Deleted \Seen
//!   \Draft`) and keywords in keyword-index order;
//! - `doveadm mailbox status`: uidvalidity, uidnext, messages;
//! - `doveadm dump <dir>/dovecot.index`: the header counters and each record's flag byte
//!   after Dovecot's own snapshot + log replay (it works without the index file too);
//! - `doveadm dump <dir>/dovecot.index.log(.2)`: which UIDs each log record touched, to
//!   tell a delta's legitimate extra `changed` entries from wrong ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use mailfs::index::reader::{IndexPaths, IndexReader, IndexView, LogPos};
use mailfs::index::records::record_uid;
use mailfs::index::state::Delta;

use super::dovecot::{Dovecot, User};

/// Bits of the record flag byte that `doveadm fetch flags` shows (the system flags).
pub const SYSTEM_FLAGS: u8 = 0x1f;

/// The system flag bit for an IMAP flag name, or `None` for a keyword.
pub fn system_flag(name: &str) -> Option<u8> {
    match name {
        "\\Answered" => Some(0x01),
        "\\Flagged" => Some(0x02),
        "\\Deleted" => Some(0x04),
        "\\Seen" => Some(0x08),
        "\\Draft" => Some(0x10),
        _ => None,
    }
}

/// Splits doveadm's flag list into (system flag bits, keywords in the order given).
pub fn split_flags(flags: &[String]) -> (u8, Vec<String>) {
    let mut bits = 0;
    let mut keywords = Vec::new();
    for f in flags {
        match system_flag(f) {
            Some(b) => bits |= b,
            None => keywords.push(f.clone()),
        }
    }
    (bits, keywords)
}

/// `doveadm dump <dir>/<prefix>` of an index, reduced to what the tests compare.
#[derive(Debug, Clone, Default)]
pub struct DumpedIndex {
    /// Header fields by doveadm's label (`uid validity`, `next uid`, `messages count`, ...).
    pub header: BTreeMap<String, u64>,
    /// `(uid, flag byte)` of every record, in sequence order.
    pub records: Vec<(u32, u8)>,
    /// Every extension, in ext_id order.
    pub exts: Vec<DumpedExt>,
}

/// One `-- Extension N --` block of `doveadm dump`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpedExt {
    pub name: String,
    pub hdr_size: u32,
    pub record_offset: u16,
    pub record_size: u16,
    pub record_align: u16,
}

impl DumpedIndex {
    /// A header field; panics naming it if doveadm did not print it.
    #[track_caller]
    pub fn field(&self, label: &str) -> u64 {
        *self
            .header
            .get(label)
            .unwrap_or_else(|| panic!("doveadm dump printed no {label:?}: {:?}", self.header))
    }
}

/// Parses `doveadm dump` of an index: the header lines before the first extension
/// (`uid validity ............. = 1795462159 (2026-...)`) and the `RECORD: seq=1, uid=1,
/// flags=0x08 (Seen)` lines.
pub fn parse_index_dump(text: &str) -> DumpedIndex {
    let mut out = DumpedIndex::default();
    let mut in_header = true;
    let mut in_exts = false;
    for line in text.lines() {
        if line.starts_with("-- Extension") {
            out.exts.push(DumpedExt::default());
        }
        if line.starts_with("-- Extension") || line.starts_with("-- Keywords") {
            in_header = false;
        }
        if line.starts_with("-- Keywords") || line.starts_with("-- RECORDS") {
            in_exts = false;
        } else if line.starts_with("-- Extension") {
            in_exts = true;
        }
        if in_exts
            && let (Some(ext), Some((label, value))) = (out.exts.last_mut(), line.split_once(" = "))
        {
            let label = label.trim_end_matches(['.', ' ']).trim();
            let value = value.trim();
            let num = || {
                value
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or(0)
            };
            match label {
                "name" => ext.name = value.to_string(),
                "hdr_size" => ext.hdr_size = num(),
                "record_offset" => ext.record_offset = num() as u16,
                "record_size" => ext.record_size = num() as u16,
                "record_align" => ext.record_align = num() as u16,
                _ => {}
            }
        }
        if let Some(rest) = line.strip_prefix("RECORD: ") {
            let mut uid = None;
            let mut flags = None;
            for part in rest.split(", ") {
                if let Some(v) = part.strip_prefix("uid=") {
                    uid = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("flags=0x") {
                    let hex = v.split(' ').next().unwrap_or_default();
                    flags = u8::from_str_radix(hex, 16).ok();
                }
            }
            match (uid, flags) {
                (Some(u), Some(f)) => out.records.push((u, f)),
                _ => panic!("cannot parse doveadm dump record line {line:?}"),
            }
            continue;
        }
        if !in_header {
            continue;
        }
        let Some((label, value)) = line.split_once(" = ") else {
            continue;
        };
        let label = label.trim_end_matches(['.', ' ']).trim();
        if let Some(Ok(n)) = value.split(' ').next().map(str::parse::<u64>) {
            out.header.insert(label.to_string(), n);
        }
    }
    out
}

/// The UIDs the log records in a range touched, per `doveadm dump` of the log files.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    /// UID ranges of flag, keyword, extension-record and atomic-increment updates.
    pub ranges: Vec<(u32, u32)>,
    /// An extension reset without preserved data (touches every record).
    pub all: bool,
    /// Log file seqs that were needed but no longer exist.
    pub missing: Vec<u32>,
}

impl Touched {
    pub fn contains(&self, uid: u32) -> bool {
        self.all || self.ranges.iter().any(|&(a, b)| a <= uid && uid <= b)
    }
}

/// One record of `doveadm dump <log>`.
#[derive(Debug, Clone)]
struct LogRecord {
    offset: u64,
    kind: String,
    /// `uids=A-B,C,` and `uid=N:` items of its detail lines.
    ranges: Vec<(u32, u32)>,
    /// `preserve_data = 0` (ext-reset).
    drops_data: bool,
}

/// Parses `doveadm dump` of a transaction log: `(file_seq, records)`.
fn parse_log_dump(text: &str) -> (u32, Vec<LogRecord>) {
    let mut seq = 0;
    let mut records: Vec<LogRecord> = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("file seq = ") {
            seq = v.trim().parse().expect("file seq");
        } else if let Some(rest) = line.strip_prefix("record: ") {
            let mut offset = None;
            let mut kind = String::new();
            for part in rest.split(", ") {
                if let Some(v) = part.strip_prefix("offset=") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("type=") {
                    kind = v.split(' ').next().unwrap_or_default().to_string();
                }
            }
            records.push(LogRecord {
                offset: offset.unwrap_or_else(|| panic!("bad log record line {line:?}")),
                kind,
                ranges: Vec::new(),
                drops_data: false,
            });
        } else if let (Some(detail), Some(rec)) = (line.strip_prefix(" - "), records.last_mut()) {
            if detail.trim() == "preserve_data = 0" {
                rec.drops_data = true;
            }
            if let Some(at) = detail.find("uids=") {
                let list = &detail[at + 5..];
                let list = list.split([' ', '(']).next().unwrap_or_default();
                for item in list.split(',').filter(|i| !i.is_empty()) {
                    let (a, b) = item.split_once('-').unwrap_or((item, item));
                    if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                        rec.ranges.push((a, b));
                    }
                }
            } else if let Some(v) = detail.strip_prefix("uid=") {
                let n = v.split([':', ' ']).next().unwrap_or_default();
                if let Ok(u) = n.parse() {
                    rec.ranges.push((u, u));
                }
            }
        }
    }
    (seq, records)
}

/// What `doveadm dump` says the log records in `[from, to)` touched (files `.log` and
/// `.log.2` of `paths`; a seq in the range whose file is gone is listed in `missing`).
pub fn touched_between(dovecot: &Dovecot, paths: &IndexPaths, from: LogPos, to: LogPos) -> Touched {
    let mut t = Touched::default();
    let mut seen = BTreeSet::new();
    for suffix in [".log.2", ".log"] {
        let path = paths.dir.join(format!("{}{suffix}", paths.prefix));
        if !path.exists() {
            continue;
        }
        let (seq, records) = parse_log_dump(&dovecot.dump(&path));
        seen.insert(seq);
        for r in records {
            let pos = LogPos {
                file_seq: seq,
                offset: r.offset,
            };
            if pos < from || pos >= to {
                continue;
            }
            match r.kind.as_str() {
                "flag-update" | "keyword-update" | "keyword-reset" | "ext-rec"
                | "ext-atomic-inc" => t.ranges.extend(r.ranges),
                "ext-reset" if r.drops_data => t.all = true,
                _ => {}
            }
        }
    }
    t.missing = (from.file_seq..=to.file_seq)
        .filter(|s| !seen.contains(s))
        .collect();
    t
}

/// One message of a view in comparable form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub uid: u32,
    /// The whole flag byte.
    pub flags: u8,
    pub keywords: Vec<String>,
    /// Every other extension's bytes, by name.
    pub exts: Vec<(String, Vec<u8>)>,
}

/// The messages of a view.
pub fn messages(v: &IndexView) -> Vec<Msg> {
    let st = &v.state;
    st.records
        .iter()
        .map(|rec| Msg {
            uid: record_uid(rec),
            flags: rec[4],
            keywords: st
                .record_keywords(&rec)
                .into_iter()
                .map(str::to_string)
                .collect(),
            exts: st
                .exts
                .iter()
                .filter(|e| e.name != "keywords")
                .filter_map(|e| e.slice(&rec).map(|b| (e.name.clone(), b.to_vec())))
                .collect(),
        })
        .collect()
}

/// The UIDs of a view, in order.
pub fn uids(v: &IndexView) -> Vec<u32> {
    v.state.records.iter().map(record_uid).collect()
}

/// Asserts the structural invariants of a view: UIDs non-zero, strictly increasing and
/// below `next_uid`; `messages_count` equals the record count; keyword bits only within
/// the keyword list.
#[track_caller]
pub fn assert_view_valid(v: &IndexView, what: &str) {
    if let Err(e) = view_problem(v) {
        panic!("{what}: invalid view: {e}");
    }
}

/// Like [`assert_view_valid`], as a value (for sweeps that count failures).
pub fn view_problem(v: &IndexView) -> Result<(), String> {
    structural_problem(v)?;
    match stray_keyword_bits(v) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A keyword bit set beyond the keyword list, if any record has one.
fn stray_keyword_bits(v: &IndexView) -> Option<String> {
    let st = &v.state;
    let (_, kw) = st.ext("keywords")?;
    let n = st.keywords.len();
    for rec in st.records.iter() {
        let bits = kw.slice(&rec)?;
        for (i, b) in bits.iter().enumerate() {
            for bit in 0..8 {
                if b & (1 << bit) != 0 && i * 8 + bit >= n {
                    return Some(format!(
                        "uid {} has keyword bit {} but only {n} keywords",
                        record_uid(rec),
                        i * 8 + bit
                    ));
                }
            }
        }
    }
    None
}

/// Extensions whose record bytes overlap each other or the uid and flags (offset < 5), if
/// any, given `(name, record_offset, record_size)` of each. Dovecot never lays records out
/// that way, but it does not check a snapshot for it either; a damaged `dovecot.index` can
/// claim it, and then the data of one extension shows up in another.
pub fn overlapping_extensions<'a>(
    exts: impl IntoIterator<Item = (&'a str, u16, u16)>,
) -> Option<String> {
    let mut ranges: Vec<(usize, usize, &str)> = exts
        .into_iter()
        .filter(|e| e.2 > 0)
        .map(|(name, offset, size)| {
            let start = usize::from(offset);
            (start, start + usize::from(size), name)
        })
        .collect();
    ranges.sort_unstable();
    if let Some((start, _, name)) = ranges.first()
        && *start < 5
    {
        return Some(format!(
            "extension {name} starts at record offset {start}, below 5"
        ));
    }
    ranges.windows(2).find_map(|w| {
        (w[1].0 < w[0].1).then(|| {
            format!(
                "extensions {} ({}..{}) and {} ({}..{}) overlap",
                w[0].2, w[0].0, w[0].1, w[1].2, w[1].0, w[1].1
            )
        })
    })
}

/// [`view_problem`] without the keyword-bit check: UIDs, counters, extension bounds.
fn structural_problem(v: &IndexView) -> Result<(), String> {
    let st = &v.state;
    let h = st.header();
    let mut prev = 0u32;
    for rec in st.records.iter() {
        let uid = record_uid(rec);
        if uid == 0 || uid <= prev {
            return Err(format!("uid {uid} after {prev}"));
        }
        if uid >= h.next_uid {
            return Err(format!("uid {uid} >= next_uid {}", h.next_uid));
        }
        prev = uid;
    }
    if h.messages_count as usize != st.records.len() {
        return Err(format!(
            "messages_count {} but {} records",
            h.messages_count,
            st.records.len()
        ));
    }
    let layout = st
        .exts
        .iter()
        .map(|e| (e.name.as_str(), e.record_offset, e.record_size));
    if let Some(e) = overlapping_extensions(layout) {
        return Err(e);
    }
    for e in &st.exts {
        if e.record_size > 0
            && usize::from(e.record_offset) + usize::from(e.record_size) > st.records.record_size()
        {
            return Err(format!("extension {} lies outside the record", e.name));
        }
    }
    Ok(())
}

/// Asserts that two views of the same index hold the same state: header counters and
/// record size, the extension list (name, reset_id, record layout, header bytes), the
/// keyword list, and every record (uid, flag byte, keywords, each extension's bytes).
#[track_caller]
pub fn assert_same_state(a: &IndexView, b: &IndexView, what: &str) {
    let (ha, hb) = (a.state.header(), b.state.header());
    let counters = |h: &mailfs::format::index::IndexHeader| {
        (
            h.uid_validity,
            h.next_uid,
            h.messages_count,
            h.seen_messages_count,
            h.deleted_messages_count,
            h.record_size,
        )
    };
    assert_eq!(
        counters(&ha),
        counters(&hb),
        "{what}: (uid_validity, next_uid, messages, seen, deleted, record_size)"
    );
    assert_eq!(a.indexid, b.indexid, "{what}: indexid");
    type ExtSummary = (String, u32, u16, u16, u16, Vec<u8>);
    let exts = |v: &IndexView| -> Vec<ExtSummary> {
        v.state
            .exts
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.reset_id,
                    e.record_offset,
                    e.record_size,
                    e.record_align,
                    e.hdr.clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        exts(a),
        exts(b),
        "{what}: extensions (name, reset_id, record_offset, record_size, record_align, hdr)"
    );
    assert_eq!(a.state.keywords, b.state.keywords, "{what}: keyword list");
    let (ma, mb) = (messages(a), messages(b));
    assert_eq!(ma.len(), mb.len(), "{what}: record count");
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x, y, "{what}: record");
    }
}

/// How much [`assert_matches_dovecot`] compared.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checked {
    pub messages: usize,
    pub keywords: usize,
}

/// Asserts that a view equals what Dovecot says about `mailbox`: UIDs, system flags and
/// keywords (in order) from `doveadm fetch`; uidvalidity/uidnext/messages from `doveadm
/// mailbox status`; header counters and each record's flag byte from `doveadm dump` of
/// the index at `index_dir`.
#[track_caller]
pub fn assert_matches_dovecot(
    v: &IndexView,
    user: &User<'_>,
    dovecot: &Dovecot,
    mailbox: &str,
    index_dir: &Path,
    what: &str,
) -> Checked {
    assert_view_valid(v, what);
    let msgs = messages(v);
    let fetched = user.fetch_flags(mailbox);
    let fetched_uids: Vec<u32> = fetched.iter().map(|(u, _)| *u).collect();
    let view_uids: Vec<u32> = msgs.iter().map(|m| m.uid).collect();
    assert_eq!(view_uids, fetched_uids, "{what}: UIDs vs doveadm fetch");
    let mut checked = Checked::default();
    for (m, (uid, flags)) in msgs.iter().zip(&fetched) {
        let (bits, keywords) = split_flags(flags);
        assert_eq!(
            m.flags & SYSTEM_FLAGS,
            bits,
            "{what}: system flags of uid {uid} (doveadm: {flags:?})"
        );
        assert_eq!(
            m.keywords, keywords,
            "{what}: keywords of uid {uid}, in keyword-index order"
        );
        checked.messages += 1;
        checked.keywords += keywords.len();
    }

    let h = v.state.header();
    let status = user.status(mailbox);
    assert_eq!(
        (h.uid_validity, h.next_uid, h.messages_count),
        (status.uidvalidity, status.uidnext, status.messages),
        "{what}: (uid_validity, next_uid, messages) vs doveadm mailbox status"
    );

    assert_matches_dump(v, dovecot, &index_dir.join("dovecot.index"), what);
    checked
}

/// Asserts that a view equals `doveadm dump <index>` (Dovecot's snapshot + log replay):
/// uid_validity, next_uid and the message/seen/deleted counters, and the UID and whole
/// flag byte of every record.
#[track_caller]
pub fn assert_matches_dump(v: &IndexView, dovecot: &Dovecot, index: &Path, what: &str) {
    let h = v.state.header();
    let dumped = parse_index_dump(&dovecot.dump(index));
    let ours = [
        ("uid validity", u64::from(h.uid_validity)),
        ("next uid", u64::from(h.next_uid)),
        ("messages count", u64::from(h.messages_count)),
        ("seen messages count", u64::from(h.seen_messages_count)),
        (
            "deleted messages count",
            u64::from(h.deleted_messages_count),
        ),
    ];
    for (label, value) in ours {
        assert_eq!(
            value,
            dumped.field(label),
            "{what}: {label} vs doveadm dump"
        );
    }
    let view_records: Vec<(u32, u8)> = messages(v).iter().map(|m| (m.uid, m.flags)).collect();
    assert_eq!(
        view_records, dumped.records,
        "{what}: (uid, flag byte) of every record vs doveadm dump"
    );
}

/// What a phase is expected to have done to a mailbox, by UID.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub appended: BTreeSet<u32>,
    pub expunged: BTreeSet<u32>,
    /// Messages whose flags or keywords really changed.
    pub changed: BTreeSet<u32>,
}

/// Checks a delta between `old` and `new` (the views before and after the refresh that
/// returned it):
/// - it is consistent with the views: `appended` = UIDs only in `new`, `expunged` = UIDs
///   only in `old`, and every message whose flag byte or keywords differ is in `changed`;
/// - it equals `expected` for appended and expunged, and `changed` contains every expected
///   change (when `expected` is given);
/// - `changed` has no other UIDs than those, plus ones whose records Dovecot really
///   rewrote without changing flags or keywords. Those are read from `doveadm dump` of
///   the logs between the two positions: extension-record updates (e.g. the `cache`
///   offset after a fetch or `doveadm index`), atomic increments (map refcounts), flag or
///   keyword updates that set what was already set, and data-dropping extension resets.
///
/// Returns the number of "rewritten but unchanged" UIDs allowed (the slack).
#[track_caller]
pub fn check_delta(
    dovecot: &Dovecot,
    paths: &IndexPaths,
    old: &IndexView,
    new: &IndexView,
    delta: &Delta,
    expected: Option<&Expected>,
    what: &str,
) -> usize {
    assert!(!delta.reset, "{what}: unexpected reset delta: {delta:?}");
    let old_m: BTreeMap<u32, Msg> = messages(old).into_iter().map(|m| (m.uid, m)).collect();
    let new_m: BTreeMap<u32, Msg> = messages(new).into_iter().map(|m| (m.uid, m)).collect();
    let appended: BTreeSet<u32> = new_m
        .keys()
        .filter(|u| !old_m.contains_key(u))
        .copied()
        .collect();
    let expunged: BTreeSet<u32> = old_m
        .keys()
        .filter(|u| !new_m.contains_key(u))
        .copied()
        .collect();
    let really_changed: BTreeSet<u32> = new_m
        .iter()
        .filter(|(u, m)| {
            old_m
                .get(u)
                .is_some_and(|o| o.flags != m.flags || o.keywords != m.keywords)
        })
        .map(|(u, _)| *u)
        .collect();
    let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
    for (name, list) in [
        ("appended", &delta.appended),
        ("expunged", &delta.expunged),
        ("changed", &delta.changed),
    ] {
        assert!(
            list.windows(2).all(|w| w[0] < w[1]),
            "{what}: delta.{name} is not sorted and unique: {list:?}"
        );
    }
    assert_eq!(
        set(&delta.appended),
        appended,
        "{what}: delta.appended vs views"
    );
    assert_eq!(
        set(&delta.expunged),
        expunged,
        "{what}: delta.expunged vs views"
    );
    let changed = set(&delta.changed);
    let missed: Vec<u32> = really_changed.difference(&changed).copied().collect();
    assert!(
        missed.is_empty(),
        "{what}: messages whose flags/keywords changed are missing from delta.changed: \
         {missed:?} (delta {delta:?})"
    );
    assert!(
        changed.is_disjoint(&appended) && changed.is_disjoint(&expunged),
        "{what}: delta.changed overlaps appended/expunged: {delta:?}"
    );
    if let Some(exp) = expected {
        assert_eq!(
            appended, exp.appended,
            "{what}: appended vs what the phase did"
        );
        assert_eq!(
            expunged, exp.expunged,
            "{what}: expunged vs what the phase did"
        );
        let not_seen: Vec<u32> = exp.changed.difference(&changed).copied().collect();
        assert!(
            not_seen.is_empty(),
            "{what}: changes the phase made are missing from delta.changed: {not_seen:?}"
        );
        assert!(
            exp.changed.is_subset(&really_changed),
            "{what}: the test's model expected changes {:?} but the views changed {:?}",
            exp.changed,
            really_changed
        );
    }
    let extra: Vec<u32> = changed.difference(&really_changed).copied().collect();
    if extra.is_empty() {
        return 0;
    }
    let touched = touched_between(dovecot, paths, old.pos, new.pos);
    let unexplained: Vec<u32> = extra
        .iter()
        .copied()
        .filter(|u| !touched.contains(*u))
        .collect();
    assert!(
        unexplained.is_empty(),
        "{what}: delta.changed lists {unexplained:?}, whose flags and keywords did not change \
         and which no log record between {:?} and {:?} touched (touched: {touched:?})",
        old.pos,
        new.pos
    );
    extra.len()
}

/// The log file header of `paths` (for rotation bookkeeping).
pub fn log_header(paths: &IndexPaths) -> mailfs::format::log::LogHeader {
    let path = log_path(paths);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
    mailfs::format::log::parse_header(&data).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// `<dir>/<prefix>.log`.
pub fn log_path(paths: &IndexPaths) -> PathBuf {
    paths.dir.join(format!("{}.log", paths.prefix))
}

/// Opens a fresh reader, panicking with the error.
#[track_caller]
pub fn open(paths: &IndexPaths, what: &str) -> IndexReader {
    IndexReader::open(paths.clone())
        .unwrap_or_else(|e| panic!("{what}: IndexReader::open({paths:?}) failed: {e}"))
}
