//! JWT authentication: HS256 with a shared secret, or RS256/ES256 with a public key.
//!
//! In the embedded default with no `JWT_SECRET`, a random secret is generated once and kept in
//! `CHAT_DATA_DIR/jwt-secret` so tokens minted by `jobsphere-chat token` survive restarts.
//!
//! `exp` is required and `nbf` honoured, both with `JWT_LEEWAY_SECS` of clock skew. `iss` and
//! `aud` are checked only when `JWT_ISSUER` / `JWT_AUDIENCE` are set (a token that carries an
//! `aud` is accepted when no audience is configured). A verified [`Identity`] keeps `exp`, so a
//! socket can be told when its token runs out (see `crate::realtime::expiry`).

use std::{fs, io::Write, path::Path, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

use crate::{
    chat::{
        model::{Role, User},
        validate,
    },
    config::Config,
};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: User,
    /// The token's `exp` (seconds since the epoch); `None` for identities made without a token.
    pub expires_at: Option<u64>,
}

impl Identity {
    pub fn id(&self) -> &str {
        &self.user.id
    }

    /// Whether the token ran out `leeway` seconds ago or more, at `now` (epoch seconds).
    pub fn is_expired(&self, now: u64, leeway: u64) -> bool {
        self.expires_at.is_some_and(|exp| now > exp.saturating_add(leeway))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// A string or a list of strings; checked by `jsonwebtoken` when an audience is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("cannot load key material: {0}")]
    Setup(String),
    #[error("cannot sign tokens with a public key only; set JWT_SECRET")]
    CannotSign,
}

/// Default clock skew allowed on `exp` and `nbf` (`JWT_LEEWAY_SECS`).
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

#[derive(Clone)]
pub struct Jwt {
    decoding: DecodingKey,
    validation: Validation,
    encoding: Option<EncodingKey>,
    /// What `sign` puts in `iss` / `aud` (the configured ones).
    issuer: Option<String>,
    audience: Option<String>,
}

/// The claims a token is bound to beyond its signature.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

impl Jwt {
    /// From the configuration; may create the dev secret file (embedded mode only).
    pub fn from_config(config: &Config) -> Result<Self, AuthError> {
        let binding = Binding {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway_secs: config.jwt_leeway_secs,
        };
        let jwt = if let Some(path) = &config.jwt_public_key_file {
            Self::from_public_key_pem(
                &fs::read(path).map_err(|e| AuthError::Setup(format!("{}: {e}", path.display())))?,
            )?
        } else {
            match &config.jwt_secret {
                Some(secret) => Self::from_secret(secret.as_bytes()),
                None => Self::from_secret(dev_secret(&config.data_dir)?.as_bytes()),
            }
        };
        Ok(jwt.bound(binding))
    }

    pub fn from_secret(secret: &[u8]) -> Self {
        Self::new(DecodingKey::from_secret(secret), vec![Algorithm::HS256], Some(EncodingKey::from_secret(secret)))
    }

    fn new(decoding: DecodingKey, algorithms: Vec<Algorithm>, encoding: Option<EncodingKey>) -> Self {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        let mut jwt = Self { decoding, validation, encoding, issuer: None, audience: None };
        jwt.apply(Binding { leeway_secs: DEFAULT_LEEWAY_SECS, ..Binding::default() });
        jwt
    }

    /// Binds tokens to an issuer and audience (each checked only when set) and sets the leeway.
    pub fn bound(mut self, binding: Binding) -> Self {
        self.apply(binding);
        self
    }

    fn apply(&mut self, b: Binding) {
        let v = &mut self.validation;
        v.leeway = b.leeway_secs;
        v.validate_nbf = true;
        // A configured issuer/audience must be present, not only right when present.
        let mut required = vec!["exp"];
        required.extend(b.issuer.as_ref().map(|_| "iss"));
        required.extend(b.audience.as_ref().map(|_| "aud"));
        v.set_required_spec_claims(&required);
        v.iss = b.issuer.as_ref().map(|i| std::iter::once(i.clone()).collect());
        // Without a configured audience a token's `aud` is ignored rather than refused.
        v.validate_aud = b.audience.is_some();
        v.aud = b.audience.as_ref().map(|a| std::iter::once(a.clone()).collect());
        self.issuer = b.issuer;
        self.audience = b.audience;
    }

    /// The leeway on `exp` and `nbf`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.validation.leeway
    }

    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, AuthError> {
        let (decoding, algs) = match DecodingKey::from_rsa_pem(pem) {
            Ok(k) => (k, vec![Algorithm::RS256]),
            Err(_) => (
                DecodingKey::from_ec_pem(pem).map_err(|e| AuthError::Setup(format!("not an RSA or EC PEM: {e}")))?,
                vec![Algorithm::ES256],
            ),
        };
        Ok(Self::new(decoding, algs, None))
    }

    /// Verifies a token and returns who it names. The error text is for logs only.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let c = data.claims;
        let id = c.user_id.or(c.sub).ok_or_else(|| AuthError::Invalid("no userId or sub claim".into()))?;
        validate::user_id("userId", &id).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let role = match c.role.as_deref() {
            None => Role::Customer,
            Some(r) => Role::parse(r).ok_or_else(|| AuthError::Invalid(format!("unknown role {r:?}")))?,
        };
        let clip = |s: Option<String>, n: usize| s.map(|s| s.chars().take(n).collect::<String>());
        Ok(Identity {
            expires_at: Some(c.exp),
            user: User {
                name: clip(c.name, 200).filter(|n| !n.trim().is_empty()).unwrap_or_else(|| id.clone()),
                email: clip(c.email, 320),
                avatar: clip(c.avatar, 2048),
                role,
                id,
            },
        })
    }

    /// Signs a token for `user` valid for `ttl` (the `token` command and tests).
    pub fn sign(&self, user: &User, ttl: Duration) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotSign)?;
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            user_id: Some(user.id.clone()),
            sub: None,
            role: Some(user.role.as_str().to_owned()),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(serde_json::Value::String),
            name: Some(user.name.clone()),
            avatar: user.avatar.clone(),
            email: user.email.clone(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, key).map_err(|e| AuthError::Setup(e.to_string()))
    }
}

/// The embedded default's secret: read from `dir/jwt-secret`, or generated there once.
fn dev_secret(dir: &Path) -> Result<String, AuthError> {
    let path = dir.join("jwt-secret");
    if let Ok(s) = fs::read_to_string(&path) {
        let s = s.trim().to_owned();
        if s.len() >= 32 {
            return Ok(s);
        }
    }
    fs::create_dir_all(dir).map_err(|e| AuthError::Setup(format!("{}: {e}", dir.display())))?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).map_err(|e| AuthError::Setup(format!("{}: {e}", path.display())))?;
    f.write_all(secret.as_bytes()).map_err(|e| AuthError::Setup(e.to_string()))?;
    tracing::warn!(path = %path.display(), "JWT_SECRET is not set: generated a development secret (embedded mode only)");
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User { id: id.into(), name: "Ann".into(), email: None, role: Role::Contractor, avatar: None }
    }

    #[test]
    fn sign_verify_roundtrip_and_rejections() {
        let jwt = Jwt::from_secret(b"0123456789abcdef0123456789abcdef");
        let t = jwt.sign(&user("u1"), Duration::from_secs(60)).unwrap();
        let id = jwt.verify(&format!("Bearer {t}")).unwrap();
        assert_eq!(id.user.id, "u1");
        assert_eq!(id.user.role, Role::Contractor);
        let other = Jwt::from_secret(b"another-secret-another-secret!!");
        assert!(other.verify(&t).is_err());
        assert!(jwt.verify("garbage").is_err());
        assert!(jwt.verify("").is_err());
    }

    #[test]
    fn expired_and_missing_exp_are_rejected() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let jwt = Jwt::from_secret(secret);
        let key = EncodingKey::from_secret(secret);
        let old = serde_json::json!({"userId": "u1", "exp": jsonwebtoken::get_current_timestamp() - 3600});
        let t = encode(&Header::default(), &old, &key).unwrap();
        assert!(jwt.verify(&t).is_err());
        let no_exp = serde_json::json!({"userId": "u1"});
        let t = encode(&Header::default(), &no_exp, &key).unwrap();
        assert!(jwt.verify(&t).is_err());
        let sub = serde_json::json!({"sub": "u2", "exp": jsonwebtoken::get_current_timestamp() + 60, "role": "admin"});
        let t = encode(&Header::default(), &sub, &key).unwrap();
        assert_eq!(jwt.verify(&t).unwrap().user.id, "u2");
        let bad_id = serde_json::json!({"sub": "u 2", "exp": jsonwebtoken::get_current_timestamp() + 60});
        let t = encode(&Header::default(), &bad_id, &key).unwrap();
        assert!(jwt.verify(&t).is_err());
    }

    /// `JWT_PUBLIC_KEY_FILE`: tokens of the auth service signed with its private key verify;
    /// HS256 tokens (even with the PEM as secret) and other keys' tokens do not.
    #[test]
    fn public_key_verification() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let claims = serde_json::json!({"userId": "u9", "exp": jsonwebtoken::get_current_timestamp() + 60});
        for (alg, name) in [(Algorithm::ES256, "es256"), (Algorithm::RS256, "rs256")] {
            let private = fs::read(format!("{dir}/{name}-private.pem")).unwrap();
            let public = fs::read(format!("{dir}/{name}-public.pem")).unwrap();
            let key = match alg {
                Algorithm::ES256 => EncodingKey::from_ec_pem(&private).unwrap(),
                _ => EncodingKey::from_rsa_pem(&private).unwrap(),
            };
            let jwt = Jwt::from_public_key_pem(&public).unwrap();
            let t = encode(&Header::new(alg), &claims, &key).unwrap();
            assert_eq!(jwt.verify(&t).unwrap().user.id, "u9", "{name}");
            let forged = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&public)).unwrap();
            assert!(jwt.verify(&forged).is_err(), "{name}: HS256 with the public key as secret must fail");
            assert!(jwt.sign(&user("x"), Duration::from_secs(1)).is_err(), "cannot sign without a secret");
        }
        let es = Jwt::from_public_key_pem(&fs::read(format!("{dir}/es256-public.pem")).unwrap()).unwrap();
        let rs_key = EncodingKey::from_rsa_pem(&fs::read(format!("{dir}/rs256-private.pem")).unwrap()).unwrap();
        assert!(es.verify(&encode(&Header::new(Algorithm::RS256), &claims, &rs_key).unwrap()).is_err());
        assert!(Jwt::from_public_key_pem(b"not a pem").is_err());
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn encode_claims(claims: serde_json::Value) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn issuer_and_audience_are_checked_only_when_configured() {
        let open = Jwt::from_secret(SECRET);
        let bound = Jwt::from_secret(SECRET).bound(Binding {
            issuer: Some("auth".into()),
            audience: Some("chat".into()),
            leeway_secs: 30,
        });
        let exp = now() + 60;
        let plain = encode_claims(serde_json::json!({"userId": "u1", "exp": exp}));
        let right = encode_claims(serde_json::json!({"userId": "u1", "exp": exp, "iss": "auth", "aud": "chat"}));
        let listed =
            encode_claims(serde_json::json!({"userId": "u1", "exp": exp, "iss": "auth", "aud": ["x", "chat"]}));
        let other_aud = encode_claims(serde_json::json!({"userId": "u1", "exp": exp, "iss": "auth", "aud": "billing"}));
        let other_iss = encode_claims(serde_json::json!({"userId": "u1", "exp": exp, "iss": "evil", "aud": "chat"}));
        let no_aud = encode_claims(serde_json::json!({"userId": "u1", "exp": exp, "iss": "auth"}));
        // Unbound: anything validly signed, an `aud` included.
        for t in [&plain, &right, &other_aud, &other_iss] {
            assert!(open.verify(t).is_ok());
        }
        assert!(bound.verify(&right).is_ok());
        assert!(bound.verify(&listed).is_ok());
        for (t, why) in
            [(&plain, "no iss/aud"), (&other_aud, "wrong aud"), (&other_iss, "wrong iss"), (&no_aud, "no aud")]
        {
            assert!(bound.verify(t).is_err(), "{why} must be refused");
        }
        // `token` signs what the node checks.
        let signed = bound.sign(&user("u3"), Duration::from_secs(60)).unwrap();
        assert_eq!(bound.verify(&signed).unwrap().user.id, "u3");
        assert!(open.verify(&signed).is_ok());
    }

    #[test]
    fn nbf_and_leeway_are_honoured() {
        let jwt = Jwt::from_secret(SECRET).bound(Binding { leeway_secs: 5, ..Binding::default() });
        assert_eq!(jwt.leeway_secs(), 5);
        let early = encode_claims(serde_json::json!({"userId": "u1", "exp": now() + 600, "nbf": now() + 300}));
        assert!(jwt.verify(&early).is_err(), "not valid before nbf");
        let skewed = encode_claims(serde_json::json!({"userId": "u1", "exp": now() + 600, "nbf": now() + 2}));
        assert!(jwt.verify(&skewed).is_ok(), "nbf within the leeway");
        let just_expired = encode_claims(serde_json::json!({"userId": "u1", "exp": now() - 2}));
        assert!(jwt.verify(&just_expired).is_ok(), "exp within the leeway");
        let expired = encode_claims(serde_json::json!({"userId": "u1", "exp": now() - 60}));
        assert!(jwt.verify(&expired).is_err(), "exp beyond the leeway");
        assert_eq!(Jwt::from_secret(SECRET).leeway_secs(), DEFAULT_LEEWAY_SECS);
    }

    #[test]
    fn identity_keeps_the_expiry() {
        let jwt = Jwt::from_secret(SECRET);
        let exp = now() + 120;
        let id = jwt.verify(&encode_claims(serde_json::json!({"userId": "u1", "exp": exp}))).unwrap();
        assert_eq!(id.expires_at, Some(exp));
        assert!(!id.is_expired(exp + 30, 30), "still inside the leeway");
        assert!(id.is_expired(exp + 31, 30));
        let forever = Identity { expires_at: None, ..id };
        assert!(!forever.is_expired(u64::MAX, 0));
    }

    #[test]
    fn dev_secret_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = dev_secret(dir.path()).unwrap();
        let b = dev_secret(dir.path()).unwrap();
        assert_eq!(a, b);
    }
}
