//! Mounted mbox stores compared with Dovecot: INBOX in its own file, nested folders, flags
//! and keywords, expunges in the middle (Dovecot rewrites the file), bodies with `From `
//! lines, no final newline, CRLF input; delivery while mounted; bare path detection;
//! hostile files (truncated, not mbox, an index that disagrees with the file).

use std::fs;
use std::time::Duration;

use crate::util::compare::{assert_message_matches, assert_mount_matches_dovecot};
use crate::util::corpus::{email, large, no_final_newline};
use crate::util::dovecot::{Dovecot, User};
use crate::util::fingerprint::Fingerprint;
use crate::util::fsx::{errno, setxattr, xattr_string};
use crate::util::mount::{Mount, mailfs};
use crate::util::{TestDir, wait_for};

/// A Dovecot whose user `bob` has `mbox:~/mail:INBOX=~/inbox`.
fn start(dir: &TestDir) -> Dovecot {
    start_with(dir, "")
}

/// [`start`] with more location keys (`~` is bob's home).
fn start_with(dir: &TestDir, keys: &str) -> Dovecot {
    let home = dir.path().join("dovecot/home/bob");
    let h = home.display().to_string();
    let keys = keys.replace('~', &h);
    Dovecot::start_users(
        dir,
        &[(
            "bob".to_string(),
            format!("mbox:{h}/mail:INBOX={h}/inbox{keys}"),
        )],
    )
}

#[test]
fn index_elsewhere_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mbox_index");
    let dovecot = start_with(&dir, ":INDEX=~/idx");
    let bob = dovecot.user("bob");
    bob.create_mailbox("A/B");
    let one = bob.save("INBOX", &email(1, "One", "one"));
    bob.save("A/B", &email(2, "Two", "two"));
    bob.flags_add("INBOX", one, "\\Seen kw");
    let idx = bob.home().join("idx");
    assert!(idx.join(".imap/INBOX").is_dir() && idx.join("A/.imap/B").is_dir());
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    assert_mount_matches_dovecot(&mount, &bob);
    drop(mount);
}

/// INBOX and two folders (one nested), every flag, keywords, expunges in the middle, a
/// body with From_ lines (valid and not), no final newline, CRLF input, a large message.
fn populate(bob: &User<'_>) -> Vec<u32> {
    bob.create_mailbox("Work/Sub");
    bob.create_mailbox("Other");
    let mut kept = Vec::new();
    let a = bob.save(
        "INBOX",
        &email(1, "Plain", "Hello.\nFrom here on\n>From quoted"),
    );
    let b = bob.save(
        "INBOX",
        &email(
            2,
            "Valid From_ in body",
            "before\n\nFrom someone Mon Dec  7 09:07:49 2026\nafter",
        ),
    );
    let gone1 = bob.save("INBOX", &email(3, "Doomed", "gone soon"));
    let c = bob.save("INBOX", &no_final_newline());
    let d = bob.save_crlf(
        "INBOX",
        &email(5, "CRLF", "line one\r\nline two").replace_lf(),
    );
    let gone2 = bob.save("INBOX", &email(6, "Doomed too", "gone"));
    let e = bob.save("INBOX", &large(70));
    bob.flags_add("INBOX", a, "\\Seen $Label1 work");
    bob.flags_add("INBOX", b, "\\Answered \\Flagged");
    bob.flags_add("INBOX", c, "\\Deleted \\Draft later");
    bob.flags_add("INBOX", e, "\\Seen");
    bob.expunge("INBOX", gone1);
    bob.expunge("INBOX", gone2);
    kept.extend([a, b, c, d, e]);
    let w = bob.save("Work/Sub", &email(10, "Quarterly", "Numbers."));
    bob.save("Work/Sub", &email(11, "Re: Quarterly", "> Numbers"));
    bob.flags_add("Work/Sub", w, "\\Seen project-x");
    bob.save("Other", &email(12, "Other", "other"));
    // A name stored in modified UTF-7 (`&ANw-` ...), shown decoded.
    bob.create_mailbox("Grüße");
    bob.save("Grüße", &email(13, "Grüße aus Köln", "Schöne Grüße! ✉"));
    kept
}

trait ReplaceLf {
    fn replace_lf(self) -> Vec<u8>;
}

impl ReplaceLf for Vec<u8> {
    fn replace_lf(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() + 64);
        for b in self {
            if b == b'\n' && out.last() != Some(&b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }
}

#[test]
fn mbox_store_matches_dovecot_and_shows_deliveries() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mbox_store");
    let dovecot = start(&dir);
    let bob = dovecot.user("bob");
    let kept = populate(&bob);
    // The rewrite after the expunges left the file with Dovecot's headers in it.
    let inbox = fs::read(bob.home().join("inbox")).expect("reading inbox");
    assert!(
        inbox.windows(6).any(|w| w == b"X-UID:"),
        "Dovecot wrote no X-UID headers; the test proves nothing about hiding them"
    );
    // The CRLF message kept its CRs: its header lines are shown with LF (Dovecot's header
    // filter drops the CRs), its body as stored.
    assert!(
        inbox.windows(2).any(|w| w == b"\r\n"),
        "no CRLF in the mbox file; the test proves nothing about CRs"
    );
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert_eq!(compared.mailboxes, 4, "INBOX, Work/Sub, Other, Grüße");
    let listed: Vec<u32> = bob.fetch("INBOX").iter().map(|m| m.uid).collect();
    assert_eq!(listed, kept);

    // Delivery while mounted: shown (the watcher, or the stamp on the next lookup).
    let n = bob.save("INBOX", &email(20, "Late", "arrived while mounted"));
    let path = mount.message("INBOX", n);
    wait_for(Duration::from_secs(10), "the delivered message", || {
        path.exists().then_some(())
    });
    // That view was continued from the last one (only the appended bytes read): what it
    // shows, taken before doveadm's fetch touches the cache, equals doveadm's.
    let shown = fs::read(&path).expect("reading the delivered message");
    let shown_size = fs::metadata(&path).expect("stat").len();
    let shown_guid = xattr_string(&path, "user.mail.guid");
    let shown_vsize = xattr_string(&path, "user.mail.vsize");
    let status = xattr_string(mount.path(), "user.mailfs.status");
    let continued: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("view_continuations: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no view_continuations in the status:\n{status}"));
    assert!(
        continued >= 1,
        "the view after an append was read in full\n{status}"
    );
    let late = bob
        .fetch("INBOX")
        .into_iter()
        .find(|m| m.uid == n)
        .expect("doveadm has it");
    assert_eq!(shown, late.text, "the delivered message's bytes");
    assert_eq!(shown_size, late.size);
    assert_eq!(shown_guid, late.guid);
    assert_eq!(shown_vsize, late.vsize.to_string());
    // A flag change rewrites in place; an expunge in the middle rewrites the file.
    bob.flags_add("INBOX", kept[1], "\\Seen newkw");
    bob.expunge("INBOX", kept[2]);
    wait_for(Duration::from_secs(10), "the expunge to show", || {
        (!mount.message("INBOX", kept[2]).exists()).then_some(())
    });
    for m in bob.fetch("INBOX") {
        assert_message_matches(&mount.message("INBOX", m.uid), &m);
    }
    let log = mount.stop();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn bare_mbox_paths_are_detected() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mbox_bare");
    let dovecot = start(&dir);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "One", "one"));
    bob.create_mailbox("Folder");
    bob.save("Folder", &email(2, "Two", "two"));
    // The mail directory (has .imap/ and an mbox file), and the INBOX file alone.
    let root = bob.home().join("mail");
    let out = mailfs(["ls".as_ref(), root.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Folder"));
    // A lone mbox file is named as such, with the location that mounts it.
    let file = bob.home().join("inbox");
    let out = mailfs(["ls".as_ref(), file.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is an mbox file"),
        "{err}"
    );
    assert!(err.contains(&format!("INBOX={}", file.display())), "{err}");
    // Not mbox: a directory of plain files is not taken for one.
    let plain = dir.mkdir("plain");
    fs::write(plain.join("notes"), b"hello\n").expect("write");
    let out = mailfs(["ls".as_ref(), plain.as_os_str()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot tell"));
    let f = bob.fetch("Folder");
    // Mounting and reading everything changes nothing in the store (no file written,
    // created, locked into existence or touched).
    let before = Fingerprint::of(&bob.home());
    let mount = Mount::start(root.to_str().expect("utf-8"), &dir.join("mnt"), &[]);
    assert_message_matches(&mount.message("Folder", f[0].uid), &f[0]);
    let log = mount.stop();
    before.assert_same(
        &Fingerprint::of(&bob.home()),
        &format!("after the mount\n{log}"),
    );
}

#[test]
fn hostile_mbox_files_fail_clearly() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mbox_hostile");
    let dovecot = start(&dir);
    let bob = dovecot.user("bob");
    let a = bob.save("INBOX", &email(1, "One", "one"));
    let b = bob.save("INBOX", &email(2, "Two", "two two two"));
    bob.create_mailbox("Junk");
    bob.save("Junk", &email(3, "Three", "three"));
    let before = bob.fetch("INBOX");
    let root = bob.home().join("mail");
    // A file that is not mbox: that mailbox fails with EIO, the others work.
    fs::write(root.join("Junk"), b"this is not an mbox\n").expect("writing Junk");
    // Truncate INBOX inside the second message: the index disagrees with the file.
    let inbox = bob.home().join("inbox");
    let data = fs::read(&inbox).expect("read inbox");
    fs::write(&inbox, &data[..data.len() - 8]).expect("truncating inbox");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let junk = mount.mailbox("Junk");
    assert_eq!(errno(&fs::read_dir(&junk).map(|_| ())), Some(libc::EIO));
    // The first message is intact. The file changed after Dovecot's last sync, so the
    // headers rule (X-UID) as Dovecot's next sync would: the truncated message is what is
    // left of it (EIO or a prefix), never doveadm's length with other bytes.
    let first = fs::read(mount.message("INBOX", a)).expect("reading uid 1");
    assert_eq!(first, before[0].text);
    match fs::read(mount.message("INBOX", b)) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
        Ok(bytes) => assert!(
            bytes.len() < before[1].text.len() && before[1].text.starts_with(&bytes),
            "a truncated message read as {} bytes",
            bytes.len()
        ),
    }
    let log = mount.stop();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("not an mbox file"), "{log}");
}

#[test]
fn an_index_that_disagrees_with_the_file_is_eio_never_wrong_bytes() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mbox_disagree");
    let dovecot = start(&dir);
    let bob = dovecot.user("bob");
    let a = bob.save("INBOX", &email(1, "One", "one"));
    let b = bob.save("INBOX", &email(2, "Two", "two"));
    let c = bob.save("INBOX", &email(3, "Three", "three"));
    let before = bob.fetch("INBOX");
    // Spoil the second From_ line in place, same size and mtime: the index still looks
    // current, but message 1 now runs on into message 2.
    let inbox = bob.home().join("inbox");
    let mtime = fs::metadata(&inbox)
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut data = fs::read(&inbox).expect("read inbox");
    let second = data
        .windows(6)
        .enumerate()
        .filter(|(_, w)| *w == b"\nFrom ")
        .map(|(i, _)| i + 1)
        .next()
        .expect("a second From_ line");
    data[second] = b'X';
    fs::write(&inbox, &data).expect("write inbox");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&inbox)
        .expect("open");
    f.set_modified(mtime).expect("restoring the mtime");
    drop(f);
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    for uid in [a, b] {
        let r = fs::read(mount.message("INBOX", uid));
        assert_eq!(
            errno(&r),
            Some(libc::EIO),
            "uid {uid}: {:?}",
            r.map(|b| b.len())
        );
    }
    assert_eq!(
        fs::read(mount.message("INBOX", c)).expect("uid 3"),
        before[2].text
    );
    let log = mount.stop();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("index disagrees with the file"), "{log}");
}

#[test]
fn an_mda_append_is_pending_until_dovecot_syncs_and_old_messages_keep_uids_and_flags() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mbox_mda");
    let dovecot = start(&dir);
    let bob = dovecot.user("bob");
    let a = bob.save("INBOX", &email(1, "One", "one"));
    let gone = bob.save("INBOX", &email(2, "Two", "two"));
    let c = bob.save("INBOX", &email(3, "Three", "three"));
    bob.flags_add("INBOX", a, "\\Seen \\Flagged kw1");
    bob.flags_add("INBOX", c, "\\Answered \\Draft kw2");
    bob.expunge("INBOX", gone);
    let before = bob.fetch("INBOX");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    for m in &before {
        assert_message_matches(&mount.message("INBOX", m.uid), m);
    }
    // An MDA appends (no X-UID): the index no longer matches the file, so the headers
    // rule as Dovecot's next sync reads them.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(bob.home().join("inbox"))
        .expect("open inbox");
    std::io::Write::write_all(
        &mut f,
        b"From mda@example.org Mon Dec  7 10:00:00 2026\nSubject: via MDA\n\
          Message-ID: <mda@example.org>\n\nbody\n\n",
    )
    .expect("append");
    drop(f);
    let inbox = mount.mailbox("INBOX");
    let pending = wait_for(Duration::from_secs(10), "the appended message", || {
        fs::read_dir(&inbox)
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("pending-"))
    });
    assert_eq!(
        fs::read(inbox.join(&pending)).expect("reading the pending message"),
        b"Subject: via MDA\nMessage-ID: <mda@example.org>\n\nbody\n"
    );
    for m in &before {
        let path = mount.message("INBOX", m.uid);
        assert_eq!(
            fs::read(&path).expect("old message"),
            m.text,
            "uid {}",
            m.uid
        );
        assert_eq!(
            xattr_string(&path, "user.mail.flags"),
            m.flags,
            "uid {}",
            m.uid
        );
        assert_eq!(
            xattr_string(&path, "user.mail.guid"),
            m.guid,
            "uid {}",
            m.uid
        );
    }
    // Dovecot syncs: the message gets its UID, everything matches doveadm again.
    let after = bob.fetch("INBOX");
    assert_eq!(after.len(), before.len() + 1);
    let new = after.last().expect("the new message");
    wait_for(Duration::from_secs(10), "the new UID", || {
        mount.message("INBOX", new.uid).exists().then_some(())
    });
    for m in &after {
        assert_message_matches(&mount.message("INBOX", m.uid), m);
    }
    let log = mount.stop();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn x_uid_headers_count_as_dovecot_counts_them() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mbox_xuid");
    let dovecot = start(&dir);
    let bob = dovecot.user("bob");
    // An mbox Dovecot never saw: X-UIDs 1 (first message, no X-IMAPbase: ignored), 2
    // (the next one: kept), 7 (beyond the next: ignored).
    let mut data = Vec::new();
    for (i, uid) in [1, 2, 7].iter().enumerate() {
        data.extend_from_slice(
            format!(
                "From s@example.org Mon Dec  7 09:0{i}:00 2026\nSubject: m{i}\n\
                 Message-ID: <{i}@example.org>\nX-UID: {uid}\nX-Status: F\n\nbody {i}\n\n"
            )
            .as_bytes(),
        );
    }
    let mail = bob.home().join("mail");
    fs::create_dir_all(mail.join(".imap")).expect("mkdir");
    fs::write(bob.home().join("inbox"), &data).expect("write inbox");
    let (uid, gid) = dovecot.mail_owner();
    crate::util::chown_recursive(&bob.home(), uid, gid);
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let mut names: Vec<String> = fs::read_dir(mount.mailbox("INBOX"))
        .expect("listing INBOX")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[0], "2.eml", "{names:?}");
    assert!(
        names[1..].iter().all(|n| n.starts_with("pending-")),
        "{names:?}"
    );
    let shown = fs::read(mount.message("INBOX", 2)).expect("reading 2.eml");
    // Dovecot's sync: the ignored ones get 1 and 3, the kept X-UID stays 2.
    let messages = bob.fetch("INBOX");
    let uids: Vec<u32> = messages.iter().map(|m| m.uid).collect();
    assert_eq!(uids, [1, 2, 3]);
    assert_eq!(shown, messages[1].text);
    wait_for(Duration::from_secs(10), "the UIDs Dovecot gave", || {
        mount.message("INBOX", 3).exists().then_some(())
    });
    for m in &messages {
        assert_message_matches(&mount.message("INBOX", m.uid), m);
    }
    drop(mount);
}

#[test]
fn rm_and_setfattr_with_rw_go_through_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mbox_rw");
    let dovecot = start(&dir);
    let bob = dovecot.user("bob");
    let a = bob.save("INBOX", &email(1, "One", "one"));
    let b = bob.save("INBOX", &email(2, "Two", "two"));
    let c = bob.save("INBOX", &email(3, "Three", "three"));
    let socket = dovecot.doveadm_socket();
    let socket = socket.to_str().expect("UTF-8");
    let mount = Mount::start(
        &bob.location(),
        &dir.join("mnt"),
        &["--rw", "--user", "bob", "--doveadm", socket],
    );
    fs::remove_file(mount.message("INBOX", b)).expect("rm through the mount");
    setxattr(
        &mount.message("INBOX", c),
        "user.mail.flags.add",
        b"\\Flagged $Label1",
    )
    .expect("setting flags through the mount");
    let after = bob.fetch("INBOX");
    let uids: Vec<u32> = after.iter().map(|m| m.uid).collect();
    assert_eq!(uids, [a, c], "doveadm after rm");
    assert_eq!(after[1].flags, "\\Flagged $Label1");
    // Dovecot rewrote the file; the mount shows the rest, byte for byte.
    wait_for(Duration::from_secs(10), "the expunge to show", || {
        (!mount.message("INBOX", b).exists()).then_some(())
    });
    assert_mount_matches_dovecot(&mount, &bob);
    let log = mount.stop();
    assert!(!log.contains("panicked"), "{log}");
}
