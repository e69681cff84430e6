//! Applies PLC export operations to the store, in batches, with the export
//! position committed in the same write batch (so a stop resumes exactly).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{ExportOp, OpState, PlcError};
pub use crate::store::records::{
    note_move, plc_merge as merge, Move, PlcOperand, PlcRecord, RetiredKey, MAX_MOVES, MAX_RETIRED_KEYS,
    RECOVERY_WINDOW_US,
};
use crate::store::{self, counter, Batch, Store, StoreReader, StoreWriter};

/// Operations per write batch.
pub const BATCH_OPS: usize = 10_000;

/// Where the export was read up to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Sequence form: the last `seq` applied.
    pub seq: Option<u64>,
    /// Legacy form: the last `createdAt` applied, and the CIDs applied at
    /// exactly that time (pages can split a timestamp; they dedupe).
    pub created_at: Option<String>,
    pub cids_at: Vec<String>,
    /// The `createdAt` of the last operation applied, in either form (how
    /// fresh the load is; not used to resume).
    #[serde(default)]
    pub last_at: Option<String>,
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
        // reuses the string's buffer: no allocation per operation
        self.last_at.get_or_insert_default().clone_from(&op.created_at);
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

    const KEY: store::MetaKey = store::MetaKey::PlcPosition;

    pub fn load(store: &impl StoreReader) -> store::Result<Position> {
        Ok(store.meta(Self::KEY)?.and_then(|b| ciborium::from_reader(b.as_slice()).ok()).unwrap_or_default())
    }
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
    /// A signal stopped the load before the end (the position is kept).
    pub stopped: bool,
    /// A bulk load that stopped marking accounts and asked for a full
    /// recompute ([`Loader::bulk`]).
    pub bulk: bool,
}

/// The loader.
pub struct Loader<'s, S: StoreWriter = Store> {
    store: &'s S,
    /// This batch's operands, by DID, in export order.
    pending: Vec<(String, PlcOperand)>,
    counters: HashMap<Vec<u8>, i64>,
    ops_in_batch: usize,
    /// `stats` as of the last flush (counters are written as differences).
    flushed: LoadStats,
    /// PDS endpoints named in this batch, and all registered by this load.
    hosts: std::collections::HashSet<String>,
    known_hosts: std::collections::HashSet<String>,
    pub position: Position,
    pub stats: LoadStats,
    /// A bulk load: past [`BULK_OPS`] operations, and more than a quarter
    /// of the accounts the store held when it began (this), it marks no
    /// account and asks once for a full recompute instead.
    bulk_over: Option<u64>,
}

/// A bulk load stops marking accounts past this many operations (when
/// they are also more than a quarter of the accounts it began with): a
/// full recompute of the map then costs less than taking each mark (the
/// rule `cluster::maintain::bring_current` applies to the marks).
pub const BULK_OPS: u64 = 10_000;

impl<'s, S: StoreWriter> Loader<'s, S> {
    pub fn new(store: &'s S) -> store::Result<Loader<'s, S>> {
        Ok(Loader {
            store,
            pending: Vec::with_capacity(BATCH_OPS),
            counters: HashMap::new(),
            ops_in_batch: 0,
            flushed: LoadStats::default(),
            hosts: Default::default(),
            known_hosts: Default::default(),
            position: Position::load(store)?,
            stats: LoadStats::default(),
            bulk_over: None,
        })
    }

    /// A bulk load over a store of about `accounts` accounts, by a command
    /// that brings the map current when it ends (`backfill-plc`): past
    /// [`BULK_OPS`] operations that are more than a quarter of `accounts`,
    /// no account is marked (half the writes of a load) and the map is
    /// asked to recompute in full (`MetaKey::RebuildWanted`), which it
    /// would choose for that many marks anyway. `run`'s loader marks every
    /// account: its map is kept incrementally while it loads.
    pub fn bulk(mut self, accounts: u64) -> Self {
        self.bulk_over = Some(accounts);
        self
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
        if let (Some(s), Some(p)) = (op.seq, self.position.seq) {
            if s > p.saturating_add(super::MAX_SEQ_JUMP) {
                self.reject(&PlcError::Position("seq jumps implausibly far over the position"));
                return Ok(());
            }
        }
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
        self.pending.push((op.did, operand));
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
        let mut wb = Batch::with_capacity(self.pending.len() * 2 + self.hosts.len() * 2 + self.counters.len() + 1);
        for h in std::mem::take(&mut self.hosts) {
            if wb.note_host(self.store, &h, "did_document")? {
                self.known_hosts.insert(h);
            }
        }
        // In key order (one DID's operations in their own order): the
        // memtable inserts a sorted run far faster than random keys. The
        // positions are sorted, not the operations (a tenth of their size).
        let mut order: Vec<u32> = (0..self.pending.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.pending[a as usize].0.cmp(&self.pending[b as usize].0).then(a.cmp(&b)));
        let bulk = self
            .bulk_over
            .is_some_and(|accounts| self.stats.applied > BULK_OPS && self.stats.applied.saturating_mul(4) > accounts);
        if bulk && !self.stats.bulk {
            // once, in the batch with the operations it stands for
            wb.put_meta(store::MetaKey::RebuildWanted, crate::clock::now_ms().to_be_bytes().to_vec());
            self.stats.bulk = true;
        }
        // each DID marked once, before its first operation
        let first_of_did: Vec<bool> = (0..order.len())
            .map(|k| k == 0 || self.pending[order[k - 1] as usize].0 != self.pending[order[k] as usize].0)
            .collect();
        let mut pending: Vec<Option<(String, PlcOperand)>> = self.pending.drain(..).map(Some).collect();
        for (i, first) in order.into_iter().zip(first_of_did) {
            let (did, operand) = pending[i as usize].take().expect("each position once");
            if !bulk && first {
                wb.mark(&did);
            }
            wb.plc(did, operand);
        }
        for (k, v) in self.counters.drain() {
            wb.count_key(k, v);
        }
        wb.put_meta(Position::KEY, store::to_cbor(&self.position));
        self.store.commit(wb)?;
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
