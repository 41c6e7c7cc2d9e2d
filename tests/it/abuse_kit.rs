//! What every abuse test checks besides its own bound: another pair of users still talks
//! (send → receive within a generous multiple of the latency measured in the same test, before
//! the attack) and the node stays healthy.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    harness::{Api, Sock, SockOpts, ok, token, unique},
    kit::rest,
};

/// Latency during an attack may be this many times the quiet one (plus [`SLACK`]): generous,
/// because the attack competes for the same 2 shared cores; a node that stalls fails it anyway.
pub const FACTOR: u32 = 20;
pub const SLACK: Duration = Duration::from_millis(1500);

/// Two users with a conversation, both connected, measuring send → receive.
pub struct Bystanders {
    pub alice: Sock,
    pub bob: Sock,
    pub conv: String,
    pub base: String,
    quiet: Duration,
}

impl Bystanders {
    pub async fn new(base: &str) -> Self {
        let (a, b) = (unique("alice"), unique("bob"));
        let conv = Api::new(base, &a).conversation_with(&b).await;
        // Token in the query: the connection throttle keys them by user, so a test that
        // exhausts its address budget does not count them.
        let connect = |u: String| async move {
            let opts = SockOpts { query_token: Some(token(&u)), ..Default::default() };
            Sock::try_connect(base, opts).await.unwrap_or_else(|e| panic!("bystander {u}: {e}"))
        };
        let alice = connect(a.clone()).await;
        let bob = connect(b.clone()).await;
        let mut me = Self { alice, bob, conv, base: base.to_owned(), quiet: Duration::ZERO };
        // The median of a few quiet round trips (the first warms caches).
        let mut rts = Vec::new();
        for _ in 0..5 {
            rts.push(me.round_trip().await);
        }
        rts.sort();
        me.quiet = rts[2];
        me
    }

    /// One message from alice until bob has it.
    pub async fn round_trip(&self) -> Duration {
        let content = unique("ping");
        let start = Instant::now();
        let ack = self.alice.ack("send_message", json!({ "conversationId": self.conv, "content": content })).await;
        ok(&ack);
        loop {
            let m = self.bob.next("new_message").await;
            if m["message"]["content"] == content.as_str() {
                return start.elapsed();
            }
        }
    }

    /// Send → receive still works, within the bound, and `/healthz` answers 200.
    pub async fn still_fine(&self, during: &str) {
        let rt = self.round_trip().await;
        let bound = self.quiet * FACTOR + SLACK;
        assert!(rt <= bound, "{during}: send→receive took {rt:?} (quiet {:?}, bound {bound:?})", self.quiet);
        healthy(&self.base).await;
    }
}

pub async fn healthy(base: &str) {
    let req = reqwest::Client::new().get(format!("{base}/healthz")).timeout(Duration::from_secs(5));
    let r = rest::send(req).await.unwrap_or_else(|e| panic!("healthz answers: {e}"));
    assert_eq!(r.status, 200, "healthz");
}
