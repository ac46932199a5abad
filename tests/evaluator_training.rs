//! Contrastive training of a tiny CLIP on the synthetic world learns to match
//! images with their captions (held-out retrieval well above chance).
mod common;

use dicoflow::model::clip::ClipConfig;
use dicoflow::train::evaluator::{ContrastiveConfig, ContrastiveTrainer};
use dicoflow::train::{AdamWConfig, Precision, Schedule};
use tch::{Device, Tensor};

fn world_batch(seed: u64, n: usize) -> (Tensor, Vec<Vec<String>>) {
    let w = common::train::pixel_world(n, seed);
    (w.pixels, w.refs)
}

#[test]
fn contrastive_training_learns_image_caption_matching() {
    let mut clip = ClipConfig::tiny();
    clip.text.context_length = 32;
    let cfg = ContrastiveConfig {
        clip,
        optimizer: AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
        schedule: Schedule {
            lr: 1e-3,
            warmup_fraction: 0.05,
            total_steps: 100,
            ..Default::default()
        },
        context_length: 32,
        grad_clip: Some(1.0),
        seed: 1,
        accumulate: 1,
        precision: Precision::Fp32,
        hard_negatives: None,
        lock_image: false,
    };
    let mut trainer = ContrastiveTrainer::new(cfg, Device::Cpu).unwrap();
    let (val_px, val_caps) = world_batch(999, 32);
    let val_first: Vec<String> = val_caps.iter().map(|c| c[0].clone()).collect();
    let before = trainer.retrieval_accuracy(&val_px, &val_first).unwrap();
    let mut last = None;
    for step in 0..100u64 {
        let (px, caps) = world_batch(step % 20, 32);
        last = Some(trainer.step(&px, &caps).unwrap());
    }
    let after = trainer.retrieval_accuracy(&val_px, &val_first).unwrap();
    let last = last.unwrap();
    assert!(last.loss.is_finite());
    // Chance is 1/32; a learned evaluator must do far better on unseen scenes.
    eprintln!("held-out retrieval {before} -> {after}");
    assert!(
        after >= 0.2 && after > before + 0.1,
        "retrieval {before} -> {after}"
    );
}
