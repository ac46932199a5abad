//! `dicoflow convert weights` on PyTorch fixtures (made by
//! tests/fixtures/convert/gen_convert_fixture.py) and `dicoflow score` end to end on a
//! tiny random CLIP.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::clip::save_random_clip;
use common::dicoflow;
use dicoflow::image::{PreprocessConfig, Preprocessor};
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::reward::{ClipScorer, ScoreConfig};
use dicoflow::text::ClipTokenizer;
use tch::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    common::fixture("convert", name)
}

/// The library's CLIP-S scorer over `weights`, holding the embeddings of
/// `images` (key, encoded image) preprocessed at 32 px as `score` does: the
/// reference for the command's numbers.
fn library_scorer(weights: &Path, cfg: &ClipConfig, images: &[(String, Vec<u8>)]) -> ClipScorer {
    let (_vs, clip) = Clip::from_safetensors(weights, cfg, Device::Cpu).unwrap();
    let mut scorer = ClipScorer::new(
        clip,
        ClipTokenizer::openai().unwrap(),
        ScoreConfig::clip_s(),
    );
    let mut pre = Preprocessor::new(PreprocessConfig {
        size: 32,
        ..Default::default()
    });
    for (key, bytes) in images {
        let px = pre.process(bytes).unwrap();
        let t = Tensor::from_slice(&px).reshape([1, 3, 32, 32]);
        scorer.add_images(std::slice::from_ref(key), &t).unwrap();
    }
    scorer
}

#[test]
fn convert_weights_reads_torchscript_and_state_dicts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut converted: Vec<BTreeMap<String, Tensor>> = Vec::new();
    // TorchScript, flat, DataParallel, OrderedDict and PAC-S-style nested checkpoints
    // (the last two needed a Python conversion before the restricted pickle reader).
    let inputs = [
        ("tiny_ts.pt", "TorchScript parameters"),
        ("tiny_flat.pth", "the top-level dict"),
        ("tiny_dp.pth", "the top-level dict"),
        ("tiny_ordered.pth", "the top-level dict"),
        ("tiny_nested.pth", "the `state_dict` entry"),
    ];
    for (name, source) in inputs {
        let out = dir.join(format!("{name}.safetensors"));
        let o = dicoflow(&[
            "convert",
            "weights",
            fixture(name).to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains(source), "{name}: {stdout}");
        converted.push(
            Tensor::read_safetensors(&out)
                .unwrap()
                .into_iter()
                .collect(),
        );
    }
    for c in &converted {
        let keys: Vec<&str> = c.keys().map(String::as_str).collect();
        assert_eq!(keys, ["logit_scale", "proj.bias", "proj.weight"]);
        assert!((c["logit_scale"].double_value(&[]) - 4.5).abs() < 1e-6);
        for k in ["proj.bias", "proj.weight"] {
            assert!(c[k].equal(&converted[0][k]), "{k} differs between formats");
        }
    }
    // What is still unreadable is refused with the reason, and nothing is written.
    let out = dir.join("never.safetensors");
    let o = dicoflow(&[
        "convert",
        "weights",
        fixture("ambiguous.pth").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("several keys (state_dict, model)"), "{err}");
    assert!(!out.exists());
}

#[test]
fn score_command_matches_library() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cfg = ClipConfig::tiny();
    let weights_path = dir.join("clip.safetensors");
    save_random_clip(&weights_path, &cfg, 0);
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let ids = [1u32, 42, 391895];
    for (i, id) in ids.iter().enumerate() {
        let name = format!("COCO_val2014_{id:012}.png");
        std::fs::write(
            images.join(name),
            common::png(40 + 3 * i as u32, 36, i as u32),
        )
        .unwrap();
    }
    let captions = [
        "a red circle",
        "two blue squares",
        "a small green triangle",
        "a circle",
    ];
    let keys = ["1", "42", "391895", "1"];
    let results: Vec<serde_json::Value> = keys
        .iter()
        .zip(captions)
        .map(|(k, c)| serde_json::json!({"image_id": k.parse::<u64>().unwrap(), "caption": c}))
        .collect();
    std::fs::write(
        dir.join("res.json"),
        serde_json::to_string(&results).unwrap(),
    )
    .unwrap();
    let refs = [
        ("1", "a circle"),
        ("1", "something red"),
        ("42", "blue squares"),
        ("391895", "a triangle"),
    ];
    let ann = serde_json::json!({
        "images": ids.iter().map(|id| serde_json::json!({"id": id})).collect::<Vec<_>>(),
        "annotations": refs.iter().map(|(k, c)| serde_json::json!({"image_id": k.parse::<u64>().unwrap(), "caption": c})).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("ann.json"), ann.to_string()).unwrap();

    let o = dicoflow(&[
        "score",
        "--results",
        dir.join("res.json").to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--clip",
        weights_path.to_str().unwrap(),
        "--clip-config",
        "tiny",
        "--annotations",
        dir.join("ann.json").to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: BTreeMap<String, f64> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["CLIP-S", "RefCLIP-S"]);

    // The same numbers through the library.
    let pngs: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.to_string(), common::png(40 + 3 * i as u32, 36, i as u32)))
        .collect();
    let scorer = library_scorer(&weights_path, &cfg, &pngs);
    let per_key: BTreeMap<&str, Vec<&str>> = refs.iter().fold(BTreeMap::new(), |mut m, (k, c)| {
        m.entry(*k).or_insert_with(Vec::new).push(*c);
        m
    });
    let r: Vec<Vec<&str>> = keys.iter().map(|k| per_key[k].clone()).collect();
    let s = scorer.score_with_refs(&keys, &captions, &r).unwrap();
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    assert!((got["CLIP-S"] - mean(&s.score)).abs() < 1e-5, "{got:?}");
    assert!(
        (got["RefCLIP-S"] - mean(&s.ref_score)).abs() < 1e-5,
        "{got:?}"
    );

    // Without annotations: CLIP-S only; a missing image is an error naming it.
    std::fs::remove_file(images.join("COCO_val2014_000000000042.png")).unwrap();
    // `score` of the results on `device`, without annotations.
    let score_on = |device: &str| {
        dicoflow(&[
            "score",
            "--results",
            dir.join("res.json").to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
            "--clip",
            weights_path.to_str().unwrap(),
            "--clip-config",
            "tiny",
            "--device",
            device,
        ])
    };
    let o = score_on("cpu");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("`42`"));

    // Asking for CUDA where there is none is an error, never a run on the CPU.
    if dicoflow::device::visible_cuda_devices() == 0 {
        let o = score_on("cuda");
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("no CUDA device is visible; use `cpu`, or `auto`"),
            "{err}"
        );
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn score_finds_images_named_by_their_id_and_refuses_two_files_for_one_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cfg = ClipConfig::tiny();
    let weights_path = dir.join("clip.safetensors");
    save_random_clip(&weights_path, &cfg, 0);
    // clipscore's convention: the id is the file stem.
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let ids = ["image1", "image2"];
    for (i, id) in ids.iter().enumerate() {
        std::fs::write(
            images.join(format!("{id}.png")),
            common::png(30, 30 + i as u32, 7 * i as u32),
        )
        .unwrap();
    }
    let captions = ["a red circle", "two blue squares"];
    let results: Vec<serde_json::Value> = ids
        .iter()
        .zip(captions)
        .map(|(k, c)| serde_json::json!({"image_id": k, "caption": c}))
        .collect();
    let res = dir.join("res.json");
    std::fs::write(&res, serde_json::to_string(&results).unwrap()).unwrap();
    let score = |folder: &Path| {
        dicoflow(&[
            "score",
            "--results",
            res.to_str().unwrap(),
            "--images",
            folder.to_str().unwrap(),
            "--clip",
            weights_path.to_str().unwrap(),
            "--clip-config",
            "tiny",
            "--device",
            "cpu",
            "--json",
        ])
    };
    let o = score(&images);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: BTreeMap<String, f64> = serde_json::from_slice(&o.stdout).unwrap();

    let pngs: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.to_string(), common::png(30, 30 + i as u32, 7 * i as u32)))
        .collect();
    let scorer = library_scorer(&weights_path, &cfg, &pngs);
    let s = scorer.score(&ids, &captions).unwrap();
    let want = s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
    assert!((got["CLIP-S"] - want).abs() < 1e-5, "{got:?} vs {want}");

    // `image1.jpg` next to `image1.png`: which one is image1 cannot be known.
    std::fs::write(images.join("image1.jpg"), common::jpeg(30, 30, 1)).unwrap();
    let o = score(&images);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("image1.jpg") && err.contains("image1.png"),
        "{err}"
    );
}
