//! METEOR's WordNet synonym dictionary (`SynonymDictionary`): word → synset
//! ids from `english.synsets`, irregular forms → base forms from
//! `english.exceptions`, and WordNet 3's suffix-stripping morphology for the
//! rest. Relations (`english.relations`) are not used by METEOR 1.5.

use crate::numeric::FxMap;

use super::java;

/// Synsets of words, as METEOR loads them.
#[derive(Debug, Default)]
pub(crate) struct SynonymDictionary {
    /// Irregular form → its base forms, in file order.
    bases: FxMap<String, Vec<String>>,
    /// Word → synset ids (sorted, deduplicated: METEOR keeps a set).
    synsets: FxMap<String, Vec<u32>>,
}

/// WordNet 3 detachment rules, in the order `morph` tries them
/// (nouns, verbs, adjectives): strip the suffix, add the ending.
const SUFFIXES: [(&str, &str); 20] = [
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("s", ""),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
    ("er", ""),
    ("est", ""),
    ("er", "e"),
    ("est", "e"),
];

impl SynonymDictionary {
    /// Parses the exceptions file (pairs of lines: a base form, then the
    /// forms that map to it) and the synsets file (pairs of lines: a word,
    /// then its synset ids). Errors name the 1-based line.
    pub(crate) fn parse(exceptions: &str, synsets: &str) -> Result<Self, (usize, String)> {
        let mut bases: FxMap<String, Vec<String>> = FxMap::default();
        let mut lines = exceptions.lines();
        while let Some(base) = lines.next() {
            let Some(forms) = lines.next() else { break };
            for form in java::tokens(forms) {
                bases
                    .entry(form.to_string())
                    .or_default()
                    .push(base.to_string());
            }
        }
        let mut map = FxMap::default();
        let mut lines = synsets.lines().enumerate();
        while let Some((_, word)) = lines.next() {
            let Some((n, ids)) = lines.next() else {
                return Err((0, format!("word {word:?} has no synset line")));
            };
            let mut set = Vec::new();
            for t in java::tokens(ids) {
                let id: u32 = t
                    .parse()
                    .map_err(|_| (n + 1, format!("synset id {t:?} is not a number")))?;
                set.push(id);
            }
            set.sort_unstable();
            set.dedup();
            // A later entry for the same word replaces an earlier one (put).
            map.insert(word.to_string(), set);
        }
        Ok(SynonymDictionary {
            bases,
            synsets: map,
        })
    }

    fn synsets_of(&self, word: &str) -> &[u32] {
        self.synsets.get(word).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `getSynSets(word) ∪ getStemSynSets(word)`, sorted: the set the synonym
    /// matcher compares.
    pub(crate) fn all_synsets(&self, word: &str) -> Vec<u32> {
        let mut set = self.synsets_of(word).to_vec();
        match self.bases.get(word) {
            Some(bases) => {
                for b in bases {
                    set.extend_from_slice(self.synsets_of(b));
                }
            }
            None => set.extend_from_slice(self.synsets_of(&self.morph(word))),
        }
        set.sort_unstable();
        set.dedup();
        set
    }

    /// `SynonymDictionary.morph`: the first WordNet detachment that yields a
    /// known word, or `""`. Words ending in `ss` or of at most 2 UTF-16 units
    /// come back unchanged. (The Java method's `-ful` handling is dead code:
    /// no rule applies to a word ending in `l`, so such words give `""`.)
    fn morph(&self, word: &str) -> String {
        if word.ends_with("ss") || java::utf16_len(word) <= 2 {
            return word.to_string();
        }
        for (suffix, ending) in SUFFIXES {
            if let Some(stem) = word.strip_suffix(suffix) {
                let candidate = format!("{stem}{ending}");
                if self.synsets.contains_key(&candidate) {
                    return candidate;
                }
            }
        }
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn morphology_and_exceptions() {
        let d = SynonymDictionary::parse(
            "mouse\nmice\ngoose\ngeese\n",
            "mouse\n1 2\ngoose\n3\ndog\n4\nbox\n5\nglass\n6\n",
        )
        .unwrap();
        assert_eq!(d.all_synsets("mice"), vec![1, 2]);
        assert_eq!(d.all_synsets("dogs"), vec![4]);
        assert_eq!(d.all_synsets("boxes"), vec![5]);
        assert_eq!(d.all_synsets("glass"), vec![6]);
        assert!(d.all_synsets("cats").is_empty());
    }
}
