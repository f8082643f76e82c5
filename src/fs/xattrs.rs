//! Extended attributes: `user.mail.*` on messages, `user.mailbox.*` on mailbox
//! directories, and `user.mailfs.status` (settings and counters) on the mount root.
//!
//! Invariant: what `listxattr` lists is a function of the store alone. The status report's
//! counters move with every request, so it is readable by name (getxattr) but never listed:
//! `rsync -aX` and `tar --xattrs` copy what is listed, and a backup of an unchanged store
//! must be a no-op.

use std::sync::atomic::{AtomicU64, Ordering};

use fuser::ReplyXattr;

use super::MailFs;
use super::inode::Node;
use crate::error::Result;
use crate::store::{MailboxName, MessageKey};

/// Xattrs answered by name but left out of `listxattr` (see the module invariant).
const UNLISTED: &[&str] = &["user.mailfs.status"];

/// True for an xattr `listxattr` names.
pub(super) fn listed(name: &str) -> bool {
    !UNLISTED.contains(&name)
}

/// Replies to a getxattr/listxattr size probe or data request.
pub(super) fn reply_xattr_bytes(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(fuser::Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl MailFs {
    /// `user.mailfs.status`: settings in force and counters, one `key: value` per line.
    pub(super) fn status(&self) -> String {
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
            "open_mode: {}\nkernel_opens: {}\npassthrough: {}\nopens_served: {}\nreads_served: {}\n\
             listings_served: {}",
            self.open_mode.as_str(),
            self.kernel_opens,
            self.passthrough.load(Ordering::Relaxed),
            load(&self.opens),
            load(&self.reads),
            load(&self.listings)
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
            "view_cache_hits: {}\nview_cache_misses: {}\nview_continuations: {}\n\
             views_unchanged: {}\nlist_cache_hits: {}\nlist_cache_misses: {}",
            load(&stats.view_hits),
            load(&stats.view_builds),
            load(&stats.view_continuations),
            load(&stats.views_unchanged),
            load(&stats.list_hits),
            load(&stats.list_builds)
        );
        let _ = writeln!(
            out,
            "decoder_starts: {}
decoded_cache_bytes: {}",
            load(&stats.decoder_starts),
            ctx.decoded.bytes()
        );
        let _ = writeln!(
            out,
            "listing_file_reads: {}",
            load(&stats.listing_file_reads)
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
        if let Some(p) = self.prefetch.get() {
            let st = p.stats();
            let _ = writeln!(
                out,
                "prefetched_messages: {}\nprefetched_bytes: {}\nprefetch_skipped: {}\n\
                 prefetch_advised: {}",
                load(&st.messages),
                load(&st.bytes),
                load(&st.skipped),
                load(&st.advised)
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

    /// The xattrs of a node, in listing order.
    pub(super) fn xattrs(&self, node: &Node) -> Result<Vec<(&'static str, Vec<u8>)>> {
        match node {
            Node::Folder(name) => {
                let tree = self.tree(name)?;
                let folder = tree.folder(name)?;
                let mut out = Vec::new();
                if folder.sub.is_some() {
                    return Ok(out); // cur/, new/, tmp/ of the Maildir layout
                }
                if name.0.is_empty() {
                    out.push(("user.mailfs.status", self.status().into_bytes()));
                }
                // The mailbox's own name, without the scope (user) levels above it.
                let depth = self.store.scope_depth();
                if name.0.len() > depth {
                    let own = MailboxName(name.0[depth..].to_vec());
                    out.push(("user.mailbox.name", own.to_string().into_bytes()));
                }
                if let Some(view) = self.mailbox_view(folder)? {
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
                out.push(("user.mail.guid", meta.guid_text().as_bytes().to_vec()));
                out.push(("user.mail.flags", view.flags_string(meta).into_bytes()));
                out.push(("user.mail.received", meta.received.to_string().into_bytes()));
                out.push(("user.mail.saved", meta.saved.to_string().into_bytes()));
                out.push((
                    "user.mail.vsize",
                    meta.virtual_size.to_string().into_bytes(),
                ));
                out
            }),
            // A file being written has no metadata yet.
            Node::Staged(_) => Ok(Vec::new()),
        }
    }
}
