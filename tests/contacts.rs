//! Contacts that are checked: each host's `security.txt` (RFC 9116) fetched
//! from fake hosts on loopback (one valid, one expired, one absent), mail
//! domains asked of a fake DNS server (an MX, an address only, a null MX,
//! nothing), re-checked only once a day old, and the lookup's routes
//! carrying each contact's last check.

mod common;

use std::net::Ipv4Addr;

use common::*;
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData};
use instancemap::cluster::map;
use instancemap::hosts::contacts::{self, Checker};
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::net::Fetcher;
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::{Store, StoreReader};

const ALICE: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";

/// A host answering `security.txt` with `body` (404 when `None`).
async fn host(body: Option<String>) -> String {
    let app = axum::Router::new().route(
        "/.well-known/security.txt",
        axum::routing::get(move || {
            let b = body.clone();
            async move {
                match b {
                    Some(b) => (axum::http::StatusCode::OK, b),
                    None => (axum::http::StatusCode::NOT_FOUND, String::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://localhost:{port}")
}

fn online(store: &Store, endpoint: &str, email: &str) {
    let rec = HostRecord {
        state: "online".into(),
        describe: Some(Describe { contact_email: Some(email.into()), ..Describe::default() }),
        last_ok_ms: Some(1),
        last_checked_ms: Some(1),
        ..HostRecord::default()
    };
    hosts::put(store, endpoint, &rec).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_checked_and_the_lookup_shows_each_check() {
    let dns = fake_dns_records(vec![
        ("coop.example".into(), RData::MX(MX::new(10, Name::from_ascii("mx1.coop.example.").unwrap()))),
        ("addr.example".into(), RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))),
        ("nullmx.example".into(), RData::MX(MX::new(0, Name::root()))),
    ])
    .await;
    let good = host(Some(
        "Contact: mailto:security@coop.example\nContact: mailto:desk@nomail.example\n\
         Contact: https://coop.example/report\nExpires: 2099-01-01T00:00:00Z\nPolicy: https://coop.example/policy\n"
            .into(),
    ))
    .await;
    let stale = host(Some("Contact: mailto:old@addr.example\nExpires: 2020-01-01T00:00:00Z\n".into())).await;
    let none = host(None).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    online(&store, &good, "admin@coop.example");
    online(&store, &stale, "admin@nullmx.example");
    online(&store, &none, "admin@addr.example");
    {
        let mut l = Loader::new(&store).unwrap();
        l.apply(ExportOp {
            did: ALICE.into(),
            cid: "bafyalice".into(),
            created_at: "2025-02-01T00:00:00.000Z".into(),
            seq: Some(1),
            nullified: false,
            prev: None,
            state: OpState::Update { pds: Some(good.clone()), handle: None, signing_key: None },
        })
        .unwrap();
        l.flush().unwrap();
    }
    map::recompute(&store, &Default::default()).unwrap();

    let checker = Checker::new(Fetcher::new(true), Some(dns));
    // the first pass finds the files; the second checks the mail contacts they name
    let first = contacts::check_due(&store, &store, &checker).await.unwrap();
    let second = contacts::check_due(&store, &store, &checker).await.unwrap();
    assert!(first >= 6 && second >= 2, "{first} then {second}");
    assert_eq!(contacts::check_due(&store, &store, &checker).await.unwrap(), 0, "nothing is due within a day");
    let check = |k: &str| store.contact_check(k).unwrap().unwrap_or_else(|| panic!("{k} not checked"));

    let t = check(&contacts::security_txt_key(&good));
    assert!(t.ok, "{t:?}");
    let txt = t.security_txt.unwrap();
    assert_eq!(txt.contacts.len(), 3);
    assert_eq!(txt.policy, ["https://coop.example/policy"]);
    let t = check(&contacts::security_txt_key(&stale));
    assert!(!t.ok && t.how.contains("expired"), "{t:?}");
    let t = check(&contacts::security_txt_key(&none));
    assert!(!t.ok && t.how.starts_with("no security.txt"), "{t:?}");
    for (addr, ok, how) in [
        ("admin@coop.example", true, "MX mx1.coop.example"),
        ("security@coop.example", true, "MX mx1.coop.example"),
        ("admin@addr.example", true, "no MX; address 192.0.2.1"),
        ("admin@nullmx.example", false, "null MX"),
        ("desk@nomail.example", false, "no MX, A or AAAA"),
    ] {
        let c = check(&contacts::email_key(addr));
        assert_eq!(c.ok, ok, "{addr}: {c:?}");
        assert!(c.how.contains(how), "{addr}: {}", c.how);
        assert_eq!(c.last_ok_ms.is_some(), ok);
    }
    // the mail contact of an expired file is not checked: it is not routed to
    assert!(store.contact_check(&contacts::email_key("old@addr.example")).unwrap().is_none());
    assert_eq!(instancemap::metrics::CONTACT_CHECK_OLDEST.get(), 0);
    assert!(instancemap::metrics::CONTACTS.with_label_values(&["failing"]).get() >= 4);

    // the lookup: the hosting contact and the security.txt contacts, each
    // with its check
    let state = instancemap::api::ApiState::new(store, true, None, Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(instancemap::api::serve(listener, state, tokio_util::sync::CancellationToken::new()));
    let (s, body) = http_get(addr, &format!("/xrpc/dev.instancemap.lookup?subject={ALICE}")).await.unwrap();
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let routes = v["routes"].as_array().unwrap();
    let got: Vec<(&str, bool)> =
        routes.iter().map(|r| (r["address"].as_str().unwrap(), r["check"]["ok"].as_bool().unwrap_or(false))).collect();
    assert_eq!(
        got,
        [
            ("admin@coop.example", true),
            ("security@coop.example", true),
            ("desk@nomail.example", false),
            ("https://coop.example/report", false),
        ],
        "{body}"
    );
    assert_eq!(routes[0]["check"]["stale"], false);
    assert!(routes[0]["check"]["lastConfirmed"].is_string());
    assert_eq!(routes[3]["check"]["checked"], false, "a security.txt URL is listed, not fetched: {}", routes[3]);
}
