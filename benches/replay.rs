//! End-to-end replay into RocksDB: a frame file through exactly the
//! `instancemap replay` pipeline (reader+decoder thread → queue → writer
//! thread → batched RocksDB writes), into a fresh database each run.
//!
//! The input is synthetic so that it is large and realistic in shape:
//! 200,000 frames over 50,000 accounts (1 op per commit: likes, posts,
//! follows, and a labeler declaration now and then; an `#identity` every
//! 50 frames, an `#account` every 100), built with the test suite's frame
//! builder (real commit blocks and CIDs).

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

fn write_log(path: &Path) {
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
            commit_frame(
                seq,
                &d,
                &tid(i),
                &[TestOp { action: "create", path: &path, record: Some(record), omit_block: false }],
            )
        };
        w.write(&f).unwrap();
    }
    w.finish().unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("synthetic.frames");
    write_log(&log);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function("synthetic_200k_frames_50k_accounts", |b| {
        b.iter_with_setup(
            || tempfile::tempdir().unwrap(),
            |db| {
                let s = rt
                    .block_on(instancemap::app::replay(
                        db.path(),
                        "bench",
                        std::slice::from_ref(&log),
                        true,
                        Default::default(),
                    ))
                    .unwrap();
                assert_eq!(s.frames, FRAMES as u64);
                assert!(s.error.is_none());
                db
            },
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
