//! Rewards and evaluation scores: CLIP-S, PAC-S and their reference-based
//! variants; CIDEr-D as SCST's reward and its document frequencies
//! ([`cider_df`], a differential computation over streamed shards);
//! [`Reward`], the choice a trainer uses; the Parquet reward cache and the
//! antijoin that finds what it is missing ([`cache_join`]).

pub mod cache;
pub mod cache_join;
pub mod cache_run;
pub(crate) mod choice;
pub(crate) mod cider_d;
pub mod cider_df;
pub mod clip_score;
pub(crate) mod error;

pub use cache::{CacheEntry, CacheProvenance, PartWriter, RewardCache};
pub use choice::{Reward, RewardSettings};
pub use cider_d::{CiderDReward, CiderDSettings};
pub use clip_score::{ClipScorer, RefScores, ScoreConfig};
pub use error::RewardError;
