//! The diagnostics' parts: controlled corruptions that the oracle really judges
//! worse, Kendall τ-b as scipy computes it, and the accuracy / rank agreement of
//! an evaluator with the oracle.

use std::convert::Infallible;

use dicoflow::data::synth::{
    corrupt, judge, reference_captions, sample_scene, tokenize, Corruption, Scene, WorldConfig,
};
use dicoflow::metrics::quality::{
    corruption_accuracy, kendall_tau_b, oracle_quality, rank_agreement,
};
use dicoflow::rng::Rng;

#[derive(serde::Deserialize)]
struct KendallCase {
    x: Vec<f64>,
    y: Vec<f64>,
    tau_b: Option<f64>,
}

#[derive(serde::Deserialize)]
struct KendallFixture {
    cases: Vec<KendallCase>,
}

#[test]
fn kendall_tau_b_equals_scipy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kendall/kendall.json"
    );
    let fx: KendallFixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(fx.cases.len(), 16);
    for (i, case) in fx.cases.iter().enumerate() {
        let tau = kendall_tau_b(&case.x, &case.y).unwrap();
        match (tau, case.tau_b) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "case {i}: {a} vs scipy {b}"),
            (None, None) => {}
            (a, b) => panic!("case {i}: {a:?} vs scipy {b:?}"),
        }
    }
    assert!(kendall_tau_b(&[1.0, 2.0], &[1.0]).is_err());
}

/// Scenes of 1..=5 objects with their first reference caption.
fn world(n: usize) -> (Vec<Scene>, Vec<String>) {
    let (mut scenes, mut captions) = (Vec::new(), Vec::new());
    for i in 0..n {
        let objects = 1 + i % 5;
        let cfg = WorldConfig {
            min_objects: objects,
            max_objects: objects,
            ..Default::default()
        };
        let mut rng = Rng::new(500 + i as u64);
        let scene = sample_scene(&mut rng, &cfg);
        captions.push(reference_captions(&scene, &mut rng, 1).remove(0));
        scenes.push(scene);
    }
    (scenes, captions)
}

#[test]
fn every_corruption_makes_the_oracle_judge_worse() {
    let (scenes, captions) = world(200);
    let mut made = [0usize; 7];
    for (i, (scene, caption)) in scenes.iter().zip(&captions).enumerate() {
        let mut rng = Rng::new(i as u64);
        let truth = judge(scene, caption);
        assert!(truth.grammatical && truth.precision == 1.0, "{caption}");
        for (k, kind) in Corruption::ALL.into_iter().enumerate() {
            let Some(bad) = corrupt(scene, caption, kind, &mut rng) else {
                continue;
            };
            made[k] += 1;
            let j = judge(scene, &bad);
            assert_ne!(bad, *caption);
            if kind.is_factual() {
                assert!(j.grammatical, "{kind:?}: `{bad}` from `{caption}`");
                assert!(j.precision < 1.0, "{kind:?}: `{bad}` from `{caption}`");
                // One fact changed: the caption keeps its length but for a position
                // phrase of another length.
                if kind != Corruption::Position {
                    assert_eq!(tokenize(&bad).len(), tokenize(caption).len(), "{bad}");
                }
            } else {
                assert!(!j.grammatical, "{kind:?}: `{bad}` from `{caption}`");
            }
            assert!(oracle_quality(&j) < oracle_quality(&truth));
        }
    }
    // Colour, shape, word order, repeat and truncation exist for nearly every caption;
    // a relation only where the caption states one, a position where it names one.
    let n = captions.len();
    for (k, kind) in Corruption::ALL.into_iter().enumerate() {
        let floor = match kind {
            Corruption::Relation => n / 10,
            Corruption::Position => n / 2,
            _ => n * 9 / 10,
        };
        assert!(made[k] >= floor, "{kind:?}: {} of {n}", made[k]);
    }
}

#[test]
fn corruption_accuracy_of_the_oracle_is_one_and_of_a_bag_of_words_scorer_fails_word_order() {
    let (scenes, captions) = world(60);
    let oracle = |i: usize, texts: &[String]| -> Result<Vec<f64>, Infallible> {
        Ok(texts
            .iter()
            .map(|t| oracle_quality(&judge(&scenes[i], t)))
            .collect())
    };
    let results = corruption_accuracy(&scenes, &captions, 3, oracle).unwrap();
    assert_eq!(results.len(), 7);
    for r in &results {
        assert_eq!(r.accuracy(), Some(1.0), "{r:?}");
        assert_eq!(r.compared + r.impossible, 60, "{r:?}");
    }
    // Same seed, same corruptions.
    assert_eq!(
        corruption_accuracy(&scenes, &captions, 3, oracle).unwrap(),
        results
    );
    // A scorer blind to word order: the oracle quality of the sorted tokens of the
    // true caption if the text has the same tokens, else 0. Shuffles tie with the
    // truth (a tie is not a preference); every other corruption changes the tokens.
    let bag = |i: usize, texts: &[String]| -> Result<Vec<f64>, Infallible> {
        let mut truth = tokenize(&captions[i]);
        truth.sort();
        Ok(texts
            .iter()
            .map(|t| {
                let mut tokens = tokenize(t);
                tokens.sort();
                (tokens == truth) as u8 as f64
            })
            .collect())
    };
    for r in corruption_accuracy(&scenes, &captions, 3, bag).unwrap() {
        let expected = if r.kind == Corruption::WordOrder {
            0.0
        } else {
            1.0
        };
        assert_eq!(r.accuracy(), Some(expected), "{r:?}");
    }
}

#[test]
fn rank_agreement_is_one_for_the_oracle_and_minus_one_reversed() {
    let (scenes, captions) = world(30);
    let mut candidates = Vec::new();
    for (i, (scene, caption)) in scenes.iter().zip(&captions).enumerate() {
        let mut rng = Rng::new(i as u64);
        let mut c = vec![caption.clone()];
        for kind in [Corruption::Colour, Corruption::Truncate] {
            c.extend(corrupt(scene, caption, kind, &mut rng));
        }
        candidates.push(c);
    }
    let quality: Vec<Vec<f64>> = scenes
        .iter()
        .zip(&candidates)
        .map(|(s, c)| c.iter().map(|t| oracle_quality(&judge(s, t))).collect())
        .collect();
    let same = rank_agreement(&scenes, &candidates, &quality).unwrap();
    assert_eq!(same.images + same.undefined, 30);
    assert!(same.images >= 25, "{same:?}");
    assert!((same.mean_tau.unwrap() - 1.0).abs() < 1e-12);
    let reversed: Vec<Vec<f64>> = quality
        .iter()
        .map(|q| q.iter().map(|v| -v).collect())
        .collect();
    let opposite = rank_agreement(&scenes, &candidates, &reversed).unwrap();
    assert!((opposite.mean_tau.unwrap() + 1.0).abs() < 1e-12);
    assert!(rank_agreement(&scenes, &candidates, &quality[..3]).is_err());
}
