//! The gradient all-reduce between replicas, over timely's exchange channels.
//!
//! With `flow.devices = R > 1`, worker r (r < R) owns replica r of the trained
//! model. For each optimizer step, at the dataflow time t of the batch that
//! ends the step's cycle:
//!
//! 1. **Contribute.** Replica r's device thread flattens its gradient g_r (the
//!    gradient of its mean loss over its `n_r` normalizer units: images, or
//!    target tokens for XE; `n_r = 0` and zeros for a replica without samples)
//!    and hands it to its device operator ([`ReplicaLink`], a channel); the
//!    thread then blocks on the reply channel. Only the device thread blocks:
//!    the timely worker keeps stepping.
//! 2. **Reduce-scatter.** The operator cuts g_r into chunks of [`CHUNK_LEN`]
//!    values and emits them at time t; chunk c goes, through a timely
//!    exchange, to worker `c mod R`, which waits for chunk c of every replica
//!    and combines them **in replica index order**:
//!    `N = Σ_r n_r` and `g[c] = Σ_{r=0}^{R-1} (n_r / N) · g_r[c]`, accumulated
//!    in f64 from r = 0 upwards and rounded to f32 once (all zeros when
//!    N = 0). The order and the rounding do not depend on arrival, so every run
//!    and every replica gets the same bits.
//! 3. **All-gather.** The reduced chunk is sent, through a second exchange, to
//!    every replica; replica r's gather operator assembles the chunks of time t
//!    and hands `(N, g)` to its device thread, which applies it (clipping and
//!    the fp16 non-finite check on the reduced gradient, then AdamW:
//!    `crate::train::step`), so every replica takes the identical step.
//!
//! Each replica moves `2 · P · 4 · (R − 1) / R` bytes per step for P
//! parameters (what it sends away in the scatter and receives in the gather),
//! as a ring all-reduce does.
//!
//! The path back to the device thread is a channel, not a dataflow edge: the
//! graph has no cycle, so progress tracking is the plain one. The device
//! operator holds its capability for t until the device thread has finished
//! batch t, which it can only do after the all-reduce of t; the reduce and
//! gather operators never wait on a frontier (they count replicas and
//! chunks), so they make progress while the device operators hold t.
//!
//! **Other combinations.** The same two exchanges carry, tagged with a
//! [`Combine`] so that messages of one batch time never mix:
//! - [`Combine::Sum`]: `g[c] = Σ_r g_r[c]` (weights 1, same order and
//!   rounding), for losses whose gradient is the sum of the replicas' partial
//!   gradients (the contrastive loss with gathered negatives);
//! - [`Combine::Gather`]: an all-gather of f32 rows. Replica r sends its rows
//!   (and its count n_r) once to every replica (message `chunk` = the
//!   destination); each replica concatenates them in replica index order and
//!   hands the parts to its device thread ([`ReplicaLink::all_gather`]). Each
//!   replica sends `(R − 1) · 4 · L_r` bytes for its `L_r` values and receives
//!   the others'. At most one gather per replica per batch time.
//!
//! The replica's handle reaches a training stage through the device thread:
//! the thread offers it before building its stages and the stage takes it in
//! its constructor ([`take_replica_link`]); only one stage per pipeline may.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Exchange, Inspect, Operator};
use timely::dataflow::Stream;
use timely::scheduling::SyncActivator;

use super::batch::BatchTime;
use super::error::FlowError;
use super::state::RunState;
use crate::train::error::TrainError;
use crate::train::step::{Gathered, GradientReduce, RowGather};

/// Values per chunk of the reduce-scatter (256 KiB of f32).
pub const CHUNK_LEN: usize = 1 << 16;

/// How often a device thread waiting for its reduced gradient, and the
/// reduce-scatter holding chunks that wait for other replicas', check whether
/// the run is stopping.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// How the replicas' contributions of one batch time are combined. Part of
/// every message, so a gather and a reduction of the same time are never
/// confused.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Combine {
    /// `Σ_r (n_r / N) · g_r` (the mean gradient over every replica's units).
    #[default]
    Mean,
    /// `Σ_r g_r` (weights 1).
    Sum,
    /// Every replica's values, concatenated in replica index order.
    Gather,
}

/// One chunk of one replica's gradient, on its way to the chunk's owner (for
/// [`Combine::Gather`]: the replica's whole rows, `chunk` = the destination
/// replica, `chunks` = the number of replicas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradChunk {
    pub time: BatchTime,
    pub combine: Combine,
    pub replica: u32,
    pub chunk: u32,
    pub chunks: u32,
    /// The replica's normalizer units `n_r`.
    pub count: f64,
    pub values: Vec<f32>,
}

/// One reduced chunk, on its way to replica `dest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReducedChunk {
    pub time: BatchTime,
    pub combine: Combine,
    pub dest: u32,
    pub chunk: u32,
    pub chunks: u32,
    /// `N = Σ_r n_r`.
    pub total: f64,
    pub values: Vec<f32>,
    /// [`Combine::Gather`]: every replica's `(n_r, number of values)`, in
    /// replica order (empty for reductions).
    pub parts: Vec<(f64, u64)>,
}

/// A replica's gradient (or rows to gather) for time `time`, from its device
/// thread to its operator.
#[derive(Debug)]
pub struct Contribution {
    pub time: BatchTime,
    pub combine: Combine,
    /// Number of replicas (a gather sends one copy to each).
    pub replicas: u32,
    pub count: f64,
    pub grad: Vec<f32>,
}

/// The reduced gradient (or gathered rows) of time `time`, from the gather
/// operator to the device thread.
#[derive(Debug)]
pub struct Reduced {
    pub time: BatchTime,
    pub combine: Combine,
    pub total: f64,
    pub grad: Vec<f32>,
    /// [`Combine::Gather`]: every replica's `(n_r, number of values)`.
    pub parts: Vec<(f64, u64)>,
}

/// Cuts `c` into the chunks replica `replica` sends (at least one, so that a
/// model without parameters still takes part); a gather's rows go whole, one
/// copy per replica.
pub fn split(c: Contribution, replica: u32) -> Vec<GradChunk> {
    if c.combine == Combine::Gather {
        let copies = c.replicas.max(1);
        return (0..copies)
            .map(|dest| GradChunk {
                time: c.time,
                combine: Combine::Gather,
                replica,
                chunk: dest,
                chunks: copies,
                count: c.count,
                values: c.grad.clone(),
            })
            .collect();
    }
    let chunks = c.grad.len().div_ceil(CHUNK_LEN).max(1);
    let mut out = Vec::with_capacity(chunks);
    for i in 0..chunks {
        let lo = (i * CHUNK_LEN).min(c.grad.len());
        let hi = ((i + 1) * CHUNK_LEN).min(c.grad.len());
        out.push(GradChunk {
            time: c.time,
            combine: c.combine,
            replica,
            chunk: i as u32,
            chunks: chunks as u32,
            count: c.count,
            values: c.grad[lo..hi].to_vec(),
        });
    }
    out
}

/// `(N, Σ_r values_r)` of one chunk, `parts` in replica index order: the
/// [`Combine::Sum`] of [`reduce`], in f64 from replica 0 upwards, rounded to
/// f32 once. `N = Σ_r n_r`.
pub fn reduce_sum(parts: &[GradChunk]) -> (f64, Vec<f32>) {
    let len = parts.first().map_or(0, |p| p.values.len());
    let total: f64 = parts.iter().map(|p| p.count).sum();
    let mut acc = vec![0f64; len];
    for p in parts {
        for (a, v) in acc.iter_mut().zip(&p.values) {
            *a += *v as f64;
        }
    }
    (total, acc.into_iter().map(|a| a as f32).collect())
}

/// [`Combine::Gather`] of `parts` (replica index order): `(N, the values
/// concatenated, every part's (n_r, length))`.
pub fn concat(parts: &[GradChunk]) -> (f64, Vec<f32>, Vec<(f64, u64)>) {
    let total: f64 = parts.iter().map(|p| p.count).sum();
    let values = parts
        .iter()
        .flat_map(|p| p.values.iter().copied())
        .collect();
    let lens = parts
        .iter()
        .map(|p| (p.count, p.values.len() as u64))
        .collect();
    (total, values, lens)
}

/// `(N, Σ_r (n_r / N) · values_r)` of one chunk, `parts` in replica index
/// order; the sum runs in f64 from replica 0 upwards and is rounded to f32
/// once. All zeros when `N = 0`.
pub fn reduce(parts: &[GradChunk]) -> (f64, Vec<f32>) {
    let len = parts.first().map_or(0, |p| p.values.len());
    let total: f64 = parts.iter().map(|p| p.count).sum();
    if total <= 0.0 {
        return (0.0, vec![0.0; len]);
    }
    let mut acc = vec![0f64; len];
    for p in parts {
        let w = p.count / total;
        if w == 0.0 {
            continue;
        }
        for (a, v) in acc.iter_mut().zip(&p.values) {
            *a += w * *v as f64;
        }
    }
    (total, acc.into_iter().map(|a| a as f32).collect())
}

/// A replica's end of the all-reduce, held by its training stage's stepper
/// (it implements [`GradientReduce`] and [`RowGather`]). A clone shares the
/// channels: a stage may hand one to its stepper and one to its trainer, used
/// one call at a time from the device thread.
#[derive(Clone)]
pub struct ReplicaLink {
    index: usize,
    local_index: usize,
    replicas: usize,
    /// This replica's process and the number of processes that own replicas.
    process: (usize, usize),
    /// The batch the device thread is processing (set by the device loop).
    time: Arc<AtomicU64>,
    contributions: Sender<Contribution>,
    reduced: Receiver<Reduced>,
    activator: SyncActivator,
    state: Arc<RunState>,
}

impl std::fmt::Debug for ReplicaLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaLink")
            .field("index", &self.index)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// Where a replica sits among the replicas of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicaPlace {
    pub index: usize,
    /// The index among its process's replicas.
    pub local_index: usize,
    pub replicas: usize,
    /// Its process, and the number of processes that own replicas.
    pub process: (usize, usize),
}

impl ReplicaLink {
    pub(crate) fn new(
        ReplicaPlace {
            index,
            local_index,
            replicas,
            process,
        }: ReplicaPlace,
        time: Arc<AtomicU64>,
        contributions: Sender<Contribution>,
        reduced: Receiver<Reduced>,
        activator: SyncActivator,
        state: Arc<RunState>,
    ) -> Self {
        Self {
            index,
            local_index,
            replicas,
            process,
            time,
            contributions,
            reduced,
            activator,
            state,
        }
    }

    /// This replica's index (0 writes weights, logs and checkpoints).
    pub fn index(&self) -> usize {
        self.index
    }

    /// This replica's index among the replicas of its process: replica d of
    /// a process places its models on `cuda:K + d` when the stage names
    /// `cuda:K` (each machine numbers its own GPUs).
    pub fn local_index(&self) -> usize {
        self.local_index
    }

    /// Number of replicas.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// This replica's process (its index in the hostfile) and the number of
    /// processes that own replicas: `(0, 1)` when every replica is a thread
    /// of one process.
    pub fn process(&self) -> (usize, usize) {
        self.process
    }
}

impl ReplicaLink {
    /// Sends this replica's `values` for the current batch time, combined as
    /// `combine`, and waits (polling the run's stop flag every [`WAIT_POLL`])
    /// for the result of every replica's.
    fn combine(
        &mut self,
        combine: Combine,
        count: f64,
        values: Vec<f32>,
    ) -> Result<Reduced, TrainError> {
        let time = self.time.load(Ordering::SeqCst);
        let len = values.len();
        self.contributions
            .send(Contribution {
                time,
                combine,
                replicas: self.replicas as u32,
                count,
                grad: values,
            })
            .map_err(|_| {
                TrainError::AllReduce(format!(
                    "batch {time}: the device operator is gone (the run is stopping)"
                ))
            })?;
        let _ = self.activator.activate();
        let waiting = Instant::now();
        let limit = self.state.collective_timeout();
        loop {
            match self.reduced.recv_timeout(WAIT_POLL) {
                Ok(r)
                    if r.time == time
                        && r.combine == combine
                        && (combine == Combine::Gather || r.grad.len() == len) =>
                {
                    return Ok(r)
                }
                Ok(r) => {
                    return Err(TrainError::AllReduce(format!(
                        "replica {} waited for the {combine:?} of batch {time} ({len} values) \
                         and received the {:?} of batch {} ({} values): the replicas are out \
                         of step",
                        self.index,
                        r.combine,
                        r.time,
                        r.grad.len()
                    )))
                }
                Err(RecvTimeoutError::Timeout) if self.state.aborted() => {
                    return Err(TrainError::AllReduce(format!(
                        "batch {time}: the run stopped before every replica contributed"
                    )))
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(limit) = limit.filter(|l| waiting.elapsed() >= *l) {
                        // Recorded here, as the run's error, so that the run
                        // can tell a peer gone silent from a stage failure
                        // and stop waiting for the cluster to drain.
                        let err = FlowError::CollectiveTimeout {
                            replica: self.index,
                            time,
                            waited_s: limit.as_secs_f64(),
                            peers: Some(self.state.device_peers())
                                .filter(|p| !p.is_empty())
                                .unwrap_or_else(|| "a replica of this process".into()),
                        };
                        let message = err.to_string();
                        self.state.fail(err);
                        return Err(TrainError::AllReduce(message));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(TrainError::AllReduce(format!(
                        "batch {time}: the dataflow ended before the combined values came back"
                    )))
                }
            }
        }
    }
}

impl GradientReduce for ReplicaLink {
    fn replicas(&self) -> usize {
        self.replicas
    }

    fn index(&self) -> usize {
        self.index
    }

    fn all_reduce(&mut self, count: f64, grad: Vec<f32>) -> Result<(f64, Vec<f32>), TrainError> {
        let r = self.combine(Combine::Mean, count, grad)?;
        Ok((r.total, r.grad))
    }

    fn all_reduce_sum(
        &mut self,
        count: f64,
        grad: Vec<f32>,
    ) -> Result<(f64, Vec<f32>), TrainError> {
        let r = self.combine(Combine::Sum, count, grad)?;
        Ok((r.total, r.grad))
    }
}

impl RowGather for ReplicaLink {
    fn replica(&self) -> usize {
        self.index
    }

    fn all_gather(&mut self, count: f64, rows: Vec<f32>) -> Result<Vec<Gathered>, TrainError> {
        let r = self.combine(Combine::Gather, count, rows)?;
        let mut out = Vec::with_capacity(r.parts.len());
        let mut at = 0usize;
        for (count, len) in r.parts {
            let len = len as usize;
            let Some(values) = r.grad.get(at..at + len) else {
                return Err(TrainError::AllReduce(format!(
                    "batch {}: the gathered rows are shorter than their parts say",
                    r.time
                )));
            };
            out.push(Gathered {
                count,
                values: values.to_vec(),
            });
            at += len;
        }
        if out.len() != self.replicas {
            return Err(TrainError::AllReduce(format!(
                "batch {}: gathered {} parts for {} replicas",
                r.time,
                out.len(),
                self.replicas
            )));
        }
        Ok(out)
    }
}

thread_local! {
    /// The link the device thread offers to the stage it is building, and
    /// whether a stage has taken it.
    static OFFERED: RefCell<(Option<ReplicaLink>, bool)> = const { RefCell::new((None, false)) };
}

/// Offer `link` to the stages built next on this (device) thread.
pub(crate) fn offer_replica_link(link: Option<ReplicaLink>) {
    OFFERED.with(|o| *o.borrow_mut() = (link, false));
}

/// Withdraw an offered link no stage took.
pub(crate) fn withdraw_replica_link() {
    OFFERED.with(|o| *o.borrow_mut() = (None, false));
}

/// For a stage's constructor, on its device thread: this device's index
/// among the device owners of its process when the pipeline has
/// `flow.devices > 1` (`None` with one device), for a stage that places
/// itself on the d-th device but takes no part in the replicas (the link
/// stays offered to a training stage).
pub fn local_device_index() -> Option<usize> {
    OFFERED.with(|o| o.borrow().0.as_ref().map(ReplicaLink::local_index))
}

/// For a stage's constructor, on its device thread: the number of the run
/// ([`RunState::id`]) when the pipeline has `flow.devices > 1`, `None` with
/// one device, for state the devices of one run share in their process.
/// Like [`local_device_index`], it leaves the link offered.
pub fn device_run_id() -> Option<u64> {
    OFFERED.with(|o| o.borrow().0.as_ref().map(|l| l.state.id()))
}

/// For a stage's constructor, on its device thread: this device's process
/// and the number of processes that own devices ([`ReplicaLink::process`]),
/// `None` with one device. Like [`local_device_index`], it leaves the link
/// offered.
pub fn device_process() -> Option<(usize, usize)> {
    OFFERED.with(|o| o.borrow().0.as_ref().map(ReplicaLink::process))
}

/// For a training stage's constructor, on its device thread: the link to the
/// other replicas when the pipeline has `flow.devices > 1`, `None` with one
/// device. Errors when another stage of the pipeline has already taken it
/// (only one stage per pipeline can train replicas).
pub fn take_replica_link(stage: &str) -> Result<Option<ReplicaLink>, FlowError> {
    OFFERED.with(|o| {
        let mut o = o.borrow_mut();
        if o.1 {
            return Err(FlowError::StageSetup {
                stage: stage.to_owned(),
                message: "another stage of this pipeline already trains replicas over \
                          `flow.devices`; only one training stage per pipeline can: split the \
                          pipeline, or set `flow.devices = 1`"
                    .into(),
            });
        }
        let link = o.0.take();
        o.1 = link.is_some();
        Ok(link)
    })
}

/// Streams of gradient chunks from the replicas' device operators.
pub trait AllReduceExt {
    /// Reduce-scatter the chunks among `replicas` workers, all-gather the
    /// results, and deliver each complete reduced gradient on `deliver` (this
    /// worker's replica; `None` on a worker without one).
    fn all_reduce(self, replicas: usize, deliver: Option<Sender<Reduced>>, state: Arc<RunState>);
}

impl AllReduceExt for Stream<'_, BatchTime, Vec<GradChunk>> {
    fn all_reduce(self, replicas: usize, deliver: Option<Sender<Reduced>>, state: Arc<RunState>) {
        let r = replicas.max(1);
        let reduce_state = state.clone();
        let scope = self.scope();
        let reduced = self
            .exchange(move |c: &GradChunk| c.chunk as u64 % r as u64)
            .unary::<CapacityContainerBuilder<Vec<ReducedChunk>>, _, _, _>(
                Pipeline,
                "AllReduce[reduce-scatter]",
                move |_cap, info| {
                    let activator = scope.activator_for(info.address);
                    type Parts = (Capability<BatchTime>, Vec<Option<GradChunk>>);
                    let mut parts: BTreeMap<(BatchTime, Combine, u32), Parts> = BTreeMap::new();
                    move |input, output| {
                        let port = output.output_index();
                        input.for_each_stamp(|cap, data| {
                            let Some(cap) = cap.retain_least(port) else {
                                return;
                            };
                            for d in data {
                                for c in d.drain(..) {
                                    let entry = parts
                                        .entry((c.time, c.combine, c.chunk))
                                        .or_insert_with(|| (cap.clone(), vec![None; r]));
                                    let slot = c.replica as usize;
                                    if slot < r {
                                        entry.1[slot] = Some(c);
                                    }
                                }
                            }
                        });
                        // A stopping run may never bring the missing chunks
                        // (a replica failed, or a process): let go of the
                        // waiting ones so the graph can drain.
                        if reduce_state.aborted() {
                            parts.clear();
                            return;
                        }
                        let complete: Vec<(BatchTime, Combine, u32)> = parts
                            .iter()
                            .filter(|(_, (_, v))| v.iter().all(Option::is_some))
                            .map(|(k, _)| *k)
                            .collect();
                        for key in complete {
                            let Some((cap, v)) = parts.remove(&key) else {
                                continue;
                            };
                            let v: Vec<GradChunk> = v.into_iter().flatten().collect();
                            let (time, combine, chunk) = key;
                            let mut session = output.session(&cap);
                            if combine == Combine::Gather {
                                // Every replica's rows for replica `chunk`.
                                let (total, values, parts) = concat(&v);
                                session.give(ReducedChunk {
                                    time,
                                    combine,
                                    dest: chunk,
                                    chunk: 0,
                                    chunks: 1,
                                    total,
                                    values,
                                    parts,
                                });
                                continue;
                            }
                            let chunks = v[0].chunks;
                            let (total, values) = match combine {
                                Combine::Sum => reduce_sum(&v),
                                _ => reduce(&v),
                            };
                            for dest in 0..r as u32 {
                                session.give(ReducedChunk {
                                    time,
                                    combine,
                                    dest,
                                    chunk,
                                    chunks,
                                    total,
                                    values: values.clone(),
                                    parts: Vec::new(),
                                });
                            }
                        }
                        // The run's stop is a flag, not an event of this
                        // operator's input: while chunks wait here, look at
                        // it again after a poll, or a stop that comes after
                        // the last chunk would leave their capabilities held
                        // and every process of the run waiting for this one.
                        if !parts.is_empty() {
                            activator.activate_after(WAIT_POLL);
                        }
                    }
                },
            );
        type Slots = Vec<Option<Vec<f32>>>;
        let gathered: RefCell<BTreeMap<(BatchTime, Combine), Slots>> = Default::default();
        reduced
            .exchange(|c: &ReducedChunk| c.dest as u64)
            .inspect(move |c: &ReducedChunk| {
                let Some(deliver) = deliver.as_ref() else {
                    return;
                };
                let mut gathered = gathered.borrow_mut();
                let slots = gathered
                    .entry((c.time, c.combine))
                    .or_insert_with(|| vec![None; c.chunks as usize]);
                if let Some(slot) = slots.get_mut(c.chunk as usize) {
                    *slot = Some(c.values.clone());
                }
                if slots.iter().all(Option::is_some) {
                    let slots = gathered.remove(&(c.time, c.combine)).unwrap_or_default();
                    let grad: Vec<f32> = slots.into_iter().flatten().flatten().collect();
                    let reduced = Reduced {
                        time: c.time,
                        combine: c.combine,
                        total: c.total,
                        grad,
                        parts: c.parts.clone(),
                    };
                    if deliver.send(reduced).is_err() && !state.aborted() {
                        state.fail(FlowError::DeviceThread {
                            device: format!("replica {}", c.dest),
                            message: format!(
                                "the device thread ended before the reduced gradient of batch \
                                 {} arrived",
                                c.time
                            ),
                        });
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(replica: u32, count: f64, values: Vec<f32>) -> GradChunk {
        GradChunk {
            time: 0,
            combine: Combine::Mean,
            replica,
            chunk: 0,
            chunks: 1,
            count,
            values,
        }
    }

    #[test]
    fn reduce_weights_by_counts_and_skips_empty_replicas() {
        let (n, g) = reduce(&[
            chunk(0, 3.0, vec![1.0, 2.0]),
            chunk(1, 1.0, vec![5.0, -2.0]),
        ]);
        assert_eq!(n, 4.0);
        assert_eq!(g, vec![0.75 + 1.25, 1.5 - 0.5]);
        let (n, g) = reduce(&[
            chunk(0, 0.0, vec![0.0, 0.0]),
            chunk(1, 2.0, vec![5.0, -2.0]),
        ]);
        assert_eq!((n, g), (2.0, vec![5.0, -2.0]));
        let (n, g) = reduce(&[chunk(0, 0.0, vec![0.0]), chunk(1, 0.0, vec![0.0])]);
        assert_eq!((n, g), (0.0, vec![0.0]));
    }

    #[test]
    fn sum_weighs_every_replica_one_and_gather_concatenates_in_replica_order() {
        let parts = [
            chunk(0, 3.0, vec![1.0, 2.0]),
            chunk(1, 0.0, vec![0.0, 0.0]),
            chunk(2, 1.0, vec![5.0, -2.5]),
        ];
        let (n, g) = reduce_sum(&parts);
        assert_eq!((n, g), (4.0, vec![6.0, -0.5]));
        // Rounded once from the f64 sum: 1 + 2^-24 + 2^-24 is 1 + 2^-23 in
        // f64, where two f32 additions would each round back to 1.
        let tiny = 2f32.powi(-24);
        let (_, g) = reduce_sum(&[
            chunk(0, 1.0, vec![1.0]),
            chunk(1, 1.0, vec![tiny]),
            chunk(2, 1.0, vec![tiny]),
        ]);
        assert_eq!(g, vec![1.0 + 2.0 * tiny]);
        let rows = [
            chunk(0, 2.0, vec![1.0, 2.0, 3.0, 4.0]),
            chunk(1, 0.0, vec![]),
            chunk(2, 1.0, vec![5.0, 6.0]),
        ];
        let (n, values, lens) = concat(&rows);
        assert_eq!(n, 3.0);
        assert_eq!(values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(lens, vec![(2.0, 4), (0.0, 0), (1.0, 2)]);
    }

    #[test]
    fn a_gather_sends_its_rows_whole_to_every_replica_under_its_tag() {
        let c = Contribution {
            time: 7,
            combine: Combine::Gather,
            replicas: 3,
            count: 1.0,
            grad: vec![0.5; CHUNK_LEN + 1],
        };
        let parts = split(c, 2);
        assert_eq!(parts.len(), 3);
        for (dest, p) in parts.iter().enumerate() {
            // `chunk` is the destination: the exchange routes it to that worker.
            assert_eq!((p.chunk, p.chunks, p.replica), (dest as u32, 3, 2));
            assert_eq!((p.time, p.combine), (7, Combine::Gather));
            assert_eq!(p.values.len(), CHUNK_LEN + 1);
        }
        // A replica without samples still sends (empty rows) to everyone.
        let empty = Contribution {
            time: 7,
            combine: Combine::Gather,
            replicas: 2,
            count: 0.0,
            grad: vec![],
        };
        assert_eq!(split(empty, 0).len(), 2);
    }

    /// A stop that comes after the last chunk, as the only event (a peer's
    /// failure notice, a device thread's error): the chunks that wait for a
    /// replica that will never send must be let go, so the run ends.
    #[test]
    fn a_stop_after_the_last_chunk_lets_the_waiting_chunks_go() {
        use std::time::Instant;
        use timely::dataflow::operators::Input;

        let state = Arc::new(RunState::default());
        let shared = state.clone();
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let state = shared.clone();
            let mut input = worker.dataflow::<BatchTime, _, _>(|scope| {
                let (input, chunks) = scope.new_input::<Vec<GradChunk>>();
                chunks.all_reduce(2, None, state.clone());
                input
            });
            if worker.index() == 0 {
                // Replica 0's chunks; replica 1 never sends its own.
                for c in 0..2 {
                    input.send(GradChunk {
                        chunk: c,
                        chunks: 2,
                        ..chunk(0, 1.0, vec![1.0])
                    });
                }
            }
            input.close();
            // Until the stop, the chunks wait (the run is still on).
            let waiting = Instant::now();
            while waiting.elapsed() < Duration::from_millis(300) {
                assert!(worker.step_or_park(Some(Duration::from_millis(5))));
            }
            if worker.index() == 0 {
                state.fail(FlowError::Timely("a peer failed".into()));
            }
            let stopping = Instant::now();
            while worker.step_or_park(Some(Duration::from_millis(5))) {
                assert!(
                    stopping.elapsed() < Duration::from_secs(10),
                    "worker {}: the waiting chunks were still held 10 s after the stop",
                    worker.index()
                );
            }
        })
        .unwrap();
        for result in guards.join() {
            result.unwrap();
        }
        assert!(state.aborted());
    }

    #[test]
    fn split_cuts_fixed_chunks_and_keeps_one_for_nothing() {
        let c = Contribution {
            time: 4,
            combine: Combine::Mean,
            replicas: 2,
            count: 2.0,
            grad: (0..CHUNK_LEN + 3).map(|i| i as f32).collect(),
        };
        let parts = split(c, 1);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].values, vec![65536.0, 65537.0, 65538.0]);
        assert!(parts
            .iter()
            .all(|p| p.chunks == 2 && p.replica == 1 && p.time == 4));
        let empty = split(
            Contribution {
                time: 0,
                combine: Combine::Sum,
                replicas: 2,
                count: 0.0,
                grad: vec![],
            },
            0,
        );
        assert_eq!(empty.len(), 1);
    }
}
