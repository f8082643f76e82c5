//! `imap://USER@HOST[:PORT]` and `imaps://USER@HOST[:PORT]` locations (RFC 5092's server
//! part): the account an IMAP mount reads.
//!
//! USER may be percent-encoded (`bob%40example.com`) and may name a Dovecot master user
//! (`bob*admin`); a bare `@` in it is accepted too (the last `@` ends the user). A
//! password is never accepted in the URL (`user:pass@`): it would show in `ps` and in
//! `/proc/mounts`.

use crate::error::{Error, Result};

/// A parsed IMAP location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapUrl {
    /// `imaps://`: TLS from the first byte (port 993 by default).
    pub tls: bool,
    /// The login (decoded).
    pub user: String,
    /// The server.
    pub host: String,
    /// The port (143 or 993 unless given).
    pub port: u16,
}

impl ImapUrl {
    /// Parses `location` if it is an IMAP URL (`None` if it is not one: a mail_location
    /// or path).
    pub fn parse(location: &str) -> Result<Option<ImapUrl>> {
        let lower = location.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("imaps://") {
            (true, &location[8..])
        } else if lower.starts_with("imap://") {
            (false, &location[7..])
        } else {
            return Ok(None);
        };
        let bad = |what: &str| Error::Location {
            location: location.to_string(),
            what: what.to_string(),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(bad(
                "an IMAP location is imap://USER@HOST[:PORT] (no mailbox path)",
            ));
        }
        let Some((user, server)) = rest.rsplit_once('@') else {
            return Err(bad("no user: imap://USER@HOST[:PORT]"));
        };
        if user.contains(':') || user.contains(";AUTH=") {
            return Err(bad(
                "no password or ;AUTH= in the URL: use --password-file or MAILFS_IMAP_PASSWORD",
            ));
        }
        let user = percent_decode(user).ok_or_else(|| bad("bad %XX escape in the user"))?;
        if user.is_empty() {
            return Err(bad("empty user"));
        }
        let (host, port) = match server.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad("unclosed [ in the host"))?;
                (host.to_string(), after.strip_prefix(':'))
            }
            None => match server.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (server.to_string(), None),
            },
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
            None if tls => 993,
            None => 143,
        };
        Ok(Some(ImapUrl {
            tls,
            user,
            host,
            port,
        }))
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_defaults_and_refuse_passwords() {
        let u = ImapUrl::parse("imap://bob@127.0.0.1").unwrap().unwrap();
        assert_eq!(
            (u.tls, u.user.as_str(), u.host.as_str(), u.port),
            (false, "bob", "127.0.0.1", 143)
        );
        let u = ImapUrl::parse("IMAPS://bob%40example.com*admin@mail.example.com:1993/")
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.tls, u.user.as_str(), u.host.as_str(), u.port),
            (true, "bob@example.com*admin", "mail.example.com", 1993)
        );
        let u = ImapUrl::parse("imaps://alice@example.com@[::1]")
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port),
            ("alice@example.com", "::1", 993)
        );
        assert_eq!(ImapUrl::parse("maildir:/srv/mail").unwrap(), None);
        assert_eq!(ImapUrl::parse("/srv/imap://x").unwrap(), None);
        for bad in [
            "imap://host",
            "imap://bob:secret@host",
            "imap://@host",
            "imap://bob@host:0",
            "imap://bob@host:99999",
            "imap://bob@host/INBOX",
            "imap://bob@",
            "imap://b%zzob@host",
        ] {
            assert!(ImapUrl::parse(bad).is_err(), "{bad} must be refused");
        }
    }
}
