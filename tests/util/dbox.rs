//! Reading dbox files (sdbox `u.N`, mdbox `m.N`) as Dovecot 2.3 writes them, independently
//! of mailfs: where each message, its body and its metadata block sit, and which GUID it
//! carries. Tests use it to damage a chosen message on purpose and to see how messages are
//! spread over `m.N` files.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One message in a dbox file (byte offsets in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DboxMessage {
    /// Where its message header (`\x01\x02N ...`) starts: the mdbox map offset.
    pub offset: u64,
    /// The message bytes.
    pub body: Range<u64>,
    /// The metadata block, from its `\n\x01\x03\n` magic to after its empty line.
    pub metadata: Range<u64>,
    /// The `G` metadata line.
    pub guid: String,
}

/// Parses a whole dbox file; panics (naming `what`) if it is not well formed.
pub fn parse(bytes: &[u8], what: &str) -> Vec<DboxMessage> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or_else(|| panic!("{what}: no dbox file header line"));
    let line = std::str::from_utf8(&bytes[..nl]).expect("ASCII dbox file header");
    assert!(
        line.starts_with("2 "),
        "{what}: not a dbox v2 file: {line:?}"
    );
    let hdr_len = line
        .split(' ')
        .find_map(|t| t.strip_prefix('M'))
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("{what}: no M in the file header {line:?}"));
    let mut out = Vec::new();
    let mut at = nl + 1;
    while at < bytes.len() {
        let hdr = &bytes[at..at + hdr_len];
        assert_eq!(&hdr[..3], b"\x01\x02N", "{what}: no message header at {at}");
        let size = std::str::from_utf8(&hdr[13..29])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or_else(|| panic!("{what}: bad message size at {at}"));
        let body = at + hdr_len..at + hdr_len + size;
        let meta_start = body.end;
        assert_eq!(
            &bytes[meta_start..meta_start + 4],
            b"\n\x01\x03\n",
            "{what}: no metadata magic at {meta_start}"
        );
        let mut pos = meta_start + 4;
        let mut guid = String::new();
        loop {
            let end = pos
                + bytes[pos..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or_else(|| panic!("{what}: unterminated metadata at {pos}"));
            let line = &bytes[pos..end];
            pos = end + 1;
            if line.is_empty() {
                break;
            }
            if let Some(g) = line.strip_prefix(b"G") {
                guid = String::from_utf8_lossy(g).into_owned();
            }
        }
        out.push(DboxMessage {
            offset: at as u64,
            body: body.start as u64..body.end as u64,
            metadata: meta_start as u64..pos as u64,
            guid,
        });
        at = pos;
    }
    out
}

/// Reads and parses one dbox file.
pub fn read(path: &Path) -> Vec<DboxMessage> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
    parse(&bytes, &path.display().to_string())
}

/// The `m.N` (or `u.N`, with `prefix` `"u."`) files in `dir`, by number; none if `dir` does
/// not exist.
pub fn numbered_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(u32, PathBuf)> = entries
        .map(|e| e.expect("dir entry").path())
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix(prefix)?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Overwrites `bytes.len()` bytes of the file at `offset` (the file keeps its size).
pub fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {path:?} for writing: {e}"));
    f.write_all_at(bytes, offset)
        .unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
}

/// Truncates the file to `len` bytes.
pub fn truncate(path: &Path, len: u64) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {path:?} for writing: {e}"));
    f.set_len(len)
        .unwrap_or_else(|e| panic!("truncating {path:?}: {e}"));
}
