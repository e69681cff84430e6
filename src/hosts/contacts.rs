//! Contacts that are checked, not only listed. For each online host and
//! each verified operator, the crawler keeps the last check of every
//! contact the lookup may route to:
//!
//! - `securitytxt:<origin>`: the origin's `/.well-known/security.txt`
//!   (RFC 9116) fetched through the guarded client, for each host and each
//!   domain a verified declaration proves (its verified account domains);
//! - `email:<address>`: the address's domain accepts mail (MX records that
//!   are not a null MX, else an A or AAAA record, RFC 5321 §5.1), asked of
//!   the resolver the handle checks use; for `describeServer` contacts,
//!   declared contacts and `security.txt` `mailto:` contacts;
//! - `url:<url>`: a declared contact URL answers 2xx.
//!
//! The objective: every contact re-checked within [`OBJECTIVE`] (7 days);
//! each is re-checked once [`RECHECK_AFTER`] (1 day) old, at most
//! [`MAX_PER_CYCLE`] a crawl cycle. The age of the oldest check is
//! `instancemap_contact_check_oldest_seconds`; contacts past the objective,
//! expired `security.txt` files and failing contacts are counted in
//! `instancemap_contacts{state}`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::metrics;
use crate::net::Fetcher;
use crate::store::records::ContactCheck;
use crate::store::{self, map::MapReader, Batch, StoreReader, StoreWriter};

/// Every contact re-checked within this.
pub const OBJECTIVE: Duration = Duration::from_secs(7 * 86_400);
/// A check older than this is due again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(86_400);
/// Checks made in one crawl cycle at most.
pub const MAX_PER_CYCLE: usize = 500;
/// Contacts one operator's declaration adds at most.
const MAX_PER_OPERATOR: usize = 24;

/// The key of an email address's check.
pub fn email_key(addr: &str) -> String {
    format!("email:{}", addr.trim().to_ascii_lowercase())
}

/// The key of a URL's check.
pub fn url_key(url: &str) -> String {
    format!("url:{url}")
}

/// The key of a labeler's conformance check.
pub fn labeler_key(did: &str) -> String {
    format!("labeler:{did}")
}

/// The key of an origin's `security.txt`.
pub fn security_txt_key(origin: &str) -> String {
    format!("securitytxt:{}", origin.trim_end_matches('/'))
}

/// Checks contacts: DNS for mail, the guarded client for the web.
pub struct Checker {
    fetcher: Fetcher,
    dns: hickory_resolver::TokioResolver,
}

impl Checker {
    /// `nameserver`: a DNS server to ask instead of the system's.
    pub fn new(fetcher: Fetcher, nameserver: Option<std::net::SocketAddr>) -> Checker {
        Checker { fetcher, dns: crate::net::resolver(nameserver) }
    }

    /// Whether `addr`'s domain accepts mail.
    pub async fn email(&self, addr: &str) -> (bool, String) {
        let Some((_, domain)) = addr.rsplit_once('@') else { return (false, "not an email address".into()) };
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        if let Ok(mx) = self.dns.mx_lookup(fqdn.as_str()).await {
            let mut hosts: Vec<(u16, String)> = mx
                .iter()
                .map(|m| (m.preference(), m.exchange().to_string().trim_end_matches('.').to_owned()))
                .collect();
            hosts.sort();
            if hosts.iter().all(|(_, h)| h.is_empty()) && !hosts.is_empty() {
                return (false, format!("null MX: {domain} accepts no mail (RFC 7505)"));
            }
            if let Some((_, h)) = hosts.iter().find(|(_, h)| !h.is_empty()) {
                return (true, format!("MX {h}"));
            }
        }
        match self.dns.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => match ips.iter().next() {
                Some(ip) => (true, format!("no MX; address {ip} (RFC 5321 §5.1)")),
                None => (false, format!("{domain} has no MX, A or AAAA record")),
            },
            Err(_) => (false, format!("{domain} has no MX, A or AAAA record")),
        }
    }

    /// Whether `url` answers.
    pub async fn url(&self, url: &str) -> (bool, String) {
        match self.fetcher.get(url).await {
            Ok(_) => (true, "answers 2xx".into()),
            Err(e) => (false, format!("{}: {e}", e.reason())),
        }
    }

    /// Fetches and reads `origin`'s `security.txt`.
    pub async fn security_txt(&self, origin: &str, now_ms: i64) -> ContactCheck {
        let url = format!("{}/.well-known/security.txt", origin.trim_end_matches('/'));
        match self.fetcher.get(&url).await {
            Ok(body) => {
                let txt = super::securitytxt::parse(&url, &body, now_ms);
                let ok = !txt.contacts.is_empty() && !txt.expired(now_ms);
                let how = if txt.problems.is_empty() { "valid".to_owned() } else { txt.problems.join("; ") };
                ContactCheck { ok, how, checked_at_ms: now_ms, security_txt: Some(txt), ..ContactCheck::default() }
            }
            Err(e) => ContactCheck {
                ok: false,
                how: format!("no security.txt ({}: {e})", e.reason()),
                checked_at_ms: now_ms,
                ..ContactCheck::default()
            },
        }
    }

    /// Checks one contact by its key.
    pub async fn check(&self, key: &str, now_ms: i64) -> ContactCheck {
        if let Some(origin) = key.strip_prefix("securitytxt:") {
            return self.security_txt(origin, now_ms).await;
        }
        let (ok, how) = match (key.strip_prefix("email:"), key.strip_prefix("url:")) {
            (Some(addr), _) => self.email(addr).await,
            (_, Some(url)) => self.url(url).await,
            _ => (false, "not a contact key".into()),
        };
        ContactCheck { ok, how, checked_at_ms: now_ms, ..ContactCheck::default() }
    }
}

/// Every contact the lookup may route to, by key.
pub fn targets(store: &impl StoreReader, map: &impl MapReader) -> store::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for (endpoint, h) in store.hosts()? {
        if h.state != "online" {
            continue;
        }
        out.insert(security_txt_key(&endpoint));
        if let Some(e) = h.describe.as_ref().and_then(|d| d.contact_email.as_deref()) {
            if crate::types::is_email(e) {
                out.insert(email_key(e));
            }
        }
    }
    let statuses = map.declaration_statuses()?;
    for inst in map.instance_records()? {
        let (Some(op), Some(g)) = (&inst.operator, &inst.governance) else { continue };
        let mut mine = Vec::new();
        for c in g.all_contacts() {
            mine.extend(c.email.as_deref().map(email_key));
            mine.extend(c.url.as_deref().map(url_key));
        }
        for l in &g.labelers {
            mine.push(labeler_key(l));
        }
        if let Some(st) = statuses.iter().find(|s| s.operator == *op) {
            for d in &st.verified_domains {
                mine.push(security_txt_key(&format!("https://{d}")));
            }
        }
        out.extend(mine.into_iter().take(MAX_PER_OPERATOR));
    }
    // the mail contacts of the security.txt files found (not of expired
    // ones: the lookup does not route to them)
    let now = crate::clock::now_ms();
    for (_, c) in store.contact_checks()? {
        for contact in c.security_txt.iter().filter(|t| !t.expired(now)).flat_map(|t| &t.contacts) {
            if let Some(addr) = super::securitytxt::mailto(contact) {
                out.insert(email_key(addr));
            }
        }
    }
    Ok(out)
}

/// Checks the contacts whose last check is [`RECHECK_AFTER`] old or that
/// were never checked, at most [`MAX_PER_CYCLE`], oldest first; updates
/// the freshness metrics; returns how many were checked. `map` reads the
/// instances (the store `store` writes to).
pub async fn check_due(store: &impl StoreWriter, map: &impl MapReader, checker: &Checker) -> store::Result<usize> {
    let now = crate::clock::now_ms();
    let targets = targets(store, map)?;
    // (last checked, key, last held)
    let mut due: Vec<(i64, String, Option<i64>)> = Vec::new();
    for key in &targets {
        let last = store.contact_check(key)?;
        let at = last.as_ref().map_or(i64::MIN, |c| c.checked_at_ms);
        if now.saturating_sub(at) >= RECHECK_AFTER.as_millis() as i64 {
            due.push((at, key.clone(), last.and_then(|c| c.last_ok_ms)));
        }
    }
    due.sort();
    due.truncate(MAX_PER_CYCLE);
    let n = due.len();
    for (_, key, last_ok_ms) in due {
        let mut c = match key.strip_prefix("labeler:") {
            Some(did) => {
                let l = super::labelers::conformance(store, &checker.fetcher, did).await;
                let how = if l.problems.is_empty() {
                    l.verdict.clone()
                } else {
                    format!("{}: {}", l.verdict, l.problems.join("; "))
                };
                ContactCheck {
                    ok: l.verdict != "failing",
                    how,
                    checked_at_ms: now,
                    labeler: Some(l),
                    ..ContactCheck::default()
                }
            }
            None => checker.check(&key, now).await,
        };
        c.last_ok_ms = if c.ok { Some(now) } else { last_ok_ms };
        metrics::CONTACT_CHECKS.with_label_values(&[if c.ok { "ok" } else { "failed" }]).inc();
        let mut b = Batch::default();
        b.put_contact_check(&key, c);
        store.commit(b)?;
    }
    observe(store, &targets, crate::clock::now_ms())?;
    Ok(n)
}

/// Sets the freshness gauges over `targets`.
fn observe(store: &impl StoreReader, targets: &BTreeSet<String>, now: i64) -> store::Result<()> {
    let (mut oldest, mut stale, mut expired, mut failing) = (0i64, 0i64, 0i64, 0i64);
    for key in targets {
        match store.contact_check(key)? {
            Some(c) => {
                let age = now.saturating_sub(c.checked_at_ms).max(0);
                oldest = oldest.max(age);
                stale += i64::from(age > OBJECTIVE.as_millis() as i64);
                expired += i64::from(c.security_txt.as_ref().is_some_and(|t| t.expired(now)));
                failing += i64::from(!c.ok);
            }
            None => stale += 1,
        }
    }
    metrics::CONTACT_CHECK_OLDEST.set(oldest / 1000);
    for (state, n) in [("stale", stale), ("expired", expired), ("failing", failing), ("checked", targets.len() as i64)]
    {
        metrics::CONTACTS.with_label_values(&[state]).set(n);
    }
    Ok(())
}

/// How the lookup shows a contact's check: `ok`, `how`, when it was last
/// checked and last held, and `stale` past the objective (or never checked).
pub fn freshness(check: Option<&ContactCheck>, now_ms: i64) -> serde_json::Value {
    match check {
        None => serde_json::json!({"checked": false, "stale": true}),
        Some(c) => serde_json::json!({
            "checked": true,
            "ok": c.ok,
            "how": c.how,
            "lastChecked": crate::clock::rfc3339_ms(c.checked_at_ms),
            "lastConfirmed": c.last_ok_ms.and_then(crate::clock::rfc3339_ms),
            "stale": now_ms.saturating_sub(c.checked_at_ms) > OBJECTIVE.as_millis() as i64,
        }),
    }
}
