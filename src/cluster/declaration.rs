//! The project's own record types (`lexicons/dev/instancemap/`): an
//! operator's instance declaration and an account's membership record.
//! Records are checked against the lexicon here; a malformed one is a
//! counted reason (`invalid_record/<reason>`), never stored, never a crash.
//! Verifying the claims (does the operator control what it claims?) is the
//! clustering's job and comes later.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

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
            Ok(())
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

/// Every reason [`validate`] can give.
pub const REASONS: &[&str] = &[
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
    /// `availableUserDomains`, as keys.
    pub user_domains: Vec<String>,
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
pub fn verify(
    operator: &str,
    decl: &Declaration,
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
