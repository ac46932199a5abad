//! METEOR's sufficient statistics and score (`MeteorStats`,
//! `MeteorScorer.computeMetrics`) with the `-l en` parameters of METEOR 1.5's
//! default task (ranking): α 0.85, β 0.20, γ 0.60, δ 0.75 and module weights
//! exact 1.0, stem 0.6, synonym 0.8, paraphrase 0.6.
//!
//! Every floating-point operation is done in the Java order, so scores are
//! bit-identical given the same statistics.

use super::align::{AlignmentCounts, MODULES};

/// α: weight of recall in the harmonic mean.
pub const ALPHA: f64 = 0.85;
/// β: exponent of the fragmentation.
pub const BETA: f64 = 0.20;
/// γ: maximum fragmentation penalty.
pub const GAMMA: f64 = 0.60;
/// δ: weight of content words against function words.
pub const DELTA: f64 = 0.75;
/// Module weights (exact, stem, synonym, paraphrase).
pub const MODULE_WEIGHTS: [f64; MODULES] = [1.0, 0.6, 0.8, 0.6];

/// The 23 sufficient statistics of one hypothesis against its chosen
/// reference, or summed over a corpus (all word counts, held as `f64` as in
/// Java). Field order is that of the jar's `SCORE` output line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MeteorStats {
    /// Hypothesis length (words).
    pub test_length: f64,
    /// Reference length (words).
    pub reference_length: f64,
    /// Function words in the hypothesis.
    pub test_function_words: f64,
    /// Function words in the reference.
    pub reference_function_words: f64,
    /// Matched hypothesis content words per module.
    pub test_content: [f64; MODULES],
    /// Matched reference content words per module.
    pub reference_content: [f64; MODULES],
    /// Matched hypothesis function words per module.
    pub test_function: [f64; MODULES],
    /// Matched reference function words per module.
    pub reference_function: [f64; MODULES],
    /// Chunks: runs of matches contiguous and in the same order on both sides.
    pub chunks: f64,
    /// All matched hypothesis words.
    pub test_word_matches: f64,
    /// All matched reference words.
    pub reference_word_matches: f64,
}

impl MeteorStats {
    pub(crate) fn from_counts(c: &AlignmentCounts) -> Self {
        let f = |a: [usize; MODULES]| a.map(|x| x as f64);
        let mut s = MeteorStats {
            test_length: c.len1 as f64,
            reference_length: c.len2 as f64,
            test_function_words: c.function1 as f64,
            reference_function_words: c.function2 as f64,
            test_content: f(c.content1),
            reference_content: f(c.content2),
            test_function: f(c.function_matches1),
            reference_function: f(c.function_matches2),
            chunks: c.chunks as f64,
            ..MeteorStats::default()
        };
        for i in 0..MODULES {
            s.test_word_matches += s.test_content[i];
            s.test_word_matches += s.test_function[i];
            s.reference_word_matches += s.reference_content[i];
            s.reference_word_matches += s.reference_function[i];
        }
        s
    }

    /// Total matched words (`testTotalMatches`, `referenceTotalMatches`), as
    /// the jar recomputes them from the module counts.
    fn totals(&self) -> (f64, f64) {
        let (mut t, mut r) = (0.0, 0.0);
        for i in 0..MODULES {
            t += self.test_content[i];
            r += self.reference_content[i];
            t += self.test_function[i];
            r += self.reference_function[i];
        }
        (t, r)
    }

    /// A hypothesis identical to its reference: one chunk covering both.
    fn is_perfect(&self) -> bool {
        let (t, r) = self.totals();
        t == self.test_length && r == self.reference_length && self.chunks == 1.0
    }

    /// `computeMetrics`: the METEOR score in [0, 1] (0 when undefined, e.g.
    /// an empty hypothesis). Fmean = P·R / (α·P + (1−α)·R) written as
    /// 1 / ((1−α)/P + α/R), penalty = γ·(chunks / mean matches)^β (0 for a
    /// perfect match), score = Fmean·(1 − penalty) (Lavie & Denkowski 2009;
    /// Denkowski & Lavie 2014).
    pub fn score(&self) -> f64 {
        let test_weighted_length = (DELTA * (self.test_length - self.test_function_words))
            + ((1.0 - DELTA) * self.test_function_words);
        let reference_weighted_length = (DELTA
            * (self.reference_length - self.reference_function_words))
            + ((1.0 - DELTA) * self.reference_function_words);
        let mut test_weighted = 0.0;
        let mut reference_weighted = 0.0;
        for (i, w) in MODULE_WEIGHTS.iter().enumerate() {
            test_weighted += self.test_content[i] * w * DELTA;
        }
        for (i, w) in MODULE_WEIGHTS.iter().enumerate() {
            reference_weighted += self.reference_content[i] * w * DELTA;
        }
        for (i, w) in MODULE_WEIGHTS.iter().enumerate() {
            test_weighted += self.test_function[i] * w * (1.0 - DELTA);
        }
        for (i, w) in MODULE_WEIGHTS.iter().enumerate() {
            reference_weighted += self.reference_function[i] * w * (1.0 - DELTA);
        }
        let precision = test_weighted / test_weighted_length;
        let recall = reference_weighted / reference_weighted_length;
        let f_mean = 1.0 / (((1.0 - ALPHA) / precision) + (ALPHA / recall));
        let frag = if self.is_perfect() {
            0.0
        } else {
            self.chunks / ((self.test_word_matches + self.reference_word_matches) / 2.0)
        };
        let penalty = GAMMA * frag.powf(BETA);
        let score = f_mean * (1.0 - penalty);
        if score.is_nan() {
            0.0
        } else {
            score.max(0.0)
        }
    }

    /// `addStats`: adds `other` into `self` for a corpus score. Chunks of a
    /// perfect match are not added (the jar's rule).
    pub fn add(&mut self, other: &MeteorStats) {
        self.test_length += other.test_length;
        self.reference_length += other.reference_length;
        self.test_function_words += other.test_function_words;
        self.reference_function_words += other.reference_function_words;
        for i in 0..MODULES {
            self.test_content[i] += other.test_content[i];
            self.reference_content[i] += other.reference_content[i];
            self.test_function[i] += other.test_function[i];
            self.reference_function[i] += other.reference_function[i];
        }
        if !other.is_perfect() {
            self.chunks += other.chunks;
        }
        self.test_word_matches += other.test_word_matches;
        self.reference_word_matches += other.reference_word_matches;
    }

    /// The statistics as the jar prints them after a `SCORE` line (Java's
    /// `Double.toString` of each, space-separated), e.g. `"10.0 11.0 …"`.
    /// Exact for whole numbers below 10⁷ (every per-image line).
    pub fn to_line(&self) -> String {
        let mut v = vec![
            self.test_length,
            self.reference_length,
            self.test_function_words,
            self.reference_function_words,
        ];
        for i in 0..MODULES {
            v.extend([
                self.test_content[i],
                self.reference_content[i],
                self.test_function[i],
                self.reference_function[i],
            ]);
        }
        v.extend([
            self.chunks,
            self.test_word_matches,
            self.reference_word_matches,
        ]);
        v.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
