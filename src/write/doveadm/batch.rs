//! Group commit: changes of one kind to one mailbox that arrive while a command for them is
//! running are gathered and carried out by the next command together (`flags add \Seen
//! mailbox box uid 3,7,12`), each caller still waiting for Dovecot's answer to the command
//! that carried its change. A doveadm command costs its user's and mailbox's set-up (several
//! milliseconds), whatever it changes; concurrent `setfattr`s (`xargs -P`, several shells)
//! then cost one set-up per batch instead of one each. A lone change runs at once, unbatched.
//! (Expunges and moves are not gathered: the kernel serialises `unlink` and `rename` in a
//! directory, so they never arrive together.)
//!
//! The thread whose change starts a batch leads it: it runs the command, hands the result
//! to the others, and passes the lead to the first change that arrived meanwhile, which
//! runs the next batch; nobody waits for a batch after its own.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::mpsc::{SyncSender, sync_channel};

use parking_lot::Mutex;

use crate::error::Result;

/// What a waiting change is sent: its result, or the lead of the next batch.
enum Turn<K> {
    Done(Result<()>),
    Lead(Waiting<K>),
}

/// The changes waiting for the next batch of one key: each UID with where its turn goes.
type Waiting<K> = Vec<(u32, SyncSender<Turn<K>>)>;

/// Changes gathered per key (user, mailbox, kind of change).
pub struct Batcher<K> {
    queues: Mutex<HashMap<K, Waiting<K>>>,
}

impl<K> Default for Batcher<K> {
    fn default() -> Self {
        Batcher {
            queues: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Batcher<K> {
    /// Carries out the change of `uid` under `key`: with `run` (given every UID of the
    /// batch), now if nothing for `key` is running, else in the next batch. Returns the
    /// result of the command that carried it.
    pub fn submit(&self, key: &K, uid: u32, run: impl Fn(&[u32]) -> Result<()>) -> Result<()> {
        let mut batch = {
            let mut queues = self.queues.lock();
            match queues.get_mut(key) {
                // A command for `key` is running: wait for the next one.
                Some(waiting) => {
                    let (tx, rx) = sync_channel(1);
                    waiting.push((uid, tx));
                    drop(queues);
                    match rx.recv() {
                        Ok(Turn::Done(result)) => return result,
                        Ok(Turn::Lead(others)) => others,
                        // The leader is gone without a word: run it ourselves.
                        Err(_) => Vec::new(),
                    }
                }
                None => {
                    queues.insert(key.clone(), Vec::new());
                    Vec::new()
                }
            }
        };
        // We lead: our change and the gathered ones, in one command.
        let mut uids: Vec<u32> = batch.iter().map(|(u, _)| *u).collect();
        uids.push(uid);
        let result = run(&uids);
        for (_, tx) in batch.drain(..) {
            let _ = tx.send(Turn::Done(duplicate(&result)));
        }
        let next = {
            let mut queues = self.queues.lock();
            let waiting = queues.get_mut(key).map(std::mem::take).unwrap_or_default();
            if waiting.is_empty() {
                queues.remove(key);
            }
            waiting
        };
        // The next batch is led by the first of it, who leaves the queue in place (so
        // that changes arriving now wait for that batch) and takes the rest along.
        let mut next = next.into_iter();
        if let Some((_, first)) = next.next() {
            let _ = first.send(Turn::Lead(next.collect()));
        }
        result
    }
}

/// A copy of a result for another caller (errors are not `Clone`: the same kind and
/// words).
fn duplicate(r: &Result<()>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(e.duplicate()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Concurrent changes are carried in fewer commands than changes, every change exactly
    /// once, and every caller gets the result of the command that carried it.
    #[test]
    fn concurrent_changes_share_commands_and_each_is_carried_once() {
        let batcher = Arc::new(Batcher::<&'static str>::default());
        let commands = Arc::new(AtomicUsize::new(0));
        let carried = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..32u32)
            .map(|uid| {
                let (b, c, seen) = (batcher.clone(), commands.clone(), carried.clone());
                std::thread::spawn(move || {
                    b.submit(&"INBOX", uid, |uids| {
                        c.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                        seen.lock().extend_from_slice(uids);
                        if uids.contains(&13) {
                            return Err(crate::error::Error::not_found("uid 13"));
                        }
                        Ok(())
                    })
                    .map(|()| uid)
                    .map_err(|e| (uid, e.to_string()))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let mut all = carried.lock().clone();
        all.sort_unstable();
        assert_eq!(all, (0..32).collect::<Vec<_>>(), "each change carried once");
        let n = commands.load(Ordering::Relaxed);
        assert!(n < 32, "{n} commands for 32 concurrent changes");
        // The failure of the command that carried 13 reached everyone in it, no one else.
        assert!(
            results
                .iter()
                .any(|r| r == &Err((13, "uid 13: not found".into())))
        );
        assert!(results.iter().filter(|r| r.is_ok()).count() > 0);
        assert!(batcher.queues.lock().is_empty(), "nothing left queued");
    }
}
