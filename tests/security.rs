//! A hostile mailbox owner against a root-run mount (issue 12): symbolic links planted in
//! the store never make mailfs serve or quote a file the owner could not read, never lead
//! it out of the store or into a loop; and with `--allow-other` a local user reads through
//! the mount exactly what the disk lets them read, parent directories included.
//!
//! Every attack has its negative control: the same access through the raw store shows
//! that the attack is armed (the planted link really leads to the secret, the hidden
//! directory really hides), so a mount that followed links or ignored parents would fail.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::corpus::email;
use crate::util::dovecot::{DboxLayout, Dovecot, Layout, User, Users};
use crate::util::mount::Mount;
use crate::util::users::{LocalUser, local_user};
use crate::util::{TestDir, chown_recursive, mailfs_bin, set_mode, show};

/// A root-only file (mode 0600) of `size` bytes that starts with a marker unique to this
/// run; returns its path and the marker.
fn secret_file(dir: &TestDir, size: usize) -> (PathBuf, String) {
    let marker = format!(
        "MAILFS-SECRET-{}-{}",
        std::process::id(),
        dir.path().display()
    );
    let mut bytes = format!("{marker}\n").into_bytes();
    bytes.resize(size, b'#');
    let path = dir.join("root-only-secret");
    fs::write(&path, &bytes).expect("writing the secret");
    set_mode(&path, 0o600);
    (path, marker)
}

/// A path to `target` padded with slashes so that its length is `len` (what the symlink's
/// own `lstat` size then is): the attack from the issue.
fn padded(target: &Path, len: usize) -> String {
    let t = target.display().to_string();
    let (dir, name) = t.rsplit_once('/').expect("absolute");
    assert!(len >= t.len(), "secret too small to pad a path to");
    format!("{dir}{}{name}", "/".repeat(len - dir.len() - name.len()))
}

/// Runs `sh -c script` as the owner of the store (the mail uid), as the attacker would.
fn as_owner(dovecot: &Dovecot, script: &str) {
    let (uid, gid) = dovecot.mail_owner();
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("running setpriv");
    assert!(out.status.success(), "{script}: {}", show(&out.stderr));
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn assert_never_shown(what: &str, haystack: &[u8], marker: &str) {
    assert!(
        !String::from_utf8_lossy(haystack).contains(marker),
        "{what} contains the root-only file's bytes"
    );
}

/// Reads every file below `dir` through the mount (as root), returning what was read and
/// how many reads failed.
fn read_all(dir: &Path) -> (Vec<u8>, usize) {
    let mut all = Vec::new();
    let mut failed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else {
            failed += 1;
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else {
                match fs::read(&p) {
                    Ok(b) => all.extend(b),
                    Err(_) => failed += 1,
                }
            }
        }
    }
    (all, failed)
}

/// The attack on Maildir: `cur/<base>:2,S -> /padded//path/to/secret` (the link's
/// length equal to the secret's size) plus a uidlist line, in a multi-user mount run by
/// root with `--allow-other`. Also a dangling link, which must be named as a link.
#[test]
fn maildir_link_to_a_root_only_file_is_never_served() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("sec_maildir_link");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let kept = bob.save("INBOX", &email(1, "Kept", "an ordinary message"));
    bob.select("INBOX");
    let (secret, marker) = secret_file(&dir, 300);
    let link_target = padded(&secret, 300);
    let maildir = bob.mailbox_dir("INBOX");
    let evil = bob.status("INBOX").uidnext;
    let dangling = evil + 1;
    as_owner(
        &dovecot,
        &format!(
            "ln -s {t} {m}/cur/17000845.M845.evil:2,S && \
             ln -s /nonexistent/nothing {m}/cur/17000846.M846.dangling:2, && \
             printf '{evil} :17000845.M845.evil\\n{dangling} :17000846.M846.dangling\\n' \
             >> {c}/dovecot-uidlist",
            t = sh_quote(&link_target),
            m = sh_quote(&maildir.display().to_string()),
            c = sh_quote(&bob.control_dir("INBOX").display().to_string()),
        ),
    );
    // Negative control: the attack is armed. Followed, the link gives the secret, and
    // its own length equals the secret's size, so a size check cannot tell.
    let planted = maildir.join("cur/17000845.M845.evil:2,S");
    assert_eq!(fs::symlink_metadata(&planted).unwrap().len(), 300);
    assert!(String::from_utf8_lossy(&fs::read(&planted).unwrap()).contains(&marker));

    let template = format!("maildir:{}/%u/Maildir", dovecot_home(&bob).display());
    let mount = Mount::start(&template, &dir.join("mnt"), &["--allow-other"]);
    let inbox = mount.path().join("bob/INBOX");
    let names: Vec<String> = fs::read_dir(&inbox)
        .expect("listing INBOX")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&format!("{evil}.eml")),
        "the planted message stays listed (damage is visible): {names:?}"
    );
    for uid in [evil, dangling] {
        let err = fs::read(inbox.join(format!("{uid}.eml"))).expect_err("must not be read");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "uid {uid}: {err}");
    }
    assert_eq!(
        fs::read(inbox.join(format!("{kept}.eml"))).unwrap(),
        bob.text("INBOX", kept)
    );
    let (everything, _) = read_all(mount.path());
    assert_never_shown("the mount", &everything, &marker);
    let mallory = local_user("mailfs-mallory");
    let other = mallory.read(&inbox.join(format!("{evil}.eml")));
    assert!(other.is_err(), "another user read the planted message");

    let ls = Command::new(mailfs_bin())
        .args(["ls", &bob.location(), "INBOX"])
        .output()
        .unwrap();
    assert_eq!(
        ls.status.code(),
        Some(1),
        "mailfs ls reports unreadable messages"
    );
    assert_never_shown(
        "mailfs ls",
        &[ls.stdout, ls.stderr.clone()].concat(),
        &marker,
    );
    assert!(
        String::from_utf8_lossy(&ls.stderr).contains("symbolic link"),
        "the error names the link: {}",
        show(&ls.stderr)
    );
    let log = mount.stop();
    assert_never_shown("the mount's log", log.as_bytes(), &marker);
    assert!(!log.contains("keeps being renamed"), "{log}");
    assert!(log.contains("symbolic link"), "{log}");
}

/// The home directory holding every user's home (`<base>/home`).
fn dovecot_home(user: &User<'_>) -> PathBuf {
    user.home()
        .parent()
        .expect("home has a parent")
        .to_path_buf()
}

/// The same attack on dbox: an sdbox `u.N`, an mdbox `m.N` and a mailbox's index files
/// replaced by links to the secret: those messages (or that mailbox) fail with EIO, the
/// rest reads as doveadm says, and the secret appears nowhere.
#[test]
fn dbox_links_to_a_root_only_file_are_never_served() {
    require!(Dovecot, Fuse, Root);
    for layout in [DboxLayout::sdbox(""), DboxLayout::mdbox("")] {
        let dir = TestDir::new("sec_dbox_link");
        let dovecot = Dovecot::start(&dir, layout);
        let bob = dovecot.user("bob");
        let first = bob.save("INBOX", &email(1, "First", "one"));
        let second = bob.save("INBOX", &email(2, "Second", "two"));
        bob.create_mailbox("Work");
        bob.save("Work", &email(3, "Work", "three"));
        let (secret, marker) = secret_file(&dir, 4096);
        let victim = match layout {
            Layout::Dbox(d) if d.format.name() == "sdbox" => {
                bob.mailbox_dir("INBOX").join(format!("u.{second}"))
            }
            _ => bob.storage_dirs()[0].join("m.1"),
        };
        let work_index = bob.index_dir("Work");
        as_owner(
            &dovecot,
            &format!(
                "rm -f {v} {w}/dovecot.index && ln -s {s} {v} && \
                 mv {w}/dovecot.index.log {w}/log.orig && ln -s {s} {w}/dovecot.index.log",
                v = sh_quote(&victim.display().to_string()),
                s = sh_quote(&secret.display().to_string()),
                w = sh_quote(&work_index.display().to_string()),
            ),
        );
        // Negative control: followed, the links lead to the secret.
        assert!(String::from_utf8_lossy(&fs::read(&victim).unwrap()).contains(&marker));

        let mount = Mount::start(&bob.location(), &dir.join("mnt"), &["--allow-other"]);
        let (everything, failed) = read_all(mount.path());
        assert_never_shown("the mount", &everything, &marker);
        assert!(failed > 0, "the planted files must fail, not vanish");
        let err = fs::read(mount.message("INBOX", second)).expect_err("planted message");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        if victim.ends_with(format!("u.{second}")) {
            assert_eq!(
                fs::read(mount.message("INBOX", first)).unwrap(),
                bob.text("INBOX", first)
            );
        }
        let err = fs::read_dir(mount.mailbox("Work")).expect_err("a mailbox with linked index");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        let ls = Command::new(mailfs_bin())
            .args(["ls", &bob.location(), "INBOX"])
            .output()
            .unwrap();
        assert_never_shown("mailfs ls", &[ls.stdout, ls.stderr].concat(), &marker);
        let log = mount.stop();
        assert_never_shown("the mount's log", log.as_bytes(), &marker);
        assert!(log.contains("symbolic link"), "{log}");
    }
}

/// `.Stolen -> carol's Maildir` in bob's Maildir++ is not a mailbox of bob's; in a
/// `LAYOUT=fs` store, `loop -> .`, `loop2 -> .` and `usr -> /usr` are not followed: the
/// listing is bounded in time and memory.
#[test]
fn linked_mailboxes_and_loops_are_not_followed() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("sec_linked_boxes");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let (bob, carol) = (dovecot.user("bob"), dovecot.user("carol"));
    bob.save("INBOX", &email(1, "Bob's", "own mail"));
    carol.save("INBOX", &email(2, "CAROL-ONLY", "carol's private mail"));
    let stolen = bob.mail_root().join(".Stolen");
    as_owner(
        &dovecot,
        &format!(
            "ln -s {} {}",
            sh_quote(&carol.mail_root().display().to_string()),
            sh_quote(&stolen.display().to_string())
        ),
    );
    // Negative control: through the link, carol's messages are there.
    assert!(fs::read_dir(stolen.join("new")).unwrap().next().is_some());

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let top: Vec<String> = fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, vec!["INBOX".to_string()], "no Stolen mailbox");
    let (everything, _) = read_all(mount.path());
    assert!(!String::from_utf8_lossy(&everything).contains("CAROL-ONLY"));
    let log = mount.stop();
    assert!(
        log.contains(".Stolen") && log.contains("not followed"),
        "{log}"
    );

    // LAYOUT=fs with loops and a link out of the store.
    let dir2 = TestDir::new("sec_loops");
    let fsd = Dovecot::start(&dir2, Layout::FsSeparateIndexControl);
    let dave = fsd.user("dave");
    dave.create_mailbox("Work/Sub");
    dave.save("Work/Sub", &email(3, "Deep", "mail"));
    dave.save("INBOX", &email(4, "Top", "mail"));
    let root = dave.mail_root();
    as_owner(
        &fsd,
        &format!(
            "cd {r} && ln -s . loop && ln -s . loop2 && ln -s /usr usr && \
             ln -s .. Work/up && ln -s ../.. Work/Sub/upup",
            r = sh_quote(&root.display().to_string())
        ),
    );
    // Negative control: followed, the links branch without end (bounded here by depth).
    let followed = Command::new("find")
        .args(["-L"])
        .arg(&root)
        .args(["-maxdepth", "6"])
        .output()
        .unwrap();
    let followed_entries = followed.stdout.iter().filter(|b| **b == b'\n').count();
    assert!(
        followed_entries > 2000,
        "only {followed_entries} entries through the links"
    );

    let mount = Mount::start(&dave.location(), &dir2.join("mnt"), &[]);
    let started = Instant::now();
    let walked = Command::new("find").arg(mount.path()).output().unwrap();
    let elapsed = started.elapsed();
    assert!(walked.status.success(), "{}", show(&walked.stderr));
    let listed: Vec<String> = String::from_utf8_lossy(&walked.stdout)
        .lines()
        .map(|l| {
            l.strip_prefix(&*mount.path().to_string_lossy())
                .unwrap_or(l)
                .to_string()
        })
        .collect();
    assert!(
        listed.len() <= 8 && elapsed < Duration::from_secs(10),
        "{} entries in {elapsed:?}: {listed:?}",
        listed.len()
    );
    for name in ["loop", "loop2", "usr", "up", "upup"] {
        assert!(
            !listed.iter().any(|l| l.ends_with(&format!("/{name}"))),
            "{name} was followed: {listed:?}"
        );
    }
    let rss_kib = rss_kib(&mount);
    assert!(
        rss_kib < 100 * 1024,
        "daemon RSS {rss_kib} KiB after the walk"
    );
    mount.stop();
}

/// The daemon's resident memory, from /proc.
fn rss_kib(mount: &Mount) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", mount.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Makes every file of a store world-readable and every directory world-searchable, so
/// that only the directories a test closes decide what another user may read.
fn open_up(path: &Path) {
    let out = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// What `user` gets reading `raw` (the store) and `mounted` (the same message through the
/// mount): both refused, or both the same bytes.
fn same_verdict(user: &LocalUser, raw: &Path, mounted: &Path) -> bool {
    let (r, m) = (user.read(raw), user.read(mounted));
    match (&r, &m) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{} vs {}", raw.display(), mounted.display());
            true
        }
        (Err(_), Err(e)) => {
            assert!(
                e.contains("Permission denied"),
                "{}: {e}",
                mounted.display()
            );
            false
        }
        _ => panic!(
            "{}: raw {:?} but mounted {:?}",
            user.name,
            r.map(|b| b.len()),
            m.map(|b| b.len())
        ),
    }
}

/// One file of `dir` (a message file in `cur/` or `new/`).
fn a_message_file(mailbox_dir: &Path) -> PathBuf {
    for sub in ["cur", "new"] {
        if let Some(e) = fs::read_dir(mailbox_dir.join(sub))
            .unwrap()
            .flatten()
            .next()
        {
            return e.path();
        }
    }
    panic!("no message in {}", mailbox_dir.display());
}

/// A 0755 Maildir inside a 0700 home: another user is refused through the mount as on
/// disk; with the home opened, the same user reads the same bytes both ways.
#[test]
fn allow_other_honours_a_private_home() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("sec_private_home");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Private", "bob's"));
    open_up(&bob.home());
    let mallory = local_user("mailfs-mallory");
    let raw = a_message_file(&bob.mailbox_dir("INBOX"));
    for (home_mode, readable) in [(0o700, false), (0o755, true)] {
        set_mode(&bob.home(), home_mode);
        let mp = dir.join(format!("mnt{home_mode:o}"));
        let mount = Mount::start(&bob.location(), &mp, &["--allow-other"]);
        assert_eq!(
            same_verdict(&mallory, &raw, &mount.message("INBOX", uid)),
            readable,
            "home mode {home_mode:o}"
        );
        assert_eq!(mallory.list(&mount.mailbox("INBOX")).is_ok(), readable);
        mount.stop();
    }
}

/// A template `<home>/%u/Maildir` where bob's `%u` directory is 0700 and alice's 0755
/// (both Maildirs 0755 and world-readable): another user reads alice's mail and not
/// bob's, through the mount as on disk.
#[test]
fn allow_other_honours_a_private_user_directory() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("sec_private_userdir");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let (alice, bob) = (dovecot.user("alice"), dovecot.user("bob"));
    let a = alice.save("INBOX", &email(1, "Alice", "open"));
    let b = bob.save("INBOX", &email(2, "Bob", "closed"));
    for u in [&alice, &bob] {
        open_up(&u.home());
    }
    set_mode(&bob.home(), 0o700);
    let mallory = local_user("mailfs-mallory");
    let template = format!("maildir:{}/%u/Maildir", dovecot_home(&bob).display());
    let mount = Mount::start(&template, &dir.join("mnt"), &["--allow-other"]);
    let root = mount.path();
    assert!(same_verdict(
        &mallory,
        &a_message_file(&alice.mailbox_dir("INBOX")),
        &root.join(format!("alice/INBOX/{a}.eml"))
    ));
    assert!(!same_verdict(
        &mallory,
        &a_message_file(&bob.mailbox_dir("INBOX")),
        &root.join(format!("bob/INBOX/{b}.eml"))
    ));
    assert!(mallory.list(&root.join("bob/INBOX")).is_err());
    assert!(mallory.list(&root.join("alice/INBOX")).is_ok());
    mount.stop();
}

/// A `%d/%n` tree whose `hidden.test` domain directory is 0700: another user can neither
/// list the users of that domain (the mount root's listing would show them) nor read
/// their mail; a user of an open domain stays readable.
#[test]
fn allow_other_honours_a_private_domain_directory() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("sec_private_domain");
    let mail = dir.join("mail");
    let template = format!("maildir:{}/%d/%n", mail.display());
    let users = [
        ("bob@hidden.test", template.clone()),
        ("carol@open.test", template.clone()),
    ]
    .map(|(n, t)| (n.to_string(), t));
    let dovecot = Dovecot::start_users(&dir, &users);
    dovecot.mail_owned_dir(&dir, "mail");
    dovecot.doveadm_users(
        Users::All,
        &[],
        &["save"],
        &[],
        Some(&email(1, "Hi", "all")),
    );
    let (bob, carol) = (
        dovecot.user("bob@hidden.test"),
        dovecot.user("carol@open.test"),
    );
    open_up(&mail);
    set_mode(&mail.join("hidden.test"), 0o700);
    let (uid, gid) = dovecot.mail_owner();
    chown_recursive(&mail, uid, gid);
    let mallory = local_user("mailfs-mallory");
    // Negative control: on disk the domain hides its users.
    assert!(mallory.list(&mail.join("hidden.test")).is_err());
    let listed = mallory.list(&mail);
    assert!(listed.is_ok(), "{listed:?}");

    let mount = Mount::start(&template, &dir.join("mnt"), &["--allow-other"]);
    let root = mount.path();
    let names = fs::read_dir(root).unwrap().count();
    assert_eq!(names, 2, "root sees both users");
    match mallory.list(root) {
        Err(e) => assert!(e.contains("Permission denied"), "{e}"),
        Ok(names) => assert!(
            !names.iter().any(|n| n.contains("hidden")),
            "the hidden domain's users are listed to another user: {names:?}"
        ),
    }
    assert!(!same_verdict(
        &mallory,
        &a_message_file(&bob.mail_root()),
        &root.join("bob@hidden.test/INBOX/1.eml")
    ));
    assert!(same_verdict(
        &mallory,
        &a_message_file(&carol.mail_root()),
        &root.join("carol@open.test/INBOX/1.eml")
    ));
    mount.stop();
}

/// Sparse files cost their owner nothing: a 3 GiB `dovecot-uidlist` or index log is
/// refused (EIO, one log line), never read whole into memory; a 3 GiB cache file is
/// ignored (the cache is optional). The daemon's memory stays small.
#[test]
fn giant_sparse_files_are_refused_not_read() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("sec_sparse");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Hi", "there"));
    bob.create_mailbox("Work");
    let work_uid = bob.save("Work", &email(2, "Work", "stays readable"));
    let uidlist = bob.control_dir("INBOX").join("dovecot-uidlist");
    as_owner(
        &dovecot,
        &format!(
            "truncate -s 3G {}",
            sh_quote(&uidlist.display().to_string())
        ),
    );
    // Negative control: the file claims 3 GiB and occupies almost nothing.
    let meta = fs::metadata(&uidlist).unwrap();
    assert!(meta.len() >= 3 << 30);
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) < 1024);
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let err = fs::read_dir(mount.mailbox("INBOX"))
        .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
        .expect_err("a 3 GiB uidlist");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        fs::read(mount.message("Work", work_uid)).unwrap(),
        bob.text("Work", work_uid)
    );
    let rss = rss_kib(&mount);
    assert!(rss < 100 * 1024, "daemon RSS {rss} KiB");
    let log = mount.stop();
    assert!(log.contains("larger than"), "{log}");

    let dir = TestDir::new("sec_sparse_dbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::sdbox(""));
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Hi", "there"));
    bob.create_mailbox("Work");
    bob.save("Work", &email(2, "Work", "log"));
    let inbox_index = bob.index_dir("INBOX");
    let work_index = bob.index_dir("Work");
    as_owner(
        &dovecot,
        &format!(
            "truncate -s 3G {} {}",
            sh_quote(
                &inbox_index
                    .join("dovecot.index.cache")
                    .display()
                    .to_string()
            ),
            sh_quote(&work_index.join("dovecot.index.log").display().to_string()),
        ),
    );
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    assert_eq!(
        fs::read(mount.message("INBOX", uid)).unwrap(),
        bob.text("INBOX", uid),
        "a giant cache is ignored"
    );
    let err = fs::read_dir(mount.mailbox("Work"))
        .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
        .expect_err("a 3 GiB log");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let rss = rss_kib(&mount);
    assert!(rss < 100 * 1024, "daemon RSS {rss} KiB");
    mount.stop();
}

/// The rest of the adversarial pass: a mailbox's `cur/` replaced by a link to a directory
/// outside the store, a FIFO planted as a message, and, in a multi-user tree, a user's
/// `Maildir` replaced by a link to another user's: each gives EIO (visible), never the
/// linked-to names or bytes, and never a hang.
#[test]
fn linked_message_directories_fifos_and_user_roots_are_refused() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("sec_more_links");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let (bob, carol) = (dovecot.user("bob"), dovecot.user("carol"));
    bob.create_mailbox("Work");
    bob.save("Work", &email(1, "Work", "moved away"));
    let inbox_uid = bob.save("INBOX", &email(2, "Inbox", "stays"));
    bob.select("INBOX");
    carol.save("INBOX", &email(3, "CAROL-PRIVATE", "carol's"));
    let outside = dir.mkdir("outside/cur");
    fs::write(outside.join("OUTSIDE-NAME:2,S"), b"outside bytes\n").unwrap();
    let work = bob.mailbox_dir("Work");
    let fifo_uid = bob.status("INBOX").uidnext;
    as_owner(
        &dovecot,
        &format!(
            "rm -rf {w}/cur && ln -s {o} {w}/cur && mkfifo {i}/cur/17000900.M1.fifo:2, && \
             printf '{fifo_uid} :17000900.M1.fifo\\n' >> {c}/dovecot-uidlist",
            w = sh_quote(&work.display().to_string()),
            o = sh_quote(&outside.display().to_string()),
            i = sh_quote(&bob.mailbox_dir("INBOX").display().to_string()),
            c = sh_quote(&bob.control_dir("INBOX").display().to_string()),
        ),
    );
    // Negative control: followed, Work's cur/ shows the outside directory.
    assert!(fs::read_dir(work.join("cur")).unwrap().next().is_some());

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let err = fs::read_dir(mount.mailbox("Work"))
        .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
        .expect_err("Work's cur/ is a link");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let started = Instant::now();
    let err = fs::read(mount.message("INBOX", fifo_uid)).expect_err("a FIFO");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a FIFO made a read wait"
    );
    assert_eq!(
        fs::read(mount.message("INBOX", inbox_uid)).unwrap(),
        bob.text("INBOX", inbox_uid)
    );
    let (everything, _) = read_all(mount.path());
    assert!(!String::from_utf8_lossy(&everything).contains("outside bytes"));
    let log = mount.stop();
    assert!(!log.contains("OUTSIDE-NAME"), "{log}");

    // A user's Maildir swapped for a link to carol's, in a %u tree.
    let bob_root = bob.mail_root();
    as_owner(
        &dovecot,
        &format!(
            "mv {b} {b}.old && ln -s {c} {b}",
            b = sh_quote(&bob_root.display().to_string()),
            c = sh_quote(&carol.mail_root().display().to_string()),
        ),
    );
    let template = format!("maildir:{}/%u/Maildir", dovecot_home(&bob).display());
    let mount = Mount::start(&template, &dir.join("mnt2"), &[]);
    let users: Vec<String> = fs::read_dir(mount.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        users.contains(&"bob".to_string()),
        "bob stays listed: {users:?}"
    );
    let err = fs::read_dir(mount.path().join("bob"))
        .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
        .expect_err("bob's Maildir is a link");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let (everything, _) = read_all(&mount.path().join("bob"));
    assert!(!String::from_utf8_lossy(&everything).contains("CAROL-PRIVATE"));
    let log = mount.stop();
    assert!(log.contains("symbolic link"), "{log}");
}
