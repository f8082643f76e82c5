//! Changes through the mount, each one call of the mount's [`MailWriter`]: this layer
//! decides what a syscall means (which message, which mailbox, which flags) and refuses
//! what has no meaning; the writer carries it out (or, on a read-only mount, refuses it
//! with EROFS). Nothing here touches a store file.
//!
//! - `unlink(box, "12.eml")`: expunge UID 12 of `box`.
//! - `rmdir(parent, name)`: delete that mailbox, only when it has no messages and no
//!   sub-folders (ENOTEMPTY otherwise: `rmdir` never deletes mail).
//! - `mkdir(parent, name)`: create mailbox `parent/name`.
//! - `rename`: a message into another mailbox moves it; a folder renames the mailbox
//!   (with its children). A message renamed within its mailbox, or onto a name that is
//!   not a mailbox directory, is refused.
//! - `setxattr`: `user.mail.flags` replaces a message's flags and keywords,
//!   `user.mail.flags.add` and `user.mail.flags.remove` add and remove some (doveadm
//!   spelling, separated by spaces).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::FileAttr;

use super::MailFs;
use super::inode::Node;
use super::naming::{self, Naming};
use crate::error::{Error, Refusal, Result};
use crate::store::{FlagChange, MailboxName, MessageKey};

/// The xattrs a message's flags are changed through.
pub(super) const FLAGS: &str = "user.mail.flags";
const FLAGS_ADD: &str = "user.mail.flags.add";
const FLAGS_REMOVE: &str = "user.mail.flags.remove";

impl MailFs {
    /// `unlink(parent, name)`: expunges the message `name` of folder `parent`.
    pub(super) fn remove_message(&self, parent: &MailboxName, name: &OsStr) -> Result<()> {
        let (mailbox, uid) = self.message_at(parent, name)?;
        self.writer.expunge(&mailbox, &[uid])
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
        let tree = self.tree(&folder)?;
        let f = tree.folder(&folder)?;
        let has_messages = self
            .folder_view(f)?
            .is_some_and(|v| v.messages.len() + v.pending.len() > 0);
        if has_messages || !f.children.is_empty() {
            return Err(Error::refused(
                Refusal::NotEmpty,
                format!("deleting {folder}: it still has messages or folders"),
            ));
        }
        self.writer.delete_mailbox(&folder)
    }

    /// `mkdir(parent, name)`: creates mailbox `parent/name`; its node and attributes.
    pub(super) fn make_folder(
        &self,
        parent: &MailboxName,
        name: &OsStr,
    ) -> Result<(Node, FileAttr)> {
        let level = folder_level(self.naming, name)?;
        if parent.0.len() < self.store.scope_depth() {
            return Err(Error::refused(
                Refusal::Denied,
                format!("creating {}: not inside a user", name.to_string_lossy()),
            ));
        }
        let mut levels = parent.0.clone();
        levels.push(level);
        self.writer.create_mailbox(&MailboxName(levels))?;
        self.resolve(parent, name)
    }

    /// `rename(from/name, to/new_name)`: moves a message to another mailbox, or renames
    /// a mailbox.
    pub(super) fn rename_entry(
        &self,
        from: &MailboxName,
        name: &OsStr,
        to: &MailboxName,
        new_name: &OsStr,
    ) -> Result<()> {
        if naming::parse_message_name(name).is_some() {
            let (mailbox, uid) = self.message_at(from, name)?;
            if mailbox == *to {
                return Err(Error::refused(
                    Refusal::Invalid,
                    format!("renaming a message inside {mailbox}: names are UIDs"),
                ));
            }
            let tree = self.tree(to)?;
            let target = tree.folder(to)?;
            if !target.entry.as_ref().is_some_and(|e| e.selectable) {
                return Err(Error::refused(
                    Refusal::Invalid,
                    format!("moving {mailbox}/{uid} to {to}: not a mailbox"),
                ));
            }
            self.writer.move_message(&mailbox, uid, to)?;
            return Ok(());
        }
        let (node, _) = self.resolve(from, name)?;
        let Node::Folder(folder) = node else {
            return Err(Error::not_found(format!(
                "{from}/{}",
                name.to_string_lossy()
            )));
        };
        let mut levels = to.0.clone();
        levels.push(folder_level(self.naming, new_name)?);
        self.writer.rename_mailbox(&folder, &MailboxName(levels))
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
                format!("setting {} on a folder", name.to_string_lossy()),
            ));
        };
        let uid = self.uid_of(mailbox, *uid_validity, key)?;
        self.writer.change_flags(mailbox, &[uid], &change)
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
