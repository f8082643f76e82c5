//! What the backends share around their caches: the mailbox list built from a directory
//! walk, and per-mailbox views, each kept while the [`Stamp`] of the files it was built
//! from still matches.
//!
//! Locks: both caches hold a leaf mutex only to clone an `Arc` out or put one in; building
//! (I/O) happens outside it. Views are built one at a time per mailbox (a per-mailbox
//! gate, held during the build); two threads missing the mailbox list may both build it,
//! and the later insert wins, which costs work, never correctness (values are immutable).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;
use parking_lot::Mutex;

use super::context::StoreContext;
use super::stamp::Stamp;
use super::{MailboxEntry, MailboxName, MailboxView, access, files};
use crate::error::Result;

/// The mailbox list, with each selectable mailbox's backend paths `P`.
#[derive(Debug)]
pub(super) struct MailboxList<P> {
    /// All entries, sorted by name, ancestors included.
    pub entries: Arc<Vec<MailboxEntry>>,
    /// Paths of the selectable mailboxes.
    pub paths: HashMap<MailboxName, P>,
    /// The directories the list was built from.
    pub stamp: Stamp,
    /// Owner, mode and mtime presented for the mount root (see [`super::access`]).
    pub root: Presented,
}

pub use super::Presented;

/// A mailbox directory a walk found.
#[derive(Debug)]
pub(super) struct FoundDir<P> {
    /// Its paths when it is selectable; `None` for a level that is no mailbox.
    pub paths: Option<P>,
    /// How it is presented: its directory's owner and mode with the directories it
    /// stands for folded in ([`super::access`]), and its mtime.
    pub presented: Presented,
}

impl<P> MailboxList<P> {
    /// Builds the list from what a walk `found`: adds every missing ancestor level
    /// (presented like the root: nothing on disk stands for it). With `no_noselect`,
    /// levels that are no mailbox are left out (Dovecot's `NO-NOSELECT`).
    pub fn from_found(
        mut found: BTreeMap<MailboxName, FoundDir<P>>,
        root: Presented,
        no_noselect: bool,
        stamp: Stamp,
    ) -> MailboxList<P> {
        let names: Vec<MailboxName> = found.keys().cloned().collect();
        for name in names {
            for depth in 1..name.0.len() {
                found
                    .entry(MailboxName(name.0[..depth].to_vec()))
                    .or_insert(FoundDir {
                        paths: None,
                        presented: root,
                    });
            }
        }
        let mut entries = Vec::with_capacity(found.len());
        let mut paths = HashMap::new();
        for (name, f) in found {
            if no_noselect && f.paths.is_none() {
                continue;
            }
            entries.push(MailboxEntry {
                name: name.clone(),
                selectable: f.paths.is_some(),
                owner: f.presented.0,
                mtime: f.presented.1,
            });
            if let Some(p) = f.paths {
                paths.insert(name, p);
            }
        }
        MailboxList {
            entries: Arc::new(entries),
            paths,
            stamp,
            root,
        }
    }
}

/// How a store root is presented at the mount root: its own owner and mode, with every
/// directory above it (each to be traversed) and `listed` (directories whose entry names
/// the root's listing shows) folded in.
pub(super) fn present_root(root: &Path, listed: &[&Path]) -> Result<Presented> {
    let st = files::dir_stat(root)?;
    let mut deps = access::ancestors(root);
    for dir in listed {
        if let Ok(d) = files::lstat(dir) {
            deps.push((files::owner_of(&d), access::Need::Read));
        }
    }
    Ok((access::restrict_all(files::owner_of(&st), &deps), st.mtime))
}

/// The current mailbox list, rebuilt when its stamp no longer matches.
#[derive(Debug)]
pub(super) struct ListCache<P> {
    slot: Mutex<Option<Arc<MailboxList<P>>>>,
    /// Where hits and builds are counted.
    ctx: Arc<StoreContext>,
}

impl<P> ListCache<P> {
    /// An empty cache counting in `ctx`.
    pub fn new(ctx: &Arc<StoreContext>) -> Self {
        ListCache {
            slot: Mutex::new(None),
            ctx: ctx.clone(),
        }
    }

    /// The cached list if still valid, else a fresh one from `build`.
    pub fn get(
        &self,
        build: impl FnOnce() -> Result<MailboxList<P>>,
    ) -> Result<Arc<MailboxList<P>>> {
        let cached = self.slot.lock().clone();
        if let Some(list) = cached
            && list.stamp.still_valid()
        {
            StoreContext::count(&self.ctx.stats.list_hits);
            return Ok(list);
        }
        StoreContext::count(&self.ctx.stats.list_builds);
        let list = Arc::new(build()?);
        *self.slot.lock() = Some(list.clone());
        Ok(list)
    }
}

impl<P> ListCache<P> {
    /// The paths the current list was built from (empty before the first build).
    pub fn watch_paths(&self) -> Vec<PathBuf> {
        self.slot
            .lock()
            .as_ref()
            .map(|l| l.stamp.paths().to_vec())
            .unwrap_or_default()
    }
}

/// A build this slow read a large mailbox in full: its temporaries (the message list
/// before it was chunked, cache and index buffers, strings) were freed in many small
/// pieces, which the allocator keeps unless asked to return them.
const FULL_BUILD: std::time::Duration = std::time::Duration::from_millis(20);

/// A built view, the stamp of what it was built from, and backend data `E` kept for the
/// next build (e.g. what was logged).
#[derive(Debug)]
pub(super) struct Built<E> {
    /// The view.
    pub view: Arc<MailboxView>,
    /// The files it was built from.
    pub stamp: Stamp,
    /// Backend data handed to the next build of the same mailbox.
    pub extra: E,
}

/// Views by mailbox (LRU), rebuilt when their stamps no longer match.
#[derive(Debug)]
pub(super) struct ViewCache<E> {
    lru: Mutex<LruCache<MailboxName, Arc<Slot<E>>>>,
    /// One build at a time per mailbox (see [`ViewCache::get`]).
    gates: Mutex<HashMap<MailboxName, Arc<Mutex<()>>>>,
    /// Where hits and builds are counted.
    ctx: Arc<StoreContext>,
}

/// A cached build and when it started.
#[derive(Debug)]
struct Slot<E> {
    built: Built<E>,
    started: Instant,
}

impl<E> ViewCache<E> {
    /// A cache of at most `capacity` views, counting in `ctx`.
    pub fn new(ctx: &Arc<StoreContext>, capacity: usize) -> ViewCache<E> {
        ViewCache {
            lru: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            gates: Mutex::new(HashMap::new()),
            ctx: ctx.clone(),
        }
    }

    /// The paths the cached view of `mailbox` was built from (empty when not cached).
    pub fn watch_paths(&self, mailbox: &MailboxName) -> Vec<PathBuf> {
        self.lru
            .lock()
            .peek(mailbox)
            .map(|s| s.built.stamp.paths().to_vec())
            .unwrap_or_default()
    }

    /// The cached view of `mailbox` if still valid, else one from `build`, which gets the
    /// previous build (if any) of the same mailbox.
    ///
    /// Builds of one mailbox are serialized by its gate, and a caller that waited at the
    /// gate takes the view another caller built meanwhile if that build started after it
    /// asked: a burst of requests (FUSE threads and the watcher at once, right after a
    /// change) costs one build, not one each. The gate is held during the build's I/O;
    /// it is the only such lock, and only builders of the same mailbox wait on it.
    pub fn get(
        &self,
        mailbox: &MailboxName,
        build: impl FnOnce(Option<&Built<E>>) -> Result<Built<E>>,
    ) -> Result<Arc<MailboxView>> {
        let asked = Instant::now();
        let cached = self.lru.lock().get(mailbox).cloned();
        if let Some(c) = &cached
            && c.built.stamp.still_valid()
        {
            StoreContext::count(&self.ctx.stats.view_hits);
            return Ok(c.built.view.clone());
        }
        let gate = self
            .gates
            .lock()
            .entry(mailbox.clone())
            .or_default()
            .clone();
        let _building = gate.lock();
        let cached = self.lru.lock().get(mailbox).cloned();
        if let Some(c) = &cached
            && (c.started >= asked || c.built.stamp.still_valid())
        {
            StoreContext::count(&self.ctx.stats.view_hits);
            return Ok(c.built.view.clone());
        }
        StoreContext::count(&self.ctx.stats.view_builds);
        let started = Instant::now();
        let built = build(cached.as_deref().map(|s| &s.built))?;
        let took = started.elapsed();
        log::debug!(
            "view of {mailbox}: {} messages built in {:.1} ms",
            built.view.messages.len() + built.view.pending.len(),
            took.as_secs_f64() * 1e3
        );
        let view = built.view.clone();
        let replaced = self
            .lru
            .lock()
            .put(mailbox.clone(), Arc::new(Slot { built, started }));
        drop(replaced);
        if took >= FULL_BUILD {
            crate::sys::return_free_memory();
        }
        Ok(view)
    }
}
