//! Comparing what the mount shows with what Dovecot says.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::dovecot::{Message, User};
use super::fsx::{dir_names, listxattr, walk, xattr_string};
use super::mount::Mount;
use super::{assert_bytes_eq, name_of};

/// The xattrs every message file must have.
pub const MESSAGE_XATTRS: [&str; 6] = [
    "user.mail.uid",
    "user.mail.guid",
    "user.mail.flags",
    "user.mail.received",
    "user.mail.saved",
    "user.mail.vsize",
];

/// The xattrs every mailbox directory must have.
pub const MAILBOX_XATTRS: [&str; 3] = [
    "user.mailbox.guid",
    "user.mailbox.uidvalidity",
    "user.mailbox.uidnext",
];

/// How much [`assert_tree_matches_dovecot`] compared.
#[derive(Debug, Default)]
pub struct Compared {
    pub mailboxes: usize,
    pub messages: usize,
}

/// Compares the whole mount with doveadm ([`assert_tree_matches_dovecot`] of its root).
#[track_caller]
pub fn assert_mount_matches_dovecot(mount: &Mount, user: &User<'_>) -> Compared {
    assert_tree_matches_dovecot(mount.path(), user)
}

/// Compares the tree below `root` (a single-user mount's root, or one user's directory in
/// a multi-user mount) with `user`'s mail as doveadm reports it:
/// - the directory tree is exactly the mailbox names and their parent levels;
/// - each mailbox's xattrs equal `doveadm mailbox status`;
/// - each mailbox lists exactly `<uid>.eml` for doveadm's UIDs (and its child mailboxes);
/// - each message matches ([`assert_message_matches`]).
///
/// Fetches `date.saved`, so call it after the last change to the store.
#[track_caller]
pub fn assert_tree_matches_dovecot(root: &Path, user: &User<'_>) -> Compared {
    let statuses = user.statuses();
    assert!(!statuses.is_empty(), "doveadm reports no mailboxes at all");

    // Directories: every listed name and each of its parent levels, nothing else.
    let mut expected_dirs = BTreeSet::new();
    for name in user.list() {
        let levels: Vec<&str> = name.split('/').collect();
        for n in 1..=levels.len() {
            expected_dirs.insert(levels[..n].iter().collect::<PathBuf>());
        }
    }
    let everything = walk(root);
    for p in &everything {
        assert!(
            !name_of(p).contains(':'),
            "a name in the mount contains ':': {p:?}"
        );
    }
    let actual_dirs: BTreeSet<PathBuf> = everything
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| p.strip_prefix(root).expect("below the root").to_path_buf())
        .collect();
    assert_eq!(
        actual_dirs,
        expected_dirs,
        "directories in the mount below {} vs doveadm mailbox list",
        root.display()
    );

    let mut compared = Compared::default();
    for (name, status) in &statuses {
        let dir = name
            .split('/')
            .fold(root.to_path_buf(), |p, level| p.join(level));
        for (attr, expected) in [
            ("user.mailbox.guid", status.guid.clone()),
            ("user.mailbox.uidvalidity", status.uidvalidity.to_string()),
            ("user.mailbox.uidnext", status.uidnext.to_string()),
        ] {
            assert_eq!(
                xattr_string(&dir, attr),
                expected,
                "{attr} of mailbox {name:?}"
            );
        }
        let listed = listxattr(&dir).unwrap_or_else(|e| panic!("listxattr {dir:?}: {e}"));
        for attr in MAILBOX_XATTRS {
            assert!(
                listed.iter().any(|a| a == attr),
                "{dir:?}: listxattr lacks {attr}: {listed:?}"
            );
        }

        let messages = user.fetch(name);
        assert_eq!(
            messages.len() as u32,
            status.messages,
            "doveadm fetch vs status of {name}"
        );
        let files: BTreeSet<String> = dir_names(&dir)
            .unwrap_or_else(|e| panic!("listing mailbox {name:?} at {dir:?}: {e}"))
            .into_iter()
            .filter(|n| !dir.join(n).is_dir())
            .collect();
        let expected: BTreeSet<String> =
            messages.iter().map(|m| format!("{}.eml", m.uid)).collect();
        assert_eq!(
            files, expected,
            "files in mailbox {name:?} vs doveadm's UIDs"
        );
        for m in &messages {
            assert_message_matches(&dir.join(format!("{}.eml", m.uid)), m);
        }
        compared.mailboxes += 1;
        compared.messages += messages.len();
    }
    assert!(compared.messages > 0, "compared no messages at all");
    compared
}

/// One message file against doveadm: bytes, size, mtime and every xattr.
#[track_caller]
pub fn assert_message_matches(path: &Path, m: &Message) {
    let what = format!("{} (uid {})", path.display(), m.uid);
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {what}: {e}"));
    assert!(meta.is_file(), "{what} is not a regular file");
    assert_eq!(meta.len(), m.size, "st_size of {what} vs size.physical");
    assert_eq!(
        meta.mtime(),
        m.received,
        "st_mtime of {what} vs date.received"
    );
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {what}: {e}"));
    assert_bytes_eq(
        &bytes,
        &m.text,
        &format!("content of {what} vs doveadm fetch text"),
    );

    let get = |attr: &str| xattr_string(path, attr);
    assert_eq!(
        get("user.mail.uid"),
        m.uid.to_string(),
        "user.mail.uid of {what}"
    );
    assert_eq!(get("user.mail.guid"), m.guid, "user.mail.guid of {what}");
    assert_eq!(get("user.mail.flags"), m.flags, "user.mail.flags of {what}");
    assert_eq!(
        get("user.mail.received"),
        m.received.to_string(),
        "user.mail.received of {what}"
    );
    assert_eq!(
        get("user.mail.saved"),
        m.saved.to_string(),
        "user.mail.saved of {what}"
    );
    assert_eq!(
        get("user.mail.vsize"),
        m.vsize.to_string(),
        "user.mail.vsize of {what}"
    );
    let listed = listxattr(path).unwrap_or_else(|e| panic!("listxattr {what}: {e}"));
    for attr in MESSAGE_XATTRS {
        assert!(
            listed.iter().any(|a| a == attr),
            "listxattr of {what} lacks {attr}: {listed:?}"
        );
    }
    assert!(!name_of(path).contains(':'), "{what}: a name contains ':'");
}
