//! The cache file `dovecot.index.cache`, and the offset encoding it shares with the
//! transaction log.
//!
//! Owns the byte layout of the cache: its header, the chain of field headers (which field
//! number means which name, type and size), and the per-message record chains with their
//! field values; plus typed access to the few fields mailfs reads from it. It does not
//! check the cache against the index (`indexid`, and `file_seq` against the `cache`
//! extension's `reset_id`): callers compare those before trusting any offset.
//!
//! Every rule follows Dovecot 2.3.19.1, `src/lib-index/`: `mail-cache-private.h`
//! (structures), `mail-cache.c` (`mail_cache_verify_header()`), `mail-cache-fields.c`
//! (`mail_cache_header_fields_get_offset()`, `mail_cache_header_fields_read()`),
//! `mail-cache-lookup.c` (`mail_cache_get_record()`, `mail_cache_lookup_iter_next()`) and
//! `mail-index-util.c` (`mail_index_offset_to_uint32()`); field types and sizes from
//! `src/lib-storage/index/index-mail.c` (`global_cache_fields`). Where Dovecot differs
//! from the reference doc (section 6) or this module is deliberately stricter, the comment
//! says "Dovecot:".
//!
//! Integers are little-endian (host order; the index's `compat_flags` is checked by the
//! caller) except the offset-encoded ones, see [`decode_offset`].

use std::collections::HashSet;

use super::{FormatError, le};

/// `MAIL_CACHE_MAJOR_VERSION` (`mail-cache-private.h`).
const MAJOR_VERSION: u8 = 1;
/// `sizeof(uoff_t)` on the 64-bit builds that wrote the file.
const SIZEOF_UOFF_T: u8 = 8;
/// `sizeof(struct mail_cache_header)`.
const HEADER_SIZE: usize = 32;
/// `sizeof(struct mail_cache_header_fields)`: next_offset, size, fields_count.
const FIELDS_HEADER_SIZE: usize = 12;
/// Bytes per field in a field header before the names: last_used u32, size u32, type u8,
/// decision u8 (`MAIL_CACHE_FIELD_NAMES(1) - MAIL_CACHE_FIELD_NAMES(0)`).
const FIELD_FIXED_BYTES: usize = 10;
/// `sizeof(struct mail_cache_record)`: prev_offset, size.
const RECORD_HEADER_SIZE: usize = 8;
/// Size of a variable-size field (`(uint32_t)-1`, `UINT_MAX` in Dovecot).
pub const VARIABLE_SIZE: u32 = u32::MAX;
/// `MAIL_CACHE_DECISION_FORCED` (`enum mail_cache_decision_type`, `mail-cache.h`).
const DECISION_FORCED: u8 = 0x80;

// Byte offsets inside `struct mail_cache_header` (`mail-cache-private.h`).
const OFF_MAJOR_VERSION: usize = 0;
const OFF_COMPAT_SIZEOF_UOFF_T: usize = 1;
const OFF_MINOR_VERSION: usize = 2;
const OFF_INDEXID: usize = 4;
const OFF_FILE_SEQ: usize = 8;
const OFF_CONTINUED_RECORD_COUNT: usize = 12;
const OFF_RECORD_COUNT: usize = 16;
const OFF_BACKWARDS_COMPAT_USED_FILE_SIZE: usize = 20;
const OFF_DELETED_RECORD_COUNT: usize = 24;
const OFF_FIELD_HEADER_OFFSET: usize = 28;

/// Decodes an offset-encoded u32 (`mail_index_offset_to_uint32()`, `mail-index-util.c`),
/// used by the cache's `field_header_offset` and `next_offset` and by the transaction log's
/// record sizes.
///
/// `b` is the 4 bytes in file order. Each must have bit 0x80 set, otherwise the value is
/// 0 ("not written yet"). The low 7 bits of each byte form a 28-bit number, most
/// significant byte first regardless of CPU, which is then multiplied by 4.
pub fn decode_offset(b: [u8; 4]) -> u32 {
    if b.iter().any(|&x| x & 0x80 == 0) {
        return 0;
    }
    let v = b
        .iter()
        .fold(0u32, |acc, &x| (acc << 7) | u32::from(x & 0x7f));
    // v < 2^28, so the result fits.
    v << 2
}

/// The cache file header (`struct mail_cache_header`, `mail-cache-private.h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHeader {
    /// Offset 0. Must be 1.
    pub major_version: u8,
    /// Offset 1. `sizeof(uoff_t)` of the writer; must be 8.
    pub compat_sizeof_uoff_t: u8,
    /// Offset 2. 1 since Dovecot 2.2; 0 for older files.
    pub minor_version: u8,
    /// Offset 4. Must equal the index's `indexid` (checked by the caller).
    pub indexid: u32,
    /// Offset 8. Changes on every purge; must equal the index's `cache` extension
    /// `reset_id`, otherwise no cache offset in the index is valid for this file (checked
    /// by the caller). Never 0.
    pub file_seq: u32,
    /// Offset 12. Records reached only through another record's `prev_offset`.
    pub continued_record_count: u32,
    /// Offset 16. Messages with cached data (unreliable in files from Dovecot <= 2.1).
    pub record_count: u32,
    /// Offset 20. Unused.
    pub backwards_compat_used_file_size: u32,
    /// Offset 24. Expunged messages whose data is still in the file.
    pub deleted_record_count: u32,
    /// Offset 28, decoded with [`decode_offset`]: where the first field header starts
    /// (0 = none written).
    pub field_header_offset: u32,
}

/// How a field's values are stored (`enum mail_cache_field_type`, `mail-cache.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheFieldType {
    /// 0: `MAIL_CACHE_FIELD_FIXED_SIZE`, always [`CacheField::size`] bytes.
    FixedSize,
    /// 1: `MAIL_CACHE_FIELD_VARIABLE_SIZE`, u32 length then data.
    VariableSize,
    /// 2: `MAIL_CACHE_FIELD_STRING`, u32 length then a string (usually NUL-terminated).
    String,
    /// 3: `MAIL_CACHE_FIELD_BITMASK`, fixed size; Dovecot ORs all values it finds.
    Bitmask,
    /// 4: `MAIL_CACHE_FIELD_HEADER`, u32 length then NUL-terminated u32 line numbers and
    /// header text.
    Header,
    /// Any other value. Never returned by [`parse_fields`], which refuses such fields.
    Unknown(u8),
}

impl CacheFieldType {
    /// The type for an on-disk type byte.
    pub fn from_byte(b: u8) -> CacheFieldType {
        match b {
            0 => CacheFieldType::FixedSize,
            1 => CacheFieldType::VariableSize,
            2 => CacheFieldType::String,
            3 => CacheFieldType::Bitmask,
            4 => CacheFieldType::Header,
            other => CacheFieldType::Unknown(other),
        }
    }

    /// True for the types whose values carry no length in records (`field_has_fixed_size()`,
    /// `mail-cache-fields.c`).
    pub fn is_fixed_size(self) -> bool {
        matches!(self, CacheFieldType::FixedSize | CacheFieldType::Bitmask)
    }
}

/// One field of the current field header (the arrays after `struct
/// mail_cache_header_fields`, `mail-cache-private.h`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheField {
    /// Field name, e.g. `date.received`, `hdr.Subject`. Unique (case-insensitively) and
    /// never empty. Bytes that are not UTF-8 become U+FFFD.
    pub name: String,
    /// Storage type.
    pub field_type: CacheFieldType,
    /// Bytes per value for fixed-size types; [`VARIABLE_SIZE`] (0xFFFFFFFF) for the
    /// others, whatever the file says, as Dovecot does.
    pub size: u32,
    /// Caching decision byte as in the file: 0 no, 1 temp, 2 yes, plus 0x80 if it was
    /// forced by configuration.
    pub decision: u8,
    /// When the field was last used (UNIX time; only roughly maintained).
    pub last_used: u32,
}

/// Parses the 32-byte cache header and checks it like `mail_cache_verify_header()`
/// (`mail-cache.c`): file at least 32 bytes, major version 1, `compat_sizeof_uoff_t` 8,
/// `file_seq` not 0. Comparing `indexid` with the index is left to the caller.
pub fn parse_cache_header(data: &[u8]) -> Result<CacheHeader, FormatError> {
    if data.len() < HEADER_SIZE {
        return Err(FormatError::new(
            data.len(),
            format!(
                "cache file is too small ({} bytes, the header is {HEADER_SIZE})",
                data.len()
            ),
        ));
    }
    let byte = |at: usize| data.get(at).copied().unwrap_or(0);
    let word = |at: usize| le::u32_at(data, at).unwrap_or(0);
    let header = CacheHeader {
        major_version: byte(OFF_MAJOR_VERSION),
        compat_sizeof_uoff_t: byte(OFF_COMPAT_SIZEOF_UOFF_T),
        minor_version: byte(OFF_MINOR_VERSION),
        indexid: word(OFF_INDEXID),
        file_seq: word(OFF_FILE_SEQ),
        continued_record_count: word(OFF_CONTINUED_RECORD_COUNT),
        record_count: word(OFF_RECORD_COUNT),
        backwards_compat_used_file_size: word(OFF_BACKWARDS_COMPAT_USED_FILE_SIZE),
        deleted_record_count: word(OFF_DELETED_RECORD_COUNT),
        field_header_offset: encoded_at(data, OFF_FIELD_HEADER_OFFSET).unwrap_or(0),
    };
    if header.major_version != MAJOR_VERSION {
        return Err(FormatError::new(
            OFF_MAJOR_VERSION,
            format!(
                "unsupported cache major version {} (expected {MAJOR_VERSION})",
                header.major_version
            ),
        ));
    }
    if header.compat_sizeof_uoff_t != SIZEOF_UOFF_T {
        return Err(FormatError::new(
            OFF_COMPAT_SIZEOF_UOFF_T,
            format!(
                "cache was written with {}-byte file offsets (expected {SIZEOF_UOFF_T}); \
                 Dovecot will rebuild it",
                header.compat_sizeof_uoff_t
            ),
        ));
    }
    if header.file_seq == 0 {
        return Err(FormatError::new(OFF_FILE_SEQ, "cache file_seq is 0"));
    }
    Ok(header)
}

/// Follows the field-header chain from `header.field_header_offset` (each `next_offset`
/// offset-encoded, strictly increasing, bounded by `data.len()`) and returns the fields of
/// the last (current) header, in order: a record's field number is a position in this
/// list.
///
/// Dovecot reads only the last header (`mail_cache_header_fields_read()`), and each new
/// header it writes repeats the previous fields in the same order before the new ones
/// (`mail_cache_header_fields_get()`), so older records keep their meaning.
///
/// Checks as in `mail_cache_header_fields_read()`: the header must exist and fit in the
/// file, `size` must hold the fixed arrays, names must be NUL-terminated inside `size`,
/// non-empty and unique (case-insensitively), types 0..=4, decisions 0..=2 (plus 0x80).
///
/// Dovecot: a type byte of exactly 5 passes Dovecot's check and then aborts it; it is
/// refused here. Files with minor version 0 may have decreasing `next_offset`s for Dovecot;
/// here they must always increase, which also rules out loops.
pub fn parse_fields(data: &[u8], header: &CacheHeader) -> Result<Vec<CacheField>, FormatError> {
    let mut offset = 0u32;
    let mut next = header.field_header_offset;
    let mut next_at = OFF_FIELD_HEADER_OFFSET;
    while next != 0 {
        if next <= offset {
            return Err(FormatError::new(
                next_at,
                format!(
                    "field header next_offset {next} does not increase (previous header at \
                     {offset}); the cache loops"
                ),
            ));
        }
        offset = next;
        let at = to_usize(offset);
        let Some(encoded) = encoded_at(data, at).filter(|_| fits(data, at, FIELDS_HEADER_SIZE))
        else {
            return Err(FormatError::new(
                next_at,
                format!(
                    "field header offset {offset} points outside the file ({} bytes)",
                    data.len()
                ),
            ));
        };
        next_at = at;
        next = encoded;
    }
    if offset == 0 {
        return Err(FormatError::new(
            OFF_FIELD_HEADER_OFFSET,
            "cache file has no field header",
        ));
    }
    parse_field_header(data, to_usize(offset))
}

/// Decodes the field header at `at` (`struct mail_cache_header_fields` and its arrays).
fn parse_field_header(data: &[u8], at: usize) -> Result<Vec<CacheField>, FormatError> {
    let size = le::u32_at(data, at.saturating_add(4)).unwrap_or(0);
    let count = le::u32_at(data, at.saturating_add(8)).unwrap_or(0);
    // Dovecot maps max(size, 12) bytes and only then checks size.
    let size_len = to_usize(size).max(FIELDS_HEADER_SIZE);
    let Some(area) = at.checked_add(size_len).and_then(|end| data.get(at..end)) else {
        return Err(FormatError::new(
            at.saturating_add(4),
            format!(
                "field header size {size} at offset {at} goes outside the file ({} bytes)",
                data.len()
            ),
        ));
    };
    let count_len = to_usize(count);
    let fixed_end = count_len
        .checked_mul(FIELD_FIXED_BYTES)
        .and_then(|n| n.checked_add(FIELDS_HEADER_SIZE));
    let Some(fixed_end) = fixed_end.filter(|&end| end <= to_usize(size)) else {
        return Err(FormatError::new(
            at.saturating_add(4),
            format!("field header size {size} is too small for {count} fields"),
        ));
    };
    let last_used_at = FIELDS_HEADER_SIZE;
    let sizes_at = last_used_at.saturating_add(count_len.saturating_mul(4));
    let types_at = sizes_at.saturating_add(count_len.saturating_mul(4));
    let decisions_at = types_at.saturating_add(count_len);
    let mut names_at = fixed_end;

    // `count_len` fields' fixed arrays fit in `data`, so this allocation is bounded.
    let mut fields = Vec::with_capacity(count_len);
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for i in 0..count_len {
        let file_at = |rel: usize| at.saturating_add(rel);
        let name_bytes = area.get(names_at..).unwrap_or_default();
        let name_len = name_bytes.iter().position(|&b| b == 0);
        let name = match name_len {
            Some(len) if len > 0 => name_bytes.get(..len).unwrap_or_default(),
            _ => {
                return Err(FormatError::new(
                    file_at(names_at),
                    format!("field header names are corrupted at field {i}"),
                ));
            }
        };
        let lower_name = name.to_ascii_lowercase();
        let name = String::from_utf8_lossy(name).into_owned();
        let type_at = types_at.saturating_add(i);
        let type_byte = area.get(type_at).copied().unwrap_or(u8::MAX);
        let field_type = CacheFieldType::from_byte(type_byte);
        if let CacheFieldType::Unknown(t) = field_type {
            return Err(FormatError::new(
                file_at(type_at),
                format!("cache field {name} has unknown type {t}"),
            ));
        }
        let decision_at = decisions_at.saturating_add(i);
        let decision = area.get(decision_at).copied().unwrap_or(u8::MAX);
        if decision & !DECISION_FORCED > 2 {
            return Err(FormatError::new(
                file_at(decision_at),
                format!("cache field {name} has invalid caching decision {decision:#x}"),
            ));
        }
        if !seen.insert(lower_name) {
            return Err(FormatError::new(
                file_at(names_at),
                format!("duplicated field in cache field header: {name}"),
            ));
        }
        let word_at = |base: usize| base.saturating_add(i.saturating_mul(4));
        let last_used = le::u32_at(area, word_at(last_used_at)).unwrap_or(0);
        let file_size = le::u32_at(area, word_at(sizes_at)).unwrap_or(0);
        let size = if field_type.is_fixed_size() {
            file_size
        } else {
            VARIABLE_SIZE
        };
        fields.push(CacheField {
            name,
            field_type,
            size,
            decision,
            last_used,
        });
        names_at = names_at
            .saturating_add(name_len.unwrap_or(0))
            .saturating_add(1);
    }
    Ok(fields)
}

/// The position of the field called `name` in `fields`, compared case-insensitively as
/// Dovecot's field name hash does.
pub fn find_field(fields: &[CacheField], name: &str) -> Option<u32> {
    let pos = fields
        .iter()
        .position(|f| f.name.eq_ignore_ascii_case(name))?;
    u32::try_from(pos).ok()
}

/// One message's cached values: walks the record chain from `offset` (the message's
/// `cache` extension value; 0 = nothing cached) through `prev_offset`, collecting (field
/// number, data bytes). Newer records come first; if a field appears twice, the first
/// (newest) wins.
///
/// Checks as in `mail_cache_get_record()` and `mail_cache_lookup_iter_next()`: offsets
/// 4-aligned and inside the file, record size at least 8 and inside the file, field
/// numbers below `fields.len()`, every value (and its padding to 4 bytes) inside its
/// record, and the record filled exactly.
///
/// Records of one chain must not overlap (Dovecot's loop detection,
/// `mail_cache_track_loops()`, which also keeps the work linear in the file size).
/// Dovecot: it relies on that check alone; here `prev_offset` must also strictly decrease
/// (records are only ever appended, so Dovecot never writes anything else).
/// For bitmask fields Dovecot ORs the values of all records together; only the newest one
/// is returned here.
pub fn record_fields<'a>(
    data: &'a [u8],
    offset: u32,
    fields: &[CacheField],
) -> Result<Vec<(u32, &'a [u8])>, FormatError> {
    let mut out: Vec<(u32, &'a [u8])> = Vec::new();
    let mut cur = offset;
    let mut came_from: Option<usize> = None;
    // mail_cache_track_loops(): records of one chain never overlap, so the bytes seen can
    // not exceed the span they cover. This also bounds the work to the file size.
    let mut span: Option<(usize, usize)> = None;
    let mut size_sum = 0usize;
    while cur != 0 {
        let rec_at = to_usize(cur);
        let blame = came_from.unwrap_or(rec_at.min(data.len()));
        if !cur.is_multiple_of(4) {
            return Err(FormatError::new(
                blame,
                format!("cache record offset {cur} is not 4-byte aligned"),
            ));
        }
        let rec_size = le::u32_at(data, rec_at.saturating_add(4));
        let prev = le::u32_at(data, rec_at);
        let (Some(prev), Some(rec_size)) = (prev, rec_size) else {
            return Err(FormatError::new(
                blame,
                format!(
                    "cache record offset {cur} points outside the file ({} bytes)",
                    data.len()
                ),
            ));
        };
        let rec_len = to_usize(rec_size);
        if rec_len < RECORD_HEADER_SIZE {
            return Err(FormatError::new(
                rec_at.saturating_add(4),
                format!("cache record at {cur} has invalid size {rec_size}"),
            ));
        }
        let Some(record) = rec_at
            .checked_add(rec_len)
            .and_then(|end| data.get(rec_at..end))
        else {
            return Err(FormatError::new(
                rec_at.saturating_add(4),
                format!("cache record at {cur} (size {rec_size}) goes outside the file"),
            ));
        };
        let rec_end = rec_at.saturating_add(rec_len);
        let (lo, hi) = span.map_or((rec_at, rec_end), |(lo, hi)| {
            (lo.min(rec_at), hi.max(rec_end))
        });
        span = Some((lo, hi));
        size_sum = size_sum.saturating_add(rec_len);
        if size_sum > hi.saturating_sub(lo) {
            return Err(FormatError::new(
                rec_at,
                format!("cache record at {cur} overlaps a newer record of the same message"),
            ));
        }
        collect_record(record, rec_at, fields, &mut out)?;
        if prev != 0 && prev >= cur {
            return Err(FormatError::new(
                rec_at,
                format!("cache record at {cur} links back to {prev}: the record chain loops"),
            ));
        }
        came_from = Some(rec_at);
        cur = prev;
    }
    Ok(out)
}

/// Collects the fields of one record (`mail_cache_lookup_iter_next()`); `record` is the
/// whole record, `rec_at` its file offset (for errors).
fn collect_record<'a>(
    record: &'a [u8],
    rec_at: usize,
    fields: &[CacheField],
    out: &mut Vec<(u32, &'a [u8])>,
) -> Result<(), FormatError> {
    let rec_len = record.len();
    let mut pos = RECORD_HEADER_SIZE;
    while pos != rec_len {
        let at = |p: usize| rec_at.saturating_add(p);
        let Some(field_no) = le::u32_at(record, pos) else {
            return Err(FormatError::new(
                at(pos),
                format!("cache record at {rec_at} has invalid size {rec_len}"),
            ));
        };
        let Some(field) = fields.get(to_usize(field_no)) else {
            return Err(FormatError::new(
                at(pos),
                format!(
                    "cache field number {field_no} is too large (the file has {} fields)",
                    fields.len()
                ),
            ));
        };
        pos = pos.saturating_add(4);
        let mut data_size = field.size;
        if data_size == VARIABLE_SIZE {
            let Some(size) = le::u32_at(record, pos) else {
                return Err(FormatError::new(
                    at(pos),
                    format!(
                        "cache record at {rec_at} ends inside the size of {}",
                        field.name
                    ),
                ));
            };
            data_size = size;
            pos = pos.saturating_add(4);
        }
        let len = to_usize(data_size);
        let value = pos.checked_add(len).and_then(|end| record.get(pos..end));
        let padded_end = len
            .checked_add(3)
            .map(|n| n & !3)
            .and_then(|n| n.checked_add(pos))
            .filter(|&end| end <= rec_len);
        let (Some(value), Some(padded_end)) = (value, padded_end) else {
            return Err(FormatError::new(
                at(pos),
                format!(
                    "cache value of {} ({data_size} bytes) continues outside its record \
                     at {rec_at}",
                    field.name
                ),
            ));
        };
        // A message has a handful of fields: a linear check beats hashing.
        if !out.iter().any(|(n, _)| *n == field_no) {
            out.push((field_no, value));
        }
        pos = padded_end;
    }
    Ok(())
}

/// Typed values of the cache fields mailfs uses; `None` where the message has no cached
/// value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachedMessage {
    /// `date.received`: fixed u32, UNIX time (IMAP INTERNALDATE).
    pub date_received: Option<u32>,
    /// `date.save`: fixed u32, UNIX time the message was saved.
    pub date_save: Option<u32>,
    /// `size.physical`: fixed u64, size as stored.
    pub size_physical: Option<u64>,
    /// `size.virtual`: fixed u64, size with CRLF line endings (RFC822.SIZE).
    pub size_virtual: Option<u64>,
    /// `guid`: string up to its NUL; ASCII hex (32 digits) for dbox, while Maildir would
    /// cache its base file name.
    pub guid: Option<String>,
}

/// One message's values of the fields in [`CachedMessage`], looked up by name (see
/// [`record_fields`] for `offset` and the checks).
///
/// A field whose type or size differs from what Dovecot registers for it
/// (`global_cache_fields` in `index-mail.c`: fixed 4 bytes for the dates, fixed 8 for the
/// sizes, string for `guid`) is an error, as Dovecot then treats the whole cache as
/// corrupted (`field_type_verify()`). A `guid` that is not UTF-8 is an error too.
pub fn cached_message(
    data: &[u8],
    offset: u32,
    fields: &[CacheField],
) -> Result<CachedMessage, FormatError> {
    let ids = FieldIds::resolve(fields).map_err(|mut e| {
        e.offset = u64::from(offset);
        e
    })?;
    cached_message_with(data, offset, fields, &ids)
}

/// The field numbers of the fields in [`CachedMessage`], looked up and type-checked once
/// per field list (see [`cached_message`] for the checks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldIds {
    date_received: Option<u32>,
    date_save: Option<u32>,
    size_physical: Option<u32>,
    size_virtual: Option<u32>,
    guid: Option<u32>,
}

impl FieldIds {
    /// Finds the fields by name and checks their registered types.
    pub fn resolve(fields: &[CacheField]) -> Result<FieldIds, FormatError> {
        let find = |name: &str, want: CacheFieldType, size: u32| {
            let Some(no) = find_field(fields, name) else {
                return Ok(None);
            };
            if let Some(field) = fields.get(to_usize(no))
                && (field.field_type != want || field.size != size)
            {
                return Err(FormatError::new(
                    0,
                    format!(
                        "cache field {name} has type {:?} size {}, but Dovecot stores it as \
                         {want:?} size {size}; the cache is corrupted",
                        field.field_type, field.size
                    ),
                ));
            }
            Ok(Some(no))
        };
        let fixed = CacheFieldType::FixedSize;
        Ok(FieldIds {
            date_received: find("date.received", fixed, 4)?,
            date_save: find("date.save", fixed, 4)?,
            size_physical: find("size.physical", fixed, 8)?,
            size_virtual: find("size.virtual", fixed, 8)?,
            guid: find("guid", CacheFieldType::String, VARIABLE_SIZE)?,
        })
    }
}

/// [`cached_message`] with the field numbers resolved beforehand.
pub fn cached_message_with(
    data: &[u8],
    offset: u32,
    fields: &[CacheField],
    ids: &FieldIds,
) -> Result<CachedMessage, FormatError> {
    let values = record_fields(data, offset, fields)?;
    typed_values(&values, offset, ids)
}

/// The [`CachedMessage`] of one message's collected field values.
fn typed_values(
    values: &[(u32, &[u8])],
    offset: u32,
    ids: &FieldIds,
) -> Result<CachedMessage, FormatError> {
    let value = |id: Option<u32>| {
        let id = id?;
        values.iter().find(|(n, _)| *n == id).map(|(_, v)| *v)
    };
    let guid = match value(ids.guid) {
        Some(v) => {
            let text = v.split(|&b| b == 0).next().unwrap_or_default();
            match std::str::from_utf8(text) {
                Ok(s) => Some(s.to_owned()),
                Err(_) => {
                    return Err(FormatError::new(
                        to_usize(offset),
                        "cached guid is not valid UTF-8",
                    ));
                }
            }
        }
        None => None,
    };
    Ok(CachedMessage {
        date_received: value(ids.date_received).and_then(|v| le::u32_at(v, 0)),
        date_save: value(ids.date_save).and_then(|v| le::u32_at(v, 0)),
        size_physical: value(ids.size_physical).and_then(|v| le::u64_at(v, 0)),
        size_virtual: value(ids.size_virtual).and_then(|v| le::u64_at(v, 0)),
        guid,
    })
}

/// Reads exactly `len` bytes of a file at `at`; `None` if they are not all there.
pub type ReadAt<'a> = &'a dyn Fn(u64, usize) -> Option<Vec<u8>>;

/// [`parse_fields`] for a file read piecewise through `read`, so that looking up a few
/// messages costs a few reads, not the whole file. The same checks, but for the
/// `next_offset` bound, which is the file's: a header that cannot be read is an error.
pub fn parse_fields_at(
    read: ReadAt<'_>,
    header: &CacheHeader,
) -> Result<Vec<CacheField>, FormatError> {
    let mut offset = 0u32;
    let mut next = header.field_header_offset;
    let mut next_at = OFF_FIELD_HEADER_OFFSET;
    let mut head = Vec::new();
    while next != 0 {
        if next <= offset {
            return Err(FormatError::new(
                next_at,
                format!("field header next_offset {next} does not increase; the cache loops"),
            ));
        }
        offset = next;
        head = read(u64::from(offset), FIELDS_HEADER_SIZE).ok_or_else(|| {
            FormatError::new(
                next_at,
                format!("field header offset {offset} is outside the file"),
            )
        })?;
        next_at = to_usize(offset);
        next = encoded_at(&head, 0).unwrap_or(0);
    }
    if offset == 0 {
        return Err(FormatError::new(
            OFF_FIELD_HEADER_OFFSET,
            "cache file has no field header",
        ));
    }
    let size = to_usize(le::u32_at(&head, 4).unwrap_or(0)).max(FIELDS_HEADER_SIZE);
    let area = read(u64::from(offset), size).ok_or_else(|| {
        FormatError::new(
            to_usize(offset).saturating_add(4),
            format!("field header size {size} at offset {offset} goes outside the file"),
        )
    })?;
    // Offsets in errors are relative to the header from here on.
    parse_field_header(&area, 0)
}

/// [`cached_message_with`] for a file read piecewise through `read`: follows the message's
/// record chain with one read per record header and one per record, with the same checks
/// (alignment, sizes, a strictly decreasing chain).
pub fn cached_message_at(
    read: ReadAt<'_>,
    offset: u32,
    fields: &[CacheField],
    ids: &FieldIds,
) -> Result<CachedMessage, FormatError> {
    let mut records: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut cur = offset;
    while cur != 0 {
        let rec_at = to_usize(cur);
        if !cur.is_multiple_of(4) {
            return Err(FormatError::new(
                rec_at,
                format!("cache record offset {cur} is not 4-byte aligned"),
            ));
        }
        let head = read(u64::from(cur), RECORD_HEADER_SIZE).ok_or_else(|| {
            FormatError::new(
                rec_at,
                format!("cache record offset {cur} is outside the file"),
            )
        })?;
        let (prev, rec_size) = (
            le::u32_at(&head, 0).unwrap_or(0),
            le::u32_at(&head, 4).unwrap_or(0),
        );
        let rec_len = to_usize(rec_size);
        if rec_len < RECORD_HEADER_SIZE {
            return Err(FormatError::new(
                rec_at.saturating_add(4),
                format!("cache record at {cur} has invalid size {rec_size}"),
            ));
        }
        let record = read(u64::from(cur), rec_len).ok_or_else(|| {
            FormatError::new(
                rec_at.saturating_add(4),
                format!("cache record at {cur} (size {rec_size}) goes outside the file"),
            )
        })?;
        if prev != 0 && prev >= cur {
            return Err(FormatError::new(
                rec_at,
                format!("cache record at {cur} links back to {prev}: the record chain loops"),
            ));
        }
        records.push((cur, record));
        cur = prev;
    }
    let mut values: Vec<(u32, &[u8])> = Vec::new();
    for (at, record) in &records {
        collect_record(record, to_usize(*at), fields, &mut values)?;
    }
    typed_values(&values, offset, ids)
}

/// The offset-encoded u32 at `at`, if the bytes are there.
fn encoded_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(decode_offset(bytes.try_into().ok()?))
}

/// True if `len` bytes starting at `at` are inside `data`.
fn fits(data: &[u8], at: usize, len: usize) -> bool {
    at.checked_add(len).is_some_and(|end| end <= data.len())
}

/// A file offset or size as usize (saturating on 16-bit targets).
fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::{parse_index, record_uid};
    use crate::format::testutil::dump_num;

    const MAILDIR_INDEX: &[u8] =
        include_bytes!("../../tests/fixtures/formats/maildir.dovecot.index");
    const MAILDIR_CACHE: &[u8] =
        include_bytes!("../../tests/fixtures/formats/maildir.dovecot.index.cache");
    const MAILDIR_DUMP: &str =
        include_str!("../../tests/fixtures/formats/maildir.dovecot.index.dump");
    const MDBOX_INDEX: &[u8] = include_bytes!("../../tests/fixtures/formats/mdbox.dovecot.index");
    const MDBOX_CACHE: &[u8] =
        include_bytes!("../../tests/fixtures/formats/mdbox.dovecot.index.cache");
    const MDBOX_DUMP: &str = include_str!("../../tests/fixtures/formats/mdbox.dovecot.index.dump");

    // ---- builders -------------------------------------------------------------------

    /// `mail_index_uint32_to_offset()`: the inverse of decode_offset.
    fn encode(n: u32) -> [u8; 4] {
        assert!(n < 0x4000_0000 && n.is_multiple_of(4));
        let v = n >> 2;
        [
            0x80 | ((v >> 21) & 0x7f) as u8,
            0x80 | ((v >> 14) & 0x7f) as u8,
            0x80 | ((v >> 7) & 0x7f) as u8,
            0x80 | (v & 0x7f) as u8,
        ]
    }

    /// A field for `field_header()`: (name, type byte, file size, decision).
    type F<'a> = (&'a str, u8, u32, u8);

    /// A field header (`struct mail_cache_header_fields` + arrays + names), padded to 4.
    fn field_header(next: u32, fields: &[F<'_>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&if next == 0 { [0; 4] } else { encode(next) });
        v.extend_from_slice(&[0; 4]); // size, patched below
        v.extend_from_slice(&(fields.len() as u32).to_le_bytes());
        for (i, _) in fields.iter().enumerate() {
            v.extend_from_slice(&(1_700_000_000 + i as u32).to_le_bytes());
        }
        for f in fields {
            v.extend_from_slice(&f.2.to_le_bytes());
        }
        v.extend(fields.iter().map(|f| f.1));
        v.extend(fields.iter().map(|f| f.3));
        for f in fields {
            v.extend_from_slice(f.0.as_bytes());
            v.push(0);
        }
        let size = v.len() as u32;
        v[4..8].copy_from_slice(&size.to_le_bytes());
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    /// A cache record: (field number, explicit size for variable fields, data).
    fn record(prev: u32, items: &[(u32, bool, &[u8])]) -> Vec<u8> {
        let mut v = prev.to_le_bytes().to_vec();
        v.extend_from_slice(&[0; 4]);
        for &(field, variable, data) in items {
            v.extend_from_slice(&field.to_le_bytes());
            if variable {
                v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
            v.extend_from_slice(data);
            v.resize(v.len().next_multiple_of(4), 0);
        }
        let size = v.len() as u32;
        v[4..8].copy_from_slice(&size.to_le_bytes());
        v
    }

    fn cache_header(field_header_offset: u32) -> Vec<u8> {
        let mut v = vec![1, 8, 1, 0];
        for word in [1_700_000_000u32, 1_700_000_001, 1, 2, 0, 0] {
            v.extend_from_slice(&word.to_le_bytes());
        }
        v.extend_from_slice(&encode(field_header_offset));
        v
    }

    const FIELDS_V1: &[F<'static>] = &[("date.received", 0, 4, 2), ("guid", 2, 0, 0x82)];
    const FIELDS_V2: &[F<'static>] = &[
        ("date.received", 0, 4, 2),
        ("guid", 2, 0, 0x82),
        ("size.virtual", 0, 8, 1),
        ("flags", 3, 4, 1),
    ];

    /// Header | field header v1 (-> v2) | old record | field header v2 | new record.
    /// Returns (file, offset of the new record, offset of the old record).
    fn sample() -> (Vec<u8>, u32, u32) {
        let mut v = cache_header(32);
        let fh1_len = field_header(0, FIELDS_V1).len() as u32;
        let old_at = 32 + fh1_len;
        let old = record(
            0,
            &[
                (0, false, &1_600_000_000u32.to_le_bytes()),
                (1, true, b"0123abcd\0"),
            ],
        );
        let fh2_at = old_at + old.len() as u32;
        v.extend_from_slice(&field_header(fh2_at, FIELDS_V1));
        v.extend_from_slice(&old);
        v.extend_from_slice(&field_header(0, FIELDS_V2));
        let new_at = v.len() as u32;
        v.extend_from_slice(&record(
            old_at,
            &[
                (2, false, &41u64.to_le_bytes()),
                (0, false, &1_650_000_000u32.to_le_bytes()),
                (3, false, &[0x30, 0, 0, 0]),
            ],
        ));
        (v, new_at, old_at)
    }

    fn fields_of(data: &[u8]) -> Result<Vec<CacheField>, FormatError> {
        parse_fields(data, &parse_cache_header(data)?)
    }

    fn patch(v: &mut [u8], at: usize, bytes: &[u8]) {
        v[at..at + bytes.len()].copy_from_slice(bytes);
    }

    // ---- decoding ---------------------------------------------------------------------

    #[test]
    fn offset_encoding() {
        assert_eq!(decode_offset([0x80, 0x80, 0x80, 0x84]), 16);
        assert_eq!(decode_offset([0x80, 0x80, 0x82, 0x80]), 1024);
        // 0x88808080 read as a little-endian u32 is the field_header_offset 32.
        assert_eq!(decode_offset(0x8880_8080u32.to_le_bytes()), 32);
        assert_eq!(decode_offset([0xff; 4]), 0x0fff_ffff << 2);
        for missing in 0..4 {
            let mut b = [0x81; 4];
            b[missing] = 0x7f;
            assert_eq!(decode_offset(b), 0);
        }
        assert_eq!(decode_offset([0; 4]), 0);
        for n in [4, 32, 304, 1 << 20, 0x3fff_fffc] {
            assert_eq!(decode_offset(encode(n)), n);
        }
    }

    #[test]
    fn cache_header_fields_and_errors() {
        let (data, _, _) = sample();
        let h = parse_cache_header(&data).unwrap();
        assert_eq!(
            h,
            CacheHeader {
                major_version: 1,
                compat_sizeof_uoff_t: 8,
                minor_version: 1,
                indexid: 1_700_000_000,
                file_seq: 1_700_000_001,
                continued_record_count: 1,
                record_count: 2,
                backwards_compat_used_file_size: 0,
                deleted_record_count: 0,
                field_header_offset: 32,
            }
        );
        let cases: &[(usize, &[u8], u64, &str)] = &[
            (0, &[2], 0, "major version 2"),
            (1, &[4], 1, "4-byte file offsets"),
            (8, &[0, 0, 0, 0], 8, "file_seq is 0"),
        ];
        for &(at, bytes, want_at, want) in cases {
            let mut d = data.clone();
            patch(&mut d, at, bytes);
            let e = parse_cache_header(&d).unwrap_err();
            assert_eq!(e.offset, want_at, "{e}");
            assert!(e.what.contains(want), "{e}");
        }
        let e = parse_cache_header(&data[..31]).unwrap_err();
        assert_eq!(e.offset, 31);
        assert!(e.what.contains("too small"));
    }

    // ---- field headers ----------------------------------------------------------------

    #[test]
    fn fields_come_from_the_last_header() {
        let (data, _, _) = sample();
        let fields = fields_of(&data).unwrap();
        let summary: Vec<(&str, CacheFieldType, u32, u8)> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.field_type, f.size, f.decision))
            .collect();
        assert_eq!(
            summary,
            [
                ("date.received", CacheFieldType::FixedSize, 4, 2),
                ("guid", CacheFieldType::String, VARIABLE_SIZE, 0x82),
                ("size.virtual", CacheFieldType::FixedSize, 8, 1),
                ("flags", CacheFieldType::Bitmask, 4, 1),
            ]
        );
        assert_eq!(fields[2].last_used, 1_700_000_002);
        assert_eq!(find_field(&fields, "GUID"), Some(1));
        assert_eq!(find_field(&fields, "date.save"), None);
        // The variable types ignore the file's size column, as Dovecot does.
        let mut v = cache_header(32);
        v.extend_from_slice(&field_header(
            0,
            &[("mime.parts", 1, 77, 0), ("hdr.To", 4, 5, 0)],
        ));
        let f = fields_of(&v).unwrap();
        assert_eq!((f[0].size, f[1].size), (VARIABLE_SIZE, VARIABLE_SIZE));
        assert_eq!(f[1].field_type, CacheFieldType::Header);
        // Zero fields is a valid (empty) header.
        let mut v = cache_header(32);
        v.extend_from_slice(&field_header(0, &[]));
        assert!(fields_of(&v).unwrap().is_empty());
        assert_eq!(CacheFieldType::from_byte(9), CacheFieldType::Unknown(9));
        assert!(!CacheFieldType::Header.is_fixed_size());
    }

    #[test]
    fn field_header_errors() {
        let one = |fields: &[F<'_>]| {
            let mut v = cache_header(32);
            v.extend_from_slice(&field_header(0, fields));
            v
        };
        let ok = one(FIELDS_V1);
        let mut cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
            (
                "no header",
                cache_header(0)[..28]
                    .iter()
                    .copied()
                    .chain([0; 4])
                    .collect(),
                28,
                "no field header",
            ),
            ("outside", cache_header(64), 28, "outside the file"),
            ("type 5", one(&[("a", 5, 4, 0)]), 52, "unknown type 5"),
            ("decision 3", one(&[("a", 0, 4, 3)]), 53, "decision 0x3"),
            (
                "decision 0x83",
                one(&[("a", 0, 4, 0x83)]),
                53,
                "decision 0x83",
            ),
            (
                "duplicate",
                one(&[("Guid", 2, 0, 0), ("guid", 2, 0, 0)]),
                69,
                "duplicated field",
            ),
            (
                "empty name",
                one(&[("", 0, 4, 0)]),
                54,
                "names are corrupted",
            ),
        ];
        let mut v = ok.clone();
        patch(&mut v, 36, &1000u32.to_le_bytes());
        cases.push(("size outside", v, 36, "outside the file"));
        let mut v = ok.clone();
        patch(&mut v, 36, &20u32.to_le_bytes());
        cases.push(("size small", v, 36, "too small for 2 fields"));
        let mut v = ok.clone();
        patch(&mut v, 40, &0x1000_0000u32.to_le_bytes());
        cases.push(("count huge", v, 36, "too small for 268435456"));
        let mut v = ok.clone();
        // Cut the size so the last name loses its NUL.
        let size = le::u32_at(&v, 36).unwrap();
        patch(&mut v, 36, &(size - 1).to_le_bytes());
        cases.push((
            "no NUL",
            v,
            32 + 12 + 20 + 14,
            "names are corrupted at field 1",
        ));
        // next_offset loops back to itself, or goes backwards.
        let mut v = ok.clone();
        patch(&mut v, 32, &encode(32));
        cases.push(("self loop", v, 32, "does not increase"));
        let mut v = ok.clone();
        v.extend_from_slice(&field_header(32, FIELDS_V1));
        let second = ok.len() as u32;
        patch(&mut v, 32, &encode(second));
        cases.push(("backwards", v, second as u64, "does not increase"));
        let mut v = ok.clone();
        patch(&mut v, 32, &encode(4096));
        cases.push(("next outside", v, 32, "points outside"));
        for (name, data, want_at, want) in cases {
            let e = fields_of(&data).expect_err(name);
            assert_eq!(e.offset, want_at, "{name}: {e}");
            assert!(e.what.contains(want), "{name}: {e}");
        }
    }

    // ---- records ----------------------------------------------------------------------

    #[test]
    fn record_chain_newest_first() {
        let (data, new_at, old_at) = sample();
        let fields = fields_of(&data).unwrap();
        let got = record_fields(&data, new_at, &fields).unwrap();
        let size = 41u64.to_le_bytes();
        let date = 1_650_000_000u32.to_le_bytes();
        let want: Vec<(u32, &[u8])> = vec![
            (2, &size),
            (0, &date),
            (3, &[0x30, 0, 0, 0]),
            (1, b"0123abcd\0"),
        ];
        assert_eq!(got, want);
        // The older record alone still has its own date.
        let old = record_fields(&data, old_at, &fields).unwrap();
        assert_eq!(old[0], (0, &1_600_000_000u32.to_le_bytes()[..]));
        assert!(record_fields(&data, 0, &fields).unwrap().is_empty());

        let m = cached_message(&data, new_at, &fields).unwrap();
        assert_eq!(
            m,
            CachedMessage {
                date_received: Some(1_650_000_000),
                date_save: None,
                size_physical: None,
                size_virtual: Some(41),
                guid: Some("0123abcd".into()),
            }
        );
        assert_eq!(
            cached_message(&data, 0, &fields).unwrap(),
            CachedMessage::default()
        );
    }

    #[test]
    fn piecewise_reads_refuse_what_whole_reads_refuse() {
        let (data, new_at, _) = sample();
        let fields = fields_of(&data).unwrap();
        let ids = FieldIds::resolve(&fields).unwrap_or_default();
        let cuts = [
            new_at as usize + 4,
            new_at as usize + 9,
            data.len() - 1,
            data.len(),
        ];
        for cut in cuts {
            let d = &data[..cut];
            let read = |at: u64, len: usize| {
                let at = usize::try_from(at).ok()?;
                d.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
            };
            let whole = cached_message_with(d, new_at, &fields, &ids);
            let piece = cached_message_at(&read, new_at, &fields, &ids);
            assert_eq!(
                whole.is_ok(),
                piece.is_ok(),
                "cut at {cut}: {whole:?} / {piece:?}"
            );
            if let (Ok(w), Ok(p)) = (whole, piece) {
                assert_eq!(w, p);
            }
        }
        let read = |at: u64, len: usize| {
            let at = usize::try_from(at).ok()?;
            data.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
        };
        assert!(cached_message_at(&read, new_at + 2, &fields, &ids).is_err());
    }

    #[test]
    fn record_errors() {
        let (data, new_at, old_at) = sample();
        let fields = fields_of(&data).unwrap();
        let new = new_at as usize;
        let old = old_at as usize;
        let len = data.len();
        let mut cases: Vec<(&str, Vec<u8>, u32, u64, &str)> = vec![
            (
                "misaligned",
                data.clone(),
                new_at + 2,
                (new + 2) as u64,
                "not 4-byte aligned",
            ),
            (
                "outside",
                data.clone(),
                4096,
                len as u64,
                "points outside the file",
            ),
            (
                "header cut",
                data[..new + 6].to_vec(),
                new_at,
                new as u64,
                "points outside",
            ),
        ];
        let mut v = data.clone();
        patch(&mut v, new + 4, &4u32.to_le_bytes());
        cases.push(("size < 8", v, new_at, (new + 4) as u64, "invalid size 4"));
        let mut v = data.clone();
        patch(&mut v, new + 4, &4000u32.to_le_bytes());
        cases.push((
            "size > file",
            v,
            new_at,
            (new + 4) as u64,
            "goes outside the file",
        ));
        let mut v = data.clone();
        patch(&mut v, new + 8, &4u32.to_le_bytes());
        cases.push((
            "field no",
            v,
            new_at,
            (new + 8) as u64,
            "field number 4 is too large",
        ));
        // A fixed field whose value does not fit: shrink the record by 4.
        let mut v = data.clone();
        let size = le::u32_at(&v, new + 4).unwrap();
        patch(&mut v, new + 4, &(size - 4).to_le_bytes());
        cases.push((
            "value out",
            v,
            new_at,
            (new + 32) as u64,
            "flags (4 bytes) continues",
        ));
        // Two bytes left over after the last field.
        let mut v = data.clone();
        v.extend_from_slice(&[0; 4]);
        patch(&mut v, new + 4, &(size + 2).to_le_bytes());
        cases.push((
            "leftover",
            v,
            new_at,
            (new + size as usize) as u64,
            "invalid size",
        ));
        // The variable guid's length does not fit / its size word is missing.
        let mut v = data.clone();
        patch(&mut v, old + 20, &100u32.to_le_bytes());
        cases.push((
            "var too long",
            v,
            old_at,
            (old + 24) as u64,
            "guid (100 bytes)",
        ));
        let mut v = data.clone();
        patch(&mut v, old + 4, &20u32.to_le_bytes());
        cases.push((
            "var no size",
            v,
            old_at,
            (old + 20) as u64,
            "inside the size of guid",
        ));
        // Padding counts: the 9-byte guid needs 12 bytes, so a 34-byte record is short.
        let mut v = data.clone();
        patch(&mut v, old + 4, &34u32.to_le_bytes());
        cases.push(("padding", v, old_at, (old + 24) as u64, "continues outside"));
        // Loops: a record pointing at itself or forward.
        let mut v = data.clone();
        patch(&mut v, old, &old_at.to_le_bytes());
        cases.push(("self loop", v, new_at, old as u64, "loops"));
        let mut v = data.clone();
        patch(&mut v, new, &new_at.to_le_bytes());
        cases.push(("forward", v, new_at, new as u64, "loops"));
        // An older record whose size reaches into the newer one.
        let mut v = data.clone();
        patch(&mut v, old + 4, &(new_at - old_at + 8).to_le_bytes());
        cases.push(("overlap", v, new_at, old as u64, "overlaps"));
        let mut v = data.clone();
        patch(&mut v, new, &(old_at + 2).to_le_bytes());
        cases.push(("bad prev", v, new_at, new as u64, "not 4-byte aligned"));
        for (name, data, offset, want_at, want) in cases {
            let e = record_fields(&data, offset, &fields).expect_err(name);
            assert_eq!(e.offset, want_at, "{name}: {e}");
            assert!(e.what.contains(want), "{name}: {e}");
            assert!(cached_message(&data, offset, &fields).is_err(), "{name}");
        }
    }

    #[test]
    fn typed_access_checks_types() {
        let (data, new_at, _) = sample();
        let mut fields = fields_of(&data).unwrap();
        fields[0].field_type = CacheFieldType::Bitmask;
        let e = cached_message(&data, new_at, &fields).unwrap_err();
        assert!(e.what.contains("date.received"), "{e}");
        let mut fields = fields_of(&data).unwrap();
        fields[1].field_type = CacheFieldType::VariableSize;
        let e = cached_message(&data, new_at, &fields).unwrap_err();
        assert!(e.what.contains("guid"), "{e}");
        // A guid that is not UTF-8.
        let (mut data, new_at, old_at) = sample();
        data[old_at as usize + 24] = 0xff;
        let fields = fields_of(&data).unwrap();
        let e = cached_message(&data, new_at, &fields).unwrap_err();
        assert!(e.what.contains("UTF-8"), "{e}");
        // A guid without NUL is taken whole.
        let (mut data, new_at, old_at) = sample();
        data[old_at as usize + 32] = b'e';
        let fields = fields_of(&data).unwrap();
        let m = cached_message(&data, new_at, &fields).unwrap();
        assert_eq!(m.guid.as_deref(), Some("0123abcde"));
    }

    // ---- golden files -----------------------------------------------------------------

    /// Compares the cache header, the field list, and every message's cached fields and
    /// typed values with `doveadm dump` of the index (which prints the cache too).
    fn check_against_dump(index: &[u8], cache: &[u8], dump: &str) -> Vec<CachedMessage> {
        let index = parse_index(index).unwrap();
        let h = parse_cache_header(cache).unwrap();
        let fields = parse_fields(cache, &h).unwrap();
        let (_, cache_ext) = index.find_ext("cache").unwrap();
        assert_eq!(
            cache_ext.reset_id, h.file_seq,
            "cache belongs to this index"
        );
        assert_eq!(index.header.indexid, h.indexid);

        let section = dump.split("\n-- CACHE: ").nth(1).unwrap();
        let section = section.split("\n-- RECORDS: ").next().unwrap();
        let nums: [(&str, u64); 9] = [
            ("major version", h.major_version.into()),
            ("minor version", h.minor_version.into()),
            ("indexid", h.indexid.into()),
            ("file_seq", h.file_seq.into()),
            ("continued_record_count", h.continued_record_count.into()),
            ("record_count", h.record_count.into()),
            (
                "used_file_size (old)",
                h.backwards_compat_used_file_size.into(),
            ),
            ("deleted_record_count", h.deleted_record_count.into()),
            ("field_header_offset", h.field_header_offset.into()),
        ];
        for (key, value) in nums {
            assert_eq!(dump_num(section, key), value, "{key}");
        }
        let rows: Vec<Vec<&str>> = section
            .split(" #  Name")
            .nth(1)
            .unwrap()
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), fields.len());
        for (i, (row, f)) in rows.iter().zip(&fields).enumerate() {
            assert_eq!(row[0], format!("{i}:"));
            assert_eq!(row[1], f.name);
            let ty = match f.field_type {
                CacheFieldType::FixedSize => "fix",
                CacheFieldType::VariableSize => "var",
                CacheFieldType::String => "str",
                CacheFieldType::Bitmask => "bit",
                CacheFieldType::Header => "hdr",
                CacheFieldType::Unknown(_) => "?",
            };
            assert_eq!(row[2], ty, "{}", f.name);
            let size = if f.size == VARIABLE_SIZE {
                "-".to_owned()
            } else {
                f.size.to_string()
            };
            assert_eq!(row[3], size, "{}", f.name);
            let dec = ["no", "tmp", "yes"][usize::from(f.decision & 0x7f)];
            assert_eq!(row[4].trim_end_matches('!'), dec, "{}", f.name);
        }

        // Records: the first value of each field, in dump order, and the typed values.
        let records = dump.split("\n-- RECORDS: ").nth(1).unwrap();
        let blocks: Vec<&str> = records.split("RECORD: ").skip(1).collect();
        assert_eq!(blocks.len(), index.records.len());
        let mut out = Vec::new();
        for (block, rec) in blocks.iter().zip(&index.records) {
            let offset = le::u32_exact(cache_ext.record_data(rec).unwrap()).unwrap();
            let mut dumped: Vec<(&str, &str)> = Vec::new();
            for line in block.lines() {
                let Some((name, value)) =
                    line.strip_prefix("    - ").and_then(|l| l.split_once(": "))
                else {
                    continue;
                };
                if !dumped.iter().any(|(n, _)| *n == name) {
                    dumped.push((name, value));
                }
            }
            let got = record_fields(cache, offset, &fields).unwrap();
            let got_names: Vec<&str> = got
                .iter()
                .map(|(n, _)| fields[*n as usize].name.as_str())
                .collect();
            let dumped_names: Vec<&str> = dumped.iter().map(|(n, _)| *n).collect();
            assert_eq!(got_names, dumped_names, "uid {:?}", record_uid(rec));

            let m = cached_message(cache, offset, &fields).unwrap();
            // Read piecewise, the same values.
            let read = |at: u64, len: usize| {
                let at = usize::try_from(at).ok()?;
                cache.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
            };
            let header = parse_cache_header(cache).unwrap();
            let fields_at = parse_fields_at(&read, &header).unwrap();
            assert_eq!(fields_at, fields);
            let ids = FieldIds::resolve(&fields).unwrap();
            assert_eq!(
                cached_message_at(&read, offset, &fields_at, &ids).unwrap(),
                m,
                "piecewise read of uid {:?}",
                record_uid(rec)
            );
            let num = |name: &str| {
                dumped.iter().find(|(n, _)| *n == name).map(|(_, v)| {
                    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse::<u64>().unwrap()
                })
            };
            assert_eq!(m.date_received.map(u64::from), num("date.received"));
            assert_eq!(m.date_save.map(u64::from), num("date.save"));
            assert_eq!(m.size_physical, num("size.physical"));
            assert_eq!(m.size_virtual, num("size.virtual"));
            let guid = dumped
                .iter()
                .find(|(n, _)| *n == "guid")
                .map(|(_, v)| v.to_string());
            assert_eq!(m.guid, guid);
            out.push(m);
        }
        out
    }

    /// Maildir: one field header of 16 fields; each message has two records (flags and
    /// mime.parts, then the dates).
    #[test]
    fn golden_maildir_cache() {
        let msgs = check_against_dump(MAILDIR_INDEX, MAILDIR_CACHE, MAILDIR_DUMP);
        assert_eq!(msgs.len(), 4);
        assert!(msgs.iter().all(|m| m.date_received == Some(1_795_461_289)));
        assert!(
            msgs.iter()
                .all(|m| m.guid.is_none() && m.size_virtual.is_none())
        );
    }

    /// mdbox after one purge: a chain of three field headers (6, 7, 8 fields); guid,
    /// sizes and dates cached, uid 4 without size.virtual.
    #[test]
    fn golden_mdbox_cache() {
        let h = parse_cache_header(MDBOX_CACHE).unwrap();
        assert_eq!(h.field_header_offset, 304);
        // The chain: 304 -> 440 -> 688.
        assert_eq!(
            decode_offset(MDBOX_CACHE[304..308].try_into().unwrap()),
            440
        );
        assert_eq!(
            decode_offset(MDBOX_CACHE[440..444].try_into().unwrap()),
            688
        );
        let msgs = check_against_dump(MDBOX_INDEX, MDBOX_CACHE, MDBOX_DUMP);
        assert_eq!(
            msgs[0].guid.as_deref(),
            Some("08858726b690046b7362000083ecc375")
        );
        assert_eq!(
            (msgs[0].size_physical, msgs[0].size_virtual),
            (Some(37), Some(41))
        );
        assert_eq!(
            (msgs[2].size_physical, msgs[2].size_virtual),
            (Some(31), None)
        );
        assert_eq!(msgs[2].date_save, Some(1_795_461_302));
    }

    // ---- robustness -------------------------------------------------------------------

    /// Every parser on one cache file, with the given record offsets; must never panic.
    fn run_all(data: &[u8], offsets: &[u32]) {
        let Ok(h) = parse_cache_header(data) else {
            return;
        };
        let Ok(fields) = parse_fields(data, &h) else {
            return;
        };
        for &offset in offsets {
            if let Ok(values) = record_fields(data, offset, &fields) {
                let mut seen = HashSet::new();
                for (n, _) in &values {
                    assert!((*n as usize) < fields.len() && seen.insert(*n));
                }
            }
            let _ = cached_message(data, offset, &fields);
        }
    }

    fn cache_offsets(index: &[u8]) -> Vec<u32> {
        let f = parse_index(index).unwrap();
        let (_, e) = f.find_ext("cache").unwrap();
        f.records
            .iter()
            .map(|r| le::u32_exact(e.record_data(r).unwrap()).unwrap())
            .collect()
    }

    /// Every truncation and single-bit flip of the real cache files (and the synthetic one).
    #[test]
    fn no_panic_sweep_real_files() {
        let (sample, new_at, old_at) = sample();
        let files = [
            (MAILDIR_CACHE, cache_offsets(MAILDIR_INDEX)),
            (MDBOX_CACHE, cache_offsets(MDBOX_INDEX)),
            (&sample[..], vec![new_at, old_at]),
        ];
        for (file, offsets) in files {
            for cut in 0..=file.len() {
                run_all(&file[..cut], &offsets);
            }
            let mut data = file.to_vec();
            for i in 0..data.len() {
                for bit in 0..8 {
                    data[i] ^= 1 << bit;
                    run_all(&data, &offsets);
                    data[i] ^= 1 << bit;
                }
            }
        }
    }

    /// Arbitrary offsets into the real files, and random bytes after a valid header.
    #[test]
    fn no_panic_sweep_random() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for file in [MAILDIR_CACHE, MDBOX_CACHE] {
            let offsets: Vec<u32> = (0..=file.len() as u32 + 8).collect();
            run_all(file, &offsets);
            run_all(file, &[u32::MAX, u32::MAX - 3, 0x8000_0000]);
        }
        for _ in 0..3000 {
            let mut data = cache_header(32);
            let len = (next() % 200) as usize;
            data.extend((0..len).map(|_| next() as u8));
            if len > 12 {
                // Keep the field count small so the header is sometimes valid.
                data[40] %= 4;
                data[41..44].fill(0);
            }
            let offsets: Vec<u32> = (0..6).map(|_| (next() % 260) as u32).collect();
            run_all(&data, &offsets);
        }
    }
}
