//! Pipeline files: TOML under `pipelines/` naming the source, flow-control
//! settings and the stages by type. Unknown keys are errors that name the key;
//! stage settings are checked by the stage type's own settings struct.
//!
//! ```toml
//! [source]
//! path = "runs/demo/data/train"
//! seed = 0
//!
//! [flow]
//! batch_size = 32
//! max_in_flight = 4
//!
//! [[cpu]]
//! type = "preprocess"
//! [cpu.settings]
//! size = 64
//!
//! [[device]]
//! type = "image_stats"
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::FlowError;
use crate::data::{LayoutOptions, SourceConfig};
use crate::device::DeviceName;

/// Default samples per worker per batch.
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// Default K: batches a source may have open before the oldest is finished.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 4;
/// Default depth (batches) of each channel between a device operator and its thread.
pub const DEFAULT_CHANNEL_DEPTH: usize = 1;

/// The `[source]` table of a pipeline file (as [`StageSpec`] is a stage's
/// table): which shards (`path`, `layout`) and the row order, which
/// [`SourceSpec::source_config`] turns into the [`SourceConfig`] of each
/// worker's [`crate::data::ShardSource`]. Here `epochs` is always finite.
/// How rows are cut into batches is not here but in `[flow]`
/// ([`FlowConfig`], handed to the source operator as
/// `flow::source::SourceBatching`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceSpec {
    /// Shards: a file, a directory or a glob (the command line may override it).
    pub path: Option<PathBuf>,
    /// See [`SourceConfig`].
    pub seed: u64,
    pub shuffle: bool,
    pub shuffle_buffer: usize,
    pub epochs: u64,
    /// Which columns to read.
    pub layout: LayoutOptions,
}

impl Default for SourceSpec {
    fn default() -> Self {
        let d = SourceConfig::default();
        Self {
            path: None,
            seed: d.seed,
            shuffle: d.shuffle,
            shuffle_buffer: d.shuffle_buffer,
            epochs: 1,
            layout: LayoutOptions::default(),
        }
    }
}

impl SourceSpec {
    /// The shard source's settings.
    pub fn source_config(&self) -> SourceConfig {
        SourceConfig {
            seed: self.seed,
            shuffle: self.shuffle,
            shuffle_buffer: self.shuffle_buffer,
            epochs: Some(self.epochs),
        }
    }
}

/// Flow control and placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Samples per worker per batch (default `DEFAULT_BATCH_SIZE`).
    pub batch_size: usize,
    /// K, batches in flight (default `DEFAULT_MAX_IN_FLIGHT`).
    pub max_in_flight: u64,
    /// Channel depth to and from each device thread (default `DEFAULT_CHANNEL_DEPTH`).
    pub channel_depth: usize,
    /// Number of devices; device d is owned by worker d (default 1).
    pub devices: usize,
    /// Device the device threads are labelled with in metrics and thread names (`cpu`,
    /// `cuda`, `cuda:K`, `auto`; default `cpu`). It is resolved when the run starts, so a
    /// pipeline that names CUDA on a machine without one is refused before any data is
    /// read; the stages' own `device` settings place their models.
    pub device: DeviceName,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            channel_depth: DEFAULT_CHANNEL_DEPTH,
            devices: 1,
            device: DeviceName::Cpu,
        }
    }
}

/// One stage: its registered type, an optional name (default: the type) and settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub settings: toml::Table,
}

impl StageSpec {
    /// A stage of `type_name` with default settings.
    pub fn new(type_name: &str) -> Self {
        Self {
            type_name: type_name.into(),
            name: None,
            settings: toml::Table::new(),
        }
    }

    /// The same stage with `settings` (a TOML table's text).
    pub fn with_settings(mut self, settings: toml::Table) -> Self {
        self.settings = settings;
        self
    }

    /// The name in metrics and errors.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.type_name)
    }
}

/// A whole pipeline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    #[serde(default)]
    pub source: SourceSpec,
    #[serde(default)]
    pub flow: FlowConfig,
    /// CPU stages, in order, on every worker.
    #[serde(default)]
    pub cpu: Vec<StageSpec>,
    /// Device stages, in order, on each device's thread.
    #[serde(default)]
    pub device: Vec<StageSpec>,
}

impl Pipeline {
    /// Parse pipeline text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, FlowError> {
        let p: Pipeline = toml::from_str(text).map_err(|e| FlowError::Pipeline {
            path: path.into(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        p.check().map_err(|message| FlowError::Pipeline {
            path: path.into(),
            message,
        })?;
        Ok(p)
    }

    /// Read and parse a pipeline file.
    pub fn load(path: &Path) -> Result<Self, FlowError> {
        let text = std::fs::read_to_string(path).map_err(|source| FlowError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Settings that serde cannot check.
    pub fn check(&self) -> Result<(), String> {
        let f = &self.flow;
        for (name, v) in [
            ("flow.batch_size", f.batch_size as u64),
            ("flow.max_in_flight", f.max_in_flight),
            ("flow.channel_depth", f.channel_depth as u64),
            ("flow.devices", f.devices as u64),
            ("source.shuffle_buffer", self.source.shuffle_buffer as u64),
            ("source.epochs", self.source.epochs),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be at least 1"));
            }
        }
        for s in &self.device {
            let named = s.settings.get("device").and_then(|v| v.as_str());
            if let Some(Ok(device)) = named.map(str::parse::<DeviceName>) {
                if device != f.device {
                    return Err(format!(
                        "stage `{}` runs on device `{device}` but `flow.device` is `{}`; \
                         set both to the same device",
                        s.name(),
                        f.device
                    ));
                }
            }
        }
        let mut names = BTreeSet::new();
        for s in self.cpu.iter().chain(&self.device) {
            if !names.insert(s.name()) {
                return Err(format!(
                    "two stages are named `{}`; give one a different `name`",
                    s.name()
                ));
            }
        }
        Ok(())
    }
}
