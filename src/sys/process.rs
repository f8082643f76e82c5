//! The process: its signal mask, the passwd database, its allocator.

use std::ffi::{CStr, CString};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A set of signals that [`block_signals`] blocked, for [`wait_signal`].
#[derive(Clone, Copy)]
pub struct SignalSet(libc::sigset_t);

impl std::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalSet")
    }
}

/// Blocks `signals` in the calling thread (`pthread_sigmask(SIG_BLOCK)`); threads it starts
/// afterwards inherit the mask. Numbers that are not signals are ignored.
pub fn block_signals(signals: &[libc::c_int]) -> SignalSet {
    // SAFETY: all-zero is a valid sigset_t to pass to sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; sigaddset only fails (EINVAL) for a number that
    // is not a signal; pthread_sigmask reads `set` and only changes this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    SignalSet(set)
}

/// Waits for one of the signals of `set` (`sigwait`, which takes it off the pending set);
/// returns its number.
pub fn wait_signal(set: &SignalSet) -> io::Result<libc::c_int> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set.0` is an initialised sigset_t and `sig` a valid out-pointer.
    let rc = unsafe { libc::sigwait(&set.0, &mut sig) };
    if rc == 0 {
        Ok(sig)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Home directory of a system user, from the passwd database (`getpwnam_r`).
pub fn user_home(user: &str) -> Option<PathBuf> {
    let name = CString::new(user).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero bytes are a valid `passwd` (integers and null pointers).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pwd` below, and
    // getpwnam_r writes at most `buf.len()` bytes into it.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
        return None;
    }
    // SAFETY: on success pw_dir points to a NUL-terminated string inside `buf`.
    let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
    Some(PathBuf::from(dir.to_string_lossy().into_owned()))
}

/// The effective user and group of this process (`geteuid`, `getegid`): the owner a
/// backend without files of its own (IMAP) presents.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid take no arguments and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Large allocations (128 KiB and up: a directory's names, `dovecot-uidlist`, a view's
/// message list while it is built) get pages of their own (`mmap`), returned when freed.
/// glibc otherwise raises that threshold to the largest block freed so far, after which
/// such build temporaries land in the heap between the small allocations a view keeps,
/// and the heap cannot give their pages back: measured on 20,000 Maildir messages, RSS
/// 707 -> 445 bytes per message after `ls -l`; sdbox and mdbox 305 -> 284. Setting the
/// threshold once (`mallopt(M_MMAP_THRESHOLD)`) turns the adjustment off. Does nothing
/// outside glibc.
pub fn keep_large_allocations_apart() {
    // SAFETY: mallopt only changes an allocator setting; it takes no pointers and is
    // called at start, before any other thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Raises the soft limit on open files to the hard one (as far as 1,048,576). mailfs keeps
/// descriptors open on purpose (each Maildir store the `cur/` and `new/` of the mailboxes
/// it read last, each mdbox store a few `m.N` files, inotify instances and journals), so a
/// tree of many users can hold several hundred; the soft limit a shell or service gives
/// is often 1,024. Errors are ignored: the limit then stays as it was.
pub fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the `rlimit` passed by reference,
    // which lives for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = lim.rlim_max.min(1 << 20);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Returns the allocator's free pages to the system (`malloc_trim`): after a large view
/// build, about half the daemon's resident memory is freed temporaries otherwise kept
/// (measured: 100,000 mdbox messages, RSS 61.8 MB -> 36.4 MB). Costs a walk of the free
/// lists, so it is called only after slow (full) builds. Does nothing outside glibc.
pub fn return_free_memory() {
    // SAFETY: malloc_trim only releases free memory of the process's own allocator; it
    // takes no pointers and is thread-safe in glibc.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For a test of a whole-process setting: in the test process, runs the test `name`
    /// alone in a child process, asserts that it passed, and returns false; in that child,
    /// returns true (the test then does its work there).
    fn in_child(name: &str) -> bool {
        const CHILD: &str = "MAILFS_TEST_IN_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        false
    }

    #[test]
    fn root_has_a_home_and_nobody_made_up_does_not() {
        assert!(user_home("root").is_some_and(|h| h.is_absolute()));
        assert_eq!(user_home("mailfs-no-such-user-at-all"), None);
        assert_eq!(user_home("nul\0inside"), None);
    }

    #[test]
    fn a_blocked_signal_is_waited_for() {
        // SIGUSR2 in this test thread only (the mask is per thread); raise() sends it to
        // this thread, where it stays pending until sigwait takes it.
        let set = block_signals(&[libc::SIGUSR2]);
        // SAFETY: raise takes a signal number only.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        assert_eq!(wait_signal(&set).unwrap(), libc::SIGUSR2);
        return_free_memory();
    }

    /// A soft limit on open files below the hard one is raised to it. Run in a child
    /// process of its own: the limit is the whole process's.
    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_one() {
        if !in_child("sys::process::tests::the_open_file_limit_is_raised_to_the_hard_one") {
            return;
        }
        let get = || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes the `rlimit` passed by reference.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
            lim
        };
        let hard = get().rlim_max;
        let low = libc::rlimit {
            rlim_cur: 64.min(hard),
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the `rlimit` passed by reference.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        raise_open_file_limit();
        assert_eq!(get().rlim_cur, hard.min(1 << 20));
    }

    /// After a 4 MiB block was freed, a 256 KiB one still gets pages of its own (glibc's
    /// adjustment would have put it in the heap). Run in a child process of its own: the
    /// setting and the count of mapped blocks are the whole process's.
    #[cfg(target_env = "gnu")]
    #[test]
    fn large_blocks_stay_mapped_after_a_larger_one_was_freed() {
        if !in_child("sys::process::tests::large_blocks_stay_mapped_after_a_larger_one_was_freed") {
            return;
        }
        keep_large_allocations_apart();
        drop(std::hint::black_box(vec![1u8; 4 << 20]));
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let before = unsafe { libc::mallinfo2() }.hblks;
        let block = std::hint::black_box(vec![1u8; 256 << 10]);
        // SAFETY: as above.
        let after = unsafe { libc::mallinfo2() }.hblks;
        drop(block);
        assert_eq!(after, before + 1, "the 256 KiB block was put in the heap");
    }
}

/// How long a look at `/proc/PID` may take before [`killed_by_signal`] and
/// [`same_process`] give up (see [`bounded`]).
pub const PROC_LOOK_LIMIT: Duration = Duration::from_millis(200);

/// Runs `look` on a thread of its own and waits at most `limit` for its answer.
///
/// A FUSE request can come from a process that is blocked until mailfs replies, in a
/// state where reading its `/proc/PID` files blocks too: an `execve` closes the
/// close-on-exec descriptors (each a FLUSH to mailfs) while holding the locks that
/// `/proc/PID/stat` takes, so reading it from the FLUSH handler waits for the exec, which
/// waits for the FLUSH (seen: a child's exec while its parent writes a new message hung
/// the mount). The look is left to finish on its own thread after the deadline; it
/// does, once mailfs has replied and the exec went on.
pub fn bounded<T: Send + 'static>(
    limit: Duration,
    look: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("proc-look".into())
        .spawn(move || {
            let _ = tx.send(look());
        })
        .ok()?;
    rx.recv_timeout(limit).ok()
}

/// Whether thread `tid` belongs to the process whose main thread is `tgid` (a FUSE
/// request carries the calling thread's id). `false` when it cannot be told in
/// [`PROC_LOOK_LIMIT`].
pub fn same_process(tgid: u32, tid: u32) -> bool {
    tgid == tid
        || bounded(PROC_LOOK_LIMIT, move || {
            std::fs::symlink_metadata(format!("/proc/{tgid}/task/{tid}")).is_ok()
        })
        .unwrap_or(false)
}

/// The process (thread group) thread `tid` belongs to, from `/proc/TID/status`; `tid`
/// itself when that cannot be read. Only for requests that cannot come from an exec
/// (`create`, `mknod`), see [`bounded`].
pub fn process_of(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

/// Whether process `pid` is exiting because a signal killed it (`PF_EXITING` and
/// `PF_SIGNALED` in the flags of `/proc/PID/stat`, field 9). A file a process closes as
/// it is killed (a `cp` hit by SIGKILL mid-copy) was not finished; one closed by a normal
/// `exit` (`cat x > file`) was. `false` when it cannot be told (no such process: it was
/// reaped, so whatever closed the file did not die in the middle of it; or the look took
/// longer than [`PROC_LOOK_LIMIT`]: a process in the middle of an exec, not dying).
pub fn killed_by_signal(pid: u32) -> bool {
    bounded(PROC_LOOK_LIMIT, move || killed_by_signal_now(pid)).unwrap_or(false)
}

fn killed_by_signal_now(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    const PF_SIGNALED: u64 = 0x400;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name (field 2) is in parentheses and may hold spaces and ')': the
    // fields after it start after the last ')'.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    // After the name: state (3), ppid, pgrp, session, tty_nr, tpgid, flags (9).
    after
        .split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0 && flags & PF_SIGNALED != 0)
}

#[cfg(test)]
mod killed_tests {
    use super::*;

    #[test]
    fn a_running_process_was_not_killed() {
        assert!(!killed_by_signal(std::process::id()));
        assert!(!killed_by_signal(u32::MAX));
    }

    #[test]
    fn threads_belong_to_their_process_and_no_other() {
        let me = std::process::id();
        assert_eq!(process_of(me), me);
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::gettid() } as u32;
        let other = std::thread::spawn(|| {
            // SAFETY: as above.
            unsafe { libc::gettid() as u32 }
        });
        let other_tid = other.join().unwrap();
        assert_ne!(other_tid, me);
        assert_eq!(process_of(tid), me);
        assert!(same_process(me, tid));
        assert!(!same_process(1, tid));
    }

    #[test]
    fn a_look_that_takes_too_long_is_given_up() {
        let started = std::time::Instant::now();
        let slow = bounded(Duration::from_millis(20), || {
            std::thread::sleep(Duration::from_millis(500));
            1
        });
        assert_eq!(slow, None);
        assert!(started.elapsed() < Duration::from_millis(400));
        assert_eq!(bounded(Duration::from_secs(5), || 2), Some(2));
    }
}
