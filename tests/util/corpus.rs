//! Messages and stores to test with: realistic messages with the awkward cases (CRLF,
//! Latin-1, no final newline, form feeds, a large attachment), plain source Maildirs for
//! `doveadm import`, and [`populate_varied`], the store most tests mount.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::dovecot::User;
use super::name_of;

/// A plain RFC 5322 message with LF line ends.
pub fn email(n: usize, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "Return-Path: <sender{n}@example.org>\n\
         From: Sender {n} <sender{n}@example.org>\n\
         To: Bob <bob@example.com>\n\
         Subject: {subject}\n\
         Date: Mon, 6 May 2024 10:{:02}:00 +0200\n\
         Message-ID: <{n}.mailfs-test@example.org>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         {body}\n",
        n % 60
    )
    .into_bytes()
}

/// 8-bit ISO-8859-1 headers and body: bytes that are not valid UTF-8.
pub fn latin1() -> Vec<u8> {
    let mut m = b"From: Ren\xe9 <rene@example.fr>\nTo: bob@example.com\n\
        Subject: caf\xe9 cr\xe8me br\xfbl\xe9e\nMIME-Version: 1.0\n\
        Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n"
        .to_vec();
    m.extend_from_slice(b"Na\xefve fa\xe7ade, \xa3100, \xbd price.\n\xff\xfe\x80 end\n");
    m
}

/// CRLF line ends throughout (must be saved with `save_crlf` to stay CRLF).
pub fn crlf() -> Vec<u8> {
    email(40, "CRLF line ends", "first line\nsecond line\n\nlast line")
        .split(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .join(&b"\r\n"[..])
}

/// A message whose last line has no newline.
pub fn no_final_newline() -> Vec<u8> {
    let mut m = email(41, "No final newline", "the end is near");
    assert_eq!(m.pop(), Some(b'\n'));
    m
}

/// A body with form feeds, including `\f\n` (doveadm's record separator).
pub fn form_feeds() -> Vec<u8> {
    email(
        42,
        "Form feeds",
        "page one\x0c\npage two\x0c\n\x0cpage three",
    )
}

/// A multipart message with a base64 attachment of about `kib` KiB (reads beyond one
/// FUSE request).
pub fn large(kib: usize) -> Vec<u8> {
    let mut m = b"From: Big <big@example.org>\nTo: bob@example.com\nSubject: Large attachment\n\
        MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b0undary\"\n\n\
        --b0undary\nContent-Type: text/plain\n\nSee attachment.\n\n--b0undary\n\
        Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        .to_vec();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u32 = 12345;
    for _ in 0..(kib * 1024 / 77) {
        for _ in 0..76 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            m.push(alphabet[(x >> 16) as usize % 64]);
        }
        m.push(b'\n');
    }
    m.extend_from_slice(b"--b0undary--\n");
    m
}

/// A plain Maildir tree to feed `doveadm import` (`LAYOUT=fs`, one mailbox).
///
/// File names are `<received>.M<n>P1.source[:2,<flags>]`; Dovecot keeps that base name as the
/// imported message's GUID, stores messages that have flags in `cur/` and keeps the mtime as
/// the received date.
pub struct SourceMaildir {
    root: PathBuf,
    dir: PathBuf,
    n: usize,
}

impl SourceMaildir {
    pub fn new(root: &Path, mailbox: &str) -> SourceMaildir {
        let dir = root.join(mailbox);
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(sub)).expect("creating source maildir");
        }
        SourceMaildir {
            root: root.to_path_buf(),
            dir,
            n: 0,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Keyword names for the letters `a`, `b`, ... in flag strings.
    pub fn keywords(&self, names: &[&str]) {
        let text: String = names
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{i} {k}\n"))
            .collect();
        fs::write(self.dir.join("dovecot-keywords"), text).expect("writing dovecot-keywords");
    }

    /// Adds a message with Maildir flag letters (`"FS"`, `"Sa"`, or `""`) and a received date.
    pub fn add(&mut self, message: &[u8], flags: &str, received: u64) -> PathBuf {
        self.n += 1;
        let name = format!("{received}.M{}P1.source:2,{flags}", self.n);
        let path = self.dir.join("cur").join(name);
        write_with_mtime(&path, message, received);
        path
    }
}

/// Writes a file and sets its mtime (a Maildir message's received date).
pub fn write_with_mtime(path: &Path, bytes: &[u8], mtime: u64) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
    let file = fs::File::options().write(true).open(path).expect("reopen");
    file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
        .expect("setting mtime");
}

/// Keywords used by [`populate_varied`] (more than a few, so letters beyond `a`, `b` occur).
pub const KEYWORDS: [&str; 9] = [
    "$Label1",
    "work",
    "$Forwarded",
    "$Junk",
    "$NotJunk",
    "project-x",
    "todo",
    "later",
    "$MDNSent",
];

/// What [`populate_varied`] built, for assertions about particular messages.
pub struct Varied {
    /// Every mailbox, as doveadm names it.
    pub mailboxes: Vec<&'static str>,
    /// A mailbox with no messages.
    pub empty: &'static str,
    /// A parent level that is not itself a mailbox (Maildir++ only; in LAYOUT=fs it is a
    /// plain directory too).
    pub non_mailbox_parent: &'static str,
    /// INBOX UIDs that were expunged (one from `cur/`, one from `new/`).
    pub inbox_expunged: Vec<u32>,
    /// INBOX UID flagged `\Deleted` but not expunged.
    pub inbox_deleted: u32,
    /// INBOX UIDs of the special messages.
    pub inbox_latin1: u32,
    pub inbox_crlf: u32,
    pub inbox_no_final_newline: u32,
    pub inbox_large: u32,
}

/// Builds a small store that has every case the mount must get right:
/// nested and non-ASCII mailbox names, a mailbox with children and messages, an empty
/// mailbox, all system flags, nine keywords, `\Deleted` without expunge, expunged messages,
/// CRLF, Latin-1, no final newline, form feeds, a large message, messages in `new/` (with and
/// without `:2,` info) and in `cur/`, and imported messages (GUIDs in the uidlist).
///
/// `scratch` is an empty directory for the import source.
pub fn populate_varied(user: &User<'_>, scratch: &Path) -> Varied {
    let mailboxes = vec![
        "INBOX",
        "Work/Sub",
        "Archive",
        "Archive/2024",
        "Ünïcode & more",
        "日本語 📧 Post",
        "Empty",
        "Imported",
    ];
    for mb in &mailboxes[1..7] {
        user.create_mailbox(mb);
    }

    // INBOX: five saved, then SELECTed (moved to cur/), then four more left in new/.
    let plain = user.save("INBOX", &email(1, "Plain", "Hello Bob.\nSecond line."));
    let inbox_latin1 = user.save("INBOX", &latin1());
    let inbox_no_final_newline = user.save("INBOX", &no_final_newline());
    let inbox_crlf = user.save_crlf("INBOX", &crlf());
    let doomed_cur = user.save("INBOX", &email(5, "Expunged from cur", "gone"));
    user.select("INBOX");
    let feeds = user.save("INBOX", &form_feeds());
    let inbox_large = user.save("INBOX", &large(300));
    let doomed_new = user.save("INBOX", &email(8, "Expunged from new", "gone too"));
    let junk = user.save("INBOX", &email(9, "Cheap pills", "Buy now."));
    user.save(
        "INBOX",
        &email(10, "Unread, still in new/", "No flags, no :2, info."),
    );
    user.flags_add("INBOX", plain, "\\Seen \\Flagged todo");
    user.flags_remove("INBOX", plain, "\\Flagged todo");
    user.flags_add("INBOX", inbox_latin1, "\\Flagged $Label1 work");
    let all = format!("\\Answered \\Flagged \\Seen \\Draft {}", KEYWORDS.join(" "));
    user.flags_add("INBOX", inbox_crlf, &all);
    user.flags_add("INBOX", feeds, "\\Answered \\Seen work");
    user.flags_add("INBOX", inbox_large, "\\Deleted");
    user.flags_add("INBOX", junk, "$Junk later");
    user.expunge("INBOX", doomed_cur);
    user.expunge("INBOX", doomed_new);

    let w1 = user.save(
        "Work/Sub",
        &email(100, "Quarterly report", "Numbers attached."),
    );
    let w2 = user.save(
        "Work/Sub",
        &email(101, "Re: Quarterly report", "> Numbers\nThanks."),
    );
    user.save(
        "Work/Sub",
        &email(102, "Lunch?", "12:30 at the usual place"),
    );
    user.flags_add("Work/Sub", w1, "work project-x $MDNSent");
    user.flags_add("Work/Sub", w2, "\\Answered $Forwarded");

    user.save("Archive", &email(13, "Old news", "From last year."));
    let a2 = user.save("Archive", &email(14, "Older news", "From the year before."));
    user.flags_add("Archive", a2, "\\Seen $NotJunk");
    user.select("Archive");
    user.save(
        "Archive/2024",
        &email(15, "Tax 2024", "Keep for ten years."),
    );
    user.save(
        "Archive/2024",
        &email(16, "Receipt", "Thank you for your order."),
    );

    let u1 = user.save(
        "Ünïcode & more",
        &email(17, "Grüße aus Köln", "Schöne Grüße! ✉"),
    );
    user.save("Ünïcode & more", &latin1());
    user.flags_add("Ünïcode & more", u1, "\\Seen");
    user.save(
        "日本語 📧 Post",
        &email(18, "こんにちは", "日本語の本文です。🎉"),
    );

    let mut source = SourceMaildir::new(&scratch.join("import-src"), "Imported");
    source.keywords(&["$Label1", "later"]);
    source.add(
        &email(20, "Imported seen", "from another server"),
        "S",
        1_500_000_000,
    );
    source.add(
        &email(21, "Imported flagged", "with keywords"),
        "FSab",
        1_500_000_100,
    );
    source.add(&email(22, "Imported unread", "no flags"), "", 1_500_000_200);
    source.add(
        &email(23, "Imported answered", "replied"),
        "RSb",
        1_500_000_300,
    );
    user.import(source.root(), "Imported");

    Varied {
        mailboxes,
        empty: "Empty",
        non_mailbox_parent: "Work",
        inbox_expunged: vec![doomed_cur, doomed_new],
        inbox_deleted: inbox_large,
        inbox_latin1,
        inbox_crlf,
        inbox_no_final_newline,
        inbox_large,
    }
}

/// File names in a mailbox's `new/` and `cur/` directories.
pub fn new_and_cur(mailbox_dir: &Path) -> (Vec<String>, Vec<String>) {
    let names = |sub: &str| -> Vec<String> {
        let dir = mailbox_dir.join(sub);
        let mut v: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {dir:?}: {e}"))
            .map(|e| name_of(&e.expect("entry").path()))
            .collect();
        v.sort();
        v
    };
    (names("new"), names("cur"))
}

/// What IMAP sends of a stored text (RFC 3501: lines end in CRLF): every LF not already
/// preceded by CR becomes CRLF.
pub fn crlf_form(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 20);
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' && (i == 0 || text[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}
