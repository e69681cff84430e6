//! Labeler conformance against fake labelers on loopback: one that answers
//! `queryLabels` with labels signed by its document's `#atproto_label` key
//! and has its service record (conformant), one whose labels are signed by
//! another key (failing), one that does not answer (failing), one without a
//! service record or key (partial at best).

mod common;

use common::*;
use instancemap::hosts::labelers::{conformance, label_signing_bytes};
use instancemap::identity::resolve::IdentityRecord;
use instancemap::net::Fetcher;
use instancemap::store::{self, Store};
use k256::ecdsa::signature::hazmat::PrehashSigner;
use serde_json::json;
use sha2::Digest;

const GOOD: &str = "did:plc:gggggggggggggggggggggggg";
const FORGED: &str = "did:plc:ffffffffffffffffffffffff";
const SILENT: &str = "did:plc:ssssssssssssssssssssssss";
const BARE: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";

fn signed_label(src: &str, key: &k256::ecdsa::SigningKey) -> serde_json::Value {
    use base64::Engine;
    let mut label = json!({"ver": 1, "src": src, "uri": "at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/app.bsky.feed.post/3l2s5xxv2ze2c",
        "val": "spam", "cts": "2026-11-30T00:00:00.000Z"});
    let digest: [u8; 32] = sha2::Sha256::digest(label_signing_bytes(&label).unwrap()).into();
    let sig: k256::ecdsa::Signature = key.sign_prehash(&digest).unwrap();
    let sig = sig.normalize_s().unwrap_or(sig);
    label["sig"] = json!({"$bytes": base64::engine::general_purpose::STANDARD_NO_PAD.encode(sig.to_bytes())});
    label
}

async fn labeler(labels: Vec<serde_json::Value>) -> String {
    let app = axum::Router::new().route(
        "/xrpc/com.atproto.label.queryLabels",
        axum::routing::get(move || {
            let l = labels.clone();
            async move { axum::Json(json!({"labels": l})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://localhost:{port}")
}

fn identity(store: &Store, did: &str, endpoint: Option<&str>, label_key: Option<String>) {
    let mut b = store::Batch::default();
    b.put_identity(
        did,
        IdentityRecord {
            labeler: endpoint.map(str::to_owned),
            label_key,
            resolved_at_ms: Some(1),
            ..IdentityRecord::default()
        },
    );
    store::StoreWriter::commit(store, b).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelers_are_checked_for_their_record_their_endpoint_and_their_key() {
    let (good_key, good_mk) = test_key(21);
    let (other_key, _) = test_key(22);
    let (_, forged_mk) = test_key(23);
    let good = labeler(vec![signed_label(GOOD, &good_key)]).await;
    let forged = labeler(vec![signed_label(FORGED, &other_key)]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    identity(&store, GOOD, Some(&good), Some(good_mk));
    identity(&store, FORGED, Some(&forged), Some(forged_mk));
    identity(&store, SILENT, Some(&format!("http://127.0.0.1:{}", free_port())), None);
    identity(&store, BARE, None, None);
    // the good labeler's service record, from the firehose
    let f = commit_frame(
        1,
        GOOD,
        "3mptbypluud2a",
        &[TestOp {
            action: "create",
            path: "app.bsky.labeler.service/self",
            record: Some(labeler_record("2026-11-30T00:00:00.000Z")),
            omit_block: false,
        }],
    );
    let store = ingest_frames(store, "wss://relay.example", &[f]);
    let fetcher = Fetcher::new(true);

    let c = conformance(&store, &fetcher, GOOD).await;
    assert_eq!(c.verdict, "conformant", "{c:?}");
    assert_eq!((c.service_record, c.answers, c.labels_seen, c.key_matches), (true, Some(true), 1, Some(true)));

    let c = conformance(&store, &fetcher, FORGED).await;
    assert_eq!((c.verdict.as_str(), c.key_matches), ("failing", Some(false)), "{c:?}");
    assert!(c.problems.iter().any(|p| p.contains("does not verify")));

    let c = conformance(&store, &fetcher, SILENT).await;
    assert_eq!((c.verdict.as_str(), c.answers), ("failing", Some(false)), "{c:?}");

    let c = conformance(&store, &fetcher, BARE).await;
    assert_eq!(c.verdict, "failing", "{c:?}");
    assert!(c.problems.iter().any(|p| p.contains("#atproto_labeler endpoint")), "{c:?}");
    assert!(c.problems.iter().any(|p| p.contains("app.bsky.labeler.service")), "{c:?}");
}

#[test]
fn label_signing_bytes_are_dag_cbor_without_the_signature() {
    let l = json!({"val": "x", "ver": 1, "src": "did:plc:a", "cts": "t", "uri": "at://u", "neg": false, "sig": {"$bytes": "AA"}});
    let bytes = label_signing_bytes(&l).unwrap();
    let v: ciborium::Value = ciborium::from_reader(&bytes[..]).unwrap();
    let keys: Vec<String> = v.as_map().unwrap().iter().map(|(k, _)| k.as_text().unwrap().to_owned()).collect();
    assert_eq!(keys, ["cts", "neg", "src", "uri", "val", "ver"], "shorter keys first, then bytewise; no sig");
    assert!(instancemap::repo::cbor::validate(&bytes).is_ok(), "valid DAG-CBOR");
}
