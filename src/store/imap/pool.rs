//! A small pool of IMAP sessions to one account, so that one slow fetch does not block a
//! listing. A session that failed is dropped, never reused; a new one is connected on
//! demand, with a backoff after failures so that an unreachable server costs one attempt
//! per backoff period, not one per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Refusal, Result};
use crate::imap::{Credentials, Endpoint, ImapError, Session};

/// How an account is reached.
#[derive(Debug, Clone)]
pub struct Account {
    /// The server.
    pub endpoint: Endpoint,
    /// The login.
    pub credentials: Credentials,
    /// Connect, read and write timeout of every command.
    pub timeout: Duration,
}

impl Account {
    /// `user@host:port`, for messages and the cache's name (never the password).
    pub fn label(&self) -> String {
        let user = match &self.credentials.authzid {
            Some(z) => format!("{z} (as {})", self.credentials.user),
            None => self.credentials.user.clone(),
        };
        format!("{user}@{}:{}", self.endpoint.host, self.endpoint.port)
    }
}

/// A session of the pool and the mailbox it has selected (read-only).
pub struct Pooled {
    /// The session.
    pub session: Session,
    /// The server name of the mailbox it examined last, if any.
    pub selected: Option<String>,
    /// Whether it ran a LIST: Dovecot 2.3 makes every later SELECT/EXAMINE of that
    /// session slower by a time that grows with the mailbox (about 30 ms for a
    /// 20,000-message Maildir INBOX, against 1 ms on a session that never listed;
    /// measured with imaplib, STATUS does not do it), so listings keep to sessions of
    /// their own where the pool can.
    listed: bool,
    /// When it was last given back.
    idle_since: Instant,
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("selected", &self.selected)
            .field("listed", &self.listed)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    idle: Vec<Pooled>,
    /// Sessions handed out or being connected.
    busy: usize,
    /// No connection attempt before this (after a failure).
    retry_at: Option<Instant>,
    failures: u32,
}

/// The pool.
#[derive(Debug)]
pub struct Pool {
    account: Arc<Account>,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

/// An idle session older than this is closed instead of used: servers log idle clients
/// out (Dovecot after 30 minutes, RFC 3501 section 5.4) and NAT or firewalls forget
/// quiet connections sooner, and the request that found it dead would fail.
const MAX_IDLE: Duration = Duration::from_secs(240);

/// Longest wait between connection attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before the next connection attempt after `failures` failed ones in a row:
/// `base`, doubled per failure, at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(1 << failures.min(7)).min(MAX_BACKOFF)
}

/// An IMAP error in the store's terms: a NO becomes what it says (no such mailbox,
/// permission, quota), a message gone is not found, anything else means the server could
/// not be used (EIO; the log line carries the server's words).
pub fn store_error(account: &str, what: &str, e: ImapError) -> Error {
    let text = format!("IMAP {account}: {what}: {e}");
    match &e {
        ImapError::No { code, .. } => match code.as_deref().map(str::to_ascii_uppercase) {
            Some(c) if c == "NONEXISTENT" || c == "TRYCREATE" => Error::not_found(text),
            Some(c) if c == "NOPERM" => Error::refused(Refusal::Denied, text),
            Some(c) if c == "OVERQUOTA" || c == "LIMIT" => Error::refused(Refusal::Quota, text),
            Some(c) if c == "ALREADYEXISTS" => Error::refused(Refusal::Exists, text),
            _ => Error::Server {
                why: Some(Refusal::Unavailable),
                what: text,
            },
        },
        ImapError::NotFound(_) => Error::not_found(text),
        _ => Error::Server {
            why: Some(Refusal::Unavailable),
            what: text,
        },
    }
}

/// Whether an error leaves the session unusable (it is then dropped, not pooled).
fn breaks_session(e: &ImapError) -> bool {
    !matches!(e, ImapError::No { .. } | ImapError::Bad { .. })
}

/// What [`Pool::take`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// Takes this idle session.
    Idle(usize),
    /// Connects a new one.
    Connect,
    /// Waits for one to be given back.
    Wait,
}

/// The choice for a request (`listing` or not), given whether each idle session listed
/// before and whether another may be connected: an idle one of the same kind (the most
/// recently used), else a new one, else an idle one of the other kind, else wait.
fn pick(
    mut idle_listed: impl DoubleEndedIterator<Item = bool> + ExactSizeIterator,
    listing: bool,
    room: bool,
) -> Pick {
    let idle = idle_listed.len();
    if let Some(i) = idle_listed.rposition(|l| l == listing) {
        Pick::Idle(i)
    } else if room {
        Pick::Connect
    } else if idle > 0 {
        Pick::Idle(idle - 1)
    } else {
        Pick::Wait
    }
}

impl Pool {
    /// A pool of at most `max` sessions to `account`.
    pub fn new(account: Arc<Account>, max: usize) -> Pool {
        Pool {
            account,
            max: max.max(1),
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// The account.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// Connects one session now, with QRESYNC enabled where the server offers it (ENABLE
    /// holds for one session: RFC 5161).
    pub fn connect(&self) -> std::result::Result<Session, ImapError> {
        let mut session = Session::connect(
            &self.account.endpoint,
            &self.account.credentials,
            self.account.timeout,
        )?;
        if session.capabilities().has("QRESYNC") {
            session.enable(&["QRESYNC"])?;
        }
        Ok(session)
    }

    /// Runs `f` on a session of the pool (connecting one if none is idle and fewer than
    /// the maximum exist; waiting otherwise). `what` names the work for errors.
    pub fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Pooled) -> std::result::Result<T, ImapError>,
    ) -> Result<T> {
        self.with_kind(what, false, f)
    }

    /// [`Pool::with`] for a LIST: on a session that listed before where there is one
    /// (see [`Pooled`]).
    pub fn with_listing<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Pooled) -> std::result::Result<T, ImapError>,
    ) -> Result<T> {
        self.with_kind(what, true, f)
    }

    fn with_kind<T>(
        &self,
        what: &str,
        listing: bool,
        f: impl FnOnce(&mut Pooled) -> std::result::Result<T, ImapError>,
    ) -> Result<T> {
        let label = self.account.label();
        let mut pooled = self.take(&label, listing)?;
        pooled.listed |= listing;
        let result = f(&mut pooled);
        // News of other sessions' changes that came with the answers: the change feed has
        // its own session for those; here they would only pile up.
        let _ = pooled.session.take_events();
        match result {
            Ok(v) => {
                self.give_back(Some(pooled));
                Ok(v)
            }
            Err(e) => {
                let broken = breaks_session(&e);
                if broken {
                    warn!("IMAP {label}: {what}: {e}; the session is dropped");
                    self.give_back(None);
                } else {
                    self.give_back(Some(pooled));
                }
                Err(store_error(&label, what, e))
            }
        }
    }

    /// An idle session of the kind asked for (one that listed, for a listing, else one
    /// that did not); else a new one while fewer than the maximum exist; else an idle
    /// one of the other kind; else the first one given back.
    fn take(&self, label: &str, listing: bool) -> Result<Pooled> {
        let deadline = Instant::now() + self.account.timeout;
        let mut st = self.state.lock();
        loop {
            // Dropped, not logged out: the connection may be dead.
            st.idle.retain(|p| p.idle_since.elapsed() < MAX_IDLE);
            let room = st.busy + st.idle.len() < self.max;
            let pick = pick(st.idle.iter().map(|p| p.listed), listing, room);
            if let Pick::Idle(i) = pick {
                let p = st.idle.remove(i);
                st.busy += 1;
                return Ok(p);
            }
            if pick == Pick::Connect {
                if let Some(at) = st.retry_at
                    && Instant::now() < at
                {
                    return Err(Error::Server {
                        why: Some(Refusal::Unavailable),
                        what: format!(
                            "IMAP {label}: unreachable (next attempt in {:.1} s)",
                            at.saturating_duration_since(Instant::now()).as_secs_f64()
                        ),
                    });
                }
                st.busy += 1;
                drop(st);
                let connected = self.connect();
                let mut st = self.state.lock();
                return match connected {
                    Ok(session) => {
                        if st.failures > 0 {
                            info!("IMAP {label}: connected again");
                        }
                        st.failures = 0;
                        st.retry_at = None;
                        Ok(Pooled {
                            session,
                            selected: None,
                            listed: false,
                            idle_since: Instant::now(),
                        })
                    }
                    Err(e) => {
                        st.busy -= 1;
                        st.failures += 1;
                        let backoff = backoff(Duration::from_millis(500), st.failures);
                        st.retry_at = Some(Instant::now() + backoff);
                        self.freed.notify_one();
                        Err(store_error(label, "connecting", e))
                    }
                };
            }
            if self.freed.wait_until(&mut st, deadline).timed_out() {
                return Err(Error::Server {
                    why: Some(Refusal::Unavailable),
                    what: format!(
                        "IMAP {label}: all {} sessions busy for {:?}",
                        self.max, self.account.timeout
                    ),
                });
            }
        }
    }

    fn give_back(&self, pooled: Option<Pooled>) {
        let mut st = self.state.lock();
        st.busy -= 1;
        if let Some(mut p) = pooled {
            p.idle_since = Instant::now();
            st.idle.push(p);
        }
        self.freed.notify_one();
    }

    /// Takes `session` (connected by [`Pool::connect`]) into the pool as an idle one, or
    /// logs it out when the pool is full.
    pub fn adopt(&self, session: Session) {
        let mut st = self.state.lock();
        if st.busy + st.idle.len() < self.max {
            st.idle.push(Pooled {
                session,
                selected: None,
                listed: false,
                idle_since: Instant::now(),
            });
            self.freed.notify_one();
        } else {
            drop(st);
            session.logout();
        }
    }

    /// Drops every idle session (after the server went away, so that the next request
    /// connects afresh).
    pub fn drop_idle(&self) {
        self.state.lock().idle.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listings and mailbox work keep to sessions of their own kind while the pool has
    /// room, and share when it has none.
    #[test]
    fn listings_keep_to_their_own_sessions() {
        // Nothing idle: connect while there is room, else wait.
        assert_eq!(pick([].into_iter(), true, true), Pick::Connect);
        assert_eq!(pick([].into_iter(), false, false), Pick::Wait);
        // An EXAMINE never takes the session that listed while another can be had.
        assert_eq!(pick([true].into_iter(), false, true), Pick::Connect);
        assert_eq!(pick([false, true].into_iter(), false, true), Pick::Idle(0));
        assert_eq!(
            pick([true, false, true].into_iter(), false, false),
            Pick::Idle(1)
        );
        // A listing takes the one that listed before.
        assert_eq!(pick([true, false].into_iter(), true, true), Pick::Idle(0));
        assert_eq!(pick([false].into_iter(), true, true), Pick::Connect);
        // No room: the other kind rather than waiting.
        assert_eq!(pick([true].into_iter(), false, false), Pick::Idle(0));
        assert_eq!(pick([false, false].into_iter(), true, false), Pick::Idle(1));
    }
}
