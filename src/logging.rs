//! A rate limit per log call site, around the real logger.
//!
//! mailfs runs as a daemon over stores it does not control, and some of the lines it (or
//! `fuser`) logs can be provoked at will: one per `ioctl` on an open message, one per
//! failed request. [`RateLimited`] lets each call site (its source file and line) write at
//! most a budget of lines per window ([`BUSY_BUDGET`] for error/warn/info,
//! [`CHATTY_BUDGET`] for debug/trace, per [`WINDOW`]); further lines from that site are
//! counted, not written. The first line from the site after a window with suppressed
//! lines is preceded by one summary line, "N similar lines suppressed (file:line)"; the
//! count of the last window before the process exits may never be written.
//!
//! Memory is bounded: at most [`MAX_SITES`] call sites are tracked (call sites are lines of
//! code, so a process has a few hundred at most); when the table is full, sites whose
//! window has ended are forgotten, and if none has, the new site shares one overflow
//! budget with every other untracked site.
//!
//! No lock is held while the inner logger writes.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use log::{Level, Log, Metadata, Record};
use parking_lot::Mutex;

/// The length of a rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Lines per window and call site for error, warn and info.
pub const BUSY_BUDGET: u32 = 20;
/// Lines per window and call site for debug and trace (asked for with `-v`, so more).
pub const CHATTY_BUDGET: u32 = 2000;
/// Call sites tracked at once.
pub const MAX_SITES: usize = 1024;

/// The key of the overflow budget shared by sites that found the table full.
const OVERFLOW: u64 = 0;

/// How many lines a call site has written and withheld in its current window.
#[derive(Debug)]
struct Window {
    /// When the window started (its first line).
    start: Instant,
    /// Lines written in this window (at most the budget).
    written: u32,
    /// Lines withheld in this window.
    suppressed: u64,
    /// `file:line` (or `module:line`), for the summary line.
    label: String,
}

/// What to do with one record.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Write it, after a summary of `suppressed` lines withheld at `label` if any.
    Write { summary: Option<(u64, String)> },
    /// Withhold it.
    Suppress,
}

/// A [`Log`] that passes records to `inner`, at most a budget per call site and window.
pub struct RateLimited<L> {
    inner: L,
    sites: Mutex<HashMap<u64, Window>>,
}

impl<L: Log> RateLimited<L> {
    /// Wraps `inner`.
    pub fn new(inner: L) -> Self {
        RateLimited {
            inner,
            sites: Mutex::new(HashMap::new()),
        }
    }

    /// The lines a call site of `level` may write per window.
    fn budget(level: Level) -> u32 {
        match level {
            Level::Error | Level::Warn | Level::Info => BUSY_BUDGET,
            Level::Debug | Level::Trace => CHATTY_BUDGET,
        }
    }

    /// The call site of `record`: its file (else module path, else target) and line.
    fn site<'r>(record: &'r Record<'_>) -> (&'r str, u32) {
        let place = record
            .file()
            .or(record.module_path())
            .unwrap_or(record.target());
        (place, record.line().unwrap_or(0))
    }

    /// Decides about `record` at time `now`, counting it.
    fn judge(&self, record: &Record<'_>, now: Instant) -> Verdict {
        let (place, line) = Self::site(record);
        let mut hasher = DefaultHasher::new();
        (place, line).hash(&mut hasher);
        // 0 is reserved for the overflow budget.
        let mut key = hasher.finish().max(1);
        let budget = Self::budget(record.level());
        let mut sites = self.sites.lock();
        if !sites.contains_key(&key) && sites.len() >= MAX_SITES {
            sites.retain(|&k, w| k == OVERFLOW || now.duration_since(w.start) < WINDOW);
            if sites.len() >= MAX_SITES {
                key = OVERFLOW;
            }
        }
        let window = sites.entry(key).or_insert_with(|| Window {
            start: now,
            written: 0,
            suppressed: 0,
            label: if key == OVERFLOW {
                "other call sites".to_string()
            } else {
                format!("{place}:{line}")
            },
        });
        let mut summary = None;
        if now.duration_since(window.start) >= WINDOW {
            if window.suppressed > 0 {
                summary = Some((window.suppressed, window.label.clone()));
            }
            window.start = now;
            window.written = 0;
            window.suppressed = 0;
        }
        if window.written < budget {
            window.written += 1;
            Verdict::Write { summary }
        } else {
            window.suppressed += 1;
            // Nothing is written now, so a summary due now waits for the next line (it
            // cannot be due: the window was just reset and `written` is 0 < budget).
            Verdict::Suppress
        }
    }

    /// [`Log::log`] at time `now`.
    fn log_at(&self, record: &Record<'_>, now: Instant) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        match self.judge(record, now) {
            Verdict::Suppress => {}
            Verdict::Write { summary } => {
                if let Some((n, label)) = summary {
                    self.inner.log(
                        &Record::builder()
                            .args(format_args!("{n} similar lines suppressed ({label})"))
                            .level(record.level())
                            .target(record.target())
                            .module_path(record.module_path())
                            .file(record.file())
                            .line(record.line())
                            .build(),
                    );
                }
                let text = record.args().to_string();
                if text.chars().any(is_control) {
                    let shown = escape_controls(&text);
                    self.inner.log(
                        &Record::builder()
                            .args(format_args!("{shown}"))
                            .level(record.level())
                            .target(record.target())
                            .module_path(record.module_path())
                            .file(record.file())
                            .line(record.line())
                            .build(),
                    );
                } else {
                    self.inner.log(record);
                }
            }
        }
    }
}

/// A control character (C0, DEL, C1): never written to a log as it is, because log lines
/// carry names a mailbox owner chose (a folder named with an escape sequence would
/// otherwise reach the admin's terminal, and a newline would forge a log line).
fn is_control(c: char) -> bool {
    c.is_control()
}

/// `text` with every control character written as `\xNN` (or `\u{NNNN}`).
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_control(c) {
            if (c as u32) < 0x100 {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl<L: Log> Log for RateLimited<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.log_at(record, Instant::now());
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_controls("a\x1b[31mb\nc\u{85}d"),
            "a\\x1b[31mb\\x0ac\\x85d"
        );
        assert_eq!(escape_controls("plain ü"), "plain ü");
        let logger = RateLimited::new(Recorder::new(Level::Trace));
        let name = "evil\x1b[2J\nforged line";
        logger.log_at(
            &Record::builder()
                .args(format_args!("/srv/mail/.{name}: a mailbox"))
                .level(Level::Warn)
                .file(Some("src/x.rs"))
                .line(Some(1))
                .build(),
            Instant::now(),
        );
        assert_eq!(
            lines(&logger),
            vec!["/srv/mail/.evil\\x1b[2J\\x0aforged line: a mailbox".to_string()]
        );
    }

    /// An inner logger that keeps every line it is given, at or above `level`.
    struct Recorder {
        level: Level,
        lines: Mutex<Vec<(Level, String)>>,
    }

    impl Recorder {
        fn new(level: Level) -> Self {
            Recorder {
                level,
                lines: Mutex::new(Vec::new()),
            }
        }
    }

    impl Log for Recorder {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.level() <= self.level
        }
        fn log(&self, record: &Record<'_>) {
            self.lines
                .lock()
                .push((record.level(), record.args().to_string()));
        }
        fn flush(&self) {}
    }

    fn send(logger: &RateLimited<Recorder>, level: Level, file: &str, line: u32, now: Instant) {
        logger.log_at(
            &Record::builder()
                .args(format_args!("line from {file}:{line}"))
                .level(level)
                .file(Some(file))
                .line(Some(line))
                .build(),
            now,
        );
    }

    fn lines(logger: &RateLimited<Recorder>) -> Vec<String> {
        logger
            .inner
            .lines
            .lock()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    #[test]
    fn a_call_site_writes_its_budget_per_window_then_one_summary() {
        let logger = RateLimited::new(Recorder::new(Level::Trace));
        let t0 = Instant::now();
        for i in 0..1000 {
            send(
                &logger,
                Level::Warn,
                "src/a.rs",
                7,
                t0 + Duration::from_millis(i),
            );
        }
        let first = lines(&logger);
        assert_eq!(first.len(), BUSY_BUDGET as usize, "{first:?}");
        assert!(first.iter().all(|l| l == "line from src/a.rs:7"));

        // The next window: the summary of the 980 withheld, then the line itself.
        send(
            &logger,
            Level::Warn,
            "src/a.rs",
            7,
            t0 + WINDOW + WINDOW / 2,
        );
        let all = lines(&logger);
        assert_eq!(
            &all[BUSY_BUDGET as usize..],
            [
                "980 similar lines suppressed (src/a.rs:7)".to_string(),
                "line from src/a.rs:7".to_string()
            ]
        );
        // The summary keeps the level of the site's lines.
        assert_eq!(
            logger.inner.lines.lock()[BUSY_BUDGET as usize].0,
            Level::Warn
        );

        // A window that withheld nothing ends without a summary.
        let t2 = t0 + 3 * WINDOW;
        send(&logger, Level::Warn, "src/a.rs", 7, t2);
        assert_eq!(lines(&logger).len(), BUSY_BUDGET as usize + 3);
    }

    #[test]
    fn call_sites_have_separate_budgets() {
        let logger = RateLimited::new(Recorder::new(Level::Trace));
        let t0 = Instant::now();
        for _ in 0..100 {
            send(&logger, Level::Error, "src/a.rs", 1, t0);
            send(&logger, Level::Error, "src/a.rs", 2, t0);
            send(&logger, Level::Info, "src/b.rs", 1, t0);
        }
        let all = lines(&logger);
        assert_eq!(all.len(), 3 * BUSY_BUDGET as usize);
        for site in ["src/a.rs:1", "src/a.rs:2", "src/b.rs:1"] {
            let n = all.iter().filter(|l| l.ends_with(site)).count();
            assert_eq!(n, BUSY_BUDGET as usize, "{site}");
        }
    }

    #[test]
    fn debug_and_trace_get_the_larger_budget() {
        let logger = RateLimited::new(Recorder::new(Level::Trace));
        let t0 = Instant::now();
        for _ in 0..3000 {
            send(&logger, Level::Debug, "src/d.rs", 1, t0);
            send(&logger, Level::Trace, "src/t.rs", 1, t0);
        }
        assert_eq!(lines(&logger).len(), 2 * CHATTY_BUDGET as usize);
    }

    #[test]
    fn lines_the_inner_logger_filters_out_use_no_budget() {
        let logger = RateLimited::new(Recorder::new(Level::Info));
        let t0 = Instant::now();
        for _ in 0..100 {
            send(&logger, Level::Debug, "src/a.rs", 1, t0);
        }
        assert!(lines(&logger).is_empty());
        assert!(logger.sites.lock().is_empty());
        assert!(!logger.enabled(&Metadata::builder().level(Level::Debug).build()));
        assert!(logger.enabled(&Metadata::builder().level(Level::Warn).build()));
    }

    #[test]
    fn the_site_table_stays_bounded() {
        let logger = RateLimited::new(Recorder::new(Level::Trace));
        let t0 = Instant::now();
        // Twice as many sites as the table holds, all within one window: the sites that
        // found the table full share one overflow budget.
        for line in 0..(2 * MAX_SITES as u32) {
            send(&logger, Level::Warn, "src/many.rs", line, t0);
            send(&logger, Level::Warn, "src/many.rs", line, t0);
        }
        let table = logger.sites.lock().len();
        assert!(table <= MAX_SITES + 1, "{table} sites tracked");
        assert_eq!(
            lines(&logger).len(),
            2 * MAX_SITES + BUSY_BUDGET as usize,
            "tracked sites write both lines; the rest share one budget"
        );
        // Once their windows have ended, old sites make room for new ones.
        let later = t0 + 2 * WINDOW;
        send(&logger, Level::Warn, "src/new.rs", 1, later);
        send(&logger, Level::Warn, "src/new.rs", 1, later);
        let all = lines(&logger);
        assert_eq!(
            all[all.len() - 2..],
            ["line from src/new.rs:1", "line from src/new.rs:1"]
        );
        assert!(logger.sites.lock().len() <= 2);
    }
}
