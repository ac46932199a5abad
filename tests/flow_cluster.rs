//! Two processes on loopback (timely's cluster mode) process the same batches,
//! in the same order, as two worker threads in one process.
mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{self, stderr, wait_all, Proc};

use dicoflow::flow::{run, Pipeline, Registry, RunOptions};

const PIPELINE: &str = r#"
[source]
seed = 3
shuffle_buffer = 8
[flow]
batch_size = 4
max_in_flight = 2
[[cpu]]
type = "preprocess"
[cpu.settings]
size = 4
[[device]]
type = "image_stats"
"#;

/// `dicoflow train` as process `p` of 2 on `hostfile`, its output in
/// `dir/pP.stdout` and `dir/pP.stderr`.
fn spawn(dir: &Path, data: &Path, hostfile: &Path, p: usize) -> Proc {
    let mut command = common::dicoflow_command();
    command
        .args(["train", "--quiet", "--pipeline"])
        .arg(dir.join("p.toml"))
        .arg("--data")
        .arg(data)
        .arg("--run-dir")
        .arg(dir.join(format!("run{p}")))
        .args(cluster::cluster_args(hostfile, 2, p))
        .arg("--keys-out")
        .arg(dir.join(format!("keys{p}.json")));
    Proc::spawn(command, dir, &format!("p{p}"))
}

#[test]
fn two_processes_on_loopback_match_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    common::write_dataset(&data, 60, 20, 5);
    std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();

    // Two threads in this process.
    let mut p = Pipeline::from_toml(PIPELINE, Path::new("p.toml")).unwrap();
    p.source.path = Some(data.clone());
    let opts = RunOptions {
        keep_reports: true,
        ..RunOptions::threads(2)
    };
    let threads = run(&p, &Registry::with_builtins(), &opts).unwrap();
    let expected: Vec<serde_json::Value> = threads
        .reports
        .iter()
        .map(|r| serde_json::json!({"time": r.time, "device": r.device, "keys": r.keys}))
        .collect();

    // Two processes; a port taken in between makes the connection fail, so retry once.
    let mut last = String::new();
    for _attempt in 0..2 {
        let hostfile = cluster::hostfile(dir.path(), 2);
        let children = vec![
            spawn(dir.path(), &data, &hostfile, 0),
            spawn(dir.path(), &data, &hostfile, 1),
        ];
        let outs = wait_all(children, Duration::from_secs(60));
        if outs.iter().all(|o| o.status.success()) {
            let got: Vec<serde_json::Value> = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("keys0.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(got, expected);
            let n: usize = got
                .iter()
                .map(|b| b["keys"].as_array().unwrap().len())
                .sum();
            assert_eq!(n, 60);
            // Process 0 wrote the metrics log, one JSON object per line.
            let log = std::fs::read_to_string(dir.path().join("run0/metrics.jsonl")).unwrap();
            for line in log.lines() {
                serde_json::from_str::<serde_json::Value>(line).unwrap();
            }
            assert!(log.lines().last().unwrap().contains("\"summary\""));
            return;
        }
        last = outs.iter().map(stderr).collect::<Vec<_>>().join("\n---\n");
    }
    panic!("cluster run failed twice:\n{last}");
}
