//! Names as a shape and numbers: `1692398880.M316360P1.bench:2,S` is the shape
//! `#.M#P#.bench:2,S` and the numbers 1692398880, 316360 and 1. Maildir file names (and
//! the GUIDs of stores converted from Maildir, which are the old base names) of one
//! mailbox share a few shapes (one per host and flag set), so a packed chunk
//! (`store::packed`) keeps each shape once and a name as its shape's index and its
//! numbers as variable-length integers: about 10 bytes where the name takes 31.
//!
//! Dovecot names a new file `<secs>.M<usecs>P<pid>.<host>` (`maildir_filename_generate`,
//! `src/lib-storage/index/maildir/maildir-filename.c`), and sets its received date to the
//! time it was delivered, so the first number is usually the received date or near it: it
//! may be kept as its difference from a date the caller gives (a [`RELATIVE`] mark).
//!
//! Invariant: [`decode`] gives back exactly the bytes [`encode`] was given. A number is a
//! maximal run of ASCII digits before the first `:` (the info, `:2,<flags>`, stays in the
//! shape) without a leading zero (or `0` alone), at most 19 digits, so writing it in
//! decimal again gives the same digits; any other run of digits stays in the shape. A name holding a mark byte (NUL or 0x01) is not shaped.

/// In a shape: a number, kept as is.
pub const NUMBER: u8 = 0;
/// In a shape: a number, kept as its difference from the reference date (zigzag).
pub const RELATIVE: u8 = 1;

/// Splits `name` into its shape (into `shape`) and its numbers (appended to `numbers`);
/// false, with both left as they were, when `name` holds a mark byte. The first number
/// is stored against `reference` when that is shorter.
pub fn encode(name: &[u8], reference: i64, shape: &mut Vec<u8>, numbers: &mut Vec<u8>) -> bool {
    if name.iter().any(|&c| c == NUMBER || c == RELATIVE) {
        return false;
    }
    // The info (`:2,<flags>`) stays in the shape whole.
    let info = name.iter().position(|&c| c == b':').unwrap_or(name.len());
    shape.reserve(name.len());
    let mut first = true;
    let mut i = 0;
    while i < name.len() {
        let run = name[i..info.max(i)]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if run == 0 {
            shape.push(name[i]);
            i += 1;
            continue;
        }
        let digits = &name[i..i + run];
        i += run;
        let canonical = (digits[0] != b'0' || run == 1) && run <= 19;
        let Some(n) = canonical.then(|| parse(digits)) else {
            shape.extend_from_slice(digits);
            continue;
        };
        let relative = zigzag(i128::from(n) - i128::from(reference));
        if first && relative.is_some_and(|r| varint_len(r) < varint_len(n)) {
            shape.push(RELATIVE);
            put_varint(numbers, relative.unwrap_or_default());
        } else {
            shape.push(NUMBER);
            put_varint(numbers, n);
        }
        first = false;
    }
    true
}

/// Writes the name of `shape` with the numbers at the start of `numbers` into `out`; the
/// bytes of `numbers` read, or `None` when they end early (never for what [`encode`]
/// wrote).
pub fn decode(shape: &[u8], numbers: &[u8], reference: i64, out: &mut Vec<u8>) -> Option<usize> {
    let mut at = 0;
    for &c in shape {
        match c {
            NUMBER | RELATIVE => {
                let (v, used) = get_varint(&numbers[at..])?;
                at += used;
                let n = if c == NUMBER {
                    v
                } else {
                    u64::try_from(i128::from(reference) + unzigzag(v)).ok()?
                };
                put_decimal(out, n);
            }
            _ => out.push(c),
        }
    }
    Some(at)
}

/// The bytes the numbers of `shape` take at the start of `numbers`.
pub fn numbers_len(shape: &[u8], numbers: &[u8]) -> usize {
    let marks = shape
        .iter()
        .filter(|&&c| c == NUMBER || c == RELATIVE)
        .count();
    let mut at = 0;
    for _ in 0..marks {
        at += get_varint(&numbers[at..]).map_or(0, |(_, used)| used);
    }
    at
}

/// Appends `n` in decimal (no allocation: names are unpacked on every listing).
fn put_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn parse(digits: &[u8]) -> u64 {
    digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
}

/// `v` as an unsigned number, small for small values of either sign; `None` past 64 bits.
fn zigzag(v: i128) -> Option<u64> {
    let z = if v >= 0 { v * 2 } else { -v * 2 - 1 };
    u64::try_from(z).ok()
}

fn unzigzag(z: u64) -> i128 {
    let z = i128::from(z);
    if z % 2 == 0 { z / 2 } else { -(z + 1) / 2 }
}

fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A LEB128 number and the bytes it took.
fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(name: &[u8], reference: i64) -> Option<(Vec<u8>, Vec<u8>)> {
        let (mut shape, mut numbers) = (Vec::new(), vec![9u8]);
        if !encode(name, reference, &mut shape, &mut numbers) {
            assert!(shape.is_empty() && numbers == [9]);
            return None;
        }
        numbers.push(0xff);
        let mut out = b"x".to_vec();
        let used = decode(&shape, &numbers[1..], reference, &mut out).unwrap();
        assert_eq!(&out[1..], name, "{}", String::from_utf8_lossy(name));
        assert_eq!(used, numbers.len() - 2);
        assert_eq!(numbers_len(&shape, &numbers[1..]), used);
        Some((shape, numbers[1..numbers.len() - 1].to_vec()))
    }

    #[test]
    fn names_come_back_byte_for_byte() {
        for name in [
            &b"1692398880.M316360P1.bench:2,S"[..],
            b"1692398880.M316360P1.bench,S=20151,W=20576:2,RS",
            b"0",
            b"00",
            b"007.M0P10.h",
            b"1.2.3",
            b"",
            b"no digits at all",
            b"12345678901234567890123",
            b"18446744073709551615",
            b"9999999999999999999",
            b"1234567890.M123456P1234V000000000000FD00I00000000012345_0.host",
            b"\xff\xfe5\x80",
            b"123",
        ] {
            for reference in [0, 1_692_398_880, -5, i64::MAX, i64::MIN] {
                round_trip(name, reference).expect("shaped");
            }
        }
    }

    #[test]
    fn names_with_mark_bytes_are_not_shaped() {
        assert_eq!(round_trip(b"a\0b", 0), None);
        assert_eq!(round_trip(b"1\x01", 0), None);
    }

    #[test]
    fn a_dovecot_name_takes_a_third_of_its_bytes() {
        let (shape, numbers) = round_trip(b"1692398880.M316360P1.bench:2,S", 0).unwrap();
        assert_eq!(shape, b"\0.M\0P\0.bench:2,S");
        let (shape, _) = round_trip(b"12:34", 0).unwrap();
        assert_eq!(shape, b"\0:34");
        assert_eq!(numbers.len(), 5 + 3 + 1);
        // Delivered when it was received: the first number takes one byte.
        let (shape, numbers) =
            round_trip(b"1692398880.M316360P1.bench:2,S", 1_692_398_881).unwrap();
        assert_eq!(shape[0], RELATIVE);
        assert_eq!(numbers.len(), 1 + 3 + 1);
        // Only the first number is stored against the date.
        let (shape, _) = round_trip(b"1692398880.M1692398880P1.bench", 1_692_398_880).unwrap();
        assert_eq!(shape.iter().filter(|&&c| c == RELATIVE).count(), 1);
    }

    #[test]
    fn digits_with_a_leading_zero_stay_in_the_shape() {
        let (shape, numbers) = round_trip(b"x007y0z", 0).unwrap();
        assert_eq!(shape, b"x007y\0z");
        assert_eq!(numbers, [0]);
    }
}
