//! CPU stages as an operator on every worker: `(oks, errs)` in the manner of
//! Materialize's `map_fallible`. A sample the stage rejects becomes a
//! [`StageError`] on the error stream; a panic in the stage stops the run with
//! an error naming the stage (the worker thread itself never unwinds, so no
//! other worker waits forever on it).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{OkErr, Operator};
use timely::dataflow::Stream;

use super::batch::{BatchTime, Sample, StageError};
use super::error::{panic_message, FlowError};
use super::stage::CpuStage;
use super::state::RunState;
use super::telemetry::{StageKind, Telemetry};

/// Streams of samples that can go through a CPU stage.
pub trait CpuStageExt<'scope> {
    /// Run `stage` (named `name` in metrics and errors) on every sample.
    fn cpu_stage(
        self,
        name: &str,
        stage: Box<dyn CpuStage>,
        telemetry: &Telemetry,
        state: Arc<RunState>,
    ) -> (
        Stream<'scope, BatchTime, Vec<Sample>>,
        Stream<'scope, BatchTime, Vec<StageError>>,
    );
}

impl<'scope> CpuStageExt<'scope> for Stream<'scope, BatchTime, Vec<Sample>> {
    fn cpu_stage(
        self,
        name: &str,
        mut stage: Box<dyn CpuStage>,
        telemetry: &Telemetry,
        state: Arc<RunState>,
    ) -> (
        Stream<'scope, BatchTime, Vec<Sample>>,
        Stream<'scope, BatchTime, Vec<StageError>>,
    ) {
        let metrics = telemetry.stage(name, StageKind::Cpu);
        let stage_name = name.to_owned();
        let mut broken = false;
        let results = self.unary::<timely::container::CapacityContainerBuilder<
            Vec<Result<Sample, StageError>>,
        >, _, _, _>(
            Pipeline,
            &format!("Cpu[{name}]"),
            move |_cap, _info| {
                move |input, output| {
                    input.for_each_stamp(|cap, data| {
                        let started = Instant::now();
                        let mut items = 0u64;
                        let mut session = output.session(&cap);
                        for batch in data {
                            for mut sample in batch.drain(..) {
                                if broken || state.aborted() {
                                    continue; // the run is stopping: drain
                                }
                                items += 1;
                                let outcome =
                                    catch_unwind(AssertUnwindSafe(|| stage.process(&mut sample)));
                                match outcome {
                                    Ok(Ok(())) => session.give(Ok(sample)),
                                    Ok(Err(failure)) => {
                                        // Counted by its static label; the detail is
                                        // only logged, as the device stages do.
                                        tracing::warn!(
                                            "stage `{stage_name}` rejected row {}: {failure}",
                                            sample.key
                                        );
                                        session.give(Err(StageError {
                                            stage: stage_name.clone(),
                                            reason: failure.reason.to_owned(),
                                            key: Some(sample.key),
                                            addr: Some(sample.addr),
                                        }))
                                    }
                                    Err(panic) => {
                                        broken = true;
                                        state.fail(FlowError::StagePanicked {
                                            stage: stage_name.clone(),
                                            message: panic_message(&*panic),
                                        });
                                    }
                                }
                            }
                        }
                        metrics.record(items, started.elapsed());
                    });
                }
            },
        );
        results.ok_err(|r| r)
    }
}
