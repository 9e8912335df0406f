//! Users, authentication and authorization (ASP.NET `[Authorize]` on hubs and hub methods).
//!
//! An [`Authenticator`] turns the bearer token of a request (from `Authorization: Bearer` or, as
//! browsers must send it for WebSockets and Server-Sent Events, the `access_token` query
//! parameter; docs/protocol.md, "Authentication") into a [`User`]. An [`AuthorizationPolicy`] decides whether a user
//! may use a hub or a hub method.
//!
//! Where the server differs from ASP.NET, deliberately:
//! * the `access_token` query parameter counts only on the WebSocket upgrade and the SSE GET,
//!   the two requests browsers cannot put an `Authorization` header on; on negotiate, POST
//!   sends, long polls and DELETE it is ignored (a token leaked with a URL cannot be replayed);
//! * a request on an existing connection by another user than the connection's (see
//!   [`User::same_identity`]) gets 403, where ASP.NET goes on as the first user and logs a
//!   warning.
//!
//! A 401 carries `WWW-Authenticate: Bearer` (`Bearer error="invalid_token"` when credentials
//! were sent and rejected), as ASP.NET's JWT bearer handler answers.
//!
//! With the `jwt` feature (on by default), [`JwtAuthenticator`] validates JSON Web Tokens.

use std::sync::Arc;

#[cfg(feature = "jwt")]
pub use crate::jwt::JwtAuthenticator;

use axum::http::HeaderMap;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

/// The claim ASP.NET's default user-id provider reads (`ClaimTypes.NameIdentifier`).
pub const NAME_IDENTIFIER_CLAIM: &str =
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier";

/// The user of a connection: its claims (ASP.NET `ClaimsPrincipal`). Anonymous when no
/// authenticator recognised the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    authenticated: bool,
    claims: Map<String, Value>,
}

impl User {
    /// An authenticated user with `claims` (e.g. the payload of a validated JWT).
    pub fn authenticated(claims: Map<String, Value>) -> Self {
        User {
            authenticated: true,
            claims,
        }
    }

    /// The anonymous user.
    pub fn anonymous() -> Self {
        User::default()
    }

    /// Whether an authenticator vouched for the user.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// All claims.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// A claim as a string (strings as they are, numbers and booleans formatted).
    pub fn claim(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        }
    }

    /// The default user identifier (ASP.NET `DefaultUserIdProvider`): the name-identifier claim,
    /// or `sub` (JWT handlers map `sub` to the name identifier by default).
    pub fn name_identifier(&self) -> Option<String> {
        self.claim(NAME_IDENTIFIER_CLAIM)
            .or_else(|| self.claim("sub"))
    }

    /// Whether `other` is the same person: both anonymous, or both authenticated with the same
    /// name identifier (or, without one, the same name). Claims that change when a token is
    /// refreshed (`exp`, `iat`, ...) do not matter.
    pub fn same_identity(&self, other: &User) -> bool {
        if self.authenticated != other.authenticated {
            return false;
        }
        if !self.authenticated {
            return true;
        }
        match (self.name_identifier(), other.name_identifier()) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.name() == other.name(),
            _ => false,
        }
    }

    /// The user's name: the `name` claim, or `unique_name`.
    pub fn name(&self) -> Option<String> {
        self.claim("name").or_else(|| self.claim("unique_name"))
    }
}

/// The credentials of one HTTP request to a hub endpoint.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The bearer token, from `Authorization: Bearer <token>` or, on WebSocket upgrades and SSE
    /// requests only, the `access_token` query parameter (the header wins).
    pub token: Option<&'a str>,
    /// All request headers (for cookie or custom schemes).
    pub headers: &'a HeaderMap,
}

/// The credentials were present but invalid (bad signature, expired, ...): the request gets 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed: {0}")]
pub struct AuthError(pub String);

/// Authenticates requests to hub endpoints.
///
/// Called for negotiate and for every transport request. `Ok(None)` means "no credentials"
/// (anonymous); `Err` means invalid credentials and answers 401.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one request.
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Option<User>, AuthError>>;
}

impl<F> Authenticator for F
where
    F: Fn(AuthRequest<'_>) -> Result<Option<User>, AuthError> + Send + Sync + 'static,
{
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Option<User>, AuthError>> {
        let result = self(request);
        Box::pin(async move { result })
    }
}

type Predicate = Arc<dyn Fn(&User) -> bool + Send + Sync>;

/// What a connect-authorization check
/// ([`HubBuilder::authorize_connect`](crate::HubBuilder::authorize_connect)) sees of a request:
/// its user, headers and query string.
#[derive(Debug, Clone, Copy)]
pub struct ConnectRequest<'a> {
    user: &'a User,
    headers: &'a HeaderMap,
    query: &'a str,
}

impl<'a> ConnectRequest<'a> {
    pub(crate) fn new(user: &'a User, headers: &'a HeaderMap, query: &'a str) -> Self {
        ConnectRequest {
            user,
            headers,
            query,
        }
    }

    /// The request's user (anonymous without authentication).
    pub fn user(&self) -> &'a User {
        self.user
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// A header value as text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query string, without `?`.
    pub fn query(&self) -> &'a str {
        self.query
    }

    /// A query parameter (percent-decoded), by exact name; the first when repeated.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// A connect-authorization check.
pub(crate) type ConnectAuthorization = Arc<dyn Fn(&ConnectRequest<'_>) -> bool + Send + Sync>;

/// Who may use a hub or a hub method (ASP.NET `[Authorize]` / `[Authorize(Policy = ...)]`).
#[derive(Clone)]
pub struct AuthorizationPolicy {
    predicate: Option<Predicate>,
}

impl std::fmt::Debug for AuthorizationPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationPolicy")
            .field("has_predicate", &self.predicate.is_some())
            .finish()
    }
}

impl AuthorizationPolicy {
    /// Any authenticated user (`[Authorize]`).
    pub fn authenticated() -> Self {
        AuthorizationPolicy { predicate: None }
    }

    /// An authenticated user for whom `predicate` holds, e.g. a role or claim check.
    pub fn require(predicate: impl Fn(&User) -> bool + Send + Sync + 'static) -> Self {
        AuthorizationPolicy {
            predicate: Some(Arc::new(predicate)),
        }
    }

    /// Whether `user` satisfies the policy.
    pub fn allows(&self, user: &User) -> bool {
        user.is_authenticated() && self.predicate.as_ref().is_none_or(|p| p(user))
    }
}

/// The bearer token of a request: `Authorization: Bearer`, else (when `query` is given) the
/// `access_token` query parameter.
pub(crate) fn bearer_token<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a [(String, String)]>,
) -> Option<&'a str> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    header.or_else(|| {
        query?
            .iter()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.as_str())
            .filter(|t| !t.is_empty())
    })
}
