//! Open directories and messages: the handle table. Handles are cloned out (`Arc`s) and
//! the table's lock released before anything is done with them, replies included.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fuser::FileAttr;
use parking_lot::Mutex;

use super::inode::Node;
use crate::store::{MailboxName, MailboxView, MessageSource};

/// An open directory, message, or file being written.
#[derive(Debug, Clone)]
pub(super) enum Handle {
    Dir(Arc<OpenDir>),
    File(Arc<OpenMessage>),
    Staged(Arc<super::staging::Staged>),
}

/// An open directory: its entries, listed at the first `readdir` (with a kernel-cached
/// listing, `opendir` is often all the kernel asks for).
#[derive(Debug)]
pub(super) struct OpenDir {
    pub ino: u64,
    pub name: Arc<MailboxName>,
    pub listing: std::sync::OnceLock<Arc<Listing>>,
}

/// An open message: its bytes, and its attributes as they were when it was opened.
#[derive(Debug)]
pub(super) struct OpenMessage {
    pub src: Arc<MessageSource>,
    pub attr: FileAttr,
    /// Handed to the kernel (passthrough): the backing id of this inode is released with it.
    pub passthrough: bool,
}

/// A directory's entries as listed at the first readdir: `.`, `..` and sub-folders kept,
/// messages made from the view as the kernel reads them (a listing of 100,000 messages
/// keeps one `Arc` to the view, not 100,000 entries).
#[derive(Debug)]
pub(super) struct Listing {
    pub head: Vec<Listed>,
    pub messages: Option<(Arc<MailboxView>, Arc<MailboxName>)>,
}

/// One directory entry with everything readdirplus needs.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub name: OsString,
    pub node: Node,
    pub attr: FileAttr,
    /// A message that cannot be read: listed with no cacheable attributes, so that every
    /// stat of it reaches `getattr` and fails with EIO.
    pub broken: bool,
}

/// The open handles by number (numbers start at 1: 0 is a file the kernel opened by
/// itself).
#[derive(Debug)]
pub(super) struct Handles {
    table: Mutex<HashMap<u64, Handle>>,
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            table: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

impl Handles {
    /// Keeps `h`; its number.
    pub(super) fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.table.lock().insert(fh, h);
        fh
    }

    /// The handle `fh`, cloned out of the table.
    pub(super) fn get(&self, fh: u64) -> Option<Handle> {
        self.table.lock().get(&fh).cloned()
    }

    /// Forgets `fh`; what it was.
    pub(super) fn remove(&self, fh: u64) -> Option<Handle> {
        self.table.lock().remove(&fh)
    }
}
