//! The dbox backends, read-only: sdbox (one `u.<uid>` file per message) and mdbox
//! (messages packed in `storage/m.<file_id>`, found through the map index).
//!
//! Sources of truth, as in Dovecot 2.3.19.1 (`src/lib-storage/index/dbox-*`):
//! - the mailbox's `dovecot.index` + log: which UIDs exist, flags, keywords, UIDVALIDITY,
//!   next UID, mailbox GUID (`dbox-hdr` / `mdbox-hdr`), and for mdbox each message's
//!   `map_uid` and save date (`mdbox` extension) and GUID (`guid` extension);
//! - the mdbox map index (`storage/dovecot.map.index`): map_uid -> (file_id, offset);
//! - the dbox files: the message bytes, and metadata (`G` guid, `R` received, `V` virtual
//!   size);
//! - `dovecot.index.cache`, consulted first for dates and virtual sizes, as doveadm does;
//!   when it holds every value listed, the dbox file is only `stat`ed (`dbox_indexed.rs`).
//! - with `mail_attachment_dir`, the attachment files the metadata `X` names
//!   (`attachments.rs`, given `--attachment-dir`).
//!
//! Files are looked for in the primary storage first and in ALT storage second, whatever
//! the index says (Dovecot does the same). An mdbox location that fails (the file was
//! purged, or the bytes at the offset are not a message any more) is re-resolved through a
//! fresh map before giving up: `doveadm purge` and `altmove` may run under the mount. An
//! open message keeps its file descriptor, so it keeps reading the bytes it opened.
//!
//! Nothing here writes, locks or creates anything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::access::{self, Need};
use super::attachments;
use super::cache::{Built, FoundDir, MailboxList, Presented, present_root};
use super::cached::{Backend, Cached};
use super::dbox_indexed::{CachedListing, FileStats};
use super::decoded::{self, StoredForm};
use super::stamp::Stamp;
use super::{
    FileOwner, Guid, Locator, MailboxName, MailboxView, MessageKey, MessageMeta, MessageSource,
    Piece, UidCursor,
};
use super::{KeywordSet, Messages, StoreContext, files, listindex, locks, private_flags};
use crate::error::{Error, Result};
use crate::format::dbox;
use crate::format::{MailFlags, hex, le};
use crate::index::cachefile::{CacheLookup, CacheSnapshot, CachedValues};
use crate::index::pool::IndexPool;
use crate::index::reader::{IndexPaths, IndexView};
use crate::location::{Format, Layout, Location};
use crate::sys;

/// Where one mailbox's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MailboxPaths {
    /// Directory holding `u.N` (sdbox) and, without `INDEX=`, the index files.
    mail: PathBuf,
    /// The same directory under `ALT=`.
    alt: Option<PathBuf>,
    /// Directory holding `dovecot.index*`.
    index: PathBuf,
    /// Directory holding the private index (`dovecot.index.pvt*`) with `INDEXPVT=`.
    pvt: Option<PathBuf>,
}

/// How many times an mdbox message is re-resolved through a fresh map before it counts as
/// gone (Dovecot loops while the file id keeps changing).
const MDBOX_RESOLVE_ATTEMPTS: usize = 5;

/// Largest metadata block read (external-attachment lists can be long).
const METADATA_MAX: u64 = 1024 * 1024;

/// An sdbox or mdbox store.
#[derive(Debug)]
pub struct DboxStore {
    loc: Location,
    /// Settings and counters.
    ctx: Arc<StoreContext>,
    /// Mailbox indexes and, for mdbox, the map index.
    indexes: IndexPool,
    /// Symbolic links met where mailboxes could be (logged once each).
    links: files::LinkLog,
    /// mdbox: the map as last read by [`DboxStore::open_mdbox`], tried before the map is
    /// refreshed (see there).
    map_seen: Mutex<Option<Arc<IndexView>>>,
    /// mdbox: the `m.N` files the last opens read, kept while the map they were found
    /// through is the one last read.
    mfiles: Mutex<MFiles>,
}

/// `m.N` files kept open between message opens ([`MFILES_KEPT`] at most): consecutive
/// messages of a mailbox mostly lie in one file, and re-opening it for each costs a path
/// walk, an `fstat` and a read of its header. A file kept stays valid for the messages the
/// map gave (its bytes never change; see [`DboxStore::open_mdbox`]); the files are
/// let go when another map is read. Like the opened messages `fs/` keeps, a file kept
/// may outlive its unlink by a purge until then.
#[derive(Debug, Default)]
struct MFiles {
    /// The map the files were found through (compared by pointer).
    map: Option<Arc<IndexView>>,
    /// By file id, the most recently used last.
    files: Vec<(u32, Arc<MFile>)>,
}

/// How many `m.N` files [`MFiles`] keeps.
const MFILES_KEPT: usize = 4;

/// One `m.N`, open, with its length when opened and its parsed file header.
#[derive(Debug)]
struct MFile {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    header: dbox::FileHeader,
}

impl DboxStore {
    /// Opens the store (its list and views cached, at most `cache_capacity` views),
    /// refusing a root that is missing, empty, or not the claimed format.
    pub(super) fn open(
        loc: Location,
        ctx: Arc<StoreContext>,
        cache_capacity: usize,
    ) -> Result<Cached<DboxStore>> {
        files::check_store_root(&loc.root)?;
        if loc.mail_dirname().is_none() {
            return Err(Error::Location {
                location: loc.original.clone(),
                what: "an empty DIRNAME is not supported for dbox".into(),
            });
        }
        let mailbox_root = loc.mailbox_root();
        if !files::is_real_dir(&mailbox_root) {
            return Err(Error::layout(
                &mailbox_root,
                format!("not a {} store: no mailbox directory", loc.format.name()),
            ));
        }
        if loc.format == Format::Mdbox && !files::is_real_dir(&loc.root.join("storage")) {
            return Err(Error::layout(
                loc.root.join("storage"),
                "not an mdbox store: no storage/ directory",
            ));
        }
        let store = DboxStore {
            loc,
            ctx,
            // One reader per cached view, the map index, the list index (`LAYOUT=index`).
            indexes: IndexPool::new(cache_capacity.max(1) + 2),
            links: files::LinkLog::default(),
            map_seen: Mutex::new(None),
            mfiles: Mutex::new(MFiles::default()),
        };
        Cached::open(store, cache_capacity)
    }

    fn dirname(&self) -> &str {
        self.loc.mail_dirname().unwrap_or("dbox-Mails")
    }

    /// Paths of the mailbox whose storage name (on-disk levels joined by '/') is `rel`.
    fn paths_for(&self, rel: &Path) -> MailboxPaths {
        let loc = &self.loc;
        let mailboxdir = loc
            .mailboxdir
            .clone()
            .unwrap_or_else(|| "mailboxes".to_string());
        let mail = loc.mailbox_root().join(rel).join(self.dirname());
        let alt = loc
            .alt
            .as_ref()
            .map(|a| a.join(&mailboxdir).join(rel).join(self.dirname()));
        let under = |root: &PathBuf| {
            let base = root.join(&mailboxdir).join(rel);
            if loc.full_dirname {
                base.join(self.dirname())
            } else {
                base
            }
        };
        let index = loc.index.as_ref().map_or_else(|| mail.clone(), under);
        let pvt = loc.index_pvt.as_ref().map(under);
        MailboxPaths {
            mail,
            alt,
            index,
            pvt,
        }
    }

    /// `LAYOUT=index`: the paths of the mailbox with `guid`. The mail, index, ALT and
    /// private index directories are each `<root>/<MAILBOXDIR>/<guid>`, with no DIRNAME
    /// level (`index_list_get_path` asks for the mailbox *directory*).
    fn guid_paths(&self, guid: &str) -> MailboxPaths {
        let loc = &self.loc;
        let mail = loc.guid_dir(&loc.root, guid);
        MailboxPaths {
            alt: loc.alt.as_ref().map(|a| loc.guid_dir(a, guid)),
            index: loc
                .index
                .as_ref()
                .map_or_else(|| mail.clone(), |i| loc.guid_dir(i, guid)),
            pvt: loc.index_pvt.as_ref().map(|p| loc.guid_dir(p, guid)),
            mail,
        }
    }

    /// `LAYOUT=index`: the mailbox tree from the list index ([`listindex::mailbox_list`]).
    fn scan_list_index(&self) -> Result<MailboxList<MailboxPaths>> {
        let shared = self.shared_deps();
        listindex::mailbox_list(
            &self.ctx,
            &self.indexes,
            &self.loc,
            self.loc.no_noselect,
            |guid| self.guid_paths(guid),
            |p| &p.mail,
            |p, st| self.present(st, p, &shared),
        )
    }

    /// INBOX's paths with `INBOX=`: its mail (and, without `INDEX=`, its index) directly in
    /// that directory, with no DIRNAME level.
    fn inbox_paths(&self, inbox: &Path) -> MailboxPaths {
        let mut p = self.paths_for(Path::new("INBOX"));
        p.mail = inbox.to_path_buf();
        if self.loc.index.is_none() {
            p.index = inbox.to_path_buf();
        }
        p
    }

    /// The mdbox map index (in `INDEX/storage/` with `INDEX=`, else `ROOT/storage/`).
    fn map_paths(&self) -> IndexPaths {
        let base = self.loc.index.as_ref().unwrap_or(&self.loc.root);
        IndexPaths {
            dir: base.join("storage"),
            prefix: "dovecot.map.index".into(),
        }
    }

    /// Directories every mailbox is also reached through: `mailboxes/` and, for mdbox,
    /// `storage/`; and the `INDEX=`, `ALT=` and `INDEXPVT=` roots outside the store root
    /// with their ancestors (see [`access`]).
    fn shared_deps(&self) -> Vec<(FileOwner, Need)> {
        let mut deps = Vec::new();
        let mut inside = vec![self.loc.mailbox_root()];
        if self.loc.format == Format::Mdbox {
            inside.push(self.loc.root.join("storage"));
        }
        for dir in inside {
            if let Ok(st) = files::lstat(&dir) {
                deps.push((files::owner_of(&st), Need::Traverse));
            }
        }
        for dir in [&self.loc.index, &self.loc.alt, &self.loc.index_pvt]
            .into_iter()
            .flatten()
        {
            if !dir.starts_with(&self.loc.root) {
                deps.extend(access::outside_root(dir));
            }
        }
        deps
    }

    /// How a mailbox directory `dir` (with `st`, below `chain`) is presented: its owner
    /// and mode with the directories its listing is read from (the mail directory, the
    /// index directory) and its ALT directory folded in; the mail directory's mtime.
    fn present(
        &self,
        dir_st: &sys::Stat,
        paths: &MailboxPaths,
        chain: &[(FileOwner, Need)],
    ) -> Presented {
        let mut deps = chain.to_vec();
        let mut mtime = dir_st.mtime;
        if let Ok(st) = files::lstat(&paths.mail) {
            deps.push((files::owner_of(&st), Need::List));
            mtime = st.mtime;
        }
        if paths.index != paths.mail
            && let Ok(st) = files::lstat(&paths.index)
        {
            deps.push((files::owner_of(&st), Need::List));
        }
        if let Some(alt) = &paths.alt
            && let Ok(st) = files::lstat(alt)
        {
            deps.push((files::owner_of(&st), Need::Traverse));
        }
        (access::restrict_all(files::owner_of(dir_st), &deps), mtime)
    }

    /// Walks the mailbox tree (or, with `ITERINDEX`, the index tree): a directory is a
    /// mailbox; it is selectable when it holds the mail directory (`dbox-Mails`) -- with
    /// `ITERINDEX`, when it holds `dovecot.index.log`.
    fn scan_mailboxes(&self) -> Result<MailboxList<MailboxPaths>> {
        let walk_root = match (&self.loc.index, self.loc.iter_index) {
            (Some(i), true) => i.join(
                self.loc
                    .mailboxdir
                    .clone()
                    .unwrap_or_else(|| "mailboxes".into()),
            ),
            _ => self.loc.mailbox_root(),
        };
        let mut stamp = Stamp::take(&self.ctx, vec![walk_root.clone()]);
        let mut found: BTreeMap<MailboxName, FoundDir<MailboxPaths>> = BTreeMap::new();
        let shared = self.shared_deps();
        let mut walk = Walk {
            levels: Vec::new(),
            chain: shared.clone(),
            seen: HashSet::new(),
        };
        self.walk(&walk_root, &mut walk, &mut found, &mut stamp, 0)?;
        if let Some(inbox) = &self.loc.inbox {
            stamp.push(inbox.clone());
            let name = MailboxName(vec!["INBOX".into()]);
            let paths = self.inbox_paths(inbox);
            let selectable = files::exists_nofollow(&paths.index.join("dovecot.index.log"))
                || files::exists_nofollow(&paths.index.join("dovecot.index"));
            let st = files::dir_stat(inbox)?;
            let mut chain = shared;
            chain.extend(access::ancestors(inbox));
            let presented = self.present(&st, &paths, &chain);
            found.insert(
                name,
                FoundDir {
                    paths: selectable.then_some(paths),
                    presented,
                },
            );
        }
        // Every ancestor level of a mailbox is presented, selectable or not.
        let root = present_root(&self.loc.root, &[&walk_root])?;
        Ok(MailboxList::from_found(
            found,
            root,
            self.loc.no_noselect,
            stamp,
        ))
    }

    fn walk(
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
        let dirname = self.dirname().as_bytes().to_vec();
        // As Dovecot's fs iteration: only `.`/`..` (never listed) and the mail directory
        // are skipped; a directory named `.hidden` is a mailbox.
        let subdirs = files::subdirs(dir, &self.links, &mut walk.seen, |b| b == dirname)?;
        for (fname, st) in subdirs {
            let b = fname.as_bytes();
            let sub = dir.join(&fname);
            walk.levels.push(b.to_vec());
            let rel = PathBuf::from(OsStr::from_bytes(&walk.levels.join(&b'/')));
            let decoded = MailboxName(
                walk.levels
                    .iter()
                    .map(|l| files::decode_level(l, self.loc.utf8_names, dir))
                    .collect(),
            );
            let raw: Vec<&[u8]> = walk.levels.iter().map(Vec::as_slice).collect();
            let name = files::unique_name(found, decoded, &raw, &sub);
            let paths = self.paths_for(&rel);
            let selectable = if self.loc.iter_index {
                files::exists_nofollow(&paths.index.join("dovecot.index.log"))
                    || files::is_real_dir(&paths.mail)
            } else {
                files::is_real_dir(&sub.join(self.dirname()))
            };
            let presented = self.present(&st, &paths, &walk.chain);
            found.insert(
                name,
                FoundDir {
                    paths: selectable.then_some(paths),
                    presented,
                },
            );
            stamp.push(sub.clone());
            walk.chain.push((files::owner_of(&st), Need::Traverse));
            let result = self.walk(&sub, walk, found, stamp, depth + 1);
            walk.chain.pop();
            walk.levels.pop();
            result?;
        }
        Ok(())
    }

    /// `previous` is the last view of the same mailbox: messages it read without trouble
    /// are not read from their dbox files again (see [`DboxStore::reuse`]).
    fn build_view(
        &self,
        name: &MailboxName,
        paths: &MailboxPaths,
        previous: Option<&Built<Continue>>,
    ) -> Result<Built<Continue>> {
        let mut stamped = vec![
            paths.index.join("dovecot.index"),
            paths.index.join("dovecot.index.log"),
            paths.index.join("dovecot.index.cache"),
            paths.mail.clone(),
        ];
        if let Some(alt) = &paths.alt {
            stamped.push(alt.clone());
        }
        if let Some(pvt) = &paths.pvt {
            stamped.push(pvt.join("dovecot.index.pvt.log"));
        }
        if self.loc.format == Format::Mdbox {
            let map = self.map_paths();
            stamped.push(map.dir.join("dovecot.map.index.log"));
        }
        let mut stamp = Stamp::take(&self.ctx, stamped);
        // A sync in progress (the log's lock held): read the complete transactions, and
        // read again next time.
        if locks::writer_holds(&self.ctx, &paths.index.join("dovecot.index.log")) {
            stamp.mark_tentative();
        }
        let index = self
            .indexes
            .view(&IndexPaths::mailbox(&paths.index))?
            .ok_or_else(|| {
                Error::layout(
                    &paths.index,
                    "mailbox has no dovecot.index or dovecot.index.log: dbox keeps its \
                     message list only there",
                )
            })?;
        let dir_meta = files::dir_stat(&paths.mail)?;
        // Reusable only within one UIDVALIDITY.
        let previous =
            previous.filter(|p| p.view.uid_validity == index.state.header().uid_validity);
        // Continue from the previous build where possible (private flags come from another
        // index: always built in full).
        let continued = match previous {
            Some(p) if paths.pvt.is_none() => {
                self.continued_messages(paths, &index, &p.view, &p.extra)?
            }
            _ => None,
        };
        // The previous view's messages are not cloned unless needed: at a million messages a
        // clone costs about 0.1 ms, and requests rebuild a view this way over and over while
        // its stamps are tentative, just after a change.
        let (messages, broken) = match (continued, previous) {
            (Some(Continued::Unchanged), Some(p)) => {
                StoreContext::count(&self.ctx.stats.view_continuations);
                (BuiltMessages::OfPrevious(&p.view), p.extra.broken.clone())
            }
            (Some(Continued::Changed(messages, broken)), _) => {
                StoreContext::count(&self.ctx.stats.view_continuations);
                (BuiltMessages::New(messages), broken)
            }
            (Some(Continued::Unchanged), None) | (None, _) => {
                let cache = CacheSnapshot::read(&paths.index.join("dovecot.index.cache"), &index)
                    .unwrap_or_default();
                let cache = cache.as_ref().map(|c| c as &dyn CachedValues);
                let mut messages =
                    self.all_messages(paths, &index, cache, previous.map(|p| &*p.view))?;
                if let Some(pvt_dir) = &paths.pvt {
                    private_flags::apply(&self.indexes, pvt_dir, &mut messages)?;
                }
                let broken = messages
                    .iter()
                    .filter(|m| m.problem.is_some())
                    .filter_map(|m| match m.key {
                        MessageKey::Uid(u) => Some(u),
                        MessageKey::Pending(_) => None,
                    })
                    .collect();
                (BuiltMessages::New(Messages::from_sorted(messages)), broken)
            }
        };
        let st = &index.state;
        let h = st.header();
        let guid_ext = match self.loc.format {
            Format::Sdbox => "dbox-hdr",
            _ => "mdbox-hdr",
        };
        // dbox-hdr: u32 rebuild_count; mdbox-hdr: u32 map_uid_validity; then guid[16].
        let guid = st
            .ext(guid_ext)
            .and_then(|(_, e)| e.hdr.get(4..20))
            .filter(|g| g.iter().any(|b| *b != 0))
            .map(hex);
        let (owner, mtime) = (files::owner_of(&dir_meta), dir_meta.mtime);
        let view = match messages {
            // Nothing new (a rebuild while the stamps are tentative, or of files touched
            // without news): the previous view itself, so that nothing downstream (the
            // watcher, the directory times) sees another snapshot.
            BuiltMessages::OfPrevious(p)
                if p.uid_next == h.next_uid
                    && p.guid == guid
                    && *p.keyword_names == st.keywords
                    && p.owner == owner
                    && p.mtime == mtime =>
            {
                StoreContext::count(&self.ctx.stats.views_unchanged);
                p.clone()
            }
            messages => Arc::new(MailboxView {
                id: crate::store::ViewId::new(),
                name: name.clone(),
                uid_validity: h.uid_validity,
                uid_next: h.next_uid,
                guid,
                messages: match messages {
                    BuiltMessages::New(m) => m,
                    BuiltMessages::OfPrevious(p) => p.messages.clone(),
                },
                pending: Vec::new(),
                keyword_names: Arc::new(st.keywords.clone()),
                owner,
                mtime,
            }),
        };
        Ok(Built {
            view,
            stamp,
            extra: Continue { index, broken },
        })
    }

    /// Every message of the index, each from its `u.N` / `m.N` (or from `previous`, which
    /// is reused for what never changes for a UID: see [`DboxStore::reusable`]).
    fn all_messages(
        &self,
        paths: &MailboxPaths,
        index: &IndexView,
        cache: Option<&dyn CachedValues>,
        previous: Option<&MailboxView>,
    ) -> Result<Vec<MessageMeta>> {
        let st = &index.state;
        let previous = UidCursor::new(previous);
        let mut reader = self.stored_reader(paths, index)?;
        let mut out = Vec::with_capacity(st.records.len());
        for rec in st.records.iter() {
            let uid = crate::index::records::record_uid(rec);
            let save_date = reader.save_date(&rec)?;
            if let Some(m) = Self::reusable(&previous, uid) {
                out.push(Self::with_cache(index, cache, &rec, &m, save_date));
                continue;
            }
            out.push(self.stored_message(&mut reader, paths, index, cache, &rec)?);
        }
        Ok(out)
    }

    /// What reading stored messages needs: for mdbox the map and the open `m.N` files.
    fn stored_reader(&self, paths: &MailboxPaths, index: &IndexView) -> Result<StoredReader> {
        if self.loc.format != Format::Mdbox {
            return Ok(StoredReader::Sdbox {
                stats: FileStats::new(&paths.mail, paths.alt.as_deref()),
            });
        }
        let map_paths = self.map_paths();
        let map = self
            .indexes
            .view(&map_paths)?
            .ok_or_else(|| Error::layout(&map_paths.dir, "mdbox map index missing"))?;
        Ok(StoredReader::Mdbox {
            map_paths,
            map,
            files: OpenMFiles::default(),
            ext: index.state.ext("mdbox").map(|(_, e)| e.clone()),
            root: self.loc.root.clone(),
            stats: FileStats::new(
                &self.loc.root.join("storage"),
                self.loc.alt.as_ref().map(|a| a.join("storage")).as_deref(),
            ),
        })
    }

    /// One message read from its stored file: sdbox's `u.N` (header, metadata, file
    /// times), or mdbox's `m.N` entry through the map. A file that cannot be read gives a
    /// broken message (listed, EIO when read), not an error.
    fn stored_message(
        &self,
        reader: &mut StoredReader,
        paths: &MailboxPaths,
        index: &IndexView,
        cache: Option<&dyn CachedValues>,
        rec: &[u8],
    ) -> Result<MessageMeta> {
        let uid = crate::index::records::record_uid(rec);
        let save_date = reader.save_date(rec)?;
        if let Some(m) = Self::indexed_message(reader, index, cache, rec, save_date) {
            return Ok(m);
        }
        StoreContext::count(&self.ctx.stats.listing_file_reads);
        let (locator, resolved) = match reader {
            StoredReader::Sdbox { .. } => {
                let resolved = self.read_sdbox(paths, uid);
                (Locator::Sdbox, resolved)
            }
            StoredReader::Mdbox {
                map_paths,
                map,
                files,
                ext,
                ..
            } => {
                let map_uid = ext
                    .as_ref()
                    .and_then(|e| e.slice(rec))
                    .and_then(|b| le::u32_at(b, 0))
                    .unwrap_or(0);
                let locator = Locator::Mdbox(map_uid);
                // A purge may have moved the message since the map was read: before
                // calling it damaged, look again through a fresh map (as Dovecot's lookup
                // loops).
                let mut attempt = 0;
                let resolved = loop {
                    match self.resolve_in(map, files, uid, map_uid) {
                        Ok(found) => break Ok(found),
                        Err(_) if attempt + 1 < MDBOX_RESOLVE_ATTEMPTS => {
                            attempt += 1;
                            files.clear();
                            *map = self.indexes.view(map_paths)?.ok_or_else(|| {
                                Error::layout(&map_paths.dir, "mdbox map index missing")
                            })?;
                        }
                        Err(problem) => break Err(problem),
                    }
                };
                (locator, resolved)
            }
        };
        Ok(match resolved {
            Ok((found, fmeta)) => Self::meta(
                index,
                cache,
                Stored {
                    uid,
                    rec,
                    found,
                    file: &fmeta,
                    save_date,
                    locator,
                    attachment_dir: self.ctx.config.attachment_dir.as_deref(),
                },
            ),
            Err(problem) => Self::broken(uid, rec, locator, problem),
        })
    }

    /// The message listed from the index and the cache alone, as doveadm does
    /// ([`super::dbox_indexed`]), when the cache gives every value presented and the
    /// message's file is there: its owner and mode (and, failing a cached save date, its
    /// ctime) come from a `stat`, nothing is opened. `None`: read it from its file.
    fn indexed_message(
        reader: &mut StoredReader,
        index: &IndexView,
        cache: Option<&dyn CachedValues>,
        rec: &[u8],
        save_date: Option<i64>,
    ) -> Option<MessageMeta> {
        let uid = crate::index::records::record_uid(rec);
        let cached =
            CachedListing::from_cache(cache?.message(index, uid)?, Self::vsize_ext(index, rec))?;
        // A file too short to hold what is listed is read the full way, which says what
        // is wrong with it (a truncation shows while listing, as before).
        let (file, locator) = match reader {
            StoredReader::Sdbox { stats } => {
                let st = stats.regular(&format!("u.{uid}"))?;
                // A plain body is in the file whole; a compressed one or one with external
                // attachments may be smaller than its size: read those.
                (st.size >= cached.size).then_some((st, Locator::Sdbox))?
            }
            StoredReader::Mdbox {
                map, ext, stats, ..
            } => {
                let map_uid = ext
                    .as_ref()
                    .and_then(|e| e.slice(rec))
                    .and_then(|b| le::u32_at(b, 0))?;
                let (file_id, offset, span) = map_entry(map, map_uid)?;
                let st = stats.mfile(file_id)?;
                let end = u64::from(offset) + u64::from(span);
                (span > 0 && st.size >= end).then_some((st, Locator::Mdbox(map_uid)))?
            }
        };
        Some(MessageMeta {
            key: MessageKey::Uid(uid),
            size: cached.size,
            virtual_size: cached.virtual_size,
            received: cached.received,
            // As `with_cache`: the cache, then mdbox's extension, then the file's ctime.
            saved: cached.saved.or(save_date).unwrap_or(file.ctime),
            flags: MailFlags(rec.get(4).copied().unwrap_or(0) & 0x1f),
            keywords: Self::keyword_set(index, rec),
            guid: Guid::new(&cached.guid),
            owner: files::owner_of(&file),
            locator,
            problem: None,
        })
    }

    /// Reads `u.<uid>` from primary or ALT storage; `Err` says why it cannot be read.
    fn read_sdbox(
        &self,
        paths: &MailboxPaths,
        uid: u32,
    ) -> std::result::Result<(Found, fs::Metadata), String> {
        let locator = format!("u.{uid}");
        let (file, path, fmeta) = match open_primary_or_alt(paths, &locator) {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(format!(
                    "{}: uid {uid} is in the index but {locator} is in neither primary nor \
                     ALT storage",
                    paths.mail.display()
                ));
            }
            Err(e) => return Err(e.to_string()),
        };
        let found = read_message(&file, &path, None, fmeta.len()).map_err(|e| e.to_string())?;
        Ok((found, fmeta))
    }

    /// The messages of `index` made from `previous`, which was built from `from`, by
    /// applying what changed between the two indexes: removed UIDs dropped, changed ones
    /// re-read from the index record and the cache, new ones (and ones that were broken)
    /// read from their files. Views share every chunk of messages nothing touched, so
    /// this costs what changed, not the mailbox. `None` when it cannot be done that way
    /// (another index generation or record layout, keywords renumbered): build in full.
    fn continued_messages(
        &self,
        paths: &MailboxPaths,
        index: &IndexView,
        previous: &MailboxView,
        from: &Continue,
    ) -> Result<Option<Continued>> {
        let (old, new) = (&from.index.state, &index.state);
        if from.index.indexid != index.indexid
            || old.header().uid_validity != new.header().uid_validity
            || previous.uid_validity != new.header().uid_validity
            || !new.keywords.starts_with(&old.keywords)
        {
            return Ok(None);
        }
        let Some(delta) = new.records.delta(&old.records) else {
            return Ok(None);
        };
        if delta.added.is_empty() && delta.removed.is_empty() && delta.changed.is_empty() {
            return Ok(Some(Continued::Unchanged));
        }
        let mut messages = previous.messages.clone();
        for uid in &delta.removed {
            messages.remove(*uid);
        }
        let cache =
            CacheLookup::open(&paths.index.join("dovecot.index.cache"), index).unwrap_or_default();
        let cache = cache.as_ref().map(|c| c as &dyn CachedValues);
        let mut reader = self.stored_reader(paths, index)?;
        let mut from_files: Vec<u32> = delta.added.clone();
        for uid in delta.changed.iter().chain(&from.broken) {
            let Some(rec) = new.records.get(*uid) else {
                continue;
            };
            match messages.get(*uid).filter(|m| m.problem.is_none()) {
                Some(m) => {
                    let save_date = reader.save_date(&rec)?;
                    let m = Self::with_cache(index, cache, &rec, &m, save_date);
                    messages.upsert(m);
                }
                None => from_files.push(*uid),
            }
        }
        from_files.sort_unstable();
        from_files.dedup();
        let mut broken = Vec::new();
        for uid in from_files {
            let Some(rec) = new.records.get(uid) else {
                continue;
            };
            let m = self.stored_message(&mut reader, paths, index, cache, &rec)?;
            if m.problem.is_some() {
                broken.push(uid);
            }
            messages.upsert(m);
        }
        messages.seal();
        Ok(Some(Continued::Changed(messages, broken)))
    }

    /// Reads the message `map_uid` points at in `map`; `Err` says why it cannot be read.
    fn resolve_in(
        &self,
        map: &IndexView,
        files: &mut OpenMFiles,
        uid: u32,
        map_uid: u32,
    ) -> std::result::Result<(Found, fs::Metadata), String> {
        let Some((file_id, offset)) = map_location(map, map_uid) else {
            return Err(format!(
                "{}: uid {uid} points at map_uid {map_uid}, which the map does not have \
                 (purged, or the storage needs a rebuild)",
                self.loc.root.display()
            ));
        };
        let Some((file, path, fmeta)) = files.get(self, file_id) else {
            return Err(format!(
                "{}: m.{file_id} (uid {uid}) is in neither primary nor ALT storage",
                self.loc.root.join("storage").display()
            ));
        };
        read_message(file, path, Some(u64::from(offset)), fmeta.len())
            .map(|found| (found, fmeta.clone()))
            .map_err(|e| e.to_string())
    }

    /// Builds one message's metadata from the index record, the dbox file and the cache,
    /// in the order Dovecot's getters consult them.
    fn meta(
        index: &IndexView,
        cache: Option<&dyn CachedValues>,
        stored: Stored<'_>,
    ) -> MessageMeta {
        let Stored {
            uid,
            rec,
            found,
            file,
            save_date,
            locator,
            attachment_dir,
        } = stored;
        let md = &found.metadata;
        // What the file says; the cache (and mdbox's save-date extension) take precedence
        // in `with_cache`, as in Dovecot's getters.
        // dbox_mail_get_received_date: cache, then metadata R, then (none) file mtime.
        // index_mail_get_save_date: cache, then mdbox's extension, then sdbox's ctime.
        // dbox_get_cached_metadata(GUID): the cache, then the file's G line (which keeps an
        // imported message's original GUID string); mdbox's `guid` extension last.
        let ext_guid = index
            .state
            .ext("guid")
            .and_then(|(_, e)| e.slice(rec))
            .filter(|g| g.iter().any(|b| *b != 0))
            .map(hex);
        // A compressed body's size is the plaintext size the metadata records (`Z`:
        // dbox_file_get_plaintext_size()).
        let size = match (found.form, md.physical_size) {
            (StoredForm::Compressed(_), Some(z)) => z,
            _ => presented_size(md, found.body_size),
        };
        let from_file = MessageMeta {
            key: MessageKey::Uid(uid),
            size,
            virtual_size: md.virtual_size.unwrap_or(size),
            received: md
                .received
                .and_then(|r| i64::try_from(r).ok())
                .unwrap_or(file.mtime()),
            saved: file.ctime(),
            flags: MailFlags::default(),
            keywords: KeywordSet::default(),
            guid: md
                .guid
                .clone()
                .or(ext_guid)
                .map(Guid::from)
                .unwrap_or_default(),
            owner: files::owner_of(&sys::Stat::of(file)),
            locator,
            problem: unsupported_encoding(md, found.body_size, found.form, uid, attachment_dir)
                .map(Into::into),
        };
        Self::with_cache(index, cache, rec, &from_file, save_date)
    }

    /// The previous view's metadata of `uid`, if it was read without trouble. What came
    /// from the dbox file (sizes, metadata block, file times) never changes for a UID, so
    /// a rebuild after one delivery reads one file, not every file. (A file damaged later
    /// is still caught: `open` reads its header again.)
    fn reusable(previous: &UidCursor<'_>, uid: u32) -> Option<MessageMeta> {
        previous.find(uid).filter(|m| m.problem.is_none())
    }

    /// `m` completed from the index and the cache: flags and keywords from the index
    /// record; the cache's values (then `save_date`, mdbox's extension) take precedence
    /// over `m`'s, which came from the dbox file (now, or for the previous view).
    fn with_cache(
        index: &IndexView,
        cache: Option<&dyn CachedValues>,
        rec: &[u8],
        m: &MessageMeta,
        save_date: Option<i64>,
    ) -> MessageMeta {
        let uid = crate::index::records::record_uid(rec);
        let cached = cache
            .and_then(|c| c.message(index, uid))
            .unwrap_or_default();
        MessageMeta {
            key: MessageKey::Uid(uid),
            size: m.size,
            virtual_size: Self::vsize_ext(index, rec)
                .or(cached.size_virtual)
                .unwrap_or(m.virtual_size),
            received: cached.date_received.map_or(m.received, i64::from),
            saved: cached
                .date_save
                .map(i64::from)
                .or(save_date)
                .unwrap_or(m.saved),
            flags: MailFlags(rec.get(4).copied().unwrap_or(0) & 0x1f),
            keywords: Self::keyword_set(index, rec),
            guid: match cached.guid.filter(|g| !g.is_empty()) {
                Some(g) => Guid::new(&g),
                None => m.guid.clone(),
            },
            owner: m.owner,
            locator: m.locator.clone(),
            problem: m.problem.clone(),
        }
    }

    /// The virtual size the index's `vsize` record extension holds (stored plus one; 0:
    /// not known), which Dovecot takes before the cache's (index-mail.c
    /// `index_mail_get_cached_virtual_size`).
    fn vsize_ext(index: &IndexView, rec: &[u8]) -> Option<u64> {
        let (_, ext) = index.state.ext("vsize")?;
        let stored = le::u32_exact(ext.slice(rec)?)?;
        stored.checked_sub(1).map(u64::from)
    }

    /// The record's keywords: position i = keyword i of the index list, which is also
    /// the view's keyword table (however many there are).
    fn keyword_set(index: &IndexView, rec: &[u8]) -> KeywordSet {
        KeywordSet::from_positions(index.state.record_keyword_indexes(rec))
    }

    /// A message whose stored bytes cannot be read: listed (so the damage shows), with the
    /// reason, and failing with EIO when read.
    fn broken(uid: u32, rec: &[u8], locator: Locator, problem: String) -> MessageMeta {
        MessageMeta {
            key: MessageKey::Uid(uid),
            size: 0,
            virtual_size: 0,
            received: 0,
            saved: 0,
            flags: MailFlags(rec.get(4).copied().unwrap_or(0) & 0x1f),
            keywords: KeywordSet::default(),
            guid: "".into(),
            owner: super::FileOwner::default(),
            locator,
            problem: Some(problem.into()),
        }
    }

    /// Opens `m.<file_id>` in primary, then ALT storage.
    fn open_mfile(&self, file_id: u32) -> Result<Option<(File, PathBuf, fs::Metadata)>> {
        let name = format!("m.{file_id}");
        let primary = self.loc.root.join("storage").join(&name);
        match files::open_message_file(&primary) {
            Ok((f, meta)) => return Ok(Some((f, primary, meta))),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let Some(alt) = &self.loc.alt else {
            return Ok(None);
        };
        let alt = alt.join("storage").join(&name);
        match files::open_message_file(&alt) {
            Ok((f, meta)) => Ok(Some((f, alt, meta))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `m.{file_id}` as found through `map`: a kept one if `kept_ok` and the files kept
    /// were found through this same map, otherwise opened (and kept) now.
    fn mfile(
        &self,
        map: &Arc<IndexView>,
        file_id: u32,
        kept_ok: bool,
    ) -> Result<Option<Arc<MFile>>> {
        {
            let mut kept = self.mfiles.lock();
            let same_map = kept.map.as_ref().is_some_and(|m| Arc::ptr_eq(m, map));
            if !same_map {
                kept.files.clear();
                kept.map = Some(map.clone());
            }
            if kept_ok && let Some(i) = kept.files.iter().position(|(id, _)| *id == file_id) {
                let entry = kept.files.remove(i);
                let mf = entry.1.clone();
                kept.files.push(entry);
                return Ok(Some(mf));
            }
        }
        let Some((file, path, meta)) = self.open_mfile(file_id)? else {
            return Ok(None);
        };
        let len = meta.len();
        let head = read_at(&file, &path, 0, 512.min(len))?;
        let header = dbox::parse_file_header(&head).map_err(|e| Error::corrupt(&path, e))?;
        let mf = Arc::new(MFile {
            file: Arc::new(file),
            path,
            len,
            header,
        });
        let mut kept = self.mfiles.lock();
        if kept.map.as_ref().is_some_and(|m| Arc::ptr_eq(m, map)) {
            kept.files.retain(|(id, _)| *id != file_id);
            if kept.files.len() >= MFILES_KEPT {
                kept.files.remove(0);
            }
            kept.files.push((file_id, mf.clone()));
        }
        Ok(Some(mf))
    }

    /// Resolves an mdbox message to an open file and body range, re-resolving through a
    /// fresh map when the file is gone or the bytes at the offset are no longer a message.
    ///
    /// The first attempt uses the map as last read, without refreshing it (a refresh is
    /// seven system calls, two of them path walks, on every message of a `grep -r`): a
    /// location it gives is never wrong, only possibly gone. Dovecot never rewrites an
    /// `m.N` in place and never reuses a file id (a purge copies the messages it keeps into
    /// new files and unlinks the old one: `mdbox_file_purge()` in
    /// `src/lib-storage/index/dbox-multi/mdbox-purge.c`), so while `m.N` exists the bytes
    /// at an offset the map ever gave for a map_uid are that message's. A map_uid missing
    /// from the old map (newer mail), a file gone, or a header that does not match the
    /// listed size sends the open to a refreshed map, as before.
    fn open_mdbox(&self, map_uid: u32, expected_size: u64) -> Result<MessageSource> {
        let mut last_problem = String::new();
        for attempt in 0..=MDBOX_RESOLVE_ATTEMPTS {
            let seen = if attempt == 0 {
                self.map_seen.lock().clone()
            } else {
                None
            };
            let map = match seen {
                Some(map) => map,
                None if attempt == 0 => continue,
                None => {
                    let map = self.indexes.view(&self.map_paths())?.ok_or_else(|| {
                        Error::layout(self.map_paths().dir, "mdbox map index missing")
                    })?;
                    *self.map_seen.lock() = Some(map.clone());
                    map
                }
            };
            let Some((file_id, offset)) = map_location(&map, map_uid) else {
                if attempt == 0 {
                    continue;
                }
                return Err(Error::not_found(format!(
                    "map_uid {map_uid} (expunged and purged)"
                )));
            };
            // Kept files only on the first attempt: the later ones look at the disk again.
            let Some(mf) = self.mfile(&map, file_id, attempt == 0)? else {
                last_problem = format!("m.{file_id} vanished (purge or altmove)");
                continue;
            };
            let (file, path, len) = (&*mf.file, &mf.path, mf.len);
            let header = header_at(file, path, &mf.header, u64::from(offset), len, None);
            // A damaged metadata block (see the sdbox `open`).
            let header = header.and_then(|h| read_metadata(file, path, &h, len).map(|_| h));
            match header {
                Ok(found) if found.body_size == expected_size => {
                    return Ok(MessageSource::pieces(vec![Piece::File {
                        file: mf.file.clone(),
                        start: found.body_offset,
                        len: found.body_size,
                    }]));
                }
                // Compressed: the metadata's plaintext size is the size listed.
                Ok(found) if compressed_to(file, path, offset, len, expected_size) => {
                    let owned = file.try_clone().map_err(|e| Error::io(path, e))?;
                    return self.decode(owned, path, &found, expected_size);
                }
                Ok(found) => {
                    // A message with external attachments is larger than its stored
                    // body; anything else is another message (a purge moved it): look
                    // again through a fresh map.
                    let at = Some(u64::from(offset));
                    match self.with_attachments(file, path, len, at, expected_size, "") {
                        Ok(Some(src)) => return Ok(src),
                        Ok(None) => {
                            last_problem = format!(
                                "{} at offset {offset} holds {} bytes, not the {expected_size} \
                                 listed",
                                path.display(),
                                found.body_size
                            );
                        }
                        Err(e) => last_problem = e.to_string(),
                    }
                }
                Err(e) => last_problem = e.to_string(),
            }
        }
        Err(Error::layout(
            self.map_paths().dir,
            format!("map_uid {map_uid} cannot be read: {last_problem}"),
        ))
    }
}

impl DboxStore {
    /// The compressed body `found` locates in `file`, decoded to the `size` listed (the
    /// metadata's plaintext size).
    fn decode(
        &self,
        file: File,
        path: &Path,
        found: &dbox::MessageHeader,
        size: u64,
    ) -> Result<MessageSource> {
        decoded::open_stored(
            &self.ctx,
            file,
            path,
            found.body_offset,
            found.body_size,
            size,
        )
    }

    /// The message at `offset` of `file` (`len` bytes; sdbox: `None`) put together with
    /// its external attachments (`attachments.rs`), if its metadata lists any and says the
    /// message is `size` bytes; `Ok(None)` when it lists none (or another size: not this
    /// message).
    fn with_attachments(
        &self,
        file: &File,
        path: &Path,
        len: u64,
        offset: Option<u64>,
        size: u64,
        suffix: &str,
    ) -> Result<Option<MessageSource>> {
        let found = read_message(file, path, offset, len)?;
        let Some(refs) = ext_refs(&found.metadata) else {
            return Ok(None);
        };
        if presented_size(&found.metadata, found.body_size) != size {
            return Ok(None);
        }
        let header = read_message_header(file, path, offset, len)?;
        let stub = attachments::Stub {
            file: file.try_clone().map_err(|e| Error::io(path, e))?,
            path,
            body_start: header.body_offset,
            body_len: header.body_size,
            msg_size: size,
            ext_refs: refs,
            suffix,
        };
        attachments::reassemble(self.ctx.config.attachment_dir.as_deref(), stub).map(Some)
    }
}

/// Where a mailbox walk is: the on-disk name levels, the directories above (folded into
/// what is presented below them), and the directories entered.
struct Walk {
    levels: Vec<Vec<u8>>,
    chain: Vec<(FileOwner, Need)>,
    seen: HashSet<(u64, u64)>,
}

/// What one view build continues from in the next: the index it was built from and the
/// UIDs it holds as broken (retried at every build).
#[derive(Debug)]
pub(super) struct Continue {
    index: Arc<IndexView>,
    broken: Vec<u32>,
}

/// The messages of a build continued from the previous one.
enum Continued {
    /// No record added, removed or changed: the previous view's messages.
    Unchanged,
    /// The messages now, and the UIDs whose files could not be read.
    Changed(Messages, Vec<u32>),
}

/// The messages of a build: new ones, or the previous view's as they are.
enum BuiltMessages<'a> {
    New(Messages),
    OfPrevious(&'a Arc<MailboxView>),
}

/// How stored messages are read during one build.
enum StoredReader {
    Sdbox {
        /// `u.N` looked up by `stat` alone.
        stats: FileStats,
    },
    Mdbox {
        map_paths: IndexPaths,
        map: Arc<IndexView>,
        files: OpenMFiles,
        /// The mailbox index's `mdbox` extension (map_uid, save_date).
        ext: Option<crate::index::state::Ext>,
        root: PathBuf,
        /// `m.N` looked up by `stat` alone.
        stats: FileStats,
    },
}

impl StoredReader {
    /// mdbox's save date from the record's `mdbox` extension (none for sdbox); an mdbox
    /// record without a map_uid is an error for the mailbox.
    fn save_date(&self, rec: &[u8]) -> Result<Option<i64>> {
        let StoredReader::Mdbox { ext, root, .. } = self else {
            return Ok(None);
        };
        match ext.as_ref().and_then(|e| e.slice(rec)) {
            Some(b) if b.len() >= 8 => {
                let save_date = le::u32_at(b, 4).unwrap_or(0);
                Ok((save_date != 0).then_some(i64::from(save_date)))
            }
            _ => Err(Error::layout(
                root,
                format!(
                    "mdbox mailbox record for uid {} has no map_uid",
                    crate::index::records::record_uid(rec)
                ),
            )),
        }
    }
}

/// The `m.N` files opened while building one view, each opened once.
#[derive(Default)]
struct OpenMFiles(HashMap<u32, Option<(File, PathBuf, fs::Metadata)>>);

impl OpenMFiles {
    fn get(&mut self, store: &DboxStore, file_id: u32) -> Option<&(File, PathBuf, fs::Metadata)> {
        self.0
            .entry(file_id)
            .or_insert_with(|| store.open_mfile(file_id).ok().flatten())
            .as_ref()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// What was read of one stored message, for [`DboxStore::meta`].
struct Stored<'a> {
    uid: u32,
    /// Its index record.
    rec: &'a [u8],
    /// Header and metadata from its dbox file.
    found: Found,
    /// The dbox file's metadata (times, owner).
    file: &'a fs::Metadata,
    /// mdbox's save date from the `mdbox` extension, if set.
    save_date: Option<i64>,
    /// Where the bytes are (`u.N` or `map:<map_uid>`).
    locator: Locator,
    /// Where external attachments are (`--attachment-dir`), if given.
    attachment_dir: Option<&'a Path>,
}

/// Stored bodies mailfs cannot turn into the message Dovecot returns: external attachments
/// (`X`) it cannot put together (no `--attachment-dir`, references that do not parse or are
/// refused: `attachments::problem`), encrypted bodies and bodies in another form it does
/// not know (`Z` differs from the stored size but the body is no compressed stream).
/// Serving the stored bytes would not be the message. Compressed bodies are decoded
/// (`store::decoded`).
fn unsupported_encoding(
    md: &dbox::Metadata,
    body_size: u64,
    form: StoredForm,
    uid: u32,
    attachment_dir: Option<&Path>,
) -> Option<String> {
    if let Some(refs) = ext_refs(md) {
        // Checked without opening anything; the files are checked when opened.
        return attachments::problem(attachment_dir, refs, presented_size(md, body_size), uid);
    }
    match (md.physical_size, form) {
        (Some(_), StoredForm::Compressed(_)) => None,
        (Some(_), StoredForm::Encrypted) => Some(format!(
            "uid {uid}: {}",
            form.describe().unwrap_or_default()
        )),
        (Some(z), StoredForm::Plain) if z != body_size => Some(format!(
            "uid {uid}: stored in another form ({body_size} bytes on disk for a \
             {z}-byte message, neither a compressed stream nor mail_crypt's), which \
             mailfs does not decode"
        )),
        _ => None,
    }
}

/// The metadata `X` (external attachment references), when it lists any.
fn ext_refs(md: &dbox::Metadata) -> Option<&str> {
    md.ext_refs.as_deref().filter(|x| !x.is_empty())
}

/// The size of the message presented: the stored body's, or for a message with external
/// attachments the whole message's (metadata `Z`: `dbox_file_get_plaintext_size()`).
fn presented_size(md: &dbox::Metadata, body_size: u64) -> u64 {
    match ext_refs(md) {
        Some(_) => md.physical_size.unwrap_or(body_size),
        None => body_size,
    }
}

/// What was read of one stored message.
#[derive(Debug)]
struct Found {
    body_size: u64,
    metadata: dbox::Metadata,
    /// How the body is stored, looked at only when the metadata's plaintext size (`Z`)
    /// differs from the stored size (otherwise plain).
    form: StoredForm,
}

/// Reads the message at `offset` (sdbox: `None`, the first message) from an open dbox
/// file: file header, message header, and the metadata block after the body.
fn read_message(file: &File, path: &Path, offset: Option<u64>, len: u64) -> Result<Found> {
    let mh = read_message_header(file, path, offset, len)?;
    let metadata = read_metadata(file, path, &mh, len)?;
    let form = match metadata.physical_size {
        Some(z) if z != mh.body_size => decoded::stored_form(file, mh.body_offset, mh.body_size)
            .map_err(|e| Error::io(path, e))?,
        _ => StoredForm::Plain,
    };
    Ok(Found {
        body_size: mh.body_size,
        metadata,
        form,
    })
}

/// The metadata block after the body `mh` locates, in `file` of `len` bytes.
fn read_metadata(
    file: &File,
    path: &Path,
    mh: &dbox::MessageHeader,
    len: u64,
) -> Result<dbox::Metadata> {
    let meta_at = mh.metadata_offset();
    let mut want = 4096u64;
    loop {
        let take = want.min(len.saturating_sub(meta_at));
        let window = read_at(file, path, meta_at, take)?;
        match dbox::parse_metadata(&window, 0) {
            Ok(metadata) => return Ok(metadata),
            Err(_) if take == want && want < METADATA_MAX => want *= 8,
            Err(mut e) => {
                e.offset += meta_at;
                return Err(Error::corrupt(path, e));
            }
        }
    }
}

/// The message header at `offset` (sdbox: `None`) of `file` (`len` bytes, as its
/// `fstat` said when opened): where the body is. Enough for reading the body;
/// [`read_message`] adds the metadata.
fn read_message_header(
    file: &File,
    path: &Path,
    offset: Option<u64>,
    len: u64,
) -> Result<dbox::MessageHeader> {
    let head = read_at(file, path, 0, 512.min(len))?;
    let fh = dbox::parse_file_header(&head).map_err(|e| Error::corrupt(path, e))?;
    let offset = offset.unwrap_or(u64::from(fh.header_size));
    // An sdbox message header follows the file header: it is inside what was just read.
    header_at(file, path, &fh, offset, len, Some(&head))
}

/// The message header at `offset` of `file` (`len` bytes), whose file header `fh` was read
/// before; taken from `head` (the file's first bytes, if read) when it lies inside.
fn header_at(
    file: &File,
    path: &Path,
    fh: &dbox::FileHeader,
    offset: u64,
    len: u64,
    head: Option<&[u8]>,
) -> Result<dbox::MessageHeader> {
    let want = u64::from(fh.msg_header_size).min(len.saturating_sub(offset));
    let inside = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(want).ok())
        .and_then(|(from, n)| head?.get(from..from.checked_add(n)?));
    let read;
    let hdr = match inside {
        Some(hdr) => hdr,
        None => {
            read = read_at(file, path, offset, want)?;
            &read[..]
        }
    };
    dbox::parse_message_header_window(hdr, offset, len, fh.msg_header_size)
        .map_err(|e| Error::corrupt(path, e))
}

fn read_at(file: &File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Whether the mdbox message at `offset` (of `file`, `len` bytes) is a compressed body whose
/// metadata records `size` plaintext bytes (the message an open of that size is looking
/// for).
fn compressed_to(file: &File, path: &Path, offset: u32, len: u64, size: u64) -> bool {
    read_message(file, path, Some(u64::from(offset)), len).is_ok_and(|found| {
        matches!(found.form, StoredForm::Compressed(_))
            && found.metadata.physical_size == Some(size)
    })
}

/// The file `name` in the mailbox's primary directory, else in ALT: open, its path, its
/// `fstat`.
fn open_primary_or_alt(
    paths: &MailboxPaths,
    name: &str,
) -> Result<Option<(File, PathBuf, fs::Metadata)>> {
    for dir in std::iter::once(&paths.mail).chain(paths.alt.iter()) {
        let path = dir.join(name);
        match files::open_message_file(&path) {
            Ok((f, meta)) => return Ok(Some((f, path, meta))),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// (file_id, offset) of a map_uid in the mdbox map (`map` extension: u32 file_id, u32
/// offset, u32 size). A file_id of 0 is corruption and treated as absent.
fn map_location(map: &IndexView, map_uid: u32) -> Option<(u32, u32)> {
    map_entry(map, map_uid).map(|(file_id, offset, _)| (file_id, offset))
}

/// (file_id, offset, size) of a map_uid in the mdbox map; `size` is the bytes the message
/// takes in `m.N`: its dbox header, stored body and metadata block.
fn map_entry(map: &IndexView, map_uid: u32) -> Option<(u32, u32, u32)> {
    let (_, ext) = map.state.ext("map")?;
    let rec = map.state.records.get(map_uid)?;
    let b = ext.slice(&rec)?;
    let file_id = le::u32_at(b, 0)?;
    let offset = le::u32_at(b, 4)?;
    let size = le::u32_at(b, 8)?;
    (file_id != 0).then_some((file_id, offset, size))
}

impl Backend for DboxStore {
    type Paths = MailboxPaths;
    type Extra = Continue;

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
            let (dir, file) = self.loc.list_index_file();
            let hint = if files::exists_nofollow(&dir.join(format!("{file}.log"))) {
                "; the store has a mailbox list index: if it is LAYOUT=index, add :LAYOUT=index"
            } else {
                ""
            };
            return Err(Error::layout(
                self.loc.mailbox_root(),
                format!(
                    "not a {} store: no mailbox with a {} directory{hint}",
                    self.loc.format.name(),
                    self.loc.mail_dirname().unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    fn build(
        &self,
        name: &MailboxName,
        paths: &MailboxPaths,
        previous: Option<&Built<Continue>>,
    ) -> Result<Built<Continue>> {
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
        let uid = match (&meta.locator, key) {
            (Locator::Mdbox(map_uid), _) => return self.open_mdbox(*map_uid, meta.size),
            (Locator::Sdbox, MessageKey::Uid(uid)) => *uid,
            (other, _) => {
                return Err(Error::layout(
                    &self.loc.root,
                    format!("not a dbox message: {other:?}"),
                ));
            }
        };
        let name = format!("u.{uid}");
        let (file, path, fmeta) = open_primary_or_alt(paths, &name)?.ok_or_else(|| {
            Error::not_found(format!("{}: {name} (expunged)", paths.mail.display()))
        })?;
        let len = fmeta.len();
        let found = read_message_header(&file, &path, None, len)?;
        // The listing may have come from the cache alone (`dbox_indexed`): a damaged
        // metadata block is found here, as listing it from the file would have found it.
        read_metadata(&file, &path, &found, len)?;
        if found.body_size != meta.size {
            // sdbox renames each attachment to end in -<mailbox guid>-<uid>
            // (sdbox_get_attachment_path_suffix()).
            let suffix = format!("-{}-{uid}", view.guid.as_deref().unwrap_or_default());
            if let Some(src) = self.with_attachments(&file, &path, len, None, meta.size, &suffix)? {
                return Ok(src);
            }
            // Compressed: decoded to the size listed from the metadata.
            return self.decode(file, &path, &found, meta.size);
        }
        Ok(MessageSource::file_range(
            file,
            found.body_offset,
            found.body_size,
        ))
    }

    /// sdbox: the whole `u.N`. mdbox: nothing; an `m.N` holds many messages one after
    /// another in UID order, so the kernel's read-ahead within that file already has the
    /// next messages on their way (a cold `grep -r` of the bench's mdbox takes a third of
    /// the raw Maildir's time).
    fn will_need(&self, paths: &MailboxPaths, view: &MailboxView, key: &MessageKey) -> Result<()> {
        let (Some(Locator::Sdbox), MessageKey::Uid(uid)) = (view.get(key).map(|m| m.locator), key)
        else {
            return Ok(());
        };
        if let Some((file, path, _)) = open_primary_or_alt(paths, &format!("u.{uid}"))? {
            sys::will_need(&file, 0, 0).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    fn root(&self) -> &Path {
        &self.loc.root
    }

    fn context(&self) -> &Arc<StoreContext> {
        &self.ctx
    }
}
