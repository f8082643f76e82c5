//! A message's keywords: a set of positions in its view's keyword table
//! ([`MailboxView::keyword_names`](super::MailboxView::keyword_names)), of any size.
//! Dovecot allows far more keywords than a machine word holds (an sdbox message with 40
//! keywords is ordinary); up to 64 fit inline, without allocating.

use std::fmt;

/// A set of keyword positions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeywordSet(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// Positions 0..64.
    Inline(u64),
    /// Any positions: bit `i % 64` of word `i / 64`; never ends in a zero word (so that
    /// equal sets compare equal).
    Spilled(Box<[u64]>),
}

impl Default for KeywordSet {
    fn default() -> Self {
        KeywordSet(Repr::Inline(0))
    }
}

impl KeywordSet {
    /// The set of the positions `iter` gives.
    pub fn from_positions(iter: impl IntoIterator<Item = usize>) -> KeywordSet {
        let mut words: Vec<u64> = vec![0];
        for i in iter {
            let w = i / 64;
            if words.len() <= w {
                words.resize(w + 1, 0);
            }
            words[w] |= 1 << (i % 64);
        }
        KeywordSet::from_words(words)
    }

    /// The set of the bits of `mask` (as a Maildir file name's keyword letters give).
    pub fn from_mask(mask: u32) -> KeywordSet {
        KeywordSet(Repr::Inline(u64::from(mask)))
    }

    fn from_words(mut words: Vec<u64>) -> KeywordSet {
        while words.len() > 1 && words.last() == Some(&0) {
            words.pop();
        }
        match words.as_slice() {
            [] => KeywordSet::default(),
            [w] => KeywordSet(Repr::Inline(*w)),
            _ => KeywordSet(Repr::Spilled(words.into_boxed_slice())),
        }
    }

    fn words(&self) -> &[u64] {
        match &self.0 {
            Repr::Inline(w) => std::slice::from_ref(w),
            Repr::Spilled(words) => words,
        }
    }

    /// True when position `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.words()
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// True for no keywords.
    pub fn is_empty(&self) -> bool {
        self.words().iter().all(|w| *w == 0)
    }

    /// The positions, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words().iter().enumerate().flat_map(|(wi, &w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| wi * 64 + b)
        })
    }

    /// The union of the two sets.
    pub fn union(&self, other: &KeywordSet) -> KeywordSet {
        let (a, b) = (self.words(), other.words());
        let words = (0..a.len().max(b.len()))
            .map(|i| a.get(i).copied().unwrap_or(0) | b.get(i).copied().unwrap_or(0))
            .collect();
        KeywordSet::from_words(words)
    }
}

impl fmt::Debug for KeywordSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_any_number_of_keywords_and_compares_by_content() {
        let forty = KeywordSet::from_positions(0..40);
        assert_eq!(forty.iter().count(), 40);
        assert!(forty.contains(39) && !forty.contains(40));
        let many = KeywordSet::from_positions([3, 64, 200]);
        assert_eq!(many.iter().collect::<Vec<_>>(), vec![3, 64, 200]);
        assert!(many.contains(200) && !many.contains(199) && !many.contains(10_000));
        // The same set made two ways is equal, whatever its representation.
        let spilled_then_small = KeywordSet::from_positions([3, 100])
            .union(&KeywordSet::default())
            .iter()
            .filter(|&i| i < 64)
            .collect::<Vec<_>>();
        assert_eq!(
            KeywordSet::from_positions(spilled_then_small),
            KeywordSet::from_positions([3])
        );
        assert_eq!(
            KeywordSet::from_positions([1]).union(&KeywordSet::from_positions([70])),
            KeywordSet::from_positions([70, 1])
        );
        assert!(KeywordSet::default().is_empty());
        assert_eq!(std::mem::size_of::<KeywordSet>(), 16);
    }
}
