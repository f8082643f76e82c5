//! Dovecot's mbox files, read-only: From_ lines, message boundaries, and the header block
//! of each message with the headers Dovecot hides.
//!
//! Rules, as in Dovecot 2.3.19.1:
//! - A message starts with a From_ line (`From <sender> <asctime date>`), parsed as
//!   `mbox_from_parse()` does (`src/lib-mail/mbox-from.c`). A message ends where a line
//!   `From ` follows that parses as a From_ line; the `\n` (or `\r\n`) before it belongs to
//!   the separator, as does one final `\n` at the end of the file
//!   (`i_stream_raw_mbox_read()` in `istream-raw-mbox.c`). A `Content-Length` header is
//!   trusted when the body it names ends exactly at such a line or at the end of the file
//!   (`istream_raw_mbox_get_body_size()`), so a From_ line inside that body is not a
//!   boundary.
//! - What `doveadm fetch text` shows of a message is the message without the From_ line,
//!   with the headers of [`HIDDEN`] left out (continuation lines included) and the header
//!   lines' CRs dropped (`mbox_mail_init_stream()`: `i_stream_create_header_filter()` with
//!   `HEADER_FILTER_EXCLUDE | HEADER_FILTER_NO_CR`); the body is as stored.
//! - Flags come from `Status` (R, O) and `X-Status` (A, F, T, D), the UID from `X-UID`,
//!   keywords from `X-Keywords`, UIDVALIDITY and the last UID from the first message's
//!   `X-IMAPbase` (`mbox-sync-parse.c`).
//! - The GUID Dovecot reports for a message with none in its index is the MD5 of some
//!   header values (`mbox_md5 = apop3d`, the default: `mbox-md5-apop3d.c`); this module
//!   gives the bytes hashed ([`HeaderBlock::md5_input`]).
//!
//! Pure: bytes in, values out; no function panics on any input.

use super::MailFlags;

/// The headers Dovecot hides from the message text (`mbox_hide_headers[]` in
/// `mbox-storage.c`), compared case-insensitively.
pub const HIDDEN: [&str; 7] = [
    "Content-Length",
    "Status",
    "X-IMAP",
    "X-IMAPbase",
    "X-Keywords",
    "X-Status",
    "X-UID",
];

/// The date of a From_ line, as written (the zone, when the line has one, in seconds east
/// of UTC; without one the date is local time, `mktime()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FromDate {
    /// Year (e.g. 2026).
    pub year: i32,
    /// Month, 0-11.
    pub month: u32,
    /// Day of the month, 1-31.
    pub day: u32,
    /// Hour, minute, second.
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// Numeric zone, seconds east of UTC.
    pub zone: Option<i32>,
}

impl FromDate {
    /// Seconds since the epoch for the date taken as UTC (before any zone).
    pub fn utc_seconds(&self) -> i64 {
        // Days from civil (Howard Hinnant's algorithm), valid for any year.
        let y = i64::from(self.year) - i64::from(self.month < 2);
        let m = i64::from(self.month) + 1;
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn digit(b: Option<&u8>) -> Option<u32> {
    b.filter(|c| c.is_ascii_digit())
        .map(|c| u32::from(c - b'0'))
}

fn month(s: &[u8]) -> Option<u32> {
    let m = s.get(..3)?;
    let found = MONTHS.iter().position(|n| n.eq_ignore_ascii_case(m));
    // mbox_parse_month's "???" hack.
    let i = match found {
        Some(i) => i as u32,
        None if m == b"???" => 0,
        None => return None,
    };
    (s.get(3) == Some(&b' ')).then_some(i)
}

fn year(s: &[u8]) -> Option<i32> {
    let mut y = 0i32;
    for i in 0..4 {
        y = y * 10 + digit(s.get(i))? as i32;
    }
    Some(y)
}

/// Parses what follows `From ` on a From_ line (up to and maybe past its end of line), as
/// `mbox_from_parse()`: `<sender> <date>`; `None` if it is no From_ line.
pub fn parse_from_line(msg: &[u8]) -> Option<FromDate> {
    let end = msg.len();
    let mut i = 0;
    let at = |i: usize| msg.get(i).copied();
    if at(0) == Some(b'"') {
        let mut esc = false;
        i = 1;
        while i < end && (msg[i] != b'"' || esc) {
            if msg[i] == b'\r' || msg[i] == b'\n' {
                return None;
            }
            esc = msg[i] == b'\\';
            i += 1;
        }
        i += 1;
    }
    while i < end && msg[i] != b' ' {
        if msg[i] == b'\r' || msg[i] == b'\n' {
            return None;
        }
        i += 1;
    }
    while i < end && msg[i] == b' ' {
        i += 1;
    }
    if i + 29 - 3 - 5 > end {
        return None;
    }
    let mut d = FromDate {
        year: 0,
        month: 0,
        day: 0,
        hour: 0,
        minute: 0,
        second: 0,
        zone: None,
    };
    i += 4; // weekday
    let alt_stamp;
    let rest = msg.get(i..)?;
    if let Some(m) = month(rest) {
        alt_stamp = false;
        d.month = m;
        i += 4;
        if at(i) == Some(b' ') {
            i += 1;
        }
        if at(i + 1) == Some(b' ') {
            d.day = digit(msg.get(i))?;
            i += 2;
        } else {
            d.day = digit(msg.get(i))? * 10 + digit(msg.get(i + 1))?;
            if at(i + 2) != Some(b' ') {
                return None;
            }
            i += 3;
        }
    } else {
        // "Thu, 9 Nov 2002 22:33:52"
        alt_stamp = true;
        i += 1;
        d.day = digit(msg.get(i))?;
        i += 1;
        if let Some(x) = digit(msg.get(i)) {
            d.day = d.day * 10 + x;
            i += 1;
        }
        if at(i) != Some(b' ') {
            return None;
        }
        i += 1;
        d.month = month(msg.get(i..)?)?;
        i += 4;
        d.year = year(msg.get(i..)?)?;
        i += 5;
    }
    if d.day == 0 {
        d.day = 1;
    }
    d.hour = digit(msg.get(i))? * 10 + digit(msg.get(i + 1))?;
    if at(i + 2) != Some(b':') {
        return None;
    }
    i += 3;
    d.minute = digit(msg.get(i))? * 10 + digit(msg.get(i + 1))?;
    i += 2;
    if at(i) == Some(b':') {
        i += 1;
        d.second = digit(msg.get(i))? * 10 + digit(msg.get(i + 1))?;
        i += 2;
        if !alt_stamp {
            if at(i) != Some(b' ') {
                return None;
            }
            i += 1;
        }
    } else if !alt_stamp {
        if at(i) != Some(b' ') {
            return None;
        }
        i += 1;
    }
    let zone_at = |i: usize| -> Option<i32> {
        let sign = at(i)?;
        if sign != b'-' && sign != b'+' {
            return None;
        }
        let v = (digit(msg.get(i + 1))? * 10 + digit(msg.get(i + 2))?) * 3600
            + (digit(msg.get(i + 3))? * 10 + digit(msg.get(i + 4))?) * 60;
        let v = v as i32;
        Some(if sign == b'-' { -v } else { v })
    };
    if alt_stamp {
    } else if (0..4).any(|k| digit(msg.get(i + k)).is_none()) {
        // A named zone (or a numeric one) before the year.
        if let (Some(z), Some(b' ')) = (zone_at(i), at(i + 5)) {
            d.zone = Some(z);
            i += 6;
        } else {
            while i < end && msg[i] != b' ' {
                if msg[i] == b'\r' || msg[i] == b'\n' {
                    return None;
                }
                i += 1;
            }
            if i + 5 > end {
                return None;
            }
            i += 1;
        }
    }
    if !alt_stamp {
        d.year = year(msg.get(i..)?)?;
        i += 4;
    }
    if d.zone.is_none() && i < end && at(i) == Some(b' ') {
        d.zone = zone_at(i + 1);
    }
    // utc_mktime()/mktime() refuse what does not exist.
    if d.month > 11 || d.day > 31 || d.hour > 23 || d.minute > 59 || d.second > 60 {
        return None;
    }
    Some(d)
}

/// True if `line` (from `From ` on) is a From_ line Dovecot accepts as a boundary.
pub fn is_from_line(line: &[u8]) -> bool {
    line.starts_with(b"From ") && parse_from_line(&line[5..]).is_some()
}

/// One header line kept in the presented message: bytes `start..end` of the header block
/// (the line without its line end), followed by `\n` unless the block ends without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptLine {
    /// Offset of the line in the header block.
    pub start: usize,
    /// Offset of its end (before `\r\n` / `\n`).
    pub end: usize,
    /// True when the file has a line end after it (presented as `\n`).
    pub newline: bool,
    /// True when the file has exactly `\n` there (the line and its end can be presented
    /// as one range of the file).
    pub plain_lf: bool,
}

/// What Dovecot reads from one message's header block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    /// Length of the header block in the file, the empty line ending it included.
    pub len: usize,
    /// True when an empty line ended it (else it runs to the end of the message).
    pub has_eoh: bool,
    /// The lines presented, in order (the empty line ending the block included).
    pub kept: Vec<KeptLine>,
    /// Size of the presented header (kept lines with `\n` line ends).
    pub presented_len: u64,
    /// Line ends in the presented header (all `\n`).
    pub presented_lines: u64,
    /// `Content-Length`, when valid.
    pub content_length: Option<u64>,
    /// `X-UID` when it is a number.
    pub uid: Option<u32>,
    /// Flags of `Status` and `X-Status`.
    pub flags: MailFlags,
    /// Keyword names of `X-Keywords`.
    pub keywords: Vec<String>,
    /// `X-IMAPbase`: UIDVALIDITY, last UID, keyword names.
    pub imapbase: Option<(u32, u32, Vec<String>)>,
    /// The bytes `mbox_md5 = apop3d` hashes (the GUID is their MD5).
    pub md5_input: Vec<u8>,
    /// True for c-client's "FOLDER INTERNAL DATA" message (`X-IMAP` in the first message,
    /// `parse_x_imap()`), which is no mail: Dovecot never shows it.
    pub pseudo: bool,
}

/// One header line as Dovecot's header parser sees it.
struct Line<'a> {
    /// Offset of the line in the block.
    start: usize,
    /// The line without its line end.
    text: &'a [u8],
    /// Line end length (0 at the end of the input, 1 or 2).
    eol: usize,
}

fn lines(block: &[u8]) -> impl Iterator<Item = Line<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= block.len() {
            return None;
        }
        let rest = &block[at..];
        let (text, eol) = match rest.iter().position(|&b| b == b'\n') {
            Some(n) if n > 0 && rest[n - 1] == b'\r' => (&rest[..n - 1], 2),
            Some(n) => (&rest[..n], 1),
            None => (rest, 0),
        };
        let line = Line {
            start: at,
            text,
            eol,
        };
        at += text.len() + eol;
        Some(line)
    })
}

fn is_lwsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A header's name (before ':', trailing blanks removed) and value (after ':' and one
/// blank), as `message_parse_header_next()` without `SKIP_INITIAL_LWSP`; a line without ':'
/// is all value with an empty name.
fn split_header(text: &[u8]) -> (&[u8], &[u8]) {
    let Some(colon) = text.iter().position(|&b| b == b':') else {
        return (b"", text);
    };
    let mut name_end = colon;
    while name_end > 0 && is_lwsp(text[name_end - 1]) {
        name_end -= 1;
    }
    let mut value = &text[colon + 1..];
    if value.first().is_some_and(|&b| is_lwsp(b)) {
        value = &value[1..];
    }
    (&text[..name_end], value)
}

fn digits_value(v: &[u8]) -> Option<u64> {
    let n = v.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0
        || n > 19
        || !v[n..]
            .iter()
            .all(|&b| is_lwsp(b) || b == b'\n' || b == b'\r')
    {
        return None;
    }
    std::str::from_utf8(&v[..n]).ok()?.parse().ok()
}

fn words(v: &[u8]) -> Vec<String> {
    v.split(|&b| is_lwsp(b) || b == b'\n' || b == b'\r')
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// Parses the header block at the start of `msg` (a message without its From_ line),
/// as Dovecot's sync (`mbox_sync_parse_next_mail()`) and header filter read it. `first`
/// is true for the first message of the file (where `X-IMAPbase` counts).
pub fn parse_header(msg: &[u8], first: bool) -> HeaderBlock {
    let mut h = HeaderBlock::default();
    // Name and whether it is hidden, of the header the current line belongs to.
    let mut hidden = false;
    let mut name: Vec<u8> = Vec::new();
    let mut full: Vec<u8> = Vec::new();
    let mut seen_received = false;
    let mut in_received = false;
    let mut in_header = false;
    let mut end = 0;
    let mut pending: Option<Vec<u8>> = None;
    let apply = |h: &mut HeaderBlock, name: &[u8], full: &[u8]| {
        apply_hidden(h, name, full, first);
    };
    for line in lines(msg) {
        end = line.start + line.text.len() + line.eol;
        let continued = in_header && line.text.first().is_some_and(|&b| is_lwsp(b));
        if line.text.is_empty() && !continued {
            if let Some(n) = pending.take() {
                apply(&mut h, &n, &full);
            }
            h.has_eoh = true;
            h.kept.push(KeptLine {
                start: line.start,
                end: line.start,
                newline: line.eol > 0,
                plain_lf: line.eol == 1,
            });
            break;
        }
        let value: &[u8];
        if continued {
            value = line.text;
        } else {
            if let Some(n) = pending.take() {
                apply(&mut h, &n, &full);
            }
            let (n, v) = split_header(line.text);
            name = n.to_vec();
            value = v;
            hidden = !name.is_empty()
                && HIDDEN
                    .iter()
                    .any(|x| x.as_bytes().eq_ignore_ascii_case(&name));
            full.clear();
            in_header = true;
        }
        if hidden {
            if continued {
                full.push(b'\n');
            }
            full.extend_from_slice(value);
            pending = Some(name.clone());
        } else {
            if !continued && in_received {
                // The first Received header ended with its last continuation line.
                in_received = false;
                seen_received = true;
            }
            md5_more(
                &mut h.md5_input,
                &name,
                value,
                seen_received,
                &mut in_received,
            );
            h.kept.push(KeptLine {
                start: line.start,
                end: line.start + line.text.len(),
                newline: line.eol > 0,
                plain_lf: line.eol == 1,
            });
        }
    }
    if let Some(n) = pending.take() {
        apply(&mut h, &n, &full);
    }
    h.len = end;
    for k in &h.kept {
        h.presented_len += (k.end - k.start) as u64 + u64::from(k.newline);
        h.presented_lines += u64::from(k.newline);
    }
    h
}

/// `mbox-md5-apop3d.c`: Date and Message-ID until a Received header was seen, the first
/// Received header (all its lines), every Delivered-To and X-Delivery-ID.
/// `in_received` is set while the lines of the first Received header are read (the caller
/// sets `seen_received` when the next header starts).
fn md5_more(
    out: &mut Vec<u8>,
    name: &[u8],
    value: &[u8],
    seen_received: bool,
    in_received: &mut bool,
) {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("Date") || is("Message-ID") {
        if !seen_received {
            out.extend_from_slice(value);
        }
    } else if is("Received") {
        if !seen_received {
            out.extend_from_slice(value);
            *in_received = true;
        }
    } else if is("Delivered-To") || is("X-Delivery-ID") {
        out.extend_from_slice(value);
    }
}

fn apply_hidden(h: &mut HeaderBlock, name: &[u8], full: &[u8], first: bool) {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("Content-Length") {
        if h.content_length.is_none() {
            h.content_length = digits_value(full);
        }
    } else if is("X-UID") {
        if h.uid.is_none() {
            h.uid = digits_value(full).and_then(|v| u32::try_from(v).ok());
        }
    } else if is("Status") {
        for &c in full {
            if c == b'R' {
                h.flags.insert(MailFlags::SEEN);
            }
        }
    } else if is("X-Status") {
        for &c in full {
            match c {
                b'A' => h.flags.insert(MailFlags::ANSWERED),
                b'F' => h.flags.insert(MailFlags::FLAGGED),
                b'T' => h.flags.insert(MailFlags::DRAFT),
                b'D' => h.flags.insert(MailFlags::DELETED),
                _ => {}
            }
        }
    } else if is("X-Keywords") {
        if h.keywords.is_empty() {
            for w in words(full) {
                if !h.keywords.contains(&w) {
                    h.keywords.push(w);
                }
            }
        }
    } else if (is("X-IMAPbase") || is("X-IMAP")) && first && h.imapbase.is_none() {
        let w = words(full);
        let validity = w
            .first()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|v| *v != 0);
        let last = w.get(1).and_then(|v| v.parse::<u32>().ok());
        if let (Some(v), Some(l)) = (validity, last) {
            h.pseudo = is("X-IMAP");
            h.imapbase = Some((v, l, w[2..].to_vec()));
        }
    }
}

/// Line ends (`\n`) in `bytes`.
pub fn count_lf(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_lines_parse_like_dovecot() {
        let d = parse_from_line(b"u@vm  Mon Dec 07 09:07:49 2026\n").unwrap();
        assert_eq!(
            (d.year, d.month, d.day, d.hour, d.second),
            (2026, 11, 7, 9, 49)
        );
        assert_eq!(d.zone, None);
        let d = parse_from_line(b"MAILER-DAEMON Thu Nov  9 22:33:52 2001 +0300\n").unwrap();
        assert_eq!((d.day, d.zone), (9, Some(3 * 3600)));
        assert_eq!(d.utc_seconds(), 1_005_345_232);
        let d = parse_from_line(b"x Thu Nov 9 22:33 EET 2001\n").unwrap();
        assert_eq!((d.day, d.minute, d.year), (9, 33, 2001));
        for bad in [
            &b"here\n"[..],
            b"",
            b"x",
            b"someone Mon Foo 07 09:07:49 2026\n",
        ] {
            assert_eq!(
                parse_from_line(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(is_from_line(b"From a Mon Dec  7 09:07:49 2026"));
        assert!(!is_from_line(b"From here on"));
    }

    #[test]
    fn hidden_headers_are_left_out_with_their_continuations() {
        let msg = b"From: a\nX-IMAPbase: 17 0000000003 kw1 kw2\nX-UID: 2\nStatus: RO\n\
            X-Keywords: kw2  \n\tkw1\nSubject: s\r\n\tcont\nX-Status: AFD\n\nbody\n";
        let h = parse_header(msg, true);
        assert_eq!(h.uid, Some(2));
        assert_eq!(h.imapbase, Some((17, 3, vec!["kw1".into(), "kw2".into()])));
        assert_eq!(
            h.flags,
            MailFlags(
                MailFlags::SEEN.0
                    | MailFlags::ANSWERED.0
                    | MailFlags::FLAGGED.0
                    | MailFlags::DELETED.0
            )
        );
        assert_eq!(h.keywords, ["kw2", "kw1"]);
        let mut shown = Vec::new();
        for k in &h.kept {
            shown.extend_from_slice(&msg[k.start..k.end]);
            if k.newline {
                shown.push(b'\n');
            }
        }
        assert_eq!(shown, b"From: a\nSubject: s\n\tcont\n\n");
        assert_eq!(h.presented_len, shown.len() as u64);
        assert_eq!(&msg[h.len..], b"body\n");
        assert!(h.has_eoh);
    }

    #[test]
    fn the_c_client_pseudo_message_is_marked() {
        let pseudo = b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n\
            X-IMAP: 1700000000 0000000007 kw\nStatus: RO\n\nThis text is part of...\n";
        let h = parse_header(pseudo, true);
        assert!(h.pseudo);
        assert_eq!(h.imapbase, Some((1_700_000_000, 7, vec!["kw".into()])));
        assert!(!parse_header(pseudo, false).pseudo);
        assert!(!parse_header(b"X-IMAPbase: 1 0000000002\n\n", true).pseudo);
    }

    #[test]
    fn no_input_makes_the_parsers_panic() {
        let base: &[u8] = b"From a@b Mon Dec  7 09:07:49 2026 +0100\nX-UID: 3\r\n\
            Status: RO\nX-Keywords: a b\n c\nSubject: x\n\nbody\n";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut input = base[..(seed as usize) % (base.len() + 1)].to_vec();
            if round % 2 == 0 && !input.is_empty() {
                let at = (seed >> 20) as usize % input.len();
                input[at] = (seed >> 40) as u8;
            }
            let _ = parse_from_line(&input);
            let _ = is_from_line(&input);
            let h = parse_header(&input, round % 3 == 0);
            assert!(h.len <= input.len());
            for k in &h.kept {
                assert!(k.start <= k.end && k.end <= input.len());
            }
        }
    }

    #[test]
    fn md5_input_follows_apop3d() {
        let msg = b"Date: d1\nReceived: r1\n r1b\nReceived: r2\nMessage-ID: <m>\n\
            Delivered-To: x\n\n";
        let h = parse_header(msg, false);
        assert_eq!(h.md5_input, b"d1r1 r1bx");
        let h = parse_header(b"no colon line\nStatus: R", false);
        assert!(!h.has_eoh && h.flags == MailFlags::SEEN);
        assert_eq!(h.presented_len, 14);
    }
}
