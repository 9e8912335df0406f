//! The HTTP application: hubs, the raw echo connection, and the helper endpoints and middleware of
//! the ASP.NET test server (`Startup.cs` of the functional tests).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use signalr_server::{
    ConnectionOptions, Hub, HubContext, TransportType, classic_router,
    error::ClientResultError,
    raw::{RawConnection, connection_router},
};

use crate::authorized_hub::{self, DEFAULT_USER, TokenIssuer};
use crate::{classic_hub, test_hub};

/// State shared by the helper endpoints.
#[derive(Clone)]
struct AppState {
    /// The `TestHub` contexts (one per endpoint, as their transports differ), for
    /// `/clientresult/{id}`.
    test_hubs: Arc<[HubContext]>,
    issuer: TokenIssuer,
    /// The classic `TestHub`, for `/broadcast`.
    classic_test_hub: HubContext,
    /// Redirects answered so far (`numRedirects` of the redirect URL).
    redirects: Arc<AtomicU64>,
}

/// The whole application, with `chat` (see `chat_hub.rs`) at `/chat`.
pub fn app(chat: Hub) -> Router {
    let all = test_hub::test_hub(vec![
        TransportType::WebSockets,
        TransportType::ServerSentEvents,
        TransportType::LongPolling,
    ]);
    let no_websockets = test_hub::test_hub(vec![
        TransportType::ServerSentEvents,
        TransportType::LongPolling,
    ]);
    let stateful = test_hub::stateful_test_hub();
    let issuer = TokenIssuer::new();
    let authorized = authorized_hub::authorized_hub(&issuer);
    let classic_test = classic_hub::test_hub();
    let classic = classic_router([
        &classic_test,
        &classic_hub::renamed_hub(),
        &classic_hub::secret_hub(),
    ]);
    let state = AppState {
        test_hubs: Arc::new([all.context(), no_websockets.context(), stateful.context()]),
        classic_test_hub: classic_test.context(),
        issuer,
        redirects: Arc::default(),
    };

    let helpers = Router::new()
        .route("/", get(index))
        .route("/generateJwtToken", get(generate_jwt_token))
        .route("/clientresult/{id}", get(client_result))
        .route("/broadcast", get(broadcast))
        .route("/redirect", any(redirect))
        .route("/redirect/{*rest}", any(redirect))
        .route("/bad-negotiate", any(bad_negotiate))
        .route("/bad-negotiate/{*rest}", any(bad_negotiate))
        .route("/echoredirect", any(echo_redirect))
        .route("/echoredirect/{*rest}", any(echo_redirect))
        .with_state(state);

    helpers
        .nest("/testhub", all.router())
        .nest("/testhub-nowebsockets", no_websockets.router())
        .nest("/testhub-stateful", stateful.router())
        .nest("/authorizedhub", authorized.router())
        .nest("/chat", chat.router())
        .nest("/signalr", classic)
        .nest(
            "/echo",
            connection_router(ConnectionOptions::default(), echo),
        )
        .layer(middleware::from_fn(negotiate_cookies))
        .layer(middleware::from_fn(cors))
}

/// `GET /broadcast?msg=M`: `broadcast(M)` to every classic `TestHub` client, through the hub
/// context (from outside any hub method). 503 when the hub's lifetime manager refused the
/// message.
async fn broadcast(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> (StatusCode, &'static str) {
    let message = query.get("msg").cloned().unwrap_or_default();
    match state
        .classic_test_hub
        .clients()
        .all()
        .send("broadcast", (message,))
        .await
    {
        Ok(()) => (StatusCode::OK, "sent\n"),
        Err(err) => {
            tracing::warn!(%err, "GET /broadcast: the message was not sent");
            (StatusCode::SERVICE_UNAVAILABLE, "not sent\n")
        }
    }
}

/// ASP.NET's `EchoConnectionHandler`: sends back every chunk it receives.
async fn echo(mut connection: RawConnection) {
    while let Some(data) = connection.receive().await {
        if !connection.send(data).await {
            break;
        }
    }
}

async fn index() -> impl IntoResponse {
    let mut text = String::from(
        "SignalR conformance server (Rust)\n\n\
         Endpoints: /testhub (all transports), /testhub-nowebsockets (SSE, long polling),\n\
         /testhub-stateful (stateful reconnect allowed),\n\
         /authorizedhub (JWT from GET /generateJwtToken[?user=NAME]), /redirect, /bad-negotiate,\n\
         /echo (raw connection), /echoredirect, GET /clientresult/{connectionId}\n\nTestHub methods:\n",
    );
    for method in test_hub::METHODS {
        text.push_str("  ");
        text.push_str(method);
        text.push('\n');
    }
    text.push_str("\nAuthorized hub methods:\n");
    for method in authorized_hub::METHODS {
        text.push_str("  ");
        text.push_str(method);
        text.push('\n');
    }
    text
}

/// `GET /generateJwtToken[?user=NAME]`: a token for `/authorizedhub`.
async fn generate_jwt_token(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let user = query
        .get("user")
        .filter(|u| !u.is_empty())
        .map_or(DEFAULT_USER, String::as_str);
    match state.issuer.token(user) {
        Ok(token) => token.into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// `GET /clientresult/{id}`: invokes `Result` on the `TestHub` connection `id` and answers the
/// integer it returns, or the error's text (status 200 either way, as ASP.NET's test server).
async fn client_result(State(state): State<AppState>, Path(id): Path<String>) -> String {
    let mut outcome = Err(ClientResultError::UnknownConnection(id.clone()));
    for hub in state.test_hubs.iter() {
        outcome = hub
            .clients()
            .client(id.as_str())
            .invoke::<i32>("Result", ())
            .await;
        if !matches!(outcome, Err(ClientResultError::UnknownConnection(_))) {
            break;
        }
    }
    match outcome {
        Ok(value) => value.to_string(),
        Err(err) => {
            tracing::info!(connection_id = %id, error = %err, "client result failed");
            err.to_string()
        }
    }
}

/// Any request under `/redirect`: a negotiate redirect to
/// `<baseUrl>/<hub>?numRedirects=<N>` with an access token. `baseUrl` defaults to this server,
/// `hub` to `testhub` (`testhub-nowebsockets`, `testhub-stateful` and `authorizedhub` are the others).
async fn redirect(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let hub = query.get("hub").map_or("testhub", String::as_str);
    if ![
        "testhub",
        "testhub-nowebsockets",
        "testhub-stateful",
        "authorizedhub",
    ]
    .contains(&hub)
    {
        return (StatusCode::BAD_REQUEST, format!("unknown hub '{hub}'")).into_response();
    }
    let base = match query.get("baseUrl").filter(|b| !b.is_empty()) {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            format!("http://{host}")
        }
    };
    let count = state.redirects.fetch_add(1, Ordering::Relaxed) + 1;
    let token = match state.issuer.token(DEFAULT_USER) {
        Ok(token) => token,
        Err(err) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response();
        }
    };
    let body = serde_json::json!({
        "url": format!("{base}/{hub}?numRedirects={count}"),
        "accessToken": token,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Any request under `/bad-negotiate`: 400 with a text body.
async fn bad_negotiate() -> Response {
    (StatusCode::BAD_REQUEST, "Some response from server").into_response()
}

/// Any request under `/echoredirect`: 307 to the same path and query under `/echo`.
async fn echo_redirect(uri: Uri) -> Response {
    let path = uri.path().replacen("echoredirect", "echo", 1);
    let location = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// Negotiate responses set `testCookie`, `testCookie2` and an expired `expiredCookie`.
async fn negotiate_cookies(request: Request, next: Next) -> Response {
    // Only the Core endpoints: the classic one at /signalr answers as SignalR 2.4 does.
    let path = request.uri().path();
    let negotiate = path.contains("/negotiate") && !path.starts_with("/signalr/");
    let mut response = next.run(request).await;
    if negotiate {
        let headers = response.headers_mut();
        for cookie in [
            "testCookie=testValue; path=/",
            "testCookie2=testValue2; path=/",
            "expiredCookie=doesntmatter; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/",
        ] {
            headers.append(header::SET_COOKIE, HeaderValue::from_static(cookie));
        }
    }
    response
}

/// The test server's permissive CORS: echo the `Origin` with credentials allowed, allow the
/// requested method and headers, and answer every `OPTIONS` with 204.
async fn cors(request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let method = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .cloned();
    let request_headers = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if let Some(method) = method {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, method);
        }
        if let Some(request_headers) = request_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, request_headers);
        }
    }
    response
}
