//! The folder hierarchy as presented: built from one scope's mailbox list (names
//! escaped, every level a directory), and the store's views of the folders that are
//! mailboxes, each registered with the watcher when shown.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::sync::Arc;

use super::MailFs;
use super::naming::{Layout, Naming, Sub};
use crate::coherence::Snapshot;
use crate::error::{Error, Result};
use crate::store::{MailboxEntry, MailboxName, MailboxView, Presented, Target};

/// A directory's children as presented: sub-folders by presented name.
#[derive(Debug, Default)]
pub(super) struct Folder {
    /// The mailbox at this level, if the store has one (selectable or not); for a
    /// Maildir layout sub-directory, the mailbox it belongs to: see [`Folder::entry`].
    entry: Option<EntryAt>,
    /// In the Maildir layout, which of the mailbox's `cur/`, `new/`, `tmp/` this is; its
    /// name is the mailbox's with the hidden level [`Sub::level`] appended.
    pub sub: Option<Sub>,
    /// Presented name -> child folder name.
    pub children: BTreeMap<OsString, Arc<MailboxName>>,
}

/// An entry of a tree's mailbox list, by position (the list is shared, not copied: a tree
/// of ten thousand users would otherwise hold every name twice).
#[derive(Debug, Clone)]
struct EntryAt {
    list: Arc<Vec<MailboxEntry>>,
    at: u32,
}

impl Folder {
    /// The mailbox at this level, if the store has one (selectable or not); for a
    /// Maildir layout sub-directory, the mailbox it belongs to.
    pub(super) fn entry(&self) -> Option<&MailboxEntry> {
        self.entry.as_ref().map(|e| &e.list[e.at as usize])
    }
}

/// The folder hierarchy built from one mailbox list.
///
/// Each folder's name is stored once: the key of `folders` is the same `Arc` as its
/// parent's `children` entry (and as the inode table's node, once looked up). A tree of
/// ten thousand users is one scope of ten thousand folders.
#[derive(Debug)]
pub(super) struct FolderTree {
    pub source: Arc<Vec<MailboxEntry>>,
    pub folders: HashMap<Arc<MailboxName>, Folder>,
    /// How the mount root (and any level with no entry of its own) is presented.
    pub root: Presented,
}

impl FolderTree {
    pub(super) fn build(
        source: Arc<Vec<MailboxEntry>>,
        root: Presented,
        naming: Naming,
    ) -> FolderTree {
        let mut folders: HashMap<Arc<MailboxName>, Folder> = HashMap::new();
        folders.insert(Arc::new(MailboxName(Vec::new())), Folder::default());
        // The name stored once, in `folders` (inserted empty if new).
        let intern = |folders: &mut HashMap<Arc<MailboxName>, Folder>, name: MailboxName| {
            if let Some((known, _)) = folders.get_key_value(&name) {
                return known.clone();
            }
            let known = Arc::new(name);
            folders.insert(known.clone(), Folder::default());
            known
        };
        for (at, entry) in source.iter().enumerate() {
            let entry_at = EntryAt {
                list: source.clone(),
                at: u32::try_from(at).expect("fewer than 2^32 mailboxes in a list"),
            };
            let levels = &entry.name.0;
            for depth in 1..=levels.len() {
                let name = intern(&mut folders, MailboxName(levels[..depth].to_vec()));
                let parent = intern(&mut folders, MailboxName(levels[..depth - 1].to_vec()));
                let presented = naming.folder_name(&levels[depth - 1]);
                if let Some(p) = folders.get_mut(&parent) {
                    p.children.entry(presented).or_insert(name);
                }
            }
            if let Some(f) = folders.get_mut(&entry.name) {
                f.entry = Some(entry_at.clone());
            }
            if naming.layout == Layout::Maildir && entry.selectable {
                for sub in Sub::ALL {
                    let mut levels = entry.name.0.clone();
                    levels.push(sub.level());
                    let name = Arc::new(MailboxName(levels));
                    if let Some(f) = folders.get_mut(&entry.name) {
                        f.children.insert(sub.name().into(), name.clone());
                    }
                    folders.insert(
                        name,
                        Folder {
                            entry: Some(entry_at.clone()),
                            sub: Some(sub),
                            children: BTreeMap::new(),
                        },
                    );
                }
            }
        }
        FolderTree {
            source,
            folders,
            root,
        }
    }

    /// The folder `name`; not-found when this tree has no such level.
    pub(super) fn folder(&self, name: &MailboxName) -> Result<&Folder> {
        self.folders
            .get(name)
            .ok_or_else(|| Error::not_found(format!("folder {name}")))
    }
}

impl MailFs {
    /// The folder tree of the scope `folder` belongs to, rebuilt when the store's list
    /// for that scope changed.
    pub(super) fn tree(&self, folder: &MailboxName) -> Result<Arc<FolderTree>> {
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

    /// The view whose messages a folder lists: a selectable mailbox's in the eml layout,
    /// its `cur/`'s in the Maildir layout; `None` for a plain hierarchy level, a Maildir
    /// layout mailbox directory itself, `new/` and `tmp/`.
    pub(super) fn folder_view(&self, folder: &Folder) -> Result<Option<Arc<MailboxView>>> {
        let lists = match folder.sub {
            Some(sub) => sub == Sub::Cur,
            None => self.naming.layout == Layout::Eml,
        };
        match folder.entry() {
            Some(e) if e.selectable && lists => Ok(Some(self.view(&e.name)?)),
            _ => Ok(None),
        }
    }

    /// The view of the mailbox a folder is (not one of its Maildir sub-directories), for
    /// its `user.mailbox.*` xattrs.
    pub(super) fn mailbox_view(&self, folder: &Folder) -> Result<Option<Arc<MailboxView>>> {
        match folder.entry() {
            Some(e) if e.selectable && folder.sub.is_none() => Ok(Some(self.view(&e.name)?)),
            _ => Ok(None),
        }
    }

    /// The store's current view of `mailbox`, registered with the watcher, and with the
    /// change clock of its directory's times (`dirtimes`).
    pub(super) fn view(&self, mailbox: &MailboxName) -> Result<Arc<MailboxView>> {
        let view = self.store.view(mailbox)?;
        self.dir_times.observe(mailbox, &view);
        if let Some(w) = &self.watcher {
            w.watch(
                &Target::Mailbox(mailbox.clone()),
                Snapshot::Mailbox(view.clone()),
            );
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileOwner;

    /// Every folder's name is one allocation: its parent's `children` entry is the very
    /// `Arc` that keys `folders` (and every level, Maildir sub-directories included, is
    /// reachable from the root).
    #[test]
    fn folder_names_are_stored_once() {
        let entry = |name: &str, selectable| MailboxEntry {
            name: MailboxName::parse(name),
            selectable,
            owner: FileOwner::default(),
            mtime: 0,
        };
        let source = Arc::new(vec![
            entry("bob", false),
            entry("bob/INBOX", true),
            entry("bob/Work/Sub", true),
            entry("carol/INBOX", true),
        ]);
        for layout in [Layout::Eml, Layout::Maildir] {
            let naming = Naming {
                portable: false,
                layout,
            };
            let tree = FolderTree::build(source.clone(), (FileOwner::default(), 0), naming);
            let mut reached = 1; // the root
            for folder in tree.folders.values() {
                for child in folder.children.values() {
                    let (key, _) = tree.folders.get_key_value(&**child).expect("a folder");
                    assert!(Arc::ptr_eq(key, child), "{child} stored twice");
                    reached += 1;
                }
            }
            assert_eq!(reached, tree.folders.len(), "{layout:?}");
        }
    }
}
