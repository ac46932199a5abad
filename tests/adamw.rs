//! AdamW against torch.optim.AdamW (fixture from tests/fixtures/adamw/make_fixture.py),
//! and bit-identical continuation after saving and restoring its state.
mod common;

use dicoflow::train::{AdamW, AdamWConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn fixture() -> serde_json::Value {
    common::json_file(&common::fixture("adamw", "adamw.json"))
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A VarStore with `a` [3,2] and `b` [4] set to the fixture's initial values.
fn setup(fx: &serde_json::Value) -> (VarStore, Tensor, Tensor) {
    let mut vs = VarStore::new(Device::Cpu);
    let _ = vs.root().zeros("a", &[3, 2]);
    let _ = vs.root().zeros("b", &[4]);
    // VarStore variables are f32 by default; f64 allows an exact comparison.
    vs.double();
    let a = vs.root().get("a").unwrap();
    let b = vs.root().get("b").unwrap();
    tch::no_grad(|| {
        a.shallow_clone()
            .copy_(&Tensor::from_slice(&floats(&fx["init"]["a"])).view([3, 2]));
        b.shallow_clone()
            .copy_(&Tensor::from_slice(&floats(&fx["init"]["b"])));
    });
    (vs, a, b)
}

fn config(fx: &serde_json::Value) -> AdamWConfig {
    serde_json::from_value(fx["config"].clone()).unwrap()
}

/// Set gradients by back-propagating sum(p · g).
fn apply_grads(opt: &mut AdamW, a: &Tensor, b: &Tensor, g: &serde_json::Value) {
    opt.zero_grad().unwrap();
    let ga = Tensor::from_slice(&floats(&g["a"])).view([3, 2]);
    let gb = Tensor::from_slice(&floats(&g["b"]));
    let loss = (a * ga).sum(Kind::Double) + (b * gb).sum(Kind::Double);
    loss.backward();
    opt.step().unwrap();
}

#[test]
fn matches_pytorch_adamw() {
    let fx = fixture();
    let (vs, a, b) = setup(&fx);
    let mut opt = AdamW::new(&vs, config(&fx));
    for g in fx["grads"].as_array().unwrap() {
        apply_grads(&mut opt, &a, &b, g);
    }
    let want_a = floats(&fx["final"]["a"]);
    let got_a: Vec<f64> = Vec::try_from(a.flatten(0, -1)).unwrap();
    let got_b: Vec<f64> = Vec::try_from(b.shallow_clone()).unwrap();
    for (g, w) in got_a
        .iter()
        .zip(&want_a)
        .chain(got_b.iter().zip(&floats(&fx["final"]["b"])))
    {
        assert!((g - w).abs() < 1e-12, "{g} vs {w}");
    }
    assert_eq!(opt.step_count(), 6);
}

#[test]
fn saved_state_resumes_bit_identically() {
    let fx = fixture();
    let grads = fx["grads"].as_array().unwrap();
    let (vs, a, b) = setup(&fx);
    let mut straight = AdamW::new(&vs, config(&fx));
    for g in grads {
        apply_grads(&mut straight, &a, &b, g);
    }

    let dir = tempfile::tempdir().unwrap();
    let (vs1, a1, b1) = setup(&fx);
    let mut first = AdamW::new(&vs1, config(&fx));
    for g in &grads[..3] {
        apply_grads(&mut first, &a1, &b1, g);
    }
    first.save(&dir.path().join("opt.safetensors")).unwrap();
    vs1.save(dir.path().join("model.safetensors")).unwrap();

    let (mut vs2, a2, b2) = setup(&fx);
    vs2.load(dir.path().join("model.safetensors")).unwrap();
    let mut resumed = AdamW::new(&vs2, config(&fx));
    resumed.load(&dir.path().join("opt.safetensors")).unwrap();
    assert_eq!(resumed.step_count(), 3);
    for g in &grads[3..] {
        apply_grads(&mut resumed, &a2, &b2, g);
    }
    assert!(a2.equal(&a) && b2.equal(&b), "resumed parameters differ");
}

#[test]
fn grad_clipping_scales_to_the_max_norm_and_reports_the_norm() {
    let fx = fixture();
    let (vs, a, b) = setup(&fx);
    let mut opt = AdamW::new(&vs, config(&fx));
    let loss = (&a * 3.0).sum(Kind::Double) + (&b * 4.0).sum(Kind::Double);
    loss.backward();
    let norm = opt.clip_grad_norm(Some(1.0)).unwrap();
    let want = (6.0 * 9.0 + 4.0 * 16.0f64).sqrt();
    assert!((norm - want).abs() < 1e-9);
    let after = (a.grad().square().sum(Kind::Double) + b.grad().square().sum(Kind::Double)).sqrt();
    assert!((after.double_value(&[]) - 1.0).abs() < 1e-5);
}

#[test]
fn loading_state_of_another_model_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let vs = VarStore::new(Device::Cpu);
    let _ = vs.root().zeros("only", &[2]);
    AdamW::new(&vs, AdamWConfig::default())
        .save(&dir.path().join("o.safetensors"))
        .unwrap();
    let fx = fixture();
    let (vs2, _, _) = setup(&fx);
    let err = AdamW::new(&vs2, config(&fx))
        .load(&dir.path().join("o.safetensors"))
        .unwrap_err();
    assert!(err.to_string().contains("tensors"), "{err}");
}
