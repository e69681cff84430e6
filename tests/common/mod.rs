//! Shared test helpers: fixture paths, frame builders, store snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ciborium::Value;
use instancemap::event;
use instancemap::ingest::Ingest;
use instancemap::repo::cid;
use instancemap::stats::Stats;
use instancemap::store::{AccountState, Store};

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub fn reference_frames() -> Vec<Vec<u8>> {
    instancemap::firehose::framelog::read_all(&fixture("reference-pds.frames")).expect("reference frames")
}

pub fn jetstream_frames() -> Vec<Vec<u8>> {
    instancemap::firehose::framelog::read_all(&fixture("jetstream/frames.bin.zst")).expect("jetstream frames")
}

pub fn json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture(rel)).expect("fixture")).expect("fixture JSON")
}

/// Applies raw frames through the shared decode step and the writer,
/// flushing at the end.
pub fn ingest_frames(store: Store, source: &str, frames: &[Vec<u8>]) -> Store {
    let mut ingest = Ingest::new(store, source).expect("ingest");
    for f in frames {
        ingest.apply(event::from_frame_bytes(f)).expect("apply");
        if ingest.due() {
            ingest.flush().expect("flush");
        }
    }
    ingest.finish().expect("finish")
}

/// Everything the store holds that must not depend on how the events
/// arrived (wall-clock times, the drop/info counters and how signatures
/// were checked are left out).
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub accounts: BTreeMap<String, AccountState>,
    pub counters: BTreeMap<String, i64>,
    pub records: Vec<(String, String, Vec<u8>)>,
}

pub fn snapshot(store: &Store) -> Snapshot {
    let accounts = store
        .accounts()
        .map(|r| {
            let (did, mut a) = r.expect("account");
            a.seen_at_ms = 0;
            (did, a)
        })
        .collect();
    let counters = store
        .counters()
        .expect("counters")
        .into_iter()
        .filter(|(k, v)| {
            *v != 0
                && !k.starts_with("dropped/")
                && !k.starts_with("info/")
                && !k.starts_with("error_frame/")
                && !k.starts_with("sig/")
        })
        .collect();
    let mut records = Vec::new();
    for c in event::STORED_COLLECTIONS {
        for (did, rkey, r) in store.records(c).expect("records") {
            records.push((did, rkey, r.record));
        }
    }
    Snapshot { accounts, counters, records }
}

pub fn stats(store: &Store) -> Stats {
    Stats::read(store).expect("stats")
}

// ---- frame builders (DAG-CBOR via ciborium) ----

pub fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

pub fn link(cid: &[u8]) -> Value {
    let mut b = vec![0u8];
    b.extend_from_slice(cid);
    Value::Tag(42, Box::new(Value::Bytes(b)))
}

pub fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

pub fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).expect("encode");
    out
}

/// A frame: header then body.
pub fn frame(op: i64, t: Option<&str>, body: &Value) -> Vec<u8> {
    let mut h = vec![("op", Value::Integer(op.into()))];
    if let Some(t) = t {
        h.push(("t", text(t)));
    }
    let mut out = cbor(&map(h));
    out.extend(cbor(body));
    out
}

pub fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A CAR v1 with `root` and these `(cid, bytes)` blocks.
pub fn car(root: &[u8], blocks: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let header = cbor(&map(vec![("version", Value::Integer(1.into())), ("roots", Value::Array(vec![link(root)]))]));
    let mut out = Vec::new();
    varint(header.len() as u64, &mut out);
    out.extend(header);
    for (c, b) in blocks {
        varint((c.len() + b.len()) as u64, &mut out);
        out.extend_from_slice(c);
        out.extend_from_slice(b);
    }
    out
}

/// A record op for [`commit_frame`]: `(action, path, record)`; the record
/// is `None` for delete, `Some(None)` when its block should be left out.
pub struct TestOp<'a> {
    pub action: &'a str,
    pub path: &'a str,
    pub record: Option<Value>,
    pub omit_block: bool,
}

/// A well-formed `#commit` frame with a real commit block and an all-zero
/// signature.
pub fn commit_frame(seq: i64, did: &str, rev: &str, ops: &[TestOp<'_>]) -> Vec<u8> {
    signed_commit_frame(seq, did, rev, ops, None)
}

/// The commit object, signed with `key` (zero signature without one).
pub fn commit_block(did: &str, rev: &str, key: Option<&k256::ecdsa::SigningKey>) -> Vec<u8> {
    use k256::ecdsa::signature::hazmat::PrehashSigner;
    use sha2::Digest;
    let data = cid::dag_cbor_cid(b"\xa2\x61e\x80\x61l\xf6"); // a stand-in MST root
    let fields = |sig: Option<Vec<u8>>| {
        let mut f = vec![("did", text(did)), ("rev", text(rev))];
        if let Some(sig) = sig {
            f.push(("sig", Value::Bytes(sig)));
        }
        f.extend([("data", link(&data)), ("prev", Value::Null), ("version", Value::Integer(3.into()))]);
        map(f)
    };
    let sig = match key {
        Some(k) => {
            let digest = sha2::Sha256::digest(cbor(&fields(None)));
            let s: k256::ecdsa::Signature = k.sign_prehash(&digest).expect("signing");
            s.to_bytes().to_vec()
        }
        None => vec![0; 64],
    };
    cbor(&fields(Some(sig)))
}

/// A `#commit` frame whose commit is signed with `key`.
pub fn signed_commit_frame(
    seq: i64,
    did: &str,
    rev: &str,
    ops: &[TestOp<'_>],
    key: Option<&k256::ecdsa::SigningKey>,
) -> Vec<u8> {
    signed_commit_frame_at(seq, did, rev, "2026-07-04T14:38:07.517Z", ops, key)
}

/// A `#commit` frame signed with `key` whose frame `time` is `time`.
pub fn signed_commit_frame_at(
    seq: i64,
    did: &str,
    rev: &str,
    time: &str,
    ops: &[TestOp<'_>],
    key: Option<&k256::ecdsa::SigningKey>,
) -> Vec<u8> {
    let commit = commit_block(did, rev, key);
    let commit_cid = cid::dag_cbor_cid(&commit);
    let mut blocks = vec![(commit_cid.clone(), commit)];
    let mut op_values = Vec::new();
    for op in ops {
        let mut entries = vec![("action", text(op.action)), ("path", text(op.path))];
        match &op.record {
            Some(r) => {
                let bytes = cbor(r);
                let c = cid::dag_cbor_cid(&bytes);
                entries.push(("cid", link(&c)));
                if !op.omit_block {
                    blocks.push((c, bytes));
                }
            }
            None => entries.push(("cid", Value::Null)),
        }
        op_values.push(map(entries));
    }
    let body = map(vec![
        ("ops", Value::Array(op_values)),
        ("rev", text(rev)),
        ("seq", Value::Integer(seq.into())),
        ("repo", text(did)),
        ("time", text(time)),
        ("blobs", Value::Array(vec![])),
        ("since", Value::Null),
        ("blocks", Value::Bytes(car(&commit_cid, &blocks))),
        ("commit", link(&commit_cid)),
        ("rebase", Value::Bool(false)),
        ("tooBig", Value::Bool(false)),
    ]);
    frame(1, Some("#commit"), &body)
}

/// A `#sync` frame: a CAR holding only the commit block (signed with
/// `key`), whose CID is the CAR's root.
pub fn sync_frame(seq: i64, did: &str, rev: &str, time: &str, key: Option<&k256::ecdsa::SigningKey>) -> Vec<u8> {
    let commit = commit_block(did, rev, key);
    let commit_cid = cid::dag_cbor_cid(&commit);
    let body = map(vec![
        ("did", text(did)),
        ("rev", text(rev)),
        ("seq", Value::Integer(seq.into())),
        ("time", text(time)),
        ("blocks", Value::Bytes(car(&commit_cid, &[(commit_cid.clone(), commit)]))),
    ]);
    frame(1, Some("#sync"), &body)
}

/// A TID (commit `rev`) for `time` (RFC 3339), clock id 0.
pub fn tid_at(time: &str) -> String {
    const ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";
    let us = instancemap::clock::parse_time_us(time).expect("RFC 3339 time") as u64;
    let n = us << 10;
    (0..13).map(|i| ALPHABET[((n >> (5 * (12 - i))) & 31) as usize] as char).collect()
}

/// A signing key from a one-byte seed, and its Multikey.
pub fn test_key(seed: u8) -> (k256::ecdsa::SigningKey, String) {
    use instancemap::identity::crypto::{Curve, PublicKey};
    let key = k256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).expect("key");
    let mk = PublicKey::from_sec1(Curve::K256, &key.verifying_key().to_sec1_bytes()).expect("point").to_multikey();
    (key, mk)
}

pub fn labeler_record(desc: &str) -> Value {
    map(vec![
        ("$type", text("app.bsky.labeler.service")),
        ("policies", map(vec![("labelValues", Value::Array(vec![text("spam")]))])),
        ("createdAt", text(desc)),
    ])
}

pub fn info_frame(name: &str) -> Vec<u8> {
    frame(1, Some("#info"), &map(vec![("name", text(name)), ("message", text("test"))]))
}

pub fn error_frame(error: &str) -> Vec<u8> {
    frame(-1, None, &map(vec![("error", text(error))]))
}

// ---- a simple fake relay ----

/// Serves `frames` on `listener` as a relay does: each connection gets the
/// frames with `seq > cursor` (all of them without a cursor), then the
/// connection stays open and quiet.
pub async fn serve_frames(listener: tokio::net::TcpListener, frames: std::sync::Arc<Vec<Vec<u8>>>) {
    use futures_util::SinkExt;
    use instancemap::firehose::frame::{decode, Verify};
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let frames = frames.clone();
        tokio::spawn(async move {
            let cursor = std::sync::Arc::new(std::sync::Mutex::new(0i64));
            let c2 = cursor.clone();
            #[allow(clippy::result_large_err)]
            let cb = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                           resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                if let Some(c) = req.uri().query().and_then(|q| q.strip_prefix("cursor=")) {
                    *c2.lock().unwrap() = c.parse().unwrap();
                }
                Ok::<_, tokio_tungstenite::tungstenite::handshake::server::ErrorResponse>(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else { return };
            let c = *cursor.lock().unwrap();
            for f in frames.iter() {
                let seq = decode(f, Verify::Used { kept: &[] }).ok().and_then(|f| f.seq()).unwrap_or(0);
                if seq > c && ws.send(Message::Binary(f.clone().into())).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(300)).await;
        });
    }
}

/// A minimal HTTP/1.1 GET on loopback; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---- a fake DNS server ----

/// Serves TXT answers from `txt` (name without trailing dot → strings) on
/// UDP 127.0.0.1; everything else is NXDOMAIN. Returns its address.
pub async fn fake_dns(txt: std::collections::HashMap<String, Vec<String>>) -> std::net::SocketAddr {
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::RData;
    let records = txt
        .into_iter()
        .flat_map(|(name, values)| values.into_iter().map(move |v| (name.clone(), RData::TXT(TXT::new(vec![v])))))
        .collect();
    fake_dns_records(records).await
}

/// A DNS server answering each `(name, record)` for its name and type (TXT,
/// MX, A, …) on UDP 127.0.0.1; everything else is NXDOMAIN.
pub async fn fake_dns_records(records: Vec<(String, hickory_proto::rr::RData)>) -> std::net::SocketAddr {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::Record;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else { return };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut resp = Message::new();
            resp.set_id(q.id());
            resp.set_message_type(MessageType::Response);
            resp.set_op_code(q.op_code());
            resp.set_recursion_desired(q.recursion_desired());
            resp.set_recursion_available(true);
            resp.add_queries(q.queries().to_vec());
            let mut answered = false;
            for query in q.queries() {
                let key = query.name().to_string().trim_end_matches('.').to_ascii_lowercase();
                for (name, rdata) in &records {
                    if *name == key && rdata.record_type() == query.query_type() {
                        resp.add_answer(Record::from_rdata(query.name().clone(), 60, rdata.clone()));
                        answered = true;
                    }
                }
            }
            if !answered {
                resp.set_response_code(ResponseCode::NXDomain);
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

/// `run` options for a test: the relay at `relay` (a `ws://host:port`),
/// the database at `db`, everything optional off and loopback allowed.
pub fn run_options(relay: std::net::SocketAddr, db: &Path) -> instancemap::app::RunOptions {
    use instancemap::firehose::subscribe::{SubscribeConfig, SUBSCRIBE_PATH};
    instancemap::app::RunOptions {
        subscribe: SubscribeConfig::new(format!("ws://{relay}{SUBSCRIBE_PATH}")),
        db: db.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        verify: true,
        plc: "http://127.0.0.1:9".into(),
        follow_plc: None,
        resolve: false,
        allow_loopback: true,
        dns: None,
        crawl: None,
        overrides: Default::default(),
        api: Default::default(),
        admin_token: None,
        networks: None,
    }
}

/// Kills a child process when dropped (a failing test leaves none behind).
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// One sequence-form PLC export line: the `i`-th operation (seq `i + 1`),
/// a legacy `create` of `did` on `service` with `handle` and real keys.
pub fn plc_create_line(i: usize, did: &str, handle: &str, service: &str) -> String {
    serde_json::json!({
        "did": did,
        "cid": format!("bafyreib{i:050}"),
        "seq": i + 1,
        "createdAt": "2024-03-01T00:00:00.000Z",
        "type": "sequenced_op",
        "operation": {
            "type": "create", "prev": null, "sig": "x",
            "handle": handle,
            "service": service,
            "signingKey": "did:key:zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ",
            "recoveryKey": "did:key:zQ3shhCGUqDKjStzuDxPkTxN6ujddP4RkEKJJouJGRRkaLGbg",
        },
    })
    .to_string()
}
