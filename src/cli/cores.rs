//! libtorch's intra-op threads when several processes of a cluster run share
//! a machine.
//!
//! Each process's libtorch sizes its intra-op thread pool to every core of
//! the machine, and its OpenMP threads busy-wait for a while after each
//! parallel region. Two processes on one machine then keep twice as many
//! threads busy as there are cores: on 2 cores, 2 processes trained the
//! demo's captioner at 0.2–0.3 times the speed of the same 2 replicas as
//! threads of one process, with 4–6 times the CPU time; with a share of the
//! cores each they train as fast as the threads (docs/benchmarks.md, "2
//! processes on one machine"). torchrun sets
//! `OMP_NUM_THREADS=1` for each process when it starts several on a node;
//! here each process gets an equal share of the machine's cores instead,
//! unless the user set `OMP_NUM_THREADS`.

/// The host part of a hostfile line `HOST:PORT`.
fn host(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(h, _)| h)
}

/// How many processes of a hostfile (`addresses`, one `HOST:PORT` per
/// process) run on the host of process `process`, itself included. Hosts
/// are compared as written (`localhost` and `127.0.0.1` count as two).
pub fn processes_on_host(addresses: &[String], process: usize) -> usize {
    let Some(mine) = addresses.get(process).map(|a| host(a)) else {
        return 1;
    };
    addresses.iter().filter(|a| host(a) == mine).count()
}

/// Intra-op threads for each of `processes` processes on a machine with
/// `cores` cores: `max(1, cores / processes)`.
pub fn threads_per_process(cores: usize, processes: usize) -> usize {
    (cores / processes.max(1)).max(1)
}

/// A share of the machine's cores for this process's libtorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreShare {
    /// Processes of the hostfile on this machine.
    pub processes: usize,
    /// The machine's cores (`std::thread::available_parallelism`).
    pub cores: usize,
    /// libtorch's intra-op threads in this process.
    pub threads: usize,
}

/// When several processes of `addresses` run on the host of `process` and
/// `OMP_NUM_THREADS` is not set, sets libtorch's intra-op threads
/// (`tch::set_num_threads`, which threads created later take up on their
/// first parallel operation) to this process's share of the cores and
/// returns it; `None` otherwise (nothing changed). Call it before any model
/// is built.
pub fn share_cores(addresses: &[String], process: usize) -> Option<CoreShare> {
    // An empty value is no choice (libgomp ignores it with a warning).
    if std::env::var_os("OMP_NUM_THREADS").is_some_and(|v| !v.is_empty()) {
        return None;
    }
    let processes = processes_on_host(addresses, process);
    if processes <= 1 {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = threads_per_process(cores, processes);
    tch::set_num_threads(threads as i32);
    Some(CoreShare {
        processes,
        cores,
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn processes_on_one_host_are_counted_by_their_host() {
        let a = hosts(&["10.0.0.1:2101", "10.0.0.1:2102", "10.0.0.2:2101"]);
        assert_eq!(processes_on_host(&a, 0), 2);
        assert_eq!(processes_on_host(&a, 1), 2);
        assert_eq!(processes_on_host(&a, 2), 1);
        let v6 = hosts(&["[::1]:2101", "[::1]:2102"]);
        assert_eq!(processes_on_host(&v6, 1), 2);
        assert_eq!(processes_on_host(&a, 9), 1);
    }

    #[test]
    fn each_process_gets_an_equal_share_of_the_cores_and_at_least_one() {
        assert_eq!(threads_per_process(2, 2), 1);
        assert_eq!(threads_per_process(16, 2), 8);
        assert_eq!(threads_per_process(16, 3), 5);
        assert_eq!(threads_per_process(2, 4), 1);
        assert_eq!(threads_per_process(8, 0), 8);
    }
}
