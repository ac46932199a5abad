//! The demo's phases as pipeline files (`pipelines/demo/*.toml`): each one,
//! with the demo's paths, seeds and step counts filled in, is a valid
//! pipeline whose stages accept their settings; and model configs given by
//! the path of the JSON file a stage writes are read from that file.
mod common;

use std::path::Path;

use dicoflow::cli::demo::{
    caption_with, dico_at_beta, fill_phase, load_phase, Fill, Phase, SHARED,
};
use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::flow::Pipeline;
use dicoflow::model::captioner::CaptionerConfig;
use dicoflow::model::clip::ClipConfig;

/// A world of 400 training images in row groups of 100: with 2 workers each
/// reads 200 rows per epoch.
fn tiny_world(dir: &Path) {
    let spec = WorldSpec {
        train: 400,
        val: 20,
        test: 20,
        ..Default::default()
    };
    write_world(&dir.join("data"), &spec, false, |_| {}).unwrap();
}

fn fill(out: &Path) -> Fill<'_> {
    Fill {
        out,
        seed_out: out,
        seed: 5,
        workers: 2,
        vocab_size: 77,
        evaluator_epochs: None,
        xe_epochs: None,
        rl_epochs: None,
        rl_lr: Some(1e-5),
        beta: None,
    }
}

fn setting<'a>(p: &'a Pipeline, path: &[&str]) -> &'a toml::Value {
    let mut v = p.device[0].settings.get(path[0]).unwrap();
    for key in &path[1..] {
        v = v
            .get(key)
            .unwrap_or_else(|| panic!("no {}", path.join(".")));
    }
    v
}

/// Every string in the pipeline, for the check that no `runs/demo` is left.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(m) => m.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

#[test]
fn every_demo_phase_fills_into_a_valid_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    tiny_world(out);
    let registry = dicoflow::train::stages::registry();
    let fill = fill(out);
    let mut filled = Vec::new();
    for phase in Phase::ALL {
        // The embedded copy is the shipped file.
        let on_disk = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("pipelines/demo")
            .join(format!("{}.toml", phase.name()));
        let from_dir = load_phase(phase, on_disk.parent()).unwrap();
        assert_eq!(from_dir, load_phase(phase, None).unwrap());
        let p = fill_phase(phase, from_dir, &fill)
            .unwrap_or_else(|e| panic!("{}: {e:#}", phase.name()));
        p.check().unwrap();
        let mut all = Vec::new();
        strings(&serde_json::to_value(&p).unwrap(), &mut all);
        assert!(
            !all.iter().any(|s| s.contains("runs/demo")),
            "{}: a path was not moved under --out: {all:?}",
            phase.name()
        );
        // What the stages write for the later phases: the evaluator's CLIP
        // config and the captioners' config, as `finish` writes them.
        let out_dir =
            |p: &Pipeline| Path::new(setting(p, &["out"]).as_str().unwrap()).to_path_buf();
        match phase {
            Phase::Evaluator => {
                let clip: ClipConfig = setting(&p, &["train", "clip"]).clone().try_into().unwrap();
                std::fs::create_dir_all(out_dir(&p)).unwrap();
                std::fs::write(
                    out_dir(&p).join("clip_config.json"),
                    serde_json::to_string_pretty(&clip).unwrap(),
                )
                .unwrap();
            }
            Phase::Xe | Phase::Dico | Phase::Scst | Phase::DicoOffline => {
                let cfg: CaptionerConfig = setting(&p, &["captioner"]).clone().try_into().unwrap();
                std::fs::create_dir_all(out_dir(&p)).unwrap();
                std::fs::write(
                    out_dir(&p).join("captioner.json"),
                    serde_json::to_string_pretty(&cfg).unwrap(),
                )
                .unwrap();
            }
            _ => {}
        }
        registry
            .check(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", phase.name()));
        filled.push((phase, p));
    }
    let get = |phase: Phase| &filled.iter().find(|(ph, _)| *ph == phase).unwrap().1;
    let int = |p: &Pipeline, path: &[&str]| setting(p, path).as_integer().unwrap();

    // Steps from the data: 200 rows per worker and epoch.
    let tower = get(Phase::ImageTower);
    assert_eq!(tower.source.seed, 5);
    assert_eq!(int(tower, &["train", "seed"]), 5);
    assert_eq!(
        int(tower, &["train", "schedule", "total_steps"]),
        16 * 200 / 32
    );
    let eval = get(Phase::Evaluator);
    assert_eq!(eval.source.seed, 5);
    assert_eq!(
        int(eval, &["train", "schedule", "total_steps"]),
        8 * 200 / 32
    );
    // The evaluator starts from the tower the image tower phase writes.
    assert_eq!(
        setting(eval, &["init"]).as_str(),
        Some(out.join("image_tower/model.safetensors").to_str().unwrap())
    );
    let xe = get(Phase::Xe);
    assert_eq!(xe.source.seed, 6);
    assert_eq!(int(xe, &["train", "seed"]), 5);
    assert_eq!(int(xe, &["train", "schedule", "total_steps"]), 8 * 200 / 32);
    assert_eq!(int(xe, &["validation", "every"]), 50 / 8);
    assert_eq!(int(xe, &["captioner", "tokens", "vocab_size"]), 77);
    for phase in [Phase::Dico, Phase::Scst, Phase::DicoOffline] {
        let p = get(phase);
        assert_eq!(p.source.seed, 7, "{}", phase.name());
        assert_eq!(int(p, &["train", "schedule", "total_steps"]), 200 / 8);
        assert_eq!(int(p, &["validation", "every"]), 25 / 8);
        for lr in [&["train", "optimizer", "lr"], &["train", "schedule", "lr"]] {
            assert_eq!(setting(p, lr).as_float(), Some(1e-5), "{}", phase.name());
        }
        assert_eq!(
            setting(p, &["init"]).as_str(),
            Some(out.join("xe/model.safetensors").to_str().unwrap())
        );
    }
    // The data order of the cache and of captioning is the file's.
    assert_eq!(get(Phase::RewardCache).source.seed, 0);
    assert_eq!(int(get(Phase::RewardCache), &["seed"]), 5);
    assert_eq!(
        get(Phase::DicoOffline).device[0].settings["reward_cache"].as_str(),
        Some(out.join("reward_cache").to_str().unwrap())
    );

    // Captioning with each trained model reads that model's files.
    let dico_dir = out.join("dico");
    let p = caption_with(get(Phase::Caption).clone(), &dico_dir).unwrap();
    registry.check(&p).unwrap();
    for (key, file) in [
        ("captioner", "captioner.json"),
        ("weights", "model.safetensors"),
        ("out", "test_captions.jsonl"),
    ] {
        assert_eq!(
            p.device[0].settings[key].as_str(),
            Some(dico_dir.join(file).to_str().unwrap())
        );
    }
}

/// With several seeds, the fixed setting (world, vocabulary, evaluator) is
/// read from the shared folder and everything a captioner phase writes or
/// reads from another captioner phase lives in the seed's folder.
#[test]
fn with_seeds_shared_paths_stay_and_the_rest_moves_to_the_seed_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    tiny_world(out);
    let seed_out = out.join("seed-7");
    let fill = Fill {
        seed_out: &seed_out,
        seed: 7,
        ..fill(out)
    };
    assert_eq!(SHARED, ["data", "vocab.json", "image_tower", "evaluator"]);
    let shared_keys = ["backbone", "backbone_config", "evaluator", "vocab", "world"];
    let seed_keys = ["out", "init", "reward_cache", "weights"];
    let mut checked = (0, 0);
    for phase in Phase::ALL {
        let p = fill_phase(phase, load_phase(phase, None).unwrap(), &fill).unwrap();
        let data = p.source.path.clone().unwrap();
        assert!(
            data.starts_with(out.join("data")),
            "{}: {data:?}",
            phase.name()
        );
        let s = &p.device[0].settings;
        let shards = s
            .get("validation")
            .and_then(|v| v.get("shards"))
            .and_then(|v| v.as_str());
        let mut shared: Vec<(&str, &str)> = shared_keys
            .iter()
            .filter_map(|k| Some((*k, s.get(*k)?.as_str()?)))
            .collect();
        shared.extend(shards.map(|v| ("validation.shards", v)));
        for (key, value) in shared {
            let path = Path::new(value);
            assert!(
                path.starts_with(out) && !path.starts_with(&seed_out),
                "{}: {key} = {value} is not in the shared folder",
                phase.name()
            );
            checked.0 += 1;
        }
        let mut own: Vec<(&str, &str)> = seed_keys
            .iter()
            .filter_map(|k| Some((*k, s.get(*k)?.as_str()?)))
            .collect();
        // A captioner config given as a file is the XE phase's output.
        own.extend(
            s.get("captioner")
                .and_then(|v| v.as_str())
                .map(|v| ("captioner", v)),
        );
        for (key, value) in own {
            let in_seed = Path::new(value).starts_with(&seed_out);
            // The evaluator and its image tower are made once: their own
            // outputs (and the tower the evaluator starts from) are shared.
            let want = !matches!(phase, Phase::Evaluator | Phase::ImageTower);
            assert_eq!(in_seed, want, "{}: {key} = {value}", phase.name());
            checked.1 += 1;
        }
    }
    // Every phase names the world and the evaluator; every captioner phase
    // its own folder and the XE model it starts from.
    assert!(checked.0 >= 20 && checked.1 >= 12, "{checked:?}");

    // One run of a β sweep: its own folder in the seed's, its β.
    let dico = fill_phase(Phase::Dico, load_phase(Phase::Dico, None).unwrap(), &fill).unwrap();
    let p = dico_at_beta(dico, 0.05, &seed_out).unwrap();
    assert_eq!(
        setting(&p, &["out"]).as_str(),
        Some(seed_out.join("dico-beta-0.05").to_str().unwrap())
    );
    assert_eq!(
        setting(&p, &["train", "dico", "beta"]).as_float(),
        Some(0.05)
    );
    assert_eq!(
        setting(&p, &["init"]).as_str(),
        Some(seed_out.join("xe/model.safetensors").to_str().unwrap())
    );
}

#[test]
fn pipelines_dir_without_a_phase_file_is_refused_with_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_phase(Phase::Scst, Some(tmp.path())).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("scst.toml"), "{msg}");
}

#[test]
fn demo_checks_every_phase_file_before_writing_anything() {
    // A folder of edited copies missing a late phase's file fails at once,
    // before the world is written or a phase is trained.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mine");
    std::fs::create_dir_all(&dir).unwrap();
    for phase in Phase::ALL {
        if phase != Phase::Scst {
            let name = format!("{}.toml", phase.name());
            std::fs::write(dir.join(name), phase.embedded()).unwrap();
        }
    }
    let out = tmp.path().join("run");
    let o = common::dicoflow_command()
        .args(["demo", "--train", "40", "--out"])
        .arg(&out)
        .arg("--pipelines")
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("scst.toml"), "{err}");
    assert!(!out.join("data").exists(), "the world was written first");
}

/// The smallest demo with two seeds and two β: the folders of each seed and
/// β, the mean ± sd table, every seed's rows, the reward-vs-fluency chart
/// and the verdict (which cannot judge DiCO: the file's β 0.2 is not run).
#[test]
fn demo_with_seeds_and_betas_writes_per_seed_folders_and_the_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = common::dicoflow_command()
        // One libtorch thread: on a busy 2-core machine its spinning worker
        // threads made this run take from 15 s to over 3 minutes.
        .env("OMP_NUM_THREADS", "1")
        .args([
            "demo",
            "--train",
            "16",
            "--val",
            "8",
            "--test",
            "8",
            "--workers",
            "1",
            "--evaluator-epochs",
            "1",
            "--xe-epochs",
            "1",
            "--rl-epochs",
            "1",
            "--seeds",
            "2",
            "--betas",
            "0.05,1.0",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for shared in ["data", "evaluator", "vocab.json"] {
        assert!(out.join(shared).exists(), "{shared}");
    }
    assert!(!out.join("xe").exists() && !out.join("dico").exists());
    for seed in ["seed-0", "seed-1"] {
        for model in [
            "xe",
            "dico-beta-0.05",
            "dico-beta-1",
            "scst",
            "dico_offline",
        ] {
            let dir = out.join(seed).join(model);
            assert!(dir.join("model.safetensors").is_file(), "{}", dir.display());
            assert!(
                dir.join("test_captions.jsonl").is_file(),
                "{}",
                dir.display()
            );
        }
        assert!(out.join(seed).join("reward_cache").is_dir());
        // Every seed's curves, as the report and docs/training.md say.
        assert!(out.join(seed).join("report/summary.md").is_file(), "{seed}");
    }
    for ext in ["png", "svg"] {
        assert!(out
            .join(format!("report/reward_vs_fluency.{ext}"))
            .is_file());
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let rows = |model: &str| -> Vec<&str> {
        report
            .lines()
            .filter(|l| l.starts_with(&format!("| {model} |")) && l.contains(" ± "))
            .collect()
    };
    for model in ["XE", "DiCO β=0.05", "DiCO β=1", "SCST", "DiCO offline"] {
        assert_eq!(rows(model).len(), 1, "{model}: {report}");
        for seed in [0, 1] {
            assert!(
                report.contains(&format!("| {seed} | {model} | ")),
                "seed {seed}, {model}: {report}"
            );
        }
    }
    // Every column of the mean table has a spread.
    assert_eq!(rows("XE")[0].matches(" ± ").count(), 7, "{report}");
    assert!(report.contains(
        "![evaluator CLIP-S gained vs grammaticality lost](report/reward_vs_fluency.png)"
    ));
    let verdict = report
        .split("## Verdict")
        .nth(1)
        .expect("a Verdict section");
    assert_eq!(
        verdict.matches("**cannot be judged**").count(),
        3,
        "{verdict}"
    );
    assert!(
        verdict.contains("was not among --betas 0.05,1"),
        "{verdict}"
    );
    assert!(
        verdict.contains("The claim cannot be judged here."),
        "{verdict}"
    );
}

#[test]
fn beta_and_betas_together_or_a_repeated_beta_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = common::dicoflow_command()
        .args(["demo", "--beta", "0.2", "--betas", "0.05,1.0", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("--beta") && err.contains("--betas"), "{err}");
    assert!(!out.exists());
    // Two runs of one β would share a folder: refused before anything runs.
    let o = common::dicoflow_command()
        .args(["demo", "--betas", "0.2,0.20", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("0.2 is given twice"), "{err}");
    assert!(!out.exists());
    // One β is not a sweep: `--beta` says it (and sets offline DiCO's too).
    let o = common::dicoflow_command()
        .args(["demo", "--betas", "0.1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("use --beta 0.1"), "{err}");
    assert!(!out.exists());
    // A β that is not positive, with its sign read as a value, and no seeds:
    // refused before anything runs, saying what is wrong.
    for (args, says) in [
        (
            &["--beta", "-1"][..],
            "--beta -1: β must be a positive number",
        ),
        (&["--betas", "-1,0.2"][..], "-1 is not a positive number"),
        (&["--seeds", "0"][..], "the demo trains at least one seed"),
        (
            &["--seed", "9223372036854775806"][..],
            "the seeds pass 2^62",
        ),
        (
            &["--rl-lr", "-1"][..],
            "--rl-lr -1: the learning rate must be",
        ),
    ] {
        let o = common::dicoflow_command()
            .arg("demo")
            .args(args)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!out.exists());
    }
}
