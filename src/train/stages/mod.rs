//! Training and captioning as device stages of the dataflow: each owns its
//! models on the device thread, steps once per batch, reports per-step metrics
//! into the batch (the metrics log), and writes its weights when the run ends.
//!
//! This file is the registry; each stage type lives in its own file with its
//! settings, and the files share only `tensors` (device batch → tensors) and
//! `setup` (device, caption text, scorer, resume). No stage file imports
//! another, and none imports this one.
//!
//! | type | does |
//! |---|---|
//! | `pretrain_image_tower` | a CLIP image tower trained to predict the synthetic world's scene labels ([`crate::train::image_tower::ImageTowerTrainer`]) |
//! | `train_evaluator` | contrastive CLIP training ([`crate::train::evaluator::ContrastiveTrainer`]) |
//! | `train_captioner` | XE / DiCO / SCST ([`crate::train::captioning::CaptionTrainer`]) |
//! | `caption` | greedy captions + evaluator scores, appended to a JSONL file |
//! | `reward_cache` | candidates, rewards, reference log-probs → a reward-cache part ([`RewardCacheStage`]) |

pub(crate) mod caption;
pub mod captioner;
pub(crate) mod evaluator;
pub(crate) mod image_tower;
pub(crate) mod reward_cache;
pub(crate) mod setup;
pub(crate) mod tensors;

use crate::flow::{DeviceStage, Registry};

pub use caption::{CaptionStage, CaptionStageSettings};
pub use captioner::{CaptionerStage, CaptionerStageSettings, CAPTIONER_CONFIG_FILE};
pub use evaluator::{EvaluatorStage, EvaluatorStageSettings};
pub use image_tower::{ImageTowerStage, ImageTowerStageSettings};
pub use reward_cache::{merge_parts_left_open, RewardCacheSettings, RewardCacheStage};
pub use setup::StageBuildError;
pub use setup::{CLIP_CONFIG_FILE, WEIGHTS_FILE};

/// The built-in stages plus the training stages.
pub fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    register(&mut r);
    r
}

/// Register the training stages.
pub fn register(r: &mut Registry) {
    r.register_device("pretrain_image_tower", |s: ImageTowerStageSettings| {
        Ok(Box::new(ImageTowerStage::try_new(s)?) as Box<dyn DeviceStage>)
    });
    r.register_device("train_evaluator", |s: EvaluatorStageSettings| {
        Ok(Box::new(EvaluatorStage::try_new(s)?) as Box<dyn DeviceStage>)
    });
    r.register_device("train_captioner", |s: CaptionerStageSettings| {
        Ok(Box::new(CaptionerStage::try_new(s)?) as Box<dyn DeviceStage>)
    });
    r.register_device("caption", |s: CaptionStageSettings| {
        Ok(Box::new(CaptionStage::try_new(s)?) as Box<dyn DeviceStage>)
    });
    r.register_device("reward_cache", |s: RewardCacheSettings| {
        Ok(Box::new(RewardCacheStage::try_new(s)?) as Box<dyn DeviceStage>)
    });
    r.declare_resumable("train_evaluator");
    r.declare_resumable("train_captioner");
    r.set_resume_reader(crate::train::resumable::read_resume_point);
    for placed in [
        "pretrain_image_tower",
        "train_evaluator",
        "train_captioner",
        "caption",
        "reward_cache",
    ] {
        r.declare_device_setting(placed);
    }
}
