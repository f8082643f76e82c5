//! The public data of the IMAP client: where and how to connect, what the server
//! reported. Plain values, no I/O.
//!
//! Invariant: nothing here holds a password in its `Debug` output ([`Credentials`]).

use std::path::PathBuf;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `imap://`: clear text; STARTTLS anyway when the host is not loopback and the server
    /// offers it (else a password is refused unless [`Endpoint::allow_plaintext`]).
    Plain,
    /// `imaps://`: TLS from the first byte (RFC 8314).
    Tls,
    /// `imap://` with STARTTLS required (RFC 3501 section 6.2.1).
    StartTls,
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// PEM file of the CAs to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Allow a password over an unencrypted connection to a non-loopback host.
    pub allow_plaintext: bool,
}

/// Who to log in as. `authzid` is the user to act as when `user` is a master/admin user
/// (SASL PLAIN, RFC 4616 section 2). `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub authzid: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("authzid", &self.authzid)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The server's capabilities (RFC 3501 section 7.2.1), as last announced.
#[derive(Debug, Clone, Default)]
pub struct Capabilities(pub(super) Vec<String>);

impl Capabilities {
    /// Whether `name` is announced (case-insensitive), e.g. `has("QRESYNC")`,
    /// `has("AUTH=PLAIN")`.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|c| c.eq_ignore_ascii_case(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// One `LIST` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The name in UTF-8 (decoded from modified UTF-7 unless `UTF8=ACCEPT` is enabled).
    pub name: String,
    pub separator: Option<char>,
    /// As sent, e.g. `\Noselect`, `\HasChildren`, `\NonExistent`.
    pub attributes: Vec<String>,
}

/// `(QRESYNC (uidvalidity modseq))` for `SELECT` (RFC 7162 section 3.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qresync {
    pub uid_validity: u32,
    pub modseq: u64,
}

/// What `SELECT`/`EXAMINE` reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selected {
    pub uid_validity: u32,
    pub uid_next: Option<u32>,
    pub exists: u32,
    /// `None` with `[NOMODSEQ]` or without CONDSTORE.
    pub highest_modseq: Option<u64>,
    /// QRESYNC: `VANISHED (EARLIER)` UIDs (may include UIDs never seen by this client).
    pub vanished: Vec<u32>,
    /// QRESYNC: messages changed since the given modseq. Only `uid`, `flags` and `modseq`
    /// are filled in (the server sends no more); `internal_date` and `size` are 0.
    pub changed: Vec<MessageInfo>,
    /// `[READ-ONLY]`.
    pub read_only: bool,
    /// The untagged `FLAGS` list (RFC 3501 section 7.2.6): the flags and keywords defined
    /// in the mailbox, in the server's order (Dovecot's: system flags, then keywords in
    /// the mailbox's keyword index order).
    pub flags: Vec<String>,
}

/// `STATUS` of a mailbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub messages: u32,
    pub uid_validity: u32,
    pub uid_next: u32,
    /// When the server has CONDSTORE (RFC 7162 section 3.1.9).
    pub highest_modseq: Option<u64>,
}

/// One message's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageInfo {
    pub uid: u32,
    /// As sent (`\Seen`, `$Label1`, `\Recent` too).
    pub flags: Vec<String>,
    /// INTERNALDATE as unix seconds (its zone applied).
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u64,
    /// Dovecot's `X-GUID`, else `EMAILID` (RFC 8474).
    pub guid: Option<String>,
    pub modseq: Option<u64>,
}

/// `UID STORE` operation (RFC 3501 section 6.4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Replace,
    Add,
    Remove,
}

/// `[COPYUID uidvalidity src dst]` (RFC 4315 section 3), sets expanded pairwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyUid {
    pub uid_validity: u32,
    pub src: Vec<u32>,
    pub dst: Vec<u32>,
}

/// A `FETCH` the server sent on its own (a flag change, RFC 3501 section 7.4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchUpdate {
    pub seq: u32,
    pub uid: Option<u32>,
    pub flags: Option<Vec<String>>,
    pub modseq: Option<u64>,
}

/// Something that changed: in the selected mailbox (from IDLE or NOOP), or in any
/// mailbox (NOTIFY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exists(u32),
    /// A sequence number (RFC 3501 section 7.4.1); not sent once QRESYNC is enabled.
    Expunge(u32),
    /// UIDs (RFC 7162 section 3.2.10).
    Vanished(Vec<u32>),
    Fetch(FetchUpdate),
    /// NOTIFY (RFC 5465 section 5.1): a `STATUS` of this mailbox (messages, flags or
    /// UIDVALIDITY changed there).
    MailboxStatus(String),
    /// NOTIFY (RFC 5465 section 5.4): a `LIST` of this mailbox (created, deleted, renamed
    /// to this name, or its attributes changed).
    MailboxListed(String),
    /// `RECENT`, `OK Still here`, ...
    Other,
    /// Events were dropped (too many queued): resynchronise.
    Overflow,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            user: "bob".into(),
            authzid: None,
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
