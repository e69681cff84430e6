//! The full recompute (`instancemap recluster`): streams every account,
//! rebuilds every count from zero, rewrites the assignments that differ,
//! then the structure. Crash-safe through [`RECOMPUTE_MARKER`]; stops
//! between batches on SIGINT/SIGTERM.

use std::collections::BTreeMap;

use super::assign;
use super::overrides::Overrides;
use crate::store::map::{CountTotals, Encoded};
use crate::store::{self, Batch, Store, StoreReader, StoreWriter};

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

/// The version of the map's rules: a map computed under older rules (or
/// before versions were kept) is rebuilt in full by the next writer of the
/// map, as after an unfinished recompute. 2: user domains link hosts only
/// with proof (the `v` counts), declarations count only when signed. 3: a
/// declared name that reads as another instance's domain is refused. 4:
/// activity (last active day) and creations per day are counted.
pub const MAP_VERSION: u32 = 4;

/// Whether the stored map was computed under older rules than these (an
/// empty map is not: there is nothing to rebuild).
pub fn map_outdated(store: &(impl StoreReader + crate::store::map::MapReader)) -> store::Result<bool> {
    let version =
        store.meta(store::MetaKey::MapVersion)?.and_then(|v| v.as_slice().try_into().ok()).map(u32::from_be_bytes);
    Ok(match version {
        Some(v) => v < MAP_VERSION,
        None => store.has_assignments()?,
    })
}

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
pub fn recompute_interrupted(store: &impl StoreReader) -> store::Result<Option<i64>> {
    Ok(store.meta(RECOMPUTE_MARKER)?.map(|v| v.as_slice().try_into().map(i64::from_be_bytes).unwrap_or(0)))
}

/// Recomputes the whole map (with the operator's `overrides`) and stores
/// it: every count rebuilt from zero, every assignment that differs
/// rewritten, marks cleared, then the structure. The caller holds the only
/// handle on the store.
pub fn recompute(store: &Store, overrides: &Overrides) -> store::Result<Summary> {
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
    overrides: &Overrides,
    opts: &RecomputeOptions<'_>,
) -> Result<Summary, RecomputeError> {
    let _span = tracing::info_span!("recompute").entered();
    let mut marker = Batch::default();
    marker.put_meta(RECOMPUTE_MARKER, crate::clock::now_ms().to_be_bytes().to_vec());
    store.commit(marker)?;
    let stopped = || opts.stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
    let mut summary = Summary::default();
    let mut totals = CountTotals::default();
    let mut batch = Batch::default();
    let mut read = 0u64;
    let walked = store.for_each_account(|did, view, old| {
        // every RECOMPUTE_BATCH accounts read: what changed so far is
        // committed, then progress is reported and a stop honoured
        if read > 0 && read % RECOMPUTE_BATCH as u64 == 0 {
            if !batch.is_empty() {
                store.commit(std::mem::take(&mut batch))?;
            }
            if let Some(p) = opts.progress {
                p(read);
            }
            if stopped() {
                return Err(RecomputeError::Stopped { accounts: read });
            }
        }
        read += 1;
        if !view.is_known() {
            // an assignment whose records are gone
            batch.unassign(did, old.map(|o| o.decode()).transpose()?);
            return Ok(());
        }
        summary.accounts += 1;
        let new = assign::desired(view.plc.as_ref(), view.identity.as_ref(), view.firehose.as_ref());
        if let Some(r) = &new.reason {
            *summary.unassigned.entry(r.clone()).or_default() += 1;
        }
        totals.add_assignment(did, &new);
        // stored bytes equal to the new assignment's encoding: unchanged,
        // without decoding them; otherwise compared decoded
        if old.as_ref().is_some_and(|o| *o == Encoded::of(&new)) {
            return Ok(());
        }
        let old = old.map(|o| o.decode()).transpose()?;
        if old.as_ref() != Some(&new) {
            summary.changed += 1;
            let moves = new.move_count().saturating_sub(old.as_ref().map_or(0, |o| o.move_count()));
            crate::metrics::MAP_MOVES.with_label_values(&["migration"]).inc_by(moves as u64);
            batch.reassign(did, old, new);
        }
        Ok(())
    });
    if let Err(e) = walked {
        if let RecomputeError::Stopped { accounts } = e {
            store.commit(batch)?;
            tracing::warn!(accounts, "recompute stopped; the map stays marked for a full recompute");
        }
        return Err(e);
    }
    batch.replace_counts(totals);
    // every mark is taken by now (the caller holds the only handle)
    if opts.clear_marks {
        batch.clear_marks();
    }
    // the counts agree with the assignments again, under these rules
    batch.delete_meta(RECOMPUTE_MARKER);
    batch.put_meta(store::MetaKey::MapVersion, MAP_VERSION.to_be_bytes().to_vec());
    store.commit(batch)?;
    crate::metrics::MAP_UPDATES.with_label_values(&["recompute"]).inc();
    let st = super::structure::refresh(store, overrides)?;
    summary.hosts = st.hosts;
    summary.instances = st.instances;
    summary.declarations = st.declarations;
    summary.verified_declarations = st.verified_declarations;
    summary.memberships = st.memberships;
    summary.verified_memberships = st.verified_memberships;
    Ok(summary)
}
