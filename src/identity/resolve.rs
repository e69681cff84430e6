//! DID resolution on demand, off the ingest path: the writer asks (never
//! waiting) through a bounded queue; workers resolve did:plc from the PLC
//! directory (`/<did>`) and did:web from `https://<host>/.well-known/did.json`
//! through the guarded fetcher, with a total and a per-host concurrency
//! limit, and store the outcome in the `identity` family. A DID that does
//! not resolve is stored as unresolved with the reason and retried with
//! exponential backoff, never dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::did::{self, DidDoc};
use crate::clock::now_ms;
use crate::metrics;
use crate::net::{FetchError, Fetcher};
use crate::store::{self, Batch, StoreReader, StoreWriter, Writer};

/// DIDs waiting for a worker. When full, a request is not queued but the
/// DID is written to the retry schedule, so the sweep picks it up: the
/// firehose never waits on resolution and nothing is lost.
pub const QUEUE_CAPACITY: usize = 16_384;
/// Resolutions in flight, in all.
pub const CONCURRENCY: usize = 32;
/// Resolutions in flight against one host (the PLC directory counts as one).
pub const PER_HOST: usize = 4;
/// A DID resolved this recently is not resolved again unless asked to
/// refresh (an `#identity`).
pub const FRESH_FOR: Duration = Duration::from_secs(6 * 3600);
/// A failure is not retried before this, doubling per failure up to a day.
pub const RETRY_MIN: Duration = Duration::from_secs(60);
pub const RETRY_MAX: Duration = Duration::from_secs(24 * 3600);
/// Refreshes of one DID closer together than this are merged.
pub const REFRESH_DEDUP: Duration = Duration::from_secs(5);
/// How often the retry schedule is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub use crate::store::records::{resolution_is_current, IdentityRecord};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("unsupported DID method")]
    Method,
    #[error("did:web host is not valid")]
    WebHost,
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Doc(#[from] did::DocError),
    #[error("the runtime stopped while the document was parsed")]
    Stopped,
}

impl ResolveError {
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::Method => "unsupported_method",
            ResolveError::WebHost => "bad_did_web",
            ResolveError::Fetch(e) => e.reason(),
            ResolveError::Doc(e) => e.reason(),
            ResolveError::Stopped => "stopped",
        }
    }
}

/// The URL a DID document is fetched from.
pub fn document_url(plc: &str, d: &str, allow_loopback: bool) -> Result<String, ResolveError> {
    if d.starts_with("did:plc:") {
        return Ok(format!("{}/{d}", plc.trim_end_matches('/')));
    }
    let Some(host) = d.strip_prefix("did:web:") else {
        return Err(ResolveError::Method);
    };
    // hostname-level only; a port (`%3A`) only for localhost in development
    if host.contains(':') {
        return Err(ResolveError::WebHost);
    }
    let host = host.replace("%3A", ":").replace("%3a", ":");
    let name = host.split(':').next().unwrap_or_default();
    if host.contains(':') && !(allow_loopback && name == "localhost") {
        return Err(ResolveError::WebHost);
    }
    if name != "localhost" && !crate::types::is_handle(name) {
        return Err(ResolveError::WebHost);
    }
    let scheme = if name == "localhost" { "http" } else { "https" };
    Ok(format!("{scheme}://{host}/.well-known/did.json"))
}

/// Documents up to this size are parsed where they arrive (a real one, about
/// 1 KiB, takes ~12 µs); larger ones on the blocking pool.
pub const PARSE_INLINE: usize = 16 * 1024;

/// The resolver.
pub struct Resolver {
    fetcher: Fetcher,
    handles: super::handle::HandleResolver,
    plc: String,
    allow_loopback: bool,
    store: Writer,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// DIDs resolved lately (and whether as a refresh), so a burst of
    /// events for one DID resolves it once.
    recent: Mutex<HashMap<String, (Instant, bool)>>,
}

impl Resolver {
    /// `dns`: a DNS server for handle checks instead of the system's.
    pub fn new(
        store: impl Into<Writer>,
        plc: &str,
        allow_loopback: bool,
        dns: Option<std::net::SocketAddr>,
    ) -> Resolver {
        let fetcher = Fetcher::with_dns(allow_loopback, dns);
        Resolver {
            handles: super::handle::HandleResolver::new(fetcher.clone(), dns),
            fetcher,
            plc: plc.to_owned(),
            allow_loopback,
            store: store.into(),
            hosts: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
        }
    }

    fn host_permit(&self, url: &str) -> Arc<Semaphore> {
        let host = url.split('/').nth(2).unwrap_or_default().to_owned();
        self.hosts.lock().expect("hosts lock").entry(host).or_insert_with(|| Arc::new(Semaphore::new(PER_HOST))).clone()
    }

    /// Fetches and parses a DID document.
    pub async fn resolve(&self, d: &str) -> Result<DidDoc, ResolveError> {
        let url = document_url(&self.plc, d, self.allow_loopback)?;
        let sem = self.host_permit(&url);
        let _permit = sem.acquire().await.expect("semaphore never closed");
        let body = self.fetcher.get(&url).await?;
        if body.len() <= PARSE_INLINE {
            return Ok(did::parse(d, &body)?);
        }
        // a large body is parsed on the blocking pool: 1 MiB of JSON (the
        // fetch limit) costs up to ~8 ms, which a host serving such
        // documents could otherwise take from the runtime's sockets, once
        // per DID it names
        let did = d.to_owned();
        match tokio::task::spawn_blocking(move || did::parse(&did, &body)).await {
            Ok(parsed) => Ok(parsed?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(ResolveError::Stopped),
        }
    }

    pub fn record(&self, d: &str) -> store::Result<Option<IdentityRecord>> {
        self.store.identity(d)
    }

    /// Whether `d` needs resolving now. An `#identity` or a scheduled check
    /// always does, but one per DID per [`REFRESH_DEDUP`]; an account merely
    /// seen only when never resolved or last checked more than
    /// [`FRESH_FOR`] ago, and not handled in the last [`RETRY_MIN`].
    pub fn wanted(&self, d: &str, ask: Ask) -> bool {
        let mut recent = self.recent.lock().expect("recent lock");
        if recent.len() > 100_000 {
            recent.clear();
        }
        let last = recent.get(d).copied();
        if ask != Ask::Seen {
            if last.is_some_and(|(at, was_refresh)| was_refresh && at.elapsed() < REFRESH_DEDUP) {
                return false;
            }
            recent.insert(d.to_owned(), (Instant::now(), true));
            return true;
        }
        if last.is_some_and(|(at, _)| at.elapsed() < RETRY_MIN) {
            return false;
        }
        drop(recent);
        let want = match self.record(d) {
            Ok(Some(r)) => now_ms() - r.checked_at_ms > FRESH_FOR.as_millis() as i64,
            Ok(None) => true,
            Err(_) => true,
        };
        if want {
            self.recent.lock().expect("recent lock").insert(d.to_owned(), (Instant::now(), false));
        }
        want
    }

    /// The document as the PLC export describes it, for a did:plc the
    /// export has loaded (saves a request to the directory).
    fn doc_from_plc(&self, d: &str) -> Option<DidDoc> {
        let p = self.store.plc(d).ok()??;
        (!p.tombstoned).then(|| DidDoc {
            did: d.to_owned(),
            handle: p.handle,
            signing_key: p.signing_key,
            label_key: None,
            pds: p.pds,
            labeler: None,
            problems: Vec::new(),
        })
    }

    /// Resolves (from the PLC state when the export has the DID and
    /// `refresh` is not asked, else from the network), verifies the claimed
    /// handle both ways, and stores the outcome and the retry schedule.
    pub async fn resolve_and_store(&self, d: &str, refresh: bool) -> store::Result<IdentityRecord> {
        let mut rec = self.record(d)?.unwrap_or_default();
        let old_retry = (rec.unresolved.is_some()).then(|| next_retry(&rec));
        let now = now_ms();
        let started = std::time::Instant::now();
        rec.checked_at_ms = now;
        // the PLC state carries no labeler service or label key: a document
        // answered from it keeps those the last fetched document had (a
        // change to them comes with an `#identity`, which fetches afresh)
        let outcome = match (refresh, self.doc_from_plc(d)) {
            (false, Some(mut doc)) => {
                doc.labeler = rec.labeler.clone();
                doc.label_key = rec.label_key.clone();
                Ok(doc)
            }
            _ => self.resolve(d).await,
        };
        match &outcome {
            Ok(doc) => {
                metrics::RESOLUTIONS.with_label_values(&["resolved"]).inc();
                let at = crate::clock::rfc3339_ms(now).unwrap_or_default();
                crate::store::records::note_move(&mut rec.moves, &at, rec.pds.as_ref(), doc.pds.as_ref());
                rec.pds = doc.pds.clone();
                rec.handle = doc.handle.clone();
                rec.signing_key = doc.signing_key.clone();
                rec.labeler = doc.labeler.clone();
                rec.label_key = doc.label_key.clone();
                rec.problems = doc.problems.iter().map(|p| (*p).to_owned()).collect();
                rec.resolved_at_ms = Some(now);
                rec.first_resolved_ms = rec.first_resolved_ms.or(Some(now));
                rec.unresolved = None;
                rec.tombstoned = false;
                rec.failures = 0;
                rec.handle_check = match &doc.handle {
                    Some(h) => {
                        let check = self.handles.verify(h, d, now).await;
                        let label = if check.verified { "verified" } else { check.reason.as_deref().unwrap_or("") };
                        metrics::HANDLES.with_label_values(&[label]).inc();
                        Some(check)
                    }
                    None => None,
                };
            }
            Err(e) => {
                let reason = e.reason();
                metrics::RESOLUTIONS.with_label_values(&[reason]).inc();
                tracing::debug!(did = d, reason, error = %e, "DID did not resolve");
                // The reference directory answers 404 for tombstoned DIDs and
                // some deployments 410: both mean "not available".
                rec.tombstoned = matches!(e, ResolveError::Fetch(FetchError::Status(410)));
                rec.unresolved = Some(reason.to_owned());
                rec.failures = rec.failures.saturating_add(1);
            }
        }
        metrics::RESOLVE_SECONDS.observe(started.elapsed().as_secs_f64());
        let mut wb = Batch::default();
        if let Some(at) = old_retry {
            wb.unretry(at, d);
        }
        // the next check: a retry with backoff after a failure, else the
        // scheduled re-check (handle and document) after FRESH_FOR
        let next = if rec.unresolved.is_some() { next_retry(&rec) } else { now + FRESH_FOR.as_millis() as i64 };
        wb.retry(next, d);
        wb.put_identity(d, rec.clone());
        wb.mark(d);
        if let Some(p) = &rec.pds {
            wb.note_host(&self.store, p, "did_document")?;
        }
        self.store.commit(wb)?;
        Ok(rec)
    }
}

/// When a failed DID is next tried: exponential from [`RETRY_MIN`].
fn next_retry(rec: &IdentityRecord) -> i64 {
    let exp = RETRY_MIN.saturating_mul(1u32 << rec.failures.saturating_sub(1).min(16)).min(RETRY_MAX);
    rec.checked_at_ms + exp.as_millis() as i64
}

/// Why a DID is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Its account was seen (resolve if never resolved or stale).
    Seen,
    /// An `#identity` said it may have changed (fetch it fresh).
    Identity,
    /// Its retry or re-check time has come.
    Scheduled,
}

/// The writer's handle: asks for a resolution without ever waiting.
#[derive(Clone)]
pub struct ResolveQueue {
    tx: mpsc::Sender<(String, Ask)>,
    store: Writer,
}

impl ResolveQueue {
    /// Asks for `d` to be resolved (`refresh`: even if fresh). When the
    /// queue is full the DID goes on the retry schedule instead.
    pub fn request(&self, d: &str, refresh: bool) {
        let ask = if refresh { Ask::Identity } else { Ask::Seen };
        if let Err(mpsc::error::TrySendError::Full((d, _))) = self.tx.try_send((d.to_owned(), ask)) {
            metrics::RESOLUTIONS.with_label_values(&["queue_full"]).inc();
            let mut wb = Batch::default();
            wb.retry(now_ms(), &d);
            if let Err(e) = self.store.commit(wb) {
                tracing::error!(error = %e, "scheduling a resolution");
            }
        }
    }
}

/// DIDs being resolved, each with the ask that came for it meanwhile.
type InFlightSet = Arc<std::sync::Mutex<HashMap<String, Option<Ask>>>>;

/// A DID's place in the [`InFlightSet`], given up when its resolutions end
/// (also by a panic: a DID left in the set would take no ask again).
struct InFlight {
    set: InFlightSet,
    did: String,
    held: bool,
}

impl InFlight {
    fn take(set: &InFlightSet, did: &str) -> InFlight {
        set.lock().unwrap_or_else(|p| p.into_inner()).insert(did.to_owned(), None);
        InFlight { set: set.clone(), did: did.to_owned(), held: true }
    }

    /// The ask kept while the last resolution ran, if still `wanted`; else
    /// the place is given up, under the same lock (so no ask that comes
    /// meanwhile is lost).
    fn next(&mut self, wanted: impl Fn(Ask) -> bool) -> Option<Ask> {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        match set.get_mut(&self.did).and_then(Option::take) {
            Some(later) if wanted(later) => Some(later),
            _ => {
                set.remove(&self.did);
                self.held = false;
                None
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.held {
            self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.did);
        }
    }
}

/// Starts the resolver: workers and the retry sweep, until `cancel`.
pub fn start(resolver: Arc<Resolver>, cancel: CancellationToken) -> (ResolveQueue, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<(String, Ask)>(QUEUE_CAPACITY);
    let queue = ResolveQueue { tx: tx.clone(), store: resolver.store.clone() };
    let handle = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let slots = Arc::new(Semaphore::new(CONCURRENCY));
            // One resolution per DID at a time: two at once (an account
            // seen, answered from the PLC state, and its labeler record's
            // fresh fetch) each write the whole record, and the one that
            // wrote last won, so a fetched document's labeler could be
            // overwritten by the PLC state's none. An ask for a DID in
            // flight is kept (the strongest one) and taken when it ends.
            let inflight: InFlightSet = Default::default();
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = sweep.tick() => sweep_due(&resolver, &tx),
                    next = rx.recv() => {
                        let Some((d, ask)) = next else { break };
                        metrics::RESOLVE_QUEUE.set(rx.len() as i64);
                        if let Some(later) = inflight.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&d) {
                            // a fresh fetch outranks a scheduled check
                            if ask == Ask::Identity || (ask == Ask::Scheduled && later.is_none()) {
                                *later = Some(ask);
                            }
                            continue;
                        }
                        if !resolver.wanted(&d, ask) {
                            continue;
                        }
                        let mut place = InFlight::take(&inflight, &d);
                        let permit = slots.clone().acquire_owned().await.expect("semaphore never closed");
                        let r = resolver.clone();
                        let span = tracing::debug_span!("did", did = %d);
                        tokio::spawn(tracing::Instrument::instrument(async move {
                            let mut ask = Some(ask);
                            while let Some(a) = ask {
                                if let Err(e) = r.resolve_and_store(&d, a == Ask::Identity).await {
                                    tracing::error!(error = %e, "storing a resolution");
                                }
                                ask = place.next(|later| r.wanted(&d, later));
                            }
                            drop(permit);
                        }, span));
                    }
                }
            }
        },
        tracing::info_span!("resolve"),
    ));
    (queue, handle)
}

/// Queues every DID whose retry or re-check time has come.
fn sweep_due(resolver: &Resolver, tx: &mpsc::Sender<(String, Ask)>) {
    let now = now_ms();
    let store = &resolver.store;
    let due = match store.retries_due(now, tx.capacity().max(1)) {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(error = %e, "reading the resolution schedule");
            return;
        }
    };
    let mut taken = Batch::default();
    for (at, did) in due {
        resolver.recent.lock().expect("recent lock").remove(&did);
        if tx.try_send((did.clone(), Ask::Scheduled)).is_err() {
            break; // full: the rest waits for the next sweep
        }
        // queued: a new failure writes a new retry time
        taken.unretry(at, &did);
    }
    if let Err(e) = store.commit(taken) {
        tracing::error!(error = %e, "taking due resolutions off the schedule");
    }
}
