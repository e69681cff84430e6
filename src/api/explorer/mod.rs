//! The explorer: the map as web pages, on the API's own address.
//!
//! - `/`: a search box and the network at a glance (counts, hosts by
//!   state, concentration as a bar chart and a Lorenz curve, freshness);
//! - `/?q=SUBJECT`: the responsibility card of a DID, handle or `at://`
//!   URI (a host or an instance name leads to its instance);
//! - `/instance/ID`: one instance; `/instances`: the list, sorted,
//!   filtered and paged as `listInstances` is; `/flows`: migrations
//!   between instances as a matrix.
//!
//! Read-only. Every page is made from the answers of the XRPC handlers
//! themselves (called in-process with the query a client would send), so
//! the page and the JSON cannot disagree; the HTML is whole without
//! scripts, which only add copy buttons and the `/` shortcut. Assets are
//! built into the binary. Pages carry a strict Content-Security-Policy (no
//! inline script or style, nothing from elsewhere) and `Server-Timing`.
//!
//! What an operator wrote (names, URLs, contacts) is escaped everywhere,
//! linked only when it is an `http(s)` or mail address, and contacts it
//! marked confidential are never shown (the lookup gives them to reporters).

mod chart;
mod page;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use serde_json::Value;

use super::{query, ApiError, ApiState};
use chart::Bar;
use page::{ago, contact, frame, jnum, json_link, num, pct, words};

/// The explorer's route templates (for the metrics).
pub const ROUTES: &[&str] = &["/", "/instances", "/instance/{id}", "/flows", "/assets/{name}"];

/// The explorer's routes.
pub fn routes() -> axum::Router<ApiState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(home))
        .route("/instances", get(instances))
        .route("/instance/{id}", get(instance))
        .route("/flows", get(flows))
        .route("/assets/{name}", get(asset))
}

/// The explorer's address for people, from the API's listening address
/// (an unspecified address is reached on loopback).
pub fn address(addr: std::net::SocketAddr) -> String {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    format!("http://{a}/")
}

/// Flows drawn on `/flows` unless `top` says otherwise.
const FLOW_TOP: usize = 12;
/// Pages of 1,000 read at most for an instance's growth or its flows.
const GROWTH_PAGES: usize = 20;

// ---------------------------------------------------------------- plumbing

/// An XRPC handler's answer to `q`, as any client would get it.
async fn api<F, Fut>(f: F, st: &ApiState, q: String) -> Result<Value, ApiError>
where
    F: FnOnce(State<ApiState>, RawQuery) -> Fut,
    Fut: Future<Output = Result<Json<Value>, ApiError>>,
{
    f(State(st.clone()), RawQuery(Some(q))).await.map(|Json(v)| v)
}

/// The `field` items of every page of an XRPC list (pages of 1,000, at
/// most [`GROWTH_PAGES`] of them), following its cursor.
async fn every_page<F, Fut>(f: F, st: &ApiState, pairs: &[(&str, &str)], field: &str) -> Result<Vec<Value>, ApiError>
where
    F: Fn(State<ApiState>, RawQuery) -> Fut,
    Fut: Future<Output = Result<Json<Value>, ApiError>>,
{
    let (mut items, mut cursor) = (Vec::new(), String::new());
    for _ in 0..GROWTH_PAGES {
        let mut q = pairs.to_vec();
        q.extend([("limit", "1000"), ("cursor", cursor.as_str())]);
        let mut v = api(&f, st, page::query(&q)).await?;
        if let Value::Array(a) = v[field].take() {
            items.extend(a);
        }
        match v["cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    Ok(items)
}

/// The page's query parameters, leniently (unknown ones are ignored: a
/// browser or a link may add some).
fn params(raw: Option<String>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// An HTML answer with the explorer's headers.
fn respond(status: StatusCode, body: Markup, started: Instant) -> Response {
    let mut r = (status, body.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&format!("render;dur={:.2}", started.elapsed().as_secs_f64() * 1000.0)) {
        h.insert("server-timing", v);
    }
    r
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// An error page: what went wrong in words, with the API's message.
fn error_page(e: &ApiError, q: &str, started: Instant) -> Response {
    let (title, hint) = match e.error {
        "AccountNotFound" => (
            "This account is not known",
            "instancemap knows the accounts in the PLC export it loaded, those it resolved and those seen on the firehose. A DID that exists elsewhere may not have reached this map yet.",
        ),
        "HandleNotFound" => (
            "No account with this handle is known",
            "Handles are matched as the map last saw them; a handle changed since, or never seen, is not found. Try the account's DID.",
        ),
        "InstanceNotFound" => ("No such instance", "Instance ids change when the map regroups hosts; search the host or the name instead."),
        "InvalidRequest" => (
            "That cannot be looked up",
            "Search a DID (did:plc:… or did:web:…), a handle (alice.example.com), an at:// URI, a host (pds.example.com) or an instance's name.",
        ),
        "Timeout" | "Unavailable" | "RateLimitExceeded" => {
            ("The server is busy", "Try again in a moment; the map may still be building.")
        }
        _ => ("Something went wrong", "The server could not answer; its log says why."),
    };
    let body = html! {
        h1 { (title) }
        p class="error" role="alert" { (e.message) }
        p { (hint) }
        p { a href="/" { "Back to the network at a glance" } }
    };
    respond(e.status, frame(title, q, None, body), started)
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "style.css" => (page::STYLE, "text/css; charset=utf-8"),
        "explorer.js" => (page::SCRIPT, "text/javascript; charset=utf-8"),
        _ => return ApiError::not_found("NotFound", "no such asset").into_response(),
    };
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

// ---------------------------------------------------------------- home and search

async fn home(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let started = Instant::now();
    let p = params(raw);
    match p.get("q").map(|q| q.trim()).filter(|q| !q.is_empty()) {
        Some(q) => search(&st, q, p.get("reason").map(String::as_str), started).await,
        None => match glance(&st).await {
            Ok(body) => respond(StatusCode::OK, body, started),
            Err(e) => error_page(&e, "", started),
        },
    }
}

/// The network at a glance.
async fn glance(st: &ApiState) -> Result<Markup, ApiError> {
    let s = api(query::get_summary, st, String::new()).await?;
    let top = api(query::list_instances, st, page::query(&[("limit", "10")])).await?;
    let inst = &s["concentration"]["instances"];
    let hosts = &s["concentration"]["hosts"];
    let assigned = s["accounts"]["assigned"].as_i64().unwrap_or(0);
    let bars: Vec<Bar> = top["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| Bar {
            label: i["name"].as_str().unwrap_or_default().to_owned(),
            value: i["members"]["registered"].as_i64().unwrap_or(0),
            href: i["id"].as_str().map(|id| format!("/instance/{id}")),
        })
        .collect();
    let lorenz: Vec<[f64; 2]> = serde_json::from_value(inst["lorenz"].clone()).unwrap_or_default();
    let gini = inst["gini"].as_f64().unwrap_or(0.0);
    let unassigned = s["accounts"]["unassigned"].as_object().cloned().unwrap_or_default();
    let ingest = &s["ingest"];
    let body = html! {
        h1 { "The network at a glance" }
        p class="lede" {
            "instancemap groups ATProto accounts into " strong { "instances" }
            ": the hosts, account domains and declared governance one operator controls. "
            "Search an account above to see who is responsible for it."
        }
        section aria-labelledby="totals" {
            h2 id="totals" { "Totals" }
            ul class="tiles" {
                li { span class="big" { (num(assigned)) } " accounts in instances" }
                li { span class="big" { (jnum(&s["instances"])) } " instances" }
                li { span class="big" { (num(s["hosts"].as_object().map_or(0, |m| m.values().filter_map(Value::as_i64).sum()))) } " hosts" }
                li { span class="big" { (jnum(&s["declarations"]["verified"])) } " verified operator declarations" }
            }
            div class="cols" {
                div {
                    h3 { "Accounts outside any instance" }
                    @if unassigned.is_empty() { p { "None." } }
                    @else {
                        table { caption class="sr" { "Accounts outside any instance, by why" }
                            thead { tr { th scope="col" { "why" } th scope="col" class="n" { "accounts" } } }
                            tbody { @for (k, v) in &unassigned { tr { td { (words(k)) } td class="n" { (jnum(v)) } } } }
                        }
                    }
                }
                div {
                    h3 { "Hosts by crawl state" }
                    table { caption class="sr" { "Hosts by the crawler's last state" }
                        thead { tr { th scope="col" { "state" } th scope="col" class="n" { "hosts" } } }
                        tbody { @for (k, v) in s["hosts"].as_object().into_iter().flatten() { tr { td { (words(k)) } td class="n" { (jnum(v)) } } } }
                    }
                }
            }
        }
        section aria-labelledby="conc" {
            h2 id="conc" { "How concentrated the network is" }
            p {
                "The largest instance holds " strong { (pct(inst["top1_share"].as_f64().unwrap_or(0.0))) } " of accounts; "
                "the largest 5 hold " strong { (pct(inst["top5_share"].as_f64().unwrap_or(0.0))) } " and the largest 10 "
                strong { (pct(inst["top10_share"].as_f64().unwrap_or(0.0))) } ". "
                "Herfindahl–Hirschman index " strong { (num((inst["hhi"].as_f64().unwrap_or(0.0) * 10_000.0).round() as i64)) }
                " of 10,000 (above 2,500 is highly concentrated); Gini " (format!("{gini:.3}")) ". "
                "Over single hosts: the largest holds " (pct(hosts["top1_share"].as_f64().unwrap_or(0.0)))
                ", HHI " (num((hosts["hhi"].as_f64().unwrap_or(0.0) * 10_000.0).round() as i64)) "."
            }
            div class="cols" {
                figure {
                    (chart::bars("topbars", "The 10 largest instances by registered accounts", &bars, Some(assigned)))
                    figcaption { "The 10 largest instances by registered accounts, with their share of all accounts in instances. " a href="/instances" { "All instances" } }
                }
                figure {
                    (chart::lorenz("lorenz", &lorenz, gini))
                    figcaption { "Lorenz curve: the further below the diagonal, the more unequal." }
                }
            }
        }
        section aria-labelledby="fresh" {
            h2 id="fresh" { "How fresh the map is" }
            dl class="facts" {
                dt { "Map" }
                dd {
                    @if s["map"]["current"] == true { "current: every change stored is in the map" }
                    @else { "catching up: " (jnum(&s["map"]["pendingAccounts"])) " accounts waiting"
                        @if s["map"]["structurePending"] == true { ", hosts or declarations changed" } }
                }
                @if let Some(f) = ingest.get("firehose") {
                    dt { "Relay" }
                    dd {
                        @if f["connected"] == true { "connected" } @else { "not connected" }
                        @if let Some(l) = f["lagSeconds"].as_f64() { ", " (format!("{l:.1}")) " s behind" }
                    }
                }
                dt { "Firehose cursors" }
                dd {
                    @if ingest["cursors"].as_object().is_none_or(|c| c.is_empty()) { "none: no relay or replay has been read" }
                    @for (src, c) in ingest["cursors"].as_object().into_iter().flatten() {
                        span class="pair" { code { (src) } " at " (jnum(c)) } " "
                    }
                }
                dt { "PLC directory" }
                dd {
                    @match ingest["plc"]["lastOperationAt"].as_str() {
                        Some(t) => { "last operation loaded from " (ago(&Value::String(t.to_owned())))
                            @if let Some(seq) = ingest["plc"]["seq"].as_i64() { " (sequence " (num(seq)) ")" } }
                        None => "no export loaded",
                    }
                }
            }
        }
    };
    Ok(frame("The network at a glance", "", Some(&s["map"]), body))
}

/// Where a search goes: the card of an account (a DID, handle or `at://`
/// URI), else the instance of a host or a name.
async fn search(st: &ApiState, q: &str, reason: Option<&str>, started: Instant) -> Response {
    if q.starts_with("inst_") {
        return redirect(&format!(
            "/instance/{}",
            url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        ));
    }
    let parsed = query::parse_subject(q);
    // a host or a name looks like a handle, or like nothing the lookup
    // takes; a DID or an at:// URI is neither
    let also = match &parsed {
        Ok(query::Subject::Did(_) | query::Subject::Uri { .. }) => None,
        _ => find_instance(st, q).await,
    };
    let e = match parsed {
        Ok(subject) => {
            let mut qs = vec![("subject", q)];
            if let Some(r) = reason.filter(|r| !r.is_empty()) {
                qs.push(("reason", r));
            }
            match api(query::lookup, st, page::query(&qs)).await {
                Ok(v) => {
                    // a handle that is also a host or an instance's name
                    let also = also.filter(|_| matches!(subject, query::Subject::Handle(_)));
                    return card(st, q, v, also, started).await;
                }
                Err(e) => e,
            }
        }
        Err(why) => ApiError::bad(format!("{q:?}: {why}")),
    };
    if matches!(e.error, "HandleNotFound" | "InvalidRequest") {
        if let Some((id, _)) = also {
            return redirect(&format!("/instance/{id}"));
        }
    }
    error_page(&e, q, started)
}

/// The instance a search names as a host (`pds.example.com` or its URL)
/// or by its name, with what matched.
async fn find_instance(st: &ApiState, q: &str) -> Option<(String, String)> {
    let q = q.trim().trim_end_matches('/').to_ascii_lowercase();
    st.read(move |st| {
        let endpoint =
            if q.starts_with("https://") || q.starts_with("http://") { q.clone() } else { format!("https://{q}") };
        if let Some(id) = crate::cluster::map::instance_id_of_host(&st.store, &endpoint)? {
            return Ok(Some((id, format!("the host {endpoint}"))));
        }
        let all = st.cache.instances(&st.store)?;
        Ok(all
            .iter()
            .find(|i| i.name.to_ascii_lowercase() == q)
            .map(|i| (i.id.clone(), format!("the instance {}", i.name))))
    })
    .await
    .ok()
    .flatten()
}

// ---------------------------------------------------------------- the card

/// Addresses an operator marked confidential, anywhere in an answer's
/// contacts: never displayed.
fn confidential(v: &Value) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut visit = |c: &Value| {
        if c["confidential"] == true {
            for k in ["email", "url", "account", "address"] {
                if let Some(s) = c[k].as_str() {
                    out.insert(s.to_owned());
                }
            }
        }
    };
    for e in v["entities"].as_array().into_iter().flatten() {
        e["contacts"].as_array().into_iter().flatten().for_each(&mut visit);
    }
    for r in v["routes"].as_array().into_iter().flatten() {
        visit(r);
    }
    for rs in v["routesByReason"].as_object().into_iter().flatten().map(|(_, r)| r) {
        rs.as_array().into_iter().flatten().for_each(&mut visit);
    }
    for c in v["governance"]["contacts"].as_array().into_iter().flatten() {
        visit(c);
    }
    out
}

/// `text` with every confidential address in it replaced by words.
fn redact(text: &str, hidden: &HashSet<String>) -> String {
    let mut t = text.to_owned();
    for h in hidden.iter().filter(|h| !h.is_empty()) {
        t = t.replace(h.as_str(), "a confidential contact (given to reporters through the API's lookup)");
    }
    t
}

/// A contact unless it is confidential.
fn shown(s: &str, hidden: &HashSet<String>) -> Markup {
    if hidden.contains(s) {
        html! { span class="muted" { "(confidential: given to reporters through the API's lookup, not shown here)" } }
    } else {
        contact(s)
    }
}

async fn card(st: &ApiState, q: &str, v: Value, also: Option<(String, String)>, started: Instant) -> Response {
    let did = v["did"].as_str().unwrap_or_default().to_owned();
    let history = api(query::get_account_history, st, page::query(&[("did", &did)])).await.ok();
    let names = if history.as_ref().is_some_and(|h| h["timeline"].as_array().is_some_and(|t| t.len() > 1)) {
        names_of(st).await
    } else {
        // one host: its instance's name is in the answer already
        let mut m = std::collections::HashMap::new();
        if let (Some(id), Some(n)) = (v["instance"]["id"].as_str(), v["instance"]["name"].as_str()) {
            m.insert(id.to_owned(), n.to_owned());
        }
        m
    };
    let hidden = confidential(&v);
    let name = v["handle"].as_str().unwrap_or(&did).to_owned();
    let lookup_path = format!(
        "/xrpc/dev.instancemap.lookup?{}",
        page::query(&[("subject", q), ("reason", v["reason"].as_str().unwrap_or(""))])
    );
    let body = html! {
        h1 { "Who is responsible for " bdi { (name) } }
        @if let Some((id, what)) = &also {
            p class="notice" { "This is also " a href={ "/instance/" (id) } { bdi { (what) } } "." }
        }
        p class="lede explanation" { (redact(v["explanation"].as_str().unwrap_or_default(), &hidden)) }
        dl class="facts" {
            dt { "DID" }
            dd { code { (did) } " " button type="button" class="copy" data-copy=(did) hidden aria-label="Copy the DID" { "Copy" } }
            dt { "Handle" }
            dd {
                @match v["handle"].as_str() {
                    Some(h) => { bdi { (h) } " " @if v["handleVerified"] == true { span class="ok" { "verified both ways" } } @else { span class="warn" { "not verified" } } }
                    None => "none known",
                }
            }
            dt { "State" }
            dd {
                (words(v["state"].as_str().unwrap_or("unknown")))
                @if let Some(a) = v["account"].as_object() {
                    " · on the relay: " (a.get("status").and_then(Value::as_str).unwrap_or("?"))
                }
            }
            dt { "Hosted on" }
            dd { @match v["host"].as_str() { Some(h) => code { (h) }, None => "no PDS" } }
            dt { "Instance" }
            dd {
                @match v["instance"]["id"].as_str() {
                    Some(id) => { a href={ "/instance/" (id) } { bdi { (v["instance"]["name"].as_str().unwrap_or(id)) } }
                        " (" (plural(v["instance"]["hosts"].as_i64().unwrap_or(0), "host")) ")" }
                    None => "none",
                }
            }
            @if let Some(r) = v.get("record") {
                dt { "Record" }
                dd { code { (r["collection"].as_str().unwrap_or("")) "/" (r["rkey"].as_str().unwrap_or("")) } }
            }
        }
        section aria-labelledby="routes" {
            h2 id="routes" {
                "Who to tell"
                @if let Some(r) = v["reason"].as_str() { " about " (r) }
            }
            (route_list(&v["routes"], &hidden))
            @let by = v["routesByReason"].as_object().cloned().unwrap_or_default();
            @if !by.is_empty() {
                h3 { "By report reason" }
                @for (reason, rs) in &by {
                    details {
                        summary { (reason) }
                        (route_list(rs, &hidden))
                    }
                }
            }
        }
        section aria-labelledby="parties" {
            h2 id="parties" { "Responsible parties" }
            @if v["entities"].as_array().is_none_or(|e| e.is_empty()) {
                p { "None: the account has no host the map can place (" (words(v["state"].as_str().unwrap_or(""))) ")." }
            }
            @for e in v["entities"].as_array().into_iter().flatten() {
                (entity(e, &hidden))
            }
        }
        section aria-labelledby="observers" {
            h2 id="observers" { "Status by observer" }
            (observers(&v["observers"]))
        }
        section aria-labelledby="history" {
            h2 id="history" { "Hosting history" }
            (timeline(history.as_ref(), &names))
        }
        (json_link(&lookup_path))
    };
    respond(StatusCode::OK, frame(&format!("Who is responsible for {name}"), q, Some(&v["map"]), body), started)
}

fn route_list(rs: &Value, hidden: &HashSet<String>) -> Markup {
    let rs = rs.as_array().cloned().unwrap_or_default();
    html! {
        @if rs.is_empty() {
            p { "No route is known: nobody responsible has been found with a way to reach them." }
        } @else {
            ol class="routes" {
                @for r in &rs {
                    li {
                        strong { (words(r["party"].as_str().unwrap_or(""))) }
                        @if let Some(w) = r["who"].as_str().filter(|w| !w.is_empty()) { " · " bdi { (w) } }
                        br;
                        @match r["channel"].as_str().unwrap_or("none") {
                            "none" => span class="warn" { "publishes no contact" },
                            ch => {
                                (ch) ": "
                                @if r["confidential"] == true || hidden.contains(r["address"].as_str().unwrap_or("")) {
                                    span class="muted" { "(confidential: given to reporters through the API's lookup, not shown here)" }
                                } @else {
                                    (contact(r["address"].as_str().unwrap_or("")))
                                }
                            }
                        }
                        @if let Some(role) = r["role"].as_str() { " (" (role) " contact)" }
                        @if let Some(c) = r.get("check").filter(|c| c.is_object()) {
                            " · "
                            @if c["ok"] == true { span class="ok" { "checked" } } @else if c["ok"] == false { span class="warn" { "check failed" } } @else { span class="muted" { "not checked yet" } }
                            @if c["stale"] == true && c["ok"].is_boolean() { " " span class="warn" { "(not confirmed within 7 days)" } }
                        }
                        div class="evidence" { (r["evidence"].as_str().unwrap_or("")) " · last checked " (ago(&r["lastChecked"])) }
                    }
                }
            }
        }
    }
}

fn entity(e: &Value, hidden: &HashSet<String>) -> Markup {
    let roles: Vec<String> = e["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).map(words).collect();
    html! {
        article class="party" {
            h3 {
                (capitalised(&roles.join(", ")))
                @if let Some(k) = e["kind"].as_str() { " · " (if k == "pds" { "PDS".to_owned() } else { words(k) }) }
            }
            dl class="facts" {
                @if let Some(n) = e["name"].as_str() { dt { "Name (declared)" } dd { bdi { (n) } } }
                (refused_name(&e["declaredNameRefused"]))
                @if let Some(x) = e["endpoint"].as_str() { dt { "Host" } dd { code { (x) } @if let Some(s) = e["state"].as_str() { " (" (s) ")" } } }
                @if let Some(x) = e["did"].as_str() { dt { "DID" } dd { a href={ "/?" (page::query(&[("q", x)])) } { code { (x) } } } }
                @if let Some(x) = e["handle"].as_str() { dt { "Handle" } dd { bdi { (x) } } }
                @if let Some(x) = e["domain"].as_str() { dt { "Domain" } dd { bdi { (x) } } }
                (web_link("Privacy policy", &e["links"]["privacyPolicy"]))
                (web_link("Terms of service", &e["links"]["termsOfService"]))
                @if let Some(x) = e["contact"]["email"].as_str() { dt { "Contact (describeServer)" } dd { (shown(x, hidden)) } }
                (declared(e, hidden))
                dt { "Source" } dd { (e["source"].as_str().unwrap_or("")) }
                dt { "Last checked" } dd { (ago(&e["lastChecked"])) }
            }
            @let ev = e["evidence"].as_array().cloned().unwrap_or_default();
            @if !ev.is_empty() {
                ul class="evidence" {
                    @for x in &ev {
                        li {
                            (x["value"].as_str().unwrap_or(""))
                            @if let Some(h) = x["host"].as_str() { " (" code { (h) } ")" }
                            @if x.get("observedAt").is_some() { " · observed " (ago(&x["observedAt"])) }
                        }
                    }
                }
            }
        }
    }
}

/// What a verified declaration says of its operator, as `dt`/`dd` pairs:
/// the same camelCase fields in the lookup's operator entity and in an
/// instance's governance. Confidential contacts are left out.
fn declared(d: &Value, hidden: &HashSet<String>) -> Markup {
    html! {
        @if let Some(x) = d["serviceName"].as_str() { dt { "Service" } dd { bdi { (x) } } }
        (web_link("Home page", &d["homeUrl"]))
        (web_link("Support", &d["supportUrl"]))
        @if let Some(x) = d["moderationContact"].as_str() { dt { "Moderation contact" } dd { (shown(x, hidden)) } }
        @if let Some(x) = d["abuseContact"].as_str() { dt { "Abuse contact" } dd { (shown(x, hidden)) } }
        @for c in d["contacts"].as_array().into_iter().flatten().filter(|c| c["confidential"] != true) {
            @for k in ["email", "url", "account"] {
                @if let Some(x) = c[k].as_str() {
                    dt { "Contact for " (words(c["role"].as_str().unwrap_or("anything"))) }
                    dd { (shown(x, hidden)) }
                }
            }
        }
        @if let Some(x) = d["moderationService"].as_str() { dt { "Moderation service" } dd { code { (x) } } }
        @if let Some(x) = d["jurisdiction"].as_str() { dt { "Jurisdiction" } dd { (x) } }
    }
}

/// A declared name refused as an imitation, with why (nothing if none).
fn refused_name(r: &Value) -> Markup {
    html! {
        @if r.is_object() {
            dt { "Declared name refused" }
            dd class="warn" { bdi { (r["name"].as_str().unwrap_or("")) } ": " (r["why"].as_str().unwrap_or("")) }
        }
    }
}

/// A web address an operator wrote, linked when it is one.
fn web_link(label: &str, u: &Value) -> Markup {
    html! {
        @if let Some(s) = u.as_str() {
            dt { (label) }
            dd { @match page::safe_href(s).filter(|h| h.starts_with("http")) {
                Some(h) => a href=(h) rel="nofollow noopener noreferrer" { bdi { (s) } },
                None => bdi { (s) },
            } }
        }
    }
}

/// "1 host", "3 hosts".
fn plural(n: i64, one: &str) -> String {
    format!("{} {one}{}", num(n), if n == 1 { "" } else { "s" })
}

/// `s` with its first letter in capitals.
fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

fn observers(o: &Value) -> Markup {
    let rows = [("its PDS", &o["pds"]), ("the relay", &o["relay"]), ("the PLC directory", &o["plc"])];
    html! {
        div class="scroll" role="region" aria-label="Status by observer" tabindex="0" {
        table {
            caption class="sr" { "The account's status as each observer reports it" }
            thead { tr { th scope="col" { "observer" } th scope="col" { "says" } th scope="col" { "as of" } th scope="col" { "source" } } }
            tbody {
                @for (who, v) in rows {
                    tr {
                        th scope="row" { (who) }
                        @if v.is_null() { td colspan="3" class="muted" { "nothing observed" } }
                        @else {
                            td {
                                @if let Some(t) = v.get("tombstoned") { @if t == true { "tombstoned" } @else { "not tombstoned" } }
                                @else {
                                    @if v["active"] == true { "active" } @else if v["active"] == false { "inactive" }
                                    @if let Some(s) = v["status"].as_str().filter(|s| *s != "active") { " (" (s) ")" }
                                }
                            }
                            td { (ago(v.get("seenAt").or(v.get("updatedAt")).unwrap_or(&Value::Null))) }
                            td { (v["source"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        }
        @if let Some(d) = o["disagreement"].as_str() { p class="warn" { "The observers disagree: " (d) } }
    }
}

fn timeline(h: Option<&Value>, names: &std::collections::HashMap<String, String>) -> Markup {
    let items = h.and_then(|h| h["timeline"].as_array()).cloned().unwrap_or_default();
    html! {
        @if items.is_empty() {
            p { "No dated host is known for this account." }
        } @else {
            p { @if items.len() == 1 { "One host, never moved." } @else { (items.len() - 1) " move(s), oldest first." } }
            ol class="timeline" {
                @for t in &items {
                    li {
                        strong { (t["at"].as_str().map_or("", |a| a.get(..10).unwrap_or(a))) } " (" (ago(&t["at"])) ") · "
                        @match t["host"].as_str() { Some(x) => code { (x) }, None => "no PDS" }
                        @if let Some(id) = t["instance"].as_str() {
                            " · " a href={ "/instance/" (id) } { bdi { (names.get(id).map_or(id, String::as_str)) } }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- an instance

async fn instance(State(st): State<ApiState>, Path(id): Path<String>) -> Response {
    let started = Instant::now();
    match instance_page(&st, &id).await {
        Ok(body) => respond(StatusCode::OK, body, started),
        Err(e) => error_page(&e, "", started),
    }
}

async fn instance_page(st: &ApiState, id: &str) -> Result<Markup, ApiError> {
    let v = api(query::get_instance, st, page::query(&[("id", id)])).await?;
    let hosts = api(query::list_hosts, st, page::query(&[("instance", id), ("limit", "100")])).await?;
    let members = api(query::list_members, st, page::query(&[("id", id), ("limit", "20")])).await?;
    let days: Vec<(String, i64)> = every_page(query::get_growth, st, &[("id", id)], "days")
        .await?
        .iter()
        .map(|d| (d["day"].as_str().unwrap_or_default().to_owned(), d["total"].as_i64().unwrap_or(0)))
        .collect();
    // flows in and out since its first day, by partner
    let from = days.first().map_or_else(crate::clock::today, |d| d.0.clone());
    let (mut inflow, mut outflow): (BTreeMap<String, i64>, BTreeMap<String, i64>) = Default::default();
    for e in every_page(query::get_flows, st, &[("from", &from)], "flows").await? {
        let (a, b, n) =
            (e["from"].as_str().unwrap_or(""), e["to"].as_str().unwrap_or(""), e["accounts"].as_i64().unwrap_or(0));
        if b == id && a != id {
            *inflow.entry(a.to_owned()).or_default() += n;
        } else if a == id && b != id {
            *outflow.entry(b.to_owned()).or_default() += n;
        }
    }
    let names = names_of(st).await;
    let flow_bars = |m: &BTreeMap<String, i64>| -> Vec<Bar> {
        let mut v: Vec<(&String, &i64)> = m.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.into_iter()
            .take(10)
            .map(|(k, n)| Bar {
                label: names.get(k).cloned().unwrap_or_else(|| k.clone()),
                value: *n,
                href: k.starts_with("inst_").then(|| format!("/instance/{k}")),
            })
            .collect()
    };
    let (ins, outs) = (flow_bars(&inflow), flow_bars(&outflow));
    let hidden = confidential(&v);
    let name = v["name"].as_str().unwrap_or(id).to_owned();
    let g = &v["governance"];
    let act = &v["activity"];
    let body = html! {
        h1 { bdi { (name) } }
        p class="lede" {
            code { (id) } " · " (jnum(&v["members"]["registered"])) " registered accounts on "
            (plural(v["hosts"].as_array().map_or(0, Vec::len) as i64, "host")) " · "
            @if v["declared"] == true { span class="ok" { "verified operator declaration" } } @else { span class="muted" { "no verified operator declaration" } }
        }
        dl class="facts" {
            dt { "Grouped by" } dd { (v["evidenceKinds"].as_array().into_iter().flatten().filter_map(Value::as_str).map(words).collect::<Vec<_>>().join(", ")) }
            dt { "Anchor" } dd { code { (v["anchor"].as_str().unwrap_or("")) } }
            @if let Some(d) = v["registrableDomains"].as_array().filter(|d| !d.is_empty()) {
                dt { "Domains" } dd { (d.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")) }
            }
            @if let Some(d) = v["userDomains"].as_array().filter(|d| !d.is_empty()) {
                dt { "Account domains" } dd { (d.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")) }
            }
            dt { "Computed" } dd { (ago(&v["computedAt"])) }
        }
        section aria-labelledby="hosts" {
            h2 id="hosts" { "Hosts" }
            div class="scroll" role="region" aria-label="Hosts" tabindex="0" {
                table {
                    caption class="sr" { "The instance's hosts" }
                    thead { tr { th scope="col" { "host" } th scope="col" { "state" } th scope="col" { "version" } th scope="col" class="n" { "registered" } th scope="col" { "last checked" } } }
                    tbody {
                        @for h in hosts["hosts"].as_array().into_iter().flatten() {
                            tr {
                                td { code { (h["host"].as_str().unwrap_or("")) } }
                                td { (h["state"].as_str().unwrap_or("")) }
                                td { (h["version"].as_str().unwrap_or("–")) }
                                td class="n" { (jnum(&h["members"]["registered"])) }
                                td { (ago(&h["lastChecked"])) }
                            }
                        }
                    }
                }
            }
            @if hosts["cursor"].is_string() {
                p { "The first 100 of " (jnum(&hosts["total"])) " hosts; all of them: "
                    a href={ "/xrpc/dev.instancemap.listHosts?" (page::query(&[("instance", id)])) } { "listHosts" } "." }
            }
            @let proofs = v["domainProofs"].as_array().cloned().unwrap_or_default();
            @let unproven = v["unprovenDomains"].as_array().cloned().unwrap_or_default();
            @if !proofs.is_empty() || !unproven.is_empty() {
                h3 { "Account domains" }
                ul {
                    @for p in &proofs {
                        li { span class="ok" { "proven" } " " bdi { (p["domain"].as_str().unwrap_or("")) } " on " code { (p["host"].as_str().unwrap_or("")) }
                            ": " (p["how"].as_str().unwrap_or("")) " (" (plural(p["accounts"].as_i64().unwrap_or(0), "account")) ", observed " (ago(&p["observedAt"])) ")" }
                    }
                    @for u in &unproven {
                        li { span class="warn" { "not proven" } " " bdi { (u["domain"].as_str().unwrap_or("")) } " on " code { (u["host"].as_str().unwrap_or("")) }
                            ": " (u["why"].as_str().unwrap_or("")) }
                    }
                }
            }
            @let evidence = v["evidence"].as_array().cloned().unwrap_or_default();
            @if !evidence.is_empty() {
                details {
                    summary { "Why these hosts are one instance (" (evidence.len()) " pieces of evidence)" }
                    ul class="evidence" {
                        @for e in &evidence {
                            li { code { (e["host"].as_str().unwrap_or("")) } ": " (words(e["kind"].as_str().unwrap_or(""))) " "
                                bdi { (e["value"].as_str().unwrap_or("")) } " · observed " (ago(&e["observedAt"])) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="operator" {
            h2 id="operator" { "Operator and governance" }
            @if g.is_object() {
                dl class="facts" {
                    dt { "Operator" } dd { a href={ "/?" (page::query(&[("q", v["operator"].as_str().unwrap_or(""))])) } { code { (v["operator"].as_str().unwrap_or("")) } } }
                    @if v["declaredNameRefused"].is_object() {
                        (refused_name(&v["declaredNameRefused"]))
                    } @else {
                        dt { "Declared name" } dd { bdi { (g["name"].as_str().unwrap_or("")) } }
                    }
                    (declared(g, &hidden))
                }
            } @else {
                p { "No operator has a verified declaration for these hosts. The hosts' own describeServer contacts are the way to reach whoever runs them." }
            }
            h3 { "Declarations claiming these hosts" }
            @let decls = v["declarations"].as_array().cloned().unwrap_or_default();
            @if decls.is_empty() { p { "None." } }
            @for d in &decls {
                article class="party" {
                    h4 { bdi { (d["name"].as_str().unwrap_or("")) } " · " code { (d["operator"].as_str().unwrap_or("")) } }
                    ul {
                        @for h in d["verified_hosts"].as_array().into_iter().flatten() { li { span class="ok" { "verified" } " host " code { (h.as_str().unwrap_or("")) } } }
                        @for h in d["verified_domains"].as_array().into_iter().flatten() { li { span class="ok" { "verified" } " domain " (h.as_str().unwrap_or("")) } }
                        @for c in d["confirmed"].as_array().into_iter().flatten() { li { span class="ok" { "confirmed" } " " bdi { (c[0].as_str().unwrap_or("")) } ": " (c[1].as_str().unwrap_or("")) } }
                        @for c in d["unverified"].as_array().into_iter().flatten() { li { span class="warn" { "refused" } " " bdi { (c[0].as_str().unwrap_or("")) } ": " (c[1].as_str().unwrap_or("")) } }
                    }
                }
            }
            @if let Some(c) = v["conflict"].as_array().filter(|c| !c.is_empty()) {
                p class="warn" { "Conflicting claims: " (c.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).collect::<Vec<_>>().join("; ")) }
            }
            @let labelers = v["labelers"].as_array().cloned().unwrap_or_default();
            @if !labelers.is_empty() {
                h3 { "Labelers it applies" }
                ul {
                    @for l in &labelers {
                        li { code { (l["did"].as_str().unwrap_or("")) } " · "
                            @match l["conformance"].as_object() {
                                Some(c) => { @if c.get("ok") == Some(&Value::Bool(true)) { span class="ok" { "conforms" } } @else { span class="warn" { "does not conform" } } }
                                None => span class="muted" { "not checked yet" },
                            }
                            " · checked " (ago(&l["checkedAt"])) }
                    }
                }
            }
        }
        section aria-labelledby="members" {
            h2 id="members" { "Members" }
            div class="cols" {
                table {
                    caption { "Accounts by how they are known" }
                    thead { tr { th scope="col" { "provenance" } th scope="col" class="n" { "accounts" } } }
                    tbody { @for (k, n) in v["members"].as_object().into_iter().flatten() { tr { td { (words(k)) } td class="n" { (jnum(n)) } } } }
                }
                table {
                    caption { "Activity" }
                    tbody {
                        tr { th scope="row" { "active today" } td class="n" { (jnum(&act["active1d"])) } }
                        tr { th scope="row" { "active in 7 days" } td class="n" { (jnum(&act["active7d"])) } }
                        tr { th scope="row" { "active in 30 days" } td class="n" { (jnum(&act["active30d"])) } }
                        tr { th scope="row" { "open registration" } td class="n" { @if act["openRegistration"] == true { "yes" } @else { "no" } } }
                        tr { th scope="row" { "sign-up spike" } td class="n" { @if act["signupSpike"].is_object() { "yes" } @else { "no" } } }
                    }
                }
            }
            h3 { "Some members" }
            ul class="members" {
                @for m in members["members"].as_array().into_iter().flatten() {
                    @let d = m["did"].as_str().unwrap_or("");
                    li { a href={ "/?" (page::query(&[("q", d)])) } { (m["handle"].as_str().unwrap_or(d)) } }
                }
            }
            p { "All members: " a href={ "/xrpc/dev.instancemap.listMembers?" (page::query(&[("id", id)])) } { "listMembers" } "." }
        }
        section aria-labelledby="growth" {
            h2 id="growth" { "Growth" }
            @if days.is_empty() { p { "No dated change is recorded for this instance." } }
            @else {
                figure {
                    (chart::growth("growthchart", &format!("Registered accounts of {name} per day, {} days with a change", days.len()), &days))
                    figcaption { "Registered accounts, one point per day with a change (" (days.len()) " days)." }
                }
                details {
                    summary { "The figures" }
                    div class="scroll" role="region" aria-label="Growth per day" tabindex="0" {
                        table { thead { tr { th scope="col" { "day" } th scope="col" class="n" { "registered" } } }
                            tbody { @for (d, n) in &days { tr { td { (d) } td class="n" { (num(*n)) } } } } }
                    }
                }
            }
        }
        section aria-labelledby="flows" {
            h2 id="flows" { "Migrations in and out" }
            @if ins.is_empty() && outs.is_empty() { p { "No account is known to have moved in or out since " (from) "." } }
            div class="cols" {
                @if !ins.is_empty() { figure { (chart::bars("flowin", "Accounts that moved in, by where from", &ins, None)) figcaption { "Moved in, by where from (" (num(inflow.values().sum())) " in all)." } } }
                @if !outs.is_empty() { figure { (chart::bars("flowout", "Accounts that moved out, by where to", &outs, None)) figcaption { "Moved out, by where to (" (num(outflow.values().sum())) " in all)." } } }
            }
        }
        (json_link(&format!("/xrpc/dev.instancemap.getInstance?{}", page::query(&[("id", id)]))))
    };
    Ok(frame(&name, "", Some(&v["map"]), body))
}

/// Instance names by id (the cached list; ids unknown to it keep their id).
async fn names_of(st: &ApiState) -> std::collections::HashMap<String, String> {
    st.read(|st| Ok(st.cache.instances(&st.store)?.iter().map(|i| (i.id.clone(), i.name.clone())).collect()))
        .await
        .unwrap_or_default()
}

// ---------------------------------------------------------------- the list

async fn instances(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let started = Instant::now();
    let p = params(raw);
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let (sort, min, declared, status, cursor) =
        (get("sort"), get("minMembers"), get("hasDeclaration"), get("hostStatus"), get("cursor"));
    let limit = if get("limit").is_empty() { "50" } else { get("limit") };
    let qs = page::query(&[
        ("sort", sort),
        ("minMembers", min),
        ("hasDeclaration", declared),
        ("hostStatus", status),
        ("cursor", cursor),
        ("limit", limit),
    ]);
    let v = match api(query::list_instances, &st, qs).await {
        Ok(v) => v,
        Err(e) => return error_page(&e, "", started),
    };
    let offset: usize = cursor.parse().unwrap_or(0);
    let items = v["instances"].as_array().cloned().unwrap_or_default();
    let total = v["total"].as_i64().unwrap_or(0);
    let keep = |extra: &[(&str, &str)]| -> String {
        let mut base = vec![("sort", sort), ("minMembers", min), ("hasDeclaration", declared), ("hostStatus", status)];
        if limit != "50" {
            base.push(("limit", limit));
        }
        for (k, val) in extra {
            base.retain(|(b, _)| b != k);
            base.push((k, val));
        }
        format!("/instances?{}", page::query(&base))
    };
    let growth = sort == "growth";
    let body = html! {
        h1 { "Instances" }
        form class="filters" action="/instances" method="get" {
            div {
                label for="sort" { "Sort by" }
                select id="sort" name="sort" {
                    option value="members" selected[!growth] { "members" }
                    option value="growth" selected[growth] { "growth in 30 days" }
                }
            }
            div {
                label for="minMembers" { "At least this many members" }
                input id="minMembers" name="minMembers" type="number" min="0" value=(min) inputmode="numeric";
            }
            div {
                label for="hasDeclaration" { "Operator declaration" }
                select id="hasDeclaration" name="hasDeclaration" {
                    option value="" selected[declared.is_empty()] { "any" }
                    option value="true" selected[declared == "true"] { "verified" }
                    option value="false" selected[declared == "false"] { "none" }
                }
            }
            div {
                label for="hostStatus" { "With a host that is" }
                select id="hostStatus" name="hostStatus" {
                    option value="" selected[status.is_empty()] { "any" }
                    @for s in ["online", "offline", "pending"] { option value=(s) selected[status == s] { (s) } }
                }
            }
            button type="submit" { "Show" }
        }
        p role="status" {
            @if items.is_empty() { "No instance matches." }
            @else { "Instances " (num(offset as i64 + 1)) "–" (num((offset + items.len()) as i64)) " of " (num(total)) "." }
        }
        div class="scroll" role="region" aria-label="Instances" tabindex="0" {
            table class="list" {
                caption class="sr" { "Instances, " @if growth { "by growth in 30 days" } @else { "largest first" } }
                thead {
                    tr {
                        th scope="col" { "#" }
                        th scope="col" { "instance" }
                        th scope="col" class="n" aria-sort=(if growth { "none" } else { "descending" }) {
                            @if growth { a href=(keep(&[("sort", "members"), ("cursor", "")])) { "registered" } } @else { "registered ↓" }
                        }
                        th scope="col" class="n" aria-sort=(if growth { "descending" } else { "none" }) {
                            @if growth { "30-day growth ↓" } @else { a href=(keep(&[("sort", "growth"), ("cursor", "")])) { "30-day growth" } }
                        }
                        th scope="col" class="n" { "hosts" }
                        th scope="col" { "operator" }
                        th scope="col" { "grouped by" }
                    }
                }
                tbody {
                    @for (i, x) in items.iter().enumerate() {
                        @let id = x["id"].as_str().unwrap_or("");
                        tr {
                            td class="n" { (offset + i + 1) }
                            td { a href={ "/instance/" (id) } { bdi { (x["name"].as_str().unwrap_or(id)) } } }
                            td class="n" { (jnum(&x["members"]["registered"])) }
                            td class="n" { @if growth { (jnum(&x["growth30d"])) } @else { "–" } }
                            td class="n" { (jnum(&x["hosts"])) }
                            td { @if x["declared"] == true { span class="ok" { "declared" } } @else { span class="muted" { "–" } } }
                            td { (x["evidenceKinds"].as_array().into_iter().flatten().filter_map(Value::as_str).map(words).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if offset > 0 { a href=(keep(&[("cursor", "")])) { "First page" } }
            @if let Some(c) = v["cursor"].as_str() { a href=(keep(&[("cursor", c)])) rel="next" { "Next page" } }
        }
        (json_link(&format!("/xrpc/dev.instancemap.listInstances?{}",
            page::query(&[("sort", sort), ("minMembers", min), ("hasDeclaration", declared), ("hostStatus", status), ("cursor", cursor), ("limit", limit)]))))
    };
    respond(StatusCode::OK, frame("Instances", "", Some(&v["map"]), body), started)
}

// ---------------------------------------------------------------- flows

async fn flows(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let started = Instant::now();
    let p = params(raw);
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("").to_owned();
    let to = if get("to").is_empty() { crate::clock::today() } else { get("to") };
    let from =
        if get("from").is_empty() { crate::clock::day(crate::clock::now_ms() - 365 * 86_400_000) } else { get("from") };
    let top = if get("top").is_empty() { FLOW_TOP.to_string() } else { get("top") };
    let qs = page::query(&[("from", &from), ("to", &to), ("format", "matrix"), ("top", &top), ("limit", "1000")]);
    let v = match api(query::get_flows, &st, qs.clone()).await {
        Ok(v) => v,
        Err(e) => return error_page(&e, "", started),
    };
    let names = names_of(&st).await;
    let ids: Vec<String> =
        v["instances"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_owned)).collect();
    let matrix: Vec<Vec<i64>> = serde_json::from_value(v["matrix"].clone()).unwrap_or_default();
    // most moves in and out first, the rest (OTHER) last
    let volume = |i: usize| -> i64 {
        matrix.get(i).map_or(0, |r| r.iter().sum::<i64>())
            + matrix.iter().map(|r| r.get(i).copied().unwrap_or(0)).sum::<i64>()
    };
    let mut order: Vec<usize> = (0..ids.len().min(matrix.len())).collect();
    order.sort_by_key(|&i| (ids[i] == query::OTHER, std::cmp::Reverse(volume(i)), ids[i].clone()));
    let matrix: Vec<Vec<i64>> =
        order.iter().map(|&i| order.iter().map(|&j| matrix[i].get(j).copied().unwrap_or(0)).collect()).collect();
    let ids: Vec<String> = order.iter().map(|&i| ids[i].clone()).collect();
    let labels: Vec<String> = ids.iter().map(|i| names.get(i).cloned().unwrap_or_else(|| i.clone())).collect();
    let kept = ids.iter().filter(|i| *i != query::OTHER).count();
    // the largest flows, for the list beside the picture
    let mut pairs: Vec<(usize, usize, i64)> = Vec::new();
    for (i, row) in matrix.iter().enumerate() {
        for (j, n) in row.iter().enumerate() {
            if *n > 0 && i != j {
                pairs.push((i, j, *n));
            }
        }
    }
    pairs.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    let moved: i64 = pairs.iter().map(|p| p.2).sum();
    let link = |i: usize| -> Markup {
        html! { @if ids[i].starts_with("inst_") { a href={ "/instance/" (ids[i]) } { bdi { (labels[i]) } } } @else { (labels[i]) } }
    };
    let body = html! {
        h1 { "Migrations between instances" }
        form class="filters" action="/flows" method="get" {
            div { label for="from" { "From" } input id="from" name="from" type="date" value=(from); }
            div { label for="to" { "To" } input id="to" name="to" type="date" value=(to); }
            div { label for="top" { "Largest instances shown" } input id="top" name="top" type="number" min="1" max="200" value=(top); }
            button type="submit" { "Show" }
        }
        @if pairs.is_empty() {
            p { "No account is known to have moved between instances from " (from) " to " (to) ". "
                a href={ "/flows?" (page::query(&[("from", "2022-01-01"), ("to", &to)])) } { "All time" } }
        } @else {
            p { (num(moved)) " account moves from " (from) " to " (to) " between the " (kept) " instances most involved"
                @if kept < ids.len() { " (the rest together as " (query::OTHER) ")" } "." }
            figure {
                div class="scroll" role="region" aria-label="Migration matrix" tabindex="0" {
                    (chart::heatmap("heat", &labels, &matrix))
                }
                figcaption { "Rows: where accounts left; columns: where they went, numbered as the rows. Darker is more (log scale)." }
            }
            h2 { "The largest flows" }
            div class="scroll" role="region" aria-label="The largest flows" tabindex="0" {
                table {
                    caption class="sr" { "The largest flows" }
                    thead { tr { th scope="col" { "from" } th scope="col" { "to" } th scope="col" class="n" { "accounts" } } }
                    tbody { @for (i, j, n) in pairs.iter().take(25) { tr { td { (link(*i)) } td { (link(*j)) } td class="n" { (num(*n)) } } } }
                }
            }
        }
        (json_link(&format!("/xrpc/dev.instancemap.getFlows?{qs}")))
    };
    respond(StatusCode::OK, frame("Migrations between instances", "", None, body), started)
}
