//! The `fuser::Filesystem` implementation: thin adapters from requests to the other
//! modules and back to replies. Nothing here holds a lock while replying.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use fuser::{
    FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use log::{debug, warn};

use super::MailFs;
use super::attrs::negative_attr;
use super::handles::{Handle, OpenDir, OpenMessage};
use super::inode::{Node, ROOT_INO};
use super::open::{self, OpenMode};
use super::xattrs::{listed, reply_xattr_bytes};
use crate::error::{Error, Refusal, Result};
use crate::store::{MailboxName, MessageKey, Target};

impl MailFs {
    /// How long the kernel may keep a name -> node answer: a staged file is asked about
    /// every time (it becomes a ghost, then nothing).
    fn entry_ttl(&self, node: &Node) -> Duration {
        match node {
            Node::Staged(_) => Duration::ZERO,
            _ => self.timeouts.entry,
        }
    }

    /// How long the kernel may keep a node's attributes (a staged file grows).
    fn attr_ttl(&self, node: &Node) -> Duration {
        match node {
            Node::Staged(_) => Duration::ZERO,
            _ => self.timeouts.attr,
        }
    }

    /// The folder an inode stands for (the parent of a name in a request).
    fn folder_of(&self, ino: INodeNo) -> Result<Arc<MailboxName>> {
        match self.node(ino) {
            Some(Node::Folder(name)) => Ok(name),
            Some(Node::Message { .. } | Node::Staged(_)) => Err(Error::refused(
                crate::error::Refusal::NotDirectory,
                format!("inode {} is a file", ino.0),
            )),
            None => Err(Error::not_found(format!("inode {}", ino.0))),
        }
    }
}

impl Filesystem for MailFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            if let Err(missing) = config.add_capabilities(cap) {
                debug!("kernel lacks capability {missing:?}");
            }
        }
        let _ = config.set_max_readahead(1024 * 1024);
        let caps = config.capabilities();
        match self.open_mode {
            OpenMode::Kernel if caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT) => {
                self.kernel_opens = true;
            }
            OpenMode::Kernel => {
                warn!("the kernel cannot open files without asking; every open reaches mailfs");
            }
            OpenMode::Held => {}
            OpenMode::Passthrough => {
                let agreed = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                    && config.set_max_stack_depth(1).is_ok();
                if agreed {
                    self.passthrough.store(true, Ordering::Relaxed);
                } else {
                    warn!("the kernel offers no FUSE passthrough (Linux 6.9+); using held opens");
                }
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(Node::Folder(parent_name)) = self.node(parent) else {
            reply.error(fuser::Errno::ENOTDIR);
            return;
        };
        match self.resolve(&parent_name, name) {
            Ok((node, mut attr)) => {
                attr.ino = INodeNo(self.inodes.remember(&node));
                reply.entry(&self.entry_ttl(&node), &attr, Generation(0));
            }
            // "No such name" is cached like a name (a negative dentry, inode 0) for the
            // entry timeout; the notifier drops it when the name appears. Not on a
            // writable mount: a name made through it (a save's `<uid>.eml`, a mailbox)
            // must be found at once, without waiting for the notifier.
            Err(e) if e.is_not_found() && !self.timeouts.entry.is_zero() && !self.writable() => {
                reply.entry(&self.timeouts.entry, &negative_attr(), Generation(0));
            }
            Err(e) => reply.error(self.errors.errno("lookup", &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        match self.inodes.forget(ino.0, nlookup) {
            // The kernel holds nothing below a folder it forgot: stop watching it.
            Some(Node::Folder(name)) => {
                if let Some(w) = &self.watcher {
                    w.unwatch(&Target::Mailbox((*name).clone()));
                    w.unwatch(&Target::Scope((*name).clone()));
                }
            }
            Some(Node::Message { .. }) => self.recent.remove(ino.0),
            Some(Node::Staged(_)) | None => {}
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // An open message answers from what was opened: it stays readable (and sized)
        // after Dovecot expunges it, and the kernel asks with the handle before reading
        // past the size it knows.
        if let Some(fh) = fh
            && let Some(Handle::File(open)) = self.handles.get(fh.0)
        {
            reply.attr(&self.timeouts.attr, &open.attr);
            return;
        }
        let Some(node) = self.node(ino) else {
            reply.error(fuser::Errno::ENOENT);
            return;
        };
        match self.attr_of(ino.0, &node) {
            Ok(attr) => reply.attr(&self.attr_ttl(&node), &attr),
            // A message expunged while a file the kernel opened by itself still reads it
            // (kernel opens carry no handle): the attributes it was opened with.
            Err(e) if e.is_not_found() => match self.recent.get(ino.0, &node) {
                Some(recent) => reply.attr(&self.timeouts.attr, &recent.attr),
                None => reply.error(fuser::Errno::ENOENT),
            },
            Err(e) => reply.error(self.errors.errno("getattr", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.opens.fetch_add(1, Ordering::Relaxed);
        if let Some(Node::Staged(id)) = self.node(ino) {
            match self.staging.get(id) {
                Some(staged) => {
                    self.staging.opened(&staged);
                    let fh = self.handles.insert(Handle::Staged(staged));
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
                }
                None => reply.error(fuser::Errno::ENOENT),
            }
            return;
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            // Messages are immutable (a new one is written under a new name).
            reply.error(if self.writable() {
                fuser::Errno::EPERM
            } else {
                fuser::Errno::EROFS
            });
            return;
        }
        let Some(Node::Message {
            mailbox,
            uid_validity,
            key,
        }) = self.node(ino)
        else {
            reply.error(fuser::Errno::EISDIR);
            return;
        };
        if self.kernel_opens {
            // The first open of the mount: answer it as an open would (the message is
            // there), then ENOSYS, after which the kernel opens files by itself.
            match self.with_message(&mailbox, uid_validity, &key, |_, _| ()) {
                Ok(()) => reply.error(fuser::Errno::ENOSYS),
                Err(e) => reply.error(self.errors.errno("open", &e)),
            }
            return;
        }
        let opened = self
            .with_message(&mailbox, uid_validity, &key, |view, meta| {
                (view.clone(), self.message_attr(ino.0, meta))
            })
            .and_then(|(view, attr)| Ok((self.store.open(&mailbox, &view, &key)?, attr)));
        let (src, attr) = match opened {
            Ok((src, attr)) => (Arc::new(src), attr),
            Err(e) => {
                reply.error(self.errors.errno("open", &e));
                return;
            }
        };
        if self.passthrough.load(Ordering::Relaxed)
            && let Some(file) = src.whole_file()
        {
            match self.backings.acquire(ino.0, || reply.open_backing(file)) {
                Ok(id) => {
                    let fh = self.handles.insert(Handle::File(Arc::new(OpenMessage {
                        src,
                        attr,
                        passthrough: true,
                    })));
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &id);
                    return;
                }
                Err(e) => {
                    warn!("FUSE passthrough refused ({e}); using held opens from now on");
                    self.passthrough.store(false, Ordering::Relaxed);
                }
            }
        }
        let fh = self.handles.insert(Handle::File(Arc::new(OpenMessage {
            src,
            attr,
            passthrough: false,
        })));
        // Bytes of (mailbox, uidvalidity, uid) never change: keep the page cache.
        // Nothing is ever written, so close() needs no FLUSH round trip.
        reply.opened(
            FileHandle(fh),
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(Node::Staged(id)) = self.node(ino) {
            match self.staging.get(id) {
                Some(staged) => reply.data(&staged.read(offset, size)),
                None => reply.error(fuser::Errno::ESTALE),
            }
            return;
        }
        // fh 0: a file the kernel opened by itself (kernel opens); handles start at 1.
        let src = if fh.0 == 0 {
            match self.source_by_inode(ino.0) {
                Ok(src) => src,
                Err(e) => {
                    reply.error(self.errors.read_by_inode_errno(ino.0, &e));
                    return;
                }
            }
        } else {
            match self.handles.get(fh.0) {
                Some(Handle::File(open)) => open.src.clone(),
                _ => {
                    reply.error(fuser::Errno::EBADF);
                    return;
                }
            }
        };
        // A read from a message's start is the read-ahead's hint, given before the read so
        // that pushes already under way stop short of this message (see `prefetch`).
        if offset == 0
            && let Some(p) = self.prefetch.get()
            && let Some(Node::Message {
                mailbox,
                uid_validity,
                key: MessageKey::Uid(uid),
            }) = self.node(ino)
        {
            p.hint(&mailbox, uid_validity, uid);
        }
        let mut reply = Some(reply);
        let read = open::read_message(&src, offset, size, |bytes| {
            if let Some(r) = reply.take() {
                r.data(bytes);
            }
        });
        if let Err(e) = read
            && let Some(r) = reply.take()
        {
            let e = Error::Unreadable {
                what: format!("message at inode {} (fh {}): {e}", ino.0, fh.0),
            };
            r.error(self.errors.errno("read", &e));
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        if let Some(Node::Staged(id)) = self.node(ino) {
            // A close of a file being written: if it is its writer's, the file becomes a
            // message now, and close() returns only once Dovecot has it.
            let saved = match self.staging.get(id) {
                Some(staged) => self.flush_staged(&staged, req.pid()),
                None => Ok(()),
            };
            match saved {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(self.errors.errno("close", &e)),
            }
            return;
        }
        if self.writable() {
            // Files being written need their FLUSH: the kernel must keep sending it.
            reply.ok();
        } else {
            // Nothing is ever written, so there is nothing to flush. ENOSYS tells the
            // kernel so for good: it sends no FLUSH at close from now on (files it opens
            // by itself carry no FOPEN_NOFLUSH).
            reply.error(fuser::Errno::ENOSYS);
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        let Some(Node::Staged(id)) = self.node(ino) else {
            // Only new files are written; messages are immutable.
            reply.error(if self.writable() {
                fuser::Errno::EPERM
            } else {
                fuser::Errno::EROFS
            });
            return;
        };
        let written = match self.staging.get(id) {
            Some(staged) => self.staging.write(&staged, offset, data),
            None => Err(Error::not_found(format!("staged file {id}"))),
        };
        match written {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(self.errors.errno("write", &e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        let made = self
            .folder_of(parent)
            .and_then(|p| self.create_staged(&p, name, (req.uid(), req.gid()), req.pid()));
        match made {
            Ok(staged) => {
                let node = Node::Staged(staged.id);
                let ino = self.inodes.remember(&node);
                let attr = Self::staged_attr(ino, &staged);
                let fh = self.handles.insert(Handle::Staged(staged));
                reply.created(
                    &Duration::ZERO,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO,
                );
            }
            Err(e) => reply.error(self.errors.errno("create", &e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let removed = self.handles.remove(fh.0);
        match removed {
            Some(Handle::File(open)) if open.passthrough => self.backings.release(ino.0),
            // The last descriptor of a file being written (`released` counts the handle
            // off either way): what its writer's close did not save is saved now.
            Some(Handle::Staged(staged)) if self.staging.released(&staged) => {
                self.release_staged(&staged);
            }
            _ => {}
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(Node::Folder(name)) = self.node(ino) else {
            reply.error(fuser::Errno::ENOTDIR);
            return;
        };
        // Check now that the folder can be listed (errors belong to opendir); list at the
        // first readdir.
        let checked = self
            .tree(&name)
            .and_then(|tree| self.folder_view(tree.folder(&name)?).map(|_| ()));
        match checked {
            Ok(()) => {
                let fh = self.handles.insert(Handle::Dir(Arc::new(OpenDir {
                    ino: ino.0,
                    name,
                    listing: std::sync::OnceLock::new(),
                })));
                // With a watcher the kernel may keep the listing: the notifier drops it
                // (inval_inode) whenever it changes. A mount that takes changes lets the
                // kernel keep it only within one open (each `ls` lists afresh): a change
                // made through the mount shows in the next listing, whatever the watcher.
                let flags = match (self.watcher.is_some(), self.writable()) {
                    (true, false) => FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
                    (true, true) => FopenFlags::FOPEN_CACHE_DIR,
                    (false, _) => FopenFlags::empty(),
                };
                reply.opened(FileHandle(fh), flags);
            }
            Err(e) => reply.error(self.errors.errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.listings.fetch_add(1, Ordering::Relaxed);
        let listing = match self.dir_listing(fh) {
            Ok(l) => l,
            Err(errno) => {
                reply.error(errno);
                return;
            }
        };
        for (i, e) in self.entries_from(&listing, offset as usize) {
            if reply.add(e.attr.ino, (i + 1) as u64, e.attr.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.listings.fetch_add(1, Ordering::Relaxed);
        let listing = match self.dir_listing(fh) {
            Ok(l) => l,
            Err(errno) => {
                reply.error(errno);
                return;
            }
        };
        for (i, e) in self.entries_from(&listing, offset as usize) {
            let is_dot = e.name == "." || e.name == "..";
            let ttl = if is_dot || e.broken {
                Duration::ZERO
            } else {
                self.timeouts.entry
            };
            if reply.add(
                e.attr.ino,
                (i + 1) as u64,
                &e.name,
                &ttl,
                &e.attr,
                Generation(0),
            ) {
                break;
            }
            // The kernel counts a lookup for every entry it received except "." and "..".
            if !is_dot {
                let ino = self.inodes.remember(&e.node);
                debug_assert_eq!(
                    ino, e.attr.ino.0,
                    "inode changed between opendir and readdir"
                );
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.store.local_root().map(crate::sys::statvfs);
        let Some(Ok(st)) = st else {
            reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
            return;
        };
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            255,
            st.f_frsize as u32,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(node) = self.node(ino) else {
            reply.error(fuser::Errno::ENOENT);
            return;
        };
        // Only the user.* namespace exists here. EOPNOTSUPP (not ENODATA) for the others
        // lets tools cache "unsupported on this device": ls -l then asks for
        // security.selinux and system.posix_acl_access once per mount, not once per file.
        if !name.as_bytes().starts_with(b"user.") {
            reply.error(fuser::Errno::EOPNOTSUPP);
            return;
        }
        match self.xattrs(&node) {
            Ok(attrs) => match attrs.iter().find(|(n, _)| OsStr::new(n) == name) {
                Some((_, value)) => reply_xattr_bytes(reply, size, value),
                None => reply.error(fuser::Errno::ENODATA),
            },
            Err(e) => reply.error(self.errors.errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(node) = self.node(ino) else {
            reply.error(fuser::Errno::ENOENT);
            return;
        };
        match self.xattrs(&node) {
            Ok(attrs) => {
                let mut names = Vec::new();
                for (n, _) in attrs.into_iter().filter(|(n, _)| listed(n)) {
                    names.extend_from_slice(n.as_bytes());
                    names.push(0);
                }
                reply_xattr_bytes(reply, size, &names);
            }
            Err(e) => reply.error(self.errors.errno("listxattr", &e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if mask.contains(fuser::AccessFlags::W_OK) {
            reply.error(fuser::Errno::EROFS);
        } else if self.node(ino).is_some() || ino.0 == ROOT_INO {
            reply.ok();
        } else {
            reply.error(fuser::Errno::ENOENT);
        }
    }

    // Everything below answers at once and logs nothing: any user who can open a file can
    // send these requests in a loop (Python's open() sends an ioctl for isatty()), so a
    // log line each would let them fill the disk. fuser's defaults log a warning each.

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctl is meaningful on a message or a mailbox: "not a terminal", as a
        // regular file answers TCGETS.
        reply.error(fuser::Errno::ENOTTY);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written: already on disk.
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        reply.error(fuser::Errno::EINVAL);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        // ENOSYS: the kernel then treats files as always ready, and stops asking.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        // ENOSYS: the kernel answers SEEK_DATA/SEEK_HOLE itself (no holes), for good.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn bmap(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _blocksize: u32,
        _idx: u64,
        reply: fuser::ReplyBmap,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: fuser::ReplyLock,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: fuser::ReplyWrite,
    ) {
        // ENOSYS: the kernel falls back to read + write (and remembers).
        reply.error(fuser::Errno::ENOSYS);
    }

    // Changes with no meaning here (messages are immutable, and there are no links or
    // special files); the kernel refuses most of these itself on a read-only mount.

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if !self.writable() {
            reply.error(fuser::Errno::EROFS);
            return;
        }
        let Some(node) = self.node(ino) else {
            reply.error(fuser::Errno::ENOENT);
            return;
        };
        let done = match &node {
            // A file being written may be truncated or extended (O_TRUNC, ftruncate);
            // its times, mode and owner are taken and forgotten (the message gets
            // Dovecot's), so that `cp -p`, `rsync -a` and `tar -x` finish cleanly.
            Node::Staged(id) => match (self.staging.get(*id), size) {
                (Some(staged), Some(size)) => self.staging.set_size(&staged, size),
                (Some(_), None) => Ok(()),
                (None, _) => Err(Error::not_found(format!("staged file {id}"))),
            },
            // A mailbox directory's times and mode are Dovecot's: accepted and
            // forgotten, as `tar -x` sets them on the directories it extracts into.
            Node::Folder(_) if size.is_none() => Ok(()),
            Node::Folder(_) => Err(Error::refused(Refusal::IsDirectory, "truncating a folder")),
            // Messages are immutable: their bytes, times (the received date) and mode.
            Node::Message { .. } => Err(Error::refused(
                Refusal::NotPermitted,
                format!(
                    "changing a message's {} (messages are immutable)",
                    if size.is_some() {
                        "size"
                    } else if mode.is_some() || uid.is_some() || gid.is_some() {
                        "mode or owner"
                    } else {
                        "times"
                    }
                ),
            )),
        };
        match done.and_then(|()| self.attr_of(ino.0, &node)) {
            Ok(attr) => reply.attr(&self.attr_ttl(&node), &attr),
            Err(e) => reply.error(self.errors.errno("setattr", &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // A regular file made without create (then opened): a staged file, as create.
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(fuser::Errno::EPERM);
            return;
        }
        let made = self
            .folder_of(parent)
            .and_then(|p| self.create_staged(&p, name, (req.uid(), req.gid()), req.pid()));
        match made {
            Ok(staged) => {
                self.staging.released(&staged);
                let node = Node::Staged(staged.id);
                let ino = self.inodes.remember(&node);
                let attr = Self::staged_attr(ino, &staged);
                reply.entry(&Duration::ZERO, &attr, Generation(0));
            }
            Err(e) => reply.error(self.errors.errno("mknod", &e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self
            .folder_of(parent)
            .and_then(|parent| self.make_folder(&parent, name));
        match made {
            Ok((node, mut attr)) => {
                attr.ino = INodeNo(self.inodes.remember(&node));
                reply.entry(&self.timeouts.entry, &attr, Generation(0));
            }
            Err(e) => reply.error(self.errors.errno("mkdir", &e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let done = self
            .folder_of(parent)
            .and_then(|parent| self.remove_message(&parent, name, req.pid()));
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errors.errno("unlink", &e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let done = self
            .folder_of(parent)
            .and_then(|parent| self.remove_folder(&parent, name));
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errors.errno("rmdir", &e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        // No hard links: EPERM on a writable mount, as a filesystem without them answers
        // (Python's mailbox.Maildir then delivers with rename).
        reply.error(if self.writable() {
            fuser::Errno::EPERM
        } else {
            fuser::Errno::EROFS
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(fuser::RenameFlags::RENAME_EXCHANGE) {
            reply.error(fuser::Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(fuser::RenameFlags::RENAME_NOREPLACE);
        let done = self.folder_of(parent).and_then(|from| {
            let to = self.folder_of(newparent)?;
            self.rename_entry(&from, name, &to, newname, newparent.0, no_replace)
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errors.errno("rename", &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // No hard links: EPERM on a writable mount, as a filesystem without them answers
        // (Python's mailbox.Maildir then delivers with rename).
        reply.error(if self.writable() {
            fuser::Errno::EPERM
        } else {
            fuser::Errno::EROFS
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(node) = self.node(ino) else {
            reply.error(fuser::Errno::ENOENT);
            return;
        };
        match self.set_xattr(&node, name, value) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errors.errno("setxattr", &e)),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(fuser::Errno::EROFS);
    }
}
