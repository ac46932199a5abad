//! `dicoflow diagnose` on a run folder laid out as `dicoflow demo` writes it, with a
//! tiny world and random evaluator and captioner weights the test makes.

mod common;

use std::path::Path;

use common::clip::save_tiny_clip;
use common::dicoflow;
use common::train::write_vocab;
use dicoflow::data::world::{write_world, WorldSpec};
use dicoflow::data::{LayoutOptions, ShardIndex, ShardSource, SourceConfig, SourceItem};
use dicoflow::model::captioner::{Captioner, CaptionerConfig, Vocab};
use dicoflow::model::clip::ClipConfig;
use tch::nn::VarStore;
use tch::Device;

/// A run folder: `data/{train,val,test}`, `vocab.json`, `evaluator/`, `xe/`.
fn run_folder(run: &Path) {
    let spec = WorldSpec {
        seed: 3,
        train: 40,
        val: 2,
        test: 12,
        rows_per_shard: 20,
        rows_per_row_group: 10,
        ..Default::default()
    };
    write_world(&run.join("data"), &spec, false, |_| {}).unwrap();
    let index = std::sync::Arc::new(
        ShardIndex::open(&run.join("data/train"), &LayoutOptions::default()).unwrap(),
    );
    let mut captions = Vec::new();
    let cfg = SourceConfig {
        shuffle: false,
        ..Default::default()
    };
    for item in ShardSource::new(index, cfg, 0, 1).unwrap() {
        if let SourceItem::Sample(s) = item.unwrap() {
            captions.extend(s.captions);
        }
    }
    let vocab = Vocab::build(&captions, 1, None);
    write_vocab(run, &vocab);

    // The captioner's initialisation continues libtorch's RNG after the evaluator's.
    let clip_cfg = ClipConfig::tiny();
    let eval = run.join("evaluator");
    std::fs::create_dir_all(&eval).unwrap();
    save_tiny_clip(&eval.join("model.safetensors"), 9);
    std::fs::write(
        eval.join("clip_config.json"),
        serde_json::to_string(&clip_cfg).unwrap(),
    )
    .unwrap();

    let cap = CaptionerConfig {
        feature_dim: clip_cfg.vision.width,
        ..CaptionerConfig::tiny_words(vocab.len() as i64)
    };
    let xe = run.join("xe");
    std::fs::create_dir_all(&xe).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let _model = Captioner::new(vs.root(), &cap).unwrap();
    vs.save(xe.join("model.safetensors")).unwrap();
    std::fs::write(
        xe.join("captioner.json"),
        serde_json::to_string(&cap).unwrap(),
    )
    .unwrap();
}

#[test]
fn diagnose_prints_one_accuracy_per_corruption_and_the_rank_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    run_folder(&run);
    let o = dicoflow(&[
        "diagnose",
        "--run",
        run.to_str().unwrap(),
        "--images",
        "8",
        "--beams",
        "3",
        "--examples",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("on 8 test images"), "{stdout}");
    for kind in [
        "colour",
        "shape",
        "relation",
        "position",
        "word_order",
        "repeat",
        "truncate",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {kind} |")))
            .unwrap_or_else(|| panic!("no row for {kind}: {stdout}"));
        // | kind | accuracy | compared | impossible |: every image is one or the other.
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let compared: usize = cells[3].parse().unwrap();
        let impossible: usize = cells[4].parse().unwrap();
        assert_eq!(compared + impossible, 8, "{row}");
    }
    assert!(stdout.contains("Kendall tau-b"), "{stdout}");
    // The first image's caption and its corruptions, each with a reward.
    let example: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("synth-test-000000: "))
        .take(8)
        .collect();
    assert_eq!(example.len(), 8, "{stdout}");
    assert!(example[1].trim_start().starts_with("colour "), "{stdout}");
    assert!(example[7].trim_start().starts_with("truncate "), "{stdout}");
    assert!(stdout.contains("3 beams"), "{stdout}");

    // A vocabulary that does not fit the captioner is refused, naming both.
    std::fs::write(
        run.join("vocab.json"),
        serde_json::to_string(&Vocab::build(&["a red circle"], 1, None)).unwrap(),
    )
    .unwrap();
    let o = dicoflow(&["diagnose", "--run", run.to_str().unwrap(), "--images", "2"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("do not match the caption text"), "{err}");

    // A folder that is not a run says what to give.
    let o = dicoflow(&["diagnose", "--run", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not a run folder written by `dicoflow demo`"),
        "{err}"
    );
}
