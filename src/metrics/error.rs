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
    /// METEOR was asked for but the evaluator has no METEOR data loaded
    /// (see [`Evaluator::with_meteor`](super::Evaluator::with_meteor)).
    #[error("METEOR was requested but its data is not loaded; load it with Meteor::load (`dicoflow eval --meteor-data DIR`; `make meteor-data` fills .meteor/)")]
    MeteorNotLoaded,
    /// METEOR failed.
    #[error(transparent)]
    Meteor(#[from] super::meteor::MeteorError),
}
