//! CLIP-S / PAC-S / Ref- variants against direct formula computations.

use dicoflow::model::clip::{Clip, ClipConfig};
use dicoflow::reward::clip_score::{self, harmonic_mean, ref_similarity, score_embeddings};
use dicoflow::reward::{ClipScorer, RewardError, ScoreConfig};
use dicoflow::text::ClipTokenizer;
use tch::{nn, Device, Kind, Tensor};

fn t2(rows: &[[f32; 3]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).reshape([rows.len() as i64, 3])
}

fn vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double)).unwrap()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

#[test]
fn scores_on_known_embeddings() {
    let img = t2(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]);
    // cos = 1, -1, 1/√2 (norms differ on purpose).
    let txt = t2(&[[2.0, 0.0, 0.0], [0.0, -3.0, 0.0], [1.0, 0.0, 0.0]]);
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let clip_s = score_embeddings(&img, &txt, &ScoreConfig::clip_s()).unwrap();
    close(&vec(&clip_s), &[2.5, 0.0, 2.5 * h]);
    let pac_s = score_embeddings(&img, &txt, &ScoreConfig::pac_s()).unwrap();
    close(&vec(&pac_s), &[2.0, 0.0, 2.0 * h]);
    let unclipped = ScoreConfig::pac_s().with_clipping(false);
    close(
        &vec(&score_embeddings(&img, &txt, &unclipped).unwrap()),
        &[2.0, -2.0, 2.0 * h],
    );
    let dico = ScoreConfig::dico_reward();
    assert_eq!(
        (dico.weight, dico.prefix.as_deref(), dico.clip_negative),
        (2.0, None, false)
    );

    // References: candidate 0 has two (cos 0 and cos 1/√2), candidate 1 one (cos -1),
    // candidate 2 one (cos 1).
    let refs = t2(&[
        [0.0, 0.0, 1.0],
        [1.0, 0.0, 1.0],
        [0.0, 5.0, 0.0],
        [1.0, 0.0, 0.0],
    ]);
    let owner = Tensor::from_slice(&[0i64, 0, 1, 2]);
    let r = ref_similarity(&txt, &refs, &owner).unwrap();
    close(&vec(&r), &[h, -1.0, 1.0]);
    let hm = harmonic_mean(&clip_s, &r).unwrap();
    let s = [2.5, 0.0, 2.5 * h];
    let rr = [h, -1.0, 1.0];
    let expect: Vec<f64> = s
        .iter()
        .zip(&rr)
        .map(|(s, r)| {
            if s + r == 0.0 {
                0.0
            } else {
                2.0 * s * r / (s + r)
            }
        })
        .collect();
    close(&vec(&hm), &expect);
    // S + R = 0 gives 0, not NaN.
    let zero = harmonic_mean(
        &Tensor::from_slice(&[1.0f32]),
        &Tensor::from_slice(&[-1.0f32]),
    )
    .unwrap();
    close(&vec(&zero), &[0.0]);
    // A candidate without references is an error.
    let err =
        ref_similarity(&txt, &refs.narrow(0, 0, 2), &Tensor::from_slice(&[0i64, 0])).unwrap_err();
    assert!(matches!(err, RewardError::BadInput { .. }), "{err}");
    assert!(ref_similarity(&txt, &refs, &Tensor::from_slice(&[0i64, 0, 1, 3])).is_err());
}

fn tiny_clip() -> Clip {
    // Tensors are reference-counted: the model keeps its weights after the store drops.
    let vs = nn::VarStore::new(Device::Cpu);
    Clip::new(vs.root(), &ClipConfig::tiny()).unwrap()
}

#[test]
fn scorer_matches_direct_computation() {
    let tok = ClipTokenizer::openai().unwrap();
    let mut scorer = ClipScorer::new(tiny_clip(), tok.clone(), ScoreConfig::clip_s());
    let clip = scorer.clip();
    let images = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let captions = ["a red circle", "two blue squares", "a red circle"];
    let keys = ["img0", "img1", "img1"];
    let refs = vec![
        vec!["a circle", "something red"],
        vec!["blue squares"],
        vec!["a dog", "a circle", "a cat"],
    ];
    // Direct: embeddings of prefixed texts and of the images, formula by hand.
    let direct = |prefix: &str, w: f64, clip_neg: bool| -> (Vec<f64>, Vec<f64>) {
        tch::no_grad(|| {
            let img = clip.encode_image_normalized(&images).unwrap();
            let enc = |t: &[String]| {
                clip.encode_text_normalized(&tok.encode_batch(t, 77).unwrap())
                    .unwrap()
            };
            let texts: Vec<String> = captions.iter().map(|c| format!("{prefix}{c}")).collect();
            let txt = enc(&texts);
            let mut s = Vec::new();
            let mut hm = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                let row = if *key == "img0" { 0 } else { 1 };
                let cos = img.get(row).dot(&txt.get(i as i64)).double_value(&[]);
                let si = w * if clip_neg { cos.max(0.0) } else { cos };
                let rtexts: Vec<String> = refs[i].iter().map(|r| format!("{prefix}{r}")).collect();
                let remb = enc(&rtexts);
                let r = remb.matmul(&txt.get(i as i64)).max().double_value(&[]);
                s.push(si);
                hm.push(if si + r == 0.0 {
                    0.0
                } else {
                    2.0 * si * r / (si + r)
                });
            }
            (s, hm)
        })
    };
    let (s, hm) = direct(clip_score::DEFAULT_PREFIX, 2.5, true);
    let (s_plain, _) = direct("", 2.0, false);
    let (s_prefixed, _) = direct(clip_score::DEFAULT_PREFIX, 2.0, false);
    scorer.add_images(&["img0", "img1"], &images).unwrap();
    let got = scorer.score(&keys, &captions).unwrap();
    close(&got.iter().map(|&x| x as f64).collect::<Vec<_>>(), &s);
    let with_refs = scorer.score_with_refs(&keys, &captions, &refs).unwrap();
    close(
        &with_refs
            .ref_score
            .iter()
            .map(|&x| x as f64)
            .collect::<Vec<_>>(),
        &hm,
    );

    // Without prefix (and without clipping): other texts, other numbers.
    // Image embeddings do not depend on the score settings: the cache is kept.
    scorer.set_config(ScoreConfig::dico_reward());
    let got_plain = scorer.score(&keys, &captions).unwrap();
    scorer.set_config(ScoreConfig::clip_s());
    close(
        &got_plain.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        &s_plain,
    );
    assert!(
        s_plain
            .iter()
            .zip(&s_prefixed)
            .any(|(a, b)| (a - b).abs() > 1e-4),
        "prefix had no effect"
    );

    // Cached by key: adding another image under a known key keeps the first embedding.
    let other = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    scorer.add_images(&["img0"], &other).unwrap();
    let again = scorer.score(&keys, &captions).unwrap();
    assert_eq!(again, got);
    // One key for two images of one call would score one image as the other.
    let pair = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    scorer.clear_images();
    let err = scorer.add_images(&["dup", "dup"], &pair).unwrap_err();
    assert!(matches!(err, RewardError::BadInput { .. }), "{err}");
    assert!(err.to_string().contains("`dup`"), "{err}");
    assert!(
        !scorer.has_image("dup"),
        "nothing is cached from a refused call"
    );
    scorer.add_images(&["img0", "img1"], &images).unwrap();
    let err = scorer.score(&["nope"], &["a caption"]).unwrap_err();
    assert!(matches!(err, RewardError::MissingImage { .. }), "{err}");
    assert!(scorer.score(&["img0"], &["a", "b"]).is_err());
}
