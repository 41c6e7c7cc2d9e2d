//! Binary attachments are refused: the app has none, and socketioxide would otherwise buffer up
//! to 10 MB per packet for a minute. The attempt closes that socket, nobody else notices.

use tf_rust_socketio::Payload;

use crate::{
    abuse_kit::Bystanders,
    harness::{Env, Sock, unique},
};

#[tokio::test]
async fn binary_events_close_the_socket_that_sent_them() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let by = Bystanders::new(&node.base).await;

    // Several attackers at once, each sending a binary event (a header announcing one
    // attachment, then the attachment) as tf-rust-socketio does for binary payloads.
    let mut attackers = Vec::new();
    for _ in 0..8 {
        attackers.push(Sock::connect(&node.base, &unique("mallory")).await);
    }
    let blob: Vec<u8> = vec![7u8; 60 * 1024];
    for a in &attackers {
        a.client.emit("send_message", Payload::Binary(blob.clone().into(), None)).await.expect("emit binary");
    }
    by.still_fine("while binary events arrive").await;
    for a in &attackers {
        // Closed by the server: the client sees its transport go away.
        a.next("close").await;
    }
    by.still_fine("after the attackers were closed").await;
}
