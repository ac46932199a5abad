//! The diagnostics' sanity check: DiCO and SCST at learning rate 0 reproduce the XE
//! model exactly. After several steps (candidates, rewards, losses and gradients all
//! computed, weight decay set) every weight is bit-identical to the XE checkpoint and
//! the captions equal the XE model's, so any difference a fine-tuned row shows in the
//! demo comes from the updates, not from loading, decoding or the step machinery.

mod common;

use common::clip::save_tiny_clip;
use common::train::{pixel_world, tiny_trainer};
use dicoflow::model::captioner::Vocab;
use dicoflow::train::captioning::{CaptionTrainer, Objective};
use tch::Tensor;

/// Decoupled weight decay is scaled by the learning rate: none at lr 0.
fn trainer(
    objective: Objective,
    vocab: &Vocab,
    clip_file: &std::path::Path,
    init: Option<&std::path::Path>,
    lr: f64,
) -> CaptionTrainer {
    tiny_trainer(objective, vocab, clip_file, init, lr, 0.01)
}

fn weights(path: &std::path::Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(path).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn dico_and_scst_at_lr_zero_reproduce_the_xe_model_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let clip_file = dir.path().join("clip.safetensors");
    save_tiny_clip(&clip_file, 5);

    let w = pixel_world(8, 11);
    let all: Vec<String> = w.refs.iter().flatten().cloned().collect();
    let vocab = Vocab::build(&all, 1, None);
    let mut xe = trainer(Objective::Xe, &vocab, &clip_file, None, 3e-3);
    for _ in 0..3 {
        xe.step(&w.keys, &w.pixels, &w.refs).unwrap();
    }
    let xe_file = dir.path().join("xe.safetensors");
    xe.policy.save_weights(&xe_file).unwrap();
    let xe_captions = xe.policy.caption(&w.pixels).unwrap();
    let xe_weights = weights(&xe_file);
    assert!(!xe_weights.is_empty());

    for objective in [Objective::Dico, Objective::Scst] {
        let mut t = trainer(objective, &vocab, &clip_file, Some(&xe_file), 0.0);
        for step in 0..2 {
            let lo = (step * 4) % 8;
            let s = t
                .step(
                    &w.keys[lo..lo + 4],
                    &w.pixels.narrow(0, lo as i64, 4),
                    &w.refs[lo..lo + 4],
                )
                .unwrap();
            assert!(s.loss.is_finite(), "{objective:?} step {step}");
            assert_eq!(s.lr, 0.0);
        }
        let file = dir.path().join(format!("{objective:?}.safetensors"));
        t.policy.save_weights(&file).unwrap();
        let after = weights(&file);
        assert_eq!(after.len(), xe_weights.len());
        for ((name, a), (name_xe, b)) in after.iter().zip(&xe_weights) {
            assert_eq!(name, name_xe);
            assert!(a.equal(b), "{objective:?}: `{name}` changed at lr 0");
        }
        assert_eq!(
            t.policy.caption(&w.pixels).unwrap(),
            xe_captions,
            "{objective:?}"
        );
    }

    // The check can fail: a non-zero learning rate moves the weights.
    let mut moved = trainer(Objective::Dico, &vocab, &clip_file, Some(&xe_file), 1e-2);
    moved
        .step(&w.keys[..4], &w.pixels.narrow(0, 0, 4), &w.refs[..4])
        .unwrap();
    let file = dir.path().join("moved.safetensors");
    moved.policy.save_weights(&file).unwrap();
    assert!(weights(&file)
        .iter()
        .zip(&xe_weights)
        .any(|((_, a), (_, b))| !a.equal(b)));
}
