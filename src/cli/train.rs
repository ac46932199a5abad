//! `dicoflow train --pipeline FILE`: run a pipeline through the dataflow engine,
//! on threads of this process or, with `-n/-p/-H`, on several processes
//! (timely's cluster mode; every process runs the same command).
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use timely::CommunicationConfig;

use crate::flow::{run, Pipeline, Registry, RunOptions, RunSummary};

/// Arguments of `train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Pipeline file (TOML; see pipelines/).
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Shards to read (overrides `path` in the pipeline's [source]).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run directory (metrics.jsonl goes here).
    #[arg(long, default_value = "runs/train")]
    pub run_dir: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Write every finished batch (time, keys in device order) as JSON to this file.
    #[arg(long)]
    pub keys_out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Continue every training stage from the latest checkpoint in its
    /// `out/checkpoints`, skipping the batches already trained; a stage with
    /// no checkpoint yet starts from scratch (with a notice).
    #[arg(long)]
    pub resume: bool,
}

/// Workers and processes, as timely's own `-w/-n/-p/-h` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub processes: usize,
    /// Index of this process (0-based).
    #[arg(short = 'p', long, default_value_t = 0)]
    pub process: usize,
    /// File with one `host:port` per process (default localhost:2101, 2102, ...).
    #[arg(short = 'H', long)]
    pub hostfile: Option<PathBuf>,
    /// With -n above 1: seconds this process waits for every other process
    /// of the hostfile to connect before it gives up with an error naming
    /// their addresses (at least 1; the default follows torchrun's
    /// rendezvous join timeout).
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub join_timeout: u64,
    /// With -n above 1: seconds a replica waits for the other replicas'
    /// gradients of a batch before the run stops with an error naming the
    /// processes that did not answer (a machine that vanishes closes no
    /// connection). At least 1; set it above the longest pause of any
    /// process (validation, loading weights). The default follows PyTorch's
    /// `init_process_group` timeout for NCCL.
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub collective_timeout: u64,
}

/// A hostfile line: `HOST:PORT` with a port in 1..=65535 (what timely
/// listens on and connects to), so that a mistyped line is named here rather
/// than reported as a failure to listen.
fn check_address(line: &str) -> anyhow::Result<()> {
    let (host, port) = line
        .rsplit_once(':')
        .with_context(|| format!("`{line}` is not HOST:PORT"))?;
    anyhow::ensure!(!host.is_empty(), "`{line}` has no host before `:`");
    anyhow::ensure!(
        port.parse::<u16>().is_ok_and(|p| p > 0),
        "`{line}`: the port `{port}` is not a number in 1..=65535"
    );
    Ok(())
}

impl ClusterArgs {
    /// `--join-timeout` as a duration.
    pub fn join_timeout(&self) -> Duration {
        Duration::from_secs(self.join_timeout)
    }

    /// `--collective-timeout` as a duration.
    pub fn collective_timeout(&self) -> Duration {
        Duration::from_secs(self.collective_timeout)
    }

    /// Timely's communication settings.
    pub fn communication(&self) -> anyhow::Result<CommunicationConfig> {
        let threads = self.workers.max(1);
        if self.processes <= 1 {
            return Ok(crate::flow::run::threads_communication(threads));
        }
        anyhow::ensure!(
            self.process < self.processes,
            "--process {} must be below --processes {}",
            self.process,
            self.processes
        );
        let addresses: Vec<String> = match &self.hostfile {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the hostfile {}", path.display()))?;
                let lines: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .take(self.processes)
                    .collect();
                anyhow::ensure!(
                    lines.len() == self.processes,
                    "{}: {} addresses for {} processes",
                    path.display(),
                    lines.len(),
                    self.processes
                );
                for (i, line) in lines.iter().enumerate() {
                    check_address(line).with_context(|| {
                        format!("{}: the address of process {i}", path.display())
                    })?;
                }
                lines
            }
            None => (0..self.processes)
                .map(|i| format!("localhost:{}", 2101 + i))
                .collect(),
        };
        Ok(CommunicationConfig::Cluster {
            threads,
            process: self.process,
            addresses,
            report: false,
            zerocopy: false,
        })
    }
}

/// Print the summary and, on process 0, the batch log.
pub fn report(summary: &RunSummary, keys_out: Option<&PathBuf>) -> anyhow::Result<()> {
    println!("{}", summary.telemetry);
    if let Some(path) = keys_out {
        let batches: Vec<_> = summary
            .reports
            .iter()
            .map(|r| serde_json::json!({"time": r.time, "device": r.device, "keys": r.keys}))
            .collect();
        std::fs::write(path, serde_json::to_string(&batches)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Turn on `resume` in every stage that supports it and say, per stage,
/// where it continues from (on stderr, if `tell`). A pipeline with no such
/// stage is an error: the flag would silently do nothing.
pub fn request_resume(
    pipeline: &mut Pipeline,
    registry: &Registry,
    tell: bool,
) -> anyhow::Result<()> {
    let stages = registry.enable_resume(pipeline);
    anyhow::ensure!(
        !stages.is_empty(),
        "no stage of this pipeline can resume; stage types that can: {}",
        registry.resumable_types().collect::<Vec<_>>().join(", ")
    );
    for spec in stages {
        let Some(out) = spec.settings.get("out").and_then(|v| v.as_str()) else {
            if tell {
                eprintln!(
                    "resume: stage `{}` continues from its checkpoint",
                    spec.name()
                );
            }
            continue;
        };
        let out = PathBuf::from(out);
        let latest = crate::train::resumable::latest_checkpoint(&out)?;
        if tell {
            match latest {
                Some(dir) => eprintln!("resume: stage `{}` from {}", spec.name(), dir.display()),
                None => {
                    // Without `checkpoint_every` there never is one; with it,
                    // the earlier run stopped before its first.
                    let every = spec
                        .settings
                        .get("checkpoint_every")
                        .and_then(|v| v.as_integer())
                        .unwrap_or(0);
                    let why = if every > 0 {
                        format!("an earlier run stopped before its first, due every {every} steps")
                    } else {
                        "set `checkpoint_every` to write them".to_owned()
                    };
                    eprintln!(
                        "resume: stage `{}` has no checkpoint under {}/checkpoints yet ({why}); \
                         it starts from scratch",
                        spec.name(),
                        out.display()
                    )
                }
            }
        }
    }
    Ok(())
}

/// Run `train`.
pub fn run_train(args: &TrainArgs) -> anyhow::Result<()> {
    let registry = crate::train::stages::registry();
    let mut pipeline = Pipeline::load(&args.pipeline)?;
    if let Some(data) = &args.data {
        pipeline.source.path = Some(data.clone());
    }
    if args.resume {
        request_resume(&mut pipeline, &registry, args.cluster.process == 0)
            .with_context(|| format!("--resume with {}", args.pipeline.display()))?;
    }
    let communication = args.cluster.communication()?;
    if let CommunicationConfig::Cluster {
        process, addresses, ..
    } = &communication
    {
        if let Some(share) = super::cores::share_cores(addresses, *process) {
            if !args.quiet {
                eprintln!(
                    "process {process}: {} processes of this cluster run on this machine: \
                     libtorch uses {} thread(s) in each ({} cores / {}); set OMP_NUM_THREADS \
                     to choose",
                    share.processes, share.threads, share.cores, share.processes
                );
            }
        }
    }
    let opts = RunOptions {
        communication,
        run_dir: (args.cluster.process == 0).then(|| args.run_dir.clone()),
        progress: !args.quiet,
        keep_reports: args.keys_out.is_some(),
        join_timeout: args.cluster.join_timeout(),
        collective_timeout: args.cluster.collective_timeout(),
    };
    let cluster = matches!(opts.communication, CommunicationConfig::Cluster { .. });
    let summary = run(&pipeline, &registry, &opts)
        .with_context(|| format!("running {}", args.pipeline.display()))?;
    if cluster && args.cluster.process == 0 {
        // Reward-cache devices spread over the processes leave their parts
        // open; the run has ended in every process, so all chunks are written.
        crate::train::stages::merge_parts_left_open(&pipeline)
            .with_context(|| format!("merging the reward cache of {}", args.pipeline.display()))?;
    }
    report(&summary, args.keys_out.as_ref())
}

#[cfg(test)]
mod tests {
    use super::check_address;

    #[test]
    fn hostfile_lines_must_be_host_and_port() {
        for ok in [
            "127.0.0.1:20001",
            "localhost:2101",
            "node-7.cluster:65535",
            "[::1]:3000",
        ] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("not-a-host:99999", "the port `99999`"),
            ("host:0", "the port `0`"),
            ("host:", "the port ``"),
            ("host", "is not HOST:PORT"),
            (":2101", "no host"),
        ] {
            let err = format!("{:#}", check_address(bad).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
