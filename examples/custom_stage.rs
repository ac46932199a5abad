//! Adding stages to a pipeline from user code: a CPU stage that drops images
//! whose captions are too short, and a device stage that computes a per-image
//! statistic (mean brightness) with tch on the device thread. Runs end to end
//! on a small synthetic world.
//!
//! ```text
//! cargo run --example custom_stage
//! ```
use std::path::Path;

use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::flow::{
    run, CpuStage, DeviceBatch, DeviceStage, FlowError, Pipeline, Registry, RunOptions, Sample,
    StageFailure,
};
use serde::Deserialize;
use tch::{Kind, Tensor};

/// Settings of `caption_filter`; unknown keys are errors that name the key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptionFilterConfig {
    /// Fewest words the shortest reference caption must have.
    min_words: usize,
}

/// Rejects samples whose shortest caption has fewer than `min_words` words.
struct CaptionFilter(CaptionFilterConfig);

impl CpuStage for CaptionFilter {
    fn process(&mut self, s: &mut Sample) -> Result<(), StageFailure> {
        let shortest = s
            .captions
            .iter()
            .map(|c| c.split_whitespace().count())
            .min();
        match shortest {
            Some(n) if n >= self.0.min_words => Ok(()),
            _ => Err(StageFailure::new("caption too short")),
        }
    }
}

/// Mean brightness per image, then its spread over the batch.
struct Brightness;

impl DeviceStage for Brightness {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        let n = batch.samples.len() as i64;
        if n == 0 {
            return Ok(());
        }
        let flat: Vec<f32> = batch
            .samples
            .iter()
            .flat_map(|s| s.pixels.iter().copied())
            .collect();
        let fail = |e: tch::TchError| StageFailure::new("tensor error").with_detail(e);
        // [n, 3·size·size] → per-image mean [n]
        let x = Tensor::f_from_slice(&flat)
            .map_err(fail)?
            .f_view([n, -1])
            .map_err(fail)?;
        let per_image = x.f_mean_dim(1i64, false, Kind::Double).map_err(fail)?;
        let lo = per_image
            .f_min()
            .map_err(fail)?
            .f_double_value(&[])
            .map_err(fail)?;
        let hi = per_image
            .f_max()
            .map_err(fail)?
            .f_double_value(&[])
            .map_err(fail)?;
        batch.metrics.insert("brightness_min".into(), lo);
        batch.metrics.insert("brightness_max".into(), hi);
        Ok(())
    }
}

const PIPELINE: &str = r#"
[flow]
batch_size = 16

[[cpu]]
type = "caption_filter"
[cpu.settings]
min_words = 6

[[cpu]]
type = "preprocess"
[cpu.settings]
size = 32

[[device]]
type = "brightness"
"#;

fn main() -> Result<(), FlowError> {
    let dir = std::env::temp_dir().join(format!("dicoflow-custom-stage-{}", std::process::id()));
    let spec = WorldSpec {
        train: 200,
        val: 10,
        test: 10,
        ..Default::default()
    };
    write_world(&dir, &spec, true, |_| {})?;

    let mut registry = Registry::with_builtins();
    registry.register_cpu("caption_filter", |cfg: CaptionFilterConfig| {
        Ok(Box::new(CaptionFilter(cfg)) as Box<dyn CpuStage>)
    });
    registry.register_device("brightness", |_: toml::Table| {
        Ok(Box::new(Brightness) as Box<dyn DeviceStage>)
    });

    let mut pipeline = Pipeline::from_toml(PIPELINE, Path::new("custom_stage.toml"))?;
    pipeline.source.path = Some(dir.join("train"));
    let summary = run(
        &pipeline,
        &registry,
        &RunOptions {
            keep_reports: true,
            ..RunOptions::threads(2)
        },
    )?;
    println!("{}", summary.telemetry);
    if let Some(last) = summary.reports.last() {
        println!("last batch: {:?}", last.metrics);
    }
    let kept = summary.telemetry.samples;
    let dropped = summary.telemetry.errors_of("caption_filter");
    println!("kept {kept} images, caption_filter dropped {dropped}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
