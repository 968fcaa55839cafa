//! Checked access to bytes read from a peer, for the parsers that deny
//! `clippy::indexing_slicing`: a split that cannot panic, and fixed-size fields taken out of a
//! buffer that may be short.

/// `bytes` split after `n` bytes, or after all of them when there are fewer.
pub fn split(bytes: &[u8], n: usize) -> (&[u8], &[u8]) {
    bytes.split_at_checked(n).unwrap_or((bytes, &[]))
}

/// The `N` bytes at `at`, if `bytes` holds them.
pub fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_arrays_never_reach_past_the_end() {
        assert_eq!(split(b"abc", 1), (&b"a"[..], &b"bc"[..]));
        assert_eq!(split(b"abc", 9), (&b"abc"[..], &b""[..]));
        assert_eq!(array::<2>(b"abc", 1), Some(*b"bc"));
        assert_eq!(array::<2>(b"abc", 2), None);
        assert_eq!(array::<2>(b"abc", usize::MAX), None);
    }
}
