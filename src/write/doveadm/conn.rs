//! One connection to a doveadm server (unix socket or TCP): the handshake, then commands
//! one at a time, each answered before the next is sent (the server runs one command at a
//! time per connection; concurrency is several connections).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{self, Demux, LogLine, Outcome, Output};

/// How long a connection attempt, the handshake and each command may take before the
/// connection is given up (a hung server must not hang the syscall that waits for it
/// for ever).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What a command answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Its output values (each row's fields in order, all rows in one list).
    pub values: Vec<String>,
    /// `+` or `-CODE`.
    pub outcome: Outcome,
    /// What Dovecot logged while running it.
    pub log: Vec<LogLine>,
}

/// A byte stream to the server.
trait Stream: Read + Write + Send {}
impl Stream for UnixStream {}
impl Stream for TcpStream {}

/// A connection after a successful handshake.
pub struct Conn {
    stream: Box<dyn Stream>,
    demux: Demux,
    output: Output,
    log: Vec<LogLine>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("doveadm connection")
    }
}

impl Conn {
    /// Connects to the server's unix socket (pre-authenticated).
    pub fn unix(path: &Path) -> io::Result<Conn> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        Conn::handshake(Box::new(s), None)
    }

    /// Connects to `host:port` and logs in as `doveadm` with `password`.
    pub fn tcp(host: &str, port: u16, password: &str) -> io::Result<Conn> {
        use std::net::ToSocketAddrs;
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        let s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        s.set_nodelay(true)?;
        Conn::handshake(Box::new(s), Some(password))
    }

    fn handshake(mut stream: Box<dyn Stream>, password: Option<&str>) -> io::Result<Conn> {
        stream.write_all(protocol::CLIENT_VERSION)?;
        let mut pending = Vec::new();
        let version = read_line(&mut stream, &mut pending)?;
        if !protocol::is_server_version(&version) {
            return Err(protocol_error(format!(
                "not a doveadm 2.3 server (it said {version:?})"
            )));
        }
        let mut auth = read_line(&mut stream, &mut pending)?;
        if auth == "-" {
            let Some(password) = password else {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the server wants a password (a TCP endpoint and a secret file)",
                ));
            };
            let mut plain = b"\0doveadm\0".to_vec();
            plain.extend_from_slice(password.as_bytes());
            let mut line = b"PLAIN\t".to_vec();
            line.extend_from_slice(base64(&plain).as_bytes());
            line.push(b'\n');
            stream.write_all(&line)?;
            auth = read_line(&mut stream, &mut pending)?;
        }
        if auth != "+" {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the doveadm server refused the login (wrong doveadm_password?)",
            ));
        }
        let mut demux = Demux::default();
        demux.feed(&pending);
        Ok(Conn {
            stream,
            demux,
            output: Output::default(),
            log: Vec::new(),
        })
    }

    /// Runs one command (`line` from [`protocol::command_line`]), with `body` sent after
    /// it as a dot stream, and waits for its reply.
    pub fn run(&mut self, line: &[u8], body: Option<&[u8]>) -> io::Result<Reply> {
        match body {
            Some(body) => {
                let mut all = line.to_vec();
                all.extend_from_slice(&protocol::dot_encode(body));
                self.stream.write_all(&all)?;
            }
            None => self.stream.write_all(line)?,
        }
        self.stream.flush()?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some((channel, data)) = self.demux.next_frame() {
                match channel {
                    protocol::LOG_CHANNEL => self.log.extend(protocol::log_lines(&data)),
                    _ => self.output.feed(&data),
                }
            }
            if let Some((values, outcome)) = self.output.take_reply() {
                return Ok(Reply {
                    values,
                    outcome,
                    log: std::mem::take(&mut self.log),
                });
            }
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the doveadm server closed the connection",
                ));
            }
            self.demux.feed(&buf[..n]);
        }
    }
}

/// Reads one plain line (before multiplexing starts), keeping what came after it.
fn read_line(stream: &mut Box<dyn Stream>, pending: &mut Vec<u8>) -> io::Result<String> {
    let mut buf = [0u8; 512];
    loop {
        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        if pending.len() > 4096 {
            return Err(protocol_error("handshake line too long".into()));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the doveadm server closed the connection during the handshake",
            ));
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

fn protocol_error(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Standard base64 with padding (RFC 4648), for the PLAIN login.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(b"\0doveadm\0secret"), "AGRvdmVhZG0Ac2VjcmV0");
    }
}
