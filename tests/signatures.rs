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

// ---- keys across a rotation (a PLC log loaded as an export file) ----

const MOVER: &str = "did:plc:ffffffffffffffffffffffff";
const GENESIS: &str = "2026-01-01T00:00:00.000Z";
const ROTATION: &str = "2026-03-01T00:00:00.000Z";

/// A sequence-form export line: a `plc_operation` setting `key` and `pds`
/// (or a `plc_tombstone` when `key` is `None`).
fn plc_line(seq: u64, cid: &str, prev: Option<&str>, at: &str, key: Option<&str>, pds: &str) -> serde_json::Value {
    let operation = match key {
        Some(k) => serde_json::json!({
            "type": "plc_operation",
            "prev": prev,
            "sig": "c2lnbmF0dXJl",
            "rotationKeys": [format!("did:key:{k}")],
            "verificationMethods": {"atproto": format!("did:key:{k}")},
            "alsoKnownAs": ["at://mover.example.com"],
            "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": pds}},
        }),
        None => serde_json::json!({"type": "plc_tombstone", "prev": prev, "sig": "c2lnbmF0dXJl"}),
    };
    serde_json::json!({
        "did": MOVER, "cid": cid, "seq": seq, "createdAt": at, "type": "sequenced_op", "operation": operation,
    })
}

/// A store with `lines` loaded as `backfill-plc --file` loads them.
fn store_with_plc(dir: &std::path::Path, lines: &[serde_json::Value]) -> Store {
    let file = dir.join("export.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let store = Store::open(&dir.join("db")).unwrap();
    instancemap::plc::source::load_file(&store, &file).unwrap();
    store
}

/// The mover's log: genesis on PDS A with K1 (seed 1), then a migration
/// to PDS B with K2 (seed 2) at [`ROTATION`].
fn migration_log() -> Vec<serde_json::Value> {
    let (_, k1) = test_key(1);
    let (_, k2) = test_key(2);
    vec![
        plc_line(1, "bafyreigenesis", None, GENESIS, Some(&k1), "https://pds-a.example.com"),
        plc_line(2, "bafyreimigration", Some("bafyreigenesis"), ROTATION, Some(&k2), "https://pds-b.example.com"),
    ]
}

/// Replays each `(source, frames)` archive in turn through the checker
/// (keys from the store) and the writer.
fn replay_archives(store: Store, archives: &[(&str, Vec<Vec<u8>>)]) -> Store {
    let checker = Checker::new(true, &store);
    let mut store = store;
    for (source, frames) in archives {
        let mut ingest = Ingest::new(store, source).unwrap();
        for f in frames {
            ingest.apply(settle(checker.queue(event::from_frame_bytes(f)))).unwrap();
        }
        store = ingest.finish().unwrap();
    }
    store
}

fn commit_at(seq: i64, time: &str, key: &k256::ecdsa::SigningKey) -> Vec<u8> {
    signed_commit_frame_at(seq, MOVER, &tid_at(time), time, &[], Some(key))
}

#[test]
fn commits_made_before_a_key_rotation_verify_against_the_key_then_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_plc(dir.path(), &migration_log());
    let (k1, _) = test_key(1);
    let (k2, _) = test_key(2);
    let pds_a = vec![commit_at(1, "2026-01-10T12:00:00.000Z", &k1), commit_at(2, "2026-02-28T23:59:00.000Z", &k1)];
    let pds_b = vec![commit_at(1, "2026-03-01T00:10:00.000Z", &k2), commit_at(2, "2026-04-01T00:00:00.000Z", &k2)];
    let store = replay_archives(store, &[("pds-a", pds_a), ("pds-b", pds_b)]);
    let s = stats(&store);
    assert_eq!(s.signatures.get("sig_invalid"), None, "{:?}", s.signatures);
    assert_eq!((s.signatures["valid"], s.signatures["valid_prior_key"]), (2, 2), "{:?}", s.signatures);
    assert_eq!(s.dropped.get("bad_signature"), None);
    let a = store.account(MOVER).unwrap().unwrap();
    assert_eq!((a.commits, a.rev), (4, Some(tid_at("2026-04-01T00:00:00.000Z"))));
}

#[test]
fn a_rotated_away_key_is_refused_for_a_commit_claiming_a_time_after_the_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_plc(dir.path(), &migration_log());
    let (k1, _) = test_key(1);
    let (before, after) = ("2026-02-01T00:00:00.000Z", "2026-03-02T00:00:00.000Z");
    let frames = vec![
        // made while K1 was in force: accepted, under its own label
        signed_commit_frame_at(1, MOVER, &tid_at(before), before, &[], Some(&k1)),
        // an old (leaked) K1 claiming times after the rotation: in the
        // rev, in the frame's time, or both
        signed_commit_frame_at(2, MOVER, &tid_at(after), after, &[], Some(&k1)),
        signed_commit_frame_at(3, MOVER, &tid_at("2026-02-02T00:00:00.000Z"), after, &[], Some(&k1)),
        signed_commit_frame_at(4, MOVER, &tid_at("2026-03-03T00:00:00.000Z"), before, &[], Some(&k1)),
        // a rev that is not a TID has no time: the frame is refused
        signed_commit_frame_at(5, MOVER, "notatid", before, &[], Some(&k1)),
    ];
    let store = replay_archives(store, &[("pds-a", frames)]);
    let s = stats(&store);
    assert_eq!(s.signatures["valid_prior_key"], 1, "{:?}", s.signatures);
    assert_eq!(s.signatures["sig_invalid"], 3, "{:?}", s.signatures);
    assert_eq!(s.dropped["bad_signature"], 3);
    assert_eq!(s.dropped["rejected"], 1, "a rev that is not a TID");
    let a = store.account(MOVER).unwrap().unwrap();
    assert_eq!((a.commits, a.rev), (1, Some(tid_at(before))), "the refused commits are not applied");
}

#[test]
fn a_tombstone_ends_the_last_key() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, mk1) = test_key(1);
    let store = store_with_plc(
        dir.path(),
        &[
            plc_line(1, "bafyreigenesis", None, GENESIS, Some(&mk1), "https://pds-a.example.com"),
            plc_line(2, "bafyreitombstone", Some("bafyreigenesis"), ROTATION, None, ""),
        ],
    );
    let frames = vec![commit_at(1, "2026-02-01T00:00:00.000Z", &k1), commit_at(2, "2026-03-05T00:00:00.000Z", &k1)];
    let store = replay_archives(store, &[("pds-a", frames)]);
    let s = stats(&store);
    assert_eq!((s.signatures["valid_prior_key"], s.signatures["sig_invalid"]), (1, 1), "{:?}", s.signatures);
    assert_eq!(store.account(MOVER).unwrap().unwrap().commits, 1);
}

#[test]
fn sync_frames_are_signature_checked() {
    let (key, mk) = test_key(7);
    let (other, _) = test_key(8);
    let did = "did:plc:gggggggggggggggggggggggg";
    let checker = Checker::with_keys(Some(Arc::new(HashMap::from([(did.to_owned(), mk)]))), None);
    let time = "2026-07-04T14:38:07.517Z";
    let frames = [
        signed_commit_frame(1, did, "3mptbypluud2a", &[], Some(&key)),
        sync_frame(2, did, "3mptbypluud2b", time, Some(&key)),
        sync_frame(3, did, "3mptbypluud2c", time, Some(&other)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut ingest = Ingest::new(Store::open(dir.path()).unwrap(), "replay").unwrap();
    for f in &frames {
        ingest.apply(settle(checker.queue(event::from_frame_bytes(f)))).unwrap();
    }
    let store = ingest.finish().unwrap();
    let s = stats(&store);
    assert_eq!((s.signatures["valid"], s.signatures["sig_invalid"]), (2, 1), "{:?}", s.signatures);
    assert_eq!(s.dropped["bad_signature"], 1);
    assert_eq!(
        store.account(did).unwrap().unwrap().rev.as_deref(),
        Some("3mptbypluud2b"),
        "the forged #sync is not applied"
    );
    assert_eq!(s.cursors["replay"], 2, "a refused frame's seq does not move the cursor");
}

/// Found by the reference-peer suite: after a migration the new PDS imports
/// the account's repo as it is (its commit signed by the old key, before
/// the rotation) and announces it with a `#sync` on activation, after the
/// rotation. The `#sync` was refused because its frame's rev and time are
/// after the rotation; the time a `#sync`'s signature vouches for is its
/// signed commit's own rev.
#[test]
fn a_sync_announcing_an_imported_repo_signed_before_the_rotation_is_accepted() {
    use instancemap::repo::cid;
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_plc(dir.path(), &migration_log());
    let (k1, _) = test_key(1);
    let (before, after) = ("2026-02-01T00:00:00.000Z", "2026-03-02T00:00:00.000Z");
    // the imported commit, made and signed under K1 at `signed_rev_time`
    let sync = |seq: i64, signed_rev_time: &str| {
        let commit = commit_block(MOVER, &tid_at(signed_rev_time), Some(&k1));
        let c = cid::dag_cbor_cid(&commit);
        frame(
            1,
            Some("#sync"),
            &map(vec![
                ("did", text(MOVER)),
                ("rev", text(&tid_at(after))), // the new PDS's own rev for the import
                ("seq", ciborium::Value::Integer(seq.into())),
                ("time", text(after)),
                ("blocks", ciborium::Value::Bytes(car(&c, &[(c.clone(), commit)]))),
            ]),
        )
    };
    let frames = vec![
        sync(1, before),
        // the same old key vouching for a commit made after the rotation: refused
        sync(2, "2026-03-03T00:00:00.000Z"),
    ];
    let store = replay_archives(store, &[("pds-b", frames)]);
    let s = stats(&store);
    assert_eq!(s.signatures["valid_prior_key"], 1, "{:?}", s.signatures);
    assert_eq!(s.signatures["sig_invalid"], 1, "{:?}", s.signatures);
    assert_eq!(s.dropped["bad_signature"], 1);
}
