//! Auth tokens as etcd issues them (`--auth-token`): `simple` tokens (`<16 letters>.<index of
//! the Authenticate entry>`, held in memory by every member, valid for a TTL renewed by each
//! use) or signed `jwt` tokens carrying the user and the auth revision.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::auth::error::AuthError;
use crate::auth::state::AuthApplied;

/// Most simple tokens a member holds at once: beyond it, expired ones go, then the ones
/// closest to expiry (their users authenticate again).
pub const MAX_SIMPLE_TOKENS: usize = 1 << 16;

/// etcd's default `--auth-token-ttl` (seconds).
pub const DEFAULT_SIMPLE_TTL: Duration = Duration::from_secs(300);

/// A JWT's default lifetime (etcd's `ttl=5m`).
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);

/// `--auth-token` could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum TokenOptionError {
    /// Not `simple` nor `jwt,...`.
    #[error("--auth-token: unknown token type {0:?} (want simple or jwt,pub-key=...,priv-key=...,sign-method=...)")]
    UnknownType(String),
    /// A `key=value` option that does not parse.
    #[error("--auth-token: {0}")]
    Option(String),
    /// A key file that cannot be read or used.
    #[error("--auth-token: {0}")]
    Key(String),
}

/// The token provider a member runs.
pub enum Tokens {
    /// In-memory tokens.
    Simple(SimpleTokens),
    /// Signed tokens.
    Jwt(JwtTokens),
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tokens::Simple(_) => f.write_str("Tokens::Simple"),
            Tokens::Jwt(j) => write!(f, "Tokens::Jwt({:?})", j.algorithm),
        }
    }
}

impl Tokens {
    /// Parses `--auth-token` (`simple`, or `jwt,pub-key=F,priv-key=F,sign-method=M[,ttl=D]`);
    /// `simple_ttl` is `--auth-token-ttl`.
    pub fn from_flag(spec: &str, simple_ttl: Duration) -> Result<Tokens, TokenOptionError> {
        let mut parts = spec.split(',');
        match parts.next().unwrap_or_default() {
            "simple" => Ok(Tokens::Simple(SimpleTokens::new(simple_ttl))),
            "jwt" => {
                let mut opts = HashMap::new();
                for p in parts {
                    let (k, v) = p.split_once('=').ok_or_else(|| {
                        TokenOptionError::Option(format!("{p:?} is not key=value"))
                    })?;
                    if opts.insert(k.to_string(), v.to_string()).is_some() {
                        return Err(TokenOptionError::Option(format!("{k} given twice")));
                    }
                }
                JwtTokens::from_options(&opts).map(Tokens::Jwt)
            }
            other => Err(TokenOptionError::UnknownType(other.to_string())),
        }
    }

    /// Acts on an applied auth change: every member issues the simple token an Authenticate
    /// entry at `index` (with `prefix`) makes, and drops the tokens a change invalidates.
    /// Returns the token issued. JWTs are signed by the member that answers, and outlive
    /// changes (their auth revision makes them stale instead).
    pub fn applied(
        &self,
        effect: &AuthApplied,
        prefix: Option<String>,
        index: u64,
    ) -> Option<String> {
        let Tokens::Simple(simple) = self else {
            return None;
        };
        match effect {
            AuthApplied::Authenticated { name } => {
                let token = SimpleTokens::token(&prefix?, index);
                simple.assign(token.clone(), name.clone(), Instant::now());
                Some(token)
            }
            AuthApplied::UserInvalidated { name } => {
                simple.invalidate_user(name);
                None
            }
            AuthApplied::AllInvalidated => {
                simple.clear();
                None
            }
            AuthApplied::Done => None,
        }
    }

    /// The random part of a new simple token ("" for JWT, as etcd).
    pub fn new_prefix(&self) -> String {
        match self {
            Tokens::Simple(_) => random_letters(16),
            Tokens::Jwt(_) => String::new(),
        }
    }
}

fn random_letters(n: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| LETTERS[rng.gen_range(0..LETTERS.len())] as char)
        .collect()
}

struct Held {
    user: String,
    expires: Instant,
}

/// Simple tokens: issued on every member when the Authenticate entry applies, lost on restart.
pub struct SimpleTokens {
    ttl: Duration,
    held: Mutex<HashMap<String, Held>>,
}

impl SimpleTokens {
    /// Tokens valid for `ttl` after their last use.
    pub fn new(ttl: Duration) -> Self {
        SimpleTokens {
            ttl: if ttl.is_zero() {
                DEFAULT_SIMPLE_TTL
            } else {
                ttl
            },
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The token the Authenticate entry at `index` with `prefix` issues.
    pub fn token(prefix: &str, index: u64) -> String {
        format!("{prefix}.{index}")
    }

    /// The entry index a token names (the member must have applied it to know the token).
    pub fn index_of(token: &str) -> Result<u64, AuthError> {
        let (prefix, index) = token.split_once('.').ok_or(AuthError::InvalidAuthToken)?;
        if prefix.is_empty() || index.contains('.') {
            return Err(AuthError::InvalidAuthToken);
        }
        index.parse().map_err(|_| AuthError::InvalidAuthToken)
    }

    /// Issues `token` to `user`.
    pub fn assign(&self, token: String, user: String, now: Instant) {
        let mut held = self.held.lock();
        if held.len() >= MAX_SIMPLE_TOKENS {
            held.retain(|_, h| h.expires > now);
        }
        if held.len() >= MAX_SIMPLE_TOKENS {
            if let Some(soonest) = held
                .iter()
                .min_by_key(|(_, h)| h.expires)
                .map(|(t, _)| t.clone())
            {
                held.remove(&soonest);
            }
        }
        held.insert(
            token,
            Held {
                user,
                expires: now + self.ttl,
            },
        );
    }

    /// The user `token` was issued to, its TTL renewed; None when unknown or expired.
    pub fn user(&self, token: &str, now: Instant) -> Option<String> {
        let mut held = self.held.lock();
        match held.get_mut(token) {
            Some(h) if h.expires > now => {
                h.expires = now + self.ttl;
                Some(h.user.clone())
            }
            Some(_) => {
                held.remove(token);
                None
            }
            None => None,
        }
    }

    /// Drops `user`'s tokens (deleted, or its password changed).
    pub fn invalidate_user(&self, user: &str) {
        self.held.lock().retain(|_, h| h.user != user);
    }

    /// Drops every token (auth disabled).
    pub fn clear(&self) {
        self.held.lock().clear();
    }

    /// Tokens held now.
    pub fn len(&self) -> usize {
        self.held.lock().len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an etcd JWT carries.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    exp: u64,
    revision: u64,
    username: String,
}

/// Signed tokens; without a private key, a member only verifies.
pub struct JwtTokens {
    algorithm: jsonwebtoken::Algorithm,
    signing: Option<jsonwebtoken::EncodingKey>,
    verifying: jsonwebtoken::DecodingKey,
    ttl: Duration,
}

impl JwtTokens {
    fn from_options(opts: &HashMap<String, String>) -> Result<Self, TokenOptionError> {
        use jsonwebtoken::{Algorithm as A, DecodingKey, EncodingKey};
        let method = opts
            .get("sign-method")
            .ok_or_else(|| TokenOptionError::Option("jwt needs sign-method".into()))?;
        let algorithm: A = method
            .parse()
            .map_err(|_| TokenOptionError::Option(format!("unknown sign-method {method:?}")))?;
        let ttl = match opts.get("ttl") {
            Some(t) => parse_duration(t).ok_or_else(|| {
                TokenOptionError::Option(format!("ttl {t:?} is not a duration like 5m"))
            })?,
            None => DEFAULT_JWT_TTL,
        };
        let read = |k: &str| -> Result<Option<Vec<u8>>, TokenOptionError> {
            opts.get(k)
                .map(|path| {
                    std::fs::read(path)
                        .map_err(|e| TokenOptionError::Key(format!("{k} {path}: {e}")))
                })
                .transpose()
        };
        let (private, public) = (read("priv-key")?, read("pub-key")?);
        let bad =
            |k: &str, e: jsonwebtoken::errors::Error| TokenOptionError::Key(format!("{k}: {e}"));
        let (signing, verifying) = match algorithm {
            A::HS256 | A::HS384 | A::HS512 => {
                let secret = private.ok_or_else(|| {
                    TokenOptionError::Option("HMAC signing needs priv-key".into())
                })?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            A::ES256 | A::ES384 => {
                let public = public
                    .ok_or_else(|| TokenOptionError::Option("ECDSA tokens need pub-key".into()))?;
                let signing = private
                    .map(|p| EncodingKey::from_ec_pem(&p).map_err(|e| bad("priv-key", e)))
                    .transpose()?;
                let verifying = DecodingKey::from_ec_pem(&public).map_err(|e| bad("pub-key", e))?;
                (signing, verifying)
            }
            A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => {
                let public = public
                    .ok_or_else(|| TokenOptionError::Option("RSA tokens need pub-key".into()))?;
                let signing = private
                    .map(|p| EncodingKey::from_rsa_pem(&p).map_err(|e| bad("priv-key", e)))
                    .transpose()?;
                let verifying =
                    DecodingKey::from_rsa_pem(&public).map_err(|e| bad("pub-key", e))?;
                (signing, verifying)
            }
            other => {
                return Err(TokenOptionError::Option(format!(
                    "sign-method {other:?} is not supported"
                )))
            }
        };
        Ok(JwtTokens {
            algorithm,
            signing,
            verifying,
            ttl,
        })
    }

    /// A token for `user` at auth `revision`, valid for the TTL.
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, AuthError> {
        let key = self.signing.as_ref().ok_or(AuthError::AuthFailed)?;
        let exp = SystemTime::now()
            .checked_add(self.ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            exp,
            revision,
            username: user.to_string(),
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::new(self.algorithm), &claims, key)
            .map_err(|_| AuthError::AuthFailed)
    }

    /// The user and auth revision a valid, unexpired token carries.
    pub fn verify(&self, token: &str) -> Result<(String, u64), AuthError> {
        let mut v = jsonwebtoken::Validation::new(self.algorithm);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &v)
            .map_err(|_| AuthError::InvalidAuthToken)?;
        Ok((data.claims.username, data.claims.revision))
    }
}

/// A Go-style duration of one unit: `300s`, `5m`, `1h`.
fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_tokens_expire_renew_and_are_invalidated() {
        let t = SimpleTokens::new(Duration::from_secs(10));
        let now = Instant::now();
        t.assign("abc.5".into(), "bob".into(), now);
        assert_eq!(
            t.user("abc.5", now + Duration::from_secs(9)),
            Some("bob".into())
        );
        // Renewed by that use.
        assert_eq!(
            t.user("abc.5", now + Duration::from_secs(18)),
            Some("bob".into())
        );
        assert_eq!(t.user("abc.5", now + Duration::from_secs(29)), None);
        t.assign("x.6".into(), "bob".into(), now);
        t.assign("y.7".into(), "amy".into(), now);
        t.invalidate_user("bob");
        assert_eq!(t.user("x.6", now), None);
        assert_eq!(t.user("y.7", now), Some("amy".into()));
        t.clear();
        assert!(t.is_empty());
    }

    #[test]
    fn a_simple_token_names_its_entry() {
        assert_eq!(SimpleTokens::index_of("RzNnXYthFOyRntsd.173"), Ok(173));
        for bad in ["", "abc", ".5", "a.b", "a.5.6", "a.-1"] {
            assert_eq!(
                SimpleTokens::index_of(bad),
                Err(AuthError::InvalidAuthToken),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_token_flag() {
        assert!(matches!(
            Tokens::from_flag("simple", Duration::ZERO),
            Ok(Tokens::Simple(_))
        ));
        assert!(Tokens::from_flag("paseto", Duration::ZERO).is_err());
        assert!(Tokens::from_flag("jwt,sign-method", Duration::ZERO).is_err());
        assert!(Tokens::from_flag("jwt,sign-method=RS256", Duration::ZERO).is_err());
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn hmac_tokens_carry_user_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, b"a secret of some length").unwrap();
        let spec = format!("jwt,priv-key={},sign-method=HS256,ttl=1m", key.display());
        let Ok(Tokens::Jwt(j)) = Tokens::from_flag(&spec, Duration::ZERO) else {
            panic!("jwt options refused")
        };
        let t = j.sign("bob", 7).unwrap();
        assert_eq!(j.verify(&t), Ok(("bob".into(), 7)));
        let mut forged = t.clone();
        forged.pop();
        assert_eq!(j.verify(&forged), Err(AuthError::InvalidAuthToken));
    }

    #[test]
    fn ecdsa_tokens_are_signed_with_the_private_key_and_checked_with_the_public_one() {
        let key = rcgen::KeyPair::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("jwt.key"), dir.path().join("jwt.pub"));
        std::fs::write(&private, key.serialize_pem()).unwrap();
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let both = format!(
            "jwt,pub-key={},priv-key={},sign-method=ES256",
            public.display(),
            private.display()
        );
        let Ok(Tokens::Jwt(signer)) = Tokens::from_flag(&both, Duration::ZERO) else {
            panic!("ES256 options refused")
        };
        let t = signer.sign("bob", 3).unwrap();
        assert_eq!(signer.verify(&t), Ok(("bob".into(), 3)));
        // A member given only the public key checks tokens but cannot issue them.
        let public_only = format!("jwt,pub-key={},sign-method=ES256", public.display());
        let Ok(Tokens::Jwt(checker)) = Tokens::from_flag(&public_only, Duration::ZERO) else {
            panic!("verify-only options refused")
        };
        assert_eq!(checker.verify(&t), Ok(("bob".into(), 3)));
        assert!(checker.sign("bob", 3).is_err());
        // Another key's signature is refused.
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&public, other.public_key_pem()).unwrap();
        let Ok(Tokens::Jwt(stranger)) = Tokens::from_flag(&public_only, Duration::ZERO) else {
            panic!("options refused")
        };
        assert_eq!(stranger.verify(&t), Err(AuthError::InvalidAuthToken));
    }
}
