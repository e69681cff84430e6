//! End-to-end replay into RocksDB: a frame file through exactly the
//! `instancemap replay` pipeline (reader+decoder thread → queue → writer
//! thread → batched RocksDB writes), into a fresh database each run.
//!
//! The input is synthetic so that it is large and realistic in shape:
//! 200,000 frames over 50,000 accounts (1 op per commit: likes, posts,
//! follows, and a labeler declaration now and then; an `#identity` every
//! 50 frames, an `#account` every 100), built with the test suite's frame
//! builder (real commit blocks and CIDs).
//!
//! Two runs: signature checks on with no keys known (so every commit is
//! applied unverified: the decode → store path alone), and signature checks
//! on with every account's k256 key in the store and every commit signed
//! (the full path with verification on the worker pool).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use instancemap::firehose::framelog::FrameWriter;

const FRAMES: usize = 200_000;
const ACCOUNTS: usize = 50_000;

fn did(i: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut s = String::from("did:plc:");
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for _ in 0..24 {
        s.push(A[(x % 32) as usize] as char);
        x = x / 32 + 7;
    }
    s
}

fn tid(i: usize) -> String {
    const A: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let mut s = String::from("3m");
    let mut x = i as u64;
    for _ in 0..11 {
        s.push(A[(x % 32) as usize] as char);
        x /= 32;
    }
    s.chars().rev().collect::<String>().replace(|c: char| !c.is_ascii_alphanumeric(), "2")
}

fn signing_key(i: usize) -> k256::ecdsa::SigningKey {
    use sha2::Digest;
    let seed = sha2::Sha256::digest((i as u64).to_le_bytes());
    k256::ecdsa::SigningKey::from_bytes(&seed).unwrap()
}

/// Stores every account's key as the PLC export would.
fn store_keys(db: &Path, keys: &[k256::ecdsa::SigningKey]) {
    use instancemap::identity::crypto::PublicKey;
    use instancemap::plc::{load::Loader, ExportOp, OpState};
    let store = instancemap::store::Store::open(db).unwrap();
    let mut loader = Loader::new(&store).unwrap();
    for (i, k) in keys.iter().enumerate() {
        loader
            .apply(ExportOp {
                did: did(i),
                cid: format!("bafy{i}"),
                created_at: "2024-01-01T00:00:00.000Z".into(),
                seq: Some(i as u64 + 1),
                nullified: false,
                prev: None,
                state: OpState::Update {
                    pds: Some("https://pds.example.com".into()),
                    handle: None,
                    signing_key: Some(
                        PublicKey::from_sec1(
                            instancemap::identity::crypto::Curve::K256,
                            &k.verifying_key().to_sec1_bytes(),
                        )
                        .unwrap()
                        .to_multikey(),
                    ),
                },
            })
            .unwrap();
    }
    loader.flush().unwrap();
}

fn write_log(path: &Path, keys: Option<&[k256::ecdsa::SigningKey]>) {
    let mut w = FrameWriter::create(path).unwrap();
    let subject = map(vec![
        ("uri", text("at://did:plc:zzzzzzzzzzzzzzzzzzzzzzzz/app.bsky.feed.post/3mptbypluud2a")),
        ("cid", text("bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4i")),
    ]);
    for i in 0..FRAMES {
        let seq = i as i64 + 1;
        let d = did(i % ACCOUNTS);
        let f = if i % 100 == 99 {
            frame(
                1,
                Some("#account"),
                &map(vec![
                    ("seq", ciborium::Value::Integer(seq.into())),
                    ("did", text(&d)),
                    ("time", text("2026-07-04T14:38:07.517Z")),
                    ("active", ciborium::Value::Bool(true)),
                ]),
            )
        } else if i % 50 == 49 {
            frame(
                1,
                Some("#identity"),
                &map(vec![
                    ("seq", ciborium::Value::Integer(seq.into())),
                    ("did", text(&d)),
                    ("time", text("2026-07-04T14:38:07.517Z")),
                    ("handle", text("someone.bsky.social")),
                ]),
            )
        } else {
            let rkey = tid(i);
            let (path, record) = match i % 7 {
                0..=2 => (
                    format!("app.bsky.feed.like/{rkey}"),
                    map(vec![
                        ("$type", text("app.bsky.feed.like")),
                        ("subject", subject.clone()),
                        ("createdAt", text("2026-07-04T14:38:07.517Z")),
                    ]),
                ),
                3..=4 => (
                    format!("app.bsky.feed.post/{rkey}"),
                    map(vec![
                        ("$type", text("app.bsky.feed.post")),
                        ("text", text("a post of ordinary length, with a few words in it and nothing else")),
                        ("langs", ciborium::Value::Array(vec![text("en")])),
                        ("createdAt", text("2026-07-04T14:38:07.517Z")),
                    ]),
                ),
                5 if i % 997 == 5 => {
                    ("app.bsky.labeler.service/self".to_owned(), labeler_record("2026-07-04T14:38:07.517Z"))
                }
                _ => (
                    format!("app.bsky.graph.follow/{rkey}"),
                    map(vec![
                        ("$type", text("app.bsky.graph.follow")),
                        ("subject", text(&did(i + 1))),
                        ("createdAt", text("2026-07-04T14:38:07.517Z")),
                    ]),
                ),
            };
            let op = [TestOp { action: "create", path: &path, record: Some(record), omit_block: false }];
            signed_commit_frame(seq, &d, &tid(i), &op, keys.map(|k| &k[i % ACCOUNTS]))
        };
        w.write(&f).unwrap();
    }
    w.finish().unwrap();
}

/// The ingest pipeline alone (the figure compared across versions).
fn run(rt: &tokio::runtime::Runtime, db: &Path, log: &Path) {
    let (_, s) = rt
        .block_on(instancemap::app::replay_frames(
            db,
            Some("bench"),
            std::slice::from_ref(&log.to_path_buf()),
            true,
            &Default::default(),
        ))
        .unwrap();
    assert_eq!(s.frames, FRAMES as u64);
    assert!(s.error.is_none());
}

/// The `replay` command end to end: the pipeline, then the map brought
/// current (every account is new here, so a full recompute).
fn run_command(rt: &tokio::runtime::Runtime, db: &Path, log: &Path) {
    let s = rt
        .block_on(instancemap::app::replay(
            db,
            Some("bench"),
            std::slice::from_ref(&log.to_path_buf()),
            true,
            Default::default(),
        ))
        .unwrap();
    assert_eq!(s.frames, FRAMES as u64);
    assert!(s.map.is_some_and(|m| m.contains("recomputed")));
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("synthetic.frames");
    write_log(&plain, None);
    let keys: Vec<_> = (0..ACCOUNTS).map(signing_key).collect();
    let signed = dir.path().join("synthetic-signed.frames");
    write_log(&signed, Some(&keys));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function("synthetic_200k_frames_50k_accounts", |b| {
        b.iter_with_setup(
            || tempfile::tempdir().unwrap(),
            |db| {
                run(&rt, db.path(), &plain);
                db
            },
        )
    });
    g.bench_function("synthetic_200k_frames_50k_accounts_command_with_map", |b| {
        b.iter_with_setup(
            || tempfile::tempdir().unwrap(),
            |db| {
                run_command(&rt, db.path(), &plain);
                db
            },
        )
    });
    g.bench_function("synthetic_200k_frames_50k_accounts_signed_verified", |b| {
        b.iter_with_setup(
            || {
                let db = tempfile::tempdir().unwrap();
                store_keys(db.path(), &keys);
                db
            },
            |db| {
                run(&rt, db.path(), &signed);
                let store = instancemap::store::Store::open_read_only(db.path()).unwrap();
                let s = instancemap::stats::Stats::read(&store).unwrap();
                assert_eq!(
                    s.signatures.get("valid").copied().unwrap_or(0),
                    s.frames["#commit"],
                    "every commit verified"
                );
                db
            },
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
