//! dicoflow's own stages.
//!
//! - `preprocess` (CPU): decode, resize, crop, normalise ([`Preprocessor`]);
//!   undecodable images are rejected with the decoder's reason.
//! - `image_stats` (device): per-batch channel mean/std of the pixels with tch
//!   on the device, plus a running mean over the run.
//! - `delay` (device): a calibrated busy or sleeping stage that stands in for a
//!   model of known cost (benchmarks, flow-control tests).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::batch::Sample;
use super::error::FlowError;
use super::registry::Registry;
use super::stage::{CpuStage, DeviceBatch, DeviceStage, StageFailure};
use crate::device::DeviceName;
use crate::image::{PreprocessConfig, Preprocessor};

impl Registry {
    /// A registry with dicoflow's own stages: CPU `preprocess`; device
    /// `image_stats` and `delay`.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        register(&mut r);
        r
    }
}

/// Register the built-in stages.
pub fn register(r: &mut Registry) {
    r.register_cpu("preprocess", |cfg: PreprocessConfig| {
        Ok(Box::new(PreprocessStage::new(cfg)) as Box<dyn CpuStage>)
    });
    r.register_device("image_stats", |cfg: ImageStatsConfig| {
        Ok(Box::new(ImageStats::try_new(&cfg)?) as Box<dyn DeviceStage>)
    });
    r.declare_device_setting("image_stats");
    r.register_device("delay", |cfg: DelayConfig| {
        Ok(Box::new(Delay(cfg)) as Box<dyn DeviceStage>)
    });
}

/// The CPU preprocessing stage.
#[derive(Debug)]
pub struct PreprocessStage {
    pre: Preprocessor,
}

impl PreprocessStage {
    pub fn new(cfg: PreprocessConfig) -> Self {
        Self {
            pre: Preprocessor::new(cfg),
        }
    }
}

/// The counted label of a sample `preprocess` rejects: the source's label for
/// the same reason ([`crate::data::SkipReason::label`]), as a static string.
fn preprocess_label(reason: &crate::data::SkipReason) -> &'static str {
    use crate::data::SkipReason;
    match reason {
        SkipReason::Decode(_) => "image decode failed",
        SkipReason::Resize(_) => "image resize failed",
        SkipReason::ZeroSize => "zero-size image",
        SkipReason::TooLarge { .. } => "image too large",
        SkipReason::EmptyImage => "empty image bytes",
        _ => "preprocess failed",
    }
}

impl CpuStage for PreprocessStage {
    fn process(&mut self, sample: &mut Sample) -> Result<(), StageFailure> {
        let pixels = self
            .pre
            .process(&sample.image)
            .map_err(|reason| StageFailure::new(preprocess_label(&reason)).with_detail(reason))?;
        sample.pixels = pixels;
        sample.size = self.pre.config().size;
        // The encoded bytes are no longer needed: free them before the exchange.
        sample.image = Vec::new();
        Ok(())
    }
}

/// Settings of `image_stats`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageStatsConfig {
    /// Device the tensors live on: `cpu` (default), `cuda`, `cuda:K` or `auto`.
    pub device: DeviceName,
}

/// Per-batch image statistics computed with tch on the device thread.
#[derive(Debug)]
pub struct ImageStats {
    device: Device,
    /// Sum of per-channel means over batches, weighted by batch size: `[3]`.
    sum: Tensor,
    seen: i64,
}

impl ImageStats {
    pub fn try_new(cfg: &ImageStatsConfig) -> Result<Self, FlowError> {
        let device = cfg.device.resolve().map_err(|source| FlowError::Device {
            setting: "stage `image_stats`: device".into(),
            source,
        })?;
        let sum =
            Tensor::f_zeros([3], (Kind::Double, device)).map_err(|e| FlowError::StageSetup {
                stage: "image_stats".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            device,
            sum,
            seen: 0,
        })
    }

    fn stats(&mut self, batch: &mut DeviceBatch) -> Result<(), tch::TchError> {
        let n = batch.samples.len() as i64;
        let size = batch.samples[0].size as i64;
        let mut flat = Vec::with_capacity((n * 3 * size * size) as usize);
        for s in &batch.samples {
            flat.extend_from_slice(&s.pixels);
        }
        // [n, 3, size, size]
        let x = Tensor::f_from_slice(&flat)?
            .f_view([n, 3, size, size])?
            .f_to_device(self.device)?;
        let mean = x.f_mean_dim([0i64, 2, 3].as_slice(), false, Kind::Double)?; // [3]
        let std = x.f_std_dim([0i64, 2, 3].as_slice(), true, false)?; // [3]
        self.sum = self.sum.f_add(&mean.f_mul_scalar(n as f64)?)?;
        self.seen += n;
        let running = self.sum.f_div_scalar(self.seen as f64)?;
        for (c, ch) in ["r", "g", "b"].iter().enumerate() {
            let c = c as i64;
            batch
                .metrics
                .insert(format!("pixel_mean_{ch}"), mean.f_double_value(&[c])?);
            batch
                .metrics
                .insert(format!("pixel_std_{ch}"), std.f_double_value(&[c])?);
            batch
                .metrics
                .insert(format!("running_mean_{ch}"), running.f_double_value(&[c])?);
        }
        Ok(())
    }
}

impl DeviceStage for ImageStats {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        let Some(first) = batch.samples.first() else {
            return Ok(());
        };
        let plane = first.size as usize * first.size as usize * 3;
        if plane == 0
            || batch
                .samples
                .iter()
                .any(|s| s.pixels.len() != plane || s.size != first.size)
        {
            return Err(StageFailure::new(
                "images not preprocessed to one size (add a `preprocess` stage)",
            ));
        }
        self.stats(batch)
            .map_err(|e| StageFailure::new("tensor error").with_detail(e))
    }
}

/// Settings of `delay`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DelayConfig {
    /// Fixed cost per batch, milliseconds.
    pub ms_per_batch: f64,
    /// Cost per sample, milliseconds.
    pub ms_per_sample: f64,
    /// Spin (hold a core, like a busy GPU driver thread) rather than sleep.
    pub spin: bool,
}

/// A stage of known cost.
#[derive(Debug)]
pub struct Delay(pub DelayConfig);

impl DeviceStage for Delay {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        let ms = self.0.ms_per_batch + self.0.ms_per_sample * batch.samples.len() as f64;
        let cost = Duration::from_secs_f64(ms.max(0.0) / 1e3);
        if self.0.spin {
            let start = Instant::now();
            while start.elapsed() < cost {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(cost);
        }
        batch.metrics.insert("delay_ms".into(), ms);
        Ok(())
    }
}
