//! The FUSE layer against a store kept in memory (`store::memory`) and a writer that
//! records what it is asked: names, attributes, listings, xattrs, reads by inode, and what
//! each change syscall becomes, without Dovecot or a mount. The integration tests cover
//! the same paths end to end against the real backends.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use parking_lot::Mutex;

use super::inode::{Node, ROOT_INO};
use super::naming::Naming;
use super::open::OpenMode;
use super::{CacheTimeouts, MailFs};
use crate::error::{Error, Result};
use crate::format::MailFlags;
use crate::store::memory::{MemoryStore, OWNER};
use crate::store::{FlagChange, MailWriter, MailboxName, MessageKey, ReadOnly};

/// What a [`Recorder`] was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Expunge(String, Vec<u32>),
    Move(String, u32, String),
    Flags(String, Vec<u32>, FlagChange),
    Create(String),
    Delete(String),
    Rename(String, String),
    Save(String, u32),
}

/// A writer that records calls and carries out creations on the memory store, so that
/// a `mkdir` can be looked up right after.
#[derive(Debug)]
struct Recorder {
    store: Arc<MemoryStore>,
    calls: Mutex<Vec<Call>>,
}

impl MailWriter for Recorder {
    fn expunge(&self, mailbox: &MailboxName, uids: &[u32]) -> Result<()> {
        self.calls
            .lock()
            .push(Call::Expunge(mailbox.to_string(), uids.to_vec()));
        Ok(())
    }
    fn move_message(&self, from: &MailboxName, uid: u32, to: &MailboxName) -> Result<Option<u32>> {
        self.calls
            .lock()
            .push(Call::Move(from.to_string(), uid, to.to_string()));
        Ok(None)
    }
    fn change_flags(&self, mailbox: &MailboxName, uids: &[u32], change: &FlagChange) -> Result<()> {
        self.calls.lock().push(Call::Flags(
            mailbox.to_string(),
            uids.to_vec(),
            change.clone(),
        ));
        Ok(())
    }
    fn save(&self, mailbox: &MailboxName, message: &[u8]) -> Result<Option<u32>> {
        let uid = self
            .store
            .save(&mailbox.to_string(), message, MailFlags::default());
        self.calls.lock().push(Call::Save(mailbox.to_string(), uid));
        Ok(Some(uid))
    }
    fn create_mailbox(&self, name: &MailboxName) -> Result<()> {
        self.calls.lock().push(Call::Create(name.to_string()));
        self.store.create(&name.to_string(), 99);
        Ok(())
    }
    fn delete_mailbox(&self, name: &MailboxName) -> Result<()> {
        self.calls.lock().push(Call::Delete(name.to_string()));
        Ok(())
    }
    fn rename_mailbox(&self, from: &MailboxName, to: &MailboxName) -> Result<()> {
        self.calls
            .lock()
            .push(Call::Rename(from.to_string(), to.to_string()));
        Ok(())
    }
}

const TIMEOUTS: CacheTimeouts = CacheTimeouts {
    entry: Duration::from_secs(60),
    attr: Duration::from_secs(60),
};

/// A store with INBOX (two messages, the first seen), Work and Work/Sub (one message),
/// and Empty; a filesystem over it with `writer`.
fn setup(
    writer: impl FnOnce(Arc<MemoryStore>) -> Arc<dyn MailWriter>,
) -> (Arc<MemoryStore>, MailFs) {
    let store = Arc::new(MemoryStore::default());
    store.create("INBOX", 7);
    store.save("INBOX", b"Subject: one\n\nfirst\n", MailFlags::SEEN);
    store.save(
        "INBOX",
        b"Subject: two\n\nsecond message\n",
        MailFlags::default(),
    );
    store.create("Work/Sub", 8);
    store.save("Work/Sub", b"Subject: deep\n\n", MailFlags::FLAGGED);
    store.create("Empty", 9);
    let fs = MailFs::new(
        store.clone(),
        writer(store.clone()),
        TIMEOUTS,
        Naming::default(),
        None,
        OpenMode::Held,
    )
    .unwrap();
    (store, fs)
}

fn recording() -> (Arc<MemoryStore>, MailFs, Arc<Recorder>) {
    let mut rec = None;
    let (store, fs) = setup(|store| {
        let r = Arc::new(Recorder {
            store,
            calls: Mutex::new(Vec::new()),
        });
        rec = Some(r.clone());
        r
    });
    (store, fs, rec.expect("made"))
}

fn name(s: &str) -> MailboxName {
    MailboxName::parse(s)
}

fn listed(fs: &MailFs, folder: &str) -> Vec<String> {
    let folder = Arc::new(name(folder));
    let node = Node::Folder(folder.clone());
    let ino = fs.inodes.remember(&node);
    let listing = fs.list(ino, &folder).unwrap();
    fs.entries_from(&listing, 0)
        .map(|(_, e)| e.name.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn names_attributes_and_listings_come_from_the_store() {
    let (_store, fs) = setup(|_| Arc::new(ReadOnly));
    let root = name("");
    assert_eq!(listed(&fs, ""), [".", "..", "Empty", "INBOX", "Work"]);
    assert_eq!(listed(&fs, "INBOX"), [".", "..", "1.eml", "2.eml"]);
    assert_eq!(listed(&fs, "Work"), [".", "..", "Sub"]);
    let (node, attr) = fs.resolve(&name("INBOX"), OsStr::new("2.eml")).unwrap();
    assert!(matches!(
        node,
        Node::Message {
            key: MessageKey::Uid(2),
            ..
        }
    ));
    assert_eq!(attr.size, b"Subject: two\n\nsecond message\n".len() as u64);
    assert_eq!(attr.mtime, UNIX_EPOCH + Duration::from_secs(1_700_000_002));
    assert_eq!(attr.perm, OWNER.mode & !0o222);
    let (node, attr) = fs.resolve(&root, OsStr::new("Work")).unwrap();
    assert!(matches!(node, Node::Folder(_)));
    assert_eq!(attr.kind, fuser::FileType::Directory);
    assert!(
        fs.resolve(&name("INBOX"), OsStr::new("3.eml"))
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        fs.resolve(&root, OsStr::new("Nope"))
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn a_message_expunged_in_the_store_is_gone_from_the_mount() {
    let (store, fs) = setup(|_| Arc::new(ReadOnly));
    let (node, _) = fs.resolve(&name("INBOX"), OsStr::new("1.eml")).unwrap();
    let ino = fs.inodes.remember(&node);
    assert!(fs.attr_of(ino, &node).is_ok());
    store.expunge("INBOX", 1);
    assert!(fs.attr_of(ino, &node).unwrap_err().is_not_found());
    assert_eq!(listed(&fs, "INBOX"), [".", "..", "2.eml"]);
}

#[test]
fn xattrs_and_reads_by_inode() {
    let (_store, fs) = setup(|_| Arc::new(ReadOnly));
    let (node, _) = fs.resolve(&name("INBOX"), OsStr::new("1.eml")).unwrap();
    let attrs = fs.xattrs(&node).unwrap();
    let get = |n: &str| {
        attrs
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(get("user.mail.uid").as_deref(), Some("1"));
    assert_eq!(get("user.mail.flags").as_deref(), Some("\\Seen"));
    assert_eq!(get("user.mail.guid").as_deref(), Some("guid-1"));
    let ino = fs.inodes.remember(&node);
    let src = fs.source_by_inode(ino).unwrap();
    let bytes = super::open::read_message(&src, 0, 4096, |b| b.to_vec()).unwrap();
    assert_eq!(bytes, b"Subject: one\n\nfirst\n");
    let folder = Node::Folder(Arc::new(name("Work/Sub")));
    let attrs = fs.xattrs(&folder).unwrap();
    assert!(
        attrs
            .iter()
            .any(|(k, v)| *k == "user.mailbox.uidvalidity" && v == b"8")
    );
    let root = fs.xattrs(&Node::Folder(Arc::new(name("")))).unwrap();
    assert!(root.iter().any(|(k, _)| *k == "user.mailfs.status"));
    // Answered by name, never listed (backups of an unchanged store are no-ops).
    assert!(!super::xattrs::listed("user.mailfs.status"));
    assert!(super::xattrs::listed("user.mail.flags"));
    assert_eq!(fs.inodes.get(ROOT_INO), Some(Node::root()));
}

#[test]
fn changes_become_writer_calls() {
    let (_store, fs, rec) = recording();
    let calls = || rec.calls.lock().clone();
    fs.remove_message(&name("INBOX"), OsStr::new("2.eml"), 1)
        .unwrap();
    assert_eq!(
        calls().last(),
        Some(&Call::Expunge("INBOX".into(), vec![2]))
    );

    // rmdir never deletes mail, nor a folder with folders below it.
    let refused = |r: Result<()>| match r {
        Err(Error::Refused { why, .. }) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    use crate::error::Refusal;
    assert_eq!(
        refused(fs.remove_folder(&name(""), OsStr::new("INBOX"))),
        Refusal::NotEmpty
    );
    assert_eq!(
        refused(fs.remove_folder(&name(""), OsStr::new("Work"))),
        Refusal::NotEmpty
    );
    fs.remove_folder(&name(""), OsStr::new("Empty")).unwrap();
    assert_eq!(calls().last(), Some(&Call::Delete("Empty".into())));
    assert_eq!(
        refused(fs.remove_folder(&name("INBOX"), OsStr::new("1.eml"))),
        Refusal::NotDirectory
    );

    // mkdir creates, and the new folder can be looked up at once.
    let (node, attr) = fs
        .make_folder(&name("Work"), OsStr::new("Neu %25"))
        .unwrap();
    assert_eq!(calls().last(), Some(&Call::Create("Work/Neu %".into())));
    assert!(matches!(node, Node::Folder(_)));
    assert_eq!(attr.kind, fuser::FileType::Directory);
    for bad in ["x.eml", "a%2Fb", "%2E%2E", "%zz"] {
        assert_eq!(
            refused(fs.make_folder(&name(""), OsStr::new(bad)).map(|_| ())),
            Refusal::Invalid,
            "{bad}"
        );
    }

    // mv: a message to another mailbox moves it; inside its mailbox it is refused.
    fs.rename_entry(
        &name("INBOX"),
        OsStr::new("1.eml"),
        &name("Work/Sub"),
        OsStr::new("1.eml"),
        0,
        false,
    )
    .unwrap();
    assert_eq!(
        calls().last(),
        Some(&Call::Move("INBOX".into(), 1, "Work/Sub".into()))
    );
    assert_eq!(
        refused(fs.rename_entry(
            &name("INBOX"),
            OsStr::new("1.eml"),
            &name("INBOX"),
            OsStr::new("5.eml"),
            0,
            false
        )),
        Refusal::Invalid
    );
    assert_eq!(
        refused(fs.rename_entry(
            &name("INBOX"),
            OsStr::new("1.eml"),
            &name("Work"),
            OsStr::new("1.eml"),
            0,
            false
        )),
        Refusal::Invalid,
        "Work is a plain level, not a mailbox"
    );
    fs.rename_entry(
        &name(""),
        OsStr::new("Work"),
        &name(""),
        OsStr::new("Job"),
        0,
        false,
    )
    .unwrap();
    assert_eq!(
        calls().last(),
        Some(&Call::Rename("Work".into(), "Job".into()))
    );

    // setfattr.
    let (node, _) = fs.resolve(&name("INBOX"), OsStr::new("1.eml")).unwrap();
    fs.set_xattr(&node, OsStr::new("user.mail.flags"), b"\\Seen $Label1")
        .unwrap();
    assert_eq!(
        calls().last(),
        Some(&Call::Flags(
            "INBOX".into(),
            vec![1],
            FlagChange::Replace(vec!["\\Seen".into(), "$Label1".into()])
        ))
    );
    fs.set_xattr(&node, OsStr::new("user.mail.flags.remove"), b"\\Seen")
        .unwrap();
    assert_eq!(
        calls().last(),
        Some(&Call::Flags(
            "INBOX".into(),
            vec![1],
            FlagChange::Remove(vec!["\\Seen".into()])
        ))
    );
    assert_eq!(
        refused(fs.set_xattr(&node, OsStr::new("user.mail.guid"), b"x")),
        Refusal::Unsupported
    );
}

#[test]
fn a_read_only_mount_refuses_every_change_with_erofs() {
    let (_store, fs) = setup(|_| Arc::new(ReadOnly));
    let erofs = |r: Result<()>| fs.errors.errno("test", &r.unwrap_err());
    assert_eq!(
        erofs(fs.remove_message(&name("INBOX"), OsStr::new("1.eml"), 1)),
        fuser::Errno::EROFS
    );
    assert_eq!(
        erofs(fs.remove_folder(&name(""), OsStr::new("Empty"))),
        fuser::Errno::EROFS
    );
    assert_eq!(
        erofs(fs.make_folder(&name(""), OsStr::new("New")).map(|_| ())),
        fuser::Errno::EROFS
    );
    let (node, _) = fs.resolve(&name("INBOX"), OsStr::new("1.eml")).unwrap();
    assert_eq!(
        erofs(fs.set_xattr(&node, OsStr::new("user.mail.flags"), b"\\Seen")),
        fuser::Errno::EROFS
    );
    assert_eq!(fs.errors.eio_count(), 0);
}

/// `mv a/2.eml b/` leaves the message in b under the UID Dovecot gave it; `mv` then stats
/// `b/2.eml` (and fails if it is not there). The target name answers as a ghost of the
/// moved message, unlisted, until a message gets that name: then the message wins, and
/// expunging it takes the ghost along.
#[test]
fn a_moved_message_answers_under_its_target_name_until_a_message_takes_it() {
    let (store, fs, rec) = recording();
    let empty = fs.inodes.remember(&Node::Folder(Arc::new(name("Empty"))));
    // The kernel looked the message up (and keeps that inode under the new name).
    let (source, _) = fs.resolve(&name("INBOX"), OsStr::new("2.eml")).unwrap();
    let moved_ino = fs.inodes.remember(&source);
    fs.rename_entry(
        &name("INBOX"),
        OsStr::new("2.eml"),
        &name("Empty"),
        OsStr::new("2.eml"),
        empty,
        false,
    )
    .unwrap();
    assert_eq!(
        rec.calls.lock().last(),
        Some(&Call::Move("INBOX".into(), 2, "Empty".into()))
    );
    let (node, attr) = fs.resolve(&name("Empty"), OsStr::new("2.eml")).unwrap();
    assert!(matches!(node, Node::Staged(_)), "{node:?}");
    assert_eq!(attr.size, b"Subject: two\n\nsecond message\n".len() as u64);
    assert_eq!(listed(&fs, "Empty"), [".", ".."], "a ghost is not listed");
    let held = fs.inodes.get(moved_ino).expect("still held");
    assert_eq!(
        fs.attr_of(moved_ino, &held)
            .expect("the renamed inode answers")
            .size,
        attr.size
    );

    // A message that gets the name is what the name shows.
    store.save("Empty", b"Subject: a\n\n", MailFlags::default());
    store.save("Empty", b"Subject: b\n\n", MailFlags::default());
    let (node, _) = fs.resolve(&name("Empty"), OsStr::new("2.eml")).unwrap();
    assert!(
        matches!(
            node,
            Node::Message {
                key: MessageKey::Uid(2),
                ..
            }
        ),
        "{node:?}"
    );
    fs.remove_message(&name("Empty"), OsStr::new("2.eml"), 1)
        .unwrap();
    assert_eq!(
        rec.calls.lock().last(),
        Some(&Call::Expunge("Empty".into(), vec![2]))
    );
    store.expunge("Empty", 2);
    assert!(
        fs.resolve(&name("Empty"), OsStr::new("2.eml"))
            .unwrap_err()
            .is_not_found(),
        "the ghost went with the message"
    );
}

/// `tar -x` restoring `10.eml` then `2.eml` into a mailbox: the first becomes UID 2, and
/// tar unlinks the `2.eml` in its way before writing its own. The process that saved a
/// message cannot expunge it by its UID name within the minute (EBUSY); anyone else can,
/// and the same process can still remove messages that were there before its saves.
#[test]
fn a_process_cannot_expunge_what_it_just_saved_under_another_name() {
    let (_store, fs, rec) = recording();
    let inbox = Arc::new(name("INBOX"));
    let tar = 4242;
    let staged = fs
        .create_staged(&inbox, OsStr::new("10.eml"), (0, 0), tar)
        .unwrap();
    fs.staging
        .write(&staged, 0, b"Subject: restored\n\n")
        .unwrap();
    fs.flush_staged(&staged, tar).unwrap();
    assert_eq!(
        rec.calls.lock().last(),
        Some(&Call::Save("INBOX".into(), 3))
    );
    match fs.remove_message(&inbox, OsStr::new("3.eml"), tar) {
        Err(Error::Refused { why, .. }) => assert_eq!(why, crate::error::Refusal::Busy),
        other => panic!("expected EBUSY, got {other:?}"),
    }
    assert_eq!(
        rec.calls.lock().last(),
        Some(&Call::Save("INBOX".into(), 3))
    );
    fs.remove_message(&inbox, OsStr::new("1.eml"), tar).unwrap();
    assert_eq!(
        rec.calls.lock().last(),
        Some(&Call::Expunge("INBOX".into(), vec![1]))
    );
    fs.remove_message(&inbox, OsStr::new("3.eml"), tar + 1)
        .unwrap();
    assert_eq!(
        rec.calls.lock().last(),
        Some(&Call::Expunge("INBOX".into(), vec![3]))
    );
}

/// A new file is saved by its writer's close: not by the shell's close of the spare
/// descriptor it `dup2()`ed before anything was written, not by another process's close
/// of an inherited descriptor (a child's exec, a command of `( a; b ) > file` exiting),
/// and what no writer's close saved is saved at the last release. (The thread ids here
/// name no live process, so each is a process of its own.)
#[test]
fn only_the_writers_close_or_the_last_release_saves_a_new_file() {
    let (_store, fs, rec) = recording();
    let inbox = Arc::new(name("INBOX"));
    let (shell, child) = (4_000_001, 4_000_002);
    let saves = || {
        rec.calls
            .lock()
            .iter()
            .filter(|c| matches!(c, Call::Save(..)))
            .count()
    };
    let f = fs
        .create_staged(&inbox, OsStr::new("redirected.eml"), (0, 0), shell)
        .unwrap();
    fs.flush_staged(&f, shell).unwrap(); // the spare descriptor, nothing written yet
    assert_eq!(saves(), 0, "an empty close saves nothing");
    fs.staging.write(&f, 0, b"Subject: a\n\n").unwrap();
    fs.flush_staged(&f, child).unwrap(); // a child exits (or execs)
    assert_eq!(saves(), 0, "another process's close saves nothing");
    fs.staging.write(&f, 13, b"rest\n").unwrap();
    fs.flush_staged(&f, shell).unwrap();
    assert_eq!(saves(), 1, "the writer's close saves");
    assert!(fs.staging.released(&f));
    fs.release_staged(&f);
    assert_eq!(saves(), 1, "saved once");

    // The writer never closed it itself: the last release saves it.
    let g = fs
        .create_staged(&inbox, OsStr::new("handed-over.eml"), (0, 0), shell)
        .unwrap();
    fs.staging.write(&g, 0, b"Subject: b\n\n").unwrap();
    fs.flush_staged(&g, child).unwrap();
    assert_eq!(saves(), 1);
    assert!(fs.staging.released(&g));
    fs.release_staged(&g);
    assert_eq!(saves(), 2, "the last release saves what is left");

    // An empty file is never a message.
    let e = fs
        .create_staged(&inbox, OsStr::new("touched.eml"), (0, 0), shell)
        .unwrap();
    fs.flush_staged(&e, shell).unwrap();
    assert!(fs.staging.released(&e));
    fs.release_staged(&e);
    assert_eq!(saves(), 2);
    assert!(fs.staging.get(e.id).is_none(), "forgotten");
}

#[test]
fn maildir_layout_lists_cur_new_tmp_and_names_carry_the_flags() {
    use super::naming::Layout;
    let (store, mut fs) = setup(|_| Arc::new(ReadOnly));
    fs.naming.layout = Layout::Maildir;
    assert_eq!(listed(&fs, "INBOX"), [".", "..", "cur", "new", "tmp"]);
    // A plain hierarchy level has no cur/; a nested mailbox has its own.
    assert_eq!(listed(&fs, "Work"), [".", "..", "Sub"]);
    let cur = |m: &str| {
        let mut levels = name(m).0;
        levels.push(super::naming::Sub::Cur.level());
        MailboxName(levels)
    };
    let names = listed(&fs, &format!("INBOX/{}", super::naming::Sub::Cur.level()));
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names[2].starts_with("1.guid-1,S=20,W=") && names[2].ends_with(":2,S"));
    assert!(names[3].starts_with("2.guid-2,") && names[3].ends_with(":2,"));
    for sub in ["new", "tmp"] {
        let (node, attr) = fs.resolve(&name("INBOX"), OsStr::new(sub)).unwrap();
        assert!(matches!(node, Node::Folder(_)));
        assert_eq!(attr.kind, fuser::FileType::Directory);
    }
    // The current name resolves to the mailbox's message; the name with other flags not.
    let (node, _) = fs.resolve(&cur("INBOX"), OsStr::new(&names[2])).unwrap();
    assert_eq!(
        node,
        Node::Message {
            mailbox: Arc::new(name("INBOX")),
            uid_validity: 7,
            key: MessageKey::Uid(1)
        }
    );
    let stale = names[2].replace(":2,S", ":2,");
    assert!(
        fs.resolve(&cur("INBOX"), OsStr::new(&stale))
            .unwrap_err()
            .is_not_found()
    );
    // The message is not in the mailbox directory itself.
    assert!(
        fs.resolve(&name("INBOX"), OsStr::new(&names[2]))
            .unwrap_err()
            .is_not_found()
    );
    // A flag change renames it.
    let mut flags = MailFlags::SEEN;
    flags.insert(MailFlags::FLAGGED);
    store.set_flags("INBOX", 1, flags);
    let after = listed(&fs, &format!("INBOX/{}", super::naming::Sub::Cur.level()));
    assert!(after[2].ends_with(":2,FS"), "{after:?}");
    // cur/ has no mailbox xattrs; the mailbox keeps its own.
    assert!(
        fs.xattrs(&Node::Folder(Arc::new(cur("INBOX"))))
            .unwrap()
            .is_empty()
    );
    assert!(
        fs.xattrs(&Node::Folder(Arc::new(name("INBOX"))))
            .unwrap()
            .iter()
            .any(|(k, _)| *k == "user.mailbox.uidvalidity")
    );
}

#[test]
fn maildir_layout_renames_in_cur_become_flag_changes_and_moves() {
    use super::naming::{Layout, Sub};
    let (_store, mut fs, rec) = recording();
    fs.naming.layout = Layout::Maildir;
    let calls = || rec.calls.lock().clone();
    let sub = |m: &str, s: Sub| {
        let mut levels = name(m).0;
        levels.push(s.level());
        MailboxName(levels)
    };
    let cur = sub("INBOX", Sub::Cur);
    let names = listed(&fs, &format!("INBOX/{}", Sub::Cur.level()));
    let one = OsStr::new(&names[2]);
    let flagged = names[2].replace(":2,S", ":2,FRS");
    fs.rename_entry(&cur, one, &cur, OsStr::new(&flagged), 0, false)
        .unwrap();
    assert_eq!(
        calls().last(),
        Some(&Call::Flags(
            "INBOX".into(),
            vec![1],
            FlagChange::Replace(vec![
                "\\Answered".into(),
                "\\Flagged".into(),
                "\\Seen".into()
            ])
        ))
    );
    // Another UID, or no info: refused, nothing called.
    let n = calls().len();
    let other = names[2].replacen('1', "7", 1);
    for bad in [other.as_str(), "1.guid-1"] {
        let e = fs
            .rename_entry(&cur, one, &cur, OsStr::new(bad), 0, false)
            .unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{bad}: {e:?}");
    }
    assert_eq!(calls().len(), n);
    // Into another mailbox's cur/: a move.
    fs.rename_entry(&cur, one, &sub("Work/Sub", Sub::Cur), one, 0, false)
        .unwrap();
    assert_eq!(
        calls().last(),
        Some(&Call::Move("INBOX".into(), 1, "Work/Sub".into()))
    );
    // No mailbox is made, deleted or renamed through cur/, new/, tmp/.
    assert!(fs.make_folder(&cur, OsStr::new("x")).is_err());
    assert!(fs.remove_folder(&name("INBOX"), OsStr::new("new")).is_err());
    assert!(
        fs.rename_entry(
            &name("INBOX"),
            OsStr::new("tmp"),
            &name(""),
            OsStr::new("T"),
            0,
            false
        )
        .is_err()
    );
    // unlink in cur/ expunges.
    let two = OsStr::new(&names[3]);
    fs.remove_message(&cur, two, 1).unwrap();
    assert_eq!(
        calls().last(),
        Some(&Call::Expunge("INBOX".into(), vec![2]))
    );
    assert!(
        calls().iter().all(|c| !format!("{c:?}").contains("\\0")),
        "no hidden level reached the writer: {:?}",
        calls()
    );
}
