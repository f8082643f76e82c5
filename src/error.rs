//! The crate's error type: every failure carries the path or name it concerns, so that one
//! log line is enough for an admin to act on it.
//!
//! The FUSE layer maps these to errno values in exactly one place (`fs::errno`); the CLI maps
//! them to exit codes in exactly one place (`cli::main`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::format::FormatError;

/// Why a path with a symbolic link in it is not read.
pub const SYMLINK_REFUSED: &str = "is or passes through a symbolic link; mailfs follows no \
     symbolic links inside a store (docs/semantics.md, \"Symbolic links\")";

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading a store.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call on `path` failed.
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file's contents violate its format.
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// Where and what.
        source: FormatError,
    },
    /// The store's layout is not what the location says (a file where a directory should be,
    /// a missing `cur/`, an empty root, ...).
    Layout {
        /// The path concerned.
        path: PathBuf,
        /// What was expected.
        what: String,
    },
    /// A `mail_location` string that cannot be used.
    Location {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        what: String,
    },
    /// A message that is listed but cannot be read (its stored bytes are damaged).
    Unreadable {
        /// What is wrong, with the file concerned.
        what: String,
    },
    /// A mailbox or message that does not exist (any more).
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A change the server that owns the store refused or failed, in its own words
    /// (`why` `None`: it says there is no such mailbox or message). Logged, once.
    Server {
        /// Why, if not "not found".
        why: Option<Refusal>,
        /// The command and what the server said.
        what: String,
    },
    /// A change that cannot be made, and why (one errno each: see [`Refusal`]).
    Refused {
        /// Why.
        why: Refusal,
        /// The change, and whoever refused it with their own words.
        what: String,
    },
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The mount is read-only (EROFS).
    ReadOnly,
    /// A mailbox that still has messages or children (ENOTEMPTY).
    NotEmpty,
    /// A directory where a message was expected (EISDIR).
    IsDirectory,
    /// A message where a directory was expected (ENOTDIR).
    NotDirectory,
    /// The target name exists (EEXIST).
    Exists,
    /// Not possible now (EBUSY): e.g. a message Dovecot has not given a UID yet.
    Busy,
    /// Not a change this mount can express (EINVAL).
    Invalid,
    /// Not permitted (EACCES).
    Denied,
    /// Over quota (EDQUOT).
    Quota,
    /// Between stores that are not one (EXDEV).
    CrossesStores,
    /// Not supported here (EOPNOTSUPP).
    Unsupported,
    /// The owner does not allow it (EPERM): e.g. deleting INBOX.
    NotPermitted,
    /// The owner could not do it now (EIO): unreachable, temporary failure.
    Unavailable,
    /// A message larger than the mount accepts (EFBIG).
    TooLarge,
    /// No room left to stage a message (ENOSPC).
    NoSpace,
}

impl Error {
    /// Wraps an I/O error with the path it concerns. A symbolic link refused by
    /// [`crate::sys`] becomes a layout error that says so.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        if crate::sys::is_symlink_refusal(&source) {
            return Error::layout(path, SYMLINK_REFUSED);
        }
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupt file.
    pub fn corrupt(path: impl Into<PathBuf>, source: FormatError) -> Self {
        Error::Corrupt {
            path: path.into(),
            source,
        }
    }

    /// A layout problem at `path`.
    pub fn layout(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Layout {
            path: path.into(),
            what: what.into(),
        }
    }

    /// A refused change.
    pub fn refused(why: Refusal, what: impl Into<String>) -> Self {
        Error::Refused {
            why,
            what: what.into(),
        }
    }

    /// Something that does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// True when the error means "no such thing" rather than "something is broken".
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// The same error again (for a second caller waiting on one result): the same
    /// variant and words; an I/O error keeps its kind.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Corrupt { path, source } => Error::Corrupt {
                path: path.clone(),
                source: source.clone(),
            },
            Error::Layout { path, what } => Error::layout(path.clone(), what.clone()),
            Error::Location { location, what } => Error::Location {
                location: location.clone(),
                what: what.clone(),
            },
            Error::Unreadable { what } => Error::Unreadable { what: what.clone() },
            Error::NotFound { what } => Error::not_found(what.clone()),
            Error::Server { why, what } => Error::Server {
                why: *why,
                what: what.clone(),
            },
            Error::Refused { why, what } => Error::refused(*why, what.clone()),
        }
    }

    /// The path the error concerns, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. } | Error::Corrupt { path, .. } | Error::Layout { path, .. } => {
                Some(path)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    /// Control characters (which a mailbox owner can put in names, and so in paths) are
    /// written as `\xNN`: errors reach terminals and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::Io { path, source } => format!("{}: {source}", path.display()),
            Error::Corrupt { path, source } => format!("{}: corrupt: {source}", path.display()),
            Error::Layout { path, what } => format!("{}: {what}", path.display()),
            Error::Location { location, what } => {
                format!("mail location {location:?}: {what}")
            }
            Error::NotFound { what } => format!("{what}: not found"),
            Error::Unreadable { what } => what.clone(),
            Error::Server { what, .. } => what.clone(),
            Error::Refused { why, what } => match why {
                Refusal::ReadOnly => format!("{what}: the mount is read-only"),
                _ => format!("{what}: refused ({why:?})"),
            },
        };
        f.write_str(&crate::logging::escape_controls(&text))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Corrupt { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_escapes_control_characters_of_names() {
        let e = Error::layout("/srv/mail/.evil\x1b[2J\nx", "not a directory");
        let shown = e.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("evil\\x1b[2J\\x0ax"), "{shown}");
    }
}
