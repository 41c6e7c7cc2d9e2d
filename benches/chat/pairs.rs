//! Sender/receiver pairs: one conversation per pair over REST, then the receiver socket and the
//! sender sockets, each recording into the [`Recorder`].

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream};
use serde_json::{Value, json};
use tf_rust_socketio::asynchronous::Client;

use crate::{
    client,
    cluster::Cluster,
    infra::{self, Res},
    stats::Recorder,
};

/// Pair `i`: sender user on node `i % n`, receiver user on node `(i + 1) % n`, one conversation.
pub struct Pairs {
    pub convs: Vec<String>,
    /// `window` sender sockets per pair (same user).
    pub senders: Vec<Vec<Client>>,
    pub receivers: Vec<Client>,
}

pub async fn setup_pairs(
    c: &Cluster,
    run: &str,
    n: usize,
    window: usize,
    rec: &Arc<Recorder>,
    concurrency: usize,
) -> Res<Pairs> {
    let nodes = c.nodes.len();
    let http = reqwest::Client::new();
    let sender_base = |i: usize| c.nodes[i % nodes].base.clone();
    let receiver_base = |i: usize| c.nodes[(i + 1) % nodes].base.clone();
    let convs: Vec<String> = stream::iter(0..n)
        .map(|i| {
            let (http, base) = (http.clone(), sender_base(i));
            async move { infra::conversation(&http, &base, &format!("{run}-s{i}"), &format!("{run}-r{i}")).await }
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Res<_>>()?;
    let receivers: Vec<Client> = stream::iter(0..n)
        .map(|i| {
            let rec = rec.clone();
            let base = receiver_base(i);
            async move {
                let h = client::Handlers {
                    new_message: Some(Arc::new(move |v| rec.on_received(&v))),
                    ..Default::default()
                };
                client::connect(&base, &format!("{run}-r{i}"), h).await
            }
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Res<_>>()?;
    // Senders confirm through `message_delivered` too (used by the open-loop senders).
    let senders: Vec<Client> = stream::iter((0..n).flat_map(|i| (0..window).map(move |w| (i, w))))
        .map(|(i, _w)| {
            let rec = rec.clone();
            let base = sender_base(i);
            async move {
                let h = client::Handlers {
                    message_delivered: Some(Arc::new(move |v| {
                        if let Some((k, _)) = Recorder::key_of(&v) {
                            rec.on_confirmed(k);
                        }
                    })),
                    ..Default::default()
                };
                client::connect(&base, &format!("{run}-s{i}"), h).await
            }
        })
        .buffered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Res<_>>()?;
    let mut it = senders.into_iter();
    let senders = (0..n).map(|_| it.by_ref().take(window).collect()).collect();
    Ok(Pairs { convs, senders, receivers })
}

impl Pairs {
    pub async fn close(self) {
        for c in self.senders.into_iter().flatten().chain(self.receivers) {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.disconnect()).await;
        }
    }
}

pub fn send_payload(conv: &str, k: u64, sent_us: u64) -> Value {
    json!({ "conversationId": conv, "content": Recorder::content(k, sent_us), "clientMessageId": format!("b{k}") })
}
