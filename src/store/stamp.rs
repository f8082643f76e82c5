//! Change detection by `stat`: a [`Stamp`] records the identity and change time of the files
//! and directories a cached result was built from. The result is reused while every stamp
//! still matches, and rebuilt as soon as one differs.
//!
//! Timestamps come from the kernel's coarse clock, so two changes within one tick can leave
//! the same mtime. A result built within [`SETTLE`] of the newest mtime it depends on is
//! therefore *tentative*: the next use rebuilds it even if nothing seems to have changed
//! (Dovecot's `MAILDIR_SYNC_SECS` rule, with a tick-sized window for nanosecond filesystems).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::context::StoreContext;

/// How close to a change a scan must be to distrust it.
pub const SETTLE: Duration = Duration::from_millis(50);

/// A stamp that matched is trusted for this long without `stat`ing again, so that a burst
/// of requests (`ls -l`, `cat *`) costs one check, not one per file. This bounds how late a
/// change can be noticed, on top of the kernel's own cache timeouts.
pub const RECHECK_AFTER: Duration = Duration::from_millis(20);

/// Dovecot requires the clocks of machines sharing a store to agree within a second.
pub const SKEW_TOLERANCE: Duration = Duration::from_secs(1);

/// Notes a file time written by Dovecot; warns once when it is in the future by more
/// than [`SKEW_TOLERANCE`] (clock skew between the machines sharing the store).
fn note_time(ctx: &StoreContext, path: &std::path::Path, time_ns: i128, now_ns: i128) {
    let ahead_ns = time_ns - now_ns;
    if ahead_ns <= SKEW_TOLERANCE.as_nanos() as i128 {
        return;
    }
    let ahead_ms = i64::try_from(ahead_ns / 1_000_000).unwrap_or(i64::MAX);
    ctx.stats.max_skew_ms.fetch_max(ahead_ms, Ordering::Relaxed);
    if ctx.first_skew_warning() {
        log::warn!(
            "{}: modified {:.1} s in the future by this machine's clock: the clocks of the \
             machines sharing this store disagree (Dovecot needs them within 1 s; check \
             ntpd/chrony). Warned once; the largest skew seen is in user.mailfs.status",
            path.display(),
            ahead_ns as f64 / 1e9
        );
    }
}

/// What `stat` said about one path (all zero when it did not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// `stat` of `path`; with `nfs_cache_flush` preceded by an `open()`+`close()` of it,
    /// which on NFS revalidates the client's attribute cache (one open/close per check).
    fn take(path: &std::path::Path, nfs_cache_flush: bool) -> FileStamp {
        if nfs_cache_flush {
            // Opening revalidates the attributes; the handle is closed at once. Never
            // through a link: a link to a device could make the open itself act.
            let _ = crate::sys::open_file(path);
        }
        match std::fs::metadata(path) {
            Ok(m) => FileStamp {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            },
            Err(_) => FileStamp::default(),
        }
    }
}

/// Stamps of a set of paths, taken just before a scan.
#[derive(Debug)]
pub struct Stamp {
    /// The store's settings (NFS cache flush), counters (clock skew) and recheck
    /// generation.
    ctx: Arc<StoreContext>,
    paths: Vec<PathBuf>,
    stamps: Vec<FileStamp>,
    tentative: bool,
    /// When the stamps last matched the files, and the [`GENERATION`] then (None: never
    /// checked since taken).
    last_match: Mutex<Option<(Instant, u64)>>,
}

impl Stamp {
    /// Stamps `paths` now. Call this *before* reading them, so that a change during the read
    /// makes the stamp differ later.
    pub fn take(ctx: &Arc<StoreContext>, paths: Vec<PathBuf>) -> Stamp {
        let flush = ctx.config.nfs_cache_flush;
        let stamps: Vec<FileStamp> = paths.iter().map(|p| FileStamp::take(p, flush)).collect();
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let newest = stamps
            .iter()
            .map(|s| s.mtime_ns.max(s.ctime_ns))
            .max()
            .unwrap_or(0);
        for (p, s) in paths.iter().zip(&stamps) {
            note_time(ctx, p, s.mtime_ns, now_ns);
        }
        let tentative = now_ns - newest < SETTLE.as_nanos() as i128;
        Stamp {
            ctx: ctx.clone(),
            paths,
            stamps,
            tentative,
            last_match: Mutex::new(None),
        }
    }

    /// Adds a path whose stamp was not taken up front (e.g. found during the scan).
    pub fn push(&mut self, path: PathBuf) {
        self.stamps
            .push(FileStamp::take(&path, self.ctx.config.nfs_cache_flush));
        self.paths.push(path);
    }

    /// Makes the stamp never valid: what was read may be mid-update (a writer held its
    /// lock), so the next use reads again.
    pub fn mark_tentative(&mut self) {
        self.tentative = true;
    }

    /// The stamped paths (files and directories), for a watcher.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// True while nothing stamped has changed and the stamp is not tentative. Within
    /// [`RECHECK_AFTER`] of the last successful check, answers without `stat`.
    pub fn still_valid(&self) -> bool {
        if self.tentative {
            return false;
        }
        let now = Instant::now();
        let generation = self.ctx.generation();
        if let Some((at, seen)) = *self.last_match.lock()
            && seen == generation
            && now.duration_since(at) < RECHECK_AFTER
        {
            return true;
        }
        let valid = self
            .paths
            .iter()
            .zip(&self.stamps)
            .all(|(p, s)| FileStamp::take(p, self.ctx.config.nfs_cache_flush) == *s);
        if valid {
            *self.last_match.lock() = Some((now, generation));
        }
        valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_changes_and_distrusts_fresh_scans() {
        let dir = std::env::temp_dir().join(format!("mailfs-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"a").unwrap();
        // Just written: tentative, so never "still valid".
        let ctx = StoreContext::new(Default::default());
        assert!(!Stamp::take(&ctx, vec![f.clone()]).still_valid());
        std::thread::sleep(SETTLE + Duration::from_millis(20));
        let s = Stamp::take(&ctx, vec![f.clone(), dir.join("missing")]);
        assert!(s.still_valid());
        std::fs::write(&f, b"ab").unwrap();
        // Within RECHECK_AFTER the old answer stands, unless a watcher asks for a recheck
        // (of this store: another store's recheck does not touch it).
        StoreContext::new(Default::default()).recheck_all();
        assert!(s.still_valid());
        ctx.recheck_all();
        assert!(!s.still_valid());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
