//! The host table and crawler against fake servers on loopback: a PDS with
//! describeServer, _health and a paged listRepos; a dead host; a relay's
//! paged listHosts; the address guard.

mod common;

use std::collections::HashMap;

use axum::extract::Query;
use axum::routing::get;
use instancemap::hosts::{self, HostRecord};
use instancemap::net::Fetcher;
use instancemap::store::Store;
use serde_json::json;

async fn list_repos(Query(q): Query<HashMap<String, String>>) -> axum::Json<serde_json::Value> {
    // two pages, the second ending the listing
    axum::Json(match q.get("cursor").map(String::as_str) {
        None => json!({"cursor": "1789132177002::did:plc:page2", "repos": [
            {"did": "did:plc:xnu5z7akmky27sltgn7hbneu", "head": "bafy", "rev": "3mvan7ylpmc2w", "active": true},
            {"did": "did:plc:p2jidewytiik24tsb37m4ktc", "head": "bafy", "rev": "3mvan7yikzk2w", "active": false, "status": "deactivated"},
            {"did": "did:plc:e56xi43bwhhrzjgntitmqt64", "head": "bafy", "rev": "3mvan7xswnc2w", "active": false, "status": "takendown"}]}),
        Some("1789132177002::did:plc:page2") => json!({"repos": [
            {"did": "did:plc:4jga5jladekhy5csoe62kfkm", "head": "bafy", "rev": "3mvan7xus7k2w", "active": true},
            {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "head": "bafy", "rev": "3mvan7xus7k2x", "active": true}]}),
        Some(other) => panic!("unexpected cursor {other}"),
    })
}

async fn list_hosts(Query(q): Query<HashMap<String, String>>) -> axum::Json<serde_json::Value> {
    axum::Json(match q.get("cursor").map(String::as_str) {
        None => json!({"cursor": "2", "hosts": [
            {"hostname": "pds1.example.com", "seq": 123, "accountCount": 10, "status": "active"}]}),
        _ => json!({"hosts": [{"hostname": "PDS2.example.com.", "accountCount": 3, "status": "throttled"}]}),
    })
}

async fn start_pds() -> String {
    let app = axum::Router::new()
        .route(
            "/xrpc/com.atproto.server.describeServer",
            get(|| async {
                axum::Json(json!({"did": "did:web:pds.test", "availableUserDomains": [".pds-a.test"],
                    "inviteCodeRequired": false, "links": {"privacyPolicy": "https://pds.test/privacy", "termsOfService": "https://pds.test/tos"},
                    "contact": {"email": "abuse@pds.test"}}))
            }),
        )
        .route("/xrpc/_health", get(|| async { axum::Json(json!({"version": "0.4.999"})) }))
        .route("/xrpc/com.atproto.sync.listRepos", get(list_repos))
        .route("/xrpc/com.atproto.sync.listHosts", get(list_hosts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://localhost:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawls_a_pds_and_marks_a_dead_host_offline() {
    let pds = start_pds().await;
    let dead = format!("http://localhost:{}", common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    hosts::note(&store, &pds, "did_document").unwrap();
    hosts::note(&store, &dead, "did_document").unwrap();
    assert_eq!(hosts::get(&store, &pds).unwrap().unwrap().state, "pending");

    let fetcher = Fetcher::new(true);
    assert_eq!(hosts::crawl_due(&store, &fetcher, false).await.unwrap(), 2, "pending hosts are due");
    let h: HostRecord = hosts::get(&store, &pds).unwrap().unwrap();
    assert_eq!(h.state, "online");
    let d = h.describe.unwrap();
    assert_eq!(d.did.as_deref(), Some("did:web:pds.test"));
    assert_eq!(d.available_user_domains, vec![".pds-a.test"]);
    assert_eq!(d.contact_email.as_deref(), Some("abuse@pds.test"));
    assert_eq!(d.terms_of_service.as_deref(), Some("https://pds.test/tos"));
    assert_eq!(h.version.as_deref(), Some("0.4.999"));
    let r = h.repos.unwrap();
    assert_eq!((r.total, r.active, r.complete), (5, 3, true));
    assert_eq!(r.inactive.get("takendown"), Some(&1));
    assert_eq!(r.inactive.get("deactivated"), Some(&1));

    let off = hosts::get(&store, &dead).unwrap().unwrap();
    assert_eq!(off.state, "offline");
    assert_eq!(off.failures, 1);
    let since = off.offline_since_ms.unwrap();
    // nothing is due now: the online host waits for its recrawl, the dead one for its backoff
    assert_eq!(hosts::crawl_due(&store, &fetcher, false).await.unwrap(), 0);
    hosts::crawl_due(&store, &fetcher, true).await.unwrap();
    let off = hosts::get(&store, &dead).unwrap().unwrap();
    assert_eq!((off.failures, off.offline_since_ms), (2, Some(since)), "offline since the first failure");

    // the guard: loopback refused unless allowed
    let strict = Fetcher::new(false);
    let refused = hosts::crawl(&store, &strict, &pds).await.unwrap();
    assert_eq!(refused.last_error.as_deref(), Some("refused_address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_the_relays_list_hosts() {
    let relay = start_pds().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let n = hosts::list_hosts(&store, &Fetcher::new(true), &relay).await.unwrap();
    assert_eq!(n, 2);
    let h = hosts::get(&store, "https://pds1.example.com").unwrap().unwrap();
    let r = h.relay.unwrap();
    assert_eq!((r.status.as_deref(), r.account_count, r.seq), (Some("active"), Some(10), Some(123)));
    assert_eq!(h.sources, vec!["relay"]);
    let h2 = hosts::get(&store, "https://pds2.example.com").unwrap().unwrap();
    assert_eq!(h2.relay.unwrap().status.as_deref(), Some("throttled"));
    assert_eq!(
        hosts::relay_http_base("wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos"),
        "https://bsky.network"
    );
}

/// The lost update: `crawl` read a host's record, awaited describeServer,
/// `_health` and every `listRepos` page, then wrote the whole record back,
/// erasing a note made meanwhile (here the relay naming the host while its
/// listing is still being read). A crawl now writes only what it found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_does_not_lose_a_note_made_while_it_awaits_the_host() {
    use std::sync::Arc;
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (e, r) = (entered.clone(), release.clone());
    let app = axum::Router::new()
        .route(
            "/xrpc/com.atproto.server.describeServer",
            get(|| async { axum::Json(json!({"did": "did:web:slow.test", "availableUserDomains": []})) }),
        )
        .route(
            "/xrpc/com.atproto.sync.listRepos",
            get(move || {
                let (e, r) = (e.clone(), r.clone());
                async move {
                    e.notify_one();
                    r.notified().await;
                    axum::Json(json!({"repos": [{"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "head": "bafy", "rev": "3mvan7xus7k2x"}]}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    hosts::note(&store, &host, "did_document").unwrap();
    let crawl = tokio::spawn({
        let (store, host) = (store.clone(), host.clone());
        async move { hosts::crawl(&store, &Fetcher::new(true), &host).await.unwrap() }
    });
    entered.notified().await;
    // while the crawl waits on listRepos, another writer notes the host
    hosts::note(&store, &host, "relay").unwrap();
    release.notify_one();
    let after = crawl.await.unwrap();
    assert_eq!(after.state, "online");
    assert_eq!(after.repos.map(|r| r.total), Some(1));
    let h = hosts::get(&store, &host).unwrap().unwrap();
    assert_eq!(h.sources, vec!["did_document", "relay"], "the note made during the crawl survives it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_hosts_keys_each_host_once_and_skips_what_is_not_a_host() {
    let app = axum::Router::new().route(
        "/xrpc/com.atproto.sync.listHosts",
        get(|| async {
            axum::Json(json!({"hosts": [
                {"hostname": "pds.bücher.de"}, {"hostname": "pds.xn--bcher-kva.de"}, {"hostname": "PDS.BÜCHER.de."},
                {"hostname": "[2001:db8::1]:8443"},
                {"hostname": "pds.exa mple.com"}, {"hostname": "pds.example.com\u{0}"}, {"hostname": "pds.example.com/x"}]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    hosts::list_hosts(&store, &Fetcher::new(true), &format!("http://localhost:{port}")).await.unwrap();
    let keys: Vec<String> =
        instancemap::store::StoreReader::hosts(&store).unwrap().into_iter().map(|(endpoint, _)| endpoint).collect();
    assert_eq!(keys, vec!["https://[2001:db8::1]:8443", "https://pds.xn--bcher-kva.de"]);
}
