//! Parity of the CLIP tokenizer with the reference `SimpleTokenizer`
//! (fixture: tests/fixtures/clip/tokenizer_cases.json, made by gen_tokenizer_fixture.py).

mod common;

use std::sync::OnceLock;

use dicoflow::text::clip_tokenizer::{CONTEXT_LENGTH, EOT_TOKEN, SOT_TOKEN, VOCAB_SIZE};
use dicoflow::text::{ClipTokenizer, TokenizerError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<i64>,
    tokens77: Vec<i64>,
    tokens8: Vec<i64>,
    decoded: String,
}

#[derive(Deserialize)]
struct Fixture {
    sot: i64,
    eot: i64,
    vocab_size: usize,
    cases: Vec<Case>,
}

fn tokenizer() -> &'static ClipTokenizer {
    static TOK: OnceLock<ClipTokenizer> = OnceLock::new();
    TOK.get_or_init(|| ClipTokenizer::openai().expect("bundled vocabulary loads"))
}

fn fixture() -> Fixture {
    serde_json::from_value(common::json_file(&common::fixture(
        "clip",
        "tokenizer_cases.json",
    )))
    .unwrap()
}

#[test]
fn special_ids_and_vocab_size_match_reference() {
    let fx = fixture();
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), fx.vocab_size);
    assert_eq!(tok.vocab_size(), VOCAB_SIZE);
    assert_eq!(tok.sot_token(), fx.sot);
    assert_eq!(tok.eot_token(), fx.eot);
    assert_eq!((SOT_TOKEN, EOT_TOKEN), (fx.sot, fx.eot));
}

#[test]
fn encode_matches_reference_on_every_case() {
    let fx = fixture();
    let tok = tokenizer();
    let mut failures = Vec::new();
    for case in &fx.cases {
        let ids = tok.encode(&case.text);
        if ids != case.ids {
            failures.push(format!(
                "{:?}\n  ours {:?}\n  ref  {:?}",
                case.text, ids, case.ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn batch_encoding_pads_and_truncates_like_reference() {
    let fx = fixture();
    let tok = tokenizer();
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.text.as_str()).collect();
    for (ctx, pick) in [(CONTEXT_LENGTH, 0), (8, 1)] {
        let t = tok.encode_batch(&texts, ctx).unwrap();
        assert_eq!(t.size(), vec![texts.len() as i64, ctx as i64]);
        assert_eq!(t.kind(), tch::Kind::Int64);
        let rows: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&t).unwrap();
        for (row, case) in rows.iter().zip(&fx.cases) {
            let expected = if pick == 0 {
                &case.tokens77
            } else {
                &case.tokens8
            };
            assert_eq!(row, expected, "context {ctx}, text {:?}", case.text);
        }
    }
    // The long case really hits truncation and keeps EOT last.
    let long = fx
        .cases
        .iter()
        .find(|c| c.ids.len() > 100)
        .expect("a long case");
    let row = tok.encode_with_special(&long.text, CONTEXT_LENGTH).unwrap();
    assert_eq!(row.len(), CONTEXT_LENGTH);
    assert_eq!(row[0], SOT_TOKEN);
    assert_eq!(row[CONTEXT_LENGTH - 1], EOT_TOKEN);
}

#[test]
fn decode_matches_reference() {
    let fx = fixture();
    let tok = tokenizer();
    for case in &fx.cases {
        assert_eq!(
            tok.decode(&case.ids).unwrap(),
            case.decoded,
            "text {:?}",
            case.text
        );
    }
}

#[test]
fn decode_caption_strips_special_and_padding() {
    let tok = tokenizer();
    let mut ids = tok
        .encode_with_special("A dog runs on the beach.", CONTEXT_LENGTH)
        .unwrap();
    ids.extend([49408, 49408]); // a captioner's pad id, outside the CLIP vocabulary
    assert_eq!(tok.decode_caption(&ids), "a dog runs on the beach .");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let tok = tokenizer();
    assert!(matches!(
        tok.decode(&[1, 49408]),
        Err(TokenizerError::UnknownId { id: 49408, .. })
    ));
    assert!(matches!(
        tok.decode(&[-3]),
        Err(TokenizerError::UnknownId { id: -3, .. })
    ));
    assert!(matches!(
        tok.encode_batch(&["x"], 0),
        Err(TokenizerError::ZeroContextLength)
    ));
    let empty: [&str; 0] = [];
    assert_eq!(tok.encode_batch(&empty, 77).unwrap().size(), vec![0, 77]);
}

#[test]
fn merges_file_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let short = dir.join("short.txt");
    std::fs::write(&short, "#version: 0.2\ni n\nt h\n").unwrap();
    assert!(matches!(
        ClipTokenizer::from_file(&short),
        Err(TokenizerError::TooFewMerges { found: 2, .. })
    ));
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "#version: 0.2\ni n\nthree parts here\n").unwrap();
    assert!(matches!(
        ClipTokenizer::from_file(&bad),
        Err(TokenizerError::BadMergeLine { line: 3, .. })
    ));
    assert!(matches!(
        ClipTokenizer::from_file(dir.join("absent.txt.gz")),
        Err(TokenizerError::Io { .. })
    ));
}
