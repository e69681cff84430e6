//! Applies PLC export operations to the store, in batches, with the export
//! position committed in the same write batch (so a stop resumes exactly).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{ExportOp, OpState, PlcError};
use crate::store::{self, counter, Store, CF_COUNTERS, CF_META, CF_PLC};

/// Operations per write batch.
pub const BATCH_OPS: usize = 10_000;
/// Bytes reserved for a batch up front (~300 bytes an operation), so it is
/// not copied as it grows.
const BATCH_BYTES: usize = BATCH_OPS * 320;

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

/// Where the export was read up to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Sequence form: the last `seq` applied.
    pub seq: Option<u64>,
    /// Legacy form: the last `createdAt` applied, and the CIDs applied at
    /// exactly that time (pages can split a timestamp; they dedupe).
    pub created_at: Option<String>,
    pub cids_at: Vec<String>,
}

impl Position {
    /// Whether `op` was already applied (it is at or before the position).
    pub fn covers(&self, op: &ExportOp) -> bool {
        match (op.seq, self.seq) {
            (Some(s), Some(p)) => s <= p,
            (Some(_), None) => false,
            (None, _) => match &self.created_at {
                Some(at) => {
                    op.created_at.as_str() < at.as_str() || (op.created_at == *at && self.cids_at.contains(&op.cid))
                }
                None => false,
            },
        }
    }

    fn advance(&mut self, op: &ExportOp) {
        if let Some(s) = op.seq {
            self.seq = Some(s);
            self.created_at = None;
            self.cids_at.clear();
            return;
        }
        if self.created_at.as_deref() != Some(op.created_at.as_str()) {
            self.created_at = Some(op.created_at.clone());
            self.cids_at.clear();
        }
        self.cids_at.push(op.cid.clone());
    }

    const KEY: &'static [u8] = b"plc/position";

    pub fn load(store: &Store) -> store::Result<Position> {
        Ok(store.get_meta(Self::KEY)?.and_then(|b| ciborium::from_reader(b.as_slice()).ok()).unwrap_or_default())
    }
}

/// One operation as written to the `plc` family: a merge operand that the
/// family's merge operator ([`merge`]) folds into the DID's [`PlcRecord`],
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
            let window_start = crate::event::parse_time_us(&op.created_at).map(|t| t - RECOVERY_WINDOW_US);
            let suspect = |from: &str| match (window_start, crate::event::parse_time_us(from)) {
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
pub fn merge(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let mut rec: PlcRecord = existing.and_then(|b| ciborium::from_reader(b).ok()).unwrap_or_default();
    for op in operands {
        match ciborium::from_reader::<PlcOperand, _>(op) {
            Ok(o) => rec.apply(o),
            Err(e) => tracing::error!(error = %e, "undecodable PLC operand skipped"),
        }
    }
    Some(store::to_cbor(&rec))
}

/// Totals of one load, also kept in the store's counters (`plc/…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadStats {
    pub lines: u64,
    pub applied: u64,
    pub already_applied: u64,
    pub nullified_skipped: u64,
    pub tombstones: u64,
    pub rejected: HashMap<&'static str, u64>,
}

/// The loader.
pub struct Loader<'s> {
    store: &'s Store,
    batch: rocksdb::WriteBatch,
    /// This batch's operands, by DID, in export order.
    pending: Vec<(String, Vec<u8>)>,
    counters: HashMap<Vec<u8>, i64>,
    ops_in_batch: usize,
    /// `stats` as of the last flush (counters are written as differences).
    flushed: LoadStats,
    /// PDS endpoints named in this batch, and all registered by this load.
    hosts: std::collections::HashSet<String>,
    known_hosts: std::collections::HashSet<String>,
    pub position: Position,
    pub stats: LoadStats,
}

impl<'s> Loader<'s> {
    pub fn new(store: &'s Store) -> store::Result<Loader<'s>> {
        Ok(Loader {
            store,
            batch: rocksdb::WriteBatch::with_capacity_bytes(BATCH_BYTES),
            pending: Vec::with_capacity(BATCH_OPS),
            counters: HashMap::new(),
            ops_in_batch: 0,
            flushed: LoadStats::default(),
            hosts: Default::default(),
            known_hosts: Default::default(),
            position: Position::load(store)?,
            stats: LoadStats::default(),
        })
    }

    fn count(&mut self, group: &str, label: &str) {
        *self.counters.entry(counter::key(group, label)).or_default() += 1;
    }

    /// Counts a line that did not parse, with its reason; logged once here.
    pub fn reject(&mut self, e: &PlcError) {
        self.stats.lines += 1;
        crate::metrics::PLC_OPS.with_label_values(&[e.reason()]).inc();
        *self.stats.rejected.entry(e.reason()).or_default() += 1;
        self.count("plc_error", e.reason());
        tracing::warn!(reason = e.reason(), error = %e, "PLC export line rejected");
    }

    /// Applies one operation (if not already applied).
    pub fn apply(&mut self, op: ExportOp) -> store::Result<()> {
        self.stats.lines += 1;
        if self.position.covers(&op) {
            crate::metrics::PLC_OPS.with_label_values(&["already_applied"]).inc();
            self.stats.already_applied += 1;
            return Ok(());
        }
        self.position.advance(&op);
        self.ops_in_batch += 1;
        if op.nullified {
            self.stats.nullified_skipped += 1;
            return self.maybe_flush();
        }
        let operand = match op.state {
            OpState::Update { pds, handle, signing_key } => {
                if let Some(p) = &pds {
                    if !self.known_hosts.contains(p) {
                        self.hosts.insert(p.clone());
                    }
                }
                PlcOperand {
                    cid: op.cid,
                    prev: op.prev,
                    created_at: op.created_at,
                    tombstone: false,
                    pds,
                    handle,
                    signing_key,
                }
            }
            OpState::Tombstone => {
                self.stats.tombstones += 1;
                PlcOperand {
                    cid: op.cid,
                    prev: op.prev,
                    created_at: op.created_at,
                    tombstone: true,
                    pds: None,
                    handle: None,
                    signing_key: None,
                }
            }
        };
        self.pending.push((op.did, store::to_cbor(&operand)));
        self.stats.applied += 1;
        self.maybe_flush()
    }

    fn maybe_flush(&mut self) -> store::Result<()> {
        if self.ops_in_batch >= BATCH_OPS {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits the pending operations, counters and position together.
    pub fn flush(&mut self) -> store::Result<()> {
        if self.ops_in_batch == 0 && self.counters.is_empty() {
            return Ok(());
        }
        let (s, f) = (&self.stats, &self.flushed);
        let deltas = [
            ("ops", s.applied - f.applied),
            ("tombstones", s.tombstones - f.tombstones),
            ("nullified_skipped", s.nullified_skipped - f.nullified_skipped),
        ];
        crate::metrics::PLC_OPS.with_label_values(&["applied"]).inc_by(s.applied - f.applied);
        crate::metrics::PLC_OPS
            .with_label_values(&["nullified_skipped"])
            .inc_by(s.nullified_skipped - f.nullified_skipped);
        for (label, d) in deltas {
            if d > 0 {
                *self.counters.entry(counter::key("plc", label)).or_default() += d as i64;
            }
        }
        self.flushed = self.stats.clone();
        for h in std::mem::take(&mut self.hosts) {
            crate::hosts::note(self.store, &h, "did_document")?;
            self.known_hosts.insert(h);
        }
        let mut wb = std::mem::replace(&mut self.batch, rocksdb::WriteBatch::with_capacity_bytes(BATCH_BYTES));
        // In key order (stable, so one DID's operations keep their order):
        // the memtable inserts a sorted run far faster than random keys.
        self.pending.sort_by(|a, b| a.0.cmp(&b.0));
        let plc = self.store.cf(CF_PLC);
        let mut last: Option<String> = None;
        for (did, operand) in self.pending.drain(..) {
            wb.merge_cf(plc, did.as_bytes(), operand);
            if last.as_ref() != Some(&did) {
                crate::cluster::map::mark(&mut wb, self.store, &did);
                last = Some(did);
            }
        }
        let counters = self.store.cf(CF_COUNTERS);
        for (k, v) in self.counters.drain() {
            wb.merge_cf(counters, k, v.to_le_bytes());
        }
        wb.put_cf(self.store.cf(CF_META), Position::KEY, store::to_cbor(&self.position));
        self.store.write(wb)?;
        self.ops_in_batch = 0;
        if let Some(s) = self.position.seq {
            crate::metrics::PLC_POSITION.set(s as i64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(cid: &str, prev: Option<&str>, at: &str, key: Option<&str>) -> PlcOperand {
        PlcOperand {
            cid: cid.into(),
            prev: prev.map(Into::into),
            created_at: at.into(),
            tombstone: key.is_none(),
            pds: Some("https://pds.example.com".into()),
            handle: None,
            signing_key: key.map(Into::into),
        }
    }

    fn retired(r: &PlcRecord) -> Vec<(&str, &str, &str)> {
        r.retired_keys.iter().map(|k| (k.key.as_str(), k.from.as_str(), k.until.as_str())).collect()
    }

    #[test]
    fn key_changes_and_a_tombstone_retire_the_key_in_force() {
        let mut r = PlcRecord::default();
        r.apply(op("a", None, "2026-01-01T00:00:00Z", Some("k1")));
        r.apply(op("b", Some("a"), "2026-02-01T00:00:00Z", Some("k1"))); // same key: nothing retired
        assert!(r.retired_keys.is_empty());
        r.apply(op("c", Some("b"), "2026-03-01T00:00:00Z", Some("k2")));
        r.apply(op("d", Some("c"), "2026-04-01T00:00:00Z", None));
        assert_eq!(
            retired(&r),
            [
                ("k1", "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z"),
                ("k2", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z")
            ]
        );
        // an unchanged record is written without the field, and old records read
        let plain = PlcRecord { ops: 1, ..PlcRecord::default() };
        let back: PlcRecord = ciborium::from_reader(store::to_cbor(&plain).as_slice()).unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn a_fork_drops_keys_set_by_operations_it_may_have_nullified() {
        let mut r = PlcRecord::default();
        r.apply(op("a", None, "2026-01-01T00:00:00Z", Some("k1")));
        // someone with a rotation key sets their own signing key …
        r.apply(op("b", Some("a"), "2026-03-01T00:00:00Z", Some("evil")));
        // … and a recovery within 72 hours forks from `a`, nullifying `b`
        r.apply(op("c", Some("a"), "2026-03-02T00:00:00Z", Some("k2")));
        assert_eq!(r.forks, 1);
        assert_eq!(retired(&r), [("k1", "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z")], "evil is not kept");
        assert_eq!(r.signing_key.as_deref(), Some("k2"));
    }

    #[test]
    fn the_history_is_bounded() {
        let mut r = PlcRecord::default();
        r.apply(op("g", None, "2026-01-01T00:00:00Z", Some("k0")));
        for i in 1..=MAX_RETIRED_KEYS + 5 {
            let prev = r.head.clone();
            r.apply(op(
                &format!("c{i}"),
                Some(&prev),
                &format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
                Some(&format!("k{i}")),
            ));
        }
        assert_eq!(r.retired_keys.len(), MAX_RETIRED_KEYS);
        assert_eq!(r.retired_keys.last().unwrap().key, format!("k{}", MAX_RETIRED_KEYS + 4));
    }
}
