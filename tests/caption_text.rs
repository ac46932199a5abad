//! The captioner's text with CLIP BPE: targets are the reference tokenizer's ids
//! (fixture made by the Python `SimpleTokenizer`), truncation keeps EOS last,
//! decoding round-trips, a tiny BPE captioner learns with XE, a captioner whose
//! token ids do not fit its text is refused with a message naming both, and the
//! shipped COCO pipelines carry the paper's settings.

mod common;
use std::path::Path;

use dicoflow::flow::Pipeline;
use dicoflow::model::captioner::{Backbone, CaptionText, CaptionerConfig, TokenSpec, Vocab};
use dicoflow::model::clip::ClipConfig;
use dicoflow::reward::RewardSettings;
use dicoflow::train::captioning::{CaptionTrainConfig, CaptionTrainer, Objective};
use dicoflow::train::precision::Precision;
use dicoflow::train::stages::CaptionerStageSettings;
use dicoflow::train::{AdamWConfig, Decay, DicoConfig, Schedule, TrainError};
use tch::{Device, Tensor};

const SOT: i64 = 49406;
const EOT: i64 = 49407;
const PAD: i64 = 49408;

/// `(text, reference ids without SOT/EOT, reference row of context 8, decoded)`.
fn reference_cases() -> Vec<(String, Vec<i64>, Vec<i64>, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip/tokenizer_cases.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_owned(),
                ids(&c["ids"]),
                ids(&c["tokens8"]),
                c["decoded"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn bpe() -> CaptionText {
    CaptionText::clip_bpe().unwrap()
}

#[test]
fn bpe_token_spec_is_the_papers() {
    let t = bpe().tokens();
    assert_eq!(t, TokenSpec::clip());
    assert_eq!((t.vocab_size, t.pad, t.bos, t.eos), (49409, PAD, SOT, EOT));
    assert_eq!(CaptionerConfig::paper().tokens, t);
}

#[test]
fn bpe_targets_are_the_reference_ids_then_eos() {
    let text = bpe();
    let cases = reference_cases();
    let mut checked = 0;
    for (caption, ids, _, _) in &cases {
        if ids.contains(&SOT) || ids.contains(&EOT) || ids.len() + 1 > 30 {
            continue;
        }
        let mut expected = ids.clone();
        expected.push(EOT);
        assert_eq!(text.encode_target(caption, 30), expected, "{caption:?}");
        checked += 1;
    }
    assert!(
        checked >= 20,
        "only {checked} reference cases fit 30 tokens"
    );
}

#[test]
fn bpe_targets_are_cut_with_eos_last() {
    let text = bpe();
    let cases = reference_cases();
    let mut long = 0;
    for (caption, ids, tokens8, _) in &cases {
        if ids.contains(&SOT) || ids.contains(&EOT) {
            continue;
        }
        // The reference's context-8 row is SOT + the first ids + EOT: the target cut to
        // 7 is that row after SOT.
        let cut = text.encode_target(caption, 7);
        let row_body: Vec<i64> = tokens8[1..]
            .iter()
            .copied()
            .take_while(|&id| id != 0)
            .collect();
        assert_eq!(cut, row_body, "{caption:?}");
        if ids.len() >= 30 {
            let target = text.encode_target(caption, 30);
            assert_eq!(target.len(), 30);
            assert_eq!(target[..29], ids[..29]);
            assert_eq!(target[29], EOT);
            long += 1;
        }
    }
    assert!(long >= 1, "no reference case longer than 30 tokens");
}

#[test]
fn decoding_targets_gives_the_caption_back() {
    let text = bpe();
    for caption in [
        "a man riding a wave on top of a surfboard",
        "two dogs playing with a frisbee in the park",
        "a plate of food with broccoli and rice",
    ] {
        let target = text.encode_target(caption, 30);
        assert_eq!(text.decode(&target), caption);
        // What generation returns: BOS first, EOS, then pad.
        let mut generated = vec![SOT];
        generated.extend(&target);
        generated.extend([PAD, PAD]);
        assert_eq!(text.decode(&generated), caption);
    }
    // Cleaning and splitting are the tokenizer's: the reference's decoded text.
    for (caption, ids, _, decoded) in reference_cases() {
        if ids.contains(&SOT) || ids.contains(&EOT) || ids.len() + 1 > 30 {
            continue;
        }
        assert_eq!(
            text.decode(&text.encode_target(&caption, 30)),
            decoded.trim(),
            "{caption:?}"
        );
    }
}

fn xe_config(lr: f64) -> CaptionTrainConfig {
    CaptionTrainConfig {
        objective: Objective::Xe,
        optimizer: AdamWConfig {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        },
        schedule: Schedule {
            lr,
            warmup_fraction: 0.0,
            total_steps: 100,
            decay: Decay::Constant,
        },
        grad_clip: Some(1.0),
        dico: DicoConfig::default(),
        candidates: 2,
        temperature: 1.0,
        seed: 4,
        accumulate: 1,
        label_smoothing: 0.0,
        precision: Precision::Fp32,
    }
}

#[test]
fn tiny_bpe_captioner_learns_with_xe() {
    let clip = ClipConfig::tiny();
    let backbone = Backbone::new(&clip, Device::Cpu).unwrap();
    // CLIP BPE + pad, d 64, one encoder and one decoder layer.
    let cfg = CaptionerConfig::tiny();
    let mut trainer = CaptionTrainer::new(
        &cfg,
        bpe(),
        backbone,
        None,
        None,
        xe_config(3e-3),
        Device::Cpu,
    )
    .unwrap();
    let pixels = common::with_tch_seed(11, || {
        Tensor::randn([4, 3, 32, 32], (tch::Kind::Float, Device::Cpu))
    });
    let keys: Vec<String> = (0..4).map(|i| format!("img{i}")).collect();
    let refs: Vec<Vec<String>> = [
        "a red bus parked next to a building",
        "a cat sleeping on a wooden bench",
        "two people walking along the beach",
        "a bowl of oranges on a kitchen table",
    ]
    .iter()
    .map(|c| vec![(*c).to_owned()])
    .collect();
    let first = trainer.step(&keys, &pixels, &refs).unwrap().loss;
    // A uniform guess over 49 409 ids costs ln 49409 ≈ 10.8 nats per token.
    assert!(
        (first - 49409f64.ln()).abs() < 1.5,
        "first loss {first} far from a uniform guess"
    );
    let mut last = first;
    for _ in 0..14 {
        last = trainer.step(&keys, &pixels, &refs).unwrap().loss;
    }
    assert!(last < 0.6 * first, "XE loss {first} -> {last}");
    // Captions come back as text of the CLIP vocabulary.
    let captions = trainer.policy.caption(&pixels).unwrap();
    assert_eq!(captions.len(), 4);
}

#[test]
fn captioner_tokens_that_do_not_fit_the_text_are_refused() {
    let clip = ClipConfig::tiny();
    // A word-vocabulary captioner with the BPE text.
    let words = CaptionerConfig {
        feature_dim: clip.vision.width,
        ..CaptionerConfig::tiny_words(120)
    };
    let backbone = Backbone::new(&clip, Device::Cpu).unwrap();
    let err = CaptionTrainer::new(
        &words,
        bpe(),
        backbone,
        None,
        None,
        xe_config(1e-3),
        Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Text(_)), "{err:?}");
    let msg = err.to_string();
    for part in [
        "vocab_size 120",
        "CLIP BPE",
        "vocab_size 49409",
        "pad 49408",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }

    // The BPE captioner with a word vocabulary.
    let vocab = Vocab::build(&["a red circle", "a blue square"], 1, None);
    let backbone = Backbone::new(&clip, Device::Cpu).unwrap();
    let msg = CaptionTrainer::new(
        &CaptionerConfig::tiny(),
        vocab.clone(),
        backbone,
        None,
        None,
        xe_config(1e-3),
        Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    let words_desc = format!("word vocabulary of {} ids", vocab.len());
    for part in ["vocab_size 49409", words_desc.as_str()] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
}

fn coco_settings(name: &str) -> (Pipeline, CaptionerStageSettings) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name);
    let p = Pipeline::load(&path).unwrap();
    assert_eq!(p.device.len(), 1);
    assert_eq!(p.device[0].type_name, "train_captioner");
    let s: CaptionerStageSettings = toml::Value::Table(p.device[0].settings.clone())
        .try_into()
        .unwrap();
    (p, s)
}

#[test]
fn coco_pipelines_carry_the_papers_settings() {
    let (xe_p, xe) = coco_settings("coco_xe.toml");
    let (dico_p, dico) = coco_settings("coco_dico.toml");
    for s in [&xe, &dico] {
        assert_eq!(s.captioner, CaptionerConfig::paper());
        assert_eq!(s.vocab, None, "COCO pipelines use CLIP BPE");
        assert_eq!(s.backbone_config, ClipConfig::vit_l_14());
    }
    assert_eq!(xe_p.cpu[0].settings["size"].as_integer(), Some(224));
    assert_eq!(xe.train.objective, Objective::Xe);
    assert_eq!(xe.train.schedule.lr, 2.5e-4);
    assert_eq!(xe.train.optimizer.lr, 2.5e-4);
    assert_eq!(xe.train.schedule.warmup_fraction, 0.05);

    assert_eq!(dico.train.objective, Objective::Dico);
    assert_eq!(dico.evaluator_config, Some(ClipConfig::vit_b_32()));
    let Some(RewardSettings::Clip(reward)) = dico.reward.as_ref() else {
        panic!("coco_dico's reward is a CLIP score: {:?}", dico.reward);
    };
    assert_eq!((reward.weight, reward.prefix.as_deref()), (2.0, None));
    assert!(!reward.clip_negative);
    assert_eq!(dico.train.candidates, 5);
    assert_eq!((dico.train.dico.tau, dico.train.dico.beta), (300.0, 0.2));
    assert_eq!(dico.train.schedule.lr, 1e-6);
    assert_eq!(dico.train.optimizer.lr, 1e-6);
    assert_eq!(dico.train.schedule.decay, Decay::Constant);
    assert_eq!(dico.train.schedule.warmup_fraction, 0.0);
    assert_eq!(dico_p.flow.batch_size, 8);
    assert_eq!(dico.init, Some(xe.out.join("model.safetensors")));
}

#[test]
fn configs_by_unknown_preset_name_say_what_exists() {
    let table: toml::Table = toml::from_str(r#"backbone_config = "ViT-H-99""#).unwrap();
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct S {
        backbone_config: ClipConfig,
    }
    let err = toml::Value::Table(table).try_into::<S>().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ViT-H-99") && msg.contains("ViT-L-14"),
        "{msg}"
    );
}
