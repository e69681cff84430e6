//! The incremental maintainer: every writer that changes what an account's
//! place depends on (a PLC operation, a resolution, a new account or status
//! on the firehose) marks the DID in the batch of the change; a host crawl
//! or a declaration/membership record marks the *structure*. The maintainer
//! takes marks in key order, reads each account's view, and when its
//! assignment changed commits the change (the store subtracts the old
//! contributions and adds the new ones) with the marks taken back. A
//! structure mark re-clusters the hosts.
//!
//! Marks are counters, not flags: the maintainer subtracts what it read, so
//! a mark added while it worked survives and is taken next time.

use std::collections::BTreeSet;

use super::assign;
use super::declaration::{DECLARATION, MEMBERSHIP};
use super::overrides::Overrides;
use super::recompute::{self, RecomputeError, RecomputeOptions, Summary};
use crate::store::map::MapReader;
use crate::store::records::Assignment;
use crate::store::{self, Batch, Store, StoreReader, StoreWriter};

/// The incremental maintainer: the single writer of the map's families.
pub struct Maintainer {
    store: Store,
    overrides: Overrides,
    /// Hosts with a `host_instance` entry (new hosts need the structure).
    clustered: Option<BTreeSet<String>>,
    /// The structure is refreshed at most this often (host crawls mark it
    /// on every crawl); zero in tests.
    pub structure_every: std::time::Duration,
    last_structure: Option<std::time::Instant>,
    /// Set to stop a recompute the maintainer runs (shutdown).
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The map's version was found current.
    checked_version: bool,
    /// The map's version was written (once per maintainer).
    version_written: bool,
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
    pub fn new(store: Store, overrides: Overrides) -> Maintainer {
        Maintainer {
            store,
            overrides,
            clustered: None,
            structure_every: std::time::Duration::ZERO,
            last_structure: None,
            stop: None,
            checked_version: false,
            version_written: false,
        }
    }

    /// Whether the map is outdated (checked once: after a recompute it is not).
    fn outdated(&mut self) -> store::Result<bool> {
        if self.checked_version {
            return Ok(false);
        }
        let outdated = recompute::map_outdated(&self.store)?;
        self.checked_version = !outdated;
        Ok(outdated)
    }

    fn clustered(&mut self) -> store::Result<&mut BTreeSet<String>> {
        if self.clustered.is_none() {
            self.clustered = Some(self.store.host_instances()?.into_keys().collect());
        }
        Ok(self.clustered.as_mut().expect("filled above"))
    }

    /// Takes up to `limit` account marks (and the structure mark, if set or
    /// needed) and applies them.
    pub fn step(&mut self, limit: usize) -> store::Result<Step> {
        let store = self.store.clone();
        let interrupted = recompute::recompute_interrupted(&store)?;
        let rebuild = recompute::rebuild_wanted(&store)?;
        if interrupted.is_some() || rebuild.is_some() || self.outdated()? {
            // the counts disagree with the assignments (or were made under
            // older rules): no delta may be applied before a full recompute
            match (interrupted, rebuild) {
                (Some(at), _) => tracing::warn!(
                    started_ms = at,
                    "a recompute did not finish; recomputing the map before anything else"
                ),
                (None, Some(at)) => tracing::info!(since_ms = at, "a bulk PLC load asked for a full recompute"),
                (None, None) => {
                    tracing::warn!("the map was computed under older rules; recomputing it before anything else")
                }
            }
            let opts = RecomputeOptions { clear_marks: false, stop: self.stop.as_deref(), progress: None };
            return match recompute::recompute_with(&store, &self.overrides, &opts) {
                Ok(s) => {
                    self.clustered = None;
                    self.checked_version = true;
                    self.last_structure = Some(std::time::Instant::now());
                    Ok(Step { accounts: s.accounts as usize, changed: s.changed as usize, structure: true })
                }
                Err(RecomputeError::Store(e)) => Err(e),
                Err(RecomputeError::Stopped { .. }) => Ok(Step::default()),
            };
        }
        let (marks, structure) = store.marks(limit)?;
        let structure = (structure != 0).then_some(structure);
        let mut step = Step { accounts: marks.len(), ..Step::default() };
        let mut need_structure = structure.is_some();
        let mut batch = Batch::with_capacity(marks.len() * 2);
        if !self.version_written {
            // the map is current under these rules (checked above): say so,
            // so a map the maintainer alone built is not taken as outdated
            batch.put_meta(store::MetaKey::MapVersion, recompute::MAP_VERSION.to_be_bytes().to_vec());
            self.version_written = true;
        }
        let mut left: BTreeSet<String> = BTreeSet::new();
        let mut moves = 0usize;
        for (did, n) in &marks {
            // everything about the DID in one read
            let view = store.account_view(did)?;
            let new = assign::desired(view.plc.as_ref(), view.identity.as_ref(), view.firehose.as_ref());
            let old = view.assignment;
            // a declaration or membership waiting for its signer's key: the
            // mark may be that key arriving
            need_structure |= awaits_key(&store, did)?;
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
                    let member = store.stored_record(MEMBERSHIP, did, "self")?.is_some();
                    let operator = store.stored_record(DECLARATION, did, "self")?.is_some();
                    need_structure |= member || operator;
                }
                // an account that vouches for its host's user domain
                need_structure |= vouching_changed(&store, did, old.as_ref(), &new)?;
                if let Some(h) = old.as_ref().and_then(|o| o.host.as_ref()).filter(|h| new.host.as_ref() != Some(*h)) {
                    left.insert(h.clone());
                }
                moves += new.move_count().saturating_sub(old.as_ref().map_or(0, |o| o.move_count()));
                batch.assign(did, old, new);
            }
            batch.unmark(did, *n);
        }
        store.commit(batch)?;
        crate::metrics::MAP_MOVES.with_label_values(&["migration"]).inc_by(moves as u64);
        // a host known only through its accounts leaves the map with the last
        for h in &left {
            if store.registered_on(h)? == 0 && store.host(h)?.is_none() {
                need_structure = true;
            }
        }
        crate::metrics::MAP_UPDATES.with_label_values(&["account"]).inc_by(step.changed as u64);
        let due = self.last_structure.is_none_or(|t| t.elapsed() >= self.structure_every);
        if need_structure && due {
            self.last_structure = Some(std::time::Instant::now());
            super::structure::refresh(&store, &self.overrides)?;
            self.clustered = None;
            if let Some(n) = structure {
                let mut batch = Batch::default();
                batch.unmark_structure(n);
                store.commit(batch)?;
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

/// Whether `did` has a declaration or membership whose signature did not
/// verify when it arrived (no key known then).
fn awaits_key(store: &Store, did: &str) -> store::Result<bool> {
    for c in [DECLARATION, MEMBERSHIP] {
        if store.stored_record(c, did, "self")?.is_some_and(|r| r.sig.as_ref().is_none_or(|s| !s.verified_on_arrival()))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the change from `old` to `new` changes what the account
/// vouches for a host that advertises the domain (the proof of a user
/// domain is a count of such accounts).
fn vouching_changed(store: &Store, did: &str, old: Option<&Assignment>, new: &Assignment) -> store::Result<bool> {
    let before = old.map(|o| (o.host.clone(), o.proves_domains(did))).unwrap_or_default();
    let after = (new.host.clone(), new.proves_domains(did));
    if before == after {
        return Ok(false);
    }
    for (host, domains) in [before, after] {
        let Some(host) = host else { continue };
        if domains.is_empty() {
            continue;
        }
        let advertised =
            store.host(&host)?.and_then(|h| h.describe).map(|d| d.available_user_domains).unwrap_or_default();
        if advertised.iter().filter_map(|d| super::user_domain_key(d)).any(|d| domains.contains(&d.as_str())) {
            return Ok(true);
        }
    }
    Ok(false)
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
    overrides: &Overrides,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Update, RecomputeError> {
    let f = super::map::freshness(store)?;
    let (interrupted, marks) = (
        f.recompute_interrupted_ms.is_some() || f.rebuild_wanted_ms.is_some() || f.outdated,
        f.pending_accounts + u64::from(f.structure_pending),
    );
    if interrupted || (marks > BULK_MARKS && marks.saturating_mul(4) > store.estimate_accounts()) {
        let opts = RecomputeOptions { clear_marks: true, stop, progress: None };
        return Ok(Update::Recomputed(recompute::recompute_with(store, overrides, &opts)?));
    }
    if marks == 0 {
        return Ok(Update::Current);
    }
    Ok(Update::Incremental(Maintainer::new(store.clone(), overrides.clone()).run_until_idle()?))
}
