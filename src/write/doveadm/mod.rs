//! The doveadm server as a [`MailWriter`]: every change is one doveadm command, carried out
//! by Dovecot on the backend that owns the user (a director or proxy forwards it there),
//! which does the locking, index and log updates itself. mailfs writes nothing.
//!
//! Connections are pooled: a command takes an idle connection (or makes one), and puts
//! it back once answered; concurrent syscalls use concurrent connections. A connection
//! that fails is dropped and the command retried once on a fresh one, when it had not
//! been sent yet.

mod batch;
mod conn;
pub mod protocol;

pub(super) use self::conn::{Reply, base64};

use std::collections::HashMap;
use std::path::PathBuf;

use parking_lot::Mutex;

use self::batch::Batcher;
use self::conn::Conn;
use self::protocol::Outcome;
use super::http::HttpApi;
use crate::error::{Error, Refusal, Result};
use crate::store::{FlagChange, MailWriter, MailboxName};

/// Where the doveadm server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Its unix socket (pre-authenticated; root only in a default install).
    Unix(PathBuf),
    /// `tcp:HOST:PORT`: the doveadm protocol over TCP (`doveadm_port`), as directors
    /// forward it; the password is `doveadm_password`.
    Tcp { host: String, port: u16 },
    /// `http(s)://HOST:PORT/doveadm/v1`: the doveadm HTTP API (an API key or password).
    Http(String),
}

impl Endpoint {
    /// Parses `--doveadm`.
    pub fn parse(s: &str) -> std::result::Result<Endpoint, String> {
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(Endpoint::Http(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: expected tcp:HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("{s:?}: no host"));
            }
            return Ok(Endpoint::Tcp {
                host: host.to_string(),
                port,
            });
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        Err(format!(
            "{s:?}: expected a unix socket path, tcp:HOST:PORT or http(s)://HOST:PORT/doveadm/v1"
        ))
    }

    /// Dovecot's own doveadm socket: `doveadm-server` under `doveconf -h base_dir`.
    pub fn default_socket() -> std::result::Result<Endpoint, String> {
        let out = std::process::Command::new("doveconf")
            .args(["-h", "base_dir"])
            .output()
            .map_err(|e| format!("running doveconf to find Dovecot's base_dir: {e}"))?;
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || dir.is_empty() {
            return Err(format!(
                "doveconf -h base_dir failed ({}); give --doveadm",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Endpoint::Unix(PathBuf::from(dir).join("doveadm-server")))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Endpoint::Http(url) => f.write_str(url),
        }
    }
}

/// One doveadm command, as both transports express it.
#[derive(Debug, Clone)]
pub(super) enum Cmd {
    /// `mailbox list`.
    List,
    /// `expunge mailbox BOX uid SET`.
    Expunge { mailbox: String, uids: String },
    /// `move DEST mailbox BOX uid SET`.
    Move {
        from: String,
        to: String,
        uids: String,
    },
    /// `flags add|remove|replace FLAGS mailbox BOX uid SET`.
    Flags {
        verb: &'static str,
        flags: Vec<String>,
        mailbox: String,
        uids: String,
    },
    /// `fetch flags mailbox BOX uid SET`.
    FetchFlags { mailbox: String, uids: String },
    /// `save -m BOX` (the message follows).
    Save { mailbox: String },
    /// `mailbox create BOX`.
    Create { mailbox: String },
    /// `mailbox delete -e BOX`.
    Delete { mailbox: String },
    /// `mailbox rename OLD NEW`.
    Rename { from: String, to: String },
}

impl Cmd {
    /// The command's words and arguments, as `doveadm` takes them on its command line
    /// (and the doveadm protocol after the user).
    pub(super) fn args(&self) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match self {
            Cmd::List => s(&["mailbox", "list"]),
            Cmd::Expunge { mailbox, uids } => s(&["expunge", "mailbox", mailbox, "uid", uids]),
            Cmd::Move { from, to, uids } => s(&["move", to, "mailbox", from, "uid", uids]),
            Cmd::Flags {
                verb,
                flags,
                mailbox,
                uids,
            } => s(&[
                "flags",
                verb,
                &flags.join(" "),
                "mailbox",
                mailbox,
                "uid",
                uids,
            ]),
            Cmd::FetchFlags { mailbox, uids } => {
                s(&["fetch", "flags", "mailbox", mailbox, "uid", uids])
            }
            Cmd::Save { mailbox } => s(&["save", "-m", mailbox]),
            Cmd::Create { mailbox } => s(&["mailbox", "create", mailbox]),
            Cmd::Delete { mailbox } => s(&["mailbox", "delete", "-e", mailbox]),
            Cmd::Rename { from, to } => s(&["mailbox", "rename", from, to]),
        }
    }
}

/// Whose mailboxes a name is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Users {
    /// A single-user mount: every name is this user's.
    One(String),
    /// A multi-user tree: a name's first level is the user.
    FirstLevel,
}

/// How commands reach the server.
enum Transport {
    /// The doveadm protocol (unix socket or TCP), over pooled connections.
    Protocol {
        endpoint: Endpoint,
        password: Option<String>,
        idle: Mutex<Vec<Conn>>,
    },
    /// The HTTP API.
    Http(HttpApi),
}

/// What flag changes are gathered by: one change of flags to one user's mailbox.
/// (Only flag changes are gathered: the kernel runs `unlink` and `rename` in one directory
/// one at a time, under the directory's lock, so expunges and moves from one mailbox never
/// arrive together; `setxattr` holds only its file's lock.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlagsKey {
    user: String,
    mailbox: String,
    verb: &'static str,
    flags: Vec<String>,
}

/// Changes carried out by a doveadm server.
pub struct DoveadmWriter {
    transport: Transport,
    /// Concurrent flag changes to one mailbox, carried by shared commands.
    batches: Batcher<FlagsKey>,
    users: Users,
    /// Each user's hierarchy separator, as learned from its mailbox list.
    separators: Mutex<HashMap<String, char>>,
    /// A separator given on the command line (`--separator`), used for every user.
    separator: Option<char>,
}

impl std::fmt::Debug for DoveadmWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Protocol { endpoint, .. } => write!(f, "DoveadmWriter({endpoint})"),
            Transport::Http(api) => write!(f, "DoveadmWriter({})", api.url()),
        }
    }
}

/// Idle connections kept per writer.
const IDLE_KEPT: usize = 16;

impl DoveadmWriter {
    /// A writer for `endpoint` (`secret`: the doveadm password for TCP, the API key or
    /// password for HTTP) for the mailboxes of `users`; `separator` overrides the
    /// hierarchy separator learned from each user's mailbox list.
    pub fn new(
        endpoint: Endpoint,
        secret: Option<String>,
        users: Users,
        separator: Option<char>,
    ) -> Result<DoveadmWriter> {
        let transport = match endpoint {
            Endpoint::Http(url) => Transport::Http(HttpApi::new(&url, secret)?),
            endpoint => Transport::Protocol {
                endpoint,
                password: secret,
                idle: Mutex::new(Vec::new()),
            },
        };
        Ok(DoveadmWriter {
            transport,
            batches: Batcher::default(),
            users,
            separators: Mutex::new(HashMap::new()),
            separator,
        })
    }

    /// Checks that the server answers and accepts us, with a harmless command for
    /// `user` (its mailbox list): what `mailfs mount --rw` does at start-up.
    pub fn check(&self, user: &str) -> Result<()> {
        self.separator_of(user).map(|_| ())
    }

    /// Runs `cmd` for `user` (with `body` as the message for `save`); a failure the
    /// server reports becomes a refusal or an I/O error carrying Dovecot's own words.
    fn run(&self, user: &str, cmd: &Cmd, body: Option<&[u8]>) -> Result<Vec<String>> {
        let args = cmd.args();
        let what = || format!("doveadm {} (user {user})", args.join(" "));
        let reply = match &self.transport {
            Transport::Protocol {
                endpoint,
                password,
                idle,
            } => {
                let words: Vec<&str> = args.iter().map(String::as_str).collect();
                let line = protocol::command_line(user, &words);
                let mut retried = false;
                loop {
                    let pooled = idle.lock().pop();
                    let (mut conn, fresh) = match pooled {
                        Some(c) => (c, false),
                        None => (
                            self.connect(endpoint, password.as_deref())
                                .map_err(|e| unreachable(&endpoint.to_string(), e))?,
                            true,
                        ),
                    };
                    match conn.run(&line, body) {
                        Ok(reply) => {
                            let mut idle = idle.lock();
                            if idle.len() < IDLE_KEPT {
                                idle.push(conn);
                            }
                            break reply;
                        }
                        // An idle connection the server closed meanwhile: once more on a
                        // fresh one. (The server reads a command only after answering the
                        // one before, so a failed write was never run.)
                        Err(e) if !fresh && !retried && is_closed(&e) => retried = true,
                        Err(e) => return Err(unreachable(&endpoint.to_string(), e)),
                    }
                }
            }
            Transport::Http(api) => api
                .run(user, cmd, body)
                .map_err(|e| unreachable(api.url(), e))?,
        };
        match &reply.outcome {
            Outcome::Ok => Ok(reply.values),
            Outcome::Failed(code) => Err(refusal(&what(), code, &reply)),
        }
    }

    fn connect(&self, endpoint: &Endpoint, password: Option<&str>) -> std::io::Result<Conn> {
        match endpoint {
            Endpoint::Unix(path) => Conn::unix(path),
            Endpoint::Tcp { host, port } => Conn::tcp(host, *port, password.unwrap_or("")),
            Endpoint::Http(_) => unreachable!("HTTP endpoints have no protocol connection"),
        }
    }

    /// The user and Dovecot's name of mailbox `name` (levels joined by the user's
    /// hierarchy separator).
    fn locate(&self, name: &MailboxName) -> Result<(String, String)> {
        let (user, levels) = match &self.users {
            Users::One(user) => (user.clone(), &name.0[..]),
            Users::FirstLevel => match name.0.split_first() {
                Some((user, rest)) if !rest.is_empty() => (user.clone(), rest),
                _ => {
                    return Err(Error::refused(
                        Refusal::Denied,
                        format!("{name}: not a mailbox of a user"),
                    ));
                }
            },
        };
        let sep = self.separator_of(&user)?;
        if let Some(level) = levels.iter().find(|l| l.contains(sep)) {
            return Err(Error::refused(
                Refusal::Invalid,
                format!("{name}: the level {level:?} holds the hierarchy separator {sep:?}"),
            ));
        }
        Ok((user, levels.join(&sep.to_string())))
    }

    /// `user`'s hierarchy separator: `--separator`, else learned once from the user's
    /// mailbox list (a name whose parent is listed too shows it), else `/`.
    fn separator_of(&self, user: &str) -> Result<char> {
        if let Some(sep) = self.separator {
            return Ok(sep);
        }
        if let Some(sep) = self.separators.lock().get(user) {
            return Ok(*sep);
        }
        let names = self.run(user, &Cmd::List, None)?;
        let sep = infer_separator(&names).unwrap_or('/');
        self.separators.lock().insert(user.to_string(), sep);
        Ok(sep)
    }
}

/// The hierarchy separator a mailbox list shows: the one character (of `/` and `.`)
/// that splits some listed name into a listed parent and a child.
fn infer_separator(names: &[String]) -> Option<char> {
    let listed: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    ['/', '.'].into_iter().find(|&sep| {
        names.iter().any(|n| {
            n.rsplit_once(sep)
                .is_some_and(|(parent, child)| !child.is_empty() && listed.contains(parent))
        })
    })
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
    )
}

/// An endpoint that cannot be reached or refuses the login: EIO (and one log line).
fn unreachable(endpoint: &str, e: std::io::Error) -> Error {
    Error::io(
        PathBuf::from(format!("doveadm server {endpoint}")),
        std::io::Error::new(e.kind(), e.to_string()),
    )
}

/// What a failed command becomes: the errno a user understands, chosen by doveadm's exit
/// code and, where that is too coarse (a quota failure is `UNKNOWN` on the wire), by
/// Dovecot's own error text, which the error carries.
fn refusal(what: &str, code: &str, reply: &Reply) -> Error {
    let said: Vec<&str> = reply
        .log
        .iter()
        .filter(|l| l.level >= 3)
        .map(|l| l.text.as_str())
        .collect();
    let text = if said.is_empty() {
        format!("{what}: failed ({code})")
    } else {
        format!("{what}: {}", said.join("; "))
    };
    let lower = text.to_ascii_lowercase();
    let why = if lower.contains("quota") {
        Refusal::Quota
    } else if lower.contains("isn't empty") || lower.contains("not empty") {
        Refusal::NotEmpty
    } else if lower.contains("already exists") {
        Refusal::Exists
    } else {
        match code {
            "NOTFOUND" | "NOUSER" => {
                return Error::Server {
                    why: None,
                    what: text,
                };
            }
            "NOPERM" => Refusal::Denied,
            "NOTPOSSIBLE" | "DATAERR" => Refusal::NotPermitted,
            "USAGE" => Refusal::Invalid,
            _ => {
                return Error::Server {
                    why: Some(Refusal::Unavailable),
                    what: text,
                };
            }
        }
    };
    Error::Server {
        why: Some(why),
        what: text,
    }
}

/// `1,5,7:9` for a sorted list of UIDs.
fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    out.join(",")
}

impl MailWriter for DoveadmWriter {
    fn expunge(&self, mailbox: &MailboxName, uids: &[u32]) -> Result<()> {
        let (user, name) = self.locate(mailbox)?;
        let cmd = Cmd::Expunge {
            mailbox: name,
            uids: uid_set(uids),
        };
        self.run(&user, &cmd, None).map(|_| ())
    }

    fn move_message(&self, from: &MailboxName, uid: u32, to: &MailboxName) -> Result<Option<u32>> {
        let (user, src) = self.locate(from)?;
        let (to_user, dst) = self.locate(to)?;
        if to_user != user {
            return Err(Error::refused(
                Refusal::CrossesStores,
                format!("moving {from}/{uid} to another user's {to}"),
            ));
        }
        let cmd = Cmd::Move {
            from: src,
            to: dst,
            uids: uid.to_string(),
        };
        self.run(&user, &cmd, None)?;
        Ok(None)
    }

    fn change_flags(&self, mailbox: &MailboxName, uids: &[u32], change: &FlagChange) -> Result<()> {
        let (user, name) = self.locate(mailbox)?;
        let (verb, flags) = match change {
            FlagChange::Replace(f) => ("replace", f.clone()),
            FlagChange::Add(f) => ("add", f.clone()),
            FlagChange::Remove(f) => ("remove", f.clone()),
        };
        let flags = if flags.is_empty() {
            if verb != "replace" {
                return Ok(());
            }
            // No flags at all: doveadm wants at least one flag, so remove every flag and
            // keyword the messages have.
            let have = self.run(
                &user,
                &Cmd::FetchFlags {
                    mailbox: name.clone(),
                    uids: uid_set(uids),
                },
                None,
            )?;
            let mut all: Vec<String> = have
                .iter()
                .flat_map(|f| f.split(' ').map(str::to_string))
                .filter(|f| !f.is_empty() && f != "\\Recent")
                .collect();
            all.sort();
            all.dedup();
            if all.is_empty() {
                return Ok(());
            }
            let cmd = Cmd::Flags {
                verb: "remove",
                flags: all,
                mailbox: name,
                uids: uid_set(uids),
            };
            self.run(&user, &cmd, None)?;
            return Ok(());
        } else {
            flags
        };
        let run = |set: String| {
            let cmd = Cmd::Flags {
                verb,
                flags: flags.clone(),
                mailbox: name.clone(),
                uids: set,
            };
            self.run(&user, &cmd, None).map(|_| ())
        };
        // One message (a `setxattr`) joins the batch of its change; several go at once.
        match uids {
            [uid] => {
                let key = FlagsKey {
                    user: user.clone(),
                    mailbox: name.clone(),
                    verb,
                    flags: flags.clone(),
                };
                self.batches.submit(&key, *uid, |all| run(uid_set(all)))
            }
            _ => run(uid_set(uids)),
        }
    }

    fn save(&self, mailbox: &MailboxName, message: &[u8]) -> Result<Option<u32>> {
        let (user, name) = self.locate(mailbox)?;
        self.run(&user, &Cmd::Save { mailbox: name }, Some(message))?;
        Ok(None)
    }

    fn create_mailbox(&self, name: &MailboxName) -> Result<()> {
        let (user, mailbox) = self.locate(name)?;
        self.run(&user, &Cmd::Create { mailbox }, None)?;
        Ok(())
    }

    fn delete_mailbox(&self, name: &MailboxName) -> Result<()> {
        let (user, mailbox) = self.locate(name)?;
        // -e: Dovecot deletes it only if it is empty, atomically (a delivery between a
        // check and the delete must never be lost).
        self.run(&user, &Cmd::Delete { mailbox }, None)?;
        Ok(())
    }

    fn rename_mailbox(&self, from: &MailboxName, to: &MailboxName) -> Result<()> {
        let (user, old) = self.locate(from)?;
        let (to_user, new) = self.locate(to)?;
        if to_user != user {
            return Err(Error::refused(
                Refusal::CrossesStores,
                format!("renaming {from} into another user's tree"),
            ));
        }
        self.run(&user, &Cmd::Rename { from: old, to: new }, None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_refuse_the_rest() {
        assert_eq!(
            Endpoint::parse("/run/dovecot/doveadm-server"),
            Ok(Endpoint::Unix("/run/dovecot/doveadm-server".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp:mail1.example.com:2425"),
            Ok(Endpoint::Tcp {
                host: "mail1.example.com".into(),
                port: 2425
            })
        );
        assert_eq!(
            Endpoint::parse("tcp:[::1]:2425"),
            Ok(Endpoint::Tcp {
                host: "::1".into(),
                port: 2425
            })
        );
        assert!(matches!(
            Endpoint::parse("https://mx:8080/doveadm/v1"),
            Ok(Endpoint::Http(_))
        ));
        for bad in [
            "tcp:host",
            "tcp::1",
            "tcp:h:port",
            "relative/socket",
            "imap://x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 7, 8, 3]), "1:3,5,7:9");
        assert_eq!(uid_set(&[4]), "4");
    }

    #[test]
    fn separators_are_read_off_the_mailbox_list() {
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            infer_separator(&names(&["INBOX", "Work", "Work/Sub"])),
            Some('/')
        );
        assert_eq!(
            infer_separator(&names(&["INBOX", "Work", "Work.Sub"])),
            Some('.')
        );
        assert_eq!(infer_separator(&names(&["INBOX", "a.b"])), None);
    }
}
