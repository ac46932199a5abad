//! Training: the captioner's [`Policy`] (captioner, frozen backbone, caption
//! text), its objectives ([`TrainObjective`]: XE, DiCO, SCST, offline DiCO), the
//! trainer that steps them ([`captioning::CaptionTrainer`]), the contrastive
//! evaluator loss, AdamW with checkpointable state, learning-rate schedules,
//! gradient accumulation and fp16 loss scaling, and the training stages of
//! the dataflow ([`stages`]).
pub(crate) mod adamw;
pub(crate) mod candidates;
pub mod captioning;
pub(crate) mod checkpoint;
pub mod contrastive;
pub(crate) mod dico;
pub(crate) mod error;
pub mod evaluator;
pub mod fluency;
pub mod hard_negatives;
pub mod image_tower;
pub(crate) mod loss_scale;
pub(crate) mod objective;
pub mod offline_dico;
pub(crate) mod policy;
pub mod precision;
pub mod resumable;
pub(crate) mod schedule;
pub mod scst;
pub mod stages;
pub mod step;
pub mod validation;
pub(crate) mod xe;

pub use adamw::{AdamW, AdamWConfig};
pub use candidates::{Candidates, Decoding};
pub use checkpoint::{BestBy, BestSoFar, Checkpointer, TrainState};
pub use dico::{dico_loss, DicoConfig, DicoOutput, DicoStats};
pub use error::TrainError;
pub use loss_scale::{LossScaleConfig, LossScaleState, LossScaler};
pub use objective::{
    DicoObjective, MicroBatch, Objective, ObjectiveInputs, ObjectiveSettings, OfflineDicoObjective,
    ScstObjective, StepStats, TrainObjective, XeObjective,
};
pub use policy::Policy;
pub use precision::Precision;
pub use schedule::{Decay, Schedule};
pub use step::{StepConfig, Stepper, Update};
pub use xe::xe_loss;
