//! What a store is opened with: its settings ([`StoreConfig`]) and the counters it keeps
//! ([`StoreStats`]), held together in one [`StoreContext`] per opened store (a multi-user
//! tree shares its one with every user's store). Nothing in the store layer reads a
//! setting from a global, so two stores in one process (tests, a local and a remote
//! backend side by side) can differ.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use super::decoded::DecodedCache;
use super::locks::LockMethod;

/// Settings a store is opened with.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Dovecot's `lock_method`, so that a writer's lock is recognised (never taken).
    pub lock_method: LockMethod,
    /// `--nfs-cache-flush`: open and close each stamped path before `stat`ing it, which on
    /// NFS revalidates the client's attribute cache (close-to-open consistency), as
    /// Dovecot's `mail_nfs_storage` does.
    pub nfs_cache_flush: bool,
    /// Maildir views may continue from inotify name journals: only where inotify sees
    /// every writer (a local filesystem watched with inotify).
    pub journals: bool,
    /// Parsed mailbox views kept in memory (a multi-user tree shares them out among the
    /// users whose stores are open).
    pub views: usize,
    /// Dovecot's `mail_attachment_dir`, resolved (`--attachment-dir`): where dbox
    /// messages' single-instance attachments are read from. `None`: such messages are
    /// listed and fail with EIO, naming the option.
    pub attachment_dir: Option<std::path::PathBuf>,
    /// Decoded bytes of compressed messages kept in memory (`store::decoded`), at most.
    pub decoded_cache_bytes: usize,
    /// Decoders of compressed messages kept between reads, at most.
    pub live_decoders: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            lock_method: LockMethod::Fcntl,
            nfs_cache_flush: false,
            journals: false,
            views: 256,
            attachment_dir: None,
            decoded_cache_bytes: 8 << 20,
            live_decoders: 8,
        }
    }
}

/// Counters a store keeps, for `user.mailfs.status`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Views answered from the cache.
    pub view_hits: AtomicU64,
    /// Views built.
    pub view_builds: AtomicU64,
    /// Mailbox lists answered from the cache.
    pub list_hits: AtomicU64,
    /// Mailbox lists built.
    pub list_builds: AtomicU64,
    /// View builds that continued from the previous build (by what changed) instead of
    /// reading the mailbox in full.
    pub view_continuations: AtomicU64,
    /// Of those, the ones that found nothing new and kept the previous view itself.
    pub views_unchanged: AtomicU64,
    /// Times a writer's lock was seen while reading.
    pub locks_seen: AtomicU64,
    /// The largest amount, in milliseconds, by which a stamped file's time was ahead of
    /// the local clock (0: never ahead by more than the tolerance).
    pub max_skew_ms: AtomicI64,
    /// Decoders of compressed messages started at a stream's first byte (a message's
    /// first decode, and every restart to reach bytes no longer kept).
    pub decoder_starts: AtomicU64,
    /// dbox messages read from their files (`u.N` opened, or an `m.N` read at the
    /// message's offset) to list them: those whose listed values the index and the cache
    /// did not all give (`dbox_indexed`).
    pub listing_file_reads: AtomicU64,
}

/// A store's settings, counters, and the recheck generation of its stamps.
#[derive(Debug, Default)]
pub struct StoreContext {
    /// Settings.
    pub config: StoreConfig,
    /// Counters.
    pub stats: StoreStats,
    /// Bumped by a watcher that saw the store change ([`StoreContext::recheck_all`]).
    generation: AtomicU64,
    /// Whether clock skew was warned about (once per store).
    skew_warned: AtomicBool,
    /// Decoded chunks and kept decoders of compressed messages.
    pub decoded: DecodedCache,
}

impl StoreContext {
    /// A context with `config` and zeroed counters.
    pub fn new(config: StoreConfig) -> Arc<StoreContext> {
        Arc::new(StoreContext {
            decoded: DecodedCache::new(config.decoded_cache_bytes, config.live_decoders),
            config,
            ..StoreContext::default()
        })
    }

    /// Makes every stamp of this store re-`stat` its files at its next use, however
    /// recently it was checked (a watcher saw a change).
    pub fn recheck_all(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current recheck generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True the first time it is called (for warning once).
    pub(super) fn first_skew_warning(&self) -> bool {
        !self.skew_warned.swap(true, Ordering::Relaxed)
    }

    /// Counts `n` in `counter`.
    pub(super) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Spec;
    use crate::store::MailboxName;

    /// Two stores in one process keep their own settings and counters (a global setting
    /// would give the second the first's lock method; a global counter would mix them).
    #[test]
    fn two_stores_keep_their_own_settings_and_counters() {
        let dir = std::env::temp_dir().join(format!("mailfs-ctx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for store in ["a", "b"] {
            std::fs::create_dir_all(dir.join(store).join("cur")).unwrap();
            std::fs::create_dir_all(dir.join(store).join("new")).unwrap();
        }
        let open = |name: &str, lock_method| {
            let spec = Spec::parse(&format!("maildir:{}", dir.join(name).display())).unwrap();
            crate::store::open(
                &spec,
                StoreConfig {
                    lock_method,
                    ..StoreConfig::default()
                },
            )
            .unwrap()
        };
        let a = open("a", LockMethod::Flock);
        let b = open("b", LockMethod::Dotlock);
        assert_eq!(a.context().config.lock_method, LockMethod::Flock);
        assert_eq!(b.context().config.lock_method, LockMethod::Dotlock);
        let inbox = MailboxName::parse("INBOX");
        a.view(&inbox).unwrap();
        a.view(&inbox).unwrap();
        let builds = |s: &std::sync::Arc<dyn crate::store::MailStore>| {
            let st = &s.context().stats;
            (
                st.view_builds.load(Ordering::Relaxed),
                st.view_hits.load(Ordering::Relaxed),
            )
        };
        assert_eq!(builds(&a).0 + builds(&a).1, 2);
        assert_eq!(builds(&b), (0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
