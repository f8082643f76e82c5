//! The IMAP store's change feed: one session of its own.
//!
//! - Where the server has NOTIFY (RFC 5465; Dovecot with its mailbox list index, the
//!   default), `NOTIFY SET (PERSONAL ...)`: the server reports every change in every
//!   mailbox of the personal namespace by itself (a STATUS of the mailbox, a LIST of a
//!   created, deleted or renamed one), with no command and no polling. Mailboxes of other
//!   namespaces (`shared/...`) are not covered: those viewed get a STATUS, and the list a
//!   LIST, every poll interval, and only when the server has such namespaces.
//! - Elsewhere, IDLE on INBOX (RFC 2177: the server reports that mailbox's new messages,
//!   expunges and flag changes as they happen), and every poll interval a STATUS of each
//!   other viewed mailbox (with HIGHESTMODSEQ where the server has CONDSTORE, so that flag
//!   changes show too; without it, viewed mailboxes are re-read every interval) and a LIST.
//!
//! What changed is marked out of date and pushed to the coherence watcher, which rebuilds
//! the view and tells the kernel. Dovecot 2.3 reports a change to an IDLE or NOTIFY
//! session 0.5 s after it noticed it (`NOTIFY_DELAY_MSECS` in `src/lib-storage/
//! mailbox-watch.c` and `src/lib-storage/list/mailbox-list-index-notify.c`).
//!
//! The thread ends when the store is dropped. A lost connection is reconnected with a
//! backoff; after a (re)connection every view is marked out of date (changes may have
//! been missed).

use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::{Inner, InnerRef};
use crate::imap::{Event, ImapError, Session};
use crate::store::MailboxName;

/// Starts the watcher thread.
pub(super) fn start(inner: InnerRef) {
    let spawned = std::thread::Builder::new()
        .name("imap-watch".into())
        .spawn(move || run(inner));
    if let Err(e) = spawned {
        warn!("IMAP: cannot start the watcher thread ({e}); changes are not seen");
    }
}

fn run(weak: InnerRef) {
    let mut session: Option<Session> = None;
    let mut failures = 0u32;
    let mut next_round = Instant::now();
    let mut inbox_seen: Option<InboxState> = None;
    let mut mode = Mode::Idle;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let poll = inner.config.poll;
        if session.is_none() {
            match inner.pool.connect() {
                Ok(mut s) => {
                    if failures > 0 {
                        info!("IMAP {}: watcher connected again", inner.label());
                    }
                    mode = match choose_mode(&mut s, &inner.label()) {
                        Ok(m) => m,
                        Err(e) => {
                            warn!("IMAP {}: watcher: {e}; reconnecting", inner.label());
                            failures = failures.max(1);
                            drop(inner);
                            std::thread::sleep(super::pool::backoff(
                                Duration::from_millis(250),
                                failures,
                            ));
                            continue;
                        }
                    };
                    if failures > 0 || matches!(mode, Mode::Notify { .. }) {
                        // What happened meanwhile (or before NOTIFY was set) is unknown.
                        everything_changed(&inner);
                    }
                    failures = 0;
                    inbox_seen = None;
                    next_round = Instant::now();
                    session = Some(s);
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        warn!("IMAP {}: watcher cannot connect: {e}", inner.label());
                    }
                    inner.pool.drop_idle();
                    let backoff = super::pool::backoff(Duration::from_millis(250), failures);
                    drop(inner);
                    std::thread::sleep(backoff);
                    continue;
                }
            }
        }
        let s = session.as_mut().expect("connected above");
        let result = match &mode {
            Mode::Notify { others } => {
                notify_round(&inner, &weak, s, others, poll, &mut next_round)
            }
            Mode::Idle => round(&inner, &weak, s, poll, &mut next_round, &mut inbox_seen),
        };
        if let Err(e) = result {
            warn!("IMAP {}: watcher: {e}; reconnecting", inner.label());
            session = None;
            failures = 1;
            inner.pool.drop_idle();
        }
    }
}

/// One IDLE on INBOX (until something happens or the next check is due), then, when due,
/// the checks of the other mailboxes and of the list.
fn round(
    inner: &Inner,
    weak: &InnerRef,
    s: &mut Session,
    poll: Duration,
    next_round: &mut Instant,
    inbox_seen: &mut Option<InboxState>,
) -> Result<(), crate::imap::ImapError> {
    let inbox = MailboxName(vec!["INBOX".to_string()]);
    let has_idle = s.capabilities().has("IDLE");
    let gone = || weak.strong_count() == 0;
    if !wait_on_inbox(s, inbox_seen, *next_round, &gone, &|| inner.changed(&inbox))? {
        return Ok(());
    }
    *next_round = Instant::now() + poll;
    check_mailboxes(inner, s, has_idle, &|_| true)?;
    check_list(inner, s)?;
    Ok(())
}

/// How a change feed's session hears of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mode {
    /// NOTIFY is set; `others` are the prefixes of namespaces it does not cover.
    Notify { others: Vec<String> },
    /// IDLE on INBOX, polls for the rest.
    Idle,
}

/// How long a NOTIFY session waits in silence before a NOOP shows it is still there (and
/// keeps it from Dovecot's 30-minute autologout, RFC 3501 section 5.4).
const KEEPALIVE: Duration = Duration::from_secs(120);

/// Sets NOTIFY up where the server has it, else IDLE and polls. A server that announces
/// NOTIFY and then refuses it is used with IDLE (and says so once).
pub(super) fn choose_mode(s: &mut Session, label: &str) -> Result<Mode, ImapError> {
    if !s.capabilities().has("NOTIFY") {
        return Ok(Mode::Idle);
    }
    let others = s.other_namespaces()?;
    match s.notify_set() {
        Ok(()) => {
            debug!("IMAP {label}: NOTIFY set (not covered: {others:?})");
            Ok(Mode::Notify { others })
        }
        Err(e @ (ImapError::No { .. } | ImapError::Bad { .. })) => {
            info!("IMAP {label}: NOTIFY refused ({e}); IDLE on INBOX and polls instead");
            Ok(Mode::Idle)
        }
        Err(e) => Err(e),
    }
}

/// What a NOTIFY session reported: server names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Heard {
    /// A mailbox's messages or flags changed.
    Mailbox(String),
    /// The mailbox list changed (this one was created, deleted or renamed).
    Listed(String),
    /// Something changed, it is not known where.
    Unknown,
}

/// Waits for NOTIFY's reports until `until` (or `stop()`), a NOOP after [`KEEPALIVE`] of
/// silence. Returns what was reported.
pub(super) fn listen_notify(
    s: &mut Session,
    until: Instant,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Heard>, ImapError> {
    let wait = until
        .saturating_duration_since(Instant::now())
        .min(KEEPALIVE);
    let mut events = s.listen(wait, stop)?;
    if events.is_empty() && !stop() && Instant::now() < until {
        events = s.noop()?;
    }
    Ok(events
        .into_iter()
        .filter_map(|e| match e {
            Event::MailboxStatus(name) => Some(Heard::Mailbox(name)),
            Event::MailboxListed(name) => Some(Heard::Listed(name)),
            Event::Other => None,
            _ => Some(Heard::Unknown),
        })
        .collect())
}

/// One wait of a NOTIFY session, then, when due and only if some namespace is not
/// covered, the checks of its mailboxes and of the list.
fn notify_round(
    inner: &Inner,
    weak: &InnerRef,
    s: &mut Session,
    others: &[String],
    poll: Duration,
    next_round: &mut Instant,
) -> Result<(), ImapError> {
    let gone = || weak.strong_count() == 0;
    let until = if others.is_empty() {
        Instant::now() + KEEPALIVE
    } else {
        *next_round
    };
    for heard in listen_notify(s, until, &gone)? {
        debug!("IMAP {}: NOTIFY: {heard:?}", inner.label());
        match heard {
            Heard::Mailbox(server) => inner.changed(&inner.store_name(&server)),
            Heard::Listed(server) => {
                inner.list_changed();
                inner.changed(&inner.store_name(&server));
            }
            Heard::Unknown => everything_changed(inner),
        }
    }
    if others.is_empty() || Instant::now() < *next_round {
        return Ok(());
    }
    *next_round = Instant::now() + poll;
    let uncovered = |server: &str| others.iter().any(|p| server.starts_with(p.as_str()));
    check_mailboxes(inner, s, true, &uncovered)?;
    check_list(inner, s)?;
    Ok(())
}

/// What EXAMINE INBOX reported last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InboxState {
    uid_validity: u32,
    uid_next: Option<u32>,
    exists: u32,
    highest_modseq: Option<u64>,
}

/// The INBOX half of a change feed's round, shared by the IMAP store's watcher and the
/// feed of a local store: EXAMINE INBOX (what changed since the last IDLE ended, while
/// the other checks ran, shows in what it reports against `seen`), then IDLE on it until
/// something happens, `next_round` comes or `stop()`. `changed` is called for each sign
/// of a change (an event, then the next EXAMINE differing too, is one more refresh, which
/// also covers what changed between the two). Returns whether the round's other checks
/// are due. Without IDLE it sleeps until `next_round`.
pub(super) fn wait_on_inbox(
    s: &mut Session,
    seen: &mut Option<InboxState>,
    next_round: Instant,
    stop: &dyn Fn() -> bool,
    changed: &dyn Fn(),
) -> Result<bool, crate::imap::ImapError> {
    if !s.capabilities().has("IDLE") {
        std::thread::sleep(next_round.saturating_duration_since(Instant::now()));
        return Ok(true);
    }
    let selected = s.select("INBOX", true, None)?;
    let now = InboxState {
        uid_validity: selected.uid_validity,
        uid_next: selected.uid_next,
        exists: selected.exists,
        highest_modseq: selected.highest_modseq,
    };
    if seen.is_some_and(|before| before != now) {
        changed();
    }
    *seen = Some(now);
    let wait = next_round.saturating_duration_since(Instant::now());
    if !wait.is_zero() {
        let events = s.idle(wait, stop)?;
        if events.iter().any(|e| !matches!(e, Event::Other)) {
            debug!("IMAP IDLE on INBOX: {events:?}");
            changed();
        }
    }
    Ok(Instant::now() >= next_round)
}

/// STATUS of each viewed mailbox that `checked` selects (INBOX only when there is no IDLE)
/// against its view.
fn check_mailboxes(
    inner: &Inner,
    s: &mut Session,
    has_idle: bool,
    checked: &dyn Fn(&str) -> bool,
) -> Result<(), crate::imap::ImapError> {
    let condstore = s.capabilities().has("CONDSTORE") || s.capabilities().has("QRESYNC");
    for (name, server, view, modseq) in inner.viewed() {
        if (has_idle && name.is_inbox()) || !checked(&server) {
            continue;
        }
        let status = s.status(&server)?;
        let same = status.uid_validity == view.uid_validity
            && status.uid_next == view.uid_next
            && status.messages as usize == view.messages.len()
            && condstore
            && modseq.is_some()
            && status.highest_modseq == modseq;
        if !same {
            debug!("IMAP {}: {server} changed ({status:?})", inner.label());
            inner.changed(&name);
        }
    }
    Ok(())
}

/// LIST against the known mailboxes.
fn check_list(inner: &Inner, s: &mut Session) -> Result<(), crate::imap::ImapError> {
    let listed: std::collections::HashSet<String> = s
        .list()?
        .into_iter()
        .filter(|e| {
            !e.attributes
                .iter()
                .any(|a| a.eq_ignore_ascii_case("\\NonExistent"))
        })
        .map(|e| e.name)
        .collect();
    if listed != inner.listed() {
        debug!("IMAP {}: the mailbox list changed", inner.label());
        inner.list_changed();
    }
    Ok(())
}

fn everything_changed(inner: &Inner) {
    let names: Vec<MailboxName> = inner.state.lock().mailboxes.keys().cloned().collect();
    inner.list_changed();
    for name in names {
        inner.changed(&name);
    }
}
