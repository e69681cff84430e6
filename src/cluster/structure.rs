//! A structure refresh: re-clusters the hosts (cheap: hosts, not
//! accounts) from what each shows, verifies every declaration's claims,
//! counts the memberships they cover, and replaces `instances`,
//! `host_instance` and `declarations` whole; a host whose instance changed
//! is a dated host move. Accounts are not touched: instances are summed
//! from their hosts when read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::assign;
use super::declaration::{self, Declaration, HostProof, Membership, DECLARATION, MEMBERSHIP};
use super::overrides::Overrides;
use super::{EvidenceKind, HostFacts};
use crate::store::map::{MapReader, Structure};
use crate::store::records::{DeclarationStatus, HostMove, InstanceRecord};
use crate::store::{self, Batch, Store, StoreReader, StoreWriter};

/// What a structure refresh did.
#[derive(Debug, Clone, Default)]
pub struct StructureSummary {
    pub hosts: usize,
    pub instances: usize,
    pub declarations: usize,
    pub verified_declarations: usize,
    pub memberships: usize,
    pub verified_memberships: usize,
}

/// Re-clusters the hosts and rewrites `instances`, `host_instance` and
/// `declarations`; a host whose instance changed is a dated `host_moves` row.
pub fn refresh(store: &Store, overrides: &Overrides) -> store::Result<StructureSummary> {
    let now = crate::clock::now_ms();
    let members = store.host_members()?;
    let mut facts: BTreeMap<String, HostFacts> = BTreeMap::new();
    let mut proofs: HashMap<String, HostProof> = HashMap::new();
    let mut relay_reported: HashMap<String, i64> = HashMap::new();
    let mut host_states: BTreeMap<String, i64> = BTreeMap::new();
    for (endpoint, h) in store.hosts()? {
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
    let mut governance: BTreeMap<String, Declaration> = BTreeMap::new();
    let mut claims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (operator, _rkey, rec) in store.stored_records(DECLARATION)? {
        let Ok(json) = crate::repo::cbor::to_json(&rec.record) else { continue };
        let Ok(decl) = serde_json::from_value::<Declaration>(json) else { continue };
        let handle =
            store.identity(&operator)?.and_then(|r| r.handle_check).filter(|c| c.verified).map(|c| c.handle.clone());
        let status = declaration::verify(&operator, &decl, handle.as_deref(), &proofs, &provider_domains);
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
    for (member, _rkey, rec) in store.stored_records(MEMBERSHIP)? {
        let Ok(json) = crate::repo::cbor::to_json(&rec.record) else { continue };
        let Ok(m) = serde_json::from_value::<Membership>(json) else { continue };
        summary.memberships += 1;
        let Some(st) = verified.get(m.operator.as_str()) else { continue };
        let (plc, res) = (store.plc(&member)?, store.identity(&member)?);
        let pds = assign::current_pds(plc.as_ref(), res.as_ref()).ok();
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
    let mut previous = store.host_instances()?;
    let mut out = Structure::default();
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
        for h in &inst.hosts {
            let from = previous.remove(h).unwrap_or_default();
            if from != inst.id {
                let mv = HostMove { host: h.clone(), from, to: inst.id.clone(), accounts: registered(h) };
                if !mv.from.is_empty() {
                    crate::metrics::MAP_MOVES.with_label_values(&["recluster"]).inc_by(mv.accounts.max(0) as u64);
                }
                out.host_moves.push((now, mv));
            }
        }
        out.instances.push(rec);
    }
    // hosts that left the map
    for (h, from) in previous {
        let mv = HostMove { host: h.clone(), from, to: String::new(), accounts: registered(&h) };
        out.host_moves.push((now, mv));
    }
    summary.declarations = statuses.len();
    summary.verified_declarations = statuses.iter().filter(|s| !s.verified_hosts.is_empty()).count();
    out.declarations = statuses;
    let mut batch = Batch::default();
    batch.replace_structure(out);
    store.commit(batch)?;
    crate::metrics::MAP_UPDATES.with_label_values(&["structure"]).inc();
    crate::metrics::DECLARATIONS.with_label_values(&["verified"]).set(summary.verified_declarations as i64);
    crate::metrics::DECLARATIONS
        .with_label_values(&["unverified"])
        .set((summary.declarations - summary.verified_declarations) as i64);
    super::concentration::publish_gauges(store)?;
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
