//! The `Idempotency-Key` request header: a change sent again with the key of an earlier one
//! answers what that one answered and changes nothing. The providers of the collection keep
//! the answers in their store (see `ResourceRequest::idempotent`); this layer reads and checks
//! the header and scopes the key to the caller, so two users' keys never meet.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::visibility;

/// The header's name.
pub(crate) const HEADER: &str = "idempotency-key";
/// Longest key accepted (bytes).
pub(crate) const MAX_KEY_BYTES: usize = 255;

/// The `Idempotency-Key` of a request, if it has one: 1 to 255 visible ASCII characters (400
/// otherwise).
#[derive(Debug, Clone, Default)]
pub(crate) struct IdempotencyKey(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<IdempotencyKey, ApiError> {
        let mut values = parts.headers.get_all(HEADER).iter();
        let Some(v) = values.next() else {
            return Ok(IdempotencyKey(None));
        };
        if values.next().is_some() {
            return Err(ApiError::bad_request("one Idempotency-Key header at most"));
        }
        let ok = !v.is_empty()
            && v.len() <= MAX_KEY_BYTES
            && v.as_bytes().iter().all(u8::is_ascii_graphic);
        match v.to_str() {
            Ok(key) if ok => Ok(IdempotencyKey(Some(key.to_owned()))),
            _ => Err(ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters"
            ))),
        }
    }
}

impl IdempotencyKey {
    /// The key as sent to the provider: prefixed by a digest of the caller's identity (signed-in
    /// user or token subject; anonymous callers share one scope).
    pub(crate) fn scoped(&self, who: &Principal) -> Option<String> {
        let key = self.0.as_deref()?;
        let user = visibility::user_of(who).unwrap_or("");
        let digest = Sha256::digest(format!("user:{user}").as_bytes());
        let scope: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("{scope}:{key}"))
    }
}
