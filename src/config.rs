//! Command line and `INSTANCEMAP_*` environment → validated configuration,
//! before any socket opens.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::firehose::subscribe::SUBSCRIBE_PATH;

/// The default relay: the main Bluesky relay.
pub const DEFAULT_RELAY: &str = "wss://bsky.network";
/// The default PLC directory.
pub const DEFAULT_PLC: &str = "https://plc.directory";
/// The default database directory.
pub const DEFAULT_DB: &str = "instancemap-db";
/// The default listen address for `/metrics` and `/healthz`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Maps the ATProto network into instances.
#[derive(Debug, Parser)]
#[command(name = "instancemap", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow a relay's firehose into the database, serving /metrics and /healthz.
    Run(RunArgs),
    /// Save a relay's raw frames to a file (`[u32 LE length][frame]`…, zstd if it ends in .zst).
    Record(RecordArgs),
    /// Run saved frame files through the ingest pipeline into the database, then exit.
    Replay(ReplayArgs),
    /// Print what the database holds.
    Stats(StatsArgs),
    /// Load the PLC directory's export (or a local copy) into the database:
    /// PDS, handle, signing key and tombstone state of every did:plc.
    BackfillPlc(BackfillPlcArgs),
    /// Show what is known about one account: firehose state and PLC state.
    Account(AccountArgs),
    /// Crawl every known host once (describeServer, _health, listRepos), after
    /// reading the relay's listHosts.
    CrawlHosts(CrawlHostsArgs),
    /// Show what is known about one host.
    Host(HostArgs),
    /// Recompute the instance map from the hosts and accounts in the database.
    Recluster(ReclusterArgs),
    /// List instances, largest first.
    Instances(InstancesArgs),
    /// Show one instance: hosts, domains, evidence, governance, members,
    /// activity and openness, observers' disagreements, labelers.
    Instance(InstanceArgs),
    /// Who is responsible for an account (a DID, a handle or an at:// URI),
    /// and who to tell for a report reason: the API's lookup.
    Lookup(LookupArgs),
    /// The map's history (JSON): migration flows, growth, sizes as of a day.
    History(HistoryArgs),
    /// Serve the query API read-only over a database copy (a checkpoint), or
    /// beside a running writer as a RocksDB secondary (`--follow`).
    Serve(ServeArgs),
    /// Write a consistent snapshot (accounts, instances, hosts, moves) as
    /// Parquet, NDJSON or CSV files.
    Export(ExportArgs),
    /// Copy a stopped database to a new directory (a RocksDB checkpoint; for a
    /// running `run`, POST dev.instancemap.admin.createCheckpoint instead).
    Checkpoint(CheckpointArgs),
    /// Show, set or delete a source's cursor (the last seq applied from a
    /// relay or a replayed file), e.g. after frames were refused as
    /// implausible. Needs the database stopped.
    Cursor(CursorArgs),
}

#[derive(Debug, Args)]
pub struct CursorArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The source (a relay URL, or `replay:<file name>`); without it, every
    /// cursor is listed.
    #[arg(long)]
    pub source: Option<String>,
    /// Set the cursor to this seq (the next run asks the relay for what
    /// follows it).
    #[arg(long, conflicts_with = "delete", requires = "source")]
    pub set: Option<i64>,
    /// Delete the cursor (the next run starts from the relay's live stream).
    #[arg(long, requires = "source")]
    pub delete: bool,
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Directory to create (must not exist; same filesystem for hard links).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Requests per second per client address (bursts of twice that); 0: no limit.
    #[arg(long, env = "INSTANCEMAP_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,
    /// Longest a request may take, in seconds.
    #[arg(long, env = "INSTANCEMAP_REQUEST_TIMEOUT", default_value_t = 10)]
    pub request_timeout: u64,
    /// Bearer token enabling the admin routes (none: no admin routes).
    #[arg(long, env = "INSTANCEMAP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A MaxMind-format database (GeoLite2 or DB-IP lite ASN or country,
    /// IPinfo lite) mapping host addresses to network operators and
    /// countries; repeatable (comma-separated in the environment). None:
    /// the network view is off.
    #[arg(long, env = "INSTANCEMAP_MMDB", value_delimiter = ',')]
    pub mmdb: Vec<std::path::PathBuf>,
    /// Addresses of reverse proxies whose X-Forwarded-For names the client
    /// (comma-separated); without, the header is ignored.
    #[arg(long, env = "INSTANCEMAP_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<std::net::IpAddr>,
}

/// The `--mmdb` databases opened (`None` without any).
pub fn open_networks(
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Option<std::sync::Arc<crate::hosts::network::Networks>>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let n = crate::hosts::network::Networks::open(paths).map_err(|e| anyhow::anyhow!("--mmdb {e}"))?;
    Ok(Some(std::sync::Arc::new(n)))
}

impl ApiArgs {
    /// The `--mmdb` databases opened (`None` without any).
    pub fn networks(&self) -> anyhow::Result<Option<std::sync::Arc<crate::hosts::network::Networks>>> {
        open_networks(&self.mmdb)
    }

    pub fn limits(&self) -> crate::api::Limits {
        crate::api::Limits {
            timeout: std::time::Duration::from_secs(self.request_timeout.max(1)),
            rate_per_client: self.rate_limit,
            trusted_proxies: self.trusted_proxy.clone(),
            ..crate::api::Limits::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Address for the API, /metrics and /healthz.
    #[arg(long, env = "INSTANCEMAP_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Follow a running writer's database as a RocksDB secondary, catching
    /// up every few seconds (its own files go in this directory).
    #[arg(long, env = "INSTANCEMAP_SECONDARY_DIR")]
    pub follow: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Parquet,
    Ndjson,
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// File format.
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: ExportFormat,
    /// Directory for the files (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(subcommand)]
    pub what: HistoryWhat,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Subcommand)]
pub enum HistoryWhat {
    /// Accounts migrating between instances per day (`YYYY-MM-DD` bounds, inclusive).
    Flows {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Registered accounts of one instance per day (days with a change).
    Growth {
        /// Instance id (`inst_…`).
        id: String,
        /// Last day (default: today).
        #[arg(long)]
        to: Option<String>,
    },
    /// Instance sizes at the end of a day, or where one account was then.
    AsOf {
        /// `YYYY-MM-DD` or an RFC 3339 time.
        at: String,
        /// An account to place instead of the whole map.
        #[arg(long)]
        did: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// The instance id (`inst_…`), or a host it contains.
    pub id: String,
    #[command(flatten)]
    pub db: DbArg,
    /// MaxMind-format databases placing its hosts' addresses (as for `serve`).
    #[arg(long, env = "INSTANCEMAP_MMDB", value_delimiter = ',')]
    pub mmdb: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// A DID, a handle, or an `at://` URI of a record.
    pub subject: String,
    /// A report reason (`com.atproto.moderation.defs#reasonSpam` or
    /// `tools.ozone.report.defs#reason…`; the part after `#` is enough):
    /// the routes for it. Without: every reason the operator routes.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub db: DbArg,
    /// One JSON object (the API's answer) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReclusterArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub overrides: OverridesArg,
}

#[derive(Debug, Args)]
pub struct OverridesArg {
    /// Overrides file (TOML: `[[pin]]` hosts to join, `[[split]]` hosts to
    /// keep apart). Kept in the database: later commands without it use the
    /// ones last given; an empty file clears them.
    #[arg(long, env = "INSTANCEMAP_OVERRIDES")]
    pub overrides: Option<PathBuf>,
}

impl OverridesArg {
    /// The parsed file (`None`: none given; the ones in force in the store
    /// apply, see [`crate::cluster::overrides::in_force`]).
    pub fn load(&self) -> anyhow::Result<Option<crate::cluster::overrides::Overrides>> {
        use anyhow::Context;
        match &self.overrides {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                crate::cluster::overrides::Overrides::parse(&text)
                    .map(Some)
                    .with_context(|| format!("overrides file {}", p.display()))
            }
            None => Ok(None),
        }
    }
}

#[derive(Debug, Args)]
pub struct InstancesArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// One JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CrawlHostsArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Relay whose listHosts is read first (as for `run`).
    #[arg(long, env = "INSTANCEMAP_RELAY", default_value = DEFAULT_RELAY)]
    pub relay: String,
    /// Do not read the relay's listHosts.
    #[arg(long)]
    pub no_list_hosts: bool,
    /// Let requests reach loopback addresses (local test networks).
    #[arg(long, env = "INSTANCEMAP_ALLOW_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_loopback: bool,
    /// DNS server (`IP:PORT`) for host names and contact checks instead of the
    /// system's (as for `run`).
    #[arg(long, env = "INSTANCEMAP_DNS")]
    pub dns: Option<std::net::SocketAddr>,
    /// Do not check contacts (security.txt, mail domains, URLs, labelers) after
    /// the crawl.
    #[arg(long)]
    pub no_contacts: bool,
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// The host: `pds.example.com` or its URL.
    pub host: String,
    #[command(flatten)]
    pub db: DbArg,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DbArg {
    /// Database directory (RocksDB).
    #[arg(long, env = "INSTANCEMAP_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,
    /// RocksDB's block cache, shared by every column family, in MiB
    /// (default: a quarter of the machine's memory, 256 MiB to 8 GiB). The
    /// API serves a read on its async worker when every block it needs is
    /// cached, so a cache that holds the account families keeps lookups
    /// off the blocking pool.
    #[arg(long, env = "INSTANCEMAP_BLOCK_CACHE_MB")]
    pub block_cache_mb: Option<usize>,
}

impl Command {
    /// The command's database argument (every command but `record` has one).
    pub fn db(&self) -> Option<&DbArg> {
        Some(match self {
            Command::Run(a) => &a.db,
            Command::Record(_) => return None,
            Command::Replay(a) => &a.db,
            Command::Stats(a) => &a.db,
            Command::BackfillPlc(a) => &a.db,
            Command::Account(a) => &a.db,
            Command::CrawlHosts(a) => &a.db,
            Command::Host(a) => &a.db,
            Command::Recluster(a) => &a.db,
            Command::Instances(a) => &a.db,
            Command::Instance(a) => &a.db,
            Command::Lookup(a) => &a.db,
            Command::History(a) => &a.db,
            Command::Serve(a) => &a.db,
            Command::Export(a) => &a.db,
            Command::Checkpoint(a) => &a.db,
            Command::Cursor(a) => &a.db,
        })
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Relay to follow: `wss://host[:port]` or `ws://` for a local relay; the
    /// subscribeRepos path is added when the URL has none.
    #[arg(long, env = "INSTANCEMAP_RELAY", default_value = DEFAULT_RELAY)]
    pub relay: String,
    #[command(flatten)]
    pub db: DbArg,
    /// Address for the API, /metrics and /healthz.
    #[arg(long, env = "INSTANCEMAP_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub verify: VerifyArg,
    /// PLC directory whose export `run` loads and then follows.
    #[arg(long, env = "INSTANCEMAP_PLC", default_value = DEFAULT_PLC)]
    pub plc: String,
    /// Do not load or follow the PLC export.
    #[arg(long, env = "INSTANCEMAP_NO_PLC", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_plc: bool,
    /// Do not resolve DIDs on demand.
    #[arg(long, env = "INSTANCEMAP_NO_RESOLVE", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_resolve: bool,
    /// A DNS server (`ip:port`) for handle checks and contact mail domains
    /// instead of the system's.
    #[arg(long, env = "INSTANCEMAP_DNS")]
    pub dns: Option<SocketAddr>,
    /// Do not crawl hosts (describeServer, listRepos) or read the relay's listHosts.
    #[arg(long, env = "INSTANCEMAP_NO_CRAWL", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_crawl: bool,
    /// Let requests to hosts named by network data reach loopback addresses
    /// (for local test networks; private and link-local stay refused).
    #[arg(long, env = "INSTANCEMAP_ALLOW_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_loopback: bool,
    #[command(flatten)]
    pub overrides: OverridesArg,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArg {
    /// Do not check commit signatures (for archives whose keys have since
    /// rotated). Checks are on by default: a commit whose signature fails
    /// against the account's known key is counted and not applied.
    #[arg(long, env = "INSTANCEMAP_NO_VERIFY", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_verify: bool,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Relay to record from (as for `run`).
    #[arg(long, env = "INSTANCEMAP_RELAY", default_value = DEFAULT_RELAY)]
    pub relay: String,
    /// Output file; compressed with zstd when it ends in `.zst`.
    #[arg(long)]
    pub out: PathBuf,
    /// Start after this seq (default: live only).
    #[arg(long)]
    pub cursor: Option<i64>,
    /// Stop after this many frames (default: until Ctrl-C).
    #[arg(long)]
    pub max_frames: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Cursor name every file's events are deduplicated under, as one
    /// stream (chunks of one recording; the relay URL the frames came from,
    /// as `run` names it, to continue with `run`). Without it each file has
    /// its own cursor, `replay:<file name>`: archives of several hosts (each
    /// numbering its seqs from 1) are all applied, and the same replay
    /// again applies nothing.
    #[arg(long)]
    pub source: Option<String>,
    #[command(flatten)]
    pub verify: VerifyArg,
    /// Frame files, applied in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AccountArgs {
    /// The account's DID.
    pub did: String,
    #[command(flatten)]
    pub db: DbArg,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackfillPlcArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// PLC directory to read `/export` from.
    #[arg(long, env = "INSTANCEMAP_PLC", default_value = DEFAULT_PLC)]
    pub plc: String,
    /// Read this local export file (JSON lines, `.zst` allowed) instead of
    /// the directory's `/export` (it wins over `--plc`).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("relay URL {0:?}: must start with ws:// or wss://")]
    Scheme(String),
    #[error("relay URL {0:?}: no host")]
    NoHost(String),
    #[error("relay URL {0:?}: must not carry a query or fragment (the cursor is managed by instancemap)")]
    Query(String),
    #[error("relay URL {0:?}: path must be empty or {SUBSCRIBE_PATH}")]
    Path(String),
}

/// Normalises a relay URL to its subscribeRepos endpoint:
/// `wss://bsky.network` → `wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos`.
/// The host is lower-cased and a trailing slash dropped, so one relay has one
/// cursor name.
pub fn relay_endpoint(relay: &str) -> Result<String, ConfigError> {
    let relay = relay.trim();
    let (scheme, rest) = if let Some(r) = relay.strip_prefix("wss://") {
        ("wss", r)
    } else if let Some(r) = relay.strip_prefix("ws://") {
        ("ws", r)
    } else {
        return Err(ConfigError::Scheme(relay.to_owned()));
    };
    if rest.contains(['?', '#']) {
        return Err(ConfigError::Query(relay.to_owned()));
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(ConfigError::NoHost(relay.to_owned()));
    }
    let path = path.trim_end_matches('/');
    if !path.is_empty() && path != SUBSCRIBE_PATH {
        return Err(ConfigError::Path(relay.to_owned()));
    }
    Ok(format!("{scheme}://{}{SUBSCRIBE_PATH}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_normalise_to_one_endpoint() {
        let want = "wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos";
        for u in ["wss://bsky.network", "wss://BSKY.network/", &format!("wss://bsky.network{SUBSCRIBE_PATH}")] {
            assert_eq!(relay_endpoint(u).unwrap(), want, "{u}");
        }
        assert_eq!(relay_endpoint("ws://127.0.0.1:2470").unwrap(), format!("ws://127.0.0.1:2470{SUBSCRIBE_PATH}"));
        assert!(matches!(relay_endpoint("https://bsky.network"), Err(ConfigError::Scheme(_))));
        assert!(matches!(relay_endpoint("wss://bsky.network?cursor=5"), Err(ConfigError::Query(_))));
        assert!(matches!(relay_endpoint("wss:///x"), Err(ConfigError::NoHost(_))));
        assert!(matches!(relay_endpoint("wss://h/other"), Err(ConfigError::Path(_))));
    }
}
