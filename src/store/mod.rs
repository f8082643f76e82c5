//! The store layer: one engine per storage format, presenting mailboxes and immutable
//! snapshots of their messages. It knows the on-disk formats (through `crate::format`) and
//! nothing of FUSE, inodes or kernel caches.
//!
//! Invariants every backend keeps:
//! - Read-only: no backend creates, renames, locks, truncates or deletes anything.
//! - A [`MailboxView`] is immutable. A refresh builds a new one; readers holding the old
//!   `Arc` keep a consistent (possibly stale) picture.
//! - A message is named by `(mailbox, uid_validity, uid)`. The bytes of that triple never
//!   change (IMAP guarantees it), so callers may cache them forever.
//! - A message Dovecot has not yet given a UID is a [`MessageKey::Pending`]: visible, but
//!   never given a UID by mailfs.

pub mod access;
pub mod attachments;
pub mod cache;
mod cached;
pub mod context;
pub mod dbox;
mod dbox_indexed;
pub mod decoded;
pub mod feed;
mod files;
mod guard;
pub mod guid;
pub mod imap;
pub mod journal;
pub mod keywords;
mod listindex;
pub mod locks;
pub mod maildir;
pub mod mbox;
#[cfg(test)]
pub mod memory;
pub mod messages;
mod packed;
mod parallel;
mod private_flags;
mod shaped;
pub mod source;
mod stamp;
pub mod users;
pub mod writer;

pub use context::{StoreConfig, StoreContext, StoreStats};
pub use feed::{ChangeNotifier, Feed, Pushed};
pub use guid::Guid;
pub use keywords::KeywordSet;
pub use messages::Messages;
pub use source::{MessageSource, Piece, ReadAt};
pub use writer::{FlagChange, MailWriter, ReadOnly};

use std::fmt;
use std::sync::Arc;

use crate::error::Result;
use crate::format::MailFlags;
use crate::location::{Format, Location, Spec};

/// A mailbox's name: its hierarchy levels in UTF-8 (never modified UTF-7), e.g.
/// `["Work", "Sub"]`. INBOX is `["INBOX"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName(pub Vec<String>);

impl MailboxName {
    /// Parses a '/'-separated name as users type it (`Work/Sub`).
    pub fn parse(s: &str) -> MailboxName {
        MailboxName(
            s.split('/')
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// True for INBOX (case-insensitive, as IMAP treats it).
    pub fn is_inbox(&self) -> bool {
        self.0.len() == 1 && self.0[0].eq_ignore_ascii_case("INBOX")
    }
}

impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// One mailbox found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    /// Its name.
    pub name: MailboxName,
    /// False for a hierarchy level that holds no messages of its own (Dovecot's
    /// `\NoSelect`, or a `LAYOUT=fs` directory without `cur/`).
    pub selectable: bool,
    /// Owner and mode of its directory (the root's for levels with no directory).
    pub owner: FileOwner,
    /// Modification time of its directory, unix seconds.
    pub mtime: i64,
}

/// How a message is addressed inside a mailbox view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKey {
    /// A message with a Dovecot-assigned UID.
    Uid(u32),
    /// A file Dovecot has not given a UID yet, by its base file name (the part before
    /// the info separator). Dovecot will assign the UID at its next sync.
    Pending(Arc<[u8]>),
}

/// What the store knows about one message. Kept small: a view holds one per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// UID or pending base name.
    pub key: MessageKey,
    /// Size of the stored bytes (what `cat` returns).
    pub size: u64,
    /// Size with every bare LF counted as CRLF (IMAP RFC822.SIZE).
    pub virtual_size: u64,
    /// Received date (INTERNALDATE), unix seconds.
    pub received: i64,
    /// Save date, unix seconds.
    pub saved: i64,
    /// System flags.
    pub flags: MailFlags,
    /// Keywords, as positions in the view's keyword table.
    pub keywords: KeywordSet,
    /// Message GUID as Dovecot reports it (its text: [`MessageMeta::guid_text`]).
    pub guid: Guid,
    /// Owner, group and permission bits of the message file.
    pub owner: FileOwner,
    /// Where the stored bytes are, in the backend's terms.
    pub locator: Locator,
    /// Why the message cannot be read (its file is missing, truncated or corrupt), if so.
    /// Such a message is still listed, so that the damage is visible; reading it fails.
    /// (A thin pointer: a view holds one per message, and almost all are `None`.)
    pub problem: Option<Arc<String>>,
}

impl MessageMeta {
    /// The GUID as Dovecot reports it (`doveadm fetch guid`).
    pub fn guid_text(&self) -> std::borrow::Cow<'_, str> {
        self.guid.resolve(&self.locator)
    }
}

/// Owner, group and mode bits of a stored file, presented on the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileOwner {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u16,
}

/// Owner and mode a directory is presented with (with the directories it stands for
/// folded in: see [`access`]), and its mtime (unix seconds).
pub type Presented = (FileOwner, i64);

/// Which view value a [`MailboxView`] is: a number drawn afresh for every view made and
/// for every clone, so two views with the same id are one value (never two equal ones).
/// What keeps a view's digest instead of the view knows the view by it.
#[derive(Debug, PartialEq, Eq)]
pub struct ViewId(u64);

impl ViewId {
    /// A number no other view has had in this process.
    pub fn new() -> ViewId {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        ViewId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// The number.
    pub fn get(&self) -> u64 {
        self.0
    }
}

impl Default for ViewId {
    fn default() -> ViewId {
        ViewId::new()
    }
}

/// A clone is another value: it gets its own id.
impl Clone for ViewId {
    fn clone(&self) -> ViewId {
        ViewId::new()
    }
}

/// An immutable snapshot of one mailbox.
#[derive(Debug, Clone)]
pub struct MailboxView {
    /// Which view value this is (see [`ViewId`]).
    pub id: ViewId,
    /// The mailbox.
    pub name: MailboxName,
    /// UIDVALIDITY; 0 when Dovecot has never synced the mailbox.
    pub uid_validity: u32,
    /// The next UID Dovecot will assign; 0 when unknown.
    pub uid_next: u32,
    /// Mailbox GUID (32 hex digits), when known.
    pub guid: Option<String>,
    /// Messages with UIDs, sorted by UID (shared with the views built before and after).
    pub messages: Messages,
    /// Files without UIDs yet, sorted by base name.
    pub pending: Vec<MessageMeta>,
    /// Keyword names by index (bit i of [`MessageMeta::keywords`]).
    pub keyword_names: Arc<Vec<String>>,
    /// Owner and mode of the mailbox directory.
    pub owner: FileOwner,
    /// Modification time of the mailbox (newest of its message directories), unix seconds.
    pub mtime: i64,
}

impl MailboxView {
    /// Finds a message by key.
    pub fn get(&self, key: &MessageKey) -> Option<MessageMeta> {
        match key {
            MessageKey::Uid(uid) => self.messages.get(*uid),
            MessageKey::Pending(base) => self
                .pending
                .binary_search_by(|m| match &m.key {
                    MessageKey::Pending(b) => b.as_ref().cmp(base.as_ref()),
                    MessageKey::Uid(_) => std::cmp::Ordering::Less,
                })
                .ok()
                .map(|i| self.pending[i].clone()),
        }
    }

    /// All messages from position `pos` of [`MailboxView::all`] on.
    pub fn all_from(&self, pos: usize) -> impl Iterator<Item = MessageMeta> + '_ {
        let n = self.messages.len();
        self.messages
            .iter_from(pos.min(n))
            .chain(self.pending.iter().skip(pos.saturating_sub(n)).cloned())
    }

    /// All messages: UID ones first, then pending ones.
    pub fn all(&self) -> impl Iterator<Item = MessageMeta> + '_ {
        self.messages.iter().chain(self.pending.iter().cloned())
    }

    /// The flags in doveadm's spelling and order: system flags, then keywords in keyword
    /// index order, separated by single spaces. Never contains `\Recent`.
    pub fn flags_string(&self, meta: &MessageMeta) -> String {
        let mut out: Vec<&str> = meta.flags.names().collect();
        for i in meta.keywords.iter() {
            if let Some(name) = self.keyword_names.get(i) {
                out.push(name);
            }
        }
        out.join(" ")
    }
}

/// Finds messages of a previous view by UID (for rebuilding a view from its predecessor).
#[derive(Debug)]
pub(crate) struct UidCursor<'a> {
    messages: Option<&'a Messages>,
}

impl<'a> UidCursor<'a> {
    /// A cursor over `view`'s UID messages (none for `None`).
    pub(crate) fn new(view: Option<&'a MailboxView>) -> Self {
        UidCursor {
            messages: view.map(|v| &v.messages),
        }
    }

    /// The message with `uid`.
    pub(crate) fn find(&self, uid: u32) -> Option<MessageMeta> {
        self.messages?.get(uid)
    }
}

/// Where a message's stored bytes are, in its backend's terms. Typed, so that no backend
/// parses another's bytes: each constructs and reads only its own variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// Maildir: the file below the mailbox directory, `cur/<name>` or `new/<name>` (the
    /// name changes with the flags; the base before `:` does not).
    Maildir(Box<[u8]>),
    /// sdbox: `u.<uid>` in the mailbox's primary or ALT directory.
    Sdbox,
    /// mdbox: the message's map UID, resolved through the map index to `m.<file>` and an
    /// offset (in primary or ALT storage).
    Mdbox(u32),
    /// mbox: the message's header offset (after its From_ line) and its end, in the
    /// mailbox file.
    Mbox { header: u64, end: u64 },
    /// Not a local file: a remote backend addresses the message by its UID alone.
    Remote,
}

impl Locator {
    /// The Maildir file name (`cur/...`, `new/...`), for a Maildir locator.
    pub fn maildir(&self) -> Option<&[u8]> {
        match self {
            Locator::Maildir(name) => Some(name),
            _ => None,
        }
    }
}

/// A storage engine.
///
/// Scopes: a store may list its mailboxes in independent parts, selected by the first
/// [`MailStore::scope_depth`] levels of a name (a multi-user tree has one scope per user, so
/// that listing users never opens their stores). A single store has one scope, the root.
pub trait MailStore: Send + Sync + fmt::Debug {
    /// How many leading name levels select a scope (0: the whole store is one).
    fn scope_depth(&self) -> usize {
        0
    }
    /// The mailboxes of one scope, sorted by name, including non-selectable hierarchy
    /// levels. `scope` is cut to [`MailStore::scope_depth`] levels; a shorter one lists the
    /// levels above the scopes (e.g. the users). The same `Arc` comes back while nothing
    /// changed.
    fn mailboxes(&self, scope: &MailboxName) -> Result<Arc<Vec<MailboxEntry>>>;
    /// A current snapshot of one mailbox (cached while the store is unchanged).
    fn view(&self, mailbox: &MailboxName) -> Result<Arc<MailboxView>>;
    /// Opens a message of `view`, the view [`MailStore::view`] gave for `mailbox`.
    fn open(
        &self,
        mailbox: &MailboxName,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource>;
    /// Advice that message `key` of `view` will be read soon: a store on a local disk
    /// starts reading its bytes from the disk without waiting (`posix_fadvise`
    /// `WILLNEED`), so that several messages are on their way at once where reading them
    /// one after another would wait for each. Nothing by default; an error only means the
    /// advice was not taken.
    fn will_need(
        &self,
        _mailbox: &MailboxName,
        _view: &MailboxView,
        _key: &MessageKey,
    ) -> Result<()> {
        Ok(())
    }
    /// The directory the store lives in, for statfs and messages; `None` for a store
    /// that is not local files.
    fn local_root(&self) -> Option<&std::path::Path>;
    /// How the mount root is presented: the root directory's owner and mode with every
    /// directory above it, and what its listing is read from, folded in ([`access`]).
    fn root_attrs(&self) -> Result<Presented>;
    /// How a watcher hears that what [`MailStore::mailboxes`] (for a [`Target::Scope`]) or
    /// [`MailStore::view`] (for a [`Target::Mailbox`]) last returned may have changed.
    fn feed(&self, target: &Target) -> Feed;
    /// Gives the store the notifier for [`Feed::Pushed`] targets. A store that never
    /// pushes ignores it.
    fn subscribe(&self, _notifier: ChangeNotifier) {}
    /// Checks now (no cached answer) that the store root is still there, non-empty and on
    /// its filesystem. Stores returned by [`open`] check it before every operation.
    fn check_root(&self) -> Result<()> {
        Ok(())
    }
    /// How many times the store root went bad or came back so far (as any check saw it),
    /// so that a watcher sampling [`MailStore::check_root`] notices a flip between samples.
    fn root_transitions(&self) -> u64 {
        0
    }
    /// The settings the store was opened with and the counters it keeps.
    fn context(&self) -> &Arc<StoreContext>;
}

/// Something a watcher keeps current: one scope's mailbox list, or one mailbox's view.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The mailbox list of a scope (see [`MailStore::scope_depth`]).
    Scope(MailboxName),
    /// One mailbox's view.
    Mailbox(MailboxName),
}

impl Target {
    /// The scope or mailbox name.
    pub fn name(&self) -> &MailboxName {
        match self {
            Target::Scope(n) | Target::Mailbox(n) => n,
        }
    }
}

/// Multi-user stores open at most this many users' stores at once.
pub const USERS_CACHED: usize = 32;

/// Opens the store a location names, checking that it exists and has the claimed format,
/// with `config` (`config.views` bounds the parsed mailbox views kept in memory; for a
/// multi-user tree, over all users together).
/// The store root is watched: if it disappears, empties or changes filesystem, every
/// operation fails (EIO on the mount) until it is back.
pub fn open(spec: &Spec, config: StoreConfig) -> Result<Arc<dyn MailStore>> {
    let views = config.views;
    let ctx = StoreContext::new(config);
    let store: Arc<dyn MailStore> = match spec {
        Spec::Single(location) => {
            // The admin's links on the way to each root are resolved once; below the
            // roots no link is ever followed.
            let mut location = (**location).clone();
            location.resolve_links(&[]);
            open_single(&location, &ctx, views)?
        }
        Spec::Users(template) => Arc::new(users::UsersStore::open(
            template.clone(),
            ctx,
            USERS_CACHED,
            views.div_ceil(USERS_CACHED),
        )?),
    };
    Ok(Arc::new(guard::Guarded::new(store)?))
}

/// Opens one user's store, keeping at most `views` views.
fn open_single(
    location: &Location,
    ctx: &Arc<StoreContext>,
    views: usize,
) -> Result<Arc<dyn MailStore>> {
    match location.format {
        Format::Maildir => Ok(Arc::new(maildir::MaildirStore::open(
            location.clone(),
            ctx.clone(),
            views,
        )?)),
        Format::Sdbox | Format::Mdbox => Ok(Arc::new(dbox::DboxStore::open(
            location.clone(),
            ctx.clone(),
            views,
        )?)),
        Format::Mbox => Ok(Arc::new(mbox::MboxStore::open(
            location.clone(),
            ctx.clone(),
            views,
        )?)),
    }
}
