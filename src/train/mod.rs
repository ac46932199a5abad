//! Training objectives and optimisation: DiCO, SCST, the contrastive
//! evaluator loss, AdamW with checkpointable state, learning-rate schedules.
pub mod adamw;
pub mod captioning;
pub mod checkpoint;
pub mod contrastive;
pub mod dico;
pub mod error;
pub mod evaluator;
pub mod resumable;
pub mod schedule;
pub mod scst;
pub mod stages;

pub use adamw::{AdamW, AdamWConfig};
pub use checkpoint::{BestBy, Checkpointer, TrainState};
pub use dico::{dico_loss, DicoConfig, DicoOutput, DicoStats};
pub use error::TrainError;
pub use schedule::{Decay, Schedule};
