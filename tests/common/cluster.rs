//! Processes of a cluster run (timely's `-n/-p/-H` mode) on loopback:
//! hostfiles on free ports, spawned processes whose output goes to files, and
//! bounded waits that kill every process on timeout.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A spawned `dicoflow` process. Its output goes to files, not pipes: a pipe
/// that nobody reads until the process ends would block it once full.
pub struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Spawns `command` with its output in `root/NAME.stdout` and
    /// `root/NAME.stderr`.
    pub fn spawn(mut command: Command, root: &Path, name: &str) -> Proc {
        let stdout = root.join(format!("{name}.stdout"));
        let stderr = root.join(format!("{name}.stderr"));
        let child = command
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    /// Whether the process has ended.
    pub fn ended(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Sends signal `name` (`STOP`, `CONT`, ...) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process and returns its status and output.
    pub fn output(mut self) -> Output {
        self.child.wait().unwrap();
        self.peek()
    }

    /// The status and output of a process that has ended.
    pub fn peek(&mut self) -> Output {
        let status = self.child.try_wait().unwrap().expect("an ended process");
        let read = |p: &Path| std::fs::read(p).unwrap_or_default();
        Output {
            status,
            stdout: read(&self.stdout),
            stderr: read(&self.stderr),
        }
    }
}

/// A hostfile `root/hosts` for `n` processes on 127.0.0.1, on ports that were free when
/// chosen, below the kernel's range of ephemeral ports (32768 and up on
/// Linux): a process connecting to a peer that has not bound its port yet
/// could otherwise be handed that very port for its own end and connect to
/// itself, and the peer's bind then fails.
pub fn hostfile(root: &Path, n: usize) -> PathBuf {
    const PORTS: std::ops::Range<u16> = 20_000..32_000;
    let span = PORTS.end - PORTS.start;
    let seed = std::process::id() as u64
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    let ports: Vec<u16> = (0..span)
        .map(|i| PORTS.start + ((seed + 7919 * i as u64) % span as u64) as u16)
        .filter(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .take(n)
        .collect();
    assert_eq!(ports.len(), n, "no {n} free ports in {PORTS:?}");
    let hosts: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    let path = root.join("hosts");
    std::fs::write(&path, hosts).unwrap();
    path
}

/// How long a test's process waits for the cluster to form (`--join-timeout`):
/// a cluster that does not form (a port taken between choosing and binding
/// it) then ends in an error, and the run is tried again, instead of the
/// processes waiting for each other until the test's own limit.
pub const JOIN_TIMEOUT_S: u64 = 30;

/// The options of process `p` of `n` on `hostfile`, with [`JOIN_TIMEOUT_S`].
pub fn cluster_args(hostfile: &Path, n: usize, p: usize) -> Vec<String> {
    vec![
        "-n".into(),
        n.to_string(),
        "-p".into(),
        p.to_string(),
        "-H".into(),
        hostfile.to_string_lossy().into_owned(),
        "--join-timeout".into(),
        JOIN_TIMEOUT_S.to_string(),
    ]
}

/// Whether `out` is a process that ended because the cluster did not form
/// (its port was taken, or its peers never connected within
/// `--join-timeout`): the run is tried again.
pub fn cluster_not_formed(out: &Output) -> bool {
    let text = stderr(out);
    let last = text.lines().last().unwrap_or_default();
    port_taken(out) || last.contains("the cluster did not form")
}

/// Whether `out` is a process that ended because it could not listen on its
/// address (taken between choosing and binding it).
pub fn port_taken(out: &Output) -> bool {
    let text = stderr(out);
    let last = text.lines().last().unwrap_or_default();
    last.contains("could not join the cluster")
}

/// Kills every child and panics with `why` and what each child printed on
/// stderr and, last lines only, on stdout (where timely reports its
/// connection attempts).
pub fn kill_all(children: Vec<Proc>, why: String) -> ! {
    let printed: Vec<String> = children
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            c.kill();
            let out = c.output();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = stdout.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            format!(
                "child {i} stderr:\n{}\nchild {i} stdout (last lines):\n{tail}",
                stderr(&out)
            )
        })
        .collect();
    panic!("{why}; the processes printed:\n{}", printed.join("\n---\n"));
}

/// Waits for every child, at most `limit` in all. When one ends because the
/// cluster did not form, the others are killed: they would wait for it
/// without end (timely retries a connection to a peer forever).
pub fn wait_all(mut children: Vec<Proc>, limit: Duration) -> Vec<Output> {
    let start = Instant::now();
    loop {
        if children.iter_mut().all(Proc::ended) {
            return children.into_iter().map(Proc::output).collect();
        }
        let unformed = children
            .iter_mut()
            .any(|c| c.ended() && cluster_not_formed(&c.peek()));
        if unformed {
            for c in children.iter_mut() {
                c.kill();
            }
            continue;
        }
        if start.elapsed() > limit {
            kill_all(
                children,
                format!("the processes did not finish within {limit:?}"),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
