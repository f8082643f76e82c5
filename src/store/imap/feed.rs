//! `--watch imap://...`: a local store whose changes are heard from Dovecot itself, over
//! the user's own IMAP session on the server that owns the user, instead of from inotify
//! or a stat poll. For stores on GlusterFS or NFS, where inotify cannot see other
//! clients' writes and a poll costs its interval: the reads stay on disk, only the
//! invalidations come from Dovecot.
//!
//! [`ImapFed`] wraps the local store and passes every call through; when the watcher
//! subscribes, it starts the feed thread, which keeps one session:
//! - where the server has NOTIFY (RFC 5465; Dovecot with its mailbox list index, the
//!   default), `NOTIFY SET (PERSONAL ...)`: Dovecot reports every change of every mailbox
//!   by itself (a STATUS of the mailbox, a LIST of one created, deleted or renamed), and
//!   nothing is polled;
//! - elsewhere, IDLE on INBOX (Dovecot reports its changes as they happen), and every
//!   poll interval a LIST and a STATUS (with HIGHESTMODSEQ: flag changes too) of every
//!   mailbox, each against what it saw the time before. A mailbox seen for the first time
//!   is reported once (the watcher's view of it may predate the feed's first look).
//!
//! What changed is pushed as a target; after a (re)connection, everything (what happened
//! before NOTIFY was set, or while the session was down, is unknown).
//!
//! Latency: Dovecot 2.3 reports a change to an IDLE or NOTIFY session 0.5 s after it
//! noticed it (`NOTIFY_DELAY_MSECS 500` in `src/lib-storage/mailbox-watch.c` and
//! `src/lib-storage/list/mailbox-list-index-notify.c`, to gather a burst of changes), so
//! a change reaches the kernel about half a second after Dovecot made it (in IDLE mode,
//! a mailbox other than INBOX within one poll interval).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::pool::{Account, Pool};
use super::split_name;
use super::watch::{Heard, InboxState, Mode, choose_mode, listen_notify, wait_on_inbox};
use crate::error::Result;
use crate::imap::{ImapError, Session, Status};
use crate::store::{
    ChangeNotifier, Feed, MailStore, MailboxEntry, MailboxName, MailboxView, MessageKey,
    MessageSource, Presented, Pushed, StoreContext, Target,
};

/// A local store with an IMAP change feed.
#[derive(Debug)]
pub struct ImapFed {
    inner: Arc<dyn MailStore>,
    account: Arc<Account>,
    poll: Duration,
    started: AtomicBool,
}

impl ImapFed {
    /// Wraps `inner`; checks now that `account` can log in (and says what is wrong).
    pub fn new(inner: Arc<dyn MailStore>, account: Account, poll: Duration) -> Result<ImapFed> {
        let account = Arc::new(account);
        let label = account.label();
        Pool::new(account.clone(), 1)
            .connect()
            .map_err(|e| super::pool::store_error(&label, "logging in", e))?
            .logout();
        Ok(ImapFed {
            inner,
            account,
            poll,
            started: AtomicBool::new(false),
        })
    }
}

impl MailStore for ImapFed {
    fn scope_depth(&self) -> usize {
        self.inner.scope_depth()
    }
    fn mailboxes(&self, scope: &MailboxName) -> Result<Arc<Vec<MailboxEntry>>> {
        self.inner.mailboxes(scope)
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
        self.inner.local_root()
    }
    fn root_attrs(&self) -> Result<Presented> {
        self.inner.root_attrs()
    }
    fn feed(&self, target: &Target) -> Feed {
        // The paths are still given: a watcher in inotify or poll mode may use them too.
        self.inner.feed(target)
    }
    fn subscribe(&self, notifier: ChangeNotifier) {
        self.inner.subscribe(notifier.clone());
        if !self.started.swap(true, Ordering::Relaxed) {
            let (account, poll) = (self.account.clone(), self.poll);
            let spawned = std::thread::Builder::new()
                .name("imap-feed".into())
                .spawn(move || run(&account, poll, &notifier));
            if let Err(e) = spawned {
                warn!("cannot start the IMAP change feed ({e}): changes are not seen");
            }
        }
    }
    fn check_root(&self) -> Result<()> {
        self.inner.check_root()
    }
    fn root_transitions(&self) -> u64 {
        self.inner.root_transitions()
    }
    fn context(&self) -> &Arc<StoreContext> {
        self.inner.context()
    }
}

/// What the feed saw of the server last.
#[derive(Debug, Default)]
struct Seen {
    /// Per server mailbox name: its STATUS, and its name in the store.
    status: HashMap<String, (Status, MailboxName)>,
    /// INBOX as the last EXAMINE reported it.
    inbox: Option<InboxState>,
}

fn run(account: &Arc<Account>, poll: Duration, notifier: &ChangeNotifier) {
    let pool = Pool::new(account.clone(), 1);
    let label = account.label();
    let mut failures = 0u32;
    loop {
        let mut session = match pool.connect() {
            Ok(s) => s,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!("IMAP {label}: change feed cannot connect: {e}");
                }
                let backoff = super::pool::backoff(Duration::from_millis(250), failures);
                std::thread::sleep(backoff);
                continue;
            }
        };
        if failures > 0 {
            info!("IMAP {label}: change feed connected again");
        }
        let result = match choose_mode(&mut session, &label) {
            Ok(Mode::Notify { .. }) => {
                info!("IMAP {label}: change feed: NOTIFY set, every mailbox is pushed");
                notifier.notify(Pushed::Everything);
                notified(&mut session, notifier)
            }
            Ok(Mode::Idle) => {
                if failures > 0 {
                    notifier.notify(Pushed::Everything);
                }
                let mut seen = Seen::default();
                let mut next_round = Instant::now();
                loop {
                    if let Err(e) = round(&mut session, &mut seen, poll, &mut next_round, notifier)
                    {
                        break Err(e);
                    }
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            warn!("IMAP {label}: change feed: {e}; reconnecting");
            failures = failures.max(1);
            std::thread::sleep(super::pool::backoff(Duration::from_millis(250), failures));
        }
    }
}

fn inbox() -> MailboxName {
    MailboxName(vec!["INBOX".to_string()])
}

/// A NOTIFY session's reports, pushed as they come, until the session fails. Names split
/// at the separator of the personal namespace (from a LIST of INBOX's level).
fn notified(s: &mut Session, notifier: &ChangeNotifier) -> std::result::Result<(), ImapError> {
    let separator = s.list()?.iter().find_map(|e| e.separator);
    loop {
        let until = Instant::now() + Duration::from_secs(3600);
        for heard in listen_notify(s, until, &|| false)? {
            match heard {
                Heard::Mailbox(server) => notifier.notify(Pushed::Target(Target::Mailbox(
                    split_name(&server, separator),
                ))),
                Heard::Listed(server) => {
                    notifier.notify(Pushed::Target(Target::Scope(MailboxName(Vec::new()))));
                    notifier.notify(Pushed::Target(Target::Mailbox(split_name(
                        &server, separator,
                    ))));
                }
                Heard::Unknown => notifier.notify(Pushed::Everything),
            }
        }
    }
}

/// IDLE on INBOX until something happens or the next round is due; then, when due,
/// LIST and STATUS of every mailbox.
fn round(
    s: &mut Session,
    seen: &mut Seen,
    poll: Duration,
    next_round: &mut Instant,
    notifier: &ChangeNotifier,
) -> std::result::Result<(), ImapError> {
    let push = |name: MailboxName| notifier.notify(Pushed::Target(Target::Mailbox(name)));
    if !wait_on_inbox(
        s,
        &mut seen.inbox,
        *next_round,
        &|| false,
        &|| push(inbox()),
    )? {
        return Ok(());
    }
    *next_round = Instant::now() + poll;
    let listed = s.list()?;
    let mut now: HashMap<String, (Status, MailboxName)> = HashMap::new();
    let mut list_changed = false;
    for entry in &listed {
        let attrs = |a: &str| entry.attributes.iter().any(|x| x.eq_ignore_ascii_case(a));
        if attrs("\\NonExistent") || attrs("\\Noselect") {
            continue;
        }
        let status = s.status(&entry.name)?;
        let name = split_name(&entry.name, entry.separator);
        match seen.status.get(&entry.name) {
            Some((before, _)) if *before == status => {}
            Some(_) => push(name.clone()),
            None => {
                // New to the feed: the watcher's view may predate the feed's first look.
                push(name.clone());
                list_changed |= !seen.status.is_empty();
            }
        }
        now.insert(entry.name.clone(), (status, name));
    }
    for (server, (_, name)) in &seen.status {
        if !now.contains_key(server) {
            push(name.clone());
            list_changed = true;
        }
    }
    if list_changed {
        notifier.notify(Pushed::Target(Target::Scope(MailboxName(Vec::new()))));
    }
    seen.status = now;
    Ok(())
}
