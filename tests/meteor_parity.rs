//! METEOR parity with pycocoevalcap's own METEOR (meteor-1.5.jar `-l en
//! -norm` behind the `Meteor` wrapper) on the fixtures made by
//! `tests/fixtures/meteor/make_fixture.py`.
//!
//! Needs METEOR's data in `.meteor/` (or `$DICOFLOW_METEOR_DATA`): `make
//! meteor-data` (part of `make test`) puts it there. Without it these tests
//! fail, saying so.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use common::{json_float as float, json_strings as strings};
use dicoflow::metrics::coco::{load_results, match_results};
use dicoflow::metrics::meteor::{self, MeteorError};
use dicoflow::metrics::{Annotations, Evaluator, Meteor, Metric, MetricsError, PtbTokenizer};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    common::fixture("meteor", name)
}

fn read_json(name: &str) -> Value {
    common::json_file(&fixture(name))
}

fn data_dir() -> PathBuf {
    std::env::var_os(meteor::DATA_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".meteor"))
}

fn meteor() -> Arc<Meteor> {
    static M: OnceLock<Arc<Meteor>> = OnceLock::new();
    M.get_or_init(|| match Meteor::load(&data_dir()) {
        Ok(m) => Arc::new(m),
        Err(e) => panic!("METEOR data is needed for this test; run `make meteor-data`: {e}"),
    })
    .clone()
}

#[test]
fn snowball_english_stems_match_the_jar() {
    let f = read_json("stems.json");
    let words = strings(&f["words"]);
    let stems = strings(&f["stems"]);
    assert!(words.len() > 200);
    let st = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
    let diff: Vec<String> = words
        .iter()
        .zip(&stems)
        .filter(|(w, s)| st.stem(w) != s.as_str())
        .map(|(w, s)| format!("{w}: jar {s}, ours {}", st.stem(w)))
        .collect();
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}

#[test]
fn score_lines_match_the_jar_including_normalization() {
    let f = read_json("direct.json");
    let m = meteor();
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() > 50);
    let mut total = dicoflow::metrics::meteor::MeteorStats::default();
    let mut bad = Vec::new();
    for c in cases {
        let refs = strings(&c["references"]);
        let hyp = c["hypothesis"].as_str().unwrap();
        let stats = m.stats(hyp, &refs).unwrap();
        let want_score = float(&c["score"]);
        if stats.to_line() != c["stats"].as_str().unwrap()
            || (stats.score() - want_score).abs() > 1e-6
        {
            bad.push(format!(
                "{hyp:?} vs {refs:?}\n  jar:  {} -> {want_score}\n  ours: {} -> {}",
                c["stats"].as_str().unwrap(),
                stats.to_line(),
                stats.score()
            ));
        }
        total.add(&stats);
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
    assert!((total.score() - float(&f["aggregate"])).abs() <= 1e-6);
}

#[test]
fn evaluation_matches_the_toolkit() {
    let expected = read_json("expected.json");
    let ann = Annotations::load(fixture("annotations.json")).unwrap();
    let res = load_results(fixture("results.json")).unwrap();
    let samples = match_results(&ann, &res).unwrap();
    let ids: Vec<Value> = expected["image_ids"].as_array().unwrap().clone();
    assert_eq!(samples.len(), ids.len());
    assert!(samples.len() > 200);

    // The statistics of every image, from the toolkit's tokenization.
    let (tok_cands, tok_refs) = PtbTokenizer::new().tokenize_samples(&samples);
    let m = meteor();
    let want_stats = strings(&expected["stats"]);
    let mut bad = Vec::new();
    for (k, s) in samples.iter().enumerate() {
        let r = &tok_refs[k];
        let got = m.stats(&tok_cands[k], r).unwrap().to_line();
        if got != want_stats[k] {
            bad.push(format!(
                "image {}: {:?} vs {r:?}\n  jar:  {}\n  ours: {got}",
                s.image_id, tok_cands[k], want_stats[k]
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        samples.len(),
        bad.join("\n")
    );

    // The values `COCOEvalCap.evaluate` reports.
    let eval = Evaluator::new()
        .with_meteor(m)
        .evaluate(&samples, &[Metric::Meteor, Metric::Bleu])
        .unwrap();
    let names: Vec<&str> = eval.scores.iter().map(|s| s.name).collect();
    assert_eq!(names, ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR"]);
    let got = eval.get("METEOR").unwrap();
    let want = float(&expected["corpus"]);
    assert!(
        (got.corpus - want).abs() <= 1e-6,
        "corpus ours {} toolkit {want}",
        got.corpus
    );
    let want_pi: Vec<f64> = expected["per_image"]
        .as_array()
        .unwrap()
        .iter()
        .map(float)
        .collect();
    let identical = got
        .per_image
        .iter()
        .zip(&want_pi)
        .filter(|(a, b)| (*a - *b).abs() <= 1e-6)
        .count();
    assert_eq!(identical, want_pi.len(), "per-image METEOR within 1e-6");
}

#[test]
fn missing_data_is_an_error_that_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = Meteor::load(dir.path()).unwrap_err();
    assert!(matches!(err, MeteorError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("make meteor-data"), "{err}");

    // Without METEOR loaded, asking for it is an error; other metrics run.
    let ann = Annotations::load(fixture("annotations.json")).unwrap();
    let res = load_results(fixture("results.json")).unwrap();
    let samples = match_results(&ann, &res).unwrap();
    let e = Evaluator::new().evaluate(&samples, &[Metric::Meteor, Metric::CiderD]);
    assert!(matches!(e, Err(MetricsError::MeteorNotLoaded)), "{e:?}");
    assert!(Evaluator::new().evaluate(&samples, &Metric::ALL).is_ok());
}

#[test]
fn cli_meteor_without_data_fails_with_instructions() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::dicoflow_command()
        .args(["eval", "--annotations"])
        .arg(fixture("annotations.json"))
        .arg("--results")
        .arg(fixture("results.json"))
        .args(["--metrics", "bleu,meteor", "--meteor-data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("make meteor-data"), "{err}");
}

#[test]
fn line_breaks_are_refused() {
    let e = meteor().stats("a\nb", &["a b".to_string()]).unwrap_err();
    assert!(matches!(e, MeteorError::LineBreak { .. }));
}
