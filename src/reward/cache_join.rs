//! Score only what is missing: the keys requested minus the keys a cache
//! already holds, as a differential antijoin. Within a graph, `missing` keeps
//! its answer current as either side changes (a cache part lands, more
//! candidates arrive).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use differential_dataflow::VecCollection;

use crate::flow::batch::BatchTime;
use crate::flow::error::FlowError;
use crate::flow::run::threads_communication;

/// Distinct keys of `requested` that are not in `present`.
pub fn missing<'scope>(
    requested: VecCollection<'scope, BatchTime, String, isize>,
    present: VecCollection<'scope, BatchTime, String, isize>,
) -> VecCollection<'scope, BatchTime, String, isize> {
    requested
        .distinct()
        .map(|k| (k, ()))
        .antijoin(present.distinct())
        .map(|(k, ())| k)
}

/// Run [`missing`] once over two key lists on `workers` threads; sorted result.
pub fn missing_keys(
    present: &[String],
    requested: &[String],
    workers: usize,
) -> Result<Vec<String>, FlowError> {
    let out: Arc<Mutex<BTreeMap<String, isize>>> = Arc::default();
    let config = timely::Config {
        communication: threads_communication(workers),
        worker: timely::WorkerConfig::default(),
    };
    let present: Arc<Vec<String>> = Arc::new(present.to_vec());
    let requested: Arc<Vec<String>> = Arc::new(requested.to_vec());
    let guards = {
        let out = out.clone();
        timely::execute(config, move |worker| {
            let (me, peers) = (worker.index(), worker.peers());
            let out = out.clone();
            let (mut have, mut want) = worker.dataflow::<BatchTime, _, _>(|scope| {
                let (have_in, have) = scope.new_collection::<String, isize>();
                let (want_in, want) = scope.new_collection::<String, isize>();
                missing(want, have).inspect(move |(k, _t, diff)| {
                    *out.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(k.clone())
                        .or_default() += diff;
                });
                (have_in, want_in)
            });
            // Each worker feeds its round-robin share of both lists.
            for k in present.iter().skip(me).step_by(peers) {
                have.insert(k.clone());
            }
            for k in requested.iter().skip(me).step_by(peers) {
                want.insert(k.clone());
            }
        })
        .map_err(FlowError::Timely)?
    };
    for r in guards.join() {
        r.map_err(|p| FlowError::Timely(format!("a worker panicked: {p}")))?;
    }
    let out = out.lock().unwrap_or_else(|e| e.into_inner());
    Ok(out
        .iter()
        .filter(|(_, d)| **d > 0)
        .map(|(k, _)| k.clone())
        .collect())
}
