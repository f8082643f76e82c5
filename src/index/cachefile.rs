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

use std::path::Path;

use log::debug;

use crate::error::{Error, Result};
use crate::format::cache::{self, CacheField, CachedMessage, FieldIds};

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
        let data = match std::fs::read(path) {
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
        if header.indexid != view.indexid || header.file_seq != ext.reset_id {
            debug!(
                "{}: cache generation {} (indexid {}) is not the index's {} (indexid {})",
                path.display(),
                header.file_seq,
                header.indexid,
                ext.reset_id,
                view.indexid
            );
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
        let offset = u32::from_le_bytes(ext.slice(rec)?.try_into().ok()?);
        if offset == 0 {
            return None;
        }
        cache::cached_message_with(&self.data, offset, &self.fields, self.ids.as_ref()?).ok()
    }
}
