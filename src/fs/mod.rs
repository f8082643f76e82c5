//! The FUSE presentation of a store: one directory per mailbox level, one `<uid>.eml` file
//! per message (or, with `--layout maildir`, `cur/<uid>.<guid>,S=..,W=..:2,<flags>` and
//! empty `new/` and `tmp/`: see `naming`), metadata as `user.mail.*` / `user.mailbox.*`
//! xattrs. This module and `cli` are the only users of `fuser`; it knows nothing of
//! on-disk formats.
//!
//! # Consistency contract
//! Dovecot writes the store underneath us. Every request asks the store for a current view;
//! the store revalidates its cached views by `stat` (see `store::stamp`), so a change made
//! by Dovecot is seen by the next request that reaches us. What the *kernel* caches (names,
//! negative lookups, attributes, and with a watcher whole listings) is bounded by
//! `--entry-timeout`/`--attr-timeout`, and, with a watcher, invalidated explicitly by the
//! notifier thread (`notify`) as soon as the watcher reports a change; everything presented
//! is registered with the watcher for that. Message bytes are immutable for a given
//! `(mailbox, uidvalidity, uid)`, so their page cache is kept; how opens reach us, and what
//! an open file of an expunged message reads, is `--open-mode` (see `open`).
//! `docs/semantics.md` states the guarantees.
//!
//! # Changes
//! With `--rw`, `rm`, `mv`, `mkdir`, `rmdir` and `setfattr` become calls of the
//! [`MailWriter`] the mount was given (`writes`); a read-only mount's writer refuses them
//! all with EROFS. This layer never writes a store file itself.
//!
//! # Modules
//! `tree` (folder hierarchy and views), `dirtimes` (mailbox directory times that move
//! with their content), `attrs` (attributes, resolving names and inodes),
//! `listing` (directory listings), `xattrs` (extended attributes and the status report),
//! `handles` (open directories and messages), `open` (`--open-mode`, reads), `writes`
//! (changes through the writer), `dispatch` (the `fuser::Filesystem` implementation:
//! thin adapters from requests to the above and back to replies), `notify` (the notifier
//! thread), `inode`, `naming`, `errno`.
//!
//! # Locks
//! `InodeTable::slots`, `Handles::table`, `MailFs::trees` and the two of `DirTimes` are
//! independent leaf locks:
//! none is held while taking another, doing I/O, or replying to the kernel.

mod attrs;
mod dirtimes;
mod dispatch;
pub mod errno;
mod handles;
pub mod inode;
mod listing;
pub mod naming;
pub mod notify;
pub mod open;
pub mod prefetch;
pub mod staging;
mod tree;
mod writes;
mod xattrs;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use fuser::INodeNo;
use lru::LruCache;
use parking_lot::Mutex;

pub use self::attrs::Presentation;
use self::errno::ErrorReporter;
use self::handles::Handles;
use self::inode::{InodeTable, Node};
use self::naming::Naming;
use self::notify::NotifyStats;
use self::open::{Backings, OpenMode, RecentSources};
use self::staging::{Limits, Staging};
use self::tree::FolderTree;
use crate::coherence::Watcher;
use crate::error::Result;
use crate::store::{MailStore, MailWriter, MailboxName};

/// Folder trees kept built (one per scope: the whole store, or one per user).
const TREES_CACHED: NonZeroUsize = NonZeroUsize::new(64).expect("non-zero");

/// Kernel cache timeouts.
#[derive(Debug, Clone, Copy)]
pub struct CacheTimeouts {
    /// How long the kernel may trust a name -> inode answer, or a "no such name" answer.
    pub entry: Duration,
    /// How long the kernel may trust attributes.
    pub attr: Duration,
}

/// The filesystem.
#[derive(Debug)]
pub struct MailFs {
    store: Arc<dyn MailStore>,
    /// Carries out changes (a read-only mount's refuses them).
    writer: Arc<dyn MailWriter>,
    timeouts: CacheTimeouts,
    naming: Naming,
    inodes: Arc<InodeTable>,
    /// Keeps the kernel's caches in step with the store, when watching.
    watcher: Option<Arc<Watcher>>,
    /// Invalidations sent by the notifier thread.
    notify_stats: Arc<NotifyStats>,
    /// The settings in force, for `user.mailfs.status`.
    settings: Vec<(&'static str, String)>,
    handles: Handles,
    /// `--open-mode` as asked for; `init` settles what the kernel allows.
    open_mode: OpenMode,
    /// The kernel opens message files without asking (`OpenMode::Kernel`, kernel agreed).
    kernel_opens: bool,
    /// Passthrough still possible (cleared at the first refusal).
    passthrough: std::sync::atomic::AtomicBool,
    /// Stored files opened for reads by inode (kernel opens).
    recent: RecentSources,
    /// Backing ids of passthrough opens.
    backings: Backings,
    /// Reads served, for `user.mailfs.status`.
    reads: AtomicU64,
    /// Message opens that reached mailfs, for `user.mailfs.status`.
    opens: AtomicU64,
    /// READDIR and READDIRPLUS requests served, for `user.mailfs.status`.
    listings: AtomicU64,
    /// Folder trees by scope (see `MailStore::scope_depth`), most recently used kept.
    trees: Mutex<LruCache<MailboxName, Arc<FolderTree>>>,
    /// When each presented mailbox's content last changed (its directory's mtime).
    dir_times: dirtimes::DirTimes,
    errors: ErrorReporter,
    /// Files being written into mailboxes, and ghosts of those saved (`staging`).
    staging: Staging,
    /// The notifier thread's queue, for what a change made through the mount needs
    /// dropped from the kernel's caches.
    notices: Option<std::sync::mpsc::Sender<notify::Notice>>,
    /// The owner and mode the admin chose to present (`--uid/--gid/--umask`).
    presentation: Presentation,
    /// Read-ahead across messages (`prefetch`), once the mount has a kernel to push to.
    prefetch: Arc<std::sync::OnceLock<prefetch::Prefetcher>>,
}

impl MailFs {
    /// Wraps a store and the writer that carries out changes to it. With a `watcher`,
    /// everything presented is registered with it, and directory listings are cached by
    /// the kernel until the notifier invalidates them.
    pub fn new(
        store: Arc<dyn MailStore>,
        writer: Arc<dyn MailWriter>,
        timeouts: CacheTimeouts,
        naming: Naming,
        watcher: Option<Arc<Watcher>>,
        open_mode: OpenMode,
    ) -> Result<MailFs> {
        // The root must be presentable before anything is mounted.
        store.root_attrs()?;
        Ok(MailFs {
            store,
            writer,
            timeouts,
            naming,
            inodes: Arc::new(InodeTable::default()),
            watcher,
            notify_stats: Arc::new(NotifyStats::default()),
            settings: Vec::new(),
            handles: Handles::default(),
            open_mode,
            kernel_opens: false,
            passthrough: std::sync::atomic::AtomicBool::new(false),
            recent: RecentSources::default(),
            backings: Backings::default(),
            reads: AtomicU64::new(0),
            listings: AtomicU64::new(0),
            opens: AtomicU64::new(0),
            trees: Mutex::new(LruCache::new(TREES_CACHED)),
            dir_times: dirtimes::DirTimes::default(),
            errors: ErrorReporter::default(),
            staging: Staging::new(Limits::default()),
            notices: None,
            presentation: Presentation::default(),
            prefetch: Arc::default(),
        })
    }

    /// Where the notifier thread takes notices (a change made through the mount tells
    /// the kernel what it may hold of the old state).
    pub fn set_notices(&mut self, tx: std::sync::mpsc::Sender<notify::Notice>) {
        self.notices = Some(tx);
    }

    /// Presents every folder and message with this owner and mode (`--uid`, `--gid`,
    /// `--umask`) instead of the store's.
    pub fn set_presentation(&mut self, presentation: Presentation) {
        self.presentation = presentation;
    }

    /// How much the mount stages of messages being written.
    pub fn set_staging_limits(&mut self, limits: Limits) {
        self.staging = Staging::new(limits);
    }

    /// True when changes are carried out (`--rw`).
    fn writable(&self) -> bool {
        self.writer.accepts_changes()
    }

    /// Records a setting for the status report (`user.mailfs.status` on the root).
    pub fn describe(&mut self, key: &'static str, value: impl Into<String>) {
        self.settings.push((key, value.into()));
    }

    /// The counters the notifier thread updates.
    pub fn notify_stats(&self) -> Arc<NotifyStats> {
        self.notify_stats.clone()
    }

    /// Where the prefetcher goes once the session can reach the kernel (it needs the
    /// session's notifier, and the session owns this filesystem).
    pub fn prefetch_slot(&self) -> Arc<std::sync::OnceLock<prefetch::Prefetcher>> {
        self.prefetch.clone()
    }

    /// The store, for threads started beside the filesystem.
    pub fn store(&self) -> Arc<dyn MailStore> {
        self.store.clone()
    }

    /// The inode table, shared with the notifier thread.
    pub fn inodes(&self) -> Arc<InodeTable> {
        self.inodes.clone()
    }

    fn node(&self, ino: INodeNo) -> Option<Node> {
        self.inodes.get(ino.0)
    }
}

#[cfg(test)]
mod tests;
