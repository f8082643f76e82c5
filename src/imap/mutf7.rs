//! Mailbox names on the wire: modified UTF-7 (RFC 3501 section 5.1.3) unless `UTF8=ACCEPT`
//! is enabled (RFC 6855 section 3, then names are plain UTF-8).
//!
//! The conversion itself is [`crate::format::mutf7`] (Dovecot's own strictness, shared with
//! the on-disk name decoding); this module applies it to whole IMAP names (hierarchy
//! separators are printable ASCII and pass through unchanged) and maps its errors to
//! [`ImapError::Protocol`].

use super::{ImapError, escape_snippet};
use crate::format::mutf7 as imp;

/// Encodes a UTF-8 mailbox name to modified UTF-7 (always succeeds; `&` becomes `&-`).
pub fn encode(name: &str) -> String {
    imp::encode(name)
}

/// Decodes a modified UTF-7 name; malformed input (8-bit bytes, an unterminated or badly
/// padded shift, directly encodable characters inside a shift, ...) is an error.
pub fn decode(name: &[u8]) -> Result<String, ImapError> {
    imp::decode(name).map_err(|e| {
        ImapError::Protocol(format!(
            "bad modified UTF-7 mailbox name {}: {e}",
            escape_snippet(name)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (utf8, utf7) in [
            ("Entwürfe", "Entw&APw-rfe"),
            ("&", "&-"),
            ("日本語", "&ZeVnLIqe-"),
            ("INBOX/Sub & Co", "INBOX/Sub &- Co"),
            ("plain", "plain"),
        ] {
            assert_eq!(encode(utf8), utf7, "encode {utf8}");
            assert_eq!(decode(utf7.as_bytes()).unwrap(), utf8, "decode {utf7}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"&APw"[..],       // unterminated shift
            b"Entw\xc3\xbcrfe", // 8-bit
            b"&AGE-",           // 'a' must be written directly
            b"&*-",             // not modified base64
        ] {
            assert!(
                matches!(decode(bad), Err(ImapError::Protocol(_))),
                "{bad:?} was accepted"
            );
        }
    }
}
