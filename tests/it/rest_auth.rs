//! REST API: auth (every route needs a token, bad tokens are 401).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::rest_util::*;

// ---------------------------------------------------------------------------------------------
// auth (docs/)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_requires_a_token() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let conv = Api::new(&node.base, "alice").conversation_with("bob").await;
    let anon = Api::with_token(&node.base, None);
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/chat/conversations".into(), None),
        (Method::POST, "/api/chat/conversations".into(), Some(json!({ "participantId": "bob" }))),
        (Method::GET, msgs_path(&conv), None),
        (Method::POST, msgs_path(&conv), Some(json!({ "content": "hi" }))),
        (Method::POST, read_path(&conv), None),
        (Method::GET, "/api/chat/unread".into(), None),
        (Method::GET, "/api/chat/users/status?ids=alice".into(), None),
    ];
    for (m, path, body) in routes {
        let r = anon.req(m.clone(), &path, body).await;
        assert_error(&r, 401, "unauthorized");
        assert!(!r.body.to_string().contains("Bearer "), "{m} {path}: no token echo: {}", r.body);
    }
    // Nothing was sent by the anonymous POSTs.
    let h = data(&Api::new(&node.base, "alice").get(&msgs_path(&conv)).await, 200);
    assert_eq!(h["messages"], json!([]));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_with_the_error_envelope() {
    let env = Env::embedded();
    let node = env.node("n1").await;
    let path = "/api/chat/conversations";
    let now = now_secs();
    let good = token("alice");

    // Control: the right token works.
    data(&Api::new(&node.base, "alice").get(path).await, 200);

    let expired = sign_claims(&json!({ "userId": "alice", "role": "customer", "exp": now - 3600 }), SECRET.as_bytes());
    let no_exp = sign_claims(&json!({ "userId": "alice", "role": "customer" }), SECRET.as_bytes());
    let wrong_secret = sign_claims(
        &json!({ "userId": "alice", "role": "customer", "exp": now + 3600 }),
        b"some-other-secret-0123456789abcdef",
    );
    let no_user = sign_claims(&json!({ "role": "customer", "exp": now + 3600 }), SECRET.as_bytes());
    let bad_user = sign_claims(&json!({ "userId": "al ice", "exp": now + 3600 }), SECRET.as_bytes());
    let bad_role = sign_claims(&json!({ "userId": "alice", "role": "root", "exp": now + 3600 }), SECRET.as_bytes());
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &json!({ "userId": "alice", "exp": now + 3600 }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(json!({ "userId": "alice", "exp": now + 3600 }).to_string().as_bytes())
    );
    // bob's claims with alice's signature.
    let tampered = {
        let a: Vec<&str> = good.split('.').collect();
        let bob = token("bob");
        let b: Vec<&str> = bob.split('.').collect();
        format!("{}.{}.{}", a[0], b[1], a[2])
    };

    let bearer = |t: &str| format!("Bearer {t}");
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing header", vec![]),
        ("empty header", vec![("authorization", String::new())]),
        ("Bearer with nothing", vec![("authorization", "Bearer ".into())]),
        ("garbage", vec![("authorization", bearer("garbage"))]),
        ("three garbage parts", vec![("authorization", bearer("a.b.c"))]),
        ("expired", vec![("authorization", bearer(&expired))]),
        ("no exp", vec![("authorization", bearer(&no_exp))]),
        ("wrong secret", vec![("authorization", bearer(&wrong_secret))]),
        ("no userId or sub", vec![("authorization", bearer(&no_user))]),
        ("invalid userId", vec![("authorization", bearer(&bad_user))]),
        ("unknown role", vec![("authorization", bearer(&bad_role))]),
        ("HS512", vec![("authorization", bearer(&hs512))]),
        ("alg none", vec![("authorization", bearer(&alg_none))]),
        ("tampered payload", vec![("authorization", bearer(&tampered))]),
        ("no Bearer scheme", vec![("authorization", good.clone())]),
        ("Basic scheme", vec![("authorization", format!("Basic {good}"))]),
        ("token as query only", vec![]),
    ];
    for (name, headers) in cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let p = if name == "token as query only" { format!("{path}?token={good}") } else { path.to_owned() };
        let r = request(&node.base, Method::GET, &p, &hs, None).await;
        assert_eq!(r.status, 401, "{name}: {} {}", r.status, r.body);
        assert_error(&r, 401, "unauthorized");
    }

    // `sub` is accepted in place of `userId`.
    let sub = sign_claims(&json!({ "sub": "alice", "exp": now + 3600 }), SECRET.as_bytes());
    data(&Api::with_token(&node.base, Some(sub)).get(path).await, 200);
    node.stop().await.unwrap();
}
