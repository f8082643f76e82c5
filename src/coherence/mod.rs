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

pub mod diff;
mod inotify;

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;

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

impl Snapshot {
    fn same(&self, other: &Snapshot) -> bool {
        match (self, other) {
            (Snapshot::Scope(a), Snapshot::Scope(b)) => Arc::ptr_eq(a, b),
            (Snapshot::Mailbox(a), Snapshot::Mailbox(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
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
        /// The view the kernel may have seen.
        old: Arc<MailboxView>,
        /// The view now.
        new: Option<Arc<MailboxView>>,
    },
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

#[derive(Debug)]
struct Shared {
    store: Arc<dyn MailStore>,
    targets: Mutex<HashMap<Target, Snapshot>>,
    /// Targets registered, or shown with a snapshot other than their baseline, since the
    /// thread last looked (it sets up their watches and checks them).
    added: Mutex<Vec<Target>>,
    /// What the store pushed since the thread last looked ([`Feed::Pushed`]).
    pushed: Mutex<Vec<Pushed>>,
    wake: Wake,
    stop: AtomicBool,
    stats: Stats,
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
        sink: impl Fn(Change) + Send + 'static,
    ) -> std::io::Result<Watcher> {
        let inotify = match mode {
            WatchMode::Inotify => Some(Inotify::new()?),
            WatchMode::Poll(_) | WatchMode::Pushed { .. } => None,
        };
        let shared = Arc::new(Shared {
            store,
            targets: Mutex::new(HashMap::new()),
            added: Mutex::new(Vec::new()),
            pushed: Mutex::new(Vec::new()),
            wake: Wake::new()?,
            stop: AtomicBool::new(false),
            stats: Stats::default(),
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
            dir_wd: HashMap::new(),
            wd_dir: HashMap::new(),
            wd_targets: HashMap::new(),
            target_dirs: HashMap::new(),
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
        {
            let mut targets = self.shared.targets.lock();
            match targets.get(target) {
                Some(baseline) if baseline.same(&presented) => return,
                Some(_) => {}
                None => {
                    targets.insert(target.clone(), presented);
                }
            }
        }
        self.shared.added.lock().push(target.clone());
        self.shared.wake.wake();
    }

    /// Stops watching `target` (the kernel forgot everything below it).
    pub fn unwatch(&self, target: &Target) {
        if self.shared.targets.lock().remove(target).is_some() {
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
    dir_wd: HashMap<PathBuf, i32>,
    wd_dir: HashMap<i32, PathBuf>,
    wd_targets: HashMap<i32, HashSet<Target>>,
    target_dirs: HashMap<Target, Vec<PathBuf>>,
    /// Targets due for a settle re-check, and when.
    settle: HashMap<Target, Instant>,
    /// [`WatchMode::Pushed`]'s `recheck`.
    pushed_recheck: Option<Duration>,
    /// Pushed targets due for that re-check, and when (a later push moves it later).
    late: HashMap<Target, Instant>,
    /// Mailboxes reported gone (not found) and not seen since.
    gone: HashSet<Target>,
    /// Whether the store root was usable at the last check.
    root_ok: bool,
    /// [`MailStore::root_transitions`] at the last check.
    root_transitions: u64,
}

impl Worker {
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
            let mut dirty: HashSet<Target> = HashSet::new();

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
            let mut pushed_now: Vec<Target> = Vec::new();
            for what in pushed {
                match what {
                    Pushed::Target(t) if self.shared.targets.lock().contains_key(&t) => {
                        pushed_now.push(t);
                    }
                    Pushed::Target(_) => {}
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
        }
    }

    /// Reads inotify events (with a short debounce) and marks the targets they concern.
    fn read_events(&mut self, dirty: &mut HashSet<Target>) {
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
            if let Some(ts) = self.wd_targets.get(wd) {
                dirty.extend(ts.iter().cloned());
            }
        }
        for wd in fired.dropped {
            // The directory went away (or was replaced); the re-check re-adds watches for
            // whatever exists now.
            if let Some(dir) = self.wd_dir.remove(&wd) {
                self.dir_wd.remove(&dir);
            }
            self.wd_targets.remove(&wd);
        }
    }

    fn check_all(&mut self, targets: Vec<Target>) {
        self.shared.store.context().recheck_all();
        for t in targets {
            self.check(&t);
        }
    }

    /// Re-checks one target against its baseline; reports and re-baselines on a change.
    fn check(&mut self, target: &Target) {
        let Some(baseline) = self.shared.targets.lock().get(target).cloned() else {
            self.drop_watches(target);
            return;
        };
        self.shared.stats.checks.fetch_add(1, Ordering::Relaxed);
        let store = &self.shared.store;
        let now = match target {
            Target::Scope(scope) => store.mailboxes(scope).map(Snapshot::Scope),
            Target::Mailbox(name) => store.view(name).map(Snapshot::Mailbox),
        };
        if now.is_ok() {
            self.gone.remove(target);
        }
        match now {
            Ok(now) if !now.same(&baseline) => {
                let change = match (&baseline, &now) {
                    (Snapshot::Scope(old), Snapshot::Scope(new)) => Change::Scope {
                        scope: target.name().clone(),
                        old: old.clone(),
                        new: new.clone(),
                    },
                    (Snapshot::Mailbox(old), Snapshot::Mailbox(new)) => Change::Mailbox {
                        name: target.name().clone(),
                        old: old.clone(),
                        new: Some(new.clone()),
                    },
                    _ => return,
                };
                self.shared.targets.lock().insert(target.clone(), now);
                self.send(change);
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
                if let (Target::Mailbox(name), Snapshot::Mailbox(old)) = (target, &baseline)
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
    fn sync_watches(&mut self, target: &Target) {
        if self.inotify.is_none() {
            return;
        }
        let paths = match self.shared.store.feed(target) {
            Feed::Paths(paths) => paths,
            // Pushed targets need no watch; nothing known: keep what we had.
            Feed::Pushed | Feed::Unknown => return,
        };
        let mut dirs: Vec<PathBuf> = paths.iter().filter_map(|p| watch_dir_of(p)).collect();
        dirs.sort();
        dirs.dedup();
        // Nothing known (the store dropped the snapshot from its cache): keep what we had.
        if dirs.is_empty() || self.target_dirs.get(target) == Some(&dirs) {
            return;
        }
        let old = self.target_dirs.remove(target).unwrap_or_default();
        for d in &old {
            if !dirs.contains(d) {
                self.release_dir(d, target);
            }
        }
        for d in &dirs {
            let added = match (self.dir_wd.get(d), &self.inotify) {
                (Some(wd), _) => Ok(*wd),
                (None, Some(ino)) => ino.add_watch(d, inotify::MASK).inspect(|&wd| {
                    self.dir_wd.insert(d.clone(), wd);
                    self.wd_dir.insert(wd, d.clone());
                }),
                (None, None) => return,
            };
            let wd = match added {
                Ok(wd) => wd,
                Err(e) => {
                    debug!("watcher: cannot watch {}: {e}", d.display());
                    continue;
                }
            };
            self.wd_targets
                .entry(wd)
                .or_default()
                .insert(target.clone());
        }
        self.target_dirs.insert(target.clone(), dirs);
    }

    fn drop_watches(&mut self, target: &Target) {
        self.settle.remove(target);
        self.late.remove(target);
        self.gone.remove(target);
        for d in self.target_dirs.remove(target).unwrap_or_default() {
            self.release_dir(&d, target);
        }
    }

    /// Removes `target` from `dir`'s watch; removes the watch when nothing needs it.
    fn release_dir(&mut self, dir: &Path, target: &Target) {
        let Some(&wd) = self.dir_wd.get(dir) else {
            return;
        };
        let empty = self.wd_targets.get_mut(&wd).is_none_or(|ts| {
            ts.remove(target);
            ts.is_empty()
        });
        if empty {
            self.wd_targets.remove(&wd);
            self.dir_wd.remove(dir);
            self.wd_dir.remove(&wd);
            if let Some(ino) = &self.inotify {
                ino.remove_watch(wd);
            }
        }
    }
}

/// Moves the targets of `due` whose time came (at `now`) into `dirty`.
fn take_due(due: &mut HashMap<Target, Instant>, now: Instant, dirty: &mut HashSet<Target>) {
    due.retain(|t, at| {
        if *at <= now {
            dirty.insert(t.clone());
            false
        } else {
            true
        }
    });
}

/// The directory to watch for a stamped path: itself if it is a directory, else its parent
/// (a file's changes are events of its directory).
fn watch_dir_of(p: &Path) -> Option<PathBuf> {
    if std::fs::metadata(p).is_ok_and(|m| m.is_dir()) {
        return Some(p.to_path_buf());
    }
    p.parent()
        .filter(|d| std::fs::metadata(d).is_ok_and(|m| m.is_dir()))
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MailFlags;
    use crate::store::memory::MemoryStore;

    /// A store that pushes its changes (no path to watch) is re-checked when it pushes:
    /// a delivery, a flag change and an expunge each reach the sink, in inotify mode where
    /// nothing else would wake the watcher for it.
    #[test]
    fn pushed_changes_are_reported() {
        let store = Arc::new(MemoryStore::default());
        store.create("INBOX", 7);
        let first = store.save("INBOX", b"Subject: a\n\nx\n", MailFlags::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = Watcher::start(store.clone(), WatchMode::Inotify, move |c| {
            let _ = tx.send(c);
        })
        .unwrap();
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
        assert!(old.get(&crate::store::MessageKey::Uid(second)).is_none());
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

    /// A store whose reads lag its news, as a local store on GlusterFS read through a
    /// client that caches for a second: while `frozen` holds a view, that view is what
    /// it shows.
    #[derive(Debug)]
    struct Lagging {
        inner: Arc<MemoryStore>,
        frozen: Mutex<Option<Arc<MailboxView>>>,
    }

    impl MailStore for Lagging {
        fn mailboxes(&self, scope: &MailboxName) -> crate::error::Result<Arc<Vec<MailboxEntry>>> {
            self.inner.mailboxes(scope)
        }
        fn view(&self, mailbox: &MailboxName) -> crate::error::Result<Arc<MailboxView>> {
            match &*self.frozen.lock() {
                Some(v) => Ok(v.clone()),
                None => self.inner.view(mailbox),
            }
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
            None
        }
        fn root_attrs(&self) -> crate::error::Result<crate::store::Presented> {
            self.inner.root_attrs()
        }
        fn feed(&self, target: &Target) -> Feed {
            self.inner.feed(target)
        }
        fn subscribe(&self, notifier: ChangeNotifier) {
            self.inner.subscribe(notifier)
        }
        fn context(&self) -> &Arc<crate::store::StoreContext> {
            self.inner.context()
        }
    }

    /// Whether a change the store pushed while its reads still showed the old state
    /// reaches the sink (within 1 s) once the reads catch up, with no further news.
    fn lagging_change_reported(recheck: Option<Duration>) -> bool {
        let inner = Arc::new(MemoryStore::default());
        inner.create("INBOX", 7);
        inner.save("INBOX", b"Subject: a\n\nx\n", MailFlags::default());
        let store = Arc::new(Lagging {
            inner: inner.clone(),
            frozen: Mutex::new(None),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = Watcher::start(store.clone(), WatchMode::Pushed { recheck }, move |c| {
            let _ = tx.send(c);
        })
        .unwrap();
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

    /// With `recheck`, a pushed mailbox is read again later, and the change shows; the
    /// negative control: without it, the change stays unreported.
    #[test]
    fn pushed_targets_are_read_again_after_the_recheck() {
        assert!(lagging_change_reported(Some(Duration::from_millis(300))));
        assert!(!lagging_change_reported(None));
    }
}
