//! Messages compressed by Dovecot's zlib plugin (`zlib_save = gz | bz2 | lz4 | zstd`, and
//! xz written outside Dovecot, which 2.3 reads but cannot write), in Maildir, sdbox and
//! mdbox, the setting changed between saves so one mailbox mixes them: every message
//! against doveadm (bytes, st_size, flags, GUID, dates, vsize), reads from the middle and
//! the end against doveadm's bytes at those offsets, a big message read backwards without
//! decoding from the start at each read, every `--open-mode`; damaged streams give EIO with
//! a log line naming the file, never wrong bytes or a panic.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::TestDir;
use crate::util::compare::assert_mount_matches_dovecot;
use crate::util::corpus::{email, large};
use crate::util::dovecot::{DboxLayout, Dovecot, Layout, Message, User};
use crate::util::fsx::{errno, getxattr, walk};
use crate::util::mount::Mount;
use crate::util::pki::mail_crypt_settings;

const ZLIB: &str = "mail_plugins = $mail_plugins zlib";

/// Each algorithm's magic, to check that Dovecot really stored the messages compressed.
const MAGICS: [(&str, &[u8]); 4] = [
    ("gz", &[0x1f, 0x8b, 0x08]),
    ("bz2", b"BZh"),
    ("lz4", b"Dovecot-LZ4"),
    ("zstd", &[0x28, 0xb5, 0x2f, 0xfd]),
];

/// A counter of the root's `user.mailfs.status`.
#[track_caller]
fn counter(mount: &Mount, key: &str) -> u64 {
    let raw = getxattr(mount.path(), "user.mailfs.status").expect("status xattr");
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no count {key} in status:\n{text}"))
}

/// Saves `message` into `mailbox` with `zlib_save` set to `algo` ("" = uncompressed) and
/// the level, if any.
fn save(user: &User<'_>, mailbox: &str, algo: &str, level: Option<u32>, message: &[u8]) {
    let save = format!("plugin/zlib_save={algo}");
    let level = level.map(|l| format!("plugin/zlib_save_level={l}"));
    let mut opts = vec![save.as_str()];
    opts.extend(level.as_deref());
    user.save_opts(&opts, mailbox, message);
}

/// The message body of `n` lines, each different.
fn lines(n: usize, what: &str) -> String {
    (0..n)
        .map(|i| format!("{what} line {i}: {}\n", i * 7919 % 10007))
        .collect()
}

/// Fills `Algos` with one message per algorithm and level, and `INBOX` with uncompressed,
/// gz and zstd messages mixed and a big zstd one (about 2.5 MB); flags on a few. Returns
/// the big message's UID in INBOX.
fn populate(user: &User<'_>) -> u32 {
    user.create_mailbox("Algos");
    let settings: [(&str, Option<u32>); 7] = [
        ("gz", None),
        ("gz", Some(1)),
        ("gz", Some(9)),
        ("bz2", Some(9)),
        ("lz4", None),
        ("zstd", None),
        ("zstd", Some(19)),
    ];
    for (i, (algo, level)) in settings.iter().enumerate() {
        let body = lines(300 + i * 50, algo);
        save(
            user,
            "Algos",
            algo,
            *level,
            &email(i, &format!("{algo} {level:?}"), &body),
        );
    }
    let mixed = ["", "gz", "zstd", "", "gz", "zstd", "lz4", ""];
    for (i, algo) in mixed.iter().enumerate() {
        save(
            user,
            "INBOX",
            algo,
            None,
            &email(
                20 + i,
                &format!("mixed {algo}"),
                &lines(50 + 40 * i, "mixed"),
            ),
        );
    }
    save(user, "INBOX", "zstd", None, &large(2500));
    let big = mixed.len() as u32 + 1;
    user.flags_add("INBOX", 2, "\\Seen $Label1");
    user.flags_add("INBOX", 3, "\\Flagged");
    user.flags_add("Algos", 4, "\\Answered work");
    big
}

/// Every file below `root`, read.
fn stored_bytes(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walk(root)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let b = fs::read(&p).unwrap_or_default();
            (p, b)
        })
        .collect()
}

/// Asserts that the store holds a stream of every algorithm (the test is not vacuous).
#[track_caller]
fn assert_stored_compressed(user: &User<'_>) {
    let files = stored_bytes(&user.mail_root());
    for (algo, magic) in MAGICS {
        assert!(
            files
                .iter()
                .any(|(_, b)| b.windows(magic.len()).any(|w| w == magic)),
            "no {algo} stream stored below {:?}",
            user.mail_root()
        );
    }
}

/// pread of `len` bytes at `at` (fewer at the end).
fn pread(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f
            .read_at(&mut buf[done..], at + done as u64)
            .unwrap_or_else(|e| panic!("pread {path:?} at {}: {e}", at + done as u64));
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    buf
}

/// Reads from the middle and the end of every message (on a fresh mount, before anything
/// else read them), against doveadm's bytes at the same offsets.
#[track_caller]
fn assert_offset_reads(mount: &Mount, mailbox: &str, messages: &[Message]) {
    for m in messages {
        let path = mount.message(mailbox, m.uid);
        let len = m.text.len() as u64;
        for at in [len - len.min(100), len / 2, len / 3, 1, len] {
            let got = pread(&path, at, 100);
            let end = (at as usize + 100).min(m.text.len());
            assert!(
                got == m.text[at as usize..end],
                "{mailbox} uid {} at {at}: {} bytes differ from doveadm's",
                m.uid,
                got.len()
            );
        }
    }
}

/// The big message read backwards in 4 KiB steps: doveadm's bytes, in reasonable time, and
/// at most `max_starts` decoder starts (not one per read).
#[track_caller]
fn assert_backwards_read(mount: &Mount, big: &Message, max_starts: u64) {
    let path = mount.message("INBOX", big.uid);
    let f = fs::File::open(&path).expect("open big");
    let before = counter(mount, "decoder_starts");
    let started = Instant::now();
    let mut at = big.text.len() as u64;
    let mut reads = 0;
    let mut buf = vec![0u8; 4096];
    while at > 0 {
        let from = at.saturating_sub(4096);
        let want = (at - from) as usize;
        f.read_exact_at(&mut buf[..want], from)
            .unwrap_or_else(|e| panic!("pread at {from}: {e}"));
        assert!(
            buf[..want] == big.text[from as usize..at as usize],
            "bytes at {from} differ from doveadm's"
        );
        at = from;
        reads += 1;
    }
    let took = started.elapsed();
    let starts = counter(mount, "decoder_starts") - before;
    assert!(
        starts <= max_starts,
        "{reads} backward reads of a {}-byte message took {starts} decoder starts \
         (at most {max_starts})",
        big.text.len()
    );
    assert!(
        took < Duration::from_secs(20),
        "backward read took {took:?}"
    );
}

/// One format: store, then a fresh mount's offset and backward reads, then everything
/// against doveadm.
fn check_format(name: &str, layout: Layout, extra: impl FnOnce(&User<'_>)) {
    let dir = TestDir::new(name);
    let dovecot = Dovecot::start_with_settings(&dir, layout, &[ZLIB]);
    let bob = dovecot.user("bob");
    let big = populate(&bob);
    extra(&bob);
    assert_stored_compressed(&bob);
    let inbox = bob.fetch("INBOX");
    let algos = bob.fetch("Algos");
    let big = inbox.iter().find(|m| m.uid == big).expect("big message");
    assert!(big.text.len() > 2_000_000, "{}", big.text.len());

    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    assert_backwards_read(&mount, big, 2);
    assert_offset_reads(&mount, "INBOX", &inbox);
    assert_offset_reads(&mount, "Algos", &algos);
    let compared = assert_mount_matches_dovecot(&mount, &bob);
    assert!(compared.messages >= 16, "{compared:?}");
    let log = mount.stop();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("EIO"), "{log}");
}

/// Dovecot 2.3 reads xz but cannot write it (`zlib_save = xz` is "not compiled in" for
/// saving): a Maildir message compressed outside Dovecot, the name kept (S= is the
/// uncompressed size), as Dovecot's documentation describes for compressing a Maildir.
fn xz_outside_dovecot(user: &User<'_>) {
    save(user, "Algos", "", None, &email(40, "xz", &lines(500, "xz")));
    let cur = user.mailbox_dir("Algos");
    let newest = ["new", "cur"]
        .iter()
        .flat_map(|s| {
            fs::read_dir(cur.join(s))
                .unwrap()
                .map(|e| e.unwrap().path())
        })
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .expect("the xz message's file");
    let out = Command::new("xz")
        .arg("-c")
        .arg(&newest)
        .output()
        .expect("running xz");
    assert!(out.status.success());
    let meta = fs::metadata(&newest).unwrap();
    let tmp = newest.with_extension("xz-tmp");
    fs::write(&tmp, &out.stdout).unwrap();
    std::os::unix::fs::chown(&tmp, Some(meta_uid(&meta)), Some(meta_gid(&meta))).unwrap();
    fs::rename(&tmp, &newest).unwrap();
    assert!(
        user.text("Algos", 8)
            .starts_with(b"Return-Path: <sender40@"),
        "doveadm reads the xz message"
    );
}

fn meta_uid(m: &fs::Metadata) -> u32 {
    std::os::unix::fs::MetadataExt::uid(m)
}

fn meta_gid(m: &fs::Metadata) -> u32 {
    std::os::unix::fs::MetadataExt::gid(m)
}

#[test]
fn maildir_messages_of_every_algorithm_read_as_doveadm_fetches() {
    require!(Dovecot, Fuse);
    check_format("zlib_maildir", Layout::MaildirPlusPlus, xz_outside_dovecot);
}

#[test]
fn sdbox_messages_of_every_algorithm_read_as_doveadm_fetches() {
    require!(Dovecot, Fuse);
    check_format("zlib_sdbox", DboxLayout::sdbox(""), |_| {});
}

#[test]
fn mdbox_messages_of_every_algorithm_read_as_doveadm_fetches() {
    require!(Dovecot, Fuse);
    check_format("zlib_mdbox", Layout::Mdbox, |_| {});
}

/// Every `--open-mode` reads decoded bytes (a decoded message is never handed to the kernel
/// as the stored file, even in passthrough mode, where a Maildir file otherwise is).
#[test]
fn every_open_mode_reads_decoded_bytes() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("zlib_modes");
    let dovecot = Dovecot::start_with_settings(&dir, Layout::MaildirPlusPlus, &[ZLIB]);
    let bob = dovecot.user("bob");
    for (i, algo) in ["gz", "", "zstd", "bz2", "lz4"].iter().enumerate() {
        save(
            &bob,
            "INBOX",
            algo,
            None,
            &email(i, algo, &lines(400, algo)),
        );
    }
    let inbox = bob.fetch("INBOX");
    for (n, mode) in ["kernel", "held", "passthrough"].iter().enumerate() {
        let mount = Mount::start(
            &bob.location(),
            &dir.join(format!("mnt-{n}")),
            &["--open-mode", mode],
        );
        for m in &inbox {
            let path = mount.message("INBOX", m.uid);
            assert_eq!(fs::metadata(&path).unwrap().len(), m.size, "{mode} size");
            let got = fs::read(&path).unwrap_or_else(|e| panic!("{mode} uid {}: {e}", m.uid));
            assert!(got == m.text, "{mode}: uid {} differs from doveadm", m.uid);
        }
        let log = mount.stop();
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// Finds `magic` in `file` after `from`; its offset.
fn find(file: &Path, magic: &[u8], from: usize) -> usize {
    let b = fs::read(file).unwrap();
    b[from..]
        .windows(magic.len())
        .position(|w| w == magic)
        .map(|p| p + from)
        .unwrap_or_else(|| panic!("no {magic:?} in {file:?}"))
}

fn flip(file: &Path, at: usize, mask: u8) {
    let mut b = fs::read(file).unwrap();
    b[at] ^= mask;
    fs::write(file, b).unwrap();
}

/// A store's damaged compressed messages: EIO on reading, one log line naming the file,
/// never a panic or other bytes; the undamaged messages beside them still read.
fn check_damage(name: &str, layout: Layout) {
    let dir = TestDir::new(name);
    let dovecot = Dovecot::start_with_settings(&dir, layout, &[ZLIB]);
    let bob = dovecot.user("bob");
    let algos = ["gz", "bz2", "zstd", "lz4", ""];
    for (i, algo) in algos.iter().enumerate() {
        save(
            &bob,
            "INBOX",
            algo,
            None,
            &email(i, algo, &lines(20000, algo)),
        );
    }
    let good = bob.fetch("INBOX");
    // Damage: gz a flipped bit early in the stream and bz2 in the middle (their CRCs fail
    // at the end: several chunks of bytes decode before that), zstd a reserved bit in its
    // frame header, lz4 (Maildir: the file) cut short.
    let mut damaged: Vec<(u32, PathBuf)> = Vec::new();
    match layout {
        Layout::MaildirPlusPlus => {
            let inbox = bob.mailbox_dir("INBOX").join("new");
            let mut files: Vec<PathBuf> = fs::read_dir(&inbox)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort_by_key(|p| fs::metadata(p).unwrap().modified().unwrap());
            // Saved in UID order, one doveadm process each.
            let by_uid = |uid: u32| files[uid as usize - 1].clone();
            let gz = by_uid(1);
            flip(&gz, 300, 0x04);
            let bz = by_uid(2);
            let len = fs::metadata(&bz).unwrap().len() as usize;
            flip(&bz, len / 2, 0x20);
            let zst = by_uid(3);
            flip(&zst, 4, 0x08);
            let lz = by_uid(4);
            let len = fs::metadata(&lz).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&lz)
                .unwrap()
                .set_len(len - 7)
                .unwrap();
            damaged.extend([(1, gz), (2, bz), (3, zst), (4, lz)]);
        }
        Layout::Mdbox => {
            // All five messages in storage/m.1, in UID order: each stream found after the
            // previous one (bz2 by its whole block magic, which compressed bytes are
            // unlikely to hold).
            let file = bob.storage_dirs()[0].join("m.1");
            let gz = find(&file, MAGICS[0].1, 0);
            let bz = find(&file, b"BZh91AY&SY", gz);
            let zst = find(&file, MAGICS[3].1, bz);
            flip(&file, gz + 300, 0x04);
            flip(&file, bz + 2000, 0x20);
            flip(&file, zst + 4, 0x08);
            damaged.extend([(1, file.clone()), (2, file.clone()), (3, file)]);
        }
        _ => {
            for (uid, magic, mask) in [
                (1u32, &MAGICS[0].1, 0x04u8),
                (2, &MAGICS[1].1, 0x20),
                (3, &MAGICS[3].1, 0x08),
            ] {
                let file = bob.mailbox_dir("INBOX").join(format!("u.{uid}"));
                let at = find(&file, magic, 0);
                let target = match uid {
                    1 => at + 300,
                    2 => at + 2000,
                    _ => at + 4,
                };
                flip(&file, target, mask);
                damaged.push((uid, file));
            }
        }
    }
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    for (uid, file) in &damaged {
        let path = mount.message("INBOX", *uid);
        for _ in 0..2 {
            let r = fs::read(&path);
            assert_eq!(
                errno(&r),
                Some(libc::EIO),
                "uid {uid} ({file:?}) damaged: {:?} bytes",
                r.map(|b| b.len())
            );
        }
        // A read from the middle fails too (nothing served before the whole stream
        // checked out).
        let f = fs::File::open(&path).unwrap();
        let mut buf = [0u8; 100];
        let r = f.read_at(&mut buf, 5000);
        assert_eq!(errno(&r), Some(libc::EIO), "uid {uid} middle");
    }
    for m in &good {
        if damaged.iter().any(|(u, _)| *u == m.uid) {
            continue;
        }
        let got = fs::read(mount.message("INBOX", m.uid)).expect("undamaged reads");
        assert!(got == m.text, "uid {} differs", m.uid);
    }
    let log = mount.stop();
    assert!(!log.contains("panicked"), "{log}");
    for (uid, file) in &damaged {
        let name = file.display().to_string();
        assert!(
            log.lines()
                .any(|l| l.contains(&name) && l.contains("cannot be decoded")),
            "no log line names the damaged {file:?} (uid {uid}):\n{log}"
        );
    }
}

#[test]
fn damaged_maildir_streams_give_eio_naming_the_file() {
    require!(Dovecot, Fuse);
    check_damage("zlib_bad_maildir", Layout::MaildirPlusPlus);
}

#[test]
fn damaged_sdbox_streams_give_eio_naming_the_file() {
    require!(Dovecot, Fuse);
    check_damage("zlib_bad_sdbox", DboxLayout::sdbox(""));
}

#[test]
fn damaged_mdbox_streams_give_eio_naming_the_file() {
    require!(Dovecot, Fuse);
    check_damage("zlib_bad_mdbox", Layout::Mdbox);
}

/// An sdbox message Dovecot's mail_crypt plugin encrypted is listed and gives EIO, with a
/// log line calling it encrypted (mailfs holds no key), not "compressed or encrypted" or
/// a decoding failure.
#[test]
fn an_encrypted_sdbox_message_is_named_encrypted() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("zlib_crypt_sdbox");
    let settings = mail_crypt_settings(&dir.mkdir("keys"));
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let dovecot = Dovecot::start_with_settings(&dir, DboxLayout::sdbox(""), &settings);
    let bob = dovecot.user("bob");
    let plain = bob.save("INBOX", &email(1, "Sealed", "for the key holder only\n"));
    let file = bob.mailbox_dir("INBOX").join(format!("u.{plain}"));
    find(&file, b"CRYPTED\x03\x07", 0);
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let r = fs::read(mount.message("INBOX", plain));
    assert_eq!(errno(&r), Some(libc::EIO), "{:?}", r.map(|b| b.len()));
    let log = mount.stop();
    assert!(
        log.lines().any(|l| l.contains(&format!("uid {plain}"))
            && l.contains("encrypted (Dovecot's mail_crypt plugin)")),
        "no line calls uid {plain} encrypted:\n{log}"
    );
    assert!(!log.contains("compressed or encrypted"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
