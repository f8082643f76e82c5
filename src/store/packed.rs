//! Up to a few hundred messages of a view packed into columns (one chunk of
//! [`Messages`](super::Messages)), so that a message costs a row (32 bytes while the chunk
//! is open, about 8-12 once it is sealed into bit columns), 16 bytes for its GUID when it
//! is hex, and its Maildir file name and a GUID that is not hex (a store migrated from
//! Maildir keeps the Maildir base names as GUIDs; its place is in the row), each without
//! the sizes the row holds and, when it has a common form, as its shape's index and its
//! numbers (about 10 bytes for a Dovecot name of 31), instead of a whole [`MessageMeta`]
//! (136 bytes) and heap blocks for the strings.
//!
//! Packing is lossless by construction: [`Chunk::get`] gives back exactly the
//! `MessageMeta` that was stored. A message whose fields do not all fit the row (a size or
//! date beyond 32 bits, a problem, an mbox locator, a name or GUID over 255 bytes, a
//! chunk with more than 256 owners or keyword sets) is kept whole
//! beside the rows ("spilled"); the row then only holds its UID.
//!
//! Invariants: rows are in UID order (the caller keeps it); sealed rows are never changed
//! in place (a change opens them, [`Chunk::seal`] packs them again); `guids` is empty or
//! as long as `rows`; a row's strings are in `strings` ([`Strings`]):
//! its Maildir name at its `locator` place, its GUID text at its `text` place, each
//! stored with the row's received date (a shaped name's first number may be kept against
//! it); `strings.garbage` counts the bytes no row points at; `spilled` is sorted by UID
//! and holds exactly the rows tagged [`SPILLED`].

use super::messages::{Brief, uid_of};
use super::shaped;
use super::{FileOwner, Guid, KeywordSet, Locator, MailFlags, MessageKey, MessageMeta};
use crate::index::bitpack::BitColumns;

/// GUID kinds (bits 0-1): none; 16 bytes in `guids`; its Maildir file's base name
/// ([`Guid::maildir_base`]); text in `strings`, at the row's `text` place.
const GUID_HEX: u8 = 1;
const GUID_MAILDIR_BASE: u8 = 2;
const GUID_TEXT: u8 = 3;
const GUID_MASK: u8 = 3;
/// Locator kinds (bits 2-4).
const LOC_SDBOX: u8 = 0;
const LOC_MDBOX: u8 = 1 << 2;
const LOC_MAILDIR_CUR: u8 = 2 << 2;
const LOC_MAILDIR_NEW: u8 = 3 << 2;
const LOC_REMOTE: u8 = 4 << 2;
const LOC_MASK: u8 = 7 << 2;
/// The Maildir name / the GUID text is kept without its `,S=<size>,W=<vsize>` (see
/// [`strip_sizes`]).
const NAME_SIZES: u8 = 1 << 5;
const GUID_SIZES: u8 = 1 << 6;
/// The message is kept whole in `spilled`.
const SPILLED: u8 = 1 << 7;

/// One message's fixed-size part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Row {
    uid: u32,
    size: u32,
    virtual_size: u32,
    received: u32,
    saved: u32,
    /// Maildir: its name's place in `strings`; mdbox: the map UID.
    locator: u32,
    /// Its GUID text's place in `strings` (when tagged [`GUID_TEXT`]).
    text: u32,
    flags: u8,
    /// Index in `owners`.
    owner: u8,
    /// Index in `keyword_sets`.
    keywords: u8,
    /// `GUID_*`, `LOC_*` and `SPILLED` bits.
    tag: u8,
}

/// A row's bytes while its chunk is open (kept at 32).
#[cfg(test)]
const ROW_BYTES: usize = std::mem::size_of::<Row>();

/// A row's fields as the columns of a sealed chunk, in [`Row`] order.
const UID: usize = 0;
const SIZE: usize = 1;
const VIRTUAL_SIZE: usize = 2;
const RECEIVED: usize = 3;
const SAVED: usize = 4;
const LOCATOR: usize = 5;
const TEXT: usize = 6;
const FLAGS: usize = 7;
const OWNER: usize = 8;
const KEYWORDS: usize = 9;
const TAG: usize = 10;
const COLUMNS: usize = 11;
/// The earlier column each column may be stored against (see [`BitColumns::pack`]): the
/// virtual size against the size, the received date against the UID (dates that follow
/// delivery order), the saved date against the received one, the map UID against the UID.
const REFERENCES: [&[usize]; COLUMNS] = {
    let mut refs: [&[usize]; COLUMNS] = [&[]; COLUMNS];
    refs[VIRTUAL_SIZE] = &[SIZE];
    refs[RECEIVED] = &[UID];
    refs[SAVED] = &[RECEIVED];
    refs[LOCATOR] = &[UID];
    refs
};

impl Row {
    fn column(&self, c: usize) -> u32 {
        match c {
            UID => self.uid,
            SIZE => self.size,
            VIRTUAL_SIZE => self.virtual_size,
            RECEIVED => self.received,
            SAVED => self.saved,
            LOCATOR => self.locator,
            TEXT => self.text,
            FLAGS => u32::from(self.flags),
            OWNER => u32::from(self.owner),
            KEYWORDS => u32::from(self.keywords),
            _ => u32::from(self.tag),
        }
    }
}

/// A chunk's rows: open (a `Vec`, while the chunk is filled or changed) or sealed (bit
/// packed columns, about 10 bytes a row where an open row takes 32; see
/// [`Chunk::seal`]). Either gives back the same rows.
#[derive(Debug, Clone)]
enum Rows {
    Open(Vec<Row>),
    Sealed(BitColumns),
}

impl Default for Rows {
    fn default() -> Rows {
        Rows::Open(Vec::new())
    }
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Open(rows) => rows.len(),
            Rows::Sealed(b) => b.rows(),
        }
    }

    fn uid(&self, i: usize) -> u32 {
        match self {
            Rows::Open(rows) => rows[i].uid,
            Rows::Sealed(b) => b.get(i, UID),
        }
    }

    fn get(&self, i: usize) -> Row {
        match self {
            Rows::Open(rows) => rows[i],
            Rows::Sealed(b) => {
                // Narrowing is exact: these columns were packed from u8 fields.
                let small = |c| b.get(i, c) as u8;
                Row {
                    uid: b.get(i, UID),
                    size: b.get(i, SIZE),
                    virtual_size: b.get(i, VIRTUAL_SIZE),
                    received: b.get(i, RECEIVED),
                    saved: b.get(i, SAVED),
                    locator: b.get(i, LOCATOR),
                    text: b.get(i, TEXT),
                    flags: small(FLAGS),
                    owner: small(OWNER),
                    keywords: small(KEYWORDS),
                    tag: small(TAG),
                }
            }
        }
    }

    /// Row `i` with only its UID, size and tag read (the rest zero).
    fn brief(&self, i: usize) -> Row {
        match self {
            Rows::Open(rows) => rows[i],
            Rows::Sealed(b) => Row {
                uid: b.get(i, UID),
                size: b.get(i, SIZE),
                tag: b.get(i, TAG) as u8,
                ..Row::default()
            },
        }
    }

    /// The rows as a `Vec` to change, unpacking them if sealed.
    fn open(&mut self) -> &mut Vec<Row> {
        if let Rows::Sealed(_) = self {
            let rows = (0..self.len()).map(|i| self.get(i)).collect();
            *self = Rows::Open(rows);
        }
        match self {
            Rows::Open(rows) => rows,
            Rows::Sealed(_) => unreachable!("opened above"),
        }
    }

    fn seal(&mut self) {
        if let Rows::Open(rows) = self {
            let packed =
                BitColumns::pack(rows.len(), COLUMNS, |r, c| rows[r].column(c), &REFERENCES);
            *self = Rows::Sealed(packed);
        }
    }

    fn is_sealed(&self) -> bool {
        matches!(self, Rows::Sealed(_))
    }
}

/// Packed messages (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    rows: Rows,
    guids: Vec<[u8; 16]>,
    strings: Strings,
    owners: Vec<FileOwner>,
    keyword_sets: Vec<KeywordSet>,
    spilled: Vec<MessageMeta>,
}

/// What a message packs into, before it is placed.
struct Packed<'a> {
    row: Row,
    guid: Option<[u8; 16]>,
    /// A GUID that is neither hex nor the Maildir base name.
    guid_text: Option<&'a [u8]>,
    /// Maildir: the name after `cur/` or `new/`.
    name: Option<&'a [u8]>,
}

impl Chunk {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0
    }

    /// The UID of message `i`.
    pub fn uid(&self, i: usize) -> u32 {
        self.rows.uid(i)
    }

    /// The UID of the last message, if any.
    pub fn last_uid(&self) -> Option<u32> {
        let n = self.rows.len();
        (n > 0).then(|| self.rows.uid(n - 1))
    }

    /// Where `uid` is (`Ok`) or would go (`Err`).
    pub fn search(&self, uid: u32) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.rows.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.rows.uid(mid).cmp(&uid) {
                std::cmp::Ordering::Equal => return Ok(mid),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Err(lo)
    }

    /// Room reserved for rows (for the memory tests).
    #[cfg(test)]
    pub fn row_capacity(&self) -> usize {
        match &self.rows {
            Rows::Open(rows) => rows.capacity(),
            Rows::Sealed(b) => b.rows(),
        }
    }

    /// What the read-ahead needs of message `i`, without unpacking it.
    pub fn brief(&self, i: usize) -> Brief {
        let r = self.rows.brief(i);
        if r.tag & SPILLED != 0 {
            let m = &self.spilled[self.spilled_at(r.uid).expect("spilled row is kept")];
            return Brief {
                uid: r.uid,
                size: m.size,
                readable: m.problem.is_none(),
            };
        }
        Brief {
            uid: r.uid,
            size: u64::from(r.size),
            readable: true,
        }
    }

    /// Message `i`, as it was stored.
    pub fn get(&self, i: usize) -> MessageMeta {
        let r = &self.rows.get(i);
        if r.tag & SPILLED != 0 {
            return self.spilled[self.spilled_at(r.uid).expect("spilled row is kept")].clone();
        }
        let locator = match r.tag & LOC_MASK {
            LOC_SDBOX => Locator::Sdbox,
            LOC_MDBOX => Locator::Mdbox(r.locator),
            LOC_REMOTE => Locator::Remote,
            dir => {
                let prefix: &[u8] = if dir == LOC_MAILDIR_NEW {
                    b"new/"
                } else {
                    b"cur/"
                };
                let name = self.stored(r.locator, r, NAME_SIZES, prefix);
                Locator::Maildir(name.into_boxed_slice())
            }
        };
        let guid = match r.tag & GUID_MASK {
            GUID_HEX => Guid::from_hex_bytes(self.guids[i]),
            GUID_MAILDIR_BASE => Guid::maildir_base(),
            // Written from a `str`, so always UTF-8; `Guid::new` keeps non-hex text as is.
            GUID_TEXT => Guid::new(&String::from_utf8_lossy(
                &self.stored(r.text, r, GUID_SIZES, b""),
            )),
            _ => Guid::default(),
        };
        MessageMeta {
            key: MessageKey::Uid(r.uid),
            size: u64::from(r.size),
            virtual_size: u64::from(r.virtual_size),
            received: i64::from(r.received),
            saved: i64::from(r.saved),
            flags: MailFlags(r.flags),
            keywords: self.keyword_sets[usize::from(r.keywords)].clone(),
            guid,
            owner: self.owners[usize::from(r.owner)],
            locator,
            problem: None,
        }
    }

    /// Appends `m`, whose UID is above every present one.
    pub fn push(&mut self, m: MessageMeta) {
        let at = self.rows.len();
        self.insert(at, m);
    }

    /// Inserts `m` at position `i` (the caller keeps UID order).
    pub fn insert(&mut self, i: usize, m: MessageMeta) {
        let (row, guid) = self.place(&m);
        column_insert(&mut self.guids, self.rows.len(), i, guid);
        self.rows.open().insert(i, row);
        if row.tag & SPILLED != 0 {
            self.spill(m);
        }
    }

    /// Replaces message `i` with `m` (same UID).
    pub fn set(&mut self, i: usize, m: MessageMeta) {
        self.forget(i);
        let (row, guid) = self.place(&m);
        self.rows.open()[i] = row;
        column_set(&mut self.guids, self.rows.len(), i, guid);
        if row.tag & SPILLED != 0 {
            self.spill(m);
        }
        self.compact_if_wasteful();
    }

    /// Removes message `i`.
    pub fn remove(&mut self, i: usize) {
        self.forget(i);
        self.rows.open().remove(i);
        column_remove(&mut self.guids, i);
        self.compact_if_wasteful();
    }

    /// Moves the messages from position `at` on into a new chunk.
    pub fn split_off(&mut self, at: usize) -> Chunk {
        let mut tail = Chunk::default();
        for i in at..self.len() {
            tail.push(self.get(i));
        }
        while self.len() > at {
            self.remove(self.len() - 1);
        }
        self.compact();
        tail.seal();
        self.seal();
        tail
    }

    /// Packs the rows into bit columns and gives back the room the other columns reserved
    /// beyond what they hold: for a chunk that is full or done changing (a full chunk is
    /// not written again until something in it changes; a change opens its rows again,
    /// until the next seal).
    pub fn seal(&mut self) {
        self.shrink_to_fit();
        self.rows.seal();
    }

    /// True when its rows are open (changed since it was last sealed, or never sealed).
    pub fn is_open(&self) -> bool {
        !self.rows.is_sealed()
    }

    fn shrink_to_fit(&mut self) {
        if let Rows::Open(rows) = &mut self.rows {
            rows.shrink_to_fit();
        }
        self.guids.shrink_to_fit();
        self.strings.bytes.shrink_to_fit();
        self.strings.shapes.shrink_to_fit();
        self.owners.shrink_to_fit();
        self.keyword_sets.shrink_to_fit();
        self.spilled.shrink_to_fit();
    }

    /// Packs `m` and stores its name, owner and keywords; the row is tagged [`SPILLED`]
    /// (and holds only the UID) when any field does not fit.
    fn place(&mut self, m: &MessageMeta) -> (Row, Option<[u8; 16]>) {
        let spilled = |uid| Row {
            uid,
            tag: SPILLED,
            ..Row::default()
        };
        let Some(p) = pack(m) else {
            return (spilled(uid_of(m)), None);
        };
        let (Some(owner), Some(keywords)) = (
            palette_index(&mut self.owners, &m.owner),
            palette_index(&mut self.keyword_sets, &m.keywords),
        ) else {
            return (spilled(uid_of(m)), None);
        };
        let mut row = p.row;
        row.owner = owner;
        row.keywords = keywords;
        if let Some(name) = p.name {
            row.locator = self.add_string(name, &mut row, NAME_SIZES);
        }
        if let Some(text) = p.guid_text {
            row.text = self.add_string(text, &mut row, GUID_SIZES);
        }
        (row, p.guid)
    }

    /// Stores `s` (at most 255 bytes, as [`pack`] checked) without the row's own sizes if
    /// it holds them (then `flag` is set on the row); its place (see [`Strings::put`]).
    fn add_string(&mut self, s: &[u8], row: &mut Row, flag: u8) -> u32 {
        let (parts, stripped) = strip_sizes(s, row.size, row.virtual_size);
        if stripped {
            row.tag |= flag;
            let mut kept = Vec::with_capacity(parts[0].len() + parts[1].len());
            kept.extend_from_slice(parts[0]);
            kept.extend_from_slice(parts[1]);
            return self.strings.put(&kept, row.received);
        }
        self.strings.put(s, row.received)
    }

    /// The string at `place`, after `prefix`, with its sizes put back if the row's
    /// `flag` says they were taken out.
    fn stored(&self, place: u32, r: &Row, flag: u8, prefix: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(prefix.len() + 64);
        out.extend_from_slice(prefix);
        self.strings.get(place, r.received, &mut out);
        if r.tag & flag != 0 {
            let kept = prefix.len();
            let at = kept + info_at(&out[kept..]);
            let sizes = sizes_suffix(r.size, r.virtual_size);
            out.splice(at..at, sizes.bytes());
        }
        out
    }

    /// Drops what row `i` holds outside the row (its name, its spilled message).
    fn forget(&mut self, i: usize) {
        let r = self.rows.get(i);
        if r.tag & SPILLED != 0 {
            let at = self.spilled_at(r.uid).expect("spilled row is kept");
            self.spilled.remove(at);
        } else {
            if is_maildir(r.tag) {
                self.strings.garbage += self.strings.len_at(r.locator);
            }
            if r.tag & GUID_MASK == GUID_TEXT {
                self.strings.garbage += self.strings.len_at(r.text);
            }
        }
    }

    fn spill(&mut self, m: MessageMeta) {
        let at = self.spilled_at(uid_of(&m)).unwrap_or_else(|at| at);
        self.spilled.insert(at, m);
    }

    fn spilled_at(&self, uid: u32) -> Result<usize, usize> {
        self.spilled.binary_search_by_key(&uid, uid_of)
    }

    fn compact_if_wasteful(&mut self) {
        let strings = &self.strings;
        if strings.garbage > 0 && strings.garbage * 2 >= strings.bytes.len() {
            self.compact();
        }
    }

    /// Writes the strings again without the ones no row points at, and the shapes
    /// without the ones no string has now (a name's shape changes with its flags).
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.strings);
        let mut buf = Vec::new();
        let mut copy = |place: u32, received: u32, new: &mut Strings| {
            buf.clear();
            old.get(place, received, &mut buf);
            new.put(&buf, received)
        };
        let sealed = self.rows.is_sealed();
        let (rows, strings) = (self.rows.open(), &mut self.strings);
        for r in rows.iter_mut() {
            if r.tag & SPILLED != 0 {
                continue;
            }
            if is_maildir(r.tag) {
                r.locator = copy(r.locator, r.received, strings);
            }
            if r.tag & GUID_MASK == GUID_TEXT {
                r.text = copy(r.text, r.received, strings);
            }
        }
        if sealed {
            self.rows.seal();
        }
    }
}

/// Most shapes a chunk keeps: a Dovecot mailbox's names have one per host and flag set;
/// names that are each of their own shape (no common form) are kept whole once the
/// palette is full, so it costs at most this many shapes.
const MAX_SHAPES: usize = 32;

/// A chunk's Maildir names and GUID texts. A string's place is its offset in `bytes`
/// shifted left by one, the low bit set when it is shaped: its shape's index in `shapes`
/// then its numbers ([`shaped`]); otherwise a length byte then the string.
#[derive(Debug, Clone, Default)]
struct Strings {
    bytes: Vec<u8>,
    shapes: Vec<Box<[u8]>>,
    /// Bytes no row points at (reclaimed by [`Chunk::compact`]).
    garbage: usize,
}

impl Strings {
    /// Stores `s` (at most 255 bytes): shaped when that is shorter and its shape is known
    /// or there is room for it, else whole; its place. `received` is the row's date,
    /// which a Dovecot name's first number usually equals.
    fn put(&mut self, s: &[u8], received: u32) -> u32 {
        let at = self.bytes.len() as u32;
        let (mut shape, mut numbers) = (Vec::new(), Vec::new());
        if shaped::encode(s, i64::from(received), &mut shape, &mut numbers)
            && numbers.len() < s.len()
        {
            let known = self.shapes.iter().position(|k| **k == shape[..]);
            let index = known.or_else(|| {
                (self.shapes.len() < MAX_SHAPES).then(|| {
                    self.shapes.push(shape.into_boxed_slice());
                    self.shapes.len() - 1
                })
            });
            if let Some(index) = index {
                self.bytes.push(index as u8);
                self.bytes.extend_from_slice(&numbers);
                return (at << 1) | 1;
            }
        }
        self.bytes.push(s.len() as u8);
        self.bytes.extend_from_slice(s);
        at << 1
    }

    /// Appends the string at `place` (stored with this `received` date) to `out`.
    fn get(&self, place: u32, received: u32, out: &mut Vec<u8>) {
        let at = (place >> 1) as usize;
        if place & 1 == 0 {
            let len = usize::from(self.bytes[at]);
            out.extend_from_slice(&self.bytes[at + 1..at + 1 + len]);
            return;
        }
        let shape = &self.shapes[usize::from(self.bytes[at])];
        shaped::decode(shape, &self.bytes[at + 1..], i64::from(received), out)
            .expect("a shaped string is whole");
    }

    /// The bytes the string at `place` takes.
    fn len_at(&self, place: u32) -> usize {
        let at = (place >> 1) as usize;
        if place & 1 == 0 {
            return 1 + usize::from(self.bytes[at]);
        }
        let shape = &self.shapes[usize::from(self.bytes[at])];
        1 + shaped::numbers_len(shape, &self.bytes[at + 1..])
    }
}

/// `,S=<size>,W=<vsize>`, the extra fields Dovecot ends a Maildir file's base name with
/// when it saves one ("<base> [<extra sep> <extra data> [..]] <info sep> 2 <flags sep>",
/// `src/lib-storage/index/maildir/maildir-storage.h`). Whatever a name holds, only an
/// exact match of these bytes is taken out, so putting them back is byte-exact.
fn sizes_suffix(size: u32, vsize: u32) -> String {
    format!(",S={size},W={vsize}")
}

/// Where a Maildir name's info begins (its first `:`), or its end.
fn info_at(s: &[u8]) -> usize {
    s.iter().position(|&c| c == b':').unwrap_or(s.len())
}

/// `s` as two parts without the `,S=<size>,W=<vsize>` that ends its base (before the
/// info), and true; or `s` whole and false when its base does not end exactly so. The
/// message's own sizes are in its row, so a name (or a GUID that was one, in a store
/// converted from Maildir) costs 16 bytes less; putting them back gives `s` byte for byte.
fn strip_sizes(s: &[u8], size: u32, vsize: u32) -> ([&[u8]; 2], bool) {
    let at = info_at(s);
    let suffix = sizes_suffix(size, vsize);
    match s[..at].strip_suffix(suffix.as_bytes()) {
        Some(base) => ([base, &s[at..]], true),
        None => ([s, b""], false),
    }
}

// The optional column (`guids`) exists only once a row needs it: empty, or as long as
// the rows (rows without a value hold the default there).

/// Removes row `i` of a column.
fn column_remove<T>(col: &mut Vec<T>, i: usize) {
    if !col.is_empty() {
        col.remove(i);
    }
}

/// Inserts `value` at row `i` of a column over `rows` rows (before the insertion),
/// starting the column if this is its first value.
fn column_insert<T: Copy + Default>(col: &mut Vec<T>, rows: usize, i: usize, value: Option<T>) {
    if value.is_some() && col.is_empty() {
        col.resize(rows, T::default());
    }
    if !col.is_empty() || value.is_some() {
        col.insert(i, value.unwrap_or_default());
    }
}

/// Sets row `i` of a column over `rows` rows, starting it if this is its first value.
fn column_set<T: Copy + Default>(col: &mut Vec<T>, rows: usize, i: usize, value: Option<T>) {
    match value {
        Some(v) => {
            if col.is_empty() {
                col.resize(rows, T::default());
            }
            col[i] = v;
        }
        None if !col.is_empty() => col[i] = T::default(),
        None => {}
    }
}

fn is_maildir(tag: u8) -> bool {
    matches!(tag & LOC_MASK, LOC_MAILDIR_CUR | LOC_MAILDIR_NEW)
}

/// The index of `value` in `palette`, added if new; `None` when the palette is full.
fn palette_index<T: PartialEq + Clone>(palette: &mut Vec<T>, value: &T) -> Option<u8> {
    match palette.iter().position(|v| v == value) {
        Some(i) => u8::try_from(i).ok(),
        None if palette.len() < 256 => {
            palette.push(value.clone());
            Some((palette.len() - 1) as u8)
        }
        None => None,
    }
}

/// `m`'s row (owner and keywords not yet placed), or `None` if a field does not fit.
fn pack(m: &MessageMeta) -> Option<Packed<'_>> {
    let MessageKey::Uid(uid) = m.key else {
        return None;
    };
    if m.problem.is_some() {
        return None;
    }
    let (guid, guid_text, guid_tag) = if let Some(bytes) = m.guid.hex_bytes() {
        (Some(*bytes), None, GUID_HEX)
    } else if m.guid.is_maildir_base() {
        (None, None, GUID_MAILDIR_BASE)
    } else if m.guid.is_empty() {
        (None, None, 0)
    } else {
        let text = m.guid.text()?.as_bytes();
        if text.len() > usize::from(u8::MAX) {
            return None;
        }
        (None, Some(text), GUID_TEXT)
    };
    let (loc_tag, locator, name) = match &m.locator {
        Locator::Sdbox => (LOC_SDBOX, 0, None),
        Locator::Mdbox(map_uid) => (LOC_MDBOX, *map_uid, None),
        Locator::Remote => (LOC_REMOTE, 0, None),
        Locator::Maildir(full) => {
            let (tag, name) = match full.split_at_checked(4) {
                Some((b"cur/", name)) => (LOC_MAILDIR_CUR, name),
                Some((b"new/", name)) => (LOC_MAILDIR_NEW, name),
                _ => return None,
            };
            if name.len() > usize::from(u8::MAX) {
                return None;
            }
            (tag, 0, Some(name))
        }
        Locator::Mbox { .. } => return None,
    };
    Some(Packed {
        row: Row {
            uid,
            size: u32::try_from(m.size).ok()?,
            virtual_size: u32::try_from(m.virtual_size).ok()?,
            received: u32::try_from(m.received).ok()?,
            saved: u32::try_from(m.saved).ok()?,
            locator,
            text: 0,
            flags: m.flags.0,
            owner: 0,
            keywords: 0,
            tag: guid_tag | loc_tag,
        },
        guid,
        guid_text,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn base(uid: u32) -> MessageMeta {
        MessageMeta {
            key: MessageKey::Uid(uid),
            size: 1000 + u64::from(uid),
            virtual_size: 1020 + u64::from(uid),
            received: 1_700_000_000 + i64::from(uid),
            saved: 1_700_000_100,
            flags: MailFlags(uid as u8 & 0x1f),
            keywords: KeywordSet::from_positions([uid as usize % 3]),
            guid: Guid::new("0123456789abcdef0123456789abcdef"),
            owner: FileOwner {
                uid: 1000,
                gid: 1000,
                mode: 0o600,
            },
            locator: Locator::Mdbox(uid + 7),
            problem: None,
        }
    }

    fn maildir(uid: u32, dir: &str) -> MessageMeta {
        MessageMeta {
            guid: Guid::maildir_base(),
            locator: Locator::Maildir(
                format!("{dir}/17000{uid}.M1P2.host,S=1,W=2:2,S")
                    .into_bytes()
                    .into(),
            ),
            ..base(uid)
        }
    }

    /// An mdbox message of a store converted from Maildir: its GUID is the old base name.
    fn migrated(uid: u32) -> MessageMeta {
        MessageMeta {
            guid: Guid::new(&format!("16725{uid}.M{uid}P1.bench,S=20151,W=20576")),
            ..base(uid)
        }
    }

    /// A message whose Maildir name and GUID end their base with its own sizes, as
    /// Dovecot names what it saves.
    fn with_sizes(uid: u32) -> MessageMeta {
        let m = base(uid);
        let base_name = format!("17000{uid}.M{uid}P2.host,S={},W={}", m.size, m.virtual_size);
        MessageMeta {
            guid: Guid::new(&base_name),
            locator: Locator::Maildir(format!("cur/{base_name}:2,S").into_bytes().into()),
            ..m
        }
    }

    /// Every kind of message, including each reason to spill.
    fn every_kind() -> Vec<MessageMeta> {
        let mut out = vec![
            base(1),
            maildir(2, "cur"),
            maildir(3, "new"),
            MessageMeta {
                locator: Locator::Sdbox,
                guid: Guid::default(),
                ..base(4)
            },
            MessageMeta {
                locator: Locator::Remote,
                ..base(5)
            },
            MessageMeta {
                size: 1 << 32,
                ..base(6)
            },
            MessageMeta {
                virtual_size: u64::MAX,
                ..base(7)
            },
            MessageMeta {
                received: -1,
                ..base(8)
            },
            MessageMeta {
                saved: 1 << 33,
                ..base(9)
            },
            MessageMeta {
                guid: Guid::new("Not-Hex"),
                ..base(10)
            },
            MessageMeta {
                guid: Guid::new("0123456789ABCDEF0123456789ABCDEF"),
                ..base(11)
            },
            MessageMeta {
                problem: Some(Arc::new("truncated".into())),
                ..base(12)
            },
            MessageMeta {
                locator: Locator::Mbox { header: 5, end: 9 },
                ..base(13)
            },
            MessageMeta {
                locator: Locator::Maildir(format!("cur/{}", "x".repeat(300)).into_bytes().into()),
                ..base(14)
            },
            MessageMeta {
                locator: Locator::Maildir(b"tmp/odd".to_vec().into()),
                ..base(15)
            },
            MessageMeta {
                keywords: KeywordSet::from_positions([3, 70, 200]),
                ..base(16)
            },
            MessageMeta {
                guid: Guid::new(&"g".repeat(256)),
                ..base(17)
            },
            migrated(18),
        ];
        out.extend((19..40).map(|u| maildir(u, "cur")));
        out.extend((40..50).map(migrated));
        out.extend((50..60).map(with_sizes));
        let named = |uid: u32, name: String| MessageMeta {
            locator: Locator::Maildir(name.into_bytes().into()),
            ..base(uid)
        };
        // Sizes that are not exactly the message's, or not where Dovecot puts them.
        out.push(named(60, "cur/1.M1P1.h,S=1060,W=1079:2,S".into()));
        out.push(named(61, "cur/1.M1P1.h,S=1061,W=1081,Z=1:2,S".into()));
        out.push(named(62, "cur/1.M1P1.h,W=1082,S=1062:2,".into()));
        out.push(named(63, "new/1.M1P1.h,S=01063,W=1083".into()));
        out.push(named(64, "new/1.M1P1.h,S=1064,W=1084".into()));
        out.push(named(65, "cur/1.M1P1.h,S=1065,W=1085:2,S:x".into()));
        out
    }

    #[test]
    fn every_message_comes_back_as_stored() {
        let all = every_kind();
        let mut c = Chunk::default();
        for m in &all {
            c.push(m.clone());
        }
        let back: Vec<MessageMeta> = (0..c.len()).map(|i| c.get(i)).collect();
        assert_eq!(back, all);
        assert_eq!(
            c.spilled.len(),
            9,
            "the nine that do not fit are kept whole"
        );
        c.seal();
        assert!(!c.is_open());
        let back: Vec<MessageMeta> = (0..c.len()).map(|i| c.get(i)).collect();
        assert_eq!(back, all, "sealed rows give back the same messages");
        let briefs: Vec<Brief> = (0..c.len()).map(|i| c.brief(i)).collect();
        c.rows.open();
        assert_eq!(briefs, (0..c.len()).map(|i| c.brief(i)).collect::<Vec<_>>());
        for m in &all {
            assert_eq!(c.search(uid_of(m)).map(|i| c.get(i)).as_ref(), Ok(m));
        }
        assert_eq!(c.search(0), Err(0));
        assert_eq!(c.search(1000), Err(all.len()));
    }

    #[test]
    fn set_insert_remove_and_split_keep_every_other_message() {
        changes_keep_every_other_message(false);
    }

    #[test]
    fn changes_to_a_sealed_chunk_keep_every_other_message() {
        changes_keep_every_other_message(true);
    }

    /// Sealing between the steps (when `seal`) changes nothing a reader sees.
    fn changes_keep_every_other_message(seal: bool) {
        let all = every_kind();
        let mut c = Chunk::default();
        let mut want: Vec<MessageMeta> = Vec::new();
        let maybe_seal = |c: &mut Chunk| {
            if seal {
                c.seal();
            }
        };
        for m in all.iter().step_by(2) {
            c.push(m.clone());
            want.push(m.clone());
        }
        maybe_seal(&mut c);
        for m in all.iter().skip(1).step_by(2) {
            let i = c.search(uid_of(m)).unwrap_err();
            c.insert(i, m.clone());
            want.insert(i, m.clone());
            maybe_seal(&mut c);
        }
        // Replace each with its neighbour's fields under its own UID, spilled or not.
        for i in 0..want.len() {
            let other = &all[(i + 5) % all.len()];
            let m = MessageMeta {
                key: want[i].key.clone(),
                ..other.clone()
            };
            c.set(i, m.clone());
            want[i] = m;
            if i % 7 == 0 {
                maybe_seal(&mut c);
            }
        }
        for uid in [2, 3, 12, 20, 21, 22] {
            let i = c.search(uid).unwrap();
            c.remove(i);
            want.remove(i);
            maybe_seal(&mut c);
        }
        let tail = c.split_off(10);
        let back: Vec<MessageMeta> = (0..c.len())
            .map(|i| c.get(i))
            .chain((0..tail.len()).map(|i| tail.get(i)))
            .collect();
        assert_eq!(back, want);
        assert!(
            c.strings.garbage == 0 && tail.strings.garbage == 0,
            "split compacts"
        );
    }

    /// Renaming a Maildir file again and again (flag changes) does not grow the strings.
    #[test]
    fn replaced_strings_are_reclaimed() {
        let mut c = Chunk::default();
        for u in 1..=100 {
            c.push(maildir(u, "cur"));
        }
        let size = c.strings.bytes.len();
        for round in 0..50 {
            for i in 0..100 {
                c.set(
                    i,
                    maildir(c.uid(i), if round % 2 == 0 { "new" } else { "cur" }),
                );
            }
        }
        assert!(
            c.strings.bytes.len() <= 2 * size,
            "{} against {size}",
            c.strings.bytes.len()
        );
        assert_eq!(c.get(7), maildir(8, "cur"));
        // GUID texts as well (a message replaced by itself with new flags).
        let mut c = Chunk::default();
        for u in 1..=100 {
            c.push(migrated(u));
        }
        let size = c.strings.bytes.len();
        for round in 0..50u8 {
            for i in 0..100 {
                let mut m = migrated(c.uid(i));
                m.flags = MailFlags(round & 0x1f);
                c.set(i, m);
            }
        }
        assert!(
            c.strings.bytes.len() <= 2 * size,
            "{} against {size}",
            c.strings.bytes.len()
        );
        assert_eq!(c.get(7).guid, migrated(8).guid);
    }

    /// A name and a GUID holding the message's own sizes are kept without them.
    #[test]
    fn sizes_in_names_are_kept_once() {
        let mut c = Chunk::default();
        for u in 1..=10 {
            c.push(with_sizes(u));
        }
        for i in 0..10 {
            let (m, r) = (with_sizes(c.uid(i)), c.rows.get(i));
            let suffix = sizes_suffix(m.size as u32, m.virtual_size as u32);
            let mut name = Vec::new();
            c.strings.get(r.locator, r.received, &mut name);
            let whole = &m.locator.maildir().unwrap()[4..];
            assert_eq!(name.len(), whole.len() - suffix.len());
            let mut guid = Vec::new();
            c.strings.get(r.text, r.received, &mut guid);
            assert_eq!(guid.len(), m.guid.text().unwrap().len() - suffix.len());
            assert_eq!(c.get(i), m);
        }
        assert!(
            c.guids.is_empty(),
            "text GUIDs take a place in the row, not a 16-byte slot"
        );
    }

    /// Names of one form are kept as a shape's index and their numbers; names of no
    /// common form are kept whole once the shapes are full, and all come back.
    #[test]
    fn names_of_one_form_share_their_shape() {
        let dovecot = |uid: u32| MessageMeta {
            received: 1_692_398_880 + i64::from(uid) * 60,
            locator: Locator::Maildir(
                format!(
                    "cur/{}.M{}P{}.mail.example.org:2,{}",
                    1_692_398_880 + uid * 60,
                    316_360 + uid * 7919 % 999_999,
                    1000 + uid,
                    ["S", "RS", "FS"][uid as usize % 3]
                )
                .into_bytes()
                .into(),
            ),
            guid: Guid::maildir_base(),
            ..base(uid)
        };
        let mut c = Chunk::default();
        let names: usize = (1..=256)
            .map(|u| {
                let m = dovecot(u);
                let len = m.locator.maildir().unwrap().len() - 4;
                c.push(m);
                len
            })
            .sum();
        assert_eq!(c.strings.shapes.len(), 3);
        assert!(
            c.strings.bytes.len() * 5 < names,
            "{} bytes for {names} bytes of names",
            c.strings.bytes.len()
        );
        assert_eq!(c.get(99), dovecot(100));
        // Each of its own form.
        let odd = |uid: u32| MessageMeta {
            locator: Locator::Maildir(
                format!("cur/{uid}x{}-{uid}", "y".repeat(uid as usize % 50))
                    .into_bytes()
                    .into(),
            ),
            ..base(uid)
        };
        let mut c = Chunk::default();
        (1..=200).for_each(|u| c.push(odd(u)));
        assert_eq!(c.strings.shapes.len(), MAX_SHAPES);
        c.seal();
        for i in 0..200 {
            assert_eq!(c.get(i), odd(i as u32 + 1));
        }
    }

    /// A message costs its row (32 bytes while its chunk is open), its GUID's 16 bytes and
    /// its name; the budget of issue 19 shows here first.
    #[test]
    fn a_row_is_32_bytes() {
        assert_eq!(ROW_BYTES, 32);
    }

    /// A sealed chunk of mdbox messages as Dovecot saves them (UIDs and map UIDs counting
    /// up, sizes of a few KB, dates a few minutes apart, one owner, a few flag sets) takes
    /// a fraction of the open rows.
    #[test]
    fn sealed_rows_take_a_third_of_open_ones() {
        let mut c = Chunk::default();
        for i in 0..256u32 {
            let uid = 5000 + i;
            c.push(MessageMeta {
                size: 2000 + u64::from(i * 7919 % 60_000),
                virtual_size: 2000 + u64::from(i * 7919 % 60_000) + u64::from(i % 300),
                received: 1_700_000_000 + i64::from(i) * 300 + i64::from(i * 31 % 97),
                saved: 1_700_000_000 + i64::from(i) * 300 + i64::from(i * 31 % 97) + 2,
                flags: MailFlags([0, 8, 9, 0x18][i as usize % 4]),
                keywords: KeywordSet::default(),
                locator: Locator::Mdbox(uid + 40),
                ..base(uid)
            });
        }
        let open = c.len() * ROW_BYTES;
        c.seal();
        let Rows::Sealed(b) = &c.rows else {
            panic!("sealed")
        };
        assert!(
            b.heap_bytes() * 3 <= open,
            "{} bytes sealed against {open} open",
            b.heap_bytes()
        );
    }
}
