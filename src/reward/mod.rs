//! Rewards and evaluation scores: CLIP-S, PAC-S and their reference-based
//! variants, and the Parquet reward cache.

pub mod cache;
pub mod clip_score;
pub mod error;

pub use cache::{CacheEntry, CacheProvenance, PartWriter, RewardCache};
pub use clip_score::{ClipScorer, RefScores, ScoreConfig};
pub use error::RewardError;
