//! The XRPC query handlers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiState, DEFAULT_LIMIT, MAX_LIMIT};
use crate::cluster::{explain, history, map, routes};
use crate::store::map::MapReader;
use crate::store::Store;

type Reply = Result<Json<Value>, ApiError>;

/// Results shared by requests: short-lived whole-map lists (lists and
/// summaries are whole-map scans; a few seconds old is fine for them), and
/// decoded instance records checked against the store on every use.
#[derive(Default)]
pub struct Cache {
    instances: Mutex<Option<(Instant, std::sync::Arc<Vec<map::InstanceRecord>>)>>,
    /// Instance records by id, each with the stored bytes it was decoded
    /// from: a reader still makes the point read and decodes only when the
    /// bytes differ, so an answer is never older than the store. Members
    /// are as stored, not summed over the hosts (the lookup does not use
    /// them; `map::instance` sums them).
    records: Mutex<HashMap<String, Decoded>>,
    /// The map's freshness (a scan of the marks), a second old at most.
    freshness: Mutex<Option<(Instant, Value)>>,
    /// The network summary (a scan of every host record and count).
    summary: Mutex<Option<(Instant, Value)>>,
    /// Each host's crawl state (for filtering lists by it).
    host_states: Mutex<Option<(Instant, HostStates)>>,
    /// What a lookup reads about a host, decoded, and contact checks by
    /// key: kept only while the store has taken no write since they were
    /// read (see [`Unchanged`]).
    host_facts: Unchanged<String, std::sync::Arc<HostFacts>>,
    contact_checks: Unchanged<String, Option<crate::store::records::ContactCheck>>,
}

/// Values read from the store, kept while its latest sequence number is the
/// one seen before they were read: any write anywhere (or, following a
/// writer, any write caught up with) drops them all, so an answer built
/// from them is never older than the store.
struct Unchanged<K, V> {
    kept: Mutex<(u64, HashMap<K, V>)>,
}

impl<K, V> Default for Unchanged<K, V> {
    fn default() -> Self {
        Unchanged { kept: Mutex::new((0, HashMap::new())) }
    }
}

/// Entries an [`Unchanged`] keeps at most (it starts over past it).
const MAX_UNCHANGED: usize = 100_000;

impl<K: std::hash::Hash + Eq, V: Clone> Unchanged<K, V> {
    fn get<Q>(&self, store: &Store, key: &Q, make: impl FnOnce() -> Result<V, ApiError>) -> Result<V, ApiError>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let seen = store.sequence();
        {
            let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if kept.0 == seen {
                if let Some(v) = kept.1.get(key) {
                    return Ok(v.clone());
                }
            }
        }
        // read at `seen` or later: kept under `seen`, it is served only
        // while nothing was written since
        let v = make()?;
        // a value made from a memory-only read that missed may rest on a
        // swallowed error: not kept
        if crate::store::deadline::has_missed() {
            return Ok(v);
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        match kept.0.cmp(&seen) {
            // another request kept values of a later write already
            std::cmp::Ordering::Greater => return Ok(v),
            std::cmp::Ordering::Less => *kept = (seen, HashMap::new()),
            std::cmp::Ordering::Equal if kept.1.len() >= MAX_UNCHANGED => kept.1.clear(),
            std::cmp::Ordering::Equal => {}
        }
        kept.1.insert(key.to_owned(), v.clone());
        Ok(v)
    }
}

/// Everything a lookup reads about an account's host: its record and
/// `security.txt`, its instance, and the instance operator's status,
/// verified handle and labelers.
pub(crate) struct HostFacts {
    record: Option<crate::store::records::HostRecord>,
    security_txt: Option<(crate::store::records::SecurityTxt, i64)>,
    instance: Option<std::sync::Arc<map::InstanceRecord>>,
    /// What ties the host to that instance.
    reasons: Option<explain::HostReasons>,
    operator_status: Option<map::DeclarationStatus>,
    operator_handle: Option<String>,
    labelers: Vec<routes::Labeler>,
}

/// Each host's crawl state, by endpoint.
type HostStates = std::sync::Arc<HashMap<String, String>>;

/// How old the cached freshness may be.
const FRESHNESS_FOR: Duration = Duration::from_secs(1);

/// A decoded record and the stored bytes it came from.
type Decoded = (crate::store::map::Encoded<map::InstanceRecord>, std::sync::Arc<map::InstanceRecord>);

const CACHE_FOR: Duration = Duration::from_secs(5);
/// Instance records kept decoded at most (the cache starts over past it).
const MAX_RECORDS: usize = 200_000;

/// The value in `slot` if younger than `max_age`, else `make`'s, kept.
fn cached<T: Clone>(
    slot: &Mutex<Option<(Instant, T)>>,
    max_age: Duration,
    make: impl FnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut c = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, v)) = &*c {
        if at.elapsed() < max_age {
            return Ok(v.clone());
        }
    }
    let v = make()?;
    // a value made from a memory-only read that missed may rest on a
    // swallowed error: it is thrown away, so it is not kept either
    if !crate::store::deadline::has_missed() {
        *c = Some((Instant::now(), v.clone()));
    }
    Ok(v)
}

impl Cache {
    pub(crate) fn instances(&self, store: &Store) -> Result<std::sync::Arc<Vec<map::InstanceRecord>>, ApiError> {
        cached(&self.instances, CACHE_FOR, || Ok(std::sync::Arc::new(map::instances(store)?)))
    }

    pub(crate) fn summary(
        &self,
        store: &Store,
        networks: Option<&crate::hosts::network::Networks>,
    ) -> Result<Value, ApiError> {
        cached(&self.summary, CACHE_FOR, || summary(store, networks))
    }

    fn host_states(&self, store: &Store) -> Result<HostStates, ApiError> {
        cached(&self.host_states, CACHE_FOR, || {
            let states = crate::store::StoreReader::hosts(store)?.into_iter().map(|(h, r)| (h, r.state)).collect();
            Ok(std::sync::Arc::new(states))
        })
    }

    /// Whether the map has taken in everything the database holds, as the
    /// `map` property of an answer: `current`, `pendingAccounts`,
    /// `structurePending`, and a `note` in words when it is not current (an
    /// answer from a map with pending work says so).
    pub(crate) fn freshness(&self, store: &Store) -> Result<Value, ApiError> {
        cached(&self.freshness, FRESHNESS_FOR, || {
            let f = map::freshness(store)?;
            let mut v = json!({"current": f.is_current(), "pendingAccounts": f.pending_accounts,
            "structurePending": f.structure_pending});
            if let Some(n) = f.note() {
                v["note"] = json!(n);
            }
            if let Some(at) = f.recompute_interrupted_ms {
                v["recomputeInterruptedAt"] = ms_str(Some(at));
            }
            Ok(v)
        })
    }

    /// What a lookup reads about `host` (see [`HostFacts`]).
    fn host_facts(&self, store: &Store, host: &str) -> Result<std::sync::Arc<HostFacts>, ApiError> {
        self.host_facts.get(store, host, || {
            let instance = self.instance_of_host(store, host)?;
            let (mut operator_status, mut operator_handle, mut labelers) = (None, None, Vec::new());
            if let Some(op) = instance.as_ref().and_then(|i| i.operator.as_ref()) {
                operator_status = map::declaration_status(store, op)?;
                if let Some(g) = instance.as_ref().and_then(|i| i.governance.as_ref()) {
                    operator_handle = map::assignment(store, op)?.and_then(|a| a.handle.filter(|_| a.handle_verified));
                    labelers = g.labelers.iter().map(|l| labeler_scope(store, l)).collect::<Result<_, _>>()?;
                }
            }
            Ok(std::sync::Arc::new(HostFacts {
                record: crate::hosts::get(store, host)?,
                security_txt: self.security_txt(store, host)?,
                reasons: instance.as_deref().map(|i| explain::host_reasons(i, host)),
                instance,
                operator_status,
                operator_handle,
                labelers,
            }))
        })
    }

    /// A contact check by key (see [`crate::hosts::contacts`]).
    fn contact_check(&self, store: &Store, key: &str) -> Result<Option<crate::store::records::ContactCheck>, ApiError> {
        self.contact_checks.get(store, key, || Ok(crate::store::StoreReader::contact_check(store, key)?))
    }

    /// The `security.txt` found at `origin`, with when it was fetched.
    fn security_txt(
        &self,
        store: &Store,
        origin: &str,
    ) -> Result<Option<(crate::store::records::SecurityTxt, i64)>, ApiError> {
        let key = crate::hosts::contacts::security_txt_key(origin);
        Ok(self.contact_check(store, &key)?.and_then(|c| c.security_txt.map(|t| (t, c.checked_at_ms))))
    }

    /// A host's instance record, without summed members (see `records`).
    fn instance_of_host(
        &self,
        store: &Store,
        host: &str,
    ) -> Result<Option<std::sync::Arc<map::InstanceRecord>>, ApiError> {
        let Some(id) = map::instance_id_of_host(store, host)? else { return Ok(None) };
        let Some(bytes) = store.instance_encoded(&id)? else { return Ok(None) };
        {
            let c = self.records.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((b, r)) = c.get(&id) {
                if *b == bytes {
                    return Ok(Some(r.clone()));
                }
            }
        }
        let rec = std::sync::Arc::new(bytes.decode()?);
        let mut c = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= MAX_RECORDS {
            c.clear();
        }
        c.insert(id, (bytes, rec.clone()));
        Ok(Some(rec))
    }
}

/// Query parameters, parsed by us so every error is JSON.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(raw: Option<String>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut m = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(ApiError::bad(format!("unknown parameter {k:?} (allowed: {})", allowed.join(", "))));
            }
            if m.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ApiError::bad(format!("parameter {k:?} given twice")));
            }
        }
        Ok(Params(m))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn required(&self, k: &str) -> Result<&str, ApiError> {
        self.get(k).ok_or_else(|| ApiError::bad(format!("parameter {k:?} is required")))
    }
    fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(format!("limit must be an integer from 1 to {MAX_LIMIT}"))),
            },
        }
    }
    fn int(&self, k: &str) -> Result<Option<u64>, ApiError> {
        self.get(k)
            .map(|s| s.parse::<u64>().map_err(|_| ApiError::bad(format!("{k} must be a non-negative integer"))))
            .transpose()
    }
    fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::bad(format!("{k} must be true or false"))),
        }
    }
    fn day(&self, k: &str) -> Result<Option<String>, ApiError> {
        self.get(k)
            .map(|s| {
                crate::clock::parse_day_or_time(s)
                    .map(crate::clock::day)
                    .ok_or_else(|| ApiError::bad(format!("{k} must be a date (YYYY-MM-DD) or an RFC 3339 time")))
            })
            .transpose()
    }
    /// An offset cursor (opaque to clients).
    fn offset(&self) -> Result<usize, ApiError> {
        match self.get("cursor") {
            None => Ok(0),
            Some(c) => c.parse::<usize>().map_err(|_| ApiError::bad("cursor is not one this server issued")),
        }
    }
}

fn page<T: serde::Serialize>(items: &[T], offset: usize, limit: usize) -> (Vec<&T>, Option<String>) {
    let end = offset.saturating_add(limit).min(items.len());
    let slice: Vec<&T> = items.get(offset.min(items.len())..end).unwrap_or_default().iter().collect();
    let cursor = (end < items.len()).then(|| end.to_string());
    (slice, cursor)
}

fn ms_str(ms: Option<i64>) -> Value {
    ms.and_then(crate::clock::rfc3339_ms).map_or(Value::Null, Value::String)
}

// ---------------------------------------------------------------- lookup

/// What a subject names.
#[derive(Debug, PartialEq, Eq)]
pub enum Subject {
    Did(String),
    Handle(String),
    Uri { authority: String, collection: Option<String>, rkey: Option<String> },
}

/// Parses a DID, a handle or an `at://` URI, saying which rule failed.
pub fn parse_subject(s: &str) -> Result<Subject, String> {
    use crate::types::{is_did, is_handle, is_nsid, is_record_key};
    if let Some(rest) = s.strip_prefix("at://") {
        let mut parts = rest.splitn(3, '/');
        let authority = parts.next().unwrap_or_default();
        let collection = parts.next().filter(|c| !c.is_empty());
        let rkey = parts.next().filter(|r| !r.is_empty());
        if !(is_did(authority) || is_handle(&authority.to_ascii_lowercase())) {
            return Err("the at:// URI's authority is neither a DID nor a handle".into());
        }
        if let Some(c) = collection {
            if !is_nsid(c) {
                return Err("the at:// URI's collection is not an NSID".into());
            }
        }
        if let Some(r) = rkey {
            if !is_record_key(r) || r.contains('/') {
                return Err("the at:// URI's record key is not a valid record key".into());
            }
        }
        return Ok(Subject::Uri {
            authority: authority.to_owned(),
            collection: collection.map(str::to_owned),
            rkey: rkey.map(str::to_owned),
        });
    }
    if s.starts_with("did:") {
        return if is_did(s) {
            Ok(Subject::Did(s.to_owned()))
        } else {
            Err("not a valid DID (atproto DID syntax)".into())
        };
    }
    let h = s.strip_prefix('@').unwrap_or(s).to_ascii_lowercase();
    if is_handle(&h) {
        Ok(Subject::Handle(h))
    } else {
        Err("not a DID, a handle or an at:// URI (handle syntax: DNS name with a TLD)".into())
    }
}

fn did_of(store: &Store, authority: &str) -> Result<String, ApiError> {
    if authority.starts_with("did:") {
        return Ok(authority.to_owned());
    }
    let h = authority.to_ascii_lowercase();
    match map::dids_of_handle(store, &h)?.first() {
        Some((d, _)) => Ok(d.clone()),
        None => Err(ApiError::not_found("HandleNotFound", format!("no account with handle {h} is known"))),
    }
}

/// `dev.instancemap.lookup`: who is responsible for a DID, handle or record.
pub async fn lookup(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q, &["subject", "reason"])?;
    let subject = p.required("subject")?.to_owned();
    let parsed = parse_subject(&subject).map_err(|why| ApiError::bad(format!("subject {subject:?}: {why}")))?;
    let reason = p
        .get("reason")
        .map(routes::Reason::parse)
        .transpose()
        .map_err(|why| ApiError::bad(format!("reason: {why}")))?;
    st.read(move |st| lookup_answer(&st.store, &st.cache, &subject, &parsed, reason.as_ref()).map(Json)).await
}

/// The whole `lookup` answer for a parsed subject (also the CLI's
/// `lookup`): the responsibility of its DID, what was asked, and the map's
/// freshness.
pub fn lookup_answer(
    store: &Store,
    cache: &Cache,
    subject: &str,
    parsed: &Subject,
    reason: Option<&routes::Reason>,
) -> Result<Value, ApiError> {
    let (did, record) = match parsed {
        Subject::Did(d) => (d.clone(), None),
        Subject::Handle(h) => (did_of(store, h)?, None),
        Subject::Uri { authority, collection, rkey } => {
            let rec = json!({"collection": collection, "rkey": rkey});
            (did_of(store, authority)?, Some(rec))
        }
    };
    let about = match parsed {
        Subject::Uri { collection: Some(c), .. } => routes::Subject::Record { collection: c.clone() },
        _ => routes::Subject::Account,
    };
    let mut v = responsibility(store, cache, &did, reason, &about)?;
    v["subject"] = json!(subject);
    v["subjectType"] = json!(match parsed {
        Subject::Did(_) => "did",
        Subject::Handle(_) => "handle",
        Subject::Uri { .. } => "at-uri",
    });
    if let Some(r) = record {
        v["record"] = r;
    }
    v["map"] = cache.freshness(store)?;
    Ok(v)
}

/// The responsibility answer for one DID (404 when nothing is known), with
/// the routes for `reason` (every reason the operator routes, grouped,
/// when `None`).
pub fn responsibility(
    store: &Store,
    cache: &Cache,
    did: &str,
    reason: Option<&routes::Reason>,
    about: &routes::Subject,
) -> Result<Value, ApiError> {
    // everything about the DID in one read
    let view = crate::store::StoreReader::account_view(store, did)?;
    if !view.is_known() {
        return Err(ApiError::not_found(
            "AccountNotFound",
            format!("{did} is not known: not in the PLC export loaded, never resolved, never seen on the firehose"),
        ));
    }
    let a = explain::assignment_of(&view);
    let crate::store::AccountView { plc, identity: res, firehose: acct, .. } = view;
    let facts = match &a.host {
        Some(h) => Some(cache.host_facts(store, h)?),
        None => None,
    };
    let instance = facts.as_ref().and_then(|f| f.instance.clone());
    let why = explain::why_with(&a, instance.as_deref(), facts.as_ref().and_then(|f| f.reasons.as_ref()));
    let mut entities = Vec::new();
    let mut inst_json = Value::Null;
    let mut hosting: Option<routes::Hosting> = None;
    let mut operator: Option<(String, crate::store::records::Declaration, Option<map::DeclarationStatus>, i64)> = None;
    let mut labelers: Vec<routes::Labeler> = Vec::new();
    let mut registrant = None;
    if let (Some(host), Some(facts)) = (&a.host, facts.as_deref()) {
        let h = facts.record.as_ref();
        let d = h.and_then(|h| h.describe.as_ref());
        hosting = Some(routes::Hosting {
            endpoint: host.clone(),
            contact_email: d.and_then(|d| d.contact_email.clone()),
            checked_at_ms: h.and_then(|h| h.last_checked_ms),
            security_txt: facts.security_txt.clone(),
        });
        entities.push(json!({
            "roles": ["hosting"],
            "kind": "pds",
            "endpoint": host,
            "serviceDid": d.and_then(|d| d.did.clone()),
            "contact": {"email": d.and_then(|d| d.contact_email.clone())},
            "links": {
                "privacyPolicy": d.and_then(|d| d.privacy_policy.clone()),
                "termsOfService": d.and_then(|d| d.terms_of_service.clone()),
            },
            "state": h.map(|h| h.state.clone()),
            "source": "com.atproto.server.describeServer of the host; the host from the account's DID document",
            "evidence": [{
                "kind": "did_document",
                "value": format!("the account's {} names this PDS", if a.source.as_deref() == Some("plc") { "PLC directory state" } else { "resolved DID document" }),
                "observedAt": ms_str(match a.source.as_deref() {
                    Some("plc") => plc.as_ref().and_then(|p| crate::clock::parse_time_us(&p.updated_at)).map(|us| us / 1000),
                    _ => res.as_ref().and_then(|r| r.resolved_at_ms),
                }),
            }],
            "lastChecked": ms_str(h.and_then(|h| h.last_checked_ms)),
        }));
        if let Some(inst) = &instance {
            let op_status = &facts.operator_status;
            if let (Some(op), Some(g)) = (&inst.operator, &inst.governance) {
                let op_handle = &facts.operator_handle;
                // a declared name refused as an imitation is not repeated
                // as the operator's name
                let name = if inst.name_refused.is_some() { None } else { Some(&g.name) };
                entities.push(json!({
                    "roles": ["operator"],
                    "did": op,
                    "handle": op_handle,
                    "name": name,
                    "declaredNameRefused": inst.name_refused.as_ref().map(|(n, why)| json!({"name": n, "why": why})),
                    "moderationContact": g.moderation_contact,
                    "abuseContact": g.abuse_contact.clone().or_else(|| g.first_contact("abuse")),
                    "contacts": g.contacts,
                    "serviceName": g.service_name,
                    "homeUrl": g.home_url,
                    "supportUrl": g.support_url,
                    "logoUrl": g.logo_url,
                    "moderationService": g.moderation_service,
                    "policies": g.policies,
                    "jurisdiction": g.jurisdiction,
                    "source": format!("at://{op}/{}/self", crate::cluster::declaration::DECLARATION),
                    "evidence": op_status.as_ref().map(|s| s.proofs.iter().map(|(h, how)| json!({"kind": "declaration_proof", "host": h, "value": how})).collect::<Vec<_>>()).unwrap_or_default(),
                    "lastChecked": ms_str(Some(inst.computed_at_ms)),
                }));
                operator = Some((op.clone(), g.clone(), op_status.clone(), inst.computed_at_ms));
                labelers.clone_from(&facts.labelers);
                for l in &g.labelers {
                    entities.push(json!({
                        "roles": ["labeler"],
                        "did": l,
                        "source": format!("at://{op}/{}/self", crate::cluster::declaration::DECLARATION),
                        "evidence": [{"kind": "declared", "value": "listed in the operator's verified declaration"}],
                        "lastChecked": ms_str(Some(inst.computed_at_ms)),
                    }));
                }
            }
            inst_json = json!({
                "id": inst.id,
                "name": inst.name,
                "hosts": inst.hosts.len(),
                "operator": inst.operator,
                "evidence": why.evidence,
            });
        }
    }
    // the handle registrant, for custom-domain handles
    if let (Some(handle), true) = (&a.handle, a.handle_verified) {
        let provider =
            facts.as_ref().and_then(|f| f.record.as_ref()).and_then(|r| r.describe.as_ref()).is_some_and(|d| {
                d.available_user_domains
                    .iter()
                    .filter_map(|d| crate::cluster::user_domain_key(d))
                    .any(|d| handle.ends_with(&format!(".{d}")))
            });
        if !provider {
            let check = res.as_ref().and_then(|r| r.handle_check.as_ref());
            registrant = Some((
                crate::cluster::registrable_domain(handle).unwrap_or_else(|| handle.clone()),
                handle.clone(),
                check.map(|c| c.checked_at_ms),
            ));
            entities.push(json!({
                "roles": ["registrant"],
                "domain": crate::cluster::registrable_domain(handle).unwrap_or_else(|| handle.clone()),
                "handle": handle,
                "source": format!("handle verified both ways by {}", check.and_then(|c| c.method.clone()).unwrap_or_else(|| "dns or https".into())),
                "evidence": [{"kind": "handle_check", "value": "the domain publishes this DID for the handle (_atproto TXT or /.well-known/atproto-did)"}],
                "lastChecked": ms_str(check.map(|c| c.checked_at_ms)),
            }));
        }
    }
    let mut explanation = why.text.clone();
    if let Some(e) = entities.iter().find(|e| e["roles"][0] == "operator") {
        explanation.push_str(&format!(
            " Its operator {} declares moderation contact {} and abuse contact {}.",
            e["did"].as_str().unwrap_or_default(),
            e["moderationContact"].as_str().unwrap_or("(none)"),
            e["abuseContact"].as_str().unwrap_or("(none)")
        ));
    } else if a.host.is_some() {
        explanation.push_str(" No verified operator declaration covers it; the hosting entity's describeServer contact is the way to reach it.");
    }
    let registrant_security_txt = match &registrant {
        Some((domain, _, _)) => cache.security_txt(store, &format!("https://{domain}"))?,
        None => None,
    };
    let now = crate::clock::now_ms();
    let parties = routes::Parties {
        registrant_security_txt,
        now_ms: now,
        operator: operator.as_ref().map(|(op, decl, status, at)| routes::Operator {
            did: op,
            decl,
            status: status.as_ref(),
            runs_host: a.host.as_ref().is_some_and(|h| status.as_ref().is_some_and(|s| s.verified_hosts.contains(h))),
            checked_at_ms: Some(*at),
        }),
        hosting,
        registrant,
        labelers,
    };
    // the account's status as each observer reports it, kept apart
    let pds = crate::store::StoreReader::pds_view(store, did)?.filter(|p| a.host.as_deref() == Some(p.host.as_str()));
    let relay = acct.as_ref().and_then(|s| s.active.map(|act| (act, s.status_label())));
    let tombstoned = plc.as_ref().is_some_and(|p| p.tombstoned);
    let observers = json!({
        "pds": pds.as_ref().map(|p| json!({"host": p.host, "active": p.active, "status": p.status,
            "seenAt": ms_str(Some(p.seen_at_ms)), "source": "com.atproto.sync.listRepos of the account's PDS"})),
        "relay": acct.as_ref().map(|s| json!({"active": s.active, "status": s.status_label(),
            "seenAt": ms_str(Some(s.seen_at_ms)), "source": "#account events on the relay's firehose"})),
        "plc": plc.as_ref().map(|p| json!({"tombstoned": p.tombstoned, "updatedAt": p.updated_at,
            "source": "the PLC directory's operation log"})),
        "disagreement": pds.as_ref().and_then(|p| crate::store::records::status_disagreement(p.active, &p.status, relay, tombstoned)),
    });
    let mut v = json!({
        "did": did,
        "observers": observers,
        "handle": a.handle,
        "handleVerified": a.handle_verified,
        "state": why.state,
        "account": acct.map(|s| json!({"status": s.status_label(), "active": s.active, "lastSeen": ms_str(Some(s.seen_at_ms))})),
        "host": a.host,
        "instance": inst_json,
        "entities": entities,
        "routes": routes_json(store, cache, &routes::routes(reason, about, &parties), now)?,
        "explanation": explanation,
    });
    match reason {
        Some(r) => {
            v["reason"] = json!(r.code());
            v["reasonAuthoritiesOnly"] = json!(r.authorities_only());
        }
        None => {
            let mut by = serde_json::Map::new();
            for r in routes::declared_reasons(&parties) {
                by.insert(
                    r.code().to_owned(),
                    routes_json(store, cache, &routes::routes(Some(&r), about, &parties), now)?,
                );
            }
            v["routesByReason"] = Value::Object(by);
        }
    }
    // the explanation names who to notify first
    if let Some(first) = v["routes"].get(0).cloned() {
        let what = match reason {
            Some(r) => format!("a report of {}", r.code()),
            None => "a report".to_owned(),
        };
        let party = first["party"].as_str().unwrap_or_default().replace('_', " ");
        let line = match first["channel"].as_str().unwrap_or_default() {
            // no channel: the party is known, a way to reach it is not
            "none" => format!(
                " For {what}, notify first the {party} ({}), which publishes no contact.",
                first["who"].as_str().unwrap_or_default()
            ),
            channel => format!(
                " For {what}, notify first the {party} ({channel} {}{}).",
                first["address"].as_str().unwrap_or_default(),
                if first["check"]["stale"] == true { ", not confirmed within 7 days" } else { "" },
            ),
        };
        if let Some(e) = v["explanation"].as_str().map(|e| format!("{e}{line}")) {
            v["explanation"] = json!(e);
        }
    }
    Ok(v)
}

/// Routes as the API shows them: ranked, with when each was last checked,
/// and for an email or URL its last contact check (`check`: ok, how, when
/// last checked and confirmed, stale past the 7-day objective).
fn routes_json(store: &Store, cache: &Cache, rs: &[routes::Route], now: i64) -> Result<Value, ApiError> {
    use crate::hosts::contacts;
    let mut out = Vec::with_capacity(rs.len());
    for (i, r) in rs.iter().enumerate() {
        let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
        v["rank"] = json!(i + 1);
        v["lastChecked"] = ms_str(r.checked_at_ms);
        let key = match r.channel {
            "email" => Some(contacts::email_key(&r.address)),
            "url" => Some(contacts::url_key(&r.address)),
            _ => None,
        };
        if let Some(k) = key {
            let c = cache.contact_check(store, &k)?;
            v["check"] = contacts::freshness(c.as_ref(), now);
        }
        out.push(v);
    }
    Ok(Value::Array(out))
}

/// A labeler's report scope from its `app.bsky.labeler.service` record
/// (kept from the firehose); `None` where the record leaves it open.
fn labeler_scope(store: &Store, did: &str) -> Result<routes::Labeler, ApiError> {
    let rec = crate::store::StoreReader::stored_record(store, crate::event::LABELER_SERVICE, did, "self")?;
    let json = rec.and_then(|r| crate::repo::cbor::to_json(&r.record).ok());
    let list = |k: &str| -> Option<Vec<String>> {
        json.as_ref()?.get(k)?.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
    };
    Ok(routes::Labeler {
        did: did.to_owned(),
        reason_types: list("reasonTypes"),
        subject_types: list("subjectTypes"),
        subject_collections: list("subjectCollections"),
        checked_at_ms: None,
    })
}

// ---------------------------------------------------------------- instances

fn instance_json(i: &map::InstanceRecord, full: bool) -> Value {
    let mut v = json!({
        "id": i.id,
        "name": i.name,
        "hosts": i.hosts.len(),
        "userDomains": i.user_domains,
        "members": i.members,
        "operator": i.operator,
        "declared": i.operator.is_some(),
        "evidenceKinds": i.evidence.iter().map(|e| e.1.clone()).collect::<std::collections::BTreeSet<_>>(),
        "computedAt": ms_str(Some(i.computed_at_ms)),
    });
    if full {
        v["hosts"] = json!(i.hosts);
        v["anchor"] = json!(i.anchor);
        v["registrableDomains"] = json!(i.registrable_domains);
        v["evidence"] = json!(i
            .evidence
            .iter()
            .map(|e| json!({"host": e.0, "kind": e.1, "value": e.2, "observedAt": ms_str(Some(e.3))}))
            .collect::<Vec<_>>());
        v["governance"] = json!(i.governance);
        v["claimedBy"] = json!(i.claimed_by);
        v["conflict"] = json!(i.conflict);
        v["domainProofs"] = json!(i
            .domain_proofs
            .iter()
            .map(|p| json!({"host": p.host, "domain": p.domain, "how": p.how, "accounts": p.accounts,
                "examples": p.examples, "observedAt": ms_str(Some(p.at_ms))}))
            .collect::<Vec<_>>());
        v["unprovenDomains"] = json!(i
            .unproven_domains
            .iter()
            .map(|(h, d, why)| json!({"host": h, "domain": d, "why": why}))
            .collect::<Vec<_>>());
        if let Some((name, why)) = &i.name_refused {
            v["declaredNameRefused"] = json!({"name": name, "why": why});
        }
    }
    v
}

/// `dev.instancemap.listInstances`.
pub async fn list_instances(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q, &["limit", "cursor", "minMembers", "hasDeclaration", "hostStatus", "sort"])?;
    let (limit, offset, min) = (p.limit()?, p.offset()?, p.int("minMembers")?.unwrap_or(0));
    let declared = p.bool("hasDeclaration")?;
    let host_status = p.get("hostStatus").map(str::to_owned);
    if let Some(s) = &host_status {
        if !["pending", "online", "offline"].contains(&s.as_str()) {
            return Err(ApiError::bad("hostStatus must be pending, online or offline"));
        }
    }
    let sort = p.get("sort").unwrap_or("members").to_owned();
    if !["members", "growth"].contains(&sort.as_str()) {
        return Err(ApiError::bad("sort must be members or growth"));
    }
    st.read(move |st| {
        let all = st.cache.instances(&st.store)?;
        // the cached states (a few seconds old at most), not every host
        // record decoded per request
        let host_state: HostStates = match &host_status {
            Some(_) => st.cache.host_states(&st.store)?,
            None => Default::default(),
        };
        let n = |i: &map::InstanceRecord| i.members.get("registered").copied().unwrap_or(0);
        let mut list: Vec<&map::InstanceRecord> = all
            .iter()
            .filter(|i| n(i) >= min)
            .filter(|i| declared.is_none_or(|d| i.operator.is_some() == d))
            .filter(|i| {
                host_status.as_ref().is_none_or(|s| i.hosts.iter().any(|h| host_state.get(h).is_some_and(|x| x == s)))
            })
            .collect();
        let growth: HashMap<String, i64> = if sort == "growth" {
            // joins minus leaves over the last 30 days
            let from = crate::clock::day(crate::clock::now_ms() - 30 * 86_400_000);
            let hi = history::host_instances(&st.store)?;
            let mut g = HashMap::new();
            st.store.day_counts(&from, "9999-12-31", &mut |_, host, n| {
                if let Some(i) = hi.get(host) {
                    *g.entry(i.clone()).or_default() += n;
                }
            })?;
            list.sort_by(|a, b| g.get(&b.id).cmp(&g.get(&a.id)).then(a.id.cmp(&b.id)));
            g
        } else {
            HashMap::new()
        };
        let (items, cursor) = page(&list, offset, limit);
        let items: Vec<Value> = items
            .into_iter()
            .map(|i| {
                let mut v = instance_json(i, false);
                if sort == "growth" {
                    v["growth30d"] = json!(growth.get(&i.id).copied().unwrap_or(0));
                }
                v
            })
            .collect();
        let map = st.cache.freshness(&st.store)?;
        Ok(Json(json!({"instances": items, "cursor": cursor, "total": list.len(), "map": map})))
    })
    .await
}

fn instance_by_id(store: &Store, id: &str) -> Result<map::InstanceRecord, ApiError> {
    if !id.starts_with("inst_") || id.len() != 17 || !id[5..].bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad(format!("{id:?} is not an instance id (inst_ and 12 hex digits)")));
    }
    map::instance(store, id)?.ok_or_else(|| ApiError::not_found("InstanceNotFound", format!("no instance {id}")))
}

/// `dev.instancemap.getInstance`.
pub async fn get_instance(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q, &["id"])?;
    let id = p.required("id")?.to_owned();
    st.read(move |st| instance_view(&st.store, &st.cache, st.networks.as_deref(), &id).map(Json)).await
}

/// The whole `getInstance` answer (also the CLI's `instance`): the record,
/// the declarations claiming it, activity and openness, observers'
/// disagreements, with `networks` where its hosts run, its labelers'
/// conformance and the map's freshness.
pub fn instance_view(
    store: &Store,
    cache: &Cache,
    networks: Option<&crate::hosts::network::Networks>,
    id: &str,
) -> Result<Value, ApiError> {
    let i = instance_by_id(store, id)?;
    let mut v = instance_json(&i, true);
    let mut claims = Vec::new();
    for op in &i.claimed_by {
        claims.extend(map::declaration_status(store, op)?);
    }
    v["declarations"] = json!(claims);
    v["activity"] = json!(crate::cluster::activity::of(store, &i, crate::clock::now_ms())?);
    // over its hosts (one read each): observers' disagreements on its
    // accounts' status, and with --mmdb where each runs
    let mut disagree: BTreeMap<String, u64> = BTreeMap::new();
    let mut placed = Vec::new();
    for h in &i.hosts {
        let rec = crate::hosts::get(store, h)?.unwrap_or_default();
        for (k, n) in rec.repos.map(|r| r.disagreements).unwrap_or_default() {
            *disagree.entry(k).or_default() += n;
        }
        if let Some(n) = networks {
            placed.push(json!({"host": h, "addresses": rec.addresses, "placement": n.place_host(&rec.addresses)}));
        }
    }
    v["statusDisagreements"] = json!(disagree);
    if networks.is_some() {
        v["network"] = json!(placed);
    }
    // the conformance of the labelers its operator applies
    let mut labelers = Vec::new();
    for l in i.governance.iter().flat_map(|g| &g.labelers) {
        let c = crate::store::StoreReader::contact_check(store, &crate::hosts::contacts::labeler_key(l))?;
        labelers.push(json!({"did": l, "conformance": c.as_ref().and_then(|c| c.labeler.clone()),
            "checkedAt": ms_str(c.as_ref().map(|c| c.checked_at_ms))}));
    }
    v["labelers"] = json!(labelers);
    v["map"] = cache.freshness(store)?;
    Ok(v)
}

/// `dev.instancemap.listMembers`: accounts whose current host is one of the
/// instance's, in (host, DID) order.
pub async fn list_members(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q, &["id", "limit", "cursor"])?;
    let (id, limit) = (p.required("id")?.to_owned(), p.limit()?);
    let cursor = p.get("cursor").map(str::to_owned);
    st.read(move |st| {
        let i = instance_by_id(&st.store, &id)?;
        // cursor: "<host index>:<last did>"
        let (mut hi, mut after) = (0usize, None::<String>);
        if let Some(c) = &cursor {
            let (a, b) = c.split_once(':').ok_or_else(|| ApiError::bad("cursor is not one this server issued"))?;
            hi = a.parse().map_err(|_| ApiError::bad("cursor is not one this server issued"))?;
            after = Some(b.to_owned());
        }
        // one more than asked, to know whether a next page exists
        let mut found: Vec<(usize, String)> = Vec::new();
        while hi < i.hosts.len() && found.len() <= limit {
            let dids = map::accounts_on_host(&st.store, &i.hosts[hi], after.as_deref(), limit + 1 - found.len())?;
            found.extend(dids.into_iter().map(|d| (hi, d)));
            hi += 1;
            after = None;
        }
        let next = (found.len() > limit).then(|| {
            found.truncate(limit);
            let (h, d) = found.last().expect("limit is at least 1");
            format!("{h}:{d}")
        });
        let mut out = Vec::new();
        for (h, d) in found {
            let a = map::assignment(&st.store, &d)?.unwrap_or_default();
            out.push(json!({"did": d, "host": i.hosts[h], "handle": a.handle, "handleVerified": a.handle_verified,
                "buckets": a.buckets}));
        }
        Ok(Json(json!({"instance": i.id, "members": out, "cursor": next})))
    })
    .await
}

/// `dev.instancemap.listHosts`: hosts (of one instance, or all), with state.
pub async fn list_hosts(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q, &["instance", "status", "limit", "cursor"])?;
    let (limit, offset) = (p.limit()?, p.offset()?);
    let inst = p.get("instance").map(str::to_owned);
    let status = p.get("status").map(str::to_owned);
    if let Some(s) = &status {
        if !["pending", "online", "offline"].contains(&s.as_str()) {
            return Err(ApiError::bad("status must be pending, online or offline"));
        }
    }
    st.read(move |st| {
        let hosts: Vec<String> = match &inst {
            Some(id) => instance_by_id(&st.store, id)?.hosts,
            None => history::host_instances(&st.store)?
                .into_keys()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        // filter by the cached states, page, then read only the page's records
        let states = st.cache.host_states(&st.store)?;
        let state_of = |h: &str| states.get(h).cloned().unwrap_or_else(|| "unknown".to_owned());
        let hosts: Vec<&String> = hosts.iter().filter(|h| status.as_ref().is_none_or(|s| *s == state_of(h))).collect();
        let total = hosts.len();
        let (page_hosts, cursor) = page(&hosts, offset, limit);
        let mut rows = Vec::new();
        for h in page_hosts {
            let h: &str = h;
            let rec = crate::hosts::get(&st.store, h)?;
            let state = rec.as_ref().map_or("unknown".to_owned(), |r| r.state.clone());
            let members = st.store.members_of_host(h)?;
            let members = (!members.is_empty()).then_some(members);
            rows.push(json!({
                "host": h,
                "instance": map::instance_id_of_host(&st.store, h)?,
                "state": state,
                "members": members,
                "userDomains": rec.as_ref().and_then(|r| r.describe.as_ref()).map(|d| d.available_user_domains.clone()),
                "version": rec.as_ref().and_then(|r| r.version.clone()),
                "lastChecked": ms_str(rec.as_ref().and_then(|r| r.last_checked_ms)),
            }));
        }
        Ok(Json(json!({"hosts": rows, "cursor": cursor, "total": total})))
    })
    .await
}

// ---------------------------------------------------------------- history

/// `dev.instancemap.getMapAsOf`: instance sizes at the end of a day.
pub async fn get_map_as_of(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q, &["at", "limit", "cursor"])?;
    let day = p.day("at")?.ok_or_else(|| ApiError::bad("parameter \"at\" is required"))?;
    let (limit, offset) = (p.limit()?, p.offset()?);
    st.read(move |st| {
        let sizes = history::sizes_as_of(&st.store, &day)?;
        let mut rows: Vec<(String, i64)> = sizes.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: i64 = rows.iter().map(|r| r.1).sum();
        let rows: Vec<Value> = rows.into_iter().map(|(i, n)| json!({"instance": i, "accounts": n})).collect();
        let (items, cursor) = page(&rows, offset, limit);
        Ok(Json(json!({"day": day, "accounts": total, "instances": items, "cursor": cursor})))
    })
    .await
}

/// Instances in a flow matrix unless `top` says otherwise, and at most.
pub const DEFAULT_MATRIX_TOP: usize = 50;
pub const MAX_MATRIX_TOP: usize = 200;
/// The matrix's row and column for every instance past `top`.
pub const OTHER: &str = "(other)";

/// `dev.instancemap.getFlows`: migrations between instances over days.
pub async fn get_flows(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q, &["from", "to", "format", "limit", "cursor", "top"])?;
    let top = match p.get("top") {
        None => DEFAULT_MATRIX_TOP,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_MATRIX_TOP).contains(n))
            .ok_or_else(|| ApiError::bad(format!("top must be 1 to {MAX_MATRIX_TOP}")))?,
    };
    let from = p.day("from")?.ok_or_else(|| ApiError::bad("parameter \"from\" is required"))?;
    let to = p.day("to")?.unwrap_or_else(crate::clock::today);
    if from > to {
        return Err(ApiError::bad("from is after to"));
    }
    let format = p.get("format").unwrap_or("edges").to_owned();
    if !["edges", "matrix"].contains(&format.as_str()) {
        return Err(ApiError::bad("format must be edges or matrix"));
    }
    let (limit, offset) = (p.limit()?, p.offset()?);
    st.read(move |st| {
        let flows = history::flows(&st.store, &from, &to)?;
        if format == "matrix" {
            // summed over the period: rows are sources, columns destinations
            let mut m: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
            for f in &flows {
                *m.entry(f.from.clone()).or_default().entry(f.to.clone()).or_default() += f.accounts;
            }
            // the `top` instances by accounts moved in or out, the rest
            // summed as OTHER: the matrix is at most (top + 1)² however
            // many instances the map has
            let mut volume: HashMap<&str, i64> = HashMap::new();
            for f in &flows {
                *volume.entry(f.from.as_str()).or_default() += f.accounts.abs();
                *volume.entry(f.to.as_str()).or_default() += f.accounts.abs();
            }
            let mut ranked: Vec<(&str, i64)> = volume.into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let kept: std::collections::BTreeSet<String> =
                ranked.iter().take(top).map(|(n, _)| (*n).to_owned()).collect();
            let fold = |n: &String| if kept.contains(n) { n.clone() } else { OTHER.to_owned() };
            let mut folded: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
            for (a, row) in &m {
                for (b, n) in row {
                    *folded.entry(fold(a)).or_default().entry(fold(b)).or_default() += n;
                }
            }
            let m = folded;
            let names: std::collections::BTreeSet<String> =
                m.keys().cloned().chain(m.values().flat_map(|r| r.keys().cloned())).collect();
            let names: Vec<String> = names.into_iter().collect();
            let (items, cursor) = page(&names, offset, limit);
            let rows: Vec<Vec<i64>> = items
                .iter()
                .map(|a| names.iter().map(|b| m.get(*a).and_then(|r| r.get(b)).copied().unwrap_or(0)).collect())
                .collect();
            return Ok(Json(
                json!({"from": from, "to": to, "instances": names, "rows": items, "matrix": rows, "cursor": cursor}),
            ));
        }
        let (items, cursor) = page(&flows, offset, limit);
        Ok(Json(json!({"from": from, "to": to, "flows": items, "cursor": cursor})))
    })
    .await
}

/// `dev.instancemap.getGrowth`: one instance's registered accounts per day.
pub async fn get_growth(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q, &["id", "from", "to", "limit", "cursor"])?;
    let id = p.required("id")?.to_owned();
    let from = p.day("from")?;
    let to = p.day("to")?.unwrap_or_else(crate::clock::today);
    let (limit, offset) = (p.limit()?, p.offset()?);
    st.read(move |st| {
        instance_by_id(&st.store, &id)?;
        let days: Vec<history::GrowthDay> = history::growth(&st.store, &id, &to)?
            .into_iter()
            .filter(|d| from.as_ref().is_none_or(|f| d.day >= *f))
            .collect();
        let (items, cursor) = page(&days, offset, limit);
        Ok(Json(json!({"instance": id, "days": items, "cursor": cursor})))
    })
    .await
}

/// `dev.instancemap.getAccountHistory`: an account's migrations, and where
/// it was at a time.
pub async fn get_account_history(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    let p = Params::parse(q, &["did", "at"])?;
    let did = p.required("did")?.to_owned();
    if !crate::types::is_did(&did) {
        return Err(ApiError::bad("did is not a valid DID (atproto DID syntax)"));
    }
    let at = match p.get("at") {
        Some(s) => {
            Some(crate::clock::parse_day_or_time(s).ok_or_else(|| ApiError::bad("at must be YYYY-MM-DD or RFC 3339"))?)
        }
        None => None,
    };
    st.read(move |st| {
        let Some(a) = map::assignment(&st.store, &did)? else {
            return Err(ApiError::not_found("AccountNotFound", format!("{did} is not in the map")));
        };
        let timeline: Vec<Value> = a
            .timeline
            .iter()
            .map(|(t, h)| {
                let inst = h.as_ref().map(|h| map::instance_id_of_host(&st.store, h)).transpose()?.flatten();
                Ok(json!({"at": ms_str(Some(*t)), "host": h, "instance": inst}))
            })
            .collect::<Result<_, ApiError>>()?;
        let as_of = match at {
            Some(ms) => Some(history::account_as_of(&st.store, &did, ms)?),
            None => None,
        };
        Ok(Json(json!({"did": did, "timeline": timeline, "asOf": as_of})))
    })
    .await
}

// ---------------------------------------------------------------- summary

/// The network summary: totals and concentration.
pub fn summary(store: &Store, networks: Option<&crate::hosts::network::Networks>) -> Result<Value, ApiError> {
    let (inst, host) = map::concentrations(store)?;
    let states = map::unassigned(store)?;
    let mut host_states: BTreeMap<String, u64> = BTreeMap::new();
    for (_, h) in crate::store::StoreReader::hosts(store)? {
        *host_states.entry(h.state).or_default() += 1;
    }
    let decls = store.declaration_statuses()?;
    let verified = decls.iter().filter(|d| !d.verified_hosts.is_empty()).count();
    Ok(json!({
        "accounts": {"assigned": inst.accounts, "unassigned": states},
        "instances": inst.groups,
        "hosts": host_states,
        "declarations": {"verified": verified, "unverified": decls.len() - verified},
        "concentration": {"instances": inst, "hosts": host},
        "network": network_json(store, networks)?,
    }))
}

/// Where the map runs, or why that is not known.
fn network_json(store: &Store, networks: Option<&crate::hosts::network::Networks>) -> Result<Value, ApiError> {
    let Some(n) = networks else {
        return Ok(json!({"enabled": false,
            "why": "no --mmdb database given (GeoLite2 or DB-IP lite ASN and country, or IPinfo lite): hosts are not placed"}));
    };
    let view = crate::cluster::concentration::by_network(store, n)?;
    let mut v = json!(view);
    v["enabled"] = json!(true);
    v["databases"] = json!(n.databases().iter().map(|(p, t)| json!({"path": p, "type": t})).collect::<Vec<_>>());
    Ok(v)
}

/// `dev.instancemap.getSummary`.
pub async fn get_summary(State(st): State<ApiState>, RawQuery(q): RawQuery) -> Reply {
    Params::parse(q, &[])?;
    st.read(|st| {
        let mut v = st.cache.summary(&st.store, st.networks.as_deref())?;
        v["map"] = st.cache.freshness(&st.store)?;
        v["ingest"] = ingest_json(st)?;
        Ok(Json(v))
    })
    .await
}

/// How far the database has read its sources: every firehose cursor
/// stored, the PLC export's position, and, in the process that follows a
/// relay (`run`), whether it is connected and how far behind it is.
fn ingest_json(st: &ApiState) -> Result<Value, ApiError> {
    let plc = crate::plc::load::Position::load(&st.store)?;
    let mut v = json!({
        "cursors": st.store.cursors()?,
        "plc": {"seq": plc.seq, "lastOperationAt": plc.last_at},
    });
    if !st.read_only {
        let lag = crate::metrics::LAG_MS.get();
        v["firehose"] = json!({"connected": crate::metrics::CONNECTED.get() == 1,
            "lagSeconds": (lag > 0).then(|| lag as f64 / 1000.0)});
    }
    Ok(v)
}

// ---------------------------------------------------------------- admin

/// Checks the admin bearer token and that the store is writable.
fn admin(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    if st.admin_token.is_none() {
        return Err(ApiError::not_found("AdminDisabled", "admin routes are off: no admin token is configured"));
    }
    let token = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let want = st.admin_token.as_deref().map(|t| format!("Bearer {t}"));
    let ok = match (token, &want) {
        (Some(got), Some(want)) => {
            // constant time in the token's length
            got.len() == want.len() && got.bytes().zip(want.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        }
        _ => false,
    };
    if !ok {
        return Err(ApiError {
            status: axum::http::StatusCode::UNAUTHORIZED,
            error: "AuthRequired",
            message: "a valid admin bearer token is required".into(),
        });
    }
    if st.read_only {
        return Err(ApiError {
            status: axum::http::StatusCode::FORBIDDEN,
            error: "ReadOnly",
            message: "this server serves a read-only copy".into(),
        });
    }
    Ok(())
}

/// `dev.instancemap.admin.refreshAccount` (POST, bearer token): marks a DID
/// for the map maintainer.
pub async fn admin_refresh_account(State(st): State<ApiState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Reply {
    admin(&st, &headers)?;
    let p = Params::parse(q, &["did"])?;
    let did = p.required("did")?.to_owned();
    if !crate::types::is_did(&did) {
        return Err(ApiError::bad("did is not a valid DID"));
    }
    st.read(move |st| {
        let mut b = crate::store::Batch::default();
        b.mark(&did);
        match &st.writer {
            Some(w) => crate::store::StoreWriter::commit(w, b)?,
            None => crate::store::StoreWriter::commit(&st.store, b)?,
        }
        Ok(Json(json!({"did": did, "marked": true})))
    })
    .await
}

/// `dev.instancemap.admin.createCheckpoint` (POST, bearer token): a
/// consistent copy of the live database (backups, read replicas).
/// Where a checkpoint may be written: a plain absolute path (no `.` or
/// `..`), under an existing directory, outside the live database, and on
/// the database's own filesystem (the checkpoint hard-links its files; a
/// RAM-backed tmpfs or another disk would copy them, or vanish at reboot).
pub fn checkpoint_target_allowed(store: &Store, dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    use std::path::Component;
    if dir.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
        return Err("dir must not contain `.` or `..`".into());
    }
    let parent = dir.parent().ok_or("dir has no parent directory")?;
    let parent = parent.canonicalize().map_err(|e| format!("dir's parent {}: {e}", parent.display()))?;
    let db = store.path().canonicalize().map_err(|e| format!("the database's directory: {e}"))?;
    if parent.starts_with(&db) {
        return Err("dir is inside the live database".into());
    }
    let (pd, dd) = (
        std::fs::metadata(&parent).map_err(|e| e.to_string())?.dev(),
        std::fs::metadata(&db).map_err(|e| e.to_string())?.dev(),
    );
    if pd != dd {
        return Err("dir must be on the database's filesystem (the checkpoint hard-links its files; another \
                    filesystem, such as a RAM-backed tmpfs, would not hold them)"
            .into());
    }
    Ok(())
}

pub async fn admin_create_checkpoint(State(st): State<ApiState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Reply {
    admin(&st, &headers)?;
    let p = Params::parse(q, &["dir"])?;
    let dir = std::path::PathBuf::from(p.required("dir")?);
    if !dir.is_absolute() || dir.exists() {
        return Err(ApiError::bad("dir must be an absolute path that does not exist yet"));
    }
    checkpoint_target_allowed(&st.store, &dir).map_err(ApiError::bad)?;
    st.read(move |st| {
        let started = Instant::now();
        st.store.checkpoint(&dir).map_err(|e| ApiError::internal(format!("checkpoint failed: {e}")))?;
        Ok(Json(json!({"dir": dir, "seconds": started.elapsed().as_secs_f64()})))
    })
    .await
}
