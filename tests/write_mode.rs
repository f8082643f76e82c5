//! Write mode (`mailfs mount --rw`): every change through the mount is carried out by
//! Dovecot's own doveadm server, checked against doveadm itself.
//!
//! - Every operation on every format (Maildir++, LAYOUT=fs, sdbox, mdbox, mdbox with ALT):
//!   each change checked with doveadm, read back through the mount at once (default kernel
//!   caches), then `doveadm force-resync` of every mailbox changes nothing and the whole
//!   mount equals doveadm.
//! - `rsync -a` and `tar -x` restore each message exactly once; a killed `cp` and a message
//!   over `--max-message-size` save nothing.
//! - Without `--rw` every write is EROFS and the store does not change.
//! - The negative control: Dovecot's mail_log shows every change as done by a doveadm
//!   server session (a change made on the store files instead is not there).
//! - A storm of writes through the mount against Dovecot's own IMAP sessions.
//! - Errors: a missing endpoint, a stopped Dovecot (EIO, reads go on), a mailbox deleted
//!   meanwhile (ENOENT), quota (EDQUOT with Dovecot's words), `--rw` without `--user`.
//! - The cluster path: a second Dovecot proxying doveadm commands to the backend over TCP.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::util::compare::assert_mount_matches_dovecot;
use crate::util::corpus::{crlf, email, no_final_newline};
use crate::util::dovecot::{Config, DboxLayout, Dovecot, Layout, MailboxStatus, Message, User};
use crate::util::fingerprint::Fingerprint;
use crate::util::fsx::{dir_names, errno, errno_name, setxattr, xattr_string};
use crate::util::mount::Mount;
use crate::util::{TestDir, assert_bytes_eq, free_port, show};

// ---------------------------------------------------------------------------------------
// Helpers

/// `--rw --user NAME --doveadm <the private Dovecot's socket>`, then `extra`.
fn rw_args(dovecot: &Dovecot, user: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--rw",
        "--user",
        user,
        "--doveadm",
        dovecot
            .doveadm_socket()
            .to_str()
            .expect("UTF-8 socket path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A read-write mount of `user`'s store at `<dir>/mnt`, default kernel caches.
fn mount_rw(dir: &TestDir, dovecot: &Dovecot, user: &User<'_>, extra: &[&str]) -> Mount {
    let args = rw_args(dovecot, user.name(), extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Mount::start(&user.location(), &dir.join("mnt"), &args)
}

/// Runs a command to completion, stdin closed.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// `cp SRC DEST`, which must succeed.
#[track_caller]
fn cp(src: &Path, dest: &Path) {
    let out = run("cp", &[src.as_os_str(), dest.as_os_str()]);
    assert!(
        out.status.success(),
        "cp {} {} failed ({}): {}",
        src.display(),
        dest.display(),
        out.status,
        show(&out.stderr)
    );
}

/// Creates `path`, writes `bytes` and closes it, returning the first error, the close's
/// included (where a new message is saved; `File`'s drop would ignore it).
fn create_write_close(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` is ours (taken from the File), closed exactly once here.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The names in a directory (panics if it cannot be listed).
#[track_caller]
fn names(dir: &Path) -> BTreeSet<String> {
    dir_names(dir).unwrap_or_else(|e| panic!("listing {dir:?}: {e}"))
}

fn eml(uid: u32) -> String {
    format!("{uid}.eml")
}

/// The flags of a doveadm/xattr spelling, as a set (the order is Dovecot's business).
fn flag_set(flags: &str) -> BTreeSet<String> {
    flags.split_whitespace().map(str::to_string).collect()
}

/// The flags doveadm reports for one message.
#[track_caller]
fn doveadm_flags(user: &User<'_>, mailbox: &str, uid: u32) -> BTreeSet<String> {
    let all = user.fetch_flags(mailbox);
    let (_, flags) = all
        .iter()
        .find(|(u, _)| *u == uid)
        .unwrap_or_else(|| panic!("{mailbox} has no uid {uid}: {all:?}"));
    flags.iter().cloned().collect()
}

/// `truncate(2)` by path.
fn truncate(path: &Path, len: i64) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path with NUL");
    // SAFETY: a NUL-terminated path; truncate has no other preconditions.
    if unsafe { libc::truncate(p.as_ptr(), len) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `expected` errno, or a panic naming what was tried and what came back.
#[track_caller]
fn assert_errno<T>(what: &str, r: &io::Result<T>, expected: i32) {
    assert_eq!(
        errno(r),
        Some(expected),
        "{what}: expected {}, got {}",
        errno_name(Some(expected)),
        errno_name(errno(r))
    );
}

/// What `doveadm save` stores for `bytes`: saved into `reference` (a mailbox the test
/// keeps for this), and read back.
fn stored_form(user: &User<'_>, reference: &str, bytes: &[u8]) -> Vec<u8> {
    let uid = user.save(reference, bytes);
    user.text(reference, uid)
}

/// Every mailbox's status and messages (uid, guid, flags, sizes, dates, text).
type Snapshot = BTreeMap<String, (MailboxStatus, Vec<Message>)>;

fn snapshot(user: &User<'_>) -> Snapshot {
    user.statuses()
        .into_iter()
        .map(|(name, status)| {
            let messages = user.fetch(&name);
            (name, (status, messages))
        })
        .collect()
}

/// `doveadm force-resync` of every mailbox finds nothing to fix: every mailbox's status
/// and every message (uid, guid, flags, text, dates) are the same after it.
#[track_caller]
fn assert_force_resync_changes_nothing(user: &User<'_>) {
    let before = snapshot(user);
    assert!(!before.is_empty());
    for name in before.keys() {
        user.force_resync(name);
    }
    let after = snapshot(user);
    for (name, (status, messages)) in &before {
        let (s, m) = after
            .get(name)
            .unwrap_or_else(|| panic!("mailbox {name} gone after force-resync"));
        assert_eq!(s, status, "status of {name} before and after force-resync");
        assert_eq!(
            m, messages,
            "messages of {name} before and after force-resync"
        );
    }
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "mailboxes before and after force-resync"
    );
}

// ---------------------------------------------------------------------------------------
// 1: every operation, every format

/// The mailboxes every-operation starts with, and what is in them.
struct Seeded {
    /// INBOX UIDs, 5 messages.
    inbox: Vec<u32>,
    /// Target: one message.
    target: Vec<u32>,
    /// Full: one message.
    full: u32,
    /// Parent (one message) and Parent/Child (one message).
    parent: u32,
    child: u32,
}

fn seed(user: &User<'_>) -> Seeded {
    for name in ["Target", "Ref", "Empty", "Full", "Parent", "Parent/Child"] {
        user.create_mailbox(name);
    }
    let inbox = (1..=5)
        .map(|n| user.save("INBOX", &email(n, &format!("Inbox {n}"), "hello")))
        .collect();
    let target = vec![user.save("Target", &email(10, "Target 1", "already here"))];
    let full = user.save("Full", &email(11, "Full", "keeps Full from rmdir"));
    let parent = user.save("Parent", &email(12, "Parent", "in the parent"));
    let child = user.save("Parent/Child", &email(13, "Child", "in the child"));
    Seeded {
        inbox,
        target,
        full,
        parent,
        child,
    }
}

fn every_operation(test: &str, layout: Layout) {
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    let seeded = seed(&bob);
    if bob.alt_root().is_some() {
        // The messages changed below live in ALT storage.
        bob.adm(&[], &["altmove"], &["mailbox", "INBOX", "all"]);
        bob.adm(&[], &["altmove"], &["mailbox", "Parent/Child", "all"]);
    }
    let scratch = dir.mkdir("scratch");
    let mount = mount_rw(&dir, &dovecot, &bob, &[]);
    let inbox = mount.mailbox("INBOX");
    let target = mount.mailbox("Target");
    let [u1, flagged, moved, u4, u5] = seeded.inbox[..] else {
        panic!("5 INBOX messages: {:?}", seeded.inbox)
    };
    // Seen through the mount before anything changes (the kernel holds these entries).
    assert_eq!(
        names(&inbox),
        seeded.inbox.iter().map(|u| eml(*u)).collect(),
        "INBOX before"
    );
    for u in &seeded.inbox {
        fs::metadata(mount.message("INBOX", *u)).expect("stat before");
    }

    // rm: expunged; at once not listed, not stat-able.
    fs::remove_file(mount.message("INBOX", u1)).expect("rm INBOX/u1");
    assert!(
        !bob.uids("INBOX").contains(&u1),
        "doveadm still has uid {u1}"
    );
    assert!(!names(&inbox).contains(&eml(u1)), "ls after rm shows it");
    assert_errno(
        "stat after rm",
        &fs::metadata(mount.message("INBOX", u1)),
        libc::ENOENT,
    );

    // mv to another mailbox: gone from INBOX, in Target under the UID Dovecot gave it.
    let moved_text = bob.text("INBOX", moved);
    let target_next = bob.status("Target").uidnext;
    assert_ne!(target_next, moved, "the test needs the new UID to differ");
    fs::rename(mount.message("INBOX", moved), target.join(eml(moved)))
        .expect("mv INBOX/moved Target/");
    assert!(
        !bob.uids("INBOX").contains(&moved),
        "doveadm: moved still in INBOX"
    );
    assert_eq!(
        bob.uids("Target"),
        vec![seeded.target[0], target_next],
        "doveadm: Target after mv"
    );
    assert_bytes_eq(
        &bob.text("Target", target_next),
        &moved_text,
        "the moved message in Target",
    );
    assert!(!names(&inbox).contains(&eml(moved)), "ls INBOX after mv");
    assert_eq!(
        names(&target),
        [eml(seeded.target[0]), eml(target_next)].into(),
        "ls Target after mv"
    );
    assert_errno(
        "stat of the old name after mv",
        &fs::metadata(mount.message("INBOX", moved)),
        libc::ENOENT,
    );
    // coreutils mv stats its target after the rename: the name it gave answers for the
    // moved message (unlisted, see docs/semantics.md) although Dovecot gave it another UID.
    let ghost = fs::metadata(target.join(eml(moved))).expect("stat of the name mv gave");
    assert_eq!(
        ghost.len(),
        moved_text.len() as u64,
        "the name mv gave shows the moved message's size"
    );
    assert_bytes_eq(
        &fs::read(target.join(eml(target_next))).expect("read the moved message"),
        &moved_text,
        "the moved message through the mount",
    );

    // A rename never replaces: mv onto a message that exists moves the message, and the
    // one already there stays (under its own name, with its own bytes).
    let kept = seeded.target[0];
    let kept_text = bob.text("Target", kept);
    let onto_next = bob.status("Target").uidnext;
    fs::rename(mount.message("INBOX", u5), target.join(eml(kept))).expect("mv onto 1.eml");
    assert_eq!(
        bob.uids("Target"),
        vec![kept, target_next, onto_next],
        "doveadm: Target after mv onto an existing name"
    );
    assert_bytes_eq(&bob.text("Target", kept), &kept_text, "the message kept");
    assert_bytes_eq(
        &fs::read(target.join(eml(kept))).expect("read the kept message"),
        &kept_text,
        "the kept message through the mount right after",
    );
    assert!(!bob.uids("INBOX").contains(&u5));

    // A rename within one mailbox is refused; nothing changes.
    assert_errno(
        "rename inside INBOX",
        &fs::rename(mount.message("INBOX", u4), inbox.join("99.eml")),
        libc::EINVAL,
    );
    assert_eq!(bob.uids("INBOX"), vec![flagged, u4]);

    // setfattr: replace (with the setfattr tool), add, remove, replace with nothing.
    let mf = mount.message("INBOX", flagged);
    let out = run(
        "setfattr",
        &[
            "-n".as_ref(),
            "user.mail.flags".as_ref(),
            "-v".as_ref(),
            "\\Seen $Label1".as_ref(),
            mf.as_os_str(),
        ],
    );
    assert!(out.status.success(), "setfattr: {}", show(&out.stderr));
    let steps: [(&str, &str, &str); 4] = [
        ("user.mail.flags", "\\Seen $Label1", "\\Seen $Label1"),
        (
            "user.mail.flags.add",
            "\\Flagged work",
            "\\Flagged \\Seen $Label1 work",
        ),
        ("user.mail.flags.remove", "\\Seen $Label1", "\\Flagged work"),
        ("user.mail.flags", "", ""),
    ];
    for (i, (attr, value, expected)) in steps.into_iter().enumerate() {
        if i > 0 {
            setxattr(&mf, attr, value.as_bytes())
                .unwrap_or_else(|e| panic!("setxattr {attr}={value:?}: {e}"));
        }
        assert_eq!(
            doveadm_flags(&bob, "INBOX", flagged),
            flag_set(expected),
            "doveadm flags after {attr}={value:?}"
        );
        assert_eq!(
            flag_set(&xattr_string(&mf, "user.mail.flags")),
            flag_set(expected),
            "user.mail.flags through the mount right after {attr}={value:?}"
        );
    }
    setxattr(&mf, "user.mail.flags.add", b"\\Answered $Forwarded").expect("add again");

    // cp: each saved with exactly the bytes `doveadm save` stores for the same file.
    let mut plain = email(20, "Copied in", "plain LF message");
    plain.extend_from_slice(b"From the start of a line\n");
    let files: [(&str, Vec<u8>); 3] = [
        ("plain.eml", plain),
        ("crlf.eml", crlf()),
        ("nonl.eml", no_final_newline()),
    ];
    for (name, bytes) in &files {
        let src = scratch.join(name);
        fs::write(&src, bytes).expect("writing the source");
        let expected = stored_form(&bob, "Ref", bytes);
        match *name {
            "crlf.eml" => assert!(
                !expected.contains(&b'\r') && expected.len() < bytes.len(),
                "doveadm save keeps CRLF here: the oracle would not show the conversion"
            ),
            "nonl.eml" => assert_ne!(expected.last(), Some(&b'\n')),
            _ => {}
        }
        let next = bob.status("INBOX").uidnext;
        cp(&src, &inbox);
        assert_eq!(
            bob.uids("INBOX").last(),
            Some(&next),
            "doveadm: {name} saved as uid {next}"
        );
        assert_bytes_eq(
            &bob.text("INBOX", next),
            &expected,
            &format!("{name} as saved through the mount vs doveadm save"),
        );
        let listed = names(&inbox);
        assert!(
            listed.contains(&eml(next)) && !listed.contains(*name),
            "ls right after cp {name}: {listed:?} (expected {next}.eml, not {name})"
        );
        assert_bytes_eq(
            &fs::read(inbox.join(eml(next))).expect("read the new message"),
            &expected,
            &format!("{name} read through the mount right after cp"),
        );
    }

    // mkdir: a mailbox, at the top and below another.
    fs::create_dir(mount.path().join("NewBox")).expect("mkdir NewBox");
    fs::create_dir(target.join("Sub")).expect("mkdir Target/Sub");
    let list = bob.list();
    for name in ["NewBox", "Target/Sub"] {
        assert!(list.contains(&name.to_string()), "{name} not in {list:?}");
        assert!(mount.mailbox(name).is_dir(), "{name} through the mount");
    }
    assert_eq!(bob.status("NewBox").messages, 0);

    // rmdir: an empty mailbox goes; one with a message or a child stays (ENOTEMPTY).
    fs::remove_dir(mount.mailbox("Empty")).expect("rmdir Empty");
    assert!(!bob.list().contains(&"Empty".to_string()));
    assert_errno(
        "stat Empty after rmdir",
        &fs::metadata(mount.mailbox("Empty")),
        libc::ENOENT,
    );
    assert_errno(
        "rmdir Full",
        &fs::remove_dir(mount.mailbox("Full")),
        libc::ENOTEMPTY,
    );
    assert_eq!(bob.uids("Full"), vec![seeded.full], "Full after rmdir");
    assert_errno(
        "rmdir Target (a child, messages)",
        &fs::remove_dir(mount.mailbox("Target")),
        libc::ENOTEMPTY,
    );

    // Renaming a mailbox with a child renames both; their messages go along.
    let parent_before = bob.fetch("Parent");
    let child_before = bob.fetch("Parent/Child");
    assert_eq!(
        (parent_before[0].uid, child_before[0].uid),
        (seeded.parent, seeded.child)
    );
    fs::rename(mount.mailbox("Parent"), mount.path().join("Renamed")).expect("mv Parent");
    let list = bob.list();
    assert!(
        list.contains(&"Renamed".to_string())
            && list.contains(&"Renamed/Child".to_string())
            && !list.iter().any(|n| n.starts_with("Parent")),
        "mailbox list after the rename: {list:?}"
    );
    for (old, new, before) in [
        ("Parent", "Renamed", &parent_before),
        ("Parent/Child", "Renamed/Child", &child_before),
    ] {
        let after = bob.fetch(new);
        let key = |m: &[Message]| {
            m.iter()
                .map(|m| (m.uid, m.guid.clone(), m.text.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&after), key(before), "{old} renamed to {new}");
        assert_bytes_eq(
            &fs::read(mount.message(new, before[0].uid)).expect("read after the rename"),
            &before[0].text,
            &format!("{new} through the mount"),
        );
    }
    assert_errno(
        "stat Parent after the rename",
        &fs::metadata(mount.mailbox("Parent")),
        libc::ENOENT,
    );

    // Messages are immutable: writing into, truncating or chmod'ing one is EPERM.
    let m4 = mount.message("INBOX", u4);
    let text4 = bob.text("INBOX", u4);
    // (With the default --open-mode kernel the kernel opens files by itself after the
    // first open, so the refusal of a write may come at the write, not at the open.)
    let write_into =
        |opts: &mut fs::OpenOptions| -> io::Result<()> { opts.open(&m4)?.write_all(b"X") };
    let attempts: Vec<(&str, io::Result<()>)> = vec![
        (
            "write into it",
            write_into(fs::OpenOptions::new().write(true)),
        ),
        (
            "append to it",
            write_into(fs::OpenOptions::new().append(true)),
        ),
        (
            "write into it (O_RDWR)",
            write_into(fs::OpenOptions::new().read(true).write(true)),
        ),
        (
            "open with O_TRUNC",
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&m4)
                .map(drop),
        ),
        ("truncate(2)", truncate(&m4, 0)),
        (
            "chmod",
            fs::set_permissions(&m4, fs::Permissions::from_mode(0o644)),
        ),
    ];
    for (what, r) in &attempts {
        assert_errno(what, r, libc::EPERM);
    }
    assert_bytes_eq(
        &bob.text("INBOX", u4),
        &text4,
        "the message after the attempts",
    );
    assert_bytes_eq(
        &fs::read(&m4).expect("read after the attempts"),
        &text4,
        "the message through the mount after the attempts",
    );

    assert_force_resync_changes_nothing(&bob);
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert!(compared.mailboxes >= 8, "{compared:?}");
    mount.stop();
}

#[test]
fn every_operation_maildirpp() {
    require!(Dovecot, Fuse);
    every_operation("wm_ops_pp", Layout::MaildirPlusPlus);
}

#[test]
fn every_operation_fs_layout() {
    require!(Dovecot, Fuse);
    every_operation("wm_ops_fs", Layout::FsSeparateIndexControl);
}

#[test]
fn every_operation_sdbox() {
    require!(Dovecot, Fuse);
    every_operation("wm_ops_sdbox", DboxLayout::sdbox(""));
}

#[test]
fn every_operation_mdbox() {
    require!(Dovecot, Fuse);
    every_operation("wm_ops_mdbox", Layout::Mdbox);
}

#[test]
fn every_operation_mdbox_alt() {
    require!(Dovecot, Fuse);
    every_operation("wm_ops_mdbox_alt", DboxLayout::mdbox(":ALT=~/alt"));
}

// ---------------------------------------------------------------------------------------
// 4: the read-only default

/// Without `--rw` each kind of change is EROFS and the store does not change at all.
#[test]
fn without_rw_every_write_is_erofs() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_readonly");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    for name in ["Target", "Empty"] {
        bob.create_mailbox(name);
    }
    let uids: Vec<u32> = (1..=3)
        .map(|n| bob.save("INBOX", &email(n, "Read-only", "x")))
        .collect();
    bob.save("Target", &email(9, "In Target", "x"));
    let scratch = dir.mkdir("scratch");
    let src = scratch.join("new.eml");
    fs::write(&src, email(5, "New", "never saved")).expect("writing the source");
    let before = Fingerprint::of(&bob.store_root());
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let msg = mount.message("INBOX", uids[0]);
    let inbox = mount.mailbox("INBOX");
    assert!(
        msg.is_file(),
        "{msg:?} must exist for the attempts to mean anything"
    );

    let attempts: Vec<(&str, io::Result<()>)> = vec![
        ("rm", fs::remove_file(&msg)),
        (
            "mv to another mailbox",
            fs::rename(&msg, mount.mailbox("Target").join(eml(uids[0]))),
        ),
        ("cp (create)", fs::write(inbox.join("new.eml"), b"x")),
        ("mkdir", fs::create_dir(mount.path().join("NewBox"))),
        ("rmdir", fs::remove_dir(mount.mailbox("Empty"))),
        (
            "rename a mailbox",
            fs::rename(mount.mailbox("Empty"), mount.path().join("Renamed")),
        ),
        (
            "setfattr user.mail.flags",
            setxattr(&msg, "user.mail.flags", b"\\Seen"),
        ),
        (
            "setfattr user.mail.flags.add",
            setxattr(&msg, "user.mail.flags.add", b"\\Flagged"),
        ),
        (
            "setfattr user.mail.flags.remove",
            setxattr(&msg, "user.mail.flags.remove", b"\\Seen"),
        ),
        ("truncate(2)", truncate(&msg, 0)),
        (
            "open with O_TRUNC",
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&msg)
                .map(drop),
        ),
    ];
    let wrong: Vec<String> = attempts
        .iter()
        .filter(|(_, r)| errno(r) != Some(libc::EROFS))
        .map(|(what, r)| format!("{what}: {}", errno_name(errno(r))))
        .collect();
    assert!(wrong.is_empty(), "not EROFS:\n  {}", wrong.join("\n  "));
    // The cp tool says so too.
    let out = run("cp", &[src.as_os_str(), inbox.as_os_str()]);
    assert!(
        !out.status.success() && show(&out.stderr).contains("Read-only file system"),
        "cp into a read-only mount: {} {}",
        out.status,
        show(&out.stderr)
    );
    assert!(msg.is_file(), "the message is still there");
    mount.stop();
    // (Before any doveadm call: doveadm itself writes index and cache files.)
    before.assert_same(
        &Fingerprint::of(&bob.store_root()),
        "the store after write attempts on a read-only mount",
    );
    assert_eq!(bob.uids("INBOX"), uids);
}

// ---------------------------------------------------------------------------------------
// 5: the negative control: Dovecot's log shows each change done by its doveadm server

/// Dovecot's mail_log plugin logs every change made through its mail API: a change that
/// mailfs made on the store files itself would not be there.
const MAIL_LOG: [&str; 3] = [
    "mail_plugins = $mail_plugins mail_log notify",
    "plugin/mail_log_events = delete undelete expunge copy mailbox_delete mailbox_rename \
     flag_change save mailbox_create",
    "plugin/mail_log_fields = uid box msgid size flags",
];

/// Panics unless Dovecot's log has each of `events` (mail_log's words, e.g.
/// `expunge: box=INBOX, uid=3`) logged by a doveadm server session of `user`: a line
/// `doveadm(USER)<PID><SESSION>: Info: EVENT` with the event ending there or at a comma.
/// (`doveadm` run from the command line logs to its stderr, not to this log.)
#[track_caller]
fn assert_done_by_doveadm_server(log: &str, user: &str, events: &[String]) {
    let prefix = format!("doveadm({user})<");
    let missing: Vec<&String> = events
        .iter()
        .filter(|event| {
            let needle = format!(": Info: {event}");
            !log.lines().any(|line| {
                line.contains(&prefix)
                    && line.find(&needle).is_some_and(|at| {
                        let rest = &line[at + needle.len()..];
                        rest.is_empty() || rest.starts_with(',')
                    })
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not logged by a doveadm server session of {user}: {missing:?}\n--- dovecot.log ---\n{log}"
    );
}

/// rm, mv, setfattr, cp, mkdir, rename and rmdir through the mount each show in Dovecot's
/// log as done by its doveadm server for bob (the negative control is the next test).
#[test]
fn dovecot_logs_every_change_as_done_by_its_doveadm_server() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_mail_log");
    let dovecot = Dovecot::start_with_settings(&dir, Layout::MaildirPlusPlus, &MAIL_LOG);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Target");
    let uids: Vec<u32> = (1..=3)
        .map(|n| bob.save("INBOX", &email(n, "Logged", "x")))
        .collect();
    let scratch = dir.mkdir("scratch");
    let mount = mount_rw(&dir, &dovecot, &bob, &[]);
    let inbox = mount.mailbox("INBOX");

    fs::remove_file(mount.message("INBOX", uids[0])).expect("rm");
    let moved_to = bob.status("Target").uidnext;
    fs::rename(
        mount.message("INBOX", uids[1]),
        mount.mailbox("Target").join(eml(uids[1])),
    )
    .expect("mv");
    setxattr(
        &mount.message("INBOX", uids[2]),
        "user.mail.flags",
        b"\\Seen $Label1",
    )
    .expect("setfattr");
    let saved = bob.status("INBOX").uidnext;
    let src = scratch.join("new.eml");
    fs::write(&src, email(4, "Copied", "x")).expect("writing the source");
    cp(&src, &inbox);
    fs::create_dir(mount.path().join("New")).expect("mkdir");
    fs::rename(mount.mailbox("New"), mount.path().join("New2")).expect("rename");
    fs::remove_dir(mount.mailbox("New2")).expect("rmdir");
    assert_eq!(bob.uids("INBOX"), vec![uids[2], saved]);
    assert_eq!(bob.uids("Target"), vec![moved_to]);

    let events = [
        format!("expunge: box=INBOX, uid={}", uids[0]),
        format!("copy from INBOX: box=Target, uid={moved_to}"),
        format!("expunge: box=INBOX, uid={}", uids[1]),
        format!("flag_change: box=INBOX, uid={}", uids[2]),
        format!("save: box=INBOX, uid={saved}"),
        "Mailbox created: New".to_string(),
        "Mailbox renamed: New -> New2".to_string(),
        "Mailbox deleted: New2".to_string(),
    ];
    assert_done_by_doveadm_server(&dovecot.log_text(), "bob", &events);
    mount.stop();
}

/// The negative control of the test above: the same changes made on the store files
/// (what a mailfs that wrote the store itself would do) are real to Dovecot, but the log
/// check fails for each of them.
#[test]
fn changes_made_on_the_store_files_fail_the_log_check() {
    require!(Dovecot);
    let dir = TestDir::new("wm_mail_log_neg");
    let dovecot = Dovecot::start_with_settings(&dir, Layout::MaildirPlusPlus, &MAIL_LOG);
    let bob = dovecot.user("bob");
    let uids: Vec<u32> = (1..=2)
        .map(|n| bob.save("INBOX", &email(n, "Direct", "x")))
        .collect();
    bob.select("INBOX"); // new/ -> cur/
    let maildir = bob.mailbox_dir("INBOX");
    let file_of = |uid: u32| -> PathBuf {
        let guid = bob.fetch_guid("INBOX", uid);
        fs::read_dir(maildir.join("cur"))
            .expect("cur/")
            .map(|e| e.expect("entry").path())
            .find(|p| crate::util::name_of(p).starts_with(&guid))
            .unwrap_or_else(|| panic!("no file for uid {uid} ({guid})"))
    };
    // "rm": unlink the file; "setfattr": rename it with the S flag; "cp": a file in new/.
    fs::remove_file(file_of(uids[0])).expect("unlinking the message file");
    let f = file_of(uids[1]);
    let flagged = PathBuf::from(format!("{}S", f.display()));
    fs::rename(&f, &flagged).expect("renaming the message file");
    let (uid, gid) = dovecot.mail_owner();
    let new = maildir.join("new/1700000000.M1P1.direct");
    fs::write(&new, email(3, "Direct save", "x")).expect("writing into new/");
    crate::util::chown_recursive(&new, uid, gid);
    // Dovecot sees each change...
    let after = bob.uids("INBOX");
    assert!(
        after.len() == 2 && after[0] == uids[1] && after[1] > uids[1],
        "doveadm after the changes: {after:?}"
    );
    let next = after[1];
    assert_eq!(doveadm_flags(&bob, "INBOX", uids[1]), flag_set("\\Seen"));
    // ...and the log check fails for each.
    let log = dovecot.log_text();
    for event in [
        format!("expunge: box=INBOX, uid={}", uids[0]),
        format!("flag_change: box=INBOX, uid={}", uids[1]),
        format!("save: box=INBOX, uid={next}"),
    ] {
        let check = std::panic::catch_unwind(|| {
            assert_done_by_doveadm_server(&log, "bob", std::slice::from_ref(&event))
        });
        assert!(
            check.is_err(),
            "the log check passed for {event:?} made on the store files:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 8: the cluster path: a proxy forwards doveadm commands to the backend

/// `service doveadm` with a TCP listener on 127.0.0.1:`port`.
fn doveadm_listener(port: u16) -> String {
    format!(
        "service doveadm {{\n  inet_listener {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}"
    )
}

#[track_caller]
fn wait_listening(port: u16) {
    crate::util::wait_for(
        std::time::Duration::from_secs(10),
        &format!("a listener on 127.0.0.1:{port}"),
        || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(drop)
        },
    );
}

/// The backend holds bob's mail and serves doveadm on TCP (`doveadm_password`); a second
/// Dovecot, whose passdb says `proxy=y host=127.0.0.1`, takes doveadm commands on its own
/// TCP port and forwards them to the backend (`doveadm_port`). mailfs mounts the
/// backend's store and sends its changes to the proxy: cp, rm, mv and setfattr land on the
/// backend (its doveadm and its log say so, the proxy's log shows it forwarded them, the
/// proxy keeps no mail) and show through the mount. A wrong secret fails the mount.
#[test]
fn cluster_path_through_a_doveadm_proxy() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_cluster");
    let proxy_dir = TestDir::new("wm_cluster_proxy");
    let (backend_port, proxy_port) = (free_port(), free_port());
    assert_ne!(backend_port, proxy_port);
    let listener = doveadm_listener(backend_port);
    let mut settings = vec!["doveadm_password = secret"];
    settings.extend(MAIL_LOG);
    let backend = Dovecot::start_with_config(
        &dir,
        Layout::MaildirPlusPlus,
        Config {
            settings: &settings,
            sections: &[&listener],
            ..Config::default()
        },
    );
    let backend_setting = format!("doveadm_port = {backend_port}");
    let listener = doveadm_listener(proxy_port);
    let proxy = Dovecot::start_with_config(
        &proxy_dir,
        Layout::MaildirPlusPlus,
        Config {
            settings: &[&backend_setting, "doveadm_password = secret"],
            passdb_args: Some("proxy=y host=127.0.0.1 nopassword=y"),
            sections: &[&listener],
        },
    );
    wait_listening(backend_port);
    wait_listening(proxy_port);
    let bob = backend.user("bob");
    bob.create_mailbox("Target");
    let uids: Vec<u32> = (1..=3)
        .map(|n| bob.save("INBOX", &email(n, "Clustered", "x")))
        .collect();
    // The proxy works for doveadm itself: `doveadm -S` to it lists the backend's mailboxes.
    let via_proxy = proxy.doveadm(
        &[],
        &[
            "mailbox",
            "list",
            "-S",
            &format!("127.0.0.1:{proxy_port}"),
            "-u",
            "bob",
        ],
        None,
    );
    let mut listed: Vec<String> = String::from_utf8_lossy(&via_proxy)
        .lines()
        .map(str::to_string)
        .collect();
    listed.sort();
    assert_eq!(listed, bob.list(), "doveadm -S through the proxy");

    let secret = dir.join("doveadm.secret");
    fs::write(&secret, "secret\n").expect("writing the secret file");
    crate::util::set_mode(&secret, 0o600);
    let endpoint = format!("tcp:127.0.0.1:{proxy_port}");
    let rw = |secret: &Path| -> Vec<String> {
        [
            "--rw",
            "--user",
            "bob",
            "--doveadm",
            &endpoint,
            "--doveadm-secret-file",
            secret.to_str().expect("UTF-8"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // A wrong secret: the mount refuses to start and says why.
    let wrong = dir.join("wrong.secret");
    fs::write(&wrong, "not the password\n").expect("writing the wrong secret");
    let args = rw(&wrong);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let failed =
        crate::util::mount::mount_must_fail(&bob.location(), &dir.mkdir("mnt-wrong"), &args);
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains(&endpoint),
        "the error names the endpoint: {}",
        failed.stderr
    );

    let args = rw(&secret);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &args);
    let inbox = mount.mailbox("INBOX");
    let src = dir.mkdir("scratch").join("new.eml");
    let bytes = email(4, "Through the proxy", "x");
    fs::write(&src, &bytes).expect("writing the source");
    let saved = bob.status("INBOX").uidnext;
    cp(&src, &inbox);
    fs::remove_file(mount.message("INBOX", uids[0])).expect("rm");
    let moved_to = bob.status("Target").uidnext;
    fs::rename(
        mount.message("INBOX", uids[1]),
        mount.mailbox("Target").join(eml(uids[1])),
    )
    .expect("mv");
    setxattr(
        &mount.message("INBOX", uids[2]),
        "user.mail.flags",
        b"\\Flagged $Label2",
    )
    .expect("setfattr");

    // On the backend...
    assert_eq!(bob.uids("INBOX"), vec![uids[2], saved], "backend INBOX");
    assert_eq!(bob.uids("Target"), vec![moved_to], "backend Target");
    assert_bytes_eq(&bob.text("INBOX", saved), &bytes, "the message saved");
    assert_eq!(
        doveadm_flags(&bob, "INBOX", uids[2]),
        flag_set("\\Flagged $Label2")
    );
    // ...done by its doveadm server, which the proxy forwarded each command to.
    let events = [
        format!("save: box=INBOX, uid={saved}"),
        format!("expunge: box=INBOX, uid={}", uids[0]),
        format!("copy from INBOX: box=Target, uid={moved_to}"),
        format!("flag_change: box=INBOX, uid={}", uids[2]),
    ];
    assert_done_by_doveadm_server(&backend.log_text(), "bob", &events);
    let proxy_log = proxy.log_text();
    let remote = format!("remote(127.0.0.1:{backend_port})");
    for event in &events {
        assert!(
            proxy_log
                .lines()
                .any(|l| l.contains(&remote) && l.contains(event.as_str())),
            "the proxy's log lacks {event:?} forwarded to {remote}:\n{proxy_log}"
        );
    }
    let proxy_home = proxy.user("bob").home();
    assert!(
        crate::util::fsx::walk(&proxy_home).is_empty(),
        "the proxy keeps mail of its own: {:?}",
        crate::util::fsx::walk(&proxy_home)
    );
    // ...and through the mount.
    assert_eq!(
        names(&inbox),
        [eml(uids[2]), eml(saved)].into(),
        "ls INBOX through the mount"
    );
    assert_eq!(
        flag_set(&xattr_string(
            &mount.message("INBOX", uids[2]),
            "user.mail.flags"
        )),
        flag_set("\\Flagged $Label2")
    );
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}

// ---------------------------------------------------------------------------------------
// 2: rsync -a and tar -x restore each message exactly once

/// The messages of a restore: plain, CRLF, no final newline, a From_ line, form feeds
/// and one over 128 KiB (written in several requests).
fn restore_set() -> Vec<(String, Vec<u8>)> {
    let mut set: Vec<(String, Vec<u8>)> = (1..=4)
        .map(|n| {
            (
                format!("msg{n}.eml"),
                email(100 + n, &format!("Restored {n}"), &"body line\n".repeat(n)),
            )
        })
        .collect();
    set.push(("crlf.eml".into(), crlf()));
    set.push(("nonl.eml".into(), no_final_newline()));
    set.push(("ff.eml".into(), crate::util::corpus::form_feeds()));
    set.push(("large.eml".into(), crate::util::corpus::large(160)));
    set
}

/// The texts of every message of `mailbox`, sorted.
fn texts(user: &User<'_>, mailbox: &str) -> Vec<Vec<u8>> {
    let mut t: Vec<Vec<u8>> = user.fetch(mailbox).into_iter().map(|m| m.text).collect();
    t.sort();
    t
}

/// After a restore into `mailbox`: exactly the stored forms of the source files, each
/// once, listed as `<uid>.eml` and nothing else.
#[track_caller]
fn assert_restored(user: &User<'_>, mount: &Mount, mailbox: &str, expected: &[Vec<u8>]) {
    let got = texts(user, mailbox);
    assert_eq!(
        got.len(),
        expected.len(),
        "{mailbox}: {} messages for {} files",
        got.len(),
        expected.len()
    );
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_bytes_eq(
            g,
            e,
            &format!("{mailbox}: message {i} (sorted) vs doveadm save"),
        );
    }
    let listed = names(&mount.mailbox(mailbox));
    let uids: BTreeSet<String> = user.uids(mailbox).into_iter().map(eml).collect();
    assert_eq!(listed, uids, "ls {mailbox} after the restore");
}

#[test]
fn rsync_and_tar_restore_each_message_once() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_restore");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    for name in ["Ref", "Rsynced", "Untarred"] {
        bob.create_mailbox(name);
    }
    bob.save("INBOX", &email(1, "Already here", "x"));
    let src = dir.mkdir("backup");
    let set = restore_set();
    let mut expected = Vec::new();
    for (name, bytes) in &set {
        fs::write(src.join(name), bytes).expect("writing the backup");
        expected.push(stored_form(&bob, "Ref", bytes));
    }
    expected.sort();
    let tarball = dir.join("backup.tar");
    let out = run(
        "tar",
        &[
            "-cf".as_ref(),
            tarball.as_os_str(),
            "-C".as_ref(),
            src.as_os_str(),
            ".".as_ref(),
        ],
    );
    assert!(out.status.success(), "tar -c: {}", show(&out.stderr));
    let mount = mount_rw(&dir, &dovecot, &bob, &[]);

    // rsync -a: each file to a temporary name, closed, renamed; times and modes set.
    let mut from = src.clone().into_os_string();
    from.push("/");
    let out = run(
        "rsync",
        &["-a".as_ref(), &from, mount.mailbox("Rsynced").as_os_str()],
    );
    assert!(
        out.status.success(),
        "rsync -a exited {}: {}{}",
        out.status,
        show(&out.stdout),
        show(&out.stderr)
    );
    assert_restored(&bob, &mount, "Rsynced", &expected);

    // tar -x: each file created, written, closed, then its times and mode set.
    let out = run(
        "tar",
        &[
            "-xf".as_ref(),
            tarball.as_os_str(),
            "-C".as_ref(),
            mount.mailbox("Untarred").as_os_str(),
        ],
    );
    assert!(
        out.status.success(),
        "tar -x exited {}: {}",
        out.status,
        show(&out.stderr)
    );
    assert_restored(&bob, &mount, "Untarred", &expected);
    assert_eq!(bob.uids("INBOX").len(), 1, "INBOX untouched");
    assert_force_resync_changes_nothing(&bob);
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}

// ---------------------------------------------------------------------------------------
// 3: aborted copies save nothing

/// `cp FIFO MP/INBOX/NAME`, fed `bytes` through the FIFO; returns the running cp and the
/// FIFO's write end once the staged file holds all of `bytes`.
fn cp_from_fifo(fifo: &Path, dest: &Path, bytes: &[u8]) -> (std::process::Child, fs::File) {
    let out = run("mkfifo", &[fifo.as_os_str()]);
    assert!(out.status.success(), "mkfifo: {}", show(&out.stderr));
    let child = Command::new("cp")
        .arg(fifo)
        .arg(dest)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting cp");
    let mut writer = fs::OpenOptions::new()
        .write(true)
        .open(fifo)
        .expect("opening the FIFO");
    writer.write_all(bytes).expect("feeding cp");
    writer.flush().expect("flushing the FIFO");
    crate::util::wait_for(
        std::time::Duration::from_secs(10),
        "cp to have written what it was fed",
        || {
            fs::metadata(dest)
                .ok()
                .filter(|m| m.len() == bytes.len() as u64)
                .map(drop)
        },
    );
    (child, writer)
}

/// A `cp` killed with SIGKILL in the middle of a copy (from a FIFO) saves nothing, while
/// the same copy let finish saves one message (the control); a file over
/// `--max-message-size` fails with EFBIG and saves nothing, one under it is saved.
#[test]
fn killed_and_oversized_copies_save_nothing() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_aborted");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Already here", "x"));
    let scratch = dir.mkdir("scratch");
    let mount = mount_rw(&dir, &dovecot, &bob, &["--max-message-size", "1000"]);
    let inbox = mount.mailbox("INBOX");
    let head = email(2, "Half a message", "the first part of the body\n");

    // Killed mid-copy: cp has written the first part and waits for more.
    let killed_dest = inbox.join("killed.eml");
    let (mut child, writer) = cp_from_fifo(&scratch.join("fifo1"), &killed_dest, &head);
    child.kill().expect("SIGKILL cp");
    let status = child.wait().expect("waiting for cp");
    drop(writer);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // A save would be done by the time the killed cp's close returned; look twice.
    for _ in 0..2 {
        assert_eq!(bob.uids("INBOX").len(), 1, "a killed cp saved a message");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(
        !names(&inbox).contains("killed.eml"),
        "the killed copy is still listed: {:?}",
        names(&inbox)
    );

    // The control: the same copy, let finish, is saved.
    let finished_dest = inbox.join("finished.eml");
    let (child, writer) = cp_from_fifo(&scratch.join("fifo2"), &finished_dest, &head);
    drop(writer);
    let out = child.wait_with_output().expect("waiting for cp");
    assert!(out.status.success(), "cp: {}", show(&out.stderr));
    let uids = bob.uids("INBOX");
    assert_eq!(uids.len(), 2, "the finished copy was saved");
    assert_bytes_eq(&bob.text("INBOX", uids[1]), &head, "the finished copy");

    // Over --max-message-size: EFBIG, nothing saved (cp, then the syscalls themselves).
    let mut big = email(3, "Too big", &"x".repeat(1200));
    big.truncate(1500);
    let big_src = scratch.join("big.eml");
    fs::write(&big_src, &big).expect("writing the big file");
    let out = run("cp", &[big_src.as_os_str(), inbox.as_os_str()]);
    assert!(
        !out.status.success() && show(&out.stderr).contains("File too large"),
        "cp of 1500 bytes with --max-message-size 1000: {} {}",
        out.status,
        show(&out.stderr)
    );
    let direct = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(inbox.join("big2.eml"))
        .and_then(|mut f| f.write_all(&big));
    assert_errno("writing 1500 bytes", &direct, libc::EFBIG);
    assert_eq!(bob.uids("INBOX"), uids, "an oversized copy saved something");
    // Under the limit it is saved (the limit is what refused the others).
    let small = email(4, "Small enough", "x");
    assert!(small.len() < 1000);
    fs::write(inbox.join("small.eml"), &small).expect("writing a small message");
    assert_eq!(bob.uids("INBOX").len(), 3, "the small message was saved");
    let listed = names(&inbox);
    assert!(
        !listed.iter().any(|n| n.starts_with("big")),
        "an oversized copy is still listed: {listed:?}"
    );
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}

// ---------------------------------------------------------------------------------------
// 7: errors

/// Lines of the mount's log that mention `what`.
fn log_lines(mount: &Mount, what: &str) -> Vec<String> {
    mount
        .log()
        .lines()
        .filter(|l| l.contains(what))
        .map(str::to_string)
        .collect()
}

/// `--rw` that cannot work is refused at start-up: a doveadm socket that does not exist
/// (exit 1, the endpoint named), a single-user location without `--user` and an endpoint
/// that is none (usage errors, exit 2).
#[test]
fn rw_mount_refuses_to_start_without_a_working_endpoint() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_start_errors");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "x", "x"));
    let mp = dir.mkdir("mnt");
    let missing = dir.join("no-such-dir/doveadm-server");
    let missing = missing.to_str().expect("UTF-8");
    let failed = crate::util::mount::mount_must_fail(
        &bob.location(),
        &mp,
        &["--rw", "--user", "bob", "--doveadm", missing],
    );
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains(missing),
        "the error names the endpoint: {}",
        failed.stderr
    );

    let failed = crate::util::mount::mount_must_fail(&bob.location(), &mp, &["--rw"]);
    assert_eq!(failed.status.code(), Some(2), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("--user"),
        "the usage error says what is missing: {}",
        failed.stderr
    );

    let socket = dovecot.doveadm_socket();
    let failed = crate::util::mount::mount_must_fail(
        &bob.location(),
        &mp,
        &["--rw", "--user", "bob", "--doveadm", "not/an/endpoint"],
    );
    assert_eq!(failed.status.code(), Some(2), "{}", failed.stderr);
    // The control: the same mount with the real socket starts.
    let socket = socket.to_str().expect("UTF-8");
    let mount = Mount::start(
        &bob.location(),
        &mp,
        &["--rw", "--user", "bob", "--doveadm", socket],
    );
    mount.stop();
}

/// A TCP endpoint for a doveadm server's unix socket: each connection accepted on
/// 127.0.0.1 is piped to the socket, until [`Forwarder::cut`] makes the endpoint
/// unreachable (the listener closed, every connection shut down).
struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(socket: PathBuf) -> Forwarder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let acceptor = {
            let (stop, conns) = (stop.clone(), conns.clone());
            std::thread::spawn(move || {
                for tcp in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return; // drops the listener: connections are refused now
                    }
                    let Ok(tcp) = tcp else { continue };
                    let Ok(unix) = std::os::unix::net::UnixStream::connect(&socket) else {
                        continue;
                    };
                    conns.lock().unwrap().push(tcp.try_clone().expect("clone"));
                    let (mut tcp_r, mut unix_w) = (tcp.try_clone().expect("clone"), unix);
                    let (mut unix_r, mut tcp_w) = (unix_w.try_clone().expect("clone"), tcp);
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut tcp_r, &mut unix_w);
                        let _ = unix_w.shutdown(std::net::Shutdown::Both);
                    });
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut unix_r, &mut tcp_w);
                        let _ = tcp_w.shutdown(std::net::Shutdown::Both);
                    });
                }
            })
        };
        Forwarder {
            port,
            stop,
            conns,
            acceptor: Some(acceptor),
        }
    }

    fn endpoint(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }

    /// From now on the endpoint refuses connections, and the open ones are closed.
    fn cut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port)); // wakes accept()
        if let Some(t) = self.acceptor.take() {
            t.join().expect("the acceptor");
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "the endpoint still takes connections"
        );
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.cut();
        }
    }
}

/// One write to try, again and again.
type Attempt<'a> = Box<dyn Fn() -> io::Result<()> + 'a>;

/// Every kind of write on a mount whose doveadm server is gone: each fails with EIO and
/// adds exactly one log line, which `says_why` accepts; reads go on, the message keeps
/// its flags (`flags`).
#[track_caller]
fn assert_writes_fail_with_eio(
    mount: &Mount,
    uids: &[u32],
    text: &[u8],
    flags: &str,
    says_why: &dyn Fn(&str) -> bool,
) {
    let msg = mount.message("INBOX", uids[0]);
    let inbox = mount.mailbox("INBOX");
    let target = mount.mailbox("Target");
    let new_box = mount.path().join("NewBox");
    let new_message = email(3, "Never saved", "x");
    let warned = log_lines(mount, " WARN ");
    assert!(warned.is_empty(), "{}", mount.log());
    let attempts: Vec<(&str, Attempt<'_>)> = vec![
        ("rm", Box::new(|| fs::remove_file(&msg))),
        (
            "setfattr",
            Box::new(|| setxattr(&msg, "user.mail.flags.add", b"\\Flagged")),
        ),
        (
            "mv",
            Box::new(|| fs::rename(&msg, target.join(eml(uids[0])))),
        ),
        ("mkdir", Box::new(|| fs::create_dir(&new_box))),
        (
            "cp (close)",
            Box::new(|| create_write_close(&inbox.join("new.eml"), &new_message)),
        ),
    ];
    for (n, (what, attempt)) in attempts.iter().enumerate() {
        assert_errno(what, &attempt(), libc::EIO);
        let lines = log_lines(mount, " WARN ");
        assert_eq!(
            lines.len(),
            n + 1,
            "one log line for each failed write (after {what}):\n{}",
            lines.join("\n")
        );
        let last = lines.last().expect("a line");
        assert!(
            says_why(last),
            "the log line for {what} does not say why: {last}"
        );
    }
    // Reads go on.
    assert_eq!(
        names(&inbox),
        uids.iter().map(|u| eml(*u)).collect(),
        "ls with the doveadm server gone"
    );
    assert_bytes_eq(
        &fs::read(&msg).expect("reading with the doveadm server gone"),
        text,
        "a message read with the doveadm server gone",
    );
    assert_eq!(xattr_string(&msg, "user.mail.flags"), flags);
}

/// The doveadm server becomes unreachable while mounted (a TCP endpoint that stops
/// taking connections), then Dovecot itself stops under a second mount: each write fails
/// with EIO and one log line saying why (the endpoint named; Dovecot's words when the
/// doveadm server process the mount is connected to outlives its master), nothing
/// changes in the store, and reads go on.
#[test]
fn writes_fail_with_eio_when_the_server_is_gone_and_reads_go_on() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_server_gone");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Target");
    let uids: Vec<u32> = (1..=2)
        .map(|n| bob.save("INBOX", &email(n, "Stays", "x")))
        .collect();
    let text = bob.text("INBOX", uids[0]);
    let store = bob.store_root();

    // 1: unreachable.
    let mut forwarder = Forwarder::start(dovecot.doveadm_socket());
    let endpoint = forwarder.endpoint();
    let mount = Mount::start(
        &bob.location(),
        &dir.join("mnt-tcp"),
        &["--rw", "--user", "bob", "--doveadm", &endpoint],
    );
    let msg = mount.message("INBOX", uids[0]);
    // A write while it is reachable works (and leaves a pooled connection).
    setxattr(&msg, "user.mail.flags.add", b"\\Seen").expect("setfattr while reachable");
    assert_eq!(doveadm_flags(&bob, "INBOX", uids[0]), flag_set("\\Seen"));
    forwarder.cut();
    let before = Fingerprint::of(&store);
    assert_writes_fail_with_eio(&mount, &uids, &text, "\\Seen", &|line: &str| {
        line.contains(&endpoint)
    });
    mount.stop();
    before.assert_same(
        &Fingerprint::of(&store),
        "the store after the failed writes",
    );

    // 2: Dovecot stopped.
    let mount = mount_rw(&dir, &dovecot, &bob, &[]);
    setxattr(
        &mount.message("INBOX", uids[0]),
        "user.mail.flags.add",
        b"$Label1",
    )
    .expect("while up");
    let socket = dovecot.doveadm_socket().display().to_string();
    drop(bob);
    drop(dovecot);
    let before = Fingerprint::of(&store);
    assert_writes_fail_with_eio(&mount, &uids, &text, "\\Seen $Label1", &|line: &str| {
        line.contains(&socket) || line.contains("doveadm(bob)")
    });
    mount.stop();
    before.assert_same(
        &Fingerprint::of(&store),
        "the store after the failed writes",
    );
}

/// A message or mailbox Dovecot removed meanwhile (the mount had listed it): rm, mv and
/// setfattr of it give ENOENT, and nothing else changes.
#[test]
fn changes_to_what_dovecot_removed_meanwhile_are_enoent() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_gone");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    for name in ["Doomed", "Target"] {
        bob.create_mailbox(name);
    }
    let doomed: Vec<u32> = (1..=2)
        .map(|n| bob.save("Doomed", &email(n, "Doomed", "x")))
        .collect();
    let inbox: Vec<u32> = (3..=5)
        .map(|n| bob.save("INBOX", &email(n, "Inbox", "x")))
        .collect();
    let mount = mount_rw(&dir, &dovecot, &bob, &[]);
    // The mount (and the kernel) have seen them.
    for (mb, uid) in [
        ("Doomed", doomed[0]),
        ("Doomed", doomed[1]),
        ("INBOX", inbox[0]),
    ] {
        fs::metadata(mount.message(mb, uid)).expect("stat before");
    }
    bob.adm(&[], &["mailbox", "delete"], &["Doomed"]);
    bob.expunge("INBOX", inbox[0]);
    let cases: Vec<(&str, io::Result<()>)> = vec![
        (
            "rm in a deleted mailbox",
            fs::remove_file(mount.message("Doomed", doomed[0])),
        ),
        (
            "setfattr in a deleted mailbox",
            setxattr(
                &mount.message("Doomed", doomed[1]),
                "user.mail.flags",
                b"\\Seen",
            ),
        ),
        (
            "mv out of a deleted mailbox",
            fs::rename(
                mount.message("Doomed", doomed[1]),
                mount.mailbox("Target").join("1.eml"),
            ),
        ),
        (
            "rm of an expunged message",
            fs::remove_file(mount.message("INBOX", inbox[0])),
        ),
    ];
    for (what, r) in &cases {
        assert_errno(what, r, libc::ENOENT);
    }
    assert_eq!(bob.uids("INBOX"), inbox[1..].to_vec());
    assert!(bob.uids("Target").is_empty());
    assert!(!bob.list().contains(&"Doomed".to_string()));
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}

/// Over quota (Dovecot's quota plugin, 2 messages): the save fails with EDQUOT at close,
/// `cp` fails, the log carries Dovecot's words, nothing is saved.
#[test]
fn a_copy_over_quota_is_edquot_with_dovecots_words() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_quota");
    let dovecot = Dovecot::start_with_settings(
        &dir,
        Layout::MaildirPlusPlus,
        &[
            "mail_plugins = $mail_plugins quota",
            "plugin/quota = count:User quota",
            "plugin/quota_rule = *:messages=2",
            "plugin/quota_vsizes = yes",
        ],
    );
    let bob = dovecot.user("bob");
    let first = bob.save("INBOX", &email(1, "One", "x"));
    let scratch = dir.mkdir("scratch");
    let mount = mount_rw(&dir, &dovecot, &bob, &[]);
    let inbox = mount.mailbox("INBOX");
    // Under quota: saved.
    fs::write(inbox.join("second.eml"), email(2, "Two", "x")).expect("the second message");
    assert_eq!(bob.uids("INBOX").len(), 2);
    // Over quota: the close fails with EDQUOT.
    let closed = create_write_close(&inbox.join("third.eml"), &email(3, "Three", "x"));
    assert_errno("close of a message over quota", &closed, libc::EDQUOT);
    let src = scratch.join("fourth.eml");
    fs::write(&src, email(4, "Four", "x")).expect("writing the source");
    let out = run("cp", &[src.as_os_str(), inbox.as_os_str()]);
    assert!(
        !out.status.success() && show(&out.stderr).contains("Disk quota exceeded"),
        "cp over quota: {} {}",
        out.status,
        show(&out.stderr)
    );
    let lines = log_lines(&mount, "Quota exceeded");
    assert!(
        !lines.is_empty(),
        "the log lacks Dovecot's words:\n{}",
        mount.log()
    );
    assert_eq!(bob.uids("INBOX").len(), 2, "nothing saved over quota");
    assert_eq!(bob.uids("INBOX")[0], first);
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}

// ---------------------------------------------------------------------------------------
// 6: a storm of writes through the mount against Dovecot's own IMAP sessions

/// A minimal IMAP session (`doveadm exec imap -u USER`), each command answered before
/// the next.
struct Imap {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: io::BufReader<std::process::ChildStdout>,
    tag: usize,
}

impl Imap {
    fn start(dovecot: &Dovecot, user: &str) -> Imap {
        let mut child = dovecot
            .doveadm_command(&["exec", "imap", "-u", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting doveadm exec imap");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut imap = Imap {
            child,
            stdin,
            stdout,
            tag: 0,
        };
        let greeting = imap.line();
        assert!(greeting.starts_with("* PREAUTH"), "{greeting:?}");
        imap
    }

    fn line(&mut self) -> String {
        use std::io::BufRead as _;
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("reading from imap");
        assert!(n > 0, "the IMAP session ended");
        line
    }

    /// Runs one command (with a LITERAL+ literal), returns its tagged OK line.
    fn run(&mut self, command: &str, literal: Option<&[u8]>) -> String {
        self.tag += 1;
        let tag = format!("s{}", self.tag);
        let mut bytes = match literal {
            Some(l) => format!("{tag} {command} {{{}+}}\r\n", l.len()).into_bytes(),
            None => format!("{tag} {command}\r\n").into_bytes(),
        };
        if let Some(l) = literal {
            bytes.extend_from_slice(l);
            bytes.extend_from_slice(b"\r\n");
        }
        self.stdin.write_all(&bytes).expect("writing to imap");
        loop {
            let line = self.line();
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                assert!(rest.starts_with("OK"), "IMAP {command}: {line}");
                return line;
            }
        }
    }

    /// APPEND; the UID Dovecot gave the message.
    fn append(&mut self, mailbox: &str, message: &[u8]) -> u32 {
        let line = self.run(&format!("APPEND {mailbox}"), Some(message));
        line.split("[APPENDUID ")
            .nth(1)
            .and_then(|r| r.split([' ', ']']).nth(1))
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("no APPENDUID in {line:?}"))
    }
}

impl Drop for Imap {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"z LOGOUT\r\n");
        let _ = self.child.wait();
    }
}

/// A message carrying `X-Storm: <marker>`.
fn marked(marker: &str, n: usize) -> Vec<u8> {
    let mut m = format!("X-Storm: {marker}\n").into_bytes();
    m.extend(email(n, &format!("Storm {marker}"), "storm body"));
    m
}

/// The `X-Storm` marker of a stored message.
fn marker_of(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .lines()
        .find_map(|l| l.strip_prefix("X-Storm: "))
        .map(|m| m.trim_end().to_string())
        .unwrap_or_else(|| panic!("a message without a marker: {}", show(text)))
}

/// The UID of the message with `marker` in `mailbox` (doveadm search on the header).
fn uid_of_marker(user: &User<'_>, mailbox: &str, marker: &str) -> Result<u32, String> {
    let out = user.adm(
        &[],
        &["search"],
        &["mailbox", mailbox, "header", "X-Storm", marker],
    );
    let text = String::from_utf8_lossy(&out);
    let uids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    match uids[..] {
        [uid] => Ok(uid),
        _ => Err(format!("search for {marker} in {mailbox}: {text:?}")),
    }
}

/// Where each marked message must end up: `Some(mailbox)` exactly once there, `None`
/// nowhere.
type Expected = BTreeMap<String, Option<&'static str>>;

/// What one storm thread did: where its messages must be, and what failed.
#[derive(Default)]
struct Tally {
    expected: Expected,
    problems: Vec<String>,
}

impl Tally {
    fn check<T>(&mut self, what: impl FnOnce() -> String, r: io::Result<T>) -> bool {
        match r {
            Ok(_) => true,
            Err(e) => {
                self.problems.push(format!("{}: {e}", what()));
                false
            }
        }
    }
}

/// Many writers at once: 2 threads copy marked messages in (every third with the cp
/// tool, every fourth then removed again), one removes seeded messages, one changes
/// flags, one moves messages between the two mailboxes, while Dovecot's own IMAP
/// session appends, changes flags and expunges in the same mailboxes. Every write through
/// the mount must succeed; afterwards each marked message is exactly once where it
/// belongs (none twice, none lost, the removed ones gone), GUIDs are unique,
/// force-resync changes nothing and the mount equals doveadm. A watchdog turns a
/// deadlocked mount into a failure.
fn storm(test: &str, layout: Layout) {
    const CP_THREADS: usize = 2;
    const CP_EACH: usize = 12;
    const IMAP_OPS: usize = 24;
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Other");
    let mut expected = Expected::new();
    let seed_in: Vec<(String, u32)> = (0..16)
        .map(|i| {
            let m = format!("seed-in-{i}");
            let uid = bob.save("INBOX", &marked(&m, i));
            (m, uid)
        })
        .collect();
    let seed_ot: Vec<(String, u32)> = (0..10)
        .map(|i| {
            let m = format!("seed-ot-{i}");
            let uid = bob.save("Other", &marked(&m, 100 + i));
            (m, uid)
        })
        .collect();
    let scratch = dir.mkdir("scratch");
    let mount = mount_rw(&dir, &dovecot, &bob, &[]);
    // The mount has seen everything before the storm.
    for mb in ["INBOX", "Other"] {
        for name in names(&mount.mailbox(mb)) {
            fs::metadata(mount.mailbox(mb).join(name)).expect("stat before");
        }
    }

    let watchdog = Watchdog::arm(&mount, std::time::Duration::from_secs(90));
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..CP_THREADS {
            let (mount, bob, scratch) = (&mount, &bob, &scratch);
            handles.push(s.spawn(move || {
                let mut tally = Tally::default();
                for i in 0..CP_EACH {
                    let marker = format!("cp-{t}-{i}");
                    let mailbox = if i % 2 == 0 { "INBOX" } else { "Other" };
                    let bytes = marked(&marker, 200 + t * 100 + i);
                    let dest = mount.mailbox(mailbox).join(format!("{marker}.eml"));
                    let copied = if i % 3 == 0 {
                        let src = scratch.join(format!("{marker}.eml"));
                        fs::write(&src, &bytes).expect("writing the source");
                        let out = run("cp", &[src.as_os_str(), dest.as_os_str()]);
                        let ok = out.status.success();
                        if !ok {
                            tally
                                .problems
                                .push(format!("cp {marker} into {mailbox}: {}", show(&out.stderr)));
                        }
                        ok
                    } else {
                        tally.check(
                            || format!("writing {marker} into {mailbox}"),
                            create_write_close(&dest, &bytes),
                        )
                    };
                    if !copied {
                        continue; // (where it went is unknown: the final check says)
                    }
                    if i % 4 == 1 {
                        match uid_of_marker(bob, mailbox, &marker) {
                            Ok(uid) => {
                                // By an rm process, as a shell would: a thread cannot
                                // expunge by its UID name a message it saved into that
                                // mailbox within the minute (EBUSY, see `tar -x` in
                                // docs/semantics.md).
                                let path = mount.message(mailbox, uid);
                                let out = run("rm", &[path.as_os_str()]);
                                let removed = if out.status.success() {
                                    Ok(())
                                } else {
                                    Err(io::Error::other(show(&out.stderr)))
                                };
                                if tally.check(|| format!("rm {marker} ({mailbox}/{uid})"), removed)
                                {
                                    tally.expected.insert(marker, None);
                                }
                            }
                            Err(e) => tally.problems.push(e),
                        }
                    } else {
                        tally.expected.insert(marker, Some(mailbox));
                    }
                }
                tally
            }));
        }
        // rm of the odd seeded INBOX messages.
        let (m, seeds) = (&mount, &seed_in);
        handles.push(s.spawn(move || {
            let mut tally = Tally::default();
            for (i, (marker, uid)) in seeds.iter().enumerate() {
                if i % 2 == 1
                    && tally.check(
                        || format!("rm {marker} (INBOX/{uid})"),
                        fs::remove_file(m.message("INBOX", *uid)),
                    )
                {
                    tally.expected.insert(marker.clone(), None);
                }
            }
            tally
        }));
        // setfattr on the even seeded INBOX messages (IMAP changes their flags too).
        handles.push(s.spawn(move || {
            let mut tally = Tally::default();
            for round in 0..2 {
                for (i, (marker, uid)) in seeds.iter().enumerate() {
                    if i % 2 == 0 {
                        let (attr, value) = if round == 0 {
                            ("user.mail.flags.add", "\\Flagged $Storm")
                        } else {
                            ("user.mail.flags.remove", "\\Flagged")
                        };
                        tally.check(
                            || format!("setfattr {attr} on {marker} (INBOX/{uid})"),
                            setxattr(&m.message("INBOX", *uid), attr, value.as_bytes()),
                        );
                    }
                }
            }
            tally
        }));
        // mv of the even seeded Other messages to INBOX.
        let others = &seed_ot;
        handles.push(s.spawn(move || {
            let mut tally = Tally::default();
            for (i, (marker, uid)) in others.iter().enumerate() {
                if i % 2 == 0
                    && tally.check(
                        || format!("mv {marker} (Other/{uid}) to INBOX"),
                        fs::rename(m.message("Other", *uid), m.mailbox("INBOX").join(eml(*uid))),
                    )
                {
                    tally.expected.insert(marker.clone(), Some("INBOX"));
                }
            }
            tally
        }));
        // Dovecot's own IMAP session: APPEND to both, STORE, EXPUNGE its own.
        let dovecot = &dovecot;
        handles.push(s.spawn(move || {
            let mut tally = Tally::default();
            let mut imap = Imap::start(dovecot, "bob");
            imap.run("SELECT INBOX", None);
            let mut mine: Vec<(String, u32)> = Vec::new();
            for i in 0..IMAP_OPS {
                let marker = format!("imap-{i}");
                let msg: Vec<u8> = marked(&marker, 500 + i)
                    .split(|&b| b == b'\n')
                    .collect::<Vec<_>>()
                    .join(&b"\r\n"[..]);
                if i % 4 == 3 {
                    imap.append("Other", &msg);
                    tally.expected.insert(marker, Some("Other"));
                    continue;
                }
                let uid = imap.append("INBOX", &msg);
                tally.expected.insert(marker.clone(), Some("INBOX"));
                mine.push((marker, uid));
                let seed_uid = seeds[(i * 2) % seeds.len()].1;
                imap.run(
                    &format!("UID STORE {seed_uid} +FLAGS.SILENT (\\Answered $Imap)"),
                    None,
                );
                if i % 3 == 2 {
                    let (gone, uid) = mine.remove(0);
                    imap.run(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"), None);
                    imap.run(&format!("UID EXPUNGE {uid}"), None);
                    tally.expected.insert(gone, None);
                }
            }
            tally
        }));
        handles
            .into_iter()
            .map(|h| h.join().expect("a storm thread panicked"))
            .collect()
    });
    let fired = watchdog.disarm();
    let mut problems = Vec::new();
    for t in tallies {
        expected.extend(t.expected);
        problems.extend(t.problems);
    }
    assert!(
        !fired,
        "deadlock: the storm did not finish within 90 s (the FUSE connection was aborted); \
         write errors: {problems:#?}"
    );
    for (marker, _) in &seed_in {
        expected.entry(marker.clone()).or_insert(Some("INBOX"));
    }
    for (marker, _) in &seed_ot {
        expected.entry(marker.clone()).or_insert(Some("Other"));
    }

    // Every marked message exactly once where it belongs; the removed ones nowhere.
    let mut found: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let mut guids = BTreeMap::new();
    for mailbox in ["INBOX", "Other"] {
        for m in bob.fetch(mailbox) {
            found.entry(marker_of(&m.text)).or_default().push(mailbox);
            if let Some(other) = guids.insert(m.guid.clone(), (mailbox, m.uid)) {
                problems.push(format!(
                    "GUID {} twice: {other:?} and {mailbox}/{}",
                    m.guid, m.uid
                ));
            }
        }
    }
    for (marker, place) in &expected {
        let got = found.remove(marker).unwrap_or_default();
        let want: Vec<&str> = place.iter().copied().collect();
        if got != want {
            problems.push(format!("{marker}: expected in {want:?}, found in {got:?}"));
        }
    }
    for (marker, got) in &found {
        problems.push(format!("{marker}: not expected, found in {got:?}"));
    }
    assert!(
        problems.is_empty(),
        "the storm:\n  {}",
        problems.join("\n  ")
    );
    let kept = expected.values().filter(|p| p.is_some()).count();
    assert!(
        kept > 40 && expected.len() > 60,
        "{kept} of {}",
        expected.len()
    );
    assert_force_resync_changes_nothing(&bob);
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}

#[test]
fn storm_against_imap_maildirpp() {
    require!(Dovecot, Fuse);
    storm("wm_storm_pp", Layout::MaildirPlusPlus);
}

#[test]
fn storm_against_imap_mdbox() {
    require!(Dovecot, Fuse);
    storm("wm_storm_mdbox", Layout::Mdbox);
}

// ---------------------------------------------------------------------------------------
// A watchdog for tests that can deadlock the mount

/// The FUSE control directory of the mount at `mountpoint`
/// (`/sys/fs/fuse/connections/<minor>`), mounting fusectl if needed (root).
fn fuse_connection(mountpoint: &Path) -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let minor = info.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4).map(Path::new) == Some(mountpoint))
            .then(|| fields[2].split(':').nth(1).map(str::to_string))
            .flatten()
    })?;
    let control = Path::new("/sys/fs/fuse/connections");
    if !control.join(&minor).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(control)
            .stderr(Stdio::null())
            .status();
    }
    Some(control.join(minor)).filter(|p| p.join("abort").exists())
}

/// Aborts the FUSE connection of a mount (every request then fails with ENOTCONN, and
/// whatever waits in the kernel for mailfs is let go) unless disarmed within its limit:
/// a deadlock becomes a test failure instead of a hang, with processes stuck in D state.
struct Watchdog {
    disarmed: Arc<(Mutex<bool>, std::sync::Condvar)>,
    fired: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn arm(mount: &Mount, limit: std::time::Duration) -> Watchdog {
        let connection = fuse_connection(mount.path());
        let disarmed: Arc<(Mutex<bool>, std::sync::Condvar)> = Arc::default();
        let fired = Arc::new(AtomicBool::new(false));
        let thread = {
            let (disarmed, fired) = (disarmed.clone(), fired.clone());
            std::thread::spawn(move || {
                let (lock, cv) = &*disarmed;
                let guard = lock.lock().unwrap();
                let (guard, timeout) = cv
                    .wait_timeout_while(guard, limit, |disarmed| !*disarmed)
                    .unwrap();
                if timeout.timed_out() && !*guard {
                    fired.store(true, Ordering::SeqCst);
                    match &connection {
                        Some(c) => {
                            eprintln!(
                                "watchdog: nothing finished within {limit:?}: aborting the FUSE \
                                 connection {}",
                                c.display()
                            );
                            let _ = fs::write(c.join("abort"), "1");
                        }
                        None => eprintln!(
                            "watchdog: nothing finished within {limit:?}, and no FUSE control \
                             directory to abort the connection with"
                        ),
                    }
                }
            })
        };
        Watchdog {
            disarmed,
            fired,
            thread: Some(thread),
        }
    }

    /// Stops the watchdog; true if it had fired (the mount is then dead).
    fn disarm(mut self) -> bool {
        self.stop();
        self.fired.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        let (lock, cv) = &*self.disarmed;
        *lock.lock().unwrap() = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// A file being copied in is saved once, when its writer closes it: not when a child
// process (fork + exec) closes its inherited descriptor

/// A process writing a new message runs a program (fork + exec) before it has written
/// the rest: the child's exec closes the descriptor it inherited (close-on-exec, as every
/// Rust and Python file is), which the kernel sends to mailfs as a FLUSH from the child.
/// Expected: the program runs at once, and exactly one message, with all the bytes, is
/// saved when the writer closes the file. (A watchdog turns a hang into a failure.)
#[test]
fn a_child_exec_while_a_copy_is_open_neither_hangs_nor_saves_early() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_exec_flush");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let before = bob.save("INBOX", &email(1, "Already here", "x"));
    let mount = mount_rw(&dir, &dovecot, &bob, &[]);
    let message = email(2, "Written in two parts", "first part\nsecond part\n");
    let (first, second) = message.split_at(message.len() / 2);
    let path = mount.mailbox("INBOX").join("two-parts.eml");

    let watchdog = Watchdog::arm(&mount, std::time::Duration::from_secs(10));
    let outcome = (|| -> io::Result<std::time::Duration> {
        let mut f = fs::File::create(&path)?;
        f.write_all(first)?;
        let started = std::time::Instant::now();
        let status = Command::new("true").status()?;
        let took = started.elapsed();
        assert!(status.success());
        f.write_all(second)?;
        let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
        // SAFETY: `fd` is ours (taken from the File), closed exactly once here.
        if unsafe { libc::close(fd) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(took)
    })();
    let fired = watchdog.disarm();
    assert!(
        !fired,
        "deadlock: running a program while a new message was open for writing hung the \
         mount for 10 s (the FUSE connection was aborted); outcome {outcome:?}"
    );
    let took = outcome.expect("writing the message in two parts around a fork + exec");
    assert!(took.as_secs() < 5, "the exec took {took:?}");
    let uids = bob.uids("INBOX");
    let saved: Vec<Vec<u8>> = uids
        .iter()
        .filter(|u| **u != before)
        .map(|u| bob.text("INBOX", *u))
        .collect();
    assert_eq!(
        saved,
        vec![message.clone()],
        "expected exactly the whole message saved once; got {:?}",
        saved.iter().map(|t| show(t)).collect::<Vec<_>>()
    );
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}

/// The shell's way to create a file: `cmd > MP/box/new.eml` opens the file on a spare
/// descriptor, dup2()s it to 1 and closes the spare one (a FLUSH of the new file) before
/// `cmd` writes anything; `( a; b ) > file` runs commands that each inherit it and exit
/// (each exit a FLUSH). Expected: each writes exactly one message with all the bytes,
/// and the shell reports success.
#[test]
fn shell_redirections_save_the_whole_message_once() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("wm_shell");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Ref");
    let before = bob.save("INBOX", &email(1, "Already here", "x"));
    let body = dir.join("body.txt");
    fs::write(&body, "from a file\n").expect("writing the body");
    let mount = mount_rw(&dir, &dovecot, &bob, &[]);
    let inbox = mount.mailbox("INBOX");
    let scripts: [(&str, String, &[u8]); 2] = [
        (
            "echo > file",
            format!(
                "printf 'Subject: redirected\\n\\nhello\\n' > '{}'",
                inbox.join("echo.eml").display()
            ),
            b"Subject: redirected\n\nhello\n",
        ),
        (
            "( printf; cat ) > file",
            format!(
                "( printf 'Subject: grouped\\n\\n'; cat '{}' ) > '{}'",
                body.display(),
                inbox.join("grouped.eml").display()
            ),
            b"Subject: grouped\n\nfrom a file\n",
        ),
    ];
    let mut problems = Vec::new();
    for (what, script, expected) in &scripts {
        let next = bob.status("INBOX").uidnext;
        let out = run("sh", &["-c".as_ref(), script.as_ref()]);
        if !out.status.success() {
            problems.push(format!(
                "{what}: exit {}: {}",
                out.status,
                show(&out.stderr)
            ));
        }
        let new: Vec<(u32, Vec<u8>)> = bob
            .uids("INBOX")
            .into_iter()
            .filter(|u| *u >= next)
            .map(|u| (u, bob.text("INBOX", u)))
            .collect();
        let want = stored_form(&bob, "Ref", expected);
        if new.len() != 1 || new[0].1 != want {
            problems.push(format!(
                "{what}: expected one message {:?}, saved {:?}",
                show(&want),
                new.iter()
                    .map(|(u, t)| format!("uid {u}: {:?}", show(t)))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(bob.uids("INBOX").contains(&before));
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}
