//! The system calls mailfs makes beyond `std`, each wrapped once with its SAFETY note.
//!
//! This is the only module with `unsafe` code (`lib.rs` denies `unsafe_code` everywhere
//! else) and the only one that calls `libc` functions (the others use its constants only:
//! errno values, inotify masks, signal numbers); it depends on nothing else in the crate.
//! Besides the store opens below (this file, and [`read_lock_conflict`]):
//! - `inotify.rs`: [`Inotify`], the [`Wake`] eventfd and [`wait_readable`] (poll(2)), for
//!   the watcher and the Maildir name journals;
//! - `mount.rs`: [`unmount`], [`lazy_unmount`] (umount2) and [`fs_magic`] (statfs);
//! - `daemon.rs`: [`daemon::fork_background`] (fork, setsid) and [`daemon::detach_stdio`]
//!   (dup2), for the mount(8) form's background start;
//! - `process.rs`: [`block_signals`] / [`wait_signal`] (sigwait), [`user_home`]
//!   (getpwnam_r) and [`return_free_memory`] (malloc_trim).
//!
//! # Opening store files without following symbolic links
//! A store belongs to its mailbox owner, who can plant symbolic links anywhere in it; mailfs
//! usually runs as root. So every file and directory of a store is opened with
//! [`open_file`] / [`open_dir`] / [`lstat`], which refuse a symbolic link in *any*
//! component of the path (`openat2(RESOLVE_NO_SYMLINKS)`, Linux 5.6+; on older kernels
//! a walk of the path one component at a time with `O_NOFOLLOW`). Store roots are
//! resolved once, when the store is opened (an admin may symlink `~/Maildir` or
//! `/srv/mail`, as Dovecot allows), so the paths built below them never legitimately
//! contain a link. A refused link gives `ELOOP` (see [`is_symlink_refusal`]).
//!
//! Directories are read through their open descriptor ([`Dir::read`]) and their entries
//! examined relative to it ([`Dir::stat_at`]), so a directory swapped for a link after
//! it was opened cannot redirect what is read.

pub mod daemon;
mod inotify;
mod mount;
mod process;

pub use inotify::{Event, Inotify, Wake, wait_readable};
pub use mount::{FUSE_SUPER_MAGIC, fs_magic, lazy_unmount, unmount};
pub use process::{
    PROC_LOOK_LIMIT, SignalSet, block_signals, bounded, effective_ids,
    keep_large_allocations_apart, killed_by_signal, process_of, raise_open_file_limit,
    return_free_memory, same_process, user_home, wait_signal,
};

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

/// `openat2` is missing (kernel older than 5.6, or filtered): walk paths by hand.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// What kind of entry a directory entry is, as far as `readdir` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
    /// The filesystem does not say (`DT_UNKNOWN`): ask [`Dir::stat_at`].
    Unknown,
}

/// What `lstat` says of one file: the fields mailfs uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Hard links.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: i64,
    /// Status change time, seconds.
    pub ctime: i64,
}

impl Stat {
    fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
            ctime: st.st_ctime,
        }
    }

    /// The same fields from `std` metadata.
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            mode: meta.mode(),
            nlink: meta.nlink(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
        }
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// A symbolic link (only [`lstat`]-like calls can say so).
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

/// The (major, minor) numbers of device number `dev`, as `/proc` files print them.
pub fn major_minor(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

fn cstring(path: &OsStr) -> io::Result<CString> {
    CString::new(path.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `openat(2)` of one path relative to `dir` (or the working directory for `AT_FDCWD`).
fn openat(dir: RawFd, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call;
        // `dir` is AT_FDCWD or a descriptor the caller keeps open across the call.
        let fd = unsafe { libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC, 0) };
        if fd >= 0 {
            // SAFETY: `fd` was just returned by openat and is owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Opens `path` with `flags`, refusing a symbolic link in any component (`ELOOP`).
fn open_no_symlinks(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstring(path.as_os_str())?;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        // SAFETY: all-zero bytes are a valid `open_how` (the struct is plain integers).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        loop {
            // SAFETY: `c` is NUL-terminated and `how` a valid `open_how` whose size is
            // passed; both outlive the call. The kernel reads them and returns a new fd.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if rc >= 0 {
                // SAFETY: a non-negative return of openat2 is a new descriptor we own.
                return Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) });
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
                Some(libc::ENOSYS) | Some(libc::EPERM) if !path.as_os_str().is_empty() => {
                    // No openat2 here (or a seccomp filter refusing it): walk by hand.
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                _ => return Err(e),
            }
        }
    }
    walk_no_symlinks(path, flags)
}

/// [`open_no_symlinks`] without `openat2`: each directory component opened with
/// `O_PATH|O_NOFOLLOW|O_DIRECTORY` relative to the one before, the last with
/// `O_NOFOLLOW`.
fn walk_no_symlinks(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let mut dir: Option<OwnedFd> = None;
    let mut components = path.components().peekable();
    if path.is_absolute() {
        dir = Some(openat(
            libc::AT_FDCWD,
            c"/",
            libc::O_PATH | libc::O_DIRECTORY,
        )?);
        components.next();
    }
    while let Some(component) = components.next() {
        let name = match component {
            Component::Normal(n) => n,
            Component::CurDir => OsStr::new("."),
            Component::ParentDir => OsStr::new(".."),
            Component::RootDir | Component::Prefix(_) => continue,
        };
        let at = dir.as_ref().map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
        let c = cstring(name)?;
        let last = components.peek().is_none();
        let f = if last {
            flags | libc::O_NOFOLLOW
        } else {
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW
        };
        match openat(at, &c, f) {
            Ok(fd) => dir = Some(fd),
            // O_NOFOLLOW|O_DIRECTORY on a link says ENOTDIR: say what it is.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) && is_link_at(at, &c) => {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            Err(e) => return Err(e),
        }
    }
    match dir {
        Some(fd) => Ok(fd),
        None => openat(libc::AT_FDCWD, c".", flags),
    }
}

fn is_link_at(dir: RawFd, name: &CStr) -> bool {
    fstatat(dir, name).is_ok_and(|st| st.is_symlink())
}

fn fstatat(dir: RawFd, name: &CStr) -> io::Result<Stat> {
    // SAFETY: all-zero bytes are a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `st` a valid out-pointer, `dir` open (or AT_FDCWD).
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Stat::from_raw(&st))
}

fn fstat(fd: RawFd) -> io::Result<Stat> {
    // SAFETY: all-zero bytes are a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `st` a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Stat::from_raw(&st))
}

/// Flags every read-only open of a store file uses: never block on a FIFO, never become
/// the controlling terminal.
const READ_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;

/// Opens a file for reading; a symbolic link anywhere in `path` gives `ELOOP`.
pub fn open_file(path: &Path) -> io::Result<File> {
    Ok(File::from(open_no_symlinks(path, READ_FLAGS)?))
}

/// The largest file mailfs reads whole into memory (an index, a cache, a uidlist, a log
/// tail): a mailbox owner can make a sparse file of any size for free, and reading it
/// whole would exhaust memory. Dovecot's own files stay far below (its cache is capped at
/// `mail_cache_max_size`, 1 GiB by default; logs rotate at 1 MiB).
pub const MAX_WHOLE_FILE: u64 = 1 << 30;

/// The error for a file larger than [`MAX_WHOLE_FILE`].
pub fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("larger than {} MiB; not read", MAX_WHOLE_FILE >> 20),
    )
}

/// Reads a whole file ([`open_file`]), refusing one larger than [`MAX_WHOLE_FILE`].
pub fn read_whole(path: &Path) -> io::Result<Vec<u8>> {
    read_whole_of(open_file(path)?)
}

/// Reads the rest of an open file, refusing one larger than [`MAX_WHOLE_FILE`].
pub fn read_whole_of(file: File) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let len = file.metadata()?.len();
    if len > MAX_WHOLE_FILE {
        return Err(too_large());
    }
    let mut data = Vec::with_capacity(len as usize);
    // take(): a file growing while read cannot push past the limit either.
    file.take(MAX_WHOLE_FILE + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_WHOLE_FILE {
        return Err(too_large());
    }
    Ok(data)
}

/// `lstat` of `path`, refusing a symbolic link in any directory above it (`ELOOP`); the
/// last component is not followed, so a link there is reported as one.
pub fn lstat(path: &Path) -> io::Result<Stat> {
    let fd = open_no_symlinks(path, libc::O_PATH | libc::O_NOFOLLOW)?;
    fstat(fd.as_raw_fd())
}

/// Opens a directory; a symbolic link anywhere in `path` gives `ELOOP`.
pub fn open_dir(path: &Path) -> io::Result<Dir> {
    let fd = open_no_symlinks(path, libc::O_RDONLY | libc::O_DIRECTORY)?;
    Ok(Dir { fd })
}

/// True when `e` is the refusal of a symbolic link by this module.
pub fn is_symlink_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// The directory's own attributes.
    pub fn stat(&self) -> io::Result<Stat> {
        fstat(self.fd.as_raw_fd())
    }

    /// `lstat` of the entry `name` (one component).
    pub fn stat_at(&self, name: &OsStr) -> io::Result<Stat> {
        fstatat(self.fd.as_raw_fd(), &cstring(name)?)
    }

    /// Opens the entry `name` (one component) for reading; a link gives `ELOOP`.
    pub fn open_at(&self, name: &OsStr) -> io::Result<File> {
        let fd = openat(
            self.fd.as_raw_fd(),
            &cstring(name)?,
            READ_FLAGS | libc::O_NOFOLLOW,
        )?;
        Ok(File::from(fd))
    }

    /// Opens the sub-directory `name` (one component); a link gives `ELOOP`.
    pub fn open_dir_at(&self, name: &OsStr) -> io::Result<Dir> {
        let c = cstring(name)?;
        match openat(
            self.fd.as_raw_fd(),
            &c,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        ) {
            Ok(fd) => Ok(Dir { fd }),
            Err(e)
                if e.raw_os_error() == Some(libc::ENOTDIR)
                    && is_link_at(self.fd.as_raw_fd(), &c) =>
            {
                Err(io::Error::from_raw_os_error(libc::ELOOP))
            }
            Err(e) => Err(e),
        }
    }

    /// Calls `f` with every entry's name and kind (never `.` or `..`), in directory order.
    pub fn read(&self, mut f: impl FnMut(&OsStr, EntryKind)) -> io::Result<()> {
        // fdopendir takes the descriptor over: give it a duplicate (which shares the
        // read position, so rewind first: the directory may be read more than once).
        let dup = self.fd.try_clone()?;
        // SAFETY: `dup` is an open descriptor we own; on success the DIR stream owns it
        // (released by closedir below), on failure we still own it and close it.
        let stream = unsafe { libc::fdopendir(dup.as_raw_fd()) };
        if stream.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(dup);
        let stream = DirStream(stream);
        // SAFETY: `stream.0` is a valid DIR stream until dropped.
        unsafe { libc::rewinddir(stream.0) };
        loop {
            // readdir reports errors only through errno: clear it first.
            // SAFETY: __errno_location returns this thread's errno slot.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: `stream.0` is a valid DIR stream used by this thread only.
            let entry = unsafe { libc::readdir(stream.0) };
            if entry.is_null() {
                // SAFETY: as above.
                let errno = unsafe { *libc::__errno_location() };
                return if errno == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(errno))
                };
            }
            // SAFETY: a non-null readdir result points to a dirent valid until the next
            // readdir/closedir on this stream; d_name is NUL-terminated inside it.
            let (name, d_type) = unsafe {
                let e = &*entry;
                (CStr::from_ptr(e.d_name.as_ptr()), e.d_type)
            };
            let name = OsStr::from_bytes(name.to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = match d_type {
                libc::DT_DIR => EntryKind::Dir,
                libc::DT_REG => EntryKind::File,
                libc::DT_LNK => EntryKind::Symlink,
                libc::DT_UNKNOWN => EntryKind::Unknown,
                _ => EntryKind::Other,
            };
            f(name, kind);
        }
    }

    /// The kind of entry `name`, asking the filesystem when `readdir` did not say.
    pub fn kind_of(&self, name: &OsStr, listed: EntryKind) -> EntryKind {
        if listed != EntryKind::Unknown {
            return listed;
        }
        match self.stat_at(name) {
            Ok(st) if st.is_dir() => EntryKind::Dir,
            Ok(st) if st.is_file() => EntryKind::File,
            Ok(st) if st.is_symlink() => EntryKind::Symlink,
            Ok(_) => EntryKind::Other,
            Err(_) => EntryKind::Unknown,
        }
    }
}

/// A `DIR*` closed on drop.
struct DirStream(*mut libc::DIR);

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the stream came from fdopendir and is closed exactly once, here.
        unsafe { libc::closedir(self.0) };
    }
}

/// Whether another process holds a lock on `file` that would block a read lock on all of
/// it (a writer's `fcntl` lock): `fcntl(F_GETLK)`, which reports a conflicting lock and
/// acquires nothing. False when the query fails.
pub fn read_lock_conflict(file: &File) -> bool {
    // SAFETY: all-zero bytes are a valid `flock` struct (plain integers).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // l_start 0 and l_len 0: the whole file.
    // SAFETY: `file` is an open descriptor and `fl` a valid in/out pointer; F_GETLK never
    // acquires a lock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short
}

/// Advice that `len` bytes of `file` from `offset` (`len` 0: to the end) will be read
/// soon: the kernel starts reading what is not in the page cache from the disk and
/// returns without waiting (`posix_fadvise(2)` `POSIX_FADV_WILLNEED`, which for a local
/// filesystem starts the page cache's read-ahead of that range). Only a hint.
pub fn will_need(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: `file` is an open descriptor; posix_fadvise reads and writes no memory of
    // ours. It returns the error number rather than setting errno.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// `statvfs(3)` of `path`: (blocks, free, available, files, free files, block size,
/// fragment size).
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let c = cstring(path.as_os_str())?;
    // SAFETY: all-zero bytes are a valid `statvfs`.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The local time zone's offset from UTC, in seconds east, at unix time `t` (0 if the C
/// library cannot tell): what `mktime()` applies to a local date.
pub fn local_utc_offset(t: i64) -> i64 {
    let t = t as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which lives across the call; `t` is a
    // valid time_t. An all-zero `libc::tm` is a valid value of that plain C struct.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tmp(std::path::PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("mailfs-sys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("real/sub")).unwrap();
        std::fs::write(d.join("real/sub/f"), b"inside").unwrap();
        std::fs::write(d.join("secret"), b"secret").unwrap();
        symlink(d.join("secret"), d.join("real/sub/link")).unwrap();
        symlink(d.join("real/sub"), d.join("real/dirlink")).unwrap();
        Tmp(d)
    }

    fn check_refusals(d: &Path) {
        use std::io::Read;
        let mut s = String::new();
        open_file(&d.join("real/sub/f"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "inside");
        let e = open_file(&d.join("real/sub/link")).unwrap_err();
        assert!(is_symlink_refusal(&e), "{e}");
        let e = open_file(&d.join("real/dirlink/f")).unwrap_err();
        assert!(is_symlink_refusal(&e), "{e}");
        let e = open_dir(&d.join("real/dirlink")).unwrap_err();
        assert!(is_symlink_refusal(&e), "{e}");
        assert!(lstat(&d.join("real/sub/link")).unwrap().is_symlink());
        assert!(is_symlink_refusal(
            &lstat(&d.join("real/dirlink/f")).unwrap_err()
        ));
        let dir = open_dir(&d.join("real")).unwrap();
        let mut names = Vec::new();
        dir.read(|n, k| names.push((n.to_owned(), dir.kind_of(n, k))))
            .unwrap();
        names.sort();
        assert_eq!(
            names,
            vec![
                ("dirlink".into(), EntryKind::Symlink),
                ("sub".into(), EntryKind::Dir)
            ]
        );
        assert!(is_symlink_refusal(
            &dir.open_dir_at(OsStr::new("dirlink")).unwrap_err()
        ));
        let sub = dir.open_dir_at(OsStr::new("sub")).unwrap();
        assert!(is_symlink_refusal(
            &sub.open_at(OsStr::new("link")).unwrap_err()
        ));
        assert_eq!(sub.stat_at(OsStr::new("f")).unwrap().size, 6);
    }

    #[test]
    fn refuses_links_in_any_component() {
        let t = tmp("openat2");
        check_refusals(&t.0);
    }

    #[test]
    fn the_component_walk_refuses_the_same_links() {
        let t = tmp("walk");
        let d = &t.0;
        assert!(walk_no_symlinks(&d.join("real/sub/f"), READ_FLAGS).is_ok());
        for p in ["real/sub/link", "real/dirlink/f"] {
            let e = walk_no_symlinks(&d.join(p), READ_FLAGS).unwrap_err();
            assert!(is_symlink_refusal(&e), "{p}: {e}");
        }
        let e = walk_no_symlinks(&d.join("real/dirlink"), libc::O_RDONLY | libc::O_DIRECTORY)
            .unwrap_err();
        assert!(is_symlink_refusal(&e), "{e}");
    }
}
