//! Word-level vocabulary built from training captions (small output layers for tiny
//! CPU captioners). Ids: pad 0, BOS 1, EOS 2, unknown word 3, then the tokens by
//! decreasing count, ties in byte order, so the same captions always give the same ids.
//!
//! Tokens are words (runs of letters, digits and apostrophes, lower-cased) and the
//! punctuation marks of [`PUNCTUATION`], each a token of its own, as CLIP BPE keeps
//! them: the synthetic world's grammar needs `:` ("two shapes: a red circle and a blue
//! box") and `,` (longer lists), and a captioner that cannot write them cannot write
//! those sentences. A mark is a token only where the vocabulary holds it, i.e. where
//! the training captions had it (at least `min_count` times); elsewhere it separates
//! words and is dropped, which is also how a vocabulary saved before marks were
//! tokens (no mark among its words) keeps reading text exactly as it did.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::TokenSpec;

/// Padding id.
pub const PAD: i64 = 0;
/// Beginning-of-sequence id.
pub const BOS: i64 = 1;
/// End-of-sequence id.
pub const EOS: i64 = 2;
/// Unknown-word id.
pub const UNK: i64 = 3;

const SPECIALS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<unk>"];

/// A word-level caption vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocab {
    /// Words by id, the four specials first.
    words: Vec<String>,
    #[serde(skip)]
    index: BTreeMap<String, i64>,
}

/// Punctuation marks that are tokens of their own (when the vocabulary holds them);
/// decoding writes them without a space before.
pub const PUNCTUATION: [char; 6] = [',', ':', ';', '.', '!', '?'];

impl TokenSpec {
    /// A word-level vocabulary of `vocab_size` ids laid out as [`Vocab`] does:
    /// pad 0, BOS 1, EOS 2 (unknown word 3).
    pub fn words(vocab_size: i64) -> Self {
        Self {
            vocab_size,
            pad: PAD,
            bos: BOS,
            eos: EOS,
        }
    }
}

/// Whether `token` is one of the [`PUNCTUATION`] marks.
pub fn is_punctuation(token: &str) -> bool {
    let mut chars = token.chars();
    matches!((chars.next(), chars.next()), (Some(c), None) if PUNCTUATION.contains(&c))
}

/// Tokens of `text` in order: lower-cased words (runs of alphanumeric characters and
/// apostrophes) and each [`PUNCTUATION`] mark on its own; every other character only
/// separates words. `"Two shapes: a red circle, a box."` gives `two shapes : a red
/// circle , a box .`.
pub fn split_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || c == '\'' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word).to_lowercase());
        }
        if PUNCTUATION.contains(&c) {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word.to_lowercase());
    }
    out
}

impl Vocab {
    /// Builds the vocabulary of `captions`: tokens (`split_tokens`: words and
    /// punctuation marks) seen at least `min_count` times, at most `max_words` of them
    /// (most frequent first) when given.
    pub fn build<S: AsRef<str>>(
        captions: &[S],
        min_count: usize,
        max_words: Option<usize>,
    ) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for caption in captions {
            for word in split_tokens(caption.as_ref()) {
                *counts.entry(word).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(_, n)| *n >= min_count.max(1))
            .collect();
        // BTreeMap order is byte order; a stable sort by count keeps it for ties.
        ranked.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        if let Some(max) = max_words {
            ranked.truncate(max);
        }
        let words = SPECIALS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(ranked.into_iter().map(|(w, _)| w))
            .collect();
        Self::from_words(words)
    }

    fn from_words(words: Vec<String>) -> Self {
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as i64))
            .collect();
        Self { words, index }
    }

    /// Rebuilds the lookup table after deserialization (serde skips it).
    pub fn reindexed(self) -> Self {
        Self::from_words(self.words)
    }

    /// Number of ids, specials included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when the vocabulary holds only the specials.
    pub fn is_empty(&self) -> bool {
        self.words.len() <= SPECIALS.len()
    }

    /// Token ids for a captioner using this vocabulary.
    pub fn tokens(&self) -> TokenSpec {
        TokenSpec::words(self.words.len() as i64)
    }

    /// Id of one (lower-case) word, `UNK` if absent.
    pub fn id(&self, word: &str) -> i64 {
        match self.index.get(word) {
            Some(&id) if id > UNK => id,
            _ => UNK,
        }
    }

    /// Word of an id (`None` outside the vocabulary).
    pub fn word(&self, id: i64) -> Option<&str> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.words.get(i))
            .map(String::as_str)
    }

    /// The `PUNCTUATION` marks this vocabulary holds as tokens (the others are
    /// dropped when encoding), in id order.
    pub fn punctuation(&self) -> Vec<&str> {
        self.words
            .iter()
            .skip(SPECIALS.len())
            .map(String::as_str)
            .filter(|w| is_punctuation(w))
            .collect()
    }

    /// Ids of `text` without BOS/EOS: one per word (`UNK` for a word outside the
    /// vocabulary) and one per punctuation mark the vocabulary holds; marks it does
    /// not hold are dropped (they only separate words).
    pub fn encode(&self, text: &str) -> Vec<i64> {
        if self.index.is_empty() {
            // Deserialized without `reindexed`: rebuild on the fly.
            return self.clone().reindexed().encode(text);
        }
        split_tokens(text)
            .into_iter()
            .filter_map(|t| match self.index.get(&t) {
                Some(&id) if id > UNK => Some(id),
                _ if is_punctuation(&t) => None,
                _ => Some(UNK),
            })
            .collect()
    }

    /// Ids of `text` followed by EOS, cut to `max_len` with EOS kept last (the target
    /// sequence of teacher forcing).
    pub fn encode_target(&self, text: &str, max_len: usize) -> Vec<i64> {
        let mut ids = self.encode(text);
        ids.push(EOS);
        if ids.len() > max_len && max_len > 0 {
            ids.truncate(max_len);
            ids[max_len - 1] = EOS;
        }
        ids
    }

    /// Caption text of a generated sequence: skips pad and BOS, stops at EOS, ignores
    /// ids outside the vocabulary; words joined by single spaces, a punctuation mark
    /// written right after the previous token ("two shapes: a red circle, a blue box").
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut out = String::new();
        let tokens = ids
            .iter()
            .copied()
            .take_while(|&id| id != EOS)
            .filter(|&id| id != PAD && id != BOS)
            .filter_map(|id| self.word(id));
        for token in tokens {
            if !out.is_empty() && !is_punctuation(token) {
                out.push(' ');
            }
            out.push_str(token);
        }
        out
    }
}
