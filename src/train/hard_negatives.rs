//! Hard negative captions for contrastive training: a true caption with one
//! word swapped for a word of another meaning from the same class ("a red
//! circle" → "a red square", "above" → "below"), so the loss must look at what
//! the swapped word names instead of telling captions apart by any word that
//! differs across the batch.
//!
//! This is NegCLIP's recipe (Yuksekgonul et al., "When and why
//! vision-language models behave like bags-of-words, and what to do about it",
//! ICLR 2023): swap-based negatives join the image→text side of the loss
//! ([`crate::train::contrastive::clip_contrastive_loss_with_negatives`]). The
//! word classes come from settings, so the same stage serves the synthetic
//! world (colours, shapes, sides, relations) and a user's own captions.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::train::error::TrainError;

/// Settings of hard negatives (`[train.hard_negatives]` of `train_evaluator`).
///
/// A class is a list of meanings; a meaning is one word or several synonyms
/// joined by `|` (`"purple|violet"`). A negative replaces one word of the
/// caption that belongs to a class with the first word of another meaning of
/// that class, so a synonym is never a negative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardNegativesConfig {
    /// Negatives per caption (at most; a caption with fewer swappable word
    /// positions gets fewer, one with none gets none).
    pub per_caption: usize,
    /// Classes of interchangeable words, e.g.
    /// `[["red", "blue", "purple|violet"], ["above|over", "below|under"]]`.
    pub swap: Vec<Vec<String>>,
}

/// The checked form of [`HardNegativesConfig`].
#[derive(Debug, Clone)]
pub struct HardNegatives {
    per_caption: usize,
    /// Per class, per meaning, its words (lowercase).
    classes: Vec<Vec<Vec<String>>>,
}

impl HardNegatives {
    /// Check the settings: at least one negative per caption, every class
    /// with two meanings or more, words of letters, digits, `'` or `-`, and no
    /// word in two places (a swap must have one meaning to leave).
    pub fn new(cfg: &HardNegativesConfig) -> Result<Self, TrainError> {
        let bad = |reason: &'static str, value: String| TrainError::Setting {
            name: "hard_negatives",
            value,
            reason,
        };
        if cfg.per_caption == 0 {
            return Err(bad(
                "per_caption must be 1 or more (leave hard_negatives out to train without them)",
                "per_caption = 0".into(),
            ));
        }
        if cfg.swap.is_empty() {
            return Err(bad(
                "give at least one class of words in `swap`",
                "swap = []".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut classes = Vec::new();
        for class in &cfg.swap {
            if class.len() < 2 {
                return Err(bad(
                    "every class in `swap` needs two meanings or more to swap between",
                    format!("{class:?}"),
                ));
            }
            let mut meanings = Vec::new();
            for meaning in class {
                let words: Vec<String> = meaning.split('|').map(str::to_lowercase).collect();
                for w in &words {
                    if w.is_empty()
                        || !w
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '\'' || c == '-')
                    {
                        return Err(bad(
                            "a swap word is one word of letters, digits, ' or - (synonyms joined by |)",
                            format!("{meaning:?}"),
                        ));
                    }
                    if !seen.insert(w.clone()) {
                        return Err(bad(
                            "a word may appear only once in `swap`",
                            format!("{w:?}"),
                        ));
                    }
                }
                meanings.push(words);
            }
            classes.push(meanings);
        }
        Ok(Self {
            per_caption: cfg.per_caption,
            classes,
        })
    }

    /// Up to `per_caption` distinct negatives of `caption`, each with one word
    /// swapped, drawn with `rng`. Words are the caption's whitespace-separated
    /// tokens without leading/trailing punctuation, matched case-insensitively;
    /// the punctuation around a swapped word is kept ("shapes:" stays
    /// "…:"). Empty when no word of the caption is in a class.
    pub fn negatives(&self, caption: &str, rng: &mut Rng) -> Vec<String> {
        let tokens: Vec<&str> = caption.split_whitespace().collect();
        // (token index, byte range of the word in the token, class, meaning)
        let mut slots = Vec::new();
        for (t, token) in tokens.iter().enumerate() {
            let start = token.len() - token.trim_start_matches(is_punct).len();
            let end = token.trim_end_matches(is_punct).len().max(start);
            let word = token[start..end].to_lowercase();
            if let Some((c, m)) = self.find(&word) {
                slots.push((t, start..end, c, m));
            }
        }
        // Every (slot, other meaning) pair is one possible negative; draw
        // without replacement.
        let mut options: Vec<(usize, usize)> = Vec::new();
        for (s, (_, _, c, m)) in slots.iter().enumerate() {
            for other in 0..self.classes[*c].len() {
                if other != *m {
                    options.push((s, other));
                }
            }
        }
        let mut out = Vec::new();
        while out.len() < self.per_caption && !options.is_empty() {
            let (s, other) = options.swap_remove(rng.index(options.len()));
            let (t, range, c, _) = &slots[s];
            let token = tokens[*t];
            let replaced = format!(
                "{}{}{}",
                &token[..range.start],
                self.classes[*c][other][0],
                &token[range.end..]
            );
            let mut words = tokens.clone();
            words[*t] = &replaced;
            out.push(words.join(" "));
        }
        out
    }

    fn find(&self, word: &str) -> Option<(usize, usize)> {
        self.classes.iter().enumerate().find_map(|(c, meanings)| {
            meanings
                .iter()
                .position(|m| m.iter().any(|w| w == word))
                .map(|m| (c, m))
        })
    }
}

fn is_punct(c: char) -> bool {
    !(c.is_alphanumeric() || c == '\'' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> HardNegatives {
        HardNegatives::new(&HardNegativesConfig {
            per_caption: 3,
            swap: vec![
                vec!["red".into(), "blue".into(), "purple|violet".into()],
                vec!["above|over".into(), "below|under".into()],
            ],
        })
        .unwrap()
    }

    #[test]
    fn a_negative_swaps_one_word_for_another_meaning_keeping_punctuation() {
        let hn = world();
        let caption = "two shapes: a violet circle above a red box.";
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50 {
            for n in hn.negatives(caption, &mut Rng::new(seed)) {
                seen.insert(n);
            }
        }
        let expected: std::collections::BTreeSet<String> = [
            "two shapes: a red circle above a red box.",
            "two shapes: a blue circle above a red box.",
            "two shapes: a violet circle below a red box.",
            "two shapes: a violet circle above a blue box.",
            "two shapes: a violet circle above a purple box.",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        // Never the synonym ("purple circle"), never the caption itself.
        assert_eq!(seen, expected);
    }

    #[test]
    fn negatives_are_distinct_capped_and_absent_without_class_words() {
        let hn = world();
        let mut rng = Rng::new(7);
        let n = hn.negatives("a red circle above a blue box", &mut rng);
        assert_eq!(n.len(), 3);
        let set: std::collections::HashSet<_> = n.iter().collect();
        assert_eq!(set.len(), 3);
        assert!(hn.negatives("a green circle", &mut rng).is_empty());
        // "Red," at the start: case-insensitive match, comma kept.
        let n = hn.negatives("Red, then nothing", &mut rng);
        assert!(n.iter().all(|s| s.ends_with(", then nothing")), "{n:?}");
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn settings_that_cannot_make_a_negative_are_refused() {
        let refused = |per_caption, swap: Vec<Vec<&str>>| {
            let swap = swap
                .into_iter()
                .map(|c| c.into_iter().map(String::from).collect())
                .collect();
            HardNegatives::new(&HardNegativesConfig { per_caption, swap }).unwrap_err()
        };
        assert!(refused(0, vec![vec!["a", "b"]])
            .to_string()
            .contains("per_caption"));
        assert!(refused(1, vec![])
            .to_string()
            .contains("at least one class"));
        assert!(refused(1, vec![vec!["red"]])
            .to_string()
            .contains("two meanings"));
        assert!(refused(1, vec![vec!["red", "red|blue"]])
            .to_string()
            .contains("only once"));
        assert!(refused(1, vec![vec!["red box", "blue"]])
            .to_string()
            .contains("one word"));
    }
}
