//! [`MessageSource`]: the bytes of one opened message, as the readers hand them to `fs/`.
//!
//! Most messages are one range of one stored file. Some are made: a message Dovecot
//! stored compressed is decoded ([`ReadAt`] implementations beside the codecs), a dbox
//! message whose attachments live in `mail_attachment_dir` and an mbox message whose
//! Dovecot headers are hidden are a sequence of [`Piece`]s (file ranges and bytes).
//! Whatever the form, `read_at` never reads past the message and reads of any offset cost
//! no more than the bytes asked for plus what the form needs to find them.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The stored bytes of one message, opened. Reads never go past the message.
#[derive(Debug)]
pub struct MessageSource {
    bytes: Bytes,
    len: u64,
}

/// Random access to a message's bytes that are made rather than stored as they are
/// presented (a decompressed stream). Implementations are shared between the opens of
/// one message and read from any thread.
pub trait ReadAt: Send + Sync + fmt::Debug {
    /// Reads from `offset` (below the length the source was made with) into `buf`; like
    /// `pread`, it may read less than asked, and 0 only at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

/// One part of a message made of parts.
#[derive(Debug, Clone)]
pub enum Piece {
    /// `len` bytes of `file` from `start`.
    File {
        file: Arc<File>,
        start: u64,
        len: u64,
    },
    /// Bytes made in memory (a header line, re-encoded base64).
    Bytes(Arc<[u8]>),
    /// Bytes made on demand.
    Made { reader: Arc<dyn ReadAt>, len: u64 },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::File { len, .. } | Piece::Made { len, .. } => *len,
            Piece::Bytes(b) => b.len() as u64,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let left = self.len().saturating_sub(offset);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        match self {
            Piece::File { file, start, .. } => file.read_at(&mut buf[..want], start + offset),
            Piece::Bytes(bytes) => {
                // offset < len here, so it fits in usize.
                let from = offset as usize;
                buf[..want].copy_from_slice(&bytes[from..from + want]);
                Ok(want)
            }
            Piece::Made { reader, .. } => reader.read_at(&mut buf[..want], offset),
        }
    }
}

#[derive(Debug)]
enum Bytes {
    /// `len` bytes of `file` from `start` (reads are `pread`s).
    File { file: File, start: u64 },
    /// The message itself.
    Memory(Arc<[u8]>),
    /// The message as consecutive pieces; `ends[i]` is the message offset where piece `i`
    /// ends (strictly increasing: empty pieces are dropped).
    Pieces { pieces: Vec<Piece>, ends: Vec<u64> },
    /// Bytes made on demand.
    Made(Arc<dyn ReadAt>),
}

impl MessageSource {
    /// `len` bytes of `file` from `start`.
    pub fn file_range(file: File, start: u64, len: u64) -> MessageSource {
        MessageSource {
            bytes: Bytes::File { file, start },
            len,
        }
    }

    /// A message held in memory.
    pub fn memory(bytes: Arc<[u8]>) -> MessageSource {
        let len = bytes.len() as u64;
        MessageSource {
            bytes: Bytes::Memory(bytes),
            len,
        }
    }

    /// A message made of `pieces`, in order; its length is theirs together.
    pub fn pieces(pieces: Vec<Piece>) -> MessageSource {
        let pieces: Vec<Piece> = pieces.into_iter().filter(|p| p.len() > 0).collect();
        let mut ends = Vec::with_capacity(pieces.len());
        let mut at = 0u64;
        for p in &pieces {
            at += p.len();
            ends.push(at);
        }
        MessageSource {
            bytes: Bytes::Pieces { pieces, ends },
            len: at,
        }
    }

    /// A message of `len` bytes made by `reader`.
    pub fn made(len: u64, reader: Arc<dyn ReadAt>) -> MessageSource {
        MessageSource {
            bytes: Bytes::Made(reader),
            len,
        }
    }

    /// The message's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads from `offset` into `buf`, never past the message's end; the count read
    /// (0 at the end). Like `pread`, it may read less than asked.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let left = self.len.saturating_sub(offset);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        match &self.bytes {
            Bytes::File { file, start } => file.read_at(&mut buf[..want], start + offset),
            Bytes::Memory(bytes) => {
                // offset < len here, so it fits in usize.
                let from = offset as usize;
                buf[..want].copy_from_slice(&bytes[from..from + want]);
                Ok(want)
            }
            Bytes::Pieces { pieces, ends } => {
                // The first piece ending after `offset`; then on through the next pieces
                // until `buf` is full or a piece reads short.
                let mut i = ends.partition_point(|&end| end <= offset);
                let mut done = 0;
                while done < want && i < pieces.len() {
                    let piece_start = ends[i] - pieces[i].len();
                    let at = offset + done as u64 - piece_start;
                    let n = pieces[i].read_at(&mut buf[done..want], at)?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                    if offset + done as u64 >= ends[i] {
                        i += 1;
                    } else {
                        break;
                    }
                }
                Ok(done)
            }
            Bytes::Made(reader) => reader.read_at(&mut buf[..want], offset),
        }
    }

    /// The open file, when the message is all of it (so that the kernel can be handed the
    /// file itself: FUSE passthrough).
    pub fn whole_file(&self) -> Option<&File> {
        match &self.bytes {
            Bytes::File { file, start: 0 }
                if file.metadata().is_ok_and(|m| m.len() == self.len) =>
            {
                Some(file)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(src: &MessageSource, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            let n = src.read_at(&mut buf, out.len() as u64).expect("read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[derive(Debug)]
    struct Repeat(u8);
    impl ReadAt for Repeat {
        fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<usize> {
            buf.fill(self.0);
            Ok(buf.len())
        }
    }

    #[test]
    fn pieces_read_as_one_message_from_any_offset() {
        let path = std::env::temp_dir().join(format!("mailfs-source-{}", std::process::id()));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(b"xxHEADERxx"))
            .expect("write");
        let file = Arc::new(File::open(&path).expect("open"));
        let _ = std::fs::remove_file(&path);
        let src = MessageSource::pieces(vec![
            Piece::File {
                file: file.clone(),
                start: 2,
                len: 6,
            },
            Piece::Bytes(Arc::from(&b""[..])),
            Piece::Bytes(Arc::from(&b": v\n"[..])),
            Piece::Made {
                reader: Arc::new(Repeat(b'z')),
                len: 3,
            },
            Piece::File {
                file,
                start: 0,
                len: 2,
            },
        ]);
        let whole = b"HEADER: v\nzzzxx";
        assert_eq!(src.len(), whole.len() as u64);
        assert!(src.whole_file().is_none());
        for chunk in [1, 2, 3, 5, 7, 64] {
            assert_eq!(read_all(&src, chunk), whole, "chunk {chunk}");
        }
        for offset in 0..whole.len() {
            let mut buf = [0u8; 64];
            let n = src.read_at(&mut buf, offset as u64).expect("read");
            assert_eq!(&buf[..n], &whole[offset..], "offset {offset}");
        }
        assert_eq!(src.read_at(&mut [0u8; 4], whole.len() as u64).unwrap(), 0);
    }

    #[test]
    fn a_made_message_is_cut_at_its_length() {
        let src = MessageSource::made(5, Arc::new(Repeat(b'a')));
        assert_eq!(read_all(&src, 3), b"aaaaa");
        assert!(src.whole_file().is_none());
        assert!(MessageSource::pieces(Vec::new()).is_empty());
    }
}
