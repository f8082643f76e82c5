//! File-system probes through libc: extended attributes, directory listings, a recursive
//! walk, and errno helpers.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::{fs, ptr};

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL")
}

/// `getxattr(2)` (follows symlinks). A value that fits 256 bytes (mailfs's per-message
/// attributes do) takes one call; a longer one is asked for its size, then read again.
pub fn getxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cpath(path);
    let n = CString::new(name).expect("xattr name with NUL");
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated; `buf` is valid for writes of its length.
        let got =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
        // Longer than the buffer (or grown since the size was asked): ask the size.
        // SAFETY: both strings are NUL-terminated; a null buffer with size 0 asks for the size.
        let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), ptr::null_mut(), 0) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        buf = vec![0u8; len as usize];
    }
}

/// `listxattr(2)` (follows symlinks).
pub fn listxattr(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path);
    loop {
        // SAFETY: NUL-terminated path; a null buffer with size 0 asks for the size.
        let len = unsafe { libc::listxattr(p.as_ptr(), ptr::null_mut(), 0) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let got = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    }
}

/// `setxattr(2)`, to show that a read-only mount refuses it.
pub fn setxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path);
    let n = CString::new(name).expect("xattr name with NUL");
    // SAFETY: NUL-terminated strings; `value` is valid for reads of `value.len()` bytes.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An xattr as a UTF-8 string; panics with the path and name if it cannot be read.
#[track_caller]
pub fn xattr_string(path: &Path, name: &str) -> String {
    let v = getxattr(path, name).unwrap_or_else(|e| panic!("getxattr {path:?} {name}: {e}"));
    String::from_utf8(v).unwrap_or_else(|e| panic!("xattr {name} of {path:?} is not UTF-8: {e}"))
}

/// The names in a directory.
pub fn dir_names(dir: &Path) -> io::Result<BTreeSet<String>> {
    fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// Every path below `root` (not `root` itself), directories before their contents, sorted;
/// does not follow symlinks. Panics on any error, naming the path.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(root)
        .unwrap_or_else(|e| panic!("reading directory {root:?}: {e}"))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading directory {root:?}: {e}"))
                .path()
        })
        .collect();
    names.sort();
    for p in names {
        let meta = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {p:?}: {e}"));
        out.push(p.clone());
        if meta.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

/// The errno of an I/O result, for assertions (`None` if it succeeded).
pub fn errno<T>(r: &io::Result<T>) -> Option<i32> {
    r.as_ref().err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// Human name of an errno value.
pub fn errno_name(e: Option<i32>) -> String {
    match e {
        None => "success".to_string(),
        Some(n) => format!("{} (errno {n})", io::Error::from_raw_os_error(n)),
    }
}
