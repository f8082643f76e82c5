//! The main index format: `dovecot.index`, and the same format under the names
//! `dovecot.map.index` (mdbox map), `dovecot.list.index` (mailbox list) and
//! `dovecot.index.pvt` (private flags).
//!
//! Owns the byte layout of one snapshot file: the base header, the extension headers, the
//! fixed-size message records, the `keywords` extension header, and the algorithm Dovecot
//! uses to lay extension data out inside a record. It does not read the transaction log,
//! compare `indexid` with the log or cache, or know what any extension other than
//! `keywords` means; callers do that with the values returned here.
//!
//! Every rule follows Dovecot 2.3.19.1, `src/lib-index/`: `mail-index.h` and
//! `mail-index-private.h` (structures), `mail-index-map-read.c` (reading),
//! `mail-index-map-hdr.c` (`mail_index_check_header_compat()`,
//! `mail_index_map_check_header()`, `mail_index_map_parse_extensions()`,
//! `mail_index_map_parse_keywords()`), `mail-index-map.c` (extension header walk and
//! checks), `mail-index.c` (`mail_index_ext_name_is_valid()`) and `mail-index-sync-ext.c`
//! (`sync_ext_reorder()`). Where Dovecot differs from the reference doc (section 4) or this
//! module is deliberately stricter than Dovecot, the comment says "Dovecot:".
//!
//! All integers are little-endian: Dovecot writes host order and only accepts a file whose
//! `compat_flags` says little-endian, which [`parse_index`] insists on.

use std::collections::HashSet;

use super::{FormatError, le};

/// Size of the 2.3 base header (`struct mail_index_header`, `mail-index.h`); also
/// `MAIL_INDEX_HEADER_MIN_SIZE`, the smallest base header Dovecot accepts.
pub const BASE_HEADER_SIZE: usize = 120;

/// Name of the extension that holds keyword names and bitmasks (`MAIL_INDEX_EXT_KEYWORDS`,
/// `mail-index-private.h`).
pub const KEYWORDS_EXT: &str = "keywords";

/// `MAIL_INDEX_MAJOR_VERSION` (`mail-index.h`).
const MAJOR_VERSION: u8 = 7;
/// `MAIL_INDEX_MINOR_VERSION` (`mail-index.h`): older files are upgraded in memory.
const MINOR_VERSION: u8 = 3;
/// `MAIL_INDEX_COMPAT_LITTLE_ENDIAN` (`enum mail_index_header_compat_flags`).
const COMPAT_LITTLE_ENDIAN: u8 = 0x01;
/// `MAIL_INDEX_HDR_FLAG_CORRUPTED` (`enum mail_index_header_flag`).
const HDR_FLAG_CORRUPTED: u32 = 0x0001;
/// The old `MAIL_RECENT` record flag (`MAIL_INDEX_MAIL_FLAG_UNUSED`), cleared from files
/// older than minor version 2.
const RECORD_FLAG_OLD_RECENT: u8 = 0x20;
/// `sizeof(struct mail_index_record)` (`mail-index.h`): uid u32, flags u8, padded to 8.
const RECORD_BASE_SIZE: u32 = 8;
/// `MAIL_INDEX_RECORD_MIN_SIZE` (`mail-index.h`): where extension data may start.
pub const RECORD_MIN_SIZE: u32 = 5;
/// `sizeof(struct mail_index_ext_header)` (`mail-index-private.h`).
const EXT_HEADER_SIZE: usize = 16;
/// `MAIL_INDEX_EXT_NAME_MAX_LENGTH` (`mail-index-private.h`): names are shorter than this.
const EXT_NAME_MAX_LENGTH: usize = 64;
/// `MAIL_INDEX_EXT_HEADER_MAX_SIZE` (`mail-index-private.h`).
pub const EXT_HEADER_MAX_SIZE: u32 = 1024 * 1024 * 16 - 1;
/// `mail_index_map_ext_hdr_check_record()`: larger alignments are refused.
const EXT_RECORD_MAX_ALIGN: u16 = 8;
/// `mail_index_map_ext_hdr_check_record()`: record sizes must stay below this.
pub const EXT_RECORD_MAX_SIZE: u16 = 32768;
/// `sizeof(struct mail_index_keyword_header)` (`mail-index-private.h`).
const KEYWORD_HEADER_SIZE: usize = 4;
/// `sizeof(struct mail_index_keyword_header_rec)` (`mail-index-private.h`).
const KEYWORD_REC_SIZE: usize = 8;

// Byte offsets of the fields of `struct mail_index_header` (`mail-index.h`).
const OFF_MAJOR_VERSION: usize = 0;
const OFF_MINOR_VERSION: usize = 1;
const OFF_BASE_HEADER_SIZE: usize = 2;
const OFF_HEADER_SIZE: usize = 4;
const OFF_RECORD_SIZE: usize = 8;
const OFF_COMPAT_FLAGS: usize = 12;
const OFF_INDEXID: usize = 16;
const OFF_FLAGS: usize = 20;
const OFF_UID_VALIDITY: usize = 24;
const OFF_NEXT_UID: usize = 28;
const OFF_MESSAGES_COUNT: usize = 32;
// 36: unused_old_recent_messages_count (always treated as 0 by Dovecot).
const OFF_SEEN_MESSAGES_COUNT: usize = 40;
const OFF_DELETED_MESSAGES_COUNT: usize = 44;
const OFF_FIRST_RECENT_UID: usize = 48;
const OFF_FIRST_UNSEEN_UID_LOWWATER: usize = 52;
const OFF_FIRST_DELETED_UID_LOWWATER: usize = 56;
const OFF_LOG_FILE_SEQ: usize = 60;
const OFF_LOG_FILE_TAIL_OFFSET: usize = 64;
const OFF_LOG_FILE_HEAD_OFFSET: usize = 68;
// 72: unused_old_sync_size_part1.
const OFF_LOG2_ROTATE_TIME: usize = 76;
const OFF_LAST_TEMP_FILE_SCAN: usize = 80;
const OFF_DAY_STAMP: usize = 84;
const OFF_DAY_FIRST_UID: usize = 88;

// Byte offsets inside `struct mail_index_ext_header` (`mail-index-private.h`).
const EXT_OFF_HDR_SIZE: usize = 0;
const EXT_OFF_RESET_ID: usize = 4;
const EXT_OFF_RECORD_OFFSET: usize = 8;
const EXT_OFF_RECORD_SIZE: usize = 10;
const EXT_OFF_RECORD_ALIGN: usize = 12;
const EXT_OFF_NAME_SIZE: usize = 14;

/// The base header, `struct mail_index_header` (`mail-index.h`), as Dovecot sees it after
/// reading: the two `unused_old_*` fields and the `unused[3]` bytes are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexHeader {
    /// Offset 0. Must be 7.
    pub major_version: u8,
    /// Offset 1. 3 for 2.3; older files are upgraded by [`parse_index`], newer accepted.
    pub minor_version: u8,
    /// Offset 2. Size of this base header in the file (at least 120).
    pub base_header_size: u16,
    /// Offset 4. Base header plus all extension headers; records start here.
    pub header_size: u32,
    /// Offset 8. Bytes per message record (at least 8).
    pub record_size: u32,
    /// Offset 12. 1 = little-endian (`enum mail_index_header_compat_flags`).
    pub compat_flags: u8,
    /// Offset 16. Creation time; must match the log's and the cache's `indexid`.
    pub indexid: u32,
    /// Offset 20. `enum mail_index_header_flag`: 0x2 HAVE_DIRTY, 0x4 FSCKD.
    pub flags: u32,
    /// Offset 24. IMAP UIDVALIDITY; 0 only before the first sync.
    pub uid_validity: u32,
    /// Offset 28. UID the next message will get; never decreases.
    pub next_uid: u32,
    /// Offset 32. Number of records the header claims.
    pub messages_count: u32,
    /// Offset 40. Messages with `\Seen`.
    pub seen_messages_count: u32,
    /// Offset 44. Messages with `\Deleted`.
    pub deleted_messages_count: u32,
    /// Offset 48. This UID and all later ones are `\Recent`.
    pub first_recent_uid: u32,
    /// Offset 52. Hint: no unseen message has a lower UID.
    pub first_unseen_uid_lowwater: u32,
    /// Offset 56. Hint: no deleted message has a lower UID.
    pub first_deleted_uid_lowwater: u32,
    /// Offset 60. Log file sequence this snapshot is synced to.
    pub log_file_seq: u32,
    /// Offset 64. Log offset up to which changes were synced to the mailbox backend.
    pub log_file_tail_offset: u32,
    /// Offset 68. Log offset to continue reading from.
    pub log_file_head_offset: u32,
    /// Offset 76. When `.log.2` was created; `0xFFFFFFFF` = there is none, 0 = unknown.
    pub log2_rotate_time: u32,
    /// Offset 80. Last scan for stale temporary files; 0 = unknown.
    pub last_temp_file_scan: u32,
    /// Offset 84. Start of the day on which messages were last appended.
    pub day_stamp: u32,
    /// Offset 88. First UID appended on each of the last 8 days that had appends.
    pub day_first_uid: [u32; 8],
}

impl IndexHeader {
    /// Decodes the 120-byte base header from `raw` (zero-filled if shorter, as Dovecot does
    /// when base_header_size < 120). Used also for headers rebuilt from the log.
    ///
    /// No validation happens here; [`parse_index`] validates.
    pub fn from_base_bytes(raw: &[u8; BASE_HEADER_SIZE]) -> IndexHeader {
        let u32_at = |at: usize| le::u32_at(raw, at).unwrap_or(0);
        let mut day_first_uid = [0u32; 8];
        for (i, slot) in day_first_uid.iter_mut().enumerate() {
            *slot = u32_at(OFF_DAY_FIRST_UID.saturating_add(i.saturating_mul(4)));
        }
        IndexHeader {
            major_version: raw.get(OFF_MAJOR_VERSION).copied().unwrap_or(0),
            minor_version: raw.get(OFF_MINOR_VERSION).copied().unwrap_or(0),
            base_header_size: le::u16_at(raw, OFF_BASE_HEADER_SIZE).unwrap_or(0),
            header_size: u32_at(OFF_HEADER_SIZE),
            record_size: u32_at(OFF_RECORD_SIZE),
            compat_flags: raw.get(OFF_COMPAT_FLAGS).copied().unwrap_or(0),
            indexid: u32_at(OFF_INDEXID),
            flags: u32_at(OFF_FLAGS),
            uid_validity: u32_at(OFF_UID_VALIDITY),
            next_uid: u32_at(OFF_NEXT_UID),
            messages_count: u32_at(OFF_MESSAGES_COUNT),
            seen_messages_count: u32_at(OFF_SEEN_MESSAGES_COUNT),
            deleted_messages_count: u32_at(OFF_DELETED_MESSAGES_COUNT),
            first_recent_uid: u32_at(OFF_FIRST_RECENT_UID),
            first_unseen_uid_lowwater: u32_at(OFF_FIRST_UNSEEN_UID_LOWWATER),
            first_deleted_uid_lowwater: u32_at(OFF_FIRST_DELETED_UID_LOWWATER),
            log_file_seq: u32_at(OFF_LOG_FILE_SEQ),
            log_file_tail_offset: u32_at(OFF_LOG_FILE_TAIL_OFFSET),
            log_file_head_offset: u32_at(OFF_LOG_FILE_HEAD_OFFSET),
            log2_rotate_time: u32_at(OFF_LOG2_ROTATE_TIME),
            last_temp_file_scan: u32_at(OFF_LAST_TEMP_FILE_SCAN),
            day_stamp: u32_at(OFF_DAY_STAMP),
            day_first_uid,
        }
    }

    /// The header as 120 bytes (inverse of [`IndexHeader::from_base_bytes`]), so a log
    /// HEADER_UPDATE (offset, size, data) can be applied to bytes and decoded again.
    ///
    /// The fields this struct does not keep (`unused[3]`, `unused_old_recent_messages_count`
    /// at 36, `unused_old_sync_size_part1` at 72) are written as 0.
    pub fn to_base_bytes(&self) -> [u8; BASE_HEADER_SIZE] {
        let mut raw = [0u8; BASE_HEADER_SIZE];
        put(&mut raw, OFF_MAJOR_VERSION, &[self.major_version]);
        put(&mut raw, OFF_MINOR_VERSION, &[self.minor_version]);
        put(
            &mut raw,
            OFF_BASE_HEADER_SIZE,
            &self.base_header_size.to_le_bytes(),
        );
        put(&mut raw, OFF_COMPAT_FLAGS, &[self.compat_flags]);
        let words = [
            (OFF_HEADER_SIZE, self.header_size),
            (OFF_RECORD_SIZE, self.record_size),
            (OFF_INDEXID, self.indexid),
            (OFF_FLAGS, self.flags),
            (OFF_UID_VALIDITY, self.uid_validity),
            (OFF_NEXT_UID, self.next_uid),
            (OFF_MESSAGES_COUNT, self.messages_count),
            (OFF_SEEN_MESSAGES_COUNT, self.seen_messages_count),
            (OFF_DELETED_MESSAGES_COUNT, self.deleted_messages_count),
            (OFF_FIRST_RECENT_UID, self.first_recent_uid),
            (
                OFF_FIRST_UNSEEN_UID_LOWWATER,
                self.first_unseen_uid_lowwater,
            ),
            (
                OFF_FIRST_DELETED_UID_LOWWATER,
                self.first_deleted_uid_lowwater,
            ),
            (OFF_LOG_FILE_SEQ, self.log_file_seq),
            (OFF_LOG_FILE_TAIL_OFFSET, self.log_file_tail_offset),
            (OFF_LOG_FILE_HEAD_OFFSET, self.log_file_head_offset),
            (OFF_LOG2_ROTATE_TIME, self.log2_rotate_time),
            (OFF_LAST_TEMP_FILE_SCAN, self.last_temp_file_scan),
            (OFF_DAY_STAMP, self.day_stamp),
        ];
        for (at, value) in words {
            put(&mut raw, at, &value.to_le_bytes());
        }
        for (i, value) in self.day_first_uid.iter().enumerate() {
            let at = OFF_DAY_FIRST_UID.saturating_add(i.saturating_mul(4));
            put(&mut raw, at, &value.to_le_bytes());
        }
        raw
    }
}

/// One extension (`struct mail_index_ext_header` + name + data, `mail-index-private.h`), in
/// file order: the position in [`IndexFile::extensions`] is the ext_id that log records use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtHeader {
    /// Unique name: ASCII letters, digits, `-`, `_` and space, 1 to 63 characters.
    pub name: String,
    /// Changes when the extension's data is reset; for `cache` it must equal the cache
    /// file's `file_seq`.
    pub reset_id: u32,
    /// Where this extension's bytes start in every record (0 if `record_size` is 0).
    pub record_offset: u16,
    /// Bytes per record; 0 = header-only extension.
    pub record_size: u16,
    /// Alignment of the record data: 1, 2, 4 or 8 in practice (0 is allowed only for
    /// header-only extensions).
    pub record_align: u16,
    /// The extension header data (`hdr_size` == `data.len()`), without the padding.
    pub data: Vec<u8>,
}

impl ExtHeader {
    /// This extension's bytes inside one record (as found in [`IndexFile::records`]), or
    /// `None` for a header-only extension or a record too short to hold them.
    pub fn record_data<'a>(&self, record: &'a [u8]) -> Option<&'a [u8]> {
        if self.record_size == 0 {
            return None;
        }
        let start = usize::from(self.record_offset);
        record.get(start..start.checked_add(usize::from(self.record_size))?)
    }
}

/// A parsed `dovecot.index` (or map / list / pvt index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// The base header, after Dovecot's in-memory upgrade of minor versions 0..2 (see
    /// [`parse_index`]).
    pub header: IndexHeader,
    /// The raw base header bytes as in the file (`base_header_size` bytes, at least 120):
    /// unknown trailing bytes of a larger base header are kept, and nothing is upgraded.
    pub base_bytes: Vec<u8>,
    /// The extensions in file order; the position is the ext_id.
    pub extensions: Vec<ExtHeader>,
    /// Complete records only: `min(messages_count, (len - header_size) / record_size)`, so
    /// `records.len()` is less than `header.messages_count` when the file is short.
    /// Each is exactly `record_size` bytes: uid at 0 ([`record_uid`]), flags at 4
    /// ([`record_flags`]), extension bytes at their `record_offset`
    /// ([`ExtHeader::record_data`]).
    pub records: Vec<Vec<u8>>,
}

impl IndexFile {
    /// The ext_id and header of the extension called `name` (names are compared exactly,
    /// as Dovecot's `mail_index_map_lookup_ext()` does).
    pub fn find_ext(&self, name: &str) -> Option<(usize, &ExtHeader)> {
        self.extensions
            .iter()
            .enumerate()
            .find(|(_, e)| e.name == name)
    }
}

/// The UID of a record (`struct mail_index_record.uid`, offset 0), or `None` if `record`
/// is shorter than 4 bytes.
pub fn record_uid(record: &[u8]) -> Option<u32> {
    le::u32_at(record, 0)
}

/// The flags byte of a record (`struct mail_index_record.flags`, offset 4): `enum
/// mail_flags` plus 0x40 (backend, e.g. dbox ALT) and 0x80 (dirty). `None` if `record` is
/// shorter than 5 bytes.
pub fn record_flags(record: &[u8]) -> Option<u8> {
    record.get(4).copied()
}

/// Parses and validates like `mail_index_check_header_compat()` and
/// `mail_index_map_check_header()` (`mail-index-map-hdr.c`), then walks the extensions like
/// `mail_index_map_parse_extensions()` and checks the `keywords` header like
/// `mail_index_map_parse_keywords()`.
///
/// Refused: major version != 7; the CORRUPTED header flag; `compat_flags` != 1
/// (little-endian); `base_header_size` < 120 or > `header_size`; `header_size` beyond the
/// file; `record_size` < 8; `next_uid` == 0; `uid_validity` == 0 with `next_uid` != 1; seen
/// or deleted counters above `messages_count`; `first_recent_uid` 0 or above `next_uid`;
/// lowwater UIDs above `next_uid`; a record UID that is 0, not below `next_uid` or not
/// above the previous record's; extensions that leave the header, have an invalid or
/// duplicate name, both sizes 0, a bad record alignment or a record area outside the
/// record; a broken `keywords` header.
///
/// Minor versions below 3 are upgraded in [`IndexFile::header`] as Dovecot does in memory:
/// version 0 gets `first_recent_uid` 1 if it was 0; versions 0 and 1 lose the old
/// `\Recent` bit (0x20) in every record and become version 3; versions 0..=2 get
/// `log2_rotate_time` and `last_temp_file_scan` zeroed.
///
/// Dovecot: a file shorter than `messages_count` records is "fscked" by Dovecot (repaired
/// in memory); here only the complete records are returned and `messages_count` is left
/// as the file says. Dovecot checks only the last record's UID; every record is checked
/// here (its fsck would do the same). Dovecot turns an extension name with control
/// characters or invalid UTF-8 into `""` and accepts it, and skips the record checks for
/// `record_offset` 0; both are refused here, as is an extension record area overlapping
/// the UID and flags (offset < 5), which Dovecot never writes.
pub fn parse_index(data: &[u8]) -> Result<IndexFile, FormatError> {
    // mail_index_try_read_map(): a major version change is noticed before anything else.
    if let Some(&major) = data.get(OFF_MAJOR_VERSION)
        && major != MAJOR_VERSION
    {
        return Err(FormatError::new(
            OFF_MAJOR_VERSION,
            format!(
                "unsupported index major version {major} (expected {MAJOR_VERSION}); \
                 not a Dovecot 2.x index file"
            ),
        ));
    }
    let Some(raw) = data
        .get(..BASE_HEADER_SIZE)
        .and_then(|b| <[u8; BASE_HEADER_SIZE]>::try_from(b).ok())
    else {
        return Err(FormatError::new(
            data.len(),
            format!(
                "index file is too small ({} bytes, the header alone is {BASE_HEADER_SIZE})",
                data.len()
            ),
        ));
    };
    let mut header = IndexHeader::from_base_bytes(&raw);
    check_header_compat(&header, data.len())?;

    let base_len = usize::from(header.base_header_size);
    let header_len = usize::try_from(header.header_size).unwrap_or(usize::MAX);
    let base_bytes = data.get(..base_len).unwrap_or_default().to_vec();
    let Some(header_area) = data.get(..header_len) else {
        // check_header_compat() made sure header_size <= data.len().
        return Err(FormatError::new(
            OFF_HEADER_SIZE,
            "header size exceeds the file",
        ));
    };

    // Records: as many complete ones as the file holds, at most messages_count.
    if header.record_size < RECORD_BASE_SIZE {
        return Err(FormatError::new(
            OFF_RECORD_SIZE,
            format!(
                "record_size {} is smaller than the minimum {RECORD_BASE_SIZE}",
                header.record_size
            ),
        ));
    }
    let record_len = usize::try_from(header.record_size).unwrap_or(usize::MAX);
    let available = data
        .len()
        .saturating_sub(header_len)
        .checked_div(record_len)
        .unwrap_or(0);
    let count = available.min(usize::try_from(header.messages_count).unwrap_or(usize::MAX));

    let file_minor_version = header.minor_version;
    check_header_values(&mut header)?;

    let mut records = Vec::with_capacity(count);
    let mut prev_uid = 0u32;
    let mut at = header_len;
    for _ in 0..count {
        let end = at.saturating_add(record_len);
        let Some(bytes) = data.get(at..end) else {
            break;
        };
        let mut record = bytes.to_vec();
        let uid = record_uid(&record).unwrap_or(0);
        if uid == 0 {
            return Err(FormatError::new(at, "message record has uid 0"));
        }
        if uid >= header.next_uid {
            return Err(FormatError::new(
                at,
                format!(
                    "message uid {uid} is not below next_uid {}",
                    header.next_uid
                ),
            ));
        }
        if uid <= prev_uid {
            return Err(FormatError::new(
                at,
                format!("message uid {uid} does not follow uid {prev_uid} in ascending order"),
            ));
        }
        prev_uid = uid;
        if file_minor_version < 2 {
            // mail_index_map_clear_recent_flags() for pre-v1.1.rc6 files.
            if let Some(flags) = record.get_mut(4) {
                *flags &= !RECORD_FLAG_OLD_RECENT;
            }
        }
        records.push(record);
        at = end;
    }

    let extensions = parse_extensions(header_area, &header)?;
    Ok(IndexFile {
        header,
        base_bytes,
        extensions,
        records,
    })
}

/// `mail_index_check_header_compat()`: the checks that decide whether the file can be used
/// at all.
fn check_header_compat(header: &IndexHeader, file_len: usize) -> Result<(), FormatError> {
    if header.flags & HDR_FLAG_CORRUPTED != 0 {
        return Err(FormatError::new(
            OFF_FLAGS,
            "index header has the CORRUPTED flag set; Dovecot will rebuild this file",
        ));
    }
    if header.compat_flags != COMPAT_LITTLE_ENDIAN {
        return Err(FormatError::new(
            OFF_COMPAT_FLAGS,
            format!(
                "compat_flags is {} instead of {COMPAT_LITTLE_ENDIAN}: the index was written \
                 on a big-endian CPU and cannot be read here",
                header.compat_flags
            ),
        ));
    }
    if usize::from(header.base_header_size) < BASE_HEADER_SIZE
        || header.header_size < u32::from(header.base_header_size)
    {
        return Err(FormatError::new(
            OFF_BASE_HEADER_SIZE,
            format!(
                "corrupted header sizes (base {}, full {}): the base must be at least \
                 {BASE_HEADER_SIZE} and not larger than the full header",
                header.base_header_size, header.header_size
            ),
        ));
    }
    if u64::from(header.header_size) > u64::try_from(file_len).unwrap_or(u64::MAX) {
        return Err(FormatError::new(
            OFF_HEADER_SIZE,
            format!(
                "header size {} is larger than the file ({file_len} bytes); the file is \
                 truncated",
                header.header_size
            ),
        ));
    }
    Ok(())
}

/// The value checks of `mail_index_map_check_header()`, including its minor-version
/// upgrades, which modify `header`.
fn check_header_values(header: &mut IndexHeader) -> Result<(), FormatError> {
    if header.uid_validity == 0 && header.next_uid != 1 {
        return Err(FormatError::new(
            OFF_UID_VALIDITY,
            format!(
                "uid_validity is 0 but next_uid is {} (must be 1)",
                header.next_uid
            ),
        ));
    }
    if header.next_uid == 0 {
        return Err(FormatError::new(OFF_NEXT_UID, "next_uid is 0"));
    }
    if header.seen_messages_count > header.messages_count {
        return Err(FormatError::new(
            OFF_SEEN_MESSAGES_COUNT,
            format!(
                "seen_messages_count {} > messages_count {}",
                header.seen_messages_count, header.messages_count
            ),
        ));
    }
    if header.deleted_messages_count > header.messages_count {
        return Err(FormatError::new(
            OFF_DELETED_MESSAGES_COUNT,
            format!(
                "deleted_messages_count {} > messages_count {}",
                header.deleted_messages_count, header.messages_count
            ),
        ));
    }
    // The fall-through switch on minor_version.
    if header.minor_version == 0 && header.first_recent_uid == 0 {
        header.first_recent_uid = 1;
    }
    if header.minor_version <= 1 {
        header.minor_version = MINOR_VERSION;
        header.log2_rotate_time = 0;
        header.last_temp_file_scan = 0;
    } else if header.minor_version == 2 {
        header.log2_rotate_time = 0;
        header.last_temp_file_scan = 0;
    }
    if header.first_recent_uid == 0 {
        return Err(FormatError::new(
            OFF_FIRST_RECENT_UID,
            "first_recent_uid is 0",
        ));
    }
    let uid_limits = [
        (
            OFF_FIRST_RECENT_UID,
            "first_recent_uid",
            header.first_recent_uid,
        ),
        (
            OFF_FIRST_UNSEEN_UID_LOWWATER,
            "first_unseen_uid_lowwater",
            header.first_unseen_uid_lowwater,
        ),
        (
            OFF_FIRST_DELETED_UID_LOWWATER,
            "first_deleted_uid_lowwater",
            header.first_deleted_uid_lowwater,
        ),
    ];
    for (at, name, value) in uid_limits {
        if value > header.next_uid {
            return Err(FormatError::new(
                at,
                format!("{name} {value} > next_uid {}", header.next_uid),
            ));
        }
    }
    Ok(())
}

/// `mail_index_map_parse_extensions()` over `header_area` (the first `header_size` bytes
/// of the file).
fn parse_extensions(
    header_area: &[u8],
    header: &IndexHeader,
) -> Result<Vec<ExtHeader>, FormatError> {
    let header_len = header_area.len();
    let mut offset = align8(usize::from(header.base_header_size));
    let mut extensions: Vec<ExtHeader> = Vec::new();
    let mut names: HashSet<String> = HashSet::new();
    while offset < header_len {
        let ext_no = extensions.len();
        let outside = |what: &str| {
            FormatError::new(
                offset,
                format!(
                    "extension #{ext_no} {what} goes outside the index header \
                     (header_size {header_len})"
                ),
            )
        };
        // mail_index_map_ext_get_next(): Dovecot wants at least one byte after the struct.
        let name_start = offset.saturating_add(EXT_HEADER_SIZE);
        if name_start >= header_len {
            return Err(outside("header"));
        }
        let field16 = |rel: usize| le::u16_at(header_area, offset.saturating_add(rel)).unwrap_or(0);
        let hdr_size =
            le::u32_at(header_area, offset.saturating_add(EXT_OFF_HDR_SIZE)).unwrap_or(0);
        let reset_id =
            le::u32_at(header_area, offset.saturating_add(EXT_OFF_RESET_ID)).unwrap_or(0);
        let record_offset = field16(EXT_OFF_RECORD_OFFSET);
        let record_size = field16(EXT_OFF_RECORD_SIZE);
        let record_align = field16(EXT_OFF_RECORD_ALIGN);
        let name_size = usize::from(field16(EXT_OFF_NAME_SIZE));

        let data_start = offset.saturating_add(align8(EXT_HEADER_SIZE.saturating_add(name_size)));
        if data_start > header_len {
            return Err(outside("name"));
        }
        let name_bytes = header_area
            .get(name_start..name_start.saturating_add(name_size))
            .unwrap_or_default();
        let hdr_len = usize::try_from(hdr_size).unwrap_or(usize::MAX);
        let next = data_start.saturating_add(align8(hdr_len));
        if next > header_len {
            return Err(outside("header data"));
        }
        let name = check_ext_name(name_bytes)
            .map_err(|what| FormatError::new(name_start, format!("extension #{ext_no}: {what}")))?;
        check_ext_header(header, hdr_size, record_offset, record_size, record_align).map_err(
            |what| FormatError::new(offset, format!("extension #{ext_no} ({name}): {what}")),
        )?;
        if !names.insert(name.clone()) {
            return Err(FormatError::new(
                name_start,
                format!("extension #{ext_no}: duplicate extension name {name}"),
            ));
        }
        let Some(ext_data) = header_area.get(data_start..data_start.saturating_add(hdr_len)) else {
            return Err(outside("header data"));
        };
        if name == KEYWORDS_EXT {
            parse_keywords_header(ext_data).map_err(|e| {
                let at = usize::try_from(e.offset)
                    .unwrap_or(0)
                    .saturating_add(data_start);
                FormatError::new(at, e.what)
            })?;
        }
        extensions.push(ExtHeader {
            name,
            reset_id,
            record_offset,
            record_size,
            record_align,
            data: ext_data.to_vec(),
        });
        offset = next;
    }
    Ok(extensions)
}

/// `mail_index_ext_name_is_valid()`: ASCII letters, digits, `-`, `_` and space, shorter
/// than 64 characters.
///
/// Dovecot: the name is cut at a NUL and a name with other bytes becomes `""`, which
/// Dovecot accepts; both are refused here, as is an empty name.
fn check_ext_name(bytes: &[u8]) -> Result<String, String> {
    if bytes.is_empty() {
        return Err("extension has an empty name".into());
    }
    if bytes.len() >= EXT_NAME_MAX_LENGTH {
        return Err(format!(
            "extension name is {} bytes long (the limit is {})",
            bytes.len(),
            EXT_NAME_MAX_LENGTH.saturating_sub(1)
        ));
    }
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b' ');
    if !bytes.iter().all(valid) {
        return Err(format!(
            "invalid extension name of {} bytes (allowed: letters, digits, '-', '_', space)",
            bytes.len()
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// `mail_index_map_ext_hdr_check()` and `mail_index_map_ext_hdr_check_record()`
/// (`mail-index-map.c`).
fn check_ext_header(
    header: &IndexHeader,
    hdr_size: u32,
    record_offset: u16,
    record_size: u16,
    record_align: u16,
) -> Result<(), String> {
    if record_size == 0 && hdr_size == 0 {
        return Err("both header size and record size are 0".into());
    }
    if record_size != 0 {
        if record_align == 0 {
            return Err("record alignment is 0".into());
        }
        if record_align > EXT_RECORD_MAX_ALIGN {
            return Err(format!("record alignment {record_align} is larger than 8"));
        }
        if record_size >= EXT_RECORD_MAX_SIZE {
            return Err(format!("record size {record_size} is too large"));
        }
        // Dovecot skips the remaining checks when record_offset is 0 (an extension being
        // introduced); in a file that would overlap the uid, so it is refused here.
        if u32::from(record_offset) < RECORD_MIN_SIZE {
            return Err(format!(
                "record data at offset {record_offset} overlaps the uid and flags"
            ));
        }
        let end = u32::from(record_offset).saturating_add(u32::from(record_size));
        if end > header.record_size {
            return Err(format!(
                "record field points outside the record ({record_offset}+{record_size} > {})",
                header.record_size
            ));
        }
        if !record_offset.is_multiple_of(record_align) {
            return Err(format!(
                "record offset {record_offset} is not aligned to {record_align}"
            ));
        }
        if !header.record_size.is_multiple_of(u32::from(record_align)) {
            return Err(format!(
                "record size {} is not a multiple of the extension's alignment {record_align}",
                header.record_size
            ));
        }
    }
    if hdr_size > EXT_HEADER_MAX_SIZE {
        return Err(format!("header size {hdr_size} is too large"));
    }
    Ok(())
}

/// Keyword names from the `keywords` extension header data (`struct
/// mail_index_keyword_header` + `struct mail_index_keyword_header_rec` name offsets +
/// NUL-terminated names, `mail-index-private.h`), in index order: bit `i` of a record's
/// keyword bitmask is name `i`.
///
/// Checks of `mail_index_map_parse_keywords()`: the name offsets table must fit, every
/// name offset must be inside the name area, the area must end with NUL, and no name may
/// be empty. Names are found through their offsets, as Dovecot does (it only warns when
/// they are not consecutive). Bytes that are not UTF-8 become U+FFFD.
///
/// Dovecot: with an empty name area it reads the byte before it; here an empty area is
/// accepted only when there are no keywords.
pub fn parse_keywords_header(data: &[u8]) -> Result<Vec<String>, FormatError> {
    let Some(count) = le::u32_at(data, 0) else {
        return Err(FormatError::new(
            0,
            format!(
                "keywords header is {} bytes, too small for the keyword count",
                data.len()
            ),
        ));
    };
    let count_len = usize::try_from(count).ok();
    let names_start = count_len
        .and_then(|c| c.checked_mul(KEYWORD_REC_SIZE))
        .and_then(|n| n.checked_add(KEYWORD_HEADER_SIZE));
    let (Some(count_len), Some(names_start)) = (count_len, names_start) else {
        return Err(too_many_keywords(count, data.len()));
    };
    let Some(area) = data.get(names_start..) else {
        return Err(too_many_keywords(count, data.len()));
    };
    if !area.is_empty() && area.last() != Some(&0) {
        return Err(FormatError::new(
            data.len(),
            "keywords header doesn't end with NUL",
        ));
    }
    // `count_len` records fit in `data`, so this allocation is bounded by the input.
    let mut names = Vec::with_capacity(count_len);
    for i in 0..count_len {
        let name_offset_at = i
            .checked_mul(KEYWORD_REC_SIZE)
            .and_then(|r| r.checked_add(KEYWORD_HEADER_SIZE + 4))
            .unwrap_or(usize::MAX);
        let name_offset = le::u32_at(data, name_offset_at).unwrap_or(u32::MAX);
        let start = usize::try_from(name_offset).unwrap_or(usize::MAX);
        let Some(tail) = area.get(start..).filter(|t| !t.is_empty()) else {
            return Err(FormatError::new(
                name_offset_at,
                format!(
                    "keyword {i}: name_offset {name_offset} points outside the names \
                     ({} bytes)",
                    area.len()
                ),
            ));
        };
        let name = tail.split(|&b| b == 0).next().unwrap_or_default();
        if name.is_empty() {
            return Err(FormatError::new(
                names_start.saturating_add(start),
                format!("keyword {i} has an empty name"),
            ));
        }
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(names)
}

/// The error for a `keywords_count` whose name offsets table does not fit.
fn too_many_keywords(count: u32, len: usize) -> FormatError {
    FormatError::new(
        0,
        format!("keywords_count {count} is larger than the keywords header ({len} bytes) allows"),
    )
}

/// Record layout after adding or resizing extensions, as Dovecot's `sync_ext_reorder()`
/// (`mail-index-sync-ext.c`) computes it: returns (`record_offset` per extension in input
/// order, record_size). Input: (record_size, record_align) per extension in ext_id order,
/// header-only extensions included (their size is 0; their offset comes back as 0, but
/// their alignment still counts for the record size).
///
/// Extensions are sorted by alignment, largest first (a stable sort, like glibc's merge
/// sort `qsort()`; equal alignments keep ext_id order). Starting at offset 5 (uid + flags,
/// `MAIL_INDEX_RECORD_MIN_SIZE`), the first unplaced extension whose alignment divides the
/// offset is placed there; if none fits, the offset is padded to the smallest alignment
/// still needed. Finally the record size is rounded up to the largest alignment of all
/// extensions, at least 4.
///
/// Returns `None` where Dovecot would refuse or assert: an extension with records and
/// alignment 0, a layout reaching 65535 bytes, or a record size below 8 (possible only
/// with odd alignments such as 5 or 7). Verified against Dovecot's files: mdbox
/// mailbox record size 40 with guid@5, keywords@21, cache@24, mdbox@28, vsize@36.
pub fn layout_records(exts: &[(u16, u16)]) -> Option<(Vec<u16>, u32)> {
    if exts.iter().any(|&(size, align)| size > 0 && align == 0) {
        return None;
    }
    let mut order: Vec<usize> = (0..exts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(exts.get(i).map_or(0, |e| e.1)));
    let mut offsets = vec![0u16; exts.len()];
    let mut placed = vec![false; exts.len()];
    let mut offset = RECORD_MIN_SIZE;
    let max_align = exts
        .iter()
        .map(|&(_, align)| u32::from(align))
        .fold(4u32, u32::max);
    loop {
        let mut min_align: Option<u32> = None;
        let mut chosen = None;
        for &i in &order {
            let (Some(&(size, align)), Some(&done)) = (exts.get(i), placed.get(i)) else {
                continue;
            };
            if done || size == 0 {
                continue;
            }
            let align = u32::from(align);
            if offset.checked_rem(align)? == 0 {
                chosen = Some((i, size));
                break;
            }
            min_align = Some(min_align.map_or(align, |m| m.min(align)));
        }
        match (chosen, min_align) {
            (Some((i, size)), _) => {
                *offsets.get_mut(i)? = u16::try_from(offset).ok()?;
                *placed.get_mut(i)? = true;
                offset = offset.checked_add(u32::from(size))?;
            }
            (None, Some(align)) => {
                let pad = align.checked_sub(offset.checked_rem(align)?)?;
                offset = offset.checked_add(pad)?;
            }
            (None, None) => break,
        }
        if offset >= u32::from(u16::MAX) {
            return None;
        }
    }
    let rem = offset.checked_rem(max_align)?;
    if rem != 0 {
        offset = offset.checked_add(max_align.checked_sub(rem)?)?;
    }
    // Dovecot asserts the result holds a struct mail_index_record; odd alignments of
    // header-only extensions (which it does not check) could break that.
    if offset < RECORD_BASE_SIZE {
        return None;
    }
    Some((offsets, offset))
}

/// `MAIL_INDEX_HEADER_SIZE_ALIGN()`: rounds up to a multiple of 8 (saturating).
fn align8(n: usize) -> usize {
    n.checked_add(7).map_or(usize::MAX & !7, |v| v & !7)
}

/// Copies `value` into `raw` at `at` (does nothing if it would not fit).
fn put(raw: &mut [u8], at: usize, value: &[u8]) {
    let Some(end) = at.checked_add(value.len()) else {
        return;
    };
    if let Some(dst) = raw.get_mut(at..end) {
        dst.copy_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hex;
    use crate::format::testutil::{XorShift, dump_num, dump_value};

    const MAILDIR_INDEX: &[u8] =
        include_bytes!("../../tests/fixtures/formats/maildir.dovecot.index");
    const MAILDIR_DUMP: &str =
        include_str!("../../tests/fixtures/formats/maildir.dovecot.index.dump");
    const MDBOX_INDEX: &[u8] = include_bytes!("../../tests/fixtures/formats/mdbox.dovecot.index");
    const MDBOX_DUMP: &str = include_str!("../../tests/fixtures/formats/mdbox.dovecot.index.dump");
    const MAP_INDEX: &[u8] = include_bytes!("../../tests/fixtures/formats/mdbox.dovecot.map.index");
    const MAP_DUMP: &str =
        include_str!("../../tests/fixtures/formats/mdbox.dovecot.map.index.dump");

    // ---- builders -------------------------------------------------------------------

    /// A valid header for `build()`: uidvalidity 1234, next_uid 4, 3 messages.
    fn sample_header() -> IndexHeader {
        IndexHeader {
            major_version: 7,
            minor_version: 3,
            base_header_size: 120,
            header_size: 0,
            record_size: 12,
            compat_flags: 1,
            indexid: 1_700_000_000,
            flags: 0,
            uid_validity: 1234,
            next_uid: 4,
            messages_count: 3,
            seen_messages_count: 1,
            deleted_messages_count: 0,
            first_recent_uid: 1,
            first_unseen_uid_lowwater: 1,
            first_deleted_uid_lowwater: 0,
            log_file_seq: 2,
            log_file_tail_offset: 100,
            log_file_head_offset: 200,
            log2_rotate_time: u32::MAX,
            last_temp_file_scan: 7,
            day_stamp: 1_699_999_000,
            day_first_uid: [1, 2, 3, 4, 5, 6, 7, 8],
        }
    }

    /// One extension header block (`struct mail_index_ext_header` + name + data, padded).
    fn ext(name: &str, data: &[u8], record: (u16, u16, u16)) -> Vec<u8> {
        let (offset, size, align) = record;
        let mut v = Vec::new();
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&align.to_le_bytes());
        v.extend_from_slice(&(name.len() as u16).to_le_bytes());
        v.extend_from_slice(name.as_bytes());
        v.resize(align8(v.len()), 0);
        v.extend_from_slice(data);
        v.resize(align8(v.len()), 0);
        v
    }

    /// A `keywords` header: count, (unused, name_offset) pairs, names, 8 spare bytes.
    fn kw_header(names: &[&str]) -> Vec<u8> {
        let mut v = (names.len() as u32).to_le_bytes().to_vec();
        let mut offset = 0u32;
        for n in names {
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&offset.to_le_bytes());
            offset += n.len() as u32 + 1;
        }
        for n in names {
            v.extend_from_slice(n.as_bytes());
            v.push(0);
        }
        v.extend_from_slice(&[0; 8]);
        v
    }

    /// A record of `size` bytes with `uid` and `flags`, extension bytes filled with `fill`.
    fn rec(uid: u32, flags: u8, size: usize, fill: u8) -> Vec<u8> {
        let mut v = vec![fill; size];
        v[..4].copy_from_slice(&uid.to_le_bytes());
        v[4] = flags;
        v
    }

    /// Header + extensions + records; header_size is set to fit.
    fn build(h: &IndexHeader, exts: &[Vec<u8>], records: &[Vec<u8>]) -> Vec<u8> {
        let mut h = h.clone();
        let ext_len: usize = exts.iter().map(Vec::len).sum();
        h.header_size = (align8(usize::from(h.base_header_size)) + ext_len) as u32;
        let mut v = h.to_base_bytes().to_vec();
        v.resize(align8(usize::from(h.base_header_size)), 0);
        for e in exts {
            v.extend_from_slice(e);
        }
        for r in records {
            v.extend_from_slice(r);
        }
        v
    }

    /// The standard synthetic file: record_size 12, keywords@5(2), cache@8(4), hdr-x.
    fn sample() -> Vec<u8> {
        let exts = [
            ext("cache", &[], (8, 4, 4)),
            ext(KEYWORDS_EXT, &kw_header(&["$Label1", "work"]), (5, 2, 1)),
            ext("hdr-x", &[9, 8, 7, 6], (0, 0, 0)),
        ];
        let records = [
            rec(1, 0x08, 12, 0),
            rec(2, 0, 12, 0xaa),
            rec(3, 0x14, 12, 0),
        ];
        build(&sample_header(), &exts, &records)
    }

    fn patch(v: &mut [u8], at: usize, bytes: &[u8]) {
        v[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn err(data: &[u8]) -> FormatError {
        parse_index(data).expect_err("must be refused")
    }

    // ---- header -----------------------------------------------------------------------

    #[test]
    fn header_bytes_round_trip() {
        let h = sample_header();
        assert_eq!(IndexHeader::from_base_bytes(&h.to_base_bytes()), h);
        // Real files: every byte survives except the three unused fields, which are 0 in
        // files Dovecot 2.3 writes.
        for file in [MAILDIR_INDEX, MDBOX_INDEX, MAP_INDEX] {
            let raw: [u8; BASE_HEADER_SIZE] = file[..BASE_HEADER_SIZE].try_into().unwrap();
            assert_eq!(IndexHeader::from_base_bytes(&raw).to_base_bytes(), raw);
        }
        // Field positions follow struct mail_index_header.
        let raw = h.to_base_bytes();
        assert_eq!(&raw[28..32], &4u32.to_le_bytes());
        assert_eq!(&raw[76..80], &[0xff; 4]);
        assert_eq!(&raw[116..120], &8u32.to_le_bytes());
        assert_eq!(&raw[36..40], &[0; 4]);
    }

    #[test]
    fn synthetic_index_parses() {
        let data = sample();
        let f = parse_index(&data).expect("valid");
        let mut want = sample_header();
        want.header_size = f.header.header_size;
        assert_eq!(f.header, want);
        assert_eq!(f.base_bytes, data[..120].to_vec());
        let names: Vec<&str> = f.extensions.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["cache", "keywords", "hdr-x"]);
        assert_eq!(f.extensions[2].data, [9, 8, 7, 6]);
        assert_eq!(f.records.len(), 3);
        assert_eq!(f.records[1].len(), 12);
        let uids: Vec<u32> = f.records.iter().filter_map(|r| record_uid(r)).collect();
        assert_eq!(uids, [1, 2, 3]);
        assert_eq!(record_flags(&f.records[2]), Some(0x14));
        let (id, cache) = f.find_ext("cache").expect("cache ext");
        assert_eq!(id, 0);
        assert_eq!(cache.record_data(&f.records[1]), Some(&[0xaa; 4][..]));
        assert_eq!(
            f.find_ext("hdr-x").unwrap().1.record_data(&f.records[0]),
            None
        );
        assert!(f.find_ext("Cache").is_none());
        let kw = &f.find_ext(KEYWORDS_EXT).unwrap().1.data;
        assert_eq!(parse_keywords_header(kw).unwrap(), ["$Label1", "work"]);
        assert_eq!(record_uid(&[1, 0]), None);
        assert_eq!(record_flags(&[1, 0, 0, 0]), None);
    }

    #[test]
    fn larger_base_header_keeps_unknown_bytes() {
        let mut h = sample_header();
        h.base_header_size = 124;
        let mut data = build(&h, &[ext("hdr-x", &[1], (0, 0, 0))], &[]);
        patch(&mut data, 32, &0u32.to_le_bytes()); // messages_count
        patch(&mut data, 40, &0u32.to_le_bytes()); // seen
        patch(&mut data, 120, &[0xde, 0xad, 0xbe, 0xef]);
        let f = parse_index(&data).expect("valid");
        assert_eq!(f.base_bytes.len(), 124);
        assert_eq!(&f.base_bytes[120..], &[0xde, 0xad, 0xbe, 0xef]);
        // Extensions start at align8(124) = 128.
        assert_eq!(f.header.header_size, 128 + 32);
        assert_eq!(f.extensions[0].data, [1]);
    }

    #[test]
    fn short_file_keeps_complete_records_only() {
        let data = sample();
        let f = parse_index(&data[..data.len() - 1]).expect("valid");
        assert_eq!((f.header.messages_count, f.records.len()), (3, 2));
        let hs = f.header.header_size as usize;
        let f = parse_index(&data[..hs]).expect("valid");
        assert!(f.records.is_empty());
        // Trailing garbage after messages_count records is ignored.
        let mut long = data.clone();
        long.extend_from_slice(&[0xff; 30]);
        assert_eq!(parse_index(&long).unwrap().records.len(), 3);
    }

    #[test]
    fn old_minor_versions_are_upgraded() {
        // v1.0 (minor 0): first_recent_uid 0 -> 1, \Recent (0x20) cleared, minor -> 3.
        let mut data = sample();
        patch(&mut data, 1, &[0]);
        patch(&mut data, 48, &0u32.to_le_bytes());
        let hs = le::u32_at(&data, 4).unwrap() as usize;
        data[hs + 4] = 0x28;
        let f = parse_index(&data).expect("valid");
        assert_eq!(f.header.minor_version, 3);
        assert_eq!(f.header.first_recent_uid, 1);
        assert_eq!(
            (f.header.log2_rotate_time, f.header.last_temp_file_scan),
            (0, 0)
        );
        assert_eq!(record_flags(&f.records[0]), Some(0x08));
        assert_eq!(f.base_bytes[1], 0, "raw bytes are not upgraded");
        // minor 2: only the old fields are cleared; minor 0 with first_recent_uid 0 is ok
        // but minor 2 with it is not.
        let mut data = sample();
        patch(&mut data, 1, &[2]);
        let hs = le::u32_at(&data, 4).unwrap() as usize;
        data[hs + 4] = 0x28;
        let f = parse_index(&data).expect("valid");
        assert_eq!(f.header.minor_version, 2);
        assert_eq!(f.header.log2_rotate_time, 0);
        assert_eq!(record_flags(&f.records[0]), Some(0x28));
        patch(&mut data, 48, &0u32.to_le_bytes());
        assert_eq!(err(&data).offset, 48);
        // A newer minor version is accepted untouched.
        let mut data = sample();
        patch(&mut data, 1, &[9]);
        let f = parse_index(&data).expect("valid");
        assert_eq!(
            (f.header.minor_version, f.header.log2_rotate_time),
            (9, u32::MAX)
        );
    }

    #[test]
    fn header_errors() {
        let base = sample();
        let hs = le::u32_at(&base, 4).unwrap() as usize;
        let cases: &[(&str, usize, &[u8], u64, &str)] = &[
            ("major", 0, &[6], 0, "major version 6"),
            ("corrupted flag", 20, &[1, 0, 0, 0], 20, "CORRUPTED"),
            ("big endian", 12, &[0], 12, "big-endian"),
            ("base too small", 2, &[100, 0], 2, "base 100"),
            ("full < base", 4, &[100, 0, 0, 0], 2, "full 100"),
            (
                "header_size > file",
                4,
                &[0, 0, 1, 0],
                4,
                "larger than the file",
            ),
            ("record_size", 8, &[7, 0, 0, 0], 8, "record_size 7"),
            ("uidvalidity 0", 24, &[0, 0, 0, 0], 24, "next_uid is 4"),
            ("next_uid 0", 28, &[0, 0, 0, 0], 28, "next_uid is 0"),
            ("seen", 40, &[4, 0, 0, 0], 40, "seen_messages_count 4"),
            ("deleted", 44, &[4, 0, 0, 0], 44, "deleted_messages_count 4"),
            ("recent 0", 48, &[0, 0, 0, 0], 48, "first_recent_uid is 0"),
            ("recent high", 48, &[5, 0, 0, 0], 48, "first_recent_uid 5"),
            (
                "unseen",
                52,
                &[5, 0, 0, 0],
                52,
                "first_unseen_uid_lowwater 5",
            ),
            (
                "deleted lw",
                56,
                &[5, 0, 0, 0],
                56,
                "first_deleted_uid_lowwater 5",
            ),
            ("uid 0", hs, &[0, 0, 0, 0], hs as u64, "uid 0"),
            (
                "uid too high",
                hs + 24,
                &[4, 0, 0, 0],
                (hs + 24) as u64,
                "next_uid 4",
            ),
            (
                "uid order",
                hs + 12,
                &[1, 0, 0, 0],
                (hs + 12) as u64,
                "ascending",
            ),
        ];
        for &(name, at, bytes, want_at, want) in cases {
            let mut data = base.clone();
            patch(&mut data, at, bytes);
            let e = err(&data);
            assert_eq!(e.offset, want_at, "{name}: {e}");
            assert!(e.what.contains(want), "{name}: {e}");
        }
        let e = err(&base[..100]);
        assert_eq!(e.offset, 100);
        assert!(e.what.contains("too small"), "{e}");
        assert!(err(&[]).what.contains("too small"));
        assert!(err(&[8]).what.contains("major version 8"));
    }

    #[test]
    fn extension_errors() {
        let h = sample_header();
        let recs = [rec(1, 0, 12, 0), rec(2, 0, 12, 0), rec(3, 0, 12, 0)];
        let one = |e: Vec<u8>| build(&h, &[e], &recs);
        let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
            (
                "bad char",
                one(ext("bad!", &[1], (0, 0, 0))),
                136,
                "invalid extension name",
            ),
            (
                "empty name",
                one(ext("", &[1], (0, 0, 0))),
                136,
                "empty name",
            ),
            (
                "long name",
                one(ext(&"x".repeat(64), &[1], (0, 0, 0))),
                136,
                "64 bytes",
            ),
            (
                "both 0",
                one(ext("e", &[], (0, 0, 0))),
                120,
                "both header size",
            ),
            (
                "align 0",
                one(ext("e", &[], (8, 4, 0))),
                120,
                "alignment is 0",
            ),
            (
                "align 16",
                one(ext("e", &[], (8, 4, 16))),
                120,
                "alignment 16",
            ),
            (
                "rec huge",
                one(ext("e", &[], (8, 40000, 1))),
                120,
                "record size 40000",
            ),
            (
                "overlap",
                one(ext("e", &[], (4, 4, 4))),
                120,
                "overlaps the uid",
            ),
            (
                "outside",
                one(ext("e", &[], (8, 8, 4))),
                120,
                "outside the record",
            ),
            (
                "misaligned",
                one(ext("e", &[], (6, 4, 4))),
                120,
                "not aligned",
            ),
            (
                "rec size align",
                one(ext("e", &[], (8, 4, 8))),
                120,
                "multiple",
            ),
            (
                "kw count",
                one(ext(KEYWORDS_EXT, &[9, 0, 0, 0], (0, 0, 0))),
                144,
                "keywords_count 9",
            ),
        ];
        for (name, data, want_at, want) in cases {
            let e = err(&data);
            assert_eq!(e.offset, want_at, "{name}: {e}");
            assert!(e.what.contains(want), "{name}: {e}");
        }
        // Duplicate names.
        let data = build(
            &h,
            &[ext("e", &[1], (0, 0, 0)), ext("e", &[2], (0, 0, 0))],
            &recs,
        );
        let e = err(&data);
        assert!(e.what.contains("duplicate extension name e"), "{e}");
        assert_eq!(e.offset, 120 + 32 + 16);
        // A name differing only in case is a different extension.
        let data = build(
            &h,
            &[ext("e", &[1], (0, 0, 0)), ext("E", &[2], (0, 0, 0))],
            &recs,
        );
        assert_eq!(parse_index(&data).unwrap().extensions.len(), 2);
        // hdr_size over MAIL_INDEX_EXT_HEADER_MAX_SIZE: shrink the data area afterwards so
        // only the size check can fail... the walk refuses first, as Dovecot's does.
        let mut data = one(ext("e", &[1], (0, 0, 0)));
        patch(&mut data, 120, &0x0100_0000u32.to_le_bytes());
        assert!(err(&data).what.contains("goes outside"));
        // Extension headers that leave header_size.
        let base = one(ext("e", &[1, 2, 3], (0, 0, 0)));
        for (hs, want) in [
            (130u32, "header goes"),
            (137, "name goes"),
            (143, "name goes"),
            (146, "data goes"),
        ] {
            let mut data = base.clone();
            patch(&mut data, 4, &hs.to_le_bytes());
            patch(&mut data, 32, &0u32.to_le_bytes());
            patch(&mut data, 40, &0u32.to_le_bytes());
            let e = err(&data);
            assert!(e.what.contains(want), "{hs}: {e}");
            assert_eq!(e.offset, 120, "{hs}: {e}");
        }
        // Exactly 16 bytes left: Dovecot wants at least one byte after the struct.
        let mut data = base.clone();
        patch(&mut data, 4, &136u32.to_le_bytes());
        patch(&mut data, 32, &0u32.to_le_bytes());
        patch(&mut data, 40, &0u32.to_le_bytes());
        assert!(err(&data).what.contains("header goes"));
    }

    // ---- keywords ---------------------------------------------------------------------

    #[test]
    fn keywords_header() {
        assert_eq!(
            parse_keywords_header(&kw_header(&["$Label1", "work"])).unwrap(),
            ["$Label1", "work"]
        );
        assert!(parse_keywords_header(&kw_header(&[])).unwrap().is_empty());
        assert!(parse_keywords_header(&[0, 0, 0, 0]).unwrap().is_empty());
        // Offsets, not order, find the names (Dovecot only warns about the order).
        let mut v = kw_header(&["ab", "cd"]);
        patch(&mut v, 8, &3u32.to_le_bytes());
        patch(&mut v, 16, &0u32.to_le_bytes());
        assert_eq!(parse_keywords_header(&v).unwrap(), ["cd", "ab"]);
        // Non-UTF-8 bytes survive as U+FFFD.
        let mut v = kw_header(&["caf\u{e9}"]);
        v[12 + 3] = 0xe9;
        v.remove(12 + 4);
        assert_eq!(parse_keywords_header(&v).unwrap(), ["caf\u{fffd}"]);

        let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
            ("short", vec![1, 0], 0, "too small"),
            (
                "count",
                vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                0,
                "keywords_count 2",
            ),
            (
                "huge count",
                vec![0xff, 0xff, 0xff, 0xff],
                0,
                "keywords_count 4294967295",
            ),
            (
                "no NUL",
                {
                    let mut v = kw_header(&["ab"]);
                    v.truncate(14);
                    v
                },
                14,
                "doesn't end with NUL",
            ),
            (
                "offset outside",
                {
                    let mut v = kw_header(&["ab"]);
                    patch(&mut v, 8, &99u32.to_le_bytes());
                    v
                },
                8,
                "name_offset 99",
            ),
            (
                "offset at end",
                {
                    let mut v = kw_header(&["ab"]);
                    let len = (v.len() - 12) as u32;
                    patch(&mut v, 8, &len.to_le_bytes());
                    v
                },
                8,
                "points outside",
            ),
            (
                "empty name",
                {
                    let mut v = kw_header(&["ab"]);
                    patch(&mut v, 8, &2u32.to_le_bytes());
                    v
                },
                14,
                "empty name",
            ),
            (
                "count without names",
                vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                8,
                "points outside",
            ),
            (
                "no NUL, no keywords",
                vec![0, 0, 0, 0, b'x'],
                5,
                "doesn't end with NUL",
            ),
        ];
        for (name, data, want_at, want) in cases {
            let e = parse_keywords_header(&data).expect_err(name);
            assert_eq!(e.offset, want_at, "{name}: {e}");
            assert!(e.what.contains(want), "{name}: {e}");
        }
    }

    // ---- record layout ----------------------------------------------------------------

    #[test]
    fn layout_matches_real_files() {
        for file in [MAILDIR_INDEX, MDBOX_INDEX, MAP_INDEX] {
            let f = parse_index(file).unwrap();
            let input: Vec<(u16, u16)> = f
                .extensions
                .iter()
                .map(|e| (e.record_size, e.record_align))
                .collect();
            let want: Vec<u16> = f.extensions.iter().map(|e| e.record_offset).collect();
            assert_eq!(
                layout_records(&input),
                Some((want, f.header.record_size)),
                "{:?}",
                f.extensions.iter().map(|e| &e.name).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn layout_cases() {
        // The doc's verified mdbox layout, in the ext_id order of the real file:
        // hdr-pop3-uidl, mdbox-hdr, cache, mdbox, guid, keywords, hdr-vsize, vsize.
        let mdbox = [
            (0, 0),
            (0, 0),
            (4, 4),
            (8, 4),
            (16, 1),
            (2, 1),
            (0, 8),
            (4, 4),
        ];
        assert_eq!(
            layout_records(&mdbox),
            Some((vec![0, 0, 24, 28, 5, 21, 0, 36], 40))
        );
        // Without the header-only align-8 extension the record is 4 bytes shorter.
        let mut no_hdr_vsize = mdbox.to_vec();
        no_hdr_vsize[6] = (0, 0);
        assert_eq!(layout_records(&no_hdr_vsize).unwrap().1, 40);
        no_hdr_vsize.truncate(6);
        assert_eq!(
            layout_records(&no_hdr_vsize),
            Some((vec![0, 0, 24, 28, 5, 21], 36))
        );
        // No extensions: uid + flags rounded to 4 -> 8 (sizeof(struct mail_index_record)).
        assert_eq!(layout_records(&[]), Some((vec![], 8)));
        assert_eq!(layout_records(&[(0, 0)]), Some((vec![0], 8)));
        // Map index: map 12/4, ref 2/2 -> ref@6, map@8, 20.
        assert_eq!(layout_records(&[(12, 4), (2, 2)]), Some((vec![8, 6], 20)));
        // An 8-aligned modseq goes first at 8; equal alignments keep ext_id order.
        assert_eq!(
            layout_records(&[(4, 4), (8, 8), (4, 4)]),
            Some((vec![16, 8, 20], 24))
        );
        // Odd alignments are accepted as Dovecot does (it only refuses 0 and > 8).
        assert_eq!(layout_records(&[(3, 3)]), Some((vec![6], 12)));
        // Refused: alignment 0 with a record, or a record of 64 KiB.
        assert_eq!(layout_records(&[(4, 0)]), None);
        assert_eq!(layout_records(&[(40000, 1), (40000, 1)]), None);
        assert_eq!(layout_records(&[(65530, 1)]), None);
        assert!(layout_records(&[(65529, 1)]).is_some());
        // A header-only extension with alignment 7 would give a 7-byte record.
        assert_eq!(layout_records(&[(0, 7)]), None);
    }

    // ---- golden files -----------------------------------------------------------------

    /// Compares everything `doveadm dump` prints about the index itself (not the cache)
    /// with what parse_index returns.
    fn check_against_dump(file: &[u8], dump: &str) -> IndexFile {
        let f = parse_index(file).expect("real file parses");
        let index = dump.split("\n-- CACHE:").next().unwrap();
        let h = &f.header;
        assert_eq!(
            dump_value(index, "version"),
            format!("{}.{}", h.major_version, h.minor_version)
        );
        let nums: [(&str, u64); 21] = [
            ("base header size", h.base_header_size.into()),
            ("header size", h.header_size.into()),
            ("record size", h.record_size.into()),
            ("compat flags", h.compat_flags.into()),
            ("index id", h.indexid.into()),
            ("flags", h.flags.into()),
            ("uid validity", h.uid_validity.into()),
            ("next uid", h.next_uid.into()),
            ("messages count", h.messages_count.into()),
            ("seen messages count", h.seen_messages_count.into()),
            ("deleted messages count", h.deleted_messages_count.into()),
            ("first recent uid", h.first_recent_uid.into()),
            (
                "first unseen uid lowwater",
                h.first_unseen_uid_lowwater.into(),
            ),
            (
                "first deleted uid lowwater",
                h.first_deleted_uid_lowwater.into(),
            ),
            ("log file seq", h.log_file_seq.into()),
            ("log file tail offset", h.log_file_tail_offset.into()),
            ("log file head offset", h.log_file_head_offset.into()),
            ("log2 rotate time", h.log2_rotate_time.into()),
            ("last temp file scan", h.last_temp_file_scan.into()),
            ("day stamp", h.day_stamp.into()),
            ("day first uid[0]", h.day_first_uid[0].into()),
        ];
        for (key, value) in nums {
            assert_eq!(dump_num(index, key), value, "{key}");
        }
        for (i, uid) in h.day_first_uid.iter().enumerate() {
            assert_eq!(
                dump_num(index, &format!("day first uid[{i}]")),
                u64::from(*uid)
            );
        }

        // Extensions, in file order.
        let blocks: Vec<&str> = index.split("-- Extension ").skip(1).collect();
        assert_eq!(blocks.len(), f.extensions.len());
        for (i, (block, e)) in blocks.iter().zip(&f.extensions).enumerate() {
            assert!(block.starts_with(&format!("{i} --")));
            assert_eq!(dump_value(block, "name"), e.name);
            assert_eq!(dump_num(block, "hdr_size"), e.data.len() as u64);
            assert_eq!(dump_num(block, "reset_id"), u64::from(e.reset_id));
            assert_eq!(dump_num(block, "record_offset"), u64::from(e.record_offset));
            assert_eq!(dump_num(block, "record_size"), u64::from(e.record_size));
            assert_eq!(dump_num(block, "record_align"), u64::from(e.record_align));
            if e.name == "map" {
                assert_eq!(dump_value(block, "header"), hex(&e.data));
            }
        }

        // Keywords, in index order ("  0 = $Label1").
        let kw_dump: Vec<String> = index
            .split("-- Keywords --\n")
            .nth(1)
            .unwrap()
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| l.split_once(" = ").unwrap().1.to_owned())
            .collect();
        let kw = f
            .find_ext(KEYWORDS_EXT)
            .map(|(_, e)| parse_keywords_header(&e.data).unwrap())
            .unwrap_or_default();
        assert_eq!(kw_dump, kw);

        // Records: uid, flags and every extension's bytes (" - ext 3 cache : ... (hex)").
        let records = dump.split("\n-- RECORDS: ").nth(1).unwrap();
        let count: u32 = records.lines().next().unwrap().parse().unwrap();
        assert_eq!(count, h.messages_count);
        let rec_blocks: Vec<&str> = records.split("RECORD: ").skip(1).collect();
        assert_eq!(rec_blocks.len(), f.records.len());
        for (i, (block, r)) in rec_blocks.iter().zip(&f.records).enumerate() {
            let first = block.lines().next().unwrap();
            let want = format!(
                "seq={}, uid={}, flags=0x{:02x}",
                i + 1,
                record_uid(r).unwrap(),
                record_flags(r).unwrap()
            );
            assert!(first.starts_with(&want), "{first} vs {want}");
            let mut seen = 0;
            for line in block.lines().filter(|l| l.starts_with(" - ext ")) {
                let mut words = line.split_whitespace().skip(3);
                let name = words.next().unwrap();
                let bytes = line.rsplit_once('(').unwrap().1.trim_end_matches(')');
                let (_, e) = f.find_ext(name).expect("dumped ext exists");
                assert_eq!(
                    hex(e.record_data(r).unwrap()),
                    bytes,
                    "seq {} {name}",
                    i + 1
                );
                seen += 1;
            }
            let with_records = f.extensions.iter().filter(|e| e.record_size > 0).count();
            assert_eq!(seen, with_records);
        }
        f
    }

    /// Maildir INBOX (4 messages, flags, keywords `$Label1 work` on uid 2): record_size 12
    /// with keywords@5 and cache@8; a header-only `maildir` extension with align 0.
    #[test]
    fn golden_maildir_index() {
        let f = check_against_dump(MAILDIR_INDEX, MAILDIR_DUMP);
        assert_eq!(f.records.len(), 4);
        let (_, kw) = f.find_ext(KEYWORDS_EXT).unwrap();
        assert_eq!(kw.record_data(&f.records[1]), Some(&[3, 0][..]));
    }

    /// mdbox INBOX (uids 1, 2, 4; uid 3 expunged): the doc's verified 40-byte layout.
    #[test]
    fn golden_mdbox_index() {
        let f = check_against_dump(MDBOX_INDEX, MDBOX_DUMP);
        let offsets: Vec<(&str, u16)> = f
            .extensions
            .iter()
            .filter(|e| e.record_size > 0)
            .map(|e| (e.name.as_str(), e.record_offset))
            .collect();
        assert_eq!(
            offsets,
            [
                ("cache", 24),
                ("mdbox", 28),
                ("guid", 5),
                ("keywords", 21),
                ("vsize", 36)
            ]
        );
        assert_eq!(f.header.record_size, 40);
        let uids: Vec<u32> = f.records.iter().filter_map(|r| record_uid(r)).collect();
        assert_eq!(uids, [1, 2, 4]);
    }

    /// mdbox map index after `doveadm force-resync`: map 12/4 at 8, ref 2/2 at 6.
    #[test]
    fn golden_map_index() {
        let f = check_against_dump(MAP_INDEX, MAP_DUMP);
        let (_, map) = f.find_ext("map").unwrap();
        let first = map.record_data(&f.records[0]).unwrap();
        assert_eq!(first, [2, 0, 0, 0, 16, 0, 0, 0, 127, 0, 0, 0]);
    }

    // ---- robustness -------------------------------------------------------------------

    /// Parses `data` and checks the invariants callers rely on; must never panic.
    fn parse_and_check(data: &[u8]) {
        let Ok(f) = parse_index(data) else {
            return;
        };
        assert!(f.records.len() <= f.header.messages_count as usize);
        assert!(f.base_bytes.len() >= BASE_HEADER_SIZE);
        let mut prev = 0;
        for r in &f.records {
            assert_eq!(r.len(), f.header.record_size as usize);
            let uid = record_uid(r).unwrap();
            assert!(uid > prev && uid < f.header.next_uid);
            prev = uid;
            for e in f.extensions.iter().filter(|e| e.record_size > 0) {
                assert!(e.record_data(r).is_some());
            }
        }
        for e in &f.extensions {
            if e.name == KEYWORDS_EXT {
                assert!(parse_keywords_header(&e.data).is_ok());
            }
        }
        let input: Vec<(u16, u16)> = f
            .extensions
            .iter()
            .map(|e| (e.record_size, e.record_align))
            .collect();
        let _ = layout_records(&input);
    }

    /// Every truncation and every single-bit flip of the real files: Ok or Err, no panic.
    #[test]
    fn no_panic_sweep_real_files() {
        for file in [MAILDIR_INDEX, MDBOX_INDEX, MAP_INDEX, &sample()[..]] {
            for cut in 0..=file.len() {
                parse_and_check(&file[..cut]);
            }
            let mut data = file.to_vec();
            for i in 0..data.len() {
                for bit in 0..8 {
                    data[i] ^= 1 << bit;
                    parse_and_check(&data);
                    data[i] ^= 1 << bit;
                }
            }
        }
    }

    #[test]
    fn no_panic_sweep_random() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            // Keyword headers from random bytes.
            let len = (rng.next() % 40) as usize;
            let mut kw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(first) = kw.first_mut() {
                *first %= 4;
            }
            for b in kw.iter_mut().skip(1).take(3) {
                *b = 0;
            }
            if let Ok(names) = parse_keywords_header(&kw) {
                assert!(names.iter().all(|n| !n.is_empty()));
            }
            // Layouts from random sizes and alignments.
            let n = (rng.next() % 6) as usize;
            let exts: Vec<(u16, u16)> = (0..n)
                .map(|_| {
                    let size = match rng.next() % 4 {
                        0 => 0,
                        1 => rng.next() as u16,
                        _ => (rng.next() % 20) as u16,
                    };
                    (size, (rng.next() % 10) as u16)
                })
                .collect();
            if let Some((offsets, size)) = layout_records(&exts) {
                assert!(size >= 8, "{exts:?} -> {size}");
                for ((s, a), off) in exts.iter().zip(&offsets) {
                    if *s > 0 {
                        assert!(*off >= 5 && u32::from(*off) + u32::from(*s) <= size);
                        assert_eq!(off % a, 0);
                    }
                }
            }
            // Headers with random values and random tails.
            let mut h = sample_header();
            h.header_size = (rng.next() % 400) as u32;
            h.record_size = (rng.next() % 64) as u32;
            h.messages_count = (rng.next() % 8) as u32;
            h.seen_messages_count = 0;
            let mut data = h.to_base_bytes().to_vec();
            let tail = (rng.next() % 300) as usize;
            data.extend((0..tail).map(|_| rng.next() as u8));
            parse_and_check(&data);
        }
    }
}
