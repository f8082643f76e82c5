//! How opens and reads of `<uid>.eml` reach mailfs (`--open-mode`).
//!
//! A message's bytes never change for its `(mailbox, uidvalidity, uid)`, and that identity is
//! its inode (see `inode`), so the kernel may keep its page cache for as long as it likes.
//! What is left to choose is what an `open` costs and what an open file promises:
//!
//! - [`OpenMode::Kernel`] (default): the first `open` is answered `ENOSYS`, after which the
//!   kernel opens message files by itself (`FUSE_NO_OPEN_SUPPORT`): no OPEN or RELEASE
//!   request, the page cache kept. A warm `cat` costs mailfs nothing at all. Reads that
//!   miss the page cache come by inode and are served through [`RecentSources`], a small
//!   cache of opened stored files. An open file of a message that is expunged keeps what
//!   the page cache and that cache hold; past that a read gives `ESTALE`.
//! - [`OpenMode::Held`]: every open reaches mailfs, which holds the stored file until the
//!   release: an open message reads its bytes to the end whatever Dovecot does meanwhile.
//! - [`OpenMode::Passthrough`]: held, and where a message is a whole stored file (Maildir)
//!   and the kernel allows it (Linux 6.9+, `CAP_SYS_ADMIN`), the file is handed to the
//!   kernel (`FOPEN_PASSTHROUGH`): reads never reach mailfs and use the store's own page
//!   cache. Elsewhere it falls back to held opens, with one log line.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use fuser::{BackingId, FileAttr, INodeNo};
use lru::LruCache;
use parking_lot::Mutex;

use super::MailFs;
use super::inode::Node;
use crate::error::{Error, Result};
use crate::store::MessageSource;

/// Stored files kept open for reads by inode ([`OpenMode::Kernel`]). A streaming reader
/// needs one; the rest serves parallel readers and read-ahead.
const RECENT_SOURCES: NonZeroUsize = NonZeroUsize::new(64).expect("non-zero");

/// How message opens reach mailfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// No open or release request after the first (the kernel opens by itself).
    Kernel,
    /// Every open reaches mailfs and holds the stored file until release.
    Held,
    /// Held, and whole-file messages (Maildir) are passed through to the kernel.
    Passthrough,
}

impl OpenMode {
    /// The spelling of `--open-mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenMode::Kernel => "kernel",
            OpenMode::Held => "held",
            OpenMode::Passthrough => "passthrough",
        }
    }
}

impl std::str::FromStr for OpenMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<OpenMode, String> {
        [OpenMode::Kernel, OpenMode::Held, OpenMode::Passthrough]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("{s:?}: expected kernel, held or passthrough"))
    }
}

/// One stored file opened for reads by inode, with the node and attributes it was opened
/// for.
#[derive(Debug, Clone)]
pub(super) struct Recent {
    pub node: Node,
    pub src: Arc<MessageSource>,
    /// Attributes when opened: an open file of a message expunged since keeps them (as
    /// `fstat` of an unlinked file does).
    pub attr: FileAttr,
}

/// Stored files opened for reads that come by inode. Each entry remembers the node it was
/// opened for: an inode number found again for another node (after probing) is a miss.
#[derive(Debug)]
pub(super) struct RecentSources {
    lru: Mutex<LruCache<u64, Recent>>,
}

impl Default for RecentSources {
    fn default() -> Self {
        RecentSources {
            lru: Mutex::new(LruCache::new(RECENT_SOURCES)),
        }
    }
}

impl RecentSources {
    /// What was opened for `node` at `ino`, if still kept.
    pub(super) fn get(&self, ino: u64, node: &Node) -> Option<Recent> {
        let mut lru = self.lru.lock();
        lru.get(&ino).filter(|r| r.node == *node).cloned()
    }

    pub(super) fn insert(&self, ino: u64, recent: Recent) {
        self.lru.lock().put(ino, recent);
    }

    /// Forgets `ino` (the kernel forgot the node, or it was expunged).
    pub(super) fn remove(&self, ino: u64) {
        self.lru.lock().pop(&ino);
    }
}

/// Backing ids handed to the kernel, one per inode while any passthrough open of it lasts:
/// the kernel requires every open of an inode to use the same backing file.
#[derive(Debug, Default)]
pub(super) struct Backings {
    by_ino: Mutex<HashMap<u64, (Arc<BackingId>, usize)>>,
}

impl Backings {
    /// The backing id of `ino`, made by `make` if no open of it lasts; counts one more open.
    pub(super) fn acquire(
        &self,
        ino: u64,
        make: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut map = self.by_ino.lock();
        if let Some((id, opens)) = map.get_mut(&ino) {
            *opens += 1;
            return Ok(id.clone());
        }
        let id = Arc::new(make()?);
        map.insert(ino, (id.clone(), 1));
        Ok(id)
    }

    /// One open of `ino` ended; the backing id is closed with the last.
    pub(super) fn release(&self, ino: u64) {
        let mut map = self.by_ino.lock();
        if let Some((_, opens)) = map.get_mut(&ino) {
            *opens -= 1;
            if *opens == 0 {
                map.remove(&ino);
            }
        }
    }
}

impl MailFs {
    /// The stored file of message node `ino`, for a read that comes without a handle
    /// (kernel opens): kept from an earlier read, or opened now from the current view.
    /// Not-found once the message is gone and no earlier read kept its file.
    pub(super) fn source_by_inode(&self, ino: u64) -> Result<Arc<MessageSource>> {
        let node = self
            .node(INodeNo(ino))
            .ok_or_else(|| Error::not_found(format!("inode {ino}")))?;
        if let Some(recent) = self.recent.get(ino, &node) {
            return Ok(recent.src);
        }
        let Node::Message {
            mailbox,
            uid_validity,
            key,
        } = &node
        else {
            return Err(Error::not_found(format!("inode {ino} is not a message")));
        };
        let (view, attr) = self.with_message(mailbox, *uid_validity, key, |view, meta| {
            (view.clone(), self.message_attr(ino, meta))
        })?;
        let src = Arc::new(self.store.open(mailbox, &view, key)?);
        self.recent.insert(
            ino,
            Recent {
                node,
                src: src.clone(),
                attr,
            },
        );
        Ok(src)
    }
}

thread_local! {
    /// Each FUSE worker's read buffer, reused from one read to the next.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads `[offset, offset + size)` of the message (cut at its end) and passes the bytes to
/// `reply`. Fewer bytes than asked for, below the message's length, means the stored file
/// shrank under us: an error, never a short message.
pub(super) fn read_message<T>(
    src: &MessageSource,
    offset: u64,
    size: u32,
    reply: impl FnOnce(&[u8]) -> T,
) -> Result<T> {
    let end = offset.saturating_add(u64::from(size)).min(src.len());
    if offset >= end {
        return Ok(reply(&[]));
    }
    let want = (end - offset) as usize;
    READ_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let buf = &mut buf[..want];
        let mut done = 0;
        while done < want {
            match src.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("stored message file", e)),
            }
        }
        if done < want {
            return Err(Error::Unreadable {
                what: format!(
                    "only {done} of {want} bytes at offset {offset} are still there; the \
                     stored file shrank"
                ),
            });
        }
        Ok(reply(buf))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MailboxName, MessageKey};
    use std::io::Write;

    fn source(bytes: &[u8], start: u64, len: u64) -> (tempfile_path::TempPath, MessageSource) {
        let tmp = tempfile_path::TempPath::new();
        std::fs::File::create(&tmp.0)
            .and_then(|mut f| f.write_all(bytes))
            .expect("write");
        let file = std::fs::File::open(&tmp.0).expect("open");
        (tmp, MessageSource::file_range(file, start, len))
    }

    /// A file removed on drop, under the target directory.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn new() -> TempPath {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "mailfs-open-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn reads_inside_the_message_only() {
        let (_t, src) = source(b"HEADERbody bytes\nTRAILER", 6, 11);
        let got = read_message(&src, 0, 4096, |b| b.to_vec()).expect("read");
        assert_eq!(got, b"body bytes\n");
        let got = read_message(&src, 5, 3, |b| b.to_vec()).expect("read");
        assert_eq!(got, b"byt");
        let got = read_message(&src, 11, 10, |b| b.to_vec()).expect("read at end");
        assert!(got.is_empty());
        assert!(src.whole_file().is_none());
    }

    #[test]
    fn a_shrunk_file_is_an_error_not_a_short_message() {
        let (t, src) = source(b"0123456789", 0, 10);
        assert!(src.whole_file().is_some());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&t.0)
            .and_then(|f| f.set_len(4))
            .expect("truncate");
        let err = read_message(&src, 0, 10, |b| b.len()).expect_err("shrunk");
        assert!(err.to_string().contains("shrank"), "{err}");
        assert_eq!(
            read_message(&src, 0, 4, |b| b.to_vec()).expect("ok"),
            b"0123"
        );
    }

    #[test]
    fn a_source_in_memory_reads_like_a_file_range() {
        let src = MessageSource::memory(Arc::from(&b"From: a\n\nbody\n"[..]));
        assert_eq!(
            read_message(&src, 0, 4096, |b| b.to_vec()).unwrap(),
            b"From: a\n\nbody\n"
        );
        assert_eq!(read_message(&src, 9, 2, |b| b.to_vec()).unwrap(), b"bo");
        assert!(read_message(&src, 15, 10, |b| b.is_empty()).unwrap());
        assert!(read_message(&src, 99, 10, |b| b.is_empty()).unwrap());
        assert!(src.whole_file().is_none());
    }

    #[test]
    fn recent_sources_answer_only_for_their_node() {
        let (_t, src) = source(b"x", 0, 1);
        let node = |uid| Node::Message {
            mailbox: Arc::new(MailboxName(vec!["INBOX".into()])),
            uid_validity: 7,
            key: MessageKey::Uid(uid),
        };
        let recent = RecentSources::default();
        recent.insert(
            42,
            Recent {
                node: node(1),
                src: Arc::new(src),
                attr: super::super::attrs::negative_attr(),
            },
        );
        assert!(recent.get(42, &node(1)).is_some());
        assert!(recent.get(42, &node(2)).is_none(), "same ino, other node");
        recent.remove(42);
        assert!(recent.get(42, &node(1)).is_none());
    }
}
