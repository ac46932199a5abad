//! Corpus statistics over streamed shards, as a differential computation:
//! n-gram (1..=4) document frequencies of the reference captions, where an
//! image's references together form one document (CIDEr-D's definition).
//! Fed by the shard source, so it runs over datasets larger than memory in
//! batches, and the same code maintains the counts as shards are added.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{OkErr, Operator, Probe};
use timely::dataflow::ProbeHandle;

use crate::data::{ShardIndex, ShardSource, SourceConfig};
use crate::flow::batch::{BatchTime, Sample, StageError};
use crate::flow::error::FlowError;
use crate::flow::run::threads_communication;
use crate::flow::source::{shard_source, SourceBatching};
use crate::flow::state::RunState;
use crate::flow::telemetry::Telemetry;
use crate::metrics::cider::{cider_words, DocumentFrequencies};
use crate::metrics::PtbTokenizer;

/// CIDEr-D's largest n-gram order.
pub const DEFAULT_MAX_N: usize = 4;

/// How captions become words before their n-grams are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenization {
    /// [`words`]: lower-case runs of letters and digits.
    #[default]
    Words,
    /// The COCO toolkit's PTB tokenization, each caption on its own, split as
    /// CIDEr-D splits it: the words [`crate::metrics::cider`] counts.
    Ptb,
}

/// Splits captions by a [`Tokenization`] (holds the compiled PTB lexer).
pub struct CaptionWords {
    ptb: Option<PtbTokenizer>,
}

impl std::fmt::Debug for CaptionWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptionWords")
            .field("ptb", &self.ptb.is_some())
            .finish()
    }
}

impl CaptionWords {
    pub fn new(tokenization: Tokenization) -> Self {
        Self {
            ptb: (tokenization == Tokenization::Ptb).then(PtbTokenizer::new),
        }
    }

    /// The words of `caption`.
    pub fn split(&self, caption: &str) -> Vec<String> {
        match &self.ptb {
            None => words(caption),
            Some(ptb) => cider_words(&ptb.tokenize(caption))
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// Lower-case words: runs of letters and digits. (The COCO evaluation tokenises
/// with PTB rules first; for the captions dicoflow handles, punctuation is noise.)
pub fn words(caption: &str) -> Vec<String> {
    caption
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Every n-gram (n in 1..=max_n) of one caption, with repeats.
pub fn ngrams(caption: &str, max_n: usize) -> Vec<Vec<String>> {
    word_ngrams(&words(caption), max_n)
}

/// Every n-gram (n in 1..=max_n) of a caption's words, with repeats.
pub fn word_ngrams(w: &[String], max_n: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for n in 1..=max_n {
        out.extend(w.windows(n).map(<[String]>::to_vec));
    }
    out
}

/// Document frequencies from differential: `(ngram, images containing it)`.
/// `refs` holds `(image key, reference caption)`; several references of one
/// image count once.
pub fn document_frequency<'scope>(
    refs: VecCollection<'scope, BatchTime, (String, String), isize>,
    max_n: usize,
) -> VecCollection<'scope, BatchTime, (Vec<String>, isize), isize> {
    word_document_frequency(refs.map(|(key, caption)| (key, words(&caption))), max_n)
}

/// [`document_frequency`] of captions already split into words.
pub fn word_document_frequency<'scope>(
    refs: VecCollection<'scope, BatchTime, (String, Vec<String>), isize>,
    max_n: usize,
) -> VecCollection<'scope, BatchTime, (Vec<String>, isize), isize> {
    refs.flat_map(move |(key, words)| {
        word_ngrams(&words, max_n)
            .into_iter()
            .map(move |g| (key.clone(), g))
    })
    .distinct()
    .map(|(_key, g)| g)
    .count()
}

/// Accumulated differential output: `((ngram, count), summed diff)`.
type Accumulated = BTreeMap<(Vec<String>, isize), isize>;

/// The result: queryable document frequencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocFreqs {
    /// Images (documents) seen.
    pub images: u64,
    pub df: BTreeMap<Vec<String>, u64>,
}

impl DocFreqs {
    /// Images whose references contain `ngram` (0 if none).
    pub fn get(&self, ngram: &[&str]) -> u64 {
        let key: Vec<String> = ngram.iter().map(|s| (*s).to_owned()).collect();
        self.df.get(&key).copied().unwrap_or(0)
    }

    /// The same statistics computed directly, without a dataflow (the oracle).
    pub fn direct<'a>(images: impl IntoIterator<Item = &'a [String]>, max_n: usize) -> DocFreqs {
        Self::direct_tokenized(images, max_n, Tokenization::Words)
    }

    /// [`DocFreqs::direct`] with captions split by `tokenization`.
    pub fn direct_tokenized<'a>(
        images: impl IntoIterator<Item = &'a [String]>,
        max_n: usize,
        tokenization: Tokenization,
    ) -> DocFreqs {
        let splitter = CaptionWords::new(tokenization);
        let mut out = DocFreqs::default();
        for captions in images {
            out.images += 1;
            let mut seen = std::collections::BTreeSet::new();
            for c in captions {
                seen.extend(word_ngrams(&splitter.split(c), max_n));
            }
            for g in seen {
                *out.df.entry(g).or_default() += 1;
            }
        }
        out
    }
}

impl DocumentFrequencies for DocFreqs {
    fn documents(&self) -> u64 {
        self.images
    }

    fn frequency(&self, ngram: &[&str]) -> u64 {
        self.get(ngram)
    }
}

/// Stream every row of `index` (on `workers` threads) through the source and
/// compute n-gram document frequencies of the captions.
pub fn corpus_document_frequencies(
    index: Arc<ShardIndex>,
    source: SourceConfig,
    max_n: usize,
    workers: usize,
) -> Result<DocFreqs, FlowError> {
    corpus_document_frequencies_tokenized(index, source, max_n, workers, Tokenization::Words)
}

/// [`corpus_document_frequencies`] with captions split by `tokenization`.
pub fn corpus_document_frequencies_tokenized(
    index: Arc<ShardIndex>,
    source: SourceConfig,
    max_n: usize,
    workers: usize,
    tokenization: Tokenization,
) -> Result<DocFreqs, FlowError> {
    let counts: Arc<Mutex<Accumulated>> = Arc::default();
    let images: Arc<Mutex<BTreeMap<String, isize>>> = Arc::default();
    let state = Arc::new(RunState::default());
    let telemetry = Arc::new(Telemetry::default());
    let config = timely::Config {
        communication: threads_communication(workers),
        worker: timely::WorkerConfig::default(),
    };
    let guards = {
        let (counts, images, state, telemetry) = (
            counts.clone(),
            images.clone(),
            state.clone(),
            telemetry.clone(),
        );
        timely::execute(config, move |worker| {
            let (me, peers) = (worker.index() as u32, worker.peers() as u32);
            let src = ShardSource::new(index.clone(), source.clone(), me, peers)
                .map_err(|e| state.fail(e.into()))
                .ok();
            let probe = ProbeHandle::new();
            let (counts, images) = (counts.clone(), images.clone());
            worker.dataflow::<BatchTime, _, _>(|scope| {
                let settings = SourceBatching {
                    batch_size: 256,
                    max_in_flight: 8,
                };
                let records = shard_source(
                    scope,
                    src,
                    settings,
                    probe.clone(),
                    telemetry.clone(),
                    state.clone(),
                );
                let (samples, _skips) =
                    records.ok_err::<Vec<Sample>, _, Vec<StageError>, _, _>(|r| r);
                let splitter = CaptionWords::new(tokenization);
                let refs = samples
                    .unary::<timely::container::CapacityContainerBuilder<
                        Vec<((String, Vec<String>), BatchTime, isize)>,
                    >, _, _, _>(Pipeline, "CaptionsOf", |_, _| {
                        move |input, output| {
                            input.for_each_stamp(|cap, data| {
                                let Some(&t) = cap.least() else { return };
                                let mut session = output.session(&cap);
                                for batch in data {
                                    for s in batch.drain(..) {
                                        for c in s.captions {
                                            let words = splitter.split(&c);
                                            session.give(((s.key.clone(), words), t, 1isize));
                                        }
                                    }
                                }
                            });
                        }
                    })
                    .as_collection();
                refs.clone()
                    .map(|(key, _)| key)
                    .distinct()
                    .inspect(move |(key, _t, diff)| {
                        *images
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(key.clone())
                            .or_default() += diff;
                    });
                word_document_frequency(refs, max_n)
                    .inspect(move |(entry, _t, diff)| {
                        *counts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(entry.clone())
                            .or_default() += diff;
                    })
                    .inner
                    .probe_with(&probe);
            });
        })
        .map_err(FlowError::Timely)?
    };
    for r in guards.join() {
        r.map_err(|p| FlowError::Timely(format!("a worker panicked: {p}")))?;
    }
    if let Some(e) = state.take_failure() {
        return Err(e);
    }
    let mut out = DocFreqs {
        images: images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|d| **d > 0)
            .count() as u64,
        df: BTreeMap::new(),
    };
    for ((g, n), diff) in counts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if *diff > 0 {
            out.df.insert(g.clone(), *n as u64);
        }
    }
    Ok(out)
}
