//! `--syslog`: log records sent to the local syslog daemon (`/dev/log`), one datagram each
//! in the traditional format `<PRI>mailfs[PID]: TARGET: MESSAGE` with facility daemon. A
//! dozen lines over a unix datagram socket, rather than a crate.
//!
//! Invariant: which records are logged is decided by the wrapped filter (RUST_LOG, -v),
//! exactly as for stderr; a send that fails is dropped (logging never blocks or fails the
//! mount).

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use log::{Level, Log, Metadata, Record};

/// syslog's facility `daemon` (3), shifted as in a PRI value.
const FACILITY_DAEMON: u8 = 3 << 3;

/// A logger that writes to a syslog socket, filtered by `filter`.
pub struct Syslog<F> {
    sock: UnixDatagram,
    filter: F,
    pid: u32,
}

impl<F: Log> Syslog<F> {
    /// Connects to the syslog socket at `path` (normally `/dev/log`).
    pub fn connect(path: &Path, filter: F) -> std::io::Result<Syslog<F>> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        Ok(Syslog {
            sock,
            filter,
            pid: std::process::id(),
        })
    }
}

/// syslog's severity for a log level.
fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl<F: Log> Log for Syslog<F> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "<{}>mailfs[{}]: {}: {}",
            FACILITY_DAEMON | severity(record.level()),
            self.pid,
            record.target(),
            record.args()
        );
        let _ = self.sock.send(line.as_bytes());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lets everything at info and above through.
    struct Info;
    impl Log for Info {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            m.level() <= Level::Info
        }
        fn log(&self, _: &Record<'_>) {}
        fn flush(&self) {}
    }

    #[test]
    fn records_reach_the_socket_with_their_priority_and_the_filter_applies() {
        let dir = std::env::temp_dir().join(format!("mailfs-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_nonblocking(true).unwrap();
        let logger = Syslog::connect(&path, Info).unwrap();
        for (level, text) in [(Level::Warn, "careful"), (Level::Debug, "hidden")] {
            logger.log(
                &Record::builder()
                    .level(level)
                    .target("mailfs::cli")
                    .args(format_args!("{text}"))
                    .build(),
            );
        }
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("<28>mailfs[{}]: mailfs::cli: careful", std::process::id())
        );
        assert!(server.recv(&mut buf).is_err(), "debug is filtered out");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
