//! Checking what goes on a command line (UID sets, flags) and reading what came back
//! (FETCH items, INTERNALDATE, COPYUID, events). Pure functions, no I/O.
//!
//! Invariant: server data is never trusted: every conversion returns `None` or
//! [`ImapError::Protocol`] instead of panicking, and sets expand to at most [`MAX_SET`]
//! numbers.

use super::codec::{self, Code, Untagged, Value};
use super::types::{CopyUid, Event, FetchUpdate, MessageInfo};
use super::{ImapError, escape_snippet};

/// The most UIDs a `VANISHED` or `COPYUID` set is expanded to.
pub(super) const MAX_SET: usize = 1 << 24;

/// Checks a UID set (`1:3,7,9:*`, RFC 3501 section 9 `sequence-set`) before it goes on a
/// command line.
pub(super) fn check_set(set: &str) -> Result<(), ImapError> {
    let ok = !set.is_empty()
        && set.split(',').all(|part| {
            let (a, b) = part.split_once(':').unwrap_or((part, part));
            [a, b].iter().all(|n| {
                *n == "*"
                    || (!n.is_empty() && n.len() <= 10 && n.bytes().all(|c| c.is_ascii_digit()))
            })
        });
    if ok {
        Ok(())
    } else {
        Err(ImapError::Refused(format!(
            "invalid UID set \"{}\"",
            escape_snippet(set.as_bytes())
        )))
    }
}

/// Checks flags (`\Seen`, keywords) and builds `(f1 f2)` (RFC 3501 section 9 `flag-list`).
pub(super) fn flag_list(flags: &[&str]) -> Result<String, ImapError> {
    for f in flags {
        let body = f.strip_prefix('\\').unwrap_or(f);
        let ok = !body.is_empty()
            && body.bytes().all(|b| {
                (0x21..0x7f).contains(&b)
                    && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
            });
        if !ok {
            return Err(ImapError::Refused(format!(
                "invalid flag \"{}\"",
                escape_snippet(f.as_bytes())
            )));
        }
    }
    Ok(format!("({})", flags.join(" ")))
}

/// Parses an INTERNALDATE `dd-Mon-yyyy hh:mm:ss +zzzz` (RFC 3501 section 9 `date-time`)
/// into unix seconds.
pub(super) fn parse_internal_date(s: &str) -> Option<i64> {
    let (date, rest) = s.trim_start().split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let mut d = date.split('-');
    let day: i64 = d.next()?.parse().ok()?;
    let month = d.next()?;
    let year: i64 = d.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as i64 + 1;
    let mut t = time.split(':');
    let (h, m, sec): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    let zone = zone.as_bytes();
    if zone.len() != 5 || !zone[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sign = match zone[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let num = |i: usize| i64::from(zone[i] - b'0') * 10 + i64::from(zone[i + 1] - b'0');
    let offset = sign * (num(1) * 3600 + num(3) * 60);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec - offset)
}

pub(super) fn atoms(v: &Value) -> Option<Vec<String>> {
    v.as_list()?
        .iter()
        .map(|f| f.as_atom().map(str::to_string))
        .collect()
}

/// The single number of a `MODSEQ (n)` item.
pub(super) fn modseq(v: &Value) -> Option<u64> {
    v.as_list()?.first()?.as_u64()
}

/// Builds a [`MessageInfo`] from FETCH items; `None` without a UID.
pub(super) fn message_info(items: &[(String, Value)]) -> Result<Option<MessageInfo>, ImapError> {
    let mut info = MessageInfo::default();
    let mut uid = None;
    let bad = |name: &str| ImapError::Protocol(format!("bad {name} in a FETCH response"));
    for (name, v) in items {
        match name.as_str() {
            "UID" => uid = Some(v.as_u32().ok_or_else(|| bad(name))?),
            "FLAGS" => info.flags = atoms(v).ok_or_else(|| bad(name))?,
            "INTERNALDATE" => {
                let s = v.as_bytes().ok_or_else(|| bad(name))?;
                info.internal_date = std::str::from_utf8(s)
                    .ok()
                    .and_then(parse_internal_date)
                    .ok_or_else(|| bad(name))?;
            }
            "RFC822.SIZE" => info.size = v.as_u64().ok_or_else(|| bad(name))?,
            "X-GUID" => {
                if let Some(g) = v.as_bytes() {
                    info.guid = Some(String::from_utf8_lossy(g).into_owned());
                }
            }
            "EMAILID" if info.guid.is_none() => {
                let id = v
                    .as_list()
                    .and_then(|l| l.first())
                    .and_then(Value::as_bytes);
                info.guid = id.map(|g| String::from_utf8_lossy(g).into_owned());
            }
            "MODSEQ" => info.modseq = Some(modseq(v).ok_or_else(|| bad(name))?),
            _ => {}
        }
    }
    Ok(uid.map(|uid| MessageInfo { uid, ..info }))
}

pub(super) fn event(u: &Untagged) -> Result<Event, ImapError> {
    Ok(match u {
        Untagged::Exists(n) => Event::Exists(*n),
        Untagged::Expunge(n) => Event::Expunge(*n),
        Untagged::Vanished { uids, .. } => Event::Vanished(codec::expand_set(uids, MAX_SET)?),
        Untagged::Fetch { seq, items } => {
            let mut f = FetchUpdate {
                seq: *seq,
                ..FetchUpdate::default()
            };
            for (name, v) in items {
                match name.as_str() {
                    "UID" => f.uid = v.as_u32(),
                    "FLAGS" => f.flags = atoms(v),
                    "MODSEQ" => f.modseq = modseq(v),
                    _ => {}
                }
            }
            Event::Fetch(f)
        }
        _ => Event::Other,
    })
}

pub(super) fn copyuid(code: &Code) -> Result<CopyUid, ImapError> {
    let mut parts = code.args.split(' ');
    let bad = || {
        ImapError::Protocol(format!(
            "bad COPYUID \"{}\"",
            escape_snippet(code.args.as_bytes())
        ))
    };
    let uv = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let src = codec::expand_set(parts.next().ok_or_else(bad)?, MAX_SET)?;
    let dst = codec::expand_set(parts.next().ok_or_else(bad)?, MAX_SET)?;
    if src.len() != dst.len() {
        return Err(bad());
    }
    Ok(CopyUid {
        uid_validity: uv,
        src,
        dst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_dates() {
        assert_eq!(parse_internal_date("01-Jan-1970 00:00:00 +0000"), Some(0));
        assert_eq!(
            parse_internal_date("17-Jul-1996 02:44:25 -0700"),
            Some(837_596_665)
        );
        assert_eq!(
            parse_internal_date(" 7-Dec-2026 04:03:41 +0100"),
            Some(1_796_612_621)
        );
        assert_eq!(
            parse_internal_date("29-Feb-2024 12:00:00 +0530"),
            Some(1_709_188_200)
        );
        for bad in [
            "",
            "17-Jux-1996 02:44:25 -0700",
            "17-Jul-1996 02:44:25 0700",
            "17-Jul-1996 25:44",
        ] {
            assert_eq!(parse_internal_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn sets_and_flags_are_checked() {
        for ok in ["1", "1:3,7", "5:*", "*"] {
            assert!(check_set(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1 2", "1,", "a", "1:3)", "1\r\n"] {
            assert!(
                matches!(check_set(bad), Err(ImapError::Refused(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            flag_list(&["\\Seen", "$Label1"]).unwrap(),
            "(\\Seen $Label1)"
        );
        assert_eq!(flag_list(&[]).unwrap(), "()");
        for bad in ["a b", "x)", "\\", "\"q\"", "ü"] {
            assert!(flag_list(&[bad]).is_err(), "{bad:?}");
        }
    }
}
