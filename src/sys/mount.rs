//! Mounts: taking one off the namespace, and which filesystem a path is on.

use std::io;
use std::path::Path;

use super::cstring;

/// `umount2(path, 0)`: unmounts the filesystem mounted on `path`.
pub fn unmount(path: &Path) -> io::Result<()> {
    umount2(path, 0)
}

/// `umount2(path, MNT_DETACH)`: detaches the mount on `path` from the namespace at once;
/// the filesystem goes when its last user lets go of it.
pub fn lazy_unmount(path: &Path) -> io::Result<()> {
    umount2(path, libc::MNT_DETACH)
}

fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = cstring(path.as_os_str())?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// [`fs_magic`] of a FUSE mount (`FUSE_SUPER_MAGIC` in `linux/magic.h`).
pub const FUSE_SUPER_MAGIC: u32 = 0x6573_5546;

/// The magic number of the filesystem `path` is on (`statfs(2)`'s `f_type`, as in
/// `linux/magic.h`; these are 32-bit values). On a FUSE mount this asks the daemon, which
/// may never answer: call it where a hang is acceptable.
pub fn fs_magic(path: &Path) -> io::Result<u32> {
    let c = cstring(path.as_os_str())?;
    // SAFETY: all-zero bytes are a valid `statfs` (plain integers).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_magic_of_proc_and_of_a_missing_path() {
        // PROC_SUPER_MAGIC.
        assert_eq!(fs_magic(Path::new("/proc")).unwrap(), 0x9fa0);
        let e = fs_magic(Path::new("/nonexistent/mailfs")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn unmounting_what_is_not_a_mount_fails() {
        let d = std::env::temp_dir();
        assert!(unmount(&d.join("mailfs-not-a-mount-at-all")).is_err());
        assert!(lazy_unmount(&d.join("mailfs-not-a-mount-at-all")).is_err());
    }
}
