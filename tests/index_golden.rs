//! Golden tests of the index engine (`mailfs::index`) against files written by real
//! Dovecot, for Maildir++, Maildir with `INDEX=` elsewhere, and mdbox (mailbox index and
//! map index).
//!
//! Each test drives Dovecot through phases (saves, flag and keyword changes with more than
//! 32 keywords so the keyword bitmask grows across byte and 4-byte boundaries, expunges of
//! single UIDs and ranges, `doveadm index`, `force-resync`, a forced index rewrite, single
//! and multiple log rotations, mdbox copies and purges). After each phase:
//! - a fresh `IndexReader::open` equals the oracle ([`assert_matches_dovecot`]);
//! - a reader opened at the start and `refresh()`ed after every phase holds exactly the
//!   same state as the fresh one ([`assert_same_state`]), and its delta is what the phase
//!   did ([`check_delta`]);
//! - for mdbox, the map index is checked too: every map_uid a mailbox references exists
//!   with a non-zero file_id, and its `ref` count equals `doveadm fetch refcount` and the
//!   number of mailbox records that reference it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mailfs::index::reader::{IndexPaths, IndexReader, IndexView};

use crate::util::TestDir;
use crate::util::corpus::email;
use crate::util::dovecot::{Dovecot, Layout, User};
use crate::util::index_oracle::{
    Expected, assert_matches_dovecot, assert_matches_dump, assert_same_state, assert_view_valid,
    check_delta, log_header, messages, open, parse_index_dump, split_flags,
};
use crate::util::json::Json;
use crate::util::{mailfs_bin, show};

/// What the test believes a message's flags are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ModelMsg {
    flags: u8,
    keywords: BTreeSet<String>,
}

/// Parses a UID set like `3`, `10:14` or `1,5:7` against the existing UIDs.
fn uid_set(set: &str, existing: impl Iterator<Item = u32>) -> Vec<u32> {
    let ranges: Vec<(u32, u32)> = set
        .split(',')
        .map(|item| {
            let (a, b) = item.split_once(':').unwrap_or((item, item));
            (a.parse().expect("uid"), b.parse().expect("uid"))
        })
        .collect();
    existing
        .filter(|u| ranges.iter().any(|&(a, b)| a <= *u && *u <= b))
        .collect()
}

/// Options that make Dovecot rewrite `dovecot.index` on this command's sync.
const REWRITE: &[&str] = &["mail_index_rewrite_max_log_bytes=1"];
/// Options that rotate the log once the current one is more than a second old.
const ROTATE_ONCE: &[&str] = &[
    "mail_index_log_rotate_min_size=1",
    "mail_index_log_rotate_min_age=1s",
];
/// Options that rotate the log at every index write (several rotations per command).
const ROTATE_ALWAYS: &[&str] = &["mail_index_log_rotate_max_size=1"];

/// One mailbox under test: the model, the long-lived reader, and the checks.
struct Golden<'d> {
    dovecot: &'d Dovecot,
    user: &'d User<'d>,
    mailbox: String,
    paths: IndexPaths,
    /// Opened at the start, refreshed after each phase.
    long: IndexReader,
    model: BTreeMap<u32, ModelMsg>,
    /// The model when the current phase started.
    before: BTreeMap<u32, ModelMsg>,
    /// mdbox: the map index and its long-lived reader, and every mailbox that may
    /// reference map records.
    map: Option<(IndexPaths, IndexReader)>,
    other_mailboxes: Vec<String>,
    /// Counters for the summary line.
    phases: usize,
    slack: usize,
    rotations: u32,
    saved: usize,
}

impl<'d> Golden<'d> {
    /// Makes sure the mailbox exists (so its log does) and opens the long-lived reader(s).
    fn new(dovecot: &'d Dovecot, user: &'d User<'d>, mailbox: &str) -> Golden<'d> {
        if mailbox != "INBOX" {
            user.create_mailbox(mailbox);
        }
        let status = user.status(mailbox);
        assert_eq!(status.messages, 0, "{mailbox} starts empty");
        let paths = IndexPaths::mailbox(user.index_dir(mailbox));
        let long = open(&paths, &format!("{mailbox}: opening the empty mailbox"));
        assert!(long.view().state.records.is_empty());
        Golden {
            dovecot,
            user,
            mailbox: mailbox.to_string(),
            paths,
            long,
            model: BTreeMap::new(),
            before: BTreeMap::new(),
            map: None,
            other_mailboxes: Vec::new(),
            phases: 0,
            slack: 0,
            rotations: 0,
            saved: 0,
        }
    }

    /// mdbox: also follow the map index; `others` are the other mailboxes that may hold
    /// references to map records.
    fn with_map(mut self, others: &[&str]) -> Self {
        let paths = IndexPaths {
            dir: self.user.map_index_dir(),
            prefix: "dovecot.map.index".into(),
        };
        let reader = open(&paths, "opening the map index");
        self.map = Some((paths, reader));
        self.other_mailboxes = others.iter().map(|s| s.to_string()).collect();
        self
    }

    fn mb(&self) -> &str {
        &self.mailbox
    }

    fn save(&mut self, n: usize) {
        for _ in 0..n {
            self.saved += 1;
            let k = self.saved;
            let body = format!("Message {k} of the golden index test.");
            let uid = self
                .user
                .save(&self.mailbox, &email(k, &format!("Golden {k}"), &body));
            assert!(
                self.model.keys().all(|&u| u < uid),
                "uid {uid} not above the others"
            );
            self.model.insert(uid, ModelMsg::default());
        }
    }

    /// `doveadm flags <op> <flags> ... uid <set>`, with the model updated alike.
    fn flags(&mut self, opts: &[&str], op: &str, set: &str, flags: &str) {
        self.user.flags_set(opts, op, &self.mailbox, set, flags);
        let names: Vec<String> = flags.split(' ').map(str::to_string).collect();
        let (bits, keywords) = split_flags(&names);
        for uid in uid_set(set, self.model.keys().copied()) {
            let m = self.model.get_mut(&uid).expect("uid in model");
            match op {
                "add" => {
                    m.flags |= bits;
                    m.keywords.extend(keywords.iter().cloned());
                }
                "remove" => {
                    m.flags &= !bits;
                    for k in &keywords {
                        m.keywords.remove(k);
                    }
                }
                "replace" => {
                    m.flags = bits;
                    m.keywords = keywords.iter().cloned().collect();
                }
                other => panic!("unknown flags op {other}"),
            }
        }
    }

    fn expunge(&mut self, opts: &[&str], set: &str) {
        self.user.expunge_set(opts, &self.mailbox, set);
        for uid in uid_set(set, self.model.keys().copied()) {
            self.model.remove(&uid);
        }
    }

    /// Waits until the current log is old enough for `ROTATE_ONCE`, then makes one change
    /// with it; asserts that exactly one rotation happened.
    fn rotate_once(&mut self) {
        let before = log_header(&self.paths);
        // min_age=1s: Dovecot rotates when create_stamp < now - 1 (whole seconds).
        let deadline = u64::from(before.create_stamp) + 2;
        while unix_now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let uid = *self.model.keys().next().expect("a message to change");
        let toggle = if self.model[&uid].flags & 0x01 == 0 {
            "add"
        } else {
            "remove"
        };
        self.flags(ROTATE_ONCE, toggle, &uid.to_string(), "\\Answered");
        let after = log_header(&self.paths);
        assert_eq!(
            (
                after.file_seq,
                after.prev_file_seq,
                after.prev_file_offset as u64
            ),
            (
                before.file_seq + 1,
                before.file_seq,
                std::fs::metadata(self.paths.dir.join("dovecot.index.log.2"))
                    .expect(".log.2 after a rotation")
                    .len()
            ),
            "{}: one rotation, .log.2 is the previous log",
            self.mailbox
        );
    }

    /// The checks after a phase (see the module doc).
    #[track_caller]
    fn check(&mut self, phase: &str) {
        self.phases += 1;
        let what = format!("{} {}: after {phase}", self.user.location(), self.mailbox);
        // The phase's expectation, from the model.
        let mut exp = Expected::default();
        for (uid, m) in &self.model {
            match self.before.get(uid) {
                None => {
                    exp.appended.insert(*uid);
                }
                Some(old) if old != m => {
                    exp.changed.insert(*uid);
                }
                Some(_) => {}
            }
        }
        exp.expunged = self
            .before
            .keys()
            .filter(|u| !self.model.contains_key(u))
            .copied()
            .collect();

        // 1. The long-lived reader, refreshed: its delta is what the phase did.
        let old = self.long.view();
        let delta = self
            .long
            .refresh()
            .unwrap_or_else(|e| panic!("{what}: refresh failed: {e}"));
        let new = self.long.view();
        assert_view_valid(&new, &what);
        assert!(new.pos >= old.pos, "{what}: position went back");
        self.rotations += new.pos.file_seq - old.pos.file_seq;
        self.slack += check_delta(
            self.dovecot,
            &self.paths,
            &old,
            &new,
            &delta,
            Some(&exp),
            &what,
        );

        // 2. A fresh reader equals Dovecot, and the test's model equals Dovecot.
        let fresh = open(&self.paths, &what).view();
        assert_matches_dovecot(
            &fresh,
            self.user,
            self.dovecot,
            &self.mailbox,
            &self.paths.dir,
            &what,
        );
        let fetched = self.user.fetch_flags(&self.mailbox);
        let oracle: BTreeMap<u32, ModelMsg> = fetched
            .into_iter()
            .map(|(uid, flags)| {
                let (flags, keywords) = split_flags(&flags);
                let keywords = keywords.into_iter().collect();
                (uid, ModelMsg { flags, keywords })
            })
            .collect();
        assert_eq!(
            self.model, oracle,
            "{what}: the test's model vs doveadm (a test bug)"
        );

        // 3. The oracle's own commands may have appended to the log (cache offsets, sync
        // bookkeeping): catch up, then the long-lived reader equals a fresh one exactly.
        let old = self.long.view();
        let delta = self
            .long
            .refresh()
            .unwrap_or_else(|e| panic!("{what}: refresh after the oracle failed: {e}"));
        let new = self.long.view();
        self.slack += check_delta(
            self.dovecot,
            &self.paths,
            &old,
            &new,
            &delta,
            None,
            &format!("{what} (oracle's own writes)"),
        );
        assert!(
            delta.appended.is_empty() && delta.expunged.is_empty(),
            "{what}: the oracle's commands appended or expunged: {delta:?}"
        );
        let fresh = open(&self.paths, &what).view();
        assert_eq!(
            new.pos, fresh.pos,
            "{what}: positions of long-lived and fresh"
        );
        assert_same_state(&new, &fresh, &format!("{what}: long-lived vs fresh reader"));

        if self.map.is_some() {
            self.check_map(&what);
        }
        self.before = self.model.clone();
    }

    /// mdbox: the map index, long-lived vs fresh vs doveadm, and its references.
    fn check_map(&mut self, what: &str) {
        let (paths, reader) = self.map.as_mut().expect("map");
        let what = format!("{what}: map index");
        let old = reader.view();
        let delta = reader
            .refresh()
            .unwrap_or_else(|e| panic!("{what}: refresh failed: {e}"));
        let new = reader.view();
        assert_view_valid(&new, &what);
        check_delta(self.dovecot, paths, &old, &new, &delta, None, &what);
        let fresh = open(paths, &what).view();
        assert_same_state(&new, &fresh, &format!("{what}: long-lived vs fresh reader"));
        assert_matches_dump(
            &fresh,
            self.dovecot,
            &paths.dir.join("dovecot.map.index"),
            &what,
        );

        // Every reference from a mailbox resolves, and refcounts add up.
        let map_ext = |v: &IndexView, name: &str| {
            v.state
                .ext(name)
                .map(|(_, e)| e.clone())
                .unwrap_or_else(|| panic!("{what}: no {name} extension"))
        };
        if fresh.state.records.is_empty() {
            return;
        }
        let (map, refs) = (map_ext(&fresh, "map"), map_ext(&fresh, "ref"));
        let mut referenced: BTreeMap<u32, u32> = BTreeMap::new();
        let mut mailboxes = vec![self.mailbox.clone()];
        mailboxes.extend(self.other_mailboxes.iter().cloned());
        for mb in &mailboxes {
            let v = open(&IndexPaths::mailbox(self.user.index_dir(mb)), &what).view();
            let refcounts: BTreeMap<u32, u32> = self.user.fetch_refcounts(mb).into_iter().collect();
            if v.state.records.is_empty() {
                continue;
            }
            let mdbox = map_ext(&v, "mdbox");
            for m in messages(&v) {
                let rec = v.state.records.get(m.uid).expect("record");
                let map_uid = u32::from_le_bytes(
                    mdbox.slice(&rec).expect("mdbox bytes")[..4]
                        .try_into()
                        .expect("4 bytes"),
                );
                assert_ne!(map_uid, 0, "{what}: {mb} uid {} has map_uid 0", m.uid);
                *referenced.entry(map_uid).or_default() += 1;
                let Some(map_rec) = fresh.state.records.get(map_uid) else {
                    panic!(
                        "{what}: {mb} uid {} references map_uid {map_uid}, not in the map",
                        m.uid
                    );
                };
                let file_id = u32::from_le_bytes(
                    map.slice(&map_rec).expect("map bytes")[..4]
                        .try_into()
                        .expect("4"),
                );
                assert_ne!(file_id, 0, "{what}: map_uid {map_uid} has file_id 0");
                let storage = self.user.map_index_dir().join(format!("m.{file_id}"));
                assert!(
                    storage.is_file(),
                    "{what}: map_uid {map_uid} points at missing {storage:?}"
                );
                let r = refs.slice(&map_rec).expect("ref bytes");
                let count = u32::from(u16::from_le_bytes([r[0], r[1]]));
                assert_eq!(
                    Some(&count),
                    refcounts.get(&m.uid),
                    "{what}: ref of map_uid {map_uid} vs doveadm fetch refcount of {mb} uid {}",
                    m.uid
                );
            }
        }
        for (map_uid, n) in &referenced {
            let rec = fresh.state.records.get(*map_uid).expect("checked above");
            let r = refs.slice(&rec).expect("ref bytes");
            assert_eq!(
                u32::from(u16::from_le_bytes([r[0], r[1]])),
                *n,
                "{what}: ref of map_uid {map_uid} vs the mailbox records referencing it"
            );
        }
    }

    fn summary(&self) {
        let v = self.long.view();
        eprintln!(
            "{} {}: {} phases, {} messages left, {} keywords, {} rotations followed, \
             {} changed-but-equal UIDs allowed (records Dovecot rewrote), position {:?}",
            self.user.location(),
            self.mailbox,
            self.phases,
            v.state.records.len(),
            v.state.keywords.len(),
            self.rotations,
            self.slack,
            v.pos
        );
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The shared phase script. `mdbox` adds copies to `Other` and a purge.
fn run_phases(g: &mut Golden<'_>, mdbox: bool) {
    let index = g.paths.dir.join("dovecot.index");
    g.check("opening an empty mailbox");

    g.save(40);
    g.check("40 saves");

    g.flags(&[], "add", "1:20", "\\Seen");
    g.flags(&[], "add", "5,7,9", "\\Flagged");
    g.flags(&[], "add", "30:35", "\\Answered \\Draft");
    g.flags(&[], "remove", "10:12", "\\Seen");
    g.flags(&[], "replace", "40", "\\Deleted \\Seen");
    g.flags(&[], "add", "38", "\\Deleted");
    g.check("flag add/remove/replace");

    // Keywords in three steps: 8 (1-byte mask + pad = 2), 20 (3 + 1 = 4), 40 (5 + 1 = 6).
    let kw = |i: usize| format!("kw{i:02}");
    for i in 0..8 {
        g.flags(&[], "add", &format!("{}:{}", i + 1, i + 10), &kw(i));
    }
    g.check("8 keywords");
    for i in 8..20 {
        g.flags(&[], "add", &format!("{}", i * 2 - 10), &kw(i));
    }
    g.flags(
        &[],
        "add",
        "1",
        &(8..20).map(kw).collect::<Vec<_>>().join(" "),
    );
    g.flags(&[], "remove", "3:5", &kw(3));
    g.check("20 keywords");
    for i in 20..40 {
        g.flags(&[], "add", &format!("{}:{}", i - 19, i - 15), &kw(i));
    }
    g.flags(
        &[],
        "replace",
        "2",
        &format!("\\Flagged {} {}", kw(39), kw(0)),
    );
    g.flags(&[], "remove", "1:40", &kw(25));
    g.check("40 keywords");

    g.expunge(&[], "3");
    g.expunge(&[], "10:14");
    g.expunge(&[], "30:32,36");
    g.check("expunges of a UID and of ranges");

    g.user.index(&g.mailbox.clone());
    g.check("doveadm index");

    g.flags(REWRITE, "add", "1", "\\Flagged");
    assert!(index.is_file(), "{index:?} written by a forced rewrite");
    g.check("a forced dovecot.index rewrite");

    g.rotate_once();
    g.check("a rotation to .log.2");
    g.save(3);
    g.flags(&[], "add", "41:43", &format!("\\Seen {}", kw(7)));
    g.check("saves into the rotated log");
    g.rotate_once();
    g.check("a second rotation");

    let seq = log_header(&g.paths).file_seq;
    g.flags(ROTATE_ALWAYS, "add", "4:9", &kw(33));
    g.save(2);
    let now = log_header(&g.paths).file_seq;
    eprintln!("{}: ROTATE_ALWAYS went from log seq {seq} to {now}", g.mb());
    assert!(now > seq, "rotate_max_size=1 rotated");
    g.check("repeated rotations in one command");

    g.flags(&[], "add", "15:29", "\\Deleted");
    g.expunge(&[], "15:20");
    g.check("flag then expunge");

    if mdbox {
        g.user.copy_set("Other", g.mb(), "1:9");
        g.check("copies to another mailbox (refcounts 2)");
        g.expunge(&[], "1,2,21:25");
        g.check("expunging copied and uncopied messages");
        g.user.purge();
        g.check("doveadm purge");
    }

    g.user.force_resync(&g.mailbox.clone());
    g.check("force-resync");

    g.save(2);
    g.flags(&[], "add", "1:100", &kw(40));
    g.check("saves and a 41st keyword after force-resync");
}

#[test]
fn maildir_index_matches_dovecot_through_every_phase() {
    require!(Dovecot);
    let start = Instant::now();
    let dir = TestDir::new("index_golden_pp");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let mut g = Golden::new(&dovecot, &bob, "INBOX");
    run_phases(&mut g, false);
    g.summary();
    log_only_mailbox(&dovecot, &bob, "Small");
    dump_json_matches_dovecot(&dovecot, &bob, "INBOX");
    eprintln!("took {:?}", start.elapsed());
}

#[test]
fn maildir_separate_index_matches_dovecot_through_every_phase() {
    require!(Dovecot);
    let dir = TestDir::new("index_golden_fs");
    let dovecot = Dovecot::start(&dir, Layout::FsSeparateIndexControl);
    let bob = dovecot.user("bob");
    let mut g = Golden::new(&dovecot, &bob, "INBOX");
    assert!(
        g.paths.dir.ends_with("index/INBOX"),
        "index dir {:?}",
        g.paths.dir
    );
    run_phases(&mut g, false);
    g.summary();
    let mut sub = Golden::new(&dovecot, &bob, "Work/Sub");
    sub.save(5);
    sub.flags(&[], "add", "2:4", "\\Seen $Label1");
    sub.check("saves and flags in a nested mailbox");
    sub.summary();
}

#[test]
fn mdbox_index_and_map_match_dovecot_through_every_phase() {
    require!(Dovecot);
    let dir = TestDir::new("index_golden_mdbox");
    let dovecot = Dovecot::start(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Other");
    let mut g = Golden::new(&dovecot, &bob, "INBOX").with_map(&["Other"]);
    run_phases(&mut g, true);
    g.summary();
    log_only_mailbox(&dovecot, &bob, "Small");
}

/// A mailbox small enough never to get a `dovecot.index`: the whole state is in the log.
fn log_only_mailbox(dovecot: &Dovecot, user: &User<'_>, mailbox: &str) {
    let mut g = Golden::new(dovecot, user, mailbox);
    g.save(4);
    g.check("four saves");
    g.flags(&[], "add", "2:3", "\\Seen \\Flagged $Label1 work");
    g.expunge(&[], "1");
    g.check("flags and an expunge");
    assert!(
        !g.paths.dir.join("dovecot.index").exists(),
        "{mailbox} should have no dovecot.index"
    );
    g.summary();
}

/// `mailfs dump --json <dir>/dovecot.index` against doveadm: UIDs, flags, keywords.
fn dump_json_matches_dovecot(dovecot: &Dovecot, user: &User<'_>, mailbox: &str) {
    let index = user.index_dir(mailbox).join("dovecot.index");
    let out = Command::new(mailfs_bin())
        .arg("dump")
        .arg("--json")
        .arg(&index)
        .output()
        .expect("running mailfs dump");
    assert!(
        out.status.success(),
        "mailfs dump --json {index:?} failed: {}",
        show(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 JSON");
    let json = Json::parse(&text).unwrap_or_else(|e| panic!("mailfs dump JSON: {e}\n{text}"));
    let dumped = parse_index_dump(&dovecot.dump(&index));
    let fetched = user.fetch_flags(mailbox);
    let records = json.get("records").list();
    assert_eq!(
        records.len(),
        fetched.len(),
        "records in mailfs dump vs doveadm"
    );
    for ((rec, (uid, flags)), (duid, dflags)) in records.iter().zip(&fetched).zip(&dumped.records) {
        let (bits, keywords) = split_flags(flags);
        assert_eq!(rec.get("uid").num(), i128::from(*uid), "uid");
        assert_eq!(*duid, *uid, "doveadm dump vs fetch uid");
        assert_eq!(
            rec.get("flags").num(),
            i128::from(*dflags),
            "flag byte of uid {uid} vs doveadm dump"
        );
        assert_eq!(
            rec.get("flags").num() as u8 & 0x1f,
            bits,
            "system flags of uid {uid} vs doveadm fetch"
        );
        let kws: Vec<&str> = rec.get("keywords").list().iter().map(Json::str).collect();
        assert_eq!(kws, keywords, "keywords of uid {uid}");
    }
    let header = json.get("header");
    for (key, label) in [
        ("uid_validity", "uid validity"),
        ("next_uid", "next uid"),
        ("messages_count", "messages count"),
        ("seen_messages_count", "seen messages count"),
        ("deleted_messages_count", "deleted messages count"),
    ] {
        assert_eq!(
            header.get(key).num(),
            i128::from(dumped.field(label)),
            "mailfs dump header.{key} vs doveadm dump {label}"
        );
    }
}

// Focused regression tests, one per engine bug these golden tests found (all fixed).

/// INBOX with one message whose whole state is in its log (no `dovecot.index`), with
/// `keywords` keywords each added by its own transaction; checked against doveadm.
fn log_only_with_keywords(dovecot: &Dovecot, user: &User<'_>, keywords: usize) -> IndexView {
    user.save("INBOX", &email(1, "Keywords", "many"));
    for i in 0..keywords {
        user.flags_add("INBOX", 1, &format!("kw{i:02}"));
    }
    let dir = user.index_dir("INBOX");
    assert!(
        !dir.join("dovecot.index").exists(),
        "the state must come from log replay alone"
    );
    let view = open(&IndexPaths::mailbox(&dir), "log-only INBOX").view();
    assert_matches_dovecot(&view, user, dovecot, "INBOX", &dir, "log-only INBOX");
    (*view).clone()
}

/// Dovecot re-registers the `keywords` extension, recomputing its record size as
/// `ceil(n/8)` (+1 unless a multiple of 4), not only when the bitmask is full but also
/// whenever the keyword-names header outgrows its 128 spare bytes
/// (`keywords_header_add()` in `mail-index-sync-keywords.c`: `buf->used > ext->hdr_size`).
/// With 20 keywords added one by one Dovecot re-registers at the 12th keyword (3 bytes).
/// Regression: the engine used to regrow only when the bitmask was full (at the 17th, to
/// 4 bytes), so after log replay the Maildir record size was 16 instead of 12 and `cache`
/// sat at offset 12 instead of 8.
#[test]
fn keyword_bitmask_size_follows_dovecot_in_log_replay() {
    require!(Dovecot);
    let dir = TestDir::new("index_kwsize");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let view = log_only_with_keywords(&dovecot, &bob, 20);
    let dumped = parse_index_dump(&dovecot.dump(&bob.index_dir("INBOX").join("dovecot.index")));
    let ours: Vec<(String, u16, u16)> = view
        .state
        .exts
        .iter()
        .map(|e| (e.name.clone(), e.record_offset, e.record_size))
        .collect();
    let theirs: Vec<(String, u16, u16)> = dumped
        .exts
        .iter()
        .map(|e| (e.name.clone(), e.record_offset, e.record_size))
        .collect();
    assert_eq!(
        ours, theirs,
        "(name, record_offset, record_size) of each extension vs doveadm dump"
    );
    assert_eq!(
        u64::from(view.state.header().record_size),
        dumped.field("record size"),
        "record size vs doveadm dump"
    );
}

/// Dovecot registers an extension introduced by the log with the intro's record_align,
/// 0 for header-only extensions (`mail_index_sync_ext_intro()` copies `u->record_align`);
/// a snapshot therefore says 0. Regression: the engine stored `record_align.max(1)`, so the
/// same state read as align 0 from `dovecot.index` and as 1 from the log.
#[test]
fn header_only_extension_keeps_align_0_in_log_replay() {
    require!(Dovecot);
    let dir = TestDir::new("index_align");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let view = log_only_with_keywords(&dovecot, &bob, 1);
    let dumped = parse_index_dump(&dovecot.dump(&bob.index_dir("INBOX").join("dovecot.index")));
    let ours: Vec<(String, u16, u16)> = view
        .state
        .exts
        .iter()
        .map(|e| (e.name.clone(), e.record_size, e.record_align))
        .collect();
    let theirs: Vec<(String, u16, u16)> = dumped
        .exts
        .iter()
        .map(|e| (e.name.clone(), e.record_size, e.record_align))
        .collect();
    assert_eq!(
        ours, theirs,
        "(name, record_size, record_align) of each extension vs doveadm dump"
    );
}

/// A message saved and expunged between two refreshes was never in the old view, so the
/// delta lists it neither as appended nor as expunged (as a reload, which diffs the two
/// views, reports). Regression: `Delta::normalize` used to drop it from `appended` but
/// keep it in `expunged`, so `old.len() + appended - expunged` was wrong and the
/// incremental and reload paths disagreed about the same change.
#[test]
fn delta_omits_a_uid_appended_and_expunged_in_one_refresh() {
    require!(Dovecot);
    let dir = TestDir::new("index_delta");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Kept", "one"));
    let paths = IndexPaths::mailbox(bob.index_dir("INBOX"));
    let mut reader = open(&paths, "INBOX");
    let before = reader.view();
    let kept = bob.save("INBOX", &email(2, "Kept too", "two"));
    let gone = bob.save("INBOX", &email(3, "Gone", "three"));
    bob.expunge("INBOX", gone);
    let delta = reader.refresh().expect("refresh");
    let after = reader.view();
    assert_eq!(
        (
            crate::util::index_oracle::uids(&before),
            crate::util::index_oracle::uids(&after)
        ),
        (vec![1], vec![1, kept])
    );
    assert_eq!(delta.appended, vec![kept], "appended");
    assert_eq!(
        delta.expunged,
        Vec::<u32>::new(),
        "uid {gone} was never in the old view, so it is not an expunge of it: {delta:?}"
    );
}

/// After the first rotation of a mailbox that has no `dovecot.index` yet, and until Dovecot
/// has written the snapshot that goes with the rotation (or when `dovecot.index` is lost),
/// the state is in `.log.2` followed by `.log` (whose header names `.log.2` as its
/// predecessor); `doveadm dump` replays both. Regression: the engine started at `.log`
/// alone, so
/// - while `.log` held only its header (the moment right after the rotation), `open`
///   returned an EMPTY mailbox (uid_validity 0, no messages) without any error;
/// - once `.log` referred to an extension introduced in `.log.2`, `open` failed with
///   "extension intro for unknown id" (also `mailfs dump` of the fixture pair
///   `tests/fixtures/formats/maildir-rotated.index.log{,.2}`).
#[test]
fn log_only_open_replays_log2() {
    require!(Dovecot);
    let dir = TestDir::new("index_log2");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let mut g = Golden::new(&dovecot, &bob, "INBOX");
    g.save(3);
    g.flags(&[], "add", "2", "\\Seen work");
    g.check("saves before the rotation");
    assert!(
        !g.paths.dir.join("dovecot.index").exists(),
        "log only so far"
    );
    g.rotate_once();
    g.check("the first rotation");

    // What a reader sees if it looks before Dovecot renames the new dovecot.index into
    // place: .log.2 and a .log with only its header.
    let copy = dir.mkdir("window");
    let log = std::fs::read(g.paths.dir.join("dovecot.index.log")).expect(".log");
    let hdr = usize::from(log_header(&g.paths).hdr_size);
    std::fs::write(copy.join("dovecot.index.log"), &log[..hdr]).expect("copy");
    std::fs::copy(
        g.paths.dir.join("dovecot.index.log.2"),
        copy.join("dovecot.index.log.2"),
    )
    .expect("copy");
    let paths = IndexPaths::mailbox(&copy);
    let view = open(&paths, "the rotation window").view();
    assert_matches_dump(
        &view,
        &dovecot,
        &copy.join("dovecot.index"),
        "no dovecot.index, .log.2 + header-only .log",
    );

    // Later: .log with its records, still no dovecot.index.
    std::fs::write(copy.join("dovecot.index.log"), &log).expect("copy");
    let view = open(&paths, "no dovecot.index, .log.2 + .log").view();
    assert_matches_dump(
        &view,
        &dovecot,
        &copy.join("dovecot.index"),
        "no dovecot.index, .log.2 + .log",
    );
}
