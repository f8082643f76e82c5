//! The mount(8) form of the command line: `mailfs LOCATION MOUNTPOINT [-o OPT[,OPT...]] [-f]`,
//! as `mount.fuse3` runs it for `mount -t fuse.mailfs` and `/etc/fstab` lines, rewritten
//! into the `mailfs mount` form before clap sees it, so both forms share one definition of
//! every option.
//!
//! Invariants:
//! - every `-o NAME=VALUE` becomes `--NAME VALUE` (`_` as `-`) and every other `-o NAME`
//!   `--NAME`, except the generic mount options of [`IGNORED`], which mount(8) and
//!   mount.fuse3 pass to every helper and which mean nothing to mailfs (the mount is always
//!   `nodev,nosuid,noexec`), and `ro`/`rw` (see [`expand`]);
//! - an unknown option therefore reaches clap as an unknown `--NAME`: a usage error, never
//!   silently dropped;
//! - the mount(8) form goes to the background once the mount answers (`--background`)
//!   unless `-f` is given; the `mailfs mount` form stays in the foreground unless asked.

use std::ffi::{OsStr, OsString};

/// The subcommands (and clap's own words) that mean the command line is not the mount(8)
/// form. A LOCATION with one of these names is written `./NAME`.
const SUBCOMMANDS: &[&str] = &["mount", "ls", "dump", "cat", "help", "man", "completions"];

/// Generic mount options that mount(8) or mount.fuse3 pass to helpers and that mailfs
/// accepts without effect (`x-*` and `comment=*` too).
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "async",
    "sync",
    "dirsync",
    "loud",
    "silent",
    // Always in force: the kernel checks permissions against the presented modes.
    "default_permissions",
];

/// The write-mode options: `-o rw` turns on `--rw` only together with one of them (see
/// [`expand`]).
const WRITE_OPTIONS: &[&str] = &["user", "doveadm", "doveadm_secret_file"];

/// Rewrites a command line (program name first) into the `mailfs mount` form if it is in
/// the mount(8) form, and expands `-o` lists after `mailfs mount` too; anything else is
/// returned unchanged.
///
/// `ro` is the default. mount(8) passes `rw` to every mount that does not say `ro`, so
/// `rw` alone cannot mean "write": it turns on `--rw` only together with an option write
/// mode needs (`user=NAME`, `doveadm=ENDPOINT` or `doveadm_secret_file=FILE`), and is
/// otherwise ignored (the mount stays read-only).
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut it = args.into_iter();
    let Some(program) = it.next() else {
        return Ok(Vec::new());
    };
    let rest: Vec<OsString> = it.collect();
    let first = rest.first().map(|a| a.to_string_lossy().into_owned());
    let mut out = vec![program];
    match first.as_deref() {
        // `mailfs help --help` (and `-h`): the help of help is the help.
        Some("help") => out.extend(rest.into_iter().filter(|a| a != "--help" && a != "-h")),
        Some("mount") => {
            out.push(rest[0].clone());
            out.extend(expand_options(&rest[1..], false)?.0);
        }
        Some(f) if !f.starts_with('-') && !SUBCOMMANDS.contains(&f) && rest.len() >= 2 => {
            out.push("mount".into());
            let (expanded, foreground) = expand_options(&rest[2..], true)?;
            if !foreground {
                out.push("--background".into());
            }
            out.push(source_location(&rest[0]));
            out.push(rest[1].clone());
            out.extend(expanded);
        }
        _ => out.extend(rest),
    }
    Ok(out)
}

/// The name of the unknown option clap refused in `error`, as the `-o` lists of `given`
/// (the original command line) wrote it; None when it did not come from one.
pub fn unknown_o_option(error: &clap::Error, given: &[OsString]) -> Option<String> {
    if error.kind() != clap::error::ErrorKind::UnknownArgument {
        return None;
    }
    let refused = match error.get(clap::error::ContextKind::InvalidArg)? {
        clap::error::ContextValue::String(s) => s.trim_start_matches("--").to_string(),
        _ => return None,
    };
    let mut lists = Vec::new();
    let mut args = given.iter().map(|a| a.to_string_lossy());
    while let Some(a) = args.next() {
        if a == "-o" {
            lists.extend(args.next().map(|l| l.into_owned()));
        } else if let Some(l) = a.strip_prefix("-o") {
            lists.push(l.to_string());
        }
    }
    lists
        .iter()
        .flat_map(|l| split_list(l))
        .map(|opt| {
            opt.split_once('=')
                .map_or(opt.clone(), |(n, _)| n.to_string())
        })
        .find(|name| name.replace('_', "-") == refused)
}

/// The LOCATION of a mount source: `mailfs#LOCATION` (the source form of `-t fuse`
/// fstab lines) without its prefix.
fn source_location(source: &OsStr) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    let bytes = source.as_bytes();
    OsStr::from_bytes(bytes.strip_prefix(b"mailfs#").unwrap_or(bytes)).to_os_string()
}

/// Expands the `-o` lists of `args`; with `mount_form`, `-f` (foreground) is taken out and
/// reported. Other arguments pass through unchanged.
fn expand_options(args: &[OsString], mount_form: bool) -> Result<(Vec<OsString>, bool), String> {
    let mut out = Vec::new();
    let mut foreground = false;
    let mut opts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "-o" {
            let list = args
                .get(i + 1)
                .ok_or("-o needs a list of options (-o opt[,opt...])")?;
            opts.extend(split_list(&list.to_string_lossy()));
            i += 2;
            continue;
        }
        if let Some(list) = a.strip_prefix("-o") {
            opts.extend(split_list(list));
        } else if mount_form && a == "-f" {
            foreground = true;
        } else {
            out.push(args[i].clone());
        }
        i += 1;
    }
    let mut rw = false;
    let mut write_option = false;
    for opt in opts {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (opt.clone(), None),
        };
        match (name.as_str(), &value) {
            ("", _) => continue,
            ("ro", None) => {
                rw = false;
                continue;
            }
            ("rw", None) => {
                rw = true;
                continue;
            }
            (n, None) if IGNORED.contains(&n) => continue,
            (n, _) if n.starts_with("x-") || n == "comment" => continue,
            _ => {}
        }
        if value.is_some() && WRITE_OPTIONS.contains(&name.as_str()) {
            write_option = true;
        }
        out.push(format!("--{}", name.replace('_', "-")).into());
        if let Some(v) = value {
            out.push(v.into());
        }
    }
    if rw && write_option {
        out.push("--rw".into());
    }
    Ok((out, foreground))
}

/// Splits an option list at commas not escaped by a backslash (`\,` is a comma inside a
/// value, as libfuse writes it).
fn split_list(list: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => out.last_mut().expect("non-empty").push(next),
                None => out.last_mut().expect("non-empty").push('\\'),
            },
            ',' => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        expand(args.iter().map(OsString::from).collect())
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_mount_helper_form_becomes_a_background_mount() {
        // What mount.fuse3 ran for `mount -t fuse.mailfs ... -o ro,allow_other,...`
        // (recorded with a stand-in helper).
        assert_eq!(
            run(&[
                "mailfs",
                "maildir:/srv/x",
                "/mnt/x",
                "-o",
                "ro,allow_other,uid=5,watch=poll,exec,suid,dev,x-systemd.automount,_netdev,\
                 poll_interval=0.5,nonempty,fsname=a\\,b"
            ]),
            [
                "mailfs",
                "mount",
                "--background",
                "maildir:/srv/x",
                "/mnt/x",
                "--allow-other",
                "--uid",
                "5",
                "--watch",
                "poll",
                "--poll-interval",
                "0.5",
                "--nonempty",
                "--fsname",
                "a,b"
            ]
        );
    }

    #[test]
    fn foreground_source_prefix_and_plain_rw() {
        assert_eq!(
            run(&["mailfs", "mailfs#/srv/x", "/m", "-f", "-orw,dev,suid", "-v"]),
            ["mailfs", "mount", "/srv/x", "/m", "-v"]
        );
    }

    #[test]
    fn rw_turns_on_write_mode_only_with_a_write_option() {
        let a = run(&["mailfs", "/s", "/m", "-o", "rw,user=alice"]);
        assert_eq!(a[5..], ["--user", "alice", "--rw"]);
        let b = run(&["mailfs", "/s", "/m", "-o", "rw,user=alice,ro"]);
        assert_eq!(b[5..], ["--user", "alice"]);
        // `user` without a value is mount(8)'s own option.
        let c = run(&["mailfs", "/s", "/m", "-o", "rw,user"]);
        assert_eq!(c.len(), 5, "{c:?}");
    }

    #[test]
    fn other_forms_pass_through_and_mount_expands_o() {
        assert_eq!(
            run(&["mailfs", "ls", "/s", "INBOX"]),
            ["mailfs", "ls", "/s", "INBOX"]
        );
        assert_eq!(
            run(&["mailfs", "-v", "ls", "/s"]),
            ["mailfs", "-v", "ls", "/s"]
        );
        assert_eq!(run(&["mailfs", "/only-one"]), ["mailfs", "/only-one"]);
        assert_eq!(
            run(&[
                "mailfs",
                "mount",
                "/s",
                "/m",
                "-o",
                "attr_timeout=3,default_permissions"
            ]),
            ["mailfs", "mount", "/s", "/m", "--attr-timeout", "3"]
        );
        assert!(expand(vec!["mailfs".into(), "/s".into(), "/m".into(), "-o".into()]).is_err());
    }

    #[test]
    fn an_unknown_option_is_named_as_given() {
        let given: Vec<OsString> = ["mailfs", "/s", "/m", "-o", "ro,bogus_opt=1"]
            .iter()
            .map(OsString::from)
            .collect();
        let args = expand(given.clone()).unwrap();
        let cmd = clap::Command::new("mailfs").subcommand(
            clap::Command::new("mount")
                .arg(clap::Arg::new("background").long("background").num_args(0))
                .arg(clap::Arg::new("l"))
                .arg(clap::Arg::new("m")),
        );
        let e = cmd.try_get_matches_from(args).unwrap_err();
        assert_eq!(unknown_o_option(&e, &given).as_deref(), Some("bogus_opt"));
    }

    #[test]
    fn an_unknown_option_is_kept_for_clap_to_refuse() {
        assert_eq!(
            run(&["mailfs", "/s", "/m", "-o", "bogus_opt=1"])[5..],
            ["--bogus-opt", "1"]
        );
    }
}
