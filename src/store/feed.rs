//! How a store tells a watcher that what it returned may have changed: by naming the
//! files to watch, or by pushing the news itself. `coherence` consumes both without
//! knowing which backend it watches.
//!
//! - [`Feed::Paths`]: a local store's views and lists are built from files; a watcher
//!   puts inotify watches on their directories (or re-checks them every poll).
//! - [`Feed::Pushed`]: the store learns of changes by itself (an IMAP session in IDLE, a
//!   store kept in memory) and calls the [`ChangeNotifier`] given to
//!   [`MailStore::subscribe`](super::MailStore::subscribe). A watcher in poll mode still
//!   re-checks such targets every interval.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::Target;

/// What a watcher must do to hear of a target's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// Watch these files and directories: a change in them can change the target.
    Paths(Vec<PathBuf>),
    /// Nothing: the store pushes the target's changes to its [`ChangeNotifier`].
    Pushed,
    /// Nothing known yet (the target was never built, or the store dropped it from its
    /// cache): the watcher keeps whatever it had.
    Unknown,
}

/// What a store pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// This target may have changed.
    Target(Target),
    /// Anything may have changed (a reconnection, a lost event stream).
    Everything,
}

/// Where a store pushes its changes: cheap to clone, callable from any thread, never
/// blocking (it queues and wakes the watcher).
#[derive(Clone)]
pub struct ChangeNotifier(Arc<dyn Fn(Pushed) + Send + Sync>);

impl ChangeNotifier {
    /// A notifier that calls `f`.
    pub fn new(f: impl Fn(Pushed) + Send + Sync + 'static) -> ChangeNotifier {
        ChangeNotifier(Arc::new(f))
    }

    /// Tells the watcher.
    pub fn notify(&self, what: Pushed) {
        (self.0)(what);
    }
}

impl fmt::Debug for ChangeNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChangeNotifier")
    }
}
