//! What a node is presented with: attributes of folders and messages, and resolving a
//! name or an inode to the current node and attributes.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use super::MailFs;
use super::inode::Node;
use super::naming;
use super::staging::{Phase, Staged};
use super::tree::Folder;
use crate::error::{Error, Result};
use crate::store::{MailboxName, MailboxView, MessageKey, MessageMeta, Presented};

/// `st_blksize` of every directory: glibc sizes `opendir`'s buffer by it (32 KiB up to
/// 1 MiB), the kernel asks READDIRPLUS for what that buffer holds (Linux 6.16+, up to
/// `max_pages`: 1 MiB here), and each request is a round trip the reader waits for. At
/// 1 MiB a listing takes one request per ~6,500 messages instead of one per 200 (a
/// 1,000,000-message `ls -l`: 160 round trips instead of 4,900; measured first `ls -l`
/// 9.0-11.9 -> 8.2-10.0 s, second 2.2-2.6 -> 2.0-2.1 s). Older kernels ask one page
/// whatever the buffer; the kernel's buffer is `kvmalloc`ed, so a small directory's
/// listing costs no high-order allocation.
const DIR_BLKSIZE: u32 = 1 << 20;

fn to_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// The attributes of a negative entry: only `ino` 0 matters to the kernel.
pub(super) fn negative_attr() -> FileAttr {
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

/// An owner and mode the admin chose for every folder and message (`--uid`, `--gid`,
/// `--umask`), as bindfs and rclone present theirs. Unset parts keep what the store
/// presents (owners, and modes with the directories above folded in).
///
/// Invariant: with `umask` set, every folder is `0777 & !umask` and every message `0666 &
/// !umask`, write bits cleared as always: the admin's choice replaces the folded store
/// permissions (that is the point of it), so it is never applied unless asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Presentation {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub umask: Option<u16>,
}

impl Presentation {
    /// Applies the chosen owner and mode to `attr` (a folder's or a message's).
    fn apply(&self, mut attr: FileAttr) -> FileAttr {
        if let Some(uid) = self.uid {
            attr.uid = uid;
        }
        if let Some(gid) = self.gid {
            attr.gid = gid;
        }
        if let Some(umask) = self.umask {
            let full = if attr.kind == FileType::Directory {
                0o777
            } else {
                0o666
            };
            attr.perm = read_only(full & !umask);
        }
        attr
    }
}

impl MailFs {
    /// 2 + subdirectories; 1 ("unknown", as btrfs reports) for a scope's top folder (a
    /// user), whose children are not known where its parent lists it.
    fn folder_nlink(&self, folder: &Folder) -> u32 {
        match folder.entry() {
            Some(e) if e.name.0.len() == self.store.scope_depth() => 1,
            _ => 2 + folder.children.len() as u32,
        }
    }

    /// A folder's attributes; one with no entry of its own (the mount root) is presented
    /// as `root`. Permission bits are what the store presents (the directories a folder
    /// stands for folded in), write bits cleared, and nothing added. Times: the store's
    /// mtime, or, for a mailbox whose content was presented and changed since, when that
    /// change was noticed (`dirtimes`), whichever is later.
    pub(super) fn folder_attr(&self, ino: u64, folder: &Folder, root: Presented) -> FileAttr {
        let (owner, mtime) = match folder.entry() {
            Some(e) => (e.owner, e.mtime),
            None => root,
        };
        let mut t = to_time(mtime);
        if let Some(e) = folder.entry()
            && e.selectable
            && self.dir_times.seen(&e.name)
        {
            // Its content was presented: look at the current view (a stamp check when
            // nothing changed) so that the time moves before the kernel sees it. A mailbox
            // never presented keeps the store's time, without its view being built.
            let _ = self.view(&e.name);
            if let Some(changed) = self.dir_times.changed(&e.name) {
                t = t.max(changed);
            }
        }
        self.presentation.apply(FileAttr {
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
            blksize: DIR_BLKSIZE,
            flags: 0,
        })
    }

    pub(super) fn message_attr(&self, ino: u64, meta: &MessageMeta) -> FileAttr {
        let received = to_time(meta.received);
        self.presentation.apply(FileAttr {
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
        })
    }

    pub(super) fn message_node(
        view: &MailboxView,
        mailbox: &Arc<MailboxName>,
        key: MessageKey,
    ) -> Node {
        Node::Message {
            mailbox: mailbox.clone(),
            uid_validity: view.uid_validity,
            key,
        }
    }

    /// Resolves `name` inside folder `parent` (without counting a lookup).
    /// A file being written wins over a message of its name (it is what its writer
    /// reads); a ghost (a file saved, or the name a message was moved to) only answers
    /// for a name no message or folder has: it never hides a message that has, or later
    /// gets, that name.
    pub(super) fn resolve(&self, parent: &MailboxName, name: &OsStr) -> Result<(Node, FileAttr)> {
        let staged = self.staging.find(parent, name);
        let as_staged = |staged: &Staged| {
            let node = Node::Staged(staged.id);
            let attr = Self::staged_attr(self.inodes.peek_ino(&node), staged);
            (node, attr)
        };
        if let Some(s) = &staged
            && s.phase() == Phase::Writing
        {
            return Ok(as_staged(s));
        }
        match self.resolve_stored(parent, name) {
            Err(e) if e.is_not_found() => staged.map(|s| as_staged(&s)).ok_or(e),
            found => found,
        }
    }

    /// Resolves `name` among the folders and messages of `parent`.
    fn resolve_stored(&self, parent: &MailboxName, name: &OsStr) -> Result<(Node, FileAttr)> {
        let tree = self.tree(parent)?;
        let folder = tree.folder(parent)?;
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
        let missing = || Error::not_found(format!("{parent}/{}", name.to_string_lossy()));
        let key = match folder.sub {
            Some(_) => naming::parse_maildir_name(name),
            None => naming::parse_message_name(name),
        }
        .ok_or_else(missing)?;
        let view = self.folder_view(folder)?.ok_or_else(missing)?;
        let meta = view.get(&key).ok_or_else(missing)?;
        // A Maildir layout name carries the flags: only the current one is the message.
        if folder.sub.is_some() && self.naming.maildir_name(&view, &meta) != name {
            return Err(missing());
        }
        if let Some(problem) = &meta.problem {
            return Err(Error::Unreadable {
                what: problem.to_string(),
            });
        }
        // The message belongs to the mailbox (not to its `cur/`).
        let mailbox = match (&folder.sub, folder.entry()) {
            (Some(_), Some(e)) => e.name.clone(),
            _ => parent.clone(),
        };
        let node = Self::message_node(&view, &Arc::new(mailbox), key);
        let attr = self.message_attr(self.inodes.peek_ino(&node), &meta);
        Ok((node, attr))
    }

    /// Current attributes of a node, or not-found if it no longer exists.
    pub(super) fn attr_of(&self, ino: u64, node: &Node) -> Result<FileAttr> {
        match node {
            Node::Folder(name) => {
                let tree = self.tree(name)?;
                let folder = tree.folder(name)?;
                Ok(self.folder_attr(ino, folder, tree.root))
            }
            Node::Message {
                mailbox,
                uid_validity,
                key,
            } => self.with_message(mailbox, *uid_validity, key, |_, meta| {
                self.message_attr(ino, meta)
            }),
            Node::Staged(id) => self
                .staging
                .get(*id)
                .map(|s| Self::staged_attr(ino, &s))
                .ok_or_else(|| Error::not_found(format!("staged file {id}"))),
        }
    }

    /// A staged file: its bytes so far, owned by its creator, times of its creation.
    pub(super) fn staged_attr(ino: u64, staged: &Staged) -> FileAttr {
        let a = staged.attr();
        FileAttr {
            ino: INodeNo(ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.created,
            mtime: a.created,
            ctime: a.created,
            crtime: a.created,
            kind: FileType::RegularFile,
            perm: 0o600,
            nlink: 1,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Runs `f` on the current view and metadata of a message node; not-found after an
    /// expunge or a new UIDVALIDITY.
    pub(super) fn with_message<T>(
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
        Ok(f(&view, &meta))
    }
}
