//! Irregular COCO inputs (issue 13's "Bad input"), against what the toolkit
//! does with them, as recorded by `tests/fixtures/bad_input/make_fixture.py`:
//! empty, whitespace-only and punctuation-only captions, `|||` and newlines
//! score as the toolkit scores them (METEOR included); unknown and duplicated
//! result ids, non-UTF-8 files and line breaks the toolkit misreads are
//! errors naming the id or the byte, never a panic.
//!
//! METEOR needs its data in `.meteor/` (`make meteor-data`, part of `make test`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::json_float as float;
use dicoflow::metrics::coco::{load_results, match_results, results_from_json_str};
use dicoflow::metrics::meteor;
use dicoflow::metrics::{Annotations, Evaluator, ImageId, Meteor, Metric, MetricsError};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    common::fixture("bad_input", name)
}

fn meteor_data() -> PathBuf {
    std::env::var_os(meteor::DATA_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".meteor"))
}

/// `dicoflow eval` of a results file of the fixture (all metrics).
fn eval_cli(results: &str) -> std::process::Output {
    let data = meteor_data();
    common::dicoflow_command()
        .args(["eval", "--annotations"])
        .arg(fixture("annotations.json"))
        .arg("--results")
        .arg(fixture(results))
        .args([
            "--metrics",
            "bleu,meteor,rouge,cider",
            "--json",
            "--meteor-data",
        ])
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn odd_captions_score_as_the_toolkit_scores_them() {
    let expected = common::json_file(&fixture("expected.json"));
    let ann = Annotations::load(fixture("annotations.json")).unwrap();
    let res = load_results(fixture("results.json")).unwrap();
    let samples = match_results(&ann, &res).unwrap();
    let ids: Vec<i64> = expected["image_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let got_ids: Vec<ImageId> = samples.iter().map(|s| s.image_id.clone()).collect();
    assert_eq!(
        got_ids,
        ids.iter().map(|&i| ImageId::Int(i)).collect::<Vec<_>>()
    );
    let m = Meteor::load(&meteor_data())
        .unwrap_or_else(|e| panic!("METEOR data is needed; run `make meteor-data`: {e}"));
    let evaluator = Evaluator::new().with_meteor(Arc::new(m));
    let metrics = [Metric::Bleu, Metric::Meteor, Metric::RougeL, Metric::CiderD];
    let e = evaluator.evaluate(&samples, &metrics).unwrap();
    let mut compared = 0;
    for (name, want) in expected["corpus"].as_object().unwrap() {
        let got = e.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(got.corpus, float(want), "{name} corpus");
        let per_image = expected["per_image"][name].as_array().unwrap();
        assert_eq!(got.per_image.len(), per_image.len());
        for (i, (g, w)) in got.per_image.iter().zip(per_image).enumerate() {
            assert_eq!(*g, float(w), "{name} of image {}", ids[i]);
            compared += 1;
        }
    }
    assert_eq!(compared, 7 * ids.len());

    // The same through the command line, with nothing printed on stderr.
    let o = eval_cli("results.json");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed: serde_json::Map<String, Value> = serde_json::from_slice(&o.stdout).unwrap();
    for (name, want) in expected["corpus"].as_object().unwrap() {
        assert_eq!(printed[name].as_f64().unwrap(), float(want), "{name}");
    }
}

/// What the toolkit did with a refused file (from errors.json).
fn toolkit_error(name: &str) -> Value {
    common::json_file(&fixture("errors.json"))[name].clone()
}

/// Runs `eval` on a file the toolkit does not score correctly: an error whose
/// message contains every one of `needles`, and no panic.
fn refused(results: &str, needles: &[&str]) {
    let o = eval_cli(results);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{results} was scored");
    assert!(o.stdout.is_empty());
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{results}: no `{n}` in: {err}");
    }
}

#[test]
fn unknown_and_duplicated_ids_are_refused_naming_the_id() {
    // The toolkit: loadRes asserts the result ids are annotation ids.
    let tk = toolkit_error("unknown_id.json");
    assert_eq!(tk["type"], "AssertionError");
    assert_eq!(
        tk["message"],
        "Results do not correspond to current coco set"
    );
    // The message names the results file, not only the id.
    refused(
        "unknown_id.json",
        &["unknown image id 999", "unknown_id.json"],
    );
    // The toolkit keeps both and then fails Bleu's one-hypothesis assertion.
    let tk = toolkit_error("duplicate_id.json");
    assert_eq!(tk["type"], "AssertionError");
    assert_eq!(tk["where"], "compute_score");
    refused(
        "duplicate_id.json",
        &["more than one result for image id 503"],
    );
}

#[test]
fn non_utf8_files_are_refused_at_the_toolkit_s_byte_position() {
    let tk = toolkit_error("non_utf8.json");
    assert_eq!(tk["type"], "UnicodeDecodeError");
    let msg = tk["message"].as_str().unwrap();
    assert!(msg.contains("position 37"), "{msg}");
    refused(
        "non_utf8.json",
        &["non_utf8.json", "not UTF-8", "position 37"],
    );
    let err = load_results(fixture("non_utf8.json")).unwrap_err();
    assert!(
        matches!(err, MetricsError::NotUtf8 { position: 37, .. }),
        "{err:?}"
    );
}

#[test]
fn line_breaks_the_toolkit_misreads_are_refused_naming_the_image() {
    // The toolkit scores this file without error, but from the `\r` on every
    // candidate is scored against the next image's references.
    let tk = toolkit_error("carriage_return.json");
    assert!(tk["type"].is_null());
    let scored: Vec<String> = common::json_strings(&tk["scored_candidates"]);
    let at = |id: i64| {
        tk["image_ids"]
            .as_array()
            .unwrap()
            .iter()
            .position(|v| v.as_i64() == Some(id))
            .unwrap()
    };
    assert_eq!(scored[at(514)], "a giraffe");
    assert_eq!(scored[at(515)], "near a tree");
    refused(
        "carriage_return.json",
        &["result caption of image id 514", "U+000D (carriage return)"],
    );

    // References too, and every line break Java's tokenizer reads as one.
    let ann = Annotations::load(fixture("annotations.json")).unwrap();
    for c in ['\r', '\u{0B}', '\u{0C}', '\u{85}', '\u{2028}', '\u{2029}'] {
        let mut a = ann.clone();
        a.captions.get_mut(&ImageId::Int(501)).unwrap()[1] = format!("dogs{c}playing");
        let res = results_from_json_str(
            r#"[{"image_id": 501, "caption": "two dogs"}]"#,
            Path::new("mem.json"),
        )
        .unwrap();
        let err = match_results(&a, &res).unwrap_err();
        match &err {
            MetricsError::LineBreakInCaption { id, role, .. } => {
                assert_eq!((id, *role), (&ImageId::Int(501), "reference"));
            }
            other => panic!("{c:?}: {other:?}"),
        }
        assert!(
            err.to_string().contains(&format!("U+{:04X}", c as u32)),
            "{err}"
        );
    }
    // `\n` is a space to the toolkit: accepted (scored in the fixture above).
    let res = results_from_json_str(
        r#"[{"image_id": 501, "caption": "two\ndogs"}]"#,
        Path::new("mem.json"),
    )
    .unwrap();
    assert!(match_results(&ann, &res).is_ok());
}
