//! The stored map, kept two ways that must agree:
//!
//! - **Incremental** ([`Maintainer`]): every writer that changes what an
//!   account's place depends on (a PLC operation, a resolution, a new
//!   account or status on the firehose) marks the DID in `map_dirty` in the
//!   same write batch; a host crawl or a declaration/membership record
//!   marks the *structure*. The maintainer takes marks in key order, reads
//!   the account's records, and when its [`Assignment`] changed subtracts
//!   the old contributions and adds the new ones (merge operands, one write
//!   batch with the marks taken back). A structure mark re-clusters the
//!   hosts (cheap: hosts, not accounts) and rewrites `instances` and
//!   `host_instance`; accounts are not touched, as instances are summed
//!   from their hosts when read.
//! - **Full recompute** (`instancemap recluster`, [`recompute`]): streams
//!   every account, rebuilds every count from zero, rewrites the
//!   assignments that differ, then the structure.
//!
//! Marks are counters, not flags: the maintainer subtracts what it read, so
//! a mark added while it worked survives and is taken next time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::assign::{self, key, Assignment, Contributions, CountKey, MoveRow};
use super::{EvidenceKind, HostFacts};
use crate::hosts::HostRecord;
use crate::identity::resolve::IdentityRecord;
use crate::plc::load::PlcRecord;
use crate::store::{
    self, AccountState, Store, CF_ACCOUNTS, CF_ASSIGN, CF_DECLARATIONS, CF_HANDLES, CF_HOSTS, CF_HOST_ACCOUNTS,
    CF_HOST_INSTANCE, CF_HOST_MOVES, CF_IDENTITY, CF_INSTANCES, CF_MAP_COUNTS, CF_MAP_DIRTY, CF_MOVES, CF_PLC,
};

pub use super::assign::current_pds;

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
    pub governance: Option<super::declaration::Declaration>,
    /// Operators whose declarations claim any of its hosts, verified or not.
    #[serde(default)]
    pub claimed_by: Vec<String>,
}

/// What a recompute did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub hosts: usize,
    pub instances: usize,
    pub accounts: u64,
    /// Accounts in an explicit state rather than an instance, by reason.
    pub unassigned: BTreeMap<String, u64>,
    /// Assignments rewritten (changed since the last map).
    pub changed: u64,
    pub declarations: usize,
    /// Declarations with at least one verified host.
    pub verified_declarations: usize,
    pub memberships: usize,
    /// Membership records the operator's verified declaration covers.
    pub verified_memberships: usize,
}

fn decode<T: for<'de> Deserialize<'de>>(cf: &'static str, b: &[u8]) -> store::Result<T> {
    store::from_cbor(cf, b)
}

/// What the store knows of one DID: PLC state, last resolution, firehose state.
pub type Known = (Option<PlcRecord>, Option<IdentityRecord>, Option<AccountState>);

/// The three records of one DID (one read of its account view).
pub fn known(store: &Store, did: &str) -> store::Result<Known> {
    let v = store::StoreReader::account_view(store, did)?;
    Ok((v.plc, v.identity, v.firehose))
}

/// An account's stored assignment.
pub fn assignment(store: &Store, did: &str) -> store::Result<Option<Assignment>> {
    store.get_cf(CF_ASSIGN, did.as_bytes())?.map(|b| decode(CF_ASSIGN, &b)).transpose()
}

// ---------------------------------------------------------------- marks

// The marks belong to the store's batch (every writer leaves them with
// `Batch::mark`); the maintainer here takes them.
pub use crate::store::STRUCTURE;

fn read_i64(b: &[u8]) -> i64 {
    b.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

/// Marks waiting, the structure mark included (a full scan; see
/// [`freshness`]).
pub fn pending(store: &Store) -> store::Result<u64> {
    let f = freshness(store)?;
    Ok(f.pending_accounts + u64::from(f.structure_pending))
}

// ---------------------------------------------------------------- accounts

/// Writes the change from `old` to `new` of one account into `wb`; `cbor`
/// is `new` encoded. With `deltas`, the change of the counts too (merge
/// operands); the full recompute rewrites them whole instead.
fn write_change(
    wb: &mut rocksdb::WriteBatch,
    store: &Store,
    did: &str,
    old: Option<&Assignment>,
    new: &Assignment,
    cbor: Vec<u8>,
    deltas: bool,
) {
    let old_moves = old.map(|o| Contributions::move_keys(did, o)).unwrap_or_default();
    for k in &old_moves {
        wb.delete_cf(store.cf(CF_MOVES), k);
    }
    if deltas {
        let mut c = Contributions::default();
        if let Some(o) = old {
            c.add(did, o, -1);
        }
        c.add(did, new, 1);
        let counts = store.cf(CF_MAP_COUNTS);
        for (k, v) in &c.counts {
            if *v != 0 {
                wb.merge_cf(counts, k, v.to_le_bytes());
            }
        }
    }
    let moves = Contributions::moves_of(did, new);
    for (k, row) in &moves {
        wb.put_cf(store.cf(CF_MOVES), k, store::to_cbor(row));
    }
    // the indexes
    if let Some(o) = old {
        if let Some(k) = o.host_key(did) {
            wb.delete_cf(store.cf(CF_HOST_ACCOUNTS), k);
        }
        if let Some(k) = o.handle_key(did) {
            wb.delete_cf(store.cf(CF_HANDLES), k);
        }
    }
    if let Some(k) = new.host_key(did) {
        wb.put_cf(store.cf(CF_HOST_ACCOUNTS), k, b"");
    }
    if let Some(k) = new.handle_key(did) {
        wb.put_cf(store.cf(CF_HANDLES), k, [u8::from(new.handle_verified)]);
    }
    let (new_moves, old_moves) = (moves.len() as u64, old_moves.len() as u64);
    if new_moves > old_moves {
        crate::metrics::MAP_MOVES.with_label_values(&["migration"]).inc_by(new_moves - old_moves);
    }
    wb.put_cf(store.cf(CF_ASSIGN), did.as_bytes(), cbor);
}

/// The incremental maintainer: the single writer of the map's families.
pub struct Maintainer {
    store: Store,
    overrides: super::overrides::Overrides,
    /// Hosts with a `host_instance` entry (new hosts need the structure).
    clustered: Option<BTreeSet<String>>,
    /// The structure is refreshed at most this often (host crawls mark it
    /// on every crawl); zero in tests.
    pub structure_every: std::time::Duration,
    last_structure: Option<std::time::Instant>,
    /// Set to stop a recompute the maintainer runs (shutdown).
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What one [`Maintainer::step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// Marks taken.
    pub accounts: usize,
    /// Assignments that changed.
    pub changed: usize,
    /// Whether the structure was refreshed.
    pub structure: bool,
}

impl Maintainer {
    pub fn new(store: Store, overrides: super::overrides::Overrides) -> Maintainer {
        Maintainer {
            store,
            overrides,
            clustered: None,
            structure_every: std::time::Duration::ZERO,
            last_structure: None,
            stop: None,
        }
    }

    fn clustered(&mut self) -> store::Result<&mut BTreeSet<String>> {
        if self.clustered.is_none() {
            let mut set = BTreeSet::new();
            for item in self.store.iter_cf(CF_HOST_INSTANCE) {
                let (k, _) = item?;
                set.insert(String::from_utf8_lossy(&k).into_owned());
            }
            self.clustered = Some(set);
        }
        Ok(self.clustered.as_mut().expect("filled above"))
    }

    /// Takes up to `limit` account marks (and the structure mark, if set or
    /// needed) and applies them.
    pub fn step(&mut self, limit: usize) -> store::Result<Step> {
        let store = self.store.clone();
        if let Some(at) = recompute_interrupted(&store)? {
            // the counts disagree with the assignments: no delta may be
            // applied to them before a full recompute
            tracing::warn!(started_ms = at, "a recompute did not finish; recomputing the map before anything else");
            let opts = RecomputeOptions { clear_marks: false, stop: self.stop.as_deref(), progress: None };
            return match recompute_with(&store, &self.overrides, &opts) {
                Ok(s) => {
                    self.clustered = None;
                    self.last_structure = Some(std::time::Instant::now());
                    Ok(Step { accounts: s.accounts as usize, changed: s.changed as usize, structure: true })
                }
                Err(RecomputeError::Store(e)) => Err(e),
                Err(RecomputeError::Stopped { .. }) => Ok(Step::default()),
            };
        }
        let (marks, structure) = store::StoreReader::marks(&store, limit)?;
        let structure = (structure != 0).then_some(structure);
        let mut step = Step { accounts: marks.len(), ..Step::default() };
        let mut need_structure = structure.is_some();
        let mut wb = rocksdb::WriteBatch::default();
        let mut left: BTreeSet<String> = BTreeSet::new();
        for (did, n) in &marks {
            // everything about the DID in one read
            let view = store::StoreReader::account_view(&store, did)?;
            let new = assign::desired(view.plc.as_ref(), view.identity.as_ref(), view.firehose.as_ref());
            let old = view.assignment;
            let did = did.as_str();
            if old.as_ref() != Some(&new) {
                step.changed += 1;
                if let Some(h) = &new.host {
                    if !self.clustered()?.contains(h) {
                        need_structure = true;
                    }
                }
                // a member's host and handle count for its membership, an
                // operator's handle for its declaration's claims
                let moved = old.as_ref().is_none_or(|o| {
                    (&o.host, &o.handle, o.handle_verified) != (&new.host, &new.handle, new.handle_verified)
                });
                if moved {
                    let member = store.record(super::declaration::MEMBERSHIP, did, "self")?.is_some();
                    let operator = store.record(super::declaration::DECLARATION, did, "self")?.is_some();
                    need_structure |= member || operator;
                }
                if let Some(h) = old.as_ref().and_then(|o| o.host.as_ref()).filter(|h| new.host.as_ref() != Some(*h)) {
                    left.insert(h.clone());
                }
                write_change(&mut wb, &store, did, old.as_ref(), &new, store::to_cbor(&new), true);
            }
            wb.merge_cf(store.cf(CF_MAP_DIRTY), did.as_bytes(), (-n).to_le_bytes());
        }
        store.write(wb)?;
        // a host known only through its accounts leaves the map with the last
        for h in &left {
            let members = store.get_cf(CF_MAP_COUNTS, &key::host(h, assign::bucket::REGISTERED))?;
            if members.is_none_or(|v| read_i64(&v) == 0) && store.get_cf(CF_HOSTS, h.as_bytes())?.is_none() {
                need_structure = true;
            }
        }
        crate::metrics::MAP_UPDATES.with_label_values(&["account"]).inc_by(step.changed as u64);
        let due = self.last_structure.is_none_or(|t| t.elapsed() >= self.structure_every);
        if need_structure && due {
            self.last_structure = Some(std::time::Instant::now());
            refresh_structure(&store, &self.overrides)?;
            self.clustered = None;
            if let Some(n) = structure {
                let mut wb = rocksdb::WriteBatch::default();
                wb.merge_cf(store.cf(CF_MAP_DIRTY), STRUCTURE, (-n).to_le_bytes());
                store.write(wb)?;
            }
            step.structure = true;
        }
        Ok(step)
    }

    /// Steps until no mark is left.
    pub fn run_until_idle(&mut self) -> store::Result<Step> {
        let mut total = Step::default();
        loop {
            let s = self.step(10_000)?;
            total.accounts += s.accounts;
            total.changed += s.changed;
            total.structure |= s.structure;
            if s.accounts == 0 && !s.structure {
                return Ok(total);
            }
        }
    }
}

/// A one-shot command rebuilds the map in full rather than taking each mark
/// when more than this many accounts are marked and they are more than a
/// quarter of all accounts: the maintainer costs about four times as much
/// per mark (a multi-get and a write per account) as the recompute per
/// account (streaming the families in key order). A bulk PLC load marks
/// every DID it touches.
pub const BULK_MARKS: u64 = 10_000;

/// How [`bring_current`] brought the map up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Nothing was pending.
    Current,
    /// The marks were taken one by one.
    Incremental(Step),
    /// A full recompute (many marks, or an unfinished recompute).
    Recomputed(Summary),
}

/// Leaves the map current, for a command that wrote and is about to exit
/// (so `instances` and the API never answer from a map that has not taken
/// in what the database holds). The caller holds the only handle.
pub fn bring_current(
    store: &Store,
    overrides: &super::overrides::Overrides,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Update, RecomputeError> {
    let f = freshness(store)?;
    let (interrupted, marks) =
        (f.recompute_interrupted_ms.is_some(), f.pending_accounts + u64::from(f.structure_pending));
    if interrupted || (marks > BULK_MARKS && marks.saturating_mul(4) > store.estimate_accounts()) {
        let opts = RecomputeOptions { clear_marks: true, stop, progress: None };
        return Ok(Update::Recomputed(recompute_with(store, overrides, &opts)?));
    }
    if marks == 0 {
        return Ok(Update::Current);
    }
    Ok(Update::Incremental(Maintainer::new(store.clone(), overrides.clone()).run_until_idle()?))
}

/// What the map has yet to take in, for readers to say so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// Accounts marked and not yet taken in.
    pub pending_accounts: u64,
    /// Hosts, declarations or memberships changed since the last structure
    /// refresh.
    pub structure_pending: bool,
    /// A recompute started (at this time, ms) and did not finish: the
    /// counts are not to be trusted until the next one.
    pub recompute_interrupted_ms: Option<i64>,
}

impl Freshness {
    pub fn is_current(&self) -> bool {
        self.pending_accounts == 0 && !self.structure_pending && self.recompute_interrupted_ms.is_none()
    }

    /// One line for people; `None` when current.
    pub fn note(&self) -> Option<String> {
        if let Some(at) = self.recompute_interrupted_ms {
            return Some(format!(
                "the map is being rebuilt: a recompute started at {} did not finish; counts are not to be trusted until \
                 `recluster` (or `run`) completes one",
                crate::clock::rfc3339_ms(at).unwrap_or_default()
            ));
        }
        if self.is_current() {
            return None;
        }
        Some(format!(
            "the map has pending work: {} account(s){} not yet taken in (`run` takes them continuously; \
             or run `recluster`)",
            self.pending_accounts,
            if self.structure_pending { " and a host or declaration change" } else { "" }
        ))
    }
}

/// The map's freshness (a scan of the marks).
pub fn freshness(store: &Store) -> store::Result<Freshness> {
    let mut f = Freshness { recompute_interrupted_ms: recompute_interrupted(store)?, ..Default::default() };
    for item in store.iter_cf(CF_MAP_DIRTY) {
        let (k, v) = item?;
        if read_i64(&v) == 0 {
            continue;
        }
        if &*k == STRUCTURE {
            f.structure_pending = true;
        } else {
            f.pending_accounts += 1;
        }
    }
    Ok(f)
}

/// Calls `f` once per DID known to any of the account families (PLC state,
/// resolution, firehose, stored assignment), in DID order, streaming them
/// side by side (a merge join on the key): memory stays constant however
/// many accounts there are. The stored assignment is passed encoded.
fn for_each_account<E: From<store::StoreError>>(
    store: &Store,
    mut f: impl FnMut(&[u8], Known, Option<Box<[u8]>>) -> Result<(), E>,
) -> Result<(), E> {
    type It<'a> = std::iter::Peekable<Box<dyn Iterator<Item = store::Result<store::KeyValue>> + 'a>>;
    let mut its: [It<'_>; 4] =
        [CF_PLC, CF_IDENTITY, CF_ACCOUNTS, CF_ASSIGN].map(|cf| store.iter_from(cf, &[]).peekable());
    loop {
        for it in its.iter_mut() {
            if let Some(Err(_)) = it.peek() {
                return Err(it.next().expect("peeked").expect_err("peeked an error").into());
            }
        }
        let Some(min) = its.iter_mut().filter_map(|it| it.peek().and_then(|r| r.as_ref().ok())).map(|(k, _)| k).min()
        else {
            return Ok(());
        };
        let min = min.clone();
        let mut take = |i: usize| -> store::Result<Option<Box<[u8]>>> {
            match its[i].peek() {
                Some(Ok((k, _))) if *k == min => Ok(Some(its[i].next().expect("peeked")?.1)),
                _ => Ok(None),
            }
        };
        let p = take(0)?.map(|v| decode(CF_PLC, &v)).transpose()?;
        let i = take(1)?.map(|v| decode(CF_IDENTITY, &v)).transpose()?;
        let a = take(2)?.map(|v| decode(CF_ACCOUNTS, &v)).transpose()?;
        let s = take(3)?;
        f(&min, (p, i, a), s)?;
    }
}

/// Write batches of a recompute are committed every this many accounts read.
const RECOMPUTE_BATCH: usize = 20_000;

/// The `meta` key present while a recompute is under way (value: when it
/// started, i64 ms big-endian). A recompute rewrites assignments in
/// batches but the counts only at its end, so a recompute that did not
/// finish (killed, or stopped by a signal) leaves assignments and counts
/// that disagree: while the key is there, the counts are not to be trusted
/// or changed by deltas, and the next writer of the map (`recluster`, or
/// `run`'s maintainer before anything else) recomputes in full.
pub const RECOMPUTE_MARKER: store::MetaKey = store::MetaKey::RecomputeStarted;

/// How a recompute runs.
#[derive(Default)]
pub struct RecomputeOptions<'a> {
    /// Clear every mark at the end (one range deletion). Only when the
    /// caller holds the only handle: with writers running (`run`), marks
    /// left while the recompute read the accounts must survive it, and the
    /// maintainer takes them after (re-deriving an account the recompute
    /// already took changes nothing).
    pub clear_marks: bool,
    /// Stop between write batches when set (SIGINT/SIGTERM); the marker
    /// stays, so the next writer of the map recomputes.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
    /// Called after each committed batch with the accounts read so far.
    pub progress: Option<&'a dyn Fn(u64)>,
}

/// Why a recompute did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RecomputeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(
        "stopped after {accounts} accounts; the map is marked for a full recompute (the next recluster or run does it)"
    )]
    Stopped { accounts: u64 },
}

/// Whether a recompute was started and did not finish (see
/// [`RECOMPUTE_MARKER`]): when it started, in ms.
pub fn recompute_interrupted(store: &Store) -> store::Result<Option<i64>> {
    Ok(store::StoreReader::meta(store, RECOMPUTE_MARKER)?
        .map(|v| v.as_slice().try_into().map(i64::from_be_bytes).unwrap_or(0)))
}

/// Recomputes the whole map (with the operator's `overrides`) and stores
/// it: every count rebuilt from zero, every assignment that differs
/// rewritten, marks cleared, then the structure. The caller holds the only
/// handle on the store.
pub fn recompute(store: &Store, overrides: &super::overrides::Overrides) -> store::Result<Summary> {
    match recompute_with(store, overrides, &RecomputeOptions { clear_marks: true, ..Default::default() }) {
        Ok(s) => Ok(s),
        Err(RecomputeError::Store(e)) => Err(e),
        Err(RecomputeError::Stopped { .. }) => unreachable!("no stop flag was given"),
    }
}

/// [`recompute`], with its options: crash-safe through
/// [`RECOMPUTE_MARKER`], written before the first assignment changes and
/// removed in the batch that writes the counts.
pub fn recompute_with(
    store: &Store,
    overrides: &super::overrides::Overrides,
    opts: &RecomputeOptions<'_>,
) -> Result<Summary, RecomputeError> {
    let _span = tracing::info_span!("recompute").entered();
    let mut marker = rocksdb::WriteBatch::default();
    marker.put_cf(store.cf(store::CF_META), RECOMPUTE_MARKER.bytes(), crate::clock::now_ms().to_be_bytes());
    store.write(marker)?;
    let stopped = || opts.stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
    let mut summary = Summary::default();
    let mut totals = Totals::default();
    let mut wb = rocksdb::WriteBatch::default();
    let mut in_batch = 0usize;
    let mut read = 0u64;
    let walked = for_each_account(store, |k, (plc, res, acct), old| {
        // every RECOMPUTE_BATCH accounts read: what changed so far is
        // committed, then progress is reported and a stop honoured
        if read > 0 && read % RECOMPUTE_BATCH as u64 == 0 {
            if in_batch > 0 {
                store.write(std::mem::take(&mut wb))?;
                in_batch = 0;
            }
            if let Some(p) = opts.progress {
                p(read);
            }
            if stopped() {
                return Err(RecomputeError::Stopped { accounts: read });
            }
        }
        read += 1;
        let did = std::str::from_utf8(k).unwrap_or_default();
        if plc.is_none() && res.is_none() && acct.is_none() {
            // an assignment whose records are gone
            if let Some(b) = &old {
                let o: Assignment = decode(CF_ASSIGN, b)?;
                for mk in Contributions::move_keys(did, &o) {
                    wb.delete_cf(store.cf(CF_MOVES), mk);
                }
                if let Some(hk) = o.host_key(did) {
                    wb.delete_cf(store.cf(CF_HOST_ACCOUNTS), hk);
                }
                if let Some(hk) = o.handle_key(did) {
                    wb.delete_cf(store.cf(CF_HANDLES), hk);
                }
            }
            wb.delete_cf(store.cf(CF_ASSIGN), k);
            return Ok(());
        }
        summary.accounts += 1;
        let new = assign::desired(plc.as_ref(), res.as_ref(), acct.as_ref());
        if let Some(r) = &new.reason {
            *summary.unassigned.entry(r.clone()).or_default() += 1;
        }
        Contributions::for_each_count(&new, |k, n| totals.add(k, n));
        // stored bytes equal to the new assignment's encoding: unchanged,
        // without decoding them; otherwise compared decoded
        let cbor = store::to_cbor(&new);
        if old.as_deref() == Some(&cbor[..]) {
            return Ok(());
        }
        let old: Option<Assignment> = old.map(|b| decode(CF_ASSIGN, &b)).transpose()?;
        if old.as_ref() != Some(&new) {
            summary.changed += 1;
            write_change(&mut wb, store, did, old.as_ref(), &new, cbor, false);
            in_batch += 1;
        }
        Ok(())
    });
    if let Err(e) = walked {
        if let RecomputeError::Stopped { accounts } = e {
            store.write(wb)?;
            tracing::warn!(accounts, "recompute stopped; the map stays marked for a full recompute");
        }
        return Err(e);
    }
    // counts: replace whole
    let totals = totals.into_keys();
    let counts = store.cf(CF_MAP_COUNTS);
    for item in store.iter_cf(CF_MAP_COUNTS) {
        let (k, _) = item?;
        if totals.binary_search_by(|(t, _)| t.as_slice().cmp(&k)).is_err() {
            wb.delete_cf(counts, k);
        }
    }
    for (k, v) in &totals {
        if *v != 0 {
            wb.put_cf(counts, k, v.to_le_bytes());
        } else {
            wb.delete_cf(counts, k);
        }
    }
    // every mark is taken by now (the caller holds the only handle): one
    // range deletion up to the last mark (DIDs are ASCII, so below 0xff)
    // rather than a tombstone per mark, which every later scan of the
    // family (each maintainer step) would step over until compaction, and
    // which made the last batch as large as the number of accounts
    if opts.clear_marks {
        let dirty = store.cf(CF_MAP_DIRTY);
        let cut: &[u8] = &[0xff];
        if let Some((last, _)) = store.at_or_before(CF_MAP_DIRTY, cut)? {
            wb.delete_range_cf(dirty, &[][..], &*last);
            wb.delete_cf(dirty, &*last);
        }
        for item in store.iter_from(CF_MAP_DIRTY, cut) {
            let (k, _) = item?;
            wb.delete_cf(dirty, k);
        }
    }
    // the counts agree with the assignments again
    wb.delete_cf(store.cf(store::CF_META), RECOMPUTE_MARKER.bytes());
    store.write(wb)?;
    crate::metrics::MAP_UPDATES.with_label_values(&["recompute"]).inc();
    let st = refresh_structure(store, overrides)?;
    summary.hosts = st.hosts;
    summary.instances = st.instances;
    summary.declarations = st.declarations;
    summary.verified_declarations = st.verified_declarations;
    summary.memberships = st.memberships;
    summary.verified_memberships = st.verified_memberships;
    Ok(summary)
}

/// The recompute's counts, summed under compact keys (no allocation per
/// contribution, one hash probe): names (hosts, buckets, reasons) interned,
/// days as Julian day numbers.
#[derive(Default)]
struct Totals {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    counts: HashMap<(u8, i32, u32, u32), i64>,
}

impl Totals {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(i) = self.ids.get(name) {
            return *i;
        }
        let i = u32::try_from(self.names.len()).expect("fewer than 2^32 names");
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), i);
        i
    }

    fn add(&mut self, k: CountKey<'_>, n: i64) {
        let k = match k {
            CountKey::Host { host, bucket } => (key::HOST, 0, self.id(host), self.id(bucket)),
            CountKey::State(reason) => (key::STATE, 0, self.id(reason), 0),
            CountKey::Day { day, host } => (key::DAY, day.to_julian_day(), self.id(host), 0),
            CountKey::Flow { day, from, to } => (key::FLOW, day.to_julian_day(), self.id(from), self.id(to)),
        };
        *self.counts.entry(k).or_default() += n;
    }

    /// The counts under their stored keys, in key order (amounts of equal
    /// keys summed).
    fn into_keys(self) -> Vec<(Vec<u8>, i64)> {
        let name = |i: u32| self.names[i as usize].as_str();
        let date = |jd: i32| time::Date::from_julian_day(jd).expect("the Julian day of a date");
        let mut out: Vec<(Vec<u8>, i64)> = self
            .counts
            .iter()
            .map(|(&(kind, jd, a, b), &n)| {
                let k = match kind {
                    key::HOST => CountKey::Host { host: name(a), bucket: name(b) },
                    key::STATE => CountKey::State(name(a)),
                    key::DAY => CountKey::Day { day: date(jd), host: name(a) },
                    _ => CountKey::Flow { day: date(jd), from: name(a), to: name(b) },
                };
                let mut buf = Vec::new();
                k.write(&mut buf);
                (buf, n)
            })
            .collect();
        out.sort_unstable();
        out.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 += later.1;
            }
            same
        });
        out
    }
}

// ---------------------------------------------------------------- structure

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

/// Per host: members by bucket, from the `h` counts.
pub fn host_members(store: &Store) -> store::Result<BTreeMap<String, BTreeMap<String, i64>>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let prefix = key::prefix(key::HOST);
    for item in store.iter_prefix(CF_MAP_COUNTS, &prefix) {
        let (k, v) = item?;
        let n = read_i64(&v);
        if n == 0 {
            continue;
        }
        if let [host, bucket] = key::parts(&k)[..] {
            out.entry(host.to_owned()).or_default().insert(bucket.to_owned(), n);
        }
    }
    Ok(out)
}

/// Accounts in an explicit state, by reason.
pub fn unassigned(store: &Store) -> store::Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for item in store.iter_prefix(CF_MAP_COUNTS, &key::prefix(key::STATE)) {
        let (k, v) = item?;
        if let [reason] = key::parts(&k)[..] {
            let n = read_i64(&v);
            if n != 0 {
                out.insert(reason.to_owned(), n);
            }
        }
    }
    Ok(out)
}

/// What a structure refresh did.
#[derive(Debug, Clone, Default)]
struct StructureSummary {
    hosts: usize,
    instances: usize,
    declarations: usize,
    verified_declarations: usize,
    memberships: usize,
    verified_memberships: usize,
}

/// What a host shows that can prove who runs it.
#[derive(Debug, Clone, Default)]
pub struct HostProof {
    /// `describeServer`'s `did`.
    pub did: Option<String>,
    /// `describeServer`'s contact email.
    pub contact_email: Option<String>,
    /// `availableUserDomains`, as keys.
    pub user_domains: Vec<String>,
}

/// Re-clusters the hosts and rewrites `instances`, `host_instance` and
/// `declarations`; a host whose instance changed is a dated `host_moves` row.
fn refresh_structure(store: &Store, overrides: &super::overrides::Overrides) -> store::Result<StructureSummary> {
    let now = crate::clock::now_ms();
    let members = host_members(store)?;
    let mut facts: BTreeMap<String, HostFacts> = BTreeMap::new();
    let mut proofs: HashMap<String, HostProof> = HashMap::new();
    let mut relay_reported: HashMap<String, i64> = HashMap::new();
    let mut host_states: BTreeMap<String, i64> = BTreeMap::new();
    for item in store.iter_cf(CF_HOSTS) {
        let (k, v) = item?;
        let h: HostRecord = decode(CF_HOSTS, &v)?;
        let endpoint = String::from_utf8_lossy(&k).into_owned();
        *host_states.entry(h.state.clone()).or_default() += 1;
        if let Some(n) = h.relay.as_ref().and_then(|r| r.account_count) {
            relay_reported.insert(endpoint.clone(), n);
        }
        let user_domains = h.describe.as_ref().map(|d| d.available_user_domains.clone()).unwrap_or_default();
        proofs.insert(
            endpoint.clone(),
            HostProof {
                did: h.describe.as_ref().and_then(|d| d.did.clone()),
                contact_email: h.describe.as_ref().and_then(|d| d.contact_email.clone()),
                user_domains: user_domains.iter().filter_map(|d| super::user_domain_key(d)).collect(),
            },
        );
        facts.insert(
            endpoint.clone(),
            HostFacts {
                endpoint,
                user_domains,
                observed_at_ms: h.last_ok_ms.unwrap_or(h.first_seen_ms),
                declared_by: None,
            },
        );
    }
    for st in ["pending", "online", "offline"] {
        crate::metrics::HOSTS_BY_STATE.with_label_values(&[st]).set(host_states.get(st).copied().unwrap_or(0));
    }
    // every host with members is a host of the map
    for h in members.keys() {
        facts.entry(h.clone()).or_insert_with(|| HostFacts { endpoint: h.clone(), ..HostFacts::default() });
    }
    let provider_domains: BTreeSet<String> = proofs.values().flat_map(|p| p.user_domains.iter().cloned()).collect();
    // declarations: verify each claim, mark the hosts of verified ones
    let mut statuses = Vec::new();
    let mut governance: BTreeMap<String, super::declaration::Declaration> = BTreeMap::new();
    let mut claims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (operator, _rkey, rec) in store.records(super::declaration::DECLARATION)? {
        let Ok(json) = crate::repo::cbor::to_json(&rec.record) else { continue };
        let Ok(decl) = serde_json::from_value::<super::declaration::Declaration>(json) else { continue };
        let handle =
            known(store, &operator)?.1.and_then(|r| r.handle_check).filter(|c| c.verified).map(|c| c.handle.clone());
        let status = verify_declaration(&operator, &decl, handle.as_deref(), &proofs, &provider_domains);
        if !status.verified_hosts.is_empty() {
            governance.insert(operator.clone(), decl.clone());
        }
        for claim in status.verified_hosts.iter().chain(status.unverified.iter().map(|(c, _)| c)) {
            claims.entry(claim.clone()).or_default().insert(operator.clone());
        }
        for h in &status.verified_hosts {
            let f = facts.entry(h.clone()).or_insert_with(|| HostFacts { endpoint: h.clone(), ..HostFacts::default() });
            if f.declared_by.as_ref().is_none_or(|(op, _)| operator < *op) {
                f.declared_by = Some((operator.clone(), decl.name.clone()));
            }
        }
        statuses.push(status);
    }
    let facts: Vec<HostFacts> = facts.into_values().collect();
    let instances = super::cluster_with(&facts, overrides);
    let mut host_index: HashMap<&str, usize> = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        for h in &inst.hosts {
            host_index.insert(h.as_str(), i);
        }
    }
    let mut summary = StructureSummary { hosts: facts.len(), instances: instances.len(), ..Default::default() };
    // memberships count two-sided: the operator's declaration must have
    // verified and cover the member's current host or its verified handle;
    // counted in the instance of the operator's verified hosts
    let mut declared: Vec<u64> = vec![0; instances.len()];
    let verified: HashMap<&str, &DeclarationStatus> =
        statuses.iter().filter(|s| !s.verified_hosts.is_empty()).map(|s| (s.operator.as_str(), s)).collect();
    for (member, _rkey, rec) in store.records(super::declaration::MEMBERSHIP)? {
        let Ok(json) = crate::repo::cbor::to_json(&rec.record) else { continue };
        let Ok(m) = serde_json::from_value::<super::declaration::Membership>(json) else { continue };
        summary.memberships += 1;
        let Some(st) = verified.get(m.operator.as_str()) else { continue };
        let (plc, res, _) = known(store, &member)?;
        let pds = current_pds(plc.as_ref(), res.as_ref()).ok();
        let handle = res.and_then(|r| r.handle_check).filter(|c| c.verified).map(|c| c.handle);
        let by_host = pds.as_ref().is_some_and(|p| st.verified_hosts.contains(p));
        let by_handle = handle
            .as_deref()
            .is_some_and(|h| st.verified_domains.iter().any(|d| h == d || h.ends_with(&format!(".{d}"))));
        if by_host || by_handle {
            summary.verified_memberships += 1;
            if let Some(&i) = st.verified_hosts.first().and_then(|h| host_index.get(h.as_str())) {
                declared[i] += 1;
            }
        }
    }
    // the previous host → instance, for host moves
    let mut previous: HashMap<String, String> = HashMap::new();
    for item in store.iter_cf(CF_HOST_INSTANCE) {
        let (k, v) = item?;
        previous.insert(String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned());
    }
    let mut wb = rocksdb::WriteBatch::default();
    for cf in [CF_INSTANCES, CF_HOST_INSTANCE, CF_DECLARATIONS] {
        for item in store.iter_cf(cf) {
            let (k, _) = item?;
            wb.delete_cf(store.cf(cf), k);
        }
    }
    let registered = |h: &str| members.get(h).and_then(|m| m.get(assign::bucket::REGISTERED)).copied().unwrap_or(0);
    for (i, inst) in instances.iter().enumerate() {
        let operator = inst
            .evidence
            .iter()
            .filter_map(|e| match &e.kind {
                EvidenceKind::Declaration(op) => Some(op.clone()),
                _ => None,
            })
            .min();
        let mut stored_members = BTreeMap::new();
        if declared[i] > 0 {
            stored_members.insert("declared_members".to_owned(), declared[i]);
        }
        let relay: i64 = inst.hosts.iter().filter_map(|h| relay_reported.get(h)).sum();
        if relay > 0 {
            stored_members.insert("relay_reported".to_owned(), relay as u64);
        }
        let claimed_by: BTreeSet<String> = inst.hosts.iter().filter_map(|h| claims.get(h)).flatten().cloned().collect();
        let rec = InstanceRecord {
            governance: operator.as_ref().and_then(|op| governance.get(op).cloned()),
            operator,
            claimed_by: claimed_by.into_iter().collect(),
            id: inst.id.clone(),
            anchor: inst.anchor.clone(),
            name: inst.name.clone(),
            hosts: inst.hosts.clone(),
            user_domains: inst.user_domains.clone(),
            registrable_domains: inst.registrable_domains.clone(),
            evidence: inst.evidence.iter().map(evidence_row).collect(),
            members: stored_members,
            computed_at_ms: now,
        };
        wb.put_cf(store.cf(CF_INSTANCES), inst.id.as_bytes(), store::to_cbor(&rec));
        for h in &inst.hosts {
            wb.put_cf(store.cf(CF_HOST_INSTANCE), h.as_bytes(), inst.id.as_bytes());
            let from = previous.remove(h).unwrap_or_default();
            if from != inst.id {
                let mv = HostMove { host: h.clone(), from, to: inst.id.clone(), accounts: registered(h) };
                if !mv.from.is_empty() {
                    crate::metrics::MAP_MOVES.with_label_values(&["recluster"]).inc_by(mv.accounts.max(0) as u64);
                }
                wb.put_cf(store.cf(CF_HOST_MOVES), host_move_key(now, h), store::to_cbor(&mv));
            }
        }
    }
    // hosts that left the map
    for (h, from) in previous {
        let mv = HostMove { host: h.clone(), from, to: String::new(), accounts: registered(&h) };
        wb.put_cf(store.cf(CF_HOST_MOVES), host_move_key(now, &h), store::to_cbor(&mv));
    }
    for st in &statuses {
        wb.put_cf(store.cf(CF_DECLARATIONS), st.operator.as_bytes(), store::to_cbor(st));
    }
    summary.declarations = statuses.len();
    summary.verified_declarations = statuses.iter().filter(|s| !s.verified_hosts.is_empty()).count();
    store.write(wb)?;
    crate::metrics::MAP_UPDATES.with_label_values(&["structure"]).inc();
    crate::metrics::DECLARATIONS.with_label_values(&["verified"]).set(summary.verified_declarations as i64);
    crate::metrics::DECLARATIONS
        .with_label_values(&["unverified"])
        .set((summary.declarations - summary.verified_declarations) as i64);
    publish_gauges(store)?;
    Ok(summary)
}

fn evidence_row(e: &super::Evidence) -> (String, String, String, i64) {
    let (kind, value) = match &e.kind {
        EvidenceKind::UserDomain(d) => ("user_domain", d.clone()),
        EvidenceKind::RegistrableDomain(d) => ("registrable_domain", d.clone()),
        EvidenceKind::HostAlone => ("host_alone", String::new()),
        EvidenceKind::Declaration(op) => ("declaration", op.clone()),
        EvidenceKind::Override(what) => ("override", what.clone()),
    };
    (e.host.clone(), kind.to_owned(), value, e.observed_at_ms)
}

/// Key of a `host_moves` row: time, then host.
pub fn host_move_key(at_ms: i64, host: &str) -> Vec<u8> {
    let mut k = ((at_ms as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    k.extend_from_slice(host.as_bytes());
    k
}

// ---------------------------------------------------------------- concentration

/// How concentrated accounts are over a set of groups.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Concentration {
    pub groups: usize,
    pub accounts: i64,
    /// Herfindahl–Hirschman index, 0..1 (×10,000 for the antitrust scale).
    pub hhi: f64,
    /// Share of accounts in the largest 1, 5 and 10 groups.
    pub top1_share: f64,
    pub top5_share: f64,
    pub top10_share: f64,
    /// Accounts of the 10 largest groups, largest first.
    pub top: Vec<i64>,
}

/// The concentration of `sizes`.
pub fn concentration(mut sizes: Vec<i64>) -> Concentration {
    sizes.retain(|n| *n > 0);
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let total: i64 = sizes.iter().sum();
    let share = |n: usize| if total == 0 { 0.0 } else { sizes.iter().take(n).sum::<i64>() as f64 / total as f64 };
    let hhi = if total == 0 { 0.0 } else { sizes.iter().map(|n| (*n as f64 / total as f64).powi(2)).sum() };
    Concentration {
        groups: sizes.len(),
        accounts: total,
        hhi,
        top1_share: share(1),
        top5_share: share(5),
        top10_share: share(10),
        top: sizes.iter().take(10).copied().collect(),
    }
}

/// Concentration over instances and over hosts (registered members).
pub fn concentrations(store: &Store) -> store::Result<(Concentration, Concentration)> {
    let members = host_members(store)?;
    let mut host_instance: HashMap<String, String> = HashMap::new();
    for item in store.iter_cf(CF_HOST_INSTANCE) {
        let (k, v) = item?;
        host_instance.insert(String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned());
    }
    let mut by_instance: HashMap<&str, i64> = HashMap::new();
    let mut by_host = Vec::new();
    for (h, m) in &members {
        let n = m.get(assign::bucket::REGISTERED).copied().unwrap_or(0);
        by_host.push(n);
        let inst = host_instance.get(h).map_or("", String::as_str);
        *by_instance.entry(inst).or_default() += n;
    }
    Ok((concentration(by_instance.into_values().collect()), concentration(by_host)))
}

/// Sets the map's gauges from the store.
pub fn publish_gauges(store: &Store) -> store::Result<()> {
    use crate::metrics as m;
    let (inst, host) = concentrations(store)?;
    m::MAP_INSTANCES.set(store.iter_cf(CF_INSTANCES).count() as i64);
    m::MAP_ACCOUNTS.with_label_values(&["assigned"]).set(inst.accounts);
    let states = unassigned(store)?;
    for st in ["deleted", "no_pds", "unresolved"] {
        m::MAP_ACCOUNTS.with_label_values(&[st]).set(states.get(st).copied().unwrap_or(0));
    }
    let unclustered = {
        let members = host_members(store)?;
        let mut n = 0;
        for (h, b) in members {
            if store.get_cf(CF_HOST_INSTANCE, h.as_bytes())?.is_none() {
                n += b.get(assign::bucket::REGISTERED).copied().unwrap_or(0);
            }
        }
        n
    };
    m::MAP_ACCOUNTS.with_label_values(&["unclustered"]).set(unclustered);
    for r in 1..=10usize {
        m::MAP_TOP_ACCOUNTS.with_label_values(&[&r.to_string()]).set(inst.top.get(r - 1).copied().unwrap_or(0));
    }
    for (over, c) in [("instances", &inst), ("hosts", &host)] {
        m::MAP_HHI.with_label_values(&[over]).set(c.hhi);
        for (n, v) in [("1", c.top1_share), ("5", c.top5_share), ("10", c.top10_share)] {
            m::MAP_TOP_SHARE.with_label_values(&[over, n]).set(v);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- readers

fn with_members(mut rec: InstanceRecord, members: &BTreeMap<String, BTreeMap<String, i64>>) -> InstanceRecord {
    for h in &rec.hosts {
        if let Some(m) = members.get(h) {
            for (b, n) in m {
                *rec.members.entry(b.clone()).or_default() += (*n).max(0) as u64;
            }
        }
    }
    rec
}

/// Every stored instance with its members, largest (registered) first.
pub fn instances(store: &Store) -> store::Result<Vec<InstanceRecord>> {
    let members = host_members(store)?;
    let mut out = Vec::new();
    for item in store.iter_cf(CF_INSTANCES) {
        let (_, v) = item?;
        out.push(with_members(decode::<InstanceRecord>(CF_INSTANCES, &v)?, &members));
    }
    out.sort_by(|a, b| {
        let n = |r: &InstanceRecord| r.members.get("registered").copied().unwrap_or(0);
        n(b).cmp(&n(a)).then(a.id.cmp(&b.id))
    });
    Ok(out)
}

/// One instance by id, with its members.
pub fn instance(store: &Store, id: &str) -> store::Result<Option<InstanceRecord>> {
    let Some(v) = store.get_cf(CF_INSTANCES, id.as_bytes())? else { return Ok(None) };
    let rec: InstanceRecord = decode(CF_INSTANCES, &v)?;
    let mut members = BTreeMap::new();
    for h in &rec.hosts {
        let prefix = [&[key::HOST, 0][..], h.as_bytes(), &[0]].concat();
        for item in store.iter_prefix(CF_MAP_COUNTS, &prefix) {
            let (k, v) = item?;
            if let [_, bucket] = key::parts(&k)[..] {
                members.entry(h.clone()).or_insert_with(BTreeMap::new).insert(bucket.to_owned(), read_i64(&v));
            }
        }
    }
    Ok(Some(with_members(rec, &members)))
}

/// The instance id of a host, if the map has it.
pub fn instance_id_of_host(store: &Store, host: &str) -> store::Result<Option<String>> {
    Ok(store.get_cf(CF_HOST_INSTANCE, host.as_bytes())?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// The instance of a host, if the map has it.
pub fn instance_of_host(store: &Store, host: &str) -> store::Result<Option<InstanceRecord>> {
    match instance_id_of_host(store, host)? {
        Some(id) => instance(store, &id),
        None => Ok(None),
    }
}

/// An account's instance (or its explicit state, with the reason) under
/// the stored map; from its records when the map has not taken it in yet.
pub fn instance_of_account(store: &Store, did: &str) -> store::Result<Result<InstanceRecord, String>> {
    let a = match assignment(store, did)? {
        Some(a) => a,
        None => {
            let (plc, res, acct) = known(store, did)?;
            assign::desired(plc.as_ref(), res.as_ref(), acct.as_ref())
        }
    };
    match (&a.host, &a.reason) {
        (Some(p), _) => {
            Ok(instance_of_host(store, p)?.ok_or_else(|| format!("host {p} not in the map yet (run recluster)")))
        }
        (None, r) => Ok(Err(r.clone().unwrap_or_else(|| "unresolved".into()))),
    }
}

/// The stored status of an operator's declaration.
pub fn declaration_status(store: &Store, operator: &str) -> store::Result<Option<DeclarationStatus>> {
    match store.get_cf(CF_DECLARATIONS, operator.as_bytes())? {
        Some(b) => Ok(Some(decode(CF_DECLARATIONS, &b)?)),
        None => Ok(None),
    }
}

/// An account's migrations, oldest first: `(at_ms, row)`.
pub fn moves_of(store: &Store, did: &str) -> store::Result<Vec<(i64, MoveRow)>> {
    let prefix = [did.as_bytes(), &[0]].concat();
    let mut out = Vec::new();
    for item in store.iter_prefix(CF_MOVES, &prefix) {
        let (k, v) = item?;
        if k.len() != prefix.len() + 8 {
            continue;
        }
        out.push((assign::move_key_time(&k).unwrap_or(0), decode(CF_MOVES, &v)?));
    }
    Ok(out)
}

// ---------------------------------------------------------------- declarations

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
}

/// Whether `name` is `domain` or under it.
fn under(name: &str, domain: &str) -> bool {
    name == domain || name.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// Checks a declaration's claims against what the operator demonstrably
/// controls.
///
/// A claimed **host** counts when
/// 1. its `describeServer` `did` is the operator's DID, or
/// 2. the operator's verified handle is a *custom-domain* handle (not under
///    any user domain a host advertises, so it proves control of that name
///    rather than an account on someone's PDS) and shares the host's
///    registrable domain, or
/// 3. its `describeServer` contact email is at the operator's custom-domain
///    handle's domain (or under it, or its registrable domain).
///
/// A claimed **account domain** counts when a verified host of the same
/// declaration advertises it, or the operator's custom-domain handle is
/// the domain or under it.
pub fn verify_declaration(
    operator: &str,
    decl: &super::declaration::Declaration,
    verified_handle: Option<&str>,
    hosts: &HashMap<String, HostProof>,
    provider_domains: &BTreeSet<String>,
) -> DeclarationStatus {
    let mut st = DeclarationStatus { operator: operator.to_owned(), name: decl.name.clone(), ..Default::default() };
    let custom = verified_handle.filter(|h| !provider_domains.iter().any(|d| under(h, d)));
    let handle_rd = custom.and_then(super::registrable_domain);
    for claim in &decl.pds_hosts {
        let Ok(host) = crate::identity::did::normalize_endpoint(claim) else {
            st.unverified.push((claim.clone(), "not a host URL".into()));
            continue;
        };
        if st.verified_hosts.contains(&host) || st.unverified.iter().any(|(c, _)| *c == host) {
            continue;
        }
        let proof = hosts.get(&host);
        let (name, alone) = super::host_name(&host);
        let email_domain = proof
            .and_then(|p| p.contact_email.as_deref())
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase());
        let how = if proof.and_then(|p| p.did.as_deref()) == Some(operator) {
            Some("the host's describeServer names the operator's DID")
        } else if !alone && handle_rd.is_some() && super::registrable_domain(&name) == handle_rd {
            Some("the operator's verified custom-domain handle shares the host's registrable domain")
        } else if let (Some(h), Some(e)) = (custom, email_domain.as_deref()) {
            let same_rd = handle_rd.is_some() && super::registrable_domain(e) == handle_rd;
            (under(e, h) || same_rd)
                .then_some("the host's describeServer contact is at the operator's verified custom domain")
        } else {
            None
        };
        match how {
            Some(how) => {
                st.verified_hosts.push(host.clone());
                st.proofs.push((host, how.into()));
            }
            None => {
                let why = match (proof, custom) {
                    (None, _) => "host not crawled yet (no describeServer), and the operator has no verified custom-domain handle under its domain",
                    (Some(_), None) => "the host's describeServer does not name the operator, and the operator has no verified custom-domain handle",
                    (Some(_), Some(_)) => "the host's describeServer names neither the operator's DID nor a contact at its domain, and the operator's handle is not under the host's domain",
                };
                st.unverified.push((host, why.into()));
            }
        }
    }
    for claim in &decl.account_domains {
        let Some(d) = super::user_domain_key(claim) else {
            st.unverified.push((claim.clone(), "not a domain".into()));
            continue;
        };
        let advertised = st.verified_hosts.iter().any(|h| hosts.get(h).is_some_and(|p| p.user_domains.contains(&d)));
        let owned = custom.is_some_and(|h| under(h, &d));
        if advertised || owned {
            st.verified_domains.push(d);
        } else {
            st.unverified.push((
                claim.clone(),
                "no verified host of the declaration advertises it, and the operator's verified custom-domain handle is not under it"
                    .into(),
            ));
        }
    }
    st
}

/// The DIDs a handle points at: verified ones first.
pub fn dids_of_handle(store: &Store, handle: &str) -> store::Result<Vec<(String, bool)>> {
    let prefix = [handle.as_bytes(), &[0]].concat();
    let mut out = Vec::new();
    for item in store.iter_prefix(CF_HANDLES, &prefix) {
        let (k, v) = item?;
        out.push((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), v.first() == Some(&1)));
    }
    out.sort_by_key(|(_, verified)| !verified);
    Ok(out)
}

/// Accounts on `host` after `after` (a DID; `None`: from the first), up to `limit`.
pub fn accounts_on_host(store: &Store, host: &str, after: Option<&str>, limit: usize) -> store::Result<Vec<String>> {
    let prefix = [host.as_bytes(), &[0]].concat();
    let start = match after {
        Some(d) => [&prefix[..], d.as_bytes(), &[0]].concat(),
        None => prefix.clone(),
    };
    let mut out = Vec::new();
    for item in store.iter_from(CF_HOST_ACCOUNTS, &start) {
        let (k, _) = item?;
        if !k.starts_with(&prefix) || out.len() >= limit {
            break;
        }
        out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
    }
    Ok(out)
}
