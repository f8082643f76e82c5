//! A store kept in memory, for unit tests of the layers above the store (`coherence`,
//! `fs`) without Dovecot: mailboxes and messages are made by the test, every change makes
//! new immutable views (as a real backend's rebuild does) and is pushed to the watcher
//! ([`Feed::Pushed`]). The integration tests run the real backends against real Dovecot;
//! this is only beside them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{
    ChangeNotifier, Feed, FileOwner, Locator, MailStore, MailboxEntry, MailboxName, MailboxView,
    MessageKey, MessageMeta, MessageSource, Messages, Presented, Pushed, StoreContext, Target,
};
use crate::error::{Error, Result};
use crate::format::MailFlags;

/// Owner and mode of everything in a memory store.
pub const OWNER: FileOwner = FileOwner {
    uid: 1000,
    gid: 1000,
    mode: 0o750,
};

#[derive(Debug)]
struct Mailbox {
    view: Arc<MailboxView>,
    bodies: BTreeMap<u32, Arc<[u8]>>,
}

#[derive(Debug, Default)]
struct State {
    mailboxes: BTreeMap<MailboxName, Mailbox>,
    list: Arc<Vec<MailboxEntry>>,
}

/// A store held in memory.
#[derive(Debug)]
pub struct MemoryStore {
    ctx: Arc<StoreContext>,
    state: Mutex<State>,
    notifier: Mutex<Option<ChangeNotifier>>,
    disk: Mutex<Disk>,
}

/// A disk as the page cache sees it, for tests of read-ahead: an open of a message nobody
/// advised ([`MailStore::will_need`]) waits `wait`; advice is recorded.
#[derive(Debug, Default)]
struct Disk {
    wait: std::time::Duration,
    advised: Vec<(MailboxName, u32)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            ctx: StoreContext::new(Default::default()),
            state: Mutex::new(State::default()),
            notifier: Mutex::new(None),
            disk: Mutex::default(),
        }
    }
}

impl MemoryStore {
    /// From now on, an open of a message not advised first waits `wait`, as a read from a
    /// disk would.
    pub fn set_disk_wait(&self, wait: std::time::Duration) {
        self.disk.lock().wait = wait;
    }

    /// The UIDs advised so far ([`MailStore::will_need`]), in order, with their mailbox.
    pub fn advised(&self) -> Vec<(MailboxName, u32)> {
        self.disk.lock().advised.clone()
    }

    /// Creates mailbox `name` (its parents are presented as plain levels), UIDVALIDITY
    /// `uid_validity`.
    pub fn create(&self, name: &str, uid_validity: u32) {
        let name = MailboxName::parse(name);
        let mut st = self.state.lock();
        st.mailboxes.insert(
            name.clone(),
            Mailbox {
                view: Arc::new(MailboxView {
                    id: crate::store::ViewId::new(),
                    name: name.clone(),
                    uid_validity,
                    uid_next: 1,
                    guid: Some(format!("{uid_validity:032x}")),
                    messages: Messages::default(),
                    pending: Vec::new(),
                    keyword_names: Arc::new(Vec::new()),
                    owner: OWNER,
                    mtime: 0,
                }),
                bodies: BTreeMap::new(),
            },
        );
        Self::relist(&mut st);
        drop(st);
        self.push(Pushed::Target(Target::Scope(MailboxName(Vec::new()))));
    }

    /// Deletes mailbox `name`.
    pub fn delete(&self, name: &str) {
        let name = MailboxName::parse(name);
        let mut st = self.state.lock();
        st.mailboxes.remove(&name);
        Self::relist(&mut st);
        drop(st);
        self.push(Pushed::Target(Target::Scope(MailboxName(Vec::new()))));
        self.push(Pushed::Target(Target::Mailbox(name)));
    }

    /// Saves `body` into `mailbox` with `flags`; returns its UID.
    pub fn save(&self, mailbox: &str, body: &[u8], flags: MailFlags) -> u32 {
        self.change(mailbox, |view, bodies| {
            let uid = view.uid_next;
            view.uid_next += 1;
            view.messages.upsert(MessageMeta {
                key: MessageKey::Uid(uid),
                size: body.len() as u64,
                virtual_size: body.len() as u64,
                received: 1_700_000_000 + i64::from(uid),
                saved: 1_700_000_000 + i64::from(uid),
                flags,
                keywords: crate::store::KeywordSet::default(),
                guid: format!("guid-{uid}").into(),
                owner: OWNER,
                locator: Locator::Remote,
                problem: None,
            });
            bodies.insert(uid, Arc::from(body));
            uid
        })
    }

    /// Expunges `uid` from `mailbox`.
    pub fn expunge(&self, mailbox: &str, uid: u32) {
        self.change(mailbox, |view, bodies| {
            view.messages.remove(uid);
            bodies.remove(&uid);
        });
    }

    /// Replaces the system flags of `uid` in `mailbox`.
    pub fn set_flags(&self, mailbox: &str, uid: u32, flags: MailFlags) {
        self.change(mailbox, |view, _| {
            if let Some(m) = view.messages.get(uid) {
                view.messages.upsert(MessageMeta { flags, ..m });
            }
        });
    }

    /// Replaces the keywords of `uid` in `mailbox` (names added to the view's keyword
    /// table as needed).
    pub fn set_keywords(&self, mailbox: &str, uid: u32, names: &[&str]) {
        self.change(mailbox, |view, _| {
            let mut table = (*view.keyword_names).clone();
            let mut positions = Vec::new();
            for name in names {
                let i = table.iter().position(|k| k == name).unwrap_or_else(|| {
                    table.push((*name).to_string());
                    table.len() - 1
                });
                positions.push(i);
            }
            view.keyword_names = Arc::new(table);
            if let Some(m) = view.messages.get(uid) {
                let keywords = crate::store::KeywordSet::from_positions(positions);
                view.messages.upsert(MessageMeta { keywords, ..m });
            }
        });
    }

    /// Applies `f` to a copy of `mailbox`'s view, makes it the current one and pushes
    /// the change.
    fn change<T>(
        &self,
        mailbox: &str,
        f: impl FnOnce(&mut MailboxView, &mut BTreeMap<u32, Arc<[u8]>>) -> T,
    ) -> T {
        let name = MailboxName::parse(mailbox);
        let out = {
            let mut st = self.state.lock();
            let mb = st.mailboxes.get_mut(&name).expect("mailbox exists");
            let mut view = (*mb.view).clone();
            let out = f(&mut view, &mut mb.bodies);
            mb.view = Arc::new(view);
            out
        };
        self.push(Pushed::Target(Target::Mailbox(name)));
        out
    }

    fn relist(st: &mut State) {
        let mut list: BTreeMap<MailboxName, bool> = BTreeMap::new();
        for name in st.mailboxes.keys() {
            for depth in 1..name.0.len() {
                list.entry(MailboxName(name.0[..depth].to_vec()))
                    .or_insert(false);
            }
            list.insert(name.clone(), true);
        }
        st.list = Arc::new(
            list.into_iter()
                .map(|(name, selectable)| MailboxEntry {
                    name,
                    selectable,
                    owner: OWNER,
                    mtime: 0,
                })
                .collect(),
        );
    }

    fn push(&self, what: Pushed) {
        let notifier = self.notifier.lock().clone();
        if let Some(n) = notifier {
            n.notify(what);
        }
    }
}

impl MailStore for MemoryStore {
    fn mailboxes(&self, _scope: &MailboxName) -> Result<Arc<Vec<MailboxEntry>>> {
        Ok(self.state.lock().list.clone())
    }

    fn view(&self, mailbox: &MailboxName) -> Result<Arc<MailboxView>> {
        self.state
            .lock()
            .mailboxes
            .get(mailbox)
            .map(|m| m.view.clone())
            .ok_or_else(|| Error::not_found(format!("mailbox {mailbox}")))
    }

    fn open(
        &self,
        mailbox: &MailboxName,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource> {
        let MessageKey::Uid(uid) = key else {
            return Err(Error::not_found(format!("{key:?}")));
        };
        view.get(key)
            .ok_or_else(|| Error::not_found(format!("{mailbox}: uid {uid}")))?;
        let wait = {
            let disk = self.disk.lock();
            let advised = disk.advised.iter().any(|(m, u)| m == mailbox && u == uid);
            (!advised).then_some(disk.wait)
        };
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            std::thread::sleep(wait);
        }
        self.state
            .lock()
            .mailboxes
            .get(mailbox)
            .and_then(|m| m.bodies.get(uid).cloned())
            .map(MessageSource::memory)
            .ok_or_else(|| Error::not_found(format!("{mailbox}: uid {uid} (expunged)")))
    }

    fn will_need(
        &self,
        mailbox: &MailboxName,
        _view: &MailboxView,
        key: &MessageKey,
    ) -> Result<()> {
        if let MessageKey::Uid(uid) = key {
            self.disk.lock().advised.push((mailbox.clone(), *uid));
        }
        Ok(())
    }

    fn local_root(&self) -> Option<&Path> {
        None
    }

    fn root_attrs(&self) -> Result<Presented> {
        Ok((OWNER, 0))
    }

    fn feed(&self, _target: &Target) -> Feed {
        Feed::Pushed
    }

    fn subscribe(&self, notifier: ChangeNotifier) {
        *self.notifier.lock() = Some(notifier);
    }

    fn context(&self) -> &Arc<StoreContext> {
        &self.ctx
    }
}
