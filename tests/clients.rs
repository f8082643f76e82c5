//! Mail clients and tools nobody here wrote, on real mounts: rsync, Python (`open`,
//! `mailbox`), notmuch, neomutt, mblaze. `scripts/test.sh` installs them from Debian.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::corpus::{SourceMaildir, email};
use crate::util::dovecot::{DboxLayout, Dovecot, Layout};
use crate::util::fsx::dir_names;
use crate::util::mount::Mount;
use crate::util::{TestDir, show, tool, wait_for};

/// Runs a client; panics unless it exits 0. Its stdout.
#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        show(&out.stdout),
        show(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rsync -aX --itemize-changes SRC/ DEST/`: one line per item rsync changed.
fn rsync(src: &Path, dest: &Path) -> Vec<String> {
    let out = run(Command::new(tool("rsync"))
        .arg("-aX")
        .arg("--itemize-changes")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dest.display())));
    out.lines().map(str::to_string).collect()
}

/// A backup of an unchanged mount is a no-op: `rsync -aX` twice transfers nothing the
/// second time. The root's `user.mailfs.status` (whose counters move with every request)
/// is readable by name but not listed, so rsync never sees it; directory times do not
/// move without a change.
#[test]
fn rsync_twice_transfers_nothing_the_second_time() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("cl_rsync");
    let dovecot = Dovecot::start(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Work");
    for n in 0..3 {
        bob.save("INBOX", &email(n, "Backed up", "body"));
    }
    bob.save("Work", &email(7, "Work", "body"));
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let dest = dir.mkdir("backup");
    let first = rsync(mount.path(), &dest);
    assert!(
        first.iter().any(|l| l.ends_with("INBOX/1.eml")),
        "the first run copies the messages: {first:?}"
    );
    let status = crate::util::fsx::xattr_string(mount.path(), "user.mailfs.status");
    assert!(
        status.contains("reads_served"),
        "readable by name: {status}"
    );
    let second = rsync(mount.path(), &dest);
    assert!(
        second.is_empty(),
        "the second run changed something: {second:?}"
    );
    // And a change is a change: one delivery, one new file (and its directory's times).
    bob.save("INBOX", &email(9, "New", "body"));
    let third = rsync(mount.path(), &dest);
    assert!(
        third.iter().any(|l| l.ends_with("INBOX/4.eml")),
        "the third run copies the new message: {third:?}"
    );
    assert!(!mount.stop().contains("panicked"));
}

/// Python's `open()` asks the kernel whether the file is a terminal (an ioctl the kernel
/// passes to mailfs). Opening and reading 300 messages with Python logs no warning at all.
#[test]
fn python_open_of_many_messages_logs_no_warning() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("cl_pyopen");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Opened");
    let mut source = SourceMaildir::new(&dir.join("src"), "Opened");
    for n in 0..300 {
        source.add(
            &email(n, "Opened", "by Python"),
            "",
            1_700_000_000 + n as u64,
        );
    }
    bob.import(source.root(), "Opened");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let before = mount.log();
    let script = "import os, sys\n\
                  d = sys.argv[1]\n\
                  n = 0\n\
                  for name in sorted(os.listdir(d)):\n\
                  \x20   with open(os.path.join(d, name)) as f:\n\
                  \x20       f.read()\n\
                  \x20   n += 1\n\
                  print(n)\n";
    let out = run(Command::new(tool("python3"))
        .arg("-c")
        .arg(script)
        .arg(mount.mailbox("Opened")));
    assert_eq!(out.trim(), "300", "messages Python opened");
    let log = mount.log();
    let grown = &log[before.len()..];
    assert!(
        grown.trim().is_empty(),
        "opening 300 messages from Python logged:\n{}",
        &grown[..grown.len().min(2000)]
    );
    assert!(!mount.stop().contains("panicked"));
}

/// A notmuch configuration with its database in `dir` and `mail_root` on the mount.
struct Notmuch {
    config: PathBuf,
}

impl Notmuch {
    fn new(dir: &TestDir, mail_root: &Path, synchronize_flags: bool) -> Notmuch {
        let db = dir.mkdir("notmuch-db");
        let config = dir.join("notmuch-config");
        fs::write(
            &config,
            format!(
                "[database]\npath={}\nmail_root={}\n\n[user]\nname=Test\n\
                 primary_email=test@example.org\n\n[new]\ntags=unread;inbox;\nignore=\n\n\
                 [search]\nexclude_tags=\n\n[maildir]\nsynchronize_flags={synchronize_flags}\n",
                db.display(),
                mail_root.display()
            ),
        )
        .expect("writing the notmuch config");
        Notmuch { config }
    }

    /// `notmuch ARGS...`; its stdout.
    fn run(&self, args: &[&str]) -> String {
        run(Command::new(tool("notmuch"))
            .env("NOTMUCH_CONFIG", &self.config)
            .env("HOME", self.config.parent().expect("dir"))
            .args(args))
    }

    /// `notmuch new` (no full scan); the number of messages it says it added.
    fn new_mail(&self) -> usize {
        let out = self.run(&["new", "--quiet"]);
        assert!(out.trim().is_empty(), "notmuch new --quiet said: {out}");
        self.count("*")
    }

    fn count(&self, query: &str) -> usize {
        let out = self.run(&["count", query]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("notmuch count {query}: {out}"))
    }

    /// The files notmuch has for a Message-ID.
    fn files(&self, message_id: &str) -> Vec<String> {
        self.run(&["search", "--output=files", &format!("id:{message_id}")])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// `notmuch new` with `mail_root` on the mount indexes every message; after one delivery a
/// plain `notmuch new` (no `--full-scan`) adds exactly that message: the mailbox
/// directory's mtime moved, whatever the format (Dovecot does not touch a dbox mailbox's
/// directory on delivery).
fn notmuch_sees_a_delivery(test: &str, layout: Layout) {
    require!(Dovecot, Fuse);
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Work");
    for n in 0..4 {
        bob.save("INBOX", &email(n, "Indexed", "by notmuch"));
    }
    bob.save("Work", &email(10, "Work", "by notmuch"));
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let notmuch = Notmuch::new(&dir, mount.path(), false);
    // notmuch does not record a directory time equal to the current second (it rescans
    // such a directory next time), which would hide a time that never moves.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        notmuch.new_mail(),
        5,
        "the first notmuch new indexes every message"
    );
    assert_eq!(
        notmuch.files("3.mailfs-test@example.org"),
        vec![mount.message("INBOX", 4).display().to_string()]
    );
    std::thread::sleep(Duration::from_millis(1100));
    let uid = bob.save("INBOX", &email(20, "Delivered", "after the first run"));
    let flagged = bob.uids("Work")[0];
    bob.flags_add("Work", flagged, "\\Flagged");
    assert_eq!(
        notmuch.new_mail(),
        6,
        "notmuch new after one delivery adds exactly it"
    );
    assert_eq!(
        notmuch.files("20.mailfs-test@example.org"),
        vec![mount.message("INBOX", uid).display().to_string()]
    );
    assert_eq!(notmuch.new_mail(), 6, "nothing more without a change");
    assert!(!mount.stop().contains("panicked"));
}

#[test]
fn notmuch_new_sees_a_delivery_maildir() {
    notmuch_sees_a_delivery("cl_nm_maildir", Layout::MaildirPlusPlus);
}

#[test]
fn notmuch_new_sees_a_delivery_sdbox() {
    notmuch_sees_a_delivery("cl_nm_sdbox", DboxLayout::sdbox(""));
}

#[test]
fn notmuch_new_sees_a_delivery_mdbox() {
    notmuch_sees_a_delivery("cl_nm_mdbox", Layout::Mdbox);
}

/// A dbox mailbox directory's mtime and ctime stay put while nothing changes and move
/// forward on a flag change alone (an index log record: no directory of the store moves).
#[test]
fn dbox_mailbox_times_move_on_a_flag_change() {
    use std::os::unix::fs::MetadataExt;
    require!(Dovecot, Fuse);
    let dir = TestDir::new("cl_dirtime");
    let dovecot = Dovecot::start(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Flag me", "body"));
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let inbox = mount.mailbox("INBOX");
    let times = || {
        let m = fs::metadata(&inbox).expect("stat INBOX");
        (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
    };
    assert_eq!(dir_names(&inbox).expect("listing").len(), 1);
    let before = times();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(times(), before, "nothing changed, nor did the times");
    bob.flags_add("INBOX", uid, "\\Seen");
    let after = wait_for(Duration::from_secs(5), "INBOX's mtime to move", || {
        let t = times();
        (t != before).then_some(t)
    });
    assert!(
        (after.0, after.1) > (before.0, before.1),
        "forward: {before:?} -> {after:?}"
    );
    assert_eq!(
        (after.0, after.1),
        (after.2, after.3),
        "ctime moves with mtime"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(times(), after, "stable again");
    assert!(!mount.stop().contains("panicked"));
}

// ---------------------------------------------------------------------------------------
// --layout maildir

/// The Maildir info letter of each system flag (Maildir specification; Dovecot's
/// maildir-filename-flags.c).
const SYSTEM_LETTERS: [(&str, char); 5] = [
    ("\\Draft", 'D'),
    ("\\Flagged", 'F'),
    ("\\Answered", 'R'),
    ("\\Seen", 'S'),
    ("\\Deleted", 'T'),
];

/// Keywords used by [`populate_flagged`].
const KEYWORDS: [&str; 2] = ["$Label1", "later"];

/// INBOX with every system flag and two keywords among six messages (the sixth has every
/// keyword, so doveadm's order of its flags is the mailbox's keyword order), and a nested
/// `Work/Sub` with one seen message.
fn populate_flagged(bob: &crate::util::dovecot::User<'_>) {
    let flags: [&str; 6] = [
        "",
        "\\Seen",
        "\\Seen \\Flagged $Label1",
        "\\Answered \\Seen later",
        "\\Draft \\Deleted",
        "\\Flagged $Label1 later",
    ];
    for (n, f) in flags.iter().enumerate() {
        let uid = bob.save("INBOX", &email(n, &format!("Flags {f}"), "body"));
        if !f.is_empty() {
            bob.flags_add("INBOX", uid, f);
        }
    }
    bob.create_mailbox("Work/Sub");
    let uid = bob.save("Work/Sub", &email(30, "Nested", "body"));
    bob.flags_add("Work/Sub", uid, "\\Seen");
}

/// Keyword name -> Maildir letter as the store assigns them: a Maildir store's
/// `dovecot-keywords` (Dovecot's own letters), else the index's keyword order, which is
/// the order doveadm prints the keywords of a message that has them all.
fn keyword_letters(
    bob: &crate::util::dovecot::User<'_>,
    maildir_store: bool,
) -> BTreeMap<String, char> {
    if maildir_store {
        let text = fs::read_to_string(bob.control_dir("INBOX").join("dovecot-keywords"))
            .expect("reading dovecot-keywords");
        return text
            .lines()
            .filter_map(|l| {
                let (i, name) = l.split_once(' ')?;
                Some((name.to_string(), char::from(b'a' + i.parse::<u8>().ok()?)))
            })
            .collect();
    }
    let flags = bob.fetch_flags("INBOX");
    let all = &flags.last().expect("messages").1;
    all.iter()
        .filter(|f| !f.starts_with('\\'))
        .enumerate()
        .map(|(i, k)| (k.clone(), char::from(b'a' + i as u8)))
        .collect()
}

/// doveadm's flags as Maildir info letters (sorted, as in a Maildir name).
fn letters(flags: &str, keywords: &BTreeMap<String, char>) -> String {
    let mut out: Vec<char> = flags
        .split(' ')
        .filter(|f| !f.is_empty())
        .map(|f| {
            SYSTEM_LETTERS
                .iter()
                .find(|(n, _)| *n == f)
                .map(|(_, l)| *l)
                .or_else(|| keywords.get(f).copied())
                .unwrap_or_else(|| panic!("no letter for {f}"))
        })
        .collect();
    out.sort_unstable();
    out.into_iter().collect()
}

/// Python's `mailbox.Maildir` over a `--layout maildir` mount: every key, every message's
/// bytes (equal to `doveadm fetch text`) and `get_flags()` (equal to doveadm's flags).
fn python_maildir_matches_doveadm(test: &str, layout: Layout, maildir_store: bool) {
    require!(Dovecot, Fuse);
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    populate_flagged(&bob);
    let keywords = keyword_letters(&bob, maildir_store);
    assert_eq!(keywords.len(), KEYWORDS.len(), "{keywords:?}");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &["--layout", "maildir"]);
    let script = "import mailbox, sys\n\
                  md = mailbox.Maildir(sys.argv[1], create=False)\n\
                  for key in sorted(md.keys()):\n\
                  \x20   m = md.get_message(key)\n\
                  \x20   print(key, m.get_subdir(), m.get_flags() or '-', md.get_bytes(key).hex())\n";
    for mailbox in ["INBOX", "Work/Sub"] {
        let path = mount.mailbox(mailbox);
        for sub in ["new", "tmp"] {
            assert_eq!(
                dir_names(&path.join(sub)).expect("listing").len(),
                0,
                "{mailbox}/{sub} is empty"
            );
        }
        let out = run(Command::new(tool("python3"))
            .arg("-c")
            .arg(script)
            .arg(&path));
        let got: Vec<(String, String, String, Vec<u8>)> = out
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 4, "python printed {l:?}");
                let bytes = (0..f[3].len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&f[3][i..i + 2], 16).expect("hex"))
                    .collect();
                let flags = if f[2] == "-" { "" } else { f[2] };
                (f[0].to_string(), f[1].to_string(), flags.to_string(), bytes)
            })
            .collect();
        let want: Vec<(String, String, String, Vec<u8>)> = bob
            .fetch(mailbox)
            .into_iter()
            .map(|m| {
                (
                    format!(
                        "{}.{},S={},W={}",
                        m.uid,
                        m.guid.split(',').next().unwrap_or_default(),
                        m.size,
                        m.vsize
                    ),
                    "cur".to_string(),
                    letters(&m.flags, &keywords),
                    m.text,
                )
            })
            .collect();
        let mut want = want;
        want.sort();
        assert_eq!(got.len(), want.len(), "{mailbox}: keys {got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((&g.0, &g.1, &g.2), (&w.0, &w.1, &w.2), "{mailbox}");
            crate::util::assert_bytes_eq(&g.3, &w.3, &format!("{mailbox} {}", g.0));
        }
    }
    // A flag change renames the message in cur/ (within the kernel's 60 s caches): the
    // old name is gone, the new one has the letter.
    let cur = mount.mailbox("INBOX").join("cur");
    let first = |names: &BTreeSet<String>| {
        names
            .iter()
            .find(|n| n.starts_with("1."))
            .cloned()
            .expect("UID 1 in cur/")
    };
    let old = first(&dir_names(&cur).expect("listing cur"));
    assert!(old.ends_with(":2,"), "UID 1 has no flags yet: {old}");
    bob.flags_add("INBOX", 1, "\\Flagged");
    let new = wait_for(Duration::from_secs(5), "the new name in cur/", || {
        let n = first(&dir_names(&cur).ok()?);
        (n != old).then_some(n)
    });
    assert!(new.ends_with(":2,F"), "{new}");
    assert!(cur.join(&new).is_file(), "{new} opens");
    assert!(!cur.join(&old).exists(), "{old} is gone");
    assert!(!mount.stop().contains("panicked"));
}

#[test]
fn python_maildir_over_layout_maildir_maildir_store() {
    python_maildir_matches_doveadm("cl_pymd_maildir", Layout::MaildirPlusPlus, true);
}

#[test]
fn python_maildir_over_layout_maildir_sdbox() {
    python_maildir_matches_doveadm("cl_pymd_sdbox", DboxLayout::sdbox(""), false);
}

#[test]
fn python_maildir_over_layout_maildir_mdbox() {
    python_maildir_matches_doveadm("cl_pymd_mdbox", Layout::Mdbox, false);
}

/// neomutt in a tmux pane (`-R -f MOUNT/INBOX`) over a `--layout maildir` mount: its
/// status line's message and flagged counts equal doveadm's. The status line is ours
/// (`status_format`), the counts are neomutt's.
fn neomutt_counts(dir: &TestDir, mailbox: &Path) -> (usize, usize) {
    let rc = dir.join("muttrc");
    fs::write(
        &rc,
        format!(
            "set mbox_type=Maildir\nset folder={}\nset spoolfile=\"\"\nset record=\"\"\n\
             set postponed=\"\"\nset header_cache=\"\"\nset mail_check_stats=no\n\
             set status_format=\"NMSTATUS msgs=%m flagged=%F end\"\n",
            mailbox.parent().expect("parent").display()
        ),
    )
    .expect("writing muttrc");
    // One session per test (tests run in parallel in one process).
    let session = format!("mailfs-{}", crate::util::name_of(dir.path())).replace(['.', ':'], "-");
    let cmd = format!(
        "HOME={} neomutt -n -F {} -R -f {}",
        dir.path().display(),
        rc.display(),
        mailbox.display()
    );
    run(Command::new(tool("tmux")).args([
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "40",
        &cmd,
    ]));
    let capture = || {
        Command::new(tool("tmux"))
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let screen = wait_for(Duration::from_secs(15), "neomutt's status line", || {
        let s = capture();
        s.contains("NMSTATUS").then_some(s)
    });
    let _ = Command::new(tool("tmux"))
        .args(["kill-session", "-t", &session])
        .status();
    let line = screen
        .lines()
        .find(|l| l.contains("NMSTATUS"))
        .expect("status line");
    let field = |k: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in neomutt's status line: {screen}"))
    };
    (field("msgs="), field("flagged="))
}

/// `mlist DIR | mscan`: per Message-ID, mscan's flag mark (`%u`) and replied mark (`%r`).
fn mscan_marks(mailbox: &Path) -> BTreeMap<String, (char, char)> {
    let list = run(Command::new(tool("mlist")).arg(mailbox));
    let out = run(Command::new(tool("mscan"))
        .args(["-f", "%I|%u|%r"])
        .args(list.lines()));
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 3, "mscan printed {l:?}");
            let c = |s: &str| s.chars().next().unwrap_or(' ');
            (
                f[0].trim_matches(['<', '>']).to_string(),
                (c(f[1]), c(f[2])),
            )
        })
        .collect()
}

/// neomutt, mblaze and notmuch (with `synchronize_flags`) over a `--layout maildir` mount
/// read the flags doveadm reports.
fn clients_read_flags(test: &str, layout: Layout) {
    require!(Dovecot, Fuse);
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    populate_flagged(&bob);
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &["--layout", "maildir"]);
    let inbox = mount.mailbox("INBOX");
    let fetched = bob.fetch("INBOX");
    let has = |m: &crate::util::dovecot::Message, f: &str| m.flags.split(' ').any(|x| x == f);
    let flagged = fetched.iter().filter(|m| has(m, "\\Flagged")).count();
    assert!(flagged > 0 && flagged < fetched.len());

    // neomutt
    assert_eq!(
        neomutt_counts(&dir, &inbox),
        (fetched.len(), flagged),
        "neomutt's message and flagged counts"
    );

    // mblaze: '*' only on a flagged message, '.' only on an unseen one, 'x' only on a
    // deleted one, ' ' only on a seen one with neither; '-' exactly on answered ones.
    let marks = mscan_marks(&inbox);
    assert_eq!(marks.len(), fetched.len(), "mscan lines: {marks:?}");
    for m in &fetched {
        let id = String::from_utf8_lossy(&m.text)
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .map(|v| v.trim_end_matches('>').to_string())
            .expect("Message-ID");
        let (u, r) = marks[&id];
        let ok = match u {
            '*' => has(m, "\\Flagged"),
            '.' => !has(m, "\\Seen"),
            'x' => has(m, "\\Deleted"),
            ' ' => has(m, "\\Seen") && !has(m, "\\Flagged") && !has(m, "\\Deleted"),
            _ => false,
        };
        assert!(ok, "mscan mark {u:?} for flags {:?}", m.flags);
        assert_eq!(
            r == '-',
            has(m, "\\Answered"),
            "mscan %r {r:?} for {:?}",
            m.flags
        );
    }

    // notmuch with synchronize_flags: unread, flagged, replied, draft tags equal the flags.
    let notmuch = Notmuch::new(&dir, mount.path(), true);
    assert_eq!(notmuch.new_mail(), fetched.len() + 1, "INBOX and Work/Sub");
    for m in &fetched {
        let id = String::from_utf8_lossy(&m.text)
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .map(|v| v.trim_end_matches('>').to_string())
            .expect("Message-ID");
        let tags: BTreeSet<String> = notmuch
            .run(&["search", "--output=tags", &format!("id:{id}")])
            .lines()
            .map(str::to_string)
            .collect();
        for (tag, on) in [
            ("unread", !has(m, "\\Seen")),
            ("flagged", has(m, "\\Flagged")),
            ("replied", has(m, "\\Answered")),
            ("draft", has(m, "\\Draft")),
        ] {
            assert_eq!(
                tags.contains(tag),
                on,
                "notmuch tag {tag} of {id} (flags {:?}; tags {tags:?})",
                m.flags
            );
        }
    }
    assert!(!mount.stop().contains("panicked"));
}

#[test]
fn clients_read_flags_maildir_store() {
    clients_read_flags("cl_flags_maildir", Layout::MaildirPlusPlus);
}

#[test]
fn clients_read_flags_sdbox() {
    clients_read_flags("cl_flags_sdbox", DboxLayout::sdbox(""));
}

#[test]
fn clients_read_flags_mdbox() {
    clients_read_flags("cl_flags_mdbox", Layout::Mdbox);
}

/// In a multi-user tree, each user's mailbox has its own directory times: a flag change in
/// bob's INBOX moves `bob/INBOX`'s mtime and not `alice/INBOX`'s (their stores' views are
/// both named INBOX).
#[test]
fn multi_user_mailbox_times_are_per_user() {
    use std::os::unix::fs::MetadataExt;
    require!(Dovecot, Fuse);
    let dir = TestDir::new("cl_mu_times");
    let mail = dir.join("mail");
    let template = format!("{}/%u", mail.display());
    let dovecot = Dovecot::start_users(
        &dir,
        &[
            ("alice".to_string(), format!("mdbox:{template}")),
            ("bob".to_string(), format!("mdbox:{template}")),
        ],
    );
    dovecot.mail_owned_dir(&dir, "mail");
    let alice = dovecot.user("alice");
    let bob = dovecot.user("bob");
    alice.save_opts(&[], "INBOX", &email(1, "Alice's", "body"));
    bob.save_opts(&[], "INBOX", &email(2, "Bob's", "body"));
    let mount = Mount::start(&template, &dir.join("mnt"), &[]);
    let time = |user: &str| {
        let m = fs::metadata(mount.path().join(user).join("INBOX")).expect("stat");
        (m.mtime(), m.mtime_nsec())
    };
    for user in ["alice", "bob"] {
        assert_eq!(
            dir_names(&mount.path().join(user).join("INBOX"))
                .expect("listing")
                .len(),
            1
        );
    }
    let (a0, b0) = (time("alice"), time("bob"));
    std::thread::sleep(Duration::from_millis(1100));
    bob.flags_add("INBOX", bob.uids("INBOX")[0], "\\Seen");
    let b1 = wait_for(Duration::from_secs(5), "bob/INBOX's mtime to move", || {
        let t = time("bob");
        (t != b0).then_some(t)
    });
    assert!(b1 > b0, "forward: {b0:?} -> {b1:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(time("alice"), a0, "alice's INBOX did not change");
    assert!(!mount.stop().contains("panicked"));
}

/// With `--rw --layout maildir`, what Maildir clients do is carried out by Dovecot: a
/// rename changing the `:2,` info sets the flags (Python's `os.rename`, mblaze's `mflag`),
/// `rm` expunges, a file written into `tmp/` and renamed into `new/` or `cur/` is saved
/// (Python's `mailbox.Maildir.add`, mblaze's `mdeliver`); nothing else is done inside
/// `cur/`, `new/`, `tmp/`.
#[test]
fn maildir_layout_rw_renames_set_flags_unlink_expunges_tmp_delivers() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("cl_md_rw");
    let dovecot = Dovecot::start(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    populate_flagged(&bob);
    let keywords = keyword_letters(&bob, false);
    let mailboxes = bob.list();
    let socket = dovecot.doveadm_socket();
    let mount = Mount::start(
        &bob.location(),
        &dir.join("mnt"),
        &[
            "--layout",
            "maildir",
            "--rw",
            "--user",
            "bob",
            "--doveadm",
            socket.to_str().expect("UTF-8 socket path"),
        ],
    );
    let cur = mount.mailbox("INBOX").join("cur");
    let name_of_uid = |uid: u32| {
        dir_names(&cur)
            .expect("listing cur")
            .into_iter()
            .find(|n| n.starts_with(&format!("{uid}.")))
            .unwrap_or_else(|| panic!("UID {uid} in cur/"))
    };
    let flags_of = |uid: u32| {
        bob.fetch("INBOX")
            .into_iter()
            .find(|m| m.uid == uid)
            .map(|m| m.flags)
            .unwrap_or_else(|| panic!("UID {uid} in doveadm"))
    };
    // Python renames UID 1 (no flags) to flagged, seen, with the second keyword.
    let old = name_of_uid(1);
    let later = keywords["later"];
    let new = old.replace(":2,", &format!(":2,FS{later}"));
    run(Command::new(tool("python3")).args([
        "-c",
        "import os, sys; os.rename(sys.argv[1], sys.argv[2])",
        cur.join(&old).to_str().expect("UTF-8"),
        cur.join(&new).to_str().expect("UTF-8"),
    ]));
    assert_eq!(
        flags_of(1),
        "\\Flagged \\Seen later",
        "after Python's rename"
    );
    assert_eq!(letters(&flags_of(1), &keywords), format!("FS{later}"));
    assert!(cur.join(&new).is_file(), "the new name is the message");
    assert!(!cur.join(&old).exists(), "the old name is gone");
    // mblaze: mflag -S marks UID 5 (\Draft \Deleted) seen; -t unmarks trashed.
    let five = cur.join(name_of_uid(5));
    run(Command::new(tool("mflag")).arg("-S").arg(&five));
    assert_eq!(flags_of(5), "\\Deleted \\Seen \\Draft", "after mflag -S");
    run(Command::new(tool("mflag"))
        .arg("-t")
        .arg(cur.join(name_of_uid(5))));
    assert_eq!(flags_of(5), "\\Seen \\Draft", "after mflag -t");
    // rm expunges.
    fs::remove_file(cur.join(name_of_uid(2))).expect("rm of a message in cur/");
    assert!(!bob.uids("INBOX").contains(&2), "UID 2 expunged");
    // Delivery through tmp/: Python's mailbox.Maildir.add (tmp/, then link, refused with
    // EPERM, then rename into new/) and mblaze's mdeliver -c -X FS (into cur/ with flags).
    let python_msg = email(40, "Delivered by Python", "through tmp/");
    let src = dir.join("python.eml");
    fs::write(&src, &python_msg).expect("writing the message");
    let before: BTreeSet<u32> = bob.uids("INBOX").into_iter().collect();
    run(Command::new(tool("python3")).args([
        "-c",
        "import mailbox, sys; md = mailbox.Maildir(sys.argv[1], create=False); \
         print(md.add(open(sys.argv[2], 'rb').read()))",
        mount.mailbox("INBOX").to_str().expect("UTF-8"),
        src.to_str().expect("UTF-8"),
    ]));
    let new_uids = |before: &BTreeSet<u32>| -> Vec<u32> {
        bob.uids("INBOX")
            .into_iter()
            .filter(|u| !before.contains(u))
            .collect()
    };
    let added = new_uids(&before);
    assert_eq!(added.len(), 1, "Python's add saved one message");
    assert_eq!(bob.text("INBOX", added[0]), python_msg, "its bytes");
    let before: BTreeSet<u32> = bob.uids("INBOX").into_iter().collect();
    let mdeliver_msg = email(41, "Delivered by mdeliver", "into cur/ with flags");
    let mut child = Command::new(tool("mdeliver"))
        .args(["-c", "-X", "FS"])
        .arg(mount.mailbox("INBOX"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("mdeliver");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&mdeliver_msg)
        .expect("writing to mdeliver");
    assert!(child.wait().expect("mdeliver").success(), "mdeliver failed");
    let added = new_uids(&before);
    assert_eq!(added.len(), 1, "mdeliver saved one message");
    assert_eq!(bob.text("INBOX", added[0]), mdeliver_msg, "its bytes");
    assert_eq!(flags_of(added[0]), "\\Flagged \\Seen", "its flags");
    // A file written into tmp/ and removed there is no delivery.
    let count = bob.uids("INBOX").len();
    let stray = mount.mailbox("INBOX").join("tmp").join("stray");
    fs::write(&stray, b"Subject: never delivered\n\n").expect("writing into tmp/");
    fs::remove_file(&stray).expect("removing it");
    assert_eq!(
        bob.uids("INBOX").len(),
        count,
        "nothing saved from tmp/ alone"
    );
    // A rename that changes the UID, and anything else in cur/new/tmp, is refused.
    let three = name_of_uid(3);
    let err = fs::rename(cur.join(&three), cur.join(three.replacen('3', "9", 1)))
        .expect_err("renaming to another UID");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    for (what, r) in [
        ("mkdir cur/x", fs::create_dir(cur.join("x"))),
        (
            "rmdir new",
            fs::remove_dir(mount.mailbox("INBOX").join("new")),
        ),
        (
            "create new/x",
            fs::write(mount.mailbox("INBOX").join("new/x"), b"x"),
        ),
        (
            "create INBOX/x",
            fs::write(mount.mailbox("INBOX").join("x"), b"x"),
        ),
    ] {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{what}: {e}");
    }
    assert_eq!(bob.list(), mailboxes, "no mailbox made or deleted");
    assert!(!mount.stop().contains("panicked"));
}
