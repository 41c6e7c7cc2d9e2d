//! A plain `redis-server` (Redis ≥ 7) on a free loopback port, without persistence, killed on
//! drop; the spawning, arguments, `redis-cli` calls and waits the other topologies (`redis_tls`,
//! `redis_ha`) are built from. Commands go through `redis-cli`, the reference client.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Killed, WAIT, free_port};

/// Starts `program` (`redis-server`, `redis-sentinel`) with its output discarded; panics if it
/// cannot (a test's setup).
pub fn spawn(program: &str, args: &[String]) -> Killed {
    try_spawn(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// [`spawn`], returning the failure.
pub fn try_spawn(program: &str, args: &[String]) -> Result<Killed, String> {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{program} must be installed (scripts/tools/redis.sh installs it): {e}"))?;
    Ok(Killed(Some(child)))
}

/// The arguments of every server here: loopback only, nothing saved, files in `dir`.
pub fn server_args(port: u16, dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", &dir]
        .map(String::from)
        .to_vec()
}

/// `redis-cli -p PORT [tls…] ARGS…`, its trimmed stdout (empty on failure).
pub fn cli(port: u16, tls: &[String], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(tls)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until `f` holds (each try is a real query; the deadline is the failure).
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    extra: Vec<String>,
    proc: Killed,
    dir: TempDir,
}

impl RedisServer {
    /// A fresh server; panics if it cannot start (a test's setup).
    pub async fn start() -> Self {
        Self::try_start(&[]).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fresh server with `extra` arguments (e.g. `--maxclients 20000`), answering PING.
    pub async fn try_start(extra: &[&str]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut r = Self { port: free_port(), extra, proc: Killed(None), dir };
        r.launch().await?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.proc.pid().unwrap_or(0)
    }

    async fn launch(&mut self) -> Result<(), String> {
        let mut args = server_args(self.port, self.dir.path());
        args.extend(self.extra.iter().cloned());
        self.proc = try_spawn("redis-server", &args)?;
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if ping(self.port).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("redis-server did not answer PING on port {}", self.port))
    }

    /// Kills Redis (SIGKILL) and waits until the process is gone.
    pub async fn stop(&mut self) {
        self.proc.kill();
    }

    /// SIGSTOP: Redis keeps its port open and answers nothing (a hung server, not a dead one).
    pub fn pause(&self) {
        self.proc.signal("-STOP").unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.proc.signal("-CONT").unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts Redis again on the same port (empty: nothing is persisted).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// PING over a raw connection: `+PONG` within half a second.
async fn ping(port: u16) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(("127.0.0.1", port))).await
    else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await, Ok(Ok(_)))
        && &buf == b"+PONG\r\n"
}
