//! A real Socket.IO client for the tests (tf-rust-socketio) that records every event it
//! receives, so a test can wait for one event and count the others afterwards.

use futures::FutureExt;
use serde_json::{Value, json};
use tf_rust_socketio::{
    Event, Payload, TransportType,
    asynchronous::{Client, ClientBuilder},
};
use tokio::sync::{Mutex, mpsc};

use crate::{
    harness::{WAIT, token},
    kit::sio,
};

/// A real Socket.IO client (tf-rust-socketio) that records every event it receives.
pub struct Sock {
    pub client: Client,
    rx: Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    backlog: Mutex<Vec<(String, Value)>>,
}

#[derive(Default)]
pub struct SockOpts {
    pub auth: Option<Value>,
    pub polling: bool,
    pub reconnect: bool,
    pub query_token: Option<String>,
}

impl Sock {
    /// Connects as `user`; panics unless the connection is accepted.
    pub async fn connect(base: &str, user: &str) -> Sock {
        Self::try_connect(base, SockOpts { auth: Some(json!({ "token": token(user) })), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
    }

    /// Connects; `Err(message)` if the server refused the connection.
    pub async fn try_connect(base: &str, opts: SockOpts) -> Result<Sock, String> {
        let (tx, rx) = mpsc::unbounded_channel::<(String, Value)>();
        let url = match &opts.query_token {
            Some(t) => format!("{base}?token={t}"),
            None => base.to_owned(),
        };
        let push = |name: &'static str, tx: mpsc::UnboundedSender<(String, Value)>| {
            move |p: Payload, _c: Client| {
                let _ = tx.send((name.to_owned(), sio::first_value(&p)));
                async {}.boxed()
            }
        };
        let any_tx = tx.clone();
        let mut b = ClientBuilder::new(url)
            .reconnect(opts.reconnect)
            .reconnect_delay(100, 1000)
            .on(Event::Connect, push("connect", tx.clone()))
            .on(Event::Error, push("error", tx.clone()))
            .on(Event::Close, push("close", tx.clone()))
            .on_any(move |e: Event, p: Payload, _c: Client| {
                let _ = any_tx.send((e.as_str().to_owned(), sio::first_value(&p)));
                async {}.boxed()
            });
        if opts.polling {
            b = b.transport_type(TransportType::Polling);
        } else {
            b = b.transport_type(TransportType::Websocket);
        }
        if let Some(a) = opts.auth {
            b = b.auth(a);
        }
        let client = b.connect().await.map_err(|e| format!("transport: {e}"))?;
        let sock = Sock { client, rx: Mutex::new(rx), backlog: Mutex::new(Vec::new()) };
        // A refused connection still returns Ok from connect(): wait for connect or error.
        let (name, v) = sock.next_of(&["connect", "error"]).await;
        if name == "connect" { Ok(sock) } else { Err(v.to_string()) }
    }

    /// Waits for the next event named any of `names` (others are kept for later).
    pub async fn next_of(&self, names: &[&str]) -> (String, Value) {
        {
            let mut bl = self.backlog.lock().await;
            if let Some(i) = bl.iter().position(|(n, _)| names.contains(&n.as_str())) {
                return bl.remove(i);
            }
        }
        let mut rx = self.rx.lock().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((n, v))) => {
                    if names.contains(&n.as_str()) {
                        return (n, v);
                    }
                    self.backlog.lock().await.push((n, v));
                }
                Ok(None) => panic!("socket closed while waiting for {names:?}"),
                Err(_) => panic!("timed out waiting for {names:?}; got {:?}", self.backlog.lock().await),
            }
        }
    }

    /// Waits for the next `name` event that satisfies `pred` and removes only that one: every
    /// other event, of any name, stays for later counting.
    pub async fn next_match(&self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        {
            let mut bl = self.backlog.lock().await;
            if let Some(i) = bl.iter().position(|(n, v)| n == name && pred(v)) {
                return bl.remove(i).1;
            }
        }
        let mut rx = self.rx.lock().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((n, v))) if n == name && pred(&v) => return v,
                Ok(Some(e)) => self.backlog.lock().await.push(e),
                Ok(None) => panic!("socket closed while waiting for a matching {name}"),
                Err(_) => panic!("timed out waiting for a matching {name}; got {:?}", self.backlog.lock().await),
            }
        }
    }

    /// Waits for the next `name` event and returns its payload.
    pub async fn next(&self, name: &str) -> Value {
        self.next_of(&[name]).await.1
    }

    /// Every event received so far (drains the channel without waiting).
    pub async fn received(&self) -> Vec<(String, Value)> {
        let mut rx = self.rx.lock().await;
        let mut bl = self.backlog.lock().await;
        while let Ok(e) = rx.try_recv() {
            bl.push(e);
        }
        bl.clone()
    }

    /// Removes and returns every `name` event received so far.
    pub async fn take(&self, name: &str) -> Vec<Value> {
        self.received().await;
        let mut bl = self.backlog.lock().await;
        let (hit, rest): (Vec<_>, Vec<_>) = bl.drain(..).partition(|(n, _)| n == name);
        *bl = rest;
        hit.into_iter().map(|(_, v)| v).collect()
    }

    /// Count of `name` events received so far (after draining).
    pub async fn count(&self, name: &str) -> usize {
        self.received().await.iter().filter(|(n, _)| n == name).count()
    }

    /// Emits with an ack and returns the ack payload.
    pub async fn ack(&self, event: &str, payload: Value) -> Value {
        sio::emit_ack(&self.client, event, payload, WAIT).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Emits without an ack.
    pub async fn emit(&self, event: &str, payload: Value) {
        sio::emit(&self.client, event, payload).await.unwrap_or_else(|e| panic!("{e}"));
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
    }
}
