//! CIDEr-D as the toolkit's `Cider` scorer computes it (n = 1..4, σ = 6).
//!
//! Document frequencies come from the references of the evaluated images
//! only, so the same caption scores differently on different subsets. Each
//! n-gram is weighted by tf × (ln N − ln max(1, df)) with N the number of
//! images; candidate weights are clipped by the reference weights before the
//! dot product; a Gaussian penalty on the length difference uses the number of
//! *bigrams* (the toolkit's `length` counter), not words; the four n-gram
//! similarities are averaged, divided by the number of references and
//! multiplied by 10. Sums run in the toolkit's order (n-grams in order of
//! first occurrence) so that the values agree to the last bits.

use super::numeric::{numpy_mean, python_split, FxMap};
use super::scores::Scores;

const N: usize = 4;
const SIGMA: f64 = 6.0;

/// The prefix of a unigram in [`Interner::grams`]' keys (no n-gram id is
/// `u32::MAX`: there are fewer n-grams than that).
const NO_PREFIX: u32 = u32::MAX;

/// Term frequencies of one sentence: per n-gram length, (n-gram id, count)
/// in order of first occurrence, plus the number of bigrams.
struct Counts {
    grams: [Vec<(u32, f64)>; N],
    bigrams: usize,
}

/// Interns words and n-grams so that later steps work on integer ids. An
/// n-gram is keyed by the id of its first n − 1 words and the id of its last
/// word, one `u64`, so that interning an n-gram costs one hash of a word.
#[derive(Default)]
struct Interner<'a> {
    words: FxMap<&'a str, u32>,
    /// N-gram id by `(prefix id << 32) | last word id`; ids in order of
    /// first occurrence.
    grams: FxMap<u64, u32>,
    /// Per n-gram id: the prefix's id ([`NO_PREFIX`] for a unigram) and the
    /// last word's id.
    parts: Vec<(u32, u32)>,
}

impl<'a> Interner<'a> {
    fn count(&mut self, sentence: &'a str) -> Counts {
        let words: Vec<u32> = python_split(sentence)
            .into_iter()
            .map(|w| {
                let next = self.words.len() as u32;
                *self.words.entry(w).or_insert(next)
            })
            .collect();
        let mut grams: [Vec<(u32, f64)>; N] = Default::default();
        // `ids[p]`: the id of the n-gram starting at word p, for the current n.
        let mut ids: Vec<u32> = Vec::with_capacity(words.len());
        for (k, out) in grams.iter_mut().enumerate() {
            let count = words.len().saturating_sub(k);
            for p in 0..count {
                let prefix = if k == 0 { NO_PREFIX } else { ids[p] };
                let last = words[p + k];
                let key = (u64::from(prefix) << 32) | u64::from(last);
                let next = self.parts.len() as u32;
                let parts = &mut self.parts;
                let id = *self.grams.entry(key).or_insert_with(|| {
                    parts.push((prefix, last));
                    next
                });
                if k == 0 {
                    ids.push(id);
                } else {
                    ids[p] = id; // read above; positions after p still hold n-grams
                }
                // Captions are short: a linear search beats hashing.
                match out.iter_mut().find(|(x, _)| *x == id) {
                    Some(e) => e.1 += 1.0,
                    None => out.push((id, 1.0)),
                }
            }
            ids.truncate(count);
        }
        Counts {
            grams,
            bigrams: words.len().saturating_sub(1),
        }
    }

    /// The word ids of n-gram `id`, first word first, into `out` (cleared).
    fn gram_words(&self, mut id: u32, out: &mut Vec<u32>) {
        out.clear();
        while id != NO_PREFIX {
            let (prefix, last) = self.parts[id as usize];
            out.push(last);
            id = prefix;
        }
        out.reverse();
    }
}

/// TF-IDF vector of one sentence.
struct Vector {
    /// Per n: (n-gram id, weight) in first-occurrence order.
    weights: [Vec<(u32, f64)>; N],
    norm: [f64; N],
    length: f64,
}

fn vectorize(c: &Counts, idf: &[f64]) -> Vector {
    let mut weights: [Vec<(u32, f64)>; N] = Default::default();
    let mut norm = [0.0; N];
    for n in 0..N {
        weights[n].reserve(c.grams[n].len());
        for &(g, tf) in &c.grams[n] {
            let w = tf * idf[g as usize];
            norm[n] += w * w;
            weights[n].push((g, w));
        }
    }
    for v in &mut norm {
        *v = v.sqrt();
    }
    Vector {
        weights,
        norm,
        length: c.bigrams as f64,
    }
}

fn sim(hyp: &Vector, r: &Vector) -> [f64; N] {
    let delta = hyp.length - r.length;
    // `np.e ** x` is libm's pow; black_box stops pow(e, x) becoming exp(x).
    let e = std::hint::black_box(std::f64::consts::E);
    let penalty = e.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    let mut val = [0.0; N];
    for (n, v) in val.iter_mut().enumerate() {
        for (g, vh) in &hyp.weights[n] {
            let vr = r.weights[n]
                .iter()
                .find(|(x, _)| x == g)
                .map_or(0.0, |&(_, w)| w);
            *v += vh.min(vr) * vr;
        }
        if hyp.norm[n] != 0.0 && r.norm[n] != 0.0 {
            *v /= hyp.norm[n] * r.norm[n];
        }
        *v *= penalty;
    }
    val
}

/// Document frequencies of a fixed corpus: SCST's CIDEr-D reward weighs
/// n-grams by the training references rather than by the evaluated batch.
pub trait DocumentFrequencies {
    /// Documents (images) in the corpus, N of `ln N − ln max(1, df)`. Must be
    /// at least 1.
    fn documents(&self) -> u64;
    /// Documents whose references contain `ngram` (its words in order).
    fn frequency(&self, ngram: &[&str]) -> u64;
}

/// Words of a tokenized caption as CIDEr-D splits them (Python's `str.split`).
pub fn cider_words(tokenized: &str) -> Vec<&str> {
    python_split(tokenized)
}

/// Term frequencies of every candidate and of every reference set.
fn count_all<'a>(
    interner: &mut Interner<'a>,
    candidates: &'a [String],
    references: &'a [Vec<String>],
) -> (Vec<Counts>, Vec<Vec<Counts>>) {
    let mut cand_counts = Vec::with_capacity(candidates.len());
    let mut ref_counts = Vec::with_capacity(references.len());
    for (c, refs) in candidates.iter().zip(references) {
        cand_counts.push(interner.count(c));
        ref_counts.push(refs.iter().map(|r| interner.count(r)).collect::<Vec<_>>());
    }
    (cand_counts, ref_counts)
}

/// Per-candidate CIDEr-D given each n-gram's weight `idf`.
fn score_with_idf(cand_counts: &[Counts], ref_counts: &[Vec<Counts>], idf: &[f64]) -> Scores {
    let per_image: Vec<f64> = cand_counts
        .iter()
        .zip(ref_counts)
        .map(|(c, refs)| {
            let hyp = vectorize(c, idf);
            let mut score = [0.0; N];
            for r in refs {
                let s = sim(&hyp, &vectorize(r, idf));
                for n in 0..N {
                    score[n] += s[n];
                }
            }
            let mut avg = numpy_mean(&score);
            avg /= refs.len() as f64;
            avg * 10.0
        })
        .collect();
    Scores {
        corpus: numpy_mean(&per_image),
        per_image,
    }
}

/// CIDEr-D of tokenized candidates against their tokenized references,
/// paired with `zip` (see [`crate::bleu::bleu`]).
pub fn cider_d(candidates: &[String], references: &[Vec<String>]) -> Scores {
    let mut interner = Interner::default();
    let (cand_counts, ref_counts) = count_all(&mut interner, candidates, references);
    // Document frequency: in how many images' reference sets an n-gram occurs.
    let n_grams = interner.parts.len();
    let mut df = vec![0.0f64; n_grams];
    let mut last_seen = vec![usize::MAX; n_grams];
    for (image, refs) in ref_counts.iter().enumerate() {
        for r in refs {
            for grams in &r.grams {
                for &(g, _) in grams {
                    if last_seen[g as usize] != image {
                        last_seen[g as usize] = image;
                        df[g as usize] += 1.0;
                    }
                }
            }
        }
    }
    // Weight per n-gram: ln N - ln max(1, df), as the toolkit computes it.
    let ref_len = (ref_counts.len() as f64).ln();
    let idf: Vec<f64> = df.iter().map(|&d| ref_len - d.max(1.0).ln()).collect();
    score_with_idf(&cand_counts, &ref_counts, &idf)
}

/// CIDEr-D with the document frequencies of a fixed `corpus` (the toolkit's
/// `CiderD` with a precomputed `df`, as SCST uses it): each candidate's score
/// depends only on its own references and the corpus, not on the other
/// candidates scored with it.
pub fn cider_d_with_df(
    candidates: &[String],
    references: &[Vec<String>],
    corpus: &impl DocumentFrequencies,
) -> Scores {
    let mut interner = Interner::default();
    let (cand_counts, ref_counts) = count_all(&mut interner, candidates, references);
    let mut word_of = vec![""; interner.words.len()];
    for (w, &id) in &interner.words {
        word_of[id as usize] = w;
    }
    let ref_len = (corpus.documents() as f64).ln();
    let mut idf = vec![0.0f64; interner.parts.len()];
    let (mut ids, mut words) = (Vec::with_capacity(N), Vec::with_capacity(N));
    for (id, w) in idf.iter_mut().enumerate() {
        interner.gram_words(id as u32, &mut ids);
        words.clear();
        words.extend(ids.iter().map(|&i| word_of[i as usize]));
        let df = corpus.frequency(&words) as f64;
        *w = ref_len - df.max(1.0).ln();
    }
    score_with_idf(&cand_counts, &ref_counts, &idf)
}
