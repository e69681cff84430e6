//! Why an account is where the map puts it, in data and in plain words.

use serde::Serialize;

use super::assign::Assignment;
use super::map::{self, InstanceRecord};
use crate::store::{self, Store};

/// The explanation of one account's place.
#[derive(Debug, Clone, Serialize)]
pub struct Why {
    /// `assigned`, or the explicit state (`deleted`, `no_pds`, `unresolved`,
    /// `unclustered`: its host is not in the map yet).
    pub state: String,
    /// Current PDS host, and where that comes from (`plc`: the PLC
    /// directory's state; `resolution`: the last DID document fetched).
    pub host: Option<String>,
    pub host_source: Option<String>,
    /// Since when the account is on this host (RFC 3339).
    pub since: Option<String>,
    pub instance: Option<String>,
    pub instance_name: Option<String>,
    /// The evidence tying the host to its instance: `(kind, value, observed)`.
    pub evidence: Vec<(String, String, Option<String>)>,
    /// The same in plain words.
    pub text: String,
}

/// One evidence row in words.
pub fn evidence_words(kind: &str, value: &str, inst: &InstanceRecord, host: &str) -> String {
    let others = |k: &str, v: &str| {
        let mut hs: Vec<&str> =
            inst.evidence.iter().filter(|e| e.1 == k && e.2 == v && e.0 != host).map(|e| e.0.as_str()).collect();
        hs.sort_unstable();
        hs.dedup();
        hs.len()
    };
    match kind {
        "declaration" => format!("operator {value} declares it in a verified dev.instancemap.declaration record"),
        "user_domain" => {
            format!("its describeServer offers handles under .{value} (as do {} other host(s))", others(kind, value))
        }
        "registrable_domain" => format!("its name is under {value} (as are {} other host(s))", others(kind, value)),
        "host_alone" => "nothing links it to another host, so it is an instance of its own".into(),
        "override" => format!("the operator's overrides file: {value}"),
        _ => format!("{kind} {value}"),
    }
}

/// Explains the account's place under the stored map.
pub fn account(store: &Store, did: &str) -> store::Result<Why> {
    let v = crate::store::StoreReader::account_view(store, did)?;
    let a = assignment_of(&v);
    let inst = match &a.host {
        Some(h) => map::instance_of_host(store, h)?,
        None => None,
    };
    Ok(why(&a, inst.as_ref()))
}

/// An account's assignment: the stored one, or (before the map has taken
/// the account in) the one its records give.
pub fn assignment_of(v: &crate::store::AccountView) -> Assignment {
    match &v.assignment {
        Some(a) => a.clone(),
        None => super::assign::desired(v.plc.as_ref(), v.identity.as_ref(), v.firehose.as_ref()),
    }
}

/// What ties one host to its instance: the evidence rows naming the host,
/// and the same in words (the part of a [`Why`] that depends on the host
/// alone, so a caller can keep it per host).
#[derive(Debug, Clone)]
pub struct HostReasons {
    pub evidence: Vec<(String, String, Option<String>)>,
    pub words: String,
}

/// The evidence tying `host` to `inst`, in data and in words.
pub fn host_reasons(inst: &InstanceRecord, host: &str) -> HostReasons {
    let rows: Vec<&(String, String, String, i64)> = inst.evidence.iter().filter(|e| e.0 == host).collect();
    let words: Vec<String> = rows.iter().map(|e| evidence_words(&e.1, &e.2, inst, host)).collect();
    HostReasons {
        evidence: rows.iter().map(|e| (e.1.clone(), e.2.clone(), crate::clock::rfc3339_ms(e.3))).collect(),
        words: words.join("; and "),
    }
}

/// Explains an assignment under its host's instance (`None`: the host is
/// not in the map yet). Pure: what the caller has read, nothing more.
pub fn why(a: &Assignment, inst: Option<&InstanceRecord>) -> Why {
    why_with(a, inst, None)
}

/// [`why`], with the host's reasons when the caller has them already (they
/// must be [`host_reasons`] of the assignment's host and `inst`).
pub fn why_with(a: &Assignment, inst: Option<&InstanceRecord>, reasons: Option<&HostReasons>) -> Why {
    let since = a.timeline.last().filter(|(_, h)| h.is_some()).and_then(|(t, _)| crate::clock::rfc3339_ms(*t));
    let Some(host) = a.host.clone() else {
        let state = a.reason.clone().unwrap_or_else(|| "unresolved".into());
        let text = match state.as_str() {
            "deleted" => "The account is deleted (its DID is tombstoned), so it belongs to no instance.".to_owned(),
            "no_pds" => "Its DID document names no PDS, so it belongs to no instance.".to_owned(),
            _ => "Its DID has not resolved yet, so its host and instance are unknown.".to_owned(),
        };
        return Why {
            state,
            host: None,
            host_source: None,
            since: None,
            instance: None,
            instance_name: None,
            evidence: vec![],
            text,
        };
    };
    let source_words = match a.source.as_deref() {
        Some("plc") => "the PLC directory's current state of its DID",
        _ => "its DID document as last resolved",
    };
    let Some(inst) = inst else {
        return Why {
            state: "unclustered".into(),
            text: format!("Hosted on {host} (per {source_words}); that host is not in the map yet."),
            host: Some(host),
            host_source: a.source.clone(),
            since,
            instance: None,
            instance_name: None,
            evidence: vec![],
        };
    };
    let made;
    let reasons = match reasons {
        Some(r) => r,
        None => {
            made = host_reasons(inst, &host);
            &made
        }
    };
    let text = format!(
        "Hosted on {host} (per {source_words}{}), which is part of instance {} ({}) because {}.{}",
        since.as_ref().map(|s| format!(", since {s}")).unwrap_or_default(),
        inst.name,
        inst.id,
        reasons.words,
        if inst.hosts.len() > 1 {
            format!(" The instance has {} hosts in all.", inst.hosts.len())
        } else {
            String::new()
        }
    );
    Why {
        state: "assigned".into(),
        host: Some(host),
        host_source: a.source.clone(),
        since,
        instance: Some(inst.id.clone()),
        instance_name: Some(inst.name.clone()),
        evidence: reasons.evidence.clone(),
        text,
    }
}
