//! Listing a dbox message without opening its file, as `doveadm fetch` does.
//!
//! Every value a view presents for a dbox message is first looked up where Dovecot's
//! getters look first (`dbox-mail.c`: `dbox_mail_get_physical_size`,
//! `dbox_mail_get_virtual_size`, `dbox_mail_get_received_date`, `dbox_get_cached_metadata`
//! for the GUID, `dbox_mail_get_save_date` / mdbox's save-date extension): the cache
//! (`dovecot.index.cache`). Only when one of them is not cached does Dovecot read the dbox
//! file's metadata -- and only then does mailfs. What stays per message is the presented
//! owner and mode, which only the file has: sdbox `fstatat`s `u.N` relative to the mailbox
//! directory opened once (one system call, nothing opened or read); mdbox `fstatat`s each
//! `m.N` once per build, whatever number of messages it holds. The same `stat` gives the
//! file's ctime, the save date when the cache does not have one (`dbox_mail_get_save_date`).
//!
//! What is not looked at: the stored body itself. A body that does not match the listed
//! size (damaged, truncated, encrypted, with attachments that cannot be put together) is
//! found when the message is opened, which reads the dbox header again and checks the
//! stored size against the listed one (`dbox.rs`, `open` / `open_mdbox`): EIO with one log
//! line naming the file, never other bytes. A `u.N` or `m.N` that is missing (or not a
//! regular file) is still found while listing: its `stat` fails, and the message is read
//! the full way, which names the problem. So is a file too short for what the cache lists
//! (the `stat` is checked in `dbox.rs`, `indexed_message`): an sdbox `u.N` smaller than
//! the cached size (a truncation, or a compressed body or one with external attachments,
//! which are then read as before), an `m.N` that ends before the message's span in the map
//! (`offset + size` of its map record: header, body and metadata).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::format::cache::CachedMessage;
use crate::sys::{self, Dir, Stat};

/// The values of one message that the cache gives, when it gives every one a view
/// presents besides the owner (and, failing the cache, the save date, which the file's
/// ctime gives).
#[derive(Debug, Clone)]
pub(super) struct CachedListing {
    /// `size.physical`: what doveadm reports (`Z` for a compressed body or one with
    /// external attachments: `dbox_file_get_plaintext_size`).
    pub size: u64,
    /// The index's `vsize` record extension, else `size.virtual`.
    pub virtual_size: u64,
    /// `date.received`.
    pub received: i64,
    /// `date.save`, if cached.
    pub saved: Option<i64>,
    /// `guid`.
    pub guid: String,
}

impl CachedListing {
    /// The cached values, if every one needed is there; `vsize` is the virtual size the
    /// index's `vsize` extension records, which Dovecot takes before the cache's
    /// (`index_mail_get_cached_virtual_size`).
    pub fn from_cache(cached: CachedMessage, vsize: Option<u64>) -> Option<CachedListing> {
        Some(CachedListing {
            size: cached.size_physical?,
            virtual_size: vsize.or(cached.size_virtual)?,
            received: i64::from(cached.date_received?),
            saved: cached.date_save.map(i64::from),
            guid: cached.guid.filter(|g| !g.is_empty())?,
        })
    }
}

/// A directory opened at most once, on first use.
#[derive(Debug)]
struct LazyDir {
    path: PathBuf,
    dir: Option<Option<Dir>>,
}

impl LazyDir {
    fn new(path: PathBuf) -> LazyDir {
        LazyDir { path, dir: None }
    }

    /// `lstat` of `name` in the directory; `None` for a missing directory or entry.
    /// `Err(())` for any other failure (the caller then reads the file the full way,
    /// which reports it).
    fn stat(&mut self, name: &str) -> Result<Option<Stat>, ()> {
        let path = &self.path;
        let dir = self.dir.get_or_insert_with(|| sys::open_dir(path).ok());
        let Some(dir) = dir else {
            return Ok(None);
        };
        match dir.stat_at(OsStr::new(name)) {
            Ok(st) => Ok(Some(st)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(_) => Err(()),
        }
    }
}

/// `stat`s of message files in a primary directory, then in its ALT directory, as
/// `open_primary_or_alt` / `open_mfile` look for them.
#[derive(Debug)]
pub(super) struct FileStats {
    primary: LazyDir,
    alt: Option<LazyDir>,
    /// mdbox: each `m.N` is stat'ed once per build (`None`: not usable).
    by_name: HashMap<u32, Option<Stat>>,
}

impl FileStats {
    /// Files in `primary`, then in `alt`.
    pub fn new(primary: &Path, alt: Option<&Path>) -> FileStats {
        FileStats {
            primary: LazyDir::new(primary.to_path_buf()),
            alt: alt.map(|a| LazyDir::new(a.to_path_buf())),
            by_name: HashMap::new(),
        }
    }

    /// The `stat` of `name`, a regular file, from primary or ALT storage; `None` when it
    /// is in neither or is something else (reading it the full way says why).
    pub fn regular(&mut self, name: &str) -> Option<Stat> {
        let found = match self.primary.stat(name).ok()? {
            Some(st) => st,
            None => self.alt.as_mut()?.stat(name).ok()??,
        };
        found.is_file().then_some(found)
    }

    /// The `stat` of mdbox's `m.<file_id>`, looked up once per file id.
    pub fn mfile(&mut self, file_id: u32) -> Option<Stat> {
        if let Some(known) = self.by_name.get(&file_id) {
            return *known;
        }
        let st = self.regular(&format!("m.{file_id}"));
        self.by_name.insert(file_id, st);
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_value_must_be_cached() {
        let full = CachedMessage {
            date_received: Some(1),
            date_save: None,
            size_physical: Some(10),
            size_virtual: Some(12),
            guid: Some("g".into()),
        };
        let l = CachedListing::from_cache(full.clone(), None).expect("all cached");
        assert_eq!((l.size, l.virtual_size, l.received), (10, 12, 1));
        assert_eq!(l.saved, None);
        for missing in [
            CachedMessage {
                date_received: None,
                ..full.clone()
            },
            CachedMessage {
                size_physical: None,
                ..full.clone()
            },
            CachedMessage {
                size_virtual: None,
                ..full.clone()
            },
            CachedMessage {
                guid: Some(String::new()),
                ..full.clone()
            },
            CachedMessage {
                guid: None,
                ..full.clone()
            },
        ] {
            assert!(CachedListing::from_cache(missing, None).is_none());
        }
        let no_vsize = CachedMessage {
            size_virtual: None,
            ..full.clone()
        };
        let l = CachedListing::from_cache(no_vsize, Some(13)).expect("vsize from the index");
        assert_eq!(l.virtual_size, 13);
        let l = CachedListing::from_cache(full, Some(14)).expect("all cached");
        assert_eq!(l.virtual_size, 14, "the index's vsize first");
    }

    #[test]
    fn stats_look_in_primary_then_alt_and_refuse_non_files() {
        let base = std::env::temp_dir().join(format!("mailfs-fstats-{}", std::process::id()));
        let (p, a) = (base.join("p"), base.join("a"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(p.join("u.1"), b"x").unwrap();
        std::fs::write(a.join("u.2"), b"yy").unwrap();
        std::fs::create_dir(p.join("u.3")).unwrap();
        std::fs::write(a.join("m.7"), b"zzz").unwrap();
        let mut s = FileStats::new(&p, Some(&a));
        assert_eq!(s.regular("u.1").map(|st| st.size), Some(1));
        assert_eq!(s.regular("u.2").map(|st| st.size), Some(2));
        assert!(s.regular("u.3").is_none());
        assert!(s.regular("u.4").is_none());
        assert_eq!(s.mfile(7).map(|st| st.size), Some(3));
        std::fs::remove_file(a.join("m.7")).unwrap();
        assert_eq!(s.mfile(7).map(|st| st.size), Some(3), "looked up once");
        assert!(s.mfile(8).is_none());
        let mut no_alt = FileStats::new(&p, None);
        assert!(no_alt.regular("u.2").is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
