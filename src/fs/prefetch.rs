//! Read-ahead across message files: a reader going through a mailbox's messages in UID
//! order (`grep -r`, `find -exec cat`, `rsync`, notmuch; gnulib's fts walks big
//! directories in inode order, which is UID order here: see `inode`) finds the next
//! messages already in the kernel's page cache, put there with `FUSE_NOTIFY_STORE` by a
//! thread of ours, so its reads of them never come to mailfs.
//!
//! Why: on a fresh mount every message costs the reader one READ round trip through
//! `/dev/fuse` (two context switches and a wait), which is most of the first pass's cost
//! (measured: 20,000 Maildir messages, 6 syscalls of ours per message, the daemon at 25 %
//! of one CPU, the reader waiting). The kernel's own read-ahead stops at the file's end.
//!
//! How, as the kernel's read-ahead does within a file (`mm/readahead.c`: a window that
//! grows, and a marked page whose read starts the next window before the reader runs out):
//! - A read at offset 0 of a message is a hint. Two hints in rising UID order, close
//!   together, in one mailbox start a stream; a lone read (a `cat` of one file) pushes
//!   nothing.
//! - A stream pushes the next `window` messages after the hinted one, except one in the
//!   middle (the marker), left for the reader to ask for: its READ is the hint that pushes
//!   the next window, while the reader still has half a window in the cache. The window
//!   doubles up to its limit (messages and bytes).
//! - A reader faster than the pushes (`grep` reads a cached message in a few µs) catches
//!   up with them. A window it has already reached is pushed from its far end back toward
//!   it, and the pushes stop where the reader is: the reader's own READs and the pushes
//!   then share the window instead of both reading the messages just ahead of it.
//! - A window of [`SPLIT_MIN`] messages or more is pushed by two threads, every other
//!   message each (one pushing thread is slower than a `grep` reading pushed messages).
//! - A window whose first pushes wait for the disk (a cold page cache) has the rest of its
//!   messages advised to the store first (`posix_fadvise` `WILLNEED`), so that their
//!   reads go to the disk together instead of one after another: see [`Cold`].
//! - Only what the kernel holds an inode for is pushed (the kernel refuses stores for
//!   other inodes), only messages up to [`Settings::max_message`] (bigger ones are read
//!   with the kernel's own read-ahead), and only whole messages: the last page of a store
//!   that reaches the file's end is marked up to date, so nothing stale or partial can be
//!   read (`fuse_notify_store()` in `fs/fuse/dev.c`).
//!
//! The pushed pages are clean page cache, dropped by the kernel under memory pressure
//! like any other; message bytes never change (Dovecot never rewrites a stored message),
//! and an expunge invalidates the inode as before. Nothing here holds a lock while it
//! reads or writes to the kernel, and the FUSE workers only send a hint on a channel.
//! Only kernel-cached opens benefit (`--open-mode kernel` and `held`: FOPEN_KEEP_CACHE);
//! the CLI starts no prefetcher for passthrough or for remote stores (the IMAP backend
//! has its own read-ahead, which fetches; this one only copies what is on disk).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use log::debug;
use parking_lot::Mutex;

use super::inode::{InodeTable, Node};
use crate::store::{MailStore, MailboxName, MailboxView, MessageKey};

/// The kernel's page cache, as the prefetcher fills it: `fuser::Notifier` on a mount, a
/// recorder in tests.
pub trait PageCache: Send + Sync + 'static {
    /// `FUSE_NOTIFY_STORE`: `data` is inode `ino`'s content from `offset`.
    fn store(&self, ino: u64, offset: u64, data: &[u8]) -> io::Result<()>;
}

impl PageCache for fuser::Notifier {
    fn store(&self, ino: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        fuser::Notifier::store(self, fuser::INodeNo(ino), offset, data)
    }
}

/// How far ahead a stream pushes.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Messages in the first window.
    pub first_window: usize,
    /// The most messages in a window.
    pub max_window: usize,
    /// The most bytes in a window.
    pub max_window_bytes: u64,
    /// Bigger messages are left to the reader.
    pub max_message: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            first_window: 16,
            max_window: 256,
            max_window_bytes: 16 << 20,
            max_message: 1 << 20,
        }
    }
}

/// Counters for `user.mailfs.status`.
#[derive(Debug, Default)]
pub struct PrefetchStats {
    /// Messages stored into the page cache.
    pub messages: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Stores the kernel refused, or messages that could not be read (the reader then
    /// reads, and meets, the problem itself).
    pub skipped: AtomicU64,
    /// Messages the store was told would be read soon, a cold page cache found.
    pub advised: AtomicU64,
}

/// A read at the start of a message, as the FUSE workers report it.
#[derive(Debug)]
struct Hint {
    mailbox: Arc<MailboxName>,
    uid_validity: u32,
    uid: u32,
}

/// Where each mailbox's reader is (the highest UID read, or being read, from its start),
/// as the FUSE workers saw it: the prefetch thread skips what a reader already passed, so
/// that a reader faster than the pushes never waits behind pushes of messages it read
/// itself.
type Positions = Arc<Mutex<HashMap<(Arc<MailboxName>, u32), u32>>>;

/// The FUSE workers' side: hints go to the prefetch thread; when its queue is full they
/// are dropped (a hint is advice).
#[derive(Debug)]
pub struct Prefetcher {
    hints: SyncSender<Hint>,
    positions: Positions,
    stats: Arc<PrefetchStats>,
}

impl Prefetcher {
    /// Starts the prefetch thread; it ends when the [`Prefetcher`] is dropped.
    pub fn spawn(
        store: Arc<dyn MailStore>,
        inodes: Arc<InodeTable>,
        cache: impl PageCache,
        settings: Settings,
    ) -> io::Result<Prefetcher> {
        let (tx, rx) = sync_channel(64);
        let stats = Arc::new(PrefetchStats::default());
        let positions = Positions::default();
        let mut worker = Worker {
            pushing: Pushing {
                positions: positions.clone(),
                store,
                inodes,
                cache,
                stats: stats.clone(),
            },
            settings,
            streams: HashMap::new(),
            bufs: Default::default(),
        };
        std::thread::Builder::new()
            .name("mailfs-prefetch".into())
            .spawn(move || worker.run(rx))?;
        Ok(Prefetcher {
            hints: tx,
            positions,
            stats,
        })
    }

    /// A reader read message `uid` of `mailbox` from its start.
    pub fn hint(&self, mailbox: &Arc<MailboxName>, uid_validity: u32, uid: u32) {
        {
            let mut positions = self.positions.lock();
            if positions.len() >= 2 * STREAMS {
                positions.clear();
            }
            let at = positions
                .entry((mailbox.clone(), uid_validity))
                .or_insert(uid);
            *at = (*at).max(uid);
        }
        let hint = Hint {
            mailbox: mailbox.clone(),
            uid_validity,
            uid,
        };
        match self.hints.try_send(hint) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// The counters.
    pub fn stats(&self) -> &PrefetchStats {
        &self.stats
    }
}

/// UIDs further apart than this after the previous hint (or the pushed front) are not
/// a sequential reader.
const SEQUENTIAL_GAP: u32 = 64;

/// Mailboxes with a stream remembered at most; the oldest are forgotten beyond.
const STREAMS: usize = 64;

/// Whether a window's pushes wait for the disk, as their durations show.
///
/// From the page cache a push takes 20-40 µs (open, `pread`, `FUSE_NOTIFY_STORE` of a
/// 10 KB message), from this project's VM disk 150-700 µs (a fast SSD's read takes about
/// 100 µs); the scheduler also makes some warm pushes slow (measured: 77 of 15,184 over
/// 150 µs during a first-pass `grep -r` on 2 busy cores). So a window is cold after
/// [`Cold::SLOW_PUSHES`] slow pushes that make up at least a quarter of its pushes so far.
#[derive(Debug, Default)]
struct Cold {
    pushes: u32,
    slow: u32,
    advised: bool,
}

impl Cold {
    /// A push that took this long waited for the disk (or for the CPU).
    const SLOW: Duration = Duration::from_micros(100);
    /// Slow pushes before a window is taken for cold.
    const SLOW_PUSHES: u32 = 3;

    /// Counts one push that took `took`; true once, when the window turns out cold.
    fn pushed(&mut self, took: Duration) -> bool {
        self.pushes += 1;
        if took >= Self::SLOW {
            self.slow += 1;
        }
        let cold = !self.advised && self.slow >= Self::SLOW_PUSHES && self.slow * 4 >= self.pushes;
        self.advised |= cold;
        cold
    }
}

/// One mailbox's reader, as the hints show it.
#[derive(Debug, Default, Clone, Copy)]
struct Stream {
    /// The UID of the last hint.
    last_hint: u32,
    /// The highest UID pushed (0: none).
    front: u32,
    /// The UID left unpushed in the last window, whose READ starts the next (0: none).
    marker: u32,
    /// The next window's size in messages (0: not started).
    window: usize,
    /// When the stream was last used (a counter), for forgetting the oldest.
    used: u64,
}

struct Worker<C> {
    pushing: Pushing<C>,
    settings: Settings,
    streams: HashMap<(Arc<MailboxName>, u32), Stream>,
    /// One per pushing thread, reused for every message read.
    bufs: [Vec<u8>; PUSHING_THREADS],
}

/// What the pushing threads share.
struct Pushing<C> {
    positions: Positions,
    store: Arc<dyn MailStore>,
    inodes: Arc<InodeTable>,
    cache: C,
    stats: Arc<PrefetchStats>,
}

/// Threads that push one window's messages: the prefetch thread and a scoped helper.
/// A push (open, `pread`, `FUSE_NOTIFY_STORE`) costs 15-20 µs of CPU and a `grep`
/// reads a pushed message in about 8 µs, so one pushing thread falls behind a fast reader,
/// which then reads the messages itself, a READ round trip each.
const PUSHING_THREADS: usize = 2;

/// Windows with fewer messages to push are pushed by the prefetch thread alone (a
/// scoped thread costs tens of µs to start).
const SPLIT_MIN: usize = 32;

impl<C: PageCache> Worker<C> {
    fn run(&mut self, hints: Receiver<Hint>) {
        let mut clock = 0u64;
        while let Ok(hint) = hints.recv() {
            clock += 1;
            self.on_hint(hint, clock);
        }
    }

    fn on_hint(&mut self, hint: Hint, clock: u64) {
        let key = (hint.mailbox.clone(), hint.uid_validity);
        if !self.streams.contains_key(&key) && self.streams.len() >= STREAMS {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.streams.remove(&k);
            }
        }
        let mut s = self.streams.get(&key).copied().unwrap_or_default();
        s.used = clock;
        let uid = hint.uid;
        let reach = s.last_hint.max(s.front);
        let sequential = s.last_hint != 0
            && uid > s.last_hint
            && (uid == s.marker || uid <= reach.saturating_add(SEQUENTIAL_GAP));
        s.last_hint = uid;
        // A read inside what was pushed, other than the marker, means the kernel dropped
        // pages (or the reader jumped back): nothing to push.
        let due = sequential && (uid == s.marker || uid > s.front);
        if due {
            s.window = if s.window == 0 {
                self.settings.first_window
            } else {
                (s.window * 2).min(self.settings.max_window)
            };
            let from = s.front.max(uid);
            let (front, marker) = self.push(&hint, from, s.window);
            s.front = front.max(s.front);
            s.marker = marker;
        }
        self.streams.insert(key, s);
    }

    /// Pushes up to `window` messages after UID `from`, leaving the one in the middle
    /// out; the highest UID of the window (or `from`) and the one left out (0: none).
    ///
    /// Where the reader has already reached `from` (the first window, or a reader that
    /// overtook the pushes) the window is pushed from its far end back toward the
    /// reader, stopping at what the reader has reached: the reader reads the near part
    /// itself (READ round trips) while the pushes fill the far part, so the two share the
    /// window instead of both working on the messages just ahead of the reader (pushed
    /// in rising order, every message the reader overtook was read twice: measured on
    /// 20,000 Maildir messages, `grep -rl`, 6,600-19,900 READs beside 19,000 pushes).
    /// A reader still behind `from` (the marker's read) needs the near messages first:
    /// that window is pushed in rising order, skipping what the reader passes meanwhile.
    ///
    /// A cold page cache: pushes that wait for the disk ([`Cold`]) mean the messages are
    /// read from the disk one at a time, each waiting for the last, as any reader of one
    /// file after another does (measured on this project's VM: 2,000 message files read by
    /// 8 readers at once in a third of the time of one). Then the rest of the window is
    /// advised first ([`MailStore::will_need`]): their reads go to the disk together, and
    /// the pushes, and the reader's own READs of the messages near it, find them arriving.
    /// Every window starts unadvised: an advised window's pushes are fast whether its
    /// messages were cached or not, so only a window's first pushes tell.
    fn push(&mut self, hint: &Hint, from: u32, window: usize) -> (u32, u32) {
        let key = (hint.mailbox.clone(), hint.uid_validity);
        let view = match self.pushing.store.view(&hint.mailbox) {
            Ok(v) if v.uid_validity == hint.uid_validity => v,
            Ok(_) => return (from, 0),
            Err(e) => {
                debug!("prefetch: {}: {e}", hint.mailbox);
                return (from, 0);
            }
        };
        let middle = window / 2;
        let (mut front, mut marker, mut bytes) = (from, 0, 0u64);
        // The UIDs the window pushes (the marker left out), in UID order; what it needs of
        // each message is read without unpacking the message.
        let mut due: Vec<u32> = Vec::with_capacity(window);
        for (i, m) in view.messages.briefs_after(from).take(window).enumerate() {
            front = m.uid;
            if i == middle {
                marker = m.uid;
                continue;
            }
            if m.size == 0 || m.size > self.settings.max_message || !m.readable {
                continue;
            }
            bytes += m.size;
            due.push(m.uid);
            if bytes >= self.settings.max_window_bytes {
                break;
            }
        }
        let overtaken = self.pushing.reader_at(&key) >= from;
        if overtaken {
            due.reverse();
        }
        if due.len() < SPLIT_MIN {
            self.pushing
                .push_all(&mut self.bufs[0], hint, &view, &due, overtaken);
            return (front, marker);
        }
        // Every other message to the helper: both threads work from the near end of the
        // window (the reader's side, or the far end when the reader overtook) outward.
        let mine: Vec<u32> = due.iter().step_by(2).copied().collect();
        let theirs: Vec<u32> = due.iter().skip(1).step_by(2).copied().collect();
        let pushing = &self.pushing;
        let [buf, helper_buf] = &mut self.bufs;
        std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("mailfs-prefetch".into())
                .spawn_scoped(scope, || {
                    pushing.push_all(helper_buf, hint, &view, &theirs, overtaken);
                });
            match helper {
                Ok(_) => pushing.push_all(buf, hint, &view, &mine, overtaken),
                // No thread: this one pushes the whole window.
                Err(_) => pushing.push_all(buf, hint, &view, &due, overtaken),
            }
        });
        (front, marker)
    }
}

impl<C: PageCache> Pushing<C> {
    /// Pushes `due` in order, skipping (`overtaken`: stopping at) what the reader reached.
    fn push_all(
        &self,
        buf: &mut Vec<u8>,
        hint: &Hint,
        view: &MailboxView,
        due: &[u32],
        overtaken: bool,
    ) {
        let key = (hint.mailbox.clone(), hint.uid_validity);
        let mut cold = Cold::default();
        for (i, &uid) in due.iter().enumerate() {
            if uid <= self.reader_at(&key) {
                if overtaken {
                    // Read (or being read) by the reader itself, and so is all before it.
                    break;
                }
                continue;
            }
            let message = MessageKey::Uid(uid);
            let node = Node::Message {
                mailbox: hint.mailbox.clone(),
                uid_validity: hint.uid_validity,
                key: message.clone(),
            };
            let Some(ino) = self.inodes.known(&node) else {
                continue;
            };
            let started = Instant::now();
            match self.store_message(buf, &hint.mailbox, view, &message, ino) {
                Ok(n) => {
                    self.stats.messages.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    debug!("prefetch: {} UID {uid}: {e}", hint.mailbox);
                }
            }
            if cold.pushed(started.elapsed()) {
                self.advise(&hint.mailbox, view, &due[i + 1..]);
            }
        }
    }

    /// Advises the store that `due` will be read, in that order; counted in
    /// `prefetch_advised`.
    fn advise(&self, mailbox: &MailboxName, view: &MailboxView, due: &[u32]) {
        for uid in due {
            match self.store.will_need(mailbox, view, &MessageKey::Uid(*uid)) {
                Ok(()) => {
                    self.stats.advised.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => debug!("prefetch: advice for {mailbox} UID {uid}: {e}"),
            }
        }
    }

    /// The highest UID the reader of `key` read from its start (0: none seen).
    fn reader_at(&self, key: &(Arc<MailboxName>, u32)) -> u32 {
        self.positions.lock().get(key).copied().unwrap_or(0)
    }

    /// Reads one whole message and stores it as inode `ino`'s pages; its length.
    fn store_message(
        &self,
        buf: &mut Vec<u8>,
        mailbox: &MailboxName,
        view: &MailboxView,
        key: &MessageKey,
        ino: u64,
    ) -> io::Result<u64> {
        let src = self
            .store
            .open(mailbox, view, key)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let len = usize::try_from(src.len()).map_err(io::Error::other)?;
        // Grown, never shrunk: bytes past `len` are left as they are, so a message costs
        // no zeroing unless it is the largest yet.
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let mut done = 0;
        while done < len {
            match src.read_at(&mut buf[done..len], done as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stored message is shorter than listed",
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.cache.store(ino, 0, &buf[..len])?;
        Ok(len as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MailFlags;
    use crate::store::memory::MemoryStore;

    /// One store: the inode and the bytes.
    type Stored = (u64, Vec<u8>);

    /// What was stored, in order.
    #[derive(Clone, Default)]
    struct Recorder(
        Arc<Mutex<Vec<Stored>>>,
        Arc<Mutex<Option<Racer>>>,
        Arc<Mutex<std::collections::HashSet<std::thread::ThreadId>>>,
    );

    /// A reader as fast as the pushes: it reads the next message itself at every store,
    /// and notes where it was when each store came.
    struct Racer {
        positions: Positions,
        key: (Arc<MailboxName>, u32),
        at_store: Vec<u32>,
    }

    impl PageCache for Recorder {
        fn store(&self, ino: u64, offset: u64, data: &[u8]) -> io::Result<()> {
            assert_eq!(offset, 0, "whole messages only");
            self.0.lock().push((ino, data.to_vec()));
            self.2.lock().insert(std::thread::current().id());
            if let Some(racer) = self.1.lock().as_mut() {
                let mut positions = racer.positions.lock();
                let at = positions.entry(racer.key.clone()).or_insert(0);
                racer.at_store.push(*at);
                *at += 1;
            }
            Ok(())
        }
    }

    struct Setup {
        worker: Worker<Recorder>,
        stored: Recorder,
        inbox: Arc<MailboxName>,
        inodes: Arc<InodeTable>,
        store: Arc<MemoryStore>,
    }

    /// INBOX with `n` messages (UIDs 1..=n, body "message UID"), every one held by the
    /// "kernel" except those in `unheld`.
    fn setup(n: u32, unheld: &[u32], settings: Settings) -> Setup {
        let store = Arc::new(MemoryStore::default());
        store.create("INBOX", 7);
        for uid in 1..=n {
            assert_eq!(
                store.save("INBOX", format!("message {uid}").as_bytes(), MailFlags(0)),
                uid
            );
        }
        let inbox = Arc::new(MailboxName::parse("INBOX"));
        let inodes = Arc::new(InodeTable::default());
        for uid in (1..=n).filter(|u| !unheld.contains(u)) {
            inodes.remember(&node(&inbox, uid));
        }
        let stored = Recorder::default();
        let worker = Worker {
            pushing: Pushing {
                positions: Positions::default(),
                store: store.clone(),
                inodes: inodes.clone(),
                cache: stored.clone(),
                stats: Arc::default(),
            },
            settings,
            streams: HashMap::new(),
            bufs: Default::default(),
        };
        Setup {
            worker,
            stored,
            inbox,
            inodes,
            store,
        }
    }

    fn node(inbox: &Arc<MailboxName>, uid: u32) -> Node {
        Node::Message {
            mailbox: inbox.clone(),
            uid_validity: 7,
            key: MessageKey::Uid(uid),
        }
    }

    impl Setup {
        /// A read whose position the FUSE worker recorded (as `Prefetcher::hint` does).
        fn read_here(&mut self, uid: u32) {
            let mut positions = self.worker.pushing.positions.lock();
            let at = positions.entry((self.inbox.clone(), 7)).or_insert(uid);
            *at = (*at).max(uid);
            drop(positions);
            self.read(uid);
        }

        fn read(&mut self, uid: u32) {
            let hint = Hint {
                mailbox: self.inbox.clone(),
                uid_validity: 7,
                uid,
            };
            self.worker.on_hint(hint, u64::from(uid));
        }

        /// The UIDs stored since the last call, checking each one's bytes.
        fn taken(&self) -> Vec<u32> {
            let mut out = Vec::new();
            for (ino, data) in self.stored.0.lock().drain(..) {
                let Some(Node::Message {
                    key: MessageKey::Uid(uid),
                    ..
                }) = self.inodes.get(ino)
                else {
                    panic!("stored to inode {ino:#x}, which holds no message");
                };
                assert_eq!(data, format!("message {uid}").as_bytes());
                out.push(uid);
            }
            out
        }
    }

    fn settings(first: usize, max: usize) -> Settings {
        Settings {
            first_window: first,
            max_window: max,
            ..Settings::default()
        }
    }

    #[test]
    fn a_lone_read_pushes_nothing() {
        let mut s = setup(200, &[], settings(4, 16));
        s.read(10);
        assert!(s.taken().is_empty());
        // A jump backwards or far ahead (over SEQUENTIAL_GAP UIDs) is not sequential.
        s.read(3);
        s.read(100);
        assert!(s.taken().is_empty());
    }

    /// Two reads in order start a window; the marker in its middle is left for the
    /// reader, whose read of it pushes the next, twice as big; what the reader meets
    /// beyond the front also pushes.
    #[test]
    fn windows_grow_and_the_marker_starts_the_next() {
        let mut s = setup(100, &[], settings(4, 16));
        s.read(1);
        s.read(2);
        // Window 4 after UID 2: 3, 4, (5 is the marker), 6.
        assert_eq!(s.taken(), vec![3, 4, 6]);
        // Reads of 3, 4 come from the cache; the marker's read pushes 8 after the front.
        s.read(5);
        assert_eq!(s.taken(), vec![7, 8, 9, 10, 12, 13, 14]);
        s.read(11);
        // Window 16 from 14: the marker is the 9th, UID 23.
        let want: Vec<u32> = (15..=30).filter(|&u| u != 23).collect();
        assert_eq!(s.taken(), want);
        // The window stays at its limit.
        s.read(23);
        let want: Vec<u32> = (31..=46).filter(|&u| u != 39).collect();
        assert_eq!(s.taken(), want);
        // A read inside what was pushed (the kernel dropped pages) pushes nothing.
        s.read(40);
        assert!(s.taken().is_empty());
        // A reader that overtook the front pushes from where it is.
        s.read(47);
        assert_eq!(s.taken().first(), Some(&48));
    }

    /// A reader that raced past the pushes (its hints dropped from the full queue) is
    /// not followed by pushes of what it read itself.
    #[test]
    fn what_the_reader_passed_is_not_pushed() {
        let mut s = setup(100, &[], settings(8, 16));
        s.read(1);
        s.read(2);
        assert_eq!(s.taken(), vec![3, 4, 5, 6, 8, 9, 10]);
        s.worker
            .pushing
            .positions
            .lock()
            .insert((s.inbox.clone(), 7), 40);
        // The marker's read: the next window (11..=26) is all behind the reader.
        s.read(7);
        assert!(s.taken().is_empty());
        s.read(41);
        assert_eq!(s.taken().first(), Some(&42));
    }

    /// A reader that has reached the pushed front (here: the first window, the reader as
    /// fast as the pushes) shares the next window with them: they go from its far end back
    /// toward the reader and stop where it is, so no message is both pushed and read. A
    /// window in rising order would have pushed 3, 4, 5... right behind the reader.
    #[test]
    fn a_reader_at_the_front_shares_the_window_with_the_pushes() {
        let mut s = setup(100, &[], settings(16, 16));
        *s.stored.1.lock() = Some(Racer {
            positions: s.worker.pushing.positions.clone(),
            key: (s.inbox.clone(), 7),
            at_store: Vec::new(),
        });
        s.read_here(1);
        s.read_here(2);
        // Window 16 after UID 2: 3..=18, marker 11. Pushed from 18 down; the reader moved
        // from 2 to 3, 4, ... meanwhile and they met at 10.
        let taken = s.taken();
        let racer = s.stored.1.lock().take().expect("racer");
        assert_eq!(taken, vec![18, 17, 16, 15, 14, 13, 12, 10]);
        assert_eq!(racer.at_store, vec![2, 3, 4, 5, 6, 7, 8, 9]);
        for (uid, at) in taken.iter().zip(&racer.at_store) {
            assert!(uid > at, "UID {uid} pushed after the reader reached {at}");
        }
        // A reader behind the front (the marker's read): the next window in rising order.
        s.worker
            .pushing
            .positions
            .lock()
            .insert((s.inbox.clone(), 7), 11);
        s.read(11);
        assert_eq!(
            s.taken(),
            (19..=34).filter(|&u| u != 27).collect::<Vec<_>>()
        );
    }

    /// Pushes that wait for the disk: after the third slow one, the rest of the window is
    /// advised, in the order it is pushed, so that their reads go to the disk together.
    #[test]
    fn a_window_on_the_disk_is_advised_after_its_first_slow_pushes() {
        let mut s = setup(100, &[], settings(16, 16));
        s.store.set_disk_wait(Duration::from_millis(2));
        s.read(1);
        s.read(2);
        // Window 16 after UID 2: 3..=18 without the marker 11, all pushed.
        let window: Vec<u32> = (3..=18).filter(|&u| u != 11).collect();
        assert_eq!(s.taken(), window);
        let advised: Vec<u32> = s.store.advised().into_iter().map(|(_, u)| u).collect();
        assert_eq!(
            advised,
            window[3..].to_vec(),
            "3, 4 and 5 waited; the rest advised"
        );
        assert_eq!(
            s.worker.pushing.stats.advised.load(Ordering::Relaxed),
            window.len() as u64 - 3
        );
        // Every window starts unadvised: the next one is judged by its own pushes.
        s.read(11);
        assert_eq!(s.store.advised().len(), 2 * window.len() - 6);
    }

    /// Slow pushes now and then (the scheduler) are not a cold page cache; three in a row
    /// from the start are, and so is a quarter of a window's pushes.
    #[test]
    fn a_window_is_cold_after_three_slow_pushes_making_a_quarter() {
        let fast = Duration::from_micros(30);
        let slow = Cold::SLOW;
        let mut warm = Cold::default();
        // One slow push in 20, over 400 pushes.
        let turned: Vec<usize> = (0..400)
            .filter(|i| warm.pushed(if i % 20 == 19 { slow } else { fast }))
            .collect();
        assert!(
            turned.is_empty(),
            "a warm window taken for cold at {turned:?}"
        );
        let mut cold = Cold::default();
        let turned: Vec<bool> = (0..5).map(|_| cold.pushed(slow)).collect();
        assert_eq!(
            turned,
            [false, false, true, false, false],
            "cold once, at the third"
        );
        let mut mixed = Cold::default();
        // 3 slow among 12: a quarter, turns at the twelfth.
        let turned: Vec<usize> = (0..12)
            .filter(|i| mixed.pushed(if i % 4 == 3 { slow } else { fast }))
            .collect();
        assert_eq!(turned, [11]);
    }

    /// A window of at least `SPLIT_MIN` messages is pushed by two threads, every message
    /// once.
    #[test]
    fn a_big_window_is_pushed_by_two_threads_each_message_once() {
        let mut s = setup(200, &[], settings(64, 64));
        s.read(1);
        s.read(2);
        // Window 64 after UID 2: 3..=66 without the marker, the 33rd (35).
        let mut taken = s.taken();
        taken.sort_unstable();
        let want: Vec<u32> = (3..=66).filter(|&u| u != 35).collect();
        assert_eq!(taken, want, "each message pushed once");
        assert_eq!(
            s.stored.2.lock().len(),
            PUSHING_THREADS,
            "threads that pushed"
        );
        assert_eq!(
            s.worker.pushing.stats.messages.load(Ordering::Relaxed),
            want.len() as u64
        );
    }

    #[test]
    fn only_held_inodes_and_small_messages_are_pushed() {
        let mut s = setup(
            20,
            &[4],
            Settings {
                max_message: 9, // "message 9" is 9 bytes; "message 10" is 10
                ..settings(16, 16)
            },
        );
        s.read(1);
        s.read(2);
        // 3..=18 minus the marker (11), the unheld 4 and those over 9 bytes (10 on).
        assert_eq!(s.taken(), vec![3, 5, 6, 7, 8, 9]);
        assert_eq!(s.worker.pushing.stats.messages.load(Ordering::Relaxed), 6);
    }
}
