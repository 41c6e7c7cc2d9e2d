//! Tokens the nodes under test accept: every node is started with [`SECRET`] (HS256, longer than
//! the 32 bytes cluster mode requires), and a user is known by its id alone.

use std::time::Duration;

use jobsphere_chat::{
    auth::Jwt,
    chat::model::{Role, User},
};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// Longer than any test or bench run (a bench's reconnect storm reuses tokens minted at start).
pub const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

pub fn jwt() -> Jwt {
    Jwt::from_secret(SECRET.as_bytes())
}

/// A customer named after its id.
pub fn user(id: &str) -> User {
    User { id: id.to_owned(), name: format!("User {id}"), email: None, role: Role::Customer, avatar: None }
}

/// A token for [`user`]`(id)`, valid for [`TOKEN_TTL`].
pub fn token(id: &str) -> String {
    jwt().sign(&user(id), TOKEN_TTL).expect("sign a token")
}
