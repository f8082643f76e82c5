//! Command line: clap arguments -> validated configuration -> engine. Exit codes are decided
//! here and nowhere else: 0 success, 1 runtime error, 2 usage error (clap's own code).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use log::{error, info, warn};

use crate::coherence::{Baselines, WatchMode, Watcher};
use crate::error::Error;
use crate::fs::naming::{self, Naming};
use crate::fs::notify::{self, Notice};
use crate::fs::open::OpenMode;
use crate::fs::{CacheTimeouts, MailFs};
use crate::location::Spec;
use crate::logging::RateLimited;
use crate::store::locks::LockMethod;
use crate::store::{
    self, MailStore, MailWriter, MailboxName, MailboxView, MessageKey, StoreConfig,
};
use crate::sys;
use crate::write::{DoveadmWriter, Endpoint, Users};

mod mount_form;
mod readiness;
mod syslog;

use readiness::Readiness;

/// Exit code for runtime errors.
const EXIT_RUNTIME: u8 = 1;

/// Exit code for usage errors (clap's own).
const EXIT_USAGE: u8 = 2;

/// Views kept parsed in memory (one per mailbox).
const VIEW_CACHE_CAPACITY: usize = 256;
/// How long an IMAP command may take before the server counts as unreachable (EIO).
const IMAP_TIMEOUT: Duration = Duration::from_secs(20);
/// IMAP sessions for reads (the change feed has one more): Dovecot allows 10 per user and
/// address by default (`mail_max_userip_connections`).
const IMAP_SESSIONS: usize = 4;

const EXAMPLES: &str = "\
Examples:
  # Browse a user's Maildir with shell tools (Ctrl-C unmounts):
  mailfs mount maildir:~/Maildir /mnt/mail
  ls -l /mnt/mail/INBOX/            # one <uid>.eml per message, mtime = received date
  grep -l 'Subject: invoice' /mnt/mail/Work/Sub/*.eml
  getfattr -d /mnt/mail/INBOX/1.eml # user.mail.uid, guid, flags, received, saved, vsize

  # LAYOUT=fs with index and control files elsewhere:
  mailfs mount maildir:/srv/mail/bob:LAYOUT=fs:INDEX=/var/idx/bob:CONTROL=/var/ctl/bob /mnt/bob

  # Every user of a multi-user tree (formats detected per user):
  mailfs mount '/var/vmail/%2.256Nu/%u' /mnt/all
  mailfs mount 'mdbox:/srv/mail/%d/%n:INDEX=/idx/%d/%n' /mnt/all

  # Without FUSE, for scripts:
  mailfs ls ~/Maildir                 # mailboxes, one per line
  mailfs ls ~/Maildir INBOX           # name uid size vsize received saved guid flags
  mailfs cat ~/Maildir 'Work/Sub' 42  # message bytes, as `doveadm fetch text`
  mailfs dump ~/Maildir/dovecot.index # index + log state, like `doveadm dump`
  mailfs dump --json ~/Maildir/dovecot.index.log

  # The mount(8) form (what `mount -t fuse.mailfs` and /etc/fstab run): every long
  # option also as -o name=value; goes to the background once the mount answers (-f:
  # stays in the foreground):
  mount -t fuse.mailfs maildir:/srv/mail/alice /mnt/alice -o allow_other,watch=poll
  # /etc/fstab:
  # maildir:/srv/mail/alice  /mnt/alice  fuse.mailfs  noauto,x-systemd.automount,allow_other  0 0

Exit status: 0 success, 1 runtime error (message on stderr), 2 usage error.";

/// Mount Dovecot mail storage read-only as a directory tree: one directory per mailbox,
/// one <uid>.eml file per message.
#[derive(Debug, Parser)]
#[command(name = "mailfs", version, after_help = EXAMPLES)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Append log lines to FILE instead of stderr (a background mount's stdout and stderr
    /// go there too). Under systemd, stderr already goes to the journal.
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "syslog")]
    log_file: Option<PathBuf>,
    /// Send log lines to syslog (/dev/log, facility daemon) instead of stderr.
    #[arg(long, global = true)]
    syslog: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the mount variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Mount LOCATION at MOUNTPOINT and serve it in the foreground (or with --background
    /// in the background) until unmounted, SIGINT or SIGTERM.
    Mount {
        /// Dovecot mail_location (maildir:/path, sdbox:/path, mdbox:/path, with keys such
        /// as :LAYOUT=fs :INDEX=.. :CONTROL=.. :ALT=..) or a bare path; %u, %n, %d make it
        /// a multi-user tree (/var/vmail/%2.256Nu/%u).
        location: String,
        /// An empty directory to mount on.
        mountpoint: PathBuf,
        /// Go to the background once the mount answers (the mount(8) form's default; -f
        /// there keeps it in the foreground). Start-up errors still go to the starter's
        /// stderr, with a non-zero exit; afterwards messages go to --log-file or --syslog,
        /// else nowhere.
        #[arg(long)]
        background: bool,
        /// The mount's source in /proc/mounts, df and findmnt [default: LOCATION].
        #[arg(long, value_name = "NAME")]
        fsname: Option<String>,
        /// The mount's type is fuse.SUBTYPE.
        #[arg(long, value_name = "SUBTYPE", default_value = "mailfs")]
        subtype: String,
        /// Mount on a directory that is not empty (its entries are hidden while mounted).
        #[arg(long)]
        nonempty: bool,
        /// Present every folder and message as owned by this user id, instead of the
        /// store's owners (with --allow-other; see --umask).
        #[arg(long, value_name = "UID")]
        uid: Option<u32>,
        /// Present every folder and message with this group id.
        #[arg(long, value_name = "GID")]
        gid: Option<u32>,
        /// Present folders as 0777 and messages as 0666 minus this octal mask (write bits
        /// always cleared), instead of the store's modes with the directories above folded
        /// in: e.g. 027 with --gid lets that group read everything, others nothing.
        #[arg(long, value_name = "OCTAL", value_parser = umask_arg)]
        umask: Option<u16>,
        /// Seconds (>= 0) the kernel may cache attributes [default: 60 with a watcher, 1
        /// with --watch off].
        #[arg(long, value_name = "S", allow_negative_numbers = true, value_parser = cache_seconds)]
        attr_timeout: Option<Duration>,
        /// Seconds (>= 0) the kernel may cache name lookups, found or not [default: 60 with
        /// a watcher, 1 with --watch off].
        #[arg(long, value_name = "S", allow_negative_numbers = true, value_parser = cache_seconds)]
        entry_timeout: Option<Duration>,
        /// How store changes reach the kernel's caches: inotify (local filesystems), poll
        /// (stat every --poll-interval; for NFS, GlusterFS and other network or FUSE
        /// filesystems, where inotify misses other clients' writes), off (only the
        /// timeouts bound staleness), auto (poll on network/FUSE filesystems, else
        /// inotify), or imap://USER@HOST[:PORT] / imaps://... (a single user's local
        /// store: Dovecot reports the changes over the user's IMAP session, NOTIFY, or
        /// IDLE and STATUS; the --password-file, --authzid and --tls-ca options apply).
        #[arg(long, default_value = "auto", value_name = "HOW", value_parser = watch_arg)]
        watch: WatchArg,
        /// Seconds between polls with --watch poll (> 0, at most 86400).
        #[arg(
            long,
            default_value = "1",
            value_name = "S",
            allow_negative_numbers = true,
            value_parser = poll_seconds
        )]
        poll_interval: Duration,
        /// Let other users access the mount (needs user_allow_other in /etc/fuse.conf
        /// unless root). Store permissions still apply.
        #[arg(long)]
        allow_other: bool,
        /// Dovecot's lock_method, so that its locks are recognised (never taken).
        #[arg(long, value_enum, default_value_t = LockArg::Fcntl)]
        lock_method: LockArg,
        /// Dovecot's mail_attachment_dir (an absolute path; no ~ or %u), for sdbox and
        /// mdbox stores saved with single-instance attachments: their messages are put
        /// back together from it. Without it such messages fail with EIO.
        #[arg(long, value_name = "DIR")]
        attachment_dir: Option<PathBuf>,
        /// Accepted for parity with Dovecot's mmap_disable: mailfs never uses mmap.
        #[arg(long)]
        mmap_disable: bool,
        /// Open and close each file and directory before trusting its attributes, as
        /// Dovecot's mail_nfs_storage does, so that an NFS client's attribute cache cannot
        /// hide another server's change (one open/close per checked path).
        #[arg(long)]
        nfs_cache_flush: bool,
        /// Also escape the characters SMB/CIFS cannot store in names (\\ * ? " < > |) as
        /// %XX, reversibly, so that the mount can be re-exported over Samba.
        #[arg(long)]
        portable_names: bool,
        /// Threads serving FUSE requests (default: the CPUs, 2 to 8; with --rw at least
        /// 16, since a change holds its thread until Dovecot answers, and concurrent
        /// changes to one mailbox are gathered into one command only if they arrive
        /// together).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
        threads: Option<usize>,
        /// How opening a message reaches mailfs: kernel (no request per open; the kernel
        /// keeps message pages; an expunged message's open file may then fail with
        /// ESTALE), held (every open holds the stored file, readable to the end after an
        /// expunge), passthrough (held, and Maildir files are handed to the kernel where
        /// Linux 6.9+ and CAP_SYS_ADMIN allow; else held).
        #[arg(long, default_value = "kernel", value_name = "MODE")]
        open_mode: OpenMode,
        /// Read-ahead across messages: when a reader goes through a mailbox's messages in
        /// UID order (grep -r, find -exec cat, rsync), up to N of the next messages are put
        /// into the kernel's page cache before it asks (FUSE_NOTIFY_STORE), so that most
        /// of its reads never wait for mailfs. 0 turns it off. Local stores with kernel or
        /// held opens only.
        #[arg(long, default_value_t = 256, value_name = "N")]
        prefetch: usize,
        /// The tree's shape: eml (MAILBOX/UID.eml) or maildir (MAILBOX/cur/ with Maildir
        /// names carrying the flags, empty new/ and tmp/, for Maildir clients: notmuch,
        /// mutt, mblaze). With --rw, renames in cur/ set flags, unlink expunges.
        #[arg(long, default_value = "eml", value_name = "LAYOUT")]
        layout: naming::Layout,
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        imap: ImapArgs,
    },
    /// List mailboxes, or the messages of MAILBOX (TAB-separated: name uid size vsize
    /// received saved guid flags). Names are shown as on the mount: '%', ':', '/' and
    /// control characters in a level as %XX.
    Ls {
        /// Dovecot mail_location or bare path.
        location: String,
        /// Dovecot's mail_attachment_dir (see `mailfs mount --attachment-dir`).
        #[arg(long, value_name = "DIR")]
        attachment_dir: Option<PathBuf>,
        /// Mailbox name with '/' between levels (UTF-8), e.g. INBOX or Work/Sub, as
        /// `mailfs ls` shows it or as it is.
        mailbox: Option<String>,
    },
    /// Decode one of Dovecot's files (dovecot.index*, *.log, *.log.2, *.cache,
    /// dovecot-uidlist, dovecot-keywords), as `doveadm dump` does. An index is shown with
    /// its log applied; it may be named even when only its log exists.
    Dump {
        /// The file.
        path: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write the manual page (roff) to stdout, or with --dir one page per command into
    /// DIR (mailfs.1, mailfs-mount.1, ...).
    Man {
        /// A directory to write every page into.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Write a shell completion script to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write one message's bytes to stdout.
    Cat {
        /// Dovecot mail_location or bare path.
        location: String,
        /// Dovecot's mail_attachment_dir (see `mailfs mount --attachment-dir`).
        #[arg(long, value_name = "DIR")]
        attachment_dir: Option<PathBuf>,
        /// Mailbox name with '/' between levels (UTF-8), as `mailfs ls` shows it or as it
        /// is.
        mailbox: String,
        /// The message: a UID, or a file name as shown on the mount (12.eml, pending-...).
        uid: String,
    },
}

/// `--watch` values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WatchArg {
    Auto,
    Inotify,
    Poll,
    Off,
    /// Changes heard from Dovecot over this IMAP account (a local store only).
    Imap(crate::location::imap::ImapUrl),
}

/// Parses `--watch`: auto, inotify, poll, off, or an imap:// / imaps:// URL.
fn watch_arg(s: &str) -> std::result::Result<WatchArg, String> {
    match s {
        "auto" => Ok(WatchArg::Auto),
        "inotify" => Ok(WatchArg::Inotify),
        "poll" => Ok(WatchArg::Poll),
        "off" => Ok(WatchArg::Off),
        _ => match crate::location::imap::ImapUrl::parse(s) {
            Ok(Some(url)) => Ok(WatchArg::Imap(url)),
            Ok(None) => Err("auto, inotify, poll, off or imap[s]://USER@HOST[:PORT]".into()),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// `--lock-method` values (Dovecot's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LockArg {
    Fcntl,
    Flock,
    Dotlock,
}

/// Kernel cache timeout when a watcher invalidates explicitly.
const WATCHED_TIMEOUT: Duration = Duration::from_secs(60);
/// Kernel cache timeout with `--watch off`: the only bound on staleness.
const UNWATCHED_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `--poll-interval`: a day (the watcher adds it to the clock).
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(86_400);

/// `--attr-timeout`, `--entry-timeout`: a number of seconds >= 0 that a `Duration` holds.
/// An error here is a usage error (exit 2).
fn cache_seconds(s: &str) -> std::result::Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| "must be a number of seconds >= 0 (e.g. 1 or 0.5)".to_string())
}

/// `--poll-interval`: a number of seconds > 0 and at most [`MAX_POLL_INTERVAL`] (also not
/// so small that it rounds to zero). An error here is a usage error (exit 2).
fn poll_seconds(s: &str) -> std::result::Result<Duration, String> {
    cache_seconds(s)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_POLL_INTERVAL)
        .ok_or_else(|| {
            format!(
                "must be a number of seconds > 0 and at most {} (e.g. 1 or 0.5)",
                MAX_POLL_INTERVAL.as_secs()
            )
        })
}

/// `--umask`: an octal mask of permission bits (at most 0777). An error here is a usage
/// error (exit 2).
fn umask_arg(s: &str) -> std::result::Result<u16, String> {
    u16::from_str_radix(s.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| "must be an octal mask of permission bits, 000 to 777 (e.g. 027)".into())
}

/// FUSE threads of a writable mount, at least: each change waits for Dovecot on its
/// thread (milliseconds), and reads must go on meanwhile.
const RW_THREADS: usize = 16;

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// Parses arguments, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    sys::keep_large_allocations_apart();
    sys::raise_open_file_limit();
    let given: Vec<OsString> = std::env::args_os().collect();
    let args = match mount_form::expand(given.clone()) {
        Ok(args) => args,
        Err(m) => {
            eprintln!("mailfs: {m}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // An unknown option that came from an -o list is named as it was given.
            if let Some(name) = mount_form::unknown_o_option(&e, &given) {
                eprintln!(
                    "mailfs: unknown mount option {name:?} (-o {name}); the options are the long \
                     options of `mailfs mount --help`, as -o name=value"
                );
                return ExitCode::from(EXIT_USAGE);
            }
            e.exit()
        }
    };
    // mailfs never writes into a store: a log file there is refused before it is opened.
    if let (Some(log), Command::Mount { location, .. }) = (&cli.log_file, &cli.command)
        && let Ok(spec) = Spec::parse(location)
        && let Some((relation, root)) = overlap(log, &spec.roots())
    {
        eprintln!(
            "mailfs: --log-file {} {relation} {}, a directory the store is read from: mailfs \
             never writes into a store; choose a log file outside it",
            resolve(log).display(),
            root.display()
        );
        return ExitCode::from(EXIT_RUNTIME);
    }
    // A background start forks now, while the process has its only thread; the parent
    // waits for the child's report and exits with it.
    let parent = match &cli.command {
        Command::Mount {
            background: true, ..
        } => match sys::daemon::fork_background() {
            Ok(sys::daemon::Forked::Parent { report, child }) => {
                return readiness::parent_exit(report, child);
            }
            Ok(sys::daemon::Forked::Child(pipe)) => Some(pipe),
            Err(e) => {
                eprintln!("mailfs: going to the background: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
        _ => None,
    };
    // A mount is a daemon: its info lines (mounts, rescans that found expunged entries)
    // are wanted. `ls`/`cat` write data to stdout and only warnings to stderr.
    // A background start (mount(8)) keeps the starter's terminal for warnings only; with
    // a log file or syslog it logs as a foreground mount does.
    let quiet = match &cli.command {
        Command::Mount { background, .. }
            if !background || cli.log_file.is_some() || cli.syslog =>
        {
            "info"
        }
        _ => "warn",
    };
    let level = match cli.verbose {
        0 => quiet,
        1 => "debug",
        _ => "trace",
    };
    if let Err(message) = install_logger(level, cli.log_file.as_deref(), cli.syslog) {
        // A background start's parent prints it.
        if !Readiness::new(parent, None).failed(EXIT_RUNTIME, &message) {
            eprintln!("mailfs: {message}");
        }
        return ExitCode::from(EXIT_RUNTIME);
    }
    let readiness = std::sync::Arc::new(Readiness::new(parent, cli.log_file.clone()));
    let result = match cli.command {
        Command::Mount {
            location,
            mountpoint,
            background: _,
            fsname,
            subtype,
            nonempty,
            uid,
            gid,
            umask,
            attr_timeout,
            entry_timeout,
            watch,
            poll_interval,
            lock_method,
            attachment_dir,
            mmap_disable: _,
            nfs_cache_flush,
            portable_names,
            allow_other,
            threads,
            open_mode,
            prefetch,
            layout,
            write,
            imap,
        } => mount(
            &location,
            &mountpoint,
            write,
            imap,
            MountOptions {
                attr_timeout,
                entry_timeout,
                watch,
                poll_interval,
                lock_method,
                attachment_dir,
                nfs_cache_flush,
                portable_names,
                allow_other,
                threads,
                open_mode,
                prefetch,
                fsname,
                subtype,
                nonempty,
                presentation: crate::fs::Presentation { uid, gid, umask },
                layout,
            },
            readiness.clone(),
        ),
        Command::Ls {
            location,
            attachment_dir,
            mailbox,
        } => ls(&location, attachment_dir.as_deref(), mailbox.as_deref()),
        Command::Dump { path, json } => dump(&path, json),
        Command::Man { dir } => man(dir.as_deref()),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "mailfs", &mut std::io::stdout());
            Ok(())
        }
        Command::Cat {
            location,
            attachment_dir,
            mailbox,
            uid,
        } => cat(&location, attachment_dir.as_deref(), &mailbox, &uid),
    };
    let (code, message) = match result {
        Ok(()) | Err(CliError::BrokenPipe) => return ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => (EXIT_USAGE, m),
        Err(e) => (EXIT_RUNTIME, e.to_string()),
    };
    // A background start's error goes to the parent, which prints it.
    if !readiness.failed(code, &message) {
        eprintln!("mailfs: {message}");
    }
    ExitCode::from(code)
}

/// Installs the logger: env_logger's filter (`level` unless RUST_LOG says otherwise), its
/// lines to stderr, to `log_file` (appended), or with `syslog` to /dev/log; every line,
/// ours and fuser's, through a per-call-site rate limit (a client can provoke some of them
/// at will: one per ioctl, one per failed request). Returns the message of a destination
/// that cannot be opened.
fn install_logger(
    level: &str,
    log_file: Option<&Path>,
    syslog: bool,
) -> std::result::Result<(), String> {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    builder.format_timestamp_millis();
    if let Some(path) = log_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("--log-file {}: {e}", path.display()))?;
        builder.target(env_logger::Target::Pipe(Box::new(file)));
    }
    let logger = builder.build();
    let max_level = logger.filter();
    let installed = if syslog {
        let logger = syslog::Syslog::connect(Path::new("/dev/log"), logger)
            .map_err(|e| format!("--syslog: /dev/log: {e}"))?;
        log::set_boxed_logger(Box::new(RateLimited::new(logger)))
    } else {
        log::set_boxed_logger(Box::new(RateLimited::new(logger)))
    };
    if installed.is_ok() {
        log::set_max_level(max_level);
    }
    Ok(())
}

/// A failed command.
#[derive(Debug)]
enum CliError {
    Store(Error),
    Msg(String),
    /// Options that do not go together (exit 2, as clap's own usage errors).
    Usage(String),
    /// stdout was closed early (`mailfs cat ... | head`): not an error.
    BrokenPipe,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Store(e) => e.fmt(f),
            CliError::Msg(m) | CliError::Usage(m) => f.write_str(m),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Store(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Msg(format!("writing output: {e}"))
        }
    }
}

type CliResult<T = ()> = std::result::Result<T, CliError>;

fn open_store(location: &str, attachment_dir: Option<&Path>) -> CliResult<Arc<dyn MailStore>> {
    Ok(store::open(
        &Spec::parse(location)?,
        StoreConfig {
            views: VIEW_CACHE_CAPACITY,
            attachment_dir: resolve_attachment_dir(attachment_dir)?,
            ..StoreConfig::default()
        },
    )?)
}

/// `--attachment-dir`, resolved once (an admin may reach it through symbolic links; the
/// paths below it never legitimately pass through one): an existing directory.
fn resolve_attachment_dir(dir: Option<&Path>) -> CliResult<Option<PathBuf>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let bad = |what: String| CliError::Usage(format!("--attachment-dir {}: {what}", dir.display()));
    if !dir.is_absolute() {
        return Err(bad(
            "give an absolute path (Dovecot's mail_attachment_dir)".into()
        ));
    }
    let resolved = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
    if !resolved.is_dir() {
        return Err(bad("not a directory".into()));
    }
    Ok(Some(resolved))
}

/// A mailbox name as `mailfs ls` prints it: each level as the mount names its directory
/// ([`Naming::folder_name`]: '%', ':', '/' and control characters as `%XX`, so that no name
/// can break the one-per-line output or drive the terminal), '/' between levels.
fn shown_name(name: &MailboxName) -> String {
    let levels: Vec<String> = name
        .0
        .iter()
        .map(|level| {
            Naming::default()
                .folder_name(level)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    levels.join("/")
}

/// The mailbox a MAILBOX argument names, with its view: the name as `mailfs ls` shows it
/// (each level unescaped), else, if no mailbox has that name, the argument as it is.
fn find_mailbox(
    store: &dyn MailStore,
    arg: &str,
) -> std::result::Result<(MailboxName, Arc<MailboxView>), CliError> {
    let literal = MailboxName::parse(arg);
    let shown: Option<Vec<String>> = literal
        .0
        .iter()
        .map(|level| {
            naming::unescape_bytes(level.as_bytes()).and_then(|b| String::from_utf8(b).ok())
        })
        .collect();
    if let Some(name) = shown.map(MailboxName).filter(|n| *n != literal) {
        match store.view(&name) {
            Ok(view) => return Ok((name, view)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let view = store.view(&literal)?;
    Ok((literal, view))
}

fn ls(location: &str, attachment_dir: Option<&Path>, mailbox: Option<&str>) -> CliResult {
    let store = open_store(location, attachment_dir)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match mailbox {
        None => {
            // A multi-user tree: each user, then that user's mailboxes as `user/name`.
            let depth = store.scope_depth();
            let mut failed = 0usize;
            for entry in store.mailboxes(&MailboxName(Vec::new()))?.iter() {
                writeln!(out, "{}", shown_name(&entry.name))?;
                if depth == 0 || entry.name.0.len() != depth {
                    continue;
                }
                match store.mailboxes(&entry.name) {
                    Ok(list) => {
                        for e in list.iter().filter(|e| e.name.0.len() > depth) {
                            writeln!(out, "{}", shown_name(&e.name))?;
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        out.flush()?;
                        eprintln!("mailfs: {}: {e}", shown_name(&entry.name));
                    }
                }
            }
            if failed > 0 {
                out.flush()?;
                return Err(CliError::Msg(format!(
                    "{failed} user(s) could not be listed"
                )));
            }
        }
        Some(mailbox) => {
            let (_, view) = find_mailbox(store.as_ref(), mailbox)?;
            let mut unreadable = 0usize;
            for meta in view.all() {
                if let Some(problem) = &meta.problem {
                    unreadable += 1;
                    eprintln!("mailfs: {problem}");
                }
                let uid = match meta.key {
                    MessageKey::Uid(u) => u.to_string(),
                    MessageKey::Pending(_) => "-".into(),
                };
                // Names, GUIDs (a Maildir file's base name) and keywords come from files
                // the store's owner writes: escaped as on the mount, so that a control
                // character can neither break the line nor reach the terminal.
                let escape = |s: &str| {
                    String::from_utf8_lossy(&Naming::default().escape_bytes(s.as_bytes()))
                        .into_owned()
                };
                writeln!(
                    out,
                    "{}\t{uid}\t{}\t{}\t{}\t{}\t{}\t{}",
                    Naming::default().message_name(&meta.key).to_string_lossy(),
                    meta.size,
                    meta.virtual_size,
                    meta.received,
                    meta.saved,
                    escape(&meta.guid_text()),
                    escape(&view.flags_string(&meta))
                )?;
            }
            if unreadable > 0 {
                out.flush()?;
                return Err(CliError::Msg(format!(
                    "{mailbox}: {unreadable} message(s) listed above cannot be read"
                )));
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `mailfs man`: the page of the whole command to stdout, or every page into `dir`.
fn man(dir: Option<&Path>) -> CliResult {
    match dir {
        Some(dir) => clap_mangen::generate_to(Cli::command(), dir).map_err(|e| {
            CliError::Msg(format!("writing manual pages into {}: {e}", dir.display()))
        }),
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            out.flush()?;
            Ok(())
        }
    }
}

fn dump(path: &Path, json: bool) -> CliResult {
    let value = crate::dump::dump(path)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", value.to_json())?;
    } else {
        out.write_all(value.to_text().as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn cat(location: &str, attachment_dir: Option<&Path>, mailbox: &str, message: &str) -> CliResult {
    let store = open_store(location, attachment_dir)?;
    let (name, view) = find_mailbox(store.as_ref(), mailbox)?;
    let key = match message.parse::<u32>() {
        Ok(uid) => Some(MessageKey::Uid(uid)),
        Err(_) => naming::parse_message_name(&OsString::from(message)),
    }
    .ok_or_else(|| CliError::Msg(format!("{message:?} is neither a UID nor a message name")))?;
    match view.get(&key) {
        None => return Err(CliError::Msg(format!("{mailbox}: no message {message}"))),
        Some(meta) => {
            if let Some(problem) = &meta.problem {
                return Err(CliError::Msg(problem.to_string()));
            }
        }
    }
    let src = store.open(&name, &view, &key)?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 128 * 1024];
    let mut pos = 0u64;
    while pos < src.len() {
        let n = src
            .read_at(&mut buf, pos)
            .map_err(|e| CliError::Msg(format!("{mailbox}/{message}: read: {e}")))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    out.flush()?;
    Ok(())
}

/// Checks the mount point before handing it to the kernel, for clear messages. A dead
/// mailfs mount left there by a killed daemon is cleared first ([`clear_dead_mount`]).
fn check_mountpoint(mountpoint: &Path, nonempty: bool) -> std::result::Result<PathBuf, CliError> {
    let msg = |what: &str| CliError::Msg(format!("mount point {}: {what}", mountpoint.display()));
    // Each round clears one dead mount, so this ends; a few rounds cover stacked ones.
    let mut rounds = 0;
    let abs = loop {
        rounds += 1;
        let meta = match std::fs::metadata(mountpoint) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && rounds <= 3 => {
                clear_dead_mount(mountpoint, &e)?;
                continue;
            }
            other => other.map_err(|e| msg(&e.to_string()))?,
        };
        if !meta.is_dir() {
            return Err(msg("not a directory"));
        }
        let abs = std::fs::canonicalize(mountpoint).map_err(|e| msg(&e.to_string()))?;
        let Some(parent) = abs.parent() else {
            return Err(msg("busy: something is already mounted there"));
        };
        let pmeta = std::fs::metadata(parent).map_err(|e| msg(&e.to_string()))?;
        if pmeta.dev() == meta.dev() {
            break abs;
        }
        // Something is mounted there. A killed daemon's mount may still answer stat from
        // the kernel's attribute cache; statfs always asks the daemon.
        match statfs_error(&abs) {
            Some(e) if e.raw_os_error() == Some(libc::ENOTCONN) && rounds <= 3 => {
                clear_dead_mount(mountpoint, &e)?;
            }
            _ => return Err(msg("busy: something is already mounted there")),
        }
    };
    if !nonempty {
        check_empty(&abs)?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| {
            CliError::Msg(format!(
                "/dev/fuse is unusable ({e}); install fuse3 and check the device's permissions, \
                 or use `mailfs ls`/`mailfs cat`"
            ))
        })?;
    Ok(abs)
}

/// Refuses a mount point with entries (they would be hidden while mounted), naming one;
/// `--nonempty` (`-o nonempty`) skips this.
fn check_empty(mountpoint: &Path) -> std::result::Result<(), CliError> {
    let first = std::fs::read_dir(mountpoint)
        .map_err(|e| CliError::Msg(format!("mount point {}: {e}", mountpoint.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .next();
    match first {
        None => Ok(()),
        Some(name) => Err(CliError::Msg(format!(
            "mount point {} is not empty (it holds {:?}); mount on an empty \
             directory, or pass --nonempty (-o nonempty) to hide its entries while \
             mounted",
            mountpoint.display(),
            name
        ))),
    }
}

/// How `statfs(path)` fails, if it does within 2 s. It runs on a helper thread: a FUSE
/// daemon that hangs would block it for good (the thread is then left behind, and the
/// mount counts as alive).
fn statfs_error(path: &Path) -> Option<std::io::Error> {
    let path = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("statfs".into())
        .spawn(move || {
            let _ = tx.send(sys::fs_magic(&path).err());
        })
        .ok()?;
    rx.recv_timeout(Duration::from_secs(2)).ok().flatten()
}

/// Clears the dead FUSE mount (its daemon was killed or crashed: `error` is ENOTCONN) on
/// `mountpoint` if the mount table shows it is one of ours (fsname `mailfs`), logging one
/// line; refuses anything else with the command that clears it.
fn clear_dead_mount(
    mountpoint: &Path,
    error: &std::io::Error,
) -> std::result::Result<(), CliError> {
    // The dead mount's root cannot be canonicalized; its parent can.
    let abs = resolve(mountpoint);
    let p = mountpoint.display();
    let refuse = |why: String| {
        CliError::Msg(format!(
            "mount point {p}: {error}: {why}; clear it with `fusermount3 -uz {p}` (or \
             `umount -l {p}` as root) and try again"
        ))
    };
    let entry = mount_table()
        .ok()
        .and_then(|table| table.into_iter().rev().find(|m| m.path == abs));
    let Some(entry) = entry else {
        return Err(refuse("a dead mount that is not in the mount table".into()));
    };
    // Ours: type fuse.mailfs (any source: the location, or --fsname), or an older
    // mailfs's type fuse with source `mailfs`.
    let ours =
        entry.fstype == "fuse.mailfs" || (entry.fstype == "fuse" && entry.source == "mailfs");
    if !ours {
        return Err(refuse(format!(
            "a dead {} mount of {:?}, not made by mailfs",
            entry.fstype, entry.source
        )));
    }
    let detached = match sys::lazy_unmount(&entry.path) {
        Ok(()) => Ok(()),
        Err(e) => fusermount_detach(&entry.path).map_err(|f| format!("{e}; {f}")),
    };
    match detached {
        Ok(()) => {
            info!(
                "cleared a dead mailfs mount on {} (its daemon was killed or crashed)",
                entry.path.display()
            );
            Ok(())
        }
        Err(e) => Err(refuse(format!(
            "a dead mailfs mount that could not be cleared ({e})"
        ))),
    }
}

/// Refuses a mount point that is, is inside, or contains one of `roots` (the directories
/// the store is read from, [`Spec::roots`]): the store would then be read through the
/// mount itself, and every worker would block on requests to its own mount. Paths are
/// compared resolved ([`resolve`]), so symlinks and `..` cannot hide an overlap.
fn check_outside_store(mountpoint: &Path, roots: &[PathBuf]) -> std::result::Result<(), CliError> {
    match overlap(mountpoint, roots) {
        Some((relation, root)) => Err(CliError::Msg(format!(
            "mount point {} {relation} {}, a directory the store is read from: mailfs would \
             read its own mount and hang; choose a mount point outside the store",
            resolve(mountpoint).display(),
            root.display()
        ))),
        None => Ok(()),
    }
}

/// How `path` overlaps the first of `roots` it does ("is", "is inside", "contains"), and
/// that root, both resolved ([`resolve`]), so symlinks and `..` cannot hide an overlap.
fn overlap(path: &Path, roots: &[PathBuf]) -> Option<(&'static str, PathBuf)> {
    let p = resolve(path);
    roots.iter().find_map(|root| {
        let r = resolve(root);
        let relation = if p == r {
            "is"
        } else if p.starts_with(&r) {
            "is inside"
        } else if r.starts_with(&p) {
            "contains"
        } else {
            return None;
        };
        Some((relation, r))
    })
}

/// `path` made absolute with symlinks resolved as far as it exists: its longest ancestor
/// that can be canonicalized, with the rest appended (a store directory Dovecot has not
/// created yet, a dead mount point).
fn resolve(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut at = abs.as_path();
    loop {
        if let Ok(mut found) = std::fs::canonicalize(at) {
            found.extend(rest.iter().rev());
            return found;
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                at = parent;
            }
            _ => return abs,
        }
    }
}

/// Write mode: changes through the mount, carried out by Dovecot's doveadm server.
#[derive(Debug, clap::Args)]
struct WriteArgs {
    /// Carry out rm, mv, cp, mkdir, rmdir, rename and setfattr through Dovecot's doveadm
    /// server (mailfs itself never writes the store). Without it every change is EROFS.
    #[arg(long)]
    rw: bool,
    /// The user whose store a single-user LOCATION is (required with --rw; a multi-user
    /// tree's first level is the user).
    #[arg(long, value_name = "NAME", requires = "rw")]
    user: Option<String>,
    /// Where the doveadm server is: its unix socket [default: doveadm-server under
    /// `doveconf -h base_dir`], tcp:HOST:PORT (doveadm_port, as directors forward it), or
    /// http(s)://HOST:PORT/doveadm/v1 (the HTTP API).
    #[arg(long, value_name = "ENDPOINT", requires = "rw")]
    doveadm: Option<String>,
    /// A file holding doveadm_password (tcp:) or the API key (http(s):; `password:PASS`
    /// for doveadm_password). Never on the command line.
    #[arg(long, value_name = "FILE", requires = "rw")]
    doveadm_secret_file: Option<PathBuf>,
    /// The users' hierarchy separator [default: learned from each user's mailbox list,
    /// else '/'].
    #[arg(long, value_name = "C", requires = "rw")]
    separator: Option<char>,
    /// The largest message cp may write (bytes); a bigger one fails with EFBIG.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, requires = "rw")]
    max_message_size: u64,
}

/// An IMAP LOCATION (`imap://USER@HOST[:PORT]`, `imaps://...`).
#[derive(Debug, clap::Args)]
struct ImapArgs {
    /// A file holding the IMAP password (else MAILFS_IMAP_PASSWORD). Never on the command
    /// line.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Log in as USER (a Dovecot master user, or any SASL PLAIN authentication identity)
    /// and read NAME's mail (the PLAIN authorization identity).
    #[arg(long, value_name = "NAME")]
    authzid: Option<String>,
    /// A PEM file of the CAs an imaps:// or STARTTLS server's certificate must chain to
    /// [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Allow sending the password unencrypted to a host that is not loopback.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Where fetched messages are kept [default: $XDG_CACHE_HOME/mailfs, or
    /// ~/.cache/mailfs].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The most bytes the message cache holds (least recently used go first).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    cache_size: u64,
}

/// `mailfs mount` options, as given.
#[derive(Debug)]
struct MountOptions {
    attr_timeout: Option<Duration>,
    entry_timeout: Option<Duration>,
    watch: WatchArg,
    poll_interval: Duration,
    lock_method: LockArg,
    /// `--attachment-dir`, as given.
    attachment_dir: Option<PathBuf>,
    nfs_cache_flush: bool,
    portable_names: bool,
    allow_other: bool,
    threads: Option<usize>,
    open_mode: OpenMode,
    /// The most messages read ahead across files (0: off).
    prefetch: usize,
    /// The source shown in the mount table (None: the location).
    fsname: Option<String>,
    /// The type shown is `fuse.SUBTYPE`.
    subtype: String,
    /// Accept a mount point that is not empty.
    nonempty: bool,
    /// The owner and mode to present instead of the store's.
    presentation: crate::fs::Presentation,
    layout: naming::Layout,
}

/// The watch mode for `arg` on a store at `root` (`None`: off).
fn watch_mode(arg: &WatchArg, interval: Duration, root: &Path) -> Option<WatchMode> {
    match arg {
        WatchArg::Off => None,
        WatchArg::Imap(_) => Some(WatchMode::Pushed {
            recheck: remote_filesystem(root).map(|kind| {
                info!(
                    "{} is on {kind}: a mailbox Dovecot reports changed is read again {} ms \
                     later (this machine's client may show the old state until its caches \
                     expire)",
                    root.display(),
                    PUSHED_RECHECK.as_millis()
                );
                PUSHED_RECHECK
            }),
        }),
        WatchArg::Inotify => Some(WatchMode::Inotify),
        WatchArg::Poll => Some(WatchMode::Poll(interval)),
        WatchArg::Auto => match remote_filesystem(root) {
            Some(kind) => {
                info!(
                    "{} is on {kind}: inotify cannot see other clients' writes there; polling \
                     every {} s (--watch poll)",
                    root.display(),
                    interval.as_secs_f64()
                );
                Some(WatchMode::Poll(interval))
            }
            None => Some(WatchMode::Inotify),
        },
    }
}

/// With `--watch imap://` on a network or FUSE filesystem, how long after Dovecot's news a
/// mailbox is read again: GlusterFS's FUSE client caches entries and attributes for 1 s
/// (its `attribute-timeout`, `entry-timeout` and md-cache defaults), so the read made when
/// the news arrives may still see the old state. NFS's attribute cache can hold longer
/// (`actimeo`); such mounts need `actimeo=1` or `noac` for this bound to hold.
const PUSHED_RECHECK: Duration = Duration::from_millis(1200);

/// The kind of network or FUSE filesystem `path` is on, if it is one.
fn remote_filesystem(path: &Path) -> Option<&'static str> {
    // Magic numbers from linux/magic.h (and the filesystems' own headers).
    match sys::fs_magic(path).ok()? {
        0x6969 => Some("NFS"),
        0x517B => Some("SMB"),
        0xFF53_4D42 => Some("CIFS"),
        0xFE53_4D42 => Some("SMB2"),
        sys::FUSE_SUPER_MAGIC => Some("a FUSE filesystem (GlusterFS, sshfs, ...)"),
        0x00C3_6400 => Some("CephFS"),
        0x0102_1997 => Some("9p"),
        0x5346_414F => Some("AFS"),
        0x0116_1970 => Some("GFS2"),
        0x7461_636F => Some("OCFS2"),
        0x0BD0_0BD0 => Some("Lustre"),
        _ => None,
    }
}

/// The writer `--rw` asks for (checked: the endpoint answers and accepts us), or the
/// read-only one.
fn writer_for(
    spec: &Spec,
    store: &Arc<dyn MailStore>,
    args: &WriteArgs,
) -> std::result::Result<Arc<dyn MailWriter>, CliError> {
    if !args.rw {
        return Ok(Arc::new(crate::store::ReadOnly));
    }
    let users = match (spec, &args.user) {
        (Spec::Single(_), Some(user)) => Users::One(user.clone()),
        (Spec::Single(_), None) => {
            return Err(CliError::Usage(
                "--rw on a single-user location needs --user NAME (whose store it is)".into(),
            ));
        }
        (Spec::Users(_), None) => Users::FirstLevel,
        (Spec::Users(_), Some(_)) => {
            return Err(CliError::Usage(
                "--user is for a single-user location; in a multi-user tree the first level \
                 is the user"
                    .into(),
            ));
        }
    };
    let endpoint = match &args.doveadm {
        Some(e) => Endpoint::parse(e).map_err(CliError::Usage)?,
        None => Endpoint::default_socket().map_err(CliError::Msg)?,
    };
    let secret = match &args.doveadm_secret_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| {
                    CliError::Msg(format!("--doveadm-secret-file {}: {e}", file.display()))
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => None,
    };
    let shown = endpoint.to_string();
    let writer = DoveadmWriter::new(endpoint, secret, users.clone(), args.separator)?;
    // Check now that the server answers and lets us in, with a harmless command.
    let probe_user = match &users {
        Users::One(user) => Some(user.clone()),
        Users::FirstLevel => store
            .mailboxes(&MailboxName(Vec::new()))
            .ok()
            .and_then(|l| l.first().map(|e| e.name.to_string())),
    };
    if let Some(user) = probe_user {
        writer.check(&user).map_err(|e| {
            CliError::Msg(format!(
                "--rw: the doveadm server {shown} does not work for us: {e}"
            ))
        })?;
    }
    Ok(Arc::new(writer))
}

/// What a mount serves: the store, who carries out its changes, how its changes are
/// watched, and how its writes are described.
struct Backend {
    store: Arc<dyn MailStore>,
    writer: Arc<dyn MailWriter>,
    mode: Option<WatchMode>,
    writes: String,
}

fn mount(
    location: &str,
    mountpoint: &Path,
    write: WriteArgs,
    imap: ImapArgs,
    opts: MountOptions,
    readiness: Arc<Readiness>,
) -> CliResult {
    // Signals are taken by one thread with sigwait(); every other thread (the watcher, the
    // notifier, the FUSE workers) is started after this and inherits the blocked mask.
    let signals = sys::block_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    let backend = match crate::location::imap::ImapUrl::parse(location)? {
        Some(url) => imap_backend(&url, &imap, &write, &opts)?,
        None => local_backend(location, mountpoint, &write, &imap, &opts)?,
    };
    serve(
        location, mountpoint, backend, write, opts, signals, readiness,
    )
}

/// A local store (a mail_location or a path), written through the doveadm server.
fn local_backend(
    location: &str,
    mountpoint: &Path,
    write: &WriteArgs,
    imap: &ImapArgs,
    opts: &MountOptions,
) -> std::result::Result<Backend, CliError> {
    let spec = Spec::parse(location)?;
    let roots = spec.roots();
    check_outside_store(mountpoint, &roots)?;
    // The filesystem the store is on decides how it is watched (the root, or a template's
    // base, as far as it exists).
    let probe = crate::location::resolve_existing(&roots[0]);
    let mode = watch_mode(&opts.watch, opts.poll_interval, &probe);
    let config = StoreConfig {
        lock_method: match opts.lock_method {
            LockArg::Fcntl => LockMethod::Fcntl,
            LockArg::Flock => LockMethod::Flock,
            LockArg::Dotlock => LockMethod::Dotlock,
        },
        nfs_cache_flush: opts.nfs_cache_flush,
        // Maildir views continue from inotify name journals only where inotify sees
        // every writer: a local filesystem, watched with inotify (an explicit --watch
        // inotify on NFS must not make views trust events that other clients' writes
        // never produce).
        journals: mode == Some(WatchMode::Inotify)
            && !opts.nfs_cache_flush
            && remote_filesystem(&probe).is_none(),
        views: VIEW_CACHE_CAPACITY,
        attachment_dir: resolve_attachment_dir(opts.attachment_dir.as_deref())?,
        ..StoreConfig::default()
    };
    let mut store = store::open(&spec, config)?;
    if let WatchArg::Imap(url) = &opts.watch {
        if !matches!(spec, Spec::Single(_)) {
            return Err(CliError::Usage(
                "--watch imap:// follows one user's store; a multi-user tree is watched with \
                 inotify or poll"
                    .into(),
            ));
        }
        let account = imap_account(url, imap)?;
        let fed = crate::store::imap::ImapFed::new(store, account, opts.poll_interval)?;
        info!(
            "changes come from IMAP {} (NOTIFY where the server has it, else IDLE on \
             INBOX and STATUS every {:?})",
            url.host, opts.poll_interval
        );
        store = Arc::new(fed);
    }
    let writer = writer_for(&spec, &store, write)?;
    let writes = if writer.accepts_changes() {
        format!(
            "through the doveadm server {}",
            write.doveadm.as_deref().unwrap_or("(Dovecot's own socket)")
        )
    } else {
        "none (read-only)".to_string()
    };
    Ok(Backend {
        store,
        writer,
        mode,
        writes,
    })
}

/// The IMAP account of `url` with the options that go with it (the password from
/// --password-file or MAILFS_IMAP_PASSWORD, never the command line).
fn imap_account(
    url: &crate::location::imap::ImapUrl,
    args: &ImapArgs,
) -> std::result::Result<crate::store::imap::pool::Account, CliError> {
    use crate::imap::{Credentials, Endpoint as ImapEndpoint, Security};
    let password = match &args.password_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| CliError::Msg(format!("--password-file {}: {e}", file.display())))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        None => std::env::var("MAILFS_IMAP_PASSWORD").map_err(|_| {
            CliError::Usage(
                "an IMAP mount needs a password: --password-file FILE or MAILFS_IMAP_PASSWORD"
                    .into(),
            )
        })?,
    };
    Ok(crate::store::imap::pool::Account {
        endpoint: ImapEndpoint {
            host: url.host.clone(),
            port: url.port,
            // imap://: STARTTLS where offered; a password in clear text only to
            // loopback, or with --insecure-plaintext.
            security: if url.tls {
                Security::Tls
            } else {
                Security::Plain
            },
            ca_file: args.tls_ca.clone(),
            allow_plaintext: args.insecure_plaintext,
        },
        credentials: Credentials {
            user: url.user.clone(),
            authzid: args.authzid.clone(),
            password,
        },
        timeout: IMAP_TIMEOUT,
    })
}

/// An IMAP account: read through the server, watched by NOTIFY, or IDLE and STATUS.
fn imap_backend(
    url: &crate::location::imap::ImapUrl,
    args: &ImapArgs,
    write: &WriteArgs,
    opts: &MountOptions,
) -> std::result::Result<Backend, CliError> {
    if write.user.is_some() || write.doveadm.is_some() || write.doveadm_secret_file.is_some() {
        return Err(CliError::Usage(
            "--user, --doveadm and --doveadm-secret-file are for local stores: an IMAP \
             mount's changes are IMAP commands of its own login"
                .into(),
        ));
    }
    let account = imap_account(url, args)?;
    let cache_dir = match &args.cache_dir {
        Some(d) => d.clone(),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .ok_or_else(|| CliError::Usage("no --cache-dir, XDG_CACHE_HOME or HOME".into()))?
            .join("mailfs"),
    };
    let config = crate::store::imap::ImapConfig {
        account,
        cache_dir,
        cache_size: args.cache_size,
        poll: opts.poll_interval,
        sessions: IMAP_SESSIONS,
    };
    let store = crate::store::imap::ImapStore::open(
        config,
        crate::store::StoreContext::new(StoreConfig {
            views: VIEW_CACHE_CAPACITY,
            ..Default::default()
        }),
    )?;
    info!("IMAP {}: logged in", store.label());
    let mode = match opts.watch {
        WatchArg::Off => None,
        WatchArg::Imap(_) => {
            return Err(CliError::Usage(
                "--watch imap:// is for local stores; an IMAP mount hears its own server".into(),
            ));
        }
        // The store pushes its changes (NOTIFY, or IDLE and STATUS); the watcher has no
        // files to watch.
        _ => Some(WatchMode::Pushed { recheck: None }),
    };
    let (writer, writes): (Arc<dyn MailWriter>, String) = if write.rw {
        (
            Arc::new(store.writer()),
            format!("IMAP commands as {}", store.label()),
        )
    } else {
        (
            Arc::new(crate::store::ReadOnly),
            "none (read-only)".to_string(),
        )
    };
    Ok(Backend {
        store: Arc::new(store),
        writer,
        mode,
        writes,
    })
}

/// Mounts `backend` and serves it until unmounted or signalled.
fn serve(
    location: &str,
    mountpoint: &Path,
    backend: Backend,
    write: WriteArgs,
    opts: MountOptions,
    signals: sys::SignalSet,
    readiness: Arc<Readiness>,
) -> CliResult {
    let Backend {
        store,
        writer,
        mode,
        writes,
    } = backend;
    let mountpoint = check_mountpoint(mountpoint, opts.nonempty)?;
    let default_timeout = if mode.is_some() {
        WATCHED_TIMEOUT
    } else {
        UNWATCHED_TIMEOUT
    };
    let timeouts = CacheTimeouts {
        attr: opts.attr_timeout.unwrap_or(default_timeout),
        entry: opts.entry_timeout.unwrap_or(default_timeout),
    };
    let (notices_tx, notices_rx) = std::sync::mpsc::channel::<Notice>();
    // Digests give the notifier no message names: only where names are keys.
    let baselines = match opts.layout {
        naming::Layout::Eml => Baselines::Digests,
        naming::Layout::Maildir => Baselines::Whole,
    };
    let watcher = match mode {
        Some(mode) => {
            let tx = notices_tx.clone();
            Some(Arc::new(
                Watcher::start(store.clone(), mode, baselines, move |change| {
                    let _ = tx.send(Notice::Store(change));
                })
                .map_err(|e| CliError::Msg(format!("starting the store watcher: {e}")))?,
            ))
        }
        None => None,
    };
    let naming = Naming {
        portable: opts.portable_names,
        layout: opts.layout,
    };
    let rw = writer.accepts_changes();

    let mut fs = MailFs::new(
        store.clone(),
        writer,
        timeouts,
        naming,
        watcher.clone(),
        opts.open_mode,
    )?;
    fs.describe("location", location);
    let shown_root = store
        .local_root()
        .map_or_else(|| location.to_string(), |r| r.display().to_string());
    fs.describe("store_root", shown_root.clone());
    fs.describe(
        "watch",
        match mode {
            Some(WatchMode::Inotify) => "inotify".to_string(),
            Some(WatchMode::Poll(d)) => format!("poll every {} s", d.as_secs_f64()),
            Some(WatchMode::Pushed { .. }) => {
                "pushed (IMAP NOTIFY, or IDLE and STATUS)".to_string()
            }
            None => "off".to_string(),
        },
    );
    fs.describe(
        "mmap",
        "never used (reads are pread; --mmap-disable changes nothing)",
    );
    fs.describe("writes", writes);
    if opts.presentation != crate::fs::Presentation::default() {
        let p = opts.presentation;
        let show = |v: Option<u32>| v.map_or_else(|| "the store's".to_string(), |v| v.to_string());
        fs.describe(
            "presentation",
            format!(
                "uid {}, gid {}, modes {}",
                show(p.uid),
                show(p.gid),
                p.umask.map_or_else(
                    || "the store's".to_string(),
                    |m| format!("0777/0666 & ~{m:03o}, write bits cleared")
                )
            ),
        );
        fs.set_presentation(p);
    }
    fs.describe("layout", opts.layout.as_str());
    if rw {
        fs.set_notices(notices_tx.clone());
        fs.set_staging_limits(crate::fs::staging::Limits {
            file: write.max_message_size,
            ..Default::default()
        });
    }
    drop(notices_tx);
    let inodes = fs.inodes();
    let notify_stats = fs.notify_stats();
    let allow_other = opts.allow_other;
    let threads = opts.threads.unwrap_or_else(|| {
        if rw {
            default_threads().max(RW_THREADS)
        } else {
            default_threads()
        }
    });

    let mut config = fuser::Config::default();
    // The subtype as a kernel option: fuser's own mount(2) (as root) drops
    // `MountOption::Subtype`, which only fusermount3 reads, and mounts type `fuse`; the
    // kernel takes `subtype=` itself (and fusermount3 reads it from the same list).
    config.mount_options = vec![
        fuser::MountOption::FSName(opts.fsname.clone().unwrap_or_else(|| location.to_string())),
        fuser::MountOption::CUSTOM(format!("subtype={}", opts.subtype)),
        if rw {
            fuser::MountOption::RW
        } else {
            fuser::MountOption::RO
        },
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoExec,
        fuser::MountOption::NoAtime,
        fuser::MountOption::DefaultPermissions,
    ];
    if allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;

    let prefetch_on = opts.prefetch > 0
        && store.local_root().is_some()
        && opts.open_mode != OpenMode::Passthrough;
    fs.describe(
        "prefetch",
        if prefetch_on {
            format!(
                "up to {} messages ahead of an in-order reader",
                opts.prefetch
            )
        } else {
            "off".to_string()
        },
    );
    let prefetch_slot = fs.prefetch_slot();
    let prefetch_store = fs.store();
    let prefetch_inodes = fs.inodes();
    let mut session = fuser::Session::new(fs, &mountpoint, &config)
        .map_err(|e| CliError::Msg(format!("mounting on {}: {e}", mountpoint.display())))?;
    if prefetch_on {
        let defaults = crate::fs::prefetch::Settings::default();
        let settings = crate::fs::prefetch::Settings {
            max_window: opts.prefetch,
            first_window: defaults.first_window.min(opts.prefetch),
            ..defaults
        };
        let prefetcher = crate::fs::prefetch::Prefetcher::spawn(
            prefetch_store,
            prefetch_inodes,
            session.notifier(),
            settings,
        )
        .map_err(|e| CliError::Msg(format!("starting the prefetch thread: {e}")))?;
        let _ = prefetch_slot.set(prefetcher);
    }
    info!(
        "mounted {} ({}) on {}, {}",
        shown_root,
        location,
        mountpoint.display(),
        if rw {
            "read-write (changes carried out by Dovecot)"
        } else {
            "read-only"
        }
    );
    info!(
        "{}; kernel caches entries {:?} and attributes {:?}",
        match mode {
            Some(WatchMode::Inotify) => "watching the store with inotify".to_string(),
            Some(WatchMode::Poll(d)) => format!("polling the store every {d:?}"),
            Some(WatchMode::Pushed { .. }) =>
                "changes pushed over IMAP (NOTIFY, or IDLE and STATUS)".to_string(),
            None => "not watching the store (--watch off)".to_string(),
        },
        timeouts.entry,
        timeouts.attr
    );
    notify::spawn(notices_rx, session.notifier(), inodes, naming, notify_stats)
        .map_err(|e| CliError::Msg(format!("starting the notifier thread: {e}")))?;
    // The mount's device, read from the mount table (a stat of the mount point would be
    // served by our own workers, which are not running yet): it finds the mount again if
    // its path changes (a parent directory renamed).
    let device = mount_table()
        .ok()
        .and_then(|table| table.into_iter().rev().find(|m| m.path == mountpoint))
        .map(|m| m.dev);
    if device.is_none() {
        warn!(
            "{} is not in /proc/self/mountinfo; if its path changes, signals cannot find it",
            mountpoint.display()
        );
    }
    let mut unmounter = session.unmount_callable();
    let mp = mountpoint.clone();
    let stopping = readiness.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = wait_for_signal(&signals);
            stopping.stopping();
            info!("signal {sig}: unmounting {}", mp.display());
            if !end_mount(&mut unmounter, &mp, device) {
                std::process::exit(EXIT_RUNTIME.into());
            }
            // Unmounted or detached: the session ends once the kernel lets go of the
            // mount (at once, or when the last open file is closed). Signals stay blocked,
            // so one more ends the process instead of being ignored.
            let sig = wait_for_signal(&signals);
            error!(
                "signal {sig} again: exiting now, without waiting for the detached mount of \
                 {} to be released",
                mp.display()
            );
            std::process::exit(EXIT_RUNTIME.into());
        })
        .map_err(|e| CliError::Msg(format!("starting the signal thread: {e}")))?;
    readiness
        .when_mounted(&mountpoint)
        .map_err(|e| CliError::Msg(format!("starting the readiness thread: {e}")))?;
    let served = session.run();
    readiness.stopping();
    served.map_err(|e| CliError::Msg(format!("FUSE session on {}: {e}", mountpoint.display())))?;
    info!("unmounted {}", mountpoint.display());
    Ok(())
}

fn wait_for_signal(set: &sys::SignalSet) -> i32 {
    loop {
        match sys::wait_signal(set) {
            Ok(sig) => return sig,
            Err(e) => error!("sigwait failed: {e}"),
        }
    }
}

/// Takes the mount off the namespace after a signal: unmounts it, else detaches it lazily
/// (where it is now: found by `device` in the mount table if its path changed), else
/// aborts the FUSE connection. Returns true when the mount is gone or detached (the session
/// then ends by itself); false when it could not be, after logging why (the caller exits).
fn end_mount(
    unmounter: &mut fuser::SessionUnmounter,
    mountpoint: &Path,
    device: Option<(u32, u32)>,
) -> bool {
    let first = match unmounter.unmount() {
        Ok(()) => return true,
        Err(e) => e,
    };
    // Where the mount is now. Not in the table (someone else unmounted it): done.
    let current = match device {
        Some(dev) => match mount_table() {
            Ok(table) => match table.into_iter().rev().find(|m| m.dev == dev) {
                Some(m) => m.path,
                None => return true,
            },
            Err(e) => {
                warn!("reading /proc/self/mountinfo: {e}");
                mountpoint.to_path_buf()
            }
        },
        None => mountpoint.to_path_buf(),
    };
    let mut last = first;
    if current != mountpoint {
        info!(
            "unmount of {} failed ({last}): the mount is now at {}; unmounting it there",
            mountpoint.display(),
            current.display()
        );
        match sys::unmount(&current) {
            Ok(()) => return true,
            Err(e) => last = e,
        }
    }
    warn!(
        "unmount of {} failed ({last}); detaching it lazily",
        current.display()
    );
    let detached = match sys::lazy_unmount(&current) {
        Ok(()) => Ok(()),
        Err(e) => fusermount_detach(&current).map_err(|f| format!("{e}; {f}")),
    };
    let problem = match detached {
        Ok(()) => return true,
        Err(problem) => problem,
    };
    match device.map(abort_connection) {
        Some(Ok(conn)) => error!(
            "could not unmount {} ({problem}); aborted its FUSE connection ({}): it \
             answers \"Transport endpoint is not connected\" until `umount -l {}`; exiting",
            current.display(),
            conn.display(),
            current.display()
        ),
        Some(Err(e)) => error!(
            "could not unmount {} ({problem}), nor abort its FUSE connection ({e}); exiting \
             (the mount then answers \"Transport endpoint is not connected\" until \
             `umount -l {}`)",
            current.display(),
            current.display()
        ),
        None => error!(
            "could not unmount {} ({problem}); exiting (the mount then answers \"Transport \
             endpoint is not connected\" until `umount -l {}`)",
            current.display(),
            current.display()
        ),
    }
    false
}

/// `fusermount3 -uz PATH`: a lazy unmount without privileges, for the mount's owner.
fn fusermount_detach(path: &Path) -> std::result::Result<(), String> {
    match std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "fusermount3 -uz: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("fusermount3: {e}")),
    }
}

/// Aborts the FUSE connection of the mount with device `dev` through fusectl; returns the
/// connection's directory.
fn abort_connection(dev: (u32, u32)) -> std::io::Result<PathBuf> {
    // fusectl names a connection by the kernel's dev_t: major << 20 | minor.
    let dir = Path::new("/sys/fs/fuse/connections").join(((dev.0 << 20) | dev.1).to_string());
    let abort = dir.join("abort");
    std::fs::write(&abort, b"1").map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "{}: {e}{}",
                abort.display(),
                if Path::new("/sys/fs/fuse/connections")
                    .read_dir()
                    .is_ok_and(|mut d| d.next().is_none())
                {
                    " (is fusectl mounted? mount -t fusectl none /sys/fs/fuse/connections)"
                } else {
                    ""
                }
            ),
        )
    })?;
    Ok(dir)
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    /// The mounted filesystem's device, `major:minor` (field 3).
    dev: (u32, u32),
    /// Where it is mounted, unescaped (field 5).
    path: PathBuf,
    /// Its type (`fuse`, `fuse.sshfs`, ...), after the `-` separator.
    fstype: String,
    /// Its source (`mailfs` for ours: the fsname).
    source: String,
}

/// This process's mount table.
fn mount_table() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Parses `/proc/self/mountinfo` (proc(5)); malformed lines are skipped.
fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(MountEntry {
                dev: (major.parse().ok()?, minor.parse().ok()?),
                path: unescape_octal(fields.get(4)?),
                fstype: unescape_octal(fields.get(dash + 1)?)
                    .to_string_lossy()
                    .into_owned(),
                source: unescape_octal(fields.get(dash + 2)?)
                    .to_string_lossy()
                    .into_owned(),
            })
        })
        .collect()
}

/// Undoes mountinfo's escapes: space, tab, newline and backslash are written `\ooo`.
fn unescape_octal(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let digits = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], digits) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `-o attachment_dir=DIR` of the mount(8) form reaches the mount as --attachment-dir,
    /// which takes an existing absolute directory, resolved.
    #[test]
    fn the_attachment_dir_option_in_both_forms() {
        let args = mount_form::expand(
            [
                "mailfs",
                "sdbox:/s",
                "/m",
                "-o",
                "ro,attachment_dir=/var/att",
            ]
            .map(OsString::from)
            .to_vec(),
        )
        .unwrap();
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Mount { attachment_dir, .. } = cli.command else {
            panic!("not a mount");
        };
        assert_eq!(attachment_dir.as_deref(), Some(Path::new("/var/att")));
        let tmp = std::env::temp_dir();
        let resolved = resolve_attachment_dir(Some(&tmp)).unwrap().unwrap();
        assert_eq!(resolved, std::fs::canonicalize(&tmp).unwrap());
        assert!(resolve_attachment_dir(Some(Path::new("relative/dir"))).is_err());
        assert!(resolve_attachment_dir(Some(Path::new("/nonexistent/mailfs/att"))).is_err());
        assert!(resolve_attachment_dir(None).unwrap().is_none());
    }

    #[test]
    fn a_mount_point_overlapping_a_store_directory_is_refused() {
        let base = std::env::temp_dir().join(format!("mailfs-cli-{}", std::process::id()));
        let store = base.join("store");
        std::fs::create_dir_all(store.join("inside")).unwrap();
        std::fs::create_dir_all(base.join("other")).unwrap();
        std::os::unix::fs::symlink(&store, base.join("link")).unwrap();
        let roots = vec![store.clone(), base.join("other/index/not-yet")];
        let refused = |mp: &Path| match check_outside_store(mp, &roots) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{} accepted", mp.display()),
        };
        let e = refused(&store.join("inside"));
        assert!(
            e.contains("is inside") && e.contains(&store.display().to_string()),
            "{e}"
        );
        assert!(refused(&store).contains(" is "));
        // Through a symlink, and with `..`: the resolved paths are compared.
        assert!(refused(&base.join("link/inside")).contains("is inside"));
        assert!(refused(&base.join("other/../store/inside")).contains("is inside"));
        // A store directory that does not exist yet, below the mount point.
        let e = refused(&base.join("other"));
        assert!(e.contains("contains") && e.contains("not-yet"), "{e}");
        assert!(refused(&base).contains("contains"));
        // Siblings are fine.
        std::fs::create_dir_all(base.join("sibling")).unwrap();
        assert!(check_outside_store(&base.join("sibling"), &roots).is_ok());
        assert!(check_outside_store(&base.join("store-2"), &roots).is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn umask_is_octal_permission_bits() {
        assert_eq!(umask_arg("027"), Ok(0o27));
        assert_eq!(umask_arg("0777"), Ok(0o777));
        assert!(umask_arg("1000").is_err());
        assert!(umask_arg("8").is_err());
        assert!(umask_arg("").is_err());
    }

    #[test]
    fn parses_mountinfo_lines() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
45 27 0:40 / /tmp/a\\040b/mnt ro,nosuid - fuse mailfs ro,user_id=0
46 27 0:41 / /x rw master:2 unbindable - fuse.sshfs me@host:/ rw
garbage
";
        let table = parse_mountinfo(text);
        assert_eq!(table.len(), 3, "{table:?}");
        assert_eq!(
            table[1],
            MountEntry {
                dev: (0, 40),
                path: PathBuf::from("/tmp/a b/mnt"),
                fstype: "fuse".into(),
                source: "mailfs".into(),
            }
        );
        assert_eq!(table[2].fstype, "fuse.sshfs");
        assert_eq!(table[2].source, "me@host:/");
        assert_eq!(
            unescape_octal("a\\134b\\012\\9"),
            PathBuf::from("a\\b\n\\9")
        );
    }
}
