//! `rediss://` against a real `redis-server --tls-port` that requires client certificates,
//! with certificates made by the test: messages cross nodes; a wrong CA stops the node at start.

use serde_json::json;

use crate::{
    harness::{Env, Sock, WAIT, ok, unique},
    kit::{
        redis::cli,
        redis_tls::{Pki, TlsRedis},
    },
};

fn tls_args(url: &str, pki: &Pki) -> Vec<String> {
    let p = |f: &str| pki.path(f).display().to_string();
    vec![
        "--redis-url".into(),
        url.into(),
        "--redis-ca-file".into(),
        p("ca.pem"),
        "--redis-cert-file".into(),
        p("client.pem"),
        "--redis-key-file".into(),
        p("client.key"),
    ]
}

#[tokio::test]
async fn rediss_with_a_ca_file_and_a_client_certificate_carries_messages_across_nodes() {
    let pki = Pki::new("chat-test-ca");
    let redis = TlsRedis::start(&pki).await;
    let env = Env::embedded();
    let args = tls_args(&format!("rediss://127.0.0.1:{}", redis.port), &pki);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let n1 = env.node_with("tls-1", &args).await;
    let n2 = env.node_with("tls-2", &args).await;

    let (alice, bob) = (unique("alice"), unique("bob"));
    let conversation = crate::harness::Api::new(&n1.base, &alice).conversation_with(&bob).await;
    let sa = Sock::connect(&n1.base, &alice).await;
    let sb = Sock::connect(&n2.base, &bob).await;
    let ack = sa.ack("send_message", json!({ "conversationId": conversation, "content": "over tls" })).await;
    ok(&ack);
    let m = sb.next("new_message").await;
    assert_eq!(m["message"]["content"], "over tls");
    // The node's state really is in the TLS server (presence of both users).
    let keys = cli(redis.port, &pki.cli_args(), &["--scan", "--pattern", &format!("{}:presence:*", env.prefix)]);
    assert_eq!(keys.lines().count(), 2, "presence keys over TLS: {keys}");
}

#[tokio::test]
async fn a_wrong_ca_stops_the_node_at_start_with_a_clear_message() {
    let pki = Pki::new("chat-test-ca");
    let other = Pki::new("someone-elses-ca");
    let redis = TlsRedis::start(&pki).await;
    let env = Env::embedded();
    let mut args = tls_args(&format!("rediss://127.0.0.1:{}", redis.port), &pki);
    // Trust only the other CA (the client certificate stays valid for the server).
    args[3] = other.path("ca.pem").display().to_string();
    let mut argv = vec!["jobsphere-chat".to_owned()];
    argv.extend(env.args("tls-bad", &args.iter().map(String::as_str).collect::<Vec<_>>()));
    let config = jobsphere_chat::config::Config::from_args_only(&argv).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let res = tokio::time::timeout(WAIT, jobsphere_chat::run(config, listener, std::future::pending()))
        .await
        .expect("the node must stop at start, not hang");
    let e = format!("{:#}", res.expect_err("a node that cannot verify Redis must not start"));
    assert!(e.contains("connecting to Redis"), "{e}");
    assert!(e.to_lowercase().contains("certificate"), "the message names the certificate problem: {e}");
}

#[tokio::test]
async fn a_tls_url_against_a_plaintext_port_fails_at_start() {
    let env = Env::cluster().await;
    let url = format!("rediss://127.0.0.1:{}", env.redis.as_ref().expect("redis").port);
    let mut argv = vec!["jobsphere-chat".to_owned()];
    argv.extend(env.args("tls-plain", &["--redis-url", &url]));
    let config = jobsphere_chat::config::Config::from_args_only(&argv).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let res = tokio::time::timeout(WAIT, jobsphere_chat::run(config, listener, std::future::pending()))
        .await
        .expect("the node must stop at start, not hang");
    let e = format!("{:#}", res.expect_err("plaintext Redis behind a rediss:// URL must not be used"));
    assert!(e.contains("connecting to Redis"), "{e}");
}
