//! Mounted Maildir stores compared with Dovecot: every mailbox, every message, every
//! attribute.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::compare::{assert_message_matches, assert_mount_matches_dovecot};
use crate::util::corpus::{SourceMaildir, email, new_and_cur, populate_varied, write_with_mtime};
use crate::util::dovecot::{Dovecot, Layout};
use crate::util::fsx::{dir_names, errno, errno_name, getxattr, listxattr, xattr_string};
use crate::util::mount::Mount;
use crate::util::{TestDir, assert_bytes_eq, chown_recursive, wait_for};

/// Builds the varied store in `layout`, mounts it, checks the cases one by one, then
/// compares everything with doveadm.
fn varied_store_matches_dovecot(test: &str, layout: Layout) {
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    let varied = populate_varied(&bob, &dir.mkdir("scratch"));
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);

    // The tree: nested, non-ASCII (UTF-8, not mUTF-7), a parent that is no mailbox.
    let top = dir_names(mount.path()).expect("listing the mount root");
    let expected_top: BTreeSet<String> = [
        "INBOX",
        "Work",
        "Archive",
        "Ünïcode & more",
        "日本語 📧 Post",
        "Empty",
        "Imported",
    ]
    .map(String::from)
    .into();
    assert_eq!(top, expected_top, "top level of the mount");
    assert!(mount.mailbox("Work/Sub").is_dir());
    let parent = dir_names(&mount.mailbox(varied.non_mailbox_parent)).expect("listing Work");
    assert_eq!(
        parent,
        BTreeSet::from(["Sub".to_string()]),
        "a parent that is not a mailbox"
    );
    let archive = dir_names(&mount.mailbox("Archive")).expect("listing Archive");
    assert!(
        archive.contains("2024") && archive.len() == 3,
        "messages and a child: {archive:?}"
    );
    assert_eq!(
        dir_names(&mount.mailbox(varied.empty))
            .expect("listing Empty")
            .len(),
        0
    );

    // Expunged messages are gone; \Deleted-but-not-expunged ones are not.
    for uid in &varied.inbox_expunged {
        let r = fs::metadata(mount.message("INBOX", *uid));
        assert_eq!(
            errno(&r),
            Some(libc::ENOENT),
            "expunged uid {uid}: {}",
            errno_name(errno(&r))
        );
    }
    let deleted = mount.message("INBOX", varied.inbox_deleted);
    assert!(xattr_string(&deleted, "user.mail.flags").contains("\\Deleted"));

    // Awkward bytes come through unchanged.
    let crlf = fs::read(mount.message("INBOX", varied.inbox_crlf)).expect("reading CRLF message");
    assert!(
        crlf.ends_with(b"last line\r\n"),
        "CRLF kept: {:?}",
        crlf.last_chunk::<12>()
    );
    let latin1 = fs::read(mount.message("INBOX", varied.inbox_latin1)).expect("reading Latin-1");
    assert!(
        latin1.windows(4).any(|w| w == b"caf\xe9"),
        "Latin-1 bytes kept"
    );
    let nonl = fs::read(mount.message("INBOX", varied.inbox_no_final_newline)).expect("reading");
    assert!(
        nonl.ends_with(b"the end is near"),
        "nothing appended: {:?}",
        nonl.last_chunk::<4>()
    );

    // Reads at odd offsets and across FUSE request boundaries.
    let large = mount.message("INBOX", varied.inbox_large);
    let whole = bob.text("INBOX", varied.inbox_large);
    let file = fs::File::open(&large).expect("opening the large message");
    for (offset, len) in [
        (0, 1),
        (1, 4095),
        (4095, 2),
        (131_071, 3),
        (200_000, 70_000),
    ] {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset as u64).expect("pread");
        assert_bytes_eq(
            &buf,
            &whole[offset..offset + len],
            &format!("pread({offset}, {len})"),
        );
    }
    let mut tail = [0u8; 100];
    let n = file
        .read_at(&mut tail, whole.len() as u64 - 10)
        .expect("pread at the end");
    assert_eq!(n, 10, "a read past EOF returns what is left");
    assert_eq!(
        file.read_at(&mut tail, whole.len() as u64 + 5)
            .expect("pread past EOF"),
        0
    );
    drop(file);

    // Mailbox directories carry the mailbox xattrs, messages the message xattrs only.
    assert!(getxattr(&mount.mailbox("INBOX"), "user.mailbox.guid").is_ok());
    assert_eq!(
        errno(&getxattr(&large, "user.nonexistent")),
        Some(libc::ENODATA)
    );

    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert_eq!(compared.mailboxes, varied.mailboxes.len());
    assert!(compared.messages >= 20, "{compared:?}");
    mount.stop();
}

#[test]
fn maildirpp_store_matches_dovecot() {
    require!(Dovecot, Fuse);
    varied_store_matches_dovecot("mount_varied_pp", Layout::MaildirPlusPlus);
}

#[test]
fn fs_layout_store_with_separate_index_and_control_matches_dovecot() {
    require!(Dovecot, Fuse);
    varied_store_matches_dovecot("mount_varied_fs", Layout::FsSeparateIndexControl);
}

/// 5,000 messages imported from a plain Maildir (varied flags, keywords, sizes, received
/// dates; some in new/, some in cur/), three expunged. Every message is compared, bytes too.
#[test]
fn mailbox_with_5000_messages_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mount_5000");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let mut source = SourceMaildir::new(&dir.join("src"), "Big");
    source.keywords(&["$Label1", "work", "todo"]);
    let flag_sets = ["", "S", "FS", "RSa", "Sbc", "T", "DS", "Sabc"];
    for i in 0..5000u64 {
        let body = format!(
            "Message {i} of 5000.\n{}",
            "lorem ipsum dolor sit amet\n".repeat(i as usize % 40)
        );
        let mut msg = email(i as usize, &format!("Bulk {i}"), &body);
        if i % 500 == 7 {
            msg.pop(); // no final newline
        }
        source.add(
            &msg,
            flag_sets[i as usize % flag_sets.len()],
            1_600_000_000 + i * 37,
        );
    }
    bob.import(source.root(), "Big");
    for uid in [1, 2500, 5000] {
        bob.expunge("Big", uid);
    }
    let (new, cur) = new_and_cur(&bob.mailbox_dir("Big"));
    assert!(
        !new.is_empty() && !cur.is_empty(),
        "new/ {} cur/ {}",
        new.len(),
        cur.len()
    );

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &["--threads", "2"]);
    let started = Instant::now();
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    eprintln!("compared {compared:?} in {:?}", started.elapsed());
    assert_eq!(compared.messages, 4997);
    mount.stop();
}

/// A file delivered behind Dovecot's back has no UID yet: it shows as `pending-<base>.eml`
/// (never `<uid>.eml`, no `user.mail.uid`) until Dovecot syncs, then as `<uid>.eml` with the
/// UID Dovecot assigned.
#[test]
fn file_dropped_into_new_is_pending_until_dovecot_assigns_a_uid() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mount_pending");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let u1 = bob.save("INBOX", &email(1, "Saved by Dovecot", "one"));
    let u2 = bob.save("INBOX", &email(2, "Also saved", "two"));
    let inbox = bob.mailbox_dir("INBOX");
    let dropped_new = email(3, "Delivered behind Dovecot's back", "into new/");
    let dropped_cur = email(4, "Dropped into cur", "with flags\r\nand a CRLF");
    let base_new = "1700000001.M1P999.external";
    let base_cur = format!("1700000002.M2P999.external,S={}", dropped_cur.len());
    write_with_mtime(
        &inbox.join("new").join(base_new),
        &dropped_new,
        1_700_000_001,
    );
    write_with_mtime(
        &inbox.join("cur").join(format!("{base_cur}:2,FS")),
        &dropped_cur,
        1_700_000_002,
    );
    let (uid, gid) = dovecot.mail_owner();
    chown_recursive(&inbox, uid, gid);

    let opts = ["--attr-timeout", "0", "--entry-timeout", "0"];
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &opts);
    let mb = mount.mailbox("INBOX");
    let pending_new = format!("pending-{base_new}.eml");
    let pending_cur = format!("pending-{base_cur}.eml");
    let expected: BTreeSet<String> = [
        format!("{u1}.eml"),
        format!("{u2}.eml"),
        pending_new.clone(),
        pending_cur.clone(),
    ]
    .into();
    assert_eq!(
        dir_names(&mb).expect("listing INBOX"),
        expected,
        "before Dovecot syncs"
    );
    for (name, bytes, mtime) in [
        (&pending_new, &dropped_new, 1_700_000_001),
        (&pending_cur, &dropped_cur, 1_700_000_002),
    ] {
        let path = mb.join(name);
        assert_bytes_eq(
            &fs::read(&path).expect("reading a pending file"),
            bytes,
            name,
        );
        let meta = fs::metadata(&path).expect("stat pending");
        assert_eq!(
            (meta.len(), meta.mtime()),
            (bytes.len() as u64, mtime),
            "{name}"
        );
        let uid = getxattr(&path, "user.mail.uid");
        assert_eq!(
            errno(&uid),
            Some(libc::ENODATA),
            "{name} must have no uid: {uid:?}"
        );
        let listed = listxattr(&path).expect("listxattr pending");
        assert!(
            !listed.iter().any(|a| a == "user.mail.uid"),
            "{name}: {listed:?}"
        );
    }

    bob.force_resync("INBOX");
    let uids = bob.uids("INBOX");
    assert_eq!(
        uids.len(),
        4,
        "Dovecot gave the dropped files UIDs: {uids:?}"
    );
    let expected: BTreeSet<String> = uids.iter().map(|u| format!("{u}.eml")).collect();
    wait_for(
        Duration::from_secs(10),
        "the mount to show the UIDs Dovecot assigned",
        || (dir_names(&mb).ok()? == expected).then_some(()),
    );
    for m in bob.fetch("INBOX") {
        assert_message_matches(&mount.message("INBOX", m.uid), &m);
    }
    mount.stop();
}

/// The mount is not empty when the store is a bare path (auto-detected Maildir++).
#[test]
fn bare_path_location_is_detected() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mount_bare_path");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Bare", "path"));
    bob.create_mailbox("Work/Sub");
    bob.save("Work/Sub", &email(2, "Nested", "too"));
    let root: &Path = &bob.mail_root();
    let mount = Mount::start(root.to_str().expect("UTF-8 path"), &dir.join("mnt"), &[]);
    assert!(mount.message("INBOX", uid).is_file());
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert_eq!((compared.mailboxes, compared.messages), (2, 2));
    mount.stop();
}

/// The sample store shipped in tests/fixtures (made by scripts/make-sample-store.sh) mounts
/// and matches Dovecot reading the same files.
#[test]
fn sample_fixture_store_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mount_fixture");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let tar = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-maildir.tar");
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(bob.home())
        .status()
        .expect("running tar");
    assert!(status.success(), "extracting {tar:?}");
    let (uid, gid) = dovecot.mail_owner();
    chown_recursive(&bob.home(), uid, gid);
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert!(
        compared.mailboxes >= 8 && compared.messages >= 20,
        "{compared:?}"
    );
    mount.stop();
}

/// Dovecot caches `date.save` the first time anything fetches it; a later rename (a flag
/// change) moves the file's ctime but not Dovecot's saved date. mailfs must answer from
/// Dovecot's cache as doveadm does, not from ctime.
#[test]
fn saved_date_follows_dovecots_cache_after_a_rename() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("mount_saved_cache");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Saved", "date"));
    let saved = bob.fetch("INBOX")[0].saved;
    wait_for(
        Duration::from_secs(3),
        "the clock to pass the saved second",
        || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            (now.as_secs() as i64 > saved).then_some(())
        },
    );
    bob.flags_add("INBOX", uid, "\\Seen");
    let m = bob.fetch("INBOX").remove(0);
    assert_eq!(m.saved, saved, "Dovecot kept its cached date.save");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    assert_message_matches(&mount.message("INBOX", uid), &m);
    mount.stop();
}

/// 30 keywords on one message, 3 on another: 26 fit in Maildir file names (letters of
/// `dovecot-keywords`), the other 4 live in Dovecot's index alone; the mount shows all of
/// them, in doveadm's order. Also on sdbox and mdbox, where 40 keywords exceed the 32 a
/// fixed-width mask held.
#[test]
fn keywords_beyond_letters_and_machine_words_match_doveadm() {
    require!(Dovecot, Fuse);
    let many = |n: usize| -> String {
        (0..n)
            .map(|i| format!("kw{i:02}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let cases: [(&str, Layout, usize); 3] = [
        ("kw_maildir", Layout::MaildirPlusPlus, 30),
        ("kw_sdbox", crate::util::dovecot::DboxLayout::sdbox(""), 40),
        ("kw_mdbox", crate::util::dovecot::DboxLayout::mdbox(""), 40),
    ];
    for (name, layout, n) in cases {
        let dir = TestDir::new(name);
        let dovecot = Dovecot::start(&dir, layout);
        let bob = dovecot.user("bob");
        let a = bob.save("INBOX", &email(1, "Many", "keywords"));
        let b = bob.save("INBOX", &email(2, "Few", "keywords"));
        bob.flags_add("INBOX", a, &format!("\\Seen {}", many(n)));
        bob.flags_add("INBOX", b, "kw29 kw01 $Label1");
        let flags = bob.fetch_flags("INBOX");
        let kws = flags.iter().find(|(u, _)| *u == a).map(|(_, f)| f.len());
        assert_eq!(
            kws,
            Some(n + 1),
            "{name}: doveadm shows every keyword: {flags:?}"
        );
        let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
        let shown = xattr_string(&mount.message("INBOX", a), "user.mail.flags");
        assert_eq!(
            shown.split(' ').count(),
            n + 1,
            "{name}: the mount shows {shown:?}"
        );
        assert_mount_matches_dovecot(&mount, &bob);
        mount.stop();
    }
}

/// Message files are opened relative to their mailbox's open `cur/` and `new/` (kept
/// between reads); a file renamed by a flag change after they were opened, and a mailbox
/// deleted and created again (new directories), are still read right, each from where it
/// is now.
#[test]
fn reads_follow_renamed_files_and_recreated_mailboxes() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("maildir_reads_follow");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Work");
    let uids: Vec<u32> = (0..3)
        .map(|i| bob.save("Work", &email(i, "Work", "first")))
        .collect();
    bob.select("Work");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let read = |uid: u32| fs::read(mount.message("Work", uid)).expect("reading a message");
    assert_bytes_eq(
        &read(uids[0]),
        &bob.text("Work", uids[0]),
        "before any change",
    );

    bob.flags_add("Work", uids[1], "\\Flagged");
    assert_bytes_eq(
        &read(uids[1]),
        &bob.text("Work", uids[1]),
        "after its rename",
    );

    bob.adm(&[], &["mailbox", "delete"], &["Work"]);
    bob.create_mailbox("Work");
    let again = bob.save("Work", &email(7, "Recreated", "second"));
    bob.select("Work");
    let expected = bob.text("Work", again);
    wait_for(
        Duration::from_secs(5),
        "the recreated mailbox's message",
        || {
            fs::read(mount.message("Work", again))
                .ok()
                .filter(|b| *b == expected)
        },
    );
    mount.stop();
}
