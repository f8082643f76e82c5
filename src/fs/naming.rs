//! Names presented on the mount, and their inverse.
//!
//! - A message with a UID is `<uid>.eml` (decimal, no leading zeros).
//! - A file Dovecot has not given a UID yet is `pending-<base>.eml`, where `<base>` is its
//!   file name before the info separator, escaped.
//! - A mailbox level is its UTF-8 name, escaped.
//! - With [`Layout::Maildir`] (`--layout maildir`), each mailbox directory holds `cur/`,
//!   `new/` and `tmp/`, and a message is `cur/<uid>.<guid>,S=<size>,W=<vsize>:2,<flags>`
//!   ([`Naming::maildir_name`]): the one place a presented name contains ':', deliberately,
//!   since the Maildir info is what Maildir clients read flags from. A child mailbox
//!   named `cur`, `new` or `tmp` is shown as `%63ur`, `%6Eew`, `%74mp`.
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

use crate::store::{MailboxView, MessageKey, MessageMeta};

const PENDING_PREFIX: &[u8] = b"pending-";
const MESSAGE_SUFFIX: &[u8] = b".eml";

/// The directory tree's shape (`--layout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// `<mailbox>/<uid>.eml` (the default).
    #[default]
    Eml,
    /// `<mailbox>/cur/<uid>.<guid>,S=..,W=..:2,<flags>`, empty `new/` and `tmp/`: what
    /// Maildir clients (notmuch, mutt, mblaze, Python's `mailbox`) read.
    Maildir,
}

impl Layout {
    /// The spelling of `--layout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Eml => "eml",
            Layout::Maildir => "maildir",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Layout, String> {
        [Layout::Eml, Layout::Maildir]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("{s:?}: expected eml or maildir"))
    }
}

/// The three directories of a Maildir layout mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sub {
    /// `cur/`: every message.
    Cur,
    /// `new/`: always empty (every message is presented as seen by a client).
    New,
    /// `tmp/`: always empty.
    Tmp,
}

impl Sub {
    /// All three, in listing order.
    pub const ALL: [Sub; 3] = [Sub::Cur, Sub::New, Sub::Tmp];

    /// The directory's name.
    pub fn name(self) -> &'static str {
        match self {
            Sub::Cur => "cur",
            Sub::New => "new",
            Sub::Tmp => "tmp",
        }
    }

    /// The hidden mailbox level that stands for this directory inside a mailbox's name
    /// (a NUL never occurs in a mailbox name, so it can be no real mailbox's level).
    pub fn level(self) -> String {
        format!("\0{}", self.name())
    }

    /// The directory a hidden level stands for.
    pub fn of_level(level: &str) -> Option<Sub> {
        Sub::ALL.into_iter().find(|s| level == s.level())
    }
}

/// Maildir info letters of the system flags, in ASCII order as the Maildir specification
/// requires (cr.yp.to/proto/maildir.html; Dovecot's maildir_flags in
/// src/lib-storage/index/maildir/maildir-filename-flags.c): Draft D, Flagged F, Answered
/// R, Seen S, Deleted T.
const FLAG_LETTERS: [(crate::format::MailFlags, char); 5] = [
    (crate::format::MailFlags::DRAFT, 'D'),
    (crate::format::MailFlags::FLAGGED, 'F'),
    (crate::format::MailFlags::ANSWERED, 'R'),
    (crate::format::MailFlags::SEEN, 'S'),
    (crate::format::MailFlags::DELETED, 'T'),
];

/// How names are presented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Naming {
    /// Also escape the characters Windows (SMB/CIFS) forbids: `\ * ? " < > |`.
    pub portable: bool,
    /// The tree's shape.
    pub layout: Layout,
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

    /// The Maildir info of a message: `2,` then the system flag letters, then a keyword
    /// letter for each keyword among the first 26 of the view's keyword table (`a` for the
    /// first: Dovecot's own assignment in `dovecot-keywords` for a Maildir store, the index
    /// keyword order for the others; later keywords have no letter). Letters sorted.
    pub fn maildir_info(view: &MailboxView, meta: &MessageMeta) -> String {
        let mut info = String::from("2,");
        for (flag, letter) in FLAG_LETTERS {
            if meta.flags.contains(flag) {
                info.push(letter);
            }
        }
        for i in meta.keywords.iter() {
            if i < 26 && i < view.keyword_names.len() {
                info.push(char::from(b'a' + i as u8));
            }
        }
        info
    }

    /// A message's name in `cur/` of the Maildir layout: `<uid>.<guid>` (up to a ',' of a
    /// Maildir base name; left out unless made of letters, digits, '.', '-' and '_'), or `pending-<base>`, then
    /// `,S=<size>,W=<vsize>` and `:<info>`. Stable for a UID; it changes only with the
    /// flags.
    pub fn maildir_name(self, view: &MailboxView, meta: &MessageMeta) -> OsString {
        let mut n = match &meta.key {
            MessageKey::Uid(uid) => {
                // A Maildir store's GUID is the file's base name, whose own `,S=`/`,W=`
                // fields are left out (ours follow).
                let guid = meta.guid_text();
                let g = guid.split(',').next().unwrap_or_default();
                let plain = !g.is_empty()
                    && g.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b".-_".contains(&c));
                if plain {
                    format!("{uid}.{g}").into_bytes()
                } else {
                    uid.to_string().into_bytes()
                }
            }
            MessageKey::Pending(base) => {
                let mut n = PENDING_PREFIX.to_vec();
                // ',' too: Maildir clients read ",S=" from the name.
                for c in self.escape_bytes(base) {
                    if c == b',' {
                        push_escaped(&mut n, c);
                    } else {
                        n.push(c);
                    }
                }
                n
            }
        };
        n.extend(format!(",S={},W={}:", meta.size, meta.virtual_size).bytes());
        n.extend(Self::maildir_info(view, meta).bytes());
        OsString::from_vec(n)
    }

    /// The flags a Maildir name asks for (a client renaming a message in `cur/` to change
    /// its flags): doveadm spelling, system flags first. Upper-case letters other than the
    /// five system flags (`P`, passed, has no IMAP flag) are ignored, as Dovecot ignores
    /// them; a keyword letter beyond the view's keyword table is `None` (no keyword to
    /// set), as is a name without `:2,`. Keywords without a letter (past the 26th) that the
    /// message `meta` (if any: a delivery has none yet) has are kept.
    pub fn maildir_flags(
        name: &OsStr,
        view: &MailboxView,
        meta: Option<&MessageMeta>,
    ) -> Option<Vec<String>> {
        let b = name.as_bytes();
        let at = b.windows(3).position(|w| w == b":2,")?;
        let letters = &b[at + 3..];
        let mut flags = crate::format::MailFlags::default();
        let mut keywords = Vec::new();
        for &c in letters {
            if let Some((flag, _)) = FLAG_LETTERS.iter().find(|(_, l)| *l as u8 == c) {
                flags.insert(*flag);
            } else if c.is_ascii_lowercase() {
                let i = usize::from(c - b'a');
                keywords.push(view.keyword_names.get(i)?.clone());
            } else if !c.is_ascii_uppercase() {
                return None;
            }
        }
        let mut out: Vec<String> = flags.names().map(str::to_string).collect();
        out.extend(keywords);
        for i in meta
            .iter()
            .flat_map(|m| m.keywords.iter())
            .filter(|i| *i >= 26)
        {
            if let Some(k) = view.keyword_names.get(i) {
                out.push(k.clone());
            }
        }
        Some(out)
    }

    /// The name of a message in its directory, in this layout.
    pub fn listed_name(self, view: &MailboxView, meta: &MessageMeta) -> OsString {
        match self.layout {
            Layout::Eml => self.message_name(&meta.key),
            Layout::Maildir => self.maildir_name(view, meta),
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
        if self.layout == Layout::Maildir && Sub::ALL.iter().any(|s| s.name() == level) {
            let first = out.remove(0);
            let mut escaped = Vec::new();
            push_escaped(&mut escaped, first);
            out.splice(0..0, escaped);
        }
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

/// The message a `cur/` name of the Maildir layout refers to, if it has the shape of one
/// (whether it is the message's current name is for the caller to check).
pub fn parse_maildir_name(name: &OsStr) -> Option<MessageKey> {
    let b = name.as_bytes();
    let stem = &b[..b.iter().position(|&c| c == b',' || c == b':')?];
    if stem.starts_with(PENDING_PREFIX) {
        let mut eml = stem.to_vec();
        eml.extend_from_slice(MESSAGE_SUFFIX);
        return parse_message_name(OsStr::from_bytes(&eml));
    }
    let uid = &stem[..stem.iter().position(|&c| c == b'.').unwrap_or(stem.len())];
    let mut eml = uid.to_vec();
    eml.extend_from_slice(MESSAGE_SUFFIX);
    parse_message_name(OsStr::from_bytes(&eml))
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

    const N: Naming = Naming {
        portable: false,
        layout: Layout::Eml,
    };

    #[test]
    fn maildir_names_parse_back_and_hide_sub_directories() {
        let m = Naming {
            portable: false,
            layout: Layout::Maildir,
        };
        for (name, key) in [
            ("12.abc,S=5,W=6:2,FS", Some(MessageKey::Uid(12))),
            ("12,S=5,W=6:2,", Some(MessageKey::Uid(12))),
            ("0.abc,S=5:2,", None),
            ("x.abc,S=5:2,", None),
            ("12.eml", None),
        ] {
            assert_eq!(parse_maildir_name(OsStr::new(name)), key, "{name}");
        }
        assert_eq!(m.folder_name("cur"), OsString::from("%63ur"));
        assert_eq!(m.folder_name("tmp"), OsString::from("%74mp"));
        assert_eq!(m.folder_name("%63ur"), OsString::from("%2563ur"));
        assert_eq!(N.folder_name("cur"), OsString::from("cur"));
        assert_eq!(Sub::of_level(&Sub::New.level()), Some(Sub::New));
        assert_eq!(Sub::of_level("new"), None);
    }

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
        let p = Naming {
            portable: true,
            layout: Layout::Eml,
        };
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
