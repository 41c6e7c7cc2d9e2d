//! A real `jobsphere-chat` process on a free port and a free metrics port, started with exactly
//! the environment it is given: the caller's environment is cleared first, so a `REDIS_URL`,
//! `MONGODB_URI`, `JWT_SECRET` or `CHAT_*` in the shell that runs the tests or benches changes
//! nothing. Killed (SIGKILL) on drop.

use std::{
    path::Path,
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use super::{Killed, free_port};

/// The node binary cargo built for this test or bench target.
pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_jobsphere-chat");

/// The per-user cost classes of `CHAT_RATE_LIMITS` / `--rate-limits` besides messages and
/// connects (which have flags of their own).
pub const COST_CLASSES: [&str; 7] = ["typing", "receipt", "presence", "sync", "join", "create", "read"];

/// A `CHAT_RATE_LIMITS` value giving every cost class `budget` (e.g. `"100000/10s"`): tests and
/// benches are not normal clients and fire far more events per user than anyone types.
pub fn lifted_rate_limits(budget: &str) -> String {
    COST_CLASSES.iter().map(|k| format!("{k}={budget}")).collect::<Vec<_>>().join(",")
}

/// How to start one node process.
pub struct Launch<'a> {
    pub bin: &'a Path,
    /// Command-line arguments (`--flag value`).
    pub args: &'a [String],
    /// The whole environment besides `CHAT_ADDR` / `CHAT_METRICS_ADDR` (set here) and
    /// `RUST_LOG` (`warn` unless given).
    pub env: &'a [(String, String)],
    /// Where the node's log goes.
    pub stderr: Stdio,
    /// How long `/readyz` may take to answer 200.
    pub ready_within: Duration,
}

pub struct NodeProcess {
    pub port: u16,
    pub metrics_port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `http://127.0.0.1:<metrics port>`.
    pub metrics: String,
    proc: Killed,
}

impl NodeProcess {
    /// Starts the node and waits until it is ready; on an error the process is killed.
    pub async fn spawn(l: Launch<'_>) -> Result<Self, String> {
        let (port, metrics_port) = (free_port(), free_port());
        let child = Command::new(l.bin)
            .env_clear()
            .env("RUST_LOG", "warn")
            .envs(l.env.iter().map(|(k, v)| (k, v)))
            .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
            .env("CHAT_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .args(l.args)
            .stdout(Stdio::null())
            .stderr(l.stderr)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", l.bin.display()))?;
        let p = Self {
            port,
            metrics_port,
            base: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}"),
            proc: Killed(Some(child)),
        };
        wait_ready(&p.base, l.ready_within).await?;
        Ok(p)
    }

    /// The pid (0 once killed or exited).
    pub fn pid(&self) -> u32 {
        self.proc.pid().unwrap_or(0)
    }

    /// Not yet killed nor waited for.
    pub fn is_running(&self) -> bool {
        self.proc.0.is_some()
    }

    /// SIGKILL: no cleanup of any kind.
    pub fn kill9(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM without waiting (see [`Self::wait_exit`]).
    pub fn term(&self) {
        let _ = self.proc.signal("-TERM");
    }

    /// SIGTERM, then waits for exit (bounded); returns the exit status.
    pub async fn sigterm(&mut self) -> Option<ExitStatus> {
        self.term();
        self.wait_exit().await
    }

    /// Waits for the process to exit (bounded: SIGKILL after 30 s); returns the exit status.
    pub async fn wait_exit(&mut self) -> Option<ExitStatus> {
        let mut c = self.proc.0.take()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if tokio::time::Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `GET {base}/readyz` until it answers 200 (a node in or out of this process).
pub async fn wait_ready(base: &str, within: Duration) -> Result<(), String> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("node {base} never became ready"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
