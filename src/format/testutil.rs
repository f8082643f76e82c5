//! Helpers shared by the parsers' unit tests.

/// Tiny deterministic xorshift64 generator for the no-panic sweeps.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next pseudo-random value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A byte string of up to `max_len` bytes: raw bytes when `raw`, otherwise bytes drawn
    /// from `alphabet` so that parsers get past their first checks.
    pub fn bytes(&mut self, max_len: u64, alphabet: &[u8], raw: bool) -> Vec<u8> {
        let len = self.next() % max_len;
        (0..len)
            .map(|_| {
                let r = self.next();
                if raw {
                    (r & 0xff) as u8
                } else {
                    let idx = (r % alphabet.len() as u64) as usize;
                    alphabet.get(idx).copied().unwrap_or(b' ')
                }
            })
            .collect()
    }
}

/// The value after `key ..... = ` on the first line of a `doveadm dump` text that starts
/// with `key`.
pub fn dump_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?;
            let rest = rest.trim_start_matches([' ', '.']);
            rest.strip_prefix("= ")
        })
        .unwrap_or_else(|| panic!("no {key} in dump"))
}

/// The leading number of a dump value (`1795461289 (2026-...)` -> 1795461289).
pub fn dump_num(text: &str, key: &str) -> u64 {
    let v = dump_value(text, key);
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("{key}: {v}"))
}
