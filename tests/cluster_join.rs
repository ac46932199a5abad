//! A cluster run (timely's `-n/-p/-H` mode) whose peers never come gives up
//! after `--join-timeout` seconds with an error that names the missing
//! peer's address, instead of waiting forever.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{self, kill_all, port_taken, stderr, Proc};

const PIPELINE: &str = r#"
[source]
seed = 3
[flow]
batch_size = 4
[[cpu]]
type = "preprocess"
[cpu.settings]
size = 4
[[device]]
type = "image_stats"
"#;

/// The join time limit the tests give, in seconds.
const LIMIT_S: u64 = 2;

/// How long a process may take in all before the test kills it and fails.
const BOUND: Duration = Duration::from_secs(30);

/// `dicoflow train` as process `p` of 2 on `hostfile`, alone.
fn spawn(dir: &Path, hostfile: &Path, p: usize) -> Proc {
    let mut command = common::dicoflow_command();
    command
        .args(["train", "--quiet", "--pipeline"])
        .arg(dir.join("p.toml"))
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--run-dir")
        .arg(dir.join(format!("run{p}")))
        .args(["-n", "2", "-p", &p.to_string(), "-H"])
        .arg(hostfile)
        .args(["--join-timeout", &LIMIT_S.to_string()]);
    Proc::spawn(command, dir, &format!("p{p}"))
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    common::write_dataset(&data, 8, 8, 5);
    std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();
    dir
}

/// Starts process `p` of a 2-process hostfile alone and returns its stderr,
/// the hostfile's addresses and how long it ran. Fails the test if it does
/// not end within [`BOUND`] or ends with status 0.
fn alone(dir: &Path, p: usize) -> (String, Vec<String>, Duration) {
    // A port taken between choosing and binding it: try again once.
    for _attempt in 0..2 {
        let hostfile = cluster::hostfile(dir, 2);
        let addresses: Vec<String> = std::fs::read_to_string(&hostfile)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let started = Instant::now();
        let mut child = spawn(dir, &hostfile, p);
        while !child.ended() {
            if started.elapsed() > BOUND {
                kill_all(
                    vec![child],
                    format!("process {p} alone did not exit within {BOUND:?}"),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = started.elapsed();
        let out = child.output();
        if port_taken(&out) {
            continue;
        }
        assert!(!out.status.success(), "process {p} alone exited with 0");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        return (stderr(&out), addresses, took);
    }
    panic!("process {p}: its port was taken twice");
}

/// The error line, checked to be printed once, with no panic.
fn error_line(text: &str) -> &str {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("the cluster did not form"))
        .collect();
    assert_eq!(lines.len(), 1, "the error once:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
    lines[0]
}

#[test]
fn process_1_whose_peer_0_never_listens_gives_up_naming_it() {
    let dir = setup();
    let (text, addresses, took) = alone(dir.path(), 1);
    let line = error_line(&text);
    assert!(
        line.contains(&format!(
            "process 1 of 2: the cluster did not form within {LIMIT_S} s"
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "it kept trying to connect to process 0 at {}",
            addresses[0]
        )),
        "{line}"
    );
    assert!(line.contains("or raise --join-timeout"), "{line}");
    assert!(took >= Duration::from_secs(LIMIT_S), "{took:?}");
}

#[test]
fn process_0_whose_peer_1_never_connects_gives_up_naming_it() {
    let dir = setup();
    let (text, addresses, took) = alone(dir.path(), 0);
    let line = error_line(&text);
    assert!(
        line.contains(&format!(
            "process 0 of 2: the cluster did not form within {LIMIT_S} s"
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "it listened on {} for process 1 at {} to connect",
            addresses[0], addresses[1]
        )),
        "{line}"
    );
    assert!(took >= Duration::from_secs(LIMIT_S), "{took:?}");
    // The metrics log is created by a worker, and no worker started.
    assert!(!dir.path().join("run0/metrics.jsonl").exists());
}

#[test]
fn a_join_timeout_of_zero_is_refused() {
    let dir = setup();
    let hostfile = cluster::hostfile(dir.path(), 2);
    let out = common::dicoflow_command()
        .args(["train", "--quiet", "--pipeline"])
        .arg(dir.path().join("p.toml"))
        .args(["-n", "2", "-p", "1", "-H"])
        .arg(&hostfile)
        .args(["--join-timeout", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let text = stderr(&out);
    assert!(text.contains("--join-timeout"), "{text}");
}

#[test]
fn a_library_cluster_run_with_no_join_time_is_refused() {
    use dicoflow::flow::{run, FlowError, Pipeline, Registry, RunOptions};
    let pipeline = Pipeline::from_toml(PIPELINE, Path::new("p.toml")).unwrap();
    let opts = RunOptions {
        communication: timely::CommunicationConfig::Cluster {
            threads: 1,
            process: 1,
            addresses: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            report: false,
            zerocopy: false,
        },
        join_timeout: Duration::ZERO,
        ..RunOptions::threads(1)
    };
    match run(&pipeline, &Registry::with_builtins(), &opts) {
        Err(FlowError::Config { name, .. }) => assert_eq!(name, "join_timeout"),
        other => panic!("expected the zero join time refused, got {other:?}"),
    }
}
