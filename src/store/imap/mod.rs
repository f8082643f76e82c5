//! The IMAP backend: a store whose mailboxes, views and message bytes come from an IMAP
//! server (any server; Dovecot through its proxies is the case it is built for).
//!
//! - Mailboxes: `LIST "" "*"`, names split at the server's hierarchy separator into
//!   levels (parents the server does not list are shown as plain levels).
//! - Views: `EXAMINE` (read-only: nothing is changed, `\Recent` is not taken), then
//!   `UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE X-GUID)`; a refresh of a mailbox
//!   whose UIDVALIDITY held continues from its last view with QRESYNC (RFC 7162: the
//!   server names what vanished and what changed since the view's MODSEQ) where the
//!   server offers it.
//! - Bytes: `UID FETCH uid BODY.PEEK[]` (never sets `\Seen`), kept in the on-disk
//!   [`bodies`] cache; `st_size` is RFC822.SIZE, which is the length of those bytes.
//! - Changes: the store pushes them ([`Feed::Pushed`]) from its [`watch`] thread, which
//!   keeps one session with NOTIFY set where the server has it (every mailbox pushed),
//!   else in IDLE on INBOX, checking the other viewed mailboxes and the mailbox list every
//!   poll interval.
//!
//! Nothing here writes to the server: reads use EXAMINE and BODY.PEEK.

mod ahead;
pub mod bodies;
mod feed;
pub mod pool;
mod watch;
mod writer;

pub use feed::ImapFed;
pub use writer::ImapWriter;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, warn};
use parking_lot::Mutex;

use super::{
    ChangeNotifier, Feed, FileOwner, KeywordSet, Locator, MailStore, MailboxEntry, MailboxName,
    MailboxView, MessageKey, MessageMeta, MessageSource, Messages, Presented, StoreContext, Target,
};
use crate::error::{Error, Result};
use crate::format::MailFlags;
use crate::imap::{MessageInfo, Qresync};
use bodies::Bodies;
use pool::{Account, Pool};

/// How an IMAP store is opened.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    /// The account.
    pub account: Account,
    /// Where message bytes are cached, and how many bytes at most.
    pub cache_dir: PathBuf,
    /// The cache's bound in bytes.
    pub cache_size: u64,
    /// How often mailboxes other than INBOX (and the mailbox list) are checked, and the
    /// longest IDLE before a check.
    pub poll: Duration,
    /// Sessions for reads (the watcher has its own).
    pub sessions: usize,
}

/// What the store knows of one mailbox on the server.
#[derive(Debug, Clone)]
struct Known {
    /// Its name on the server.
    server: String,
    /// Its latest view and the MODSEQ it was built at (None: the server has no CONDSTORE).
    view: Option<(Arc<MailboxView>, Option<u64>)>,
    /// When the view's build started.
    built: Instant,
    /// The sequence number of the build that made `view`, and of the last report that
    /// the mailbox changed (see [`Inner::seq`]): the view is current only if it was
    /// built after the last change was reported.
    build: u64,
    changed_at: u64,
}

#[derive(Debug, Default)]
struct State {
    /// The mailbox list, the sequence numbers of its build and of the last report that
    /// it changed, and when its build started.
    list: Option<Arc<Vec<MailboxEntry>>>,
    list_build: u64,
    list_changed_at: u64,
    list_built: Option<Instant>,
    separator: Option<char>,
    mailboxes: HashMap<MailboxName, Known>,
}

/// A mailbox list, and each mailbox's name on the server.
type Listed = (Arc<Vec<MailboxEntry>>, HashMap<MailboxName, String>);

/// Shared by the store and its watcher thread.
#[derive(Debug)]
pub(crate) struct Inner {
    ctx: Arc<StoreContext>,
    config: ImapConfig,
    pool: Pool,
    bodies: Bodies,
    owner: FileOwner,
    file_owner: FileOwner,
    started: i64,
    state: Mutex<State>,
    notifier: Mutex<Option<ChangeNotifier>>,
    qresync: bool,
    /// Whether the watcher thread runs. Without it (`--watch off`) what was read from the
    /// server is trusted for one poll interval, then read again.
    watching: AtomicBool,
    /// Read-ahead of sequential reads.
    ahead: ahead::Ahead,
    /// Orders builds and change reports ([`Inner::next_seq`]).
    seq: AtomicU64,
}

/// The IMAP store.
#[derive(Debug)]
pub struct ImapStore {
    inner: Arc<Inner>,
}

impl ImapStore {
    /// Connects (once, to check the account and learn the server's capabilities), opens
    /// the body cache.
    pub fn open(config: ImapConfig, ctx: Arc<StoreContext>) -> Result<ImapStore> {
        let account = Arc::new(config.account.clone());
        let label = account.label();
        let pool = Pool::new(account.clone(), config.sessions);
        let first = pool
            .connect()
            .map_err(|e| pool::store_error(&label, "logging in", e))?;
        let qresync = first.capabilities().has("QRESYNC");
        // The first view's EXAMINE will use it (the listing gets a session of its own).
        pool.adopt(first);
        let bodies = Bodies::open(&config.cache_dir, &label, config.cache_size)
            .map_err(|e| Error::io(&config.cache_dir, e))?;
        let (uid, gid) = crate::sys::effective_ids();
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let store = ImapStore {
            inner: Arc::new(Inner {
                ctx,
                config,
                pool,
                bodies,
                owner: FileOwner {
                    uid,
                    gid,
                    mode: 0o700,
                },
                file_owner: FileOwner {
                    uid,
                    gid,
                    mode: 0o600,
                },
                started,
                state: Mutex::new(State::default()),
                notifier: Mutex::new(None),
                qresync,
                watching: AtomicBool::new(false),
                ahead: ahead::Ahead::default(),
                seq: AtomicU64::new(0),
            }),
        };
        for i in 0..READ_AHEAD_THREADS {
            let weak = Arc::downgrade(&store.inner);
            let spawned = std::thread::Builder::new()
                .name(format!("imap-ahead-{i}"))
                .spawn(move || read_ahead(&weak));
            if let Err(e) = spawned {
                warn!("IMAP {label}: no read-ahead thread ({e})");
            }
        }
        Ok(store)
    }

    /// The account, as `user@host:port`.
    pub fn label(&self) -> String {
        self.inner.pool.account().label()
    }

    /// The writer that carries out changes on this account's server (`--rw`).
    pub fn writer(&self) -> ImapWriter {
        ImapWriter::new(self.inner.clone())
    }
}

impl Inner {
    fn label(&self) -> String {
        self.pool.account().label()
    }

    /// Whether something read at `at` may still be trusted without asking the server.
    fn fresh(&self, at: Instant) -> bool {
        self.watching.load(Ordering::Relaxed) || at.elapsed() < self.config.poll
    }

    /// LISTs the server's mailboxes.
    fn fetch_list(&self) -> Result<Listed> {
        let listed = self.pool.with_listing("LIST", |p| p.session.list())?;
        let mut names: BTreeMap<MailboxName, MailboxEntry> = BTreeMap::new();
        let mut servers = HashMap::new();
        let mut separator = None;
        for entry in listed {
            let attrs: Vec<String> = entry
                .attributes
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect();
            if attrs.iter().any(|a| a == "\\nonexistent") {
                continue;
            }
            separator = separator.or(entry.separator);
            let name = split_name(&entry.name, entry.separator);
            if name.0.is_empty() {
                continue;
            }
            let selectable = !attrs.iter().any(|a| a == "\\noselect");
            // Parents the server does not list are shown as plain levels.
            for depth in 1..name.0.len() {
                let parent = MailboxName(name.0[..depth].to_vec());
                names.entry(parent.clone()).or_insert(MailboxEntry {
                    name: parent,
                    selectable: false,
                    owner: self.owner,
                    mtime: self.started,
                });
            }
            servers.insert(name.clone(), entry.name.clone());
            names.insert(
                name.clone(),
                MailboxEntry {
                    name,
                    selectable,
                    owner: self.owner,
                    mtime: self.started,
                },
            );
        }
        self.state.lock().separator = separator;
        Ok((Arc::new(names.into_values().collect()), servers))
    }

    fn mailboxes(&self) -> Result<Arc<Vec<MailboxEntry>>> {
        {
            let st = self.state.lock();
            if let Some(list) = &st.list
                && st.list_build > st.list_changed_at
                && st.list_built.is_some_and(|at| self.fresh(at))
            {
                return Ok(list.clone());
            }
        }
        let build = self.next_seq();
        let started = Instant::now();
        let (list, servers) = self.fetch_list()?;
        let mut st = self.state.lock();
        if build < st.list_build {
            // A LIST that started later has already been taken.
            return Ok(st.list.clone().unwrap_or_default());
        }
        // Mailboxes gone from the list are forgotten; new ones known.
        st.mailboxes.retain(|name, _| servers.contains_key(name));
        for (name, server) in servers {
            match st.mailboxes.get_mut(&name) {
                Some(k) if k.server == server => {}
                Some(k) => {
                    k.server = server;
                    k.view = None;
                }
                None => {
                    st.mailboxes.insert(
                        name,
                        Known {
                            server,
                            view: None,
                            built: started,
                            build: 0,
                            changed_at: 0,
                        },
                    );
                }
            }
        }
        let same = st.list.as_ref().is_some_and(|old| **old == *list);
        if !same {
            st.list = Some(list);
        }
        st.list_build = build;
        st.list_built = Some(started);
        Ok(st.list.clone().unwrap_or_default())
    }

    /// The server name of a mailbox (listing first if it is not known yet).
    fn server_name(&self, name: &MailboxName) -> Result<String> {
        if let Some(k) = self.state.lock().mailboxes.get(name) {
            return Ok(k.server.clone());
        }
        self.mailboxes()?;
        self.state
            .lock()
            .mailboxes
            .get(name)
            .map(|k| k.server.clone())
            .ok_or_else(|| Error::not_found(format!("mailbox {name} on {}", self.label())))
    }

    fn view(&self, name: &MailboxName) -> Result<Arc<MailboxView>> {
        let (server, previous) = {
            let st = self.state.lock();
            match st.mailboxes.get(name) {
                Some(k) => {
                    if let Some((view, _)) = &k.view
                        && k.build > k.changed_at
                        && self.fresh(k.built)
                    {
                        return Ok(view.clone());
                    }
                    (k.server.clone(), k.view.clone())
                }
                None => {
                    drop(st);
                    (self.server_name(name)?, None)
                }
            }
        };
        // Numbered before it asks the server: a change reported after this number makes
        // the view it builds out of date, however the two interleave.
        let started = Instant::now();
        let build = self.next_seq();
        let (view, modseq) = self.build_view(name, &server, previous.as_ref())?;
        debug!(
            "IMAP view of {name}: {} messages built in {:.1} ms",
            view.messages.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        if previous
            .as_ref()
            .is_some_and(|(old, _)| old.uid_validity != view.uid_validity)
        {
            self.bodies
                .drop_other_validities(&server, view.uid_validity);
        }
        let view = Arc::new(view);
        // Builds run concurrently (several readers, the watcher): one that started later
        // saw a later state, so an earlier one finishing after it must not replace it.
        if let Some(k) = self.state.lock().mailboxes.get_mut(name) {
            if build > k.build {
                k.view = Some((view.clone(), modseq));
                k.build = build;
                k.built = started;
            } else if let Some((newer, _)) = &k.view {
                return Ok(newer.clone());
            }
        }
        Ok(view)
    }

    /// Builds a view: from `previous` with QRESYNC when it can, else in full.
    fn build_view(
        &self,
        name: &MailboxName,
        server: &str,
        previous: Option<&(Arc<MailboxView>, Option<u64>)>,
    ) -> Result<(MailboxView, Option<u64>)> {
        let resume = match previous {
            Some((view, Some(modseq))) if self.qresync => Some((view.clone(), *modseq)),
            _ => None,
        };
        let what = format!("reading mailbox {server}");
        let (selected, fetched, full) = self.pool.with(&what, |p| {
            let qresync = resume.as_ref().map(|(view, modseq)| Qresync {
                uid_validity: view.uid_validity,
                modseq: *modseq,
            });
            let selected = p.session.select(server, true, qresync)?;
            p.selected = Some(server.to_string());
            let continues = resume
                .as_ref()
                .is_some_and(|(view, _)| view.uid_validity == selected.uid_validity);
            if continues {
                let (view, _) = resume.as_ref().expect("checked above");
                // New messages: UIDs from the old UIDNEXT on ("N:*" also names the
                // highest UID when it is below N, hence the filter).
                let from = view.uid_next.max(1);
                let new: Vec<MessageInfo> = if selected.exists > 0 {
                    p.session
                        .fetch_meta(&format!("{from}:*"), None)?
                        .into_iter()
                        .filter(|m| m.uid >= from)
                        .collect()
                } else {
                    Vec::new()
                };
                Ok((selected, new, false))
            } else {
                let all = if selected.exists > 0 {
                    p.session.fetch_meta("1:*", None)?
                } else {
                    Vec::new()
                };
                Ok((selected, all, true))
            }
        })?;
        let modseq = selected.highest_modseq;
        // Keywords in the mailbox's order (as doveadm lists them), from the FLAGS the
        // server announced; any it did not announce follow in order of appearance.
        let mut keyword_names: Vec<String> = selected
            .flags
            .iter()
            .filter(|f| !f.starts_with('\\'))
            .cloned()
            .collect();
        let mut by_uid: BTreeMap<u32, MessageMeta> = BTreeMap::new();
        if !full && let Some((old, _)) = &resume {
            // Positions of the old view stay valid: its keywords first, new ones after.
            let announced = std::mem::replace(&mut keyword_names, (*old.keyword_names).clone());
            for k in announced {
                if !keyword_names.contains(&k) {
                    keyword_names.push(k);
                }
            }
            for m in old.messages.iter() {
                if let MessageKey::Uid(uid) = m.key {
                    by_uid.insert(uid, m.clone());
                }
            }
            for uid in &selected.vanished {
                by_uid.remove(uid);
            }
            // Changed flags (QRESYNC's FETCH responses carry UID FLAGS MODSEQ only): the
            // rest of the message is what it was.
            for changed in &selected.changed {
                if let Some(m) = by_uid.get_mut(&changed.uid) {
                    let (flags, keywords) = flags_of(&changed.flags, &mut keyword_names);
                    m.flags = flags;
                    m.keywords = keywords;
                }
            }
        }
        for info in fetched {
            let meta = self.meta_of(&info, &mut keyword_names);
            by_uid.insert(info.uid, meta);
        }
        let uid_next = selected
            .uid_next
            .unwrap_or_else(|| by_uid.keys().next_back().map_or(1, |u| u + 1));
        let mtime = by_uid
            .values()
            .map(|m| m.received)
            .max()
            .unwrap_or(self.started);
        Ok((
            MailboxView {
                id: crate::store::ViewId::new(),
                name: name.clone(),
                uid_validity: selected.uid_validity,
                uid_next,
                guid: None,
                messages: Messages::from_sorted(by_uid.into_values()),
                pending: Vec::new(),
                keyword_names: Arc::new(keyword_names),
                owner: self.owner,
                mtime,
            },
            modseq,
        ))
    }

    fn meta_of(&self, info: &MessageInfo, keyword_names: &mut Vec<String>) -> MessageMeta {
        let (flags, keywords) = flags_of(&info.flags, keyword_names);
        MessageMeta {
            key: MessageKey::Uid(info.uid),
            size: info.size,
            virtual_size: info.size,
            received: info.internal_date,
            saved: info.internal_date,
            flags,
            keywords,
            guid: info.guid.clone().unwrap_or_default().into(),
            owner: self.file_owner,
            locator: Locator::Remote,
            problem: None,
        }
    }

    fn open(
        &self,
        name: &MailboxName,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource> {
        let MessageKey::Uid(uid) = *key else {
            return Err(Error::not_found(format!("{name}: {key:?}")));
        };
        let meta = view
            .get(key)
            .ok_or_else(|| Error::not_found(format!("{name}: UID {uid}")))?;
        let server = self.server_name(name)?;
        let dir = Bodies::dir_of(&server, view.uid_validity);
        let (file, len) = loop {
            if let Some(hit) = self.bodies.get(&dir, uid) {
                break hit;
            }
            // Being fetched ahead: wait for it, then look in the cache again.
            if !self.ahead.claim(&dir, uid, self.pool.account().timeout) {
                continue;
            }
            let fetched = self.fetch(&server, view.uid_validity, &dir, uid);
            self.ahead.release(&dir, uid);
            break fetched?;
        };
        if let Some(pos) = view.messages.position(uid) {
            self.ahead.after_read(
                &server,
                view.uid_validity,
                &dir,
                pos,
                view.messages
                    .iter_from(pos + 1)
                    .filter_map(|m| match m.key {
                        MessageKey::Uid(u) => Some((u, m.size)),
                        MessageKey::Pending(_) => None,
                    }),
                |u| self.bodies.contains(&dir, u),
            );
        }
        if len != meta.size {
            warn!(
                "IMAP {}: UID {uid} of {server}: the server sent {len} bytes, its RFC822.SIZE \
                 said {}",
                self.label(),
                meta.size
            );
            return Err(Error::Unreadable {
                what: format!(
                    "{name}/{uid}: the server sent {len} bytes where RFC822.SIZE said {}",
                    meta.size
                ),
            });
        }
        Ok(MessageSource::file_range(file, 0, len))
    }

    /// Fetches message `uid` of `server` (at `uid_validity`) into the body cache and
    /// opens it there.
    fn fetch(
        &self,
        server: &str,
        uid_validity: u32,
        dir: &str,
        uid: u32,
    ) -> Result<(std::fs::File, u64)> {
        let what = format!("fetching UID {uid} of {server}");
        self.pool.with(&what, |p| {
            if p.selected.as_deref() != Some(server) {
                let selected = p.session.select(server, true, None)?;
                p.selected = Some(server.to_string());
                if selected.uid_validity != uid_validity {
                    return Err(crate::imap::ImapError::Protocol(format!(
                        "UIDVALIDITY of {server} changed ({uid_validity} -> {})",
                        selected.uid_validity
                    )));
                }
            }
            self.bodies
                .put(dir, uid, |sink| {
                    p.session.fetch_body(uid, sink).map_err(to_io)
                })
                .map_err(crate::imap::ImapError::Io)
        })
    }

    /// The next sequence number: builds of views and lists and reports of changes are
    /// ordered by it.
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Marks a mailbox's view out of date and tells the watcher.
    fn changed(&self, name: &MailboxName) {
        let at = self.next_seq();
        if let Some(k) = self.state.lock().mailboxes.get_mut(name) {
            k.changed_at = at;
        }
        if let Some(n) = &*self.notifier.lock() {
            n.notify(super::Pushed::Target(Target::Mailbox(name.clone())));
        }
    }

    /// Marks the mailbox list out of date and tells the watcher.
    fn list_changed(&self) {
        let at = self.next_seq();
        self.state.lock().list_changed_at = at;
        if let Some(n) = &*self.notifier.lock() {
            n.notify(super::Pushed::Target(Target::Scope(
                MailboxName(Vec::new()),
            )));
        }
    }

    /// The store's name of a mailbox the server named: as listed, else split at the
    /// server's separator.
    fn store_name(&self, server: &str) -> MailboxName {
        let state = self.state.lock();
        state
            .mailboxes
            .iter()
            .find(|(_, k)| k.server == server)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| split_name(server, state.separator))
    }

    /// The viewed mailboxes: name, server name, and what their view was built from.
    fn viewed(&self) -> Vec<(MailboxName, String, Arc<MailboxView>, Option<u64>)> {
        self.state
            .lock()
            .mailboxes
            .iter()
            .filter_map(|(name, k)| {
                k.view
                    .as_ref()
                    .filter(|_| k.build > k.changed_at)
                    .map(|(v, m)| (name.clone(), k.server.clone(), v.clone(), *m))
            })
            .collect()
    }

    /// The listed server names.
    fn listed(&self) -> HashSet<String> {
        self.state
            .lock()
            .mailboxes
            .values()
            .map(|k| k.server.clone())
            .collect()
    }
}

/// Threads fetching ahead of sequential reads (each holds a session of the pool while it
/// fetches).
const READ_AHEAD_THREADS: usize = 2;

/// A read-ahead thread: fetches queued messages into the cache until the store is gone.
fn read_ahead(store: &InnerRef) {
    loop {
        let Some(inner) = store.upgrade() else { return };
        let Some(job) = inner.ahead.next_job(Duration::from_millis(500)) else {
            continue;
        };
        if !inner.bodies.contains(&job.dir, job.uid)
            && let Err(e) = inner.fetch(&job.server, job.uid_validity, &job.dir, job.uid)
        {
            debug!("IMAP read-ahead of UID {} of {}: {e}", job.uid, job.server);
        }
        inner.ahead.release(&job.dir, job.uid);
    }
}

fn to_io(e: crate::imap::ImapError) -> std::io::Error {
    match e {
        crate::imap::ImapError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

/// A server name split at the hierarchy separator into levels.
fn split_name(server: &str, separator: Option<char>) -> MailboxName {
    match separator {
        Some(sep) => MailboxName(
            server
                .split(sep)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        None => MailboxName(vec![server.to_string()]),
    }
}

/// System flags and keywords of a FETCH FLAGS list; new keywords get the next positions.
/// `\Recent` is not a flag a mount shows.
fn flags_of(flags: &[String], keyword_names: &mut Vec<String>) -> (MailFlags, KeywordSet) {
    let mut system = MailFlags::default();
    let mut positions = Vec::new();
    for f in flags {
        if let Some(sys) = f.strip_prefix('\\') {
            for (flag, name) in MailFlags::ALL {
                if name[1..].eq_ignore_ascii_case(sys) {
                    system.insert(flag);
                }
            }
            continue;
        }
        let pos = match keyword_names.iter().position(|k| k == f) {
            Some(p) => p,
            None => {
                keyword_names.push(f.clone());
                keyword_names.len() - 1
            }
        };
        positions.push(pos);
    }
    (system, KeywordSet::from_positions(positions))
}

impl MailStore for ImapStore {
    fn mailboxes(&self, _scope: &MailboxName) -> Result<Arc<Vec<MailboxEntry>>> {
        self.inner.mailboxes()
    }

    fn view(&self, mailbox: &MailboxName) -> Result<Arc<MailboxView>> {
        self.inner.view(mailbox)
    }

    fn open(
        &self,
        mailbox: &MailboxName,
        view: &MailboxView,
        key: &MessageKey,
    ) -> Result<MessageSource> {
        self.inner.open(mailbox, view, key)
    }

    fn local_root(&self) -> Option<&Path> {
        None
    }

    fn root_attrs(&self) -> Result<Presented> {
        Ok((self.inner.owner, self.inner.started))
    }

    fn feed(&self, _target: &Target) -> Feed {
        Feed::Pushed
    }

    fn subscribe(&self, notifier: ChangeNotifier) {
        *self.inner.notifier.lock() = Some(notifier);
        if !self.inner.watching.swap(true, Ordering::Relaxed) {
            watch::start(Arc::downgrade(&self.inner));
        }
    }

    fn context(&self) -> &Arc<StoreContext> {
        &self.inner.ctx
    }
}

/// The watcher's handle on the store: gone when the store is dropped.
pub(crate) type InnerRef = Weak<Inner>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_separator_and_flags_map_to_positions() {
        assert_eq!(
            split_name("Work.Sub", Some('.')),
            MailboxName(vec!["Work".into(), "Sub".into()])
        );
        assert_eq!(
            split_name("a/b", None),
            MailboxName(vec!["a/b".into()]),
            "no separator: one level"
        );
        let mut names = vec!["$Old".to_string()];
        let (flags, kw) = flags_of(
            &[
                "\\Seen".into(),
                "\\Recent".into(),
                "$Label1".into(),
                "\\flagged".into(),
                "$Old".into(),
            ],
            &mut names,
        );
        assert!(flags.contains(MailFlags::SEEN) && flags.contains(MailFlags::FLAGGED));
        assert!(!flags.contains(MailFlags::ANSWERED));
        assert_eq!(names, vec!["$Old".to_string(), "$Label1".to_string()]);
        assert_eq!(kw.iter().collect::<Vec<_>>(), vec![0, 1]);
    }
}
