//! The mount is read-only: a full traversal changes nothing in the store (no lock files,
//! nothing in `tmp/`, no index or cache files written), and every kind of write through the
//! mount is refused.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::util::TestDir;
use crate::util::corpus::populate_varied;
use crate::util::dovecot::{Dovecot, Layout};
use crate::util::fingerprint::Fingerprint;
use crate::util::fsx::{errno, errno_name, getxattr, listxattr, setxattr, walk};
use crate::util::mount::Mount;
use crate::util::name_of;

/// What a traversal read.
#[derive(Debug, Default)]
struct Traversal {
    dirs: usize,
    files: usize,
    bytes: u64,
    xattrs: usize,
}

/// Walks the whole mount like `find`, reads every file and every xattr of every entry.
fn traverse(root: &Path) -> Traversal {
    let mut t = Traversal::default();
    for path in std::iter::once(root.to_path_buf()).chain(walk(root)) {
        let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {path:?}: {e}"));
        if meta.is_dir() {
            t.dirs += 1;
        } else {
            t.files += 1;
            t.bytes += fs::read(&path)
                .unwrap_or_else(|e| panic!("reading {path:?}: {e}"))
                .len() as u64;
        }
        for name in listxattr(&path).unwrap_or_else(|e| panic!("listxattr {path:?}: {e}")) {
            getxattr(&path, &name).unwrap_or_else(|e| panic!("getxattr {path:?} {name}: {e}"));
            t.xattrs += 1;
        }
    }
    t
}

/// Files that would betray a writer: dotlocks, Dovecot temp files, anything in `tmp/`, and
/// index/cache/uidlist files (listed so that a new one shows up by name).
fn writer_traces(store: &Path) -> Vec<PathBuf> {
    walk(store)
        .into_iter()
        .filter(|p| {
            let name = name_of(p);
            let in_tmp = p.parent().is_some_and(|d| name_of(d) == "tmp");
            in_tmp
                || name.ends_with(".lock")
                || name.starts_with(".temp.")
                || name.starts_with("temp.")
                || name.ends_with(".tmp")
                || name.starts_with("dovecot")
        })
        .collect()
}

fn traversal_leaves_store_untouched(test: &str, layout: Layout) {
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    populate_varied(&bob, &dir.mkdir("scratch"));
    let store = bob.store_root();
    let traces_before = writer_traces(&store);
    assert!(
        !traces_before.iter().any(|p| name_of(p).ends_with(".lock")),
        "Dovecot left locks: {traces_before:?}"
    );
    let before = Fingerprint::of(&store);

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let first = traverse(mount.path());
    let second = traverse(mount.path());
    assert!(
        first.files >= 20 && first.dirs >= 9 && first.xattrs >= 120,
        "{first:?}"
    );
    assert_eq!(
        (first.files, first.bytes),
        (second.files, second.bytes),
        "two traversals"
    );
    mount.stop();

    assert_eq!(
        writer_traces(&store),
        traces_before,
        "lock, temp or index files appeared"
    );
    before.assert_same(
        &Fingerprint::of(&store),
        "the store after mounting and traversing it",
    );
}

#[test]
fn traversal_leaves_maildirpp_store_untouched() {
    require!(Dovecot, Fuse);
    traversal_leaves_store_untouched("ro_traverse_pp", Layout::MaildirPlusPlus);
}

#[test]
fn traversal_leaves_fs_layout_store_untouched() {
    require!(Dovecot, Fuse);
    traversal_leaves_store_untouched("ro_traverse_fs", Layout::FsSeparateIndexControl);
}

/// Every write is refused with EROFS, EACCES or EPERM, and the store does not change.
#[test]
fn writes_through_the_mount_are_refused() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("ro_writes");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    populate_varied(&bob, &dir.mkdir("scratch"));
    let before = Fingerprint::of(&bob.store_root());
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let msg = mount.message("INBOX", 1);
    let mb = mount.mailbox("INBOX");
    assert!(
        msg.is_file(),
        "{msg:?} must exist for the write attempts to mean anything"
    );

    let attempts: Vec<(&str, io::Result<()>)> = vec![
        (
            "create a file in a mailbox",
            fs::write(mb.join("new.eml"), b"x"),
        ),
        (
            "create a file in the root",
            fs::write(mount.path().join("x"), b"x"),
        ),
        (
            "open a message for writing",
            fs::OpenOptions::new().write(true).open(&msg).map(drop),
        ),
        (
            "open a message for append",
            fs::OpenOptions::new().append(true).open(&msg).map(drop),
        ),
        (
            "truncate a message",
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&msg)
                .map(drop),
        ),
        ("unlink a message", fs::remove_file(&msg)),
        ("rename a message", fs::rename(&msg, mb.join("99.eml"))),
        (
            "mkdir a mailbox",
            fs::create_dir(mount.path().join("NewBox")),
        ),
        ("rmdir a mailbox", fs::remove_dir(mount.mailbox("Empty"))),
        (
            "rename a mailbox",
            fs::rename(mount.mailbox("Empty"), mount.path().join("Full")),
        ),
        ("symlink", symlink("1.eml", mb.join("link.eml"))),
        ("hard link", fs::hard_link(&msg, mb.join("link.eml"))),
        (
            "chmod",
            fs::set_permissions(&msg, fs::Permissions::from_mode(0o600)),
        ),
        (
            "set mtime",
            fs::File::open(&msg).and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_secs(1))),
        ),
        (
            "setxattr user.mail.flags",
            setxattr(&msg, "user.mail.flags", b"\\Seen"),
        ),
        ("setxattr new attribute", setxattr(&msg, "user.mine", b"x")),
    ];
    let allowed = [libc::EROFS, libc::EACCES, libc::EPERM];
    let wrong: Vec<String> = attempts
        .iter()
        .filter(|(_, r)| !errno(r).is_some_and(|e| allowed.contains(&e)))
        .map(|(what, r)| format!("{what}: {}", errno_name(errno(r))))
        .collect();
    assert!(
        wrong.is_empty(),
        "writes not refused with EROFS/EACCES/EPERM:\n  {}",
        wrong.join("\n  ")
    );
    assert!(msg.is_file(), "the message survived");
    mount.stop();
    before.assert_same(
        &Fingerprint::of(&bob.store_root()),
        "the store after write attempts",
    );
}
