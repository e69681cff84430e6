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
    /// Called after each committed batch with the accounts read so far
    /// (from any of the recompute's threads).
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
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

/// Whether a bulk PLC load asked for a full recompute (it marked no
/// account): since when, in ms.
pub fn rebuild_wanted(store: &impl StoreReader) -> store::Result<Option<i64>> {
    Ok(store.meta(store::MetaKey::RebuildWanted)?.map(|v| v.as_slice().try_into().map(i64::from_be_bytes).unwrap_or(0)))
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

/// What one part of a recompute's walk found.
struct Part {
    summary: Summary,
    totals: CountTotals,
}

/// Walks the accounts from `from` to `to`: each new assignment counted,
/// each changed one rewritten (committed every [`RECOMPUTE_BATCH`]
/// accounts, when progress is reported over every part and a stop
/// honoured).
fn walk(
    store: &Store,
    from: &[u8],
    to: Option<&[u8]>,
    opts: &RecomputeOptions<'_>,
    read: &std::sync::atomic::AtomicU64,
) -> Result<Part, RecomputeError> {
    use std::sync::atomic::Ordering;
    let stopped = || opts.stop.is_some_and(|s| s.load(Ordering::Relaxed));
    let mut part = Part { summary: Summary::default(), totals: CountTotals::default() };
    let mut batch = Batch::default();
    let mut mine = 0u64;
    let walked = store.for_each_account_in(from, to, |did, view, old| {
        if mine > 0 && mine % RECOMPUTE_BATCH as u64 == 0 {
            if !batch.is_empty() {
                store.commit(std::mem::take(&mut batch))?;
            }
            let all = read.fetch_add(RECOMPUTE_BATCH as u64, Ordering::Relaxed) + RECOMPUTE_BATCH as u64;
            if let Some(p) = opts.progress {
                p(all);
            }
            if stopped() {
                return Err(RecomputeError::Stopped { accounts: all });
            }
        }
        mine += 1;
        if !view.is_known() {
            // an assignment whose records are gone
            batch.unassign(did, old.map(|o| o.decode()).transpose()?);
            return Ok(());
        }
        part.summary.accounts += 1;
        let new = assign::desired(view.plc.as_ref(), view.identity.as_ref(), view.firehose.as_ref());
        if let Some(r) = &new.reason {
            *part.summary.unassigned.entry(r.clone()).or_default() += 1;
        }
        part.totals.add_assignment(did, &new);
        // stored bytes equal to the new assignment's encoding: unchanged,
        // without decoding them; otherwise compared decoded
        if old.as_ref().is_some_and(|o| *o == Encoded::of(&new)) {
            return Ok(());
        }
        let old = old.map(|o| o.decode()).transpose()?;
        if old.as_ref() != Some(&new) {
            part.summary.changed += 1;
            let moves = new.move_count().saturating_sub(old.as_ref().map_or(0, |o| o.move_count()));
            crate::metrics::MAP_MOVES.with_label_values(&["migration"]).inc_by(moves as u64);
            batch.reassign(did, old, new);
        }
        Ok(())
    });
    // what was walked is committed, also when stopped
    store.commit(batch)?;
    read.fetch_add(mine % RECOMPUTE_BATCH as u64, Ordering::Relaxed);
    walked.map(|()| part)
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
    // a bulk load's request for a rebuild is taken (an interruption leaves
    // the marker, which asks the same)
    marker.delete_meta(store::MetaKey::RebuildWanted);
    store.commit(marker)?;
    // the key space in one part per core, each walked on its own thread
    // with its own batches and counts, merged at the end
    let parts = crate::identity::verify::default_workers().clamp(1, 8);
    let splits = store.account_splits(parts)?;
    let mut bounds: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut from = Vec::new();
    for k in splits {
        bounds.push((std::mem::replace(&mut from, k.clone()), Some(k)));
    }
    bounds.push((from, None));
    let read = std::sync::atomic::AtomicU64::new(0);
    let walked: Vec<Result<Part, RecomputeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = bounds
            .iter()
            .map(|(from, to)| {
                let read = &read;
                std::thread::Builder::new()
                    // "map": the thread name `run` lets write the map (app::MAP_THREAD)
                    .name("map".into())
                    .spawn_scoped(scope, move || walk(store, from, to.as_deref(), opts, read))
                    .expect("spawning a recompute thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut summary = Summary::default();
    let mut totals = CountTotals::default();
    let mut failed = None;
    for w in walked {
        match w {
            Ok(p) => {
                summary.accounts += p.summary.accounts;
                summary.changed += p.summary.changed;
                for (r, n) in p.summary.unassigned {
                    *summary.unassigned.entry(r).or_default() += n;
                }
                totals.merge(p.totals);
            }
            // a stop or an error in any part ends the recompute; the marker
            // stays (what each part committed is kept)
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        if let RecomputeError::Stopped { .. } = e {
            let accounts = read.load(std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(accounts, "recompute stopped; the map stays marked for a full recompute");
            return Err(RecomputeError::Stopped { accounts });
        }
        return Err(e);
    }
    let mut batch = Batch::default();
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
