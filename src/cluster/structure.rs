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
use crate::store::records::{DeclarationStatus, DomainProof, HostMove, InstanceRecord};
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

/// Advertised user domains considered per host (the rest are refused as
/// too many: a host cannot make the refresh prove thousands).
pub const MAX_ADVERTISED: usize = 16;
/// Accounts created on a host, with handles under a user domain that
/// verify both ways, that prove the host may issue handles there.
pub const PROOF_ACCOUNTS: i64 = 2;
/// Accounts of a host looked at for examples of a proof.
const EXAMPLE_SCAN: usize = 2_000;

/// Whether `name` is `domain` or under it.
pub fn under(name: &str, domain: &str) -> bool {
    name == domain || name.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// What a host's advertised user domains came to: the proven ones (keys)
/// with how, and the others with why not.
#[derive(Debug, Default)]
struct DomainProofs {
    proven: Vec<DomainProof>,
    unproven: Vec<(String, String)>,
}

/// Proves (or not) that `endpoint` may issue handles under each domain it
/// advertises: the domain is under the host's own registrable domain, or
/// at least [`PROOF_ACCOUNTS`] accounts created on the host hold handles
/// under it that verify both ways (the domain's owner answers for them).
fn prove_domains(store: &Store, endpoint: &str, advertised: &[String], at_ms: i64) -> store::Result<DomainProofs> {
    let (name, alone) = super::host_name(endpoint);
    let rd = if alone { None } else { super::registrable_domain(&name) };
    let mut keys: Vec<String> = advertised.iter().filter_map(|d| super::user_domain_key(d)).collect();
    keys.sort();
    keys.dedup();
    let mut out = DomainProofs::default();
    let mut need_examples = Vec::new();
    for (n, d) in keys.into_iter().enumerate() {
        if n >= MAX_ADVERTISED {
            out.unproven
                .push((d, format!("more than {MAX_ADVERTISED} user domains advertised; the rest are not considered")));
            continue;
        }
        if let Some(rd) = rd.as_deref().filter(|rd| under(&d, rd)) {
            out.proven.push(DomainProof {
                host: endpoint.to_owned(),
                domain: d.clone(),
                how: format!("under the host's own registrable domain {rd}"),
                accounts: 0,
                examples: Vec::new(),
                at_ms,
            });
            continue;
        }
        let vouched = store.vouched(endpoint, &d)?;
        if vouched >= PROOF_ACCOUNTS {
            need_examples.push(out.proven.len());
            out.proven.push(DomainProof {
                host: endpoint.to_owned(),
                domain: d.clone(),
                how: format!(
                    "{vouched} account(s) created on the host hold handles under it that verify both ways (the domain's \
                     owner answers for them)"
                ),
                accounts: vouched,
                examples: Vec::new(),
                at_ms,
            });
        } else {
            out.unproven.push((
                d,
                format!(
                    "not proven: not under the host's registrable domain, and {vouched} account(s) created on the host \
                     hold a handle under it that verifies both ways ({PROOF_ACCOUNTS} needed)"
                ),
            ));
        }
    }
    if !need_examples.is_empty() {
        // examples: the first accounts (in DID order) that prove each
        let mut left: usize = need_examples.len() * 2;
        for did in store.accounts_on_host(endpoint, None, EXAMPLE_SCAN)? {
            if left == 0 {
                break;
            }
            let Some(a) = store.assignment(&did)? else { continue };
            let proves = a.proves_domains(&did).into_iter().map(str::to_owned).collect::<Vec<_>>();
            for &i in &need_examples {
                let p = &mut out.proven[i];
                if p.examples.len() < 2 && proves.contains(&p.domain) {
                    let checked = store
                        .identity(&did)?
                        .and_then(|r| r.handle_check)
                        .and_then(|c| crate::clock::rfc3339_ms(c.checked_at_ms));
                    let handle = a.handle.clone().unwrap_or_default();
                    p.examples.push(match checked {
                        Some(t) => format!("{did} ({handle}, verified {t})"),
                        None => format!("{did} ({handle})"),
                    });
                    left -= 1;
                }
            }
        }
    }
    Ok(out)
}

/// Whether a project record counts: its commit's signature is known to be
/// valid (when it arrived, or now that the signer's key is known).
pub fn signature_holds(store: &Store, did: &str, rec: &store::StoredRecord) -> store::Result<bool> {
    match &rec.sig {
        None => Ok(false),
        Some(s) => crate::identity::verify::record_signature_holds(store, did, s),
    }
}

/// Re-clusters the hosts and rewrites `instances`, `host_instance` and
/// `declarations`; a host whose instance changed is a dated `host_moves` row.
///
/// Evidence is proven, never self-asserted: an advertised user domain
/// links hosts only where the host is proven to issue handles there
/// ([`prove_domains`]); a declaration claims a host or domain only with
/// proof from that side ([`declaration::verify`]) and counts only once its
/// signature is known to be valid; two operators' verified declarations
/// in one instance are a conflict (no operator); instances keep their ids
/// ([`super::keep_ids`]).
pub fn refresh(store: &Store, overrides: &Overrides) -> store::Result<StructureSummary> {
    let now = crate::clock::now_ms();
    let members = store.host_members()?;
    let mut facts: BTreeMap<String, HostFacts> = BTreeMap::new();
    let mut proofs: HashMap<String, HostProof> = HashMap::new();
    let mut domain_proofs: HashMap<String, DomainProofs> = HashMap::new();
    let mut relay_reported: HashMap<String, i64> = HashMap::new();
    let mut host_states: BTreeMap<String, i64> = BTreeMap::new();
    for (endpoint, h) in store.hosts()? {
        *host_states.entry(h.state.clone()).or_default() += 1;
        if let Some(n) = h.relay.as_ref().and_then(|r| r.account_count) {
            relay_reported.insert(endpoint.clone(), n);
        }
        let observed_at_ms = h.last_ok_ms.unwrap_or(h.first_seen_ms);
        let advertised = h.describe.as_ref().map(|d| d.available_user_domains.clone()).unwrap_or_default();
        let dp = prove_domains(store, &endpoint, &advertised, observed_at_ms)?;
        let proven: Vec<String> = dp.proven.iter().map(|p| p.domain.clone()).collect();
        proofs.insert(
            endpoint.clone(),
            HostProof {
                did: h.describe.as_ref().and_then(|d| d.did.clone()),
                contact_email: h.describe.as_ref().and_then(|d| d.contact_email.clone()),
                user_domains: proven.clone(),
            },
        );
        domain_proofs.insert(endpoint.clone(), dp);
        facts.insert(
            endpoint.clone(),
            HostFacts { endpoint, user_domains: proven, observed_at_ms, declared_by: Vec::new() },
        );
    }
    for st in ["pending", "online", "offline"] {
        crate::metrics::HOSTS_BY_STATE.with_label_values(&[st]).set(host_states.get(st).copied().unwrap_or(0));
    }
    // every host with members is a host of the map
    for h in members.keys() {
        facts.entry(h.clone()).or_insert_with(|| HostFacts { endpoint: h.clone(), ..HostFacts::default() });
    }
    // declarations: verify each claim, mark the hosts of verified ones
    let mut statuses = Vec::new();
    let mut governance: BTreeMap<String, Declaration> = BTreeMap::new();
    let mut claims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut decls: Vec<(String, Declaration, bool)> = Vec::new();
    for (operator, _rkey, rec) in store.stored_records(DECLARATION)? {
        let Ok(json) = crate::repo::cbor::to_json(&rec.record) else { continue };
        let Ok(decl) = serde_json::from_value::<Declaration>(json) else { continue };
        let signed = signature_holds(store, &operator, &rec)?;
        decls.push((operator, decl, signed));
    }
    // the other side of each delegation: signed declarations' moderatesFor
    let moderates: HashMap<&str, &[String]> =
        decls.iter().filter(|d| d.2).map(|(op, d, _)| (op.as_str(), d.moderates_for.as_slice())).collect();
    for (operator, decl, signed) in &decls {
        let (operator, signed) = (operator.clone(), *signed);
        let handle =
            store.identity(&operator)?.and_then(|r| r.handle_check).filter(|c| c.verified).map(|c| c.handle.clone());
        let mut status = declaration::verify(&operator, decl, handle.as_deref(), signed, &proofs);
        declaration::confirm_delegation(&mut status, decl, signed, &moderates);
        let decl = decl.clone();
        if !status.verified_hosts.is_empty() {
            governance.insert(operator.clone(), decl.clone());
        }
        for claim in status.verified_hosts.iter().chain(status.unverified.iter().map(|(c, _)| c)) {
            claims.entry(claim.clone()).or_default().insert(operator.clone());
        }
        for h in &status.verified_hosts {
            let f = facts.entry(h.clone()).or_insert_with(|| HostFacts { endpoint: h.clone(), ..HostFacts::default() });
            f.declared_by.push((operator.clone(), decl.name.clone()));
        }
        statuses.push(status);
    }
    let facts: Vec<HostFacts> = facts.into_values().collect();
    let registered = |h: &str| members.get(h).and_then(|m| m.get(assign::bucket::REGISTERED)).copied().unwrap_or(0);
    let mut previous = store.host_instances()?;
    let keep = super::Previous {
        weight: previous.keys().map(|h| (h.clone(), registered(h))).collect(),
        ids: previous.clone(),
    };
    let instances = super::cluster_keeping(&facts, overrides, &keep);
    let mut host_index: HashMap<&str, usize> = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        for h in &inst.hosts {
            host_index.insert(h.as_str(), i);
        }
    }
    let mut summary = StructureSummary { hosts: facts.len(), instances: instances.len(), ..Default::default() };
    // memberships count two-sided: the operator's declaration must have
    // verified and cover the member's current host or its verified handle,
    // and the membership's own signature must hold; counted in the
    // instance of the operator's verified hosts
    let mut declared: Vec<u64> = vec![0; instances.len()];
    let verified: HashMap<&str, &DeclarationStatus> =
        statuses.iter().filter(|s| !s.verified_hosts.is_empty()).map(|s| (s.operator.as_str(), s)).collect();
    for (member, _rkey, rec) in store.stored_records(MEMBERSHIP)? {
        let Ok(json) = crate::repo::cbor::to_json(&rec.record) else { continue };
        let Ok(m) = serde_json::from_value::<Membership>(json) else { continue };
        summary.memberships += 1;
        let Some(st) = verified.get(m.operator.as_str()) else { continue };
        if !signature_holds(store, &member, &rec)? {
            continue;
        }
        // everything about the member in one read
        let view = store.account_view(&member)?;
        let pds = assign::current_pds(view.plc.as_ref(), view.identity.as_ref()).ok();
        let handle = view.identity.and_then(|r| r.handle_check).filter(|c| c.verified).map(|c| c.handle);
        let by_host = pds.as_ref().is_some_and(|p| st.verified_hosts.contains(p));
        let by_handle = handle.as_deref().is_some_and(|h| st.verified_domains.iter().any(|d| under(h, d)));
        if by_host || by_handle {
            summary.verified_memberships += 1;
            if let Some(&i) = st.verified_hosts.first().and_then(|h| host_index.get(h.as_str())) {
                declared[i] += 1;
            }
        }
    }
    let mut out = Structure::default();
    for (i, inst) in instances.iter().enumerate() {
        let distinct: BTreeSet<&str> = inst.operators.iter().map(|(op, _)| op.as_str()).collect();
        let (operator, conflict) = match distinct.len() {
            0 => (None, Vec::new()),
            1 => (distinct.iter().next().map(|s| (*s).to_owned()), Vec::new()),
            _ => (None, distinct.iter().map(|s| (*s).to_owned()).collect()),
        };
        let mut stored_members = BTreeMap::new();
        if declared[i] > 0 && conflict.is_empty() {
            stored_members.insert("declared_members".to_owned(), declared[i]);
        }
        let relay: i64 = inst.hosts.iter().filter_map(|h| relay_reported.get(h)).sum();
        if relay > 0 {
            stored_members.insert("relay_reported".to_owned(), relay as u64);
        }
        let claimed_by: BTreeSet<String> = inst.hosts.iter().filter_map(|h| claims.get(h)).flatten().cloned().collect();
        let (mut proven, mut unproven) = (Vec::new(), Vec::new());
        for h in &inst.hosts {
            if let Some(dp) = domain_proofs.get(h) {
                proven.extend(dp.proven.iter().cloned());
                unproven.extend(dp.unproven.iter().map(|(d, why)| (h.clone(), d.clone(), why.clone())));
            }
        }
        let rec = InstanceRecord {
            governance: operator.as_ref().and_then(|op| governance.get(op).cloned()),
            operator,
            conflict,
            claimed_by: claimed_by.into_iter().collect(),
            id: inst.id.clone(),
            anchor: inst.anchor.clone(),
            name: inst.name.clone(),
            hosts: inst.hosts.clone(),
            user_domains: inst.user_domains.clone(),
            registrable_domains: inst.registrable_domains.clone(),
            evidence: inst.evidence.iter().map(evidence_row).collect(),
            domain_proofs: proven,
            unproven_domains: unproven,
            name_refused: inst.name_refused.clone(),
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
