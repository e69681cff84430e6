//! The PLC export: the official audit logs read as legacy export lines and
//! as sequence-form lines give the same final state; real export lines;
//! resume; bad lines; and the HTTP reader against a fake directory.

mod common;

use std::io::Write;
use std::path::Path;

use instancemap::plc::load::PlcRecord;
use instancemap::plc::source;
use instancemap::plc::{parse_line, OpState};
use instancemap::store::{Store, StoreReader};
use serde_json::Value;

fn record(store: &Store, did: &str) -> Option<PlcRecord> {
    store.plc(did).unwrap()
}

/// All audit-log lines in export order (by `createdAt`, then CID).
fn export_order(logs: &[(String, Vec<Value>)]) -> Vec<Value> {
    let mut lines: Vec<Value> = logs.iter().flat_map(|(_, l)| l.iter().cloned()).collect();
    lines.sort_by(|a, b| {
        (a["createdAt"].as_str(), a["cid"].as_str()).cmp(&(b["createdAt"].as_str(), b["cid"].as_str()))
    });
    lines
}

fn audit_logs() -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(common::fixture("plc/audit_log")).unwrap() {
        let p = e.unwrap().path();
        let v: Vec<Value> = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The expected final state: the last non-nullified operation's.
fn expected(log: &[Value]) -> (OpState, String) {
    let last = log.iter().rev().find(|l| !l["nullified"].as_bool().unwrap()).unwrap();
    let op = parse_line(&serde_json::to_vec(last).unwrap()).unwrap();
    (op.state, op.cid)
}

fn write_lines(path: &Path, lines: &[Value]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{}", serde_json::to_string(l).unwrap()).unwrap();
    }
}

fn check_state(rec: &PlcRecord, want: &(OpState, String), name: &str) {
    assert_eq!(rec.head, want.1, "{name}");
    match &want.0 {
        OpState::Tombstone => assert!(rec.tombstoned, "{name}"),
        OpState::Update { pds, handle, signing_key } => {
            assert!(!rec.tombstoned, "{name}");
            assert_eq!((&rec.pds, &rec.handle, &rec.signing_key), (pds, handle, signing_key), "{name}");
        }
    }
}

#[test]
fn audit_logs_as_legacy_and_sequence_exports_agree() {
    let dir = tempfile::tempdir().unwrap();
    let logs = audit_logs();
    let mut legacy = Vec::new();
    let mut seq = Vec::new();
    let mut n = 0u64;
    for l in export_order(&logs) {
        legacy.push(l.clone());
        // the sequence form has every operation the directory accepted,
        // in order, with no nullified flag
        n += 1;
        let mut s = l.clone();
        s.as_object_mut().unwrap().remove("nullified");
        s["seq"] = n.into();
        s["type"] = "sequenced_op".into();
        seq.push(s);
    }
    let (lf, sf) = (dir.path().join("legacy.jsonl"), dir.path().join("seq.jsonl.zst"));
    write_lines(&lf, &legacy);
    let plain = dir.path().join("seq.jsonl");
    write_lines(&plain, &seq);
    let raw = std::fs::read(&plain).unwrap();
    std::fs::write(&sf, zstd::encode_all(raw.as_slice(), 3).unwrap()).unwrap();

    let a = Store::open(&dir.path().join("a")).unwrap();
    let sa = source::load_file(&a, &lf).unwrap();
    let b = Store::open(&dir.path().join("b")).unwrap();
    let sb = source::load_file(&b, &sf).unwrap();
    assert_eq!(sa.nullified_skipped, 8, "legacy lines flagged nullified are skipped");
    assert_eq!(sb.nullified_skipped, 0);
    let forks: u32 = logs.iter().map(|(_, l)| record(&b, l[0]["did"].as_str().unwrap()).unwrap().forks).sum();
    assert!(forks >= 4, "sequence form: each recovery is a fork ({forks})");
    for (name, log) in &logs {
        let did = log[0]["did"].as_str().unwrap();
        let want = expected(log);
        check_state(&record(&a, did).unwrap(), &want, name);
        check_state(&record(&b, did).unwrap(), &want, name);
    }
    // a tombstoned DID is kept, as tombstoned
    let tomb = logs.iter().find(|(n, _)| n == "log_tombstone.json").unwrap();
    assert!(record(&a, tomb.1[0]["did"].as_str().unwrap()).unwrap().tombstoned);
    let nt = logs.iter().find(|(n, _)| n == "log_nullified_tombstone.json").unwrap();
    assert!(!record(&b, nt.1[0]["did"].as_str().unwrap()).unwrap().tombstoned);
}

#[test]
fn real_export_lines() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stats = source::load_file(&store, &common::fixture("plc/export_seq_after0_count2.jsonl")).unwrap();
    assert_eq!(stats.applied, 2);
    let paul = record(&store, "did:plc:ragtjsm2j2vknwkz3zp4oxrd").unwrap();
    assert_eq!(paul.handle.as_deref(), Some("paul.bsky.social"));
    assert_eq!(paul.pds.as_deref(), Some("https://bsky.social"));
    assert_eq!(paul.signing_key.as_deref(), Some("zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ"));
    assert!(instancemap::plc::key_is_valid(paul.signing_key.as_deref().unwrap()));
    let pos = instancemap::plc::load::Position::load(&store).unwrap();
    assert_eq!(pos.seq, Some(2));
}

#[test]
fn resume_after_a_stop_applies_each_operation_once() {
    let dir = tempfile::tempdir().unwrap();
    let lines = export_order(&audit_logs());
    let half = dir.path().join("half.jsonl");
    write_lines(&half, &lines[..lines.len() / 2]);
    let all = dir.path().join("all.jsonl");
    write_lines(&all, &lines);
    let store = Store::open(&dir.path().join("db")).unwrap();
    let first = source::load_file(&store, &half).unwrap();
    let second = source::load_file(&store, &all).unwrap();
    assert_eq!(second.already_applied, first.lines);
    let once = Store::open(&dir.path().join("db2")).unwrap();
    source::load_file(&once, &all).unwrap();
    for (_, log) in audit_logs() {
        let did = log[0]["did"].as_str().unwrap();
        assert_eq!(record(&store, did), record(&once, did));
    }
}

#[test]
fn malformed_lines_are_counted_and_the_rest_applied() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(common::fixture("plc/export_seq_after0_count2.jsonl")).unwrap();
    let mut g = good.lines();
    let text = format!(
        "{}\nnot json\n{{\"did\":\"did:web:x.com\",\"cid\":\"b\",\"createdAt\":\"x\",\"operation\":{{\"type\":\"plc_operation\"}}}}\n{{\"did\":\"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\",\"cid\":\"b\",\"createdAt\":\"2022-11-17T00:35:16.391Z\",\"seq\":9,\"operation\":{{\"type\":\"mystery\"}}}}\n{}",
        g.next().unwrap(),
        g.next().unwrap()
    );
    let f = dir.path().join("mixed.jsonl");
    std::fs::write(&f, text).unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let s = source::load_file(&store, &f).unwrap();
    assert_eq!(s.applied, 2);
    assert_eq!(s.rejected.get("bad_json"), Some(&1));
    assert_eq!(s.rejected.get("invalid_op"), Some(&2));
    let c = store.counters().unwrap();
    assert_eq!(c["plc_error/invalid_op"], 2);
    assert_eq!(c["plc/ops"], 2);
}

/// The bug: one line with `seq = u64::MAX` (sequence form) or `createdAt:
/// "zzzz"` (legacy form) moved the position there, so every later line was
/// "already applied" (and `run`'s follower stayed "caught up" for good).
/// Such a line is now a counted reject, and the lines after it apply.
#[test]
fn one_line_with_an_untrusted_position_does_not_make_every_later_line_already_applied() {
    let good = std::fs::read_to_string(common::fixture("plc/export_seq_after0_count2.jsonl")).unwrap();
    let lines: Vec<Value> = good.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let did = |v: &Value| v["did"].as_str().unwrap().to_owned();
    let mut poisoned_seq = lines[0].clone();
    poisoned_seq["seq"] = Value::from(u64::MAX);
    poisoned_seq["did"] = Value::from("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa");
    let mut jumped = lines[0].clone();
    jumped["seq"] = Value::from(1u64 << 40);
    jumped["did"] = Value::from("did:plc:bbbbbbbbbbbbbbbbbbbbbbbb");
    let mut legacy = lines.clone();
    for l in &mut legacy {
        l.as_object_mut().unwrap().remove("seq");
    }
    let mut poisoned_time = legacy[0].clone();
    poisoned_time["createdAt"] = Value::from("zzzz");
    poisoned_time["did"] = Value::from("did:plc:cccccccccccccccccccccccc");
    let mut future = legacy[0].clone();
    future["createdAt"] = Value::from("2999-01-01T00:00:00.000Z");
    future["did"] = Value::from("did:plc:dddddddddddddddddddddddd");
    for (name, file) in [
        ("sequence", vec![lines[0].clone(), poisoned_seq, jumped, lines[1].clone()]),
        ("legacy", vec![legacy[0].clone(), poisoned_time, future, legacy[1].clone()]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("export.jsonl");
        write_lines(&f, &file);
        let store = Store::open(&dir.path().join("db")).unwrap();
        let s = source::load_file(&store, &f).unwrap();
        assert_eq!((s.applied, s.already_applied), (2, 0), "{name}: {s:?}");
        assert_eq!(s.rejected.get("bad_position"), Some(&2), "{name}: {s:?}");
        assert!(record(&store, &did(&lines[1])).is_some(), "{name}: the line after the poisoned ones applied");
        assert_eq!(store.counters().unwrap()["plc_error/bad_position"], 2, "{name}");
    }
}

/// A fake directory: `/export` in the legacy form (as the reference server
/// 0.0.1 serves it), with the first request answered 503 and a Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_export_pages_through_a_fake_directory() {
    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    // 2,500 synthetic operations over 2,500 DIDs, all at distinct times
    let mut lines = Vec::new();
    for i in 0..2500u32 {
        let did = format!("did:plc:{:0>24}", format!("{i:x}").replace(|c: char| c.is_ascii_digit(), "a"));
        lines.push(serde_json::json!({
            "did": did, "cid": format!("bafy{i}"), "nullified": false,
            "createdAt": format!("2023-01-01T00:{:02}:{:02}.{:03}Z", i / 3600 % 60, i / 60 % 60, i % 1000),
            "operation": {"type": "plc_operation", "prev": null, "alsoKnownAs": [format!("at://u{i}.test")],
                "verificationMethods": {"atproto": "did:key:zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ"},
                "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "https://pds.example.com/"}},
                "rotationKeys": [], "sig": "x"}
        }));
    }
    lines.sort_by(|a, b| a["createdAt"].as_str().cmp(&b["createdAt"].as_str()));
    struct S {
        lines: Vec<Value>,
        hits: AtomicUsize,
    }
    let state = Arc::new(S { lines, hits: AtomicUsize::new(0) });
    async fn export(State(s): State<Arc<S>>, Query(q): Query<HashMap<String, String>>) -> axum::response::Response {
        if s.hits.fetch_add(1, Ordering::SeqCst) == 0 {
            return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], "busy").into_response();
        }
        let after = q.get("after").cloned().unwrap_or_default();
        let count: usize = q.get("count").and_then(|c| c.parse().ok()).unwrap_or(1000).min(1000);
        let page: Vec<String> = s
            .lines
            .iter()
            .filter(|l| after == "0" || l["createdAt"].as_str().unwrap() > after.as_str())
            .take(count)
            .map(|l| l.to_string())
            .collect();
        page.join("\n").into_response()
    }
    let app = axum::Router::new().route("/export", axum::routing::get(export)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let s = source::load_http(&store, &format!("http://{addr}"), false, None, &cancel).await.unwrap();
    assert_eq!(s.applied, 2500);
    assert_eq!(state.hits.load(Ordering::SeqCst), 1 + 3, "one refused request, then three pages");
    let any = record(&store, state.lines[1234]["did"].as_str().unwrap()).unwrap();
    assert_eq!(any.pds.as_deref(), Some("https://pds.example.com"));
    // caught up: a second run asks once and applies nothing
    let s2 = source::load_http(&store, &format!("http://{addr}"), false, None, &cancel).await.unwrap();
    assert_eq!(s2.applied, 0);
}

#[test]
fn a_pds_change_is_kept_as_a_dated_move() {
    let dir = tempfile::tempdir().unwrap();
    let op = |seq: u64, cid: &str, prev: Option<&str>, at: &str, pds: &str| {
        serde_json::json!({"did": "did:plc:ragtjsm2j2vknwkz3zp4oxrd", "cid": cid, "seq": seq, "type": "sequenced_op",
            "createdAt": at, "operation": {"type": "plc_operation", "prev": prev, "sig": "x", "rotationKeys": [],
            "alsoKnownAs": ["at://paul.example.com"], "verificationMethods": {},
            "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": pds}}}})
    };
    let lines = vec![
        op(1, "bafyone", None, "2024-01-01T00:00:00.000Z", "https://a.example.com"),
        op(2, "bafytwo", Some("bafyone"), "2024-02-01T00:00:00.000Z", "https://A.example.com/"),
        op(3, "bafythree", Some("bafytwo"), "2024-03-01T00:00:00.000Z", "https://b.example.net"),
    ];
    let f = dir.path().join("moves.jsonl");
    write_lines(&f, &lines);
    let store = Store::open(&dir.path().join("db")).unwrap();
    source::load_file(&store, &f).unwrap();
    let rec = record(&store, "did:plc:ragtjsm2j2vknwkz3zp4oxrd").unwrap();
    assert_eq!(rec.pds.as_deref(), Some("https://b.example.net"));
    assert_eq!(rec.moves.len(), 1, "the same host written two ways is not a move: {:?}", rec.moves);
    assert_eq!(
        (rec.moves[0].from.as_str(), rec.moves[0].to.as_str(), rec.moves[0].at.as_str()),
        ("https://a.example.com", "https://b.example.net", "2024-03-01T00:00:00.000Z")
    );
}

/// Regression: the PLC load named no hosts (the host table stayed empty
/// until a resolution named one).
#[test]
fn backfill_registers_the_pds_hosts_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    source::load_file(&store, &common::fixture("plc/export_seq_after0_count2.jsonl")).unwrap();
    let h = instancemap::hosts::get(&store, "https://bsky.social").unwrap().expect("host registered");
    assert_eq!((h.state.as_str(), h.sources.as_slice()), ("pending", &["did_document".to_owned()][..]));
}

fn line_with_endpoint(did: &str, endpoint: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "did": did, "cid": "bafyreib2rxk3rybloqtqwbo", "seq": 7, "type": "sequenced_op",
        "createdAt": "2024-03-01T12:00:00.000Z",
        "operation": {"type": "plc_operation", "prev": null, "sig": "c2ln",
            "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": endpoint}},
            "alsoKnownAs": ["at://alice.example.com"], "rotationKeys": [],
            "verificationMethods": {"atproto": "did:key:zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ"}}
    }))
    .unwrap()
}

fn pds_of(line: &[u8]) -> Option<String> {
    match parse_line(line).unwrap().state {
        OpState::Update { pds, .. } => pds,
        OpState::Tombstone => panic!("not an update"),
    }
}

/// The parser remembers each endpoint's normalisation per thread: the
/// answer must be the one the endpoint's own text gives, the second time
/// as the first, for good and bad endpoints alike, and past the point where
/// the memory is cleared.
#[test]
fn a_remembered_endpoint_normalises_as_it_did_the_first_time() {
    let did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
    for _ in 0..3 {
        assert_eq!(
            pds_of(&line_with_endpoint(did, "HTTPS://PDS.Example.COM/")).as_deref(),
            Some("https://pds.example.com")
        );
        assert_eq!(
            pds_of(&line_with_endpoint(did, "https://pds.example.com")).as_deref(),
            Some("https://pds.example.com")
        );
        assert_eq!(pds_of(&line_with_endpoint(did, "https://pds.example.com/xrpc")), None, "a path is no endpoint");
        assert_eq!(pds_of(&line_with_endpoint(did, "ftp://pds.example.com")), None);
    }
    // more distinct endpoints than the memory holds: each still its own
    for i in 0..20_000 {
        let e = format!("https://h{i}.example.net");
        assert_eq!(pds_of(&line_with_endpoint(did, &e)), Some(e));
    }
    assert_eq!(pds_of(&line_with_endpoint(did, "https://pds.example.com/xrpc")), None);
    assert_eq!(
        pds_of(&line_with_endpoint(did, "HTTPS://PDS.Example.COM/")).as_deref(),
        Some("https://pds.example.com")
    );
}

/// The line is checked as UTF-8 once, before the JSON parse (which then
/// trusts its strings): bytes that are not UTF-8 are a `bad_json` line.
#[test]
fn a_line_that_is_not_utf8_is_bad_json() {
    let mut line = line_with_endpoint("did:plc:ewvi7nxzyoun6zhxrhs64oiz", "https://pds.example.com");
    let at = line.windows(5).position(|w| w == b"alice").unwrap();
    line[at] = 0xff;
    let e = parse_line(&line).unwrap_err();
    assert_eq!(e.reason(), "bad_json", "{e}");
}
