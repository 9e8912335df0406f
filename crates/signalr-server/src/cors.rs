//! CORS for hubs used by browser pages on other origins, with tower-http's [`CorsLayer`].
//!
//! A hub router answers no CORS request by itself: like ASP.NET Core, where CORS is off until
//! `app.UseCors(...)` names a policy, a browser page on another origin cannot negotiate (default
//! deny). To let listed origins in, put a [`CorsLayer`] on the hub's router; [`cors_layer`]
//! returns one configured with what the official JavaScript client needs, the policy ASP.NET's
//! SignalR documentation recommends (`WithOrigins(...)`, `WithMethods("GET", "POST")`,
//! `AllowCredentials()`, the client's headers):
//!
//! ```
//! use axum::Router;
//! use signalr_server::{ConnectionOptions, Hub};
//!
//! let origins = ["https://app.example.com"];
//! let chat = Hub::builder()
//!     // WebSocket upgrades are not subject to CORS: refuse other origins' pages there too.
//!     .connection_options(ConnectionOptions {
//!         allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
//!         ..ConnectionOptions::default()
//!     })
//!     .build();
//! let app: Router = Router::new().nest("/chat", chat.router().layer(signalr_server::cors::cors_layer(origins)));
//! ```
//!
//! For another policy (more headers, another preflight cache time) build your own
//! [`CorsLayer`] from [`CORS_ALLOWED_METHODS`] and [`CORS_ALLOWED_HEADERS`], or change the one
//! [`cors_layer`] returns (each of its methods replaces that part of the policy).

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
pub use tower_http::cors::CorsLayer;
use tower_http::cors::{AllowOrigin, MaxAge};

/// The request methods the SignalR clients use on a hub's URLs: `POST` (negotiate, and messages
/// sent on Server-Sent Events and long-polling connections), `GET` (the event stream, polls,
/// the WebSocket upgrade) and `DELETE` (the JavaScript client ends a long-polling connection with
/// it; ASP.NET's documentation lists only `GET` and `POST`, and with them the browser refuses
/// that `DELETE`, so the server keeps the connection until its disconnect timeout).
pub const CORS_ALLOWED_METHODS: [Method; 3] = [Method::GET, Method::POST, Method::DELETE];

/// The request headers the official JavaScript client sends on cross-origin requests, which a
/// preflight must allow: `X-Requested-With` (every request), `X-SignalR-User-Agent` (every
/// request), `Authorization` (`accessTokenFactory`: `Bearer <token>` on negotiate and on
/// Server-Sent Events and long-polling requests) and `Content-Type` (`application/octet-stream`
/// on MessagePack POSTs, which is not a CORS-safelisted value). Headers given to the client's
/// `headers` option are not among them: add those to your own policy.
pub const CORS_ALLOWED_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-requested-with"),
    HeaderName::from_static("x-signalr-user-agent"),
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
];

/// How long a browser may reuse a preflight's answer, 10 minutes: without it Chromium asks
/// again after 5 s, which for long polling means a preflight before almost every poll.
pub const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// A [`CorsLayer`] that lets pages of exactly these `origins` (`scheme://host[:port]`, as
/// browsers send them in `Origin`, e.g. `"https://app.example.com"` or
/// `"http://127.0.0.1:8080"`) use a hub with every transport, cookies and tokens:
///
/// - `Access-Control-Allow-Origin`: the request's origin when it is listed; no CORS headers at
///   all for any other origin, so the browser refuses the response (an empty list refuses every
///   origin, as ASP.NET does without a CORS policy);
/// - `Access-Control-Allow-Credentials: true`: the client sends cookies (its `withCredentials`
///   defaults to `true`; with credentials a browser wants an exact origin, never `*`);
/// - methods [`CORS_ALLOWED_METHODS`], request headers [`CORS_ALLOWED_HEADERS`], preflight
///   answers cached for [`CORS_MAX_AGE`]; `Vary: origin, access-control-request-method,
///   access-control-request-headers`.
///
/// CORS only governs what a page may read: it does not stop WebSocket upgrades, which browsers
/// send from any page (with its cookies) without asking. List the same origins in
/// [`ConnectionOptions::allowed_origins`](crate::ConnectionOptions::allowed_origins), which
/// answers 403 to requests from other origins, including upgrades with skipped negotiation.
///
/// Layer it on the hub's router, `hub.router().layer(cors_layer([...]))` (or on the whole app).
/// Origins are compared byte for byte with the `Origin` header; browsers send the scheme and
/// host in lowercase and omit default ports.
///
/// # Panics
/// When an origin is `"*"` (browsers refuse a wildcard with credentials), has a path or a
/// trailing `/`, has no `scheme://`, or is not a valid header value. These are configuration
/// mistakes, found when the layer is made.
pub fn cors_layer<I>(origins: I) -> CorsLayer
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let origins: Vec<HeaderValue> = origins.into_iter().map(|o| origin(o.as_ref())).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods(CORS_ALLOWED_METHODS)
        .allow_headers(CORS_ALLOWED_HEADERS)
        .max_age(MaxAge::exact(CORS_MAX_AGE))
}

/// Checks one configured origin and turns it into the header value browsers send.
fn origin(origin: &str) -> HeaderValue {
    assert!(
        origin != "*",
        "cors_layer: \"*\" cannot be combined with credentials; list the origins"
    );
    let Some((_, rest)) = origin.split_once("://") else {
        panic!("cors_layer: origin {origin:?} has no scheme (expected scheme://host[:port])");
    };
    assert!(
        !rest.is_empty() && !rest.contains('/'),
        "cors_layer: origin {origin:?} is not scheme://host[:port] (no path, no trailing '/')"
    );
    HeaderValue::from_str(origin)
        .unwrap_or_else(|_| panic!("cors_layer: origin {origin:?} is not a valid header value"))
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::Hub;

    fn app() -> Router {
        Router::new().nest(
            "/chat",
            Hub::builder()
                .build()
                .router()
                .layer(cors_layer(["http://127.0.0.1:8080"])),
        )
    }

    fn preflight(origin: &str, method: &str, headers: &str) -> Request<Body> {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/chat/negotiate?negotiateVersion=1")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn get(response: &axum::response::Response, name: HeaderName) -> Option<&str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn preflight_of_a_listed_origin_allows_what_the_client_sends() {
        let response = app()
            .oneshot(preflight(
                "http://127.0.0.1:8080",
                "POST",
                "x-requested-with,x-signalr-user-agent,authorization",
            ))
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            get(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            get(&response, header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
            Some("true")
        );
        assert_eq!(
            get(&response, header::ACCESS_CONTROL_ALLOW_METHODS),
            Some("GET,POST,DELETE")
        );
        assert_eq!(
            get(&response, header::ACCESS_CONTROL_ALLOW_HEADERS),
            Some("x-requested-with,x-signalr-user-agent,authorization,content-type")
        );
        assert_eq!(get(&response, header::ACCESS_CONTROL_MAX_AGE), Some("600"));
    }

    #[tokio::test]
    async fn other_origins_get_no_cors_headers() {
        for origin in ["http://127.0.0.1:8081", "http://localhost:8080", "null"] {
            let response = app()
                .oneshot(preflight(origin, "POST", "x-requested-with"))
                .await
                .unwrap_or_else(|e| match e {});
            assert_eq!(get(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
            assert_eq!(
                get(&response, header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
                Some("true"),
                "tower-http sends this header to everyone; without Allow-Origin it allows nothing"
            );
        }
    }

    #[tokio::test]
    async fn negotiate_from_a_listed_origin_carries_the_headers() {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/chat/negotiate?negotiateVersion=1")
            .header(header::ORIGIN, "http://127.0.0.1:8080")
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let response = app().oneshot(request).await.unwrap_or_else(|e| match e {});
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            get(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            get(&response, header::VARY),
            Some("origin, access-control-request-method, access-control-request-headers")
        );
    }

    #[test]
    fn misconfigured_origins_panic() {
        for bad in [
            "*",
            "example.com",
            "https://example.com/",
            "https://a/b",
            "https://a\n",
        ] {
            let result = std::panic::catch_unwind(|| cors_layer([bad]));
            assert!(result.is_err(), "{bad:?} should be refused");
        }
        let _ = cors_layer(Vec::<String>::new());
    }
}
