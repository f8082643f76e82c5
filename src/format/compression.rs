//! Which compressed or encrypted stream a stored message is, by its first bytes, as
//! Dovecot tells them apart when it reads a mail (the zlib plugin:
//! `compression_detect_handler()` in `src/lib-compression/compression.c`; mail_crypt:
//! `IOSTREAM_CRYPT_MAGIC` in `src/lib-dcrypt/dcrypt-iostream.h`): the magic of each
//! stream, not a setting. Only naming here: decoding is issue 18's.

/// The compressed stream `head` (a message file's first bytes) starts, if any: the name
/// of Dovecot's `zlib_save` setting that writes it.
pub fn detect(head: &[u8]) -> Option<&'static str> {
    // gzip (RFC 1952 section 2.3.1): ID1 ID2, all Dovecot looks at.
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some("gz");
    }
    // bzip2: "BZh" and the block size digit.
    if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
        return Some("bz2");
    }
    // xz: its six-byte header magic.
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Some("xz");
    }
    // zstd frame (RFC 8878 section 3.1.1), little-endian 0xFD2FB528.
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some("zstd");
    }
    // Dovecot's own lz4 framing (`src/lib-compression/iostream-lz4.h`: IOSTREAM_LZ4_MAGIC).
    if head.starts_with(b"Dovecot-LZ4\x0d\x2a\x9b\xc5") {
        return Some("lz4");
    }
    None
}

/// Whether `head` starts a stream Dovecot's mail_crypt plugin encrypted
/// (`IOSTREAM_CRYPT_MAGIC`: "CRYPTED\x03\x07").
pub fn is_encrypted(head: &[u8]) -> bool {
    head.starts_with(b"CRYPTED\x03\x07")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_mail_crypt_streams() {
        assert!(is_encrypted(b"CRYPTED\x03\x07\x02\0"));
        assert!(!is_encrypted(b"CRYPTED"));
        assert!(!is_encrypted(b"From: a@b\n"));
        assert_eq!(detect(b"CRYPTED\x03\x07\x02"), None);
    }

    #[test]
    fn names_each_stream_and_nothing_else() {
        assert_eq!(detect(&[0x1f, 0x8b, 0x08, 0, 0]), Some("gz"));
        assert_eq!(detect(b"BZh91AY&SY"), Some("bz2"));
        assert_eq!(detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4]), Some("xz"));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0x24]), Some("zstd"));
        assert_eq!(detect(b"Dovecot-LZ4\x0d\x2a\x9b\xc5\0\0"), Some("lz4"));
        for plain in [&b"Return-Path: <a@b>\n"[..], b"BZh", b"BZhx", &[0x1f], b""] {
            assert_eq!(detect(plain), None, "{plain:?}");
        }
    }
}
