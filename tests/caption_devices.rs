//! `caption` over 2 devices: as threads of one process, each device captions
//! its share of every batch into the one output file, which then holds
//! exactly the lines of a one-device run; as 2 processes of a cluster, each
//! process writes its own file beside `out`, and the two files together hold
//! those lines.
mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{self, stderr, wait_all, Proc};

use common::clip::save_tiny_clip;
use common::train::{
    captioner_pipeline, stage_settings, train_config, world_pipeline, world_with_vocab,
};
use dicoflow::data::world::WorldSpec;
use dicoflow::flow::{run, Registry, RunOptions, StageSpec};
use dicoflow::model::clip::ClipConfig;
use dicoflow::train::captioning::Objective;
use dicoflow::train::stages::{register, WEIGHTS_FILE};
use dicoflow::train::Schedule;

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn two_devices_caption_the_same_lines_as_one() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let spec = WorldSpec {
        train: 40,
        val: 1,
        test: 1,
        rows_per_shard: 20,
        rows_per_row_group: 4,
        ..Default::default()
    };
    let vocab = world_with_vocab(root, &spec, 40);
    save_tiny_clip(&root.join("clip.safetensors"), 1);
    let mut reg = Registry::with_builtins();
    register(&mut reg);
    // A captioner after two XE steps.
    let schedule = Schedule {
        lr: 1e-3,
        total_steps: 2,
        ..Default::default()
    };
    let trained = stage_settings(
        root,
        "xe",
        &vocab,
        train_config(Objective::Xe, schedule, 2, 5),
    );
    run(
        &captioner_pipeline(root, &trained, vec![]),
        &reg,
        &RunOptions::threads(1),
    )
    .unwrap();
    let caption = |out: &str| {
        let mut s = toml::Table::new();
        s.insert(
            "captioner".into(),
            toml::Value::try_from(&trained.captioner).unwrap(),
        );
        let path = |p: &Path| toml::Value::String(p.to_string_lossy().into_owned());
        s.insert("weights".into(), path(&trained.out.join(WEIGHTS_FILE)));
        s.insert("vocab".into(), path(&root.join("vocab.json")));
        s.insert("backbone".into(), path(&root.join("clip.safetensors")));
        s.insert(
            "backbone_config".into(),
            toml::Value::try_from(ClipConfig::tiny()).unwrap(),
        );
        s.insert("out".into(), path(&root.join(out)));
        vec![StageSpec::new("caption").with_settings(s)]
    };
    let one = world_pipeline(root, 4, caption("one.jsonl"));
    run(&one, &reg, &RunOptions::threads(1)).unwrap();
    let mut two = world_pipeline(root, 4, caption("two.jsonl"));
    two.flow.devices = 2;
    run(&two, &reg, &RunOptions::threads(2)).unwrap();
    let (a, b) = (
        sorted_lines(&root.join("one.jsonl")),
        sorted_lines(&root.join("two.jsonl")),
    );
    assert_eq!(a.len(), 40);
    assert_eq!(a, b);

    // Two processes of one thread each, one device each.
    let mut procs = world_pipeline(root, 4, caption("procs.jsonl"));
    procs.flow.devices = 2;
    std::fs::write(root.join("procs.toml"), toml::to_string(&procs).unwrap()).unwrap();
    let spawn = |hostfile: &Path, p: usize| {
        let mut command = common::dicoflow_command();
        command
            .args(["train", "--quiet", "--pipeline"])
            .arg(root.join("procs.toml"))
            .args(cluster::cluster_args(hostfile, 2, p));
        Proc::spawn(command, root, &format!("p{p}"))
    };
    let mut last = String::new();
    for _attempt in 0..2 {
        let hostfile = cluster::hostfile(root, 2);
        let outs = wait_all(
            vec![spawn(&hostfile, 0), spawn(&hostfile, 1)],
            Duration::from_secs(120),
        );
        if outs.iter().all(|o| o.status.success()) {
            assert!(!root.join("procs.jsonl").exists());
            let p0 = sorted_lines(&root.join("procs.process-0-of-2.jsonl"));
            let p1 = sorted_lines(&root.join("procs.process-1-of-2.jsonl"));
            assert!(
                !p0.is_empty() && !p1.is_empty(),
                "{} and {}",
                p0.len(),
                p1.len()
            );
            let mut both = [p0, p1].concat();
            both.sort();
            assert_eq!(both, a);
            return;
        }
        last = outs.iter().map(stderr).collect::<Vec<_>>().join("\n---\n");
    }
    panic!("cluster run failed twice:\n{last}");
}
