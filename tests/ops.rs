//! Operations: `mount -t fuse.mailfs` and fstab lines through the real mount(8) and
//! mount.fuse3, the background start and its report, the mount table's type and source,
//! readiness on a NOTIFY_SOCKET, `-o rw`, uid/gid/umask with a real second user, the
//! start-up checks (non-empty mount point, format prefix against the disk, LAYOUT=fs
//! hint, unknown formats, single-spaced messages), --log-file, install.sh (man page,
//! completions) and demo.sh without fuse3.
//!
//! mount(8) runs its helpers without PATH, so mount.fuse3's `/bin/sh` finds `mailfs` on
//! the shell's default path: each mount(8) test runs in a private mount namespace
//! (`unshare -m`) where a directory holding a `mailfs` link to the binary under test is
//! bound over /usr/local/sbin. Nothing outside the namespace changes.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::corpus::email;
use crate::util::dovecot::{Dovecot, Layout};
use crate::util::mount::{Mount, mount_must_fail};
use crate::util::{TestDir, mailfs_bin, mounts_below, show};

/// Runs `script` with `sh -eu` in a private mount namespace where `mailfs` (the binary
/// under test) is first on the shell's default PATH.
fn in_namespace(dir: &TestDir, script: &str) -> Output {
    let bin = dir.mkdir("sbin");
    let link = bin.join("mailfs");
    if !link.exists() {
        std::os::unix::fs::symlink(mailfs_bin(), &link).expect("linking mailfs");
    }
    let full = format!("mount --bind {} /usr/local/sbin\n{script}", bin.display());
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-euc", &full])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("running unshare")
}

/// The mountinfo line of `mp` in `text` (field 5 is the mount point).
fn mountinfo_line<'a>(text: &'a str, mp: &Path) -> Option<&'a str> {
    let mp = mp.display().to_string();
    text.lines()
        .find(|l| l.split(' ').nth(4) == Some(mp.as_str()))
}

/// The type and source of a mountinfo line (the two fields after `-`).
fn type_and_source(line: &str) -> (String, String) {
    let fields: Vec<&str> = line.split(' ').collect();
    let dash = fields.iter().position(|f| *f == "-").expect("separator");
    (fields[dash + 1].to_string(), fields[dash + 2].to_string())
}

/// `mount -t fuse.mailfs LOCATION MP -o ...` returns once the tree is listable, shows type
/// `fuse.mailfs` and the location as source, and `umount` ends the daemon. The same for
/// two fstab lines (`fuse.mailfs`, and `fuse` with a `mailfs#LOCATION` source) mounted by
/// `mount -T FSTAB MP`, with the options mount(8) and systemd add.
#[test]
fn mount_t_fuse_mailfs_and_fstab_lines_mount_list_and_unmount() {
    require!(Dovecot, Fuse, Root);
    let dir = TestDir::new("ops_mount8");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Via mount", "eight"));
    let loc = bob.location();
    let (a, b, c) = (dir.mkdir("a"), dir.mkdir("b"), dir.mkdir("c"));
    let fstab = dir.join("fstab");
    fs::write(
        &fstab,
        format!(
            "{loc} {} fuse.mailfs noauto,x-systemd.automount,_netdev,nofail,allow_other,\
             watch=poll 0 0\nmailfs#{loc} {} fuse noauto,ro,fsname=bobmail 0 0\n",
            b.display(),
            c.display()
        ),
    )
    .unwrap();
    // After each mount: the listing at once (no waiting: mount returned, so the tree is
    // usable), the mountinfo line, then umount and the daemon gone.
    let check = |mp: &Path| {
        format!(
            "ls {mp}/INBOX\ngrep ' {mp} ' /proc/self/mountinfo\numount {mp}\necho umount=$?\n\
             for i in $(seq 100); do pgrep -f -- '^mailfs .* {mp}( |$)' >/dev/null || break; sleep 0.05; done\n\
             if pgrep -f -- '^mailfs .* {mp}( |$)' >/dev/null; then echo daemon-alive; else echo daemon-gone; fi\n",
            mp = mp.display()
        )
    };
    let script = format!(
        "mount -t fuse.mailfs {loc} {a} -o allow_other,watch=poll\n{}\
         mount -T {fstab} {b}\n{}mount -T {fstab} {c}\n{}",
        check(&a),
        check(&b),
        check(&c),
        a = a.display(),
        fstab = fstab.display(),
        b = b.display(),
        c = c.display(),
    );
    let out = in_namespace(&dir, &script);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        show(&out.stderr)
    );
    let name = format!("{uid}.eml");
    assert_eq!(
        stdout.lines().filter(|l| *l == name).count(),
        3,
        "each mount lists INBOX at once:\n{stdout}"
    );
    for (mp, source) in [(&a, loc.as_str()), (&b, loc.as_str()), (&c, "bobmail")] {
        let line = mountinfo_line(&stdout, mp)
            .unwrap_or_else(|| panic!("{} not in mountinfo:\n{stdout}", mp.display()));
        assert_eq!(
            type_and_source(line),
            ("fuse.mailfs".to_string(), source.to_string()),
            "{line}"
        );
        assert!(line.contains(" ro,"), "read-only mount: {line}");
    }
    assert_eq!(stdout.matches("umount=0").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("daemon-gone").count(), 3, "{stdout}");
    assert!(mounts_below(dir.path()).is_empty());
}

/// A start that fails (missing store) makes `mount` exit non-zero with mailfs's message,
/// and leaves nothing mounted or running.
#[test]
fn a_failing_start_makes_mount_fail_with_mailfs_message() {
    require!(Fuse, Root);
    let dir = TestDir::new("ops_mount8_fail");
    let mp = dir.mkdir("mnt");
    let missing = dir.join("no-such-store");
    let out = in_namespace(
        &dir,
        &format!(
            "mount -t fuse.mailfs maildir:{} {}",
            missing.display(),
            mp.display()
        ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mount succeeded: {stderr}");
    assert!(
        stderr.contains("mailfs: ") && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert!(mounts_below(dir.path()).is_empty());
    // An unknown option in the fstab/-o list is a usage error naming it as written.
    let store = dir.mkdir("Maildir");
    fs::create_dir_all(store.join("cur")).unwrap();
    let out = in_namespace(
        &dir,
        &format!(
            "mount -t fuse.mailfs maildir:{} {} -o ro,bogus_opt=1",
            store.display(),
            mp.display()
        ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mount succeeded: {stderr}");
    assert!(
        stderr.contains("unknown mount option \"bogus_opt\" (-o bogus_opt)"),
        "{stderr}"
    );
    assert!(mounts_below(dir.path()).is_empty());
}

/// The mount(8) form run directly: the command returns (its output pipes closed) only
/// once the tree is listable; a SIGTERM to the daemon unmounts.
#[test]
fn the_background_start_returns_when_the_tree_is_usable() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("ops_background");
    let dovecot = Dovecot::start(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Background", "start"));
    let mp = dir.mkdir("mnt");
    let out = Command::new(mailfs_bin())
        .arg(bob.location())
        .arg(&mp)
        .args(["-o", "attr_timeout=2,ro,nodev"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("running mailfs");
    // Listed at once, without polling for the mount to appear.
    let listed = fs::read_dir(mp.join("INBOX")).map(|d| {
        d.map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        show(&out.stderr)
    );
    assert_eq!(listed.unwrap(), [format!("{uid}.eml")]);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo_line(&info, &mp).expect("mounted");
    assert_eq!(
        type_and_source(line),
        ("fuse.mailfs".to_string(), bob.location())
    );
    let pid = Command::new("pgrep")
        .args(["-f", &format!(" {}( |$)", mp.display())])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&pid.stdout)
        .trim()
        .parse()
        .expect("one daemon");
    // SAFETY: kill takes a pid and a signal number only.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    crate::util::wait_for(Duration::from_secs(10), "the unmount", || {
        (!mounts_below(&mp).contains(&mp)).then_some(())
    });
}

/// With NOTIFY_SOCKET, READY=1 arrives only once the mount answers (checked at once, no
/// waiting), and STOPPING=1 at SIGTERM.
#[test]
fn ready_is_notified_only_after_the_mount_answers() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("ops_notify");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "Ready", "now"));
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mp = dir.mkdir("mnt");
    let log = fs::File::create(dir.join("mnt.log")).unwrap();
    let mut child = Command::new(mailfs_bin())
        .arg("mount")
        .arg(bob.location())
        .arg(&mp)
        .env("NOTIFY_SOCKET", &sock_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a notification");
    // Before anything else: the mount must be there and answer.
    let mounted = mounts_below(&mp).contains(&mp);
    let listed = fs::read_dir(mp.join("INBOX")).map(|d| d.count());
    assert_eq!(show(&buf[..n]), "READY=1");
    assert!(mounted, "READY=1 before the mount was in the mount table");
    assert_eq!(listed.expect("listing INBOX"), 1, "uid {uid}");
    // SAFETY: kill takes a pid and a signal number only; the child is not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let n = sock.recv(&mut buf).expect("a notification at the stop");
    assert_eq!(show(&buf[..n]), "STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A mount point with entries is refused, naming one, unless --nonempty (-o nonempty).
#[test]
fn a_non_empty_mount_point_is_refused_unless_nonempty() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("ops_nonempty");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Hidden", "files"));
    let mp = dir.mkdir("mnt");
    fs::write(mp.join("left-over.txt"), b"x").unwrap();
    let failed = mount_must_fail(&bob.location(), &mp, &[]);
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("is not empty") && failed.stderr.contains("left-over.txt"),
        "{}",
        failed.stderr
    );
    assert!(failed.stderr.contains("--nonempty"), "{}", failed.stderr);
    let mount = Mount::start(&bob.location(), &mp, &["-o", "nonempty"]);
    assert!(mount.mailbox("INBOX").is_dir());
    assert!(!mp.join("left-over.txt").exists(), "hidden while mounted");
    mount.stop();
    assert!(mp.join("left-over.txt").exists());
}

/// `uid=`, `gid=`, `umask=` with `allow_other`: a real second user reads exactly what the
/// presented owner and mode allow, where the store's own permissions (the control) let
/// them read nothing; a user who is neither owner nor in the group is refused by mode.
#[test]
fn uid_gid_umask_present_an_owner_and_mode_that_a_second_user_gets() {
    require!(Dovecot, Fuse, Root);
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new("ops_idmap");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let uid = bob.save("INBOX", &email(1, "For the support team", "read me"));
    bob.create_mailbox("Work");
    bob.save("Work", &email(2, "Work", "too"));
    // The store's home: only its owner may enter (as a real home would be).
    crate::util::set_mode(&bob.home(), 0o700);
    let reader = crate::util::users::local_user("mailfs-ops-reader");
    let other = crate::util::users::local_user("mailfs-ops-other");
    let loc = bob.location();

    // Control: the store's permissions, folded, keep the reader out.
    let plain = Mount::start(&loc, &dir.join("plain"), &["--allow-other"]);
    assert!(
        reader.list(&plain.mailbox("INBOX")).is_err(),
        "control: without uid/gid/umask the reader must be refused"
    );
    plain.stop();

    let opts = format!(
        "allow_other,uid={},gid={},umask=027",
        reader.uid, reader.gid
    );
    let mount = Mount::start(&loc, &dir.join("mapped"), &["-o", &opts]);
    for (path, mode) in [
        (mount.path().to_path_buf(), 0o550),
        (mount.mailbox("INBOX"), 0o550),
        (mount.mailbox("Work"), 0o550),
        (mount.message("INBOX", uid), 0o440),
    ] {
        let m = fs::metadata(&path).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (reader.uid, reader.gid, mode),
            "{}",
            path.display()
        );
    }
    assert_eq!(
        reader.list(&mount.mailbox("INBOX")).unwrap(),
        [format!("{uid}.eml")]
    );
    assert_eq!(
        reader.read(&mount.message("INBOX", uid)).unwrap(),
        bob.text("INBOX", uid)
    );
    // 027: nothing for others.
    let refused = other.list(&mount.mailbox("INBOX")).unwrap_err();
    assert!(refused.contains("Permission denied"), "{refused}");
    mount.stop();

    // Group only: the reader is neither the owner (root) nor in the group (other's).
    let opts = format!("allow_other,uid=0,gid={},umask=007", other.gid);
    let mount = Mount::start(&loc, &dir.join("group"), &["-o", &opts]);
    let refused = reader.list(&mount.mailbox("INBOX")).unwrap_err();
    assert!(refused.contains("Permission denied"), "{refused}");
    assert_eq!(
        other.read(&mount.message("INBOX", uid)).unwrap(),
        bob.text("INBOX", uid)
    );
    mount.stop();
}

/// Start-up messages are single-spaced prose: no run of spaces mid-sentence.
#[track_caller]
fn assert_no_space_runs(message: &str) {
    for line in message.lines() {
        // A log line's message is what follows its `[time LEVEL target] ` header (whose
        // level is padded).
        let text = match line.split_once("] ") {
            Some((header, rest)) if header.starts_with('[') => rest,
            _ => line,
        }
        .trim();
        assert!(
            !text.contains("  "),
            "a run of spaces in a message: {line:?}"
        );
    }
}

/// A format prefix that does not match the store on disk is refused at start-up, naming
/// what was found and the location that fits; a matching prefix mounts (control).
#[test]
fn a_format_prefix_that_does_not_match_the_store_is_refused_naming_it() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("ops_format_mismatch");
    let dovecot = Dovecot::start(&dir, Layout::Mdbox);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "In mdbox", "storage"));
    let loc = bob.location();
    let root = loc.strip_prefix("mdbox:").expect("an mdbox location");
    for wrong in [format!("sdbox:{root}"), format!("maildir:{root}")] {
        let failed = mount_must_fail(&wrong, &dir.join("mnt"), &[]);
        assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);
        assert!(
            failed
                .stderr
                .contains("holds an mdbox store (storage/dovecot.map.index")
                && failed.stderr.contains(&format!("use mdbox:{root}")),
            "{wrong}: {}",
            failed.stderr
        );
        assert_no_space_runs(&failed.stderr);
    }
    // The other way round: a Maildir named as mdbox.
    let md_dir = TestDir::new("ops_format_mismatch_md");
    let maildir = Dovecot::start(&md_dir, Layout::MaildirPlusPlus);
    let alice = maildir.user("alice");
    alice.save("INBOX", &email(1, "In Maildir", "cur"));
    let md_root = alice
        .location()
        .strip_prefix("maildir:")
        .unwrap()
        .to_string();
    let failed = mount_must_fail(&format!("mdbox:{md_root}"), &dir.join("mnt"), &[]);
    assert!(
        failed.stderr.contains("holds a maildir store (cur/)"),
        "{}",
        failed.stderr
    );
    // A bare path one level above the store names the store below, not a format guess.
    let above = Path::new(root).parent().unwrap().display().to_string();
    let failed = mount_must_fail(&above, &dir.join("mnt"), &[]);
    assert!(
        failed
            .stderr
            .contains(&format!("holds an mdbox store: use mdbox:{root}")),
        "{}",
        failed.stderr
    );
    assert!(!failed.stderr.contains("maildir:"), "{}", failed.stderr);
    Mount::start(&loc, &dir.join("mnt"), &[]).stop();
}

/// A LAYOUT=fs Maildir mounted without `:LAYOUT=fs` shows only INBOX; the log says why and
/// what to add. With `:LAYOUT=fs` there is no such line (control).
#[test]
fn a_layout_fs_maildir_without_layout_fs_gets_a_hint() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("ops_layout_hint");
    let dovecot = Dovecot::start(&dir, Layout::FsSeparateIndexControl);
    let bob = dovecot.user("bob");
    bob.create_mailbox("Work");
    bob.save("Work", &email(1, "Nested", "folder"));
    let loc = bob.location();
    assert!(loc.contains(":LAYOUT=fs"), "{loc}");
    let good = Mount::start(&loc, &dir.join("good"), &[]);
    assert!(good.mailbox("Work").is_dir());
    let log = good.stop();
    assert!(!log.contains("LAYOUT=fs to the location"), "{log}");
    let without = loc.replace(":LAYOUT=fs", "");
    let mount = Mount::start(&without, &dir.join("plain"), &[]);
    let log = mount.stop();
    assert!(
        log.contains("holds \"Work\", a folder directory of LAYOUT=fs")
            && log.contains("add :LAYOUT=fs to the location"),
        "{log}"
    );
    assert_no_space_runs(&log);
}

/// A wrong-case driver or an unknown scheme is an unknown format (not "No such file"), and
/// the start-up refusals read as single-spaced prose.
#[test]
fn unknown_and_wrong_case_formats_are_unknown_formats() {
    require!(Fuse);
    let dir = TestDir::new("ops_unknown_format");
    let store = dir.mkdir("Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(store.join(sub)).unwrap();
    }
    for (location, word) in [
        (format!("Maildir:{}", store.display()), "Maildir"),
        (format!("MDBOX:{}", store.display()), "MDBOX"),
        ("pop3://user@host".to_string(), "pop3"),
    ] {
        let failed = mount_must_fail(&location, &dir.join("mnt"), &[]);
        assert!(
            failed.stderr.contains(&format!(
                "unknown mail format \"{word}\" (maildir, sdbox, mdbox)"
            )),
            "{location}: {}",
            failed.stderr
        );
        assert!(!failed.stderr.contains("No such file"), "{}", failed.stderr);
        assert_no_space_runs(&failed.stderr);
    }
    let missing = mount_must_fail(
        &dir.join("nothing").display().to_string(),
        &dir.join("mnt"),
        &[],
    );
    assert_no_space_runs(&missing.stderr);
}

/// `scripts/install.sh` (staged with DESTDIR, the binary under test) installs the binary,
/// manual pages that `man -l` renders with the mount options in them, and a bash
/// completion file that `bash -n` loads; `mailfs help --help` is help, not a usage error.
#[test]
fn install_puts_a_rendering_man_page_and_loadable_completions() {
    let dir = TestDir::new("ops_install");
    let stage = dir.join("stage");
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
        .env("DESTDIR", &stage)
        .env("MAILFS_BIN", mailfs_bin())
        .output()
        .expect("running install.sh");
    assert!(out.status.success(), "{}", show(&out.stderr));
    let prefix = stage.join("usr/local");
    assert!(prefix.join("bin/mailfs").is_file());
    for page in ["mailfs.1", "mailfs-mount.1"] {
        let man = Command::new("man")
            .arg("-l")
            .arg(prefix.join("share/man/man1").join(page))
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .output()
            .expect("running man");
        let text = String::from_utf8_lossy(&man.stdout);
        assert!(man.status.success(), "man -l {page}: {}", show(&man.stderr));
        assert!(text.contains("NAME") && text.contains("mailfs"), "{text}");
        if page == "mailfs-mount.1" {
            assert!(
                text.contains("--umask") && text.contains("--nonempty"),
                "{text}"
            );
        }
    }
    let completion = prefix.join("share/bash-completion/completions/mailfs");
    let bash = Command::new("bash")
        .arg("-n")
        .arg(&completion)
        .output()
        .unwrap();
    assert!(bash.status.success(), "{}", show(&bash.stderr));
    // Loaded for real, the completion function exists.
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && declare -F _mailfs",
            completion.display()
        ))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", show(&loaded.stderr));
    let help = Command::new(mailfs_bin())
        .args(["help", "--help"])
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0), "{}", show(&help.stderr));
    assert!(show(&help.stdout).contains("Usage: mailfs"));
}

/// A background start with `-o log_file=FILE` logs there (the start-up and the stop), and
/// its stderr pipe is closed when the command returns.
#[test]
fn a_background_mount_logs_to_its_log_file() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("ops_log_file");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    bob.save("INBOX", &email(1, "Logged", "mount"));
    let mp = dir.mkdir("mnt");
    let log = dir.join("mailfs.log");
    let out = Command::new(mailfs_bin())
        .arg(bob.location())
        .arg(&mp)
        .arg("-o")
        .arg(format!("log_file={}", log.display()))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("running mailfs");
    assert!(out.status.success(), "{}", show(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", show(&out.stderr));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO") && text.contains("mounted "), "{text}");
    let umount = Command::new("umount").arg(&mp).output().unwrap();
    assert!(umount.status.success(), "{}", show(&umount.stderr));
    crate::util::wait_for(Duration::from_secs(10), "the unmounted line", || {
        fs::read_to_string(&log)
            .unwrap()
            .contains("unmounted ")
            .then_some(())
    });
}

/// A PATH directory with links to the tools `scripts/demo.sh` uses, but no fusermount3
/// (fuse3 "not installed") and no apt-get.
fn demo_path(dir: &TestDir) -> std::path::PathBuf {
    let path = dir.mkdir("path");
    for tool in [
        "bash", "sh", "tar", "mktemp", "stat", "seq", "sleep", "cat", "ls", "grep", "rm", "mkdir",
        "id", "dirname", "getfattr", "python3", "touch", "env", "umount",
    ] {
        if let Some(real) = crate::util::which(tool) {
            std::os::unix::fs::symlink(real, path.join(tool)).unwrap();
        }
    }
    path
}

/// `scripts/demo.sh` without fuse3: as root it installs it (apt-get, here a stand-in that
/// records the call and provides the real fusermount3, since the machine's fuse3 cannot be
/// removed) and shows the mount; as another user it says what to install and falls back to
/// `mailfs ls`/`mailfs cat`.
#[test]
fn demo_installs_fuse3_as_root_and_says_what_to_install_otherwise() {
    require!(Fuse, Root);
    let dir = TestDir::new("ops_demo");
    let path = demo_path(&dir);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh");
    let calls = dir.join("apt-calls");
    let fusermount = crate::util::which("fusermount3").expect("fusermount3");
    fs::write(
        path.join("apt-get"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {calls}\ncase \"$*\" in *install*fuse3*) {ln} -s {fm} {dir}/fusermount3;; esac\n",
            ln = crate::util::which("ln").expect("ln").display(),
            calls = calls.display(),
            fm = fusermount.display(),
            dir = path.display()
        ),
    )
    .unwrap();
    crate::util::set_mode(&path.join("apt-get"), 0o755);
    let run = |cmd: &mut Command| {
        cmd.env_clear()
            .env("PATH", &path)
            .env("MAILFS_BIN", mailfs_bin())
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("running demo.sh")
    };
    let out = run(Command::new(path.join("bash")).arg(script));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", show(&out.stderr));
    let apt = fs::read_to_string(&calls).unwrap_or_default();
    assert!(apt.contains("install -y fuse3"), "apt-get calls: {apt:?}");
    assert!(
        stdout.contains("== mailfs mount") && stdout.contains("mailfs exited with status 0"),
        "{stdout}"
    );
    assert!(!stdout.contains("mailfs ls/cat instead"), "{stdout}");

    // Not root, no fusermount3: a message naming the package, and the ls/cat tour.
    fs::remove_file(path.join("fusermount3")).unwrap();
    fs::remove_file(&calls).unwrap();
    let user = crate::util::users::local_user("mailfs-ops-reader");
    crate::util::set_mode(dir.path(), 0o777);
    let out = run(
        Command::new(crate::util::which("setpriv").expect("setpriv"))
            .arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(path.join("bash"))
            .arg(script),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("install fuse3"), "{stderr}");
    assert!(!calls.exists(), "apt-get must not run as a user");
    assert!(
        stdout.contains("mailfs ls/cat instead") && stdout.contains("Archive"),
        "{stdout}"
    );
}

/// `-o rw` alone (what mount(8) passes to every mount) leaves the mount read-only: `rm`
/// gets EROFS and the message stays; `-o rw,user=NAME,doveadm=SOCKET` is write mode: `rm`
/// expunges through Dovecot.
#[test]
fn o_rw_writes_only_with_the_write_mode_options() {
    require!(Dovecot, Fuse);
    let dir = TestDir::new("ops_o_rw");
    let dovecot = Dovecot::start(&dir, Layout::MaildirPlusPlus);
    let bob = dovecot.user("bob");
    let first = bob.save("INBOX", &email(1, "Keep", "me"));
    let second = bob.save("INBOX", &email(2, "Remove", "me"));
    let uids = |bob: &crate::util::dovecot::User<'_>| -> Vec<u32> {
        bob.fetch_flags("INBOX")
            .into_iter()
            .map(|(u, _)| u)
            .collect()
    };

    let plain = Mount::start(&bob.location(), &dir.join("plain"), &["-o", "rw"]);
    let e = fs::remove_file(plain.message("INBOX", first)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    plain.stop();
    assert_eq!(uids(&bob), [first, second]);

    let socket = dovecot.doveadm_socket();
    let opts = format!("rw,user=bob,doveadm={}", socket.display());
    let rw = Mount::start(&bob.location(), &dir.join("rw"), &["-o", &opts]);
    fs::remove_file(rw.message("INBOX", second)).expect("rm in write mode");
    rw.stop();
    assert_eq!(uids(&bob), [first]);
}
