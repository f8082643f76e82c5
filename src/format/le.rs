//! Little-endian integers read from byte slices: the one reader the parsers, the index
//! engine and the stores use for Dovecot's binary files.
//!
//! `*_at(data, at)` is the value whose bytes start at `at`, or `None` when they are not all
//! there (a short slice, an offset past the end, or one so large that `at + size`
//! overflows); it never panics. Where a missing field reads as 0, the caller says so with
//! `.unwrap_or(0)`. [`u32_exact`] is for a slice that must be exactly one `u32` (an
//! extension's record data, whose declared size must be the field's).

/// The `N` bytes at `at`, if they are all there.
#[inline]
fn bytes_at<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The little-endian `u16` at `at`, if its bytes are there.
#[inline]
pub fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    bytes_at(data, at).map(u16::from_le_bytes)
}

/// The little-endian `u32` at `at`, if its bytes are there.
#[inline]
pub fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    bytes_at(data, at).map(u32::from_le_bytes)
}

/// The little-endian `u64` at `at`, if its bytes are there.
#[inline]
pub fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    bytes_at(data, at).map(u64::from_le_bytes)
}

/// `data` as a little-endian `u32`, if it is exactly 4 bytes long.
#[inline]
pub fn u32_exact(data: &[u8]) -> Option<u32> {
    data.try_into().ok().map(u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_values_in_bounds_only() {
        let d = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_at(&d, 0), Some(0x0201));
        assert_eq!(u16_at(&d, 7), Some(0x0908));
        assert_eq!(u32_at(&d, 1), Some(0x0504_0302));
        assert_eq!(u32_at(&d, 5), Some(0x0908_0706));
        assert_eq!(u64_at(&d, 0), Some(0x0807_0605_0403_0201));
        assert_eq!(u64_at(&d, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(u16_at(&d, 8), None);
        assert_eq!(u32_at(&d, 6), None);
        assert_eq!(u64_at(&d, 2), None);
        assert_eq!(u32_at(&d, 100), None);
        assert_eq!(u32_at(&[], 0), None);
        for at in [usize::MAX, usize::MAX - 1, usize::MAX - 3, usize::MAX - 7] {
            assert_eq!(u16_at(&d, at), None);
            assert_eq!(u32_at(&d, at), None);
            assert_eq!(u64_at(&d, at), None);
        }
    }

    #[test]
    fn exact_takes_four_bytes_only() {
        assert_eq!(u32_exact(&[0x78, 0x56, 0x34, 0x12]), Some(0x1234_5678));
        assert_eq!(u32_exact(&[1, 2, 3]), None);
        assert_eq!(u32_exact(&[1, 2, 3, 4, 5]), None);
        assert_eq!(u32_exact(&[]), None);
    }
}
