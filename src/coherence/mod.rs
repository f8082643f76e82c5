//! Coherence: notices when the store changes under what the kernel was shown, and says
//! exactly what changed, so that the FUSE layer can invalidate the kernel's caches
//! explicitly and keep long cache timeouts.
//!
//! The FUSE layer registers every scope list and mailbox view it presents
//! ([`Watcher::watch`]); the first one presented becomes the target's *baseline*. The
//! watcher thread re-checks a target when something it depends on changes (inotify on the
//! directories its stamps cover, or a stat-based poll on every target each interval), and if
//! the store now returns a different snapshot it sends a [`Change`] holding the baseline and
//! the new snapshot, then makes the new snapshot the baseline. So every transition the
//! kernel could have cached is reported at least once, whatever requests did in between.
//!
//! This layer knows the store and nothing of FUSE or inode numbers. It never calls into the
//! kernel: changes go through a channel to the FUSE layer's notifier thread.
//!
//! Locks: `Shared::targets` and `Shared::added` are leaves, held only to read or replace an
//! `Arc`; store calls happen outside them.
//!
//! Memory: a tree of ten thousand users keeps some twenty thousand targets watched while
//! the kernel holds their directories, so each target's name is stored once (one
//! `Arc<Target>` shared by every map that names it), a watched directory is known by its
//! watch descriptor alone (the kernel gives a directory already watched the same one, so
//! no path is kept), and a target unwatched has its watches released at once.

pub mod baseline;
pub mod diff;
mod inotify;

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;

use self::baseline::Baseline;
use self::inotify::Fired;
use crate::store::{
    ChangeNotifier, Feed, MailStore, MailboxEntry, MailboxName, MailboxView, Pushed, Target,
};
use crate::sys::{Inotify, Wake, wait_readable};

/// How the store is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify on the directories Dovecot writes: immediate, local filesystems only.
    Inotify,
    /// `stat` every watched target each interval: works where inotify cannot see other
    /// clients' writes (NFS, GlusterFS and other FUSE or network filesystems).
    Poll(Duration),
    /// Only what the store pushes ([`Feed::Pushed`] news, or a local store's IMAP feed):
    /// no inotify watch, no polling. With `recheck`, a pushed target is checked again
    /// that long after the push: a local store on a filesystem whose client caches
    /// entries and attributes (GlusterFS's FUSE client: 1 s) may still show this machine
    /// the old state when the news arrives, and no other news would follow.
    Pushed { recheck: Option<Duration> },
}

/// Events within this long of the first are handled together (a Dovecot save is a burst:
/// message file, uidlist or index log, cache).
const DEBOUNCE: Duration = Duration::from_millis(2);

/// A target that changed is checked once more this long after (a change within the
/// timestamp granularity of the last one can leave the same stamp).
const SETTLE_RECHECK: Duration = Duration::from_millis(60);

/// How often the store root itself is checked (it can vanish without any inotify event:
/// an NFS mount dropping away, something mounted over it).
const ROOT_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the kernel may have cached for a target: the snapshot last reported.
#[derive(Debug, Clone)]
pub enum Snapshot {
    /// A scope's mailbox list.
    Scope(Arc<Vec<MailboxEntry>>),
    /// A mailbox's view.
    Mailbox(Arc<MailboxView>),
}

/// What the watcher keeps of a target's snapshot: a scope's list, a mailbox's
/// [`Baseline`].
#[derive(Debug, Clone)]
enum Kept {
    Scope(Arc<Vec<MailboxEntry>>),
    Mailbox(Baseline),
}

impl Kept {
    /// True if this was kept of `shown` itself.
    fn is(&self, shown: &Snapshot) -> bool {
        match (self, shown) {
            (Kept::Scope(a), Snapshot::Scope(b)) => Arc::ptr_eq(a, b),
            (Kept::Mailbox(a), Snapshot::Mailbox(b)) => a.is_of(b),
            _ => false,
        }
    }
}

/// How the watcher keeps the mailbox views it diffs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baselines {
    /// Whole views (the changes it sends can name every old message: the Maildir layout,
    /// whose names carry the flags).
    Whole,
    /// Small views as digests ([`baseline`]): for mounts that name messages by key alone
    /// (the eml layout). A tree of ten thousand small mailboxes then keeps a few hundred
    /// bytes for each mailbox the kernel holds, not its whole view.
    Digests,
}

/// One change the kernel must hear about.
#[derive(Debug, Clone)]
pub enum Change {
    /// A scope's mailbox list changed (mailboxes created, deleted, renamed, or their
    /// attributes changed).
    Scope {
        /// The scope.
        scope: MailboxName,
        /// The list the kernel may have seen.
        old: Arc<Vec<MailboxEntry>>,
        /// The list now.
        new: Arc<Vec<MailboxEntry>>,
    },
    /// The store root became unusable (`available` false: every request now fails with
    /// EIO, so nothing cached may be served) or usable again.
    Root {
        /// Whether the store can be served.
        available: bool,
    },
    /// A mailbox's view changed, or the mailbox cannot be found now (`new` is `None`:
    /// nothing of `old` may be served any more; it may come back, and is then reported
    /// against `old` again).
    Mailbox {
        /// The mailbox.
        name: MailboxName,
        /// The view the kernel may have seen (a digest of it where the watcher keeps
        /// [`Baselines::Digests`]).
        old: Baseline,
        /// The view now.
        new: Option<Arc<MailboxView>>,
    },
}

impl Change {
    /// True when the kernel has nothing to drop: the new snapshot presents exactly what the
    /// old one did (a view rebuilt after the store's cache let it go, or a list re-read).
    /// The FUSE layer's notifier invalidates from these same diffs and does nothing for an
    /// empty one.
    fn presents_nothing_new(&self) -> bool {
        match self {
            Change::Mailbox {
                old,
                new: Some(new),
                ..
            } => old.diff(new).is_empty(),
            Change::Scope { old, new, .. } => {
                let d = diff::ListDiff::between(old, new);
                d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty()
            }
            Change::Mailbox { new: None, .. } | Change::Root { .. } => false,
        }
    }
}

/// Counters for the status report.
#[derive(Debug, Default)]
pub struct Stats {
    /// Targets re-checked.
    pub checks: AtomicU64,
    /// Changes sent.
    pub changes: AtomicU64,
    /// Poll rounds (poll mode).
    pub polls: AtomicU64,
    /// Total time spent in poll rounds, nanoseconds.
    pub poll_nanos: AtomicU64,
    /// Re-checks that failed (logged).
    pub errors: AtomicU64,
    /// inotify queue overflows (everything re-checked).
    pub overflows: AtomicU64,
}

/// A target's name, stored once and shared by every map that names it.
type TargetRef = Arc<Target>;

/// The targets that need one watched directory, without duplicates: almost always one (a
/// mailbox's `cur/`) or two (a mailbox and its scope sharing a store's root), so one is
/// kept without a heap block (a tree of ten thousand users watches some 34,000
/// directories).
#[derive(Debug, Default)]
enum Needing {
    #[default]
    Nothing,
    One(TargetRef),
    Many(Vec<TargetRef>),
}

impl Needing {
    fn as_slice(&self) -> &[TargetRef] {
        match self {
            Needing::Nothing => &[],
            Needing::One(t) => std::slice::from_ref(t),
            Needing::Many(v) => v,
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Adds `target` unless it is there.
    fn add(&mut self, target: &TargetRef) {
        if self.as_slice().iter().any(|t| **t == **target) {
            return;
        }
        *self = match std::mem::take(self) {
            Needing::Nothing => Needing::One(target.clone()),
            Needing::One(t) => Needing::Many(vec![t, target.clone()]),
            Needing::Many(mut v) => {
                v.push(target.clone());
                Needing::Many(v)
            }
        };
    }

    /// Removes `target` if it is there.
    fn remove(&mut self, target: &Target) {
        match self {
            Needing::One(t) if **t == *target => *self = Needing::Nothing,
            Needing::Many(v) => {
                v.retain(|t| **t != *target);
                if v.len() <= 1 {
                    *self = v.pop().map_or(Needing::Nothing, Needing::One);
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn MailStore>,
    targets: Mutex<HashMap<TargetRef, Kept>>,
    /// How mailbox views are kept.
    baselines: Baselines,
    /// Targets registered, shown with a snapshot other than their baseline, or
    /// unwatched, since the thread last looked (it sets up or releases their watches and
    /// checks them).
    added: Mutex<Vec<TargetRef>>,
    /// What the store pushed since the thread last looked ([`Feed::Pushed`]).
    pushed: Mutex<Vec<Pushed>>,
    wake: Wake,
    stop: AtomicBool,
    stats: Stats,
    /// The worker's bookkeeping sizes after its last round (for tests of what is released).
    #[cfg(test)]
    held: Mutex<Held>,
}

impl Shared {
    /// What is kept of `shown` as its target's baseline.
    fn keep(&self, shown: &Snapshot) -> Kept {
        match shown {
            Snapshot::Scope(list) => Kept::Scope(list.clone()),
            Snapshot::Mailbox(view) => {
                Kept::Mailbox(Baseline::of(view, self.baselines == Baselines::Digests))
            }
        }
    }
}

/// How many entries the worker's maps hold.
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// Watched directories.
    dirs: usize,
    /// Targets with watches.
    targets: usize,
    /// Targets waiting for a settle or late re-check, or reported gone.
    pending: usize,
}

/// The watcher thread's handle. Dropping it stops the thread.
#[derive(Debug)]
pub struct Watcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `store` in `mode`; each change is given to `sink` (on the watcher's
    /// thread; it must not block).
    pub fn start(
        store: Arc<dyn MailStore>,
        mode: WatchMode,
        baselines: Baselines,
        sink: impl Fn(Change) + Send + 'static,
    ) -> std::io::Result<Watcher> {
        let inotify = match mode {
            WatchMode::Inotify => Some(Inotify::new()?),
            WatchMode::Poll(_) | WatchMode::Pushed { .. } => None,
        };
        let shared = Arc::new(Shared {
            store,
            targets: Mutex::new(HashMap::new()),
            baselines,
            added: Mutex::new(Vec::new()),
            pushed: Mutex::new(Vec::new()),
            wake: Wake::new()?,
            stop: AtomicBool::new(false),
            stats: Stats::default(),
            #[cfg(test)]
            held: Mutex::new(Held::default()),
        });
        let mut worker = Worker {
            shared: shared.clone(),
            sink: Box::new(sink),
            inotify,
            poll_every: match mode {
                WatchMode::Poll(d) => Some(d),
                WatchMode::Inotify | WatchMode::Pushed { .. } => None,
            },
            pushed_recheck: match mode {
                WatchMode::Pushed { recheck } => recheck,
                _ => None,
            },
            late: HashMap::new(),
            watches: HashMap::new(),
            target_wds: HashMap::new(),
            settle: HashMap::new(),
            gone: HashSet::new(),
            root_ok: true,
            root_transitions: 0,
        };
        // A store that learns of changes by itself queues them here and wakes the thread.
        let weak = Arc::downgrade(&shared);
        shared.store.subscribe(ChangeNotifier::new(move |what| {
            if let Some(shared) = weak.upgrade() {
                shared.pushed.lock().push(what);
                shared.wake.wake();
            }
        }));
        let thread = std::thread::Builder::new()
            .name("watcher".into())
            .spawn(move || worker.run())?;
        Ok(Watcher {
            shared,
            thread: Some(thread),
        })
    }

    /// Registers `target` with the snapshot just presented for it, unless it is already
    /// watched (then the earlier baseline stays: it may still be in the kernel's caches).
    ///
    /// If it is watched and `presented` is not its baseline, the kernel may now hold
    /// entries the baseline lacks (a request rebuilt the view before the watcher did): the
    /// target is re-checked at once, so that the baseline catches up with what was shown
    /// and a later change is diffed against it.
    pub fn watch(&self, target: &Target, presented: Snapshot) {
        let found = self
            .shared
            .targets
            .lock()
            .get_key_value(target)
            .map(|(known, baseline)| (known.clone(), baseline.is(&presented)));
        let known = match found {
            Some((_, true)) => return,
            Some((known, false)) => known,
            None => {
                // Made before the lock is taken: a digest hashes every message of the view.
                let kept = self.shared.keep(&presented);
                let mut targets = self.shared.targets.lock();
                match targets.get_key_value(target) {
                    // Registered meanwhile by another request: that baseline stays.
                    Some((_, baseline)) if baseline.is(&presented) => return,
                    Some((known, _)) => known.clone(),
                    None => {
                        let known = Arc::new(target.clone());
                        targets.insert(known.clone(), kept);
                        known
                    }
                }
            }
        };
        self.shared.added.lock().push(known);
        self.shared.wake.wake();
    }

    /// Stops watching `target` (the kernel forgot everything below it); the thread
    /// releases its watches and forgets it.
    pub fn unwatch(&self, target: &Target) {
        let removed = self.shared.targets.lock().remove_entry(target);
        if let Some((known, _)) = removed {
            self.shared.added.lock().push(known);
            self.shared.wake.wake();
        }
    }

    /// Number of targets watched.
    pub fn watched(&self) -> usize {
        self.shared.targets.lock().len()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The watcher thread's state (owned by that thread alone).
struct Worker {
    shared: Arc<Shared>,
    sink: Box<dyn Fn(Change) + Send>,
    inotify: Option<Inotify>,
    poll_every: Option<Duration>,
    /// Each watch descriptor and the targets that need it (a few at most: a mailbox and
    /// its scope share a store's root; no duplicates).
    watches: HashMap<i32, Needing>,
    /// The watch descriptors of the directories each target depends on, sorted.
    target_wds: HashMap<TargetRef, Box<[i32]>>,
    /// Targets due for a settle re-check, and when.
    settle: HashMap<TargetRef, Instant>,
    /// [`WatchMode::Pushed`]'s `recheck`.
    pushed_recheck: Option<Duration>,
    /// Pushed targets due for that re-check, and when (a later push moves it later).
    late: HashMap<TargetRef, Instant>,
    /// Mailboxes reported gone (not found) and not seen since.
    gone: HashSet<TargetRef>,
    /// Whether the store root was usable at the last check.
    root_ok: bool,
    /// [`MailStore::root_transitions`] at the last check.
    root_transitions: u64,
}

impl Worker {
    /// Publishes the sizes of the bookkeeping maps (tests).
    #[cfg(test)]
    fn publish_held(&self) {
        *self.shared.held.lock() = Held {
            dirs: self.watches.len(),
            targets: self.target_wds.len(),
            pending: self.settle.len() + self.late.len() + self.gone.len(),
        };
    }

    fn run(&mut self) {
        let mut next_poll = self.poll_every.map(|d| Instant::now() + d);
        let mut next_root_check = Instant::now() + ROOT_CHECK_EVERY;
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return;
            }
            let now = Instant::now();
            let deadline = self
                .settle
                .values()
                .chain(self.late.values())
                .copied()
                .chain(next_poll)
                .chain([next_root_check])
                .min();
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            let mut fds = vec![self.shared.wake.as_raw_fd()];
            if let Some(i) = &self.inotify {
                fds.push(i.as_raw_fd());
            }
            let ready = match wait_readable(&fds, timeout) {
                Ok(r) => r,
                Err(e) => {
                    warn!("watcher: poll failed: {e}; retrying in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            if self.shared.stop.load(Ordering::Acquire) {
                return;
            }
            self.shared.wake.drain();
            let mut dirty: HashSet<TargetRef> = HashSet::new();

            // New targets get their watches, then one check: a change between the view
            // being shown and the watches being in place would otherwise be missed.
            // Known targets shown with another snapshot are checked so their baseline
            // catches up.
            let added = std::mem::take(&mut *self.shared.added.lock());
            for t in added {
                self.sync_watches(&t);
                dirty.insert(t);
            }
            let pushed = std::mem::take(&mut *self.shared.pushed.lock());
            if !pushed.is_empty() {
                // The store saw a change: stamps must not answer from before it.
                self.shared.store.context().recheck_all();
            }
            let mut pushed_now: Vec<TargetRef> = Vec::new();
            for what in pushed {
                match what {
                    Pushed::Target(t) => {
                        if let Some((known, _)) = self.shared.targets.lock().get_key_value(&t) {
                            pushed_now.push(known.clone());
                        }
                    }
                    Pushed::Everything => {
                        pushed_now.extend(self.shared.targets.lock().keys().cloned());
                    }
                }
            }
            if let Some(after) = self.pushed_recheck {
                let at = Instant::now() + after;
                for t in &pushed_now {
                    self.late.insert(t.clone(), at);
                }
            }
            dirty.extend(pushed_now);
            if ready.get(1).copied().unwrap_or(false) {
                self.read_events(&mut dirty);
            }
            let now = Instant::now();
            if now >= next_root_check {
                next_root_check = now + ROOT_CHECK_EVERY;
                let ok = self.shared.store.check_root().is_ok();
                // A flip and back between two samples (seen by a request) counts too: the
                // kernel may have cached something from either side.
                let transitions = self.shared.store.root_transitions();
                if ok != self.root_ok || transitions != self.root_transitions {
                    self.root_ok = ok;
                    self.root_transitions = transitions;
                    self.send(Change::Root { available: ok });
                    if ok {
                        // Back: whatever changed meanwhile is reported as usual.
                        dirty.extend(self.shared.targets.lock().keys().cloned());
                    }
                }
            }
            if let (Some(at), Some(every)) = (next_poll, self.poll_every)
                && now >= at
            {
                dirty.extend(self.shared.targets.lock().keys().cloned());
                next_poll = Some(now + every);
                self.shared.stats.polls.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                self.check_all(dirty.drain().collect());
                let spent = started.elapsed();
                self.shared
                    .stats
                    .poll_nanos
                    .fetch_add(spent.as_nanos() as u64, Ordering::Relaxed);
                debug!(
                    "poll: {} targets in {:.3} ms",
                    self.shared.targets.lock().len(),
                    spent.as_secs_f64() * 1e3
                );
            }
            take_due(&mut self.settle, now, &mut dirty);
            take_due(&mut self.late, now, &mut dirty);
            if !dirty.is_empty() {
                self.check_all(dirty.into_iter().collect());
            }
            #[cfg(test)]
            self.publish_held();
        }
    }

    /// Reads inotify events (with a short debounce) and marks the targets they concern.
    fn read_events(&mut self, dirty: &mut HashSet<TargetRef>) {
        let Some(ino) = &self.inotify else { return };
        let mut fired = Fired::default();
        let until = Instant::now() + DEBOUNCE;
        loop {
            if let Err(e) = fired.read(ino) {
                warn!("watcher: reading inotify events: {e}");
                break;
            }
            // Requests arriving during the debounce must not trust a stamp checked before
            // these events (`RECHECK_AFTER`): re-stat from now on, not after the debounce.
            if !fired.changed.is_empty() || !fired.dropped.is_empty() || fired.overflow {
                self.shared.store.context().recheck_all();
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match wait_readable(&[ino.as_raw_fd()], Some(left)) {
                Ok(r) if r[0] => continue,
                _ => break,
            }
        }
        if fired.overflow {
            self.shared.stats.overflows.fetch_add(1, Ordering::Relaxed);
            info!("watcher: inotify queue overflowed; re-checking everything");
            dirty.extend(self.shared.targets.lock().keys().cloned());
        }
        for wd in fired.changed.iter().chain(fired.dropped.iter()) {
            if let Some(targets) = self.watches.get(wd) {
                dirty.extend(targets.as_slice().iter().cloned());
            }
        }
        for wd in fired.dropped {
            // The directory went away (or was replaced); the re-check re-adds watches for
            // whatever exists now.
            self.watches.remove(&wd);
        }
    }

    fn check_all(&mut self, targets: Vec<TargetRef>) {
        self.shared.store.context().recheck_all();
        for t in targets {
            self.check(&t);
        }
    }

    /// Re-checks one target against its baseline; reports and re-baselines on a change.
    fn check(&mut self, target: &TargetRef) {
        let Some(baseline) = self.shared.targets.lock().get(&**target).cloned() else {
            self.drop_watches(target);
            return;
        };
        self.shared.stats.checks.fetch_add(1, Ordering::Relaxed);
        let store = &self.shared.store;
        let now = match &**target {
            Target::Scope(scope) => store.mailboxes(scope).map(Snapshot::Scope),
            Target::Mailbox(name) => store.view(name).map(Snapshot::Mailbox),
        };
        if now.is_ok() {
            self.gone.remove(target);
        }
        match now {
            Ok(now) if !baseline.is(&now) => {
                let change = match (&baseline, &now) {
                    (Kept::Scope(old), Snapshot::Scope(new)) => Change::Scope {
                        scope: target.name().clone(),
                        old: old.clone(),
                        new: new.clone(),
                    },
                    (Kept::Mailbox(old), Snapshot::Mailbox(new)) => Change::Mailbox {
                        name: target.name().clone(),
                        old: old.clone(),
                        new: Some(new.clone()),
                    },
                    _ => return,
                };
                // Made before the lock is taken: a digest hashes every message of the view.
                let kept = self.shared.keep(&now);
                if let Some(b) = self.shared.targets.lock().get_mut(&**target) {
                    // Still watched (an unwatch meanwhile drops the new snapshot too).
                    *b = kept;
                }
                // A rebuilt snapshot equal in what it presents becomes the baseline
                // silently (the old one is freed); the settle re-check still follows, as
                // a rebuild means the store's stamps moved.
                if !change.presents_nothing_new() {
                    self.send(change);
                }
                self.settle
                    .insert(target.clone(), Instant::now() + SETTLE_RECHECK);
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                // Gone, or only for a moment (a rename or recreation in progress, an index
                // replaced under us): report it once, and keep watching with the old
                // baseline, so that whatever comes back is diffed against what the kernel
                // may hold. A mailbox really gone stops being watched when the kernel
                // forgets its directory (its parent's list change deletes the entry).
                if let (Target::Mailbox(name), Kept::Mailbox(old)) = (&**target, &baseline)
                    && self.gone.insert(target.clone())
                {
                    self.send(Change::Mailbox {
                        name: name.clone(),
                        old: old.clone(),
                        new: None,
                    });
                }
                return;
            }
            Err(e) => {
                self.shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                debug!("watcher: re-checking {target:?}: {e}");
            }
        }
        self.sync_watches(target);
    }

    fn send(&self, change: Change) {
        self.shared.stats.changes.fetch_add(1, Ordering::Relaxed);
        // The receiver is gone only while shutting down.
        (self.sink)(change);
    }

    /// Makes the inotify watches of `target` match the paths its snapshot depends on now.
    fn sync_watches(&mut self, target: &TargetRef) {
        let Some(ino) = &self.inotify else {
            return;
        };
        let paths = match self.shared.store.feed(target) {
            Feed::Paths(paths) => paths,
            // Pushed targets need no watch; nothing known: keep what we had.
            Feed::Pushed | Feed::Unknown => return,
        };
        let mut dirs: Vec<&Path> = paths.iter().filter_map(|p| watch_dir_of(p)).collect();
        dirs.sort();
        dirs.dedup();
        // Nothing known (the store dropped the snapshot from its cache): keep what we had.
        if dirs.is_empty() {
            return;
        }
        // A directory already watched gets its descriptor back (the same mask again).
        let mut wds: Vec<i32> = dirs
            .iter()
            .filter_map(|d| {
                ino.add_watch(d, inotify::MASK)
                    .inspect_err(|e| debug!("watcher: cannot watch {}: {e}", d.display()))
                    .ok()
            })
            .collect();
        wds.sort_unstable();
        wds.dedup();
        if self
            .target_wds
            .get(&**target)
            .is_some_and(|had| **had == *wds)
        {
            return;
        }
        let old = self.target_wds.remove(&**target).unwrap_or_default();
        for wd in old.iter() {
            if !wds.contains(wd) {
                Self::release(&mut self.watches, ino, *wd, target);
            }
        }
        for wd in &wds {
            self.watches.entry(*wd).or_default().add(target);
        }
        // Every descriptor in `wds` now lists `target`; none at all: every watch failed
        // (logged), and the next check tries again.
        if !wds.is_empty() {
            self.target_wds
                .insert(target.clone(), wds.into_boxed_slice());
        }
    }

    fn drop_watches(&mut self, target: &TargetRef) {
        self.settle.remove(&**target);
        self.late.remove(&**target);
        self.gone.remove(&**target);
        let Some(wds) = self.target_wds.remove(&**target) else {
            return;
        };
        if let Some(ino) = &self.inotify {
            for wd in wds.iter() {
                Self::release(&mut self.watches, ino, *wd, target);
            }
        }
    }

    /// Removes `target` from watch `wd`; removes the watch when nothing needs it.
    fn release(watches: &mut HashMap<i32, Needing>, ino: &Inotify, wd: i32, target: &Target) {
        let Some(targets) = watches.get_mut(&wd) else {
            return; // dropped by the kernel already (the directory went away)
        };
        targets.remove(target);
        if targets.is_empty() {
            watches.remove(&wd);
            ino.remove_watch(wd);
        }
    }
}

/// Moves the targets of `due` whose time came (at `now`) into `dirty`.
fn take_due(due: &mut HashMap<TargetRef, Instant>, now: Instant, dirty: &mut HashSet<TargetRef>) {
    due.retain(|t, at| {
        if *at <= now {
            dirty.insert(t.clone());
            false
        } else {
            true
        }
    });
    // A burst of changes can leave a large empty table behind.
    if due.is_empty() {
        due.shrink_to_fit();
    }
}

/// The directory to watch for a stamped path: itself if it is a directory, else its parent
/// (a file's changes are events of its directory).
fn watch_dir_of(p: &Path) -> Option<&Path> {
    if std::fs::metadata(p).is_ok_and(|m| m.is_dir()) {
        return Some(p);
    }
    p.parent()
        .filter(|d| std::fs::metadata(d).is_ok_and(|m| m.is_dir()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::format::MailFlags;
    use crate::store::memory::MemoryStore;

    /// A watcher of `store` in `mode` (small views kept as digests) and the changes it
    /// sends.
    fn watching(
        store: Arc<dyn MailStore>,
        mode: WatchMode,
    ) -> (Watcher, std::sync::mpsc::Receiver<Change>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = Watcher::start(store, mode, Baselines::Digests, move |c| {
            let _ = tx.send(c);
        })
        .unwrap();
        (watcher, rx)
    }

    /// A directory's targets: added once each, removed down to none.
    #[test]
    fn a_directory_lists_each_target_once() {
        let t = |n: &str| Arc::new(Target::Mailbox(MailboxName::parse(n)));
        let (a, b, c) = (t("A"), t("B"), t("C"));
        let mut n = Needing::default();
        assert!(n.is_empty());
        n.add(&a);
        n.add(&a);
        assert!(matches!(n, Needing::One(_)), "one target, no heap block");
        n.add(&b);
        n.add(&c);
        n.add(&b);
        assert_eq!(n.as_slice(), [a.clone(), b.clone(), c.clone()]);
        n.remove(&b);
        n.remove(&t("D"));
        assert_eq!(n.as_slice(), [a.clone(), c.clone()]);
        n.remove(&a);
        assert!(matches!(&n, Needing::One(x) if *x == c));
        n.remove(&c);
        assert!(n.is_empty());
    }

    /// A store that pushes its changes (no path to watch) is re-checked when it pushes:
    /// a delivery, a flag change and an expunge each reach the sink, in inotify mode where
    /// nothing else would wake the watcher for it.
    #[test]
    fn pushed_changes_are_reported() {
        let store = Arc::new(MemoryStore::default());
        store.create("INBOX", 7);
        let first = store.save("INBOX", b"Subject: a\n\nx\n", MailFlags::default());
        let (watcher, rx) = watching(store.clone(), WatchMode::Inotify);
        let inbox = MailboxName::parse("INBOX");
        let shown = store.view(&inbox).unwrap();
        watcher.watch(&Target::Mailbox(inbox.clone()), Snapshot::Mailbox(shown));
        // Let the first check and its settle re-check pass: from then on only a push can
        // wake the watcher for this mailbox.
        let quiet = || std::thread::sleep(SETTLE_RECHECK * 4);
        quiet();
        assert!(rx.try_recv().is_err(), "nothing changed yet");
        let next = || {
            let change = rx.recv_timeout(Duration::from_secs(2)).expect("a change");
            quiet();
            change
        };
        let second = store.save("INBOX", b"Subject: b\n\ny\n", MailFlags::default());
        let Change::Mailbox { old, new, .. } = next() else {
            panic!("expected a mailbox change");
        };
        assert!(!old.has(&crate::store::MessageKey::Uid(second)));
        assert!(
            new.unwrap()
                .get(&crate::store::MessageKey::Uid(second))
                .is_some()
        );
        store.set_flags("INBOX", first, MailFlags::SEEN);
        assert!(matches!(next(), Change::Mailbox { .. }));
        store.expunge("INBOX", first);
        let Change::Mailbox { new, .. } = next() else {
            panic!("expected a mailbox change");
        };
        assert!(
            new.unwrap()
                .get(&crate::store::MessageKey::Uid(first))
                .is_none()
        );
        assert!(watcher.stats().changes.load(Ordering::Relaxed) >= 3);
    }

    /// The watcher tests' store: a [`MemoryStore`] with the behaviour each test needs.
    #[derive(Debug, Default)]
    struct TestStore {
        inner: Arc<MemoryStore>,
        /// Every list and view asked for is a new `Arc`, equal in content (a user's store
        /// re-opened after the users' LRU let it go).
        rebuilds: bool,
        /// While set, the view every read shows: the store's reads lag its news, as a
        /// local store on GlusterFS read through a client that caches for a second.
        frozen: Mutex<Option<Arc<MailboxView>>>,
        /// Targets fed by directories: every mailbox by `root` (a file in it) and its own
        /// directory below it, the scope by `root`.
        root: Option<PathBuf>,
    }

    impl MailStore for TestStore {
        fn mailboxes(&self, scope: &MailboxName) -> crate::error::Result<Arc<Vec<MailboxEntry>>> {
            let list = self.inner.mailboxes(scope)?;
            Ok(if self.rebuilds {
                Arc::new((*list).clone())
            } else {
                list
            })
        }
        fn view(&self, mailbox: &MailboxName) -> crate::error::Result<Arc<MailboxView>> {
            if let Some(v) = &*self.frozen.lock() {
                return Ok(v.clone());
            }
            let view = self.inner.view(mailbox)?;
            Ok(if self.rebuilds {
                Arc::new((*view).clone())
            } else {
                view
            })
        }
        fn open(
            &self,
            mailbox: &MailboxName,
            view: &MailboxView,
            key: &crate::store::MessageKey,
        ) -> crate::error::Result<crate::store::MessageSource> {
            self.inner.open(mailbox, view, key)
        }
        fn local_root(&self) -> Option<&Path> {
            self.root.as_deref()
        }
        fn root_attrs(&self) -> crate::error::Result<crate::store::Presented> {
            self.inner.root_attrs()
        }
        fn feed(&self, target: &Target) -> Feed {
            let Some(root) = &self.root else {
                return self.inner.feed(target);
            };
            Feed::Paths(match target {
                Target::Scope(_) => vec![root.clone()],
                Target::Mailbox(name) => vec![root.join("index"), root.join(name.0.join("."))],
            })
        }
        fn subscribe(&self, notifier: ChangeNotifier) {
            self.inner.subscribe(notifier)
        }
        fn context(&self) -> &Arc<crate::store::StoreContext> {
            self.inner.context()
        }
    }

    /// A snapshot rebuilt equal to the baseline is no change (nothing is sent, and the
    /// baseline follows the rebuilt one, so the old is freed); a real change after it
    /// still is, diffed against what was shown.
    #[test]
    fn rebuilt_equal_snapshots_are_not_changes() {
        let inner = Arc::new(MemoryStore::default());
        inner.create("INBOX", 7);
        inner.save("INBOX", b"Subject: a\n\nx\n", MailFlags::default());
        let store = Arc::new(TestStore {
            inner: inner.clone(),
            rebuilds: true,
            ..TestStore::default()
        });
        let (watcher, rx) = watching(store.clone(), WatchMode::Inotify);
        let inbox = MailboxName::parse("INBOX");
        let shown = store.view(&inbox).unwrap();
        let root = MailboxName(Vec::new());
        watcher.watch(
            &Target::Mailbox(inbox.clone()),
            Snapshot::Mailbox(shown.clone()),
        );
        watcher.watch(
            &Target::Scope(root.clone()),
            Snapshot::Scope(store.mailboxes(&root).unwrap()),
        );
        // The first checks and their settle re-checks rebuild both snapshots.
        std::thread::sleep(SETTLE_RECHECK * 4);
        assert!(watcher.stats().checks.load(Ordering::Relaxed) >= 2);
        if let Ok(c) = rx.try_recv() {
            panic!("a rebuild equal to the baseline was sent as a change: {c:?}");
        }
        let baseline = match watcher
            .shared
            .targets
            .lock()
            .get(&Target::Mailbox(inbox.clone()))
        {
            Some(Kept::Mailbox(b)) => b.clone(),
            other => panic!("baseline {other:?}"),
        };
        assert!(!baseline.is_of(&shown), "the baseline follows the rebuild");
        let second = inner.save("INBOX", b"Subject: b\n\ny\n", MailFlags::default());
        let Change::Mailbox { old, new, .. } =
            rx.recv_timeout(Duration::from_secs(2)).expect("a change")
        else {
            panic!("expected a mailbox change");
        };
        assert!(!old.has(&crate::store::MessageKey::Uid(second)));
        assert!(
            new.unwrap()
                .get(&crate::store::MessageKey::Uid(second))
                .is_some()
        );
    }

    /// Whether a change the store pushed while its reads still showed the old state
    /// reaches the sink (within 1 s) once the reads catch up, with no further news.
    fn lagging_change_reported(recheck: Option<Duration>) -> bool {
        let inner = Arc::new(MemoryStore::default());
        inner.create("INBOX", 7);
        inner.save("INBOX", b"Subject: a\n\nx\n", MailFlags::default());
        let store = Arc::new(TestStore {
            inner: inner.clone(),
            ..TestStore::default()
        });
        let (watcher, rx) = watching(store.clone(), WatchMode::Pushed { recheck });
        let inbox = MailboxName::parse("INBOX");
        let shown = store.view(&inbox).unwrap();
        *store.frozen.lock() = Some(shown.clone());
        watcher.watch(&Target::Mailbox(inbox.clone()), Snapshot::Mailbox(shown));
        std::thread::sleep(SETTLE_RECHECK * 4);
        // The news arrives; the read it causes still shows the old view.
        inner.save("INBOX", b"Subject: b\n\ny\n", MailFlags::default());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            rx.try_recv().is_err(),
            "the lagging read showed nothing new"
        );
        // The client's cache expires: nothing tells the watcher.
        *store.frozen.lock() = None;
        rx.recv_timeout(Duration::from_secs(1)).is_ok()
    }

    /// Waits (up to 3 s) until the worker's maps hold `want`; returns what they held last.
    fn held_becomes(watcher: &Watcher, want: Held) -> Held {
        let until = Instant::now() + Duration::from_secs(3);
        loop {
            let held = *watcher.shared.held.lock();
            if held == want || Instant::now() > until {
                return held;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the watcher keeps for a target is released when the kernel forgets it: its
    /// directory watches (a directory shared with a target still watched stays), its
    /// entries in every map, and nothing is left once all are unwatched.
    #[test]
    fn unwatched_targets_release_their_watches() {
        let root = std::env::temp_dir().join(format!("mailfs-unwatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["A", "B"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("index"), b"").unwrap();
        let inner = Arc::new(MemoryStore::default());
        inner.create("A", 1);
        inner.create("B", 2);
        let store = Arc::new(TestStore {
            inner,
            root: Some(root.clone()),
            ..TestStore::default()
        });
        let watcher =
            Watcher::start(store.clone(), WatchMode::Inotify, Baselines::Whole, |_| {}).unwrap();
        let scope = Target::Scope(MailboxName(Vec::new()));
        watcher.watch(
            &scope,
            Snapshot::Scope(store.mailboxes(&MailboxName(Vec::new())).unwrap()),
        );
        let [a, b] = ["A", "B"].map(|n| {
            let name = MailboxName::parse(n);
            let shown = store.view(&name).unwrap();
            let t = Target::Mailbox(name);
            watcher.watch(&t, Snapshot::Mailbox(shown));
            t
        });
        let held = |dirs, targets| Held {
            dirs,
            targets,
            pending: 0,
        };
        // The root, A and B; three targets.
        assert_eq!(held_becomes(&watcher, held(3, 3)), held(3, 3));
        watcher.unwatch(&a);
        assert_eq!(held_becomes(&watcher, held(2, 2)), held(2, 2), "A released");
        watcher.unwatch(&b);
        watcher.unwatch(&scope);
        assert_eq!(
            held_becomes(&watcher, held(0, 0)),
            held(0, 0),
            "all released"
        );
        assert_eq!(watcher.watched(), 0);
        drop(watcher);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// With `recheck`, a pushed mailbox is read again later, and the change shows; the
    /// negative control: without it, the change stays unreported.
    #[test]
    fn pushed_targets_are_read_again_after_the_recheck() {
        assert!(lagging_change_reported(Some(Duration::from_millis(300))));
        assert!(!lagging_change_reported(None));
    }
}
