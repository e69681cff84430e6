//! DID resolution against fake servers on loopback: a PLC directory
//! serving real DID documents, a did:web host, failures stored as
//! unresolved with a retry time, the address guard, and `run` resolving the
//! accounts of the firehose.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::*;
use instancemap::app::{self, RunOptions};
use instancemap::identity::resolve::{document_url, Ask, IdentityRecord, Resolver};
use instancemap::store::{Store, StoreReader};
use tokio_util::sync::CancellationToken;

type Docs = Arc<HashMap<String, serde_json::Value>>;

async fn plc_doc(State(docs): State<Docs>, Path(did): Path<String>) -> axum::response::Response {
    match docs.get(&did) {
        Some(d) => axum::Json(d.clone()).into_response(),
        None if did.ends_with("tombstoned00000000") => StatusCode::GONE.into_response(),
        None => (StatusCode::NOT_FOUND, format!("DID not registered: {did}")).into_response(),
    }
}

/// Starts a fake directory (with every captured document but `skip`) that
/// also serves a did:web document; returns its address.
async fn directory(skip: &[&str]) -> (std::net::SocketAddr, String) {
    let mut docs: HashMap<String, serde_json::Value> =
        json("jetstream/did_docs.json").as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for s in skip {
        docs.remove(*s);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let web_did = format!("did:web:localhost%3A{}", addr.port());
    let web_doc = serde_json::json!({
        "id": web_did,
        "alsoKnownAs": ["at://web.example.com"],
        "verificationMethod": [{"id": format!("{web_did}#atproto"), "type": "Multikey", "controller": web_did,
            "publicKeyMultibase": "zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ"}],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.web.example.com/"}]
    });
    let app = axum::Router::new()
        .route("/{did}", axum::routing::get(plc_doc))
        .route("/.well-known/did.json", axum::routing::get(move || async move { axum::Json(web_doc) }))
        .with_state(Arc::new(docs));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, web_did)
}

fn identity(store: &Store, did: &str) -> Option<IdentityRecord> {
    store.identity(did).unwrap()
}

#[test]
fn document_urls() {
    assert_eq!(
        document_url("https://plc.directory/", "did:plc:ewvi7nxzyoun6zhxrhs64oiz", false).unwrap(),
        "https://plc.directory/did:plc:ewvi7nxzyoun6zhxrhs64oiz"
    );
    assert_eq!(
        document_url("x", "did:web:discover.bsky.social", false).unwrap(),
        "https://discover.bsky.social/.well-known/did.json"
    );
    assert_eq!(
        document_url("x", "did:web:localhost%3A2583", true).unwrap(),
        "http://localhost:2583/.well-known/did.json"
    );
    assert!(document_url("x", "did:web:localhost%3A2583", false).is_err(), "ports only for localhost in test networks");
    assert!(document_url("x", "did:web:example.com:path", false).is_err());
    assert!(document_url("x", "did:key:zQ3sh", false).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_plc_and_web_and_stores_failures_for_retry() {
    let (addr, web_did) = directory(&["did:plc:2a7ygipkrbh544aqhcav53oy"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let dns = fake_dns(HashMap::from([(
        "_atproto.web.example.com".to_owned(),
        vec![web_did.clone().replace("did:", "did=did:")],
    )]))
    .await;
    let r = Resolver::new(store.clone(), &format!("http://{addr}"), true, Some(dns));

    let rec = r.resolve_and_store("did:plc:2c6wev5ei4jzcy4imh5afa35", false).await.unwrap();
    assert!(rec.unresolved.is_none(), "{rec:?}");
    assert!(rec.pds.as_deref().unwrap().starts_with("https://"));
    assert!(rec.signing_key.as_deref().unwrap().starts_with("zQ3s"));
    assert_eq!(identity(&store, "did:plc:2c6wev5ei4jzcy4imh5afa35"), Some(rec));

    let web = r.resolve_and_store(&web_did, false).await.unwrap();
    assert_eq!(web.pds.as_deref(), Some("https://pds.web.example.com"));
    assert_eq!(web.handle.as_deref(), Some("web.example.com"));
    assert_eq!(web.verified_handle(), Some("web.example.com"), "{:?}", web.handle_check);
    // the real documents' handles do not resolve back here (no DNS for them)
    let plc = identity(&store, "did:plc:2c6wev5ei4jzcy4imh5afa35").unwrap();
    assert_eq!(plc.verified_handle(), Some("handle.invalid"));

    let missing = r.resolve_and_store("did:plc:2a7ygipkrbh544aqhcav53oy", false).await.unwrap();
    assert_eq!(missing.unresolved.as_deref(), Some("not_found"));
    assert_eq!(missing.failures, 1);
    // every DID has its next check scheduled: the failure soon (backoff),
    // the successes after FRESH_FOR
    let retries = store.retries_due(i64::MAX, usize::MAX).unwrap();
    assert_eq!(retries.len(), 3);
    assert_eq!(retries[0].1, "did:plc:2a7ygipkrbh544aqhcav53oy", "the failure comes first");

    let gone = r.resolve_and_store("did:plc:aaaaaatombstoned00000000", false).await.unwrap();
    assert!(gone.tombstoned);

    // the same directory on loopback is refused when loopback is not allowed
    let strict = Resolver::new(store.clone(), &format!("http://{addr}"), false, Some(dns));
    let refused = strict.resolve_and_store("did:plc:2edzkrybeyusfkz6yn7tm4ch", false).await.unwrap();
    assert_eq!(refused.unresolved.as_deref(), Some("refused_address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_resolves_the_accounts_it_sees() {
    let (plc, _) = directory(&[]).await;
    let dns = fake_dns(HashMap::new()).await;
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let frames = Arc::new(jetstream_frames());
    tokio::spawn(serve_frames(relay, frames.clone()));
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        plc: format!("http://{plc}"),
        resolve: true,
        dns: Some(dns),
        ..run_options(relay_addr, dir.path())
    };
    let cancel = CancellationToken::new();
    let run = tokio::spawn(app::run(opts, cancel.clone()));
    let want: Vec<String> = json("jetstream/manifest.json")["commit_dids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    // wait until every wanted DID's resolution is stored, read through a
    // secondary instance (the resolutions counter is shared with the other
    // tests of this binary, so it can reach the number early)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let own = tempfile::tempdir().unwrap();
    let mut follower: Option<Store> = None;
    loop {
        if follower.is_none() {
            follower = Store::open_secondary(dir.path(), own.path()).ok();
        }
        let done = follower.as_ref().is_some_and(|f| {
            f.catch_up().is_ok() && want.iter().all(|d| identity(f, d).is_some_and(|r| r.signing_key.is_some()))
        });
        if done {
            break;
        }
        let resolved = instancemap::metrics::RESOLUTIONS.with_label_values(&["resolved"]).get();
        assert!(tokio::time::Instant::now() < deadline, "only {resolved} of {} resolved", want.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(follower);
    cancel.cancel();
    let store = run.await.unwrap().unwrap();
    for d in &want {
        let rec = identity(&store, d).unwrap_or_else(|| panic!("{d} not resolved"));
        assert!(rec.signing_key.is_some() && rec.pds.is_some(), "{d}: {rec:?}");
    }
}

/// Regression: an `#identity` within a minute of a routine lookup of the
/// same DID was dropped, so the identity change went unseen for hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_right_after_a_routine_lookup_still_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let r = Resolver::new(
        Store::open(dir.path()).unwrap(),
        "http://127.0.0.1:9",
        true,
        Some("127.0.0.1:9".parse().unwrap()),
    );
    let d = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    assert!(r.wanted(d, Ask::Seen), "never resolved");
    assert!(!r.wanted(d, Ask::Seen), "a burst resolves once");
    assert!(r.wanted(d, Ask::Identity), "an #identity asks again");
    assert!(!r.wanted(d, Ask::Identity), "two refreshes at once are one");
}
