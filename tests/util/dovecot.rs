//! A private Dovecot instance: the test oracle.
//!
//! Each test starts its own master (`dovecot -F -c <conf>`) in its [`TestDir`], so tests can
//! run in parallel and never touch the system Dovecot. `doveadm` needs the master's auth
//! service for user lookups. The mail user is uid/gid 65534 when running as root (Dovecot
//! refuses uid 0), else the current user.
//!
//! Things learned about doveadm 2.3.19 that the helpers rely on:
//! - `fetch ... text` prints `text:\n` and then the stored bytes unchanged; nothing is
//!   appended to a message without a final newline. Several messages are separated by
//!   `\f\n`, which a message may itself contain, so [`User::fetch`] frames each text by
//!   `size.physical` and checks that the separator follows.
//! - `date.saved` of a Maildir message is the file's ctime until something fetches it; the
//!   first fetch caches it in `dovecot.index.cache` and later renames (flag changes, new/ to
//!   cur/) no longer move it. So fetch it once, after all changes ([`User::fetch`]).
//! - `doveadm save` leaves files in `new/`; flag changes rename them inside `new/`. An IMAP
//!   SELECT ([`User::select`]) moves everything in `new/` to `cur/`, and `doveadm import`
//!   saves messages that have flags straight into `cur/`.
//! - By default Dovecot stores LF line ends even when given CRLF;
//!   `-o mail_save_crlf=yes` keeps CRLF ([`User::save_crlf`]).
//! - `-o key=value` is not variable-expanded: `-o mail_location=.../%u` means a literal `%u`.
//!
//! And about the passwd-file userdb of [`Dovecot::start_users`] (one mail location per user):
//! - An entry is `name:password:uid:gid:gecos:home:shell:extra fields`. Everything after the
//!   seventh `:` is the extra fields, colons included, so `userdb_mail=sdbox:/m/%u:INDEX=/i/%u`
//!   arrives whole; extra fields are separated by spaces.
//! - Extra fields are variable-expanded per user with all modifiers (`%2.256Nu`, `%d`, `%n`);
//!   the home field is not (a `%u` there stays literal). `doveadm user -f mail NAME` shows
//!   the expanded location ([`User::location`]).
//! - `-A` (every userdb user) and `-F FILE` (the users listed in FILE) run one mail command
//!   for many users in one doveadm process ([`Dovecot::doveadm_users`]). The exit status can
//!   be 0 although some users failed, so the helper also fails on errors logged on stderr.
//! - Do not use `doveadm import` with `-A`/`-F`: it does not expand `%u` in the source
//!   location, and when run as root it writes the first user's mail (and the shared source's
//!   index files) as root, mode 0700, which the mail user then cannot read: later commands
//!   fail with "Permission denied" and "Index is read-only". `import -u` is fine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use std::{fmt, fs};

use super::{TestDir, chown_recursive, is_root, set_mode, show, tool, wait_for};

/// How the users' mail is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `maildir:~/Maildir`: Maildir++ (`.Work.Sub`), index and control files beside the mail.
    MaildirPlusPlus,
    /// `maildir:~/Maildir:LAYOUT=fs:INDEX=~/index:CONTROL=~/control`: nested directories,
    /// with index and control files (`dovecot-uidlist`, `dovecot-keywords`) elsewhere.
    FsSeparateIndexControl,
    /// `mdbox:~/mdbox`: multi-dbox. Each mailbox's index is in
    /// `~/mdbox/mailboxes/<name>/dbox-Mails/`, the map index and the `m.N` files in
    /// `~/mdbox/storage/`.
    Mdbox,
    /// An sdbox or mdbox store at `~/sdbox` or `~/mdbox`, with extra location keys
    /// ([`DboxLayout`]).
    Dbox(DboxLayout),
    /// Each user has a mail location of its own, given to [`Dovecot::start_users`], which
    /// Dovecot expands per user (`%u`, `%2.256Nu`, ...). Homes are `<base>/home/<user>`; the
    /// mail is wherever the location says. The [`User`] helpers that compute paths from the
    /// layout (`mailbox_dir`, `index_dir`, ...) panic for it; [`User::location`] and
    /// [`User::mail_root`] ask Dovecot, and the doveadm-based helpers all work.
    PerUser,
}

/// Which dbox format a [`Layout::Dbox`] store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DboxFormat {
    /// single-dbox: one `u.<uid>` file per message in each mailbox's `dbox-Mails/`.
    Sdbox,
    /// multi-dbox: messages packed in `storage/m.<file_id>`, found through the map index.
    Mdbox,
}

impl DboxFormat {
    /// The driver name, also the store directory's name under the home.
    pub fn name(self) -> &'static str {
        match self {
            DboxFormat::Sdbox => "sdbox",
            DboxFormat::Mdbox => "mdbox",
        }
    }
}

/// A dbox store `<format>:~/<format><keys>`. `keys` are extra location keys, each with its
/// leading `:` (e.g. `":ALT=~/alt:INDEX=~/index"`); `~` stands for the user's home and is
/// spelled out in the location handed to both Dovecot and mailfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DboxLayout {
    pub format: DboxFormat,
    pub keys: &'static str,
}

impl DboxLayout {
    pub const fn sdbox(keys: &'static str) -> Layout {
        Layout::Dbox(DboxLayout {
            format: DboxFormat::Sdbox,
            keys,
        })
    }

    pub const fn mdbox(keys: &'static str) -> Layout {
        Layout::Dbox(DboxLayout {
            format: DboxFormat::Mdbox,
            keys,
        })
    }

    fn location(&self, home: &str) -> String {
        let f = self.format.name();
        format!("{f}:{home}/{f}{}", self.keys.replace('~', home))
    }

    /// The value of a key in `keys` (`Some("")` for a key without a value), with `~`
    /// expanded to `home`.
    fn key(&self, home: &Path, name: &str) -> Option<String> {
        self.keys.split(':').find_map(|field| {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            (k == name).then(|| v.replace('~', &home.display().to_string()))
        })
    }

    fn mailboxdir(&self, home: &Path) -> String {
        self.key(home, "MAILBOXDIR")
            .unwrap_or_else(|| "mailboxes".to_string())
    }

    fn dirname(&self, home: &Path) -> String {
        self.key(home, "DIRNAME")
            .unwrap_or_else(|| "dbox-Mails".to_string())
    }
}

/// A running private Dovecot master. Stopped on drop.
pub struct Dovecot {
    base: PathBuf,
    conf: PathBuf,
    layout: Layout,
    /// [`Layout::PerUser`]: the users in the passwd-file, in the order given.
    users: Vec<String>,
    master: Child,
    mail_uid: u32,
    mail_gid: u32,
}

/// More configuration for [`Dovecot::start_with_config`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Config<'a> {
    /// `key = value` lines, as for [`Dovecot::start_with_settings`]. A plugin setting is
    /// spelled `plugin/NAME = VALUE` (Dovecot reads it as `plugin { NAME = VALUE }`).
    pub settings: &'a [&'a str],
    /// The static passdb's `args` (default `nopassword=y`), e.g.
    /// `proxy=y host=127.0.0.1 nopassword=y` for a proxy.
    pub passdb_args: Option<&'a str>,
    /// Whole sections, written as given after everything else (e.g.
    /// `service doveadm {\n inet_listener {\n port = 1234\n }\n}`).
    pub sections: &'a [&'a str],
}

/// Which users a multi-user doveadm command ([`Dovecot::doveadm_users`]) runs for.
#[derive(Debug, Clone, Copy)]
pub enum Users<'a> {
    /// `-A`: every user the userdb lists.
    All,
    /// `-F <file>`: exactly these.
    Only(&'a [String]),
}

impl Dovecot {
    /// Writes a config below `dir` and starts a master; returns once its auth socket exists.
    /// All users share one `mail_location` (a static userdb, any user name works).
    pub fn start(dir: &TestDir, layout: Layout) -> Dovecot {
        assert_ne!(layout, Layout::PerUser, "use Dovecot::start_users");
        Dovecot::start_with(dir, layout, &[], Config::default())
    }

    /// Like [`Dovecot::start`], with extra `key = value` lines in `dovecot.conf` (e.g.
    /// `lock_method = flock`). Unlike `doveadm -o`, they apply to every process the master
    /// starts, `doveadm exec imap` sessions included.
    pub fn start_with_settings(dir: &TestDir, layout: Layout, settings: &[&str]) -> Dovecot {
        assert_ne!(layout, Layout::PerUser, "use Dovecot::start_users");
        Dovecot::start_with(
            dir,
            layout,
            &[],
            Config {
                settings,
                ..Config::default()
            },
        )
    }

    /// Like [`Dovecot::start_with_settings`], with the rest of [`Config`]: another passdb
    /// (a proxy's `proxy=y host=...`) and whole sections (`service doveadm { ... }`).
    pub fn start_with_config(dir: &TestDir, layout: Layout, config: Config<'_>) -> Dovecot {
        assert_ne!(layout, Layout::PerUser, "use Dovecot::start_users");
        Dovecot::start_with(dir, layout, &[], config)
    }

    /// Starts a master whose users each have their own mail location ([`Layout::PerUser`]):
    /// a passwd-file userdb with one entry per `(name, location)`, the location in a
    /// `userdb_mail=` extra field. Dovecot expands the location's variables per user
    /// (`%u`, `%n`, `%d`, `%2.256Nu`, ...), in every key too. Only these users exist, and
    /// `-A` means all of them. Each gets an empty home `<base>/home/<name>`.
    ///
    /// Dovecot creates missing mail directories as the mail user, so the directories the
    /// locations point into must be writable by it ([`Dovecot::mail_owned_dir`]).
    pub fn start_users(dir: &TestDir, users: &[(String, String)]) -> Dovecot {
        assert!(!users.is_empty(), "start_users needs users");
        Dovecot::start_with(dir, Layout::PerUser, users, Config::default())
    }

    fn start_with(
        dir: &TestDir,
        layout: Layout,
        users: &[(String, String)],
        config: Config<'_>,
    ) -> Dovecot {
        let base = dir.mkdir("dovecot");
        for sub in ["run", "state", "home"] {
            fs::create_dir_all(base.join(sub)).expect("creating dovecot dirs");
            set_mode(&base.join(sub), 0o755);
        }
        let (mail_uid, mail_gid) = if is_root() {
            (65534, 65534)
        } else {
            // SAFETY: getuid/getgid have no preconditions and cannot fail.
            unsafe { (libc::getuid(), libc::getgid()) }
        };
        let b = base.display();
        let home = format!("{b}/home/%u");
        let location = match layout {
            Layout::MaildirPlusPlus => Some(format!("maildir:{home}/Maildir")),
            Layout::FsSeparateIndexControl => Some(format!(
                "maildir:{home}/Maildir:LAYOUT=fs:INDEX={home}/index:CONTROL={home}/control"
            )),
            Layout::Mdbox => Some(format!("mdbox:{home}/mdbox")),
            Layout::Dbox(d) => Some(d.location(&home)),
            Layout::PerUser => None,
        };
        let userdb = match &location {
            Some(_) => {
                format!("driver = static\n  args = uid={mail_uid} gid={mail_gid} home={home}")
            }
            None => {
                let passwd = base.join("passwd");
                let mut entries = String::new();
                for (name, location) in users {
                    assert!(
                        !name.is_empty()
                            && !name.contains([':', '/', '%'])
                            && !name.contains(char::is_whitespace),
                        "user name {name:?} cannot go in a passwd-file"
                    );
                    assert!(
                        !location.contains(char::is_whitespace),
                        "a passwd-file extra field cannot hold whitespace: {location:?}"
                    );
                    let _ = writeln!(
                        entries,
                        "{name}::{mail_uid}:{mail_gid}::{b}/home/{name}::userdb_mail={location}"
                    );
                    let user_home = base.join("home").join(name);
                    fs::create_dir_all(&user_home)
                        .unwrap_or_else(|e| panic!("creating {user_home:?}: {e}"));
                    chown_recursive(&user_home, mail_uid, mail_gid);
                }
                fs::write(&passwd, entries).expect("writing the passwd-file");
                format!("driver = passwd-file\n  args = {}", passwd.display())
            }
        };
        let mut conf = format!(
            "base_dir = {b}/run\n\
             state_dir = {b}/state\n\
             log_path = {b}/dovecot.log\n\
             ssl = no\n\
             protocols =\n\
             first_valid_uid = 0\n\
             mail_fsync = never\n"
        );
        if let Some(location) = &location {
            let _ = writeln!(conf, "mail_location = {location}");
        }
        for setting in config.settings {
            assert!(
                setting.contains(" = ") && !setting.contains('\n'),
                "a setting is one `key = value` line: {setting:?}"
            );
            let _ = writeln!(conf, "{setting}");
        }
        let _ = write!(
            conf,
            "userdb {{\n  {userdb}\n}}\n\
             passdb {{\n  driver = static\n  args = {}\n}}\n\
             namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n",
            config.passdb_args.unwrap_or("nopassword=y")
        );
        for section in config.sections {
            let _ = writeln!(conf, "{section}");
        }
        if !is_root() {
            // Without root, every Dovecot process runs as us.
            let user = id_name("-un");
            let group = id_name("-gn");
            let _ = write!(
                conf,
                "default_internal_user = {user}\ndefault_internal_group = {group}\n\
                 default_login_user = {user}\n"
            );
        }
        let conf_path = base.join("dovecot.conf");
        fs::write(&conf_path, conf).expect("writing dovecot.conf");
        let out = fs::File::create(base.join("master.out")).expect("creating master.out");
        let master = Command::new(tool("dovecot"))
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting dovecot: {e}"));
        let mut dovecot = Dovecot {
            base,
            conf: conf_path,
            layout,
            users: users.iter().map(|(name, _)| name.clone()).collect(),
            master,
            mail_uid,
            mail_gid,
        };
        let socket = dovecot.base.join("run/auth-userdb");
        wait_for(
            Duration::from_secs(10),
            "the private dovecot to listen",
            || {
                if let Ok(Some(status)) = dovecot.master.try_wait() {
                    panic!("dovecot exited at start ({status}):\n{}", dovecot.logs());
                }
                socket.exists().then_some(())
            },
        );
        dovecot
    }

    /// The doveadm server's unix socket (`<base_dir>/doveadm-server`), which `mailfs mount
    /// --rw --doveadm` takes.
    pub fn doveadm_socket(&self) -> PathBuf {
        self.base.join("run/doveadm-server")
    }

    /// Everything Dovecot's processes have logged so far (`log_path`). `doveadm` run from
    /// the command line logs to its own stderr, not here; the doveadm server's sessions
    /// log here as `doveadm(USER)<PID><SESSION>: ...`.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.base.join("dovecot.log")).unwrap_or_default()
    }

    /// A mail user with an empty home directory (INBOX is created on first use). With
    /// [`Layout::PerUser`] only the users given to [`Dovecot::start_users`] exist.
    pub fn user(&self, name: &str) -> User<'_> {
        if self.layout == Layout::PerUser {
            assert!(
                self.users.iter().any(|u| u == name),
                "{name:?} is not in the passwd-file; the users are {:?}",
                self.users
            );
        }
        let user = User {
            dovecot: self,
            name: name.to_string(),
        };
        let home = user.home();
        fs::create_dir_all(&home).unwrap_or_else(|e| panic!("creating {home:?}: {e}"));
        chown_recursive(&home, self.mail_uid, self.mail_gid);
        user
    }

    /// [`Layout::PerUser`]: every user given to [`Dovecot::start_users`], in that order.
    pub fn users(&self) -> Vec<User<'_>> {
        self.users.iter().map(|name| self.user(name)).collect()
    }

    /// uid and gid that own the mail files.
    pub fn mail_owner(&self) -> (u32, u32) {
        (self.mail_uid, self.mail_gid)
    }

    /// Creates `<dir>/<rel>` (mode 0755) owned by the mail user, so that Dovecot can create
    /// the users' mail directories inside it.
    pub fn mail_owned_dir(&self, dir: &TestDir, rel: &str) -> PathBuf {
        let path = dir.mkdir(rel);
        chown_recursive(&path, self.mail_uid, self.mail_gid);
        path
    }

    /// Runs one mail command for many users in one process:
    /// `doveadm [-o opt]... <command...> (-A | -F <file>) <args...>`, feeding `stdin` (the
    /// same input to every user, e.g. `save`). Panics if doveadm fails or logs an error for
    /// any user (it can exit 0 after a user failed). Not for `import` (see the module notes).
    pub fn doveadm_users(
        &self,
        users: Users<'_>,
        opts: &[&str],
        command: &[&str],
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Vec<u8> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static FILES: AtomicUsize = AtomicUsize::new(0);
        assert!(
            command.first() != Some(&"import"),
            "doveadm import -A/-F writes the first user's mail as root; use User::import"
        );
        let file;
        let who: Vec<&str> = match users {
            Users::All => vec!["-A"],
            Users::Only(names) => {
                assert!(!names.is_empty(), "doveadm -F with no users does nothing");
                let n = FILES.fetch_add(1, Ordering::Relaxed);
                file = self.base.join(format!("users.{n}"));
                let text: String = names.iter().map(|u| format!("{u}\n")).collect();
                fs::write(&file, text).unwrap_or_else(|e| panic!("writing {file:?}: {e}"));
                vec!["-F", file.to_str().expect("UTF-8 path")]
            }
        };
        let mut all: Vec<&str> = command.to_vec();
        all.extend(who);
        all.extend_from_slice(args);
        let out = self.doveadm_output(opts, &all, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let failed = stderr
            .lines()
            .any(|l| l.contains("Error:") || l.contains("Fatal:") || l.contains("Panic:"));
        if !out.status.success() || failed {
            panic!(
                "doveadm {} {} ({users:?}) failed ({}):\n{}\n--- dovecot logs ---\n{}",
                opts.join(" "),
                all.join(" "),
                out.status,
                show(&out.stderr),
                self.logs()
            );
        }
        out.stdout
    }

    /// Runs `doveadm -c <conf> [-o opt]... args...`, feeding `stdin`; panics on failure.
    pub fn doveadm(&self, opts: &[&str], args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.doveadm_output(opts, args, stdin);
        if !out.status.success() {
            panic!(
                "doveadm {} {} failed ({}):\n{}\n--- dovecot logs ---\n{}",
                opts.join(" "),
                args.join(" "),
                out.status,
                show(&out.stderr),
                self.logs()
            );
        }
        out.stdout
    }

    /// `doveadm dump <path>` as text (an index is shown with its log replayed, even when
    /// the index file itself does not exist).
    pub fn dump(&self, path: &Path) -> String {
        let path = path.to_str().expect("UTF-8 path");
        String::from_utf8_lossy(&self.doveadm(&[], &["dump", path], None)).into_owned()
    }

    /// `doveadm -c <conf> args...`, not started: for a session the test drives itself
    /// (e.g. `exec imap -u bob` with piped stdin and stdout).
    pub fn doveadm_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(tool("doveadm"));
        cmd.arg("-c").arg(&self.conf).args(args);
        cmd
    }

    /// Like [`Dovecot::doveadm`] but returns the output whatever the exit status.
    pub fn doveadm_output(&self, opts: &[&str], args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(tool("doveadm"));
        cmd.arg("-c").arg(&self.conf);
        for o in opts {
            cmd.arg("-o").arg(o);
        }
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("running doveadm: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(input).expect("writing to doveadm");
        }
        child.wait_with_output().expect("waiting for doveadm")
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["master.out", "dovecot.log"] {
            if let Ok(text) = fs::read_to_string(self.base.join(f)) {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                for line in tail.into_iter().rev() {
                    let _ = writeln!(s, "{f}: {line}");
                }
            }
        }
        s
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let pid = self.master.id() as libc::pid_t;
        // SAFETY: `pid` is our own child, not yet reaped, so it cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..500 {
            if let Ok(Some(_)) = self.master.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("dovecot did not stop on SIGTERM within 5 s; killing it");
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

fn id_name(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().expect("running id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One message as Dovecot reports it.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub uid: u32,
    pub guid: String,
    /// doveadm's spelling and order, without `\Recent`; empty when no flags.
    pub flags: String,
    pub size: u64,
    pub vsize: u64,
    pub received: i64,
    pub saved: i64,
    pub text: Vec<u8>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("uid", &self.uid)
            .field("guid", &self.guid)
            .field("flags", &self.flags)
            .field("size", &self.size)
            .field("vsize", &self.vsize)
            .field("received", &self.received)
            .field("saved", &self.saved)
            .field("text", &show(&self.text[..self.text.len().min(80)]))
            .finish()
    }
}

/// `doveadm mailbox status` of one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxStatus {
    pub guid: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub messages: u32,
}

/// A user of a private Dovecot; all helpers drive doveadm.
pub struct User<'a> {
    dovecot: &'a Dovecot,
    name: String,
}

impl User<'_> {
    pub fn home(&self) -> PathBuf {
        self.dovecot.base.join("home").join(&self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Maildir root (INBOX); for mdbox the `mdbox` root. [`Layout::PerUser`]: the path
    /// of the location Dovecot expanded for this user (up to its first `:` key).
    pub fn mail_root(&self) -> PathBuf {
        match self.dovecot.layout {
            Layout::PerUser => {
                let location = self.location();
                let path = ["maildir:", "sdbox:", "mdbox:", "mbox:"]
                    .iter()
                    .find_map(|driver| location.strip_prefix(driver))
                    .unwrap_or(&location);
                PathBuf::from(path.split(':').next().expect("split yields one"))
            }
            Layout::Mdbox => self.home().join("mdbox"),
            Layout::Dbox(d) => self.home().join(d.format.name()),
            _ => self.home().join("Maildir"),
        }
    }

    /// Everything Dovecot keeps for this user: mail, index and control files.
    pub fn store_root(&self) -> PathBuf {
        self.not_per_user("store_root");
        self.home()
    }

    /// The location string to hand to mailfs. [`Layout::PerUser`]: the user's location as
    /// Dovecot expands it (`doveadm user -f mail`).
    pub fn location(&self) -> String {
        let home = self.home();
        let h = home.display();
        match self.dovecot.layout {
            Layout::PerUser => self.userdb_field("mail"),
            Layout::MaildirPlusPlus => format!("maildir:{h}/Maildir"),
            Layout::FsSeparateIndexControl => {
                format!("maildir:{h}/Maildir:LAYOUT=fs:INDEX={h}/index:CONTROL={h}/control")
            }
            Layout::Mdbox => format!("mdbox:{h}/mdbox"),
            Layout::Dbox(d) => d.location(&h.to_string()),
        }
    }

    /// A field of this user's userdb entry as Dovecot returns it, variables expanded
    /// (`doveadm user -f <field> <name>`).
    pub fn userdb_field(&self, field: &str) -> String {
        let out = self.run_text(&["user", "-f", field, &self.name]);
        out.strip_suffix('\n').unwrap_or(&out).to_string()
    }

    /// Panics for [`Layout::PerUser`], whose paths only Dovecot knows.
    fn not_per_user(&self, what: &str) {
        assert_ne!(
            self.dovecot.layout,
            Layout::PerUser,
            "User::{what} computes paths from a shared layout; with per-user locations use \
             User::mail_root or User::location"
        );
    }

    /// The directory holding a mailbox's `cur/`, `new/` and `tmp/` (ASCII names only).
    pub fn mailbox_dir(&self, mailbox: &str) -> PathBuf {
        self.not_per_user("mailbox_dir");
        assert!(
            mailbox.is_ascii() && !mailbox.contains('&'),
            "mUTF-7 names not supported here"
        );
        match (self.dovecot.layout, mailbox) {
            (Layout::Mdbox, name) => self
                .mail_root()
                .join("mailboxes")
                .join(name)
                .join("dbox-Mails"),
            (Layout::Dbox(d), name) => {
                let home = self.home();
                match d.key(&home, "INBOX") {
                    Some(inbox) if name == "INBOX" => PathBuf::from(inbox),
                    _ => self
                        .mail_root()
                        .join(d.mailboxdir(&home))
                        .join(name)
                        .join(d.dirname(&home)),
                }
            }
            (_, "INBOX") => self.mail_root(),
            (Layout::MaildirPlusPlus, name) => self
                .mail_root()
                .join(format!(".{}", name.replace('/', "."))),
            (Layout::FsSeparateIndexControl, name) => self.mail_root().join(name),
            (Layout::PerUser, _) => unreachable!("refused above"),
        }
    }

    /// The directory holding a mailbox's `dovecot-uidlist` (ASCII names only).
    pub fn control_dir(&self, mailbox: &str) -> PathBuf {
        self.not_per_user("control_dir");
        match self.dovecot.layout {
            Layout::MaildirPlusPlus | Layout::Mdbox => self.mailbox_dir(mailbox),
            Layout::Dbox(d) => self.dbox_elsewhere(d, "CONTROL", mailbox),
            Layout::FsSeparateIndexControl => {
                assert!(mailbox.is_ascii(), "mUTF-7 names not supported here");
                self.home().join("control").join(mailbox)
            }
            Layout::PerUser => unreachable!("refused above"),
        }
    }

    /// The directory holding a mailbox's `dovecot.index*` files (ASCII names only).
    pub fn index_dir(&self, mailbox: &str) -> PathBuf {
        self.not_per_user("index_dir");
        match self.dovecot.layout {
            Layout::MaildirPlusPlus | Layout::Mdbox => self.mailbox_dir(mailbox),
            Layout::Dbox(d) => self.dbox_elsewhere(d, "INDEX", mailbox),
            Layout::FsSeparateIndexControl => {
                assert!(mailbox.is_ascii(), "mUTF-7 names not supported here");
                self.home().join("index").join(mailbox)
            }
            Layout::PerUser => unreachable!("refused above"),
        }
    }

    /// dbox: `<KEY>/<MAILBOXDIR>/<name>` when the location has `KEY=`, else the mailbox's
    /// mail directory.
    fn dbox_elsewhere(&self, d: DboxLayout, key: &str, mailbox: &str) -> PathBuf {
        let home = self.home();
        match d.key(&home, key) {
            Some(root) => {
                assert!(mailbox.is_ascii(), "mUTF-7 names not supported here");
                Path::new(&root).join(d.mailboxdir(&home)).join(mailbox)
            }
            None => self.mailbox_dir(mailbox),
        }
    }

    /// dbox: the `ALT=` root, if the location has one.
    pub fn alt_root(&self) -> Option<PathBuf> {
        self.not_per_user("alt_root");
        match self.dovecot.layout {
            Layout::Dbox(d) => d.key(&self.home(), "ALT").map(PathBuf::from),
            _ => None,
        }
    }

    /// sdbox: a mailbox's mail directory under `ALT=` (ASCII names only).
    pub fn alt_mailbox_dir(&self, mailbox: &str) -> PathBuf {
        let Layout::Dbox(d) = self.dovecot.layout else {
            panic!("only dbox has ALT storage");
        };
        assert!(mailbox.is_ascii(), "mUTF-7 names not supported here");
        let home = self.home();
        self.alt_root()
            .expect("the location has no ALT=")
            .join(d.mailboxdir(&home))
            .join(mailbox)
            .join(d.dirname(&home))
    }

    /// mdbox: the directories holding `m.N` files, primary first, then ALT (if any).
    pub fn storage_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.mail_root().join("storage")];
        dirs.extend(self.alt_root().map(|a| a.join("storage")));
        dirs
    }

    /// The directory holding the mdbox map index (`dovecot.map.index*`) and the `m.N` files.
    pub fn map_index_dir(&self) -> PathBuf {
        self.not_per_user("map_index_dir");
        match self.dovecot.layout {
            Layout::Dbox(d) if d.format == DboxFormat::Mdbox => {
                let home = self.home();
                d.key(&home, "INDEX")
                    .map_or_else(|| self.mail_root(), PathBuf::from)
                    .join("storage")
            }
            layout => {
                assert_eq!(layout, Layout::Mdbox, "only mdbox has a map");
                self.mail_root().join("storage")
            }
        }
    }

    /// Runs `doveadm [-o opt]... <command...> -u <user> <args...>` and returns its stdout;
    /// panics (with Dovecot's logs) on failure. `opts` are `-o key=value` settings for this
    /// command only, e.g. `mail_index_log_rotate_max_size=1`.
    pub fn adm(&self, opts: &[&str], command: &[&str], args: &[&str]) -> Vec<u8> {
        let mut all: Vec<&str> = command.to_vec();
        all.extend(["-u", self.name.as_str()]);
        all.extend_from_slice(args);
        self.dovecot.doveadm(opts, &all, None)
    }

    /// `doveadm save` with extra `-o` settings; does not look up the new UID (one doveadm
    /// call instead of two).
    pub fn save_opts(&self, opts: &[&str], mailbox: &str, message: &[u8]) {
        self.dovecot.doveadm(
            opts,
            &["save", "-u", &self.name, "-m", mailbox],
            Some(message),
        );
    }

    /// `doveadm flags <op> <flags> mailbox <mailbox> uid <set>` with `op` one of `add`,
    /// `remove`, `replace` and `set` a UID set such as `3`, `10:14` or `1,5:7`.
    pub fn flags_set(&self, opts: &[&str], op: &str, mailbox: &str, set: &str, flags: &str) {
        self.adm(
            opts,
            &["flags", op],
            &[flags, "mailbox", mailbox, "uid", set],
        );
    }

    /// `doveadm expunge mailbox <mailbox> uid <set>`.
    pub fn expunge_set(&self, opts: &[&str], mailbox: &str, set: &str) {
        self.adm(opts, &["expunge"], &["mailbox", mailbox, "uid", set]);
    }

    /// `doveadm index <mailbox>`: brings the index (and cache) up to date.
    pub fn index(&self, mailbox: &str) {
        self.adm(&[], &["index"], &[mailbox]);
    }

    /// `doveadm purge` (mdbox: removes unreferenced messages, rewrites `m.N` files).
    pub fn purge(&self) {
        self.adm(&[], &["purge"], &[]);
    }

    /// `doveadm copy <dest> mailbox <src> uid <set>`.
    pub fn copy_set(&self, dest: &str, src: &str, set: &str) {
        self.adm(&[], &["copy"], &[dest, "mailbox", src, "uid", set]);
    }

    /// UID and flags of every message, as `doveadm fetch 'uid flags'` spells them: system
    /// flags first, then keywords in keyword-index order; `\Recent` left out.
    pub fn fetch_flags(&self, mailbox: &str) -> Vec<(u32, Vec<String>)> {
        let text =
            String::from_utf8(self.adm(&[], &["fetch"], &["uid flags", "mailbox", mailbox, "all"]))
                .expect("doveadm printed non-UTF-8");
        let mut out: Vec<(u32, Vec<String>)> = Vec::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("uid: ") {
                let uid = v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad uid line {line:?}"));
                out.push((uid, Vec::new()));
            } else if let Some(v) = line.strip_prefix("flags:") {
                let last = out.last_mut().expect("flags before uid");
                last.1 = v
                    .split(' ')
                    .filter(|f| !f.is_empty() && *f != "\\Recent")
                    .map(str::to_string)
                    .collect();
            }
        }
        out
    }

    /// UID and mdbox map refcount of every message (`doveadm fetch 'uid refcount'`).
    pub fn fetch_refcounts(&self, mailbox: &str) -> Vec<(u32, u32)> {
        let text = String::from_utf8(self.adm(
            &[],
            &["fetch"],
            &["uid refcount", "mailbox", mailbox, "all"],
        ))
        .expect("doveadm printed non-UTF-8");
        let mut out = Vec::new();
        let mut uid = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("uid: ") {
                uid = Some(
                    v.parse()
                        .unwrap_or_else(|_| panic!("bad uid line {line:?}")),
                );
            } else if let Some(v) = line.strip_prefix("refcount: ") {
                let n = v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad refcount {line:?}"));
                out.push((uid.take().expect("refcount before uid"), n));
            }
        }
        out
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        self.dovecot.doveadm(&[], args, None)
    }

    fn run_text(&self, args: &[&str]) -> String {
        String::from_utf8(self.run(args)).expect("doveadm printed non-UTF-8")
    }

    pub fn create_mailbox(&self, mailbox: &str) {
        self.run(&["mailbox", "create", "-u", &self.name, mailbox]);
    }

    /// `doveadm save`; returns the UID Dovecot gave the message. The file lands in `new/`.
    pub fn save(&self, mailbox: &str, message: &[u8]) -> u32 {
        self.save_with(&[], mailbox, message)
    }

    /// Saves keeping CRLF line ends as given (`mail_save_crlf=yes`).
    pub fn save_crlf(&self, mailbox: &str, message: &[u8]) -> u32 {
        self.save_with(&["mail_save_crlf=yes"], mailbox, message)
    }

    fn save_with(&self, opts: &[&str], mailbox: &str, message: &[u8]) -> u32 {
        self.dovecot.doveadm(
            opts,
            &["save", "-u", &self.name, "-m", mailbox],
            Some(message),
        );
        self.status(mailbox).uidnext - 1
    }

    /// `doveadm flags add`, e.g. `"\\Seen $Label1 work"`.
    pub fn flags_add(&self, mailbox: &str, uid: u32, flags: &str) {
        let uid = uid.to_string();
        self.run(&[
            "flags", "add", "-u", &self.name, flags, "mailbox", mailbox, "uid", &uid,
        ]);
    }

    pub fn flags_remove(&self, mailbox: &str, uid: u32, flags: &str) {
        let uid = uid.to_string();
        self.run(&[
            "flags", "remove", "-u", &self.name, flags, "mailbox", mailbox, "uid", &uid,
        ]);
    }

    pub fn expunge(&self, mailbox: &str, uid: u32) {
        let uid = uid.to_string();
        self.run(&["expunge", "-u", &self.name, "mailbox", mailbox, "uid", &uid]);
    }

    pub fn force_resync(&self, mailbox: &str) {
        self.run(&["force-resync", "-u", &self.name, mailbox]);
    }

    /// An IMAP SELECT (through `doveadm exec imap`): drops `\Recent`, which moves every file
    /// in the mailbox's `new/` to `cur/`. ASCII mailbox names only.
    pub fn select(&self, mailbox: &str) {
        assert!(mailbox.is_ascii() && !mailbox.contains(['"', '\\', '&']));
        let script = format!("a SELECT \"{mailbox}\"\r\nb LOGOUT\r\n");
        let out = self.dovecot.doveadm_output(
            &[],
            &["exec", "imap", "-u", &self.name],
            Some(script.as_bytes()),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("a OK"),
            "IMAP SELECT {mailbox} failed:\n{text}\n{}",
            show(&out.stderr)
        );
    }

    /// `doveadm import` of mailbox `mailbox` from a `LAYOUT=fs` Maildir tree at `source`
    /// (see [`super::corpus::SourceMaildir`]) into the same-named mailbox.
    pub fn import(&self, source: &Path, mailbox: &str) {
        let (uid, gid) = self.dovecot.mail_owner();
        chown_recursive(source, uid, gid);
        let src = format!("maildir:{}:LAYOUT=fs", source.display());
        self.run(&[
            "import", "-u", &self.name, "-s", &src, "", "mailbox", mailbox, "all",
        ]);
    }

    /// `doveadm mailbox list`: every name, including parents that are not mailboxes.
    pub fn list(&self) -> Vec<String> {
        let text = self.run_text(&["mailbox", "list", "-u", &self.name]);
        let mut names: Vec<String> = text.lines().map(str::to_string).collect();
        names.sort();
        names
    }

    /// `doveadm mailbox status` of every existing (selectable) mailbox.
    pub fn statuses(&self) -> BTreeMap<String, MailboxStatus> {
        self.status_query("*")
    }

    pub fn status(&self, mailbox: &str) -> MailboxStatus {
        let mut all = self.status_query(mailbox);
        all.remove(mailbox)
            .unwrap_or_else(|| panic!("no status for {mailbox}: {all:?}"))
    }

    fn status_query(&self, pattern: &str) -> BTreeMap<String, MailboxStatus> {
        let fields = "guid uidvalidity uidnext messages";
        let out = self.dovecot.doveadm(
            &[],
            &[
                "-f", "tab", "mailbox", "status", "-u", &self.name, fields, pattern,
            ],
            None,
        );
        let text = String::from_utf8(out).expect("non-UTF-8 status");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("no {name} column"))
        };
        let (c_name, c_guid, c_uv, c_next, c_msgs) = (
            col("mailbox"),
            col("guid"),
            col("uidvalidity"),
            col("uidnext"),
            col("messages"),
        );
        lines
            .filter(|l| !l.is_empty())
            .map(|line| {
                let v: Vec<&str> = line.split('\t').collect();
                let num = |c: usize| {
                    v[c].parse()
                        .unwrap_or_else(|_| panic!("bad status {line:?}"))
                };
                let status = MailboxStatus {
                    guid: v[c_guid].to_string(),
                    uidvalidity: num(c_uv),
                    uidnext: num(c_next),
                    messages: num(c_msgs),
                };
                (v[c_name].to_string(), status)
            })
            .collect()
    }

    /// The UIDs of a mailbox (does not fetch `date.saved`, so it can be called any time).
    pub fn uids(&self, mailbox: &str) -> Vec<u32> {
        let text = self.run_text(&["fetch", "-u", &self.name, "uid", "mailbox", mailbox, "all"]);
        text.lines()
            .filter_map(|l| l.strip_prefix("uid: "))
            .map(|v| v.parse().unwrap_or_else(|_| panic!("bad uid line {v:?}")))
            .collect()
    }

    /// The GUID of one message (for Maildir without a uidlist GUID: the file's base name).
    pub fn fetch_guid(&self, mailbox: &str, uid: u32) -> String {
        let uid = uid.to_string();
        let text = self.run_text(&[
            "fetch", "-u", &self.name, "guid", "mailbox", mailbox, "uid", &uid,
        ]);
        let guid = text.lines().find_map(|l| l.strip_prefix("guid: "));
        guid.unwrap_or_else(|| panic!("no guid for {mailbox} uid {uid}: {text}"))
            .to_string()
    }

    /// The raw stored bytes of one message.
    pub fn text(&self, mailbox: &str, uid: u32) -> Vec<u8> {
        let uid = uid.to_string();
        let out = self.run(&[
            "fetch", "-u", &self.name, "text", "mailbox", mailbox, "uid", &uid,
        ]);
        match out.strip_prefix(b"text:\n") {
            Some(text) => text.to_vec(),
            None => panic!("unexpected doveadm fetch text output: {}", show(&out)),
        }
    }

    /// Everything about every message of `mailbox`, in one doveadm call.
    ///
    /// This fetches `date.saved`, which makes Dovecot cache it: call it after the last
    /// change to the mailbox.
    pub fn fetch(&self, mailbox: &str) -> Vec<Message> {
        self.fetch_set(mailbox, "all")
    }

    /// [`User::fetch`] of the messages in a UID set (`all`, `7`, `1,5:9`, ...).
    pub fn fetch_set(&self, mailbox: &str, set: &str) -> Vec<Message> {
        let fields = "uid guid flags size.physical size.virtual date.received.unixtime \
                      date.saved.unixtime text";
        let mut args = vec!["-f", "pager", "fetch", "-u", &self.name, fields];
        args.extend(["mailbox", mailbox]);
        if set != "all" {
            args.push("uid");
        }
        args.push(set);
        let out = self.dovecot.doveadm(&[], &args, None);
        parse_fetch(&out).unwrap_or_else(|e| {
            panic!(
                "cannot parse doveadm fetch output for {mailbox}: {e}\n{}",
                show(&out)
            )
        })
    }

    /// Everything about every message of `mailbox` but its text (left empty), in one
    /// doveadm call: `doveadm -f tab fetch`, one line a message, fast for large mailboxes.
    /// Fetches `date.saved` like [`User::fetch`].
    pub fn fetch_metadata(&self, mailbox: &str) -> Vec<Message> {
        let fields = "uid guid flags size.physical size.virtual date.received.unixtime \
                      date.saved.unixtime";
        let out = self.dovecot.doveadm(
            &[],
            &[
                "-f", "tab", "fetch", "-u", &self.name, fields, "mailbox", mailbox, "all",
            ],
            None,
        );
        let text = String::from_utf8(out).expect("doveadm printed non-UTF-8");
        parse_fetch_tab(&text).unwrap_or_else(|e| {
            panic!(
                "cannot parse doveadm -f tab fetch output for {mailbox}: {e}\n{}",
                show(text.as_bytes())
            )
        })
    }
}

/// Parses `doveadm -f pager fetch 'uid guid flags size.physical ... text'`.
///
/// Each record is `key: value\n` lines, then `text:\n` and exactly `size.physical` bytes;
/// records are separated by `\f\n`.
fn parse_fetch(out: &[u8]) -> Result<Vec<Message>, String> {
    let mut messages = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let mut fields = BTreeMap::new();
        loop {
            let nl = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or("unterminated field line")?;
            let line = std::str::from_utf8(&rest[..nl]).map_err(|e| e.to_string())?;
            rest = &rest[nl + 1..];
            if line == "text:" {
                break;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or(format!("bad field line {line:?}"))?;
            fields.insert(
                key.to_string(),
                value.strip_prefix(' ').unwrap_or(value).to_string(),
            );
        }
        let get = |k: &str| {
            fields
                .get(k)
                .cloned()
                .ok_or(format!("no {k} in {fields:?}"))
        };
        let num = |k: &str| -> Result<i64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("{k} is not a number in {fields:?}"))
        };
        let size = num("size.physical")? as usize;
        if rest.len() < size {
            return Err(format!(
                "text shorter than size.physical {size} in {fields:?}"
            ));
        }
        let text = rest[..size].to_vec();
        rest = &rest[size..];
        if !rest.is_empty() {
            rest = rest.strip_prefix(b"\x0c\n").ok_or(format!(
                "no \\f\\n after {size} bytes of text in {fields:?}"
            ))?;
        }
        let flags: Vec<String> = get("flags")?
            .split(' ')
            .filter(|f| !f.is_empty() && *f != "\\Recent")
            .map(str::to_string)
            .collect();
        messages.push(Message {
            uid: num("uid")? as u32,
            guid: get("guid")?,
            flags: flags.join(" "),
            size: size as u64,
            vsize: num("size.virtual")? as u64,
            received: num("date.received.unixtime")?,
            saved: num("date.saved.unixtime")?,
            text,
        });
    }
    Ok(messages)
}

/// Parses `doveadm -f tab fetch 'uid guid flags size.physical size.virtual
/// date.received.unixtime date.saved.unixtime'`: a header line naming the fields, then one
/// tab-separated line a message (none of these values holds a tab or a newline).
fn parse_fetch_tab(out: &str) -> Result<Vec<Message>, String> {
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().ok_or("no header line")?.split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("no {name} column in {header:?}"))
    };
    let (c_uid, c_guid, c_flags, c_size, c_vsize, c_received, c_saved) = (
        col("uid")?,
        col("guid")?,
        col("flags")?,
        col("size.physical")?,
        col("size.virtual")?,
        col("date.received.unixtime")?,
        col("date.saved.unixtime")?,
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let v: Vec<&str> = line.split('\t').collect();
            if v.len() != header.len() {
                return Err(format!("{} fields in {line:?}", v.len()));
            }
            let num = |c: usize| -> Result<i64, String> {
                v[c].parse()
                    .map_err(|_| format!("{} is not a number in {line:?}", header[c]))
            };
            let flags: Vec<&str> = v[c_flags]
                .split(' ')
                .filter(|f| !f.is_empty() && *f != "\\Recent")
                .collect();
            Ok(Message {
                uid: num(c_uid)? as u32,
                guid: v[c_guid].to_string(),
                flags: flags.join(" "),
                size: num(c_size)? as u64,
                vsize: num(c_vsize)? as u64,
                received: num(c_received)?,
                saved: num(c_saved)?,
                text: Vec::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{parse_fetch, parse_fetch_tab};

    #[test]
    fn parse_fetch_tab_reads_one_line_a_message() {
        let out = "uid\tguid\tflags\tsize.physical\tsize.virtual\tdate.received.unixtime\t\
            date.saved.unixtime\n1\tg1\t\\Seen \\Recent $Label1\t7\t8\t10\t11\n\
            2\tg2\t\t2\t2\t12\t13\n";
        let m = parse_fetch_tab(out).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].uid, m[0].flags.as_str(), m[0].vsize),
            (1, "\\Seen $Label1", 8)
        );
        assert_eq!(
            (m[1].guid.as_str(), m[1].flags.as_str(), m[1].saved),
            ("g2", "", 13)
        );
        assert!(parse_fetch_tab("uid\tguid\n1\n").is_err());
    }

    #[test]
    fn parse_fetch_frames_texts_by_size() {
        let out = b"uid: 1\nguid: g1\nflags: \\Seen \\Recent $Label1\nsize.physical: 7\n\
            size.virtual: 8\ndate.received.unixtime: 10\ndate.saved.unixtime: 11\ntext:\n\
            a\x0c\nb\nc\x0c\x0c\nuid: 2\nguid: g2\nflags: \nsize.physical: 2\nsize.virtual: 2\n\
            date.received.unixtime: 12\ndate.saved.unixtime: 13\ntext:\nxy";
        let m = parse_fetch(out).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].text, b"a\x0c\nb\nc\x0c");
        assert_eq!(m[0].flags, "\\Seen $Label1");
        assert_eq!(
            (m[1].uid, m[1].flags.as_str(), &m[1].text[..]),
            (2, "", &b"xy"[..])
        );
        assert!(parse_fetch(b"uid: 1\nsize.physical: 5\ntext:\nab").is_err());
    }
}
