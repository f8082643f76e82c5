//! mailfs: mount Dovecot mail storage read-only as a plain directory tree.
//!
//! Layers, each depending only on the ones below it (see `docs/ARCHITECTURE.md`):
//!
//! - [`cli`]: arguments, exit codes, mounting and signal handling;
//! - [`fs`]: the FUSE presentation (directories, `<uid>.eml` files, xattrs, inode numbers);
//! - [`coherence`]: watches the store and reports what changed since the kernel saw it;
//! - [`store`]: one engine per storage format, producing immutable mailbox views;
//! - [`write`]: changes carried out by Dovecot (its doveadm server), beside `store`;
//! - [`imap`]: a blocking IMAP4rev1 client session (TLS, QRESYNC, IDLE), beside `write`;
//! - [`location`]: Dovecot `mail_location` strings;
//! - [`format`]: pure parsers of Dovecot's on-disk formats (no I/O);
//! - [`sys`]: the system calls beyond `std` (opens that refuse symbolic links, directory
//!   streams, inotify, signals, unmounting, ...), each `unsafe` with its SAFETY note: the
//!   only module with `unsafe` code (`unsafe_code` is denied everywhere else);
//! - [`logging`]: the per-call-site rate limit around the logger.
//!
//! `fuser` is used only by `fs` and `cli`.

#![deny(unsafe_code)]

pub mod cli;
pub mod coherence;
pub mod dump;
pub mod error;
pub mod format;
pub mod fs;
pub mod imap;
pub mod index;
pub mod location;
pub mod logging;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod write;
