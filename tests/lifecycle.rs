//! The daemon's life: ready when mounted, clean exit 0 on SIGINT/SIGTERM (also with a file
//! still open), mount options accepted.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use crate::util::corpus::email;
use crate::util::dovecot::{Dovecot, Layout};
use crate::util::fsx::errno;
use crate::util::mount::Mount;
use crate::util::{TestDir, mounts_below, show, wait_for};

#[test]
fn sigint_unmounts_and_exits_0() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("life_sigint");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Hello", "world"));
    let opts = [
        "--attr-timeout",
        "2",
        "--entry-timeout",
        "2",
        "--threads",
        "1",
        "-v",
    ];
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &opts);
    assert_eq!(
        fs::read(mount.message("INBOX", uid)).unwrap(),
        bob.text("INBOX", uid)
    );
    mount.signal(libc::SIGINT);
    let log = mount.wait_exit();
    assert!(!log.contains("panicked"), "{log}");
}

/// With a message still open, SIGTERM cannot unmount normally (EBUSY). The mount must still
/// leave the namespace at once, and the daemon exit 0 once the file is closed.
#[test]
fn sigterm_with_an_open_file_detaches_and_exits_once_it_is_closed() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("life_open_file");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Hold me", "open"));
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let file = fs::File::open(mount.message("INBOX", uid)).expect("opening a message");
    mount.signal(libc::SIGTERM);
    wait_for(
        Duration::from_secs(10),
        "the mount to be detached after SIGTERM",
        || (!mount.is_mounted()).then_some(()),
    );
    drop(file);
    let log = mount.wait_exit();
    assert!(!log.contains("panicked"), "{log}");
}

/// After a first signal the daemon may wait (a detached mount still held by an open file);
/// a second signal must end it at once, exit 1 with a log line, never be ignored.
#[test]
fn a_second_signal_ends_a_daemon_that_waits_for_a_detached_mount() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("life_second_signal");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Hold me", "open"));
    let mut mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let file = fs::File::open(mount.message("INBOX", uid)).expect("opening a message");
    mount.signal(libc::SIGTERM);
    wait_for(
        Duration::from_secs(10),
        "the mount to be detached after SIGTERM",
        || (!mount.is_mounted()).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        mount.is_running(),
        "control: the daemon waits for the open file:\n{}",
        mount.log()
    );
    mount.signal(libc::SIGINT);
    let (status, log) = mount.wait_any_exit();
    assert_eq!(status.code(), Some(1), "{status}:\n{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("ERROR") && last.contains("again"),
        "the last log line must say why it exited:\n{log}"
    );
    drop(file);
}

/// `--allow-other` lets another user in; without it, only the mounting user gets in.
#[test]
fn allow_other_admits_other_users() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("life_allow_other");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Shared", "view"));
    let ls_as_nobody = |path: &std::path::Path| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
            .arg(path)
            .output()
            .expect("running setpriv")
    };
    let private = Mount::start(&bob.location(), &dir.join("private"), &[]);
    let denied = ls_as_nobody(&private.mailbox("INBOX"));
    assert!(
        !denied.status.success(),
        "without --allow-other: {}",
        show(&denied.stdout)
    );
    private.stop();

    let shared = Mount::start(&bob.location(), &dir.join("shared"), &["--allow-other"]);
    let allowed = ls_as_nobody(&shared.mailbox("INBOX"));
    assert!(
        allowed.status.success(),
        "with --allow-other: {}",
        show(&allowed.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&allowed.stdout).trim(), "1.eml");
    shared.stop();
}

/// A second mount on a mountpoint that is already in use is refused with a message, and
/// the first mount keeps working.
#[test]
fn a_busy_mountpoint_is_refused() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("life_busy");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Busy", "here"));
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let out = Command::new("timeout")
        .arg("10")
        .arg(crate::util::mailfs_bin())
        .arg("mount")
        .arg(bob.location())
        .arg(mount.path())
        .output()
        .expect("running a second mailfs mount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "second mount on a busy mountpoint: {}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("busy"), "message must say busy:\n{stderr}");
    assert_eq!(
        fs::read(mount.message("INBOX", uid)).expect("the first mount still serves"),
        bob.text("INBOX", uid)
    );
    let log = mount.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// The mount point's parent renamed under a running mount (`D/p/mnt` becomes
/// `D/q r\s/mnt`, a name the mount table escapes): the path the daemon mounted on is gone,
/// yet SIGTERM must still unmount (the daemon finds its mount by device) and the daemon
/// exit 0 within seconds, leaving nothing mounted. Also with a message held open: the
/// mount is then detached lazily where it now is, and the daemon exits once it is closed.
#[test]
fn sigterm_unmounts_after_the_mount_points_parent_is_renamed() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("life_renamed");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Moved", "parent"));
    for (from, to, hold_open) in [("p", "q r\\s", false), ("p2", "q2", true)] {
        let mut mount = Mount::start(&bob.location(), &dir.join(from).join("mnt"), &[]);
        let file = fs::File::open(mount.message("INBOX", uid)).expect("opening a message");
        let renamed = dir.join(to);
        fs::rename(dir.join(from), &renamed).expect("renaming the mount point's parent");
        let moved = renamed.join("mnt");
        mount.moved_to(&moved);
        assert_eq!(
            mounts_below(dir.path()),
            vec![moved.clone()],
            "control: the mount moved with its parent"
        );
        let file = if hold_open {
            Some(file)
        } else {
            drop(file);
            None
        };
        mount.signal(libc::SIGTERM);
        wait_for(
            Duration::from_secs(10),
            "the mount to leave the namespace after SIGTERM",
            || mounts_below(dir.path()).is_empty().then_some(()),
        );
        drop(file);
        let log = mount.wait_exit();
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// After SIGKILL the mount stays behind, dead ("Transport endpoint is not connected"). A
/// new `mailfs mount` on the same mount point clears it, says so in one log line, and
/// serves again; its stop leaves nothing mounted. Twice: with the mount point's attributes
/// still in the kernel's cache (stat succeeds, only requests that reach the daemon fail),
/// and without (`--attr-timeout 0`: stat itself fails).
#[test]
fn a_new_mount_clears_the_dead_mount_of_a_killed_daemon() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("life_killed");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Again", "after a crash"));
    for (name, opts, stat_fails) in [
        ("cached", &[][..], false),
        (
            "uncached",
            &["--attr-timeout", "0", "--entry-timeout", "0"][..],
            true,
        ),
    ] {
        let mp = dir.join(name);
        let killed = Mount::start(&bob.location(), &mp, opts);
        killed.signal(libc::SIGKILL);
        let (status, _) = killed.wait_any_exit();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        let listed = fs::read_dir(&mp);
        assert_eq!(
            errno(&listed),
            Some(libc::ENOTCONN),
            "control ({name}): the killed daemon leaves a dead mount: {listed:?}"
        );
        let stat = fs::metadata(&mp);
        assert_eq!(
            errno(&stat),
            stat_fails.then_some(libc::ENOTCONN),
            "control ({name}): {stat:?}"
        );

        // The dead mount itself may look ready to Mount::start's stat: wait for the log.
        let mut mount = Mount::start(&bob.location(), &mp, opts);
        wait_for(Duration::from_secs(10), "the new mount", || {
            let mounted = mount.log().contains(", read-only");
            assert!(
                mounted || mount.is_running(),
                "({name}) mailfs exited instead of mounting:\n{}",
                mount.log()
            );
            mounted.then_some(())
        });
        assert_eq!(
            fs::read(mount.message("INBOX", uid)).unwrap(),
            bob.text("INBOX", uid)
        );
        let log = mount.stop();
        let cleared: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("cleared a dead mailfs mount"))
            .collect();
        assert_eq!(cleared.len(), 1, "{name}: want one line about it:\n{log}");
        assert!(cleared[0].contains(&mp.display().to_string()), "{log}");
        let left = mounts_below(dir.path());
        assert!(left.is_empty(), "{name}: still mounted: {left:?}\n{log}");
    }
}

/// A dead FUSE mount that mailfs did not make (another filesystem's, here one mounted by
/// hand and abandoned) is left alone: `mailfs mount` there exits 1 with a message giving
/// the command that clears it.
#[test]
fn a_dead_foreign_mount_is_refused_with_the_command_that_clears_it() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("life_dead_foreign");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Not", "ours"));
    let mp = dir.mkdir("mnt");
    abandoned_fuse_mount(&mp, "otherfs");
    let dead = fs::metadata(&mp);
    assert_eq!(errno(&dead), Some(libc::ENOTCONN), "control: {dead:?}");

    let out = Command::new("timeout")
        .arg("10")
        .arg(crate::util::mailfs_bin())
        .arg("mount")
        .arg(bob.location())
        .arg(&mp)
        .env_remove("RUST_LOG")
        .output()
        .expect("running mailfs mount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}\n{stderr}", out.status);
    let m = mp.display().to_string();
    assert!(
        stderr.contains(&format!("fusermount3 -uz {m}")) && stderr.contains("otherfs"),
        "the message must name the dead mount and give the command:\n{stderr}"
    );
    assert!(
        mounts_below(dir.path()).contains(&mp),
        "a foreign dead mount must be left alone"
    );
}

/// Mounts a FUSE filesystem with fsname `source` on `mp` and closes its only descriptor
/// without serving it: the kernel aborts the connection, and the mount stays behind dead,
/// as a crashed FUSE daemon leaves it.
fn abandoned_fuse_mount(mp: &std::path::Path, source: &str) {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let fuse = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .expect("opening /dev/fuse");
    let data = CString::new(format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        fuse.as_raw_fd()
    ))
    .unwrap();
    let target = CString::new(mp.as_os_str().as_bytes()).unwrap();
    let source = CString::new(source).unwrap();
    let fstype = CString::new("fuse").unwrap();
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mounting a FUSE filesystem by hand: {}",
        std::io::Error::last_os_error()
    );
    drop(fuse);
}

/// `isatty()` on an open message (Python's `open()` does one) is an ioctl that the kernel
/// passes to mailfs. 10,000 of them must not flood the daemon's log. Two bounds: the rate
/// limit alone keeps the growth within the budget of one call site (`logging::BUSY_BUDGET`
/// lines of at most a few lines each, instead of one per call); and mailfs answers the
/// ioctl itself (ENOTTY, as for a regular file), so no line mentions ioctl and the log
/// grows by fewer than 5 lines.
#[test]
fn isatty_on_a_message_does_not_flood_the_log() {
    use std::os::fd::AsRawFd;
    require!(Dovecot, Fuse);
    let dir = TestDir::new("life_isatty");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Not a", "terminal"));
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let file = fs::File::open(mount.message("INBOX", uid)).expect("opening a message");
    let before = mount.log().lines().count();
    for _ in 0..10_000 {
        // SAFETY: `file` is open for the whole call.
        let tty = unsafe { libc::isatty(file.as_raw_fd()) };
        assert_eq!(tty, 0, "a message is no terminal");
    }
    drop(file);
    let log = mount.log();
    let grown: Vec<&str> = log.lines().skip(before).collect();
    let budget = 5 * mailfs::logging::BUSY_BUDGET as usize;
    assert!(
        grown.len() <= budget,
        "10,000 isatty() calls added {} log lines (rate limit: at most {budget}):\n{}",
        grown.len(),
        grown[..grown.len().min(12)].join("\n")
    );
    let ioctl: Vec<&&str> = grown
        .iter()
        .filter(|l| l.to_ascii_lowercase().contains("ioctl"))
        .collect();
    assert!(
        ioctl.is_empty() && grown.len() < 5,
        "10,000 isatty() calls added {} log lines, {} mentioning ioctl:\n{}",
        grown.len(),
        ioctl.len(),
        grown[..grown.len().min(12)].join("\n")
    );
    assert!(!mount.stop().contains("panicked"));
}
