//! Reading cached values (`dovecot.index.cache`) for the messages of an index view.
//!
//! The cache only holds copies, but Dovecot's getters consult it before the file system
//! (`index_mail_get_save_date` and friends), so matching `doveadm fetch` exactly means
//! reading it. It is trusted only when its `indexid` equals the index's and its `file_seq`
//! equals the `cache` extension's `reset_id` (otherwise the offsets in the index refer to
//! another generation of the file). Any inconsistency means "no cached value", never an
//! error for the message: the store falls back to its authoritative source.
//!
//! Dovecot appends records and updates header counters in place with `pwrite`; a purge
//! writes a new file and renames it. The whole file is read with `pread` (no mmap).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use log::debug;

use crate::error::{Error, Result};
use crate::format::cache::{self, CacheField, CacheHeader, CachedMessage, FieldIds};
use crate::format::le;

use super::reader::IndexView;

/// A cache file as read once, with its current field list.
#[derive(Debug)]
pub struct CacheSnapshot {
    data: Vec<u8>,
    fields: Vec<CacheField>,
    /// The wanted fields' numbers; `None` when their types are wrong (a corrupted cache:
    /// nothing is taken from it, as Dovecot would).
    ids: Option<FieldIds>,
}

impl CacheSnapshot {
    /// Reads the cache file at `path` if it belongs to `view`'s index generation.
    /// `Ok(None)`: no cache file, or one for another generation.
    pub fn read(path: &Path, view: &IndexView) -> Result<Option<CacheSnapshot>> {
        let Some((_, ext)) = view.state.ext("cache") else {
            return Ok(None);
        };
        let data = match crate::sys::read_whole(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let header = match cache::parse_cache_header(&data) {
            Ok(h) => h,
            Err(e) => {
                debug!(
                    "{}: unusable cache header ({e}); ignoring the cache",
                    path.display()
                );
                return Ok(None);
            }
        };
        if !same_generation(path, &header, view, ext.reset_id) {
            return Ok(None);
        }
        match cache::parse_fields(&data, &header) {
            Ok(fields) => {
                let ids = FieldIds::resolve(&fields)
                    .inspect_err(|e| debug!("{}: {e}; ignoring the cache", path.display()))
                    .ok();
                Ok(Some(CacheSnapshot { data, fields, ids }))
            }
            Err(e) => {
                debug!(
                    "{}: unusable cache fields ({e}); ignoring the cache",
                    path.display()
                );
                Ok(None)
            }
        }
    }

    /// The cached values of the message with this UID, if any.
    pub fn message(&self, view: &IndexView, uid: u32) -> Option<CachedMessage> {
        let (_, ext) = view.state.ext("cache")?;
        let rec = view.state.records.get(uid)?;
        let offset = le::u32_exact(ext.slice(&rec)?)?;
        if offset == 0 {
            return None;
        }
        cache::cached_message_with(&self.data, offset, &self.fields, self.ids.as_ref()?).ok()
    }
}

/// Whether the cache file's header belongs to `view`'s index generation: its `indexid`
/// is the index's and its `file_seq` the `cache` extension's `reset_id` (otherwise the
/// offsets in the index refer to another generation of the file).
fn same_generation(path: &Path, header: &CacheHeader, view: &IndexView, reset_id: u32) -> bool {
    let same = header.indexid == view.indexid && header.file_seq == reset_id;
    if !same {
        debug!(
            "{}: cache generation {} (indexid {}) is not the index's {reset_id} (indexid {})",
            path.display(),
            header.file_seq,
            header.indexid,
            view.indexid
        );
    }
    same
}

/// Cached values of single messages, however the cache file was read.
pub trait CachedValues {
    /// The cached values of the message with this UID, if any.
    fn message(&self, view: &IndexView, uid: u32) -> Option<CachedMessage>;
}

impl CachedValues for CacheSnapshot {
    fn message(&self, view: &IndexView, uid: u32) -> Option<CachedMessage> {
        CacheSnapshot::message(self, view, uid)
    }
}

/// A cache file opened for looking up a few messages: the header and the field list are
/// read with a few `pread`s, and each message's records when asked for. For a rebuild that
/// needs the cached values of the messages a refresh touched, not of the whole mailbox.
#[derive(Debug)]
pub struct CacheLookup {
    file: File,
    fields: Vec<CacheField>,
    ids: Option<FieldIds>,
}

impl CacheLookup {
    /// Opens the cache file at `path` if it belongs to `view`'s index generation (as
    /// [`CacheSnapshot::read`] decides). `Ok(None)`: no usable cache.
    pub fn open(path: &Path, view: &IndexView) -> Result<Option<CacheLookup>> {
        let Some((_, ext)) = view.state.ext("cache") else {
            return Ok(None);
        };
        let file = match crate::sys::open_file(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let read = |at: u64, len: usize| read_exact(&file, at, len);
        let header: CacheHeader = match read(0, 32).map(|h| cache::parse_cache_header(&h)) {
            Some(Ok(h)) => h,
            _ => {
                debug!(
                    "{}: unusable cache header; ignoring the cache",
                    path.display()
                );
                return Ok(None);
            }
        };
        if !same_generation(path, &header, view, ext.reset_id) {
            return Ok(None);
        }
        match cache::parse_fields_at(&read, &header) {
            Ok(fields) => {
                let ids = FieldIds::resolve(&fields).ok();
                Ok(Some(CacheLookup { file, fields, ids }))
            }
            Err(e) => {
                debug!(
                    "{}: unusable cache fields ({e}); ignoring the cache",
                    path.display()
                );
                Ok(None)
            }
        }
    }
}

impl CachedValues for CacheLookup {
    fn message(&self, view: &IndexView, uid: u32) -> Option<CachedMessage> {
        let (_, ext) = view.state.ext("cache")?;
        let rec = view.state.records.get(uid)?;
        let offset = le::u32_exact(ext.slice(&rec)?)?;
        if offset == 0 {
            return None;
        }
        let read = |at: u64, len: usize| read_exact(&self.file, at, len);
        cache::cached_message_at(&read, offset, &self.fields, self.ids.as_ref()?).ok()
    }
}

/// Exactly `len` bytes at `at` (bounded: a record or header is never near 16 MiB).
fn read_exact(file: &File, at: u64, len: usize) -> Option<Vec<u8>> {
    if len > 16 << 20 {
        return None;
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, at).ok()?;
    Some(buf)
}
