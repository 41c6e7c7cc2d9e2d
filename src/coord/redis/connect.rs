//! From `REDIS_URL` (and the TLS files) to a fred client builder, for the three supported
//! topologies (docs/redis.md):
//!
//! | URL | topology |
//! |---|---|
//! | `redis://[[user]:pass@]host[:port][/db]` | one server (or a proxy) |
//! | `redis-sentinel://[[user]:pass@]h1:p1,h2:p2/MASTER[/db][?sentinelUsername=…&sentinelPassword=…]` | Sentinel: the master named `MASTER`, followed through failovers |
//! | `redis-cluster://[[user]:pass@]h1:p1,h2:p2` | Redis Cluster (the hosts are seeds; the rest is discovered) |
//!
//! The same schemes with `rediss` (`rediss://`, `rediss-sentinel://`, `rediss-cluster://`) use
//! TLS (rustls): the system roots plus `CHAT_REDIS_CA_FILE`, and the client certificate
//! `CHAT_REDIS_CERT_FILE` + `CHAT_REDIS_KEY_FILE` when set. Anything else (another scheme, a
//! TLS file without a TLS URL, an unreadable or empty PEM, half a client certificate) is a
//! [`UrlError`] before any connection is tried, so the node stops at start saying why.
//!
//! Passwords never appear in an error message.

use std::{path::PathBuf, sync::Arc, time::Duration};

use fred::{
    prelude::{Builder, Config as FredConfig, ReconnectPolicy, ServerConfig},
    types::{
        RespVersion,
        config::{Server, TlsConfig, TlsConnector},
    },
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Commands fail after this instead of hanging while Redis is unreachable.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// fred's default (32) drops pub/sub bursts; the only trace is a `lagged` warning.
const BROADCAST_CAPACITY: usize = 16_384;

/// Why `REDIS_URL` (or a TLS file) cannot be used. Messages name the setting, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "REDIS_URL: unsupported scheme {0:?}; use redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://"
    )]
    Scheme(String),
    #[error("REDIS_URL: {0}")]
    Shape(String),
    #[error("{0}")]
    Tls(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Standalone,
    Sentinel,
    Cluster,
}

/// The TLS files of the Redis connection (`CHAT_REDIS_CA_FILE`, `CHAT_REDIS_CERT_FILE`,
/// `CHAT_REDIS_KEY_FILE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// A parsed `REDIS_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub topology: Topology,
    pub tls: bool,
    pub hosts: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: Option<u8>,
    /// Sentinel only: the monitored master's name.
    pub master: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
}

fn shape(msg: impl Into<String>) -> UrlError {
    UrlError::Shape(msg.into())
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn parse_host(h: &str, default_port: u16) -> Result<(String, u16), UrlError> {
    // `[::1]:6379` (IPv6) or `host:port` or `host`.
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| shape(format!("bad IPv6 host {h:?}")))?;
        (host, after.strip_prefix(':'))
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if host.is_empty() || host.contains(['/', '?', '@', ' ']) {
        return Err(shape(format!("bad host {h:?}")));
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| shape(format!("bad port in {h:?}")))?,
    };
    Ok((host.to_owned(), port))
}

fn parse_db(s: &str) -> Result<u8, UrlError> {
    s.parse::<u8>().map_err(|_| shape(format!("database {s:?} must be a number 0-255")))
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| UrlError::Scheme(String::new()))?;
        let (topology, tls) = match scheme {
            "redis" => (Topology::Standalone, false),
            "rediss" => (Topology::Standalone, true),
            "redis-sentinel" => (Topology::Sentinel, false),
            "rediss-sentinel" => (Topology::Sentinel, true),
            "redis-cluster" => (Topology::Cluster, false),
            "rediss-cluster" => (Topology::Cluster, true),
            other => return Err(UrlError::Scheme(other.chars().take(32).collect())),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => ((!user.is_empty()).then(|| decode(user)), Some(decode(pass))),
                // `redis://secret@host` is the password alone, as redis-cli reads it.
                None => (None, Some(decode(u))),
            },
        };
        let default_port = if topology == Topology::Sentinel { 26379 } else { 6379 };
        let hosts = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| parse_host(h, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        if hosts.is_empty() {
            return Err(shape("no host"));
        }
        let mut t = Target {
            topology,
            tls,
            hosts,
            username,
            password,
            database: None,
            master: None,
            sentinel_username: None,
            sentinel_password: None,
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match topology {
            Topology::Standalone | Topology::Cluster => {
                if t.hosts.len() > 1 && topology == Topology::Standalone {
                    return Err(shape("several hosts need redis-sentinel:// or redis-cluster://"));
                }
                match (topology, segments.as_slice()) {
                    (_, []) => {}
                    (Topology::Standalone, [db]) => t.database = Some(parse_db(db)?),
                    (Topology::Cluster, _) => return Err(shape("Redis Cluster has no databases: drop the path")),
                    _ => return Err(shape("path must be /DB")),
                }
            }
            Topology::Sentinel => match segments.as_slice() {
                [master] => t.master = Some(decode(master)),
                [master, db] => {
                    t.master = Some(decode(master));
                    t.database = Some(parse_db(db)?);
                }
                _ => return Err(shape("redis-sentinel:// needs the master name as its path: /MASTER[/DB]")),
            },
        }
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (topology, k) {
                (Topology::Sentinel, "sentinelUsername") => t.sentinel_username = Some(decode(v)),
                (Topology::Sentinel, "sentinelPassword") => t.sentinel_password = Some(decode(v)),
                // fred reads this itself and ignores it; RESP3 is forced anyway.
                (_, "protocol") => {}
                _ => return Err(shape(format!("unknown parameter {k:?}"))),
            }
        }
        Ok(t)
    }

    /// Checks the URL together with the TLS files (without reading them).
    pub fn check_tls_files(&self, files: &TlsFiles) -> Result<(), UrlError> {
        if files.any() && !self.tls {
            return Err(UrlError::Tls(
                "CHAT_REDIS_CA_FILE / CHAT_REDIS_CERT_FILE / CHAT_REDIS_KEY_FILE are set but REDIS_URL does not use TLS (rediss://, rediss-sentinel://, rediss-cluster://)".into(),
            ));
        }
        if files.cert.is_some() != files.key.is_some() {
            return Err(UrlError::Tls("CHAT_REDIS_CERT_FILE and CHAT_REDIS_KEY_FILE must be set together".into()));
        }
        Ok(())
    }

    fn fred_config(&self, files: &TlsFiles) -> Result<FredConfig, UrlError> {
        self.check_tls_files(files)?;
        let servers = || self.hosts.iter().map(|(h, p)| Server::new(h.as_str(), *p)).collect::<Vec<_>>();
        let server = match self.topology {
            Topology::Standalone => ServerConfig::Centralized { server: servers().remove(0) },
            Topology::Cluster => ServerConfig::Clustered { hosts: servers(), policy: Default::default() },
            Topology::Sentinel => ServerConfig::Sentinel {
                hosts: servers(),
                service_name: self.master.clone().unwrap_or_default(),
                username: self.sentinel_username.clone(),
                password: self.sentinel_password.clone(),
            },
        };
        let tls = if self.tls { Some(tls_config(files)?) } else { None };
        Ok(FredConfig {
            username: self.username.clone(),
            password: self.password.clone(),
            server,
            database: self.database,
            // fred ignores `?protocol=resp3`; with RESP2 every adapter emit fails.
            version: RespVersion::RESP3,
            tls,
            ..Default::default()
        })
    }
}

fn read_certs(setting: &str, path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, UrlError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| UrlError::Tls(format!("{setting} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(UrlError::Tls(format!("{setting} {}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

/// rustls on ring: the system roots plus the CA file, and the client certificate if set.
fn tls_config(files: &TlsFiles) -> Result<TlsConfig, UrlError> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for e in &system.errors {
        tracing::warn!(error = %e, "some system CA certificates could not be loaded");
    }
    let (added, _ignored) = roots.add_parsable_certificates(system.certs);
    if let Some(ca) = &files.ca {
        for cert in read_certs("CHAT_REDIS_CA_FILE", ca)? {
            roots.add(cert).map_err(|e| UrlError::Tls(format!("CHAT_REDIS_CA_FILE {}: {e}", ca.display())))?;
        }
    } else if added == 0 {
        return Err(UrlError::Tls(
            "REDIS_URL uses TLS but there are no system CA certificates; set CHAT_REDIS_CA_FILE".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UrlError::Tls(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("CHAT_REDIS_CERT_FILE", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| UrlError::Tls(format!("CHAT_REDIS_KEY_FILE {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| UrlError::Tls(format!("CHAT_REDIS_CERT_FILE / CHAT_REDIS_KEY_FILE: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(config).into())
}

/// The fred builder every client of a node is built from: the topology and TLS of the URL, and
/// the settings that keep fred from losing messages silently (see the module header of
/// [`super`]).
pub fn builder(url: &str, files: &TlsFiles) -> Result<Builder, UrlError> {
    let target = Target::parse(url)?;
    let mut b = Builder::from_config(target.fred_config(files)?);
    b.with_performance_config(|p| {
        p.default_command_timeout = COMMAND_TIMEOUT;
        p.broadcast_channel_capacity = BROADCAST_CAPACITY;
    })
    .with_connection_config(|c| {
        c.connection_timeout = Duration::from_secs(2);
        c.internal_command_timeout = COMMAND_TIMEOUT;
        c.max_command_attempts = 2;
        c.unresponsive.max_timeout = Some(Duration::from_secs(5));
        // fred leaves Nagle on: a command written while an earlier one is unacknowledged waits
        // for that ACK (up to the peer's delayed-ACK timer, 40 ms) before it leaves.
        c.tcp.nodelay = Some(true);
    })
    // Without a policy fred never reconnects after a blip; 0 attempts = retry forever.
    .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_urls() {
        let t = Target::parse("redis://127.0.0.1:6380").unwrap();
        assert_eq!(
            (t.topology, t.tls, t.hosts.clone()),
            (Topology::Standalone, false, vec![("127.0.0.1".into(), 6380)])
        );
        let t = Target::parse("rediss://user:p%40ss@redis.example.com/3").unwrap();
        assert!(t.tls);
        assert_eq!(t.hosts, vec![("redis.example.com".into(), 6379)]);
        assert_eq!((t.username.as_deref(), t.password.as_deref(), t.database), (Some("user"), Some("p@ss"), Some(3)));
        let t = Target::parse("redis://:secret@[::1]:7000").unwrap();
        assert_eq!(
            (t.username, t.password.as_deref(), t.hosts[0].clone()),
            (None, Some("secret"), ("::1".into(), 7000))
        );
    }

    #[test]
    fn sentinel_urls() {
        let t = Target::parse("redis-sentinel://:pw@s1:26379,s2,s3:26380/mymaster/2?sentinelPassword=sp").unwrap();
        assert_eq!(t.topology, Topology::Sentinel);
        assert_eq!(t.hosts, vec![("s1".into(), 26379), ("s2".into(), 26379), ("s3".into(), 26380)]);
        assert_eq!((t.master.as_deref(), t.database), (Some("mymaster"), Some(2)));
        assert_eq!((t.password.as_deref(), t.sentinel_password.as_deref()), (Some("pw"), Some("sp")));
        assert!(Target::parse("rediss-sentinel://s1/m").unwrap().tls);
        assert!(Target::parse("redis-sentinel://s1:26379").unwrap_err().to_string().contains("master name"));
    }

    #[test]
    fn cluster_urls() {
        let t = Target::parse("redis-cluster://h1:7000,h2:7001").unwrap();
        assert_eq!((t.topology, t.hosts.len()), (Topology::Cluster, 2));
        assert!(Target::parse("rediss-cluster://h1:7000").unwrap().tls);
        assert!(Target::parse("redis-cluster://h1:7000/1").is_err());
    }

    #[test]
    fn refusals_are_clear_and_keep_secrets() {
        let e = Target::parse("http://user:hunter2@h:1").unwrap_err().to_string();
        assert!(e.contains("unsupported scheme") && !e.contains("hunter2"), "{e}");
        for bad in
            ["redis://", "redis://h:0", "redis://h:x", "redis://a,b", "redis://h/x", "redis://h?tls=1", "valkey://h"]
        {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let e = Target::parse("redis://:hunter2@h:99999").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_files_need_a_tls_url_and_come_in_pairs() {
        let plain = Target::parse("redis://h").unwrap();
        let ca = TlsFiles { ca: Some("/x.pem".into()), ..Default::default() };
        assert!(plain.check_tls_files(&ca).unwrap_err().to_string().contains("does not use TLS"));
        let tls = Target::parse("rediss://h").unwrap();
        assert!(tls.check_tls_files(&ca).is_ok());
        let half = TlsFiles { cert: Some("/c.pem".into()), ..Default::default() };
        assert!(tls.check_tls_files(&half).unwrap_err().to_string().contains("together"));
        let missing = TlsFiles { ca: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        let e = builder("rediss://h", &missing).err().unwrap().to_string();
        assert!(e.contains("CHAT_REDIS_CA_FILE") && e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
