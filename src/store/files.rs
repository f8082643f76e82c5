//! File-system helpers shared by the backends: opening message files safely, counting
//! virtual sizes, presenting owners, and turning on-disk mailbox names into UTF-8 ones.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use log::warn;
use parking_lot::Mutex;

use super::{FileOwner, MailboxName};
use crate::error::{Error, Result};
use crate::format::mutf7;
use crate::sys::{self, EntryKind};

/// Opens a message file without blocking on a FIFO and without following a symbolic
/// link anywhere in its path; anything but a regular file is refused. Returns the file
/// and its `fstat` (size, times, owner: callers need not ask again).
pub fn open_message_file(path: &Path) -> Result<(File, std::fs::Metadata)> {
    let file = sys::open_file(path).map_err(|e| Error::io(path, e))?;
    message_file(file, path)
}

/// `file`, opened as the message file at `path` (by path or relative to its directory),
/// with its `fstat`, if it is a regular file.
pub fn message_file(file: File, path: &Path) -> Result<(File, std::fs::Metadata)> {
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::layout(path, "message is not a regular file"));
    }
    Ok((file, meta))
}

/// The whole of a small store file (uidlist, keywords, index), read without following
/// symbolic links; `Ok(None)` when it does not exist.
pub fn read_store_file(path: &Path) -> Result<Option<Vec<u8>>> {
    match sys::read_whole(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `lstat` of a store path (no symbolic link followed anywhere in it).
pub fn lstat(path: &Path) -> Result<sys::Stat> {
    sys::lstat(path).map_err(|e| Error::io(path, e))
}

/// A directory of the store: `lstat` of it must say directory (a link is refused).
pub fn dir_stat(path: &Path) -> Result<sys::Stat> {
    let st = lstat(path)?;
    if !st.is_dir() {
        return Err(Error::layout(
            path,
            "expected a directory, found something else",
        ));
    }
    Ok(st)
}

/// True when `path` exists as a real directory (not through a link).
pub fn is_real_dir(path: &Path) -> bool {
    sys::lstat(path).is_ok_and(|st| st.is_dir())
}

/// True when something (anything, a link included) is at `path`.
pub fn exists_nofollow(path: &Path) -> bool {
    sys::lstat(path).is_ok()
}

/// Most mailboxes (and hierarchy levels) one store listing may hold; a walk that finds
/// more fails rather than growing without bound (a hostile store can make directories
/// cheaply; Dovecot's own `mailbox_list_index` would struggle long before this).
pub const MAX_MAILBOXES: usize = 100_000;

/// The sub-directories of `dir` a mailbox walk may enter, by name, with their `lstat`:
/// symbolic links are never followed (each is logged once; see [`LinkLog`]), and each
/// real directory is entered once (by device and inode), so a walk can neither leave the
/// store nor loop. `skip` names entries that are not mailboxes.
pub fn subdirs(
    dir: &Path,
    links: &LinkLog,
    seen: &mut HashSet<(u64, u64)>,
    mut skip: impl FnMut(&[u8]) -> bool,
) -> Result<Vec<(std::ffi::OsString, sys::Stat)>> {
    let handle = sys::open_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = Vec::new();
    handle
        .read(|name, kind| {
            use std::os::unix::ffi::OsStrExt;
            if !skip(name.as_bytes()) {
                names.push((name.to_os_string(), kind));
            }
        })
        .map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for (name, kind) in names {
        match handle.kind_of(&name, kind) {
            EntryKind::Dir => {}
            EntryKind::Symlink => {
                links.note(&dir.join(&name));
                continue;
            }
            _ => continue,
        }
        let Ok(st) = handle.stat_at(&name) else {
            continue;
        };
        if !st.is_dir() || !seen.insert((st.dev, st.ino)) {
            continue;
        }
        if seen.len() > MAX_MAILBOXES {
            return Err(Error::layout(
                dir,
                format!(
                    "more than {MAX_MAILBOXES} mailbox directories in this store; refusing to \
                     list it"
                ),
            ));
        }
        out.push((name, st));
    }
    Ok(out)
}

/// Symbolic links met where a mailbox directory could be, each logged once (a store
/// rescanned after every change would otherwise log the same link again and again).
#[derive(Debug, Default)]
pub struct LinkLog {
    logged: Mutex<HashSet<PathBuf>>,
}

impl LinkLog {
    /// Logs `path` (a symbolic link that is not followed) unless it was logged before.
    pub fn note(&self, path: &Path) {
        let mut logged = self.logged.lock();
        if logged.len() < 10_000 && logged.insert(path.to_path_buf()) {
            warn!(
                "{}: a symbolic link where a mailbox directory could be; not followed (mailfs \
                 follows no symbolic links inside a store)",
                path.display()
            );
        }
    }
}

/// Size with every LF not preceded by CR counted as two bytes (Dovecot's virtual size), of
/// an open message file (`path` names it in errors).
pub fn count_virtual_size_of(mut file: File, path: &Path) -> Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut prev = 0u8;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(total);
        }
        for &c in &buf[..n] {
            if c == b'\n' && prev != b'\r' {
                total += 1;
            }
            total += 1;
            prev = c;
        }
    }
}

/// Refuses a store root that is missing, not a directory, or empty. An empty root is
/// what an unmounted network filesystem looks like: presenting it as an empty store would
/// hide the problem.
pub fn check_store_root(root: &Path) -> Result<()> {
    let meta = fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !meta.is_dir() {
        return Err(Error::layout(root, "the mail root is not a directory"));
    }
    if fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .next()
        .is_none()
    {
        return Err(Error::layout(
            root,
            "the mail root is empty (an unmounted network filesystem?); refusing to \
             present it as an empty store",
        ));
    }
    Ok(())
}

/// How deep a mailbox tree walk descends (links are not followed, so this bounds only
/// real nesting).
const MAX_TREE_DEPTH: usize = 64;

/// True (and logged) when a tree walk at `depth` should not descend into `dir`.
pub fn too_deep(dir: &Path, depth: usize) -> bool {
    if depth > MAX_TREE_DEPTH {
        warn!(
            "{}: mailbox tree deeper than {MAX_TREE_DEPTH}; not descending",
            dir.display()
        );
        return true;
    }
    false
}

/// Decodes one on-disk mailbox name level to UTF-8: modified UTF-7, or UTF-8 with the
/// location's `UTF-8` key. A level that does not decode is shown as it is (lossily) and
/// logged.
pub fn decode_level(level: &[u8], utf8_names: bool, dir: &Path) -> String {
    if utf8_names {
        if let Ok(s) = std::str::from_utf8(level) {
            return s.to_string();
        }
    } else if let Ok(s) = mutf7::decode(level) {
        return s;
    }
    let shown = String::from_utf8_lossy(level).into_owned();
    warn!(
        "{}: mailbox name level {:?} is not valid {}; shown as it is",
        dir.display(),
        shown,
        if utf8_names {
            "UTF-8"
        } else {
            "modified UTF-7"
        },
    );
    shown
}

/// Two on-disk names can decode to one UTF-8 name (Dovecot's mUTF-7 decoder accepts
/// non-canonical spellings, and invalid bytes decode lossily). The second one is then
/// shown by its raw on-disk levels (invalid UTF-8 bytes as `\xNN`), and if that is taken
/// too, with ` (2)`, ` (3)`, ... after its last level: every mailbox stays visible, none
/// hides another.
pub fn unique_name<T>(
    found: &BTreeMap<MailboxName, T>,
    decoded: MailboxName,
    raw_levels: &[&[u8]],
    path: &Path,
) -> MailboxName {
    if !found.contains_key(&decoded) {
        return decoded;
    }
    let raw = MailboxName(raw_levels.iter().map(|l| raw_text(l)).collect());
    let mut shown = raw.clone();
    let mut n = 2;
    while found.contains_key(&shown) || shown == decoded {
        shown = raw.clone();
        if let Some(last) = shown.0.last_mut() {
            last.push_str(&format!(" ({n})"));
        }
        n += 1;
    }
    warn!(
        "{}: its name decodes to {decoded}, which another mailbox already has; shown as {shown}",
        path.display()
    );
    shown
}

/// A name level's bytes as text: UTF-8 as is, anything else as `\xNN`.
fn raw_text(level: &[u8]) -> String {
    let mut out = String::new();
    for chunk in level.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Owner, group and permission bits of a file.
pub fn owner_of(st: &sys::Stat) -> FileOwner {
    FileOwner {
        uid: st.uid,
        gid: st.gid,
        mode: (st.mode & 0o7777) as u16,
    }
}

pub use crate::format::FnvMap;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_size_counts_bare_lf_only() {
        let dir = std::env::temp_dir().join(format!("mailfs-vsize-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m");
        fs::write(&p, b"a\nb\r\nc\n").unwrap();
        let (f, _) = open_message_file(&p).unwrap();
        assert_eq!(count_virtual_size_of(f, &p).unwrap(), 9);
        fs::remove_dir_all(&dir).unwrap();
    }
}
