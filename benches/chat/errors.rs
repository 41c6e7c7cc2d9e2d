//! Failed sends or connects of a scenario: how many, and the first one as an example.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use serde_json::{Value, json};

#[derive(Default)]
pub struct Errors {
    pub count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Errors {
    pub fn add(&self, e: impl ToString) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first.lock().unwrap();
        if f.is_none() {
            *f = Some(e.to_string());
        }
    }

    pub fn json(&self) -> Value {
        json!({ "count": self.count.load(Ordering::Relaxed), "first": *self.first.lock().unwrap() })
    }
}
