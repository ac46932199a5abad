//! Joining scoped worker threads: the metrics split their work over
//! `std::thread::scope` threads and must surface a worker's panic as a panic
//! of the caller, not as a lost result.

use std::thread::ScopedJoinHandle;

/// Joins `handles` in order and returns their results in that order; a
/// worker's panic is resumed in the calling thread.
pub(crate) fn join_all<T>(handles: Vec<ScopedJoinHandle<'_, T>>) -> Vec<T> {
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect()
}
