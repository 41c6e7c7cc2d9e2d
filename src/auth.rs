//! JWT authentication: HS256 with a shared secret, or RS256/ES256 with a public key.
//!
//! In the embedded default with no `JWT_SECRET`, a random secret is generated once and kept in
//! `CHAT_DATA_DIR/jwt-secret` so tokens minted by `jobsphere-chat token` survive restarts.

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
}

impl Identity {
    pub fn id(&self) -> &str {
        &self.user.id
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

#[derive(Clone)]
pub struct Jwt {
    decoding: DecodingKey,
    validation: Validation,
    encoding: Option<EncodingKey>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

impl Jwt {
    /// From the configuration; may create the dev secret file (embedded mode only).
    pub fn from_config(config: &Config) -> Result<Self, AuthError> {
        if let Some(path) = &config.jwt_public_key_file {
            return Self::from_public_key_pem(
                &fs::read(path).map_err(|e| AuthError::Setup(format!("{}: {e}", path.display())))?,
            );
        }
        match &config.jwt_secret {
            Some(secret) => Ok(Self::from_secret(secret.as_bytes())),
            None => Ok(Self::from_secret(dev_secret(&config.data_dir)?.as_bytes())),
        }
    }

    pub fn from_secret(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            decoding: DecodingKey::from_secret(secret),
            validation,
            encoding: Some(EncodingKey::from_secret(secret)),
        }
    }

    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, AuthError> {
        let (decoding, algs) = match DecodingKey::from_rsa_pem(pem) {
            Ok(k) => (k, vec![Algorithm::RS256]),
            Err(_) => (
                DecodingKey::from_ec_pem(pem).map_err(|e| AuthError::Setup(format!("not an RSA or EC PEM: {e}")))?,
                vec![Algorithm::ES256],
            ),
        };
        let mut validation = Validation::new(algs[0]);
        validation.algorithms = algs;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp"]);
        Ok(Self { decoding, validation, encoding: None })
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

    #[test]
    fn dev_secret_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = dev_secret(dir.path()).unwrap();
        let b = dev_secret(dir.path()).unwrap();
        assert_eq!(a, b);
    }
}
