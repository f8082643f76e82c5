//! Compressed and encrypted message streams: which one a stored message is, by its first
//! bytes, as Dovecot tells them apart when it reads a mail (the zlib plugin:
//! `compression_detect_handler()` in `src/lib-compression/compression.c`; mail_crypt:
//! `IOSTREAM_CRYPT_MAGIC` in `src/lib-dcrypt/dcrypt-iostream.h`), and [`Decoder`], the
//! streaming decoder of each compressed form. The magic of each stream decides, not a
//! setting: one mailbox holds messages saved under different `zlib_save` values.
//!
//! No I/O here: a decoder reads the compressed bytes from whatever `BufRead` it is given
//! (the store hands it a range of a message file).
//!
//! What each decoder accepts is what Dovecot 2.3's `istream-*.c` accept:
//! - gz (`istream-zlib.c`): gzip members, concatenated members decoded one after the other;
//!   each member's CRC-32 is checked (flate2 also checks ISIZE, which Dovecot does not).
//! - bz2 (`istream-bzlib.c`): one bzip2 stream; whatever follows its end is ignored.
//! - xz (`istream-lzma.c`): concatenated xz streams (`LZMA_CONCATENATED`), decoder memory
//!   limited to 80 MiB (`LZMA_MEMORY_LIMIT`). Dovecot 2.3 reads xz but cannot write it.
//! - zstd (`istream-zstd.c`): one or more frames.
//! - lz4 (`istream-lz4.c`, `iostream-lz4.h`): Dovecot's own framing, see [`Lz4Frames`].
//!
//! Errors are `io::Error`s: `InvalidData` for a damaged stream, `UnexpectedEof` for a
//! truncated one; the caller names the file.

use std::fmt;
use std::io::{self, BufRead, Read};

/// A compressed stream Dovecot's zlib plugin reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Gz,
    Bz2,
    Xz,
    Lz4,
    Zstd,
}

impl Codec {
    /// The name of Dovecot's `zlib_save` setting that writes it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gz => "gz",
            Codec::Bz2 => "bz2",
            Codec::Xz => "xz",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many first bytes [`detect`] and [`is_encrypted`] need at most.
pub const MAGIC_LEN: usize = 16;

/// Dovecot's lz4 header magic (`IOSTREAM_LZ4_MAGIC`).
const LZ4_MAGIC: &[u8; 15] = b"Dovecot-LZ4\x0d\x2a\x9b\xc5";

/// The compressed stream `head` (a message's first bytes) starts, if any. The order is
/// Dovecot's `compression_handlers[]` order (no two magics overlap anyway).
pub fn detect(head: &[u8]) -> Option<Codec> {
    // gzip (RFC 1952 section 2.3.1): ID1 ID2, all Dovecot looks at.
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some(Codec::Gz);
    }
    // bzip2: "BZh" and the block size digit.
    if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
        return Some(Codec::Bz2);
    }
    // xz: its six-byte header magic.
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Some(Codec::Xz);
    }
    // Dovecot's own lz4 framing (IOSTREAM_LZ4_MAGIC).
    if head.starts_with(LZ4_MAGIC) {
        return Some(Codec::Lz4);
    }
    // zstd frame (RFC 8878 section 3.1.1), little-endian 0xFD2FB528.
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some(Codec::Zstd);
    }
    None
}

/// Whether `head` starts a stream Dovecot's mail_crypt plugin encrypted
/// (`IOSTREAM_CRYPT_MAGIC`: "CRYPTED\x03\x07").
pub fn is_encrypted(head: &[u8]) -> bool {
    head.starts_with(b"CRYPTED\x03\x07")
}

/// xz decoder memory limit, as Dovecot's `LZMA_MEMORY_LIMIT` (`istream-lzma.c`).
const XZ_MEMORY_LIMIT: u64 = 80 * 1024 * 1024;

/// A streaming decoder of one compressed message: `Read` gives the decoded bytes, and 0
/// at the end of the (last) stream.
pub struct Decoder<R: BufRead> {
    inner: Inner<R>,
}

enum Inner<R: BufRead> {
    Gz(flate2::bufread::MultiGzDecoder<R>),
    Bz2(bzip2::bufread::BzDecoder<R>),
    Xz(liblzma::bufread::XzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
    Lz4(Lz4Frames<R>),
}

impl<R: BufRead> fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Decoder").field(&self.codec()).finish()
    }
}

impl<R: BufRead> Decoder<R> {
    /// A decoder of `codec` reading the compressed bytes from `input` (from the stream's
    /// first byte).
    pub fn new(codec: Codec, input: R) -> io::Result<Decoder<R>> {
        let inner = match codec {
            Codec::Gz => Inner::Gz(flate2::bufread::MultiGzDecoder::new(input)),
            Codec::Bz2 => Inner::Bz2(bzip2::bufread::BzDecoder::new(input)),
            Codec::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMORY_LIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(io::Error::other)?;
                Inner::Xz(liblzma::bufread::XzDecoder::new_stream(input, stream))
            }
            Codec::Zstd => Inner::Zstd(zstd::stream::read::Decoder::with_buffer(input)?),
            Codec::Lz4 => Inner::Lz4(Lz4Frames::new(input)),
        };
        Ok(Decoder { inner })
    }

    /// Which stream it decodes.
    pub fn codec(&self) -> Codec {
        match self.inner {
            Inner::Gz(_) => Codec::Gz,
            Inner::Bz2(_) => Codec::Bz2,
            Inner::Xz(_) => Codec::Xz,
            Inner::Zstd(_) => Codec::Zstd,
            Inner::Lz4(_) => Codec::Lz4,
        }
    }

    /// Fills `buf` as far as the stream goes; fewer bytes only at its end.
    pub fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Gz(d) => d.read(buf),
            Inner::Bz2(d) => d.read(buf),
            Inner::Xz(d) => d.read(buf),
            Inner::Zstd(d) => d.read(buf),
            Inner::Lz4(d) => d.read(buf),
        }
    }
}

/// Dovecot's lz4 stream (`iostream-lz4.h`): a 15-byte magic, the largest uncompressed
/// chunk size (4 bytes big-endian, at most 1 MiB: `ISTREAM_LZ4_CHUNK_SIZE`), then chunks,
/// each a 4-byte big-endian compressed length (1 to 1 MiB) and an LZ4 block that decodes
/// on its own (`LZ4_decompress_safe`, no dictionary) to at most that many bytes. Nothing
/// after the last chunk; no checksum.
pub struct Lz4Frames<R> {
    input: R,
    /// The header's chunk size limit, once read.
    max_chunk: Option<usize>,
    /// Compressed bytes of the current chunk.
    packed: Vec<u8>,
    /// The current chunk decoded, and how much of it was handed out.
    chunk: Vec<u8>,
    given: usize,
}

/// `ISTREAM_LZ4_CHUNK_SIZE`: the largest chunk Dovecot reads, either way.
const LZ4_CHUNK_LIMIT: usize = 1024 * 1024;

impl<R: BufRead> Lz4Frames<R> {
    /// Decodes the Dovecot-LZ4 stream `input` starts with.
    pub fn new(input: R) -> Lz4Frames<R> {
        Lz4Frames {
            input,
            max_chunk: None,
            packed: Vec::new(),
            chunk: Vec::new(),
            given: 0,
        }
    }

    fn header(&mut self) -> io::Result<usize> {
        if let Some(max) = self.max_chunk {
            return Ok(max);
        }
        let mut hdr = [0u8; 19];
        self.input
            .read_exact(&mut hdr)
            .map_err(|e| lz4_error(e, "missing header"))?;
        if &hdr[..15] != LZ4_MAGIC {
            return Err(invalid("lz4: wrong magic in header"));
        }
        let max = be32([hdr[15], hdr[16], hdr[17], hdr[18]]) as usize;
        if max == 0 || max > LZ4_CHUNK_LIMIT {
            return Err(invalid(format!(
                "lz4: max chunk size {max} out of range (1..={LZ4_CHUNK_LIMIT})"
            )));
        }
        self.max_chunk = Some(max);
        Ok(max)
    }

    /// Decodes the next chunk into `self.chunk`; false at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let max = self.header()?;
        let mut prefix = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.input.read(&mut prefix[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(truncated("lz4: truncated chunk length")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = be32(prefix) as usize;
        if len == 0 || len > LZ4_CHUNK_LIMIT {
            return Err(invalid(format!("lz4: invalid chunk size {len}")));
        }
        self.packed.resize(len, 0);
        self.input
            .read_exact(&mut self.packed)
            .map_err(|e| lz4_error(e, "truncated chunk"))?;
        self.chunk.resize(max, 0);
        let n = lz4_flex::block::decompress_into(&self.packed, &mut self.chunk)
            .map_err(|e| invalid(format!("lz4: corrupted chunk: {e}")))?;
        if n == 0 {
            return Err(invalid("lz4: a chunk decodes to nothing"));
        }
        self.chunk.truncate(n);
        self.given = 0;
        Ok(true)
    }
}

impl<R: BufRead> Read for Lz4Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.given == self.chunk.len() && !self.next_chunk()? {
            return Ok(0);
        }
        let n = buf.len().min(self.chunk.len() - self.given);
        buf[..n].copy_from_slice(&self.chunk[self.given..self.given + n]);
        self.given += n;
        Ok(n)
    }
}

/// The one big-endian number in these formats: Dovecot-LZ4's sizes
/// (`be32_to_cpu_unaligned` in `istream-lz4.c`).
#[allow(clippy::big_endian_bytes)]
fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn truncated(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what)
}

fn lz4_error(e: io::Error, what: &str) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        truncated(&format!("lz4: {what}"))
    } else {
        e
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Dovecot-LZ4's big-endian sizes, written.
    #[allow(clippy::big_endian_bytes)]
    fn to_be32(n: u32) -> [u8; 4] {
        n.to_be_bytes()
    }

    /// A message-like text, compressible but not trivially.
    pub(crate) fn sample(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while out.len() < len {
            let _ = writeln!(
                out,
                "line {i} of the sample, x={}",
                i.wrapping_mul(2654435761)
            );
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// Dovecot-LZ4 framing made with lz4_flex's block encoder, chunks of `chunk` bytes
    /// (Dovecot writes 64 KiB: OSTREAM_LZ4_CHUNK_SIZE).
    pub(crate) fn dovecot_lz4(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = LZ4_MAGIC.to_vec();
        out.extend_from_slice(&to_be32(chunk as u32));
        for piece in data.chunks(chunk) {
            let packed = lz4_flex::block::compress(piece);
            out.extend_from_slice(&to_be32(packed.len() as u32));
            out.extend_from_slice(&packed);
        }
        out
    }

    /// `data` compressed as `codec` with the crates' encoders.
    pub(crate) fn encode(codec: Codec, data: &[u8]) -> Vec<u8> {
        match codec {
            Codec::Gz => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Bz2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(9));
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Zstd => zstd::encode_all(data, 3).unwrap(),
            Codec::Lz4 => dovecot_lz4(data, 64 * 1024),
        }
    }

    const ALL: [Codec; 5] = [Codec::Gz, Codec::Bz2, Codec::Xz, Codec::Lz4, Codec::Zstd];

    fn decode(codec: Codec, packed: &[u8]) -> io::Result<Vec<u8>> {
        let mut d = Decoder::new(codec, packed)?;
        let mut out = Vec::new();
        d.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn knows_mail_crypt_streams() {
        assert!(is_encrypted(b"CRYPTED\x03\x07\x02\0"));
        assert!(!is_encrypted(b"CRYPTED"));
        assert!(!is_encrypted(b"From: a@b\n"));
        assert_eq!(detect(b"CRYPTED\x03\x07\x02"), None);
    }

    #[test]
    fn names_each_stream_and_nothing_else() {
        assert_eq!(detect(&[0x1f, 0x8b, 0x08, 0, 0]), Some(Codec::Gz));
        assert_eq!(detect(b"BZh91AY&SY"), Some(Codec::Bz2));
        assert_eq!(
            detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4]),
            Some(Codec::Xz)
        );
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0x24]), Some(Codec::Zstd));
        assert_eq!(detect(b"Dovecot-LZ4\x0d\x2a\x9b\xc5\0\0"), Some(Codec::Lz4));
        for plain in [&b"Return-Path: <a@b>\n"[..], b"BZh", b"BZhx", &[0x1f], b""] {
            assert_eq!(detect(plain), None, "{plain:?}");
        }
        for codec in ALL {
            assert_eq!(detect(&encode(codec, b"x")), Some(codec), "{codec}");
        }
    }

    #[test]
    fn each_codec_decodes_what_its_encoder_wrote() {
        for len in [0, 1, 100, 64 * 1024, 64 * 1024 + 1, 300_000] {
            let data = sample(len);
            for codec in ALL {
                let packed = encode(codec, &data);
                assert_eq!(decode(codec, &packed).unwrap(), data, "{codec} {len}");
                // Reads of one byte at a time give the same bytes.
                let mut d = Decoder::new(codec, &packed[..]).unwrap();
                let mut one = [0u8; 1];
                let mut out = Vec::new();
                while d.read(&mut one).unwrap() == 1 {
                    out.push(one[0]);
                }
                assert_eq!(out, data, "{codec} {len} bytewise");
            }
        }
    }

    #[test]
    fn concatenated_gz_members_and_zstd_frames_decode_in_order() {
        for codec in [Codec::Gz, Codec::Zstd, Codec::Xz] {
            let mut packed = encode(codec, b"first part\n");
            packed.extend(encode(codec, b"second part\n"));
            assert_eq!(
                decode(codec, &packed).unwrap(),
                b"first part\nsecond part\n",
                "{codec}"
            );
        }
    }

    #[test]
    fn truncated_streams_are_errors_never_short_bytes_without_one() {
        let data = sample(200_000);
        for codec in ALL {
            let packed = encode(codec, &data);
            for cut in [1, 5, packed.len() / 2, packed.len() - 1] {
                let r = decode(codec, &packed[..cut]);
                // A cut inside the stream either fails, or (never) gives all the bytes.
                assert!(
                    r.is_err(),
                    "{codec} cut at {cut} decoded to {:?} bytes",
                    r.map(|v| v.len())
                );
            }
        }
    }

    #[test]
    fn bit_flips_never_panic() {
        let data = sample(30_000);
        for codec in ALL {
            let packed = encode(codec, &data);
            let step = (packed.len() / 41).max(1);
            for at in (0..packed.len()).step_by(step) {
                for bit in [0, 3, 7] {
                    let mut bad = packed.clone();
                    bad[at] ^= 1 << bit;
                    // Decoders with a checksum (gz, bz2, xz) must fail; lz4 and zstd
                    // without a content checksum may not notice a flipped literal.
                    // Either way: no panic, and a result the caller can compare.
                    let _ = decode(codec, &bad);
                }
            }
        }
    }

    #[test]
    fn checksummed_codecs_refuse_a_flipped_payload_bit() {
        let data = sample(100_000);
        for codec in [Codec::Gz, Codec::Bz2, Codec::Xz] {
            let packed = encode(codec, &data);
            let mut bad = packed.clone();
            let mid = packed.len() / 2;
            bad[mid] ^= 0x10;
            assert!(decode(codec, &bad).is_err(), "{codec}");
        }
    }

    #[test]
    fn dovecot_lz4_framing_rules() {
        let data = sample(150_000);
        let good = dovecot_lz4(&data, 64 * 1024);
        assert_eq!(decode(Codec::Lz4, &good).unwrap(), data);
        // Chunks of another size (the header says how large they may decode).
        assert_eq!(decode(Codec::Lz4, &dovecot_lz4(&data, 1000)).unwrap(), data);
        // A header limit above 1 MiB is refused, like Dovecot.
        let mut big = good.clone();
        big[15..19].copy_from_slice(&to_be32(2 << 20));
        assert!(decode(Codec::Lz4, &big).is_err());
        // A chunk that decodes larger than the header's limit is refused.
        let mut small_limit = dovecot_lz4(&data, 64 * 1024);
        small_limit[15..19].copy_from_slice(&to_be32(1000));
        assert!(decode(Codec::Lz4, &small_limit).is_err());
        // A zero chunk length is refused.
        let mut zero = good[..19].to_vec();
        zero.extend_from_slice(&[0, 0, 0, 0]);
        assert!(decode(Codec::Lz4, &zero).is_err());
        // Wrong magic.
        let mut magic = good.clone();
        magic[0] = b'd';
        assert!(decode(Codec::Lz4, &magic).is_err());
        // Only a header: an empty message.
        assert_eq!(decode(Codec::Lz4, &good[..19]).unwrap(), b"");
    }
}
