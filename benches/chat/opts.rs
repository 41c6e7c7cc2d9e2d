//! The bench's knobs, read once from `BENCH_*` environment variables (listed in main.rs).

use crate::scenarios::ALL;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value"))
        }
        _ => default,
    }
}

pub struct Opts {
    pub scenarios: Vec<String>,
    pub secs: u64,
    pub pairs: usize,
    pub window: usize,
    pub rate: u64,
    pub max_rates: Vec<u64>,
    pub step_secs: u64,
    pub max_p99_ms: f64,
    pub max_nodes: usize,
    pub idle_conns: usize,
    pub connect_concurrency: usize,
    pub storm_sockets: usize,
    pub reconnect_base_ms: u64,
    pub reconnect_max_ms: u64,
    pub storm_timeout_secs: u64,
    pub fanout_rate: u64,
    pub fanout_nodes: Vec<usize>,
    pub fanout_modes: Vec<String>,
    pub warmup_secs: u64,
}

fn list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
        .split(',')
        .map(|r| r.trim().parse().unwrap_or_else(|_| panic!("{name}: comma-separated values, got {r:?}")))
        .collect()
}

impl Opts {
    pub fn from_env() -> Self {
        let scenarios: Vec<String> = std::env::var("BENCH_SCENARIOS")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.split(',').map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect())
            .unwrap_or_else(|| ALL.iter().map(|s| s.to_string()).collect());
        for s in &scenarios {
            assert!(ALL.contains(&s.as_str()), "unknown scenario {s:?}; known: {ALL:?}");
        }
        let max_rates = list("BENCH_MAX_RATES", "500,1000,1500,2000,2500,3000,4000,5000,6000,8000,10000");
        Self {
            scenarios,
            secs: env_or("BENCH_SECS", 10),
            pairs: env_or("BENCH_PAIRS", 50),
            window: env_or("BENCH_WINDOW", 1usize).max(1),
            rate: env_or("BENCH_RATE", 2000),
            max_rates,
            step_secs: env_or("BENCH_STEP_SECS", 10),
            max_p99_ms: env_or("BENCH_MAX_P99_MS", 100.0),
            max_nodes: env_or("BENCH_MAX_NODES", 3usize).max(1),
            idle_conns: env_or("BENCH_IDLE_CONNS", 2000),
            connect_concurrency: env_or("BENCH_CONNECT_CONCURRENCY", 50usize).max(1),
            storm_sockets: env_or("BENCH_STORM_SOCKETS", 1000),
            reconnect_base_ms: env_or("BENCH_RECONNECT_BASE_MS", 1000),
            reconnect_max_ms: env_or("BENCH_RECONNECT_MAX_MS", 5000),
            storm_timeout_secs: env_or("BENCH_STORM_TIMEOUT_SECS", 60),
            fanout_rate: env_or("BENCH_FANOUT_RATE", 1000),
            fanout_nodes: list("BENCH_FANOUT_NODES", "2,4,6"),
            fanout_modes: list("BENCH_FANOUT_MODES", "targeted,adapter"),
            warmup_secs: env_or("BENCH_WARMUP_SECS", 2),
        }
    }
}
