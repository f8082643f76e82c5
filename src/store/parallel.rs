//! Per-message work of a view build spread over a few threads: a full build of a big
//! mailbox is one `stat` (Maildir) and one metadata record per message, each independent
//! of the others, while the reader that asked (`ls`, the first `readdirplus`) waits and
//! the machine's other cores idle.

/// Fewer items than this are mapped on the calling thread: a thread costs tens of µs to
/// start, a message's `stat` and record about 2 µs.
pub(super) const PARALLEL_MIN: usize = 4096;

/// Items a caller maps at once when it keeps the results in a bigger list: the results
/// waiting to be moved stay small (a million `MessageMeta` results are about 140 MB).
pub(super) const SLICE: usize = 1 << 16;

/// The most threads one build uses (the calling thread included): builds of different
/// mailboxes already run side by side on the FUSE workers.
const MAX_THREADS: usize = 4;

/// `items` mapped with `f`, results in the items' order. With at least [`PARALLEL_MIN`]
/// items and more than one CPU, contiguous slices are mapped on scoped threads (the
/// calling thread takes the first); otherwise on the calling thread alone.
pub(super) fn map_in_order<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    if items.len() < PARALLEL_MIN {
        return items.iter().map(&f).collect();
    }
    // Asked only here: std reads the cgroup's CPU quota files for it.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.min(MAX_THREADS).min(items.len() / (PARALLEL_MIN / 2));
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut slices = items.chunks(per);
    let first = slices.next().unwrap_or_default();
    let f = &f;
    std::thread::scope(|scope| {
        let others: Vec<_> = slices
            .map(|slice| scope.spawn(move || slice.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = Vec::with_capacity(items.len());
        out.extend(first.iter().map(f));
        for handle in others {
            match handle.join() {
                Ok(part) => out.extend(part),
                // A panic in `f` is a bug; it goes on as the caller's own panic would.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// Results keep the items' order, and a big slice is mapped on more than one thread
    /// (where the machine has more than one CPU).
    #[test]
    fn results_keep_the_order_over_threads() {
        for n in [
            0,
            1,
            100,
            PARALLEL_MIN - 1,
            PARALLEL_MIN,
            3 * PARALLEL_MIN + 7,
        ] {
            let items: Vec<u64> = (0..n as u64).collect();
            let threads = Mutex::new(HashSet::new());
            let out = map_in_order(&items, |x| {
                threads.lock().unwrap().insert(std::thread::current().id());
                x * 3
            });
            let want: Vec<u64> = items.iter().map(|x| x * 3).collect();
            assert_eq!(out, want, "{n} items");
            let used = threads.lock().unwrap().len();
            let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
            if n == 0 {
                assert_eq!(used, 0);
            } else if n < PARALLEL_MIN || cpus == 1 {
                assert_eq!(used, 1, "{n} items on one thread");
            } else {
                assert!(used > 1, "{n} items on {used} thread(s), {cpus} CPUs");
            }
        }
    }
}
