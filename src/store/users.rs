//! A tree of users from a multi-user location template (`/srv/mail/%2.256Nu/%u`): the
//! top level is one non-selectable entry per user, and each user's mailboxes sit below it
//! (`["bob", "Work", "Sub"]`).
//!
//! Users are found by walking the template's directories ([`Template::match_level`]) and
//! keeping only paths that expand back from the user name they give. Each user's store is
//! opened on first use, from the template expanded for that user (a bare-path template is
//! auto-detected per user, so formats may be mixed), and kept in an LRU of
//! `users_cached` stores; each of those keeps at most `views_per_user` parsed views. So
//! memory is bounded by `users_cached * views_per_user` views, however many users there are.
//!
//! Scopes: this store lists one scope per user ([`MailStore::scope_depth`] = 1), so a
//! listing of the top level never opens a user's store.
//!
//! Locks: `users` and `stores` are leaf mutexes held only to clone an `Arc` out or put one
//! in; scanning and opening happen outside them.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, warn};
use lru::LruCache;
use parking_lot::Mutex;

use super::stamp::Stamp;
use super::{
    MailStore, MailboxEntry, MailboxName, MailboxView, MessageKey, MessageSource, Target, files,
};
use crate::error::{Error, Result};
use crate::location::template::Bindings;
use crate::location::{Location, Template};

/// The users found by one scan.
#[derive(Debug)]
struct UserList {
    /// One entry per user (`[user]`, not selectable), sorted.
    entries: Arc<Vec<MailboxEntry>>,
    /// Each user's mail root.
    roots: BTreeMap<String, PathBuf>,
    /// The directories scanned.
    stamp: Stamp,
}

/// A store's own mailbox list, and the same list as presented below the user's level.
type Presented = (Arc<Vec<MailboxEntry>>, Arc<Vec<MailboxEntry>>);

/// One opened user store, with its mailbox list as presented (prefixed by the user).
#[derive(Debug)]
struct UserStore {
    store: Arc<dyn MailStore>,
    /// (the store's own list, the same list below the user's level).
    presented: Mutex<Option<Presented>>,
}

/// Every user of a template.
#[derive(Debug)]
pub struct UsersStore {
    template: Template,
    users: Mutex<Option<Arc<UserList>>>,
    stores: Mutex<LruCache<String, Arc<UserStore>>>,
    views_per_user: usize,
}

impl UsersStore {
    /// Checks the template's base directory (it must exist and not be empty: an empty one
    /// is more likely an unmounted filesystem than a tree without users).
    pub fn open(template: Template, users_cached: usize, views_per_user: usize) -> Result<Self> {
        files::check_store_root(template.base())?;
        Ok(UsersStore {
            template,
            users: Mutex::new(None),
            stores: Mutex::new(LruCache::new(
                NonZeroUsize::new(users_cached).unwrap_or(NonZeroUsize::MIN),
            )),
            views_per_user: views_per_user.max(1),
        })
    }

    /// The current user list (rescanned when a scanned directory changed).
    fn user_list(&self) -> Result<Arc<UserList>> {
        let cached = self.users.lock().clone();
        if let Some(list) = cached
            && list.stamp.still_valid()
        {
            return Ok(list);
        }
        let list = Arc::new(self.scan()?);
        *self.users.lock() = Some(list.clone());
        Ok(list)
    }

    /// Walks the template's directories level by level.
    fn scan(&self) -> Result<UserList> {
        let t = &self.template;
        let mut stamp = Stamp::take(Vec::new());
        let mut frontier: Vec<(PathBuf, Bindings)> =
            vec![(t.base().to_path_buf(), Bindings::default())];
        for level in 0..t.levels() {
            let mut next = Vec::new();
            for (dir, above) in frontier {
                if let Some(name) = t.literal_level(level) {
                    next.push((dir.join(name), above));
                    continue;
                }
                stamp.push(dir.clone());
                let entries = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    // A literal level that does not exist: no user below it.
                    Err(e) if level > 0 && e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(&dir, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io(&dir, e))?;
                    let file_name = entry.file_name();
                    let Some(name) = file_name.to_str() else {
                        debug!("{}: not UTF-8, not a user", entry.path().display());
                        continue;
                    };
                    if name.starts_with('.') || !files::is_dir_following_links(&entry) {
                        continue;
                    }
                    for b in t.match_level(level, name, &above) {
                        next.push((entry.path(), b));
                    }
                }
            }
            frontier = next;
        }
        let mut roots: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut entries = Vec::new();
        for (path, b) in frontier {
            let Some(user) = t.user_of(&b) else { continue };
            let expected = t.root_for(&user);
            if expected != path {
                debug!(
                    "{}: not where user {user:?} lives ({}); skipped",
                    path.display(),
                    expected.display()
                );
                continue;
            }
            if user.contains(':') || user.contains('/') {
                warn!(
                    "{}: user name {user:?} cannot be used in a location",
                    path.display()
                );
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue; // the literal tail of the mail root does not exist: no mail yet
            };
            if !meta.is_dir() || roots.contains_key(&user) {
                continue;
            }
            entries.push(MailboxEntry {
                name: MailboxName(vec![user.clone()]),
                selectable: false,
                owner: files::owner_of(&meta),
                mtime: meta.mtime(),
            });
            roots.insert(user, path);
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(UserList {
            entries: Arc::new(entries),
            roots,
            stamp,
        })
    }

    /// The store of `user`, opened on first use.
    fn user_store(&self, user: &str) -> Result<Arc<UserStore>> {
        let list = self.user_list()?;
        if !list.roots.contains_key(user) {
            return Err(Error::not_found(format!("user {user}")));
        }
        if let Some(s) = self.stores.lock().get(user).cloned() {
            return Ok(s);
        }
        let location = self.template.expand(user);
        let loc = Location::parse(&location).map_err(|e| match e {
            Error::Location { what, .. } => Error::Location {
                location: format!("{location} (user {user})"),
                what,
            },
            other => other,
        })?;
        let store = Arc::new(UserStore {
            store: super::open_single(&loc, self.views_per_user)?,
            presented: Mutex::new(None),
        });
        self.stores.lock().put(user.to_string(), store.clone());
        Ok(store)
    }

    /// Splits `[user, rest...]`.
    fn split(name: &MailboxName) -> Result<(&str, MailboxName)> {
        match name.0.split_first() {
            Some((user, rest)) if !rest.is_empty() => Ok((user, MailboxName(rest.to_vec()))),
            _ => Err(Error::not_found(format!("mailbox {name}"))),
        }
    }
}

impl MailStore for UsersStore {
    fn scope_depth(&self) -> usize {
        1
    }

    fn mailboxes(&self, scope: &MailboxName) -> Result<Arc<Vec<MailboxEntry>>> {
        let Some(user) = scope.0.first() else {
            return Ok(self.user_list()?.entries.clone());
        };
        let list = self.user_list()?;
        let me = list
            .entries
            .iter()
            .find(|e| e.name.0[0] == *user)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("user {user}")))?;
        let us = self.user_store(user)?;
        let inner = us.store.mailboxes(&MailboxName(Vec::new()))?;
        if let Some((source, presented)) = us.presented.lock().as_ref()
            && Arc::ptr_eq(source, &inner)
        {
            return Ok(presented.clone());
        }
        let mut out = Vec::with_capacity(inner.len() + 1);
        out.push(me);
        for e in inner.iter() {
            let mut name = Vec::with_capacity(e.name.0.len() + 1);
            name.push(user.clone());
            name.extend(e.name.0.iter().cloned());
            out.push(MailboxEntry {
                name: MailboxName(name),
                ..e.clone()
            });
        }
        let presented = Arc::new(out);
        *us.presented.lock() = Some((inner, presented.clone()));
        Ok(presented)
    }

    fn view(&self, mailbox: &MailboxName) -> Result<Arc<MailboxView>> {
        let (user, inner) = Self::split(mailbox)?;
        self.user_store(user)?.store.view(&inner)
    }

    fn open(
        &self,
        mailbox: &MailboxName,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource> {
        let (user, inner) = Self::split(mailbox)?;
        self.user_store(user)?.store.open(&inner, view, key)
    }

    fn root(&self) -> &Path {
        self.template.base()
    }

    fn watch_paths(&self, target: &Target) -> Vec<PathBuf> {
        let (user, inner) = match target {
            Target::Scope(scope) => match scope.0.first() {
                None => {
                    return self
                        .users
                        .lock()
                        .as_ref()
                        .map(|l| l.stamp.paths().to_vec())
                        .unwrap_or_default();
                }
                Some(user) => (user.as_str(), Target::Scope(MailboxName(Vec::new()))),
            },
            Target::Mailbox(name) => match Self::split(name) {
                Ok((user, rest)) => (user, Target::Mailbox(rest)),
                Err(_) => return Vec::new(),
            },
        };
        let store = self.stores.lock().peek(user).cloned();
        store
            .map(|s| s.store.watch_paths(&inner))
            .unwrap_or_default()
    }
}
