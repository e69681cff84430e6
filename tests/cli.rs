//! The binary end to end on loopback: `run` against a fake relay with
//! /metrics and /healthz, SIGTERM flushes and exits 0, `stats --json`
//! reports it; `record` then `replay` reproduces the same store.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use instancemap::firehose::subscribe::SUBSCRIBE_PATH;
use instancemap::metrics::NAMES;
use instancemap::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_instancemap");

async fn start_relay() -> (std::net::SocketAddr, Arc<Vec<Vec<u8>>>) {
    let frames = Arc::new(reference_frames());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_frames(listener, frames.clone()));
    (addr, frames)
}

/// `backfill-plc` of the two real export lines into `db`.
fn backfill_sample(db: &std::path::Path) {
    let out = Command::new(BIN)
        .args(["backfill-plc", "--db"])
        .arg(db)
        .arg("--file")
        .arg(fixture("plc/export_seq_after0_count2.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn stats_json(db: &std::path::Path) -> serde_json::Value {
    let out = Command::new(BIN).args(["stats", "--json", "--db"]).arg(db).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_metrics_and_health_and_exits_cleanly_on_sigterm() {
    let (relay, _frames) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--no-plc",
            "--no-resolve",
            "--relay",
            &format!("ws://{relay}"),
            "--listen",
            &listen.to_string(),
            "--db",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _reaper = common::KillOnDrop(child.id());

    let want = json("reference-pds.frames.json");
    let last = want["last_seq"].as_i64().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = http_get(listen, "/healthz").await {
            let h: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(h["status"], "ok");
            if h["cursor_committed"] == last {
                assert_eq!(h["connected"], true);
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "run did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, metrics) = http_get(listen, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for name in NAMES {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(metrics.contains(r##"instancemap_firehose_frames_total{type="#commit"} 1436"##), "frames metric moved");
    assert!(metrics.contains(&format!("instancemap_ingest_cursor_committed {last}")));
    assert!(metrics.contains(r#"instancemap_ingest_ops_total{action="create"} 1335"#));
    let (status, _) = http_get(listen, "/nope").await.unwrap();
    assert_eq!(status, 404);

    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "run exits 0 on SIGTERM: {status:?}");

    let s = stats_json(dir.path());
    let source = format!("ws://{relay}{SUBSCRIBE_PATH}");
    assert_eq!(s["cursors"][&source], last);
    for (t, n) in want["by_type"].as_object().unwrap() {
        assert_eq!(&s["frames"][t], n, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_reproduces_the_store() {
    let (relay, frames) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rec.frames.zst");
    let out = tokio::task::spawn_blocking({
        let file = file.clone();
        move || {
            Command::new(BIN)
                .args(["record", "--relay", &format!("ws://{relay}"), "--max-frames", "1512", "--out"])
                .arg(&file)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recorded = instancemap::firehose::framelog::read_all(&file).unwrap();
    assert_eq!(&recorded, frames.as_ref(), "recorded byte for byte");

    let db = dir.path().join("db");
    let out = Command::new(BIN).args(["replay", "--db"]).arg(&db).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replayed = Store::open_read_only(&db).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let direct = ingest_frames(Store::open(dir2.path()).unwrap(), "replay", &frames);
    assert_eq!(snapshot(&replayed), snapshot(&direct));

    // text stats work too
    let out = Command::new(BIN).args(["stats", "--db"]).arg(&db).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("#commit") && text.contains("1436"), "{text}");
}

#[test]
fn replay_of_a_cut_file_fails_with_the_position_and_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::read(fixture("reference-pds.frames")).unwrap();
    let cut = dir.path().join("cut.frames");
    std::fs::write(&cut, &data[..data.len() - 10]).unwrap();
    let db = dir.path().join("db");
    let out = Command::new(BIN).args(["replay", "--db"]).arg(&db).arg(&cut).env("RUST_LOG", "off").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ends mid-frame: frame 1511 at byte"), "{err}");
    let s = stats_json(&db);
    assert_eq!(s["cursors"]["replay:cut.frames"], 1511, "every frame before the cut is applied");
}

#[test]
fn bad_settings_are_refused_before_anything_starts() {
    let out = Command::new(BIN).args(["run", "--relay", "https://bsky.network"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with ws:// or wss://"));
    let out = Command::new(BIN).args(["stats", "--db", "/nonexistent/instancemap"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn account_shows_firehose_and_plc_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let out =
        Command::new(BIN).args(["replay", "--db"]).arg(&db).arg(fixture("reference-pds.frames")).output().unwrap();
    assert!(out.status.success());
    backfill_sample(&db);

    let did = "did:plc:ws2wfasybq3zbzrn77esrbsz"; // deleted at the end of the corpus
    let out = Command::new(BIN).args(["account", did, "--json", "--db"]).arg(&db).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["firehose"]["status"], "deleted");
    assert_eq!(v["firehose"]["handle"], "yan24.pds-a.test");
    assert!(v["plc"].is_null());

    let paul = "did:plc:ragtjsm2j2vknwkz3zp4oxrd";
    let out = Command::new(BIN).args(["account", paul, "--db"]).arg(&db).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("https://bsky.social") && text.contains("firehose: not seen"), "{text}");

    let out =
        Command::new(BIN).args(["account", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "--db"]).arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["account", "nope", "--db"]).arg(&db).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn recluster_then_instances_and_instance() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    backfill_sample(&db);
    let out = Command::new(BIN).args(["recluster", "--db"]).arg(&db).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN).args(["instances", "--json", "--db"]).arg(&db).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "bsky.social");
    assert_eq!(v[0]["members"]["registered"], 2);
    let out = Command::new(BIN).args(["instance", "bsky.social", "--db"]).arg(&db).output().unwrap();
    assert!(out.status.success());
    let i: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(i["instance"]["hosts"][0], "https://bsky.social");
    let out = Command::new(BIN).args(["instance", "inst_000000000000", "--db"]).arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out =
        Command::new(BIN).args(["account", "did:plc:ragtjsm2j2vknwkz3zp4oxrd", "--db"]).arg(&db).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("instance: bsky.social (inst_"));
}

/// Two PDSes' archives, each numbering its seqs from 1: the bug was that
/// both ran under one cursor, so every frame of the second was dropped as
/// `duplicate`. Each file now has its own cursor; the same replay again
/// changes nothing.
#[test]
fn replay_of_several_hosts_archives_applies_every_file_and_again_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("pds-a.frames");
    std::fs::copy(fixture("reference-pds.frames"), &a).unwrap();
    let b = dir.path().join("pds-b.frames");
    let mut w = instancemap::firehose::framelog::FrameWriter::create(&b).unwrap();
    let dids: Vec<String> = (0..40).map(|i| format!("did:plc:bbbbbbbbbbbbbbbbbbbbbb{i:02}")).collect();
    for (i, did) in dids.iter().enumerate() {
        w.write(&commit_frame(i as i64 + 1, did, "3mptbypluud2a", &[])).unwrap();
    }
    w.finish().unwrap();
    let db = dir.path().join("db");
    let replay = || {
        let out = Command::new(BIN).args(["replay", "--db"]).arg(&db).arg(&a).arg(&b).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = replay();
    let s = stats_json(&db);
    assert_eq!(s["cursors"]["replay:pds-a.frames"], 1512, "{first}");
    assert_eq!(s["cursors"]["replay:pds-b.frames"], 40, "{first}");
    assert_eq!(s["dropped"]["duplicate"].as_i64().unwrap_or(0), 0, "nothing dropped: {first}");
    let store = Store::open_read_only(&db).unwrap();
    for did in &dids {
        assert!(store.account(did).unwrap().is_some_and(|a| a.commits == 1), "{did} applied");
    }
    let before = snapshot(&store);
    drop(store);
    let again = replay();
    assert!(again.contains("pds-b.frames: 40 frames, 0 applied, 40 already applied"), "{again}");
    assert_eq!(snapshot(&Store::open_read_only(&db).unwrap()), before, "the same replay twice changes nothing");
}

/// Under one `--source` the files are one stream: a second host's archive
/// is then (as asked) deduplicated against the first, and the replay says
/// so per file.
#[test]
fn replay_under_one_source_says_which_file_was_already_applied() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let f = fixture("reference-pds.frames");
    let out = Command::new(BIN)
        .args(["replay", "--source", "one", "--db"])
        .arg(&db)
        .arg(&f)
        .arg(&f)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1512 frames, 0 applied, 1512 already applied (cursor one)"), "{err}");
    assert!(err.contains("already applied (if it is another host's archive"), "the warning: {err}");
    // without --source, two files of one name would share a cursor: refused
    let out = Command::new(BIN).args(["replay", "--db"]).arg(&db).arg(&f).arg(&f).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("have one file name"));
}

/// The bug: after `backfill-plc` and `replay`, `instances` printed `[]` and
/// the API answered as if the network were empty until someone ran
/// `recluster`, and nothing said so. Every command that writes now leaves
/// the map current before it exits.
#[test]
fn map_is_current_after_backfill_and_replay_without_recluster() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    backfill_sample(&db);
    let out = Command::new(BIN).args(["instances", "--json", "--db"]).arg(&db).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1, "bsky.social's instance, without recluster: {v}");
    assert_eq!(list[0]["members"]["registered"], 2, "{v}");
    assert!(out.stderr.is_empty(), "a current map needs no note: {}", String::from_utf8_lossy(&out.stderr));
    let out =
        Command::new(BIN).args(["replay", "--db"]).arg(&db).arg(fixture("reference-pds.frames")).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("map: "), "{}", String::from_utf8_lossy(&out.stderr));
    let s = stats_json(&db);
    assert_eq!(s["map"]["current"], true, "{}", s["map"]);
    assert_eq!(s["map"]["pending"], 0);
    let n: i64 = s["map"]["accounts"].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum();
    assert!(n > 2, "the replayed accounts are in the map too: {}", s["map"]);
}

/// The bug: `backfill-plc --file` ignored SIGTERM (systemd waits, then
/// kills). It now stops between chunks, keeps its position and exits 130;
/// the next run resumes there and applies each operation once.
#[test]
fn backfill_plc_from_a_file_stops_on_sigterm_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let file = dir.path().join("export.jsonl");
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let n = 250_000u64;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..n {
            let did: String = (0..24).map(|k| alphabet[((i >> (5 * (k % 12))) as usize + k) % 32] as char).collect();
            writeln!(
                f,
                r#"{{"did":"did:plc:{did}","cid":"bafy{i}","seq":{},"createdAt":"2024-01-01T00:00:00.000Z","operation":{{"type":"plc_operation","prev":null,"services":{{"atproto_pds":{{"type":"AtprotoPersonalDataServer","endpoint":"https://pds{}.example.com"}}}},"alsoKnownAs":["at://u{i}.example.com"],"verificationMethods":{{}},"rotationKeys":[]}},"type":"sequenced_op"}}"#,
                i + 1,
                i % 50
            )
            .unwrap();
        }
    }
    let applied = |text: &str| -> u64 {
        let t = text.split(" operations applied").next().unwrap();
        t.rsplit(' ').next().unwrap().replace(',', "").parse().unwrap()
    };
    // the signal must land once the load is under way: on a busy machine
    // opening the store can take longer than the first wait (CI saw a run
    // stopped before its first line), so a run stopped before any
    // operation is tried again, on a fresh database, waiting longer
    let mut first_run = None;
    for wait_ms in [700, 1200, 2000] {
        let _ = std::fs::remove_dir_all(&db);
        let child = Command::new(BIN)
            .args(["backfill-plc", "--db"])
            .arg(&db)
            .arg("--file")
            .arg(&file)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(130), "{err}");
        assert!(err.contains("stopped by a signal"), "{err}");
        if applied(&err) > 0 {
            first_run = Some(err);
            break;
        }
    }
    let err = first_run.expect("a run stopped by a signal after applying some operations");
    // resumed: the rest applied, nothing twice
    let out = Command::new(BIN).args(["backfill-plc", "--db"]).arg(&db).arg("--file").arg(&file).output().unwrap();
    let err2 = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err2}");
    let (first, second) = (applied(&err), applied(&err2));
    assert!(first > 0 && first < n, "the first run stopped part way: {err}");
    assert_eq!(first + second, n, "{err}\n{err2}");
}

/// The bug: frames without a seq (`#info`, error frames, frames that do not
/// decode) were counted again when a replay was run again (after a kill, or
/// twice). A replayed file's frames consumed are kept with its cursor, and
/// a rerun skips them whole: every counter stays as it was.
#[test]
fn a_replay_run_again_counts_no_frame_twice_with_a_seq_or_without() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.frames");
    let mut w = instancemap::firehose::framelog::FrameWriter::create(&file).unwrap();
    for i in 0..30i64 {
        w.write(&commit_frame(i + 1, "did:plc:cccccccccccccccccccccccc", "3mptbypluud2a", &[])).unwrap();
        if i % 10 == 0 {
            w.write(&frame(1, Some("#info"), &map(vec![("name", text("OutdatedCursor"))]))).unwrap();
            w.write(b"\x00not a frame").unwrap();
        }
    }
    w.finish().unwrap();
    let db = dir.path().join("db");
    let counters = || {
        let store = Store::open_read_only(&db).unwrap();
        instancemap::store::StoreReader::all_counters(&store).unwrap()
    };
    let replay = || {
        let out = Command::new(BIN).args(["replay", "--db"]).arg(&db).arg(&file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    replay();
    let once = counters();
    assert_eq!(once.get("info/OutdatedCursor"), Some(&3), "{once:?}");
    assert_eq!(once.get("dropped/rejected"), Some(&3), "{once:?}");
    replay();
    assert_eq!(counters(), once, "nothing counted twice");
}
