//! The scenarios, one module each, and the one table of their names. A scenario takes the
//! options and returns the JSON line it reports; it starts (and drops) its own nodes.
//!
//! Adding one: a module here with `pub async fn run(o: &Opts) -> Res<Value>`, its name in
//! [`ALL`], an arm in [`run`], and a line in main.rs's module doc.

mod closed_loop;
mod fanout_scaling;
mod idle_memory;
mod latency_at_rate;
mod max_sustained;
mod reconnect_storm;

use serde_json::Value;

use crate::{infra::Res, opts::Opts};

/// Every scenario, in the order a run without `BENCH_SCENARIOS` takes them.
pub const ALL: &[&str] = &[
    "single_node",
    "cross_node",
    "latency_at_rate",
    "max_sustained",
    "fanout_scaling",
    "idle_memory",
    "reconnect_storm",
];

/// Runs the scenario `name` (one of [`ALL`]).
pub async fn run(name: &str, o: &Opts) -> Res<Value> {
    match name {
        "single_node" => closed_loop::run(o, "single_node", 1).await,
        "cross_node" => closed_loop::run(o, "cross_node", 3).await,
        "latency_at_rate" => latency_at_rate::run(o).await,
        "max_sustained" => max_sustained::run(o).await,
        "fanout_scaling" => fanout_scaling::run(o).await,
        "idle_memory" => idle_memory::run(o).await,
        "reconnect_storm" => reconnect_storm::run(o).await,
        other => Err(format!("unknown scenario {other:?}; known: {ALL:?}").into()),
    }
}
