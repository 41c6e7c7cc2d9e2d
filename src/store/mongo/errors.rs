//! Driver errors → [`StoreError`]: duplicate keys are `Conflict` (callers that expect them,
//! like dedup and creation races, look for them first with [`is_duplicate_key`]); anything that
//! means "this server cannot answer now, another one or a later attempt may" is `Unavailable`
//! (retryable, 503); the rest (bad documents, driver misuse) is `Internal`.

use mongodb::error::{
    Error, ErrorKind, RETRYABLE_ERROR, RETRYABLE_WRITE_ERROR, SYSTEM_OVERLOADED_ERROR, TRANSIENT_TRANSACTION_ERROR,
    WriteFailure,
};

use crate::store::StoreError;

/// E11000 duplicate key; 11001 and 12582 are its legacy forms.
const DUPLICATE_KEY_CODES: [i32; 3] = [11000, 11001, 12582];

/// Server codes that mean the node cannot serve now, so another node or a later attempt may:
/// not primary (10107, 13435, 10058), recovering or shutting down (11600, 11602, 13436, 189,
/// 91), an operation interrupted (11601: killOp, a step-down, a client disconnect), network and
/// host trouble (6, 7, 89, 9001, 202), time limits (50, 262), lock acquisition timed out or
/// busy (24, 46), write concern not satisfied (64, 100), read concern not yet available (134),
/// no eligible member (133), write conflict (112), Atlas proxy errors (8000, transient by the
/// Atlas docs), ingress rate limit (462, the server's overload back-pressure).
const UNAVAILABLE_CODES: [i32; 25] = [
    6, 7, 24, 46, 50, 64, 89, 91, 100, 112, 133, 134, 189, 202, 262, 462, 8000, 9001, 10058, 10107, 11600, 11601,
    11602, 13435, 13436,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Conflict,
    Unavailable,
    Internal,
}

/// The class of a server error code, if the code alone decides it.
pub(super) fn class_of_code(code: i32) -> Option<Class> {
    if DUPLICATE_KEY_CODES.contains(&code) {
        Some(Class::Conflict)
    } else if UNAVAILABLE_CODES.contains(&code) {
        Some(Class::Unavailable)
    } else {
        None
    }
}

/// Server codes carried by an error (command error, write error, write concern error).
fn codes(e: &Error) -> Vec<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => vec![c.code],
        ErrorKind::Write(WriteFailure::WriteError(w)) => vec![w.code],
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => vec![w.code],
        ErrorKind::InsertMany(m) => m
            .write_errors
            .iter()
            .flatten()
            .map(|w| w.code)
            .chain(m.write_concern_error.iter().map(|w| w.code))
            .collect(),
        ErrorKind::BulkWrite(b) => {
            b.write_errors.values().map(|w| w.code).chain(b.write_concern_errors.iter().map(|w| w.code)).collect()
        }
        _ => Vec::new(),
    }
}

pub(super) fn is_duplicate_key(e: &Error) -> bool {
    codes(e).iter().any(|c| DUPLICATE_KEY_CODES.contains(c))
}

pub(super) fn class_of(e: &Error) -> Class {
    if is_duplicate_key(e) {
        return Class::Conflict;
    }
    if [RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR, SYSTEM_OVERLOADED_ERROR, RETRYABLE_ERROR]
        .iter()
        .any(|l| e.contains_label(l))
    {
        return Class::Unavailable;
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Authentication { .. }
        | ErrorKind::Shutdown => Class::Unavailable,
        // A write that could not reach its write concern is not known to be durable.
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => Class::Unavailable,
        _ => codes(e).into_iter().find_map(class_of_code).unwrap_or(Class::Internal),
    }
}

/// The store error for a driver error. The text is for logs only (never sent to clients).
pub(super) fn map_err(e: Error) -> StoreError {
    let text = e.kind.to_string();
    match class_of(&e) {
        Class::Conflict => StoreError::Conflict(text),
        Class::Unavailable => StoreError::Unavailable(text),
        Class::Internal => StoreError::Internal(text),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bson::doc;
    use mongodb::{
        Client,
        error::{CommandError, WriteConcernError, WriteError},
        options::{ClientOptions, ServerAddress},
    };

    use super::*;

    fn write_error(code: i32, msg: &str) -> Error {
        let w: WriteError = bson::from_document(doc! { "code": code, "errmsg": msg }).unwrap();
        Error::from(ErrorKind::Write(WriteFailure::WriteError(w)))
    }

    fn command_error(code: i32, name: &str) -> Error {
        let c: CommandError = bson::from_document(doc! { "code": code, "codeName": name, "errmsg": name }).unwrap();
        Error::from(ErrorKind::Command(c))
    }

    fn write_concern_error(code: i32) -> Error {
        let w: WriteConcernError = bson::from_document(doc! { "code": code, "errmsg": "wc" }).unwrap();
        Error::from(ErrorKind::Write(WriteFailure::WriteConcernError(w)))
    }

    #[test]
    fn duplicate_keys_are_conflicts() {
        let e = write_error(
            11000,
            "E11000 duplicate key error collection: chat.messages index: messages_sender_client_id \
             dup key: { senderId: \"a\", clientMessageId: \"m1\" }",
        );
        assert!(is_duplicate_key(&e));
        assert!(matches!(map_err(e), StoreError::Conflict(m) if m.contains("E11000")));
        // findAndModify reports it as a command error.
        let e = command_error(11000, "DuplicateKey");
        assert!(is_duplicate_key(&e));
        assert!(matches!(map_err(e), StoreError::Conflict(_)));
        assert!(is_duplicate_key(&write_error(11001, "legacy")));
        assert!(!is_duplicate_key(&write_error(121, "DocumentValidationFailure")));
    }

    #[test]
    fn not_primary_and_recovering_are_unavailable() {
        for (code, name) in [
            (10107, "NotWritablePrimary"),
            (13435, "NotPrimaryNoSecondaryOk"),
            (13436, "NotPrimaryOrSecondary"),
            (11600, "InterruptedAtShutdown"),
            (11602, "InterruptedDueToReplStateChange"),
            (189, "PrimarySteppedDown"),
            (91, "ShutdownInProgress"),
            (6, "HostUnreachable"),
            (89, "NetworkTimeout"),
            (9001, "SocketException"),
            (50, "MaxTimeMSExpired"),
            (262, "ExceededTimeLimit"),
            (11601, "Interrupted"),
            (24, "LockTimeout"),
            (46, "LockBusy"),
            (8000, "AtlasError"),
            (462, "IngressRequestRateLimitExceeded"),
        ] {
            let e = command_error(code, name);
            assert_eq!(class_of(&e), Class::Unavailable, "{name}");
            assert!(matches!(map_err(e), StoreError::Unavailable(m) if m.contains(name)), "{name}");
        }
        assert_eq!(class_of(&write_error(10107, "not primary")), Class::Unavailable);
    }

    #[test]
    fn write_concern_failures_are_unavailable() {
        assert_eq!(class_of(&write_concern_error(64)), Class::Unavailable);
        assert_eq!(class_of(&write_concern_error(100)), Class::Unavailable);
        assert_eq!(class_of(&write_concern_error(79)), Class::Unavailable, "any write concern error: not durable");
    }

    #[test]
    fn network_errors_are_unavailable() {
        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            let e = Error::from(std::io::Error::from(kind));
            assert!(matches!(map_err(e), StoreError::Unavailable(_)), "{kind:?}");
        }
    }

    #[test]
    fn other_errors_are_internal() {
        assert!(matches!(map_err(command_error(2, "BadValue")), StoreError::Internal(_)));
        assert!(matches!(map_err(write_error(121, "DocumentValidationFailure")), StoreError::Internal(_)));
        assert!(matches!(map_err(Error::custom("boom".to_owned())), StoreError::Internal(_)));
        let de = bson::from_document::<WriteError>(doc! { "code": "not a number" }).unwrap_err();
        assert!(matches!(map_err(Error::from(de)), StoreError::Internal(_)));
    }

    #[test]
    fn codes_alone() {
        assert_eq!(class_of_code(11000), Some(Class::Conflict));
        assert_eq!(class_of_code(12582), Some(Class::Conflict));
        assert_eq!(class_of_code(13435), Some(Class::Unavailable));
        assert_eq!(class_of_code(10107), Some(Class::Unavailable));
        assert_eq!(class_of_code(2), None);
    }

    /// A real server selection failure: nothing listens on the address.
    #[tokio::test]
    async fn server_selection_failure_is_unavailable_and_quick() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = ClientOptions::builder()
            .hosts(vec![ServerAddress::parse(format!("127.0.0.1:{port}")).unwrap()])
            .server_selection_timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(200))
            .build();
        let client = Client::with_options(opts).unwrap();
        let started = std::time::Instant::now();
        let e = client.database("x").run_command(doc! { "ping": 1 }).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(*e.kind, ErrorKind::ServerSelection { .. }), "{e}");
        assert!(matches!(map_err(e), StoreError::Unavailable(_)));
    }
}
