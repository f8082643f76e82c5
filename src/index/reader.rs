//! Reading an index (`<prefix>` + `<prefix>.log` + `<prefix>.log.2`) while Dovecot writes
//! it, and refreshing incrementally.
//!
//! Assumptions about Dovecot's writers (formats doc §4.1, §5.6, §5.7, §9.5), which this
//! module relies on:
//! - `dovecot.index` is replaced by `rename()`, never changed in place;
//! - the log is appended to with one `write()` per transaction; a torn tail is possible and
//!   may later be truncated away, so nothing beyond the last complete transaction is used;
//! - rotation links the old log to `.log.2` and renames a new one over `.log`, whose header
//!   names the previous file and its final size.
//!
//! The reader takes no locks, never writes, and reads with `pread` (no `mmap`, so a file
//! truncated under us can not raise SIGBUS). A refresh reads only the bytes appended since
//! the last one, so its cost follows what changed, not the mailbox size.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::index::parse_index;
use crate::format::log::{self, LogHeader, StopReason};

use super::state::{Applier, Delta, IndexState};

/// A position in the log: Dovecot's `(file_seq, offset)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LogPos {
    /// The log file's sequence number.
    pub file_seq: u32,
    /// First byte not yet applied.
    pub offset: u64,
}

/// An immutable snapshot of an index.
#[derive(Debug, Clone)]
pub struct IndexView {
    /// The state.
    pub state: IndexState,
    /// Everything up to here has been applied.
    pub pos: LogPos,
    /// `indexid` of the index and its logs.
    pub indexid: u32,
    /// Log records of unknown types that were skipped (Dovecot would mark the index for
    /// fsck); non-zero means the view may lack some change.
    pub unknown_records: u32,
}

/// Files of one index, by prefix (`dovecot.index`, `dovecot.map.index`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexPaths {
    /// The directory holding them.
    pub dir: PathBuf,
    /// File name of the index; the logs add `.log` and `.log.2`.
    pub prefix: String,
}

impl IndexPaths {
    /// `dovecot.index` in `dir`.
    pub fn mailbox(dir: impl Into<PathBuf>) -> IndexPaths {
        IndexPaths {
            dir: dir.into(),
            prefix: "dovecot.index".into(),
        }
    }

    fn index(&self) -> PathBuf {
        self.dir.join(&self.prefix)
    }
    fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.prefix))
    }
    fn log2(&self) -> PathBuf {
        self.dir.join(format!("{}.log.2", self.prefix))
    }
}

/// An open log file and what we know of it.
#[derive(Debug)]
struct OpenLog {
    file: File,
    path: PathBuf,
    header: LogHeader,
    dev: u64,
    ino: u64,
}

impl OpenLog {
    fn open(path: &Path) -> Result<Option<OpenLog>> {
        let file = match crate::sys::open_file(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let mut head = vec![0u8; 64.min(meta.len() as usize)];
        read_exact_at(&file, &mut head, 0).map_err(|e| Error::io(path, e))?;
        let header = log::parse_header(&head).map_err(|e| Error::corrupt(path, e))?;
        Ok(Some(OpenLog {
            file,
            path: path.to_path_buf(),
            header,
            dev: meta.dev(),
            ino: meta.ino(),
        }))
    }

    /// Reads from `offset` to the current end of file.
    fn tail(&self, offset: u64) -> Result<Vec<u8>> {
        let len = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        if len <= offset {
            return Ok(Vec::new());
        }
        if len - offset > crate::sys::MAX_WHOLE_FILE {
            return Err(Error::io(&self.path, crate::sys::too_large()));
        }
        let mut buf = vec![0u8; (len - offset) as usize];
        let n = read_at_most(&self.file, &mut buf, offset).map_err(|e| Error::io(&self.path, e))?;
        buf.truncate(n);
        Ok(buf)
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let n = read_at_most(file, buf, offset)?;
    if n < buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while read",
        ));
    }
    Ok(())
}

/// Applies the complete transactions of `log` from `offset`; returns the new offset.
fn apply_log(applier: &mut Applier<'_>, log: &OpenLog, offset: u64) -> Result<u64> {
    let data = log.tail(offset)?;
    let scan = log::scan(&data, 0).map_err(|mut e| {
        e.offset += offset;
        Error::corrupt(&log.path, e)
    })?;
    for rec in &scan.records {
        let mut rec = *rec;
        rec.offset += offset;
        applier
            .apply(&rec)
            .map_err(|e| Error::corrupt(&log.path, e))?;
    }
    // A torn tail (scan.stop != Eof) is not corruption (formats doc §5.7): the next
    // refresh resumes at scan.end and sees the transaction once it is complete.
    let _: StopReason = scan.stop;
    Ok(offset + scan.end)
}

/// Reads and keeps one index up to date.
#[derive(Debug)]
pub struct IndexReader {
    paths: IndexPaths,
    view: Arc<IndexView>,
    log: Option<OpenLog>,
}

/// How many times a load is retried when Dovecot replaces files under it.
const LOAD_ATTEMPTS: usize = 5;

impl IndexReader {
    /// Loads the index: the snapshot if there is one, then every complete transaction of
    /// the log(s) after it.
    pub fn open(paths: IndexPaths) -> Result<IndexReader> {
        let mut last_err = None;
        for _ in 0..LOAD_ATTEMPTS {
            match Self::try_open(&paths) {
                Ok(r) => return Ok(r),
                Err(LoadError::Raced(what)) => last_err = Some(what),
                Err(LoadError::Fatal(e)) => return Err(e),
            }
        }
        Err(Error::layout(
            paths.index(),
            format!(
                "index keeps changing while read: {}",
                last_err.unwrap_or_default()
            ),
        ))
    }

    fn try_open(paths: &IndexPaths) -> std::result::Result<IndexReader, LoadError> {
        let index_path = paths.index();
        let snapshot = match crate::sys::read_whole(&index_path) {
            Ok(data) => Some(parse_index(&data).map_err(|e| Error::corrupt(&index_path, e))?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&index_path, e).into()),
        };
        let log = OpenLog::open(&paths.log())?;
        let Some(log) = log else {
            // No log: the snapshot alone, or no index at all.
            let Some(file) = snapshot else {
                return Err(
                    Error::io(paths.log(), io::Error::from(io::ErrorKind::NotFound)).into(),
                );
            };
            let state = IndexState::from_file(&file).map_err(|e| Error::corrupt(&index_path, e))?;
            let view = IndexView {
                indexid: file.header.indexid,
                pos: LogPos {
                    file_seq: file.header.log_file_seq,
                    offset: u64::from(file.header.log_file_head_offset),
                },
                state,
                unknown_records: 0,
            };
            return Ok(IndexReader {
                paths: paths.clone(),
                view: Arc::new(view),
                log: None,
            });
        };
        if log.header.indexid == 0 {
            return Err(Error::layout(
                &log.path,
                "transaction log is marked corrupted by Dovecot (indexid 0)",
            )
            .into());
        }
        let hdr_size = u64::from(log.header.hdr_size);
        let (mut state, mut pos, indexid) = match &snapshot {
            Some(file) => {
                if file.header.indexid != log.header.indexid {
                    return Err(LoadError::Raced(format!(
                        "indexid {} of the index differs from {} of the log",
                        file.header.indexid, log.header.indexid
                    )));
                }
                let state =
                    IndexState::from_file(file).map_err(|e| Error::corrupt(&index_path, e))?;
                let pos = LogPos {
                    file_seq: file.header.log_file_seq,
                    offset: u64::from(file.header.log_file_head_offset),
                };
                (state, pos, file.header.indexid)
            }
            None => {
                // No snapshot: replay from the oldest log still there. After a rotation
                // that is `.log.2`, which `.log` names as its predecessor.
                let mut start = LogPos {
                    file_seq: log.header.file_seq,
                    offset: hdr_size,
                };
                if log.header.prev_file_seq != 0
                    && let Some(log2) = OpenLog::open(&paths.log2())?
                    && log2.header.file_seq == log.header.prev_file_seq
                {
                    start = LogPos {
                        file_seq: log2.header.file_seq,
                        offset: u64::from(log2.header.hdr_size),
                    };
                }
                (
                    IndexState::empty(log.header.indexid),
                    start,
                    log.header.indexid,
                )
            }
        };
        let mut applier_unknown = 0;
        let mut applier_state = std::mem::replace(&mut state, IndexState::empty(indexid));
        {
            let mut applier = Applier::new(&mut applier_state);
            if pos.file_seq < log.header.file_seq {
                // The snapshot ends in the previous log (.log.2).
                let log2 = OpenLog::open(&paths.log2())?.ok_or_else(|| {
                    LoadError::Raced(format!("log file seq {} is gone", pos.file_seq))
                })?;
                if log2.header.file_seq != pos.file_seq || log.header.prev_file_seq != pos.file_seq
                {
                    return Err(LoadError::Raced(format!(
                        "log file seq {} is not the one before {}",
                        log2.header.file_seq, log.header.file_seq
                    )));
                }
                let end = apply_log(&mut applier, &log2, pos.offset)?;
                if end < u64::from(log.header.prev_file_offset) {
                    return Err(LoadError::Raced("the previous log ends early".into()));
                }
                pos = LogPos {
                    file_seq: log.header.file_seq,
                    offset: hdr_size,
                };
            } else if pos.file_seq > log.header.file_seq {
                return Err(LoadError::Raced("the index is newer than the log".into()));
            }
            if pos.offset < hdr_size {
                pos.offset = hdr_size;
            }
            pos.offset = apply_log(&mut applier, &log, pos.offset)?;
            applier_unknown += applier.unknown_records;
        }
        state = applier_state;
        state.records.seal();
        let view = IndexView {
            state,
            pos,
            indexid,
            unknown_records: applier_unknown,
        };
        Ok(IndexReader {
            paths: paths.clone(),
            view: Arc::new(view),
            log: Some(log),
        })
    }

    /// The current view.
    pub fn view(&self) -> Arc<IndexView> {
        self.view.clone()
    }

    /// The files this reader follows.
    pub fn paths(&self) -> &IndexPaths {
        &self.paths
    }

    /// Brings the view up to date. Returns the delta from the previous view (empty when
    /// nothing changed). On error the previous view stays current.
    pub fn refresh(&mut self) -> Result<Delta> {
        let log_path = self.paths.log();
        let on_disk = match crate::sys::lstat(&log_path) {
            Ok(m) => Some((m.dev, m.ino, m.size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&log_path, e)),
        };
        let Some(log) = &self.log else {
            return self.reload();
        };
        let rotated = on_disk.map(|(dev, ino, _)| (dev, ino)) != Some((log.dev, log.ino));
        // The same log, not grown past what was applied: nothing to read, and the state is
        // not copied (at a million messages a copy costs about 0.1 ms, and a view is
        // rebuilt this way over and over while its stamps are tentative). Dovecot only
        // appends to a log (a new one replaces it: `rotated`).
        if !rotated && on_disk.is_some_and(|(_, _, size)| size <= self.view.pos.offset) {
            return Ok(Delta::default());
        }
        let mut state = self.view.state.clone();
        let mut pos = self.view.pos;
        let mut applier = Applier::new(&mut state);
        // Finish the file we have open, then follow a rotation if there was one.
        let end = apply_log(&mut applier, log, pos.offset)?;
        pos.offset = end;
        let mut new_log = None;
        if rotated {
            let Some(next) = OpenLog::open(&log_path)? else {
                return self.reload();
            };
            let continues = next.header.prev_file_seq == pos.file_seq
                && u64::from(next.header.prev_file_offset) == pos.offset
                && next.header.indexid == self.view.indexid;
            if !continues {
                return self.reload();
            }
            pos = LogPos {
                file_seq: next.header.file_seq,
                offset: u64::from(next.header.hdr_size),
            };
            pos.offset = apply_log(&mut applier, &next, pos.offset)?;
            new_log = Some(next);
        }
        let unknown = applier.unknown_records;
        let mut delta = std::mem::take(&mut applier.delta);
        drop(applier);
        delta.normalize();
        if let Some(next) = new_log {
            self.log = Some(next);
        }
        if delta.is_empty() && pos == self.view.pos {
            return Ok(delta);
        }
        // Packs the chunks the batch touched; the untouched ones stay shared with the
        // previous view.
        state.records.seal();
        self.view = Arc::new(IndexView {
            state,
            pos,
            indexid: self.view.indexid,
            unknown_records: self.view.unknown_records + unknown,
        });
        Ok(delta)
    }

    /// Reads everything again and computes the delta by comparing the two views.
    fn reload(&mut self) -> Result<Delta> {
        let fresh = IndexReader::open(self.paths.clone())?;
        let delta = diff(&self.view, &fresh.view);
        *self = fresh;
        Ok(delta)
    }
}

/// The delta between two views of one mailbox (used after a reload).
pub fn diff(old: &IndexView, new: &IndexView) -> Delta {
    let mut d = Delta {
        reset: old.indexid != new.indexid
            || old.state.header().uid_validity != new.state.header().uid_validity,
        ..Delta::default()
    };
    if d.reset {
        return d;
    }
    let mut a = old.state.records.iter().peekable();
    let mut b = new.state.records.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(x), None) => {
                d.expunged.push(super::records::record_uid(x));
                a.next();
            }
            (None, Some(y)) => {
                d.appended.push(super::records::record_uid(y));
                b.next();
            }
            (Some(x), Some(y)) => {
                let (ux, uy) = (super::records::record_uid(x), super::records::record_uid(y));
                match ux.cmp(&uy) {
                    std::cmp::Ordering::Less => {
                        d.expunged.push(ux);
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        d.appended.push(uy);
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if x[4] != y[4]
                            || old.state.record_keywords(x) != new.state.record_keywords(y)
                        {
                            d.changed.push(ux);
                        }
                        a.next();
                        b.next();
                    }
                }
            }
        }
    }
    d
}

/// Why a load failed: a race with Dovecot (retry) or a real problem.
enum LoadError {
    Raced(String),
    Fatal(Error),
}

impl From<Error> for LoadError {
    fn from(e: Error) -> Self {
        LoadError::Fatal(e)
    }
}
