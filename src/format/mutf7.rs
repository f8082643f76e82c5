//! IMAP modified UTF-7 (RFC 3501 section 5.1.3), the on-disk spelling of mailbox names.
//!
//! Owns the conversion of **one level** of a storage name between mUTF-7 and UTF-8, with
//! exactly the strictness of Dovecot's `src/lib-imap/imap-utf7.c` (2.3.19.1,
//! `imap_utf7_to_utf8()` and `imap_utf8_to_utf7()`). It knows nothing about hierarchy
//! separators, namespaces, the `UTF-8` mail_location flag, `BROKENCHAR` or the `^` escapes of
//! `LAYOUT=index`: callers split names into levels and decide whether to decode at all.
//!
//! Dovecot's rules, which [`decode`] follows:
//! * bytes outside `0x20..=0x7e` are invalid; `&-` is a literal `&`;
//! * `&<modified base64>-` is UTF-16BE (`,` stands for base64's `/`); the run must end in
//!   `-`, must not leave a lone 6-bit character, must hold an even number of bytes, and must
//!   pair surrogates correctly;
//! * an encoded UTF-16 unit must not be NUL nor a printable ASCII character (those must be
//!   written directly), and an encoded run must not be followed directly by another shift
//!   (`&AOQ-&AOQ-` must have been written as one run `&AOQA5A-`);
//! * **Dovecot does not check the pad bits** left over at the end of a run, so `&AOR-`
//!   decodes like `&AOQ-`. This module does the same (the brief listed non-zero pad bits as
//!   an error; Dovecot wins). Decoding is therefore not injective: a caller that needs the
//!   canonical spelling can compare `encode(&decode(s)?)` with `s`.

use super::FormatError;

/// Value of a modified-base64 digit (`imap_b64dec[]` in `imap-utf7.c`), or `None` for any
/// byte outside the alphabet `A-Z a-z 0-9 + ,`.
fn b64_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b',' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// The modified-base64 digit for the low 6 bits of `v` (`imap_b64enc[]` in `imap-utf7.c`).
fn b64_digit(v: u32) -> char {
    // Invariant: after the mask, v < 64, so every arm below stays inside its range.
    let v = (v & 0x3f) as u8;
    let c = match v {
        0..=25 => b'A' + v,
        26..=51 => b'a' + (v - 26),
        52..=61 => b'0' + (v - 52),
        62 => b'+',
        _ => b',',
    };
    char::from(c)
}

/// True for the bytes that stand for themselves: printable ASCII `0x20..=0x7e`
/// (`imap_utf7_to_utf8_int()` rejects everything else outside a shift).
fn is_direct(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// Decodes one mailbox-name level from IMAP modified UTF-7 (RFC 3501 5.1.3) to UTF-8.
///
/// `"&-"` is `'&'`; `"&...-"` is modified base64 (`','` for `'/'`) of UTF-16BE, surrogate
/// pairs allowed. Errors (offset = the offending byte, or the `&` that opened a bad run):
/// invalid base64, unterminated shift, odd byte count, bad surrogates, an encoded NUL or
/// printable ASCII character, an unnecessary shift right after a run, raw bytes outside
/// `0x20..=0x7e`. Non-zero pad bits are accepted, as Dovecot accepts them (see module doc).
pub fn decode(s: &[u8]) -> Result<String, FormatError> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0usize;
    while let Some(&b) = s.get(i) {
        if !is_direct(b) {
            return Err(FormatError::new(
                i,
                format!("mUTF-7: byte 0x{b:02x} is not printable ASCII"),
            ));
        }
        if b != b'&' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        // A shift. "&-" is the escaped '&' itself.
        if s.get(i + 1) == Some(&b'-') {
            out.push('&');
            i += 2;
            continue;
        }
        let run_start = i + 1;
        let run = s.get(run_start..).unwrap_or_default();
        let run_len = run.iter().take_while(|&&c| b64_value(c).is_some()).count();
        // Invariant: run_len <= run.len(), so `end` indexes into `s` or is s.len().
        let end = run_start + run_len;
        match s.get(end) {
            Some(b'-') => {}
            Some(&c) => {
                return Err(FormatError::new(
                    end,
                    format!("mUTF-7: byte 0x{c:02x} inside a base64 run"),
                ));
            }
            None => return Err(FormatError::new(i, "mUTF-7: shift not terminated by '-'")),
        }
        decode_run(run.get(..run_len).unwrap_or_default(), &mut out)
            .map_err(|what| FormatError::new(i, format!("mUTF-7: {what}")))?;
        i = end + 1;
        // `mbase64_decode_to_utf8()`: a run directly followed by a new shift other than "&-"
        // is an unnecessary shift (the two runs must have been written as one).
        if s.get(i) == Some(&b'&') && s.get(i + 1) != Some(&b'-') {
            return Err(FormatError::new(
                i,
                "mUTF-7: unnecessary shift after a base64 run",
            ));
        }
    }
    Ok(out)
}

/// Decodes the base64 digits of one shift (between `&` and `-`, never empty) and appends the
/// characters to `out`. The error is a short reason without offset.
fn decode_run(run: &[u8], out: &mut String) -> Result<(), &'static str> {
    // Dovecot reads 4-digit groups; a group of one digit carries no whole byte.
    if run.len() % 4 == 1 {
        return Err("truncated base64 run");
    }
    let mut bytes = Vec::with_capacity(run.len() * 3 / 4 + 1);
    // Invariant: `acc` holds at most 13 meaningful bits (`nbits` < 8 before adding 6).
    let mut acc: u32 = 0;
    let mut nbits: u32 = 0;
    for &c in run {
        let v = b64_value(c).ok_or("invalid base64 digit")?;
        acc = ((acc << 6) | v) & 0x3fff;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push(((acc >> nbits) & 0xff) as u8);
        }
    }
    // The low `nbits` bits of `acc` are padding. Dovecot ignores them; so do we.
    if bytes.len() % 2 != 0 {
        return Err("odd number of UTF-16 bytes");
    }
    let mut units = bytes
        .chunks_exact(2)
        .map(|p| match p {
            [hi, lo] => (u16::from(*hi) << 8) | u16::from(*lo),
            _ => 0,
        })
        .peekable();
    while let Some(unit) = units.next() {
        let code = match unit {
            // `utf16buf_to_utf8()`: NUL "isn't going to work in Dovecot code".
            0 => return Err("encoded NUL"),
            // Printable ASCII must be written directly, never encoded.
            0x20..=0x7e => return Err("encoded printable ASCII character"),
            0xd800..=0xdbff => {
                let low = match units.next() {
                    Some(low @ 0xdc00..=0xdfff) => low,
                    _ => return Err("high surrogate without low surrogate"),
                };
                0x1_0000 + ((u32::from(unit) & 0x3ff) << 10) + (u32::from(low) & 0x3ff)
            }
            0xdc00..=0xdfff => return Err("low surrogate without high surrogate"),
            other => u32::from(other),
        };
        out.push(char::from_u32(code).ok_or("invalid code point")?);
    }
    Ok(())
}

/// Encodes UTF-8 to modified UTF-7 (what Dovecot writes on disk, `imap_utf8_to_utf7()`).
///
/// Printable ASCII stands for itself except `&`, which becomes `&-`; every maximal run of
/// other characters becomes one `&<base64 of UTF-16BE>-`. A NUL in `s` is encoded as
/// `&AAA-`, which [`decode`] rejects (Dovecot's C strings cannot hold NUL).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run: Vec<u16> = Vec::new();
    for c in s.chars() {
        if c == '&' || (' '..='~').contains(&c) {
            flush_run(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush_run(&mut run, &mut out);
    out
}

/// Writes a pending run of UTF-16 units as `&<modified base64>-` (`mbase64_encode()`), with
/// zero pad bits, and empties `run`. Does nothing for an empty run.
fn flush_run(run: &mut Vec<u16>, out: &mut String) {
    if run.is_empty() {
        return;
    }
    out.push('&');
    // Invariant: `acc` holds at most 13 meaningful bits (`nbits` < 6 before adding 8).
    let mut acc: u32 = 0;
    let mut nbits: u32 = 0;
    for unit in run.drain(..) {
        for byte in [unit >> 8, unit & 0xff] {
            acc = ((acc << 8) | u32::from(byte)) & 0x3fff;
            nbits += 8;
            while nbits >= 6 {
                nbits -= 6;
                out.push(b64_digit(acc >> nbits));
            }
        }
    }
    if nbits > 0 {
        out.push(b64_digit(acc << (6 - nbits)));
    }
    out.push('-');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::testutil::XorShift;

    /// Pairs that must map both ways, taken from Dovecot (`test-imap-utf7.c`, doc section 1.4).
    const PAIRS: &[(&str, &str)] = &[
        ("", ""),
        ("INBOX", "INBOX"),
        ("Work/Sub.x ~", "Work/Sub.x ~"),
        ("\u{dc}n\u{ef}code & more", "&ANw-n&AO8-code &- more"),
        ("&&x&&", "&-&-x&-&-"),
        (
            "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}",
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-",
        ),
        ("tiet\u{e4}&j\u{e4}&", "tiet&AOQ-&-j&AOQ-&-"),
        ("\u{e4}\u{e4}", "&AOQA5A-"),
        // Astral plane: U+1F600 is the surrogate pair D83D DE00.
        ("\u{1f600}", "&2D3eAA-"),
        ("a\u{1f600}\u{e4}b", "a&2D3eAADk-b"),
        // Controls and DEL are encoded too.
        ("\u{1}", "&AAE-"),
        ("\u{7f}", "&AH8-"),
    ];

    /// Known pairs map both ways.
    #[test]
    fn pairs_encode_and_decode() {
        for &(utf8, mutf7) in PAIRS {
            assert_eq!(encode(utf8), mutf7, "encode {utf8:?}");
            assert_eq!(
                decode(mutf7.as_bytes()).as_deref(),
                Ok(utf8),
                "decode {mutf7:?}"
            );
        }
    }

    /// Invalid input fails, with the offset of the problem.
    #[test]
    fn invalid_inputs_are_rejected() {
        // (input, offset of the reported error)
        let cases: &[(&[u8], u64)] = &[
            (b"&", 0),
            (b"&Jjo", 0),
            (b"&Jjo!", 4),
            (b"a&U,BTFw-&ZeVnLIqe-", 9),
            (b"&AOQ-&", 5),
            (b"&A-", 0),
            (b"&AOQ", 0),
            (b"&AGE-", 0),
            (b"&ACY-", 0),
            (b"&AAA-", 0),
            (b"&2D0-", 0),
            (b"&3gA-", 0),
            (b"&2D3YPQ-", 0),
            (b"&AOQA-", 0),
            (b"&AOQ.-", 4),
            (b"x\x7f", 1),
            (b"\x1f", 0),
            (b"p\xc3\xa4\xc3\xa4", 1),
            (b"ok&AOQ-\x80", 7),
        ];
        for &(input, offset) in cases {
            let err = decode(input).expect_err(&format!("{:?}", String::from_utf8_lossy(input)));
            assert_eq!(
                err.offset,
                offset,
                "{:?}: {}",
                String::from_utf8_lossy(input),
                err
            );
        }
    }

    /// Dovecot does not check the pad bits at the end of a run (see module doc).
    #[test]
    fn nonzero_pad_bits_are_accepted_like_dovecot() {
        assert_eq!(decode(b"&AOR-").as_deref(), Ok("\u{e4}"));
        assert_eq!(encode("\u{e4}"), "&AOQ-");
    }

    /// Dovecot's `test_imap_utf7_non_utf16`: a run holding an odd number of bytes.
    #[test]
    fn odd_byte_runs_are_rejected() {
        let digit = |v: u32| b64_digit(v) as u8;
        for i in 0..=255u32 {
            let one = [b'&', digit(i >> 2), digit((i & 3) << 4), b'-'];
            assert!(decode(&one).is_err(), "{i}");
            let three = [
                b'&',
                digit(0),
                digit(0xe4 >> 4),
                digit(((0xe4 & 0x0f) << 2) | (i >> 6)),
                digit(i & 0x3f),
                b'-',
            ];
            assert!(decode(&three).is_err(), "{i}");
        }
    }

    /// Dovecot's `test_imap_utf7_bad_ascii` and `test_imap_utf7_unnecessary`.
    #[test]
    fn raw_controls_and_encoded_printables_are_rejected() {
        let digit = |v: u32| b64_digit(v) as u8;
        for b in (0u8..0x20).chain([0x7f]).chain(0x80..=0xff) {
            assert!(decode(&[b]).is_err(), "raw {b:#x}");
        }
        for i in 0x20..0x7fu32 {
            let enc = [b'&', digit(0), digit(i >> 4), digit((i & 0x0f) << 2), b'-'];
            assert!(decode(&enc).is_err(), "encoded {i:#x}");
            if i != u32::from(b'&') {
                let c = char::from_u32(i).unwrap_or('?');
                assert_eq!(encode(&c.to_string()), c.to_string());
            }
        }
    }

    /// Dovecot's `test_imap_utf7_ucs4_cases`: the BMP/astral border, mixed with 'x' and '&'.
    #[test]
    fn round_trip_around_the_bmp_border() {
        for code in 0xffffu32..=0x1_0010 {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            for len in 1..=10 {
                let mut s = String::new();
                for j in 0..len {
                    if j % 3 == 0 {
                        s.push('x');
                    }
                    if j % 5 == 0 {
                        s.push('&');
                    }
                    s.push(c);
                }
                let enc = encode(&s);
                assert!(enc.bytes().all(is_direct), "{enc}");
                assert_eq!(decode(enc.as_bytes()).as_deref(), Ok(s.as_str()), "{enc}");
            }
        }
    }

    /// Pseudo-random strings survive encode then decode.
    #[test]
    fn random_strings_round_trip() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = rng.below(12);
            let mut s = String::new();
            for _ in 0..len {
                let code = match rng.below(4) {
                    0 => 0x20 + rng.below(0x5f),
                    1 => 1 + rng.below(0x7f),
                    2 => 0x80 + rng.below(0xff80),
                    _ => 0x1_0000 + rng.below(0x10_0000),
                };
                if let Some(c) = u32::try_from(code).ok().and_then(char::from_u32) {
                    s.push(c);
                }
            }
            let enc = encode(&s);
            assert_eq!(decode(enc.as_bytes()).as_deref(), Ok(s.as_str()), "{enc}");
            assert_eq!(encode(&decode(enc.as_bytes()).unwrap_or_default()), enc);
        }
    }

    /// Truncations of valid inputs and pseudo-random bytes never panic.
    #[test]
    fn no_panic_sweep() {
        let valid: Vec<String> = PAIRS.iter().map(|&(_, m)| m.to_string()).collect();
        for v in &valid {
            let bytes = v.as_bytes();
            for cut in 0..=bytes.len() {
                let _ = decode(bytes.get(..cut).unwrap_or_default());
                let _ = decode(bytes.get(cut..).unwrap_or_default());
            }
        }
        let alphabet = b"&-&-AOQ2D3eAU,BTFw+,z09 ~\x7f\x00\xc3";
        let mut rng = XorShift(0x0123_4567_89ab_cdef);
        for round in 0..5000 {
            let len = rng.below(16) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if round % 2 == 0 {
                        (r & 0xff) as u8
                    } else {
                        let idx = (r % alphabet.len() as u64) as usize;
                        alphabet.get(idx).copied().unwrap_or(b'A')
                    }
                })
                .collect();
            if let Ok(s) = decode(&input) {
                // Whatever decodes must encode back to something that decodes the same.
                assert_eq!(decode(encode(&s).as_bytes()).as_deref(), Ok(s.as_str()));
            }
        }
    }
}
