//! `/authorizedhub` (ASP.NET's `HubWithAuthorization`, `[Authorize]` with a JWT bearer scheme that
//! requires a name-identifier claim) and `GET /generateJwtToken`, which issues tokens for it.

use std::time::{SystemTime, UNIX_EPOCH};

use signalr_server::{
    Hub, HubCallerContext, HubError,
    auth::{AuthorizationPolicy, JwtAuthenticator, NAME_IDENTIFIER_CLAIM},
    filter::LoggingFilter,
};

use crate::test_hub::hub_options;

/// The user of the tokens `/generateJwtToken` issues when no `user` is asked for.
pub const DEFAULT_USER: &str = "testuser";

/// How long issued tokens are valid.
const TOKEN_LIFETIME_SECS: u64 = 300;

/// Issues and checks the tokens of `/authorizedhub`; the key is random per process, as in the
/// ASP.NET test server.
#[derive(Clone)]
pub struct TokenIssuer {
    secret: [u8; 32],
}

impl TokenIssuer {
    /// A new issuer with a random key.
    pub fn new() -> Self {
        TokenIssuer {
            secret: rand::random(),
        }
    }

    /// A token for `user`: `sub` and the name-identifier claim, issuer `SignalRTestServer`,
    /// audience `SignalRTests`, valid for five minutes.
    pub fn token(&self, user: &str) -> Result<String, signalr_server::auth::AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = serde_json::json!({
            "sub": user,
            NAME_IDENTIFIER_CLAIM: user,
            "iss": "SignalRTestServer",
            "aud": "SignalRTests",
            "nbf": now,
            "exp": now + TOKEN_LIFETIME_SECS,
        });
        JwtAuthenticator::encode_hs256(&self.secret, &claims)
    }

    fn authenticator(&self) -> JwtAuthenticator {
        JwtAuthenticator::hs256(&self.secret)
    }
}

/// Builds the authorized hub: every request needs a valid token with a user identifier.
pub fn authorized_hub(issuer: &TokenIssuer) -> Hub {
    Hub::builder()
        .options(hub_options())
        .authenticator(issuer.authenticator())
        .require_authorization(AuthorizationPolicy::require(|user| {
            user.name_identifier().is_some()
        }))
        .filter(LoggingFilter)
        .method(
            "Echo",
            |_: HubCallerContext, message: Option<String>| async move { message },
        )
        .method("GetUserIdentifier", |hub: HubCallerContext| async move {
            hub.user_identifier().map(str::to_owned)
        })
        .method(
            "GetClaim",
            |hub: HubCallerContext, claim: String| async move { hub.user().claim(&claim) },
        )
        .method(
            "GetCallerConnectionId",
            |hub: HubCallerContext| async move { hub.connection_id().to_owned() },
        )
        .method(
            "SendToUser",
            |hub: HubCallerContext, user_id: String, message: String| async move {
                let from = hub.user_identifier().unwrap_or_default().to_owned();
                hub.clients()
                    .user(user_id)
                    .send("UserMessage", (from, message))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .build()
}

/// The methods of [`authorized_hub`], for the index page.
pub const METHODS: &[&str] = &[
    "Echo(message)",
    "GetUserIdentifier()",
    "GetClaim(type)",
    "GetCallerConnectionId()",
    "SendToUser(userId, message) -> that user's connections UserMessage(fromUserId, message)",
];
