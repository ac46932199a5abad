//! Captioner training on tiny models: XE learns, DiCO starts at log 2 (policy
//! = reference) and moves the policy, SCST runs; all on the synthetic world.
mod common;

use common::clip::tiny_clip_file;
use common::train::{pixel_world, tiny_trainer, try_tiny_trainer};

use dicoflow::model::captioner::{Backbone, CaptionerConfig, Vocab};
use dicoflow::model::clip::ClipConfig;
use dicoflow::train::captioning::{CaptionTrainConfig, CaptionTrainer, Objective};
use dicoflow::train::{AdamWConfig, DicoConfig, Precision, Schedule};
use tch::Device;

fn trainer(
    objective: Objective,
    vocab: &Vocab,
    init: Option<&std::path::Path>,
    lr: f64,
) -> CaptionTrainer {
    tiny_trainer(objective, vocab, &tiny_clip_file(), init, lr, 0.0)
}

#[test]
fn xe_then_dico_and_scst() {
    let w = pixel_world(16, 7);
    let all: Vec<String> = w.refs.iter().flatten().cloned().collect();
    let vocab = Vocab::build(&all, 1, None);

    // XE: the loss on a fixed batch falls.
    let mut xe = trainer(Objective::Xe, &vocab, None, 3e-3);
    let first = xe.step(&w.keys, &w.pixels, &w.refs).unwrap().loss;
    let mut last = first;
    for _ in 0..40 {
        last = xe.step(&w.keys, &w.pixels, &w.refs).unwrap().loss;
    }
    assert!(last < 0.6 * first, "XE loss {first} -> {last}");
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("xe.safetensors");
    xe.policy.save_weights(&weights).unwrap();
    let captions = xe.policy.caption(&w.pixels).unwrap();
    assert_eq!(captions.len(), 16);
    assert!(captions.iter().all(|c| !c.is_empty()));

    // DiCO: policy = reference at the start, so the first loss is log 2.
    let mut dico = trainer(Objective::Dico, &vocab, Some(&weights), 1e-3);
    let (k4, p4, r4) = (&w.keys[..4], w.pixels.narrow(0, 0, 4), &w.refs[..4]);
    let s = dico.step(k4, &p4, r4).unwrap();
    assert!(
        (s.loss - std::f64::consts::LN_2).abs() < 1e-4,
        "first DiCO loss {}",
        s.loss
    );
    assert!(s.extra["evaluator/max"] >= s.extra["evaluator/mean"]);
    assert!(s.candidate_length > 0.0 && s.eos_share > 0.0);
    let s2 = dico.step(k4, &p4, r4).unwrap();
    assert!(
        s2.extra["kl"].abs() > 0.0,
        "the policy moved away from the reference"
    );

    // DiCO without the XE checkpoint is refused with a reason.
    let clip_cfg = ClipConfig::tiny();
    let backbone =
        Backbone::from_clip_safetensors(tiny_clip_file(), &clip_cfg, Device::Cpu).unwrap();
    let cfg = CaptionTrainConfig {
        objective: Objective::Dico,
        optimizer: AdamWConfig::default(),
        schedule: Schedule::default(),
        grad_clip: None,
        dico: DicoConfig::default(),
        candidates: 3,
        temperature: 1.0,
        seed: 0,
        accumulate: 1,
        label_smoothing: 0.0,
        precision: Precision::Fp32,
    };
    let cap = CaptionerConfig {
        feature_dim: clip_cfg.vision.width,
        ..CaptionerConfig::tiny_words(vocab.len() as i64)
    };
    let err = CaptionTrainer::new(&cap, vocab.clone(), backbone, None, None, cfg, Device::Cpu)
        .unwrap_err();
    assert!(
        err.to_string().contains("evaluator") || err.to_string().contains("XE"),
        "{err}"
    );

    // SCST runs and reports its advantage spread.
    let mut scst = trainer(Objective::Scst, &vocab, Some(&weights), 1e-3);
    let s = scst.step(k4, &p4, r4).unwrap();
    assert!(s.loss.is_finite());
    assert!(s.extra.contains_key("advantage/std"));
}

/// Starting weights that are missing, or that are not a captioner's, are
/// refused with a message naming the `init` setting, the file and what is
/// wrong with it (not libtorch's debug text), for XE and for DiCO (whose
/// frozen reference loads the same file).
#[test]
fn starting_weights_that_cannot_be_loaded_are_named() {
    let w = pixel_world(4, 7);
    let all: Vec<String> = w.refs.iter().flatten().cloned().collect();
    let vocab = Vocab::build(&all, 1, None);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let clip = tiny_clip_file();
    for objective in [Objective::Xe, Objective::Dico] {
        for (init, what) in [(&missing, "No such file"), (&clip, "missing key(s)")] {
            let Err(err) = try_tiny_trainer(objective, &vocab, &clip, Some(init), 1e-3, 0.0) else {
                panic!("{objective:?}: {} was loaded", init.display());
            };
            let err = err.to_string();
            assert!(
                err.contains("starting weights `init`")
                    && err.contains(&init.display().to_string())
                    && err.contains(what)
                    && !err.contains("Os {"),
                "{objective:?}: {err}"
            );
        }
    }
}
