//! Where export lines come from: a local JSON-lines file (`.zst` allowed),
//! read and parsed on one thread while the loader writes on another; or the
//! directory's `/export` over HTTP, page by page (at most 1,000 lines),
//! politely (a User-Agent, backoff on 429 and 5xx, `Retry-After` honoured).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::{LoadStats, Loader};
use super::{parse_line, ExportOp, PlcError};
use crate::store::{self, StoreWriter, Writer};

/// Lines per page requested from the directory (its maximum).
pub const PAGE_LINES: usize = 1000;

/// Lines per chunk handed between the reader, parser and loader threads.
const CHUNK: usize = 4096;
/// Chunks in flight between stages (bounded; a stage waits when full).
const CHUNKS_IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("HTTP: {0}")]
    Http(String),
}

/// Progress reporting: a bar on a terminal, a log line every few seconds
/// otherwise.
pub struct Progress {
    started: Instant,
    last: Instant,
    every: Duration,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar when stderr is a terminal and `bar` allows it.
    pub fn new(total_bytes: Option<u64>, bar: bool) -> Progress {
        use std::io::IsTerminal;
        let bar = (bar && std::io::stderr().is_terminal()).then(|| {
            let b = match total_bytes {
                Some(t) => indicatif::ProgressBar::new(t),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let style = if total_bytes.is_some() {
                "{spinner} {msg} [{bar:30}] {percent}% ETA {eta}"
            } else {
                "{spinner} {msg}"
            };
            b.set_style(indicatif::ProgressStyle::with_template(style).expect("valid template").progress_chars("=> "));
            b
        });
        Progress { started: Instant::now(), last: Instant::now(), every: Duration::from_secs(5), bar }
    }

    fn report(&mut self, stats: &LoadStats, done_bytes: Option<u64>, total_bytes: Option<u64>) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = stats.lines as f64 / secs;
        let msg = format!("{} operations, {:.0} lines/s", stats.applied, rate);
        if let Some(b) = &self.bar {
            if let Some(d) = done_bytes {
                b.set_position(d);
            }
            b.set_message(msg);
            b.tick();
        } else if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            let eta = match (done_bytes, total_bytes) {
                (Some(d), Some(t)) if d > 0 => {
                    format!("{:.0}s", secs * (t.saturating_sub(d)) as f64 / d as f64)
                }
                _ => "unknown".into(),
            };
            tracing::info!(applied = stats.applied, rate = rate as u64, eta, "PLC export loading");
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// Counts bytes read through it (for progress over a compressed file).
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

type Chunk = Vec<Result<ExportOp, PlcError>>;

/// Lines read but not parsed: one buffer and each line's span.
#[derive(Default)]
struct RawChunk {
    buf: Vec<u8>,
    ends: Vec<(usize, usize)>,
}

/// Loads a local export file into the store; resumes after the stored
/// position (lines at or before it are skipped).
pub fn load_file(store: &impl StoreWriter, path: &Path) -> Result<LoadStats, SourceError> {
    load_file_until(store, path, None, &tokio_util::sync::CancellationToken::new())
}

/// [`load_file`], stopping at `cancel` (SIGINT/SIGTERM) between chunks: what
/// was applied is committed with its position, so the next run resumes
/// there; the stats say `stopped`. `bulk`: a bulk load over a store of
/// that many accounts ([`Loader::bulk`]).
pub fn load_file_until(
    store: &impl StoreWriter,
    path: &Path,
    bulk: Option<u64>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<LoadStats, SourceError> {
    let io_err = |source| SourceError::Io { path: path.display().to_string(), source };
    let file = File::open(path).map_err(io_err)?;
    let total = file.metadata().map(|m| m.len()).ok();
    let read = Arc::new(AtomicU64::new(0));
    let counting = Counting { inner: file, read: read.clone() };
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "zst") {
        Box::new(zstd::Decoder::new(counting).map_err(io_err)?)
    } else {
        Box::new(counting)
    };
    // reader → (chunks of raw lines) → parsers, one per core → (parsed
    // chunks, numbered) → this thread, which applies them in order
    let (raw_tx, raw_rx) = crossbeam_channel::bounded::<(u64, RawChunk)>(CHUNKS_IN_FLIGHT);
    let (parsed_tx, parsed_rx) = crossbeam_channel::bounded::<(u64, Chunk)>(CHUNKS_IN_FLIGHT);
    let reader_thread = std::thread::Builder::new()
        .name("plc-read".into())
        .spawn(move || -> std::io::Result<()> {
            let mut r = BufReader::with_capacity(1 << 20, reader);
            let mut chunk = RawChunk::default();
            let mut n = 0u64;
            loop {
                let start = chunk.buf.len();
                if r.read_until(b'\n', &mut chunk.buf)? == 0 {
                    break;
                }
                chunk.ends.push((start, chunk.buf.len()));
                if chunk.ends.len() == CHUNK {
                    if raw_tx.send((n, std::mem::take(&mut chunk))).is_err() {
                        return Ok(());
                    }
                    n += 1;
                }
            }
            if !chunk.ends.is_empty() {
                let _ = raw_tx.send((n, chunk));
            }
            Ok(())
        })
        .expect("spawning the reader thread");
    let parsers: Vec<_> = (0..crate::identity::verify::default_workers())
        .map(|i| {
            let (raw_rx, parsed_tx) = (raw_rx.clone(), parsed_tx.clone());
            std::thread::Builder::new()
                .name(format!("plc-parse-{i}"))
                .spawn(move || {
                    for (n, raw) in raw_rx {
                        let parsed = raw
                            .ends
                            .iter()
                            .map(|&(a, b)| raw.buf[a..b].trim_ascii())
                            .filter(|l| !l.is_empty())
                            .map(parse_line)
                            .collect();
                        if parsed_tx.send((n, parsed)).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawning a parser thread")
        })
        .collect();
    drop((raw_rx, parsed_tx));
    let mut loader = Loader::new(store)?;
    if let Some(n) = bulk {
        loader = loader.bulk(n);
    }
    let mut progress = Progress::new(total, true);
    let mut next = 0u64;
    let mut waiting = std::collections::BTreeMap::new();
    for (n, chunk) in parsed_rx {
        if cancel.is_cancelled() {
            // the reader and parsers end when their channels close
            loader.stats.stopped = true;
            tracing::warn!("PLC file load stopped by a signal; the position is kept for the next run");
            break;
        }
        waiting.insert(n, chunk);
        while let Some(chunk) = waiting.remove(&next) {
            for item in chunk {
                match item {
                    Ok(op) => loader.apply(op)?,
                    Err(e) => loader.reject(&e),
                }
            }
            next += 1;
        }
        progress.report(&loader.stats, Some(read.load(Ordering::Relaxed)), total);
    }
    loader.flush()?;
    progress.finish();
    if loader.stats.stopped {
        // let the threads see their channels closed
        return Ok(loader.stats);
    }
    for p in parsers {
        p.join().map_err(|_| SourceError::Http("parser thread panicked".into()))?;
    }
    reader_thread.join().map_err(|_| SourceError::Http("reader thread panicked".into()))?.map_err(io_err)?;
    Ok(loader.stats)
}

/// The `/export` URL for the next page after `position`.
pub fn export_url(base: &str, position: &super::load::Position) -> String {
    let base = base.trim_end_matches('/');
    let after = match (&position.seq, &position.created_at) {
        (Some(s), _) => s.to_string(),
        (None, Some(at)) => at.clone(),
        (None, None) => "0".into(),
    };
    format!("{base}/export?count={PAGE_LINES}&after={after}")
}

/// How often `run` asks the directory for new operations once caught up.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(15);

/// Keeps the PLC state current for `run`: loads the export from the stored
/// position until caught up, then polls for new operations every
/// `every` ([`FOLLOW_INTERVAL`] in `run`), until `cancel`. A failing
/// directory is logged and retried; it never stops the firehose.
pub async fn follow(store: Writer, base: String, every: Duration, cancel: tokio_util::sync::CancellationToken) {
    loop {
        match load_http(&store, &base, false, None, &cancel).await {
            Ok(s) if s.applied > 0 => {
                tracing::info!(applied = s.applied, "PLC export: caught up")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "PLC export follow failed; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Backoff after a failed page: exponential from 1 s to 5 min, or the
/// server's `Retry-After` if it asks for longer.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = Duration::from_secs(1u64 << attempt.min(8)).min(Duration::from_secs(300));
    retry_after.map_or(exp, |r| r.max(exp))
}

/// An HTTP client with the project's User-Agent and timeouts.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("instancemap/", env!("CARGO_PKG_VERSION"), " (PLC export reader)"))
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(120))
        .build()
        .expect("building the HTTP client")
}

/// Loads the directory's export from the stored position until caught up (a
/// short page), or until `cancel`. The form (sequence or legacy) follows
/// what the server answers: lines with `seq` continue by seq, lines without
/// by `createdAt`.
pub async fn load_http(
    store: &impl StoreWriter,
    base: &str,
    bar: bool,
    bulk: Option<u64>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<LoadStats, SourceError> {
    let client = http_client();
    let mut loader = Loader::new(store)?;
    if let Some(n) = bulk {
        loader = loader.bulk(n);
    }
    let mut progress = Progress::new(None, bar);
    let mut attempt = 0;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let url = export_url(base, &loader.position);
        let resp = tokio::select! {
            _ = cancel.cancelled() => break,
            r = client.get(&url).send() => r,
        };
        let page: Result<bytes::Bytes, (String, Option<Duration>)> = match resp {
            Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| (e.to_string(), None)),
            Ok(r) => {
                let status = r.status();
                if status.is_client_error() && status.as_u16() != 429 {
                    return Err(SourceError::Http(format!("{url}: {status}")));
                }
                let retry_after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                Err((status.to_string(), retry_after))
            }
            Err(e) => Err((e.to_string(), None)),
        };
        let page = match page {
            Ok(p) => p,
            Err((e, retry_after)) => {
                let d = backoff(attempt, retry_after);
                tracing::warn!(%url, error = %e, wait_s = d.as_secs(), "PLC export page failed; backing off");
                attempt += 1;
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(d) => continue,
                }
            }
        };
        attempt = 0;
        let before = loader.stats.applied + loader.stats.nullified_skipped;
        let mut lines = 0;
        tokio::task::block_in_place(|| -> Result<(), SourceError> {
            for l in page.split(|b| *b == b'\n') {
                let l = l.trim_ascii();
                if l.is_empty() {
                    continue;
                }
                lines += 1;
                match parse_line(l) {
                    Ok(op) => loader.apply(op)?,
                    Err(e) => loader.reject(&e),
                }
            }
            loader.flush()?;
            Ok(())
        })?;
        progress.report(&loader.stats, None, None);
        let new = loader.stats.applied + loader.stats.nullified_skipped - before;
        // A short page is the last one; a page with nothing new means the
        // server repeats itself (legacy timestamps): either way, caught up.
        if lines < PAGE_LINES || new == 0 {
            break;
        }
    }
    loader.flush()?;
    progress.finish();
    Ok(loader.stats)
}
