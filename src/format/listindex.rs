//! Dovecot's mailbox list index (`dovecot.list.index` + `.log`): with `LAYOUT=index` the
//! only place mailbox names live.
//!
//! It is an ordinary index (read by `crate::index`) whose `list` extension carries the tree,
//! as in Dovecot 2.3.19 `src/lib-storage/list/mailbox-list-index.h`:
//! - the extension header is `{ u8 refresh_flag; { u32 id; char name[]; NUL }... }`: one
//!   name per hierarchy *level*, by id, ids strictly increasing, padded with zeros
//!   (`mailbox_list_index_parse_header`);
//! - each record (one per node, its index UID the node's uid) holds
//!   `{ u32 name_id; u32 parent_uid; guid[16]; u32 uid_validity }`, `parent_uid` 0 for a
//!   top level; the GUID is all zero for a level that is no mailbox
//!   (`mailbox_list_index_parse_records`).
//!
//! Names are the storage names of the levels, unescaped (`mailbox_list_name_unescape` is
//! applied before they are stored): modified UTF-7, or UTF-8 with the `UTF-8` location key.
//!
//! Dovecot repairs what it finds broken here (new names, nodes moved to the root). A reader
//! cannot repair: every inconsistency is a [`FormatError`], never a guess.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::FormatError;
use super::le;

/// The extension holding the names and the tree.
pub const LIST_EXT: &str = "list";

/// Record flag bits (`enum mailbox_list_index_flags`, stored in the record's flags byte).
pub const FLAG_NONEXISTENT: u8 = 0x04; // MAIL_DELETED
/// `\NoSelect` (MAIL_DRAFT).
pub const FLAG_NOSELECT: u8 = 0x10;

/// One node's `list` extension bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListRecord {
    /// Id of this level's name in the header.
    pub name_id: u32,
    /// The parent node's uid (0: top level).
    pub parent_uid: u32,
    /// Mailbox GUID (all zero: not a mailbox).
    pub guid: [u8; 16],
}

/// Parses one record's `list` extension bytes (at least `name_id`, `parent_uid`, GUID).
pub fn parse_record(bytes: &[u8]) -> Result<ListRecord, FormatError> {
    let short = || FormatError::new(0, format!("list record of {} bytes (< 24)", bytes.len()));
    let name_id = le::u32_at(bytes, 0).ok_or_else(short)?;
    let parent_uid = le::u32_at(bytes, 4).ok_or_else(short)?;
    let guid: [u8; 16] = bytes
        .get(8..24)
        .and_then(|g| g.try_into().ok())
        .ok_or_else(short)?;
    Ok(ListRecord {
        name_id,
        parent_uid,
        guid,
    })
}

/// Parses the `list` extension header: name id -> level name (raw bytes).
pub fn parse_names(hdr: &[u8]) -> Result<HashMap<u32, Vec<u8>>, FormatError> {
    let mut names = HashMap::new();
    // The fixed header is one byte (refresh_flag).
    let mut at = 1usize;
    let mut prev_id = 0u32;
    while at < hdr.len() {
        let rest = &hdr[at..];
        // Zero padding ends the table (Dovecot: "allow extra space in the end as long as
        // last id=0"); a shorter zero tail is padding too.
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let id = le::u32_at(hdr, at)
            .ok_or_else(|| FormatError::new(at, "list index name table ends inside an id"))?;
        if id <= prev_id {
            return Err(FormatError::new(
                at,
                format!("list index name id {id} after {prev_id} (ids must increase)"),
            ));
        }
        prev_id = id;
        at += 4;
        let len = hdr[at..].iter().position(|b| *b == 0).ok_or_else(|| {
            FormatError::new(at, format!("list index name {id} is not NUL-terminated"))
        })?;
        let name = &hdr[at..at + len];
        if std::str::from_utf8(name).is_err() {
            return Err(FormatError::new(
                at,
                format!("list index name {id} is not valid UTF-8"),
            ));
        }
        names.insert(id, name.to_vec());
        at += len + 1;
    }
    Ok(names)
}

/// A node as the index holds it: its uid, flags byte and `list` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListNode {
    /// The node's index UID.
    pub uid: u32,
    /// The record's flags byte ([`FLAG_NONEXISTENT`], [`FLAG_NOSELECT`], ...).
    pub flags: u8,
    /// Its `list` extension bytes.
    pub rec: ListRecord,
}

/// A node with its full name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedNode {
    /// The raw level names from the top level down.
    pub levels: Vec<Vec<u8>>,
    /// The mailbox GUID when the node is a mailbox (Dovecot treats a node with a GUID as
    /// selectable whatever its flags say, and one without as `\NoSelect`).
    pub guid: Option<[u8; 16]>,
}

/// Joins names and parent links into full names, sorted by raw levels. Fails on a name
/// id not in the table, a parent that does not exist, a parent loop, a duplicate uid or
/// two nodes with the same full name.
pub fn build_tree(
    names: &HashMap<u32, Vec<u8>>,
    nodes: &[ListNode],
) -> Result<Vec<ListedNode>, FormatError> {
    let mut by_uid: HashMap<u32, &ListNode> = HashMap::with_capacity(nodes.len());
    for n in nodes {
        if by_uid.insert(n.uid, n).is_some() {
            return Err(FormatError::new(
                0,
                format!("list index uid {} twice", n.uid),
            ));
        }
    }
    let mut out = Vec::with_capacity(nodes.len());
    let mut seen: HashSet<Vec<Vec<u8>>> = HashSet::with_capacity(nodes.len());
    for n in nodes {
        let mut levels = Vec::new();
        let mut cur = *n;
        loop {
            let name = names.get(&cur.rec.name_id).ok_or_else(|| {
                FormatError::new(
                    0,
                    format!(
                        "list index uid {}: name_id={} not in the index header",
                        cur.uid, cur.rec.name_id
                    ),
                )
            })?;
            levels.push(name.clone());
            if cur.rec.parent_uid == 0 {
                break;
            }
            if levels.len() > nodes.len() {
                return Err(FormatError::new(
                    0,
                    format!("list index uid {}: parent_uid links loop", n.uid),
                ));
            }
            cur = **by_uid.get(&cur.rec.parent_uid).ok_or_else(|| {
                FormatError::new(
                    0,
                    format!(
                        "list index uid {}: parent_uid={} points to no record",
                        cur.uid, cur.rec.parent_uid
                    ),
                )
            })?;
        }
        levels.reverse();
        if !seen.insert(levels.clone()) {
            let shown: Vec<String> = levels
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            return Err(FormatError::new(
                0,
                format!("list index holds mailbox {:?} twice", shown.join("/")),
            ));
        }
        let guid = Some(n.rec.guid).filter(|g| g.iter().any(|b| *b != 0));
        out.push(ListedNode { levels, guid });
    }
    out.sort_by(|a, b| a.levels.cmp(&b.levels));
    Ok(out)
}

/// Sorted name table helper for tests and dumps: id -> name as text.
pub fn names_sorted(names: &HashMap<u32, Vec<u8>>) -> BTreeMap<u32, String> {
    names
        .iter()
        .map(|(id, n)| (*id, String::from_utf8_lossy(n).into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::testutil::XorShift;

    /// The header bytes Dovecot 2.3.19 wrote for INBOX, Work, Sub, "Über Spaß" (from a
    /// `doveadm dump` of a real dovecot.list.index.log), padded to 64 bytes.
    fn real_header() -> Vec<u8> {
        let hex = "0001000000494e424f580002000000576f726b0003000000537562000400000026414e772d\
                   6265722053706126414e382d0000000000";
        let mut b: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        b.resize(64, 0);
        b
    }

    fn node(uid: u32, name_id: u32, parent_uid: u32, guid: u8) -> ListNode {
        ListNode {
            uid,
            flags: 0,
            rec: ListRecord {
                name_id,
                parent_uid,
                guid: [guid; 16],
            },
        }
    }

    #[test]
    fn parses_dovecots_name_table() {
        let names = parse_names(&real_header()).unwrap();
        let sorted = names_sorted(&names);
        assert_eq!(sorted[&1], "INBOX");
        assert_eq!(sorted[&2], "Work");
        assert_eq!(sorted[&3], "Sub");
        assert_eq!(sorted[&4], "&ANw-ber Spa&AN8-");
        assert_eq!(sorted.len(), 4);
        assert!(parse_names(&[]).unwrap().is_empty());
        assert!(parse_names(&[0]).unwrap().is_empty());
    }

    #[test]
    fn refuses_broken_name_tables() {
        let mut b = real_header();
        b[1] = 9; // first id 9, then 2: not increasing
        assert!(parse_names(&b).unwrap_err().what.contains("must increase"));
        let b = [0u8, 1, 0, 0, 0, b'a', b'b'];
        assert!(parse_names(&b).unwrap_err().what.contains("NUL"));
        let b = [0u8, 1, 0, 0, 0, 0xff, 0];
        assert!(parse_names(&b).unwrap_err().what.contains("UTF-8"));
        let b = [0u8, 1, 0, 0, 0, b'a', 0, 5, 0];
        assert!(parse_names(&b).unwrap_err().what.contains("inside an id"));
    }

    #[test]
    fn builds_full_names_from_parent_links() {
        let names = parse_names(&real_header()).unwrap();
        // Sub (uid 3) under Work (uid 2), which is no mailbox; the parent comes later.
        let nodes = [node(3, 3, 2, 7), node(1, 1, 0, 1), node(2, 2, 0, 0)];
        let tree = build_tree(&names, &nodes).unwrap();
        let full: Vec<(String, bool)> = tree
            .iter()
            .map(|n| {
                let l: Vec<String> = n
                    .levels
                    .iter()
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .collect();
                (l.join("/"), n.guid.is_some())
            })
            .collect();
        assert_eq!(
            full,
            [
                ("INBOX".to_string(), true),
                ("Work".to_string(), false),
                ("Work/Sub".to_string(), true)
            ]
        );
    }

    #[test]
    fn refuses_broken_trees() {
        let names = parse_names(&real_header()).unwrap();
        let missing_name = build_tree(&names, &[node(1, 9, 0, 1)]).unwrap_err();
        assert!(missing_name.what.contains("name_id=9"), "{missing_name}");
        let orphan = build_tree(&names, &[node(1, 1, 5, 1)]).unwrap_err();
        assert!(orphan.what.contains("parent_uid=5"), "{orphan}");
        let looped = build_tree(&names, &[node(1, 2, 2, 1), node(2, 3, 1, 1)]).unwrap_err();
        assert!(looped.what.contains("loop"), "{looped}");
        let twice = build_tree(&names, &[node(1, 2, 0, 1), node(2, 2, 0, 2)]).unwrap_err();
        assert!(twice.what.contains("twice"), "{twice}");
        assert!(parse_record(&[0; 23]).is_err());
    }

    #[test]
    fn never_panics_on_noise() {
        let mut rng = XorShift(0x11_57_1d_e4);
        for _ in 0..2000 {
            let len = rng.below(80) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = parse_names(&b);
            let _ = parse_record(&b);
            if let Some(x) = b.get_mut(0) {
                *x = 0;
            }
            if let Ok(names) = parse_names(&b) {
                let nodes: Vec<ListNode> = (0..rng.below(6) as u32)
                    .map(|i| node(i + 1, rng.below(5) as u32, rng.below(6) as u32, i as u8))
                    .collect();
                let _ = build_tree(&names, &nodes);
            }
        }
    }
}
