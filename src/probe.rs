//! Operator commands that talk to a running node from outside: `healthcheck` (an HTTP GET of
//! /healthz or /readyz, for container health checks where the image has no curl) and `probe`
//! (a real Socket.IO client over websocket and long-polling, for the chart's `helm test`).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, anyhow, bail};
use futures::FutureExt;
use serde_json::{Value, json};
use tf_rust_socketio::{
    Event, Payload, TransportType,
    asynchronous::{Client, ClientBuilder},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use crate::{
    auth::Jwt,
    chat::model::{Role, User},
    config::{Config, HealthcheckArgs, ProbeArgs, ProbeTransport},
};

/// `http://127.0.0.1:PORT` for a listen address (an unspecified address means this host).
pub fn local_base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}", addr.port())
}

/// Splits `http://host[:port][/path]` into (host:port, host header, path).
fn split_http_url(url: &str) -> anyhow::Result<(String, String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("no host in {url}");
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let connect = if has_port { authority.to_owned() } else { format!("{authority}:80") };
    Ok((connect, authority.to_owned(), path.to_owned()))
}

/// GETs the URL and returns its status code.
pub async fn http_status(url: &str) -> anyhow::Result<u16> {
    let (connect, host, path) = split_http_url(url)?;
    let mut tcp = TcpStream::connect(&connect).await.with_context(|| format!("connecting to {connect}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: jobsphere-chat-healthcheck\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await?;
    // The status line is all we need; bodies of the health endpoints are small anyway.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
    status.ok_or_else(|| anyhow!("not an HTTP response: {:?}", line.lines().next().unwrap_or_default()))
}

/// `jobsphere-chat healthcheck`: Ok when the endpoint answers 200 within the timeout.
pub async fn healthcheck(config: &Config, args: &HealthcheckArgs) -> anyhow::Result<()> {
    let url = args.url.clone().unwrap_or_else(|| {
        format!("{}{}", local_base_url(config.addr), if args.ready { "/readyz" } else { "/healthz" })
    });
    let status = tokio::time::timeout(args.timeout, http_status(&url))
        .await
        .map_err(|_| anyhow!("{url}: no answer within {:?}", args.timeout))??;
    if status != 200 {
        bail!("{url} answered {status}");
    }
    println!("{url}: 200");
    Ok(())
}

/// What one transport's probe saw.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Connected and got a successful ack.
    Acked,
    /// The server refused the token (only accepted when the probe could not sign one).
    Unauthorized,
}

/// `jobsphere-chat probe`: a Socket.IO round trip per transport.
pub async fn probe(config: &Config, args: &ProbeArgs) -> anyhow::Result<()> {
    let base = args.url.clone().unwrap_or_else(|| local_base_url(config.addr));
    // Only a shared secret can sign; with just a public key the probe goes without a token.
    let token = match &config.jwt_secret {
        Some(_) => {
            let user = User {
                id: args.user.clone(),
                name: "Health probe".into(),
                email: None,
                role: Role::Customer,
                avatar: None,
            };
            Some(Jwt::from_config(config)?.sign(&user, Duration::from_secs(300))?)
        }
        None => None,
    };
    let mut failed = 0;
    for t in &args.transports {
        match tokio::time::timeout(args.timeout, probe_one(&base, *t, token.as_deref(), &args.user)).await {
            Ok(Ok(Outcome::Acked)) => println!("ok   {t:?}: connected, authenticated, ack received"),
            Ok(Ok(Outcome::Unauthorized)) if token.is_none() => {
                println!("ok   {t:?}: Socket.IO answered (connect_error unauthorized: no secret to sign a token)")
            }
            Ok(Ok(Outcome::Unauthorized)) => {
                failed += 1;
                println!("FAIL {t:?}: the token signed with JWT_SECRET was refused");
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("FAIL {t:?}: {e:#}");
            }
            Err(_) => {
                failed += 1;
                println!("FAIL {t:?}: no result within {:?}", args.timeout);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} transports failed against {base}", args.transports.len());
    }
    Ok(())
}

async fn probe_one(base: &str, t: ProbeTransport, token: Option<&str>, user: &str) -> anyhow::Result<Outcome> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, Value)>();
    let push = |name: &'static str, tx: mpsc::UnboundedSender<(&'static str, Value)>| {
        move |p: Payload, _c: Client| {
            let _ = tx.send((name, first_value(&p)));
            async {}.boxed()
        }
    };
    let mut b = ClientBuilder::new(base.to_owned())
        .reconnect(false)
        .transport_type(match t {
            ProbeTransport::Websocket => TransportType::Websocket,
            ProbeTransport::Polling => TransportType::Polling,
        })
        .on(Event::Connect, push("connect", tx.clone()))
        .on(Event::Error, push("error", tx.clone()));
    if let Some(token) = token {
        b = b.auth(json!({ "token": token }));
    }
    let client = b.connect().await.map_err(|e| anyhow!("transport: {e}"))?;
    // connect() returns Ok for a refused connection too: the refusal arrives as an error event.
    let outcome = match rx.recv().await {
        Some(("connect", _)) => {
            let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Value>();
            client
                .emit_with_ack(
                    "get_online_status",
                    Payload::Text(vec![json!({ "userIds": [user] })], None),
                    Duration::from_secs(5),
                    move |p: Payload, _c: Client| {
                        let _ = ack_tx.send(first_value(&p));
                        async {}.boxed()
                    },
                )
                .await
                .map_err(|e| anyhow!("emit: {e}"))?;
            let ack = ack_rx.recv().await.ok_or_else(|| anyhow!("no ack"))?;
            let ack = match ack {
                Value::Array(mut a) if a.len() == 1 => a.remove(0),
                v => v,
            };
            if ack.get("status").and_then(Value::as_str) != Some("success") {
                bail!("ack was not a success: {ack}");
            }
            Outcome::Acked
        }
        Some((_, v)) if v.to_string().contains("unauthorized") => Outcome::Unauthorized,
        Some((_, v)) => bail!("connection failed: {v}"),
        None => bail!("client stopped before connecting"),
    };
    let _ = client.disconnect().await;
    Ok(outcome)
}

fn first_value(p: &Payload) -> Value {
    match p {
        Payload::Text(v, _) => v.first().cloned().unwrap_or(Value::Null),
        #[allow(deprecated)]
        Payload::String(s, _) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        Payload::Binary(_, _) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_connect_address_host_and_path() {
        assert_eq!(
            split_http_url("http://127.0.0.1:3000/healthz").unwrap(),
            ("127.0.0.1:3000".into(), "127.0.0.1:3000".into(), "/healthz".into())
        );
        assert_eq!(split_http_url("http://chat").unwrap(), ("chat:80".into(), "chat".into(), "/".into()));
        assert_eq!(split_http_url("http://[::1]:9/x").unwrap().0, "[::1]:9");
        assert!(split_http_url("https://x/").is_err());
    }

    #[test]
    fn unspecified_listen_addresses_become_loopback() {
        assert_eq!(local_base_url("0.0.0.0:3000".parse().unwrap()), "http://127.0.0.1:3000");
        assert_eq!(local_base_url("[::]:3000".parse().unwrap()), "http://[::1]:3000");
        assert_eq!(local_base_url("10.1.2.3:80".parse().unwrap()), "http://10.1.2.3:80");
    }
}
