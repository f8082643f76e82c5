//! Real local users for tests that check what another user may read: created with
//! `useradd` when missing (idempotent; the test must run as root), and commands run as
//! them through `setpriv` with their own groups only.

use std::ffi::OsStr;
use std::process::{Command, Output};

use super::tool;

/// A local system user.
#[derive(Debug, Clone)]
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The local user `name`, created (`useradd --system --user-group`, no home, no login
/// shell) if it does not exist yet.
pub fn local_user(name: &str) -> LocalUser {
    // Tests run in parallel: one useradd at a time (it locks /etc/passwd and fails when
    // it cannot).
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    if id(name, "-u").is_none() {
        let out = Command::new(tool("useradd"))
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .expect("running useradd");
        // A concurrent test may have created it meanwhile (exit 9: already exists).
        assert!(
            out.status.success() || id(name, "-u").is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    LocalUser {
        name: name.to_string(),
        uid: id(name, "-u").expect("the user exists"),
        gid: id(name, "-g").expect("the user exists"),
    }
}

fn id(name: &str, what: &str) -> Option<u32> {
    let out = Command::new("id").args([what, name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

impl LocalUser {
    /// Runs `program args...` as this user (its uid, its gid, its own groups only).
    pub fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Output {
        Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} as {}: {e}", self.name))
    }

    /// `cat path` as this user: the bytes, or stderr as the error.
    pub fn read(&self, path: &std::path::Path) -> Result<Vec<u8>, String> {
        let out = self.run("cat", &[path]);
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `ls -A path` as this user: the names, or stderr as the error.
    pub fn list(&self, path: &std::path::Path) -> Result<Vec<String>, String> {
        let out = self.run("ls", &[OsStr::new("-A"), path.as_os_str()]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}
