//! mailfs integration tests: one binary (`cargo test --test integration`).
//!
//! Real Dovecot is the oracle: each test starts a private Dovecot master in its own
//! temporary directory, builds a store with `doveadm`, mounts it with the real mailfs binary
//! on a real FUSE mount, and compares what the mount shows with `doveadm fetch` and
//! `doveadm mailbox status`.
//!
//! Requirements: `dovecot` + `doveadm` (Debian: `dovecot-core`), `fusermount3` and a usable
//! `/dev/fuse` (Debian: `fuse3`); root for a few tests. `scripts/test.sh` installs them.
//!
//! Environment variables:
//! - `MAILFS_TEST_SKIP_MISSING=1`: when Dovecot or FUSE is missing, print `skipped: ...`
//!   and pass instead of failing. Without it a missing requirement fails the test.
//! - `MAILFS_KEEP_TMP=1`: keep each test's temporary directory (Dovecot config and logs, the
//!   store, the mount log) for inspection instead of deleting it.
//! - `MAILFS_TEST_TMPDIR=DIR`: where the temporary directories go (default
//!   `$TMPDIR/mailfs-tests`, i.e. usually `/tmp/mailfs-tests`). Keep it short: Dovecot puts
//!   unix sockets inside. The `large` tests keep the stores they build there across runs
//!   (`large-<version>-<format>-...`, about 175 MB together); delete them at will.

// Helpers: private Dovecot, mount guard, store fingerprint, corpus, comparisons.
#[macro_use]
mod util;

// The Dovecot side of the harness on its own (no mailfs involved).
mod harness;
// Mounted Maildir stores (Maildir++ and LAYOUT=fs) compared with doveadm.
mod maildir_mount;
// Multi-user templates (%u, %n, %d, %2.256Nu): one directory per user, each vs doveadm.
mod multi_user;
// LAYOUT=index (sdbox, mdbox, Maildir) and INDEXPVT= for shared Maildir, vs doveadm.
mod layouts;
// Mounted sdbox and mdbox stores (ALT, INDEX=, purge under a reader, damage) vs doveadm.
mod dbox_mount;
// sdbox and mdbox with single-instance attachments (mail_attachment_dir) vs doveadm, and
// hostile attachment references.
mod attachments;
// Mounted mbox stores (Dovecot's headers hidden, expunge rewrites, bare paths) vs doveadm.
mod mbox_mount;
// The mount never modifies the store, and refuses writes.
mod readonly;
// Broken stores and bad arguments: clear errors, EIO, never a panic or an empty listing.
mod bad_input;
// `mailfs ls` and `mailfs cat`.
mod cli;
// Start, signals and unmount; mount options.
mod lifecycle;
// The index engine against files real Dovecot wrote, phase by phase, fresh and refreshed.
mod index_golden;
// The index engine refreshing in a tight loop while doveadm writes for 30 s.
mod index_live;
// The index engine on truncated and bit-flipped index, log and cache files: no panic.
mod index_hostile;
// Changes under 60 s kernel caches: shown within a bound when watched, stale with --watch off.
mod coherence;
// Messages compressed by Dovecot's zlib plugin, every algorithm and format, vs doveadm.
mod compressed;
// --open-mode kernel|held|passthrough: bytes, zero-request opens, expunged open files.
mod open_modes;
// Views continued by what changed (index delta, Maildir name journal) vs doveadm.
mod incremental;
// Large generated mailboxes (tens of thousands of messages; Maildir, mdbox, sdbox): every
// message's metadata vs doveadm, a sample's bytes, one delivery continued into the view.
mod large;
// Shared-storage safety: locks, shrinking files, the root going away, skew, hostile names.
mod safety;
// A hostile mailbox owner: planted symbolic links, loops, parent directories under
// --allow-other, each against its raw-store negative control.
mod security;
// Write mode (--rw): rm, mv, cp, setfattr, mkdir, rmdir, rename carried out by Dovecot's
// doveadm server, on every format; rsync/tar restores; the read-only default; the mail_log
// negative control; a storm against IMAP sessions; errors; the doveadm proxy path.
mod write_mode;
// The IMAP client library (src/imap) against Dovecot's IMAP listener and tiny bad servers.
mod imap_client;
// IMAP mounts against the private Dovecot's IMAP service: equal to doveadm, coherent.
mod imap_mount;
// An IMAP mount of a server that is not Dovecot (Cyrus), against Python's imaplib.
mod imap_cyrus;
// Operations: mount(8) and fstab, background start, NOTIFY_SOCKET, uid/gid/umask, start-up
// checks, logs, install.sh and demo.sh.
mod ops;
// Clients nobody here wrote on real mounts: rsync, Python, notmuch, neomutt, mblaze.
mod clients;
