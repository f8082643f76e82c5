//! Mounted sdbox and mdbox stores compared with Dovecot: every mailbox, every message,
//! every attribute; ALT storage, index and control files elsewhere, the other location
//! keys; `doveadm purge` and `altmove` under a reader; damaged dbox files; `mailfs ls/cat`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::util::compare::{assert_message_matches, assert_mount_matches_dovecot};
use crate::util::corpus::{
    SourceMaildir, email, form_feeds, large, latin1, no_final_newline, populate_varied,
};
use crate::util::dbox::{self, DboxMessage};
use crate::util::dovecot::{DboxLayout, Dovecot, Layout, Message, User};
use crate::util::fsx::{dir_names, errno, errno_name};
use crate::util::mount::{Mount, mailfs, mount_must_fail};
use crate::util::{TestDir, assert_bytes_eq, chown_recursive, show};

// ---------------------------------------------------------------------------------------
// Helpers

/// What [`populate_small`] built.
struct Small {
    /// INBOX UIDs still present, ascending.
    inbox: Vec<u32>,
    inbox_large: u32,
    inbox_latin1: u32,
    inbox_no_final_newline: u32,
    inbox_expunged: u32,
}

/// A small store with what a dbox reader must get right: nested and non-ASCII mailboxes,
/// flags and keywords, an expunged message, 8-bit bytes, no final newline, form feeds, a
/// message > 64 KiB.
fn populate_small(user: &User<'_>) -> Small {
    user.create_mailbox("Work/Sub");
    user.create_mailbox("Ünïcode & more");
    let plain = user.save("INBOX", &email(1, "Plain", "Hello Bob.\nSecond line."));
    let inbox_latin1 = user.save("INBOX", &latin1());
    let inbox_no_final_newline = user.save("INBOX", &no_final_newline());
    let inbox_large = user.save("INBOX", &large(100));
    let inbox_expunged = user.save("INBOX", &email(5, "Doomed", "gone soon"));
    let feeds = user.save("INBOX", &form_feeds());
    let last = user.save("INBOX", &email(7, "Last", "the last one"));
    user.flags_add("INBOX", plain, "\\Seen $Label1 work");
    user.flags_add("INBOX", inbox_latin1, "\\Flagged \\Answered");
    user.flags_add("INBOX", inbox_large, "\\Deleted todo");
    user.flags_add("INBOX", feeds, "\\Draft $Label1 later");
    user.expunge("INBOX", inbox_expunged);
    let w = user.save("Work/Sub", &email(10, "Quarterly", "Numbers."));
    user.save(
        "Work/Sub",
        &email(11, "Re: Quarterly", "> Numbers\nThanks."),
    );
    user.save("Work/Sub", &email(12, "Lunch?", "12:30"));
    user.flags_add("Work/Sub", w, "\\Seen project-x");
    user.save(
        "Ünïcode & more",
        &email(13, "Grüße aus Köln", "Schöne Grüße! ✉"),
    );
    Small {
        inbox: vec![
            plain,
            inbox_latin1,
            inbox_no_final_newline,
            inbox_large,
            feeds,
            last,
        ],
        inbox_large,
        inbox_latin1,
        inbox_no_final_newline,
        inbox_expunged,
    }
}

/// Every message of every mailbox, as doveadm reports it now (fetches `date.saved`).
fn fetch_all(user: &User<'_>) -> BTreeMap<String, Vec<Message>> {
    user.statuses()
        .into_keys()
        .map(|mb| {
            let messages = user.fetch(&mb);
            (mb, messages)
        })
        .collect()
}

/// Every `m.N` of an mdbox store (primary, then ALT) with the messages it holds.
fn m_files(user: &User<'_>) -> Vec<(PathBuf, Vec<DboxMessage>)> {
    user.storage_dirs()
        .iter()
        .flat_map(|d| dbox::numbered_files(d, "m."))
        .map(|p| {
            let messages = dbox::read(&p);
            (p, messages)
        })
        .collect()
}

/// The file (and its messages) holding the message with `guid`.
fn m_file_of<'a>(
    files: &'a [(PathBuf, Vec<DboxMessage>)],
    guid: &str,
) -> &'a (PathBuf, Vec<DboxMessage>) {
    files
        .iter()
        .find(|(_, ms)| ms.iter().any(|m| m.guid == guid))
        .unwrap_or_else(|| panic!("no m.N holds guid {guid}"))
}

fn names(paths: &[PathBuf]) -> BTreeSet<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[track_caller]
fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "mailfs panicked:\n{log}");
}

/// True if some log line names `file`: its full path, or its directory and its name (a
/// whole word: `m.1` does not match `m.12`).
fn log_names_file(log: &str, file: &Path) -> bool {
    let full = file.display().to_string();
    let dir = file.parent().expect("parent").display().to_string();
    let name = file
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let word = |line: &str| {
        line.match_indices(&name).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + name.len()..].chars().next();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '.')
                && !after.is_some_and(|c| c.is_ascii_digit())
        })
    };
    log.lines()
        .any(|l| l.contains(&full) || (l.contains(&dir) && word(l)))
}

/// `stat` and `read` of a message file both fail with EIO.
#[track_caller]
fn assert_eio(path: &Path, what: &str) {
    let r = fs::metadata(path);
    assert_eq!(
        errno(&r),
        Some(libc::EIO),
        "stat of {what} ({}): {}",
        path.display(),
        errno_name(errno(&r))
    );
    let r = fs::read(path);
    assert_eq!(
        errno(&r),
        Some(libc::EIO),
        "read of {what} ({}): {}",
        path.display(),
        errno_name(errno(&r))
    );
}

/// A message whose metadata block is damaged after Dovecot cached its values: listed from
/// the cache (stat gives the size doveadm reports, as `doveadm fetch size.physical`
/// still does), and reading it gives EIO (the damage is found when the file is opened).
#[track_caller]
fn assert_listed_read_eio(path: &Path, m: &Message, what: &str) {
    let st = fs::metadata(path).unwrap_or_else(|e| panic!("stat of {what} ({path:?}): {e}"));
    assert_eq!(st.len(), m.size, "size of {what}");
    let r = fs::read(path);
    assert_eq!(
        errno(&r),
        Some(libc::EIO),
        "read of {what} ({}): {}",
        path.display(),
        errno_name(errno(&r))
    );
}

/// Mounts `location`, compares everything with doveadm, and returns the mount.
#[track_caller]
fn mount_and_compare(dir: &TestDir, user: &User<'_>, location: &str, min: usize) -> Mount {
    let mount = Mount::start(location, &dir.join("mnt"), &[]);
    let compared = assert_mount_matches_dovecot(&mount, user);
    assert!(
        compared.messages >= min,
        "compared only {compared:?} (want >= {min} messages)"
    );
    mount
}

/// The bytes of the large message at odd offsets and across FUSE request boundaries.
#[track_caller]
fn assert_preads_match(path: &Path, whole: &[u8]) {
    assert!(whole.len() > 64 * 1024, "not a large message");
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("opening {path:?}: {e}"));
    let n = whole.len();
    for (offset, len) in [
        (0, 1),
        (1, 4095),
        (4095, 2),
        (65_535, 3),
        (70_000, n - 70_000),
    ] {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset as u64)
            .unwrap_or_else(|e| panic!("pread({offset}, {len}) of {path:?}: {e}"));
        assert_bytes_eq(
            &buf,
            &whole[offset..offset + len],
            &format!("pread({offset}, {len})"),
        );
    }
    let mut tail = [0u8; 100];
    let got = file
        .read_at(&mut tail, n as u64 - 10)
        .expect("pread at the end");
    assert_eq!(got, 10, "a read across EOF returns what is left");
}

// ---------------------------------------------------------------------------------------
// 1, 2: the varied store

/// The dbox-specific checks on the varied store, then the full comparison.
fn varied_store_matches_dovecot(bob: &User<'_>, mount: &Mount) {
    let varied_top: BTreeSet<String> = [
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
    assert_eq!(
        dir_names(mount.path()).expect("listing the mount root"),
        varied_top,
        "top level of the mount"
    );
    // On disk the names are mUTF-7; the mount shows UTF-8.
    let on_disk = dir_names(&bob.mail_root().join("mailboxes")).expect("listing mailboxes/");
    assert!(
        on_disk.contains("&ANw-n&AO8-code &- more"),
        "mUTF-7 on disk: {on_disk:?}"
    );
    assert_eq!(
        dir_names(&mount.mailbox("Work")).expect("listing Work"),
        BTreeSet::from(["Sub".to_string()]),
        "a parent that is not a mailbox"
    );
    mount_checks_common(bob, mount);
    let compared = assert_mount_matches_dovecot(mount, bob);
    assert_eq!(compared.mailboxes, 8, "{compared:?}");
    assert!(compared.messages >= 20, "{compared:?}");
}

/// Expunged messages are gone; 8-bit bytes, no final newline and a large message come
/// through as doveadm gives them (dbox stores LF even for a message saved with CRLF).
fn mount_checks_common(bob: &User<'_>, mount: &Mount) {
    let inbox = bob.fetch("INBOX");
    let status = bob.status("INBOX");
    let uids: BTreeSet<u32> = inbox.iter().map(|m| m.uid).collect();
    for uid in 1..status.uidnext {
        if !uids.contains(&uid) {
            let r = fs::metadata(mount.message("INBOX", uid));
            assert_eq!(
                errno(&r),
                Some(libc::ENOENT),
                "expunged uid {uid}: {}",
                errno_name(errno(&r))
            );
        }
    }
    assert!(
        uids.len() < (status.uidnext - 1) as usize,
        "nothing expunged"
    );
    let large = inbox
        .iter()
        .find(|m| m.size > 64 * 1024)
        .expect("a large message");
    assert_preads_match(&mount.message("INBOX", large.uid), &large.text);
    let eight_bit = inbox
        .iter()
        .find(|m| m.text.windows(4).any(|w| w == b"caf\xe9"))
        .expect("a Latin-1 message");
    assert_bytes_eq(
        &fs::read(mount.message("INBOX", eight_bit.uid)).expect("reading Latin-1"),
        &eight_bit.text,
        "Latin-1 message",
    );
    let nonl = inbox
        .iter()
        .find(|m| m.text.ends_with(b"the end is near"))
        .expect("a message without a final newline");
    let bytes = fs::read(mount.message("INBOX", nonl.uid)).expect("reading");
    assert!(
        bytes.ends_with(b"the end is near"),
        "nothing appended: {:?}",
        bytes.last_chunk::<4>()
    );
    assert!(
        inbox.iter().all(|m| !m.text.contains(&b'\r')),
        "dbox stores LF only"
    );
}

#[test]
fn sdbox_varied_store_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_varied_sdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::sdbox(""));
    let bob = dovecot.user("bob");
    populate_varied(&bob, &dir.mkdir("scratch"));
    let u_files = dbox::numbered_files(&bob.mailbox_dir("INBOX"), "u.");
    assert!(u_files.len() >= 8, "INBOX u.N files: {u_files:?}");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    varied_store_matches_dovecot(&bob, &mount);
    mount.stop();
}

/// mdbox: the varied store, messages spread over several `m.N` files (several messages
/// each), copies that share one map_uid between mailboxes, expunges and a purge that
/// rewrote files.
#[test]
fn mdbox_varied_store_with_copies_and_purge_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_varied_mdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::mdbox(""));
    let bob = dovecot.user("bob");
    populate_varied(&bob, &dir.mkdir("scratch"));
    // More files: small rotation, several messages per file.
    for n in 0..9 {
        bob.save_opts(
            &["mdbox_rotate_size=2k"],
            "Archive",
            &email(200 + n, &format!("Rotated {n}"), "short"),
        );
    }
    let archive_before = bob.uids("Archive");
    bob.copy_set("Archive", "INBOX", "1:3");
    bob.copy_set(
        "Work/Sub",
        "Archive",
        &archive_before[..3]
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    let shared: Vec<(u32, u32)> = bob.fetch_refcounts("INBOX");
    assert!(
        shared.iter().filter(|(_, r)| *r == 2).count() >= 2,
        "copies share map_uids: {shared:?}"
    );
    let files_before = m_files(&bob);
    // Expunge a copied message (still referenced from Archive) and plain ones, then purge.
    bob.expunge("INBOX", 1);
    let archive_now = bob.uids("Archive");
    bob.expunge_set(
        &[],
        "Archive",
        &format!("{},{}", archive_now[4], archive_now[6]),
    );
    // Purge into small files too, so that several files of several messages remain.
    bob.adm(&["mdbox_rotate_size=4k"], &["purge"], &[]);
    let files_after = m_files(&bob);
    let paths =
        |f: &[(PathBuf, Vec<DboxMessage>)]| f.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_ne!(
        names(&paths(&files_before)),
        names(&paths(&files_after)),
        "purge rewrote no m.N file"
    );
    assert!(
        files_after.len() >= 3,
        "m.N files: {:?}",
        paths(&files_after)
    );
    assert!(
        files_after.iter().any(|(_, ms)| ms.len() >= 3),
        "no m.N holds several messages: {:?}",
        files_after
            .iter()
            .map(|(p, ms)| (p.clone(), ms.len()))
            .collect::<Vec<_>>()
    );
    let refcounts = bob.fetch_refcounts("INBOX");
    assert!(
        refcounts.iter().any(|(_, r)| *r == 2),
        "INBOX still shares a map_uid with Archive: {refcounts:?}"
    );

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    // A shared map_uid: the same bytes and GUID through both mailboxes.
    let inbox = bob.fetch("INBOX");
    let archive = bob.fetch("Archive");
    let copy = archive
        .iter()
        .find(|a| inbox.iter().any(|i| i.guid == a.guid))
        .expect("a message copied from INBOX into Archive");
    let original = inbox.iter().find(|i| i.guid == copy.guid).unwrap();
    assert_message_matches(&mount.message("Archive", copy.uid), copy);
    assert_message_matches(&mount.message("INBOX", original.uid), original);
    // The copy whose INBOX original was expunged (uid 1) is still there.
    let orphan = archive
        .iter()
        .find(|a| {
            !inbox.iter().any(|i| i.guid == a.guid) && a.text.starts_with(b"Return-Path: <sender1@")
        })
        .expect("the copy of expunged INBOX uid 1 survives in Archive");
    assert_message_matches(&mount.message("Archive", orphan.uid), orphan);
    varied_store_matches_dovecot(&bob, &mount);
    mount.stop();
}

// ---------------------------------------------------------------------------------------
// 2b: listing from the index and the cache, as doveadm does

/// The `user.mailfs.status` count `key`.
fn status_count(mount: &Mount, key: &str) -> u64 {
    let raw = crate::util::fsx::getxattr(mount.path(), "user.mailfs.status").expect("status");
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no count {key} in status:\n{text}"))
}

/// `ls -l` of every mailbox of the mount: each message's attributes; the number listed.
fn list_all(mount: &Mount, user: &User<'_>) -> usize {
    let mut listed = 0;
    for mailbox in user.statuses().into_keys() {
        let dir = mount.mailbox(&mailbox);
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.expect("entry").path();
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            listed += 1;
        }
    }
    listed
}

/// A store whose cache Dovecot filled (`doveadm fetch` of what a view presents) is
/// listed without reading a single message file (`listing_file_reads` stays 0), and the
/// mount still equals doveadm in everything; one nobody fetched from is read from its
/// files. Messages in ALT storage too.
fn listing_uses_the_cache(dir: &TestDir, layout: Layout) {
    let dovecot = Dovecot::start(dir, layout);
    let bob = dovecot.user("bob");
    let small = populate_small(&bob);
    let set = format!("{},{}", small.inbox[0], small.inbox[1]);
    bob.adm(&[], &["altmove"], &["mailbox", "INBOX", "uid", &set]);

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let listed = list_all(&mount, &bob);
    assert!(listed >= 10, "listed {listed}");
    let cold = status_count(&mount, "listing_file_reads");
    assert!(
        cold > 0,
        "a store nobody fetched from: its values must come from the files"
    );
    mount.stop();

    for mailbox in bob.statuses().into_keys() {
        bob.adm(
            &[],
            &["fetch"],
            &[
                "guid date.received date.saved size.physical size.virtual",
                "mailbox",
                &mailbox,
                "all",
            ],
        );
    }
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    assert_eq!(list_all(&mount, &bob), listed);
    assert_eq!(
        status_count(&mount, "listing_file_reads"),
        0,
        "listing a store whose cache has every value read message files"
    );
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert!(compared.messages >= 10, "compared {compared:?}");
    mount.stop();
}

#[test]
fn sdbox_listing_with_filled_cache_reads_no_message_file() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_listing_cache_sdbox");
    listing_uses_the_cache(&dir, DboxLayout::sdbox(":ALT=~/alt"));
}

#[test]
fn mdbox_listing_with_filled_cache_reads_no_message_file() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_listing_cache_mdbox");
    listing_uses_the_cache(&dir, DboxLayout::mdbox(":ALT=~/alt"));
}

// ---------------------------------------------------------------------------------------
// 3: ALT storage

#[test]
fn sdbox_with_alt_storage_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_alt_sdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::sdbox(":ALT=~/alt"));
    let bob = dovecot.user("bob");
    let small = populate_small(&bob);
    let moved = &small.inbox[..3];
    let set = moved
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    bob.adm(&[], &["altmove"], &["mailbox", "INBOX", "uid", &set]);
    bob.adm(&[], &["altmove"], &["mailbox", "Work/Sub", "all"]);
    let alt: BTreeSet<String> = names(&dbox::numbered_files(&bob.alt_mailbox_dir("INBOX"), "u."));
    let primary: BTreeSet<String> = names(&dbox::numbered_files(&bob.mailbox_dir("INBOX"), "u."));
    for uid in &small.inbox {
        let name = format!("u.{uid}");
        let in_alt = moved.contains(uid);
        assert_eq!(
            (alt.contains(&name), primary.contains(&name)),
            (in_alt, !in_alt),
            "{name}: ALT {alt:?}, primary {primary:?}"
        );
    }
    assert_eq!(
        dbox::numbered_files(&bob.alt_mailbox_dir("Work/Sub"), "u.").len(),
        3
    );
    assert!(dbox::numbered_files(&bob.mailbox_dir("Work/Sub"), "u.").is_empty());

    let mount = mount_and_compare(&dir, &bob, &bob.location(), 10);
    mount_checks_common(&bob, &mount);
    // Moved back while mounted: still the same message.
    bob.adm(
        &[],
        &["altmove", "-r"],
        &["mailbox", "INBOX", "uid", &moved[0].to_string()],
    );
    assert!(
        bob.mailbox_dir("INBOX")
            .join(format!("u.{}", moved[0]))
            .exists()
    );
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}

#[test]
fn mdbox_with_alt_storage_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_alt_mdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::mdbox(":ALT=~/alt"));
    let bob = dovecot.user("bob");
    let small = populate_small(&bob);
    let moved = &small.inbox[..3];
    let set = moved
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    bob.adm(&[], &["altmove"], &["mailbox", "INBOX", "uid", &set]);
    bob.adm(&[], &["altmove"], &["mailbox", "Work/Sub", "all"]);
    let files = m_files(&bob);
    let alt_storage = bob.alt_root().unwrap().join("storage");
    let inbox = bob.fetch("INBOX");
    for m in &inbox {
        let (path, _) = m_file_of(&files, &m.guid);
        assert_eq!(
            path.starts_with(&alt_storage),
            moved.contains(&m.uid),
            "INBOX uid {} is in {path:?}",
            m.uid
        );
    }
    assert!(
        files
            .iter()
            .any(|(p, ms)| p.starts_with(&alt_storage) && ms.len() >= 3),
        "several messages in one ALT m.N"
    );

    let mount = mount_and_compare(&dir, &bob, &bob.location(), 10);
    mount_checks_common(&bob, &mount);
    // `altmove -r` while mounted: Dovecot rewrites the m.N holding the message (into a
    // new file; for mdbox, where is up to Dovecot's purge) and unlinks the old one.
    let guid = &inbox.iter().find(|m| m.uid == moved[0]).unwrap().guid;
    let old_file = m_file_of(&files, guid).0.clone();
    bob.adm(
        &[],
        &["altmove", "-r"],
        &["mailbox", "INBOX", "uid", &moved[0].to_string()],
    );
    bob.purge();
    let files = m_files(&bob);
    let new_file = &m_file_of(&files, guid).0;
    assert!(
        !old_file.exists() && *new_file != old_file,
        "uid {} stayed in {old_file:?}",
        moved[0]
    );
    assert_mount_matches_dovecot(&mount, &bob);
    mount.stop();
}

// ---------------------------------------------------------------------------------------
// 4: INDEX= and CONTROL= elsewhere, and the other location keys

#[test]
fn sdbox_with_index_and_control_elsewhere_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_index_sdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::sdbox(":INDEX=~/index:CONTROL=~/control"));
    let bob = dovecot.user("bob");
    populate_small(&bob);
    assert!(
        bob.index_dir("Work/Sub")
            .join("dovecot.index.log")
            .is_file()
    );
    assert!(
        !bob.mailbox_dir("Work/Sub")
            .join("dovecot.index.log")
            .exists()
    );
    assert!(bob.index_dir("INBOX").starts_with(bob.home().join("index")));
    assert!(bob.home().join("control/dovecot-uidvalidity").is_file());
    let mount = mount_and_compare(&dir, &bob, &bob.location(), 10);
    mount_checks_common(&bob, &mount);
    mount.stop();
}

/// With `INDEX=` the mdbox map index moves to `INDEX/storage/`; the `m.N` stay in
/// `ROOT/storage/`.
#[test]
fn mdbox_with_index_and_control_elsewhere_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_index_mdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::mdbox(":INDEX=~/index:CONTROL=~/control"));
    let bob = dovecot.user("bob");
    populate_small(&bob);
    let map = bob.map_index_dir();
    assert_eq!(map, bob.home().join("index/storage"));
    assert!(map.join("dovecot.map.index.log").is_file());
    let storage = bob.mail_root().join("storage");
    let in_storage = dir_names(&storage).expect("listing storage/");
    assert!(
        in_storage.iter().all(|n| !n.starts_with("dovecot.map")),
        "map index beside the m.N: {in_storage:?}"
    );
    assert!(!dbox::numbered_files(&storage, "m.").is_empty());
    assert!(bob.index_dir("INBOX").join("dovecot.index.log").is_file());
    let mount = mount_and_compare(&dir, &bob, &bob.location(), 10);
    mount_checks_common(&bob, &mount);
    mount.stop();
}

/// The remaining keys together: `LAYOUT=fs`, `DIRNAME=`, `MAILBOXDIR=`, `INDEX=` with
/// `ITERINDEX`, `CONTROL=`, `ALT=` with `ALTNOCHECK`, `VOLATILEDIR=`, `LISTINDEX=`
/// (`INDEXPVT=` has its own test).
fn location_keys_are_honoured(test: &str, layout: Layout) {
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    let small = populate_small(&bob);
    let set = small.inbox[..2]
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    bob.adm(&[], &["altmove"], &["mailbox", "INBOX", "uid", &set]);
    let work = bob.mail_root().join("boxes/Work/Sub/mail");
    assert!(work.is_dir(), "DIRNAME and MAILBOXDIR used: no {work:?}");
    assert!(
        bob.home()
            .join("idx/boxes/INBOX/dovecot.index.log")
            .is_file()
    );
    assert!(bob.home().join("idx/list.idx.log").is_file());
    let mount = mount_and_compare(&dir, &bob, &bob.location(), 10);
    mount_checks_common(&bob, &mount);
    mount.stop();
}

const ALL_KEYS: &str = ":LAYOUT=fs:DIRNAME=mail:MAILBOXDIR=boxes:INDEX=~/idx:ITERINDEX\
    :CONTROL=~/ctl:ALT=~/alt:ALTNOCHECK:VOLATILEDIR=~/volatile:LISTINDEX=list.idx";

#[test]
fn sdbox_location_keys_are_honoured() {
    require!(Dovecot, Fuse);
    location_keys_are_honoured("dbox_keys_sdbox", DboxLayout::sdbox(ALL_KEYS));
}

#[test]
fn mdbox_location_keys_are_honoured() {
    require!(Dovecot, Fuse);
    location_keys_are_honoured("dbox_keys_mdbox", DboxLayout::mdbox(ALL_KEYS));
}

/// `INBOX=`: Dovecot keeps INBOX elsewhere (sdbox: its `u.N` and index straight in that
/// directory; mdbox: its index there).
fn inbox_elsewhere_matches_dovecot(test: &str, layout: Layout) {
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    populate_small(&bob);
    let inbox = bob.home().join("inbox");
    assert!(
        inbox.join("dovecot.index.log").is_file(),
        "Dovecot put INBOX's index in {inbox:?}"
    );
    assert!(!bob.mail_root().join("mailboxes/INBOX").exists());
    let mount = mount_and_compare(&dir, &bob, &bob.location(), 10);
    mount.stop();
}

#[test]
fn sdbox_with_inbox_elsewhere_matches_dovecot() {
    require!(Dovecot, Fuse);
    inbox_elsewhere_matches_dovecot("dbox_inbox_sdbox", DboxLayout::sdbox(":INBOX=~/inbox"));
}

#[test]
fn mdbox_with_inbox_elsewhere_matches_dovecot() {
    require!(Dovecot, Fuse);
    inbox_elsewhere_matches_dovecot("dbox_inbox_mdbox", DboxLayout::mdbox(":INBOX=~/inbox"));
}

/// `INDEXPVT=`, even for the private namespace: Dovecot then keeps `\Seen` in the private
/// index (`<INDEXPVT>/mailboxes/<name>/dovecot.index.pvt.log`), and doveadm reports it.
#[test]
fn sdbox_with_private_index_matches_dovecot() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_indexpvt");
    let dovecot = Dovecot::start(&dir, DboxLayout::sdbox(":INDEXPVT=~/pvt"));
    let bob = dovecot.user("bob");
    populate_small(&bob);
    let pvt = bob.home().join("pvt/mailboxes/INBOX/dovecot.index.pvt.log");
    assert!(pvt.is_file(), "no {pvt:?}");
    let mount = mount_and_compare(&dir, &bob, &bob.location(), 10);
    mount.stop();
}

/// A bare path is detected: `storage/` means mdbox, `mailboxes/` sdbox.
#[test]
fn bare_dbox_paths_are_detected() {
    require!(Dovecot, Fuse);
    for (n, layout) in [DboxLayout::sdbox(""), DboxLayout::mdbox("")]
        .into_iter()
        .enumerate()
    {
        let dir = TestDir::new(&format!("dbox_bare_{n}"));
        let dovecot = Dovecot::start(&dir, layout);
        let bob = dovecot.user("bob");
        bob.save("INBOX", &email(1, "Bare", "path"));
        bob.create_mailbox("Work/Sub");
        bob.save("Work/Sub", &email(2, "Nested", "too"));
        let bare = bob.mail_root().display().to_string();
        let mount = Mount::start(&bare, &dir.join("mnt"), &[]);
        let compared = assert_mount_matches_dovecot(&mount, &bob);
        assert_eq!((compared.mailboxes, compared.messages), (2, 2), "{bare}");
        mount.stop();
        for mailbox in [None, Some("INBOX"), Some("Work/Sub")] {
            assert_eq!(
                ok_stdout(&ls(&bare, mailbox), "mailfs ls BARE"),
                ok_stdout(&ls(&bob.location(), mailbox), "mailfs ls LOCATION"),
                "{bare} {mailbox:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5: purge and altmove under a reader

/// mdbox with ALT, 150 messages over many `m.N`. A file opened before a purge keeps
/// reading its bytes; then, while doveadm keeps moving messages between primary and ALT,
/// expunging and purging, two readers read every message again and again: each read gives
/// exactly the bytes doveadm gave before, or ENOENT (ESTALE on a read) for an expunged
/// message. Never other bytes, never another error.
#[test]
fn mdbox_purge_and_altmove_under_a_streaming_reader() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_churn");
    let dovecot = Dovecot::start(&dir, DboxLayout::mdbox(":ALT=~/alt"));
    let bob = dovecot.user("bob");
    let boxes = ["INBOX", "Work", "Archive"];
    for (b, mailbox) in boxes.iter().enumerate() {
        if *mailbox != "INBOX" {
            bob.create_mailbox(mailbox);
        }
        // A LAYOUT=fs source keeps INBOX in its root, other mailboxes below it.
        let src_root = dir.join(format!("src{b}"));
        let mut source = SourceMaildir::new(&src_root, if b == 0 { "" } else { mailbox });
        for i in 0..50usize {
            let n = b * 100 + i;
            let msg = if i % 16 == 3 {
                let mut m = email(n, &format!("Large {n}"), "see below");
                m.extend_from_slice(&large(70 + i));
                m
            } else {
                email(
                    n,
                    &format!("Message {n}"),
                    &format!("body of {n}\n").repeat(1 + i % 40),
                )
            };
            source.add(
                &msg,
                if i % 3 == 0 { "S" } else { "" },
                1_600_000_000 + n as u64,
            );
        }
        let (uid, gid) = dovecot.mail_owner();
        chown_recursive(&src_root, uid, gid);
        let src = format!("maildir:{}:LAYOUT=fs", src_root.display());
        bob.adm(
            &["mdbox_rotate_size=16k"],
            &["import"],
            &["-s", &src, "", "mailbox", mailbox, "all"],
        );
    }
    let expected: Arc<BTreeMap<(String, u32), Vec<u8>>> = Arc::new(
        boxes
            .iter()
            .flat_map(|mb| {
                bob.fetch(mb)
                    .into_iter()
                    .map(move |m| ((mb.to_string(), m.uid), m.text))
            })
            .collect(),
    );
    assert_eq!(expected.len(), 150);
    let files = m_files(&bob);
    assert!(files.len() >= 10, "{} m.N files", files.len());

    let opts = [
        "--attr-timeout",
        "0",
        "--entry-timeout",
        "0",
        "--threads",
        "4",
    ];
    let mount = Arc::new(Mount::start(&bob.location(), &dir.join("mnt"), &opts));

    // With held opens (`--open-mode held`), a file opened before the purge that unlinks
    // its m.N keeps reading its bytes. One large message that altmove + purge rewrite
    // elsewhere; two that are expunged and purged, one read with exact-length preads, one
    // read to EOF the way `cat` reads. The same three opened through the default mount
    // (kernel opens) give their bytes or ESTALE, never other bytes.
    let held_opts: Vec<&str> = opts
        .iter()
        .copied()
        .chain(["--open-mode", "held"])
        .collect();
    let held = Mount::start(&bob.location(), &dir.join("mnt-held"), &held_opts);
    let inbox = bob.fetch("INBOX");
    let big = inbox
        .iter()
        .find(|m| m.size > 64 * 1024)
        .expect("a large message");
    let small: Vec<&Message> = inbox.iter().filter(|m| m.size < 4096).take(2).collect();
    let open = |mount: &Mount, m: &Message| {
        let mut f = fs::File::open(mount.message("INBOX", m.uid))
            .unwrap_or_else(|e| panic!("opening INBOX uid {}: {e}", m.uid));
        let mut head = vec![0u8; 10];
        f.read_exact(&mut head).expect("reading the head");
        (f, head)
    };
    let (mut open_big, big_head) = open(&held, big);
    let (pread_small, _) = open(&held, small[0]);
    let (mut cat_small, cat_head) = open(&held, small[1]);
    let kernel_opened: Vec<(&Message, fs::File, Vec<u8>)> = [big, small[0], small[1]]
        .into_iter()
        .map(|m| {
            let (f, head) = open(&mount, m);
            (m, f, head)
        })
        .collect();
    let old_files: Vec<PathBuf> = [big, small[0], small[1]]
        .iter()
        .map(|m| m_file_of(&files, &m.guid).0.clone())
        .collect();
    bob.expunge_set(&[], "INBOX", &format!("{},{}", small[0].uid, small[1].uid));
    bob.adm(&[], &["altmove"], &["mailbox", "INBOX", "all"]);
    bob.purge();
    for f in &old_files {
        assert!(!f.exists(), "expunge + altmove + purge left {f:?}");
    }
    for m in &small {
        let r = fs::metadata(mount.message("INBOX", m.uid));
        assert_eq!(errno(&r), Some(libc::ENOENT), "expunged and purged: {r:?}");
    }
    let mut open_problems: Vec<String> = Vec::new();
    let mut check = |what: &str, got: std::io::Result<Vec<u8>>, want: &[u8]| match got {
        Ok(bytes) if bytes == want => {}
        Ok(bytes) => open_problems.push(format!(
            "{what}: {} bytes that differ from the {} expected",
            bytes.len(),
            want.len()
        )),
        Err(e) => open_problems.push(format!("{what}: {e}")),
    };
    let mut rest = big_head;
    check(
        "a large message opened before altmove + purge, read to EOF",
        open_big.read_to_end(&mut rest).map(|_| rest),
        &big.text,
    );
    let mut whole = vec![0u8; small[0].text.len()];
    check(
        "an expunged message opened before the purge, read with exact preads",
        pread_small.read_exact_at(&mut whole, 0).map(|()| whole),
        &small[0].text,
    );
    let mut rest = cat_head;
    check(
        "an expunged message opened before the purge, read to EOF (like cat)",
        cat_small.read_to_end(&mut rest).map(|_| rest),
        &small[1].text,
    );
    drop((open_big, pread_small, cat_small, held));
    for (m, mut f, mut bytes) in kernel_opened {
        match f.read_to_end(&mut bytes) {
            Ok(_) if bytes == m.text => {}
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {}
            Ok(_) => open_problems.push(format!(
                "kernel open of uid {}: {} bytes that differ from the {} expected",
                m.uid,
                bytes.len(),
                m.text.len()
            )),
            Err(e) => open_problems.push(format!("kernel open of uid {}: {e}", m.uid)),
        }
    }

    // Churn while readers stream.
    let gone: Arc<Mutex<HashSet<(String, u32)>>> = Arc::default();
    gone.lock()
        .unwrap()
        .extend(small.iter().map(|m| ("INBOX".to_string(), m.uid)));
    let churning = Arc::new(AtomicBool::new(true));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let reads = Arc::new(AtomicUsize::new(0));
    let enoents = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for r in 0..2 {
        let (mount, expected, gone, churning, failures, reads, enoents) = (
            mount.clone(),
            expected.clone(),
            gone.clone(),
            churning.clone(),
            failures.clone(),
            reads.clone(),
            enoents.clone(),
        );
        readers.push(std::thread::spawn(move || {
            let mut keys: Vec<&(String, u32)> = expected.keys().collect();
            if r == 1 {
                keys.reverse();
            }
            // At least one full pass after the churn stopped.
            let mut last_pass = false;
            loop {
                if !churning.load(Ordering::SeqCst) {
                    last_pass = true;
                }
                for key in &keys {
                    let path = mount.message(&key.0, key.1);
                    match read_in_chunks(&path) {
                        Ok(bytes) if bytes == expected[*key] => {
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(bytes) => failures.lock().unwrap().push(format!(
                            "{}/{}: wrong bytes ({} read, {} expected): {}",
                            key.0,
                            key.1,
                            bytes.len(),
                            expected[*key].len(),
                            show(&bytes[..bytes.len().min(120)])
                        )),
                        // ESTALE: expunged between the open and a read, with the
                        // default --open-mode kernel (docs/semantics.md).
                        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESTALE)) => {
                            enoents.fetch_add(1, Ordering::Relaxed);
                            if !gone.lock().unwrap().contains(*key) {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("{}/{}: {e} but never expunged", key.0, key.1));
                            }
                        }
                        Err(e) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{}/{}: {e}", key.0, key.1)),
                    }
                }
                if last_pass {
                    break;
                }
            }
        }));
    }

    let started = Instant::now();
    let mut rounds = 0;
    for round in 0..24usize {
        let mailbox = boxes[round % 3];
        let some = ["uid", "1:25"];
        let (reverse, which): (bool, &[&str]) = match round % 4 {
            0 => (false, &["all"]),
            1 => (true, &["all"]),
            2 => (false, &some),
            _ => (true, &some),
        };
        let mut cmd = vec!["altmove"];
        if reverse {
            cmd.push("-r");
        }
        let mut args = vec!["mailbox", mailbox];
        args.extend(which);
        bob.adm(&[], &cmd, &args);
        let uids = bob.uids(mailbox);
        let victims = [uids[(round * 7) % uids.len()]];
        {
            let mut gone = gone.lock().unwrap();
            for v in &victims {
                gone.insert((mailbox.to_string(), *v));
            }
        }
        let set = victims
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        bob.expunge_set(&[], mailbox, &set);
        bob.purge();
        rounds += 1;
    }
    churning.store(false, Ordering::SeqCst);
    for r in readers {
        r.join().expect("a reader thread panicked");
    }
    let failures = failures.lock().unwrap();
    eprintln!(
        "{rounds} churn rounds in {:?}: {} good reads, {} ENOENT, {} failures",
        started.elapsed(),
        reads.load(Ordering::Relaxed),
        enoents.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty() && open_problems.is_empty(),
        "files opened before a purge: {open_problems:#?}\n\
         {} bad reads during purge/altmove, e.g.:\n{}\n--- mount log ---\n{}",
        failures.len(),
        failures[..failures.len().min(15)].join("\n"),
        mount.log()
    );
    assert!(reads.load(Ordering::Relaxed) >= 300, "too few reads");
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert_eq!(compared.messages, 150 - 2 - 24);
    let mount = Arc::try_unwrap(mount).unwrap_or_else(|_| panic!("mount still shared"));
    assert_no_panic(&mount.stop());
}

/// Reads a whole file in 4 KiB requests (so a purge can happen between two of them).
fn read_in_chunks(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------------------------------
// 6: bad input

/// sdbox: a missing `u.N`, a truncated one and one whose metadata block is corrupt are
/// listed, give EIO on stat and read with a log line naming the file; the rest of the
/// mailbox reads fine, and `mailfs cat` of a damaged one exits 1 naming it. Dovecot
/// cached every message's values before the damage (`fetch_all`), so the one with a
/// corrupt metadata block (its body intact, its file as long as before) is listed from
/// the cache without opening it, as doveadm reports it: its stat succeeds, its read
/// gives EIO.
#[test]
fn sdbox_damaged_files_are_listed_and_give_eio() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_bad_sdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::sdbox(""));
    let bob = dovecot.user("bob");
    let small = populate_small(&bob);
    let before = fetch_all(&bob);
    let inbox_dir = bob.mailbox_dir("INBOX");
    let u = |uid: u32| inbox_dir.join(format!("u.{uid}"));
    let missing = small.inbox[0];
    let truncated = small.inbox_large;
    let bad_meta = small.inbox_latin1;
    fs::remove_file(u(missing)).unwrap();
    let msg = &dbox::read(&u(truncated))[0];
    dbox::truncate(&u(truncated), msg.body.start + 1000);
    let msg = &dbox::read(&u(bad_meta))[0];
    dbox::overwrite(&u(bad_meta), msg.metadata.start, b"\nXX\n");
    let damaged = [missing, truncated, bad_meta];

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let listed = dir_names(&mount.mailbox("INBOX")).expect("listing INBOX");
    let expected: BTreeSet<String> = small.inbox.iter().map(|u| format!("{u}.eml")).collect();
    assert_eq!(listed, expected, "damaged messages stay listed");
    for uid in [missing, truncated] {
        assert_eio(&mount.message("INBOX", uid), &format!("INBOX uid {uid}"));
    }
    let listed_meta = before["INBOX"].iter().find(|m| m.uid == bad_meta).unwrap();
    assert_listed_read_eio(
        &mount.message("INBOX", bad_meta),
        listed_meta,
        &format!("INBOX uid {bad_meta}"),
    );
    for m in &before["INBOX"] {
        if !damaged.contains(&m.uid) {
            assert_message_matches(&mount.message("INBOX", m.uid), m);
        }
    }
    for m in &before["Work/Sub"] {
        assert_message_matches(&mount.message("Work/Sub", m.uid), m);
    }
    let cat = mailfs(["cat", &bob.location(), "INBOX", &bad_meta.to_string()]);
    let stderr = String::from_utf8_lossy(&cat.stderr);
    assert_eq!(
        cat.status.code(),
        Some(1),
        "cat of a damaged message: {stderr}"
    );
    assert!(
        log_names_file(&stderr, &u(bad_meta)),
        "cat must name {:?}: {stderr}",
        u(bad_meta)
    );
    assert_no_panic(&stderr);
    let log = mount.stop();
    for uid in damaged {
        assert!(
            log_names_file(&log, &u(uid)),
            "no log line names {:?}:\n{log}",
            u(uid)
        );
    }
    assert_no_panic(&log);
}

/// mdbox: in one `m.N` the middle message is truncated (so the map entry of the next one
/// points past the file's end); in another a metadata block is corrupt; a third `m.N` is
/// gone. Those messages are listed and give EIO with a log line naming the file; every
/// other message, even in the same files, reads fine. As in the sdbox test, the message
/// with the corrupt metadata block is listed from the cache (stat succeeds) and gives EIO
/// when read.
#[test]
fn mdbox_damaged_files_are_listed_and_give_eio() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_bad_mdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::mdbox(""));
    let bob = dovecot.user("bob");
    bob.create_mailbox("Work/Sub");
    for n in 0..18 {
        let mailbox = if n % 3 == 2 { "Work/Sub" } else { "INBOX" };
        bob.save_opts(
            &["mdbox_rotate_size=1500"],
            mailbox,
            &email(n, &format!("Packed {n}"), &format!("line {n}\n").repeat(20)),
        );
    }
    let before = fetch_all(&bob);
    let files = m_files(&bob);
    let full: Vec<&(PathBuf, Vec<DboxMessage>)> =
        files.iter().filter(|(_, ms)| ms.len() >= 3).collect();
    assert!(
        full.len() >= 3,
        "want 3 m.N with >= 3 messages: {:?}",
        files
            .iter()
            .map(|(p, ms)| (p, ms.len()))
            .collect::<Vec<_>>()
    );
    // Which (mailbox, uid) holds a GUID.
    let by_guid: BTreeMap<&str, (&str, &Message)> = before
        .iter()
        .flat_map(|(mb, ms)| ms.iter().map(move |m| (m.guid.as_str(), (mb.as_str(), m))))
        .collect();
    let mut damaged: Vec<(&str, u32, PathBuf)> = Vec::new();
    let mut mark = |file: &Path, msg: &DboxMessage| {
        let (mb, m) = by_guid[msg.guid.as_str()];
        damaged.push((mb, m.uid, file.to_path_buf()));
    };
    // 1: truncated inside the 2nd message; the 3rd (and later) point past the end.
    let (path, ms) = full[0];
    dbox::truncate(path, ms[1].body.start + 10);
    ms[1..].iter().for_each(|m| mark(path, m));
    // 2: the metadata block of the 2nd message is corrupt.
    let (path, ms) = full[1];
    dbox::overwrite(path, ms[1].metadata.start, b"\nXX\n");
    mark(path, &ms[1]);
    let bad_meta = by_guid[ms[1].guid.as_str()];
    let bad_meta = (bad_meta.0, bad_meta.1.uid);
    // 3: the file is gone.
    let (path, ms) = full[2];
    fs::remove_file(path).unwrap();
    ms.iter().for_each(|m| mark(path, m));

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    for (mailbox, messages) in &before {
        let listed = dir_names(&mount.mailbox(mailbox)).expect("listing");
        let expected: BTreeSet<String> =
            messages.iter().map(|m| format!("{}.eml", m.uid)).collect();
        let files_only: BTreeSet<String> =
            listed.into_iter().filter(|n| n.ends_with(".eml")).collect();
        assert_eq!(
            files_only, expected,
            "{mailbox}: damaged messages stay listed"
        );
        for m in messages {
            let path = mount.message(mailbox, m.uid);
            if (mailbox.as_str(), m.uid) == bad_meta {
                assert_listed_read_eio(&path, m, &format!("{mailbox} uid {}", m.uid));
            } else if damaged
                .iter()
                .any(|(mb, uid, _)| mb == mailbox && *uid == m.uid)
            {
                assert_eio(&path, &format!("{mailbox} uid {}", m.uid));
            } else {
                assert_message_matches(&path, m);
            }
        }
    }
    let log = mount.stop();
    for (mailbox, uid, file) in &damaged {
        assert!(
            log_names_file(&log, file),
            "no log line names {file:?} ({mailbox} uid {uid}):\n{log}"
        );
    }
    assert_no_panic(&log);
}

/// The mount refuses to start, with a message naming the path: an mdbox root without
/// `storage/`, a missing root, an empty root. `mailfs ls` exits 1 on each.
#[test]
fn mount_refuses_mdbox_without_storage_and_missing_or_empty_roots() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("dbox_bad_roots");
    let dovecot = Dovecot::start(&dir, DboxLayout::mdbox(""));
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "One", "message"));
    let root = bob.mail_root();
    fs::rename(root.join("storage"), root.join("storage.moved")).unwrap();
    let empty = dir.mkdir("empty");
    let missing = dir.join("no/such/store");
    let mnt = dir.mkdir("mnt");
    let cases = [
        (format!("mdbox:{}", root.display()), root.join("storage")),
        (format!("mdbox:{}", missing.display()), missing.clone()),
        (format!("sdbox:{}", missing.display()), missing.clone()),
        (format!("mdbox:{}", empty.display()), empty.clone()),
        (format!("sdbox:{}", empty.display()), empty.clone()),
        (empty.display().to_string(), empty.clone()),
        // ITERINDEX lists from the index tree, so it needs INDEX= (Dovecot refuses it too).
        (
            format!("sdbox:{}:ITERINDEX", root.display()),
            PathBuf::from("ITERINDEX"),
        ),
    ];
    for (location, named) in &cases {
        let failure = mount_must_fail(location, &mnt, &[]);
        let named = named.display().to_string();
        assert!(
            failure.stderr.contains(&named),
            "mount {location}: the message must name {named}:\n{}",
            failure.stderr
        );
        assert_no_panic(&failure.stderr);
        let out = ls(location, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "mailfs ls {location}: {stderr}");
        assert!(
            stderr.contains(&named),
            "ls {location} must name {named}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 7: mailfs ls / cat

fn ls(location: &str, mailbox: Option<&str>) -> std::process::Output {
    let mut args = vec!["ls", location];
    args.extend(mailbox);
    mailfs(args)
}

#[track_caller]
fn ok_stdout(out: &std::process::Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        show(&out.stderr)
    );
    assert_no_panic(&String::from_utf8_lossy(&out.stderr));
    out.stdout.clone()
}

/// `mailfs ls` (mailboxes, then each mailbox's lines) and `mailfs cat` of every message
/// against doveadm.
fn ls_and_cat_match_dovecot(user: &User<'_>, location: &str) -> usize {
    let printed: BTreeSet<String> = String::from_utf8(ok_stdout(&ls(location, None), "mailfs ls"))
        .expect("UTF-8 mailbox names")
        .lines()
        .map(str::to_string)
        .collect();
    let all = fetch_all(user);
    let selectable: BTreeSet<String> = all.keys().cloned().collect();
    let listed: BTreeSet<String> = user.list().into_iter().collect();
    assert!(
        printed.is_superset(&selectable) && printed.is_subset(&listed),
        "mailfs ls {printed:?} vs selectable {selectable:?} / listed {listed:?}"
    );
    let mut count = 0;
    for (mailbox, messages) in &all {
        let out = ok_stdout(&ls(location, Some(mailbox)), "mailfs ls MAILBOX");
        let mut lines: Vec<String> = String::from_utf8(out)
            .expect("UTF-8 ls output")
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort_by_key(|l| l.split('\t').nth(1).and_then(|u| u.parse::<u32>().ok()));
        let expected: Vec<String> = messages
            .iter()
            .map(|m| {
                format!(
                    "{}.eml\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    m.uid, m.uid, m.size, m.vsize, m.received, m.saved, m.guid, m.flags
                )
            })
            .collect();
        let trim = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|l| l.trim_end_matches('\t').to_string())
                .collect()
        };
        assert_eq!(
            trim(lines),
            trim(expected),
            "mailfs ls {location} {mailbox}"
        );
        for m in messages {
            let out = mailfs(["cat", location, mailbox, &m.uid.to_string()]);
            assert_bytes_eq(
                &ok_stdout(&out, "mailfs cat"),
                &m.text,
                &format!("mailfs cat {mailbox} {}", m.uid),
            );
        }
        count += messages.len();
    }
    count
}

#[test]
fn ls_and_cat_match_dovecot_sdbox_and_mdbox() {
    require!(Dovecot);
    for (n, layout) in [
        DboxLayout::sdbox(":ALT=~/alt"),
        DboxLayout::mdbox(":ALT=~/alt:INDEX=~/index"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = TestDir::new(&format!("dbox_cli_{n}"));
        let dovecot = Dovecot::start(&dir, layout);
        let bob = dovecot.user("bob");
        let small = populate_small(&bob);
        bob.adm(&[], &["altmove"], &["mailbox", "INBOX", "uid", "1:3"]);
        bob.copy_set(
            "Work/Sub",
            "INBOX",
            &small.inbox_no_final_newline.to_string(),
        );
        let count = ls_and_cat_match_dovecot(&bob, &bob.location());
        assert!(count >= 10, "{layout:?}: compared {count}");
        let out = mailfs([
            "cat",
            &bob.location(),
            "INBOX",
            &small.inbox_expunged.to_string(),
        ]);
        assert_eq!(out.status.code(), Some(1), "cat of an expunged uid");
        let out = mailfs([
            "cat",
            &bob.location(),
            "INBOX",
            &small.inbox_large.to_string(),
        ]);
        assert_eq!(
            ok_stdout(&out, "cat large"),
            bob.text("INBOX", small.inbox_large)
        );
    }
}
