//! Hard negative captions in contrastive training: the loss equals NegCLIP's as
//! PyTorch computes it (tests/fixtures/negclip/make_negclip.py), and the
//! evaluator trainer puts the swapped captions into its loss.
mod common;

use dicoflow::model::clip::ClipConfig;
use dicoflow::train::contrastive::clip_contrastive_loss_with_negatives;
use dicoflow::train::evaluator::{ContrastiveConfig, ContrastiveTrainer};
use dicoflow::train::hard_negatives::HardNegativesConfig;
use dicoflow::train::{AdamWConfig, Precision, Schedule};
use tch::{Device, Kind, Tensor};

fn matrix(v: &serde_json::Value, dim: i64) -> Tensor {
    let rows: Vec<f32> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    Tensor::from_slice(&rows).view([-1, dim])
}

#[test]
fn loss_and_accuracy_equal_negclip_in_pytorch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/negclip/negclip.json"
    );
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for (k, case) in cases.iter().enumerate() {
        let dim = case["dim"].as_i64().unwrap();
        let image = matrix(&case["image"], dim);
        let text = matrix(&case["text"], dim);
        let negatives = matrix(&case["negatives"], dim);
        let scale = Tensor::from(case["logit_scale"].as_f64().unwrap() as f32);
        let (loss, acc) =
            clip_contrastive_loss_with_negatives(&image, &text, Some(&negatives), &scale).unwrap();
        let want = case["loss"].as_f64().unwrap();
        let got = loss.double_value(&[]);
        assert!(
            (got - want).abs() < 1e-5 * want.abs().max(1.0),
            "case {k}: {got} vs {want}"
        );
        assert_eq!(acc, case["accuracy"].as_f64().unwrap(), "case {k}");
        if negatives.size()[0] == 0 {
            // No negatives is CLIP's loss, bit for bit.
            let (plain, _) =
                clip_contrastive_loss_with_negatives(&image, &text, None, &scale).unwrap();
            assert_eq!(plain.double_value(&[]), got, "case {k}");
        }
    }
    let bad = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    let ok = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
    let err = clip_contrastive_loss_with_negatives(&ok, &ok, Some(&bad), &Tensor::from(0f32))
        .unwrap_err();
    assert!(err.to_string().contains("[m, 4]"), "{err}");
}

fn world_batch(seed: u64, n: usize) -> (Tensor, Vec<Vec<String>>) {
    let w = common::train::pixel_world(n, seed);
    (w.pixels, w.refs)
}

fn trainer(hard_negatives: Option<HardNegativesConfig>) -> ContrastiveTrainer {
    let mut clip = ClipConfig::tiny();
    clip.text.context_length = 32;
    let cfg = ContrastiveConfig {
        clip,
        optimizer: AdamWConfig::default(),
        schedule: Schedule {
            lr: 1e-3,
            total_steps: 10,
            ..Default::default()
        },
        context_length: 32,
        grad_clip: Some(1.0),
        seed: 1,
        accumulate: 1,
        precision: Precision::Fp32,
        hard_negatives,
        lock_image: false,
    };
    ContrastiveTrainer::new(cfg, Device::Cpu).unwrap()
}

#[test]
fn the_trainer_adds_swapped_captions_to_the_image_to_text_side() {
    let (px, caps) = world_batch(5, 8);
    let swap = common::train::world_swap_classes();
    let hn = HardNegativesConfig {
        per_caption: 3,
        swap,
    };
    let plain = trainer(None).step(&px, &caps).unwrap();
    let with = trainer(Some(hn.clone())).step(&px, &caps).unwrap();
    // Same initial weights and the same drawn captions (negatives come from
    // their own generator): extra columns in the image→text softmax can only
    // raise that cross-entropy.
    assert!(with.loss > plain.loss, "{} vs {}", with.loss, plain.loss);
    // Deterministic: a second trainer with the same settings gives the same step.
    let again = trainer(Some(hn.clone())).step(&px, &caps).unwrap();
    assert_eq!(again.loss, with.loss);
    // Settings that cannot make a negative are refused when the trainer is built.
    let mut clip = ClipConfig::tiny();
    clip.text.context_length = 32;
    let bad = HardNegativesConfig {
        per_caption: 0,
        ..hn
    };
    let err = ContrastiveTrainer::new(
        ContrastiveConfig {
            clip,
            optimizer: AdamWConfig::default(),
            schedule: Schedule::default(),
            context_length: 32,
            grad_clip: None,
            seed: 1,
            accumulate: 1,
            precision: Precision::Fp32,
            hard_negatives: Some(bad),
            lock_image: false,
        },
        Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("per_caption"), "{err}");
}
