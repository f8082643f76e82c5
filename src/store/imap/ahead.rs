//! Read-ahead for cold sequential reads of an IMAP mount (`cat *`, `grep -r`, `rsync`
//! read messages in UID order): one fetch at a time would pay a server round trip per
//! message with the other sessions idle. When a read is of the message right after the
//! one read before in the same mailbox, the next [`AHEAD`] messages not yet cached are
//! handed to the read-ahead threads, which fetch them on sessions of their own into the
//! body cache.
//!
//! A message is fetched by one party at a time: a reader that finds it being fetched waits
//! for that fetch (up to a deadline, then fetches it itself) and then reads the cache.
//!
//! Lock: the one mutex is a leaf, never held during I/O.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How many messages past a sequential read are fetched ahead.
pub const AHEAD: usize = 8;

/// Messages larger than this are never fetched ahead (only when read).
pub const AHEAD_MAX_SIZE: u64 = 4 << 20;

/// One message to fetch ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The mailbox's server name.
    pub server: String,
    /// The UIDVALIDITY the message belongs to.
    pub uid_validity: u32,
    /// Its cache directory ([`super::bodies::Bodies::dir_of`]).
    pub dir: String,
    /// The message.
    pub uid: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Messages being fetched (by a reader or ahead), by (cache dir, UID).
    fetching: HashSet<(String, u32)>,
    queue: VecDeque<Job>,
    /// Per cache dir: the position (in UID order) of the message read last.
    last: HashMap<String, usize>,
}

/// The read-ahead state of one store.
#[derive(Debug, Default)]
pub struct Ahead {
    state: Mutex<State>,
    /// Signalled when a fetch ends or a job is queued.
    changed: Condvar,
}

impl Ahead {
    /// Claims (`dir`, `uid`) for the caller to fetch: true at once if nobody fetches it;
    /// if somebody does, waits until that fetch ended (false: look in the cache again) or
    /// `limit` passed (true: fetch it anyway).
    pub fn claim(&self, dir: &str, uid: u32, limit: Duration) -> bool {
        let key = (dir.to_string(), uid);
        let deadline = Instant::now() + limit;
        let mut st = self.state.lock();
        if st.fetching.insert(key.clone()) {
            return true;
        }
        while st.fetching.contains(&key) {
            if self.changed.wait_until(&mut st, deadline).timed_out() {
                return true;
            }
        }
        false
    }

    /// The fetch of (`dir`, `uid`) ended (cached, or failed).
    pub fn release(&self, dir: &str, uid: u32) {
        self.state.lock().fetching.remove(&(dir.to_string(), uid));
        self.changed.notify_all();
    }

    /// A reader read the message at `position` of a mailbox (cache dir `dir`). When it
    /// follows the one read before, `next` (the following messages, as (UID, size), in
    /// UID order) are queued, except those `cached` or being fetched, or too large.
    /// `cached` is asked before the lock is taken (it takes the body cache's).
    pub fn after_read(
        &self,
        server: &str,
        uid_validity: u32,
        dir: &str,
        position: usize,
        next: impl Iterator<Item = (u32, u64)>,
        cached: impl Fn(u32) -> bool,
    ) {
        let sequential = self
            .state
            .lock()
            .last
            .insert(dir.to_string(), position)
            .is_some_and(|before| before + 1 == position);
        if !sequential {
            return;
        }
        let wanted: Vec<u32> = next
            .take(AHEAD)
            .filter(|&(uid, size)| size <= AHEAD_MAX_SIZE && !cached(uid))
            .map(|(uid, _)| uid)
            .collect();
        let mut st = self.state.lock();
        let mut queued = false;
        for uid in wanted {
            if st.fetching.insert((dir.to_string(), uid)) {
                st.queue.push_back(Job {
                    server: server.to_string(),
                    uid_validity,
                    dir: dir.to_string(),
                    uid,
                });
                queued = true;
            }
        }
        drop(st);
        if queued {
            self.changed.notify_all();
        }
    }

    /// The next job for a read-ahead thread, waiting at most `wait`.
    pub fn next_job(&self, wait: Duration) -> Option<Job> {
        let deadline = Instant::now() + wait;
        let mut st = self.state.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                return Some(job);
            }
            if self.changed.wait_until(&mut st, deadline).timed_out() {
                return st.queue.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sequential_read_queues_what_follows_and_nothing_twice() {
        let a = Ahead::default();
        let next = |from: u32| (from..from + 20).map(|u| (u, 100));
        a.after_read("INBOX", 7, "d", 0, next(2), |_| false);
        assert!(
            a.next_job(Duration::ZERO).is_none(),
            "a first read is not a sequence"
        );
        a.after_read("INBOX", 7, "d", 5, next(7), |_| false);
        assert!(
            a.next_job(Duration::ZERO).is_none(),
            "a jump is not a sequence"
        );
        // 6 follows 5: the next AHEAD not cached (8 is) and not too large (10 is).
        let sizes = |u: u32| if u == 10 { AHEAD_MAX_SIZE + 1 } else { 100 };
        a.after_read("INBOX", 7, "d", 6, (7..30).map(|u| (u, sizes(u))), |u| {
            u == 8
        });
        let mut got = Vec::new();
        while let Some(j) = a.next_job(Duration::ZERO) {
            got.push(j.uid);
        }
        assert_eq!(got, vec![7, 9, 11, 12, 13, 14]);
        // Being fetched: not queued again, and a reader waits for it.
        a.after_read("INBOX", 7, "d", 7, (7..30).map(|u| (u, 100)), |_| false);
        let again: Vec<u32> = std::iter::from_fn(|| a.next_job(Duration::ZERO))
            .map(|j| j.uid)
            .collect();
        assert_eq!(
            again,
            vec![8, 10],
            "of 7..14 only 8 and 10 were not being fetched (skipped before)"
        );
    }

    #[test]
    fn a_reader_waits_for_the_fetch_in_progress_then_reads_the_cache() {
        let a = std::sync::Arc::new(Ahead::default());
        assert!(a.claim("d", 1, Duration::from_secs(5)), "nobody fetches it");
        let b = a.clone();
        let waiter = std::thread::spawn(move || b.claim("d", 1, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(50));
        a.release("d", 1);
        assert!(!waiter.join().unwrap(), "the waiter reads the cache");
        assert!(a.claim("d", 2, Duration::from_secs(5)));
        assert!(
            a.claim("d", 2, Duration::from_millis(20)),
            "past the deadline the reader fetches it itself"
        );
    }
}
