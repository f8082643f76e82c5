//! Messages Dovecot's zlib plugin stored compressed, read as the messages themselves: the
//! store side of [`crate::format::compression`]. A stored body whose first bytes are a
//! compressed stream ([`stored_form`]) is opened as a [`MessageSource::made`] over
//! [`Compressed`], whose reads decode.
//!
//! # Reads from anywhere without decoding from the start each time
//!
//! None of these streams can be entered in the middle, so decoded bytes are kept, in
//! [`CHUNK`]-sized pieces, in one [`DecodedCache`] per store (in its [`StoreContext`],
//! shared by every open of every message), and the decoder of a message is kept where it
//! stopped, so that the next read further on continues it:
//!
//! - A message's first read decodes it whole once ("verification"): its length must be
//!   the size Dovecot recorded (`S=`, dbox metadata `Z`) and its checksums (gz, bz2, xz)
//!   must hold before any byte is served, so a damaged stream is an error, never wrong
//!   bytes followed by an error. Every chunk decoded is kept (as the budget allows).
//! - A read finds its chunks in the cache, or continues the message's kept decoder if it
//!   stopped at or before the chunk, or else starts a new decoder from the stream's
//!   first byte (a *restart*, counted in `StoreStats::decoder_starts` with the first
//!   decode) and keeps each chunk it passes.
//!
//! So a sequential read (the kernel's 128 KiB reads, `cat`, `grep`) decodes a message once
//! or twice, a `tail -c` or a read from the middle is served from the chunks the first
//! pass kept, and a message read backwards costs one restart per budget's worth of bytes
//! (none at all when the message fits the budget).
//!
//! # Memory bound
//!
//! - decoded chunks: at most `StoreConfig::decoded_cache_bytes` (default 8 MiB) in all,
//!   least recently used dropped first, plus the chunks readers are copying from at that
//!   moment (one per reading thread);
//! - decoders kept between reads: at most `StoreConfig::live_decoders` (default 8), least
//!   recently used dropped, plus one per thread decoding at that moment. A decoder holds
//!   its codec's state: gz 32 KiB window, bz2 up to 3.6 MiB (900k blocks), xz its
//!   dictionary (limited to 80 MiB as in Dovecot; 8 MiB at xz's default level), zstd its
//!   window (2 MiB at Dovecot's default level 3, the frame's declared window in general),
//!   lz4 one 64 KiB chunk; and a 64 KiB input buffer;
//! - per message remembered as verified (or broken): a key, at most 16384 of them.
//!
//! Cached bytes are keyed by the stored file's identity (device, inode, ctime), the
//! stream's offset and stored length and the recorded size: a file replaced under the same
//! inode number has another ctime, so stale bytes are never served.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::num::NonZeroUsize;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use super::context::StoreContext;
use super::source::{MessageSource, ReadAt};
use crate::error::{Error, Result};
use crate::format::compression::{self, Codec, Decoder};

/// Decoded bytes are kept in pieces of this size (chunk `i` is bytes `[i*CHUNK, ...)`).
pub const CHUNK: usize = 64 * 1024;

/// Messages remembered as verified or broken.
const VERIFIED_KEYS: NonZeroUsize = NonZeroUsize::new(16384).expect("non-zero");

/// Striped locks serializing the decoding of one message (two readers of one message wait
/// for each other's chunks instead of both decoding).
const STRIPES: usize = 16;

/// How a stored message body is kept, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredForm {
    /// The message itself.
    Plain,
    /// Compressed by the zlib plugin.
    Compressed(Codec),
    /// Encrypted by the mail_crypt plugin (`CRYPTED` magic).
    Encrypted,
}

impl StoredForm {
    /// The form of a stream that starts with `head` (its first
    /// [`compression::MAGIC_LEN`] bytes, or all of a shorter one).
    pub fn of(head: &[u8]) -> StoredForm {
        if compression::is_encrypted(head) {
            return StoredForm::Encrypted;
        }
        match compression::detect(head) {
            Some(codec) => StoredForm::Compressed(codec),
            None => StoredForm::Plain,
        }
    }

    /// Words for a log line about a message stored this way that cannot be read as it
    /// is (`None` for a plain one).
    pub fn describe(self) -> Option<String> {
        match self {
            StoredForm::Plain => None,
            StoredForm::Compressed(codec) => {
                Some(format!("compressed ({codec}, Dovecot's zlib plugin)"))
            }
            StoredForm::Encrypted => Some(
                "encrypted (Dovecot's mail_crypt plugin), which mailfs does not decrypt"
                    .to_string(),
            ),
        }
    }
}

/// The form of the stream at `start` of `file` (`len` bytes long).
pub fn stored_form(file: &File, start: u64, len: u64) -> io::Result<StoredForm> {
    let mut head = [0u8; compression::MAGIC_LEN];
    let want = head.len().min(usize::try_from(len).unwrap_or(usize::MAX));
    let mut got = 0;
    while got < want {
        match file.read_at(&mut head[got..want], start + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(StoredForm::of(&head[..got]))
}

/// The message stored at `[start, start + stored_len)` of `file` (named `path`), whose
/// size Dovecot recorded as `len`: the stored bytes when they are the message, decoded when
/// compressed. Encrypted bodies are [`Error::Unreadable`], and so is a plain body whose
/// stored length is not `len`.
pub fn open_stored(
    ctx: &Arc<StoreContext>,
    file: File,
    path: &Path,
    start: u64,
    stored_len: u64,
    len: u64,
) -> Result<MessageSource> {
    let form = stored_form(&file, start, stored_len).map_err(|e| Error::io(path, e))?;
    match form {
        StoredForm::Plain if stored_len == len => {
            Ok(MessageSource::file_range(file, start, stored_len))
        }
        StoredForm::Plain => Err(Error::Unreadable {
            what: format!(
                "{}: {stored_len} stored bytes for a {len}-byte message, and not in a form \
                 mailfs knows (compressed or encrypted)",
                path.display()
            ),
        }),
        StoredForm::Encrypted => Err(Error::Unreadable {
            what: format!(
                "{}: {}",
                path.display(),
                form.describe().unwrap_or_default()
            ),
        }),
        StoredForm::Compressed(codec) => {
            let meta = file.metadata().map_err(|e| Error::io(path, e))?;
            let key = Key {
                dev: meta.dev(),
                ino: meta.ino(),
                ctime: (meta.ctime(), meta.ctime_nsec()),
                start,
                stored_len,
                len,
            };
            let reader = Compressed {
                key,
                codec,
                file: Arc::new(file),
                path: path.into(),
                ctx: ctx.clone(),
            };
            Ok(MessageSource::made(len, Arc::new(reader)))
        }
    }
}

/// Decodes the whole stream at `[start, start + stored_len)` of `file` once, to learn its
/// decoded size and Dovecot's virtual size (LF counted as CRLF) when nothing recorded them.
pub fn count_sizes(
    file: &File,
    codec: Codec,
    start: u64,
    stored_len: u64,
) -> io::Result<(u64, u64)> {
    let input = BufReader::with_capacity(CHUNK, FileRange::new(file, start, stored_len));
    let mut decoder = Decoder::new(codec, input)?;
    let mut buf = vec![0u8; CHUNK];
    let (mut size, mut vsize, mut prev) = (0u64, 0u64, 0u8);
    loop {
        let n = decoder.read_full(&mut buf)?;
        if n == 0 {
            return Ok((size, vsize));
        }
        for &c in &buf[..n] {
            if c == b'\n' && prev != b'\r' {
                vsize += 1;
            }
            vsize += 1;
            prev = c;
        }
        size += n as u64;
    }
}

/// What identifies one stored compressed stream (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    start: u64,
    stored_len: u64,
    len: u64,
}

impl Key {
    fn stripe(&self) -> usize {
        let mixed = self.ino ^ self.dev.rotate_left(17) ^ self.start.rotate_left(29);
        (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % STRIPES
    }
}

/// Reads of a range of a file through `pread` (a decoder's input).
struct FileRange<F> {
    file: F,
    at: u64,
    end: u64,
}

impl<F: std::borrow::Borrow<File>> FileRange<F> {
    fn new(file: F, start: u64, len: u64) -> FileRange<F> {
        FileRange {
            file,
            at: start,
            end: start.saturating_add(len),
        }
    }
}

impl<F: std::borrow::Borrow<File>> Read for FileRange<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.at);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.borrow().read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

type StreamDecoder = Decoder<BufReader<FileRange<Arc<File>>>>;

/// A message's decoder kept between reads: it has decoded `pos` bytes.
struct Forward {
    decoder: StreamDecoder,
    pos: u64,
}

/// Decoded chunks and kept decoders of one store, bounded (see the module documentation).
pub struct DecodedCache {
    budget: usize,
    state: Mutex<State>,
    stripes: [Mutex<()>; STRIPES],
}

struct State {
    chunks: LruCache<(Key, u64), Arc<[u8]>>,
    bytes: usize,
    decoders: LruCache<Key, Forward>,
    /// Messages decoded whole once: `Ok` (length and checksums right) or why not.
    verified: LruCache<Key, std::result::Result<(), Arc<str>>>,
}

impl std::fmt::Debug for DecodedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("DecodedCache")
            .field("budget", &self.budget)
            .field("bytes", &s.bytes)
            .field("chunks", &s.chunks.len())
            .field("decoders", &s.decoders.len())
            .finish()
    }
}

impl Default for DecodedCache {
    fn default() -> Self {
        let config = super::StoreConfig::default();
        DecodedCache::new(config.decoded_cache_bytes, config.live_decoders)
    }
}

impl DecodedCache {
    /// A cache of at most `budget` decoded bytes (at least two chunks) and `decoders`
    /// kept decoders (at least one).
    pub fn new(budget: usize, decoders: usize) -> DecodedCache {
        DecodedCache {
            budget: budget.max(2 * CHUNK),
            state: Mutex::new(State {
                chunks: LruCache::unbounded(),
                bytes: 0,
                decoders: LruCache::new(NonZeroUsize::new(decoders.max(1)).expect("non-zero")),
                verified: LruCache::new(VERIFIED_KEYS),
            }),
            stripes: std::array::from_fn(|_| Mutex::new(())),
        }
    }

    fn chunk(&self, key: &Key, index: u64) -> Option<Arc<[u8]>> {
        self.state.lock().chunks.get(&(*key, index)).cloned()
    }

    fn keep_chunk(&self, key: &Key, index: u64, bytes: Arc<[u8]>) {
        let mut s = self.state.lock();
        s.bytes += bytes.len();
        if let Some(old) = s.chunks.put((*key, index), bytes) {
            s.bytes -= old.len();
        }
        while s.bytes > self.budget {
            match s.chunks.pop_lru() {
                Some((_, old)) => s.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Bytes of decoded chunks held now.
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

/// A compressed message read as decoded bytes ([`ReadAt`]).
struct Compressed {
    key: Key,
    codec: Codec,
    file: Arc<File>,
    path: PathBuf,
    ctx: Arc<StoreContext>,
}

impl std::fmt::Debug for Compressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressed")
            .field("path", &self.path)
            .field("codec", &self.codec)
            .field("len", &self.key.len)
            .finish()
    }
}

impl Compressed {
    fn cache(&self) -> &DecodedCache {
        &self.ctx.decoded
    }

    fn error(&self, what: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: the {} stream (Dovecot's zlib plugin, {} bytes at offset {}) cannot be \
                 decoded: {what}",
                self.path.display(),
                self.codec,
                self.key.stored_len,
                self.key.start
            ),
        )
    }

    /// A decoder at the stream's first byte (counted).
    fn start(&self) -> io::Result<Forward> {
        super::context::StoreContext::count(&self.ctx.stats.decoder_starts);
        let input = BufReader::with_capacity(
            CHUNK,
            FileRange::new(self.file.clone(), self.key.start, self.key.stored_len),
        );
        let decoder = Decoder::new(self.codec, input).map_err(|e| self.error(e))?;
        Ok(Forward { decoder, pos: 0 })
    }

    /// Decodes the chunk `fwd` is at, keeps it, and moves on. At the last chunk the stream
    /// must end there: a stream longer or shorter than the recorded size is an error.
    fn advance(&self, fwd: &mut Forward) -> io::Result<Arc<[u8]>> {
        let len = self.key.len;
        let want = (len - fwd.pos).min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        let n = fwd.decoder.read_full(&mut buf).map_err(|e| self.error(e))?;
        if n < want {
            return Err(self.error(format_args!(
                "it ends after {} bytes, but Dovecot recorded a {len}-byte message",
                fwd.pos + n as u64
            )));
        }
        let index = fwd.pos / CHUNK as u64;
        fwd.pos += n as u64;
        if fwd.pos == len {
            let mut more = [0u8; 1];
            if fwd
                .decoder
                .read_full(&mut more)
                .map_err(|e| self.error(e))?
                != 0
            {
                return Err(self.error(format_args!(
                    "it holds more than the {len} bytes Dovecot recorded"
                )));
            }
        }
        let chunk: Arc<[u8]> = buf.into();
        self.cache().keep_chunk(&self.key, index, chunk.clone());
        Ok(chunk)
    }

    /// Decodes the whole message once (keeping its chunks), unless that was done: the
    /// length and the codec's checksums are right before any byte is served.
    fn verify(&self) -> io::Result<()> {
        let known = self.cache().state.lock().verified.get(&self.key).cloned();
        match known {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => return Err(io::Error::new(io::ErrorKind::InvalidData, &*e)),
            None => {}
        }
        let _serial = self.cache().stripes[self.key.stripe()].lock();
        if let Some(known) = self.cache().state.lock().verified.get(&self.key).cloned() {
            return known.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, &*e));
        }
        let result = self.start().and_then(|mut fwd| {
            while fwd.pos < self.key.len {
                self.advance(&mut fwd)?;
            }
            // An empty message: the stream must be empty too.
            if self.key.len == 0 {
                let mut more = [0u8; 1];
                if fwd
                    .decoder
                    .read_full(&mut more)
                    .map_err(|e| self.error(e))?
                    != 0
                {
                    return Err(self.error("it holds bytes, but Dovecot recorded none"));
                }
            }
            Ok(())
        });
        let remembered = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| Arc::from(e.to_string()));
        self.cache().state.lock().verified.put(self.key, remembered);
        result
    }

    /// Chunk `index`, from the cache or decoded (continuing the kept decoder when it is at
    /// or before the chunk, else from the start).
    fn chunk(&self, index: u64) -> io::Result<Arc<[u8]>> {
        if let Some(c) = self.cache().chunk(&self.key, index) {
            return Ok(c);
        }
        let _serial = self.cache().stripes[self.key.stripe()].lock();
        if let Some(c) = self.cache().chunk(&self.key, index) {
            return Ok(c);
        }
        let at = index * CHUNK as u64;
        let kept = self.cache().state.lock().decoders.pop(&self.key);
        let mut fwd = match kept {
            Some(f) if f.pos <= at => f,
            _ => self.start()?,
        };
        loop {
            let i = fwd.pos / CHUNK as u64;
            let chunk = self.advance(&mut fwd)?;
            if i == index {
                if fwd.pos < self.key.len {
                    self.cache().state.lock().decoders.put(self.key, fwd);
                }
                return Ok(chunk);
            }
        }
    }
}

impl ReadAt for Compressed {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let len = self.key.len;
        if offset >= len || buf.is_empty() {
            return Ok(0);
        }
        self.verify()?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            if at >= len {
                break;
            }
            let index = at / CHUNK as u64;
            let chunk = self.chunk(index)?;
            let from = (at - index * CHUNK as u64) as usize;
            let n = (buf.len() - done).min(chunk.len().saturating_sub(from));
            if n == 0 {
                break;
            }
            buf[done..done + n].copy_from_slice(&chunk[from..from + n]);
            done += n;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::compression::tests::{encode, sample};
    use crate::store::StoreConfig;
    use std::io::Write;
    use std::sync::atomic::Ordering;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn stored(bytes: &[u8], prefix: &[u8], suffix: &[u8]) -> (Tmp, File) {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mailfs-decoded-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = File::create(&path).unwrap();
        f.write_all(prefix).unwrap();
        f.write_all(bytes).unwrap();
        f.write_all(suffix).unwrap();
        drop(f);
        let file = File::open(&path).unwrap();
        (Tmp(path), file)
    }

    fn ctx(budget: usize) -> Arc<StoreContext> {
        StoreContext::new(StoreConfig {
            decoded_cache_bytes: budget,
            ..StoreConfig::default()
        })
    }

    fn starts(ctx: &StoreContext) -> u64 {
        ctx.stats.decoder_starts.load(Ordering::Relaxed)
    }

    fn read(src: &MessageSource, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = src.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    const ALL: [Codec; 5] = [Codec::Gz, Codec::Bz2, Codec::Xz, Codec::Lz4, Codec::Zstd];

    #[test]
    fn a_compressed_range_reads_as_the_message_from_any_offset() {
        let data = sample(300_000);
        for codec in ALL {
            let packed = encode(codec, &data);
            // A dbox-like file: header before, metadata after the stream.
            let (t, file) = stored(&packed, b"HEADER\n", b"\n##metadata\n");
            let ctx = ctx(8 << 20);
            let src =
                open_stored(&ctx, file, &t.0, 7, packed.len() as u64, data.len() as u64).unwrap();
            assert_eq!(src.len(), data.len() as u64);
            assert!(src.whole_file().is_none());
            assert_eq!(read(&src, 0, data.len() + 10).unwrap(), data, "{codec}");
            for (off, n) in [(0, 1), (65535, 2), (123_456, 70_000), (299_990, 100)] {
                assert_eq!(
                    read(&src, off, n).unwrap(),
                    &data[off as usize..(off as usize + n).min(data.len())],
                    "{codec} {off}"
                );
            }
            assert_eq!(starts(&ctx), 1, "{codec}: one decode serves every read");
        }
    }

    /// Reads `src` from its end to its start in 4 KiB steps, checking each against `data`.
    fn read_backwards(src: &MessageSource, data: &[u8]) {
        let mut at = data.len() as u64;
        while at > 0 {
            let from = at.saturating_sub(4096);
            assert_eq!(
                read(src, from, (at - from) as usize).unwrap(),
                &data[from as usize..at as usize]
            );
            at = from;
        }
    }

    #[test]
    fn reading_backwards_restarts_once_per_budget_not_per_read() {
        let data = sample(2_000_000);
        let packed = encode(Codec::Zstd, &data);
        // Fits the budget: one decode in all.
        let (t, file) = stored(&packed, b"", b"");
        let c = ctx(4 << 20);
        let src = open_stored(&c, file, &t.0, 0, packed.len() as u64, data.len() as u64).unwrap();
        read_backwards(&src, &data);
        assert_eq!(starts(&c), 1);
        // Twice the budget: a restart per budget's worth, not per 4 KiB.
        let c = ctx(1 << 20);
        let file = File::open(&t.0).unwrap();
        let src = open_stored(&c, file, &t.0, 0, packed.len() as u64, data.len() as u64).unwrap();
        read_backwards(&src, &data);
        assert!(starts(&c) <= 6, "{} decoder starts", starts(&c));
        assert!(c.decoded.bytes() <= 1 << 20);
    }

    #[test]
    fn a_wrong_length_or_a_damaged_stream_is_an_error_naming_the_file() {
        let data = sample(200_000);
        for codec in ALL {
            let packed = encode(codec, &data);
            let (t, file) = stored(&packed, b"", b"");
            let c = ctx(8 << 20);
            for len in [data.len() as u64 - 1, data.len() as u64 + 1] {
                let f = file.try_clone().unwrap();
                let src = open_stored(&c, f, &t.0, 0, packed.len() as u64, len).unwrap();
                let err = read(&src, 0, 10).expect_err("wrong length");
                assert!(
                    err.to_string().contains(&t.0.display().to_string()),
                    "{err}"
                );
                // Remembered: the next read fails at once, again naming the file.
                assert!(read(&src, 100, 10).is_err());
            }
            let cut = &packed[..packed.len() - 3];
            let (t2, f2) = stored(cut, b"", b"");
            let src = open_stored(&c, f2, &t2.0, 0, cut.len() as u64, data.len() as u64).unwrap();
            assert!(read(&src, 0, 10).is_err(), "{codec} truncated");
        }
    }

    #[test]
    fn forms_are_told_apart_and_plain_or_encrypted_bodies_are_not_decoded() {
        let (t, file) = stored(b"From: a\n\nhello\n", b"", b"");
        let c = ctx(1 << 20);
        let src = open_stored(&c, file.try_clone().unwrap(), &t.0, 0, 15, 15).unwrap();
        assert!(src.whole_file().is_some());
        let err = open_stored(&c, file, &t.0, 0, 15, 99).expect_err("size");
        assert!(err.to_string().contains("15 stored bytes"), "{err}");
        let (t, file) = stored(b"CRYPTED\x03\x07\x02\0\0rest", b"", b"");
        let err = open_stored(&c, file, &t.0, 0, 18, 99).expect_err("encrypted");
        assert!(err.to_string().contains("encrypted"), "{err}");
    }

    #[test]
    fn sizes_are_counted_by_decoding() {
        let data = b"a\nb\r\nc\n".repeat(1000);
        let packed = encode(Codec::Gz, &data);
        let (_t, file) = stored(&packed, b"xx", b"");
        let (size, vsize) = count_sizes(&file, Codec::Gz, 2, packed.len() as u64).unwrap();
        assert_eq!((size, vsize), (7000, 9000));
    }
}
