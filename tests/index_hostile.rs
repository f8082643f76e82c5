//! Hostile input for the index engine: real files written by the test Dovecot (index, log,
//! `.log.2`, cache, mdbox map index and log) and the committed fixtures in
//! `tests/fixtures/formats/`, truncated at every offset and with every single bit flipped
//! (files up to 16 KiB; larger ones get a deterministic sample of at least 20,000 cases).
//!
//! Each case writes the mutated file into a scratch directory beside the intact others,
//! then runs `IndexReader::open` + one `refresh()` and `mailfs::dump::dump` of that file,
//! under `catch_unwind`. For the `.log` of each set a second sweep opens the reader on an
//! intact prefix of the log first and mutates only what the refresh then reads, so the
//! incremental path sees the hostile bytes too.
//!
//! Asserted: no panic; no hang (each case is timed, the sweep runs under a deadline); no
//! huge allocation (the largest single allocation request made by the sweep thread is
//! tracked by a counting global allocator, and the process RSS is read before and after);
//! and every `Ok` view is valid (UIDs non-zero, strictly increasing and below next_uid,
//! keyword bits only within the keyword list, extension bytes inside the record).

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mailfs::index::reader::{IndexPaths, IndexReader, IndexView};

use crate::util::TestDir;
use crate::util::corpus::email;
use crate::util::dovecot::{Dovecot, Layout, User};
use crate::util::index_oracle::{assert_same_state, log_header, open, view_problem};
use crate::util::rng::Rng;

/// Files up to this size get every truncation and every bit flip.
const EXHAUSTIVE_MAX: usize = 16 * 1024;
/// Cases per larger file.
const SAMPLE_CASES: usize = 20_000;
/// An allocation request above this is "huge" (the inputs are a few KiB).
const HUGE_ALLOC: usize = 64 << 20;
/// The deadline of one whole sweep (a hang fails the test instead of blocking it).
const SWEEP_DEADLINE: Duration = Duration::from_secs(240);
/// Any single case slower than this counts as a hang.
const CASE_LIMIT: Duration = Duration::from_secs(2);
/// Cases slower than this are printed as they happen (the first ten).
const SLOW_CASE: Duration = Duration::from_millis(500);

// --- Allocation tracking -----------------------------------------------------------------

/// The system allocator, noting the largest request made by threads that opted in.
struct Tracking;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; `note`
// only touches `const`-initialised thread-locals without destructors, so it neither
// allocates nor unwinds.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Resident set size and its peak (`VmHWM`), in KiB.
fn rss_kib() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// --- Panics ------------------------------------------------------------------------------

/// Panic messages from sweep threads (kept, not printed: there may be thousands).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PANIC_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Installs (once) a panic hook that records panics of threads named `hostile-*` and
/// leaves every other thread's panic to the previous hook.
fn quiet_sweep_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let sweep = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("hostile-"));
            if !sweep {
                return previous(info);
            }
            PANIC_COUNT.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut v) = PANICS.lock()
                && v.len() < 20
            {
                v.push(info.to_string());
            }
        }));
    });
}

// --- Sets of files and the sweep --------------------------------------------------------

/// Files that belong together: an index prefix and its files, by file name.
#[derive(Debug, Clone)]
struct FileSet {
    name: String,
    prefix: String,
    files: Vec<(String, Vec<u8>)>,
}

impl FileSet {
    /// Reads the named files of `prefix` present in `dir` (`<prefix>`, `.log`, `.log.2`,
    /// `.cache`).
    fn from_dir(name: &str, dir: &Path, prefix: &str) -> FileSet {
        let files = ["", ".log", ".log.2", ".cache"]
            .iter()
            .map(|suffix| format!("{prefix}{suffix}"))
            .filter_map(|f| fs::read(dir.join(&f)).ok().map(|b| (f, b)))
            .collect();
        FileSet {
            name: name.to_string(),
            prefix: prefix.to_string(),
            files,
        }
    }

    fn write_to(&self, dir: &Path) {
        for (f, bytes) in &self.files {
            fs::write(dir.join(f), bytes).unwrap_or_else(|e| panic!("writing {f}: {e}"));
        }
    }
}

/// One mutation of one file.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
}

/// The cases for a file of `len` bytes: every truncation and bit flip, or a sample.
fn mutations(len: usize, from: usize, seed: u64) -> Vec<Mutation> {
    let span = len.saturating_sub(from);
    if span <= EXHAUSTIVE_MAX {
        let mut v: Vec<Mutation> = (from..len).map(Mutation::Truncate).collect();
        for at in from..len {
            v.extend((0..8).map(|bit| Mutation::Flip(at, bit)));
        }
        return v;
    }
    let mut rng = Rng::new(seed ^ len as u64);
    (0..SAMPLE_CASES)
        .map(|i| {
            let at = from + rng.below(span as u64) as usize;
            if i % 4 == 0 {
                Mutation::Truncate(at)
            } else {
                Mutation::Flip(at, rng.below(8) as u8)
            }
        })
        .collect()
}

/// What a sweep counted.
#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    open_ok: u64,
    open_err: u64,
    refresh_ok: u64,
    refresh_err: u64,
    dump_ok: u64,
    dump_err: u64,
    panics: u64,
    invalid: Vec<String>,
    max_case: Duration,
    max_case_what: String,
    slow_cases: u32,
    largest_alloc: usize,
    largest_alloc_what: String,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.cases += o.cases;
        self.open_ok += o.open_ok;
        self.open_err += o.open_err;
        self.refresh_ok += o.refresh_ok;
        self.refresh_err += o.refresh_err;
        self.dump_ok += o.dump_ok;
        self.dump_err += o.dump_err;
        self.panics += o.panics;
        self.invalid.extend(o.invalid.iter().take(20).cloned());
        if o.max_case > self.max_case {
            self.max_case = o.max_case;
            self.max_case_what = o.max_case_what.clone();
        }
        if o.largest_alloc > self.largest_alloc {
            self.largest_alloc = o.largest_alloc;
            self.largest_alloc_what = o.largest_alloc_what.clone();
        }
    }
}

/// Applies `m` to the file open as `f` (whose intact bytes are `orig`).
fn apply(f: &File, orig: &[u8], m: Mutation) {
    match m {
        Mutation::Truncate(n) => f.set_len(n as u64).expect("truncate"),
        Mutation::Flip(at, bit) => f
            .write_all_at(&[orig[at] ^ (1 << bit)], at as u64)
            .expect("flip"),
    }
}

/// Undoes `m`.
fn restore(f: &File, orig: &[u8], m: Mutation) {
    match m {
        Mutation::Truncate(n) => f.write_all_at(&orig[n..], n as u64).expect("restore"),
        Mutation::Flip(at, _) => f
            .write_all_at(&orig[at..at + 1], at as u64)
            .expect("restore"),
    }
}

/// Runs `body` as one case: timed, under `catch_unwind`, allocations tracked.
fn case(t: &mut Tally, what: impl Fn() -> String, body: impl FnOnce(&mut Tally)) {
    let start = Instant::now();
    LARGEST.with(|m| m.set(0));
    TRACK.with(|f| f.set(true));
    let r = catch_unwind(AssertUnwindSafe(|| body(t)));
    TRACK.with(|f| f.set(false));
    let took = start.elapsed();
    t.cases += 1;
    if r.is_err() {
        t.panics += 1;
        if t.invalid.len() < 50 {
            t.invalid.push(format!("{}: PANIC", what()));
        }
    }
    if took > SLOW_CASE && t.slow_cases < 10 {
        t.slow_cases += 1;
        eprintln!("slow case: {} took {took:?}", what());
    }
    if took > t.max_case {
        t.max_case = took;
        t.max_case_what = what();
    }
    let largest = LARGEST.with(Cell::get);
    if largest > t.largest_alloc {
        t.largest_alloc = largest;
        t.largest_alloc_what = what();
    }
}

/// Checks an `Ok` view (see [`view_problem`]); a problem is a failure.
fn check_ok_view(t: &mut Tally, v: &IndexView, stage: &str, what: &dyn Fn() -> String) {
    if let Err(e) = view_problem(v) {
        t.invalid.push(format!("{}: {stage}: {e}", what()));
    }
}

/// `open` + `refresh` (+ the checks of each `Ok` view) on `paths`.
fn open_and_refresh(t: &mut Tally, paths: &IndexPaths, what: &dyn Fn() -> String) {
    match IndexReader::open(paths.clone()) {
        Ok(mut r) => {
            t.open_ok += 1;
            check_ok_view(t, &r.view(), "open", what);
            match r.refresh() {
                Ok(_) => {
                    t.refresh_ok += 1;
                    check_ok_view(t, &r.view(), "refresh", what);
                }
                Err(_) => t.refresh_err += 1,
            }
        }
        Err(_) => t.open_err += 1,
    }
}

fn dump(t: &mut Tally, path: &Path) {
    match mailfs::dump::dump(path) {
        Ok(_) => t.dump_ok += 1,
        Err(_) => t.dump_err += 1,
    }
}

/// Sweeps every file of `set` in `scratch`: mutate, `open` + `refresh` + `dump`, restore.
/// Then, for the `.log`, the incremental sweep (see the module doc).
fn sweep_set(set: &FileSet, scratch: &Path, seed: u64) -> Tally {
    let dir = scratch.join(&set.name);
    fs::create_dir_all(&dir).expect("scratch dir");
    set.write_to(&dir);
    let paths = IndexPaths {
        dir: dir.clone(),
        prefix: set.prefix.clone(),
    };
    let mut tally = Tally::default();
    for (file, orig) in &set.files {
        let path = dir.join(file);
        let f = File::options().write(true).open(&path).expect("open rw");
        for m in mutations(orig.len(), 0, seed) {
            apply(&f, orig, m);
            let what = || format!("{}/{file} {m:?}", set.name);
            case(&mut tally, what, |t| {
                open_and_refresh(t, &paths, &what);
                dump(t, &path);
            });
            restore(&f, orig, m);
        }
    }

    // Incremental: the reader has applied an intact prefix of the log; the hostile bytes
    // arrive as an append that the refresh reads.
    let log_name = format!("{}.log", set.prefix);
    if let Some((_, log)) = set.files.iter().find(|(f, _)| *f == log_name) {
        let path = dir.join(&log_name);
        let f = File::options().write(true).open(&path).expect("open rw");
        let hdr = mailfs::format::log::parse_header(log).map(|h| usize::from(h.hdr_size));
        let cut = match hdr {
            Ok(h) if log.len() > h => {
                let half = h + (log.len() - h) / 2;
                mailfs::format::log::scan(&log[..half], h as u64).map_or(h, |s| s.end as usize)
            }
            _ => log.len(),
        };
        for m in mutations(log.len(), cut, seed.rotate_left(7)) {
            f.set_len(cut as u64).expect("cut");
            let what = || format!("{}/{log_name} after {cut} {m:?}", set.name);
            case(&mut tally, what, |t| {
                let reader = IndexReader::open(paths.clone());
                f.write_all_at(&log[cut..], cut as u64).expect("append");
                apply(&f, log, m);
                match reader {
                    Ok(mut r) => {
                        t.open_ok += 1;
                        match r.refresh() {
                            Ok(_) => {
                                t.refresh_ok += 1;
                                check_ok_view(t, &r.view(), "incremental refresh", &what);
                            }
                            Err(_) => t.refresh_err += 1,
                        }
                    }
                    Err(_) => t.open_err += 1,
                }
            });
            restore(&f, log, m);
        }
        f.write_all_at(log, 0).expect("restore log");
    }
    tally
}

/// Runs the sweeps of `sets` in a thread named `hostile-*` under [`SWEEP_DEADLINE`], and
/// prints and checks the counts.
fn sweep_all(label: &str, sets: Vec<FileSet>, scratch: PathBuf, seed: u64) {
    quiet_sweep_panics();
    for s in &sets {
        let sizes: Vec<String> = s
            .files
            .iter()
            .map(|(f, b)| format!("{f} {} B", b.len()))
            .collect();
        eprintln!("{label}: set {}: {}", s.name, sizes.join(", "));
    }
    let (rss_before, hwm_before) = rss_kib();
    let started = Instant::now();
    // One thread per set (named `hostile-*`, see `quiet_sweep_panics`).
    let (tx, rx) = mpsc::channel();
    let count = sets.len();
    for set in sets {
        let (tx, scratch, label) = (tx.clone(), scratch.clone(), label.to_string());
        std::thread::Builder::new()
            .name(format!("hostile-{label}-{}", set.name))
            .spawn(move || {
                let t = sweep_set(&set, &scratch, seed);
                eprintln!(
                    "{label}: set {}: {} cases, open Ok {} / Err {}, panics {}, slowest {:?}",
                    set.name, t.cases, t.open_ok, t.open_err, t.panics, t.max_case
                );
                let _ = tx.send(t);
            })
            .expect("spawning a sweep thread");
    }
    let deadline = started + SWEEP_DEADLINE;
    let mut t = Tally::default();
    for _ in 0..count {
        let left = deadline.saturating_duration_since(Instant::now());
        let part = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("{label}: the sweep did not finish within {SWEEP_DEADLINE:?}")
        });
        t.add(&part);
    }
    let elapsed = started.elapsed();
    let (rss_after, hwm_after) = rss_kib();
    eprintln!(
        "{label}: {} cases in {:.1} s: open Ok {} / Err {}, refresh Ok {} / Err {}, dump Ok \
         {} / Err {}, panics {}, invalid Ok views {}; slowest case {:?} ({}); largest \
         allocation {} B ({}); RSS {} -> {} KiB, peak {} -> {} KiB",
        t.cases,
        elapsed.as_secs_f64(),
        t.open_ok,
        t.open_err,
        t.refresh_ok,
        t.refresh_err,
        t.dump_ok,
        t.dump_err,
        t.panics,
        t.invalid.len(),
        t.max_case,
        t.max_case_what,
        t.largest_alloc,
        t.largest_alloc_what,
        rss_before,
        rss_after,
        hwm_before,
        hwm_after,
    );
    let panics = PANICS.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(
        t.panics,
        0,
        "{label}: the engine panicked {} times; first cases and messages:\n{}\n{}",
        t.panics,
        t.invalid.join("\n"),
        panics.join("\n")
    );
    assert!(
        t.invalid.is_empty(),
        "{label}: {} invalid Ok views, first ones:\n{}",
        t.invalid.len(),
        t.invalid.join("\n")
    );
    assert!(
        t.max_case < CASE_LIMIT,
        "{label}: a case took {:?} ({})",
        t.max_case,
        t.max_case_what
    );
    assert!(
        t.largest_alloc < HUGE_ALLOC,
        "{label}: a case asked for {} bytes at once ({})",
        t.largest_alloc,
        t.largest_alloc_what
    );
    // Other tests run in this process at the same time, so allow for them.
    assert!(
        rss_after < rss_before + 512 * 1024,
        "{label}: RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(
        t.open_ok > 0 && t.open_err > 0,
        "{label}: a sweep that proves nothing"
    );
}

// --- Corpora -----------------------------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Saves, flags (incl. 20 keywords), expunges and cache fills on `user`'s INBOX.
fn busy_inbox(user: &User<'_>, n: usize) {
    for k in 0..n {
        user.save("INBOX", &email(k, &format!("Hostile {k}"), "corpus"));
    }
    user.flags_set(&[], "add", "INBOX", "1:5", "\\Seen \\Flagged");
    // 18 keywords in three transactions: the bitmask grows past one and two bytes.
    let kw = |r: std::ops::Range<usize>| r.map(|i| format!("kw{i:02}")).collect::<Vec<_>>();
    user.flags_set(&[], "add", "INBOX", "1:3", &kw(0..6).join(" "));
    user.flags_set(&[], "add", "INBOX", "2:6", &kw(6..12).join(" "));
    user.flags_set(&[], "add", "INBOX", "3,7", &kw(12..18).join(" "));
    user.flags_set(&[], "remove", "INBOX", "2", "kw01 \\Seen");
    user.expunge_set(&[], "INBOX", "4");
    user.adm(
        &[],
        &["fetch"],
        &[
            "uid date.received size.virtual guid",
            "mailbox",
            "INBOX",
            "all",
        ],
    );
}

/// Waits until the current log is old enough for a `min_age=1s` rotation, then makes one.
fn rotate_once(user: &User<'_>, paths: &IndexPaths, uid: &str) {
    let created = u64::from(log_header(paths).create_stamp);
    while unix_now() < created + 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
    user.flags_set(
        &[
            "mail_index_log_rotate_min_size=1",
            "mail_index_log_rotate_min_age=1s",
        ],
        "add",
        "INBOX",
        uid,
        "\\Answered",
    );
}

/// Maildir++ INBOX: an old `dovecot.index` (pointing into what became `.log.2`), `.log.2`,
/// a `.log` with transactions after the rotation, and the cache.
fn maildir_corpus(user: &User<'_>, keep: &Path) -> FileSet {
    busy_inbox(user, 6);
    let dir = user.index_dir("INBOX");
    let paths = IndexPaths::mailbox(&dir);
    user.flags_set(
        &["mail_index_rewrite_max_log_bytes=1"],
        "add",
        "INBOX",
        "1",
        "\\Draft",
    );
    user.flags_set(&[], "add", "INBOX", "2:3", "kw03 \\Deleted");
    let old_index = fs::read(dir.join("dovecot.index")).expect("a rewritten dovecot.index");
    rotate_once(user, &paths, "5");
    for k in 0..4 {
        user.save("INBOX", &email(100 + k, "After rotation", "tail"));
    }
    user.flags_set(&[], "add", "INBOX", "7:10", "kw21 \\Seen");
    user.expunge_set(&[], "INBOX", "6");
    let mut set = FileSet::from_dir("maildir", &dir, "dovecot.index");
    for (f, b) in &mut set.files {
        if f == "dovecot.index" {
            *b = old_index.clone();
        }
    }
    assert!(
        set.files.iter().any(|(f, _)| f.ends_with(".log.2")),
        "the corpus needs a .log.2"
    );
    // The set is a state a reader can meet (an older snapshot raced with a rotation); the
    // engine must read it exactly as the real, newer files.
    set.write_to(keep);
    let from_set = open(&IndexPaths::mailbox(keep), "the corpus set").view();
    let real = open(&paths, "the real INBOX").view();
    assert_same_state(&from_set, &real, "the corpus set vs the real INBOX");
    assert!(from_set.pos.file_seq > u32::from_le_bytes(old_index[60..64].try_into().expect("4")));
    set
}

/// mdbox: the map index (snapshot + log) and INBOX's index, log and cache.
fn mdbox_corpus(user: &User<'_>) -> Vec<FileSet> {
    user.create_mailbox("Other");
    busy_inbox(user, 6);
    user.copy_set("Other", "INBOX", "1:6");
    user.expunge_set(&[], "INBOX", "2:3");
    user.purge();
    // A rebuild writes dovecot.map.index (a save with the rewrite option does not).
    user.force_resync("INBOX");
    let rewrite = ["mail_index_rewrite_max_log_bytes=1"];
    user.save_opts(&rewrite, "INBOX", &email(199, "Rewrite", "snapshot"));
    for k in 0..3 {
        user.save("INBOX", &email(200 + k, "After the rewrite", "tail"));
    }
    user.flags_set(&[], "add", "INBOX", "8:10", "\\Seen kw02");
    user.expunge_set(&[], "INBOX", "5");
    let map = FileSet::from_dir("mdbox-map", &user.map_index_dir(), "dovecot.map.index");
    let inbox = FileSet::from_dir("mdbox-inbox", &user.index_dir("INBOX"), "dovecot.index");
    assert!(
        map.files.len() >= 2 && inbox.files.len() >= 2,
        "map {:?} inbox {:?}",
        map.files.iter().map(|f| &f.0).collect::<Vec<_>>(),
        inbox.files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    vec![map, inbox]
}

#[test]
fn dovecot_written_index_files_survive_every_truncation_and_bit_flip() {
    require!(Dovecot);
    let dir = TestDir::new("index_hostile");
    let seed = 0x1dec_0de5;
    let maildir = {
        let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
        let bob = dovecot.user("bob");
        maildir_corpus(&bob, &dir.mkdir("check"))
    };
    let sub = TestDir::new("index_hostile_mdbox");
    let mut sets = vec![maildir];
    {
        let dovecot = Dovecot::start(&sub, Layout::Mdbox);
        let bob = dovecot.user("bob");
        sets.extend(mdbox_corpus(&bob));
    }
    sweep_all("dovecot", sets, dir.mkdir("sweep"), seed);
}

#[test]
fn committed_fixtures_survive_every_truncation_and_bit_flip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats");
    let read = |f: &str| fs::read(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let set = |name: &str, prefix: &str, files: &[(&str, &str)]| FileSet {
        name: name.to_string(),
        prefix: prefix.to_string(),
        files: files
            .iter()
            .map(|(as_name, fixture)| (as_name.to_string(), read(fixture)))
            .collect(),
    };
    let idx = "dovecot.index";
    let sets = vec![
        set(
            "basic",
            idx,
            &[("dovecot.index.log", "maildir-basic.index.log")],
        ),
        set(
            "attr",
            idx,
            &[("dovecot.index.log", "maildir-attr.index.log")],
        ),
        set(
            "dsync",
            idx,
            &[("dovecot.index.log", "maildir-dsync.index.log")],
        ),
        set(
            "rotated",
            idx,
            &[
                ("dovecot.index.log", "maildir-rotated.index.log"),
                ("dovecot.index.log.2", "maildir-rotated.index.log.2"),
            ],
        ),
        set(
            "maildir-snapshot",
            idx,
            &[
                ("dovecot.index", "maildir.dovecot.index"),
                ("dovecot.index.cache", "maildir.dovecot.index.cache"),
            ],
        ),
        set(
            "mdbox-inbox",
            idx,
            &[("dovecot.index.log", "mdbox-inbox.index.log")],
        ),
        set(
            "mdbox-list",
            "dovecot.list.index",
            &[("dovecot.list.index.log", "mdbox-list.index.log")],
        ),
        set(
            "mdbox-map-log",
            "dovecot.map.index",
            &[("dovecot.map.index.log", "mdbox-map.index.log")],
        ),
        set(
            "mdbox-snapshot",
            idx,
            &[
                ("dovecot.index", "mdbox.dovecot.index"),
                ("dovecot.index.cache", "mdbox.dovecot.index.cache"),
            ],
        ),
        set(
            "mdbox-map-snapshot",
            "dovecot.map.index",
            &[("dovecot.map.index", "mdbox.dovecot.map.index")],
        ),
    ];
    let dir = TestDir::new("index_hostile_fixtures");
    for s in &sets {
        let d = dir.mkdir(&s.name);
        s.write_to(&d);
        let paths = IndexPaths {
            dir: d,
            prefix: s.prefix.clone(),
        };
        let v = open(&paths, &format!("fixture set {}", s.name)).view();
        if let Err(e) = view_problem(&v) {
            panic!("fixture set {}: {e}", s.name);
        }
    }
    sweep_all("fixtures", sets, dir.mkdir("sweep"), 7);
}

// Focused regression tests for the engine bugs the sweeps found (both fixed).

/// Byte offsets of each extension header in a `dovecot.index`, by name (walks the headers
/// itself: §4.3 of the formats doc).
fn ext_header_positions(data: &[u8]) -> Vec<(String, usize)> {
    let le16 = |at: usize| usize::from(u16::from_le_bytes([data[at], data[at + 1]]));
    let le32 = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4")) as usize;
    let align8 = |n: usize| n.div_ceil(8) * 8;
    let header_size = le32(4);
    let mut pos = align8(le16(2));
    let mut out = Vec::new();
    while pos + 16 <= header_size {
        let name_size = le16(pos + 14);
        let name = String::from_utf8_lossy(&data[pos + 16..pos + 16 + name_size]).into_owned();
        out.push((name, pos));
        pos += align8(16 + name_size) + align8(le32(pos));
    }
    out
}

/// A copy of INBOX's index files (a `dovecot.index` and the log after it) in `dest`.
fn copy_index(user: &User<'_>, dest: &Path) -> IndexPaths {
    let from = user.index_dir("INBOX");
    for f in ["dovecot.index", "dovecot.index.log"] {
        fs::copy(from.join(f), dest.join(f)).unwrap_or_else(|e| panic!("copying {f}: {e}"));
    }
    IndexPaths::mailbox(dest)
}

/// A `dovecot.index` whose `record_size` (u32 at byte 8) is absurd, e.g. 2 GiB, while the
/// log appends messages after it. Dovecot's limit: extension offsets are u16 and
/// `sync_ext_reorder()` keeps records below 64 KiB. Regression: the engine accepted the
/// header (no complete record fits, so it loaded none), and the first APPEND of the log
/// made `Records::push_sorted` reserve a chunk of 16 x record_size = 32 GiB: "memory
/// allocation of 34359738368 bytes failed" and the process aborted (a mounted mailfs
/// dies; `catch_unwind` cannot help). Expected: a corrupt-index error.
///
/// Runs `mailfs dump` in a child process, in case the process aborts again.
#[test]
fn huge_snapshot_record_size_is_refused_without_aborting() {
    require!(Dovecot);
    let dir = TestDir::new("index_recsize");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Before", "the snapshot"));
    bob.flags_set(
        &["mail_index_rewrite_max_log_bytes=1"],
        "add",
        "INBOX",
        "1",
        "\\Seen",
    );
    bob.save("INBOX", &email(2, "After", "the snapshot"));
    let paths = copy_index(&bob, &dir.mkdir("copy"));
    let index = paths.dir.join("dovecot.index");
    let mut data = fs::read(&index).expect("dovecot.index");
    data[8..12].copy_from_slice(&0x8000_0000u32.to_le_bytes());
    fs::write(&index, &data).expect("writing the damaged index");

    let started = Instant::now();
    let mut child = std::process::Command::new(crate::util::mailfs_bin())
        .arg("dump")
        .arg(&index)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running mailfs dump");
    let status = crate::util::wait_for(Duration::from_secs(60), "mailfs dump to exit", || {
        child.try_wait().expect("waiting for mailfs")
    });
    let took = started.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert_eq!(
        status.code(),
        Some(1),
        "mailfs dump of a dovecot.index with record_size 2 GiB must fail cleanly with exit \
         code 1, got {status} after {took:?}: {stderr}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A damaged `dovecot.index` that places the `keywords` bitmask inside the bytes of another
/// extension (here mdbox's 16-byte `guid` at offset 5: keywords moved from 21 to 17). Both
/// declared ranges are inside the record and aligned, which is all that Dovecot checks
/// (`mail_index_map_ext_hdr_check_record()`). Regression: the engine accepted it too, and
/// the GUID's bytes read as keyword bits, i.e. phantom keywords on every message (writes
/// to either extension corrupt the other). Dovecot never writes overlapping layouts
/// (`sync_ext_reorder()`), so the reader refuses them as corrupt. (Stricter than Dovecot,
/// which would show the same phantom keywords.)
#[test]
fn overlapping_extension_records_are_refused() {
    require!(Dovecot);
    let dir = TestDir::new("index_overlap");
    let dovecot = Dovecot::start(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    for n in 0..3 {
        bob.save("INBOX", &email(n, "Overlap", "guid and keywords"));
    }
    bob.flags_set(
        &[],
        "add",
        "INBOX",
        "1",
        "kw0 kw1 kw2 kw3 kw4 kw5 kw6 kw7 kw8",
    );
    bob.flags_set(
        &["mail_index_rewrite_max_log_bytes=1"],
        "add",
        "INBOX",
        "2",
        "\\Seen",
    );
    let paths = copy_index(&bob, &dir.mkdir("copy"));
    let index = paths.dir.join("dovecot.index");
    let mut data = fs::read(&index).expect("dovecot.index");
    let positions = ext_header_positions(&data);
    let at = |name: &str| {
        positions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no {name} extension in {positions:?}"))
    };
    let (guid, keywords) = (at("guid"), at("keywords"));
    let guid_offset = u16::from_le_bytes([data[guid + 8], data[guid + 9]]);
    let moved = guid_offset + 12;
    data[keywords + 8..keywords + 10].copy_from_slice(&moved.to_le_bytes());
    fs::write(&index, &data).expect("writing the damaged index");

    match IndexReader::open(paths.clone()) {
        Err(_) => {}
        Ok(r) => {
            let v = r.view();
            let shown: Vec<(u32, Vec<String>)> = crate::util::index_oracle::messages(&v)
                .into_iter()
                .map(|m| (m.uid, m.keywords))
                .collect();
            panic!(
                "a dovecot.index whose keywords bitmask (offset {moved}) lies inside the guid \
                 extension (offset {guid_offset}, 16 bytes) was accepted; keywords shown: \
                 {shown:?} (Dovecot: uid 1 has kw0..kw8, the others none)"
            );
        }
    }
}
