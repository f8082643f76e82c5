//! Mail clients and tools nobody here wrote, on real mounts: rsync, Python (`open`,
//! `mailbox`), notmuch, neomutt, mblaze. `scripts/test.sh` installs them from Debian.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::corpus::{SourceMaildir, email};
use crate::util::dovecot::{Dovecot, Layout};
use crate::util::mount::Mount;
use crate::util::{TestDir, show, tool};

/// Runs a client; panics unless it exits 0. Its stdout.
#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        show(&out.stdout),
        show(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rsync -aX --itemize-changes SRC/ DEST/`: one line per item rsync changed.
fn rsync(src: &Path, dest: &Path) -> Vec<String> {
    let out = run(Command::new(tool("rsync"))
        .arg("-aX")
        .arg("--itemize-changes")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dest.display())));
    out.lines().map(str::to_string).collect()
}

/// A backup of an unchanged mount is a no-op: `rsync -aX` twice transfers nothing the
/// second time. The root's `user.mailfs.status` (whose counters move with every request)
/// is readable by name but not listed, so rsync never sees it; directory times do not
/// move without a change.
#[test]
fn rsync_twice_transfers_nothing_the_second_time() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("cl_rsync");
    let dovecot = Dovecot::start(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Work");
    for n in 0..3 {
        bob.save("INBOX", &email(n, "Backed up", "body"));
    }
    bob.save("Work", &email(7, "Work", "body"));
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let dest = dir.mkdir("backup");
    let first = rsync(mount.path(), &dest);
    assert!(
        first.iter().any(|l| l.ends_with("INBOX/1.eml")),
        "the first run copies the messages: {first:?}"
    );
    let status = crate::util::fsx::xattr_string(mount.path(), "user.mailfs.status");
    assert!(
        status.contains("reads_served"),
        "readable by name: {status}"
    );
    let second = rsync(mount.path(), &dest);
    assert!(
        second.is_empty(),
        "the second run changed something: {second:?}"
    );
    // And a change is a change: one delivery, one new file (and its directory's times).
    bob.save("INBOX", &email(9, "New", "body"));
    let third = rsync(mount.path(), &dest);
    assert!(
        third.iter().any(|l| l.ends_with("INBOX/4.eml")),
        "the third run copies the new message: {third:?}"
    );
    assert!(!mount.stop().contains("panicked"));
}

/// Python's `open()` asks the kernel whether the file is a terminal (an ioctl the kernel
/// passes to mailfs). Opening and reading 300 messages with Python logs no warning at all.
#[test]
fn python_open_of_many_messages_logs_no_warning() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("cl_pyopen");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Opened");
    let mut source = SourceMaildir::new(&dir.join("src"), "Opened");
    for n in 0..300 {
        source.add(
            &email(n, "Opened", "by Python"),
            "",
            1_700_000_000 + n as u64,
        );
    }
    bob.import(source.root(), "Opened");
    let mount = Mount::start(&bob.location(), &dir.join("mnt"), &[]);
    let before = mount.log();
    let script = "import os, sys\n\
                  d = sys.argv[1]\n\
                  n = 0\n\
                  for name in sorted(os.listdir(d)):\n\
                  \x20   with open(os.path.join(d, name)) as f:\n\
                  \x20       f.read()\n\
                  \x20   n += 1\n\
                  print(n)\n";
    let out = run(Command::new(tool("python3"))
        .arg("-c")
        .arg(script)
        .arg(mount.mailbox("Opened")));
    assert_eq!(out.trim(), "300", "messages Python opened");
    let log = mount.log();
    let grown = &log[before.len()..];
    assert!(
        grown.trim().is_empty(),
        "opening 300 messages from Python logged:\n{}",
        &grown[..grown.len().min(2000)]
    );
    assert!(!mount.stop().contains("panicked"));
}
