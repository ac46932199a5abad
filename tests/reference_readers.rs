//! Every file dicoflow writes in a standard format is read by that format's
//! reference reader (the Python packages `make test` installs), and the
//! reader sees exactly what was written: shards (`synth`, `convert coco`) and
//! reward-cache parts by pyarrow, weights and checkpoints by the safetensors
//! library. The COCO files of `caption` are checked with pycocotools and
//! pycocoevalcap in tests/cli_caption.rs; here, that check's reader rejects
//! an annotations file without annotation ids, as the toolkit does, while
//! `dicoflow eval` reads it and warns.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicoflow::data::coco::{convert_karpathy, CocoConvertOptions, Restval};
use dicoflow::data::world::{generate_row, write_world, WorldSpec};
use dicoflow::data::writer::ShardWriterConfig;
use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::model::weights;
use dicoflow::reward::cache::{CacheEntry, CacheProvenance, PartWriter};
use dicoflow::rng::Rng;
use dicoflow::train::{AdamW, AdamWConfig, Checkpointer, TrainState};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What pyarrow read from each file, keyed by path.
fn pyarrow(files: &[PathBuf]) -> BTreeMap<PathBuf, Value> {
    let args: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let seen = common::reference_reader("parquet_files.py", &args)
        .unwrap_or_else(|e| panic!("pyarrow rejects what dicoflow wrote:\n{e}"));
    seen.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (PathBuf::from(k), v.clone()))
        .collect()
}

/// The rows of shards in dicoflow's layout as pyarrow sees them: key →
/// (image SHA-256, image path, captions), after checking the schema.
fn shard_rows(files: &[PathBuf]) -> BTreeMap<String, (String, Value, Vec<String>)> {
    let mut rows = BTreeMap::new();
    for (file, seen) in pyarrow(files) {
        let schema = &seen["schema"];
        assert_eq!(schema["key"], "string", "{}: {schema}", file.display());
        assert_eq!(
            schema["image"],
            "struct<bytes: binary, path: string>",
            "{}: the Hugging Face image layout",
            file.display()
        );
        let captions = schema["captions"].as_str().unwrap();
        assert!(
            captions.starts_with("list<") && captions.ends_with(": string>"),
            "{}: captions {captions}",
            file.display()
        );
        let cols = &seen["columns"];
        let n = seen["rows"].as_u64().unwrap() as usize;
        assert!(n > 0);
        for i in 0..n {
            let key = cols["key"][i].as_str().unwrap().to_owned();
            let image = &cols["image"][i];
            let caps = cols["captions"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            let sha = image["bytes"].as_str().unwrap().to_owned();
            let old = rows.insert(key.clone(), (sha, image["path"].clone(), caps));
            assert!(old.is_none(), "key {key} twice");
        }
    }
    rows
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|e| e == "parquet") {
            files.push(p);
        }
    }
    files.sort();
    files
}

#[test]
fn synthetic_world_shards_are_read_by_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let spec = WorldSpec {
        train: 5,
        val: 2,
        test: 1,
        rows_per_shard: 3,
        rows_per_row_group: 2,
        ..Default::default()
    };
    write_world(dir.path(), &spec, false, |_| {}).unwrap();
    let files = parquet_files(dir.path());
    assert_eq!(
        files.len(),
        2 + 1 + 1,
        "5 rows in shards of 3, then 2, then 1"
    );
    let rows = shard_rows(&files);
    let mut expected = BTreeMap::new();
    for (split, n) in [(0, spec.train), (1, spec.val), (2, spec.test)] {
        for i in 0..n {
            let (_, row) = generate_row(&spec, split, i).unwrap();
            expected.insert(row.key, (sha256_hex(&row.image), Value::Null, row.captions));
        }
    }
    assert_eq!(rows, expected);
    // The world's extra column: the scene as JSON text.
    let seen = pyarrow(&files[..1]);
    let first = seen.values().next().unwrap();
    assert_eq!(first["schema"]["scene"], "string");
    let scene: Value =
        serde_json::from_str(first["columns"]["scene"][0].as_str().unwrap()).unwrap();
    assert!(scene.is_object());
}

#[test]
fn converted_coco_shards_are_read_by_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let images = root.join("coco");
    std::fs::create_dir_all(images.join("val2014")).unwrap();
    let listed = [
        ("val2014", "COCO_val2014_000000000042.jpg", 42, "train"),
        ("val2014", "COCO_val2014_000000000139.jpg", 139, "val"),
        ("val2014", "COCO_val2014_000000000007.jpg", 7, "restval"),
    ];
    let mut expected = BTreeMap::new();
    let mut karpathy = Vec::new();
    for (i, (folder, name, id, split)) in listed.iter().enumerate() {
        let bytes = common::jpeg(24, 20, i as u32);
        std::fs::write(images.join(folder).join(name), &bytes).unwrap();
        let caps = [format!("a photo number {i}"), "  a small image ".to_owned()];
        karpathy.push(serde_json::json!({
            "filepath": folder, "filename": name, "split": split, "cocoid": id,
            "sentences": caps.iter().map(|c| serde_json::json!({"raw": c})).collect::<Vec<_>>(),
        }));
        expected.insert(
            id.to_string(),
            (
                sha256_hex(&bytes),
                Value::String(format!("{folder}/{name}")),
                caps.iter().map(|c| c.trim().to_owned()).collect::<Vec<_>>(),
            ),
        );
    }
    let split_file = root.join("dataset_coco.json");
    std::fs::write(
        &split_file,
        serde_json::json!({ "images": karpathy }).to_string(),
    )
    .unwrap();
    let out = root.join("shards");
    let opts = CocoConvertOptions {
        restval: Restval::Train,
        writer: ShardWriterConfig {
            rows_per_shard: 10,
            rows_per_row_group: 1,
            ..Default::default()
        },
        overwrite: false,
    };
    let report = convert_karpathy(&split_file, &images, &out, &opts, |_, _| {}).unwrap();
    assert_eq!(report.shards.len(), 2, "train (with restval) and val");
    assert_eq!(shard_rows(&parquet_files(&out)), expected);
}

#[test]
fn reward_cache_parts_are_read_by_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let provenance = CacheProvenance {
        evaluator_sha256: "e".repeat(64),
        captioner_sha256: "c".repeat(64),
        reference_sha256: "r".repeat(64),
        config: r#"{"k":2}"#.into(),
    };
    let entry = |key: &str, rank: i32, tokens: Vec<i32>, reward: f32| CacheEntry {
        key: key.into(),
        rank,
        text: format!("caption {key} {rank}"),
        tokens,
        reward,
        ref_logprob: -1.25 * (rank + 1) as f32,
    };
    // Pushed out of order over two chunks; the part is sorted by (key, rank).
    let rows = vec![
        entry("b", 1, vec![5, 6, 3], 0.1),
        entry("a", 0, vec![4, 3], 0.75),
        entry("b", 0, vec![3], 1.0 / 3.0),
        entry("a", 1, vec![], -0.5),
    ];
    let mut w = PartWriter::new(dir.path(), "shard-00000", provenance.clone(), 2).unwrap();
    w.push(rows.clone()).unwrap();
    let (part, n) = w.finish().unwrap();
    assert_eq!(n, 4);
    let seen = pyarrow(std::slice::from_ref(&part));
    let seen = &seen[&part];
    assert_eq!(seen["rows"], 4);
    let schema = &seen["schema"];
    for (col, ty) in [
        ("key", "string"),
        ("rank", "int32"),
        ("text", "string"),
        ("reward", "float"),
        ("ref_logprob", "float"),
    ] {
        assert_eq!(schema[col], ty, "{col}: {schema}");
    }
    let tokens = schema["tokens"].as_str().unwrap();
    assert!(
        tokens.starts_with("list<") && tokens.ends_with(": int32>"),
        "{tokens}"
    );
    let meta = &seen["metadata"];
    assert_eq!(meta["dicoflow.reward_cache.version"], "1");
    assert_eq!(
        meta["dicoflow.evaluator.sha256"],
        provenance.evaluator_sha256
    );
    assert_eq!(
        meta["dicoflow.captioner.sha256"],
        provenance.captioner_sha256
    );
    assert_eq!(
        meta["dicoflow.reference.sha256"],
        provenance.reference_sha256
    );
    assert_eq!(meta["dicoflow.config"], provenance.config);
    let mut sorted = rows;
    sorted.sort_by(|a, b| (&a.key, a.rank).cmp(&(&b.key, b.rank)));
    let cols = &seen["columns"];
    for (i, e) in sorted.iter().enumerate() {
        assert_eq!(cols["key"][i], e.key.as_str());
        assert_eq!(cols["rank"][i], e.rank);
        assert_eq!(cols["tokens"][i], serde_json::json!(e.tokens));
        assert_eq!(cols["text"][i], e.text.as_str());
        // float32 values, widened exactly to float64 on both sides.
        assert_eq!(cols["reward"][i].as_f64(), Some(e.reward as f64));
        assert_eq!(cols["ref_logprob"][i].as_f64(), Some(e.ref_logprob as f64));
    }
}

/// torch's name of a tch kind, as the safetensors reader reports it.
fn torch_dtype(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::Double => "float64",
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        Kind::Int64 => "int64",
        Kind::Int => "int32",
        other => panic!("no test mapping for {other:?}"),
    }
}

/// Checks that the safetensors library reads `file` as exactly `tensors`:
/// names, dtypes, shapes and every value (SHA-256 of the values as
/// little-endian float64).
fn read_back_exactly(file: &Path, tensors: &BTreeMap<String, Tensor>) {
    let seen = common::reference_reader("safetensors_files.py", &[file])
        .unwrap_or_else(|e| panic!("safetensors rejects {}:\n{e}", file.display()));
    let seen = seen[file.to_str().unwrap()]["tensors"].as_object().unwrap();
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        tensors.keys().collect::<Vec<_>>(),
        "{}",
        file.display()
    );
    for (name, t) in tensors {
        let s = &seen[name];
        assert_eq!(s["dtype"], torch_dtype(t.kind()), "{name}");
        assert_eq!(s["shape"], serde_json::json!(t.size()), "{name}");
        let values = Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(s["sha256"], sha256_hex(&bytes), "{name} values differ");
    }
}

#[test]
fn weights_and_checkpoints_are_read_by_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let vs = common::with_tch_seed(3, || {
        let vs = VarStore::new(Device::Cpu);
        let _clip = Clip::new(vs.root(), &ClipConfig::tiny()).unwrap();
        vs
    });
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    assert!(variables.len() > 10);

    // `model.safetensors` of the training stages and `convert weights`' writer.
    let exported = dir.path().join("exported.safetensors");
    weights::save_safetensors(&vs, &exported).unwrap();
    read_back_exactly(&exported, &variables);
    // The VarStore's own writer (captioner weights, checkpoints).
    let stored = dir.path().join("stored.safetensors");
    vs.save(&stored).unwrap();
    read_back_exactly(&stored, &variables);

    // A checkpoint after one AdamW step: weights and optimizer state.
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    opt.zero_grad().unwrap();
    let loss = vs
        .trainable_variables()
        .iter()
        .map(|t| t.square().sum(Kind::Float))
        .fold(Tensor::from(0f32), |a, b| a + b);
    loss.backward();
    opt.step().unwrap();
    let state = TrainState {
        step: 1,
        last_batch: Some(0),
        cursors: vec![],
        rng: Rng::new(1),
        config: String::new(),
        metrics: BTreeMap::new(),
        loss_scale: None,
        best: None,
        replicas: 1,
    };
    let ck = Checkpointer::new(dir.path().join("checkpoints"), 1, None)
        .save(&vs, &opt, &state)
        .unwrap();
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    read_back_exactly(&ck.join("model.safetensors"), &variables);
    // The optimizer file as tch reads it back is what the reference reads.
    let optimizer = ck.join("optimizer.safetensors");
    let moments: BTreeMap<String, Tensor> = Tensor::read_safetensors(&optimizer)
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        moments.len() >= 2 * variables.len() - 5,
        "{}",
        moments.len()
    );
    read_back_exactly(&optimizer, &moments);
}

#[test]
fn coco_reader_rejects_annotations_without_ids_and_eval_warns() {
    let dir = tempfile::tempdir().unwrap();
    let annotations = dir.path().join("annotations.json");
    let results = dir.path().join("results.json");
    // The layout `caption --references` used to write: no annotation `id`.
    std::fs::write(
        &annotations,
        serde_json::json!({
            "images": [{"id": 1}, {"id": 2}],
            "annotations": [
                {"image_id": 1, "caption": "a red circle"},
                {"image_id": 2, "caption": "two blue squares"},
            ],
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        &results,
        r#"[{"image_id": 1, "caption": "a red circle"}, {"image_id": 2, "caption": "a square"}]"#,
    )
    .unwrap();
    let err = common::reference_reader("coco_captions.py", &[&annotations, &results]).unwrap_err();
    assert!(err.contains("KeyError: 'id'"), "{err}");

    // dicoflow's evaluator needs only `image_id` and `caption`: it scores the
    // file and says that other tools will not read it.
    let o = common::dicoflow_command()
        .args(["eval", "--annotations"])
        .arg(&annotations)
        .arg("--results")
        .arg(&results)
        .args(["--json", "--metrics", "bleu"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 of 2 annotations have no `id`") && stderr.contains("pycocotools"),
        "{stderr}"
    );
}
