//! Directory listings: `.`, `..` and sub-folders made at the first `readdir`, messages
//! made from the view as the kernel reads them.

use std::ffi::OsString;
use std::sync::Arc;

use fuser::FileHandle;

use super::MailFs;
use super::handles::{Handle, Listed, Listing};
use super::inode::Node;
use crate::error::Result;
use crate::store::MailboxName;

impl MailFs {
    /// The entries of a folder, `.` and `..` first.
    pub(super) fn list(&self, ino: u64, name: &Arc<MailboxName>) -> Result<Listing> {
        let tree = self.tree(name)?;
        let folder = tree.folder(name)?;
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
        for staged in self.staging.writing_in(name) {
            let node = Node::Staged(staged.id);
            let attr = Self::staged_attr(self.inodes.peek_ino(&node), &staged);
            out.push(Listed {
                name: staged.place().1,
                node,
                attr,
                broken: false,
            });
        }
        // Messages belong to the mailbox, also when listed in its Maildir `cur/`.
        let mailbox = match (&folder.sub, folder.entry()) {
            (Some(_), Some(e)) => Arc::new(e.name.clone()),
            _ => name.clone(),
        };
        let messages = self.folder_view(folder)?.map(|view| (view, mailbox));
        Ok(Listing {
            head: out,
            messages,
        })
    }

    /// The entries of `listing` from position `start` on, with their positions.
    pub(super) fn entries_from<'a>(
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
                    let attr = self.message_attr(self.inodes.peek_ino(&node), &meta);
                    let listed = Listed {
                        name: self.naming.listed_name(view, &meta),
                        node,
                        attr,
                        broken: meta.problem.is_some(),
                    };
                    (head + start.saturating_sub(head) + i, listed)
                })
        });
        heads.chain(messages)
    }

    /// The listing of an open directory, made at its first use.
    pub(super) fn dir_listing(
        &self,
        fh: FileHandle,
    ) -> std::result::Result<Arc<Listing>, fuser::Errno> {
        let Some(Handle::Dir(dir)) = self.handles.get(fh.0) else {
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
}
