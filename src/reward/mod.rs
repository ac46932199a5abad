//! Rewards and evaluation scores: CLIP-S, PAC-S and their reference-based
//! variants; CIDEr-D as SCST's reward; [`Reward`], the choice a trainer uses;
//! the Parquet reward cache.

pub mod cache;
pub mod choice;
pub mod cider_d;
pub mod clip_score;
pub mod error;

pub use cache::{CacheEntry, CacheProvenance, PartWriter, RewardCache};
pub use choice::{Reward, RewardSettings};
pub use cider_d::{CiderDReward, CiderDSettings};
pub use clip_score::{ClipScorer, RefScores, ScoreConfig};
pub use error::RewardError;
