//! The mbox backend, read-only: one file per mailbox, Dovecot's index beside it in
//! `.imap/` directories.
//!
//! Layout (Dovecot 2.3.19.1, `mbox-storage.c` `mbox_list_get_path()` and the fs list):
//! mailbox `A/B` is the file `ROOT/A/B` (`A` a directory: a hierarchy level), its index in
//! `ROOT/A/.imap/B/` (with `INDEX=`, `INDEX/A/.imap/B/`); INBOX is the `INBOX=` file
//! (default `ROOT/inbox`), its index in `ROOT/.imap/INBOX/`. Names starting with `.` and
//! `*.lock` files are no mailboxes. A root that is a file is refused (its directory may hold
//! other users' files): the file is given as `INBOX=`.
//!
//! Which UIDs and flags (the rule of `mbox-sync.c`, implemented here):
//! - The index is *current* when its `mbox` extension header records the file's size and
//!   mtime (`mbox_sync_has_changed()`): Dovecot then reads nothing from the file but the
//!   message at the offset the index records (`mbox` extension record, the From_ line's
//!   offset). So do we: UIDs, flags and keywords from the index records, each message at
//!   its recorded offset. A record whose offset holds no message is listed with a problem
//!   (EIO on read).
//! - Otherwise the file changed after Dovecot's last sync (an MDA appended, someone edited
//!   it). Dovecot's next sync would take each message's UID from a valid `X-UID` header
//!   (`parse_x_uid()`: growing, at most the next UID) and its flags from `Status` /
//!   `X-Status` / `X-Keywords`, except for records flagged dirty in the index
//!   (`MAIL_INDEX_MAIL_FLAG_DIRTY`: changes not yet written to the file), whose index flags
//!   win (`mbox_sync_update_index()`). We present that; a message without a valid `X-UID`
//!   is pending (Dovecot gives it a UID at its next sync, mailfs never does).
//!
//! Bytes: as `doveadm fetch text` (see `format::mbox`): the From_ line and the hidden
//! headers left out, a message is pieces of the file (no copying of its body). The header
//! layout is parsed once per build; an open parses the header block again (a few KiB) and
//! refuses (EIO) a message whose presented size no longer matches the view's: the file was
//! rewritten since.
//!
//! Nothing here writes, locks or creates anything.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::{Built, FoundDir, MailboxList, present_root};
use super::cached::{Backend, Cached};
use super::stamp::Stamp;
use super::{
    FileOwner, Guid, KeywordSet, Locator, MailboxName, MailboxView, MessageKey, MessageMeta,
    MessageSource, Messages, Piece, StoreContext, files,
};
use crate::error::{Error, Result};
use crate::format::mbox::{self as fmt, HeaderBlock};
use crate::format::{MailFlags, hex, le};
use crate::index::cachefile::CacheSnapshot;
use crate::index::pool::IndexPool;
use crate::index::reader::IndexPaths;
use crate::location::Location;

/// Largest header block read (Dovecot has no limit; a larger one is reported, not read).
const HEADER_MAX: usize = 4 << 20;

/// `MAIL_INDEX_MAIL_FLAG_DIRTY` (`mail-index.h`): the record's flags are not yet in the file.
const FLAG_DIRTY: u8 = 0x80;

/// Where one mailbox's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MboxPaths {
    /// The mbox file.
    file: PathBuf,
    /// The directory of its `dovecot.index*`.
    index: Option<PathBuf>,
}

/// An mbox store.
#[derive(Debug)]
pub struct MboxStore {
    loc: Location,
    ctx: Arc<StoreContext>,
    indexes: IndexPool,
}

/// One message found in an mbox file.
#[derive(Debug, Clone)]
struct Found {
    /// Offset of its From_ line, or of the line end before it (Dovecot's offset).
    from: u64,
    /// Offset of its header (after the From_ line).
    header: u64,
    /// End of the message (before the separator's line end).
    end: u64,
    /// Presented size and virtual size.
    size: u64,
    vsize: u64,
    /// Received date from the From_ line (0 if unparsable).
    received: i64,
    /// What the headers say.
    uid: Option<u32>,
    flags: MailFlags,
    keywords: Vec<String>,
    guid: String,
    imapbase: Option<(u32, u32, Vec<String>)>,
    /// c-client's pseudo message (never shown).
    pseudo: bool,
}

impl MboxStore {
    /// Opens the store (list and views cached, at most `views` views).
    pub(super) fn open(
        loc: Location,
        ctx: Arc<StoreContext>,
        views: usize,
    ) -> Result<Cached<Self>> {
        if loc.root.is_file() {
            return Err(Error::layout(
                &loc.root,
                "the mbox root is a file; give a directory, with the file as INBOX=",
            ));
        }
        files::check_store_root(&loc.root)?;
        let store = MboxStore {
            loc,
            ctx,
            indexes: IndexPool::new(views.max(1) + 1),
        };
        Cached::open(store, views)
    }

    /// The index directory of mailbox `levels` (`.imap` before the last level).
    fn index_dir(&self, levels: &[&[u8]]) -> PathBuf {
        let mut dir = self
            .loc
            .index
            .clone()
            .unwrap_or_else(|| self.loc.root.clone());
        for l in &levels[..levels.len().saturating_sub(1)] {
            dir.push(std::ffi::OsStr::from_bytes(l));
        }
        dir.push(".imap");
        if let Some(last) = levels.last() {
            dir.push(std::ffi::OsStr::from_bytes(last));
        }
        dir
    }

    fn inbox_file(&self) -> PathBuf {
        self.loc
            .inbox
            .clone()
            .unwrap_or_else(|| self.loc.root.join("inbox"))
    }

    fn walk(
        &self,
        dir: &Path,
        levels: &mut Vec<Vec<u8>>,
        found: &mut BTreeMap<MailboxName, FoundDir<MboxPaths>>,
        stamp: &mut Stamp,
        owner: FileOwner,
    ) -> Result<()> {
        if files::too_deep(dir, levels.len()) {
            return Ok(());
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let b = name.as_bytes();
            if b.starts_with(b".") || b.ends_with(b".lock") {
                continue;
            }
            if levels.is_empty() && b.eq_ignore_ascii_case(b"inbox") {
                continue; // INBOX, found on its own
            }
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            levels.push(b.to_vec());
            let name = MailboxName(
                levels
                    .iter()
                    .map(|l| files::decode_level(l, self.loc.utf8_names, dir))
                    .collect(),
            );
            let mtime = files::lstat(&path).map(|s| s.mtime).unwrap_or(0);
            if ft.is_file() {
                let raw: Vec<&[u8]> = levels.iter().map(Vec::as_slice).collect();
                found.insert(
                    name,
                    FoundDir {
                        paths: Some(MboxPaths {
                            file: path.clone(),
                            index: Some(self.index_dir(&raw)),
                        }),
                        presented: (owner, mtime),
                    },
                );
            } else if ft.is_dir() {
                found.entry(name).or_insert(FoundDir {
                    paths: None,
                    presented: (owner, mtime),
                });
                stamp.push(path.clone());
                let r = self.walk(&path, levels, found, stamp, owner);
                if let Err(e) = r {
                    levels.pop();
                    return Err(e);
                }
            }
            levels.pop();
        }
        Ok(())
    }

    /// Reads the messages of `file` (`len` bytes) from `start` (0, or the line end before
    /// a From_ line: a previous build's end), as `istream-raw-mbox.c` splits them.
    fn read_messages(&self, path: &Path, file: &File, len: u64, start: u64) -> Result<Vec<Found>> {
        let skip = match start {
            0 => 0,
            s if byte_at(file, s) == Some(b'\r') => 2,
            _ => 1,
        };
        let mut at = start + skip;
        let mut r = BufReader::with_capacity(1 << 16, file);
        std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(at))
            .map_err(|e| Error::io(path, e))?;
        let mut out: Vec<Found> = Vec::new();
        let mut line = Vec::new();
        let read_line = |r: &mut BufReader<&File>, line: &mut Vec<u8>| -> Result<usize> {
            line.clear();
            r.read_until(b'\n', line).map_err(|e| Error::io(path, e))
        };
        let n = read_line(&mut r, &mut line)?;
        if n == 0 {
            return Ok(out);
        }
        if !fmt::is_from_line(&line) {
            return Err(Error::layout(
                path,
                match start {
                    0 => "not an mbox file: it does not begin with a \"From \" line".to_string(),
                    s => format!("no From_ line after byte {s}, where the last read ended"),
                },
            ));
        }
        let mut from_line = std::mem::take(&mut line);
        let mut from_at = start;
        at += n as u64;
        let mut is_first = start == 0;
        loop {
            let header = at;
            let received = fmt::parse_from_line(&from_line[5..]).map_or(0, from_date_seconds);
            // The header block: lines up to the empty line (or a From_ line, or the end).
            let mut block = Vec::new();
            let mut next_from: Option<(u64, Vec<u8>)> = None;
            let mut eoh = false;
            loop {
                let n = read_line(&mut r, &mut line)?;
                if n == 0 {
                    break;
                }
                if fmt::is_from_line(&line) && block.last() == Some(&b'\n') {
                    next_from = Some((at, std::mem::take(&mut line)));
                    at += n as u64;
                    break;
                }
                at += n as u64;
                block.extend_from_slice(&line);
                if block.len() > HEADER_MAX {
                    return Err(Error::layout(
                        path,
                        format!("message at byte {from_at}: header larger than {HEADER_MAX} bytes"),
                    ));
                }
                if line == b"\n" || line == b"\r\n" {
                    eoh = true;
                    break;
                }
            }
            let h = fmt::parse_header(&block, is_first);
            let body = header + h.len as u64;
            // The body: up to the next From_ line (after Content-Length's end when valid).
            let cl_end = match (eoh, h.content_length) {
                (true, Some(cl)) if next_from.is_none() => {
                    let end = body.saturating_add(cl);
                    valid_end(file, end, len).then_some(end)
                }
                _ => None,
            };
            let mut bare_lf = 0u64;
            let mut last_bare = false;
            if next_from.is_none() && eoh {
                loop {
                    let n = read_line(&mut r, &mut line)?;
                    if n == 0 {
                        break;
                    }
                    let past_cl = cl_end.is_none_or(|e| at > e);
                    if past_cl && fmt::is_from_line(&line) {
                        next_from = Some((at, std::mem::take(&mut line)));
                        at += n as u64;
                        break;
                    }
                    at += n as u64;
                    let crlf = line.ends_with(b"\r\n");
                    let lf = line.ends_with(b"\n");
                    last_bare = lf && !crlf;
                    bare_lf += u64::from(last_bare);
                }
            }
            // Where the message ends: before the line end preceding the next From_ line,
            // or before the file's final line end.
            let end = match &next_from {
                Some((from, _)) => {
                    let mut e = *from;
                    let cr = e >= 2 && byte_at(file, e - 2) == Some(b'\r');
                    e = e.saturating_sub(if cr { 2 } else { 1 });
                    e
                }
                None => {
                    let mut e = len;
                    if e > header && byte_at(file, e - 1) == Some(b'\n') {
                        e -= 1;
                        if e > header && byte_at(file, e - 1) == Some(b'\r') {
                            e -= 1;
                        }
                    }
                    e
                }
            };
            let end = end.max(header);
            // The cut line end was counted as a body line end.
            if end >= body && at > body && last_bare {
                bare_lf = bare_lf.saturating_sub(1);
            }
            let (h, body) = if body > end {
                // The separator's line end was the header's last: parse what is left.
                let cut = &block[..usize::try_from(end - header).unwrap_or(0).min(block.len())];
                let h = fmt::parse_header(cut, is_first);
                let body = header + h.len as u64;
                (h, body)
            } else {
                (h, body)
            };
            let body_len = end.saturating_sub(body);
            let size = h.presented_len + body_len;
            let vsize = size + h.presented_lines + if body_len > 0 { bare_lf } else { 0 };
            // Dovecot records a message's offset as that of the line end before its
            // From_ line (`from_offset` in istream-raw-mbox.c): the previous one's end.
            let from = out.last().map_or(from_at, |p| p.end);
            out.push(Found {
                from,
                header,
                end,
                size,
                vsize,
                received,
                uid: h.uid,
                flags: h.flags,
                keywords: h.keywords.clone(),
                guid: hex(&crate::location::md5::digest(&h.md5_input)),
                imapbase: h.imapbase.clone(),
                pseudo: h.pseudo,
            });
            is_first = false;
            match next_from {
                Some((f, l)) => {
                    from_at = f;
                    from_line = l;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Builds the view; with `previous` (the last build of the mailbox, same file, and
    /// the file grew), reads only what was appended after its last message. A continued
    /// build is kept only if the index is current and agrees with every message (else
    /// the file was rewritten, not appended to: read in full).
    fn build_view(
        &self,
        name: &MailboxName,
        paths: &MboxPaths,
        previous: Option<&Built<Continue>>,
    ) -> Result<Built<Continue>> {
        if let Some(p) = previous
            && let Some(built) = self.build_once(name, paths, Some(&p.extra))?
        {
            StoreContext::count(&self.ctx.stats.view_continuations);
            return Ok(built);
        }
        self.build_once(name, paths, None)?
            .ok_or_else(|| Error::layout(&paths.file, "a full read cannot be refused"))
    }

    /// One build, continued from `from` when given: `None` if that continuation does not
    /// hold (see [`MboxStore::build_view`]).
    fn build_once(
        &self,
        name: &MailboxName,
        paths: &MboxPaths,
        from: Option<&Continue>,
    ) -> Result<Option<Built<Continue>>> {
        let mut stamped = vec![paths.file.clone()];
        if let Some(dir) = &paths.index {
            for f in ["dovecot.index", "dovecot.index.log", "dovecot.index.cache"] {
                stamped.push(dir.join(f));
            }
        }
        let stamp = Stamp::take(&self.ctx, stamped);
        let (file, meta) = files::open_message_file(&paths.file)?;
        let len = meta.len();
        let st = crate::sys::Stat::of(&meta);
        let found: Arc<Vec<Found>> = match from {
            Some(c) => {
                let Some(last) = c.found.last() else {
                    return Ok(None);
                };
                if (c.dev, c.ino) != (st.dev, st.ino)
                    || len <= c.len
                    || !valid_end(&file, last.end, len)
                {
                    return Ok(None);
                }
                let more = match self.read_messages(&paths.file, &file, len, last.end) {
                    Ok(m) => m,
                    Err(_) => return Ok(None),
                };
                let mut all = Vec::with_capacity(c.found.len() + more.len());
                all.extend(c.found.iter().cloned());
                all.extend(more);
                Arc::new(all)
            }
            None => Arc::new(self.read_messages(&paths.file, &file, len, 0)?),
        };
        let index = match &paths.index {
            Some(dir) => self.indexes.view(&IndexPaths::mailbox(dir))?,
            None => None,
        };
        let cache = match (&paths.index, &index) {
            (Some(dir), Some(ix)) => {
                CacheSnapshot::read(&dir.join("dovecot.index.cache"), ix).unwrap_or_default()
            }
            _ => None,
        };
        let owner = files::owner_of(&st);
        let mtime = st.mtime;
        let current = index.as_ref().is_some_and(|ix| {
            ix.state.ext("mbox").is_some_and(|(_, e)| {
                le::u64_at(&e.hdr, 0) == Some(len) && le::u32_at(&e.hdr, 8) == Some(mtime as u32)
            })
        });
        let mut keyword_names: Vec<String> = index
            .as_ref()
            .map(|ix| ix.state.keywords.clone())
            .unwrap_or_default();
        let imapbase = found.first().and_then(|f| f.imapbase.clone());
        let mut uid_validity = 0;
        let mut uid_next = 0;
        if let Some(ix) = &index {
            let h = ix.state.header();
            uid_validity = h.uid_validity;
            uid_next = h.next_uid;
        }
        if let Some((v, last, kws)) = &imapbase {
            if uid_validity == 0 {
                uid_validity = *v;
            }
            uid_next = uid_next.max(last.saturating_add(1));
            for k in kws {
                if !keyword_names.contains(k) {
                    keyword_names.push(k.clone());
                }
            }
        }
        let mailbox_guid = index.as_ref().and_then(|ix| {
            ix.state
                .ext("mbox")
                .and_then(|(_, e)| e.hdr.get(16..32))
                .filter(|g| g.iter().any(|b| *b != 0))
                .map(hex)
        });
        let cached = |uid: u32| {
            match (&cache, &index) {
                (Some(c), Some(ix)) => c.message(ix, uid),
                _ => None,
            }
            .unwrap_or_default()
        };
        let make =
            |key: MessageKey, f: &Found, flags: MailFlags, kw: KeywordSet, rec: Option<&[u8]>| {
                let uid = match key {
                    MessageKey::Uid(u) => u,
                    MessageKey::Pending(_) => 0,
                };
                let c = if uid > 0 {
                    cached(uid)
                } else {
                    Default::default()
                };
                let ext_guid = match (rec, &index) {
                    (Some(rec), Some(ix)) => ix
                        .state
                        .ext("header-md5")
                        .and_then(|(_, e)| e.slice(rec))
                        .filter(|g| g.iter().any(|b| *b != 0))
                        .map(hex),
                    _ => None,
                };
                let received = c.date_received.map_or(f.received, i64::from);
                MessageMeta {
                    key,
                    size: f.size,
                    virtual_size: c.size_virtual.unwrap_or(f.vsize),
                    received,
                    // Dovecot knows no save date for mbox until it caches one
                    // (`mbox_mail_get_save_date()`); before that, the received date.
                    saved: c.date_save.map_or(received, i64::from),
                    flags,
                    keywords: kw,
                    guid: Guid::new(ext_guid.as_deref().unwrap_or(&f.guid)),
                    owner,
                    locator: Locator::Mbox {
                        header: f.header,
                        end: f.end,
                    },
                    problem: None,
                }
            };
        let mut messages = Vec::new();
        let mut pending = Vec::new();
        if let (true, Some(ix)) = (current, &index) {
            let by_offset: HashMap<u64, &Found> = found.iter().map(|f| (f.from, f)).collect();
            let mbox_ext = ix.state.ext("mbox").map(|(_, e)| e.clone());
            let offsets: Vec<Option<u64>> = ix
                .state
                .records
                .iter()
                .map(|rec| {
                    mbox_ext
                        .as_ref()
                        .and_then(|e| e.slice(&rec))
                        .and_then(|b| le::u64_at(b, 0))
                })
                .collect();
            let file_end = found.last().map(|f| f.end);
            for (i, rec) in ix.state.records.iter().enumerate() {
                let uid = crate::index::records::record_uid(rec);
                let flags = MailFlags(rec.get(4).copied().unwrap_or(0) & 0x1f);
                let kw = KeywordSet::from_positions(ix.state.record_keyword_indexes(&rec));
                let offset = offsets[i];
                // Dovecot reads a message up to the next one's indexed offset
                // (`mbox_mail_get_next_offset()`): a message of the file that ends
                // elsewhere means the index and the file disagree.
                let expected_end = match offsets.get(i + 1) {
                    Some(next) => *next,
                    None => file_end,
                };
                let at = offset
                    .and_then(|o| by_offset.get(&o))
                    .filter(|f| Some(f.end) == expected_end);
                match at {
                    Some(f) => messages.push(make(MessageKey::Uid(uid), f, flags, kw, Some(&rec))),
                    None => messages.push(MessageMeta {
                        key: MessageKey::Uid(uid),
                        size: 0,
                        virtual_size: 0,
                        received: 0,
                        saved: 0,
                        flags,
                        keywords: KeywordSet::default(),
                        guid: "".into(),
                        owner,
                        locator: Locator::Mbox { header: 0, end: 0 },
                        problem: Some(
                            format!(
                                "{}: the index puts uid {uid} at byte {}, where the file has \
                                 no message ending where the index puts the next one (the \
                                 index disagrees with the file)",
                                paths.file.display(),
                                offset.map_or_else(|| "?".to_string(), |o| o.to_string())
                            )
                            .into(),
                        ),
                    }),
                }
            }
        } else {
            // The file changed since Dovecot's last sync: the headers, as its next sync
            // reads them (see the module comment).
            let mut prev = 0u32;
            let mut next = uid_next.max(1);
            for (i, f) in found.iter().enumerate().filter(|(_, f)| !f.pseudo) {
                // `parse_x_uid()`: an X-UID counts if it grows and is at most the next
                // UID; never in the first message without X-IMAPbase.
                let uid = f
                    .uid
                    .filter(|&u| u > prev && u <= next && (i > 0 || f.imapbase.is_some()));
                let positions = |names: &[String]| {
                    KeywordSet::from_positions(
                        names
                            .iter()
                            .filter_map(|n| keyword_names.iter().position(|k| k == n)),
                    )
                };
                match uid {
                    Some(u) => {
                        if u == next {
                            next += 1;
                        }
                        prev = u;
                        let rec = index.as_ref().and_then(|ix| ix.state.records.get(u));
                        let dirty =
                            rec.is_some_and(|r| r.get(4).is_some_and(|b| b & FLAG_DIRTY != 0));
                        let (flags, kw) = match (dirty, rec, &index) {
                            (true, Some(r), Some(ix)) => (
                                MailFlags(r.get(4).copied().unwrap_or(0) & 0x1f),
                                KeywordSet::from_positions(ix.state.record_keyword_indexes(&r)),
                            ),
                            _ => (f.flags, positions(&f.keywords)),
                        };
                        messages.push(make(MessageKey::Uid(u), f, flags, kw, rec.as_deref()));
                    }
                    None => {
                        // Dovecot's sync gives it the next UID: later X-UIDs are judged
                        // against the one after.
                        prev = next;
                        next += 1;
                        let key =
                            MessageKey::Pending(Arc::from(format!("offset-{}", f.from).as_bytes()));
                        pending.push(make(key, f, f.flags, positions(&f.keywords), None));
                    }
                }
            }
            uid_next = uid_next.max(next);
        }
        messages.sort_by_key(|m| match m.key {
            MessageKey::Uid(u) => u,
            MessageKey::Pending(_) => 0,
        });
        messages.dedup_by_key(|m| m.key.clone());
        pending.sort_by(|a, b| a.key.cmp(&b.key));
        let view = MailboxView {
            id: crate::store::ViewId::new(),
            name: name.clone(),
            uid_validity,
            uid_next,
            guid: mailbox_guid,
            messages: Messages::from_sorted(messages),
            pending,
            keyword_names: Arc::new(keyword_names),
            owner,
            mtime,
        };
        if from.is_some()
            && (!current
                || view.messages.iter().any(|m| m.problem.is_some())
                || !view.pending.is_empty())
        {
            return Ok(None);
        }
        Ok(Some(Built {
            view: Arc::new(view),
            stamp,
            extra: Continue {
                dev: st.dev,
                ino: st.ino,
                len,
                found,
            },
        }))
    }
}

/// What a build leaves for the next one: the file it read and the messages found in it.
#[derive(Debug)]
pub(super) struct Continue {
    dev: u64,
    ino: u64,
    len: u64,
    found: Arc<Vec<Found>>,
}

/// Seconds since the epoch of a From_ line's date (local time without a zone, as
/// `mktime()` in `mbox_from_parse()`).
fn from_date_seconds(d: fmt::FromDate) -> i64 {
    let utc = d.utc_seconds();
    match d.zone {
        Some(z) => utc - i64::from(z),
        None => utc - crate::sys::local_utc_offset(utc),
    }
}

fn byte_at(file: &File, at: u64) -> Option<u8> {
    let mut b = [0u8; 1];
    (file.read_at(&mut b, at).ok()? == 1).then_some(b[0])
}

/// True if a body ending at `end` ends where Dovecot accepts it
/// (`istream_raw_mbox_is_valid_from()`): the file's final line end, or a line end and a
/// From_ line.
fn valid_end(file: &File, end: u64, len: u64) -> bool {
    let mut buf = vec![0u8; 512];
    let n = file.read_at(&mut buf, end).unwrap_or(0);
    let data = &buf[..n];
    let rest = len.saturating_sub(end);
    if (rest == 1 && data == b"\n") || (rest == 2 && data == b"\r\n") {
        return true;
    }
    let line = if data.starts_with(b"\nFrom ") {
        &data[1..]
    } else if data.starts_with(b"\r\nFrom ") {
        &data[2..]
    } else {
        return false;
    };
    fmt::is_from_line(line)
}

/// Reads the header block at `header` (up to `end`) again and presents the message as
/// pieces: the kept header lines (CRs dropped) and the body, as a range of the file.
fn message_pieces(
    file: &Arc<File>,
    path: &Path,
    header: u64,
    end: u64,
) -> Result<(Vec<Piece>, u64)> {
    let span = usize::try_from(end.saturating_sub(header)).unwrap_or(usize::MAX);
    let mut block = Vec::new();
    let mut want = span.min(64 << 10);
    let h: HeaderBlock = loop {
        block.resize(want, 0);
        let mut got = 0;
        while got < want {
            let n = file
                .read_at(&mut block[got..], header + got as u64)
                .map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        block.truncate(got);
        let h = fmt::parse_header(&block, false);
        if h.has_eoh || got >= span || got < want {
            break h;
        }
        if want >= HEADER_MAX {
            return Err(Error::layout(path, "message header too large"));
        }
        want = (want * 4).min(span).min(HEADER_MAX);
    };
    let mut pieces = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    let flush = |run: &mut Option<(usize, usize)>, pieces: &mut Vec<Piece>| {
        if let Some((s, e)) = run.take() {
            pieces.push(Piece::File {
                file: file.clone(),
                start: header + s as u64,
                len: (e - s) as u64,
            });
        }
    };
    for k in &h.kept {
        if k.plain_lf {
            match &mut run {
                Some((_, e)) if *e == k.start => *e = k.end + 1,
                _ => {
                    flush(&mut run, &mut pieces);
                    run = Some((k.start, k.end + 1));
                }
            }
        } else {
            match &mut run {
                Some((_, e)) if *e == k.start => *e = k.end,
                _ => {
                    flush(&mut run, &mut pieces);
                    run = Some((k.start, k.end));
                }
            }
            flush(&mut run, &mut pieces);
            if k.newline {
                pieces.push(Piece::Bytes(Arc::from(&b"\n"[..])));
            }
        }
    }
    flush(&mut run, &mut pieces);
    let body = header + h.len as u64;
    let body_len = end.saturating_sub(body);
    pieces.push(Piece::File {
        file: file.clone(),
        start: body,
        len: body_len,
    });
    Ok((pieces, h.presented_len + body_len))
}

impl Backend for MboxStore {
    type Paths = MboxPaths;
    type Extra = Continue;

    fn scan(&self) -> Result<MailboxList<MboxPaths>> {
        let root = &self.loc.root;
        let mut found = BTreeMap::new();
        let mut stamp = Stamp::take(&self.ctx, vec![root.clone()]);
        let root_st = files::dir_stat(root)?;
        let owner = files::owner_of(&root_st);
        let inbox = self.inbox_file();
        stamp.push(inbox.clone());
        if inbox.is_file() {
            let mtime = files::lstat(&inbox).map(|s| s.mtime).unwrap_or(0);
            found.insert(
                MailboxName(vec!["INBOX".into()]),
                FoundDir {
                    paths: Some(MboxPaths {
                        file: inbox,
                        index: Some(self.index_dir(&[b"INBOX"])),
                    }),
                    presented: (owner, mtime),
                },
            );
        }
        self.walk(root, &mut Vec::new(), &mut found, &mut stamp, owner)?;
        let presented = present_root(root, &[root])?;
        Ok(MailboxList::from_found(
            found,
            presented,
            self.loc.no_noselect,
            stamp,
        ))
    }

    fn check(&self, list: &MailboxList<MboxPaths>) -> Result<()> {
        if list.paths.is_empty() {
            return Err(Error::layout(
                &self.loc.root,
                "not an mbox store: no mailbox file (and no INBOX file)",
            ));
        }
        Ok(())
    }

    fn build(
        &self,
        name: &MailboxName,
        paths: &MboxPaths,
        previous: Option<&Built<Continue>>,
    ) -> Result<Built<Continue>> {
        self.build_view(name, paths, previous)
    }

    fn open(
        &self,
        paths: &MboxPaths,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource> {
        let meta = view
            .get(key)
            .ok_or_else(|| Error::not_found(format!("message {key:?}")))?;
        if let Some(problem) = &meta.problem {
            return Err(Error::layout(&paths.file, problem.to_string()));
        }
        let Locator::Mbox { header, end } = meta.locator else {
            return Err(Error::layout(&paths.file, "not an mbox message"));
        };
        let (file, _) = files::open_message_file(&paths.file)?;
        let file = Arc::new(file);
        let (pieces, size) = message_pieces(&file, &paths.file, header, end)?;
        if size != meta.size {
            return Err(Error::layout(
                &paths.file,
                format!(
                    "the message at byte {header} is now {size} bytes, not {} (the file was \
                     rewritten since it was listed)",
                    meta.size
                ),
            ));
        }
        Ok(MessageSource::pieces(pieces))
    }

    fn root(&self) -> &Path {
        &self.loc.root
    }

    fn context(&self) -> &Arc<StoreContext> {
        &self.ctx
    }
}
