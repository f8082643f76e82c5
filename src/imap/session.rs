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

use std::io::{self, BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::codec::{self, BodySink, Response, StatusResponse, Untagged};
use super::items::{MAX_SET, check_set, copyuid, event, flag_list, message_info};
use super::transport::{Stream, connect_tcp, is_loopback, tls_wrap};
use super::types::{
    Capabilities, CopyUid, Credentials, Endpoint, Event, ListEntry, MessageInfo, Qresync, Security,
    Selected, Status, StoreOp,
};
use super::{ImapError, escape_snippet, mutf7};

/// The most unsolicited events kept for [`Session::take_events`].
const MAX_PENDING: usize = 100_000;

/// The longest slice of an IDLE wait between two `stop` checks (and reads).
const IDLE_SLICE: Duration = Duration::from_millis(200);

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
    /// How many times capabilities were announced (to tell whether a login did).
    caps_updates: u64,
    tag: u32,
    timeout: Duration,
    utf8: bool,
    qresync: bool,
    /// CONDSTORE enabled (RFC 7162 section 3.1; QRESYNC implies it).
    condstore: bool,
    /// Whether `FETCH X-GUID` works (unknown until tried: Dovecot does not announce it).
    xguid: Option<bool>,
    /// Unsolicited changes seen during commands, for [`Session::take_events`].
    pending: Vec<Event>,
    broken: bool,
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
            caps_updates: 0,
            tag: 0,
            timeout,
            utf8: false,
            qresync: false,
            condstore: false,
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
                    self.set_caps(code.args.split(' ').map(str::to_string).collect());
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
        let updates_before = self.caps_updates;
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
        if self.caps_updates == updates_before {
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
            if e.eq_ignore_ascii_case("CONDSTORE") {
                self.condstore = true;
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

    /// The prefixes of the other users' and shared namespaces (`NAMESPACE`, RFC 2342
    /// section 5), decoded: mailboxes under them are not in the personal namespace, which
    /// is all [`Session::notify_set`] asks to hear about. Empty when the server has no
    /// NAMESPACE.
    pub fn other_namespaces(&mut self) -> Result<Vec<String>, ImapError> {
        if !self.caps.has("NAMESPACE") {
            return Ok(Vec::new());
        }
        let mut groups: Option<Vec<codec::Value>> = None;
        self.run("NAMESPACE", &[], None, &mut |u| match u {
            Untagged::Other { name, values } if name == "NAMESPACE" => {
                groups = Some(values);
                Ok(None)
            }
            u => Ok(Some(u)),
        })?;
        let groups =
            groups.ok_or_else(|| ImapError::Protocol("NAMESPACE without an answer".into()))?;
        let mut prefixes = Vec::new();
        // Personal, other users', shared: each NIL or a list of (prefix separator ...).
        for group in groups.iter().skip(1) {
            let codec::Value::List(namespaces) = group else {
                continue;
            };
            for ns in namespaces {
                match ns {
                    codec::Value::List(parts) => match parts.first() {
                        Some(codec::Value::Str(prefix)) => prefixes.push(self.decode_name(prefix)?),
                        _ => return Err(ImapError::Protocol("bad NAMESPACE entry".into())),
                    },
                    _ => return Err(ImapError::Protocol("bad NAMESPACE entry".into())),
                }
            }
        }
        Ok(prefixes)
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
                Untagged::Flags(flags) => sel.flags = flags,
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
                // Only this mailbox's: after NOTIFY, others' may arrive meanwhile.
                Untagged::MailboxStatus { mailbox, items } if same_mailbox(&mailbox, &name) => {
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
            match self.idle_read(&tag, &mut events)? {
                IdleRead::Continued => break,
                IdleRead::Done => return Ok(events),
                IdleRead::More => {}
            }
        }
        let mut done = false;
        loop {
            let wake = events.iter().any(|e| !matches!(e, Event::Other));
            if !done && (wake || stop() || Instant::now() >= deadline) {
                self.write_all(b"DONE\r\n")?;
                done = true;
            }
            if !done && self.conn.buffer().is_empty() && !self.wait_readable(deadline, "IDLE")? {
                continue;
            }
            match self.idle_read(&tag, &mut events)? {
                IdleRead::Done => return Ok(events),
                IdleRead::More => {}
                IdleRead::Continued => {
                    return Err(self.poison("unexpected continuation during IDLE".into()));
                }
            }
        }
    }

    /// Reads one response while IDLE (tagged `tag`) runs: an untagged one is added to
    /// `events`; the tagged OK ends it (a NO or BAD is the error).
    fn idle_read(&mut self, tag: &str, events: &mut Vec<Event>) -> Result<IdleRead, ImapError> {
        match self.read(None)? {
            Response::Continue(_) => Ok(IdleRead::Continued),
            Response::Untagged(u) => {
                events.extend(self.untagged_event(u)?);
                Ok(IdleRead::More)
            }
            Response::Tagged { tag: t, state } if t == tag => match state.status {
                codec::Status::Ok => Ok(IdleRead::Done),
                _ => Err(no_or_bad("IDLE", state)),
            },
            r => Err(self.poison(format!("unexpected {r:?} during IDLE"))),
        }
    }

    /// Waits until the server sent something (true) or a slice of at most 200 ms up to
    /// `deadline` passed (false), so that callers can check their stop condition between
    /// slices. The read timeout is restored afterwards; end of stream is an error.
    fn wait_readable(&mut self, deadline: Instant, what: &str) -> Result<bool, ImapError> {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(IDLE_SLICE)
            .max(Duration::from_millis(1));
        self.set_read_timeout(slice)?;
        let got = self.conn.fill_buf().map(|b| !b.is_empty());
        self.set_read_timeout(self.timeout)?;
        match got {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.broken = true;
                Err(ImapError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{what}: the server closed the connection"),
                )))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => {
                self.broken = true;
                Err(ImapError::io(what, e))
            }
        }
    }

    /// `NOTIFY SET (PERSONAL (MessageNew MessageExpunge FlagChange MailboxName))` (RFC 5465
    /// section 3): from now on the server reports, with no command running, a `STATUS` of
    /// every mailbox of the personal namespace whose messages or flags change
    /// ([`Event::MailboxStatus`]) and a `LIST` of every mailbox created, deleted or renamed
    /// ([`Event::MailboxListed`]); read them with [`Session::listen`]. Flag changes are
    /// reported only to a session that enabled CONDSTORE (their STATUS carries only
    /// HIGHESTMODSEQ; Dovecot's `imap_notify_status`), so it is enabled here when the
    /// server has it and QRESYNC (which implies it) is not enabled yet. Nothing may be
    /// selected: the selected mailbox would be reported by EXISTS/EXPUNGE/FETCH instead.
    pub fn notify_set(&mut self) -> Result<(), ImapError> {
        if !self.caps.has("NOTIFY") {
            return Err(ImapError::Refused("the server has no NOTIFY".into()));
        }
        if self.caps.has("CONDSTORE") && !self.qresync && !self.condstore {
            self.enable(&["CONDSTORE"])?;
        }
        self.run(
            "NOTIFY",
            &[Arg::Raw(
                "SET (PERSONAL (MessageNew MessageExpunge FlagChange MailboxName))",
            )],
            None,
            &mut keep,
        )?;
        Ok(())
    }

    /// With no command running, reads what the server sends on its own (after
    /// [`Session::notify_set`]) until a change arrives, `wait` passes or `stop()` is true
    /// (checked at least every 200 ms). Returns what arrived (first what earlier commands
    /// queued, without waiting).
    pub fn listen(
        &mut self,
        wait: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<Event>, ImapError> {
        self.usable()?;
        if !self.pending.is_empty() {
            return Ok(self.take_events());
        }
        let deadline = Instant::now() + wait;
        let mut events = Vec::new();
        loop {
            let wake = events.iter().any(|e| !matches!(e, Event::Other));
            if wake || stop() || Instant::now() >= deadline {
                return Ok(events);
            }
            if self.conn.buffer().is_empty() && !self.wait_readable(deadline, "NOTIFY")? {
                continue;
            }
            match self.read(None)? {
                Response::Untagged(u) => {
                    let e = self.untagged_event(u)?;
                    events.extend(e);
                }
                r => {
                    let shown = format!("{r:?}");
                    return Err(self.poison(format!(
                        "unexpected {} with no command running",
                        escape_snippet(shown.as_bytes())
                    )));
                }
            }
        }
    }

    fn untagged_event(&mut self, u: Untagged) -> Result<Vec<Event>, ImapError> {
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
        // An error here leaves IDLE running: the session is out of step.
        self.event_of(&u).inspect_err(|_| self.broken = true)
    }

    /// The changes an unsolicited response reports: [`event`], and NOTIFY's STATUS and
    /// LIST (RFC 5465 sections 5.1, 5.4) with the mailbox name decoded. Dovecot 2.3 sends
    /// those names as its internal UTF-8 names, not modified UTF-7 (`imap_notify_status`
    /// and `imap_notify_list` in `src/imap/imap-notify.c` pass `rec->vname`), so without
    /// UTF8=ACCEPT both readings are reported when they differ (a change reported for a
    /// mailbox that does not exist costs a look); a name that is neither is an
    /// [`Event::Overflow`]: something changed, it is not known where.
    fn event_of(&self, u: &Untagged) -> Result<Vec<Event>, ImapError> {
        let names = |raw: &[u8]| -> Vec<String> {
            let mut names: Vec<String> = self.decode_name(raw).ok().into_iter().collect();
            if !self.utf8
                && let Ok(utf8) = std::str::from_utf8(raw)
                && !names.iter().any(|n| n == utf8)
            {
                names.push(utf8.to_string());
            }
            names
        };
        let reported = |names: Vec<String>, make: fn(String) -> Event| {
            if names.is_empty() {
                vec![Event::Overflow]
            } else {
                names.into_iter().map(make).collect()
            }
        };
        Ok(match u {
            Untagged::MailboxStatus { mailbox, .. } => {
                reported(names(mailbox), Event::MailboxStatus)
            }
            Untagged::List { name, .. } => reported(names(name), Event::MailboxListed),
            u => vec![event(u)?],
        })
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
        for e in self.event_of(u)? {
            if matches!(e, Event::Other) {
                continue;
            }
            if self.pending.len() >= MAX_PENDING {
                self.pending.clear();
                self.pending.push(Event::Overflow);
            }
            self.pending.push(e);
        }
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

    fn set_caps(&mut self, caps: Vec<String>) {
        self.caps = Capabilities(caps);
        self.caps_updates += 1;
    }

    /// Records capabilities however they arrive.
    fn note(&mut self, u: &Untagged) {
        match u {
            Untagged::Capability(c) => self.set_caps(c.clone()),
            Untagged::State(StatusResponse {
                code: Some(code), ..
            }) if code.name == "CAPABILITY" => {
                self.set_caps(code.args.split(' ').map(str::to_string).collect());
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
                        self.set_caps(code.args.split(' ').map(str::to_string).collect());
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

/// Whether two wire-form mailbox names are the same mailbox (INBOX in any case, RFC 3501
/// section 5.1).
fn same_mailbox(a: &[u8], b: &[u8]) -> bool {
    a == b || (a.eq_ignore_ascii_case(b"INBOX") && b.eq_ignore_ascii_case(b"INBOX"))
}

/// What one response read during IDLE was ([`Session::idle_read`]).
enum IdleRead {
    /// An untagged response (added to the events).
    More,
    /// The continuation request: IDLE runs.
    Continued,
    /// The tagged OK: IDLE ended.
    Done,
}
