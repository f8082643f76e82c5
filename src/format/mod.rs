//! Pure parsers for Dovecot's on-disk formats.
//!
//! Bytes in, typed values or a [`FormatError`] out. Nothing in this module does I/O, knows
//! about paths, caches or FUSE; callers add the path to an error. No function here may panic
//! on any input: every length and offset that comes from a file is checked.

pub mod base64;
pub mod cache;
pub mod compression;
pub mod dbox;
pub mod index;
pub mod le;
pub mod listindex;
pub mod log;
pub mod maildir;
pub mod mbox;
pub mod mutf7;
#[cfg(test)]
pub(crate) mod testutil;

use std::fmt;

/// A parse failure: where in the input, and what was wrong.
///
/// `offset` is a byte offset into the parsed input (for line-oriented text formats, the
/// offset of the start of the offending line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// Byte offset into the input where the problem was found.
    pub offset: u64,
    /// What was wrong, in words an admin can act on.
    pub what: String,
}

impl FormatError {
    /// Builds an error at `offset`.
    pub fn new(offset: usize, what: impl Into<String>) -> Self {
        FormatError {
            offset: offset as u64,
            what: what.into(),
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for FormatError {}

/// Lowercase hex of `bytes`, as doveadm prints GUIDs and raw values.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// FNV-1a: a fast hash for maps keyed by names read from disk (a Maildir's 20,000 base
/// names per rebuild, a uidlist's records). Not for keys an attacker could choose to
/// collide: these come from directories only the mail user can write.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`Fnv`].
pub type FnvMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// IMAP system flags, with Dovecot's bit values (`enum mail_flags`, `src/lib-mail/mail-types.h`
/// at 2.3.19.1). `\Recent` (0x20) is deliberately absent: mailfs never reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MailFlags(pub u8);

impl MailFlags {
    /// `\Answered` (Maildir letter `R`).
    pub const ANSWERED: MailFlags = MailFlags(0x01);
    /// `\Flagged` (Maildir letter `F`).
    pub const FLAGGED: MailFlags = MailFlags(0x02);
    /// `\Deleted` (Maildir letter `T`).
    pub const DELETED: MailFlags = MailFlags(0x04);
    /// `\Seen` (Maildir letter `S`).
    pub const SEEN: MailFlags = MailFlags(0x08);
    /// `\Draft` (Maildir letter `D`).
    pub const DRAFT: MailFlags = MailFlags(0x10);

    /// All flags in the order doveadm prints them, with their IMAP spelling.
    pub const ALL: [(MailFlags, &'static str); 5] = [
        (MailFlags::ANSWERED, "\\Answered"),
        (MailFlags::FLAGGED, "\\Flagged"),
        (MailFlags::DELETED, "\\Deleted"),
        (MailFlags::SEEN, "\\Seen"),
        (MailFlags::DRAFT, "\\Draft"),
    ];

    /// True if every bit of `other` is set in `self`.
    pub fn contains(self, other: MailFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: MailFlags) {
        self.0 |= other.0;
    }

    /// The IMAP names of the set flags, in doveadm's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        MailFlags::ALL
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_follow_doveadm_order() {
        let mut f = MailFlags::default();
        f.insert(MailFlags::SEEN);
        f.insert(MailFlags::ANSWERED);
        f.insert(MailFlags::DRAFT);
        assert_eq!(
            f.names().collect::<Vec<_>>(),
            ["\\Answered", "\\Seen", "\\Draft"]
        );
        assert!(f.contains(MailFlags::SEEN));
        assert!(!f.contains(MailFlags::FLAGGED));
    }
}
