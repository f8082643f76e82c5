//! Dovecot's transaction log: `dovecot.index.log`, `dovecot.index.log.2`, and the logs of the
//! mdbox map (`dovecot.map.index.log`) and of the mailbox list index
//! (`dovecot.list.index.log`), which share the format.
//!
//! Owns the byte-level framing and record payloads, nothing else: no paths, no reading of
//! files, no index state. Applying records (extension ids, next_uid, reset ids, keywords) is
//! the caller's business; [`decode`] only checks what one record can tell about itself.
//!
//! Three layers:
//! * [`parse_header`]: the file header (`struct mail_transaction_log_header`).
//! * [`scan`]: frames records and stops at a torn tail the way an unlocked Dovecot reader
//!   does (`mail_transaction_log_file_sync()` and `log_file_track_sync()` in
//!   `mail-transaction-log-file.c`); a transaction whose BOUNDARY span is not fully on disk
//!   is not returned at all.
//! * [`decode`] and [`ext_rec_updates`]: one record's payload, validated as
//!   `log_view_is_record_valid()` (`mail-transaction-log-view.c`) and the per-type loops of
//!   `mail_index_sync_record()` (`mail-index-sync-update.c`) do.
//!
//! Every rule follows Dovecot 2.3.19.1, `src/lib-index/`. Where Dovecot's code differs from
//! the reference doc (section 5), the code wins and the comment says "Dovecot:". Where
//! Dovecot would read past the end of a record (it trusts some lengths), this module
//! reports corruption instead, and the comment says "Stricter than Dovecot:".
//!
//! Error offsets are absolute byte offsets in the log file. Payload integers are
//! little-endian: Dovecot writes them host-endian, and [`parse_header`] refuses a log whose
//! `compat_flags` say it was written by a big-endian host.

use super::cache::decode_offset;
use super::{FormatError, le};

/// Mask of the record type proper (`MAIL_TRANSACTION_TYPE_MASK`); the bits above are flags.
pub const TYPE_MASK: u32 = 0x0fff_ffff;
/// `MAIL_TRANSACTION_EXTERNAL`: the change already happened in the storage (as opposed to
/// a request, for example an expunge request that the next sync performs).
pub const EXTERNAL: u32 = 0x1000_0000;
/// `MAIL_TRANSACTION_SYNC`: the change came from dsync, not from a local user.
pub const SYNC: u32 = 0x2000_0000;

/// Masked type of EXPUNGE: `MAIL_TRANSACTION_EXPUNGE | MAIL_TRANSACTION_EXPUNGE_PROT`.
pub const TYPE_EXPUNGE: u32 = 0x0000_cd91;
/// Masked type of APPEND (`MAIL_TRANSACTION_APPEND`).
pub const TYPE_APPEND: u32 = 0x0000_0002;
/// Masked type of FLAG_UPDATE (`MAIL_TRANSACTION_FLAG_UPDATE`).
pub const TYPE_FLAG_UPDATE: u32 = 0x0000_0004;
/// Masked type of HEADER_UPDATE (`MAIL_TRANSACTION_HEADER_UPDATE`).
pub const TYPE_HEADER_UPDATE: u32 = 0x0000_0020;
/// Masked type of EXT_INTRO (`MAIL_TRANSACTION_EXT_INTRO`).
pub const TYPE_EXT_INTRO: u32 = 0x0000_0040;
/// Masked type of EXT_RESET (`MAIL_TRANSACTION_EXT_RESET`).
pub const TYPE_EXT_RESET: u32 = 0x0000_0080;
/// Masked type of EXT_HDR_UPDATE (`MAIL_TRANSACTION_EXT_HDR_UPDATE`).
pub const TYPE_EXT_HDR_UPDATE: u32 = 0x0000_0100;
/// Masked type of EXT_REC_UPDATE (`MAIL_TRANSACTION_EXT_REC_UPDATE`).
pub const TYPE_EXT_REC_UPDATE: u32 = 0x0000_0200;
/// Masked type of KEYWORD_UPDATE (`MAIL_TRANSACTION_KEYWORD_UPDATE`).
pub const TYPE_KEYWORD_UPDATE: u32 = 0x0000_0400;
/// Masked type of KEYWORD_RESET (`MAIL_TRANSACTION_KEYWORD_RESET`).
pub const TYPE_KEYWORD_RESET: u32 = 0x0000_0800;
/// Masked type of EXT_ATOMIC_INC (`MAIL_TRANSACTION_EXT_ATOMIC_INC`).
pub const TYPE_EXT_ATOMIC_INC: u32 = 0x0000_1000;
/// Masked type of EXPUNGE_GUID: `MAIL_TRANSACTION_EXPUNGE_GUID | MAIL_TRANSACTION_EXPUNGE_PROT`.
pub const TYPE_EXPUNGE_GUID: u32 = 0x0000_ed90;
/// Masked type of MODSEQ_UPDATE (`MAIL_TRANSACTION_MODSEQ_UPDATE`).
pub const TYPE_MODSEQ_UPDATE: u32 = 0x0000_8000;
/// Masked type of EXT_HDR_UPDATE32 (`MAIL_TRANSACTION_EXT_HDR_UPDATE32`).
pub const TYPE_EXT_HDR_UPDATE32: u32 = 0x0001_0000;
/// Masked type of INDEX_DELETED (`MAIL_TRANSACTION_INDEX_DELETED`).
pub const TYPE_INDEX_DELETED: u32 = 0x0002_0000;
/// Masked type of INDEX_UNDELETED (`MAIL_TRANSACTION_INDEX_UNDELETED`).
pub const TYPE_INDEX_UNDELETED: u32 = 0x0004_0000;
/// Masked type of BOUNDARY (`MAIL_TRANSACTION_BOUNDARY`).
pub const TYPE_BOUNDARY: u32 = 0x0008_0000;
/// Masked type of ATTRIBUTE_UPDATE (`MAIL_TRANSACTION_ATTRIBUTE_UPDATE`).
pub const TYPE_ATTRIBUTE_UPDATE: u32 = 0x0010_0000;

/// `MAIL_TRANSACTION_EXPUNGE`: a type with this bit must be exactly [`TYPE_EXPUNGE`].
const EXPUNGE_BIT: u32 = 0x0000_0001;
/// `MAIL_TRANSACTION_EXPUNGE_GUID`: a type with this bit must be exactly
/// [`TYPE_EXPUNGE_GUID`].
const EXPUNGE_GUID_BIT: u32 = 0x0000_2000;

/// `MAIL_TRANSACTION_LOG_MAJOR_VERSION`.
const MAJOR_VERSION: u8 = 1;
/// `MAIL_TRANSACTION_LOG_HEADER_MIN_SIZE`: a smaller `hdr_size` means a corrupted file.
const HEADER_MIN_SIZE: usize = 24;
/// `sizeof(struct mail_transaction_log_header)`.
const HEADER_FULL_SIZE: usize = 40;
/// `sizeof(struct mail_transaction_header)`: `{u32 size; u32 type}`.
const REC_HEADER_SIZE: usize = 8;
/// `MAIL_INDEX_COMPAT_LITTLE_ENDIAN` (`enum mail_index_header_compat_flags`, `mail-index.h`).
const COMPAT_LITTLE_ENDIAN: u8 = 0x01;
/// `MAIL_INDEX_EXT_KEYWORDS`: only the keyword code may introduce this extension.
const KEYWORDS_EXT_NAME: &[u8] = b"keywords";

/// Hint appended to corruption messages about the log itself.
const FIX_HINT: &str =
    "Dovecot rebuilds it on next access, or run `doveadm force-resync` on the mailbox";

/// The file header (`struct mail_transaction_log_header`, `mail-transaction-log.h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHeader {
    /// `major_version` (u8 at 0): always 1; anything else is refused.
    pub major_version: u8,
    /// `minor_version` (u8 at 1): 3 in 2.3; `>= 2` means `compat_flags` is valid.
    pub minor_version: u8,
    /// `hdr_size` (u16 at 2): records start here. At least 24; usually 40.
    pub hdr_size: u16,
    /// `indexid` (u32 at 4): must match the index's. 0 = the log was marked corrupted
    /// (`mail_transaction_log_file_set_corrupted()` overwrites it); ignore such a file.
    pub indexid: u32,
    /// `file_seq` (u32 at 8): increases with every rotation.
    pub file_seq: u32,
    /// `prev_file_seq` (u32 at 12): the log this one replaced; 0 = this log resets the index.
    pub prev_file_seq: u32,
    /// `prev_file_offset` (u32 at 16): the final size of the previous log.
    pub prev_file_offset: u32,
    /// `create_stamp` (u32 at 20): UNIX time the file was created.
    pub create_stamp: u32,
    /// `initial_modseq` (u64 at 24): the highest modseq when the file was created.
    pub initial_modseq: u64,
    /// `compat_flags` (u8 at 32): `MAIL_INDEX_COMPAT_LITTLE_ENDIAN` = 1.
    pub compat_flags: u8,
}

/// Parses the file header from the start of the log.
///
/// Fields beyond `hdr_size` (when it is below 40) read as 0, as in
/// `mail_transaction_log_file_read_hdr()`. Errors: a major version other than 1, fewer than
/// 24 bytes, `hdr_size < 24`, `hdr_size` beyond the data, or (minor version >= 2)
/// `compat_flags` without the little-endian bit, which Dovecot treats as "CPU architecture
/// changed" and rebuilds. `indexid == 0` ("marked corrupted") is returned, not refused.
pub fn parse_header(data: &[u8]) -> Result<LogHeader, FormatError> {
    // Dovecot checks the version before the length ("incompatible version - fix silently").
    if let Some(&major) = data.first()
        && major != MAJOR_VERSION
    {
        return Err(FormatError::new(
            0,
            format!(
                "transaction log: unsupported major version {major} (expected 1); Dovecot \
                 ignores and recreates such a log"
            ),
        ));
    }
    if data.len() < HEADER_MIN_SIZE {
        return Err(FormatError::new(
            data.len(),
            format!(
                "transaction log: file is {} bytes, shorter than the 24-byte minimum header; \
                 {FIX_HINT}",
                data.len()
            ),
        ));
    }
    let hdr_size = le::u16_at(data, 2).unwrap_or(0);
    let size = usize::from(hdr_size);
    if size < HEADER_MIN_SIZE {
        return Err(FormatError::new(
            2,
            format!("transaction log: header size {hdr_size} is below 24; {FIX_HINT}"),
        ));
    }
    if size > data.len() {
        return Err(FormatError::new(
            2,
            format!(
                "transaction log: header size {hdr_size} is beyond the end of the file ({} \
                 bytes); {FIX_HINT}",
                data.len()
            ),
        ));
    }
    // Fields the header does not cover are 0 (`memset()` in ..._read_hdr()).
    let mut full = [0u8; HEADER_FULL_SIZE];
    let covered = size.min(HEADER_FULL_SIZE);
    if let (Some(dst), Some(src)) = (full.get_mut(..covered), data.get(..covered)) {
        dst.copy_from_slice(src);
    }
    let hdr = LogHeader {
        major_version: full[0],
        minor_version: full[1],
        hdr_size,
        indexid: le::u32_at(&full, 4).unwrap_or(0),
        file_seq: le::u32_at(&full, 8).unwrap_or(0),
        prev_file_seq: le::u32_at(&full, 12).unwrap_or(0),
        prev_file_offset: le::u32_at(&full, 16).unwrap_or(0),
        create_stamp: le::u32_at(&full, 20).unwrap_or(0),
        initial_modseq: le::u64_at(&full, 24).unwrap_or(0),
        compat_flags: full[32],
    };
    // MAIL_TRANSACTION_LOG_VERSION_HAVE(version, COMPAT_FLAGS): from 1.2 on.
    if hdr.minor_version >= 2 && hdr.compat_flags != COMPAT_LITTLE_ENDIAN {
        return Err(FormatError::new(
            32,
            format!(
                "transaction log: compat_flags {:#x} say it was written on a big-endian host; \
                 Dovecot rebuilds it on this host (\"CPU architecture changed\")",
                hdr.compat_flags
            ),
        ));
    }
    Ok(hdr)
}

/// A record as framed in the file (`struct mail_transaction_header` plus payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Absolute file offset of the 8-byte record header.
    pub offset: u64,
    /// Whole record size including the header (`size`, offset-encoded on disk).
    pub size: u32,
    /// `type`: the record type with its flag bits ([`EXTERNAL`], [`SYNC`]).
    pub rec_type: u32,
    /// The `size - 8` bytes after the header.
    pub payload: &'a [u8],
}

impl RawRecord<'_> {
    /// The record type without flags (`rec_type & TYPE_MASK`).
    pub fn kind(&self) -> u32 {
        self.rec_type & TYPE_MASK
    }

    /// True if [`EXTERNAL`] is set: the change already happened in the storage.
    pub fn is_external(&self) -> bool {
        self.rec_type & EXTERNAL != 0
    }

    /// Absolute file offset of the first payload byte.
    fn payload_offset(&self) -> u64 {
        self.offset.saturating_add(REC_HEADER_SIZE as u64)
    }
}

/// Result of scanning for complete transactions (doc section 5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    /// Records of complete transactions, in file order.
    pub records: Vec<RawRecord<'a>>,
    /// First byte not consumed: where the next scan starts once more data is there.
    pub end: u64,
    /// Why scanning stopped.
    pub stop: StopReason,
}

/// Why [`scan`] stopped. Only [`StopReason::Eof`] means every byte was consumed; the others
/// describe a tail that a writer may still be completing (or will truncate away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All data consumed.
    Eof,
    /// The next record's size field is not written yet (a size byte lacks bit 0x80, or it
    /// decodes to 0).
    Unwritten,
    /// The next record (or its 8-byte header) extends past the end of the data.
    Incomplete,
    /// A BOUNDARY record's span passes the end of the data: the transaction is not fully
    /// written, and none of its records were returned. `end` is the boundary's offset.
    OpenTransaction,
}

/// An open BOUNDARY span while scanning.
struct OpenSpan {
    /// Offset of the (outermost) boundary record.
    start: usize,
    /// `records.len()` before the boundary record was pushed.
    first_record: usize,
    /// End of the span (boundary offset + `boundary.size`).
    end: usize,
}

/// Scans `data[start..]` and returns all records up to the last point where every
/// transaction is complete.
///
/// `data` is the whole file as read so far; `start` is an offset at or after `hdr_size`
/// where a record starts. Torn tails are not errors: the [`StopReason`] says why scanning
/// stopped, and `end` is where to resume. Errors: a record size below 8, a BOUNDARY record
/// without its size, or `start` beyond the data.
///
/// As in `mail_transaction_log_file_sync()`, a BOUNDARY's span is checked only when the
/// boundary has [`EXTERNAL`] set (writers always set it). If a record inside a span that is
/// fully on disk still cannot be read (unwritten size, too long), the whole transaction is
/// withheld ([`StopReason::OpenTransaction`]); Dovecot would apply its first records.
///
/// The encoding makes every size a multiple of 4 below 1 GiB, so those need no check.
pub fn scan(data: &[u8], start: u64) -> Result<Scan<'_>, FormatError> {
    let len = data.len();
    let mut pos = match usize::try_from(start) {
        Ok(p) if p <= len => p,
        _ => {
            return Err(FormatError {
                offset: start,
                what: format!(
                    "transaction log: scan start {start} is beyond the end of the data \
                     ({len} bytes)"
                ),
            });
        }
    };
    let mut records = Vec::new();
    let mut span: Option<OpenSpan> = None;
    let stop = loop {
        let rest = data.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break StopReason::Eof;
        }
        // `struct mail_transaction_header.size`, offset-encoded.
        let size = match rest.get(..4) {
            Some(&[a, b, c, d]) => decode_offset([a, b, c, d]),
            _ => break StopReason::Incomplete,
        };
        if size == 0 {
            // "unfinished or corrupted": the writer has not written the size yet.
            break StopReason::Unwritten;
        }
        if rest.len() < REC_HEADER_SIZE {
            break StopReason::Incomplete;
        }
        let size_usize = usize::try_from(size).unwrap_or(usize::MAX);
        if size_usize < REC_HEADER_SIZE {
            return Err(FormatError::new(
                pos,
                format!(
                    "transaction log corrupt: record size {size} is smaller than the 8-byte \
                     record header; {FIX_HINT}"
                ),
            ));
        }
        let Some(record) = rest.get(..size_usize) else {
            break StopReason::Incomplete;
        };
        // `struct mail_transaction_header.type`.
        let rec_type = le::u32_at(record, 4).unwrap_or(0);
        let payload = record.get(REC_HEADER_SIZE..).unwrap_or_default();
        if rec_type & TYPE_MASK == TYPE_BOUNDARY && rec_type & EXTERNAL != 0 {
            // `struct mail_transaction_boundary { u32 size; }`: the whole transaction,
            // this record included.
            let Some(bsize) = le::u32_at(payload, 0) else {
                return Err(FormatError::new(
                    pos,
                    format!(
                        "transaction log corrupt: boundary record without its size field; \
                         {FIX_HINT}"
                    ),
                ));
            };
            let span_end = pos.saturating_add(usize::try_from(bsize).unwrap_or(usize::MAX));
            match &mut span {
                Some(open) if pos < open.end => open.end = open.end.max(span_end),
                _ => {
                    span = Some(OpenSpan {
                        start: pos,
                        first_record: records.len(),
                        end: span_end,
                    });
                }
            }
            if span_end > len {
                break StopReason::OpenTransaction;
            }
        }
        records.push(RawRecord {
            offset: pos as u64,
            size,
            rec_type,
            payload,
        });
        pos = pos.saturating_add(size_usize);
    };
    let (end, stop) = match (&span, stop) {
        // Never hand out part of a transaction.
        (
            Some(open),
            StopReason::OpenTransaction | StopReason::Unwritten | StopReason::Incomplete,
        ) if pos < open.end => {
            records.truncate(open.first_record);
            (open.start, StopReason::OpenTransaction)
        }
        _ => (pos, stop),
    };
    Ok(Scan {
        records,
        end: end as u64,
        stop,
    })
}

/// A decoded record. Payload layouts are in doc section 5.3; each variant names its
/// Dovecot struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// APPEND: `struct mail_index_record[]` = `{u32 uid; u8 flags; u8 pad[3]}`. UIDs are
    /// non-zero and increasing.
    Append(Vec<AppendRec>),
    /// EXPUNGE (legacy): `struct mail_transaction_expunge[]` = `{u32 uid1, uid2}`. Without
    /// `external` it is only a request; apply it only when `external` is set.
    Expunge {
        /// [`EXTERNAL`] was set.
        external: bool,
        /// Sorted, non-overlapping, non-zero `(uid1, uid2)` ranges.
        ranges: Vec<(u32, u32)>,
    },
    /// EXPUNGE_GUID: `struct mail_transaction_expunge_guid[]` = `{u32 uid; u8 guid[16]}`.
    /// Without `external` it is only a request. The GUID may be all zeros.
    ExpungeGuid {
        /// [`EXTERNAL`] was set.
        external: bool,
        /// `(uid, guid_128)`, uid non-zero.
        items: Vec<(u32, [u8; 16])>,
    },
    /// FLAG_UPDATE: `struct mail_transaction_flag_update[]`.
    FlagUpdate(Vec<FlagUpdate>),
    /// HEADER_UPDATE: `struct mail_transaction_header_update` items into the base index
    /// header. The caller checks `offset + len <= base_header_size`.
    HeaderUpdate(Vec<HeaderUpdate<'a>>),
    /// EXT_INTRO: `struct mail_transaction_ext_intro` items; selects the extension the
    /// following EXT_* records work on.
    ExtIntro(Vec<ExtIntro<'a>>),
    /// EXT_RESET: `struct mail_transaction_ext_reset`.
    ExtReset {
        /// `new_reset_id`.
        new_reset_id: u32,
        /// `preserve_data != 0`: keep the old header and records (else zero them).
        /// Old writers omit the field; it is then false.
        preserve_data: bool,
    },
    /// EXT_HDR_UPDATE: `struct mail_transaction_ext_hdr_update` items (16-bit offset/size)
    /// into the current extension's header.
    ExtHdrUpdate(Vec<HeaderUpdate<'a>>),
    /// EXT_HDR_UPDATE32: `struct mail_transaction_ext_hdr_update32` items (32-bit
    /// offset/size).
    ExtHdrUpdate32(Vec<HeaderUpdate<'a>>),
    /// EXT_REC_UPDATE: raw `struct mail_transaction_ext_rec_update[]`; split it with
    /// [`ext_rec_updates`] using the preceding intro's `record_size`.
    ExtRecUpdate(&'a [u8]),
    /// EXT_ATOMIC_INC: `struct mail_transaction_ext_atomic_inc[]` = `(uid, diff)`. The
    /// caller checks `uid` (0 or >= next_uid is corrupt unless the extension is ignored).
    ExtAtomicInc(Vec<(u32, i32)>),
    /// KEYWORD_UPDATE: `struct mail_transaction_keyword_update` + name + UID ranges.
    KeywordUpdate {
        /// `modify_type == MODIFY_ADD` (0); false = `MODIFY_REMOVE` (1).
        add: bool,
        /// The keyword, `name_size` raw bytes (non-empty).
        name: &'a [u8],
        /// Sorted, non-overlapping, non-zero `(uid1, uid2)` ranges; at least one.
        ranges: Vec<(u32, u32)>,
    },
    /// KEYWORD_RESET: `struct mail_transaction_keyword_reset[]`: clear all keywords in the
    /// ranges (sorted, non-overlapping, non-zero).
    KeywordReset(Vec<(u32, u32)>),
    /// MODSEQ_UPDATE: `struct mail_transaction_modseq_update[]` = `(uid, modseq)`; uid 0
    /// only raises the highest modseq.
    ModseqUpdate(Vec<(u32, u64)>),
    /// INDEX_DELETED: the mailbox is being deleted (gone, if external).
    IndexDeleted,
    /// INDEX_UNDELETED: the deletion was undone.
    IndexUndeleted,
    /// BOUNDARY: `struct mail_transaction_boundary`; see [`scan`].
    Boundary {
        /// Size of the whole transaction, this record included.
        size: u32,
    },
    /// ATTRIBUTE_UPDATE: `([+-][ps]name\0)* \0 pad4` then u32 timestamps/value lengths;
    /// raw, validated like `log_view_is_record_valid()`. No index state changes.
    AttributeUpdate(&'a [u8]),
    /// Unknown masked type. Dovecot reports "Unknown transaction record type", marks the
    /// index for fsck and goes on with the next record: skip it and flag the mailbox.
    Unknown(u32),
}

/// One appended message (`struct mail_index_record`, the first 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendRec {
    /// `uid`.
    pub uid: u32,
    /// `flags`: `enum mail_flags` bits plus Dovecot's internal 0x40/0x80.
    pub flags: u8,
}

/// One flag change (`struct mail_transaction_flag_update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagUpdate {
    /// `uid1`: first UID (non-zero).
    pub uid1: u32,
    /// `uid2`: last UID (`>= uid1`).
    pub uid2: u32,
    /// `add_flags`.
    pub add: u8,
    /// `remove_flags`: `flags = (flags & !remove) | add`.
    pub remove: u8,
    /// `modseq_inc_flag != 0`: bump the modseq even if no flag changed.
    pub modseq_inc: bool,
}

/// One `{offset, size, data[size]}` item of a (base or extension) header update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderUpdate<'a> {
    /// Where in the header to write.
    pub offset: u32,
    /// The bytes to write (`size` of them).
    pub data: &'a [u8],
}

/// One extension introduction (`struct mail_transaction_ext_intro`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtIntro<'a> {
    /// `ext_id`: index into the map's extension list, or `u32::MAX` = look up by `name`.
    pub ext_id: u32,
    /// `reset_id`: if it differs from the extension's, ignore the following updates.
    pub reset_id: u32,
    /// `hdr_size`: extension header size.
    pub hdr_size: u32,
    /// `record_size`: per-message size; also the EXT_REC_UPDATE item size.
    pub record_size: u16,
    /// `record_align`.
    pub record_align: u16,
    /// `flags`: `MAIL_TRANSACTION_EXT_INTRO_FLAG_NO_SHRINK` = 1.
    pub flags: u16,
    /// `name[name_size]`, raw; empty when `ext_id` is given.
    pub name: &'a [u8],
}

/// Decodes one record, validating it as Dovecot does before applying it.
///
/// Checks (from `log_view_is_record_valid()` unless noted): a type with bit 0x1 or 0x2000
/// must be exactly 0xCD91 / 0xED90; the payload is non-empty (for every type, unknown ones
/// included); item arrays are whole multiples of their item size; UID ranges have
/// `0 < uid1 <= uid2` and are sorted without overlap; EXPUNGE_GUID and APPEND UIDs are
/// non-zero (APPEND's also increasing, `sync_append()`); names fit the payload;
/// KEYWORD_UPDATE has a name and at least one range. Also corrupt whatever the index state
/// (`mail_index_sync_ext_intro()`, `keywords_update_records()`): an EXT_INTRO with neither
/// id nor name or naming `keywords`, and a KEYWORD_UPDATE `modify_type` other than 0 or 1.
/// Checks needing index state (next_uid, extension ids, reset ids, header bounds, UIDs of
/// EXT_REC_UPDATE / EXT_ATOMIC_INC) are the caller's.
pub fn decode<'a>(rec: &RawRecord<'a>) -> Result<Record<'a>, FormatError> {
    let base = rec.payload_offset();
    let p = rec.payload;
    let kind = rec.kind();
    let external = rec.is_external();
    // "we want to be extra careful with expunges": the protection value must be exact.
    if rec.rec_type & EXPUNGE_BIT != 0 && kind != TYPE_EXPUNGE {
        return Err(corrupt(
            rec.offset.saturating_add(4),
            format!("type {kind:#x}: expunge record missing protection mask"),
        ));
    }
    if rec.rec_type & EXPUNGE_GUID_BIT != 0 && kind != TYPE_EXPUNGE_GUID {
        return Err(corrupt(
            rec.offset.saturating_add(4),
            format!("type {kind:#x}: expunge guid record missing protection mask"),
        ));
    }
    if p.is_empty() {
        return Err(corrupt(
            rec.offset,
            format!("empty record contents (type {kind:#x})"),
        ));
    }
    let out = match kind {
        TYPE_APPEND => {
            let items = chunks::<8>(p, base, "append")?;
            let mut out = Vec::with_capacity(items.len());
            let mut prev = 0u32;
            for (i, item) in items.iter().enumerate() {
                // `struct mail_index_record { u32 uid; u8 flags; }` (+ padding).
                let uid = le::u32_at(item, 0).unwrap_or(0);
                if uid <= prev {
                    return Err(corrupt(
                        item_offset(base, i, 8),
                        format!("append with UID {uid} after UID {prev}"),
                    ));
                }
                prev = uid;
                out.push(AppendRec {
                    uid,
                    flags: item[4],
                });
            }
            Record::Append(out)
        }
        TYPE_EXPUNGE => Record::Expunge {
            external,
            ranges: uid_ranges(p, base, kind)?,
        },
        TYPE_EXPUNGE_GUID => {
            let items = chunks::<20>(p, base, "expunge guid")?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                // `struct mail_transaction_expunge_guid { u32 uid; guid_128_t guid_128; }`.
                let uid = le::u32_at(item, 0).unwrap_or(0);
                if uid == 0 {
                    return Err(corrupt(
                        item_offset(base, i, 20),
                        "expunge guid record with uid=0",
                    ));
                }
                let [_, _, _, _, guid @ ..] = *item;
                out.push((uid, guid));
            }
            Record::ExpungeGuid {
                external,
                items: out,
            }
        }
        TYPE_FLAG_UPDATE => {
            let items = chunks::<12>(p, base, "flag update")?;
            let mut out = Vec::with_capacity(items.len());
            let mut prev_uid2 = None;
            for (i, item) in items.iter().enumerate() {
                // `struct mail_transaction_flag_update { u32 uid1, uid2; u8 add_flags;
                // u8 remove_flags; u8 modseq_inc_flag; u8 padding; }`.
                let uid1 = le::u32_at(item, 0).unwrap_or(0);
                let uid2 = le::u32_at(item, 4).unwrap_or(0);
                check_range(uid1, uid2, &mut prev_uid2, item_offset(base, i, 12), kind)?;
                out.push(FlagUpdate {
                    uid1,
                    uid2,
                    add: item[8],
                    remove: item[9],
                    modseq_inc: item[10] != 0,
                });
            }
            Record::FlagUpdate(out)
        }
        TYPE_HEADER_UPDATE => Record::HeaderUpdate(hdr_updates(p, base, false, "header update")?),
        TYPE_EXT_INTRO => Record::ExtIntro(ext_intros(p, base)?),
        TYPE_EXT_RESET => {
            // `struct mail_transaction_ext_reset { u32 new_reset_id; u8 preserve_data;
            // u8 unused_padding[3]; }`; "old versions have only new_reset_id".
            let Some(new_reset_id) = le::u32_at(p, 0) else {
                return Err(corrupt(base, "ext reset: invalid record size"));
            };
            Record::ExtReset {
                new_reset_id,
                preserve_data: p.get(4).is_some_and(|&b| b != 0),
            }
        }
        TYPE_EXT_HDR_UPDATE => Record::ExtHdrUpdate(hdr_updates(p, base, false, "ext hdr update")?),
        TYPE_EXT_HDR_UPDATE32 => {
            Record::ExtHdrUpdate32(hdr_updates(p, base, true, "ext hdr update")?)
        }
        TYPE_EXT_REC_UPDATE => Record::ExtRecUpdate(p),
        TYPE_EXT_ATOMIC_INC => {
            // Stricter than Dovecot: it reads a trailing partial item past the record.
            let items = chunks::<8>(p, base, "ext atomic inc")?;
            // `struct mail_transaction_ext_atomic_inc { u32 uid; i32 diff; }`.
            let out = items
                .iter()
                .map(|item| {
                    let uid = le::u32_at(item, 0).unwrap_or(0);
                    let diff = i32::from_le_bytes([item[4], item[5], item[6], item[7]]);
                    (uid, diff)
                })
                .collect();
            Record::ExtAtomicInc(out)
        }
        TYPE_KEYWORD_UPDATE => keyword_update(p, base, kind)?,
        TYPE_KEYWORD_RESET => Record::KeywordReset(uid_ranges(p, base, kind)?),
        TYPE_MODSEQ_UPDATE => {
            // Stricter than Dovecot: it reads a trailing partial item past the record.
            let items = chunks::<12>(p, base, "modseq update")?;
            // `struct mail_transaction_modseq_update { u32 uid; u32 modseq_low32;
            // u32 modseq_high32; }`.
            let out = items
                .iter()
                .map(|item| {
                    let uid = le::u32_at(item, 0).unwrap_or(0);
                    let low = u64::from(le::u32_at(item, 4).unwrap_or(0));
                    let high = u64::from(le::u32_at(item, 8).unwrap_or(0));
                    (uid, (high << 32) | low)
                })
                .collect();
            Record::ModseqUpdate(out)
        }
        // Dovecot: "There is no record content for this"; it never looks at the payload.
        TYPE_INDEX_DELETED => Record::IndexDeleted,
        TYPE_INDEX_UNDELETED => Record::IndexUndeleted,
        TYPE_BOUNDARY => match le::u32_at(p, 0) {
            Some(size) => Record::Boundary { size },
            None => return Err(corrupt(base, "boundary record without its size field")),
        },
        TYPE_ATTRIBUTE_UPDATE => {
            check_attribute_update(p, base)?;
            Record::AttributeUpdate(p)
        }
        other => Record::Unknown(other),
    };
    Ok(out)
}

/// Splits an EXT_REC_UPDATE payload into `(uid, data[record_size])` items of stride
/// `align4(4 + record_size)` (`struct mail_transaction_ext_rec_update`).
///
/// `record_size` comes from the EXT_INTRO that precedes the record in the same
/// transaction; `offset` is the absolute file offset of `payload[0]` (record offset + 8).
/// A payload that is not a whole number of items is corrupt ("ext rec update: invalid
/// record size"). UIDs are not checked here: Dovecot rejects 0 and `>= next_uid`, but only
/// when the extension is not being ignored.
pub fn ext_rec_updates(
    payload: &[u8],
    record_size: u16,
    offset: u64,
) -> Result<Vec<(u32, &[u8])>, FormatError> {
    let size = usize::from(record_size);
    let stride = align4(4 + size);
    let mut out = Vec::with_capacity(payload.len() / stride);
    let mut i = 0usize;
    while i < payload.len() {
        let item = i
            .checked_add(stride)
            .and_then(|end| payload.get(i..end))
            .ok_or_else(|| {
                corrupt(
                    offset.saturating_add(i as u64),
                    format!(
                        "ext rec update: invalid record size ({} bytes left, items are \
                         {stride} bytes for record_size {record_size})",
                        payload.len() - i
                    ),
                )
            })?;
        let uid = le::u32_at(item, 0).unwrap_or(0);
        out.push((uid, item.get(4..4 + size).unwrap_or_default()));
        i += stride;
    }
    Ok(out)
}

/// A corruption error at an absolute offset.
fn corrupt(offset: u64, what: impl std::fmt::Display) -> FormatError {
    FormatError {
        offset,
        what: format!("transaction log corrupt: {what}; {FIX_HINT}"),
    }
}

/// Rounds up to a multiple of 4 (the padding after names and header data).
fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Absolute offset of item `i` of `size` bytes in a payload at `base`.
fn item_offset(base: u64, i: usize, size: usize) -> u64 {
    base.saturating_add((i as u64).saturating_mul(size as u64))
}

/// Splits `p` into `N`-byte items, or reports "invalid record size" if it does not divide.
fn chunks<'a, const N: usize>(
    p: &'a [u8],
    base: u64,
    what: &str,
) -> Result<&'a [[u8; N]], FormatError> {
    let (items, rest) = p.as_chunks::<N>();
    if !rest.is_empty() {
        return Err(corrupt(
            base,
            format!(
                "{what}: invalid record size {} (not a multiple of {N})",
                p.len()
            ),
        ));
    }
    Ok(items)
}

/// Checks one `(uid1, uid2)` range as `log_view_is_uid_range_valid()` does.
fn check_range(
    uid1: u32,
    uid2: u32,
    prev_uid2: &mut Option<u32>,
    offset: u64,
    kind: u32,
) -> Result<(), FormatError> {
    if uid1 > uid2 || uid1 == 0 {
        return Err(corrupt(
            offset,
            format!("invalid UID range ({uid1} .. {uid2}, type {kind:#x})"),
        ));
    }
    if prev_uid2.is_some_and(|prev| uid1 <= prev) {
        return Err(corrupt(
            offset,
            format!("non-sorted UID ranges (type {kind:#x})"),
        ));
    }
    *prev_uid2 = Some(uid2);
    Ok(())
}

/// `{u32 uid1, uid2}[]` (EXPUNGE, KEYWORD_RESET, KEYWORD_UPDATE's tail): whole items, at
/// least one, each valid and sorted.
fn uid_ranges(p: &[u8], base: u64, kind: u32) -> Result<Vec<(u32, u32)>, FormatError> {
    let items = chunks::<8>(p, base, "UID ranges")?;
    if items.is_empty() {
        return Err(corrupt(base, format!("no UID ranges (type {kind:#x})")));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut prev_uid2 = None;
    for (i, item) in items.iter().enumerate() {
        let uid1 = le::u32_at(item, 0).unwrap_or(0);
        let uid2 = le::u32_at(item, 4).unwrap_or(0);
        check_range(uid1, uid2, &mut prev_uid2, item_offset(base, i, 8), kind)?;
        out.push((uid1, uid2));
    }
    Ok(out)
}

/// HEADER_UPDATE / EXT_HDR_UPDATE / EXT_HDR_UPDATE32 items: `{offset; size; data[size]}`
/// with 16-bit (`struct mail_transaction_header_update`, `..._ext_hdr_update`) or 32-bit
/// (`struct mail_transaction_ext_hdr_update32`) fields. The reader advances to the next
/// 4-byte boundary after each item, as Dovecot's readers do (doc section 5.8).
///
/// Stricter than Dovecot for HEADER_UPDATE: its reader does not check that an item fits
/// the record; an item that does not is corrupt here.
fn hdr_updates<'a>(
    p: &'a [u8],
    base: u64,
    wide: bool,
    what: &str,
) -> Result<Vec<HeaderUpdate<'a>>, FormatError> {
    let head = if wide { 8 } else { 4 };
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < p.len() {
        let fields = if wide {
            le::u32_at(p, i).zip(i.checked_add(4).and_then(|j| le::u32_at(p, j)))
        } else {
            le::u16_at(p, i)
                .zip(i.checked_add(2).and_then(|j| le::u16_at(p, j)))
                .map(|(o, s)| (u32::from(o), u32::from(s)))
        };
        let here = base.saturating_add(i as u64);
        let Some((offset, size)) = fields else {
            return Err(corrupt(
                here,
                format!("{what}: invalid record size (item header cut off)"),
            ));
        };
        let start = i + head;
        let data = usize::try_from(size)
            .ok()
            .and_then(|n| start.checked_add(n))
            .and_then(|end| p.get(start..end))
            .ok_or_else(|| {
                corrupt(
                    here,
                    format!(
                        "{what}: invalid record size (item of {size} bytes at header offset \
                         {offset} extends beyond the record)"
                    ),
                )
            })?;
        out.push(HeaderUpdate { offset, data });
        i = align4(start + data.len());
    }
    Ok(out)
}

/// EXT_INTRO items: `struct mail_transaction_ext_intro` (20 bytes) + name, each padded to
/// 4. Fewer than 20 trailing bytes are "just extra padding" and ignored.
fn ext_intros(p: &[u8], base: u64) -> Result<Vec<ExtIntro<'_>>, FormatError> {
    const FIXED: usize = 20;
    let mut out = Vec::new();
    let mut i = 0usize;
    while let Some(fixed) = i.checked_add(FIXED).and_then(|end| p.get(i..end)) {
        let here = base.saturating_add(i as u64);
        let ext_id = le::u32_at(fixed, 0).unwrap_or(0);
        let name_size = le::u16_at(fixed, 18).unwrap_or(0);
        let name_start = i + FIXED;
        let name = p
            .get(name_start..name_start + usize::from(name_size))
            .ok_or_else(|| {
                corrupt(
                    here,
                    format!("ext intro: name_size {name_size} too large for the record"),
                )
            })?;
        // mail_index_sync_ext_intro(): these are corrupt whatever the index state.
        if ext_id == u32::MAX && name.is_empty() {
            return Err(corrupt(here, "extension introduction without id or name"));
        }
        if name_until_nul(name) == KEYWORDS_EXT_NAME {
            return Err(corrupt(here, "extension introduction for keywords"));
        }
        out.push(ExtIntro {
            ext_id,
            reset_id: le::u32_at(fixed, 4).unwrap_or(0),
            hdr_size: le::u32_at(fixed, 8).unwrap_or(0),
            record_size: le::u16_at(fixed, 12).unwrap_or(0),
            record_align: le::u16_at(fixed, 14).unwrap_or(0),
            flags: le::u16_at(fixed, 16).unwrap_or(0),
            name,
        });
        i = align4(name_start + name.len());
    }
    Ok(out)
}

/// The name as Dovecot's `t_strndup()` sees it: up to the first NUL.
fn name_until_nul(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == 0) {
        Some(n) => name.get(..n).unwrap_or_default(),
        None => name,
    }
}

/// KEYWORD_UPDATE: `struct mail_transaction_keyword_update { u8 modify_type; u8 padding;
/// u16 name_size; }`, `name[name_size]`, pad4, then `{u32 uid1, uid2}[]`.
fn keyword_update(p: &[u8], base: u64, kind: u32) -> Result<Record<'_>, FormatError> {
    let (Some(&modify_type), Some(name_size)) = (p.first(), le::u16_at(p, 2)) else {
        return Err(corrupt(base, "invalid keyword update record size"));
    };
    if name_size == 0 {
        return Err(corrupt(base, "trying to use empty keyword"));
    }
    let name_end = 4 + usize::from(name_size);
    let seqset = align4(name_end);
    let (Some(name), Some(uids)) = (p.get(4..name_end), p.get(seqset..)) else {
        return Err(corrupt(
            base,
            format!("invalid keyword update record size (name_size {name_size})"),
        ));
    };
    // `enum modify_type`: MODIFY_ADD = 0, MODIFY_REMOVE = 1. Dovecot: anything else hits
    // i_unreached() when applied.
    let add = match modify_type {
        0 => true,
        1 => false,
        other => {
            return Err(corrupt(
                base,
                format!("keyword update with unknown modify_type {other}"),
            ));
        }
    };
    let ranges = uid_ranges(uids, base.saturating_add(seqset as u64), kind)?;
    Ok(Record::KeywordUpdate { add, name, ranges })
}

/// ATTRIBUTE_UPDATE key list, checked as `log_view_is_record_valid()` does:
/// `[+-][ps]<non-empty name>\0` repeated, ended by a NUL (or by the record end).
fn check_attribute_update(p: &[u8], base: u64) -> Result<(), FormatError> {
    let mut i = 0usize;
    // Loop while at least three bytes remain and the next is not the list's final NUL.
    while let Some(&[sign, scope, first]) = p.get(i..i.saturating_add(3))
        && sign != 0
    {
        let here = base.saturating_add(i as u64);
        if sign != b'+' && sign != b'-' {
            return Err(corrupt(
                here,
                format!("attribute update: invalid prefix {sign:#04x}"),
            ));
        }
        if scope != b'p' && scope != b's' {
            return Err(corrupt(
                here,
                format!("attribute update: invalid type {scope:#04x}"),
            ));
        }
        if first == 0 {
            return Err(corrupt(here, "attribute update: empty key"));
        }
        // Stricter than Dovecot: its strlen() would run past a record without a NUL.
        match p.get(i + 2..).and_then(|k| k.iter().position(|&b| b == 0)) {
            Some(n) => i += 2 + n + 1,
            None => {
                return Err(corrupt(here, "attribute update doesn't end with NUL"));
            }
        }
    }
    if i == 0 || p.get(i).is_some_and(|&b| b != 0) {
        return Err(corrupt(
            base.saturating_add(i as u64),
            "attribute update doesn't end with NUL",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hex;

    // ---- byte builders -------------------------------------------------------------------

    /// `mail_index_uint32_to_offset()`: the on-disk form of a record size.
    fn enc(n: u32) -> [u8; 4] {
        assert!(n.is_multiple_of(4) && n < 0x4000_0000);
        let v = n >> 2;
        [
            0x80 | ((v >> 21) & 0x7f) as u8,
            0x80 | ((v >> 14) & 0x7f) as u8,
            0x80 | ((v >> 7) & 0x7f) as u8,
            0x80 | (v & 0x7f) as u8,
        ]
    }

    /// Little-endian u32s, concatenated.
    fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A framed record: size, type, payload (which must already be padded).
    fn rec(rec_type: u32, payload: &[u8]) -> Vec<u8> {
        assert_eq!(payload.len() % 4, 0, "test payload must be padded");
        let size = u32::try_from(payload.len() + 8).unwrap();
        let mut out = enc(size).to_vec();
        out.extend_from_slice(&rec_type.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An external boundary record for a transaction of `span` bytes.
    fn boundary(span: u32) -> Vec<u8> {
        rec(TYPE_BOUNDARY | EXTERNAL, &le(&[span]))
    }

    /// A 40-byte version 1.3 header.
    fn header() -> Vec<u8> {
        let mut h = vec![1, 3];
        h.extend_from_slice(&40u16.to_le_bytes());
        h.extend(le(&[0x1234_5678, 2, 1, 4000, 1_700_000_000]));
        h.extend_from_slice(&7u64.to_le_bytes());
        h.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(h.len(), 40);
        h
    }

    /// Header plus the given records.
    fn log_of(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = header();
        for r in records {
            out.extend_from_slice(r);
        }
        out
    }

    /// A raw record for `decode()` tests, at offset 100.
    fn raw(rec_type: u32, payload: &[u8]) -> RawRecord<'_> {
        RawRecord {
            offset: 100,
            size: u32::try_from(payload.len() + 8).unwrap(),
            rec_type,
            payload,
        }
    }

    /// KEYWORD_UPDATE payload: modify_type, name, ranges.
    fn kw(modify: u8, name: &[u8], ranges: &[u32]) -> Vec<u8> {
        let mut p = vec![modify, 0];
        p.extend_from_slice(&u16::try_from(name.len()).unwrap().to_le_bytes());
        p.extend_from_slice(name);
        while !p.len().is_multiple_of(4) {
            p.push(0);
        }
        p.extend(le(ranges));
        p
    }

    /// EXT_INTRO item: fixed part, name, padding.
    fn intro(ext_id: u32, reset_id: u32, hdr_size: u32, rec: [u16; 3], name: &[u8]) -> Vec<u8> {
        let mut p = le(&[ext_id, reset_id, hdr_size]);
        for v in rec {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.extend_from_slice(&u16::try_from(name.len()).unwrap().to_le_bytes());
        p.extend_from_slice(name);
        while !p.len().is_multiple_of(4) {
            p.push(0);
        }
        p
    }

    /// `{u16 offset; u16 size; data; pad4}` item.
    fn hdr_item(offset: u16, data: &[u8]) -> Vec<u8> {
        let mut p = offset.to_le_bytes().to_vec();
        p.extend_from_slice(&u16::try_from(data.len()).unwrap().to_le_bytes());
        p.extend_from_slice(data);
        while !p.len().is_multiple_of(4) {
            p.push(0);
        }
        p
    }

    // ---- size encoding -------------------------------------------------------------------

    #[test]
    fn size_encoding_round_trips() {
        assert_eq!(decode_offset([0x80, 0x80, 0x80, 0x84]), 16);
        assert_eq!(decode_offset([0x80, 0x80, 0x82, 0x80]), 1024);
        for n in [8u32, 12, 16, 508, 512, 1024, 65_532, 1 << 20, 0x3fff_fffc] {
            assert_eq!(decode_offset(enc(n)), n, "size {n}");
        }
        for shift in 2..30 {
            let n = 1u32 << shift;
            assert_eq!(decode_offset(enc(n)), n);
            assert_eq!(decode_offset(enc(n + 4)), n + 4);
        }
        // Any byte without 0x80 means "not written yet".
        for i in 0..4 {
            let mut b = enc(1024);
            b[i] &= 0x7f;
            assert_eq!(decode_offset(b), 0);
        }
        assert_eq!(decode_offset([0; 4]), 0);
        assert_eq!(decode_offset([0x80; 4]), 0);
        // Every decodable value is a multiple of 4 below 1 GiB.
        assert_eq!(decode_offset([0xff; 4]), 0x3fff_fffc);
    }

    // ---- header --------------------------------------------------------------------------

    #[test]
    fn header_parses_all_fields() {
        let h = parse_header(&header()).unwrap();
        assert_eq!(
            h,
            LogHeader {
                major_version: 1,
                minor_version: 3,
                hdr_size: 40,
                indexid: 0x1234_5678,
                file_seq: 2,
                prev_file_seq: 1,
                prev_file_offset: 4000,
                create_stamp: 1_700_000_000,
                initial_modseq: 7,
                compat_flags: 1,
            }
        );
    }

    #[test]
    fn short_header_fields_read_as_zero() {
        let mut h = header();
        h[1] = 1; // minor 1: compat_flags not yet defined
        h[2] = 24;
        let p = parse_header(&h[..24]).unwrap();
        assert_eq!((p.hdr_size, p.create_stamp), (24, 1_700_000_000));
        assert_eq!((p.initial_modseq, p.compat_flags), (0, 0));
        // Bytes after hdr_size are ignored, not read.
        let p = parse_header(&h).unwrap();
        assert_eq!((p.initial_modseq, p.compat_flags), (0, 0));
        // A larger header keeps unknown fields out of the way.
        let mut big = header();
        big[2] = 48;
        big.extend_from_slice(&[0xee; 8]);
        assert_eq!(parse_header(&big).unwrap().hdr_size, 48);
    }

    #[test]
    fn header_errors() {
        let cases: &[(&str, Vec<u8>, u64, &str)] = &[
            ("empty", vec![], 0, "shorter than the 24-byte"),
            (
                "23 bytes",
                header()[..23].to_vec(),
                23,
                "shorter than the 24-byte",
            ),
            (
                "major 2",
                [&[2u8][..], &header()[1..]].concat(),
                0,
                "major version 2",
            ),
            ("major 0 short", vec![0, 3], 0, "major version 0"),
            (
                "hdr_size 20",
                {
                    let mut h = header();
                    h[2] = 20;
                    h
                },
                2,
                "below 24",
            ),
            (
                "hdr_size past EOF",
                header()[..30].to_vec(),
                2,
                "beyond the end",
            ),
            (
                "big-endian",
                {
                    let mut h = header();
                    h[32] = 0;
                    h
                },
                32,
                "big-endian",
            ),
        ];
        for (name, data, offset, what) in cases {
            let e = parse_header(data).expect_err(name);
            assert_eq!(e.offset, *offset, "{name}: {e}");
            assert!(e.what.contains(what), "{name}: {e}");
        }
    }

    #[test]
    fn header_marked_corrupted_is_returned() {
        let mut h = header();
        h[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(parse_header(&h).unwrap().indexid, 0);
    }

    // ---- decode: one fixture per record type ----------------------------------------------

    #[test]
    fn decodes_every_record_type() {
        let guid: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        let mut expunge_guid = le(&[7]);
        expunge_guid.extend_from_slice(&guid);
        let two_intros = [
            intro(u32::MAX, 0, 36, [0, 0, 1], b"maildir"),
            intro(1, 9, 0, [4, 4, 1], b""),
            vec![0; 8], // trailing padding shorter than an intro
        ]
        .concat();
        let hdr_upd = [
            hdr_item(24, &le(&[1234])),
            hdr_item(84, &[1, 2, 3, 4, 5, 6]),
        ]
        .concat();
        let mut hdr32 = le(&[70_000, 3]);
        hdr32.extend_from_slice(&[9, 8, 7, 0]);
        let attr = [b"+pvendor/x\0-sy\0\0\0".to_vec(), le(&[10, 5, 11])].concat();
        let mut modseq = le(&[3, 5, 1]);
        modseq.extend(le(&[0, 9, 0]));
        let cases: Vec<(&str, u32, Vec<u8>, Record<'_>)> = vec![
            (
                "append",
                TYPE_APPEND | EXTERNAL,
                [le(&[1]), vec![0x08, 0, 0, 0], le(&[5]), vec![0x82, 0, 0, 0]].concat(),
                Record::Append(vec![
                    AppendRec {
                        uid: 1,
                        flags: 0x08,
                    },
                    AppendRec {
                        uid: 5,
                        flags: 0x82,
                    },
                ]),
            ),
            (
                "expunge (external)",
                TYPE_EXPUNGE | EXTERNAL,
                le(&[1, 3, 5, 5]),
                Record::Expunge {
                    external: true,
                    ranges: vec![(1, 3), (5, 5)],
                },
            ),
            (
                "expunge request",
                TYPE_EXPUNGE,
                le(&[2, 2]),
                Record::Expunge {
                    external: false,
                    ranges: vec![(2, 2)],
                },
            ),
            (
                "expunge guid",
                TYPE_EXPUNGE_GUID | EXTERNAL,
                expunge_guid.clone(),
                Record::ExpungeGuid {
                    external: true,
                    items: vec![(7, guid)],
                },
            ),
            (
                "flag update",
                TYPE_FLAG_UPDATE,
                [
                    le(&[1, 4]),
                    vec![0x0a, 0x15, 0, 0],
                    le(&[6, 6]),
                    vec![0, 0, 1, 0],
                ]
                .concat(),
                Record::FlagUpdate(vec![
                    FlagUpdate {
                        uid1: 1,
                        uid2: 4,
                        add: 0x0a,
                        remove: 0x15,
                        modseq_inc: false,
                    },
                    FlagUpdate {
                        uid1: 6,
                        uid2: 6,
                        add: 0,
                        remove: 0,
                        modseq_inc: true,
                    },
                ]),
            ),
            (
                "header update",
                TYPE_HEADER_UPDATE | EXTERNAL,
                hdr_upd.clone(),
                Record::HeaderUpdate(vec![
                    HeaderUpdate {
                        offset: 24,
                        data: &hdr_upd[4..8],
                    },
                    HeaderUpdate {
                        offset: 84,
                        data: &hdr_upd[12..18],
                    },
                ]),
            ),
            (
                "ext intro",
                TYPE_EXT_INTRO,
                two_intros.clone(),
                Record::ExtIntro(vec![
                    ExtIntro {
                        ext_id: u32::MAX,
                        reset_id: 0,
                        hdr_size: 36,
                        record_size: 0,
                        record_align: 0,
                        flags: 1,
                        name: b"maildir",
                    },
                    ExtIntro {
                        ext_id: 1,
                        reset_id: 9,
                        hdr_size: 0,
                        record_size: 4,
                        record_align: 4,
                        flags: 1,
                        name: b"",
                    },
                ]),
            ),
            (
                "ext reset",
                TYPE_EXT_RESET,
                [le(&[77]), vec![1, 0, 0, 0]].concat(),
                Record::ExtReset {
                    new_reset_id: 77,
                    preserve_data: true,
                },
            ),
            (
                "ext reset, old 4-byte form",
                TYPE_EXT_RESET,
                le(&[78]),
                Record::ExtReset {
                    new_reset_id: 78,
                    preserve_data: false,
                },
            ),
            (
                "ext hdr update",
                TYPE_EXT_HDR_UPDATE,
                hdr_item(0, &le(&[2])),
                Record::ExtHdrUpdate(vec![HeaderUpdate {
                    offset: 0,
                    data: &[2, 0, 0, 0],
                }]),
            ),
            (
                "ext hdr update32",
                TYPE_EXT_HDR_UPDATE32,
                hdr32.clone(),
                Record::ExtHdrUpdate32(vec![HeaderUpdate {
                    offset: 70_000,
                    data: &[9, 8, 7],
                }]),
            ),
            (
                "ext rec update",
                TYPE_EXT_REC_UPDATE,
                le(&[1, 2]),
                Record::ExtRecUpdate(&[1, 0, 0, 0, 2, 0, 0, 0]),
            ),
            (
                "ext atomic inc",
                TYPE_EXT_ATOMIC_INC,
                le(&[1, 1, 2, u32::MAX]),
                Record::ExtAtomicInc(vec![(1, 1), (2, -1)]),
            ),
            (
                "keyword add",
                TYPE_KEYWORD_UPDATE,
                kw(0, b"$Label1", &[1, 4]),
                Record::KeywordUpdate {
                    add: true,
                    name: b"$Label1",
                    ranges: vec![(1, 4)],
                },
            ),
            (
                "keyword remove, name fills 4 bytes",
                TYPE_KEYWORD_UPDATE,
                kw(1, b"Work", &[2, 2, 5, 9]),
                Record::KeywordUpdate {
                    add: false,
                    name: b"Work",
                    ranges: vec![(2, 2), (5, 9)],
                },
            ),
            (
                "keyword reset",
                TYPE_KEYWORD_RESET,
                le(&[3, 3]),
                Record::KeywordReset(vec![(3, 3)]),
            ),
            (
                "modseq update",
                TYPE_MODSEQ_UPDATE | EXTERNAL | SYNC,
                modseq.clone(),
                Record::ModseqUpdate(vec![(3, (1 << 32) | 5), (0, 9)]),
            ),
            (
                "index deleted",
                TYPE_INDEX_DELETED | EXTERNAL,
                le(&[0]),
                Record::IndexDeleted,
            ),
            (
                "index undeleted",
                TYPE_INDEX_UNDELETED,
                le(&[0]),
                Record::IndexUndeleted,
            ),
            (
                "boundary",
                TYPE_BOUNDARY | EXTERNAL,
                le(&[120]),
                Record::Boundary { size: 120 },
            ),
            (
                "attribute update",
                TYPE_ATTRIBUTE_UPDATE,
                attr.clone(),
                Record::AttributeUpdate(&attr),
            ),
            (
                "unknown type",
                0x0020_0000 | EXTERNAL,
                le(&[0]),
                Record::Unknown(0x0020_0000),
            ),
            (
                "unknown low type",
                0x0000_0006,
                le(&[0]),
                Record::Unknown(6),
            ),
        ];
        for (name, rec_type, payload, want) in &cases {
            let got = decode(&raw(*rec_type, payload)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn decode_errors() {
        #[rustfmt::skip]
        let cases: Vec<(&str, u32, Vec<u8>, u64, &str)> = vec![
            // Protected expunge types (record at 100, type field at 104, payload at 108).
            ("bare expunge bit", 0x0000_0001, le(&[1, 1]), 104, "protection mask"),
            ("bare expunge guid bit", 0x0000_2000, vec![1; 20], 104, "protection mask"),
            ("expunge bit on append", 0x0000_0003, le(&[1, 0]), 104, "protection mask"),
            ("both expunge bits", 0x0000_ed91, le(&[1, 1]), 104, "protection mask"),
            ("both bits, external", 0x0000_ed91 | EXTERNAL, le(&[1, 1]), 104, "protection"),
            ("guid prot missing a bit", 0x0000_e990, vec![1; 20], 104, "protection mask"),
            ("empty append", TYPE_APPEND, vec![], 100, "empty record"),
            ("empty unknown", 0x0040_0000, vec![], 100, "empty record"),
            ("empty boundary", TYPE_BOUNDARY | EXTERNAL, vec![], 100, "empty record"),
            ("append size", TYPE_APPEND, le(&[1]), 108, "not a multiple of 8"),
            ("append uid 0", TYPE_APPEND, le(&[0, 0]), 108, "UID 0"),
            ("append not increasing", TYPE_APPEND, le(&[5, 0, 5, 0]), 116, "UID 5 after UID 5"),
            ("expunge size", TYPE_EXPUNGE, le(&[1, 2, 3]), 108, "not a multiple of 8"),
            ("expunge uid1 0", TYPE_EXPUNGE | EXTERNAL, le(&[0, 2]), 108, "invalid UID range"),
            ("expunge reversed", TYPE_EXPUNGE, le(&[3, 2]), 108, "invalid UID range (3 .. 2"),
            ("expunge unsorted", TYPE_EXPUNGE, le(&[3, 4, 4, 5]), 116, "non-sorted"),
            ("expunge guid size", TYPE_EXPUNGE_GUID, vec![1; 24], 108, "not a multiple of 20"),
            ("expunge guid uid 0", TYPE_EXPUNGE_GUID, [vec![1; 20], vec![0; 20]].concat(), 128,
             "uid=0"),
            ("flag update size", TYPE_FLAG_UPDATE, le(&[1, 1]), 108, "not a multiple of 12"),
            ("flag update range", TYPE_FLAG_UPDATE, le(&[2, 1, 0]), 108, "invalid UID range"),
            ("flag update unsorted", TYPE_FLAG_UPDATE, le(&[5, 6, 0, 1, 2, 0]), 120, "non-sorted"),
            ("header update 2nd item", TYPE_HEADER_UPDATE,
             [hdr_item(64, &le(&[1])), le(&[4 << 16])].concat(), 116, "extends beyond"),
            ("header update too long", TYPE_HEADER_UPDATE, le(&[64 | (8 << 16), 1]), 108,
             "extends beyond"),
            ("ext hdr update too long", TYPE_EXT_HDR_UPDATE, le(&[8 << 16]), 108, "ext hdr update"),
            ("ext hdr32 head cut", TYPE_EXT_HDR_UPDATE32, le(&[0]), 108, "item header cut off"),
            ("ext hdr32 huge", TYPE_EXT_HDR_UPDATE32, le(&[0, u32::MAX]), 108, "extends beyond"),
            ("intro name too large", TYPE_EXT_INTRO, {
                let mut p = intro(u32::MAX, 0, 0, [4, 4, 0], b"abc");
                p[18] = 9;
                p
            }, 108, "name_size 9 too large"),
            ("intro without id or name", TYPE_EXT_INTRO, intro(u32::MAX, 0, 0, [4, 4, 0], b""),
             108, "without id or name"),
            ("second intro bad", TYPE_EXT_INTRO,
             [intro(0, 0, 0, [4, 4, 0], b""), intro(u32::MAX, 0, 0, [4, 4, 0], b"")].concat(),
             128, "without id or name"),
            ("intro keywords", TYPE_EXT_INTRO, intro(u32::MAX, 0, 0, [1, 1, 0], b"keywords"),
             108, "for keywords"),
            ("intro keywords nul", TYPE_EXT_INTRO,
             intro(u32::MAX, 0, 0, [1, 1, 0], b"keywords\0x"), 108, "for keywords"),
            ("atomic inc size", TYPE_EXT_ATOMIC_INC, le(&[1, 1, 2]), 108, "not a multiple of 8"),
            ("modseq size", TYPE_MODSEQ_UPDATE, le(&[1, 1]), 108, "not a multiple of 12"),
            ("keyword empty name", TYPE_KEYWORD_UPDATE, kw(0, b"", &[1, 1]), 108, "empty keyword"),
            ("keyword name too long", TYPE_KEYWORD_UPDATE, {
                let mut p = kw(0, b"abcd", &[1, 1]);
                p[2] = 20;
                p
            }, 108, "invalid keyword update record size"),
            ("keyword no ranges", TYPE_KEYWORD_UPDATE, kw(0, b"abc", &[]), 116, "no UID ranges"),
            ("keyword range size", TYPE_KEYWORD_UPDATE, kw(0, b"abc", &[1]), 116,
             "not a multiple of 8"),
            ("keyword bad range", TYPE_KEYWORD_UPDATE, kw(1, b"abc", &[1, 1, 0, 3]), 124,
             "invalid UID range"),
            ("keyword modify 2", TYPE_KEYWORD_UPDATE, kw(2, b"abc", &[1, 1]), 108, "modify_type 2"),
            ("keyword reset size", TYPE_KEYWORD_RESET, le(&[1]), 108, "not a multiple of 8"),
            ("keyword reset unsorted", TYPE_KEYWORD_RESET, le(&[4, 4, 1, 1]), 116, "non-sorted"),
            ("attr bad prefix", TYPE_ATTRIBUTE_UPDATE, b"*pk\0".to_vec(), 108, "invalid prefix 0x2a"),
            ("attr bad type", TYPE_ATTRIBUTE_UPDATE, b"+xk\0".to_vec(), 108, "invalid type 0x78"),
            ("attr empty key", TYPE_ATTRIBUTE_UPDATE, b"+p\0\0".to_vec(), 108, "empty key"),
            ("attr no nul", TYPE_ATTRIBUTE_UPDATE, b"+pke".to_vec(), 108, "doesn't end with NUL"),
            ("attr starts with nul", TYPE_ATTRIBUTE_UPDATE, le(&[0]), 108, "doesn't end with NUL"),
            ("attr trailing junk", TYPE_ATTRIBUTE_UPDATE, b"+pkey\0ab".to_vec(), 114,
             "doesn't end with NUL"),
        ];
        for (name, rec_type, payload, offset, what) in &cases {
            let e = decode(&raw(*rec_type, payload)).expect_err(name);
            assert!(e.what.contains(what), "{name}: {e}");
            assert_eq!(e.offset, *offset, "{name}: {e}");
            assert!(
                e.what.starts_with("transaction log corrupt: "),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn header_update_items_advance_to_align4_each() {
        // doc 5.8: the reader pads after every item, so an odd-sized first item is followed
        // by padding before the next item header.
        let p = [hdr_item(1, &[7]), hdr_item(8, &le(&[9]))].concat();
        assert_eq!(p.len(), 16);
        let Record::HeaderUpdate(items) = decode(&raw(TYPE_HEADER_UPDATE, &p)).unwrap() else {
            panic!("not a header update");
        };
        assert_eq!(
            items,
            [
                HeaderUpdate {
                    offset: 1,
                    data: &[7]
                },
                HeaderUpdate {
                    offset: 8,
                    data: &[9, 0, 0, 0]
                },
            ]
        );
        // A writer that packed them back to back is misread the same way Dovecot misreads
        // it: the second item header is taken from inside the padding.
        let packed = [1u8, 0, 1, 0, 7, 8, 0, 4, 0, 9, 0, 0, 0, 0, 0, 0];
        let Record::HeaderUpdate(items) = decode(&raw(TYPE_HEADER_UPDATE, &packed)).unwrap() else {
            panic!("not a header update");
        };
        assert_eq!(
            items,
            [
                HeaderUpdate {
                    offset: 1,
                    data: &[7]
                },
                HeaderUpdate {
                    offset: 0x900,
                    data: &[]
                },
                HeaderUpdate {
                    offset: 0,
                    data: &[]
                },
            ]
        );
    }

    #[test]
    fn attribute_update_without_final_nul_at_record_end_is_accepted() {
        // Dovecot's loop stops when fewer than three bytes are left; the key list may then
        // end at the record end.
        assert!(decode(&raw(TYPE_ATTRIBUTE_UPDATE, b"-sk\0")).is_ok());
        assert!(decode(&raw(TYPE_ATTRIBUTE_UPDATE, b"-sabc\0\0\0")).is_ok());
    }

    #[test]
    fn ext_rec_updates_split_by_aligned_stride() {
        // record_size 2 (mdbox "ref"): stride 8.
        let p = [le(&[1]), vec![1, 0, 0xee, 0xee], le(&[3]), vec![2, 0, 0, 0]].concat();
        assert_eq!(
            ext_rec_updates(&p, 2, 108).unwrap(),
            [(1, &[1u8, 0][..]), (3, &[2, 0][..])]
        );
        // record_size 12 (mdbox "map"): stride 16.
        let p = le(&[2, 1, 16, 136]);
        assert_eq!(ext_rec_updates(&p, 12, 0).unwrap(), [(2, &p[4..16])]);
        // record_size 0: uid only.
        assert_eq!(
            ext_rec_updates(&le(&[4, 5]), 0, 0).unwrap(),
            [(4, &[][..]), (5, &[][..])]
        );
        assert_eq!(ext_rec_updates(&[], 4, 0).unwrap(), []);
        // A partial last item.
        let e = ext_rec_updates(&le(&[1, 1, 2]), 4, 108).unwrap_err();
        assert_eq!(e.offset, 116);
        assert!(e.what.contains("invalid record size"), "{e}");
        // A record size larger than the payload.
        assert!(ext_rec_updates(&le(&[1, 1]), u16::MAX, 0).is_err());
    }

    // ---- scan: framing, torn tails, boundaries --------------------------------------------

    /// A synthetic log: a two-change transaction with boundary, its tail-offset header
    /// update, a single-change transaction, an unknown record, and a three-record
    /// transaction.
    fn synthetic_log() -> Vec<u8> {
        let append = rec(TYPE_APPEND | EXTERNAL, &le(&[1, 0]));
        let flags = rec(TYPE_FLAG_UPDATE, &le(&[1, 1, 8]));
        let t1 = u32::try_from(12 + append.len() + flags.len()).unwrap();
        let tail = rec(TYPE_HEADER_UPDATE | EXTERNAL, &hdr_item(64, &le(&[0])));
        let single = rec(TYPE_KEYWORD_UPDATE, &kw(0, b"kw", &[1, 1]));
        let unknown = rec(0x0800_0000, &le(&[0, 0]));
        let intro_rec = rec(TYPE_EXT_INTRO, &intro(0, 0, 8, [12, 4, 1], b""));
        let ext_rec = rec(TYPE_EXT_REC_UPDATE, &le(&[1, 1, 16, 100]));
        let t3 = u32::try_from(12 + intro_rec.len() + ext_rec.len()).unwrap();
        log_of(&[
            boundary(t1),
            append,
            flags,
            tail.clone(),
            single,
            unknown,
            boundary(t3),
            intro_rec,
            ext_rec,
            tail,
        ])
    }

    /// Checks `scan(&data[..cut])` against what a complete scan implies: the longest
    /// prefix of whole records that does not end inside a boundary span.
    fn check_cut(data: &[u8], start: u64, full: &Scan<'_>, cut: usize) {
        let part = &data[..cut];
        let got = scan(part, start).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let spans: Vec<(u64, u64)> = full
            .records
            .iter()
            .filter(|r| r.kind() == TYPE_BOUNDARY && r.is_external())
            .map(|r| {
                (
                    r.offset,
                    r.offset + u64::from(le::u32_at(r.payload, 0).unwrap()),
                )
            })
            .collect();
        let ends =
            std::iter::once(start).chain(full.records.iter().map(|r| r.offset + u64::from(r.size)));
        let valid = |e: u64| e <= cut as u64 && !spans.iter().any(|&(s, t)| s < e && e < t);
        let want_end = ends.filter(|&e| valid(e)).max().unwrap();
        let want: Vec<_> = full
            .records
            .iter()
            .filter(|r| r.offset + u64::from(r.size) <= want_end)
            .map(|r| (r.offset, r.size, r.rec_type))
            .collect();
        let have: Vec<_> = got
            .records
            .iter()
            .map(|r| (r.offset, r.size, r.rec_type))
            .collect();
        assert_eq!(have, want, "cut {cut}");
        assert_eq!(got.end, want_end, "cut {cut}");
        let want_stop = if want_end == cut as u64 {
            StopReason::Eof
        } else if spans
            .iter()
            .any(|&(s, t)| s == want_end && t > cut as u64 && s + 12 <= cut as u64)
        {
            StopReason::OpenTransaction
        } else {
            StopReason::Incomplete
        };
        assert_eq!(got.stop, want_stop, "cut {cut}");
        for r in &got.records {
            assert_eq!(&part[r.offset as usize + 8..][..r.payload.len()], r.payload);
        }
    }

    #[test]
    fn torn_tail_at_every_byte_of_a_synthetic_log() {
        let data = synthetic_log();
        let full = scan(&data, 40).unwrap();
        assert_eq!(full.stop, StopReason::Eof);
        assert_eq!(full.end, data.len() as u64);
        assert_eq!(full.records.len(), 10);
        for cut in 40..=data.len() {
            check_cut(&data, 40, &full, cut);
        }
    }

    #[test]
    fn boundary_spanning_eof_withholds_the_transaction() {
        let data = synthetic_log();
        let full = scan(&data, 40).unwrap();
        let b = full.records[6];
        assert_eq!(b.kind(), TYPE_BOUNDARY);
        // Boundary and intro complete, ext-rec missing: nothing of the transaction.
        let cut = (full.records[8].offset + 4) as usize;
        let s = scan(&data[..cut], 40).unwrap();
        assert_eq!(
            (s.stop, s.end, s.records.len()),
            (StopReason::OpenTransaction, b.offset, 6)
        );
        // Resuming at `end` with more data completes it.
        let s = scan(&data, s.end).unwrap();
        assert_eq!((s.stop, s.records.len()), (StopReason::Eof, 4));
        assert_eq!(s.records[0].offset, b.offset);
    }

    #[test]
    fn unreadable_record_inside_a_complete_span_withholds_the_transaction() {
        // Span covers boundary + 16 bytes, but the record there claims 24 bytes.
        let mut data = log_of(&[boundary(28), rec(TYPE_APPEND, &le(&[1, 0, 2, 0]))]);
        data.truncate(data.len() - 8);
        let s = scan(&data, 40).unwrap();
        assert_eq!(
            (s.stop, s.end, s.records.len()),
            (StopReason::OpenTransaction, 40, 0)
        );
        // Same with an unwritten size inside the span.
        let mut data = log_of(&[boundary(28)]);
        data.extend_from_slice(&[0; 16]);
        let s = scan(&data, 40).unwrap();
        assert_eq!(
            (s.stop, s.end, s.records.len()),
            (StopReason::OpenTransaction, 40, 0)
        );
    }

    #[test]
    fn non_external_boundary_span_is_not_checked() {
        // log_file_track_sync() only looks at external records.
        let data = log_of(&[
            rec(TYPE_BOUNDARY, &le(&[1000])),
            rec(TYPE_APPEND, &le(&[1, 0])),
        ]);
        let s = scan(&data, 40).unwrap();
        assert_eq!((s.stop, s.records.len()), (StopReason::Eof, 2));
    }

    #[test]
    fn unwritten_sizes_stop_the_scan() {
        let good = rec(TYPE_APPEND, &le(&[1, 0]));
        for tail in [
            vec![0u8; 16],
            vec![0x80, 0x80, 0x80, 0x80, 2, 0, 0, 0],
            vec![0x80, 0x80, 0x00, 0x84, 2, 0, 0, 0, 1, 0, 0, 0],
            vec![0x80, 0x80, 0x80, 0x04],
            vec![0, 0, 0, 0, 0],
        ] {
            let data = log_of(&[good.clone(), tail.clone()]);
            let s = scan(&data, 40).unwrap();
            assert_eq!(
                (s.stop, s.end, s.records.len()),
                (StopReason::Unwritten, 56, 1),
                "{tail:?}"
            );
        }
        // Fewer than 4 bytes: the size itself is cut.
        let data = log_of(&[good.clone(), vec![0x80, 0x80]]);
        assert_eq!(scan(&data, 40).unwrap().stop, StopReason::Incomplete);
        // A valid size but fewer than 8 bytes.
        let data = log_of(&[good, enc(16).to_vec()]);
        assert_eq!(scan(&data, 40).unwrap().stop, StopReason::Incomplete);
    }

    #[test]
    fn scan_errors() {
        let data = log_of(&[rec(TYPE_APPEND, &le(&[1, 0])), enc(4).to_vec(), le(&[2])]);
        let e = scan(&data, 40).unwrap_err();
        assert_eq!(e.offset, 56);
        assert!(
            e.what.contains("record size 4 is smaller than the 8-byte"),
            "{e}"
        );
        // A bare 8-byte boundary has no size to check.
        let data = log_of(&[
            enc(8).to_vec(),
            (TYPE_BOUNDARY | EXTERNAL).to_le_bytes().to_vec(),
        ]);
        let e = scan(&data, 40).unwrap_err();
        assert_eq!(e.offset, 40);
        assert!(e.what.contains("boundary record without its size"), "{e}");
        let e = scan(&data, 49).unwrap_err();
        assert_eq!(e.offset, 49);
        assert!(e.what.contains("beyond the end"), "{e}");
        assert!(scan(&data, u64::MAX).is_err());
        let s = scan(&data, 48).unwrap();
        assert_eq!((s.stop, s.end, s.records.len()), (StopReason::Eof, 48, 0));
    }

    #[test]
    fn unknown_types_are_stepped_over() {
        let data = log_of(&[
            rec(0x0400_0000 | EXTERNAL, &[9; 12]),
            rec(TYPE_APPEND, &le(&[3, 0])),
        ]);
        let s = scan(&data, 40).unwrap();
        assert_eq!(s.records.len(), 2);
        assert_eq!(decode(&s.records[0]).unwrap(), Record::Unknown(0x0400_0000));
        assert_eq!(
            decode(&s.records[1]).unwrap(),
            Record::Append(vec![AppendRec { uid: 3, flags: 0 }])
        );
    }

    // ---- golden tests on logs written by Dovecot 2.3.19.1 ---------------------------------
    //
    // Produced by a private Dovecot 2.3.19.1 (maildir; `doveadm save`, `flags add/remove/
    // replace`, `expunge`, `index`; a rotation forced with `-o mail_index_log_rotate_min_age=1s
    // -o mail_index_log_rotate_min_size=1`; an mdbox store with `copy`, `expunge`, `purge`;
    // `mailbox metadata set/unset` with a file attribute dict; `doveadm backup` for dsync).
    // Each `X.dump` is `TZ=UTC doveadm dump X` without its first line ("Detected file
    // type"); `render()` re-creates that text from this module's output.

    const FIXTURES: &[(&str, &[u8], &str)] = &[
        (
            "maildir-basic.index.log",
            include_bytes!("../../tests/fixtures/formats/maildir-basic.index.log"),
            include_str!("../../tests/fixtures/formats/maildir-basic.index.log.dump"),
        ),
        (
            "maildir-rotated.index.log.2",
            include_bytes!("../../tests/fixtures/formats/maildir-rotated.index.log.2"),
            include_str!("../../tests/fixtures/formats/maildir-rotated.index.log.2.dump"),
        ),
        (
            "maildir-rotated.index.log",
            include_bytes!("../../tests/fixtures/formats/maildir-rotated.index.log"),
            include_str!("../../tests/fixtures/formats/maildir-rotated.index.log.dump"),
        ),
        (
            "maildir-attr.index.log",
            include_bytes!("../../tests/fixtures/formats/maildir-attr.index.log"),
            include_str!("../../tests/fixtures/formats/maildir-attr.index.log.dump"),
        ),
        (
            "maildir-dsync.index.log",
            include_bytes!("../../tests/fixtures/formats/maildir-dsync.index.log"),
            include_str!("../../tests/fixtures/formats/maildir-dsync.index.log.dump"),
        ),
        (
            "mdbox-map.index.log",
            include_bytes!("../../tests/fixtures/formats/mdbox-map.index.log"),
            include_str!("../../tests/fixtures/formats/mdbox-map.index.log.dump"),
        ),
        (
            "mdbox-inbox.index.log",
            include_bytes!("../../tests/fixtures/formats/mdbox-inbox.index.log"),
            include_str!("../../tests/fixtures/formats/mdbox-inbox.index.log.dump"),
        ),
        (
            "mdbox-list.index.log",
            include_bytes!("../../tests/fixtures/formats/mdbox-list.index.log"),
            include_str!("../../tests/fixtures/formats/mdbox-list.index.log.dump"),
        ),
    ];

    fn fixture(name: &str) -> &'static [u8] {
        FIXTURES.iter().find(|f| f.0 == name).unwrap().1
    }

    /// Complete scan and decode of a fixture.
    fn decoded(data: &[u8]) -> (LogHeader, Vec<(RawRecord<'_>, Record<'_>)>) {
        let hdr = parse_header(data).unwrap();
        let s = scan(data, u64::from(hdr.hdr_size)).unwrap();
        assert_eq!((s.stop, s.end), (StopReason::Eof, data.len() as u64));
        let recs = s
            .records
            .into_iter()
            .map(|r| (r, decode(&r).unwrap()))
            .collect();
        (hdr, recs)
    }

    /// `doveadm-dump-log.c` `header_fields[]`: (name, offset, size) in `mail_index_header`.
    const INDEX_HDR_FIELDS: &[(&str, u32, usize)] = &[
        ("minor_version", 1, 1),
        ("base_header_size", 2, 2),
        ("header_size", 4, 4),
        ("record_size", 8, 4),
        ("compat_flags", 12, 1),
        ("indexid", 16, 4),
        ("flags", 20, 4),
        ("uid_validity", 24, 4),
        ("next_uid", 28, 4),
        ("messages_count", 32, 4),
        ("unused_old_recent_messages_count", 36, 4),
        ("seen_messages_count", 40, 4),
        ("deleted_messages_count", 44, 4),
        ("first_recent_uid", 48, 4),
        ("first_unseen_uid_lowwater", 52, 4),
        ("first_deleted_uid_lowwater", 56, 4),
        ("log_file_seq", 60, 4),
        ("log_file_tail_offset", 64, 4),
        ("log_file_head_offset", 68, 4),
        ("day_stamp", 84, 4),
    ];

    /// doveadm's `print_data()`.
    fn print_data(b: &[u8]) -> String {
        match le::u32_at(b, 0) {
            Some(n) if b.len() == 4 => format!("{} (dec={n})", hex(b)),
            _ => hex(b),
        }
    }

    /// C `%.*s`: stops at NUL.
    fn c_str(b: &[u8]) -> String {
        String::from_utf8_lossy(name_until_nul(b)).into_owned()
    }

    /// UTC "YYYY-MM-DD HH:MM:SS" (doveadm's `unixdate2str()` under TZ=UTC).
    fn utc(ts: u32) -> String {
        let days = i64::from(ts / 86_400);
        let secs = ts % 86_400;
        // Civil-from-days (proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }

    fn type_name(rec_type: u32) -> String {
        let mut s = match rec_type & TYPE_MASK {
            TYPE_EXPUNGE => "expunge".to_string(),
            TYPE_EXPUNGE_GUID => "expunge-guid".into(),
            TYPE_APPEND => "append".into(),
            TYPE_FLAG_UPDATE => "flag-update".into(),
            TYPE_HEADER_UPDATE => "header-update".into(),
            TYPE_EXT_INTRO => "ext-intro".into(),
            TYPE_EXT_RESET => "ext-reset".into(),
            TYPE_EXT_HDR_UPDATE => "ext-hdr".into(),
            TYPE_EXT_HDR_UPDATE32 => "ext-hdr32".into(),
            TYPE_EXT_REC_UPDATE => "ext-rec".into(),
            TYPE_KEYWORD_UPDATE => "keyword-update".into(),
            TYPE_KEYWORD_RESET => "keyword-reset".into(),
            TYPE_EXT_ATOMIC_INC => "ext-atomic-inc".into(),
            TYPE_MODSEQ_UPDATE => "modseq-update".into(),
            TYPE_INDEX_DELETED => "index-deleted".into(),
            TYPE_INDEX_UNDELETED => "index-undeleted".into(),
            TYPE_BOUNDARY => "boundary".into(),
            TYPE_ATTRIBUTE_UPDATE => "attribute-update".into(),
            _ => format!("unknown: {rec_type:x}"),
        };
        if rec_type & EXTERNAL != 0 {
            s.push_str(" (ext)");
        }
        if rec_type & SYNC != 0 {
            s.push_str(" (sync)");
        }
        s
    }

    /// `mail_transaction_update_modseq()`, on decoded records.
    fn update_modseq(d: &Record<'_>, cur: &mut u64, minor: u8) {
        if *cur == 0 {
            if let Record::ExtIntro(intros) = d
                && intros.first().is_some_and(|i| i.name == b"modseq")
            {
                *cur += 1;
            }
            return;
        }
        match d {
            Record::Expunge { external: true, .. }
            | Record::ExpungeGuid { external: true, .. }
            | Record::Append(_)
            | Record::KeywordUpdate { .. }
            | Record::KeywordReset(_)
            | Record::AttributeUpdate(_) => *cur += 1,
            Record::FlagUpdate(us) => {
                // MAIL_TRANSACTION_FLAG_UPDATE_IS_INTERNAL(): no MAIL_INDEX_FLAGS_MASK bits.
                let internal = |u: &FlagUpdate| (u.add | u.remove) & 0x1f == 0 && !u.modseq_inc;
                if minor < 3 || !us.iter().all(internal) {
                    *cur += 1;
                }
            }
            Record::ModseqUpdate(items) => {
                for &(_, m) in items {
                    *cur = (*cur).max(m);
                }
            }
            _ => {}
        }
    }

    /// Re-creates `doveadm dump` output (`doveadm-dump-log.c`) from this module's results.
    fn render(data: &[u8]) -> String {
        use std::fmt::Write;
        let (h, recs) = decoded(data);
        let mut o = String::new();
        let _ = writeln!(o, "version = {}.{}", h.major_version, h.minor_version);
        let _ = writeln!(o, "hdr size = {}", h.hdr_size);
        let _ = writeln!(o, "index id = {}", h.indexid);
        let _ = writeln!(o, "file seq = {}", h.file_seq);
        let _ = writeln!(o, "prev file = {}/{}", h.prev_file_seq, h.prev_file_offset);
        let _ = writeln!(o, "create stamp = {}", h.create_stamp);
        let _ = writeln!(o, "initial modseq = {}", h.initial_modseq);
        let _ = writeln!(o, "compat flags = {:x}", h.compat_flags);
        let mut modseq = h.initial_modseq;
        let mut prev_record_size = 0u16;
        for (r, d) in &recs {
            let before = modseq;
            update_modseq(d, &mut modseq, h.minor_version);
            let _ = write!(
                o,
                "record: offset={}, type={}, size={}",
                r.offset,
                type_name(r.rec_type),
                r.size
            );
            if modseq > before {
                let _ = write!(o, ", modseq={modseq}");
            }
            o.push('\n');
            match d {
                Record::Expunge { ranges, .. } => {
                    o.push_str(" - uids=");
                    for (a, b) in ranges {
                        let _ = write!(o, "{a}-{b},");
                    }
                    o.push('\n');
                }
                Record::ExpungeGuid { items, .. } => {
                    for (uid, guid) in items {
                        let _ = writeln!(o, " - uid={uid} (guid {})", hex(guid));
                    }
                }
                Record::Append(items) => {
                    o.push_str(" - uids=");
                    for a in items {
                        let _ = write!(o, "{}", a.uid);
                        if a.flags != 0 {
                            let _ = write!(o, " (flags={:x})", a.flags);
                        }
                        o.push(',');
                    }
                    o.push('\n');
                }
                Record::FlagUpdate(us) => {
                    for u in us {
                        let _ = writeln!(
                            o,
                            " - uids={}-{} (flags +{:x}-{:x}, modseq_inc_flag={})",
                            u.uid1,
                            u.uid2,
                            u.add,
                            u.remove,
                            u8::from(u.modseq_inc)
                        );
                    }
                }
                Record::HeaderUpdate(items) => {
                    // doveadm prints the first item only, split into known fields.
                    let first = items.first().unwrap();
                    let (mut off, mut rest) = (first.offset, first.data);
                    while !rest.is_empty() {
                        let field = INDEX_HDR_FIELDS
                            .iter()
                            .find(|f| f.1 == off && f.2 <= rest.len());
                        let Some(&(name, _, size)) = field else {
                            let _ = writeln!(
                                o,
                                " - offset = {off}, size = {}: {}",
                                rest.len(),
                                print_data(rest)
                            );
                            break;
                        };
                        let v = &rest[..size];
                        let n = match size {
                            1 => u64::from(v[0]),
                            2 => u64::from(le::u16_at(v, 0).unwrap()),
                            _ => u64::from(le::u32_at(v, 0).unwrap()),
                        };
                        let _ = writeln!(o, " - {name} = {n}");
                        off += size as u32;
                        rest = &rest[size..];
                    }
                }
                Record::ExtIntro(intros) => {
                    let i = intros.first().unwrap();
                    prev_record_size = i.record_size;
                    let _ = writeln!(o, " - ext_id = {}", i.ext_id);
                    let _ = writeln!(o, " - reset_id = {}", i.reset_id);
                    let _ = writeln!(o, " - hdr_size = {}", i.hdr_size);
                    let _ = writeln!(o, " - record_size = {}", i.record_size);
                    let _ = writeln!(o, " - record_align = {}", i.record_align);
                    let _ = writeln!(o, " - flags = {}", i.flags);
                    let _ = writeln!(o, " - name_size = {}", i.name.len());
                    if !i.name.is_empty() {
                        let _ = writeln!(o, " - name = '{}'", c_str(i.name));
                    }
                }
                Record::ExtReset {
                    new_reset_id,
                    preserve_data,
                } => {
                    let _ = writeln!(o, " - new_reset_id = {new_reset_id}");
                    let _ = writeln!(o, " - preserve_data = {}", u8::from(*preserve_data));
                }
                Record::ExtHdrUpdate(items) | Record::ExtHdrUpdate32(items) => {
                    let u = items.first().unwrap();
                    let _ = writeln!(
                        o,
                        " - offset = {}, size = {}: {}",
                        u.offset,
                        u.data.len(),
                        print_data(u.data)
                    );
                }
                Record::ExtRecUpdate(p) => {
                    let items = ext_rec_updates(p, prev_record_size, r.offset + 8).unwrap();
                    for (uid, d) in items {
                        let _ = writeln!(o, " - uid={uid}: {}", print_data(d));
                    }
                }
                Record::ExtAtomicInc(items) => {
                    for (uid, diff) in items {
                        let sign = if *diff > 0 { "+" } else { "" };
                        let _ = writeln!(o, " - uid={uid}: {sign}{diff}");
                    }
                }
                Record::KeywordUpdate { add, name, ranges } => {
                    let _ = write!(
                        o,
                        " - modify={}, name={}, uids=",
                        u8::from(!add),
                        c_str(name)
                    );
                    for (a, b) in ranges {
                        let _ = write!(o, "{a}-{b},");
                    }
                    o.push('\n');
                }
                Record::KeywordReset(ranges) => {
                    o.push_str(" - uids=");
                    for (a, b) in ranges {
                        let _ = write!(o, "{a}-{b}, ");
                    }
                    o.push('\n');
                }
                Record::ModseqUpdate(items) => {
                    for (uid, m) in items {
                        let _ = writeln!(o, " - uid={uid} modseq={m}");
                    }
                }
                Record::Boundary { size } => {
                    let _ = writeln!(o, " - size={size}");
                }
                Record::AttributeUpdate(p) => render_attributes(&mut o, p),
                Record::IndexDeleted | Record::IndexUndeleted | Record::Unknown(_) => {}
            }
        }
        o
    }

    /// The ATTRIBUTE_UPDATE part of `log_record_print()`.
    fn render_attributes(o: &mut String, p: &[u8]) {
        use std::fmt::Write;
        let keys: Vec<&[u8]> = p.split(|&b| b == 0).take_while(|k| !k.is_empty()).collect();
        let key_bytes: usize = keys.iter().map(|k| k.len() + 1).sum();
        let extra_at = align4(key_bytes);
        let extra_count: usize = keys.iter().map(|k| 1 + usize::from(k[0] == b'+')).sum();
        if p.len() - extra_at != extra_count * 4 {
            o.push_str(" - broken entry\n");
            return;
        }
        let mut at = extra_at;
        let mut next = || {
            let v = le::u32_at(p, at).unwrap();
            at += 4;
            v
        };
        for k in keys {
            let op = if k[0] == b'+' { "add" } else { "remove" };
            let scope = if k[1] == b'p' { "private" } else { "shared" };
            let _ = write!(
                o,
                " - {op}: {scope}/{} : timestamp={}",
                c_str(&k[2..]),
                utc(next())
            );
            if k[0] == b'+' {
                let _ = write!(o, " value_len={}", next());
            }
            o.push('\n');
        }
    }

    #[test]
    fn golden_matches_doveadm_dump() {
        for (name, data, dump) in FIXTURES {
            let ours = render(data);
            for (i, (a, b)) in ours.lines().zip(dump.lines()).enumerate() {
                assert_eq!(a, b, "{name}: line {}", i + 1);
            }
            assert_eq!(ours.lines().count(), dump.lines().count(), "{name}");
        }
    }

    #[test]
    fn golden_fixtures_cover_the_record_types() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, data, _) in FIXTURES {
            for (r, d) in decoded(data).1 {
                assert!(!matches!(d, Record::Unknown(_)), "{name} at {}", r.offset);
                seen.insert(r.kind());
            }
        }
        for t in [
            TYPE_APPEND,
            TYPE_EXPUNGE_GUID,
            TYPE_FLAG_UPDATE,
            TYPE_HEADER_UPDATE,
            TYPE_EXT_INTRO,
            TYPE_EXT_RESET,
            TYPE_EXT_HDR_UPDATE,
            TYPE_EXT_REC_UPDATE,
            TYPE_EXT_ATOMIC_INC,
            TYPE_KEYWORD_UPDATE,
            TYPE_MODSEQ_UPDATE,
            TYPE_BOUNDARY,
            TYPE_ATTRIBUTE_UPDATE,
        ] {
            assert!(seen.contains(&t), "no fixture has type {t:#x}");
        }
    }

    #[test]
    fn golden_rotation_links_the_two_files() {
        let (old, old_recs) = decoded(fixture("maildir-rotated.index.log.2"));
        let (new, _) = decoded(fixture("maildir-rotated.index.log"));
        assert_eq!(new.file_seq, old.file_seq + 1);
        assert_eq!(new.prev_file_seq, old.file_seq);
        // The previous file's valid data ends exactly at prev_file_offset.
        let last = old_recs.last().unwrap().0;
        assert_eq!(
            u64::from(new.prev_file_offset),
            last.offset + u64::from(last.size)
        );
        assert_eq!(new.indexid, old.indexid);
        assert!(new.initial_modseq >= old.initial_modseq);
        // The first log of a mailbox resets it (prev 0/0) and has file_seq 2.
        assert_eq!(
            (old.file_seq, old.prev_file_seq, old.prev_file_offset),
            (2, 0, 0)
        );
    }

    #[test]
    fn golden_mdbox_map_refcounts() {
        let recs = decoded(fixture("mdbox-map.index.log")).1;
        let names: Vec<&[u8]> = recs
            .iter()
            .filter_map(|(_, d)| match d {
                Record::ExtIntro(i) if !i[0].name.is_empty() => Some(i[0].name),
                _ => None,
            })
            .collect();
        assert_eq!(names, [&b"map"[..], b"map", b"ref"]);
        let incs: Vec<Vec<(u32, i32)>> = recs
            .iter()
            .filter_map(|(_, d)| match d {
                Record::ExtAtomicInc(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(incs, [vec![(1, 1), (2, 1)], vec![(1, -1)], vec![(1, -1)]]);
        // Purge re-points map records: file_id 2, offsets 16 and 152.
        let (r, _) = recs
            .iter()
            .rev()
            .find(|(_, d)| matches!(d, Record::ExtRecUpdate(_)))
            .unwrap();
        let items = ext_rec_updates(r.payload, 12, r.offset + 8).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].0, 2);
        assert_eq!(le::u32_at(items[0].1, 0), Some(2));
    }

    #[test]
    fn golden_expunge_request_precedes_external_expunge() {
        let recs = decoded(fixture("maildir-basic.index.log")).1;
        let ex: Vec<(bool, u32)> = recs
            .iter()
            .filter_map(|(_, d)| match d {
                Record::ExpungeGuid { external, items } => Some((*external, items[0].0)),
                _ => None,
            })
            .collect();
        assert_eq!(ex, [(false, 1), (true, 1)]);
        let kws: Vec<(bool, &[u8])> = recs
            .iter()
            .filter_map(|(_, d)| match d {
                Record::KeywordUpdate { add, name, .. } => Some((*add, *name)),
                _ => None,
            })
            .collect();
        assert_eq!(
            kws,
            [
                (true, &b"$Label1"[..]),
                (true, b"Work"),
                (false, b"$Label1"),
                (false, b"$Label1")
            ]
        );
    }

    #[test]
    fn golden_dsync_records_carry_the_sync_flag() {
        let recs = decoded(fixture("maildir-dsync.index.log")).1;
        let sync: Vec<_> = recs
            .iter()
            .filter(|(r, _)| r.rec_type & SYNC != 0)
            .collect();
        assert!(
            sync.iter()
                .any(|(_, d)| matches!(d, Record::ModseqUpdate(_)))
        );
        assert!(sync.iter().all(|(r, _)| r.is_external()));
    }

    #[test]
    fn golden_torn_tail_at_every_byte() {
        for (name, data, _) in FIXTURES {
            let hdr = u64::from(parse_header(data).unwrap().hdr_size);
            let full = scan(data, hdr).unwrap();
            for cut in hdr as usize..=data.len() {
                check_cut(data, hdr, &full, cut);
            }
            // Resuming from every record start gives the rest of the records.
            for (i, r) in full.records.iter().enumerate() {
                let s = scan(data, r.offset).unwrap();
                assert_eq!(s.records, full.records[i..], "{name} from {}", r.offset);
            }
        }
    }

    // ---- no panics on any input -----------------------------------------------------------

    /// Runs every entry point over `data`; only panics matter.
    fn exercise(data: &[u8]) -> usize {
        let _ = parse_header(data);
        let mut n = 0;
        let start = data.len().min(40) as u64;
        if let Ok(s) = scan(data, start) {
            let mut record_size = 0;
            for r in &s.records {
                match decode(r) {
                    Ok(Record::ExtIntro(i)) => {
                        record_size = i.first().map_or(0, |x| x.record_size);
                    }
                    Ok(Record::ExtRecUpdate(p)) => {
                        let _ = ext_rec_updates(p, record_size, r.offset + 8);
                        let _ = ext_rec_updates(p, u16::MAX, r.offset + 8);
                    }
                    _ => {}
                }
                n += 1;
            }
        }
        n
    }

    #[test]
    fn no_panic_on_truncations_and_bit_flips() {
        let mut inputs: Vec<Vec<u8>> = FIXTURES.iter().map(|f| f.1.to_vec()).collect();
        inputs.push(synthetic_log());
        let mut decoded_records = 0;
        for data in &inputs {
            assert!(data.len() <= 8192);
            for cut in 0..=data.len() {
                decoded_records += exercise(&data[..cut]);
            }
            let mut flipped = data.clone();
            for bit in 0..data.len() * 8 {
                flipped[bit / 8] ^= 1 << (bit % 8);
                decoded_records += exercise(&flipped);
                flipped[bit / 8] ^= 1 << (bit % 8);
            }
        }
        assert!(decoded_records > 0);
    }

    #[test]
    fn no_panic_on_hostile_fields() {
        // Every record type with payloads made of extreme values.
        let kinds = [
            TYPE_EXPUNGE,
            TYPE_APPEND,
            TYPE_FLAG_UPDATE,
            TYPE_HEADER_UPDATE,
            TYPE_EXT_INTRO,
            TYPE_EXT_RESET,
            TYPE_EXT_HDR_UPDATE,
            TYPE_EXT_REC_UPDATE,
            TYPE_KEYWORD_UPDATE,
            TYPE_KEYWORD_RESET,
            TYPE_EXT_ATOMIC_INC,
            TYPE_EXPUNGE_GUID,
            TYPE_MODSEQ_UPDATE,
            TYPE_EXT_HDR_UPDATE32,
            TYPE_INDEX_DELETED,
            TYPE_INDEX_UNDELETED,
            TYPE_BOUNDARY,
            TYPE_ATTRIBUTE_UPDATE,
            0x0fff_ffff,
        ];
        for kind in kinds {
            for fill in [0x00u8, 0x01, 0x2b, 0x7f, 0x80, 0xff] {
                for len in 0..48 {
                    let p = vec![fill; len];
                    let _ = decode(&raw(kind | EXTERNAL, &p));
                    let r = RawRecord {
                        offset: u64::MAX,
                        size: u32::MAX,
                        rec_type: kind,
                        payload: &p,
                    };
                    let _ = decode(&r);
                    let _ = ext_rec_updates(&p, u16::from(fill), u64::MAX);
                }
            }
        }
    }
}
