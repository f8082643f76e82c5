//! Dovecot `mail_location` strings: `<driver>:<root>[:<KEY>[=<value>]]...`.
//!
//! Follows `mailbox_list_settings_parse_full()` and `split_next_arg()` in Dovecot's
//! `src/lib-storage/mailbox-list.c` (2.3.19.1): fields are split on ':', an empty field (`::`)
//! is a literal ':' belonging to the previous field, one trailing ':' is ignored, every path
//! value gets `fix_path()` (one trailing '/' removed, `~/` and `~user/` expanded). A bare path
//! (no driver) is auto-detected from what is on disk.
//!
//! Besides parsing and home-directory lookup, an explicit driver is compared with what is
//! on disk where the root exists ([`check_format_on_disk`]: only unambiguous evidence of
//! another format refuses it), and a Maildir++ location whose root holds LAYOUT=fs folder
//! directories gets a hint in the log; the store backend checks the rest when it opens the
//! root.

pub mod imap;
pub(crate) mod md5;
pub mod template;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
pub use template::Template;

/// What a LOCATION argument names: one user's store, or a tree of users.
#[derive(Debug, Clone)]
pub enum Spec {
    /// One store.
    Single(Box<Location>),
    /// A multi-user template (`%u`, `%n`, `%d`, ...): one store per user found on disk.
    Users(Template),
}

impl Spec {
    /// Parses a LOCATION: a template if it has variables, else a single location (`%%`
    /// standing for '%').
    pub fn parse(location: &str) -> Result<Spec> {
        check_driver(location)?;
        match Template::parse(location)? {
            Some(t) => Ok(Spec::Users(t)),
            None => Ok(Spec::Single(Box::new(Location::parse(
                &location.replace("%%", "%"),
            )?))),
        }
    }

    /// The directories the store is read from, as given (not resolved): a single store's
    /// [`Location::dirs`], or for a template the directories above its variables
    /// ([`Template::anchors`]). Everything mailfs reads lies below one of them.
    pub fn roots(&self) -> Vec<PathBuf> {
        match self {
            Spec::Single(loc) => loc.dirs(),
            Spec::Users(t) => t.anchors(),
        }
    }
}

/// A storage format mailfs can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One file per message in `cur/`, `new/` (and `tmp/`).
    Maildir,
    /// Single-dbox: one `u.<uid>` file per message, flags in the index.
    Sdbox,
    /// Multi-dbox: messages packed in `storage/m.<n>`, located through the map index.
    Mdbox,
    /// mbox: one file per mailbox (read-only), index files in `.imap/` directories.
    Mbox,
}

impl Format {
    /// Dovecot's driver name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Maildir => "maildir",
            Format::Sdbox => "sdbox",
            Format::Mdbox => "mdbox",
            Format::Mbox => "mbox",
        }
    }

    /// True for sdbox and mdbox.
    pub fn is_dbox(self) -> bool {
        matches!(self, Format::Sdbox | Format::Mdbox)
    }
}

/// How mailbox names map to directories (`LAYOUT=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Maildir++: `ROOT/.Work.Sub`, INBOX is the root. Maildir's default.
    MaildirPlusPlus,
    /// `LAYOUT=fs`: `ROOT/Work/Sub` (Maildir: INBOX is the root). dbox's default.
    Fs,
    /// `LAYOUT=index`: names only in the mailbox list index (`dovecot.list.index`), each
    /// mailbox's directory named by its GUID (`ROOT/<MAILBOXDIR/><guid>`; Dovecot's
    /// `index_list_get_path`).
    Index,
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
    /// `ALT=`: dbox alternative storage root.
    pub alt: Option<PathBuf>,
    /// False with `ALTNOCHECK` (a reader never fixes the `dbox-alt-root` link anyway).
    pub alt_check: bool,
    /// `DIRNAME=` / `FULLDIRNAME=`: directory holding the mail inside each mailbox dir
    /// (dbox default `dbox-Mails`).
    pub dirname: Option<String>,
    /// True for `FULLDIRNAME=`: index and control paths include the dirname too.
    pub full_dirname: bool,
    /// `MAILBOXDIR=`: directory under the root holding all mailboxes (dbox default
    /// `mailboxes`).
    pub mailboxdir: Option<String>,
    /// `VOLATILEDIR=`: Dovecot's lock directory (holds no data; accepted, unused).
    pub volatile_dir: Option<PathBuf>,
    /// `LISTINDEX=`: mailbox list index file (a cache of the tree; with `LAYOUT=index` the
    /// only place names live, see [`Location::list_index_file`]).
    pub list_index: Option<String>,
    /// `ITERINDEX`: list mailboxes by walking the index tree instead of the mail tree.
    pub iter_index: bool,
    /// `INDEXPVT=`: private (per-user) index root for shared mailboxes.
    pub index_pvt: Option<PathBuf>,
    /// `INDEXCACHE=`: separate root for `dovecot.index.cache`.
    pub index_cache: Option<PathBuf>,
    /// `SUBSCRIPTIONS=`: subscriptions file name (accepted, unused).
    pub subscriptions: Option<String>,
    /// `BROKENCHAR=`: escape character for names that are not valid mUTF-7.
    pub broken_char: Option<char>,
    /// `NO-NOSELECT`: hierarchy levels without a mailbox are not shown.
    pub no_noselect: bool,
    /// `NO-FS-VALIDATION` (accepted; a reader validates nothing it writes).
    pub no_fs_validation: bool,
}

impl Location {
    /// Every directory this location reads from: the root and the `INBOX=`, `INDEX=`,
    /// `CONTROL=`, `ALT=`, `INDEXPVT=` and `INDEXCACHE=` roots that are set, without
    /// repeats, in that order.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        let keys = [
            &self.inbox,
            &self.index,
            &self.control,
            &self.alt,
            &self.index_pvt,
            &self.index_cache,
        ];
        for dir in std::iter::once(&self.root).chain(keys.into_iter().flatten()) {
            if !out.contains(dir) {
                out.push(dir.clone());
            }
        }
        out
    }

    /// Resolves the symbolic links an admin may have put on the way to the store, so that
    /// the paths built below the roots never legitimately contain one (the store layer
    /// refuses links inside a store). Each directory of [`Location::dirs`] is resolved up
    /// to the longest of `anchors` it lies below, and the rest kept as it is (in a
    /// multi-user tree, what lies below an anchor belongs to the user and is not trusted);
    /// a directory below no anchor is resolved whole. What does not exist yet is resolved
    /// as far as it exists.
    pub fn resolve_links(&mut self, anchors: &[PathBuf]) {
        let resolve = |dir: &mut PathBuf| {
            let anchor = anchors
                .iter()
                .filter(|a| dir.starts_with(a))
                .max_by_key(|a| a.as_os_str().len());
            *dir = match anchor {
                Some(a) => {
                    let rest = dir.strip_prefix(a).unwrap_or(Path::new("")).to_path_buf();
                    let base = resolve_existing(a);
                    if rest.as_os_str().is_empty() {
                        base
                    } else {
                        base.join(rest)
                    }
                }
                None => resolve_existing(dir),
            };
        };
        resolve(&mut self.root);
        for dir in [
            &mut self.inbox,
            &mut self.index,
            &mut self.control,
            &mut self.alt,
            &mut self.index_pvt,
            &mut self.index_cache,
        ]
        .into_iter()
        .flatten()
        {
            resolve(dir);
        }
    }

    /// The mailbox directory under the root (`MAILBOXDIR`, dbox default `mailboxes`).
    pub fn mailbox_root(&self) -> PathBuf {
        match (&self.mailboxdir, self.format.is_dbox()) {
            (Some(d), _) if !d.is_empty() => self.root.join(d),
            (None, true) => self.root.join("mailboxes"),
            _ => self.root.clone(),
        }
    }

    /// `LAYOUT=index`: the directory and file name of the mailbox list index. Dovecot's
    /// `MAILBOX_LIST_PATH_TYPE_LIST_INDEX`: `LISTINDEX=` (default `dovecot.list.index`) in
    /// the index root (`INDEX=`, else the mail root); a `LISTINDEX=` with a '/' names its
    /// directory too, relative to the index root unless absolute
    /// (`mailbox_list_settings_parse_full`, `mailbox_list_set_get_root_path`).
    pub fn list_index_file(&self) -> (PathBuf, String) {
        let index_root = self.index.as_ref().unwrap_or(&self.root);
        let given = self.list_index.as_deref().unwrap_or("dovecot.list.index");
        match given.rsplit_once('/') {
            Some((dir, file)) if dir.starts_with('/') => (PathBuf::from(dir), file.to_string()),
            Some((dir, file)) => (index_root.join(dir), file.to_string()),
            None => (index_root.clone(), given.to_string()),
        }
    }

    /// `LAYOUT=index`: a mailbox's directory below `root` (the mail, `INDEX=`, `CONTROL=`,
    /// `ALT=` or `INDEXPVT=` root): `<root>/<MAILBOXDIR/><guid>` (`index_get_guid_path`;
    /// the mailbox directory name is `mailboxes/` for dbox and empty for Maildir).
    pub fn guid_dir(&self, root: &Path, guid: &str) -> PathBuf {
        match (&self.mailboxdir, self.format.is_dbox()) {
            (Some(d), _) if !d.is_empty() => root.join(d).join(guid),
            (None, true) => root.join("mailboxes").join(guid),
            _ => root.join(guid),
        }
    }

    /// The mail directory name inside each mailbox dir (`DIRNAME`, dbox default
    /// `dbox-Mails`), if any.
    pub fn mail_dirname(&self) -> Option<&str> {
        match (&self.dirname, self.format.is_dbox()) {
            (Some(d), _) if !d.is_empty() => Some(d),
            (None, true) => Some("dbox-Mails"),
            _ => None,
        }
    }
}

impl Location {
    /// Parses a location string; a string without a known `<driver>:` prefix is a bare path
    /// whose format is detected on disk.
    pub fn parse(location: &str) -> Result<Location> {
        let err = |what: String| Error::Location {
            location: location.to_string(),
            what,
        };
        check_driver(location)?;
        let (driver, rest) = driver_and_rest(location);
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
            Some("sdbox" | "dbox") => Format::Sdbox,
            Some("mdbox") => Format::Mdbox,
            Some("mbox") => Format::Mbox,
            Some(other) => return Err(err(format!("the {other} driver is not supported"))),
            None => detect_format(&root).map_err(&err)?,
        };
        let mut loc = Location {
            original: location.to_string(),
            format,
            root,
            layout: if format.is_dbox() || format == Format::Mbox {
                Layout::Fs
            } else {
                Layout::MaildirPlusPlus
            },
            inbox: None,
            index: None,
            index_in_memory: false,
            control: None,
            utf8_names: false,
            alt: None,
            alt_check: true,
            dirname: None,
            full_dirname: false,
            mailboxdir: None,
            volatile_dir: None,
            list_index: None,
            iter_index: false,
            index_pvt: None,
            index_cache: None,
            subscriptions: None,
            broken_char: None,
            no_noselect: false,
            no_fs_validation: false,
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
            let path = || -> Result<PathBuf> { fix_path(need_value()?).map_err(&err) };
            let no_value = || -> Result<bool> {
                match value {
                    None => Ok(true),
                    Some(_) => Err(err(format!("key {key} takes no value"))),
                }
            };
            match key {
                "LAYOUT" => {
                    loc.layout = match need_value()? {
                        "maildir++" => Layout::MaildirPlusPlus,
                        "fs" => Layout::Fs,
                        "index" => Layout::Index,
                        other => {
                            return Err(err(format!(
                                "LAYOUT={other} is not supported (maildir++, fs or index)"
                            )));
                        }
                    }
                }
                "INBOX" => loc.inbox = Some(path()?),
                "INDEX" => match need_value()? {
                    "MEMORY" => loc.index_in_memory = true,
                    _ => loc.index = Some(path()?),
                },
                "CONTROL" => loc.control = Some(path()?),
                "UTF-8" => loc.utf8_names = no_value()?,
                "ALT" => loc.alt = Some(path()?),
                "ALTNOCHECK" => loc.alt_check = !no_value()?,
                "DIRNAME" => loc.dirname = Some(need_value()?.to_string()),
                "FULLDIRNAME" => {
                    loc.dirname = Some(need_value()?.to_string());
                    loc.full_dirname = true;
                }
                // An empty MAILBOXDIR= is allowed (mailboxes directly under the root),
                // except for mdbox, which Dovecot refuses.
                "MAILBOXDIR" => loc.mailboxdir = Some(value.unwrap_or("").to_string()),
                "VOLATILEDIR" => loc.volatile_dir = Some(path()?),
                "LISTINDEX" => loc.list_index = Some(need_value()?.to_string()),
                "ITERINDEX" => loc.iter_index = no_value()?,
                "INDEXPVT" => loc.index_pvt = Some(path()?),
                "INDEXCACHE" => loc.index_cache = Some(path()?),
                "SUBSCRIPTIONS" => loc.subscriptions = Some(need_value()?.to_string()),
                "BROKENCHAR" => {
                    let v = need_value()?;
                    let mut chars = v.chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None) => loc.broken_char = Some(c),
                        _ => return Err(err(format!("BROKENCHAR={v} must be one character"))),
                    }
                }
                "NO-NOSELECT" => loc.no_noselect = no_value()?,
                "NO-FS-VALIDATION" => loc.no_fs_validation = no_value()?,
                k => return Err(err(format!("unknown key {k:?}"))),
            }
        }
        if loc.format == Format::Mdbox && loc.mailboxdir.as_deref() == Some("") {
            return Err(err("mdbox needs a non-empty MAILBOXDIR".into()));
        }
        if loc.layout == Layout::Index {
            check_index_layout(&loc).map_err(&err)?;
        }
        if loc.iter_index && loc.index.is_none() {
            return Err(err("ITERINDEX needs an explicit INDEX= directory".into()));
        }
        if matches!(loc.format, Format::Maildir | Format::Mbox) && loc.alt.is_some() {
            return Err(err("ALT= is for sdbox and mdbox only".into()));
        }
        if loc.format == Format::Mbox && loc.layout != Layout::Fs {
            return Err(err("mbox is read with LAYOUT=fs (its default) only".into()));
        }
        if driver.is_some() {
            check_format_on_disk(&loc).map_err(&err)?;
        }
        if loc.format == Format::Maildir
            && loc.layout == Layout::MaildirPlusPlus
            && let Some(folder) = fs_layout_folder(&loc.root)
        {
            // A directory named like a mailbox GUID beside a list index is LAYOUT=index's.
            let guid_named = folder.len() == 32 && folder.bytes().all(|b| b.is_ascii_hexdigit());
            let (list_dir, list_file) = loc.list_index_file();
            let layout = if guid_named && list_dir.join(format!("{list_file}.log")).exists() {
                "index"
            } else {
                "fs"
            };
            log::warn!(
                "{}: {} holds {folder:?}, a folder directory of LAYOUT={layout} (cur/ \
                     inside), which Maildir++ does not show; if the store is \
                     LAYOUT={layout}, add :LAYOUT={layout} to the location",
                location,
                loc.root.display()
            );
        }
        Ok(loc)
    }
}

/// Splits `<driver>:<rest>`; a string without a known driver is all rest (a bare path).
fn driver_and_rest(location: &str) -> (Option<&str>, &str) {
    match location.split_once(':') {
        Some((d, rest)) if is_driver(d) => (Some(d), rest),
        _ => (None, location),
    }
}

/// `LAYOUT=index` with keys mailfs does not follow there: refused by name rather than
/// mounted with the wrong directories.
fn check_index_layout(loc: &Location) -> std::result::Result<(), String> {
    let refused = [
        ("INDEX=MEMORY", loc.index_in_memory),
        ("INBOX=", loc.inbox.is_some()),
        ("DIRNAME=/FULLDIRNAME=", loc.dirname.is_some()),
        ("ITERINDEX", loc.iter_index),
        (
            "an absolute LISTINDEX= directory",
            loc.list_index
                .as_deref()
                .is_some_and(|l| l.starts_with('/')),
        ),
    ];
    match refused.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(format!(
            "{key} with LAYOUT=index is not supported by mailfs (LAYOUT=index keeps every \
             mailbox in a directory named by its GUID, listed in the mailbox list index)"
        )),
        None => Ok(()),
    }
}

/// Refuses a location that starts with a word and ':' (`bogusfmt:/p`) where the word is no
/// driver Dovecot knows: it is a misspelt format, not a bare path. A bare path with ':' in it
/// still parses: the part before its first ':' is then empty, holds a '/' or '~', or starts
/// with something other than a letter (`/a:b`, `./x:y`, `~/a:b`; a ':' inside a path is
/// written `::`, as for Dovecot).
fn check_driver(location: &str) -> Result<()> {
    let Some((word, _)) = location.split_once(':') else {
        return Ok(());
    };
    let mut chars = word.chars();
    let is_word = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric());
    if !is_word || is_driver(word) {
        return Ok(());
    }
    if word.eq_ignore_ascii_case("imap") || word.eq_ignore_ascii_case("imaps") {
        return Err(Error::Location {
            location: location.to_string(),
            what: "an IMAP account is mounted (`mailfs mount imap://USER@HOST[:PORT] MP`); \
                   ls and cat read local stores"
                .to_string(),
        });
    }
    Err(Error::Location {
        location: location.to_string(),
        what: format!("unknown mail format {word:?} (maildir, sdbox, mdbox)"),
    })
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
        let home =
            crate::sys::user_home(user).ok_or_else(|| format!("unknown user {user:?} in {p:?}"))?;
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

/// `path` with its symbolic links resolved as far as it exists, the rest appended.
pub fn resolve_existing(path: &Path) -> PathBuf {
    let mut tail = Vec::new();
    let mut head = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(head) {
            return tail.iter().rev().fold(real, |p: PathBuf, c| p.join(c));
        }
        match (head.parent(), head.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                head = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// True if `dir` has an entry whose name satisfies `pred`.
fn dir_has(dir: &Path, pred: impl Fn(&str) -> bool) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_str().is_some_and(&pred))
    })
}

/// What unambiguously marks a store of each format on disk, as a short description; None
/// when `root` shows none (empty, missing, or only shared markers).
fn format_evidence(root: &Path) -> Option<(Format, String)> {
    let storage = root.join("storage");
    for marker in ["dovecot.map.index", "dovecot.map.index.log"] {
        if storage.join(marker).exists() {
            return Some((Format::Mdbox, format!("storage/{marker}")));
        }
    }
    if dir_has(&storage, |n| n.starts_with("m.")) {
        return Some((Format::Mdbox, "storage/m.* files".into()));
    }
    let inbox = root.join("mailboxes/INBOX/dbox-Mails");
    if dir_has(&inbox, |n| n.starts_with("u.")) {
        return Some((Format::Sdbox, "mailboxes/INBOX/dbox-Mails/u.* files".into()));
    }
    for marker in ["cur", "new"] {
        if root.join(marker).is_dir() && !root.join("mailboxes").exists() {
            return Some((Format::Maildir, format!("{marker}/")));
        }
    }
    None
}

/// Refuses a location whose driver says one format while its root unambiguously holds
/// another (`sdbox:` on an mdbox store would mount and then fail every access), naming
/// what was found and the location that fits.
fn check_format_on_disk(loc: &Location) -> std::result::Result<(), String> {
    let Some((found, evidence)) = format_evidence(&loc.root) else {
        return Ok(());
    };
    if found == loc.format {
        return Ok(());
    }
    Err(format!(
        "{} holds a{} {} store ({evidence}), not {}; use {}:{}",
        loc.root.display(),
        if found == Format::Maildir { "" } else { "n" },
        found.name(),
        loc.format.name(),
        found.name(),
        loc.root.display()
    ))
}

/// A folder directory of LAYOUT=fs under a Maildir root (a directory, not hidden and not
/// cur/new/tmp, with cur/ inside), if there is one.
fn fs_layout_folder(root: &Path) -> Option<String> {
    std::fs::read_dir(root).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_str()?.to_string();
        let special = name.starts_with('.') || ["cur", "new", "tmp"].contains(&name.as_str());
        (!special && e.path().join("cur").is_dir()).then_some(name)
    })
}

/// Guesses the format of a bare path from what is on disk.
fn detect_format(root: &Path) -> std::result::Result<Format, String> {
    let meta = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if meta.is_file() && starts_with_from(root) {
        // Mounting a lone file would make its directory (e.g. /var/mail, other users'
        // files) the root: name the location that fits instead.
        return Err(format!(
            "{} is an mbox file; mount the mbox root with it as INBOX: \
             mbox:DIR:INBOX={} (DIR holds the folders and .imap/)",
            root.display(),
            root.display()
        ));
    }
    if !meta.is_dir() {
        return Err(format!(
            "{} is not a directory (nor an mbox file starting with \"From \")",
            root.display()
        ));
    }
    let storage = root.join("storage");
    if storage.join("dovecot.map.index.log").exists()
        || storage.join("dovecot.map.index").exists()
        || dir_has(&storage, |n| n.starts_with("m."))
    {
        return Ok(Format::Mdbox);
    }
    if root.join("mailboxes").is_dir() {
        return Ok(Format::Sdbox);
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
    // A Maildir with LAYOUT=index has no mailbox directory by name, only the list index
    // and GUID directories: a bare path cannot say so, the location must.
    if ["dovecot.list.index", "dovecot.list.index.log"]
        .iter()
        .any(|f| root.join(f).exists())
    {
        return Err(format!(
            "{} holds a mailbox list index but no mailbox directory by name: a LAYOUT=index \
             store, whose format a bare path cannot tell; give it, e.g. maildir:{}:LAYOUT=index",
            root.display(),
            root.display()
        ));
    }
    if is_mbox_dir(root) {
        return Ok(Format::Mbox);
    }
    // A store one level down (`~` given for `~/mdbox`): name it rather than suggest a
    // format for the directory above it.
    if let Some((sub, format)) = store_below(root) {
        return Err(format!(
            "{} is not a mail store, but {} holds a{} {} store: use {}:{}",
            root.display(),
            sub.display(),
            if format == Format::Maildir { "" } else { "n" },
            format.name(),
            format.name(),
            sub.display()
        ));
    }
    Err(format!(
        "cannot tell the format of {}: no cur/, new/, dovecot-uidlist, Maildir++ folder, \
         mailboxes/ (sdbox) or storage/ (mdbox); give it explicitly, e.g. maildir:{}",
        root.display(),
        root.display()
    ))
}

/// True if `path` is a regular file whose first bytes are `From ` (an mbox file).
fn starts_with_from(path: &Path) -> bool {
    use std::io::Read;
    let Ok(file) = crate::sys::open_file(path) else {
        return false;
    };
    let mut head = [0u8; 5];
    file.metadata().is_ok_and(|m| m.is_file())
        && (&file).read_exact(&mut head).is_ok()
        && &head == b"From "
}

/// True if `dir` looks like an mbox root as Dovecot's autodetection sees one
/// (`mbox_storage_is_root_dir()`: a `.imap/` directory, an `inbox` or `mbox` file), with
/// an mbox file (one starting with `From `) among its first 64 entries or no files at all
/// besides `.imap/`.
fn is_mbox_dir(dir: &Path) -> bool {
    if !dir.join(".imap").is_dir() && !["inbox", "mbox"].iter().any(|f| dir.join(f).is_file()) {
        return false;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    let files: Vec<PathBuf> = rd
        .flatten()
        .take(64)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.is_empty() || files.iter().any(|p| starts_with_from(p))
}

/// A directory right below `root` whose format can be told, with that format (the first
/// in name order; at most 64 entries looked at).
fn store_below(root: &Path) -> Option<(PathBuf, Format)> {
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .take(64)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    subdirs.sort();
    subdirs.into_iter().find_map(|sub| {
        let format = format_evidence(&sub).map(|(f, _)| f).or_else(|| {
            ["dovecot-uidlist", "maildirfolder"]
                .iter()
                .any(|m| sub.join(m).exists())
                .then_some(Format::Maildir)
        })?;
        Some((sub, format))
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn dirs_lists_every_root_once() {
        let loc = Location::parse("mdbox:/m:INDEX=/i:ALT=/a:CONTROL=/m:INDEXPVT=/p").unwrap();
        let want: Vec<PathBuf> = ["/m", "/i", "/a", "/p"].iter().map(PathBuf::from).collect();
        assert_eq!(loc.dirs(), want);
        assert_eq!(
            Spec::parse("maildir:/m").unwrap().roots(),
            vec![PathBuf::from("/m")]
        );
    }

    use super::*;

    #[test]
    fn an_unknown_driver_is_named_and_bare_paths_with_colons_still_parse() {
        for location in ["bogusfmt:/p", "Maildir2:/p", "x:/home/%u", "foo:"] {
            let e = Spec::parse(location).unwrap_err().to_string();
            let word = location.split(':').next().unwrap();
            assert!(
                e.contains(&format!(
                    "unknown mail format {word:?} (maildir, sdbox, mdbox)"
                )),
                "{location}: {e}"
            );
            let e = Location::parse(location).unwrap_err().to_string();
            assert!(e.contains("unknown mail format"), "{location}: {e}");
        }
        // Dovecot's other drivers keep their own message.
        let e = Spec::parse("imapc:/p").unwrap_err().to_string();
        assert!(e.contains("imapc driver is not supported"), "{e}");
        // Paths whose text before the first ':' is not a word are bare paths: they fail,
        // if at all, on the path (here: it does not exist), never as a format.
        for location in ["/a:b", "/no/such:dir", "./x:y", "~/a:b", "1x:/p", "a-b:/p"] {
            match Spec::parse(location) {
                Ok(_) => {}
                Err(e) => assert!(
                    !e.to_string().contains("unknown mail format"),
                    "{location}: {e}"
                ),
            }
        }
    }

    #[test]
    fn parses_mbox_locations() {
        let l = Location::parse("mbox:/m:INBOX=/var/mail/u:INDEX=/i").unwrap();
        assert_eq!((l.format, l.layout), (Format::Mbox, Layout::Fs));
        assert_eq!(l.inbox, Some(PathBuf::from("/var/mail/u")));
        assert_eq!(l.index, Some(PathBuf::from("/i")));
        for bad in ["mbox:/m:LAYOUT=maildir++", "mbox:/m:ALT=/a"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

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
        let e = Location::parse("maildir:/m:LAYOUT=bogus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("LAYOUT=bogus"), "{e}");
        let e = Location::parse("maildir:/m:LAYOUT=index:INBOX=/i")
            .unwrap_err()
            .to_string();
        assert!(e.contains("INBOX= with LAYOUT=index"), "{e}");
        assert!(Location::parse("maildir:").is_err());
        assert!(Location::parse("maildir:INBOX=/x").is_err());
        assert!(matches!(
            Spec::parse("maildir:/home/%u").unwrap(),
            Spec::Users(_)
        ));
        assert!(matches!(
            Spec::parse("maildir:/home/100%%").unwrap(),
            Spec::Single(l) if l.root == Path::new("/home/100%")
        ));
    }

    #[test]
    fn parses_every_dbox_key() {
        let l = Location::parse(
            "mdbox:/m:INDEX=/i:CONTROL=/c:ALT=/a:ALTNOCHECK:DIRNAME=d:MAILBOXDIR=mb:INBOX=/in:\
             LAYOUT=fs:VOLATILEDIR=/v:LISTINDEX=/l/list.index:ITERINDEX:INDEXPVT=/p",
        )
        .unwrap();
        assert_eq!(l.format, Format::Mdbox);
        assert_eq!(l.alt, Some(PathBuf::from("/a")));
        assert!(!l.alt_check && l.iter_index);
        assert_eq!(l.mailbox_root(), PathBuf::from("/m/mb"));
        assert_eq!(l.mail_dirname(), Some("d"));
        assert_eq!(l.index_pvt, Some(PathBuf::from("/p")));
        let s = Location::parse("sdbox:/s").unwrap();
        assert_eq!((s.format, s.layout), (Format::Sdbox, Layout::Fs));
        assert_eq!(s.mailbox_root(), PathBuf::from("/s/mailboxes"));
        assert_eq!(s.mail_dirname(), Some("dbox-Mails"));
        assert_eq!(Location::parse("dbox:/s").unwrap().format, Format::Sdbox);
        let m = Location::parse("maildir:/m").unwrap();
        assert_eq!(
            (m.mailbox_root(), m.mail_dirname()),
            (PathBuf::from("/m"), None)
        );
    }

    #[test]
    fn index_layout_paths_follow_dovecot() {
        let m = Location::parse("maildir:/m:LAYOUT=index").unwrap();
        assert_eq!(m.layout, Layout::Index);
        assert_eq!(
            m.list_index_file(),
            (PathBuf::from("/m"), "dovecot.list.index".to_string())
        );
        assert_eq!(m.guid_dir(Path::new("/m"), "ab"), PathBuf::from("/m/ab"));
        let d = Location::parse("sdbox:/s:LAYOUT=index:INDEX=/i:LISTINDEX=sub/l.idx").unwrap();
        assert_eq!(
            d.list_index_file(),
            (PathBuf::from("/i/sub"), "l.idx".to_string())
        );
        assert_eq!(
            d.guid_dir(Path::new("/i"), "ab"),
            PathBuf::from("/i/mailboxes/ab")
        );
        let d = Location::parse("mdbox:/s:LAYOUT=index:MAILBOXDIR=mb:LISTINDEX=x").unwrap();
        assert_eq!(d.list_index_file(), (PathBuf::from("/s"), "x".to_string()));
        assert_eq!(d.guid_dir(Path::new("/s"), "ab"), PathBuf::from("/s/mb/ab"));
    }

    #[test]
    fn expands_home() {
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
        std::fs::write(dir.join("dovecot.list.index.log"), b"").unwrap();
        let e = Location::parse(dir.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains(":LAYOUT=index"), "{e}");
        std::fs::create_dir_all(dir.join("cur")).unwrap();
        assert_eq!(
            Location::parse(dir.to_str().unwrap()).unwrap().format,
            Format::Maildir
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Location::parse(dir.to_str().unwrap()).is_err());
    }
}
