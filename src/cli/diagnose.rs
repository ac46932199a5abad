//! `dicoflow diagnose`: how far a demo run's evaluator agrees with the oracle.
//!
//! On held-out (test) images of the run's world it prints the evaluator's accuracy
//! at preferring the true caption over each controlled corruption of it
//! ([`corruption_accuracy`]) and the mean Kendall τ-b between the evaluator's
//! reward and the oracle's quality over the XE model's beams ([`rank_agreement`];
//! every seed's XE model in a `dicoflow demo --seeds N` folder).
//! Everything is regenerated from the world's spec (stored in the shards'
//! metadata), so only the run folder is needed.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tch::{nn, Device, Tensor};

use crate::data::synth::{render, Scene};
use crate::data::world::{generate_row, splits, WorldSpec, WORLD_METADATA};
use crate::image::{PreprocessConfig, Preprocessor};
use crate::metrics::quality::{corruption_accuracy, image_corruptions, rank_agreement};
use crate::model::captioner::{Backbone, CaptionText, Captioner, CaptionerConfig, Vocab};
use crate::model::clip::{Clip, ClipConfig};
use crate::model::decode::{beam_search, BeamOptions};
use crate::reward::{ClipScorer, ScoreConfig};
use crate::text::ClipTokenizer;
use crate::train::stages::{CAPTIONER_CONFIG_FILE, CLIP_CONFIG_FILE, WEIGHTS_FILE};

/// Arguments of `diagnose`.
#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// Run folder written by `dicoflow demo` (with `--seeds N`: the rank
    /// agreement is given for each seed's XE model).
    #[arg(long, default_value = "runs/demo")]
    pub run: PathBuf,
    /// Test images to use (the first N of the test split).
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    /// Beams of the XE model per image for the rank agreement.
    #[arg(long, default_value_t = 5)]
    pub beams: i64,
    /// Seed of the corruptions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also print the corruptions of the first N images, with the evaluator's rewards.
    #[arg(long, default_value_t = 0)]
    pub examples: usize,
    /// Score as the official CLIP-S (prefix "A photo depicts", clipped) instead of
    /// the DiCO reward the fine-tuning optimises (no prefix, no clipping).
    #[arg(long)]
    pub clip_s: bool,
}

/// How far image embeddings tell an image from its mirror image.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MirrorCosines {
    /// Mean cosine between an image's embedding and its left–right mirror's.
    horizontal: f64,
    /// Mean cosine between an image's embedding and its up–down flip's.
    vertical: f64,
    /// Mean cosine between the embeddings of two different images (the scale
    /// the two above are read against).
    between: f64,
}

/// [`MirrorCosines`] of `encode` (images `[n, 3, H, W]` → embeddings
/// `[n, d]`) on `pixels` `[n, 3, H, W]`, n ≥ 2. An encoder that cannot see
/// where things are gives 1 for both mirrors (mirroring moves every object
/// and keeps everything else).
fn mirror_cosines(
    encode: impl Fn(&Tensor) -> anyhow::Result<Tensor>,
    pixels: &Tensor,
) -> anyhow::Result<MirrorCosines> {
    let n = pixels.size()[0];
    if n < 2 {
        bail!("mirror cosines need 2 images or more, got {n}");
    }
    let unit = |t: Tensor| -> anyhow::Result<Tensor> {
        let norm = t
            .f_norm_scalaropt_dim(2.0, [-1], true)?
            .f_clamp_min(1e-12)?;
        Ok(t.f_div(&norm)?.f_to_kind(tch::Kind::Double)?)
    };
    let e = unit(encode(pixels)?)?;
    let paired = |axis: i64| -> anyhow::Result<f64> {
        let m = unit(encode(&pixels.f_flip([axis])?)?)?;
        Ok(e.f_mul(&m)?
            .f_sum_dim_intlist(-1, false, None)?
            .f_mean(None)?
            .f_double_value(&[])?)
    };
    let all = e.f_matmul(&e.f_tr()?)?;
    let off_diagonal = all
        .f_sum(None)?
        .f_sub(&all.f_trace()?)?
        .f_double_value(&[])?;
    Ok(MirrorCosines {
        horizontal: paired(3)?,
        vertical: paired(2)?,
        between: off_diagonal / (n * (n - 1)) as f64,
    })
}

/// The world spec stored in the metadata of the shards under `dir`.
fn world_spec(dir: &Path) -> anyhow::Result<WorldSpec> {
    crate::data::world::stored_spec(dir)?.with_context(|| {
        format!(
            "{} holds no shard with `{WORLD_METADATA}` metadata: give --run a folder written \
             by `dicoflow demo` (a synthetic world)",
            dir.display()
        )
    })
}

/// Run `diagnose`.
pub fn run(args: &DiagnoseArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.images > 0, "--images must be at least 1");
    anyhow::ensure!(
        args.beams >= 2,
        "--beams must be at least 2 to rank candidates"
    );
    let run = &args.run;
    let test_dir = run.join("data").join("test");
    if !test_dir.is_dir() {
        bail!(
            "{} is not a run folder written by `dicoflow demo` (no data/test): give --run \
             the demo's --out folder",
            run.display()
        );
    }
    let spec = world_spec(&test_dir)?;
    let xe = xe_models(run)?;
    let n = args.images.min(splits(&spec)[2].1);
    let device = Device::Cpu;

    // The evaluator, as the demo trained it.
    let eval_dir = run.join("evaluator");
    let clip_cfg = ClipConfig::from_json_file(eval_dir.join(CLIP_CONFIG_FILE))?;
    let eval_weights = eval_dir.join(WEIGHTS_FILE);
    let (_vs, clip) = Clip::from_safetensors(&eval_weights, &clip_cfg, device)
        .with_context(|| format!("loading {}", eval_weights.display()))?;
    let score = if args.clip_s {
        ScoreConfig::clip_s()
    } else {
        ScoreConfig::dico_reward()
    };
    let mut scorer = ClipScorer::new(clip, ClipTokenizer::openai()?, score);

    // Held-out images, preprocessed as the demo's pipelines do.
    let size = u32::try_from(clip_cfg.vision.image_size)?;
    let mut pre = Preprocessor::new(PreprocessConfig {
        size,
        ..Default::default()
    });
    let (mut scenes, mut truths, mut keys, mut px): (Vec<Scene>, _, Vec<String>, _) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (scene, row) = generate_row(&spec, 2, i)?;
        let hwc = pre
            .resize_crop(&render(&scene, &spec.world))
            .map_err(|e| anyhow::anyhow!("preprocessing test image {i}: {e:?}"))?;
        let mut chw = Vec::new();
        pre.normalize_into(&hwc, &mut chw);
        px.extend(chw);
        truths.push(row.captions[0].clone());
        keys.push(row.key);
        scenes.push(scene);
    }
    let side = i64::from(size);
    let pixels = Tensor::f_from_slice(&px)?.f_view([n as i64, 3, side, side])?;
    scorer.add_images(&keys, &pixels)?;
    let mirrors = mirror_cosines(
        |px| Ok(tch::no_grad(|| scorer.clip().encode_image(px))?),
        &pixels,
    )?;

    let mut score_texts = |i: usize, texts: &[String]| -> anyhow::Result<Vec<f64>> {
        let k = vec![keys[i].as_str(); texts.len()];
        Ok(scorer
            .score(&k, texts)?
            .into_iter()
            .map(f64::from)
            .collect())
    };
    let accuracy = corruption_accuracy(&scenes, &truths, args.seed, &mut score_texts)?;

    // The XE model's beams (every seed's, in a `--seeds` run), ranked by the
    // evaluator and by the oracle.
    let vocab_file = run.join("vocab.json");
    let vocab: Vocab = serde_json::from_str(
        &std::fs::read_to_string(&vocab_file)
            .with_context(|| format!("reading {}", vocab_file.display()))?,
    )
    .with_context(|| format!("{}", vocab_file.display()))?;
    let text = CaptionText::Words(vocab.reindexed());
    let backbone = Backbone::from_clip_safetensors(&eval_weights, &clip_cfg, device)?;
    let opts = BeamOptions {
        beams: args.beams,
        ..Default::default()
    };
    // The frozen backbone's features of the test images, by batches of 32
    // (first image, images, features): the same input for every seed's XE
    // model.
    let features = (0..n)
        .step_by(32)
        .map(|start| {
            let b = 32.min(n - start);
            let batch = pixels.f_narrow(0, start as i64, b as i64)?;
            Ok((start, b, tch::no_grad(|| backbone.features(&batch))?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut ranks = Vec::new();
    for (label, xe_dir) in xe {
        let cap_cfg = CaptionerConfig::from_json_file(xe_dir.join(CAPTIONER_CONFIG_FILE))?;
        text.check(&cap_cfg.tokens)?;
        let mut vs = nn::VarStore::new(device);
        let model = Captioner::new(vs.root(), &cap_cfg)?;
        let xe_weights = xe_dir.join(WEIGHTS_FILE);
        crate::model::weights::load_var_store(&mut vs, &xe_weights)
            .with_context(|| format!("loading the XE model's weights {}", xe_weights.display()))?;
        let pad = cap_cfg.tokens.pad;
        let (mut candidates, mut rewards) = (Vec::new(), Vec::new());
        for &(start, b, ref batch_features) in &features {
            let decoded = tch::no_grad(|| -> anyhow::Result<_> {
                let memory = model.encode(batch_features)?;
                Ok(beam_search(&model, &memory, &opts)?)
            })?;
            for j in 0..b {
                let beams: Vec<String> = (0..args.beams)
                    .map(|k| Ok(text.decode(&decoded.sequence(j as i64, k, pad)?)))
                    .collect::<anyhow::Result<_>>()?;
                rewards.push(score_texts(start + j, &beams)?);
                candidates.push(beams);
            }
        }
        ranks.push((label, rank_agreement(&scenes, &candidates, &rewards)?));
    }

    println!(
        "evaluator vs oracle on {n} test images of {} ({} score)",
        run.display(),
        if args.clip_s { "CLIP-S" } else { "DiCO reward" }
    );
    println!();
    println!("| corruption | accuracy | compared | impossible |");
    println!("|---|---:|---:|---:|");
    for a in &accuracy {
        println!(
            "| {} | {} | {} | {} |",
            a.kind.name(),
            a.accuracy()
                .map_or("n/a".to_owned(), |v| format!("{:.1}%", 100.0 * v)),
            a.compared,
            a.impossible
        );
    }
    for i in 0..args.examples.min(n) {
        println!();
        let truth = &truths[i];
        let cases = image_corruptions(&scenes[i], truth, args.seed, i);
        let mut texts = vec![truth.clone()];
        texts.extend(cases.iter().filter_map(|(_, c)| c.clone()));
        let rewards = score_texts(i, &texts)?;
        println!("{}: {:.4}  {truth}", keys[i], rewards[0]);
        let mut r = rewards[1..].iter();
        for (kind, corrupted) in &cases {
            match corrupted {
                Some(c) => println!(
                    "  {:<10} {:.4}  {c}",
                    kind.name(),
                    r.next().copied().unwrap_or(f64::NAN)
                ),
                None => println!("  {:<10} (impossible)", kind.name()),
            }
        }
    }
    println!();
    println!(
        "image embedding vs the same image mirrored (mean cosine over {n} test images; 1 = \
         the evaluator cannot see where things are): left-right {:.3}, up-down {:.3}; \
         between different test images: {:.3}",
        mirrors.horizontal, mirrors.vertical, mirrors.between
    );
    println!();
    for (label, ranks) in &ranks {
        println!(
            "Kendall tau-b, evaluator reward vs oracle quality over the {label}XE model's {} \
             beams: {} (mean over {} images; {} images with all beams tied in reward or quality \
             left out)",
            args.beams,
            ranks
                .mean_tau
                .map_or("n/a".to_owned(), |t| format!("{t:.3}")),
            ranks.images,
            ranks.undefined
        );
    }
    Ok(())
}

/// The XE models of a demo run folder, each with a label for the output:
/// `RUN/xe` (label empty) or, in a `--seeds` run, every `RUN/seed-S/xe`
/// (label "seed S "), by seed. Errors when there is none, when a `seed-S`
/// folder has no XE model (an unfinished run: its seed would be left out
/// without a word), and when both layouts are there (a one-seed run and a
/// `--seeds` run in one folder: which one the report describes is not known).
fn xe_models(run: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let has_model = |dir: &Path| dir.join(CAPTIONER_CONFIG_FILE).is_file();
    let mut seeds: Vec<(u64, PathBuf)> = std::fs::read_dir(run)
        .with_context(|| format!("listing {}", run.display()))?
        .filter_map(|e| {
            let e = e.ok()?;
            let seed = e
                .file_name()
                .to_str()?
                .strip_prefix("seed-")?
                .parse()
                .ok()?;
            e.path().is_dir().then(|| (seed, e.path()))
        })
        .collect();
    seeds.sort();
    let one_seed = run.join("xe");
    if has_model(&one_seed) {
        if let Some((_, dir)) = seeds.first() {
            bail!(
                "{} holds both a one-seed run's XE model ({}) and a --seeds run's ({} and \
                 others): remove the stale run's folders, or pass a folder with one run",
                run.display(),
                one_seed.display(),
                dir.join("xe").display()
            );
        }
        return Ok(vec![(String::new(), one_seed)]);
    }
    if seeds.is_empty() {
        bail!(
            "{} holds no XE model ({1}/xe/{CAPTIONER_CONFIG_FILE}, or \
             {1}/seed-S/xe/{CAPTIONER_CONFIG_FILE} in a --seeds run): give --run a finished \
             `dicoflow demo` folder",
            run.display(),
            run.display()
        );
    }
    seeds
        .into_iter()
        .map(|(seed, dir)| {
            let xe = dir.join("xe");
            anyhow::ensure!(
                has_model(&xe),
                "{} has no XE model ({}): that seed's run did not finish; rerun the demo \
                 (finished phases are kept) or remove the folder",
                dir.display(),
                xe.join(CAPTIONER_CONFIG_FILE).display()
            );
            Ok((format!("seed {seed} "), xe))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xe_models_are_the_runs_or_every_seeds_in_seed_order() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let err = xe_models(run).unwrap_err().to_string();
        assert!(err.contains("holds no XE model"), "{err}");
        let model = |sub: &str| {
            let d = run.join(sub);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(CAPTIONER_CONFIG_FILE), "{}").unwrap();
        };
        for seed in [10, 0, 2] {
            model(&format!("seed-{seed}/xe"));
        }
        model("seed-x/xe"); // not a seed folder
        let found = xe_models(run).unwrap();
        let labels: Vec<&str> = found.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["seed 0 ", "seed 2 ", "seed 10 "]);
        assert_eq!(found[2].1, run.join("seed-10/xe"));
        // A seed whose run did not finish is not left out silently.
        std::fs::create_dir_all(run.join("seed-3/xe")).unwrap();
        let err = xe_models(run).unwrap_err().to_string();
        assert!(err.contains("seed-3 has no XE model"), "{err}");
        std::fs::remove_dir_all(run.join("seed-3")).unwrap();
        // Both layouts in one folder: refused, naming both.
        model("xe");
        let err = xe_models(run).unwrap_err().to_string();
        assert!(
            err.contains("holds both") && err.contains("seed-0"),
            "{err}"
        );
        // A one-seed run's own model.
        for seed in [10, 0, 2] {
            std::fs::remove_dir_all(run.join(format!("seed-{seed}"))).unwrap();
        }
        assert_eq!(
            xe_models(run).unwrap(),
            vec![(String::new(), run.join("xe"))]
        );
    }

    #[test]
    fn mirror_cosines_are_one_for_an_encoder_blind_to_position() {
        let pixels = Tensor::randn([6, 3, 4, 4], (tch::Kind::Float, Device::Cpu));
        // Channel means: the same for an image and its mirrors.
        let blind = mirror_cosines(
            |p| Ok(p.f_mean_dim([2i64, 3].as_slice(), false, None)?),
            &pixels,
        )
        .unwrap();
        assert!((blind.horizontal - 1.0).abs() < 1e-6, "{blind:?}");
        assert!((blind.vertical - 1.0).abs() < 1e-6, "{blind:?}");
        // Every pixel in its place: a mirror is another vector.
        let seeing = mirror_cosines(|p| Ok(p.f_flatten(1, 3)?), &pixels).unwrap();
        assert!(
            seeing.horizontal < 0.9 && seeing.vertical < 0.9,
            "{seeing:?}"
        );
        assert!(seeing.between.abs() < 0.5, "{seeing:?}");
        assert!(mirror_cosines(|p| Ok(p.f_flatten(1, 3)?), &pixels.narrow(0, 0, 1)).is_err());
    }
}
