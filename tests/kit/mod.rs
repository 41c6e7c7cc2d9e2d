//! The kit `tests/it` and `benches/chat` share, included by both with
//! `#[path = "…/tests/kit/mod.rs"] mod kit;` (not a test target of its own: cargo only builds
//! `tests/*.rs` and `tests/*/main.rs`).
//!
//! - `auth`: the JWT secret every node under test is started with, users and their tokens.
//! - `redis`: a plain `redis-server` on a free port, `redis-cli`, and the child guard of every
//!   server; `redis_tls` and `redis_ha` add TLS, Sentinel and Redis Cluster topologies.
//! - `node`: a real `jobsphere-chat` process on free ports, with exactly the environment it is
//!   given, and the `/readyz` wait.
//! - `sio` and `rest`: the Socket.IO calls (payload, ack, emit) and REST calls (conversation,
//!   message) both drive a node with.
//!
//! Launchers return `Result<_, String>`: a bench reports a failure in its output line, a test
//! panics with the message. Helpers only some of the includers use are expected, so both allow
//! dead code on the `mod kit` line.

pub mod auth;
pub mod node;
pub mod redis;
pub mod redis_ha;
pub mod redis_tls;
pub mod rest;
pub mod sio;

use std::{
    net::TcpListener,
    process::Child,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bound for anything awaited (a server or node to answer, an ack); generous for a loaded
/// 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(15);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique in this process and across processes (pid + counter).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A child process killed (SIGKILL) and reaped on drop, so no server outlives its test.
pub struct Killed(pub Option<Child>);

impl Killed {
    /// SIGKILL and reap; a no-op once done.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// Sends `sig` (`-STOP`, `-CONT`, `-TERM`) with `kill(1)`.
    pub fn signal(&self, sig: &str) -> Result<(), String> {
        let pid = self.pid().ok_or("the process is not running")?.to_string();
        let st = std::process::Command::new("kill").args([sig, &pid]).status().map_err(|e| format!("kill: {e}"))?;
        if st.success() { Ok(()) } else { Err(format!("kill {sig} {pid}: {st}")) }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}
