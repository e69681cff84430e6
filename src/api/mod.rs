//! The HTTP API: XRPC queries under `/xrpc/dev.instancemap.*` (lexicons in
//! `lexicons/dev/instancemap/`), `/openapi.json`, `/metrics` and `/healthz`.
//!
//! Reads go to RocksDB on the blocking pool (never on the async workers),
//! at most [`Limits::concurrency`] at once. Every error is
//! `{"error": "...", "message": "..."}` with its status. Limits: a timeout
//! per request, a cap on page size, a per-client token bucket, a cap on the
//! URI length; admin routes do nothing (404) unless a token is configured.

pub mod explorer;
pub mod openapi;
pub mod query;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::store::Store;

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest a request may take.
    pub timeout: Duration,
    /// Requests per second per client address (0: no limit); bursts up to
    /// twice that.
    pub rate_per_client: u32,
    /// Store reads in flight at once.
    pub concurrency: usize,
    /// Longest a client may take to send a request's headers (and the
    /// longest a kept-alive connection waits for its next request).
    pub header_timeout: Duration,
    /// Open connections at once, in all.
    pub max_connections: usize,
    /// Open connections at once from one client address.
    pub max_connections_per_client: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client: a request
    /// from one of them is keyed (rate limit) by the nearest address in
    /// that header that is not itself a trusted proxy. From any other
    /// address the header is ignored (a client cannot choose its key).
    pub trusted_proxies: Vec<IpAddr>,
    /// Serve a read on the async worker when everything it needs is in
    /// memory (the blocking pool only on a miss); off: always the pool.
    pub inline_reads: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(10),
            rate_per_client: 100,
            concurrency: 64,
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_client: 64,
            trusted_proxies: Vec::new(),
            inline_reads: true,
        }
    }
}

/// Largest page a list returns.
pub const MAX_LIMIT: usize = 1000;
/// Page size when none is asked.
pub const DEFAULT_LIMIT: usize = 100;
/// Longest URI accepted.
pub const MAX_URI: usize = 4096;
/// Clients tracked by the rate limiter at most (idle ones are dropped first).
const MAX_CLIENTS: usize = 65_536;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// `serve` on a copy: no writes (admin routes answer 501).
    pub read_only: bool,
    pub admin_token: Option<String>,
    pub limits: Limits,
    reads: Arc<Semaphore>,
    buckets: Arc<Mutex<HashMap<IpAddr, (f64, Instant)>>>,
    pub(crate) cache: Arc<query::Cache>,
    /// Where the admin routes' writes go: the single writer (`run`).
    pub(crate) writer: Option<crate::store::Writer>,
    /// The `--mmdb` databases (the network view), if any.
    pub networks: Option<Arc<crate::hosts::network::Networks>>,
}

/// `instancemap_api_reads_total` by path (`inline`, `missed_inline`,
/// `blocking`), looked up once rather than per request.
static READ_PATHS: std::sync::LazyLock<[prometheus::IntCounter; 3]> = std::sync::LazyLock::new(|| {
    ["inline", "missed_inline", "blocking"].map(|p| crate::metrics::API_READS.with_label_values(&[p]))
});

impl ApiState {
    pub fn new(store: Store, read_only: bool, admin_token: Option<String>, limits: Limits) -> ApiState {
        ApiState {
            reads: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            store,
            read_only,
            admin_token: admin_token.filter(|t| !t.is_empty()),
            limits,
            buckets: Arc::new(Mutex::new(HashMap::new())),
            cache: Arc::new(query::Cache::default()),
            writer: None,
            networks: None,
        }
    }

    /// Host addresses are placed with `networks` (the `--mmdb` databases).
    pub fn with_networks(mut self, networks: Option<Arc<crate::hosts::network::Networks>>) -> ApiState {
        self.networks = networks;
        self
    }

    /// Admin writes go to `writer` (the single writer of `run`) rather
    /// than to the store.
    pub fn with_writer(mut self, writer: crate::store::Writer) -> ApiState {
        self.writer = Some(writer);
        self
    }

    /// Runs a store read within the read limit: inline from memory when it
    /// can, else on the blocking pool (counted in [`READ_PATHS`]). `f` may
    /// run twice: its first result is dropped after a miss.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl Fn(&ApiState) -> Result<T, ApiError> + Send + Sync + 'static,
    ) -> Result<T, ApiError> {
        let until = Instant::now() + self.limits.timeout;
        let permit = self.reads.clone().acquire_owned().await.map_err(|_| ApiError::unavailable("shutting down"))?;
        // first on this async worker from memory alone (the memtables and
        // the block cache: nothing can block on a file), then, if any read
        // needed a file, again on the blocking pool
        if self.limits.inline_reads {
            let (r, missed) = crate::store::deadline::cached_only(|| crate::store::deadline::within(until, || f(self)));
            READ_PATHS[usize::from(missed)].inc();
            if !missed {
                return r;
            }
        }
        READ_PATHS[2].inc();
        let state = self.clone();
        // the permit goes with the work: a request that times out stops
        // waiting, and its read counts against the limit until it ends,
        // which is soon: every scan checks the request's deadline
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            crate::store::deadline::within(until, || f(&state))
        })
        .await
        .map_err(|e| ApiError::internal(format!("read task failed: {e}")))?
    }

    /// Takes `cost` tokens from the client's bucket.
    fn admit(&self, ip: IpAddr, cost: f64) -> bool {
        let rate = f64::from(self.limits.rate_per_client);
        if rate == 0.0 {
            return true;
        }
        let burst = rate * 2.0;
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_CLIENTS && !b.contains_key(&ip) {
            // drop clients whose buckets have refilled (idle ones)
            b.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if b.len() >= MAX_CLIENTS {
                return false;
            }
        }
        let (tokens, at) = b.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= cost {
            *tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// What a request to `path` costs in the rate limit, in requests: the
/// routes that scan or build large answers count as several (`getFlows`
/// and `getMapAsOf` 4; the lists, members, growth and history 2), so a
/// client's budget buys as much work on every route.
pub fn route_cost(path: &str) -> u32 {
    match path.strip_prefix("/xrpc/dev.instancemap.") {
        Some("getFlows" | "getMapAsOf") => 4,
        Some("listInstances" | "listHosts" | "listMembers" | "getGrowth" | "getAccountHistory") => 2,
        Some(_) => 1,
        // the explorer's pages: each is several of the API's answers
        None if path.starts_with("/instance/") || path == "/flows" => 6,
        None if path == "/" || path == "/instances" => 3,
        None => 1,
    }
}

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, error: "InvalidRequest", message: message.into() }
    }
    pub fn not_found(error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, error, message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, error: "InternalServerError", message: message.into() }
    }
    /// The request ran past the time limit (`--request-timeout`).
    pub fn timeout() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "Timeout",
            message: "the request took longer than the API's time limit (--request-timeout)".into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, error: "Unavailable", message: message.into() }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        if matches!(e, crate::store::StoreError::DeadlinePassed) {
            crate::metrics::API_READS_STOPPED.inc();
            return ApiError::timeout();
        }
        if matches!(e, crate::store::StoreError::NotCached) {
            // a memory-only read that missed: the read runs again on the
            // blocking pool, nothing failed
            return ApiError::internal("not in memory");
        }
        tracing::error!(error = %e, "store read failed");
        ApiError::internal("the store could not be read")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({"error": self.error, "message": self.message}))).into_response()
    }
}

/// Route templates, for the metrics (never a raw path).
pub const ROUTES: &[&str] = &[
    "/metrics",
    "/healthz",
    "/openapi.json",
    "/xrpc/dev.instancemap.lookup",
    "/xrpc/dev.instancemap.listInstances",
    "/xrpc/dev.instancemap.getInstance",
    "/xrpc/dev.instancemap.listMembers",
    "/xrpc/dev.instancemap.listHosts",
    "/xrpc/dev.instancemap.getMapAsOf",
    "/xrpc/dev.instancemap.getFlows",
    "/xrpc/dev.instancemap.getGrowth",
    "/xrpc/dev.instancemap.getSummary",
    "/xrpc/dev.instancemap.getAccountHistory",
    "/xrpc/dev.instancemap.admin.refreshAccount",
    "/xrpc/dev.instancemap.admin.createCheckpoint",
    "unmatched",
];

/// The routes.
pub fn router(state: ApiState) -> Router {
    let x = |n: &str| format!("/xrpc/dev.instancemap.{n}");
    let r = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi::serve))
        .route(&x("lookup"), get(query::lookup))
        .route(&x("listInstances"), get(query::list_instances))
        .route(&x("getInstance"), get(query::get_instance))
        .route(&x("listMembers"), get(query::list_members))
        .route(&x("listHosts"), get(query::list_hosts))
        .route(&x("getMapAsOf"), get(query::get_map_as_of))
        .route(&x("getFlows"), get(query::get_flows))
        .route(&x("getGrowth"), get(query::get_growth))
        .route(&x("getSummary"), get(query::get_summary))
        .route(&x("getAccountHistory"), get(query::get_account_history))
        // the read-only routes are public data: any web page may read them
        // (no credentials; the admin routes below get no CORS headers)
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([axum::http::Method::GET, axum::http::Method::HEAD])
                .max_age(Duration::from_secs(86_400)),
        );
    // admin routes answer 404 (AdminDisabled) unless a token is configured
    let r = r
        .route(&x("admin.refreshAccount"), post(query::admin_refresh_account))
        .route(&x("admin.createCheckpoint"), post(query::admin_create_checkpoint));
    r.merge(explorer::routes())
        .route("/xrpc/{method}", get(unknown_method).post(unknown_method))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

async fn unknown_method() -> ApiError {
    ApiError {
        status: StatusCode::NOT_IMPLEMENTED,
        error: "MethodNotImplemented",
        message: "no such XRPC method here; see /openapi.json".into(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("NotFound", "no such route; see /openapi.json")
}

/// The address a request is keyed by: the peer's, or, when the peer is a
/// trusted proxy, the nearest `X-Forwarded-For` hop that is not one (the
/// rightmost: a client can write anything to the left of what its proxy
/// appends).
pub fn client_address(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(a) if trusted.contains(&a) => continue,
            Ok(a) => return a,
            // not an address: the chain cannot be read further
            Err(_) => return peer,
        }
    }
    peer
}

/// Limits: URI length, the client's rate, the timeout.
async fn guard(State(state): State<ApiState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.uri().to_string().len() > MAX_URI {
        return ApiError { status: StatusCode::URI_TOO_LONG, error: "InvalidRequest", message: "URI too long".into() }
            .into_response();
    }
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let ip = peer.map(|p| client_address(p, req.headers(), &state.limits.trusted_proxies));
    if let Some(ip) = ip {
        let cost = route_cost(req.uri().path());
        if !state.admit(ip, f64::from(cost)) {
            let mut resp = ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                error: "RateLimitExceeded",
                message: format!(
                    "at most {} requests per second per client (this route counts as {cost})",
                    state.limits.rate_per_client
                ),
            }
            .into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return resp;
        }
    }
    match tokio::time::timeout(state.limits.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::timeout().into_response(),
    }
}

/// Counts every request by route template and status class, and times it.
async fn observe(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| {
        ROUTES.iter().chain(explorer::ROUTES).copied().find(|r| *r == p.as_str()).unwrap_or("unmatched")
    });
    let start = Instant::now();
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

async fn serve_metrics(State(state): State<ApiState>) -> Response {
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for p in metrics::STORE_PROPERTIES {
            metrics::STORE.with_label_values(&[&metrics::store_label(p)]).set(st.store.property_sum(p) as i64);
        }
        // the network concentration gauges, from the summary (cached)
        if let Some(n) = st.networks.as_deref() {
            let _ = st.cache.summary(&st.store, Some(n));
        }
    })
    .await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics::render()).into_response()
}

/// Liveness and a glance at progress: the process answers, whether the
/// relay connection is open, and the cursor.
async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "read_only": state.read_only,
        "connected": metrics::CONNECTED.get() == 1,
        "cursor": metrics::CURSOR.get(),
        "cursor_committed": metrics::CURSOR_COMMITTED.get(),
    }))
}

/// Serves until `cancel`: HTTP/1.1 with a header-read timeout (a client
/// that never finishes its headers is dropped, and so is a kept-alive
/// connection idle that long), at most `max_connections` open connections
/// and `max_connections_per_client` from one address (more are closed at
/// once, counted), so slow clients cannot hold the listener.
pub async fn serve(listener: TcpListener, state: ApiState, cancel: CancellationToken) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let limits = state.limits.clone();
    let app = router(state);
    let all = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_client: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // out of file descriptors and the like: wait, go on
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
        };
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = all.clone().try_acquire_owned() else {
            metrics::API_CONNECTIONS_REFUSED.with_label_values(&["total"]).inc();
            continue;
        };
        let ip = addr.ip();
        {
            let mut m = per_client.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(ip).or_default();
            if *n >= limits.max_connections_per_client {
                metrics::API_CONNECTIONS_REFUSED.with_label_values(&["per_client"]).inc();
                continue;
            }
            *n += 1;
        }
        let app = app.clone();
        let per_client = per_client.clone();
        let header_timeout = limits.header_timeout;
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
            let mut m = per_client.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        });
    }
    // let open connections finish their requests (bounded)
    let _ = tokio::time::timeout(Duration::from_secs(6), async { while tasks.join_next().await.is_some() {} }).await;
}
