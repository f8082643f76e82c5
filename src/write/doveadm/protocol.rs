//! The doveadm server protocol, as Dovecot 2.3 speaks it (`src/doveadm/client-connection-
//! tcp.c`, `doveadm-print-server.c`, `lib/strescape.c`, `lib/ostream-multiplex.c`,
//! `lib-mail/istream-dot.c`): pure encoding and decoding, no I/O.
//!
//! - Handshake: the client sends `VERSION\tdoveadm-server\t1\t3`; a server of minor version
//!   above 0 answers `VERSION\tdoveadm-client\t1\t<minor>`, then `+` (the unix socket, mode 0600:
//!   pre-authenticated) or `-` (TCP: the client sends `PLAIN\t<base64 "\0doveadm\0pass">`
//!   and gets `+` or `-`). From then on the server's output is multiplexed.
//! - A command is one line of tab-escaped fields: `<flags>\t<user>\t<command words and
//!   arguments>`. `save` reads the message after the line as a dot stream.
//! - The server's output is framed (`[channel][4-byte big-endian length][data]`): channel 0
//!   carries the command output, channel `L` Dovecot's log lines for the command (a type
//!   byte 1-6, the log prefix, the text). The output of one command is its values (each
//!   tab-escaped and followed by a tab, all on one line), then `\n+\n` on success or
//!   `\n-<CODE>\n` on failure (`NOTFOUND`, `NOTPOSSIBLE`/`DATAERR`, `NOUSER`, `NOPERM`,
//!   `TEMPFAIL`, `USAGE`, `UNKNOWN`, ...).

/// The handshake line the client sends (protocol 1.3: multiplexed output with logs).
pub const CLIENT_VERSION: &[u8] = b"VERSION\tdoveadm-server\t1\t3\n";
/// True for the server's answer to it: major version 1, any minor version above 0
/// (2.3.19 answers `VERSION\tdoveadm-client\t1\t2`), which multiplexes its output.
pub fn is_server_version(line: &str) -> bool {
    line.strip_prefix("VERSION\tdoveadm-client\t1\t")
        .and_then(|minor| minor.parse::<u32>().ok())
        .is_some_and(|minor| minor > 0)
}
/// The channel of command output.
pub const OUTPUT_CHANNEL: u8 = 0;
/// The channel of log lines.
pub const LOG_CHANNEL: u8 = b'L';

/// Appends `field` escaped as Dovecot's `str_tabescape()` does: `\001` -> `\0011`,
/// TAB -> `\001t`, CR -> `\001r`, LF -> `\001n`.
pub fn push_tab_escaped(out: &mut Vec<u8>, field: &[u8]) {
    for &b in field {
        match b {
            0x01 => out.extend_from_slice(b"\x011"),
            b'\t' => out.extend_from_slice(b"\x01t"),
            b'\r' => out.extend_from_slice(b"\x01r"),
            b'\n' => out.extend_from_slice(b"\x01n"),
            _ => out.push(b),
        }
    }
}

/// The inverse of [`push_tab_escaped`] (`str_append_tabunescaped()`; `\0010` is NUL).
pub fn tab_unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == 0x01 && i + 1 < field.len() {
            out.push(match field[i + 1] {
                b'0' => 0,
                b'1' => 1,
                b't' => b'\t',
                b'r' => b'\r',
                b'n' => b'\n',
                other => other,
            });
            i += 2;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// One command line: no flags, `user`, then `args` (command words first), each field
/// tab-escaped.
pub fn command_line(user: &str, args: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'\t');
    push_tab_escaped(&mut out, user.as_bytes());
    for a in args {
        out.push(b'\t');
        push_tab_escaped(&mut out, a.as_bytes());
    }
    out.push(b'\n');
    out
}

/// `message` as a dot stream (`ostream-dot`'s encoding, read back by `i_stream_create_dot(
/// input, FALSE)`): a `.` at the start of a line is doubled, and the stream ends with a
/// line break and `.`. The reader keeps the line break before the final `.` for itself
/// (`send_last_lf` false), so the message's own last line break, if it has one, is sent
/// before it and survives, and a message without one gets none added.
pub fn dot_encode(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    // A message ending in a bare CR would have that CR taken for the start of the
    // terminator's CRLF: end with CRLF then, so that the CR stays data.
    if message.last() == Some(&b'\r') {
        out.extend_from_slice(b"\r\n.\r\n");
    } else {
        out.extend_from_slice(b"\n.\n");
    }
    out
}

/// The inverse of [`dot_encode`], as the server reads it (for tests).
pub fn dot_decode(stream: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut line_start = true;
    let mut i = 0;
    while i < stream.len() {
        if line_start && stream[i] == b'.' {
            match stream.get(i + 1) {
                Some(b'\n') => return Some(strip_last_break(out)),
                Some(b'\r') if stream.get(i + 2) == Some(&b'\n') => {
                    return Some(strip_last_break(out));
                }
                Some(b'.') => i += 1,
                _ => {}
            }
        }
        out.push(stream[i]);
        line_start = stream[i] == b'\n';
        i += 1;
    }
    None
}

fn strip_last_break(mut out: Vec<u8>) -> Vec<u8> {
    if out.last() == Some(&b'\n') {
        out.pop();
        if out.last() == Some(&b'\r') {
            out.pop();
        }
    }
    out
}

/// Frames of the server's multiplexed output, fed as bytes arrive.
#[derive(Debug, Default)]
pub struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    /// Adds received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame: (channel, data).
    pub fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if self.buf.len() < 5 {
            return None;
        }
        // The multiplex length is in network order (`cpu32_to_be()`), unlike the
        // little-endian store files the rest of mailfs reads.
        let len = self.buf[1..5]
            .iter()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        let len = usize::try_from(len).ok()?;
        if self.buf.len() < 5 + len {
            return None;
        }
        let channel = self.buf[0];
        let data = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Some((channel, data))
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `+`.
    Ok,
    /// `-<CODE>` (empty when the server gave none).
    Failed(String),
}

/// A command's output channel, accumulated until its end line.
#[derive(Debug, Default)]
pub struct Output {
    buf: Vec<u8>,
}

impl Output {
    /// Adds output bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The values and the outcome once the end line has arrived (and removes them, so
    /// that the next command's output can follow). Values are tab-escaped and each is
    /// followed by a tab, all on one line, so no value holds a line break: the first two
    /// complete lines are the values and the end line.
    pub fn take_reply(&mut self) -> Option<(Vec<String>, Outcome)> {
        let first = self.buf.iter().position(|&b| b == b'\n')?;
        let second = first + 1 + self.buf[first + 1..].iter().position(|&b| b == b'\n')?;
        let values_line = &self.buf[..first];
        let end = &self.buf[first + 1..second];
        let outcome = match end {
            b"+" => Outcome::Ok,
            e if e.first() == Some(&b'-') => {
                Outcome::Failed(String::from_utf8_lossy(&e[1..]).into_owned())
            }
            _ => Outcome::Failed(format!(
                "unexpected reply line {:?}",
                String::from_utf8_lossy(end)
            )),
        };
        let values = values_line
            .split(|&b| b == b'\t')
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(&tab_unescape(v)).into_owned())
            .collect();
        self.buf.drain(..=second);
        Some((values, outcome))
    }
}

/// One log line from the log channel: its level and text (prefix included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// 1 debug, 2 info, 3 warning, 4 error, 5 fatal, 6 panic (`doveadm_log_type_to_char`).
    pub level: u8,
    /// What Dovecot logged.
    pub text: String,
}

/// Splits log channel data into lines.
pub fn log_lines(data: &[u8]) -> Vec<LogLine> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_first() {
            Some((&level, text)) if (1..=6).contains(&level) => LogLine {
                level,
                text: String::from_utf8_lossy(text).into_owned(),
            },
            _ => LogLine {
                level: 2,
                text: String::from_utf8_lossy(l).into_owned(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_tab_escaped_both_ways() {
        let mut out = Vec::new();
        push_tab_escaped(&mut out, b"a\tb\nc\rd\x01e");
        assert_eq!(out, b"a\x01tb\x01nc\x01rd\x011e");
        assert_eq!(tab_unescape(&out), b"a\tb\nc\rd\x01e");
        assert_eq!(
            command_line("bob", &["flags", "add", "\\Seen", "mailbox", "A\tB"]),
            b"\tbob\tflags\tadd\t\\Seen\tmailbox\tA\x01tB\n"
        );
    }

    #[test]
    fn dot_streams_keep_the_message_exactly() {
        for m in [
            &b"Subject: x\n\nbody\n"[..],
            b"no final line break",
            b".starts with a dot\n..two\n.\n",
            b"crlf\r\n\r\n.dot\r\n",
            b"ends in a bare CR\r",
            b"",
            b"\n",
        ] {
            let enc = dot_encode(m);
            assert_eq!(
                dot_decode(&enc).as_deref(),
                Some(m),
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
        assert_eq!(dot_encode(b"a\n.b\n"), b"a\n..b\n\n.\n");
    }

    #[test]
    fn frames_and_replies_are_decoded_as_they_arrive() {
        let mut stream = Vec::new();
        for (ch, data) in [
            (b'L', &b"\x04Error: Mailbox x: not found\n"[..]),
            (0, b"\n-NOTFOUND\n"),
        ] {
            stream.push(ch);
            let len = data.len() as u32;
            stream.extend_from_slice(&[
                (len >> 24) as u8,
                (len >> 16) as u8,
                (len >> 8) as u8,
                len as u8,
            ]);
            stream.extend_from_slice(data);
        }
        let mut demux = Demux::default();
        let mut out = Output::default();
        let mut logs = Vec::new();
        for chunk in stream.chunks(3) {
            demux.feed(chunk);
            while let Some((ch, data)) = demux.next_frame() {
                match ch {
                    LOG_CHANNEL => logs.extend(log_lines(&data)),
                    _ => out.feed(&data),
                }
            }
        }
        assert_eq!(
            out.take_reply(),
            Some((vec![], Outcome::Failed("NOTFOUND".into())))
        );
        assert_eq!(logs[0].level, 4);
        assert!(logs[0].text.contains("not found"));
        out.feed(b"12\t\\Seen \\Flagged\t\n+\n");
        assert_eq!(
            out.take_reply(),
            Some((
                vec!["12".to_string(), "\\Seen \\Flagged".to_string()],
                Outcome::Ok
            ))
        );
        assert_eq!(out.take_reply(), None);
    }
}
