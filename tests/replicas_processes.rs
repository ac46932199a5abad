//! Replicas over 2 processes on loopback (timely's cluster mode, 1 worker
//! each), through the `dicoflow` binary:
//!
//! - an XE run with `flow.devices = 2` ends with the weights of the same run
//!   on 2 worker threads of one process, bit for bit (same replicas, same
//!   all-reduce order), and with those of 1 device × the whole batch within
//!   the tolerance of tests/replicas.rs (1e-5, see its module docs);
//! - when one process is killed (SIGKILL) during a replicated run, the other
//!   one exits within seconds with a one-line error naming the lost process,
//!   whichever of the two was killed, and the checkpoint process 0 wrote
//!   before the kill is complete; the same command on both processes with
//!   `resume` then ends with the uninterrupted run's weights, bit for bit;
//! - when one process fails with an error, the other one stops too, with
//!   that error, instead of waiting for the failed replica's gradients;
//! - with 1 device, the process that owns none stops reading once the
//!   trainer on the other one has taken its steps.
//!
//! Every process reads the same shards and writes the same `out/` (one
//! temporary directory); ports are on 127.0.0.1 and every wait is bounded
//! (children are killed on timeout).
mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::{self, cluster_not_formed, kill_all, stderr, wait_all, Proc};

use common::train::{
    captioner_pipeline, max_weight_diff, one_caption_world, read_weights, replica_train_config,
    stage_settings,
};

use dicoflow::model::captioner::Vocab;
use dicoflow::train::captioning::Objective;
use dicoflow::train::resumable::latest_checkpoint;
use dicoflow::train::stages::{CaptionerStageSettings, WEIGHTS_FILE};

/// The runs take turns: each one spawns 2 processes that share the CPUs, and
/// the kill test measures how long the survivor takes to exit.
static ONE_TEST_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Images in the training split.
const IMAGES: usize = 32;

/// How long a run that should finish may take.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// How long the survivor of a kill may take to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// XE writing to `root/out`, `steps` optimizer steps, AdamW with eps 1e-3
/// (tests/replicas.rs), a checkpoint every `checkpoint_every` steps (0: none).
fn settings(
    root: &Path,
    out: &str,
    vocab: &Vocab,
    steps: u64,
    checkpoint_every: u64,
) -> CaptionerStageSettings {
    let train = replica_train_config(Objective::Xe, steps);
    CaptionerStageSettings {
        checkpoint_every,
        keep_last: 2,
        ..stage_settings(root, out, vocab, train)
    }
}

/// Writes the pipeline file `root/NAME.toml`: `s` on `devices` devices,
/// 4 images per worker per batch, `epochs` epochs.
fn pipeline_file(
    root: &Path,
    name: &str,
    s: &CaptionerStageSettings,
    devices: usize,
    epochs: u64,
) -> PathBuf {
    let mut p = captioner_pipeline(root, s, vec![]);
    p.flow.batch_size = 4;
    p.flow.devices = devices;
    p.source.epochs = epochs;
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&p).unwrap()).unwrap();
    path
}

/// `dicoflow train` of `pipeline` with `cluster` arguments, logging to
/// `root/run-NAME`, its output in `root/NAME.stdout` and `root/NAME.stderr`.
/// One libtorch thread in every process: by default the processes of a
/// cluster on one machine share its cores (1 thread each here) while 2
/// threads of one process use every core, and the bit-for-bit comparisons
/// need the same intra-op threads on both sides (a reduction split over
/// another number of threads rounds differently).
fn spawn(root: &Path, pipeline: &Path, name: &str, cluster: &[String]) -> Proc {
    let mut command = common::dicoflow_command();
    command
        .env("OMP_NUM_THREADS", "1")
        .args(["train", "--quiet", "--pipeline"])
        .arg(pipeline)
        .arg("--run-dir")
        .arg(root.join(format!("run-{name}")))
        .args(cluster);
    Proc::spawn(command, root, name)
}

/// The arguments of process `p` of 2, 1 worker each, on `hostfile`.
fn process_args(hostfile: &Path, p: usize) -> Vec<String> {
    let mut args = vec!["-w".to_owned(), "1".to_owned()];
    args.extend(cluster::cluster_args(hostfile, 2, p));
    args
}

/// A hostfile for 2 processes in `root`.
fn hostfile(root: &Path) -> PathBuf {
    cluster::hostfile(root, 2)
}

/// Runs `pipeline` on 2 processes and returns their outputs; a port taken
/// between choosing it and binding it makes the connection fail, so a failed
/// run is tried once more.
fn run_two_processes(root: &Path, pipeline: &Path) -> Vec<Output> {
    let mut last = String::new();
    for _attempt in 0..2 {
        let hosts = hostfile(root);
        let children = vec![
            spawn(root, pipeline, "p0", &process_args(&hosts, 0)),
            spawn(root, pipeline, "p1", &process_args(&hosts, 1)),
        ];
        let outs = wait_all(children, RUN_LIMIT);
        if outs.iter().all(|o| o.status.success()) {
            return outs;
        }
        last = outs.iter().map(stderr).collect::<Vec<_>>().join("\n---\n");
    }
    panic!("the 2-process run failed twice:\n{last}");
}

/// Runs `pipeline` on 2 worker threads of one process.
fn run_two_threads(root: &Path, pipeline: &Path, name: &str) {
    let child = spawn(root, pipeline, name, &["-w".into(), "2".into()]);
    let out = wait_all(vec![child], RUN_LIMIT).remove(0);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
}

#[test]
fn two_processes_train_the_replicas_of_two_threads_bit_for_bit() {
    let _turn = ONE_TEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = one_caption_world(root, IMAGES);
    // 2 epochs of 4 batches of 2 workers × 4 images: 8 XE steps.
    let steps = 8;
    let runs = ["one", "threads", "processes"].map(|name| {
        let s = settings(root, name, &vocab, steps, 0);
        let devices = if name == "one" { 1 } else { 2 };
        (
            s.out.join(WEIGHTS_FILE),
            pipeline_file(root, name, &s, devices, 2),
        )
    });
    run_two_threads(root, &runs[0].1, "one");
    run_two_threads(root, &runs[1].1, "threads");
    run_two_processes(root, &runs[2].1);

    let (one, threads, processes) = (&runs[0].0, &runs[1].0, &runs[2].0);
    let (a, b) = (read_weights(threads), read_weights(processes));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        assert!(
            t.equal(&b[name]),
            "{name} differs between 2 threads and 2 processes by {}",
            (t - &b[name]).abs().max().double_value(&[])
        );
    }
    let d = max_weight_diff(one, processes);
    assert!(d < 1e-5, "2 processes differ from 1 device by {d}");
    // The comparison has something to compare: a run on other batches
    // (1 epoch, so 4 steps) ends elsewhere.
    let short = settings(root, "short", &vocab, steps / 2, 0);
    let file = pipeline_file(root, "short", &short, 1, 1);
    run_two_threads(root, &file, "short");
    let moved = max_weight_diff(&short.out.join(WEIGHTS_FILE), one);
    assert!(
        moved > 1e-4,
        "4 more steps moved the weights by only {moved}"
    );
}

/// Starts a long replicated run on 2 processes, waits for process 0's first
/// checkpoint, kills process `victim` with SIGKILL and returns the
/// survivor's output and how long it took to exit after the kill.
fn kill_one(root: &Path, out: &Path, pipeline: &Path, victim: usize) -> (Output, Duration) {
    interrupt_one(root, out, pipeline, victim, Interruption::Kill)
}

/// What happens to the victim of [`interrupt_one`].
#[derive(Clone, Copy, PartialEq)]
enum Interruption {
    /// SIGKILL: the process dies and the kernel closes its connections.
    Kill,
    /// SIGSTOP: the process stops answering and its connections stay open,
    /// as when its machine vanishes (power loss, a network partition). Both
    /// processes run with `--collective-timeout` [`SILENCE_LIMIT_S`]; the
    /// victim is killed once the survivor has exited.
    Stop,
}

/// `--collective-timeout` of the runs whose victim is stopped.
const SILENCE_LIMIT_S: u64 = 5;

fn interrupt_one(
    root: &Path,
    out: &Path,
    pipeline: &Path,
    victim: usize,
    how: Interruption,
) -> (Output, Duration) {
    let args = |hosts: &Path, p: usize| {
        let mut args = process_args(hosts, p);
        if how == Interruption::Stop {
            args.extend(["--collective-timeout".into(), SILENCE_LIMIT_S.to_string()]);
        }
        args
    };
    let mut last = String::new();
    for _attempt in 0..2 {
        let hosts = hostfile(root);
        let mut children = vec![
            spawn(root, pipeline, "p0", &args(&hosts, 0)),
            spawn(root, pipeline, "p1", &args(&hosts, 1)),
        ];
        let start = Instant::now();
        let progressed = loop {
            if latest_checkpoint(out).unwrap().is_some() {
                break true;
            }
            if children.iter_mut().any(Proc::ended) {
                break false;
            }
            if start.elapsed() > RUN_LIMIT {
                kill_all(children, format!("no checkpoint within {RUN_LIMIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !progressed {
            // A process ended before any checkpoint: a port race (retry) or a
            // failure (shown if it happens twice).
            let outs = wait_all(children, RUN_LIMIT);
            last = outs.iter().map(stderr).collect::<Vec<_>>().join("\n---\n");
            continue;
        }
        let mut victim_child = children.remove(victim);
        let survivor = children.remove(0);
        if how == Interruption::Stop {
            victim_child.signal("STOP");
            let stopped = Instant::now();
            let out = wait_all(vec![survivor], EXIT_LIMIT + Duration::from_secs(30)).remove(0);
            let took = stopped.elapsed();
            victim_child.kill();
            victim_child.output();
            return (out, took);
        }
        victim_child.kill();
        let killed = Instant::now();
        victim_child.output();
        let out = wait_all(vec![survivor], EXIT_LIMIT + Duration::from_secs(30)).remove(0);
        return (out, killed.elapsed());
    }
    panic!("the 2-process run ended before its first checkpoint, twice:\n{last}");
}

/// The survivor of a kill exited in time, with a failure status and a
/// one-line error that names the lost process and says what to do.
fn check_survivor(out: &Output, took: Duration, victim: usize) {
    let text = stderr(out);
    assert!(took < EXIT_LIMIT, "the survivor took {took:?}:\n{text}");
    // Status 1: the error, not a crash on the way out (139 is a segfault).
    assert_eq!(out.status.code(), Some(1), "the survivor's status:\n{text}");
    assert!(
        !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
        "{text}"
    );
    let line = text.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("error: ")
            && line.contains(&format!("process {victim} "))
            && line.contains("lost")
            && line.contains("--resume"),
        "{text}"
    );
}

/// The latest checkpoint process 0 wrote before the kill is complete: its
/// weights, optimizer state and state file read back.
fn check_checkpoint(out: &Path) {
    let dir = latest_checkpoint(out).unwrap().expect("a checkpoint");
    let weights = read_weights(&dir.join("model.safetensors"));
    assert!(!weights.is_empty());
    assert!(!read_weights(&dir.join("optimizer.safetensors")).is_empty());
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    assert!(state.is_object());
}

/// A replicated run on 2 devices under `root`, long enough to be
/// interrupted in the middle (1000 epochs of 4 steps, a checkpoint every 2
/// steps): its settings and pipeline file.
fn long_run(root: &Path) -> (CaptionerStageSettings, PathBuf) {
    let vocab = one_caption_world(root, IMAGES);
    let s = settings(root, "out", &vocab, 4000, 2);
    let file = pipeline_file(root, "long", &s, 2, 1000);
    (s, file)
}

#[test]
fn when_one_process_is_killed_the_other_stops_with_a_clear_error() {
    let _turn = ONE_TEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for victim in [1, 0] {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let (s, file) = long_run(root);
        let (out, took) = kill_one(root, &s.out, &file, victim);
        check_survivor(&out, took, victim);
        check_checkpoint(&s.out);
        assert!(!s.out.join(WEIGHTS_FILE).exists());
    }
}

/// A process that stops answering while its connections stay open (SIGSTOP,
/// as a machine that vanishes): the other one's replica stops waiting for its
/// gradients after `--collective-timeout` and the process exits with an error
/// that names the silent process and says what to do, whichever of the two
/// was stopped.
#[test]
fn when_one_process_stops_answering_the_other_stops_after_the_collective_timeout() {
    let _turn = ONE_TEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for victim in [1, 0] {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let (s, file) = long_run(root);
        let (out, took) = interrupt_one(root, &s.out, &file, victim, Interruption::Stop);
        let text = stderr(&out);
        let limit = Duration::from_secs(SILENCE_LIMIT_S);
        // The survivor may have begun its wait up to a step before the stop.
        assert!(
            took + Duration::from_secs(1) >= limit && took < limit + EXIT_LIMIT,
            "the survivor took {took:?}:\n{text}"
        );
        assert_eq!(out.status.code(), Some(1), "the survivor's status:\n{text}");
        assert!(!text.contains("panicked"), "{text}");
        let line = text.lines().last().unwrap_or_default();
        let hosts = std::fs::read_to_string(root.join("hosts")).unwrap();
        let address = hosts.lines().nth(victim).unwrap();
        assert!(
            line.starts_with("error: ")
                && line.contains(&format!(
                    "replica {} waited {SILENCE_LIMIT_S} s",
                    1 - victim
                ))
                && line.contains(&format!("process {victim} ({address}) stopped answering"))
                && line.contains("--resume")
                && line.contains("--collective-timeout"),
            "{text}"
        );
        assert!(!s.out.join(WEIGHTS_FILE).exists());
    }
}

/// Kill -9 of process 1 in the middle of a replicated run, then the same
/// command on both processes with `resume`: the run continues from process
/// 0's latest checkpoint to the weights of an uninterrupted run, bit for bit.
#[test]
fn after_a_kill_both_processes_resume_to_the_uninterrupted_weights() {
    let _turn = ONE_TEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = one_caption_world(root, IMAGES);
    // 10 epochs of 4 steps, a checkpoint every 2 steps; killed right after
    // the first checkpoint.
    let resumable = |out: &str| CaptionerStageSettings {
        resume: true,
        ..settings(root, out, &vocab, 40, 2)
    };
    let cut = resumable("cut");
    let cut_file = pipeline_file(root, "cut", &cut, 2, 10);
    let (out, took) = kill_one(root, &cut.out, &cut_file, 1);
    check_survivor(&out, took, 1);
    assert!(!cut.out.join(WEIGHTS_FILE).exists());
    run_two_processes(root, &cut_file);
    let full = resumable("full");
    let full_file = pipeline_file(root, "full", &full, 2, 10);
    run_two_processes(root, &full_file);
    let d = max_weight_diff(&full.out.join(WEIGHTS_FILE), &cut.out.join(WEIGHTS_FILE));
    assert_eq!(
        d, 0.0,
        "the resumed run ends {d} away from the uninterrupted one"
    );
}

#[test]
fn when_one_process_fails_the_other_stops_with_its_error() {
    let _turn = ONE_TEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = one_caption_world(root, IMAGES);
    let s = settings(root, "out", &vocab, 4000, 2);
    let good = pipeline_file(root, "long", &s, 2, 1000);
    // Process 1's replica cannot start: its initial weights are missing. Its
    // process stays up while its run drains; process 0 must not wait for its
    // gradients.
    let broken = CaptionerStageSettings {
        init: Some(root.join("missing.safetensors")),
        ..s.clone()
    };
    let broken = pipeline_file(root, "broken", &broken, 2, 1000);
    let mut last = String::new();
    for _attempt in 0..2 {
        let hosts = hostfile(root);
        let children = vec![
            spawn(root, &good, "p0", &process_args(&hosts, 0)),
            spawn(root, &broken, "p1", &process_args(&hosts, 1)),
        ];
        let outs = wait_all(children, Duration::from_secs(120));
        let lines: Vec<String> = outs
            .iter()
            .map(|o| stderr(o).lines().last().unwrap_or_default().to_owned())
            .collect();
        last = outs.iter().map(stderr).collect::<Vec<_>>().join("\n---\n");
        if outs.iter().any(cluster_not_formed) {
            continue;
        }
        assert!(outs.iter().all(|o| !o.status.success()), "{last}");
        assert!(
            lines[0].starts_with("error: ")
                && lines[0].contains("process 1 of the cluster failed")
                && lines[0].contains("missing.safetensors"),
            "{last}"
        );
        assert!(lines[1].contains("missing.safetensors"), "{last}");
        assert!(!last.contains("panicked"), "{last}");
        assert!(!s.out.join(WEIGHTS_FILE).exists());
        return;
    }
    panic!("the 2-process run failed to connect twice:\n{last}");
}

/// The rows a run's source read, from the summary `train` prints.
fn rows_read(out: &Output) -> u64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("source "))
        .unwrap_or_else(|| panic!("no source line in the summary:\n{stdout}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn a_process_without_a_device_stops_reading_when_training_is_done() {
    let _turn = ONE_TEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = one_caption_world(root, IMAGES);
    // 2 steps of 500 epochs: each process's share is 500 × 16 rows.
    let s = settings(root, "out", &vocab, 2, 0);
    let file = pipeline_file(root, "one-device", &s, 1, 500);
    let outs = run_two_processes(root, &file);
    assert!(s.out.join(WEIGHTS_FILE).exists());
    let share = 500 * IMAGES as u64 / 2;
    for (p, out) in outs.iter().enumerate() {
        let read = rows_read(out);
        // 2 batches trained, and what process 1 reads while the news
        // travels (polled every 50 ms): 16 to 88 rows on a loaded machine,
        // up to about 300 on a quiet one, where rows are read faster; all
        // 8,000 without the news.
        assert!(
            read <= share / 4,
            "process {p} read {read} of its {share} rows after training was done"
        );
    }
}

#[test]
fn a_process_whose_port_is_taken_says_so_and_which_port() {
    let _turn = ONE_TEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let vocab = one_caption_world(root, IMAGES);
    let s = settings(root, "out", &vocab, 2, 0);
    let file = pipeline_file(root, "taken", &s, 2, 1);
    let hosts = hostfile(root);
    let text = std::fs::read_to_string(&hosts).unwrap();
    // Process 0 (process 1 would first wait to reach process 0).
    let address = text.lines().next().unwrap().to_owned();
    let _taken = TcpListener::bind(&address).unwrap();
    let out = wait_all(
        vec![spawn(root, &file, "p0", &process_args(&hosts, 0))],
        Duration::from_secs(60),
    )
    .remove(0);
    let err = stderr(&out);
    let line = err.lines().last().unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        line.starts_with("error: ")
            && line.contains("process 0 could not join the cluster")
            && line.contains(&address)
            && line.contains("hostfile"),
        "{err}"
    );
}
