//! `LAYOUT=index`: the mailbox tree read from Dovecot's mailbox list index
//! (`dovecot.list.index` + `.log`, see `format::listindex`), through the same index engine
//! as every mailbox index (so a refresh reads only what Dovecot appended).
//!
//! Both file backends use it: each listed mailbox with a GUID lives in the directory named
//! by that GUID ([`Location::guid_dir`]); the backend maps GUIDs to its own paths. The list
//! index is the only record of the names, so a missing or damaged one is an error naming
//! it, never an empty listing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::cache::{FoundDir, MailboxList, Presented, present_root};
use super::stamp::Stamp;
use super::{MailboxName, StoreContext, files};
use crate::error::{Error, Result};
use crate::format::hex;
use crate::format::listindex::{self, LIST_EXT, ListNode};
use crate::index::pool::IndexPool;
use crate::index::reader::IndexPaths;
use crate::location::Location;
use crate::sys;

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    /// Its name, levels decoded (modified UTF-7, or UTF-8 with the `UTF-8` key).
    pub name: MailboxName,
    /// Its mailbox GUID (32 hex digits); `None` for a level that is no mailbox.
    pub guid: Option<String>,
}

/// The mailbox list of a `LAYOUT=index` store: every node of its list index; a node with
/// a GUID is a mailbox whose paths `paths_of` gives (`mail_of` names its mail directory),
/// presented by `present` from that directory's `lstat`, or like the root while the
/// directory is not there (that is found out when the mailbox is read). The list index's
/// files and each mailbox directory are stamped.
pub(super) fn mailbox_list<P>(
    ctx: &Arc<StoreContext>,
    pool: &IndexPool,
    loc: &Location,
    no_noselect: bool,
    paths_of: impl Fn(&str) -> P,
    mail_of: impl Fn(&P) -> &Path,
    present: impl Fn(&P, &sys::Stat) -> Presented,
) -> Result<MailboxList<P>> {
    let list = paths(loc);
    let mut stamp = Stamp::take(ctx, stamped(&list));
    let listed = read(pool, &list, loc)?;
    let root = present_root(&loc.root, &[&list.dir])?;
    let mut found: BTreeMap<MailboxName, FoundDir<P>> = BTreeMap::new();
    for node in listed {
        let paths = node.guid.map(|g| paths_of(&g));
        let presented = match &paths {
            Some(p) => {
                let mail = mail_of(p);
                stamp.push(mail.to_path_buf());
                match files::lstat(mail) {
                    Ok(st) => present(p, &st),
                    Err(_) => root,
                }
            }
            None => root,
        };
        found.insert(node.name, FoundDir { paths, presented });
    }
    Ok(MailboxList::from_found(found, root, no_noselect, stamp))
}

/// Where the list index of `loc` is.
pub(super) fn paths(loc: &Location) -> IndexPaths {
    let (dir, prefix) = loc.list_index_file();
    IndexPaths { dir, prefix }
}

/// The files a listing is read from, for its stamp (and so the watcher's feed): the
/// index, its logs, and the directory holding them (a rotation or a recreated index shows
/// there).
pub(super) fn stamped(paths: &IndexPaths) -> Vec<PathBuf> {
    vec![
        paths.dir.clone(),
        paths.dir.join(&paths.prefix),
        paths.dir.join(format!("{}.log", paths.prefix)),
    ]
}

/// Reads the tree: every node, sorted by name, names made unique as the directory walks
/// make them ([`files::unique_name`]).
pub(super) fn read(pool: &IndexPool, paths: &IndexPaths, loc: &Location) -> Result<Vec<Listed>> {
    let file = paths.dir.join(&paths.prefix);
    let log = paths.dir.join(format!("{}.log", paths.prefix));
    let missing = || {
        Error::layout(
            &log,
            "LAYOUT=index keeps the mailbox names only in the mailbox list index, and there \
             is neither it nor its log",
        )
    };
    // Asked before the pool: a reader opened earlier would otherwise go on serving the
    // tree of files that were removed since.
    if !files::exists_nofollow(&file) && !files::exists_nofollow(&log) {
        return Err(missing());
    }
    let view = pool.view(paths)?.ok_or_else(missing)?;
    let st = &view.state;
    let Some((_, ext)) = st.ext(LIST_EXT) else {
        // A list index Dovecot just created holds nothing yet: no mailbox at all (Dovecot
        // adds INBOX at its first access). Anything with records but no `list` data is
        // damaged.
        if st.records.is_empty() {
            return Ok(Vec::new());
        }
        return Err(Error::corrupt(
            &file,
            crate::format::FormatError::new(
                0,
                "records without the list extension (no mailbox names)",
            ),
        ));
    };
    let names = listindex::parse_names(&ext.hdr).map_err(|e| Error::corrupt(&file, e))?;
    let mut nodes = Vec::with_capacity(st.records.len());
    for rec in st.records.iter() {
        let uid = crate::index::records::record_uid(rec);
        let bytes = ext.slice(&rec).ok_or_else(|| {
            Error::corrupt(
                &file,
                crate::format::FormatError::new(0, format!("uid {uid}: no list extension data")),
            )
        })?;
        let list = listindex::parse_record(bytes).map_err(|e| Error::corrupt(&file, e))?;
        nodes.push(ListNode {
            uid,
            flags: rec.get(4).copied().unwrap_or(0),
            rec: list,
        });
    }
    let tree = listindex::build_tree(&names, &nodes).map_err(|e| Error::corrupt(&file, e))?;
    let mut out: BTreeMap<MailboxName, Option<String>> = BTreeMap::new();
    for node in tree {
        let decoded = MailboxName(
            node.levels
                .iter()
                .map(|l| files::decode_level(l, loc.utf8_names, &file))
                .collect(),
        );
        let raw: Vec<&[u8]> = node.levels.iter().map(Vec::as_slice).collect();
        let name = files::unique_name(&out, decoded, &raw, &file);
        out.insert(name, node.guid.map(|g| hex(&g)));
    }
    Ok(out
        .into_iter()
        .map(|(name, guid)| Listed { name, guid })
        .collect())
}

/// The error for a listed mailbox whose GUID directory is not there.
pub(super) fn missing_dir(name: &MailboxName, dir: &Path, list: &IndexPaths) -> Error {
    Error::layout(
        dir,
        format!(
            "the mailbox list index {} names mailbox {name} in this directory (its GUID), \
             which does not exist",
            list.dir.join(&list.prefix).display()
        ),
    )
}
