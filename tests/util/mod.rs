//! Test helpers: per-test temporary directories, the requirement check ([`require!`]),
//! polling waits, and modules for the Dovecot oracle, the mount guard, the store
//! fingerprint, the message corpus, a dbox file reader, file-system probes,
//! mount-vs-Dovecot comparisons, index-engine-vs-Dovecot comparisons, a small JSON reader
//! and a seeded RNG.

pub mod compare;
pub mod corpus;
pub mod dbox;
pub mod dovecot;
pub mod fingerprint;
pub mod fsx;
pub mod imap;
pub mod index_oracle;
pub mod json;
pub mod mount;
pub mod pki;
pub mod rng;
pub mod users;

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use std::{env, fs};

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `dovecot` and `doveadm` (the oracle).
    Dovecot,
    /// A usable `/dev/fuse` and `fusermount3`.
    Fuse,
    /// Running as root (tests that switch to another uid). Never a failure: skipped with a
    /// note when absent.
    Root,
}

/// Returns early from a test (after printing `skipped: ...`) when a requirement is missing
/// and `MAILFS_TEST_SKIP_MISSING=1`; panics with what to install otherwise.
///
/// `require!(Dovecot, Fuse);`
macro_rules! require {
    ($($need:ident),* $(,)?) => {
        if !$crate::util::requirements_met(&[$($crate::util::Need::$need),*]) {
            return;
        }
    };
}

/// See [`require!`]. Returns false when the test should be skipped.
pub fn requirements_met(needs: &[Need]) -> bool {
    let mut missing = Vec::new();
    if needs.contains(&Need::Dovecot) {
        for tool in ["dovecot", "doveadm"] {
            if which(tool).is_none() {
                missing.push(format!("`{tool}` not found (apt-get install dovecot-core)"));
            }
        }
    }
    if needs.contains(&Need::Fuse) {
        if which("fusermount3").is_none() {
            missing.push("`fusermount3` not found (apt-get install fuse3)".to_string());
        }
        if let Err(e) = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
        {
            missing.push(format!("/dev/fuse is not usable: {e}"));
        }
    }
    if !missing.is_empty() {
        let what = missing.join("; ");
        if env::var_os("MAILFS_TEST_SKIP_MISSING").is_some_and(|v| v == "1") {
            eprintln!("skipped: {what}");
            return false;
        }
        panic!(
            "test requirements missing: {what}.\n\
             Install them (scripts/test.sh does), or set MAILFS_TEST_SKIP_MISSING=1 to skip."
        );
    }
    if needs.contains(&Need::Root) && !is_root() {
        eprintln!("skipped: this test must run as root (it switches uid)");
        return false;
    }
    true
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (bound and released: the
/// server under test takes it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port")
}

/// True when running with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Finds an executable in `PATH`, then in the sbin directories (which a non-root `PATH`
/// often lacks, and where `dovecot` lives).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Like [`which`], but panics (the requirement check has already run).
pub fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| panic!("`{name}` not found in PATH or sbin"))
}

/// The mailfs binary under test.
pub fn mailfs_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mailfs"))
}

/// Where the tests' temporary directories go: `$MAILFS_TEST_TMPDIR`, else
/// `<system temp>/mailfs-tests` (see [`TestDir`]). Caches kept across runs live there too.
pub fn test_root() -> PathBuf {
    env::var_os("MAILFS_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env::temp_dir().join("mailfs-tests"))
}

/// A per-test temporary directory, `<root>/<name>.<pid>.<n>`.
///
/// The root is `$MAILFS_TEST_TMPDIR`, else `<system temp>/mailfs-tests`; paths are kept short
/// because Dovecot puts unix sockets inside. Removed on drop unless `MAILFS_KEEP_TMP=1`.
/// Anything still mounted below it is lazily unmounted first.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let root = test_root();
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| unmount_stale(&root));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let short: String = name.chars().take(24).collect();
        let path = root.join(format!("{short}.{}.{n}", std::process::id()));
        if path.exists() {
            unmount_below(&path);
            fs::remove_dir_all(&path).unwrap_or_else(|e| panic!("removing stale {path:?}: {e}"));
        }
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {path:?}: {e}"));
        // The mail user (uid 65534) must be able to traverse down to its home.
        for dir in [&root, &path] {
            set_mode(dir, 0o755);
        }
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Creates (mode 0755) and returns `<dir>/<rel>`.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {p:?}: {e}"));
        set_mode(&p, 0o755);
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        unmount_below(&self.path);
        let keep = env::var_os("MAILFS_KEEP_TMP").is_some_and(|v| v == "1");
        if keep {
            eprintln!("kept test directory {}", self.path.display());
        } else {
            if std::thread::panicking() {
                eprintln!(
                    "removing test directory {} (set MAILFS_KEEP_TMP=1 to keep it)",
                    self.path.display()
                );
            }
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo).
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(unescape_mountinfo(escaped)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

fn unescape_mountinfo(s: &str) -> String {
    // Mount paths escape space, tab, newline and backslash as \ooo.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (bytes[i], octal) {
            let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts what earlier, killed test runs left mounted below `root` (their directories are
/// named `<test>.<pid>.<n>`; the pid is gone). Their files stay for inspection.
fn unmount_stale(root: &Path) {
    for mp in mounts_below(root) {
        let Some(Component::Normal(first)) = mp
            .strip_prefix(root)
            .ok()
            .and_then(|r| r.components().next())
        else {
            continue;
        };
        let pid = first
            .to_string_lossy()
            .rsplit('.')
            .nth(1)
            .map(str::to_string);
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            unmount_below(&mp);
        }
    }
}

fn unmount_below(dir: &Path) {
    for mp in mounts_below(dir) {
        eprintln!("cleaning up a leftover mount at {}", mp.display());
        let _ = std::process::Command::new("fusermount3")
            .arg("-uz")
            .arg(&mp)
            .status();
        if mounts_below(&mp).contains(&mp) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&mp)
                .status();
        }
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {p:?}: {e}"));
}

/// chown -R to uid/gid.
pub fn chown_recursive(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {p:?}: {e}"));
    if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
        for entry in fs::read_dir(p).unwrap_or_else(|e| panic!("reading {p:?}: {e}")) {
            chown_recursive(&entry.expect("dir entry").path(), uid, gid);
        }
    }
}

/// Polls `f` every few milliseconds until it returns `Some`, or panics with `what` after
/// `timeout`. Use this instead of sleeping.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Shows bytes for an assertion message: UTF-8 lossily, truncated.
pub fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > 600 {
        let cut = (0..=600)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}... ({} bytes)", &s[..cut], bytes.len())
    } else {
        s.into_owned()
    }
}

/// `a == b` for byte strings, with a readable message and the first differing offset.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let at = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{what}: bytes differ at offset {at} (actual {} bytes, expected {} bytes)\n\
             --- actual ---\n{}\n--- expected ---\n{}",
            actual.len(),
            expected.len(),
            show(actual),
            show(expected)
        );
    }
}

/// Name of an OS string for messages.
pub fn name_of(p: &Path) -> String {
    p.file_name()
        .unwrap_or(OsStr::new(""))
        .to_string_lossy()
        .into_owned()
}
