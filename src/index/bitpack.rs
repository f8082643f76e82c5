//! Columns of 32-bit values packed to the bits their range needs (frame of reference),
//! for tables that are written once and read often: the index records of a view
//! ([`super::records`]) and the packed chunks of a store view (`store::packed`).
//!
//! A table of `rows` rows by `columns` columns is packed column by column: each column
//! keeps a base and a width, and row `r`'s value is `base + bits(r)` (wrapping), where the
//! bits are `width` bits at the row's place. A column may instead store its difference
//! from an earlier column of the same row (a virtual size against the size, a map UID
//! against the UID), whichever needs fewer bits; the range is measured both as unsigned
//! and as signed numbers, so small negative differences stay small.
//!
//! Invariant: [`BitColumns::get`] gives back exactly the value packed at that place (a
//! width of 32 keeps any value). Lives in the index layer because it is its lowest user;
//! the store uses it too.

/// How one column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Code {
    /// Added (wrapping) to the stored bits.
    base: u32,
    /// Bits a row's value takes (0..=32).
    width: u8,
    /// The earlier column this one is stored against, or [`NO_REFERENCE`].
    reference: u8,
    /// Where the column's bits begin within a row's bits.
    offset: u16,
}

const NO_REFERENCE: u8 = u8::MAX;

/// A packed table (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BitColumns {
    words: Box<[u64]>,
    codes: Box<[Code]>,
    row_bits: u32,
    rows: u32,
}

impl BitColumns {
    /// Packs `rows` rows of `columns` columns, reading each value once or twice through
    /// `value(row, column)`. `references[c]` lists the earlier columns column `c` may be
    /// stored against (an empty slice, or one shorter than `columns`, allows none).
    pub fn pack(
        rows: usize,
        columns: usize,
        value: impl Fn(usize, usize) -> u32,
        references: &[&[usize]],
    ) -> BitColumns {
        assert!(columns < usize::from(NO_REFERENCE), "too many columns");
        let mut codes = Vec::with_capacity(columns);
        let mut row_bits = 0u32;
        for c in 0..columns {
            let own = frame(rows, |r| value(r, c));
            let mut best = (own, NO_REFERENCE);
            for &other in references.get(c).copied().unwrap_or(&[]) {
                assert!(other < c, "a column is stored against an earlier one");
                let (base, width) = frame(rows, |r| value(r, c).wrapping_sub(value(r, other)));
                if width < best.0.1 {
                    best = ((base, width), other as u8);
                }
            }
            let ((base, width), reference) = best;
            codes.push(Code {
                base,
                width,
                reference,
                offset: row_bits as u16,
            });
            row_bits += u32::from(width);
        }
        let total = row_bits as usize * rows;
        let mut words = vec![0u64; total.div_ceil(64) + 1];
        for r in 0..rows {
            for (c, code) in codes.iter().enumerate() {
                if code.width == 0 {
                    continue;
                }
                let mut v = value(r, c);
                if code.reference != NO_REFERENCE {
                    v = v.wrapping_sub(value(r, usize::from(code.reference)));
                }
                let bits = v.wrapping_sub(code.base);
                let at = r * row_bits as usize + usize::from(code.offset);
                put(&mut words, at, code.width, bits);
            }
        }
        BitColumns {
            words: words.into_boxed_slice(),
            codes: codes.into_boxed_slice(),
            row_bits,
            rows: rows as u32,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows as usize
    }

    /// Number of columns.
    pub fn columns(&self) -> usize {
        self.codes.len()
    }

    /// The value at `row`, `column` (both in range).
    pub fn get(&self, row: usize, column: usize) -> u32 {
        debug_assert!(row < self.rows());
        let code = self.codes[column];
        let mut v = code.base;
        if code.width > 0 {
            let at = row * self.row_bits as usize + usize::from(code.offset);
            v = v.wrapping_add(take(&self.words, at, code.width));
        }
        if code.reference != NO_REFERENCE {
            v = v.wrapping_add(self.get(row, usize::from(code.reference)));
        }
        v
    }

    /// Heap bytes held (for the memory tests).
    pub fn heap_bytes(&self) -> usize {
        self.words.len() * 8 + self.codes.len() * std::mem::size_of::<Code>()
    }
}

/// The base and width that hold every value `value(0..rows)`: the smaller of the unsigned
/// and the signed range.
fn frame(rows: usize, value: impl Fn(usize) -> u32) -> (u32, u8) {
    if rows == 0 {
        return (0, 0);
    }
    let (mut umin, mut umax) = (u32::MAX, 0u32);
    let (mut smin, mut smax) = (i32::MAX, i32::MIN);
    for r in 0..rows {
        let v = value(r);
        umin = umin.min(v);
        umax = umax.max(v);
        smin = smin.min(v as i32);
        smax = smax.max(v as i32);
    }
    let urange = umax - umin;
    let srange = smax.wrapping_sub(smin) as u32;
    let (base, range) = if srange < urange {
        (smin as u32, srange)
    } else {
        (umin, urange)
    };
    (base, (32 - range.leading_zeros()) as u8)
}

/// Writes the low `width` bits of `bits` at bit `at` (the bits there are zero).
fn put(words: &mut [u64], at: usize, width: u8, bits: u32) {
    let (w, shift) = (at / 64, at % 64);
    let v = u64::from(bits) & mask(width);
    words[w] |= v << shift;
    if shift + usize::from(width) > 64 {
        words[w + 1] |= v >> (64 - shift);
    }
}

/// Reads `width` (1..=32) bits at bit `at`.
fn take(words: &[u64], at: usize, width: u8) -> u32 {
    let (w, shift) = (at / 64, at % 64);
    let mut v = words[w] >> shift;
    if shift + usize::from(width) > 64 {
        v |= words[w + 1] << (64 - shift);
    }
    (v & mask(width)) as u32
}

fn mask(width: u8) -> u64 {
    (1u64 << width) - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::testutil::XorShift;

    fn table(rows: &[Vec<u32>]) -> impl Fn(usize, usize) -> u32 + '_ {
        |r, c| rows[r][c]
    }

    fn check(rows: &[Vec<u32>], references: &[&[usize]]) -> BitColumns {
        let columns = rows.first().map_or(0, Vec::len);
        let b = BitColumns::pack(rows.len(), columns, table(rows), references);
        for (r, row) in rows.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                assert_eq!(b.get(r, c), v, "row {r} column {c}");
            }
        }
        b
    }

    #[test]
    fn every_value_comes_back_whatever_its_range() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next();
        for width in [0u32, 1, 5, 17, 31, 32] {
            let rows: Vec<Vec<u32>> = (0..300)
                .map(|i| {
                    let noise = if width == 32 {
                        next() as u32
                    } else {
                        (next() as u32) & ((1u32 << width) - 1)
                    };
                    vec![
                        i,
                        7,
                        noise,
                        u32::MAX - noise,
                        noise.wrapping_add(3_000_000_000),
                    ]
                })
                .collect();
            check(&rows, &[]);
            check(&rows, &[&[], &[0], &[0, 1], &[2], &[3, 2]]);
        }
    }

    #[test]
    fn constant_and_counting_columns_take_almost_nothing() {
        let rows: Vec<Vec<u32>> = (0..256)
            .map(|i| vec![1000 + i, 42, 2000 + i, 5000 + i * 3])
            .collect();
        let b = check(&rows, &[&[], &[], &[0], &[]]);
        // UID 8 bits, constant 0, map UID against the UID 0, the last column 10 bits.
        assert_eq!(b.row_bits, 18);
        assert!(b.heap_bytes() < 256 * 18 / 8 + 16 + 4 * 8);
    }

    #[test]
    fn small_negative_differences_stay_small() {
        // A saved date a little before or after the received one.
        let rows: Vec<Vec<u32>> = (0..100)
            .map(|i| {
                vec![
                    1_700_000_000 + i * 1000,
                    1_700_000_000 + i * 1000 - 3 + (i % 7),
                ]
            })
            .collect();
        let b = check(&rows, &[&[], &[0]]);
        assert_eq!(b.codes[1].width, 3);
        assert_eq!(b.codes[1].reference, 0);
    }

    #[test]
    fn an_empty_table_packs() {
        let b = BitColumns::pack(0, 3, |_, _| unreachable!(), &[]);
        assert_eq!(b.rows(), 0);
        assert_eq!(b.columns(), 3);
    }
}
