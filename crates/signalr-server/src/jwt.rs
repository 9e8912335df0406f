//! JSON Web Token (JWT) bearer authentication: [`JwtAuthenticator`].

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::BoxFuture;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::auth::{AuthError, AuthRequest, Authenticator, User};

/// The clock skew tolerated on `exp` and `nbf` unless [`JwtAuthenticator::with_leeway`] says
/// otherwise, in seconds.
const DEFAULT_LEEWAY_SECS: u64 = 60;

/// Authenticates SignalR requests with JSON Web Tokens (ASP.NET `AddJwtBearer`), signed with
/// HMAC-SHA256 ([`hs256`](Self::hs256)) or RSA-SHA256 ([`rs256_pem`](Self::rs256_pem)).
///
/// The token is the request's bearer token: `Authorization: Bearer <jwt>` (sent by non-browser
/// clients and by browsers on negotiate, long polling and POSTs) or the `access_token` query
/// parameter (sent by browsers on WebSockets and Server-Sent Events, which cannot carry
/// headers; docs/protocol.md, "Authentication"). Both are always accepted; the header wins when both are present.
///
/// For each request:
/// * no token: `Ok(None)`, the request is anonymous (refused by a hub that
///   [requires authorization](crate::HubBuilder::require_authorization), 401);
/// * a valid token: `Ok(Some(user))`, an [authenticated](User::is_authenticated) [`User`] whose
///   [claims](User::claims) are **all** claims of the token's payload, unchanged (so `sub`
///   becomes the default [user identifier](crate::HubCallerContext::user_identifier), and
///   `role`, `email`, custom claims, ... are available to
///   [`AuthorizationPolicy::require`](crate::auth::AuthorizationPolicy::require) and hub methods);
/// * an invalid token: `Err`, the request gets 401 whether the hub requires authorization or
///   not.
///
/// A token is valid when:
/// * its signature verifies with the configured key and its header's `alg` is exactly the
///   configured algorithm (`HS256` or `RS256`; `none` and every other algorithm are refused);
/// * it has an `exp` (expiry, seconds since the Unix epoch) that has not passed;
/// * its `nbf` (not before), when present, has passed;
/// * its `iss` is one of the issuers given to [`with_issuer`](Self::with_issuer), when any was
///   given (a token without `iss` is then refused);
/// * its `aud` (a string or an array of strings) contains one of the audiences given to
///   [`with_audience`](Self::with_audience), when any was given (a token without `aud` is then
///   refused). Without `with_audience`, `aud` is not checked.
///
/// `exp` and `nbf` are compared with the system clock, tolerating a clock skew of 60 seconds by
/// default (see [`with_leeway`](Self::with_leeway)).
///
/// ```
/// use signalr_server::{Hub, HubCallerContext, auth::{AuthorizationPolicy, JwtAuthenticator}};
///
/// let hub = Hub::builder()
///     // Only requests with a valid token reach this hub: others get 401.
///     .authenticator(JwtAuthenticator::hs256(b"secret").with_issuer("https://issuer.example"))
///     .require_authorization(AuthorizationPolicy::authenticated())
///     // JS: await connection.invoke("WhoAmI") resolves to "alice"
///     .method("WhoAmI", |hub: HubCallerContext| async move {
///         hub.user().claim("sub").unwrap_or_default()
///     })
///     .build();
/// let app = axum::Router::new().nest("/chat", hub.router());
/// # drop(app);
///
/// // Issuing a token for a client (e.g. from a login endpoint). `exp` is required.
/// let exp = std::time::SystemTime::now()
///     .duration_since(std::time::UNIX_EPOCH)
///     .expect("clock after 1970")
///     .as_secs()
///     + 3600;
/// let claims = serde_json::json!({"sub": "alice", "iss": "https://issuer.example", "exp": exp});
/// let token = JwtAuthenticator::encode_hs256(b"secret", &claims).expect("token");
/// // JS: new HubConnectionBuilder().withUrl("/chat", { accessTokenFactory: () => token })
///
/// let user = JwtAuthenticator::hs256(b"secret").validate(&token).expect("valid token");
/// assert_eq!(user.claim("sub").as_deref(), Some("alice"));
/// assert!(JwtAuthenticator::hs256(b"other secret").validate(&token).is_err());
/// ```
///
/// Signatures are verified with the pure-Rust RustCrypto backend of the `jsonwebtoken` crate
/// (its `rust_crypto` feature); no system OpenSSL is needed.
#[derive(Clone, Debug)]
pub struct JwtAuthenticator {
    key: DecodingKey,
    validation: Validation,
}

impl JwtAuthenticator {
    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        // Required and checked: `exp` (the `Validation` default). Checked when present: `nbf`.
        validation.validate_nbf = true;
        // Checked only once an audience is configured (`with_audience`).
        validation.validate_aud = false;
        validation.leeway = DEFAULT_LEEWAY_SECS;
        JwtAuthenticator { key, validation }
    }

    /// An authenticator for tokens signed with HMAC-SHA256 (`"alg": "HS256"`) and the shared
    /// `secret` (the raw key bytes, not base64; use a long random secret, at least 32 bytes).
    ///
    /// Tokens for it can be issued with [`JwtAuthenticator::encode_hs256`] and the same secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// An authenticator for tokens signed with RSA PKCS#1 v1.5 and SHA-256 (`"alg": "RS256"`),
    /// verified with the issuer's RSA public key.
    ///
    /// `public_key_pem` is the PEM text of the public key, either SubjectPublicKeyInfo
    /// (`-----BEGIN PUBLIC KEY-----`, what `openssl pkey -pubout` writes) or PKCS#1
    /// (`-----BEGIN RSA PUBLIC KEY-----`).
    ///
    /// # Errors
    /// [`AuthError`] when `public_key_pem` is not PEM, is a private key, a certificate or
    /// another kind of PEM document, or holds a key that is not RSA.
    pub fn rs256_pem(public_key_pem: &[u8]) -> Result<Self, AuthError> {
        match pem_label(public_key_pem) {
            Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
            Some(label) => {
                return Err(AuthError(format!(
                    "expected an RSA public key PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`), got `{label}`"
                )));
            }
            None => {
                return Err(AuthError(
                    "expected an RSA public key PEM, found no `-----BEGIN ...-----` line".into(),
                ));
            }
        }
        let key = DecodingKey::from_rsa_pem(public_key_pem)
            .map_err(|err| AuthError(format!("invalid RSA public key PEM: {err}")))?;
        Ok(Self::new(key, Algorithm::RS256))
    }

    /// Also requires the token's `iss` claim to be `issuer` (compared exactly, case-sensitive).
    ///
    /// Once called, tokens without `iss` are refused. Calling it again adds another accepted
    /// issuer: the token's `iss` must then be one of them.
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.validation
            .iss
            .get_or_insert_with(HashSet::new)
            .insert(issuer.to_owned());
        self.validation
            .required_spec_claims
            .insert("iss".to_owned());
        self
    }

    /// Also requires the token's `aud` claim (a string, or an array of strings of which one
    /// must match) to contain `audience` (compared exactly, case-sensitive).
    ///
    /// Once called, tokens without `aud` are refused. Calling it again adds another accepted
    /// audience: the token must name at least one of them.
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.validation
            .aud
            .get_or_insert_with(HashSet::new)
            .insert(audience.to_owned());
        self.validation.validate_aud = true;
        self.validation
            .required_spec_claims
            .insert("aud".to_owned());
        self
    }

    /// The clock skew tolerated when checking `exp` and `nbf`: a token is still accepted
    /// `leeway` after its `exp`, and already `leeway` before its `nbf`. Default: 60 seconds.
    ///
    /// JWT times are whole seconds, so `leeway` is truncated to whole seconds
    /// ([`Duration::ZERO`] for no tolerance). It is capped at the time elapsed since the Unix
    /// epoch.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        // `jsonwebtoken` computes `now - leeway` in `u64`: keep it from underflowing.
        self.validation.leeway = leeway.as_secs().min(jsonwebtoken::get_current_timestamp());
        self
    }

    /// Validates `token` (a compact JWT, `header.payload.signature`, without `Bearer `) as a
    /// request would be, and returns its user: authenticated, with all claims of the payload.
    ///
    /// # Errors
    /// [`AuthError`] describing why the token is invalid: malformed, wrong algorithm, bad
    /// signature, expired, not yet valid, missing `exp` (or `iss`/`aud` when required), wrong
    /// issuer or audience, or a payload that is not a JSON object.
    pub fn validate(&self, token: &str) -> Result<User, AuthError> {
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map(|data| User::authenticated(data.claims))
            .map_err(|err| AuthError(describe(&err)))
    }

    /// Issues a token signed with HMAC-SHA256 and `secret`, that
    /// [`JwtAuthenticator::hs256`] with the same secret accepts (given a future `exp`, and the
    /// expected `iss`/`aud` if any are configured).
    ///
    /// `claims` is the payload, a JSON object, written as it is: nothing is added, so include
    /// `exp` (seconds since the Unix epoch) and whatever identifies the user (`sub`, `name`,
    /// `role`, ...). The header is `{"typ":"JWT","alg":"HS256"}`. Returns the compact
    /// serialization `header.payload.signature` (base64url, no padding), ready for
    /// `Authorization: Bearer <token>` or `?access_token=<token>`.
    ///
    /// # Errors
    /// [`AuthError`] when `claims` is not a JSON object (RFC 7519 requires one).
    pub fn encode_hs256(secret: &[u8], claims: &Value) -> Result<String, AuthError> {
        if !claims.is_object() {
            return Err(AuthError("JWT claims must be a JSON object".into()));
        }
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .map_err(|err| AuthError(format!("cannot sign JWT: {err}")))
    }
}

impl Authenticator for JwtAuthenticator {
    /// `Ok(None)` without a bearer token, `Ok(Some(user))` for a valid one, `Err` (401) for an
    /// invalid one; see [`JwtAuthenticator::validate`].
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Option<User>, AuthError>> {
        let result = request.token.map(|token| self.validate(token)).transpose();
        Box::pin(std::future::ready(result))
    }
}

/// A log-friendly reason for a rejected token.
fn describe(err: &jsonwebtoken::errors::Error) -> String {
    let reason = match err.kind() {
        ErrorKind::ExpiredSignature => "token expired (exp)".to_owned(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidSignature => "invalid signature".to_owned(),
        ErrorKind::InvalidAlgorithm => "unexpected signing algorithm".to_owned(),
        ErrorKind::InvalidIssuer => "unexpected issuer (iss)".to_owned(),
        ErrorKind::InvalidAudience => "unexpected audience (aud)".to_owned(),
        ErrorKind::InvalidToken => "malformed token".to_owned(),
        _ => err.to_string(),
    };
    format!("invalid JWT: {reason}")
}

/// The label of the first `-----BEGIN <label>-----` line of a PEM document.
fn pem_label(pem: &[u8]) -> Option<&str> {
    const BEGIN: &str = "-----BEGIN ";
    let text = std::str::from_utf8(pem).ok()?;
    let rest = &text[text.find(BEGIN)? + BEGIN.len()..];
    Some(&rest[..rest.find("-----")?])
}
