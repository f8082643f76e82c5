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
    /// Maildir layout sub-directory, the mailbox it belongs to.
    pub entry: Option<MailboxEntry>,
    /// In the Maildir layout, which of the mailbox's `cur/`, `new/`, `tmp/` this is; its
    /// name is the mailbox's with the hidden level [`Sub::level`] appended.
    pub sub: Option<Sub>,
    /// Presented name -> child folder name.
    pub children: BTreeMap<OsString, Arc<MailboxName>>,
}

/// The folder hierarchy built from one mailbox list.
#[derive(Debug)]
pub(super) struct FolderTree {
    pub source: Arc<Vec<MailboxEntry>>,
    pub folders: HashMap<MailboxName, Folder>,
    /// How the mount root (and any level with no entry of its own) is presented.
    pub root: Presented,
}

impl FolderTree {
    pub(super) fn build(
        source: Arc<Vec<MailboxEntry>>,
        root: Presented,
        naming: Naming,
    ) -> FolderTree {
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
            if naming.layout == Layout::Maildir && entry.selectable {
                for sub in Sub::ALL {
                    let mut levels = entry.name.0.clone();
                    levels.push(sub.level());
                    let name = MailboxName(levels);
                    if let Some(f) = folders.get_mut(&entry.name) {
                        f.children.insert(sub.name().into(), Arc::new(name.clone()));
                    }
                    folders.insert(
                        name,
                        Folder {
                            entry: Some(entry.clone()),
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
        match &folder.entry {
            Some(e) if e.selectable && lists => Ok(Some(self.view(&e.name)?)),
            _ => Ok(None),
        }
    }

    /// The view of the mailbox a folder is (not one of its Maildir sub-directories), for
    /// its `user.mailbox.*` xattrs.
    pub(super) fn mailbox_view(&self, folder: &Folder) -> Result<Option<Arc<MailboxView>>> {
        match &folder.entry {
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
