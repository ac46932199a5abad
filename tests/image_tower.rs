//! `pretrain_image_tower` in a pipeline: it trains on a synthetic world's
//! rows with labels from their keys, writes a whole CLIP that
//! `train_evaluator`'s `init` loads (strictly) with its `clip_config.json`,
//! logs one loss per step, and refuses what it cannot honour: data of
//! another world than `world` (the same keys, other scenes), a `world`
//! without a stored world spec, and several devices.

use std::path::Path;

use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::flow::{run, FlowError, Pipeline, RunOptions};
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::train::image_tower::ImageTowerConfig;
use dicoflow::train::stages::{registry, ImageTowerStageSettings, CLIP_CONFIG_FILE, WEIGHTS_FILE};
use dicoflow::train::{AdamWConfig, Schedule};
use tch::Device;

/// Runs take turns (libtorch's thread pool is shared).
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const IMAGES: usize = 24;

fn world(root: &Path, name: &str, seed: u64) -> std::path::PathBuf {
    let spec = WorldSpec {
        seed,
        train: IMAGES,
        val: 1,
        test: 1,
        rows_per_shard: IMAGES,
        rows_per_row_group: 8,
        ..Default::default()
    };
    let dir = root.join(name);
    write_world(&dir, &spec, false, |_| {}).unwrap();
    dir.join("train")
}

/// 2 epochs of the 24 images in batches of 8: 6 steps.
fn pipeline(data: &Path, world: &Path, out: &Path, devices: usize) -> Pipeline {
    let clip = ClipConfig::tiny();
    let text = format!(
        "[source]\npath = {data:?}\nepochs = 2\n\n[flow]\nbatch_size = 8\ndevices = {devices}\n\n\
         [[cpu]]\ntype = \"preprocess\"\n[cpu.settings]\nsize = {}\n\n\
         [[device]]\ntype = \"pretrain_image_tower\"\n",
        clip.vision.image_size
    );
    let mut p = Pipeline::from_toml(&text, Path::new("image_tower.toml")).unwrap();
    let settings = ImageTowerStageSettings {
        train: ImageTowerConfig {
            clip,
            optimizer: AdamWConfig {
                lr: 1e-3,
                ..Default::default()
            },
            schedule: Schedule {
                lr: 1e-3,
                ..Default::default()
            },
            grad_clip: Some(1.0),
            seed: 5,
        },
        world: world.to_path_buf(),
        out: out.to_path_buf(),
        device: Default::default(),
    };
    p.device[0].settings = toml::Table::try_from(&settings).unwrap();
    p
}

fn train(p: &Pipeline, out: &Path, workers: usize) -> Result<(), FlowError> {
    let mut opts = RunOptions::threads(workers);
    opts.run_dir = Some(out.to_path_buf());
    run(p, &registry(), &opts).map(|_| ())
}

#[test]
fn it_writes_a_whole_clip_that_loads_strictly_and_logs_every_step() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let data = world(root.path(), "a", 0);
    let out = root.path().join("tower");
    train(&pipeline(&data, &data, &out, 1), &out, 1).unwrap();

    let config = ClipConfig::from_json_file(out.join(CLIP_CONFIG_FILE)).unwrap();
    assert_eq!(config, ClipConfig::tiny());
    Clip::from_safetensors(out.join(WEIGHTS_FILE), &config, Device::Cpu)
        .expect("a whole CLIP, no head, loadable as `init`");

    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["metrics"]["image_tower/loss"].as_f64()
        })
        .collect();
    assert_eq!(losses.len(), 6, "{log}");
    assert!(losses[5] < losses[0], "{losses:?}");
}

#[test]
fn rows_of_another_world_are_refused_not_labelled() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let data = world(root.path(), "a", 0);
    let other = world(root.path(), "b", 1);
    let out = root.path().join("tower");
    let err = train(&pipeline(&data, &other, &out, 1), &out, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other captions") && err.contains("point `world`"),
        "{err}"
    );
    assert!(!out.join(WEIGHTS_FILE).exists());
}

#[test]
fn a_world_without_its_spec_and_several_devices_are_refused() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let data = world(root.path(), "a", 0);
    let out = root.path().join("tower");
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = train(&pipeline(&data, &empty, &out, 1), &out, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no synthetic world's shards"), "{err}");

    let err = train(&pipeline(&data, &data, &out, 2), &out, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("runs on one device"), "{err}");
}
