//! Multi-user locations: a `mail_location` with Dovecot's `%` variables, such as
//! `mdbox:/srv/mail/%d/%n:INDEX=/idx/%d/%n` or `/var/vmail/%2.256Nu/%u`.
//!
//! Expansion follows `var_expand_with_funcs()` in Dovecot 2.3's `src/lib/var-expand.c`:
//! `%[-][0]<width>[.[0][-]<width>]<modifiers><var>`, where the number before a '.' is an
//! offset, the modifiers are `L U E X R H N M D T`, and `<var>` is `u`, `n`, `d` or a long
//! `{user}`, `{username}`, `{domain}`. `H` and `N` use the width as a modulus and the offset
//! as zero-padding. `%%` is a literal '%'.
//!
//! Users are found in the opposite direction: the mail root's path components that hold
//! variables are matched against directory names ([`Template::match_level`]), which
//! captures `%u`/`%n`/`%d` from components that hold them unmodified (or only case-changed).
//! A candidate is a user only if expanding the template for the captured name gives back
//! the path it was found at ([`Template::root_for`]): that rejects directories in the wrong
//! hash bucket and anything else Dovecot would never look at for that user.
//!
//! Invariant: every variable the template uses can be derived from the ones its mail root
//! captures (checked by [`Template::parse`]), so each found user has exactly one expansion.

use std::path::{Path, PathBuf};

use super::{driver_and_rest, fix_path, split_fields};
use crate::error::{Error, Result};
use crate::format::hex;

/// A variable a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `%u`, `%{user}`: the full user name (`bob@example.com`).
    User,
    /// `%n`, `%{username}`: the part before the first '@'.
    Username,
    /// `%d`, `%{domain}`: the part after the first '@' (empty without one).
    Domain,
}

/// One `%` reference with its modifiers, offset and width.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VarRef {
    var: Var,
    modifiers: Vec<u8>,
    offset: i64,
    width: i64,
    zero_padding: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(VarRef),
}

/// What a directory name told about a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    user: Option<String>,
    username: Option<String>,
    domain: Option<String>,
}

impl Bindings {
    fn get(&self, var: Var) -> &Option<String> {
        match var {
            Var::User => &self.user,
            Var::Username => &self.username,
            Var::Domain => &self.domain,
        }
    }

    fn get_mut(&mut self, var: Var) -> &mut Option<String> {
        match var {
            Var::User => &mut self.user,
            Var::Username => &mut self.username,
            Var::Domain => &mut self.domain,
        }
    }
}

/// A parsed multi-user location.
#[derive(Debug, Clone)]
pub struct Template {
    /// The location as given.
    original: String,
    /// The whole location (root with `~` expanded), for per-user expansion.
    pieces: Vec<Piece>,
    /// The mail root's leading directories without variables.
    base: PathBuf,
    /// The mail root's remaining components.
    levels: Vec<Vec<Piece>>,
    /// The mail root from `base` on, for [`Template::root_for`].
    root_pieces: Vec<Piece>,
}

impl Template {
    /// Parses a location; `Ok(None)` when it has no variables (only `%%` or none at all).
    pub fn parse(location: &str) -> Result<Option<Template>> {
        let err = |what: String| Error::Location {
            location: location.to_string(),
            what,
        };
        let all = parse_pieces(location).map_err(&err)?;
        if !all.iter().any(|p| matches!(p, Piece::Var(_))) {
            return Ok(None);
        }
        let (driver, rest) = driver_and_rest(location);
        let fields = split_fields(rest);
        let root_text = fields
            .first()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| err("no mail root directory given".into()))?;
        let root_text = fix_path(root_text).map_err(&err)?;
        let root_text = root_text
            .to_str()
            .ok_or_else(|| err("the mail root is not UTF-8".into()))?
            .to_string();
        if !root_text.starts_with('/') {
            return Err(err(
                "a multi-user mail root must be an absolute path (or start with ~/)".into(),
            ));
        }
        // The whole location again, with the expanded root in place.
        let mut whole = String::new();
        if let Some(d) = driver {
            whole.push_str(d);
            whole.push(':');
        }
        whole.push_str(&root_text.replace(':', "::"));
        for f in &fields[1..] {
            whole.push(':');
            whole.push_str(&f.replace(':', "::"));
        }
        let pieces = parse_pieces(&whole).map_err(&err)?;

        let components: Vec<&str> = root_text.split('/').skip(1).collect();
        let first_var = components
            .iter()
            .position(|c| {
                parse_pieces(c).is_ok_and(|p| p.iter().any(|x| matches!(x, Piece::Var(_))))
            })
            .ok_or_else(|| {
                err("the variables must be in the mail root path, which names the users".into())
            })?;
        let base: PathBuf = std::iter::once("/")
            .chain(components[..first_var].iter().copied())
            .collect();
        let levels: Vec<Vec<Piece>> = components[first_var..]
            .iter()
            .map(|c| parse_pieces(c))
            .collect::<std::result::Result<_, _>>()
            .map_err(&err)?;
        let root_pieces = parse_pieces(&components[first_var..].join("/")).map_err(&err)?;

        let captured = |v: Var| {
            levels
                .iter()
                .flatten()
                .any(|p| matches!(p, Piece::Var(r) if r.var == v && r.captures()))
        };
        let used = |v: Var| {
            pieces
                .iter()
                .any(|p| matches!(p, Piece::Var(r) if r.var == v))
        };
        if !captured(Var::User) && !captured(Var::Username) {
            return Err(err(
                "the mail root must contain %u or %n without a hash, width or offset \
                 (e.g. /srv/mail/%2.256Nu/%u), so that directory names give user names"
                    .into(),
            ));
        }
        if used(Var::Domain) && !captured(Var::User) && !captured(Var::Domain) {
            return Err(err(
                "%d is used but the mail root names no domain (add %d or use %u)".into(),
            ));
        }
        Ok(Some(Template {
            original: location.to_string(),
            pieces,
            base,
            levels,
            root_pieces,
        }))
    }

    /// The location as given.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The directory holding every user's tree (the mail root up to its first variable).
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// How many path components below [`Template::base`] lead to a user's mail root.
    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// The name of component `level` if it holds no variable.
    pub fn literal_level(&self, level: usize) -> Option<&str> {
        match self.levels[level].as_slice() {
            [Piece::Text(t)] => Some(t),
            [] => Some(""),
            _ => None,
        }
    }

    /// Every way directory name `name` matches component `level`, given what the
    /// components above it captured.
    pub fn match_level(&self, level: usize, name: &str, above: &Bindings) -> Vec<Bindings> {
        let mut out = Vec::new();
        let mut b = above.clone();
        match_pieces(&self.levels[level], name, &mut b, &mut out);
        out
    }

    /// The user name the captures give: `%u` if captured, else `%n@%d`, else `%n`.
    pub fn user_of(&self, b: &Bindings) -> Option<String> {
        if let Some(u) = &b.user {
            return Some(u.clone());
        }
        let n = b.username.as_ref()?;
        match &b.domain {
            Some(d) if !d.is_empty() => Some(format!("{n}@{d}")),
            _ => Some(n.clone()),
        }
    }

    /// The mail root of `user`.
    pub fn root_for(&self, user: &str) -> PathBuf {
        self.base.join(expand(&self.root_pieces, user))
    }

    /// The directories above the variables of every path in the template: the mail root's
    /// [`Template::base`], then for each `INBOX=`, `INDEX=`, `CONTROL=`, `ALT=`,
    /// `INDEXPVT=` and `INDEXCACHE=` value its leading components without a variable (the
    /// whole path when it has none). What lies below an anchor depends on the user; the
    /// anchors themselves are the admin's.
    pub fn anchors(&self) -> Vec<PathBuf> {
        let mut out = vec![self.base.clone()];
        let (_, rest) = driver_and_rest(&self.original);
        for field in split_fields(rest).iter().skip(1) {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            if !matches!(
                key,
                "INBOX" | "INDEX" | "CONTROL" | "ALT" | "INDEXPVT" | "INDEXCACHE"
            ) || value.is_empty()
                || value == "MEMORY"
            {
                continue;
            }
            let Ok(path) = fix_path(value) else { continue };
            let text = path.to_string_lossy();
            let has_var = |c: &str| {
                parse_pieces(c).is_ok_and(|p| p.iter().any(|x| matches!(x, Piece::Var(_))))
            };
            let mut anchor = PathBuf::new();
            for component in text.split('/') {
                if has_var(component) {
                    break;
                }
                if component.is_empty() && anchor.as_os_str().is_empty() {
                    anchor.push("/");
                } else if !component.is_empty() {
                    anchor.push(component.replace("%%", "%"));
                }
            }
            if anchor.is_absolute() && !out.contains(&anchor) {
                out.push(anchor);
            }
        }
        out
    }

    /// The whole location for `user`, ready for `Location::parse`.
    pub fn expand(&self, user: &str) -> String {
        expand(&self.pieces, user)
    }
}

impl VarRef {
    /// True if a path component's text *is* the variable's value (or its case-changed
    /// form, checked by re-expansion), so it can be captured.
    fn captures(&self) -> bool {
        self.offset == 0
            && self.width == 0
            && self.modifiers.iter().all(|m| matches!(m, b'L' | b'U'))
    }

    /// The variable's expansion for `user`.
    fn render(&self, user: &str) -> String {
        let value = match self.var {
            Var::User => user,
            Var::Username => user.split_once('@').map_or(user, |(n, _)| n),
            Var::Domain => user.split_once('@').map_or("", |(_, d)| d),
        };
        let mut v: Vec<u8> = value.as_bytes().to_vec();
        let mut offset = self.offset;
        let mut width = self.width;
        for m in &self.modifiers {
            v = match m {
                b'L' => v.to_ascii_lowercase(),
                b'U' => v.to_ascii_uppercase(),
                b'E' => {
                    let mut e = Vec::with_capacity(v.len());
                    for &c in &v {
                        if matches!(c, b'"' | b'\'' | b'\\') {
                            e.push(b'\\');
                        }
                        e.push(c);
                    }
                    e
                }
                b'X' => {
                    let n = std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0);
                    format!("{n:x}").into_bytes()
                }
                b'R' => v.iter().rev().copied().collect(),
                b'H' | b'N' => {
                    let mut value = if *m == b'H' {
                        u64::from(str_hash(&v))
                    } else {
                        let d = super::md5::digest(&v);
                        // The first 8 digest bytes, most significant first.
                        d[..8]
                            .iter()
                            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
                    };
                    if width != 0 {
                        // Dovecot stores the width in an int and reduces modulo it as
                        // unsigned; a negative width is a huge modulus (no reduction).
                        if let Ok(w) = u64::try_from(width) {
                            value %= w;
                        }
                        width = 0;
                    }
                    // "%x" of an unsigned int: the low 32 bits.
                    let mut h = format!("{:x}", value as u32);
                    while (h.len() as i64) < offset {
                        h.insert(0, '0');
                    }
                    offset = 0;
                    h.into_bytes()
                }
                b'M' => hex(&super::md5::digest(&v)).into_bytes(),
                b'D' => {
                    let mut out = Vec::with_capacity(v.len());
                    for &c in &v {
                        if c == b'.' {
                            out.extend_from_slice(b",dc=");
                        } else {
                            out.push(c);
                        }
                    }
                    out
                }
                b'T' => {
                    while v.last().is_some_and(|c| c.is_ascii_whitespace()) {
                        v.pop();
                    }
                    v
                }
                _ => v,
            };
        }
        let mut s: &[u8] = &v;
        if offset < 0 {
            let from_end = offset.unsigned_abs() as usize;
            if s.len() > from_end {
                s = &s[s.len() - from_end..];
            }
        } else {
            s = &s[(offset as usize).min(s.len())..];
        }
        let out: Vec<u8> = if width == 0 {
            s.to_vec()
        } else if !self.zero_padding {
            let w = if width < 0 {
                s.len() as i64 + width
            } else {
                width
            };
            // A negative result is a huge size_t in Dovecot: no truncation.
            match usize::try_from(w) {
                Ok(w) => s[..w.min(s.len())].to_vec(),
                Err(_) => s.to_vec(),
            }
        } else {
            let mut padded = Vec::new();
            let mut w = width;
            while (s.len() as i64) < w {
                padded.push(b'0');
                w -= 1;
            }
            padded.extend_from_slice(s);
            padded
        };
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Dovecot's `str_hash()` (the `%H` modifier): a PJW-style 32-bit string hash.
fn str_hash(s: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in s {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
            h ^= g;
        }
    }
    h
}

fn expand(pieces: &[Piece], user: &str) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(r) => out.push_str(&r.render(user)),
        }
    }
    out
}

/// Splits a string into text and variable references.
fn parse_pieces(s: &str) -> std::result::Result<Vec<Piece>, String> {
    let b = s.as_bytes();
    let mut out: Vec<Piece> = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    let push_text = |out: &mut Vec<Piece>, text: &mut String| {
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(text)));
        }
    };
    while i < b.len() {
        if b[i] != b'%' {
            // Copy one whole UTF-8 character.
            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
            text.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let start = i;
        i += 1;
        let mut sign = 1i64;
        let mut width = 0i64;
        let mut offset = 0i64;
        let mut zero_padding = false;
        if b.get(i) == Some(&b'-') {
            sign = -1;
            i += 1;
        }
        if b.get(i) == Some(&b'0') {
            zero_padding = true;
            i += 1;
        }
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            width = width.saturating_mul(10).saturating_add(i64::from(d - b'0'));
            i += 1;
        }
        if b.get(i) == Some(&b'.') {
            offset = sign * width;
            sign = 1;
            width = 0;
            i += 1;
            zero_padding = false;
            if b.get(i) == Some(&b'0') {
                zero_padding = true;
                i += 1;
            }
            if b.get(i) == Some(&b'-') {
                sign = -1;
                i += 1;
            }
            while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
                width = width.saturating_mul(10).saturating_add(i64::from(d - b'0'));
                i += 1;
            }
            width *= sign;
        }
        let mut modifiers = Vec::new();
        while modifiers.len() < 10
            && let Some(&m) = b.get(i).filter(|c| b"LUEXRHNMDT".contains(c))
        {
            modifiers.push(m);
            i += 1;
        }
        let (var, next) = match b.get(i) {
            None => return Err(format!("a '%' at the end of {s:?}")),
            Some(b'%') => {
                text.push('%');
                i += 1;
                continue;
            }
            Some(b'{') => {
                let close = s[i..]
                    .find('}')
                    .ok_or_else(|| format!("unterminated %{{ in {s:?}"))?;
                let key = &s[i + 1..i + close];
                let var = match key {
                    "user" => Var::User,
                    "username" => Var::Username,
                    "domain" => Var::Domain,
                    other => return Err(unsupported(&format!("%{{{other}}}"))),
                };
                (var, i + close + 1)
            }
            Some(c) => {
                let var = match c {
                    b'u' => Var::User,
                    b'n' => Var::Username,
                    b'd' => Var::Domain,
                    _ => {
                        let shown = s[start..].chars().take(i - start + 1).collect::<String>();
                        return Err(unsupported(&shown));
                    }
                };
                (var, i + 1)
            }
        };
        push_text(&mut out, &mut text);
        out.push(Piece::Var(VarRef {
            var,
            modifiers,
            offset,
            width,
            zero_padding,
        }));
        i = next;
    }
    push_text(&mut out, &mut text);
    Ok(out)
}

fn unsupported(var: &str) -> String {
    format!(
        "variable {var} is not supported: a multi-user location may use %u, %n and %d \
         (with Dovecot's modifiers, e.g. %Ln, %2.256Nu); spell out anything else"
    )
}

/// Backtracking match of `pieces` against `name`, pushing every complete match.
fn match_pieces(pieces: &[Piece], name: &str, b: &mut Bindings, out: &mut Vec<Bindings>) {
    let Some((first, rest)) = pieces.split_first() else {
        if name.is_empty() {
            out.push(b.clone());
        }
        return;
    };
    match first {
        Piece::Text(t) => {
            if let Some(tail) = name.strip_prefix(t.as_str()) {
                match_pieces(rest, tail, b, out);
            }
        }
        Piece::Var(r) => {
            // A variable's value is never empty in a path Dovecot made (an empty %d
            // collapses the component, which the re-expansion check rejects anyway).
            for (end, _) in name.char_indices().skip(1).chain([(name.len(), ' ')]) {
                let (value, tail) = name.split_at(end);
                if !r.captures() {
                    match_pieces(rest, tail, b, out);
                    continue;
                }
                let slot = b.get(r.var).clone();
                match &slot {
                    Some(v) if v != value => continue,
                    Some(_) => match_pieces(rest, tail, b, out),
                    None => {
                        *b.get_mut(r.var) = Some(value.to_string());
                        match_pieces(rest, tail, b, out);
                        *b.get_mut(r.var) = None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(spec: &str, user: &str) -> String {
        expand(&parse_pieces(spec).unwrap(), user)
    }

    #[test]
    fn expands_like_dovecot() {
        assert_eq!(render("/m/%u", "bob@ex.org"), "/m/bob@ex.org");
        assert_eq!(render("/m/%d/%n", "bob@ex.org"), "/m/ex.org/bob");
        assert_eq!(render("/m/%d/%n", "bob"), "/m//bob");
        assert_eq!(render("%{domain}/%{username}", "a@b"), "b/a");
        assert_eq!(render("%Lu %Uu", "Bob"), "bob BOB");
        assert_eq!(render("%1u/%2.1u/%-2.1u", "abcdef"), "a/c/e");
        // A '-' before the width alone is ignored; after the '.', it counts from the end.
        assert_eq!(render("%-2u", "abcdef"), "ab");
        assert_eq!(render("%.-2u", "abcdef"), "abcd");
        assert_eq!(render("%05u", "ab"), "000ab");
        assert_eq!(render("%Ru", "abc"), "cba");
        assert_eq!(render("%Mu", "abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(render("%1Mu/%2.1Mu", "abc"), "9/0");
        assert_eq!(render("%Dd", "x@a.b"), "a,dc=b");
        assert_eq!(render("%Xu", "255"), "ff");
        assert_eq!(render("100%%", "x"), "100%");
        // %N: MD5, first 8 bytes big-endian, modulo width, "%x" of the low 32 bits,
        // zero-padded to the offset. md5("abc") = 90015098 3cd24fb0 ...:
        // 0x900150983cd24fb0 % 256 = 0xb0.
        assert_eq!(render("%2.256Nu", "abc"), "b0");
        assert_eq!(render("%4.16Nu", "abc"), "0000");
        assert_eq!(render("%Nu", "abc"), "3cd24fb0");
        // %H: Dovecot's str_hash.
        assert_eq!(
            str_hash(b"abc"),
            (u32::from(b'a') << 8) + (u32::from(b'b') << 4) + 99
        );
        assert_eq!(
            render("%2.256Hu", "abc"),
            format!("{:02x}", str_hash(b"abc") % 256)
        );
    }

    #[test]
    fn refuses_what_cannot_name_users() {
        for bad in [
            "maildir:/m/%h",
            "maildir:/m/%{home}",
            "maildir:/m/%u%",
            "maildir:/m/%{user",
            "maildir:/m/%2.256Nu",
            "maildir:/m/%1u/x",
            "maildir:/m/x:INDEX=/i/%u",
            "maildir:/m/%n:INDEX=/i/%d/%n",
            "maildir:m/%u",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Template::parse("maildir:/m/x").unwrap().is_none());
        assert!(Template::parse("maildir:/m/100%%").unwrap().is_none());
    }

    #[test]
    fn finds_users_and_rejects_wrong_buckets() {
        let t = Template::parse("mdbox:/srv/%2.256Nu/%u/mdbox:INDEX=/idx/%d/%n")
            .unwrap()
            .unwrap();
        assert_eq!(t.base(), Path::new("/srv"));
        assert_eq!(t.levels(), 3);
        assert_eq!(t.literal_level(2), Some("mdbox"));
        let bucket = render("%2.256Nu", "bob@ex.org");
        let b0 = t.match_level(0, &bucket, &Bindings::default());
        assert_eq!(b0.len(), 1);
        let b1 = t.match_level(1, "bob@ex.org", &b0[0]);
        assert_eq!(b1.len(), 1);
        let user = t.user_of(&b1[0]).unwrap();
        assert_eq!(user, "bob@ex.org");
        assert_eq!(
            t.root_for(&user),
            PathBuf::from(format!("/srv/{bucket}/bob@ex.org/mdbox"))
        );
        assert_eq!(
            t.expand(&user),
            format!("mdbox:/srv/{bucket}/bob@ex.org/mdbox:INDEX=/idx/ex.org/bob")
        );
        // The same name in another bucket matches the component but not the expansion.
        let wrong = if bucket == "00" { "01" } else { "00" };
        assert_ne!(
            t.root_for(&user),
            PathBuf::from(format!("/srv/{wrong}/bob@ex.org/mdbox"))
        );
    }

    #[test]
    fn captures_domain_and_user_parts() {
        let t = Template::parse("/m/%d/%Ln").unwrap().unwrap();
        let d = t.match_level(0, "ex.org", &Bindings::default());
        let n = t.match_level(1, "bob", &d[0]);
        assert_eq!(t.user_of(&n[0]).as_deref(), Some("bob@ex.org"));
        // A component holding two variables: every split is a candidate.
        let t2 = Template::parse("/m/%n.%d").unwrap().unwrap();
        let all = t2.match_level(0, "a.b.c", &Bindings::default());
        let users: Vec<String> = all.iter().filter_map(|b| t2.user_of(b)).collect();
        assert_eq!(users, ["a@b.c", "a.b@c"]);
        // An earlier capture must agree.
        let t3 = Template::parse("/m/%u/%u").unwrap().unwrap();
        let first = t3.match_level(0, "x", &Bindings::default());
        assert!(t3.match_level(1, "y", &first[0]).is_empty());
        assert_eq!(t3.match_level(1, "x", &first[0]).len(), 1);
    }

    #[test]
    fn keeps_colons_and_home() {
        let t = Template::parse("maildir:/m/%u:LAYOUT=fs:INDEX=/i::x/%u")
            .unwrap()
            .unwrap();
        assert_eq!(t.expand("a"), "maildir:/m/a:LAYOUT=fs:INDEX=/i::x/a");
        if let Ok(home) = std::env::var("HOME")
            && home.starts_with('/')
            && !home.contains('%')
        {
            let t = Template::parse("~/mail/%u").unwrap().unwrap();
            assert_eq!(t.root_for("a"), PathBuf::from(format!("{home}/mail/a")));
        }
    }

    #[test]
    fn anchors_stop_at_the_first_variable_of_each_path() {
        let t = Template::parse(
            "mdbox:/srv/mail/%d/%n:INDEX=/idx/%2.256Nu/%u:ALT=/alt:CONTROL=/c%%d/x%u:LAYOUT=fs",
        )
        .unwrap()
        .unwrap();
        let want: Vec<PathBuf> = ["/srv/mail", "/idx", "/alt", "/c%d"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(t.anchors(), want);
        let t = Template::parse("maildir:/m/%u:INDEX=MEMORY")
            .unwrap()
            .unwrap();
        assert_eq!(t.anchors(), vec![PathBuf::from("/m")]);
    }
}
