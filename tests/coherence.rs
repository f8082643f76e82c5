//! Coherence under long kernel cache timeouts: doveadm changes the store while the kernel
//! holds the old state, and the mount must show the new state within a bound, because the
//! watcher (inotify, or a stat poll) makes mailfs invalidate the kernel's caches.
//!
//! Every test mounts with `--attr-timeout 60 --entry-timeout 60`, so without invalidations
//! the kernel would trust what it cached for a minute. For each change kind (save, expunge,
//! flag and keyword change, mailbox create, rename, delete, and recreate with a new
//! UIDVALIDITY) the reader first makes the kernel cache the old state through the mount
//! (positive and negative dentries, attributes, the directory listing), then doveadm makes
//! the change, then:
//! - with `--watch inotify` and `--watch poll`: the new state must become visible within
//!   [`Mode::bound`]; the time it took is printed (`cargo test ... -- --nocapture`);
//! - with `--watch off` (the negative control) the old state must still be served after
//!   [`OFF_WAIT`], which shows that the kernel really caches what the watched modes must
//!   invalidate, i.e. that the watched tests can fail.
//!
//! What the kernel never caches cannot be stale, and is asserted fresh in every mode: FUSE
//! never caches xattrs, and without a watcher mailfs does not let the kernel cache directory
//! listings (no `FOPEN_CACHE_DIR`), so a plain `ls` is fresh with `--watch off` too.
//!
//! An expunge also reaches inotify watchers of the mount: a watch on the message gets
//! `IN_DELETE_SELF` (mailfs sends `FUSE_NOTIFY_DELETE`). A watch on its directory gets no
//! `IN_DELETE` from any FUSE notification on current kernels (see [`expunge`]); whether it
//! came is printed, not asserted.
//!
//! One Dovecot and one mount per test (layout and mode); each change kind has mailboxes of
//! its own, and the kinds run one after the other (a listing of the mount root made by one
//! kind would replace the negative dentries another kind relies on).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::corpus::email;
use crate::util::dovecot::{Dovecot, Layout, User};
use crate::util::fsx::{errno, errno_name, xattr_string};
use crate::util::mount::Mount;
use crate::util::{TestDir, assert_bytes_eq};

/// `--poll-interval` of the poll mode.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long the negative control waits before it checks that the old state is still
/// served: longer than any watched mode's bound, so that "still stale here" and "fresh
/// there" are measured against the same clock.
const OFF_WAIT: Duration = Duration::from_millis(1500);

/// A change that is late is still waited for this long after the change (measured from
/// doveadm's return), so a failure says "late" or "never".
const GIVE_UP: Duration = Duration::from_secs(5);

/// Pause between two probes while waiting for the new state.
const PROBE_PAUSE: Duration = Duration::from_millis(2);

/// How the mount learns about changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Inotify,
    Poll,
    /// `--watch off`: only the (long) timeouts end what the kernel cached.
    Off,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Inotify => "inotify",
            Mode::Poll => "poll",
            Mode::Off => "off",
        }
    }

    fn args(self) -> Vec<String> {
        let mut args: Vec<String> = ["-v", "--attr-timeout", "60", "--entry-timeout", "60"]
            .map(String::from)
            .to_vec();
        args.push("--watch".into());
        args.push(self.name().into());
        if self == Mode::Poll {
            args.push("--poll-interval".into());
            args.push(POLL_INTERVAL.as_secs_f64().to_string());
        }
        args
    }

    fn watched(self) -> bool {
        self != Mode::Off
    }

    /// How soon after doveadm returns a change must be visible. The bounds are lenient on
    /// purpose (the machine may be busy with other tests); the benchmark measures the real
    /// figures. With `--watch off` this bounds only what the kernel never caches.
    fn bound(self) -> Duration {
        match self {
            Mode::Inotify | Mode::Off => Duration::from_secs(1),
            Mode::Poll => POLL_INTERVAL + Duration::from_secs(1),
        }
    }
}

/// The change kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Save,
    Expunge,
    Flags,
    Create,
    Rename,
    Delete,
    Recreate,
}

const EVERY_KIND: [Kind; 7] = [
    Kind::Save,
    Kind::Expunge,
    Kind::Flags,
    Kind::Create,
    Kind::Rename,
    Kind::Delete,
    Kind::Recreate,
];

/// The message-level kinds, for the dbox runs.
const MESSAGE_KINDS: [Kind; 3] = [Kind::Save, Kind::Expunge, Kind::Flags];

// The mailboxes of each kind (plain ASCII names, all at the top level).
const SAVE_BOX: &str = "SaveBox";
const LISTED_BOX: &str = "ListedBox";
const EXPUNGE_BOX: &str = "ExpungeBox";
const FLAG_BOX: &str = "FlagBox";
const CREATED_BOX: &str = "CreatedBox";
const RENAME_FROM: &str = "RenameFrom";
const RENAME_TO: &str = "RenameTo";
const DELETE_BOX: &str = "DeleteBox";
const RECREATE_BOX: &str = "RecreateBox";

/// The flags the flag scenario adds: a system flag and keywords, one of them new.
const ADDED_FLAGS: &str = "\\Flagged $Label1 coherence-test";

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Save => "save",
            Kind::Expunge => "expunge",
            Kind::Flags => "flags",
            Kind::Create => "create",
            Kind::Rename => "rename",
            Kind::Delete => "delete",
            Kind::Recreate => "recreate",
        }
    }

    /// Builds what the kind starts from (before mounting): its mailboxes, each with
    /// `messages` messages.
    fn setup(self, user: &User<'_>) {
        let (mailboxes, messages): (&[&str], usize) = match self {
            Kind::Save => (&[SAVE_BOX, LISTED_BOX], 1),
            Kind::Expunge => (&[EXPUNGE_BOX], 2),
            Kind::Flags => (&[FLAG_BOX], 1),
            Kind::Create => (&[], 0),
            Kind::Rename => (&[RENAME_FROM], 1),
            Kind::Delete => (&[DELETE_BOX], 1),
            Kind::Recreate => (&[RECREATE_BOX], 1),
        };
        for mailbox in mailboxes {
            user.create_mailbox(mailbox);
            for i in 0..messages {
                let subject = format!("{mailbox} message {i}");
                user.save_opts(&[], mailbox, &email(i, &subject, "Before the change."));
            }
        }
        if self == Kind::Flags {
            let uid = user.uids(FLAG_BOX)[0];
            user.flags_add(FLAG_BOX, uid, "\\Seen");
        }
    }

    fn run(self, ctx: &Ctx<'_>) {
        match self {
            Kind::Save => save(ctx),
            Kind::Expunge => expunge(ctx),
            Kind::Flags => flags(ctx),
            Kind::Create => create(ctx),
            Kind::Rename => rename(ctx),
            Kind::Delete => delete(ctx),
            Kind::Recreate => recreate(ctx),
        }
    }
}

/// One mount in one mode, and the times measured on it.
struct Ctx<'a> {
    mode: Mode,
    /// `<layout>/<mode>`, for messages.
    label: String,
    mount: &'a Mount,
    user: &'a User<'a>,
    /// The kind running now.
    kind: RefCell<Kind>,
    /// `(kind, what, time from doveadm's return to visible)`.
    times: RefCell<Vec<(Kind, String, Duration)>>,
}

impl Ctx<'_> {
    /// Runs the doveadm change; returns its result and the instant it returned.
    fn change<T>(&self, f: impl FnOnce() -> T) -> (T, Instant) {
        let v = f();
        (v, Instant::now())
    }

    /// Probes until `probe` sees the new state (`Ok`), every [`PROBE_PAUSE`]; asserts that
    /// it took at most the mode's bound since `since`, records and prints the time. `Err`
    /// says what the probe saw instead.
    #[track_caller]
    fn shows<T>(
        &self,
        since: Instant,
        what: &str,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        let kind = *self.kind.borrow();
        let bound = self.mode.bound();
        loop {
            let seen = probe();
            let took = since.elapsed();
            match seen {
                Ok(v) if took <= bound => {
                    eprintln!(
                        "coherence {} {}: {what}: visible after {:.1} ms (bound {bound:?})",
                        self.label,
                        kind.name(),
                        took.as_secs_f64() * 1e3
                    );
                    self.times.borrow_mut().push((kind, what.to_string(), took));
                    return v;
                }
                Ok(_) => self.fail(&format!(
                    "{what}: visible only after {took:?}, beyond the bound of {bound:?}"
                )),
                Err(seen) if took >= GIVE_UP => self.fail(&format!(
                    "{what}: still not visible {took:?} after the change (bound {bound:?}); \
                     the mount shows: {seen}"
                )),
                Err(_) => std::thread::sleep(PROBE_PAUSE),
            }
        }
    }

    /// The negative control's wait. This is the one fixed sleep: it checks that nothing
    /// happens (the kernel keeps serving what it cached), which no poll can observe, for
    /// as long as the watched modes are given to show the change.
    fn stale_wait(&self, since: Instant) {
        assert_eq!(self.mode, Mode::Off, "only the negative control waits");
        std::thread::sleep(OFF_WAIT.saturating_sub(since.elapsed()));
    }

    /// Records (and prints) that the negative control still served the old state `what`.
    fn still_stale(&self, since: Instant, what: &str) {
        let kind = *self.kind.borrow();
        let took = since.elapsed();
        eprintln!(
            "coherence {} {}: {what}: still stale after {:.1} ms",
            self.label,
            kind.name(),
            took.as_secs_f64() * 1e3
        );
        self.times
            .borrow_mut()
            .push((kind, format!("still stale: {what}"), took));
    }

    /// Panics with the kind, the mode and the tail of the mount's log.
    #[track_caller]
    fn fail(&self, problem: &str) -> ! {
        let log = self.mount.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(80)..].join("\n");
        panic!(
            "coherence {} {}: {problem}\n--- last lines of the mount log ---\n{tail}",
            self.label,
            self.kind.borrow().name()
        );
    }

    /// `assert!` with the mount log on failure.
    #[track_caller]
    fn check(&self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.fail(&problem());
        }
    }

    /// `assert_eq!` with the mount log on failure.
    #[track_caller]
    fn check_eq<T: PartialEq + std::fmt::Debug>(&self, actual: T, expected: T, what: &str) {
        if actual != expected {
            self.fail(&format!(
                "{what}:\n  mount:    {actual:?}\n  expected: {expected:?}"
            ));
        }
    }

    /// A directory's names and inode numbers; fails the test on an error.
    #[track_caller]
    fn listing(&self, dir: &Path) -> BTreeMap<String, u64> {
        listing(dir).unwrap_or_else(|e| self.fail(&e))
    }

    /// What doveadm says a mailbox directory lists: `<uid>.eml` for each UID.
    fn expected_messages(&self, mailbox: &str) -> BTreeSet<String> {
        self.user.uids(mailbox).iter().map(eml).collect()
    }

    /// What doveadm says the mount root lists: the top level of every mailbox name.
    fn expected_top(&self) -> BTreeSet<String> {
        self.user
            .list()
            .iter()
            .map(|n| n.split('/').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Asserts that `path` is a cached negative entry or gone: ENOENT.
    #[track_caller]
    fn check_enoent(&self, path: &Path, what: &str) {
        let r = fs::metadata(path);
        self.check(errno(&r) == Some(libc::ENOENT), || {
            format!(
                "{what}: stat {} gave {}, expected ENOENT",
                path.display(),
                errno_name(errno(&r))
            )
        });
    }

    /// Stats `path`; fails the test on an error.
    #[track_caller]
    fn stat(&self, path: &Path, what: &str) -> fs::Metadata {
        fs::metadata(path)
            .unwrap_or_else(|e| self.fail(&format!("{what}: stat {}: {e}", path.display())))
    }
}

fn eml(uid: &u32) -> String {
    format!("{uid}.eml")
}

fn names(listing: &BTreeMap<String, u64>) -> BTreeSet<String> {
    listing.keys().cloned().collect()
}

/// A directory's names and their `d_ino`, as `ls -i` would show them.
fn listing(dir: &Path) -> Result<BTreeMap<String, u64>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    entries
        .map(|e| {
            let e = e.map_err(|e| format!("listing {}: {e}", dir.display()))?;
            Ok((e.file_name().to_string_lossy().into_owned(), e.ino()))
        })
        .collect()
}

/// ENOENT from `stat`, or what the mount showed instead.
fn enoent(path: &Path) -> Result<(), String> {
    match fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(format!("stat {}: {e}", path.display())),
        Ok(m) => Err(format!(
            "stat {} succeeds (inode {}, size {})",
            path.display(),
            m.ino(),
            m.len()
        )),
    }
}

/// `stat` succeeds, or the error.
fn exists(path: &Path) -> Result<fs::Metadata, String> {
    fs::metadata(path).map_err(|e| format!("stat {}: {e}", path.display()))
}

/// A listing that has `name` (or lacks it, `want` false).
fn listing_with(dir: &Path, name: &str, want: bool) -> Result<BTreeMap<String, u64>, String> {
    let l = listing(dir)?;
    if l.contains_key(name) == want {
        Ok(l)
    } else {
        Err(format!("{} lists {:?}", dir.display(), names(&l)))
    }
}

/// An inotify instance on paths in the mount.
struct MountInotify {
    fd: OwnedFd,
    /// Every event read so far: watch descriptor, mask, name.
    events: RefCell<Vec<(i32, u32, String)>>,
}

impl MountInotify {
    fn new() -> MountInotify {
        // SAFETY: inotify_init1 takes no pointers.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        MountInotify {
            fd,
            events: RefCell::new(Vec::new()),
        }
    }

    /// Watches `path` for `mask`; returns the watch descriptor.
    fn add(&self, path: &Path, mask: u32) -> i32 {
        let c = CString::new(path.as_os_str().as_bytes()).expect("path with NUL");
        // SAFETY: `fd` is an inotify descriptor and `c` is NUL-terminated.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        assert!(
            wd >= 0,
            "inotify_add_watch {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
        wd
    }

    /// Every event so far (reads without blocking).
    fn events(&self) -> Vec<(i32, u32, String)> {
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    _ => panic!("reading inotify events: {e}"),
                }
            }
            let n = n as usize;
            let mut at = 0;
            while at + header <= n {
                // SAFETY: `header` bytes from `at` are within the `n` bytes read, and
                // read_unaligned does not need the buffer to be aligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let name_end = (at + header + ev.len as usize).min(n);
                let name: Vec<u8> = buf[at + header..name_end]
                    .iter()
                    .copied()
                    .take_while(|&b| b != 0)
                    .collect();
                self.events.borrow_mut().push((
                    ev.wd,
                    ev.mask,
                    String::from_utf8_lossy(&name).into_owned(),
                ));
                at = name_end;
            }
        }
        self.events.borrow().clone()
    }
}

/// Save: a new UID appears. Twice: first where the kernel has only the mailbox's listing
/// (nothing looked the new name up, so only the directory's own invalidation can show the
/// message in a listing the kernel keeps), then where the reader also has a negative dentry
/// for the name the message will get.
fn save(ctx: &Ctx<'_>) {
    let (user, mount) = (ctx.user, ctx.mount);

    // Only a listing.
    let dir = mount.mailbox(LISTED_BOX);
    let name = eml(&user.status(LISTED_BOX).uidnext);
    ctx.check_eq(
        names(&ctx.listing(&dir)),
        ctx.expected_messages(LISTED_BOX),
        "listing before the save",
    );
    let message = email(201, "Saved while listed", "After the change.");
    let ((), since) = ctx.change(|| user.save_opts(&[], LISTED_BOX, &message));
    // With a watcher the kernel keeps the listing until mailfs invalidates it; without one
    // mailfs does not let it keep listings: fresh at once (asserted with the same probe).
    let what = if ctx.mode.watched() {
        "cached listing shows the new message"
    } else {
        "listing shows the new message (never cached without a watcher)"
    };
    let listed = ctx.shows(since, what, || listing_with(&dir, &name, true));
    ctx.check_eq(
        names(&listed),
        ctx.expected_messages(LISTED_BOX),
        "listing after the save",
    );

    // A listing and a negative dentry.
    let dir = mount.mailbox(SAVE_BOX);
    let next = user.status(SAVE_BOX).uidnext;
    let new = mount.message(SAVE_BOX, next);
    let name = eml(&next);

    // Cache the old state: the listing and "no such name".
    ctx.check_eq(
        names(&ctx.listing(&dir)),
        ctx.expected_messages(SAVE_BOX),
        "listing before the save",
    );
    ctx.check_enoent(&new, "the name the save will take, before the save");

    let message = email(200, "Saved while mounted", "After the change.");
    let (uid, since) = ctx.change(|| user.save(SAVE_BOX, &message));
    ctx.check_eq(uid, next, "the UID doveadm gave (vs UIDNEXT before)");

    if ctx.mode.watched() {
        let meta = ctx.shows(since, "new message stats", || exists(&new));
        let listed = ctx.shows(since, "listing has the new message", || {
            listing_with(&dir, &name, true)
        });
        let text = user.text(SAVE_BOX, uid);
        ctx.check_eq(meta.len(), text.len() as u64, "size of the new message");
        assert_bytes_eq(
            &fs::read(&new).unwrap_or_else(|e| ctx.fail(&format!("reading {new:?}: {e}"))),
            &text,
            "content of the new message vs doveadm",
        );
        ctx.check_eq(
            names(&listed),
            ctx.expected_messages(SAVE_BOX),
            "listing after the save",
        );
    } else {
        ctx.stale_wait(since);
        ctx.check(user.uids(SAVE_BOX).contains(&uid), || {
            format!("doveadm does not list uid {uid} after saving it")
        });
        // The negative dentry is trusted for the entry timeout: the new message stays
        // hidden although doveadm lists it.
        ctx.check_enoent(
            &new,
            "without a watcher the cached negative lookup hides the new message",
        );
        ctx.still_stale(since, "negative dentry hides the new message");
        // Without a watcher mailfs does not let the kernel cache listings: fresh. (This
        // listing also replaces the negative dentry, so it comes last.)
        ctx.check_eq(
            names(&ctx.listing(&dir)),
            ctx.expected_messages(SAVE_BOX),
            "listing after the save (never cached without a watcher)",
        );
    }
}

/// Expunge: a UID disappears. The reader has its dentry and attributes cached, the listing,
/// and inotify watches (through the mount) on the message and on its directory.
fn expunge(ctx: &Ctx<'_>) {
    let (user, mount) = (ctx.user, ctx.mount);
    let dir = mount.mailbox(EXPUNGE_BOX);
    let uids = user.uids(EXPUNGE_BOX);
    ctx.check(uids.len() >= 2, || {
        format!("{EXPUNGE_BOX} has UIDs {uids:?}")
    });
    let (doomed, kept) = (uids[0], uids[1]);
    let path = mount.message(EXPUNGE_BOX, doomed);
    let name = eml(&doomed);

    let old = ctx.stat(&path, "the message to expunge, before");
    ctx.check_eq(
        names(&ctx.listing(&dir)),
        ctx.expected_messages(EXPUNGE_BOX),
        "listing before the expunge",
    );
    // inotify through the mount: the message itself (what `tail -F` or an editor
    // watches) and its directory.
    let inotify = MountInotify::new();
    let dir_wd = inotify.add(&dir, libc::IN_DELETE);
    let file_wd = inotify.add(&path, libc::IN_DELETE_SELF);

    let ((), since) = ctx.change(|| user.expunge(EXPUNGE_BOX, doomed));

    if ctx.mode.watched() {
        ctx.shows(since, "expunged message gives ENOENT", || enoent(&path));
        let listed = ctx.shows(since, "listing lacks the expunged message", || {
            listing_with(&dir, &name, false)
        });
        // FUSE_NOTIFY_DELETE makes the kernel clear the inode's link count and delete the
        // dentry, so a watch on the message gets IN_DELETE_SELF. A watch on the directory
        // gets no IN_DELETE: fuse_reverse_inval_entry() calls d_delete(), which stopped
        // generating the parent's IN_DELETE in Linux 5.3 (the hook moved to the VFS unlink
        // paths), and FUSE has no notification that does. So only IN_DELETE_SELF can be
        // asserted; what the directory watch saw is printed.
        ctx.shows(since, "IN_DELETE_SELF on the expunged message", || {
            let events = inotify.events();
            if events
                .iter()
                .any(|(wd, mask, _)| *wd == file_wd && mask & libc::IN_DELETE_SELF != 0)
            {
                Ok(())
            } else {
                Err(format!("inotify events so far: {events:x?}"))
            }
        });
        let dir_deleted = inotify
            .events()
            .iter()
            .any(|(wd, mask, n)| *wd == dir_wd && mask & libc::IN_DELETE != 0 && *n == name);
        eprintln!(
            "coherence {} expunge: IN_DELETE {name} on the mounted directory: {}",
            ctx.label,
            if dir_deleted {
                "received"
            } else {
                "not received (the kernel does not generate it for FUSE_NOTIFY_DELETE)"
            }
        );
        ctx.check_eq(
            names(&listed),
            ctx.expected_messages(EXPUNGE_BOX),
            "listing after the expunge",
        );
        ctx.stat(&mount.message(EXPUNGE_BOX, kept), "the message kept");
    } else {
        ctx.stale_wait(since);
        ctx.check(!user.uids(EXPUNGE_BOX).contains(&doomed), || {
            format!("doveadm still lists uid {doomed} after expunging it")
        });
        // The positive dentry and its attributes are trusted for the timeouts.
        let stale = ctx.stat(
            &path,
            "without a watcher the expunged message's cached dentry still stats",
        );
        ctx.check_eq(
            (stale.ino(), stale.len()),
            (old.ino(), old.len()),
            "inode and size of the expunged message's stale dentry",
        );
        ctx.still_stale(since, "expunged message stats with its old inode and size");
        // Nothing told the kernel: no inotify event at all.
        ctx.check_eq(
            inotify.events(),
            Vec::new(),
            "inotify events on the message and its directory without a watcher",
        );
        ctx.check_eq(
            names(&ctx.listing(&dir)),
            ctx.expected_messages(EXPUNGE_BOX),
            "listing after the expunge (never cached without a watcher)",
        );
    }
}

/// Flag and keyword change: `user.mail.flags`. FUSE never caches xattrs (every getxattr
/// reaches mailfs, which revalidates its view), so there is no stale state to show, in any
/// mode: the new flags must be visible in all three. The reader still caches the message's
/// dentry, attributes and the listing, which must stay valid.
fn flags(ctx: &Ctx<'_>) {
    let (user, mount) = (ctx.user, ctx.mount);
    let dir = mount.mailbox(FLAG_BOX);
    let uid = user.uids(FLAG_BOX)[0];
    let path = mount.message(FLAG_BOX, uid);
    let doveadm_flags = || -> String {
        let all = user.fetch_flags(FLAG_BOX);
        let (_, flags) = all
            .iter()
            .find(|(u, _)| *u == uid)
            .unwrap_or_else(|| ctx.fail(&format!("doveadm lost uid {uid}: {all:?}")));
        flags.join(" ")
    };

    let before = xattr_string(&path, "user.mail.flags");
    ctx.check_eq(before.clone(), doveadm_flags(), "user.mail.flags before");
    let old = ctx.stat(&path, "the message, before");
    let old_listing = ctx.listing(&dir);

    let ((), since) = ctx.change(|| user.flags_add(FLAG_BOX, uid, ADDED_FLAGS));

    let now = ctx.shows(since, "user.mail.flags changed", || {
        let v = xattr_string(&path, "user.mail.flags");
        if v == before {
            Err(format!("user.mail.flags is still {v:?}"))
        } else {
            Ok(v)
        }
    });
    ctx.check_eq(now, doveadm_flags(), "user.mail.flags after the change");
    let meta = ctx.stat(&path, "the message, after");
    ctx.check_eq(
        (meta.ino(), meta.len()),
        (old.ino(), old.len()),
        "inode and size after a flag change",
    );
    ctx.check_eq(
        ctx.listing(&dir),
        old_listing,
        "listing after a flag change (names and inodes)",
    );
}

/// Mailbox create: a directory appears where the kernel cached "no such name" at the root.
fn create(ctx: &Ctx<'_>) {
    let (user, mount) = (ctx.user, ctx.mount);
    let root = mount.path();
    let path = mount.mailbox(CREATED_BOX);

    ctx.check_eq(
        names(&ctx.listing(root)),
        ctx.expected_top(),
        "root listing before the create",
    );
    ctx.check_enoent(&path, "the mailbox to create, before");

    let ((), since) = ctx.change(|| user.create_mailbox(CREATED_BOX));

    if ctx.mode.watched() {
        ctx.shows(since, "new mailbox is a directory", || {
            match exists(&path) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(format!("{} is not a directory", path.display())),
                Err(e) => Err(e),
            }
        });
        let listed = ctx.shows(since, "root listing has the new mailbox", || {
            listing_with(root, CREATED_BOX, true)
        });
        ctx.check_eq(names(&listed), ctx.expected_top(), "root listing after");
        ctx.check_eq(
            xattr_string(&path, "user.mailbox.uidvalidity"),
            user.status(CREATED_BOX).uidvalidity.to_string(),
            "user.mailbox.uidvalidity of the new mailbox",
        );
        ctx.check_eq(
            names(&ctx.listing(&path)),
            BTreeSet::new(),
            "listing of the new mailbox",
        );
    } else {
        ctx.stale_wait(since);
        ctx.check(user.list().iter().any(|n| n == CREATED_BOX), || {
            format!("doveadm does not list {CREATED_BOX} after creating it")
        });
        ctx.check_enoent(
            &path,
            "without a watcher the cached negative lookup hides the new mailbox",
        );
        ctx.still_stale(since, "negative dentry hides the new mailbox");
        ctx.check_eq(
            names(&ctx.listing(root)),
            ctx.expected_top(),
            "root listing after the create (never cached without a watcher)",
        );
    }
}

/// Mailbox rename: the old name goes (its dentry and a message below it were cached), the
/// new one appears (its negative dentry was cached).
fn rename(ctx: &Ctx<'_>) {
    let (user, mount) = (ctx.user, ctx.mount);
    let root = mount.path();
    let (from, to) = (mount.mailbox(RENAME_FROM), mount.mailbox(RENAME_TO));
    let uid = user.uids(RENAME_FROM)[0];

    ctx.check(ctx.stat(&from, "the mailbox to rename").is_dir(), || {
        format!("{} is not a directory", from.display())
    });
    ctx.stat(&from.join(eml(&uid)), "a message of the mailbox to rename");
    ctx.check_eq(
        names(&ctx.listing(&from)),
        ctx.expected_messages(RENAME_FROM),
        "listing of the mailbox to rename",
    );
    ctx.check_enoent(&to, "the new name, before the rename");
    ctx.check_eq(
        names(&ctx.listing(root)),
        ctx.expected_top(),
        "root listing before the rename",
    );

    let (_, since) =
        ctx.change(|| user.adm(&[], &["mailbox", "rename"], &[RENAME_FROM, RENAME_TO]));

    if ctx.mode.watched() {
        ctx.shows(since, "old name gives ENOENT", || enoent(&from));
        ctx.shows(since, "new name is a directory", || match exists(&to) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!("{} is not a directory", to.display())),
            Err(e) => Err(e),
        });
        let listed = ctx.shows(since, "root listing has the new name only", || {
            listing_with(root, RENAME_FROM, false)?;
            listing_with(root, RENAME_TO, true)
        });
        ctx.check_eq(names(&listed), ctx.expected_top(), "root listing after");
        ctx.check_eq(
            names(&ctx.listing(&to)),
            ctx.expected_messages(RENAME_TO),
            "listing of the renamed mailbox",
        );
        ctx.check_enoent(&from.join(eml(&uid)), "a message below the old name");
    } else {
        ctx.stale_wait(since);
        let list = user.list();
        ctx.check(
            list.iter().any(|n| n == RENAME_TO) && !list.iter().any(|n| n == RENAME_FROM),
            || format!("doveadm lists {list:?} after the rename"),
        );
        ctx.check(
            ctx.stat(
                &from,
                "without a watcher the old name's cached dentry still stats",
            )
            .is_dir(),
            || format!("{} is not a directory", from.display()),
        );
        ctx.check_enoent(
            &to,
            "without a watcher the cached negative lookup hides the new name",
        );
        ctx.still_stale(since, "old name stats as a directory, new name ENOENT");
        ctx.check_eq(
            names(&ctx.listing(root)),
            ctx.expected_top(),
            "root listing after the rename (never cached without a watcher)",
        );
    }
}

/// Mailbox delete: its directory (and a message below it) were cached.
fn delete(ctx: &Ctx<'_>) {
    let (user, mount) = (ctx.user, ctx.mount);
    let root = mount.path();
    let dir = mount.mailbox(DELETE_BOX);
    let uid = user.uids(DELETE_BOX)[0];
    let message = dir.join(eml(&uid));

    ctx.check(ctx.stat(&dir, "the mailbox to delete").is_dir(), || {
        format!("{} is not a directory", dir.display())
    });
    let old = ctx.stat(&message, "a message of the mailbox to delete");
    ctx.check_eq(
        names(&ctx.listing(&dir)),
        ctx.expected_messages(DELETE_BOX),
        "listing of the mailbox to delete",
    );
    ctx.check_eq(
        names(&ctx.listing(root)),
        ctx.expected_top(),
        "root listing before the delete",
    );

    let (_, since) = ctx.change(|| user.adm(&[], &["mailbox", "delete"], &[DELETE_BOX]));

    if ctx.mode.watched() {
        ctx.shows(since, "deleted mailbox gives ENOENT", || enoent(&dir));
        let listed = ctx.shows(since, "root listing lacks the deleted mailbox", || {
            listing_with(root, DELETE_BOX, false)
        });
        ctx.check_eq(names(&listed), ctx.expected_top(), "root listing after");
        ctx.check_enoent(&message, "a message of the deleted mailbox");
    } else {
        ctx.stale_wait(since);
        ctx.check(!user.list().iter().any(|n| n == DELETE_BOX), || {
            format!("doveadm still lists {DELETE_BOX} after deleting it")
        });
        ctx.check(
            ctx.stat(
                &dir,
                "without a watcher the deleted mailbox's cached dentry still stats",
            )
            .is_dir(),
            || format!("{} is not a directory", dir.display()),
        );
        let stale = ctx.stat(
            &message,
            "without a watcher a cached message of the deleted mailbox still stats",
        );
        ctx.check_eq(
            (stale.ino(), stale.len()),
            (old.ino(), old.len()),
            "inode and size of the deleted mailbox's stale message",
        );
        ctx.still_stale(since, "deleted mailbox and its message still stat");
        ctx.check_eq(
            names(&ctx.listing(root)),
            ctx.expected_top(),
            "root listing after the delete (never cached without a watcher)",
        );
    }
}

/// Recreate with a new UIDVALIDITY (delete, create, save): the same name `<uid>.eml` is now
/// another message, so it must have another inode number and the new bytes. The reader had
/// its dentry, attributes and bytes cached.
fn recreate(ctx: &Ctx<'_>) {
    let (user, mount) = (ctx.user, ctx.mount);
    let dir = mount.mailbox(RECREATE_BOX);
    let before = user.status(RECREATE_BOX);
    let uid = user.uids(RECREATE_BOX)[0];
    let path = mount.message(RECREATE_BOX, uid);
    let name = eml(&uid);

    let old = ctx.stat(&path, "the message before the recreate");
    let old_text = fs::read(&path).unwrap_or_else(|e| ctx.fail(&format!("reading {path:?}: {e}")));
    assert_bytes_eq(
        &old_text,
        &user.text(RECREATE_BOX, uid),
        "content before the recreate",
    );
    ctx.check_eq(
        ctx.listing(&dir).get(&name).copied(),
        Some(old.ino()),
        "d_ino in the listing before the recreate",
    );

    let message = email(300, "After the recreate", "A different message, same UID.");
    let (new_uid, since) = ctx.change(|| {
        user.adm(&[], &["mailbox", "delete"], &[RECREATE_BOX]);
        user.create_mailbox(RECREATE_BOX);
        user.save(RECREATE_BOX, &message)
    });

    if ctx.mode.watched() {
        let meta = ctx.shows(since, "the name has a new inode", || match exists(&path) {
            Ok(m) if m.ino() != old.ino() => Ok(m),
            Ok(m) => Err(format!("{} still has inode {}", path.display(), m.ino())),
            Err(e) => Err(e),
        });
        let listed = ctx.shows(since, "listing has the new inode", || {
            let l = listing(&dir)?;
            match l.get(&name) {
                Some(&ino) if ino != old.ino() => Ok(l),
                _ => Err(format!("{} lists {l:?}", dir.display())),
            }
        });
        let after = user.status(RECREATE_BOX);
        ctx.check(after.uidvalidity != before.uidvalidity, || {
            format!("doveadm kept UIDVALIDITY {}", after.uidvalidity)
        });
        ctx.check_eq(new_uid, uid, "UID of the new message (doveadm)");
        ctx.check_eq(
            listed.get(&name).copied(),
            Some(meta.ino()),
            "d_ino in the listing vs stat",
        );
        ctx.check_eq(
            names(&listed),
            ctx.expected_messages(RECREATE_BOX),
            "listing after the recreate",
        );
        let text = user.text(RECREATE_BOX, uid);
        ctx.check_eq(meta.len(), text.len() as u64, "size after the recreate");
        assert_bytes_eq(
            &fs::read(&path).unwrap_or_else(|e| ctx.fail(&format!("reading {path:?}: {e}"))),
            &text,
            "content after the recreate vs doveadm",
        );
        ctx.check_eq(
            xattr_string(&dir, "user.mailbox.uidvalidity"),
            after.uidvalidity.to_string(),
            "user.mailbox.uidvalidity after the recreate",
        );
    } else {
        ctx.stale_wait(since);
        let after = user.status(RECREATE_BOX);
        ctx.check(after.uidvalidity != before.uidvalidity, || {
            format!("doveadm kept UIDVALIDITY {}", after.uidvalidity)
        });
        ctx.check_eq(new_uid, uid, "UID of the new message (doveadm)");
        let stale = ctx.stat(
            &path,
            "without a watcher the old message's cached dentry still stats",
        );
        ctx.check_eq(
            stale.ino(),
            old.ino(),
            "inode of the name after the recreate (stale: the old message's)",
        );
        ctx.still_stale(since, "the name keeps the old message's inode");
        // The listing is fresh: the new message's inode. (It also replaces the dentry.)
        let listed = ctx.listing(&dir);
        ctx.check(
            listed.get(&name).is_some_and(|&ino| ino != old.ino()),
            || format!("listing after the recreate (never cached without a watcher): {listed:?}"),
        );
    }
}

/// Builds the store for `kinds` in `layout`, mounts it in `mode` and runs the kinds one
/// after the other; prints the times measured.
fn run(test: &str, layout: Layout, layout_name: &str, mode: Mode, kinds: &[Kind]) {
    let started = Instant::now();
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let user = dovecot.user("bob");
    user.save_opts(&[], "INBOX", &email(1, "Inbox", "So that INBOX exists."));
    for kind in kinds {
        kind.setup(&user);
    }
    let args = mode.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mount = Mount::start(&user.location(), &dir.join("mnt"), &args);
    let ctx = Ctx {
        mode,
        label: format!("{layout_name}/{}", mode.name()),
        mount: &mount,
        user: &user,
        kind: RefCell::new(kinds[0]),
        times: RefCell::new(Vec::new()),
    };
    for &kind in kinds {
        *ctx.kind.borrow_mut() = kind;
        kind.run(&ctx);
    }
    let mut summary = format!(
        "coherence {}: {} kinds in {:.2} s",
        ctx.label,
        kinds.len(),
        started.elapsed().as_secs_f64()
    );
    for (kind, what, took) in ctx.times.borrow().iter() {
        summary.push_str(&format!(
            "\n  {:<9} {:>8.1} ms  {what}",
            kind.name(),
            took.as_secs_f64() * 1e3
        ));
    }
    eprintln!("{summary}");
    drop(ctx);
    let log = mount.stop();
    assert!(
        !log.contains("panicked"),
        "mailfs panicked; its log:\n{log}"
    );
}

#[test]
fn maildir_inotify_shows_every_change_within_a_second() {
    require!(Dovecot, Fuse);
    run(
        "coh-maildir-inotify",
        Layout::MaildirPlusPlus,
        "maildir",
        Mode::Inotify,
        &EVERY_KIND,
    );
}

#[test]
fn maildir_poll_shows_every_change_within_the_interval_and_a_second() {
    require!(Dovecot, Fuse);
    run(
        "coh-maildir-poll",
        Layout::MaildirPlusPlus,
        "maildir",
        Mode::Poll,
        &EVERY_KIND,
    );
}

#[test]
fn maildir_watch_off_serves_the_stale_view() {
    require!(Dovecot, Fuse);
    run(
        "coh-maildir-off",
        Layout::MaildirPlusPlus,
        "maildir",
        Mode::Off,
        &EVERY_KIND,
    );
}

#[test]
fn mdbox_inotify_shows_message_changes_within_a_second() {
    require!(Dovecot, Fuse);
    run(
        "coh-mdbox-inotify",
        Layout::Mdbox,
        "mdbox",
        Mode::Inotify,
        &MESSAGE_KINDS,
    );
}

#[test]
fn mdbox_poll_shows_message_changes_within_the_interval_and_a_second() {
    require!(Dovecot, Fuse);
    run(
        "coh-mdbox-poll",
        Layout::Mdbox,
        "mdbox",
        Mode::Poll,
        &MESSAGE_KINDS,
    );
}

#[test]
fn mdbox_watch_off_serves_the_stale_view() {
    require!(Dovecot, Fuse);
    run(
        "coh-mdbox-off",
        Layout::Mdbox,
        "mdbox",
        Mode::Off,
        &MESSAGE_KINDS,
    );
}
