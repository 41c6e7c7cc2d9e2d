//! The quick tour of the README, as a test.

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_send_reaches_both_users() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let alice = Api::new(&node.base, "alice");
    let conv = alice.conversation_with("bob").await;
    let a = Sock::connect(&node.base, "alice").await;
    let b = Sock::connect(&node.base, "bob").await;
    let ack = a.ack("send_message", json!({ "conversationId": conv, "content": "hi", "clientMessageId": "m1" })).await;
    let msg = ok(&ack)["message"].clone();
    assert_eq!(msg["seq"], 1);
    let delivered = a.next("message_delivered").await;
    assert_eq!(delivered["clientMessageId"], "m1");
    assert_eq!(a.next("new_message").await["message"]["_id"], msg["_id"]);
    assert_eq!(b.next("new_message").await["message"]["_id"], msg["_id"]);
    node.stop().await.unwrap();
}
