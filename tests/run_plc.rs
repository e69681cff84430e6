//! `run` loads and follows the PLC export beside the firehose: a fake
//! directory on loopback serving sequence-form lines, which grows while
//! `run` is up.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use common::*;
use instancemap::app::{self, RunOptions};
use instancemap::metrics;
use instancemap::plc::load::PlcRecord;
use instancemap::store::{Store, StoreReader};
use tokio_util::sync::CancellationToken;

type Lines = Arc<Mutex<Vec<serde_json::Value>>>;

async fn export(State(lines): State<Lines>, Query(q): Query<HashMap<String, String>>) -> String {
    let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let lines = lines.lock().unwrap();
    let page: Vec<String> =
        lines.iter().filter(|l| l["seq"].as_u64().unwrap() > after).take(1000).map(|l| l.to_string()).collect();
    page.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_loads_then_follows_the_plc_export() {
    let real: Vec<serde_json::Value> = std::fs::read_to_string(fixture("plc/export_seq_after0_count2.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Lines = Arc::new(Mutex::new(vec![real[0].clone()]));
    let app = axum::Router::new().route("/export", axum::routing::get(export)).with_state(lines.clone());
    let plc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plc_addr = plc.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(plc, app).await.unwrap() });
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    tokio::spawn(serve_frames(relay, Arc::new(Vec::new())));

    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        plc: format!("http://{plc_addr}"),
        follow_plc: Some(Duration::from_millis(200)),
        ..run_options(relay_addr, dir.path())
    };
    let cancel = CancellationToken::new();
    let run = tokio::spawn(app::run(opts, cancel.clone()));
    let wait_for = |seq: i64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while metrics::PLC_POSITION.get() < seq {
            assert!(tokio::time::Instant::now() < deadline, "PLC position stuck at {}", metrics::PLC_POSITION.get());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for(1).await;
    // the directory grows; run picks it up on its next poll
    lines.lock().unwrap().push(real[1].clone());
    tokio::time::timeout(Duration::from_secs(20), wait_for(2)).await.expect("followed within a poll interval");
    cancel.cancel();
    let store = run.await.unwrap().unwrap();
    for (did, handle) in [
        ("did:plc:ragtjsm2j2vknwkz3zp4oxrd", "paul.bsky.social"),
        ("did:plc:l3rouwludahu3ui3bt66mfvj", "divy.bsky.social"),
    ] {
        let rec: PlcRecord = store.plc(did).unwrap().unwrap();
        assert_eq!(rec.handle.as_deref(), Some(handle));
    }
    drop(store);
    let _ = Store::open_read_only(dir.path()).unwrap();
}
