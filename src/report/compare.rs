//! Models compared over several seeds: the statistics of the demo's table
//! (mean and sample standard deviation), the points of its reward-vs-fluency
//! chart, and the verdict on the paper's claim computed from the numbers.
//!
//! Everything here is a pure function of the per-seed results, so that the
//! verdict a report states is the one its numbers give (no hand-written
//! conclusion), and each outcome is unit-tested with made-up numbers.

use std::fmt::Write as _;

/// One model's scores on the test split for one seed.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelScores {
    /// Model name as the report shows it ("XE", "DiCO", "DiCO β=0.05", ...).
    pub model: String,
    /// Mean evaluator CLIP-S of its captions.
    pub evaluator: f64,
    /// Share (0..=1) of its captions the oracle grammar accepts.
    pub grammatical: f64,
    /// Oracle factual precision (0..=1).
    pub precision: f64,
}

/// Every model's scores for one seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedScores {
    pub seed: u64,
    pub models: Vec<ModelScores>,
}

impl SeedScores {
    fn get(&self, model: &str) -> Option<&ModelScores> {
        self.models.iter().find(|m| m.model == model)
    }
}

/// Arithmetic mean; NaN for no values.
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (divisor n − 1); `None` for fewer than two
/// values, where it is undefined.
pub fn sample_sd(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

/// A point of the reward-vs-fluency chart.
#[derive(Debug, Clone, PartialEq)]
pub struct FluencyPoint {
    pub model: String,
    pub seed: u64,
    /// Grammaticality lost against the same seed's baseline, in percentage
    /// points (baseline − model; negative = more grammatical).
    pub grammar_lost_pp: f64,
    /// Evaluator CLIP-S gained against the same seed's baseline (model −
    /// baseline).
    pub evaluator_gained: f64,
}

/// One point per model other than `baseline` and per seed that has the
/// baseline, in the order of the seeds and then of their models. A seed
/// without the baseline gives no points.
pub fn reward_fluency_points(seeds: &[SeedScores], baseline: &str) -> Vec<FluencyPoint> {
    let mut points = Vec::new();
    for s in seeds {
        let Some(base) = s.get(baseline) else {
            continue;
        };
        for m in s.models.iter().filter(|m| m.model != baseline) {
            points.push(FluencyPoint {
                model: m.model.clone(),
                seed: s.seed,
                grammar_lost_pp: 100.0 * (base.grammatical - m.grammatical),
                evaluator_gained: m.evaluator - base.evaluator,
            });
        }
    }
    points
}

/// The chart's series: one per model, in the order the models first appear,
/// each with its (grammaticality lost, evaluator gained) points over seeds.
pub fn fluency_series(points: &[FluencyPoint]) -> Vec<super::NamedSeries> {
    let mut series: Vec<super::NamedSeries> = Vec::new();
    for p in points {
        let xy = (p.grammar_lost_pp, p.evaluator_gained);
        match series.iter_mut().find(|(name, _)| *name == p.model) {
            Some((_, v)) => v.push(xy),
            None => series.push((p.model.clone(), vec![xy])),
        }
    }
    series
}

/// How far a fine-tuned model may fall below the baseline's grammaticality
/// (percentage points, mean over seeds) and still count as fluent.
pub const FLUENCY_TOLERANCE_PP: f64 = 2.0;

/// How many standard deviations (across seeds) the mean evaluator gain must
/// exceed to count as above the seeds' spread.
pub const SPREAD_FACTOR: f64 = 2.0;

/// Whether one criterion holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Holds,
    Fails,
    /// The numbers cannot decide it (one seed, a model missing, an
    /// unmatched comparison).
    CannotJudge,
}

impl Outcome {
    fn words(self) -> &'static str {
        match self {
            Outcome::Holds => "holds",
            Outcome::Fails => "does not hold",
            Outcome::CannotJudge => "cannot be judged",
        }
    }
}

/// One criterion of the claim: what it checks, its numbers, its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Criterion {
    /// What is checked and how, in one sentence.
    pub statement: String,
    /// The numbers, and why when it cannot be judged.
    pub detail: String,
    pub outcome: Outcome,
}

/// The claim's verdict: its criteria, then the conclusion.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub criteria: Vec<Criterion>,
    /// `Fails` if any criterion fails, else `CannotJudge` if any cannot be
    /// judged, else `Holds`.
    pub overall: Outcome,
}

/// The models the verdict compares (names as in [`SeedScores`]).
#[derive(Debug, Clone)]
pub struct VerdictModels<'a> {
    pub baseline: &'a str,
    /// `None` when the run has no DiCO model the verdict may use (e.g. the
    /// file's β was left out of a β sweep); `reason` says why.
    pub dico: Option<&'a str>,
    pub scst: &'a str,
    /// Said when `dico` is `None`.
    pub no_dico_reason: &'a str,
}

/// The paper's claim judged on `seeds` ([`FLUENCY_TOLERANCE_PP`],
/// [`SPREAD_FACTOR`]):
///
/// (a) DiCO's evaluator score is above the baseline's by more than the
///     seeds' spread: the mean over seeds of the per-seed gain (DiCO −
///     baseline) exceeds `SPREAD_FACTOR` × its sample standard deviation
///     across seeds (not judged with one seed);
/// (b) DiCO stays fluent: the mean over seeds of its grammaticality loss
///     against the baseline is at most `FLUENCY_TOLERANCE_PP` points (a gain
///     holds);
/// (c) SCST hacks the reward: at a matched reward gain (SCST's mean
///     evaluator gain ≥ DiCO's; otherwise not judged) SCST loses more
///     grammaticality or more precision than DiCO (means over seeds).
pub fn verdict(seeds: &[SeedScores], models: &VerdictModels) -> Verdict {
    let n = seeds.len();
    let per_seed = |model: &str, f: fn(&ModelScores, &ModelScores) -> f64| -> Option<Vec<f64>> {
        seeds
            .iter()
            .map(|s| Some(f(s.get(model)?, s.get(models.baseline)?)))
            .collect::<Option<Vec<f64>>>()
            .filter(|v| !v.is_empty())
    };
    let gain = |m: &ModelScores, b: &ModelScores| m.evaluator - b.evaluator;
    let gram_lost = |m: &ModelScores, b: &ModelScores| 100.0 * (b.grammatical - m.grammatical);
    let prec_lost = |m: &ModelScores, b: &ModelScores| b.precision - m.precision;
    let base = models.baseline;
    let missing = |model: &str| {
        format!("`{model}` or `{base}` is missing from a seed's results, so there is nothing to compare")
    };

    let dico_name = models.dico.unwrap_or("DiCO");
    let mut criteria = Vec::new();

    // (a)
    let statement = format!(
        "(a) {dico_name}'s evaluator CLIP-S is above {base}'s by more than the seeds' spread: \
         the mean per-seed gain exceeds {SPREAD_FACTOR} × its sample standard deviation across seeds."
    );
    let (detail, outcome) = match models.dico.map(|d| per_seed(d, gain)) {
        None => (models.no_dico_reason.to_owned(), Outcome::CannotJudge),
        Some(None) => (missing(dico_name), Outcome::CannotJudge),
        Some(Some(g)) => match sample_sd(&g) {
            None => (
                format!(
                    "gain {:+.4} with one seed; the spread cannot be judged with one seed: run --seeds 3",
                    g[0]
                ),
                Outcome::CannotJudge,
            ),
            Some(sd) => {
                let m = mean(&g);
                let holds = m > SPREAD_FACTOR * sd;
                (
                    format!(
                        "mean gain {m:+.4} over {n} seeds, standard deviation {sd:.4}: {m:.4} {} {SPREAD_FACTOR} × {sd:.4} = {:.4}",
                        if holds { ">" } else { "≤" },
                        SPREAD_FACTOR * sd
                    ),
                    if holds { Outcome::Holds } else { Outcome::Fails },
                )
            }
        },
    };
    criteria.push(Criterion {
        statement,
        detail,
        outcome,
    });

    // (b)
    let statement = format!(
        "(b) {dico_name}'s grammaticality is within {FLUENCY_TOLERANCE_PP} points of {base}'s: \
         its mean loss over seeds is at most {FLUENCY_TOLERANCE_PP} percentage points (a gain counts as within)."
    );
    let (detail, outcome) = match models.dico.map(|d| per_seed(d, gram_lost)) {
        None => (models.no_dico_reason.to_owned(), Outcome::CannotJudge),
        Some(None) => (missing(dico_name), Outcome::CannotJudge),
        Some(Some(l)) => {
            let m = mean(&l);
            let holds = m <= FLUENCY_TOLERANCE_PP;
            (
                format!(
                    "mean loss {m:+.1} points over {n} seed{} ({})",
                    if n == 1 { "" } else { "s" },
                    if holds { "≤ 2" } else { "> 2" }
                ),
                if holds {
                    Outcome::Holds
                } else {
                    Outcome::Fails
                },
            )
        }
    };
    criteria.push(Criterion {
        statement,
        detail,
        outcome,
    });

    // (c)
    let scst = models.scst;
    let statement = format!(
        "(c) {scst} loses more grammaticality or more precision than {dico_name} at a matched reward gain: \
         matched means {scst}'s mean evaluator gain over seeds is at least {dico_name}'s."
    );
    let both = models.dico.map(|d| {
        Some((
            (per_seed(d, gain)?, per_seed(scst, gain)?),
            (per_seed(d, gram_lost)?, per_seed(scst, gram_lost)?),
            (per_seed(d, prec_lost)?, per_seed(scst, prec_lost)?),
        ))
    });
    let (detail, outcome) = match both {
        None => (models.no_dico_reason.to_owned(), Outcome::CannotJudge),
        Some(None) => (
            format!(
                "`{dico_name}`, `{scst}` or `{base}` is missing from a seed's results, so there is nothing to compare"
            ),
            Outcome::CannotJudge,
        ),
        Some(Some(((gd, gs), (ld, ls), (pd, ps)))) => {
            let (gd, gs) = (mean(&gd), mean(&gs));
            let (ld, ls) = (mean(&ld), mean(&ls));
            let (pd, ps) = (mean(&pd), mean(&ps));
            let mut d = format!("mean evaluator gain: {scst} {gs:+.4}, {dico_name} {gd:+.4}");
            if gs < gd {
                d.push_str(&format!(
                    "; {scst} gained less reward than {dico_name}, so the comparison is not matched"
                ));
                (d, Outcome::CannotJudge)
            } else {
                let holds = ls > ld || ps > pd;
                let _ = write!(
                    d,
                    " (matched); grammaticality lost: {scst} {ls:+.1} points, {dico_name} {ld:+.1}; \
                     precision lost: {scst} {ps:+.3}, {dico_name} {pd:+.3}"
                );
                (d, if holds { Outcome::Holds } else { Outcome::Fails })
            }
        }
    };
    criteria.push(Criterion {
        statement,
        detail,
        outcome,
    });

    let overall = if criteria.iter().any(|c| c.outcome == Outcome::Fails) {
        Outcome::Fails
    } else if criteria.iter().any(|c| c.outcome == Outcome::CannotJudge) {
        Outcome::CannotJudge
    } else {
        Outcome::Holds
    };
    Verdict { criteria, overall }
}

impl Verdict {
    /// The verdict as a markdown list and a concluding line.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        for c in &self.criteria {
            let _ = writeln!(
                s,
                "- {} **{}**: {}.",
                c.statement,
                c.outcome.words(),
                c.detail
            );
        }
        let line = match self.overall {
            Outcome::Holds => "The claim holds here.",
            Outcome::Fails => "The claim does not hold here.",
            Outcome::CannotJudge => "The claim cannot be judged here.",
        };
        let _ = writeln!(s, "\n**{line}**");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(model: &str, evaluator: f64, grammatical: f64, precision: f64) -> ModelScores {
        ModelScores {
            model: model.to_owned(),
            evaluator,
            grammatical,
            precision,
        }
    }

    /// Seeds with XE, DiCO and SCST given as (evaluator, grammatical,
    /// precision) per seed.
    fn seeds(rows: &[[(f64, f64, f64); 3]]) -> Vec<SeedScores> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| SeedScores {
                seed: i as u64,
                models: ["XE", "DiCO", "SCST"]
                    .iter()
                    .zip(r)
                    .map(|(name, &(e, g, p))| m(name, e, g, p))
                    .collect(),
            })
            .collect()
    }

    const MODELS: VerdictModels = VerdictModels {
        baseline: "XE",
        dico: Some("DiCO"),
        scst: "SCST",
        no_dico_reason: "",
    };

    #[test]
    fn sample_sd_divides_by_n_minus_one() {
        // numpy.std([1, 2, 3, 4], ddof=1) = 1.2909944487358056
        let sd = sample_sd(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((sd - 1.290_994_448_735_805_6).abs() < 1e-12, "{sd}");
        assert_eq!(mean(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(sample_sd(&[3.0]), None);
        assert_eq!(sample_sd(&[2.0, 2.0]), Some(0.0));
    }

    #[test]
    fn points_are_against_the_same_seeds_baseline() {
        let s = seeds(&[
            [(1.0, 0.90, 0.8), (1.2, 0.85, 0.8), (1.5, 0.50, 0.6)],
            [(2.0, 0.80, 0.8), (2.1, 0.81, 0.8), (2.3, 0.70, 0.6)],
        ]);
        let p = reward_fluency_points(&s, "XE");
        assert_eq!(p.len(), 4);
        let got: Vec<(&str, u64, f64, f64)> = p
            .iter()
            .map(|p| {
                (
                    p.model.as_str(),
                    p.seed,
                    p.grammar_lost_pp,
                    p.evaluator_gained,
                )
            })
            .collect();
        let want = [
            ("DiCO", 0, 5.0, 0.2),
            ("SCST", 0, 40.0, 0.5),
            ("DiCO", 1, -1.0, 0.1),
            ("SCST", 1, 10.0, 0.3),
        ];
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0, g.1), (w.0, w.1));
            assert!(
                (g.2 - w.2).abs() < 1e-9 && (g.3 - w.3).abs() < 1e-9,
                "{g:?} vs {w:?}"
            );
        }
        let series = fluency_series(&p);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].0, "DiCO");
        assert_eq!(series[0].1.len(), 2);
        assert!((series[1].1[1].0 - 10.0).abs() < 1e-9);
        // A seed without the baseline gives no points.
        let mut no_xe = s.clone();
        no_xe[1].models.remove(0);
        assert_eq!(reward_fluency_points(&no_xe, "XE").len(), 2);
    }

    #[test]
    fn the_claim_holds_when_every_criterion_does() {
        // DiCO gains 0.10, 0.12, 0.11 (mean 0.11, sd 0.01): 0.11 > 0.02.
        // It loses 1 point of grammar; SCST gains more and loses 20.
        let s = seeds(&[
            [(1.00, 0.90, 0.9), (1.10, 0.89, 0.9), (1.30, 0.70, 0.9)],
            [(1.00, 0.90, 0.9), (1.12, 0.89, 0.9), (1.30, 0.70, 0.9)],
            [(1.00, 0.90, 0.9), (1.11, 0.89, 0.9), (1.30, 0.70, 0.9)],
        ]);
        let v = verdict(&s, &MODELS);
        assert_eq!(
            v.criteria.iter().map(|c| c.outcome).collect::<Vec<_>>(),
            [Outcome::Holds; 3]
        );
        assert_eq!(v.overall, Outcome::Holds);
        let md = v.markdown();
        assert!(md.contains("The claim holds here."), "{md}");
        assert!(
            md.contains("mean gain +0.1100 over 3 seeds, standard deviation 0.0100"),
            "{md}"
        );
    }

    #[test]
    fn a_gain_within_the_spread_fails_a() {
        // Gains +0.10, −0.05, +0.04: mean 0.03, sd 0.0755 → not above 2 sd.
        let s = seeds(&[
            [(1.0, 0.9, 0.9), (1.10, 0.9, 0.9), (1.3, 0.7, 0.9)],
            [(1.0, 0.9, 0.9), (0.95, 0.9, 0.9), (1.3, 0.7, 0.9)],
            [(1.0, 0.9, 0.9), (1.04, 0.9, 0.9), (1.3, 0.7, 0.9)],
        ]);
        let v = verdict(&s, &MODELS);
        assert_eq!(v.criteria[0].outcome, Outcome::Fails);
        assert_eq!(v.criteria[1].outcome, Outcome::Holds);
        assert_eq!(v.overall, Outcome::Fails);
        assert!(v.markdown().contains("The claim does not hold here."));
    }

    #[test]
    fn losing_more_than_two_points_fails_b() {
        // DiCO loses 3 points on average (2 and 4).
        let s = seeds(&[
            [(1.0, 0.90, 0.9), (1.2, 0.88, 0.9), (1.3, 0.7, 0.9)],
            [(1.0, 0.90, 0.9), (1.2, 0.86, 0.9), (1.3, 0.7, 0.9)],
        ]);
        let v = verdict(&s, &MODELS);
        assert_eq!(v.criteria[1].outcome, Outcome::Fails);
        assert!(
            v.criteria[1].detail.contains("+3.0 points"),
            "{:?}",
            v.criteria[1]
        );
        assert_eq!(v.overall, Outcome::Fails);
    }

    #[test]
    fn c_is_not_judged_when_scst_gains_less_and_fails_when_it_keeps_fluency() {
        // SCST gains 0.1 < DiCO's 0.2: not matched.
        let s = seeds(&[
            [(1.0, 0.9, 0.9), (1.2, 0.9, 0.9), (1.1, 0.5, 0.5)],
            [(1.0, 0.9, 0.9), (1.2, 0.9, 0.9), (1.1, 0.5, 0.5)],
        ]);
        let v = verdict(&s, &MODELS);
        assert_eq!(v.criteria[2].outcome, Outcome::CannotJudge);
        assert!(v.criteria[2].detail.contains("not matched"));
        // a holds (sd 0), b holds, c cannot be judged → the claim cannot be.
        assert_eq!(v.overall, Outcome::CannotJudge);
        assert!(v.markdown().contains("The claim cannot be judged here."));
        // SCST gains more and loses nothing more than DiCO: c fails.
        let s = seeds(&[
            [(1.0, 0.9, 0.9), (1.2, 0.9, 0.9), (1.3, 0.9, 0.9)],
            [(1.0, 0.9, 0.9), (1.2, 0.9, 0.9), (1.3, 0.9, 0.9)],
        ]);
        assert_eq!(verdict(&s, &MODELS).criteria[2].outcome, Outcome::Fails);
        // Losing precision alone is enough for c.
        let s = seeds(&[
            [(1.0, 0.9, 0.9), (1.2, 0.9, 0.9), (1.3, 0.9, 0.8)],
            [(1.0, 0.9, 0.9), (1.2, 0.9, 0.9), (1.3, 0.9, 0.8)],
        ]);
        assert_eq!(verdict(&s, &MODELS).criteria[2].outcome, Outcome::Holds);
    }

    #[test]
    fn one_seed_cannot_judge_the_spread() {
        let s = seeds(&[[(1.0, 0.9, 0.9), (1.2, 0.9, 0.9), (1.3, 0.5, 0.9)]]);
        let v = verdict(&s, &MODELS);
        assert_eq!(v.criteria[0].outcome, Outcome::CannotJudge);
        assert!(v.criteria[0].detail.contains("run --seeds 3"));
        assert_eq!(v.criteria[1].outcome, Outcome::Holds);
        assert_eq!(v.criteria[2].outcome, Outcome::Holds);
        assert_eq!(v.overall, Outcome::CannotJudge);
    }

    #[test]
    fn without_the_dico_model_nothing_about_dico_is_judged() {
        let s = seeds(&[
            [(1.0, 0.9, 0.9), (1.2, 0.9, 0.9), (1.3, 0.5, 0.9)],
            [(1.0, 0.9, 0.9), (1.2, 0.9, 0.9), (1.3, 0.5, 0.9)],
        ]);
        let models = VerdictModels {
            dico: None,
            no_dico_reason: "the file's β 0.2 was not among --betas",
            ..MODELS
        };
        let v = verdict(&s, &models);
        assert!(v.criteria.iter().all(|c| c.outcome == Outcome::CannotJudge));
        assert!(v.criteria[0].detail.contains("not among --betas"));
        // A named model missing from the results is also not judged.
        let models = VerdictModels {
            dico: Some("DiCO β=0.2"),
            ..MODELS
        };
        let v = verdict(&s, &models);
        assert!(v.criteria.iter().all(|c| c.outcome == Outcome::CannotJudge));
        assert_eq!(v.overall, Outcome::CannotJudge);
    }
}
