//! Presence in this process (the embedded default): online = held by this node.

use async_trait::async_trait;
use dashmap::DashMap;

use super::{PresenceBackend, UserStatus};
use crate::{
    chat::model::{Timestamp, now},
    coord::CoordResult,
};

/// Presence on one node: online = held by this node.
#[derive(Default)]
pub struct LocalPresence {
    online: DashMap<String, ()>,
    last_seen: DashMap<String, Timestamp>,
}

#[async_trait]
impl PresenceBackend for LocalPresence {
    async fn add(&self, user: &str) -> CoordResult<bool> {
        Ok(self.online.insert(user.to_owned(), ()).is_none())
    }

    async fn remove(&self, user: &str) -> CoordResult<Option<Timestamp>> {
        if self.online.remove(user).is_some() {
            let t = now();
            self.last_seen.insert(user.to_owned(), t);
            Ok(Some(t))
        } else {
            Ok(None)
        }
    }

    async fn status(&self, users: &[String]) -> CoordResult<Vec<UserStatus>> {
        Ok(users
            .iter()
            .map(|u| UserStatus {
                user_id: u.clone(),
                online: self.online.contains_key(u),
                last_seen: self.last_seen.get(u).map(|t| *t),
            })
            .collect())
    }

    async fn refresh(&self, _users: &[String]) -> CoordResult<()> {
        Ok(())
    }

    async fn leave(&self) -> CoordResult<()> {
        self.online.clear();
        Ok(())
    }

    async fn reap(&self) -> CoordResult<Vec<(String, Timestamp)>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn presence_transitions() {
        let p = LocalPresence::default();
        assert!(p.add("u").await.unwrap());
        assert!(!p.add("u").await.unwrap());
        assert!(p.remove("u").await.unwrap().is_some());
        let s = p.status(&["u".into()]).await.unwrap();
        assert!(!s[0].online && s[0].last_seen.is_some());
    }
}
