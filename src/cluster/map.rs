//! The full recompute (`instancemap recluster`): hosts and accounts from the
//! store → [`super::cluster`] → the `instances` family (one record per
//! instance, with member counts) and `host_instance` (host → instance id).
//! An account's instance is that of its current PDS host, read through
//! `host_instance`; an account with no PDS, or tombstoned, is reported in an
//! explicit state instead.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{cluster, EvidenceKind, HostFacts};
use crate::hosts::HostRecord;
use crate::identity::resolve::IdentityRecord;
use crate::plc::load::PlcRecord;
use crate::store::{
    self, AccountState, Store, CF_ACCOUNTS, CF_HOSTS, CF_HOST_INSTANCE, CF_IDENTITY, CF_INSTANCES, CF_PLC,
};

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
    /// `user_domain`, `registrable_domain` or `host_alone`.
    pub evidence: Vec<(String, String, String, i64)>,
    /// Members by status: `registered` (a current PLC/DID document names
    /// one of its hosts), `active` / `deactivated` / … (the firehose's last
    /// `#account` status), `seen_on_firehose`.
    pub members: BTreeMap<String, u64>,
    pub computed_at_ms: i64,
}

/// What a recompute did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub hosts: usize,
    pub instances: usize,
    pub accounts: u64,
    /// Accounts in an explicit state rather than an instance, by reason.
    pub unassigned: BTreeMap<String, u64>,
}

/// Each account's current PDS: from the newer of its PLC state and its
/// last resolution; `Err(reason)` when it has none.
fn current_pds(plc: Option<&PlcRecord>, res: Option<&IdentityRecord>) -> Result<String, &'static str> {
    if plc.is_some_and(|p| p.tombstoned) || res.is_some_and(|r| r.tombstoned) {
        return Err("deleted");
    }
    let plc_ms = plc.and_then(|p| crate::event::parse_time_us(&p.updated_at)).map(|us| us / 1000);
    let res_ms = res.and_then(|r| r.resolved_at_ms);
    let pds = match (res_ms, plc_ms) {
        (Some(r), Some(p)) if r >= p => res.and_then(|r| r.pds.clone()),
        (Some(_), None) => res.and_then(|r| r.pds.clone()),
        _ => plc.and_then(|p| p.pds.clone()),
    };
    match (pds, plc, res) {
        (Some(p), _, _) => Ok(p),
        (None, None, None) => Err("unresolved"),
        (None, _, Some(r)) if r.unresolved.is_some() => Err("unresolved"),
        _ => Err("no_pds"),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(cf: &'static str, b: &[u8]) -> store::Result<T> {
    store::from_cbor(cf, b)
}

/// What the store knows of one DID: PLC state, last resolution, firehose state.
type Known = (Option<PlcRecord>, Option<IdentityRecord>, Option<AccountState>);

/// Recomputes the whole map and stores it.
pub fn recompute(store: &Store) -> store::Result<Summary> {
    // accounts: DID → (pds or reason, firehose status)
    let mut dids: BTreeMap<String, Known> = BTreeMap::new();
    for item in store.iter_cf(CF_PLC) {
        let (k, v) = item?;
        dids.entry(String::from_utf8_lossy(&k).into_owned()).or_default().0 = Some(decode(CF_PLC, &v)?);
    }
    for item in store.iter_cf(CF_IDENTITY) {
        let (k, v) = item?;
        dids.entry(String::from_utf8_lossy(&k).into_owned()).or_default().1 = Some(decode(CF_IDENTITY, &v)?);
    }
    for item in store.iter_cf(CF_ACCOUNTS) {
        let (k, v) = item?;
        dids.entry(String::from_utf8_lossy(&k).into_owned()).or_default().2 = Some(decode(CF_ACCOUNTS, &v)?);
    }
    let mut facts: BTreeMap<String, HostFacts> = BTreeMap::new();
    for item in store.iter_cf(CF_HOSTS) {
        let (k, v) = item?;
        let h: HostRecord = decode(CF_HOSTS, &v)?;
        let endpoint = String::from_utf8_lossy(&k).into_owned();
        facts.insert(
            endpoint.clone(),
            HostFacts {
                endpoint,
                user_domains: h.describe.map(|d| d.available_user_domains).unwrap_or_default(),
                observed_at_ms: h.last_ok_ms.unwrap_or(h.first_seen_ms),
            },
        );
    }
    let mut assignment: Vec<(Result<String, &'static str>, Option<&'static str>)> = Vec::with_capacity(dids.len());
    for (plc, res, acct) in dids.values() {
        let pds = current_pds(plc.as_ref(), res.as_ref());
        if let Ok(p) = &pds {
            facts.entry(p.clone()).or_insert_with(|| HostFacts { endpoint: p.clone(), ..HostFacts::default() });
        }
        assignment.push((pds, acct.as_ref().map(AccountState::status_label)));
    }
    let facts: Vec<HostFacts> = facts.into_values().collect();
    let instances = cluster(&facts);
    let mut host_instance: HashMap<&str, usize> = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        for h in &inst.hosts {
            host_instance.insert(h.as_str(), i);
        }
    }
    let mut members: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); instances.len()];
    let mut summary =
        Summary { hosts: facts.len(), instances: instances.len(), accounts: dids.len() as u64, ..Summary::default() };
    for (pds, status) in &assignment {
        match pds {
            Ok(p) => {
                let m = &mut members[host_instance[p.as_str()]];
                *m.entry("registered".into()).or_default() += 1;
                if let Some(s) = status {
                    *m.entry("seen_on_firehose".into()).or_default() += 1;
                    *m.entry((*s).to_owned()).or_default() += 1;
                }
            }
            Err(reason) => *summary.unassigned.entry((*reason).to_owned()).or_default() += 1,
        }
    }
    let now = store::now_ms();
    let mut wb = rocksdb::WriteBatch::default();
    // replace the previous map whole
    for cf in [CF_INSTANCES, CF_HOST_INSTANCE] {
        for item in store.iter_cf(cf) {
            let (k, _) = item?;
            wb.delete_cf(store.cf(cf), k);
        }
    }
    for (inst, m) in instances.iter().zip(members) {
        let rec = InstanceRecord {
            id: inst.id.clone(),
            anchor: inst.anchor.clone(),
            name: inst.name.clone(),
            hosts: inst.hosts.clone(),
            user_domains: inst.user_domains.clone(),
            registrable_domains: inst.registrable_domains.clone(),
            evidence: inst
                .evidence
                .iter()
                .map(|e| {
                    let (kind, value) = match &e.kind {
                        EvidenceKind::UserDomain(d) => ("user_domain", d.clone()),
                        EvidenceKind::RegistrableDomain(d) => ("registrable_domain", d.clone()),
                        EvidenceKind::HostAlone => ("host_alone", String::new()),
                    };
                    (e.host.clone(), kind.to_owned(), value, e.observed_at_ms)
                })
                .collect(),
            members: m,
            computed_at_ms: now,
        };
        wb.put_cf(store.cf(CF_INSTANCES), inst.id.as_bytes(), store::to_cbor(&rec));
        for h in &inst.hosts {
            wb.put_cf(store.cf(CF_HOST_INSTANCE), h.as_bytes(), inst.id.as_bytes());
        }
    }
    store.write(wb)?;
    Ok(summary)
}

/// Every stored instance, largest (registered members) first.
pub fn instances(store: &Store) -> store::Result<Vec<InstanceRecord>> {
    let mut out = Vec::new();
    for item in store.iter_cf(CF_INSTANCES) {
        let (_, v) = item?;
        out.push(decode::<InstanceRecord>(CF_INSTANCES, &v)?);
    }
    out.sort_by(|a, b| {
        let n = |r: &InstanceRecord| r.members.get("registered").copied().unwrap_or(0);
        n(b).cmp(&n(a)).then(a.id.cmp(&b.id))
    });
    Ok(out)
}

/// The instance of a host, if the map has it.
pub fn instance_of_host(store: &Store, host: &str) -> store::Result<Option<InstanceRecord>> {
    let Some(id) = store.get_cf(CF_HOST_INSTANCE, host.as_bytes())? else { return Ok(None) };
    match store.get_cf(CF_INSTANCES, &id)? {
        Some(v) => Ok(Some(decode(CF_INSTANCES, &v)?)),
        None => Ok(None),
    }
}

/// An account's instance (or its explicit state) under the stored map.
pub fn instance_of_account(store: &Store, did: &str) -> store::Result<Result<InstanceRecord, String>> {
    let plc: Option<PlcRecord> = match store.get_cf(CF_PLC, did.as_bytes())? {
        Some(b) => Some(decode(CF_PLC, &b)?),
        None => None,
    };
    let res: Option<IdentityRecord> = match store.get_cf(CF_IDENTITY, did.as_bytes())? {
        Some(b) => Some(decode(CF_IDENTITY, &b)?),
        None => None,
    };
    match current_pds(plc.as_ref(), res.as_ref()) {
        Ok(p) => Ok(instance_of_host(store, &p)?.ok_or_else(|| format!("host {p} not in the map yet (run recluster)"))),
        Err(reason) => Ok(Err(reason.to_owned())),
    }
}
