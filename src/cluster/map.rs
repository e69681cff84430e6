//! The stored map, kept two ways that must agree:
//!
//! - **Incremental** ([`super::maintain::Maintainer`]): writers mark what
//!   changed in the batch of the change; the maintainer takes the marks.
//! - **Full recompute** (`instancemap recluster`,
//!   [`super::recompute::recompute`]): streams every account and rebuilds
//!   every count from zero.
//!
//! Both write through the store's typed batch and refresh the structure
//! ([`super::structure`]); this module holds the readers the API, the
//! exports and the commands share, over [`MapReader`] (the RocksDB store,
//! a snapshot of it, or the in-memory store).

use std::collections::BTreeMap;

use serde::Serialize;

use super::assign;
use crate::store::map::MapReader;
use crate::store::{self, AccountState, StoreReader};

pub use super::assign::current_pds;
pub use super::concentration::{concentration, concentrations, publish_gauges, Concentration};
pub use super::declaration::{verify as verify_declaration, HostProof};
pub use super::maintain::{bring_current, Maintainer, Step, Update, BULK_MARKS};
pub use super::recompute::{
    recompute, recompute_interrupted, recompute_with, RecomputeError, RecomputeOptions, Summary, RECOMPUTE_MARKER,
};
pub use crate::store::records::{Assignment, DeclarationStatus, HostMove, InstanceRecord, MoveRow};
pub use crate::store::STRUCTURE;

/// What the store knows of one DID: PLC state, last resolution, firehose state.
pub type Known =
    (Option<crate::store::records::PlcRecord>, Option<crate::store::records::IdentityRecord>, Option<AccountState>);

/// The three records of one DID (one read of its account view).
pub fn known(store: &impl StoreReader, did: &str) -> store::Result<Known> {
    let v = store.account_view(did)?;
    Ok((v.plc, v.identity, v.firehose))
}

/// An account's stored assignment.
pub fn assignment(store: &impl MapReader, did: &str) -> store::Result<Option<Assignment>> {
    store.assignment(did)
}

// ---------------------------------------------------------------- freshness

/// Marks waiting, the structure mark included (a full scan; see
/// [`freshness`]).
pub fn pending(store: &(impl StoreReader + MapReader)) -> store::Result<u64> {
    let f = freshness(store)?;
    Ok(f.pending_accounts + u64::from(f.structure_pending))
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
    /// The map was computed under older rules (an earlier version): the
    /// next writer of the map rebuilds it.
    #[serde(default)]
    pub outdated: bool,
    /// A bulk PLC load (since this time, ms) marked no account and asks
    /// for a full recompute.
    #[serde(default)]
    pub rebuild_wanted_ms: Option<i64>,
}

impl Freshness {
    pub fn is_current(&self) -> bool {
        self.pending_accounts == 0
            && !self.structure_pending
            && self.recompute_interrupted_ms.is_none()
            && self.rebuild_wanted_ms.is_none()
            && !self.outdated
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
        if let Some(at) = self.rebuild_wanted_ms {
            return Some(format!(
                "the map is not built yet: a bulk PLC load (since {}) asks for a full recompute, which `backfill-plc` \
                 runs when it ends (or `recluster`, or `run`)",
                crate::clock::rfc3339_ms(at).unwrap_or_default()
            ));
        }
        if self.outdated {
            return Some(
                "the map was computed under older rules: `recluster` (or `run`) rebuilds it; until then it may link \
                 hosts on evidence these rules refuse"
                    .into(),
            );
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
pub fn freshness(store: &(impl StoreReader + MapReader)) -> store::Result<Freshness> {
    let (pending_accounts, structure_pending) = store.pending_marks()?;
    Ok(Freshness {
        recompute_interrupted_ms: recompute_interrupted(store)?,
        pending_accounts,
        structure_pending,
        outdated: super::recompute::map_outdated(store)?,
        rebuild_wanted_ms: super::recompute::rebuild_wanted(store)?,
    })
}

// ---------------------------------------------------------------- readers

/// Per host: members by bucket.
pub fn host_members(store: &impl MapReader) -> store::Result<BTreeMap<String, BTreeMap<String, i64>>> {
    store.host_members()
}

/// Accounts in an explicit state, by reason.
pub fn unassigned(store: &impl MapReader) -> store::Result<BTreeMap<String, i64>> {
    store.unassigned()
}

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
pub fn instances(store: &impl MapReader) -> store::Result<Vec<InstanceRecord>> {
    let members = store.host_members()?;
    let mut out: Vec<InstanceRecord> =
        store.instance_records()?.into_iter().map(|r| with_members(r, &members)).collect();
    out.sort_by(|a, b| {
        let n = |r: &InstanceRecord| r.members.get(assign::bucket::REGISTERED).copied().unwrap_or(0);
        n(b).cmp(&n(a)).then(a.id.cmp(&b.id))
    });
    Ok(out)
}

/// One instance by id, with its members.
pub fn instance(store: &impl MapReader, id: &str) -> store::Result<Option<InstanceRecord>> {
    let Some(rec) = store.instance_encoded(id)? else { return Ok(None) };
    let rec = rec.decode()?;
    let mut members = BTreeMap::new();
    for h in &rec.hosts {
        members.insert(h.clone(), store.members_of_host(h)?);
    }
    Ok(Some(with_members(rec, &members)))
}

/// The instance id of a host, if the map has it.
pub fn instance_id_of_host(store: &impl MapReader, host: &str) -> store::Result<Option<String>> {
    store.instance_id_of_host(host)
}

/// The instance of a host, if the map has it.
pub fn instance_of_host(store: &impl MapReader, host: &str) -> store::Result<Option<InstanceRecord>> {
    match store.instance_id_of_host(host)? {
        Some(id) => instance(store, &id),
        None => Ok(None),
    }
}

/// An account's instance (or its explicit state, with the reason) under
/// the stored map; from its records when the map has not taken it in yet.
pub fn instance_of_account(
    store: &(impl StoreReader + MapReader),
    did: &str,
) -> store::Result<Result<InstanceRecord, String>> {
    let a = match store.assignment(did)? {
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
pub fn declaration_status(store: &impl MapReader, operator: &str) -> store::Result<Option<DeclarationStatus>> {
    store.declaration_status(operator)
}

/// An account's migrations, oldest first: `(at_ms, row)`.
pub fn moves_of(store: &impl MapReader, did: &str) -> store::Result<Vec<(i64, MoveRow)>> {
    store.moves_of(did)
}

/// The DIDs a handle points at: verified ones first.
pub fn dids_of_handle(store: &impl MapReader, handle: &str) -> store::Result<Vec<(String, bool)>> {
    store.dids_of_handle(handle)
}

/// Accounts on `host` after `after` (a DID; `None`: from the first), up to `limit`.
pub fn accounts_on_host(
    store: &impl MapReader,
    host: &str,
    after: Option<&str>,
    limit: usize,
) -> store::Result<Vec<String>> {
    store.accounts_on_host(host, after, limit)
}
