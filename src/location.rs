//! Dovecot `mail_location` strings: `<driver>:<root>[:<KEY>[=<value>]]...`.
//!
//! Follows `mailbox_list_settings_parse_full()` and `split_next_arg()` in Dovecot's
//! `src/lib-storage/mailbox-list.c` (2.3.19.1): fields are split on ':', an empty field (`::`)
//! is a literal ':' belonging to the previous field, one trailing ':' is ignored, every path
//! value gets `fix_path()` (one trailing '/' removed, `~/` and `~user/` expanded). A bare path
//! (no driver) is auto-detected from what is on disk.
//!
//! Only parsing and home-directory lookup happen here; whether the store really has the
//! claimed format is checked by the store backend when it opens the root.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A storage format mailfs can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One file per message in `cur/`, `new/` (and `tmp/`).
    Maildir,
}

/// How mailbox names map to directories (`LAYOUT=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Maildir++: `ROOT/.Work.Sub`, INBOX is the root. Maildir's default.
    MaildirPlusPlus,
    /// `LAYOUT=fs`: `ROOT/Work/Sub`, INBOX is the root.
    Fs,
}

/// A parsed, validated location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The string as the user gave it (for messages).
    pub original: String,
    /// The storage format.
    pub format: Format,
    /// Mail root (`<root>`), with `~` expanded.
    pub root: PathBuf,
    /// `LAYOUT=`.
    pub layout: Layout,
    /// `INBOX=`: INBOX's mail directory, when not the root.
    pub inbox: Option<PathBuf>,
    /// `INDEX=` root (`None` = beside the mail; `INDEX=MEMORY` is also `None` plus
    /// `index_in_memory`).
    pub index: Option<PathBuf>,
    /// True for `INDEX=MEMORY`: Dovecot keeps no index files.
    pub index_in_memory: bool,
    /// `CONTROL=` root (`None` = beside the mail).
    pub control: Option<PathBuf>,
    /// `UTF-8`: names on disk are UTF-8, not modified UTF-7.
    pub utf8_names: bool,
}

/// Keys Dovecot 2.3 accepts that this version of mailfs cannot honour yet. Refusing them is
/// safer than silently reading the wrong directories.
const DOVECOT_KEYS_NOT_YET_SUPPORTED: &[&str] = &[
    "INDEXPVT",
    "INDEXCACHE",
    "ALT",
    "ALTNOCHECK",
    "SUBSCRIPTIONS",
    "DIRNAME",
    "FULLDIRNAME",
    "MAILBOXDIR",
    "VOLATILEDIR",
    "LISTINDEX",
    "ITERINDEX",
    "BROKENCHAR",
    "NO-NOSELECT",
    "NO-FS-VALIDATION",
];

impl Location {
    /// Parses a location string; a string without a known `<driver>:` prefix is a bare path
    /// whose format is detected on disk.
    pub fn parse(location: &str) -> Result<Location> {
        let err = |what: String| Error::Location {
            location: location.to_string(),
            what,
        };
        if location.contains('%') {
            return Err(err(
                "'%' variables (multi-user templates) are not supported yet; give one user's path"
                    .into(),
            ));
        }
        let (driver, rest) = match location.split_once(':') {
            Some((d, rest)) if is_driver(d) => (Some(d), rest),
            _ => (None, location),
        };
        let fields = split_fields(rest);
        let Some((root, keys)) = fields.split_first() else {
            return Err(err("no mail root directory given".into()));
        };
        if root.is_empty() || root.starts_with("INBOX=") {
            return Err(err("no mail root directory given".into()));
        }
        let root = fix_path(root).map_err(&err)?;
        let format = match driver {
            Some("maildir") => Format::Maildir,
            Some(other @ ("sdbox" | "dbox" | "mdbox")) => {
                return Err(err(format!(
                    "the {other} format is not supported yet (only maildir)"
                )));
            }
            Some(other) => return Err(err(format!("the {other} driver is not supported"))),
            None => detect_format(&root).map_err(&err)?,
        };
        let mut loc = Location {
            original: location.to_string(),
            format,
            root,
            layout: Layout::MaildirPlusPlus,
            inbox: None,
            index: None,
            index_in_memory: false,
            control: None,
            utf8_names: false,
        };
        for field in keys {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (field.as_str(), None),
            };
            let need_value = || -> Result<&str> {
                match value {
                    Some(v) if !v.is_empty() => Ok(v),
                    _ => Err(err(format!("key {key} needs a value ({key}=...)"))),
                }
            };
            match key {
                "LAYOUT" => {
                    loc.layout = match need_value()? {
                        "maildir++" => Layout::MaildirPlusPlus,
                        "fs" => Layout::Fs,
                        other => {
                            return Err(err(format!(
                                "LAYOUT={other} is not supported (maildir++ or fs)"
                            )));
                        }
                    }
                }
                "INBOX" => loc.inbox = Some(fix_path(need_value()?).map_err(&err)?),
                "INDEX" => match need_value()? {
                    "MEMORY" => loc.index_in_memory = true,
                    v => loc.index = Some(fix_path(v).map_err(&err)?),
                },
                "CONTROL" => loc.control = Some(fix_path(need_value()?).map_err(&err)?),
                "UTF-8" if value.is_none() => loc.utf8_names = true,
                k if DOVECOT_KEYS_NOT_YET_SUPPORTED.contains(&k) => {
                    return Err(err(format!("key {k} is not supported yet by mailfs")));
                }
                k => return Err(err(format!("unknown key {k:?}"))),
            }
        }
        Ok(loc)
    }
}

fn is_driver(s: &str) -> bool {
    matches!(
        s,
        "maildir" | "sdbox" | "dbox" | "mdbox" | "mbox" | "imapc" | "pop3c" | "none"
    )
}

/// Splits on ':'; an empty field between two separators is a literal ':' appended to the
/// previous field (Dovecot's `split_next_arg`); one trailing ':' is ignored.
fn split_fields(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let parts: Vec<&str> = s.split(':').collect();
    let mut i = 0;
    while i < parts.len() {
        let part = parts[i];
        if part.is_empty() && i > 0 && i + 1 < parts.len() {
            // "a::b" -> "a:b": the empty field stands for the ':' and joins its neighbours.
            if let Some(last) = out.last_mut() {
                last.push(':');
                last.push_str(parts[i + 1]);
                i += 2;
                continue;
            }
        }
        if part.is_empty() && i + 1 == parts.len() && i > 0 {
            break; // one trailing ':'
        }
        out.push(part.to_string());
        i += 1;
    }
    out
}

/// Dovecot's `fix_path()`: expands `~/` and `~user/`, drops one trailing '/'.
fn fix_path(p: &str) -> std::result::Result<PathBuf, String> {
    let expanded = if p == "~" || p.starts_with("~/") {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "'~' used but $HOME is not set".to_string())?;
        let mut s = PathBuf::from(home).into_os_string();
        s.push(&p[1..]);
        PathBuf::from(s)
    } else if let Some(rest) = p.strip_prefix('~') {
        let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let home = user_home(user).ok_or_else(|| format!("unknown user {user:?} in {p:?}"))?;
        home.join(tail)
    } else {
        PathBuf::from(p)
    };
    let s = expanded.to_string_lossy();
    if s.len() > 1 && s.ends_with('/') {
        return Ok(PathBuf::from(&s[..s.len() - 1]));
    }
    Ok(expanded)
}

/// Home directory of a system user, from the passwd database.
fn user_home(user: &str) -> Option<PathBuf> {
    let name = CString::new(user).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero bytes are a valid `passwd` (integers and null pointers).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pwd` below, and
    // getpwnam_r writes at most `buf.len()` bytes into it.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
        return None;
    }
    // SAFETY: on success pw_dir points to a NUL-terminated string inside `buf`.
    let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
    Some(PathBuf::from(dir.to_string_lossy().into_owned()))
}

/// Guesses the format of a bare path from what is on disk.
fn detect_format(root: &Path) -> std::result::Result<Format, String> {
    let meta = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", root.display()));
    }
    if root.join("storage").is_dir() || root.join("mailboxes").is_dir() {
        return Err(format!(
            "{} looks like a dbox store (sdbox/mdbox), which is not supported yet",
            root.display()
        ));
    }
    let maildir_markers = ["cur", "new", "dovecot-uidlist", "maildirfolder"];
    if maildir_markers.iter().any(|m| root.join(m).exists()) {
        return Ok(Format::Maildir);
    }
    let has_dot_folder = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .flatten()
        .any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with('.') && name.len() > 1 && e.path().join("cur").is_dir()
        });
    if has_dot_folder {
        return Ok(Format::Maildir);
    }
    Err(format!(
        "cannot tell the format of {}: no cur/, new/, dovecot-uidlist or Maildir++ folder; \
         give it explicitly, e.g. maildir:{}",
        root.display(),
        root.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fields_like_dovecot() {
        assert_eq!(split_fields("/a:LAYOUT=fs"), ["/a", "LAYOUT=fs"]);
        assert_eq!(split_fields("/a::b:INDEX=/i"), ["/a:b", "INDEX=/i"]);
        assert_eq!(split_fields("/a:"), ["/a"]);
        assert_eq!(split_fields("/a"), ["/a"]);
    }

    #[test]
    fn parses_maildir_keys() {
        let l = Location::parse("maildir:/m/:LAYOUT=fs:INDEX=/i:CONTROL=/c/:INBOX=/in").unwrap();
        assert_eq!(l.format, Format::Maildir);
        assert_eq!(l.root, PathBuf::from("/m"));
        assert_eq!(l.layout, Layout::Fs);
        assert_eq!(l.index, Some(PathBuf::from("/i")));
        assert_eq!(l.control, Some(PathBuf::from("/c")));
        assert_eq!(l.inbox, Some(PathBuf::from("/in")));
        let m = Location::parse("maildir:/m:INDEX=MEMORY:UTF-8").unwrap();
        assert!(m.index_in_memory && m.utf8_names && m.index.is_none());
    }

    #[test]
    fn rejects_unknown_and_unsupported_keys_by_name() {
        let e = Location::parse("maildir:/m:BOGUS=1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("BOGUS"), "{e}");
        let e = Location::parse("maildir:/m:ALT=/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ALT"), "{e}");
        let e = Location::parse("maildir:/m:LAYOUT=index")
            .unwrap_err()
            .to_string();
        assert!(e.contains("LAYOUT=index"), "{e}");
        assert!(Location::parse("maildir:").is_err());
        assert!(Location::parse("maildir:INBOX=/x").is_err());
        assert!(Location::parse("mdbox:/x").is_err());
        assert!(Location::parse("maildir:/home/%u").is_err());
    }

    #[test]
    fn expands_home() {
        // SAFETY (test only): single-threaded use of the environment in this test body.
        let home = std::env::var("HOME").unwrap_or_default();
        if home.is_empty() {
            return;
        }
        let l = Location::parse("maildir:~/Maildir").unwrap();
        assert_eq!(l.root, PathBuf::from(&home).join("Maildir"));
        let r = Location::parse("maildir:~root/Maildir").unwrap();
        assert!(r.root.ends_with("Maildir") && r.root.is_absolute());
    }

    #[test]
    fn bare_path_detection_refuses_what_it_cannot_tell() {
        let dir = std::env::temp_dir().join(format!("mailfs-loc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = Location::parse(dir.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot tell"), "{e}");
        std::fs::create_dir_all(dir.join("cur")).unwrap();
        assert_eq!(
            Location::parse(dir.to_str().unwrap()).unwrap().format,
            Format::Maildir
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Location::parse(dir.to_str().unwrap()).is_err());
    }
}
