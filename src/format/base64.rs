//! Base64 in fixed-length lines, as Dovecot's encoder writes it when it puts a
//! single-instance attachment back into its message (`i_stream_create_base64_encoder()`,
//! `src/lib/istream-base64-encoder.c`; `base64_encode_more()` / `base64_encode_finish()` and
//! `base64_get_full_encoded_size()` in `src/lib/base64.c`):
//!
//! - the standard alphabet with `=` padding;
//! - `line_len` characters per line (a multiple of 4), lines separated by `\n` or `\r\n`;
//! - no line break after the last line, full or not, and none at all for an empty source.
//!
//! Every 3 source bytes are 4 characters, so the output is seekable: the bytes at any
//! output offset are computed from the source bytes of the groups they fall in
//! ([`Base64Lines::source_range`], [`Base64Lines::encode`]), without encoding from the
//! start. Pure arithmetic: no I/O.

use ::base64::Engine as _;
use ::base64::engine::general_purpose::STANDARD;

/// The encoded form of a `src_len`-byte source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base64Lines {
    src_len: u64,
    /// Characters per line (> 0, a multiple of 4).
    line_len: u64,
    /// Bytes of a line break: 1 (`\n`) or 2 (`\r\n`).
    nl_len: u64,
}

impl Base64Lines {
    /// The form of a `src_len`-byte source in lines of `line_len` characters; `None` for a
    /// line length that is 0 or not a multiple of 4 (Dovecot's parser refuses them:
    /// `parse_extref_decode_options()`).
    pub fn new(src_len: u64, line_len: u32, crlf: bool) -> Option<Base64Lines> {
        (line_len > 0 && line_len.is_multiple_of(4)).then_some(Base64Lines {
            src_len,
            line_len: u64::from(line_len),
            nl_len: if crlf { 2 } else { 1 },
        })
    }

    /// Base64 characters, without line breaks: 4 per started group of 3 bytes.
    fn chars(&self) -> u64 {
        self.src_len.div_ceil(3) * 4
    }

    /// The length of the whole output (`base64_get_full_encoded_size()`): the characters
    /// and one line break between each two lines.
    pub fn encoded_len(&self) -> u64 {
        let chars = self.chars();
        if chars == 0 {
            return 0;
        }
        chars + (chars.div_ceil(self.line_len) - 1) * self.nl_len
    }

    /// The index of the character at output offset `at`, or of the first character after
    /// it if `at` is inside a line break.
    fn char_at_or_after(&self, at: u64) -> u64 {
        let stride = self.line_len + self.nl_len;
        let (line, col) = (at / stride, at % stride);
        line * self.line_len + col.min(self.line_len)
    }

    /// The source bytes `[start, end)` that output `[out_start, out_end)` is made from:
    /// whole groups of 3 (the last one cut at the source's end). `start` is a multiple of
    /// 3; hand those bytes to [`Base64Lines::encode`].
    pub fn source_range(&self, out_start: u64, out_end: u64) -> (u64, u64) {
        let first = self.char_at_or_after(out_start) / 4;
        let end = self.char_at_or_after(out_end).div_ceil(4);
        let start = (first * 3).min(self.src_len);
        (start, (end * 3).min(self.src_len).max(start))
    }

    /// Writes output bytes `[out_start, out_start + out.len())` into `out` (which must not
    /// go past [`Base64Lines::encoded_len`]); `src` holds the source bytes of
    /// [`Base64Lines::source_range`] for that range. Returns `None` (writing nothing
    /// useful) if `src` is not that range.
    pub fn encode(&self, out_start: u64, src: &[u8], out: &mut [u8]) -> Option<()> {
        let out_end = out_start.checked_add(out.len() as u64)?;
        if out_end > self.encoded_len() {
            return None;
        }
        let (src_start, src_end) = self.source_range(out_start, out_end);
        if src.len() as u64 != src_end - src_start {
            return None;
        }
        let mut chars = vec![0u8; src.len().div_ceil(3) * 4];
        let n = STANDARD.encode_slice(src, &mut chars).ok()?;
        chars.truncate(n);
        // The character index of chars[0].
        let chars_base = src_start / 3 * 4;
        let stride = self.line_len + self.nl_len;
        let mut at = out_start;
        let mut done = 0usize;
        while done < out.len() {
            let (line, col) = (at / stride, at % stride);
            if col < self.line_len {
                let c = (line * self.line_len + col).checked_sub(chars_base)?;
                let take = ((self.line_len - col) as usize).min(out.len() - done);
                let from = usize::try_from(c).ok()?;
                out[done..done + take].copy_from_slice(chars.get(from..from + take)?);
                done += take;
                at += take as u64;
            } else {
                // Inside a line break: "\n", or "\r\n" (col - line_len = 0 is the '\r').
                out[done] = if self.nl_len == 2 && col == self.line_len {
                    b'\r'
                } else {
                    b'\n'
                };
                done += 1;
                at += 1;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole output the simple way: encode, then cut into lines.
    fn reference(src: &[u8], line_len: usize, crlf: bool) -> Vec<u8> {
        let s = STANDARD.encode(src);
        let nl: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        s.as_bytes().chunks(line_len).collect::<Vec<_>>().join(nl)
    }

    fn source(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 5) as u8).collect()
    }

    #[test]
    fn lengths_are_dovecots() {
        // base64_get_full_encoded_size(): 0 for nothing; no break after the last line.
        for (len, line, crlf, want) in [
            (0, 76, false, 0),
            (1, 76, false, 4),
            (57, 76, false, 76),
            (58, 76, false, 76 + 1 + 4),
            (114, 76, true, 76 + 2 + 76),
            (512, 76, false, 684 + 8),
            (512, 684, false, 684),
        ] {
            let l = Base64Lines::new(len, line, crlf).unwrap();
            assert_eq!(
                l.encoded_len(),
                want,
                "{len} bytes, {line}/line, crlf {crlf}"
            );
        }
        assert!(Base64Lines::new(1, 0, false).is_none());
        assert!(Base64Lines::new(1, 74, false).is_none());
    }

    /// Every range of the output, encoded from just its source groups, equals the same
    /// range of the whole output: for sources ending in each of the three group states,
    /// lines ending exactly at the end, LF and CRLF, short and long lines.
    #[test]
    fn any_range_encodes_like_the_whole() {
        for len in [0usize, 1, 2, 3, 4, 5, 47, 48, 49, 57, 100, 192] {
            for line in [4u32, 8, 64, 76] {
                for crlf in [false, true] {
                    let src = source(len);
                    let whole = reference(&src, line as usize, crlf);
                    let l = Base64Lines::new(len as u64, line, crlf).unwrap();
                    assert_eq!(l.encoded_len(), whole.len() as u64, "{len} {line} {crlf}");
                    let n = whole.len();
                    let step = if n > 120 { 7 } else { 1 };
                    for start in (0..n).step_by(step) {
                        for end in (start + 1..=n).step_by(step) {
                            let (s, e) = l.source_range(start as u64, end as u64);
                            assert_eq!(s % 3, 0);
                            let mut out = vec![0u8; end - start];
                            l.encode(start as u64, &src[s as usize..e as usize], &mut out)
                                .unwrap();
                            assert_eq!(
                                out,
                                &whole[start..end],
                                "{len} bytes, {line}/line, crlf {crlf}, [{start}, {end})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_wrong_source_slice_or_range_is_refused() {
        let l = Base64Lines::new(10, 8, false).unwrap();
        let mut out = [0u8; 4];
        assert!(l.encode(0, &[0u8; 2], &mut out).is_none());
        let mut past = vec![0u8; l.encoded_len() as usize + 1];
        assert!(l.encode(0, &[0u8; 10], &mut past).is_none());
    }
}
