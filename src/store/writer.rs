//! Changes to a store. mailfs never writes a store file: every change is carried out by
//! the server that owns the store (Dovecot's doveadm server, an IMAP server), which does
//! its own locking, index and log updates. A [`MailWriter`] is that path; the FUSE layer
//! turns `rm`, `mv`, `mkdir`, `rmdir` and `setfattr` into its calls. A mount without
//! `--rw` has [`ReadOnly`], which refuses everything with [`Refusal::ReadOnly`] (EROFS).
//!
//! Names are the store's presented names (as [`MailStore::view`](super::MailStore::view)
//! takes them: with the user level first in a multi-user tree). Every method returns
//! only once the owner confirmed the change, or failed.

use std::fmt;

use super::MailboxName;
use crate::error::{Error, Refusal, Result};

/// A change of a message's flags and keywords, in doveadm's spelling (`\Seen`,
/// `\Flagged`, `$Label1`, `work`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagChange {
    /// These and no others.
    Replace(Vec<String>),
    /// These as well.
    Add(Vec<String>),
    /// Not these.
    Remove(Vec<String>),
}

/// The changes a store's owner can carry out.
pub trait MailWriter: Send + Sync + fmt::Debug {
    /// Expunges `uids` from `mailbox`.
    fn expunge(&self, mailbox: &MailboxName, uids: &[u32]) -> Result<()>;
    /// Moves message `uid` of `from` into `to`; the UID it got there, if the owner says.
    fn move_message(&self, from: &MailboxName, uid: u32, to: &MailboxName) -> Result<Option<u32>>;
    /// Changes the flags of `uids` in `mailbox`.
    fn change_flags(&self, mailbox: &MailboxName, uids: &[u32], change: &FlagChange) -> Result<()>;
    /// Saves `message` (its bytes as given) into `mailbox`; its UID, if the owner says.
    fn save(&self, mailbox: &MailboxName, message: &[u8]) -> Result<Option<u32>>;
    /// Creates mailbox `name`.
    fn create_mailbox(&self, name: &MailboxName) -> Result<()>;
    /// Deletes mailbox `name`.
    fn delete_mailbox(&self, name: &MailboxName) -> Result<()>;
    /// Renames mailbox `from` (with its children) to `to`.
    fn rename_mailbox(&self, from: &MailboxName, to: &MailboxName) -> Result<()>;
    /// False for a writer that refuses every change (a read-only mount).
    fn accepts_changes(&self) -> bool {
        true
    }
}

/// The writer of a read-only mount: refuses everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadOnly;

fn refuse<T>(what: String) -> Result<T> {
    Err(Error::refused(Refusal::ReadOnly, what))
}

impl MailWriter for ReadOnly {
    fn expunge(&self, mailbox: &MailboxName, uids: &[u32]) -> Result<()> {
        refuse(format!(
            "expunging {} message(s) from {mailbox}",
            uids.len()
        ))
    }
    fn move_message(&self, from: &MailboxName, uid: u32, to: &MailboxName) -> Result<Option<u32>> {
        refuse(format!("moving {from}/{uid} to {to}"))
    }
    fn change_flags(
        &self,
        mailbox: &MailboxName,
        uids: &[u32],
        _change: &FlagChange,
    ) -> Result<()> {
        refuse(format!(
            "changing the flags of {} message(s) in {mailbox}",
            uids.len()
        ))
    }
    fn save(&self, mailbox: &MailboxName, _message: &[u8]) -> Result<Option<u32>> {
        refuse(format!("saving into {mailbox}"))
    }
    fn create_mailbox(&self, name: &MailboxName) -> Result<()> {
        refuse(format!("creating {name}"))
    }
    fn delete_mailbox(&self, name: &MailboxName) -> Result<()> {
        refuse(format!("deleting {name}"))
    }
    fn rename_mailbox(&self, from: &MailboxName, to: &MailboxName) -> Result<()> {
        refuse(format!("renaming {from} to {to}"))
    }
    fn accepts_changes(&self) -> bool {
        false
    }
}
