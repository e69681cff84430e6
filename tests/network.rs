//! Where instances run: host addresses from the crawl, placed with the
//! MMDB databases the user supplies (generated ones in
//! `tests/fixtures/mmdb/`), concentration over network operators and
//! countries in `getSummary` and the gauges, CDN fronting, each instance's
//! placement in `getInstance`; without a database the view is off and says
//! so.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use instancemap::cluster::map;
use instancemap::hosts::network::Networks;
use instancemap::hosts::{self, HostRecord};
use instancemap::net::Fetcher;
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::Store;
use serde_json::json;

fn db(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mmdb").join(name)
}

fn did(i: usize) -> String {
    format!("did:plc:{:a>24}", ["b", "c", "d", "e", "f", "g", "h", "i", "j"][i])
}

async fn serve(state: instancemap::api::ApiState) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(instancemap::api::serve(listener, state, tokio_util::sync::CancellationToken::new()));
    addr
}

async fn get(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (s, body) = http_get(addr, path).await.unwrap();
    assert_eq!(s, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concentration_over_networks_and_countries_with_a_database_and_a_clear_no_without() {
    // a PDS on loopback, crawled for real: its addresses are kept
    let app = axum::Router::new().route(
        "/xrpc/com.atproto.server.describeServer",
        axum::routing::get(|| async { axum::Json(json!({"availableUserDomains": []})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // accounts per host: 3 in NZ, 2 behind a CDN in the US, 1 in DE, 1 on
    // a host without a known address, 2 on the loopback PDS
    let hosts = [
        ("https://pds.nz.example", Some("192.0.2.10"), 3),
        ("https://pds.cdn.example", Some("198.51.100.5"), 2),
        ("https://pds.de.example", Some("203.0.113.9"), 1),
        ("https://pds.nowhere.example", None, 1),
    ];
    {
        let mut l = Loader::new(&store).unwrap();
        let mut i = 0;
        let all = hosts.iter().map(|(h, _, n)| (h.to_string(), *n)).chain([(local.clone(), 2)]);
        for (h, n) in all {
            for _ in 0..n {
                l.apply(ExportOp {
                    did: format!("{}{i:02}", &did(i % 9)[..30]),
                    cid: format!("bafy{i}"),
                    created_at: "2025-02-01T00:00:00.000Z".into(),
                    seq: Some(i as u64 + 1),
                    nullified: false,
                    prev: None,
                    state: OpState::Update { pds: Some(h.clone()), handle: None, signing_key: None },
                })
                .unwrap();
                i += 1;
            }
        }
        l.flush().unwrap();
    }
    for (h, addr, _) in hosts {
        let rec = HostRecord {
            state: "online".into(),
            addresses: addr.map(|a| vec![a.to_owned()]).unwrap_or_default(),
            ..HostRecord::default()
        };
        hosts::put(&store, h, &rec).unwrap();
    }
    let rec = hosts::crawl(&store, &Fetcher::new(true), &local).await.unwrap();
    assert_eq!(rec.addresses, ["127.0.0.1", "::1"], "the crawl keeps the host's addresses");
    map::recompute(&store, &Default::default()).unwrap();

    // without a database: off, and says so
    let plain = serve(instancemap::api::ApiState::new(store.clone(), true, None, Default::default())).await;
    let v = get(plain, "/xrpc/dev.instancemap.getSummary").await;
    assert_eq!(v["network"]["enabled"], false);
    assert!(v["network"]["why"].as_str().unwrap().contains("--mmdb"));

    // with the GeoLite2-layout pair
    let networks = Arc::new(Networks::open(&[db("test-asn.mmdb"), db("test-country.mmdb")]).unwrap());
    let state =
        instancemap::api::ApiState::new(store.clone(), true, None, Default::default()).with_networks(Some(networks));
    let addr = serve(state).await;
    let v = get(addr, "/xrpc/dev.instancemap.getSummary").await;
    let n = &v["network"];
    assert_eq!(n["enabled"], true, "{n}");
    assert_eq!(n["networks"]["groups"], 4, "{n}");
    assert_eq!(n["networks"]["accounts"], 8);
    assert_eq!(n["topNetworks"][0], json!(["AS64500 Example Hosting Ltd", 3]));
    assert_eq!(n["topCountries"][0], json!(["NZ", 3]));
    assert_eq!(n["cdnFronted"], json!({"Cloudflare": 2}));
    assert_eq!(n["unplaced"], 1);
    let hhi = n["networks"]["hhi"].as_f64().unwrap();
    let want = [3.0f64, 2.0, 2.0, 1.0].iter().map(|x| (x / 8.0).powi(2)).sum::<f64>();
    assert!((hhi - want).abs() < 1e-9, "{hhi} vs {want}");
    // the gauges, as Prometheus scrapes them
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert!(metrics.contains("instancemap_map_concentration_hhi{over=\"networks\"}"), "no network gauge");
    assert!(metrics.contains("instancemap_map_concentration_hhi{over=\"countries\"}"));

    // an instance's hosts, placed
    let id = map::instance_id_of_host(&store, &local).unwrap().unwrap();
    let v = get(addr, &format!("/xrpc/dev.instancemap.getInstance?id={id}")).await;
    let p = &v["network"][0]["placement"];
    assert_eq!((p["asn"].as_u64(), p["country"].as_str()), (Some(64502), Some("NL")), "{v}");
}
