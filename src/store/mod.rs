//! The RocksDB store: one database, one column family per kind of entity.
//! Writers commit a typed [`Batch`] (effects, marks, counters and cursor
//! together, atomically); readers ask through [`StoreReader`] and
//! [`map::MapReader`]. Families, keys and codecs are private to this module
//! and its children; readers (`stats`, the API) open the same directory
//! read-only or share the handle.
//!
//! Column families and their keys:
//!
//! | family     | key                                   | value |
//! | ---------- | ------------------------------------- | ----- |
//! | `meta`     | `cursor/<source>`                     | i64 big-endian: last seq applied from that source |
//! | `meta`     | `schema`                              | u32 big-endian schema version |
//! | `accounts` | DID (UTF-8)                           | [`AccountState`], DAG-CBOR-free plain CBOR (ciborium) |
//! | `counters` | `<group>/<label>` (see [`counter`])   | i64 little-endian, updated by an add merge operator |
//! | `records`  | `<collection> 0x00 <did> 0x00 <rkey>` | [`StoredRecord`], CBOR |
//! | `plc`      | did:plc (UTF-8)                       | [`records::PlcRecord`], CBOR: state from the PLC export, written as merge operands ([`records::PlcOperand`]) |
//! | `identity` | DID (UTF-8)                           | [`records::IdentityRecord`], CBOR: the last resolution's outcome |
//! | `retry`    | next try (i64 ms, big-endian) ‖ DID   | empty: DIDs whose resolution failed, by when to try again |
//! | `hosts`    | normalised endpoint (`https://host`)  | [`records::HostRecord`], CBOR: sources, crawl state, describeServer, version, repos, relay view; written as merge operands ([`records::HostOp`]) |
//! | `instances` | instance id                          | [`records::InstanceRecord`], CBOR (written whole by a structure refresh) |
//! | `host_instance` | normalised endpoint              | instance id |
//! | `declarations` | operator DID                      | [`records::DeclarationStatus`], CBOR: which claims verified and why not |
//! | `map_dirty` | DID, or `0x00 structure`             | i64 little-endian (add merge): changes the map has yet to take in; zero entries are dropped at compaction |
//! | `assign`   | DID (UTF-8)                           | [`records::Assignment`], CBOR: the account's host, buckets and timeline |
//! | `map_counts` | see [`map::CountKey`]               | i64 little-endian (add merge): members per host, states, joins per day, flows |
//! | `moves`    | DID 0x00 time (ms, big-endian, sign-flipped) | [`records::MoveRow`], CBOR: one migration |
//! | `host_moves` | time (ms, as above) ‖ endpoint      | [`records::HostMove`], CBOR: a host changing instance |
//! | `host_accounts` | endpoint 0x00 DID                | empty: the accounts on a host (index of `assign`) |
//! | `handles`  | handle 0x00 DID                       | `1` when verified both ways, `0` when only claimed (index of `assign`) |
//! | `pds_status` | DID (UTF-8)                         | [`records::PdsView`], CBOR: the account's status as its PDS's `listRepos` shows it |
//! | `contacts` | `email:<address>`, `url:<url>`, `securitytxt:<origin>` | [`records::ContactCheck`], CBOR: a contact's last check |
//! | `meta`     | `plc/position`                        | [`crate::plc::load::Position`], CBOR: how far the export was read |
//!
//! Every key part is validated syntax (DID, NSID, record key), so none holds
//! a NUL byte and keys sort by collection, then account.

pub mod admission;
pub mod deadline;
pub mod map;
pub mod mem;
pub mod records;

use std::collections::BTreeMap;
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, MergeOperands, Options, WriteBatch, DB};
use serde::{Deserialize, Serialize};

const CF_META: &str = "meta";
const CF_ACCOUNTS: &str = "accounts";
const CF_COUNTERS: &str = "counters";
const CF_RECORDS: &str = "records";
const CF_PLC: &str = "plc";
const CF_IDENTITY: &str = "identity";
const CF_CONTACTS: &str = "contacts";
const CF_PDS_STATUS: &str = "pds_status";
const CF_RETRY: &str = "retry";
const CF_HOSTS: &str = "hosts";
const CF_INSTANCES: &str = "instances";
const CF_HOST_INSTANCE: &str = "host_instance";
const CF_DECLARATIONS: &str = "declarations";
const CF_MAP_DIRTY: &str = "map_dirty";
const CF_ASSIGN: &str = "assign";
const CF_MAP_COUNTS: &str = "map_counts";
const CF_MOVES: &str = "moves";
const CF_HOST_MOVES: &str = "host_moves";
const CF_HOST_ACCOUNTS: &str = "host_accounts";
const CF_HANDLES: &str = "handles";
const CFS: &[&str] = &[
    CF_META,
    CF_ACCOUNTS,
    CF_COUNTERS,
    CF_RECORDS,
    CF_PLC,
    CF_IDENTITY,
    CF_RETRY,
    CF_HOSTS,
    CF_INSTANCES,
    CF_HOST_INSTANCE,
    CF_DECLARATIONS,
    CF_MAP_DIRTY,
    CF_ASSIGN,
    CF_MAP_COUNTS,
    CF_MOVES,
    CF_HOST_MOVES,
    CF_HOST_ACCOUNTS,
    CF_HANDLES,
    CF_CONTACTS,
    CF_PDS_STATUS,
];

/// Version of the on-disk layout above; a database with another version is
/// refused rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt value in {cf}: {why}")]
    Corrupt { cf: &'static str, why: String },
    #[error("thread {thread:?} wrote outside the single writer (a bug: sources commit through store::Writer)")]
    NotTheWriter { thread: String },
    #[error("the writer has stopped (shutdown): not written")]
    WriterStopped,
    #[error("database schema version {found} is not {SCHEMA_VERSION}; this build cannot read it")]
    Schema { found: u32 },
    /// A scan's callback stopped it (its own error is the caller's to keep).
    #[error("the reader stopped the scan")]
    ScanStopped,
    /// The thread's read deadline passed mid-scan (see [`deadline`]).
    #[error("the read's deadline passed")]
    DeadlinePassed,
    /// A read inside [`deadline::cached_only`] needed a file.
    #[error("not in memory (a cached-only read)")]
    NotCached,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Counter key groups (the part before the `/`).
pub mod counter {
    /// Frames by type label.
    pub const FRAME: &str = "frame";
    /// Ops by action.
    pub const OP: &str = "op";
    /// Ops by collection and action: `coll/<nsid>/<action>`.
    pub const COLLECTION: &str = "coll";
    /// Rejected frames by reason.
    pub const ERROR: &str = "error";
    /// Events not applied, by reason.
    pub const DROPPED: &str = "dropped";
    /// Accounts by current status (incremented and decremented on change).
    pub const STATUS: &str = "status";
    /// `#account` events by status.
    pub const ACCOUNT_EVENT: &str = "account_event";
    /// Kept records refused by their lexicon: `invalid_record/<nsid>/<reason>`.
    pub const INVALID_RECORD: &str = "invalid_record";
    /// Commit signature checks by result.
    pub const SIGNATURE: &str = "sig";
    /// `#info` frames by name label.
    pub const INFO: &str = "info";
    /// Error frames by error label.
    pub const ERROR_FRAME: &str = "error_frame";
    /// Totals: `total/accounts`, `total/record_blocks_missing`, `total/records`.
    pub const TOTAL: &str = "total";

    pub fn key(group: &str, label: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(group.len() + 1 + label.len());
        k.extend_from_slice(group.as_bytes());
        k.push(b'/');
        k.extend_from_slice(label.as_bytes());
        k
    }
}

/// What is kept per account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Seq of the first event seen for the account.
    pub first_seq: i64,
    /// Seq of the last event applied for the account.
    pub last_seq: i64,
    /// Last repo `rev` from `#commit` or `#sync`.
    pub rev: Option<String>,
    /// `time` of the last event, microseconds since the epoch.
    pub last_time_us: Option<i64>,
    /// Wall clock when the last event was applied, milliseconds since the epoch.
    pub seen_at_ms: i64,
    /// `active` of the last `#account`; `None` before any.
    pub active: Option<bool>,
    /// `status` of the last `#account` (hop-by-hop: as the relay reports it).
    pub status: Option<String>,
    /// Handle from the last `#identity` that carried one (lower-cased;
    /// `handle.invalid` when the relay sent an invalid one). Unverified.
    pub handle: Option<String>,
    /// Commits applied.
    pub commits: u64,
}

impl AccountState {
    /// The day (days since 1970-01-01, UTC) the account was last active on
    /// the firehose: its last event's `time`, never later than when it was
    /// applied (a relay's clock cannot make an account active tomorrow).
    pub fn active_day(&self) -> Option<i32> {
        let at = match (self.last_time_us.map(|t| t / 1000), self.seen_at_ms) {
            (Some(t), seen) if seen > 0 => t.min(seen),
            (Some(t), _) => t,
            (None, seen) if seen > 0 => seen,
            (None, _) => return None,
        };
        Some(records::day_number(at))
    }

    /// The bounded status label counted in `status/<label>`.
    pub fn status_label(&self) -> &'static str {
        status_label(self.active, self.status.as_deref())
    }
}

/// Account status label: the `#account` status where it is a known value,
/// `active` / `inactive` where there is none, `unknown` before any
/// `#account`, `other` for values outside the lexicon's known set.
pub fn status_label(active: Option<bool>, status: Option<&str>) -> &'static str {
    match (active, status) {
        (None, _) => "unknown",
        (Some(_), Some(s)) => match s {
            "takendown" => "takendown",
            "suspended" => "suspended",
            "deleted" => "deleted",
            "deactivated" => "deactivated",
            "desynchronized" => "desynchronized",
            "throttled" => "throttled",
            _ => "other",
        },
        (Some(true), None) => "active",
        (Some(false), None) => "inactive",
    }
}

/// A kept record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Record CID, binary.
    #[serde(with = "serde_bytes_vec")]
    pub cid: Vec<u8>,
    /// The record's DAG-CBOR bytes as published (hash-checked).
    #[serde(with = "serde_bytes_vec")]
    pub record: Vec<u8>,
    pub seq: i64,
    pub rev: String,
    /// For the project's own records (declarations, memberships), what
    /// their commit's signature came to and what it covered, so a record
    /// whose key was not known when it arrived is checked once it is (it
    /// counts only then). `None` for other collections, and for project
    /// records stored before signatures were kept (which do not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<RecordSig>,
}

/// A commit signature kept with a record: its check's label when it
/// arrived (`valid`, `valid_prior_key`, `no_key`, `not_checked`), and the
/// signed digest, the signature and the latest time the commit claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSig {
    pub status: String,
    #[serde(with = "serde_bytes_vec")]
    pub digest: Vec<u8>,
    #[serde(with = "serde_bytes_vec")]
    pub sig: Vec<u8>,
    pub claimed_us: Option<i64>,
}

impl RecordSig {
    /// Whether the signature verified when the record arrived.
    pub fn verified_on_arrival(&self) -> bool {
        self.status == "valid" || self.status == "valid_prior_key"
    }
}

/// Byte vectors as CBOR byte strings rather than arrays of integers.
mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let b: ciborium::value::Value = Deserialize::deserialize(d)?;
        b.into_bytes().map_err(|_| serde::de::Error::custom("expected a byte string"))
    }
}

/// `v` encoded into `buf` (cleared first), for a write batch to copy.
fn cbor_into<'b, T: Serialize>(buf: &'b mut Vec<u8>, v: &T) -> &'b [u8] {
    buf.clear();
    ciborium::into_writer(v, &mut *buf).expect("serialising to a Vec cannot fail");
    buf
}

/// Encodes a value as CBOR (ciborium).
pub fn to_cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    ciborium::into_writer(v, &mut out).expect("serialising to a Vec cannot fail");
    out
}

pub fn from_cbor<T: for<'de> Deserialize<'de>>(cf: &'static str, b: &[u8]) -> Result<T> {
    ciborium::from_reader(b).map_err(|e| StoreError::Corrupt { cf, why: e.to_string() })
}

// ---------------------------------------------------------------- the seam

/// Everything the store knows of one DID, read in one call (one multi-get
/// on RocksDB): its PLC state, its last resolution, its firehose state and
/// its place in the map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountView {
    pub plc: Option<records::PlcRecord>,
    pub identity: Option<records::IdentityRecord>,
    pub firehose: Option<AccountState>,
    pub assignment: Option<records::Assignment>,
}

impl AccountView {
    /// Whether any source knows the DID (the assignment alone does not
    /// count: it is derived from the others).
    pub fn is_known(&self) -> bool {
        self.plc.is_some() || self.identity.is_some() || self.firehose.is_some()
    }
}

/// The `meta` values a stage keeps (the store's own — schema version,
/// cursors — are not among them: no writer can overwrite them by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetaKey {
    /// How far the PLC export was read ([`crate::plc::load::Position`]).
    PlcPosition,
    /// The map's overrides in force.
    Overrides,
    /// A recompute under way since (ms); see `cluster::map::RECOMPUTE_MARKER`.
    RecomputeStarted,
    /// The version of the map's rules the stored map was computed under
    /// (u32 big-endian); see `cluster::recompute::MAP_VERSION`.
    MapVersion,
    /// A bulk PLC load left the accounts it wrote unmarked and asks for a
    /// full recompute instead (since, ms); see `plc::load::Loader::bulk`.
    RebuildWanted,
}

impl MetaKey {
    /// The stored key.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            MetaKey::PlcPosition => b"plc/position",
            MetaKey::Overrides => b"map/overrides",
            MetaKey::RecomputeStarted => b"map/recompute",
            MetaKey::MapVersion => b"map/version",
            MetaKey::RebuildWanted => b"map/rebuild",
        }
    }
}

/// What every reader of the store may ask, typed: no reader names a
/// column family, a key layout or a codec. Implemented by the RocksDB
/// [`Store`] and the in-memory [`mem::MemStore`]; one storage suite
/// (`tests/storage.rs`) runs on both.
pub trait StoreReader: Send + Sync {
    /// Everything about one DID in one call.
    fn account_view(&self, did: &str) -> Result<AccountView>;
    fn account_state(&self, did: &str) -> Result<Option<AccountState>>;
    fn plc(&self, did: &str) -> Result<Option<records::PlcRecord>>;
    fn identity(&self, did: &str) -> Result<Option<records::IdentityRecord>>;
    fn host(&self, endpoint: &str) -> Result<Option<records::HostRecord>>;
    /// Every host, in endpoint order.
    fn hosts(&self) -> Result<Vec<(String, records::HostRecord)>>;
    fn stored_record(&self, collection: &str, did: &str, rkey: &str) -> Result<Option<StoredRecord>>;
    /// Every kept record of a collection, `(did, rkey, record)` in key order.
    fn stored_records(&self, collection: &str) -> Result<Vec<(String, String, StoredRecord)>>;
    fn source_cursor(&self, source: &str) -> Result<Option<i64>>;
    /// An account's status as its PDS last listed it.
    fn pds_view(&self, did: &str) -> Result<Option<records::PdsView>>;
    /// A contact's last check (see [`Op::Contact`] for the keys).
    fn contact_check(&self, key: &str) -> Result<Option<records::ContactCheck>>;
    /// Every contact check, by key.
    fn contact_checks(&self) -> Result<Vec<(String, records::ContactCheck)>>;
    /// Takes a new host's place in the host table's admission (see
    /// [`admission`]); a store without one admits every host.
    fn admit_host(&self, _host: &str) -> std::result::Result<(), admission::Refused> {
        Ok(())
    }
    fn all_cursors(&self) -> Result<BTreeMap<String, i64>>;
    fn all_counters(&self) -> Result<BTreeMap<String, i64>>;
    /// A stage's `meta` value.
    fn meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>>;
    /// DIDs on the resolver's schedule due at or before `until_ms`, in
    /// time order, at most `limit`.
    fn retries_due(&self, until_ms: i64, limit: usize) -> Result<Vec<(i64, String)>>;
    /// Marks the map maintainer has yet to take: `(did, n)`, and the
    /// structure mark's count.
    fn marks(&self, limit: usize) -> Result<(Vec<(String, i64)>, i64)>;
}

/// The one way to change the store: a [`Batch`], committed whole
/// (atomically on RocksDB: effects, marks, counters and cursor together).
pub trait StoreWriter: StoreReader {
    fn commit(&self, batch: Batch) -> Result<()>;
}

/// One change of a [`Batch`].
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Account(String, AccountState),
    PutRecord {
        collection: String,
        did: String,
        rkey: String,
        record: StoredRecord,
    },
    DeleteRecord {
        collection: String,
        did: String,
        rkey: String,
    },
    /// Adds to the counter `group/label` (the whole key given).
    Count(Vec<u8>, i64),
    Cursor(String, i64),
    DeleteCursor(String),
    /// How many frames of a replayed file were consumed (applied or
    /// dropped), so a rerun after a kill skips them all, seq or not.
    FramePosition(String, i64),
    PutMeta(MetaKey, Vec<u8>),
    DeleteMeta(MetaKey),
    /// One PLC operation, folded into the DID's record in batch order.
    Plc(String, records::PlcOperand),
    Identity(String, records::IdentityRecord),
    /// A contact's last check, by key (`email:<address>`, `url:<url>`,
    /// `securitytxt:<origin>`).
    Contact(String, records::ContactCheck),
    /// An account's status as its PDS lists it.
    PdsView(String, records::PdsView),
    Retry {
        at_ms: i64,
        did: String,
    },
    Unretry {
        at_ms: i64,
        did: String,
    },
    /// One change to a host, folded into its record in batch order.
    Host(String, records::HostOp),
    /// Adds to a DID's map mark (negative: taken).
    Mark(String, i64),
    /// Adds to the structure mark.
    MarkStructure(i64),
    /// A change of the map's own families (the map maintainer's).
    Map(map::MapOp),
}

/// A typed write batch: what one writer changes at once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn with_capacity(n: usize) -> Batch {
        Batch { ops: Vec::with_capacity(n) }
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn put_account(&mut self, did: &str, state: AccountState) {
        self.ops.push(Op::Account(did.to_owned(), state));
    }
    pub fn put_record(&mut self, collection: &str, did: &str, rkey: &str, record: StoredRecord) {
        self.ops.push(Op::PutRecord { collection: collection.into(), did: did.into(), rkey: rkey.into(), record });
    }
    pub fn delete_record(&mut self, collection: &str, did: &str, rkey: &str) {
        self.ops.push(Op::DeleteRecord { collection: collection.into(), did: did.into(), rkey: rkey.into() });
    }
    /// Adds `n` to the counter whose whole key (`group/label`) is `key`.
    pub fn count_key(&mut self, key: Vec<u8>, n: i64) {
        if n != 0 {
            self.ops.push(Op::Count(key, n));
        }
    }
    pub fn count(&mut self, group: &str, label: &str, n: i64) {
        self.count_key(counter::key(group, label), n);
    }
    pub fn cursor(&mut self, source: &str, seq: i64) {
        self.ops.push(Op::Cursor(source.to_owned(), seq));
    }
    pub fn frame_position(&mut self, source: &str, frames: i64) {
        self.ops.push(Op::FramePosition(source.to_owned(), frames));
    }
    /// Forgets a source's cursor (an operator's reset).
    pub fn delete_cursor(&mut self, source: &str) {
        self.ops.push(Op::DeleteCursor(source.to_owned()));
    }
    pub fn put_meta(&mut self, key: MetaKey, value: Vec<u8>) {
        self.ops.push(Op::PutMeta(key, value));
    }
    pub fn delete_meta(&mut self, key: MetaKey) {
        self.ops.push(Op::DeleteMeta(key));
    }
    pub fn plc(&mut self, did: impl Into<String>, op: records::PlcOperand) {
        self.ops.push(Op::Plc(did.into(), op));
    }
    /// An account's status as its PDS lists it.
    pub fn put_pds_view(&mut self, did: &str, view: records::PdsView) {
        self.ops.push(Op::PdsView(did.to_owned(), view));
    }
    /// A contact's check (see [`Op::Contact`] for the keys).
    pub fn put_contact_check(&mut self, key: &str, check: records::ContactCheck) {
        self.ops.push(Op::Contact(key.to_owned(), check));
    }
    pub fn put_identity(&mut self, did: &str, rec: records::IdentityRecord) {
        self.ops.push(Op::Identity(did.to_owned(), rec));
    }
    /// Schedules a resolution of `did` at `at_ms` (times before the epoch
    /// are the epoch: the schedule's keys sort as unsigned).
    pub fn retry(&mut self, at_ms: i64, did: &str) {
        self.ops.push(Op::Retry { at_ms: at_ms.max(0), did: did.to_owned() });
    }
    pub fn unretry(&mut self, at_ms: i64, did: &str) {
        self.ops.push(Op::Unretry { at_ms: at_ms.max(0), did: did.to_owned() });
    }
    /// A change to a host, and the structure mark with it.
    pub fn host(&mut self, endpoint: &str, op: records::HostOp) {
        self.ops.push(Op::Host(endpoint.to_owned(), op));
        self.mark_structure();
    }
    /// Notes that `host` was named by `source`, unless `reader` shows it
    /// already was (no write, no structure refresh; a stale read costs one
    /// redundant operand). A host no source named before is admitted at
    /// the rate [`admission`] allows; `false` when it was not (counted and
    /// left for the next document that names it).
    pub fn note_host(&mut self, reader: &impl StoreReader, host: &str, source: &str) -> Result<bool> {
        match reader.host(host)? {
            Some(r) if r.sources.iter().any(|s| s == source) => return Ok(true),
            Some(_) => {}
            None => {
                if let Err(refused) = reader.admit_host(host) {
                    crate::metrics::HOSTS_DEFERRED.with_label_values(&[refused.label()]).inc();
                    return Ok(false);
                }
            }
        }
        let at_ms = crate::clock::now_ms();
        self.host(host, records::HostOp::Noted { source: source.to_owned(), at_ms });
        Ok(true)
    }

    /// Marks a DID for the map maintainer (every writer that changes what
    /// an account's place depends on does, in the batch of the change).
    pub fn mark(&mut self, did: &str) {
        self.ops.push(Op::Mark(did.to_owned(), 1));
    }
    /// Takes `n` of a DID's mark back (the maintainer, having taken it).
    pub fn unmark(&mut self, did: &str, n: i64) {
        self.ops.push(Op::Mark(did.to_owned(), -n));
    }
    /// Marks the structure (hosts, declarations, memberships).
    pub fn mark_structure(&mut self) {
        self.ops.push(Op::MarkStructure(1));
    }
    pub fn unmark_structure(&mut self, n: i64) {
        self.ops.push(Op::MarkStructure(-n));
    }

    // the map maintainer's: the map's own families

    /// An account's assignment changed: its rows, index entries and counts
    /// follow.
    pub fn assign(&mut self, did: &str, old: Option<records::Assignment>, new: records::Assignment) {
        self.ops.push(Op::Map(map::MapOp::Assign { did: did.to_owned(), old, new, deltas: true }));
    }
    /// As [`Batch::assign`], the counts left alone (a full recompute
    /// replaces them whole with [`Batch::replace_counts`]).
    pub fn reassign(&mut self, did: &str, old: Option<records::Assignment>, new: records::Assignment) {
        self.ops.push(Op::Map(map::MapOp::Assign { did: did.to_owned(), old, new, deltas: false }));
    }
    /// An assignment whose records are gone.
    pub fn unassign(&mut self, did: &str, old: Option<records::Assignment>) {
        self.ops.push(Op::Map(map::MapOp::Unassign { did: did.to_owned(), old }));
    }
    pub fn replace_counts(&mut self, totals: map::CountTotals) {
        self.ops.push(Op::Map(map::MapOp::ReplaceCounts(totals)));
    }
    /// Takes every mark (only with the only handle on the store).
    pub fn clear_marks(&mut self) {
        self.ops.push(Op::Map(map::MapOp::ClearMarks));
    }
    pub fn replace_structure(&mut self, st: map::Structure) {
        self.ops.push(Op::Map(map::MapOp::ReplaceStructure(st)));
    }
}

fn retry_key(at_ms: i64, did: &str) -> Vec<u8> {
    let mut k = at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(did.as_bytes());
    k
}

impl Store {
    /// Encodes a typed batch into a RocksDB write batch.
    fn encode(&self, batch: Batch) -> WriteBatch {
        // reserved up front (~160 bytes an op), so a large batch (10,000
        // PLC operations) is not copied as it grows
        let mut wb = WriteBatch::with_capacity_bytes(batch.len() * 160);
        // each value is encoded into this one buffer, which the write batch
        // copies: no allocation per value
        let mut buf = Vec::with_capacity(512);
        for op in batch.ops {
            match op {
                Op::Account(did, st) => wb.put_cf(self.cf(CF_ACCOUNTS), did.as_bytes(), cbor_into(&mut buf, &st)),
                Op::PutRecord { collection, did, rkey, record } => {
                    wb.put_cf(self.cf(CF_RECORDS), record_key(&collection, &did, &rkey), cbor_into(&mut buf, &record))
                }
                Op::DeleteRecord { collection, did, rkey } => {
                    wb.delete_cf(self.cf(CF_RECORDS), record_key(&collection, &did, &rkey))
                }
                Op::Count(k, n) => wb.merge_cf(self.cf(CF_COUNTERS), k, n.to_le_bytes()),
                Op::Cursor(src, seq) => wb.put_cf(self.cf(CF_META), Store::cursor_key(&src), seq.to_be_bytes()),
                Op::DeleteCursor(src) => {
                    wb.delete_cf(self.cf(CF_META), Store::cursor_key(&src));
                    wb.delete_cf(self.cf(CF_META), Store::frames_key(&src));
                }
                Op::FramePosition(src, n) => wb.put_cf(self.cf(CF_META), Store::frames_key(&src), n.to_be_bytes()),
                Op::PutMeta(k, v) => wb.put_cf(self.cf(CF_META), k.bytes(), v),
                Op::DeleteMeta(k) => wb.delete_cf(self.cf(CF_META), k.bytes()),
                Op::Plc(did, o) => wb.merge_cf(self.cf(CF_PLC), did.as_bytes(), cbor_into(&mut buf, &o)),
                Op::Identity(did, r) => wb.put_cf(self.cf(CF_IDENTITY), did.as_bytes(), cbor_into(&mut buf, &r)),
                Op::Contact(k, c) => wb.put_cf(self.cf(CF_CONTACTS), k.as_bytes(), cbor_into(&mut buf, &c)),
                Op::PdsView(did, v) => wb.put_cf(self.cf(CF_PDS_STATUS), did.as_bytes(), cbor_into(&mut buf, &v)),
                Op::Retry { at_ms, did } => wb.put_cf(self.cf(CF_RETRY), retry_key(at_ms, &did), b""),
                Op::Unretry { at_ms, did } => wb.delete_cf(self.cf(CF_RETRY), retry_key(at_ms, &did)),
                Op::Host(h, o) => wb.merge_cf(self.cf(CF_HOSTS), h.as_bytes(), cbor_into(&mut buf, &o)),
                Op::Mark(did, n) => wb.merge_cf(self.cf(CF_MAP_DIRTY), did.as_bytes(), n.to_le_bytes()),
                Op::MarkStructure(n) => wb.merge_cf(self.cf(CF_MAP_DIRTY), STRUCTURE, n.to_le_bytes()),
                Op::Map(op) => map::expand(op, &mut map::RocksSink { store: self, wb: &mut wb }),
            }
        }
        wb
    }

    /// A point read under the thread's read tier ([`deadline::cached_only`]).
    fn pinned(&self, h: &rocksdb::ColumnFamily, key: impl AsRef<[u8]>) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        deadline::with_point_read(|o| deadline::tiered(self.db.get_pinned_cf_opt(h, key, o)))
    }

    /// An iterator under the thread's read tier.
    fn iterator<'a>(
        &'a self,
        h: &rocksdb::ColumnFamily,
        mode: rocksdb::IteratorMode<'_>,
    ) -> rocksdb::DBIteratorWithThreadMode<'a, DB> {
        match deadline::read_options() {
            None => self.db.iterator_cf(h, mode),
            Some(o) => self.db.iterator_cf_opt(h, o, mode),
        }
    }

    fn get_decoded<T: for<'de> Deserialize<'de>>(&self, cf: &'static str, key: &[u8]) -> Result<Option<T>> {
        match self.pinned(self.cf(cf), key)? {
            Some(v) => Ok(Some(from_cbor(cf, &v)?)),
            None => Ok(None),
        }
    }
}

impl StoreReader for Store {
    fn account_view(&self, did: &str) -> Result<AccountView> {
        let key = did.as_bytes();
        if deadline::is_cached_only() {
            // RocksDB's MultiGet reads files even at the block-cache tier
            // (found by tests/api.rs): one point read per family instead,
            // each decoded from the cache's own bytes
            return Ok(AccountView {
                plc: self.get_decoded(CF_PLC, key)?,
                identity: self.get_decoded(CF_IDENTITY, key)?,
                firehose: self.get_decoded(CF_ACCOUNTS, key)?,
                assignment: self.get_decoded(CF_ASSIGN, key)?,
            });
        }
        let cfs = [CF_PLC, CF_IDENTITY, CF_ACCOUNTS, CF_ASSIGN];
        let vals: Vec<Result<Option<Vec<u8>>>> = self
            .db
            .multi_get_cf(cfs.iter().map(|cf| (self.cf(cf), key)))
            .into_iter()
            .map(|r| r.map_err(StoreError::from))
            .collect();
        let mut vals = vals.into_iter();
        let mut next = || -> Result<Option<Vec<u8>>> { vals.next().transpose().map(Option::flatten) };
        let plc = next()?.map(|b| from_cbor(CF_PLC, &b)).transpose()?;
        let identity = next()?.map(|b| from_cbor(CF_IDENTITY, &b)).transpose()?;
        let firehose = next()?.map(|b| from_cbor(CF_ACCOUNTS, &b)).transpose()?;
        let assignment = next()?.map(|b| from_cbor(CF_ASSIGN, &b)).transpose()?;
        Ok(AccountView { plc, identity, firehose, assignment })
    }
    fn account_state(&self, did: &str) -> Result<Option<AccountState>> {
        self.account(did)
    }
    fn plc(&self, did: &str) -> Result<Option<records::PlcRecord>> {
        self.get_decoded(CF_PLC, did.as_bytes())
    }
    fn identity(&self, did: &str) -> Result<Option<records::IdentityRecord>> {
        self.get_decoded(CF_IDENTITY, did.as_bytes())
    }
    fn host(&self, endpoint: &str) -> Result<Option<records::HostRecord>> {
        self.get_decoded(CF_HOSTS, endpoint.as_bytes())
    }
    fn hosts(&self) -> Result<Vec<(String, records::HostRecord)>> {
        let mut out = Vec::new();
        for item in self.iter_cf(CF_HOSTS) {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), from_cbor(CF_HOSTS, &v)?));
        }
        Ok(out)
    }
    fn stored_record(&self, collection: &str, did: &str, rkey: &str) -> Result<Option<StoredRecord>> {
        self.record(collection, did, rkey)
    }
    fn stored_records(&self, collection: &str) -> Result<Vec<(String, String, StoredRecord)>> {
        self.records(collection)
    }
    fn pds_view(&self, did: &str) -> Result<Option<records::PdsView>> {
        match self.get_cf(CF_PDS_STATUS, did.as_bytes())? {
            Some(v) => Ok(Some(from_cbor(CF_PDS_STATUS, &v)?)),
            None => Ok(None),
        }
    }
    fn contact_check(&self, key: &str) -> Result<Option<records::ContactCheck>> {
        match self.get_cf(CF_CONTACTS, key.as_bytes())? {
            Some(v) => Ok(Some(from_cbor(CF_CONTACTS, &v)?)),
            None => Ok(None),
        }
    }
    fn contact_checks(&self) -> Result<Vec<(String, records::ContactCheck)>> {
        let mut out = Vec::new();
        for item in self.iter_cf(CF_CONTACTS) {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), from_cbor(CF_CONTACTS, &v)?));
        }
        Ok(out)
    }
    fn admit_host(&self, host: &str) -> std::result::Result<(), admission::Refused> {
        let domain = admission::domain_of(host);
        let mut a = self.admission.lock().unwrap_or_else(|p| p.into_inner());
        a.admit(&domain, std::time::Instant::now()).map_err(|(refused, first)| {
            if first {
                tracing::warn!(host, limit = refused.label(), domain = %domain,
                    "new hosts arrive faster than the host table admits them; this and later ones wait for the next document naming them");
            }
            refused
        })
    }
    fn source_cursor(&self, source: &str) -> Result<Option<i64>> {
        self.cursor(source)
    }
    fn all_cursors(&self) -> Result<BTreeMap<String, i64>> {
        self.cursors()
    }
    fn all_counters(&self) -> Result<BTreeMap<String, i64>> {
        self.counters()
    }
    fn meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>> {
        self.get_meta(key.bytes())
    }
    fn retries_due(&self, until_ms: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::new();
        for item in self.iter_cf(CF_RETRY) {
            let (k, _) = item?;
            let Some((at, d)) = k.split_first_chunk::<8>() else { continue };
            let at = i64::from_be_bytes(*at);
            if at > until_ms || out.len() >= limit {
                break;
            }
            out.push((at, String::from_utf8_lossy(d).into_owned()));
        }
        Ok(out)
    }
    fn marks(&self, limit: usize) -> Result<(Vec<(String, i64)>, i64)> {
        let (mut out, mut structure) = (Vec::new(), 0);
        for item in self.iter_cf(CF_MAP_DIRTY) {
            let (k, v) = item?;
            let n = decode_i64(&v);
            if n == 0 {
                continue;
            }
            if &*k == STRUCTURE {
                structure = n;
                continue;
            }
            if out.len() >= limit {
                break;
            }
            out.push((String::from_utf8_lossy(&k).into_owned(), n));
        }
        Ok((out, structure))
    }
}

impl StoreWriter for Store {
    fn commit(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(self.encode(batch))
    }
}

/// A batch on its way to the single writer, and where its outcome goes.
pub type Queued = (Batch, std::sync::mpsc::SyncSender<Result<()>>);

/// A source's way to write: a reader of the store whose commits go to the
/// single writer thread (`run`: the ingest thread, which commits them in
/// order with its own batches), or straight to the store for a one-shot
/// command that is its own only writer. Sources (the PLC loader, the
/// resolver, the crawler, the admin route) hold one of these, never a
/// handle they could write through on their own.
#[derive(Clone)]
pub struct Writer {
    store: Store,
    queue: Option<tokio::sync::mpsc::Sender<Queued>>,
}

impl From<Store> for Writer {
    fn from(store: Store) -> Writer {
        Writer { store, queue: None }
    }
}

impl Writer {
    /// Commits go through `queue` to the writer thread.
    pub fn queued(store: Store, queue: tokio::sync::mpsc::Sender<Queued>) -> Writer {
        Writer { store, queue: Some(queue) }
    }

    /// The store, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The writer thread stopped (shutdown): a batch sent after it is not
/// written, and its source finds it again on the next start (positions and
/// schedules are written with their effects).
fn writer_gone() -> StoreError {
    StoreError::WriterStopped
}

impl StoreWriter for Writer {
    /// Waits for the writer thread to commit the batch (it blocks the
    /// calling thread: on a runtime worker, through `block_in_place`).
    fn commit(&self, batch: Batch) -> Result<()> {
        let Some(queue) = &self.queue else { return self.store.commit(batch) };
        if batch.is_empty() {
            return Ok(());
        }
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        let send = || -> Result<()> {
            queue.blocking_send((batch, ack)).map_err(|_| writer_gone())?;
            done.recv().map_err(|_| writer_gone())?
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(send)
            }
            _ => send(),
        }
    }
}

/// A writer reads what the store holds.
impl StoreReader for Writer {
    fn account_view(&self, did: &str) -> Result<AccountView> {
        self.store.account_view(did)
    }
    fn account_state(&self, did: &str) -> Result<Option<AccountState>> {
        self.store.account_state(did)
    }
    fn plc(&self, did: &str) -> Result<Option<records::PlcRecord>> {
        StoreReader::plc(&self.store, did)
    }
    fn identity(&self, did: &str) -> Result<Option<records::IdentityRecord>> {
        StoreReader::identity(&self.store, did)
    }
    fn host(&self, endpoint: &str) -> Result<Option<records::HostRecord>> {
        self.store.host(endpoint)
    }
    fn hosts(&self) -> Result<Vec<(String, records::HostRecord)>> {
        self.store.hosts()
    }
    fn stored_record(&self, collection: &str, did: &str, rkey: &str) -> Result<Option<StoredRecord>> {
        self.store.stored_record(collection, did, rkey)
    }
    fn stored_records(&self, collection: &str) -> Result<Vec<(String, String, StoredRecord)>> {
        self.store.stored_records(collection)
    }
    fn pds_view(&self, did: &str) -> Result<Option<records::PdsView>> {
        self.store.pds_view(did)
    }
    fn contact_check(&self, key: &str) -> Result<Option<records::ContactCheck>> {
        self.store.contact_check(key)
    }
    fn contact_checks(&self) -> Result<Vec<(String, records::ContactCheck)>> {
        self.store.contact_checks()
    }
    fn admit_host(&self, host: &str) -> std::result::Result<(), admission::Refused> {
        self.store.admit_host(host)
    }
    fn source_cursor(&self, source: &str) -> Result<Option<i64>> {
        self.store.source_cursor(source)
    }
    fn all_cursors(&self) -> Result<BTreeMap<String, i64>> {
        self.store.all_cursors()
    }
    fn all_counters(&self) -> Result<BTreeMap<String, i64>> {
        self.store.all_counters()
    }
    fn meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>> {
        self.store.meta(key)
    }
    fn retries_due(&self, until_ms: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        self.store.retries_due(until_ms, limit)
    }
    fn marks(&self, limit: usize) -> Result<(Vec<(String, i64)>, i64)> {
        self.store.marks(limit)
    }
}

/// The structure mark's key in `map_dirty` (sorts before every DID).
pub const STRUCTURE: &[u8] = b"\x00structure";

/// The key of a kept record.
pub fn record_key(collection: &str, did: &str, rkey: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(collection.len() + did.len() + rkey.len() + 2);
    k.extend_from_slice(collection.as_bytes());
    k.push(0);
    k.extend_from_slice(did.as_bytes());
    k.push(0);
    k.extend_from_slice(rkey.as_bytes());
    k
}

fn add_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut v = existing.map(decode_i64).unwrap_or(0);
    for op in operands {
        v = v.wrapping_add(decode_i64(op));
    }
    Some(v.to_le_bytes().to_vec())
}

fn decode_i64(b: &[u8]) -> i64 {
    b.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

/// Bytes of the block cache the families share where the machine's memory
/// is not known (twice the least a default gives).
pub const BLOCK_CACHE_BYTES: usize = 512 << 20;

static BLOCK_CACHE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The block cache of every store opened from now on (`--block-cache-mb`).
pub fn set_block_cache_bytes(bytes: usize) {
    BLOCK_CACHE.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The block cache a store opens with: as set, else a quarter of the
/// machine's memory, between [`BLOCK_CACHE_BYTES`] / 2 and 8 GiB (the LRU
/// cache takes memory only as it fills).
pub fn block_cache_bytes() -> usize {
    match BLOCK_CACHE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {
            let total_kb = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(str::to_owned)))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok());
            total_kb.map_or(BLOCK_CACHE_BYTES, |kb| (kb << 10) / 4).clamp(BLOCK_CACHE_BYTES / 2, 8 << 30)
        }
        n => n,
    }
}

/// A raw key and value.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The database. Clones share one RocksDB handle (reads are thread-safe;
/// writes go through the single writer).
#[derive(Clone)]
pub struct Store {
    db: std::sync::Arc<DB>,
    /// Once set, the only threads (by name) whose writes are taken.
    writers: std::sync::Arc<std::sync::OnceLock<&'static [&'static str]>>,
    /// New hosts' admission to the host table (shared by every handle).
    admission: std::sync::Arc<std::sync::Mutex<admission::HostAdmission>>,
}

impl Store {
    fn options() -> (Options, Vec<ColumnFamilyDescriptor>) {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        // a compaction of level 0 (a bulk load's full compaction above all)
        // split by key range over both cores
        opts.set_max_subcompactions(2);
        // One block cache for every family: per-family default caches
        // (32 MiB in 64 shards) could not hold the larger index blocks, so
        // every point read re-read and decompressed them (measured: half
        // the CPU of an API lookup).
        let cache = rocksdb::Cache::new_lru_cache(block_cache_bytes());
        let cfs = CFS
            .iter()
            .map(|name| {
                let mut o = Options::default();
                o.set_compression_type(rocksdb::DBCompressionType::Lz4);
                // Point lookups by DID dominate (and most misses are new
                // DIDs): a bloom filter answers a miss without reading blocks.
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                table.set_cache_index_and_filter_blocks(true);
                // ... kept pinned in that cache by each table (charged to
                // it), so a point read looks up one block there, not three
                table.set_unpartitioned_pinning_tier(rocksdb::BlockBasedTablePinningTier::All);
                // a hash of each data block's keys beside its binary index:
                // a point read finds its key without a search in the block
                table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
                table.set_data_block_hash_ratio(0.75);
                table.set_block_cache(&cache);
                o.set_block_based_table_factory(&table);
                if [CF_COUNTERS, CF_MAP_COUNTS, CF_MAP_DIRTY].contains(name) {
                    o.set_merge_operator_associative("add_i64", add_merge);
                }
                if *name == CF_MAP_DIRTY {
                    // a mark taken back to zero is done: drop it
                    o.set_compaction_filter("drop_zero", |_, _, v| {
                        if decode_i64(v) == 0 {
                            rocksdb::compaction_filter::Decision::Remove
                        } else {
                            rocksdb::compaction_filter::Decision::Keep
                        }
                    });
                }
                if *name == CF_PLC {
                    o.set_merge_operator("plc_apply", records::plc_merge, |_, _, _| None);
                }
                if *name == CF_HOSTS {
                    o.set_merge_operator("host_apply", records::host_merge, |_, _, _| None);
                }
                ColumnFamilyDescriptor::new(*name, o)
            })
            .collect();
        (opts, cfs)
    }

    /// Opens (creating if needed) the database for writing.
    pub fn open(path: &Path) -> Result<Store> {
        let (opts, cfs) = Self::options();
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let store = Store { db: std::sync::Arc::new(db), writers: Default::default(), admission: Default::default() };
        match store.db.get_cf(store.cf(CF_META), b"schema")? {
            None => store.db.put_cf(store.cf(CF_META), b"schema", SCHEMA_VERSION.to_be_bytes())?,
            Some(v) => store.check_schema(&v)?,
        }
        Ok(store)
    }

    /// Opens an existing database read-only (safe beside a running writer).
    /// Families an older version did not create read as empty.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let (mut opts, cfs) = Self::options();
        opts.create_if_missing(false);
        let existing = DB::list_cf(&opts, path)?;
        let cfs: Vec<_> = cfs.into_iter().filter(|d| existing.iter().any(|e| e == d.name())).collect();
        let db = DB::open_cf_descriptors_read_only(&opts, path, cfs, false)?;
        let store = Store { db: std::sync::Arc::new(db), writers: Default::default(), admission: Default::default() };
        if let Some(v) = store.db.get_cf(store.cf(CF_META), b"schema")? {
            store.check_schema(&v)?;
        }
        Ok(store)
    }

    fn check_schema(&self, v: &[u8]) -> Result<()> {
        let found = v.try_into().map(u32::from_be_bytes).unwrap_or(0);
        if found != SCHEMA_VERSION {
            return Err(StoreError::Schema { found });
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }

    /// From now on, only threads with these names may write through this
    /// handle (and its clones): `run` names its writer thread and the map
    /// maintainer, so a source that wrote on its own would be refused and
    /// seen at once, rather than race the writer. Set once.
    pub fn only_writers(&self, threads: &'static [&'static str]) {
        let _ = self.writers.set(threads);
    }

    /// Commits a batch. The WAL is on, so a process crash loses nothing
    /// committed; the batch is atomic, so effects and cursor move together.
    fn write(&self, batch: WriteBatch) -> Result<()> {
        if let Some(allowed) = self.writers.get() {
            let t = std::thread::current();
            let name = t.name().unwrap_or("");
            if !allowed.contains(&name) {
                tracing::error!(thread = name, "a write outside the single writer refused");
                return Err(StoreError::NotTheWriter { thread: name.to_owned() });
            }
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// A value of the `meta` family.
    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.pinned(self.cf(CF_META), key)?.map(|v| v.to_vec()))
    }

    /// A value of any family.
    fn get_cf(&self, cf: &str, key: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        match self.db.cf_handle(cf) {
            Some(h) => self.pinned(h, key),
            None => Ok(None),
        }
    }

    /// Every entry of a family, in key order.
    fn iter_cf(&self, cf: &str) -> impl Iterator<Item = Result<KeyValue>> + '_ {
        self.iter_from(cf, &[])
    }

    /// The entries of a family from `start` on, in key order.
    fn iter_from(&self, cf: &str, start: &[u8]) -> Box<dyn Iterator<Item = Result<KeyValue>> + '_> {
        match self.db.cf_handle(cf) {
            Some(h) => Box::new(deadline::Bounded::new(
                self.iterator(h, rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward)).map(deadline::tiered),
            )),
            None => Box::new(std::iter::empty()),
        }
    }

    /// The last entry at or before `key`.
    fn at_or_before(&self, cf: &str, key: &[u8]) -> Result<Option<KeyValue>> {
        let Some(h) = self.db.cf_handle(cf) else { return Ok(None) };
        let mut it = self.iterator(h, rocksdb::IteratorMode::From(key, rocksdb::Direction::Reverse));
        deadline::tiered(it.next().transpose())
    }

    /// About how many DIDs the account families hold (RocksDB's estimate:
    /// the largest of the PLC, resolution, firehose and assignment families).
    pub fn estimate_accounts(&self) -> u64 {
        [CF_PLC, CF_IDENTITY, CF_ACCOUNTS, CF_ASSIGN]
            .iter()
            .filter_map(|cf| self.db.cf_handle(cf))
            .filter_map(|h| self.db.property_int_value_cf(h, "rocksdb.estimate-num-keys").ok().flatten())
            .max()
            .unwrap_or(0)
    }

    /// Reads the families a lookup reads (the account families, the map's
    /// assignments and instances, hosts, records, contacts) through the
    /// block cache once, when they fit in it (their files' size, four times
    /// over for decompression, under the cache's capacity), so the API's
    /// reads are answered from memory from the start rather than as each
    /// block is first touched. Returns the bytes read (0: they do not fit,
    /// nothing read); stops early when `stop` is set.
    pub fn warm_cache(&self, stop: &std::sync::atomic::AtomicBool) -> Result<u64> {
        let families = [
            CF_META,
            CF_PLC,
            CF_IDENTITY,
            CF_ACCOUNTS,
            CF_ASSIGN,
            CF_HOSTS,
            CF_RECORDS,
            CF_CONTACTS,
            CF_PDS_STATUS,
            CF_INSTANCES,
            CF_HOST_INSTANCE,
            CF_DECLARATIONS,
            CF_HANDLES,
            CF_MAP_COUNTS,
            CF_MAP_DIRTY,
        ];
        let size: u64 = families
            .iter()
            .filter_map(|cf| self.db.cf_handle(cf))
            .filter_map(|h| self.db.property_int_value_cf(h, "rocksdb.total-sst-files-size").ok().flatten())
            .sum();
        if size.saturating_mul(4) > block_cache_bytes() as u64 {
            return Ok(0);
        }
        let mut read = 0u64;
        for cf in families {
            for (n, item) in self.iter_cf(cf).enumerate() {
                let (k, v) = item?;
                read += (k.len() + v.len()) as u64;
                if n % 4096 == 0 && stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(read);
                }
            }
        }
        Ok(read)
    }

    /// Compacts every family in full: merge operands are folded into their
    /// values (a bulk PLC load leaves one operand per operation, which
    /// every read of the record would fold again) and deleted entries
    /// dropped. Takes minutes on a network-sized store; safe while others
    /// read.
    pub fn compact_all(&self) {
        self.compact_every_family(&rocksdb::CompactOptions::default());
    }

    /// Rewrites every file of every family (a full compaction that also
    /// rewrites the last level's), so the whole store takes this version's
    /// table options (`examples/compact.rs`).
    pub fn rewrite_all(&self) {
        let mut o = rocksdb::CompactOptions::default();
        o.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        self.compact_every_family(&o);
    }

    /// Stops (or restarts) RocksDB's automatic compactions in every family,
    /// for a bulk load that compacts in full when it ends ([`compact_all`]):
    /// the load's files are then merged once, instead of level 0 being
    /// rewritten into level 1 again and again while both cores are busy
    /// parsing. Write stalls on the count of level-0 files are off with
    /// them (RocksDB's bulk-load preparation), and come back with them: a
    /// flush then waits until the pile is compacted, so flush and compact
    /// in full before turning them on. Not kept in the store: the next open
    /// compacts automatically again.
    ///
    /// [`compact_all`]: Store::compact_all
    pub fn set_auto_compactions(&self, on: bool) -> Result<()> {
        let disable = if on { "false" } else { "true" };
        for cf in CFS {
            self.db.set_options_cf(self.cf(cf), &[("disable_auto_compactions", disable)])?;
        }
        Ok(())
    }

    fn compact_every_family(&self, o: &rocksdb::CompactOptions) {
        for cf in CFS {
            if let Some(h) = self.db.cf_handle(cf) {
                self.db.compact_range_cf_opt(h, None::<&[u8]>, None::<&[u8]>, o);
            }
        }
    }

    /// A RocksDB integer property summed over every family (0 if unknown).
    pub fn property_sum(&self, name: &str) -> u64 {
        CFS.iter()
            .filter_map(|cf| self.db.cf_handle(cf))
            .filter_map(|h| self.db.property_int_value_cf(h, name).ok().flatten())
            .sum()
    }

    /// Opens `path` as a secondary instance (following a running writer's
    /// files; call [`Store::catch_up`] to see its newer writes).
    pub fn open_secondary(path: &Path, own: &Path) -> Result<Store> {
        let (mut opts, cfs) = Self::options();
        opts.create_if_missing(false);
        opts.set_max_open_files(-1);
        let existing = DB::list_cf(&opts, path)?;
        let cfs: Vec<_> = cfs.into_iter().filter(|d| existing.iter().any(|e| e == d.name())).collect();
        let db = DB::open_cf_descriptors_as_secondary(&opts, path, own, cfs)?;
        Ok(Store { db: std::sync::Arc::new(db), writers: Default::default(), admission: Default::default() })
    }

    /// The sequence number of the latest write this handle sees: it grows
    /// with every write (a secondary's, as it catches up), so a value read
    /// while it is unchanged is still the stored one.
    pub fn sequence(&self) -> u64 {
        self.db.latest_sequence_number()
    }

    /// A secondary instance catches up with the primary's writes.
    pub fn catch_up(&self) -> Result<()> {
        Ok(self.db.try_catch_up_with_primary()?)
    }

    /// Every entry of a family as of `snap`, in key order.
    fn snapshot_iter<'a>(
        &'a self,
        snap: &'a rocksdb::Snapshot<'a>,
        cf: &str,
    ) -> Box<dyn Iterator<Item = Result<KeyValue>> + 'a> {
        if let Err(e) = deadline::refuse_if_cached_only() {
            return Box::new(std::iter::once(Err(e)));
        }
        match self.db.cf_handle(cf) {
            Some(h) => Box::new(deadline::Bounded::new(
                snap.iterator_cf(h, rocksdb::IteratorMode::Start).map(|r| r.map_err(StoreError::from)),
            )),
            None => Box::new(std::iter::empty()),
        }
    }

    /// Writes a consistent copy of the database to `path` (a new directory on
    /// the same filesystem: SST files are hard-linked, so it is quick and
    /// small). Safe while writers run.
    pub fn checkpoint(&self, path: &Path) -> Result<()> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        cp.create_checkpoint(path)?;
        Ok(())
    }

    /// Sets the limits of new hosts' admission (see [`admission`]).
    pub fn set_host_admission(&self, limits: admission::Limits) {
        *self.admission.lock().unwrap_or_else(|p| p.into_inner()) = admission::HostAdmission::new(limits);
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// A point-in-time view for consistent multi-family reads.
    fn snapshot(&self) -> rocksdb::Snapshot<'_> {
        self.db.snapshot()
    }

    /// The cursor key of a source.
    pub fn cursor_key(source: &str) -> Vec<u8> {
        counter::key("cursor", source)
    }

    fn frames_key(source: &str) -> Vec<u8> {
        counter::key("frames", source)
    }

    /// How many frames of a replayed file were consumed (see
    /// [`Op::FramePosition`]).
    pub fn frame_position(&self, source: &str) -> Result<Option<i64>> {
        self.meta_i64(&Self::frames_key(source))
    }

    /// The last seq applied from `source`.
    pub fn cursor(&self, source: &str) -> Result<Option<i64>> {
        self.meta_i64(&Self::cursor_key(source))
    }

    /// An i64 (big-endian) `meta` value.
    fn meta_i64(&self, key: &[u8]) -> Result<Option<i64>> {
        Ok(self.pinned(self.cf(CF_META), key)?.and_then(|v| v[..].try_into().ok()).map(i64::from_be_bytes))
    }

    /// Every source's cursor.
    pub fn cursors(&self) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for item in
            self.iterator(self.cf(CF_META), rocksdb::IteratorMode::From(b"cursor/", rocksdb::Direction::Forward))
        {
            let item = deadline::tiered(item);
            let (k, v) = item?;
            let Some(src) = k.strip_prefix(b"cursor/") else { break };
            if let Ok(b) = <[u8; 8]>::try_from(&v[..]) {
                out.insert(String::from_utf8_lossy(src).into_owned(), i64::from_be_bytes(b));
            }
        }
        Ok(out)
    }

    pub fn account(&self, did: &str) -> Result<Option<AccountState>> {
        match self.pinned(self.cf(CF_ACCOUNTS), did.as_bytes())? {
            Some(v) => Ok(Some(from_cbor(CF_ACCOUNTS, &v)?)),
            None => Ok(None),
        }
    }

    /// Every account, in DID order.
    pub fn accounts(&self) -> impl Iterator<Item = Result<(String, AccountState)>> + '_ {
        self.iter_cf(CF_ACCOUNTS).map(|item| {
            let (k, v) = item?;
            Ok((String::from_utf8_lossy(&k).into_owned(), from_cbor(CF_ACCOUNTS, &v)?))
        })
    }

    /// Every counter, by `group/label`.
    pub fn counters(&self) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for item in self.iterator(self.cf(CF_COUNTERS), rocksdb::IteratorMode::Start) {
            let (k, v) = deadline::tiered(item)?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), decode_i64(&v));
        }
        Ok(out)
    }

    pub fn record(&self, collection: &str, did: &str, rkey: &str) -> Result<Option<StoredRecord>> {
        match self.pinned(self.cf(CF_RECORDS), record_key(collection, did, rkey))? {
            Some(v) => Ok(Some(from_cbor(CF_RECORDS, &v)?)),
            None => Ok(None),
        }
    }

    /// Every kept record of a collection: `(did, rkey, record)`.
    pub fn records(&self, collection: &str) -> Result<Vec<(String, String, StoredRecord)>> {
        let mut prefix = collection.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.iter_from(CF_RECORDS, &prefix) {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else { break };
            let mut parts = rest.splitn(2, |b| *b == 0);
            let did = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let rkey = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            out.push((did, rkey, from_cbor(CF_RECORDS, &v)?));
        }
        Ok(out)
    }

    /// Flushes memtables to disk (used before exit so a read-only opener
    /// sees everything without replaying the WAL).
    pub fn flush(&self) -> Result<()> {
        for cf in CFS {
            self.db.flush_cf(self.cf(cf))?;
        }
        Ok(())
    }
}
