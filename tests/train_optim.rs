//! Optimisation details of training: label smoothing as PyTorch defines it,
//! gradient accumulation against a from-scratch computation of what it
//! documents, fp16 loss scaling (its logic runs on CPU; autocast itself needs
//! CUDA), and the settings' errors.
mod common;

use std::collections::BTreeMap;

use common::clip::tiny_clip_file;
use common::with_tch_seed;

use dicoflow::model::captioner::{Backbone, CaptionerConfig, TokenSpec, Vocab};
use dicoflow::model::clip::ClipConfig;
use dicoflow::train::captioning::{CaptionTrainConfig, CaptionTrainer, Objective};
use dicoflow::train::resumable::Resumable;
use dicoflow::train::{
    xe_loss, AdamW, AdamWConfig, Checkpointer, DicoConfig, LossScaleConfig, Precision, Schedule,
    StepConfig, Stepper, Update,
};
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

/// Tests take turns: trainings running at once share libtorch's CPU thread
/// pool, which can then split reductions differently, and the comparisons
/// here are at 1e-6.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

// ---------------------------------------------------------------- label smoothing

#[derive(serde::Deserialize)]
struct SmoothingCase {
    label_smoothing: f64,
    loss: f64,
    grad: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct SmoothingFixture {
    shape: Vec<i64>,
    pad: i64,
    logits: Vec<f32>,
    targets: Vec<i64>,
    cases: Vec<SmoothingCase>,
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn label_smoothing_matches_pytorch_cross_entropy() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/xe/label_smoothing.json"
    );
    let fx: SmoothingFixture =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let targets = Tensor::from_slice(&fx.targets).view([fx.shape[0], fx.shape[1]]);
    let mask = targets.ne(fx.pad);
    assert_eq!(fx.cases.len(), 3);
    for case in &fx.cases {
        let logits = Tensor::from_slice(&fx.logits)
            .view(fx.shape.as_slice())
            .set_requires_grad(true);
        let loss = xe_loss(&logits, &targets, &mask, case.label_smoothing).unwrap();
        let got = loss.double_value(&[]);
        assert!(
            (got - case.loss).abs() < 1e-6,
            "ε = {}: loss {got}, PyTorch {}",
            case.label_smoothing,
            case.loss
        );
        loss.backward();
        let want = Tensor::from_slice(&case.grad).view(fx.shape.as_slice());
        let diff = max_abs_diff(&logits.grad(), &want);
        assert!(
            diff < 1e-6,
            "ε = {}: gradient off by {diff}",
            case.label_smoothing
        );
    }
    let logits = Tensor::from_slice(&fx.logits).view(fx.shape.as_slice());
    let err = xe_loss(&logits, &targets, &mask, 1.5).unwrap_err();
    assert!(err.to_string().contains("[0, 1]"), "{err}");
    let err = xe_loss(&logits, &targets.narrow(1, 0, 2), &mask, 0.1).unwrap_err();
    assert!(err.to_string().contains("[rows, L]"), "{err}");
}

// ---------------------------------------------------------------- loss scaling

fn linear(seed: i64) -> (VarStore, nn::Linear) {
    with_tch_seed(seed as u64, || {
        let vs = VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root() / "fc", 3, 2, Default::default());
        (vs, fc)
    })
}

fn stepper(vs: &VarStore, precision: Precision, growth_interval: u64) -> Stepper {
    let cfg = StepConfig {
        accumulate: 1,
        grad_clip: None,
        precision,
        loss_scale: LossScaleConfig {
            init_scale: 1024.0,
            growth_interval,
            ..Default::default()
        },
    };
    Stepper::new(AdamW::new(vs, AdamWConfig::default()), cfg).unwrap()
}

fn weights(vs: &VarStore) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

fn grads(vs: &VarStore) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.grad().copy()))
        .collect()
}

#[test]
fn non_finite_fp16_gradients_skip_the_step_and_halve_the_scale() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (vs, fc) = linear(0);
    let mut st = stepper(&vs, Precision::Fp16, 3);
    assert_eq!(st.loss_scale(), Some(1024.0));
    let before = weights(&vs);
    let poisoned = Tensor::from_slice(&[1.0f32, f32::INFINITY, 2.0]).view([1, 3]);
    let update = st
        .backward(&fc.forward(&poisoned).sum(Kind::Float), 1.0, 1e-2)
        .unwrap();
    assert_eq!(update, Some(Update::Skipped));
    assert_eq!(st.loss_scale(), Some(512.0), "backoff halves the scale");
    assert_eq!(st.opt.step_count(), 0, "AdamW did not step");
    for (name, w) in weights(&vs) {
        assert!(w.equal(&before[&name]), "{name} changed on a skipped step");
    }

    // Clean steps: the scale doubles after `growth_interval` of them in a row.
    let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0]).view([1, 3]);
    for expected in [512.0, 512.0, 1024.0, 1024.0] {
        let update = st
            .backward(&fc.forward(&x).sum(Kind::Float), 1.0, 1e-2)
            .unwrap();
        assert!(matches!(update, Some(Update::Applied { .. })));
        assert_eq!(st.loss_scale(), Some(expected));
    }
    assert_eq!(st.opt.step_count(), 4);
    assert!(!weights(&vs)["fc.weight"].equal(&before["fc.weight"]));
    let state = st.scaler_state().unwrap();
    assert_eq!((state.scale, state.clean_steps), (1024.0, 1));
}

#[test]
fn unscaled_fp16_gradients_and_updates_equal_fp32_ones() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let x = Tensor::from_slice(&[0.3f32, -1.2, 0.7, 2.0, 0.1, -0.4]).view([2, 3]);
    let (vs32, fc32) = linear(7);
    let (vs16, fc16) = linear(7);
    let mut st32 = stepper(&vs32, Precision::Fp32, 2000);
    let mut st16 = stepper(&vs16, Precision::Fp16, 2000);
    assert_eq!(st32.loss_scale(), None);
    for _ in 0..3 {
        let l32 = fc32.forward(&x).square().mean(Kind::Float);
        let l16 = fc16.forward(&x).square().mean(Kind::Float);
        st32.backward(&l32, 2.0, 1e-2).unwrap();
        st16.backward(&l16, 2.0, 1e-2).unwrap();
        let (g32, g16) = (grads(&vs32), grads(&vs16));
        for (name, g) in &g32 {
            let d = max_abs_diff(g, &g16[name]);
            assert!(d <= 1e-6 * g.abs().max().double_value(&[]), "{name}: {d}");
        }
    }
    let (w32, w16) = (weights(&vs32), weights(&vs16));
    for (name, w) in &w32 {
        assert!(max_abs_diff(w, &w16[name]) < 1e-6, "{name}");
    }
}

// ---------------------------------------------------------------- accumulation

fn caption_config(vocab: &Vocab) -> CaptionerConfig {
    CaptionerConfig {
        tokens: TokenSpec::words(vocab.len() as i64),
        feature_dim: ClipConfig::tiny().vision.width,
        ..CaptionerConfig::tiny_words(vocab.len() as i64)
    }
}

fn backbone() -> Backbone {
    Backbone::from_clip_safetensors(tiny_clip_file(), &ClipConfig::tiny(), Device::Cpu).unwrap()
}

const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 0.01;
const CLIP_NORM: f64 = 0.5;
const SMOOTHING: f64 = 0.1;
/// Large enough that gradients which are zero in exact arithmetic (attention
/// key biases) but float noise in practice do not turn into full-size AdamW
/// steps; the update then also depends on the gradients' size, not only
/// their sign.
const EPS: f64 = 1e-3;

fn train_config(accumulate: u32, precision: Precision) -> CaptionTrainConfig {
    CaptionTrainConfig {
        objective: Objective::Xe,
        optimizer: AdamWConfig {
            lr: LR,
            weight_decay: WEIGHT_DECAY,
            eps: EPS,
            ..Default::default()
        },
        schedule: Schedule {
            lr: LR,
            total_steps: 10,
            ..Default::default()
        },
        grad_clip: Some(CLIP_NORM),
        dico: DicoConfig::default(),
        candidates: 2,
        temperature: 1.0,
        seed: 11,
        accumulate,
        label_smoothing: SMOOTHING,
        precision,
    }
}

fn xe_trainer(vocab: &Vocab, accumulate: u32) -> CaptionTrainer {
    CaptionTrainer::new(
        &caption_config(vocab),
        vocab.clone(),
        backbone(),
        None,
        None,
        train_config(accumulate, Precision::Fp32),
        Device::Cpu,
    )
    .unwrap()
}

fn pixels(n: i64) -> Tensor {
    with_tch_seed(5, || {
        Tensor::randn([n, 3, 32, 32], (Kind::Float, Device::Cpu))
    })
}

/// The documented micro-batch loss, written out: per kept token
/// (1 − ε)·(−log p[target]) + ε·mean over classes of (−log p), averaged over
/// the micro-batch's kept tokens; and the number of kept tokens.
fn micro_batch_loss(
    trainer: &CaptionTrainer,
    vocab: &Vocab,
    pixels: &Tensor,
    captions: &[&str],
) -> (Tensor, f64) {
    let max_len = trainer.policy.captioner.config().max_len as usize;
    let seqs: Vec<Vec<i64>> = captions
        .iter()
        .map(|c| vocab.encode_target(c, max_len))
        .collect();
    let len = seqs.iter().map(Vec::len).max().unwrap();
    let pad = trainer.policy.captioner.tokens().pad;
    let flat: Vec<i64> = seqs
        .iter()
        .flat_map(|s| s.iter().copied().chain(std::iter::repeat(pad)).take(len))
        .collect();
    let tokens = Tensor::from_slice(&flat).view([seqs.len() as i64, len as i64]);
    let memory = trainer
        .policy
        .captioner
        .encode(&backbone().features(pixels).unwrap())
        .unwrap();
    let (inputs, _) = trainer
        .policy
        .captioner
        .teacher_forcing_inputs(&tokens)
        .unwrap();
    let logp = trainer
        .policy
        .captioner
        .logits(&memory, &inputs)
        .unwrap()
        .log_softmax(-1, Kind::Float);
    let classes = logp.size()[2];
    let mut total = Tensor::zeros([], (Kind::Float, Device::Cpu));
    let mut kept = 0.0;
    for (row, seq) in seqs.iter().enumerate() {
        // Every target up to EOS is kept; encode_target ends with EOS.
        for (t, &id) in seq.iter().enumerate() {
            let lp = logp.get(row as i64).get(t as i64);
            let nll = -lp.get(id);
            let uniform = -lp.sum(Kind::Float) / classes as f64;
            total = total + nll * (1.0 - SMOOTHING) + uniform * SMOOTHING;
            kept += 1.0;
        }
    }
    (total / kept, kept)
}

/// Clip the gradients' global norm to `CLIP_NORM` and take PyTorch's first
/// AdamW step (zero moments) by hand; returns the norm before clipping, the
/// clipped grads and the new weights.
fn first_adamw_step(vs: &VarStore) -> (f64, BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
    let g = grads(vs);
    let norm: f64 = g
        .values()
        .map(|t| {
            t.to_kind(Kind::Double)
                .square()
                .sum(Kind::Double)
                .double_value(&[])
        })
        .sum::<f64>()
        .sqrt();
    let coef = (CLIP_NORM / (norm + 1e-6)).min(1.0);
    let mut clipped = BTreeMap::new();
    let mut updated = BTreeMap::new();
    for (name, w) in weights(vs) {
        let g = g[&name].to_kind(Kind::Double) * coef;
        let m_hat = &g; // (1 − β1)·g / (1 − β1)
        let v_hat = g.square(); // (1 − β2)·g² / (1 − β2)
        let w =
            w.to_kind(Kind::Double) * (1.0 - LR * WEIGHT_DECAY) - m_hat / (v_hat.sqrt() + EPS) * LR;
        clipped.insert(name.clone(), g);
        updated.insert(name, w);
    }
    (norm, clipped, updated)
}

fn assert_close(what: &str, got: &BTreeMap<String, Tensor>, want: &BTreeMap<String, Tensor>) {
    assert_eq!(got.len(), want.len());
    for (name, w) in want {
        let d = max_abs_diff(&got[name].to_kind(Kind::Double), w);
        assert!(d < 1e-6, "{what} of {name} off by {d}");
    }
}

#[test]
fn accumulated_micro_batches_step_on_the_token_weighted_mean_of_their_losses() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Captions of different lengths, so the weighting of tokens matters.
    let captions = [
        "a red circle",
        "a big blue square left of a small green triangle",
        "two yellow squares",
        "a green circle above a red square",
    ];
    let vocab = Vocab::build(&captions, 1, None);
    let refs: Vec<Vec<String>> = captions.iter().map(|c| vec![c.to_string()]).collect();
    let keys: Vec<String> = (0..4).map(|i| format!("img{i}")).collect();
    let px = pixels(4);

    let mut accumulating = xe_trainer(&vocab, 2);
    let first = accumulating
        .step(&keys[..2], &px.narrow(0, 0, 2), &refs[..2])
        .unwrap();
    assert!(!first.optimizer_step);
    assert_eq!(accumulating.step_count(), 0);
    // Not between steps: a checkpoint would lose the accumulated gradients.
    let dir = tempfile::tempdir().unwrap();
    let ck = Checkpointer::new(dir.path(), 2, None);
    let err = accumulating
        .checkpoint(&ck, String::new(), BTreeMap::new())
        .unwrap_err();
    assert!(err.to_string().contains("1 of 2"), "{err}");
    let second = accumulating
        .step(&keys[2..], &px.narrow(0, 2, 2), &refs[2..])
        .unwrap();
    assert!(second.optimizer_step && !second.skipped_step);
    assert_eq!(accumulating.step_count(), 1);
    assert_eq!(accumulating.stepper.opt.step_count(), 1);
    accumulating
        .checkpoint(&ck, String::new(), BTreeMap::new())
        .unwrap();

    // From scratch, on a fresh model with the same initial weights: the mean
    // token loss over all four images, i.e. the micro-batch means weighted
    // by their token counts (15 and 12 tokens: not the mean of the means).
    let scratch = xe_trainer(&vocab, 1);
    let (l1, n1) = micro_batch_loss(&scratch, &vocab, &px.narrow(0, 0, 2), &captions[..2]);
    let (l2, n2) = micro_batch_loss(&scratch, &vocab, &px.narrow(0, 2, 2), &captions[2..]);
    assert_eq!((n1, n2), (15.0, 12.0));
    assert!((first.loss - l1.double_value(&[])).abs() < 1e-5);
    assert!((second.loss - l2.double_value(&[])).abs() < 1e-5);
    ((l1 * n1 + l2 * n2) / (n1 + n2)).backward();
    let (want_norm, want_grads, want_weights) = first_adamw_step(&scratch.policy.vs);
    assert!(
        want_norm > CLIP_NORM,
        "the test should exercise clipping of the summed gradient"
    );
    assert!(
        (second.grad_norm - want_norm).abs() < 1e-6 * want_norm,
        "gradient norm {} before clipping, from scratch {want_norm}",
        second.grad_norm
    );
    assert_close("gradient", &grads(&accumulating.policy.vs), &want_grads);
    assert_close("weight", &weights(&accumulating.policy.vs), &want_weights);
}

#[test]
fn equal_length_micro_batches_match_one_large_batch() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // N micro-batches of b = one batch of N·b (the token-weighted mean of
    // micro-batch means is the mean over the whole batch).
    let captions = [
        "a red circle",
        "a blue square",
        "a green triangle",
        "a yellow circle",
    ];
    let vocab = Vocab::build(&captions, 1, None);
    let refs: Vec<Vec<String>> = captions.iter().map(|c| vec![c.to_string()]).collect();
    let keys: Vec<String> = (0..4).map(|i| format!("img{i}")).collect();
    let px = pixels(4);
    let mut micro = xe_trainer(&vocab, 2);
    let mut whole = xe_trainer(&vocab, 1);
    for _ in 0..2 {
        micro
            .step(&keys[..2], &px.narrow(0, 0, 2), &refs[..2])
            .unwrap();
        let s = micro
            .step(&keys[2..], &px.narrow(0, 2, 2), &refs[2..])
            .unwrap();
        let w = whole.step(&keys, &px, &refs).unwrap();
        assert!((s.grad_norm - w.grad_norm).abs() < 1e-6 * w.grad_norm.max(1.0));
    }
    assert_eq!((micro.step_count(), whole.step_count()), (2, 2));
    assert_close(
        "gradient",
        &grads(&micro.policy.vs),
        &tensors_f64(grads(&whole.policy.vs)),
    );
    assert_close(
        "weight",
        &weights(&micro.policy.vs),
        &tensors_f64(weights(&whole.policy.vs)),
    );
}

fn tensors_f64(m: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    m.into_iter()
        .map(|(k, v)| (k, v.to_kind(Kind::Double)))
        .collect()
}

// ---------------------------------------------------------------- settings

#[test]
fn bad_optimisation_settings_are_refused_with_what_to_do() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let vocab = Vocab::build(&["a red circle"], 1, None);
    let build = |cfg: CaptionTrainConfig| {
        CaptionTrainer::new(
            &caption_config(&vocab),
            vocab.clone(),
            backbone(),
            None,
            None,
            cfg,
            Device::Cpu,
        )
        .unwrap_err()
        .to_string()
    };
    let fp16 = build(train_config(1, Precision::Fp16));
    assert!(
        fp16.contains("needs CUDA") && fp16.contains("precision = \"fp32\""),
        "{fp16}"
    );
    let bf16 = build(train_config(1, Precision::Bf16));
    assert!(bf16.contains("use precision = \"fp16\""), "{bf16}");
    let zero = build(train_config(0, Precision::Fp32));
    assert!(
        zero.contains("accumulate") && zero.contains("1 or more"),
        "{zero}"
    );
    let smoothing = build(CaptionTrainConfig {
        label_smoothing: -0.1,
        ..train_config(1, Precision::Fp32)
    });
    assert!(smoothing.contains("label_smoothing"), "{smoothing}");
}
