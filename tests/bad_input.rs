//! Bad input: each kind is rejected with its counted reason, ingest goes
//! on, and nothing already stored changes.

mod common;

use ciborium::Value;
use common::*;
use instancemap::firehose::frame::{self, FrameError, Verify, MAX_FRAME_BYTES};
use instancemap::firehose::framelog::{FrameLogError, FrameReader};
use instancemap::store::Store;

/// A store holding the reference corpus, and what it looked like.
fn populated() -> (tempfile::TempDir, Store, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let store = ingest_frames(Store::open(dir.path()).unwrap(), "replay", &reference_frames());
    let snap = snapshot(&store);
    (dir, store, snap)
}

/// Feeds one bad frame, then a good new one, and checks the reason, that the
/// good one still applied, and that nothing else changed.
fn rejects(bad: Vec<u8>, reason: &str) {
    let direct = frame::decode(&bad, Verify::Used { kept: instancemap::event::STORED_COLLECTIONS });
    assert_eq!(direct.as_ref().map(|_| ()).map_err(FrameError::reason), Err(reason), "decode of the bad frame");
    let (_dir, store, before) = populated();
    let good = commit_frame(5000, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "3mptbypluud2a", &[]);
    let store = ingest_frames(store, "replay", &[bad, good]);
    let s = stats(&store);
    assert_eq!(s.errors.get(reason), Some(&1), "counted under {reason}: {:?}", s.errors);
    assert_eq!(s.errors.values().sum::<i64>(), 1);
    assert_eq!(s.dropped["rejected"], 1);
    assert_eq!(s.cursors["replay"], 5000, "ingest went on after the bad frame");
    let mut after = snapshot(&store);
    assert!(after.accounts.remove("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa").is_some());
    for k in [format!("error/{reason}"), "frame/#commit".into(), "total/accounts".into(), "status/unknown".into()] {
        after.counters.remove(&k);
    }
    let mut before = before;
    for k in ["frame/#commit", "total/accounts", "status/unknown"] {
        before.counters.remove(k);
    }
    assert_eq!(after, before, "stored data untouched");
}

fn a_real_commit() -> Vec<u8> {
    jetstream_frames().into_iter().next().unwrap()
}

#[test]
fn truncated_frame() {
    let f = a_real_commit();
    rejects(f[..f.len() / 2].to_vec(), "truncated");
}

#[test]
fn garbage_bytes() {
    rejects(b"\xff\xfe this is not CBOR at all".to_vec(), "invalid_cbor");
}

#[test]
fn empty_frame() {
    rejects(Vec::new(), "empty_frame");
}

#[test]
fn cbor_bomb_deep_nesting() {
    let mut body = cbor(&map(vec![("seq", Value::Integer(1.into()))]));
    body[0] = 0xa2; // two entries: seq, then "x": [[[[…]]]]
    body.extend(cbor(&text("x")));
    body.extend(std::iter::repeat_n(0x81u8, 100_000));
    body.push(0x01);
    let mut f = cbor(&map(vec![("op", Value::Integer(1.into())), ("t", text("#commit"))]));
    f.extend(body);
    rejects(f, "too_deep");
}

#[test]
fn cbor_bomb_huge_declared_length() {
    // {"blocks": bytes of 2^62 declared bytes}
    let mut f = cbor(&map(vec![("op", Value::Integer(1.into())), ("t", text("#commit"))]));
    f.extend([0xa1, 0x66]);
    f.extend(b"blocks");
    f.extend([0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0]);
    rejects(f, "length_too_large");
    // an array that claims 2^32 elements
    let mut f = cbor(&map(vec![("op", Value::Integer(1.into())), ("t", text("#commit"))]));
    f.extend([0xa1, 0x63]);
    f.extend(b"ops");
    f.extend([0x9a, 0xff, 0xff, 0xff, 0xff]);
    rejects(f, "length_too_large");
    // and one that claims 65,536, more than the bytes that follow
    let mut f = cbor(&map(vec![("op", Value::Integer(1.into())), ("t", text("#commit"))]));
    f.extend([0xa1, 0x63]);
    f.extend(b"ops");
    f.extend([0x9a, 0x00, 0x01, 0x00, 0x00, 0x01]);
    rejects(f, "truncated");
}

#[test]
fn car_with_a_bad_header() {
    let good = commit_frame(10, "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", "3mptbypluud2a", &[]);
    // the CAR header is `{version: 1, roots: […]}`: make the version 2
    let at = good.windows(8).position(|w| w == b"version\x01").expect("CAR header in frame");
    let mut bad = good.clone();
    bad[at + 7] = 0x02;
    rejects(bad, "bad_car");
}

#[test]
fn block_that_does_not_hash_to_its_cid() {
    let good = a_real_commit();
    let f = frame::decode(&good, Verify::All).unwrap();
    let frame::Frame::Commit(c) = f else { panic!("a commit") };
    let block = c.blocks.get(c.commit).unwrap();
    // flip a byte inside the 64-byte signature: still valid CBOR, wrong hash
    let sig_at = block.as_ptr() as usize - good.as_ptr() as usize + block.len() - 70;
    let mut bad = good.clone();
    bad[sig_at] ^= 0xff;
    rejects(bad, "cid_mismatch");
}

#[test]
fn kept_record_that_does_not_hash_to_its_cid() {
    let good = commit_frame(
        10,
        "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb",
        "3mptbypluud2a",
        &[TestOp {
            action: "create",
            path: "app.bsky.labeler.service/self",
            record: Some(labeler_record("2026-01-01T00:00:00Z")),
            omit_block: false,
        }],
    );
    let at = good.windows(10).position(|w| w == b"2026-01-01").expect("record in frame");
    let mut bad = good.clone();
    bad[at] = b'3';
    rejects(bad, "cid_mismatch");
}

#[test]
fn frame_over_the_size_limit() {
    let mut f = a_real_commit();
    f.resize(MAX_FRAME_BYTES + 1, 0);
    rejects(f, "frame_too_large");
}

#[test]
fn bytes_after_the_body() {
    let mut f = a_real_commit();
    f.push(0x01);
    rejects(f, "trailing_bytes");
}

#[test]
fn commit_without_a_required_field() {
    let body = map(vec![("seq", Value::Integer(7.into())), ("repo", text("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"))]);
    rejects(frame(1, Some("#commit"), &body), "missing_field");
}

#[test]
fn account_with_a_bad_did() {
    let body = map(vec![
        ("seq", Value::Integer(7.into())),
        ("did", text("not a did")),
        ("time", text("2026-07-04T14:38:07.517Z")),
        ("active", Value::Bool(true)),
    ]);
    rejects(frame(1, Some("#account"), &body), "bad_field");
}

#[test]
fn header_without_op() {
    let mut f = cbor(&map(vec![("t", text("#commit"))]));
    f.extend(cbor(&map(vec![])));
    rejects(f, "bad_header");
}

#[test]
fn deprecated_and_unknown_types_are_skipped_not_fatal() {
    let (_dir, store, before) = populated();
    let cursor_before = stats(&store).cursors.get("replay").copied();
    let handle = frame(
        1,
        Some("#handle"),
        &map(vec![
            ("seq", Value::Integer(6000.into())),
            ("did", text("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb")),
            ("handle", text("x.test")),
            ("time", text("2026-07-04T14:38:07.517Z")),
        ]),
    );
    let unknown = frame(1, Some("#future"), &map(vec![("seq", Value::Integer(6001.into()))]));
    let odd_op = frame(2, Some("#commit"), &Value::Array(vec![]));
    let store = ingest_frames(store, "replay", &[handle, unknown, odd_op]);
    let s = stats(&store);
    assert_eq!(s.dropped["deprecated"], 1);
    assert_eq!(s.dropped["unknown_type"], 2);
    // a skipped frame's seq was never applied (nor validated): not taken
    assert_eq!(s.cursors.get("replay").copied(), cursor_before, "skipped frames do not move the cursor");
    let mut after = snapshot(&store);
    after.counters.retain(|k, _| !k.starts_with("frame/deprecated") && !k.starts_with("frame/unknown"));
    assert_eq!(after, before);
}

#[test]
fn missing_record_block_is_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let f = commit_frame(
        1,
        "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb",
        "3mptbypluud2a",
        &[TestOp {
            action: "create",
            path: "app.bsky.feed.post/3mptbypluud2a",
            record: Some(map(vec![("text", text("hi"))])),
            omit_block: true,
        }],
    );
    let store = ingest_frames(Store::open(dir.path()).unwrap(), "replay", &[f]);
    let s = stats(&store);
    assert_eq!(s.record_blocks_missing, 1);
    assert_eq!(s.ops["create"], 1);
    assert!(s.errors.is_empty());
}

#[test]
fn replay_file_ending_mid_frame_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let frames = reference_frames();
    let mut log = Vec::new();
    for f in &frames[..10] {
        log.extend((f.len() as u32).to_le_bytes());
        log.extend(f);
    }
    let whole = log.len() as u64;
    log.extend((frames[10].len() as u32).to_le_bytes());
    log.extend(&frames[10][..5]);
    let path = dir.path().join("cut.frames");
    std::fs::write(&path, &log).unwrap();
    let mut r = FrameReader::open(&path).unwrap();
    let mut buf = Vec::new();
    for _ in 0..10 {
        assert!(r.next_into(&mut buf).unwrap());
    }
    match r.next_into(&mut buf) {
        Err(FrameLogError::Truncated { frame, offset, .. }) => {
            assert_eq!((frame, offset), (10, whole));
        }
        other => panic!("expected a truncation error, got {other:?}"),
    }
    let msg = FrameReader::open(&path)
        .and_then(|mut r| loop {
            if !r.next_into(&mut buf)? {
                break Ok(());
            }
        })
        .unwrap_err()
        .to_string();
    assert!(msg.contains("frame 10") && msg.contains(&format!("byte {whole}")), "{msg}");
}

#[test]
fn no_truncation_or_byte_flip_of_real_frames_panics() {
    let mut frames = jetstream_frames();
    frames.truncate(20);
    frames.extend(reference_frames().into_iter().step_by(100));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d; // xorshift: deterministic
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let kept = instancemap::event::STORED_COLLECTIONS;
    for f in &frames {
        for cut in (0..f.len()).step_by(13) {
            let _ = frame::decode(&f[..cut], Verify::All);
            let _ = frame::decode(&f[..cut], Verify::Used { kept });
        }
        for _ in 0..300 {
            let mut m = f.clone();
            for _ in 0..1 + rnd() % 4 {
                let i = (rnd() % m.len() as u64) as usize;
                m[i] = rnd() as u8;
            }
            let _ = frame::decode(&m, Verify::All);
            let _ = instancemap::event::from_frame_bytes(&m);
        }
    }
}
