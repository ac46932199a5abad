//! Rewards and evaluation scores: CLIP-S, PAC-S and their reference-based variants.

pub mod clip_score;
pub mod error;

pub use clip_score::{ClipScorer, RefScores, ScoreConfig};
pub use error::RewardError;
