//! From `MONGODB_URI` and the `MONGODB_*` settings to a driver client whose every collection
//! keeps the store's invariants, whatever the URI says.
//!
//! # What the URI may and may not decide
//! Connection matters are the URI's: hosts, TLS, credentials, pool size, timeouts, app name.
//! Unset ones default to `serverSelectionTimeoutMS=2000`, `connectTimeoutMS=2000`,
//! `maxPoolSize=50`, `retryWrites=true`, `retryReads=true`.
//!
//! Durability and freshness are not: a URI is often shared with other services and may carry
//! `w=1`, `w=0`, `journal=false`, `readPreference=secondaryPreferred` or `readConcernLevel=local`,
//! each of which voids an invariant (a `w=0` insert refused by the dedup index reports success;
//! a `w=1` write can roll back on failover; a secondary or `local` read of `lastSeq` can be
//! stale or come from a deposed primary). So the database handle — and through it every
//! collection — is opened with [`enforced`] options: write concern `w: "majority", j: true`
//! with `wtimeout`, read concern `majority`, read preference `primary`. The URI's values are
//! overridden, not refused, so a shared URI works; each override is logged once at start
//! ([`weakened_by_uri`]).
//!
//! # Deadlines
//! One deadline ([`MongoSettings::timeout`], `MONGODB_TIMEOUT_MS`, default 5 s) bounds a whole
//! store call on the client and is sent with every operation: `maxTimeMS` on reads, finds,
//! counts, `findAndModify`, `update` and index commands, and `wtimeout` in the write concern, so
//! the server stops waiting when the client does. The Rust driver has no socket timeout and
//! refuses `socketTimeoutMS`; a URI shared with other drivers often sets it (45–360 s), so it is
//! taken out before the driver sees it and may only *lower* the deadline: the configured
//! deadline is the cap.

use std::time::Duration;

use anyhow::anyhow;
use mongodb::options::{
    Acknowledgment, ClientOptions, DatabaseOptions, ReadConcern, ReadConcernLevel, ReadPreference, SelectionCriteria,
    WriteConcern,
};

use crate::config::Config;

const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub(super) const DEFAULT_MAX_POOL_SIZE: u32 = 50;
/// Deadline of one store call when `MONGODB_TIMEOUT_MS` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// `mongodb+srv://` URIs need DNS look-ups before anything else.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the store lives and how long one call may take.
#[derive(Debug, Clone)]
pub struct MongoSettings {
    pub uri: String,
    pub db: String,
    /// Prepended to every collection name (`chat_` → `chat_messages`), so the store can share
    /// a database that already has `users`/`messages` collections of another service.
    pub collection_prefix: String,
    /// The deadline of one store call, sent to the server as `maxTimeMS` / `wtimeout` too.
    pub timeout: Duration,
}

impl MongoSettings {
    /// Defaults for everything but the URI and database.
    pub fn new(uri: impl Into<String>, db: impl Into<String>) -> Self {
        Self { uri: uri.into(), db: db.into(), collection_prefix: String::new(), timeout: DEFAULT_TIMEOUT }
    }

    /// The MongoDB settings of a node's configuration (`None`: no `MONGODB_URI`).
    pub fn from_config(c: &Config) -> Option<Self> {
        Some(Self {
            uri: c.mongodb_uri.clone()?,
            db: c.mongodb_db.clone(),
            collection_prefix: c.mongodb_collection_prefix.clone(),
            timeout: Duration::from_millis(c.mongodb_timeout_ms),
        })
    }

    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.collection_prefix = prefix.into();
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Client options with our defaults, the call deadline, and what the URI asked for that the
/// store overrides (for the start-up log).
pub(super) struct Prepared {
    pub options: ClientOptions,
    pub deadline: Duration,
    pub overridden: Vec<String>,
}

pub(super) async fn prepare(settings: &MongoSettings) -> anyhow::Result<Prepared> {
    let (uri, socket_timeout) = take_socket_timeout(&settings.uri)?;
    let (deadline, capped) = deadline(settings.timeout, socket_timeout);
    let mut options = tokio::time::timeout(RESOLVE_TIMEOUT, ClientOptions::parse(uri))
        .await
        .map_err(|_| anyhow!("MONGODB_URI: resolving the connection string took over {RESOLVE_TIMEOUT:?}"))?
        .map_err(|e| anyhow!("MONGODB_URI is not a valid connection string: {}", e.kind))?;
    apply_defaults(&mut options);
    let mut overridden = weakened_by_uri(&options);
    overridden.extend(capped);
    Ok(Prepared { options, deadline, overridden })
}

/// Fills in what the URI left unset.
pub(super) fn apply_defaults(o: &mut ClientOptions) {
    o.server_selection_timeout.get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
    o.connect_timeout.get_or_insert(DEFAULT_CONNECT_TIMEOUT);
    o.max_pool_size.get_or_insert(DEFAULT_MAX_POOL_SIZE);
    o.retry_writes.get_or_insert(true);
    o.retry_reads.get_or_insert(true);
    o.app_name.get_or_insert_with(|| "jobsphere-chat".to_owned());
}

/// The call deadline: the configured one, lowered (never raised) by a URI `socketTimeoutMS`;
/// the second value explains a cap, for the log.
pub(super) fn deadline(configured: Duration, socket_timeout: Option<Duration>) -> (Duration, Option<String>) {
    match socket_timeout.filter(|d| !d.is_zero()) {
        Some(s) if s < configured => (s, None),
        Some(s) if s > configured => (
            configured,
            Some(format!("socketTimeoutMS={} capped to MONGODB_TIMEOUT_MS={}", s.as_millis(), configured.as_millis())),
        ),
        _ => (configured, None),
    }
}

/// The write concern of every write: acknowledged by a majority, journaled, and given up on
/// by the server after `deadline` (write concern error 64, `Unavailable`).
pub(super) fn write_concern(deadline: Duration) -> WriteConcern {
    WriteConcern::builder().w(Acknowledgment::Majority).journal(true).w_timeout(deadline).build()
}

/// What every collection of the store is opened with (module docs).
pub(super) fn enforced(deadline: Duration) -> DatabaseOptions {
    DatabaseOptions::builder()
        .write_concern(write_concern(deadline))
        .read_concern(ReadConcern::majority())
        .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
        .build()
}

/// The URI's settings that [`enforced`] overrides, in words (empty when the URI agrees).
pub(super) fn weakened_by_uri(o: &ClientOptions) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(wc) = &o.write_concern {
        match &wc.w {
            None | Some(Acknowledgment::Majority) => {}
            Some(w) => out.push(format!("write concern w={w:?} replaced by w=majority")),
        }
        if wc.journal == Some(false) {
            out.push("journal=false replaced by j=true".to_owned());
        }
    }
    if let Some(sc) = &o.selection_criteria
        && !matches!(sc, SelectionCriteria::ReadPreference(ReadPreference::Primary))
    {
        out.push(format!("read preference {sc:?} replaced by primary"));
    }
    if let Some(rc) = &o.read_concern
        && rc.level != ReadConcernLevel::Majority
    {
        out.push(format!("read concern {:?} replaced by majority", rc.level));
    }
    out
}

/// Removes `socketTimeoutMS` from the URI's options and returns it. The Rust driver has no
/// socket timeout and refuses a URI that sets one; URIs shared with other drivers often do.
pub(super) fn take_socket_timeout(uri: &str) -> anyhow::Result<(String, Option<Duration>)> {
    // Userinfo and hosts cannot hold a raw `?` (it must be percent-encoded), so the first one
    // starts the options.
    let Some((base, opts)) = uri.split_once('?') else { return Ok((uri.to_owned(), None)) };
    let mut timeout = None;
    let mut kept = Vec::new();
    for opt in opts.split(['&', ';']).filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("sockettimeoutms") => {
                let ms: u64 =
                    v.parse().map_err(|_| anyhow!("MONGODB_URI: socketTimeoutMS must be a number of milliseconds"))?;
                timeout = Some(Duration::from_millis(ms));
            }
            _ => kept.push(opt),
        }
    }
    let uri = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((uri, timeout))
}

#[cfg(test)]
mod tests {
    use mongodb::Client;

    use super::*;

    async fn prepared(uri: &str) -> Prepared {
        prepare(&MongoSettings::new(uri, "chat")).await.unwrap()
    }

    #[tokio::test]
    async fn defaults_fill_what_the_uri_leaves_unset() {
        let p = prepared("mongodb://db.internal:27017/").await;
        let o = &p.options;
        assert_eq!(o.server_selection_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.max_pool_size, Some(50));
        assert_eq!(o.retry_writes, Some(true));
        assert_eq!(o.retry_reads, Some(true));
        assert_eq!(o.app_name.as_deref(), Some("jobsphere-chat"));
        assert_eq!(p.deadline, Duration::from_secs(5));
        assert!(p.overridden.is_empty(), "{:?}", p.overridden);
    }

    #[tokio::test]
    async fn the_uri_wins_on_connection_matters() {
        let p = prepared(
            "mongodb://u:p@a:1,b:2/?replicaSet=rs0&serverSelectionTimeoutMS=500&connectTimeoutMS=700\
             &maxPoolSize=7&retryWrites=false&retryReads=false&socketTimeoutMS=900&appName=x",
        )
        .await;
        let o = &p.options;
        assert_eq!(o.server_selection_timeout, Some(Duration::from_millis(500)));
        assert_eq!(o.connect_timeout, Some(Duration::from_millis(700)));
        assert_eq!(o.max_pool_size, Some(7));
        assert_eq!(o.retry_writes, Some(false));
        assert_eq!(o.retry_reads, Some(false));
        assert_eq!(o.app_name.as_deref(), Some("x"));
        assert_eq!(p.deadline, Duration::from_millis(900), "a shorter socketTimeoutMS lowers the deadline");
    }

    /// The risk: a shared URI's `w=0`/`w=1`/`journal=false`/secondary reads/`local` reads
    /// silently void the invariants. Every collection handle gets the enforced options instead,
    /// and each override is reported.
    #[tokio::test]
    async fn weak_uri_concerns_are_overridden_on_every_collection_and_reported() {
        for uri in [
            "mongodb://h/?w=0",
            "mongodb://h/?w=1&journal=false",
            "mongodb://h/?readPreference=secondary",
            "mongodb://h/?readPreference=secondaryPreferred&readConcernLevel=local",
            "mongodb://h/?readConcernLevel=available&w=2",
        ] {
            let p = prepared(uri).await;
            assert!(!p.overridden.is_empty(), "{uri}: override not reported");
            let client = Client::with_options(p.options).unwrap();
            let db = client.database_with_options("chat", enforced(p.deadline));
            let coll = db.collection::<bson::Document>("messages");
            let wc = coll.write_concern().unwrap();
            assert_eq!(
                (wc.w.clone(), wc.journal, wc.w_timeout),
                (Some(Acknowledgment::Majority), Some(true), Some(p.deadline)),
                "{uri}"
            );
            assert_eq!(coll.read_concern().unwrap().level, ReadConcernLevel::Majority, "{uri}");
            assert!(
                matches!(coll.selection_criteria(), Some(SelectionCriteria::ReadPreference(ReadPreference::Primary))),
                "{uri}"
            );
        }
        let p = prepared("mongodb://h/?w=majority&journal=true&readPreference=primary&readConcernLevel=majority").await;
        assert!(p.overridden.is_empty(), "{:?}", p.overridden);
    }

    #[test]
    fn the_configured_deadline_caps_the_uri_socket_timeout() {
        let five = Duration::from_secs(5);
        assert_eq!(deadline(five, None), (five, None));
        assert_eq!(deadline(five, Some(Duration::ZERO)), (five, None), "0 = no socket timeout");
        assert_eq!(deadline(five, Some(Duration::from_millis(1500))), (Duration::from_millis(1500), None));
        let (d, note) = deadline(five, Some(Duration::from_secs(360)));
        assert_eq!(d, five);
        assert!(note.unwrap().contains("socketTimeoutMS=360000 capped"));
    }

    #[tokio::test]
    async fn a_long_uri_socket_timeout_is_capped_and_reported() {
        let p = prepared("mongodb://h/?socketTimeoutMS=45000").await;
        assert_eq!(p.deadline, Duration::from_secs(5));
        assert!(p.overridden.iter().any(|o| o.contains("capped")), "{:?}", p.overridden);
        let p = prepare(
            &MongoSettings::new("mongodb://h/?socketTimeoutMS=45000", "c").with_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
        assert_eq!(p.deadline, Duration::from_secs(45));
    }

    #[test]
    fn socket_timeout_is_taken_out_of_the_uri() {
        let t = |u: &str| take_socket_timeout(u).unwrap();
        assert_eq!(t("mongodb://h/db"), ("mongodb://h/db".to_owned(), None));
        assert_eq!(t("mongodb://h/?w=1"), ("mongodb://h/?w=1".to_owned(), None));
        assert_eq!(
            t("mongodb://u:p%3F@h/db?w=1&socketTimeoutMS=2500;retryWrites=false"),
            ("mongodb://u:p%3F@h/db?w=1&retryWrites=false".to_owned(), Some(Duration::from_millis(2500)))
        );
        assert_eq!(t("mongodb://h/?SOCKETTIMEOUTMS=0"), ("mongodb://h/".to_owned(), Some(Duration::ZERO)));
        assert!(take_socket_timeout("mongodb://h/?socketTimeoutMS=soon").is_err());
    }

    #[tokio::test]
    async fn a_bad_uri_is_a_clear_error() {
        let err = prepare(&MongoSettings::new("mongodb://", "chat")).await.err().expect("invalid");
        assert!(format!("{err:#}").contains("MONGODB_URI"), "{err:#}");
    }
}
