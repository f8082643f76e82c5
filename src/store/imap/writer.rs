//! Changes through an IMAP mount (`--rw`), carried out by the server: `UID EXPUNGE`
//! (RFC 4315: only the named UIDs, never other `\Deleted` messages), `UID MOVE` (RFC 6851,
//! COPYUID gives the new UID), `UID STORE`, `APPEND` (APPENDUID gives the new UID),
//! `CREATE`, `DELETE`, `RENAME`. Each returns once the server's tagged OK came; the
//! mailboxes it touched are then marked stale, so the next look shows the change.

use std::sync::Arc;

use super::{Inner, split_name};
use crate::error::{Error, Refusal, Result};
use crate::imap::{ImapError, StoreOp};
use crate::store::{FlagChange, MailWriter, MailboxName};

/// The writer of an IMAP store.
#[derive(Debug)]
pub struct ImapWriter {
    inner: Arc<Inner>,
}

impl ImapWriter {
    pub(super) fn new(inner: Arc<Inner>) -> ImapWriter {
        ImapWriter { inner }
    }

    /// The server name of a new mailbox: its levels joined with the server's separator.
    fn new_server_name(&self, name: &MailboxName) -> Result<String> {
        self.inner.mailboxes()?;
        let sep = self.inner.state.lock().separator.unwrap_or('/');
        if name.0.iter().any(|l| l.contains(sep)) {
            return Err(Error::refused(
                Refusal::Invalid,
                format!("{name}: a level holds the server's hierarchy separator {sep:?}"),
            ));
        }
        let server = name.0.join(&sep.to_string());
        debug_assert_eq!(split_name(&server, Some(sep)), *name);
        Ok(server)
    }

    /// Runs `f` on a session with `server` selected read-write.
    fn in_mailbox<T>(
        &self,
        server: &str,
        what: &str,
        f: impl FnOnce(&mut crate::imap::Session) -> std::result::Result<T, ImapError>,
    ) -> Result<T> {
        self.inner.pool.with(what, |p| {
            // Reads keep an EXAMINEd mailbox; a change needs it SELECTed.
            p.selected = None;
            p.session.select(server, false, None)?;
            f(&mut p.session)
        })
    }
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl MailWriter for ImapWriter {
    fn expunge(&self, mailbox: &MailboxName, uids: &[u32]) -> Result<()> {
        let server = self.inner.server_name(mailbox)?;
        let set = uid_set(uids);
        let done = self.in_mailbox(&server, &format!("UID EXPUNGE {set} in {server}"), |s| {
            s.uid_expunge(&set)
        });
        self.inner.changed(mailbox);
        done
    }

    fn move_message(&self, from: &MailboxName, uid: u32, to: &MailboxName) -> Result<Option<u32>> {
        let server = self.inner.server_name(from)?;
        let target = self.inner.server_name(to)?;
        let done = self.in_mailbox(
            &server,
            &format!("UID MOVE {uid} from {server} to {target}"),
            |s| s.uid_move(&uid.to_string(), &target),
        );
        self.inner.changed(from);
        self.inner.changed(to);
        done
    }

    fn change_flags(&self, mailbox: &MailboxName, uids: &[u32], change: &FlagChange) -> Result<()> {
        let server = self.inner.server_name(mailbox)?;
        let set = uid_set(uids);
        let (op, flags) = match change {
            FlagChange::Replace(f) => (StoreOp::Replace, f),
            FlagChange::Add(f) => (StoreOp::Add, f),
            FlagChange::Remove(f) => (StoreOp::Remove, f),
        };
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let done = self.in_mailbox(&server, &format!("UID STORE {set} in {server}"), |s| {
            s.uid_store(&set, op, &flags)
        });
        self.inner.changed(mailbox);
        done
    }

    fn save(&self, mailbox: &MailboxName, message: &[u8]) -> Result<Option<u32>> {
        let server = self.inner.server_name(mailbox)?;
        let done = self.inner.pool.with(&format!("APPEND to {server}"), |p| {
            p.session.append(&server, &[], message)
        });
        self.inner.changed(mailbox);
        done
    }

    fn create_mailbox(&self, name: &MailboxName) -> Result<()> {
        let server = self.new_server_name(name)?;
        let done = self
            .inner
            .pool
            .with(&format!("CREATE {server}"), |p| p.session.create(&server));
        self.inner.list_changed();
        done
    }

    fn delete_mailbox(&self, name: &MailboxName) -> Result<()> {
        let server = self.inner.server_name(name)?;
        // DELETE removes a mailbox with its messages: refused unless it is empty, checked
        // on the server right before (STATUS); a delivery in between is the one race left.
        let messages = self.inner.pool.with(&format!("STATUS {server}"), |p| {
            p.session.status(&server).map(|s| s.messages)
        })?;
        if messages > 0 {
            return Err(Error::refused(
                Refusal::NotEmpty,
                format!("{name}: holds {messages} messages"),
            ));
        }
        let done = self.inner.pool.with(&format!("DELETE {server}"), |p| {
            if p.selected.as_deref() == Some(server.as_str()) {
                p.selected = None;
                p.session.select("INBOX", true, None)?;
            }
            p.session.delete(&server)
        });
        self.inner.list_changed();
        done
    }

    fn rename_mailbox(&self, from: &MailboxName, to: &MailboxName) -> Result<()> {
        let server = self.inner.server_name(from)?;
        let target = self.new_server_name(to)?;
        let done = self
            .inner
            .pool
            .with(&format!("RENAME {server} to {target}"), |p| {
                if p.selected.as_deref() == Some(server.as_str()) {
                    p.selected = None;
                }
                p.session.rename(&server, &target)
            });
        self.inner.list_changed();
        done
    }
}
