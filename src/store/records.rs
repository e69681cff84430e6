//! Every stored record type whose merge or meaning more than one stage
//! shares, on the store's floor: the PLC state and its merge operator, the
//! last resolution, the host record and its merge operator. The stages that
//! produce them re-export them (`plc::load::PlcRecord`, `hosts::HostRecord`,
//! `identity::resolve::IdentityRecord`); nothing here imports a stage.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------- PLC

/// What is kept per did:plc.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlcRecord {
    /// Current PDS endpoint (normalised), if the state names one.
    pub pds: Option<String>,
    /// Handle claimed (first valid `at://` of `alsoKnownAs`), unverified.
    pub handle: Option<String>,
    /// `#atproto` signing key (Multikey).
    pub signing_key: Option<String>,
    pub tombstoned: bool,
    /// CID of the operation the state comes from.
    pub head: String,
    /// `createdAt` of that operation.
    pub updated_at: String,
    /// `createdAt` of the genesis operation (the first applied).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Operations applied for this DID (nullified ones not counted).
    pub ops: u32,
    /// Operations whose `prev` was not the head: recoveries that forked
    /// (nullified) later operations.
    pub forks: u32,
    /// PDS changes (migrations), oldest first; the last [`MAX_MOVES`].
    #[serde(default)]
    pub moves: Vec<Move>,
    /// `#atproto` keys no longer in force, oldest first; the last
    /// [`MAX_RETIRED_KEYS`]. With `signing_key` (in force since the last
    /// one's `until`, or since genesis) this is the account's key history, so
    /// a commit can be checked against the key of its time. Empty for an
    /// account that never changed its key (most), and not written then;
    /// records stored before it existed read as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_keys: Vec<RetiredKey>,
    /// The PDS the genesis operation named, when the first operation
    /// applied was the genesis (`prev` none): the host the account was
    /// created on. `None` when the log was read from a later point, or for
    /// records stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_pds: Option<String>,
}

/// A signing key that was in force from `from` until `until` (the
/// `createdAt` of the operation that changed it or tombstoned the DID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredKey {
    pub key: String,
    pub from: String,
    pub until: String,
}

/// Retired keys kept per account (the record stays bounded; the oldest go
/// first, and commits signed with them then fail as `sig_invalid`).
pub const MAX_RETIRED_KEYS: usize = 64;

/// How far back a recovery operation can nullify (the PLC spec's 72-hour
/// recovery window): keys set by operations this close before a fork may
/// come from nullified operations.
pub const RECOVERY_WINDOW_US: i64 = 72 * 3600 * 1_000_000;

/// One PDS change of an account: when (the operation's `createdAt`, or the
/// resolution time), from which endpoint, to which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub at: String,
    pub from: String,
    pub to: String,
}

/// Moves kept per account (the record stays bounded).
pub const MAX_MOVES: usize = 64;

/// Appends a move when the PDS changes from one endpoint to another.
pub fn note_move(moves: &mut Vec<Move>, at: &str, from: Option<&String>, to: Option<&String>) {
    if let (Some(from), Some(to)) = (from, to) {
        if from != to {
            if moves.len() >= MAX_MOVES {
                moves.remove(0);
            }
            moves.push(Move { at: at.to_owned(), from: from.clone(), to: to.clone() });
        }
    }
}

/// One operation as written to the `plc` family: a merge operand that the
/// family's merge operator ([`plc_merge`]) folds into the DID's [`PlcRecord`],
/// so a load writes blindly (no read per operation) and RocksDB applies the
/// operands in order when the record is read or compacted.
/// Field names are one letter: there is one operand per operation of the
/// export (86M), so every byte counts in the write path and the WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlcOperand {
    #[serde(rename = "c")]
    pub cid: String,
    #[serde(rename = "v")]
    pub prev: Option<String>,
    #[serde(rename = "t")]
    pub created_at: String,
    #[serde(rename = "x")]
    pub tombstone: bool,
    #[serde(rename = "p")]
    pub pds: Option<String>,
    #[serde(rename = "h")]
    pub handle: Option<String>,
    #[serde(rename = "k")]
    pub signing_key: Option<String>,
}

impl PlcRecord {
    /// Applies one operation: its state replaces the record's; a `prev`
    /// that is not the current head is a fork (a recovery that nullified
    /// later operations).
    ///
    /// The key in force before the operation is retired (with its span)
    /// when the operation tombstones the DID or sets another key. A fork
    /// nullifies operations up to 72 hours old that the record already
    /// applied: keys set within that window before the fork are dropped
    /// from the history rather than kept as ever having been in force (a
    /// legitimate one among them is lost too, which only makes its commits
    /// fail).
    pub fn apply(&mut self, op: PlcOperand) {
        // the key in force until this operation
        let mut live_key = if self.tombstoned { None } else { self.signing_key.clone() };
        if self.ops > 0 && op.prev.as_deref() != Some(self.head.as_str()) {
            self.forks += 1;
            let window_start = crate::clock::parse_time_us(&op.created_at).map(|t| t - RECOVERY_WINDOW_US);
            let suspect = |from: &str| match (window_start, crate::clock::parse_time_us(from)) {
                (Some(w), Some(f)) => f >= w,
                _ => true,
            };
            self.retired_keys.retain(|r| !suspect(&r.from));
            if suspect(self.key_since()) {
                live_key = None;
            }
        }
        if self.ops == 0 {
            self.created_at = Some(op.created_at.clone());
            if op.prev.is_none() {
                self.genesis_pds = op.pds.clone();
            }
        }
        let retire = match (&live_key, op.tombstone) {
            (Some(_), true) => live_key,
            (Some(k), false) if op.signing_key.as_ref() != Some(k) => live_key,
            _ => None,
        };
        if let Some(key) = retire {
            let from = self.key_since().to_owned();
            if self.retired_keys.len() >= MAX_RETIRED_KEYS {
                self.retired_keys.remove(0);
            }
            self.retired_keys.push(RetiredKey { key, from, until: op.created_at.clone() });
        }
        self.ops += 1;
        self.head = op.cid;
        self.updated_at = op.created_at;
        if op.tombstone {
            self.tombstoned = true;
        } else {
            self.tombstoned = false;
            note_move(&mut self.moves, &self.updated_at, self.pds.as_ref(), op.pds.as_ref());
            self.pds = op.pds;
            self.handle = op.handle;
            self.signing_key = op.signing_key;
        }
    }

    /// Since when the current key is in force: the end of the last retired
    /// key, else the genesis (`""` when neither is known).
    fn key_since(&self) -> &str {
        match self.retired_keys.last() {
            Some(r) => &r.until,
            None => self.created_at.as_deref().unwrap_or(""),
        }
    }
}

/// The `plc` family's merge operator: folds operands into the record. An
/// operand that does not decode is skipped (logged), never fatal.
pub fn plc_merge(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let mut rec: PlcRecord = existing.and_then(|b| ciborium::from_reader(b).ok()).unwrap_or_default();
    for op in operands {
        match ciborium::from_reader::<PlcOperand, _>(op) {
            Ok(o) => rec.apply(o),
            Err(e) => tracing::error!(error = %e, "undecodable PLC operand skipped"),
        }
    }
    Some(super::to_cbor(&rec))
}

// ---------------------------------------------------------------- identity

/// The outcome of one verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleCheck {
    pub handle: String,
    pub verified: bool,
    /// `dns` or `https` when verified.
    pub method: Option<String>,
    /// Why not, when not verified: `invalid_syntax`, `no_record` (neither
    /// DNS nor HTTPS answered with a DID), `ambiguous_dns` (several DIDs),
    /// `other_did` (it resolves to another DID).
    pub reason: Option<String>,
    pub checked_at_ms: i64,
}

/// What is known from resolving a DID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub pds: Option<String>,
    /// Handle the document claims (not yet verified both ways).
    pub handle: Option<String>,
    pub signing_key: Option<String>,
    pub labeler: Option<String>,
    /// The `#atproto_label` key of a labeler's document.
    #[serde(default)]
    pub label_key: Option<String>,
    /// What was wrong with the document, if anything.
    pub problems: Vec<String>,
    /// Last successful resolution, ms since the epoch.
    pub resolved_at_ms: Option<i64>,
    /// First successful resolution, ms since the epoch.
    #[serde(default)]
    pub first_resolved_ms: Option<i64>,
    /// Last attempt, ms since the epoch.
    pub checked_at_ms: i64,
    /// Reason of the last attempt's failure; `None` when it succeeded.
    pub unresolved: Option<String>,
    /// The directory says the DID is tombstoned (deactivated for good).
    pub tombstoned: bool,
    /// Consecutive failures.
    pub failures: u32,
    /// PDS changes seen between resolutions (`at`: resolution time).
    #[serde(default)]
    pub moves: Vec<Move>,
    /// The last bidirectional check of the claimed handle.
    #[serde(default)]
    pub handle_check: Option<HandleCheck>,
}

/// Whether a DID's last resolution is its current identity rather than its
/// PLC state: a resolution reflects the directory at its time, and a PLC
/// operation created after it supersedes it. The one rule for every reader
/// of both (signing keys, current PDS).
pub fn resolution_is_current(plc: Option<&PlcRecord>, res: Option<&IdentityRecord>) -> bool {
    let plc_ms = plc.and_then(|p| crate::clock::parse_time_us(&p.updated_at)).map(|us| us / 1000);
    match (res.and_then(|r| r.resolved_at_ms), plc_ms) {
        (Some(r), Some(p)) => r >= p,
        (Some(_), None) => true,
        _ => false,
    }
}

impl IdentityRecord {
    /// The handle if verified both ways, else `handle.invalid`, as the
    /// protocol renders an unverifiable handle (`None` before any check).
    pub fn verified_handle(&self) -> Option<&str> {
        self.handle_check.as_ref().map(|c| if c.verified { c.handle.as_str() } else { "handle.invalid" })
    }
}

// ---------------------------------------------------------------- hosts

/// A reachable host is crawled again after this.
pub const RECRAWL: Duration = Duration::from_secs(6 * 3600);
/// An unreachable host is retried after this, doubling per failure up to a day.
pub const RETRY_MIN: Duration = Duration::from_secs(300);
pub const RETRY_MAX: Duration = Duration::from_secs(24 * 3600);
/// What `describeServer` says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Describe {
    pub did: Option<String>,
    pub available_user_domains: Vec<String>,
    pub invite_code_required: Option<bool>,
    #[serde(default)]
    pub phone_verification_required: Option<bool>,
    pub privacy_policy: Option<String>,
    pub terms_of_service: Option<String>,
    pub contact_email: Option<String>,
}

/// What the relay's `listHosts` says of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayView {
    pub status: Option<String>,
    pub account_count: Option<i64>,
    pub seq: Option<i64>,
    pub seen_at_ms: i64,
}

/// Accounts the host lists (`listRepos`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repos {
    pub total: u64,
    pub active: u64,
    /// Inactive accounts by status (`deactivated`, `takendown`, …, `none`).
    pub inactive: BTreeMap<String, u64>,
    /// Whether the listing ended within the page cap.
    pub complete: bool,
    /// Accounts where observers disagree, by kind (see
    /// [`status_disagreement`]); `listed_elsewhere`: listed, but the
    /// account's DID document names another PDS.
    #[serde(default)]
    pub disagreements: BTreeMap<String, u64>,
}

/// An account's status as its PDS lists it (`listRepos`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdsView {
    pub host: String,
    pub active: bool,
    /// The status label (`active`, `deactivated`, `takendown`, …).
    pub status: String,
    pub seen_at_ms: i64,
}

/// How the PDS's word on an account differs from the relay's (the firehose
/// `#account`) and the PLC directory's (a tombstone), if it does: the
/// account spec says status is not self-certifying, and observers differ.
pub fn status_disagreement(
    pds_active: bool,
    pds_status: &str,
    relay: Option<(bool, &str)>,
    tombstoned: bool,
) -> Option<&'static str> {
    if tombstoned && pds_active {
        return Some("pds_active_plc_tombstoned");
    }
    match relay {
        Some((false, _)) if pds_active => Some("pds_active_relay_inactive"),
        Some((true, _)) if !pds_active => Some("pds_inactive_relay_active"),
        Some((false, r)) if !pds_active && r != pds_status => Some("pds_and_relay_status_differ"),
        _ => None,
    }
}

/// Every kind [`status_disagreement`] gives, and `listed_elsewhere`.
pub const DISAGREEMENTS: &[&str] = &[
    "pds_active_plc_tombstoned",
    "pds_active_relay_inactive",
    "pds_inactive_relay_active",
    "pds_and_relay_status_differ",
    "listed_elsewhere",
];

/// One host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Where it was learned of: `did_document`, `relay`.
    pub sources: Vec<String>,
    pub first_seen_ms: i64,
    /// `pending`, `online` or `offline`.
    pub state: String,
    pub offline_since_ms: Option<i64>,
    pub last_ok_ms: Option<i64>,
    pub last_checked_ms: Option<i64>,
    pub last_error: Option<String>,
    pub failures: u32,
    pub next_check_ms: i64,
    pub describe: Option<Describe>,
    pub version: Option<String>,
    pub repos: Option<Repos>,
    pub relay: Option<RelayView>,
    /// Its addresses at the last crawl (at most 8).
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// One change to a host's record, written as a merge operand of the
/// `hosts` family and folded into the record by [`host_merge`] in write order.
/// No writer reads a record, awaits the network and writes the whole record
/// back: a crawl that takes minutes (`listRepos`, 200 pages) cannot
/// overwrite a note the resolver or the PLC loader made meanwhile (the
/// lost update this replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostOp {
    /// Named by `source` (`did_document`, `relay`) at this time.
    Noted { source: String, at_ms: i64 },
    /// A crawl's outcome.
    Crawled { at_ms: i64, outcome: CrawlOutcome },
    /// What the relay's `listHosts` said.
    Relay(RelayView),
    /// The whole record (tests, benches, imports).
    Replace(Box<HostRecord>),
}

/// What one crawl found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrawlOutcome {
    Reached {
        describe: Box<Describe>,
        version: Option<String>,
        repos: Option<Repos>,
        #[serde(default)]
        addresses: Vec<String>,
    },
    Failed {
        reason: String,
    },
}

impl HostOp {
    /// When the change happened (a host first named by it is first seen then).
    pub fn at_ms(&self) -> i64 {
        match self {
            HostOp::Noted { at_ms, .. } | HostOp::Crawled { at_ms, .. } => *at_ms,
            HostOp::Relay(v) => v.seen_at_ms,
            HostOp::Replace(r) => r.first_seen_ms,
        }
    }
}

impl HostRecord {
    /// A host first named at `at_ms`: `pending`.
    pub fn new_at(at_ms: i64) -> HostRecord {
        HostRecord { first_seen_ms: at_ms, state: "pending".into(), ..HostRecord::default() }
    }

    /// Applies one change.
    pub fn apply(&mut self, op: HostOp) {
        match op {
            HostOp::Noted { source, .. } => {
                if !self.sources.contains(&source) {
                    self.sources.push(source);
                }
            }
            HostOp::Relay(view) => {
                if !self.sources.iter().any(|s| s == "relay") {
                    self.sources.push("relay".into());
                }
                self.relay = Some(view);
            }
            HostOp::Replace(rec) => *self = *rec,
            HostOp::Crawled { at_ms: now, outcome } => {
                self.last_checked_ms = Some(now);
                match outcome {
                    CrawlOutcome::Reached { describe, version, repos, addresses } => {
                        self.describe = Some(*describe);
                        self.addresses = addresses;
                        self.version = version;
                        self.repos = repos;
                        self.state = "online".into();
                        self.offline_since_ms = None;
                        self.last_ok_ms = Some(now);
                        self.last_error = None;
                        self.failures = 0;
                        self.next_check_ms = now + RECRAWL.as_millis() as i64;
                    }
                    CrawlOutcome::Failed { reason } => {
                        if self.state != "offline" {
                            self.offline_since_ms = Some(now);
                        }
                        self.state = "offline".into();
                        self.last_error = Some(reason);
                        self.failures = self.failures.saturating_add(1);
                        let wait =
                            RETRY_MIN.saturating_mul(1 << self.failures.saturating_sub(1).min(16)).min(RETRY_MAX);
                        self.next_check_ms = now + wait.as_millis() as i64;
                    }
                }
            }
        }
    }
}

/// The `hosts` family's merge operator: folds [`HostOp`] operands into the
/// record (a host first named by an operand starts `pending`, first seen
/// then). An operand that does not decode is skipped (logged), never fatal.
pub fn host_merge(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let mut rec: Option<HostRecord> = existing.and_then(|b| ciborium::from_reader(b).ok());
    for op in operands {
        match ciborium::from_reader::<HostOp, _>(op) {
            Ok(o) => {
                let at = o.at_ms();
                rec.get_or_insert_with(|| HostRecord::new_at(at)).apply(o);
            }
            Err(e) => tracing::error!(error = %e, "undecodable host operand skipped"),
        }
    }
    Some(super::to_cbor(&rec.unwrap_or_default()))
}

// ---------------------------------------------------------------- the map

/// One account's place in the map, as stored in `assign`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Current PDS host (normalised endpoint).
    #[serde(rename = "h")]
    pub host: Option<String>,
    /// Why there is none: `deleted`, `no_pds`, `unresolved`.
    #[serde(rename = "r")]
    pub reason: Option<String>,
    /// Where the current host comes from: `plc` or `resolution`.
    #[serde(rename = "o")]
    pub source: Option<String>,
    /// Buckets counted for the host (see `cluster::assign::bucket`; the firehose status
    /// label included).
    #[serde(rename = "b")]
    pub buckets: Vec<String>,
    /// Dated hosts, oldest first: `(ms, Some(host))` when the account
    /// arrived on a host, `(ms, None)` when it left the map (deleted, or
    /// its document names no PDS any more).
    #[serde(rename = "t")]
    pub timeline: Vec<(i64, Option<String>)>,
    /// Handle: the one verified both ways, else the one the current DID
    /// document claims (lower-cased).
    #[serde(rename = "n", default)]
    pub handle: Option<String>,
    /// Whether `handle` was verified both ways.
    #[serde(rename = "v", default)]
    pub handle_verified: bool,
    /// The host the account was created on (its PLC genesis operation's
    /// PDS), when known.
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub born: Option<String>,
    /// The day (days since 1970-01-01, UTC) of its PLC genesis operation,
    /// when `born` is known.
    #[serde(rename = "gd", default, skip_serializing_if = "Option::is_none")]
    pub born_day: Option<i32>,
    /// The day (days since 1970-01-01, UTC) of its last firehose event.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub active_day: Option<i32>,
}

/// Days since 1970-01-01 (UTC) of a time in ms.
pub fn day_number(ms: i64) -> i32 {
    i32::try_from(ms.div_euclid(86_400_000)).unwrap_or(if ms < 0 { i32::MIN } else { i32::MAX })
}

/// The date of a day number.
pub fn date_of_day(day: i32) -> time::Date {
    crate::clock::date_of(i64::from(day) * 86_400_000)
}

impl Assignment {
    /// The domains under which the account proves its host may issue
    /// handles: it was created on its current host (a did:plc whose genesis
    /// named it) and its handle verifies both ways (the domain's owner
    /// answers for it), so the owner of these domains lets that host
    /// create accounts under them. Empty otherwise.
    pub fn proves_domains(&self, did: &str) -> Vec<&str> {
        match (&self.host, &self.born, &self.handle) {
            (Some(h), Some(b), Some(handle)) if h == b && self.handle_verified && did.starts_with("did:plc:") => {
                crate::types::handle_domains(handle)
            }
            _ => Vec::new(),
        }
    }

    /// Its migrations: arrivals on a host straight from another host.
    pub fn move_count(&self) -> usize {
        let mut prev = false;
        let mut n = 0;
        for (_, host) in &self.timeline {
            n += usize::from(prev && host.is_some());
            prev = host.is_some();
        }
        n
    }
}

/// Buckets a member of a host is counted in.
pub mod bucket {
    /// Every account whose current DID document names the host.
    pub const REGISTERED: &str = "registered";
    /// ... whose PLC directory state names it.
    pub const IN_PLC: &str = "in_plc";
    /// ... whose DID document resolved.
    pub const RESOLVABLE: &str = "resolvable";
    /// ... seen on the firehose (then also counted by its status label).
    pub const SEEN: &str = "seen_on_firehose";
}

/// A migration as stored in `moves` (keyed by DID and time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRow {
    pub from: String,
    pub to: String,
}

/// One stored instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub anchor: String,
    pub name: String,
    pub hosts: Vec<String>,
    pub user_domains: Vec<String>,
    pub registrable_domains: Vec<String>,
    /// Evidence, as `(host, kind, value, observed_at_ms)`; kind is
    /// `declaration`, `user_domain`, `registrable_domain`, `host_alone` or
    /// `override`.
    pub evidence: Vec<(String, String, String, i64)>,
    /// Members by bucket, summed over the hosts when read: `registered`
    /// (the current DID document names one of its hosts), `in_plc`,
    /// `resolvable`, `seen_on_firehose` and the firehose status labels
    /// (`active`, `deactivated`, …), `declared_members` (membership records
    /// the operator's verified declaration covers), `relay_reported` (what
    /// the relay's `listHosts` says its hosts hold).
    pub members: BTreeMap<String, u64>,
    pub computed_at_ms: i64,
    /// The operator whose verified declaration covers the instance, and
    /// its governance data (contacts, policies, labelers, jurisdiction).
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub governance: Option<Declaration>,
    /// Operators whose declarations claim any of its hosts, verified or not.
    #[serde(default)]
    pub claimed_by: Vec<String>,
    /// Two or more operators whose verified declarations meet in the
    /// instance: a conflict, shown with both sides; the instance then has
    /// no operator.
    #[serde(default)]
    pub conflict: Vec<String>,
    /// How each user domain that links its hosts was proven.
    #[serde(default)]
    pub domain_proofs: Vec<DomainProof>,
    /// User domains its hosts advertise that link nothing: `(host, domain,
    /// why)`.
    #[serde(default)]
    pub unproven_domains: Vec<(String, String, String)>,
    /// The operator's declared name when it was not used, and why (it
    /// reads as another instance's proven domain or pinned name).
    #[serde(default)]
    pub name_refused: Option<(String, String)>,
}

/// Proof that a host may issue handles under a user domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainProof {
    pub host: String,
    pub domain: String,
    /// In words.
    pub how: String,
    /// Accounts created on the host whose handles under the domain verify
    /// both ways (0 when the domain is under the host's own).
    pub accounts: i64,
    /// A few of them: `did (handle, verified <time>)`.
    pub examples: Vec<String>,
    /// When the host's facts were observed (ms).
    pub at_ms: i64,
}

/// A host changing instance, as stored in `host_moves`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMove {
    pub host: String,
    /// Instance ids (empty: none).
    pub from: String,
    pub to: String,
    /// Its registered members when it moved.
    pub accounts: i64,
}

/// What a declaration's claims came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarationStatus {
    pub operator: String,
    pub name: String,
    /// Claimed hosts the operator demonstrably controls.
    pub verified_hosts: Vec<String>,
    /// How each verified host was proven: `(host, proof)`.
    #[serde(default)]
    pub proofs: Vec<(String, String)>,
    /// Claimed account domains it demonstrably controls.
    pub verified_domains: Vec<String>,
    /// Claims that did not verify: `(claim, why)`.
    pub unverified: Vec<(String, String)>,
    /// Claims for another party that party confirmed: `(claim, how)` (a
    /// delegated moderation service whose own declaration names the
    /// operator in `moderatesFor`).
    #[serde(default)]
    pub confirmed: Vec<(String, String)>,
}

// ---------------------------------------------------------------- the project's own records

/// A declaration (`dev.instancemap.declaration`) that passed the lexicon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Declaration {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub pds_hosts: Vec<String>,
    #[serde(default)]
    pub account_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation_contact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abuse_contact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Policies>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labelers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    pub created_at: String,
    // the second version: every field optional, so a first-version record
    // reads as one with none of them
    /// The operator's face, under the names the reference PDS uses
    /// (`PDS_SERVICE_NAME`, `PDS_HOME_URL`, `PDS_SUPPORT_URL`, `PDS_LOGO_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    /// Contacts by role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
    /// The moderation service the operator delegates to, as a service
    /// reference (`did:…#atproto_labeler`); counts once that service's own
    /// declaration names the operator in `moderatesFor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation_service: Option<String>,
    /// Operators this one moderates for (the other side of their
    /// `moderationService`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moderates_for: Vec<String>,
    /// Moderation authorities whose infrastructure abuse notices
    /// (`com.atproto.moderation.sendAbuseNotice`, proposal 0012) the
    /// operator's hosts accept: DIDs or service references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abuse_notice_authorities: Vec<String>,
    /// Where reports go, per reason type and subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<ReportRoute>,
}

impl Declaration {
    /// Its contacts, the first version's free-text fields read as contacts
    /// after the declared ones (`abuseContact`, then `moderationContact`, as
    /// abuse contacts: an email address, a URL, else an account).
    pub fn all_contacts(&self) -> Vec<Contact> {
        let mut out = self.contacts.clone();
        for v in [&self.abuse_contact, &self.moderation_contact].into_iter().flatten() {
            let mut c = Contact { role: "abuse".into(), ..Contact::default() };
            if crate::types::is_email(v) {
                c.email = Some(v.clone());
            } else if v.starts_with("https://") || v.starts_with("http://") {
                c.url = Some(v.clone());
            } else {
                c.account = Some(v.clone());
            }
            out.push(c);
        }
        out
    }

    /// The address of its first declared contact of `role` that may be
    /// shown (a confidential one is for reporters: the routes give it,
    /// marked; a field of one address cannot say so).
    pub fn first_contact(&self, role: &str) -> Option<String> {
        self.contacts
            .iter()
            .filter(|c| !c.confidential && contact_role(&c.role) == Some(role))
            .find_map(|c| c.email.clone().or_else(|| c.url.clone()).or_else(|| c.account.clone()))
    }
}

/// One contact of a declaration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// One of [`CONTACT_ROLES`] (or an alias of one).
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An account to message (DID or handle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// For moderation authorities and reporters, not for display: the
    /// explorer and exports leave it out; the lookup marks it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confidential: bool,
}

/// Contact roles, each with the RDAP role (RFC 9083 §10.2.4) it maps onto
/// (`None`: RDAP has none) and its aliases.
pub const CONTACT_ROLES: &[(&str, Option<&str>, &[&str])] = &[
    ("abuse", Some("abuse"), &[]),
    ("security", Some("noc"), &[]),
    ("administrative", Some("administrative"), &["admin"]),
    ("technical", Some("technical"), &["tech"]),
    ("support", None, &[]),
    ("legal", Some("registrant"), &[]),
    ("dataProtection", None, &["privacy", "dpo"]),
];

/// A role's canonical name, if it is one of [`CONTACT_ROLES`] or an alias.
pub fn contact_role(role: &str) -> Option<&'static str> {
    CONTACT_ROLES.iter().find(|(r, _, aliases)| *r == role || aliases.contains(&role)).map(|(r, _, _)| *r)
}

/// Where reports of some reasons go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportRoute {
    /// Report reason codes (`tools.ozone.report.defs#reason…`,
    /// `com.atproto.moderation.defs#reason…`); empty: every reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reason_types: Vec<String>,
    /// `account`, `record`, `chat`; empty: every subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_types: Vec<String>,
    /// Record collections (NSIDs); empty: every collection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_collections: Vec<String>,
    /// The role of one of the declaration's contacts, or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// a service reference (`did#fragment`) to report to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms_of_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community_guidelines: Option<String>,
}

// ---------------------------------------------------------------- contacts, checked

/// A `/.well-known/security.txt` (RFC 9116) as fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityTxt {
    /// Where it was fetched from.
    pub url: String,
    /// `Contact:` values in order (URIs: `mailto:`, `https:`, `tel:`).
    pub contacts: Vec<String>,
    /// `Expires:` as written (RFC 3339), and as ms when it parses.
    pub expires: Option<String>,
    pub expires_ms: Option<i64>,
    /// `Policy:` values.
    pub policy: Vec<String>,
    /// Whether it is an OpenPGP cleartext-signed message (the signature is
    /// not checked: no key is known to check it against).
    pub signed: bool,
    /// What is wrong with it, each a short phrase (`no Expires`, …).
    pub problems: Vec<String>,
}

impl SecurityTxt {
    /// Past its `Expires` at `now_ms` (RFC 9116 §2.5.5: then it is stale
    /// and should not be used).
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }
}

/// The last check of one contact: an email address (its domain accepts
/// mail), a URL (it answers), or a `security.txt` origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactCheck {
    /// Whether it held at the last check.
    pub ok: bool,
    /// How, or why not, in words (`MX mx1.example.org`, `no MX, A or AAAA`).
    pub how: String,
    pub checked_at_ms: i64,
    /// When it last held (kept across failed checks).
    pub last_ok_ms: Option<i64>,
    /// For a `securitytxt:` key: the file, when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_txt: Option<SecurityTxt>,
    /// For a `labeler:` key: the labeler's conformance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labeler: Option<LabelerConformance>,
}

/// Whether a labeler linked to an instance works as the protocol says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelerConformance {
    /// Its `app.bsky.labeler.service` record is known (from the firehose).
    pub service_record: bool,
    /// Its DID document's `#atproto_labeler` endpoint.
    pub endpoint: Option<String>,
    /// `com.atproto.label.queryLabels` answered with labels JSON.
    pub answers: Option<bool>,
    /// Labels returned by the sample query.
    pub labels_seen: usize,
    /// Every signed label of the sample verifies with the document's
    /// `#atproto_label` key (`None`: no key, or no signed label to check).
    pub key_matches: Option<bool>,
    /// `conformant`, `partial` or `failing`.
    pub verdict: String,
    /// What is missing or wrong, in words.
    pub problems: Vec<String>,
}
