//! Changes through the mount, each one call of the mount's [`MailWriter`]: this layer
//! decides what a syscall means (which message, which mailbox, which flags) and refuses
//! what has no meaning; the writer carries it out (or, on a read-only mount, refuses it
//! with EROFS). Nothing here touches a store file.
//!
//! - `unlink(box, "12.eml")`: expunge UID 12 of `box`.
//! - `rmdir(parent, name)`: delete that mailbox, only when it has no messages and no
//!   sub-folders (ENOTEMPTY otherwise: `rmdir` never deletes mail; Dovecot checks again
//!   atomically).
//! - `mkdir(parent, name)`: create mailbox `parent/name`.
//! - `rename`: a message into another mailbox moves it (it appears there under the UID
//!   Dovecot gives it); a folder renames the mailbox (with its children). A message renamed
//!   within its mailbox, or onto a name that is not a mailbox directory, is refused, and a
//!   rename never replaces (so never expunges) a message.
//! - `setxattr`: `user.mail.flags` replaces a message's flags and keywords,
//!   `user.mail.flags.add` and `user.mail.flags.remove` add and remove some (doveadm
//!   spelling, separated by spaces).
//! - `create`/`write`/`close`: a new message, staged until closed (`staging`), then saved.
//! - `--layout maildir`: `unlink(cur/NAME)` expunges; `rename(cur/NAME, cur/NAME2)` of one
//!   message (same UID) replaces its flags with those of `NAME2`'s `:2,` info; a rename
//!   into another mailbox's `cur/` or `new/` moves it. A file created in `tmp/` is staged
//!   but not saved at close; renaming it into a mailbox's `new/` or `cur/` saves it (with
//!   the flags of its `:2,` info), unlinking it discards it. Nothing else is done inside
//!   `cur/`, `new/` and `tmp/` (EPERM): no mkdir, rmdir, rename of them, no other creates.
//!
//! After each change the store's stamps are re-checked (the next view is current) and the
//! notifier is told what the kernel may hold of the old state, without waiting for it
//! (see `changed`): a writable mount keeps nothing in the kernel that a change through it
//! could make wrong (no negative entries, no directory pages), so the change is visible
//! when the syscall returns.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::FileAttr;
use log::{debug, warn};

use super::MailFs;
use super::inode::Node;
use super::naming::{self, Naming, Sub};
use super::notify::Notice;
use super::staging::{Phase, Staged, StagedAttr, Writer};
use crate::coherence::Change;
use crate::coherence::baseline::Baseline;
use crate::error::{Error, Refusal, Result};
use crate::store::{FlagChange, MailboxName, MailboxView, MessageKey};

/// The xattrs a message's flags are changed through.
pub(super) const FLAGS: &str = "user.mail.flags";
const FLAGS_ADD: &str = "user.mail.flags.add";
const FLAGS_REMOVE: &str = "user.mail.flags.remove";

impl MailFs {
    /// `unlink(parent, name)` by process `pid`: expunges the message `name` of folder
    /// `parent` (or forgets a staged file or ghost of that name).
    ///
    /// A message that `pid` itself may have saved here within the last minute is not
    /// expunged (EBUSY, and a log line): its name is its UID, given by Dovecot, and can
    /// be one the same process is about to write. `tar -x` does exactly that: restoring
    /// `10.eml` saves a message that becomes `2.eml`; restoring `2.eml` next, tar finds a
    /// file of that name and unlinks it to make room, which would expunge the message it
    /// has just restored.
    pub(super) fn remove_message(
        &self,
        parent: &MailboxName,
        name: &OsStr,
        pid: u32,
    ) -> Result<()> {
        if let Some(staged) = self.staged_at(parent, name) {
            self.staging.unlink(&staged);
            return Ok(());
        }
        let (mailbox, uid) = self.message_at(parent, name)?;
        if self
            .staging
            .delivered_since(pid, &mailbox)
            .is_some_and(|first| uid >= first)
        {
            warn!(
                "{mailbox}/{uid}.eml: not expunged: process {pid} saved messages into \
                 {mailbox} within the last minute and this may be one of them under the name \
                 Dovecot gave it (tar -x unlinks files in its way; restore with rsync -a, \
                 or into another mailbox)"
            );
            return Err(Error::refused(
                Refusal::Busy,
                format!("{mailbox}/{uid}: saved moments ago by the process removing it"),
            ));
        }
        let before = self.view(&mailbox).ok();
        self.writer.expunge(&mailbox, &[uid])?;
        // A ghost of that name (hidden by the message) must not take its place.
        if let Some(ghost) = self.staging.find(parent, name) {
            self.staging.unlink(&ghost);
        }
        self.changed(&[(mailbox, before)], Vec::new());
        Ok(())
    }

    /// Refuses a change of a Maildir layout `cur/`, `new/` or `tmp/` (or of anything below
    /// one) other than the message changes `rename_in_maildir` and `remove_message` make:
    /// their names stand for no mailbox.
    fn refuse_in_sub(name: &MailboxName, what: &str) -> Result<()> {
        if name.0.iter().any(|l| Sub::of_level(l).is_some()) {
            return Err(Error::refused(
                Refusal::NotPermitted,
                format!("{what}: cur/, new/ and tmp/ hold messages only"),
            ));
        }
        Ok(())
    }

    /// Which Maildir layout directory `folder` is, and its mailbox.
    fn sub_of(folder: &MailboxName) -> Option<(Sub, MailboxName)> {
        let (last, levels) = folder.0.split_last()?;
        Some((Sub::of_level(last)?, MailboxName(levels.to_vec())))
    }

    /// True for a file written into a Maildir layout `tmp/`: Maildir delivers a message by
    /// renaming it out of `tmp/`, so closing it saves nothing (it stays staged, in memory,
    /// until renamed or unlinked).
    fn in_tmp(staged: &Staged) -> bool {
        matches!(Self::sub_of(&staged.place().0), Some((Sub::Tmp, _)))
    }

    /// `rename(tmp/name, new|cur/new_name)` of a file written into a Maildir layout
    /// `tmp/`: Dovecot saves it into that mailbox (with the flags of `new_name`'s `:2,`
    /// info, if any); the new name then answers as a ghost of it for a while (the message
    /// itself is in `cur/` under its UID).
    fn deliver_from_tmp(
        &self,
        staged: &Staged,
        to: &MailboxName,
        new_name: &OsStr,
        to_ino: u64,
    ) -> Result<()> {
        let invalid = |why: &str| {
            Error::refused(
                Refusal::Invalid,
                format!("delivering to {to}/{}: {why}", new_name.to_string_lossy()),
            )
        };
        let mailbox = match Self::sub_of(to) {
            Some((Sub::Cur | Sub::New, m)) => m,
            _ => return Err(invalid("not a mailbox's cur/ or new/")),
        };
        let Some((_, bytes)) = self.staging.to_save(staged) else {
            return Err(invalid("nothing written"));
        };
        let before = self.view(&mailbox)?;
        let flags = if new_name.as_bytes().windows(3).any(|w| w == b":2,") {
            Naming::maildir_flags(new_name, &before, None)
                .ok_or_else(|| invalid("an unknown keyword letter"))?
        } else {
            Vec::new()
        };
        // The staged file takes its new name first (a file being written may change
        // mailbox); once saved it answers there as a ghost.
        self.staging
            .rename(staged, Arc::new(to.clone()), new_name)?;
        let uid = match self.writer.save(&mailbox, &bytes) {
            Ok(uid) => {
                self.staging.saved(staged, true);
                uid
            }
            Err(e) => {
                self.staging.saved(staged, false);
                return Err(e);
            }
        };
        if !flags.is_empty() {
            // doveadm save reports no UID: the message saved is the one new message of
            // that size since the view before (none or several: its flags are left alone,
            // one log line; mailfs never guesses between messages).
            let uid = uid.or_else(|| {
                self.store.context().recheck_all();
                let after = self.view(&mailbox).ok()?;
                let mut new = after
                    .messages
                    .iter()
                    .filter(|m| {
                        matches!(m.key, MessageKey::Uid(u) if u >= before.uid_next)
                            && m.size == bytes.len() as u64
                    })
                    .map(|m| m.key.clone());
                match (new.next(), new.next()) {
                    (Some(MessageKey::Uid(u)), None) => Some(u),
                    _ => None,
                }
            });
            match uid {
                Some(uid) => {
                    self.writer
                        .change_flags(&mailbox, &[uid], &FlagChange::Replace(flags))?
                }
                None => warn!(
                    "{mailbox}: delivered {}, but which message it became is not certain: \
                     its flags were not set",
                    new_name.to_string_lossy()
                ),
            }
        }
        self.changed(
            &[(mailbox, Some(before))],
            vec![(to_ino, new_name.to_os_string())],
        );
        Ok(())
    }

    /// `rename(from/name, to/new_name)` of a message in a Maildir layout `cur/`: a flag
    /// change within the mailbox, or a move into another mailbox's `cur/` or `new/`.
    fn rename_in_maildir(
        &self,
        from: &MailboxName,
        name: &OsStr,
        to: &MailboxName,
        new_name: &OsStr,
        to_ino: u64,
    ) -> Result<()> {
        if let Some(staged) = self.staged_at(from, name) {
            if Self::in_tmp(&staged) && staged.phase() == Phase::Writing {
                return self.deliver_from_tmp(&staged, to, new_name, to_ino);
            }
            return Err(Error::refused(
                Refusal::Invalid,
                format!("{from}/{}: not a file in tmp/", name.to_string_lossy()),
            ));
        }
        let (mailbox, uid) = self.message_at(from, name)?;
        let invalid = |why: &str| {
            Error::refused(
                Refusal::Invalid,
                format!(
                    "{mailbox}/{uid} -> {to}/{}: {why}",
                    new_name.to_string_lossy()
                ),
            )
        };
        let to_mailbox = match Self::sub_of(to) {
            Some((Sub::Cur | Sub::New, m)) => m,
            _ => return Err(invalid("not a mailbox's cur/ or new/")),
        };
        let before = self.view(&mailbox)?;
        if to_mailbox != mailbox {
            let before_to = self.view(&to_mailbox).ok();
            self.writer.move_message(&mailbox, uid, &to_mailbox)?;
            self.changed(
                &[(mailbox, Some(before)), (to_mailbox, before_to)],
                vec![(to_ino, new_name.to_os_string())],
            );
            return Ok(());
        }
        // Within the mailbox: the same message (its UID leads the name), other flags.
        if naming::parse_maildir_name(new_name) != Some(MessageKey::Uid(uid)) {
            return Err(invalid("a message keeps its UID"));
        }
        let meta = before
            .get(&MessageKey::Uid(uid))
            .ok_or_else(|| Error::not_found(format!("{mailbox}/{uid}")))?;
        let flags = Naming::maildir_flags(new_name, &before, Some(&meta))
            .ok_or_else(|| invalid("no Maildir info (:2,) or an unknown keyword letter"))?;
        self.writer
            .change_flags(&mailbox, &[uid], &FlagChange::Replace(flags))?;
        // The kernel now holds the new name for the message: dropped, so that it is
        // looked up again under the name Dovecot's flags give.
        self.changed(
            &[(mailbox, Some(before))],
            vec![(to_ino, new_name.to_os_string())],
        );
        Ok(())
    }

    /// The staged file or ghost that `parent/name` resolves to, if it is one.
    fn staged_at(&self, parent: &MailboxName, name: &OsStr) -> Option<Arc<Staged>> {
        match self.resolve(parent, name) {
            Ok((Node::Staged(id), _)) => self.staging.get(id),
            _ => None,
        }
    }

    /// `rmdir(parent, name)`: deletes the mailbox `name` of `parent`, if empty.
    pub(super) fn remove_folder(&self, parent: &MailboxName, name: &OsStr) -> Result<()> {
        let (node, _) = self.resolve(parent, name)?;
        let Node::Folder(folder) = node else {
            return Err(Error::refused(
                Refusal::NotDirectory,
                format!("{parent}/{}", name.to_string_lossy()),
            ));
        };
        Self::refuse_in_sub(&folder, "rmdir")?;
        let tree = self.tree(&folder)?;
        let f = tree.folder(&folder)?;
        let has_messages = self
            .folder_view(f)?
            .is_some_and(|v| v.messages.len() + v.pending.len() > 0);
        if has_messages || !f.children.is_empty() || !self.staging.writing_in(&folder).is_empty() {
            return Err(Error::refused(
                Refusal::NotEmpty,
                format!("deleting {folder}: it still has messages or folders"),
            ));
        }
        self.writer.delete_mailbox(&folder)?;
        self.changed(&[], Vec::new());
        Ok(())
    }

    /// `mkdir(parent, name)`: creates mailbox `parent/name`; its node and attributes.
    pub(super) fn make_folder(
        &self,
        parent: &MailboxName,
        name: &OsStr,
    ) -> Result<(Node, FileAttr)> {
        Self::refuse_in_sub(parent, "mkdir")?;
        let level = folder_level(self.naming, name)?;
        if parent.0.len() < self.store.scope_depth() {
            return Err(Error::refused(
                Refusal::Denied,
                format!("creating {}: not inside a user", name.to_string_lossy()),
            ));
        }
        if self.resolve(parent, name).is_ok() {
            return Err(Error::refused(
                Refusal::Exists,
                format!("{parent}/{}", name.to_string_lossy()),
            ));
        }
        let mut levels = parent.0.clone();
        levels.push(level);
        self.writer.create_mailbox(&MailboxName(levels))?;
        self.changed(&[], Vec::new());
        self.resolve(parent, name)
    }

    /// `rename(from/name, to/new_name)`: moves a message to another mailbox, renames a
    /// mailbox, or renames a staged file. `to_ino` is `to`'s inode; with `no_replace`
    /// (`RENAME_NOREPLACE`) an existing target is refused. Otherwise an existing message at
    /// the target name is never replaced (never expunged): it stays, under its name.
    pub(super) fn rename_entry(
        &self,
        from: &MailboxName,
        name: &OsStr,
        to: &MailboxName,
        new_name: &OsStr,
        to_ino: u64,
        no_replace: bool,
    ) -> Result<()> {
        let target = self.resolve(to, new_name).ok().map(|(node, _)| node);
        if no_replace && target.is_some() {
            return Err(Error::refused(
                Refusal::Exists,
                format!("{to}/{}", new_name.to_string_lossy()),
            ));
        }
        let is_mailbox = |name: &MailboxName| -> Result<bool> {
            let tree = self.tree(name)?;
            Ok(tree.folder(name)?.entry().is_some_and(|e| e.selectable))
        };
        if Self::sub_of(from).is_some() {
            return self.rename_in_maildir(from, name, to, new_name, to_ino);
        }
        if let Some(staged) = self.staged_at(from, name) {
            if let Some(Node::Message { .. } | Node::Folder(_)) = target {
                // A saved file renamed onto a message's name (`rsync` restoring `12.eml`
                // where a message 12 is): its ghost goes (the message it became stays,
                // under its own UID), and the message already there is left alone.
                if staged.phase() == Phase::Saved {
                    self.staging.unlink(&staged);
                    self.changed(&[], vec![(to_ino, new_name.to_os_string())]);
                    return Ok(());
                }
                return Err(Error::refused(
                    Refusal::Exists,
                    format!(
                        "{to}/{}: a file being written cannot take a message's name",
                        new_name.to_string_lossy()
                    ),
                ));
            }
            if !is_mailbox(to)? {
                return Err(Error::refused(
                    Refusal::Invalid,
                    format!("{to}: not a mailbox"),
                ));
            }
            return self.staging.rename(&staged, Arc::new(to.clone()), new_name);
        }
        if naming::parse_message_name(name).is_some() {
            let (mailbox, uid) = self.message_at(from, name)?;
            if mailbox == *to {
                return Err(Error::refused(
                    Refusal::Invalid,
                    format!("renaming a message inside {mailbox}: names are UIDs"),
                ));
            }
            if !is_mailbox(to)? {
                return Err(Error::refused(
                    Refusal::Invalid,
                    format!("moving {mailbox}/{uid} to {to}: not a mailbox"),
                ));
            }
            let (moved_node, moved) = self.resolve(from, name)?;
            let before_from = self.view(&mailbox).ok();
            let before_to = self.view(to).ok();
            self.writer.move_message(&mailbox, uid, to)?;
            // The message has another name in `to` (its new UID), and a message that had
            // the target name keeps it. A name nothing had answers as a ghost of the
            // moved message for a while: `mv` stats the target after renaming. The kernel
            // holds the moved inode under that name (until the notifier drops it): the
            // inode is the ghost now.
            if target.is_none() {
                let ghost = self.staging.ghost(
                    Arc::new(to.clone()),
                    new_name,
                    StagedAttr {
                        size: moved.size,
                        created: moved.mtime,
                        uid: moved.uid,
                        gid: moved.gid,
                    },
                );
                if let (Some(id), Some(ino)) = (ghost, self.inodes.known(&moved_node)) {
                    self.inodes.rebind(ino, Node::Staged(id));
                }
            } else if let (Some(node), Some(ino)) = (&target, self.inodes.known(&moved_node)) {
                // The kernel replaced its dentry of the target with the moved inode; the
                // name still means the message that had it.
                self.inodes.rebind(ino, node.clone());
            }
            // The kernel now holds `to/new_name` for the moved message: dropped.
            self.changed(
                &[(mailbox, before_from), (to.clone(), before_to)],
                vec![(to_ino, new_name.to_os_string())],
            );
            return Ok(());
        }
        let (node, _) = self.resolve(from, name)?;
        let Node::Folder(folder) = node else {
            return Err(Error::not_found(format!(
                "{from}/{}",
                name.to_string_lossy()
            )));
        };
        if target.is_some() {
            return Err(Error::refused(
                Refusal::Exists,
                format!(
                    "{to}/{}: renaming a mailbox over another",
                    new_name.to_string_lossy()
                ),
            ));
        }
        Self::refuse_in_sub(&folder, "rename")?;
        Self::refuse_in_sub(to, "rename")?;
        let mut levels = to.0.clone();
        levels.push(folder_level(self.naming, new_name)?);
        self.writer.rename_mailbox(&folder, &MailboxName(levels))?;
        // Everything the kernel holds below the moved directory has other names now.
        self.changed(&[], vec![(to_ino, new_name.to_os_string())]);
        Ok(())
    }

    /// `setxattr(node, name, value)`: a message's flags (see the module comment).
    pub(super) fn set_xattr(&self, node: &Node, name: &OsStr, value: &[u8]) -> Result<()> {
        let flags = || -> Result<Vec<String>> {
            let text = std::str::from_utf8(value).map_err(|_| {
                Error::refused(Refusal::Invalid, "flags must be UTF-8 text".to_string())
            })?;
            Ok(text.split_whitespace().map(str::to_string).collect())
        };
        let change = match name.as_bytes() {
            n if n == FLAGS.as_bytes() => FlagChange::Replace(flags()?),
            n if n == FLAGS_ADD.as_bytes() => FlagChange::Add(flags()?),
            n if n == FLAGS_REMOVE.as_bytes() => FlagChange::Remove(flags()?),
            _ => {
                return Err(Error::refused(
                    Refusal::Unsupported,
                    format!("setting {}", name.to_string_lossy()),
                ));
            }
        };
        let Node::Message {
            mailbox,
            uid_validity,
            key,
        } = node
        else {
            return Err(Error::refused(
                Refusal::Unsupported,
                format!(
                    "setting {} on something that is not a message",
                    name.to_string_lossy()
                ),
            ));
        };
        let uid = self.uid_of(mailbox, *uid_validity, key)?;
        let before = self.view(mailbox).ok();
        self.writer.change_flags(mailbox, &[uid], &change)?;
        self.changed(&[((**mailbox).clone(), before)], Vec::new());
        Ok(())
    }

    /// `create(parent, name)` by thread `tid`: a new staged file in mailbox `parent` (see
    /// `staging`), owned by `owner` (uid, gid).
    pub(super) fn create_staged(
        &self,
        parent: &Arc<MailboxName>,
        name: &OsStr,
        owner: (u32, u32),
        tid: u32,
    ) -> Result<Arc<Staged>> {
        if !self.writable() {
            return Err(Error::refused(
                Refusal::ReadOnly,
                format!("creating {parent}/{}", name.to_string_lossy()),
            ));
        }
        if self.naming.layout == naming::Layout::Maildir
            && !matches!(Self::sub_of(parent), Some((Sub::Tmp, _)))
        {
            return Err(Error::refused(
                Refusal::NotPermitted,
                format!(
                    "creating {parent}/{}: with --layout maildir, new messages are written \
                     into tmp/ and renamed into new/ or cur/",
                    name.to_string_lossy()
                ),
            ));
        }
        let tree = self.tree(parent)?;
        if !tree.folder(parent)?.entry().is_some_and(|e| e.selectable) {
            return Err(Error::refused(
                Refusal::NotPermitted,
                format!("{parent}: not a mailbox; messages go into mailbox directories"),
            ));
        }
        match self.resolve(parent, name) {
            Ok((Node::Staged(_), _)) | Err(_) => {}
            Ok(_) => {
                return Err(Error::refused(
                    Refusal::Exists,
                    format!(
                        "{parent}/{}: messages are immutable",
                        name.to_string_lossy()
                    ),
                ));
            }
        }
        // A create never comes from an exec, so /proc/TID can be read here (see
        // `sys::bounded`).
        let writer = Writer {
            tid,
            process: crate::sys::process_of(tid),
        };
        Ok(self.staging.create(parent.clone(), name, owner, writer))
    }

    /// A FLUSH (a `close()`) of a staged file by thread `tid`: saves it if `tid` belongs
    /// to the process that created it (see `staging` for why only then).
    pub(super) fn flush_staged(&self, staged: &Staged, tid: u32) -> Result<()> {
        if Self::in_tmp(staged) {
            return Ok(()); // delivered by its rename into new/ or cur/
        }
        let writer = staged.writer();
        if tid != writer.tid && !crate::sys::same_process(writer.process, tid) {
            return Ok(());
        }
        self.save_staged(staged, Some(tid))
    }

    /// The kernel released the last descriptor of a staged file: what its writer's close
    /// did not save is saved now (nobody waits for it; a failure is logged). An empty file
    /// is dropped.
    pub(super) fn release_staged(&self, staged: &Staged) {
        if staged.phase() != Phase::Writing || Self::in_tmp(staged) {
            return;
        }
        if staged.attr().size == 0 {
            debug!(
                "{}: an empty file is not a message; not saved",
                staged.place().1.to_string_lossy()
            );
            self.staging.unlink(staged);
            return;
        }
        if let Err(e) = self.save_staged(staged, None) {
            let _ = self.errors.errno("save at the last close", &e);
        }
    }

    /// Saves a staged file as a new message, unless its writer, closing it as thread
    /// `closing`, is being killed (an interrupted copy becomes nothing). Returns when
    /// Dovecot has it.
    fn save_staged(&self, staged: &Staged, closing: Option<u32>) -> Result<()> {
        let Some((mailbox, bytes)) = self.staging.to_save(staged) else {
            return Ok(()); // saved already, failed for good, or nothing written yet
        };
        if let Some(tid) = closing
            && crate::sys::killed_by_signal(tid)
        {
            debug!(
                "{mailbox}/{}: its writer (thread {tid}) was killed; not saved",
                staged.place().1.to_string_lossy()
            );
            self.staging.discard(staged);
            return Ok(());
        }
        let before = self.view(&mailbox).ok();
        match self.writer.save(&mailbox, &bytes) {
            Ok(_) => {
                self.staging.saved(staged, true);
                if let Some(view) = &before {
                    self.staging
                        .delivered(staged.writer().tid, &mailbox, view.uid_next);
                }
                self.changed(&[((*mailbox).clone(), before)], Vec::new());
                Ok(())
            }
            Err(e) => {
                self.staging.saved(staged, false);
                Err(e)
            }
        }
    }

    /// After a change: the store's stamps are re-checked, and the notifier told each
    /// changed mailbox's view before and now, and the `entries` (directory inode, name)
    /// the kernel may hold under a name that means something else now. The caller does not
    /// wait for the notifier: its entry invalidations take the directory's lock, which a
    /// `create` in that directory holds while it waits for a FUSE thread, so a thread
    /// waiting here could stall them all. Read-your-writes does not depend on it: a
    /// writable mount keeps no negative entries and no directory pages in the kernel (see
    /// `lookup`, `opendir`), the kernel itself moves or drops the dentries of a rename or
    /// unlink, and `rename` rebinds the inode it moved.
    fn changed(
        &self,
        mailboxes: &[(MailboxName, Option<Arc<MailboxView>>)],
        entries: Vec<(u64, std::ffi::OsString)>,
    ) {
        self.store.context().recheck_all();
        let Some(tx) = &self.notices else { return };
        for (name, before) in mailboxes {
            let (Some(old), Ok(new)) = (before, self.view(name)) else {
                continue;
            };
            if !Arc::ptr_eq(old, &new) {
                let _ = tx.send(Notice::Store(Change::Mailbox {
                    name: name.clone(),
                    old: Baseline::View(old.clone()),
                    new: Some(new),
                }));
            }
        }
        for (parent, name) in entries {
            let _ = tx.send(Notice::Entry { parent, name });
        }
    }

    /// The mailbox and UID of message `name` in folder `parent`.
    fn message_at(&self, parent: &MailboxName, name: &OsStr) -> Result<(MailboxName, u32)> {
        match self.resolve(parent, name)?.0 {
            Node::Message {
                mailbox,
                uid_validity,
                key,
            } => Ok((
                (*mailbox).clone(),
                self.uid_of(&mailbox, uid_validity, &key)?,
            )),
            Node::Folder(_) => Err(Error::refused(
                Refusal::IsDirectory,
                format!("{parent}/{}", name.to_string_lossy()),
            )),
            Node::Staged(_) => Err(Error::refused(
                Refusal::Busy,
                format!("{parent}/{}: still being written", name.to_string_lossy()),
            )),
        }
    }

    /// The UID of a message node that still exists; a file Dovecot has not given a UID
    /// yet cannot be changed (mailfs never guesses one).
    fn uid_of(&self, mailbox: &MailboxName, uid_validity: u32, key: &MessageKey) -> Result<u32> {
        self.with_message(mailbox, uid_validity, key, |_, _| ())?;
        match key {
            MessageKey::Uid(uid) => Ok(*uid),
            MessageKey::Pending(_) => Err(Error::refused(
                Refusal::Busy,
                format!("{mailbox}: a file Dovecot has not given a UID yet"),
            )),
        }
    }
}

/// The mailbox name level a directory name stands for: the inverse of
/// `Naming::folder_name`, and only for names that function gives (so that the mailbox
/// made is found under the name asked for: `x.eml` is not a folder name, `x%2Eeml` is).
fn folder_level(naming: Naming, name: &OsStr) -> Result<String> {
    let invalid = || {
        Error::refused(
            Refusal::Invalid,
            format!("{:?} is not a mailbox name", name.to_string_lossy()),
        )
    };
    if naming::parse_message_name(name).is_some() || name.is_empty() {
        return Err(invalid());
    }
    let bytes = naming::unescape_bytes(name.as_bytes()).ok_or_else(invalid)?;
    let level = String::from_utf8(bytes).map_err(|_| invalid())?;
    // Dovecot refuses "." and ".." as mailbox name levels (mailbox_verify_name()).
    let dots = level == "." || level == "..";
    if level.is_empty() || dots || level.contains('/') || naming.folder_name(&level) != name {
        return Err(invalid());
    }
    Ok(level)
}
