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
