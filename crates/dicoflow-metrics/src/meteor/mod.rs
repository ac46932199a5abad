//! METEOR 1.5 as the COCO caption toolkit computes it, without Java.
//!
//! pycocoevalcap's `Meteor` wrapper runs `java -jar meteor-1.5.jar - - -stdio
//! -l en -norm`, sends one `SCORE ||| ref1 ||| … ||| hypothesis` line per image
//! (the hypothesis with `|||` removed and double spaces halved), reads back the
//! 23 sufficient statistics of the best-scoring reference, then sends all of
//! them on one `EVAL` line: the jar answers each image's score from its own
//! statistics and the corpus score from their sum. [`Meteor`] reproduces
//! every step: the line is built and split as the wrapper and the jar do
//! ([`java`]), both sides normalized ([`normalize`]), each reference aligned
//! with the hypothesis ([`matchers`], [`align`]) and scored ([`score`]).
//!
//! METEOR needs data the toolkit ships (paraphrase table, WordNet synsets,
//! function words, non-breaking prefixes); [`Meteor::load`] reads them from a
//! directory that `make meteor-data` fills from the pycocoevalcap wheel.
//!
//! Source: METEOR 1.5 (Denkowski & Lavie, "Meteor Universal", WMT 2014),
//! github.com/cmu-mtlab/meteor, and the jar pycocoevalcap 1.2 ships.

mod align;
mod java;
mod matchers;
mod normalize;
mod paraphrase;
pub mod score;
mod synonym;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rust_stemmers::{Algorithm, Stemmer};

pub use score::MeteorStats;

use self::align::Resources;
use self::matchers::{Sentence, WordCache};
use self::normalize::Normalizer;
use self::paraphrase::ParaphraseTable;
use self::synonym::SynonymDictionary;

/// Environment variable naming the METEOR data directory when
/// `--meteor-data` is not given.
pub const DATA_DIR_ENV: &str = "DICOFLOW_METEOR_DATA";
/// Data directory used when neither `--meteor-data` nor [`DATA_DIR_ENV`] is
/// set: `.meteor` in the current directory (where `make meteor-data` puts it).
pub const DEFAULT_DATA_DIR: &str = ".meteor";

/// Files [`Meteor::load`] reads from the data directory.
pub const DATA_FILES: [&str; 5] = [
    "paraphrase-en.gz",
    "english.synsets",
    "english.exceptions",
    "english.words",
    "english.prefixes",
];

/// How to obtain the data, for error messages.
const HOW_TO_GET: &str = "run `make meteor-data` in the dicoflow source tree (it extracts \
METEOR 1.5's English data from the pycocoevalcap 1.2 wheel on PyPI into .meteor/), then pass \
--meteor-data DIR (or set DICOFLOW_METEOR_DATA) if the directory is not ./.meteor";

/// Errors of loading METEOR's data or scoring with it.
#[derive(Debug, thiserror::Error)]
pub enum MeteorError {
    /// A data file is missing.
    #[error("METEOR data not found: {path} does not exist; {HOW_TO_GET}")]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// A data file could not be read.
    #[error("cannot read METEOR data {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A data file does not have METEOR's format.
    #[error("{path}:{line}: not a METEOR data file: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// A caption holds a line break, which the toolkit's line protocol with
    /// the jar cannot carry (it would desynchronise); tokenize first.
    #[error(
        "METEOR input holds a line break (the toolkit's line protocol cannot carry it): {text:?}"
    )]
    LineBreak {
        /// The offending caption.
        text: String,
    },
}

impl MeteorError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            MeteorError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            MeteorError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// What one scoring thread keeps from one image to the next.
#[derive(Default)]
struct ThreadState {
    words: WordCache,
    buffers: align::Buffers,
}

/// The data directory to use: `explicit`, else `$DICOFLOW_METEOR_DATA`, else
/// [`DEFAULT_DATA_DIR`].
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os(DATA_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
    }
}

/// METEOR 1.5 `-l en -norm` with its data loaded. Immutable and `Sync`:
/// share one across threads.
#[derive(Debug)]
pub struct Meteor {
    normalizer: Normalizer,
    resources: Resources,
}

fn read_text(path: &Path) -> Result<String, MeteorError> {
    std::fs::read_to_string(path).map_err(|e| MeteorError::io(path, e))
}

impl Meteor {
    /// Loads the data in `dir` ([`DATA_FILES`]). The paraphrase table is read
    /// through a binary cache that is written beside it on first use
    /// (`paraphrase-en.gz.cache`). Errors: [`MeteorError::Missing`] (with how
    /// to get the data), [`MeteorError::Io`], [`MeteorError::Malformed`].
    pub fn load(dir: &Path) -> Result<Self, MeteorError> {
        for f in DATA_FILES {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(MeteorError::Missing { path: p });
            }
        }
        let exc_path = dir.join("english.exceptions");
        let syn_path = dir.join("english.synsets");
        let synonyms = SynonymDictionary::parse(&read_text(&exc_path)?, &read_text(&syn_path)?)
            .map_err(|(line, message)| MeteorError::Malformed {
                path: syn_path,
                line,
                message,
            })?;
        let function_words: HashSet<String> = read_text(&dir.join("english.words"))?
            .lines()
            .map(str::to_string)
            .collect();
        let prefixes = normalize::parse_prefixes(&read_text(&dir.join("english.prefixes"))?);
        let paraphrases = ParaphraseTable::load(&dir.join("paraphrase-en.gz"))?;
        Ok(Meteor {
            normalizer: Normalizer::new(prefixes),
            resources: Resources {
                stemmer: Stemmer::create(Algorithm::English),
                synonyms,
                paraphrases,
                function_words,
            },
        })
    }

    /// The statistics the jar returns for pycocoevalcap's `SCORE` line of
    /// `hypothesis` against `references`: those of the reference with the
    /// highest score (the first one on ties). Inputs are what the toolkit
    /// sends, i.e. PTB-tokenized captions in `COCOEvalCap`; they are
    /// normalized and lowercased here as `-norm` does.
    /// Error: [`MeteorError::LineBreak`].
    pub fn stats(
        &self,
        hypothesis: &str,
        references: &[String],
    ) -> Result<MeteorStats, MeteorError> {
        self.stats_cached(hypothesis, references, &mut ThreadState::default())
    }

    fn stats_cached(
        &self,
        hypothesis: &str,
        references: &[String],
        state: &mut ThreadState,
    ) -> Result<MeteorStats, MeteorError> {
        if let Some(t) = std::iter::once(hypothesis)
            .chain(references.iter().map(String::as_str))
            .find(|t| t.contains(['\n', '\r']))
        {
            return Err(MeteorError::LineBreak {
                text: t.to_string(),
            });
        }
        // The wrapper's `_stat`.
        let hyp = hypothesis.replace("|||", "").replace("  ", " ");
        let line = format!("SCORE ||| {} ||| {hyp}", references.join(" ||| "));
        // The jar's `scoreStdio`.
        let parts = java::split_triple_bar(&line);
        let (test, refs) = match parts.split_last() {
            Some((test, [_, refs @ ..])) if !refs.is_empty() => (java::trim(test), refs),
            // Unreachable from a line built as above; the jar would answer
            // an error line here.
            _ => ("", &[][..]),
        };
        let s1 = self.sentence(test, &mut state.words);
        let mut best: Option<(f64, MeteorStats)> = None;
        for r in refs {
            let s2 = self.sentence(java::trim(r), &mut state.words);
            let counts = align::align(&s1, &s2, &self.resources, &mut state.buffers);
            let stats = MeteorStats::from_counts(&counts);
            let score = stats.score();
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, stats));
            }
        }
        Ok(best.map(|(_, s)| s).unwrap_or_default())
    }

    fn sentence(&self, text: &str, cache: &mut WordCache) -> Sentence {
        let norm = self.normalizer.normalize(text);
        Sentence::new(java::tokens(&norm), &self.resources, cache)
    }

    /// pycocoevalcap's `Meteor().compute_score`: per-image scores (in input
    /// order) and the corpus score from the summed statistics.
    /// `references[i]` belongs to `candidates[i]`. Images are scored on all
    /// available cores. Error: [`MeteorError::LineBreak`].
    pub fn score_corpus(
        &self,
        candidates: &[String],
        references: &[Vec<String>],
    ) -> Result<(f64, Vec<f64>), MeteorError> {
        let n = candidates.len().min(references.len());
        let threads = std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .clamp(1, n.max(1));
        let chunk = n.div_ceil(threads).max(1);
        let stats: Vec<MeteorStats> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .step_by(chunk)
                .map(|lo| {
                    let hi = (lo + chunk).min(n);
                    scope.spawn(move || {
                        let mut state = ThreadState::default();
                        (lo..hi)
                            .map(|i| self.stats_cached(&candidates[i], &references[i], &mut state))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            crate::scoped::join_all(handles)
                .into_iter()
                .collect::<Result<Vec<Vec<_>>, _>>()
                .map(|v| v.into_iter().flatten().collect())
        })?;
        let mut total = MeteorStats::default();
        for s in &stats {
            total.add(s);
        }
        Ok((
            total.score(),
            stats.iter().map(MeteorStats::score).collect(),
        ))
    }
}
