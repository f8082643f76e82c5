//! A blocking IMAP4rev1 client session (RFC 3501) over `std::net` and rustls: the layer an
//! IMAP `MailStore`/`MailWriter` is built on. No FUSE, no store logic, no dependency on
//! `fs/`, `store/` or `write/` (only on `format::mutf7` for mailbox names).
//!
//! - [`codec`]: the incremental parser of server responses (literals streamed to a sink,
//!   every allocation bounded);
//! - [`mutf7`]: modified UTF-7 mailbox names (RFC 3501 section 5.1.3);
//! - [`Session`] (`session.rs`): connect (TLS, STARTTLS, authentication), then one command
//!   at a time; `transport.rs` (TCP, rustls), `items.rs` (command arguments checked, FETCH
//!   items and codes read), `types.rs` (the public data).
//!
//! Invariants: one command is in flight at a time (no pipelining); the password is only
//! ever written to the socket, never into an error, a log line or a `Debug` output; after
//! an I/O or protocol error the session is unusable (every later call fails) because the
//! response stream may be out of step.

pub mod codec;
mod items;
pub mod mutf7;
mod session;
mod transport;
mod types;

pub use session::Session;
pub use types::{
    Capabilities, CopyUid, Credentials, Endpoint, Event, FetchUpdate, ListEntry, MessageInfo,
    Qresync, Security, Selected, Status, StoreOp,
};

use std::fmt;

/// Everything an IMAP session can fail with.
#[derive(Debug)]
pub enum ImapError {
    /// The connection failed; the message says what was being done (connecting, reading a
    /// response, writing a command, writing a message to its sink, ...).
    Io(std::io::Error),
    /// TLS set-up or handshake failed (untrusted certificate, bad CA file, ...).
    Tls(String),
    /// The server sent something this client cannot parse; quotes at most 60 escaped bytes.
    Protocol(String),
    /// A tagged `NO` (RFC 3501 section 7.1.2), with its response code (`OVERQUOTA`,
    /// `NONEXISTENT`, `ALREADYEXISTS`, ... RFC 5530) and text.
    No {
        command: String,
        code: Option<String>,
        text: String,
    },
    /// A tagged `BAD` (RFC 3501 section 7.1.3).
    Bad {
        command: String,
        code: Option<String>,
        text: String,
    },
    /// The server said `BYE` (RFC 3501 section 7.1.5) and closed the connection.
    Bye(String),
    /// Authentication was refused (the server's text; never the password).
    Auth(String),
    /// This client refused to do something unsafe or impossible (a password in clear text
    /// to a remote host, STARTTLS not offered, UID EXPUNGE without UIDPLUS, an invalid UID
    /// set or flag).
    Refused(String),
    /// The message asked for is not there (expunged meanwhile): `UID FETCH` returned no body.
    NotFound(String),
}

impl fmt::Display for ImapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImapError::Io(e) => write!(f, "IMAP connection: {e}"),
            ImapError::Tls(e) => write!(f, "IMAP TLS: {e}"),
            ImapError::Protocol(e) => write!(f, "IMAP protocol error: {e}"),
            ImapError::No {
                command,
                code,
                text,
            } => match code {
                Some(c) => write!(f, "IMAP {command} failed: [{c}] {text}"),
                None => write!(f, "IMAP {command} failed: {text}"),
            },
            ImapError::Bad {
                command,
                code,
                text,
            } => match code {
                Some(c) => write!(f, "IMAP {command} rejected as bad: [{c}] {text}"),
                None => write!(f, "IMAP {command} rejected as bad: {text}"),
            },
            ImapError::Bye(t) => write!(f, "IMAP server closed the session: {t}"),
            ImapError::Auth(t) => write!(f, "IMAP authentication failed: {t}"),
            ImapError::Refused(t) => write!(f, "IMAP: refused: {t}"),
            ImapError::NotFound(t) => write!(f, "IMAP: not found: {t}"),
        }
    }
}

impl std::error::Error for ImapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImapError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl ImapError {
    /// An I/O error with what was being done.
    pub(crate) fn io(doing: &str, e: std::io::Error) -> ImapError {
        ImapError::Io(std::io::Error::new(e.kind(), format!("{doing}: {e}")))
    }

    /// The response code of a `NO`/`BAD`, if any (e.g. `OVERQUOTA`).
    pub fn code(&self) -> Option<&str> {
        match self {
            ImapError::No { code, .. } | ImapError::Bad { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// At most 60 bytes of `bytes`, escaped (`\r`, `\n`, `\xNN`), for error messages.
pub(crate) fn escape_snippet(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(60) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 60 {
        s.push_str("...");
    }
    s
}
