//! Dovecot's IMAP service for tests: the listener section of a private Dovecot's config,
//! and the wait until it greets.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

/// `service imap-login` with an `imap` listener on `address` (one or more, comma
/// separated) port `imap`, and an `imaps` one (TLS from the first byte) on 127.0.0.1 port
/// `imaps`; port 0 leaves a listener off.
pub fn listener_section(address: &str, imap: u16, imaps: u16) -> String {
    format!(
        "service imap-login {{\n  inet_listener imap {{\n    address = {address}\n    \
         port = {imap}\n  }}\n  inet_listener imaps {{\n    address = 127.0.0.1\n    \
         port = {imaps}\n    ssl = yes\n  }}\n}}"
    )
}

/// Waits (10 s at most) until a plain connection to 127.0.0.1:`port` gets a greeting, or
/// a TCP connection alone when `tls` (the greeting would need a handshake).
pub fn wait_until_listening(port: u16, tls: bool) {
    super::wait_for(Duration::from_secs(10), "the IMAP listener", || {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        if tls {
            return Some(());
        }
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        line.starts_with("* OK").then_some(())
    });
}
