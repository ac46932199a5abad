//! COCO loading, validation and API behaviour on irregular input.

use std::collections::BTreeMap;
use std::path::Path;

use dicoflow::cli::eval::{run, CaptionArgs, EvalArgs};
use dicoflow::metrics::coco::{match_results, results_from_json_str};
use dicoflow::metrics::evaluate::score_tokenized;
use dicoflow::metrics::{Annotations, Evaluator, ImageId, Metric, MetricsError, PtbTokenizer};

fn p() -> &'static Path {
    Path::new("mem.json")
}

fn ann(text: &str) -> Annotations {
    Annotations::from_json_str(text, p()).unwrap()
}

const ANN: &str = r#"{"images": [{"id": 1}, {"id": "b"}, {"id": 3}],
 "annotations": [
  {"image_id": 1, "caption": "a dog runs on the grass"},
  {"image_id": 1, "caption": "a brown dog running"},
  {"image_id": "b", "caption": "a cat on a sofa"},
  {"image_id": "b", "caption": "a cat sleeping on a couch"},
  {"image_id": 3, "caption": "two people ride bikes"}]}"#;

#[test]
fn integer_and_string_ids_and_subset_evaluation() {
    let a = ann(ANN);
    assert_eq!(
        a.images,
        vec![ImageId::Int(1), ImageId::from("b"), ImageId::Int(3)]
    );
    // 1.0 is the integer id 1 (as in Python); image 3 has no result.
    let res = results_from_json_str(
        r#"[{"image_id": "b", "caption": "a cat on a sofa"}, {"image_id": 1.0, "caption": "a dog"}]"#,
        p(),
    )
    .unwrap();
    let samples = match_results(&a, &res).unwrap();
    // Annotation order, not results order.
    let ids: Vec<_> = samples.iter().map(|s| s.image_id.clone()).collect();
    assert_eq!(ids, vec![ImageId::Int(1), ImageId::from("b")]);
    let e = Evaluator::new().evaluate(&samples, &Metric::ALL).unwrap();
    assert_eq!(e.image_ids.len(), 2);
    let rouge = e.get("ROUGE_L").unwrap();
    assert_eq!(rouge.per_image[1], 1.0, "exact copy of a reference");
}

#[test]
fn string_and_integer_ids_are_distinct() {
    let a = ann(ANN);
    let res = results_from_json_str(r#"[{"image_id": "1", "caption": "x"}]"#, p()).unwrap();
    let err = match_results(&a, &res).unwrap_err();
    assert!(matches!(err, MetricsError::UnknownImage { .. }));
    assert_eq!(err.to_string(), "result for unknown image id \"1\"");
}

#[test]
fn unknown_image_id_is_named() {
    let a = ann(ANN);
    let res = results_from_json_str(r#"[{"image_id": 999, "caption": "x"}]"#, p()).unwrap();
    let err = match_results(&a, &res).unwrap_err();
    assert_eq!(err.to_string(), "result for unknown image id 999");
}

#[test]
fn duplicate_results_are_rejected() {
    let a = ann(ANN);
    let res = results_from_json_str(
        r#"[{"image_id": 1, "caption": "x"}, {"image_id": 1, "caption": "y"}]"#,
        p(),
    )
    .unwrap();
    let err = match_results(&a, &res).unwrap_err();
    assert!(matches!(
        err,
        MetricsError::DuplicateResult {
            id: ImageId::Int(1)
        }
    ));
}

#[test]
fn empty_results_and_images_without_references() {
    assert!(matches!(
        results_from_json_str("[]", p()),
        Err(MetricsError::EmptyResults { .. })
    ));
    let a = ann(
        r#"{"images": [{"id": 1}, {"id": 2}], "annotations": [{"image_id": 1, "caption": "a"}]}"#,
    );
    let res = results_from_json_str(r#"[{"image_id": 2, "caption": "x"}]"#, p()).unwrap();
    assert!(matches!(
        match_results(&a, &res),
        Err(MetricsError::NoReferences {
            id: ImageId::Int(2)
        })
    ));
}

#[test]
fn images_list_is_optional() {
    let a = ann(
        r#"{"annotations": [{"image_id": 5, "caption": "a"}, {"image_id": 4, "caption": "b"}]}"#,
    );
    assert_eq!(a.images, vec![ImageId::Int(5), ImageId::Int(4)]);
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let err = Annotations::from_json_str("{\"images\": [\n  {\"id\": 1},\n  {\"id\": }\n]}", p())
        .unwrap_err();
    match &err {
        MetricsError::Json { path, line, .. } => {
            assert_eq!(path, Path::new("mem.json"));
            assert_eq!(*line, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().starts_with("mem.json:3:"), "{err}");
    // Wrong types are reported the same way.
    let err = results_from_json_str(r#"[{"image_id": 1.5, "caption": "x"}]"#, p()).unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    let err = results_from_json_str(r#"[{"image_id": 1, "caption": null}]"#, p()).unwrap_err();
    assert!(matches!(err, MetricsError::Json { line: 1, .. }));
}

#[test]
fn missing_file_is_an_io_error() {
    let err = Annotations::load("/nonexistent/captions.json").unwrap_err();
    assert!(matches!(err, MetricsError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/captions.json"));
}

#[test]
fn empty_candidates_score_zero_and_copies_score_high() {
    let mut refs = BTreeMap::new();
    let mut cands = BTreeMap::new();
    for i in 0..4i64 {
        refs.insert(
            ImageId::Int(i),
            vec![
                format!("a photo of object number {i} on a table"),
                format!("object {i} sitting on a wooden table"),
            ],
        );
    }
    cands.insert(ImageId::Int(0), String::new());
    cands.insert(
        ImageId::Int(1),
        "a photo of object number 1 on a table".to_string(),
    );
    cands.insert(ImageId::Int(2), "...".to_string());
    cands.insert(ImageId::Int(3), "object".to_string());
    let e = Evaluator::new()
        .evaluate_maps(&refs, &cands, &Metric::ALL)
        .unwrap();
    for s in &e.scores {
        assert!(
            s.per_image[0].abs() < 1e-9,
            "{} of empty = {}",
            s.name,
            s.per_image[0]
        );
        assert!(
            s.per_image[2].abs() < 1e-9,
            "{} of punctuation only",
            s.name
        );
        assert!(s.per_image.iter().all(|v| v.is_finite()));
    }
    assert!((e.get("Bleu_4").unwrap().per_image[1] - 1.0).abs() < 1e-6);
    assert_eq!(e.get("ROUGE_L").unwrap().per_image[1], 1.0);
    assert!(e.get("CIDEr").unwrap().per_image[1] > 1.0);

    cands.insert(ImageId::Int(9), "x".to_string());
    assert!(matches!(
        Evaluator::new().evaluate_maps(&refs, &cands, &Metric::ALL),
        Err(MetricsError::UnknownImage {
            id: ImageId::Int(9)
        })
    ));
}

#[test]
fn single_image_cider_is_zero_as_in_the_toolkit() {
    // ln(number of images) = 0 makes every weight zero.
    let s = score_tokenized(
        &["a b c".to_string()],
        &[vec!["a b c".to_string()]],
        &[Metric::CiderD],
    )
    .unwrap();
    assert_eq!(s[0].corpus, 0.0);
}

#[test]
fn api_errors() {
    assert!(matches!(
        score_tokenized(&["a".to_string()], &[], &Metric::ALL),
        Err(MetricsError::LengthMismatch { .. })
    ));
    assert!(matches!(
        Evaluator::new().evaluate(&[], &Metric::ALL),
        Err(MetricsError::NoImages)
    ));
    assert!(matches!(
        "SPICE".parse::<Metric>(),
        Err(MetricsError::SpiceNotOffered)
    ));
    assert!(matches!(
        "spider".parse::<Metric>(),
        Err(MetricsError::UnknownMetric(_))
    ));
    assert_eq!("METEOR".parse::<Metric>().unwrap(), Metric::Meteor);
    assert_eq!("ROUGE-L".parse::<Metric>().unwrap(), Metric::RougeL);
}

#[test]
fn tokenizer_keeps_lowercased_brackets_like_the_toolkit() {
    let t = PtbTokenizer::new();
    assert_eq!(
        t.tokenize("A man (in red) isn't here."),
        "a man -lrb- in red -rrb- is n't here"
    );
    assert_eq!(t.tokenize(""), "");
    // A line break inside a caption is a space.
    assert_eq!(t.tokenize("two\nlines\r\nhere"), "two lines here");
}

#[test]
fn cli_writes_per_image_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ann_path = d.join("ann.json");
    let res_path = d.join("res.json");
    let out = d.join("per_image.json");
    std::fs::write(&ann_path, ANN).unwrap();
    std::fs::write(
        &res_path,
        r#"[{"image_id": 1, "caption": "a dog on grass"}, {"image_id": "b", "caption": "a cat"}]"#,
    )
    .unwrap();
    let args = EvalArgs {
        caption: CaptionArgs {
            annotations: ann_path.clone(),
            results: res_path.clone(),
            metrics: vec!["bleu".into(), "cider".into()],
            json: true,
            per_image: Some(out.clone()),
            meteor_data: None,
        },
        images: None,
        clip: None,
        clip_config: "ViT-B-32".into(),
        pac: None,
        pac_config: "ViT-B-32".into(),
        device: dicoflow::device::DeviceName::Auto,
        batch_size: 64,
    };
    run(&args).unwrap();
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["image_id"], 1);
    assert_eq!(rows[1]["image_id"], "b");
    assert!(rows[0]["Bleu_1"].as_f64().unwrap() > 0.0);
    assert!(rows[0].get("ROUGE_L").is_none());

    // METEOR without its data: an error that says how to get it.
    let bad = EvalArgs {
        caption: CaptionArgs {
            metrics: vec!["meteor".into()],
            per_image: None,
            meteor_data: Some(d.join("no-meteor-data")),
            ..args.caption
        },
        ..args
    };
    let err = format!("{:#}", run(&bad).unwrap_err());
    assert!(err.contains("make meteor-data"), "{err}");
}
