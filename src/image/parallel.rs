//! Decode + preprocess on several threads, each reading its own share of the
//! shards (worker w of W), feeding one consumer through a bounded channel so a
//! slow consumer holds back the readers instead of letting images pile up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

use crate::data::sample::{RowAddr, SkipCounts, SkipRecord};
use crate::data::shards::ShardIndex;
use crate::data::source::{ShardSource, SourceConfig, SourceItem};
use crate::error::Result;
use crate::image::preprocess::{PreprocessConfig, Preprocessor};

/// Default channel depth per worker (prepared images in flight).
pub const DEFAULT_DEPTH_PER_WORKER: usize = 16;

/// A sample ready for a model: planar `[3, size, size]` normalised pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub key: String,
    pub captions: Vec<String>,
    pub pixels: Vec<f32>,
    pub addr: RowAddr,
    pub worker: u32,
}

/// Totals of a run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub samples: u64,
    pub skipped: SkipCounts,
    pub elapsed: Duration,
}

enum Msg {
    Sample(Prepared),
    Skipped(SkipRecord),
}

/// Stream every row of `index` through preprocessing on `workers` threads and
/// hand each prepared sample to `sink` on the calling thread. Skips are counted
/// by reason; the first hard error (an unreadable row group) stops the run.
pub fn preprocess_parallel(
    index: Arc<ShardIndex>,
    source: &SourceConfig,
    prep: &PreprocessConfig,
    workers: u32,
    mut sink: impl FnMut(Prepared),
    mut on_skip: impl FnMut(&SkipRecord),
) -> Result<RunStats> {
    let start = Instant::now();
    let workers = workers.max(1);
    let (tx, rx) = bounded::<Msg>(DEFAULT_DEPTH_PER_WORKER * workers as usize);
    let mut stats = RunStats::default();
    let outcome: Result<()> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for w in 0..workers {
            let tx = tx.clone();
            let index = index.clone();
            let source = source.clone();
            let prep = prep.clone();
            handles.push(scope.spawn(move || -> Result<()> {
                let mut src = ShardSource::new(index, source, w, workers)?;
                let mut pre = Preprocessor::new(prep);
                while let Some(item) = src.next_item()? {
                    let msg = match item {
                        SourceItem::Skipped(s) => Msg::Skipped(s),
                        SourceItem::Sample(s) => match pre.process(&s.image) {
                            Ok(pixels) => Msg::Sample(Prepared {
                                key: s.key,
                                captions: s.captions,
                                pixels,
                                addr: s.addr,
                                worker: w,
                            }),
                            Err(reason) => Msg::Skipped(SkipRecord {
                                addr: s.addr,
                                key: Some(s.key),
                                reason,
                            }),
                        },
                    };
                    if tx.send(msg).is_err() {
                        break; // consumer gone
                    }
                }
                Ok(())
            }));
        }
        drop(tx);
        for msg in rx.iter() {
            match msg {
                Msg::Sample(p) => {
                    stats.samples += 1;
                    sink(p);
                }
                Msg::Skipped(s) => {
                    stats.skipped.add(&s.reason);
                    on_skip(&s);
                }
            }
        }
        let mut first_err = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if first_err.is_ok() {
                first_err = r;
            }
        }
        first_err
    });
    outcome?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}
