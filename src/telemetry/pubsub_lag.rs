//! Pub/sub lag probe (cluster mode). socketioxide-redis reports only drops (see [`super::dropped`]),
//! not how late cross-node broadcasts arrive. Every few seconds the node publishes a probe on its
//! own shard channel `P:probe:{node}` and times how long the message takes to come back through
//! Redis and fred's subscriber: `chat_redis_pubsub_lag_seconds`. The sender is the receiver, so
//! clocks of different nodes never mix. A probe not back before the next one is due counts in
//! `chat_redis_pubsub_probes_lost_total`.
//!
//! It uses its own subscriber connection: messages on channels the adapter did not subscribe to
//! would make the adapter log a warning for each.

use std::time::{Duration, Instant};

use fred::{
    clients::SubscriberClient,
    prelude::{Client, EventInterface, PubsubInterface},
};

use super::metrics::{self as m, redis_op};

/// How often a probe is sent; also how long one may take before it counts as lost.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Subscribes `sub` to `channel` and runs the probe loop until aborted.
pub fn spawn(client: Client, sub: SubscriberClient, channel: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rx = sub.message_rx();
        if let Err(e) = sub.ssubscribe(channel.clone()).await {
            tracing::warn!(error = %e, "pub/sub lag probe: subscribe failed; the probe reports lost probes");
        }
        let base = Instant::now();
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u64 = 0;
        // Sequence number of the probe in flight.
        let mut pending: Option<u64> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if pending.take().is_some() {
                        metrics::counter!(m::REDIS_PUBSUB_PROBE_LOST_TOTAL).increment(1);
                    }
                    seq += 1;
                    let sent = base.elapsed().as_nanos() as u64;
                    let payload = format!("{seq}:{sent}");
                    let published = redis_op("pubsub_probe", client.spublish::<i64, _, _>(channel.clone(), payload)).await;
                    match published {
                        Ok(_) => pending = Some(seq),
                        Err(e) => tracing::debug!(error = %e, "pub/sub lag probe not published"),
                    }
                }
                msg = rx.recv() => {
                    let msg = match msg {
                        Ok(msg) => msg,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if &*msg.channel != channel.as_str() {
                        continue;
                    }
                    let Some((got, sent)) = msg.value.as_string().as_deref().and_then(parse) else { continue };
                    if pending == Some(got) {
                        pending = None;
                        let now = base.elapsed().as_nanos() as u64;
                        let lag = Duration::from_nanos(now.saturating_sub(sent));
                        metrics::histogram!(m::REDIS_PUBSUB_LAG_SECONDS).record(lag.as_secs_f64());
                    }
                }
            }
        }
    })
}

fn parse(payload: &str) -> Option<(u64, u64)> {
    let (seq, sent) = payload.split_once(':')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_payloads_round_trip() {
        assert_eq!(super::parse("7:123456"), Some((7, 123456)));
        assert_eq!(super::parse("x:1"), None);
        assert_eq!(super::parse("7"), None);
    }
}
