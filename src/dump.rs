//! `mailfs dump PATH`: decode one of Dovecot's files for an admin, as `doveadm dump` does.
//!
//! Every kind of file is turned into one [`Value`] tree; the human-readable text and the
//! `--json` output are two renderings of that same tree, so they never disagree.
//!
//! Index files are dumped through the index engine: `dump .../dovecot.index` shows the
//! snapshot *plus* every complete transaction of its logs (the state Dovecot would use),
//! and works when only the log exists, like `doveadm dump`.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{cache, dbox, hex, le, log, maildir};
use crate::index::reader::{IndexPaths, IndexReader};
use crate::index::records::record_uid;

/// A dumped value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Num(i128),
    /// Text.
    Str(String),
    /// True or false.
    Bool(bool),
    /// An ordered list.
    List(Vec<Value>),
    /// Named fields, in order.
    Obj(Vec<(String, Value)>),
}

impl Value {
    fn obj() -> Value {
        Value::Obj(Vec::new())
    }

    fn with(mut self, key: &str, v: impl Into<Value>) -> Value {
        if let Value::Obj(fields) = &mut self {
            fields.push((key.to_string(), v.into()));
        }
        self
    }

    /// Renders as JSON.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Str(s) => json_string(out, s),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
            Value::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_string(out, k);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// Renders as indented `key = value` text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out, 0);
        out
    }

    fn write_text(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        match self {
            Value::Obj(fields) => {
                for (k, v) in fields {
                    match v {
                        Value::Obj(_) => {
                            let _ = writeln!(out, "{pad}{k}:");
                            v.write_text(out, depth + 1);
                        }
                        Value::List(items) if items.iter().any(|i| matches!(i, Value::Obj(_))) => {
                            let _ = writeln!(out, "{pad}{k}: ({} entries)", items.len());
                            for item in items {
                                let _ = writeln!(out, "{pad}  -");
                                item.write_text(out, depth + 2);
                            }
                        }
                        _ => {
                            let _ = writeln!(out, "{pad}{k} = {}", v.scalar_text());
                        }
                    }
                }
            }
            other => {
                let _ = writeln!(out, "{pad}{}", other.scalar_text());
            }
        }
    }

    fn scalar_text(&self) -> String {
        match self {
            Value::Num(n) => n.to_string(),
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::List(items) => items
                .iter()
                .map(Value::scalar_text)
                .collect::<Vec<_>>()
                .join(" "),
            Value::Obj(_) => self.to_json(),
        }
    }
}

/// Integers that fit `Value::Num` losslessly.
macro_rules! value_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Num(i128::from(v))
            }
        }
    )*};
}
value_from_int!(u8, u16, u32, u64, i32);

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Num(v as i128)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What kind of file a path names, from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Index,
    Log,
    Cache,
    Uidlist,
    Keywords,
    Dbox,
}

fn kind_of(path: &Path) -> Option<Kind> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".log") || name.ends_with(".log.2") {
        Some(Kind::Log)
    } else if name.ends_with(".cache") {
        Some(Kind::Cache)
    } else if name.ends_with("index") {
        Some(Kind::Index)
    } else if name == "dovecot-uidlist" {
        Some(Kind::Uidlist)
    } else if name == "dovecot-keywords" {
        Some(Kind::Keywords)
    } else if name.starts_with("u.") || name.starts_with("m.") {
        Some(Kind::Dbox)
    } else {
        None
    }
}

/// Recognises a dbox file by its first line ("2 M1e C..."), whatever its name. A file that
/// cannot be opened or read (missing, a directory, unreadable) is that I/O error; one too
/// short for the line is no dbox file.
fn sniff(path: &Path) -> Result<Option<Kind>> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    match file.read_exact(&mut head) {
        Ok(()) => Ok(matches!(&head, [b'1' | b'2', b' ', b'M', _]).then_some(Kind::Dbox)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Decodes the file at `path` into a value tree.
pub fn dump(path: &Path) -> Result<Value> {
    let kind = match kind_of(path) {
        Some(kind) => kind,
        None => sniff(path)?.ok_or_else(|| {
            Error::layout(
                path,
                "unknown file type (expected dovecot.index*, *.log, *.log.2, *.cache, \
                 dovecot-uidlist, dovecot-keywords, or a dbox u.N / m.N)",
            )
        })?,
    };
    let read = || std::fs::read(path).map_err(|e| Error::io(path, e));
    match kind {
        Kind::Index => {
            // An index may be named when only its log exists; when neither does, the
            // index's own error says so.
            let mut log = path.as_os_str().to_owned();
            log.push(".log");
            if let Err(e) = std::fs::metadata(path)
                && !Path::new(&log).exists()
            {
                return Err(Error::io(path, e));
            }
            dump_index(path)
        }
        Kind::Log => dump_log(path, &read()?),
        Kind::Cache => dump_cache(path, &read()?),
        Kind::Uidlist => dump_uidlist(path, &read()?),
        Kind::Keywords => Ok(dump_keywords(&read()?)),
        Kind::Dbox => dump_dbox(path, &read()?),
    }
}

fn dump_index(path: &Path) -> Result<Value> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let prefix = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reader = IndexReader::open(IndexPaths {
        dir: dir.to_path_buf(),
        prefix,
    })?;
    let view = reader.view();
    let st = &view.state;
    let h = st.header();
    let header = Value::obj()
        .with(
            "version",
            format!("{}.{}", h.major_version, h.minor_version),
        )
        .with("base_header_size", h.base_header_size)
        .with("record_size", h.record_size)
        .with("indexid", h.indexid)
        .with("flags", h.flags)
        .with("uid_validity", h.uid_validity)
        .with("next_uid", h.next_uid)
        .with("messages_count", h.messages_count)
        .with("seen_messages_count", h.seen_messages_count)
        .with("deleted_messages_count", h.deleted_messages_count)
        .with("first_recent_uid", h.first_recent_uid)
        .with("log_file_seq", view.pos.file_seq)
        .with("log_file_offset", view.pos.offset)
        .with("log2_rotate_time", h.log2_rotate_time);
    let exts: Vec<Value> = st
        .exts
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Value::obj()
                .with("ext_id", i)
                .with("name", e.name.as_str())
                .with("reset_id", e.reset_id)
                .with("hdr_size", e.hdr.len())
                .with("record_offset", e.record_offset)
                .with("record_size", e.record_size)
                .with("record_align", e.record_align)
                .with("hdr", hex(&e.hdr))
        })
        .collect();
    let records: Vec<Value> = st
        .records
        .iter()
        .map(|rec| {
            let mut v = Value::obj()
                .with("uid", record_uid(rec))
                .with("flags", rec.get(4).copied().unwrap_or(0));
            for e in &st.exts {
                if e.name == crate::format::index::KEYWORDS_EXT {
                    continue;
                }
                if let Some(bytes) = e.slice(&rec) {
                    v = v.with(&e.name, hex(bytes));
                }
            }
            v.with(
                "keywords",
                st.record_keywords(&rec)
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    Ok(Value::obj()
        .with("file", path.display().to_string())
        .with("type", "index")
        .with("header", header)
        .with("extensions", exts)
        .with("keywords", st.keywords.clone())
        .with("unknown_log_records", view.unknown_records)
        .with("records", records))
}

fn dump_log(path: &Path, data: &[u8]) -> Result<Value> {
    let h = log::parse_header(data).map_err(|e| Error::corrupt(path, e))?;
    let header = Value::obj()
        .with(
            "version",
            format!("{}.{}", h.major_version, h.minor_version),
        )
        .with("hdr_size", h.hdr_size)
        .with("indexid", h.indexid)
        .with("file_seq", h.file_seq)
        .with("prev_file_seq", h.prev_file_seq)
        .with("prev_file_offset", h.prev_file_offset)
        .with("create_stamp", h.create_stamp)
        .with("initial_modseq", h.initial_modseq);
    let scan = log::scan(data, u64::from(h.hdr_size)).map_err(|e| Error::corrupt(path, e))?;
    let mut records = Vec::with_capacity(scan.records.len());
    for raw in &scan.records {
        let rec = log::decode(raw).map_err(|e| Error::corrupt(path, e))?;
        records.push(
            Value::obj()
                .with("offset", raw.offset)
                .with("size", raw.size)
                .with("type", format!("{:#x}", raw.kind()))
                .with("external", raw.is_external())
                .with("record", describe_record(&rec)),
        );
    }
    Ok(Value::obj()
        .with("file", path.display().to_string())
        .with("type", "log")
        .with("header", header)
        .with("records", records)
        .with("end", scan.end)
        .with("tail", format!("{:?}", scan.stop)))
}

fn ranges(r: &[(u32, u32)]) -> Value {
    Value::List(
        r.iter()
            .map(|(a, b)| Value::Str(format!("{a}-{b}")))
            .collect(),
    )
}

fn describe_record(rec: &log::Record<'_>) -> Value {
    use log::Record as R;
    match rec {
        R::Append(a) => Value::obj().with(
            "append",
            Value::List(
                a.iter()
                    .map(|r| Value::obj().with("uid", r.uid).with("flags", r.flags))
                    .collect(),
            ),
        ),
        R::Expunge { ranges: r, .. } => Value::obj().with("expunge", ranges(r)),
        R::ExpungeGuid { items, .. } => Value::obj().with(
            "expunge_guid",
            Value::List(
                items
                    .iter()
                    .map(|(u, g)| Value::obj().with("uid", *u).with("guid", hex(g)))
                    .collect(),
            ),
        ),
        R::FlagUpdate(f) => Value::obj().with(
            "flag_update",
            Value::List(
                f.iter()
                    .map(|u| {
                        Value::obj()
                            .with("uids", format!("{}-{}", u.uid1, u.uid2))
                            .with("add", u.add)
                            .with("remove", u.remove)
                    })
                    .collect(),
            ),
        ),
        R::HeaderUpdate(items) | R::ExtHdrUpdate(items) | R::ExtHdrUpdate32(items) => {
            let name = match rec {
                R::HeaderUpdate(_) => "header_update",
                _ => "ext_hdr_update",
            };
            Value::obj().with(
                name,
                Value::List(
                    items
                        .iter()
                        .map(|i| {
                            Value::obj()
                                .with("offset", i.offset)
                                .with("data", hex(i.data))
                        })
                        .collect(),
                ),
            )
        }
        R::ExtIntro(intros) => Value::obj().with(
            "ext_intro",
            Value::List(
                intros
                    .iter()
                    .map(|i| {
                        Value::obj()
                            .with(
                                "ext_id",
                                if i.ext_id == u32::MAX {
                                    -1
                                } else {
                                    i.ext_id as i32
                                },
                            )
                            .with("name", lossy(i.name))
                            .with("reset_id", i.reset_id)
                            .with("hdr_size", i.hdr_size)
                            .with("record_size", i.record_size)
                            .with("record_align", i.record_align)
                            .with("flags", i.flags)
                    })
                    .collect(),
            ),
        ),
        R::ExtReset {
            new_reset_id,
            preserve_data,
        } => Value::obj().with(
            "ext_reset",
            Value::obj()
                .with("new_reset_id", *new_reset_id)
                .with("preserve_data", *preserve_data),
        ),
        R::ExtRecUpdate(p) => Value::obj().with("ext_rec_update", hex(p)),
        R::ExtAtomicInc(items) => Value::obj().with(
            "ext_atomic_inc",
            Value::List(
                items
                    .iter()
                    .map(|(u, d)| Value::obj().with("uid", *u).with("diff", *d))
                    .collect(),
            ),
        ),
        R::KeywordUpdate {
            add,
            name,
            ranges: r,
        } => Value::obj().with(
            "keyword_update",
            Value::obj()
                .with("op", if *add { "add" } else { "remove" })
                .with("name", lossy(name))
                .with("uids", ranges(r)),
        ),
        R::KeywordReset(r) => Value::obj().with("keyword_reset", ranges(r)),
        R::ModseqUpdate(items) => Value::obj().with(
            "modseq_update",
            Value::List(
                items
                    .iter()
                    .map(|(u, m)| Value::obj().with("uid", *u).with("modseq", *m))
                    .collect(),
            ),
        ),
        R::IndexDeleted => Value::Str("index_deleted".into()),
        R::IndexUndeleted => Value::Str("index_undeleted".into()),
        R::Boundary { size } => Value::obj().with("boundary", *size),
        R::AttributeUpdate(p) => Value::obj().with("attribute_update", hex(p)),
        R::Unknown(t) => Value::obj().with("unknown_type", format!("{t:#x}")),
    }
}

fn dump_cache(path: &Path, data: &[u8]) -> Result<Value> {
    let h = cache::parse_cache_header(data).map_err(|e| Error::corrupt(path, e))?;
    let fields = cache::parse_fields(data, &h).map_err(|e| Error::corrupt(path, e))?;
    let header = Value::obj()
        .with(
            "version",
            format!("{}.{}", h.major_version, h.minor_version),
        )
        .with("indexid", h.indexid)
        .with("file_seq", h.file_seq)
        .with("record_count", h.record_count)
        .with("deleted_record_count", h.deleted_record_count)
        .with("field_header_offset", h.field_header_offset);
    let field_list: Vec<Value> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            Value::obj()
                .with("index", i)
                .with("name", f.name.as_str())
                .with("type", format!("{:?}", f.field_type))
                .with(
                    "size",
                    if f.size == cache::VARIABLE_SIZE {
                        Value::Str("variable".into())
                    } else {
                        f.size.into()
                    },
                )
                .with("decision", f.decision)
                .with("last_used", f.last_used)
        })
        .collect();
    let mut out = Value::obj()
        .with("file", path.display().to_string())
        .with("type", "cache")
        .with("header", header)
        .with("fields", field_list);
    // With the index beside it, show each message's cached values.
    let index_path = path.with_file_name(
        path.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".cache"))
            .unwrap_or("dovecot.index"),
    );
    if let Ok(reader) = IndexReader::open(IndexPaths {
        dir: index_path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        prefix: index_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }) {
        let view = reader.view();
        let st = &view.state;
        if let Some((_, ext)) = st.ext("cache")
            && ext.reset_id == h.file_seq
        {
            let mut messages = Vec::new();
            for rec in st.records.iter() {
                let Some(off) = ext.slice(&rec).and_then(le::u32_exact) else {
                    continue;
                };
                if off == 0 {
                    continue;
                }
                let mut v = Value::obj()
                    .with("uid", record_uid(rec))
                    .with("offset", off);
                match cache::record_fields(data, off, &fields) {
                    Ok(items) => {
                        for (idx, bytes) in items {
                            let name = fields
                                .get(idx as usize)
                                .map_or_else(|| format!("field{idx}"), |f| f.name.clone());
                            v = v.with(&name, hex(bytes));
                        }
                    }
                    Err(e) => v = v.with("error", e.to_string()),
                }
                messages.push(v);
            }
            out = out.with("messages", messages);
        }
    }
    Ok(out)
}

fn dump_dbox(path: &Path, data: &[u8]) -> Result<Value> {
    let (header, messages, tail) = dbox::parse_file(data).map_err(|e| Error::corrupt(path, e))?;
    let file = Value::obj()
        .with("version", header.version)
        .with("header_size", header.header_size)
        .with("msg_header_size", header.msg_header_size)
        .with("create_stamp", header.create_stamp.unwrap_or(0));
    let list: Vec<Value> = messages
        .iter()
        .map(|m| {
            let md = &m.metadata;
            let mut v = Value::obj()
                .with("offset", m.header.offset)
                .with("body_offset", m.header.body_offset)
                .with("body_size", m.header.body_size)
                .with("next_offset", m.next_offset());
            let opt = [
                ("guid", md.guid.clone().map(Value::Str)),
                ("received", md.received.map(Value::from)),
                ("virtual_size", md.virtual_size.map(Value::from)),
                ("physical_size", md.physical_size.map(Value::from)),
                ("pop3_uidl", md.pop3_uidl.clone().map(Value::Str)),
                ("pop3_order", md.pop3_order.map(Value::from)),
                ("orig_mailbox", md.orig_mailbox.clone().map(Value::Str)),
                ("ext_refs", md.ext_refs.clone().map(Value::Str)),
            ];
            for (k, val) in opt {
                if let Some(val) = val {
                    v = v.with(k, val);
                }
            }
            for (key, value) in &md.other {
                v = v.with(&format!("{}", *key as char), value.as_str());
            }
            v
        })
        .collect();
    let mut out = Value::obj()
        .with("file", path.display().to_string())
        .with("type", "dbox")
        .with("header", file)
        .with("messages", list);
    if let Some(e) = tail {
        out = out.with("tail_error", e.to_string());
    }
    Ok(out)
}

fn dump_uidlist(path: &Path, data: &[u8]) -> Result<Value> {
    let u = maildir::parse_uidlist(data).map_err(|e| Error::corrupt(path, e))?;
    let records: Vec<Value> = u
        .records
        .iter()
        .map(|r| {
            let mut v = Value::obj().with("uid", r.uid).with("base", lossy(&r.base));
            if let Some(s) = r.physical_size {
                v = v.with("physical_size", s);
            }
            if let Some(s) = r.virtual_size {
                v = v.with("virtual_size", s);
            }
            if let Some(g) = &r.guid {
                v = v.with("guid", g.as_str());
            }
            v
        })
        .collect();
    Ok(Value::obj()
        .with("file", path.display().to_string())
        .with("type", "uidlist")
        .with("version", u.version)
        .with("uid_validity", u.uid_validity)
        .with("next_uid", u.next_uid)
        .with("mailbox_guid", u.mailbox_guid.unwrap_or_default())
        .with("records", records))
}

fn dump_keywords(data: &[u8]) -> Value {
    let k = maildir::parse_keywords(data);
    let names: Vec<Value> = (0..26u8)
        .map(|i| {
            Value::obj()
                .with("letter", ((b'a' + i) as char).to_string())
                .with("name", k.name(i))
        })
        .collect();
    Value::obj()
        .with("type", "keywords")
        .with("keywords", names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_nests() {
        let v = Value::obj()
            .with("a", 1u32)
            .with("s", "x\"y\n\u{1}")
            .with("l", vec![1u32, 2]);
        assert_eq!(v.to_json(), r#"{"a":1,"s":"x\"y\n\u0001","l":[1,2]}"#);
        assert!(v.to_text().contains("a = 1"));
    }

    #[test]
    fn dumps_real_logs_and_indexes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats");
        let log = dump(&dir.join("maildir-basic.index.log")).expect("log");
        let text = log.to_text();
        assert!(text.contains("append"), "{text}");
        let tmp = std::env::temp_dir().join(format!("mailfs-dump-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::copy(dir.join("maildir.dovecot.index"), tmp.join("dovecot.index")).unwrap();
        let idx = dump(&tmp.join("dovecot.index")).expect("index without its log");
        assert!(
            idx.to_json()
                .contains("\"keywords\":[\"$Label1\",\"work\"]"),
            "{}",
            idx.to_json()
        );
        std::fs::remove_dir_all(&tmp).unwrap();
        assert!(dump(Path::new("/nonexistent/whatever.txt")).is_err());
        let tmp2 = std::env::temp_dir().join(format!("mailfs-dump-m-{}", std::process::id()));
        std::fs::create_dir_all(&tmp2).unwrap();
        std::fs::copy(dir.join("dbox-mdbox-m.1"), tmp2.join("m.1")).unwrap();
        let m = dump(&tmp2.join("m.1")).expect("m.1").to_json();
        std::fs::remove_dir_all(&tmp2).unwrap();
        assert_eq!(m.matches("\"body_offset\"").count(), 7, "{m}");
    }
}
