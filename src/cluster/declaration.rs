//! The project's own record types (`lexicons/dev/instancemap/`): an
//! operator's instance declaration and an account's membership record.
//! Records are checked against the lexicon here; a malformed one is a
//! counted reason (`invalid_record/<reason>`), never stored, never a crash.
//! Verifying the claims (does the operator control what it claims?) is the
//! clustering's job and comes later.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::structure::under;
use crate::types;

/// NSID of the declaration record.
pub const DECLARATION: &str = "dev.instancemap.declaration";
/// NSID of the membership record.
pub const MEMBERSHIP: &str = "dev.instancemap.membership";

pub use crate::store::records::{Declaration, DeclarationStatus, Policies};

/// A membership that passed the lexicon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    pub operator: String,
    pub created_at: String,
}

fn uri(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://")) && s.len() <= 2048 && !s.contains(char::is_whitespace)
}

fn datetime(s: &str) -> bool {
    crate::clock::parse_time_us(s).is_some()
}

fn len_ok(s: &Option<String>, max: usize) -> bool {
    s.as_ref().is_none_or(|s| s.len() <= max)
}

/// Checks a record of one of the project's collections (its JSON form).
/// `Err` is the bounded reason.
pub fn validate(collection: &str, rkey: &str, record: &serde_json::Value) -> Result<(), &'static str> {
    if rkey != "self" {
        return Err("rkey_not_self");
    }
    match collection {
        DECLARATION => {
            let d: Declaration = serde_json::from_value(record.clone()).map_err(|_| "shape")?;
            let graphemes_ish = |s: &str, max: usize| s.chars().count() <= max;
            if d.name.is_empty() || d.name.len() > 640 || !graphemes_ish(&d.name, 64) {
                return Err("name");
            }
            if !len_ok(&d.description, 3000) {
                return Err("description");
            }
            if d.pds_hosts.len() > 100 || !d.pds_hosts.iter().all(|h| uri(h)) {
                return Err("pds_hosts");
            }
            if d.account_domains.len() > 100
                || !d.account_domains.iter().all(|a| a.len() <= 253 && types::is_handle(a.trim_start_matches('.')))
            {
                return Err("account_domains");
            }
            if !len_ok(&d.moderation_contact, 512) || !len_ok(&d.abuse_contact, 512) || !len_ok(&d.jurisdiction, 64) {
                return Err("contact");
            }
            if let Some(p) = &d.policies {
                let all = [&p.terms_of_service, &p.privacy_policy, &p.moderation_policy, &p.community_guidelines];
                if !all.iter().all(|u| u.as_deref().is_none_or(uri)) {
                    return Err("policies");
                }
            }
            if d.labelers.len() > 20 || !d.labelers.iter().all(|l| types::is_did(l)) {
                return Err("labelers");
            }
            if !datetime(&d.created_at) {
                return Err("created_at");
            }
            validate_second_version(&d)
        }
        MEMBERSHIP => {
            let m: Membership = serde_json::from_value(record.clone()).map_err(|_| "shape")?;
            if !types::is_did(&m.operator) {
                return Err("operator");
            }
            if !datetime(&m.created_at) {
                return Err("created_at");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A service reference: `did#fragment` (proposal 0013).
pub fn is_service_ref(s: &str) -> bool {
    let Some((did, frag)) = s.split_once('#') else { return false };
    s.len() <= 2048
        && types::is_did(did)
        && !frag.is_empty()
        && frag.len() <= 64
        && frag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~:-".contains(&b))
}

use crate::types::is_email;

/// A report reason code: `nsid#name` (`tools.ozone.report.defs#reasonMisleadingSpam`).
pub fn is_reason_type(s: &str) -> bool {
    let Some((nsid, name)) = s.split_once('#') else { return false };
    s.len() <= 256 && types::is_nsid(nsid) && !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The second version's fields (all optional; a first-version record has
/// none of them).
fn validate_second_version(d: &Declaration) -> Result<(), &'static str> {
    if d.service_name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 640 || n.chars().count() > 64) {
        return Err("service_name");
    }
    if ![&d.home_url, &d.support_url, &d.logo_url].iter().all(|u| u.as_deref().is_none_or(uri)) {
        return Err("links");
    }
    if d.contacts.len() > 20 {
        return Err("contacts");
    }
    for c in &d.contacts {
        let reachable = c.email.is_some() || c.url.is_some() || c.account.is_some();
        let account_ok = c.account.as_deref().is_none_or(|a| types::is_did(a) || types::is_handle(a));
        if crate::store::records::contact_role(&c.role).is_none()
            || !reachable
            || !c.email.as_deref().is_none_or(is_email)
            || !c.url.as_deref().is_none_or(uri)
            || !account_ok
        {
            return Err("contacts");
        }
    }
    if d.moderation_service.as_deref().is_some_and(|m| !is_service_ref(m)) {
        return Err("moderation_service");
    }
    if d.moderates_for.len() > 100 || !d.moderates_for.iter().all(|o| types::is_did(o)) {
        return Err("moderates_for");
    }
    if d.abuse_notice_authorities.len() > 50
        || !d.abuse_notice_authorities.iter().all(|a| types::is_did(a) || is_service_ref(a))
    {
        return Err("authorities");
    }
    if d.routes.len() > 50 {
        return Err("routes");
    }
    let roles: Vec<&str> = d.contacts.iter().filter_map(|c| crate::store::records::contact_role(&c.role)).collect();
    for r in &d.routes {
        let target_ok = match (&r.contact, &r.service) {
            (Some(c), None) => crate::store::records::contact_role(c).is_some_and(|c| roles.contains(&c)),
            (None, Some(s)) => is_service_ref(s),
            _ => false,
        };
        if !target_ok
            || r.reason_types.len() > 64
            || !r.reason_types.iter().all(|t| is_reason_type(t))
            || r.subject_types.len() > 8
            || !r
                .subject_types
                .iter()
                .all(|t| !t.is_empty() && t.len() <= 32 && t.bytes().all(|b| b.is_ascii_alphabetic()))
            || r.subject_collections.len() > 64
            || !r.subject_collections.iter().all(|c| types::is_nsid(c))
        {
            return Err("routes");
        }
    }
    Ok(())
}

/// Every reason [`validate`] can give.
pub const REASONS: &[&str] = &[
    "service_name",
    "links",
    "contacts",
    "moderation_service",
    "moderates_for",
    "authorities",
    "routes",
    "rkey_not_self",
    "shape",
    "name",
    "description",
    "pds_hosts",
    "account_domains",
    "contact",
    "policies",
    "labelers",
    "created_at",
    "operator",
];
// ---------------------------------------------------------------- verifying the claims

/// What a host shows that can prove who runs it.
#[derive(Debug, Clone, Default)]
pub struct HostProof {
    /// `describeServer`'s `did`.
    pub did: Option<String>,
    /// `describeServer`'s contact email.
    pub contact_email: Option<String>,
    /// The user domains the host is proven to issue handles under (keys).
    pub user_domains: Vec<String>,
}

/// Checks a declaration's claims against what the operator demonstrably
/// controls: a claim counts only with proof from the side claimed.
///
/// Nothing counts unless the declaration's signature is known to be valid
/// (`signed`). Then a claimed **host** counts when
/// 1. its `describeServer` `did` is the operator's DID (the host says so;
///    this proves that one host and nothing else), or
/// 2. the operator's verified handle *is* a registrable domain (an apex
///    handle: its DNS or web root answers for the operator, which only the
///    domain's owner can make it do) and that is the host's registrable
///    domain, or
/// 3. the host's `describeServer` contact email is at that apex domain or
///    under it (the host names a contact at the domain the operator owns).
///
/// A handle under a domain (`alice.bsky.social`) proves nothing about the
/// domain: its provider answers for every user's handle. A claimed
/// **account domain** counts when it is the operator's apex domain or
/// under it, or a verified host of the declaration is proven to issue
/// handles under it (not merely advertising it).
pub fn verify(
    operator: &str,
    decl: &Declaration,
    verified_handle: Option<&str>,
    signed: bool,
    hosts: &HashMap<String, HostProof>,
) -> DeclarationStatus {
    let mut st = DeclarationStatus { operator: operator.to_owned(), name: decl.name.clone(), ..Default::default() };
    if !signed {
        let why = "the declaration's signature is not known to be valid yet (no signing key known for the operator \
                   when it arrived; it counts once the key is known and the signature verifies)";
        for claim in &decl.pds_hosts {
            let host = crate::identity::did::normalize_endpoint(claim).unwrap_or_else(|_| claim.clone());
            st.unverified.push((host, why.into()));
        }
        for claim in &decl.account_domains {
            st.unverified.push((claim.clone(), why.into()));
        }
        return st;
    }
    let apex = verified_handle.filter(|h| super::registrable_domain(h).as_deref() == Some(*h));
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
        } else if !alone && apex.is_some() && super::registrable_domain(&name).as_deref() == apex {
            Some("the operator's verified handle is the host's registrable domain")
        } else if let (Some(a), Some(e)) = (apex, email_domain.as_deref()) {
            under(e, a)
                .then_some("the host's describeServer contact is at the domain the operator's verified handle is")
        } else {
            None
        };
        match how {
            Some(how) => {
                st.verified_hosts.push(host.clone());
                st.proofs.push((host, how.into()));
            }
            None => {
                let why = match (proof, apex) {
                    (None, _) => "host not crawled yet (no describeServer), and the operator's verified handle is not its registrable domain",
                    (Some(_), None) => "the host's describeServer does not name the operator, and the operator has no verified handle that is a registrable domain",
                    (Some(_), Some(_)) => "the host's describeServer names neither the operator's DID nor a contact at its domain, and the operator's handle is not the host's registrable domain",
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
        let proven = st.verified_hosts.iter().any(|h| hosts.get(h).is_some_and(|p| p.user_domains.contains(&d)));
        let owned = apex.is_some_and(|a| under(&d, a));
        if proven || owned {
            st.verified_domains.push(d);
        } else {
            st.unverified.push((
                claim.clone(),
                "no verified host of the declaration is proven to issue handles under it, and it is not under the \
                 operator's verified apex-domain handle"
                    .into(),
            ));
        }
    }
    st
}

/// Counts a declaration's delegations (its `moderationService`, and each
/// service its routes send reports to) only where that service's own
/// signed declaration names the operator in `moderatesFor`: a claim for
/// another party counts when that party confirms.
pub fn confirm_delegation(
    st: &mut DeclarationStatus,
    decl: &Declaration,
    signed: bool,
    moderates: &HashMap<&str, &[String]>,
) {
    let mut services: Vec<&String> = decl.moderation_service.iter().collect();
    for r in &decl.routes {
        if let Some(s) = &r.service {
            if !services.contains(&s) {
                services.push(s);
            }
        }
    }
    for service in services {
        let delegate = service.split('#').next().unwrap_or_default();
        if !signed {
            st.unverified.push((service.clone(), "the declaration's signature is not known to be valid yet".into()));
        } else if delegate == st.operator {
            st.confirmed.push((service.clone(), "the operator's own service".into()));
        } else if moderates.get(delegate).is_some_and(|ops| ops.contains(&st.operator)) {
            st.confirmed
                .push((service.clone(), format!("{delegate}'s own declaration names the operator in moderatesFor")));
        } else {
            let why = match moderates.get(delegate) {
                Some(_) => format!("{delegate}'s declaration does not name the operator in moderatesFor"),
                None => format!("{delegate} has published no signed declaration naming the operator in moderatesFor"),
            };
            st.unverified.push((service.clone(), why));
        }
    }
}
