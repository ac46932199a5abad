//! `dicoflow train` (XE with CLIP BPE, no `vocab`) → `dicoflow caption` →
//! `dicoflow eval`, end to end on shards and a tiny random CLIP the test makes;
//! the COCO files `caption` writes load in pycocotools / pycocoevalcap.
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::dicoflow;
use dicoflow::data::writer::{ShardRow, ShardWriter, ShardWriterConfig};
use dicoflow::image::{PreprocessConfig, Preprocessor};
use dicoflow::model::captioner::{Backbone, CaptionText, CaptionerConfig};
use dicoflow::model::clip::ClipConfig;
use dicoflow::train::Policy;
use tch::{Device, Tensor};

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Keys as `convert coco` writes them (COCO ids) plus one that is not a number.
const KEYS: [&str; 5] = ["42", "7", "139", "00123", "street-1"];

fn write_shards(dir: &Path) -> Vec<Vec<u8>> {
    let mut w = ShardWriter::try_new(
        dir,
        "coco-test",
        ShardWriterConfig {
            rows_per_shard: 3,
            rows_per_row_group: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut images = Vec::new();
    for (i, key) in KEYS.iter().enumerate() {
        let image = common::png(40, 36, i as u32 * 31);
        images.push(image.clone());
        w.push(ShardRow {
            key: (*key).to_owned(),
            image,
            image_path: None,
            captions: vec![
                format!("a photo of object number {i}"),
                "a small picture with colours".to_owned(),
            ],
            extra: vec![],
        })
        .unwrap();
    }
    w.finish().unwrap();
    images
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_caption_eval_with_clip_bpe() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("shards");
    let images = write_shards(&data);
    let clip_file = root.join("clip.safetensors");
    common::clip::save_tiny_clip(&clip_file, 5);

    // XE with the CLIP BPE text: no `vocab` in the settings.
    let out = root.join("xe");
    let pipeline = root.join("xe.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[source]
path = {data:?}
seed = 0
[flow]
batch_size = 4
[[cpu]]
type = "preprocess"
[cpu.settings]
size = 32
[[device]]
type = "train_captioner"
[device.settings]
captioner = "tiny"
backbone = {clip:?}
backbone_config = "tiny"
out = {out:?}
[device.settings.train]
objective = "xe"
candidates = 1
seed = 0
[device.settings.train.optimizer]
lr = 1e-3
[device.settings.train.schedule]
lr = 1e-3
total_steps = 2
"#,
            data = path(&data),
            clip = path(&clip_file),
            out = path(&out),
        ),
    )
    .unwrap();
    let o = dicoflow(&[
        "train",
        "--pipeline",
        path(&pipeline),
        "--run-dir",
        path(&root.join("run")),
        "--quiet",
    ]);
    ok(&o, "train");
    let weights = out.join("model.safetensors");
    let captioner_json = out.join("captioner.json");
    assert!(weights.is_file() && captioner_json.is_file());

    let results = root.join("out/results.json");
    let annotations = root.join("out/annotations.json");
    let o = dicoflow(&[
        "caption",
        "--data",
        path(&data),
        "--weights",
        path(&weights),
        "--captioner",
        path(&captioner_json),
        "--backbone",
        path(&clip_file),
        "--backbone-config",
        "tiny",
        "--out",
        path(&results),
        "--references",
        path(&annotations),
        "--device",
        "cpu",
        "-w",
        "2",
        "--batch-size",
        "2",
        "--quiet",
    ]);
    ok(&o, "caption");

    // One result per image; numeric keys become COCO integer ids, others stay strings.
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(rows.len(), KEYS.len());
    let ids: Vec<serde_json::Value> = rows.iter().map(|r| r["image_id"].clone()).collect();
    for expected in [
        serde_json::json!(42),
        serde_json::json!(7),
        serde_json::json!(139),
        serde_json::json!("00123"),
        serde_json::json!("street-1"),
    ] {
        assert!(ids.contains(&expected), "{expected} not in {ids:?}");
    }

    // Each caption is what the trained captioner says about that image, computed
    // here without the dataflow.
    let cfg = CaptionerConfig::from_json_file(&captioner_json).unwrap();
    let backbone =
        Backbone::from_clip_safetensors(&clip_file, &ClipConfig::tiny(), Device::Cpu).unwrap();
    let policy = Policy::from_weights(
        &cfg,
        CaptionText::clip_bpe().unwrap(),
        backbone,
        &weights,
        Device::Cpu,
    )
    .unwrap();
    let mut pre = Preprocessor::new(PreprocessConfig {
        size: 32,
        ..Default::default()
    });
    let mut flat = Vec::new();
    for image in &images {
        flat.extend(pre.process(image).unwrap());
    }
    let pixels = Tensor::from_slice(&flat).view([KEYS.len() as i64, 3, 32, 32]);
    let expected = policy.caption(&pixels).unwrap();
    for (key, caption) in KEYS.iter().zip(&expected) {
        let id = dicoflow::cli::caption::image_id_of(key);
        let row = rows.iter().find(|r| r["image_id"] == id).unwrap();
        assert_eq!(row["caption"].as_str().unwrap(), caption, "image {key}");
    }

    // pycocotools and pycocoevalcap (what captioning codebases load COCO
    // files with) read both files: every image, each shard's 2 references,
    // every result.
    let seen = common::reference_reader("coco_captions.py", &[&annotations, &results])
        .unwrap_or_else(|e| panic!("the COCO toolkit rejects what `caption` wrote:\n{e}"));
    assert_eq!(seen["images"], KEYS.len(), "{seen}");
    assert_eq!(seen["annotations"], 2 * KEYS.len(), "{seen}");
    assert_eq!(seen["annotation_ids_unique"], true, "{seen}");
    assert_eq!(seen["results"], KEYS.len(), "{seen}");
    assert_eq!(seen["evaluated"], KEYS.len(), "{seen}");
    assert!(seen["scores"]["CIDEr"].as_f64().is_some_and(f64::is_finite));

    // The results and the shards' references feed `dicoflow eval`.
    let o = dicoflow(&[
        "eval",
        "--annotations",
        path(&annotations),
        "--results",
        path(&results),
        "--json",
    ]);
    ok(&o, "eval");
    let metrics: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cider = metrics["CIDEr"].as_f64();
    assert!(cider.is_some_and(f64::is_finite), "{metrics}");
}

#[test]
fn caption_refuses_a_vocabulary_the_captioner_was_not_built_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("shards");
    write_shards(&data);
    let clip_file = root.join("clip.safetensors");
    common::clip::save_tiny_clip(&clip_file, 5);
    let vocab = dicoflow::model::captioner::Vocab::build(&["a red circle"], 1, None);
    let vocab_file: PathBuf = root.join("vocab.json");
    std::fs::write(&vocab_file, serde_json::to_string(&vocab).unwrap()).unwrap();

    let o = dicoflow(&[
        "caption",
        "--data",
        path(&data),
        "--weights",
        path(&root.join("missing.safetensors")),
        "--captioner",
        "tiny",
        "--vocab",
        path(&vocab_file),
        "--backbone",
        path(&clip_file),
        "--backbone-config",
        "tiny",
        "--out",
        path(&root.join("results.json")),
        "--device",
        "cpu",
        "--quiet",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("vocab_size 49409") && err.contains("word vocabulary of 7 ids"),
        "{err}"
    );
    assert!(!root.join("results.json").exists());
}
