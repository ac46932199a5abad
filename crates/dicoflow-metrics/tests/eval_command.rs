//! The `dicoflow-eval` command as a whole process: its JSON and per-image file
//! against pycocoevalcap's values on the fixture made by
//! tests/fixtures/metrics/make_fixture.py (the main crate's fixtures), and
//! its errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/metrics")
        .join(name)
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A value of expected.json (written with Python's `repr` as a string).
fn float(v: &serde_json::Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dicoflow-eval"))
        .args(args)
        .output()
        .unwrap()
}

const NAMES: [&str; 6] = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"];

#[test]
fn json_and_per_image_file_match_the_toolkit() {
    let dir = tempfile::tempdir().unwrap();
    let per_image = dir.path().join("per_image.json");
    let ann = fixture("annotations.json");
    let res = fixture("results.json");
    let out = eval(&[
        "--annotations",
        ann.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--json",
        "--per-image",
        per_image.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = read_json(&fixture("expected.json"));
    let corpus: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let corpus = corpus.as_object().unwrap();
    assert_eq!(corpus.len(), NAMES.len(), "{corpus:?}");
    for name in NAMES {
        let (got, want) = (
            corpus[name].as_f64().unwrap(),
            float(&expected["corpus"][name]),
        );
        assert!(
            (got - want).abs() <= 1e-9,
            "{name}: ours {got} toolkit {want}"
        );
    }

    let rows = read_json(&per_image);
    let rows = rows.as_array().unwrap();
    let ids = expected["image_ids"].as_array().unwrap();
    assert_eq!(rows.len(), ids.len());
    for (k, (row, id)) in rows.iter().zip(ids).enumerate() {
        assert_eq!(&row["image_id"], id);
        assert_eq!(row.as_object().unwrap().len(), NAMES.len() + 1);
        for name in NAMES {
            let (got, want) = (
                row[name].as_f64().unwrap(),
                float(&expected["per_image"][name][k]),
            );
            assert!(
                (got - want).abs() <= 1e-9,
                "{name} image {id}: ours {got} toolkit {want}"
            );
        }
    }
}

#[test]
fn the_table_names_every_metric_and_the_image_count() {
    let ann = fixture("annotations.json");
    let res = fixture("results.json");
    let out = eval(&[
        "--annotations",
        ann.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
        "--metrics",
        "cider,bleu",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Header, Bleu_1..4 and CIDEr in the toolkit's order, the count.
    assert_eq!(lines.len(), 7, "{text}");
    assert!(lines[1].starts_with("Bleu_1"), "{text}");
    assert!(lines[5].starts_with("CIDEr"), "{text}");
    assert_eq!(lines[6], "evaluated 31 of 32 annotated images");
}

#[test]
fn errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let ann = fixture("annotations.json");
    let res = fixture("results.json");
    let base = [
        "--annotations",
        ann.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
    ];
    let stderr = |extra: &[&str]| {
        let out = eval(&[&base[..], extra].concat());
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty());
        String::from_utf8(out.stderr).unwrap()
    };

    let err = stderr(&["--metrics", "bleu,pac-s"]);
    assert!(
        err.contains("dicoflow eval") && err.contains("--pac"),
        "{err}"
    );

    let err = stderr(&["--metrics", "spice"]);
    assert!(err.contains("spice"), "{err}");

    // Each cause once: a missing file's OS error and a JSON error's
    // position are not repeated by the cause chain.
    let out = eval(&[
        "--annotations",
        dir.path().join("missing.json").to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
    ]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("missing.json"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"images\": [1,").unwrap();
    let out = eval(&[
        "--annotations",
        bad.to_str().unwrap(),
        "--results",
        res.to_str().unwrap(),
    ]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.json:1:13: invalid type"), "{err}");
    assert!(!err.contains("column 13"), "{err}");

    // One metric named twice would print its columns twice and duplicate
    // the JSON keys.
    let err = stderr(&["--metrics", "bleu,rouge,bleu"]);
    assert!(err.contains("twice") && err.contains("bleu"), "{err}");
    let err = stderr(&["--metrics", "cider,cider-d"]);
    assert!(err.contains("twice") && err.contains("CIDEr"), "{err}");

    let missing = dir.path().join("no-meteor-data");
    let err = stderr(&[
        "--metrics",
        "meteor",
        "--meteor-data",
        missing.to_str().unwrap(),
    ]);
    assert!(err.contains("make meteor-data"), "{err}");

    // Results that are not a list of results: the file is named.
    let out = eval(&[
        "--annotations",
        ann.to_str().unwrap(),
        "--results",
        ann.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("error: ") && err.contains("annotations.json"),
        "{err}"
    );
}
