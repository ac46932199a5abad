//! dicoflow: train image captioners with DiCO (Direct CLIP-based Optimization)
//! over sharded Parquet datasets, as a timely dataflow.
//!
//! Modules follow the data path: [`data`] (shards → samples), [`image`]
//! (decode + CLIP preprocessing), [`flow`] (the dataflow engine and its
//! stages), [`model`] (CLIP and the captioner in tch, weight loading),
//! [`reward`] (CLIP-S / PAC-S, CIDEr-D, the reward cache), [`train`]
//! (objectives, optimizer, checkpoints, the training stages), [`metrics`]
//! (the COCO caption metrics), [`report`] (charts and tables of runs).
//!
//! The types most programs need are re-exported here:
//!
//! - read data: [`ShardIndex`] + [`SourceConfig`] → [`ShardSource`], whose
//!   items are [`RawSample`]s or counted [`SkipRecord`]s;
//! - preprocess images as the official CLIP code does: [`Preprocessor`];
//! - run a pipeline file: [`Pipeline`], a [`Registry`] of stage types
//!   ([`train::stages::registry`]: the built-in and training stages, as
//!   `dicoflow train` uses; [`Registry::with_builtins`]: the built-in ones
//!   only; add your own), [`run()`] with [`RunOptions`];
//! - write a stage: [`CpuStage`] / [`DeviceStage`], failing a sample or a
//!   batch with [`StageFailure`];
//! - score captions: [`ClipScorer`]; caption with a trained [`Policy`]; train
//!   a captioner or an evaluator:
//!   [`train::captioning`], [`train::evaluator`].
//!
//! Each layer has its own error type ([`Error`], [`FlowError`],
//! [`ModelError`], [`RewardError`], [`TrainError`]); docs/architecture.md
//! maps the modules. [`cli`] is the `dicoflow` command's front end, public
//! for that binary and its tests, not a library API.
#[doc(hidden)]
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod flow;
pub mod image;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod report;
pub mod reward;
pub mod rng;
pub mod text;
pub mod train;

pub use data::{RawSample, ShardIndex, ShardSource, SkipRecord, SourceConfig, SourceItem};
pub use device::DeviceName;
pub use error::{Error, Result};
pub use flow::{
    run, CpuStage, DeviceStage, FlowError, Pipeline, Registry, RunOptions, RunSummary, StageFailure,
};
pub use image::{PreprocessConfig, Preprocessor};
pub use model::captioner::{Captioner, CaptionerConfig};
pub use model::clip::{Clip, ClipConfig};
pub use model::ModelError;
pub use reward::{ClipScorer, RewardCache, RewardError};
pub use train::{Policy, TrainError};
