//! Multi-user mounts: a location template with Dovecot variables (`%u`, `%n`, `%d`,
//! `%2.256Nu`, ...) mounts one directory per user, named by the full user name, each
//! exactly like a single-user mount of that user.
//!
//! The users' mail is where Dovecot itself expands the template (a passwd-file userdb with
//! per-user locations, [`Dovecot::start_users`]), so the hash buckets and paths mailfs has to
//! find are Dovecot's, not the test's.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::compare::{Compared, assert_tree_matches_dovecot};
use crate::util::corpus::{crlf, email, form_feeds, large, latin1, no_final_newline};
use crate::util::dovecot::{Dovecot, User, Users};
use crate::util::fsx::{dir_names, errno, errno_name, walk};
use crate::util::mount::Mount;
use crate::util::{TestDir, name_of, wait_for};

/// How long a change in the store may take to show at the mount root (mailfs tells the
/// kernel to cache for 1 s).
const SHOWS_WITHIN: Duration = Duration::from_secs(5);

/// The formats users get, round-robin.
const FORMATS: [&str; 3] = ["maildir", "sdbox", "mdbox"];

const UNICODE: &str = "Ünïcode & more";
const JAPANESE: &str = "日本語 📧 Post";

/// The names at the mount root.
#[track_caller]
fn root_names(mount: &Mount) -> BTreeSet<String> {
    dir_names(mount.path()).unwrap_or_else(|e| panic!("listing the mount root: {e}"))
}

/// `(name, location)` entries for [`Dovecot::start_users`].
fn entries<'a>(users: impl IntoIterator<Item = (&'a str, String)>) -> Vec<(String, String)> {
    users
        .into_iter()
        .map(|(name, location)| (name.to_string(), location))
        .collect()
}

/// The names whose index in `names` satisfies `f`.
#[track_caller]
fn pick(names: &[String], f: impl Fn(usize) -> bool) -> Vec<String> {
    let picked: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| f(*i))
        .map(|(_, n)| n.clone())
        .collect();
    assert!(!picked.is_empty(), "the selection picks no user");
    picked
}

/// Compares each user's directory in the mount with doveadm; each must have at least `min`
/// messages. Returns the totals.
#[track_caller]
fn assert_users_match(mount: &Mount, users: &[&User<'_>], min: usize) -> Compared {
    let mut total = Compared::default();
    for user in users {
        let compared = assert_tree_matches_dovecot(&mount.path().join(user.name()), user);
        assert!(
            compared.messages >= min,
            "{}: compared only {compared:?} (want >= {min} messages)",
            user.name()
        );
        total.mailboxes += compared.mailboxes;
        total.messages += compared.messages;
    }
    total
}

/// The user's mail is where `<mail>/%2.256Nu/%u` says: `<mail>/<two hex digits>/<name>`, as
/// Dovecot expanded it, in `format`.
#[track_caller]
fn assert_hashed_store(mail: &Path, user: &User<'_>, format: &str) {
    let root = user.mail_root();
    let bucket = root
        .parent()
        .filter(|b| b.parent() == Some(mail))
        .map(name_of)
        .unwrap_or_else(|| panic!("{}: mail root {root:?} is not in a bucket", user.name()));
    assert!(
        bucket.len() == 2 && bucket.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "{}: bucket {bucket:?} is not two lowercase hex digits",
        user.name()
    );
    assert_eq!(name_of(&root), user.name(), "the directory in the bucket");
    let has = |dir: PathBuf, prefix: &str| {
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: reading {dir:?}: {e}", user.name()))
            .any(|e| name_of(&e.expect("entry").path()).starts_with(prefix))
    };
    let ok = match format {
        "maildir" => root.join("cur").is_dir() && root.join("dovecot-uidlist").is_file(),
        "sdbox" => has(root.join("mailboxes/INBOX/dbox-Mails"), "u."),
        "mdbox" => has(root.join("storage"), "m."),
        other => panic!("unknown format {other}"),
    };
    assert!(ok, "{}: no {format} store at {root:?}", user.name());
}

/// Gives the users of [`fifty_users_in_mixed_formats_match_doveadm`] varied mail, mostly
/// with multi-user doveadm commands (`-A`, or `-F` for the users a rule picks by index),
/// plus one `save` per user of a message only that user has. INBOX UIDs 1 to 3 exist for
/// everyone before anything is expunged.
fn populate_fifty(dovecot: &Dovecot, names: &[String]) {
    let nested = |i: usize| i.is_multiple_of(2);
    let run =
        |who: Vec<String>, opts: &[&str], command: &[&str], args: &[&str], stdin: Option<&[u8]>| {
            dovecot.doveadm_users(Users::Only(&who), opts, command, args, stdin);
        };
    let save = |who: Vec<String>, mailbox: &str, message: &[u8]| {
        run(who, &[], &["save"], &["-m", mailbox], Some(message));
    };
    let flags = |who: Vec<String>, op: &str, mailbox: &str, set: &str, flags: &str| {
        run(
            who,
            &[],
            &["flags", op],
            &[flags, "mailbox", mailbox, "uid", set],
            None,
        );
    };

    run(
        pick(names, nested),
        &[],
        &["mailbox", "create"],
        &["Work/Sub"],
        None,
    );
    run(
        pick(names, |i| i % 5 == 1),
        &[],
        &["mailbox", "create"],
        &[UNICODE],
        None,
    );
    run(
        pick(names, |i| i % 7 == 3),
        &[],
        &["mailbox", "create"],
        &[JAPANESE],
        None,
    );

    // INBOX UIDs 1 and 2: every user (the decoy too).
    for message in [
        email(1, "Welcome", "Welcome to the new server."),
        email(2, "Maintenance", "Tonight from 22:00 to 23:00."),
    ] {
        dovecot.doveadm_users(Users::All, &[], &["save"], &[], Some(&message));
    }
    // INBOX UID 3: a message of each user's own, of a size of its own.
    for (i, name) in names.iter().enumerate() {
        let body = format!("Only {name} has this.\n{}", "lorem ipsum ".repeat(i * 40));
        let message = email(1000 + i, &format!("Hello {name}"), &body);
        dovecot.user(name).save_opts(&[], "INBOX", &message);
    }
    // More INBOX messages, each for some of the users.
    save(pick(names, |i| i % 3 != 1), "INBOX", &latin1());
    save(pick(names, |i| i % 4 == 0), "INBOX", &large(100));
    save(pick(names, |i| i % 2 == 1), "INBOX", &no_final_newline());
    save(pick(names, |i| i % 5 == 2), "INBOX", &form_feeds());
    run(
        pick(names, |i| i % 6 == 5),
        &["mail_save_crlf=yes"],
        &["save"],
        &["-m", "INBOX"],
        Some(&crlf()),
    );
    // The other mailboxes.
    save(
        pick(names, nested),
        "Work/Sub",
        &email(20, "Quarterly report", "Numbers attached."),
    );
    save(
        pick(names, nested),
        "Work/Sub",
        &email(21, "Re: Quarterly report", "> Numbers\nThanks."),
    );
    save(
        pick(names, |i| nested(i) && i % 3 == 0),
        "Work/Sub",
        &email(22, "Lunch?", "12:30 at the usual place"),
    );
    save(
        pick(names, |i| i % 5 == 1),
        UNICODE,
        &email(30, "Grüße aus Köln", "Schöne Grüße! ✉"),
    );
    save(
        pick(names, |i| i % 7 == 3),
        JAPANESE,
        &email(31, "こんにちは", "日本語の本文です。🎉"),
    );
    // Flags, keywords, expunges.
    flags(
        pick(names, |i| i % 2 == 0),
        "add",
        "INBOX",
        "1",
        "\\Seen $Label1 work",
    );
    flags(
        pick(names, |i| i % 3 == 0),
        "add",
        "INBOX",
        "3",
        "\\Flagged \\Answered",
    );
    flags(
        pick(names, |i| i % 4 == 1),
        "add",
        "INBOX",
        "1:3",
        "\\Draft later project-x $Forwarded",
    );
    flags(
        pick(names, |i| i % 7 == 2),
        "add",
        "INBOX",
        "3",
        "\\Deleted",
    );
    flags(
        pick(names, |i| i % 8 == 0),
        "remove",
        "INBOX",
        "1",
        "$Label1",
    );
    flags(
        pick(names, |i| nested(i) && i % 3 == 1),
        "add",
        "Work/Sub",
        "2",
        "\\Seen todo $MDNSent",
    );
    run(
        pick(names, |i| i % 3 == 2),
        &[],
        &["expunge"],
        &["mailbox", "INBOX", "uid", "2"],
        None,
    );
    run(
        pick(names, |i| nested(i) && i % 10 == 4),
        &[],
        &["expunge"],
        &["mailbox", "Work/Sub", "uid", "1"],
        None,
    );
}

/// Fifty users, Maildir, sdbox and mdbox in turn, each in the hash bucket Dovecot computes
/// (`<mail>/%2.256Nu/%u`), mounted with the bare template: the root lists exactly them (not
/// a decoy store in a wrong bucket), and each user's tree matches doveadm.
#[test]
fn fifty_users_in_mixed_formats_match_doveadm() {
    require!(Dovecot, Fuse);
    let started = Instant::now();
    let dir = TestDir::new("multi_fifty");
    let mail = dir.join("mail");
    let template = format!("{}/%2.256Nu/%u", mail.display());
    let names: Vec<String> = (0..50).map(|i| format!("user{i:02}")).collect();
    let mut users = entries(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), format!("{}:{template}", FORMATS[i % 3]))),
    );
    users.push(("decoy".to_string(), format!("maildir:{template}")));
    let dovecot = Dovecot::start_users(&dir, &users);
    dovecot.mail_owned_dir(&dir, "mail");
    populate_fifty(&dovecot, &names);
    let users: Vec<User<'_>> = names.iter().map(|n| dovecot.user(n)).collect();
    for (i, user) in users.iter().enumerate() {
        assert_hashed_store(&mail, user, FORMATS[i % 3]);
    }

    // The decoy: a Maildir Dovecot wrote for "decoy", moved to a bucket that is not the
    // hash of its name.
    let decoy = dovecot.user("decoy");
    assert_hashed_store(&mail, &decoy, "maildir");
    let right = decoy.mail_root();
    let bucket = name_of(right.parent().expect("bucket"));
    let bucket = u8::from_str_radix(&bucket, 16).expect("hex bucket");
    let wrong = mail.join(format!("{:02x}", bucket.wrapping_add(1)));
    fs::create_dir_all(&wrong).expect("creating the wrong bucket");
    fs::rename(&right, wrong.join("decoy")).expect("moving the decoy");
    let populated = started.elapsed();

    let mount = Mount::start(&template, &dir.join("mnt"), &[]);
    assert_eq!(
        root_names(&mount),
        names.iter().cloned().collect::<BTreeSet<_>>(),
        "users at the mount root (the decoy in {wrong:?} is none)"
    );
    let r = fs::metadata(mount.path().join("decoy"));
    assert_eq!(
        errno(&r),
        Some(libc::ENOENT),
        "looking up the decoy: {}",
        errno_name(errno(&r))
    );
    let compared = assert_users_match(&mount, &users.iter().collect::<Vec<_>>(), 2);
    // 50 INBOXes, 25 Work/Sub, 10 + 7 with non-ASCII names.
    assert!(compared.mailboxes >= 90, "{compared:?}");
    mount.stop();
    eprintln!(
        "{} users: populated in {populated:?}, {compared:?} compared, {:?} in all",
        users.len(),
        started.elapsed()
    );
}

/// A typed template whose mail root and INDEX= both use `%d/%n`: the root lists `n@d`,
/// each tree matches doveadm, and the index files really are under INDEX=. A user
/// directory whose name starts with '.' is skipped.
#[test]
fn domain_template_with_keys() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("multi_domain");
    let (mail, idx) = (dir.join("mail"), dir.join("idx"));
    let template = format!(
        "mdbox:{}/%d/%n:INDEX={}/%d/%n",
        mail.display(),
        idx.display()
    );
    let names: Vec<String> = ["a.test", "b.test"]
        .iter()
        .flat_map(|d| (1..=3).map(move |n| format!("u{n}@{d}")))
        .collect();
    let hidden = ".hidden@a.test";
    let dovecot = Dovecot::start_users(
        &dir,
        &entries(
            names
                .iter()
                .map(String::as_str)
                .chain([hidden])
                .map(|n| (n, template.clone())),
        ),
    );
    dovecot.mail_owned_dir(&dir, "mail");
    dovecot.mail_owned_dir(&dir, "idx");

    let all = |command: &[&str], args: &[&str], stdin: Option<&[u8]>| {
        dovecot.doveadm_users(Users::All, &[], command, args, stdin);
    };
    let only = |who: Vec<String>, command: &[&str], args: &[&str], stdin: Option<&[u8]>| {
        dovecot.doveadm_users(Users::Only(&who), &[], command, args, stdin);
    };
    all(&["mailbox", "create"], &["Work/Sub"], None);
    all(&["save"], &[], Some(&email(1, "Hello", "To every domain.")));
    all(&["save"], &[], Some(&latin1()));
    for (i, name) in names.iter().enumerate() {
        let body = format!("Only {name} has this.\n{}", "x".repeat(i * 300));
        dovecot
            .user(name)
            .save_opts(&[], "INBOX", &email(100 + i, name, &body));
    }
    let a_test = pick(&names, |i| i < 3);
    only(
        a_test.clone(),
        &["save"],
        &["-m", "Work/Sub"],
        Some(&email(2, "Report", "Numbers.")),
    );
    only(
        a_test,
        &["flags", "add"],
        &["\\Seen project-x", "mailbox", "Work/Sub", "uid", "1"],
        None,
    );
    all(
        &["flags", "add"],
        &["\\Seen $Label1", "mailbox", "INBOX", "uid", "1"],
        None,
    );
    only(
        pick(&names, |i| i % 3 == 1),
        &["expunge"],
        &["mailbox", "INBOX", "uid", "2"],
        None,
    );
    let users: Vec<User<'_>> = names.iter().map(|n| dovecot.user(n)).collect();
    assert!(
        dovecot.user(hidden).mail_root().join("storage").is_dir(),
        "Dovecot stored nothing for {hidden}"
    );

    // Index files are under INDEX= (as Dovecot expanded it), none beside the mail.
    for user in &users {
        let location = user.location();
        let index = location
            .split(':')
            .find_map(|key| key.strip_prefix("INDEX="))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no INDEX= in {location}"));
        assert!(index.starts_with(&idx), "{location}");
        for file in [
            "mailboxes/INBOX/dovecot.index.log",
            "mailboxes/Work/Sub/dovecot.index.log",
            "storage/dovecot.map.index.log",
        ] {
            assert!(index.join(file).is_file(), "no {file} in {index:?}");
        }
        let root = user.mail_root();
        assert!(root.starts_with(&mail), "{location}");
        let files: Vec<String> = walk(&root).iter().map(|p| name_of(p)).collect();
        assert!(
            files.iter().any(|n| n.starts_with("m.")),
            "no m.N in {root:?}: {files:?}"
        );
        assert!(
            !files.iter().any(|n| n.starts_with("dovecot.")),
            "index files in the mail root {root:?}: {files:?}"
        );
    }

    let mount = Mount::start(&template, &dir.join("mnt"), &[]);
    assert_eq!(
        root_names(&mount),
        names.iter().cloned().collect::<BTreeSet<_>>(),
        "users at the mount root ({hidden} skipped)"
    );
    assert_users_match(&mount, &users.iter().collect::<Vec<_>>(), 2);
    mount.stop();
}

/// A user directory that exists where the template puts one but holds nothing mailfs can
/// detect (empty, or junk) is listed, and listing it fails with EIO and a log line naming
/// it: never an empty directory. The other users are unaffected.
#[test]
fn undetectable_user_gives_eio_not_an_empty_listing() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("multi_undetectable");
    let mail = dir.join("mail");
    let template = format!("{}/%2.256Nu/%u", mail.display());
    let dovecot = Dovecot::start_users(
        &dir,
        &entries(
            [
                ("alice", "maildir"),
                ("bob", "sdbox"),
                ("empty", "maildir"),
                ("junk", "mdbox"),
            ]
            .map(|(n, f)| (n, format!("{f}:{template}"))),
        ),
    );
    dovecot.mail_owned_dir(&dir, "mail");
    let [alice, bob, empty, junk] = <[User<'_>; 4]>::try_from(dovecot.users())
        .ok()
        .expect("four users");
    alice.save_opts(&[], "INBOX", &email(1, "For Alice", "Hi."));
    alice.save_opts(&[], "INBOX", &latin1());
    alice.flags_add("INBOX", 2, "\\Seen $Label1");
    bob.create_mailbox("Work/Sub");
    bob.save_opts(&[], "INBOX", &email(2, "For Bob", "Hello."));
    bob.save_opts(&[], "Work/Sub", &email(3, "Report", "Numbers."));

    // Where Dovecot would keep their mail (its hash), directories it never wrote.
    let empty_root = empty.mail_root();
    fs::create_dir_all(&empty_root).expect("creating the empty user dir");
    let junk_root = junk.mail_root();
    fs::create_dir_all(junk_root.join("stuff")).expect("creating the junk user dir");
    fs::write(junk_root.join("notes.txt"), "not mail\n").expect("writing junk");
    fs::write(junk_root.join("stuff/data.bin"), [0u8; 100]).expect("writing junk");

    let mount = Mount::start(&template, &dir.join("mnt"), &[]);
    assert_eq!(
        root_names(&mount),
        ["alice", "bob", "empty", "junk"].map(String::from).into(),
        "users at the mount root"
    );
    for (user, root) in [(&empty, &empty_root), (&junk, &junk_root)] {
        let path = mount.path().join(user.name());
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("stat {path:?}: {e}"));
        assert!(meta.is_dir(), "{path:?} is not a directory");
        let r = dir_names(&path);
        assert_eq!(
            errno(&r),
            Some(libc::EIO),
            "listing {path:?} (undetectable store {root:?}): {} {r:?}",
            errno_name(errno(&r))
        );
        let named = root.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !mount.log().contains(&named) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            mount.log().contains(&named),
            "the mount log does not name {named}:\n{}",
            mount.log()
        );
    }
    assert_users_match(&mount, &[&alice, &bob], 2);
    mount.stop();
}

/// A user whose mail Dovecot creates after the mount shows up at the root, and a user whose
/// directory is deleted goes away.
#[test]
fn users_appear_and_disappear() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("multi_appear");
    let mail = dir.join("mail");
    let template = format!("{}/%2.256Nu/%u", mail.display());
    let dovecot = Dovecot::start_users(
        &dir,
        &entries(
            [("early", "maildir"), ("late", "mdbox"), ("gone", "sdbox")]
                .map(|(n, f)| (n, format!("{f}:{template}"))),
        ),
    );
    dovecot.mail_owned_dir(&dir, "mail");
    let [early, late, gone] = <[User<'_>; 3]>::try_from(dovecot.users())
        .ok()
        .expect("three users");
    early.save_opts(&[], "INBOX", &email(1, "Early", "Here from the start."));
    gone.save_opts(&[], "INBOX", &email(2, "Gone", "Not for long."));
    let gone_root = gone.mail_root();

    let mount = Mount::start(&template, &dir.join("mnt"), &[]);
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(root_names(&mount), names(&["early", "gone"]), "at first");

    late.save_opts(&[], "INBOX", &email(3, "Late", "Created after the mount."));
    wait_for(SHOWS_WITHIN, "late to appear at the mount root", || {
        (root_names(&mount) == names(&["early", "gone", "late"])).then_some(())
    });
    assert_users_match(&mount, &[&late], 1);

    fs::remove_dir_all(&gone_root).expect("deleting gone's mail");
    wait_for(SHOWS_WITHIN, "gone to leave the mount root", || {
        (root_names(&mount) == names(&["early", "late"])).then_some(())
    });
    wait_for(SHOWS_WITHIN, "looking up gone to fail", || {
        (errno(&fs::metadata(mount.path().join("gone"))) == Some(libc::ENOENT)).then_some(())
    });
    assert_users_match(&mount, &[&early, &late], 1);
    mount.stop();
}
