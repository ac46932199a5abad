//! Errors of the dataflow engine. Per-sample failures are not errors: they are
//! [`super::StageError`] records on the error stream, counted by stage and reason.

use std::path::PathBuf;

/// Errors that stop a run (or keep it from starting).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error(transparent)]
    Data(#[from] crate::Error),

    #[error("{path}: {message}")]
    Pipeline { path: PathBuf, message: String },

    #[error("stage `{stage}`: unknown {kind} stage type `{type_name}`; registered {kind} types: {known}")]
    UnknownStageType {
        stage: String,
        kind: &'static str,
        type_name: String,
        known: String,
    },

    #[error("stage `{stage}` (type `{type_name}`): invalid settings: {message}")]
    StageSettings {
        stage: String,
        type_name: String,
        message: String,
    },

    #[error("stage `{stage}` could not be set up: {message}")]
    StageSetup { stage: String, message: String },

    /// A stage could not be built because something it loads failed: a
    /// model, weights, a vocabulary, a reward or reward cache, a checkpoint
    /// (`source`, the real error, e.g. the training stages'
    /// `crate::train::stages::setup::StageBuildError`). A setting the stage
    /// refuses is [`FlowError::Config`] or [`FlowError::StageSettings`].
    #[error("stage `{stage}`: {source}")]
    StageBuild {
        stage: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("stage `{stage}` panicked: {message}; the run was stopped")]
    StagePanicked { stage: String, message: String },

    #[error("stage `{stage}` could not finish: {reason}")]
    StageFinish { stage: String, reason: String },

    /// A stage failed in a way that leaves the run unable to continue
    /// correctly ([`super::StageFailure::fatal`]).
    #[error("stage `{stage}` failed at batch {time}: {reason}; the run was stopped")]
    StageFatal {
        stage: String,
        time: u64,
        reason: String,
    },

    #[error("device thread `{device}`: {message}")]
    DeviceThread { device: String, message: String },

    /// A stage's or the flow's device setting cannot be honoured on this machine.
    #[error("{setting}: {source}")]
    Device {
        /// The setting (`flow.device`, `stage `name``).
        setting: String,
        #[source]
        source: crate::device::DeviceError,
    },

    #[error("invalid flow setting `{name}`: {what}")]
    Config { name: &'static str, what: String },

    #[error("timely dataflow: {0}")]
    Timely(String),

    /// This process of a cluster run could not listen on its own address
    /// (timely's cluster set-up binds it to accept the connections of the
    /// processes after it; the others it keeps trying to reach).
    #[error(
        "process {process} could not join the cluster: listening on {address} failed: {detail}; \
         free that port, or give this process another address in the hostfile of every process"
    )]
    ClusterNotFormed {
        /// This process's index (`-p`).
        process: usize,
        /// Its address in the hostfile.
        address: String,
        /// What the socket reported.
        detail: String,
    },

    /// The processes of a cluster run did not all connect within the join
    /// time limit ([`super::RunOptions::join_timeout`], `--join-timeout`;
    /// torchrun's rendezvous `join_timeout` plays the same part). Timely
    /// forms the cluster with no limit of its own: this process connects to
    /// every process before it in the hostfile (retrying each second) and
    /// accepts a connection from every process after it, so a peer that was
    /// never started, or an address that is wrong, would keep it waiting
    /// forever. Which of the other processes are missing, timely does not
    /// say: the message names them all.
    #[error(
        "process {process} of {processes}: the cluster did not form within {waited_s} s \
         ({}); start every process of the hostfile with the same -n and -H and its own -p, \
         check the addresses, or raise --join-timeout",
        waiting_for(*.process, .addresses)
    )]
    ClusterTimeout {
        /// This process's index (`-p`).
        process: usize,
        /// The number of processes (`-n`).
        processes: usize,
        /// How long this process waited (the limit), in seconds.
        waited_s: f64,
        /// Every process's address in the hostfile, by process index
        /// (this process's own included).
        addresses: Vec<String>,
    },

    /// The connection to another process of a cluster run broke: it exited,
    /// crashed or was killed (`super::peers`).
    #[error(
        "lost process {process} of the cluster ({address}: {detail}): it exited or was killed, \
         and the run cannot go on without it; stop every process, then start them all again \
         with the same command (with --resume to continue from the latest checkpoint)"
    )]
    PeerLost {
        /// The lost process's index (`-p`).
        process: usize,
        /// Its address in the hostfile.
        address: String,
        /// What the connection reported.
        detail: String,
    },

    /// Another process of a cluster run failed (with `message`) and told
    /// this one, which stopped too (`super::peers`).
    #[error(
        "process {process} of the cluster failed: {message}; the run was stopped in every process"
    )]
    PeerFailed {
        /// The failed process's index (`-p`).
        process: usize,
        /// Its error.
        message: String,
    },

    /// A replica of a cluster run waited longer than the collective time
    /// limit ([`super::RunOptions::collective_timeout`], `--collective-timeout`;
    /// the `timeout` of PyTorch's `init_process_group` plays the same part)
    /// for the combined gradient of a batch: a replica in another process did
    /// not contribute. A process whose machine vanished (power loss, a
    /// network partition) closes no connection, so this limit is what ends
    /// the wait; a process that is alive but pauses longer (validation,
    /// loading large weights) trips it too.
    #[error(
        "replica {replica} waited {waited_s} s for the other replicas' gradients of batch {time} \
         and they did not come: {peers} stopped answering (its machine may be down or cut off \
         from this one) or is far slower than this one; the run was stopped in this process; \
         check that machine, stop every process, then start them all again with the same command \
         and --resume (or raise --collective-timeout if a process can pause that long)"
    )]
    CollectiveTimeout {
        /// The waiting replica's index.
        replica: usize,
        /// The batch's dataflow time.
        time: u64,
        /// How long it waited (the limit), in seconds.
        waited_s: f64,
        /// The processes holding the other replicas, as
        /// "process P (HOST:PORT)", joined by "or".
        peers: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What process `me` of a cluster with `addresses` waits for while the
/// cluster forms: it connects to the processes before it and listens on its
/// own address for those after it (timely_communication's `create_sockets`).
fn waiting_for(me: usize, addresses: &[String]) -> String {
    let name = |(p, a): (usize, &String)| format!("process {p} at {a}");
    let before: Vec<String> = addresses.iter().enumerate().take(me).map(name).collect();
    let after: Vec<String> = addresses
        .iter()
        .enumerate()
        .skip(me + 1)
        .map(name)
        .collect();
    let mut parts = Vec::new();
    if !before.is_empty() {
        parts.push(format!(
            "it kept trying to connect to {}",
            before.join(", ")
        ));
    }
    if !after.is_empty() {
        let own = addresses.get(me).map(String::as_str).unwrap_or("?");
        parts.push(format!(
            "it listened on {own} for {} to connect",
            after.join(", ")
        ));
    }
    parts.join(", and ")
}

/// A panic payload as text (panics carry `&str` or `String` in practice).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collective_time_out_names_the_silent_processes_and_what_to_do() {
        let state = super::super::state::RunState::default();
        state.expect_devices(
            &timely::CommunicationConfig::Cluster {
                threads: 1,
                process: 0,
                addresses: vec!["a:1".into(), "b:2".into(), "c:3".into()],
                report: false,
                zerocopy: false,
            },
            3,
        );
        let err = FlowError::CollectiveTimeout {
            replica: 0,
            time: 7,
            waited_s: 5.0,
            peers: state.device_peers(),
        };
        assert_eq!(
            err.to_string(),
            "replica 0 waited 5 s for the other replicas' gradients of batch 7 and they did not \
             come: process 1 (b:2) or process 2 (c:3) stopped answering (its machine may be down \
             or cut off from this one) or is far slower than this one; the run was stopped in \
             this process; check that machine, stop every process, then start them all again \
             with the same command and --resume (or raise --collective-timeout if a process can \
             pause that long)"
        );
    }

    #[test]
    fn a_cluster_time_out_names_what_each_side_waits_for() {
        let err = FlowError::ClusterTimeout {
            process: 1,
            processes: 3,
            waited_s: 2.5,
            addresses: vec!["a:1".into(), "b:2".into(), "c:3".into()],
        };
        assert_eq!(
            err.to_string(),
            "process 1 of 3: the cluster did not form within 2.5 s (it kept trying to connect \
             to process 0 at a:1, and it listened on b:2 for process 2 at c:3 to connect); \
             start every process of the hostfile with the same -n and -H and its own -p, \
             check the addresses, or raise --join-timeout"
        );
    }
}
