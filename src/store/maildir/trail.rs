//! Continuing a Maildir view from the previous one by what changed, instead of reading
//! `cur/`, `new/` and `dovecot-uidlist` again.
//!
//! A full build arms a name journal on `cur/` and `new/` (`store::journal`) *before* it
//! lists them, and leaves a [`Continuation`]: the uidlist's identity and how far it was
//! parsed, base name -> UID, the files without a UID yet, the keyword order and the index
//! it used. The next build takes it and applies, in order: the journal's name events
//! (a new name of a known base is that message renamed: flags changed, or moved from
//! `new/`; a name gone that is a message's current name is an expunge), then the uidlist
//! lines appended since (files waiting for a UID get theirs), then the index records that
//! changed (their cached dates). Only what was touched is `stat`ed.
//!
//! Anything the continuation cannot account for exactly as a full build would -- a lost
//! journal, a uidlist replaced or rewritten (its header differs, it shrank), keywords
//! changed, the index appearing, disappearing or being replaced, a base seen twice, a
//! file whose UID line is older than the last parse -- gives `Err(reason)`, and the
//! caller rebuilds in full (and arms a new journal).

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use log::debug;
use parking_lot::Mutex;

use super::bases::BaseIndex;
use super::{KeywordTable, MailboxPaths, MaildirStore, MessageDirs, reuse};
use crate::error::{Error, Result};
use crate::format::le;
use crate::format::maildir::{self as fmt, Uidlist, UidlistRecord};
use crate::index::cachefile::{CacheLookup, CachedValues};
use crate::index::reader::{IndexPaths, IndexView};
use crate::store::journal::{Journal, JournalHub};
use crate::store::{MailboxName, MailboxView, MessageKey};

/// What a Maildir view build leaves for the next one.
#[derive(Debug)]
pub(in crate::store) struct Trail {
    /// UIDs in the uidlist without a file, as logged.
    pub missing: Vec<u32>,
    /// Taken by the next build (only the newest view continues).
    continuation: Mutex<Option<Continuation>>,
}

impl Trail {
    pub(super) fn new(missing: Vec<u32>, continuation: Option<Continuation>) -> Trail {
        Trail {
            missing,
            continuation: Mutex::new(continuation),
        }
    }

    pub(super) fn take_continuation(&self) -> Option<Continuation> {
        self.continuation.lock().take()
    }
}

/// Where the uidlist was left: its file (device, inode), its header line, how far it was
/// parsed, and a hash of the record lines parsed. Dovecot appends to the file, or
/// recreates it (a new file, a new header `N`) with the same record lines first when
/// nothing was expunged: the hash tells that case from a real rewrite.
#[derive(Debug, Clone)]
pub(super) struct UidlistMark {
    dev: u64,
    ino: u64,
    consumed: u64,
    header: Vec<u8>,
    records: RegionHash,
    uid_validity: u32,
    guid: Option<String>,
    last_uid: u32,
    next_uid: u32,
}

impl UidlistMark {
    pub(super) fn of(file: &File, data: &[u8], list: &Uidlist) -> Option<UidlistMark> {
        let meta = file.metadata().ok()?;
        let header_end = data.iter().position(|&b| b == b'\n')?;
        let mut records = RegionHash::default();
        records.update(data.get(header_end + 1..list.complete_len)?);
        Some(UidlistMark {
            dev: meta.dev(),
            ino: meta.ino(),
            consumed: list.complete_len as u64,
            header: data[..=header_end].to_vec(),
            records,
            uid_validity: list.uid_validity,
            guid: list.mailbox_guid.clone(),
            last_uid: list.records.last().map_or(0, |r| r.uid),
            next_uid: list.next_uid,
        })
    }
}

/// A running 64-bit hash of a byte stream, fed in pieces (word at a time, FxHash-style
/// mixing): equal streams give equal hashes whatever the pieces; a difference is missed
/// only by a 64-bit accident.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RegionHash {
    state: u64,
    carry: [u8; 8],
    carried: usize,
    len: u64,
}

impl RegionHash {
    fn mix(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.carried > 0 {
            let take = (8 - self.carried).min(bytes.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&bytes[..take]);
            self.carried += take;
            bytes = &bytes[take..];
            if self.carried < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.carry);
            self.mix(w);
            self.carried = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(le::u64_at(w, 0).unwrap_or_default());
        }
        let rest = words.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    /// The hash so far (the pending partial word and the length included).
    fn value(&self) -> (u64, u64) {
        let mut tail = [0u8; 8];
        tail[..self.carried].copy_from_slice(&self.carry[..self.carried]);
        let mut h = self.clone();
        h.mix(u64::from_le_bytes(tail));
        (h.state, self.len)
    }
}

/// The keywords file's identity and change time (`None`: absent).
pub(super) fn keywords_mark(path: &Path) -> Option<(u64, u64, i64, i64, u64)> {
    let m = crate::sys::lstat(path).ok()?;
    Some((m.dev, m.ino, m.mtime, m.mtime_nsec, m.size))
}

/// The uidlist's bytes and open file, `None` if there is none.
pub(super) fn read_uidlist(path: &Path) -> Result<Option<(Vec<u8>, File)>> {
    let file = match crate::sys::open_file(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let reader = file.try_clone().map_err(|e| Error::io(path, e))?;
    let data = crate::sys::read_whole_of(reader).map_err(|e| Error::io(path, e))?;
    Ok(Some((data, file)))
}

/// FNV-1a of a base name: the key of [`Continuation::by_base`] (a hit is verified
/// against the message's own file name, so a collision cannot mislead).
fn base_key(base: &[u8]) -> u64 {
    let mut h = crate::format::Fnv::default();
    h.write(base);
    h.finish()
}

/// Everything the next build needs to continue (see the module comment).
#[derive(Debug)]
pub(super) struct Continuation {
    journal: Journal,
    uidlist: UidlistMark,
    keywords: Option<(u64, u64, i64, i64, u64)>,
    table: Arc<KeywordTable>,
    index: Option<Arc<IndexView>>,
    /// Base name key -> UID, for every uidlist record.
    by_base: BaseIndex,
    /// Files without a UID: base -> locator (`cur/<name>` or `new/<name>`).
    pending: BTreeMap<Box<[u8]>, Box<[u8]>>,
}

impl Continuation {
    /// `None` when two uidlist bases share a key (the continuation could not tell them
    /// apart: such a mailbox is always rebuilt in full).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        journal: Journal,
        uidlist: UidlistMark,
        keywords: Option<(u64, u64, i64, i64, u64)>,
        table: Arc<KeywordTable>,
        index: Option<Arc<IndexView>>,
        list: &Uidlist,
        pending: Vec<PendingFile>,
    ) -> Option<Continuation> {
        let by_base = BaseIndex::new(
            list.records
                .iter()
                .map(|r| (base_key(&r.base), r.uid))
                .collect(),
        )?;
        Some(Continuation {
            journal,
            uidlist,
            keywords,
            table,
            index,
            by_base,
            pending: pending.into_iter().collect(),
        })
    }
}

/// A file without a UID yet: (base name, locator).
pub(super) type PendingFile = (Box<[u8]>, Box<[u8]>);

/// Why a continuation was not possible (logged at debug level).
type Fallback = &'static str;

impl MaildirStore {
    /// A journal on `cur/` and `new/`, if journals are enabled and both exist.
    pub(super) fn arm_journal(&self, cur: &Path, new: &Path) -> Option<Journal> {
        if !self.ctx.config.journals {
            return None;
        }
        let hub = self
            .journals
            .get_or_init(|| JournalHub::new().ok().map(Arc::new))
            .as_ref()?;
        hub.arm(&[cur, new]).ok()
    }

    /// The view after `previous` (built with `trail`), from the changes `c` recorded;
    /// `Ok(Err(reason))` when only a full build can give the right answer.
    pub(super) fn continue_view(
        &self,
        name: &MailboxName,
        paths: &MailboxPaths,
        previous: &MailboxView,
        trail: &Trail,
        mut c: Continuation,
    ) -> Result<std::result::Result<(MailboxView, Trail), Fallback>> {
        let Some(events) = c.journal.take() else {
            return Ok(Err("the name journal lost track"));
        };
        if keywords_mark(&paths.control.join("dovecot-keywords")) != c.keywords {
            return Ok(Err("dovecot-keywords changed"));
        }
        // The uidlist: same file, same header, grown (or not) past what was parsed.
        let uidlist_path = paths.control.join("dovecot-uidlist");
        let file = match crate::sys::open_file(&uidlist_path) {
            Ok(f) => f,
            Err(_) => return Ok(Err("dovecot-uidlist cannot be opened")),
        };
        let meta = file.metadata().map_err(|e| Error::io(&uidlist_path, e))?;
        let mut uidlist = c.uidlist.clone();
        let tail = if (meta.dev(), meta.ino()) == (uidlist.dev, uidlist.ino)
            && meta.len() >= uidlist.consumed
        {
            // Appended to (or unchanged): the same header, then new lines.
            let mut head = vec![0u8; uidlist.header.len()];
            if file.read_exact_at(&mut head, 0).is_err() || head != uidlist.header {
                return Ok(Err("dovecot-uidlist header changed in place"));
            }
            let mut tail = vec![0u8; (meta.len() - uidlist.consumed) as usize];
            if file.read_exact_at(&mut tail, uidlist.consumed).is_err() {
                return Ok(Err("dovecot-uidlist shrank while read"));
            }
            tail
        } else {
            // Recreated: continue only if it starts with the same record lines.
            let mut data = Vec::new();
            (&file)
                .read_to_end(&mut data)
                .map_err(|e| Error::io(&uidlist_path, e))?;
            let Some(header_end) = data.iter().position(|&b| b == b'\n') else {
                return Ok(Err("recreated dovecot-uidlist has no header"));
            };
            let header = &data[..=header_end];
            match fmt::parse_uidlist(header) {
                Ok(h)
                    if h.uid_validity == uidlist.uid_validity && h.mailbox_guid == uidlist.guid =>
                {
                    uidlist.next_uid = uidlist.next_uid.max(h.next_uid);
                }
                _ => return Ok(Err("recreated dovecot-uidlist has another header")),
            }
            let old_len = uidlist.records.len as usize;
            let Some(region) = data.get(header_end + 1..header_end + 1 + old_len) else {
                return Ok(Err("recreated dovecot-uidlist is shorter"));
            };
            let mut h = RegionHash::default();
            h.update(region);
            if h.value() != uidlist.records.value() {
                return Ok(Err("recreated dovecot-uidlist has other record lines"));
            }
            uidlist.dev = meta.dev();
            uidlist.ino = meta.ino();
            uidlist.header = header.to_vec();
            uidlist.consumed = (header_end + 1 + old_len) as u64;
            data[header_end + 1 + old_len..].to_vec()
        };
        let appended = if tail.contains(&b'\n') {
            let mut text = uidlist.header.clone();
            text.extend_from_slice(&tail);
            match fmt::parse_uidlist(&text) {
                Ok(list) => Some(list),
                Err(_) => return Ok(Err("appended uidlist lines do not parse")),
            }
        } else {
            None
        };
        // The index, for cached dates: the same one, refreshed, or none as before.
        let index = match &paths.index {
            Some(dir) => self.indexes.view(&IndexPaths::mailbox(dir)).ok().flatten(),
            None => None,
        };
        match (&c.index, &index) {
            (None, None) => {}
            (Some(old), Some(new))
                if old.indexid == new.indexid && old.state.keywords == new.state.keywords => {}
            _ => return Ok(Err("the index appeared, went, or was replaced")),
        }
        // Opened at the first message that needs it (most builds touch none).
        let cache: std::cell::OnceCell<Option<CacheLookup>> = std::cell::OnceCell::new();
        let cached = |uid: u32| {
            let view = index.as_ref()?;
            let lookup = cache.get_or_init(|| {
                let dir = paths.index.as_ref()?;
                CacheLookup::open(&dir.join("dovecot.index.cache"), view).unwrap_or_default()
            });
            lookup.as_ref()?.message(view, uid)
        };

        let mut messages = previous.messages.clone();
        // UID -> its current file, for the messages a name event touched.
        let mut touched: BTreeMap<u32, Box<[u8]>> = BTreeMap::new();
        let mut removed: Vec<u32> = Vec::new();
        let current = |messages: &crate::store::Messages,
                       touched: &BTreeMap<u32, Box<[u8]>>,
                       uid: u32|
         -> Option<Box<[u8]>> {
            touched.get(&uid).cloned().or_else(|| {
                messages
                    .get(uid)
                    .and_then(|m| m.locator.maildir().map(Box::from))
            })
        };
        for ev in events {
            if ev.name.starts_with(b".") {
                continue;
            }
            let (base, _) = fmt::split_name(&ev.name);
            if base.is_empty() {
                continue;
            }
            let mut locator: Vec<u8> = if ev.dir == 0 { b"cur/" } else { b"new/" }.to_vec();
            locator.extend_from_slice(&ev.name);
            let uid = c.by_base.get(base_key(base));
            if ev.present {
                match uid {
                    Some(uid) => {
                        touched.insert(uid, locator.into_boxed_slice());
                        removed.retain(|u| *u != uid);
                    }
                    None => {
                        c.pending.insert(base.into(), locator.into_boxed_slice());
                    }
                }
            } else if c.pending.get(base).is_some_and(|l| **l == *locator) {
                c.pending.remove(base);
            } else if let Some(uid) = uid
                && current(&messages, &touched, uid).is_some_and(|l| *l == *locator)
            {
                touched.remove(&uid);
                removed.push(uid);
            }
        }
        // Uidlist lines appended since: new UIDs, for files waiting for one.
        let mut new_records: BTreeMap<u32, UidlistRecord> = BTreeMap::new();
        if let Some(list) = appended {
            for rec in list.records {
                if rec.uid <= uidlist.last_uid {
                    return Ok(Err("an appended uidlist line reuses an older UID"));
                }
                if !c.by_base.insert(base_key(&rec.base), rec.uid) {
                    return Ok(Err("an appended uidlist line repeats a known base"));
                }
                match c.pending.remove(rec.base.as_slice()) {
                    Some(locator) => {
                        touched.insert(rec.uid, locator);
                    }
                    // Dovecot writes a file before its uidlist line, so the journal has
                    // seen it: a line for a file never seen means a writer inotify does
                    // not see.
                    None => return Ok(Err("a new uidlist line for a file never seen")),
                }
                uidlist.last_uid = rec.uid;
                new_records.insert(rec.uid, rec);
            }
            let parsed = &tail[..list.complete_len - uidlist.header.len()];
            uidlist.records.update(parsed);
            uidlist.consumed += parsed.len() as u64;
            uidlist.next_uid = uidlist.next_uid.max(list.next_uid);
        }
        for uid in &removed {
            messages.remove(*uid);
        }
        // Opened only when a file must be looked at.
        let dirs = if touched.is_empty() && c.pending.is_empty() {
            None
        } else {
            Some(MessageDirs::open(
                &paths.mail.join("cur"),
                &paths.mail.join("new"),
            )?)
        };
        for (uid, locator) in touched {
            let old = messages.get(uid);
            let rec = new_records.get(&uid);
            if old.is_none() && rec.is_none() {
                return Ok(Err("a file appeared whose uidlist line was read before"));
            }
            let key = MessageKey::Uid(uid);
            let Some(dirs) = &dirs else { break };
            match self.message_meta(paths, dirs, key, locator.into_vec(), rec, cached(uid)) {
                Ok(mut m) => {
                    m.keywords = c.table.remap(&m.keywords);
                    // A rename keeps what the uidlist said of the message.
                    if let Some(old) = old {
                        m.guid = old.guid;
                        m.virtual_size = old.virtual_size;
                    }
                    messages.upsert(m);
                }
                // Renamed again or expunged since the event: the next build sees it.
                Err(e) if e.is_not_found() => {
                    messages.remove(uid);
                }
                Err(e) => return Err(e),
            }
        }
        // Index records that changed: their cached dates may have.
        if let (Some(old), Some(new)) = (&c.index, &index) {
            match new.state.records.delta(&old.state.records) {
                Some(d) => {
                    for uid in d.changed.iter().chain(&d.added) {
                        if let Some(m) = messages.get(*uid).filter(|m| m.problem.is_none()) {
                            let mut m = reuse(&m, cached(*uid));
                            m.keywords = c.table.remap(&m.keywords);
                            messages.upsert(m);
                        }
                    }
                }
                None => return Ok(Err("the index record layout changed")),
            }
        }
        // Files without a UID yet: few, so each is looked at again.
        let mut pending = Vec::with_capacity(c.pending.len());
        for (base, locator) in &c.pending {
            let key = MessageKey::Pending(Arc::from(&base[..]));
            let Some(dirs) = &dirs else { break };
            match self.message_meta(paths, dirs, key, locator.to_vec(), None, None) {
                Ok(mut m) => {
                    m.keywords = c.table.remap(&m.keywords);
                    pending.push(m);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        messages.seal();
        let dir_meta = crate::store::files::dir_stat(&paths.mail)?;
        let mtime = super::mailbox_mtime(&paths.mail, &dir_meta);
        let view = MailboxView {
            id: crate::store::ViewId::new(),
            name: name.clone(),
            uid_validity: previous.uid_validity,
            uid_next: uidlist.next_uid.max(uidlist.last_uid.saturating_add(1)),
            guid: previous.guid.clone(),
            messages,
            pending,
            keyword_names: previous.keyword_names.clone(),
            owner: crate::store::files::owner_of(&dir_meta),
            mtime,
        };
        c.uidlist = uidlist;
        c.index = index;
        debug!(
            "{}: continued from the journal ({} messages)",
            paths.mail.display(),
            view.messages.len()
        );
        Ok(Ok((view, Trail::new(trail.missing.clone(), Some(c)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_hash_ignores_how_the_stream_is_cut_and_sees_any_change() {
        let data: Vec<u8> = (0..1000u32)
            .flat_map(|i| format!("{i} :base{i}\n").into_bytes())
            .collect();
        let mut whole = RegionHash::default();
        whole.update(&data);
        for cut in [0, 1, 7, 8, 9, 500, data.len() - 1] {
            let mut h = RegionHash::default();
            h.update(&data[..cut]);
            h.update(&data[cut..]);
            assert_eq!(h.value(), whole.value(), "cut at {cut}");
        }
        for at in [0, 3, 511, data.len() - 1] {
            let mut changed = data.clone();
            changed[at] ^= 1;
            let mut h = RegionHash::default();
            h.update(&changed);
            assert_ne!(h.value(), whole.value(), "byte {at} changed");
        }
        let mut shorter = RegionHash::default();
        shorter.update(&data[..data.len() - 1]);
        assert_ne!(shorter.value(), whole.value());
    }
}
