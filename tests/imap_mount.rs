//! IMAP mounts (`mailfs mount imap://USER@HOST:PORT MP`) against the private Dovecot's own
//! IMAP service on loopback: the tree, bytes, sizes, dates, flags and GUIDs equal what
//! doveadm reports (the bytes as IMAP sends them: every bare LF as CRLF), reading never
//! sets `\Seen`, and changes made by others reach a mount with 60 s kernel caches within
//! a second (INBOX by IDLE) or a poll interval (other mailboxes), with a negative control.

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::compare::assert_message_matches;
use crate::util::corpus::{crlf, crlf_form, email, large, no_final_newline};
use crate::util::dovecot::{Config, DboxLayout, Dovecot, Layout, Message, User};
use crate::util::fsx::xattr_string;
use crate::util::mount::{Mount, mount_must_fail};
use crate::util::pki::Pki;
use crate::util::{TestDir, free_port};

const PASSWORD: &str = "imap-test-secret";

/// A private Dovecot serving IMAP on a loopback port; every user's password is
/// [`PASSWORD`].
fn start_imap(dir: &TestDir, layout: Layout) -> (Dovecot, u16) {
    start_imap_with(dir, layout, &[], &[], &format!("password={PASSWORD}"))
}

/// [`start_imap`] with more settings and sections, and the static passdb's args.
fn start_imap_with(
    dir: &TestDir,
    layout: Layout,
    settings: &[&str],
    sections: &[&str],
    passdb: &str,
) -> (Dovecot, u16) {
    let port = free_port();
    // With a certificate in the settings the port is an imaps listener (TLS from the
    // first byte), else plain imap.
    let tls = settings.iter().any(|s| s.starts_with("ssl_cert"));
    let (imap, imaps) = if tls { (0, port) } else { (port, 0) };
    let listener = crate::util::imap::listener_section("127.0.0.1", imap, imaps);
    let mut all_sections = vec![listener.as_str()];
    all_sections.extend_from_slice(sections);
    let mut all_settings = vec!["protocols = imap", "disable_plaintext_auth = no"];
    all_settings.extend_from_slice(settings);
    let dovecot = Dovecot::start_with_config(
        dir,
        layout,
        Config {
            settings: &all_settings,
            passdb_args: Some(passdb),
            sections: &all_sections,
        },
    );
    crate::util::imap::wait_until_listening(port, tls);
    (dovecot, port)
}

fn mount_imap(dir: &TestDir, user: &str, port: u16, extra: &[&str]) -> Mount {
    mount_imap_as(dir, user, PASSWORD, port, extra)
}

fn mount_imap_as(dir: &TestDir, user: &str, password: &str, port: u16, extra: &[&str]) -> Mount {
    let secret = dir.join("imap-password");
    fs::write(&secret, format!("{password}\n")).expect("writing the password file");
    let cache = dir.join("cache");
    let mut args = vec![
        "--password-file".to_string(),
        secret.display().to_string(),
        "--cache-dir".to_string(),
        cache.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Mount::start(
        &format!("imap://{user}@127.0.0.1:{port}"),
        &dir.join("mnt"),
        &args,
    )
}

/// doveadm's view of a message as an IMAP mount must show it: the bytes IMAP sends, whose
/// length is the virtual size (RFC822.SIZE); INTERNALDATE (the received date) for both
/// dates (IMAP has no save date).
fn as_imap_mount_shows(m: &Message) -> Message {
    let text = crlf_form(&m.text);
    assert_eq!(text.len() as u64, m.vsize, "vsize is the CRLF length");
    Message {
        text,
        size: m.vsize,
        saved: m.received,
        ..m.clone()
    }
}

/// The mount equals doveadm for every mailbox: directories, names, each message.
fn assert_imap_mount_matches(mount: &Mount, user: &User<'_>) -> usize {
    let mut dirs = BTreeSet::new();
    let mut compared = 0;
    for name in user.list() {
        let levels: Vec<&str> = name.split('/').collect();
        for n in 1..=levels.len() {
            dirs.insert(levels[..n].join("/"));
        }
        let dir = mount.mailbox(&name);
        let listed: BTreeSet<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        let messages = user.fetch(&name);
        let want: BTreeSet<String> = messages.iter().map(|m| format!("{}.eml", m.uid)).collect();
        assert_eq!(listed, want, "the messages of {name}");
        for m in &messages {
            assert_message_matches(&mount.message(&name, m.uid), &as_imap_mount_shows(m));
            compared += 1;
        }
    }
    let mut found = BTreeSet::new();
    walk_dirs(mount.path(), "", &mut found);
    assert_eq!(found, dirs, "the directories of the mount");
    compared
}

fn walk_dirs(root: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for e in fs::read_dir(root.join(prefix)).expect("listing a directory") {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            out.insert(rel.clone());
            walk_dirs(root, &rel, out);
        }
    }
}

fn populate(user: &User<'_>) {
    user.create_mailbox("Work");
    user.create_mailbox("Work/Sub");
    user.create_mailbox("Empty");
    let a = user.save("INBOX", &email(1, "Plain", "one\ntwo\n"));
    user.save("INBOX", &crlf());
    let c = user.save("INBOX", &no_final_newline());
    user.save("INBOX", &large(3 * 1024));
    // $Label1 is the mailbox's first keyword, but the first message shows only $Label2:
    // flags are listed in the mailbox's keyword order, not in order of appearance.
    user.flags_add("INBOX", c, "\\Answered $Label1");
    user.flags_add("INBOX", a, "\\Flagged $Label2");
    user.flags_add("INBOX", c, "$Label2");
    let w = user.save("Work", &email(2, "Work item", "body\n"));
    user.flags_add("Work", w, "\\Seen");
    user.save("Work/Sub", &email(3, "Deep", "deeper\n"));
}

fn equals_doveadm(test: &str, layout: Layout) {
    let dir = TestDir::new(test);
    let (dovecot, port) = start_imap(&dir, layout);
    let bob = dovecot.user("bob");
    populate(&bob);
    let flags_before = bob.fetch_flags("INBOX");
    let mount = mount_imap(&dir, "bob", port, &[]);
    let compared = assert_imap_mount_matches(&mount, &bob);
    assert_eq!(compared, 6, "messages compared");
    // Reading used BODY.PEEK[] and EXAMINE: no \Seen, no other flag changed.
    assert_eq!(
        bob.fetch_flags("INBOX"),
        flags_before,
        "reading changed flags"
    );
    // A second mount reads from the cache; the bytes are the same.
    mount.stop();
    let mount = mount_imap(&dir, "bob", port, &[]);
    assert_imap_mount_matches(&mount, &bob);
    mount.stop();
}

#[test]
fn imap_mount_of_maildir_equals_doveadm() {
    require!(Dovecot, Fuse);
    equals_doveadm("imap_eq_maildir", Layout::MaildirPlusPlus);
}

#[test]
fn imap_mount_of_sdbox_equals_doveadm() {
    require!(Dovecot, Fuse);
    equals_doveadm("imap_eq_sdbox", DboxLayout::sdbox(""));
}

#[test]
fn imap_mount_of_mdbox_equals_doveadm() {
    require!(Dovecot, Fuse);
    equals_doveadm("imap_eq_mdbox", Layout::Mdbox);
}

#[test]
fn a_wrong_password_fails_the_mount_clearly() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_badpass");
    let (_dovecot, port) = start_imap(&dir, Layout::MaildirPlusPlus);
    let secret = dir.join("wrong");
    fs::write(&secret, "not-the-password\n").unwrap();
    let failure = mount_must_fail(
        &format!("imap://bob@127.0.0.1:{port}"),
        &dir.join("mnt"),
        &[
            "--password-file",
            secret.to_str().unwrap(),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
        ],
    );
    assert!(
        failure.stderr.contains("authentication failed")
            && failure.stderr.contains("bob@127.0.0.1"),
        "{}",
        failure.stderr
    );
    assert!(
        !failure.stderr.contains("not-the-password"),
        "the password leaked"
    );
}

/// Waits until `probe` is true; the time it took, or None after `limit`.
fn within(limit: Duration, mut probe: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if probe() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// How the mount under test hears of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    /// An IMAP mount with its own feed (NOTIFY, or IDLE and STATUS).
    Imap,
    /// An IMAP mount with `--watch off`: the negative control.
    ImapOff,
    /// A mount of the local store with `--watch imap://...`: reads from disk, changes
    /// heard only from Dovecot's IMAP session (no inotify, no polling).
    LocalFedByImap,
    /// A mount of the local store with `--watch off`: its negative control.
    LocalOff,
}

/// The capabilities Dovecot announces after a login as "bob" (NOTIFY only then).
fn imap_capabilities(port: u16) -> String {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).expect("the greeting");
    (&stream)
        .write_all(format!("a LOGIN bob {PASSWORD}\r\n").as_bytes())
        .unwrap();
    let mut all = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).expect("LOGIN's answer") > 0);
        all.push_str(&line);
        if line.starts_with("a ") {
            assert!(line.starts_with("a OK"), "LOGIN failed: {all}");
            let _ = (&stream).write_all(b"b LOGOUT\r\n");
            return all;
        }
    }
}

/// How the server tells of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telling {
    /// Dovecot as configured by default: NOTIFY (RFC 5465) pushes every mailbox's
    /// changes. The mount polls nothing: `--poll-interval 60`.
    Notify,
    /// Dovecot with `mailbox_list_index = no`, which takes NOTIFY away: IDLE on INBOX,
    /// the other mailboxes and the list polled every `poll` seconds.
    IdleOnly { poll: u32 },
}

/// Changes made by another client (doveadm) under 60 s kernel caches: a delivery, a flag
/// change and an expunge in INBOX, a delivery into another viewed mailbox and a new
/// mailbox. With NOTIFY every change is due within 1 s; with IDLE only, INBOX's within
/// 1 s and the others' within the poll interval plus 1.5 s. With `--watch off` (the
/// negative control) the kernel keeps serving what it cached.
fn changes(heard: Heard, telling: Telling) -> Vec<String> {
    let polled = match telling {
        Telling::Notify => Duration::from_secs(1),
        Telling::IdleOnly { poll } => Duration::from_millis(u64::from(poll) * 1000 + 1500),
    };
    changes_within(heard, telling, polled)
}

/// [`changes`], with `polled` the bound for the changes outside INBOX.
fn changes_within(heard: Heard, telling: Telling, polled: Duration) -> Vec<String> {
    let dir = TestDir::new(&format!(
        "{}{}",
        match heard {
            Heard::Imap => "imap_changes",
            Heard::ImapOff => "imap_changes_off",
            Heard::LocalFedByImap => "imap_fed_local",
            Heard::LocalOff => "imap_fed_local_off",
        },
        match telling {
            Telling::Notify => String::new(),
            Telling::IdleOnly { poll } => format!("_idle_poll{poll}"),
        }
    ));
    let (settings, poll) = match telling {
        Telling::Notify => (vec![], 60),
        Telling::IdleOnly { poll } => (vec!["mailbox_list_index = no"], poll),
    };
    let (dovecot, port) = start_imap_with(
        &dir,
        Layout::MaildirPlusPlus,
        &settings,
        &[],
        &format!("password={PASSWORD}"),
    );
    assert_eq!(
        imap_capabilities(port).contains(" NOTIFY"),
        telling == Telling::Notify,
        "the server's NOTIFY is not as the test needs"
    );
    let bob = dovecot.user("bob");
    bob.create_mailbox("Work");
    let first = bob.save("INBOX", &email(1, "First", "x\n"));
    bob.save("Work", &email(2, "Work", "y\n"));
    let poll = poll.to_string();
    let mut extra = vec![
        "--attr-timeout",
        "60",
        "--entry-timeout",
        "60",
        "--poll-interval",
        &poll,
    ];
    let url = format!("imap://bob@127.0.0.1:{port}");
    let mount = match heard {
        Heard::Imap => mount_imap(&dir, "bob", port, &extra),
        Heard::ImapOff => {
            extra.extend(["--watch", "off"]);
            mount_imap(&dir, "bob", port, &extra)
        }
        Heard::LocalFedByImap => {
            let secret = dir.join("imap-password");
            fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
            extra.extend(["--watch", &url, "--password-file", secret.to_str().unwrap()]);
            let mount = Mount::start(&bob.location(), &dir.join("mnt"), &extra);
            assert!(
                mount.log().contains("changes pushed over IMAP"),
                "not fed by IMAP:\n{}",
                mount.log()
            );
            mount
        }
        Heard::LocalOff => {
            extra.extend(["--watch", "off"]);
            Mount::start(&bob.location(), &dir.join("mnt"), &extra)
        }
    };
    // A local store is read from disk at every look that reaches mailfs (a listing, an
    // xattr): only what the kernel itself caches (a name looked up before, an
    // attribute) shows whether the feed made mailfs tell the kernel. Those mounts are
    // probed through such names alone.
    let local = matches!(heard, Heard::LocalFedByImap | Heard::LocalOff);
    let inbox = mount.mailbox("INBOX");
    let work = mount.mailbox("Work");
    // The kernel caches the old state: listings, attributes, a negative entry.
    let _ = names(&inbox);
    let _ = names(&work);
    let _ = names(mount.path());
    let first_path = mount.message("INBOX", first);
    fs::metadata(&first_path).unwrap();
    let next_inbox = bob.status("INBOX").uidnext;
    let _ = fs::metadata(inbox.join(format!("{next_inbox}.eml")));
    let next_work = bob.status("Work").uidnext;
    let _ = fs::metadata(work.join(format!("{next_work}.eml")));
    let _ = fs::metadata(mount.mailbox("Fresh"));

    let bound = Duration::from_secs(1);
    let poll_bound = polled;
    // A look at a local store within SETTLE_RECHECK (60 ms) of a change makes the watcher
    // look once more by itself: the changes of a local mount come after a pause, so that
    // only the feed can report them.
    let pause = || {
        if local {
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let mut late = Vec::new();
    let mut check =
        |what: &str, limit: Duration, probe: &mut dyn FnMut() -> bool| match within(limit, probe) {
            Some(t) => println!(
                "imap {what}: visible after {:.0} ms",
                t.as_secs_f64() * 1000.0
            ),
            None => late.push(format!("{what}: not visible within {limit:?}")),
        };

    pause();
    let saved = bob.save("INBOX", &email(3, "Delivered", "z\n"));
    let saved_path = mount.message("INBOX", saved);
    assert_eq!(saved, next_inbox);
    check("delivery to INBOX", bound, &mut || {
        (local || names(&inbox).contains(&format!("{saved}.eml")))
            && fs::metadata(&saved_path).is_ok()
    });
    pause();
    bob.flags_add("INBOX", first, "\\Seen $Done");
    if !local {
        check("flag change in INBOX", bound, &mut || {
            xattr_string(&first_path, "user.mail.flags") == "\\Seen $Done"
        });
    }
    pause();
    bob.expunge("INBOX", first);
    check("expunge in INBOX", bound, &mut || {
        fs::metadata(&first_path).is_err()
            && (local || !names(&inbox).contains(&format!("{first}.eml")))
    });
    pause();
    let in_work = bob.save("Work", &email(4, "More work", "w\n"));
    assert_eq!(in_work, next_work);
    let work_path = mount.message("Work", in_work);
    check("delivery to Work", poll_bound, &mut || {
        fs::metadata(&work_path).is_ok_and(|m| m.size() > 0)
    });
    pause();
    bob.create_mailbox("Fresh");
    check("a new mailbox", poll_bound, &mut || {
        fs::metadata(mount.mailbox("Fresh")).is_ok()
    });
    // After every change showed, the mount equals the store.
    match heard {
        _ if !late.is_empty() => {}
        Heard::Imap => {
            assert_imap_mount_matches(&mount, &bob);
        }
        Heard::LocalFedByImap => {
            crate::util::compare::assert_mount_matches_dovecot(&mount, &bob);
        }
        Heard::ImapOff | Heard::LocalOff => {}
    }
    mount.stop();
    late
}

/// Every change, in every mailbox, within 1 s by NOTIFY, with nothing polled.
#[test]
fn changes_by_others_reach_an_imap_mount_with_long_caches() {
    require!(Dovecot, Fuse);
    let late = changes(Heard::Imap, Telling::Notify);
    assert!(late.is_empty(), "{late:#?}");
}

/// `--watch imap://` on a mount of the local store: no inotify, no polling; every change
/// arrives through Dovecot's IMAP session (NOTIFY) within the same bound. (The negative
/// control below, and `coherence.rs`'s with `--watch off`, show the kernel would otherwise
/// keep the old state.)
#[test]
fn a_local_mount_fed_by_imap_sees_changes_with_long_caches() {
    require!(Dovecot, Fuse);
    let late = changes(Heard::LocalFedByImap, Telling::Notify);
    assert!(late.is_empty(), "{late:#?}");
}

/// A server without NOTIFY: IDLE on INBOX and a poll every second still show every
/// change, for an IMAP mount and for a local mount fed by IMAP.
#[test]
fn without_notify_idle_and_polls_see_every_change() {
    require!(Dovecot, Fuse);
    for heard in [Heard::Imap, Heard::LocalFedByImap] {
        let late = changes(heard, Telling::IdleOnly { poll: 1 });
        assert!(late.is_empty(), "{heard:?}: {late:#?}");
    }
}

/// The negative control of NOTIFY: without it, and with the same 60 s poll interval, the
/// changes outside INBOX stay unseen past 1 s (INBOX's still come by IDLE). So the NOTIFY
/// tests above can fail.
#[test]
fn without_notify_a_long_poll_leaves_other_mailboxes_behind() {
    require!(Dovecot, Fuse);
    let beyond = Telling::IdleOnly { poll: 60 };
    for heard in [Heard::Imap, Heard::LocalFedByImap] {
        // The bound for polled changes would be 61.5 s: probe them against NOTIFY's.
        let late = changes_within(heard, beyond, Duration::from_secs(1));
        let late: Vec<&str> = late.iter().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            late,
            ["delivery to Work", "a new mailbox"],
            "{heard:?}: only the changes outside INBOX should have been late"
        );
    }
}

/// The negative control of the one above: the same local mount with `--watch off` keeps
/// serving what the kernel cached, for every change probed.
#[test]
fn a_local_mount_without_a_feed_keeps_the_old_state() {
    require!(Dovecot, Fuse);
    let late = changes(Heard::LocalOff, Telling::Notify);
    assert_eq!(
        late.len(),
        4,
        "every probed change should have stayed hidden: {late:#?}"
    );
}

/// The negative control: without the feed, the kernel's 60 s caches hide the changes, so
/// the test above can fail.
#[test]
fn without_the_feed_long_caches_hide_the_changes() {
    require!(Dovecot, Fuse);
    let late = changes(Heard::ImapOff, Telling::Notify);
    // The kernel keeps the expunged message's attributes and the negative entry of the
    // new mailbox for 60 s; listings and xattrs are never cached by the kernel, so what
    // they show comes from mailfs, which reads the server again after a poll interval.
    for what in ["expunge in INBOX", "a new mailbox"] {
        assert!(
            late.iter().any(|l| l.starts_with(what)),
            "without the feed, the kernel should have kept the old state ({what}): {late:#?}"
        );
    }
}

/// `--rw` on an IMAP mount: rm, mv, setfattr, cp, mkdir, rmdir and a directory rename
/// become IMAP commands of the mount's own login; each returns after the server's OK and
/// shows through the mount at once; doveadm sees the result and finds nothing to repair.
#[test]
fn writes_through_an_imap_mount_are_imap_commands() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_rw");
    let (dovecot, port) = start_imap(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Work");
    let u1 = bob.save("INBOX", &email(1, "To remove", "a\n"));
    let u2 = bob.save("INBOX", &email(2, "To move", "b\n"));
    let u3 = bob.save("INBOX", &email(3, "To flag", "c\n"));
    let moved_text = bob.text("INBOX", u2);
    let mount = mount_imap(&dir, "bob", port, &["--rw"]);
    let inbox = mount.mailbox("INBOX");
    let work = mount.mailbox("Work");
    let _ = names(&inbox);

    fs::remove_file(mount.message("INBOX", u1)).expect("rm");
    assert!(!bob.uids("INBOX").contains(&u1), "doveadm: removed");
    assert!(!names(&inbox).contains(&format!("{u1}.eml")), "ls after rm");

    let work_next = bob.status("Work").uidnext;
    fs::rename(mount.message("INBOX", u2), work.join(format!("{u2}.eml"))).expect("mv");
    assert_eq!(
        bob.uids("Work"),
        vec![work_next],
        "doveadm: moved into Work"
    );
    assert_eq!(bob.text("Work", work_next), moved_text);
    assert!(!bob.uids("INBOX").contains(&u2));
    assert!(
        names(&work).contains(&format!("{work_next}.eml")),
        "ls Work after mv"
    );

    let p3 = mount.message("INBOX", u3);
    crate::util::fsx::setxattr(&p3, "user.mail.flags", b"\\Seen $Label1").expect("setfattr");
    assert_eq!(
        bob.fetch_flags("INBOX"),
        vec![(u3, vec!["\\Seen".to_string(), "$Label1".to_string()])]
    );
    assert_eq!(xattr_string(&p3, "user.mail.flags"), "\\Seen $Label1");
    crate::util::fsx::setxattr(&p3, "user.mail.flags.add", b"\\Flagged").expect("add");
    crate::util::fsx::setxattr(&p3, "user.mail.flags.remove", b"\\Seen").expect("remove");
    assert_eq!(xattr_string(&p3, "user.mail.flags"), "\\Flagged $Label1");

    let source = dir.join("restore.eml");
    let restored = email(4, "Restored", "from a backup\n");
    fs::write(&source, &restored).unwrap();
    let next = bob.status("INBOX").uidnext;
    fs::copy(&source, inbox.join("restore.eml")).expect("cp");
    assert_eq!(
        bob.uids("INBOX"),
        vec![u3, next],
        "doveadm: one message saved"
    );
    assert_eq!(bob.text("INBOX", next), restored, "stored as given");
    assert_eq!(
        fs::read(mount.message("INBOX", next)).unwrap(),
        crlf_form(&restored),
        "read back through the mount"
    );

    fs::create_dir(mount.path().join("Fresh")).expect("mkdir");
    assert!(
        bob.list().contains(&"Fresh".to_string()),
        "doveadm: created"
    );
    fs::remove_dir(mount.path().join("Fresh")).expect("rmdir of an empty mailbox");
    assert!(
        !bob.list().contains(&"Fresh".to_string()),
        "doveadm: deleted"
    );
    let not_empty = fs::remove_dir(&work).unwrap_err();
    assert_eq!(
        not_empty.raw_os_error(),
        Some(libc::ENOTEMPTY),
        "rmdir of Work"
    );
    assert_eq!(bob.uids("Work"), vec![work_next], "Work keeps its mail");
    fs::rename(&work, mount.path().join("Archive")).expect("mv Work Archive");
    assert!(bob.list().contains(&"Archive".to_string()));
    assert!(!bob.list().contains(&"Work".to_string()));

    for mailbox in bob.list() {
        bob.force_resync(&mailbox);
    }
    assert_imap_mount_matches(&mount, &bob);
    mount.stop();
}

/// A TCP relay between the mount and Dovecot that a test can cut (every connection
/// closed, new ones closed at once) and restore.
struct Relay {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let mut list = o.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The server goes away mid-use and comes back: what was fetched still reads (from the
/// cache, byte-exact), anything else fails with EIO at once and a log line naming the
/// server, never a hang or wrong bytes; once the server is back the mount recovers by
/// itself (no remount) and shows what changed meanwhile.
#[test]
fn an_unreachable_server_gives_eio_and_the_mount_recovers() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_fault");
    let (dovecot, port) = start_imap(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let a = bob.save("INBOX", &email(1, "Fetched before", "a\n"));
    let b = bob.save("INBOX", &email(2, "Not fetched", "b\n"));
    let relay = Relay::start(port);
    let mount = mount_imap(&dir, "bob", relay.port, &[]);
    let a_text = crlf_form(&bob.text("INBOX", a));
    assert_eq!(fs::read(mount.message("INBOX", a)).unwrap(), a_text);
    fs::metadata(mount.message("INBOX", b)).unwrap();

    relay.cut();
    let started = Instant::now();
    assert_eq!(
        fs::read(mount.message("INBOX", a)).expect("cached bytes still read"),
        a_text
    );
    let err = fs::read(mount.message("INBOX", b)).expect_err("an uncached message");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failing took {:?}",
        started.elapsed()
    );
    let log = mount.log();
    let server = format!("IMAP bob@127.0.0.1:{}", relay.port);
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&server)),
        "no log line names the server:\n{log}"
    );
    let during = bob.save("INBOX", &email(3, "Delivered during the outage", "c\n"));

    relay.restore();
    let recovered = within(Duration::from_secs(15), || {
        fs::read(mount.message("INBOX", b)).is_ok()
            && names(&mount.mailbox("INBOX")).contains(&format!("{during}.eml"))
    });
    assert!(
        recovered.is_some(),
        "the mount did not recover within 15 s:\n{}",
        mount.log()
    );
    println!(
        "imap: recovered {:?} after the server came back",
        recovered.unwrap()
    );
    assert_imap_mount_matches(&mount, &bob);
    mount.stop();
}

/// A mailbox deleted and created again has a new UIDVALIDITY: its UID 1 is another
/// message, and the mount shows the new bytes, never the old ones it had cached (the cache
/// is keyed by UIDVALIDITY, and the kernel's pages of the old file are dropped).
#[test]
fn a_new_uidvalidity_never_serves_the_old_bytes() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_uidvalidity");
    let (dovecot, port) = start_imap(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Work");
    let old = bob.save("Work", &email(1, "Old", "the old bytes\n"));
    let old_validity = bob.status("Work").uidvalidity;
    let mount = mount_imap(
        &dir,
        "bob",
        port,
        &["--attr-timeout", "60", "--entry-timeout", "60"],
    );
    let path = mount.message("Work", old);
    let old_text = fs::read(&path).unwrap();
    bob.adm(&[], &["mailbox", "delete"], &["Work"]);
    // A UIDVALIDITY is a time in seconds: the new one must differ.
    std::thread::sleep(Duration::from_millis(1100));
    bob.create_mailbox("Work");
    let new = bob.save("Work", &email(2, "New", "entirely different new bytes\n"));
    assert_eq!(new, old, "the same UID again");
    assert_ne!(bob.status("Work").uidvalidity, old_validity);
    let want = crlf_form(&bob.text("Work", new));
    let shown = within(Duration::from_secs(5), || {
        fs::read(&path).is_ok_and(|b| b == want)
    });
    assert!(
        shown.is_some(),
        "the new message never showed; still {:?}",
        String::from_utf8_lossy(&fs::read(&path).unwrap_or_default())
    );
    assert_ne!(want, old_text);
    assert_imap_mount_matches(&mount, &bob);
    mount.stop();
}

/// An admin mounts another user's mail with Dovecot's master users: `bob*admin` as the
/// login (auth_master_user_separator), or the login `admin` with `--authzid bob` (SASL
/// PLAIN's authorization identity); both show bob's mail, and the master password alone
/// with a user name that is not a master login is refused.
#[test]
fn a_master_user_mounts_another_users_mail() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_master");
    let (dovecot, port) = start_imap_with(
        &dir,
        Layout::MaildirPlusPlus,
        &["auth_master_user_separator = *"],
        &["passdb {\n  driver = static\n  master = yes\n  args = password=master-secret\n}"],
        &format!("password={PASSWORD}"),
    );
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "For bob", "only bob's\n"));
    let alice = dovecot.user("alice");
    assert!(alice.uids("INBOX").is_empty());
    for (login, extra) in [("bob*admin", vec![]), ("admin", vec!["--authzid", "bob"])] {
        let mount = mount_imap_as(&dir, login, "master-secret", port, &extra);
        assert_imap_mount_matches(&mount, &bob);
        mount.stop();
    }
    let secret = dir.join("master");
    fs::write(&secret, "master-secret\n").unwrap();
    let refused = mount_must_fail(
        &format!("imap://bob@127.0.0.1:{port}"),
        &dir.join("mnt"),
        &[
            "--password-file",
            secret.to_str().unwrap(),
            "--cache-dir",
            dir.join("c").to_str().unwrap(),
        ],
    );
    assert!(
        refused.stderr.contains("authentication failed"),
        "{}",
        refused.stderr
    );
}

/// Through a second Dovecot acting as IMAP proxy (passdb `proxy=y host=127.0.0.1`), as a
/// director or proxy in a cluster routes each login to its backend: the mount equals the
/// backend's doveadm, with the user's own login and with a master login.
#[test]
fn through_a_dovecot_proxy_with_a_master_user() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_proxy");
    let (backend, port) = start_imap_with(
        &dir,
        Layout::MaildirPlusPlus,
        &["auth_master_user_separator = *"],
        &["passdb {\n  driver = static\n  master = yes\n  args = password=master-secret\n}"],
        &format!("password={PASSWORD}"),
    );
    let bob = backend.user("bob");
    bob.create_mailbox("Work");
    bob.save("INBOX", &email(1, "Via the proxy", "routed\n"));
    bob.save("Work", &email(2, "Work", "w\n"));
    let proxy_dir = TestDir::new("imap_proxy_front");
    let master_proxy = format!(
        "passdb {{\n  driver = static\n  master = yes\n  \
         args = password=master-secret proxy=y host=127.0.0.1 port={port}\n}}"
    );
    let (proxy, proxy_port) = start_imap_with(
        &proxy_dir,
        Layout::MaildirPlusPlus,
        &["auth_master_user_separator = *"],
        // A master login is checked here and forwarded to the backend as it came.
        &[&master_proxy],
        &format!("proxy=y host=127.0.0.1 port={port} nopassword=y"),
    );
    let mount = mount_imap(&dir, "bob", proxy_port, &[]);
    assert_imap_mount_matches(&mount, &bob);
    mount.stop();
    let mount = mount_imap_as(&dir, "bob*admin", "master-secret", proxy_port, &[]);
    assert_imap_mount_matches(&mount, &bob);
    mount.stop();
    let proxied = proxy.log_text();
    assert!(
        proxied.contains("proxy(bob,")
            && proxied.contains("Started proxying to <127.0.0.1> (master admin)"),
        "the proxy's log shows no proxied session, or no master login:\n{proxied}"
    );
}

/// `imaps://` with `--tls-ca`: the mount works when the server's certificate chains to
/// the given CA, and is refused (clearly, before mounting) with another CA or with the
/// system's roots, which do not know the test CA.
#[test]
fn imaps_trusts_the_given_ca_and_refuses_others() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_tls");
    let pki = Pki::make(&dir.mkdir("certs"), None);
    let cert = format!("ssl_cert = <{}", pki.cert.display());
    let key = format!("ssl_key = <{}", pki.key.display());
    let (dovecot, port) = start_imap_with(
        &dir,
        Layout::MaildirPlusPlus,
        &["ssl = yes", &cert, &key],
        &[],
        &format!("password={PASSWORD}"),
    );
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Over TLS", "encrypted\n"));
    let secret = dir.join("pass");
    fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
    let location = format!("imaps://bob@127.0.0.1:{port}");
    let cache = dir.join("cache");
    let common = |ca: Option<&Path>| {
        let mut a = vec![
            "--password-file".to_string(),
            secret.display().to_string(),
            "--cache-dir".to_string(),
            cache.display().to_string(),
        ];
        if let Some(ca) = ca {
            a.push("--tls-ca".to_string());
            a.push(ca.display().to_string());
        }
        a
    };
    for ca in [Some(pki.other_ca.clone()), None] {
        let args = common(ca.as_deref());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let failure = mount_must_fail(&location, &dir.join("mnt"), &args);
        assert!(
            failure.stderr.contains("TLS") && failure.stderr.to_lowercase().contains("certificate"),
            "with {ca:?}: {}",
            failure.stderr
        );
    }
    let args = common(Some(&pki.ca));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mount = Mount::start(&location, &dir.join("mnt"), &args);
    assert_imap_mount_matches(&mount, &bob);
    mount.stop();
}

/// Shared mailboxes as the seeds set them up (the acl plugin, a `shared/%u/` namespace):
/// a mailbox alice shared with bob (`doveadm acl add`) appears under `shared/alice/` on
/// bob's mount with alice's messages; one she did not share does not appear; one bob may
/// see but not read gives EACCES, not EIO.
#[test]
fn shared_mailboxes_appear_as_their_acls_allow() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_shared");
    // The shared-mailbox dictionary is written by the users' processes (the mail uid).
    let acl_dir = dir.mkdir("acl");
    fs::set_permissions(
        &acl_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let dict = format!(
        "plugin/acl_shared_dict = file:{}",
        acl_dir.join("shared-mailboxes.db").display()
    );
    let (dovecot, port) = start_imap_with(
        &dir,
        Layout::MaildirPlusPlus,
        &["mail_plugins = acl", "plugin/acl = vfile", &dict],
        &[
            "protocol imap {\n  mail_plugins = $mail_plugins imap_acl\n}",
            "namespace shared {\n  type = shared\n  separator = /\n  prefix = shared/%%u/\n  \
             location = maildir:%%h/Maildir:INDEXPVT=~/shared/%%u\n  subscriptions = no\n  \
             list = children\n}",
        ],
        &format!("password={PASSWORD}"),
    );
    let alice = dovecot.user("alice");
    alice.create_mailbox("Project");
    alice.create_mailbox("Peek");
    alice.save("INBOX", &email(1, "Private", "not for bob\n"));
    let shared_uid = alice.save("Project", &email(2, "Shared", "for bob\n"));
    alice.save("Peek", &email(3, "Peek", "names only\n"));
    alice.adm(
        &[],
        &["acl", "add"],
        &["Project", "user=bob", "lookup", "read"],
    );
    alice.adm(&[], &["acl", "add"], &["Peek", "user=bob", "lookup"]);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(4, "Bob's own", "mine\n"));

    let mount = mount_imap(&dir, "bob", port, &[]);
    let theirs = mount.path().join("shared").join("alice");
    assert_eq!(
        names(&theirs),
        ["Peek", "Project"].iter().map(|s| s.to_string()).collect(),
        "alice's mailboxes bob may see"
    );
    let shared = fs::read(theirs.join("Project").join(format!("{shared_uid}.eml")))
        .expect("reading the shared message");
    assert_eq!(shared, crlf_form(&alice.text("Project", shared_uid)));
    let denied = fs::read_dir(theirs.join("Peek")).and_then(|d| d.collect::<Result<Vec<_>, _>>());
    assert_eq!(
        denied.map(|_| ()).unwrap_err().raw_os_error(),
        Some(libc::EACCES),
        "a mailbox bob may list but not read"
    );
    assert!(names(mount.path()).contains("INBOX"));
    assert!(
        !theirs.join("INBOX").exists(),
        "alice's INBOX is not shared"
    );
    mount.stop();
}

/// Regular files below `dir` (the body cache's entries), temporary ones (`.N.tmp`) left out.
fn cached_files(dir: &Path) -> usize {
    crate::util::fsx::walk(dir)
        .iter()
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .count()
}

/// Reading messages one after the other in UID order (`cat *`, `grep -r`) makes the mount
/// fetch the next ones ahead into its cache; a read out of order fetches only itself. The
/// bytes read are the server's either way.
#[test]
fn sequential_reads_fetch_ahead() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_ahead");
    let (dovecot, port) = start_imap(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uids: Vec<u32> = (0..30)
        .map(|i| bob.save("INBOX", &email(i, "Ahead", "a body\n")))
        .collect();
    let mount = mount_imap(&dir, "bob", port, &[]);
    let cache = dir.join("cache");
    let read = |uid: u32| {
        let got = fs::read(mount.message("INBOX", uid)).unwrap();
        assert_eq!(got, crlf_form(&bob.text("INBOX", uid)), "UID {uid}");
    };
    read(uids[20]);
    read(uids[5]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        cached_files(&cache),
        2,
        "reads out of order fetch only themselves"
    );
    read(uids[6]);
    let ahead = within(Duration::from_secs(5), || cached_files(&cache) >= 3 + 8);
    assert!(
        ahead.is_some(),
        "after two reads in order the next 8 should be fetched ahead; cached: {}",
        cached_files(&cache)
    );
    for &uid in &uids[7..15] {
        read(uid);
    }
    assert_imap_mount_matches(&mount, &bob);
    mount.stop();
}

/// `--layout maildir` over an IMAP mount: Python's `mailbox.Maildir` finds every message
/// of each mailbox in `cur/`, with the bytes IMAP sends and the system flags as Maildir
/// letters (D F R S T), as over a local store.
#[test]
fn python_maildir_over_an_imap_mount_in_the_maildir_layout() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("imap_layout_maildir");
    let (dovecot, port) = start_imap(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    populate(&bob);
    let mount = mount_imap(&dir, "bob", port, &["--layout", "maildir"]);
    let script = "import mailbox, sys\n\
                  md = mailbox.Maildir(sys.argv[1], create=False)\n\
                  for key in sorted(md.keys(), key=lambda k: int(k.split('.')[0])):\n\
                  \x20   m = md.get_message(key)\n\
                  \x20   print(key.split('.')[0], m.get_subdir(), ''.join(c for c in m.get_flags() if c.isupper()) or '-', md.get_bytes(key).hex())\n";
    let letter = |flag: &str| match flag {
        "\\Draft" => Some('D'),
        "\\Flagged" => Some('F'),
        "\\Answered" => Some('R'),
        "\\Seen" => Some('S'),
        "\\Deleted" => Some('T'),
        _ => None,
    };
    let mut compared = 0;
    for mailbox in ["INBOX", "Work", "Work/Sub", "Empty"] {
        let out = std::process::Command::new(crate::util::tool("python3"))
            .arg("-c")
            .arg(script)
            .arg(mount.mailbox(mailbox))
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "{mailbox}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let want: Vec<String> = bob
            .fetch(mailbox)
            .iter()
            .map(|m| {
                let m = as_imap_mount_shows(m);
                let mut letters: Vec<char> = m.flags.split(' ').filter_map(letter).collect();
                letters.sort_unstable();
                let letters: String = letters.into_iter().collect();
                let hex: String = m.text.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "{} cur {} {hex}",
                    m.uid,
                    if letters.is_empty() { "-" } else { &letters }
                )
            })
            .collect();
        assert_eq!(got, want, "{mailbox}");
        compared += got.len();
    }
    assert_eq!(compared, 6);
    assert!(!mount.stop().contains("panicked"));
}
