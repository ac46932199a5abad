//! Training stages on several devices: a pipeline whose training stage cannot
//! train replicas is refused at start, before any data is read or any
//! output written.
mod common;

use std::path::Path;

use common::clip::save_tiny_clip;
use common::train::{captioner_pipeline, stage_settings, train_config, world_with_vocab};

use dicoflow::data::world::WorldSpec;
use dicoflow::flow::{run, FlowError, RunOptions, StageSpec};
use dicoflow::model::captioner::Vocab;
use dicoflow::train::captioning::Objective;
use dicoflow::train::stages::register;
use dicoflow::train::Schedule;

/// The world's 32 training images, a word vocabulary and a random tiny CLIP
/// (the frozen backbone) under `root`.
fn setup(root: &Path) -> Vocab {
    let spec = WorldSpec {
        train: 32,
        val: 1,
        test: 1,
        rows_per_shard: 32,
        rows_per_row_group: 8,
        ..Default::default()
    };
    let vocab = world_with_vocab(root, &spec, 32);
    save_tiny_clip(&root.join("clip.safetensors"), 1);
    vocab
}

fn registry() -> dicoflow::flow::Registry {
    let mut reg = dicoflow::flow::Registry::with_builtins();
    register(&mut reg);
    reg
}

#[test]
fn training_stage_without_replicas_refuses_two_devices() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let schedule = Schedule {
        lr: 1e-3,
        total_steps: 2,
        ..Default::default()
    };
    let train = train_config(Objective::Scst, schedule, 2, 5);
    let s = stage_settings(root, "out", &vocab, train);
    let mut pipeline = captioner_pipeline(root, &s, vec![]);
    pipeline.flow.devices = 2;
    // The evaluator stage is refused alike.
    let mut evaluator = pipeline.clone();
    evaluator.device = vec![StageSpec::new("train_evaluator")];
    for p in [pipeline, evaluator] {
        let err = run(&p, &registry(), &RunOptions::threads(2)).unwrap_err();
        assert!(
            matches!(
                err,
                FlowError::Config {
                    name: "flow.devices",
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("flow.devices = 1"), "{text}");
        assert!(!root.join("out").exists(), "nothing is written");
    }
}
