//! What the browser loads: the demo's own pages, scripts and style (compiled into the binary from
//! `web/public/`), and the browser clients, served from the `node_modules` folder that `npm ci`
//! makes in `web/` (never from a CDN, never copied into the repository): the official
//! `@microsoft/signalr` bundles, and jQuery with the classic `jquery.signalR` 2.x client. The
//! classic client's generated hub proxy, `/signalr/hubs`, comes from the classic front door.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The demo's pages: URL path, file.
const PAGES: [(&str, &str); 5] = [
    ("/", include_str!("../web/public/index.html")),
    ("/chat", include_str!("../web/public/chat.html")),
    ("/stocks", include_str!("../web/public/stocks.html")),
    ("/shape", include_str!("../web/public/shape.html")),
    ("/status", include_str!("../web/public/status.html")),
];

/// The demo's scripts and style, under `/assets/`.
const ASSETS: [(&str, &str); 6] = [
    ("app.css", include_str!("../web/public/app.css")),
    ("common.js", include_str!("../web/public/common.js")),
    ("chat.js", include_str!("../web/public/chat.js")),
    ("stocks.js", include_str!("../web/public/stocks.js")),
    ("shape.js", include_str!("../web/public/shape.js")),
    ("status.js", include_str!("../web/public/status.js")),
];

/// The npm files served under `/lib/`: URL name, path inside `node_modules`.
pub const LIBRARIES: [(&str, &str); 6] = [
    (
        "signalr.min.js",
        "@microsoft/signalr/dist/browser/signalr.min.js",
    ),
    (
        "signalr.min.js.map",
        "@microsoft/signalr/dist/browser/signalr.min.js.map",
    ),
    (
        "signalr-protocol-msgpack.min.js",
        "@microsoft/signalr-protocol-msgpack/dist/browser/signalr-protocol-msgpack.min.js",
    ),
    (
        "signalr-protocol-msgpack.min.js.map",
        "@microsoft/signalr-protocol-msgpack/dist/browser/signalr-protocol-msgpack.min.js.map",
    ),
    ("jquery.min.js", "jquery/dist/jquery.min.js"),
    ("jquery.signalR.min.js", "signalr/jquery.signalR.min.js"),
];

/// The default `web/` folder: the one beside this crate's sources.
pub fn default_web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// The npm files missing from `web_dir`'s `node_modules` (empty when `npm ci` has run).
pub fn missing_libraries(web_dir: &Path) -> Vec<PathBuf> {
    LIBRARIES
        .iter()
        .map(|(_, file)| web_dir.join("node_modules").join(file))
        .filter(|path| !path.is_file())
        .collect()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("map") => "application/json",
        _ => "text/html; charset=utf-8",
    }
}

fn text(name: &str, body: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(name)),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match ASSETS.iter().find(|(file, _)| *file == name) {
        Some((file, body)) => text(file, body),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

async fn library(State(web_dir): State<Arc<PathBuf>>, UrlPath(name): UrlPath<String>) -> Response {
    let Some((_, file)) = LIBRARIES.iter().find(|(url, _)| *url == name) else {
        return (StatusCode::NOT_FOUND, "no such library file").into_response();
    };
    let path = web_dir.join("node_modules").join(file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(&name)),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            bytes,
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "browser client file missing");
            (
                StatusCode::NOT_FOUND,
                format!(
                    "{} is missing: run `npm ci` in {} (./scripts/demo.sh does)",
                    path.display(),
                    web_dir.display()
                ),
            )
                .into_response()
        }
    }
}

/// The routes of the pages, `/assets/*` and `/lib/*`.
pub fn router(web_dir: PathBuf) -> Router {
    let mut router = Router::new();
    for (path, body) in PAGES {
        router = router.route(path, get(move || async move { text("page.html", body) }));
    }
    router
        .route("/assets/{name}", get(asset))
        .route("/lib/{name}", get(library).with_state(Arc::new(web_dir)))
}
