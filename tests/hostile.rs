//! Hostile input cannot stop or starve ingest: one frame cannot poison the
//! cursor (every later event dropped as a duplicate, and `run` asking the
//! relay for that cursor after a restart), a skipped frame's seq is not
//! taken, and an operator can reset a cursor.

mod common;

use ciborium::Value;
use common::*;
use instancemap::store::{Store, StoreReader};

const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

fn account(seq: i64) -> Vec<u8> {
    frame(
        1,
        Some("#account"),
        &map(vec![
            ("seq", Value::Integer(seq.into())),
            ("did", text(DID)),
            ("time", text("2026-07-04T14:38:07.517Z")),
            ("active", Value::Bool(true)),
        ]),
    )
}

fn info(name: &str) -> Vec<u8> {
    frame(1, Some("#info"), &map(vec![("name", text(name))]))
}

fn run(frames: &[Vec<u8>]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let store = ingest_frames(store, "wss://relay.example", frames);
    (dir, store)
}

fn dropped(store: &Store, reason: &str) -> i64 {
    store.all_counters().unwrap().get(&format!("dropped/{reason}")).copied().unwrap_or(0)
}

/// The bug: a frame with seq 2^63-1 moved the cursor there; every later
/// event was dropped as a duplicate.
#[test]
fn one_frame_with_seq_i64_max_does_not_poison_the_cursor() {
    let (_d, store) = run(&[account(1), account(2), account(i64::MAX), account(3), account(4)]);
    assert_eq!(store.source_cursor("wss://relay.example").unwrap(), Some(4));
    assert_eq!(dropped(&store, "seq_implausible"), 1, "{:?}", store.all_counters().unwrap());
    assert_eq!(dropped(&store, "duplicate"), 0, "nothing after it was lost");
}

/// One bit flipped in a seq (a fuzzer found it by accident): refused as a
/// jump, the stream goes on.
#[test]
fn one_bit_flipped_in_a_seq_is_refused_as_a_jump() {
    let flipped = 2 | (1i64 << 40);
    let (_d, store) = run(&[account(1), account(2), account(flipped), account(3), account(4)]);
    assert_eq!(store.source_cursor("wss://relay.example").unwrap(), Some(4));
    assert_eq!(dropped(&store, "seq_jump"), 1);
    assert_eq!(dropped(&store, "duplicate"), 0);
}

/// A negative seq is no seq a relay gives (the decoder refuses it), nor
/// one beyond any relay's numbering when there is no cursor yet.
#[test]
fn a_negative_or_huge_seq_is_refused_without_a_cursor_too() {
    let (_d, store) = run(&[account(-1), account(5), account(6)]);
    assert_eq!(store.source_cursor("wss://relay.example").unwrap(), Some(6));
    assert_eq!(dropped(&store, "rejected"), 1);
    let (_d, store) = run(&[account(1 << 60), account(5)]);
    assert_eq!(store.source_cursor("wss://relay.example").unwrap(), Some(5));
    assert_eq!(dropped(&store, "seq_implausible"), 1);
}

/// A skipped frame (a deprecated type here) does not move the cursor: its
/// seq was never applied.
#[test]
fn a_skipped_frames_seq_is_not_taken() {
    let handle = frame(
        1,
        Some("#handle"),
        &map(vec![("seq", Value::Integer(9.into())), ("did", text(DID)), ("handle", text("a.example.com"))]),
    );
    let (_d, store) = run(&[account(1), handle]);
    assert_eq!(store.source_cursor("wss://relay.example").unwrap(), Some(1));
    assert_eq!(dropped(&store, "deprecated"), 1);
}

/// After `#info OutdatedCursor` the relay resumes from its oldest event: one
/// jump is taken, and only then.
#[test]
fn an_outdated_cursor_lets_the_relay_jump_once() {
    let far = 40_000_000;
    let (_d, store) = run(&[account(10), info("OutdatedCursor"), account(far), account(far + 1)]);
    assert_eq!(store.source_cursor("wss://relay.example").unwrap(), Some(far + 1));
    assert_eq!(dropped(&store, "seq_jump"), 0);
    let (_d, store) = run(&[account(10), info("OutdatedCursor"), account(11), account(far)]);
    assert_eq!(store.source_cursor("wss://relay.example").unwrap(), Some(11), "the allowance is spent");
    assert_eq!(dropped(&store, "seq_jump"), 1);
}

/// The documented reset: `instancemap cursor` lists, sets and deletes.
#[test]
fn an_operator_resets_a_cursor_with_the_cursor_command() {
    let bin = env!("CARGO_BIN_EXE_instancemap");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    {
        let store = Store::open(&db).unwrap();
        let _ = ingest_frames(store, "wss://relay.example", &[account(7)]);
    }
    let cmd = |args: &[&str]| {
        let out = std::process::Command::new(bin).arg("cursor").arg("--db").arg(&db).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cmd(&[]), "wss://relay.example\t7\n");
    cmd(&["--source", "wss://relay.example", "--set", "3"]);
    assert_eq!(cmd(&["--source", "wss://relay.example"]), "wss://relay.example\t3\n");
    cmd(&["--source", "wss://relay.example", "--delete"]);
    assert_eq!(cmd(&[]), "");
    let out = std::process::Command::new(bin)
        .args(["cursor", "--db"])
        .arg(&db)
        .args(["--source", "x", "--set", "-5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn post_ops(n: usize) -> Vec<(String, Value)> {
    (0..n)
        .map(|i| {
            let rec = map(vec![
                ("$type", text("app.bsky.feed.post")),
                ("text", text(&format!("post {i}"))),
                ("createdAt", text("2026-07-04T14:38:07.517Z")),
            ]);
            (format!("app.bsky.feed.post/3mptbypl{i:05}"), rec)
        })
        .collect()
}

/// The lexicon allows 200 ops per commit; a frame with more is refused
/// before any op is looked up (38,541 ops over 65,534 sections cost 12.5 s
/// of CPU, each op scanning every section). A commit of many blocks finds
/// each op's block through the slice's index.
#[test]
fn a_commit_with_more_ops_than_the_lexicon_allows_is_refused_and_large_slices_are_indexed() {
    use instancemap::firehose::frame::{self, Frame, Verify};
    let ops = post_ops(201);
    let test_ops: Vec<TestOp<'_>> = ops
        .iter()
        .map(|(p, r)| TestOp { action: "create", path: p, record: Some(r.clone()), omit_block: false })
        .collect();
    let big = commit_frame(1, DID, "3mptbypluud2a", &test_ops);
    let err = frame::decode(&big, Verify::All).unwrap_err();
    assert!(err.to_string().contains("200"), "{err}");
    let ok = commit_frame(2, DID, "3mptbypluud2a", &test_ops[..200]);
    match frame::decode(&ok, Verify::All).unwrap() {
        Frame::Commit(c) => {
            assert_eq!(c.ops.len(), 200);
            assert!(c.ops.iter().all(|o| o.block.is_some()), "every op's block found through the index");
        }
        other => panic!("{other:?}"),
    }
}

/// A key of 250,000 base58 characters (from a did:web document) is refused
/// by its length, before the quadratic decoding.
#[test]
fn an_overlong_multibase_key_is_refused_by_its_length() {
    use instancemap::identity::crypto::PublicKey;
    let long = format!("z{}", "2".repeat(250_000));
    assert!(PublicKey::from_multikey(&long).is_err());
    let (_, good) = test_key(3);
    assert!(PublicKey::from_multikey(&good).is_ok());
}

/// Slow clients: connections whose headers never finish are dropped after
/// the header timeout, one address cannot hold more than its share of
/// connections, and `/healthz` answers other clients meanwhile. (260 such
/// connections used to keep `/healthz` unreachable for as long as they
/// stayed open.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_the_api() {
    use instancemap::api::{self, ApiState, Limits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let limits = Limits {
        header_timeout: std::time::Duration::from_millis(500),
        max_connections_per_client: 20,
        ..Limits::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(api::serve(listener, ApiState::new(store, true, None, limits), cancel.clone()));
    // 30 connections from 127.0.0.1 that send half a request line and stall
    let mut slow = Vec::new();
    for _ in 0..30 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(s);
    }
    // another client (127.0.0.2) is answered at once
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = sock.connect(addr).await.unwrap();
    other.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // every slow connection is closed by the server: the 10 over the
    // per-client share at once, the others at the header timeout
    let mut closed = 0;
    for mut s in slow {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(closed, 30, "every stalled connection was closed");
    cancel.cancel();
}

/// Browser clients can read the public routes (CORS), not the admin ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_routes_answer_cors_and_the_admin_routes_do_not() {
    use instancemap::api::{self, ApiState, Limits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState::new(store, false, Some("s3cret".into()), Limits::default());
    tokio::spawn(api::serve(listener, state, tokio_util::sync::CancellationToken::new()));
    let ask = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.to_ascii_lowercase()
    };
    let get = ask("GET /xrpc/dev.instancemap.getSummary HTTP/1.1\r\nHost: x\r\nOrigin: https://tool.example\r\nConnection: close\r\n\r\n".into()).await;
    assert!(get.contains("access-control-allow-origin: *"), "{get}");
    let pre = ask("OPTIONS /xrpc/dev.instancemap.lookup HTTP/1.1\r\nHost: x\r\nOrigin: https://tool.example\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n".into()).await;
    assert!(pre.starts_with("http/1.1 200") && pre.contains("access-control-allow-methods"), "{pre}");
    let admin = ask("POST /xrpc/dev.instancemap.admin.createCheckpoint HTTP/1.1\r\nHost: x\r\nOrigin: https://tool.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()).await;
    assert!(!admin.contains("access-control-allow-origin"), "{admin}");
}

/// A hostile host cannot bloat its record (a key per made-up status, texts
/// of megabytes; one crawl stored 21 MB) nor hold a crawl (drip-feeding its
/// pages held a cycle for ~50 min): statuses are the lexicon's labels,
/// texts are bounded, and a crawl stops at its deadline with what it
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_host_cannot_bloat_its_record_or_hold_a_crawl() {
    use axum::extract::Query;
    use instancemap::hosts;
    use instancemap::net::Fetcher;
    use serde_json::json;
    use std::collections::HashMap;
    async fn repos(Query(q): Query<HashMap<String, String>>) -> axum::Json<serde_json::Value> {
        if q.contains_key("cursor") {
            // the second page drips: never in time
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
        let list: Vec<_> = (0..1000)
            .map(|i| {
                json!({"did": format!("did:plc:{i:0>24}"), "head": "bafy", "rev": "3mvan7ylpmc2w",
                "active": false, "status": format!("made-up-status-{i}")})
            })
            .collect();
        axum::Json(json!({"cursor": "next", "repos": list}))
    }
    let huge = "x".repeat(200_000);
    let describe = json!({"did": format!("did:web:{huge}"), "availableUserDomains": [".ok.example", format!(".{huge}")],
        "links": {"privacyPolicy": format!("https://a.example/{huge}")}, "contact": {"email": huge}});
    let app = axum::Router::new()
        .route(
            "/xrpc/com.atproto.server.describeServer",
            axum::routing::get(move || {
                let d = describe.clone();
                async move { axum::Json(d) }
            }),
        )
        .route("/xrpc/_health", axum::routing::get(|| async { axum::Json(json!({"version": "9".repeat(100_000)})) }))
        .route("/xrpc/com.atproto.sync.listRepos", axum::routing::get(repos));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let host = format!("http://localhost:{port}");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rec = hosts::crawl_within(&store, &Fetcher::new(true), &host, std::time::Duration::from_secs(2)).await.unwrap();
    let repos = rec.repos.as_ref().expect("the first page counted");
    assert_eq!((repos.total, repos.complete), (1000, false), "stopped at the deadline with what it counted");
    assert_eq!(repos.inactive.keys().collect::<Vec<_>>(), ["other"], "made-up statuses are one label");
    let d = rec.describe.as_ref().unwrap();
    assert_eq!((d.did.as_ref(), d.privacy_policy.as_ref(), d.contact_email.as_ref()), (None, None, None));
    assert_eq!(d.available_user_domains, [".ok.example"]);
    assert_eq!(rec.version, None);
    assert!(serde_json::to_vec(&rec).unwrap().len() < 4096, "the record stays small");
}

/// A `rev` is a TID: a 10,000-character one (a 2 MB one was accepted and
/// stored in the account's state) is refused with the frame.
#[test]
fn a_rev_that_is_not_a_tid_is_refused() {
    let long = "3".repeat(10_000);
    let f = commit_frame(1, DID, &long, &[]);
    let (_d, store) = run(&[f, account(2)]);
    assert_eq!(dropped(&store, "rejected"), 1);
    assert_eq!(store.account_state(DID).unwrap().unwrap().rev, None);
}

/// Anyone can write records of any NSID: the per-collection counters stop
/// at `MAX_COLLECTIONS`, and later collections count together.
#[test]
fn collection_counters_are_bounded() {
    use instancemap::ingest::MAX_COLLECTIONS;
    let frames: Vec<Vec<u8>> = (0..MAX_COLLECTIONS + 50)
        .map(|i| {
            let path = format!("com.example.c{i}.record/3mptbypluud2a");
            commit_frame(
                i as i64 + 1,
                DID,
                "3mptbypluud2a",
                &[TestOp { action: "delete", path: &path, record: None, omit_block: false }],
            )
        })
        .collect();
    let (_d, store) = run(&frames);
    let counters = store.all_counters().unwrap();
    let per: Vec<&String> = counters.keys().filter(|k| k.starts_with("coll/")).collect();
    assert_eq!(per.len(), MAX_COLLECTIONS + 1, "{} collection counters", per.len());
    assert_eq!(counters.get("coll/other/delete"), Some(&50));
}

/// Behind a reverse proxy every client came from the proxy's address, so
/// the rate limit keyed them as one. With the proxy trusted, each client is
/// keyed by the nearest X-Forwarded-For hop; from anyone else the header is
/// ignored (a client cannot choose its key).
#[test]
fn the_rate_limit_keys_clients_behind_a_trusted_proxy_and_ignores_forged_headers() {
    use instancemap::api::client_address;
    let h = |xff: &str| {
        let mut m = axum::http::HeaderMap::new();
        m.insert("x-forwarded-for", xff.parse().unwrap());
        m
    };
    let proxy: std::net::IpAddr = "10.0.0.2".parse().unwrap();
    let client: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let trusted = [proxy];
    assert_eq!(client_address(proxy, &h("203.0.113.7"), &trusted), client);
    // what the client wrote to the left is not believed; the proxy's own hop is skipped
    assert_eq!(client_address(proxy, &h("1.2.3.4, 203.0.113.7, 10.0.0.2"), &trusted), client);
    // from an untrusted peer the header is ignored
    assert_eq!(client_address(client, &h("1.2.3.4"), &trusted), client);
    assert_eq!(client_address(proxy, &h("1.2.3.4"), &[]), proxy);
    // garbage stops the walk at the proxy
    assert_eq!(client_address(proxy, &h("not-an-ip"), &trusted), proxy);
}

/// A store with `n` hosts, each listed by the relay.
fn store_with_hosts(n: usize) -> (tempfile::TempDir, Store) {
    use instancemap::store::records::{HostOp, RelayView};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut b = instancemap::store::Batch::default();
    for i in 0..n {
        let view = RelayView { status: Some("active".into()), account_count: Some(1), seq: Some(1), seen_at_ms: 1 };
        b.host(&format!("https://pds{i}.example{i}.net"), HostOp::Relay(view));
    }
    instancemap::store::StoreWriter::commit(&store, b).unwrap();
    (dir, store)
}

#[test]
fn a_scan_past_its_deadline_stops_instead_of_running_to_the_end() {
    use instancemap::store::{deadline, StoreError};
    use std::time::{Duration, Instant};
    let (_dir, store) = store_with_hosts(3 * deadline::EVERY as usize);
    assert_eq!(store.hosts().unwrap().len(), 3 * deadline::EVERY as usize, "no deadline: the whole scan");
    let past = Instant::now() - Duration::from_secs(1);
    let r = deadline::within(past, || store.hosts());
    assert!(matches!(r, Err(StoreError::DeadlinePassed)), "{:?}", r.map(|v| v.len()));
    // a snapshot's scans (the exports read one) stop too
    let snap = store.map_snapshot();
    let r = deadline::within(past, || snap.hosts());
    assert!(matches!(r, Err(StoreError::DeadlinePassed)), "{:?}", r.map(|v| v.len()));
    drop(snap);
    // and the deadline is the thread's only while it runs
    assert_eq!(store.hosts().unwrap().len(), 3 * deadline::EVERY as usize);
    // an API read past its time limit answers Timeout and counts the stop
    let limits = instancemap::api::Limits { timeout: Duration::ZERO, ..Default::default() };
    let state = instancemap::api::ApiState::new(store, true, None, limits);
    let before = instancemap::metrics::API_READS_STOPPED.get();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(state.read(|st| Ok(st.store.hosts()?.len())));
    let e = r.expect_err("the read ran to the end past its deadline");
    assert_eq!(e.error, "Timeout");
    assert!(instancemap::metrics::API_READS_STOPPED.get() > before);
}

/// The `i`th of a run of valid did:plc identifiers.
fn plc_did(i: usize) -> String {
    const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut s = String::from("did:plc:");
    for k in (0..24).rev() {
        s.push(B32[(i >> (5 * k.min(12))) & 31] as char);
    }
    s
}

/// A sequence-form PLC export line creating `did` on `pds`.
fn plc_genesis(seq: u64, did: &str, pds: &str) -> String {
    let (_, key) = test_key(7);
    let line = serde_json::json!({
        "did": did, "cid": format!("bafyreid{seq:052}"), "seq": seq, "createdAt": "2026-01-01T00:00:00.000Z",
        "type": "sequenced_op",
        "operation": {
            "type": "plc_operation", "prev": null, "sig": "c2lnbmF0dXJl",
            "rotationKeys": [format!("did:key:{key}")],
            "verificationMethods": {"atproto": format!("did:key:{key}")},
            "alsoKnownAs": [format!("at://u{seq}.example.org")],
            "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": pds}},
        },
    });
    format!("{line}\n")
}

#[test]
fn a_flood_of_new_hosts_under_one_domain_joins_the_host_table_at_its_rate() {
    use instancemap::store::admission;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let flood = admission::Limits::default().domain_burst as usize + 40;
    let mut text = String::new();
    for i in 0..flood {
        text += &plc_genesis(i as u64 + 1, &plc_did(i), &format!("https://x{i}.evil.example.com"));
    }
    text += &plc_genesis(flood as u64 + 1, &plc_did(flood), "https://pds.good.example.org");
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, text).unwrap();
    let before = instancemap::metrics::HOSTS_DEFERRED.with_label_values(&["domain"]).get();
    instancemap::plc::source::load_file(&store, &file).unwrap();
    let hosts = store.hosts().unwrap();
    let evil = hosts.iter().filter(|(h, _)| h.ends_with(".evil.example.com")).count();
    assert_eq!(evil, admission::Limits::default().domain_burst as usize, "one domain's flood is bounded");
    assert!(hosts.iter().any(|(h, _)| h == "https://pds.good.example.org"), "another domain's host still joins");
    let deferred = instancemap::metrics::HOSTS_DEFERRED.with_label_values(&["domain"]).get() - before;
    assert!(deferred >= 40, "each refusal counted: {deferred}");
    // nothing is lost: every account keeps the host its document names
    let last = plc_did(flood - 1);
    let rec = store.plc(&last).unwrap().expect("the account is kept");
    assert_eq!(rec.pds.as_deref(), Some(format!("https://x{}.evil.example.com", flood - 1).as_str()));
    // and a refused host joins when a later document names it again, once
    // its bucket has room (here: buckets started over)
    store.set_host_admission(admission::Limits::default());
    let again = dir.path().join("later.jsonl");
    let mut text =
        plc_genesis(flood as u64 + 2, &plc_did(flood + 1), &format!("https://x{}.evil.example.com", flood - 1));
    text = text.replace("bafyreid", "bafyreie");
    std::fs::write(&again, text).unwrap();
    instancemap::plc::source::load_file(&store, &again).unwrap();
    assert!(store.host(&format!("https://x{}.evil.example.com", flood - 1)).unwrap().is_some());
}
