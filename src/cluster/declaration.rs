//! The project's own record types (`lexicons/dev/instancemap/`): an
//! operator's instance declaration and an account's membership record.
//! Records are checked against the lexicon here; a malformed one is a
//! counted reason (`invalid_record/<reason>`), never stored, never a crash.
//! Verifying the claims (does the operator control what it claims?) is the
//! clustering's job and comes later.

use serde::{Deserialize, Serialize};

use crate::types;

/// NSID of the declaration record.
pub const DECLARATION: &str = "dev.instancemap.declaration";
/// NSID of the membership record.
pub const MEMBERSHIP: &str = "dev.instancemap.membership";

/// A declaration that passed the lexicon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Declaration {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub pds_hosts: Vec<String>,
    #[serde(default)]
    pub account_domains: Vec<String>,
    #[serde(default)]
    pub moderation_contact: Option<String>,
    #[serde(default)]
    pub abuse_contact: Option<String>,
    #[serde(default)]
    pub policies: Option<Policies>,
    #[serde(default)]
    pub labelers: Vec<String>,
    #[serde(default)]
    pub jurisdiction: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    #[serde(default)]
    pub terms_of_service: Option<String>,
    #[serde(default)]
    pub privacy_policy: Option<String>,
    #[serde(default)]
    pub moderation_policy: Option<String>,
    #[serde(default)]
    pub community_guidelines: Option<String>,
}

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
