//! Dovecot's other ways of laying a store out: `LAYOUT=index` (names only in the mailbox
//! list index, each mailbox in a directory named by its GUID) for sdbox, mdbox and Maildir,
//! and `INDEXPVT=` private `\Seen` flags of a shared Maildir mailbox, each user's own.
//!
//! Every mount is compared with doveadm (the folder list with `doveadm mailbox list`,
//! each message's bytes, size, flags, GUID and dates); changes to the tree made while
//! mounted (kernel caches of 60 s) must show within the coherence bound; a damaged list
//! index must give a clear error, never an empty or partial tree.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::compare::{assert_message_matches, assert_mount_matches_dovecot};
use crate::util::corpus::email;
use crate::util::dovecot::{Config, DboxLayout, Dovecot, Layout, User};
use crate::util::fsx::xattr_string;
use crate::util::mount::{Mount, mount_must_fail};
use crate::util::{TestDir, wait_for};

/// Kernel caches that would keep a stale tree for a minute without invalidations.
const LONG_CACHES: &[&str] = &["--attr-timeout", "60", "--entry-timeout", "60"];

/// The bound of tests/coherence.rs for the inotify watcher (the default).
const BOUND: Duration = Duration::from_secs(1);

/// Names with a space, non-ASCII (stored in modified UTF-7 by Dovecot), nesting, and a
/// level that is no mailbox (`Work`, `with space`).
const FOLDERS: &[&str] = &["Work/Sub", "Über Spaß", "with space/ünïcode", "a^b ~x"];

/// Fills `user`'s store: messages with flags and a keyword in INBOX and every folder.
fn populate(user: &User<'_>) {
    for folder in FOLDERS {
        user.create_mailbox(folder);
    }
    for (i, mailbox) in std::iter::once(&"INBOX").chain(FOLDERS).enumerate() {
        for j in 0..3 {
            let n = i * 10 + j;
            user.save(mailbox, &email(n, &format!("{mailbox} {j}"), "body\n"));
        }
        user.flags_set(&[], "add", mailbox, "1", "\\Seen \\Flagged");
        user.flags_set(&[], "add", mailbox, "2", "$Label1");
    }
}

/// The directories right below the mount root.
fn top_level(root: &Path) -> BTreeSet<String> {
    fs::read_dir(root)
        .unwrap_or_else(|e| panic!("listing {root:?}: {e}"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits until `ok` holds, and asserts it did within [`BOUND`] of `since`.
#[track_caller]
fn shows_within(what: &str, since: Instant, mut ok: impl FnMut() -> bool) {
    wait_for(Duration::from_secs(5), what, || ok().then_some(()));
    let took = since.elapsed();
    println!("{what}: shown after {} ms", took.as_millis());
    assert!(
        took <= BOUND,
        "{what}: shown only after {took:?} (bound {BOUND:?})"
    );
}

/// The whole scenario for one store: compare, then create, rename and delete folders while
/// mounted, and compare again.
fn index_layout_matches_dovecot(dir: &TestDir, user: &User<'_>) {
    populate(user);
    let list = user.mail_root().join("dovecot.list.index.log");
    assert!(list.is_file(), "Dovecot keeps the names in {list:?}");
    // Without the key, the GUID directories are no tree: refused with a hint, not shown.
    let without = user.location().replace(":LAYOUT=index", "");
    let failure = mount_must_fail(&without, &dir.join("mnt-without"), &[]);
    assert!(
        failure.stderr.contains(":LAYOUT=index"),
        "{without}: no hint at LAYOUT=index:\n{}",
        failure.stderr
    );
    let mount = Mount::start(&user.location(), &dir.join("mnt"), LONG_CACHES);
    let compared = assert_mount_matches_dovecot(&mount, user);
    assert_eq!(compared.mailboxes, 1 + FOLDERS.len());
    assert_eq!(compared.messages, 3 * (1 + FOLDERS.len()));

    // The kernel caches the old tree: listing, positive and negative entries.
    let root = mount.path().to_path_buf();
    let before = top_level(&root);
    assert!(before.contains("Über Spaß") && before.contains("Work"));
    assert!(!root.join("Neu").exists() && !root.join("Archive").exists());
    assert!(root.join("Work/Sub").is_dir());

    let changed = Instant::now();
    user.create_mailbox("Neu/Créé");
    shows_within("a folder created", changed, || {
        root.join("Neu").join("Créé").is_dir()
    });
    user.save("Neu/Créé", &email(90, "New", "in a new folder\n"));

    let changed = Instant::now();
    user.adm(&[], &["mailbox", "rename"], &["Work/Sub", "Archive/Sub 2"]);
    shows_within("a folder renamed", changed, || {
        root.join("Archive").join("Sub 2").is_dir() && !root.join("Work").join("Sub").exists()
    });

    let changed = Instant::now();
    user.adm(&[], &["mailbox", "delete"], &["Über Spaß"]);
    shows_within("a folder deleted", changed, || {
        !top_level(&root).contains("Über Spaß")
    });

    assert_mount_matches_dovecot(&mount, user);
    mount.stop();
}

#[test]
fn sdbox_index_layout_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("layout_index_sdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::sdbox(":LAYOUT=index"));
    let bob = dovecot.user("bob");
    index_layout_matches_dovecot(&dir, &bob);
}

#[test]
fn mdbox_index_layout_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("layout_index_mdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::mdbox(":LAYOUT=index"));
    let bob = dovecot.user("bob");
    index_layout_matches_dovecot(&dir, &bob);
}

#[test]
fn maildir_index_layout_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("layout_index_maildir");
    // The passwd-file userdb expands no %h here: the home spelled out (start_users makes
    // it, owned by the mail user).
    let home = dir.path().join("dovecot/home/bob");
    let location = format!("maildir:{}/Maildir:LAYOUT=index", home.display());
    let dovecot = Dovecot::start_users(&dir, &[("bob".to_string(), location)]);
    let bob = dovecot.user("bob");
    index_layout_matches_dovecot(&dir, &bob);
}

/// The GUID directory of `mailbox` (as `doveadm mailbox status guid` names it).
fn guid_dir(user: &User<'_>, mailbox: &str) -> PathBuf {
    let guid = user.status(mailbox).guid;
    assert_eq!(guid.len(), 32, "GUID of {mailbox}: {guid:?}");
    let dir = user.mail_root().join("mailboxes").join(&guid);
    assert!(
        dir.is_dir(),
        "sdbox LAYOUT=index keeps {mailbox} in {dir:?}"
    );
    dir
}

/// Overwrites, in `file`, the `name_id` of the list record that holds `guid` (the u32
/// 8 bytes before it) with an id the name table does not have. Returns how many records
/// were patched.
fn break_name_id(file: &Path, guid: &str) -> usize {
    let Ok(mut bytes) = fs::read(file) else {
        return 0;
    };
    let raw: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&guid[2 * i..2 * i + 2], 16).expect("hex GUID"))
        .collect();
    let mut patched = 0;
    let mut at = 8;
    while at + 16 <= bytes.len() {
        if bytes[at..at + 16] == raw[..] {
            bytes[at - 8..at - 4].copy_from_slice(&999u32.to_le_bytes());
            patched += 1;
        }
        at += 1;
    }
    fs::write(file, bytes).expect("writing the damaged list index");
    patched
}

/// A damaged list index: a mailbox GUID whose directory is gone gives EIO for that mailbox
/// alone (one log line naming the directory and the list index); a record naming a name
/// id the table does not have, or a list index that is not there, refuses the mount with
/// a message naming the file (never an empty tree).
#[test]
fn damaged_list_index_is_an_error_never_an_empty_tree() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("layout_index_damaged");
    let dovecot = Dovecot::start(&dir, DboxLayout::sdbox(":LAYOUT=index"));
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Kept", "readable\n"));
    bob.create_mailbox("Work/Sub");
    bob.save("Work/Sub", &email(2, "Gone", "its directory disappears\n"));
    bob.create_mailbox("Other");
    let inbox_uid = bob.uids("INBOX")[0];

    // A GUID with no directory.
    let sub = guid_dir(&bob, "Work/Sub");
    fs::rename(&sub, dir.join("moved-away")).expect("moving the mailbox directory away");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    assert!(top_level(mount.path()).contains("Work"));
    let err = fs::read_dir(mount.mailbox("Work/Sub"))
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "listing Work/Sub: {err}"
    );
    assert!(
        fs::read(mount.message("INBOX", inbox_uid)).is_ok(),
        "the other mailboxes stay readable"
    );
    // The list index removed under the mount: the tree is an error, not empty (nor the
    // tree that was).
    let root = bob.mail_root();
    let saved = dir.mkdir("saved-list-index");
    for f in ["dovecot.list.index", "dovecot.list.index.log"] {
        if root.join(f).exists() {
            fs::rename(root.join(f), saved.join(f)).expect("moving the list index away");
        }
    }
    let listing = wait_for(Duration::from_secs(5), "the root listing to fail", || {
        fs::read_dir(mount.path())
            .and_then(|d| d.collect::<Result<Vec<_>, _>>())
            .err()
    });
    assert_eq!(listing.raw_os_error(), Some(libc::EIO), "{listing}");
    for f in ["dovecot.list.index", "dovecot.list.index.log"] {
        if saved.join(f).exists() {
            fs::rename(saved.join(f), root.join(f)).expect("moving the list index back");
        }
    }
    wait_for(Duration::from_secs(5), "the tree to come back", || {
        top_level(mount.path()).contains("Other").then_some(())
    });
    let log = mount.stop();
    assert!(
        log.lines()
            .any(|l| l.contains("dovecot.list.index.log") && l.contains("neither it nor its log")),
        "no log line naming the missing list index:\n{log}"
    );
    let sub_name = sub.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        log.lines().any(|l| l.contains(&sub_name)
            && l.contains("dovecot.list.index")
            && l.contains("does not exist")),
        "no log line naming the missing directory and the list index:\n{log}"
    );
    fs::rename(dir.join("moved-away"), &sub).expect("moving it back");

    // A record whose name is not in the name table.
    let guid = bob.status("Other").guid;
    let patched: usize = ["dovecot.list.index", "dovecot.list.index.log"]
        .iter()
        .map(|f| break_name_id(&root.join(f), &guid))
        .sum();
    assert!(patched > 0, "found no list record holding {guid}");
    let failure = mount_must_fail(&bob.location(), &dir.join("mnt2"), &[]);
    assert!(
        failure.stderr.contains("dovecot.list.index") && failure.stderr.contains("name_id=999"),
        "the error names the list index and what is wrong:\n{}",
        failure.stderr
    );

    // No list index at all.
    for f in [
        "dovecot.list.index",
        "dovecot.list.index.log",
        "dovecot.list.index.log.2",
    ] {
        let _ = fs::remove_file(root.join(f));
    }
    let failure = mount_must_fail(&bob.location(), &dir.join("mnt3"), &[]);
    assert!(
        failure.stderr.contains("dovecot.list.index.log")
            && failure.stderr.contains("mailbox list index"),
        "the error names the missing list index:\n{}",
        failure.stderr
    );
}

/// `INDEXPVT=` for a shared Maildir mailbox: alice shares Project with bob and carol
/// (acl plugin, a `shared/%u/` namespace whose location has `INDEXPVT=~/shared/%u`); each
/// marks other messages `\Seen`, alice too (her flags are in the file names). Mounting
/// alice's Maildir with a viewer's private index shows exactly what doveadm reports for
/// that viewer, bytes, dates and GUIDs included.
#[test]
fn shared_maildir_private_seen_flags_are_each_users_own() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("layout_indexpvt_maildir");
    let acl_dir = dir.mkdir("acl");
    crate::util::set_mode(&acl_dir, 0o777);
    let dict = format!(
        "plugin/acl_shared_dict = file:{}",
        acl_dir.join("shared-mailboxes.db").display()
    );
    let dovecot = Dovecot::start_with_config(
        &dir,
        Layout::MaildirPlusPlus,
        Config {
            settings: &["mail_plugins = acl", "plugin/acl = vfile", &dict],
            sections: &["namespace shared {\n  type = shared\n  separator = /\n  \
                 prefix = shared/%%u/\n  location = maildir:%%h/Maildir:INDEXPVT=~/shared/%%u\n  \
                 subscriptions = no\n  list = children\n}"],
            ..Config::default()
        },
    );
    let alice = dovecot.user("alice");
    alice.create_mailbox("Project");
    for n in 0..4 {
        alice.save("Project", &email(n, &format!("Shared {n}"), "for all\n"));
    }
    let uids = alice.uids("Project");
    alice.flags_set(&[], "add", "Project", &uids[3].to_string(), "\\Seen");
    let viewers = ["bob", "carol"];
    for viewer in viewers {
        alice.adm(
            &[],
            &["acl", "add"],
            &[
                "Project",
                &format!("user={viewer}"),
                "lookup",
                "read",
                "write-seen",
            ],
        );
    }
    let shared = "shared/alice/Project";
    let bob = dovecot.user("bob");
    bob.flags_set(
        &[],
        "add",
        shared,
        &format!("{},{}", uids[0], uids[1]),
        "\\Seen",
    );
    let carol = dovecot.user("carol");
    carol.flags_set(&[], "add", shared, &uids[2].to_string(), "\\Seen");
    carol.flags_set(&[], "remove", shared, &uids[3].to_string(), "\\Seen");

    let alice_maildir = alice.mail_root().display().to_string();
    let mut seen_by = Vec::new();
    for viewer in [&bob, &carol] {
        let messages = viewer.fetch(shared);
        assert_eq!(messages.len(), uids.len());
        let pvt = viewer.home().join("shared/alice");
        assert!(
            pvt.is_dir(),
            "Dovecot keeps {}'s private index in {pvt:?}",
            viewer.name()
        );
        let location = format!("maildir:{alice_maildir}:INDEXPVT={}", pvt.display());
        let mount = Mount::start(&location, &dir.join(format!("mnt-{}", viewer.name())), &[]);
        for m in &messages {
            assert_message_matches(&mount.message("Project", m.uid), m);
        }
        // A private flag changed while mounted shows (the private index is watched).
        let unseen = messages
            .iter()
            .find(|m| !m.flags.contains("\\Seen"))
            .expect("an unseen message");
        let file = mount.message("Project", unseen.uid);
        let changed = Instant::now();
        viewer.flags_set(&[], "add", shared, &unseen.uid.to_string(), "\\Seen");
        shows_within("a private \\Seen set", changed, || {
            xattr_string(&file, "user.mail.flags").contains("\\Seen")
        });
        viewer.flags_set(&[], "remove", shared, &unseen.uid.to_string(), "\\Seen");
        mount.stop();
        seen_by.push(
            messages
                .iter()
                .filter(|m| m.flags.contains("\\Seen"))
                .map(|m| m.uid)
                .collect::<Vec<_>>(),
        );
    }
    // The comparison is only worth something if the viewers' flags differ.
    assert_ne!(seen_by[0], seen_by[1], "bob's and carol's \\Seen flags");
}

/// `INDEXPVT=` on a user's own Maildir++ store (Dovecot then keeps `\Seen` in the private
/// index for every mailbox, INBOX and folders with non-ASCII names included): the mount
/// equals doveadm, and the private index really holds what the file names lack.
#[test]
fn maildir_with_private_index_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("layout_indexpvt_own");
    let home = dir.path().join("dovecot/home/bob");
    let location = format!("maildir:{h}/Maildir:INDEXPVT={h}/pvt", h = home.display());
    let dovecot = Dovecot::start_users(&dir, &[("bob".to_string(), location.clone())]);
    let bob = dovecot.user("bob");
    populate(&bob);
    let pvt = home.join("pvt");
    assert!(pvt.is_dir(), "Dovecot keeps the private index in {pvt:?}");
    let mount = Mount::start(&location, &dir.join("mnt"), &[]);
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert_eq!(compared.messages, 3 * (1 + FOLDERS.len()));
    mount.stop();
}

/// `LAYOUT=index` with the index elsewhere: the list index in `INDEX=` under a
/// `LISTINDEX=` subdirectory and name, each mailbox's index in `INDEX=/mailboxes/<guid>`,
/// and (sdbox) some messages moved to `ALT=/mailboxes/<guid>`.
#[test]
fn sdbox_index_layout_with_index_alt_and_listindex_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("layout_index_keys_sdbox");
    let dovecot = Dovecot::start(
        &dir,
        DboxLayout::sdbox(":LAYOUT=index:INDEX=~/idx:ALT=~/alt:LISTINDEX=lists/names.idx"),
    );
    let bob = dovecot.user("bob");
    populate(&bob);
    bob.adm(&[], &["altmove"], &["mailbox", "Work/Sub", "uid", "1:2"]);
    let list = bob.home().join("idx/lists/names.idx.log");
    assert!(list.is_file(), "Dovecot keeps the names in {list:?}");
    let guid = bob.status("Work/Sub").guid;
    let alt = bob.home().join("alt/mailboxes").join(&guid);
    assert!(alt.join("u.1").is_file(), "altmove put u.1 in {alt:?}");
    let index = bob.home().join("idx/mailboxes").join(&guid);
    assert!(
        index.join("dovecot.index.log").is_file(),
        "no index in {index:?}"
    );
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert_eq!(compared.messages, 3 * (1 + FOLDERS.len()));
    mount.stop();
}

/// Maildir `LAYOUT=index` with `INDEX=` and `CONTROL=`: `dovecot-uidlist` and the index
/// of each mailbox in `<root>/<guid>` below those roots, the list index in `INDEX=`.
#[test]
fn maildir_index_layout_with_index_and_control_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("layout_index_keys_maildir");
    let home = dir.path().join("dovecot/home/bob");
    let location = format!(
        "maildir:{h}/Maildir:LAYOUT=index:INDEX={h}/idx:CONTROL={h}/ctl",
        h = home.display()
    );
    let dovecot = Dovecot::start_users(&dir, &[("bob".to_string(), location.clone())]);
    let bob = dovecot.user("bob");
    populate(&bob);
    assert!(home.join("idx/dovecot.list.index.log").is_file());
    let guid = bob.status("Work/Sub").guid;
    assert!(
        home.join("ctl")
            .join(&guid)
            .join("dovecot-uidlist")
            .is_file()
    );
    assert!(home.join("Maildir").join(&guid).join("cur").is_dir());
    let mount = Mount::start(&location, &dir.join("mnt"), &[]);
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert_eq!(compared.messages, 3 * (1 + FOLDERS.len()));
    mount.stop();
}

/// A multi-user template with `LAYOUT=index` (`mdbox:<mail>/%u:LAYOUT=index`): each user's
/// directory is their own list index's tree, equal to doveadm.
#[test]
fn multi_user_index_layout_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("layout_index_users");
    let template = format!(
        "mdbox:{}/%u:LAYOUT=index",
        dir.path().join("mail").display()
    );
    let names = ["ann", "ben"];
    let dovecot = Dovecot::start_users(
        &dir,
        &names
            .iter()
            .map(|n| (n.to_string(), template.clone()))
            .collect::<Vec<_>>(),
    );
    dovecot.mail_owned_dir(&dir, "mail");
    for (i, name) in names.iter().enumerate() {
        let user = dovecot.user(name);
        user.create_mailbox(FOLDERS[i]);
        user.save("INBOX", &email(i, name, "mine\n"));
        user.save(FOLDERS[i], &email(10 + i, name, "in a folder\n"));
    }
    let mount = Mount::start(&template, &dir.join("mnt"), &[]);
    for name in names {
        let user = dovecot.user(name);
        let compared =
            crate::util::compare::assert_tree_matches_dovecot(&mount.path().join(name), &user);
        assert_eq!(compared.messages, 2, "{name}");
    }
    mount.stop();
}
