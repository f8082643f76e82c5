//! Measures the index engine on a real index: a full load, an incremental refresh after one
//! new message, and a full reopen after it; plus memory per message.
//!
//! ```text
//! cargo run --release --example index_refresh -- DIR [--prefix dovecot.index] \
//!     [--deliver 'SHELL COMMAND'] [--runs N]
//! ```
//!
//! `DIR` holds `dovecot.index` (and its logs). `--deliver` is run with `sh -c` between the
//! load and each refresh, and should add exactly one message (`scripts/index-bench.sh`
//! passes a `doveadm save`). Times are wall-clock; loads are repeated `--runs` times
//! (default 5) and the median is reported; deliver + refresh is repeated `--runs` times
//! too (each refresh follows exactly one delivery), and the median is reported.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mailfs::index::reader::{IndexPaths, IndexReader};
use mailfs::index::records::CHUNK;

/// The system allocator, counting live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` unchanged; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Resident set size in bytes (`/proc/self/statm`, field 2, in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Args {
    paths: IndexPaths,
    deliver: Option<String>,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut dir = None;
    let mut prefix = "dovecot.index".to_string();
    let mut deliver = None;
    let mut runs = 5;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prefix" => prefix = it.next().ok_or("--prefix needs a value")?,
            "--deliver" => deliver = Some(it.next().ok_or("--deliver needs a command")?),
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--runs needs a positive number")?;
            }
            _ if dir.is_none() && !a.starts_with('-') => dir = Some(PathBuf::from(a)),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let dir = dir.ok_or("usage: index_refresh DIR [--prefix P] [--deliver CMD] [--runs N]")?;
    Ok(Args {
        paths: IndexPaths { dir, prefix },
        deliver,
        runs,
    })
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let open = || {
        let t = Instant::now();
        let r = IndexReader::open(args.paths.clone()).map_err(|e| e.to_string())?;
        Ok::<_, String>((r, t.elapsed()))
    };

    // Full load: the first one also measures memory (the reader is kept).
    let rss_before = rss_bytes();
    let heap_before = LIVE.load(Ordering::Relaxed);
    PEAK.store(heap_before, Ordering::Relaxed);
    let (mut reader, first) = open()?;
    let rss_after = rss_bytes();
    let heap_kept = LIVE.load(Ordering::Relaxed).saturating_sub(heap_before);
    let heap_peak = PEAK.load(Ordering::Relaxed).saturating_sub(heap_before);
    let mut loads = vec![first];
    for _ in 1..args.runs {
        loads.push(open()?.1);
    }
    let load = median(loads);
    let view = reader.view();
    let messages = view.state.records.len();
    let record_size = view.state.records.record_size();
    println!(
        "index: {} ({} messages, record_size {record_size} B, log position {:?})",
        args.paths.dir.join(&args.paths.prefix).display(),
        messages,
        view.pos
    );
    drop(view);

    // One new message, then an incremental refresh; `runs` times.
    let mut refresh = None;
    let mut reopen = None;
    if let Some(cmd) = &args.deliver {
        let mut refreshes = Vec::new();
        for _ in 0..args.runs {
            let status = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .status()
                .map_err(|e| format!("running {cmd:?}: {e}"))?;
            if !status.success() {
                return Err(format!("{cmd:?} failed: {status}"));
            }
            let t = Instant::now();
            let delta = reader.refresh().map_err(|e| e.to_string())?;
            let took = t.elapsed();
            println!(
                "refresh after one delivery: {:.3} ms, appended {:?}, expunged {:?}, {} changed",
                ms(took),
                delta.appended,
                delta.expunged,
                delta.changed.len()
            );
            refreshes.push(took);
        }
        refresh = Some(median(refreshes));
        let mut reopens = Vec::new();
        for _ in 0..args.runs {
            reopens.push(open()?.1);
        }
        reopen = Some(median(reopens));
    }

    let rss_delta = rss_after.saturating_sub(rss_before);
    // Records: record_size bytes each, in chunks of CHUNK behind an Arc (16 B of counts +
    // a 24 B Vec header), plus per chunk a pointer (8 B) and a first UID (4 B).
    let chunk_overhead = (16.0 + 24.0 + 8.0 + 4.0) / CHUNK as f64;
    println!("full load: {:.3} ms (median of {})", ms(load), args.runs);
    if let (Some(r), Some(o)) = (refresh, reopen) {
        println!(
            "refresh after one append: {:.3} ms (median of {})",
            ms(r),
            args.runs
        );
        println!(
            "full reopen after the append: {:.3} ms (median of {})",
            ms(o),
            args.runs
        );
        println!(
            "ratio full load / refresh: {:.0}x",
            ms(load) / ms(r).max(1e-6)
        );
    }
    println!("records: {messages}");
    if messages > 0 {
        let per = |b: usize| b as f64 / messages as f64;
        println!(
            "memory per message: theoretical {record_size} + {chunk_overhead:.2} = {:.2} B; \
             heap kept by the reader {:.1} B ({heap_kept} B); heap peak during the load \
             {:.1} B ({heap_peak} B); RSS growth {:.1} B ({rss_delta} B)",
            record_size as f64 + chunk_overhead,
            per(heap_kept),
            per(heap_peak),
            per(rss_delta as usize),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("index_refresh: {e}");
            ExitCode::FAILURE
        }
    }
}
