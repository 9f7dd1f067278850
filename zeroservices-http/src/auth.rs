//! Authentication and authorization: an [`Auth`] trait deciding per request (principal,
//! collection, action), with [`AllowAll`] (the default), [`BasicAuth`] and [`JwtAuth`]
//! (Bearer tokens, HS256 or RS256).
//!
//! Browsers cannot set headers on a websocket, so `/realtime` also accepts the credentials in
//! the `token` query parameter (the value of the Authorization header without the scheme).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use base64::Engine;
use subtle::ConstantTimeEq;

use zeroservices_core::resources::Action;

use crate::error::ApiError;
use crate::AppState;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// An authenticated user.
    User(String),
    /// A verified token: its subject, the grants it carries and when it expires.
    Token {
        /// The `sub` claim.
        subject: String,
        /// `(collection or "*", action or "*")` pairs from the `grants` claim.
        grants: Vec<(String, String)>,
        /// The `exp` claim (seconds since the Unix epoch): a websocket opened with this token
        /// is closed with code 4401 at that time unless it sends a fresh token first.
        expires_at: u64,
    },
}

impl Principal {
    /// When these credentials stop being valid (seconds since the Unix epoch), if ever.
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Principal::Token { expires_at, .. } => Some(*expires_at),
            _ => None,
        }
    }
}

/// What a caller asks to do on a collection, as [`Auth::authorize`] sees it. Grants name it
/// by [`Access::name`] (`"list"`, `"create"`, a custom action's name, or `"subscribe"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// A resource action, standard or custom.
    Action(&'a Action),
    /// Receiving the collection's events on `/realtime`.
    Subscribe,
}

impl Access<'_> {
    /// The name grants use.
    pub fn name(&self) -> &str {
        match self {
            Access::Action(a) => a.as_str(),
            Access::Subscribe => "subscribe",
        }
    }
}

impl fmt::Display for Access<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decides who a request comes from and what they may do.
pub trait Auth: Send + Sync + fmt::Debug + 'static {
    /// Identifies the caller from the `Authorization` header value (or the websocket `token`).
    /// Bad credentials are 401.
    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError>;
    /// Allows or refuses (401 for anonymous, 403 otherwise) an access to a collection. The
    /// websocket asks for [`Access::Subscribe`] with the topic's collection (or `*`).
    fn authorize(
        &self,
        who: &Principal,
        collection: &str,
        access: Access<'_>,
    ) -> Result<(), ApiError>;
}

/// Everyone may do everything (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Auth for AllowAll {
    fn authenticate(&self, _: Option<&str>) -> Result<Principal, ApiError> {
        Ok(Principal::Anonymous)
    }
    fn authorize(&self, _: &Principal, _: &str, _: Access<'_>) -> Result<(), ApiError> {
        Ok(())
    }
}

/// HTTP Basic users, each with grants `(collection or "*", action or "*")`. Anonymous callers
/// get only the grants of user `""` (none unless configured).
#[derive(Debug, Default, Clone)]
pub struct BasicAuth {
    /// Per user: the SHA-256 of the password (compared in constant time, whatever the
    /// lengths) and the grants.
    users: HashMap<String, (Digest, Vec<(String, String)>)>,
    anonymous: Vec<(String, String)>,
}

/// A password's SHA-256.
type Digest = [u8; 32];

fn digest(password: &str) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(password.as_bytes()).into()
}

/// What an unknown user's password is compared with, so that the answer for an unknown user
/// takes as long as a wrong password does.
fn dummy() -> &'static Digest {
    static DUMMY: std::sync::OnceLock<Digest> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| digest("zeroservices: no such user"))
}

impl BasicAuth {
    /// No users yet.
    pub fn new() -> BasicAuth {
        BasicAuth::default()
    }
    /// Adds a user with a password and grants such as `("power", "*")` or `("*", "get")`.
    pub fn user(mut self, name: &str, password: &str, grants: &[(&str, &str)]) -> BasicAuth {
        let g = grants
            .iter()
            .map(|(c, a)| (c.to_string(), a.to_string()))
            .collect();
        self.users.insert(name.to_owned(), (digest(password), g));
        self
    }
    /// Grants for callers without credentials, e.g. `[("*", "list"), ("*", "get")]`.
    pub fn anonymous(mut self, grants: &[(&str, &str)]) -> BasicAuth {
        self.anonymous = grants
            .iter()
            .map(|(c, a)| (c.to_string(), a.to_string()))
            .collect();
        self
    }
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
}

fn granted(grants: &[(String, String)], collection: &str, action: &str) -> bool {
    grants
        .iter()
        .any(|(c, a)| (c == "*" || c == collection) && (a == "*" || a == action))
}

/// The decision shared by every grant-based auth: allowed, 401 for anonymous, 403 otherwise.
fn decide(
    grants: &[(String, String)],
    who: &Principal,
    collection: &str,
    action: &str,
) -> Result<(), ApiError> {
    if granted(grants, collection, action) {
        Ok(())
    } else if *who == Principal::Anonymous {
        Err(unauthorized("credentials required"))
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("not allowed to {action} on {collection}"),
        ))
    }
}

impl Auth for BasicAuth {
    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let Some(value) = authorization else {
            return Ok(Principal::Anonymous);
        };
        let encoded = value.strip_prefix("Basic ").unwrap_or(value).trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| unauthorized("malformed Basic credentials"))?;
        let text =
            String::from_utf8(decoded).map_err(|_| unauthorized("malformed Basic credentials"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
        let (known, expected) = match self.users.get(user) {
            Some((d, _)) => (true, d),
            None => (false, dummy()),
        };
        // Hashed and compared whether or not the user exists: equal work either way.
        let same = bool::from(expected.ct_eq(&digest(pass)));
        if known && same {
            Ok(Principal::User(user.to_owned()))
        } else {
            Err(unauthorized("wrong user or password"))
        }
    }

    fn authorize(
        &self,
        who: &Principal,
        collection: &str,
        access: Access<'_>,
    ) -> Result<(), ApiError> {
        let grants = match who {
            Principal::Anonymous | Principal::Token { .. } => &self.anonymous,
            Principal::User(u) => self.users.get(u).map(|(_, g)| g).unwrap_or(&self.anonymous),
        };
        decide(grants, who, collection, access.name())
    }
}

/// Bearer JWTs (HS256 with a shared secret, or RS256 with a public key). The token's `grants`
/// claim lists `"collection/action"` strings (`*` for any); `exp` is required, and `exp` and
/// `nbf` are checked without leeway (keep the clocks of issuer and nodes in sync). `iss` and
/// `aud` are checked when [`JwtAuth::issuer`] / [`JwtAuth::audience`] are set; a token with an
/// `aud` claim is refused by a node that names no audience. Callers without a token get the
/// `anonymous` grants.
///
/// ```
/// use zeroservices_http::JwtAuth;
/// let auth = JwtAuth::hs256(b"a-long-shared-secret-for-tokens")
///     .issuer("https://login.example.com")
///     .audience("power-api")
///     .anonymous(&[("*", "get")]);
/// # drop(auth);
/// ```
pub struct JwtAuth {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    anonymous: Vec<(String, String)>,
}

impl fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    grants: Vec<String>,
}

impl JwtAuth {
    /// Tokens signed with HS256 and this secret.
    pub fn hs256(secret: &[u8]) -> JwtAuth {
        JwtAuth::with(
            jsonwebtoken::DecodingKey::from_secret(secret),
            jsonwebtoken::Algorithm::HS256,
        )
    }

    /// Tokens signed with RS256; `public_pem` is the RSA public key (PEM).
    pub fn rs256(public_pem: &[u8]) -> Result<JwtAuth, String> {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem)
            .map_err(|e| format!("invalid RSA public key: {e}"))?;
        Ok(JwtAuth::with(key, jsonwebtoken::Algorithm::RS256))
    }

    fn with(key: jsonwebtoken::DecodingKey, alg: jsonwebtoken::Algorithm) -> JwtAuth {
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        JwtAuth {
            key,
            validation,
            anonymous: Vec::new(),
        }
    }

    /// Accepts only tokens whose `iss` claim is `issuer` (and requires the claim).
    pub fn issuer(mut self, issuer: &str) -> JwtAuth {
        self.validation.set_issuer(&[issuer]);
        self.require("iss");
        self
    }

    /// Accepts only tokens whose `aud` claim names `audience` (and requires the claim).
    pub fn audience(mut self, audience: &str) -> JwtAuth {
        self.validation.set_audience(&[audience]);
        self.require("aud");
        self
    }

    fn require(&mut self, claim: &str) {
        let mut claims: Vec<String> = self
            .validation
            .required_spec_claims
            .iter()
            .cloned()
            .collect();
        claims.push(claim.to_owned());
        self.validation.set_required_spec_claims(&claims);
    }

    /// Grants for callers without a token.
    pub fn anonymous(mut self, grants: &[(&str, &str)]) -> JwtAuth {
        self.anonymous = grants
            .iter()
            .map(|(c, a)| (c.to_string(), a.to_string()))
            .collect();
        self
    }
}

impl Auth for JwtAuth {
    fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let Some(value) = authorization else {
            return Ok(Principal::Anonymous);
        };
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| unauthorized(&format!("invalid token: {e}")))?;
        let grants = data
            .claims
            .grants
            .iter()
            .filter_map(|g| g.split_once('/').map(|(c, a)| (c.to_owned(), a.to_owned())))
            .collect();
        Ok(Principal::Token {
            subject: data.claims.sub,
            grants,
            expires_at: data.claims.exp,
        })
    }

    fn authorize(
        &self,
        who: &Principal,
        collection: &str,
        access: Access<'_>,
    ) -> Result<(), ApiError> {
        let grants = match who {
            Principal::Token { grants, .. } => grants,
            _ => &self.anonymous,
        };
        decide(grants, who, collection, access.name())
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Principal, ApiError> {
        let header_value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_owned)
        });
        st.auth.authenticate(header_value.or(token.as_deref()))
    }
}

/// Shared auth object.
pub type SharedAuth = Arc<dyn Auth>;
