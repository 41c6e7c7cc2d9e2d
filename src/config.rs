//! Node configuration: environment variables, mirrored as clap flags.
//!
//! Everything is parsed and validated once at start; a bad value stops the node with a message
//! that names the variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "jobsphere-chat",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CHAT_GIT_REVISION"), ")"),
    about = "JobSphere real-time chat node"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a chat node (the default).
    Serve,
    /// Print a signed JWT for a user and register the user in the store.
    Token(TokenArgs),
    /// Create the store's tables/indexes (also done idempotently at start).
    Migrate(MigrateArgs),
    /// Print the OpenAPI document of the REST API (the committed copy is docs/openapi.json).
    Openapi,
    /// GET /healthz (or /readyz) of a node; exit code 0 when it answers 200 (container
    /// HEALTHCHECK, exec probes: the image has no curl).
    Healthcheck(HealthcheckArgs),
    /// Connect a real Socket.IO client (websocket and long-polling) to a URL, authenticate and
    /// get an ack; exit code 0 when every transport worked (the chart's `helm test`).
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Full URL to GET (plain http); default: /healthz on CHAT_ADDR (0.0.0.0 → 127.0.0.1).
    #[arg(long)]
    pub url: Option<String>,
    /// Check /readyz instead of /healthz.
    #[arg(long)]
    pub ready: bool,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Base URL of the service, e.g. http://jobsphere-chat:3000 (default: CHAT_ADDR).
    #[arg(long)]
    pub url: Option<String>,
    /// User id the probe connects as (a token is signed with the configured JWT secret; with
    /// only a public key the probe expects `unauthorized`, which proves the round trip too).
    #[arg(long, default_value = "healthprobe")]
    pub user: String,
    /// Transports to try.
    #[arg(long, value_delimiter = ',', default_value = "websocket,polling")]
    pub transports: Vec<ProbeTransport>,
    /// Per-transport time limit.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeTransport {
    Websocket,
    Polling,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// MongoDB: only list the indexes migrate would create, and any conflicting index or
    /// foreign document that would make it refuse; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id (the `userId` claim).
    #[arg(long)]
    pub user: String,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Role: customer, contractor or admin.
    #[arg(long, default_value = "customer")]
    pub role: String,
    /// Lifetime, e.g. `24h`, `30m`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// `CHAT_FANOUT`: the cluster-mode fan-out (ignored without `REDIS_URL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FanoutMode {
    Targeted,
    Adapter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// REST + Socket.IO + health address.
    #[arg(long, env = "CHAT_ADDR", default_value = "0.0.0.0:3000")]
    pub addr: SocketAddr,
    /// Prometheus `/metrics` address.
    #[arg(long, env = "CHAT_METRICS_ADDR", default_value = "0.0.0.0:9100")]
    pub metrics_addr: SocketAddr,
    /// Embedded SQLite store and dev JWT secret.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// SQLite commit durability: `full` (fsync per group commit) or `normal` (WAL without
    /// per-commit fsync: survives a process crash, not a power loss).
    #[arg(long, env = "CHAT_SQLITE_SYNCHRONOUS", value_enum, default_value = "full")]
    pub sqlite_synchronous: crate::store::sqlite::Durability,
    /// Async worker threads of this node. Unset: one per core this process may use (the cgroup
    /// CPU limit included). Set it when several nodes share a host's cores: more runnable
    /// workers than cores cost a context switch and a cross-thread wake-up per hop.
    #[arg(long, env = "CHAT_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// Redis URL; set = cluster mode.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// PEM CA certificate(s) trusted for a TLS `REDIS_URL`, besides the system roots.
    #[arg(long, env = "CHAT_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for a TLS `REDIS_URL` that requires one.
    #[arg(long, env = "CHAT_REDIS_CERT_FILE")]
    pub redis_cert_file: Option<PathBuf>,
    /// PEM private key of `CHAT_REDIS_CERT_FILE`.
    #[arg(long, env = "CHAT_REDIS_KEY_FILE")]
    pub redis_key_file: Option<PathBuf>,
    /// Cluster mode: how events reach other nodes (docs/redis.md). `targeted`: per-user sharded
    /// channels, subscribed only by the nodes holding that user's sockets; `adapter`: the
    /// Socket.IO Redis adapter's one channel, which every node receives.
    #[arg(long, env = "CHAT_FANOUT", value_enum, default_value = "targeted")]
    pub fanout: FanoutMode,
    /// Prefix of every Redis key and channel, so deployments can share one Redis.
    #[arg(long, env = "CHAT_REDIS_PREFIX", default_value = "jobsphere-chat")]
    pub redis_prefix: String,
    // ---- MongoDB (docs/mongodb.md) ----
    /// MongoDB URI; set = MongoDB store. Its write/read concern and read preference are
    /// overridden for the store's collections (majority, journaled, primary).
    #[arg(long, env = "MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,
    #[arg(long, env = "MONGODB_DB", default_value = "jobsphere_chat")]
    pub mongodb_db: String,
    /// Prefix of the store's collection names (`chat_` → `chat_messages`), to share a database
    /// that already has `users`/`conversations`/`messages` of another service.
    #[arg(long, env = "MONGODB_COLLECTION_PREFIX", default_value = "")]
    pub mongodb_collection_prefix: String,
    /// Deadline of one store call, also sent as `maxTimeMS` and `wtimeout`; caps a URI
    /// `socketTimeoutMS`.
    #[arg(long, env = "MONGODB_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub mongodb_timeout_ms: u64,
    /// HS256 secret shared with the JobSphere auth service.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key; RS256/ES256 tokens are verified with it instead of the secret.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` of every token (unset: not checked); `token` signs it.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of every token (unset: a token's `aud` is ignored); `token` signs it.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`; a socket is told its session expired this long
    /// after `exp`.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = crate::auth::DEFAULT_LEEWAY_SECS,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub jwt_leeway_secs: u64,
    /// Label on metrics and presence records (default: hostname).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    #[arg(long, env = "PRESENCE_TTL_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub presence_ttl_secs: u64,
    #[arg(long, env = "RATE_LIMIT_MESSAGES", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_messages: u32,
    #[arg(long, env = "RATE_LIMIT_WINDOW_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub rate_limit_window_secs: u64,
    /// Connection attempts allowed per client address per window.
    #[arg(long, env = "RATE_LIMIT_CONNECTS", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_connects: u32,
    #[arg(long, env = "RATE_LIMIT_CONNECT_WINDOW_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub rate_limit_connect_window_secs: u64,
    /// Rate budgets by cost class, overriding the defaults (docs/limits.md): comma-separated
    /// `kind=N/WINDOW`, e.g. `typing=20/10s,sync=10/10s`.
    #[arg(long, env = "CHAT_RATE_LIMITS", default_value = "")]
    pub rate_limits: String,
    /// Comma-separated CIDRs (or addresses) of the proxies whose `X-Forwarded-For` is believed;
    /// from any other peer the header is ignored. Unset: the peer address is the client.
    #[arg(long, env = "CHAT_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Comma-separated allowed origins (unset = same-origin only).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// A typing state ends by itself after this many milliseconds without a new `typing_start`.
    #[arg(long, env = "CHAT_TYPING_EXPIRY_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub typing_expiry_ms: u64,
    /// On SIGTERM: seconds to stay up but not-ready so the load balancer stops routing here.
    #[arg(long, env = "CHAT_DRAIN_DELAY_SECS", default_value_t = 5)]
    pub drain_delay_secs: u64,
    /// On SIGTERM: the whole shutdown must finish within this many seconds.
    #[arg(long, env = "CHAT_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// On SIGTERM, after the drain delay: the node's socket transports are closed one after the
    /// other over this many seconds, so their clients reconnect elsewhere at a rate the
    /// connection throttle allows. Unset: 10, or two thirds of what the grace period leaves after
    /// the drain delay when that is shorter. 0 closes them all at once.
    #[arg(long, env = "CHAT_DRAIN_CLOSE_WINDOW_SECS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_close_window_secs: Option<u64>,
    // ---- HTTP server bounds (src/http/server.rs, docs/operations.md) ----
    /// A request head must arrive within this many seconds (slowloris).
    #[arg(long, env = "CHAT_HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_read_timeout_secs: u64,
    /// A connection with no byte read for this many seconds is closed (keep-alive and
    /// websockets; Socket.IO pings every 25 s keep live clients well inside it).
    #[arg(long, env = "CHAT_IDLE_TIMEOUT_SECS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_secs: u64,
    /// Open TCP connections per node; one more is closed at once.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// The built web client served at `/` (default: `web/dist`, when it holds an index.html).
    #[arg(long, env = "CHAT_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
}

impl Config {
    /// Parses the environment alone (no CLI arguments); used by tests and embedders.
    pub fn from_env() -> Result<Self, clap::Error> {
        Cli::try_parse_from(["jobsphere-chat"]).map(|c| c.config)
    }

    /// Parses command-line style arguments alone, ignoring the process environment (so an
    /// embedder or a test gets exactly the configuration it spells out, whatever `REDIS_URL`
    /// or `MONGODB_URI` the caller's shell has). `args[0]` is the program name.
    pub fn from_args_only<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches;
        let matches = args_only_command().try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches).map(|c| c.config)
    }

    /// Checks what clap's types cannot: cross-field rules and URL shapes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis_url {
            let target = crate::coord::redis::Target::parse(url).map_err(ConfigError::Redis)?;
            target.check_tls_files(&self.redis_tls()).map_err(ConfigError::Redis)?;
        } else if self.redis_tls() != Default::default() {
            return Err(ConfigError::Invalid("CHAT_REDIS_CA_FILE", "is set but REDIS_URL is not".into()));
        }
        if let Some(uri) = &self.mongodb_uri
            && !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://"))
        {
            return Err(ConfigError::Invalid("MONGODB_URI", "must start with mongodb:// or mongodb+srv://".into()));
        }
        if self.mongodb_db.is_empty() || self.mongodb_db.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(ConfigError::Invalid("MONGODB_DB", "must be a plain database name".into()));
        }
        if self.mongodb_collection_prefix.len() > 64
            || !self.mongodb_collection_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::Invalid(
                "MONGODB_COLLECTION_PREFIX",
                "may hold only letters, digits, '_' and '-' (at most 64)".into(),
            ));
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < 16
        {
            return Err(ConfigError::Invalid("JWT_SECRET", "must be at least 16 bytes".into()));
        }
        // A shared secret guards every node of a cluster: 32 bytes is HS256's key size, and
        // shorter ones can be brute-forced offline from any token.
        if let Some(secret) = &self.jwt_secret
            && self.redis_url.is_some()
            && self.jwt_public_key_file.is_none()
            && secret.len() < 32
        {
            return Err(ConfigError::Invalid(
                "JWT_SECRET",
                format!("must be at least 32 bytes in cluster mode (REDIS_URL set), got {}", secret.len()),
            ));
        }
        for (name, v) in [("JWT_ISSUER", &self.jwt_issuer), ("JWT_AUDIENCE", &self.jwt_audience)] {
            if v.as_ref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError::Invalid(name, "must not be empty when set".into()));
            }
        }
        if self.is_cluster() && self.jwt_secret.is_none() && self.jwt_public_key_file.is_none() {
            return Err(ConfigError::Invalid(
                "JWT_SECRET",
                "is required in cluster mode (REDIS_URL or MONGODB_URI set); or set JWT_PUBLIC_KEY_FILE".into(),
            ));
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            // Braces would move the Redis Cluster hash tags of every key.
            return Err(ConfigError::Invalid("CHAT_REDIS_PREFIX", "must be non-empty without spaces or braces".into()));
        }
        if self.drain_delay_secs >= self.shutdown_grace_secs {
            return Err(ConfigError::Invalid(
                "CHAT_DRAIN_DELAY_SECS",
                "must be shorter than CHAT_SHUTDOWN_GRACE_SECS".into(),
            ));
        }
        if let Some(window) = self.drain_close_window_secs
            && self.drain_delay_secs + window >= self.shutdown_grace_secs
        {
            return Err(ConfigError::Invalid(
                "CHAT_DRAIN_CLOSE_WINDOW_SECS",
                format!(
                    "{window} s plus CHAT_DRAIN_DELAY_SECS ({} s) must be shorter than CHAT_SHUTDOWN_GRACE_SECS ({} s)",
                    self.drain_delay_secs, self.shutdown_grace_secs
                ),
            ));
        }
        crate::limits::parse_budgets(&self.rate_limits).map_err(|e| ConfigError::Invalid("CHAT_RATE_LIMITS", e))?;
        for origin in &self.cors_origins {
            if origin.parse::<axum::http::HeaderValue>().is_err() || !origin.starts_with("http") {
                return Err(ConfigError::Invalid("CORS_ORIGINS", format!("bad origin {origin:?}")));
            }
        }
        Ok(())
    }

    /// The TLS files of the Redis connection.
    pub fn redis_tls(&self) -> crate::coord::redis::TlsFiles {
        crate::coord::redis::TlsFiles {
            ca: self.redis_ca_file.clone(),
            cert: self.redis_cert_file.clone(),
            key: self.redis_key_file.clone(),
        }
    }

    /// Cluster mode: shared services are configured, so secrets must be too.
    pub fn is_cluster(&self) -> bool {
        self.redis_url.is_some() || self.mongodb_uri.is_some()
    }

    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".to_owned())
        })
    }

    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_secs)
    }

    pub fn rate_limit_window(&self) -> Duration {
        Duration::from_secs(self.rate_limit_window_secs)
    }

    pub fn typing_expiry(&self) -> Duration {
        Duration::from_millis(self.typing_expiry_ms)
    }

    /// The window over which a drain closes the node's socket transports (see
    /// `CHAT_DRAIN_CLOSE_WINDOW_SECS`): the value set, else 10 s capped at two thirds of what the
    /// grace period leaves after the drain delay (the rest is for in-flight work and the exit).
    pub fn drain_close_window(&self) -> Duration {
        let secs = self.drain_close_window_secs.unwrap_or_else(|| {
            let left = self.shutdown_grace_secs.saturating_sub(self.drain_delay_secs);
            DEFAULT_DRAIN_CLOSE_WINDOW_SECS.min(left * 2 / 3)
        });
        Duration::from_secs(secs)
    }

    pub fn connect_window(&self) -> Duration {
        Duration::from_secs(self.rate_limit_connect_window_secs)
    }

    /// The HTTP server's bounds.
    pub fn http_limits(&self) -> crate::http::server::Limits {
        crate::http::server::Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections as usize,
        }
    }

    /// Every rate budget (defaults, `RATE_LIMIT_*`, then `CHAT_RATE_LIMITS`; checked by
    /// [`Self::validate`], so a bad override is only ignored by callers that skipped it).
    pub fn budgets(&self) -> Vec<(crate::limits::LimitKind, crate::limits::Quota)> {
        use crate::limits::Quota;
        let overrides = crate::limits::parse_budgets(&self.rate_limits).unwrap_or_default();
        crate::limits::budgets(
            Quota { limit: self.rate_limit_messages, window: self.rate_limit_window() },
            Quota { limit: self.rate_limit_connects, window: self.connect_window() },
            &overrides,
        )
    }
}

/// The drain's close window when `CHAT_DRAIN_CLOSE_WINDOW_SECS` is unset and the grace period
/// has room: a node of 240 sockets behind one address reconnects them within the default
/// connection budget (120 per 10 s, burst included).
const DEFAULT_DRAIN_CLOSE_WINDOW_SECS: u64 = 10;

/// A CIDR, or a bare address (one host).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (10.0.0.0/8) or an address"))
}

/// The CLI with every `env = …` lookup removed.
fn args_only_command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().mut_args(|a| a.env(None::<&str>))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} {1}")]
    Invalid(&'static str, String),
    /// `REDIS_URL` or the Redis TLS files (the message names the setting).
    #[error(transparent)]
    Redis(crate::coord::redis::UrlError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut all = vec!["jobsphere-chat"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.config)
    }

    #[test]
    fn defaults_are_the_design_defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "0.0.0.0:3000");
        assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:9100");
        assert_eq!(c.presence_ttl_secs, 60);
        assert_eq!((c.rate_limit_messages, c.rate_limit_window_secs), (30, 10));
        assert_eq!(c.mongodb_db, "jobsphere_chat");
        assert_eq!((c.mongodb_collection_prefix.as_str(), c.mongodb_timeout_ms), ("", 5000));
    }

    #[test]
    fn worker_threads_default_to_the_cores_and_are_bounded() {
        assert_eq!(parse(&[]).unwrap().worker_threads, None, "unset: one per usable core");
        assert_eq!(parse(&["--worker-threads", "1"]).unwrap().worker_threads, Some(1));
        assert!(parse(&["--worker-threads", "0"]).is_err(), "a runtime needs a worker");
        assert!(parse(&["--worker-threads", "5000"]).is_err(), "above the cap");
    }

    #[test]
    fn mongodb_settings_are_checked() {
        assert!(parse(&["--mongodb-timeout-ms", "50"]).is_err(), "below the floor");
        assert!(parse(&["--mongodb-timeout-ms", "600000"]).is_err(), "above the cap");
        let c = parse(&["--mongodb-collection-prefix", "chat.x"]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("MONGODB_COLLECTION_PREFIX"));
        let c = parse(&["--mongodb-collection-prefix", "chat_", "--mongodb-timeout-ms", "2500"]).unwrap();
        c.validate().unwrap();
        let m =
            crate::store::mongo::MongoSettings::from_config(&Config { mongodb_uri: Some("mongodb://h".into()), ..c })
                .unwrap();
        assert_eq!((m.collection_prefix.as_str(), m.timeout), ("chat_", Duration::from_millis(2500)));
    }

    #[test]
    fn cluster_mode_requires_a_secret() {
        let c = parse(&["--redis-url", "redis://127.0.0.1:6379"]).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("JWT_SECRET"), "{err}");
        let c = parse(&["--redis-url", "redis://x:1", "--jwt-secret", SECRET32]).unwrap();
        c.validate().unwrap();
    }

    const SECRET32: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn short_secrets_are_refused_in_cluster_mode_only() {
        let c = parse(&["--redis-url", "redis://x:1", "--jwt-secret", "0123456789abcdef"]).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("JWT_SECRET") && err.contains("32 bytes"), "{err}");
        let c = parse(&["--jwt-secret", "0123456789abcdef"]).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn jwt_binding_settings() {
        let c = parse(&[]).unwrap();
        assert_eq!((c.jwt_issuer.as_deref(), c.jwt_audience.as_deref(), c.jwt_leeway_secs), (None, None, 30));
        let c = parse(&["--jwt-issuer", "auth", "--jwt-audience", "chat", "--jwt-leeway-secs", "5"]).unwrap();
        c.validate().unwrap();
        assert_eq!(
            (c.jwt_issuer.as_deref(), c.jwt_audience.as_deref(), c.jwt_leeway_secs),
            (Some("auth"), Some("chat"), 5)
        );
        assert!(parse(&["--jwt-leeway-secs", "99999"]).is_err());
        let c = parse(&["--jwt-audience", " "]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("JWT_AUDIENCE"));
    }

    #[test]
    fn args_only_parsing_ignores_the_environment() {
        use clap::CommandFactory;
        assert!(Cli::command().get_arguments().any(|a| a.get_env().is_some()), "the CLI reads env vars");
        let bound: Vec<_> =
            args_only_command().get_arguments().filter(|a| a.get_env().is_some()).map(|a| a.get_id().clone()).collect();
        assert!(bound.is_empty(), "still read from the environment: {bound:?}");
        let c = Config::from_args_only(["jobsphere-chat", "--redis-prefix", "p"]).unwrap();
        assert_eq!(c.redis_prefix, "p");
        assert_eq!(c.redis_url, None);
        assert_eq!(c.mongodb_uri, None);
        assert_eq!(c.presence_ttl_secs, 60);
    }

    #[test]
    fn limits_and_proxies_parse() {
        let c = parse(&["--rate-limits", "typing=5/1s", "--trusted-proxies", "10.0.0.0/8,127.0.0.1"]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(c.trusted_proxies[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()));
        let t = c.budgets();
        assert_eq!(t.iter().find(|(k, _)| *k == crate::limits::LimitKind::Typing).unwrap().1.limit, 5);
        assert!(parse(&["--trusted-proxies", "nope"]).is_err());
        let c = parse(&["--rate-limits", "typo=1/1s"]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("CHAT_RATE_LIMITS"));
    }

    #[test]
    fn the_drain_close_window_fits_the_grace_period() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.drain_close_window(), Duration::from_secs(10), "20 s grace - 5 s delay leaves room");
        let c = parse(&["--drain-delay-secs", "0", "--shutdown-grace-secs", "5"]).unwrap();
        assert_eq!(c.drain_close_window(), Duration::from_secs(3), "two thirds of what is left");
        let c = parse(&["--drain-close-window-secs", "0"]).unwrap();
        assert_eq!(c.drain_close_window(), Duration::ZERO);
        c.validate().unwrap();
        let c = parse(&["--drain-close-window-secs", "15"]).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("CHAT_DRAIN_CLOSE_WINDOW_SECS"), "5 s delay + 15 s >= 20 s grace: {e}");
    }

    #[test]
    fn bad_values_are_named() {
        assert!(parse(&["--addr", "nope"]).is_err());
        assert!(parse(&["--presence-ttl-secs", "0"]).is_err());
        let c = parse(&["--redis-url", "http://x", "--jwt-secret", SECRET32]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("REDIS_URL"));
        let c = parse(&["--cors-origins", "https://a.example,ftp"]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("CORS_ORIGINS"));
    }
}
