//! Errors of reward and evaluation scores.

use std::path::PathBuf;

use crate::model::ModelError;
use crate::text::TokenizerError;

/// Errors of the scorers.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A caption refers to an image that was never added to the scorer.
    #[error("image `{key}` has no cached embedding: add it with `add_images` before scoring")]
    MissingImage { key: String },
    /// Inputs of inconsistent sizes or shapes.
    #[error("bad input to {what}: {reason}")]
    BadInput { what: &'static str, reason: String },
    /// A reward-cache file cannot be read or written.
    #[error("reward cache {}: {what}", path.display())]
    CacheFile { path: PathBuf, what: String },
    /// Cache files made by different models or settings.
    #[error("reward cache {}: {what}", path.display())]
    CacheMismatch { path: PathBuf, what: String },
}
