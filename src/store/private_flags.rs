//! `INDEXPVT=`: per-user private flags of a shared mailbox, for every format that has them.
//!
//! `\Seen` is private (`mailbox_get_private_flags_mask()`). A message with a record in the
//! private index (`dovecot.index.pvt` in the `INDEXPVT=` directory) takes its `\Seen` from
//! there; one without keeps the shared flag (`index_mail_get_flags()`).

use std::path::Path;

use super::{MessageKey, MessageMeta};
use crate::error::Result;
use crate::format::MailFlags;
use crate::index::pool::IndexPool;
use crate::index::reader::IndexPaths;

/// Applies the private index in `dir` (if there is one) to `messages`.
pub(super) fn apply(pool: &IndexPool, dir: &Path, messages: &mut [MessageMeta]) -> Result<()> {
    let paths = IndexPaths {
        dir: dir.to_path_buf(),
        prefix: "dovecot.index.pvt".into(),
    };
    let Some(pvt) = pool.view(&paths)? else {
        return Ok(());
    };
    let seen = MailFlags::SEEN.0;
    for m in messages.iter_mut() {
        let MessageKey::Uid(uid) = m.key else {
            continue;
        };
        if let Some(rec) = pvt.state.records.get(uid) {
            let private = rec.get(4).copied().unwrap_or(0) & seen;
            m.flags = MailFlags((m.flags.0 & !seen) | private);
        }
    }
    Ok(())
}
