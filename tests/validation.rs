//! Validation during captioner training (CPU, tiny models): validations run
//! at step 0, every N steps and after the last step and log `val/*` values
//! to `metrics.jsonl`; the logged CIDEr-D equals `dicoflow eval` on the
//! captions the validation wrote; `model.safetensors` is the checkpoint of
//! the best step by the chosen metric (and `final.safetensors` the last);
//! a resumed run keeps the best so far and ends with the same model as an
//! uninterrupted one; settings that cannot be honoured are build errors
//! naming the setting.
mod common;

use common::clip::save_tiny_clip;
use common::train::{
    captioner_pipeline, crash_stage, registry_with_crash, stage_settings, train_config,
    world_with_vocab,
};
use common::{dicoflow_command, json_output};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicoflow::data::world::{generate_row, WorldSpec};
use dicoflow::flow::{run, FlowError, Pipeline, RunOptions};
use dicoflow::metrics::quality::caption_quality;
use dicoflow::model::captioner::Vocab;
use dicoflow::model::clip::ClipConfig;
use dicoflow::train::captioning::Objective;
use dicoflow::train::stages::{CaptionerStage, CaptionerStageSettings, WEIGHTS_FILE};
use dicoflow::train::validation::{Mode, ValidationSettings};
use dicoflow::train::Schedule;
use tch::Tensor;

/// Runs take turns (libtorch's global RNG and thread pool, see train_resume.rs).
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const TRAIN_IMAGES: usize = 48;
const VAL_IMAGES: usize = 10;

/// The world of these tests.
fn world_spec() -> WorldSpec {
    WorldSpec {
        train: TRAIN_IMAGES,
        val: VAL_IMAGES,
        test: 1,
        rows_per_shard: 48,
        rows_per_row_group: 8,
        ..Default::default()
    }
}

/// The world's train and val shards, a word vocabulary and a random tiny
/// CLIP backbone under `root`.
fn setup(root: &Path) -> Vocab {
    let vocab = world_with_vocab(root, &world_spec(), TRAIN_IMAGES);
    save_tiny_clip(&root.join("clip.safetensors"), 1);
    vocab
}

fn validation(root: &Path, best_by: Option<&str>, mode: Option<Mode>) -> ValidationSettings {
    let toml = format!(
        "shards = {:?}\nevery = 2\nmetrics = [\"BLEU\", \"ROUGE-L\", \"CIDEr\"]\nbatch_size = 4\n",
        root.join("data/val")
    );
    let mut v: ValidationSettings = toml::from_str(&toml).unwrap();
    v.best_by = best_by.map(str::to_owned);
    v.mode = mode;
    v
}

/// XE over the 6 batches of 8 training images, a checkpoint every
/// `checkpoint_every` steps, validation as given.
fn settings(
    root: &Path,
    out: &str,
    vocab: &Vocab,
    checkpoint_every: u64,
    validation: Option<ValidationSettings>,
) -> CaptionerStageSettings {
    let schedule = Schedule {
        lr: 3e-3,
        warmup_fraction: 0.0,
        total_steps: 6,
        ..Default::default()
    };
    CaptionerStageSettings {
        checkpoint_every,
        keep_last: 10,
        resume: true,
        validation,
        ..stage_settings(
            root,
            out,
            vocab,
            train_config(Objective::Xe, schedule, 2, 5),
        )
    }
}

fn pipeline(root: &Path, s: &CaptionerStageSettings, crash_at: Option<u64>) -> Pipeline {
    captioner_pipeline(root, s, crash_at.map(crash_stage).into_iter().collect())
}

/// Runs the pipeline, logging `metrics.jsonl` to `out`.
fn train(root: &Path, s: &CaptionerStageSettings, crash_at: Option<u64>) -> Result<(), FlowError> {
    let mut opts = RunOptions::threads(1);
    opts.run_dir = Some(s.out.clone());
    run(&pipeline(root, s, crash_at), &registry_with_crash(), &opts).map(|_| ())
}

/// The `val/*` values of every validation in `out/metrics.jsonl`, by step.
fn validations(out: &Path) -> BTreeMap<u64, BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(m) = v.get("metrics").and_then(|m| m.as_object()) else {
            continue;
        };
        let Some(step) = m.get("val/step").and_then(|s| s.as_f64()) else {
            continue;
        };
        let vals: BTreeMap<String, f64> = m
            .iter()
            .filter(|(k, _)| k.starts_with("val/"))
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
            .collect();
        let previous = found.insert(step as u64, vals);
        assert!(previous.is_none(), "step {step} validated twice");
    }
    found
}

fn weights(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn same(a: &Path, b: &Path) -> bool {
    let (a, b) = (weights(a), weights(b));
    assert!(!a.is_empty());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|((na, ta), (nb, tb))| na == nb && ta.equal(tb))
}

fn checkpoint(out: &Path, step: u64) -> PathBuf {
    out.join(format!("checkpoints/step-{step:08}/model.safetensors"))
}

/// `dicoflow score --json` on the captions validation wrote at `step` (in
/// `dir`), the val images and the backbone's tiny CLIP, on CPU.
fn score_command(root: &Path, dir: &Path, step: u64) -> std::process::Command {
    let mut cmd = dicoflow_command();
    cmd.arg("score")
        .arg("--results")
        .arg(dir.join(format!("step-{step:08}.json")))
        .arg("--images")
        .arg(root.join("data/val"))
        .arg("--clip")
        .arg(root.join("clip.safetensors"))
        .args(["--clip-config", "tiny", "--device", "cpu", "--json"]);
    cmd
}

/// The step whose value of `metric` is best (the first of equal ones).
fn best_step(vals: &BTreeMap<u64, BTreeMap<String, f64>>, metric: &str, higher: bool) -> u64 {
    let mut best: Option<(u64, f64)> = None;
    for (&step, v) in vals {
        let x = v[metric];
        let better = match best {
            None => true,
            Some((_, b)) if higher => x > b,
            Some((_, b)) => x < b,
        };
        if better {
            best = Some((step, x));
        }
    }
    best.unwrap().0
}

#[test]
fn validation_logs_its_metrics_and_keeps_the_best_model() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let s = settings(
        root,
        "run",
        &vocab,
        2,
        Some(validation(root, Some("ROUGE-L"), None)),
    );
    train(root, &s, None).unwrap();

    // Step 0 (before training), every 2 steps, and the last (6).
    let vals = validations(&s.out);
    assert_eq!(vals.keys().copied().collect::<Vec<_>>(), [0, 2, 4, 6]);
    for v in vals.values() {
        let names: Vec<&str> = v.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "val/Bleu_1",
                "val/Bleu_2",
                "val/Bleu_3",
                "val/Bleu_4",
                "val/CIDEr",
                "val/ROUGE_L",
                "val/grammatical",
                "val/images",
                "val/precision",
                "val/recall",
                "val/skipped",
                "val/step",
            ]
        );
        assert_eq!(v["val/images"], VAL_IMAGES as f64);
    }

    // On the synthetic world, the oracle judge's values of the captions the
    // validation wrote, each image's scene regenerated from its row.
    for (step, v) in &vals {
        let file = s.out.join(format!("validation/step-{step:08}.json"));
        let results: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let (mut scenes, mut captions, mut references) = (Vec::new(), Vec::new(), Vec::new());
        for r in &results {
            let key = r["image_id"].as_str().unwrap();
            let index: usize = key.strip_prefix("synth-val-").unwrap().parse().unwrap();
            let (scene, row) = generate_row(&world_spec(), 1, index).unwrap();
            scenes.push(scene);
            captions.push(r["caption"].as_str().unwrap().to_owned());
            references.push(row.captions);
        }
        let q = caption_quality(&scenes, &captions, &references).unwrap();
        assert_eq!(q.images, VAL_IMAGES);
        assert_eq!(v["val/grammatical"], q.grammatical, "step {step}");
        assert_eq!(v["val/precision"], q.precision, "step {step}");
        assert_eq!(v["val/recall"], q.recall, "step {step}");
    }
    assert!(
        vals.values()
            .any(|v| v["val/CIDEr"] != vals[&0]["val/CIDEr"]),
        "training changed no validation value: {vals:?}"
    );

    // The logged values are those `dicoflow eval` computes on the captions
    // the validation wrote.
    for (step, v) in &vals {
        let dir = s.out.join("validation");
        let eval: BTreeMap<String, f64> = json_output(
            dicoflow_command()
                .arg("eval")
                .arg("--annotations")
                .arg(dir.join("annotations.json"))
                .arg("--results")
                .arg(dir.join(format!("step-{step:08}.json")))
                .arg("--json"),
        );
        for name in ["CIDEr", "Bleu_4", "ROUGE_L"] {
            assert_eq!(
                v[&format!("val/{name}")],
                eval[name],
                "{name} at step {step}"
            );
        }
    }

    // model.safetensors is the checkpoint of the best step by ROUGE-L (a
    // step during training here, so the comparison is with a checkpoint);
    // final.safetensors the last.
    let best = best_step(&vals, "val/ROUGE_L", true);
    assert_ne!(best, 0, "{vals:?}");
    assert!(
        same(&s.out.join(WEIGHTS_FILE), &checkpoint(&s.out, best)),
        "best step {best}"
    );
    assert!(same(
        &s.out.join("final.safetensors"),
        &checkpoint(&s.out, 6)
    ));
    if best != 6 {
        assert!(!same(&s.out.join(WEIGHTS_FILE), &checkpoint(&s.out, 6)));
    }
    let record = common::json_file(&s.out.join("best/best.json"));
    assert_eq!(record["step"], best);
    assert_eq!(record["metric"], "ROUGE_L");
    // Only the best weights are kept.
    let kept: Vec<_> = std::fs::read_dir(s.out.join("best"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert_eq!(kept, [format!("step-{best:08}.safetensors")]);
}

#[test]
fn mode_min_and_keep_final_are_honoured() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let mut v = validation(root, Some("Bleu_4"), Some(Mode::Min));
    v.at_start = false;
    let s = settings(root, "min", &vocab, 2, Some(v.clone()));
    train(root, &s, None).unwrap();
    let vals = validations(&s.out);
    assert_eq!(vals.keys().copied().collect::<Vec<_>>(), [2, 4, 6]);
    let best = best_step(&vals, "val/Bleu_4", false);
    assert!(same(&s.out.join(WEIGHTS_FILE), &checkpoint(&s.out, best)));

    v.keep = Some(dicoflow::train::validation::Keep::Final);
    let s = settings(root, "final", &vocab, 2, Some(v));
    train(root, &s, None).unwrap();
    assert!(same(&s.out.join(WEIGHTS_FILE), &checkpoint(&s.out, 6)));
    assert!(!s.out.join("final.safetensors").exists());
}

#[test]
fn a_resumed_run_keeps_the_best_so_far() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    // Choose the direction so that the best is not the last validation:
    // then a resumed run that forgot the best so far would select step 6.
    let probe = settings(root, "probe", &vocab, 4, Some(validation(root, None, None)));
    train(root, &probe, None).unwrap();
    let vals = validations(&probe.out);
    let mode = if best_step(&vals, "val/CIDEr", true) != 6 {
        Mode::Max
    } else {
        Mode::Min
    };
    let higher = mode == Mode::Max;
    assert_ne!(best_step(&vals, "val/CIDEr", higher), 6, "{vals:?}");

    let v = validation(root, Some("CIDEr"), Some(mode));
    let straight = settings(root, "straight", &vocab, 4, Some(v.clone()));
    train(root, &straight, None).unwrap();

    // Checkpoint at step 4 (after batch 3); the crash at batch 5 comes after
    // step 6 and its validation: the resumed run trains steps 5 and 6 again.
    let interrupted = settings(root, "interrupted", &vocab, 4, Some(v));
    let err = train(root, &interrupted, Some(5)).unwrap_err();
    assert!(matches!(err, FlowError::StagePanicked { .. }), "{err}");
    let state = dicoflow::train::Checkpointer::read_state(
        checkpoint(&interrupted.out, 4).parent().unwrap(),
    )
    .unwrap();
    let recorded = state.best.expect("the checkpoint records the best so far");
    assert_eq!(recorded.metric, "CIDEr");
    assert!(recorded.step <= 4);
    train(root, &interrupted, None).unwrap();

    assert!(same(
        &straight.out.join(WEIGHTS_FILE),
        &interrupted.out.join(WEIGHTS_FILE)
    ));
    let (a, b) = (
        common::json_file(&straight.out.join("best/best.json")),
        common::json_file(&interrupted.out.join("best/best.json")),
    );
    assert_eq!(a, b);
    assert_eq!(a["step"], best_step(&vals, "val/CIDEr", higher));

    // The resumed run's logs hold every batch and validation once, with the
    // uninterrupted run's values (`validations` refuses a step logged twice).
    assert_eq!(validations(&interrupted.out), validations(&straight.out));
    let batches = |out: &Path| -> Vec<(u64, serde_json::Value)> {
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("samples").is_some())
            .map(|v| (v["time"].as_u64().unwrap(), v["metrics"].clone()))
            .collect()
    };
    assert_eq!(batches(&interrupted.out), batches(&straight.out));
    let validation_log =
        |out: &Path| std::fs::read_to_string(out.join("validation/log.jsonl")).unwrap();
    assert_eq!(
        validation_log(&interrupted.out),
        validation_log(&straight.out)
    );
}

fn build_error(root: &Path, vocab: &Vocab, v: ValidationSettings) -> String {
    let s = settings(root, "bad", vocab, 0, Some(v));
    match CaptionerStage::try_new(s) {
        Ok(_) => panic!("the stage was built"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn settings_that_cannot_be_honoured_are_build_errors() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let toml = format!(
        "shards = {:?}\nevery = 2\nmetrics = [\"CIDEr\", \"SPICE\"]\n",
        root.join("data/val")
    );
    let err = toml::from_str::<ValidationSettings>(&toml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown validation metric `SPICE`"), "{err}");

    let err = build_error(root, &vocab, validation(root, Some("RefPAC-S"), None));
    assert!(
        err.contains("validation.best_by") && err.contains("RefPAC-S"),
        "{err}"
    );

    let mut v = validation(root, None, None);
    v.metrics.push("RefPAC-S".parse().unwrap());
    let err = build_error(root, &vocab, v);
    assert!(err.contains("validation.pac"), "{err}");

    let mut v = validation(root, None, None);
    v.metrics.push("METEOR".parse().unwrap());
    v.meteor_data = Some(root.join("no-meteor-here"));
    let err = build_error(root, &vocab, v);
    assert!(err.contains("validation.meteor_data"), "{err}");

    let mut v = validation(root, None, None);
    v.metrics.push("reward".parse().unwrap());
    let err = build_error(root, &vocab, v);
    assert!(
        err.contains("validation.metrics") && err.contains("reward"),
        "{err}"
    );

    let mut v = validation(root, None, None);
    v.keep = Some(dicoflow::train::validation::Keep::Best);
    let err = build_error(root, &vocab, v);
    assert!(err.contains("validation.keep"), "{err}");

    let mut v = validation(root, None, None);
    v.every = 0;
    let err = build_error(root, &vocab, v);
    assert!(err.contains("validation.every"), "{err}");

    let mut v = validation(root, Some("CIDEr"), None);
    v.shards = root.join("data/missing");
    let err = build_error(root, &vocab, v);
    assert!(err.contains("validation.shards"), "{err}");
}

fn shipped_validation(name: &str) -> ValidationSettings {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name);
    let p = Pipeline::load(&path).unwrap();
    let s: CaptionerStageSettings = toml::Value::Table(p.device[0].settings.clone())
        .try_into()
        .unwrap();
    s.validation.expect("the COCO pipelines validate")
}

#[test]
fn coco_pipelines_select_as_the_paper_does() {
    // XE by CIDEr(-D), DiCO by RefPAC-S with the PAC-S weights, both on the
    // Karpathy val split, keeping the best model (the default with best_by).
    let xe = shipped_validation("coco_xe.toml");
    let dico = shipped_validation("coco_dico.toml");
    assert_eq!(xe.best_by.as_deref(), Some("CIDEr"));
    assert_eq!(dico.best_by.as_deref(), Some("RefPAC-S"));
    assert!(dico.metrics.contains(&"RefPAC-S".parse().unwrap()));
    assert_eq!(
        dico.pac.as_deref(),
        Some(Path::new("weights/pacs_vit_b_32.safetensors"))
    );
    assert_eq!(dico.pac_config, Some(ClipConfig::vit_b_32()));
    for v in [&xe, &dico] {
        assert_eq!(v.shards, Path::new("data/coco/val"));
        assert_eq!((v.mode, v.keep), (None, None));
    }
}

#[test]
fn every_validation_is_in_the_metrics_log_and_the_validation_log() {
    // every = 1: the first batch validates step 0 and step 1; step 1's
    // values go into a line of their own after the batch's, so the metrics
    // log has every validation, the last one included, as log.jsonl has.
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let mut v = validation(root, None, None);
    v.every = 1;
    v.metrics = vec!["CIDEr".parse().unwrap()];
    let s = settings(root, "every1", &vocab, 0, Some(v));
    train(root, &s, None).unwrap();
    let logged = validations(&s.out);
    assert_eq!(
        logged.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5, 6]
    );
    let text = std::fs::read_to_string(s.out.join("validation/log.jsonl")).unwrap();
    let all: Vec<BTreeMap<String, f64>> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<f64> = all.iter().map(|v| v["val/step"]).collect();
    assert_eq!(steps, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    for v in &all {
        assert_eq!(v, &logged[&(v["val/step"] as u64)]);
    }
    // Steps 0 and 1 are logged at the first batch's time, step 1's line
    // right after the batch's and holding only its validation.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(s.out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("metrics").is_some())
        .collect();
    assert_eq!(lines[0]["metrics"]["val/step"], 0.0);
    assert_eq!(lines[1]["metrics"]["val/step"], 1.0);
    assert_eq!(lines[0]["time"], lines[1]["time"]);
    let own = lines[1]["metrics"].as_object().unwrap();
    assert!(own.keys().all(|k| k.starts_with("val/")), "{own:?}");
    // A second run into the same folder without resume starts a new log.
    train(root, &s, None).unwrap();
    let again = std::fs::read_to_string(s.out.join("validation/log.jsonl")).unwrap();
    assert_eq!(again, text, "a fresh run's log is its own");
}

#[test]
fn clip_based_values_equal_dicoflow_score_on_the_same_captions() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    // The backbone's random tiny CLIP stands in for both CLIP and PAC-S.
    let mut v = validation(root, Some("RefPAC-S"), None);
    v.every = 3;
    v.at_start = false;
    v.metrics = ["CLIP-S", "RefCLIP-S", "PAC-S", "RefPAC-S"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    v.clip = Some(root.join("clip.safetensors"));
    v.pac = Some(root.join("clip.safetensors"));
    let s = settings(root, "clip", &vocab, 3, Some(v));
    train(root, &s, None).unwrap();
    let vals = validations(&s.out);
    assert_eq!(vals.keys().copied().collect::<Vec<_>>(), [3, 6]);
    for v in vals.values() {
        for n in ["CLIP-S", "RefCLIP-S", "PAC-S", "RefPAC-S"] {
            assert!(v[&format!("val/{n}")] > 0.0, "{v:?}");
        }
    }
    let dir = s.out.join("validation");
    for (step, v) in &vals {
        for (metric, name, ref_name) in [
            ("clip-s", "CLIP-S", "RefCLIP-S"),
            ("pac-s", "PAC-S", "RefPAC-S"),
        ] {
            let got: BTreeMap<String, f64> = json_output(
                score_command(root, &dir, *step)
                    .arg("--annotations")
                    .arg(dir.join("annotations.json"))
                    .args(["--metric", metric]),
            );
            for n in [name, ref_name] {
                let (a, b) = (v[&format!("val/{n}")], got[n]);
                assert!((a - b).abs() < 1e-5, "{n} at step {step}: {a} vs {b}");
            }
        }
    }
    let best = best_step(&vals, "val/RefPAC-S", true);
    assert!(same(&s.out.join(WEIGHTS_FILE), &checkpoint(&s.out, best)));
}

#[test]
fn dico_validates_its_reward_as_dicoflow_score_computes_it() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = setup(root);
    let xe = settings(root, "xe", &vocab, 0, None);
    train(root, &xe, None).unwrap();

    // DiCO from the XE weights with the backbone's CLIP as evaluator (the
    // paper's reward: PAC-S weight 2.0, no prefix, no clipping).
    let mut v = validation(root, None, None);
    v.metrics = vec!["reward".parse().unwrap(), "CIDEr".parse().unwrap()];
    let mut s = settings(root, "dico", &vocab, 0, Some(v));
    s.train.objective = Objective::Dico;
    s.train.schedule.total_steps = 2;
    s.train.schedule.lr = 1e-4;
    s.init = Some(xe.out.join(WEIGHTS_FILE));
    s.evaluator = Some(root.join("clip.safetensors"));
    train(root, &s, None).unwrap();
    let vals = validations(&s.out);
    assert_eq!(vals.keys().copied().collect::<Vec<_>>(), [0, 2]);
    let dir = s.out.join("validation");
    for (step, v) in &vals {
        let got: BTreeMap<String, f64> = json_output(score_command(root, &dir, *step).args([
            "--metric",
            "pac-s",
            "--no-prefix",
            "--no-clipping",
        ]));
        let (a, b) = (v["val/reward"], got["PAC-S"]);
        assert!((a - b).abs() < 1e-5, "reward at step {step}: {a} vs {b}");
    }
    // Without `best_by`, model.safetensors is the final model.
    assert!(!s.out.join("best").exists());
    assert!(!s.out.join("final.safetensors").exists());
}
