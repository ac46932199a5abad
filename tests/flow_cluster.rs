//! Two processes on loopback (timely's cluster mode) process the same batches,
//! in the same order, as two worker threads in one process.
mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

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

/// Ports the OS has just handed out (and taken back): free with high probability.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn wait_all(mut children: Vec<Child>, limit: Duration) -> Vec<std::process::Output> {
    let start = Instant::now();
    loop {
        let done = children.iter_mut().all(|c| c.try_wait().unwrap().is_some());
        if done {
            return children
                .into_iter()
                .map(|c| c.wait_with_output().unwrap())
                .collect();
        }
        if start.elapsed() > limit {
            for c in &mut children {
                let _ = c.kill();
            }
            panic!("the processes did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(dir: &Path, data: &Path, hostfile: &Path, p: usize) -> Child {
    common::dicoflow_command()
        .args(["train", "--quiet", "--pipeline"])
        .arg(dir.join("p.toml"))
        .arg("--data")
        .arg(data)
        .arg("--run-dir")
        .arg(dir.join(format!("run{p}")))
        .args(["-n", "2", "-p", &p.to_string(), "-H"])
        .arg(hostfile)
        .arg("--keys-out")
        .arg(dir.join(format!("keys{p}.json")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
        let ports = free_ports(2);
        let hostfile = dir.path().join("hosts");
        let hosts: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
        std::fs::write(&hostfile, hosts).unwrap();
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
        last = outs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
            .join("\n---\n");
    }
    panic!("cluster run failed twice:\n{last}");
}
