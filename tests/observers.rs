//! Hosting status per observer: an account's status as its PDS lists it
//! (`listRepos`, from a fake PDS on loopback), as the relay reports it
//! (`#account` on the firehose) and as the PLC directory says (a
//! tombstone), kept apart; disagreements counted per host and instance and
//! shown in the lookup. A host listing accounts it does not host speaks for
//! none of them.

mod common;

use ciborium::Value;
use common::*;
use instancemap::cluster::{map, routes};
use instancemap::hosts;
use instancemap::net::Fetcher;
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::{Store, StoreReader};
use serde_json::json;

const ALICE: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const CAROL: &str = "did:plc:cccccccccccccccccccccccc";
const DAVE: &str = "did:plc:dddddddddddddddddddddddd";
const ERIN: &str = "did:plc:eeeeeeeeeeeeeeeeeeeeeeee";

async fn fake_pds(repos: serde_json::Value) -> String {
    let app = axum::Router::new()
        .route(
            "/xrpc/com.atproto.server.describeServer",
            axum::routing::get(|| async { axum::Json(json!({"availableUserDomains": []})) }),
        )
        .route(
            "/xrpc/com.atproto.sync.listRepos",
            axum::routing::get(move || {
                let r = repos.clone();
                async move { axum::Json(json!({"repos": r})) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://localhost:{port}")
}

fn account(seq: i64, did: &str, active: bool, status: Option<&str>) -> Vec<u8> {
    let mut body = vec![
        ("seq", Value::Integer(seq.into())),
        ("did", text(did)),
        ("time", text("2026-11-30T00:00:00.000Z")),
        ("active", Value::Bool(active)),
    ];
    if let Some(s) = status {
        body.push(("status", text(s)));
    }
    frame(1, Some("#account"), &map(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_observer_is_kept_apart_and_disagreements_are_counted() {
    let repo = |did: &str, active: bool, status: Option<&str>| json!({"did": did, "head": "bafy", "rev": "3l", "active": active, "status": status});
    let host = fake_pds(json!([
        repo(ALICE, true, None),               // the relay says taken down
        repo(BOB, false, Some("deactivated")), // the relay says active
        repo(CAROL, false, Some("takendown")), // hosted elsewhere: speaks for nobody
        repo(DAVE, true, None),                // tombstoned in the PLC directory
        repo(ERIN, true, None),                // everyone agrees
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    {
        let mut l = Loader::new(&store).unwrap();
        let mut seq = 0;
        for (did, pds) in [
            (ALICE, host.as_str()),
            (BOB, &host),
            (CAROL, "https://pds.elsewhere.example"),
            (DAVE, &host),
            (ERIN, &host),
        ] {
            seq += 1;
            l.apply(ExportOp {
                did: did.into(),
                cid: format!("bafy{seq}"),
                created_at: "2025-02-01T00:00:00.000Z".into(),
                seq: Some(seq),
                nullified: false,
                prev: None,
                state: OpState::Update { pds: Some(pds.into()), handle: None, signing_key: None },
            })
            .unwrap();
        }
        seq += 1;
        l.apply(ExportOp {
            did: DAVE.into(),
            cid: "bafydave2".into(),
            created_at: "2025-03-01T00:00:00.000Z".into(),
            seq: Some(seq),
            nullified: false,
            prev: Some("bafy4".into()),
            state: OpState::Tombstone,
        })
        .unwrap();
        l.flush().unwrap();
    }
    let store = ingest_frames(
        store,
        "wss://relay.example",
        &[
            account(1, ALICE, false, Some("takendown")),
            account(2, BOB, true, None),
            account(3, ERIN, true, None),
            // the relay's word on CAROL, whom this host does not host
            account(4, CAROL, true, None),
        ],
    );
    map::recompute(&store, &Default::default()).unwrap();
    hosts::crawl(&store, &Fetcher::new(true), &host).await.unwrap();

    let rec = hosts::get(&store, &host).unwrap().unwrap();
    let d = rec.repos.unwrap().disagreements;
    assert_eq!(d.get("pds_active_relay_inactive"), Some(&1), "{d:?}");
    assert_eq!(d.get("pds_inactive_relay_active"), Some(&1), "{d:?}");
    assert_eq!(d.get("pds_active_plc_tombstoned"), Some(&1), "{d:?}");
    assert_eq!(d.get("listed_elsewhere"), Some(&1), "{d:?}");
    assert_eq!(d.values().sum::<u64>(), 4, "erin agrees: {d:?}");
    // the host's word is kept only for the accounts it hosts
    assert_eq!(store.pds_view(ALICE).unwrap().map(|v| (v.active, v.status)), Some((true, "active".into())));
    assert_eq!(store.pds_view(BOB).unwrap().map(|v| v.status), Some("deactivated".into()));
    assert!(store.pds_view(CAROL).unwrap().is_none(), "a host listing another's account speaks for nobody");

    // the lookup shows each observer apart, and what they disagree on
    let v =
        instancemap::api::query::responsibility(&store, &Default::default(), ALICE, None, &routes::Subject::Account)
            .unwrap();
    let o = &v["observers"];
    assert_eq!((o["pds"]["active"].as_bool(), o["pds"]["status"].as_str()), (Some(true), Some("active")), "{o}");
    assert_eq!((o["relay"]["active"].as_bool(), o["relay"]["status"].as_str()), (Some(false), Some("takendown")));
    assert_eq!(o["plc"]["tombstoned"], false);
    assert_eq!(o["disagreement"], "pds_active_relay_inactive");
    let v = instancemap::api::query::responsibility(&store, &Default::default(), ERIN, None, &routes::Subject::Account)
        .unwrap();
    assert!(v["observers"]["disagreement"].is_null(), "{}", v["observers"]);
}
