//! Wires the stages for each command: source (relay socket or frame files)
//! → [`event::from_frame_bytes`] → bounded queue → the single writer
//! thread ([`Ingest`]) → RocksDB; plus the HTTP endpoint and one shutdown
//! token. `run` and `replay` share everything from the raw frame on.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{self, Event, EventKind};
use crate::firehose::frame::{self, Verify};
use crate::firehose::framelog::{FrameReader, FrameWriter};
use crate::firehose::subscribe::{self, Closed, FrameHandler, SubscribeConfig};
use crate::identity::verify::{self, KeySource, Pending, SigStatus, VerifyPool};
use crate::ingest::Ingest;
use crate::store::{self, Store};
use crate::{api, metrics};

/// Events queued between the source and the writer. 8,192 events is about
/// 40 ms of replay at full speed and seconds of live firehose: enough to ride
/// out a slow batch commit. When full, the source awaits (the socket stops
/// being read, so TCP pushes back on the relay) rather than dropping.
pub const QUEUE_CAPACITY: usize = 8_192;

/// An event on its way to the writer, with its signature check in flight.
pub struct Queued {
    pub event: Event,
    pub pending: Option<Pending>,
}

/// The step between decoding and the writer's queue: starts each commit's
/// (and `#sync`'s) signature check on the worker pool (when checks are on) and drops a
/// DID's cached key when an `#identity` says it may have changed.
pub struct Checker {
    pool: Option<VerifyPool>,
}

impl Checker {
    /// `verify`: whether commit signatures are checked (keys from `store`).
    pub fn new(verify: bool, store: &Store) -> Checker {
        Checker::with_keys(verify.then(|| std::sync::Arc::new(store.clone()) as std::sync::Arc<dyn KeySource>), None)
    }

    /// Checks against keys from `keys` (`None`: checks off); `refresh`
    /// re-resolves an account whose signature fails after an `#identity`.
    pub fn with_keys(keys: Option<std::sync::Arc<dyn KeySource>>, refresh: Option<verify::Refresh>) -> Checker {
        Checker { pool: keys.map(|k| VerifyPool::new(verify::default_workers(), k, refresh)) }
    }

    pub fn queue(&self, mut event: Event) -> Queued {
        let mut pending = None;
        if let Some(pool) = &self.pool {
            match &mut event.kind {
                EventKind::Commit { did, sig, signature, .. } | EventKind::Sync { did, sig, signature, .. } => {
                    match sig.take() {
                        Some(input) => match pool.submit(did, input) {
                            Ok(p) => pending = Some(p),
                            Err(status) => *signature = status,
                        },
                        None => *signature = SigStatus::Invalid("sig_malformed"),
                    }
                }
                EventKind::Identity { did, .. } => pool.identity_changed(did),
                _ => {}
            }
        }
        Queued { event, pending }
    }
}

/// Waits for the event's signature check, if it has one.
pub fn settle(q: Queued) -> Event {
    let mut event = q.event;
    if let (Some(p), EventKind::Commit { signature, .. } | EventKind::Sync { signature, .. }) =
        (q.pending, &mut event.kind)
    {
        *signature = p.recv().unwrap_or(SigStatus::NotChecked);
    }
    event
}

/// The writer thread: applies queued events, committing a batch when it is
/// full or old, and once more when the queue closes.
fn writer_loop(mut ingest: Ingest, mut rx: mpsc::Receiver<Queued>, rt: tokio::runtime::Handle) -> store::Result<Store> {
    loop {
        let next = match ingest.due_in() {
            None => rt.block_on(rx.recv()),
            Some(d) => match rt.block_on(async { tokio::time::timeout(d, rx.recv()).await }) {
                Ok(next) => next,
                Err(_) => {
                    ingest.flush()?;
                    continue;
                }
            },
        };
        let Some(q) = next else { break };
        ingest.apply(settle(q))?;
        while !ingest.due() {
            match rx.try_recv() {
                Ok(q) => ingest.apply(settle(q))?,
                Err(_) => break,
            }
        }
        metrics::QUEUE_DEPTH.set(rx.len() as i64);
        if ingest.due() {
            ingest.flush()?;
        }
    }
    ingest.finish()
}

/// Starts the writer thread; its handle yields the store back after the
/// final flush.
fn spawn_writer(ingest: Ingest) -> (mpsc::Sender<Queued>, std::thread::JoinHandle<store::Result<Store>>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let rt = tokio::runtime::Handle::current();
    let handle = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer_loop(ingest, rx, rt))
        .expect("spawning the writer thread");
    (tx, handle)
}

async fn join_writer(handle: std::thread::JoinHandle<store::Result<Store>>) -> anyhow::Result<Store> {
    let store = tokio::task::spawn_blocking(move || handle.join())
        .await
        .context("joining the writer")?
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
        .context("writer")?;
    store.flush().context("flushing the database")?;
    Ok(store)
}

/// Decodes live frames and queues their events.
struct Forward {
    tx: mpsc::Sender<Queued>,
    checker: Checker,
}

impl FrameHandler for Forward {
    async fn frame(&mut self, bytes: Bytes) -> Result<Option<i64>, Closed> {
        let ev = event::from_frame_bytes(&bytes);
        let seq = ev.seq;
        self.tx.send(self.checker.queue(ev)).await.map_err(|_| Closed)?;
        Ok(seq)
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested; flushing");
        token.cancel();
    });
}

/// What `run` needs.
pub struct RunOptions {
    pub subscribe: SubscribeConfig,
    pub db: PathBuf,
    pub listen: std::net::SocketAddr,
    /// Check commit signatures (on by default; off for archives whose keys
    /// have since rotated).
    pub verify: bool,
    /// The PLC directory (export and DID documents).
    pub plc: String,
    /// Load and follow its export, polling this often once caught up
    /// (`None`: `--no-plc`).
    pub follow_plc: Option<std::time::Duration>,
    /// Resolve DIDs on demand (`--no-resolve` turns it off).
    pub resolve: bool,
    /// Let outbound requests reach loopback addresses (local test networks).
    pub allow_loopback: bool,
    /// A DNS server for handle checks instead of the system's.
    pub dns: Option<std::net::SocketAddr>,
    /// Crawl hosts (and read the relay's listHosts), checking for due hosts
    /// this often (`None`: `--no-crawl`).
    pub crawl: Option<std::time::Duration>,
    /// The operator's overrides for the map.
    pub overrides: crate::cluster::overrides::Overrides,
    /// API limits and admin token.
    pub api: crate::api::Limits,
    pub admin_token: Option<String>,
}

/// How often the map's structure is refreshed at most while running.
pub const STRUCTURE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the map's gauges are recomputed while running.
pub const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// The map maintainer thread: takes the marks writers leave until `cancel`
/// (what it has not taken stays marked for the next start).
fn spawn_maintainer(
    store: Store,
    overrides: crate::cluster::overrides::Overrides,
    cancel: CancellationToken,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("map".into())
        .spawn(move || {
            let mut m = crate::cluster::map::Maintainer::new(store.clone(), overrides);
            m.structure_every = STRUCTURE_EVERY;
            let mut gauges = std::time::Instant::now();
            let _ = crate::cluster::map::publish_gauges(&store);
            while !cancel.is_cancelled() {
                match m.step(10_000) {
                    Ok(s) => {
                        metrics::MAP_PENDING.set(s.accounts as i64);
                        if s.accounts == 0 {
                            std::thread::sleep(std::time::Duration::from_millis(250));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "map update failed; retrying");
                        std::thread::sleep(std::time::Duration::from_secs(5));
                    }
                }
                if gauges.elapsed() >= GAUGES_EVERY {
                    gauges = std::time::Instant::now();
                    if let Err(e) = crate::cluster::map::publish_gauges(&store) {
                        tracing::error!(error = %e, "map gauges failed");
                    }
                }
            }
        })
        .expect("spawning the map thread")
}

/// Follows the relay until `cancel`; flushes and returns the store.
pub async fn run(opts: RunOptions, cancel: CancellationToken) -> anyhow::Result<Store> {
    metrics::init();
    let store = Store::open(&opts.db).with_context(|| format!("opening database {}", opts.db.display()))?;
    let source = opts.subscribe.endpoint.clone();
    let checker = Checker::new(opts.verify, &store);
    let mut ingest = Ingest::new(store.clone(), &source)?;
    let mut resolver_task = None;
    if opts.resolve {
        let resolver = std::sync::Arc::new(crate::identity::resolve::Resolver::new(
            store.clone(),
            &opts.plc,
            opts.allow_loopback,
            opts.dns,
        ));
        let (queue, task) = crate::identity::resolve::start(resolver, cancel.clone());
        ingest = ingest.with_resolver(queue);
        resolver_task = Some(task);
    }
    let crawler = opts.crawl.map(|every| {
        tokio::spawn(crate::hosts::keep_crawling(
            store.clone(),
            crate::net::Fetcher::new(opts.allow_loopback),
            crate::hosts::relay_http_base(&source),
            every,
            cancel.clone(),
        ))
    });
    let cursor = ingest.cursor();
    tracing::info!(relay = %source, ?cursor, db = %opts.db.display(), "starting");
    let listener =
        tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("binding {}", opts.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
    let state = api::ApiState::new(store.clone(), false, opts.admin_token.clone(), opts.api.clone());
    let http = tokio::spawn(api::serve(listener, state, cancel.clone()));
    let plc = opts.follow_plc.map(|every| {
        tracing::info!(plc = %opts.plc, "loading and following the PLC export");
        tokio::spawn(crate::plc::source::follow(store.clone(), opts.plc.clone(), every, cancel.clone()))
    });
    let maintainer = spawn_maintainer(store.clone(), opts.overrides.clone(), cancel.clone());
    let (tx, writer) = spawn_writer(ingest);
    let mut fwd = Forward { tx, checker };
    let outcome = subscribe::subscribe(&opts.subscribe, cursor, &cancel, &mut fwd).await;
    drop(fwd);
    cancel.cancel();
    let store = join_writer(writer).await?;
    let _ = http.await;
    if let Some(p) = plc {
        let _ = p.await;
    }
    if let Some(r) = resolver_task {
        let _ = r.await;
    }
    if let Some(c) = crawler {
        let _ = c.await;
    }
    let _ = tokio::task::spawn_blocking(move || maintainer.join()).await;
    outcome.context("the writer stopped")?;
    Ok(store)
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub files: usize,
    pub frames: u64,
    /// The first file error (a truncated or corrupt file), if any; every frame
    /// before it was applied.
    pub error: Option<String>,
}

/// Runs frame files through the ingest pipeline into `db`.
pub async fn replay(
    db: &Path,
    source: &str,
    files: &[PathBuf],
    verify: bool,
    cancel: CancellationToken,
) -> anyhow::Result<ReplaySummary> {
    metrics::init();
    let store = Store::open(db).with_context(|| format!("opening database {}", db.display()))?;
    let checker = Checker::new(verify, &store);
    let ingest = Ingest::new(store, source)?;
    let (tx, writer) = spawn_writer(ingest);
    let files = files.to_vec();
    let reader = tokio::task::spawn_blocking(move || {
        let mut summary = ReplaySummary::default();
        let mut buf = Vec::with_capacity(1 << 16);
        'files: for path in &files {
            let mut r = match FrameReader::open(path) {
                Ok(r) => r,
                Err(e) => {
                    summary.error = Some(e.to_string());
                    break;
                }
            };
            summary.files += 1;
            loop {
                if cancel.is_cancelled() {
                    break 'files;
                }
                match r.next_into(&mut buf) {
                    Ok(true) => {
                        summary.frames += 1;
                        if tx.blocking_send(checker.queue(event::from_frame_bytes(&buf))).is_err() {
                            break 'files; // the writer failed; its error is reported
                        }
                    }
                    Ok(false) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "replay file error");
                        summary.error = Some(e.to_string());
                        break 'files;
                    }
                }
            }
        }
        summary
    });
    let summary = reader.await.context("replay reader")?;
    join_writer(writer).await?;
    Ok(summary)
}

/// Records raw frames from a relay to `out` until `cancel` or `max_frames`.
pub async fn record(
    cfg: &SubscribeConfig,
    out: &Path,
    cursor: Option<i64>,
    max_frames: Option<u64>,
    cancel: CancellationToken,
) -> anyhow::Result<u64> {
    struct Rec {
        w: FrameWriter,
        max: Option<u64>,
        done: CancellationToken,
    }
    impl FrameHandler for Rec {
        async fn frame(&mut self, bytes: Bytes) -> Result<Option<i64>, Closed> {
            if self.max.is_some_and(|m| self.w.frames >= m) {
                return Err(Closed);
            }
            if let Err(e) = self.w.write(&bytes) {
                tracing::error!(error = %e, "writing the frame file");
                return Err(Closed);
            }
            if self.max.is_some_and(|m| self.w.frames >= m) {
                self.done.cancel();
            }
            Ok(frame::decode(&bytes, Verify::Used { kept: &[] }).ok().and_then(|f| f.seq()))
        }
    }
    let w = FrameWriter::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rec = Rec { w, max: max_frames, done: cancel.clone() };
    let outcome = subscribe::subscribe(cfg, cursor, &cancel, &mut rec).await;
    let frames = rec.w.frames;
    rec.w.finish().with_context(|| format!("finishing {}", out.display()))?;
    if outcome.is_err() && max_frames.is_none_or(|m| frames < m) {
        anyhow::bail!("recording stopped after {frames} frames: write error");
    }
    Ok(frames)
}
