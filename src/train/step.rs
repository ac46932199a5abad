//! One optimizer step, shared by the trainers: accumulate micro-batch
//! gradients, unscale them (fp16), clip, step AdamW.
//!
//! Each micro-batch loss is the mean of its objective over the micro-batch's
//! *normalizer units* (`count`: images for DiCO, SCST and offline DiCO,
//! target tokens for XE, images for the contrastive loss). The step follows
//! the gradient of the mean over every unit of the cycle, as one big batch
//! would:
//!
//! ```text
//! g = Σ_m (n_m / N) · g_m,   N = Σ_m n_m
//! ```
//!
//! where g_m is the gradient of micro-batch m's mean loss and n_m its count
//! (weighting by counts, not 1/accumulate: a mean of means over-weights short
//! micro-batches; the bug transformers fixed with `num_items_in_batch`). With
//! `accumulate > 1` each loss is multiplied by `n_m` before backward and the
//! summed gradient by `1/N` after the last micro-batch; with `accumulate = 1`
//! the loss is multiplied by the loss scale alone, exactly as before counts
//! were weighed (same float operations, same bits).
//!
//! With replicas ([`GradientReduce`], `flow.devices > 1`), replica r's
//! gradient g_r over its N_r units is combined the same way,
//! `g = Σ_r (N_r / N) · g_r` with `N = Σ_r N_r` (see `crate::flow::allreduce`),
//! and every replica applies the identical update (or, for a loss over the
//! global batch of which each replica backpropagates its part,
//! `g = Σ_r g_r`: [`Stepper::set_summing_reducer`]). Clipping, the fp16
//! non-finite check and the AdamW update happen once, on the combined
//! gradient, after the cycle's last micro-batch: a step is skipped on every
//! replica or on none.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::train::adamw::AdamW;
use crate::train::checkpoint::{Checkpointer, TrainState};
use crate::train::error::TrainError;
use crate::train::loss_scale::{LossScaleConfig, LossScaleState, LossScaler};
use crate::train::precision::Precision;

/// How gradients become an update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepConfig {
    /// Micro-batches per optimizer step (≥ 1).
    pub accumulate: u32,
    /// Clip the global gradient L2 norm to this value.
    pub grad_clip: Option<f64>,
    /// `fp16` turns on dynamic loss scaling.
    pub precision: Precision,
    pub loss_scale: LossScaleConfig,
}

impl Default for StepConfig {
    fn default() -> Self {
        Self {
            accumulate: 1,
            grad_clip: None,
            precision: Precision::Fp32,
            loss_scale: LossScaleConfig::default(),
        }
    }
}

/// What happened at the end of an accumulation cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// AdamW stepped; the gradient norm before clipping.
    Applied { grad_norm: f64 },
    /// The fp16 gradients held inf or NaN: no update, the loss scale backed off.
    Skipped,
}

/// Combines this replica's gradient with every other replica's (the
/// gradient all-reduce of `crate::flow::allreduce`).
pub trait GradientReduce {
    /// `grad` is this replica's gradient (every optimised parameter in
    /// [`AdamW`] slot order, flattened, f32) of its mean loss over `count`
    /// normalizer units (0 for a replica without samples: `grad` is zeros).
    /// Returns `(N, g)`: N = Σ_r count_r over every replica and
    /// g = Σ_r (count_r / N) · grad_r, identical on every replica (all zeros
    /// when N = 0). Blocks until every replica has contributed.
    ///
    /// Errors: [`TrainError::AllReduce`] when the run stops or the exchange
    /// ends before the result comes back.
    fn all_reduce(&mut self, count: f64, grad: Vec<f32>) -> Result<(f64, Vec<f32>), TrainError>;

    /// Number of replicas taking part (this one included).
    fn replicas(&self) -> usize;

    /// This replica's index (0 ..).
    fn index(&self) -> usize;

    /// As [`GradientReduce::all_reduce`] with weights 1: returns
    /// `(Σ_r count_r, Σ_r grad_r)`, the sum in replica order in f64, rounded
    /// to f32 once. For losses whose gradient is the sum of each replica's
    /// partial gradient of one global loss (gathered negatives,
    /// `crate::train::evaluator`).
    ///
    /// Errors: as `all_reduce`.
    fn all_reduce_sum(&mut self, count: f64, grad: Vec<f32>)
        -> Result<(f64, Vec<f32>), TrainError>;
}

/// One replica's part of an all-gather ([`RowGather`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered {
    /// The replica's count (its samples in the batch).
    pub count: f64,
    /// Its rows, flattened (f32).
    pub values: Vec<f32>,
}

/// Gathers every replica's rows for the current batch (the all-gather of
/// `crate::flow::allreduce`): what a loss over the global batch needs, such
/// as the contrastive loss with negatives from every replica.
pub trait RowGather {
    /// This replica's index (0 ..).
    fn replica(&self) -> usize;

    /// Sends `rows` (this replica's, flattened, any length; `count` its
    /// samples) and returns every replica's, in replica index order
    /// (this replica's included). Blocks until all have arrived. At most once
    /// per batch time.
    ///
    /// Errors: [`TrainError::AllReduce`] when the run stops or the exchange
    /// ends before the rows come back.
    fn all_gather(&mut self, count: f64, rows: Vec<f32>) -> Result<Vec<Gathered>, TrainError>;
}

/// Owns the optimizer and the accumulation and loss-scaling state.
pub struct Stepper {
    pub opt: AdamW,
    cfg: StepConfig,
    /// Micro-batches whose gradients are accumulated but not yet applied.
    pending: u32,
    /// Normalizer units of those micro-batches.
    pending_count: f64,
    scaler: Option<LossScaler>,
    /// The all-reduce with the other replicas, if any.
    reducer: Option<Box<dyn GradientReduce>>,
    /// The reducer sums the replicas' gradients (weights 1) instead of
    /// weighting them by their counts ([`Stepper::set_summing_reducer`]).
    summing: bool,
    /// Wall-clock time of the last all-reduce, until taken
    /// ([`Stepper::take_allreduce_seconds`]).
    last_allreduce: Option<std::time::Duration>,
}

impl std::fmt::Debug for Stepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stepper")
            .field("opt", &self.opt)
            .field("cfg", &self.cfg)
            .field("pending", &self.pending)
            .field("replicated", &self.reducer.is_some())
            .finish()
    }
}

impl Stepper {
    pub fn new(opt: AdamW, cfg: StepConfig) -> Result<Self, TrainError> {
        if cfg.accumulate == 0 {
            return Err(TrainError::Setting {
                name: "accumulate",
                value: "0".into(),
                reason: "use 1 or more micro-batches per optimizer step",
            });
        }
        let scaler = cfg
            .precision
            .scales_loss()
            .then(|| LossScaler::new(cfg.loss_scale));
        Ok(Self {
            opt,
            cfg,
            pending: 0,
            pending_count: 0.0,
            scaler,
            reducer: None,
            summing: false,
            last_allreduce: None,
        })
    }

    /// Combine gradients with other replicas through `reducer` before every
    /// update (see the module docs).
    pub fn set_reducer(&mut self, reducer: Box<dyn GradientReduce>) {
        self.reducer = Some(reducer);
    }

    /// Combine gradients with other replicas through `reducer` by their
    /// plain sum, `g = Σ_r g_r`: for a loss over the global batch of which
    /// each replica backpropagates its own part (gathered negatives). Every
    /// replica then passes [`Stepper::backward`] the *global* count of the
    /// micro-batch (the same on every replica), so that accumulation weighs
    /// micro-batches as one device would, and a cycle whose global count is
    /// 0 makes no update.
    pub fn set_summing_reducer(&mut self, reducer: Box<dyn GradientReduce>) {
        self.reducer = Some(reducer);
        self.summing = true;
    }

    /// Whether updates are all-reduced with other replicas.
    pub fn replicated(&self) -> bool {
        self.reducer.is_some()
    }

    /// Replicas taking the same updates (1 without a reducer).
    pub fn replicas(&self) -> usize {
        self.reducer.as_ref().map_or(1, |r| r.replicas())
    }

    /// This replica's index, `None` without a reducer.
    pub fn replica_index(&self) -> Option<usize> {
        self.reducer.as_ref().map(|r| r.index())
    }

    /// The generator a replica's trainer draws from in the micro-batch about
    /// to run (`None` without replicas: the trainer keeps its own stream).
    /// Replicas draw as many numbers as their share of a batch asks for, so
    /// their generators would drift apart, and a checkpoint (replica 0's)
    /// holds only one: each replica instead restarts from the seed, `tag`,
    /// the step, the micro-batch and its index, which a resumed run
    /// reproduces exactly.
    pub fn replica_rng(&self, seed: u64, tag: u64, step: u64) -> Option<crate::rng::Rng> {
        self.replica_index()
            .map(|r| crate::rng::Rng::derive(seed, &[tag, step, u64::from(self.pending), r as u64]))
    }

    /// Seconds this replica's thread waited in the last all-reduce, from
    /// handing its flattened gradient to the reducer to getting the combined
    /// one back (the exchange, and waiting for the slowest replica to
    /// contribute); `None` without a reducer, and after it was taken once.
    /// Logged by the captioner's stage as `train/allreduce_s`.
    pub fn take_allreduce_seconds(&mut self) -> Option<f64> {
        self.last_allreduce.take().map(|d| d.as_secs_f64())
    }

    /// Micro-batches per optimizer step.
    pub fn accumulate(&self) -> u32 {
        self.cfg.accumulate
    }

    /// Micro-batches accumulated since the last optimizer step (0 at a step
    /// boundary, the only place a checkpoint may be taken).
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// The current loss scale (fp16 only).
    pub fn loss_scale(&self) -> Option<f64> {
        self.scaler.as_ref().map(LossScaler::scale)
    }

    /// The scaler's state for a checkpoint (fp16 only).
    pub fn scaler_state(&self) -> Option<LossScaleState> {
        self.scaler.as_ref().map(LossScaler::state)
    }

    /// Continue loss scaling from a checkpoint; a checkpoint without scaler
    /// state (written in fp32) leaves the initial scale.
    pub fn restore_scaler(&mut self, state: Option<LossScaleState>) {
        if let (Some(scaler), Some(state)) = (self.scaler.as_mut(), state) {
            scaler.restore(state);
        }
    }

    /// Backward of one micro-batch `loss`, the mean of its objective over
    /// `count` normalizer units (images, or target tokens for XE); after the
    /// N-th micro-batch, update with learning rate `lr` and say how. `None`
    /// while accumulating (or when no replica had any unit in the cycle).
    pub fn backward(
        &mut self,
        loss: &Tensor,
        count: f64,
        lr: f64,
    ) -> Result<Option<Update>, TrainError> {
        self.begin_micro_batch()?;
        let scale = self.scaler.as_ref().map_or(1.0, LossScaler::scale);
        let factor = if self.cfg.accumulate == 1 {
            scale / self.cfg.accumulate as f64
        } else {
            scale * count
        };
        loss.f_mul_scalar(factor)?.f_backward()?;
        self.pending_count += count;
        self.end_micro_batch(lr)
    }

    /// A micro-batch in which this replica has no sample: it adds nothing to
    /// the gradient but takes part in the cycle (and in the all-reduce at its
    /// end), so that every replica applies the same update.
    pub fn backward_empty(&mut self, lr: f64) -> Result<Option<Update>, TrainError> {
        self.begin_micro_batch()?;
        self.end_micro_batch(lr)
    }

    /// A micro-batch of `count` normalizer units of which this replica
    /// backpropagates nothing (with [`Stepper::set_summing_reducer`]: a
    /// replica without samples whose part of the global loss has no gradient
    /// here): counted like [`Stepper::backward`], and the cycle's all-reduce
    /// takes its zeros.
    pub fn backward_counted_empty(
        &mut self,
        count: f64,
        lr: f64,
    ) -> Result<Option<Update>, TrainError> {
        self.begin_micro_batch()?;
        self.pending_count += count;
        self.end_micro_batch(lr)
    }

    fn begin_micro_batch(&mut self) -> Result<(), TrainError> {
        if self.pending == 0 {
            self.opt.zero_grad()?;
            self.pending_count = 0.0;
        }
        Ok(())
    }

    fn end_micro_batch(&mut self, lr: f64) -> Result<Option<Update>, TrainError> {
        self.pending += 1;
        if self.pending < self.cfg.accumulate {
            return Ok(None);
        }
        self.pending = 0;
        if self.cfg.accumulate > 1 && self.pending_count > 0.0 {
            self.opt.scale_grads(1.0 / self.pending_count)?;
        }
        if let Some(reducer) = self.reducer.as_mut() {
            self.opt.define_grads()?;
            let flat = self.opt.flat_grads()?;
            let waited = std::time::Instant::now();
            let (total, reduced) = if self.summing {
                let (_, g) = reducer.all_reduce_sum(self.pending_count, flat)?;
                (self.pending_count, g) // the global count, the same everywhere
            } else {
                reducer.all_reduce(self.pending_count, flat)?
            };
            self.last_allreduce = Some(waited.elapsed());
            if total <= 0.0 {
                // No replica had a sample in this cycle: nothing to learn from.
                self.opt.zero_grad()?;
                return Ok(None);
            }
            self.opt.set_flat_grads(&reduced)?;
        }
        if let Some(scaler) = self.scaler.as_mut() {
            let non_finite = scaler.unscale(&self.opt.grads())?;
            scaler.update(non_finite);
            if non_finite {
                self.opt.zero_grad()?;
                return Ok(Some(Update::Skipped));
            }
        }
        let grad_norm = self.opt.clip_grad_norm(self.cfg.grad_clip)?;
        self.opt.set_lr(lr);
        self.opt.step()?;
        Ok(Some(Update::Applied { grad_norm }))
    }
}

/// What a trainer saves besides its weights and the stepper's state.
#[derive(Debug, Clone)]
pub struct TrainerState {
    pub step: u64,
    /// The dataflow time of the last batch the trainer has consumed (see
    /// [`TrainState::last_batch`]); `None` outside a dataflow.
    pub last_batch: Option<u64>,
    /// Every source worker's data cursor after `last_batch` ([`TrainState::cursors`]).
    pub cursors: Vec<crate::data::Cursor>,
    pub rng: crate::rng::Rng,
    pub config: String,
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// The best validation result so far ([`TrainState::best`]).
    pub best: Option<crate::train::checkpoint::BestSoFar>,
}

impl Stepper {
    /// Write a checkpoint of `vs`, the optimizer and the loss scaler with
    /// `ck`. Only between optimizer steps: accumulated gradients are not saved.
    pub fn save_checkpoint(
        &self,
        vs: &tch::nn::VarStore,
        ck: &Checkpointer,
        state: TrainerState,
    ) -> Result<std::path::PathBuf, TrainError> {
        if self.pending() > 0 {
            return Err(TrainError::State {
                path: ck.path_for(state.step),
                what: format!(
                    "checkpoint asked for after {} of {} accumulated micro-batches; \
                     checkpoint right after an optimizer step",
                    self.pending(),
                    self.accumulate()
                ),
            });
        }
        let full = TrainState {
            step: state.step,
            last_batch: state.last_batch,
            cursors: state.cursors,
            rng: state.rng,
            config: state.config,
            metrics: state.metrics,
            loss_scale: self.scaler_state(),
            best: state.best,
            replicas: self.replicas() as u64,
        };
        ck.save(vs, &self.opt, &full)
    }

    /// Load checkpoint `dir` into `vs`, the optimizer and the loss scaler.
    ///
    /// Errors: [`TrainError::State`] when the checkpoint was trained on
    /// another number of replicas ([`TrainState::replicas`]): the updates
    /// would go on in another summation order, so the run could not continue
    /// exactly as it would have.
    pub fn load_checkpoint(
        &mut self,
        vs: &mut tch::nn::VarStore,
        dir: &std::path::Path,
    ) -> Result<TrainState, TrainError> {
        let saved = Checkpointer::read_state(dir)?.replicas;
        let now = self.replicas() as u64;
        if saved != now {
            return Err(TrainError::State {
                path: dir.to_path_buf(),
                what: format!(
                    "the checkpoint was trained on {saved} device(s) (flow.devices) and this \
                     run has {now}: a resume continues exactly only on as many; set \
                     flow.devices = {saved}, or start again without --resume (move the \
                     checkpoints directory away)"
                ),
            });
        }
        let state = Checkpointer::load(dir, vs, &mut self.opt)?;
        self.restore_scaler(state.loss_scale);
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::adamw::AdamWConfig;
    use std::time::Duration;
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    /// A reducer of one replica that takes `delay` to answer.
    struct Slow {
        delay: Duration,
    }

    impl GradientReduce for Slow {
        fn all_reduce(
            &mut self,
            count: f64,
            grad: Vec<f32>,
        ) -> Result<(f64, Vec<f32>), TrainError> {
            std::thread::sleep(self.delay);
            Ok((count, grad))
        }
        fn replicas(&self) -> usize {
            1
        }
        fn index(&self) -> usize {
            0
        }
        fn all_reduce_sum(
            &mut self,
            count: f64,
            grad: Vec<f32>,
        ) -> Result<(f64, Vec<f32>), TrainError> {
            self.all_reduce(count, grad)
        }
    }

    fn stepper() -> (VarStore, Stepper) {
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().ones("w", &[3]);
        let opt = AdamW::new(&vs, AdamWConfig::default());
        let s = Stepper::new(opt, StepConfig::default()).expect("stepper");
        (vs, s)
    }

    fn loss(vs: &VarStore) -> Tensor {
        let w = vs.variables()["w"].shallow_clone();
        (&w * &w).sum(Kind::Float)
    }

    #[test]
    fn allreduce_wait_is_timed_once_per_step() {
        let (vs, mut s) = stepper();
        s.set_reducer(Box::new(Slow {
            delay: Duration::from_millis(30),
        }));
        assert_eq!(s.take_allreduce_seconds(), None);
        let update = s.backward(&loss(&vs), 1.0, 1e-3).expect("step");
        assert!(matches!(update, Some(Update::Applied { .. })));
        let waited = s.take_allreduce_seconds().expect("timed");
        assert!((0.03..5.0).contains(&waited), "{waited}");
        assert_eq!(s.take_allreduce_seconds(), None, "taken once");
    }

    /// Replica `index` of two in threads of this test: contributions meet in
    /// `slots` and each replica combines both, in replica order, as the
    /// flow's all-reduce does (`GradientReduce::all_reduce`'s formula).
    /// Each replica's `(count, gradient)` of the current step.
    type Slots = std::sync::Arc<std::sync::Mutex<[Option<(f64, Vec<f32>)>; 2]>>;

    struct Pair {
        index: usize,
        slots: Slots,
        barrier: std::sync::Arc<std::sync::Barrier>,
    }

    impl GradientReduce for Pair {
        fn all_reduce(
            &mut self,
            count: f64,
            grad: Vec<f32>,
        ) -> Result<(f64, Vec<f32>), TrainError> {
            self.slots.lock().unwrap()[self.index] = Some((count, grad));
            self.barrier.wait();
            let slots = self.slots.lock().unwrap().clone();
            self.barrier.wait(); // both have read before either writes again
            let parts: Vec<(f64, Vec<f32>)> = slots.into_iter().map(Option::unwrap).collect();
            let total: f64 = parts.iter().map(|(n, _)| n).sum();
            let reduced = (0..parts[0].1.len())
                .map(|i| {
                    parts
                        .iter()
                        .map(|(n, g)| n / total * g[i] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            Ok((total, reduced))
        }
        fn replicas(&self) -> usize {
            2
        }
        fn index(&self) -> usize {
            self.index
        }
        fn all_reduce_sum(
            &mut self,
            _count: f64,
            _grad: Vec<f32>,
        ) -> Result<(f64, Vec<f32>), TrainError> {
            unreachable!("the mean is tested")
        }
    }

    /// fp16 loss scaling with 2 replicas, on the CPU (the scaler's arithmetic
    /// is the same on every device; autocast itself needs CUDA): when one
    /// replica's gradient overflows, both skip the step and back off the
    /// scale, and the next step is applied on both, identically.
    #[test]
    fn an_overflow_on_one_replica_skips_the_step_on_every_replica() {
        let slots = std::sync::Arc::new(std::sync::Mutex::new([None, None]));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let replica = |index: usize| {
            let (slots, barrier) = (slots.clone(), barrier.clone());
            std::thread::spawn(move || {
                let vs = VarStore::new(Device::Cpu);
                let _w = vs.root().ones("w", &[3]);
                let opt = AdamW::new(&vs, AdamWConfig::default());
                let cfg = StepConfig {
                    precision: Precision::Fp16,
                    ..StepConfig::default()
                };
                let mut s = Stepper::new(opt, cfg).expect("stepper");
                s.set_reducer(Box::new(Pair {
                    index,
                    slots,
                    barrier,
                }));
                let scale = s.loss_scale().expect("fp16 scales the loss");
                // Step 1: replica 1's loss overflows (its gradient is inf).
                let first = if index == 1 {
                    (loss(&vs) * f64::INFINITY).sum(Kind::Float)
                } else {
                    loss(&vs)
                };
                let skipped = s.backward(&first, 2.0, 1e-2).expect("step 1");
                let after_skip = vs.variables()["w"].shallow_clone().copy();
                let backed_off = s.loss_scale().unwrap();
                // Step 2: both finite.
                let applied = s
                    .backward(&loss(&vs), 2.0 + index as f64, 1e-2)
                    .expect("step 2");
                let w = Vec::<f32>::try_from(vs.variables()["w"].shallow_clone()).unwrap();
                (
                    skipped,
                    Vec::<f32>::try_from(after_skip).unwrap(),
                    (scale, backed_off),
                    applied,
                    w,
                )
            })
        };
        let (a, b) = (replica(0), replica(1));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        for r in [&a, &b] {
            assert_eq!(
                r.0,
                Some(Update::Skipped),
                "step 1 is skipped on every replica"
            );
            assert_eq!(r.1, vec![1.0; 3], "no update on a skipped step");
            assert_eq!(r.2 .1, r.2 .0 * 0.5, "the scale backs off");
            assert!(matches!(r.3, Some(Update::Applied { .. })), "{:?}", r.3);
            assert!(
                r.4.iter().all(|&w| w < 1.0),
                "step 2 moved the weights: {:?}",
                r.4
            );
        }
        assert_eq!(a.4, b.4, "the replicas' weights stay identical");
    }

    #[test]
    fn no_allreduce_time_without_replicas() {
        let (vs, mut s) = stepper();
        s.backward(&loss(&vs), 1.0, 1e-3).expect("step");
        assert_eq!(s.take_allreduce_seconds(), None);
    }
}
