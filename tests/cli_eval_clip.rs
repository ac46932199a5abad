//! `dicoflow eval` with images and CLIP weights: CLIP-S, RefCLIP-S, PAC-S and
//! RefPAC-S in the same JSON and per-image file as the caption metrics, equal
//! to what `dicoflow score` computes, on tiny random CLIPs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::clip::save_tiny_clip;
use common::{dicoflow, dicoflow_json};
use dicoflow::data::writer::{ShardRow, ShardWriter, ShardWriterConfig};
use serde_json::{json, Value};

const IDS: [u32; 3] = [1, 42, 391895];

fn image_bytes(i: usize) -> Vec<u8> {
    common::png(40 + 3 * i as u32, 36, 5 + i as u32)
}

/// Annotations (with `file_name` for one image), results in another order than
/// the annotations, a folder of images and two sets of weights.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ann: PathBuf,
    res: PathBuf,
    images: PathBuf,
    clip: PathBuf,
    pac: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for (i, id) in IDS.iter().enumerate() {
        // Image 42 is found through `file_name`, the others by their number.
        let name = if *id == 42 {
            "forty-two.png".to_owned()
        } else {
            format!("COCO_val2014_{id:012}.png")
        };
        std::fs::write(images.join(name), image_bytes(i)).unwrap();
    }
    let refs = [
        (1, "a circle on a table"),
        (1, "something red."),
        (1, "A red ball"),
        (42, "two blue squares"),
        (42, "Blue squares, side by side"),
        (391895, "a small triangle"),
        (391895, "A green shape!"),
    ];
    let ann = json!({
        "images": [{"id": 1}, {"id": 42, "file_name": "forty-two.png"}, {"id": 391895}],
        "annotations": refs.iter().enumerate()
            .map(|(i, (id, c))| json!({"id": i, "image_id": id, "caption": c}))
            .collect::<Vec<_>>(),
    });
    let results = json!([
        {"image_id": 391895, "caption": "a small green triangle"},
        {"image_id": 1, "caption": "a red circle"},
        {"image_id": 42, "caption": "Two blue squares."},
    ]);
    let (ann_path, res_path) = (dir.join("ann.json"), dir.join("res.json"));
    std::fs::write(&ann_path, ann.to_string()).unwrap();
    std::fs::write(&res_path, results.to_string()).unwrap();
    let (clip, pac) = (dir.join("clip.safetensors"), dir.join("pac.safetensors"));
    // Seeded apart, so that the CLIP and "PAC-S" weights differ.
    save_tiny_clip(&clip, 1);
    save_tiny_clip(&pac, 2);
    Fixture {
        _tmp: tmp,
        dir,
        ann: ann_path,
        res: res_path,
        images,
        clip,
        pac,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `args`, then the fixture's CLIP weights (tiny, on the CPU) and `images`.
fn with_clip<'a>(f: &'a Fixture, images: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let clip = [
        "--images",
        s(images),
        "--clip",
        s(&f.clip),
        "--clip-config",
        "tiny",
    ];
    [args, &clip[..], &["--device", "cpu"]].concat()
}

fn eval_json(f: &Fixture, images: &Path, per_image: &Path) -> BTreeMap<String, f64> {
    let eval = ["eval", "--annotations", s(&f.ann), "--results", s(&f.res)];
    let mut args = with_clip(f, images, &eval);
    args.extend(["--pac", s(&f.pac), "--pac-config", "tiny"]);
    args.extend(["--json", "--per-image", s(per_image)]);
    dicoflow_json(&args)
}

/// `score` of the fixture with `weights` and `metric`; its JSON and per-image rows.
fn score_json(f: &Fixture, weights: &Path, metric: &str) -> (BTreeMap<String, f64>, Vec<Value>) {
    let pi = f.dir.join(format!("score_{metric}.json"));
    let json = dicoflow_json(&[
        "score",
        "--results",
        s(&f.res),
        "--images",
        s(&f.images),
        "--annotations",
        s(&f.ann),
        "--clip",
        s(weights),
        "--clip-config",
        "tiny",
        "--metric",
        metric,
        "--device",
        "cpu",
        "--json",
        "--per-image",
        s(&pi),
    ]);
    let rows = common::json_file(&pi).as_array().unwrap().clone();
    (json, rows)
}

/// Per-image rows by image id.
fn by_id(rows: &[Value]) -> BTreeMap<u64, &Value> {
    rows.iter()
        .map(|r| (r["image_id"].as_u64().unwrap(), r))
        .collect()
}

#[test]
fn eval_reports_the_clip_scores_of_score_with_the_caption_metrics() {
    let f = fixture();
    let pi_path = f.dir.join("eval_pi.json");
    let got = eval_json(&f, &f.images, &pi_path);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "Bleu_1",
            "Bleu_2",
            "Bleu_3",
            "Bleu_4",
            "CIDEr",
            "CLIP-S",
            "PAC-S",
            "ROUGE_L",
            "RefCLIP-S",
            "RefPAC-S"
        ]
    );
    let rows = common::json_file(&pi_path).as_array().unwrap().clone();
    // Evaluation order: the annotations' image order.
    let ids: Vec<u64> = rows
        .iter()
        .map(|r| r["image_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 42, 391895]);

    // clipscore and pacscore report the mean of the per-image scores.
    for name in [
        "CLIP-S",
        "RefCLIP-S",
        "PAC-S",
        "RefPAC-S",
        "CIDEr",
        "Bleu_4",
    ] {
        let values: Vec<f64> = rows.iter().map(|r| r[name].as_f64().unwrap()).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        if name != "Bleu_4" {
            assert!(
                (mean - got[name]).abs() < 1e-12,
                "{name}: {mean} vs {got:?}"
            );
        }
        if name.contains("CLIP") || name.contains("PAC") {
            assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0), "{name}");
        }
    }

    // `score` with the same weights gives the same values, per image and corpus.
    for (weights, metric, name) in [(&f.clip, "clip-s", "CLIP-S"), (&f.pac, "pac-s", "PAC-S")] {
        let (corpus, score_rows) = score_json(&f, weights, metric);
        assert_eq!(corpus.len(), 2, "{corpus:?}");
        let score_rows = by_id(&score_rows);
        // `score`'s per-image file follows the results' order.
        assert_eq!(score_rows.len(), 3);
        for variant in [name.to_owned(), format!("Ref{name}")] {
            assert!(
                (corpus[&variant] - got[&variant]).abs() < 1e-6,
                "{variant}: score {} vs eval {}",
                corpus[&variant],
                got[&variant]
            );
            for r in &rows {
                let id = r["image_id"].as_u64().unwrap();
                let (a, b) = (
                    r[&variant].as_f64().unwrap(),
                    score_rows[&id][&variant].as_f64().unwrap(),
                );
                assert!((a - b).abs() < 1e-6, "{variant} of {id}: {a} vs {b}");
            }
        }
    }
    // The two models are different models: --pac is not --clip again.
    assert!(
        (got["CLIP-S"] / 2.5 - got["PAC-S"] / 2.0).abs() > 1e-6,
        "{got:?}"
    );

    // The same images as Parquet shards (key = image id) give the same values.
    let shards = f.dir.join("shards");
    let mut w = ShardWriter::try_new(&shards, "part", ShardWriterConfig::default()).unwrap();
    for (i, id) in IDS.iter().enumerate() {
        w.push(ShardRow {
            key: id.to_string(),
            image: image_bytes(i),
            image_path: None,
            captions: vec![],
            extra: vec![],
        })
        .unwrap();
    }
    w.finish().unwrap();
    let from_shards = eval_json(&f, &shards, &f.dir.join("eval_pi_shards.json"));
    for (k, v) in &got {
        assert!((from_shards[k] - v).abs() < 1e-9, "{k}: {from_shards:?}");
    }
}

#[test]
fn eval_refuses_half_given_clip_settings_and_spice() {
    let f = fixture();
    let base = ["eval", "--annotations", s(&f.ann), "--results", s(&f.res)];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = dicoflow(&args);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(o.stdout.is_empty());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&["--clip", s(&f.clip)]);
    assert!(err.contains("--clip needs the images"), "{err}");
    let err = run(&["--images", s(&f.images)]);
    assert!(err.contains("add --clip WEIGHTS"), "{err}");
    let err = run(&["--metrics", "bleu,spice"]);
    assert!(
        err.contains("SPICE is not offered") && err.contains("Stanford CoreNLP"),
        "{err}"
    );
    for name in ["RefPAC-S", "clip", "pac"] {
        let err = run(&["--metrics", &format!("bleu,{name}")]);
        assert!(err.contains("pass --images with --clip"), "{name}: {err}");
    }
    // A missing image is named, as `score` names it.
    let err = run(&with_clip(&f, &f.dir, &[]));
    assert!(
        err.contains("not found or unreadable") && err.contains("`1`"),
        "{err}"
    );
}

/// The number 1 and the string "1" are different COCO image ids but the same
/// key for `--images`: scoring one image for both would be silently wrong,
/// so `eval` and `score` refuse it, naming both ids.
#[test]
fn ids_1_and_string_1_are_refused_not_merged() {
    let f = fixture();
    let ann = json!({
        "images": [{"id": 1}, {"id": "1", "file_name": "forty-two.png"}],
        "annotations": [
            {"id": 0, "image_id": 1, "caption": "a red ball"},
            {"id": 1, "image_id": "1", "caption": "two blue squares"},
        ],
    });
    let results = json!([
        {"image_id": 1, "caption": "a red circle"},
        {"image_id": "1", "caption": "two squares"},
    ]);
    let (ann_path, res_path) = (f.dir.join("ann2.json"), f.dir.join("res2.json"));
    std::fs::write(&ann_path, ann.to_string()).unwrap();
    std::fs::write(&res_path, results.to_string()).unwrap();
    let eval = [
        "eval",
        "--annotations",
        s(&ann_path),
        "--results",
        s(&res_path),
    ];
    let eval = dicoflow(&with_clip(&f, &f.images, &eval));
    let score = dicoflow(&with_clip(
        &f,
        &f.images,
        &["score", "--results", s(&res_path)],
    ));
    // Results for the number alone: the annotations still name two images
    // by key '1', so the lookup could pick the other one's file.
    let one = f.dir.join("res_one.json");
    std::fs::write(
        &one,
        json!([{"image_id": 1, "caption": "a red circle"}]).to_string(),
    )
    .unwrap();
    let eval_one = ["eval", "--annotations", s(&ann_path), "--results", s(&one)];
    let eval_one = dicoflow(&with_clip(&f, &f.images, &eval_one));
    for (what, out) in [
        ("eval", eval),
        ("eval, id 1 only", eval_one),
        ("score", score),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} accepted ids 1 and \"1\"");
        assert!(
            err.contains("image ids 1 and \"1\"") && err.contains("same image key '1'"),
            "{what}: {err}"
        );
    }
}
