//! Bad input: the mount refuses to start with a clear message, or answers EIO/ENOENT for
//! the broken part only and logs a line naming the path. Never a panic, never a silently
//! empty listing.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::corpus::email;
use crate::util::dovecot::{Dovecot, Layout, User};
use crate::util::fsx::{dir_names, errno, errno_name};
use crate::util::mount::{Mount, mailfs, mount_must_fail};
use crate::util::pki::mail_crypt_settings;
use crate::util::{TestDir, mailfs_bin, set_mode, show};

/// A small valid store: INBOX with two messages, `Work/Sub` with three.
fn small_store(user: &User<'_>) {
    user.save("INBOX", &email(1, "First", "one"));
    user.save("INBOX", &email(2, "Second", "two"));
    user.create_mailbox("Work/Sub");
    for n in 3..6 {
        user.save("Work/Sub", &email(n, &format!("Sub {n}"), "nested"));
    }
}

/// Reads a directory to the end; the first error (from opendir or readdir) wins.
fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

#[track_caller]
fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "mailfs panicked:\n{log}");
}

/// Lines of `log` that mention `needle`.
fn lines_mentioning<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// True if `line` has the word "uid" followed (anywhere later) by the number `uid`.
fn mentions_uid(line: &str, uid: u32) -> bool {
    let Some(at) = line.to_ascii_lowercase().find("uid") else {
        return false;
    };
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .any(|n| n == uid.to_string())
}

/// The path of a message's file in `new/` or `cur/`, found by its base name from
/// `doveadm fetch guid` (which is the base name for messages saved by doveadm).
fn message_file(user: &User<'_>, mailbox: &str, uid: u32) -> PathBuf {
    let guid = user.fetch_guid(mailbox, uid);
    let dir = user.mailbox_dir(mailbox);
    ["new", "cur"]
        .iter()
        .flat_map(|sub| {
            fs::read_dir(dir.join(sub))
                .expect("reading maildir")
                .map(|e| e.unwrap().path())
        })
        .find(|p| {
            // doveadm's GUID is the base name, with the S=/W= fields or (when a plugin
            // changed the stored size) without them; the info follows ':'.
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.split(':').next() == Some(guid.as_str())
                || name.split([',', ':']).next() == Some(guid.as_str())
        })
        .unwrap_or_else(|| panic!("no file for uid {uid} (base {guid}) in {dir:?}"))
}

#[test]
fn mount_refuses_a_missing_location() {
    require!(Fuse);
    let dir = TestDir::new("bad_missing_location");
    let mp = dir.mkdir("mnt");
    let missing = dir.join("no/such/Maildir");
    let m = missing.display().to_string();
    for location in [format!("maildir:{m}"), m.clone()] {
        let failure = mount_must_fail(&location, &mp, &[]);
        assert!(
            failure.stderr.contains(&m),
            "message must name {m}:\n{}",
            failure.stderr
        );
        assert_no_panic(&failure.stderr);
    }
}

#[test]
fn mount_refuses_a_location_that_is_a_file() {
    require!(Fuse);
    let dir = TestDir::new("bad_location_file");
    let mp = dir.mkdir("mnt");
    let file = dir.join("Maildir");
    fs::write(&file, b"not a directory\n").unwrap();
    let f = file.display().to_string();
    for location in [format!("maildir:{f}"), f.clone()] {
        let failure = mount_must_fail(&location, &mp, &[]);
        assert!(
            failure.stderr.contains(&f),
            "message must name {f}:\n{}",
            failure.stderr
        );
        assert_no_panic(&failure.stderr);
    }
}

#[test]
fn mount_refuses_an_empty_or_foreign_directory() {
    require!(Fuse);
    let dir = TestDir::new("bad_location_foreign");
    let mp = dir.mkdir("mnt");
    let empty = dir.mkdir("empty");
    let foreign = dir.mkdir("foreign");
    fs::write(foreign.join("notes.txt"), b"hello\n").unwrap();
    fs::create_dir(foreign.join("photos")).unwrap();
    for root in [&empty, &foreign] {
        let r = root.display().to_string();
        for location in [format!("maildir:{r}"), r.clone()] {
            let failure = mount_must_fail(&location, &mp, &[]);
            assert!(
                failure.stderr.contains(&r),
                "message must name {r}:\n{}",
                failure.stderr
            );
            assert_no_panic(&failure.stderr);
        }
    }
}

#[test]
fn mount_refuses_an_unknown_location_key() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_location_key");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let location = format!("{}:FROBNICATE=yes", bob.location());
    let failure = mount_must_fail(&location, &dir.mkdir("mnt"), &[]);
    assert!(matches!(failure.status.code(), Some(1 | 2)), "{failure:?}");
    assert!(
        failure.stderr.contains("FROBNICATE"),
        "must name the key:\n{}",
        failure.stderr
    );
}

#[test]
fn mount_refuses_a_bad_mountpoint() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_mountpoint");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let file = dir.join("a-file");
    fs::write(&file, b"x").unwrap();
    let missing = dir.join("no-such-dir");
    for mp in [&file, &missing] {
        let failure = mount_must_fail(&bob.location(), mp, &[]);
        let m = mp.display().to_string();
        assert!(
            failure.stderr.contains(&m),
            "message must name {m}:\n{}",
            failure.stderr
        );
        assert_no_panic(&failure.stderr);
    }
}

/// With /dev/fuse replaced by /dev/null (in a private mount namespace), mailfs must exit
/// with a message instead of hanging or panicking.
#[test]
fn mount_fails_cleanly_when_dev_fuse_is_unusable() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("bad_dev_fuse");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let mp = dir.mkdir("mnt");
    let script = r#"mount --bind /dev/null /dev/fuse && exec timeout 10 "$@""#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(mailfs_bin())
        .arg("mount")
        .arg(bob.location())
        .arg(&mp)
        .env_remove("RUST_LOG")
        .output()
        .expect("running unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "mailfs mounted with /dev/null as /dev/fuse:\n{stderr}"
    );
    assert_ne!(
        out.status.code(),
        Some(124),
        "mailfs hung with an unusable /dev/fuse:\n{stderr}"
    );
    assert!(!stderr.trim().is_empty(), "no message ({})", out.status);
    assert_no_panic(&stderr);
}

/// A mailbox whose `cur` is a file: listing it gives EIO (and a log line naming it); the
/// other mailboxes are unaffected; `mailfs ls` fails with exit 1.
#[test]
fn mailbox_whose_cur_is_a_file_gives_eio() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_cur_file");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let sub = bob.mailbox_dir("Work/Sub");
    fs::remove_dir_all(sub.join("cur")).unwrap();
    fs::write(sub.join("cur"), b"I am not a directory\n").unwrap();

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let r = list(&mount.mailbox("Work/Sub"));
    assert_eq!(errno(&r), Some(libc::EIO), "listing Work/Sub: {r:?}");
    assert_eq!(
        list(&mount.mailbox("INBOX"))
            .expect("INBOX still lists")
            .len(),
        2
    );
    let log = mount.stop();
    let s = sub.display().to_string();
    assert!(
        !lines_mentioning(&log, &s).is_empty(),
        "no log line names {s}:\n{log}"
    );
    assert_no_panic(&log);

    let out = mailfs(["ls", &bob.location(), "Work/Sub"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "mailfs ls Work/Sub: {stderr}");
    assert!(stderr.contains(&s), "message must name {s}:\n{stderr}");
    assert!(
        out.stdout.is_empty(),
        "partial listing printed: {}",
        show(&out.stdout)
    );
}

/// A garbage `dovecot-uidlist`: EIO on listing that mailbox (never an empty listing), a log
/// line naming the file; other mailboxes fine.
#[test]
fn garbage_uidlist_gives_eio() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_uidlist");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let uidlist = bob.control_dir("Work/Sub").join("dovecot-uidlist");
    assert!(uidlist.is_file());
    fs::write(
        &uidlist,
        b"this is not a uidlist\n\x00\xff\xfe garbage 12 :x\nmore junk\n",
    )
    .unwrap();

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let r = list(&mount.mailbox("Work/Sub"));
    assert_eq!(errno(&r), Some(libc::EIO), "listing Work/Sub: {r:?}");
    assert_eq!(
        list(&mount.mailbox("INBOX"))
            .expect("INBOX still lists")
            .len(),
        2
    );
    let log = mount.stop();
    let u = uidlist.display().to_string();
    assert!(
        !lines_mentioning(&log, &u).is_empty(),
        "no log line names {u}:\n{log}"
    );
    assert_no_panic(&log);

    let out = mailfs(["ls", &bob.location(), "Work/Sub"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&u),
        "{}",
        show(&out.stderr)
    );
}

/// A uidlist line whose file is gone (deleted behind Dovecot's back): that UID is not
/// listed, `<uid>.eml` is ENOENT, and one log line mentions it.
#[test]
fn uidlist_entry_without_a_file_is_skipped_and_logged() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_missing_file");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let uids = bob.uids("Work/Sub");
    assert_eq!(uids.len(), 3);
    let victim = message_file(&bob, "Work/Sub", uids[1]);
    let base = victim
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    fs::remove_file(&victim).unwrap();

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let names = dir_names(&mount.mailbox("Work/Sub")).expect("listing Work/Sub");
    let expected: BTreeSet<String> = [uids[0], uids[2]].map(|u| format!("{u}.eml")).into();
    assert_eq!(names, expected);
    let r = fs::metadata(mount.message("Work/Sub", uids[1]));
    assert_eq!(errno(&r), Some(libc::ENOENT), "{}", errno_name(errno(&r)));
    let log = mount.stop();
    // "It" is the file's base name, or the mailbox and the UID.
    let mailbox_dir = bob.mailbox_dir("Work/Sub").display().to_string();
    let mentions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&base) || (l.contains(&mailbox_dir) && mentions_uid(l, uids[1])))
        .collect();
    assert_eq!(
        mentions.len(),
        1,
        "want one log line mentioning {base} or uid {} of {mailbox_dir}:\n{log}",
        uids[1]
    );
    assert_no_panic(&log);
}

/// A message file replaced by a directory of the same name: reading it gives EIO; the
/// other messages read fine.
#[test]
fn message_that_is_a_directory_gives_eio() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_message_dir");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let uids = bob.uids("INBOX");
    let victim = message_file(&bob, "INBOX", uids[0]);
    fs::remove_file(&victim).unwrap();
    fs::create_dir(&victim).unwrap();

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let r = fs::read(mount.message("INBOX", uids[0]));
    assert_eq!(
        errno(&r),
        Some(libc::EIO),
        "reading uid {}: {}",
        uids[0],
        errno_name(errno(&r))
    );
    let other = fs::read(mount.message("INBOX", uids[1])).expect("the other message reads");
    assert!(other.starts_with(b"Return-Path:"));
    let log = mount.stop();
    let v = victim.display().to_string();
    assert!(
        !lines_mentioning(&log, &v).is_empty(),
        "no log line names {v}:\n{log}"
    );
    assert_no_panic(&log);
}

/// An unreadable message (mode 000, read as the mail user, since root ignores modes):
/// `mailfs cat` exits 1 naming the file; a readable one still works (the control).
#[test]
fn unreadable_message_makes_cat_fail_with_a_message() {
    require!(Dovecot, Root);
    let dir = TestDir::new("bad_unreadable");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let uids = bob.uids("INBOX");
    let victim = message_file(&bob, "INBOX", uids[0]);
    set_mode(&victim, 0o000);
    assert_eq!(
        fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0
    );
    let (uid, gid) = dovecot.mail_owner();
    let cat_as_mail_user = |msg_uid: u32| {
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(mailfs_bin())
            .args(["cat", &bob.location(), "INBOX", &msg_uid.to_string()])
            .env_remove("RUST_LOG")
            .output()
            .expect("running setpriv")
    };
    let ok = cat_as_mail_user(uids[1]);
    assert!(
        ok.status.success(),
        "control: readable message: {}",
        show(&ok.stderr)
    );
    assert_eq!(ok.stdout, bob.text("INBOX", uids[1]));

    let out = cat_as_mail_user(uids[0]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "cat of an unreadable message: {stderr}"
    );
    let v = victim.display().to_string();
    assert!(stderr.contains(&v), "message must name {v}:\n{stderr}");
    assert_no_panic(&stderr);
}

/// `mailfs dump` of a file that does not exist says so (the OS error with the path), for
/// every kind of name, instead of "unknown file type"; a directory says it is one. The
/// control: an existing file of no known kind is still "unknown file type".
#[test]
fn dump_of_a_missing_file_says_it_does_not_exist() {
    let dir = TestDir::new("bad_dump_missing");
    let unknown = dir.join("notes.txt");
    fs::write(&unknown, b"hello\n").unwrap();
    let out = mailfs([OsStr::new("dump"), unknown.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "control: {stderr}");
    assert!(stderr.contains("unknown file type"), "control: {stderr}");

    for name in [
        "nonexistent",
        "no/dir/dovecot.index",
        "dovecot.index",
        "dovecot.index.log",
        "dovecot.index.cache",
        "dovecot-uidlist",
        "u.1",
    ] {
        let path = dir.join(name);
        let out = mailfs([OsStr::new("dump"), path.as_os_str()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        let p = path.display().to_string();
        assert!(
            stderr.contains(&format!("{p}: No such file or directory")),
            "{name}: must say {p} does not exist: {stderr}"
        );
    }
    let out = mailfs([OsStr::new("dump"), dir.path().as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a directory: {stderr}");
    assert!(stderr.contains("Is a directory"), "a directory: {stderr}");
}

/// A mount point that is, is inside, or contains a directory the store is read from (the
/// mail root, INDEX=, CONTROL=) would make mailfs read its own mount and hang: refused at
/// start-up (exit 1) with a message naming both paths, also through a symlink. The
/// control: a sibling of the mail root mounts and serves.
/// mailfs never writes into a store: a `--log-file` inside it (directly, or through a
/// symbolic link) is refused before anything is created, with a message naming both.
#[test]
fn a_log_file_inside_the_store_is_refused_and_never_created() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_log_in_store");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let root = bob.mail_root();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    for log in [root.join("mailfs.log"), link.join("cur/mailfs.log")] {
        let log_arg = log.display().to_string();
        let failure = mount_must_fail(
            &bob.location(),
            &dir.mkdir("mnt"),
            &["--log-file", &log_arg],
        );
        assert_eq!(failure.status.code(), Some(1), "{failure:?}");
        assert!(
            failure.stderr.contains("--log-file")
                && failure.stderr.contains(&format!(
                    " {}, a directory the store is read from",
                    root.display()
                )),
            "{}",
            failure.stderr
        );
        assert!(!log.exists(), "{} was created", log.display());
    }
    // Outside the store it is written.
    let outside = dir.join("mailfs.log");
    let mount = Mount::start(
        &bob.location(),
        &dir.join("mnt"),
        &["--log-file", outside.to_str().unwrap()],
    );
    mount.stop();
    assert!(outside.exists());
}

#[test]
fn a_mount_point_inside_the_store_is_refused() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_mp_in_store");
    let dovecot = Dovecot::start(&dir, Layout::FsSeparateIndexControl);
    let bob = dovecot.user("bob");
    small_store(&bob);
    let home = bob.home();
    let root = bob.mail_root();
    assert_eq!(root, home.join("Maildir"), "the layout this test assumes");
    let inside_root = root.join("mnt");
    let inside_index = home.join("index/mnt");
    for d in [&inside_root, &inside_index] {
        fs::create_dir(d).unwrap();
    }
    let link = dir.join("link");
    std::os::unix::fs::symlink(&inside_root, &link).unwrap();
    let index = home.join("index");
    for (mp, store_dir) in [
        (&inside_root, &root),
        (&root, &root),
        (&link, &root),
        (&inside_index, &index),
        (&home, &root),
    ] {
        let failure = mount_must_fail(&bob.location(), mp, &[]);
        assert_eq!(failure.status.code(), Some(1), "{failure:?}");
        let shown = fs::canonicalize(mp).unwrap().display().to_string();
        let s = store_dir.display().to_string();
        assert!(
            failure.stderr.contains(&format!("mount point {shown} "))
                && failure
                    .stderr
                    .contains(&format!(" {s}, a directory the store is read from")),
            "{}: the message must name {shown} and {s}:\n{}",
            mp.display(),
            failure.stderr
        );
        assert_no_panic(&failure.stderr);
    }

    let mount = Mount::start(&bob.location(), &home.join("sibling"), &[]);
    let uids = bob.uids("INBOX");
    assert_eq!(
        fs::read(mount.message("INBOX", uids[0])).expect("the sibling mount serves"),
        bob.text("INBOX", uids[0])
    );
    assert_no_panic(&mount.stop());
}

/// The same for a multi-user template: a mount point inside its base (the path above the
/// variables, where users are looked for) is refused naming both; a sibling of the base
/// mounts.
#[test]
fn a_mount_point_inside_a_template_base_is_refused() {
    require!(Fuse);
    let dir = TestDir::new("bad_mp_in_base");
    let base = dir.mkdir("vmail");
    for sub in ["cur", "new", "tmp"] {
        dir.mkdir(format!("vmail/alice/Maildir/{sub}"));
    }
    fs::write(
        base.join("alice/Maildir/new/1700000001.M1P1.host"),
        email(1, "Hello", "alice"),
    )
    .unwrap();
    let template = format!("maildir:{}/%u/Maildir", base.display());
    let inside = dir.mkdir("vmail/mnt");
    let failure = mount_must_fail(&template, &inside, &[]);
    assert_eq!(failure.status.code(), Some(1), "{failure:?}");
    let (i, b) = (inside.display().to_string(), base.display().to_string());
    assert!(
        failure
            .stderr
            .contains(&format!("mount point {i} is inside {b},")),
        "the message must name {i} and {b}:\n{}",
        failure.stderr
    );

    let mount = Mount::start(&template, &dir.join("mnt"), &[]);
    let names = dir_names(&mount.path().join("alice/INBOX")).expect("listing alice's INBOX");
    assert_eq!(names.len(), 1, "{names:?}");
    assert_no_panic(&mount.stop());
}

/// A message Dovecot's zlib plugin compressed (gz, bz2) in a Maildir is decoded, never
/// called "truncated or replaced" (its size differs from its name's S=); an uncompressed
/// one beside it reads. (tests/compressed.rs covers every algorithm and format.)
#[test]
fn a_compressed_maildir_message_is_decoded_not_called_truncated() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_compressed");
    let dovecot = Dovecot::start_with_settings(
        &dir,
        Layout::MaildirPlusPlus,
        &["mail_plugins = $mail_plugins zlib"],
    );
    let bob = dovecot.user("bob");
    let plain = bob.save("INBOX", &email(1, "Plain", "stored as is\n"));
    let body = "compressible line\n".repeat(200);
    let mut compressed = Vec::new();
    for algo in ["gz", "bz2"] {
        // zlib_save applies to saves from the next doveadm process on.
        let setting = format!("plugin/zlib_save={algo}");
        let uid = bob.status("INBOX").uidnext;
        bob.save_opts(
            &[&setting],
            "INBOX",
            &email(2, &format!("Packed {algo}"), &body),
        );
        let file = message_file(&bob, "INBOX", uid);
        assert!(
            fs::metadata(&file).unwrap().len() < body.len() as u64,
            "Dovecot did not compress {file:?}"
        );
        compressed.push((algo, uid));
    }
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    assert!(fs::read(mount.message("INBOX", plain)).is_ok());
    for (algo, uid) in &compressed {
        let got = fs::read(mount.message("INBOX", *uid));
        assert_eq!(
            got.as_ref().ok(),
            Some(&bob.text("INBOX", *uid)),
            "{algo}: {:?}",
            got.as_ref().map(|b| b.len())
        );
    }
    let log = mount.stop();
    assert!(!log.contains("truncated or replaced"), "{log}");
    assert_no_panic(&log);
}

/// A message Dovecot's mail_crypt plugin encrypted (global EC keys) is listed and gives
/// EIO on reading, with a log line calling it encrypted (mailfs holds no key), never
/// "truncated or replaced" or corrupt.
#[test]
fn an_encrypted_maildir_message_is_named_encrypted() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("bad_encrypted");
    let settings = mail_crypt_settings(&dir.mkdir("keys"));
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let dovecot = Dovecot::start_with_settings(&dir, Layout::MaildirPlusPlus, &settings);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Sealed", "for the key holder only\n"));
    let file = message_file(&bob, "INBOX", uid);
    let head = fs::read(&file).unwrap();
    assert!(
        head.starts_with(b"CRYPTED"),
        "Dovecot did not encrypt {file:?}"
    );
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let listed = list(&mount.mailbox("INBOX")).expect("INBOX lists");
    assert!(listed.contains(&format!("{uid}.eml")), "{listed:?}");
    let r = fs::read(mount.message("INBOX", uid));
    assert_eq!(
        r.as_ref().err().and_then(|e| e.raw_os_error()),
        Some(libc::EIO),
        "{:?}",
        r.map(|b| b.len())
    );
    let log = mount.stop();
    assert!(
        log.contains("encrypted (Dovecot's mail_crypt plugin)"),
        "no line calls the message encrypted:\n{log}"
    );
    assert!(!log.contains("truncated or replaced"), "{log}");
    assert_no_panic(&log);
}
