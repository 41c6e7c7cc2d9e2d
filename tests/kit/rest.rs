//! The REST calls tests and benches drive a node with: any request as status + JSON body, and
//! the two every scenario needs (a conversation, a message).

use reqwest::{Client, RequestBuilder, header::HeaderMap};
use serde_json::{Value, json};

/// An answer: the status, the body as JSON (a string when it is not JSON) and the headers.
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

/// Sends `req`; `Err` when the node cannot be reached or the body cannot be read.
pub async fn send(req: RequestBuilder) -> Result<Resp, String> {
    let resp = req.send().await.map_err(|e| format!("http request: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.map_err(|e| format!("http body: {e}"))?;
    Ok(Resp { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)), headers })
}

/// `POST /api/chat/conversations` with `other` as `token`'s user: 201 created, 200 found.
pub async fn create_conversation(http: &Client, base: &str, token: &str, other: &str) -> Result<Resp, String> {
    send(
        http.post(format!("{base}/api/chat/conversations")).bearer_auth(token).json(&json!({ "participantId": other })),
    )
    .await
}

/// `POST /api/chat/conversations/{conversation}/messages`: 201 with the message.
pub async fn send_message(
    http: &Client,
    base: &str,
    token: &str,
    conversation: &str,
    content: &str,
) -> Result<Resp, String> {
    let url = format!("{base}/api/chat/conversations/{conversation}/messages");
    send(http.post(url).bearer_auth(token).json(&json!({ "content": content }))).await
}
