//! `--open-mode kernel|held|passthrough`: every mode serves doveadm's bytes; kernel opens
//! really cost no request once the page cache holds a message; passthrough really bypasses
//! mailfs where the kernel allows it (or falls back with a WARN line); and an open file of a
//! message expunged meanwhile reads its bytes to the end (held) or, in kernel mode, reads
//! what the page cache and the 64 kept stored files hold and past that fails with ESTALE,
//! never with other bytes.
//!
//! Mountpoints are named `mnt-<n>`, never after a mode: the mount log names the mountpoint,
//! and a mountpoint called `mnt-passthrough` would satisfy a search for "passthrough" in it.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::corpus::{email, large};
use crate::util::dovecot::{DboxLayout, Dovecot, Layout, Message, User};
use crate::util::fsx::{errno, errno_name, getxattr};
use crate::util::mount::{Mount, mount_must_fail};
use crate::util::{TestDir, assert_bytes_eq};

/// `key: value` of the root's `user.mailfs.status`.
#[track_caller]
fn status(mount: &Mount, key: &str) -> String {
    let raw = getxattr(mount.path(), "user.mailfs.status").expect("status xattr");
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key} in status:\n{text}"))
}

/// A counter of the status.
#[track_caller]
fn counter(mount: &Mount, key: &str) -> u64 {
    let v = status(mount, key);
    v.parse()
        .unwrap_or_else(|e| panic!("{key}: {v:?} is not a count: {e}"))
}

/// READ requests that reached mailfs so far.
#[track_caller]
fn reads_served(mount: &Mount) -> u64 {
    counter(mount, "reads_served")
}

/// A message with headers and no body at all (nothing after the blank line).
fn empty_body(n: usize) -> Vec<u8> {
    let mut m = email(n, "Empty body", "");
    // `email` ends with "\n\n" + body + "\n": drop the body's line end.
    assert!(m.ends_with(b"\n\n\n"));
    m.pop();
    m
}

/// 30 messages: small ones of various sizes, three over 200 KB, one with an empty body.
fn populate(user: &User<'_>) -> Vec<Message> {
    for i in 0..30usize {
        let msg = match i {
            5 | 17 | 29 => {
                let mut m = email(i, &format!("Large {i}"), "see below\n");
                m.extend_from_slice(&large(220 + i));
                m
            }
            11 => empty_body(i),
            _ => email(
                i,
                &format!("Message {i}"),
                &format!("line {i}\n").repeat(1 + i * i),
            ),
        };
        user.save("INBOX", &msg);
    }
    let messages = user.fetch("INBOX");
    assert_eq!(messages.len(), 30, "doveadm sees every saved message");
    assert_eq!(
        messages.iter().filter(|m| m.text.len() > 200_000).count(),
        3,
        "three messages over 200 KB"
    );
    assert!(
        messages.iter().any(|m| m.text.ends_with(b"\n\n")),
        "the empty-body message kept its empty body"
    );
    messages
}

/// Reads every message whole and from its middle (a seek, then a read to the end), and
/// compares the bytes and `st_size` with doveadm's.
#[track_caller]
fn read_all_and_compare(mount: &Mount, messages: &[Message], what: &str) {
    for m in messages {
        let path = mount.message("INBOX", m.uid);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{what}: reading {path:?}: {e}"));
        assert_bytes_eq(&bytes, &m.text, &format!("{what}: uid {}", m.uid));
        let size = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{what}: stat {path:?}: {e}"))
            .len();
        assert_eq!(
            size,
            m.text.len() as u64,
            "{what}: st_size of uid {}",
            m.uid
        );
        let mid = m.text.len() / 2;
        let mut f = fs::File::open(&path).unwrap_or_else(|e| panic!("{what}: open {path:?}: {e}"));
        f.seek(SeekFrom::Start(mid as u64)).expect("seek");
        let mut rest = Vec::new();
        f.read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{what}: reading uid {} from offset {mid}: {e}", m.uid));
        assert_bytes_eq(
            &rest,
            &m.text[mid..],
            &format!("{what}: uid {} from offset {mid}", m.uid),
        );
    }
}

/// The mount log's WARN lines that mention passthrough.
fn passthrough_warnings(mount: &Mount) -> Vec<String> {
    mount
        .log()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("passthrough"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_open_mode_serves_doveadm_bytes() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("open_modes");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let user = dovecot.user("bob");
    let messages = populate(&user);
    for (n, mode) in ["kernel", "held", "passthrough"].into_iter().enumerate() {
        let mount = Mount::start(
            &user.location(),
            &dir.join(format!("mnt-{n}")),
            &["--open-mode", mode],
        );
        assert_eq!(status(&mount, "open_mode"), mode);
        let before = reads_served(&mount);
        read_all_and_compare(&mount, &messages, mode);
        let served = reads_served(&mount) - before;
        match mode {
            "kernel" => {
                assert_eq!(status(&mount, "kernel_opens"), "true");
                assert_eq!(status(&mount, "passthrough"), "false");
                assert!(served > 0, "kernel: cold reads reach mailfs");
            }
            "held" => {
                assert_eq!(status(&mount, "kernel_opens"), "false");
                assert_eq!(status(&mount, "passthrough"), "false");
                assert!(served > 0, "held: reads go through mailfs");
                // 30 messages, each opened twice, every open a request.
                let opens = counter(&mount, "opens_served");
                assert!(opens >= 60, "held: only {opens} opens reached mailfs");
            }
            _ => {
                assert_eq!(status(&mount, "kernel_opens"), "false");
                let warnings = passthrough_warnings(&mount);
                if status(&mount, "passthrough") == "true" {
                    assert_eq!(
                        served, 0,
                        "passthrough: {served} reads reached mailfs instead of the kernel \
                         reading the Maildir files"
                    );
                    assert!(
                        warnings.is_empty(),
                        "passthrough in use, yet a fallback was logged: {warnings:?}"
                    );
                } else {
                    assert!(
                        !warnings.is_empty(),
                        "passthrough is off but no WARN line says so:\n{}",
                        mount.log()
                    );
                    assert!(served > 0, "fell back to held opens, which read via mailfs");
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
    let passthrough = status(&mount, "passthrough");
    let before = reads_served(&mount);
    read_all_and_compare(&mount, &messages, "sdbox passthrough");
    assert!(
        reads_served(&mount) > before,
        "sdbox: reads of dbox messages go through mailfs"
    );
    // Not being a whole file is no refusal: passthrough stays as the kernel agreed it.
    assert_eq!(status(&mount, "passthrough"), passthrough);
}

#[test]
fn kernel_opens_keep_the_page_cache() {
    require!(Dovecot, Fuse);
    for layout in [Layout::MaildirPlusPlus, DboxLayout::mdbox("")] {
        let dir = TestDir::new("open_cache");
        let dovecot = Dovecot::start(&dir, layout);
        let user = dovecot.user("bob");
        let messages = populate(&user);
        let what = format!("{layout:?}");
        // Default options: --open-mode kernel.
        let mount = Mount::start(&user.location(), &dir.join("mnt"), &[]);
        assert_eq!(status(&mount, "open_mode"), "kernel", "{what}");
        read_all_and_compare(&mount, &messages, &format!("{what}, first pass"));
        assert_eq!(status(&mount, "kernel_opens"), "true", "{what}");
        let after_first = reads_served(&mount);
        assert!(
            after_first > 0,
            "{what}: the first pass was read via mailfs"
        );
        // 60 opens, of which only the first reached mailfs (answered ENOSYS).
        assert_eq!(
            counter(&mount, "opens_served"),
            1,
            "{what}: opens after the first must not reach mailfs"
        );
        read_all_and_compare(&mount, &messages, &format!("{what}, second pass"));
        assert_eq!(
            reads_served(&mount),
            after_first,
            "{what}: the second pass must come from the page cache without a request"
        );
        assert_eq!(counter(&mount, "opens_served"), 1, "{what}");
    }
}

/// A reader going through a mailbox in UID order finds the next messages already in the
/// kernel's page cache after listing it (`--prefetch`, on by default): most of its reads never reach
/// mailfs, and what the cache holds is doveadm's bytes. With `--prefetch 0` every message
/// is a READ. The reader pauses 20 ms between messages, so that the prefetch thread is
/// ahead even on a busy machine; the point is which reads reach mailfs, not speed.
#[test]
fn a_reader_in_uid_order_finds_the_next_messages_cached() {
    require!(Dovecot, Fuse);
    for layout in [Layout::MaildirPlusPlus, DboxLayout::mdbox("")] {
        let dir = TestDir::new("prefetch");
        let dovecot = Dovecot::start(&dir, layout);
        let user = dovecot.user("bob");
        let messages = populate(&user);
        for (n, prefetch) in ["256", "0"].into_iter().enumerate() {
            let what = format!("{layout:?}, --prefetch {prefetch}");
            let mount = Mount::start(
                &user.location(),
                &dir.join(format!("mnt-{n}")),
                &["--prefetch", prefetch],
            );
            // Listed first, as grep -r and find do: the kernel takes stored pages only for
            // inodes it holds, and a listing (READDIRPLUS) makes it hold every entry.
            let listed = fs::read_dir(mount.mailbox("INBOX")).expect("list").count();
            assert_eq!(listed, messages.len(), "{what}");
            let before = reads_served(&mount);
            for m in &messages {
                let path = mount.message("INBOX", m.uid);
                let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{what}: {path:?}: {e}"));
                assert_bytes_eq(&bytes, &m.text, &format!("{what}: uid {}", m.uid));
                std::thread::sleep(Duration::from_millis(20));
            }
            let reads = reads_served(&mount) - before;
            if prefetch == "0" {
                assert!(
                    reads >= messages.len() as u64,
                    "{what}: {reads} reads for {} messages",
                    messages.len()
                );
                continue;
            }
            let pushed = counter(&mount, "prefetched_messages");
            assert!(
                reads <= messages.len() as u64 / 3,
                "{what}: {reads} of {} messages were read through mailfs ({pushed} prefetched)",
                messages.len()
            );
            assert!(
                pushed >= messages.len() as u64 / 2,
                "{what}: {pushed} prefetched"
            );
            assert_eq!(counter(&mount, "prefetch_skipped"), 0, "{what}");
            // Whatever the cache holds (pushed or read) is still doveadm's, whole and from
            // the middle, with doveadm's sizes.
            read_all_and_compare(&mount, &messages, &format!("{what}, again"));
        }
    }
}

/// Waits until the message's name is gone from the mount (the expunge was noticed).
#[track_caller]
fn wait_gone(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::metadata(path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
            Err(e) => panic!("stat {path:?} while waiting for the expunge: {e}"),
            Ok(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{path:?} still there 5 s after the expunge"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Drops the page cache of an open file (clean pages of a FUSE file can be dropped).
fn drop_page_cache(f: &fs::File) {
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise DONTNEED: errno {rc}");
}

/// Asserts that a read failed with ESTALE (not another error, not bytes).
#[track_caller]
fn assert_estale(r: io::Result<Vec<u8>>, what: &str) {
    match r {
        Ok(bytes) => panic!("{what}: read {} bytes, expected ESTALE", bytes.len()),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{what}: {e}"),
    }
}

/// Reads an open file from its start to its end.
fn read_from_start(f: &mut fs::File) -> io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(0))?;
    let mut got = Vec::new();
    f.read_to_end(&mut got)?;
    Ok(got)
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
        user.save(
            "Archive",
            &email(100 + i, "Filler", &format!("filler {i}\n")),
        );
    }
    let fillers = user.fetch("Archive");
    assert_eq!(fillers.len(), 80);

    // held: a file opened (nothing read) before the expunge reads all its bytes after it,
    // and fstat keeps its size. A small message and a large one (many READ requests).
    let held = Mount::start(
        &user.location(),
        &dir.join("mnt-0"),
        &["--open-mode", "held"],
    );
    for victim in [&messages[3], &messages[5]] {
        let path = held.message("INBOX", victim.uid);
        let mut f = fs::File::open(&path).expect("open");
        user.expunge("INBOX", victim.uid);
        wait_gone(&path);
        let got = read_from_start(&mut f).expect("held: reading an expunged open message");
        assert_bytes_eq(&got, &victim.text, "held: the expunged open message");
        assert_eq!(
            f.metadata().expect("fstat").len(),
            victim.text.len() as u64,
            "held: fstat of the expunged open message"
        );
        drop(f);
        assert_eq!(
            errno(&fs::File::open(&path)),
            Some(libc::ENOENT),
            "held: a new open after the expunge"
        );
    }
    held.stop();

    // kernel (the default).
    let mount = Mount::start(&user.location(), &dir.join("mnt-1"), &[]);
    let path = |m: &Message| mount.message("INBOX", m.uid);
    // `opened` (the mount's first open, answered ENOSYS): opened, nothing read, then
    // expunged: its bytes or ESTALE, nothing else.
    // `unread`: the same, and shown to have fetched nothing; after 80 other messages are
    // read (the kept stored files are 64), ESTALE exactly.
    // `read`: read whole before the expunge: served by the kept stored file once its
    // page cache is dropped, then ESTALE once 80 other reads pushed that file out.
    let (opened, unread, read) = (&messages[6], &messages[7], &messages[17]);
    let mut opened_f = fs::File::open(path(opened)).expect("open");
    assert_eq!(status(&mount, "kernel_opens"), "true");

    let before_open = reads_served(&mount);
    let mut unread_f = fs::File::open(path(unread)).expect("open");
    // Opening fetches nothing: kernel opens send no OPEN and start no read-ahead, and
    // every page of a FUSE file's cache comes from a READ that mailfs counts. No other
    // file is read meanwhile, so an unchanged count shows no page of it is cached (and it
    // never entered the kept stored files, which only reads fill).
    assert_eq!(
        reads_served(&mount),
        before_open,
        "opening a message without reading it made READ requests"
    );

    let mut read_f = fs::File::open(path(read)).expect("open");
    let got = read_from_start(&mut read_f).expect("reading before the expunge");
    assert_bytes_eq(&got, &read.text, "kernel: before the expunge");

    let before_expunge = reads_served(&mount);
    for m in [opened, unread, read] {
        user.expunge("INBOX", m.uid);
    }
    for m in [opened, unread, read] {
        wait_gone(&path(m));
    }
    assert_eq!(
        reads_served(&mount),
        before_expunge,
        "noticing the expunges made READ requests"
    );

    match read_from_start(&mut opened_f) {
        Ok(got) => assert_bytes_eq(&got, &opened.text, "kernel: opened, then expunged"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::ESTALE),
            "kernel: opened, then expunged: {e}"
        ),
    }

    // The page cache dropped, the kept stored file still serves the expunged message.
    drop_page_cache(&read_f);
    let before = reads_served(&mount);
    let got = read_from_start(&mut read_f).expect("kernel: read, expunged, page cache dropped");
    assert_bytes_eq(
        &got,
        &read.text,
        "kernel: read, expunged, page cache dropped",
    );
    assert!(
        reads_served(&mount) > before,
        "the page cache was not dropped: this read proved nothing"
    );

    // 80 other messages read through mailfs push every earlier stored file out.
    let before = reads_served(&mount);
    for m in &fillers {
        let got = fs::read(mount.message("Archive", m.uid)).expect("filler");
        assert_bytes_eq(&got, &m.text, "filler");
    }
    assert!(
        reads_served(&mount) - before >= 80,
        "every filler reached mailfs"
    );

    assert_estale(
        read_from_start(&mut unread_f),
        "kernel: never read, expunged, 80 other reads since",
    );
    drop_page_cache(&read_f);
    assert_estale(
        read_from_start(&mut read_f),
        "kernel: read, expunged, page cache dropped, 80 other reads since",
    );
    // A new open of an expunged name fails with ENOENT.
    assert_eq!(
        errno(&fs::File::open(path(read))),
        Some(libc::ENOENT),
        "kernel: a new open after the expunge"
    );
    drop((opened_f, unread_f, read_f));
    mount.stop();

    // With --attr-timeout 0 the kernel may re-validate the attributes of an open file
    // before reading past the size it knows; for an expunged message neither cached nor
    // kept, docs/semantics.md allows ENOENT then instead of ESTALE (Linux 6.18 sent no
    // GETATTR here and the read gave ESTALE). Never bytes, never another error.
    let mount = Mount::start(
        &user.location(),
        &dir.join("mnt-2"),
        &["--attr-timeout", "0"],
    );
    let victim = &messages[8];
    let mut f = fs::File::open(mount.message("INBOX", victim.uid)).expect("open");
    user.expunge("INBOX", victim.uid);
    wait_gone(&mount.message("INBOX", victim.uid));
    // One read asking past the size the kernel knows, which is what makes it re-validate.
    let r = f.read(&mut vec![0u8; 1 << 20]);
    assert!(
        matches!(errno(&r), Some(libc::ESTALE | libc::ENOENT)),
        "kernel, --attr-timeout 0: never read, expunged: {}",
        errno_name(errno(&r))
    );
}

#[test]
fn a_bad_open_mode_is_a_usage_error() {
    require!(Fuse);
    let dir = TestDir::new("open_bad");
    let mountpoint = dir.mkdir("mnt");
    let failure = mount_must_fail(
        dir.path().to_str().expect("utf-8"),
        &mountpoint,
        &["--open-mode", "bogus"],
    );
    assert_eq!(failure.status.code(), Some(2), "{failure:?}");
    assert!(
        failure.stderr.contains("bogus") && failure.stderr.contains("kernel, held or passthrough"),
        "the message names the bad value and the choices:\n{}",
        failure.stderr
    );
}

/// Advice that messages will be read ([`MailStore::will_need`], what the read-ahead gives
/// a window it finds on the disk) starts reading their files into the page cache: on a
/// Maildir and an sdbox store whose message files were dropped from the page cache, every
/// advised file is soon resident, without anything reading it. (The read-ahead's choice
/// of when to advise is a unit test in `fs/prefetch.rs`; a disk fast or slow enough for a
/// timed test is not something CI has.)
#[test]
fn advice_brings_message_files_into_the_page_cache() {
    require!(Dovecot);
    use mailfs::store::{MailboxName, StoreConfig};
    for layout in [Layout::MaildirPlusPlus, DboxLayout::sdbox("")] {
        let what = format!("{layout:?}");
        let dir = TestDir::new("advice");
        let dovecot = Dovecot::start(&dir, layout);
        let user = dovecot.user("bob");
        populate(&user);
        // The message files: Maildir's in cur/ and new/, sdbox's u.N.
        let files: Vec<PathBuf> = crate::util::fsx::walk(&user.mail_root())
            .into_iter()
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let parent = p
                    .parent()
                    .and_then(|d| d.file_name())
                    .and_then(|n| n.to_str());
                name.starts_with("u.") || matches!(parent, Some("cur" | "new"))
            })
            .collect();
        assert_eq!(files.len(), 30, "{what}: message files {files:?}");
        for f in &files {
            let file = fs::File::open(f).expect("open");
            file.sync_all().expect("fsync");
            drop_page_cache(&file);
            assert_eq!(
                resident_pages(f).0,
                0,
                "{what}: {f:?} still in the page cache after POSIX_FADV_DONTNEED (is the \
                 test directory on tmpfs?)"
            );
        }
        let spec = mailfs::location::Spec::parse(&user.location()).expect("location");
        let store = mailfs::store::open(&spec, StoreConfig::default()).expect("open the store");
        let inbox = MailboxName::parse("INBOX");
        let view = store.view(&inbox).expect("view");
        for meta in view.messages.iter() {
            store
                .will_need(&inbox, &view, &meta.key)
                .unwrap_or_else(|e| panic!("{what}: advice for {:?}: {e}", meta.key));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for f in &files {
            loop {
                let (resident, pages) = resident_pages(f);
                if resident == pages {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: {f:?}: {resident} of {pages} pages in the page cache 5 s after \
                     the advice"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// (pages of `path` in the page cache, pages of `path`), by `mincore(2)` over a mapping
/// of it, which reads nothing.
fn resident_pages(path: &Path) -> (usize, usize) {
    let file = fs::File::open(path).expect("open");
    let len = file.metadata().expect("fstat").len() as usize;
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let pages = len.div_ceil(page);
    if pages == 0 {
        return (0, 0);
    }
    // SAFETY: a read-only shared mapping of an open file of `len` bytes; nothing reads it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap {path:?}");
    let mut vec = vec![0u8; pages];
    // SAFETY: `addr` is the page-aligned mapping of `len` bytes made above and `vec` has
    // one byte for each of its pages.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(addr, len) };
    assert_eq!(rc, 0, "mincore {path:?}: {}", io::Error::last_os_error());
    (vec.iter().filter(|b| **b & 1 == 1).count(), pages)
}
