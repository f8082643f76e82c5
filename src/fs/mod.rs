//! The FUSE presentation of a store: one directory per mailbox level, one `<uid>.eml` file
//! per message, metadata as `user.mail.*` / `user.mailbox.*` xattrs. This module and
//! `cli` are the only users of `fuser`; it knows nothing of on-disk formats.
//!
//! # Consistency contract
//! Dovecot writes the store underneath us. Every request asks the store for a current view;
//! the store revalidates its cached views by `stat` (see `store::stamp`), so a change made
//! by Dovecot is seen by the next request that reaches us. What the *kernel* caches (names,
//! negative lookups, attributes, and with a watcher whole listings) is bounded by
//! `--entry-timeout`/`--attr-timeout`, and, with a watcher, invalidated explicitly by the
//! notifier thread (`notify`) as soon as the watcher reports a change; everything presented
//! is registered with the watcher for that. Message bytes are immutable for a given
//! `(mailbox, uidvalidity, uid)`, so their page cache is kept; how opens reach us, and what
//! an open file of an expunged message reads, is `--open-mode` (see `open`).
//! `docs/semantics.md` states the guarantees.
//!
//! # Locks
//! `InodeTable::slots`, `MailFs::handles` and `MailFs::trees` are independent leaf locks:
//! none is held while taking another, doing I/O, or replying to the kernel.

pub mod errno;
pub mod inode;
pub mod naming;
pub mod notify;
pub mod open;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use log::{debug, warn};
use lru::LruCache;
use parking_lot::Mutex;

use self::errno::ErrorReporter;
use self::inode::{InodeTable, Node, ROOT_INO};
use self::naming::Naming;
use self::notify::NotifyStats;
use self::open::{Backings, OpenMode, Recent, RecentSources};
use crate::coherence::{Snapshot, Watcher};
use crate::error::{Error, Result};
use crate::store::{MailStore, MailboxEntry, MailboxName, MailboxView, MessageMeta, Presented};
use crate::store::{MessageKey, MessageSource, Target};

/// Folder trees kept built (one per scope: the whole store, or one per user).
const TREES_CACHED: NonZeroUsize = NonZeroUsize::new(64).expect("non-zero");

/// Kernel cache timeouts.
#[derive(Debug, Clone, Copy)]
pub struct CacheTimeouts {
    /// How long the kernel may trust a name -> inode answer, or a "no such name" answer.
    pub entry: Duration,
    /// How long the kernel may trust attributes.
    pub attr: Duration,
}

/// A directory's children as presented: sub-folders by presented name.
#[derive(Debug, Default)]
struct Folder {
    /// The mailbox at this level, if the store has one (selectable or not).
    entry: Option<MailboxEntry>,
    /// Presented name -> child folder name.
    children: BTreeMap<OsString, Arc<MailboxName>>,
}

/// The folder hierarchy built from one mailbox list.
#[derive(Debug)]
struct FolderTree {
    source: Arc<Vec<MailboxEntry>>,
    folders: HashMap<MailboxName, Folder>,
    /// How the mount root (and any level with no entry of its own) is presented.
    root: Presented,
}

impl FolderTree {
    fn build(source: Arc<Vec<MailboxEntry>>, root: Presented, naming: Naming) -> FolderTree {
        let mut folders: HashMap<MailboxName, Folder> = HashMap::new();
        folders.insert(MailboxName(Vec::new()), Folder::default());
        for entry in source.iter() {
            let levels = &entry.name.0;
            for depth in 1..=levels.len() {
                let name = MailboxName(levels[..depth].to_vec());
                let parent = MailboxName(levels[..depth - 1].to_vec());
                let presented = naming.folder_name(&levels[depth - 1]);
                folders
                    .entry(parent)
                    .or_default()
                    .children
                    .entry(presented)
                    .or_insert_with(|| Arc::new(name.clone()));
                folders.entry(name).or_default();
            }
            if let Some(f) = folders.get_mut(&entry.name) {
                f.entry = Some(entry.clone());
            }
        }
        FolderTree {
            source,
            folders,
            root,
        }
    }
}

/// An open directory or message.
#[derive(Debug)]
enum Handle {
    Dir(Arc<OpenDir>),
    File(Arc<OpenMessage>),
}

/// An open directory: its entries, listed at the first `readdir` (with a kernel-cached
/// listing, `opendir` is often all the kernel asks for).
#[derive(Debug)]
struct OpenDir {
    ino: u64,
    name: Arc<MailboxName>,
    listing: std::sync::OnceLock<Arc<Listing>>,
}

/// An open message: its bytes, and its attributes as they were when it was opened.
#[derive(Debug)]
struct OpenMessage {
    src: Arc<MessageSource>,
    attr: FileAttr,
    /// Handed to the kernel (passthrough): the backing id of this inode is released with it.
    passthrough: bool,
}

/// A directory's entries as listed at the first readdir: `.`, `..` and sub-folders kept,
/// messages made from the view as the kernel reads them (a listing of 100,000 messages
/// keeps one `Arc` to the view, not 100,000 entries).
#[derive(Debug)]
struct Listing {
    head: Vec<Listed>,
    messages: Option<(Arc<MailboxView>, Arc<MailboxName>)>,
}

/// One directory entry with everything readdirplus needs.
#[derive(Debug, Clone)]
struct Listed {
    name: OsString,
    node: Node,
    attr: FileAttr,
    /// A message that cannot be read: listed with no cacheable attributes, so that every
    /// stat of it reaches `getattr` and fails with EIO.
    broken: bool,
}

/// The filesystem.
#[derive(Debug)]
pub struct MailFs {
    store: Arc<dyn MailStore>,
    timeouts: CacheTimeouts,
    naming: Naming,
    inodes: Arc<InodeTable>,
    /// Keeps the kernel's caches in step with the store, when watching.
    watcher: Option<Arc<Watcher>>,
    /// Invalidations sent by the notifier thread.
    notify_stats: Arc<NotifyStats>,
    /// The settings in force, for `user.mailfs.status`.
    settings: Vec<(&'static str, String)>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// `--open-mode` as asked for; `init` settles what the kernel allows.
    open_mode: OpenMode,
    /// The kernel opens message files without asking (`OpenMode::Kernel`, kernel agreed).
    kernel_opens: bool,
    /// Passthrough still possible (cleared at the first refusal).
    passthrough: std::sync::atomic::AtomicBool,
    /// Stored files opened for reads by inode (kernel opens).
    recent: RecentSources,
    /// Backing ids of passthrough opens.
    backings: Backings,
    /// Reads served, for `user.mailfs.status`.
    reads: AtomicU64,
    /// Message opens that reached mailfs, for `user.mailfs.status`.
    opens: AtomicU64,
    /// Folder trees by scope (see `MailStore::scope_depth`), most recently used kept.
    trees: Mutex<LruCache<MailboxName, Arc<FolderTree>>>,
    errors: ErrorReporter,
}

fn to_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// The attributes of a negative entry: only `ino` 0 matters to the kernel.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// Read-only presentation of a mode: write bits cleared.
fn read_only(mode: u16) -> u16 {
    mode & !0o222 & 0o7777
}

impl MailFs {
    /// Wraps a store. With a `watcher`, everything presented is registered with it, and
    /// directory listings are cached by the kernel until the notifier invalidates them.
    pub fn new(
        store: Arc<dyn MailStore>,
        timeouts: CacheTimeouts,
        naming: Naming,
        watcher: Option<Arc<Watcher>>,
        open_mode: OpenMode,
    ) -> Result<MailFs> {
        // The root must be presentable before anything is mounted.
        store.root_attrs()?;
        Ok(MailFs {
            store,
            timeouts,
            naming,
            inodes: Arc::new(InodeTable::default()),
            watcher,
            notify_stats: Arc::new(NotifyStats::default()),
            settings: Vec::new(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            open_mode,
            kernel_opens: false,
            passthrough: std::sync::atomic::AtomicBool::new(false),
            recent: RecentSources::default(),
            backings: Backings::default(),
            reads: AtomicU64::new(0),
            opens: AtomicU64::new(0),
            trees: Mutex::new(LruCache::new(TREES_CACHED)),
            errors: ErrorReporter::default(),
        })
    }

    /// The folder tree of the scope `folder` belongs to, rebuilt when the store's list
    /// for that scope changed.
    fn tree(&self, folder: &MailboxName) -> Result<Arc<FolderTree>> {
        let depth = self.store.scope_depth().min(folder.0.len());
        let scope = MailboxName(folder.0[..depth].to_vec());
        let source = self.store.mailboxes(&scope)?;
        if let Some(w) = &self.watcher {
            w.watch(
                &Target::Scope(scope.clone()),
                Snapshot::Scope(source.clone()),
            );
        }
        if let Some(t) = self.trees.lock().get(&scope)
            && Arc::ptr_eq(&t.source, &source)
        {
            return Ok(t.clone());
        }
        let root = self.store.root_attrs()?;
        let tree = Arc::new(FolderTree::build(source, root, self.naming));
        self.trees.lock().put(scope, tree.clone());
        Ok(tree)
    }

    /// 2 + subdirectories; 1 ("unknown", as btrfs reports) for a scope's top folder (a
    /// user), whose children are not known where its parent lists it.
    fn folder_nlink(&self, folder: &Folder) -> u32 {
        match &folder.entry {
            Some(e) if e.name.0.len() == self.store.scope_depth() => 1,
            _ => 2 + folder.children.len() as u32,
        }
    }

    /// A folder's attributes; one with no entry of its own (the mount root) is presented
    /// as `root`. Permission bits are what the store presents (the directories a folder
    /// stands for folded in), write bits cleared, and nothing added.
    fn folder_attr(&self, ino: u64, folder: &Folder, root: Presented) -> FileAttr {
        let (owner, mtime) = match &folder.entry {
            Some(e) => (e.owner, e.mtime),
            None => root,
        };
        let t = to_time(mtime);
        FileAttr {
            ino: INodeNo(ino),
            size: 4096,
            blocks: 8,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: FileType::Directory,
            perm: read_only(owner.mode),
            nlink: self.folder_nlink(folder),
            uid: owner.uid,
            gid: owner.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn message_attr(ino: u64, meta: &MessageMeta) -> FileAttr {
        let received = to_time(meta.received);
        FileAttr {
            ino: INodeNo(ino),
            size: meta.size,
            blocks: meta.size.div_ceil(512),
            atime: received,
            mtime: received,
            ctime: to_time(meta.saved),
            crtime: received,
            kind: FileType::RegularFile,
            perm: read_only(meta.owner.mode),
            nlink: 1,
            uid: meta.owner.uid,
            gid: meta.owner.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn message_node(view: &MailboxView, mailbox: &Arc<MailboxName>, key: MessageKey) -> Node {
        Node::Message {
            mailbox: mailbox.clone(),
            uid_validity: view.uid_validity,
            key,
        }
    }

    /// The view of a selectable folder, or `None` for a plain hierarchy level.
    fn folder_view(&self, folder: &Folder) -> Result<Option<Arc<MailboxView>>> {
        match &folder.entry {
            Some(e) if e.selectable => Ok(Some(self.view(&e.name)?)),
            _ => Ok(None),
        }
    }

    /// The store's current view of `mailbox`, registered with the watcher.
    fn view(&self, mailbox: &MailboxName) -> Result<Arc<MailboxView>> {
        let view = self.store.view(mailbox)?;
        if let Some(w) = &self.watcher {
            w.watch(
                &Target::Mailbox(mailbox.clone()),
                Snapshot::Mailbox(view.clone()),
            );
        }
        Ok(view)
    }

    /// Records a setting for the status report (`user.mailfs.status` on the root).
    pub fn describe(&mut self, key: &'static str, value: impl Into<String>) {
        self.settings.push((key, value.into()));
    }

    /// The counters the notifier thread updates.
    pub fn notify_stats(&self) -> Arc<NotifyStats> {
        self.notify_stats.clone()
    }

    /// `user.mailfs.status`: settings in force and counters, one `key: value` per line.
    fn status(&self) -> String {
        use std::fmt::Write as _;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        for (k, v) in &self.settings {
            let _ = writeln!(out, "{k}: {v}");
        }
        let _ = writeln!(
            out,
            "entry_timeout_s: {}\nattr_timeout_s: {}",
            self.timeouts.entry.as_secs_f64(),
            self.timeouts.attr.as_secs_f64()
        );
        let _ = writeln!(out, "portable_names: {}", self.naming.portable);
        let _ = writeln!(
            out,
            "open_mode: {}\nkernel_opens: {}\npassthrough: {}\nopens_served: {}\nreads_served: {}",
            self.open_mode.as_str(),
            self.kernel_opens,
            self.passthrough.load(Ordering::Relaxed),
            load(&self.opens),
            load(&self.reads)
        );
        let ctx = self.store.context();
        let stats = &ctx.stats;
        let _ = writeln!(
            out,
            "lock_method: {}\nnfs_cache_flush: {}",
            ctx.config.lock_method.name(),
            ctx.config.nfs_cache_flush
        );
        let _ = writeln!(
            out,
            "view_cache_hits: {}\nview_cache_misses: {}\nlist_cache_hits: {}\nlist_cache_misses: {}",
            load(&stats.view_hits),
            load(&stats.view_builds),
            load(&stats.list_hits),
            load(&stats.list_builds)
        );
        if let Some(w) = &self.watcher {
            let st = w.stats();
            let polls = load(&st.polls);
            let _ = writeln!(
                out,
                "watched_targets: {}\nrefreshes: {}\nchanges_seen: {}\npolls: {polls}\n\
                 poll_avg_ms: {:.3}\nwatch_errors: {}\ninotify_overflows: {}",
                w.watched(),
                load(&st.checks),
                load(&st.changes),
                if polls == 0 {
                    0.0
                } else {
                    load(&st.poll_nanos) as f64 / polls as f64 / 1e6
                },
                load(&st.errors),
                load(&st.overflows)
            );
        }
        let _ = writeln!(
            out,
            "invalidations_sent: {}\ninvalidations_failed: {}",
            load(&self.notify_stats.sent),
            load(&self.notify_stats.failed)
        );
        let _ = writeln!(
            out,
            "clock_skew_max_ms: {}\nwriter_locks_seen: {}\neio_returned: {}\ninodes_held: {}",
            stats.max_skew_ms.load(Ordering::Relaxed),
            load(&stats.locks_seen),
            self.errors.eio_count(),
            self.inodes.len()
        );
        out
    }

    /// The inode table, shared with the notifier thread.
    pub fn inodes(&self) -> Arc<InodeTable> {
        self.inodes.clone()
    }

    /// Resolves `name` inside folder `parent` (without counting a lookup).
    fn resolve(&self, parent: &MailboxName, name: &OsStr) -> Result<(Node, FileAttr)> {
        let tree = self.tree(parent)?;
        let folder = tree
            .folders
            .get(parent)
            .ok_or_else(|| Error::not_found(format!("folder {parent}")))?;
        if let Some(child) = folder.children.get(name) {
            let node = Node::Folder(child.clone());
            let sub = tree
                .folders
                .get(child)
                .ok_or_else(|| Error::not_found("folder"))?;
            return Ok((
                node.clone(),
                self.folder_attr(self.inodes.peek_ino(&node), sub, tree.root),
            ));
        }
        let key = naming::parse_message_name(name)
            .ok_or_else(|| Error::not_found(format!("{parent}/{}", name.to_string_lossy())))?;
        let view = self
            .folder_view(folder)?
            .ok_or_else(|| Error::not_found(format!("{parent}/{}", name.to_string_lossy())))?;
        let meta = view
            .get(&key)
            .ok_or_else(|| Error::not_found(format!("{parent}/{}", name.to_string_lossy())))?;
        if let Some(problem) = &meta.problem {
            return Err(Error::Unreadable {
                what: problem.to_string(),
            });
        }
        let node = Self::message_node(&view, &Arc::new(parent.clone()), key);
        let attr = Self::message_attr(self.inodes.peek_ino(&node), meta);
        Ok((node, attr))
    }

    /// Current attributes of a node, or not-found if it no longer exists.
    fn attr_of(&self, ino: u64, node: &Node) -> Result<FileAttr> {
        match node {
            Node::Folder(name) => {
                let tree = self.tree(name)?;
                let folder = tree
                    .folders
                    .get(name)
                    .ok_or_else(|| Error::not_found(format!("folder {name}")))?;
                Ok(self.folder_attr(ino, folder, tree.root))
            }
            Node::Message {
                mailbox,
                uid_validity,
                key,
            } => self.with_message(mailbox, *uid_validity, key, |_, meta| {
                Self::message_attr(ino, meta)
            }),
        }
    }

    /// Runs `f` on the current view and metadata of a message node; not-found after an
    /// expunge or a new UIDVALIDITY.
    fn with_message<T>(
        &self,
        mailbox: &MailboxName,
        uid_validity: u32,
        key: &MessageKey,
        f: impl FnOnce(&Arc<MailboxView>, &MessageMeta) -> T,
    ) -> Result<T> {
        let view = self.view(mailbox)?;
        if view.uid_validity != uid_validity {
            return Err(Error::not_found(format!("{mailbox}: UIDVALIDITY changed")));
        }
        let meta = view
            .get(key)
            .ok_or_else(|| Error::not_found(format!("{mailbox}: message {key:?}")))?;
        if let Some(problem) = &meta.problem {
            return Err(Error::Unreadable {
                what: problem.to_string(),
            });
        }
        Ok(f(&view, meta))
    }

    /// The stored file of message node `ino`, for a read that comes without a handle
    /// (kernel opens): kept from an earlier read, or opened now from the current view.
    /// Not-found once the message is gone and no earlier read kept its file.
    fn source_by_inode(&self, ino: u64) -> Result<Arc<MessageSource>> {
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
            (view.clone(), Self::message_attr(ino, meta))
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

    /// The entries of a folder, `.` and `..` first.
    fn list(&self, ino: u64, name: &Arc<MailboxName>) -> Result<Listing> {
        let tree = self.tree(name)?;
        let folder = tree
            .folders
            .get(name)
            .ok_or_else(|| Error::not_found(format!("folder {name}")))?;
        let mut out = Vec::new();
        let self_attr = self.folder_attr(ino, folder, tree.root);
        out.push(Listed {
            name: OsString::from("."),
            node: Node::Folder(name.clone()),
            attr: self_attr,
            broken: false,
        });
        let parent_name = Arc::new(MailboxName(
            name.0[..name.0.len().saturating_sub(1)].to_vec(),
        ));
        let parent_node = Node::Folder(parent_name.clone());
        let parent_attr = match tree.folders.get(&parent_name) {
            Some(p) => self.folder_attr(self.inodes.peek_ino(&parent_node), p, tree.root),
            None => self_attr,
        };
        out.push(Listed {
            name: OsString::from(".."),
            node: parent_node,
            attr: parent_attr,
            broken: false,
        });
        for (presented, child) in &folder.children {
            let node = Node::Folder(child.clone());
            if let Some(sub) = tree.folders.get(child) {
                let attr = self.folder_attr(self.inodes.peek_ino(&node), sub, tree.root);
                out.push(Listed {
                    name: presented.clone(),
                    node,
                    attr,
                    broken: false,
                });
            }
        }
        let messages = self.folder_view(folder)?.map(|view| (view, name.clone()));
        Ok(Listing {
            head: out,
            messages,
        })
    }

    /// The entries of `listing` from position `start` on, with their positions.
    fn entries_from<'a>(
        &'a self,
        listing: &'a Listing,
        start: usize,
    ) -> impl Iterator<Item = (usize, Listed)> + 'a {
        let head = listing.head.len();
        let heads = listing.head.iter().cloned().enumerate().skip(start);
        let messages = listing.messages.iter().flat_map(move |(view, name)| {
            view.all_from(start.saturating_sub(head))
                .enumerate()
                .map(move |(i, meta)| {
                    let node = Self::message_node(view, name, meta.key.clone());
                    let attr = Self::message_attr(self.inodes.peek_ino(&node), meta);
                    let listed = Listed {
                        name: self.naming.message_name(&meta.key),
                        node,
                        attr,
                        broken: meta.problem.is_some(),
                    };
                    (head + start.saturating_sub(head) + i, listed)
                })
        });
        heads.chain(messages)
    }

    /// The xattrs of a node, in listing order.
    fn xattrs(&self, node: &Node) -> Result<Vec<(&'static str, Vec<u8>)>> {
        match node {
            Node::Folder(name) => {
                let tree = self.tree(name)?;
                let folder = tree
                    .folders
                    .get(name)
                    .ok_or_else(|| Error::not_found(format!("folder {name}")))?;
                let mut out = Vec::new();
                if name.0.is_empty() {
                    out.push(("user.mailfs.status", self.status().into_bytes()));
                }
                // The mailbox's own name, without the scope (user) levels above it.
                let depth = self.store.scope_depth();
                if name.0.len() > depth {
                    let own = MailboxName(name.0[depth..].to_vec());
                    out.push(("user.mailbox.name", own.to_string().into_bytes()));
                }
                if let Some(view) = self.folder_view(folder)? {
                    if let Some(guid) = &view.guid {
                        out.push(("user.mailbox.guid", guid.clone().into_bytes()));
                    }
                    if view.uid_validity != 0 {
                        out.push((
                            "user.mailbox.uidvalidity",
                            view.uid_validity.to_string().into_bytes(),
                        ));
                        out.push((
                            "user.mailbox.uidnext",
                            view.uid_next.to_string().into_bytes(),
                        ));
                    }
                }
                Ok(out)
            }
            Node::Message {
                mailbox,
                uid_validity,
                key,
            } => self.with_message(mailbox, *uid_validity, key, |view, meta| {
                let mut out = Vec::with_capacity(6);
                if let MessageKey::Uid(uid) = key {
                    out.push(("user.mail.uid", uid.to_string().into_bytes()));
                }
                out.push(("user.mail.guid", meta.guid.as_bytes().to_vec()));
                out.push(("user.mail.flags", view.flags_string(meta).into_bytes()));
                out.push(("user.mail.received", meta.received.to_string().into_bytes()));
                out.push(("user.mail.saved", meta.saved.to_string().into_bytes()));
                out.push((
                    "user.mail.vsize",
                    meta.virtual_size.to_string().into_bytes(),
                ));
                out
            }),
        }
    }

    fn node(&self, ino: INodeNo) -> Option<Node> {
        self.inodes.get(ino.0)
    }

    /// The listing of an open directory, made at its first use.
    fn dir_listing(&self, fh: FileHandle) -> std::result::Result<Arc<Listing>, fuser::Errno> {
        let Some(Handle::Dir(dir)) = self.handles.lock().get(&fh.0).map(clone_handle) else {
            return Err(fuser::Errno::EBADF);
        };
        if let Some(l) = dir.listing.get() {
            return Ok(l.clone());
        }
        match self.list(dir.ino, &dir.name) {
            Ok(l) => Ok(dir.listing.get_or_init(|| Arc::new(l)).clone()),
            Err(e) => Err(self.errors.errno("readdir", &e)),
        }
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, h);
        fh
    }
}

/// Replies to a getxattr/listxattr size probe or data request.
fn reply_xattr_bytes(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(fuser::Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for MailFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            if let Err(missing) = config.add_capabilities(cap) {
                debug!("kernel lacks capability {missing:?}");
            }
        }
        let _ = config.set_max_readahead(1024 * 1024);
        let caps = config.capabilities();
        match self.open_mode {
            OpenMode::Kernel if caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT) => {
                self.kernel_opens = true;
            }
            OpenMode::Kernel => {
                warn!("the kernel cannot open files without asking; every open reaches mailfs");
            }
            OpenMode::Held => {}
            OpenMode::Passthrough => {
                let agreed = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                    && config.set_max_stack_depth(1).is_ok();
                if agreed {
                    self.passthrough.store(true, Ordering::Relaxed);
                } else {
                    warn!("the kernel offers no FUSE passthrough (Linux 6.9+); using held opens");
                }
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(Node::Folder(parent_name)) = self.node(parent) else {
            reply.error(fuser::Errno::ENOTDIR);
            return;
        };
        match self.resolve(&parent_name, name) {
            Ok((node, mut attr)) => {
                attr.ino = INodeNo(self.inodes.remember(&node));
                reply.entry(&self.timeouts.entry, &attr, Generation(0));
            }
            // "No such name" is cached like a name (a negative dentry, inode 0) for the
            // entry timeout; the notifier drops it when the name appears.
            Err(e) if e.is_not_found() && !self.timeouts.entry.is_zero() => {
                reply.entry(&self.timeouts.entry, &negative_attr(), Generation(0));
            }
            Err(e) => reply.error(self.errors.errno("lookup", &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        match self.inodes.forget(ino.0, nlookup) {
            // The kernel holds nothing below a folder it forgot: stop watching it.
            Some(Node::Folder(name)) => {
                if let Some(w) = &self.watcher {
                    w.unwatch(&Target::Mailbox((*name).clone()));
                    w.unwatch(&Target::Scope((*name).clone()));
                }
            }
            Some(Node::Message { .. }) => self.recent.remove(ino.0),
            None => {}
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // An open message answers from what was opened: it stays readable (and sized)
        // after Dovecot expunges it, and the kernel asks with the handle before reading
        // past the size it knows.
        if let Some(fh) = fh
            && let Some(Handle::File(open)) = self.handles.lock().get(&fh.0)
        {
            reply.attr(&self.timeouts.attr, &open.attr);
            return;
        }
        let Some(node) = self.node(ino) else {
            reply.error(fuser::Errno::ENOENT);
            return;
        };
        match self.attr_of(ino.0, &node) {
            Ok(attr) => reply.attr(&self.timeouts.attr, &attr),
            // A message expunged while a file the kernel opened by itself still reads it
            // (kernel opens carry no handle): the attributes it was opened with.
            Err(e) if e.is_not_found() => match self.recent.get(ino.0, &node) {
                Some(recent) => reply.attr(&self.timeouts.attr, &recent.attr),
                None => reply.error(fuser::Errno::ENOENT),
            },
            Err(e) => reply.error(self.errors.errno("getattr", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.opens.fetch_add(1, Ordering::Relaxed);
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            reply.error(fuser::Errno::EROFS);
            return;
        }
        let Some(Node::Message {
            mailbox,
            uid_validity,
            key,
        }) = self.node(ino)
        else {
            reply.error(fuser::Errno::EISDIR);
            return;
        };
        if self.kernel_opens {
            // The first open of the mount: answer it as an open would (the message is
            // there), then ENOSYS, after which the kernel opens files by itself.
            match self.with_message(&mailbox, uid_validity, &key, |_, _| ()) {
                Ok(()) => reply.error(fuser::Errno::ENOSYS),
                Err(e) => reply.error(self.errors.errno("open", &e)),
            }
            return;
        }
        let opened = self
            .with_message(&mailbox, uid_validity, &key, |view, meta| {
                (view.clone(), Self::message_attr(ino.0, meta))
            })
            .and_then(|(view, attr)| Ok((self.store.open(&mailbox, &view, &key)?, attr)));
        let (src, attr) = match opened {
            Ok((src, attr)) => (Arc::new(src), attr),
            Err(e) => {
                reply.error(self.errors.errno("open", &e));
                return;
            }
        };
        if self.passthrough.load(Ordering::Relaxed)
            && let Some(file) = src.whole_file()
        {
            match self.backings.acquire(ino.0, || reply.open_backing(file)) {
                Ok(id) => {
                    let fh = self.new_handle(Handle::File(Arc::new(OpenMessage {
                        src,
                        attr,
                        passthrough: true,
                    })));
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &id);
                    return;
                }
                Err(e) => {
                    warn!("FUSE passthrough refused ({e}); using held opens from now on");
                    self.passthrough.store(false, Ordering::Relaxed);
                }
            }
        }
        let fh = self.new_handle(Handle::File(Arc::new(OpenMessage {
            src,
            attr,
            passthrough: false,
        })));
        // Bytes of (mailbox, uidvalidity, uid) never change: keep the page cache.
        // Nothing is ever written, so close() needs no FLUSH round trip.
        reply.opened(
            FileHandle(fh),
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        // fh 0: a file the kernel opened by itself (kernel opens); handles start at 1.
        let src = if fh.0 == 0 {
            match self.source_by_inode(ino.0) {
                Ok(src) => src,
                Err(e) if e.is_not_found() => {
                    debug!("read of inode {}: {e}; returning ESTALE", ino.0);
                    reply.error(fuser::Errno::ESTALE);
                    return;
                }
                Err(e) => {
                    reply.error(self.errors.errno("read", &e));
                    return;
                }
            }
        } else {
            match self.handles.lock().get(&fh.0) {
                Some(Handle::File(open)) => open.src.clone(),
                _ => {
                    reply.error(fuser::Errno::EBADF);
                    return;
                }
            }
        };
        let mut reply = Some(reply);
        let read = open::read_message(&src, offset, size, |bytes| {
            if let Some(r) = reply.take() {
                r.data(bytes);
            }
        });
        if let Err(e) = read
            && let Some(r) = reply.take()
        {
            let e = Error::Unreadable {
                what: format!("message at inode {} (fh {}): {e}", ino.0, fh.0),
            };
            r.error(self.errors.errno("read", &e));
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to flush. ENOSYS tells the kernel so
        // for good: it sends no FLUSH at close from now on (files it opens by itself carry
        // no FOPEN_NOFLUSH).
        reply.error(fuser::Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let removed = self.handles.lock().remove(&fh.0);
        if let Some(Handle::File(open)) = removed
            && open.passthrough
        {
            self.backings.release(ino.0);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(Node::Folder(name)) = self.node(ino) else {
            reply.error(fuser::Errno::ENOTDIR);
            return;
        };
        // Check now that the folder can be listed (errors belong to opendir); list at the
        // first readdir.
        let checked = self.tree(&name).and_then(|tree| {
            let folder = tree
                .folders
                .get(&*name)
                .ok_or_else(|| Error::not_found(format!("folder {name}")))?;
            self.folder_view(folder).map(|_| ())
        });
        match checked {
            Ok(()) => {
                let fh = self.new_handle(Handle::Dir(Arc::new(OpenDir {
                    ino: ino.0,
                    name,
                    listing: std::sync::OnceLock::new(),
                })));
                // With a watcher the kernel may keep the listing: the notifier drops it
                // (inval_inode) whenever it changes.
                let flags = if self.watcher.is_some() {
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), flags);
            }
            Err(e) => reply.error(self.errors.errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = match self.dir_listing(fh) {
            Ok(l) => l,
            Err(errno) => {
                reply.error(errno);
                return;
            }
        };
        for (i, e) in self.entries_from(&listing, offset as usize) {
            if reply.add(e.attr.ino, (i + 1) as u64, e.attr.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listing = match self.dir_listing(fh) {
            Ok(l) => l,
            Err(errno) => {
                reply.error(errno);
                return;
            }
        };
        for (i, e) in self.entries_from(&listing, offset as usize) {
            let is_dot = e.name == "." || e.name == "..";
            let ttl = if is_dot || e.broken {
                Duration::ZERO
            } else {
                self.timeouts.entry
            };
            if reply.add(
                e.attr.ino,
                (i + 1) as u64,
                &e.name,
                &ttl,
                &e.attr,
                Generation(0),
            ) {
                break;
            }
            // The kernel counts a lookup for every entry it received except "." and "..".
            if !is_dot {
                let ino = self.inodes.remember(&e.node);
                debug_assert_eq!(
                    ino, e.attr.ino.0,
                    "inode changed between opendir and readdir"
                );
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.store.local_root().map(crate::sys::statvfs);
        let Some(Ok(st)) = st else {
            reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
            return;
        };
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            255,
            st.f_frsize as u32,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(node) = self.node(ino) else {
            reply.error(fuser::Errno::ENOENT);
            return;
        };
        // Only the user.* namespace exists here. EOPNOTSUPP (not ENODATA) for the others
        // lets tools cache "unsupported on this device": ls -l then asks for
        // security.selinux and system.posix_acl_access once per mount, not once per file.
        if !name.as_bytes().starts_with(b"user.") {
            reply.error(fuser::Errno::EOPNOTSUPP);
            return;
        }
        match self.xattrs(&node) {
            Ok(attrs) => match attrs.iter().find(|(n, _)| OsStr::new(n) == name) {
                Some((_, value)) => reply_xattr_bytes(reply, size, value),
                None => reply.error(fuser::Errno::ENODATA),
            },
            Err(e) => reply.error(self.errors.errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(node) = self.node(ino) else {
            reply.error(fuser::Errno::ENOENT);
            return;
        };
        match self.xattrs(&node) {
            Ok(attrs) => {
                let mut names = Vec::new();
                for (n, _) in attrs {
                    names.extend_from_slice(n.as_bytes());
                    names.push(0);
                }
                reply_xattr_bytes(reply, size, &names);
            }
            Err(e) => reply.error(self.errors.errno("listxattr", &e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if mask.contains(fuser::AccessFlags::W_OK) {
            reply.error(fuser::Errno::EROFS);
        } else if self.node(ino).is_some() || ino.0 == ROOT_INO {
            reply.ok();
        } else {
            reply.error(fuser::Errno::ENOENT);
        }
    }

    // Everything below answers at once and logs nothing: any user who can open a file can
    // send these requests in a loop (Python's open() sends an ioctl for isatty()), so a
    // log line each would let them fill the disk. fuser's defaults log a warning each.

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctl is meaningful on a message or a mailbox: "not a terminal", as a
        // regular file answers TCGETS.
        reply.error(fuser::Errno::ENOTTY);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written: already on disk.
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        reply.error(fuser::Errno::EINVAL);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        // ENOSYS: the kernel then treats files as always ready, and stops asking.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        // ENOSYS: the kernel answers SEEK_DATA/SEEK_HOLE itself (no holes), for good.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn bmap(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _blocksize: u32,
        _idx: u64,
        reply: fuser::ReplyBmap,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: fuser::ReplyLock,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: fuser::ReplyWrite,
    ) {
        // ENOSYS: the kernel falls back to read + write (and remembers).
        reply.error(fuser::Errno::ENOSYS);
    }

    // Changes: the mount is read-only (the kernel refuses most of these itself).

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(fuser::Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(fuser::Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(fuser::Errno::EROFS);
    }
}

fn clone_handle(h: &Handle) -> Handle {
    match h {
        Handle::Dir(d) => Handle::Dir(d.clone()),
        Handle::File(f) => Handle::File(f.clone()),
    }
}
