//! The store root, watched while mounted. A network filesystem that drops away leaves an
//! empty directory (or the mount point's parent filesystem) where the store was; serving
//! that as an empty store would hide the problem, and could make tools act on it. So every
//! store operation first checks that the root still exists, is a non-empty directory, and
//! is on the device it was on at mount time; if not, it fails with a layout error (EIO on
//! the mount), logged once when it starts and once when the store returns.
//!
//! The check is a `stat` plus reading the first directory entry, trusted for
//! [`RECHECK_AFTER`](super::stamp::RECHECK_AFTER) like the other stamps and redone at once
//! after [`recheck_all`](super::stamp::recheck_all).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use log::{info, warn};
use parking_lot::Mutex;

use super::StoreContext;
use super::stamp::RECHECK_AFTER;
use super::{
    ChangeNotifier, Feed, MailStore, MailboxEntry, MailboxName, MailboxView, MessageKey,
    MessageSource, Target,
};
use crate::error::{Error, Result};

/// A store whose root is checked before each operation.
#[derive(Debug)]
pub struct Guarded {
    inner: Arc<dyn MailStore>,
    root: PathBuf,
    dev: u64,
    state: Mutex<State>,
    /// Times the root went bad or came back, as seen by any check.
    transitions: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// When the root was last checked, and the stamp generation then.
    checked: Option<(Instant, u64)>,
    /// What is wrong with the root, if anything.
    problem: Option<Arc<str>>,
}

impl Guarded {
    /// Wraps `inner`, whose root must be usable now.
    pub fn new(inner: Arc<dyn MailStore>) -> Result<Guarded> {
        let root = inner
            .local_root()
            .ok_or_else(|| Error::not_found("a local store root"))?
            .to_path_buf();
        let dev = std::fs::metadata(&root)
            .map_err(|e| Error::io(&root, e))?
            .dev();
        Ok(Guarded {
            inner,
            root,
            dev,
            state: Mutex::new(State {
                checked: None,
                problem: None,
            }),
            transitions: AtomicU64::new(0),
        })
    }

    /// Ok while the root is as it was at mount time.
    fn guard(&self, force: bool) -> Result<()> {
        let generation = self.inner.context().generation();
        {
            let st = self.state.lock();
            if let Some((at, seen)) = st.checked
                && !force
                && seen == generation
                && at.elapsed() < RECHECK_AFTER
            {
                return self.answer(st.problem.as_deref());
            }
        }
        let problem = root_problem(&self.root, self.dev).map(Arc::<str>::from);
        let mut st = self.state.lock();
        match (&st.problem, &problem) {
            (None, Some(p)) => {
                self.transitions.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "{}: {p}; every request fails with EIO until it is back",
                    self.root.display()
                );
            }
            (Some(_), None) => {
                self.transitions.fetch_add(1, Ordering::Relaxed);
                info!("{}: the store root is back", self.root.display());
            }
            _ => {}
        }
        st.problem = problem.clone();
        st.checked = Some((Instant::now(), generation));
        self.answer(problem.as_deref())
    }

    /// Ok, or the layout error every operation gets while the root has `problem`.
    fn answer(&self, problem: Option<&str>) -> Result<()> {
        match problem {
            None => Ok(()),
            Some(p) => Err(Error::layout(&self.root, p)),
        }
    }
}

/// What is wrong with the root now, if anything.
fn root_problem(root: &Path, dev: u64) -> Option<String> {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) => {
            return Some(format!(
                "the store root is gone ({e}): an unmounted or unreachable filesystem?"
            ));
        }
    };
    if !meta.is_dir() {
        return Some("the store root is no longer a directory".into());
    }
    if meta.dev() != dev {
        return Some(format!(
            "the store root moved to another filesystem (device {dev:#x} -> {:#x}): a \
             network filesystem unmounted under it?",
            meta.dev()
        ));
    }
    match std::fs::read_dir(root).map(|mut rd| rd.next().is_none()) {
        Err(e) => Some(format!("the store root cannot be read: {e}")),
        Ok(true) => Some(
            "the store root is empty (an unmounted network filesystem?); not presenting it as \
             an empty store"
                .into(),
        ),
        Ok(false) => None,
    }
}

impl Guarded {
    /// `result` from the inner store, unless the root went bad meanwhile: an error or an
    /// empty list is exactly what an emptied root produces, so before passing one on, the
    /// root is checked again at once (not trusted for `RECHECK_AFTER`).
    fn confirm<T>(&self, result: Result<T>, looks_empty: impl FnOnce(&T) -> bool) -> Result<T> {
        let suspicious = match &result {
            Ok(v) => looks_empty(v),
            Err(_) => true,
        };
        if suspicious {
            self.guard(true)?;
        }
        result
    }
}

impl MailStore for Guarded {
    fn scope_depth(&self) -> usize {
        self.inner.scope_depth()
    }

    fn mailboxes(&self, scope: &MailboxName) -> Result<Arc<Vec<MailboxEntry>>> {
        self.guard(false)?;
        self.confirm(self.inner.mailboxes(scope), |l| l.is_empty())
    }

    fn view(&self, mailbox: &MailboxName) -> Result<Arc<MailboxView>> {
        self.guard(false)?;
        self.confirm(self.inner.view(mailbox), |v| {
            v.messages.is_empty() && v.pending.is_empty()
        })
    }

    fn open(
        &self,
        mailbox: &MailboxName,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource> {
        self.guard(false)?;
        self.confirm(self.inner.open(mailbox, view, key), |_| false)
    }

    fn will_need(&self, mailbox: &MailboxName, view: &MailboxView, key: &MessageKey) -> Result<()> {
        // Advice reads nothing for anyone: no guard check for it (the open that follows
        // makes one).
        self.inner.will_need(mailbox, view, key)
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn root_attrs(&self) -> Result<super::Presented> {
        self.guard(false)?;
        self.inner.root_attrs()
    }

    fn feed(&self, target: &Target) -> Feed {
        self.inner.feed(target)
    }

    fn subscribe(&self, notifier: ChangeNotifier) {
        self.inner.subscribe(notifier);
    }

    fn check_root(&self) -> Result<()> {
        self.guard(true)
    }

    fn root_transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    fn context(&self) -> &Arc<StoreContext> {
        self.inner.context()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_a_root_that_empties_moves_or_goes() {
        let dir = std::env::temp_dir().join(format!("mailfs-guard-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cur")).unwrap();
        let dev = std::fs::metadata(&dir).unwrap().dev();
        assert_eq!(root_problem(&dir, dev), None);
        assert!(
            root_problem(&dir, dev ^ 1)
                .unwrap()
                .contains("another filesystem")
        );
        std::fs::remove_dir(dir.join("cur")).unwrap();
        assert!(root_problem(&dir, dev).unwrap().contains("empty"));
        std::fs::remove_dir(&dir).unwrap();
        assert!(root_problem(&dir, dev).unwrap().contains("gone"));
    }
}
