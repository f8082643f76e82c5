//! The stateful index layer: `dovecot.index` + `dovecot.index.log(.2)` (+ cache) -> immutable
//! mailbox index views, refreshed incrementally from the last log position. Knows the
//! formats through `crate::format`, and nothing of FUSE.

pub mod bitpack;
pub mod cachefile;
pub mod pool;
pub mod reader;
pub mod records;
pub mod state;
