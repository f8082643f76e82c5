//! Who may read what through an `--allow-other` mount.
//!
//! The mount flattens paths: `MNT/INBOX/12.eml` stands for `/home/alice/Maildir/cur/…`,
//! and the kernel (`default_permissions`) checks only the modes mailfs presents for
//! `MNT`, `INBOX` and `12.eml`. The directories in between on disk (`/home/alice`,
//! `cur/`, `mailboxes/`, `storage/`, an `INDEX=` tree) are not presented, so their
//! permissions must be folded into the nodes that stand for them, or a local user could
//! read through the mount what the disk refuses them.
//!
//! [`restrict`] folds one such directory into a presented owner and mode. It is
//! conservative: after folding, any user the presented bits admit (checked the kernel's
//! way: owner bits if the caller is the owner, else group bits if in the group, else
//! other bits) is admitted by the directory too, whatever groups the user belongs to;
//! a class of users whose membership in the directory's classes is unknown gets the
//! strictest of the classes they might fall into. ACLs are not read: they can only grant
//! more than the mode bits say, so ignoring them only ever shows less. Root bypasses
//! every check, on disk and on the mount alike.

use super::FileOwner;

/// What a folded directory must grant for the presented node to be usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Search (`x`): the directory lies on the path to the node; without it, nothing of
    /// the node is reachable, so every bit of that class is taken away.
    Traverse,
    /// Read and search (`r-x`): the node's listing is made from the directory's entries
    /// and their attributes; without read, the class loses the node's read bit, without
    /// search all of them.
    List,
    /// Read (`r--`): the node's listing shows names read from the directory (nothing
    /// below it is reached through the node); without read, the class loses the node's
    /// read bit.
    Read,
}

/// Class bit sets of a mode: owner, group, other.
fn class_bits(mode: u16, shift: u32) -> u16 {
    (mode >> shift) & 0o7
}

/// `node` with the bits taken away that `dir` does not grant for `need` to every member
/// of the node's owner, group and other classes.
pub fn restrict(node: FileOwner, dir: FileOwner, need: Need) -> FileOwner {
    // The bits each class of the node is certain to have on `dir`: the strictest of the
    // dir's classes a member might fall into.
    let (du, dg, do_) = (
        class_bits(dir.mode, 6),
        class_bits(dir.mode, 3),
        class_bits(dir.mode, 0),
    );
    let owner_has = if dir.uid == node.uid { du } else { dg & do_ };
    let group_has = {
        let mut bits = if dir.gid == node.gid { dg } else { dg & do_ };
        if dir.uid != node.uid {
            bits &= du; // a member of the node's group may own the directory
        }
        bits
    };
    let other_has = {
        let mut bits = do_;
        if dir.uid != node.uid {
            bits &= du;
        }
        if dir.gid != node.gid {
            bits &= dg;
        }
        bits
    };
    let mut mode = node.mode;
    for (shift, has) in [(6, owner_has), (3, group_has), (0, other_has)] {
        let lose = match need {
            Need::Traverse if has & 0o1 == 0 => 0o7,
            Need::Traverse => 0,
            Need::List if has & 0o1 == 0 => 0o7,
            Need::List if has & 0o4 == 0 => 0o4,
            Need::List => 0,
            Need::Read if has & 0o4 == 0 => 0o4,
            Need::Read => 0,
        };
        mode &= !(lose << shift);
    }
    FileOwner { mode, ..node }
}

/// `node` restricted by every directory in `dirs`.
pub fn restrict_all<'a>(
    node: FileOwner,
    dirs: impl IntoIterator<Item = &'a (FileOwner, Need)>,
) -> FileOwner {
    dirs.into_iter()
        .fold(node, |acc, (dir, need)| restrict(acc, *dir, *need))
}

/// The owners of every directory above `path` (from `path`'s parent up to `/`), each to
/// be traversed. An ancestor that does not exist is left out (then `path` does not exist
/// either); one that cannot be examined counts as refusing everyone.
pub fn ancestors(path: &std::path::Path) -> Vec<(FileOwner, Need)> {
    path.ancestors()
        .skip(1)
        .filter_map(|dir| match std::fs::metadata(dir) {
            Ok(m) => Some(super::files::owner_of(&crate::sys::Stat::of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => Some(FileOwner {
                uid: 0,
                gid: 0,
                mode: 0,
            }),
        })
        .map(|owner| (owner, Need::Traverse))
        .collect()
}

/// [`ancestors`] of `dir` and `dir` itself (if it exists), each to be traversed: a
/// directory outside the store root that every mailbox also depends on (`INDEX=`,
/// `CONTROL=`, `ALT=`).
pub fn outside_root(dir: &std::path::Path) -> Vec<(FileOwner, Need)> {
    let mut deps = ancestors(dir);
    if let Ok(m) = std::fs::metadata(dir) {
        deps.push((
            super::files::owner_of(&crate::sys::Stat::of(&m)),
            Need::Traverse,
        ));
    }
    deps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(uid: u32, gid: u32, mode: u16) -> FileOwner {
        FileOwner { uid, gid, mode }
    }

    /// Would the kernel admit (uid, groups) with `want` bits on a node presented as `p`?
    fn admits(p: FileOwner, uid: u32, groups: &[u32], want: u16) -> bool {
        let bits = if uid == p.uid {
            class_bits(p.mode, 6)
        } else if groups.contains(&p.gid) {
            class_bits(p.mode, 3)
        } else {
            class_bits(p.mode, 0)
        };
        bits & want == want
    }

    #[test]
    fn a_private_home_hides_a_public_maildir() {
        let maildir = o(1000, 1000, 0o755);
        let home = o(1000, 1000, 0o700);
        assert_eq!(restrict(maildir, home, Need::Traverse).mode, 0o700);
        // A root-owned 0755 directory above takes nothing away.
        assert_eq!(
            restrict(maildir, o(0, 0, 0o755), Need::Traverse).mode,
            0o755
        );
    }

    #[test]
    fn an_unreadable_listing_directory_takes_only_read() {
        let folder = o(1000, 100, 0o755);
        let cur = o(1000, 100, 0o711);
        assert_eq!(restrict(folder, cur, Need::List).mode, 0o711);
        assert_eq!(restrict(folder, cur, Need::Traverse).mode, 0o755);
    }

    /// Exhaustive over small worlds: whoever the folded bits admit, the directory admits
    /// too (the guarantee), for every mode pair and owner/group relation.
    #[test]
    fn never_admits_what_the_directory_refuses() {
        let uids = [1u32, 2, 3];
        let gids = [10u32, 20];
        let memberships: Vec<Vec<u32>> = vec![vec![], vec![10], vec![20], vec![10, 20]];
        let modes: Vec<u16> = (0..0o1000).step_by(0o11).collect();
        for &nu in &uids[..2] {
            for &du in &uids[..2] {
                for &ng in &gids {
                    for &dg in &gids {
                        for &nm in &modes {
                            for &dm in &[0o700, 0o750, 0o705, 0o711, 0o755, 0o070, 0o007, 0o501] {
                                let node = o(nu, ng, nm);
                                let dir = o(du, dg, dm);
                                for need in [Need::Traverse, Need::List, Need::Read] {
                                    let p = restrict(node, dir, need);
                                    for &u in &uids {
                                        for groups in &memberships {
                                            for want in [0o4u16, 0o1] {
                                                if !admits(p, u, groups, want) {
                                                    continue;
                                                }
                                                let why = format!(
                                                    "{node:?} under {dir:?} {need:?}: uid {u} \
                                                     groups {groups:?} admitted as {p:?}"
                                                );
                                                if need != Need::Read {
                                                    assert!(admits(dir, u, groups, 0o1), "{why}");
                                                }
                                                if need != Need::Traverse && want == 0o4 {
                                                    assert!(admits(dir, u, groups, 0o4), "{why}");
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
