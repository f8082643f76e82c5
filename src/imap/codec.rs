//! An incremental parser of IMAP4rev1 server responses (RFC 3501 section 7, formal syntax
//! in section 9) over any [`BufRead`].
//!
//! [`read_response`] consumes exactly one response: a continuation request (`+ ...`), a
//! tagged status (`a1 OK ...`) or one untagged response (`* ...`), literals included.
//!
//! Invariants:
//! - nothing panics on server input, and memory is bounded: a literal held in memory is at
//!   most [`MAX_LITERAL`] bytes, one response at most [`MAX_RESPONSE`] bytes, lists nest at
//!   most [`MAX_DEPTH`] deep; anything beyond is [`ImapError::Protocol`];
//! - the literal of a `BODY[...]`/`BINARY[...]` item in a `FETCH` is written to the
//!   [`BodySink`] as it arrives (byte-exact, any size) and appears as [`Value::Streamed`];
//!   only the first such literal of a response set is streamed (a sink takes one message);
//! - a read error (timeout, EOF) mid-response leaves the reader out of step: the caller
//!   must drop the connection.

use std::io::{self, BufRead, Write};

use super::{ImapError, escape_snippet};

/// The largest literal kept in memory (anything but a streamed body).
pub const MAX_LITERAL: usize = 1 << 20;
/// The most bytes one response may hold in memory (streamed bodies excluded).
pub const MAX_RESPONSE: usize = 16 << 20;
/// The deepest nesting of parenthesised lists accepted.
pub const MAX_DEPTH: usize = 64;

/// A value of a response (RFC 3501 section 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An atom or number, as sent (e.g. `\Seen`, `BODY[]`, `42`).
    Atom(String),
    /// A quoted string (unescaped) or a literal.
    Str(Vec<u8>),
    /// `NIL`.
    Nil,
    /// A parenthesised list.
    List(Vec<Value>),
    /// A literal of this many bytes written to the [`BodySink`].
    Streamed(u64),
}

impl Value {
    /// The atom's text.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Value::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// The bytes of a string, or of an atom (an astring, RFC 3501 section 9).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Atom(a) => Some(a.as_bytes()),
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A number (an atom of digits).
    pub fn as_u64(&self) -> Option<u64> {
        let a = self.as_atom()?;
        if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        a.parse().ok()
    }

    /// A 32-bit number (`nz-number`, `uniqueid`, ...).
    pub fn as_u32(&self) -> Option<u32> {
        self.as_u64().and_then(|n| u32::try_from(n).ok())
    }

    /// The elements of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

/// A response code (`[UIDVALIDITY 3]`, `[APPENDUID 3 7]`, `[OVERQUOTA]`; RFC 3501 section
/// 7.1): the name upper-cased, the rest as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub name: String,
    pub args: String,
}

impl Code {
    /// The `i`th space-separated argument as a number (`[UIDNEXT 5]`, `[APPENDUID uv uid]`).
    pub fn number(&self, i: usize) -> Option<u64> {
        self.args.split(' ').nth(i)?.parse().ok()
    }
}

/// The status of a status response (RFC 3501 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    Preauth,
    Bye,
}

/// `OK`/`NO`/`BAD`/`PREAUTH`/`BYE` with its optional code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    pub status: Status,
    pub code: Option<Code>,
    pub text: String,
}

/// An untagged response (RFC 3501 sections 7.1 - 7.4, RFC 5161 ENABLED, RFC 7162 VANISHED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged {
    State(StatusResponse),
    Capability(Vec<String>),
    Enabled(Vec<String>),
    /// `LIST`/`LSUB`: the name as sent (mUTF-7 or UTF-8), the separator (`NIL` = none).
    List {
        attributes: Vec<String>,
        separator: Option<char>,
        name: Vec<u8>,
    },
    /// `STATUS mailbox (NAME n ...)`, names upper-cased.
    MailboxStatus {
        mailbox: Vec<u8>,
        items: Vec<(String, u64)>,
    },
    Exists(u32),
    Recent(u32),
    Expunge(u32),
    /// `n FETCH (...)`: item names upper-cased.
    Fetch {
        seq: u32,
        items: Vec<(String, Value)>,
    },
    /// `VANISHED [(EARLIER)] set` (RFC 7162 section 3.2.10), the set as sent.
    Vanished {
        earlier: bool,
        uids: String,
    },
    Flags(Vec<String>),
    /// Anything else (`SEARCH`, `NAMESPACE`, `ESEARCH`, ...): its name and values.
    Other {
        name: String,
        values: Vec<Value>,
    },
}

/// One server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `+ text`: the server waits for a literal or a SASL response.
    Continue(String),
    Tagged {
        tag: String,
        state: StatusResponse,
    },
    Untagged(Untagged),
}

/// Where a `BODY[]` literal goes: written as it arrives, once per sink.
pub struct BodySink<'a> {
    out: &'a mut dyn Write,
    /// Bytes of the streamed literal (also the ones not written after a write error).
    pub written: u64,
    /// A literal has been streamed into this sink.
    pub done: bool,
    /// The sink's first write error; the literal was still read to its end.
    pub error: Option<io::Error>,
}

impl<'a> BodySink<'a> {
    pub fn new(out: &'a mut dyn Write) -> BodySink<'a> {
        BodySink {
            out,
            written: 0,
            done: false,
            error: None,
        }
    }
}

/// Reads one response from `r`; a `BODY[...]` literal goes to `sink` when given and not yet
/// used.
pub fn read_response<R: BufRead + ?Sized>(
    r: &mut R,
    sink: Option<&mut BodySink<'_>>,
) -> Result<Response, ImapError> {
    let mut p = Parser {
        r,
        sink,
        used: 0,
        depth: 0,
    };
    p.response()
}

/// The state of one [`read_response`].
struct Parser<'r, 's, 'o, R: BufRead + ?Sized> {
    r: &'r mut R,
    sink: Option<&'s mut BodySink<'o>>,
    /// Bytes held in memory for this response so far.
    used: usize,
    depth: usize,
}

fn is_atom_end(b: u8) -> bool {
    matches!(b, b' ' | b'(' | b')' | b'{' | b'"' | b'\r' | b'\n') || b < 0x20 || b == 0x7f
}

impl<R: BufRead + ?Sized> Parser<'_, '_, '_, R> {
    fn err<T>(&mut self, what: &str) -> Result<T, ImapError> {
        let near = match self.r.fill_buf() {
            Ok(b) => escape_snippet(b),
            Err(_) => String::new(),
        };
        Err(ImapError::Protocol(format!("{what} near \"{near}\"")))
    }

    fn peek(&mut self) -> Result<u8, ImapError> {
        match self.r.fill_buf() {
            Ok([]) => Err(ImapError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "reading a response: the server closed the connection",
            ))),
            Ok(b) => Ok(b[0]),
            Err(e) => Err(ImapError::io("reading a response", e)),
        }
    }

    fn next(&mut self) -> Result<u8, ImapError> {
        let b = self.peek()?;
        self.r.consume(1);
        Ok(b)
    }

    fn charge(&mut self, n: usize) -> Result<(), ImapError> {
        self.used = self.used.saturating_add(n);
        if self.used > MAX_RESPONSE {
            return self.err(&format!("response longer than {MAX_RESPONSE} bytes"));
        }
        Ok(())
    }

    fn expect(&mut self, want: u8) -> Result<(), ImapError> {
        if self.peek()? != want {
            return self.err(&format!("expected {:?}", char::from(want)));
        }
        self.r.consume(1);
        Ok(())
    }

    fn sp(&mut self) -> Result<(), ImapError> {
        self.expect(b' ')
    }

    /// CRLF (a bare LF is tolerated).
    fn crlf(&mut self) -> Result<(), ImapError> {
        if self.peek()? == b'\r' {
            self.r.consume(1);
        }
        self.expect(b'\n')
    }

    fn at_eol(&mut self) -> Result<bool, ImapError> {
        Ok(matches!(self.peek()?, b'\r' | b'\n'))
    }

    /// Text up to (and consuming) the end of the line.
    fn line_text(&mut self) -> Result<String, ImapError> {
        let mut text = Vec::new();
        while !self.at_eol()? {
            let b = self.next()?;
            self.charge(1)?;
            text.push(b);
        }
        self.crlf()?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// An atom; a `[...]` section inside it (`BODY[HEADER.FIELDS (A B)]`) may hold spaces
    /// and parentheses.
    fn atom(&mut self) -> Result<String, ImapError> {
        let mut a = Vec::new();
        let mut bracket = 0usize;
        loop {
            let b = self.peek()?;
            if bracket > 0 {
                if matches!(b, b'\r' | b'\n') {
                    return self.err("unterminated [ in an atom");
                }
                if b == b']' {
                    bracket -= 1;
                }
            } else if is_atom_end(b) {
                break;
            } else if b == b'[' {
                bracket += 1;
            }
            self.r.consume(1);
            self.charge(1)?;
            a.push(b);
        }
        if a.is_empty() {
            return self.err("expected an atom");
        }
        match String::from_utf8(a) {
            Ok(s) => Ok(s),
            Err(_) => self.err("8-bit atom"),
        }
    }

    fn number(&mut self) -> Result<u32, ImapError> {
        let a = self.atom()?;
        match Value::Atom(a).as_u32() {
            Some(n) => Ok(n),
            None => self.err("expected a number"),
        }
    }

    /// `"..."` with `\"` and `\\` escapes; CR or LF inside is an unterminated string.
    fn quoted(&mut self) -> Result<Vec<u8>, ImapError> {
        self.expect(b'"')?;
        let mut s = Vec::new();
        loop {
            let mut b = self.peek()?;
            if matches!(b, b'\r' | b'\n') {
                return self.err("unterminated quoted string");
            }
            self.r.consume(1);
            if b == b'"' {
                return Ok(s);
            }
            if b == b'\\' {
                b = self.peek()?;
                if matches!(b, b'\r' | b'\n') {
                    return self.err("unterminated quoted string");
                }
                self.r.consume(1);
            }
            self.charge(1)?;
            s.push(b);
        }
    }

    /// `{n}\r\n` and n bytes: kept (at most [`MAX_LITERAL`]) or streamed to the sink.
    fn literal(&mut self, stream: bool) -> Result<Value, ImapError> {
        self.expect(b'{')?;
        let mut n: u64 = 0;
        let mut digits = 0;
        while self.peek()?.is_ascii_digit() {
            let d = u64::from(self.next()? - b'0');
            n = match n.checked_mul(10).and_then(|n| n.checked_add(d)) {
                Some(n) => n,
                None => return self.err("literal length overflows"),
            };
            digits += 1;
        }
        if digits == 0 {
            return self.err("literal without a length");
        }
        self.expect(b'}')?;
        self.crlf()?;
        if stream && let Some(sink) = self.sink.as_deref_mut().filter(|s| !s.done) {
            sink.done = true;
            sink.written = n;
            let mut left = n;
            while left > 0 {
                let buf = match self.r.fill_buf() {
                    Ok([]) => {
                        return Err(ImapError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "reading a message literal: the server closed the connection",
                        )));
                    }
                    Ok(b) => b,
                    Err(e) => return Err(ImapError::io("reading a message literal", e)),
                };
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                if sink.error.is_none()
                    && let Err(e) = sink.out.write_all(&buf[..take])
                {
                    sink.error = Some(e);
                }
                self.r.consume(take);
                left -= take as u64;
            }
            return Ok(Value::Streamed(n));
        }
        let len = match usize::try_from(n) {
            Ok(len) if len <= MAX_LITERAL => len,
            _ => return self.err(&format!("literal of {n} bytes (at most {MAX_LITERAL})")),
        };
        self.charge(len)?;
        let mut bytes = vec![0u8; len];
        if let Err(e) = self.r.read_exact(&mut bytes) {
            return Err(ImapError::io("reading a literal", e));
        }
        Ok(Value::Str(bytes))
    }

    fn value(&mut self, stream: bool) -> Result<Value, ImapError> {
        match self.peek()? {
            b'(' => self.list().map(Value::List),
            b'"' => self.quoted().map(Value::Str),
            b'{' => self.literal(stream),
            _ => {
                let a = self.atom()?;
                Ok(if a.eq_ignore_ascii_case("NIL") {
                    Value::Nil
                } else {
                    Value::Atom(a)
                })
            }
        }
    }

    /// `(` values separated by SP `)`.
    fn list(&mut self) -> Result<Vec<Value>, ImapError> {
        self.expect(b'(')?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("lists nested too deep");
        }
        let mut values = Vec::new();
        loop {
            if self.peek()? == b')' {
                self.r.consume(1);
                break;
            }
            if !values.is_empty() {
                self.sp()?;
            }
            values.push(self.value(false)?);
        }
        self.depth -= 1;
        Ok(values)
    }

    /// An astring or nstring as bytes (`NIL` is empty).
    fn astring(&mut self) -> Result<Vec<u8>, ImapError> {
        match self.value(false)? {
            Value::Atom(a) => Ok(a.into_bytes()),
            Value::Str(s) => Ok(s),
            Value::Nil => Ok(b"NIL".to_vec()),
            _ => self.err("expected a string"),
        }
    }

    fn atom_list(&mut self) -> Result<Vec<String>, ImapError> {
        let values = self.list()?;
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            match v {
                Value::Atom(a) => out.push(a),
                _ => return self.err("expected a list of atoms"),
            }
        }
        Ok(out)
    }

    /// Space-separated atoms to the end of the line (CAPABILITY, ENABLED).
    fn atoms_to_eol(&mut self) -> Result<Vec<String>, ImapError> {
        let mut out = Vec::new();
        while !self.at_eol()? {
            self.sp()?;
            if self.at_eol()? {
                break;
            }
            out.push(self.atom()?);
        }
        self.crlf()?;
        Ok(out)
    }

    /// Values to the end of the line.
    fn values_to_eol(&mut self) -> Result<Vec<Value>, ImapError> {
        let mut out = Vec::new();
        while !self.at_eol()? {
            self.sp()?;
            if self.at_eol()? {
                break;
            }
            out.push(self.value(false)?);
        }
        self.crlf()?;
        Ok(out)
    }

    /// `resp-text` after a status word: `[code]` and text (RFC 3501 section 9).
    fn resp_text(&mut self, status: Status) -> Result<StatusResponse, ImapError> {
        let mut code = None;
        if self.peek()? == b' ' {
            self.r.consume(1);
        }
        if self.peek()? == b'[' {
            self.r.consume(1);
            let mut name = String::new();
            let mut args = Vec::new();
            loop {
                let b = self.peek()?;
                if matches!(b, b' ' | b']' | b'\r' | b'\n') {
                    break;
                }
                self.r.consume(1);
                self.charge(1)?;
                name.push(char::from(b.to_ascii_uppercase()));
            }
            if self.peek()? == b' ' {
                self.r.consume(1);
                loop {
                    let b = self.peek()?;
                    if b == b']' {
                        break;
                    }
                    if matches!(b, b'\r' | b'\n') {
                        return self.err("unterminated response code");
                    }
                    self.r.consume(1);
                    self.charge(1)?;
                    args.push(b);
                }
            }
            self.expect(b']')?;
            if name.is_empty() {
                return self.err("empty response code");
            }
            code = Some(Code {
                name,
                args: String::from_utf8_lossy(&args).into_owned(),
            });
            if self.peek()? == b' ' {
                self.r.consume(1);
            }
        }
        let text = self.line_text()?;
        Ok(StatusResponse { status, code, text })
    }

    fn status_word(word: &str) -> Option<Status> {
        Some(match word.to_ascii_uppercase().as_str() {
            "OK" => Status::Ok,
            "NO" => Status::No,
            "BAD" => Status::Bad,
            "PREAUTH" => Status::Preauth,
            "BYE" => Status::Bye,
            _ => return None,
        })
    }

    fn response(&mut self) -> Result<Response, ImapError> {
        match self.peek()? {
            b'+' => {
                self.r.consume(1);
                if self.peek()? == b' ' {
                    self.r.consume(1);
                }
                Ok(Response::Continue(self.line_text()?))
            }
            b'*' => {
                self.r.consume(1);
                self.sp()?;
                self.untagged().map(Response::Untagged)
            }
            _ => {
                let tag = self.atom()?;
                self.sp()?;
                let word = self.atom()?;
                match Self::status_word(&word) {
                    Some(s @ (Status::Ok | Status::No | Status::Bad)) => {
                        let state = self.resp_text(s)?;
                        Ok(Response::Tagged { tag, state })
                    }
                    _ => self.err("a tagged response must be OK, NO or BAD"),
                }
            }
        }
    }

    fn untagged(&mut self) -> Result<Untagged, ImapError> {
        if self.peek()?.is_ascii_digit() {
            let n = self.number()?;
            self.sp()?;
            let name = self.atom()?.to_ascii_uppercase();
            let u = match name.as_str() {
                "EXISTS" => Untagged::Exists(n),
                "RECENT" => Untagged::Recent(n),
                "EXPUNGE" => Untagged::Expunge(n),
                "FETCH" => {
                    self.sp()?;
                    let items = self.fetch_items()?;
                    Untagged::Fetch { seq: n, items }
                }
                _ => {
                    let mut values = vec![Value::Atom(n.to_string())];
                    values.extend(self.values_to_eol()?);
                    return Ok(Untagged::Other { name, values });
                }
            };
            self.crlf()?;
            return Ok(u);
        }
        let name = self.atom()?.to_ascii_uppercase();
        if let Some(status) = Self::status_word(&name) {
            return self.resp_text(status).map(Untagged::State);
        }
        Ok(match name.as_str() {
            "CAPABILITY" => Untagged::Capability(self.atoms_to_eol()?),
            "ENABLED" => Untagged::Enabled(self.atoms_to_eol()?),
            "LIST" | "LSUB" => {
                self.sp()?;
                let attributes = self.atom_list()?;
                self.sp()?;
                let separator = match self.value(false)? {
                    Value::Nil => None,
                    Value::Str(s) if s.len() == 1 && s[0].is_ascii() => Some(char::from(s[0])),
                    _ => return self.err("bad hierarchy separator"),
                };
                self.sp()?;
                let name = self.astring()?;
                // RFC 5258 extended data, if any, is skipped.
                self.values_to_eol()?;
                Untagged::List {
                    attributes,
                    separator,
                    name,
                }
            }
            "STATUS" => {
                self.sp()?;
                let mailbox = self.astring()?;
                self.sp()?;
                let values = self.list()?;
                let mut items = Vec::new();
                let mut it = values.into_iter();
                while let Some(k) = it.next() {
                    let (Some(k), Some(v)) = (
                        k.as_atom().map(str::to_ascii_uppercase),
                        it.next().and_then(|v| v.as_u64()),
                    ) else {
                        return self.err("bad STATUS item");
                    };
                    items.push((k, v));
                }
                // Some servers send a trailing space.
                self.values_to_eol()?;
                Untagged::MailboxStatus { mailbox, items }
            }
            "VANISHED" => {
                self.sp()?;
                let mut earlier = false;
                if self.peek()? == b'(' {
                    let tags = self.atom_list()?;
                    earlier = tags.iter().any(|t| t.eq_ignore_ascii_case("EARLIER"));
                    self.sp()?;
                }
                let uids = self.atom()?;
                self.crlf()?;
                Untagged::Vanished { earlier, uids }
            }
            "FLAGS" => {
                self.sp()?;
                let flags = self.atom_list()?;
                self.crlf()?;
                Untagged::Flags(flags)
            }
            _ => Untagged::Other {
                values: self.values_to_eol()?,
                name,
            },
        })
    }

    /// `(NAME value NAME value ...)` of a FETCH (RFC 3501 section 7.4.2).
    fn fetch_items(&mut self) -> Result<Vec<(String, Value)>, ImapError> {
        self.expect(b'(')?;
        let mut items = Vec::new();
        loop {
            if self.peek()? == b')' {
                self.r.consume(1);
                return Ok(items);
            }
            if !items.is_empty() {
                self.sp()?;
            }
            let name = self.atom()?.to_ascii_uppercase();
            self.sp()?;
            let stream = name.starts_with("BODY[") || name.starts_with("BINARY[");
            let mut value = self.value(stream)?;
            // A body may also come as a quoted string: it goes to the sink all the same.
            if stream
                && let Value::Str(bytes) = &value
                && let Some(sink) = self.sink.as_deref_mut().filter(|s| !s.done)
            {
                sink.done = true;
                sink.written = bytes.len() as u64;
                if let Err(e) = sink.out.write_all(bytes) {
                    sink.error = Some(e);
                }
                value = Value::Streamed(bytes.len() as u64);
            }
            items.push((name, value));
        }
    }
}

/// Expands a sequence set of UIDs (`1:3,7`, RFC 3501 section 9 `sequence-set`, no `*`) into
/// at most `limit` numbers, in the order given.
pub fn expand_set(set: &str, limit: usize) -> Result<Vec<u32>, ImapError> {
    let bad = || {
        ImapError::Protocol(format!(
            "bad UID set \"{}\"",
            escape_snippet(set.as_bytes())
        ))
    };
    let mut out = Vec::new();
    for part in set.split(',') {
        let (a, b) = part.split_once(':').unwrap_or((part, part));
        let num = |s: &str| -> Result<u32, ImapError> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        let (a, b) = (num(a)?, num(b)?);
        let (lo, hi) = (a.min(b), a.max(b));
        if (hi - lo) as usize >= limit.saturating_sub(out.len()) {
            return Err(ImapError::Protocol(format!(
                "UID set of more than {limit} numbers"
            )));
        }
        out.extend(lo..=hi);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Read};

    fn parse(input: &[u8]) -> Result<Response, ImapError> {
        let mut r: &[u8] = input;
        read_response(&mut r, None)
    }

    fn untagged(input: &[u8]) -> Untagged {
        match parse(input).unwrap() {
            Response::Untagged(u) => u,
            r => panic!("not untagged: {r:?}"),
        }
    }

    /// Hands out at most `n` bytes per read, to split literals and lines across reads.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn tagged_with_code() {
        let r = parse(b"a7 NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n");
        let Ok(Response::Tagged { tag, state }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(tag, "a7");
        assert_eq!(state.status, Status::No);
        assert_eq!(state.code.unwrap().name, "OVERQUOTA");
        assert_eq!(state.text, "Quota exceeded (mailbox for user is full)");
    }

    #[test]
    fn response_codes() {
        let u = untagged(b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n");
        let Untagged::State(s) = u else { panic!() };
        let c = s.code.unwrap();
        assert_eq!(
            (c.name.as_str(), c.number(0)),
            ("UIDVALIDITY", Some(1700000000))
        );
        let r = parse(b"a3 OK [APPENDUID 38505 3955] APPEND completed\r\n").unwrap();
        let Response::Tagged { state, .. } = r else {
            panic!()
        };
        let c = state.code.unwrap();
        assert_eq!((c.number(0), c.number(1)), (Some(38505), Some(3955)));
        let u = untagged(b"* OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n");
        let Untagged::State(s) = u else { panic!() };
        assert_eq!(s.code.unwrap().args, "38505 304,319:320 3956:3958");
        let u = untagged(b"* OK [HIGHESTMODSEQ 715194045007]\r\n");
        let Untagged::State(s) = u else { panic!() };
        assert_eq!(s.code.unwrap().number(0), Some(715194045007));
        assert_eq!(s.text, "");
        let u = untagged(b"* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN] Dovecot ready.\r\n");
        let Untagged::State(s) = u else { panic!() };
        assert_eq!(s.code.unwrap().args, "IMAP4rev1 IDLE AUTH=PLAIN");
        let u = untagged(b"* OK [PERMANENTFLAGS (\\Seen \\*)] Limited\r\n");
        let Untagged::State(s) = u else { panic!() };
        assert_eq!(s.code.unwrap().args, "(\\Seen \\*)");
    }

    #[test]
    fn capability_enabled_continuation() {
        assert_eq!(
            untagged(b"* CAPABILITY IMAP4rev1 LITERAL+ SASL-IR\r\n"),
            Untagged::Capability(vec![
                "IMAP4rev1".into(),
                "LITERAL+".into(),
                "SASL-IR".into()
            ])
        );
        assert_eq!(
            untagged(b"* ENABLED QRESYNC\r\n"),
            Untagged::Enabled(vec!["QRESYNC".into()])
        );
        assert_eq!(untagged(b"* ENABLED\r\n"), Untagged::Enabled(vec![]));
        assert_eq!(
            parse(b"+ go ahead\r\n").unwrap(),
            Response::Continue("go ahead".into())
        );
        assert_eq!(parse(b"+\r\n").unwrap(), Response::Continue(String::new()));
    }

    #[test]
    fn list_quoted_literal_nil() {
        assert_eq!(
            untagged(b"* LIST (\\HasNoChildren) \"/\" \"Entw&APw-rfe\"\r\n"),
            Untagged::List {
                attributes: vec!["\\HasNoChildren".into()],
                separator: Some('/'),
                name: b"Entw&APw-rfe".to_vec()
            }
        );
        assert_eq!(
            untagged(b"* LIST (\\Noselect) NIL {5}\r\na\"b\\c\r\n"),
            Untagged::List {
                attributes: vec!["\\Noselect".into()],
                separator: None,
                name: b"a\"b\\c".to_vec()
            }
        );
        assert_eq!(
            untagged(b"* LIST () \"\\\\\" \"q\\\"x\\\\y\"\r\n"),
            Untagged::List {
                attributes: vec![],
                separator: Some('\\'),
                name: b"q\"x\\y".to_vec()
            }
        );
        assert_eq!(
            untagged(b"* LIST () \".\" INBOX\r\n"),
            Untagged::List {
                attributes: vec![],
                separator: Some('.'),
                name: b"INBOX".to_vec()
            }
        );
    }

    #[test]
    fn status_exists_expunge_vanished_flags() {
        assert_eq!(
            untagged(b"* STATUS \"a b\" (MESSAGES 2 UIDNEXT 5 UIDVALIDITY 9 HIGHESTMODSEQ 12)\r\n"),
            Untagged::MailboxStatus {
                mailbox: b"a b".to_vec(),
                items: vec![
                    ("MESSAGES".into(), 2),
                    ("UIDNEXT".into(), 5),
                    ("UIDVALIDITY".into(), 9),
                    ("HIGHESTMODSEQ".into(), 12)
                ]
            }
        );
        assert_eq!(untagged(b"* 23 EXISTS\r\n"), Untagged::Exists(23));
        assert_eq!(untagged(b"* 5 RECENT\r\n"), Untagged::Recent(5));
        assert_eq!(untagged(b"* 3 EXPUNGE\r\n"), Untagged::Expunge(3));
        assert_eq!(
            untagged(b"* VANISHED (EARLIER) 41,43:116\r\n"),
            Untagged::Vanished {
                earlier: true,
                uids: "41,43:116".into()
            }
        );
        assert_eq!(
            untagged(b"* VANISHED 7\r\n"),
            Untagged::Vanished {
                earlier: false,
                uids: "7".into()
            }
        );
        assert_eq!(
            untagged(b"* FLAGS (\\Answered \\Seen $Label1)\r\n"),
            Untagged::Flags(vec!["\\Answered".into(), "\\Seen".into(), "$Label1".into()])
        );
        assert_eq!(
            untagged(b"* SEARCH 2 3 6\r\n"),
            Untagged::Other {
                name: "SEARCH".into(),
                values: vec![
                    Value::Atom("2".into()),
                    Value::Atom("3".into()),
                    Value::Atom("6".into())
                ]
            }
        );
    }

    #[test]
    fn fetch_items_and_sections() {
        let u = untagged(
            b"* 12 FETCH (UID 40 FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" \
              RFC822.SIZE 4286 X-GUID 0c8e3b0a MODSEQ (7) BODY[HEADER.FIELDS (FROM TO)] {4}\r\nab\r\n)\r\n",
        );
        let Untagged::Fetch { seq, items } = u else {
            panic!()
        };
        assert_eq!(seq, 12);
        let names: Vec<&str> = items.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "UID",
                "FLAGS",
                "INTERNALDATE",
                "RFC822.SIZE",
                "X-GUID",
                "MODSEQ",
                "BODY[HEADER.FIELDS (FROM TO)]"
            ]
        );
        assert_eq!(items[0].1.as_u32(), Some(40));
        assert_eq!(items[5].1, Value::List(vec![Value::Atom("7".into())]));
        assert_eq!(items[6].1, Value::Str(b"ab\r\n".to_vec()));
    }

    #[test]
    fn body_literal_streams_across_reads() {
        let mut body = Vec::new();
        for i in 0..3000u32 {
            body.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\x00\xff no final newline");
        let mut input = format!("* 1 FETCH (UID 7 BODY[] {{{}}}\r\n", body.len()).into_bytes();
        input.extend_from_slice(&body);
        input.extend_from_slice(b")\r\na2 OK done\r\n");
        let mut r = BufReader::with_capacity(7, Trickle(&input, 5));
        let mut out = Vec::new();
        let mut sink = BodySink::new(&mut out);
        let u = read_response(&mut r, Some(&mut sink)).unwrap();
        assert!(sink.done && sink.error.is_none());
        assert_eq!(sink.written, body.len() as u64);
        let Response::Untagged(Untagged::Fetch { items, .. }) = u else {
            panic!()
        };
        assert_eq!(
            items[1],
            ("BODY[]".into(), Value::Streamed(body.len() as u64))
        );
        assert!(matches!(
            read_response(&mut r, None),
            Ok(Response::Tagged { .. })
        ));
        assert_eq!(out, body);
    }

    #[test]
    fn quoted_body_goes_to_the_sink_once() {
        let input = b"* 1 FETCH (BODY[] \"a\\\"b\" BODY[TEXT] {2}\r\nxy)\r\n";
        let mut out = Vec::new();
        let mut sink = BodySink::new(&mut out);
        let mut r: &[u8] = input;
        let u = read_response(&mut r, Some(&mut sink)).unwrap();
        let Response::Untagged(Untagged::Fetch { items, .. }) = u else {
            panic!()
        };
        assert_eq!(items[0].1, Value::Streamed(3));
        // The sink takes one body; a second one stays in memory.
        assert_eq!(items[1].1, Value::Str(b"xy".to_vec()));
        assert_eq!(out, b"a\"b");
    }

    #[test]
    fn literal_split_across_reads_in_memory() {
        let input = b"* LIST () \"/\" {12}\r\nhello\r\nworld\r\n";
        let mut r = BufReader::with_capacity(3, Trickle(input, 2));
        let r = read_response(&mut r, None).unwrap();
        let Response::Untagged(Untagged::List { name, .. }) = r else {
            panic!()
        };
        assert_eq!(name, b"hello\r\nworld");
    }

    #[test]
    fn hostile_input_is_a_protocol_error() {
        for bad in [
            &b"* LIST () \"/\" {99999999999999999999999}\r\n"[..],
            b"* LIST () \"/\" {4294967296}\r\nxx",
            b"* 1 FETCH (BODY[] {2000000}\r\n", // a body literal without a sink
            b"* LIST () \"/\" \"unterminated\r\n",
            b"* LIST () \"/\" \"esc\\\r\n",
            b"* OK [UIDNEXT 5\r\n",
            b"a1 MAYBE fine\r\n",
            b"* 1 FETCH (UID 1 BODY[HEADER\r\n",
            b"* 99999999999 EXISTS\r\n",
            b"* LIST () \"//\" x\r\n",
            b"* 1 FETCH UID 1\r\n",
        ] {
            match parse(bad) {
                Err(ImapError::Protocol(m)) => assert!(m.len() < 300, "{m}"),
                r => panic!("{:?} gave {r:?}", String::from_utf8_lossy(bad)),
            }
        }
        let deep = format!("* X {}\r\n", "(".repeat(10_000));
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(ImapError::Protocol(_))
        ));
    }

    #[test]
    fn eof_mid_response_is_an_io_error() {
        for cut in [
            &b"* 1 FETCH (UID 1 BODY[] {10}\r\nabc"[..],
            b"* OK [CAPAB",
            b"a1 OK",
        ] {
            let mut out = Vec::new();
            let mut sink = BodySink::new(&mut out);
            let mut r: &[u8] = cut;
            match read_response(&mut r, Some(&mut sink)) {
                Err(ImapError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
                r => panic!("{r:?}"),
            }
        }
    }

    #[test]
    fn sets_expand_with_a_limit() {
        assert_eq!(expand_set("1:3,7,10:9", 100).unwrap(), [1, 2, 3, 7, 9, 10]);
        assert!(expand_set("1:4294967295", 1000).is_err());
        assert!(expand_set("1,,2", 10).is_err());
        assert!(expand_set("*", 10).is_err());
    }
}
