//! Maildir: message file names, `dovecot-uidlist` and `dovecot-keywords`.
//!
//! Owns the byte-level grammar of these three things and nothing else: no paths, no
//! directory scans, no knowledge of `new/` versus `cur/`, no caching. Callers read the files
//! and hand over the bytes.
//!
//! Every rule follows Dovecot 2.3.19.1, `src/lib-storage/index/maildir/`:
//! `maildir-storage.h` (separators), `maildir-filename.c` (base, sizes),
//! `maildir-filename-flags.c` (flags), `maildir-uidlist.c`/`.h` (uidlist) and
//! `maildir-keywords.c` (keywords). Where Dovecot's code differs from the reference doc
//! (section 2) or from this module's original brief, the code wins and the comment says
//! "Dovecot:".
//!
//! Text files are split into lines the way `i_stream_read_next_line()` (`src/lib/istream.c`)
//! does it: a line ends at `\n`, one `\r` before the `\n` is dropped, a final line without
//! `\n` is not returned, and since Dovecot then treats the line as a C string, it ends at
//! the first NUL byte.

use std::collections::HashSet;

use super::{FormatError, MailFlags};

/// `MAILDIR_INFO_SEP` (`maildir-storage.h`): separates the base from the info.
const INFO_SEP: u8 = b':';
/// The separator used by builds patched for Windows/CIFS file systems, where `:` is not
/// allowed in file names. Only consulted when a name has no `:` at all.
const CIFS_INFO_SEP: u8 = b';';
/// `MAILDIR_FLAGS_SEP` / `MAILDIR_EXTRA_SEP` (`maildir-storage.h`).
const COMMA: u8 = b',';
/// `MAILDIR_MAX_KEYWORDS` (`maildir-storage.h`): keyword letters are `a`..=`z`.
const MAX_KEYWORDS: usize = 26;

/// Splits a Maildir file name into (base, info).
///
/// Separator: the first `:` (Dovecot's `MAILDIR_INFO_SEP`, at which
/// `maildir_filename_base_cmp()` stops) or, if there is no `:`, the first `;` (builds
/// patched for CIFS). Info is what follows the separator (`"2,FSab"`), or `None`.
pub fn split_name(name: &[u8]) -> (&[u8], Option<&[u8]>) {
    let sep = name
        .iter()
        .position(|&b| b == INFO_SEP)
        .or_else(|| name.iter().position(|&b| b == CIFS_INFO_SEP));
    match sep {
        Some(pos) => (
            name.get(..pos).unwrap_or(name),
            Some(name.get(pos + 1..).unwrap_or_default()),
        ),
        None => (name, None),
    }
}

/// Flags from the info part of a file name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameFlags {
    /// System flags: `D`=Draft `F`=Flagged `R`=Answered `S`=Seen `T`=Deleted. `P` (passed)
    /// and any other letter are ignored.
    pub flags: MailFlags,
    /// Bit `i` set = keyword letter `'a' + i`, `i` in `0..26`. Bits 26..32 are always clear.
    pub keywords: u32,
}

/// Parses info such as `b"2,FSab"` (as returned by [`split_name`]).
///
/// Only the first flag set counts: letters stop at the next `,` (`...;2,RDF,` is `RDF`), as
/// in `maildir_filename_flags_get()`. Info not starting with `"2,"` gives the default (no
/// flags).
///
/// Dovecot: `maildir_filename_flags_get()` finds the info with `strrchr()`, i.e. after the
/// **last** `:` of the name, while the base ends at the first. So if `info` itself contains
/// a `:`, only the part after its last `:` is parsed (`a:b:2,S` is Seen).
pub fn parse_info(info: &[u8]) -> NameFlags {
    let info = match info.iter().rposition(|&b| b == INFO_SEP) {
        Some(pos) => info.get(pos + 1..).unwrap_or_default(),
        None => info,
    };
    let mut out = NameFlags::default();
    let Some(letters) = info.strip_prefix(b"2,") else {
        return out;
    };
    for &c in letters.iter().take_while(|&&c| c != COMMA) {
        match c {
            b'D' => out.flags.insert(MailFlags::DRAFT),
            b'F' => out.flags.insert(MailFlags::FLAGGED),
            b'R' => out.flags.insert(MailFlags::ANSWERED),
            b'S' => out.flags.insert(MailFlags::SEEN),
            b'T' => out.flags.insert(MailFlags::DELETED),
            // Invariant: c - b'a' < 26, so the shift stays inside the u32.
            b'a'..=b'z' => out.keywords |= 1u32 << (c - b'a'),
            // `P` and unknown letters: ignored by Dovecot, kept in the name when it renames.
            _ => {}
        }
    }
    out
}

/// Dovecot's `maildir_filename_get_size()` (`maildir-filename.c`): finds the first
/// `,<key>=` and reads the digits after it, which must end at `,` or `:` or the end of the
/// input. Returns the number, or `None` when absent, badly terminated or overflowing `u64`
/// (Dovecot wraps around instead). `key` is `b'S'` (physical size) or `b'W'` (virtual size).
///
/// Dovecot: only the **first** `,<key>=` is looked at; an empty digit string counts as 0
/// (`,S=,W=5` gives `S` = 0), except when `,<key>=` is the very last thing in the input,
/// which gives `None`. Dovecot runs this scan over the whole file name, info included;
/// running it over the base from [`split_name`] gives the same answers except for a value
/// that is empty right before the info (`x,S=:2,` is 0 for the full name, `None` for the
/// base `x,S=`). A `;` does not end the digits: for CIFS-style names pass the base.
pub fn base_size(base: &[u8], key: u8) -> Option<u64> {
    let start = base.windows(3).position(|w| w == [COMMA, key, b'='])? + 3;
    let rest = base.get(start..)?;
    if rest.is_empty() {
        return None;
    }
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    match rest.get(digits) {
        None | Some(&INFO_SEP) | Some(&COMMA) => {}
        Some(_) => return None,
    }
    // Invariant: the first `digits` bytes are '0'..='9', so `c - b'0'` cannot underflow.
    rest.get(..digits)?.iter().try_fold(0u64, |n, &c| {
        n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

/// One record (line) of `dovecot-uidlist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidlistRecord {
    /// The message's IMAP UID; never 0 nor `u32::MAX`.
    pub uid: u32,
    /// File base name (no `:info`): `split_name(<file name in the record>).0`, so that it
    /// always equals the base [`split_name`] gives for the file in `new/` or `cur/`.
    /// Dovecot writes bases only, and `maildir_filename_base_cmp()` compares up to the first
    /// `:`; the difference is a name with `;` but no `:`, which a standard Dovecot build keeps
    /// whole (verified: it stores `200.M1P1.h;2,S` as the base). Never contains `/`.
    pub base: Vec<u8>,
    /// Extension `S`: physical size. `None` if absent or not a valid decimal number (Dovecot's
    /// `maildir_quick_size_lookup()` then ignores it).
    pub physical_size: Option<u64>,
    /// Extension `W`: virtual size (LF counted as CRLF). Same rules as `physical_size`.
    pub virtual_size: Option<u64>,
    /// Extension `G`: message GUID. `None` if absent or empty (Dovecot then uses the base).
    /// Bytes that are not UTF-8 are replaced with U+FFFD.
    pub guid: Option<String>,
}

/// A parsed `dovecot-uidlist` (format: header comment of `maildir-uidlist.c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uidlist {
    /// File format version: 1 or 3.
    pub version: u32,
    /// Header `V` (v3) or second header field (v1); never 0.
    pub uid_validity: u32,
    /// `max(header N, last record uid + 1)`: the header is not rewritten on append, so `N`
    /// is often stale. Never 0.
    pub next_uid: u32,
    /// Header `G`: 32 hex digits, exactly as written (Dovecot writes lowercase).
    pub mailbox_guid: Option<String>,
    /// Records in strictly increasing uid order, with unique bases: when a base appears
    /// twice, the later line wins and the earlier record is dropped.
    pub records: Vec<UidlistRecord>,
    /// Bytes consumed: up to and including the last `\n`. A following partial line is still
    /// being appended by Dovecot; parse again from the start once it is complete.
    pub complete_len: usize,
}

/// Iterator over the complete lines of a text file, see the module doc. Yields the offset
/// of each line's first byte and the line.
struct Lines<'a> {
    /// The whole input.
    data: &'a [u8],
    /// Offset of the next line; invariant: `pos <= data.len()`.
    pos: usize,
}

impl<'a> Lines<'a> {
    /// Lines of `data`, from its start.
    fn new(data: &'a [u8]) -> Self {
        Lines { data, pos: 0 }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8]);

    /// Next complete line, or `None` at the end or at a partial last line.
    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        let rest = self.data.get(start..)?;
        // No '\n': a partial last line, which Dovecot does not return.
        let nl = rest.iter().position(|&b| b == b'\n')?;
        self.pos = start + nl + 1;
        let mut line = rest.get(..nl)?;
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if let Some(nul) = line.iter().position(|&b| b == 0) {
            line = line.get(..nul)?;
        }
        Some((start, line))
    }
}

/// `str_to_uint()` (`src/lib/strnum.c`): the whole input must be 1+ ASCII digits and fit
/// in a `u32`.
fn parse_u32_exact(s: &[u8]) -> Option<u32> {
    parse_u64_exact(s).and_then(|n| u32::try_from(n).ok())
}

/// `str_to_uoff()` (`src/lib/strnum.c`): like [`parse_u32_exact`], for `u64`.
fn parse_u64_exact(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &c| {
        if c.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// Reads a run of leading ASCII digits as a `u32`. Returns the number (0 for no digits,
/// as Dovecot's loops do) and the rest, or an error if the digits overflow a `u32`.
fn leading_u32(s: &[u8]) -> Result<(u32, &[u8]), &'static str> {
    let len = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let (digits, rest) = s.split_at_checked(len).unwrap_or((s, &[]));
    // Invariant: every byte of `digits` is '0'..='9', so `c - b'0'` cannot underflow.
    let n = digits
        .iter()
        .try_fold(0u32, |n, &c| {
            n.checked_mul(10)?.checked_add(u32::from(c - b'0'))
        })
        .ok_or("number too large")?;
    Ok((n, rest))
}

/// Drops leading spaces (Dovecot's `while (*line == ' ') line++`).
fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    s.get(n..).unwrap_or_default()
}

/// Splits `s` at its first space: (up to the space, from the space on).
fn split_at_space(s: &[u8]) -> (&[u8], &[u8]) {
    let len = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
    s.split_at_checked(len).unwrap_or((s, &[]))
}

/// `sscanf(line, "%u", ...)` for the v1 header: skips C whitespace, then needs 1+ digits.
/// Dovecot: sscanf would also take a sign and wrap on overflow; both are refused here.
fn scan_u32(s: &[u8]) -> Option<(u32, &[u8])> {
    let ws = s
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | 0x0b | 0x0c | b'\r'))
        .count();
    let s = s.get(ws..)?;
    if !s.first()?.is_ascii_digit() {
        return None;
    }
    leading_u32(s).ok()
}

/// The fields of the header line.
struct UidlistHeader {
    /// 1 or 3.
    version: u32,
    /// Never 0.
    uid_validity: u32,
    /// The header's own next uid; never 0.
    next_uid: u32,
    /// Header `G`, validated as 32 hex digits.
    mailbox_guid: Option<String>,
}

/// `maildir_uidlist_read_header()` and `maildir_uidlist_read_v3_header()`.
fn parse_uidlist_header(line: &[u8]) -> Result<UidlistHeader, String> {
    // "<digit> " exactly: the version is a single digit followed by a space.
    let version = match line {
        [v @ b'0'..=b'9', b' ', ..] => u32::from(v - b'0'),
        _ => return Err("corrupted header (invalid version number)".into()),
    };
    let fields = line.get(2..).unwrap_or_default();
    let mut uid_validity = 0u32;
    let mut next_uid = 0u32;
    let mut mailbox_guid = None;
    match version {
        1 => {
            // "1 <uidvalidity> <nextuid>"; anything after the two numbers is ignored.
            let (v, rest) = scan_u32(fields).ok_or("corrupted header (version 1)")?;
            let (n, _) = scan_u32(rest).ok_or("corrupted header (version 1)")?;
            uid_validity = v;
            next_uid = n;
        }
        3 => {
            // "3 <key><value> ...": the key is one byte, the value runs to the next space.
            // A repeated key overrides the earlier one; unknown keys (P, ...) are ignored.
            let mut rest = fields;
            while let Some((&key, after)) = rest.split_first() {
                let (value, tail) = split_at_space(after);
                match key {
                    b'V' => {
                        uid_validity = parse_u32_exact(value).ok_or_else(|| {
                            format!("invalid UID_VALIDITY ({} bytes, not a number)", value.len())
                        })?;
                    }
                    b'N' => {
                        next_uid = parse_u32_exact(value).ok_or_else(|| {
                            format!("invalid NEXT_UID ({} bytes, not a number)", value.len())
                        })?;
                    }
                    b'G' => {
                        // `guid_128_from_string()`: exactly 32 hex digits, either case.
                        if value.len() != 32 || !value.iter().all(u8::is_ascii_hexdigit) {
                            return Err(format!(
                                "invalid mailbox GUID ({} bytes, not 32 hex digits)",
                                value.len()
                            ));
                        }
                        mailbox_guid = Some(String::from_utf8_lossy(value).into_owned());
                    }
                    _ => {}
                }
                rest = skip_spaces(tail);
            }
        }
        other => return Err(format!("unsupported version {other}")),
    }
    if uid_validity == 0 || next_uid == 0 {
        return Err(format!(
            "broken header (uidvalidity = {uid_validity}, next_uid = {next_uid})"
        ));
    }
    Ok(UidlistHeader {
        version,
        uid_validity,
        next_uid,
        mailbox_guid,
    })
}

/// `maildir_uidlist_next()` and `maildir_uidlist_read_extended()`: one record line.
/// `prev_uid` is the previous line's uid (0 before the first record).
/// One record line, and its base name as a slice of `line` (for the caller's duplicate
/// check without a copy).
fn parse_uidlist_record<'a>(
    line: &'a [u8],
    header: &UidlistHeader,
    prev_uid: u32,
) -> Result<(UidlistRecord, &'a [u8]), String> {
    let (uid, rest) = leading_u32(line)?;
    if uid == 0 || rest.first() != Some(&b' ') {
        return Err("invalid data (expected \"<uid> \")".into());
    }
    if uid <= prev_uid {
        return Err(format!("UIDs not ordered ({uid} <= {prev_uid})"));
    }
    if uid == u32::MAX {
        return Err(format!("UID too high ({uid})"));
    }
    if header.version == 1 && uid >= header.next_uid {
        return Err(format!(
            "UID larger than next_uid ({uid} >= {})",
            header.next_uid
        ));
    }
    let mut rest = skip_spaces(rest);
    // The extensions mailfs reads (`S`, `W`, `G`); `maildir_uidlist_lookup_ext()` returns
    // the first field with the key. No list per record: a large uidlist has a million.
    let mut size: Option<&[u8]> = None;
    let mut vsize: Option<&[u8]> = None;
    let mut guid: Option<&[u8]> = None;
    if header.version == 3 {
        // Fields run to the next space until one starts with ':'. Keys must be 'A'..='Z';
        // Dovecot drops other fields (and rewrites the file later) without failing.
        while let Some(&first) = rest.first() {
            if first == b':' {
                break;
            }
            let (field, tail) = split_at_space(rest);
            // Keys must be 'A'..='Z'; only the three read are kept.
            let slot = match field.split_first() {
                Some((b'S', _)) => Some(&mut size),
                Some((b'W', _)) => Some(&mut vsize),
                Some((b'G', _)) => Some(&mut guid),
                _ => None,
            };
            if let Some(slot) = slot {
                slot.get_or_insert(&field[1..]);
            }
            rest = skip_spaces(tail);
        }
        // The ':' is optional only in the sense that the loop above consumes everything
        // when it is missing, which leaves an empty file name: an error either way.
        rest = rest.strip_prefix(b":").unwrap_or(rest);
        if rest.is_empty() {
            return Err("invalid extended fields (no \":<filename>\")".into());
        }
    }
    // Dovecot: v1 does not check for an empty file name; such a record matches no file.
    if rest.contains(&b'/') {
        return Err("broken filename (it contains '/')".to_string());
    }
    // Same base rule as for directory entries, so that callers can match the two.
    let base = split_name(rest).0;
    let record = UidlistRecord {
        uid,
        base: base.to_vec(),
        physical_size: size.and_then(parse_u64_exact),
        virtual_size: vsize.and_then(parse_u64_exact),
        guid: guid
            .filter(|g| !g.is_empty())
            .map(|g| String::from_utf8_lossy(g).into_owned()),
    };
    Ok((record, base))
}

/// Parses `dovecot-uidlist` v1 or v3. A final line without `\n` is ignored (being appended).
///
/// Errors (offset = start of the bad line), each one a reason for which Dovecot's
/// `maildir_uidlist_update_read()` declares the whole file broken:
/// * empty file or no complete header line;
/// * header not `<digit> `, version other than 1 or 3;
/// * uidvalidity or next uid missing or 0 (Dovecot: a v3 header without `N` is an error),
///   a `V`/`N` value that is not a plain decimal `u32`, a `G` that is not 32 hex digits;
/// * a record that does not start with `<uid> `, uid 0 or `u32::MAX`, uids not strictly
///   increasing, a uid that overflows `u32`;
/// * (v3) a record without `:<filename>`; (v1, Dovecot) a uid `>=` the header's next uid;
/// * a file name containing `/`.
///
/// Unknown header keys and record extension keys are ignored, as are malformed `S`/`W`
/// values (they give `None`, as in Dovecot, instead of failing the file).
pub fn parse_uidlist(data: &[u8]) -> Result<Uidlist, FormatError> {
    let mut lines = Lines::new(data);
    let Some((header_offset, header_line)) = lines.next() else {
        let what = if data.is_empty() {
            "empty dovecot-uidlist"
        } else {
            "no complete header line"
        };
        return Err(FormatError::new(0, what));
    };
    let header =
        parse_uidlist_header(header_line).map_err(|what| FormatError::new(header_offset, what))?;

    // Invariant: `slots` is in uid order; a `None` is a record superseded by a later line
    // with the same base. `by_base` maps each base to the slot of its latest record.
    // Sized once from the line count: grown by doubling, a million-line uidlist spent a
    // tenth of its parse rehashing.
    let lines_left = data[header_line.len()..]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    let mut slots: Vec<Option<UidlistRecord>> = Vec::with_capacity(lines_left);
    let mut by_base: super::FnvMap<&[u8], usize> = super::FnvMap::default();
    by_base.reserve(lines_left);
    let mut last_uid = 0u32;
    for (offset, line) in lines.by_ref() {
        let (record, base) = parse_uidlist_record(line, &header, last_uid)
            .map_err(|what| FormatError::new(offset, what))?;
        last_uid = record.uid;
        if let Some(old) = by_base.insert(base, slots.len())
            && let Some(slot) = slots.get_mut(old)
        {
            *slot = None;
        }
        slots.push(Some(record));
    }
    // `lines` stopped at the end or at a partial line; either way it consumed exactly the
    // complete lines.
    let complete_len = lines.pos;

    // Invariant: last_uid < u32::MAX (checked per record), so the addition cannot fail.
    let next_uid = if header.next_uid <= last_uid {
        last_uid
            .checked_add(1)
            .ok_or_else(|| FormatError::new(0, "next_uid overflow"))?
    } else {
        header.next_uid
    };
    Ok(Uidlist {
        version: header.version,
        uid_validity: header.uid_validity,
        next_uid,
        mailbox_guid: header.mailbox_guid,
        records: slots.into_iter().flatten().collect(),
        complete_len,
    })
}

/// Keyword names from `dovecot-keywords`: `"<index> <name>\n"` lines, index 0..25 -> letters
/// a..z.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keywords {
    /// The file's name for each index, as raw bytes. A later line for the same index
    /// replaces the earlier one, as `array_idx_get_space()` does in Dovecot.
    slots: [Option<Vec<u8>>; MAX_KEYWORDS],
    /// Every name the file defined, ASCII-lowercased, including names whose slot a later
    /// line replaced: Dovecot's `strcasecmp` name hash, used to reject duplicates and to
    /// keep invented names unique.
    taken: HashSet<Vec<u8>>,
}

impl Keywords {
    /// Name for keyword index `index` (0..26): the file's name, or Dovecot's invented
    /// `"unknown-<index>"` (with `?` appended until unique, case-insensitively, against the
    /// file's names) when absent (`maildir_keywords_char_idx()`). Name bytes that are not
    /// UTF-8 are replaced with U+FFFD. An index >= 26 has no letter and always gets an
    /// invented name.
    pub fn name(&self, index: u8) -> String {
        if let Some(Some(name)) = self.slots.get(usize::from(index)) {
            return String::from_utf8_lossy(name).into_owned();
        }
        let mut name = format!("unknown-{index}");
        // Terminates: every round makes the name longer than the one before, and `taken`
        // is finite.
        while self.taken.contains(name.to_ascii_lowercase().as_bytes()) {
            name.push('?');
        }
        name
    }

    /// Names for every bit set in a [`NameFlags::keywords`] mask, in index order (a, b, c,
    /// ...). Bits 26 and above are ignored.
    pub fn names(&self, mask: u32) -> Vec<String> {
        (0..MAX_KEYWORDS as u8)
            .filter(|&i| mask & (1u32 << i) != 0)
            .map(|i| self.name(i))
            .collect()
    }
}

/// Parses `dovecot-keywords` following `maildir_keywords_sync()` (`maildir-keywords.c`).
/// Never fails; skipped lines are those without a space, with an index that is not a plain
/// decimal number or is >= 26, with an empty name, or whose name (compared
/// case-insensitively) an earlier line already defined. The name is everything after the
/// first space, spaces included.
///
/// Dovecot: a final line without `\n` is ignored, like every line-reading loop in Dovecot
/// (the file is always replaced by `rename()`, so it only happens to hand-edited files).
pub fn parse_keywords(data: &[u8]) -> Keywords {
    let mut keywords = Keywords::default();
    for (_, line) in Lines::new(data) {
        let Some(space) = line.iter().position(|&b| b == b' ') else {
            continue;
        };
        let (index, name) = match (line.get(..space), line.get(space + 1..)) {
            (Some(index), Some(name)) => (index, name),
            _ => continue,
        };
        let Some(index) = parse_u32_exact(index).and_then(|i| usize::try_from(i).ok()) else {
            continue;
        };
        if index >= MAX_KEYWORDS || name.is_empty() {
            continue;
        }
        if !keywords.taken.insert(name.to_ascii_lowercase()) {
            continue;
        }
        if let Some(slot) = keywords.slots.get_mut(index) {
            *slot = Some(name.to_vec());
        }
    }
    keywords
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::testutil::XorShift;

    const REAL_BASE: &[u8] = b"1795458248.M283031P21282.vm,S=97,W=104";

    /// System flags for a string of Maildir letters.
    fn flags(letters: &str) -> MailFlags {
        let mut f = MailFlags::default();
        for c in letters.chars() {
            f.insert(match c {
                'D' => MailFlags::DRAFT,
                'F' => MailFlags::FLAGGED,
                'R' => MailFlags::ANSWERED,
                'S' => MailFlags::SEEN,
                'T' => MailFlags::DELETED,
                _ => MailFlags::default(),
            });
        }
        f
    }

    /// Keyword mask for a string of keyword letters `a`..=`z`.
    fn kw(letters: &str) -> u32 {
        letters.bytes().fold(0, |m, c| m | (1 << (c - b'a')))
    }

    /// (name, expected base, expected info).
    type SplitCase = (&'static [u8], &'static [u8], Option<&'static [u8]>);

    /// Base/info splitting, including `;` names and degenerate names.
    #[test]
    fn split_name_table() {
        let cases: &[SplitCase] = &[
            (
                b"1795458248.M283031P21282.vm,S=97,W=104:2,DFRSab",
                REAL_BASE,
                Some(b"2,DFRSab"),
            ),
            // new/ without info.
            (REAL_BASE, REAL_BASE, None),
            // new/ after a flag change, and cur/ with empty flags.
            (
                b"1795460000.ext1.myhost:2,",
                b"1795460000.ext1.myhost",
                Some(b"2,"),
            ),
            (
                b"1035478339.27041_118.foo.org,S=1000,W=1030;2,RDF,",
                b"1035478339.27041_118.foo.org,S=1000,W=1030",
                Some(b"2,RDF,"),
            ),
            (b"a:b;c", b"a", Some(b"b;c")),
            (b"a;b:c", b"a;b", Some(b"c")),
            (b"a:b:2,S", b"a", Some(b"b:2,S")),
            (b"", b"", None),
            (b":2,S", b"", Some(b"2,S")),
            (b"x:", b"x", Some(b"")),
        ];
        for &(name, base, info) in cases {
            assert_eq!(
                split_name(name),
                (base, info),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }

    /// Flag letters, flag sets after the first, unknown letters, `P`.
    #[test]
    fn parse_info_table() {
        let cases: &[(&[u8], &str, &str)] = &[
            (b"2,DFRSab", "DFRS", "ab"),
            (b"2,RDF,", "RDF", ""),
            (b"2,T", "T", ""),
            (b"2,P", "", ""),
            (b"2,PS", "S", ""),
            (b"2,XYZ!S~", "S", ""),
            (b"2,S,ab", "S", ""),
            (b"2,S,T", "S", ""),
            (b"2,az", "", "az"),
            (
                b"2,abcdefghijklmnopqrstuvwxyz",
                "",
                "abcdefghijklmnopqrstuvwxyz",
            ),
            (b"2,", "", ""),
            (b"", "", ""),
            (b"1,S", "", ""),
            (b"2S", "", ""),
            (b"2;S", "", ""),
            (b" 2,S", "", ""),
            // Dovecot looks after the last ':' of the whole name.
            (b"b:2,S", "S", ""),
            (b"2,S:2,T", "T", ""),
            (b"2,S:x", "", ""),
        ];
        for &(info, f, k) in cases {
            let got = parse_info(info);
            let want = NameFlags {
                flags: flags(f),
                keywords: kw(k),
            };
            assert_eq!(got, want, "{}", String::from_utf8_lossy(info));
        }
        let (_, info) = split_name(b"1795458248.M283031P21282.vm,S=97,W=104:2,DFRSab");
        let nf = parse_info(info.unwrap_or_default());
        assert_eq!(
            nf.flags.names().collect::<Vec<_>>(),
            ["\\Answered", "\\Flagged", "\\Seen", "\\Draft"]
        );
        assert_eq!(nf.keywords, 0b11);
    }

    /// `,S=`/`,W=` lookup with Dovecot's quirks, and overflow.
    #[test]
    fn base_size_table() {
        let cases: &[(&[u8], u8, Option<u64>)] = &[
            (REAL_BASE, b'S', Some(97)),
            (REAL_BASE, b'W', Some(104)),
            (
                b"1795458248.M283031P21282.vm,S=97,W=104:2,DFRSab",
                b'W',
                Some(104),
            ),
            (b"1795458248.M283031P21282.vm,S=97:2,S", b'S', Some(97)),
            (b"1795460000.ext1.myhost", b'S', None),
            (b"1795460000.ext1.myhost", b'W', None),
            (b"x,S=12", b'W', None),
            (b"x,S=", b'S', None),
            (b"x,S=,W=5", b'S', Some(0)),
            (b"x,S=:2,", b'S', Some(0)),
            (b"x,S=12x", b'S', None),
            (b"x,S=12x,S=13", b'S', None),
            (b"x,S=-1", b'S', None),
            (b"x,S=12;2,S", b'S', None),
            (b"x,s=12", b'S', None),
            (b"x,S=18446744073709551615", b'S', Some(u64::MAX)),
            (b"x,S=18446744073709551616", b'S', None),
            (b"x,S=99999999999999999999999", b'S', None),
            (b"S=5", b'S', None),
            (b",S=5", b'S', Some(5)),
            (b"", b'S', None),
            (b",", b'S', None),
            (b",S", b'S', None),
        ];
        for &(base, key, want) in cases {
            let shown = String::from_utf8_lossy(base);
            assert_eq!(base_size(base, key), want, "{shown} {}", char::from(key));
        }
    }

    /// A record without extensions.
    fn rec(uid: u32, base: &str) -> UidlistRecord {
        UidlistRecord {
            uid,
            base: base.as_bytes().to_vec(),
            physical_size: None,
            virtual_size: None,
            guid: None,
        }
    }

    /// The verified v3 example from doc section 2.5.
    #[test]
    fn uidlist_verified_example() {
        let data = b"3 V1795458248 N8 G95e8de10c884046b2253000083ecc375\n\
                     1 :1795458248.M283031P21282.vm,S=97,W=104\n\
                     6 S107 :1795460000.ext1.myhost\n";
        let u = parse_uidlist(data).expect("valid");
        let mut six = rec(6, "1795460000.ext1.myhost");
        six.physical_size = Some(107);
        assert_eq!(
            u,
            Uidlist {
                version: 3,
                uid_validity: 1_795_458_248,
                next_uid: 8,
                mailbox_guid: Some("95e8de10c884046b2253000083ecc375".into()),
                records: vec![rec(1, "1795458248.M283031P21282.vm,S=97,W=104"), six],
                complete_len: data.len(),
            }
        );
    }

    /// v3 header and record extensions, known, unknown and malformed.
    #[test]
    fn uidlist_all_extensions() {
        let data = b"3 V7 N20 G95E8DE10C884046B2253000083ECC375 P%v.%u X?\n\
                     3 G0011223344 S100 W120 P0001 O5 Zz s9 :a,S=1\n\
                     4 W7 S8 S9 G :b\n\
                     5 Sx Wy :c:2,S\n\
                     9  Q  S1  :d e\n";
        let u = parse_uidlist(data).expect("valid");
        assert_eq!(
            u.mailbox_guid.as_deref(),
            Some("95E8DE10C884046B2253000083ECC375")
        );
        assert_eq!(u.next_uid, 20);
        let full = |uid, base: &str, s, w, g: Option<&str>| UidlistRecord {
            physical_size: s,
            virtual_size: w,
            guid: g.map(String::from),
            ..rec(uid, base)
        };
        let want = vec![
            full(3, "a,S=1", Some(100), Some(120), Some("0011223344")),
            full(4, "b", Some(8), Some(7), None),
            full(5, "c", None, None, None),
            full(9, "d e", Some(1), None, None),
        ];
        assert_eq!(u.records, want);
    }

    /// Stale `N`, a line being appended, CRLF.
    #[test]
    fn uidlist_stale_header_and_partial_line() {
        let head = b"3 V1795458248 N5\n5 :b5\n".as_slice();
        let u = parse_uidlist(head).expect("valid");
        assert_eq!((u.next_uid, u.records.len()), (6, 1));

        let mut grown = head.to_vec();
        grown.extend_from_slice(b"6 :b6\n7 :b7-being-writ");
        let u = parse_uidlist(&grown).expect("valid");
        assert_eq!(u.records, vec![rec(5, "b5"), rec(6, "b6")]);
        assert_eq!((u.next_uid, u.complete_len), (7, head.len() + 6));

        // A partial line that would be invalid is still just ignored.
        let u = parse_uidlist(b"3 V1 N2\n1 :a\n0 garbage").expect("valid");
        assert_eq!((u.records.len(), u.complete_len), (1, 13));
        // A header without records, with CRLF line ends.
        let u = parse_uidlist(b"3 V1 N1\r\n1 :a\r\n").expect("valid");
        assert_eq!((u.next_uid, u.records), (2, vec![rec(1, "a")]));
    }

    /// A base listed twice keeps only its later uid.
    #[test]
    fn uidlist_duplicate_base_later_line_wins() {
        let data = b"3 V1 N9\n1 :a\n2 :b\n3 S5 :a\n4 :c\n5 :a:2,S\n";
        let u = parse_uidlist(data).expect("valid");
        assert_eq!(u.records, vec![rec(2, "b"), rec(4, "c"), rec(5, "a")]);
        assert_eq!(u.next_uid, 9);
    }

    /// Files written by Dovecot 2.3.19.1 (imap SELECT on a Maildir whose `cur/` held the six
    /// names below and whose `dovecot-keywords` was `0 Unknown-1\n5 unknown-2?\n`). IMAP then
    /// reported UIDNEXT 7 although the header says N1, and these FLAGS per uid:
    /// 1 \Seen; 2 none; 3 \Answered \Flagged \Draft; 4 unknown-2 unknown-1?; 5 \Seen.
    #[test]
    fn real_dovecot_files() {
        let uidlist = b"3 V1795460813 N1 Gc9494b20cc8e046b9622000083ecc375\n\
                        1 :100.M1P1.h\n\
                        2 :200.M1P1.h;2,S\n\
                        3 :300.M1P1.h\n\
                        4 :400.M1P1.h,S=5,W=6\n\
                        5 :500.M1P1.h\n\
                        6 :600.M1P1.h,S=\n";
        let keywords = b"0 Unknown-1\n1 unknown-1?\n2 unknown-2\n5 unknown-2?\n";
        let names: &[&[u8]] = &[
            b"100.M1P1.h:b:2,S",
            b"200.M1P1.h;2,S",
            b"300.M1P1.h:2,RDF,",
            b"400.M1P1.h,S=5,W=6:2,Pcb",
            b"500.M1P1.h:2,S,T",
            b"600.M1P1.h,S=:2,a",
        ];
        let u = parse_uidlist(uidlist).expect("valid");
        assert_eq!(
            (u.uid_validity, u.next_uid, u.records.len()),
            (1_795_460_813, 7, 6)
        );
        let k = parse_keywords(keywords);
        let mut got = Vec::new();
        for (name, record) in names.iter().zip(&u.records) {
            let (base, info) = split_name(name);
            assert_eq!(base, record.base.as_slice());
            let nf = parse_info(info.unwrap_or_default());
            let mut all: Vec<String> = nf.flags.names().map(String::from).collect();
            all.extend(k.names(nf.keywords));
            got.push(all.join(" "));
        }
        // Uid 2 differs on purpose: mailfs reads `;2,S` as CIFS-style info (Seen); a standard
        // Dovecot build sees no info at all there. Uid 6 has keyword 'a' = "Unknown-1".
        let want = [
            "\\Seen",
            "\\Seen",
            "\\Answered \\Flagged \\Draft",
            "unknown-1? unknown-2",
            "\\Seen",
            "Unknown-1",
        ];
        assert_eq!(got, want);
        // Sizes: `,S=` right before the info counts as 0 for Dovecot (it scans the whole
        // name, and IMAP then failed on that message); the base alone gives None.
        assert_eq!(base_size(names[5], b'S'), Some(0));
        assert_eq!(base_size(&u.records[5].base, b'S'), None);
        assert_eq!(base_size(&u.records[3].base, b'W'), Some(6));
    }

    /// The old Courier-compatible v1 format.
    #[test]
    fn uidlist_version_1() {
        let data = b"1 1234 10\n1 1035478339.27041_118.foo.org\n5 other:2,S\n7  spaced name\n";
        let u = parse_uidlist(data).expect("valid");
        assert_eq!((u.version, u.uid_validity, u.next_uid), (1, 1234, 10));
        let want = vec![
            rec(1, "1035478339.27041_118.foo.org"),
            rec(5, "other"),
            rec(7, "spaced name"),
        ];
        assert_eq!(u.records, want);
        // v1 records are not parsed for extensions.
        let u = parse_uidlist(b"1 1 5\n2 S5 :x\n").expect("valid");
        assert_eq!(u.records, vec![rec(2, "S5 ")]);
        // Trailing header fields are ignored, as sscanf() does.
        assert!(parse_uidlist(b"1  7\t9 extra\n").is_ok());
    }

    /// Every reason to refuse the file, with the offset of the bad line.
    #[test]
    fn uidlist_errors() {
        // (input, offset of the error)
        let cases: &[(&[u8], u64)] = &[
            (b"", 0),
            (b"3 V1 N1", 0),
            (b"garbage\n", 0),
            (b"\n", 0),
            (b"3\n", 0),
            (b"3V1 N1\n", 0),
            (b"33 V1 N1\n", 0),
            (b"2 V1 N1\n", 0),
            (b"4 V1 N1\n", 0),
            (b"3 V1\n", 0),
            (b"3 N1\n", 0),
            (b"3 V0 N1\n", 0),
            (b"3 V1 N0\n", 0),
            (b"3 V N1\n", 0),
            (b"3 V1x N1\n", 0),
            (b"3 V4294967296 N1\n", 0),
            (b"3 V1 N1 Gxyz\n", 0),
            (b"3 V1 N1 G95e8de10c884046b2253000083ecc37\n", 0),
            (b"1 1\n", 0),
            (b"1 0 5\n", 0),
            (b"1 x 5\n", 0),
            (b"3 V1 N5\n2 :a\n1 :b\n", 13),
            (b"3 V1 N5\n2 :a\n2 :b\n", 13),
            (b"3 V1 N5\n0 :a\n", 8),
            (b"3 V1 N5\n1:a\n", 8),
            (b"3 V1 N5\n1\n", 8),
            (b"3 V1 N5\n\n", 8),
            (b"3 V1 N5\n x\n", 8),
            (b"3 V1 N5\n1 a\n", 8),
            (b"3 V1 N5\n1 S1:a\n", 8),
            (b"3 V1 N5\n1 :\n", 8),
            (b"3 V1 N5\n1 S5\n", 8),
            (b"3 V1 N5\n1 :a/b\n", 8),
            (b"3 V1 N5\n4294967295 :a\n", 8),
            (b"3 V1 N5\n4294967296 :a\n", 8),
            (b"3 V1 N5\n99999999999999999999 :a\n", 8),
            (b"1 1 5\n5 a\n", 6),
            (b"1 1 5\n1 a/b\n", 6),
        ];
        for &(data, offset) in cases {
            let shown = String::from_utf8_lossy(data);
            let err = parse_uidlist(data).expect_err(&shown);
            assert_eq!(err.offset, offset, "{shown}: {err}");
        }
    }

    /// A NUL byte ends the line, as Dovecot's C strings do.
    #[test]
    fn uidlist_nul_ends_a_line_like_a_c_string() {
        let u = parse_uidlist(b"3 V1 N5\0junk\n1 :abc\0def\n").expect("valid");
        assert_eq!(u.records, vec![rec(1, "abc")]);
    }

    /// The verified example from doc section 2.4, and masks.
    #[test]
    fn keywords_verified_example() {
        let k = parse_keywords(b"0 $Label1\n1 work\n");
        assert_eq!(k.name(0), "$Label1");
        assert_eq!(k.name(1), "work");
        assert_eq!(k.name(2), "unknown-2");
        assert_eq!(k.names(kw("abc")), ["$Label1", "work", "unknown-2"]);
        assert_eq!(k.names(0), Vec::<String>::new());
        assert_eq!(k.names(1 << 26 | 1 << 31 | 1), ["$Label1"]);
    }

    /// Lines Dovecot skips: duplicates, holes, bad or large indexes.
    #[test]
    fn keywords_skipped_lines() {
        let data = b"0 Work\n\
                     1 work\n\
                     2 with space\n\
                     3\n\
                     4 \n\
                     26 z\n\
                     99999999999 big\n\
                     -1 neg\n\
                     +5 plus\n\
                     x6 letter\n\
                     07 seven\n\
                     .customflags header\n\
                     25 last\r\n\
                     9 partial";
        let k = parse_keywords(data);
        let want: &[(u8, &str)] = &[
            (0, "Work"),
            (1, "unknown-1"),
            (2, "with space"),
            (3, "unknown-3"),
            (4, "unknown-4"),
            (5, "unknown-5"),
            (6, "unknown-6"),
            (7, "seven"),
            (9, "unknown-9"),
            (25, "last"),
            (26, "unknown-26"),
            (255, "unknown-255"),
        ];
        for &(i, name) in want {
            assert_eq!(k.name(i), name, "index {i}");
        }
    }

    /// Index reuse and the uniqueness of invented names.
    #[test]
    fn keywords_same_index_and_invented_names() {
        // A later line for the same index wins its slot, but the earlier name stays taken.
        let k = parse_keywords(b"0 first\n0 second\n1 FIRST\n");
        assert_eq!(
            (k.name(0), k.name(1)),
            ("second".into(), "unknown-1".into())
        );
        // Invented names dodge the file's names, case-insensitively.
        let k = parse_keywords(b"0 unknown-3\n1 UNKNOWN-3?\n2 unknown-4?\n");
        assert_eq!(k.name(3), "unknown-3??");
        assert_eq!(k.name(4), "unknown-4");
        assert_eq!(k.name(0), "unknown-3");
        // Non-UTF-8 bytes survive as U+FFFD; empty or missing files give invented names.
        assert_eq!(parse_keywords(b"0 caf\xe9\n").name(0), "caf\u{fffd}");
        assert_eq!(parse_keywords(b"").name(25), "unknown-25");
        assert_eq!(parse_keywords(b""), Keywords::default());
    }

    /// Exercises every parser on one input; the point is only that none panics.
    fn run_all(input: &[u8]) {
        let (base, info) = split_name(input);
        let nf = parse_info(info.unwrap_or(input));
        assert_eq!(nf.keywords >> 26, 0);
        let _ = base_size(base, b'S');
        let _ = base_size(input, b'W');
        if let Ok(u) = parse_uidlist(input) {
            assert!(u.uid_validity != 0 && u.next_uid != 0);
            assert!(u.complete_len <= input.len());
            assert!(
                u.records
                    .windows(2)
                    .all(|w| matches!(w, [a, b] if a.uid < b.uid))
            );
            assert!(u.records.iter().all(|r| r.uid < u.next_uid));
        }
        let k = parse_keywords(input);
        let _ = k.names(u32::MAX);
    }

    /// Truncations of valid inputs and pseudo-random bytes never panic.
    #[test]
    fn no_panic_sweep() {
        let valid: &[&[u8]] = &[
            b"3 V1795458248 N8 G95e8de10c884046b2253000083ecc375\n\
              1 :1795458248.M283031P21282.vm,S=97,W=104\n\
              6 S107 W110 G1234 P1 O2 :1795460000.ext1.myhost\n",
            b"1 1234 10\n1 1035478339.27041_118.foo.org\n5 other:2,S\n",
            b"0 $Label1\n1 work\n25 z\n",
            b"1795458248.M283031P21282.vm,S=97,W=104:2,DFRSab",
            b"1035478339.27041_118.foo.org,S=1000,W=1030;2,RDF,",
        ];
        for v in valid {
            for cut in 0..=v.len() {
                run_all(v.get(..cut).unwrap_or_default());
                run_all(v.get(cut..).unwrap_or_default());
            }
        }
        let alphabet = b"0123456789 :;,=\n\rVNGSWPO3 1 2aAbzZ/\x00\xff";
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for round in 0..4000 {
            let input = rng.bytes(64, alphabet, round % 2 == 1);
            run_all(&input);
            let mut framed = b"3 V1 N1\n".to_vec();
            framed.extend_from_slice(&input);
            run_all(&framed);
        }
    }
}
