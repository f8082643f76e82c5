//! Running the mailfs binary: the [`Mount`] guard for `mailfs mount`, expected start
//! failures, and the `ls`/`cat` subcommands.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use std::{fs, thread};

use super::{mailfs_bin, mounts_below, tool};

/// How long a mount may take to become ready, and a stop to finish.
const DEADLINE: Duration = Duration::from_secs(10);

/// A running `mailfs mount`. Dropping it sends SIGTERM, waits, asserts a clean exit
/// (status 0 and unmounted) and falls back to `fusermount3 -uz` if needed.
pub struct Mount {
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl Mount {
    /// `mailfs mount LOCATION MOUNTPOINT [extra...]`; returns once mounted. Creates the
    /// mountpoint. stderr goes to `<mountpoint>.log`.
    #[track_caller]
    pub fn start(location: &str, mountpoint: &Path, extra: &[&str]) -> Mount {
        // A dead FUSE mount (a killed daemon's) there exists but cannot be stat'ed.
        if let Err(e) = fs::create_dir_all(mountpoint)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            panic!("creating mountpoint {}: {e}", mountpoint.display());
        }
        let parent = fs::canonicalize(mountpoint.parent().expect("parent")).expect("canonical");
        let mountpoint = parent.join(mountpoint.file_name().expect("mountpoint name"));
        let log = log_path(&mountpoint);
        let child = spawn_mount(location, &mountpoint, extra, &log);
        let mut mount = Mount {
            child: Some(child),
            mountpoint,
            log,
        };
        mount.wait_ready();
        mount
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// The directory of a mailbox (`Work/Sub` -> `MP/Work/Sub`).
    pub fn mailbox(&self, mailbox: &str) -> PathBuf {
        mailbox
            .split('/')
            .fold(self.mountpoint.clone(), |p, level| p.join(level))
    }

    /// A message file, `MP/<mailbox>/<uid>.eml`.
    pub fn message(&self, mailbox: &str, uid: u32) -> PathBuf {
        self.mailbox(mailbox).join(format!("{uid}.eml"))
    }

    /// What mailfs has written to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM; panics unless it exits 0 and unmounted. Returns its log.
    #[track_caller]
    pub fn stop(mut self) -> String {
        if let Err(problem) = self.stop_inner(Some(libc::SIGTERM)) {
            panic!("{problem}");
        }
        self.log()
    }

    /// Sends `signal` to the daemon and returns at once.
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("daemon running");
        // SAFETY: the pid is our own child, not yet reaped, so it cannot have been reused.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }

    /// Waits (without signalling) for the daemon to exit; panics unless it exits 0 within
    /// the deadline and left nothing mounted. Returns its log.
    #[track_caller]
    pub fn wait_exit(mut self) -> String {
        if let Err(problem) = self.stop_inner(None) {
            panic!("{problem}");
        }
        self.log()
    }

    /// Tells the guard that the mount point now lives at `mountpoint` (a parent directory
    /// was renamed): the log moved with it, and stops check this path.
    pub fn moved_to(&mut self, mountpoint: &Path) {
        self.mountpoint = mountpoint.to_path_buf();
        self.log = log_path(mountpoint);
    }

    /// True while the daemon has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits (without signalling) for the daemon to exit, whatever its status; panics if it
    /// keeps running past the deadline. Returns its status and log.
    #[track_caller]
    pub fn wait_any_exit(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("daemon running");
        match wait_deadline(&mut child, DEADLINE) {
            Some(status) => (status, self.log()),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mailfs mount of {} did not exit within {DEADLINE:?}; stderr:\n{}",
                    self.mountpoint.display(),
                    self.log()
                );
            }
        }
    }

    /// True while the mountpoint is in the mount table.
    pub fn is_mounted(&self) -> bool {
        mounts_below(&self.mountpoint).contains(&self.mountpoint)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        let parent_dev = fs::metadata(self.mountpoint.parent().expect("parent"))
            .expect("stat parent")
            .dev();
        loop {
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!(
                    "mailfs mount exited before the mount was ready ({status}); stderr:\n{}",
                    self.log()
                );
            }
            if fs::metadata(&self.mountpoint).is_ok_and(|m| m.dev() != parent_dev) {
                return;
            }
            if Instant::now() >= deadline {
                let _ = self.stop_inner(Some(libc::SIGTERM));
                panic!(
                    "mailfs did not mount {} within {DEADLINE:?}; stderr:\n{}",
                    self.mountpoint.display(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop_inner(&mut self, signal: Option<libc::c_int>) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let mut problems = Vec::new();
        if let Some(signal) = signal {
            // SAFETY: the pid is our own child, not yet reaped, so it cannot have been reused.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
        let status = match wait_deadline(&mut child, DEADLINE) {
            Some(status) => Some(status),
            None => {
                problems.push(format!(
                    "did not exit within {DEADLINE:?} (signal {signal:?})"
                ));
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        };
        if let Some(status) = status
            && status.code() != Some(0)
        {
            problems.push(format!("exited with {status} (expected 0)"));
        }
        if mounts_below(&self.mountpoint).contains(&self.mountpoint) {
            problems.push("left the mountpoint mounted".to_string());
            let _ = Command::new(tool("fusermount3"))
                .arg("-uz")
                .arg(&self.mountpoint)
                .status();
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "mailfs mount of {}: {}; stderr:\n{}",
                self.mountpoint.display(),
                problems.join("; "),
                self.log()
            ))
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(problem) = self.stop_inner(Some(libc::SIGTERM)) {
            if thread::panicking() {
                eprintln!("{problem}");
            } else {
                panic!("{problem}");
            }
        }
    }
}

fn log_path(mountpoint: &Path) -> PathBuf {
    let mut name = mountpoint
        .file_name()
        .expect("mountpoint name")
        .to_os_string();
    name.push(".log");
    mountpoint.with_file_name(name)
}

fn spawn_mount(location: &str, mountpoint: &Path, extra: &[&str], log: &Path) -> Child {
    let stderr = fs::File::create(log).expect("creating mount log");
    Command::new(mailfs_bin())
        .arg("mount")
        .arg(location)
        .arg(mountpoint)
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stderr.try_clone().expect("dup"))
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", mailfs_bin().display()))
}

fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// How a `mailfs mount` that was expected to fail ended.
#[derive(Debug)]
pub struct StartFailure {
    pub status: ExitStatus,
    pub stderr: String,
}

/// Runs `mailfs mount` where it must refuse to start: panics if it mounts or keeps running
/// past the deadline; otherwise returns its exit status and stderr.
#[track_caller]
pub fn mount_must_fail(location: &str, mountpoint: &Path, extra: &[&str]) -> StartFailure {
    let log = log_path(mountpoint);
    let mut child = spawn_mount(location, mountpoint, extra, &log);
    let status = wait_deadline(&mut child, DEADLINE);
    let stderr = fs::read_to_string(&log).unwrap_or_default();
    let mounted = mounts_below(mountpoint).contains(&mountpoint.to_path_buf());
    if status.is_none() || mounted {
        let _ = child.kill();
        let _ = child.wait();
        if mounted {
            let _ = Command::new(tool("fusermount3"))
                .arg("-uz")
                .arg(mountpoint)
                .status();
        }
        panic!(
            "mailfs mount {location} {} should have failed, but it {}; stderr:\n{stderr}",
            mountpoint.display(),
            if mounted { "mounted" } else { "kept running" }
        );
    }
    let status = status.expect("exited");
    assert!(
        !status.success(),
        "mailfs mount {location} {} exited 0 but should have failed; stderr:\n{stderr}",
        mountpoint.display()
    );
    assert!(
        !stderr.trim().is_empty(),
        "mailfs mount {location} failed ({status}) without a message on stderr"
    );
    StartFailure { status, stderr }
}

/// Runs `mailfs <args>` to completion (for `ls` and `cat`).
pub fn mailfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(mailfs_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", mailfs_bin().display()))
}
