//! dbox messages whose attachments Dovecot keeps in `mail_attachment_dir` (single-instance
//! attachment storage), put back together as Dovecot does when it reads them.
//!
//! On save, Dovecot's attachment extractor (`src/lib-mail/istream-attachment-extractor.c`)
//! cuts the bodies of large non-text MIME parts out of the message: a base64 body that
//! decodes cleanly is stored decoded, anything else (8bit, binary, quoted-printable, base64
//! with irregular lines) as it is. The dbox file keeps the rest of the message, and its
//! metadata `X` line ([`dbox::parse_ext_refs`]) says, per attachment: where in the message
//! it goes, how many bytes of the message it fills, how to re-encode it (base64 line length
//! and CRLF, or nothing) and its file relative to the attachment directory.
//!
//! On read (`dbox_attachment_file_get_stream()`, `index_attachment_stream_get()`,
//! `src/lib-mail/istream-attachment-connector.c`) the message is: the stored body up to the
//! first attachment, the attachment (re-encoded), the stored body up to the next one, ...,
//! the rest of the stored body. Its size is the metadata `Z` (`dbox_file_get_plaintext_size`).
//! Dovecot fails the read when any piece is not exactly its size (`i_stream_create_sized`):
//! so does this module, before the first byte, by the file sizes.
//!
//! The attachment's file is `<mail_attachment_dir>/<path><suffix>`; sdbox renames it to end
//! in `-<mailbox guid>-<uid>` (`sdbox_get_attachment_path_suffix()`), mdbox keeps the name
//! (`mdbox_get_attachment_path_suffix()`). With the default `mail_attachment_fs = sis
//! posix`, the sis layer only decides, when saving, whether to hard-link an identical file
//! from `hashes/`; reading opens the path itself (`fs_wrapper_read_stream` to posix). Other
//! `mail_attachment_fs` backends (compressed, object stores) are not read here: the size
//! check refuses their files rather than serve their stored bytes.
//!
//! Safety: the paths come from a file the mailbox owner can write. A path that is absolute
//! or has any component but a plain name (`..`, `.`) is refused, and the file is opened
//! with the store's opens, which refuse a symbolic link in every component; the attachment
//! directory itself is resolved once, when the store is opened.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files;
use super::source::{MessageSource, Piece, ReadAt};
use crate::error::{Error, Result};
use crate::format::base64::Base64Lines;
use crate::format::compression;
use crate::format::dbox::{self, ExtRef};

/// The mount option that names Dovecot's `mail_attachment_dir`.
pub const OPTION: &str = "--attachment-dir (-o attachment_dir=)";

/// Why a message with attachment references cannot be presented at all, found without
/// opening anything (for its view: the message is listed, and EIO when used): no
/// attachment directory given, references that do not parse, point outside the message
/// or name a path that is refused. `None` when it may be read. (The stored body's length
/// is checked when the message is opened, after its first bytes said it is not
/// compressed.)
pub fn problem(dir: Option<&Path>, ext_refs: &str, msg_size: u64, uid: u32) -> Option<String> {
    if dir.is_none() {
        return Some(format!(
            "uid {uid}: the message has external attachments (dbox metadata X: Dovecot's \
             mail_attachment_dir), and no attachment directory was given: mount with {OPTION} \
             set to Dovecot's mail_attachment_dir"
        ));
    }
    plan(ext_refs, msg_size)
        .and_then(|refs| {
            refs.iter()
                .try_for_each(|r| relative_path(&r.path, "").map(drop))
        })
        .err()
        .map(|e| format!("uid {uid}: {e}"))
}

/// What the store knows of one stored message with attachment references.
#[derive(Debug)]
pub struct Stub<'a> {
    /// The open dbox file.
    pub file: File,
    /// Its path, for errors.
    pub path: &'a Path,
    /// Where the stored body starts in the file, and its length.
    pub body_start: u64,
    pub body_len: u64,
    /// The message size (metadata `Z`, else the body length).
    pub msg_size: u64,
    /// The metadata `X` value.
    pub ext_refs: &'a str,
    /// Appended to each reference's path: sdbox's `-<mailbox guid>-<uid>`, mdbox's "".
    pub suffix: &'a str,
}

/// The message of `stub`, its attachments read from `dir` (Dovecot's
/// `mail_attachment_dir`, already resolved). Every file is opened and its size checked
/// here; the bytes are read (and base64 made) only as the message is read.
pub fn reassemble(dir: Option<&Path>, stub: Stub<'_>) -> Result<MessageSource> {
    let unreadable = |what: String| Error::Unreadable {
        what: format!("{}: {what}", stub.path.display()),
    };
    let Some(dir) = dir else {
        return Err(unreadable(format!(
            "the message has external attachments (dbox metadata X), and no attachment \
             directory was given: mount with {OPTION} set to Dovecot's mail_attachment_dir"
        )));
    };
    let refs = plan(stub.ext_refs, stub.msg_size).map_err(unreadable)?;
    let mut head = [0u8; 16];
    let n = stub
        .file
        .read_at(&mut head[..stub.body_len.min(16) as usize], stub.body_start)
        .map_err(|e| Error::io(stub.path, e))?;
    if let Some(kind) = compression::detect(&head[..n]) {
        // Dovecot's zlib plugin decompresses the stored body first (`istream_opened`
        // runs before the attachments are joined, dbox-mail.c `dbox_mail_open`), so
        // `Z` then counts the decompressed body: not supported here.
        return Err(unreadable(format!(
            "the message has external attachments and its stored body is {kind}-compressed; \
             mailfs does not read that combination"
        )));
    }
    if compression::is_encrypted(&head[..n]) {
        // mail_crypt wraps the stored body the same way.
        return Err(unreadable(
            "the message has external attachments and its stored body is encrypted \
             (mail_crypt); mailfs does not read that combination"
                .into(),
        ));
    }
    body_fits(&refs, stub.msg_size, stub.body_len).map_err(unreadable)?;
    let body = Arc::new(stub.file);
    let mut pieces = Vec::with_capacity(refs.len() * 2 + 1);
    let mut body_at = 0u64; // offset in the stored body
    let mut msg_at = 0u64; // offset in the message
    for r in &refs {
        let gap = r.start_offset - msg_at;
        pieces.push(Piece::File {
            file: body.clone(),
            start: stub.body_start + body_at,
            len: gap,
        });
        body_at += gap;
        pieces.push(attachment_piece(dir, r, stub.suffix).map_err(|e| match e {
            Error::Unreadable { what } => unreadable(what),
            other => unreadable(other.to_string()),
        })?);
        msg_at = r.start_offset + r.size;
    }
    pieces.push(Piece::File {
        file: body,
        start: stub.body_start + body_at,
        len: stub.msg_size - msg_at,
    });
    Ok(MessageSource::pieces(pieces))
}

/// The references of `ext_refs`, each inside the message
/// (`istream_attachment_connector_add()`: "points outside message").
fn plan(ext_refs: &str, msg_size: u64) -> std::result::Result<Vec<ExtRef>, String> {
    let refs = dbox::parse_ext_refs(ext_refs).map_err(|e| {
        format!(
            "corrupt external attachment references (dbox metadata X, at character {}): {}",
            e.offset, e.what
        )
    })?;
    // parse_ext_refs: starts ascending, no overlap, no overflow.
    if let Some(r) = refs.iter().find(|r| r.start_offset + r.size > msg_size) {
        return Err(format!(
            "an external attachment ({:?}) points outside the {msg_size}-byte message ({} + {})",
            r.path, r.start_offset, r.size
        ));
    }
    Ok(refs)
}

/// The stored body is exactly what the message less its attachments leaves (the
/// connector reads the gaps with `i_stream_create_min_sized_range` and the rest with
/// `i_stream_create_sized_range`, so a longer or shorter body fails in Dovecot too).
fn body_fits(refs: &[ExtRef], msg_size: u64, body_len: u64) -> std::result::Result<(), String> {
    // plan(): every reference is inside the message, without overlap.
    let total: u64 = refs.iter().map(|r| r.size).sum();
    if msg_size - total != body_len {
        return Err(format!(
            "the stored body is {body_len} bytes, but the {msg_size}-byte message less its \
             external attachments ({total} bytes) leaves {} (corrupt metadata Z or X)",
            msg_size - total
        ));
    }
    Ok(())
}

/// `path` + `suffix` as a path below the attachment directory. A path that is absolute
/// or has a `..` or `.` segment is refused, never resolved (empty segments, `a//b`, are
/// harmless and left to the kernel, as Dovecot's posix fs leaves them).
fn relative_path(path: &str, suffix: &str) -> std::result::Result<PathBuf, String> {
    let joined = format!("{path}{suffix}");
    let refused = joined.is_empty()
        || joined.starts_with('/')
        || joined.contains('\0')
        || joined.split('/').any(|seg| seg == ".." || seg == ".");
    if refused {
        return Err(format!(
            "an external attachment reference names {path:?}, which is not a path inside \
             the attachment directory; refused"
        ));
    }
    Ok(PathBuf::from(joined))
}

/// The piece of the message one reference fills: the file as it is, or base64 of it.
fn attachment_piece(dir: &Path, r: &ExtRef, suffix: &str) -> Result<Piece> {
    let rel = relative_path(&r.path, suffix).map_err(|what| Error::Unreadable { what })?;
    let path = dir.join(rel);
    let (file, st) = files::open_message_file(&path).map_err(|e| Error::Unreadable {
        what: format!("external attachment {e}"),
    })?;
    let len = st.len();
    let file = Arc::new(file);
    let size_error = |made: u64, how: &str| Error::Unreadable {
        what: format!(
            "external attachment {} is {len} bytes, which {how} {made} bytes, not the {} the \
             message has for it (truncated or replaced, or a mail_attachment_fs other than \
             posix)",
            path.display(),
            r.size
        ),
    };
    if r.base64_line_len == 0 {
        if len != r.size {
            return Err(size_error(len, "is"));
        }
        return Ok(Piece::File {
            file,
            start: 0,
            len,
        });
    }
    let lines = Base64Lines::new(len, r.base64_line_len, r.base64_crlf).ok_or_else(|| {
        Error::Unreadable {
            what: format!("bad base64 line length {}", r.base64_line_len),
        }
    })?;
    if lines.encoded_len() != r.size {
        return Err(size_error(lines.encoded_len(), "in base64 are"));
    }
    Ok(Piece::Made {
        len: r.size,
        reader: Arc::new(Base64File {
            file,
            src_len: len,
            lines,
            path,
        }),
    })
}

/// An attachment file presented as base64 lines, made on demand for the range asked.
#[derive(Debug)]
struct Base64File {
    file: Arc<File>,
    src_len: u64,
    lines: Base64Lines,
    path: PathBuf,
}

/// The most output one read makes (the kernel asks for at most 1 MiB).
const MAX_READ: usize = 1 << 20;

impl ReadAt for Base64File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let total = self.lines.encoded_len();
        let want = buf
            .len()
            .min(MAX_READ)
            .min(usize::try_from(total.saturating_sub(offset)).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let (start, end) = self.lines.source_range(offset, offset + want as u64);
        let mut src = vec![0u8; (end - start) as usize];
        let mut done = 0;
        while done < src.len() {
            match self.file.read_at(&mut src[done..], start + done as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "external attachment {} ended at byte {} of {} (truncated \
                             while open)",
                            self.path.display(),
                            start + done as u64,
                            self.src_len
                        ),
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "external attachment {}: {e}",
                        self.path.display()
                    )));
                }
            }
        }
        self.lines
            .encode(offset, &src, &mut buf[..want])
            .ok_or_else(|| io::Error::other("base64 range arithmetic failed"))?;
        Ok(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_paths_stay_below_the_directory() {
        assert_eq!(
            relative_path("ab/cd/abcd-1234", "-guid-1").unwrap(),
            PathBuf::from("ab/cd/abcd-1234-guid-1")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "ab/../../x",
            "./ab",
            "ab/./x",
            "a\0b",
        ] {
            assert!(relative_path(bad, "").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_layout_must_add_up() {
        // 10 bytes of message: 3 stored, 4 attachment, 3 stored.
        let refs = plan("3 4 - a", 10).unwrap();
        assert!(body_fits(&refs, 10, 6).is_ok());
        assert!(body_fits(&refs, 10, 7).is_err(), "body too long");
        assert!(body_fits(&refs, 10, 5).is_err(), "body too short");
        assert!(plan("8 4 - a", 10).is_err(), "outside the message");
        assert!(plan("3 4 B3 a", 10).is_err(), "bad options");
        let no_dir = problem(None, "3 4 - a", 10, 1).unwrap();
        assert!(no_dir.contains("attachment-dir"), "{no_dir}");
        assert!(problem(Some(Path::new("/x")), "3 4 - ../a", 10, 1).is_some());
        assert!(problem(Some(Path::new("/x")), "3 4 - a", 10, 1).is_none());
    }
}
