//! The stage registry: stage type names → constructors. A pipeline file names
//! types; user code registers its own with [`Registry::register_cpu`] and
//! [`Registry::register_device`] and runs pipelines that use them.
//!
//! Each type declares a serde settings struct (`deny_unknown_fields`
//! recommended); settings are parsed when the pipeline is checked, so a typo
//! fails before any data is read, naming the stage and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::device::DeviceStageCtor;
use super::error::FlowError;
use super::pipeline::{Pipeline, StageSpec};
use super::source::ResumePoint;
use super::stage::{CpuStage, DeviceStage};

type CpuFactory = Arc<dyn Fn(&StageSpec) -> Result<Box<dyn CpuStage>, FlowError> + Send + Sync>;
type DeviceFactory = Arc<dyn Fn(&StageSpec) -> Result<DeviceStageCtor, FlowError> + Send + Sync>;
/// Where a resumable stage's latest checkpoint stands (see
/// [`Registry::set_resume_reader`]).
pub type ResumeReader =
    Arc<dyn Fn(&StageSpec) -> Result<Option<ResumePoint>, FlowError> + Send + Sync>;

/// Stage types by name.
#[derive(Clone, Default)]
pub struct Registry {
    cpu: BTreeMap<String, CpuFactory>,
    device: BTreeMap<String, DeviceFactory>,
    /// Device stage types with a boolean `resume` setting.
    resumable: BTreeSet<String>,
    /// Device stage types with a `device` setting ([`crate::device::DeviceName`]).
    placed: BTreeSet<String>,
    /// Reads a resumable stage's latest checkpoint: where its sources resume.
    resume_reader: Option<ResumeReader>,
    /// Device stage types that cannot run on several devices yet, with why.
    single_device: BTreeMap<String, &'static str>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("cpu", &self.cpu.keys().collect::<Vec<_>>())
            .field("device", &self.device.keys().collect::<Vec<_>>())
            .field("resumable", &self.resumable)
            .field("placed", &self.placed)
            .field("single_device", &self.single_device)
            .finish()
    }
}

pub(crate) fn parse_settings<S: DeserializeOwned>(spec: &StageSpec) -> Result<S, FlowError> {
    toml::Value::Table(spec.settings.clone())
        .try_into()
        .map_err(|e: toml::de::Error| FlowError::StageSettings {
            stage: spec.name().to_owned(),
            type_name: spec.type_name.clone(),
            message: e.to_string().trim_end().to_owned(),
        })
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register CPU stage type `type_name`, built on every worker from settings `S`.
    pub fn register_cpu<S, F>(&mut self, type_name: &str, ctor: F)
    where
        S: DeserializeOwned + 'static,
        F: Fn(S) -> Result<Box<dyn CpuStage>, FlowError> + Send + Sync + 'static,
    {
        let factory: CpuFactory = Arc::new(move |spec| ctor(parse_settings::<S>(spec)?));
        self.cpu.insert(type_name.to_owned(), factory);
    }

    /// Register device stage type `type_name`. Settings are parsed on the
    /// calling thread; `ctor` runs on the device thread.
    pub fn register_device<S, F>(&mut self, type_name: &str, ctor: F)
    where
        S: DeserializeOwned + Send + 'static,
        F: Fn(S) -> Result<Box<dyn DeviceStage>, FlowError> + Send + Sync + 'static,
    {
        let ctor = Arc::new(ctor);
        let factory: DeviceFactory = Arc::new(move |spec| {
            let settings = parse_settings::<S>(spec)?;
            let ctor = ctor.clone();
            let boxed: DeviceStageCtor = Box::new(move || ctor(settings));
            Ok(boxed)
        });
        self.device.insert(type_name.to_owned(), factory);
    }

    /// Declare that device stage type `type_name` accepts `resume = true`
    /// (continue from its own latest checkpoint), so that a run-level resume
    /// request reaches it.
    pub fn declare_resumable(&mut self, type_name: &str) {
        self.resumable.insert(type_name.to_owned());
    }

    /// Declare that device stage type `type_name` has a `device` setting, so that a
    /// stage of that type that leaves it out runs on the pipeline's `flow.device`
    /// ([`Registry::place_stages`]): the device is then written once, in `[flow]`.
    pub fn declare_device_setting(&mut self, type_name: &str) {
        self.placed.insert(type_name.to_owned());
    }

    /// Declare that device stage type `type_name` cannot run with
    /// `flow.devices > 1` (each device would build its own copy: a trainer its
    /// own model, a writer its own file). `why` says what would go wrong;
    /// [`Registry::check`] refuses such a pipeline before anything is read.
    pub fn declare_single_device(&mut self, type_name: &str, why: &'static str) {
        self.single_device.insert(type_name.to_owned(), why);
    }

    /// Whether device stage type `type_name` has a `device` setting.
    pub fn has_device_setting(&self, type_name: &str) -> bool {
        self.placed.contains(type_name)
    }

    /// Give every device stage whose type has a `device` setting and that leaves it out
    /// the pipeline's `flow.device`. (A stage that names its own must name the same one:
    /// [`Pipeline::check`].)
    pub fn place_stages(&self, pipeline: &mut Pipeline) {
        let device = pipeline.flow.device.to_string();
        for spec in &mut pipeline.device {
            if self.has_device_setting(&spec.type_name) && !spec.settings.contains_key("device") {
                spec.settings
                    .insert("device".into(), toml::Value::String(device.clone()));
            }
        }
    }

    /// How to read where a resumable stage's latest checkpoint stands (its
    /// last batch and every source worker's cursor): a run whose resumable
    /// stages all resume starts its sources there
    /// ([`Registry::resume_point`]). Without a reader, sources start at
    /// the beginning and resumed stages skip the batches they have trained on.
    pub fn set_resume_reader(
        &mut self,
        reader: impl Fn(&StageSpec) -> Result<Option<ResumePoint>, FlowError> + Send + Sync + 'static,
    ) {
        self.resume_reader = Some(Arc::new(reader));
    }

    /// Where the latest checkpoint of resumable stage `spec` stands (`None`:
    /// no checkpoint, or no reader set).
    pub fn read_resume_point(&self, spec: &StageSpec) -> Result<Option<ResumePoint>, FlowError> {
        match &self.resume_reader {
            Some(read) => read(spec),
            None => Ok(None),
        }
    }

    /// Where the sources of `pipeline` start: after the earliest last batch of
    /// its resuming stages' checkpoints (`resume = true`), or at the beginning
    /// (`None`) when there is none, when one of those stages has no checkpoint
    /// yet (it trains from scratch and needs every batch), or when one
    /// checkpoint records no cursors (written by an older dicoflow: the sources
    /// read from the start and the stage skips the batches it has trained on).
    /// A stage whose checkpoint is later than the earliest skips the batches in
    /// between itself ([`crate::train::resumable::StageCheckpoints::already_trained`]).
    pub fn resume_point(&self, pipeline: &Pipeline) -> Result<Option<ResumePoint>, FlowError> {
        let mut earliest: Option<ResumePoint> = None;
        for spec in &pipeline.device {
            let resumes = self.is_resumable(&spec.type_name)
                && spec.settings.get("resume").and_then(|v| v.as_bool()) == Some(true);
            if !resumes {
                continue;
            }
            let Some(point) = self.read_resume_point(spec)? else {
                return Ok(None);
            };
            if point.cursors.is_empty() {
                tracing::warn!(
                    "{} records no data cursors (written by an older dicoflow): the sources read \
                     from the start and stage `{}` skips the batches it has trained on",
                    point.checkpoint.display(),
                    point.stage
                );
                return Ok(None);
            }
            if earliest.as_ref().is_none_or(|e| point.after < e.after) {
                earliest = Some(point);
            }
        }
        Ok(earliest)
    }

    /// Whether device stage type `type_name` accepts `resume`.
    pub fn is_resumable(&self, type_name: &str) -> bool {
        self.resumable.contains(type_name)
    }

    /// Device stage types that accept `resume`.
    pub fn resumable_types(&self) -> impl Iterator<Item = &str> {
        self.resumable.iter().map(String::as_str)
    }

    /// Set `resume = true` on every device stage of `pipeline` whose type
    /// accepts it; other stages are left as they are. Returns the stages set.
    pub fn enable_resume(&self, pipeline: &mut Pipeline) -> Vec<StageSpec> {
        let mut set = Vec::new();
        for spec in &mut pipeline.device {
            if self.is_resumable(&spec.type_name) {
                spec.settings
                    .insert("resume".into(), toml::Value::Boolean(true));
                set.push(spec.clone());
            }
        }
        set
    }

    fn unknown(&self, spec: &StageSpec, kind: &'static str) -> FlowError {
        let names: Vec<&str> = match kind {
            "cpu" => self.cpu.keys().map(String::as_str).collect(),
            _ => self.device.keys().map(String::as_str).collect(),
        };
        FlowError::UnknownStageType {
            stage: spec.name().to_owned(),
            kind,
            type_name: spec.type_name.clone(),
            known: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        }
    }

    /// Build a CPU stage.
    pub fn build_cpu(&self, spec: &StageSpec) -> Result<Box<dyn CpuStage>, FlowError> {
        let factory = self
            .cpu
            .get(&spec.type_name)
            .ok_or_else(|| self.unknown(spec, "cpu"))?;
        factory(spec)
    }

    /// Check a device stage's settings and return its constructor.
    pub fn build_device(&self, spec: &StageSpec) -> Result<DeviceStageCtor, FlowError> {
        let factory = self
            .device
            .get(&spec.type_name)
            .ok_or_else(|| self.unknown(spec, "device"))?;
        factory(spec)
    }

    /// Check that every stage of `pipeline` exists and accepts its settings,
    /// and that no stage declared single-device
    /// ([`Registry::declare_single_device`]) runs with `flow.devices > 1`.
    pub fn check(&self, pipeline: &Pipeline) -> Result<(), FlowError> {
        let devices = pipeline.flow.devices;
        if devices > 1 {
            for s in &pipeline.device {
                if let Some(why) = self.single_device.get(&s.type_name) {
                    return Err(FlowError::Config {
                        name: "flow.devices",
                        what: format!(
                            "stage `{}` (type `{}`) does not run on {devices} devices yet: {why}; \
                             set `flow.devices = 1` (other workers still read and decode)",
                            s.name(),
                            s.type_name
                        ),
                    });
                }
            }
        }
        for s in &pipeline.cpu {
            self.build_cpu(s)?;
        }
        for s in &pipeline.device {
            // Parsing the settings is the check; the stage itself is built on its device.
            drop(self.build_device(s)?);
        }
        Ok(())
    }
}
