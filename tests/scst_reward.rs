//! SCST's CIDEr-D reward: document frequencies from the training shards, each
//! candidate scored against its image's references, checked against a
//! from-scratch CIDEr-D; and an SCST run on it in the pipeline.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::clip::save_tiny_clip;
use common::train::{train_config, write_vocab};
use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::data::{LayoutOptions, ShardIndex, ShardSource, SourceConfig, SourceItem};
use dicoflow::flow::{run, FlowConfig, Pipeline, RunOptions, SourceSpec, StageSpec};
use dicoflow::metrics::cider::{cider_d, cider_d_with_df, DocumentFrequencies};
use dicoflow::metrics::PtbTokenizer;
use dicoflow::model::captioner::Vocab;
use dicoflow::reward::cider_df::{DocFreqs, Tokenization};
use dicoflow::reward::{CiderDReward, CiderDSettings, Reward, RewardSettings};
use dicoflow::train::captioning::Objective;
use dicoflow::train::fluency::FluencyJudge;
use dicoflow::train::stages::{registry, CaptionerStageSettings, WEIGHTS_FILE};
use dicoflow::train::Schedule;
use tch::{Device, Tensor};

/// Document frequencies counted naively over whitespace-split references.
struct Counted {
    images: u64,
    df: HashMap<Vec<String>, u64>,
}

impl Counted {
    fn of(references: &[Vec<String>]) -> Self {
        let mut df = HashMap::new();
        for refs in references {
            let mut seen = std::collections::HashSet::new();
            for r in refs {
                let w: Vec<String> = r.split_whitespace().map(str::to_owned).collect();
                for n in 1..=4 {
                    seen.extend(w.windows(n).map(<[String]>::to_vec));
                }
            }
            for g in seen {
                *df.entry(g).or_insert(0) += 1;
            }
        }
        Counted {
            images: references.len() as u64,
            df,
        }
    }
}

impl DocumentFrequencies for Counted {
    fn documents(&self) -> u64 {
        self.images
    }
    fn frequency(&self, ngram: &[&str]) -> u64 {
        let key: Vec<String> = ngram.iter().map(|s| (*s).to_owned()).collect();
        self.df.get(&key).copied().unwrap_or(0)
    }
}

#[test]
fn corpus_frequencies_of_the_scored_references_reproduce_cider_d() {
    // With the corpus = the evaluated references, the fixed-corpus variant
    // must equal the toolkit-exact CIDEr-D to the last bit.
    let candidates: Vec<String> = [
        "a red circle left of a blue square",
        "a small green triangle",
        "two shapes on a white background",
        "a blue square",
    ]
    .map(String::from)
    .to_vec();
    let references: Vec<Vec<String>> = vec![
        vec![
            "a red circle to the left of a blue square".into(),
            "a red circle and a blue square".into(),
        ],
        vec![
            "a green triangle".into(),
            "a small green triangle on white".into(),
        ],
        vec!["two shapes".into(), "a circle and a square on white".into()],
        vec!["a large blue square".into(), "one blue square".into()],
    ];
    let exact = cider_d(&candidates, &references);
    let fixed = cider_d_with_df(&candidates, &references, &Counted::of(&references));
    assert_eq!(exact.per_image.len(), 4);
    for (a, b) in exact.per_image.iter().zip(&fixed.per_image) {
        assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
    }
    assert!(exact.per_image.iter().all(|s| *s > 0.0));
}

/// CIDEr-D written out from its definition (Vedantam et al.; the toolkit's
/// `CiderD` with a corpus `df`): tf-idf n-gram vectors, candidate weights
/// clipped by the reference's, Gaussian length penalty (σ = 6) on bigram
/// counts, mean over n = 1..4 and over references, times 10.
fn cider_from_scratch(candidate: &str, refs: &[String], df: &DocFreqs) -> f64 {
    let ptb = PtbTokenizer::new();
    let words = |s: &str| -> Vec<String> {
        ptb.tokenize(s)
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let ln_n = (df.images as f64).ln();
    let vector = |w: &[String]| -> Vec<HashMap<Vec<String>, f64>> {
        (1..=4)
            .map(|n| {
                let mut tf: HashMap<Vec<String>, f64> = HashMap::new();
                for g in w.windows(n) {
                    *tf.entry(g.to_vec()).or_insert(0.0) += 1.0;
                }
                tf.into_iter()
                    .map(|(g, t)| {
                        let key: Vec<&str> = g.iter().map(String::as_str).collect();
                        let d = (df.get(&key) as f64).max(1.0);
                        (g, t * (ln_n - d.ln()))
                    })
                    .collect()
            })
            .collect()
    };
    let norm = |v: &HashMap<Vec<String>, f64>| v.values().map(|x| x * x).sum::<f64>().sqrt();
    let c = words(candidate);
    let cv = vector(&c);
    let mut total = 0.0;
    for r in refs {
        let rw = words(r);
        let rv = vector(&rw);
        let delta = c.len().saturating_sub(1) as f64 - rw.len().saturating_sub(1) as f64;
        let penalty = (-(delta * delta) / (2.0 * 36.0)).exp();
        for n in 0..4 {
            let mut dot = 0.0;
            for (g, wc) in &cv[n] {
                let wr = rv[n].get(g).copied().unwrap_or(0.0);
                dot += wc.min(wr) * wr;
            }
            let (nc, nr) = (norm(&cv[n]), norm(&rv[n]));
            if nc != 0.0 && nr != 0.0 {
                dot /= nc * nr;
            }
            total += dot * penalty / 4.0;
        }
    }
    total / refs.len() as f64 * 10.0
}

/// Every image's captions, read straight from the shards.
fn all_captions(dir: &Path) -> Vec<(String, Vec<String>)> {
    let index = Arc::new(ShardIndex::open(dir, &LayoutOptions::default()).unwrap());
    let mut src = ShardSource::new(index, SourceConfig::default(), 0, 1).unwrap();
    let mut out = Vec::new();
    while let Some(item) = src.next_item().unwrap() {
        if let SourceItem::Sample(s) = item {
            out.push((s.key, s.captions));
        }
    }
    out
}

fn small_world(root: &Path, train: usize) -> WorldSpec {
    let spec = WorldSpec {
        train,
        val: 1,
        test: 1,
        rows_per_shard: 16,
        rows_per_row_group: 8,
        ..Default::default()
    };
    write_world(&root.join("data"), &spec, false, |_| {}).unwrap();
    spec
}

#[test]
fn cider_d_reward_equals_a_from_scratch_computation() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    small_world(root, 40);
    let train = root.join("data/train");
    let settings = CiderDSettings {
        references: train.clone(),
        layout: LayoutOptions::default(),
        workers: 2,
    };
    let cider = CiderDReward::from_shards(&settings).unwrap();
    // The dataflow's PTB document frequencies equal a direct count.
    let images = all_captions(&train);
    assert_eq!(images.len(), 40);
    let direct = DocFreqs::direct_tokenized(
        images.iter().map(|(_, c)| c.as_slice()),
        4,
        Tokenization::Ptb,
    );
    assert_eq!(cider.document_frequencies(), &direct);
    let df = direct;

    // Two images, three candidates each: a reference verbatim (capitalised,
    // with punctuation), a reworded one, and nothing.
    let picked = [&images[3], &images[17]];
    let keys: Vec<String> = picked.iter().map(|(k, _)| k.clone()).collect();
    let refs: Vec<Vec<String>> = picked.iter().map(|(_, c)| c.clone()).collect();
    let mut candidates = Vec::new();
    for r in &refs {
        let first = &r[0];
        candidates.push(format!("{}{}.", first[..1].to_uppercase(), &first[1..]));
        candidates.push(format!("there is {}", r[1].replace(' ', "  ")));
        candidates.push(String::new());
    }
    let mut reward = Reward::from(cider);
    let got = reward
        .score(
            &keys,
            &Tensor::zeros([2, 3, 1, 1], (tch::Kind::Float, Device::Cpu)),
            &candidates,
            &refs,
        )
        .unwrap();
    assert_eq!(got.len(), 6);
    for (i, (c, r)) in candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (i, (c, &refs[i / 3])))
    {
        let want = cider_from_scratch(c, r, &df);
        assert!(
            (got[i] as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
            "candidate {i} `{c}`: reward {} vs from scratch {want}",
            got[i]
        );
    }
    // What a user relies on: a reference beats a rewording, which beats nothing.
    for img in 0..2 {
        let s = &got[img * 3..img * 3 + 3];
        assert!(s[0] > s[1] && s[1] > s[2] && s[2] == 0.0, "{s:?}");
    }
}

fn stage_settings(root: &Path, vocab: &Vocab, reward: RewardSettings) -> CaptionerStageSettings {
    let schedule = Schedule {
        lr: 1e-4,
        total_steps: 2,
        ..Default::default()
    };
    CaptionerStageSettings {
        reward: Some(reward),
        ..common::train::stage_settings(
            root,
            "scst",
            vocab,
            train_config(Objective::Scst, schedule, 3, 2),
        )
    }
}

fn pipeline(root: &Path, s: &CaptionerStageSettings) -> Pipeline {
    let mut pre = toml::Table::new();
    pre.insert("size".into(), toml::Value::Integer(32));
    Pipeline {
        source: SourceSpec {
            path: Some(root.join("data/train")),
            ..Default::default()
        },
        flow: FlowConfig {
            batch_size: 8,
            ..Default::default()
        },
        cpu: vec![StageSpec::new("preprocess").with_settings(pre)],
        device: vec![
            StageSpec::new("train_captioner").with_settings(toml::Table::try_from(s).unwrap())
        ],
    }
}

#[test]
fn scst_with_the_cider_d_reward_runs_in_the_pipeline() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    small_world(root, 16);
    let caps: Vec<String> = all_captions(&root.join("data/train"))
        .into_iter()
        .flat_map(|(_, c)| c)
        .collect();
    let vocab = Vocab::build(&caps, 1, None);
    write_vocab(root, &vocab);
    save_tiny_clip(&root.join("clip.safetensors"), 1);

    let cider = RewardSettings::CiderD(CiderDSettings {
        references: root.join("data/train"),
        layout: LayoutOptions::default(),
        workers: 1,
    });
    let mut s = stage_settings(root, &vocab, cider);
    s.fluency_judge = Some(FluencyJudge::SyntheticWorld);
    s.fluency_every = 1;
    // The settings survive the pipeline file's TOML form.
    let text = toml::to_string(&s).unwrap();
    assert!(text.contains("kind = \"cider_d\""), "{text}");
    let opts = RunOptions {
        keep_reports: true,
        ..RunOptions::threads(1)
    };
    let summary = run(&pipeline(root, &s), &registry(), &opts).unwrap();
    let trained: Vec<_> = summary
        .reports
        .iter()
        .filter(|r| r.metrics.contains_key("train/loss"))
        .collect();
    assert_eq!(trained.len(), 2, "two SCST steps");
    for r in trained {
        let m = &r.metrics;
        for name in [
            "train/loss",
            "evaluator/mean",
            "evaluator/max",
            "advantage/std",
        ] {
            assert!(
                m.get(name).is_some_and(|v| v.is_finite()),
                "{name} in {m:?}"
            );
        }
        assert!(m["evaluator/mean"] >= 0.0 && m["evaluator/mean"] <= m["evaluator/max"]);
        // 8 greedy captions judged per step: a share in eighths.
        let fluent = m["fluency/grammatical"] * 8.0;
        assert!((0.0..=8.0).contains(&fluent) && (fluent - fluent.round()).abs() < 1e-9);
    }
    assert!(s.out.join(WEIGHTS_FILE).is_file());

    // CIDEr-D needs no evaluator; naming one is a mistake worth reporting.
    let mut wrong = s.clone();
    wrong.evaluator = Some(root.join("clip.safetensors"));
    let err = run(&pipeline(root, &wrong), &registry(), &opts).unwrap_err();
    assert!(err.to_string().contains("remove it"), "{err}");
}
