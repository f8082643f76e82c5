//! A view of a large mailbox has the same metadata as doveadm, message for message.
//!
//! The store: the test writes the messages itself before Dovecot sees them (that is the
//! test building its fixture, not mailfs writing): for Maildir, a Maildir of tens of
//! thousands of files (flags and keywords in the `:2,` info, `S=`/`W=` in some names, a
//! few files still in `new/`, received dates as mtimes); for mdbox and sdbox, one mbox file
//! of the same kind of messages (flags in `Status:`/`X-Status:`/`X-Keywords:`), which
//! `doveadm import` saves into the store. Messages vary in size (a few over 64 KiB),
//! headers (folded, 8-bit), line ends and final newlines. The private Dovecot then indexes
//! the store as a client would (the first `doveadm fetch` makes the Maildir's uidlist,
//! and the index and cache of every format), and doveadm changes flags and expunges some
//! messages afterwards, so the index has a log tail past `dovecot.index` (asserted) and
//! the UIDs have holes (the first UID among them).
//!
//! Building it costs most of the time, so the built store is kept in the test root
//! ([`crate::util::test_root`], i.e. `$MAILFS_TEST_TMPDIR`) under a name holding
//! [`STORE_VERSION`], the message count and Dovecot's version, and each run works on its
//! own copy of it (message files Dovecot never rewrites are hard links, everything else is
//! copied). Without a cached store (a clean clone, CI) the test builds it first.
//!
//! The comparison, with one `doveadm -f tab fetch` of every message, parsed once, made
//! before mounting: the listing is exactly doveadm's UIDs; every message's `st_size` is
//! `size.physical` and `st_mtime` is `date.received`; the xattrs of 2,000 messages spread
//! over the UID range (the first and last among them) equal doveadm's; the bytes (and
//! everything else) of 200 such messages equal `doveadm fetch text`'s. Then one delivery
//! through doveadm must appear in the mounted view with doveadm's metadata, by the
//! incremental path (the view continued, not rebuilt).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::util::compare::assert_message_matches;
use crate::util::corpus::email;
use crate::util::dovecot::{DboxLayout, Dovecot, Layout, Message};
use crate::util::fsx::{dir_names, getxattr, xattr_string};
use crate::util::mount::Mount;
use crate::util::rng::Rng;
use crate::util::{TestDir, chown_recursive, test_root, tool, wait_for};

/// Bump when the generator or the build steps change: a cached store of another version is
/// never used (and can be deleted).
const STORE_VERSION: &str = "v1";

/// The generator's seed: the same store every time.
const SEED: u64 = 0x6d61_696c_6673_4c47;

/// How many messages the last generated ones still in `new/` (delivered, never seen by a
/// client: no `:2,` info).
const IN_NEW: usize = 40;

/// The keywords in the generated `dovecot-keywords`, index order (letters `a`, `b`, `c`).
const KEYWORDS: [&str; 3] = ["$Label1", "work", "NonJunk"];

/// Messages whose bytes are compared with `doveadm fetch text`, spread over the UIDs.
const TEXT_SAMPLE: usize = 200;

/// Messages whose xattrs are compared, spread over the UIDs (see the test).
const XATTR_SAMPLE: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Maildir,
    Mdbox,
    Sdbox,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Maildir => "maildir",
            Format::Mdbox => "mdbox",
            Format::Sdbox => "sdbox",
        }
    }

    fn layout(self) -> Layout {
        match self {
            Format::Maildir => Layout::MaildirPlusPlus,
            Format::Mdbox => DboxLayout::mdbox(""),
            Format::Sdbox => DboxLayout::sdbox(""),
        }
    }

    /// How many messages the store gets. sdbox is one file a message, which `doveadm
    /// import` makes about three times slower than mdbox's: a smaller store keeps the
    /// first (uncached) run within budget.
    fn messages(self) -> usize {
        match self {
            Format::Maildir | Format::Mdbox => 20_000,
            Format::Sdbox => 5_000,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The generated Maildir

const WORDS: [&str; 48] = [
    "the", "of", "and", "to", "in", "is", "for", "on", "that", "with", "report", "meeting",
    "project", "review", "budget", "plan", "schedule", "team", "update", "customer", "contract",
    "invoice", "order", "shipment", "delivery", "account", "payment", "office", "server",
    "network", "release", "draft", "agenda", "minutes", "summary", "question", "answer", "request",
    "approval", "deadline", "quarter", "results", "sales", "support", "ticket", "issue", "thanks",
    "regards",
];

const NAMES: [&str; 12] = [
    "alice", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "nina", "oscar",
    "peggy",
];

/// `words` random words.
fn words(rng: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

/// A Unix time as a civil date and time: (weekday name, day, month name, year, hour,
/// minute, second); days to date by H. Hinnant's algorithm.
fn civil(t: i64) -> (&'static str, i64, &'static str, i64, i64, i64, i64) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
    )
}

/// `Wed, 6 May 2024 10:20:30 +0000`.
fn rfc2822(t: i64) -> String {
    let (wday, day, month, year, h, m, s) = civil(t);
    format!("{wday}, {day} {month} {year} {h:02}:{m:02}:{s:02} +0000")
}

/// `Wed May  6 10:20:30 2024`, the date of an mbox `From ` line.
fn asctime(t: i64) -> String {
    let (wday, day, month, year, h, m, s) = civil(t);
    format!("{wday} {month} {day:2} {h:02}:{m:02}:{s:02} {year}")
}

/// Lines of 76 base64 characters to draw attachments from: random characters for each
/// line of each message would cost most of the generating time (the tests are not
/// optimised).
struct Base64Pool(Vec<String>);

impl Base64Pool {
    fn new(rng: &mut Rng) -> Base64Pool {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        Base64Pool(
            (0..509)
                .map(|_| {
                    let mut line: String = (0..76)
                        .map(|_| char::from(ALPHABET[rng.below(64) as usize]))
                        .collect();
                    line.push('\n');
                    line
                })
                .collect(),
        )
    }

    /// `lines` lines from the pool, starting at a random one.
    fn lines(&self, rng: &mut Rng, lines: usize) -> String {
        let first = rng.below(self.0.len() as u64) as usize;
        (0..lines)
            .map(|i| self.0[(first + i * 7) % self.0.len()].as_str())
            .collect()
    }
}

/// Message `n`, dated `date`: mostly short plain text; some multipart with an attachment
/// (a few large), some with CRLF line ends, 8-bit Latin-1 bytes, no final newline, long
/// folded headers.
fn message(rng: &mut Rng, pool: &Base64Pool, n: usize, date: i64) -> Vec<u8> {
    let from = *rng.pick(&NAMES);
    let mut h = String::new();
    let _ = writeln!(h, "Return-Path: <{from}@example.org>");
    let _ = writeln!(h, "From: {from} <{from}@example.org>");
    let _ = writeln!(h, "To: Bob <bob@example.com>");
    if rng.chance(20) {
        let _ = writeln!(h, "Cc: {0} <{0}@example.net>", rng.pick(&NAMES));
    }
    let subject_words = 2 + rng.below(9) as usize;
    if rng.chance(5) {
        // A folded header line.
        let more = words(rng, 12);
        let _ = writeln!(h, "Subject: {}\n\t{more}", words(rng, subject_words));
    } else {
        let _ = writeln!(h, "Subject: {}", words(rng, subject_words));
    }
    let _ = writeln!(h, "Date: {}", rfc2822(date - rng.below(3600) as i64));
    let _ = writeln!(h, "Message-ID: <{n}.{}@large.example.org>", rng.next_u64());
    if rng.chance(10) {
        let refs: Vec<String> = (0..3 + rng.below(10))
            .map(|_| format!("<{}@large.example.org>", rng.next_u64()))
            .collect();
        let _ = writeln!(h, "References: {}", refs.join("\n "));
    }
    if rng.chance(30) {
        let _ = writeln!(h, "X-Mailer: generator {}", rng.below(100));
    }
    let _ = writeln!(h, "MIME-Version: 1.0");
    let kind = rng.below(1000);
    let mut body = String::new();
    for _ in 0..1 + rng.below(40) {
        let count = 2 + rng.below(12) as usize;
        body.push_str(&words(rng, count));
        body.push('\n');
    }
    let mut bytes = if kind < 110 {
        // Multipart with an attachment: 1-8 KB, or 64-256 KB for 2 in 1,000.
        let lines = if kind < 2 {
            860 + rng.below(2600) as usize
        } else {
            14 + rng.below(95) as usize
        };
        let _ = writeln!(
            h,
            "Content-Type: multipart/mixed; boundary=\"b{n}\"\n\n--b{n}\n\
             Content-Type: text/plain; charset=us-ascii\n\n{body}\n--b{n}\n\
             Content-Type: application/octet-stream; name=\"f{n}.bin\"\n\
             Content-Transfer-Encoding: base64\n\n{}--b{n}--",
            pool.lines(rng, lines)
        );
        h.into_bytes()
    } else {
        let _ = write!(
            h,
            "Content-Type: text/plain; charset=iso-8859-1\n\
             Content-Transfer-Encoding: 8bit\n\n{body}"
        );
        let mut bytes = h.into_bytes();
        if kind < 130 {
            bytes.extend_from_slice(b"Na\xefve fa\xe7ade, \xa3100.\n");
        }
        bytes
    };
    if (130..150).contains(&kind) {
        bytes.pop(); // No final newline.
    }
    if (150..180).contains(&kind) {
        // CRLF line ends throughout.
        let mut crlf = Vec::with_capacity(bytes.len() * 21 / 20);
        for b in bytes {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        bytes = crlf;
    }
    bytes
}

/// The virtual size: the size with every bare LF counted as CRLF (Dovecot's
/// `message_get_body_size`).
fn virtual_size(bytes: &[u8]) -> usize {
    let bare_lf = (0..bytes.len())
        .filter(|&i| bytes[i] == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
        .count();
    bytes.len() + bare_lf
}

/// One generated message.
struct Generated {
    bytes: Vec<u8>,
    /// The received date (a Maildir file's mtime, an mbox `From ` line's date).
    received: i64,
    /// Maildir's system flag letters, in ASCII order (`DFRST`).
    flags: String,
    /// Indexes into [`KEYWORDS`].
    keywords: Vec<usize>,
    /// Delivered, never seen by a client: no flags, in Maildir's `new/`.
    new: bool,
    /// In a Maildir name: 0 nothing, 1 `S=`, 2 `S=` and `W=`.
    sizes_in_name: u8,
}

/// `n` messages from a fixed seed: received dates over two years, not in delivery order;
/// flags and keywords on most; the last [`IN_NEW`] new.
fn generate(n: usize) -> impl Iterator<Item = Generated> {
    let mut rng = Rng::new(SEED);
    let pool = Base64Pool::new(&mut rng);
    let start = 1_640_995_200; // 2022-01-01
    let step = 2 * 365 * 86_400 / n as i64;
    (0..n).map(move |i| {
        let received = start + i as i64 * step - rng.below(30 * 86_400) as i64;
        let bytes = message(&mut rng, &pool, i, received);
        let sizes_in_name = match rng.below(10) {
            0..=2 => 0,
            3..=6 => 1,
            _ => 2,
        };
        let new = i + IN_NEW >= n;
        let mut flags = String::new();
        let mut keywords = Vec::new();
        if !new {
            for (flag, percent) in [('D', 2), ('F', 8), ('R', 20), ('S', 60), ('T', 1)] {
                if rng.chance(percent) {
                    flags.push(flag);
                }
            }
            for (k, percent) in [(0, 5), (1, 3), (2, 1)] {
                if rng.chance(percent) {
                    keywords.push(k);
                }
            }
        }
        Generated {
            bytes,
            received,
            flags,
            keywords,
            new,
            sizes_in_name,
        }
    })
}

/// Writes `n` messages into a new Maildir at `root`: `cur/` files with `:2,` info (system
/// flags and keyword letters), the new ones in `new/` without, a `dovecot-keywords` naming
/// the letters; `S=` (and sometimes `W=`) in most names, as Dovecot's own deliveries have,
/// none in the rest, as other MDAs'; the received dates as mtimes; everything owned by
/// `uid`/`gid`. Returns the bytes written.
fn generate_maildir(root: &Path, n: usize, (uid, gid): (u32, u32)) -> u64 {
    let chown = |path: &Path| {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {path:?}: {e}"))
    };
    fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir {root:?}: {e}"));
    chown(root);
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir(root.join(sub)).unwrap_or_else(|e| panic!("mkdir {root:?}/{sub}: {e}"));
        chown(&root.join(sub));
    }
    let keywords: String = KEYWORDS
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{i} {k}\n"))
        .collect();
    fs::write(root.join("dovecot-keywords"), keywords).expect("writing dovecot-keywords");
    chown(&root.join("dovecot-keywords"));
    let mut total = 0;
    for (i, m) in generate(n).enumerate() {
        let mut name = format!("{}.M{i}P4242.large", m.received);
        if m.sizes_in_name > 0 {
            let _ = write!(name, ",S={}", m.bytes.len());
        }
        if m.sizes_in_name > 1 {
            let _ = write!(name, ",W={}", virtual_size(&m.bytes));
        }
        if !m.new {
            name.push_str(":2,");
            name.push_str(&m.flags);
            name.extend(m.keywords.iter().map(|&k| char::from(b'a' + k as u8)));
        }
        let path = root.join(if m.new { "new" } else { "cur" }).join(&name);
        let file = fs::File::create(&path).unwrap_or_else(|e| panic!("creating {path:?}: {e}"));
        std::io::Write::write_all(&mut &file, &m.bytes)
            .unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
        file.set_modified(UNIX_EPOCH + Duration::from_secs(m.received as u64))
            .unwrap_or_else(|e| panic!("setting the mtime of {path:?}: {e}"));
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {path:?}: {e}"));
        total += m.bytes.len() as u64;
    }
    total
}

/// Writes `n` messages into one mbox file at `path` (one file: far faster to make than a
/// Maildir's, and `doveadm import` reads it as fast): `From ` lines with the received
/// dates, flags and keywords in `Status:`, `X-Status:` and `X-Keywords:` headers, which
/// Dovecot's mbox reader takes in and hides (mbox-sync-parse.c, `mbox_status_flags`,
/// `mbox_xstatus_flags`). No generated line begins with `From `. Returns the bytes of the
/// messages.
fn generate_mbox(path: &Path, n: usize) -> u64 {
    let mut out = Vec::new();
    let mut total = 0;
    for m in generate(n) {
        let crlf = m.bytes.contains(&b'\r');
        let eol = if crlf { "\r\n" } else { "\n" };
        out.extend_from_slice(
            format!("From sender@example.org {}\n", asctime(m.received)).as_bytes(),
        );
        let mut status = String::new();
        if !m.new {
            status.push('O');
        }
        if m.flags.contains('S') {
            status.push('R');
        }
        let xstatus: String = [('R', 'A'), ('F', 'F'), ('D', 'T'), ('T', 'D')]
            .iter()
            .filter(|(maildir, _)| m.flags.contains(*maildir))
            .map(|&(_, mbox)| mbox)
            .collect();
        let keywords: Vec<&str> = m.keywords.iter().map(|&k| KEYWORDS[k]).collect();
        let mut headers = String::new();
        if !status.is_empty() {
            let _ = write!(headers, "Status: {status}{eol}");
        }
        if !xstatus.is_empty() {
            let _ = write!(headers, "X-Status: {xstatus}{eol}");
        }
        if !keywords.is_empty() {
            let _ = write!(headers, "X-Keywords: {}{eol}", keywords.join(" "));
        }
        out.extend_from_slice(headers.as_bytes());
        out.extend_from_slice(&m.bytes);
        // The separator line: Dovecot takes the newline before the next `From ` line as
        // the mbox's, not the message's.
        out.push(b'\n');
        total += m.bytes.len() as u64;
    }
    fs::write(path, out).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
    total
}

// ---------------------------------------------------------------------------------------
// Building and caching the store

/// `dovecot --version`, so that another Dovecot never reuses a cached store.
fn dovecot_version() -> String {
    let out = std::process::Command::new(tool("dovecot"))
        .arg("--version")
        .output()
        .expect("running dovecot --version");
    let v = String::from_utf8_lossy(&out.stdout);
    v.split_whitespace()
        .next()
        .unwrap_or("unknown")
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_")
}

/// The cached home (holding the store) for `format`, built first if there is none.
fn cached_home(format: Format) -> PathBuf {
    let n = format.messages();
    let root = test_root();
    let cache = root.join(format!(
        "large-{STORE_VERSION}-{}-{n}-dovecot{}",
        format.name(),
        dovecot_version()
    ));
    if cache.join("complete").exists() {
        eprintln!(
            "{}: reusing the cached store {}",
            format.name(),
            cache.display()
        );
        return cache.join("home");
    }
    let t = Instant::now();
    let dir = TestDir::new(&format!("large_build_{}", format.name()));
    let bytes = build(&dir, format, n);
    // Into place in one rename, so that a killed or concurrent build never leaves a
    // half-made store where a later run would take it.
    let staged = dir.join("cache");
    fs::create_dir(&staged).expect("creating the staged cache");
    fs::rename(dir.join("dovecot/home/bob"), staged.join("home")).expect("moving the store");
    fs::write(
        staged.join("complete"),
        format!("messages={n}\nbytes={bytes}\n"),
    )
    .expect("writing the cache marker");
    match fs::rename(&staged, &cache) {
        Ok(()) => {}
        // Another run finished the same build first: use its store.
        Err(_) if cache.join("complete").exists() => {}
        Err(e) => panic!("moving the built store to {}: {e}", cache.display()),
    }
    eprintln!(
        "{}: built {n} messages ({bytes} bytes) in {:.1?}, cached in {}",
        format.name(),
        t.elapsed(),
        cache.display()
    );
    cache.join("home")
}

/// Builds the store in `dir` (home `dovecot/home/bob`) with a private Dovecot; returns the
/// bytes generated.
fn build(dir: &TestDir, format: Format, n: usize) -> u64 {
    let dovecot = Dovecot::start(dir, format.layout());
    let user = dovecot.user("bob");
    let (uid, gid) = dovecot.mail_owner();
    let t = Instant::now();
    let bytes = if format == Format::Maildir {
        generate_maildir(&user.mail_root(), n, (uid, gid))
    } else {
        let src = dir.mkdir("src");
        let bytes = generate_mbox(&src.join("inbox"), n);
        chown_recursive(&src, uid, gid);
        eprintln!("{}: generated in {:.1?}", format.name(), t.elapsed());
        let source = format!("mbox:{0}:INBOX={0}/inbox:INDEX=MEMORY", src.display());
        user.adm(
            &[],
            &["import"],
            &["-s", &source, "", "mailbox", "INBOX", "all"],
        );
        bytes
    };
    eprintln!(
        "{}: generated and imported in {:.1?}",
        format.name(),
        t.elapsed()
    );
    // What a client's first FETCH leaves in the index and the cache (and the first sync of
    // the Maildir: its uidlist and index).
    let fetched = user.fetch_metadata("INBOX");
    assert_eq!(
        (fetched.len(), fetched.last().map(|m| m.uid as usize)),
        (n, Some(n)),
        "{}: messages and last UID after indexing {n} generated messages",
        format.name()
    );
    // Changes after that: the UIDs get holes, the first UID among them, and the index log
    // a tail past dovecot.index (the last changes are small, and Dovecot rewrites
    // dovecot.index only when a sync read more than 8 KiB of log: mail-index-sync.c,
    // mail_index_sync_want_index_write; asserted below).
    let (q, half) = (n / 4, n / 2);
    user.flags_set(&[], "add", "INBOX", &format!("1:{q}"), "\\Seen");
    user.flags_set(
        &[],
        "remove",
        "INBOX",
        &format!("{half}:{}", half + 400),
        "\\Seen \\Flagged",
    );
    let spread: Vec<String> = (0..n).step_by(997).map(|u| (u + 3).to_string()).collect();
    user.flags_set(&[], "add", "INBOX", &spread.join(","), "$Label1 urgent");
    user.flags_set(
        &[],
        "replace",
        "INBOX",
        &format!("{}:{}", n - 300, n - 250),
        "\\Answered work",
    );
    let expunged = format!("1,2,{q}:{},{half},{}:{},{}", q + 29, n - 100, n - 90, n - 1);
    user.expunge_set(&[], "INBOX", &expunged);
    user.flags_set(&[], "add", "INBOX", &format!("5,{}", n - 2), "\\Flagged");
    assert_log_tail(&user.index_dir("INBOX"), format);
    eprintln!("{}: built in {:.1?}", format.name(), t.elapsed());
    bytes
}

/// Asserts that `dovecot.index` in `dir` is behind its log: a view of the store must apply
/// the log's tail (the changes above), not just read the index. The on-disk header, not
/// `doveadm dump`'s (which shows the log replayed): `log_file_seq` and
/// `log_file_tail_offset` at bytes 60 and 64 of `struct mail_index_header`
/// (mail-index.h); the log's own sequence at byte 8 of `struct mail_transaction_log_header`
/// (mail-transaction-log.h).
fn assert_log_tail(dir: &Path, format: Format) {
    let u32_at = |bytes: &[u8], at: usize| {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
    };
    let index = fs::read(dir.join("dovecot.index")).expect("reading dovecot.index");
    let log = fs::read(dir.join("dovecot.index.log")).expect("reading dovecot.index.log");
    let (index_seq, tail, log_seq) = (u32_at(&index, 60), u32_at(&index, 64), u32_at(&log, 8));
    assert!(
        index_seq < log_seq || (tail as usize) < log.len(),
        "{}: dovecot.index is up to date with its log (seq {index_seq}/{log_seq}, tail {tail} \
         of {} bytes): the store has no log tail for a view to apply",
        format.name(),
        log.len()
    );
    eprintln!(
        "{}: dovecot.index is at log {index_seq} offset {tail}; the log is {log_seq}, {} bytes",
        format.name(),
        log.len()
    );
}

/// Recreates the tree `from` at `to` (which may exist, empty), ownership, modes and mtimes
/// kept: message files Dovecot never rewrites (Maildir's `cur/` and `new/` files, sdbox's
/// `u.N`) as hard links, everything else (indexes, logs, uidlists, mdbox's `m.N`, which
/// saves append to) copied.
fn link_tree(from: &Path, to: &Path) {
    if !to.exists() {
        fs::create_dir(to).unwrap_or_else(|e| panic!("mkdir {to:?}: {e}"));
    }
    let meta = fs::metadata(from).unwrap_or_else(|e| panic!("stat {from:?}: {e}"));
    let parent = from.file_name().and_then(|n| n.to_str()).unwrap_or("");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("reading {from:?}: {e}")) {
        let entry = entry.expect("dir entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() {
            link_tree(&src, &dst);
        } else if parent == "cur" || parent == "new" || name.starts_with("u.") {
            fs::hard_link(&src, &dst).unwrap_or_else(|e| panic!("ln {src:?} {dst:?}: {e}"));
        } else {
            fs::copy(&src, &dst).unwrap_or_else(|e| panic!("cp {src:?} {dst:?}: {e}"));
            let m = entry.metadata().expect("metadata");
            keep_owner_and_mtime(&dst, &m);
        }
    }
    fs::set_permissions(to, meta.permissions()).expect("chmod");
    // Last: creating the entries moved the directory's mtime, which Dovecot's Maildir sync
    // compares with what its index recorded.
    keep_owner_and_mtime(to, &meta);
}

fn keep_owner_and_mtime(path: &Path, like: &fs::Metadata) {
    std::os::unix::fs::lchown(path, Some(like.uid()), Some(like.gid()))
        .unwrap_or_else(|e| panic!("chown {path:?}: {e}"));
    let mtime = like.modified().expect("mtime");
    fs::File::open(path)
        .and_then(|f| f.set_modified(mtime))
        .unwrap_or_else(|e| panic!("setting the mtime of {path:?}: {e}"));
}

// ---------------------------------------------------------------------------------------
// The comparison

/// The `user.mailfs.status` count `key`.
fn status_count(mount: &Mount, key: &str) -> u64 {
    let raw = getxattr(mount.path(), "user.mailfs.status").expect("user.mailfs.status");
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no count {key} in status:\n{text}"))
}

/// The listed `<uid>.eml` names as UIDs; panics on any other name.
fn listed_uids(dir: &Path) -> BTreeSet<u32> {
    dir_names(dir)
        .unwrap_or_else(|e| panic!("listing {dir:?}: {e}"))
        .iter()
        .map(|name| {
            name.strip_suffix(".eml")
                .and_then(|uid| uid.parse().ok())
                .unwrap_or_else(|| panic!("{dir:?} lists {name:?}, not <uid>.eml"))
        })
        .collect()
}

/// Every message's size and mtime against doveadm's.
fn assert_sizes_and_mtimes_match(mount: &Mount, messages: &[Message], what: &str) {
    for m in messages {
        let path = mount.message("INBOX", m.uid);
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("stat {path:?}: {e}"));
        assert_eq!(
            meta.len(),
            m.size,
            "st_size of uid {} ({what}, {}) vs size.physical",
            m.uid,
            path.display()
        );
        assert_eq!(
            meta.mtime(),
            m.received,
            "st_mtime of uid {} ({what}, {}) vs date.received",
            m.uid,
            path.display()
        );
    }
}

/// The xattrs of a message against doveadm's.
fn assert_xattrs_match(mount: &Mount, m: &Message, what: &str) {
    let path = mount.message("INBOX", m.uid);
    for (attr, expected) in [
        ("user.mail.uid", m.uid.to_string()),
        ("user.mail.guid", m.guid.clone()),
        ("user.mail.flags", m.flags.clone()),
        ("user.mail.received", m.received.to_string()),
        ("user.mail.saved", m.saved.to_string()),
        ("user.mail.vsize", m.vsize.to_string()),
    ] {
        assert_eq!(
            xattr_string(&path, attr),
            expected,
            "{attr} of uid {} ({what}, {})",
            m.uid,
            path.display()
        );
    }
}

/// `count` UIDs spread evenly over `uids` (sorted), the first and the last among them.
fn spread_sample(uids: &[u32], count: usize) -> Vec<u32> {
    let mut sample: BTreeSet<u32> = (0..count)
        .map(|i| uids[i * (uids.len() - 1) / (count - 1).max(1)])
        .collect();
    sample.extend(uids.first().copied());
    sample.extend(uids.last().copied());
    sample.into_iter().collect()
}

fn large_view_matches_doveadm(format: Format) {
    let started = Instant::now();
    let tag = format.name();
    let cached = cached_home(format);
    let dir = TestDir::new(&format!("large_{tag}"));
    let dovecot = Dovecot::start(&dir, format.layout());
    let user = dovecot.user("bob");
    let t = Instant::now();
    link_tree(&cached, &user.home());
    eprintln!("{tag}: store copied in {:.1?}", t.elapsed());

    // doveadm first: its fetch writes to the index (Dovecot adds the `vsize` extension's
    // records, which the build's expunges reset), so after it the mount's first view is
    // built from exactly the state doveadm reported, and nothing changes the store until
    // every message has been compared with that view.
    let t = Instant::now();
    let messages = user.fetch_metadata("INBOX");
    let fetched = t.elapsed();
    let status = user.status("INBOX");
    let mount = Mount::start(&user.location(), &dir.join("mnt"), &[]);
    let inbox = mount.mailbox("INBOX");
    let t = Instant::now();
    let requests_before = status_count(&mount, "listings_served");
    let listed = listed_uids(&inbox);
    let listing = t.elapsed();
    // Directories advertise a 1 MiB st_blksize, so the listing (Rust's read_dir: glibc's
    // readdir) goes in requests of up to 1 MiB, about 6,500 entries each, where glibc's
    // default 32 KiB buffer would take one per 200 (100 for 20,000 messages).
    let requests = status_count(&mount, "listings_served") - requests_before;
    assert!(
        requests as usize <= listed.len() / 2_000 + 2,
        "{tag}: {requests} READDIRPLUS requests to list {} messages",
        listed.len()
    );
    let uids: Vec<u32> = messages.iter().map(|m| m.uid).collect();
    assert!(
        uids.len() > format.messages() * 9 / 10,
        "{tag}: doveadm reports only {} messages",
        uids.len()
    );
    // The store is varied, or the comparison proves less than it claims.
    for (what, count) in [
        (
            "no flags",
            messages.iter().filter(|m| m.flags.is_empty()).count(),
        ),
        (
            "\\Seen",
            messages
                .iter()
                .filter(|m| m.flags.contains("\\Seen"))
                .count(),
        ),
        (
            "a keyword",
            messages.iter().filter(|m| m.flags.contains('$')).count(),
        ),
        (
            "CRLF line ends",
            messages.iter().filter(|m| m.vsize == m.size).count(),
        ),
        (
            "over 64 KiB",
            messages.iter().filter(|m| m.size > 65_536).count(),
        ),
    ] {
        // dbox stores LF line ends (mail_save_crlf=no): only Maildir keeps CRLF.
        let absent_by_design = what == "CRLF line ends" && format != Format::Maildir;
        assert!(
            count > 0 || absent_by_design,
            "{tag}: no message with {what} in the generated store"
        );
    }
    let expected: BTreeSet<u32> = uids.iter().copied().collect();
    assert_eq!(expected.len(), uids.len(), "{tag}: doveadm repeats a UID");
    if listed != expected {
        let missing: Vec<_> = expected.difference(&listed).take(10).collect();
        let extra: Vec<_> = listed.difference(&expected).take(10).collect();
        panic!(
            "{tag}: the mount lists {} messages, doveadm {}; missing (first 10) {missing:?}, \
             not in doveadm (first 10) {extra:?}",
            listed.len(),
            expected.len()
        );
    }
    for (attr, value) in [
        ("user.mailbox.guid", status.guid.clone()),
        ("user.mailbox.uidvalidity", status.uidvalidity.to_string()),
        ("user.mailbox.uidnext", status.uidnext.to_string()),
    ] {
        assert_eq!(xattr_string(&inbox, attr), value, "{tag}: {attr} of INBOX");
    }

    let t = Instant::now();
    assert_sizes_and_mtimes_match(&mount, &messages, tag);
    let stats = t.elapsed();
    // Reading all six xattrs of every message through FUSE took 40 s for 30,000 messages
    // (with two getxattr calls each)
    // (a debug build on a busy 2-core machine): the xattrs of a sample spread evenly over
    // the UID range, the first and last message among them.
    let t = Instant::now();
    let sample: BTreeSet<u32> = spread_sample(&uids, XATTR_SAMPLE).into_iter().collect();
    let mut xattrs_compared = 0;
    for m in messages.iter().filter(|m| sample.contains(&m.uid)) {
        assert_xattrs_match(&mount, m, tag);
        xattrs_compared += 1;
    }
    let attrs = t.elapsed();

    // The bytes of a sample, with everything else about those messages once more.
    let t = Instant::now();
    let sample = spread_sample(&uids, TEXT_SAMPLE);
    let set: Vec<String> = sample.iter().map(u32::to_string).collect();
    let texts = user.fetch_set("INBOX", &set.join(","));
    assert_eq!(
        texts.iter().map(|m| m.uid).collect::<Vec<_>>(),
        sample,
        "{tag}: doveadm fetch text of the sample"
    );
    for m in &texts {
        assert_message_matches(&mount.message("INBOX", m.uid), m);
    }
    let bytes = t.elapsed();

    // One delivery: the view must be continued (index delta, Maildir journal), not rebuilt.
    let t = Instant::now();
    let continued = status_count(&mount, "view_continuations");
    let n = format.messages() + 1;
    let uid = user.save(
        "INBOX",
        &email(
            n,
            "One more on a large mailbox",
            "delivered after mounting\n",
        ),
    );
    wait_for(
        Duration::from_secs(10),
        "the delivered message to appear in the mount",
        || fs::metadata(mount.message("INBOX", uid)).ok(),
    );
    let delivered = user.fetch_set("INBOX", &uid.to_string());
    assert_eq!(delivered.len(), 1, "{tag}: doveadm fetch of uid {uid}");
    assert_message_matches(&mount.message("INBOX", uid), &delivered[0]);
    let mut expected_after = expected.clone();
    expected_after.insert(uid);
    assert_eq!(
        listed_uids(&inbox),
        expected_after,
        "{tag}: the listing after one delivery vs doveadm's UIDs"
    );
    assert_eq!(
        xattr_string(&inbox, "user.mailbox.uidnext"),
        user.status("INBOX").uidnext.to_string(),
        "{tag}: uidnext of INBOX after one delivery"
    );
    assert!(
        status_count(&mount, "view_continuations") > continued,
        "{tag}: the view of INBOX was rebuilt, not continued, after one delivery"
    );
    let refresh = t.elapsed();

    eprintln!(
        "{tag}: {} messages compared: listing {listing:.1?}, doveadm fetch {fetched:.1?}, \
         stat of every message {stats:.1?}, xattrs of {xattrs_compared} {attrs:.1?}, bytes \
         of {} {bytes:.1?}, delivery {refresh:.1?}; total {:.1?}",
        messages.len(),
        texts.len(),
        started.elapsed()
    );
}

#[test]
fn large_maildir_view_matches_doveadm() {
    require!(Dovecot, Fuse);
    large_view_matches_doveadm(Format::Maildir);
}

#[test]
fn large_mdbox_view_matches_doveadm() {
    require!(Dovecot, Fuse);
    large_view_matches_doveadm(Format::Mdbox);
}

#[test]
fn large_sdbox_view_matches_doveadm() {
    require!(Dovecot, Fuse);
    large_view_matches_doveadm(Format::Sdbox);
}
