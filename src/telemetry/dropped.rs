//! Counts pub/sub messages the Redis adapter dropped. socketioxide-redis only logs these
//! (`… lagged by N` when fred's broadcast channel overflows, `dropped a message` when the
//! adapter's queue is full), so this layer turns those log events into
//! `chat_redis_pubsub_lagged_total`, which alerts watch.

use tracing::{Event, Level, Subscriber, field::Visit};
use tracing_subscriber::{Layer, layer::Context};

use super::metrics::REDIS_PUBSUB_LAGGED_TOTAL;

pub struct DroppedMessages;

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// How many messages a log line says were lost, if it is one of the adapter's drop lines.
pub fn dropped_count(target: &str, message: &str) -> Option<u64> {
    if !target.starts_with("socketioxide_redis") {
        return None;
    }
    if let Some(rest) = message.split("lagged by ").nth(1) {
        return Some(rest.trim().parse().unwrap_or(1));
    }
    message.contains("dropped a message").then_some(1)
}

impl<S: Subscriber> Layer<S> for DroppedMessages {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != Level::WARN || !meta.target().starts_with("socketioxide_redis") {
            return;
        }
        let mut m = Message::default();
        event.record(&mut m);
        if let Some(n) = dropped_count(meta.target(), &m.0) {
            metrics::counter!(REDIS_PUBSUB_LAGGED_TOTAL).increment(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_adapters_drop_lines() {
        assert_eq!(
            dropped_count("socketioxide_redis::drivers::fred", "fred driver pubsub channel lagged by 48"),
            Some(48)
        );
        assert_eq!(dropped_count("socketioxide_redis::drivers::fred", "fred driver dropped a message: full"), Some(1));
        assert_eq!(dropped_count("socketioxide_redis::drivers::fred", "no handler for channel"), None);
        assert_eq!(dropped_count("jobsphere_chat", "lagged by 3"), None);
    }
}
