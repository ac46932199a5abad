//! The diagnostics' sanity check: DiCO and SCST at learning rate 0 reproduce the XE
//! model exactly. After several steps (candidates, rewards, losses and gradients all
//! computed, weight decay set) every weight is bit-identical to the XE checkpoint and
//! the captions equal the XE model's, so any difference a fine-tuned row shows in the
//! demo comes from the updates, not from loading, decoding or the step machinery.

use dicoflow::data::synth::{reference_captions, render, sample_scene, WorldConfig};
use dicoflow::image::{PreprocessConfig, Preprocessor};
use dicoflow::model::captioner::{Backbone, CaptionerConfig, TokenSpec, Vocab};
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::reward::{ClipScorer, ScoreConfig};
use dicoflow::rng::Rng;
use dicoflow::text::ClipTokenizer;
use dicoflow::train::captioning::{CaptionTrainConfig, CaptionTrainer, Objective};
use dicoflow::train::{AdamWConfig, DicoConfig, Precision, Schedule};
use tch::nn::VarStore;
use tch::{Device, Tensor};

struct World {
    keys: Vec<String>,
    pixels: Tensor,
    refs: Vec<Vec<String>>,
}

fn world(n: usize) -> World {
    let cfg = WorldConfig::default();
    let mut pre = Preprocessor::new(PreprocessConfig {
        size: 32,
        ..Default::default()
    });
    let (mut px, mut refs, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let mut rng = Rng::derive(11, &[i as u64]);
        let scene = sample_scene(&mut rng, &cfg);
        let hwc = pre.resize_crop(&render(&scene, &cfg)).unwrap();
        let mut chw = Vec::new();
        pre.normalize_into(&hwc, &mut chw);
        px.extend(chw);
        refs.push(reference_captions(&scene, &mut rng, 5));
        keys.push(format!("img{i}"));
    }
    World {
        keys,
        pixels: Tensor::from_slice(&px).view([n as i64, 3, 32, 32]),
        refs,
    }
}

fn trainer(
    objective: Objective,
    vocab: &Vocab,
    clip_file: &std::path::Path,
    init: Option<&std::path::Path>,
    lr: f64,
) -> CaptionTrainer {
    let clip_cfg = ClipConfig::tiny();
    let backbone = Backbone::from_clip_safetensors(clip_file, &clip_cfg, Device::Cpu).unwrap();
    let scorer = (objective != Objective::Xe).then(|| {
        let (_vs, clip) = Clip::from_safetensors(clip_file, &clip_cfg, Device::Cpu).unwrap();
        ClipScorer::new(
            clip,
            ClipTokenizer::openai().unwrap(),
            ScoreConfig::dico_reward(),
        )
    });
    let cap = CaptionerConfig {
        tokens: TokenSpec::words(vocab.len() as i64),
        feature_dim: clip_cfg.vision.width,
        ..CaptionerConfig::tiny_words(vocab.len() as i64)
    };
    let cfg = CaptionTrainConfig {
        objective,
        optimizer: AdamWConfig {
            lr,
            // Decoupled weight decay is scaled by the learning rate: none at lr 0.
            weight_decay: 0.01,
            ..Default::default()
        },
        schedule: Schedule {
            lr,
            total_steps: 100,
            ..Default::default()
        },
        grad_clip: Some(1.0),
        dico: DicoConfig::default(),
        candidates: 3,
        temperature: 1.0,
        seed: 1,
        accumulate: 1,
        label_smoothing: 0.0,
        precision: Precision::Fp32,
    };
    CaptionTrainer::new(
        &cap,
        vocab.clone(),
        backbone,
        init,
        scorer.map(Into::into),
        cfg,
        Device::Cpu,
    )
    .unwrap()
}

fn weights(path: &std::path::Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(path).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn dico_and_scst_at_lr_zero_reproduce_the_xe_model_exactly() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let _clip = Clip::new(vs.root(), &ClipConfig::tiny()).unwrap();
    let clip_file = dir.path().join("clip.safetensors");
    vs.save(&clip_file).unwrap();

    let w = world(8);
    let all: Vec<String> = w.refs.iter().flatten().cloned().collect();
    let vocab = Vocab::build(&all, 1, None);
    let mut xe = trainer(Objective::Xe, &vocab, &clip_file, None, 3e-3);
    for _ in 0..3 {
        xe.step(&w.keys, &w.pixels, &w.refs).unwrap();
    }
    let xe_file = dir.path().join("xe.safetensors");
    xe.save_weights(&xe_file).unwrap();
    let xe_captions = xe.caption(&w.pixels).unwrap();
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
        t.save_weights(&file).unwrap();
        let after = weights(&file);
        assert_eq!(after.len(), xe_weights.len());
        for ((name, a), (name_xe, b)) in after.iter().zip(&xe_weights) {
            assert_eq!(name, name_xe);
            assert!(a.equal(b), "{objective:?}: `{name}` changed at lr 0");
        }
        assert_eq!(t.caption(&w.pixels).unwrap(), xe_captions, "{objective:?}");
    }

    // The check can fail: a non-zero learning rate moves the weights.
    let mut moved = trainer(Objective::Dico, &vocab, &clip_file, Some(&xe_file), 1e-2);
    moved
        .step(&w.keys[..4], &w.pixels.narrow(0, 0, 4), &w.refs[..4])
        .unwrap();
    let file = dir.path().join("moved.safetensors");
    moved.save_weights(&file).unwrap();
    assert!(weights(&file)
        .iter()
        .zip(&xe_weights)
        .any(|((_, a), (_, b))| !a.equal(b)));
}
