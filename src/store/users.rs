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

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, warn};
use lru::LruCache;
use parking_lot::Mutex;

use super::access::{self, Need};
use super::cache::{Presented, present_root};
use super::stamp::Stamp;
use super::{
    ChangeNotifier, Feed, FileOwner, MailStore, MailboxEntry, MailboxName, MailboxView, MessageKey,
    MessageSource, Pushed, StoreContext, Target, files,
};
use crate::error::{Error, Result};
use crate::location::template::Bindings;
use crate::location::{Location, Template};
use crate::sys::{self, EntryKind};

/// The users found by one scan.
#[derive(Debug)]
struct UserList {
    /// One entry per user (`[user]`, not selectable), sorted by name: also the set of
    /// users (a user's mail root is the template's, so none is kept).
    entries: Arc<Vec<MailboxEntry>>,
    /// The directories scanned.
    stamp: Stamp,
    /// How the mount root is presented (see [`super::access`]).
    root: Presented,
}

impl UserList {
    /// True if `user` was found.
    fn has(&self, user: &str) -> bool {
        self.entries
            .binary_search_by(|e| e.name.0.first().map(String::as_str).cmp(&Some(user)))
            .is_ok()
    }
}

/// A store's own mailbox list, and the same list as presented below the user's level.
type UserLists = (Arc<Vec<MailboxEntry>>, Arc<Vec<MailboxEntry>>);

/// One opened user store, with its mailbox list as presented (prefixed by the user).
#[derive(Debug)]
struct UserStore {
    store: Arc<dyn MailStore>,
    /// (the store's own list, the same list below the user's level).
    presented: Mutex<Option<UserLists>>,
}

/// Every user of a template.
#[derive(Debug)]
pub struct UsersStore {
    template: Template,
    /// Settings and counters, shared with every user's store.
    ctx: Arc<StoreContext>,
    /// The template's base with its links resolved (the admin's); below it, nothing is
    /// followed.
    base: PathBuf,
    /// Links met where users could be (logged once each).
    links: files::LinkLog,
    /// Where user stores that push changes push them (see [`MailStore::subscribe`]).
    notifier: Mutex<Option<ChangeNotifier>>,
    users: Mutex<Option<Arc<UserList>>>,
    stores: Mutex<LruCache<String, Arc<UserStore>>>,
    views_per_user: usize,
}

impl UsersStore {
    /// Checks the template's base directory (it must exist and not be empty: an empty one
    /// is more likely an unmounted filesystem than a tree without users).
    pub fn open(
        template: Template,
        ctx: Arc<StoreContext>,
        users_cached: usize,
        views_per_user: usize,
    ) -> Result<Self> {
        files::check_store_root(template.base())?;
        let base = crate::location::resolve_existing(template.base());
        Ok(UsersStore {
            template,
            ctx,
            base,
            links: files::LinkLog::default(),
            notifier: Mutex::new(None),
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

    /// Walks the template's directories level by level, from the resolved base. Links
    /// below the base are never followed (each is logged once).
    fn scan(&self) -> Result<UserList> {
        let t = &self.template;
        let mut stamp = Stamp::take(&self.ctx, Vec::new());
        let mut listed: Vec<(FileOwner, Need)> = Vec::new();
        let mut frontier: Vec<(PathBuf, Bindings)> = vec![(self.base.clone(), Bindings::default())];
        for level in 0..t.levels() {
            let mut next = Vec::new();
            for (dir, above) in frontier {
                if let Some(name) = t.literal_level(level) {
                    next.push((dir.join(name), above));
                    continue;
                }
                stamp.push(dir.clone());
                let handle = match sys::open_dir(&dir) {
                    Ok(d) => d,
                    // A literal level that does not exist: no user below it.
                    Err(e) if level > 0 && e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(&dir, e)),
                };
                // The mount root's listing shows names read here.
                if dir != self.base
                    && let Ok(st) = handle.stat()
                {
                    listed.push((files::owner_of(&st), Need::Read));
                }
                let mut names = Vec::new();
                handle
                    .read(|name, kind| names.push((name.to_os_string(), kind)))
                    .map_err(|e| Error::io(&dir, e))?;
                for (file_name, kind) in names {
                    let Some(name) = file_name.to_str() else {
                        debug!("{}: not UTF-8, not a user", dir.join(&file_name).display());
                        continue;
                    };
                    if name.starts_with('.') {
                        continue;
                    }
                    match handle.kind_of(&file_name, kind) {
                        EntryKind::Dir => {}
                        EntryKind::Symlink => {
                            self.links.note(&dir.join(&file_name));
                            continue;
                        }
                        _ => continue,
                    }
                    for b in t.match_level(level, name, &above) {
                        next.push((dir.join(&file_name), b));
                    }
                }
            }
            frontier = next;
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut entries = Vec::new();
        // Owners of the directories between the base and the users (many users share
        // each: hash buckets, domains), each looked at once per scan.
        let mut owners: HashMap<PathBuf, FileOwner> = HashMap::new();
        for (path, b) in frontier {
            let Some(user) = t.user_of(&b) else { continue };
            let expected = self.root_for(&user);
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
            if seen.contains(&user) {
                continue;
            }
            let Ok(st) = sys::lstat(&path) else {
                continue; // the literal tail of the mail root does not exist: no mail yet
            };
            let presented = if st.is_symlink() {
                // Listed, so that the problem shows: opening the store refuses the link
                // (EIO and a log line), and nobody but root may enter.
                self.links.note(&path);
                FileOwner {
                    uid: 0,
                    gid: 0,
                    mode: 0o500,
                }
            } else if st.is_dir() {
                access::restrict_all(files::owner_of(&st), &self.between(&path, &mut owners))
            } else {
                continue;
            };
            entries.push(MailboxEntry {
                name: MailboxName(vec![user.clone()]),
                selectable: false,
                owner: presented,
                mtime: st.mtime,
            });
            seen.insert(user);
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let root = present_root(&self.base, &[])?;
        let root = (access::restrict_all(root.0, &listed), root.1);
        Ok(UserList {
            entries: Arc::new(entries),
            stamp,
            root,
        })
    }

    /// The mail root of `user` below the resolved base.
    fn root_for(&self, user: &str) -> PathBuf {
        let root = self.template.root_for(user);
        match root.strip_prefix(self.template.base()) {
            Ok(rest) => self.base.join(rest),
            Err(_) => root,
        }
    }

    /// The directories strictly between the base and `path`, each to be traversed (an
    /// unreadable one refuses everyone). `owners` remembers what was looked at.
    fn between(
        &self,
        path: &Path,
        owners: &mut HashMap<PathBuf, FileOwner>,
    ) -> Vec<(FileOwner, Need)> {
        path.ancestors()
            .skip(1)
            .take_while(|d| *d != self.base && d.starts_with(&self.base))
            .map(|d| {
                let owner = *owners.entry(d.to_path_buf()).or_insert_with(|| {
                    sys::lstat(d).map_or(
                        FileOwner {
                            uid: 0,
                            gid: 0,
                            mode: 0,
                        },
                        |st| files::owner_of(&st),
                    )
                });
                (owner, Need::Traverse)
            })
            .collect()
    }

    /// The store of `user`, opened on first use.
    fn user_store(&self, user: &str) -> Result<Arc<UserStore>> {
        let list = self.user_list()?;
        if !list.has(user) {
            return Err(Error::not_found(format!("user {user}")));
        }
        if let Some(s) = self.stores.lock().get(user).cloned() {
            return Ok(s);
        }
        let location = self.template.expand(user);
        let mut loc = Location::parse(&location).map_err(|e| match e {
            Error::Location { what, .. } => Error::Location {
                location: format!("{location} (user {user})"),
                what,
            },
            other => other,
        })?;
        // The admin's directories (above the template's variables) are resolved; what
        // lies below them belongs to the user, and no link there is followed.
        loc.resolve_links(&self.template.anchors());
        let store = Arc::new(UserStore {
            store: super::open_single(&loc, &self.ctx, self.views_per_user)?,
            presented: Mutex::new(None),
        });
        // What the user's store pushes concerns names below the user's level.
        if let Some(outer) = self.notifier.lock().clone() {
            let user = user.to_string();
            store.store.subscribe(ChangeNotifier::new(move |what| {
                let below = |name: &MailboxName| {
                    let mut levels = vec![user.clone()];
                    levels.extend(name.0.iter().cloned());
                    MailboxName(levels)
                };
                outer.notify(match what {
                    Pushed::Target(Target::Scope(_)) => {
                        Pushed::Target(Target::Scope(MailboxName(vec![user.clone()])))
                    }
                    Pushed::Target(Target::Mailbox(name)) => {
                        Pushed::Target(Target::Mailbox(below(&name)))
                    }
                    Pushed::Everything => Pushed::Everything,
                });
            }));
        }
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

    fn will_need(&self, mailbox: &MailboxName, view: &MailboxView, key: &MessageKey) -> Result<()> {
        let (user, inner) = Self::split(mailbox)?;
        self.user_store(user)?.store.will_need(&inner, view, key)
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.base)
    }

    fn root_attrs(&self) -> Result<Presented> {
        Ok(self.user_list()?.root)
    }

    fn context(&self) -> &Arc<StoreContext> {
        &self.ctx
    }

    fn feed(&self, target: &Target) -> Feed {
        let (user, inner) = match target {
            Target::Scope(scope) => match scope.0.first() {
                None => {
                    return self
                        .users
                        .lock()
                        .as_ref()
                        .map_or(Feed::Unknown, |l| Feed::Paths(l.stamp.paths().to_vec()));
                }
                Some(user) => (user.as_str(), Target::Scope(MailboxName(Vec::new()))),
            },
            Target::Mailbox(name) => match Self::split(name) {
                Ok((user, rest)) => (user, Target::Mailbox(rest)),
                Err(_) => return Feed::Unknown,
            },
        };
        let store = self.stores.lock().peek(user).cloned();
        store.map_or(Feed::Unknown, |s| s.store.feed(&inner))
    }

    fn subscribe(&self, notifier: ChangeNotifier) {
        *self.notifier.lock() = Some(notifier);
    }
}
