//! Captioner, decoding and teacher-forced log-probs on tiny random models: KV-cache
//! decoding against full recomputation, beam search against exhaustive enumeration,
//! sampling frequencies against the model's sequence probabilities.

use dicoflow::model::captioner::{Captioner, CaptionerConfig, TokenSpec, Vocab};
use dicoflow::model::decode::{self, BeamOptions, SampleOptions};
use dicoflow::model::ModelError;
use dicoflow::rng::Rng;
use tch::{nn, Device, Kind, Tensor};

/// `shape` values from N(0, std²), drawn with the crate's RNG: libtorch's global
/// generator is shared by the test threads, so seeding it would race.
fn randn(shape: &[i64], std: f64, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n: i64 = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2) = (1.0 - rng.f64(), rng.f64());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
        })
        .collect();
    Tensor::from_slice(&v).reshape(shape)
}

/// A captioner with vocabulary `vocab` (pad 0, BOS 1, EOS 2, words 3..) and every
/// weight drawn from N(0, 0.5²) so that its distributions are far from uniform.
fn tiny_model(vocab: i64, max_len: i64, seed: u64) -> (nn::VarStore, Captioner) {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = CaptionerConfig::tiny_words(vocab);
    cfg.feature_dim = 8;
    cfg.d_model = 16;
    cfg.heads = 2;
    cfg.ffn = 32;
    cfg.encoder_layers = 1;
    cfg.decoder_layers = 2;
    cfg.max_len = max_len;
    let model = Captioner::new(vs.root(), &cfg).unwrap();
    tch::no_grad(|| {
        let mut vars: Vec<_> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (_, mut v)) in vars.into_iter().enumerate() {
            v.copy_(&randn(&v.size(), 0.5, seed * 1000 + i as u64));
        }
    });
    (vs, model)
}

fn features(images: i64, seed: u64) -> Tensor {
    randn(&[images, 5, 8], 1.0, seed)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// Every sequence over content tokens `words` of at most `max_len` tokens, ending with
/// EOS or cut at `max_len`, padded with `pad` to `max_len`.
fn all_sequences(words: &[i64], eos: i64, pad: i64, max_len: usize) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    let mut prefixes: Vec<Vec<i64>> = vec![vec![]];
    for len in 1..=max_len {
        let mut next = Vec::new();
        for p in &prefixes {
            let mut ended = p.clone();
            ended.push(eos);
            out.push(ended);
            for &w in words {
                let mut q = p.clone();
                q.push(w);
                if len == max_len {
                    out.push(q);
                } else {
                    next.push(q);
                }
            }
        }
        prefixes = next;
    }
    for s in &mut out {
        s.resize(max_len, pad);
    }
    out
}

fn to_tensor(seqs: &[Vec<i64>]) -> Tensor {
    let flat: Vec<i64> = seqs.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).reshape([seqs.len() as i64, -1])
}

fn rows_of(t: &Tensor) -> Vec<Vec<i64>> {
    let t = t.to_kind(Kind::Int64);
    (0..t.size()[0])
        .map(|i| Vec::<i64>::try_from(&t.get(i)).unwrap())
        .collect()
}

fn floats(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

#[test]
fn kv_cache_matches_full_recomputation() {
    let (_vs, model) = tiny_model(11, 8, 1);
    let memory = model.encode(&features(2, 2)).unwrap(); // [2, 5, 16]
                                                         // 3 rows per image, the group layout of beams and samples.
    let mut rng = Rng::new(3);
    let ids: Vec<i64> = (0..48).map(|_| 3 + rng.below(8) as i64).collect();
    let ids = Tensor::from_slice(&ids).reshape([6, 8]);
    tch::no_grad(|| {
        let full = model.logits(&memory, &ids).unwrap(); // [6, 8, 11]
        let mut cache = model.start(&memory, 3).unwrap();
        let mut steps = Vec::new();
        for t in 0..8 {
            steps.push(model.step(&ids.narrow(1, t, 1), &mut cache).unwrap());
        }
        let incremental = Tensor::cat(&steps, 1);
        let d = max_abs_diff(&full, &incremental);
        assert!(
            d < 1e-4,
            "KV-cache logits differ from full recomputation by {d}"
        );
        // Each row's logits depend only on its own image: row 0 alone gives the same.
        let alone = model
            .logits(&memory.narrow(0, 0, 1), &ids.narrow(0, 0, 1))
            .unwrap();
        assert!(max_abs_diff(&alone, &full.narrow(0, 0, 1)) < 1e-4);
        // A cache holding max_len positions refuses one more.
        let err = model.step(&ids.narrow(1, 0, 1), &mut cache).unwrap_err();
        assert!(matches!(err, ModelError::BadInput { .. }), "{err}");
    });
}

#[test]
fn teacher_forcing_equals_incremental_log_softmax_sum() {
    let (_vs, model) = tiny_model(9, 6, 4);
    let t = model.tokens();
    let memory = model.encode(&features(2, 5)).unwrap();
    // Targets without BOS, EOS included, pad after it; one row without EOS; one with a
    // token after EOS that must be ignored; 2 rows per image.
    let seqs = vec![
        vec![3, 4, t.eos, t.pad, t.pad, t.pad],
        vec![5, 6, 7, 8, 3, 4],
        vec![t.eos, t.pad, t.pad, t.pad, t.pad, t.pad],
        vec![8, t.eos, 5, t.pad, t.pad, t.pad],
    ];
    let tokens = to_tensor(&seqs);
    let tf = tch::no_grad(|| model.sequence_logprobs(&memory, &tokens).unwrap());
    // Reference: feed BOS then each target through the KV cache, summing log-softmax
    // of the target up to and including EOS.
    let mut expected = vec![0.0f64; seqs.len()];
    tch::no_grad(|| {
        let mut cache = model.start(&memory, 2).unwrap();
        let mut input = Tensor::full([4, 1], t.bos, (Kind::Int64, Device::Cpu));
        let mut finished = [false; 4];
        for pos in 0..6 {
            let logp = model
                .step(&input, &mut cache)
                .unwrap()
                .select(1, 0)
                .log_softmax(-1, Kind::Double);
            let mut next = Vec::new();
            for (r, s) in seqs.iter().enumerate() {
                let tok = s[pos];
                if !finished[r] && tok != t.pad {
                    expected[r] += logp.double_value(&[r as i64, tok]);
                }
                if tok == t.eos {
                    finished[r] = true;
                }
                next.push(if tok == t.pad { t.eos } else { tok });
            }
            input = Tensor::from_slice(&next).unsqueeze(1);
        }
    });
    let got = floats(&tf);
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (g - e).abs() < 1e-4,
            "teacher forcing {g} vs incremental {e}"
        );
    }
    // With grad: differentiable, and the gradient reaches the embeddings.
    let lp = model.sequence_logprobs(&memory, &tokens).unwrap();
    assert!(lp.requires_grad());
    lp.sum(Kind::Float).backward();
    assert!(
        model
            .decoder
            .wte
            .grad()
            .abs()
            .sum(Kind::Float)
            .double_value(&[])
            > 0.0
    );
}

/// Log-probs of `seqs` for image `image` of `memory` by teacher forcing.
fn exhaustive_scores(
    model: &Captioner,
    memory: &Tensor,
    image: i64,
    seqs: &[Vec<i64>],
) -> Vec<f64> {
    let tokens = to_tensor(seqs);
    let mem = memory.narrow(0, image, 1);
    tch::no_grad(|| floats(&model.sequence_logprobs(&mem, &tokens).unwrap()))
}

fn sorted_desc(mut v: Vec<(f64, Vec<i64>)>) -> Vec<(f64, Vec<i64>)> {
    v.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    v
}

#[test]
fn beam_search_equals_exhaustive_search() {
    // Vocabulary 6: pad 0, BOS 1, EOS 2, words 3, 4, 5; max length 4: 121 sequences.
    let (_vs, model) = tiny_model(6, 4, 7);
    let t = model.tokens();
    let memory = model.encode(&features(2, 8)).unwrap();
    let seqs = all_sequences(&[3, 4, 5], t.eos, t.pad, 4);
    assert_eq!(seqs.len(), 121);
    // k = 121 returns every sequence; k = 40 keeps every prefix through step 3, so its
    // beams must be exactly the top 40; k = 5 must at least return true scores.
    for k in [121i64, 40, 5] {
        let out = decode::beam_search(
            &model,
            &memory,
            &BeamOptions {
                beams: k,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(out.tokens.size()[..2], [2, k]);
        for image in 0..2 {
            let truth = sorted_desc(
                exhaustive_scores(&model, &memory, image, &seqs)
                    .into_iter()
                    .zip(seqs.iter().cloned())
                    .collect(),
            );
            let mut beams = rows_of(&out.tokens.get(image));
            for b in &mut beams {
                b.resize(4, t.pad);
            }
            let scores = floats(&out.logprobs.get(image));
            // Beam scores are the teacher-forced log-probs of the returned beams.
            let rescored = exhaustive_scores(&model, &memory, image, &beams);
            for (s, r) in scores.iter().zip(&rescored) {
                assert!(
                    (s - r).abs() < 1e-4,
                    "beam score {s} vs teacher forcing {r}"
                );
            }
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "beams not sorted");
            if k >= 40 {
                for (i, ((ts, tseq), (bs, bseq))) in
                    truth.iter().zip(scores.iter().zip(&beams)).enumerate()
                {
                    assert!(
                        (ts - bs).abs() < 1e-4,
                        "k={k} image {image} rank {i}: {bs} vs {ts}"
                    );
                    assert_eq!(tseq, bseq, "k={k} image {image} rank {i}");
                }
            } else {
                for (i, bs) in scores.iter().enumerate() {
                    assert!(
                        *bs <= truth[i].0 + 1e-4,
                        "beam better than exhaustive rank {i}"
                    );
                }
            }
        }
    }
}

#[test]
fn greedy_and_zero_temperature_agree() {
    let (_vs, model) = tiny_model(12, 10, 11);
    let memory = model.encode(&features(3, 12)).unwrap();
    let greedy = decode::greedy(&model, &memory, None).unwrap();
    let beam1 = decode::beam_search(
        &model,
        &memory,
        &BeamOptions {
            beams: 1,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        greedy.tokens.equal(&beam1.tokens),
        "greedy differs from beam search with k = 1"
    );
    for temperature in [0.0, 1e-3] {
        let s = decode::sample(
            &model,
            &memory,
            &SampleOptions {
                samples: 4,
                temperature,
                seed: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let len = greedy.tokens.size()[2];
        let expect = greedy.tokens.expand([3, 4, len], false);
        assert_eq!(s.tokens.size(), expect.size(), "temperature {temperature}");
        assert!(
            s.tokens.equal(&expect),
            "temperature {temperature} is not greedy"
        );
        assert!(max_abs_diff(&s.logprobs, &greedy.logprobs.expand([3, 4], false)) < 1e-5);
    }
}

#[test]
fn sampling_frequencies_match_sequence_probabilities() {
    // Vocabulary 6, max length 3: 40 sequences.
    let (_vs, model) = tiny_model(6, 3, 21);
    let t = model.tokens();
    let memory = model.encode(&features(1, 22)).unwrap();
    let seqs = all_sequences(&[3, 4, 5], t.eos, t.pad, 3);
    // Sampling never draws BOS or pad: the model's distribution renormalised over
    // EOS and the words, at every step.
    let tokens = to_tensor(&seqs);
    let (inputs, mask) = model.teacher_forcing_inputs(&tokens).unwrap();
    let logits = tch::no_grad(|| model.logits(&memory, &inputs).unwrap());
    let allowed = Tensor::from_slice(&[t.eos, 3, 4, 5]);
    let total = logits.logsumexp([-1i64].as_slice(), false);
    let allowed_total = logits
        .index_select(2, &allowed)
        .logsumexp([-1i64].as_slice(), false);
    let lp = logits.gather(2, &tokens.unsqueeze(2), false).squeeze_dim(2) - total.shallow_clone();
    let renorm = lp - (allowed_total - total);
    let expected: Vec<f64> = floats(
        &(renorm * mask.to_kind(Kind::Float))
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
            .exp(),
    );
    let sum: f64 = expected.iter().sum();
    assert!(
        (sum - 1.0).abs() < 1e-4,
        "sequence probabilities sum to {sum}"
    );

    let n = 20_000i64;
    let out = decode::sample(
        &model,
        &memory,
        &SampleOptions {
            samples: n,
            temperature: 1.0,
            seed: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let mut drawn = rows_of(&out.tokens.get(0));
    let mut counts = vec![0f64; seqs.len()];
    for d in &mut drawn {
        d.resize(3, t.pad);
        let i = seqs
            .iter()
            .position(|s| s == d)
            .expect("sampled an impossible sequence");
        counts[i] += 1.0;
    }
    // Chi-square over cells with expected count >= 5, the rest pooled.
    let (mut chi2, mut cells, mut pool_o, mut pool_e) = (0.0, 0, 0.0, 0.0);
    for (o, p) in counts.iter().zip(&expected) {
        let e = p * n as f64;
        if e >= 5.0 {
            chi2 += (o - e) * (o - e) / e;
            cells += 1;
        } else {
            pool_o += o;
            pool_e += e;
        }
    }
    if pool_e > 0.0 {
        chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e.max(1e-9);
        cells += 1;
    }
    // df = cells - 1 (<= 40); 0.9999 quantile of chi²(39) is about 78.
    eprintln!("chi2 = {chi2:.1} over {cells} cells");
    assert!(chi2 < 80.0, "chi2 {chi2} over {cells} cells");
    // Reported log-probs are the model's (temperature 1, not renormalised) log-probs.
    let tf = tch::no_grad(|| {
        model
            .sequence_logprobs(&memory, &to_tensor(&drawn[..50]))
            .unwrap()
    });
    assert!(max_abs_diff(&tf, &out.logprobs.get(0).narrow(0, 0, 50)) < 1e-4);
    // Same seed, same draws; another seed, other draws.
    let draws = |seed| {
        let opts = SampleOptions {
            samples: 100,
            temperature: 1.0,
            seed,
            ..Default::default()
        };
        decode::sample(&model, &memory, &opts).unwrap().tokens
    };
    assert!(draws(9).equal(&draws(9)));
    assert!(!draws(9).equal(&draws(10)));
}

#[test]
fn paper_preset_shapes_and_parameter_count() {
    let cfg = CaptionerConfig::paper();
    assert_eq!(cfg.tokens, TokenSpec::clip());
    assert_eq!(
        (
            cfg.tokens.vocab_size,
            cfg.tokens.pad,
            cfg.tokens.bos,
            cfg.tokens.eos
        ),
        (49409, 49408, 49406, 49407)
    );
    assert_eq!(
        (
            cfg.d_model,
            cfg.heads,
            cfg.ffn,
            cfg.encoder_layers,
            cfg.decoder_layers,
            cfg.max_len
        ),
        (512, 8, 2048, 3, 3, 30)
    );
    assert_eq!(cfg.feature_dim, 1024);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Captioner::new(vs.root(), &cfg).unwrap();
    let vars = vs.variables();
    let count: i64 = vars.values().map(|v| v.numel() as i64).sum();
    assert_eq!(count, cfg.num_parameters());
    // 25.3 M embedding + 9.5 M encoder + 12.6 M decoder.
    assert!((47_000_000..49_000_000).contains(&count), "{count}");
    assert_eq!(vars["decoder.wte"].size(), [49409, 512]);
    assert_eq!(vars["decoder.wpe"].size(), [30, 512]);
    assert_eq!(vars["encoder.proj.weight"].size(), [512, 1024]);
    assert_eq!(
        vars["decoder.h.2.cross_attn.k_proj.weight"].size(),
        [512, 512]
    );
    assert_eq!(vars["encoder.layers.2.mlp.c_fc.weight"].size(), [2048, 512]);
    assert!(vars
        .keys()
        .all(|k| k.starts_with("encoder.") || k.starts_with("decoder.")));
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<CaptionerConfig>(&json).unwrap(), cfg);
}

#[test]
fn bad_inputs_are_errors() {
    let (_vs, model) = tiny_model(6, 4, 1);
    let bad = Tensor::zeros([2, 5, 7], (Kind::Float, Device::Cpu));
    assert!(matches!(
        model.encode(&bad),
        Err(ModelError::BadInput { .. })
    ));
    let memory = model.encode(&features(2, 1)).unwrap();
    let out_of_vocab = Tensor::from_slice(&[3i64, 6])
        .reshape([1, 2])
        .repeat([2, 1]);
    assert!(model.sequence_logprobs(&memory, &out_of_vocab).is_err());
    let too_long = Tensor::full([2, 5], 3i64, (Kind::Int64, Device::Cpu));
    assert!(model.sequence_logprobs(&memory, &too_long).is_err());
    let not_a_multiple = Tensor::full([3, 2], 3i64, (Kind::Int64, Device::Cpu));
    assert!(model.sequence_logprobs(&memory, &not_a_multiple).is_err());
    assert!(decode::beam_search(
        &model,
        &memory,
        &BeamOptions {
            beams: 0,
            ..Default::default()
        }
    )
    .is_err());
    assert!(decode::greedy(&model, &memory, Some(5)).is_err());
    let mut cfg = model.config().clone();
    cfg.heads = 3;
    assert!(Captioner::new(nn::VarStore::new(Device::Cpu).root(), &cfg).is_err());
}

#[test]
fn word_vocab_is_deterministic_and_round_trips() {
    let captions = [
        "A red circle.",
        "a blue square",
        "The red square, left of a circle",
    ];
    let v = Vocab::build(&captions, 1, None);
    let again = Vocab::build(&captions, 1, None);
    assert_eq!(v, again);
    // a (3) red (2) circle (2) square (2) then , . blue left of the (1), ties in byte
    // order: punctuation marks are tokens of their own.
    let words: Vec<&str> = (4..v.len() as i64).map(|i| v.word(i).unwrap()).collect();
    assert_eq!(
        words,
        ["a", "circle", "red", "square", ",", ".", "blue", "left", "of", "the"]
    );
    let ids = v.encode("A red TRIANGLE");
    assert_eq!(ids, vec![v.id("a"), v.id("red"), 3]);
    assert_eq!(
        v.decode(&[1, v.id("red"), v.id("circle"), 2, v.id("a")]),
        "red circle"
    );
    assert_eq!(v.encode_target("a red circle", 2), vec![v.id("a"), 2]);
    let json = serde_json::to_string(&v).unwrap();
    let back: Vocab = serde_json::from_str::<Vocab>(&json).unwrap().reindexed();
    assert_eq!(back.encode("red square"), v.encode("red square"));
    assert_eq!(v.tokens(), TokenSpec::words(v.len() as i64));
    let capped = Vocab::build(&captions, 2, Some(2));
    assert_eq!(capped.len(), 6);
}
