//! Views continued by what changed (dbox: the index delta; Maildir: the inotify name
//! journal and the uidlist tail) must equal what a full rebuild shows. A mount with a
//! watcher and no kernel caching lives through a seeded random sequence of deliveries,
//! flag and keyword changes, expunges, files dropped into `new/` by "another MDA", and
//! uidlist rewrites; after every few operations the whole mount is compared with doveadm
//! (bytes, sizes, flags, keywords, GUIDs, dates). The mount log must show that views were
//! really continued (not rebuilt in full each time), or the test proves nothing.

use std::fs;
use std::time::Duration;

use crate::util::TestDir;
use crate::util::compare::assert_mount_matches_dovecot;
use crate::util::corpus::email;
use crate::util::dovecot::{DboxLayout, Dovecot, Layout, User};
use crate::util::fsx::xattr_string;
use crate::util::mount::Mount;
use crate::util::rng::Rng;

const ROUNDS: usize = 12;
const OPS_PER_ROUND: usize = 6;

/// One random change made through Dovecot (or, for Maildir, beside it).
fn random_op(
    rng: &mut Rng,
    user: &User<'_>,
    owner: (u32, u32),
    maildir: bool,
    n: &mut usize,
) -> String {
    let uids = user.uids("INBOX");
    let pick = |rng: &mut Rng| uids[rng.below(uids.len() as u64) as usize];
    match rng.below(10) {
        0..=2 => {
            *n += 1;
            let body = format!("body {n}\n").repeat(1 + rng.below(50) as usize);
            let uid = user.save("INBOX", &email(*n, &format!("Delivery {n}"), &body));
            format!("save uid {uid}")
        }
        3..=4 if !uids.is_empty() => {
            let uid = pick(rng);
            let flags = [
                "\\Seen",
                "\\Flagged",
                "$Label1",
                "\\Answered \\Draft",
                "junk",
            ][rng.below(5) as usize];
            user.flags_add("INBOX", uid, flags);
            format!("flags add {flags} uid {uid}")
        }
        5 if !uids.is_empty() => {
            let uid = pick(rng);
            user.flags_remove("INBOX", uid, "\\Seen $Label1");
            format!("flags remove uid {uid}")
        }
        6 if uids.len() > 5 => {
            let uid = pick(rng);
            user.expunge("INBOX", uid);
            format!("expunge uid {uid}")
        }
        7 if maildir => {
            // Another program delivers into new/; Dovecot gives it a UID at its next sync
            // (the status call below).
            *n += 1;
            let dir = user.mailbox_dir("INBOX").join("new");
            let name = format!("{}.M{n}P1.othermda", 1_700_000_000 + *n);
            let tmp = user.mailbox_dir("INBOX").join("tmp").join(&name);
            fs::write(&tmp, email(*n, "External", "dropped into new/")).expect("write");
            fs::rename(&tmp, dir.join(&name)).expect("rename into new/");
            let (uid, gid) = owner;
            let _ = std::os::unix::fs::chown(dir.join(&name), Some(uid), Some(gid));
            user.status("INBOX");
            format!("external delivery {name}")
        }
        _ => {
            user.status("INBOX");
            "status".to_string()
        }
    }
}

fn churn_and_compare(layout: Layout, maildir: bool, tag: &str) {
    let dir = TestDir::new(tag);
    let dovecot = Dovecot::start(&dir, layout);
    let user = dovecot.user("bob");
    let owner = dovecot.mail_owner();
    for i in 0..40 {
        user.save("INBOX", &email(i, &format!("Seed {i}"), "first\n"));
    }
    let mount = Mount::start(
        &user.location(),
        &dir.join("mnt"),
        &[
            "--watch",
            "inotify",
            "--attr-timeout",
            "0",
            "--entry-timeout",
            "0",
            "-v",
        ],
    );
    assert_mount_matches_dovecot(&mount, &user);
    let seed = Rng::seed_from_env("MAILFS_TEST_SEED");
    let mut rng = Rng::new(seed);
    let mut n = 1000;
    let mut done = Vec::new();
    for round in 0..ROUNDS {
        for _ in 0..OPS_PER_ROUND {
            done.push(random_op(&mut rng, &user, owner, maildir, &mut n));
        }
        // A watcher re-check is due within a few ms; the view stamps are re-checked at
        // most 20 ms after their last check.
        std::thread::sleep(Duration::from_millis(60));
        let compared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_mount_matches_dovecot(&mount, &user)
        }));
        if let Err(e) = compared {
            eprintln!(
                "round {round} (seed {seed}): the mount differs from doveadm after\n{}\n\
                 --- mount log (tail) ---\n{}",
                done.join("\n"),
                tail(&mount.log(), 40)
            );
            std::panic::resume_unwind(e);
        }
    }
    let log = mount.log();
    let journal = log.matches("continued from the journal").count();
    let status = xattr_string(mount.path(), "user.mailfs.status");
    let continued: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("view_continuations: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no view_continuations in the status:\n{status}"));
    eprintln!(
        "{tag}: {} operations, {continued} views continued ({journal} from a Maildir journal)",
        done.len()
    );
    // Every round changed the mailbox, so every round's view must have been continued
    // from the one before (by the index delta for dbox, by the name journal for
    // Maildir), not rebuilt in full: that is what these tests are about.
    assert!(
        continued >= ROUNDS,
        "views were rebuilt in full instead of continued ({continued} continuations)\n{}",
        tail(&log, 40)
    );
    // After each change the settle re-check rebuilds the view (its stamps were tentative)
    // and finds nothing new: a dbox view then stays the very same snapshot, not a copy of
    // a million messages' chunk pointers.
    let unchanged: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("views_unchanged: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no views_unchanged in the status:\n{status}"));
    if !maildir {
        assert!(
            unchanged >= ROUNDS / 2,
            "rebuilds with nothing new made new views ({unchanged} kept)\n{}",
            tail(&log, 40)
        );
    }
    if maildir {
        assert!(
            journal >= ROUNDS,
            "Maildir views were not continued from the journal ({journal})\n{}",
            tail(&log, 40)
        );
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn maildir_views_continued_from_the_journal_match_doveadm() {
    require!(Dovecot, Fuse);
    churn_and_compare(Layout::MaildirPlusPlus, true, "inc_maildir");
}

#[test]
fn maildir_fs_layout_with_separate_control_matches_doveadm() {
    require!(Dovecot, Fuse);
    churn_and_compare(Layout::FsSeparateIndexControl, true, "inc_maildir_fs");
}

#[test]
fn mdbox_views_continued_from_the_index_delta_match_doveadm() {
    require!(Dovecot, Fuse);
    churn_and_compare(DboxLayout::mdbox(""), false, "inc_mdbox");
}

#[test]
fn sdbox_views_continued_from_the_index_delta_match_doveadm() {
    require!(Dovecot, Fuse);
    churn_and_compare(DboxLayout::sdbox(""), false, "inc_sdbox");
}
