//! Commit signatures through the ingest pipeline: the real relay frames
//! against the keys of their captured DID documents.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use instancemap::app::{settle, Checker};
use instancemap::event;
use instancemap::identity::did;
use instancemap::ingest::Ingest;
use instancemap::store::Store;

fn keys() -> HashMap<String, String> {
    let docs = json("jetstream/did_docs.json");
    docs.as_object()
        .unwrap()
        .iter()
        .map(|(d, doc)| (d.clone(), did::parse(d, &serde_json::to_vec(doc).unwrap()).unwrap().signing_key.unwrap()))
        .collect()
}

fn ingest_checked(keys: Option<HashMap<String, String>>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let checker =
        Checker::with_keys(keys.map(|k| Arc::new(k) as Arc<dyn instancemap::identity::verify::KeySource>), None);
    let mut ingest = Ingest::new(Store::open(dir.path()).unwrap(), "replay").unwrap();
    for f in jetstream_frames() {
        ingest.apply(settle(checker.queue(event::from_frame_bytes(&f)))).unwrap();
    }
    (dir, ingest.finish().unwrap())
}

#[test]
fn real_commits_verify_against_their_keys() {
    let (_d, store) = ingest_checked(Some(keys()));
    let s = stats(&store);
    assert_eq!(s.signatures["valid"], 148);
    assert_eq!(s.signatures.len(), 1, "{:?}", s.signatures);
    assert_eq!(s.ops["create"], 144);
}

#[test]
fn a_commit_signed_with_another_key_is_counted_and_not_applied() {
    let mut k = keys();
    // give one account the key of another
    let victim = "did:plc:wq4aajammjtxdomz3e23667t"; // the first frame's account
    let other = k.iter().find(|(d, _)| *d != victim).unwrap().1.clone();
    k.insert(victim.to_owned(), other);
    let (_d, store) = ingest_checked(Some(k));
    let s = stats(&store);
    let bad = s.signatures["sig_invalid"];
    assert!(bad >= 1);
    assert_eq!(s.signatures["valid"] + bad, 148);
    assert_eq!(s.dropped["bad_signature"], bad);
    let (_d2, all) = ingest_checked(Some(keys()));
    assert_eq!(stats(&all).ops.values().sum::<i64>() - s.ops.values().sum::<i64>(), bad, "one op per dropped commit");
    // the cursor still moved past them
    assert_eq!(s.cursors["replay"], 31527015471);
}

#[test]
fn unknown_keys_are_applied_and_counted() {
    let (_d, store) = ingest_checked(Some(HashMap::new()));
    let s = stats(&store);
    assert_eq!(s.signatures["no_key"], 148);
    let (_d2, off) = ingest_checked(None);
    assert_eq!(stats(&off).signatures["not_checked"], 148);
}

#[test]
fn synthetic_signed_commits_verify_and_a_tampered_one_does_not() {
    use instancemap::identity::crypto::PublicKey;
    let key = k256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
    let did = "did:plc:dddddddddddddddddddddddd";
    let mut keys = HashMap::new();
    keys.insert(
        did.to_owned(),
        PublicKey::from_sec1(instancemap::identity::crypto::Curve::K256, &key.verifying_key().to_sec1_bytes())
            .unwrap()
            .to_multikey(),
    );
    let checker = Checker::with_keys(Some(Arc::new(keys)), None);
    let good = signed_commit_frame(1, did, "3mptbypluud2a", &[], Some(&key));
    let other = k256::ecdsa::SigningKey::from_bytes(&[8u8; 32].into()).unwrap();
    let forged = signed_commit_frame(2, did, "3mptbypluud2b", &[], Some(&other));
    let dir = tempfile::tempdir().unwrap();
    let mut ingest = Ingest::new(Store::open(dir.path()).unwrap(), "replay").unwrap();
    for f in [good, forged] {
        ingest.apply(settle(checker.queue(event::from_frame_bytes(&f)))).unwrap();
    }
    let store = ingest.finish().unwrap();
    let s = stats(&store);
    assert_eq!((s.signatures["valid"], s.signatures["sig_invalid"]), (1, 1));
    assert_eq!(store.account(did).unwrap().unwrap().rev.as_deref(), Some("3mptbypluud2a"));
}

#[test]
fn a_key_change_announced_by_identity_is_re_resolved_before_failing() {
    use instancemap::identity::crypto::PublicKey;
    let old = k256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).unwrap();
    let new = k256::ecdsa::SigningKey::from_bytes(&[8u8; 32].into()).unwrap();
    let mk = |k: &k256::ecdsa::SigningKey| {
        PublicKey::from_sec1(instancemap::identity::crypto::Curve::K256, &k.verifying_key().to_sec1_bytes()).unwrap()
    };
    let did = "did:plc:eeeeeeeeeeeeeeeeeeeeeeee";
    let mut keys = HashMap::new();
    keys.insert(did.to_owned(), mk(&old).to_multikey()); // the store still has the old key
    let fresh = mk(&new);
    let refreshed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r2 = refreshed.clone();
    let refresh: instancemap::identity::verify::Refresh = Arc::new(move |_d: &str| {
        r2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(fresh.clone())
    });
    let checker = Checker::with_keys(Some(Arc::new(keys)), Some(refresh));
    let identity = frame(
        1,
        Some("#identity"),
        &map(vec![
            ("seq", ciborium::Value::Integer(1.into())),
            ("did", text(did)),
            ("time", text("2026-07-04T14:38:07.517Z")),
        ]),
    );
    // before any #identity, a commit with an unknown new key just fails
    let early = signed_commit_frame(1, did, "3mptbypluud2a", &[], Some(&new));
    let after = signed_commit_frame(3, did, "3mptbypluud2c", &[], Some(&new));
    let dir = tempfile::tempdir().unwrap();
    let mut ingest = Ingest::new(Store::open(dir.path()).unwrap(), "a").unwrap();
    ingest.apply(settle(checker.queue(event::from_frame_bytes(&early)))).unwrap();
    let mut ingest2 = Ingest::new(ingest.finish().unwrap(), "b").unwrap();
    for f in [identity, after] {
        ingest2.apply(settle(checker.queue(event::from_frame_bytes(&f)))).unwrap();
    }
    let store = ingest2.finish().unwrap();
    let s = stats(&store);
    assert_eq!((s.signatures["sig_invalid"], s.signatures["valid"]), (1, 1), "{:?}", s.signatures);
    assert_eq!(refreshed.load(std::sync::atomic::Ordering::SeqCst), 1);
}
