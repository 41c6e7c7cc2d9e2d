//! The nodes (and Redis) one scenario runs against, and the CPU meter over all of them.

use crate::{
    infra::{self, CpuMeter, NodeProc, Res},
    kit::redis::RedisServer,
};

pub struct Cluster {
    _dir: tempfile::TempDir,
    pub redis: Option<RedisServer>,
    pub nodes: Vec<NodeProc>,
}

impl Cluster {
    /// `n` nodes on one data dir (one SQLite file); with Redis when `n > 1`.
    pub async fn start(n: usize) -> Res<Self> {
        Self::start_with(n, &[]).await
    }

    /// [`Cluster::start`] with extra node environment (e.g. `CHAT_FANOUT`).
    pub async fn start_with(n: usize, env: &[(&str, &str)]) -> Res<Self> {
        let dir = tempfile::tempdir()?;
        let redis = if n > 1 { Some(infra::start_redis().await?) } else { None };
        let prefix = format!("bench{}", std::process::id());
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(
                NodeProc::spawn(
                    &format!("n{}", i + 1),
                    dir.path(),
                    redis.as_ref().map(|r| r.url()).as_deref(),
                    &prefix,
                    env,
                )
                .await?,
            );
        }
        Ok(Self { _dir: dir, redis, nodes })
    }

    pub fn cpu_meter(&self) -> CpuMeter {
        let mut groups =
            vec![("loadgen", vec![std::process::id()]), ("nodes", self.nodes.iter().map(|n| n.pid()).collect())];
        if let Some(r) = &self.redis {
            groups.push(("redis", vec![r.pid()]));
        }
        CpuMeter::start(groups)
    }
}
