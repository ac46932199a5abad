//! Checkpoints: atomic directories, resume of weights + optimizer + state,
//! keep-last-N, best-by-metric.

mod common;
use std::collections::BTreeMap;

use dicoflow::rng::Rng;
use dicoflow::train::{AdamW, AdamWConfig, BestBy, Checkpointer, LossScaleState, TrainState};
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

fn model(vs: &VarStore) -> nn::Linear {
    nn::linear(vs.root() / "fc", 4, 2, Default::default())
}

fn train_step(fc: &nn::Linear, opt: &mut AdamW, x: &Tensor) {
    opt.zero_grad().unwrap();
    fc.forward(x).square().mean(Kind::Float).backward();
    opt.step().unwrap();
}

fn state(step: u64, score: f64) -> TrainState {
    TrainState {
        step,
        last_batch: Some(step * 2 + 1),
        cursors: vec![],
        rng: Rng::new(step),
        config: "[train]\nobjective = \"xe\"\n".into(),
        metrics: BTreeMap::from([("val_score".to_owned(), score)]),
        // An fp16 run's scaler state comes back with the rest.
        loss_scale: Some(LossScaleState {
            scale: 1024.0,
            clean_steps: step,
        }),
        // The best validation result so far comes back too.
        best: Some(dicoflow::train::BestSoFar {
            metric: "CIDEr".into(),
            value: score,
            step,
        }),
        // And the number of replicas that trained to it.
        replicas: 2,
    }
}

#[test]
fn resume_from_a_checkpoint_continues_bit_identically() {
    let (x, vs, fc) = common::with_tch_seed(0, || {
        let x = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
        let vs = VarStore::new(Device::Cpu);
        let fc = model(&vs);
        (x, vs, fc)
    });
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let ck = Checkpointer::new(dir.path(), 3, None);
    for _ in 0..3 {
        train_step(&fc, &mut opt, &x);
    }
    let saved = ck.save(&vs, &opt, &state(3, 0.0)).unwrap();
    for _ in 0..4 {
        train_step(&fc, &mut opt, &x);
    }

    let mut vs2 = VarStore::new(Device::Cpu);
    let fc2 = model(&vs2);
    let mut opt2 = AdamW::new(&vs2, AdamWConfig::default());
    let st = Checkpointer::load(&saved, &mut vs2, &mut opt2).unwrap();
    assert_eq!(st, state(3, 0.0));
    for _ in 0..4 {
        train_step(&fc2, &mut opt2, &x);
    }
    assert!(fc.ws.equal(&fc2.ws));
    assert!(fc.bs.as_ref().unwrap().equal(fc2.bs.as_ref().unwrap()));
}

#[test]
fn keeps_the_last_n_and_the_best_and_ignores_unfinished_ones() {
    let vs = VarStore::new(Device::Cpu);
    let _fc = model(&vs);
    let opt = AdamW::new(&vs, AdamWConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let best_by = BestBy {
        metric: "val_score".into(),
        higher_is_better: true,
    };
    let ck = Checkpointer::new(dir.path(), 2, Some(best_by));
    for (step, score) in [(10, 0.5), (20, 0.9), (30, 0.4), (40, 0.6), (50, 0.7)] {
        ck.save(&vs, &opt, &state(step, score)).unwrap();
    }
    let steps: Vec<u64> = ck.list().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![20, 40, 50], "last two plus the best");
    assert_eq!(ck.best().unwrap(), Some(ck.path_for(20)));

    // A crash mid-write leaves a `.tmp` directory: never taken as a checkpoint.
    std::fs::create_dir_all(dir.path().join("step-00000060.tmp")).unwrap();
    assert_eq!(ck.latest().unwrap(), Some(ck.path_for(50)));
}
