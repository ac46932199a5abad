//! `pretrain_image_tower`: a CLIP image tower trained to predict the
//! synthetic world's scene labels ([`scene_labels`]: which colour, shape and
//! size sits in which cell of a 3×3 grid) as a device stage. Each row's labels
//! come from its key and the world spec stored in the shards of `world`; the
//! row's captions are checked against the world's, so data of another world
//! is refused, never labelled wrongly. It writes a whole CLIP (the text tower
//! as initialised) and its `clip_config.json`, for `train_evaluator`'s `init`
//! with `train.lock_image` (docs/training.md).
//!
//! It runs on one device and keeps no checkpoint: a stopped run starts over.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::data::synth::{scene_labels, SCENE_LABELS};
use crate::data::world::{scene_and_captions_of_key, stored_spec, WorldSpec};
use crate::device::DeviceName;
use crate::flow::allreduce::take_replica_link;
use crate::flow::{DeviceBatch, DeviceStage, FlowError, StageFailure};
use crate::train::error::TrainError;
use crate::train::image_tower::{ImageTowerConfig, ImageTowerTrainer};
use crate::train::stages::setup::{
    build_failed, create_out_dir, default_device, device_of, resolve_total_steps,
    write_clip_config, WEIGHTS_FILE,
};
use crate::train::stages::tensors::batch_tensors;

const STAGE: &str = "pretrain_image_tower";

/// Settings of `pretrain_image_tower`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTowerStageSettings {
    /// The CLIP, optimizer, schedule, clipping and seed.
    pub train: ImageTowerConfig,
    /// A folder of the synthetic world's shards (e.g. its `train` split, as
    /// `dicoflow synth` or `dicoflow demo` writes them): the world spec
    /// stored in their metadata gives each row's scene from its key.
    pub world: PathBuf,
    /// Directory for the weights (`model.safetensors`) and `clip_config.json`.
    pub out: PathBuf,
    /// `cpu` (default), `cuda`, `cuda:K` or `auto` ([`DeviceName`]).
    #[serde(default = "default_device")]
    pub device: DeviceName,
}

/// Supervised pre-training of the image tower as a device stage.
pub struct ImageTowerStage {
    trainer: ImageTowerTrainer,
    spec: WorldSpec,
    settings: ImageTowerStageSettings,
}

impl ImageTowerStage {
    /// Builds the stage: refuses several devices, reads the world spec of
    /// `world` and initialises the trainer.
    ///
    /// # Errors
    /// [`FlowError::StageSetup`] when `flow.devices > 1` or `world` holds no
    /// synthetic world's shards; [`FlowError::Config`] when `total_steps`
    /// does not fit the epochs; a build error when the CLIP config is
    /// invalid or the device is unavailable.
    pub fn try_new(mut settings: ImageTowerStageSettings) -> Result<Self, FlowError> {
        let refuse = |message: String| FlowError::StageSetup {
            stage: STAGE.into(),
            message,
        };
        if take_replica_link(STAGE)?.is_some() {
            return Err(refuse(
                "runs on one device: set `flow.devices = 1` (it trains in a few minutes on a \
                 CPU)"
                    .into(),
            ));
        }
        let device = device_of(STAGE, settings.device, None)?;
        resolve_total_steps(STAGE, &mut settings.train.schedule, 1)?;
        let spec = match stored_spec(&settings.world) {
            Ok(Some(spec)) => spec,
            Ok(None) => {
                return Err(refuse(format!(
                    "`world` = {}: no synthetic world's shards there (the labels come from the \
                     world spec that `dicoflow synth` and `dicoflow demo` store in each shard); \
                     point it at the folder of the world being trained on",
                    settings.world.display()
                )))
            }
            Err(e) => {
                return Err(refuse(format!(
                    "`world`: {e}; point it at the folder of the synthetic world's shards being \
                     trained on (e.g. runs/demo/data/train)"
                )))
            }
        };
        let trainer = ImageTowerTrainer::new(settings.train.clone(), SCENE_LABELS, device)
            .map_err(build_failed::<TrainError>(STAGE))?;
        Ok(Self {
            trainer,
            spec,
            settings,
        })
    }

    /// `[n, SCENE_LABELS]` targets of the batch's rows, from their keys.
    fn labels(&self, batch: &DeviceBatch) -> Result<Tensor, StageFailure> {
        let mut flat = Vec::with_capacity(batch.samples.len() * SCENE_LABELS);
        let world = self.settings.world.display();
        for sample in &batch.samples {
            let Some((scene, captions)) = scene_and_captions_of_key(&self.spec, &sample.key) else {
                return Err(StageFailure::fatal("a row is not of the world in `world`")
                    .with_detail(format!(
                        "key {:?} names no row of the world stored in {world}; point `world` \
                         at the folder of the data being trained on",
                        sample.key
                    )));
            };
            if captions != sample.captions {
                return Err(StageFailure::fatal("a row is not of the world in `world`")
                    .with_detail(format!(
                        "row {:?} has other captions than that row of the world stored in \
                         {world}, so its scene is not known; point `world` at the folder of \
                         the data being trained on",
                        sample.key
                    )));
            }
            flat.extend(scene_labels(&scene));
        }
        Tensor::f_from_slice(&flat)
            .and_then(|t| t.f_view([batch.samples.len() as i64, SCENE_LABELS as i64]))
            .map_err(|e| StageFailure::fatal("labels not made").with_detail(e))
    }
}

impl DeviceStage for ImageTowerStage {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        if batch.samples.is_empty() || self.done() {
            return Ok(()); // batches past the schedule pass
        }
        let labels = self.labels(batch)?;
        let (pixels, _, _) = batch_tensors(batch)?;
        let s = self
            .trainer
            .step(&pixels, &labels)
            .map_err(|e| StageFailure::fatal("image tower step failed").with_detail(e))?;
        for (k, v) in [
            ("image_tower/loss", s.loss),
            ("image_tower/recall", s.recall),
            ("image_tower/precision", s.precision),
            ("image_tower/grad_norm", s.grad_norm),
            ("image_tower/lr", s.lr),
        ] {
            batch.metrics.insert(k.into(), v);
        }
        Ok(())
    }

    /// Done once the schedule's `total_steps` are taken: the sources stop.
    fn done(&self) -> bool {
        self.trainer.step_count() >= self.settings.train.schedule.total_steps
    }

    fn finish(&mut self) -> Result<(), StageFailure> {
        let out = &self.settings.out;
        create_out_dir(out)?;
        self.trainer
            .save_clip(&out.join(WEIGHTS_FILE))
            .map_err(|e| StageFailure::new("weights not written").with_detail(e))?;
        write_clip_config(out, &self.settings.train.clip)
    }
}
