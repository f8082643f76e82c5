//! The caching decorator over the file backends: [`Cached`] keeps a backend's mailbox
//! list and views while the stamps of the files they were built from match, and gives
//! each view build its predecessor to continue from (see `cache`). A backend
//! ([`Backend`]) only scans, builds and opens; the `MailStore` answers, the cache, the
//! change feed (the stamped paths) and the one-build-per-mailbox gate are here, once.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::cache::{Built, ListCache, MailboxList, ViewCache};
use super::{
    Feed, MailStore, MailboxEntry, MailboxName, MailboxView, MessageKey, MessageSource, Presented,
    StoreContext, Target,
};
use crate::error::{Error, Result};

/// A storage format read from files.
pub(super) trait Backend: Send + Sync + fmt::Debug {
    /// Where one selectable mailbox's files are.
    type Paths: Clone + fmt::Debug + Send + Sync;
    /// What a view build leaves for the next build of the same mailbox.
    type Extra: fmt::Debug + Send + Sync;

    /// Walks the store: every mailbox, with the stamp of what was read.
    fn scan(&self) -> Result<MailboxList<Self::Paths>>;
    /// Refuses a store whose first scan shows it is not what the location says.
    fn check(&self, list: &MailboxList<Self::Paths>) -> Result<()>;
    /// Builds the view of mailbox `name` (at `paths`), continuing from `previous` (the
    /// last build of the same mailbox) where it can.
    fn build(
        &self,
        name: &MailboxName,
        paths: &Self::Paths,
        previous: Option<&Built<Self::Extra>>,
    ) -> Result<Built<Self::Extra>>;
    /// Opens message `key` of `view` (built for the mailbox at `paths`).
    fn open(
        &self,
        paths: &Self::Paths,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource>;
    /// Advice that message `key` of `view` will be read soon ([`MailStore::will_need`]);
    /// nothing by default.
    fn will_need(
        &self,
        _paths: &Self::Paths,
        _view: &MailboxView,
        _key: &MessageKey,
    ) -> Result<()> {
        Ok(())
    }
    /// The store's root directory.
    fn root(&self) -> &Path;
    /// Settings and counters.
    fn context(&self) -> &Arc<StoreContext>;
}

/// A backend with its list and views cached.
#[derive(Debug)]
pub(super) struct Cached<B: Backend> {
    backend: B,
    list: ListCache<B::Paths>,
    views: ViewCache<B::Extra>,
}

impl<B: Backend> Cached<B> {
    /// Wraps `backend`, keeping at most `views` views; scans the store once and lets
    /// the backend check it.
    pub(super) fn open(backend: B, views: usize) -> Result<Cached<B>> {
        let ctx = backend.context().clone();
        let cached = Cached {
            list: ListCache::new(&ctx),
            views: ViewCache::new(&ctx, views.max(1)),
            backend,
        };
        let list = cached.list()?;
        cached.backend.check(&list)?;
        Ok(cached)
    }

    fn list(&self) -> Result<Arc<MailboxList<B::Paths>>> {
        self.list.get(|| self.backend.scan())
    }

    fn paths_of(&self, mailbox: &MailboxName) -> Result<B::Paths> {
        self.list()?
            .paths
            .get(mailbox)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("mailbox {mailbox}")))
    }
}

impl<B: Backend> MailStore for Cached<B> {
    fn mailboxes(&self, _scope: &MailboxName) -> Result<Arc<Vec<MailboxEntry>>> {
        Ok(self.list()?.entries.clone())
    }

    fn view(&self, mailbox: &MailboxName) -> Result<Arc<MailboxView>> {
        self.views.get(mailbox, |previous| {
            let paths = self.paths_of(mailbox)?;
            self.backend.build(mailbox, &paths, previous)
        })
    }

    /// `view.name` is this store's own name of the mailbox (a multi-user store passes the
    /// name with the user level in `_mailbox`).
    fn open(
        &self,
        _mailbox: &MailboxName,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource> {
        let paths = self.paths_of(&view.name)?;
        self.backend.open(&paths, view, key)
    }

    fn will_need(
        &self,
        _mailbox: &MailboxName,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<()> {
        let paths = self.paths_of(&view.name)?;
        self.backend.will_need(&paths, view, key)
    }

    fn local_root(&self) -> Option<&Path> {
        Some(self.backend.root())
    }

    fn root_attrs(&self) -> Result<Presented> {
        Ok(self.list()?.root)
    }

    fn feed(&self, target: &Target) -> Feed {
        let paths = match target {
            Target::Scope(_) => self.list.watch_paths(),
            Target::Mailbox(name) => self.views.watch_paths(name),
        };
        if paths.is_empty() {
            Feed::Unknown
        } else {
            Feed::Paths(paths)
        }
    }

    fn context(&self) -> &Arc<StoreContext> {
        self.backend.context()
    }
}
