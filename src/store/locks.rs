//! Dovecot's locks, honoured without taking any (formats doc §9.5).
//!
//! A reader must never take a lock Dovecot could wait for: an `fcntl` read lock on a log
//! blocks Dovecot's write lock (it waits up to 180 s), and even a shared `flock` on an
//! `m.N` makes Dovecot's `LOCK_EX|LOCK_NB` fail. So mailfs only *asks* whether a writer is
//! mid-update, by a method that acquires nothing:
//! - `fcntl` (Dovecot's default): `F_GETLK`, which reports a conflicting lock and takes
//!   none (it also works over NFS, through the lock manager);
//! - `flock`: the kernel's lock table, `/proc/locks` (local locks only: another NFS client's
//!   flock is invisible here);
//! - `dotlock`: `<file>.lock` exists and is fresh (younger than Dovecot's stale timeout).
//!
//! What mailfs does with the answer: it still reads (the log reader applies only complete
//! transactions and Dovecot replaces other files atomically), but it treats what it read
//! as tentative, so the next request or the watcher reads again once the writer is done.
//! It never waits.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::context::StoreContext;

/// Dovecot's `lock_method` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMethod {
    /// POSIX record locks (Dovecot's default).
    #[default]
    Fcntl,
    /// BSD `flock`.
    Flock,
    /// `<file>.lock` files.
    Dotlock,
}

impl LockMethod {
    /// Dovecot's name for it.
    pub fn name(self) -> &'static str {
        match self {
            LockMethod::Fcntl => "fcntl",
            LockMethod::Flock => "flock",
            LockMethod::Dotlock => "dotlock",
        }
    }
}

/// A dotlock older than this (and untouched) is stale: Dovecot's log and cache stale
/// timeouts are 180 s and 300 s; holders refresh theirs every 10 s.
const DOTLOCK_STALE: Duration = Duration::from_secs(180);

/// True if a writer holds `file`'s lock (by the store's `lock_method`) right now. Counts
/// it in the store's statistics.
pub fn writer_holds(ctx: &StoreContext, file: &Path) -> bool {
    let held = match ctx.config.lock_method {
        LockMethod::Fcntl => fcntl_held(file),
        LockMethod::Flock => flock_held(file),
        LockMethod::Dotlock => dotlock_fresh(file),
    };
    if held {
        StoreContext::count(&ctx.stats.locks_seen);
    }
    held
}

/// True if `<file>.lock` exists and is not stale. Dovecot always uses a dotlock for
/// `dovecot-uidlist`, whatever `lock_method` says. Counts it.
pub fn dotlock_held(ctx: &StoreContext, file: &Path) -> bool {
    let held = dotlock_fresh(file);
    if held {
        StoreContext::count(&ctx.stats.locks_seen);
    }
    held
}

fn dotlock_fresh(file: &Path) -> bool {
    let mut lock = file.as_os_str().to_owned();
    lock.push(".lock");
    let Ok(meta) = std::fs::metadata(PathBuf::from(lock)) else {
        return false;
    };
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_none_or(|age| age < DOTLOCK_STALE)
}

/// `F_GETLK` for a read lock on the whole file: reports a writer's lock, acquires nothing.
fn fcntl_held(file: &Path) -> bool {
    let Ok(f) = crate::sys::open_file(file) else {
        return false;
    };
    // Closing `f` releases no lock of ours: we never take any.
    crate::sys::read_lock_conflict(&f)
}

/// An exclusive `FLOCK` on the file in `/proc/locks` (local locks only).
fn flock_held(file: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(file) else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    let (major, minor) = crate::sys::major_minor(meta.dev());
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6 && f[1] == "FLOCK" && f[3] == "WRITE" && f[5] == id
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mailfs-locks-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("dovecot.index.log");
        std::fs::write(&f, b"x").unwrap();
        f
    }

    #[test]
    fn sees_fcntl_and_flock_writers_without_locking() {
        let f = scratch("fl");
        assert!(!fcntl_held(&f) && !flock_held(&f));
        // Another process holds a write lock (POSIX locks of our own process never
        // conflict with our F_GETLK, so the holder must be a child). It keeps both files
        // open: closing any descriptor of a file drops the process's POSIX locks on it.
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import fcntl,sys,time\n\
                 f=open(sys.argv[1],'r+')\n\
                 fcntl.lockf(f,fcntl.LOCK_EX)\n\
                 g=open(sys.argv[1],'r')\n\
                 fcntl.flock(g,fcntl.LOCK_EX)\n\
                 print('locked',flush=True)\n\
                 time.sleep(30)",
            )
            .arg(&f)
            .stdout(std::process::Stdio::piped())
            .spawn();
        let Ok(child) = child.as_mut() else {
            return; // no python3: the integration tests cover this with Dovecot
        };
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        assert!(fcntl_held(&f), "F_GETLK sees the writer");
        assert!(flock_held(&f), "/proc/locks shows the flock");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!fcntl_held(&f) && !flock_held(&f));
        std::fs::remove_dir_all(f.parent().unwrap()).unwrap();
    }

    #[test]
    fn dotlocks_go_stale() {
        let f = scratch("dot");
        assert!(!dotlock_fresh(&f));
        let lock = f.with_file_name("dovecot.index.log.lock");
        std::fs::write(&lock, b"1:host").unwrap();
        assert!(dotlock_fresh(&f));
        let old = SystemTime::now() - DOTLOCK_STALE - Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(!dotlock_fresh(&f), "a stale dotlock is ignored");
        std::fs::remove_dir_all(f.parent().unwrap()).unwrap();
    }
}
