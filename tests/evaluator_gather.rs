//! Gathered negatives at the trainer level, without a dataflow: two
//! `ContrastiveTrainer` replicas on two threads, linked by an in-memory
//! all-gather and sum-reduce (what `flow::allreduce` does over timely), each
//! with its part (5 and 3 images) of an 8-image batch, take the steps of one
//! trainer on the 8 images: per parameter, the update agrees to 0.1 % of
//! the parameter's move (float sums run in another order; see
//! `tests/evaluator_replicas.rs`), the logit scale included (it takes its
//! gradient on replica 0 only: counted on both, its move would double).
//! The loss each replica reports is the whole batch's, not the loss over its
//! own images with its own negatives.
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};

use dicoflow::model::clip::ClipConfig;
use dicoflow::train::evaluator::{ContrastiveConfig, ContrastiveStats, ContrastiveTrainer};
use dicoflow::train::step::{Gathered, GradientReduce, RowGather};
use dicoflow::train::{AdamWConfig, Precision, Schedule, TrainError};
use tch::{Device, Tensor};

const STEPS: usize = 3;

/// Two replicas' shared slots: each writes its own, then both read all.
struct Shared {
    slots: Mutex<Vec<(f64, Vec<f32>)>>,
    barrier: Barrier,
}

#[derive(Clone)]
struct Link {
    replica: usize,
    shared: Arc<Shared>,
}

impl Link {
    fn exchange(&self, count: f64, values: Vec<f32>) -> Vec<(f64, Vec<f32>)> {
        self.shared.slots.lock().unwrap()[self.replica] = (count, values);
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().unwrap().clone();
        self.shared.barrier.wait(); // nobody writes the next call's values before all have read
        all
    }
}

impl RowGather for Link {
    fn replica(&self) -> usize {
        self.replica
    }

    fn all_gather(&mut self, count: f64, rows: Vec<f32>) -> Result<Vec<Gathered>, TrainError> {
        Ok(self
            .exchange(count, rows)
            .into_iter()
            .map(|(count, values)| Gathered { count, values })
            .collect())
    }
}

impl GradientReduce for Link {
    fn replicas(&self) -> usize {
        2
    }

    fn index(&self) -> usize {
        self.replica
    }

    fn all_reduce(&mut self, _: f64, _: Vec<f32>) -> Result<(f64, Vec<f32>), TrainError> {
        unreachable!("gathered negatives sum the replicas' gradients")
    }

    fn all_reduce_sum(
        &mut self,
        count: f64,
        grad: Vec<f32>,
    ) -> Result<(f64, Vec<f32>), TrainError> {
        let all = self.exchange(count, grad);
        let mut acc = vec![0f64; all[0].1.len()];
        for (_, g) in &all {
            for (a, v) in acc.iter_mut().zip(g) {
                *a += *v as f64;
            }
        }
        let total = all.iter().map(|(c, _)| c).sum();
        Ok((total, acc.into_iter().map(|a| a as f32).collect()))
    }
}

fn config(negatives: bool) -> ContrastiveConfig {
    let mut clip = ClipConfig::tiny();
    clip.text.context_length = 32;
    ContrastiveConfig {
        clip,
        // eps 1 keeps AdamW's update proportional to the gradient, so that a
        // gradient counted twice moves its parameter visibly further.
        optimizer: AdamWConfig {
            lr: 1e-2,
            eps: 1.0,
            weight_decay: 0.0,
            ..Default::default()
        },
        schedule: Schedule {
            lr: 1e-2,
            total_steps: STEPS as u64,
            ..Default::default()
        },
        context_length: 32,
        grad_clip: None,
        seed: 2,
        accumulate: 1,
        precision: Precision::Fp32,
        hard_negatives: negatives.then(|| dicoflow::train::hard_negatives::HardNegativesConfig {
            per_caption: 2,
            swap: common::train::world_swap_classes(),
        }),
        lock_image: false,
    }
}

/// `STEPS` batches of 8 images with one caption each.
fn batches() -> Vec<(Tensor, Vec<Vec<String>>)> {
    (0..STEPS as u64)
        .map(|seed| {
            let w = common::train::pixel_world(8, 10 + seed);
            let caps = w.refs.iter().map(|c| vec![c[0].clone()]).collect();
            (w.pixels, caps)
        })
        .collect()
}

fn weights(t: &ContrastiveTrainer) -> BTreeMap<String, Tensor> {
    t.vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

/// Replica `r` of 2 trains on images `range` of every batch.
fn replica(
    r: usize,
    range: std::ops::Range<i64>,
    link: Link,
    negatives: bool,
) -> (Vec<ContrastiveStats>, BTreeMap<String, Tensor>) {
    let mut t = ContrastiveTrainer::new(config(negatives), Device::Cpu).unwrap();
    assert_eq!(link.replica, r);
    t.set_replicas(Box::new(link.clone()), Box::new(link));
    let mut stats = Vec::new();
    for (px, caps) in batches() {
        let px = px.narrow(0, range.start, range.end - range.start);
        let caps = &caps[range.start as usize..range.end as usize];
        let s = t.step_replica(Some((&px, caps))).unwrap().unwrap();
        stats.push(s);
    }
    (stats, weights(&t))
}

fn check(negatives: bool) {
    let shared = Arc::new(Shared {
        slots: Mutex::new(vec![(0.0, Vec::new()); 2]),
        barrier: Barrier::new(2),
    });
    let link = |replica| Link {
        replica,
        shared: shared.clone(),
    };
    let (l0, l1) = (link(0), link(1));
    let h0 = std::thread::spawn(move || replica(0, 0..5, l0, negatives));
    let h1 = std::thread::spawn(move || replica(1, 5..8, l1, negatives));
    let (s0, w0) = h0.join().unwrap();
    let (s1, w1) = h1.join().unwrap();

    let mut one = ContrastiveTrainer::new(config(negatives), Device::Cpu).unwrap();
    let start = weights(&one);
    let mut own = ContrastiveTrainer::new(config(negatives), Device::Cpu).unwrap();
    let mut single = Vec::new();
    for (i, (px, caps)) in batches().into_iter().enumerate() {
        if i == 0 {
            // Replica 0's loss had it used only its own images as negatives.
            let local = own.step(&px.narrow(0, 0, 5), &caps[..5]).unwrap();
            let s = one.step(&px, &caps).unwrap();
            assert!(
                (local.loss - s.loss).abs() > 0.1,
                "per-replica loss {} vs whole-batch loss {}",
                local.loss,
                s.loss
            );
            single.push(s);
        } else {
            single.push(one.step(&px, &caps).unwrap());
        }
    }
    for i in 0..STEPS {
        assert_eq!(
            s0[i].loss, s1[i].loss,
            "step {i}: one loss on both replicas"
        );
        assert_eq!(s0[i].accuracy, s1[i].accuracy);
        assert!(
            (s0[i].loss - single[i].loss).abs() < 1e-5,
            "step {i}: replicas' loss {} vs one trainer's {}",
            s0[i].loss,
            single[i].loss
        );
    }
    let w = weights(&one);
    for (name, t) in &w0 {
        assert!(t.equal(&w1[name]), "{name} differs between replicas");
        let moved = (&w[name] - &start[name]).abs().max().double_value(&[]);
        let diff = (t - &w[name]).abs().max().double_value(&[]);
        assert!(moved > 0.0, "{name} did not move");
        assert!(
            diff <= 1e-3 * moved,
            "{name}: replicas differ from one trainer by {diff} (moved {moved})"
        );
    }
}

#[test]
fn two_replicas_with_gathered_negatives_step_as_one_trainer_on_the_whole_batch() {
    check(false);
}

#[test]
fn gathered_hard_negatives_step_as_one_trainer() {
    check(true);
}
