//! Going to the background: `fork` with a pipe back to the parent, `setsid`, and the
//! standard streams pointed at `/dev/null` (or a log file).
//!
//! Invariant: [`fork_background`] is called while the process has a single thread (before
//! any store, watcher, logger thread or FUSE worker exists): after `fork` only the calling
//! thread exists in the child, so a lock held by another thread would stay locked for ever.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Which side of [`fork_background`] this is.
#[derive(Debug)]
pub enum Forked {
    /// The original process: read the child's report from this end (EOF when the child
    /// exits or closes it).
    Parent {
        report: io::PipeReader,
        child: libc::pid_t,
    },
    /// The background process (a new session): write its report to this end.
    Child(io::PipeWriter),
}

/// The number of threads of this process (`/proc/self/task`), if it can be read.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// Forks; the child starts a new session (`setsid`), detached from the terminal.
/// Refuses (`EBUSY`) when the process has more than one thread (see the module invariant).
pub fn fork_background() -> io::Result<Forked> {
    if thread_count().is_some_and(|n| n > 1) {
        return Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "cannot go to the background: threads already run",
        ));
    }
    let (reader, writer) = io::pipe()?;
    // SAFETY: the process has one thread (checked above), so the child gets a consistent
    // copy of every lock and allocator state; both sides only use their own pipe end.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(reader);
            // SAFETY: setsid takes no arguments; it fails only for a process group leader,
            // which a just-forked child is not.
            unsafe { libc::setsid() };
            Ok(Forked::Child(writer))
        }
        child => {
            drop(writer);
            Ok(Forked::Parent {
                report: reader,
                child,
            })
        }
    }
}

/// Reads the child's whole report (until it closes its end).
pub fn read_report(report: &mut io::PipeReader) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    report.read_to_end(&mut buf)?;
    Ok(buf)
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// Waits for process `pid` to exit if it already has or does within a second; returns
/// how it ended (`None`: still running, or not our child).
pub fn reap(pid: libc::pid_t) -> Option<ChildEnd> {
    for _ in 0..50 {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Some(if libc::WIFSIGNALED(status) {
                ChildEnd::Signaled(libc::WTERMSIG(status))
            } else {
                ChildEnd::Exited(libc::WEXITSTATUS(status))
            });
        }
        if rc == -1 {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// Points stdin at `/dev/null`, and stdout and stderr at `log` (appended to) or at
/// `/dev/null`: a background process must not hold its starter's terminal or pipes (a
/// `mount` run by a script that reads its output would otherwise never see EOF).
pub fn detach_stdio(log: Option<&Path>) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let out = match log {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?,
        None => null.try_clone()?,
    };
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (out.as_raw_fd(), 1),
        (out.as_raw_fd(), 2),
    ] {
        // SAFETY: both are open descriptors; dup2 atomically replaces `to`, which other
        // threads only ever write to (through std's stdout/stderr handles).
        if unsafe { libc::dup2(from, to) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
