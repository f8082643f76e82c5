//! The on-disk cache of message bytes fetched from an IMAP server.
//!
//! A message's bytes are named by (mailbox, UIDVALIDITY, UID) and never change (RFC 3501
//! 2.3.1.1), so a cached copy is right forever; a new UIDVALIDITY makes a new directory
//! and the old one is dropped. Layout, below the cache directory given to the mount:
//!
//! ```text
//! <account>/<mailbox key>-<uidvalidity>/<uid>      the bytes of BODY.PEEK[]
//! <account>/<mailbox key>-<uidvalidity>/.<uid>.tmp while it is being fetched
//! ```
//! `<account>` and `<mailbox key>` are hex FNV-1a hashes of `user@host:port` and of the
//! server's mailbox name, so no name from the server ever becomes a path component.
//!
//! The cache is bounded by total bytes: least recently used files are deleted past the
//! bound. Files found at start-up are adopted, oldest (by mtime) first out. The cache
//! directory belongs to mailfs: it is the only directory mailfs ever writes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use log::{debug, warn};
use lru::LruCache;
use parking_lot::Mutex;

/// A cached message: its account-relative directory and UID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    dir: String,
    uid: u32,
}

#[derive(Debug)]
struct State {
    /// Cached files and their sizes, least recently used first out.
    lru: LruCache<Key, u64>,
    bytes: u64,
}

/// The body cache of one account.
#[derive(Debug)]
pub struct Bodies {
    root: PathBuf,
    limit: u64,
    state: Mutex<State>,
}

/// 64-bit FNV-1a, as hex: a stable, short, path-safe name for any string.
pub fn hashed(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Bodies {
    /// The cache for `account` below `dir`, holding at most `limit` bytes. Creates the
    /// directories (mode 0700: the bytes are mail) and adopts what an earlier mount left.
    pub fn open(dir: &Path, account: &str, limit: u64) -> io::Result<Bodies> {
        let root = dir.join(hashed(account));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)?;
        let bodies = Bodies {
            root,
            limit,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
        };
        bodies.adopt()?;
        Ok(bodies)
    }

    /// Takes in the files an earlier mount left, oldest first (they go out first);
    /// removes unfinished fetches.
    fn adopt(&self) -> io::Result<()> {
        let mut found = Vec::new();
        for dir in fs::read_dir(&self.root)? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            let Some(dir_name) = dir.file_name().to_str().map(str::to_string) else {
                continue;
            };
            for file in fs::read_dir(dir.path())? {
                let file = file?;
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    let _ = fs::remove_file(file.path());
                    continue;
                }
                let (Ok(uid), Ok(meta)) = (name.parse::<u32>(), file.metadata()) else {
                    continue;
                };
                let mtime = meta.modified().ok();
                found.push((
                    mtime,
                    Key {
                        dir: dir_name.clone(),
                        uid,
                    },
                    meta.len(),
                ));
            }
        }
        found.sort_by_key(|(mtime, _, _)| *mtime);
        let mut st = self.state.lock();
        for (_, key, len) in found {
            st.bytes += len;
            st.lru.put(key, len);
        }
        drop(st);
        self.trim();
        Ok(())
    }

    /// The directory name of a mailbox at a UIDVALIDITY.
    pub fn dir_of(mailbox: &str, uid_validity: u32) -> String {
        format!("{}-{uid_validity}", hashed(mailbox))
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.root.join(&key.dir).join(key.uid.to_string())
    }

    /// The cached bytes of `uid` in `dir` (from [`Bodies::dir_of`]), opened, with their
    /// length.
    pub fn get(&self, dir: &str, uid: u32) -> Option<(File, u64)> {
        let key = Key {
            dir: dir.to_string(),
            uid,
        };
        let len = *self.state.lock().lru.get(&key)?;
        match File::open(self.path(&key)) {
            Ok(f) => Some((f, len)),
            Err(e) => {
                debug!("body cache: {} is gone ({e})", self.path(&key).display());
                self.forget(&key);
                None
            }
        }
    }

    /// Whether `uid` in `dir` is cached (without touching its recency).
    pub fn contains(&self, dir: &str, uid: u32) -> bool {
        self.state.lock().lru.contains(&Key {
            dir: dir.to_string(),
            uid,
        })
    }

    /// Caches the bytes `fill` writes for `uid` in `dir`, and opens them. `fill` writes
    /// the message and returns its length; on an error nothing is cached.
    pub fn put(
        &self,
        dir: &str,
        uid: u32,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
    ) -> io::Result<(File, u64)> {
        let key = Key {
            dir: dir.to_string(),
            uid,
        };
        let folder = self.root.join(dir);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&folder)?;
        // Each fetch writes its own temporary file (two readers may fetch at once); the
        // rename makes the finished file appear whole.
        let tmp = folder.join(format!(".{uid}.{:?}.tmp", std::thread::current().id()));
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut out = io::BufWriter::with_capacity(256 * 1024, &mut file);
            let len = fill(&mut out)?;
            out.flush()?;
            drop(out);
            fs::rename(&tmp, self.path(&key))?;
            Ok(len)
        })();
        let len = match result {
            Ok(len) => len,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let file = File::open(self.path(&key))?;
        {
            let mut st = self.state.lock();
            if let Some(old) = st.lru.put(key, len) {
                st.bytes -= old;
            }
            st.bytes += len;
        }
        self.trim();
        Ok((file, len))
    }

    /// Drops every cached message of a mailbox whose UIDVALIDITY is not `current`.
    pub fn drop_other_validities(&self, mailbox: &str, current: u32) {
        let prefix = format!("{}-", hashed(mailbox));
        let keep = Self::dir_of(mailbox, current);
        let stale: Vec<Key> = self
            .state
            .lock()
            .lru
            .iter()
            .filter(|(k, _)| k.dir.starts_with(&prefix) && k.dir != keep)
            .map(|(k, _)| k.clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        for key in &stale {
            self.forget(key);
            let _ = fs::remove_file(self.path(key));
        }
        let dirs: std::collections::HashSet<&str> = stale.iter().map(|k| k.dir.as_str()).collect();
        for dir in dirs {
            let _ = fs::remove_dir(self.root.join(dir));
        }
        debug!(
            "body cache: UIDVALIDITY of {mailbox} is now {current}: {} cached messages dropped",
            stale.len()
        );
    }

    fn forget(&self, key: &Key) {
        let mut st = self.state.lock();
        if let Some(len) = st.lru.pop(key) {
            st.bytes -= len;
        }
    }

    /// Deletes least recently used files until the cache is within its bound.
    fn trim(&self) {
        loop {
            let victim = {
                let mut st = self.state.lock();
                if st.bytes <= self.limit {
                    return;
                }
                match st.lru.pop_lru() {
                    Some((key, len)) => {
                        st.bytes -= len;
                        key
                    }
                    None => return,
                }
            };
            // An open handle keeps the bytes readable until it is closed.
            if let Err(e) = fs::remove_file(self.path(&victim)) {
                warn!("body cache: removing {}: {e}", self.path(&victim).display());
            }
        }
    }

    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.state.lock().bytes
    }

    /// Files held.
    pub fn count(&self) -> usize {
        self.state.lock().lru.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mailfs-bodies-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn fill(bytes: &'static [u8]) -> impl FnOnce(&mut dyn Write) -> io::Result<u64> {
        move |w| {
            w.write_all(bytes)?;
            Ok(bytes.len() as u64)
        }
    }

    fn read(mut f: File) -> Vec<u8> {
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn bytes_are_kept_bounded_and_found_again_by_the_next_mount() {
        let dir = tmp("bound");
        let b = Bodies::open(&dir, "bob@host:143", 25).unwrap();
        let inbox = Bodies::dir_of("INBOX", 7);
        assert!(b.get(&inbox, 1).is_none());
        let (f, len) = b.put(&inbox, 1, fill(b"0123456789")).unwrap();
        assert_eq!((read(f), len), (b"0123456789".to_vec(), 10));
        b.put(&inbox, 2, fill(b"abcdefghij")).unwrap();
        // Touch 1 so that 2 is the least recently used.
        assert!(b.get(&inbox, 1).is_some());
        b.put(&inbox, 3, fill(b"ABCDEFGHIJ")).unwrap();
        assert_eq!(b.held(), 20, "past 25 bytes the least recently used went");
        assert!(b.get(&inbox, 2).is_none());
        assert!(b.get(&inbox, 1).is_some() && b.get(&inbox, 3).is_some());
        drop(b);
        let again = Bodies::open(&dir, "bob@host:143", 25).unwrap();
        assert_eq!((again.count(), again.held()), (2, 20));
        assert_eq!(read(again.get(&inbox, 3).unwrap().0), b"ABCDEFGHIJ");
        let other = Bodies::open(&dir, "alice@host:143", 25).unwrap();
        assert_eq!(other.count(), 0, "accounts do not share");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_fetch_caches_nothing_and_a_new_uidvalidity_drops_the_old() {
        let dir = tmp("fail");
        let b = Bodies::open(&dir, "bob@host:143", 1 << 20).unwrap();
        let old = Bodies::dir_of("Work", 1);
        let err = b
            .put(&old, 5, |w| {
                w.write_all(b"half")?;
                Err(io::Error::other("connection lost"))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "connection lost");
        assert!(b.get(&old, 5).is_none());
        assert_eq!(
            fs::read_dir(dir.join(hashed("bob@host:143")).join(&old))
                .unwrap()
                .count(),
            0,
            "no temporary file left"
        );
        b.put(&old, 5, fill(b"whole")).unwrap();
        b.put(&Bodies::dir_of("INBOX", 1), 5, fill(b"inbox"))
            .unwrap();
        b.drop_other_validities("Work", 2);
        assert!(b.get(&old, 5).is_none());
        assert!(
            b.get(&Bodies::dir_of("INBOX", 1), 5).is_some(),
            "other mailboxes stay"
        );
        assert_eq!(b.held(), 5);
        let _ = fs::remove_dir_all(&dir);
    }
}
