//! Every bound a client can run into, in one place (docs/limits.md explains each and why it has
//! the value it has).
//!
//! - Rate budgets by cost class ([`LimitKind`]), per user (per address for anonymous Engine.IO
//!   handshakes), cluster-wide through the `crate::coord::RateLimiter` seam. The defaults are
//!   [`DEFAULT_BUDGETS`]; `RATE_LIMIT_MESSAGES` / `RATE_LIMIT_CONNECTS` set two of them and
//!   `CHAT_RATE_LIMITS` (see [`parse_budgets`]) overrides any.
//! - Structural caps that need no shared state: events in flight per socket, sockets per user on
//!   one node, rooms per socket, and the size of a `sync` answer.

use std::time::Duration;

pub use crate::coord::{LimitKind, Quota};

/// Socket events of one socket running at once; more are refused with `rate_limited` at once
/// (nothing is queued). A client that waits for its acks has a few; one that flushes an offline
/// outbox of queued sends emits them all at once, hence the room. Bounds one socket's tasks
/// and payloads held (≤ 128 × 64 KiB).
pub const MAX_IN_FLIGHT_PER_SOCKET: usize = 128;
/// Sockets of one user on one node (tabs and devices); one more is refused with
/// `connect_error: too_many_sockets`.
pub const MAX_SOCKETS_PER_USER: usize = 32;
/// Conversations one socket may have joined at once; one more is a `validation` error.
pub const MAX_ROOMS_PER_SOCKET: usize = 500;

/// Most messages in one `sync` answer, over all its conversations.
pub const SYNC_MAX_MESSAGES: usize = 1000;
/// Most bytes (serialized estimate) of messages in one `sync` answer.
pub const SYNC_MAX_BYTES: usize = 1024 * 1024;
/// A cached value larger than this is served but not stored.
pub const CACHE_MAX_VALUE_BYTES: usize = 256 * 1024;

const WINDOW: Duration = Duration::from_secs(10);

/// Default budgets: each far above what a normal client does (burst = the whole budget), so
/// only abuse meets them. Per user unless said otherwise.
pub const DEFAULT_BUDGETS: &[(LimitKind, Quota)] = &[
    // A person types ~1 message per second at most; a retrying client resends a few.
    (LimitKind::Message, Quota { limit: 30, window: WINDOW }),
    // Engine.IO handshakes per user (token in the query/header) or per address.
    (LimitKind::Connection, Quota { limit: 120, window: WINDOW }),
    // A client that sends typing_start on every keystroke: ~10 per second.
    (LimitKind::Typing, Quota { limit: 100, window: WINDOW }),
    // mark_as_read / mark_as_delivered: one per message received, from many conversations.
    (LimitKind::Receipt, Quota { limit: 200, window: WINDOW }),
    // get_online_status / GET users/status (≤ 200 ids each).
    (LimitKind::Presence, Quota { limit: 30, window: WINDOW }),
    // sync after a reconnect, then again while `hasMore`.
    (LimitKind::Sync, Quota { limit: 30, window: WINDOW }),
    // join/leave: a client joins every open conversation on connect.
    (LimitKind::Join, Quota { limit: 300, window: WINDOW }),
    // Conversation creation (including a burst of identical retries).
    (LimitKind::Create, Quota { limit: 60, window: WINDOW }),
    // REST reads: conversation list, history, unread.
    (LimitKind::Read, Quota { limit: 120, window: WINDOW }),
];

/// Kinds counted in `chat_rate_limited_total{kind}` that are not budgets of the limiter.
pub const CAP_KINDS: &[&str] = &["in_flight", "sockets_per_user"];

/// Parses `CHAT_RATE_LIMITS`: comma-separated `kind=N/WINDOW` with WINDOW a humantime
/// duration (`10s`, `1m`), e.g. `typing=20/10s,sync=10/10s`. Whitespace around items is allowed.
pub fn parse_budgets(s: &str) -> Result<Vec<(LimitKind, Quota)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (kind, budget) = item.split_once('=').ok_or_else(|| format!("{item:?}: expected kind=N/WINDOW"))?;
        let kind = LimitKind::from_name(kind.trim()).ok_or_else(|| {
            let names: Vec<_> = LimitKind::ALL.iter().map(|k| k.name()).collect();
            format!("{item:?}: unknown kind (one of {})", names.join(", "))
        })?;
        let (n, window) = budget.split_once('/').ok_or_else(|| format!("{item:?}: expected N/WINDOW"))?;
        let limit: u32 = n.trim().parse().map_err(|_| format!("{item:?}: N must be a positive integer"))?;
        let window = humantime::parse_duration(window.trim()).map_err(|e| format!("{item:?}: WINDOW: {e}"))?;
        if limit == 0 || window.is_zero() || window > Duration::from_secs(86_400) {
            return Err(format!("{item:?}: N must be ≥ 1 and WINDOW between 1ms and 24h"));
        }
        out.push((kind, Quota { limit, window }));
    }
    Ok(out)
}

/// The budget table: defaults, then the two older variables, then `CHAT_RATE_LIMITS`.
pub fn budgets(message: Quota, connection: Quota, overrides: &[(LimitKind, Quota)]) -> Vec<(LimitKind, Quota)> {
    let mut table: Vec<(LimitKind, Quota)> = DEFAULT_BUDGETS.to_vec();
    let mut set = |k: LimitKind, q: Quota| {
        if let Some(e) = table.iter_mut().find(|(kind, _)| *kind == k) {
            e.1 = q;
        }
    };
    set(LimitKind::Message, message);
    set(LimitKind::Connection, connection);
    for (k, q) in overrides {
        set(*k, *q);
    }
    table
}

/// Every label of `chat_rate_limited_total{kind}`.
pub fn rate_limited_kinds() -> Vec<&'static str> {
    LimitKind::ALL.iter().map(|k| k.name()).chain(CAP_KINDS.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_override() {
        let o = parse_budgets(" typing=20/10s, sync=10/1m ").unwrap();
        assert_eq!(o.len(), 2);
        let t = budgets(Quota { limit: 5, window: WINDOW }, Quota { limit: 7, window: WINDOW }, &o);
        let get = |k| t.iter().find(|(x, _)| *x == k).unwrap().1;
        assert_eq!(get(LimitKind::Typing).limit, 20);
        assert_eq!(get(LimitKind::Sync).window, Duration::from_secs(60));
        assert_eq!(get(LimitKind::Message).limit, 5);
        assert_eq!(get(LimitKind::Connection).limit, 7);
        assert_eq!(t.len(), LimitKind::ALL.len(), "every kind has a budget");
        // CHAT_RATE_LIMITS wins over the older variables.
        let t = budgets(
            Quota { limit: 5, window: WINDOW },
            get(LimitKind::Connection),
            &parse_budgets("message=9/1s").unwrap(),
        );
        assert_eq!(t.iter().find(|(k, _)| *k == LimitKind::Message).unwrap().1.limit, 9);
    }

    #[test]
    fn every_kind_is_registered_at_zero() {
        assert_eq!(rate_limited_kinds(), crate::telemetry::metrics::labels::RATE_LIMIT_KINDS);
    }

    #[test]
    fn bad_budgets_are_explained() {
        for bad in ["typing", "typing=5", "nope=1/1s", "typing=0/1s", "typing=x/1s", "typing=1/forever", "sync=1/48h"] {
            let e = parse_budgets(bad).unwrap_err();
            assert!(e.contains(bad.split(',').next().unwrap()), "{bad}: {e}");
        }
        assert!(parse_budgets("").unwrap().is_empty());
    }
}
