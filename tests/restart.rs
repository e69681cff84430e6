//! Stopping ingest part-way without a flush and starting again ends with
//! the same store as one uninterrupted run.

mod common;

use std::process::Command;

use common::*;
use instancemap::event;
use instancemap::ingest::Ingest;
use instancemap::store::Store;

#[test]
fn crash_without_flush_then_resume_matches_uninterrupted() {
    let frames = reference_frames();
    let dir = tempfile::tempdir().unwrap();
    {
        let mut ingest = Ingest::new(Store::open(dir.path()).unwrap(), "relay").unwrap();
        for f in &frames[..500] {
            ingest.apply(event::from_frame_bytes(f)).unwrap();
        }
        ingest.flush().unwrap();
        for f in &frames[500..700] {
            ingest.apply(event::from_frame_bytes(f)).unwrap();
        }
        // dropped with 200 events pending: they are lost, as in a crash
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.cursor("relay").unwrap(), Some(500), "only the flushed batch and its cursor survived");
    // the relay replays from the start of its window; everything up to the
    // cursor is a duplicate, the rest applies once
    let store = ingest_frames(store, "relay", &frames);

    let dir2 = tempfile::tempdir().unwrap();
    let reference = ingest_frames(Store::open(dir2.path()).unwrap(), "relay", &frames);
    assert_eq!(snapshot(&store), snapshot(&reference));
    assert_eq!(stats(&store).dropped["duplicate"], 500);
}

#[test]
fn killed_replay_process_resumes_to_the_same_store() {
    let bin = env!("CARGO_BIN_EXE_instancemap");
    let file = fixture("reference-pds.frames");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut child =
        Command::new(bin).args(["replay", "--db"]).arg(&db).arg(&file).env("RUST_LOG", "error").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(40));
    child.kill().unwrap(); // SIGKILL: no flush, no clean close
    child.wait().unwrap();
    let out = Command::new(bin).args(["replay", "--db"]).arg(&db).arg(&file).env("RUST_LOG", "error").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let json = Command::new(bin).args(["stats", "--json", "--db"]).arg(&db).output().unwrap();
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let s: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let want = common::json("reference-pds.frames.json");
    assert_eq!(s["cursors"]["replay:reference-pds.frames"], want["last_seq"]);
    for (t, n) in want["by_type"].as_object().unwrap() {
        assert_eq!(&s["frames"][t], n, "{t}");
    }
    for (a, n) in want["ops"].as_object().unwrap() {
        assert_eq!(&s["ops"][a], n, "{a}");
    }

    let store = Store::open(&db).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let reference = ingest_frames(Store::open(dir2.path()).unwrap(), "replay", &reference_frames());
    assert_eq!(snapshot(&store), snapshot(&reference));
}
