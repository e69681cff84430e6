//! The full recompute (`instancemap recluster`): hosts and accounts from the
//! store → [`super::cluster`] → the `instances` family (one record per
//! instance, with member counts) and `host_instance` (host → instance id).
//! An account's instance is that of its current PDS host, read through
//! `host_instance`; an account with no PDS, or tombstoned, is reported in an
//! explicit state instead.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{EvidenceKind, HostFacts};
use crate::hosts::HostRecord;
use crate::identity::resolve::IdentityRecord;
use crate::plc::load::PlcRecord;
use crate::store::{
    self, AccountState, Store, CF_ACCOUNTS, CF_DECLARATIONS, CF_HOSTS, CF_HOST_INSTANCE, CF_IDENTITY, CF_INSTANCES,
    CF_PLC,
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
    /// `#account` status), `seen_on_firehose`, `declared_members`
    /// (membership records the operator's verified declaration covers).
    pub members: BTreeMap<String, u64>,
    pub computed_at_ms: i64,
    /// The operator whose verified declaration covers the instance, and
    /// its governance data (contacts, policies, labelers, jurisdiction).
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub governance: Option<super::declaration::Declaration>,
}

/// What a recompute did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub hosts: usize,
    pub instances: usize,
    pub accounts: u64,
    /// Accounts in an explicit state rather than an instance, by reason.
    pub unassigned: BTreeMap<String, u64>,
    pub declarations: usize,
    /// Declarations with at least one verified host.
    pub verified_declarations: usize,
    pub memberships: usize,
    /// Membership records the operator's verified declaration covers.
    pub verified_memberships: usize,
}

/// Each account's current PDS: from the newer of its PLC state and its
/// last resolution; `Err(reason)` when it has none.
fn current_pds(plc: Option<&PlcRecord>, res: Option<&IdentityRecord>) -> Result<String, &'static str> {
    if plc.is_some_and(|p| p.tombstoned) || res.is_some_and(|r| r.tombstoned) {
        return Err("deleted");
    }
    let pds = if crate::identity::resolve::resolution_is_current(plc, res) {
        res.and_then(|r| r.pds.clone())
    } else {
        plc.and_then(|p| p.pds.clone())
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

/// The three records of one DID, by point reads.
fn known(store: &Store, did: &str) -> store::Result<Known> {
    let get = |cf: &'static str| store.get_cf(cf, did.as_bytes());
    Ok((
        get(CF_PLC)?.map(|b| decode(CF_PLC, &b)).transpose()?,
        get(CF_IDENTITY)?.map(|b| decode(CF_IDENTITY, &b)).transpose()?,
        get(CF_ACCOUNTS)?.map(|b| decode(CF_ACCOUNTS, &b)).transpose()?,
    ))
}

/// Calls `f` once per DID known to any of the three families, in DID
/// order, streaming them side by side (a merge join on the key): memory
/// stays constant however many accounts there are.
fn for_each_account(
    store: &Store,
    mut f: impl FnMut(&[u8], Option<&PlcRecord>, Option<&IdentityRecord>, Option<&AccountState>),
) -> store::Result<()> {
    let mut plc = store.iter_cf(CF_PLC).peekable();
    let mut ident = store.iter_cf(CF_IDENTITY).peekable();
    let mut acct = store.iter_cf(CF_ACCOUNTS).peekable();
    fn head<I: Iterator<Item = store::Result<store::KeyValue>>>(
        it: &mut std::iter::Peekable<I>,
    ) -> store::Result<Option<Box<[u8]>>> {
        match it.peek() {
            Some(Ok((k, _))) => Ok(Some(k.clone())),
            Some(Err(_)) => Err(it.next().expect("peeked").expect_err("peeked an error")),
            None => Ok(None),
        }
    }
    loop {
        let keys = [head(&mut plc)?, head(&mut ident)?, head(&mut acct)?];
        let Some(min) = keys.iter().flatten().min().cloned() else { return Ok(()) };
        let take = |k: &Option<Box<[u8]>>| k.as_deref() == Some(&*min);
        let p: Option<PlcRecord> =
            if take(&keys[0]) { Some(decode(CF_PLC, &plc.next().expect("peeked")?.1)?) } else { None };
        let i: Option<IdentityRecord> =
            if take(&keys[1]) { Some(decode(CF_IDENTITY, &ident.next().expect("peeked")?.1)?) } else { None };
        let a: Option<AccountState> =
            if take(&keys[2]) { Some(decode(CF_ACCOUNTS, &acct.next().expect("peeked")?.1)?) } else { None };
        f(&min, p.as_ref(), i.as_ref(), a.as_ref());
    }
}

/// Recomputes the whole map (with the operator's `overrides`) and stores it.
pub fn recompute(store: &Store, overrides: &super::overrides::Overrides) -> store::Result<Summary> {
    // accounts: DID → (pds or reason, firehose status)
    let mut facts: BTreeMap<String, HostFacts> = BTreeMap::new();
    let mut host_dids: HashMap<String, Option<String>> = HashMap::new();
    for item in store.iter_cf(CF_HOSTS) {
        let (k, v) = item?;
        let h: HostRecord = decode(CF_HOSTS, &v)?;
        let h_did = h.describe.as_ref().and_then(|d| d.did.clone());
        let endpoint = String::from_utf8_lossy(&k).into_owned();
        facts.insert(
            endpoint.clone(),
            HostFacts {
                endpoint,
                user_domains: h.describe.map(|d| d.available_user_domains).unwrap_or_default(),
                observed_at_ms: h.last_ok_ms.unwrap_or(h.first_seen_ms),
                declared_by: None,
            },
        );
        host_dids.insert(String::from_utf8_lossy(&k).into_owned(), h_did);
    }
    // declarations: verify each claim, mark the hosts of verified ones
    let mut statuses = Vec::new();
    let mut governance: BTreeMap<String, super::declaration::Declaration> = BTreeMap::new();
    for (operator, _rkey, rec) in store.records(super::declaration::DECLARATION)? {
        let Ok(json) = crate::repo::cbor::to_json(&rec.record) else { continue };
        let Ok(decl) = serde_json::from_value::<super::declaration::Declaration>(json) else { continue };
        let handle =
            known(store, &operator)?.1.and_then(|r| r.handle_check).filter(|c| c.verified).map(|c| c.handle.clone());
        let status = verify_declaration(&operator, &decl, handle.as_deref(), &host_dids);
        if !status.verified_hosts.is_empty() {
            governance.insert(operator.clone(), decl.clone());
        }
        for h in &status.verified_hosts {
            let f = facts.entry(h.clone()).or_insert_with(|| HostFacts { endpoint: h.clone(), ..HostFacts::default() });
            if f.declared_by.as_ref().is_none_or(|(op, _)| operator < *op) {
                f.declared_by = Some((operator.clone(), decl.name.clone()));
            }
        }
        statuses.push(status);
    }
    // pass 1: every PDS an account names is a host of the map
    let mut accounts = 0u64;
    for_each_account(store, |_, plc, res, _| {
        accounts += 1;
        if let Ok(p) = current_pds(plc, res) {
            if !facts.contains_key(&p) {
                facts.insert(p.clone(), HostFacts { endpoint: p, ..HostFacts::default() });
            }
        }
    })?;
    let facts: Vec<HostFacts> = facts.into_values().collect();
    let instances = super::cluster_with(&facts, overrides);
    let mut host_instance: HashMap<&str, usize> = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        for h in &inst.hosts {
            host_instance.insert(h.as_str(), i);
        }
    }
    let mut members: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); instances.len()];
    let mut summary = Summary { hosts: facts.len(), instances: instances.len(), accounts, ..Summary::default() };
    // pass 2: count each account in its instance, or its state
    for_each_account(store, |_, plc, res, acct| match current_pds(plc, res) {
        Ok(p) => {
            let m = &mut members[host_instance[p.as_str()]];
            *m.entry("registered".into()).or_default() += 1;
            if let Some(a) = acct {
                *m.entry("seen_on_firehose".into()).or_default() += 1;
                *m.entry(a.status_label().to_owned()).or_default() += 1;
            }
        }
        Err(reason) => *summary.unassigned.entry(reason.to_owned()).or_default() += 1,
    })?;
    // membership records count two-sided: the operator's declaration must
    // have verified and cover the member's host or its verified handle
    let verified: HashMap<&str, &DeclarationStatus> =
        statuses.iter().filter(|s| !s.verified_hosts.is_empty()).map(|s| (s.operator.as_str(), s)).collect();
    for (member, _rkey, rec) in store.records(super::declaration::MEMBERSHIP)? {
        let Ok(json) = crate::repo::cbor::to_json(&rec.record) else { continue };
        let Ok(m) = serde_json::from_value::<super::declaration::Membership>(json) else { continue };
        let (plc, res, _) = known(store, &member)?;
        let pds = Some(current_pds(plc.as_ref(), res.as_ref()));
        let handle = res.and_then(|r| r.handle_check).filter(|c| c.verified).map(|c| c.handle);
        let counted = verified.get(m.operator.as_str()).is_some_and(|st| {
            let by_host = matches!(&pds, Some(Ok(p)) if st.verified_hosts.contains(p));
            let by_handle = handle
                .as_deref()
                .is_some_and(|h| st.verified_domains.iter().any(|d| h == d || h.ends_with(&format!(".{d}"))));
            by_host || by_handle
        });
        summary.memberships += 1;
        if counted {
            summary.verified_memberships += 1;
            // counted in the instance the operator's declaration anchors
            if let Some(i) = instances.iter().position(|i| i.anchor == format!("decl:{}", m.operator)) {
                *members[i].entry("declared_members".into()).or_default() += 1;
            }
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
        let operator = inst
            .evidence
            .iter()
            .filter_map(|e| match &e.kind {
                EvidenceKind::Declaration(op) => Some(op.clone()),
                _ => None,
            })
            .min();
        let rec = InstanceRecord {
            governance: operator.as_ref().and_then(|op| governance.get(op).cloned()),
            operator,
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
                        EvidenceKind::Declaration(op) => ("declaration", op.clone()),
                        EvidenceKind::Override(what) => ("override", what.clone()),
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
    for cf_key in store.iter_cf(CF_DECLARATIONS) {
        let (k, _) = cf_key?;
        wb.delete_cf(store.cf(CF_DECLARATIONS), k);
    }
    for st in &statuses {
        wb.put_cf(store.cf(CF_DECLARATIONS), st.operator.as_bytes(), store::to_cbor(st));
    }
    summary.declarations = statuses.len();
    summary.verified_declarations = statuses.iter().filter(|s| !s.verified_hosts.is_empty()).count();
    store.write(wb)?;
    Ok(summary)
}

/// What a declaration's claims came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarationStatus {
    pub operator: String,
    pub name: String,
    /// Claimed hosts the operator demonstrably controls.
    pub verified_hosts: Vec<String>,
    /// Claimed account domains it demonstrably controls.
    pub verified_domains: Vec<String>,
    /// Claims that did not verify: `(claim, why)`.
    pub unverified: Vec<(String, String)>,
}

/// Checks a declaration's claims. A host counts when its `describeServer`
/// names the operator's DID, or the operator's verified handle is under
/// the host's registrable domain; an account domain counts when the
/// operator's verified handle is under it, or a verified host advertises it
/// (checked by the caller's host facts through `host_dids`' owners).
pub fn verify_declaration(
    operator: &str,
    decl: &super::declaration::Declaration,
    verified_handle: Option<&str>,
    host_dids: &HashMap<String, Option<String>>,
) -> DeclarationStatus {
    let mut st = DeclarationStatus { operator: operator.to_owned(), name: decl.name.clone(), ..Default::default() };
    let handle_rd = verified_handle.and_then(super::registrable_domain);
    for claim in &decl.pds_hosts {
        let Ok(host) = crate::identity::did::normalize_endpoint(claim) else {
            st.unverified.push((claim.clone(), "not a host URL".into()));
            continue;
        };
        let names_operator = host_dids.get(&host).and_then(|d| d.as_deref()) == Some(operator);
        let (name, alone) = super::host_name(&host);
        let same_domain = !alone && handle_rd.is_some() && super::registrable_domain(name) == handle_rd;
        if names_operator || same_domain {
            st.verified_hosts.push(host);
        } else {
            let why = if host_dids.contains_key(&host) {
                "the host's describeServer does not name the operator, and the operator's verified handle is not under its domain"
            } else {
                "host not crawled yet, and the operator's verified handle is not under its domain"
            };
            st.unverified.push((host, why.into()));
        }
    }
    for claim in &decl.account_domains {
        let d = claim.trim_start_matches('.').to_ascii_lowercase();
        let under = verified_handle.is_some_and(|h| h == d || h.ends_with(&format!(".{d}")));
        if under {
            st.verified_domains.push(d);
        } else {
            st.unverified.push((claim.clone(), "the operator's verified handle is not under this domain".into()));
        }
    }
    st
}

/// The stored status of an operator's declaration.
pub fn declaration_status(store: &Store, operator: &str) -> store::Result<Option<DeclarationStatus>> {
    match store.get_cf(CF_DECLARATIONS, operator.as_bytes())? {
        Some(b) => Ok(Some(decode(CF_DECLARATIONS, &b)?)),
        None => Ok(None),
    }
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
