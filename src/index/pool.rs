//! A bounded pool of open index readers, keyed by file identity, so that each mailbox's
//! index is parsed once and then refreshed incrementally.
//!
//! Key: `(dev, ino)` of the index directory plus the file prefix. A directory replaced by
//! another (mailbox deleted and recreated) gets a new key, so an old reader is never
//! applied to new files; a directory renamed (same inode, new path) gets a new reader
//! opened at its new path.
//!
//! Memory: a reader holds one view; a view costs `record_size` bytes per message (12 for a
//! typical Maildir index, 40 for mdbox) plus under 0.1 byte per message of chunk overhead
//! (see `records`), plus the extension headers and keyword names. Views handed out share
//! unchanged chunks with their successors. The pool keeps at most `capacity` readers (LRU).
//!
//! Locks: `readers` is a leaf lock held only to look up or insert an `Arc`. Each reader has
//! its own mutex, held while it reads and applies its log (I/O); it serializes refreshes
//! of that one index and nothing else.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use super::reader::{IndexPaths, IndexReader, IndexView};
use crate::error::{Error, Result};

type Key = (u64, u64, String);

/// Open readers by index identity.
#[derive(Debug)]
pub struct IndexPool {
    readers: Mutex<LruCache<Key, Arc<Mutex<IndexReader>>>>,
}

impl IndexPool {
    /// A pool of at most `capacity` readers.
    pub fn new(capacity: usize) -> IndexPool {
        IndexPool {
            readers: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The current view of the index at `paths`, refreshed; `None` when the directory has
    /// neither the index nor its log (Dovecot has not indexed the mailbox, or
    /// `INDEX=MEMORY`).
    pub fn view(&self, paths: &IndexPaths) -> Result<Option<Arc<IndexView>>> {
        let meta = match crate::sys::lstat(&paths.dir) {
            Ok(m) if m.is_dir() => m,
            Ok(_) => {
                return Err(Error::layout(
                    &paths.dir,
                    "expected a directory, found something else",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&paths.dir, e)),
        };
        let key = (meta.dev, meta.ino, paths.prefix.clone());
        let existing = self.readers.lock().get(&key).cloned();
        if let Some(reader) = existing {
            let mut r = reader.lock();
            // A renamed directory keeps its inode: the reader must then follow the new
            // path (it reopens files by path when the log rotates), so it is replaced.
            if r.paths().dir == paths.dir {
                r.refresh()?;
                return Ok(Some(r.view()));
            }
        }
        let has_files = ["", ".log"].iter().any(|ext| {
            crate::sys::lstat(&paths.dir.join(format!("{}{ext}", paths.prefix))).is_ok()
        });
        if !has_files {
            return Ok(None);
        }
        let reader = IndexReader::open(paths.clone())?;
        let view = reader.view();
        self.readers.lock().put(key, Arc::new(Mutex::new(reader)));
        Ok(Some(view))
    }
}
