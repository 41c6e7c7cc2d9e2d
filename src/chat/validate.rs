//! Input rules of the data model, applied before any store access.

use crate::error::ApiError;

pub const MAX_CONTENT_CHARS: usize = 4000;
pub const MAX_CLIENT_MESSAGE_ID: usize = 128;
pub const MAX_USER_ID: usize = 128;

/// Message content: 1–4000 characters, not only whitespace, no control characters but `\n\r\t`.
pub fn content(field: &str, s: &str) -> Result<(), ApiError> {
    let n = s.chars().count();
    if n == 0 || s.trim().is_empty() {
        return Err(ApiError::validation(field, "must not be empty or only whitespace"));
    }
    if n > MAX_CONTENT_CHARS {
        return Err(ApiError::validation(field, format!("must be at most {MAX_CONTENT_CHARS} characters")));
    }
    if s.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ApiError::validation(field, "must not contain control characters"));
    }
    Ok(())
}

/// Conversation and message ids: 24 lowercase or uppercase hex digits (ObjectId).
pub fn object_id(field: &str, s: &str) -> Result<(), ApiError> {
    if s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::validation(field, "must be a 24-character hex id"))
    }
}

/// User ids come from the auth service; accept its usual shapes (ObjectIds, UUIDs, `auth0|x`).
pub fn user_id(field: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_USER_ID
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@|".contains(&b));
    if ok { Ok(()) } else { Err(ApiError::validation(field, "must be 1-128 characters of [A-Za-z0-9-_.:@|]")) }
}

pub fn client_message_id(field: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty() && s.len() <= MAX_CLIENT_MESSAGE_ID && s.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(()) } else { Err(ApiError::validation(field, "must be 1-128 printable ASCII characters")) }
}

pub fn job_id(field: &str, s: &str) -> Result<(), ApiError> {
    user_id(field, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_rules() {
        assert!(content("content", "hello\n\tthere").is_ok());
        assert!(content("content", "").is_err());
        assert!(content("content", " \n\t ").is_err());
        assert!(content("content", "a\u{0}b").is_err());
        assert!(content("content", "a\u{1b}[31m").is_err());
        assert!(content("content", &"é".repeat(4000)).is_ok());
        assert!(content("content", &"x".repeat(4001)).is_err());
    }

    #[test]
    fn id_rules() {
        assert!(object_id("id", "65a1b2c3d4e5f60718293a4b").is_ok());
        assert!(object_id("id", "65a1b2c3d4e5f60718293a4").is_err());
        assert!(object_id("id", "zza1b2c3d4e5f60718293a4b").is_err());
        assert!(object_id("id", "{\"$gt\":\"\"}").is_err());
        assert!(user_id("id", "auth0|123").is_ok());
        assert!(user_id("id", "a b").is_err());
        assert!(user_id("id", "").is_err());
    }
}
