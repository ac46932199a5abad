//! `reward_cache`: a device stage that precomputes DiCO's inputs for offline
//! training — for each image, k candidates of a fixed captioner, their
//! evaluator rewards and their log-probs under the frozen reference — and
//! writes them as one part of a reward cache ([`crate::reward::cache`]).
//! Images already in the cache (finished parts, or chunks of this part left
//! by an interrupted run) are skipped and counted.
//!
//! On several devices (`flow.devices = N`, worker threads of one process),
//! device d computes the images the flow routes to it (its disjoint share of
//! every batch) and writes them as its own chunks of the part
//! ([`PartWriter::for_device`]); the last device of the run to finish merges
//! every chunk into the part, which is then the file one device would have
//! written. Decoding is per image, so an image's candidates do not depend on
//! which images share its batch (beam search; sampled candidates do, and are
//! refused on several devices). When the devices are spread over several
//! processes (`-n/-p/-H`), none of them can tell it is the last to finish:
//! each writes its chunks and leaves the part open, and process 0 merges it
//! once the whole run has ended ([`merge_parts_left_open`]; a cluster run
//! ends in no process before every process's device threads have finished,
//! `flow::peers`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::flow::allreduce::take_replica_link;
use crate::flow::{DeviceBatch, DeviceStage, FlowError, Sample, StageFailure};
use crate::model::captioner::{Backbone, CaptionText, Captioner, CaptionerConfig};
use crate::model::clip::ClipConfig;
use crate::reward::cache::{self, CacheEntry, CacheProvenance, PartWriter};
use crate::reward::cache_run::{weights_sha256, CacheStage, ProvenanceError};
use crate::reward::{ClipScorer, ScoreConfig};
use crate::rng::Rng;
use crate::train::candidates::{Candidates, Decoding};
use crate::train::stages::setup::{
    build_failed, default_device, device_of, load_scorer, load_text, setting_err, StageBuildError,
};
use crate::train::stages::tensors::sample_tensors;

/// Settings of `reward_cache`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardCacheSettings {
    /// The captioner that generates the candidates, and its weights.
    pub captioner: CaptionerConfig,
    pub weights: PathBuf,
    /// Weights of the frozen reference (default: `weights`, the usual case:
    /// candidates and reference both from the XE checkpoint).
    #[serde(default)]
    pub reference: Option<PathBuf>,
    /// Word vocabulary of the captioner (JSON); absent: CLIP BPE.
    #[serde(default)]
    pub vocab: Option<PathBuf>,
    /// CLIP safetensors whose vision tower is the captioner's frozen backbone.
    pub backbone: PathBuf,
    pub backbone_config: ClipConfig,
    /// Evaluator weights (CLIP safetensors) and config (default: `backbone_config`).
    pub evaluator: PathBuf,
    #[serde(default)]
    pub evaluator_config: Option<ClipConfig>,
    #[serde(default = "ScoreConfig::dico_reward")]
    pub reward: ScoreConfig,
    /// Candidates per image.
    #[serde(default = "default_candidates")]
    pub candidates: i64,
    #[serde(default)]
    pub decoding: Decoding,
    /// Seed of sampling (unused by beam search).
    #[serde(default)]
    pub seed: u64,
    /// Cache directory.
    pub out: PathBuf,
    /// Name of the part this run writes (`dicoflow cache-rewards` names one
    /// part per input shard).
    #[serde(default = "default_part")]
    pub part: String,
    /// Candidates per chunk file: at most this much work is lost on a crash.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// `cpu` (default), `cuda`, `cuda:K` or `auto` ([`crate::device::DeviceName`]).
    #[serde(default = "default_device")]
    pub device: crate::device::DeviceName,
}

/// Default `candidates`: 5 per image (the paper's beams).
fn default_candidates() -> i64 {
    5
}

/// Default `part`: `all` (one part for the whole input).
fn default_part() -> String {
    "all".into()
}

/// Default `chunk_rows`: 2048 candidates per chunk file.
fn default_chunk_rows() -> usize {
    2048
}

/// What goes into the cache's `dicoflow.config` metadata: every setting
/// that changes the cached numbers, except the weights (hashed separately).
#[derive(Debug, Serialize)]
struct ConfigRecord<'a> {
    captioner: &'a CaptionerConfig,
    backbone_sha256: String,
    backbone_config: &'a ClipConfig,
    evaluator_config: &'a ClipConfig,
    reward: &'a ScoreConfig,
    candidates: i64,
    decoding: Decoding,
    seed: u64,
}

impl CacheStage for RewardCacheSettings {
    const TYPE_NAME: &'static str = "reward_cache";

    fn out(&self) -> &Path {
        &self.out
    }

    fn chunk_rows(&self) -> usize {
        self.chunk_rows
    }

    fn several_devices_refused(&self) -> Option<&'static str> {
        several_devices_refused(self.decoding)
    }

    /// The provenance a run with these settings writes into the cache: the
    /// SHA-256 of every weights file and the record of its model and scoring settings.
    fn provenance(&self) -> Result<CacheProvenance, ProvenanceError> {
        let reference = self.reference.as_ref().unwrap_or(&self.weights);
        let config = ConfigRecord {
            captioner: &self.captioner,
            backbone_sha256: weights_sha256(&self.backbone)?,
            backbone_config: &self.backbone_config,
            evaluator_config: self
                .evaluator_config
                .as_ref()
                .unwrap_or(&self.backbone_config),
            reward: &self.reward,
            candidates: self.candidates,
            decoding: self.decoding,
            seed: self.seed,
        };
        Ok(CacheProvenance {
            evaluator_sha256: weights_sha256(&self.evaluator)?,
            captioner_sha256: weights_sha256(&self.weights)?,
            reference_sha256: weights_sha256(reference)?,
            config: serde_json::to_string(&config).map_err(ProvenanceError::Config)?,
        })
    }
}

/// Why candidates decoded with `decoding` cannot be split over several
/// devices (`None`: they can).
fn several_devices_refused(decoding: Decoding) -> Option<&'static str> {
    match decoding {
        Decoding::Beam => None,
        Decoding::Sample { .. } => Some(
            "sampled candidates are drawn with one seed per batch, so an image's samples \
             depend on which images share its batch and N devices would cache other samples \
             than one device; use `decoding = { kind = \"beam\" }`, or `flow.devices = 1`",
        ),
    }
}

/// Device `index` of `devices` computing one part together, `local_index`
/// among the devices of its process; `processes`: how many processes own
/// the devices.
#[derive(Debug, Clone, Copy)]
struct Share {
    index: usize,
    local_index: usize,
    devices: usize,
    processes: usize,
}

/// The devices of this process writing one part together in one run: the
/// last to finish merges the part, unless one failed.
#[derive(Debug)]
struct Group {
    id: u64,
    dir: PathBuf,
    part: String,
    devices: usize,
    joined: usize,
    left: usize,
    finished: usize,
    failed: bool,
}

/// Groups with a member still running or waiting for the rest of a run's
/// devices to join, and the next group id. A group lives until all its
/// `devices` have left: a device may finish before another one of its run
/// has built its stage (a run of fewer batches than `flow.max_in_flight`).
static GROUPS: Mutex<(Vec<Group>, u64)> = Mutex::new((Vec::new(), 0));

/// A device's place in its [`Group`]; dropped before [`Membership::leave`]
/// (a stage that failed to build, a run stopped on an error), it leaves as
/// failed, so the part is not merged.
#[derive(Debug)]
struct Membership {
    id: u64,
    left: bool,
}

impl Membership {
    /// Join the group of this run's devices writing `part` of `dir`: the
    /// group that still waits for devices (also when one of them has failed
    /// already: a late device of a failed run must not start a group of its
    /// own), or a new one.
    fn join(dir: &Path, part: &str, devices: usize) -> Self {
        let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
        let (list, next) = &mut *groups;
        if let Some(g) = list
            .iter_mut()
            .find(|g| g.dir == dir && g.part == part && g.devices == devices && g.joined < devices)
        {
            g.joined += 1;
            return Self {
                id: g.id,
                left: false,
            };
        }
        *next += 1;
        list.push(Group {
            id: *next,
            dir: dir.to_path_buf(),
            part: part.to_owned(),
            devices,
            joined: 1,
            left: 0,
            finished: 0,
            failed: false,
        });
        Self {
            id: *next,
            left: false,
        }
    }

    /// Leave the group, `finished` (every chunk written) or not. True when
    /// this device is the last of the run's devices to finish and none
    /// failed: it merges the part.
    fn leave(&mut self, finished: bool) -> bool {
        if std::mem::replace(&mut self.left, true) {
            return false;
        }
        let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
        let list = &mut groups.0;
        let Some(i) = list.iter().position(|g| g.id == self.id) else {
            return false;
        };
        let g = &mut list[i];
        g.left += 1;
        if finished {
            g.finished += 1;
        } else {
            g.failed = true;
        }
        let merge = !g.failed && g.finished == g.devices;
        // Every device of the run has come and gone.
        if g.left == g.devices {
            list.remove(i);
        }
        merge
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave(false);
    }
}

/// A frozen captioner `cfg` with the weights at `path`, which the stage's
/// setting `setting` names.
///
/// Errors: [`StageBuildError::Model`] when the captioner cannot be built,
/// [`StageBuildError::Setting`] (naming `setting`) when the weights cannot be
/// loaded.
fn load_captioner(
    cfg: &CaptionerConfig,
    setting: &'static str,
    path: &Path,
    device: tch::Device,
) -> Result<(VarStore, Captioner), StageBuildError> {
    let mut vs = VarStore::new(device);
    let model = Captioner::new(vs.root(), cfg)?;
    crate::model::weights::load_var_store(&mut vs, path)
        .map_err(StageBuildError::in_setting(setting))?;
    vs.freeze();
    Ok((vs, model))
}

/// Precomputes candidates, rewards and reference log-probs into a cache part.
pub struct RewardCacheStage {
    settings: RewardCacheSettings,
    backbone: Backbone,
    policy: (VarStore, Captioner),
    /// `None`: the reference is the generating captioner itself.
    reference: Option<(VarStore, Captioner)>,
    scorer: ClipScorer,
    text: CaptionText,
    writer: Option<PartWriter>,
    /// On several devices: this device's share, its place among the
    /// devices of its process writing the part (`None` when the devices are
    /// spread over several processes: process 0 merges after the run), and
    /// the provenance the merged part keeps.
    shared: Option<(Share, Option<Membership>, CacheProvenance)>,
    present: HashSet<String>,
    /// Batches whose candidates could not be computed: the part is then not
    /// sealed, so a re-run retries their images.
    failed_batches: usize,
}

impl RewardCacheStage {
    /// The stage on this device thread. On several devices, it takes its
    /// place among them first ([`take_replica_link`]).
    ///
    /// Errors: [`FlowError::Config`] for settings that cannot be honoured
    /// (fewer than 2 candidates, a finished part, sampled candidates on
    /// several devices);
    /// [`FlowError::StageBuild`] when a model, the vocabulary or the cache
    /// cannot be read.
    pub fn try_new(s: RewardCacheSettings) -> Result<Self, FlowError> {
        let err = setting_err("reward_cache");
        let failed = build_failed::<StageBuildError>("reward_cache");
        if s.candidates < 2 {
            return Err(err(format!(
                "candidates = {}: DiCO needs at least 2 per image",
                s.candidates
            )));
        }
        let share = take_replica_link("reward_cache")?.map(|l| Share {
            index: l.index(),
            local_index: l.local_index(),
            devices: l.replicas(),
            processes: l.process().1,
        });
        if let Some(share) = share {
            if let Some(why) = several_devices_refused(s.decoding) {
                return Err(err(format!("{} devices: {why}", share.devices)));
            }
        }
        // Joined before anything that can fail on one device only: a device
        // that fails later leaves the group as failed, and nobody merges.
        // Devices spread over several processes join none.
        let membership = share
            .filter(|sh| sh.processes <= 1)
            .map(|sh| Membership::join(&s.out, &s.part, sh.devices));
        let device = device_of("reward_cache", s.device, share.map(|sh| sh.local_index))?;
        if cache::part_path(&s.out, &s.part).exists() {
            return Err(err(format!(
                "{} is already finished: delete it to recompute, or name another `part`",
                cache::part_path(&s.out, &s.part).display()
            )));
        }
        let provenance = s.provenance().map_err(|e| failed(e.into()))?;
        let present =
            cache::present_keys(&s.out, &s.part, &provenance).map_err(|e| failed(e.into()))?;
        let writer = match share {
            None => PartWriter::new(&s.out, &s.part, provenance.clone(), s.chunk_rows),
            Some(sh) => PartWriter::for_device(
                &s.out,
                &s.part,
                provenance.clone(),
                s.chunk_rows,
                (sh.index, sh.devices),
            ),
        }
        .map_err(|e| failed(e.into()))?;
        let shared = share.map(|sh| (sh, membership, provenance));
        let text = load_text(s.vocab.as_deref()).map_err(&failed)?;
        text.check(&s.captioner.tokens)
            .map_err(|e| failed(e.into()))?;
        let backbone = Backbone::from_clip_safetensors(&s.backbone, &s.backbone_config, device)
            .map_err(StageBuildError::in_setting("backbone"))
            .map_err(&failed)?;
        let policy =
            load_captioner(&s.captioner, "weights", &s.weights, device).map_err(&failed)?;
        let reference = match &s.reference {
            Some(r) if r != &s.weights => {
                Some(load_captioner(&s.captioner, "reference", r, device).map_err(&failed)?)
            }
            _ => None,
        };
        let eval_cfg = s.evaluator_config.as_ref().unwrap_or(&s.backbone_config);
        let scorer =
            load_scorer(&s.evaluator, eval_cfg, s.reward.clone(), device).map_err(&failed)?;
        Ok(Self {
            settings: s,
            backbone,
            policy,
            reference,
            scorer,
            text,
            writer: Some(writer),
            shared,
            present,
            failed_batches: 0,
        })
    }

    fn entries(
        &mut self,
        time: u64,
        keys: &[String],
        pixels: &Tensor,
    ) -> Result<Vec<CacheEntry>, StageFailure> {
        fn fail(what: &'static str) -> impl Fn(crate::model::ModelError) -> StageFailure {
            move |e| StageFailure::new(what).with_detail(e)
        }
        let device = self.policy.0.device();
        let k = self.settings.candidates;
        let (candidates, ref_lp) = tch::no_grad(|| -> Result<_, StageFailure> {
            let pixels = pixels
                .f_to_device(device)
                .map_err(|e| StageFailure::new("backbone").with_detail(e))?;
            let feats = self.backbone.features(&pixels).map_err(fail("backbone"))?;
            let policy = &self.policy.1;
            let memory = policy.encode(&feats).map_err(fail("encoder"))?;
            let seed = Rng::derive(self.settings.seed, &[time]).next_u64();
            let candidates = Candidates::generate(policy, &memory, k, self.settings.decoding, seed)
                .map_err(fail("generation"))?;
            let ref_lp = match &self.reference {
                None => candidates.logprobs(policy, &memory),
                Some((_, reference)) => {
                    let memory = reference.encode(&feats).map_err(fail("reference"))?;
                    candidates.logprobs(reference, &memory)
                }
            }
            .map_err(fail("reference log-probs"))?;
            Ok((candidates, ref_lp))
        })?;
        let texts: Vec<String> = candidates
            .ids
            .iter()
            .map(|ids| self.text.decode(ids))
            .collect();
        let image_keys: Vec<&String> = keys
            .iter()
            .flat_map(|key| std::iter::repeat_n(key, k as usize))
            .collect();
        self.scorer
            .add_images(keys, pixels)
            .map_err(|e| StageFailure::new("image embeddings failed").with_detail(e))?;
        let rewards = self
            .scorer
            .score(&image_keys, &texts)
            .map_err(|e| StageFailure::new("rewards failed").with_detail(e))?;
        self.scorer.clear_images();
        let ref_lp = ref_lp
            .f_view([-1])
            .and_then(|t| t.f_to_device(tch::Device::Cpu))
            .and_then(|t| Vec::<f32>::try_from(&t))
            .map_err(|e| StageFailure::new("reference log-probs failed").with_detail(e))?;
        Ok(candidates
            .ids
            .iter()
            .zip(texts)
            .zip(rewards.iter().zip(&ref_lp))
            .enumerate()
            .map(|(i, ((ids, text), (&reward, &ref_logprob)))| CacheEntry {
                key: image_keys[i].clone(),
                rank: (i as i64 % k) as i32,
                tokens: ids.iter().map(|&t| t as i32).collect(),
                text,
                reward,
                ref_logprob,
            })
            .collect())
    }
}

impl DeviceStage for RewardCacheStage {
    fn process(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        self.cache_batch(batch)
            .inspect_err(|_| self.failed_batches += 1)
    }

    fn finish(&mut self) -> Result<(), StageFailure> {
        if self.failed_batches > 0 {
            if let Some((_, Some(membership), _)) = self.shared.as_mut() {
                membership.leave(false);
            }
            if let Some(writer) = self.writer.as_mut() {
                writer
                    .flush()
                    .map_err(|e| StageFailure::new("cache chunk not written").with_detail(e))?;
            }
            return Err(StageFailure::new(
                "batches failed, the part stays open: run again to compute only what is missing",
            )
            .with_detail(format!(
                "{} batches failed, so their images are not cached; the part's chunks are kept",
                self.failed_batches
            )));
        }
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        let Some((share, membership, provenance)) = self.shared.as_mut() else {
            let (path, rows) = writer
                .finish()
                .map_err(|e| StageFailure::new("cache part not written").with_detail(e))?;
            tracing::info!("wrote {} ({rows} candidates)", path.display());
            return Ok(());
        };
        // This device's chunks first; the last device to finish merges them all.
        if let Err(e) = writer.flush() {
            if let Some(m) = membership.as_mut() {
                m.leave(false);
            }
            return Err(StageFailure::new("cache chunk not written").with_detail(e));
        }
        let Some(membership) = membership.as_mut() else {
            tracing::info!(
                "device {} of {} (process {} of {}): chunks written; process 0 merges the part \
                 after the run",
                share.index,
                share.devices,
                share.index - share.local_index,
                share.processes
            );
            return Ok(());
        };
        if membership.leave(true) {
            let s = &self.settings;
            let (path, rows) = PartWriter::new(&s.out, &s.part, provenance.clone(), s.chunk_rows)
                .and_then(PartWriter::finish)
                .map_err(|e| StageFailure::new("cache part not written").with_detail(e))?;
            tracing::info!(
                "wrote {} ({rows} candidates, from {} devices)",
                path.display(),
                share.devices
            );
        }
        Ok(())
    }
}

/// After a successful run of `pipeline`, merges every part its
/// `reward_cache` stages left as chunks (devices spread over several
/// processes leave their part open, see the module docs; a device of one
/// process that finished before another joined may too) and returns the
/// parts written. `dicoflow train` calls it on process 0 of a cluster run,
/// once the run has ended in every process; a library user running a
/// cluster with `flow::run` calls it the same way.
///
/// Errors: [`FlowError::StageSettings`] for settings that do not parse,
/// [`FlowError::StageBuild`] when the provenance cannot be computed or a
/// chunk cannot be read or merged.
pub fn merge_parts_left_open(pipeline: &crate::flow::Pipeline) -> Result<Vec<PathBuf>, FlowError> {
    let mut merged = Vec::new();
    for spec in pipeline
        .device
        .iter()
        .filter(|s| s.type_name == <RewardCacheSettings as CacheStage>::TYPE_NAME)
    {
        let s: RewardCacheSettings = crate::flow::registry::parse_settings(spec)?;
        if cache::part_path(&s.out, &s.part).exists() || !cache::chunk_dir(&s.out, &s.part).is_dir()
        {
            continue;
        }
        let failed = build_failed::<StageBuildError>("reward_cache");
        let provenance = s.provenance().map_err(|e| failed(e.into()))?;
        let (path, rows) = PartWriter::new(&s.out, &s.part, provenance, s.chunk_rows)
            .and_then(PartWriter::finish)
            .map_err(|e| failed(e.into()))?;
        tracing::info!(
            "wrote {} ({rows} candidates, merged after the run)",
            path.display()
        );
        merged.push(path);
    }
    Ok(merged)
}

impl RewardCacheStage {
    /// Candidates, rewards and reference log-probs of the batch's images
    /// that are not cached yet, pushed to the part.
    fn cache_batch(&mut self, batch: &mut DeviceBatch) -> Result<(), StageFailure> {
        let todo: Vec<&Sample> = batch
            .samples
            .iter()
            .filter(|s| !self.present.contains(&s.key))
            .collect();
        let cached = batch.samples.len() - todo.len();
        batch
            .metrics
            .insert("cache/already_cached".into(), cached as f64);
        batch
            .metrics
            .insert("cache/images".into(), todo.len() as f64);
        if todo.is_empty() {
            return Ok(());
        }
        let (pixels, keys, _) = sample_tensors(&todo)?;
        let entries = self.entries(batch.time, &keys, &pixels)?;
        let mean = entries.iter().map(|e| e.reward as f64).sum::<f64>() / entries.len() as f64;
        batch.metrics.insert("cache/reward_mean".into(), mean);
        self.present.extend(keys);
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| StageFailure::new("the part is already finished"))?;
        writer
            .push(entries)
            .map_err(|e| StageFailure::new("cache chunk not written").with_detail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test uses its own folder: the groups are process-wide.
    fn dir(name: &str) -> PathBuf {
        PathBuf::from(format!("/nonexistent/membership-{name}"))
    }

    #[test]
    fn the_last_of_the_devices_to_finish_merges() {
        let d = dir("last");
        let mut a = Membership::join(&d, "p", 3);
        let mut b = Membership::join(&d, "p", 3);
        // A device that finishes before the last one has joined waits for it.
        assert!(!a.leave(true));
        let mut c = Membership::join(&d, "p", 3);
        assert!(!c.leave(true));
        assert!(b.leave(true), "the third to finish merges");
        // Leaving twice (finish, then drop) counts once.
        assert!(!b.leave(true));
        // The group is gone: the next run's devices start a new one.
        let mut again = Membership::join(&d, "p", 3);
        assert!(!again.leave(true));
    }

    #[test]
    fn a_device_that_failed_keeps_the_part_open() {
        let d = dir("failed");
        let mut a = Membership::join(&d, "p", 2);
        {
            // Dropped without finishing: its stage failed to build, or the
            // run stopped.
            let _b = Membership::join(&d, "p", 2);
        }
        assert!(!a.leave(true), "no merge after a device failed");
        // A device that failed before the other one joined.
        {
            let _b = Membership::join(&d, "p", 2);
        }
        let mut late = Membership::join(&d, "p", 2);
        assert!(!late.leave(true), "the late device joins the failed run");
        // Every device of the failed runs has left: a new run starts afresh.
        let mut x = Membership::join(&d, "p", 2);
        let mut y = Membership::join(&d, "p", 2);
        assert!(!x.leave(true));
        assert!(y.leave(true));
    }

    #[test]
    fn parts_and_device_counts_have_their_own_groups() {
        let d = dir("apart");
        let mut p = Membership::join(&d, "p", 2);
        let mut q = Membership::join(&d, "q", 2);
        let mut three = Membership::join(&d, "p", 3);
        assert!(!p.leave(true));
        assert!(!q.leave(true));
        assert!(!three.leave(true));
        let mut p2 = Membership::join(&d, "p", 2);
        assert!(p2.leave(true), "the second device of part p merges it");
    }
}
