//! A message's GUID as Dovecot reports it, held without a heap allocation in the two
//! common cases: 128 bits in hex (dbox and mbox messages; Maildir messages Dovecot saved
//! with a GUID in `dovecot-uidlist`), and a Maildir message's file base name.
//!
//! A view holds one per message, so a `Box<str>` each (a 32-digit string: 48 bytes of heap
//! with the allocator's overhead, scattered among the build's temporaries) was a large part
//! of a view's memory. Invariant: [`Guid::resolve`] returns exactly the string the store
//! read, byte for byte (uppercase hex or any other spelling is kept as text).

use std::borrow::Cow;
use std::fmt;

use super::Locator;

/// A message GUID (see the module documentation).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Guid(Repr);

#[derive(Clone, PartialEq, Eq, Hash, Default)]
enum Repr {
    /// No GUID known (doveadm prints an empty value).
    #[default]
    Empty,
    /// 32 lowercase hex digits, as `guid_128_to_string` writes them
    /// (`src/lib/guid.c`), kept as their 16 bytes.
    Hex([u8; 16]),
    /// The base name of the message's Maildir file (before the `:` info), which Dovecot
    /// reports when `dovecot-uidlist` records no GUID (`maildir_get_special`, the
    /// `MAIL_FETCH_GUID` case, in `src/lib-storage/index/maildir/maildir-mail.c`).
    MaildirBase,
    /// Anything else, as read.
    Text(Box<str>),
}

impl Guid {
    /// The GUID `s`, as the store read it.
    pub fn new(s: &str) -> Guid {
        if s.is_empty() {
            return Guid(Repr::Empty);
        }
        match hex128(s.as_bytes()) {
            Some(bytes) => Guid(Repr::Hex(bytes)),
            None => Guid(Repr::Text(s.into())),
        }
    }

    /// A Maildir message's GUID that is the base name of its file: resolved against its
    /// [`Locator::Maildir`] (the base name never changes with the flags, so a renamed file
    /// keeps it).
    pub fn maildir_base() -> Guid {
        Guid(Repr::MaildirBase)
    }

    /// Its 16 bytes, when it is 32 lowercase hex digits (what a packed view keeps).
    pub(crate) fn hex_bytes(&self) -> Option<&[u8; 16]> {
        match &self.0 {
            Repr::Hex(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The GUID whose text is the lowercase hex of `bytes`.
    pub(crate) fn from_hex_bytes(bytes: [u8; 16]) -> Guid {
        Guid(Repr::Hex(bytes))
    }

    /// Its text, when it is neither hex nor the Maildir base name nor empty.
    pub(crate) fn text(&self) -> Option<&str> {
        match &self.0 {
            Repr::Text(s) => Some(s),
            _ => None,
        }
    }

    /// True when no GUID is known.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self.0, Repr::Empty)
    }

    /// True for [`Guid::maildir_base`].
    pub(crate) fn is_maildir_base(&self) -> bool {
        matches!(self.0, Repr::MaildirBase)
    }

    /// The GUID's text; `locator` is the message's (used by [`Guid::maildir_base`] only).
    pub fn resolve<'a>(&'a self, locator: &'a Locator) -> Cow<'a, str> {
        match &self.0 {
            Repr::Empty => Cow::Borrowed(""),
            Repr::Hex(bytes) => Cow::Owned(to_hex(bytes)),
            Repr::Text(s) => Cow::Borrowed(s),
            Repr::MaildirBase => {
                let name = locator.maildir().unwrap_or_default();
                // "cur/" or "new/", then the base name up to the info separator.
                let file = name.get(4..).unwrap_or_default();
                String::from_utf8_lossy(crate::format::maildir::split_name(file).0)
            }
        }
    }
}

impl From<&str> for Guid {
    fn from(s: &str) -> Guid {
        Guid::new(s)
    }
}

impl From<String> for Guid {
    fn from(s: String) -> Guid {
        Guid::new(&s)
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Empty => f.write_str("Guid(\"\")"),
            Repr::Hex(b) => write!(f, "Guid({})", to_hex(b)),
            Repr::MaildirBase => f.write_str("Guid(<maildir base name>)"),
            Repr::Text(s) => write!(f, "Guid({s:?})"),
        }
    }
}

/// The 16 bytes of exactly 32 lowercase hex digits.
fn hex128(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(g: &Guid) -> String {
        g.resolve(&Locator::Sdbox).into_owned()
    }

    #[test]
    fn every_spelling_comes_back_as_read() {
        for s in [
            "",
            "0123456789abcdef0123456789abcdef",
            "ffffffffffffffffffffffffffffffff",
            "00000000000000000000000000000000",
            // Not lowercase hex of 32 digits: kept as text.
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdefa",
            "0123456789abcdeg0123456789abcdef",
            "1700000000.M1P2.host",
            "<message-id@example.org>",
            "é",
        ] {
            assert_eq!(text(&Guid::new(s)), s);
        }
    }

    #[test]
    fn hex_guids_take_no_heap() {
        let g = Guid::new("a1b2c3d4e5f60718293a4b5c6d7e8f90");
        assert!(matches!(g.0, Repr::Hex(_)));
        assert!(std::mem::size_of::<Guid>() <= 24);
    }

    #[test]
    fn a_maildir_base_is_its_files_name_before_the_info() {
        let g = Guid::maildir_base();
        for (loc, want) in [
            (
                &b"cur/1700000000.M1P2.host,S=12,W=13:2,S"[..],
                "1700000000.M1P2.host,S=12,W=13",
            ),
            (b"new/1700000000.M1P2.host", "1700000000.M1P2.host"),
            (b"cur/base;2,FS", "base"),
        ] {
            let locator = Locator::Maildir(loc.into());
            assert_eq!(g.resolve(&locator), want);
        }
    }
}
