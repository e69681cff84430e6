//! `instancemap account DID`: everything the database knows about one
//! account, as text or one JSON object.

use serde::Serialize;

use crate::identity::resolve::IdentityRecord;
use crate::plc::load::PlcRecord;
use crate::store::{self, AccountState, Store, StoreReader};

/// The `account --json` object.
#[derive(Debug, Serialize)]
pub struct AccountView {
    pub did: String,
    /// What the firehose said (absent if never seen there).
    pub firehose: Option<FirehoseView>,
    /// What the PLC export says (absent for did:web or DIDs not loaded).
    pub plc: Option<PlcRecord>,
    /// The last resolution of the DID document (absent if never resolved).
    pub resolved: Option<IdentityRecord>,
    /// The instance under the last `recluster`, or why there is none.
    pub instance: Option<String>,
    pub instance_name: Option<String>,
    pub instance_state: Option<String>,
    /// Why: the host, where it comes from, and the evidence tying it to
    /// the instance, in data and words.
    pub why: crate::cluster::explain::Why,
    /// Migrations between hosts, oldest first (from the PLC log and the
    /// resolutions): `{at, from, to, from_instance, to_instance}`.
    pub migrations: Vec<serde_json::Value>,
    /// The account's own instance declaration, if it published one, and
    /// what its claims came to.
    pub declaration: Option<crate::cluster::map::DeclarationStatus>,
}

#[derive(Debug, Serialize)]
pub struct FirehoseView {
    pub status: &'static str,
    pub active: Option<bool>,
    pub status_value: Option<String>,
    pub handle: Option<String>,
    pub rev: Option<String>,
    pub first_seq: i64,
    pub last_seq: i64,
    pub last_event_time: Option<String>,
    pub last_applied_at: Option<String>,
    pub commits: u64,
}

impl AccountView {
    /// Reads the account; `None` when the database knows nothing of it.
    pub fn read(store: &Store, did: &str) -> store::Result<Option<AccountView>> {
        let firehose = store.account(did)?.map(|a: AccountState| FirehoseView {
            status: a.status_label(),
            active: a.active,
            status_value: a.status.clone(),
            handle: a.handle.clone(),
            rev: a.rev.clone(),
            first_seq: a.first_seq,
            last_seq: a.last_seq,
            last_event_time: a.last_time_us.and_then(crate::clock::rfc3339_us),
            last_applied_at: crate::clock::rfc3339_us(a.seen_at_ms.saturating_mul(1000)),
            commits: a.commits,
        });
        let plc = store.plc(did)?;
        let resolved = store.identity(did)?;
        if firehose.is_none() && plc.is_none() && resolved.is_none() {
            return Ok(None);
        }
        let (instance, instance_name, instance_state) = match crate::cluster::map::instance_of_account(store, did)? {
            Ok(i) => (Some(i.id), Some(i.name), None),
            Err(why) => (None, None, Some(why)),
        };
        let why = crate::cluster::explain::account(store, did)?;
        let mut migrations = Vec::new();
        for (at, m) in crate::cluster::map::moves_of(store, did)? {
            migrations.push(serde_json::json!({
                "at": crate::clock::rfc3339_ms(at),
                "from": m.from,
                "to": m.to,
                "from_instance": crate::cluster::map::instance_id_of_host(store, &m.from)?,
                "to_instance": crate::cluster::map::instance_id_of_host(store, &m.to)?,
            }));
        }
        let declaration = crate::cluster::map::declaration_status(store, did)?;
        Ok(Some(AccountView {
            did: did.to_owned(),
            firehose,
            plc,
            resolved,
            instance,
            instance_name,
            instance_state,
            why,
            migrations,
            declaration,
        }))
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = format!("{}\n", self.did);
        match (&self.instance, &self.instance_name, &self.instance_state) {
            (Some(id), Some(name), _) => {
                let _ = writeln!(out, "instance: {name} ({id})");
            }
            (_, _, Some(why)) => {
                let _ = writeln!(out, "instance: none ({why})");
            }
            _ => {}
        }
        let _ = writeln!(out, "why: {}", self.why.text);
        if let Some(d) = &self.declaration {
            let _ = writeln!(out, "declares instance {:?}:", d.name);
            for (h, how) in &d.proofs {
                let _ = writeln!(out, "  host {h}: verified ({how})");
            }
            for dom in &d.verified_domains {
                let _ = writeln!(out, "  domain {dom}: verified");
            }
            for (c, why) in &d.unverified {
                let _ = writeln!(out, "  {c}: not verified ({why})");
            }
        }
        match &self.firehose {
            Some(f) => {
                let _ = writeln!(out, "firehose:");
                let _ = writeln!(out, "  status            {}", f.status);
                let _ = writeln!(out, "  handle            {}", f.handle.as_deref().unwrap_or("-"));
                let _ = writeln!(out, "  rev               {}", f.rev.as_deref().unwrap_or("-"));
                let _ = writeln!(out, "  seq               {} .. {}", f.first_seq, f.last_seq);
                let _ = writeln!(out, "  commits           {}", f.commits);
                let _ = writeln!(out, "  last event time   {}", f.last_event_time.as_deref().unwrap_or("-"));
                let _ = writeln!(out, "  last applied at   {}", f.last_applied_at.as_deref().unwrap_or("-"));
            }
            None => out.push_str("firehose: not seen\n"),
        }
        match &self.plc {
            Some(p) => {
                let _ = writeln!(out, "plc:");
                let _ = writeln!(out, "  pds               {}", p.pds.as_deref().unwrap_or("-"));
                let _ = writeln!(out, "  handle (claimed)  {}", p.handle.as_deref().unwrap_or("-"));
                let _ = writeln!(out, "  signing key       {}", p.signing_key.as_deref().unwrap_or("-"));
                let _ = writeln!(out, "  tombstoned        {}", p.tombstoned);
                let _ = writeln!(out, "  operations        {} ({} forks)", p.ops, p.forks);
                let _ = writeln!(out, "  updated at        {}", p.updated_at);
            }
            None => out.push_str("plc: not loaded\n"),
        }
        match &self.resolved {
            Some(r) => {
                let _ = writeln!(out, "resolved:");
                let _ = writeln!(out, "  pds               {}", r.pds.as_deref().unwrap_or("-"));
                let _ = writeln!(out, "  handle (claimed)  {}", r.handle.as_deref().unwrap_or("-"));
                let _ = writeln!(out, "  signing key       {}", r.signing_key.as_deref().unwrap_or("-"));
                let _ = writeln!(
                    out,
                    "  last checked      {}",
                    crate::clock::rfc3339_us(r.checked_at_ms.saturating_mul(1000)).unwrap_or_default()
                );
                let _ = writeln!(out, "  unresolved        {}", r.unresolved.as_deref().unwrap_or("no"));
                if let Some(c) = &r.handle_check {
                    let how = match (&c.method, &c.reason) {
                        (Some(m), _) => format!("verified by {m}"),
                        (None, Some(why)) => format!("not verified: {why} (handle.invalid)"),
                        _ => "not verified".into(),
                    };
                    let when = crate::clock::rfc3339_us(c.checked_at_ms.saturating_mul(1000)).unwrap_or_default();
                    let _ = writeln!(out, "  handle check      {} {how}, {when}", c.handle);
                }
            }
            None => out.push_str("resolved: never\n"),
        }
        for m in &self.migrations {
            let s = |k: &str| m[k].as_str().unwrap_or("-").to_owned();
            let _ = writeln!(out, "moved {}  {} -> {}", s("at"), s("from"), s("to"));
        }
        out
    }
}

/// The lookup's answer (`api::query::lookup_answer`) as text: the account,
/// its instance, the parties responsible, the routes for the reason (or
/// per reason) with their contact checks, and the observers' status.
pub fn lookup_text(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let s = |x: &serde_json::Value| x.as_str().map(str::to_owned).unwrap_or_else(|| "-".into());
    let mut out = format!("{} ({})\n", s(&v["did"]), s(&v["state"]));
    let _ =
        writeln!(out, "handle: {}{}", s(&v["handle"]), if v["handleVerified"] == true { " (verified)" } else { "" });
    let _ = writeln!(out, "host: {}", s(&v["host"]));
    if v["instance"].is_object() {
        let _ = writeln!(out, "instance: {} ({})", s(&v["instance"]["name"]), s(&v["instance"]["id"]));
    }
    let _ = writeln!(out, "why: {}", s(&v["explanation"]));
    let routes = |out: &mut String, rs: &serde_json::Value| {
        for r in rs.as_array().into_iter().flatten() {
            let check = match &r["check"] {
                c if c["checked"] == true => format!(
                    " [{}: {}, checked {}{}]",
                    if c["ok"] == true { "ok" } else { "failing" },
                    s(&c["how"]),
                    s(&c["lastChecked"]),
                    if c["stale"] == true { ", stale" } else { "" }
                ),
                c if c.is_object() => " [not checked yet]".to_owned(),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {}. {} {}: {} {}{}{}",
                r["rank"],
                s(&r["party"]).replace('_', " "),
                s(&r["who"]),
                s(&r["channel"]),
                s(&r["address"]),
                if r["confidential"] == true { " (confidential: not for display)" } else { "" },
                check
            );
            let _ = writeln!(out, "     {}", s(&r["evidence"]));
        }
    };
    match v.get("reason") {
        Some(r) => {
            let _ = writeln!(out, "routes for {}:", s(r));
            routes(&mut out, &v["routes"]);
        }
        None => {
            out.push_str("routes (any reason):\n");
            routes(&mut out, &v["routes"]);
            for (r, rs) in v["routesByReason"].as_object().into_iter().flatten() {
                let _ = writeln!(out, "routes for {r}:");
                routes(&mut out, rs);
            }
        }
    }
    let o = &v["observers"];
    out.push_str("status by observer:\n");
    for (k, what) in [("pds", "PDS (listRepos)"), ("relay", "relay (#account)"), ("plc", "PLC")] {
        let x = &o[k];
        if x.is_object() {
            let state = match k {
                "plc" => format!("tombstoned {}", x["tombstoned"]),
                _ => format!("active {} ({})", x["active"], s(&x["status"])),
            };
            let at = x.get("seenAt").or(x.get("updatedAt")).map(s).unwrap_or_default();
            let _ = writeln!(out, "  {what:<18} {state}, at {at}");
        }
    }
    if !o["disagreement"].is_null() {
        let _ = writeln!(out, "  disagreement: {}", s(&o["disagreement"]));
    }
    out
}
