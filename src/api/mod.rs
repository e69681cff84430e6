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
    Router::new().route("/metrics", get(serve_metrics)).route("/healthz", get(healthz))
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
