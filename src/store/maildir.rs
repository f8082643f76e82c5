//! The Maildir backend (Maildir++ and `LAYOUT=fs`), read-only.
//!
//! Sources of truth, as in Dovecot 2.3.19.1 (`src/lib-storage/index/maildir/`):
//! - the message files in `new/` and `cur/`: existence, flags (file-name info), received
//!   date (`st_mtime`), save date (`st_ctime`), stored bytes;
//! - `dovecot-uidlist` in the control directory: UIDVALIDITY, next UID, mailbox GUID, and
//!   the UID of each base file name (plus optional S/W/G extensions);
//! - `dovecot-keywords`: keyword letters to names.
//!
//! A uidlist line whose file is in neither `new/` nor `cur/` is an expunged message
//! (Dovecot keeps such lines until it rewrites the file): it is not listed, and one log line
//! per view build counts them. A file that is not in the uidlist is *pending*: Dovecot gives
//! it a UID at its next sync. mailfs shows it as `Pending(base)` and never invents a UID.
//!
//! Nothing here writes, locks or creates: no `dovecot-uidlist.lock`, no `tmp/` files.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, info, warn};
use lru::LruCache;

use parking_lot::Mutex;

use super::KeywordSet;
use super::access::{self, Need};
use super::cache::{Built, FoundDir, MailboxList, Presented, present_root};
use super::cached::{Backend, Cached};
use super::decoded::{self, StoredForm};
use super::stamp::Stamp;
use super::{
    FileOwner, Guid, Locator, MailboxName, MailboxView, MessageKey, MessageMeta, MessageSource,
    UidCursor, parallel,
};
use super::{Messages, StoreContext, files, listindex, locks, private_flags};
use crate::error::{Error, Result};
use crate::format::cache::CachedMessage;
use crate::format::maildir::{self as fmt, Keywords};
use crate::index::cachefile::CacheSnapshot;
use crate::index::pool::IndexPool;
use crate::index::reader::{IndexPaths, IndexView};
use crate::location::{Layout, Location};
use crate::sys;

mod bases;
mod trail;

use self::trail::{Continuation, Trail, UidlistMark};

/// Maildir++ folder being deleted (`MAILBOX_LIST_MAILDIR_TRASH_DIR_NAME`).
const MAILDIR_PP_TRASH: &str = ".DOVECOT-TRASHED";

/// Where one mailbox's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MailboxPaths {
    /// Directory holding `cur/`, `new/`, `tmp/`.
    mail: PathBuf,
    /// Directory holding `dovecot-uidlist` and `dovecot-keywords`.
    control: PathBuf,
    /// Directory holding `dovecot.index*` (`None` with `INDEX=MEMORY`).
    index: Option<PathBuf>,
    /// Directory holding the private index (`dovecot.index.pvt*`) with `INDEXPVT=`.
    pvt: Option<PathBuf>,
}

/// A Maildir store.
#[derive(Debug)]
pub struct MaildirStore {
    loc: Location,
    /// Settings and counters.
    ctx: Arc<StoreContext>,
    /// inotify for the name journals of views (`journal`), made at first use.
    journals: std::sync::OnceLock<Option<Arc<super::journal::JournalHub>>>,
    /// Dovecot's per-mailbox indexes, for the values doveadm answers from its cache.
    indexes: IndexPool,
    /// Index directories whose failure was logged (cleared when they work again).
    index_problems: Mutex<std::collections::HashSet<PathBuf>>,
    /// Symbolic links met where mailboxes could be (logged once each).
    links: files::LinkLog,
    /// `cur/` and `new/` of the mailboxes whose messages were opened last, by mail
    /// directory (see [`MaildirStore::message_dirs`]).
    message_dirs: Mutex<LruCache<PathBuf, Arc<MessageDirs>>>,
}

/// Mailboxes whose message directories are kept open for reads (two descriptors each).
const MESSAGE_DIRS_KEPT: NonZeroUsize = NonZeroUsize::new(8).expect("non-zero");

impl MaildirStore {
    /// Opens the store (its list and views cached, at most `cache_capacity` views),
    /// refusing a root that is missing, not a directory, empty, or shows no sign of being
    /// a Maildir.
    pub(super) fn open(
        loc: Location,
        ctx: Arc<StoreContext>,
        cache_capacity: usize,
    ) -> Result<Cached<MaildirStore>> {
        // Keys that move Maildir files where this backend does not look yet: refuse them
        // rather than show the wrong directories.
        let unsupported = [
            ("DIRNAME/FULLDIRNAME", loc.dirname.is_some()),
            (
                "MAILBOXDIR",
                loc.mailboxdir.as_deref().is_some_and(|d| !d.is_empty()),
            ),
            ("ITERINDEX", loc.iter_index),
            ("INDEXCACHE", loc.index_cache.is_some()),
            ("BROKENCHAR", loc.broken_char.is_some()),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(Error::Location {
                location: loc.original.clone(),
                what: format!("{key} is not supported for maildir by mailfs yet"),
            });
        }
        files::check_store_root(&loc.root)?;
        let store = MaildirStore {
            loc,
            ctx,
            journals: std::sync::OnceLock::new(),
            indexes: IndexPool::new(cache_capacity.max(1)),
            index_problems: Mutex::new(std::collections::HashSet::new()),
            links: files::LinkLog::default(),
            message_dirs: Mutex::new(LruCache::new(MESSAGE_DIRS_KEPT)),
        };
        Cached::open(store, cache_capacity)
    }

    fn inbox_mail_dir(&self) -> PathBuf {
        self.loc
            .inbox
            .clone()
            .unwrap_or_else(|| self.loc.root.clone())
    }

    /// Paths of a mailbox whose on-disk storage name (levels as stored, joined with the
    /// layout's separator) is `storage`; `None` storage means INBOX.
    fn paths_for(&self, storage: Option<&[u8]>) -> MailboxPaths {
        let loc = &self.loc;
        // `rel` names the mailbox under the CONTROL= and INDEX= roots; INBOX's mail is
        // INBOX= or the root itself, but elsewhere it is `.INBOX` / `INBOX`.
        let (mail, rel) = match storage {
            None => {
                let rel = match loc.layout {
                    Layout::MaildirPlusPlus => ".INBOX",
                    Layout::Fs | Layout::Index => "INBOX",
                };
                (self.inbox_mail_dir(), PathBuf::from(rel))
            }
            Some(storage) => {
                let rel = match loc.layout {
                    Layout::MaildirPlusPlus => {
                        let mut n = Vec::with_capacity(storage.len() + 1);
                        n.push(b'.');
                        n.extend_from_slice(storage);
                        PathBuf::from(OsStr::from_bytes(&n))
                    }
                    Layout::Fs | Layout::Index => PathBuf::from(OsStr::from_bytes(storage)),
                };
                (loc.root.join(&rel), rel)
            }
        };
        let elsewhere =
            |root: &Option<PathBuf>| root.as_ref().map_or_else(|| mail.clone(), |c| c.join(&rel));
        let control = elsewhere(&loc.control);
        let index = (!loc.index_in_memory).then(|| elsewhere(&loc.index));
        let pvt = loc.index_pvt.as_ref().map(|p| p.join(&rel));
        MailboxPaths {
            mail,
            control,
            index,
            pvt,
        }
    }

    /// `LAYOUT=index`: the paths of the mailbox with `guid`: `<root>/<guid>` below the
    /// mail, `CONTROL=`, `INDEX=` and `INDEXPVT=` roots (`index_list_get_path`).
    fn guid_paths(&self, guid: &str) -> MailboxPaths {
        let loc = &self.loc;
        let mail = loc.guid_dir(&loc.root, guid);
        let elsewhere = |root: &Option<PathBuf>| {
            root.as_ref()
                .map_or_else(|| mail.clone(), |r| loc.guid_dir(r, guid))
        };
        MailboxPaths {
            control: elsewhere(&loc.control),
            index: (!loc.index_in_memory).then(|| elsewhere(&loc.index)),
            pvt: loc.index_pvt.as_ref().map(|p| loc.guid_dir(p, guid)),
            mail,
        }
    }

    /// `LAYOUT=index`: the mailbox tree from the list index ([`listindex::mailbox_list`]).
    fn scan_list_index(&self) -> Result<MailboxList<MailboxPaths>> {
        let shared = self.outside_root_deps();
        listindex::mailbox_list(
            &self.ctx,
            &self.indexes,
            &self.loc,
            false,
            |guid| self.guid_paths(guid),
            |p| &p.mail,
            |p, st| present_mailbox(&p.mail, st, &shared),
        )
    }

    /// `CONTROL=` and `INDEX=` directories outside the root, with their ancestors: every
    /// mailbox is also read from them (see [`access`]).
    fn outside_root_deps(&self) -> Vec<(FileOwner, Need)> {
        let mut shared = Vec::new();
        for dir in [&self.loc.control, &self.loc.index].into_iter().flatten() {
            if !dir.starts_with(&self.loc.root) {
                shared.extend(access::outside_root(dir));
            }
        }
        shared
    }

    /// Decodes one on-disk name level to UTF-8.
    fn decode_level(&self, level: &[u8], dir: &Path) -> String {
        files::decode_level(level, self.loc.utf8_names, dir)
    }

    fn scan_mailboxes(&self) -> Result<MailboxList<MailboxPaths>> {
        let root = &self.loc.root;
        let mut stamp = Stamp::take(&self.ctx, vec![root.clone(), self.inbox_mail_dir()]);
        let mut found: BTreeMap<MailboxName, FoundDir<MailboxPaths>> = BTreeMap::new();
        // Directories outside the root every mailbox is also read from.
        let shared = self.outside_root_deps();
        let inbox = self.paths_for(None);
        if files::exists_nofollow(&inbox.mail.join("cur")) {
            let st = files::dir_stat(&inbox.mail)?;
            let mut chain = shared.clone();
            if !inbox.mail.starts_with(root) {
                chain.extend(access::ancestors(&inbox.mail));
            }
            let presented = present_mailbox(&inbox.mail, &st, &chain);
            found.insert(
                MailboxName(vec!["INBOX".into()]),
                FoundDir {
                    paths: Some(inbox),
                    presented,
                },
            );
        }
        match self.loc.layout {
            Layout::MaildirPlusPlus => self.scan_maildir_pp(&mut found, &mut stamp, &shared)?,
            Layout::Fs | Layout::Index => {
                let mut walk = Walk {
                    levels: Vec::new(),
                    chain: shared,
                    seen: std::collections::HashSet::new(),
                };
                self.scan_fs(root, &mut walk, &mut found, &mut stamp, 0)?;
            }
        }
        // Every ancestor level of a mailbox is presented, selectable or not.
        let presented_root = present_root(root, &[])?;
        Ok(MailboxList::from_found(found, presented_root, false, stamp))
    }

    /// Maildir++: every `ROOT/.<a>.<b>` directory is mailbox `a/b` (levels split on '.').
    fn scan_maildir_pp(
        &self,
        found: &mut BTreeMap<MailboxName, FoundDir<MailboxPaths>>,
        stamp: &mut Stamp,
        shared: &[(FileOwner, Need)],
    ) -> Result<()> {
        let root = &self.loc.root;
        let mut seen = std::collections::HashSet::new();
        let dirs = files::subdirs(root, &self.links, &mut seen, |b| {
            b.len() < 2
                || b[0] != b'.'
                || b == b".."
                || b == MAILDIR_PP_TRASH.as_bytes()
                || b.strip_prefix(b".") == Some(MAILDIR_PP_TRASH.as_bytes())
                || b.starts_with(b".nfs")
        })?;
        for (fname, st) in dirs {
            let b = fname.as_bytes();
            let path = root.join(&fname);
            let storage = &b[1..];
            let raw_levels: Vec<&[u8]> = storage.split(|c| *c == b'.').collect();
            if raw_levels.iter().any(|l| l.is_empty()) {
                warn!(
                    "{}: Maildir++ folder name has an empty level; skipped",
                    path.display()
                );
                continue;
            }
            let levels: Vec<String> = raw_levels
                .iter()
                .map(|l| self.decode_level(l, root))
                .collect();
            let name = files::unique_name(found, MailboxName(levels), &raw_levels, &path);
            if name.is_inbox() {
                warn!(
                    "{}: a Maildir++ folder named INBOX conflicts with the root INBOX; skipped",
                    path.display()
                );
                continue;
            }
            let paths = self.paths_for(Some(storage));
            let selectable = files::exists_nofollow(&paths.mail.join("cur"));
            if !selectable {
                // Dovecot may be between mkdir(.Folder) and mkdir(.Folder/cur): watch the
                // folder itself so that its cur/ appearing invalidates this list.
                stamp.push(paths.mail.clone());
                // Normal for a moment during every CREATE: not worth a warning.
                debug!(
                    "{}: Maildir++ folder without cur/; shown as a plain directory",
                    path.display()
                );
            }
            let presented = present_mailbox(&paths.mail, &st, shared);
            found.insert(
                name,
                FoundDir {
                    paths: selectable.then_some(paths),
                    presented,
                },
            );
        }
        Ok(())
    }

    /// `LAYOUT=fs`: every directory below the root (except `cur`, `new` and `tmp`; `.hidden`
    /// ones included, as in Dovecot) is a mailbox; it is selectable when it has `cur/`.
    fn scan_fs(
        &self,
        dir: &Path,
        walk: &mut Walk,
        found: &mut BTreeMap<MailboxName, FoundDir<MailboxPaths>>,
        stamp: &mut Stamp,
        depth: usize,
    ) -> Result<()> {
        if files::too_deep(dir, depth) {
            return Ok(());
        }
        // Dovecot's fs iteration skips only `.` and `..` (which are never listed) and
        // Maildir's own directories: `.hidden` is a mailbox here.
        let subdirs = files::subdirs(dir, &self.links, &mut walk.seen, |b| {
            matches!(b, b"cur" | b"new" | b"tmp")
        })?;
        for (fname, st) in subdirs {
            let b = fname.as_bytes();
            let sub = dir.join(&fname);
            if depth == 0 && b.eq_ignore_ascii_case(b"INBOX") && self.loc.inbox.is_none() {
                warn!(
                    "{}: a directory named INBOX conflicts with the root INBOX; skipped",
                    sub.display()
                );
                continue;
            }
            walk.levels.push(b.to_vec());
            let storage = walk.levels.join(&b'/');
            let decoded = MailboxName(
                walk.levels
                    .iter()
                    .map(|l| self.decode_level(l, dir))
                    .collect(),
            );
            let raw: Vec<&[u8]> = walk.levels.iter().map(Vec::as_slice).collect();
            let name = files::unique_name(found, decoded, &raw, &sub);
            let paths = self.paths_for(Some(&storage));
            let selectable = files::exists_nofollow(&paths.mail.join("cur"));
            let presented = present_mailbox(&paths.mail, &st, &walk.chain);
            found.insert(
                name,
                FoundDir {
                    paths: selectable.then_some(paths),
                    presented,
                },
            );
            stamp.push(sub.clone());
            // Everything below is reached through this directory.
            walk.chain.push((files::owner_of(&st), Need::Traverse));
            let result = self.scan_fs(&sub, walk, found, stamp, depth + 1);
            walk.chain.pop();
            walk.levels.pop();
            result?;
        }
        Ok(())
    }

    fn build_view(
        &self,
        name: &MailboxName,
        paths: &MailboxPaths,
        previous: Option<&Built<Trail>>,
    ) -> Result<Built<Trail>> {
        let cur = paths.mail.join("cur");
        let new = paths.mail.join("new");
        let uidlist_path = paths.control.join("dovecot-uidlist");
        let keywords_path = paths.control.join("dovecot-keywords");
        // Stamp before reading: a change during the scan then invalidates the result.
        let mut stamped = vec![
            cur.clone(),
            new.clone(),
            uidlist_path.clone(),
            keywords_path.clone(),
        ];
        if let Some(dir) = &paths.index {
            for f in ["dovecot.index", "dovecot.index.log", "dovecot.index.cache"] {
                stamped.push(dir.join(f));
            }
        }
        if let Some(pvt) = &paths.pvt {
            stamped.push(pvt.join("dovecot.index.pvt"));
            stamped.push(pvt.join("dovecot.index.pvt.log"));
        }
        let mut stamp = Stamp::take(&self.ctx, stamped);
        // A Dovecot sync holding the uidlist lock may be between renaming files and
        // writing the uidlist: read anyway, but read again next time.
        if locks::dotlock_held(&self.ctx, &uidlist_path) {
            stamp.mark_tentative();
        }
        // Continue from the previous build by what its journal recorded, if it can.
        // (Private flags come from another index, which no journal follows: a mailbox with
        // `INDEXPVT=` is always built in full.)
        if let Some(p) = previous
            && paths.pvt.is_none()
            && let Some(c) = p.extra.take_continuation()
        {
            match self.continue_view(name, paths, &p.view, &p.extra, c)? {
                Ok((view, trail)) => {
                    StoreContext::count(&self.ctx.stats.view_continuations);
                    return Ok(Built {
                        view: Arc::new(view),
                        stamp,
                        extra: trail,
                    });
                }
                Err(reason) => debug!("{}: full rescan ({reason})", paths.mail.display()),
            }
        }
        // Armed before the directories are read (see `journal`).
        let journal = self.arm_journal(&cur, &new);
        let dir_meta = files::dir_stat(&paths.mail)?;
        let dirs = MessageDirs::open(&cur, &new)?;

        // Every file's locator ("cur/<name>" or "new/<name>") in one buffer, then
        // base name -> locator as slices of it: no allocation per file.
        let hint = previous.map_or(0, |p| p.view.messages.len() + p.view.pending.len());
        let mut arena: Vec<u8> = Vec::with_capacity(hint * 48);
        let mut spans: Vec<(usize, usize, usize)> = Vec::with_capacity(hint + 16);
        for (sub, path, dir) in [
            (&b"cur"[..], &cur, dirs.cur.as_ref()),
            (&b"new"[..], &new, dirs.new.as_ref()),
        ] {
            let Some(dir) = dir else { continue };
            dir.read(|fname, _| {
                let b = fname.as_bytes();
                // Dovecot ignores dot files in cur/ and new/; an empty base is not a message.
                if b.starts_with(b".") {
                    return;
                }
                let (base, _) = fmt::split_name(b);
                if base.is_empty() {
                    return;
                }
                let start = arena.len();
                arena.extend_from_slice(sub);
                arena.push(b'/');
                arena.extend_from_slice(b);
                spans.push((start, arena.len(), start + 4 + base.len()));
            })
            .map_err(|e| Error::io(path, e))?;
        }
        let mut files: files::FnvMap<&[u8], &[u8]> = files::FnvMap::default();
        files.reserve(spans.len());
        for &(start, end, base_end) in &spans {
            let (base, locator) = (&arena[start + 4..base_end], &arena[start..end]);
            if let Some(prev) = files.insert(base, locator) {
                warn!(
                    "{}: two files share the base name {:?} ({}); Dovecot will rename one \
                     at its next sync",
                    paths.mail.display(),
                    String::from_utf8_lossy(base),
                    String::from_utf8_lossy(prev)
                );
            }
        }

        let (uidlist, uidlist_mark) = match trail::read_uidlist(&uidlist_path)? {
            Some((data, file)) => {
                let list =
                    fmt::parse_uidlist(&data).map_err(|e| Error::corrupt(&uidlist_path, e))?;
                let mark = UidlistMark::of(&file, &data, &list);
                (Some(list), mark)
            }
            None => (None, None),
        };
        let keywords = files::read_store_file(&keywords_path)?
            .map(|data| fmt::parse_keywords(&data))
            .unwrap_or_default();
        let index = self.index_for(paths);
        let table = Arc::new(KeywordTable::new(
            &keywords,
            index.as_ref().map(|(v, _)| &v.state.keywords[..]),
        ));
        // Keywords that have no letter live in Dovecot's index alone (a Maildir file name
        // holds at most 26): added from each message's index record.
        let index_only = |uid: u32| -> KeywordSet {
            match &index {
                Some((view, _)) if table.has_index_only() => table.index_only(view, uid),
                _ => KeywordSet::default(),
            }
        };
        let cached = |uid: u32| -> Option<CachedMessage> {
            let (view, cache) = index.as_ref()?;
            cache.as_ref()?.message(view, uid)
        };

        // The previous view's messages, reusable within one UIDVALIDITY.
        let uidlist_validity = uidlist.as_ref().map_or(0, |u| u.uid_validity);
        let previous_messages = UidCursor::new(
            previous
                .map(|p| &*p.view)
                .filter(|v| v.uid_validity == uidlist_validity),
        );
        let mut messages = Vec::new();
        let mut missing: Vec<u32> = Vec::new();
        if let Some(list) = &uidlist {
            // Each record with its file (`None`: missing), in UID order. Each message is
            // reused from the previous view or stated, spread over threads for a big
            // mailbox (`parallel::map_in_order`; a full build of 1,000,000 messages is
            // 1,000,000 `fstatat`s while the reader waits). A reference at most: a
            // million of them are held beside the results.
            let found: Vec<(&fmt::UidlistRecord, Option<&[u8]>)> = list
                .records
                .iter()
                .map(|rec| (rec, files.remove(rec.base.as_slice())))
                .collect();
            messages.reserve(found.len());
            // In slices, so that the results waiting to be moved into `messages` stay a
            // slice's worth (a million at once were 100 MB more at the build's peak).
            for part in found.chunks(parallel::SLICE) {
                let made = parallel::map_in_order(part, |&(rec, locator)| {
                    let locator = locator?;
                    Some(match reusable(&previous_messages, rec.uid, locator) {
                        Some(m) => Ok(reuse(&m, cached(rec.uid))),
                        None => self.message_meta(
                            paths,
                            &dirs,
                            MessageKey::Uid(rec.uid),
                            locator.to_vec(),
                            Some(rec),
                            cached(rec.uid),
                        ),
                    })
                });
                for ((rec, _), made) in part.iter().zip(made) {
                    let mut m = match made {
                        Some(Ok(m)) => m,
                        Some(Err(e)) if !e.is_not_found() => return Err(e),
                        Some(Err(_)) | None => {
                            missing.push(rec.uid);
                            continue;
                        }
                    };
                    m.keywords = table.remap(&m.keywords).union(&index_only(rec.uid));
                    messages.push(m);
                }
            }
        }
        if let Some(pvt_dir) = &paths.pvt {
            private_flags::apply(&self.indexes, pvt_dir, &mut messages)?;
        }
        // One log line per change of the set, not one per rescan.
        let already_logged = previous.is_some_and(|p| p.extra.missing == missing);
        if !missing.is_empty() && !already_logged {
            info!(
                "{}: {} dovecot-uidlist entr{} without a message file in new/ or cur/ \
                 (expunged, or lost): uid {}",
                paths.mail.display(),
                missing.len(),
                if missing.len() == 1 { "y" } else { "ies" },
                summarize_uids(&missing)
            );
        }
        let pending_files: Vec<trail::PendingFile> = files
            .iter()
            .map(|(b, l)| (Box::<[u8]>::from(*b), Box::<[u8]>::from(*l)))
            .collect();
        let mut pending: Vec<MessageMeta> = Vec::with_capacity(files.len());
        for (base, locator) in files {
            let key = MessageKey::Pending(base.into());
            match self.message_meta(paths, &dirs, key, locator.to_vec(), None, None) {
                Ok(mut m) => {
                    m.keywords = table.remap(&m.keywords);
                    pending.push(m);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        pending.sort_by(|a, b| a.key.cmp(&b.key));
        if !pending.is_empty() {
            debug!(
                "{}: {} file(s) without a UID yet (Dovecot assigns one at its next sync)",
                paths.mail.display(),
                pending.len()
            );
        }
        let mtime = mailbox_mtime(&paths.mail, &dir_meta);
        let view = MailboxView {
            id: crate::store::ViewId::new(),
            name: name.clone(),
            uid_validity: uidlist.as_ref().map_or(0, |u| u.uid_validity),
            uid_next: uidlist.as_ref().map_or(0, |u| u.next_uid),
            guid: uidlist.as_ref().and_then(|u| u.mailbox_guid.clone()),
            messages: Messages::from_sorted(messages),
            pending,
            keyword_names: Arc::new(table.names.clone()),
            owner: files::owner_of(&dir_meta),
            mtime,
        };
        // A continuation replays file-name events; keywords only the index has are not in
        // file names, so such a mailbox is always built in full.
        let continuation = match (journal, uidlist_mark, &uidlist) {
            (Some(journal), Some(mark), Some(list)) if !table.has_index_only() => {
                Continuation::new(
                    journal,
                    mark,
                    trail::keywords_mark(&keywords_path),
                    table,
                    index.as_ref().map(|(v, _)| v.clone()),
                    list,
                    pending_files,
                )
            }
            _ => None,
        };
        Ok(Built {
            view: Arc::new(view),
            stamp,
            extra: Trail::new(missing, continuation),
        })
    }

    /// The message in the opened `file` (`len` bytes, named `path`, listed as `meta`):
    /// the file itself, or decoded when the zlib plugin compressed it (its first bytes
    /// say so, as Dovecot looks: `zlib_istream_opened`). The decoded size is the `S=` of
    /// the name; a compressed file without one cannot be presented with its size.
    fn source(
        &self,
        file: std::fs::File,
        len: u64,
        path: &Path,
        base: &[u8],
        meta: &MessageMeta,
    ) -> Result<MessageSource> {
        let form = decoded::stored_form(&file, 0, len).map_err(|e| Error::io(path, e))?;
        match form {
            // Message files never change size: another size was truncated or replaced.
            StoredForm::Plain if len != meta.size => Err(Error::Unreadable {
                what: format!(
                    "{}: {len} bytes, but the message had {} when listed; the file was \
                     truncated or replaced",
                    path.display(),
                    meta.size
                ),
            }),
            StoredForm::Plain => Ok(MessageSource::file_range(file, 0, len)),
            StoredForm::Compressed(codec) if fmt::base_size(base, b'S').is_none() => {
                Err(Error::Unreadable {
                    what: format!(
                        "{}: compressed ({codec}, Dovecot's zlib plugin) but its name has no \
                         S=<size>, so its decoded size is unknown",
                        path.display()
                    ),
                })
            }
            StoredForm::Compressed(_) => {
                decoded::open_stored(&self.ctx, file, path, 0, len, meta.size)
            }
            StoredForm::Encrypted => Err(Error::Unreadable {
                what: format!(
                    "{}: {}",
                    path.display(),
                    form.describe().unwrap_or_default()
                ),
            }),
        }
    }

    /// Stats one message file (in `dirs`, without following a link) and gathers its
    /// metadata. A link or anything else that is not a regular file is listed with a
    /// problem (reading it fails), never followed.
    fn message_meta(
        &self,
        paths: &MailboxPaths,
        dirs: &MessageDirs,
        key: MessageKey,
        locator: Vec<u8>,
        rec: Option<&fmt::UidlistRecord>,
        cached: Option<CachedMessage>,
    ) -> Result<MessageMeta> {
        let cached = cached.unwrap_or_default();
        // The full path is only for error text: built when something fails, not once per
        // message.
        let path = || paths.mail.join(OsStr::from_bytes(&locator));
        let meta = dirs.stat(&locator).map_err(|e| Error::io(path(), e))?;
        let fname = &locator[4..];
        let (base, info) = fmt::split_name(fname);
        let name_flags = info.map(fmt::parse_info).unwrap_or_default();
        let stored = meta.size;
        let mut size = stored;
        // A compressed file (the zlib plugin: S= is the uncompressed size) is decoded to
        // count its virtual size when nothing recorded it.
        let mut compressed = None;
        let mut problem = if meta.is_symlink() {
            Some(format!(
                "{}: {}",
                path().display(),
                crate::error::SYMLINK_REFUSED
            ))
        } else if !meta.is_file() {
            Some(format!("{}: not a regular file", path().display()))
        } else {
            // `S=` in the name is the size Dovecot stored: a file of another size was
            // compressed by the zlib plugin (S= is the uncompressed size; Dovecot reads
            // any file whose first bytes are a compressed stream, as `stored_form` tells),
            // or encrypted, or truncated or replaced, and Dovecot would refuse it too.
            match fmt::base_size(base, b'S').filter(|&s| s != stored) {
                None => None,
                Some(s) => {
                    let form = dirs
                        .open_file(&locator)
                        .ok()
                        .and_then(|f| decoded::stored_form(&f, 0, stored).ok().map(|x| (f, x)));
                    match form {
                        Some((f, StoredForm::Compressed(codec))) => {
                            size = s;
                            compressed = Some((f, codec));
                            None
                        }
                        Some((_, form @ StoredForm::Encrypted)) => Some(format!(
                            "{}: {}",
                            path().display(),
                            form.describe().unwrap_or_default()
                        )),
                        _ => Some(format!(
                            "{}: the file has {stored} bytes but its name says S={s}; it was \
                             truncated or replaced",
                            path().display()
                        )),
                    }
                }
            }
        };
        // Virtual size lookup order as in maildir_mail_get_virtual_size(): file name W=,
        // uidlist W, Dovecot's cache, then counting the message's bare LFs.
        let virtual_size = match fmt::base_size(base, b'W')
            .or(rec.and_then(|r| r.virtual_size))
            .or(cached.size_virtual)
        {
            Some(v) => v,
            None if problem.is_none() => match &compressed {
                Some((f, codec)) => match decoded::count_sizes(f, *codec, 0, stored) {
                    Ok((_, v)) => v,
                    Err(e) => {
                        problem = Some(format!(
                            "{}: the {codec} stream (Dovecot's zlib plugin) cannot be \
                             decoded: {e}",
                            path().display()
                        ));
                        size
                    }
                },
                None => {
                    let file = dirs.open_file(&locator).map_err(|e| Error::io(path(), e))?;
                    files::count_virtual_size_of(file, &path())?
                }
            },
            None => size,
        };
        let problem = problem.map(Arc::new);
        // The uidlist's GUID, or else the base name (`base`), which the locator keeps.
        let guid = rec
            .and_then(|r| r.guid.as_deref())
            .map_or_else(Guid::maildir_base, Guid::new);
        Ok(MessageMeta {
            key,
            size,
            virtual_size,
            // Dovecot's getters ask the cache before stat() (index_mail_get_*_date).
            received: cached.date_received.map_or(meta.mtime, i64::from),
            saved: cached.date_save.map_or(meta.ctime, i64::from),
            flags: name_flags.flags,
            keywords: KeywordSet::from_mask(name_flags.keywords),
            guid,
            owner: files::owner_of(&meta),
            locator: Locator::Maildir(locator.into_boxed_slice()),
            problem,
        })
    }

    /// Dovecot's index of a mailbox and its cache, when present and readable. A broken
    /// index is logged (once until it recovers) and ignored: for Maildir the files are the
    /// authority, the index only holds what doveadm would answer from its cache.
    fn index_for(&self, paths: &MailboxPaths) -> Option<(Arc<IndexView>, Option<CacheSnapshot>)> {
        let dir = paths.index.as_ref()?;
        match self.indexes.view(&IndexPaths::mailbox(dir)) {
            Ok(Some(view)) => {
                self.index_problems.lock().remove(dir);
                let cache_path = dir.join("dovecot.index.cache");
                let cache = CacheSnapshot::read(&cache_path, &view).unwrap_or_else(|e| {
                    debug!("{e}; not using the cache");
                    None
                });
                Some((view, cache))
            }
            Ok(None) => None,
            Err(e) => {
                if self.index_problems.lock().insert(dir.clone()) {
                    warn!(
                        "{}: Dovecot's index is unusable ({e}); dates and sizes come from the \
                         message files alone",
                        dir.display()
                    );
                }
                None
            }
        }
    }

    /// Finds the current file of a message by base name after it was renamed (a flag
    /// change, or new/ -> cur/).
    /// The open `cur/` and `new/` of the mailbox at `mail` (opened and kept on first use),
    /// or `None` when they cannot be opened (the caller opens by path, and reports).
    ///
    /// Why: a first pass over a mailbox opens every message file; by path each open
    /// resolves every component of it (ten or so), relative to these one. Invariant: a
    /// file found relative to them is the message the view lists (Maildir base names are
    /// unique to a message, and a message file's bytes never change); one not found there
    /// (renamed for a flag change, or the directory replaced) is looked for by path as
    /// before, and the directories are opened again next time.
    fn message_dirs(&self, mail: &Path) -> Option<Arc<MessageDirs>> {
        if let Some(dirs) = self.message_dirs.lock().get(mail) {
            return Some(dirs.clone());
        }
        let dirs = Arc::new(MessageDirs::open(&mail.join("cur"), &mail.join("new")).ok()?);
        self.message_dirs
            .lock()
            .put(mail.to_path_buf(), dirs.clone());
        Some(dirs)
    }

    /// The message file `listed` (`cur/<name>` or `new/<name>`, at `path`) opened relative
    /// to the mailbox's kept `cur/` and `new/`, with its `fstat`. `None` when no directory
    /// is kept or the name is not there (renamed or expunged, or the directories were
    /// replaced: they are dropped, to be opened afresh): the caller goes by path.
    fn open_in_kept_dirs(
        &self,
        paths: &MailboxPaths,
        listed: &[u8],
        path: &Path,
    ) -> Result<Option<(std::fs::File, std::fs::Metadata)>> {
        let Some(dirs) = self.message_dirs(&paths.mail) else {
            return Ok(None);
        };
        match dirs.open_file(listed) {
            Ok(file) => files::message_file(file, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.message_dirs.lock().pop(&paths.mail);
                Ok(None)
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn relocate(&self, paths: &MailboxPaths, base: &[u8]) -> Option<Vec<u8>> {
        for sub in ["cur", "new"] {
            let Ok(dir) = sys::open_dir(&paths.mail.join(sub)) else {
                continue;
            };
            let mut found = None;
            let _ = dir.read(|fname, _| {
                if found.is_none() && fmt::split_name(fname.as_bytes()).0 == base {
                    let mut loc = sub.as_bytes().to_vec();
                    loc.push(b'/');
                    loc.extend_from_slice(fname.as_bytes());
                    found = Some(loc);
                }
            });
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// Where a `LAYOUT=fs` walk is: the on-disk name levels, the directories above (folded
/// into what is presented below them), and the directories entered.
struct Walk {
    levels: Vec<Vec<u8>>,
    chain: Vec<(FileOwner, Need)>,
    seen: std::collections::HashSet<(u64, u64)>,
}

/// A Maildir folder as presented: its directory's owner and mode with `cur/` and `new/`
/// (which its listing is read from) and `chain` folded in; its mtime.
fn present_mailbox(mail: &Path, st: &sys::Stat, chain: &[(FileOwner, Need)]) -> Presented {
    let mut deps = chain.to_vec();
    for sub in ["cur", "new"] {
        if let Ok(s) = files::lstat(&mail.join(sub)) {
            deps.push((files::owner_of(&s), Need::List));
        }
    }
    (access::restrict_all(files::owner_of(st), &deps), st.mtime)
}

/// A Maildir's modification time: the newest of `cur/` and `new/` (the directory's own
/// when neither can be read).
fn mailbox_mtime(mail: &Path, dir_meta: &sys::Stat) -> i64 {
    ["cur", "new"]
        .iter()
        .filter_map(|d| sys::lstat(&mail.join(d)).ok())
        .map(|m| m.mtime)
        .max()
        .unwrap_or(dir_meta.mtime)
}

/// A mailbox's `cur/` and (when it exists) `new/`, open: message files are examined
/// relative to them, so neither a link planted as a message file nor a message
/// directory swapped for a link after the listing is ever followed.
#[derive(Debug)]
pub(super) struct MessageDirs {
    cur: Option<sys::Dir>,
    new: Option<sys::Dir>,
}

impl MessageDirs {
    /// Opens `cur` (required) and `new` (may be missing); a link gives a layout error.
    pub(super) fn open(cur: &Path, new: &Path) -> Result<MessageDirs> {
        let open = |path: &Path| match sys::open_dir(path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == new => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                Err(Error::layout(path, "expected a directory, found a file"))
            }
            Err(e) => Err(Error::io(path, e)),
        };
        Ok(MessageDirs {
            cur: open(cur)?,
            new: open(new)?,
        })
    }

    /// The directory and file name of a locator (`cur/<name>`, `new/<name>`).
    fn split<'a>(&self, locator: &'a [u8]) -> std::io::Result<(&sys::Dir, &'a OsStr)> {
        let dir = match locator.get(..4) {
            Some(b"cur/") => self.cur.as_ref(),
            Some(b"new/") => self.new.as_ref(),
            _ => None,
        };
        match dir {
            Some(d) => Ok((d, OsStr::from_bytes(&locator[4..]))),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }

    /// `lstat` of a message file by locator.
    pub(super) fn stat(&self, locator: &[u8]) -> std::io::Result<sys::Stat> {
        let (dir, name) = self.split(locator)?;
        dir.stat_at(name)
    }

    /// Opens a message file by locator (a link is refused).
    fn open_file(&self, locator: &[u8]) -> std::io::Result<std::fs::File> {
        let (dir, name) = self.split(locator)?;
        dir.open_at(name)
    }
}

/// The previous view's metadata of a message whose file has not moved since (same name,
/// so same flags), if it was read without trouble: its size and times need no new `stat`.
fn reusable(previous: &UidCursor<'_>, uid: u32, locator: &[u8]) -> Option<MessageMeta> {
    previous
        .find(uid)
        .filter(|m| m.problem.is_none() && m.locator.maildir() == Some(locator))
}

/// `m` with what Dovecot's cache says now taking precedence (as in `message_meta`), and
/// flags and keywords from its file name (keyword bits in the name's own order; the
/// caller remaps them).
fn reuse(m: &MessageMeta, cached: Option<CachedMessage>) -> MessageMeta {
    let cached = cached.unwrap_or_default();
    let name = m.locator.maildir().unwrap_or_default();
    let (_, info) = fmt::split_name(name.get(4..).unwrap_or_default());
    let name_flags = info.map(fmt::parse_info).unwrap_or_default();
    MessageMeta {
        received: cached.date_received.map_or(m.received, i64::from),
        saved: cached.date_save.map_or(m.saved, i64::from),
        flags: name_flags.flags,
        keywords: KeywordSet::from_mask(name_flags.keywords),
        ..m.clone()
    }
}

impl Backend for MaildirStore {
    type Paths = MailboxPaths;
    type Extra = Trail;

    fn scan(&self) -> Result<MailboxList<MailboxPaths>> {
        match self.loc.layout {
            Layout::Index => self.scan_list_index(),
            _ => self.scan_mailboxes(),
        }
    }

    fn check(&self, list: &MailboxList<MailboxPaths>) -> Result<()> {
        if self.loc.layout == Layout::Index {
            // The list index was read: an empty one is an empty store, not a wrong format.
            return Ok(());
        }
        if !list.entries.iter().any(|e| e.selectable) {
            return Err(Error::layout(
                &self.loc.root,
                match self.loc.layout {
                    Layout::MaildirPlusPlus => {
                        "not a Maildir: no cur/ in the root and no Maildir++ .folder with cur/"
                    }
                    Layout::Fs => "not a Maildir (LAYOUT=fs): no directory with a cur/ inside",
                    Layout::Index => "not a Maildir (LAYOUT=index): no mailbox listed",
                },
            ));
        }
        Ok(())
    }

    fn build(
        &self,
        name: &MailboxName,
        paths: &MailboxPaths,
        previous: Option<&Built<Trail>>,
    ) -> Result<Built<Trail>> {
        if self.loc.layout == Layout::Index && !files::is_real_dir(&paths.mail) {
            return Err(listindex::missing_dir(
                name,
                &paths.mail,
                &listindex::paths(&self.loc),
            ));
        }
        self.build_view(name, paths, previous)
    }

    fn open(
        &self,
        paths: &MailboxPaths,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource> {
        let meta = view
            .get(key)
            .ok_or_else(|| Error::not_found(format!("message {key:?} in {}", view.name)))?;
        let listed = meta
            .locator
            .maildir()
            .ok_or_else(|| Error::not_found(format!("message {key:?} in {}", view.name)))?;
        let base = fmt::split_name(&listed[4..]).0.to_vec();
        let path = paths.mail.join(OsStr::from_bytes(listed));
        if let Some((file, st)) = self.open_in_kept_dirs(paths, listed, &path)? {
            return self.source(file, st.len(), &path, &base, &meta);
        }
        let mut locator = listed.to_vec();
        // A flag change renames the file; retry with its new name a few times, as Dovecot's
        // maildir_file_do() does.
        for _ in 0..10 {
            let path = paths.mail.join(OsStr::from_bytes(&locator));
            match files::open_message_file(&path) {
                Ok((file, st)) => return self.source(file, st.len(), &path, &base, &meta),
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    match self.relocate(paths, &base) {
                        Some(l) => locator = l,
                        None => {
                            return Err(Error::not_found(format!(
                                "{}: message file {:?} (expunged)",
                                paths.mail.display(),
                                String::from_utf8_lossy(&base)
                            )));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::layout(
            &paths.mail,
            format!(
                "message file {:?} keeps being renamed; giving up",
                String::from_utf8_lossy(&base)
            ),
        ))
    }

    /// The message file as listed (as `open` first opens it): a file renamed since (a flag
    /// change) is not looked for, advice being only advice.
    fn will_need(&self, paths: &MailboxPaths, view: &MailboxView, key: &MessageKey) -> Result<()> {
        let Some(meta) = view.get(key) else {
            return Ok(());
        };
        let Some(listed) = meta.locator.maildir() else {
            return Ok(());
        };
        let path = paths.mail.join(OsStr::from_bytes(listed));
        let (file, _) = match self.open_in_kept_dirs(paths, listed, &path)? {
            Some(opened) => opened,
            None => files::open_message_file(&path)?,
        };
        sys::will_need(&file, 0, 0).map_err(|e| Error::io(&path, e))
    }

    fn root(&self) -> &Path {
        &self.loc.root
    }

    fn context(&self) -> &Arc<StoreContext> {
        &self.ctx
    }
}

/// A Maildir view's keyword table: the letters of `dovecot-keywords` (a file name holds
/// at most 26) and the keywords only Dovecot's index has, in the order doveadm prints
/// keywords: the index's keyword order (the order each was first used in the mailbox),
/// then letters the index does not know, alphabetically.
#[derive(Debug)]
pub(super) struct KeywordTable {
    /// The view position of each letter.
    letter_pos: [usize; 26],
    /// (index keyword number, view position) of the keywords no letter stands for.
    index_only: Vec<(usize, usize)>,
    /// Names by view position.
    pub(super) names: Vec<String>,
}

impl KeywordTable {
    fn new(file: &Keywords, index: Option<&[String]>) -> KeywordTable {
        let letter_names: Vec<String> = (0..26).map(|l| file.name(l)).collect();
        let index = index.unwrap_or_default();
        let position = |name: &str| {
            index
                .iter()
                .position(|k| k.eq_ignore_ascii_case(name))
                .unwrap_or(usize::MAX)
        };
        // (sort key, letter or index keyword)
        let mut entries: Vec<((usize, usize), Result<u8, usize>)> = (0..26u8)
            .map(|l| {
                (
                    (position(&letter_names[usize::from(l)]), usize::from(l)),
                    Ok(l),
                )
            })
            .collect();
        for (i, name) in index.iter().enumerate() {
            if !letter_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                entries.push(((i, 0), Err(i)));
            }
        }
        entries.sort_by_key(|(key, _)| *key);
        let mut table = KeywordTable {
            letter_pos: [0; 26],
            index_only: Vec::new(),
            names: Vec::with_capacity(entries.len()),
        };
        for (pos, (_, what)) in entries.into_iter().enumerate() {
            match what {
                Ok(l) => {
                    table.letter_pos[usize::from(l)] = pos;
                    table.names.push(letter_names[usize::from(l)].clone());
                }
                Err(i) => {
                    table.index_only.push((i, pos));
                    table.names.push(index[i].clone());
                }
            }
        }
        table
    }

    /// Re-expresses a set of keyword letters (positions 0..26, as in a file name) as
    /// positions in this table.
    pub(super) fn remap(&self, letters: &KeywordSet) -> KeywordSet {
        KeywordSet::from_positions(
            letters
                .iter()
                .filter_map(|l| self.letter_pos.get(l).copied()),
        )
    }

    /// True when the index has keywords no letter stands for.
    pub(super) fn has_index_only(&self) -> bool {
        !self.index_only.is_empty()
    }

    /// The keywords of `uid` that only the index has (from its index record).
    fn index_only(&self, index: &IndexView, uid: u32) -> KeywordSet {
        let Some(rec) = index.state.records.get(uid) else {
            return KeywordSet::default();
        };
        let set: Vec<usize> = index.state.record_keyword_indexes(&rec).collect();
        KeywordSet::from_positions(
            self.index_only
                .iter()
                .filter(|(i, _)| set.contains(i))
                .map(|(_, pos)| *pos),
        )
    }
}

/// "1,2,5" for a few uids, "1,2,3,... (40 in all)" for many.
fn summarize_uids(uids: &[u32]) -> String {
    const SHOWN: usize = 10;
    let mut s: Vec<String> = uids.iter().take(SHOWN).map(u32::to_string).collect();
    if uids.len() > SHOWN {
        s.push(format!("... ({} in all)", uids.len()));
    }
    s.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_follow_the_index_order() {
        let file = fmt::parse_keywords(b"0 $Label1\n1 work\n2 zz\n");
        let index = ["zz".to_string(), "$label1".to_string()];
        let table = KeywordTable::new(&file, Some(&index));
        assert_eq!(&table.names[..3], &["zz", "$Label1", "work"]);
        // Letters a and c set -> positions of c (0) and a (1).
        let letters = KeywordSet::from_mask(0b101);
        assert_eq!(table.remap(&letters), KeywordSet::from_positions([0, 1]));
        assert!(!table.has_index_only());
        assert_eq!(
            &KeywordTable::new(&file, None).names[..3],
            &["$Label1", "work", "zz"]
        );
    }

    #[test]
    fn keywords_without_a_letter_come_from_the_index_in_its_order() {
        let file = fmt::parse_keywords(b"0 a\n1 b\n");
        let index: Vec<String> = ["b", "x", "a", "y"].iter().map(|s| s.to_string()).collect();
        let table = KeywordTable::new(&file, Some(&index));
        assert_eq!(&table.names[..4], &["b", "x", "a", "y"]);
        assert!(table.has_index_only());
        assert_eq!(
            table.remap(&KeywordSet::from_mask(0b11)),
            KeywordSet::from_positions([0, 2])
        );
    }

    #[test]
    fn summarizes_long_uid_lists() {
        assert_eq!(summarize_uids(&[1, 2]), "1,2");
        let many: Vec<u32> = (1..=12).collect();
        assert!(summarize_uids(&many).ends_with("... (12 in all)"));
    }
}
