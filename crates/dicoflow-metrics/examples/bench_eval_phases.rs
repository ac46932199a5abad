//! Where `dicoflow eval`'s time goes: each phase timed alone, in one process
//! (wall clock, best of `RUNS`), on a COCO annotations/results pair such as
//! examples/bench_eval/make_bench_set.py writes.
//!
//! ```text
//! cargo run --release -p dicoflow-metrics --example bench_eval_phases -- ANN.json RES.json [RUNS] [METEOR_DIR]
//! ```
//!
//! Phases: reading and matching the files; PTB-tokenizing the references
//! (one batch) and the candidates (another), as `eval` does; then BLEU,
//! ROUGE-L, CIDEr-D and, with METEOR's data, METEOR, each on its own (`eval`
//! runs the metrics in parallel).
use std::path::Path;
use std::time::Instant;

use dicoflow_metrics::coco::{load_results, match_results};
use dicoflow_metrics::evaluate::score_tokenized_with;
use dicoflow_metrics::{Annotations, Meteor, Metric, PtbTokenizer};

/// Best wall time of `runs` calls of `f`, in milliseconds, and its last value.
fn best_ms<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        last = Some(v);
    }
    (best, last.expect("at least one run"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: bench_eval_phases ANN.json RES.json [RUNS] [METEOR_DIR]".into());
    }
    let runs: usize = args.get(2).map_or(Ok(3), |r| r.parse())?;
    let (ms, samples) = best_ms(runs, || -> Result<_, dicoflow_metrics::MetricsError> {
        let ann = Annotations::load(&args[0])?;
        let res = load_results(&args[1])?;
        match_results(&ann, &res)
    });
    let samples = samples?;
    println!("load + match: {ms:.1} ms ({} images)", samples.len());

    let tok = PtbTokenizer::new();
    let refs: Vec<&str> = samples
        .iter()
        .flat_map(|s| s.references.iter().map(String::as_str))
        .collect();
    let cands: Vec<&str> = samples.iter().map(|s| s.candidate.as_str()).collect();
    let (ms, tok_refs) = best_ms(runs, || tok.tokenize_batch(&refs));
    println!("tokenize {} references: {ms:.1} ms", refs.len());
    let (ms, tok_cands) = best_ms(runs, || tok.tokenize_batch(&cands));
    println!("tokenize {} candidates: {ms:.1} ms", cands.len());
    let mut it = tok_refs.into_iter();
    let tok_refs: Vec<Vec<String>> = samples
        .iter()
        .map(|s| it.by_ref().take(s.references.len()).collect())
        .collect();

    let meteor = match args.get(3) {
        Some(dir) => {
            let (ms, m) = best_ms(1, || Meteor::load(Path::new(dir)));
            println!("METEOR data load: {ms:.1} ms");
            Some(m?)
        }
        None => None,
    };
    let mut metrics = vec![Metric::Bleu, Metric::RougeL, Metric::CiderD];
    if meteor.is_some() {
        metrics.push(Metric::Meteor);
    }
    for m in metrics {
        let (ms, scores) = best_ms(runs, || {
            score_tokenized_with(&tok_cands, &tok_refs, &[m], meteor.as_ref())
        });
        let scores = scores?;
        let last = scores.last().ok_or("no scores")?;
        println!("{m:?}: {ms:.1} ms ({} = {})", last.name, last.corpus);
    }
    Ok(())
}
