//! Errors of caption evaluation.

use std::path::PathBuf;

use super::coco::ImageId;

/// Everything that can go wrong loading COCO files or evaluating captions.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not UTF-8 (the toolkit's `json.load` fails on it too, with
    /// `UnicodeDecodeError` at the same byte position).
    #[error("{path}: not UTF-8: invalid byte at position {position} (the COCO toolkit refuses it too); re-encode the file as UTF-8")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 0-based byte offset of the first invalid byte.
        position: usize,
    },
    /// A caption holds a line break other than `\n` (`\r`, U+2028, U+2029,
    /// VT, FF, NEL). The toolkit replaces only `\n` by a space before its Java
    /// PTB tokenizer, which reads the others as line breaks: it scores every
    /// later caption against the wrong image, without error. There is no
    /// toolkit value to reproduce, so such files are refused.
    #[error("the {role} caption of image id {id} contains a line break ({character}): the COCO toolkit's PTB tokenizer would split it into two lines and score every later caption against the wrong image; replace it with a space")]
    LineBreakInCaption {
        /// The image.
        id: ImageId,
        /// `result` or `reference`.
        role: &'static str,
        /// The character, named (`U+000D (carriage return)`).
        character: String,
    },
    /// A file is not valid JSON or does not have the expected shape.
    #[error("{path}:{line}:{column}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What was wrong.
        message: String,
    },
    /// The results file holds no entries (the toolkit fails on it too).
    #[error("{path}: the results list is empty")]
    EmptyResults {
        /// The file.
        path: PathBuf,
    },
    /// A result names an image the annotations do not know (the toolkit
    /// rejects such files: "Results do not correspond to current coco set").
    #[error("result for unknown image id {id}")]
    UnknownImage {
        /// The unknown id.
        id: ImageId,
    },
    /// Two results for one image. The toolkit keeps both and then fails its
    /// one-caption-per-image check, so this is an error here as well.
    #[error("more than one result for image id {id}")]
    DuplicateResult {
        /// The image with several results.
        id: ImageId,
    },
    /// An evaluated image has no reference captions.
    #[error("image id {id} has no reference captions")]
    NoReferences {
        /// The image without references.
        id: ImageId,
    },
    /// There is nothing to evaluate.
    #[error("no images to evaluate")]
    NoImages,
    /// Candidate and reference lists of different lengths were given.
    #[error("{candidates} candidates but {references} reference lists")]
    LengthMismatch {
        /// Number of candidates.
        candidates: usize,
        /// Number of reference lists.
        references: usize,
    },
    /// A metric name that is not known.
    #[error("unknown metric {0:?} (known: bleu, meteor, rouge, cider)")]
    UnknownMetric(String),
    /// SPICE was asked for: it is not offered (docs/metrics.md says why).
    #[error("SPICE is not offered: the toolkit's SPICE runs a Java scene-graph parser with Stanford CoreNLP 3.6.0 models that it downloads from nlp.stanford.edu at first use, which dicoflow neither reimplements nor runs; run pycocoevalcap's Spice for it, and drop `spice` from --metrics")]
    SpiceNotOffered,
    /// METEOR was asked for but the evaluator has no METEOR data loaded
    /// (see [`Evaluator::with_meteor`](super::Evaluator::with_meteor)).
    #[error("METEOR was requested but its data is not loaded; load it with Meteor::load (`dicoflow eval --meteor-data DIR`; `make meteor-data` fills .meteor/)")]
    MeteorNotLoaded,
    /// METEOR failed.
    #[error(transparent)]
    Meteor(#[from] super::meteor::MeteorError),
}
