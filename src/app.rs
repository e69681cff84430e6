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
            // a commit writing the project's own records keeps what its
            // signature covers: the record is stored with it, so it can be
            // checked again once a key is known
            let keep = match &event.kind {
                EventKind::Commit { records, .. } => records.iter().any(|w| {
                    [crate::cluster::declaration::DECLARATION, crate::cluster::declaration::MEMBERSHIP]
                        .contains(&w.collection.as_str())
                }),
                _ => false,
            };
            match &mut event.kind {
                EventKind::Commit { did, sig, signature, .. } | EventKind::Sync { did, sig, signature, .. } => {
                    match if keep { sig.clone() } else { sig.take() } {
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

/// Batches from the other sources (PLC loader, resolver, crawler, admin
/// route) queued for the writer. Each sender waits for its batch's commit,
/// so at most one batch per source task is queued; 64 is room for every
/// task `run` starts.
pub const SOURCE_BATCHES: usize = 64;

/// The single writer's thread name (see [`Store::only_writers`]).
pub const WRITER_THREAD: &str = "writer";
/// The map maintainer's thread name: the one other writer, of the map's
/// own families and its marks.
pub const MAP_THREAD: &str = "map";

/// What the writer waits for next (one lives at a time: its size is no cost).
#[allow(clippy::large_enum_variant)]
enum Next {
    Event(Option<Queued>),
    Batch(Option<store::Queued>),
    Due,
}

/// The writer thread, the single writer of everything but the map's own
/// families: applies queued events, committing a batch when it is full or
/// old, commits the other sources' batches in between (after its own
/// pending one, so every commit is in arrival order), and flushes once more
/// when the event queue closes.
fn writer_loop(
    mut ingest: Ingest,
    mut rx: mpsc::Receiver<Queued>,
    mut sources: mpsc::Receiver<store::Queued>,
    rt: tokio::runtime::Handle,
) -> WriterResult {
    loop {
        let due = ingest.due_in();
        let next = rt.block_on(async {
            let timer = async {
                match due {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                e = rx.recv() => Next::Event(e),
                b = sources.recv(), if !sources.is_closed() => Next::Batch(b),
                _ = timer => Next::Due,
            }
        });
        let q = match next {
            Next::Due => {
                ingest.flush()?;
                continue;
            }
            Next::Batch(None) => continue,
            Next::Batch(Some((batch, ack))) => {
                ingest.flush()?;
                let r = store::StoreWriter::commit(ingest.store(), batch);
                let failed = r.as_ref().err().map(|e| e.to_string());
                let _ = ack.send(r);
                if let Some(e) = failed {
                    tracing::error!(error = %e, "committing a source's batch");
                }
                continue;
            }
            Next::Event(None) => break,
            Next::Event(Some(q)) => q,
        };
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
    let totals = ingest.totals();
    Ok((ingest.finish()?, totals))
}

/// What the writer thread gives back: the store after its final flush, and
/// what it applied.
type WriterResult = store::Result<(Store, crate::ingest::Totals)>;

/// Starts the writer thread; its handle yields the store back after the
/// final flush. The [`store::Writer`] sends other sources' batches to it.
fn spawn_writer(
    ingest: Ingest,
    sources: mpsc::Receiver<store::Queued>,
) -> (mpsc::Sender<Queued>, std::thread::JoinHandle<WriterResult>) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let rt = tokio::runtime::Handle::current();
    let handle = std::thread::Builder::new()
        .name(WRITER_THREAD.into())
        .spawn(move || {
            let _span = tracing::info_span!("ingest", source = %ingest.source()).entered();
            writer_loop(ingest, rx, sources, rt)
        })
        .expect("spawning the writer thread");
    (tx, handle)
}

/// The other sources' way to the writer thread: a [`store::Writer`] whose
/// commits queue there, and the queue's end for [`spawn_writer`].
fn source_queue(store: &Store) -> (store::Writer, mpsc::Receiver<store::Queued>) {
    let (tx, rx) = mpsc::channel(SOURCE_BATCHES);
    (store::Writer::queued(store.clone(), tx), rx)
}

async fn join_writer(handle: std::thread::JoinHandle<WriterResult>) -> anyhow::Result<(Store, crate::ingest::Totals)> {
    let (store, totals) = tokio::task::spawn_blocking(move || handle.join())
        .await
        .context("joining the writer")?
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
        .context("writer")?;
    store.flush().context("flushing the database")?;
    Ok((store, totals))
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

/// Leaves the map current before a one-shot command that wrote exits (see
/// [`crate::cluster::map::bring_current`]), with the overrides in force;
/// SIGINT/SIGTERM (through `cancel`) stop a recompute, which the next
/// writer of the map then redoes.
pub async fn bring_map_current(store: &Store, cancel: &CancellationToken) -> anyhow::Result<String> {
    use crate::cluster::map::{self, Update};
    let overrides = crate::cluster::overrides::in_force(store, None)?;
    let stop = stop_flag(cancel);
    let s = store.clone();
    let update = tokio::task::spawn_blocking(move || map::bring_current(&s, &overrides, Some(&stop)))
        .await
        .context("map update")??;
    store.flush()?;
    Ok(match update {
        Update::Current => "map: current".to_owned(),
        Update::Incremental(step) => format!("map: {} account(s) taken in, {} changed", step.accounts, step.changed),
        Update::Recomputed(s) => {
            format!("map: recomputed, {} instances over {} hosts; {} accounts", s.instances, s.hosts, s.accounts)
        }
    })
}

/// The stages' label sets, for [`metrics::init`].
pub fn metric_labels() -> metrics::Labels {
    metrics::Labels {
        frame_kinds: frame::KINDS,
        decode_errors: frame::FrameError::REASONS,
        fetch_reasons: crate::net::FETCH_REASONS,
        actions: frame::Action::LABELS,
        routes: api::ROUTES,
    }
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
    /// The operator's overrides for the map (`None`: those in force in the
    /// store).
    pub overrides: Option<crate::cluster::overrides::Overrides>,
    /// API limits and admin token.
    pub api: crate::api::Limits,
    pub admin_token: Option<String>,
    /// The `--mmdb` databases, for the network view.
    pub networks: Option<std::sync::Arc<crate::hosts::network::Networks>>,
}

/// How often the map's structure is refreshed at most while running.
pub const STRUCTURE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// How often the map's gauges are recomputed while running.
pub const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// A flag set when `cancel` is (for loops on plain threads that check a flag
/// between steps).
pub fn stop_flag(cancel: &CancellationToken) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(cancel.is_cancelled()));
    let (f, c) = (flag.clone(), cancel.clone());
    tokio::spawn(async move {
        c.cancelled().await;
        f.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    flag
}

/// The map maintainer thread: takes the marks writers leave until `cancel`
/// (what it has not taken stays marked for the next start).
fn spawn_maintainer(
    store: Store,
    overrides: crate::cluster::overrides::Overrides,
    cancel: CancellationToken,
) -> std::thread::JoinHandle<()> {
    let stop = stop_flag(&cancel);
    std::thread::Builder::new()
        .name(MAP_THREAD.into())
        .spawn(move || {
            let _span = tracing::info_span!("map").entered();
            let mut m = crate::cluster::map::Maintainer::new(store.clone(), overrides);
            m.structure_every = STRUCTURE_EVERY;
            m.stop = Some(stop);
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
    metrics::init(&metric_labels());
    let store = Store::open(&opts.db).with_context(|| format!("opening database {}", opts.db.display()))?;
    let source = opts.subscribe.endpoint.clone();
    let checker = Checker::new(opts.verify, &store);
    let mut ingest = Ingest::new(store.clone(), &source)?;
    // every source but the firehose writes through this, to the writer thread
    let (writer, source_batches) = source_queue(&store);
    let mut resolver_task = None;
    if opts.resolve {
        let resolver = std::sync::Arc::new(crate::identity::resolve::Resolver::new(
            writer.clone(),
            &opts.plc,
            opts.allow_loopback,
            opts.dns,
        ));
        let (queue, task) = crate::identity::resolve::start(resolver, cancel.clone());
        ingest = ingest.with_resolver(queue);
        resolver_task = Some(task);
    }
    let crawler = opts.crawl.map(|every| {
        tokio::spawn(tracing::Instrument::instrument(
            crate::hosts::keep_crawling(
                writer.clone(),
                // names resolved by --dns when set, as the handle checks are
                crate::net::Fetcher::with_dns(opts.allow_loopback, opts.dns),
                crate::hosts::relay_http_base(&source),
                every,
                opts.dns,
                cancel.clone(),
            ),
            tracing::info_span!("crawl"),
        ))
    });
    let cursor = ingest.cursor();
    tracing::info!(relay = %source, ?cursor, db = %opts.db.display(), "starting");
    let listener =
        tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("binding {}", opts.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "serving the explorer, the API, /metrics and /healthz");
    eprintln!(
        "instancemap: the explorer is at {} (the API under /xrpc/)",
        api::explorer::address(listener.local_addr()?)
    );
    let state = api::ApiState::new(store.clone(), false, opts.admin_token.clone(), opts.api.clone())
        .with_writer(writer.clone())
        .with_networks(opts.networks.clone());
    let http = tokio::spawn(tracing::Instrument::instrument(
        api::serve(listener, state, cancel.clone()),
        tracing::info_span!("api"),
    ));
    let plc = opts.follow_plc.map(|every| {
        tracing::info!(plc = %opts.plc, "loading and following the PLC export");
        tokio::spawn(tracing::Instrument::instrument(
            crate::plc::source::follow(writer.clone(), opts.plc.clone(), every, cancel.clone()),
            tracing::info_span!("plc"),
        ))
    });
    let overrides = crate::cluster::overrides::in_force(&store, opts.overrides.clone())?;
    let maintainer = spawn_maintainer(store.clone(), overrides, cancel.clone());
    drop(writer);
    // from here on only the writer thread and the maintainer write
    store.only_writers(&[WRITER_THREAD, MAP_THREAD]);
    let (tx, writer_thread) = spawn_writer(ingest, source_batches);
    let mut fwd = Forward { tx, checker };
    let outcome = subscribe::subscribe(&opts.subscribe, cursor, &cancel, &mut fwd).await;
    // the other sources stop first, their last batches committed by the
    // writer, which then takes the firehose's last events and flushes
    cancel.cancel();
    if let Some(p) = plc {
        let _ = p.await;
    }
    if let Some(r) = resolver_task {
        let _ = r.await;
    }
    if let Some(c) = crawler {
        let _ = c.await;
    }
    let _ = http.await;
    drop(fwd);
    let (store, _) = join_writer(writer_thread).await?;
    let _ = tokio::task::spawn_blocking(move || maintainer.join()).await;
    outcome.context("the writer stopped")?;
    Ok(store)
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub files: usize,
    pub frames: u64,
    /// Per file read: its cursor and what the writer did with its frames.
    pub per_file: Vec<FileReplay>,
    /// The first file error (a truncated or corrupt file), if any; every frame
    /// before it was applied.
    pub error: Option<String>,
    /// How the map was brought up to date after it.
    pub map: Option<String>,
}

/// One file of a replay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileReplay {
    pub path: PathBuf,
    /// The cursor its frames were deduplicated under.
    pub source: String,
    pub frames: u64,
    pub applied: u64,
    /// Frames at or below the cursor: applied before, not again.
    pub duplicates: u64,
}

/// The cursor a replayed file is deduplicated under when no `--source` is
/// given: `replay:<file name>`. Every PDS and relay numbers its own seqs
/// (from 1), so two archives never share a cursor unless asked to.
pub fn file_source(path: &Path) -> String {
    let name = path.file_name().map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy());
    format!("replay:{name}")
}

/// Runs frame files through the ingest pipeline into `db`, one after the
/// other. With `source`, every file continues one cursor (chunks of one
/// recording, or a `run`'s relay URL to continue its cursor); without it,
/// each file has its own ([`file_source`]), so archives of several hosts
/// are all applied and replaying any of them again applies nothing.
pub async fn replay(
    db: &Path,
    source: Option<&str>,
    files: &[PathBuf],
    verify: bool,
    cancel: CancellationToken,
) -> anyhow::Result<ReplaySummary> {
    let (store, mut summary) = replay_frames(db, source, files, verify, &cancel).await?;
    summary.map = Some(bring_map_current(&store, &cancel).await?);
    Ok(summary)
}

/// [`replay`]'s ingest part: every file through the pipeline, the map left
/// with its marks (the caller brings it current; the replay bench measures
/// this part alone).
pub async fn replay_frames(
    db: &Path,
    source: Option<&str>,
    files: &[PathBuf],
    verify: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<(Store, ReplaySummary)> {
    metrics::init(&metric_labels());
    if source.is_none() {
        let mut seen = std::collections::BTreeMap::new();
        for f in files {
            if let Some(other) = seen.insert(file_source(f), f) {
                anyhow::bail!(
                    "{} and {} have one file name, so their cursors would be one ({}): rename one, or replay each \
                     with its own --source",
                    other.display(),
                    f.display(),
                    file_source(f)
                );
            }
        }
    }
    let mut store = Store::open(db).with_context(|| format!("opening database {}", db.display()))?;
    let mut summary = ReplaySummary::default();
    for path in files {
        let src = source.map_or_else(|| file_source(path), str::to_owned);
        let checker = Checker::new(verify, &store);
        // a file replayed under its own cursor is read from its start every
        // time: count its frames with the cursor, so a rerun skips them
        let ingest = Ingest::new(store.clone(), &src)?;
        let ingest = if source.is_none() { ingest.counting_frames()? } else { ingest };
        // a replay is its own only source: no other batches
        let (_, no_sources) = mpsc::channel(1);
        let (tx, writer) = spawn_writer(ingest, no_sources);
        let (path2, cancel2) = (path.clone(), cancel.clone());
        let reader = tokio::task::spawn_blocking(move || -> (u64, Option<String>) {
            let mut buf = Vec::with_capacity(1 << 16);
            let mut frames = 0;
            let mut r = match FrameReader::open(&path2) {
                Ok(r) => r,
                Err(e) => return (0, Some(e.to_string())),
            };
            loop {
                if cancel2.is_cancelled() {
                    return (frames, None);
                }
                match r.next_into(&mut buf) {
                    Ok(true) => {
                        frames += 1;
                        if tx.blocking_send(checker.queue(event::from_frame_bytes(&buf))).is_err() {
                            return (frames, None); // the writer failed; its error is reported
                        }
                    }
                    Ok(false) => return (frames, None),
                    Err(e) => {
                        tracing::error!(error = %e, "replay file error");
                        return (frames, Some(e.to_string()));
                    }
                }
            }
        });
        let (frames, error) = reader.await.context("replay reader")?;
        let (s, totals) = join_writer(writer).await?;
        store = s;
        if error.is_none() || frames > 0 {
            summary.files += 1;
        }
        summary.frames += frames;
        if totals.applied == 0 && totals.duplicates > 0 {
            tracing::warn!(
                file = %path.display(),
                source = %src,
                duplicates = totals.duplicates,
                "every frame of the file was at or below the cursor: already applied (if it is another host's \
                 archive, replay it without --source or under its own)"
            );
        }
        summary.per_file.push(FileReplay {
            path: path.clone(),
            source: src,
            frames,
            applied: totals.applied,
            duplicates: totals.duplicates,
        });
        if error.is_some() {
            summary.error = error;
            break;
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    Ok((store, summary))
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
