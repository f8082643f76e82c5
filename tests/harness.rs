//! The Dovecot side of the harness on its own: the stores the other tests mount really
//! have the properties those tests rely on, and the helpers can fail.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::util::corpus::{KEYWORDS, email, new_and_cur, populate_varied};
use crate::util::dovecot::{Dovecot, Layout, User, Users};
use crate::util::fingerprint::Fingerprint;
use crate::util::fsx::walk;
use crate::util::{TestDir, name_of};

/// Checks that hold for the varied store in either layout.
fn assert_varied_store_shape(user: &User<'_>, scratch: &std::path::Path) {
    let varied = populate_varied(user, scratch);
    let statuses = user.statuses();
    let names: Vec<&str> = statuses.keys().map(String::as_str).collect();
    let mut expected = varied.mailboxes.clone();
    expected.sort();
    assert_eq!(names, expected, "mailboxes");
    assert!(user.list().iter().any(|n| n == varied.non_mailbox_parent));
    assert!(!statuses.contains_key(varied.non_mailbox_parent));
    assert_eq!(statuses[varied.empty].messages, 0);

    let inbox = user.fetch("INBOX");
    assert_eq!(inbox.len() as u32, statuses["INBOX"].messages);
    assert!(inbox.len() >= 6, "{inbox:?}");
    for uid in &varied.inbox_expunged {
        assert!(
            inbox.iter().all(|m| m.uid != *uid),
            "uid {uid} should be expunged"
        );
    }
    let by_uid = |uid: u32| inbox.iter().find(|m| m.uid == uid).expect("uid present");
    assert!(by_uid(varied.inbox_deleted).flags.contains("\\Deleted"));
    assert!(
        by_uid(varied.inbox_crlf)
            .text
            .windows(2)
            .any(|w| w == b"\r\n")
    );
    assert!(by_uid(varied.inbox_crlf).flags.contains(KEYWORDS[8]));
    assert!(String::from_utf8(by_uid(varied.inbox_latin1).text.clone()).is_err());
    assert!(!by_uid(varied.inbox_no_final_newline).text.ends_with(b"\n"));
    assert!(by_uid(varied.inbox_large).size > 300_000);
    assert!(inbox.iter().any(|m| m.flags.is_empty()), "{inbox:?}");
    // The bulk fetch frames every text exactly like a per-message fetch.
    for m in &inbox {
        assert_eq!(m.text, user.text("INBOX", m.uid), "uid {}", m.uid);
    }

    // Files both in new/ (with and without ":2,") and in cur/.
    let (new, cur) = new_and_cur(&user.mailbox_dir("INBOX"));
    assert!(new.iter().any(|n| n.contains(":2,")), "new/: {new:?}");
    assert!(new.iter().any(|n| !n.contains(':')), "new/: {new:?}");
    assert!(!cur.is_empty(), "cur/ is empty");
    let (_, imported_cur) = new_and_cur(&user.mailbox_dir("Imported"));
    assert!(!imported_cur.is_empty(), "import put nothing in cur/");
    let imported = user.fetch("Imported");
    assert!(
        imported.iter().all(|m| m.guid.ends_with(".source")),
        "{imported:?}"
    );
    assert!(
        imported
            .iter()
            .any(|m| m.flags == "\\Flagged \\Seen $Label1 later"),
        "{imported:?}"
    );
    assert!(
        imported.iter().all(|m| m.received < 1_600_000_000),
        "{imported:?}"
    );
}

#[test]
fn varied_maildirpp_store_has_every_case() {
    require!(Dovecot);
    let dir = TestDir::new("harness_varied_pp");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    assert_varied_store_shape(&bob, &dir.mkdir("scratch"));
    let root = bob.mail_root();
    assert!(root.join(".Work.Sub/cur").is_dir());
    assert!(root.join(".Work.Sub/dovecot-uidlist").is_file());
    assert!(
        root.join(".&ANw-n&AO8-code &- more/cur").is_dir(),
        "mUTF-7 name on disk"
    );
}

#[test]
fn varied_fs_layout_store_keeps_index_and_control_apart() {
    require!(Dovecot);
    let dir = TestDir::new("harness_varied_fs");
    let dovecot = Dovecot::start(&dir, Layout::FsSeparateIndexControl);
    let bob = dovecot.user("bob");
    assert_varied_store_shape(&bob, &dir.mkdir("scratch"));
    let root = bob.mail_root();
    assert!(root.join("Work/Sub/cur").is_dir());
    assert!(root.join("Archive/2024/cur").is_dir() && root.join("Archive/cur").is_dir());
    assert!(!root.join("Work/cur").exists(), "Work is not a mailbox");
    assert!(
        bob.home()
            .join("control/Work/Sub/dovecot-uidlist")
            .is_file()
    );
    assert!(bob.home().join("control/INBOX/dovecot-uidlist").is_file());
    assert!(bob.home().join("index/INBOX/dovecot.index.log").is_file());
    let stray: Vec<_> = crate::util::fsx::walk(&root)
        .into_iter()
        .filter(|p| {
            let n = crate::util::name_of(p);
            n.starts_with("dovecot-uidlist") || n.starts_with("dovecot.index")
        })
        .collect();
    assert!(
        stray.is_empty(),
        "index/control files in the mail root: {stray:?}"
    );
}

#[test]
fn fingerprint_notices_every_kind_of_change() {
    let dir = TestDir::new("harness_fingerprint");
    let store = dir.mkdir("store");
    fs::create_dir(store.join("cur")).unwrap();
    let file = store.join("cur/msg");
    fs::write(&file, b"hello").unwrap();
    let before = Fingerprint::of(&store);
    assert_eq!(before.len(), 3);
    before.assert_same(&Fingerprint::of(&store), "unchanged");

    let must_differ = |what: &str| {
        let after = Fingerprint::of(&store);
        let r = catch_unwind(AssertUnwindSafe(|| before.assert_same(&after, what)));
        assert!(r.is_err(), "fingerprint missed: {what}");
    };
    // Same size and mtime, different content.
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    fs::write(&file, b"jello").unwrap();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    must_differ("content");
    fs::write(&file, b"hello").unwrap();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    // A lock file created and removed again leaves only the directory mtime changed.
    let dir_mtime = fs::metadata(store.join("cur")).unwrap().modified().unwrap();
    fs::write(store.join("cur/dovecot-uidlist.lock"), b"").unwrap();
    must_differ("added file");
    fs::remove_file(store.join("cur/dovecot-uidlist.lock")).unwrap();
    must_differ("directory mtime");
    fs::File::open(store.join("cur"))
        .unwrap()
        .set_modified(dir_mtime)
        .unwrap();
    before.assert_same(&Fingerprint::of(&store), "restored");
}

/// The per-user passwd-file userdb of [`Dovecot::start_users`]: Dovecot expands every
/// variable of each user's location (the `%2.256Nu` hash bucket, `%d`, `%n`, in keys too),
/// keeps the `:` keys, and lays each user's mail out there in that user's format; the
/// multi-user doveadm helper reaches exactly the users asked for and writes as the mail
/// user; the doveadm-based [`User`] helpers work.
#[test]
fn per_user_locations_are_expanded_by_dovecot() {
    require!(Dovecot);
    let dir = TestDir::new("harness_per_user");
    let (mail, idx) = (dir.join("mail"), dir.join("idx"));
    let (m, i) = (mail.display(), idx.display());
    let hashed = format!("{m}/%2.256Nu/%u");
    let users: Vec<(String, String)> = [
        ("user07", format!("maildir:{hashed}")),
        ("bob", format!("sdbox:{hashed}")),
        ("carol", format!("mdbox:{hashed}")),
        ("u1@a.test", format!("mdbox:{m}/%d/%n:INDEX={i}/%d/%n")),
    ]
    .map(|(u, l)| (u.to_string(), l))
    .into();
    let dovecot = Dovecot::start_users(&dir, &users);
    dovecot.mail_owned_dir(&dir, "mail");
    dovecot.mail_owned_dir(&dir, "idx");
    let [user07, bob, carol, u1] = <[User<'_>; 4]>::try_from(dovecot.users()).ok().unwrap();

    // Expansion: the MD5-based bucket (byte 7 of MD5("user07") is 0x37), the domain and
    // user parts, and the INDEX key after a ':' inside the passwd-file's extra field.
    assert_eq!(user07.location(), format!("maildir:{m}/37/user07"));
    assert_eq!(
        u1.location(),
        format!("mdbox:{m}/a.test/u1:INDEX={i}/a.test/u1")
    );
    assert_eq!(u1.mail_root(), mail.join("a.test/u1"));
    for user in [&user07, &bob, &carol] {
        let root = user.mail_root();
        let bucket = name_of(root.parent().expect("bucket"));
        assert!(
            bucket.len() == 2 && bucket.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "{}: bucket {bucket:?} is not two lowercase hex digits",
            user.name()
        );
        assert_eq!(root, mail.join(&bucket).join(user.name()));
    }

    // -F reaches exactly the listed users, -A all of them.
    let two = vec![user07.name().to_string(), bob.name().to_string()];
    let first = email(1, "To two users", "Hello.");
    dovecot.doveadm_users(Users::Only(&two), &[], &["save"], &[], Some(&first));
    let second = email(2, "To everyone", "Hello all.");
    dovecot.doveadm_users(Users::All, &[], &["save"], &[], Some(&second));
    for user in [&user07, &bob, &carol, &u1] {
        let expected = if two.iter().any(|n| n == user.name()) {
            2
        } else {
            1
        };
        assert_eq!(
            user.status("INBOX").messages,
            expected,
            "messages of {}",
            user.name()
        );
    }
    dovecot.doveadm_users(
        Users::All,
        &[],
        &["flags", "add"],
        &["\\Seen work", "mailbox", "INBOX", "uid", "1"],
        None,
    );
    user07.flags_add("INBOX", 2, "\\Flagged");
    bob.expunge("INBOX", 2);
    assert_eq!(user07.fetch_flags("INBOX")[1].1, ["\\Flagged"]);
    assert_eq!(bob.uids("INBOX"), [1]);
    assert_eq!(carol.fetch("INBOX")[0].flags, "\\Seen work");
    assert_eq!(u1.fetch("INBOX")[0].text, second);

    // Each user's format on disk, where the expansion says.
    assert!(user07.mail_root().join("new").is_dir() && user07.mail_root().join("cur").is_dir());
    assert!(
        bob.mail_root()
            .join("mailboxes/INBOX/dbox-Mails/u.1")
            .is_file()
    );
    assert!(carol.mail_root().join("storage/m.1").is_file());
    assert!(u1.mail_root().join("storage/m.1").is_file());
    let u1_index = idx.join("a.test/u1");
    assert!(u1_index.join("mailboxes/INBOX/dovecot.index.log").is_file());
    assert!(u1_index.join("storage/dovecot.map.index.log").is_file());
    let stray: Vec<_> = walk(&u1.mail_root())
        .into_iter()
        .filter(|p| name_of(p).starts_with("dovecot."))
        .collect();
    assert!(stray.is_empty(), "index files in the mail root: {stray:?}");

    // Everything was written as the mail user, none of it as root.
    let (uid, gid) = dovecot.mail_owner();
    for p in walk(&mail).into_iter().chain(walk(&idx)) {
        let meta = fs::symlink_metadata(&p).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owner of {p:?}");
    }

    // A user that failed fails the helper, even where doveadm would exit 0.
    let r = catch_unwind(AssertUnwindSafe(|| {
        dovecot.doveadm_users(
            Users::Only(&two),
            &[],
            &["flags", "add"],
            &["\\Seen", "mailbox", "Nope", "uid", "1"],
            None,
        )
    }));
    assert!(r.is_err(), "flags add on a missing mailbox did not fail");
}
