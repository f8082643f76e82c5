//! Shared-storage safety: each rule has a test that fails without it.
//! - Dovecot is never stalled by a reader, whatever its `lock_method`: its operation times
//!   with and without a mailfs reader, and a writer's lock held by the test is noticed
//!   (`writer_locks_seen`) without the mount ever waiting for it.
//! - Files that shrink under a reader (torn log tails, truncated `m.N` and message files)
//!   give correct bytes or EIO, never a signal death, with and without `--mmap-disable`.
//! - A store root replaced by an empty directory (a bind mount) or renamed away gives EIO,
//!   never an empty tree, and is served again when it is back.
//! - A file time in the future is warned about once, with its size.
//! - Hostile mailbox names cannot escape the mount or collide, with and without
//!   `--portable-names`.
//! - `--nfs-cache-flush` serves the same tree (and what it costs), and `user.mailfs.status`
//!   reports the settings and counters.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::compare::assert_mount_matches_dovecot;
use crate::util::corpus::{SourceMaildir, email, large, populate_varied};
use crate::util::dovecot::{Dovecot, Layout, User};
use crate::util::fsx::{errno, errno_name, getxattr, listxattr, xattr_string};
use crate::util::mount::Mount;
use crate::util::{TestDir, chown_recursive, is_root, show, wait_for};

// ---------------------------------------------------------------------------------------
// Helpers

/// `user.mailfs.status` of a mount, parsed. Panics unless every line is `key: value` with
/// a unique `[a-z0-9_]+` key.
#[track_caller]
fn status(mount: &Mount) -> BTreeMap<String, String> {
    let text = xattr_string(mount.path(), "user.mailfs.status");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("status line {line:?} is not `key: value`:\n{text}"));
        assert!(
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "status key {key:?} is not [a-z0-9_]+:\n{text}"
        );
        assert!(
            out.insert(key.to_string(), value.to_string()).is_none(),
            "status key {key:?} appears twice:\n{text}"
        );
    }
    out
}

/// A counter of `user.mailfs.status`.
#[track_caller]
fn counter(mount: &Mount, key: &str) -> u64 {
    let st = status(mount);
    let v = st
        .get(key)
        .unwrap_or_else(|| panic!("user.mailfs.status has no {key}: {st:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("{key}: {v:?} is not a counter"))
}

/// Runs `f` on another thread and returns its result, or panics if it takes longer than
/// `timeout` (a hung FUSE request must fail the test, not hang it).
#[track_caller]
fn within<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no answer within {timeout:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the thread panicked"),
    }
}

#[track_caller]
fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "mailfs panicked:\n{log}");
}

/// Sets a file's or directory's mtime by path (no descriptor is opened, so no POSIX lock
/// of this process on the file is dropped by a close).
fn set_mtime(path: &Path, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
        },
    ];
    let c = CString::new(path.as_os_str().as_bytes()).expect("path with NUL");
    // SAFETY: `c` is NUL-terminated and `times` holds the two timespecs utimensat reads.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat {path:?}: {}", io::Error::last_os_error());
}

/// Truncates a file in place (same inode, as Dovecot truncates a torn log tail).
#[track_caller]
fn truncate(path: &Path, len: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncating {path:?} to {len}: {e}"));
}

/// Every file below `dir` (recursively), sorted.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {d:?}: {e}")) {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Reads a whole file in 4 KiB requests.
fn read_in_chunks(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Median and maximum of some durations.
fn median_max(d: &[Duration]) -> (Duration, Duration) {
    let mut v = d.to_vec();
    v.sort();
    (v[v.len() / 2], *v.last().expect("some durations"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A message with a marker header naming the mailbox it was put in.
fn marked(marker: &str) -> Vec<u8> {
    let mut m = format!("X-Marker: {marker}\n").into_bytes();
    m.extend(email(1, &format!("marker {marker}"), "hostile names"));
    m
}

fn marker_of(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find_map(|l| l.strip_prefix("X-Marker: "))
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------
// 1: Dovecot is never stalled by a reader

/// How many IMAP commands each timed session runs.
const IMAP_OPS: usize = 100;
/// The pause between two of them, so that a session spans about a second of reading.
const IMAP_PAUSE: Duration = Duration::from_millis(8);
/// No Dovecot operation may take this long (its lock waits are 180 s: a stall shows).
const STALL: Duration = Duration::from_secs(2);

/// An IMAP session (`doveadm exec imap`) whose commands are timed one by one.
struct Imap {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Vec<u8>>,
    tag: usize,
    stderr: PathBuf,
}

impl Imap {
    fn start(dovecot: &Dovecot, user: &str, stderr: PathBuf) -> Imap {
        let err = fs::File::create(&stderr).expect("creating the imap stderr file");
        let mut child = dovecot
            .doveadm_command(&["exec", "imap", "-u", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting doveadm exec imap: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut imap = Imap {
            child,
            stdin,
            lines,
            tag: 0,
            stderr,
        };
        let greeting = imap.line();
        assert!(
            greeting.starts_with("* PREAUTH"),
            "IMAP greeting: {greeting:?}"
        );
        imap
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => String::from_utf8_lossy(&l).into_owned(),
            Err(e) => panic!(
                "no IMAP answer within 30 s ({e}); stderr: {}",
                fs::read_to_string(&self.stderr).unwrap_or_default()
            ),
        }
    }

    /// Sends one command (with a LITERAL+ literal, if any) and waits for its tagged
    /// answer, which must be OK. Returns how long it took and the tagged line.
    fn run(&mut self, command: &str, literal: Option<&[u8]>) -> (Duration, String) {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        let mut bytes = match literal {
            Some(l) => format!("{tag} {command} {{{}+}}\r\n", l.len()).into_bytes(),
            None => format!("{tag} {command}\r\n").into_bytes(),
        };
        if let Some(l) = literal {
            bytes.extend_from_slice(l);
            bytes.extend_from_slice(b"\r\n");
        }
        let started = Instant::now();
        self.stdin.write_all(&bytes).expect("writing to imap");
        self.stdin.flush().expect("flushing imap");
        loop {
            let line = self.line();
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                let took = started.elapsed();
                assert!(
                    rest.starts_with("OK"),
                    "IMAP {command}: {line:?}; stderr: {}",
                    fs::read_to_string(&self.stderr).unwrap_or_default()
                );
                return (took, line);
            }
        }
    }
}

impl Drop for Imap {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"z LOGOUT\r\n");
        let _ = self.stdin.flush();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CRLF line ends, as IMAP wants them.
fn crlf(m: &[u8]) -> Vec<u8> {
    m.split(|&b| b == b'\n')
        .collect::<Vec<_>>()
        .join(&b"\r\n"[..])
}

/// One IMAP session of `IMAP_OPS` timed write transactions on INBOX: appends, flag
/// changes and expunges (each takes the index log's lock, and for mdbox the map's).
fn imap_workload(dovecot: &Dovecot, dir: &TestDir, first: usize) -> Vec<Duration> {
    let mut imap = Imap::start(dovecot, "bob", dir.join(format!("imap{first}.err")));
    imap.run("SELECT INBOX", None);
    let mut uids: Vec<u32> = Vec::new();
    let mut times = Vec::with_capacity(IMAP_OPS);
    for i in 0..IMAP_OPS {
        std::thread::sleep(IMAP_PAUSE);
        let n = first + i;
        match i % 5 {
            0..=2 => {
                let msg = crlf(&email(n, &format!("Timed {n}"), &"line\n".repeat(1 + i)));
                let (took, line) = imap.run("APPEND INBOX (\\Seen)", Some(&msg));
                let uid = line
                    .split("[APPENDUID ")
                    .nth(1)
                    .and_then(|r| r.split([' ', ']']).nth(1))
                    .and_then(|u| u.parse().ok())
                    .unwrap_or_else(|| panic!("no APPENDUID in {line:?}"));
                uids.push(uid);
                times.push(took);
            }
            3 => {
                let uid = uids[(i * 7) % uids.len()];
                let (took, _) = imap.run(
                    &format!("UID STORE {uid} +FLAGS.SILENT (\\Flagged $Label{})", i % 3),
                    None,
                );
                times.push(took);
            }
            _ => {
                let uid = uids.remove(0);
                let (a, _) = imap.run(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"), None);
                let (b, _) = imap.run(&format!("UID EXPUNGE {uid}"), None);
                times.push(a + b);
            }
        }
    }
    times
}

/// What a reader thread saw.
#[derive(Debug, Default)]
struct ReaderTally {
    rounds: usize,
    requests: usize,
    errors: Vec<String>,
}

/// Reads the whole mount in a tight loop until `stop`: lists every mailbox, stats, lists
/// and reads the xattrs of every message, reads every message, reads the status.
fn read_everything(
    mount: Arc<Mount>,
    mailboxes: Vec<String>,
    stop: Arc<AtomicBool>,
) -> ReaderTally {
    let mut t = ReaderTally::default();
    let note = |t: &mut ReaderTally, what: String, e: io::Error| {
        // A message expunged between the listing and the read is gone: fine. With the
        // default `--open-mode kernel` a message expunged between the open and the read
        // gives ESTALE on the read (docs/semantics.md); anywhere else it is an error.
        let expunged = e.raw_os_error() == Some(libc::ENOENT)
            || (what.starts_with("read ") && e.raw_os_error() == Some(libc::ESTALE));
        if !expunged && t.errors.len() < 20 {
            t.errors.push(format!("{what}: {e}"));
        }
    };
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = getxattr(mount.path(), "user.mailfs.status") {
            note(&mut t, "status".into(), e);
        }
        for mb in &mailboxes {
            let dir = mount.mailbox(mb);
            let entries = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => {
                    note(&mut t, format!("listing {mb}"), e);
                    continue;
                }
            };
            t.requests += 1;
            for e in entries {
                let p = match e {
                    Ok(e) => e.path(),
                    Err(e) => {
                        note(&mut t, format!("listing {mb}"), e);
                        continue;
                    }
                };
                let what = p.display().to_string();
                if let Err(e) = fs::symlink_metadata(&p) {
                    note(&mut t, format!("stat {what}"), e);
                }
                if let Err(e) = listxattr(&p) {
                    note(&mut t, format!("listxattr {what}"), e);
                }
                if let Err(e) = getxattr(&p, "user.mail.flags") {
                    note(&mut t, format!("getxattr {what}"), e);
                }
                if let Err(e) = fs::read(&p) {
                    note(&mut t, format!("read {what}"), e);
                }
                t.requests += 4;
            }
        }
        t.rounds += 1;
    }
    t
}

/// A lock on a Dovecot file, held the way Dovecot holds it; released on drop.
struct HeldLock {
    /// fcntl or flock: the open descriptor holds the lock until it is closed.
    _file: Option<fs::File>,
    /// dotlock: the `.lock` file, removed on drop.
    dotlock: Option<PathBuf>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Some(p) = &self.dotlock {
            let _ = fs::remove_file(p);
        }
    }
}

/// Takes `file`'s write lock by `method`, as a Dovecot writer would.
fn hold_lock(method: &str, file: &Path) -> HeldLock {
    match method {
        "dotlock" => {
            let mut lock = file.as_os_str().to_owned();
            lock.push(".lock");
            let lock = PathBuf::from(lock);
            fs::write(&lock, format!("{}:test", std::process::id())).expect("writing dotlock");
            HeldLock {
                _file: None,
                dotlock: Some(lock),
            }
        }
        _ => {
            let f = fs::File::options()
                .read(true)
                .write(true)
                .open(file)
                .unwrap_or_else(|e| panic!("opening {file:?}: {e}"));
            let rc = if method == "flock" {
                // SAFETY: a valid open descriptor; flock has no memory arguments.
                unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }
            } else {
                // SAFETY: all-zero bytes are a valid `flock` struct.
                let mut fl: libc::flock = unsafe { std::mem::zeroed() };
                fl.l_type = libc::F_WRLCK as libc::c_short;
                fl.l_whence = libc::SEEK_SET as libc::c_short;
                // SAFETY: a valid descriptor and a valid pointer to an initialised struct.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) }
            };
            assert_eq!(
                rc,
                0,
                "taking the {method} lock on {file:?}: {}",
                io::Error::last_os_error()
            );
            HeldLock {
                _file: Some(f),
                dotlock: None,
            }
        }
    }
}

/// Lists a mailbox and reads its first message through the mount, bounded in time.
#[track_caller]
fn list_and_read(mount: &Arc<Mount>, mailbox: &str, what: &str) -> usize {
    let m = mount.clone();
    let mb = mailbox.to_string();
    let r = within(
        what,
        Duration::from_secs(10),
        move || -> io::Result<usize> {
            let mut names: Vec<PathBuf> = fs::read_dir(m.mailbox(&mb))?
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<_>>()?;
            names.sort();
            if let Some(first) = names.iter().find(|p| p.is_file()) {
                fs::read(first)?;
            }
            Ok(names.len())
        },
    );
    r.unwrap_or_else(|e| panic!("{what}: {e}\n{}", mount.log()))
}

/// Holds `file`'s lock by `method` and checks that the mount answers at once, sees the
/// lock (`writer_locks_seen` rises while it is held: the view stays tentative) and stops
/// seeing it once it is released.
fn writer_lock_is_seen_not_waited_for(
    label: &str,
    method: &str,
    mount: &Arc<Mount>,
    file: &Path,
    mailbox: &str,
) {
    list_and_read(mount, mailbox, "reading before the lock");
    let before = counter(mount, "writer_locks_seen");
    let held = hold_lock(method, file);
    // The writer writes: the file changes, so the next request reads the mailbox again
    // (mailfs trusts a stamp it checked within the last 20 ms without a new stat).
    set_mtime(file, SystemTime::now());
    std::thread::sleep(Duration::from_millis(30));
    let started = Instant::now();
    let n = list_and_read(
        mount,
        mailbox,
        &format!("reading {mailbox} while a {method} writer lock is held"),
    );
    let took = started.elapsed();
    assert!(n > 0, "{mailbox} listed empty under a writer's lock");
    let during = counter(mount, "writer_locks_seen");
    assert!(
        during > before,
        "lock_method {method}: a writer's lock on {file:?} was not seen \
         (writer_locks_seen {before} -> {during})\n{}",
        mount.log()
    );
    // What was read under the lock is tentative: read again, and seen again.
    list_and_read(mount, mailbox, "reading again under the lock");
    let again = counter(mount, "writer_locks_seen");
    assert!(
        again > during,
        "lock_method {method}: a view read under a writer's lock was trusted afterwards \
         (writer_locks_seen stayed {again})"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    list_and_read(mount, mailbox, "reading after the lock");
    list_and_read(mount, mailbox, "reading after the lock");
    let after = counter(mount, "writer_locks_seen");
    for _ in 0..3 {
        list_and_read(mount, mailbox, "reading after the lock");
    }
    assert_eq!(
        counter(mount, "writer_locks_seen"),
        after,
        "lock_method {method}: a lock is still reported after it was released"
    );
    eprintln!(
        "{label}: listing under a held writer lock answered in {}; \
         writer_locks_seen {before} -> {during} -> {again} -> {after}",
        ms(took)
    );
}

/// One lock method: Dovecot's operation times without and with a reader, and a held lock.
fn never_stalled_with(method: &str) -> String {
    let dir = TestDir::new(&format!("stall_{method}"));
    let setting = format!("lock_method = {method}");
    let dovecot = Dovecot::start_with_settings(&dir, Layout::Mdbox, &[&setting]);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Other");
    for n in 0..5 {
        bob.save_opts(&[], "INBOX", &email(n, &format!("Seed {n}"), "seed"));
        bob.save_opts(&[], "Other", &large(40 + n));
    }

    let alone = imap_workload(&dovecot, &dir, 1000);

    let opts = [
        "--lock-method",
        method,
        "--attr-timeout",
        "0",
        "--entry-timeout",
        "0",
    ];
    let mount = Arc::new(Mount::start(&bob.location(), &dir.join("mnt"), &opts));
    assert_eq!(status(&mount)["lock_method"], method);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (mount, stop) = (mount.clone(), stop.clone());
        let mailboxes = vec!["INBOX".to_string(), "Other".to_string()];
        std::thread::spawn(move || read_everything(mount, mailboxes, stop))
    };
    // The reader is going before Dovecot starts.
    wait_for(Duration::from_secs(10), "the reader to start", || {
        (counter(&mount, "view_cache_misses") > 0).then_some(())
    });
    let seen_before = counter(&mount, "writer_locks_seen");
    let with = imap_workload(&dovecot, &dir, 2000);
    stop.store(true, Ordering::SeqCst);
    let tally = reader.join().expect("the reader panicked");
    let seen_during = counter(&mount, "writer_locks_seen") - seen_before;

    let (a_med, a_max) = median_max(&alone);
    let (w_med, w_max) = median_max(&with);
    let line = format!(
        "lock_method {method}: {IMAP_OPS} IMAP writes (APPEND/STORE/EXPUNGE) on mdbox: \
         without a mount median {} max {}; with a reader median {} max {} \
         (reader: {} rounds, {} requests; Dovecot's locks seen meanwhile: {seen_during})",
        ms(a_med),
        ms(a_max),
        ms(w_med),
        ms(w_max),
        tally.rounds,
        tally.requests
    );
    eprintln!("{line}");
    assert!(a_max < STALL, "without a mount an operation took {a_max:?}");
    assert!(
        w_max < STALL,
        "lock_method {method}: an operation took {w_max:?} while mailfs was reading: \
         Dovecot was stalled\n{}",
        mount.log()
    );
    assert!(
        tally.requests >= 50,
        "the reader made only {} requests: it did not overlap Dovecot's session",
        tally.requests
    );
    assert!(
        tally.errors.is_empty(),
        "lock_method {method}: errors while reading beside Dovecot: {:#?}\n{}",
        tally.errors,
        mount.log()
    );

    // A writer's lock held by the test: the INBOX index log (probed when a dbox view is
    // built).
    writer_lock_is_seen_not_waited_for(
        &format!("mdbox, lock_method {method}, dovecot.index.log"),
        method,
        &mount,
        &bob.index_dir("INBOX").join("dovecot.index.log"),
        "INBOX",
    );
    let mount = Arc::try_unwrap(mount).unwrap_or_else(|_| panic!("mount still shared"));
    assert_no_panic(&mount.stop());
    line
}

/// For each `lock_method` Dovecot supports: 100 IMAP write transactions are timed with no
/// mount and while a mailfs mount (with the matching `--lock-method`) is read in a tight
/// loop; none may take 2 s (Dovecot would wait up to 180 s for a lock a reader held). Then
/// the test holds the lock itself: the mount answers at once and counts it. For Maildir,
/// the `dovecot-uidlist` dotlock is recognised the same way.
#[test]
fn dovecot_is_never_stalled_by_a_reader() {
    require!(Dovecot, Fuse);
    let started = Instant::now();
    let lines: Vec<String> = ["fcntl", "flock", "dotlock"]
        .into_iter()
        .map(never_stalled_with)
        .collect();

    // Maildir: Dovecot always dotlocks dovecot-uidlist, whatever lock_method says.
    let dir = TestDir::new("stall_maildir");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    for n in 0..3 {
        bob.save_opts(&[], "INBOX", &email(n, "Maildir", "uidlist dotlock"));
    }
    bob.index("INBOX");
    let mount = Arc::new(Mount::start(
        &bob.location(),
        &dir.join("mnt"),
        &["--attr-timeout", "0", "--entry-timeout", "0"],
    ));
    writer_lock_is_seen_not_waited_for(
        "Maildir, dovecot-uidlist.lock",
        "dotlock",
        &mount,
        &bob.control_dir("INBOX").join("dovecot-uidlist"),
        "INBOX",
    );
    let mount = Arc::try_unwrap(mount).unwrap_or_else(|_| panic!("mount still shared"));
    assert_no_panic(&mount.stop());
    for l in lines {
        eprintln!("{l}");
    }
    eprintln!(
        "dovecot_is_never_stalled_by_a_reader: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 2: files shrinking under a reader

/// How reads ended.
#[derive(Debug, Default)]
struct ShrinkTally {
    good: usize,
    eio: usize,
    enoent: usize,
    /// Wrong outcomes: a short read (a prefix of the message returned as the whole of it),
    /// other bytes, another error.
    bad: Vec<String>,
}

impl ShrinkTally {
    fn note(&mut self, what: &str, got: io::Result<Vec<u8>>, expected: &[&[u8]], enoent_ok: bool) {
        match got {
            Ok(b) if expected.contains(&b.as_slice()) => self.good += 1,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => self.eio += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && enoent_ok => self.enoent += 1,
            got => {
                if self.bad.len() < 20 {
                    let how = match got {
                        Ok(b) if expected.iter().any(|e| e.starts_with(&b)) => format!(
                            "a short read: {} bytes, a prefix of the {}-byte message, \
                             returned without an error",
                            b.len(),
                            expected[0].len()
                        ),
                        Ok(b) => {
                            format!("{} other bytes: {}", b.len(), show(&b[..b.len().min(80)]))
                        }
                        Err(e) => format!("{e}"),
                    };
                    self.bad.push(format!("{what}: {how}"));
                } else {
                    self.bad.push(String::new());
                }
            }
        }
    }
}

/// Reads an open file from offset 0 to EOF after dropping its page cache, so that the
/// bytes come from the daemon again.
fn reread(f: &fs::File) -> io::Result<Vec<u8>> {
    // SAFETY: a valid open descriptor; posix_fadvise has no memory arguments.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Mounts a copy of a store, reads it with two readers (one listing and reading every
/// message again and again, one re-reading files it opened before anything shrank) while
/// `rounds` truncate files of the copy in place; then checks the daemon is alive and
/// unmounts cleanly.
fn shrink_under_readers(
    label: &str,
    location: &str,
    mountpoint: &Path,
    extra: &[&str],
    expected: &Arc<BTreeMap<(String, String), Vec<u8>>>,
    rounds: &[(&str, Vec<(PathBuf, u64)>)],
) -> Option<String> {
    let mount = Arc::new(Mount::start(location, mountpoint, extra));
    let mailboxes: BTreeSet<String> = expected.keys().map(|(mb, _)| mb.clone()).collect();
    // Everything reads right before anything shrinks.
    for ((mb, name), bytes) in expected.iter() {
        let got = fs::read(mount.mailbox(mb).join(name))
            .unwrap_or_else(|e| panic!("{label}: reading {mb}/{name} before truncating: {e}"));
        assert!(
            got == *bytes,
            "{label}: {mb}/{name} differs before truncating"
        );
    }
    let held: Vec<((String, String), fs::File)> = expected
        .keys()
        .map(|k| {
            let f = fs::File::open(mount.mailbox(&k.0).join(&k.1)).expect("opening a message");
            (k.clone(), f)
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicUsize::new(0));
    let lister = {
        let (mount, stop, expected, passes) = (
            mount.clone(),
            stop.clone(),
            expected.clone(),
            passes.clone(),
        );
        let mailboxes = mailboxes.clone();
        std::thread::spawn(move || {
            let mut t = ShrinkTally::default();
            while !stop.load(Ordering::SeqCst) {
                for mb in &mailboxes {
                    let texts: Vec<&[u8]> = expected
                        .iter()
                        .filter(|((m, _), _)| m == mb)
                        .map(|(_, b)| b.as_slice())
                        .collect();
                    let names = match fs::read_dir(mount.mailbox(mb)) {
                        Ok(rd) => rd
                            .filter_map(|e| e.ok().map(|e| e.file_name()))
                            .collect::<Vec<_>>(),
                        Err(e) => {
                            t.note(&format!("listing {mb}"), Err(e), &[], false);
                            continue;
                        }
                    };
                    for name in names {
                        let name = name.to_string_lossy().into_owned();
                        let want: Vec<&[u8]> = match expected.get(&(mb.clone(), name.clone())) {
                            Some(b) => vec![b.as_slice()],
                            // A file whose UID was lost with a torn uidlist: any message
                            // of the mailbox.
                            None => texts.clone(),
                        };
                        let got = read_in_chunks(&mount.mailbox(mb).join(&name));
                        t.note(&format!("{mb}/{name}"), got, &want, true);
                    }
                }
                passes.fetch_add(1, Ordering::SeqCst);
            }
            t
        })
    };
    let holder = {
        let (stop, expected) = (stop.clone(), expected.clone());
        std::thread::spawn(move || {
            let mut t = ShrinkTally::default();
            while !stop.load(Ordering::SeqCst) {
                for (k, f) in &held {
                    let what = format!("{}/{} (opened before)", k.0, k.1);
                    t.note(&what, reread(f), &[expected[k].as_slice()], false);
                }
            }
            t
        })
    };
    let p = passes.clone();
    wait_for(Duration::from_secs(10), "a first reading pass", || {
        (p.load(Ordering::SeqCst) >= 1).then_some(())
    });
    for (what, cuts) in rounds {
        for (path, len) in cuts {
            truncate(path, *len);
        }
        let at = passes.load(Ordering::SeqCst);
        let p = passes.clone();
        wait_for(
            Duration::from_secs(10),
            &format!("a pass after {what}"),
            || (p.load(Ordering::SeqCst) >= at + 2).then_some(()),
        );
        assert!(
            mount.is_mounted(),
            "{label}: the mount is gone after {what}:\n{}",
            mount.log()
        );
    }
    stop.store(true, Ordering::SeqCst);
    let lt = lister.join().expect("the listing reader panicked");
    let ht = holder.join().expect("the holding reader panicked");

    // The daemon is alive and answers.
    assert!(
        mount.is_mounted(),
        "{label}: the mount is gone:\n{}",
        mount.log()
    );
    let m = mount.clone();
    within(
        &format!("{label}: listing the root after the truncations"),
        Duration::from_secs(10),
        move || fs::read_dir(m.path()).map(|rd| rd.count()),
    )
    .unwrap_or_else(|e| panic!("{label}: listing the root: {e}\n{}", mount.log()));
    status(&mount);
    eprintln!(
        "{label}: {} rounds of truncation; listing reader: {} good, {} EIO, {} ENOENT, {} bad; \
         reader of files opened before: {} good, {} EIO, {} bad",
        rounds.len(),
        lt.good,
        lt.eio,
        lt.enoent,
        lt.bad.len(),
        ht.good,
        ht.eio,
        ht.bad.len()
    );
    let mount = Arc::try_unwrap(mount).unwrap_or_else(|_| panic!("mount still shared"));
    let log = mount.stop(); // exit status 0: no death by SIGBUS
    assert_no_panic(&log);
    assert!(
        lt.eio + lt.enoent + ht.eio + lt.bad.len() + ht.bad.len() > 0,
        "{label}: no read noticed the truncations"
    );
    if lt.bad.is_empty() && ht.bad.is_empty() {
        return None;
    }
    let examples: Vec<&str> = lt
        .bad
        .iter()
        .chain(&ht.bad)
        .filter(|s| !s.is_empty())
        .take(8)
        .map(String::as_str)
        .collect();
    let tail: Vec<&str> = log.lines().rev().take(12).collect::<Vec<_>>();
    Some(format!(
        "{label}: {} reads (listing reader {}, reader of files opened before {}) gave neither \
         the right bytes nor EIO, e.g.:\n{}\n--- end of the mount log ---\n{}",
        lt.bad.len() + ht.bad.len(),
        lt.bad.len(),
        ht.bad.len(),
        examples.join("\n"),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

/// `cp -a src dst`.
fn copy_tree(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("running cp");
    assert!(st.success(), "cp -a {src:?} {dst:?}: {st}");
}

/// Every message of the named mailboxes as doveadm gives it, by `(mailbox, "<uid>.eml")`.
fn texts(user: &User<'_>, mailboxes: &[&str]) -> Arc<BTreeMap<(String, String), Vec<u8>>> {
    Arc::new(
        mailboxes
            .iter()
            .flat_map(|mb| {
                user.fetch(mb)
                    .into_iter()
                    .map(move |m| ((mb.to_string(), format!("{}.eml", m.uid)), m.text))
            })
            .collect(),
    )
}

/// Fills `mailboxes` with 24 messages each (every 8th one > 64 KiB), imported in one
/// doveadm call per mailbox; `opts` go to doveadm (e.g. a small `mdbox_rotate_size`).
fn fill(dovecot: &Dovecot, user: &User<'_>, scratch: &Path, mailboxes: &[&str], opts: &[&str]) {
    for (b, mailbox) in mailboxes.iter().enumerate() {
        if *mailbox != "INBOX" {
            user.create_mailbox(mailbox);
        }
        let root = scratch.join(format!("src{b}"));
        let mut source = SourceMaildir::new(&root, if b == 0 { "" } else { mailbox });
        for i in 0..24usize {
            let n = b * 100 + i;
            let mut msg = email(
                n,
                &format!("Message {n}"),
                &format!("body {n}\n").repeat(1 + i * 3),
            );
            if i % 8 == 5 {
                msg.extend_from_slice(&large(70 + i));
            }
            source.add(
                &msg,
                if i % 3 == 0 { "S" } else { "" },
                1_600_000_000 + n as u64,
            );
        }
        let (uid, gid) = dovecot.mail_owner();
        chown_recursive(&root, uid, gid);
        let src = format!("maildir:{}:LAYOUT=fs", root.display());
        user.adm(
            opts,
            &["import"],
            &["-s", &src, "", "mailbox", mailbox, "all"],
        );
    }
}

/// The file's length minus `by` (at least `min`).
fn shorter(path: &Path, by: u64, min: u64) -> (PathBuf, u64) {
    let len = fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {path:?}: {e}"))
        .len();
    (path.to_path_buf(), len.saturating_sub(by).max(min).min(len))
}

fn fraction(path: &Path, num: u64, den: u64) -> (PathBuf, u64) {
    let len = fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {path:?}: {e}"))
        .len();
    (path.to_path_buf(), len * num / den)
}

fn named<'a>(
    files: &'a [PathBuf],
    f: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = &'a PathBuf> + 'a {
    files
        .iter()
        .filter(move |p| f(&p.file_name().unwrap_or_default().to_string_lossy()))
}

/// While readers stream every message and list again and again, files are truncated in
/// place underneath (copies of real Dovecot stores, so Dovecot's own store stays intact):
/// torn index log tails, `m.N` files halved then emptied, Maildir message files halved
/// then emptied, a torn `dovecot-uidlist`, a halved cache. With and without
/// `--mmap-disable` the daemon survives (mounted, answering, clean exit 0: no SIGBUS), and
/// every read gives the right bytes or EIO (ENOENT for a message the index no longer has).
/// (`doveadm purge` under a reader is `dbox_mount::mdbox_purge_and_altmove_under_a_streaming_reader`.)
#[test]
fn no_sigbus_when_files_shrink_under_a_reader() {
    require!(Dovecot, Fuse);
    let started = Instant::now();
    let boxes = ["INBOX", "Work"];
    let mut problems = Vec::new();

    // mdbox: m.N files packed several messages each.
    let dir = TestDir::new("shrink_mdbox");
    let dovecot = Dovecot::start(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    fill(
        &dovecot,
        &bob,
        &dir.mkdir("scratch"),
        &boxes,
        &["mdbox_rotate_size=32k"],
    );
    let expected = texts(&bob, &boxes);
    for (i, extra) in [&[][..], &["--mmap-disable"][..]].into_iter().enumerate() {
        let copy = dir.mkdir(format!("copy{i}"));
        copy_tree(&bob.mail_root(), &copy.join("mdbox"));
        let files = files_below(&copy.join("mdbox"));
        let m_files: Vec<&PathBuf> = named(&files, |n| n.starts_with("m.")).collect();
        assert!(m_files.len() >= 4, "only {} m.N files", m_files.len());
        let logs: Vec<&PathBuf> = named(&files, |n| {
            n == "dovecot.index.log" || n == "dovecot.map.index.log"
        })
        .collect();
        let rounds = vec![
            (
                "torn index and map log tails",
                logs.iter().map(|p| shorter(p, 37, 40)).collect(),
            ),
            (
                "m.N files halved",
                m_files.iter().map(|p| fraction(p, 1, 2)).collect(),
            ),
            (
                "caches halved",
                named(&files, |n| n.ends_with(".cache"))
                    .map(|p| fraction(p, 1, 2))
                    .collect(),
            ),
            (
                "m.N files emptied",
                m_files.iter().map(|p| (p.to_path_buf(), 0)).collect(),
            ),
        ];
        let label = format!(
            "mdbox {}",
            if extra.is_empty() {
                "(default)"
            } else {
                "--mmap-disable"
            }
        );
        problems.extend(shrink_under_readers(
            &label,
            &format!("mdbox:{}", copy.join("mdbox").display()),
            &dir.join(format!("mnt{i}")),
            extra,
            &expected,
            &rounds,
        ));
    }

    // Maildir++: one file per message.
    let dir = TestDir::new("shrink_maildir");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    fill(&dovecot, &bob, &dir.mkdir("scratch"), &boxes, &[]);
    for mb in boxes {
        bob.index(mb);
    }
    let expected = texts(&bob, &boxes);
    for (i, extra) in [&[][..], &["--mmap-disable"][..]].into_iter().enumerate() {
        let copy = dir.mkdir(format!("copy{i}"));
        copy_tree(&bob.mail_root(), &copy.join("Maildir"));
        let files = files_below(&copy.join("Maildir"));
        let messages: Vec<&PathBuf> = files
            .iter()
            .filter(|p| {
                p.parent()
                    .and_then(Path::file_name)
                    .is_some_and(|d| d == "cur" || d == "new")
            })
            .collect();
        assert!(
            messages.len() >= 40,
            "only {} message files",
            messages.len()
        );
        let rounds = vec![
            (
                "torn uidlist and index log tails",
                named(&files, |n| n == "dovecot-uidlist")
                    .map(|p| shorter(p, 9, 20))
                    .chain(named(&files, |n| n == "dovecot.index.log").map(|p| shorter(p, 37, 40)))
                    .collect(),
            ),
            (
                "message files halved",
                messages.iter().map(|p| fraction(p, 1, 2)).collect(),
            ),
            (
                "caches halved",
                named(&files, |n| n.ends_with(".cache"))
                    .map(|p| fraction(p, 1, 2))
                    .collect(),
            ),
            (
                "message files emptied",
                messages.iter().map(|p| (p.to_path_buf(), 0)).collect(),
            ),
        ];
        let label = format!(
            "Maildir {}",
            if extra.is_empty() {
                "(default)"
            } else {
                "--mmap-disable"
            }
        );
        problems.extend(shrink_under_readers(
            &label,
            &format!("maildir:{}", copy.join("Maildir").display()),
            &dir.join(format!("mnt{i}")),
            extra,
            &expected,
            &rounds,
        ));
    }
    eprintln!(
        "no_sigbus_when_files_shrink_under_a_reader: {:?}",
        started.elapsed()
    );
    assert!(
        problems.is_empty(),
        "the daemon survived every run (mounted, answering, exit 0: no SIGBUS), but:\n{}",
        problems.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------
// 3: the store root replaced and restored

/// A bind mount, unmounted on drop.
struct BindMount {
    target: PathBuf,
    mounted: bool,
}

impl BindMount {
    fn new(source: &Path, target: &Path) -> BindMount {
        let st = Command::new("mount")
            .arg("--bind")
            .arg(source)
            .arg(target)
            .status()
            .expect("running mount");
        assert!(st.success(), "mount --bind {source:?} {target:?}: {st}");
        BindMount {
            target: target.to_path_buf(),
            mounted: true,
        }
    }

    fn unmount(mut self) {
        let st = Command::new("umount")
            .arg(&self.target)
            .status()
            .expect("running umount");
        assert!(st.success(), "umount {:?}: {st}", self.target);
        self.mounted = false;
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.target).status();
        }
    }
}

/// What the probes of [`all_fail_with_eio`] got: listings, stat, cat and xattrs.
fn probe_results(mp: &Path, uid: u32) -> Vec<(String, io::Result<String>)> {
    let list = |p: PathBuf| {
        fs::read_dir(p).and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<Vec<_>>>()
                .map(|v| format!("listed {v:?}"))
        })
    };
    let inbox = mp.join("INBOX");
    let sub = mp.join("Work").join("Sub");
    let msg = inbox.join(format!("{uid}.eml"));
    vec![
        ("ls MOUNT".into(), list(mp.to_path_buf())),
        ("ls INBOX".into(), list(inbox.clone())),
        ("ls Work/Sub".into(), list(sub.clone())),
        (
            "stat Work/Sub".into(),
            fs::metadata(&sub).map(|_| "stat ok".into()),
        ),
        (
            format!("stat INBOX/{uid}.eml"),
            fs::metadata(&msg).map(|m| format!("size {}", m.len())),
        ),
        (
            format!("cat INBOX/{uid}.eml"),
            fs::read(&msg).map(|b| format!("{} bytes", b.len())),
        ),
        (
            format!("getxattr INBOX/{uid}.eml"),
            getxattr(&msg, "user.mail.uid").map(|v| show(&v)),
        ),
        (
            "getxattr INBOX".into(),
            getxattr(&inbox, "user.mailbox.guid").map(|v| show(&v)),
        ),
    ]
}

/// Polls until every probe fails with EIO. An empty listing or ENOENT is never acceptable
/// (the store must not look empty); an answer from before the change is, until the
/// watcher's next root check.
#[track_caller]
fn all_fail_with_eio(mount: &Mount, uid: u32, what: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mp = mount.path().to_path_buf();
        let results = within(what, Duration::from_secs(10), move || {
            probe_results(&mp, uid)
        });
        for (probe, r) in &results {
            let wrong = match r {
                Ok(s) => s == "listed []",
                Err(e) => e.raw_os_error() == Some(libc::ENOENT),
            };
            assert!(
                !wrong,
                "{what}: {probe} gave {r:?}: the store must never look empty or missing\n{}",
                mount.log()
            );
        }
        if results.iter().all(|(_, r)| errno(r) == Some(libc::EIO)) {
            return started.elapsed();
        }
        if started.elapsed() > timeout {
            let shown: Vec<String> = results
                .iter()
                .map(|(p, r)| match r {
                    Ok(s) => format!("{p}: {s}"),
                    Err(_) => format!("{p}: {}", errno_name(errno(r))),
                })
                .collect();
            panic!(
                "{what}: not every request failed with EIO within {timeout:?}:\n{}\n\
                 --- mount log ---\n{}",
                shown.join("\n"),
                mount.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until the mount serves the store again.
#[track_caller]
fn served_again(
    mount: &Mount,
    user: &User<'_>,
    uid: u32,
    what: &str,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let want = user.text("INBOX", uid);
    loop {
        let ok = fs::read(mount.message("INBOX", uid)).is_ok_and(|b| b == want)
            && fs::read_dir(mount.mailbox("Work/Sub")).is_ok_and(|rd| rd.count() > 0);
        if ok {
            return started.elapsed();
        }
        if started.elapsed() > timeout {
            panic!(
                "{what}: the mount does not serve the store again within {timeout:?}: {:?}\n{}",
                probe_results(mount.path(), uid),
                mount.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const ROOT_GONE_LINE: &str = "every request fails with EIO";
const ROOT_BACK_LINE: &str = "the store root is back";

fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// A Maildir store is mounted (default options: a watcher and 60 s kernel caches) and
/// everything is read once, so the kernel caches it. Then the store root is covered by an
/// empty directory (`mount --bind`, root only): within 2.5 s listing, stat, cat and xattrs
/// all fail with EIO (never an empty listing, never ENOENT) and the log says so; when the
/// bind mount goes, the same content is served again within 2.5 s and the log says the root
/// is back. Then the same with the root renamed away and back.
#[test]
fn store_root_replaced_by_empty_directory_and_restored() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("root_swap");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "First", "one"));
    bob.save("INBOX", &email(2, "Second", "two"));
    bob.create_mailbox("Work/Sub");
    bob.save("Work/Sub", &email(3, "Nested", "three"));
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    assert_mount_matches_dovecot(&mount, &bob);
    let root = bob.mail_root();
    let limit = Duration::from_millis(2500);

    let mut gone = 0;
    if is_root() {
        let empty = dir.mkdir("empty");
        let bind = BindMount::new(&empty, &root);
        let t = all_fail_with_eio(&mount, uid, "root covered by an empty directory", limit);
        gone += 1;
        eprintln!("bind mount of an empty directory over the root: EIO everywhere after {t:?}");
        assert_eq!(
            count_lines(&mount.log(), ROOT_GONE_LINE),
            gone,
            "one log line when the root goes:\n{}",
            mount.log()
        );
        bind.unmount();
        let t = served_again(&mount, &bob, uid, "bind mount removed", limit);
        eprintln!("bind mount removed: served again after {t:?}");
        assert_mount_matches_dovecot(&mount, &bob);
        assert_eq!(
            count_lines(&mount.log(), ROOT_BACK_LINE),
            gone,
            "one log line when the root is back:\n{}",
            mount.log()
        );
    } else {
        eprintln!(
            "skipped the bind-mount half of store_root_replaced_by_empty_directory_and_restored: \
             `mount --bind` needs root; the rename half runs"
        );
    }

    let away = root.with_file_name("Maildir.away");
    fs::rename(&root, &away).expect("renaming the root away");
    let t = all_fail_with_eio(&mount, uid, "root renamed away", limit);
    gone += 1;
    eprintln!("root renamed away: EIO everywhere after {t:?}");
    fs::rename(&away, &root).expect("renaming the root back");
    let t = served_again(&mount, &bob, uid, "root renamed back", limit);
    eprintln!("root renamed back: served again after {t:?}");
    assert_mount_matches_dovecot(&mount, &bob);
    let log = mount.stop();
    assert_eq!(count_lines(&log, ROOT_GONE_LINE), gone, "{log}");
    assert_eq!(count_lines(&log, ROOT_BACK_LINE), gone, "{log}");
    assert_no_panic(&log);
}

// ---------------------------------------------------------------------------------------
// 4: clock skew

/// The seconds in each "modified N s in the future" log line.
fn skew_lines(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(": modified ")?;
            let (secs, _) = rest.split_once(" s in the future")?;
            Some(
                secs.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("no number in {l:?}")),
            )
        })
        .collect()
}

/// A stamped file's time 0.5 s in the future is tolerated (Dovecot allows 1 s); `cur/` one
/// hour ahead is warned about once, with its size, and shows as `clock_skew_max_ms`; a
/// second file two hours ahead raises the maximum but is not warned about again.
#[test]
fn clock_skew_is_warned_once_with_its_size() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("clock_skew");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "First", "one"));
    bob.save("INBOX", &email(2, "Second", "two"));
    bob.create_mailbox("Work");
    bob.save("Work", &email(3, "Work", "three"));
    bob.index("INBOX");
    bob.index("Work");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let ls = |mb: &str| {
        let n = fs::read_dir(mount.mailbox(mb))
            .unwrap_or_else(|e| panic!("listing {mb}: {e}"))
            .count();
        assert!(n > 0, "{mb} listed empty");
    };
    ls("INBOX");
    ls("Work");
    assert_eq!(counter(&mount, "clock_skew_max_ms"), 0);
    let cur = bob.mailbox_dir("INBOX").join("cur");

    // Half a second ahead: within Dovecot's tolerance.
    set_mtime(&cur, SystemTime::now() + Duration::from_millis(500));
    for _ in 0..3 {
        ls("INBOX");
    }
    assert!(
        skew_lines(&mount.log()).is_empty(),
        "a 0.5 s skew was warned about:\n{}",
        mount.log()
    );
    assert_eq!(
        counter(&mount, "clock_skew_max_ms"),
        0,
        "a 0.5 s skew was counted"
    );

    // One hour ahead.
    set_mtime(&cur, SystemTime::now() + Duration::from_secs(3600));
    ls("INBOX");
    let warned = wait_for(Duration::from_secs(3), "the clock skew warning", || {
        let lines = skew_lines(&mount.log());
        (!lines.is_empty()).then_some(lines)
    });
    assert_eq!(warned.len(), 1, "{}", mount.log());
    assert!(
        (3595.0..=3601.0).contains(&warned[0]),
        "the warning gives {} s, not ~3600 s:\n{}",
        warned[0],
        mount.log()
    );
    let max = counter(&mount, "clock_skew_max_ms");
    assert!(
        (3_595_000..=3_601_000).contains(&max),
        "clock_skew_max_ms {max}, not ~3600000"
    );

    // Two hours ahead elsewhere: the maximum moves, the warning is not repeated.
    set_mtime(
        &bob.control_dir("Work").join("dovecot-uidlist"),
        SystemTime::now() + Duration::from_secs(7200),
    );
    for _ in 0..5 {
        ls("INBOX");
        ls("Work");
    }
    let max = wait_for(Duration::from_secs(3), "clock_skew_max_ms ~7200000", || {
        let max = counter(&mount, "clock_skew_max_ms");
        (max >= 7_195_000).then_some(max)
    });
    assert!(max <= 7_201_000, "clock_skew_max_ms {max}");
    let log = mount.stop();
    assert_eq!(skew_lines(&log).len(), 1, "warned more than once:\n{log}");
    assert_no_panic(&log);
}

// ---------------------------------------------------------------------------------------
// 5: hostile mailbox names

/// The characters `--portable-names` must escape.
const NOT_PORTABLE: &[u8] = b"\\*?\"<>|";

/// `%XX` -> byte.
fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Every name `readdir` returns, `.` and `..` included (std's `read_dir` drops those, so it
/// could not see a mailbox posing as one).
fn raw_dirents(dir: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c = CString::new(dir.as_os_str().as_bytes()).expect("path with NUL");
    // SAFETY: `c` is a valid NUL-terminated path.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; resetting it tells end-of-directory from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `d` is an open directory stream.
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            let err = io::Error::last_os_error();
            break if err.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(err)
            };
        }
        // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated; it stays
        // valid until the next readdir on `d`.
        let name = unsafe { CStr::from_ptr((*e).d_name.as_ptr()) };
        out.push(name.to_bytes().to_vec());
    };
    // SAFETY: `d` is an open directory stream, closed once.
    unsafe { libc::closedir(d) };
    result.map(|()| out)
}

/// What a walk of a mount with hostile names found.
#[derive(Debug, Default)]
struct Presented {
    /// Directories, relative to the root, as presented.
    dirs: BTreeSet<PathBuf>,
    /// Marker -> directories holding a message with it.
    markers: BTreeMap<String, Vec<PathBuf>>,
    /// Directory -> markers of its messages.
    dir_markers: BTreeMap<PathBuf, Vec<String>>,
    /// Directories with sub-directories.
    parents: BTreeSet<PathBuf>,
    problems: Vec<String>,
}

/// Walks a mount checking the name rules at every level: `.` and `..` exactly once each
/// and meaning what they mean, every path (and `x/..`) staying under the root, no ':', no
/// empty or duplicate name, and with `portable` none of `\ * ? " < > |`.
fn walk_presented(root: &Path, portable: bool) -> Presented {
    let root = fs::canonicalize(root).expect("canonical root");
    let mut p = Presented::default();
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        let rel = dir
            .strip_prefix(&root)
            .expect("below the root")
            .to_path_buf();
        let names = match raw_dirents(&dir) {
            Ok(n) => n,
            Err(e) => {
                p.problems.push(format!("listing {rel:?}: {e}"));
                continue;
            }
        };
        let mut seen = BTreeSet::new();
        for n in &names {
            if !seen.insert(n.clone()) {
                p.problems
                    .push(format!("{rel:?}: the name {:?} is listed twice", show(n)));
            }
        }
        for special in [&b"."[..], &b".."[..]] {
            let count = names.iter().filter(|n| n.as_slice() == special).count();
            if count != 1 {
                p.problems
                    .push(format!("{rel:?}: {:?} listed {count} times", show(special)));
            }
        }
        for name in names
            .iter()
            .filter(|n| n.as_slice() != b"." && n.as_slice() != b"..")
        {
            let shown = show(name);
            if name.is_empty() || name.contains(&b'/') {
                p.problems
                    .push(format!("{rel:?}: impossible name {shown:?}"));
                continue;
            }
            if name.contains(&b':') {
                p.problems.push(format!("{rel:?}: {shown:?} contains ':'"));
            }
            if portable && name.iter().any(|c| NOT_PORTABLE.contains(c)) {
                p.problems.push(format!(
                    "{rel:?}: {shown:?} contains a character --portable-names escapes"
                ));
            }
            let path = dir.join(OsStr::from_bytes(name));
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    p.problems.push(format!(
                        "lstat {:?}: {e}",
                        rel.join(OsStr::from_bytes(name))
                    ));
                    continue;
                }
            };
            match fs::canonicalize(&path) {
                Ok(c) if c == path => {}
                Ok(c) => p.problems.push(format!("{path:?} resolves to {c:?}")),
                Err(e) => p.problems.push(format!("canonicalize {path:?}: {e}")),
            }
            if meta.is_dir() {
                for (link, want) in [("..", &dir), (".", &path)] {
                    match fs::canonicalize(path.join(link)) {
                        Ok(c) if &c == want => {}
                        other => p.problems.push(format!(
                            "{:?}/{link} resolves to {other:?}, not {want:?}",
                            path
                        )),
                    }
                }
                p.parents.insert(rel.clone());
                p.dirs.insert(rel.join(OsStr::from_bytes(name)));
                todo.push(path);
            } else {
                if !name.ends_with(b".eml") {
                    p.problems
                        .push(format!("{rel:?}: a file not named *.eml: {shown:?}"));
                }
                match fs::read(&path) {
                    Ok(bytes) => {
                        if let Some(m) = marker_of(&bytes) {
                            p.markers.entry(m.clone()).or_default().push(rel.clone());
                            p.dir_markers.entry(rel.clone()).or_default().push(m);
                        }
                    }
                    Err(e) => p.problems.push(format!("reading {path:?}: {e}")),
                }
            }
        }
    }
    p.parents.remove(Path::new(""));
    p
}

/// A mailbox made for [`hostile_mailbox_names_cannot_escape_or_collide`].
struct Hostile {
    marker: String,
    /// The name doveadm lists, for mailboxes doveadm made.
    doveadm_name: Option<String>,
    /// False for names mailfs may leave out (levels it cannot present, logged).
    required: bool,
}

/// Checks one mount of a store with hostile names; returns the problems.
fn check_hostile_mount(
    mount: &Mount,
    portable: bool,
    made: &[Hostile],
    all_listed: Option<&BTreeSet<String>>,
) -> Vec<String> {
    let label = if portable {
        "--portable-names"
    } else {
        "default names"
    };
    let p = walk_presented(mount.path(), portable);
    let mut problems: Vec<String> = p.problems.iter().map(|s| format!("{label}: {s}")).collect();
    for h in made {
        let dirs = p.markers.get(&h.marker).cloned().unwrap_or_default();
        if dirs.len() > 1 || (h.required && dirs.is_empty()) {
            problems.push(format!(
                "{label}: the mailbox with marker {} ({:?}) is presented {} times: {dirs:?}",
                h.marker,
                h.doveadm_name,
                dirs.len()
            ));
        }
        if let (Some(name), [d]) = (&h.doveadm_name, dirs.as_slice()) {
            let levels: Vec<Option<Vec<u8>>> = d.iter().map(|l| unescape(l.as_bytes())).collect();
            let back: Option<Vec<Vec<u8>>> = levels.into_iter().collect();
            let back = back.map(|l| l.join(&b'/'));
            if back.as_deref() != Some(name.as_bytes()) {
                problems.push(format!(
                    "{label}: doveadm's mailbox {name:?} is presented as {d:?}, which unescapes \
                     to {:?}",
                    back.map(|b| show(&b))
                ));
            }
        }
    }
    // No two mailboxes in one directory.
    for (d, ms) in &p.dir_markers {
        if ms.len() > 1 {
            problems.push(format!(
                "{label}: {d:?} holds the messages of {ms:?}: mailboxes merged"
            ));
        }
    }
    // Every directory is one mailbox (one marker) or a parent level.
    for d in &p.dirs {
        if !p.dir_markers.contains_key(d) && !p.parents.contains(d) {
            problems.push(format!(
                "{label}: {d:?} is neither a made mailbox nor a parent level"
            ));
        }
    }
    // Every name doveadm lists is presented, unescaping to itself.
    if let Some(listed) = all_listed {
        let shown: BTreeSet<Vec<u8>> = p
            .dirs
            .iter()
            .filter_map(|d| {
                let levels: Option<Vec<Vec<u8>>> =
                    d.iter().map(|l| unescape(l.as_bytes())).collect();
                levels.map(|l| l.join(&b'/'))
            })
            .collect();
        let want: BTreeSet<Vec<u8>> = listed.iter().map(|n| n.as_bytes().to_vec()).collect();
        for missing in want.difference(&shown) {
            problems.push(format!(
                "{label}: doveadm lists {:?}; the mount does not show it",
                show(missing)
            ));
        }
        for extra in shown.difference(&want) {
            problems.push(format!(
                "{label}: the mount shows {:?}; doveadm does not list it",
                show(extra)
            ));
        }
    }
    problems
}

/// Creates a mailbox directory on disk (bypassing Dovecot) holding one marked message
/// without a UID.
fn on_disk_mailbox(mail_dir: &Path, marker: &str, n: usize) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(mail_dir.join(sub))
            .unwrap_or_else(|e| panic!("creating {mail_dir:?}/{sub}: {e}"));
    }
    fs::write(
        mail_dir
            .join("cur")
            .join(format!("170000000{n}.M{n}P1.hostile:2,S")),
        marked(marker),
    )
    .expect("writing a marked message");
}

/// One store layout: doveadm makes what it accepts, the mount is checked (names round-trip
/// to doveadm's, with and without `--portable-names`); then hostile names doveadm refuses
/// are made on disk and the mount is checked again (nothing escapes, nothing collides).
fn hostile_names_in(
    test: &str,
    layout: Layout,
    by_doveadm: &[&str],
    on_disk: &[(&[u8], bool)],
) -> Vec<String> {
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    let mut made = Vec::new();
    bob.save_opts(&[], "INBOX", &marked("inbox"));
    made.push(Hostile {
        marker: "inbox".into(),
        doveadm_name: Some("INBOX".into()),
        required: true,
    });
    for (i, name) in by_doveadm.iter().enumerate() {
        bob.create_mailbox(name);
        let marker = format!("dovecot{i}");
        bob.save_opts(&[], name, &marked(&marker));
        made.push(Hostile {
            marker,
            doveadm_name: Some(name.to_string()),
            required: true,
        });
    }
    let listed: BTreeSet<String> = bob.list().into_iter().collect();
    let mut problems = Vec::new();
    for portable in [false, true] {
        let extra: &[&str] = if portable { &["--portable-names"] } else { &[] };
        let mount = Mount::start(&bob.location(), &dir.join(format!("mnt{portable}")), extra);
        problems.extend(
            check_hostile_mount(&mount, portable, &made, Some(&listed))
                .into_iter()
                .map(|s| format!("{test}, doveadm's names: {s}")),
        );
        assert_no_panic(&mount.stop());
    }

    let root = bob.mail_root();
    for (i, (raw, required)) in on_disk.iter().enumerate() {
        let marker = format!("disk{i}");
        let name = match layout {
            Layout::MaildirPlusPlus => {
                let mut n = b".".to_vec();
                n.extend_from_slice(raw);
                root.join(OsStr::from_bytes(&n))
            }
            _ => root.join(OsStr::from_bytes(raw)),
        };
        on_disk_mailbox(&name, &marker, i);
        made.push(Hostile {
            marker,
            doveadm_name: None,
            required: *required,
        });
    }
    let (uid, gid) = dovecot.mail_owner();
    chown_recursive(&root, uid, gid);
    for portable in [false, true] {
        let extra: &[&str] = if portable { &["--portable-names"] } else { &[] };
        let mount = Mount::start(
            &bob.location(),
            &dir.join(format!("mnt_disk{portable}")),
            extra,
        );
        problems.extend(
            check_hostile_mount(&mount, portable, &made, None)
                .into_iter()
                .map(|s| format!("{test}, with names made on disk: {s}")),
        );
        let log = mount.stop();
        assert_no_panic(&log);
        if !problems.is_empty() {
            problems.push(format!(
                "--- mount log ({test}, portable {portable}) ---\n{log}"
            ));
        }
    }
    problems
}

/// Hostile mailbox names, made by doveadm where it accepts them (`:`, `%`, the characters
/// Windows forbids, `&AC8-`, names ending in `.eml`, `...`, `.hidden`, a child named like a
/// message of its parent) and on disk where it does not (control characters, empty levels,
/// mUTF-7 for `/` and `..`, invalid mUTF-7 and invalid UTF-8 bytes, several spellings that
/// decode to one name, `%`-escapes that look like the mount's own): in a Maildir++ and a
/// `LAYOUT=fs` store, with and without `--portable-names`. Every presented path stays under
/// the mount, `.` and `..` appear once and mean what they mean, no name holds ':' (nor, with
/// `--portable-names`, any of `\ * ? " < > |`), no two mailboxes share a directory, and the
/// names of doveadm's mailboxes unescape to exactly what doveadm lists.
#[test]
fn hostile_mailbox_names_cannot_escape_or_collide() {
    require!(Dovecot, Fuse);
    let common_disk: Vec<(&[u8], bool)> = vec![
        (b"ctl\x01x", true),
        (b"x:y", true),
        (b"&AC8-", true),
        (b"&AC4-&AC4-", true),
        (b"&AOk-", true),
        (b"&AOl-", true),
        (b"&-AOl-", true),
        (b"bad\xfe", true),
        (b"bad\xff", true),
        (b"%2E%2E", true),
        (b"%00", true),
        (b"a%3Ab", true),
    ];
    let mut pp_disk = common_disk.clone();
    // Maildir++ levels split on '.': empty levels cannot be presented (mailfs skips them).
    pp_disk.extend([
        (&b"a..b"[..], false),
        (&b"..."[..], false),
        (&b"x."[..], false),
    ]);
    let mut problems = hostile_names_in(
        "hostile_pp",
        Layout::MaildirPlusPlus,
        &[
            "a:b",
            "per%cent",
            "star*q?",
            "back\\slash",
            "quo\"te",
            "<lt>|pipe",
            "&AC8-",
            " space ",
            "Work/x:y",
        ],
        &pp_disk,
    );
    let mut fs_disk = common_disk;
    fs_disk.extend([(&b"Work/9.eml"[..], true), (&b"Work/%2E"[..], true)]);
    problems.extend(hostile_names_in(
        "hostile_fs",
        Layout::FsSeparateIndexControl,
        &[
            "a:b",
            "ends.eml",
            "12.eml",
            "a..b",
            "...",
            ".hidden",
            "x.",
            "Work",
            "Work/1.eml",
            "star*q?",
        ],
        &fs_disk,
    ));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// 6: --nfs-cache-flush

/// `ls -l` of a mailbox plus every message's xattrs, timed.
fn ls_l_and_xattrs(dir: &Path) -> (Duration, usize) {
    let started = Instant::now();
    let mut n = 0;
    for e in fs::read_dir(dir).expect("listing") {
        let p = e.expect("entry").path();
        fs::symlink_metadata(&p).expect("stat");
        for a in listxattr(&p).expect("listxattr") {
            getxattr(&p, &a).expect("getxattr");
        }
        n += 1;
    }
    (started.elapsed(), n)
}

/// A mount with `--nfs-cache-flush` matches doveadm exactly and says so in its status;
/// `ls -l` plus every xattr of ~2000 messages is timed with and without the flag (both with
/// the kernel's caches off, so every request reaches mailfs).
#[test]
fn nfs_cache_flush_mode_serves_the_same_tree() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("nfs_flush");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    populate_varied(&bob, &dir.mkdir("scratch"));
    let src = dir.join("big-src");
    let mut source = SourceMaildir::new(&src, "Big");
    for n in 0..2000usize {
        source.add(
            &email(n, &format!("Big {n}"), "one of many"),
            if n % 2 == 0 { "S" } else { "" },
            1_650_000_000 + n as u64,
        );
    }
    bob.create_mailbox("Big");
    bob.import(&src, "Big");
    bob.index("Big");
    let no_cache = ["--attr-timeout", "0", "--entry-timeout", "0"];
    let flushed = Mount::start(
        &bob.location(),
        &dir.join("mnt_flush"),
        &[&no_cache[..], &["--nfs-cache-flush"]].concat(),
    );
    let compared = assert_mount_matches_dovecot(&flushed, &bob);
    assert!(compared.messages > 2000, "{compared:?}");
    assert_eq!(status(&flushed)["nfs_cache_flush"], "true");
    let plain = Mount::start(&bob.location(), &dir.join("mnt_plain"), &no_cache);
    assert_eq!(status(&plain)["nfs_cache_flush"], "false");

    // Without, with, with, without: a drift of the machine's load cancels out.
    let mut with = Vec::new();
    let mut without = Vec::new();
    for flush in [false, true, true, false] {
        let mount = if flush { &flushed } else { &plain };
        let (t, n) = ls_l_and_xattrs(&mount.mailbox("Big"));
        assert_eq!(n, 2000);
        if flush { &mut with } else { &mut without }.push(t);
    }
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let (w, wo) = (mean(&with), mean(&without));
    eprintln!(
        "ls -l + every xattr of 2000 messages (kernel caches off, debug build): without \
         --nfs-cache-flush {} {without:?}, with it {} {with:?} ({:+.0}%)",
        ms(wo),
        ms(w),
        (w.as_secs_f64() / wo.as_secs_f64() - 1.0) * 100.0
    );
    assert_no_panic(&flushed.stop());
    assert_no_panic(&plain.stop());
}

// ---------------------------------------------------------------------------------------
// 7: user.mailfs.status

/// The path of a Maildir message's file, found by its base name (doveadm's GUID for
/// messages saved by doveadm).
fn message_file(user: &User<'_>, mailbox: &str, uid: u32) -> PathBuf {
    let guid = user.fetch_guid(mailbox, uid);
    let dir = user.mailbox_dir(mailbox);
    ["new", "cur"]
        .iter()
        .flat_map(|sub| {
            fs::read_dir(dir.join(sub))
                .expect("reading maildir")
                .map(|e| e.unwrap().path())
        })
        .find(|p| p.file_name().unwrap().to_string_lossy().split(':').next() == Some(&guid))
        .unwrap_or_else(|| panic!("no file for uid {uid} (base {guid}) in {dir:?}"))
}

/// The root's `user.mailfs.status` is `key: value` lines; it shows the settings given on
/// the command line; its counters move: `view_cache_misses` after a change,
/// `invalidations_sent` after an expunge (default watcher), `eio_returned` after reading a
/// damaged message.
#[test]
fn status_xattr_reports_settings_and_counters() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("status");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uids: Vec<u32> = (0..4)
        .map(|n| bob.save("INBOX", &email(n, &format!("Status {n}"), "counted")))
        .collect();
    bob.create_mailbox("Work");
    bob.save("Work", &email(9, "Work", "work"));
    let location = bob.location();
    let mount = Mount::start(
        &location,
        &dir.join("mnt"),
        &[
            "--lock-method",
            "dotlock",
            "--portable-names",
            "--nfs-cache-flush",
            "--mmap-disable",
            "--attr-timeout",
            "2",
            "--entry-timeout",
            "3",
        ],
    );
    // Readable by name (below), never listed: its counters would make every backup
    // differ (clients::rsync_twice_transfers_nothing_the_second_time).
    let root_xattrs = listxattr(mount.path()).expect("listxattr of the root");
    assert!(
        !root_xattrs.iter().any(|a| a == "user.mailfs.status"),
        "listxattr of the root: {root_xattrs:?}"
    );
    let st = status(&mount);
    let text = format!("{st:#?}");
    for (key, want) in [
        ("location", location.as_str()),
        ("lock_method", "dotlock"),
        ("nfs_cache_flush", "true"),
        ("portable_names", "true"),
        ("attr_timeout_s", "2"),
        ("entry_timeout_s", "3"),
    ] {
        assert_eq!(
            st.get(key).map(String::as_str),
            Some(want),
            "{key} in {text}"
        );
    }
    assert_eq!(
        st.get("store_root").map(PathBuf::from),
        Some(bob.mail_root()),
        "store_root in {text}"
    );
    assert!(st["mmap"].contains("never"), "mmap in {text}");
    assert!(
        st["watch"] == "inotify" || st["watch"].starts_with("poll"),
        "watch (default auto) in {text}"
    );
    for key in [
        "view_cache_hits",
        "view_cache_misses",
        "list_cache_hits",
        "list_cache_misses",
        "refreshes",
        "invalidations_sent",
        "invalidations_failed",
        "clock_skew_max_ms",
        "writer_locks_seen",
        "eio_returned",
        "inodes_held",
    ] {
        assert!(
            st.get(key).is_some_and(|v| v.parse::<u64>().is_ok()),
            "counter {key} missing or not a number in {text}"
        );
    }

    // A change: the next listing builds the view again.
    let names = |mb: &str| -> BTreeSet<String> {
        fs::read_dir(mount.mailbox(mb))
            .unwrap_or_else(|e| panic!("listing {mb}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    names("INBOX");
    names("Work");
    // A view built within 50 ms of the store's last change is tentative (rebuilt at its
    // next use, see store::stamp): let the saves above settle, and list once more, before
    // expecting hits.
    std::thread::sleep(Duration::from_millis(100));
    names("INBOX");
    let misses = counter(&mount, "view_cache_misses");
    let hits = counter(&mount, "view_cache_hits");
    std::thread::sleep(Duration::from_millis(100));
    names("INBOX");
    assert!(
        counter(&mount, "view_cache_hits") > hits,
        "an unchanged mailbox listed again is not a cache hit: {:#?}",
        status(&mount)
    );
    let new = bob.save("INBOX", &email(5, "New", "a change"));
    wait_for(Duration::from_secs(5), "the new message", || {
        names("INBOX").contains(&format!("{new}.eml")).then_some(())
    });
    let after = counter(&mount, "view_cache_misses");
    assert!(
        after > misses,
        "view_cache_misses {misses} -> {after} after a change"
    );

    // An expunge: the watcher tells the kernel.
    let sent = counter(&mount, "invalidations_sent");
    bob.expunge("INBOX", uids[0]);
    wait_for(
        Duration::from_secs(5),
        "invalidations after an expunge",
        || (counter(&mount, "invalidations_sent") > sent).then_some(()),
    );
    wait_for(Duration::from_secs(5), "the expunged message to go", || {
        (!names("INBOX").contains(&format!("{}.eml", uids[0]))).then_some(())
    });

    // A damaged message (its file replaced by a directory): EIO, counted.
    let eio = counter(&mount, "eio_returned");
    let file = message_file(&bob, "INBOX", uids[1]);
    fs::remove_file(&file).unwrap();
    fs::create_dir(&file).unwrap();
    let msg = mount.message("INBOX", uids[1]);
    wait_for(
        Duration::from_secs(5),
        "EIO from the damaged message",
        || {
            let r = fs::read(&msg);
            (errno(&r) == Some(libc::EIO)).then_some(())
        },
    );
    let after = counter(&mount, "eio_returned");
    assert!(after > eio, "eio_returned {eio} -> {after} after an EIO");
    let log = mount.stop();
    assert_no_panic(&log);
}
