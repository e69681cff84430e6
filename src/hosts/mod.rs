//! The host table and its crawler. Hosts come from DID documents and the
//! PLC export (every PDS endpoint named) and from the relay's
//! `com.atproto.sync.listHosts`; the crawler fetches each host's
//! `describeServer`, `/xrpc/_health` and `listRepos` through the guarded
//! fetcher. A host is `pending` until first reached, then `online`, or
//! `offline` since a time, retried with exponential backoff; a reachable
//! host is recrawled every [`RECRAWL`].

pub mod contacts;
pub mod labelers;
pub mod network;
pub mod securitytxt;

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use crate::clock::now_ms;
use crate::metrics;
use crate::net::{FetchError, Fetcher};
use crate::store::{self, Batch, StoreReader, StoreWriter};

pub use crate::store::records::{
    host_merge as merge, CrawlOutcome, Describe, HostOp, HostRecord, RelayView, Repos, RECRAWL, RETRY_MAX, RETRY_MIN,
};

/// Hosts crawled at once.
pub const CONCURRENCY: usize = 16;
/// `listRepos` pages read per host per crawl (1,000 repos each).
pub const MAX_REPO_PAGES: usize = 200;
/// Longest one crawl of a host may take, all its requests together (a host
/// that drip-feeds its pages cannot hold a crawl cycle); listRepos stops
/// there, counted as incomplete.
pub const CRAWL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
/// Longest text kept from a host's describeServer or _health (a URL, an
/// email, a version): a host cannot bloat its record.
pub const MAX_TEXT: usize = 2048;

/// `s` if it is at most [`MAX_TEXT`] bytes and has no control character.
fn bounded(s: Option<String>) -> Option<String> {
    s.filter(|s| s.len() <= MAX_TEXT && !s.chars().any(char::is_control))
}

pub fn get(store: &impl StoreReader, host: &str) -> store::Result<Option<HostRecord>> {
    store.host(host)
}

/// Writes one change to a host (and the map's structure mark) in one batch:
/// a merge operand, never the whole record read before and written after.
pub fn write(store: &impl StoreWriter, host: &str, op: &HostOp) -> store::Result<()> {
    let mut b = Batch::default();
    b.host(host, op.clone());
    store.commit(b)
}

/// Records that `host` (a normalised endpoint) was named by `source`;
/// `false` when a host new to the table was not admitted (see
/// [`store::admission`]).
pub fn note(store: &impl StoreWriter, host: &str, source: &str) -> store::Result<bool> {
    let mut b = Batch::default();
    let admitted = b.note_host(store, host, source)?;
    store.commit(b)?;
    Ok(admitted)
}

/// Replaces a host's whole record.
pub fn put(store: &impl StoreWriter, host: &str, rec: &HostRecord) -> store::Result<()> {
    write(store, host, &HostOp::Replace(Box::new(rec.clone())))
}

#[derive(Deserialize)]
struct RawDescribe {
    did: Option<String>,
    #[serde(default, rename = "availableUserDomains")]
    available_user_domains: Vec<String>,
    #[serde(rename = "inviteCodeRequired")]
    invite_code_required: Option<bool>,
    #[serde(default, rename = "phoneVerificationRequired")]
    phone_verification_required: Option<bool>,
    #[serde(default)]
    links: Option<RawLinks>,
    #[serde(default)]
    contact: Option<RawContact>,
}

#[derive(Deserialize)]
struct RawLinks {
    #[serde(rename = "privacyPolicy")]
    privacy_policy: Option<String>,
    #[serde(rename = "termsOfService")]
    terms_of_service: Option<String>,
}

#[derive(Deserialize)]
struct RawContact {
    email: Option<String>,
}

#[derive(Deserialize)]
struct RawRepos {
    cursor: Option<String>,
    #[serde(default)]
    repos: Vec<RawRepo>,
}

#[derive(Deserialize)]
struct RawRepo {
    #[serde(default)]
    did: String,
    #[serde(default = "yes")]
    active: bool,
    status: Option<String>,
}

fn yes() -> bool {
    true
}

fn json<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, FetchError> {
    serde_json::from_slice(b).map_err(|_| FetchError::Transport("response is not the expected JSON".into()))
}

/// Crawls one host now and stores the outcome (one [`HostOp::Crawled`]
/// operand: nothing read before the network is written back).
pub async fn crawl(store: &impl StoreWriter, fetcher: &Fetcher, host: &str) -> store::Result<HostRecord> {
    crawl_within(store, fetcher, host, CRAWL_DEADLINE).await
}

/// [`crawl`] with its deadline.
pub async fn crawl_within(
    store: &impl StoreWriter,
    fetcher: &Fetcher,
    host: &str,
    within: std::time::Duration,
) -> store::Result<HostRecord> {
    let now = now_ms();
    let deadline = tokio::time::Instant::now() + within;
    let late = || FetchError::Transport("the crawl's deadline passed".into());
    let describe =
        tokio::time::timeout_at(deadline, fetcher.get(&format!("{host}/xrpc/com.atproto.server.describeServer")))
            .await
            .unwrap_or_else(|_| Err(late()))
            .and_then(|b| json::<RawDescribe>(&b));
    let outcome = match describe {
        Ok(d) => {
            let (links, contact) = (d.links, d.contact);
            // every field bounded: a DID that is a DID, at most 64 user
            // domains of handle syntax, texts of at most MAX_TEXT bytes
            let describe = Describe {
                did: d.did.filter(|x| x.len() <= MAX_TEXT && crate::types::is_did(x)),
                available_user_domains: d
                    .available_user_domains
                    .into_iter()
                    .filter(|u| u.len() <= 256 && crate::types::is_handle(u.trim_matches('.')))
                    .take(64)
                    .collect(),
                invite_code_required: d.invite_code_required,
                phone_verification_required: d.phone_verification_required,
                privacy_policy: bounded(links.as_ref().and_then(|l| l.privacy_policy.clone())),
                terms_of_service: bounded(links.and_then(|l| l.terms_of_service)),
                contact_email: bounded(contact.and_then(|c| c.email)),
            };
            let version = tokio::time::timeout_at(deadline, fetcher.get(&format!("{host}/xrpc/_health")))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["version"].as_str().filter(|v| v.len() <= 64).map(str::to_owned));
            let mut views = Batch::default();
            let repos = match list_repos(fetcher, host, deadline).await {
                Ok((mut repos, listed)) => {
                    observe_listed(store, host, listed, &mut repos, &mut views, now)?;
                    Some(repos)
                }
                Err(_) => None,
            };
            metrics::HOST_CRAWLS.with_label_values(&["online"]).inc();
            store.commit(views)?;
            let addresses = fetcher.addresses(host).await.iter().map(ToString::to_string).collect();
            CrawlOutcome::Reached { describe: Box::new(describe), version, repos, addresses }
        }
        Err(e) => {
            metrics::HOST_CRAWLS.with_label_values(&[e.reason()]).inc();
            CrawlOutcome::Failed { reason: e.reason().to_owned() }
        }
    };
    write(store, host, &HostOp::Crawled { at_ms: now, outcome })?;
    Ok(get(store, host)?.unwrap_or_default())
}

/// One account as a host lists it: DID, active, status label.
type Listed = (String, bool, &'static str);

async fn list_repos(
    fetcher: &Fetcher,
    host: &str,
    deadline: tokio::time::Instant,
) -> Result<(Repos, Vec<Listed>), FetchError> {
    let mut repos = Repos::default();
    let mut listed: Vec<Listed> = Vec::new();
    let mut cursor: Option<String> = None;
    for page_no in 0..MAX_REPO_PAGES {
        let mut url = format!("{host}/xrpc/com.atproto.sync.listRepos?limit=1000");
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(&url_escape(c));
        }
        let body = match tokio::time::timeout_at(deadline, fetcher.get(&url)).await {
            Ok(b) => b?,
            // out of time: what was counted stands, incomplete
            Err(_) if page_no > 0 => {
                tracing::warn!(host, pages = page_no, "listRepos stopped at the crawl's deadline");
                return Ok((repos, listed));
            }
            Err(_) => return Err(FetchError::Transport("the crawl's deadline passed".into())),
        };
        let page: RawRepos = json(&body)?;
        for r in &page.repos {
            repos.total += 1;
            let label = if r.active {
                repos.active += 1;
                "active"
            } else {
                // statuses as the bounded labels of the lexicon's known
                // values: a host cannot add a key per string it makes up
                let label = match r.status.as_deref() {
                    None => "none",
                    s => crate::store::status_label(Some(false), s),
                };
                *repos.inactive.entry(label.to_owned()).or_default() += 1;
                label
            };
            if r.did.len() <= 2048 && crate::types::is_did(&r.did) {
                listed.push((r.did.clone(), r.active, label));
            }
        }
        match page.cursor {
            Some(c) if !page.repos.is_empty() && cursor.as_deref() != Some(c.as_str()) => cursor = Some(c),
            _ => {
                repos.complete = true;
                break;
            }
        }
    }
    Ok((repos, listed))
}

/// Each listed account's status as the host's word, kept for the accounts
/// the host really hosts (the account's DID document names it: a host
/// listing others' accounts speaks for nobody), and the disagreements with
/// the relay's and the PLC directory's word counted.
fn observe_listed(
    store: &impl StoreReader,
    host: &str,
    listed: Vec<Listed>,
    repos: &mut Repos,
    b: &mut Batch,
    now: i64,
) -> store::Result<()> {
    use crate::store::records::{status_disagreement, PdsView};
    for (did, active, label) in listed {
        let view = store.account_view(&did)?;
        // a tombstoned DID has no PDS: a host listing it active disagrees
        // with the PLC directory (counted on this host only)
        if view.plc.as_ref().is_some_and(|p| p.tombstoned) {
            if active {
                *repos.disagreements.entry("pds_active_plc_tombstoned".into()).or_default() += 1;
            }
            continue;
        }
        // its current PDS: the map's word, else the documents' (before
        // the map has placed it)
        let current = match &view.assignment {
            Some(a) => a.host.clone(),
            None => view
                .identity
                .as_ref()
                .and_then(|i| i.pds.clone())
                .or_else(|| view.plc.as_ref().and_then(|p| p.pds.clone())),
        };
        if current.as_deref() != Some(host) {
            *repos.disagreements.entry("listed_elsewhere".into()).or_default() += 1;
            continue;
        }
        let relay = view.firehose.as_ref().and_then(|s| s.active.map(|a| (a, s.status_label())));
        if let Some(kind) = status_disagreement(active, label, relay, false) {
            *repos.disagreements.entry(kind.into()).or_default() += 1;
        }
        b.put_pds_view(&did, PdsView { host: host.to_owned(), active, status: label.to_owned(), seen_at_ms: now });
    }
    Ok(())
}

/// A query-string value, percent-encoded.
fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[derive(Deserialize)]
struct RawHosts {
    cursor: Option<String>,
    #[serde(default)]
    hosts: Vec<RawHost>,
}

#[derive(Deserialize)]
struct RawHost {
    hostname: String,
    seq: Option<i64>,
    #[serde(rename = "accountCount")]
    account_count: Option<i64>,
    status: Option<String>,
}

/// Reads the relay's `listHosts` (all pages) into the host table; returns
/// the number of hosts listed. `relay` is the relay's http(s) base URL.
pub async fn list_hosts(store: &impl StoreWriter, fetcher: &Fetcher, relay: &str) -> Result<usize, FetchError> {
    let mut cursor: Option<String> = None;
    let mut n = 0;
    loop {
        let mut url = format!("{}/xrpc/com.atproto.sync.listHosts?limit=1000", relay.trim_end_matches('/'));
        if let Some(c) = &cursor {
            url.push_str("&cursor=");
            url.push_str(&url_escape(c));
        }
        let page: RawHosts = json(&fetcher.get(&url).await?)?;
        for h in &page.hosts {
            let host = match crate::types::normalize_endpoint(&format!("https://{}", h.hostname)) {
                Ok(host) => host,
                Err(why) => {
                    metrics::HOST_CRAWLS.with_label_values(&["relay_host_refused"]).inc();
                    tracing::warn!(hostname = %h.hostname.escape_debug(), why, "relay listHosts names what is not a host; skipped");
                    continue;
                }
            };
            let view = RelayView {
                status: h.status.clone(),
                account_count: h.account_count,
                seq: h.seq,
                seen_at_ms: now_ms(),
            };
            if let Err(e) = write(store, &host, &HostOp::Relay(view)) {
                tracing::error!(error = %e, "storing a relay's host");
            }
            n += 1;
        }
        match page.cursor {
            Some(c) if !page.hosts.is_empty() && cursor.as_deref() != Some(c.as_str()) => cursor = Some(c),
            _ => return Ok(n),
        }
    }
}

/// Crawls every host whose check is due (every host with `force`); returns
/// how many were crawled.
pub async fn crawl_due(store: &impl StoreWriter, fetcher: &Fetcher, force: bool) -> store::Result<usize> {
    let now = if force { i64::MAX } else { now_ms() };
    let mut due = Vec::new();
    for (endpoint, rec) in store.hosts()? {
        if rec.next_check_ms <= now {
            due.push(endpoint);
        }
    }
    let n = due.len();
    futures_util::stream::iter(due)
        .map(|h| async move {
            if let Err(e) = crawl(store, fetcher, &h).await {
                tracing::error!(error = %e, "storing a host crawl");
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    Ok(n)
}

/// The relay's http(s) base from its firehose endpoint.
pub fn relay_http_base(endpoint: &str) -> String {
    let base = endpoint.strip_suffix(crate::firehose::subscribe::SUBSCRIBE_PATH).unwrap_or(endpoint);
    if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        base.to_owned()
    }
}

/// How often `run` looks for hosts due a crawl, and re-reads `listHosts`.
pub const CRAWL_EVERY: Duration = Duration::from_secs(60);
pub const LIST_HOSTS_EVERY: Duration = Duration::from_secs(6 * 3600);

/// `run`'s crawler: the relay's `listHosts` now and every
/// [`LIST_HOSTS_EVERY`], due hosts every [`CRAWL_EVERY`], until `cancel`.
pub async fn keep_crawling(
    store: crate::store::Writer,
    fetcher: Fetcher,
    relay_http: String,
    every: Duration,
    dns: Option<std::net::SocketAddr>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let checker = contacts::Checker::new(fetcher.clone(), dns);
    let mut last_list: Option<std::time::Instant> = None;
    loop {
        if last_list.is_none_or(|t| t.elapsed() >= LIST_HOSTS_EVERY) {
            match list_hosts(&store, &fetcher, &relay_http).await {
                Ok(n) => tracing::info!(hosts = n, "relay listHosts read"),
                Err(e) => tracing::warn!(error = %e, "relay listHosts failed"),
            }
            last_list = Some(std::time::Instant::now());
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = crawl_due(&store, &fetcher, false) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "host crawl");
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = contacts::check_due(&store, store.store(), &checker) => match r {
                Ok(0) => {}
                Ok(n) => tracing::info!(checked = n, "contacts checked"),
                Err(e) => tracing::error!(error = %e, "contact checks"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
