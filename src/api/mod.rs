//! The HTTP endpoint: `/metrics` (Prometheus text) and `/healthz`.
//! The query API over the store arrives here in a later issue.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// The routes.
pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(healthz))
        .layer(axum::middleware::from_fn(observe))
}

/// Route templates pre-registered in the API metrics.
pub const ROUTES: &[&str] = &["/metrics", "/healthz", "unmatched"];

/// Counts every request by route template (never the raw path) and status
/// class, and times it.
async fn observe(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| ROUTES.iter().copied().find(|r| *r == p.as_str()).unwrap_or("other"));
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let class = match resp.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::API_REQUESTS.with_label_values(&[route, class]).inc();
    metrics::API_SECONDS.with_label_values(&[route]).observe(start.elapsed().as_secs_f64());
    resp
}

async fn serve_metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics::render())
}

/// Liveness and a glance at progress: the process answers, whether the
/// relay connection is open, and the cursor.
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "connected": metrics::CONNECTED.get() == 1,
        "cursor": metrics::CURSOR.get(),
        "cursor_committed": metrics::CURSOR_COMMITTED.get(),
    }))
}

/// Serves until `cancel`.
pub async fn serve(listener: TcpListener, cancel: CancellationToken) {
    let shutdown = async move { cancel.cancelled().await };
    if let Err(e) = axum::serve(listener, router()).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
