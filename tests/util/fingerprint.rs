//! A fingerprint of a directory tree, to prove a store was not modified: every entry's
//! type, mode, owner, size, mtime (with nanoseconds) and a hash of its content (or its
//! symlink target). atime is left out (reading changes it); ctime too (it cannot change
//! without one of the others or a rename, which changes the names).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    content: u64,
}

/// See the module docs. Compare two with [`Fingerprint::assert_same`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    root: PathBuf,
    entries: BTreeMap<PathBuf, Entry>,
}

impl Fingerprint {
    pub fn of(root: &Path) -> Fingerprint {
        let mut entries = BTreeMap::new();
        add(root, root, &mut entries);
        Fingerprint {
            root: root.to_path_buf(),
            entries,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Panics with a list of added, removed and changed entries if `after` differs.
    #[track_caller]
    pub fn assert_same(&self, after: &Fingerprint, what: &str) {
        if self == after {
            return;
        }
        let mut diff = String::new();
        for (p, e) in &self.entries {
            match after.entries.get(p) {
                None => writeln!(diff, "  removed: {}", p.display()).unwrap(),
                Some(a) if a != e => writeln!(
                    diff,
                    "  changed: {}\n    before {e:?}\n    after  {a:?}",
                    p.display()
                )
                .unwrap(),
                Some(_) => {}
            }
        }
        for p in after
            .entries
            .keys()
            .filter(|p| !self.entries.contains_key(*p))
        {
            writeln!(diff, "  added:   {}", p.display()).unwrap();
        }
        panic!("{what}: {} changed:\n{diff}", self.root.display());
    }
}

fn add(root: &Path, path: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {path:?}: {e}"));
    let ft = meta.file_type();
    let mut hasher = DefaultHasher::new();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        fs::read_link(path).expect("readlink").hash(&mut hasher);
        'l'
    } else if ft.is_file() {
        fs::read(path)
            .unwrap_or_else(|e| panic!("reading {path:?}: {e}"))
            .hash(&mut hasher);
        'f'
    } else {
        '?'
    };
    let rel = path.strip_prefix(root).expect("below root").to_path_buf();
    out.insert(
        rel,
        Entry {
            kind,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: if ft.is_dir() { 0 } else { meta.size() },
            mtime: (meta.mtime(), meta.mtime_nsec()),
            content: hasher.finish(),
        },
    );
    if ft.is_dir() {
        for entry in fs::read_dir(path).unwrap_or_else(|e| panic!("reading {path:?}: {e}")) {
            add(root, &entry.expect("dir entry").path(), out);
        }
    }
}
