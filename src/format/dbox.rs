//! dbox mail files: sdbox `u.<uid>` and mdbox `m.<file_id>`.
//!
//! Owns the byte-level grammar of one dbox file and nothing else: no paths, no ALT
//! fallback, no map index, no attachment files. Callers read (or mmap) the file and hand
//! over all of its bytes; every offset in a result or a [`FormatError`] is a byte offset
//! into that file.
//!
//! Layout (Dovecot 2.3.19.1, `src/lib-storage/index/dbox-common/dbox-file.h`):
//!
//! ```text
//! file header line    "2 M1e C6b0484ac\n"                 (dbox_file_header_write)
//! then per message:
//!   message header    30 bytes, struct dbox_message_header:
//!                     01 02 'N' ' ' <8 spaces> ' ' <16 hex digits: body size> '\n'
//!   body              exactly <body size> bytes, LF line endings
//!   metadata block    "\n\x01\x03\n" (DBOX_MAGIC_POST), then "<key><value>\n" lines,
//!                     ended by an empty line
//! ```
//!
//! An sdbox file holds one message; an mdbox file holds several, each starting right after
//! the previous metadata block. The body bytes are exactly what `doveadm fetch text`
//! prints (unless a plugin such as zlib changed them, or the `X` metadata says that parts
//! live in external attachment files: see [`parse_ext_refs`]).
//!
//! The rules follow Dovecot's reader (`dbox-file.c`, `dbox-mail.c`), not its writer: what
//! Dovecot accepts is accepted here (version 1 files, an `M` larger than 30, unknown keys,
//! any `type` byte), and the few places where this parser is stricter say so. Text lines
//! are split the way `i_stream_read_next_line()` (`src/lib/istream.c`) does it: a line ends
//! at `\n`, one `\r` before the `\n` is dropped, a final line without `\n` does not count,
//! and since Dovecot then treats the line as a C string, it ends at the first NUL byte.

use super::FormatError;

/// `DBOX_VERSION` (`dbox-file.h`): the version every file written by Dovecot 2.x has.
pub const DBOX_VERSION: u32 = 2;

/// `sizeof(struct dbox_message_header)` (`dbox-file.h`): the `M` value Dovecot writes, and
/// the smallest one this parser accepts.
pub const MESSAGE_HEADER_SIZE: u32 = 30;

/// `DBOX_MAGIC_PRE` (`dbox-file.h`): the first two bytes of every message header.
const MAGIC_PRE: &[u8] = b"\x01\x02";

/// `DBOX_MAGIC_POST` (`dbox-file.h`) = `struct dbox_metadata_header.magic_post`: the first
/// four bytes of every metadata block.
const MAGIC_POST: &[u8] = b"\n\x01\x03\n";

/// Offset of `message_size_hex[16]` in `struct dbox_message_header` (after `magic_pre[2]`,
/// `type`, `space1`, `oldv1_uid_hex[8]`, `space2`).
const MSG_SIZE_HEX_OFFSET: usize = 13;

/// Length of `message_size_hex` in `struct dbox_message_header`.
const MSG_SIZE_HEX_LEN: usize = 16;

/// The longest file header line Dovecot can read: `dbox_file_open_full()` creates the input
/// stream with a maximum buffer of `DBOX_READ_BLOCK_SIZE` = `IO_BLOCK_SIZE` (8192) bytes,
/// and `i_stream_read_next_line()` gives up on a longer line ("EOF while reading file
/// header").
const MAX_FILE_HEADER_LINE: usize = 8192;

/// `enum dbox_header_key` (`dbox-file.h`).
const HDR_MSG_HEADER_SIZE: u8 = b'M';
const HDR_CREATE_STAMP: u8 = b'C';

/// `enum dbox_metadata_key` (`dbox-file.h`).
const META_GUID: u8 = b'G';
const META_POP3_UIDL: u8 = b'P';
const META_POP3_ORDER: u8 = b'O';
const META_RECEIVED_TIME: u8 = b'R';
const META_PHYSICAL_SIZE: u8 = b'Z';
const META_VIRTUAL_SIZE: u8 = b'V';
const META_EXT_REF: u8 = b'X';
const META_ORIG_MAILBOX: u8 = b'B';
/// `DBOX_METADATA_OLDV1_SPACE`: a line starting with a space ends the block (v1 padding).
const META_OLDV1_SPACE: u8 = b' ';

/// The file header line: `"<version> <key><value> <key><value>...\n"`.
///
/// Written by `dbox_file_header_write()` as `"%u %c%x %c%x\n"` with `DBOX_VERSION`, `M`,
/// `sizeof(struct dbox_message_header)`, `C`, the creation time; read by
/// `dbox_file_parse_header()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// `struct dbox_file.file_version`: the first character, 1 or 2. Dovecot 2.3 reads
    /// version 1 files but never appends to them.
    pub version: u32,
    /// `struct dbox_file.file_header_size`: length of the header line **including** its
    /// `\n` (and a `\r` before it, if any). The first message starts here.
    pub header_size: u32,
    /// `DBOX_HEADER_MSG_HEADER_SIZE` (`M`, hex): the length of every message header in
    /// this file. Always 30 (`0x1e`) in files Dovecot writes. If `M` appears more than once,
    /// the last one counts (Dovecot overwrites).
    pub msg_header_size: u32,
    /// `DBOX_HEADER_CREATE_STAMP` (`C`, hex): UNIX time the file was created. Dovecot
    /// parses it as `uintmax_t`, hence `u64`. Last one counts.
    pub create_stamp: Option<u64>,
    /// Every other `<key><value>` token, in file order: `A` (`DBOX_HEADER_OLDV1_APPEND_OFFSET`,
    /// v1 only) and unknown keys, all of which Dovecot ignores. Empty tokens (two spaces in
    /// a row) are skipped. Values are decoded as UTF-8, invalid bytes replaced.
    pub extra: Vec<(u8, String)>,
}

/// Parses the file header line at the start of `data` (`dbox_file_read_header()`).
///
/// Rules (Dovecot's `dbox_file_parse_header()`): the first byte is an ASCII digit giving
/// the version, which must be 1 or 2; the second byte is a space; then space-separated
/// tokens whose first byte is the key. `M` (hex, `str_to_uint_hex`) is required and
/// must not be 0; a `C` that is not hex is an error; other keys are ignored.
pub fn parse_file_header(data: &[u8]) -> Result<FileHeader, FormatError> {
    if data.is_empty() {
        return Err(FormatError::new(
            0,
            "file is empty (0 bytes); a dbox file starts with a header line such as \
             \"2 M1e C6b0484ac\" (truncated file, or not a dbox file?)",
        ));
    }
    let window = data.get(..MAX_FILE_HEADER_LINE).unwrap_or(data);
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return Err(FormatError::new(
            0,
            if data.len() <= MAX_FILE_HEADER_LINE {
                format!(
                    "file header line has no line feed: the file ends at byte {} \
                     (truncated file, or not a dbox file?)",
                    data.len()
                )
            } else {
                format!(
                    "no line feed in the first {MAX_FILE_HEADER_LINE} bytes: Dovecot cannot \
                     read a file header this long (not a dbox file?)"
                )
            },
        ));
    };
    let header_size = lf + 1;
    let line = c_line(window.get(..lf).unwrap_or_default());

    let version = match (line.first(), line.get(1)) {
        (Some(&d), Some(b' ')) if d.is_ascii_digit() => u32::from(d - b'0'),
        _ => {
            return Err(FormatError::new(
                0,
                format!(
                    "invalid dbox version: the file header line must start with \"2 \", \
                     found {} (not a dbox file?)",
                    show(line.get(..line.len().min(16)).unwrap_or_default())
                ),
            ));
        }
    };
    if version != 1 && version != DBOX_VERSION {
        return Err(FormatError::new(
            0,
            format!("unsupported dbox version {version}: Dovecot reads only versions 1 and 2"),
        ));
    }

    let mut msg_header_size = 0u32;
    let mut create_stamp = None;
    let mut extra = Vec::new();
    // Token start offsets are tracked so errors can point at the offending token.
    let mut pos = 2usize;
    for token in line.get(2..).unwrap_or_default().split(|&b| b == b' ') {
        let token_offset = pos;
        pos = pos.saturating_add(token.len()).saturating_add(1);
        let Some((&key, value)) = token.split_first() else {
            // An empty token (t_strsplit keeps them): key NUL, ignored by Dovecot.
            continue;
        };
        match key {
            HDR_MSG_HEADER_SIZE => {
                msg_header_size = parse_hex(value)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| {
                        FormatError::new(
                            token_offset,
                            format!(
                                "invalid message header size {} in the file header: \
                                 expected M and hex digits, such as M1e",
                                show(token)
                            ),
                        )
                    })?;
            }
            HDR_CREATE_STAMP => {
                create_stamp = Some(parse_hex(value).ok_or_else(|| {
                    FormatError::new(
                        token_offset,
                        format!(
                            "invalid create time stamp {} in the file header: expected \
                             C and a hex UNIX time",
                            show(token)
                        ),
                    )
                })?);
            }
            _ => extra.push((key, lossy(value))),
        }
    }
    if msg_header_size == 0 {
        return Err(FormatError::new(
            0,
            "missing message header size: the file header line has no M<hex> \
             token, or M0 (corrupt file header)",
        ));
    }
    Ok(FileHeader {
        version,
        // header_size <= MAX_FILE_HEADER_LINE, so this cannot fail.
        header_size: u32::try_from(header_size).unwrap_or(u32::MAX),
        msg_header_size,
        create_stamp,
        extra,
    })
}

/// One per-message header (`struct dbox_message_header`) and the body range it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Byte offset of the header in the file (mdbox map `offset`; sdbox: the file header
    /// size).
    pub offset: u64,
    /// Length of the header: the file's `M` value ([`FileHeader::msg_header_size`]).
    pub header_size: u32,
    /// Byte offset of the first body byte: `offset + header_size`.
    pub body_offset: u64,
    /// `message_size_hex`: number of body bytes as stored on disk (`cur_physical_size`).
    /// With a compression plugin this is the compressed size; see
    /// [`Message::plaintext_size`].
    pub body_size: u64,
}

impl MessageHeader {
    /// Offset of the metadata block: right after the body.
    pub fn metadata_offset(&self) -> u64 {
        // parse_message_header checked that the body lies inside the file.
        self.body_offset.saturating_add(self.body_size)
    }

    /// The body bytes in `data` (the same file bytes this header was parsed from), or
    /// `None` if `data` is too short for them.
    pub fn body<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.body_offset).ok()?;
        let end = usize::try_from(self.metadata_offset()).ok()?;
        data.get(start..end)
    }
}

/// Parses the message header at `offset` (`dbox_file_read_mail_header()`), with
/// `msg_header_size` from the file header's `M`.
///
/// Checks what Dovecot's reader checks: `msg_header_size` bytes are present, the first two
/// are `DBOX_MAGIC_PRE` and the last one is `\n`. The `type` byte and the spaces are not
/// checked (only the repair code, `dbox-file-fix.c`, looks at them). In addition:
///
/// * `msg_header_size` must be at least 30. Dovecot copies `min(30, M)` bytes into the
///   struct and reads the size field regardless, so a smaller `M` gives it garbage.
/// * The 16 size digits must all be hex. Dovecot's `hex2dec()` turns anything else into
///   size 0, after which the metadata magic check fails anyway; here the header is rejected.
/// * The whole body must lie inside `data`, so that [`MessageHeader::body`] succeeds.
///   Dovecot notices a short body only while streaming it.
///
/// A header of 30 zero bytes is what `dbox_save_begin()` writes before the body; it is
/// replaced with the real header only when the save finishes. Such a header is reported
/// as a save in progress.
pub fn parse_message_header(
    data: &[u8],
    offset: u64,
    msg_header_size: u32,
) -> Result<MessageHeader, FormatError> {
    let len = data.len() as u64;
    let end = offset.saturating_add(u64::from(msg_header_size));
    let hdr = slice(data, offset, end.min(len)).unwrap_or_default();
    check_message_header(hdr, offset, len, msg_header_size)
}

/// Like [`parse_message_header`], for a reader that has read only the header bytes:
/// `hdr` holds the bytes from `offset` on (at least `msg_header_size` of them when the
/// file has them) and `file_len` is the file's size, against which the body is checked.
pub fn parse_message_header_window(
    hdr: &[u8],
    offset: u64,
    file_len: u64,
    msg_header_size: u32,
) -> Result<MessageHeader, FormatError> {
    let hdr = hdr.get(..msg_header_size as usize).unwrap_or(hdr);
    check_message_header(hdr, offset, file_len, msg_header_size)
}

/// The checks of [`parse_message_header`] on the header bytes `hdr` found at `offset` in
/// a file of `len` bytes.
fn check_message_header(
    hdr: &[u8],
    offset: u64,
    len: u64,
    msg_header_size: u32,
) -> Result<MessageHeader, FormatError> {
    let err = |what: String| Err(error(offset, what));
    if msg_header_size < MESSAGE_HEADER_SIZE {
        return err(format!(
            "the file header says message headers are {msg_header_size} bytes \
             (M{msg_header_size:x}), fewer than the {MESSAGE_HEADER_SIZE} of struct \
             dbox_message_header (corrupt file header)"
        ));
    }
    if offset >= len {
        return err(format!(
            "message offset {offset} is at or past the end of the file ({len} bytes): \
             stale offset from the map index, or truncated file?"
        ));
    }
    let hdr_len = u64::from(msg_header_size);
    let body_offset = match offset.checked_add(hdr_len) {
        Some(end) if end <= len && hdr.len() as u64 == hdr_len => end,
        _ => {
            return err(format!(
                "message header at offset {offset} needs {hdr_len} bytes but the file ends \
                 at byte {len} (truncated file, or a save in progress?)"
            ));
        }
    };
    let fixed = hdr.get(..MESSAGE_HEADER_SIZE as usize).unwrap_or_default();
    if fixed.iter().all(|&b| b == 0) {
        return err(format!(
            "message header at offset {offset} is all zero bytes: a save in progress or an \
             aborted save (Dovecot writes the real header when the save finishes)"
        ));
    }
    if hdr.get(..MAGIC_PRE.len()) != Some(MAGIC_PRE) {
        return err(format!(
            "no message at offset {offset}: expected the magic bytes 01 02 \
             (DBOX_MAGIC_PRE), found {} (stale offset from the map index, or corrupt file)",
            show(hdr.get(..8).unwrap_or_default())
        ));
    }
    if hdr.last() != Some(&b'\n') {
        return err(format!(
            "message header at offset {offset} does not end with a line feed at byte {} \
             (file header M{msg_header_size:x} wrong, or corrupt file)",
            body_offset.saturating_sub(1)
        ));
    }
    let size_hex = fixed
        .get(MSG_SIZE_HEX_OFFSET..MSG_SIZE_HEX_OFFSET + MSG_SIZE_HEX_LEN)
        .unwrap_or_default();
    let Some(body_size) = parse_hex(size_hex) else {
        return err(format!(
            "message header at offset {offset} has a size field that is not 16 hex digits: \
             {} (corrupt file)",
            show(size_hex)
        ));
    };
    match body_offset.checked_add(body_size) {
        Some(end) if end <= len => Ok(MessageHeader {
            offset,
            header_size: msg_header_size,
            body_offset,
            body_size,
        }),
        _ => err(format!(
            "message at offset {offset} claims {body_size} body bytes (up to byte {}) but the \
             file ends at byte {len} (truncated file, or a save in progress?)",
            body_offset.saturating_add(body_size)
        )),
    }
}

/// The metadata block after a body (`dbox_file_metadata_read_at()`).
///
/// Each known key is taken from its **first** line, as `dbox_file_metadata_get()` does.
/// A value that does not parse the way Dovecot parses it leaves the field `None` and the
/// line goes to [`other`](Metadata::other); so do later duplicates of a key. Text values
/// are decoded as UTF-8 with invalid bytes replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `DBOX_METADATA_GUID` (`G`): the message GUID. Normally 32 lowercase hex digits, but
    /// a message copied from Maildir keeps its Maildir GUID (the base file name), written
    /// as is.
    pub guid: Option<String>,
    /// `DBOX_METADATA_RECEIVED_TIME` (`R`, hex, `str_to_uintmax_hex`): INTERNALDATE as UNIX
    /// time.
    pub received: Option<u64>,
    /// `DBOX_METADATA_PHYSICAL_SIZE` (`Z`, hex): the plaintext size, written only when it
    /// differs from the header's body size (compression, external attachments).
    pub physical_size: Option<u64>,
    /// `DBOX_METADATA_VIRTUAL_SIZE` (`V`, hex): size with every LF counted as CRLF
    /// (IMAP `RFC822.SIZE`).
    pub virtual_size: Option<u64>,
    /// `DBOX_METADATA_POP3_UIDL` (`P`): POP3 UIDL override, free text (may contain tabs).
    pub pop3_uidl: Option<String>,
    /// `DBOX_METADATA_POP3_ORDER` (`O`, **decimal**, `str_to_uint`): POP3 order of migrated
    /// mail. Dovecot treats 0 as "no order".
    pub pop3_order: Option<u32>,
    /// `DBOX_METADATA_ORIG_MAILBOX` (`B`, mdbox only): the mailbox the message was saved to,
    /// as Dovecot's storage name: mUTF-7, hierarchy separator as configured
    /// (`Gr&APwA3w-e/Sub`).
    pub orig_mailbox: Option<String>,
    /// `DBOX_METADATA_EXT_REF` (`X`): external attachment references, raw; decode with
    /// [`parse_ext_refs`].
    pub ext_refs: Option<String>,
    /// Every other line as (key byte, value), in file order: unknown keys, dbox v1 leftovers
    /// (`E`, `F`, `K`, `S`: Dovecot 2.3 ignores them; the save date is not stored in the
    /// file), duplicates of known keys, and known keys whose value did not parse.
    pub other: Vec<(u8, String)>,
    /// Offset just after the block's terminating line: where the next message of an mdbox
    /// file starts.
    pub end: u64,
}

/// Parses the metadata block at `offset` (just after a body).
///
/// The block is `DBOX_MAGIC_POST` followed by lines; a line that is empty or starts with
/// a space (`DBOX_METADATA_OLDV1_SPACE`) ends it (`dbox_file_metadata_read_at()`). A file
/// that ends before that line is an error ("missing end-of-metadata line").
pub fn parse_metadata(data: &[u8], offset: u64) -> Result<Metadata, FormatError> {
    let len = data.len() as u64;
    let magic_end = offset.saturating_add(MAGIC_POST.len() as u64);
    let Some(magic) = slice(data, offset, magic_end) else {
        return Err(error(
            offset,
            format!(
                "metadata block at offset {offset} needs {} bytes but the file ends at byte \
                 {len} (truncated file, or a save in progress?)",
                MAGIC_POST.len()
            ),
        ));
    };
    if magic != MAGIC_POST {
        return Err(error(
            offset,
            format!(
                "no metadata block at offset {offset}: expected the bytes 0a 01 03 0a \
                 (DBOX_MAGIC_POST), found {} (the size in the message header is wrong, or \
                 corrupt file)",
                show(magic)
            ),
        ));
    }

    let mut meta = Metadata::default();
    let mut seen = [false; 256];
    let mut pos = magic_end;
    loop {
        let rest = slice(data, pos, len).unwrap_or_default();
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            return Err(error(
                offset,
                format!(
                    "metadata block at offset {offset} has no terminating empty line before \
                     the end of the file at byte {len} (truncated file, or a save in \
                     progress?)"
                ),
            ));
        };
        pos = pos.saturating_add(lf as u64 + 1);
        let line = c_line(rest.get(..lf).unwrap_or_default());
        let Some((&key, value)) = line.split_first() else {
            break; // empty line: end of metadata
        };
        if key == META_OLDV1_SPACE {
            break; // v1 padding line: end of metadata
        }
        let first = !seen.get(usize::from(key)).copied().unwrap_or(true);
        if let Some(s) = seen.get_mut(usize::from(key)) {
            *s = true;
        }
        if !first || !meta.take(key, value) {
            meta.other.push((key, lossy(value)));
        }
    }
    meta.end = pos;
    Ok(meta)
}

impl Metadata {
    /// Stores the first line of a known key. Returns false if the key is unknown or the
    /// value does not parse.
    fn take(&mut self, key: u8, value: &[u8]) -> bool {
        match key {
            META_GUID => self.guid = Some(lossy(value)),
            META_POP3_UIDL => self.pop3_uidl = Some(lossy(value)),
            META_ORIG_MAILBOX => self.orig_mailbox = Some(lossy(value)),
            META_EXT_REF => self.ext_refs = Some(lossy(value)),
            // dbox-mail.c: str_to_uintmax_hex() for R and V; dbox_file_get_plaintext_size()
            // for Z.
            META_RECEIVED_TIME => return set(&mut self.received, parse_hex(value)),
            META_VIRTUAL_SIZE => return set(&mut self.virtual_size, parse_hex(value)),
            META_PHYSICAL_SIZE => return set(&mut self.physical_size, parse_hex(value)),
            // dbox_get_cached_metadata(): str_to_uint() for O.
            META_POP3_ORDER => {
                let order = parse_dec(value).and_then(|v| u32::try_from(v).ok());
                return set(&mut self.pop3_order, order);
            }
            _ => return false,
        }
        true
    }
}

/// One whole message: header, body range and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message header and the body range.
    pub header: MessageHeader,
    /// The metadata block after the body.
    pub metadata: Metadata,
}

impl Message {
    /// The message's plaintext size (`dbox_file_get_plaintext_size()`): metadata `Z` if
    /// present, otherwise the body size from the header.
    pub fn plaintext_size(&self) -> u64 {
        self.metadata.physical_size.unwrap_or(self.header.body_size)
    }

    /// Where the next message of an mdbox file starts (the end of the metadata block).
    pub fn next_offset(&self) -> u64 {
        self.metadata.end
    }

    /// The body bytes in `data` (the file this message was parsed from).
    pub fn body<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        self.header.body(data)
    }
}

/// Parses the message at `offset`: header, body range and metadata.
///
/// Offset 0 means "the first message" (`file.header_size`), as in `dbox_file_seek()`;
/// sdbox always reads its one message that way.
///
/// Dovecot itself can stream a body without reading the metadata. A caller that only needs
/// the body, and wants to survive broken metadata, can use [`parse_message_header`].
pub fn parse_message(data: &[u8], offset: u64, file: &FileHeader) -> Result<Message, FormatError> {
    let offset = if offset == 0 {
        u64::from(file.header_size)
    } else {
        offset
    };
    let header = parse_message_header(data, offset, file.msg_header_size)?;
    let metadata = parse_metadata(data, header.metadata_offset()).map_err(|e| FormatError {
        offset: e.offset,
        what: format!("message at offset {offset}: {}", e.what),
    })?;
    Ok(Message { header, metadata })
}

/// All messages of a file, in order (`dbox_file_seek_next()`).
///
/// The first message starts at the end of the file header; each next one at the end of
/// the previous metadata block; the walk stops cleanly at the end of the file. Bytes that
/// do not parse as a complete message end the walk: the messages before them are returned,
/// and the problem is returned as the third value, with `offset` = where that message
/// starts. In an mdbox file these bytes may be a save in progress or the leftovers of a
/// failed save; they are not necessarily corruption (§3.6 of the storage doc: only the map
/// index says which messages exist).
///
/// Fails only if the file header itself does not parse.
pub fn parse_file(
    data: &[u8],
) -> Result<(FileHeader, Vec<Message>, Option<FormatError>), FormatError> {
    let file = parse_file_header(data)?;
    let len = data.len() as u64;
    let mut messages = Vec::new();
    let mut offset = u64::from(file.header_size);
    let mut tail = None;
    while offset < len {
        match parse_message(data, offset, &file) {
            Ok(msg) => {
                offset = msg.next_offset();
                messages.push(msg);
            }
            Err(e) => {
                let what = if e.offset == offset {
                    e.what
                } else {
                    format!("{} [problem found at byte {}]", e.what, e.offset)
                };
                tail = Some(FormatError {
                    offset,
                    what: format!("incomplete or corrupt message at the end: {what}"),
                });
                break;
            }
        }
    }
    Ok((file, messages, tail))
}

/// One external attachment reference from metadata `X` (`struct mail_attachment_extref`,
/// `src/lib-storage/index/index-attachment.c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtRef {
    /// Where the attachment goes in the reconstructed message (decimal).
    pub start_offset: u64,
    /// How many bytes of the reconstructed message it fills (decimal).
    pub size: u64,
    /// Option `B<n>`: re-encode the file as base64 with `n` characters per line
    /// (`base64_blocks_per_line * 4`). 0 = the file is inserted as is.
    pub base64_line_len: u32,
    /// Option `C`: base64 lines end with CRLF instead of LF.
    pub base64_crlf: bool,
    /// Path of the attachment file relative to `mail_attachment_dir`, without the storage's
    /// suffix (sdbox appends `-<mailbox guid>-<uid>`, mdbox nothing). Untrusted: may
    /// contain `..` or start with `/`.
    pub path: String,
}

/// Decodes the value of metadata `X` (`index_attachment_parse_extrefs()`).
///
/// Grammar: space-separated groups of four tokens `<start> <size> <options> <path>`;
/// starts must not go backwards (`start >= previous start + previous size`); options are
/// `-` (none) or any sequence of `C` and `B<decimal n>` with `n` a non-zero multiple of 4.
///
/// The value has no file offset of its own, so `FormatError::offset` here is the byte
/// offset **within `value`** of the offending token.
pub fn parse_ext_refs(value: &str) -> Result<Vec<ExtRef>, FormatError> {
    if value.is_empty() {
        // t_strsplit("") has no tokens: zero groups, which Dovecot accepts.
        return Ok(Vec::new());
    }
    let tokens: Vec<(usize, &str)> = {
        let mut pos = 0usize;
        value
            .split(' ')
            .map(|t| {
                let at = pos;
                pos = pos.saturating_add(t.len()).saturating_add(1);
                (at, t)
            })
            .collect()
    };
    if !tokens.len().is_multiple_of(4) {
        return Err(FormatError::new(
            0,
            format!(
                "external attachment references (metadata X) have {} tokens, not groups of \
                 4 (<start> <size> <options> <path>): corrupt X line",
                tokens.len()
            ),
        ));
    }
    let mut refs = Vec::new();
    let mut last_end = 0u64;
    for group in tokens.chunks_exact(4) {
        let [
            (start_at, start_tok),
            (size_at, size_tok),
            (opt_at, options),
            (_, path),
        ] = group
        else {
            continue;
        };
        let bad = |at: usize, what: &str, tok: &str| {
            FormatError::new(
                at,
                format!("external attachment reference (metadata X): {what}: {tok:?}"),
            )
        };
        let start_offset = parse_dec(start_tok.as_bytes())
            .ok_or_else(|| bad(*start_at, "start offset is not a decimal number", start_tok))?;
        let size = parse_dec(size_tok.as_bytes())
            .ok_or_else(|| bad(*size_at, "size is not a decimal number", size_tok))?;
        if start_offset < last_end {
            return Err(bad(
                *start_at,
                &format!("start offset goes backwards (previous part ends at {last_end})"),
                start_tok,
            ));
        }
        last_end = start_offset
            .checked_add(size)
            .ok_or_else(|| bad(*size_at, "start + size overflows", size_tok))?;
        let (base64_line_len, base64_crlf) = parse_ext_ref_options(options)
            .ok_or_else(|| bad(*opt_at, "invalid decode options (want -, C, B<n>)", options))?;
        refs.push(ExtRef {
            start_offset,
            size,
            base64_line_len,
            base64_crlf,
            path: (*path).to_owned(),
        });
    }
    Ok(refs)
}

/// `parse_extref_decode_options()`: `-` alone, or `C` and `B<n>` in any order and number
/// (the last `B` counts). Returns (line length, crlf).
fn parse_ext_ref_options(options: &str) -> Option<(u32, bool)> {
    // MAIL_ATTACHMENT_DECODE_OPTION_NONE
    if let Some(rest) = options.strip_prefix('-') {
        return rest.is_empty().then_some((0, false));
    }
    let mut line_len = 0u32;
    let mut crlf = false;
    let mut rest = options.as_bytes();
    while let Some((&c, tail)) = rest.split_first() {
        match c {
            // MAIL_ATTACHMENT_DECODE_OPTION_BASE64
            b'B' => {
                let digits = tail.iter().take_while(|b| b.is_ascii_digit()).count();
                let (num, after) = tail.split_at(digits);
                // An empty digit string is 0, which is rejected like in Dovecot. Dovecot's
                // unsigned counter would wrap on overflow; reject that instead.
                let n = if num.is_empty() {
                    0
                } else {
                    parse_dec(num).and_then(|v| u32::try_from(v).ok())?
                };
                if n == 0 || !n.is_multiple_of(4) {
                    return None;
                }
                line_len = n;
                rest = after;
            }
            // MAIL_ATTACHMENT_DECODE_OPTION_CRLF
            b'C' => {
                crlf = true;
                rest = tail;
            }
            _ => return None,
        }
    }
    Some((line_len, crlf))
}

/// A line as Dovecot sees it after `i_stream_read_next_line()`: without the `\r` before the
/// `\n` (the `\n` is already gone), and cut at the first NUL (C string).
fn c_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.iter().position(|&b| b == 0) {
        Some(nul) => line.get(..nul).unwrap_or(line),
        None => line,
    }
}

/// `str_to_uintmax_hex()` (`src/lib/strnum.c`): one or more hex digits (either case),
/// nothing else, no overflow. Also used for the fixed 16 digits of `message_size_hex`
/// (where Dovecot's `hex2dec()` would return 0 for a bad digit).
fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = char::from(b).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(d))
    })
}

/// `str_to_uintmax()` (`src/lib/strnum.c`): one or more decimal digits, nothing else, no
/// overflow.
fn parse_dec(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Stores `value` in `field` if it parsed; returns whether it did.
fn set<T>(field: &mut Option<T>, value: Option<T>) -> bool {
    let ok = value.is_some();
    *field = value;
    ok
}

/// `data[from..to]` with u64 bounds, or `None` if out of range.
fn slice(data: &[u8], from: u64, to: u64) -> Option<&[u8]> {
    data.get(usize::try_from(from).ok()?..usize::try_from(to).ok()?)
}

/// A [`FormatError`] at a u64 file offset.
fn error(offset: u64, what: impl Into<String>) -> FormatError {
    FormatError {
        offset,
        what: what.into(),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What an error message says of bytes that are not what was expected: their length
/// only. Errors never quote file contents: the file may be something other than what its
/// name claims (a hard link to a file its owner could not read), and errors reach logs
/// and `mailfs ls` output.
fn show(bytes: &[u8]) -> String {
    format!("{} other byte(s), not shown", bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- unit tests on hand-made bytes ----

    /// A message as Dovecot writes it: 30-byte header, body, metadata lines, empty line.
    fn msg(body: &[u8], meta: &[&str]) -> Vec<u8> {
        let mut v = format!("\x01\x02N          {:016X}\n", body.len()).into_bytes();
        v.extend_from_slice(body);
        v.extend_from_slice(MAGIC_POST);
        for line in meta {
            v.extend_from_slice(line.as_bytes());
            v.push(b'\n');
        }
        v.push(b'\n');
        v
    }

    const HDR: &[u8] = b"2 M1e C6b0484ac\n";

    fn file(msgs: &[Vec<u8>]) -> Vec<u8> {
        let mut v = HDR.to_vec();
        for m in msgs {
            v.extend_from_slice(m);
        }
        v
    }

    fn err_what<T: std::fmt::Debug>(r: Result<T, FormatError>) -> FormatError {
        r.expect_err("expected an error")
    }

    #[test]
    fn file_header_as_dovecot_writes_it() {
        let h = parse_file_header(b"2 M1e C6b0484ac\n\x01\x02N").unwrap();
        assert_eq!(
            h,
            FileHeader {
                version: 2,
                header_size: 16,
                msg_header_size: 30,
                create_stamp: Some(0x6b04_84ac),
                extra: vec![],
            }
        );
    }

    #[test]
    fn file_header_leniencies_follow_dovecot() {
        // v1, CRLF, an old A key, an unknown key, empty tokens, M twice (last wins),
        // lowercase and uppercase hex, C wider than 32 bits.
        let h = parse_file_header(b"1 A10  M10 Qfoo M1E C1ffffffff0 \r\nrest").unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.header_size, 34);
        assert_eq!(h.msg_header_size, 30);
        assert_eq!(h.create_stamp, Some(0x1f_ffff_fff0));
        assert_eq!(h.extra, vec![(b'A', "10".into()), (b'Q', "foo".into())]);
        // The line is a C string: everything after a NUL is ignored.
        let h = parse_file_header(b"2 M1e\0 Mzz\n").unwrap();
        assert_eq!((h.msg_header_size, h.header_size), (30, 11));
        // No C is fine.
        assert_eq!(parse_file_header(b"2 M1e\n").unwrap().create_stamp, None);
    }

    #[test]
    fn file_header_errors() {
        let cases: &[(&[u8], u64, &str)] = &[
            (b"", 0, "empty"),
            (b"2 M1e C6b0484ac", 0, "no line feed"),
            (b"3 M1e\n", 0, "unsupported dbox version 3"),
            (b"2M1e\n", 0, "invalid dbox version"),
            (b"x M1e\n", 0, "invalid dbox version"),
            (b"\n", 0, "invalid dbox version"),
            (b"2 C6b0484ac\n", 0, "missing message header size"),
            (b"2 M0\n", 0, "missing message header size"),
            (b"2 \n", 0, "missing message header size"),
            (
                b"2 Qx M1g\n",
                5,
                "invalid message header size 3 other byte(s), not shown",
            ),
            (b"2 M\n", 2, "invalid message header size"),
            (b"2 M100000000\n", 2, "invalid message header size"),
            (b"2 M1e C-5\n", 6, "invalid create time stamp"),
            (b"2 M1e C\n", 6, "invalid create time stamp"),
        ];
        for (input, offset, what) in cases {
            let e = err_what(parse_file_header(input));
            assert_eq!(e.offset, *offset, "{input:?}: {e}");
            assert!(e.what.contains(what), "{input:?}: {e}");
        }
        // Errors never quote the file's bytes (it may be something else than a dbox file).
        let e = err_what(parse_file_header(b"root:$6$secret:19000:0:99999:7:::\n"));
        assert!(
            !e.what.contains("root") && !e.what.contains("secret"),
            "{e}"
        );
        let mut long = b"2 M1e Q".to_vec();
        long.resize(MAX_FILE_HEADER_LINE, b'x');
        long.push(b'\n');
        assert!(err_what(parse_file_header(&long)).what.contains("8192"));
        long.truncate(MAX_FILE_HEADER_LINE - 1);
        long.push(b'\n');
        assert_eq!(parse_file_header(&long).unwrap().header_size, 8192);
    }

    #[test]
    fn message_header_and_body_range() {
        let data = file(&[msg(b"Subject: x\n\nb\n", &["R6b0484ac", "V11", "Gabc"])]);
        let h = parse_message_header(&data, 16, 30).unwrap();
        assert_eq!(
            h,
            MessageHeader {
                offset: 16,
                header_size: 30,
                body_offset: 46,
                body_size: 14,
            }
        );
        assert_eq!(h.body(&data), Some(&b"Subject: x\n\nb\n"[..]));
        assert_eq!(h.metadata_offset(), 60);
        // Lowercase hex, another type byte and non-space padding are accepted
        // (dbox_file_read_mail_header checks only the magic and the final LF).
        let mut d = HDR.to_vec();
        d.extend_from_slice(b"\x01\x02Xx12345678x000000000000000a\n0123456789");
        let h = parse_message_header(&d, 16, 30).unwrap();
        assert_eq!(h.body_size, 10);
        // M > 30: bytes before the final LF are reserved space.
        let mut d = b"2 M20\n".to_vec();
        d.extend_from_slice(b"\x01\x02N          0000000000000001  \nZ");
        let h = parse_message_header(&d, 6, 32).unwrap();
        assert_eq!((h.body_offset, h.body_size), (38, 1));
        assert_eq!(h.body(&d), Some(&b"Z"[..]));
    }

    #[test]
    fn message_header_errors() {
        let good = file(&[msg(b"body\n", &["Gx"])]);
        let with = |patch: &dyn Fn(&mut Vec<u8>)| {
            let mut d = good.clone();
            patch(&mut d);
            d
        };
        let cases: Vec<(Vec<u8>, u64, u32, &str)> = vec![
            (good.clone(), 16, 29, "fewer than the 30"),
            (good.clone(), good.len() as u64, 30, "at or past the end"),
            (good.clone(), u64::MAX, 30, "at or past the end"),
            (
                good[..40].to_vec(),
                16,
                30,
                "needs 30 bytes but the file ends at byte 40",
            ),
            (good.clone(), 16, u32::MAX, "needs 4294967295 bytes"),
            (with(&|d| d[16..46].fill(0)), 16, 30, "save in progress"),
            (with(&|d| d[17] = b'\x03'), 16, 30, "DBOX_MAGIC_PRE"),
            (good.clone(), 17, 30, "DBOX_MAGIC_PRE"),
            (
                with(&|d| d[45] = b' '),
                16,
                30,
                "does not end with a line feed at byte 45",
            ),
            (with(&|d| d[40] = b'g'), 16, 30, "not 16 hex digits"),
            (
                with(&|d| d[44] = b'F'),
                16,
                30,
                "claims 15 body bytes (up to byte 61)",
            ),
            (
                with(&|d| d[29..45].fill(b'F')),
                16,
                30,
                "claims 18446744073709551615",
            ),
        ];
        for (data, offset, m, what) in cases {
            let e = err_what(parse_message_header(&data, offset, m));
            assert_eq!(e.offset, offset, "{e}");
            assert!(e.what.contains(what), "want {what:?}: {e}");
        }
    }

    #[test]
    fn metadata_keys_and_values() {
        let data = file(&[msg(
            b"b\n",
            &[
                "Zbf3",
                "R6b049505",
                "Vc28",
                "Pmy\tuidl",
                "O2",
                "G1700000001.M2P1.host",
                "BGr&APwA3w-e/Sub",
                "X283 2767 B76 f1/0c/abc-def",
                "Eold",
                "S5",
                "qlower",
            ],
        )]);
        let m = parse_metadata(&data, 48).unwrap();
        assert_eq!(
            m,
            Metadata {
                guid: Some("1700000001.M2P1.host".into()),
                received: Some(0x6b04_9505),
                physical_size: Some(0xbf3),
                virtual_size: Some(0xc28),
                pop3_uidl: Some("my\tuidl".into()),
                pop3_order: Some(2),
                orig_mailbox: Some("Gr&APwA3w-e/Sub".into()),
                ext_refs: Some("283 2767 B76 f1/0c/abc-def".into()),
                other: vec![
                    (b'E', "old".into()),
                    (b'S', "5".into()),
                    (b'q', "lower".into())
                ],
                end: data.len() as u64,
            }
        );
    }

    #[test]
    fn metadata_first_line_of_a_key_wins() {
        // dbox_file_metadata_get() returns the first line with the key, even if its value
        // is bad; later ones are kept in `other`.
        let data = file(&[msg(
            b"",
            &[
                "Gfirst",
                "Gsecond",
                "Rzz",
                "R10",
                "V-1",
                "O4294967296",
                "Z",
                "O1",
            ],
        )]);
        let m = parse_metadata(&data, 46).unwrap();
        assert_eq!(m.guid.as_deref(), Some("first"));
        assert_eq!(
            (m.received, m.virtual_size, m.pop3_order, m.physical_size),
            (None, None, None, None)
        );
        let keys: Vec<(u8, &str)> = m.other.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            keys,
            vec![
                (b'G', "second"),
                (b'R', "zz"),
                (b'R', "10"),
                (b'V', "-1"),
                (b'O', "4294967296"),
                (b'Z', ""),
                (b'O', "1"),
            ]
        );
    }

    #[test]
    fn metadata_line_rules() {
        // CR before LF is dropped; a line starting with a space ends the block (the rest of
        // that line is consumed); so does a line starting with NUL; a NUL cuts a value.
        let mut d = HDR.to_vec();
        d.extend_from_slice(b"\n\x01\x03\nGab\r\nP\xffx\0hidden\n  padding\nNEXT");
        let m = parse_metadata(&d, 16).unwrap();
        assert_eq!(m.guid.as_deref(), Some("ab"));
        assert_eq!(m.pop3_uidl.as_deref(), Some("\u{fffd}x"));
        assert_eq!(m.end, d.len() as u64 - 4);
        let mut d = HDR.to_vec();
        d.extend_from_slice(b"\n\x01\x03\nGab\n\0junk\n");
        assert_eq!(parse_metadata(&d, 16).unwrap().end, d.len() as u64);
        // The smallest block.
        let mut d = HDR.to_vec();
        d.extend_from_slice(b"\n\x01\x03\n\n");
        assert_eq!(
            parse_metadata(&d, 16).unwrap(),
            Metadata {
                end: 21,
                ..Default::default()
            }
        );
    }

    #[test]
    fn metadata_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"\n\x01\x03", "needs 4 bytes but the file ends at byte 19"),
            (b"\n\x01\x04\nGx\n\n", "DBOX_MAGIC_POST"),
            (b"\n\x01\x03\nGx\n", "no terminating empty line"),
            (b"\n\x01\x03\nGx\nV1", "no terminating empty line"),
            (b"\n\x01\x03\nGx\n\r", "no terminating empty line"),
        ];
        for (tail, what) in cases {
            let mut d = HDR.to_vec();
            d.extend_from_slice(tail);
            let e = err_what(parse_metadata(&d, 16));
            assert_eq!(e.offset, 16);
            assert!(e.what.contains(what), "want {what:?}: {e}");
        }
        assert!(
            err_what(parse_metadata(HDR, u64::MAX))
                .what
                .contains("needs 4 bytes")
        );
    }

    #[test]
    fn parse_message_offset_zero_means_first() {
        let data = file(&[msg(b"a\n", &["Gone"]), msg(b"bb\n", &["Gtwo", "Z9"])]);
        let f = parse_file_header(&data).unwrap();
        let first = parse_message(&data, 0, &f).unwrap();
        assert_eq!(first, parse_message(&data, 16, &f).unwrap());
        assert_eq!(first.body(&data), Some(&b"a\n"[..]));
        assert_eq!(first.plaintext_size(), 2);
        let second = parse_message(&data, first.next_offset(), &f).unwrap();
        assert_eq!(second.metadata.guid.as_deref(), Some("two"));
        assert_eq!(second.plaintext_size(), 9);
        assert_eq!(second.next_offset(), data.len() as u64);
        // A metadata error names the message and points at the metadata.
        let mut bad = data.clone();
        bad[49] = b'!';
        let e = err_what(parse_message(&bad, 16, &f));
        assert_eq!(e.offset, 48);
        assert!(e.what.starts_with("message at offset 16: "), "{e}");
    }

    #[test]
    fn parse_file_stops_at_a_save_in_progress() {
        let a = msg(b"a\n", &["Gone"]);
        let b = msg(b"bb\n", &["Gtwo"]);
        let mut data = file(&[a.clone(), b.clone()]);
        let (f, msgs, tail) = parse_file(&data).unwrap();
        assert_eq!(f.header_size, 16);
        assert_eq!(msgs.len(), 2);
        assert_eq!(tail, None);
        // dbox_save_begin() writes 30 zero bytes, then the body.
        let start = data.len() as u64;
        data.extend_from_slice(&[0; 30]);
        data.extend_from_slice(b"Subject: partial\n");
        let (_, msgs, tail) = parse_file(&data).unwrap();
        assert_eq!(msgs.len(), 2);
        let tail = tail.unwrap();
        assert_eq!(tail.offset, start);
        assert!(tail.what.contains("save in progress"), "{tail}");
        // A problem found inside the message is still reported at the message start.
        let mut data = file(&[a, b]);
        data.truncate(data.len() - 1);
        let (_, msgs, tail) = parse_file(&data).unwrap();
        assert_eq!(msgs.len(), 1);
        let tail = tail.unwrap();
        assert_eq!(tail.offset, msgs[0].next_offset());
        assert!(tail.what.contains("problem found at byte"), "{tail}");
        // Header only: no messages, no error.
        assert_eq!(parse_file(HDR).unwrap().1.len(), 0);
        assert!(parse_file(b"").is_err());
    }

    #[test]
    fn ext_refs_grammar() {
        let refs = parse_ext_refs("283 2767 B76 f1/0c/abc-def").unwrap();
        assert_eq!(
            refs,
            vec![ExtRef {
                start_offset: 283,
                size: 2767,
                base64_line_len: 76,
                base64_crlf: false,
                path: "f1/0c/abc-def".into(),
            }]
        );
        let refs = parse_ext_refs("0 10 - a 10 5 CB4 b 20 1 B8C c 21 0  d").unwrap();
        let got: Vec<_> = refs
            .iter()
            .map(|r| {
                (
                    r.start_offset,
                    r.size,
                    r.base64_line_len,
                    r.base64_crlf,
                    r.path.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 10, 0, false, "a"),
                (10, 5, 4, true, "b"),
                (20, 1, 8, true, "c"),
                (21, 0, 0, false, "d"),
            ]
        );
        assert_eq!(parse_ext_refs("").unwrap(), vec![]);
        let bad: &[(&str, u64)] = &[
            ("1 2 -", 0),
            ("x 2 - p", 0),
            ("1 -2 - p", 2),
            ("10 5 - a 14 1 - b", 9),
            ("1 2 -C p", 4),
            ("1 2 B p", 4),
            ("1 2 B6 p", 4),
            ("1 2 B0 p", 4),
            ("1 2 B99999999999 p", 4),
            ("1 2 Q p", 4),
            ("18446744073709551615 1 - p", 21),
            ("18446744073709551616 1 - p", 0),
        ];
        for (value, offset) in bad {
            let e = err_what(parse_ext_refs(value));
            assert_eq!(e.offset, *offset, "{value:?}: {e}");
        }
    }

    // ---- golden tests on files written by Dovecot 2.3.19.1 ----

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../../tests/fixtures/formats/", $name))
        };
    }
    macro_rules! fixture_str {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/formats/", $name))
        };
    }

    struct Fixture {
        name: &'static str,
        data: &'static [u8],
        /// `doveadm dump <file>` output.
        dump: &'static str,
        /// `doveadm fetch text` bytes (without the "text:\n" prefix), by message offset.
        texts: &'static [(u64, &'static [u8])],
    }

    const FIXTURES: &[Fixture] = &[
        // sdbox, plain message (flags \Seen \Flagged live in the index, not in the file).
        Fixture {
            name: "dbox-sdbox-u.1",
            data: fixture!("dbox-sdbox-u.1"),
            dump: fixture_str!("dbox-sdbox-u.1.dump"),
            texts: &[(16, fixture!("dbox-sdbox-u.1.text"))],
        },
        // sdbox, saved with CRLF line endings: stored (and fetched) with LF.
        Fixture {
            name: "dbox-sdbox-u.2",
            data: fixture!("dbox-sdbox-u.2"),
            dump: fixture_str!("dbox-sdbox-u.2.dump"),
            texts: &[(16, fixture!("dbox-sdbox-u.2.text"))],
        },
        // sdbox, moved to ALT storage by `doveadm altmove`; body without a final newline.
        Fixture {
            name: "dbox-sdbox-alt-u.3",
            data: fixture!("dbox-sdbox-alt-u.3"),
            dump: fixture_str!("dbox-sdbox-alt-u.3.dump"),
            texts: &[(16, fixture!("dbox-sdbox-alt-u.3.text"))],
        },
        // sdbox, 8-bit body (UTF-8 and Latin-1 bytes).
        Fixture {
            name: "dbox-sdbox-u.4",
            data: fixture!("dbox-sdbox-u.4"),
            dump: fixture_str!("dbox-sdbox-u.4.dump"),
            texts: &[(16, fixture!("dbox-sdbox-u.4.text"))],
        },
        // sdbox, body containing fake dbox magic bytes and ending with an empty line.
        Fixture {
            name: "dbox-sdbox-u.6",
            data: fixture!("dbox-sdbox-u.6"),
            dump: fixture_str!("dbox-sdbox-u.6.dump"),
            texts: &[(16, fixture!("dbox-sdbox-u.6.text"))],
        },
        // mdbox, 7 messages from two mailboxes, one of 70090 bytes in the middle.
        Fixture {
            name: "dbox-mdbox-m.1",
            data: fixture!("dbox-mdbox-m.1"),
            dump: fixture_str!("dbox-mdbox-m.1.dump"),
            texts: &[
                (16, fixture!("dbox-mdbox-m.1.16.text")),
                (203, fixture!("dbox-mdbox-m.1.203.text")),
                (352, fixture!("dbox-mdbox-m.1.352.text")),
                (70535, fixture!("dbox-mdbox-m.1.70535.text")),
                (70692, fixture!("dbox-mdbox-m.1.70692.text")),
                (70939, fixture!("dbox-mdbox-m.1.70939.text")),
                (71118, fixture!("dbox-mdbox-m.1.71118.text")),
            ],
        },
        // mdbox: two messages imported from Maildir by dsync (P, O, Maildir GUIDs), one
        // with an external attachment (Z, X), one in mailbox "Grüße/Sub" (B in mUTF-7).
        Fixture {
            name: "dbox-mdbox-ext-m.1",
            data: fixture!("dbox-mdbox-ext-m.1"),
            dump: fixture_str!("dbox-mdbox-ext-m.1.dump"),
            texts: &[
                (16, fixture!("dbox-mdbox-ext-m.1.16.text")),
                (214, fixture!("dbox-mdbox-ext-m.1.214.text")),
                (461, fixture!("dbox-mdbox-ext-m.1.461.text")),
                (943, fixture!("dbox-mdbox-ext-m.1.943.text")),
            ],
        },
    ];

    /// The attachment file that `X` of the message at 461 in dbox-mdbox-ext-m.1 names.
    const EXT_ATTACHMENT: &[u8] = fixture!("dbox-mdbox-ext-m.1.attachment");

    /// `doveadm dump` of a dbox file: file fields, then per message its offset and
    /// `msg.*` fields in order.
    struct Dump {
        msg_header_size: u32,
        create_stamp: u64,
        msgs: Vec<(u64, Vec<(String, String)>)>,
    }

    fn parse_dump(text: &str) -> Dump {
        let mut dump = Dump {
            msg_header_size: 0,
            create_stamp: 0,
            msgs: vec![],
        };
        for line in text.lines() {
            if let Some(off) = line.strip_prefix("offset ") {
                let off = off.trim_end_matches(':').parse().unwrap();
                dump.msgs.push((off, vec![]));
            } else if let Some((key, value)) = line.split_once(" = ") {
                match key {
                    "file.msg_header_size" => dump.msg_header_size = value.parse().unwrap(),
                    "file.create_stamp" => {
                        dump.create_stamp = value.split(' ').next().unwrap().parse().unwrap()
                    }
                    _ => {
                        let (_, fields) = dump.msgs.last_mut().unwrap();
                        // Timestamps are printed as "<n> (<date>)".
                        let value = match key {
                            "msg.received" => value.split(' ').next().unwrap(),
                            _ => value,
                        };
                        fields.push((key.to_owned(), value.to_owned()));
                    }
                }
            }
        }
        dump
    }

    /// Our view of a message in `doveadm dump` terms (`dump_msg_hdr`, `dump_msg_metadata`),
    /// in dump order for the keys Dovecot writes.
    fn as_dump_fields(m: &Message) -> Vec<(String, String)> {
        let md = &m.metadata;
        let mut v = vec![("msg.size".to_owned(), m.header.body_size.to_string())];
        let mut push = |k: &str, val: Option<String>| {
            if let Some(val) = val {
                v.push((k.to_owned(), val));
            }
        };
        // dbox_save_write_metadata() order: Z R V P O G B X.
        push("msg.physical-size", md.physical_size.map(|x| x.to_string()));
        push("msg.received", md.received.map(|x| x.to_string()));
        push("msg.virtual-size", md.virtual_size.map(|x| x.to_string()));
        push("msg.pop3-uidl", md.pop3_uidl.clone());
        push("msg.pop3-order", md.pop3_order.map(|x| x.to_string()));
        push("msg.guid", md.guid.clone());
        push("msg.orig-mailbox", md.orig_mailbox.clone());
        push("msg.ext-ref", md.ext_refs.clone());
        v
    }

    #[test]
    fn golden_files_match_doveadm_dump_and_fetch_text() {
        for fx in FIXTURES {
            let dump = parse_dump(fx.dump);
            let (file, msgs, tail) = parse_file(fx.data).unwrap();
            assert_eq!(tail, None, "{}", fx.name);
            assert_eq!(file.version, 2);
            assert_eq!(file.header_size, 16, "{}", fx.name);
            assert_eq!(file.msg_header_size, dump.msg_header_size);
            assert_eq!(file.create_stamp, Some(dump.create_stamp));
            assert!(file.extra.is_empty());
            assert_eq!(msgs.len(), dump.msgs.len(), "{}", fx.name);
            assert_eq!(msgs.len(), fx.texts.len(), "{}", fx.name);
            if fx.name.contains("sdbox") {
                assert_eq!(msgs.len(), 1);
            }
            for (i, m) in msgs.iter().enumerate() {
                let (off, fields) = &dump.msgs[i];
                assert_eq!(m.header.offset, *off, "{} #{i}", fx.name);
                assert_eq!(&as_dump_fields(m), fields, "{} at {off}", fx.name);
                assert!(m.metadata.other.is_empty());
                // Each message ends where the next one starts, the last at EOF.
                let next = msgs
                    .get(i + 1)
                    .map_or(fx.data.len() as u64, |n| n.header.offset);
                assert_eq!(m.next_offset(), next);
                // Stand-alone parsing at the offset agrees.
                assert_eq!(&parse_message(fx.data, *off, &file).unwrap(), m);

                let (text_off, text) = fx.texts[i];
                assert_eq!(text_off, *off);
                let body = m.body(fx.data).unwrap();
                assert!(!body.contains(&b'\r'), "dbox stores LF only");
                match &m.metadata.ext_refs {
                    None => {
                        assert_eq!(body, text, "{} at {off}", fx.name);
                        assert_eq!(m.plaintext_size(), text.len() as u64);
                        // V counts every LF as CRLF.
                        let lfs = body.iter().filter(|&&b| b == b'\n').count() as u64;
                        assert_eq!(m.metadata.virtual_size, Some(body.len() as u64 + lfs));
                    }
                    Some(x) => check_ext_refs(x, body, text, m),
                }
            }
        }
    }

    /// The fetched text is the body with each attachment inserted at its start offset,
    /// re-encoded as its options say; Z is the reconstructed size.
    fn check_ext_refs(x: &str, body: &[u8], text: &[u8], m: &Message) {
        assert_eq!(m.plaintext_size(), text.len() as u64);
        let refs = parse_ext_refs(x).unwrap();
        assert_eq!(refs.len(), 1);
        let r = &refs[0];
        assert!(
            r.path
                .starts_with("f1/0c/f10ccfde60c17db26e7d85d35665c7661dbbeb2c-")
        );
        assert_eq!((r.base64_line_len, r.base64_crlf), (76, false));
        let (start, end) = (r.start_offset as usize, (r.start_offset + r.size) as usize);
        assert_eq!(&body[..start], &text[..start]);
        assert_eq!(&body[start..], &text[end..]);
        assert_eq!(
            &text[start..end],
            base64_lines(EXT_ATTACHMENT, 76).as_slice()
        );
    }

    fn base64_lines(data: &[u8], line_len: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut enc = Vec::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                enc.push(if i <= chunk.len() {
                    ALPHABET[(n >> (18 - 6 * i) & 63) as usize]
                } else {
                    b'='
                });
            }
        }
        // Lines separated by LF, no line break after the last one.
        enc.chunks(line_len).collect::<Vec<_>>().join(&b'\n')
    }

    // ---- robustness ----

    /// Checks invariants of any successful parse_file result.
    fn check_consistent(data: &[u8]) {
        if let Ok((file, msgs, tail)) = parse_file(data) {
            let mut expect = u64::from(file.header_size);
            for m in &msgs {
                assert_eq!(m.header.offset, expect);
                assert!(m.body(data).is_some());
                assert!(m.next_offset() > m.header.offset);
                expect = m.next_offset();
            }
            match tail {
                Some(e) => assert_eq!(e.offset, expect),
                None => assert_eq!(expect, data.len() as u64),
            }
        }
    }

    #[test]
    fn every_truncation_keeps_the_complete_messages() {
        for fx in FIXTURES {
            let (file, full, _) = parse_file(fx.data).unwrap();
            for len in 0..=fx.data.len() {
                let cut = &fx.data[..len];
                let res = parse_file(cut);
                if len < file.header_size as usize {
                    assert!(res.is_err(), "{} cut at {len}", fx.name);
                    continue;
                }
                let (_, msgs, tail) = res.unwrap();
                let complete: Vec<&Message> = full
                    .iter()
                    .filter(|m| m.next_offset() <= len as u64)
                    .collect();
                assert_eq!(msgs.len(), complete.len(), "{} cut at {len}", fx.name);
                for (got, want) in msgs.iter().zip(&complete) {
                    assert_eq!(got, *want);
                }
                let at_boundary = len == file.header_size as usize
                    || complete
                        .last()
                        .is_some_and(|m| m.next_offset() == len as u64);
                match tail {
                    None => assert!(at_boundary, "{} cut at {len}", fx.name),
                    Some(e) => {
                        assert!(!at_boundary, "{} cut at {len}", fx.name);
                        let start = complete
                            .last()
                            .map_or(u64::from(file.header_size), |m| m.next_offset());
                        assert_eq!(e.offset, start, "{} cut at {len}: {e}", fx.name);
                    }
                }
                check_consistent(cut);
            }
        }
    }

    #[test]
    fn real_mdbox_file_with_a_save_in_progress() {
        // What another process appending to m.1 leaves on disk before it finishes:
        // dbox_save_begin()'s zeroed header and part of the body.
        let fx = &FIXTURES[5];
        assert_eq!(fx.name, "dbox-mdbox-m.1");
        let mut data = fx.data.to_vec();
        data.extend_from_slice(&[0; 30]);
        data.extend_from_slice(b"From: a@example.org\nSubject: half");
        let (_, msgs, tail) = parse_file(&data).unwrap();
        assert_eq!(msgs.len(), 7);
        assert_eq!(msgs, parse_file(fx.data).unwrap().1);
        let tail = tail.unwrap();
        assert_eq!(tail.offset, fx.data.len() as u64);
        assert!(tail.what.contains("save in progress"), "{tail}");
    }

    #[test]
    fn every_bit_flip_is_ok_or_err() {
        for fx in FIXTURES {
            let mut data = fx.data.to_vec();
            // The parser never reads body bytes, so inside a large body (the 70 KB message)
            // only its edges and every 61st byte are flipped, to keep the test fast.
            let (_, msgs, _) = parse_file(fx.data).unwrap();
            let sampled = |i: usize| {
                msgs.iter().any(|m| {
                    let (start, end) = (
                        m.header.body_offset as usize,
                        m.header.metadata_offset() as usize,
                    );
                    end - start > 4096 && i >= start + 64 && i + 64 < end && !i.is_multiple_of(61)
                })
            };
            for i in 0..data.len() {
                if sampled(i) {
                    continue;
                }
                for bit in 0..8 {
                    data[i] ^= 1 << bit;
                    check_consistent(&data);
                    data[i] ^= 1 << bit;
                }
            }
        }
    }

    #[test]
    fn random_bytes_are_ok_or_err() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const ALPHABET: &[u8] = b"\x01\x02\x03\n \r\0NGRVZOPBX0123456789abcdefABCDEF";
        for round in 0..20_000 {
            let mut data = HDR.to_vec();
            let len = next() % 200;
            for _ in 0..len {
                let r = next();
                data.push(if round % 2 == 0 {
                    r as u8
                } else {
                    ALPHABET[(r % ALPHABET.len() as u64) as usize]
                });
            }
            check_consistent(&data);
            let f = parse_file_header(&data).unwrap();
            for off in [0, 16, next() % 300, u64::MAX] {
                let _ = parse_message(&data, off, &f);
                let _ = parse_metadata(&data, off);
                let _ = parse_message_header(&data, off, (next() % 40) as u32);
            }
            if let Ok(s) = std::str::from_utf8(&data[16..]) {
                let _ = parse_ext_refs(s);
            }
        }
    }
}
