//! `--open-mode kernel|held|passthrough`: every mode serves doveadm's bytes; kernel opens
//! really cost no request once the page cache holds a message; passthrough really bypasses
//! mailfs where the kernel allows it (or falls back with a log line); and an open file of a
//! message expunged meanwhile reads its bytes to the end (held) or fails with ESTALE,
//! never with other bytes (kernel).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::TestDir;
use crate::util::corpus::{email, large};
use crate::util::dovecot::{DboxLayout, Dovecot, Layout, Message, User};
use crate::util::fsx::getxattr;
use crate::util::mount::Mount;

/// `key: value` of the root's `user.mailfs.status`.
fn status(mount: &Mount, key: &str) -> String {
    let raw = getxattr(mount.path(), "user.mailfs.status").expect("status xattr");
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key} in status:\n{text}"))
}

fn reads_served(mount: &Mount) -> u64 {
    status(mount, "reads_served").parse().expect("a count")
}

/// 30 messages: small ones, three over 200 KB, one with an empty body.
fn populate(user: &User<'_>) -> Vec<Message> {
    for i in 0..30usize {
        let msg = match i {
            5 | 17 | 29 => {
                let mut m = email(i, &format!("Large {i}"), "see below\n");
                m.extend_from_slice(&large(220 + i));
                m
            }
            11 => email(i, "Empty body", ""),
            _ => email(
                i,
                &format!("Message {i}"),
                &format!("line {i}\n").repeat(1 + i),
            ),
        };
        user.save("INBOX", &msg);
    }
    user.fetch("INBOX")
}

/// Reads every message whole and from its middle; compares with doveadm.
fn read_all_and_compare(mount: &Mount, messages: &[Message], what: &str) {
    for m in messages {
        let path = mount.message("INBOX", m.uid);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{what}: reading {path:?}: {e}"));
        assert!(
            bytes == m.text,
            "{what}: uid {} differs from doveadm",
            m.uid
        );
        let size = fs::metadata(&path).expect("stat").len();
        assert_eq!(
            size,
            m.text.len() as u64,
            "{what}: st_size of uid {}",
            m.uid
        );
        let mid = m.text.len() / 2;
        let mut f = fs::File::open(&path).expect("open");
        f.seek(SeekFrom::Start(mid as u64)).expect("seek");
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).expect("read from the middle");
        assert!(
            rest == m.text[mid..],
            "{what}: uid {} from offset {mid}",
            m.uid
        );
    }
}

#[test]
fn every_open_mode_serves_doveadm_bytes() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("open_modes");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let user = dovecot.user("bob");
    let messages = populate(&user);
    for mode in ["kernel", "held", "passthrough"] {
        let mount = Mount::start(
            &user.location(),
            &dir.join(format!("mnt-{mode}")),
            &["--open-mode", mode],
        );
        assert_eq!(status(&mount, "open_mode"), mode);
        let before = reads_served(&mount);
        read_all_and_compare(&mount, &messages, mode);
        let served = reads_served(&mount) - before;
        match mode {
            "kernel" => assert_eq!(status(&mount, "kernel_opens"), "true"),
            "held" => {
                assert_eq!(status(&mount, "kernel_opens"), "false");
                assert_eq!(status(&mount, "passthrough"), "false");
                assert!(served > 0, "held opens read through mailfs");
            }
            _ => {
                if status(&mount, "passthrough") == "true" {
                    assert_eq!(served, 0, "passthrough reads reached mailfs");
                } else {
                    let log = mount.log();
                    assert!(
                        log.contains("passthrough"),
                        "passthrough is off but nothing was logged:\n{log}"
                    );
                }
            }
        }
        mount.stop();
    }
    // dbox messages are not whole files: passthrough serves them as held opens.
    let dir = TestDir::new("open_modes_sdbox");
    let dovecot = Dovecot::start(&dir, DboxLayout::sdbox(""));
    let user = dovecot.user("bob");
    let messages = populate(&user);
    let mount = Mount::start(
        &user.location(),
        &dir.join("mnt"),
        &["--open-mode", "passthrough"],
    );
    let before = reads_served(&mount);
    read_all_and_compare(&mount, &messages, "sdbox passthrough");
    assert!(
        reads_served(&mount) > before,
        "dbox reads go through mailfs"
    );
}

#[test]
fn kernel_opens_keep_the_page_cache() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("open_cache");
    let dovecot = Dovecot::start(&dir, DboxLayout::mdbox(""));
    let user = dovecot.user("bob");
    let messages = populate(&user);
    let mount = Mount::start(&user.location(), &dir.join("mnt"), &[]);
    read_all_and_compare(&mount, &messages, "first pass");
    let after_first = reads_served(&mount);
    assert!(after_first > 0, "the first pass was read through mailfs");
    let opens: u64 = status(&mount, "opens_served").parse().expect("a count");
    assert!(
        opens <= 1,
        "only the first open may reach mailfs, {opens} did"
    );
    read_all_and_compare(&mount, &messages, "second pass");
    assert_eq!(
        reads_served(&mount),
        after_first,
        "the second pass should come from the page cache without a request"
    );
    assert_eq!(status(&mount, "opens_served"), opens.to_string());
    assert_eq!(status(&mount, "kernel_opens"), "true");
}

/// Waits until the message's name is gone from the mount (the expunge was noticed).
fn wait_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::metadata(path).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{path:?} still there 5 s after the expunge"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn expunged_message_open_file_by_mode() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("open_expunged");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let user = dovecot.user("bob");
    let messages = populate(&user);
    user.create_mailbox("Archive");
    for i in 0..80usize {
        user.save("Archive", &email(100 + i, "Filler", "x\n"));
    }
    let fillers = user.fetch("Archive");

    // held: an open file reads its bytes to the end after the expunge.
    let held = Mount::start(
        &user.location(),
        &dir.join("mnt-held"),
        &["--open-mode", "held"],
    );
    let victim = &messages[3];
    let mut f = fs::File::open(held.message("INBOX", victim.uid)).expect("open");
    user.expunge("INBOX", victim.uid);
    wait_gone(&held.message("INBOX", victim.uid));
    let mut got = Vec::new();
    f.read_to_end(&mut got)
        .expect("held: reading an expunged open message");
    assert!(got == victim.text, "held: other bytes after the expunge");
    drop(f);
    held.stop();

    // kernel: never read before, pushed out of the kept files by 80 other reads: ESTALE.
    let mount = Mount::start(&user.location(), &dir.join("mnt-kernel"), &[]);
    let read_first = &messages[4];
    let never_read = &messages[6];
    let mut first = fs::File::open(mount.message("INBOX", read_first.uid)).expect("open");
    let mut head = [0u8; 1];
    first.read_exact(&mut head).expect("read one byte");
    let mut untouched = fs::File::open(mount.message("INBOX", never_read.uid)).expect("open");
    user.expunge("INBOX", never_read.uid);
    user.expunge("INBOX", read_first.uid);
    wait_gone(&mount.message("INBOX", never_read.uid));
    for m in &fillers {
        fs::read(mount.message("Archive", m.uid)).expect("filler");
    }
    let mut got = Vec::new();
    let err = untouched
        .read_to_end(&mut got)
        .expect_err("kernel: a never-read expunged message cannot be read");
    assert_eq!(err.raw_os_error(), Some(libc::ESTALE), "{err}");
    // One byte was read: the rest is its bytes (page cache) or ESTALE, nothing else.
    let mut rest = head.to_vec();
    match first.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest == read_first.text,
            "kernel: other bytes after the expunge"
        ),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
    }
}

#[test]
fn a_bad_open_mode_is_a_usage_error() {
    require!(Fuse);
    let dir = TestDir::new("open_bad");
    let out = crate::util::mount::mailfs([
        "mount",
        dir.path().to_str().expect("utf-8"),
        dir.join("mnt").to_str().expect("utf-8"),
        "--open-mode",
        "bogus",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kernel, held or passthrough"), "{stderr}");
}
