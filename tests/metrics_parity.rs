//! Parity with pycocoevalcap on the fixtures made by
//! `tests/fixtures/metrics/make_fixture.py`.

mod common;

use std::path::PathBuf;

use common::{json_float as float, json_strings as strings};
use dicoflow::metrics::coco::{load_results, match_results};
use dicoflow::metrics::{Annotations, Evaluator, ImageId, Metric, PtbTokenizer};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    common::fixture("metrics", name)
}

fn read_json(name: &str) -> Value {
    common::json_file(&fixture(name))
}

#[test]
fn ptb_tokenization_matches_toolkit_on_varied_strings() {
    let cases = read_json("ptb_cases.json");
    let inputs = strings(&cases["inputs"]);
    let expected = strings(&cases["tokens"]);
    assert!(inputs.len() > 150);
    let got = PtbTokenizer::new().tokenize_batch(&inputs);
    let mismatches: Vec<String> = inputs
        .iter()
        .zip(&expected)
        .zip(&got)
        .filter(|((_, e), g)| e != g)
        .map(|((i, e), g)| format!("{i:?}\n  toolkit: {e:?}\n  ours:    {g:?}"))
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn evaluation_matches_toolkit() {
    let expected = read_json("expected.json");
    let ann = Annotations::load(fixture("annotations.json")).unwrap();
    let res = load_results(fixture("results.json")).unwrap();
    let samples = match_results(&ann, &res).unwrap();

    // Same images in the same order as the toolkit.
    let ids: Vec<ImageId> = serde_json::from_value(expected["image_ids"].clone()).unwrap();
    let ours: Vec<ImageId> = samples.iter().map(|s| s.image_id.clone()).collect();
    assert_eq!(ours, ids);
    assert_eq!(ids.len(), ann.images.len() - 1, "one image has no result");

    // Tokenization exactly as the toolkit's two tokenizer runs.
    let (tok_cands, tok_refs) = PtbTokenizer::new().tokenize_samples(&samples);
    let exp_refs: Vec<Vec<String>> = expected["tokenized_references"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    assert_eq!(tok_refs, exp_refs);
    assert_eq!(tok_cands, strings(&expected["tokenized_candidates"]));

    let eval = Evaluator::new().evaluate(&samples, &Metric::ALL).unwrap();
    let names = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"];
    let got_names: Vec<&str> = eval.scores.iter().map(|s| s.name).collect();
    assert_eq!(got_names, names);
    let (mut max_diff, mut identical, mut total) = (0.0f64, 0usize, 0usize);
    for name in names {
        let s = eval.get(name).unwrap();
        let want = float(&expected["corpus"][name]);
        assert!(
            (s.corpus - want).abs() <= 1e-6,
            "{name}: ours {} toolkit {want}",
            s.corpus
        );
        max_diff = max_diff.max((s.corpus - want).abs());
        let per: Vec<f64> = expected["per_image"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(float)
            .collect();
        assert_eq!(per.len(), s.per_image.len());
        for (k, (a, b)) in s.per_image.iter().zip(&per).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6,
                "{name} image {}: ours {a} toolkit {b}",
                ids[k]
            );
            identical += usize::from(a.to_bits() == b.to_bits());
            total += 1;
            max_diff = max_diff.max((a - b).abs());
        }
    }
    eprintln!(
        "largest difference from the toolkit: {max_diff:e}; \
         {identical} of {total} per-image values bit-identical"
    );
}
