//! Names presented on the mount, and their inverse.
//!
//! - A message with a UID is `<uid>.eml` (decimal, no leading zeros).
//! - A file Dovecot has not given a UID yet is `pending-<base>.eml`, where `<base>` is its
//!   file name before the info separator, escaped.
//! - A mailbox level is its UTF-8 name, escaped.
//!
//! Escaping is reversible: `%` becomes `%25`; ':' (so that no name ever contains one), '/',
//! control characters and bytes that are not UTF-8 become `%XX`; with
//! [`Naming::portable`] also `\ * ? " < > |`, which SMB/CIFS clients cannot use. A mailbox
//! level that would end in `.eml` gets its dot escaped (`x%2Eeml`) so it can never collide
//! with a message, and the levels `.`, `..` and the empty name (which Maildir++ names such
//! as `.a..b` can produce) become `%2E`, `%2E%2E` and `%00`, so that no mailbox can pose as
//! a directory link or escape the mount.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use crate::store::MessageKey;

const PENDING_PREFIX: &[u8] = b"pending-";
const MESSAGE_SUFFIX: &[u8] = b".eml";

/// How names are presented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Naming {
    /// Also escape the characters Windows (SMB/CIFS) forbids: `\ * ? " < > |`.
    pub portable: bool,
}

impl Naming {
    fn needs_escape(self, c: u8) -> bool {
        c == b'%'
            || c == b':'
            || c == b'/'
            || c < 0x20
            || c == 0x7f
            || (self.portable && b"\\*?\"<>|".contains(&c))
    }

    /// Escapes arbitrary bytes: '%', ':', '/', control characters (and with
    /// [`Naming::portable`] `\ * ? " < > |`) as `%XX`; invalid UTF-8 sequences byte by byte.
    /// [`unescape_bytes`] reverses it.
    pub fn escape_bytes(self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len());
        for chunk in raw.utf8_chunks() {
            for &c in chunk.valid().as_bytes() {
                if self.needs_escape(c) {
                    push_escaped(&mut out, c);
                } else {
                    out.push(c);
                }
            }
            for &c in chunk.invalid() {
                push_escaped(&mut out, c);
            }
        }
        out
    }

    /// The file name of a message.
    pub fn message_name(self, key: &MessageKey) -> OsString {
        match key {
            MessageKey::Uid(uid) => OsString::from(format!("{uid}.eml")),
            MessageKey::Pending(base) => {
                let mut n = PENDING_PREFIX.to_vec();
                n.extend(self.escape_bytes(base));
                n.extend_from_slice(MESSAGE_SUFFIX);
                OsString::from_vec(n)
            }
        }
    }

    /// The directory name of a mailbox level.
    pub fn folder_name(self, level: &str) -> OsString {
        match level {
            "" => return OsString::from("%00"),
            "." => return OsString::from("%2E"),
            ".." => return OsString::from("%2E%2E"),
            _ => {}
        }
        let mut out = self.escape_bytes(level.as_bytes());
        if out.ends_with(MESSAGE_SUFFIX) {
            let dot = out.len() - MESSAGE_SUFFIX.len();
            out.splice(dot..dot + 1, *b"%2E");
        }
        OsString::from_vec(out)
    }
}

fn push_escaped(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
}

/// The inverse of the escaping of [`Naming::folder_name`] and pending message names: each
/// `%XX` becomes the byte it stands for; `None` if a '%' is not followed by two hex digits.
pub fn unescape_bytes(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The message a file name refers to, if it has the shape of one.
pub fn parse_message_name(name: &OsStr) -> Option<MessageKey> {
    let stem = name.as_bytes().strip_suffix(MESSAGE_SUFFIX)?;
    if let Some(escaped) = stem.strip_prefix(PENDING_PREFIX) {
        let base = unescape_bytes(escaped)?;
        return (!base.is_empty()).then(|| MessageKey::Pending(Arc::from(base)));
    }
    if stem.is_empty() || stem[0] == b'0' || !stem.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(stem)
        .ok()?
        .parse::<u32>()
        .ok()
        .filter(|u| *u > 0)
        .map(MessageKey::Uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: Naming = Naming { portable: false };

    #[test]
    fn message_names_round_trip() {
        let keys = [
            MessageKey::Uid(1),
            MessageKey::Uid(u32::MAX),
            MessageKey::Pending(Arc::from(&b"1795460247.M1P2.host,S=28,W=32"[..])),
            MessageKey::Pending(Arc::from(&b"we:ird%\x01\xff name"[..])),
        ];
        for k in keys {
            let n = N.message_name(&k);
            assert!(!n.as_bytes().contains(&b':'), "{n:?}");
            assert_eq!(parse_message_name(&n), Some(k), "{n:?}");
        }
        assert_eq!(N.message_name(&MessageKey::Uid(7)), OsString::from("7.eml"));
    }

    #[test]
    fn rejects_names_that_are_not_messages() {
        for n in [
            "0.eml",
            "01.eml",
            "1.EML",
            "x.eml",
            "1",
            ".eml",
            "4294967296.eml",
        ] {
            assert_eq!(parse_message_name(OsStr::new(n)), None, "{n}");
        }
        assert_eq!(parse_message_name(OsStr::new("pending-%zz.eml")), None);
        assert_eq!(parse_message_name(OsStr::new("pending-.eml")), None);
    }

    #[test]
    fn folder_names_are_escaped_and_never_look_like_messages() {
        assert_eq!(
            N.folder_name("Ünïcode & more"),
            OsString::from("Ünïcode & more")
        );
        assert_eq!(N.folder_name("a:b%c"), OsString::from("a%3Ab%25c"));
        let n = N.folder_name("12.eml");
        assert_eq!(n, OsString::from("12%2Eeml"));
        assert_eq!(parse_message_name(&n), None);
    }

    #[test]
    fn hostile_levels_cannot_pose_as_links_or_escape() {
        for (level, shown) in [
            ("", "%00"),
            (".", "%2E"),
            ("..", "%2E%2E"),
            ("a/b", "a%2Fb"),
        ] {
            assert_eq!(N.folder_name(level), OsString::from(shown), "{level:?}");
        }
        assert_eq!(N.folder_name("..."), OsString::from("..."));
    }

    #[test]
    fn portable_names_escape_what_windows_forbids_reversibly() {
        let p = Naming { portable: true };
        let raw = "a\\b*c?d\"e<f>g|h:i";
        let shown = p.folder_name(raw);
        assert_eq!(shown, OsString::from("a%5Cb%2Ac%3Fd%22e%3Cf%3Eg%7Ch%3Ai"));
        assert_eq!(unescape_bytes(shown.as_bytes()).unwrap(), raw.as_bytes());
        assert_eq!(N.folder_name("a*b"), OsString::from("a*b"));
        let key = MessageKey::Pending(Arc::from(&b"x*y"[..]));
        let name = p.message_name(&key);
        assert_eq!(name, OsString::from("pending-x%2Ay.eml"));
        assert_eq!(parse_message_name(&name), Some(key));
    }
}
