//! The relay subscription: connects to `subscribeRepos` with the cursor,
//! hands every binary frame to a [`FrameHandler`], and reconnects with
//! exponential backoff and full jitter after any close, error or silence,
//! resuming after the last seq the handler took.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::frame::MAX_FRAME_BYTES;
use crate::metrics;

/// The XRPC path of the firehose.
pub const SUBSCRIBE_PATH: &str = "/xrpc/com.atproto.sync.subscribeRepos";

/// How the subscription connects and retries.
#[derive(Debug, Clone)]
pub struct SubscribeConfig {
    /// `ws://` or `wss://` endpoint including [`SUBSCRIBE_PATH`], no query.
    pub endpoint: String,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A connection silent this long is dropped (relays ping every 30 s).
    pub idle_timeout: Duration,
    /// Longest a connection attempt (TCP, TLS, upgrade) may take.
    pub connect_timeout: Duration,
}

impl SubscribeConfig {
    pub fn new(endpoint: String) -> SubscribeConfig {
        SubscribeConfig {
            endpoint,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(15),
        }
    }

    /// The URL to connect to, resuming after `cursor`.
    pub fn url(&self, cursor: Option<i64>) -> String {
        match cursor {
            Some(c) => format!("{}?cursor={c}", self.endpoint),
            None => self.endpoint.clone(),
        }
    }
}

/// The consumer went away (its queue closed): the subscription stops.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("frame consumer closed")]
pub struct Closed;

/// What the subscription hands frames to.
pub trait FrameHandler: Send {
    /// Takes one binary frame; returns its seq if it had one (the next
    /// connection resumes after the last such seq).
    fn frame(&mut self, bytes: Bytes) -> impl Future<Output = Result<Option<i64>, Closed>> + Send;
}

/// The delay before reconnect attempt `attempt` (0-based): full jitter over
/// an exponential ceiling, never below half the ceiling, so a fleet of
/// clients spreads out but none hammers the relay.
pub fn backoff(cfg: &SubscribeConfig, attempt: u32) -> Duration {
    let ceiling = cfg.backoff_min.saturating_mul(1u32 << attempt.min(16)).min(cfg.backoff_max);
    let ms = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

/// Runs until `cancel` fires or the handler closes. `cursor` is the seq to
/// resume after (`None`: live only).
pub async fn subscribe(
    cfg: &SubscribeConfig,
    mut cursor: Option<i64>,
    cancel: &CancellationToken,
    handler: &mut impl FrameHandler,
) -> Result<(), Closed> {
    let ws_config = WebSocketConfig::default()
        // Above the protocol limit on purpose: an oversized frame reaches the
        // decoder and is rejected with a counted reason, instead of failing
        // the connection and looping on the same frame after reconnect.
        .max_message_size(Some(4 * MAX_FRAME_BYTES))
        .max_frame_size(Some(4 * MAX_FRAME_BYTES));
    let mut attempt: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let url = cfg.url(cursor);
        tracing::info!(%url, "connecting to relay");
        let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), false);
        let conn = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(cfg.connect_timeout, connect) => r,
        };
        let mut ws = match conn {
            Ok(Ok((ws, _response))) => ws,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "relay connection failed");
                metrics::RECONNECTS.with_label_values(&["connect"]).inc();
                wait(cfg, &mut attempt, cancel).await;
                continue;
            }
            Err(_) => {
                tracing::warn!("relay connection timed out");
                metrics::RECONNECTS.with_label_values(&["connect"]).inc();
                wait(cfg, &mut attempt, cancel).await;
                continue;
            }
        };
        metrics::CONNECTED.set(1);
        let mut frames: u64 = 0;
        let cause = loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = ws.close(None).await;
                    metrics::CONNECTED.set(0);
                    return Ok(());
                }
                n = tokio::time::timeout(cfg.idle_timeout, ws.next()) => n,
            };
            match next {
                Err(_) => break "idle",
                Ok(None) => break "closed",
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "relay connection error");
                    break "error";
                }
                Ok(Some(Ok(Message::Binary(b)))) => {
                    frames += 1;
                    if let Some(seq) = handler.frame(b).await? {
                        cursor = Some(seq);
                    }
                }
                Ok(Some(Ok(Message::Close(c)))) => {
                    tracing::info!(close = ?c, "relay closed the stream");
                    break "closed";
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    tracing::warn!(len = t.len(), "text frame from relay ignored (the firehose is binary)");
                }
                Ok(Some(Ok(_))) => {} // ping/pong: tungstenite answers pings itself
            }
        };
        metrics::CONNECTED.set(0);
        metrics::RECONNECTS.with_label_values(&[cause]).inc();
        tracing::info!(cause, frames, ?cursor, "relay stream ended; reconnecting");
        if frames > 0 {
            attempt = 0;
        }
        wait(cfg, &mut attempt, cancel).await;
    }
}

async fn wait(cfg: &SubscribeConfig, attempt: &mut u32, cancel: &CancellationToken) {
    let d = backoff(cfg, *attempt);
    *attempt = attempt.saturating_add(1);
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
