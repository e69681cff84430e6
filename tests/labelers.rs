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

/// Regression: a labeler in the loaded PLC export was resolved from the
/// PLC state alone, which keeps no `#atproto_labeler` endpoint or
/// `#atproto_label` key, so a conformant labeler was checked as failing
/// for ever. Its service record on the firehose now fetches its DID
/// document, and the conformance check finds both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labeler_known_from_the_plc_export_has_its_document_fetched() {
    use instancemap::identity::resolve::{self, Resolver};
    use instancemap::plc::{load::Loader, ExportOp, OpState};
    let (key, mk) = test_key(31);
    let (label_key, label_mk) = test_key(32);
    let endpoint = labeler(vec![signed_label(GOOD, &label_key)]).await;
    let doc = json!({
        "id": GOOD,
        "alsoKnownAs": [],
        "verificationMethod": [
            {"id": format!("{GOOD}#atproto"), "type": "Multikey", "controller": GOOD, "publicKeyMultibase": mk.trim_start_matches("did:key:")},
            {"id": format!("{GOOD}#atproto_label"), "type": "Multikey", "controller": GOOD, "publicKeyMultibase": label_mk.trim_start_matches("did:key:")},
        ],
        "service": [
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example.com"},
            {"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": endpoint},
        ],
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plc = format!("http://{}", listener.local_addr().unwrap());
    let app =
        axum::Router::new().route(&format!("/{GOOD}"), axum::routing::get(move || async move { axum::Json(doc) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    {
        let mut l = Loader::new(&store).unwrap();
        l.apply(ExportOp {
            did: GOOD.into(),
            cid: "bafygood".into(),
            created_at: "2025-02-01T00:00:00.000Z".into(),
            seq: Some(1),
            nullified: false,
            prev: None,
            state: OpState::Update {
                pds: Some("https://pds.example.com".into()),
                handle: None,
                signing_key: Some(mk.clone()),
            },
        })
        .unwrap();
        l.flush().unwrap();
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    let resolver = std::sync::Arc::new(Resolver::new(store.clone(), &plc, true, Some("127.0.0.1:9".parse().unwrap())));
    let (queue, _task) = resolve::start(resolver.clone(), cancel.clone());
    let f = signed_commit_frame(
        1,
        GOOD,
        "3mptbypluud2a",
        &[TestOp {
            action: "create",
            path: "app.bsky.labeler.service/self",
            record: Some(labeler_record("2026-11-30T00:00:00.000Z")),
            omit_block: false,
        }],
        Some(&key),
    );
    let mut ingest =
        instancemap::ingest::Ingest::new(store.clone(), "wss://relay.example").unwrap().with_resolver(queue);
    ingest.apply(instancemap::event::from_frame_bytes(&f)).unwrap();
    let store = ingest.finish().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ident = store::StoreReader::identity(&store, GOOD).unwrap();
        if ident.as_ref().is_some_and(|i| i.labeler.is_some()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the labeler's document was never fetched: {ident:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let c = conformance(&store, &Fetcher::new(true), GOOD).await;
    assert_eq!(c.verdict, "conformant", "{c:?}");
    cancel.cancel();
    // a later resolution answered from the PLC state (the account seen
    // again past FRESH_FOR, a scheduled re-check), which knows no labeler
    // service, keeps the fetched document's labeler and label key
    let before = store::StoreReader::identity(&store, GOOD).unwrap().unwrap();
    resolver.resolve_and_store(GOOD, false).await.unwrap();
    let after = store::StoreReader::identity(&store, GOOD).unwrap().unwrap();
    assert!(after.labeler.is_some(), "a resolution from the PLC state dropped the labeler: {after:?}");
    assert_eq!((after.labeler, after.label_key), (before.labeler, before.label_key));
}
