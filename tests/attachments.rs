//! sdbox and mdbox stores saved with single-instance attachments (`mail_attachment_dir`,
//! the default `mail_attachment_fs = sis posix`): every message put back together from its
//! dbox file and its attachment files, compared with doveadm (bytes, st_size, flags, GUID,
//! dates, vsize), read from random offsets; and hostile references (outside the directory,
//! through a symbolic link, missing, truncated): EIO with a log line, never other bytes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::util::compare::{assert_message_matches, assert_mount_matches_dovecot};
use crate::util::dbox;
use crate::util::dovecot::{DboxLayout, Dovecot, Layout, Message, User};
use crate::util::fsx::{errno, errno_name};
use crate::util::mount::{Mount, mailfs};
use crate::util::rng::Rng;
use crate::util::{TestDir, assert_bytes_eq, chown_recursive, is_root};

// ---------------------------------------------------------------------------------------
// Messages

/// `data` in base64, `line` characters per line, lines ended by `nl` (none after the last).
fn b64(data: &[u8], line: usize, nl: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s.as_bytes()
        .chunks(line)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect::<Vec<_>>()
        .join(nl)
}

/// `len` bytes of every value, different for each `seed`.
fn binary(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// A multipart/mixed message: a multipart/alternative (text and html, never extracted),
/// then each `(content type, transfer encoding, body)` part, then an epilogue.
fn mixed(subject: &str, parts: &[(&str, &str, Vec<u8>)]) -> Vec<u8> {
    mixed_with("", subject, parts)
}

/// [`mixed`] with boundaries that start with `tag` (for a message inside another).
fn mixed_with(tag: &str, subject: &str, parts: &[(&str, &str, Vec<u8>)]) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <alice@example.org>\nTo: bob@example.com\nSubject: {subject}\n\
         Message-ID: <{subject}@example.org>\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"{tag}mix\"\n\nThis is a preamble.\n\
         --{tag}mix\nContent-Type: multipart/alternative; boundary=\"{tag}alt\"\n\n\
         --{tag}alt\nContent-Type: text/plain; charset=utf-8\n\nHello, see the files.\n\
         --{tag}alt\nContent-Type: text/html; charset=utf-8\n\n<p>Hello, see the files.</p>\n\
         --{tag}alt--\n\n"
    )
    .into_bytes();
    for (ctype, cte, body) in parts {
        m.extend_from_slice(
            format!(
                "--{tag}mix\nContent-Type: {ctype}\nContent-Disposition: attachment\n\
                 Content-Transfer-Encoding: {cte}\n\n"
            )
            .as_bytes(),
        );
        m.extend_from_slice(body);
        m.push(b'\n');
    }
    m.extend_from_slice(format!("--{tag}mix--\nThe epilogue.\n").as_bytes());
    m
}

/// What [`populate`] saved: INBOX UIDs by name.
struct Saved {
    uids: BTreeMap<&'static str, u32>,
}

/// Saves the corpus into INBOX (and a copy into Archive): base64 with 76-character LF
/// lines, CRLF lines, 60- and 64-character lines, a single long line, lines of a length
/// Dovecot cannot re-create (74: stored as they are), 8bit, binary and quoted-printable
/// parts, a single-part attachment message, a large one, and one attachment in two
/// messages (deduplicated: one file linked twice).
fn populate(user: &User<'_>) -> Saved {
    let mut uids = BTreeMap::new();
    let pdf = binary(1, 3000);
    let shared = binary(2, 5000);
    let nested = mixed(
        "nested",
        &[
            (
                "application/pdf",
                "base64",
                b64(&pdf, 76, "\n").into_bytes(),
            ),
            (
                "image/png",
                "base64",
                format!("{}\n", b64(&binary(3, 1000), 64, "\n")).into_bytes(),
            ),
            (
                "application/octet-stream",
                "8bit",
                b"raw 8bit bytes \xe4\xf6\xfc long enough to be an attachment\n".to_vec(),
            ),
            (
                "application/x-data",
                "binary",
                binary(4, 700)
                    .into_iter()
                    .map(|b| if b == b'\n' || b == b'\r' { b'.' } else { b })
                    .collect(),
            ),
            (
                "application/x-qp",
                "quoted-printable",
                b"qp=20data that is long enough=3D to be an attachment, =C3=A4=\nsoft break\n"
                    .to_vec(),
            ),
        ],
    );
    uids.insert("nested", user.save("INBOX", &nested));
    // dbox stores LF line ends (dbox-save.c: i_stream_create_lf), so base64 lines that end
    // in CR CR LF are stored as CRLF lines: Dovecot's `C` option.
    let crlf = mixed(
        "crlf",
        &[(
            "application/octet-stream",
            "base64",
            b64(&binary(5, 2000), 76, "\r\r\n").into_bytes(),
        )],
    );
    uids.insert("crlf", user.save("INBOX", &crlf));
    let lines = mixed(
        "lines",
        &[
            (
                "application/x-a",
                "base64",
                b64(&binary(6, 900), 60, "\n").into_bytes(),
            ),
            (
                "application/x-b",
                "base64",
                b64(&binary(7, 512), 10_000, "\n").into_bytes(),
            ),
            (
                "application/x-c",
                "base64",
                b64(&binary(8, 800), 74, "\n").into_bytes(),
            ),
            // 192 bytes: 256 characters, exactly four full lines.
            (
                "application/x-d",
                "base64",
                b64(&binary(9, 192), 64, "\n").into_bytes(),
            ),
        ],
    );
    uids.insert("lines", user.save("INBOX", &lines));
    let single = format!(
        "From: a@example.org\nSubject: single\nMIME-Version: 1.0\n\
         Content-Type: application/zip\nContent-Transfer-Encoding: base64\n\n{}\n",
        b64(&binary(10, 1500), 76, "\n")
    );
    uids.insert("single", user.save("INBOX", single.as_bytes()));
    let large = mixed(
        "large",
        &[(
            "application/octet-stream",
            "base64",
            b64(&binary(11, 400_000), 76, "\n").into_bytes(),
        )],
    );
    uids.insert("large", user.save("INBOX", &large));
    for name in ["shared1", "shared2"] {
        let m = mixed(
            name,
            &[(
                "application/pdf",
                "base64",
                b64(&shared, 76, "\n").into_bytes(),
            )],
        );
        uids.insert(name, user.save("INBOX", &m));
    }
    // A forwarded message (message/rfc822) with its own attachment inside.
    let inner = mixed_with(
        "in",
        "inner",
        &[(
            "application/pdf",
            "base64",
            b64(&binary(12, 2500), 76, "\n").into_bytes(),
        )],
    );
    let forwarded = mixed("forwarded", &[("message/rfc822", "8bit", inner)]);
    uids.insert("forwarded", user.save("INBOX", &forwarded));
    uids.insert(
        "plain",
        user.save(
            "INBOX",
            b"From: a@example.org\nSubject: no attachments\n\nJust text.\n",
        ),
    );
    user.flags_add("INBOX", uids["nested"], "\\Seen $Label1");
    user.flags_add("INBOX", uids["large"], "\\Flagged");
    user.create_mailbox("Archive");
    user.copy_set("Archive", "INBOX", &uids["nested"].to_string());
    Saved { uids }
}

// ---------------------------------------------------------------------------------------
// The store on disk

/// A directory for Dovecot's attachments, writable by the mail user.
fn attachment_dir(dir: &TestDir) -> PathBuf {
    let att = dir.mkdir("att");
    if is_root() {
        chown_recursive(&att, 65534, 65534);
    }
    att
}

/// A Dovecot whose dbox saves extract every non-text part of 16 bytes or more.
fn start(dir: &TestDir, layout: Layout, att: &Path) -> Dovecot {
    let setting = format!("mail_attachment_dir = {}", att.display());
    Dovecot::start_with_settings(dir, layout, &[&setting, "mail_attachment_min_size = 16"])
}

/// One external reference of a metadata X line.
#[derive(Debug, Clone)]
struct Ref {
    options: String,
    path: String,
}

/// The dbox file of an sdbox message.
fn sdbox_file(user: &User<'_>, mailbox: &str, uid: u32) -> PathBuf {
    user.mailbox_dir(mailbox).join(format!("u.{uid}"))
}

/// The X line of the (only) message of an sdbox file, and where it is in the file.
fn x_line(file: &Path) -> (String, std::ops::Range<usize>) {
    let bytes = fs::read(file).unwrap();
    let msg = &dbox::read(file)[0];
    let meta = &bytes[msg.metadata.start as usize..msg.metadata.end as usize];
    let at = meta
        .windows(2)
        .position(|w| w == b"\nX")
        .unwrap_or_else(|| panic!("{file:?} has no X metadata"))
        + 2;
    let end = at + meta[at..].iter().position(|&b| b == b'\n').unwrap();
    let start = msg.metadata.start as usize + at;
    (
        String::from_utf8(meta[at..end].to_vec()).unwrap(),
        start..start + (end - at),
    )
}

fn refs(x: &str) -> Vec<Ref> {
    let t: Vec<&str> = x.split(' ').collect();
    t.chunks(4)
        .map(|g| Ref {
            options: g[2].to_string(),
            path: g[3].to_string(),
        })
        .collect()
}

/// The attachment files of an sdbox message: `<dir>/<path>-<mailbox guid>-<uid>`.
fn sdbox_attachments(user: &User<'_>, att: &Path, mailbox: &str, uid: u32) -> Vec<PathBuf> {
    let guid = user.status(mailbox).guid;
    let (x, _) = x_line(&sdbox_file(user, mailbox, uid));
    refs(&x)
        .iter()
        .map(|r| att.join(format!("{}-{guid}-{uid}", r.path)))
        .collect()
}

/// Replaces the X line of an sdbox message (the metadata block ends the file, so the
/// length may change).
fn set_x_line(file: &Path, x: &str) {
    let (_, range) = x_line(file);
    let mut bytes = fs::read(file).unwrap();
    bytes.splice(range, x.bytes());
    fs::write(file, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------
// Reading

/// Reads of random ranges of every message file equal the same ranges of doveadm's text.
fn assert_random_reads(mount: &Mount, mailbox: &str, messages: &[Message], seed: u64) {
    let mut rng = Rng::new(seed);
    for m in messages {
        let path = mount.message(mailbox, m.uid);
        let f = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
        let len = m.text.len() as u64;
        for _ in 0..40 {
            let at = rng.below(len + 1);
            let want = 1 + rng.below(70_000) as usize;
            let mut buf = vec![0u8; want];
            let mut done = 0;
            while done < want {
                let n = f.read_at(&mut buf[done..], at + done as u64).unwrap();
                if n == 0 {
                    break;
                }
                done += n;
            }
            let end = (at as usize + want).min(m.text.len());
            assert_bytes_eq(
                &buf[..done],
                &m.text[at as usize..end],
                &format!("{mailbox} uid {} read of {want} at {at}", m.uid),
            );
        }
    }
}

/// `stat` and `read` of a message file both fail with EIO.
#[track_caller]
fn assert_read_eio(path: &Path, what: &str) {
    let r = fs::read(path);
    assert_eq!(
        errno(&r),
        Some(libc::EIO),
        "read of {what} ({}): {}",
        path.display(),
        errno_name(errno(&r))
    );
}

fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "mailfs panicked:\n{log}");
}

// ---------------------------------------------------------------------------------------
// Tests

/// sdbox: every message (the corpus, a copy in another mailbox, one without attachments)
/// equals doveadm: bytes, st_size, flags, GUID, dates, vsize; reads from random offsets
/// too. The store really has what the test is about: each kind of reference (B76, CB76,
/// B60, B64, one long line, `-` for 8bit/binary/qp and 74-character lines) and the shared
/// attachment as one file linked from both messages.
#[test]
fn sdbox_messages_with_attachments_match_doveadm() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("att_sdbox");
    let att = attachment_dir(&dir);
    let dovecot = start(&dir, DboxLayout::sdbox(""), &att);
    let bob = dovecot.user("bob");
    let saved = populate(&bob);

    // The store holds the forms this test is about.
    let options = |name: &str| -> Vec<String> {
        let (x, _) = x_line(&sdbox_file(&bob, "INBOX", saved.uids[name]));
        refs(&x).into_iter().map(|r| r.options).collect()
    };
    assert_eq!(options("nested"), ["B76", "B64", "-", "-", "-"], "nested");
    assert_eq!(options("crlf"), ["CB76"], "crlf");
    assert_eq!(options("lines"), ["B60", "B684", "-", "B64"], "lines");
    // The forwarded message's own attachment is extracted, not the message/rfc822 part.
    assert_eq!(options("forwarded"), ["B76"], "forwarded");
    let x = |name: &str| sdbox_attachments(&bob, &att, "INBOX", saved.uids[name]);
    let (s1, s2) = (x("shared1"), x("shared2"));
    assert_ne!(s1[0], s2[0]);
    assert_eq!(
        fs::metadata(&s1[0]).unwrap().ino(),
        fs::metadata(&s2[0]).unwrap().ino(),
        "the shared attachment is one file (sis hard links)"
    );
    assert!(fs::read(sdbox_file(&bob, "INBOX", saved.uids["plain"])).is_ok());

    let mount = Mount::start(
        &bob.location(),
        &dir.join("mnt"),
        &["--attachment-dir", att.to_str().unwrap()],
    );
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert_eq!(compared.messages, saved.uids.len() + 1);
    let inbox = bob.fetch("INBOX");
    assert_random_reads(&mount, "INBOX", &inbox, 18);

    // mailfs cat takes the option too.
    let nested = &inbox
        .iter()
        .find(|m| m.uid == saved.uids["nested"])
        .unwrap();
    let cat = mailfs([
        "cat",
        "--attachment-dir",
        att.to_str().unwrap(),
        &bob.location(),
        "INBOX",
        &nested.uid.to_string(),
    ]);
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_bytes_eq(&cat.stdout, &nested.text, "mailfs cat vs doveadm");
    assert_no_panic(&mount.stop());
}

/// The X line of every message in the mdbox `m.N` files whose body contains `needle`.
fn mdbox_x_line(storage: &Path, needle: &str) -> String {
    for f in dbox::numbered_files(storage, "m.") {
        let bytes = fs::read(&f).unwrap();
        for m in dbox::read(&f) {
            let body = &bytes[m.body.start as usize..m.body.end as usize];
            if !body.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                continue;
            }
            let meta =
                std::str::from_utf8(&bytes[m.metadata.start as usize..m.metadata.end as usize])
                    .unwrap();
            return meta
                .lines()
                .find_map(|l| l.strip_prefix('X'))
                .unwrap_or_else(|| panic!("no X line for {needle:?} in {f:?}"))
                .to_string();
        }
    }
    panic!("no message with {needle:?} in {storage:?}");
}

/// mdbox: the same corpus (mdbox keeps the attachment names without a suffix, and a copy
/// is a second reference to the same stored message), after one of the two messages
/// sharing an attachment was expunged and purged (the `m.N` file rewritten, the shared
/// file's other link kept), equals doveadm. Then a missing attachment gives EIO with a log
/// line naming it (after mdbox's re-resolution through fresh maps).
#[test]
fn mdbox_messages_with_attachments_match_doveadm() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("att_mdbox");
    let att = attachment_dir(&dir);
    let dovecot = start(&dir, DboxLayout::mdbox(""), &att);
    let bob = dovecot.user("bob");
    let saved = populate(&bob);
    let storage = bob.storage_dirs()[0].clone();
    bob.expunge("INBOX", saved.uids["shared1"]);
    bob.purge();
    let mut with_x = 0;
    for f in dbox::numbered_files(&storage, "m.") {
        let bytes = fs::read(&f).unwrap();
        with_x += bytes.windows(2).filter(|w| w == b"\nX").count();
    }
    assert_eq!(
        with_x,
        saved.uids.len() - 2,
        "messages stored with X metadata after the purge"
    );
    let shared = att.join(&refs(&mdbox_x_line(&storage, "Subject: shared2"))[0].path);
    assert!(shared.is_file(), "{shared:?}");

    let option = ["--attachment-dir", att.to_str().unwrap()];
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &option);
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert_eq!(compared.messages, saved.uids.len());
    assert_random_reads(&mount, "INBOX", &bob.fetch("INBOX"), 19);
    assert_no_panic(&mount.stop());

    let gone = att.join(&refs(&mdbox_x_line(&storage, "Subject: single"))[0].path);
    fs::remove_file(&gone).unwrap();
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &option);
    assert_read_eio(&mount.message("INBOX", saved.uids["single"]), "single");
    let log = mount.stop();
    assert_no_panic(&log);
    assert!(
        log.lines().any(|l| l.contains(&gone.display().to_string())),
        "no log line names {gone:?}:\n{log}"
    );
}

/// Without --attachment-dir, a message with attachments gives EIO and a log line naming
/// the option; with it, references that leave the directory (`..`, an absolute path), an
/// attachment that is a symbolic link, a missing one and a truncated one give EIO with a
/// log line naming the file, never other bytes, while the other messages read fine. Each
/// hostile target holds exactly the bytes the reference expects, so following it would
/// have served a plausible message.
#[test]
fn hostile_attachment_references_give_eio() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("att_hostile");
    let att = attachment_dir(&dir);
    let dovecot = start(&dir, DboxLayout::sdbox(""), &att);
    let bob = dovecot.user("bob");
    let names = [
        "dotdot",
        "absolute",
        "symlink",
        "missing",
        "truncated",
        "fine",
    ];
    let mut uids = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let m = mixed(
            name,
            &[(
                "application/octet-stream",
                "base64",
                b64(&binary(100 + i as u64, 3000), 76, "\n").into_bytes(),
            )],
        );
        uids.insert(*name, bob.save("INBOX", &m));
    }
    let before: BTreeMap<u32, Message> =
        bob.fetch("INBOX").into_iter().map(|m| (m.uid, m)).collect();
    // Dovecot's zlib plugin compresses what stays in the dbox file and reads it back
    // decompressed before joining the attachments; mailfs names that combination (saved
    // after the fetch above: doveadm without the plugin cannot read it).
    let zlib = mixed(
        "compressed",
        &[(
            "application/octet-stream",
            "base64",
            b64(&binary(99, 3000), 76, "\n").into_bytes(),
        )],
    );
    bob.save_opts(
        &["mail_plugins=zlib", "plugin/zlib_save=gz"],
        "INBOX",
        &zlib,
    );
    let compressed = bob.status("INBOX").uidnext - 1;
    let file = |name: &str| sdbox_file(&bob, "INBOX", uids[name]);
    let attachment = |name: &str| sdbox_attachments(&bob, &att, "INBOX", uids[name])[0].clone();
    let outside = dir.mkdir("outside");

    // `..`: a copy of the attachment outside the directory, named by a relative path.
    let (x, _) = x_line(&file("dotdot"));
    let target = outside.join(format!(
        "copy-{}-{}",
        bob.status("INBOX").guid,
        uids["dotdot"]
    ));
    fs::copy(attachment("dotdot"), &target).unwrap();
    let r = &refs(&x)[0];
    set_x_line(&file("dotdot"), &x.replace(&r.path, "../outside/copy"));
    // An absolute path to such a copy.
    let (x, _) = x_line(&file("absolute"));
    let target = outside.join(format!(
        "abs-{}-{}",
        bob.status("INBOX").guid,
        uids["absolute"]
    ));
    fs::copy(attachment("absolute"), &target).unwrap();
    let r = &refs(&x)[0];
    set_x_line(
        &file("absolute"),
        &x.replace(&r.path, &format!("{}/abs", outside.display())),
    );
    // The attachment replaced by a symbolic link to a copy of it.
    let link = attachment("symlink");
    let target = outside.join("linked");
    fs::copy(&link, &target).unwrap();
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // Gone, and cut short.
    fs::remove_file(attachment("missing")).unwrap();
    let t = attachment("truncated");
    let len = fs::metadata(&t).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&t)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    // No --attachment-dir: EIO, and the log names the option.
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let fine = mount.message("INBOX", uids["fine"]);
    let r = fs::metadata(&fine);
    assert_eq!(
        errno(&r),
        Some(libc::EIO),
        "stat without --attachment-dir: {r:?}"
    );
    let log = mount.stop();
    assert!(
        log.lines()
            .any(|l| l.contains("external attachments") && l.contains("--attachment-dir")),
        "no log line names --attachment-dir:\n{log}"
    );

    let mount = Mount::start(
        &bob.location(),
        &dir.join("mnt"),
        &["--attachment-dir", att.to_str().unwrap()],
    );
    assert_message_matches(
        &mount.message("INBOX", uids["fine"]),
        &before[&uids["fine"]],
    );
    for name in ["dotdot", "absolute", "symlink", "missing", "truncated"] {
        assert_read_eio(&mount.message("INBOX", uids[name]), name);
    }
    assert_read_eio(&mount.message("INBOX", compressed), "compressed");
    let log = mount.stop();
    assert_no_panic(&log);
    let logged = |what: &str| log.lines().any(|l| l.contains(what));
    assert!(
        logged("gz-compressed"),
        "no log line names the compressed body:\n{log}"
    );
    assert!(
        logged("../outside/copy"),
        "no log line for the .. reference:\n{log}"
    );
    assert!(
        logged(&format!("{}/abs", outside.display())),
        "no log line for the absolute reference:\n{log}"
    );
    for name in ["symlink", "missing", "truncated"] {
        assert!(
            logged(&attachment(name).display().to_string()),
            "no log line names the {name} attachment:\n{log}"
        );
    }
}
