//! [`Session`]: one authenticated IMAP4rev1 connection (RFC 3501), commands one at a time.
//!
//! Invariants:
//! - tags are `a1`, `a2`, ... and every command is read up to its tagged response before
//!   the next one is sent; untagged responses arriving meanwhile are collected by the
//!   command that was running (capabilities are always recorded);
//! - a password goes only to the socket, and only over TLS or to a loopback host unless
//!   [`Endpoint::allow_plaintext`]; no error or log line carries a command's arguments;
//! - after an I/O or protocol error the session is marked broken and every later command
//!   fails at once (the response stream may be out of step);
//! - the socket's read timeout is the `timeout` given to [`Session::connect`], except
//!   inside [`Session::idle`], which polls in slices of at most 200 ms.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::codec::{self, BodySink, Code, Response, StatusResponse, Untagged, Value};
use super::{ImapError, escape_snippet, mutf7};

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
pub struct Capabilities(Vec<String>);

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

/// Something that changed in the selected mailbox (from IDLE or NOOP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exists(u32),
    /// A sequence number (RFC 3501 section 7.4.1); not sent once QRESYNC is enabled.
    Expunge(u32),
    /// UIDs (RFC 7162 section 3.2.10).
    Vanished(Vec<u32>),
    Fetch(FetchUpdate),
    /// `RECENT`, `OK Still here`, ...
    Other,
    /// Events were dropped (too many queued): resynchronise.
    Overflow,
}

/// The most UIDs a `VANISHED` or `COPYUID` set is expanded to.
const MAX_SET: usize = 1 << 24;

/// The most unsolicited events kept for [`Session::take_events`].
const MAX_PENDING: usize = 100_000;

/// The longest slice of an IDLE wait between two `stop` checks (and reads).
const IDLE_SLICE: Duration = Duration::from_millis(200);

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One piece of a command line.
#[derive(Clone, Copy)]
enum Arg<'a> {
    /// Sent as is (keywords, numbers, sets, lists this module built and checked).
    Raw(&'a str),
    /// An astring: a quoted string, or a literal when it holds CR, LF or (without
    /// `UTF8=ACCEPT`) 8-bit bytes.
    Str(&'a [u8]),
    /// Always a literal (APPEND's message).
    Literal(&'a [u8]),
    /// End the line, wait for a continuation request, then send these bytes (a SASL
    /// response, RFC 3501 section 6.2.2).
    AfterContinue(&'a [u8]),
}

/// An authenticated IMAP session.
pub struct Session {
    conn: BufReader<Stream>,
    caps: Capabilities,
    tag: u32,
    timeout: Duration,
    utf8: bool,
    qresync: bool,
    /// Whether `FETCH X-GUID` works (unknown until tried: Dovecot does not announce it).
    xguid: Option<bool>,
    /// Unsolicited changes seen during commands, for [`Session::take_events`].
    pending: Vec<Event>,
    broken: bool,
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn tls_config(ep: &Endpoint) -> Result<Arc<rustls::ClientConfig>, ImapError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match &ep.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ImapError::Tls(format!("reading {}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| ImapError::Tls(format!("reading {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ImapError::Tls(format!("a CA in {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(ImapError::Tls(format!(
                    "no certificate in {}",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ImapError::Tls(format!(
                    "no system CA certificates found ({} errors)",
                    found.errors.len()
                )));
            }
        }
    }
    // ring, the provider ureq already uses: one crypto provider in the binary. rustls
    // 0.23.48 deprecates it only for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImapError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Wraps `tcp` in TLS and completes the handshake (so certificate errors surface here).
fn tls_wrap(ep: &Endpoint, mut tcp: TcpStream) -> Result<Stream, ImapError> {
    let name = rustls::pki_types::ServerName::try_from(
        ep.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| ImapError::Tls(format!("server name {:?}: {e}", ep.host)))?;
    let mut conn = rustls::ClientConnection::new(tls_config(ep)?, name)
        .map_err(|e| ImapError::Tls(e.to_string()))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return Err(match e.kind() {
                io::ErrorKind::InvalidData => ImapError::Tls(format!("handshake: {e}")),
                _ => ImapError::io("TLS handshake", e),
            });
        }
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

fn connect_tcp(ep: &Endpoint, timeout: Duration) -> Result<TcpStream, ImapError> {
    let host = ep.host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, ep.port)
        .to_socket_addrs()
        .map_err(|e| ImapError::io(&format!("resolving {}", ep.host), e))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                let set = s
                    .set_read_timeout(Some(timeout))
                    .and_then(|()| s.set_write_timeout(Some(timeout)))
                    .and_then(|()| s.set_nodelay(true));
                set.map_err(|e| ImapError::io("setting socket options", e))?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"));
    Err(ImapError::io(
        &format!("connecting to {}:{}", ep.host, ep.port),
        e,
    ))
}

/// Checks a UID set (`1:3,7,9:*`, RFC 3501 section 9 `sequence-set`) before it goes on a
/// command line.
fn check_set(set: &str) -> Result<(), ImapError> {
    let ok = !set.is_empty()
        && set.split(',').all(|part| {
            let (a, b) = part.split_once(':').unwrap_or((part, part));
            [a, b].iter().all(|n| {
                *n == "*"
                    || (!n.is_empty() && n.len() <= 10 && n.bytes().all(|c| c.is_ascii_digit()))
            })
        });
    if ok {
        Ok(())
    } else {
        Err(ImapError::Refused(format!(
            "invalid UID set \"{}\"",
            escape_snippet(set.as_bytes())
        )))
    }
}

/// Checks flags (`\Seen`, keywords) and builds `(f1 f2)` (RFC 3501 section 9 `flag-list`).
fn flag_list(flags: &[&str]) -> Result<String, ImapError> {
    for f in flags {
        let body = f.strip_prefix('\\').unwrap_or(f);
        let ok = !body.is_empty()
            && body.bytes().all(|b| {
                (0x21..0x7f).contains(&b)
                    && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
            });
        if !ok {
            return Err(ImapError::Refused(format!(
                "invalid flag \"{}\"",
                escape_snippet(f.as_bytes())
            )));
        }
    }
    Ok(format!("({})", flags.join(" ")))
}

/// Parses an INTERNALDATE `dd-Mon-yyyy hh:mm:ss +zzzz` (RFC 3501 section 9 `date-time`)
/// into unix seconds.
pub(crate) fn parse_internal_date(s: &str) -> Option<i64> {
    let (date, rest) = s.trim_start().split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let mut d = date.split('-');
    let day: i64 = d.next()?.parse().ok()?;
    let month = d.next()?;
    let year: i64 = d.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as i64 + 1;
    let mut t = time.split(':');
    let (h, m, sec): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    let zone = zone.as_bytes();
    if zone.len() != 5 || !zone[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sign = match zone[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let num = |i: usize| i64::from(zone[i] - b'0') * 10 + i64::from(zone[i + 1] - b'0');
    let offset = sign * (num(1) * 3600 + num(3) * 60);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec - offset)
}

fn atoms(v: &Value) -> Option<Vec<String>> {
    v.as_list()?
        .iter()
        .map(|f| f.as_atom().map(str::to_string))
        .collect()
}

/// The single number of a `MODSEQ (n)` item.
fn modseq(v: &Value) -> Option<u64> {
    v.as_list()?.first()?.as_u64()
}

/// Builds a [`MessageInfo`] from FETCH items; `None` without a UID.
fn message_info(items: &[(String, Value)]) -> Result<Option<MessageInfo>, ImapError> {
    let mut info = MessageInfo::default();
    let mut uid = None;
    let bad = |name: &str| ImapError::Protocol(format!("bad {name} in a FETCH response"));
    for (name, v) in items {
        match name.as_str() {
            "UID" => uid = Some(v.as_u32().ok_or_else(|| bad(name))?),
            "FLAGS" => info.flags = atoms(v).ok_or_else(|| bad(name))?,
            "INTERNALDATE" => {
                let s = v.as_bytes().ok_or_else(|| bad(name))?;
                info.internal_date = std::str::from_utf8(s)
                    .ok()
                    .and_then(parse_internal_date)
                    .ok_or_else(|| bad(name))?;
            }
            "RFC822.SIZE" => info.size = v.as_u64().ok_or_else(|| bad(name))?,
            "X-GUID" => {
                if let Some(g) = v.as_bytes() {
                    info.guid = Some(String::from_utf8_lossy(g).into_owned());
                }
            }
            "EMAILID" if info.guid.is_none() => {
                let id = v
                    .as_list()
                    .and_then(|l| l.first())
                    .and_then(Value::as_bytes);
                info.guid = id.map(|g| String::from_utf8_lossy(g).into_owned());
            }
            "MODSEQ" => info.modseq = Some(modseq(v).ok_or_else(|| bad(name))?),
            _ => {}
        }
    }
    Ok(uid.map(|uid| MessageInfo { uid, ..info }))
}

fn event(u: &Untagged) -> Result<Event, ImapError> {
    Ok(match u {
        Untagged::Exists(n) => Event::Exists(*n),
        Untagged::Expunge(n) => Event::Expunge(*n),
        Untagged::Vanished { uids, .. } => Event::Vanished(codec::expand_set(uids, MAX_SET)?),
        Untagged::Fetch { seq, items } => {
            let mut f = FetchUpdate {
                seq: *seq,
                ..FetchUpdate::default()
            };
            for (name, v) in items {
                match name.as_str() {
                    "UID" => f.uid = v.as_u32(),
                    "FLAGS" => f.flags = atoms(v),
                    "MODSEQ" => f.modseq = modseq(v),
                    _ => {}
                }
            }
            Event::Fetch(f)
        }
        _ => Event::Other,
    })
}

fn copyuid(code: &Code) -> Result<CopyUid, ImapError> {
    let mut parts = code.args.split(' ');
    let bad = || {
        ImapError::Protocol(format!(
            "bad COPYUID \"{}\"",
            escape_snippet(code.args.as_bytes())
        ))
    };
    let uv = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let src = codec::expand_set(parts.next().ok_or_else(bad)?, MAX_SET)?;
    let dst = codec::expand_set(parts.next().ok_or_else(bad)?, MAX_SET)?;
    if src.len() != dst.len() {
        return Err(bad());
    }
    Ok(CopyUid {
        uid_validity: uv,
        src,
        dst,
    })
}

/// A command's handler for the untagged responses it does not collect: handed back, so
/// that changes among them are queued ([`Session::take_events`]).
fn keep(u: Untagged) -> Result<Option<Untagged>, ImapError> {
    Ok(Some(u))
}

fn no_or_bad(command: &str, state: StatusResponse) -> ImapError {
    let code = state.code.map(|c| c.name);
    match state.status {
        codec::Status::Bad => ImapError::Bad {
            command: command.to_string(),
            code,
            text: state.text,
        },
        _ => ImapError::No {
            command: command.to_string(),
            code,
            text: state.text,
        },
    }
}

impl Session {
    /// Connects, protects the connection as `ep.security` asks, and authenticates:
    /// `AUTHENTICATE PLAIN` (RFC 4616; initial response with SASL-IR, RFC 4959) when the
    /// server offers `AUTH=PLAIN`, else `LOGIN` (RFC 3501 section 6.2.3).
    pub fn connect(
        ep: &Endpoint,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<Session, ImapError> {
        let tcp = connect_tcp(ep, timeout)?;
        let stream = match ep.security {
            Security::Tls => tls_wrap(ep, tcp)?,
            Security::Plain | Security::StartTls => Stream::Plain(tcp),
        };
        let mut s = Session {
            conn: BufReader::with_capacity(64 * 1024, stream),
            caps: Capabilities::default(),
            tag: 0,
            timeout,
            utf8: false,
            qresync: false,
            xguid: None,
            pending: Vec::new(),
            broken: false,
        };
        let preauth = s.greeting()?;
        if s.caps.0.is_empty() {
            s.capability()?;
        }
        let loopback = is_loopback(&ep.host);
        if !s.encrypted() {
            let want_tls = match ep.security {
                Security::StartTls => true,
                Security::Plain => !loopback && !preauth,
                Security::Tls => false,
            };
            if want_tls {
                if preauth {
                    return Err(ImapError::Refused(
                        "STARTTLS is impossible after PREAUTH".into(),
                    ));
                }
                if s.caps.has("STARTTLS") {
                    s.starttls(ep)?;
                } else if ep.security == Security::StartTls {
                    return Err(ImapError::Refused(format!(
                        "{} does not offer STARTTLS",
                        ep.host
                    )));
                }
            }
        }
        if !preauth {
            if !s.encrypted() && !loopback && !ep.allow_plaintext {
                return Err(ImapError::Refused(format!(
                    "not sending a password unencrypted to {} (no TLS; allow_plaintext is off)",
                    ep.host
                )));
            }
            s.authenticate(creds)?;
        }
        Ok(s)
    }

    /// Whether the connection is protected by TLS (imaps or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.encrypted()
    }

    fn encrypted(&self) -> bool {
        matches!(self.conn.get_ref(), Stream::Tls(_))
    }

    /// The greeting (RFC 3501 section 7.1): true for PREAUTH.
    fn greeting(&mut self) -> Result<bool, ImapError> {
        match self.read(None)? {
            Response::Untagged(Untagged::State(st)) => {
                if let Some(code) = &st.code
                    && code.name == "CAPABILITY"
                {
                    self.caps = Capabilities(code.args.split(' ').map(str::to_string).collect());
                }
                match st.status {
                    codec::Status::Ok => Ok(false),
                    codec::Status::Preauth => Ok(true),
                    codec::Status::Bye => Err(ImapError::Bye(st.text)),
                    _ => Err(ImapError::Protocol(format!(
                        "unexpected greeting {:?}",
                        st.text
                    ))),
                }
            }
            r => Err(ImapError::Protocol(format!("unexpected greeting {r:?}"))),
        }
    }

    fn capability(&mut self) -> Result<(), ImapError> {
        self.run("CAPABILITY", &[], None, &mut keep)?;
        Ok(())
    }

    /// STARTTLS (RFC 3501 section 6.2.1); capabilities are asked for again afterwards.
    fn starttls(&mut self, ep: &Endpoint) -> Result<(), ImapError> {
        self.run("STARTTLS", &[], None, &mut keep)?;
        if !self.conn.buffer().is_empty() {
            // Bytes the server sent before the handshake would be injected into the TLS
            // session's plaintext (CVE-2011-0411 style).
            return Err(ImapError::Protocol(
                "data after the STARTTLS response".into(),
            ));
        }
        let placeholder = BufReader::new(Stream::Plain(
            self.conn
                .get_ref()
                .tcp()
                .try_clone()
                .map_err(|e| ImapError::io("STARTTLS", e))?,
        ));
        let old = std::mem::replace(&mut self.conn, placeholder);
        let Stream::Plain(tcp) = old.into_inner() else {
            return Err(ImapError::Protocol("STARTTLS on a TLS connection".into()));
        };
        self.conn = BufReader::with_capacity(64 * 1024, tls_wrap(ep, tcp)?);
        self.caps = Capabilities::default();
        self.capability()
    }

    fn authenticate(&mut self, creds: &Credentials) -> Result<(), ImapError> {
        let auth_err = |e: ImapError| match e {
            ImapError::No { text, .. } | ImapError::Bad { text, .. } => ImapError::Auth(text),
            e => e,
        };
        if self.caps.has("AUTH=PLAIN") {
            // RFC 4616 section 2: message = [authzid] NUL authcid NUL passwd.
            let mut msg = Vec::new();
            msg.extend_from_slice(creds.authzid.as_deref().unwrap_or("").as_bytes());
            msg.push(0);
            msg.extend_from_slice(creds.user.as_bytes());
            msg.push(0);
            msg.extend_from_slice(creds.password.as_bytes());
            let b64 = base64::engine::general_purpose::STANDARD.encode(&msg);
            let args = if self.caps.has("SASL-IR") {
                [Arg::Raw("PLAIN"), Arg::Raw(&b64)]
            } else {
                [Arg::Raw("PLAIN"), Arg::AfterContinue(b64.as_bytes())]
            };
            self.run("AUTHENTICATE", &args, None, &mut keep)
                .map_err(auth_err)?;
        } else {
            if creds.authzid.is_some() {
                return Err(ImapError::Refused(
                    "an authorization identity needs AUTH=PLAIN".into(),
                ));
            }
            if self.caps.has("LOGINDISABLED") {
                return Err(ImapError::Refused(
                    "the server disables LOGIN and offers no AUTH=PLAIN".into(),
                ));
            }
            let args = [
                Arg::Str(creds.user.as_bytes()),
                Arg::Str(creds.password.as_bytes()),
            ];
            self.run("LOGIN", &args, None, &mut keep)
                .map_err(auth_err)?;
        }
        // RFC 3501 section 6.2.2/6.2.3: capabilities may change after authentication; the
        // tagged OK usually carries them (recorded by `run`), else ask.
        if !self.caps.has("IMAP4rev1") {
            self.capability()?;
        }
        Ok(())
    }

    /// The capabilities the server last announced.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// `ENABLE` (RFC 5161), e.g. `QRESYNC` (RFC 7162 section 3.2.3) or `UTF8=ACCEPT`
    /// (RFC 6855); returns what the server enabled.
    pub fn enable(&mut self, caps: &[&str]) -> Result<Vec<String>, ImapError> {
        if !self.caps.has("ENABLE") {
            return Err(ImapError::Refused("the server has no ENABLE".into()));
        }
        let line = caps
            .iter()
            .map(|c| {
                if c.is_empty()
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'(' && b != b')')
                {
                    Err(ImapError::Refused(format!("invalid capability {c:?}")))
                } else {
                    Ok(*c)
                }
            })
            .collect::<Result<Vec<&str>, _>>()?
            .join(" ");
        let mut enabled = Vec::new();
        self.run("ENABLE", &[Arg::Raw(&line)], None, &mut |u| match u {
            Untagged::Enabled(e) => {
                enabled.extend(e);
                Ok(None)
            }
            u => Ok(Some(u)),
        })?;
        for e in &enabled {
            if e.eq_ignore_ascii_case("UTF8=ACCEPT") {
                self.utf8 = true;
            }
            if e.eq_ignore_ascii_case("QRESYNC") {
                self.qresync = true;
            }
        }
        Ok(enabled)
    }

    /// A mailbox name as sent: UTF-8 with `UTF8=ACCEPT` (RFC 6855 section 3), else
    /// modified UTF-7.
    fn wire_name(&self, name: &str) -> Vec<u8> {
        if self.utf8 {
            name.as_bytes().to_vec()
        } else {
            mutf7::encode(name).into_bytes()
        }
    }

    fn decode_name(&self, raw: &[u8]) -> Result<String, ImapError> {
        if self.utf8 {
            String::from_utf8(raw.to_vec()).map_err(|_| {
                ImapError::Protocol(format!("non-UTF-8 mailbox name {}", escape_snippet(raw)))
            })
        } else {
            mutf7::decode(raw)
        }
    }

    /// `LIST "" "*"` (RFC 3501 section 6.3.8): every mailbox, names decoded.
    pub fn list(&mut self) -> Result<Vec<ListEntry>, ImapError> {
        let mut raw = Vec::new();
        self.run("LIST", &[Arg::Raw("\"\" \"*\"")], None, &mut |u| match u {
            Untagged::List {
                attributes,
                separator,
                name,
            } => {
                raw.push((name, separator, attributes));
                Ok(None)
            }
            u => Ok(Some(u)),
        })?;
        raw.into_iter()
            .map(|(name, separator, attributes)| {
                Ok(ListEntry {
                    name: self.decode_name(&name)?,
                    separator,
                    attributes,
                })
            })
            .collect()
    }

    /// `SELECT` (or `EXAMINE` when `read_only`; RFC 3501 sections 6.3.1, 6.3.2), with
    /// `QRESYNC` parameters when given (RFC 7162 section 3.2.5; QRESYNC must have been
    /// enabled), else `(CONDSTORE)` when the server has it, so that `highest_modseq` is
    /// reported.
    pub fn select(
        &mut self,
        mailbox: &str,
        read_only: bool,
        qresync: Option<Qresync>,
    ) -> Result<Selected, ImapError> {
        let command = if read_only { "EXAMINE" } else { "SELECT" };
        let name = self.wire_name(mailbox);
        let params;
        let mut args = vec![Arg::Str(&name)];
        if let Some(q) = qresync {
            if !self.qresync {
                return Err(ImapError::Refused(
                    "SELECT with QRESYNC parameters needs ENABLE QRESYNC first".into(),
                ));
            }
            params = format!("(QRESYNC ({} {}))", q.uid_validity, q.modseq);
            args.push(Arg::Raw(&params));
        } else if self.caps.has("CONDSTORE") && !self.qresync {
            // RFC 7162 section 3.1.8: the CONDSTORE parameter makes the server report
            // HIGHESTMODSEQ (QRESYNC, once enabled, implies it).
            args.push(Arg::Raw("(CONDSTORE)"));
        }
        // Events of the previous mailbox mean nothing any more.
        self.pending.clear();
        let mut sel = Selected::default();
        let mut uid_validity = None;
        let mut changed = Vec::new();
        let state = self.run(command, &args, None, &mut |u| {
            match u {
                Untagged::Exists(n) => sel.exists = n,
                Untagged::Vanished { uids, .. } => {
                    sel.vanished.extend(codec::expand_set(&uids, MAX_SET)?)
                }
                Untagged::Fetch { items, .. } => {
                    if let Some(info) = message_info(&items)? {
                        changed.push(info);
                    }
                }
                Untagged::State(StatusResponse {
                    code: Some(code), ..
                }) => match code.name.as_str() {
                    "UIDVALIDITY" => {
                        uid_validity = code.number(0).and_then(|n| u32::try_from(n).ok())
                    }
                    "UIDNEXT" => sel.uid_next = code.number(0).and_then(|n| u32::try_from(n).ok()),
                    "HIGHESTMODSEQ" => sel.highest_modseq = code.number(0),
                    _ => {}
                },
                _ => {}
            }
            Ok(None)
        })?;
        if let Some(code) = &state.code {
            sel.read_only = code.name == "READ-ONLY";
        }
        sel.changed = changed;
        sel.uid_validity = uid_validity
            .ok_or_else(|| ImapError::Protocol(format!("{command} without UIDVALIDITY")))?;
        Ok(sel)
    }

    /// `STATUS mailbox (MESSAGES UIDNEXT UIDVALIDITY [HIGHESTMODSEQ])` (RFC 3501 section
    /// 6.3.10; HIGHESTMODSEQ with CONDSTORE, RFC 7162 section 3.1.9).
    pub fn status(&mut self, mailbox: &str) -> Result<Status, ImapError> {
        let name = self.wire_name(mailbox);
        let condstore = self.caps.has("CONDSTORE");
        let items = if condstore {
            "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"
        } else {
            "(MESSAGES UIDNEXT UIDVALIDITY)"
        };
        let mut got: Vec<(String, u64)> = Vec::new();
        self.run(
            "STATUS",
            &[Arg::Str(&name), Arg::Raw(items)],
            None,
            &mut |u| match u {
                Untagged::MailboxStatus { items, .. } => {
                    got.extend(items);
                    Ok(None)
                }
                u => Ok(Some(u)),
            },
        )?;
        let find = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        let need32 = |k: &str| {
            find(k)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| ImapError::Protocol(format!("STATUS without {k}")))
        };
        Ok(Status {
            messages: need32("MESSAGES")?,
            uid_validity: need32("UIDVALIDITY")?,
            uid_next: need32("UIDNEXT")?,
            highest_modseq: find("HIGHESTMODSEQ"),
        })
    }

    /// `UID FETCH set (UID FLAGS INTERNALDATE RFC822.SIZE [X-GUID|EMAILID] [MODSEQ])
    /// [(CHANGEDSINCE n)]` (RFC 3501 section 6.4.8, RFC 7162 section 3.1.4). Unsolicited
    /// FETCH responses (flag changes without the requested items) are queued as events
    /// ([`Session::take_events`]), not returned. `X-GUID` (Dovecot) is asked for unless
    /// the server rejected it once, or `EMAILID` (RFC 8474) when the server announces
    /// OBJECTID.
    pub fn fetch_meta(
        &mut self,
        uid_set: &str,
        changed_since: Option<u64>,
    ) -> Result<Vec<MessageInfo>, ImapError> {
        Ok(self.fetch_inner(uid_set, changed_since, false)?.0)
    }

    /// Like [`Session::fetch_meta`] with `(CHANGEDSINCE since VANISHED)` (RFC 7162 section
    /// 3.2.6; QRESYNC must be enabled): the messages changed since `since`, and the UIDs of
    /// `uid_set` expunged since then (the server may include UIDs that never existed).
    pub fn fetch_changes(
        &mut self,
        uid_set: &str,
        since: u64,
    ) -> Result<(Vec<MessageInfo>, Vec<u32>), ImapError> {
        if !self.qresync {
            return Err(ImapError::Refused(
                "CHANGEDSINCE ... VANISHED needs ENABLE QRESYNC first".into(),
            ));
        }
        self.fetch_inner(uid_set, Some(since), true)
    }

    fn fetch_inner(
        &mut self,
        uid_set: &str,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> Result<(Vec<MessageInfo>, Vec<u32>), ImapError> {
        check_set(uid_set)?;
        let condstore = self.caps.has("CONDSTORE");
        if changed_since.is_some() && !condstore {
            return Err(ImapError::Refused("CHANGEDSINCE needs CONDSTORE".into()));
        }
        loop {
            let guid_item = if self.caps.has("OBJECTID") && !self.caps.has("X-GUID") {
                " EMAILID"
            } else if self.xguid != Some(false) {
                " X-GUID"
            } else {
                ""
            };
            let mut items = format!("(UID FLAGS INTERNALDATE RFC822.SIZE{guid_item}");
            if condstore {
                items.push_str(" MODSEQ");
            }
            items.push(')');
            if let Some(n) = changed_since {
                let v = if vanished { " VANISHED" } else { "" };
                items.push_str(&format!(" (CHANGEDSINCE {n}{v})"));
            }
            let mut out = Vec::new();
            let mut gone = Vec::new();
            let r = self.run(
                "UID FETCH",
                &[Arg::Raw("FETCH"), Arg::Raw(uid_set), Arg::Raw(&items)],
                None,
                &mut |u| match u {
                    Untagged::Fetch { items, .. }
                        if items.iter().any(|(n, _)| n == "RFC822.SIZE") =>
                    {
                        out.extend(message_info(&items)?);
                        Ok(None)
                    }
                    // RFC 7162 section 3.2.6: the answer to VANISHED is VANISHED (EARLIER).
                    Untagged::Vanished {
                        earlier: true,
                        uids,
                    } if vanished => {
                        gone.extend(codec::expand_set(&uids, MAX_SET)?);
                        Ok(None)
                    }
                    u => Ok(Some(u)),
                },
            );
            match r {
                // Dovecot answers X-GUID without announcing it; other servers may reject
                // it: then ask again without it, and never again in this session.
                Err(ImapError::Bad { .. }) if guid_item == " X-GUID" && self.xguid.is_none() => {
                    self.xguid = Some(false);
                }
                Err(e) => return Err(e),
                Ok(_) => {
                    if guid_item == " X-GUID" {
                        self.xguid = Some(true);
                    }
                    return Ok((out, gone));
                }
            }
        }
    }

    /// `UID FETCH uid (UID BODY.PEEK[])` (RFC 3501 section 6.4.5: PEEK leaves `\Seen`
    /// alone), the message streamed to `sink` byte-exact; returns its size.
    /// [`ImapError::NotFound`] when the server sends no body (the message is gone).
    pub fn fetch_body(&mut self, uid: u32, sink: &mut dyn Write) -> Result<u64, ImapError> {
        let uid_s = uid.to_string();
        let mut body = BodySink::new(sink);
        self.run(
            "UID FETCH",
            &[
                Arg::Raw("FETCH"),
                Arg::Raw(&uid_s),
                Arg::Raw("(UID BODY.PEEK[])"),
            ],
            Some(&mut body),
            &mut |u| match u {
                Untagged::Fetch { items, .. }
                    if items.iter().any(|(n, _)| n.starts_with("BODY[")) =>
                {
                    Ok(None)
                }
                u => Ok(Some(u)),
            },
        )?;
        if let Some(e) = body.error.take() {
            return Err(ImapError::io("writing the message to its sink", e));
        }
        if !body.done {
            return Err(ImapError::NotFound(format!("no body for UID {uid}")));
        }
        Ok(body.written)
    }

    /// `IDLE` (RFC 2177) until an `EXISTS`, `EXPUNGE`, `VANISHED` or `FETCH` arrives, `wait`
    /// passes or `stop()` is true (checked at least every 200 ms); then `DONE`. Returns
    /// what arrived; returns at once, without IDLE, when earlier commands queued changes
    /// ([`Session::take_events`]).
    pub fn idle(
        &mut self,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<Event>, ImapError> {
        if !self.caps.has("IDLE") {
            return Err(ImapError::Refused("the server has no IDLE".into()));
        }
        self.usable()?;
        if !self.pending.is_empty() {
            return Ok(self.take_events());
        }
        let tag = self.send(&[Arg::Raw("IDLE")])?;
        let mut events = Vec::new();
        let deadline = Instant::now() + wait;
        // Up to the continuation request.
        loop {
            match self.read(None)? {
                Response::Continue(_) => break,
                Response::Untagged(u) => events.push(self.untagged_event(u)?),
                Response::Tagged { tag: t, state } if t == tag => {
                    return match state.status {
                        codec::Status::Ok => Ok(events),
                        _ => Err(no_or_bad("IDLE", state)),
                    };
                }
                r => return Err(self.poison(format!("unexpected {r:?} during IDLE"))),
            }
        }
        let mut done = false;
        loop {
            let wake = events.iter().any(|e| !matches!(e, Event::Other));
            if !done && (wake || stop() || Instant::now() >= deadline) {
                self.write_all(b"DONE\r\n")?;
                done = true;
            }
            if !done && self.conn.buffer().is_empty() {
                let slice = deadline
                    .saturating_duration_since(Instant::now())
                    .min(IDLE_SLICE)
                    .max(Duration::from_millis(1));
                self.set_read_timeout(slice)?;
                let got = self.conn.fill_buf().map(|b| !b.is_empty());
                self.set_read_timeout(self.timeout)?;
                match got {
                    Ok(true) => {}
                    Ok(false) => {
                        self.broken = true;
                        return Err(ImapError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "IDLE: the server closed the connection",
                        )));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => {
                        self.broken = true;
                        return Err(ImapError::io("IDLE", e));
                    }
                }
            }
            match self.read(None)? {
                Response::Untagged(u) => events.push(self.untagged_event(u)?),
                Response::Tagged { tag: t, state } if t == tag => {
                    return match state.status {
                        codec::Status::Ok => Ok(events),
                        _ => Err(no_or_bad("IDLE", state)),
                    };
                }
                r => return Err(self.poison(format!("unexpected {r:?} during IDLE"))),
            }
        }
    }

    fn untagged_event(&mut self, u: Untagged) -> Result<Event, ImapError> {
        if let Untagged::State(StatusResponse {
            status: codec::Status::Bye,
            text,
            ..
        }) = &u
        {
            self.broken = true;
            return Err(ImapError::Bye(text.clone()));
        }
        self.note(&u);
        event(&u)
    }

    /// `NOOP` (RFC 3501 section 6.1.2): what changed in the selected mailbox (with the
    /// events queued by earlier commands, see [`Session::take_events`]).
    pub fn noop(&mut self) -> Result<Vec<Event>, ImapError> {
        self.run("NOOP", &[], None, &mut keep)?;
        Ok(self.take_events())
    }

    /// `APPEND mailbox (flags) {n}` (RFC 3501 section 6.3.11), a non-synchronising literal
    /// with LITERAL+ (RFC 7888); the new UID from `[APPENDUID]` (RFC 4315 section 3).
    pub fn append(
        &mut self,
        mailbox: &str,
        flags: &[&str],
        bytes: &[u8],
    ) -> Result<Option<u32>, ImapError> {
        let flags = flag_list(flags)?;
        let name = self.wire_name(mailbox);
        let state = self.run(
            "APPEND",
            &[Arg::Str(&name), Arg::Raw(&flags), Arg::Literal(bytes)],
            None,
            &mut keep,
        )?;
        Ok(state
            .code
            .filter(|c| c.name == "APPENDUID")
            .and_then(|c| c.number(1))
            .and_then(|n| u32::try_from(n).ok()))
    }

    /// `UID STORE set [+-]FLAGS.SILENT (flags)` (RFC 3501 section 6.4.6).
    pub fn uid_store(
        &mut self,
        uid_set: &str,
        op: StoreOp,
        flags: &[&str],
    ) -> Result<(), ImapError> {
        check_set(uid_set)?;
        let flags = flag_list(flags)?;
        let item = match op {
            StoreOp::Replace => "FLAGS.SILENT",
            StoreOp::Add => "+FLAGS.SILENT",
            StoreOp::Remove => "-FLAGS.SILENT",
        };
        self.run(
            "UID STORE",
            &[
                Arg::Raw("STORE"),
                Arg::Raw(uid_set),
                Arg::Raw(item),
                Arg::Raw(&flags),
            ],
            None,
            &mut keep,
        )?;
        Ok(())
    }

    /// Expunges exactly `uid_set`: `UID STORE +FLAGS.SILENT (\Deleted)`, then `UID EXPUNGE`
    /// (RFC 4315 section 2.1). Refused without UIDPLUS: a plain `EXPUNGE` would also remove
    /// other messages flagged `\Deleted`.
    pub fn uid_expunge(&mut self, uid_set: &str) -> Result<(), ImapError> {
        check_set(uid_set)?;
        if !self.caps.has("UIDPLUS") {
            return Err(ImapError::Refused(
                "UID EXPUNGE needs UIDPLUS (a plain EXPUNGE could remove other messages)".into(),
            ));
        }
        self.uid_store(uid_set, StoreOp::Add, &["\\Deleted"])?;
        self.run(
            "UID EXPUNGE",
            &[Arg::Raw("EXPUNGE"), Arg::Raw(uid_set)],
            None,
            &mut keep,
        )?;
        Ok(())
    }

    /// Moves `uid_set` to `to`; the destination UID when the set was one message.
    pub fn uid_move(&mut self, uid_set: &str, to: &str) -> Result<Option<u32>, ImapError> {
        Ok(self
            .uid_move_all(uid_set, to)?
            .and_then(|c| (c.dst.len() == 1).then(|| c.dst[0])))
    }

    /// `UID MOVE` (RFC 6851) with MOVE, else `UID COPY` and [`Session::uid_expunge`]; the
    /// `[COPYUID]` mapping when the server sends one (UIDPLUS).
    pub fn uid_move_all(&mut self, uid_set: &str, to: &str) -> Result<Option<CopyUid>, ImapError> {
        check_set(uid_set)?;
        let name = self.wire_name(to);
        let has_move = self.caps.has("MOVE");
        if !has_move && !self.caps.has("UIDPLUS") {
            return Err(ImapError::Refused(
                "moving needs MOVE or UIDPLUS (UID EXPUNGE)".into(),
            ));
        }
        let (command, word) = if has_move {
            ("UID MOVE", "MOVE")
        } else {
            ("UID COPY", "COPY")
        };
        let mut code = None;
        let state = self.run(
            command,
            &[Arg::Raw(word), Arg::Raw(uid_set), Arg::Str(&name)],
            None,
            &mut |u| {
                // RFC 6851 section 4.3: COPYUID comes in an untagged OK before the expunges.
                if let Untagged::State(StatusResponse { code: Some(c), .. }) = &u
                    && c.name == "COPYUID"
                {
                    code = Some(c.clone());
                    return Ok(None);
                }
                Ok(Some(u))
            },
        )?;
        let code = code.or(state.code.filter(|c| c.name == "COPYUID"));
        let map = code.as_ref().map(copyuid).transpose()?;
        if !has_move {
            self.uid_expunge(uid_set)?;
        }
        Ok(map)
    }

    /// `CREATE` (RFC 3501 section 6.3.3).
    pub fn create(&mut self, mailbox: &str) -> Result<(), ImapError> {
        let name = self.wire_name(mailbox);
        self.run("CREATE", &[Arg::Str(&name)], None, &mut keep)?;
        Ok(())
    }

    /// `DELETE` (RFC 3501 section 6.3.4).
    pub fn delete(&mut self, mailbox: &str) -> Result<(), ImapError> {
        let name = self.wire_name(mailbox);
        self.run("DELETE", &[Arg::Str(&name)], None, &mut keep)?;
        Ok(())
    }

    /// `RENAME` (RFC 3501 section 6.3.5).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), ImapError> {
        let (a, b) = (self.wire_name(from), self.wire_name(to));
        self.run("RENAME", &[Arg::Str(&a), Arg::Str(&b)], None, &mut keep)?;
        Ok(())
    }

    /// `LOGOUT` (RFC 3501 section 6.1.3); errors are ignored.
    pub fn logout(mut self) {
        if !self.broken {
            let _ = self.run("LOGOUT", &[], None, &mut keep);
        }
        if let Stream::Tls(s) = self.conn.get_mut() {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }

    /// The changes (EXISTS, EXPUNGE, VANISHED, FETCH) the server reported on its own
    /// during earlier commands (RFC 3501 section 7: any response may carry them), oldest
    /// first; [`Event::Overflow`] first when more than 100 000 piled up and some were
    /// dropped. Cleared by `select`.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.pending)
    }

    // --- the command machinery -------------------------------------------------------

    /// Queues an unsolicited change for [`Session::take_events`].
    fn queue(&mut self, u: &Untagged) -> Result<(), ImapError> {
        let e = event(u)?;
        if matches!(e, Event::Other) {
            return Ok(());
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
            self.pending.push(Event::Overflow);
        }
        self.pending.push(e);
        Ok(())
    }

    fn usable(&self) -> Result<(), ImapError> {
        if self.broken {
            return Err(ImapError::Protocol(
                "the session is unusable after an earlier error".into(),
            ));
        }
        Ok(())
    }

    /// Marks the session broken and returns a protocol error.
    fn poison(&mut self, what: String) -> ImapError {
        self.broken = true;
        ImapError::Protocol(what)
    }

    fn set_read_timeout(&self, t: Duration) -> Result<(), ImapError> {
        self.conn
            .get_ref()
            .tcp()
            .set_read_timeout(Some(t))
            .map_err(|e| ImapError::io("setting the read timeout", e))
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        let w = self.conn.get_mut();
        let r = w.write_all(bytes).and_then(|()| w.flush());
        r.map_err(|e| {
            self.broken = true;
            ImapError::io("writing a command", e)
        })
    }

    /// Reads one response; errors break the session.
    fn read(&mut self, sink: Option<&mut BodySink<'_>>) -> Result<Response, ImapError> {
        let r = codec::read_response(&mut self.conn, sink);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Records capabilities however they arrive.
    fn note(&mut self, u: &Untagged) {
        match u {
            Untagged::Capability(c) => self.caps = Capabilities(c.clone()),
            Untagged::State(StatusResponse {
                code: Some(code), ..
            }) if code.name == "CAPABILITY" => {
                self.caps = Capabilities(code.args.split(' ').map(str::to_string).collect());
            }
            _ => {}
        }
    }

    /// Waits for a continuation request, handing untagged responses to `on`; a tagged
    /// answer instead is the command's failure.
    fn await_continue(
        &mut self,
        tag: &str,
        command: &str,
        on: &mut dyn FnMut(Untagged) -> Result<Option<Untagged>, ImapError>,
    ) -> Result<(), ImapError> {
        loop {
            match self.read(None)? {
                Response::Continue(_) => return Ok(()),
                Response::Untagged(u) => {
                    self.note(&u);
                    if let Some(u) = on(u)? {
                        self.queue(&u)?;
                    }
                }
                Response::Tagged { tag: t, state } if t == tag => {
                    return Err(match state.status {
                        codec::Status::Ok => {
                            self.poison(format!("{command} ended before its continuation"))
                        }
                        _ => no_or_bad(command, state),
                    });
                }
                r => return Err(self.poison(format!("unexpected {r:?}"))),
            }
        }
    }

    /// Writes a tagged command; returns its tag. Synchronising literals and SASL responses
    /// wait for their continuation (untagged responses meanwhile are dropped: only APPEND
    /// and AUTHENTICATE use them, and neither collects any).
    fn send(&mut self, args: &[Arg<'_>]) -> Result<String, ImapError> {
        self.usable()?;
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        let mut line = tag.clone().into_bytes();
        let literal_plus = self.caps.has("LITERAL+");
        let literal_minus = self.caps.has("LITERAL-");
        for arg in args {
            match arg {
                Arg::Raw(s) => {
                    line.push(b' ');
                    line.extend_from_slice(s.as_bytes());
                }
                Arg::Str(s) => {
                    if s.contains(&0) {
                        return Err(ImapError::Refused("a string with a NUL byte".into()));
                    }
                    line.push(b' ');
                    let quotable = s.len() < 1024
                        && s.iter()
                            .all(|&b| b != b'\r' && b != b'\n' && (b < 0x80 || self.utf8));
                    if quotable {
                        line.push(b'"');
                        for &b in s.iter() {
                            if b == b'"' || b == b'\\' {
                                line.push(b'\\');
                            }
                            line.push(b);
                        }
                        line.push(b'"');
                    } else {
                        self.literal(&tag, &mut line, s, literal_plus, literal_minus)?;
                    }
                }
                Arg::Literal(s) => {
                    line.push(b' ');
                    self.literal(&tag, &mut line, s, literal_plus, literal_minus)?;
                }
                Arg::AfterContinue(s) => {
                    line.extend_from_slice(b"\r\n");
                    self.write_all(&line)?;
                    line.clear();
                    self.await_continue(&tag, "AUTHENTICATE", &mut keep)?;
                    line.extend_from_slice(s);
                }
            }
        }
        line.extend_from_slice(b"\r\n");
        self.write_all(&line)?;
        Ok(tag)
    }

    /// Appends a literal (RFC 3501 section 4.3; `{n+}` with LITERAL+, or LITERAL- up to
    /// 4096 bytes, RFC 7888) to `line`, flushing the line first when it must wait for the
    /// server's continuation request.
    fn literal(
        &mut self,
        tag: &str,
        line: &mut Vec<u8>,
        s: &[u8],
        plus: bool,
        minus: bool,
    ) -> Result<(), ImapError> {
        if plus || (minus && s.len() <= 4096) {
            line.extend_from_slice(format!("{{{}+}}\r\n", s.len()).as_bytes());
            self.write_all(line)?;
            line.clear();
            self.write_all(s)?;
        } else {
            line.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
            self.write_all(line)?;
            line.clear();
            self.await_continue(tag, "a literal", &mut keep)?;
            self.write_all(s)?;
        }
        Ok(())
    }

    /// Runs one command: sends it, hands every untagged response to `on` (capabilities
    /// and BYE are handled here too), returns the tagged OK, or the NO/BAD as an error.
    fn run(
        &mut self,
        command: &str,
        args: &[Arg<'_>],
        mut sink: Option<&mut BodySink<'_>>,
        on: &mut dyn FnMut(Untagged) -> Result<Option<Untagged>, ImapError>,
    ) -> Result<StatusResponse, ImapError> {
        // "UID FETCH" is sent as "UID" and the caller's "FETCH ..." arguments.
        let first = command.split(' ').next().unwrap_or(command);
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(Arg::Raw(first));
        all.extend_from_slice(args);
        log::debug!("IMAP > {command}");
        let tag = self.send(&all)?;
        let mut bye = None;
        let mut failed = None;
        loop {
            let r = match self.read(sink.as_deref_mut()) {
                Ok(r) => r,
                Err(ImapError::Io(e)) if bye.is_some() => {
                    log::debug!("IMAP connection closed after BYE: {e}");
                    return Err(ImapError::Bye(bye.unwrap_or_default()));
                }
                Err(e) => return Err(e),
            };
            match r {
                Response::Untagged(u) => {
                    self.note(&u);
                    if let Untagged::State(StatusResponse {
                        status: codec::Status::Bye,
                        text,
                        ..
                    }) = &u
                    {
                        bye = Some(text.clone());
                        if command == "LOGOUT" {
                            continue;
                        }
                    }
                    // Keep reading to the tagged response even if `on` fails, so the
                    // session stays in step.
                    if failed.is_none() {
                        match on(u) {
                            Ok(Some(u)) => {
                                if let Err(e) = self.queue(&u) {
                                    failed = Some(e);
                                }
                            }
                            Ok(None) => {}
                            Err(e) => failed = Some(e),
                        }
                    }
                }
                Response::Tagged { tag: t, state } if t == tag => {
                    if let Some(code) = &state.code
                        && code.name == "CAPABILITY"
                    {
                        self.caps =
                            Capabilities(code.args.split(' ').map(str::to_string).collect());
                    }
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    return match state.status {
                        codec::Status::Ok => Ok(state),
                        _ => Err(no_or_bad(command, state)),
                    };
                }
                r => {
                    let shown = format!("{r:?}");
                    return Err(self.poison(format!(
                        "unexpected response to {command}: {}",
                        escape_snippet(shown.as_bytes())
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_dates() {
        assert_eq!(parse_internal_date("01-Jan-1970 00:00:00 +0000"), Some(0));
        assert_eq!(
            parse_internal_date("17-Jul-1996 02:44:25 -0700"),
            Some(837_596_665)
        );
        assert_eq!(
            parse_internal_date(" 7-Dec-2026 04:03:41 +0100"),
            Some(1_796_612_621)
        );
        assert_eq!(
            parse_internal_date("29-Feb-2024 12:00:00 +0530"),
            Some(1_709_188_200)
        );
        for bad in [
            "",
            "17-Jux-1996 02:44:25 -0700",
            "17-Jul-1996 02:44:25 0700",
            "17-Jul-1996 25:44",
        ] {
            assert_eq!(parse_internal_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn sets_and_flags_are_checked() {
        for ok in ["1", "1:3,7", "5:*", "*"] {
            assert!(check_set(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1 2", "1,", "a", "1:3)", "1\r\n"] {
            assert!(
                matches!(check_set(bad), Err(ImapError::Refused(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            flag_list(&["\\Seen", "$Label1"]).unwrap(),
            "(\\Seen $Label1)"
        );
        assert_eq!(flag_list(&[]).unwrap(), "()");
        for bad in ["a b", "x)", "\\", "\"q\"", "ü"] {
            assert!(flag_list(&[bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "example.org", "localhost.example.org", "::2"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

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
