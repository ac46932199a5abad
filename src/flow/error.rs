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

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
