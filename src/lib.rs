//! dicoflow: train image captioners with DiCO (Direct CLIP-based Optimization)
//! over sharded Parquet datasets, as a timely dataflow.
//!
//! Modules follow the data path: [`data`] (shards → samples), [`image`]
//! (decode + CLIP preprocessing), [`text`] (CLIP BPE tokenizer), [`model`]
//! (CLIP in tch, weight loading).
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

pub use error::{Error, Result};
