//! Telling whoever started the mount that it is ready, or why it failed: the parent of a
//! background start (through a pipe, see `sys::daemon`) and systemd (`NOTIFY_SOCKET`,
//! sd_notify(3)'s datagram protocol, a few lines over a unix socket rather than a crate).
//!
//! Invariants: `READY=1` and the parent's "ready" are sent only after the mount answered a
//! request (a `statfs` of the mount point served by mailfs's own workers), at most once;
//! a failure is reported to the parent instead of stderr, at most once; the parent exits 0
//! only after "ready".

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use log::{debug, warn};
use parking_lot::Mutex;

use crate::sys;

/// How long the mount may take to answer its first request before a warning says so.
const READY_WARNING: Duration = Duration::from_secs(30);

/// The parent's end of the protocol: the first line is `ready`, or `error CODE` followed by
/// the message.
const READY: &str = "ready\n";

/// Where readiness goes.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The background start's pipe to its parent (taken when used).
    parent: Mutex<Option<std::io::PipeWriter>>,
    /// Where stdout and stderr go once the parent has let go (`--log-file`).
    log_file: Option<PathBuf>,
    /// systemd's notification socket (`NOTIFY_SOCKET`), if set.
    notify: Option<String>,
}

impl Readiness {
    /// Readiness for a process started in the foreground (`parent` None) or in the
    /// background; `NOTIFY_SOCKET` is read (mailfs starts no child that could inherit
    /// it).
    pub fn new(parent: Option<std::io::PipeWriter>, log_file: Option<PathBuf>) -> Readiness {
        let notify = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        Readiness {
            parent: Mutex::new(parent),
            log_file,
            notify,
        }
    }

    /// The mount answers: detach from the parent (stdio to the log file or /dev/null),
    /// tell it, and tell systemd.
    pub fn ready(&self) {
        if let Some(mut pipe) = self.parent.lock().take() {
            if let Err(e) = sys::daemon::detach_stdio(self.log_file.as_deref()) {
                warn!("detaching from the terminal: {e}");
            }
            let _ = pipe.write_all(READY.as_bytes());
        }
        self.notify("READY=1");
    }

    /// The mount is stopping (a signal, or it was unmounted).
    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// Reports a failure to the parent of a background start; false when there is none
    /// (the caller then writes it to stderr).
    pub fn failed(&self, code: u8, message: &str) -> bool {
        match self.parent.lock().take() {
            Some(mut pipe) => pipe
                .write_all(format!("error {code}\n{message}").as_bytes())
                .is_ok(),
            None => false,
        }
    }

    /// Sends one sd_notify message, if systemd listens.
    fn notify(&self, msg: &str) {
        let Some(path) = &self.notify else { return };
        if let Err(e) = sd_notify(path, msg) {
            warn!("NOTIFY_SOCKET {path}: {msg}: {e}");
        } else {
            debug!("NOTIFY_SOCKET {path}: {msg}");
        }
    }

    /// Waits (on a thread of its own) until `mountpoint` answers a `statfs` as a FUSE
    /// mount, then reports [`Readiness::ready`]. The mount's workers must be running (or
    /// about to) for it to answer. There is no deadline: readiness means the mount answers,
    /// so a mount that does not is never reported ready (a warning says so after
    /// [`READY_WARNING`]); a session that ends first ends the process.
    pub fn when_mounted(self: &std::sync::Arc<Self>, mountpoint: &Path) -> std::io::Result<()> {
        let me = self.clone();
        let mp = mountpoint.to_path_buf();
        std::thread::Builder::new()
            .name("readiness".into())
            .spawn(move || {
                let start = Instant::now();
                let mut warned = false;
                loop {
                    match sys::fs_magic(&mp) {
                        Ok(sys::FUSE_SUPER_MAGIC) => return me.ready(),
                        other if !warned && start.elapsed() > READY_WARNING => {
                            warned = true;
                            warn!(
                                "{} has not answered as a FUSE mount in {READY_WARNING:?} \
                                 ({other:?}); still waiting before reporting readiness",
                                mp.display()
                            );
                        }
                        _ => {}
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
            .map(|_| ())
    }
}

/// Sends `msg` to the sd_notify socket `path` (`@name` is an abstract socket).
fn sd_notify(path: &str, msg: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(msg.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(msg.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// The parent of a background start: waits for the child's report and turns it into this
/// process's exit: 0 once the mount answers; the child's message and code when it failed.
pub fn parent_exit(mut report: std::io::PipeReader, child: libc::pid_t) -> ExitCode {
    let text = match sys::daemon::read_report(&mut report) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("mailfs: reading the background process's report: {e}");
            return ExitCode::from(1);
        }
    };
    if text.starts_with(READY) {
        return ExitCode::SUCCESS;
    }
    if let Some(rest) = text.strip_prefix("error ") {
        let (code, message) = rest.split_once('\n').unwrap_or((rest, ""));
        eprintln!("mailfs: {message}");
        sys::daemon::reap(child);
        return ExitCode::from(code.trim().parse::<u8>().unwrap_or(1).max(1));
    }
    let how = match sys::daemon::reap(child) {
        Some(sys::daemon::ChildEnd::Signaled(sig)) => format!("was killed by signal {sig}"),
        Some(sys::daemon::ChildEnd::Exited(code)) => format!("exited with status {code}"),
        None => "closed its report".to_string(),
    };
    eprintln!("mailfs: the background process {how} before the mount was ready");
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_notify_reaches_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("mailfs-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let server = UnixDatagram::bind(&path).unwrap();
        sd_notify(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("mailfs-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        sd_notify(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
