//! Errors of objectives, optimizers and checkpoints.

use std::path::PathBuf;

/// Errors of the training code.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Inputs of an objective have inconsistent shapes.
    #[error("{what}: {detail}")]
    Shape { what: &'static str, detail: String },
    /// A setting is out of range.
    #[error("invalid setting `{name}` = {value}: {reason}")]
    Setting {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A validation setting cannot be honoured (names the setting).
    #[error("invalid setting `{setting}`: {what}")]
    Validation { setting: &'static str, what: String },
    /// A checkpoint or state file could not be read or written.
    #[error("{path}: {what}")]
    State { path: PathBuf, what: String },
    /// The gradient all-reduce between replicas could not complete
    /// ([`crate::train::step::GradientReduce`]).
    #[error("gradient all-reduce: {0}")]
    AllReduce(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The starting weights (`init`; for DiCO also the frozen reference)
    /// could not be loaded.
    #[error(
        "the starting weights `init`: {source}; point `init` at the model.safetensors that \
         a captioner training stage wrote"
    )]
    Init {
        path: PathBuf,
        #[source]
        source: Box<TrainError>,
    },
    /// A model could not be built or run (boxed: `ModelError` is large next
    /// to the other variants; `?` converts, see the `From` impl below).
    #[error(transparent)]
    Model(Box<crate::model::ModelError>),
    /// Rewards could not be computed (boxed, converted by `?` like `Model`).
    #[error(transparent)]
    Reward(Box<crate::reward::RewardError>),
    /// The captioner's token ids do not fit its caption text.
    #[error(transparent)]
    Text(#[from] crate::model::captioner::TextMismatch),
    /// Captions could not be tokenised.
    #[error(transparent)]
    Tokenizer(#[from] crate::text::TokenizerError),
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl From<crate::model::ModelError> for TrainError {
    fn from(e: crate::model::ModelError) -> Self {
        TrainError::Model(Box::new(e))
    }
}

impl From<crate::reward::RewardError> for TrainError {
    fn from(e: crate::reward::RewardError) -> Self {
        TrainError::Reward(Box::new(e))
    }
}
