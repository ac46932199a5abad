//! Parity of the tch CLIP with open_clip and Hugging Face `CLIPModel` on tiny random
//! weights (fixtures made by tests/fixtures/clip/gen_clip_fixture.py), plus weight-loading
//! errors.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::model::weights::{self, WeightNaming};
use dicoflow::model::ModelError;
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    common::fixture("clip", name)
}

fn io(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(name))
        .unwrap()
        .into_iter()
        .collect()
}

/// max |a - b| / max |b|
fn rel_err(ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(ours.size(), reference.size());
    let diff = (ours.to_kind(Kind::Double) - reference.to_kind(Kind::Double))
        .abs()
        .max();
    let scale = reference.to_kind(Kind::Double).abs().max();
    diff.double_value(&[]) / scale.double_value(&[])
}

fn check(what: &str, ours: &Tensor, reference: &Tensor) {
    let err = rel_err(ours, reference);
    eprintln!("{what}: max relative error {err:.3e}");
    assert!(err <= TOL, "{what}: relative error {err:.3e} > {TOL:e}");
}

#[test]
fn fixture_config_is_the_tiny_test_preset() {
    let cfg = ClipConfig::from_json_file(fixture("clip_tiny.json")).unwrap();
    assert_eq!(cfg, ClipConfig::tiny_test());
}

#[test]
fn open_clip_parity() {
    let cfg = ClipConfig::tiny_test();
    let (_vs, model) =
        Clip::from_safetensors(fixture("clip_tiny.safetensors"), &cfg, Device::Cpu).unwrap();
    let io = io("clip_tiny_io.safetensors");
    let (images, text) = (&io["images"], &io["text"]);
    tch::no_grad(|| {
        check(
            "open_clip image_features",
            &model.encode_image(images).unwrap(),
            &io["image_features"],
        );
        check(
            "open_clip text_features",
            &model.encode_text(text).unwrap(),
            &io["text_features"],
        );
        check(
            "open_clip vision last_hidden_state",
            &model.vision_last_hidden_state(images).unwrap(),
            &io["vision_last_hidden_state"],
        );
        let out = model.forward(images, text).unwrap();
        check(
            "open_clip logits_per_image",
            &out.logits_per_image,
            &io["logits_per_image"],
        );
        assert_eq!(out.logits_per_text.size(), vec![3, 2]);
        let norms = model
            .encode_text_normalized(text)
            .unwrap()
            .norm_scalaropt_dim(2.0, [-1i64].as_slice(), false);
        check(
            "unit norm",
            &norms,
            &Tensor::ones([3], (Kind::Float, Device::Cpu)),
        );
    });
}

#[test]
fn hugging_face_parity() {
    let cfg = ClipConfig::from_json_file(fixture("hf_tiny.json")).unwrap();
    let (_vs, model) =
        Clip::from_safetensors(fixture("hf_tiny.safetensors"), &cfg, Device::Cpu).unwrap();
    let io = io("hf_tiny_io.safetensors");
    let (images, text) = (&io["images"], &io["text"]);
    tch::no_grad(|| {
        check(
            "HF image_embeds",
            &model.encode_image_normalized(images).unwrap(),
            &io["image_features"],
        );
        check(
            "HF text_embeds",
            &model.encode_text_normalized(text).unwrap(),
            &io["text_features"],
        );
        check(
            "HF vision last_hidden_state",
            &model.vision_last_hidden_state(images).unwrap(),
            &io["vision_last_hidden_state"],
        );
        let out = model.forward(images, text).unwrap();
        check(
            "HF logits_per_image",
            &out.logits_per_image,
            &io["logits_per_image"],
        );
    });
}

#[test]
fn save_then_load_round_trips() {
    let cfg = ClipConfig::tiny_test();
    let (vs, model) =
        Clip::from_safetensors(fixture("clip_tiny.safetensors"), &cfg, Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("clip.safetensors");
    weights::save_safetensors(&vs, &path).unwrap();
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let model2 = Clip::new(vs2.root(), &cfg).unwrap();
    weights::load_safetensors(&mut vs2, &path, WeightNaming::OpenAi).unwrap();
    let images = &io("clip_tiny_io.safetensors")["images"];
    let a = tch::no_grad(|| model.encode_image(images).unwrap());
    let b = tch::no_grad(|| model2.encode_image(images).unwrap());
    assert_eq!(rel_err(&a, &b), 0.0);
}

/// Writes the OpenAI fixture with `edit` applied and tries to load it.
fn load_edited(edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> Result<(), ModelError> {
    let mut tensors = Tensor::read_safetensors(fixture("clip_tiny.safetensors")).unwrap();
    edit(&mut tensors);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("edited.safetensors");
    Tensor::write_safetensors(&tensors, &path).unwrap();
    let cfg = ClipConfig::tiny_test();
    Clip::from_safetensors(&path, &cfg, Device::Cpu).map(|_| ())
}

#[test]
fn missing_key_is_named() {
    let err = load_edited(|t| t.retain(|(k, _)| k != "visual.ln_post.bias")).unwrap_err();
    match &err {
        ModelError::MissingKeys { keys, .. } => {
            assert_eq!(keys, &["visual.ln_post.bias".to_owned()])
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("visual.ln_post.bias"));
}

#[test]
fn unexpected_key_is_named() {
    let err = load_edited(|t| {
        t.push((
            "visual.extra.weight".to_owned(),
            Tensor::zeros([2], (Kind::Float, Device::Cpu)),
        ))
    })
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::UnexpectedKeys { keys, .. } if keys == &["visual.extra.weight".to_owned()]),
        "{err}"
    );
}

#[test]
fn shape_mismatch_names_key_and_both_shapes() {
    let err = load_edited(|t| {
        for (k, v) in t.iter_mut() {
            if k == "text_projection" {
                *v = Tensor::zeros([32, 8], (Kind::Float, Device::Cpu));
            }
        }
    })
    .unwrap_err();
    match &err {
        ModelError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "text_projection");
            assert_eq!(expected, &vec![32, 16]);
            assert_eq!(found, &vec![32, 8]);
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("text_projection") && msg.contains("[32, 16]") && msg.contains("[32, 8]"),
        "{msg}"
    );
}

#[test]
fn hf_file_without_k_proj_is_an_error() {
    let mut tensors = Tensor::read_safetensors(fixture("hf_tiny.safetensors")).unwrap();
    tensors.retain(|(k, _)| k != "text_model.encoder.layers.1.self_attn.k_proj.bias");
    let err = weights::hf_to_openai(tensors, Path::new("hf_tiny.safetensors")).unwrap_err();
    match err {
        ModelError::BadKey { key, .. } => assert!(
            key.starts_with("text_model.encoder.layers.1.self_attn."),
            "{key}"
        ),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn hf_naming_forced_on_openai_file_reports_unexpected_keys() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _model = Clip::new(vs.root(), &ClipConfig::tiny_test()).unwrap();
    let err = weights::load_safetensors(
        &mut vs,
        fixture("clip_tiny.safetensors"),
        WeightNaming::HuggingFace,
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::UnexpectedKeys { .. }), "{err}");
}

#[test]
fn unreadable_files_are_errors() {
    let cfg = ClipConfig::tiny_test();
    let err = Clip::from_safetensors(fixture("absent.safetensors"), &cfg, Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("garbage.safetensors");
    std::fs::write(&path, b"definitely not safetensors").unwrap();
    let err = Clip::from_safetensors(&path, &cfg, Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::NotSafetensors { .. }), "{err}");
    assert!(err.to_string().contains("garbage.safetensors"), "{err}");
}

#[test]
fn bad_inputs_are_errors() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Clip::new(vs.root(), &ClipConfig::tiny_test()).unwrap();
    let opts = (Kind::Float, Device::Cpu);
    let bad_size = Tensor::zeros([1, 3, 16, 16], opts);
    let err = model.encode_image(&bad_size).unwrap_err();
    assert!(matches!(err, ModelError::BadInput { .. }), "{err}");
    // It names the setting to change.
    assert!(
        err.to_string().contains("the preprocess stage's `size`"),
        "{err}"
    );
    let ints = Tensor::zeros([1, 3, 32, 32], (Kind::Int64, Device::Cpu));
    assert!(matches!(
        model.encode_image(&ints),
        Err(ModelError::BadInput { .. })
    ));
    let too_long = Tensor::zeros([1, 17], (Kind::Int64, Device::Cpu));
    assert!(matches!(
        model.encode_text(&too_long),
        Err(ModelError::BadInput { .. })
    ));
    let out_of_vocab = Tensor::from_slice(&[126i64, 128]).reshape([1, 2]);
    let err = model.encode_text(&out_of_vocab).unwrap_err();
    assert!(err.to_string().contains("128"), "{err}");
    let floats = Tensor::zeros([1, 4], opts);
    assert!(matches!(
        model.encode_text(&floats),
        Err(ModelError::BadInput { .. })
    ));
    // Shorter than the context is fine (positional embedding is sliced).
    let short = Tensor::from_slice(&[126i64, 5, 127]).reshape([1, 3]);
    assert_eq!(model.encode_text(&short).unwrap().size(), vec![1, 16]);
}

#[test]
fn invalid_configs_are_rejected() {
    let mut cfg = ClipConfig::tiny_test();
    cfg.vision.heads = 5;
    let vs = nn::VarStore::new(Device::Cpu);
    assert!(matches!(
        Clip::new(vs.root(), &cfg),
        Err(ModelError::InvalidConfig {
            field: "vision.width",
            ..
        })
    ));
    let mut cfg = ClipConfig::tiny_test();
    cfg.vision.image_size = 30;
    assert!(matches!(
        cfg.validate(),
        Err(ModelError::InvalidConfig {
            field: "vision.image_size",
            ..
        })
    ));
}

#[test]
fn presets_have_openai_shapes() {
    assert_eq!(ClipConfig::vit_b_32().vision_tokens(), 50);
    assert_eq!(ClipConfig::vit_b_16().vision_tokens(), 197);
    assert_eq!(ClipConfig::vit_l_14().vision_tokens(), 257);
    assert_eq!(ClipConfig::vit_l_14().embed_dim, 768);
    assert_eq!(ClipConfig::preset("ViT-B/32"), Some(ClipConfig::vit_b_32()));
    assert_eq!(ClipConfig::preset("nope"), None);
    for cfg in [
        ClipConfig::vit_b_32(),
        ClipConfig::vit_b_16(),
        ClipConfig::vit_l_14(),
        ClipConfig::tiny(),
    ] {
        cfg.validate().unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<ClipConfig>(&json).unwrap(), cfg);
    }
}

#[test]
fn tiny_preset_runs_with_the_real_tokenizer() {
    let tok = dicoflow::text::ClipTokenizer::openai().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Clip::new(vs.root(), &ClipConfig::tiny()).unwrap();
    let ids = tok
        .encode_batch(
            &["a red square left of a blue circle", "two green triangles"],
            77,
        )
        .unwrap();
    let images = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let out = tch::no_grad(|| model.forward(&images, &ids).unwrap());
    assert_eq!(out.logits_per_image.size(), vec![2, 2]);
    let hidden = tch::no_grad(|| model.vision_last_hidden_state(&images).unwrap());
    assert_eq!(hidden.size(), vec![2, 17, 64]);
}

#[test]
fn wrong_activation_breaks_parity() {
    // The parity tests can fail: exact GELU instead of QuickGELU moves the outputs.
    let mut cfg = ClipConfig::tiny_test();
    cfg.quick_gelu = false;
    let (_vs, model) =
        Clip::from_safetensors(fixture("clip_tiny.safetensors"), &cfg, Device::Cpu).unwrap();
    let io = io("clip_tiny_io.safetensors");
    let txt = tch::no_grad(|| model.encode_text(&io["text"]).unwrap());
    let img = tch::no_grad(|| model.encode_image(&io["images"]).unwrap());
    assert!(rel_err(&txt, &io["text_features"]) > 1e-3);
    assert!(rel_err(&img, &io["image_features"]) > 1e-3);
}
