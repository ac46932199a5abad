//! DiCO, SCST and contrastive objectives against from-scratch computations of
//! their formulas (plain f64 arithmetic, no tensors).
use dicoflow::train::contrastive::clip_contrastive_loss;
use dicoflow::train::scst::{scst_advantages, scst_loss};
use dicoflow::train::{dico_loss, DicoConfig};
use tch::{Kind, Tensor};

/// design.md's DiCO formula for one image, and dLoss/dlogπ(c_i).
fn dico_reference(pol: &[f64], refp: &[f64], r: &[f64], beta: f64, tau: f64) -> (f64, Vec<f64>) {
    let k = r.len();
    let mut w = 0;
    for i in 1..k {
        if r[i] > r[w] {
            w = i;
        }
    }
    let logits: Vec<f64> = (0..k).map(|j| tau * (r[w] - r[j])).collect();
    let max = (0..k)
        .filter(|&j| j != w)
        .map(|j| logits[j])
        .fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = (0..k)
        .filter(|&j| j != w)
        .map(|j| (logits[j] - max).exp())
        .sum();
    let gamma: Vec<f64> = (0..k)
        .map(|j| {
            if j == w {
                0.0
            } else {
                (logits[j] - max).exp() / z
            }
        })
        .collect();
    let side = |lp: &[f64]| lp[w] - (0..k).map(|j| gamma[j] * lp[j]).sum::<f64>();
    let delta = side(pol) - side(refp);
    let x = beta * delta;
    let loss = -(1.0 / (1.0 + (-x).exp())).ln();
    // dL/dΔ = −β σ(−βΔ); dΔ/dlogπ(c_w) = 1, dΔ/dlogπ(c_j) = −γ_j.
    let dl = -beta / (1.0 + x.exp());
    let grad = (0..k)
        .map(|j| if j == w { dl } else { -dl * gamma[j] })
        .collect();
    (loss, grad)
}

fn t(rows: &[Vec<f64>]) -> Tensor {
    let k = rows[0].len() as i64;
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, k])
}

fn check_batch(pol: Vec<Vec<f64>>, refp: Vec<Vec<f64>>, r: Vec<Vec<f64>>, cfg: DicoConfig) {
    let policy = t(&pol).set_requires_grad(true);
    let out = dico_loss(&policy, &t(&refp), &t(&r), &cfg).unwrap();
    out.loss.backward();
    let grad = policy.grad();
    let b = pol.len() as f64;
    let mut want_loss = 0.0;
    for i in 0..pol.len() {
        let (l, g) = dico_reference(&pol[i], &refp[i], &r[i], cfg.beta, cfg.tau);
        want_loss += l / b;
        for (j, gj) in g.iter().enumerate() {
            let got = grad.double_value(&[i as i64, j as i64]);
            assert!(
                (got - gj / b).abs() < 1e-10,
                "grad [{i},{j}]: {got} vs {}",
                gj / b
            );
        }
    }
    let got = out.loss.double_value(&[]);
    assert!((got - want_loss).abs() < 1e-10, "loss {got} vs {want_loss}");
}

#[test]
fn dico_loss_and_gradient_match_the_formula() {
    check_batch(
        vec![
            vec![-10.0, -12.5, -9.0, -15.0, -11.0],
            vec![-3.0, -4.0, -5.0, -6.0, -2.0],
        ],
        vec![
            vec![-10.5, -12.0, -9.5, -14.0, -11.0],
            vec![-3.5, -3.0, -5.5, -6.0, -2.5],
        ],
        vec![
            vec![0.61, 0.60, 0.615, 0.58, 0.59],
            vec![0.2, 0.9, 0.3, 0.1, 0.5],
        ],
        DicoConfig::default(),
    );
}

#[test]
fn dico_with_two_candidates_ties_and_equal_rewards() {
    // k = 2: the single loser gets γ = 1.
    check_batch(
        vec![vec![-4.0, -6.0]],
        vec![vec![-5.0, -5.0]],
        vec![vec![0.3, 0.7]],
        DicoConfig {
            beta: 0.5,
            tau: 10.0,
        },
    );
    // A tie for the best reward: the first is the winner, the tied one a loser.
    let policy = t(&[vec![-1.0, -2.0, -3.0]]);
    let out = dico_loss(
        &policy,
        &policy,
        &t(&[vec![0.5, 0.5, 0.1]]),
        &DicoConfig::default(),
    )
    .unwrap();
    assert_eq!(out.winners.int64_value(&[0]), 0);
    check_batch(
        vec![vec![-1.0, -2.0, -3.0]],
        vec![vec![-1.5, -2.5, -2.0]],
        vec![vec![0.5, 0.5, 0.1]],
        DicoConfig::default(),
    );
    // All rewards equal: uniform weights over the losers.
    let out = dico_loss(
        &policy,
        &policy,
        &t(&[vec![0.4, 0.4, 0.4]]),
        &DicoConfig::default(),
    )
    .unwrap();
    assert!((out.weights.double_value(&[0, 1]) - 0.5).abs() < 1e-12);
    assert!((out.weights.double_value(&[0, 2]) - 0.5).abs() < 1e-12);
    check_batch(
        vec![vec![-1.0, -2.0, -3.0]],
        vec![vec![-1.5, -2.5, -2.0]],
        vec![vec![0.4, 0.4, 0.4]],
        DicoConfig::default(),
    );
}

#[test]
fn policy_equal_to_reference_gives_zero_margin_and_log_two() {
    let lp = Tensor::randn([4, 5], (Kind::Double, tch::Device::Cpu)) * 3.0 - 10.0;
    let rewards = Tensor::rand([4, 5], (Kind::Double, tch::Device::Cpu));
    let out = dico_loss(&lp, &lp, &rewards, &DicoConfig::default()).unwrap();
    assert!((out.loss.double_value(&[]) - std::f64::consts::LN_2).abs() < 1e-12);
    assert_eq!(out.stats.reward_margin, 0.0);
    assert_eq!(out.stats.accuracy, 0.0);
    assert_eq!(out.stats.kl_estimate, 0.0);
}

#[test]
fn dico_stats_report_implicit_rewards() {
    let pol = t(&[vec![-1.0, -3.0]]);
    let refp = t(&[vec![-2.0, -2.0]]);
    let out = dico_loss(
        &pol,
        &refp,
        &t(&[vec![0.9, 0.1]]),
        &DicoConfig {
            beta: 0.5,
            tau: 1.0,
        },
    )
    .unwrap();
    let s = out.stats;
    assert!((s.reward_chosen - 0.5).abs() < 1e-12); // 0.5 * (-1 - -2)
    assert!((s.reward_rejected + 0.5).abs() < 1e-12); // 0.5 * (-3 - -2)
    assert!((s.reward_margin - 1.0).abs() < 1e-12);
    assert_eq!(s.accuracy, 1.0);
    assert!((s.evaluator_reward_max - 0.9).abs() < 1e-12);
    assert!((s.evaluator_reward_mean - 0.5).abs() < 1e-12);
}

#[test]
fn dico_rejects_bad_shapes() {
    let a = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
    let b = Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu));
    assert!(dico_loss(&a, &b, &a, &DicoConfig::default()).is_err());
    let one = Tensor::zeros([2, 1], (Kind::Float, tch::Device::Cpu));
    let msg = dico_loss(&one, &one, &one, &DicoConfig::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("k >= 2"), "{msg}");
}

#[test]
fn scst_advantages_sum_to_zero_and_use_the_others_mean() {
    let r = t(&[vec![1.0, 2.0, 3.0, 6.0], vec![0.5, 0.5, 0.5, 0.5]]);
    let adv = scst_advantages(&r).unwrap();
    for i in 0..2 {
        let sum: f64 = (0..4).map(|j| adv.double_value(&[i, j])).sum();
        assert!(sum.abs() < 1e-12);
    }
    // 6 − mean(1, 2, 3) = 4
    assert!((adv.double_value(&[0, 3]) - 4.0).abs() < 1e-12);
    let logps = t(&[vec![-1.0, -2.0, -3.0, -4.0], vec![-1.0; 4]]).set_requires_grad(true);
    let (loss, std) = scst_loss(&logps, &r).unwrap();
    loss.backward();
    // dL/dlogπ_ij = −a_ij / (batch·k)
    assert!((logps.grad().double_value(&[0, 3]) + 4.0 / 8.0).abs() < 1e-12);
    assert!(std > 0.0);
}

#[test]
fn contrastive_loss_matches_cross_entropy_by_hand() {
    let img = t(&[vec![1.0, 0.0], vec![0.0, 2.0]]);
    let txt = t(&[vec![3.0, 0.0], vec![1.0, 1.0]]);
    let scale = Tensor::from_slice(&[2.0f64.ln()]);
    let (loss, acc) = clip_contrastive_loss(&img, &txt, &scale).unwrap();
    // cosines: [[1, 1/√2], [0, 1/√2]], ×2
    let s = 2.0;
    let c = [[1.0, 0.5f64.sqrt()], [0.0, 0.5f64.sqrt()]];
    let ce = |row: [f64; 2], i: usize| -> f64 {
        let z = (s * row[0]).exp() + (s * row[1]).exp();
        -(s * row[i]).exp().ln() + z.ln()
    };
    let i2t = (ce(c[0], 0) + ce(c[1], 1)) / 2.0;
    let t2i = (ce([c[0][0], c[1][0]], 0) + ce([c[0][1], c[1][1]], 1)) / 2.0;
    let want = (i2t + t2i) / 2.0;
    let got = loss.double_value(&[]);
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    assert_eq!(acc, 1.0);
}
