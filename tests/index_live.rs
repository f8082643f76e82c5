//! The index engine while Dovecot writes: one thread drives doveadm for at least 30 s with a
//! seeded random mix of saves, flag and keyword changes, expunges and forced index
//! rewrites and log rotations, while the test thread refreshes one reader in a tight loop.
//!
//! Asserted during the run: no refresh or open ever fails; views never go backwards (log
//! position and next_uid never decrease, an expunged UID never reappears); every view is
//! valid (UIDs non-zero, strictly increasing, below next_uid; keyword bits within the
//! keyword list); each delta agrees with the two views; every 50th iteration a fresh open
//! succeeds too. At the end, once the writer has stopped, the refreshed view equals
//! doveadm and a fresh open.
//!
//! `MAILFS_LIVE_SEED=N` replays a workload (the seed is printed); the interleaving with the
//! reader still depends on timing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mailfs::index::reader::{IndexPaths, IndexReader, IndexView};

use crate::util::TestDir;
use crate::util::corpus::email;
use crate::util::dovecot::{Dovecot, Layout, User};
use crate::util::index_oracle::{
    Msg, assert_matches_dovecot, assert_same_state, messages, open, uids, view_problem,
};
use crate::util::rng::Rng;

/// How long the writer runs.
const WRITER_RUN: Duration = Duration::from_secs(30);
/// Options that make Dovecot rewrite `dovecot.index` on this command's sync.
const REWRITE: &[&str] = &["mail_index_rewrite_max_log_bytes=1"];
/// Options that rotate the log at every index write.
const ROTATE: &[&str] = &["mail_index_log_rotate_max_size=1"];
const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

/// What the writer did.
#[derive(Debug, Default)]
struct WriterStats {
    ops: u64,
    saves: u64,
    flag_ops: u64,
    keyword_ops: u64,
    expunges: u64,
    forced_rotations: u64,
    forced_rewrites: u64,
    purges: u64,
}

/// The writer: random doveadm operations on INBOX until `stop` or [`WRITER_RUN`].
fn writer(user: &User<'_>, seed: u64, mdbox: bool, stop: &AtomicBool) -> WriterStats {
    let mut rng = Rng::new(seed);
    let mut stats = WriterStats::default();
    let mut next_uid = user.status("INBOX").uidnext;
    // UIDs this writer believes exist (only it writes, so saves get next_uid in order).
    let mut live: Vec<u32> = user.uids("INBOX");
    let keywords: Vec<String> = (0..40).map(|i| format!("live{i:02}")).collect();
    let start = Instant::now();
    while start.elapsed() < WRITER_RUN && !stop.load(Ordering::Acquire) {
        stats.ops += 1;
        let opts: &[&str] = if stats.ops % 23 == 0 {
            stats.forced_rotations += 1;
            ROTATE
        } else if stats.ops % 17 == 0 {
            stats.forced_rewrites += 1;
            REWRITE
        } else {
            &[]
        };
        let target = |rng: &mut Rng, live: &[u32]| -> String {
            if live.is_empty() {
                return "1".to_string();
            }
            let a = *rng.pick(live);
            if rng.chance(30) {
                let b = a + rng.below(6) as u32;
                format!("{a}:{b}")
            } else {
                a.to_string()
            }
        };
        let dice = rng.below(100);
        if dice < 35 || live.len() < 5 {
            let n = stats.saves as usize;
            let body = format!("Live message {n}, seed {seed}.");
            user.save_opts(opts, "INBOX", &email(n, &format!("Live {n}"), &body));
            live.push(next_uid);
            next_uid += 1;
            stats.saves += 1;
        } else if dice < 55 {
            let set = target(&mut rng, &live);
            let op = if rng.chance(60) { "add" } else { "remove" };
            let flag = *rng.pick(&SYSTEM_FLAGS);
            user.flags_set(opts, op, "INBOX", &set, flag);
            stats.flag_ops += 1;
        } else if dice < 80 {
            let set = target(&mut rng, &live);
            let op = *rng.pick(&["add", "add", "remove", "replace"]);
            let n = 1 + rng.below(3);
            let flags: Vec<&str> = (0..n).map(|_| rng.pick(&keywords).as_str()).collect();
            user.flags_set(opts, op, "INBOX", &set, &flags.join(" "));
            stats.keyword_ops += 1;
        } else if dice < 95 {
            let set = target(&mut rng, &live);
            user.expunge_set(opts, "INBOX", &set);
            let (a, b) = match set.split_once(':') {
                Some((a, b)) => (a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
                None => {
                    let a = set.parse().unwrap_or(0);
                    (a, a)
                }
            };
            live.retain(|u| *u < a || *u > b);
            stats.expunges += 1;
        } else if mdbox && rng.chance(30) {
            user.purge();
            stats.purges += 1;
        } else {
            user.index("INBOX");
        }
    }
    stats
}

/// What the reader saw.
#[derive(Debug, Default)]
struct ReaderStats {
    refreshes: u64,
    fresh_opens: u64,
    appended: u64,
    expunged: u64,
    changed: u64,
    /// Log bytes applied (position advances; a switch to a new file counts from its start).
    log_bytes: u64,
    /// Log file switches the reader followed (`file_seq` increments).
    rotations_seen: u64,
    max_messages: usize,
}

/// Checks one step of the reader: `old` -> `new` with `delta`. Returns an error text.
fn check_step(
    old: &IndexView,
    new: &IndexView,
    delta: &mailfs::index::state::Delta,
    gone: &mut BTreeSet<u32>,
) -> Result<(), String> {
    view_problem(new)?;
    if new.pos < old.pos {
        return Err(format!(
            "position went back: {:?} -> {:?}",
            old.pos, new.pos
        ));
    }
    let (h_old, h_new) = (old.state.header(), new.state.header());
    if h_new.next_uid < h_old.next_uid {
        return Err(format!(
            "next_uid went back: {} -> {}",
            h_old.next_uid, h_new.next_uid
        ));
    }
    if delta.reset {
        return Err(format!("unexpected reset delta at {:?}", new.pos));
    }
    let before: BTreeSet<u32> = uids(old).into_iter().collect();
    let after: BTreeSet<u32> = uids(new).into_iter().collect();
    if let Some(back) = after.iter().find(|u| gone.contains(u)) {
        return Err(format!("expunged uid {back} reappeared at {:?}", new.pos));
    }
    let appended: BTreeSet<u32> = after.difference(&before).copied().collect();
    let expunged: BTreeSet<u32> = before.difference(&after).copied().collect();
    let d_app: BTreeSet<u32> = delta.appended.iter().copied().collect();
    if d_app != appended {
        return Err(format!(
            "delta.appended {:?} but the views differ by {appended:?}",
            delta.appended
        ));
    }
    let d_exp: BTreeSet<u32> = delta.expunged.iter().copied().collect();
    if d_exp != expunged {
        return Err(format!(
            "delta.expunged {:?} but the views differ by {expunged:?}",
            delta.expunged
        ));
    }
    let d_chg: BTreeSet<u32> = delta.changed.iter().copied().collect();
    if let Some(u) = d_chg
        .iter()
        .find(|u| !after.contains(u) || appended.contains(u))
    {
        return Err(format!(
            "delta.changed lists uid {u}, not an old message of the new view"
        ));
    }
    if !std::ptr::eq(old, new) {
        let old_msgs: BTreeMap<u32, Msg> = messages(old).into_iter().map(|m| (m.uid, m)).collect();
        for m in messages(new) {
            if let Some(o) = old_msgs.get(&m.uid)
                && (o.flags != m.flags || o.keywords != m.keywords)
                && !d_chg.contains(&m.uid)
            {
                return Err(format!(
                    "uid {}: flags/keywords changed ({:#x} {:?} -> {:#x} {:?}) but not in \
                     delta.changed {:?}",
                    m.uid, o.flags, o.keywords, m.flags, m.keywords, delta.changed
                ));
            }
        }
    }
    if let Some(u) = appended.iter().find(|&&u| u < h_old.next_uid) {
        return Err(format!(
            "uid {u} appeared below the old next_uid {}",
            h_old.next_uid
        ));
    }
    gone.extend(expunged);
    Ok(())
}

fn live(test: &str, layout: Layout) {
    let seed = Rng::seed_from_env("MAILFS_LIVE_SEED");
    eprintln!("{test}: seed {seed} (replay the workload with MAILFS_LIVE_SEED={seed})");
    let started = Instant::now();
    let dir = TestDir::new(test);
    let dovecot = Dovecot::start(&dir, layout);
    let bob = dovecot.user("bob");
    let mdbox = layout == Layout::Mdbox;
    for n in 0..10 {
        bob.save("INBOX", &email(n, "Before the writer", "first"));
    }
    let paths = IndexPaths::mailbox(bob.index_dir("INBOX"));
    let map_paths = mdbox.then(|| IndexPaths {
        dir: bob.map_index_dir(),
        prefix: "dovecot.map.index".into(),
    });

    let stop = AtomicBool::new(false);
    let mut errors: Vec<String> = Vec::new();
    let mut stats = ReaderStats::default();
    let mut map_refreshes = 0u64;
    let (writer_stats, mut reader, mut map_reader) = std::thread::scope(|s| {
        let writer_thread = s.spawn(|| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                writer(&bob, seed, mdbox, &stop)
            }));
            stop.store(true, Ordering::Release);
            r
        });
        let mut reader = open(&paths, "opening INBOX before the writer");
        let mut map_reader: Option<IndexReader> = map_paths
            .as_ref()
            .map(|p| open(p, "opening the map before the writer"));
        let mut gone = BTreeSet::new();
        let mut iteration = 0u64;
        loop {
            let finished = stop.load(Ordering::Acquire);
            iteration += 1;
            let old = reader.view();
            match reader.refresh() {
                Ok(delta) => {
                    stats.refreshes += 1;
                    let new = reader.view();
                    stats.appended += delta.appended.len() as u64;
                    stats.expunged += delta.expunged.len() as u64;
                    stats.changed += delta.changed.len() as u64;
                    stats.rotations_seen += u64::from(new.pos.file_seq - old.pos.file_seq);
                    stats.log_bytes += if new.pos.file_seq == old.pos.file_seq {
                        new.pos.offset - old.pos.offset
                    } else {
                        new.pos.offset
                    };
                    stats.max_messages = stats.max_messages.max(new.state.records.len());
                    if let Err(e) = check_step(&old, &new, &delta, &mut gone) {
                        errors.push(format!("iteration {iteration}: {e}"));
                    }
                }
                Err(e) => errors.push(format!("iteration {iteration}: refresh: {e}")),
            }
            if let Some(m) = map_reader.as_mut() {
                let old = m.view();
                match m.refresh() {
                    Ok(_) => {
                        map_refreshes += 1;
                        let new = m.view();
                        if let Err(e) = view_problem(&new) {
                            errors.push(format!("iteration {iteration}: map: {e}"));
                        }
                        if new.pos < old.pos {
                            errors.push(format!("iteration {iteration}: map position went back"));
                        }
                    }
                    Err(e) => errors.push(format!("iteration {iteration}: map refresh: {e}")),
                }
            }
            if iteration.is_multiple_of(50) {
                stats.fresh_opens += 1;
                match IndexReader::open(paths.clone()) {
                    Ok(fresh) => {
                        let v = fresh.view();
                        if let Err(e) = view_problem(&v) {
                            errors.push(format!("iteration {iteration}: fresh open: {e}"));
                        }
                        if let Some(u) = uids(&v).into_iter().find(|u| gone.contains(u)) {
                            errors.push(format!(
                                "iteration {iteration}: fresh open shows expunged uid {u}"
                            ));
                        }
                        if v.pos < reader.view().pos {
                            errors.push(format!(
                                "iteration {iteration}: fresh open is behind the reader: \
                                 {:?} < {:?}",
                                v.pos,
                                reader.view().pos
                            ));
                        }
                    }
                    Err(e) => errors.push(format!("iteration {iteration}: fresh open: {e}")),
                }
                if let Some(p) = map_paths.as_ref()
                    && let Err(e) = IndexReader::open(p.clone())
                {
                    errors.push(format!("iteration {iteration}: fresh map open: {e}"));
                }
            }
            if errors.len() > 20 {
                stop.store(true, Ordering::Release);
            }
            if finished {
                break;
            }
            std::thread::yield_now();
        }
        let w = match writer_thread.join() {
            Ok(Ok(w)) => w,
            Ok(Err(panic)) | Err(panic) => std::panic::resume_unwind(panic),
        };
        (w, reader, map_reader)
    });
    assert!(
        errors.is_empty(),
        "{test} (seed {seed}): {} errors while the writer ran, first ones:\n{}",
        errors.len(),
        errors
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The writer has stopped: one last refresh equals doveadm and a fresh open.
    reader.refresh().expect("final refresh");
    let last = reader.view();
    let checked = assert_matches_dovecot(
        &last,
        &bob,
        &dovecot,
        "INBOX",
        &paths.dir,
        &format!("{test}: final view"),
    );
    // The oracle's commands may have appended bookkeeping; catch up, then compare.
    reader.refresh().expect("refresh after the oracle");
    let fresh = open(&paths, "final fresh open");
    assert_same_state(
        &reader.view(),
        &fresh.view(),
        &format!("{test}: final refreshed vs fresh"),
    );
    if let (Some(m), Some(p)) = (map_reader.as_mut(), map_paths.as_ref()) {
        m.refresh().expect("final map refresh");
        assert_same_state(
            &m.view(),
            &open(p, "final map open").view(),
            &format!("{test}: final map refreshed vs fresh"),
        );
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{test}: seed {seed}, {:.1} s: writer {writer_stats:?}; reader: {} refreshes \
         ({:.0}/s), {} fresh opens, {} map refreshes, delta entries applied: {} appended + \
         {} expunged + {} changed, {} log bytes, {} rotations seen, max {} messages; final: \
         {} messages, \
         {} keywords set, next_uid {}, log position {:?}",
        elapsed.as_secs_f64(),
        stats.refreshes,
        stats.refreshes as f64 / WRITER_RUN.as_secs_f64(),
        stats.fresh_opens,
        map_refreshes,
        stats.appended,
        stats.expunged,
        stats.changed,
        stats.log_bytes,
        stats.rotations_seen,
        stats.max_messages,
        checked.messages,
        checked.keywords,
        last.state.header().next_uid,
        last.pos,
    );
    assert!(stats.rotations_seen > 0, "the reader followed no rotation");
    assert!(
        elapsed < Duration::from_secs(45),
        "{test} took {elapsed:?}, over its 45 s budget"
    );
}

#[test]
fn maildir_reader_keeps_up_with_a_live_writer() {
    require!(Dovecot);
    live("index_live_pp", Layout::MaildirPlusPlus);
}

#[test]
fn mdbox_reader_keeps_up_with_a_live_writer() {
    require!(Dovecot);
    live("index_live_mdbox", Layout::Mdbox);
}
