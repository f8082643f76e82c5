//! `mailfs ls` and `mailfs cat` compared with doveadm, and their exit codes
//! (0 ok, 1 runtime error, 2 usage).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::process::Output;

use crate::util::corpus::{email, populate_varied, write_with_mtime};
use crate::util::dovecot::{Dovecot, Layout, Message, User};
use crate::util::mount::mailfs;
use crate::util::{TestDir, assert_bytes_eq, chown_recursive, show};

/// One line of `mailfs ls LOCATION MAILBOX`:
/// `name uid size vsize received saved guid flags`, TAB-separated.
#[derive(Debug, PartialEq, Eq)]
struct LsLine {
    name: String,
    uid: Option<u32>,
    size: u64,
    vsize: u64,
    received: i64,
    saved: i64,
    guid: String,
    flags: String,
}

fn parse_ls(stdout: &[u8]) -> Vec<LsLine> {
    let text = std::str::from_utf8(stdout).expect("mailfs ls printed non-UTF-8");
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert!(
                f.len() == 8 || f.len() == 7,
                "want 8 TAB-separated fields: {line:?}"
            );
            let num = |i: usize| -> i64 {
                f[i].parse()
                    .unwrap_or_else(|_| panic!("field {i} not a number: {line:?}"))
            };
            LsLine {
                name: f[0].to_string(),
                uid: if f[1] == "-" {
                    None
                } else {
                    Some(num(1) as u32)
                },
                size: num(2) as u64,
                vsize: num(3) as u64,
                received: num(4),
                saved: num(5),
                guid: f[6].to_string(),
                flags: f.get(7).unwrap_or(&"").to_string(),
            }
        })
        .collect()
}

fn expected_line(m: &Message) -> LsLine {
    LsLine {
        name: format!("{}.eml", m.uid),
        uid: Some(m.uid),
        size: m.size,
        vsize: m.vsize,
        received: m.received,
        saved: m.saved,
        guid: m.guid.clone(),
        flags: m.flags.clone(),
    }
}

#[track_caller]
fn ok_stdout(out: &Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        show(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{what} panicked"
    );
    out.stdout.clone()
}

fn ls(location: &str, mailbox: Option<&str>) -> Output {
    let mut args: Vec<&OsStr> = vec!["ls".as_ref(), location.as_ref()];
    args.extend(mailbox.map(OsStr::new));
    mailfs(args)
}

fn cat(location: &str, mailbox: &str, uid: &str) -> Output {
    mailfs(["cat", location, mailbox, uid])
}

fn ls_and_cat_match_dovecot(user: &User<'_>, location: &str) {
    // Mailboxes: every selectable one, maybe also parents that are none, nothing else.
    let printed: BTreeSet<String> = String::from_utf8(ok_stdout(&ls(location, None), "mailfs ls"))
        .expect("UTF-8 mailbox names")
        .lines()
        .map(str::to_string)
        .collect();
    let statuses = user.statuses();
    let selectable: BTreeSet<String> = statuses.keys().cloned().collect();
    let listed: BTreeSet<String> = user.list().into_iter().collect();
    assert!(
        printed.is_superset(&selectable),
        "mailfs ls {printed:?} lacks some of {selectable:?}"
    );
    assert!(
        printed.is_subset(&listed),
        "mailfs ls {printed:?} has names doveadm lacks {listed:?}"
    );

    let mut messages = 0;
    for mailbox in &selectable {
        let fetched = user.fetch(mailbox);
        let lines = parse_ls(&ok_stdout(
            &ls(location, Some(mailbox)),
            "mailfs ls MAILBOX",
        ));
        let expected: Vec<LsLine> = fetched.iter().map(expected_line).collect();
        let sorted = |mut v: Vec<LsLine>| {
            v.sort_by_key(|l| l.uid);
            v
        };
        assert_eq!(sorted(lines), expected, "mailfs ls {location} {mailbox}");
        for m in &fetched {
            let out = cat(location, mailbox, &m.uid.to_string());
            let bytes = ok_stdout(&out, "mailfs cat");
            assert_bytes_eq(&bytes, &m.text, &format!("mailfs cat {mailbox} {}", m.uid));
        }
        messages += fetched.len();
    }
    assert!(messages >= 20, "compared only {messages} messages");
}

#[test]
fn ls_and_cat_match_dovecot_maildirpp() {
    require!(Dovecot);
    let dir = TestDir::new("cli_varied_pp");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    populate_varied(&bob, &dir.mkdir("scratch"));
    ls_and_cat_match_dovecot(&bob, &bob.location());
    // The bare path is detected as the same store.
    let bare = bob.mail_root().display().to_string();
    assert_eq!(
        ok_stdout(&ls(&bare, None), "mailfs ls BARE"),
        ok_stdout(&ls(&bob.location(), None), "mailfs ls")
    );
}

#[test]
fn ls_and_cat_match_dovecot_fs_layout() {
    require!(Dovecot);
    let dir = TestDir::new("cli_varied_fs");
    let dovecot = Dovecot::start(&dir, Layout::FsSeparateIndexControl);
    let bob = dovecot.user("bob");
    populate_varied(&bob, &dir.mkdir("scratch"));
    ls_and_cat_match_dovecot(&bob, &bob.location());
}

#[test]
fn ls_shows_a_pending_file_with_a_dash_uid() {
    require!(Dovecot);
    let dir = TestDir::new("cli_pending");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Known", "has a uid"));
    let base = "1700000005.M5P777.external";
    let dropped = email(2, "Unknown", "no uid yet");
    let inbox = bob.mailbox_dir("INBOX");
    write_with_mtime(
        &inbox.join("new").join(format!("{base}:2,S")),
        &dropped,
        1_700_000_005,
    );
    let (u, g) = dovecot.mail_owner();
    chown_recursive(&inbox, u, g);

    let lines = parse_ls(&ok_stdout(
        &ls(&bob.location(), Some("INBOX")),
        "mailfs ls INBOX",
    ));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines.iter().filter(|l| l.uid == Some(uid)).count(),
        1,
        "{lines:?}"
    );
    let pending = lines
        .iter()
        .find(|l| l.uid.is_none())
        .expect("a line with uid -");
    assert_eq!(pending.name, format!("pending-{base}.eml"));
    assert_eq!(
        (pending.size, pending.received),
        (dropped.len() as u64, 1_700_000_005)
    );
}

#[test]
fn cat_of_an_unknown_uid_or_mailbox_exits_1() {
    require!(Dovecot);
    let dir = TestDir::new("cli_unknown");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Only one", "message"));
    let expunged = bob.save("INBOX", &email(2, "Gone", "soon"));
    bob.expunge("INBOX", expunged);
    let loc = bob.location();
    let control = cat(&loc, "INBOX", &uid.to_string());
    assert_eq!(
        ok_stdout(&control, "control: mailfs cat of an existing uid"),
        bob.text("INBOX", uid)
    );

    for (what, out) in [
        ("cat of a uid never used", cat(&loc, "INBOX", "999")),
        (
            "cat of a name that is no message",
            cat(&loc, "INBOX", "not-a-number"),
        ),
        (
            "cat of an expunged uid",
            cat(&loc, "INBOX", &expunged.to_string()),
        ),
        ("cat in an unknown mailbox", cat(&loc, "NoSuchBox", "1")),
        ("ls of an unknown mailbox", ls(&loc, Some("NoSuchBox"))),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{what} printed {}",
            show(&out.stdout)
        );
        assert!(
            !stderr.trim().is_empty() && !stderr.contains("panicked"),
            "{what}: {stderr}"
        );
    }
}

#[test]
fn runtime_errors_exit_1_and_name_the_path() {
    let dir = TestDir::new("cli_missing");
    let missing = dir.join("no/such/Maildir").display().to_string();
    for location in [format!("maildir:{missing}"), missing.clone()] {
        for out in [
            ls(&location, None),
            ls(&location, Some("INBOX")),
            cat(&location, "INBOX", "1"),
        ] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{location}: {stderr}");
            assert!(stderr.contains(&missing), "must name {missing}: {stderr}");
        }
    }
    let key = ls(
        &format!("maildir:{}:NOSUCHKEY=1", dir.path().display()),
        None,
    );
    let stderr = String::from_utf8_lossy(&key.stderr);
    assert!(
        matches!(key.status.code(), Some(1 | 2)),
        "unknown key: {stderr}"
    );
    assert!(stderr.contains("NOSUCHKEY"), "must name the key: {stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = TestDir::new("cli_usage");
    // A valid (empty) Maildir, so that only the arguments are wrong.
    for sub in ["cur", "new", "tmp"] {
        dir.mkdir(format!("Maildir/{sub}"));
    }
    let loc = format!("maildir:{}", dir.join("Maildir").display());
    let listed = mailfs(["ls", &loc]);
    assert!(listed.status.success(), "control: {}", show(&listed.stderr));
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["frobnicate"],
        vec!["ls"],
        vec!["cat", &loc],
        vec!["cat", &loc, "INBOX"],
        vec!["mount", &loc],
        vec!["mount", &loc, &loc, "--no-such-option"],
    ];
    for args in cases {
        let out = mailfs(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "mailfs {args:?}: {stderr}");
        assert!(
            !stderr.trim().is_empty(),
            "mailfs {args:?}: no usage message"
        );
    }
}

/// `--poll-interval`, `--attr-timeout` and `--entry-timeout` out of range (zero where it
/// must be positive, negative, too large for a duration, not a number) are usage errors:
/// exit 2 and a message naming the option, before anything is opened. Valid values pass
/// the parser (the control fails later, on the missing mount point, with exit 1).
#[test]
fn out_of_range_durations_are_usage_errors() {
    let dir = TestDir::new("cli_durations");
    for sub in ["cur", "new", "tmp"] {
        dir.mkdir(format!("Maildir/{sub}"));
    }
    let loc = format!("maildir:{}", dir.join("Maildir").display());
    let mp = dir.join("no-such-mountpoint").display().to_string();
    let control = mailfs([
        "mount",
        &loc,
        &mp,
        "--poll-interval",
        "0.5",
        "--attr-timeout",
        "0",
        "--entry-timeout",
        "2.5",
    ]);
    let stderr = String::from_utf8_lossy(&control.stderr);
    assert_eq!(control.status.code(), Some(1), "control: {stderr}");
    assert!(stderr.contains(&mp), "control must fail on {mp}: {stderr}");

    for (option, value) in [
        ("--poll-interval", "0"),
        ("--poll-interval", "-1"),
        ("--poll-interval", "1e-300"),
        ("--poll-interval", "1e300"),
        ("--poll-interval", "x"),
        ("--attr-timeout", "1e300"),
        ("--attr-timeout", "-1"),
        ("--attr-timeout", "-0.5"),
        ("--attr-timeout", "nan"),
        ("--entry-timeout", "1e300"),
        ("--entry-timeout", "-1"),
        ("--entry-timeout", "inf"),
    ] {
        let out = mailfs(["mount", &loc, &mp, option, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{option} {value}: {stderr}");
        assert!(
            stderr.contains(option) && stderr.contains("seconds"),
            "{option} {value}: the message must name the option and say what it takes: \
             {stderr}"
        );
        assert!(
            !stderr.contains("unexpected argument"),
            "{option} {value}: a negative number must parse: {stderr}"
        );
    }
}

/// A location starting with a word and ':' that is no driver is a misspelt format:
/// `mailfs ls` and `mailfs mount` say so (exit 1), naming the formats, instead of "No such
/// file or directory". Dovecot's drivers mailfs does not read say "not supported". Bare
/// paths containing ':' (written `::`, as for Dovecot) still work (the controls): an
/// absolute one, and a relative one whose first component looks like a word.
#[test]
fn an_unknown_mail_format_is_named() {
    let dir = TestDir::new("cli_bad_driver");
    for sub in ["cur", "new", "tmp"] {
        dir.mkdir(format!("a:b/{sub}"));
        dir.mkdir(format!("word:x/{sub}"));
    }
    let want = r#"unknown mail format "bogusfmt" (maildir, sdbox, mdbox)"#;
    for args in [
        vec!["ls", "bogusfmt:/p"],
        vec!["ls", "bogusfmt:/p:LAYOUT=fs", "INBOX"],
        vec!["cat", "bogusfmt:/p", "INBOX", "1"],
        vec!["mount", "bogusfmt:/p", "/nonexistent-mountpoint"],
        vec!["ls", "bogusfmt:/home/%u"],
    ] {
        let out = mailfs(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "mailfs {args:?}: {stderr}");
        assert!(stderr.contains(want), "mailfs {args:?}: {stderr}");
    }
    let out = mailfs(["ls", "imapc:/p"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("imapc driver is not supported"), "{stderr}");

    let absolute = dir.join("a::b").display().to_string();
    let out = mailfs(["ls", &absolute]);
    assert!(out.status.success(), "{absolute}: {}", show(&out.stderr));
    assert_eq!(out.stdout, b"INBOX\n");
    let relative = std::process::Command::new(crate::util::mailfs_bin())
        .args(["ls", "./word::x"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("running mailfs");
    assert!(
        relative.status.success(),
        "relative ./word::x: {}",
        show(&relative.stderr)
    );
    assert_eq!(relative.stdout, b"INBOX\n");
}

/// Mailbox and pending message names with control characters (an escape sequence, a
/// newline, BEL), '%' and ':' on disk: `mailfs ls` prints each level escaped as the mount
/// names its directory (`%1B`, `%0A`, `%25`, `%3A`), so the output has no control
/// character and stays one name per line, and each printed name is accepted back by
/// `mailfs ls LOCATION MAILBOX` and `mailfs cat` (as is the name as it is, where it differs).
/// The GUID (a Maildir base name) and a keyword from `dovecot-keywords` are escaped alike.
#[test]
fn ls_escapes_control_characters_in_names() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TestDir::new("cli_ctl_names");
    let root = dir.mkdir("Maildir");
    let hostile: &[u8] = b".evil\x1b[31mred\nINBOX";
    let base: &[u8] = b"1700000001.M1P1.host\x1b]0;owned\x07";
    for name in [&b""[..], hostile, b".100%", b".a:b"] {
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(root.join(OsStr::from_bytes(name)).join(sub)).unwrap();
        }
    }
    let mut file = base.to_vec();
    file.extend_from_slice(b":2,Sa");
    let body = email(1, "Hostile", "file name");
    fs::write(
        root.join(OsStr::from_bytes(hostile))
            .join("cur")
            .join(OsStr::from_bytes(&file)),
        &body,
    )
    .unwrap();
    fs::write(
        root.join(OsStr::from_bytes(hostile))
            .join("dovecot-keywords"),
        b"0 evil\x1b[2J\n",
    )
    .unwrap();
    let loc = format!("maildir:{}", root.display());

    let listed = ok_stdout(&ls(&loc, None), "mailfs ls");
    let text = String::from_utf8(listed).expect("UTF-8");
    let lines: BTreeSet<&str> = text.lines().collect();
    let want: BTreeSet<&str> = ["INBOX", "evil%1B[31mred%0AINBOX", "100%25", "a%3Ab"].into();
    assert_eq!(lines, want, "mailfs ls printed {text:?}");

    let shown_pending = "pending-1700000001.M1P1.host%1B]0;owned%07.eml";
    let raw_name = String::from_utf8(hostile[1..].to_vec()).unwrap();
    for mailbox in ["evil%1B[31mred%0AINBOX", raw_name.as_str()] {
        let out = ok_stdout(&ls(&loc, Some(mailbox)), "mailfs ls MAILBOX");
        assert!(
            !out.iter()
                .any(|&c| (c < 0x20 && c != b'\t' && c != b'\n') || c == 0x7f),
            "control characters in {}",
            show(&out)
        );
        let parsed = parse_ls(&out);
        assert_eq!(parsed.len(), 1, "{mailbox:?}: {parsed:?}");
        assert_eq!(parsed[0].name, shown_pending);
        assert_eq!(parsed[0].uid, None);
        assert_eq!(parsed[0].guid, "1700000001.M1P1.host%1B]0;owned%07");
        assert_eq!(parsed[0].flags, "\\Seen evil%1B[2J");
        let bytes = ok_stdout(&cat(&loc, mailbox, shown_pending), "mailfs cat");
        assert_bytes_eq(&bytes, &body, "mailfs cat of the pending message");
    }
    for mailbox in ["100%25", "100%", "a%3Ab", "a:b"] {
        let out = ls(&loc, Some(mailbox));
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "mailfs ls {mailbox}: {}",
            show(&out.stderr)
        );
    }
}
