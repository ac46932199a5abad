//! Reading a reward cache from user code: what the cached candidates say
//! before any offline training. For every image it finds the winner DiCO
//! would pick (the highest reward) and reports how often the captioner's own
//! best beam (rank 0) already wins, the reward gap between winner and best
//! beam, and how spread the rewards are — a cache where the top beam nearly
//! always wins gives DiCO little to learn from.
//!
//! ```text
//! make demo                                  # writes runs/demo/reward_cache
//! cargo run --example reward_cache -- runs/demo/reward_cache
//! ```
use std::path::PathBuf;

use dicoflow::reward::RewardCache;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("runs/demo/reward_cache"));
    let cache = RewardCache::open(&dir)
        .map_err(|e| anyhow::anyhow!("{e}\n(run `make demo` first, or pass a cache directory)"))?;
    let keys = cache.keys();
    let (mut top_wins, mut gap, mut spread, mut lengths) = (0usize, 0f64, 0f64, 0f64);
    let mut candidates = 0usize;
    for key in &keys {
        let entries = cache.get(key).unwrap_or_default();
        let Some(winner) = entries.iter().max_by(|a, b| a.reward.total_cmp(&b.reward)) else {
            continue;
        };
        let best_beam = entries.iter().find(|e| e.rank == 0).unwrap_or(winner);
        top_wins += usize::from(winner.rank == best_beam.rank);
        gap += f64::from(winner.reward - best_beam.reward);
        let min = entries
            .iter()
            .map(|e| e.reward)
            .fold(f32::INFINITY, f32::min);
        spread += f64::from(winner.reward - min);
        lengths += entries.iter().map(|e| e.tokens.len() as f64).sum::<f64>();
        candidates += entries.len();
    }
    let n = keys.len().max(1) as f64;
    println!(
        "{}: {} images, {} candidates in {} parts",
        dir.display(),
        keys.len(),
        candidates,
        cache.parts()
    );
    println!(
        "the best beam is the winner for {:.1}% of images",
        100.0 * top_wins as f64 / n
    );
    println!(
        "mean reward gain of the winner over the best beam: {:.4}",
        gap / n
    );
    println!(
        "mean reward spread (max − min) per image: {:.4}",
        spread / n
    );
    println!(
        "mean candidate length: {:.1} tokens",
        lengths / candidates.max(1) as f64
    );
    if let Some(key) = keys.first() {
        println!("\ncandidates of `{key}`:");
        for e in cache.get(key).unwrap_or_default() {
            println!(
                "  rank {}  reward {:.4}  log π_ref {:7.3}  {}",
                e.rank, e.reward, e.ref_logprob, e.text
            );
        }
    }
    Ok(())
}
