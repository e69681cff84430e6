//! The query API's contract over a store built from recorded frames and a
//! hand-built network: every method's shape, errors, limits, the lexicons
//! and the OpenAPI document.

mod common;

use ciborium::Value;
use common::*;
use instancemap::api::{self, openapi, ApiState, Limits};
use instancemap::cluster::map;
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::identity::handle::HandleCheck;
use instancemap::identity::resolve::IdentityRecord;
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::{self, Store};

const OP: &str = "did:plc:oooooooooooooooooooooooo";
const ALICE: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const CAROL: &str = "did:plc:cccccccccccccccccccccccc";
const GONE: &str = "did:plc:dddddddddddddddddddddddd";
/// Created on the provider's host after the others (day 6).
const DAVE: &str = "did:plc:eeeeeeeeeeeeeeeeeeeeeeee";

fn op(seq: u64, did: &str, pds: Option<&str>, handle: &str, day: u32, tombstone: bool) -> ExportOp {
    // the operator signs its declaration with its key
    let signing_key = (did == OP).then(|| test_key(7).1);
    ExportOp {
        did: did.into(),
        cid: format!("bafy{seq}"),
        created_at: format!("2025-01-{day:02}T00:00:00.000Z"),
        seq: Some(seq),
        nullified: false,
        prev: None,
        state: if tombstone {
            OpState::Tombstone
        } else {
            OpState::Update { pds: pds.map(str::to_owned), handle: Some(handle.into()), signing_key }
        },
    }
}

/// A small network: a co-op with two hosts and a verified declaration, a
/// big provider, a migration, a tombstone, the reference corpus' accounts.
fn network(dir: &std::path::Path) -> Store {
    let store = Store::open(dir).unwrap();
    {
        let mut l = Loader::new(&store).unwrap();
        l.apply(op(1, OP, Some("https://pds.coop.example"), "op.coop.example", 1, false)).unwrap();
        l.apply(op(2, ALICE, Some("https://a.host.bsky.network"), "alice.bsky.social", 2, false)).unwrap();
        l.apply(op(3, ALICE, Some("https://pds.coop.example"), "alice.bsky.social", 5, false)).unwrap();
        l.apply(op(4, BOB, Some("https://b.host.bsky.network"), "bob.bsky.social", 3, false)).unwrap();
        l.apply(op(5, CAROL, Some("https://a.host.bsky.network"), "carol.bsky.social", 3, false)).unwrap();
        l.apply(op(6, GONE, Some("https://b.host.bsky.network"), "gone.bsky.social", 3, false)).unwrap();
        l.apply(op(7, GONE, None, "", 4, true)).unwrap();
        l.apply(op(8, DAVE, Some("https://b.host.bsky.network"), "dave.bsky.social", 6, false)).unwrap();
        l.flush().unwrap();
    }
    let describe = |did: Option<&str>, domains: &[&str], email: Option<&str>| Describe {
        did: did.map(str::to_owned),
        available_user_domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        contact_email: email.map(str::to_owned),
        privacy_policy: Some("https://example.org/privacy".into()),
        ..Describe::default()
    };
    for (h, d) in [
        ("https://pds.coop.example", describe(Some(OP), &[".coop.example"], Some("abuse@coop.example"))),
        ("https://a.host.bsky.network", describe(None, &[".bsky.social"], Some("support@bsky.app"))),
        ("https://b.host.bsky.network", describe(None, &[".bsky.social"], None)),
    ] {
        let rec = HostRecord {
            state: "online".into(),
            describe: Some(d),
            last_checked_ms: Some(1_760_000_000_000),
            ..hosts::get(&store, h).unwrap().unwrap_or_default()
        };
        hosts::put(&store, h, &rec).unwrap();
    }
    // the operator's verified custom handle; carol's verified handle; two
    // accounts created on the provider's host whose handles under its user
    // domain verify (which proves it may issue handles there)
    for (did, handle) in
        [(OP, "op.coop.example"), (CAROL, "carol.example.net"), (BOB, "bob.bsky.social"), (DAVE, "dave.bsky.social")]
    {
        let ident = IdentityRecord {
            handle: Some(handle.into()),
            resolved_at_ms: Some(1),
            checked_at_ms: 1,
            handle_check: Some(HandleCheck {
                handle: handle.into(),
                verified: true,
                method: Some("dns".into()),
                reason: None,
                checked_at_ms: 1_760_000_000_000,
            }),
            ..IdentityRecord::default()
        };
        let mut b = store::Batch::default();
        b.put_identity(did, ident);
        store::StoreWriter::commit(&store, b).unwrap();
    }
    let declaration = map(vec![
        ("$type", text("dev.instancemap.declaration")),
        ("name", text("Example Co-op")),
        ("pdsHosts", Value::Array(vec![text("https://pds.coop.example"), text("https://b.host.bsky.network")])),
        ("moderationContact", text("mod@coop.example")),
        ("abuseContact", text("abuse@coop.example")),
        ("labelers", Value::Array(vec![text("did:plc:llllllllllllllllllllllll")])),
        ("jurisdiction", text("NZ")),
        ("createdAt", text("2026-11-26T00:00:00.000Z")),
    ]);
    let f = declaration_frame(1, "3mptbypluud2a", "create", declaration);
    let store = ingest_frames(store, "replay", &[f]);
    // and the reference PDS's recorded accounts
    let frames = instancemap::firehose::framelog::read_all(&fixture("reference-pds.frames")).unwrap();
    let store = ingest_frames(store, "corpus", &frames);
    map::recompute(&store, &Default::default()).unwrap();
    store
}

/// The operator's commit of its declaration, signed with its key.
fn declaration_frame(seq: i64, rev: &str, action: &'static str, declaration: Value) -> Vec<u8> {
    let op = TestOp { action, path: "dev.instancemap.declaration/self", record: Some(declaration), omit_block: false };
    signed_commit_frame(seq, OP, rev, &[op], Some(&test_key(7).0))
}

struct Api {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(limits: Limits, token: Option<&str>) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| network(dir.path()));
    serve_store(ApiState::new(store, false, token.map(str::to_owned), limits), dir).await
}

/// Serves `state` on a loopback port; `dir` holds its store.
async fn serve_store(state: ApiState, dir: tempfile::TempDir) -> Api {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::serve(listener, state, tokio_util::sync::CancellationToken::new()));
    Api { addr, _dir: dir }
}

async fn get(api: &Api, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(api.addr, path).await.unwrap();
    let v = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_answers_who_is_responsible() {
    let api = start(Limits::default(), None).await;
    // by DID: alice migrated to the co-op's host, which its operator declares
    let (s, v) = get(&api, &format!("/xrpc/dev.instancemap.lookup?subject={ALICE}")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "assigned");
    assert_eq!(v["host"], "https://pds.coop.example");
    assert_eq!(v["instance"]["name"], "Example Co-op");
    let roles: Vec<&str> = v["entities"].as_array().unwrap().iter().map(|e| e["roles"][0].as_str().unwrap()).collect();
    assert_eq!(roles, ["hosting", "operator", "labeler"]);
    let hosting = &v["entities"][0];
    assert_eq!(hosting["contact"]["email"], "abuse@coop.example");
    assert_eq!(hosting["links"]["privacyPolicy"], "https://example.org/privacy");
    assert!(hosting["lastChecked"].as_str().unwrap().starts_with("2025-10-09"));
    let operator = &v["entities"][1];
    assert_eq!(operator["did"], OP);
    assert_eq!(operator["handle"], "op.coop.example");
    assert_eq!(operator["moderationContact"], "mod@coop.example");
    assert_eq!(operator["abuseContact"], "abuse@coop.example");
    assert_eq!(operator["jurisdiction"], "NZ");
    assert!(operator["evidence"][0]["value"].as_str().unwrap().contains("describeServer names the operator"));
    assert_eq!(v["entities"][2]["did"], "did:plc:llllllllllllllllllllllll");
    let text = v["explanation"].as_str().unwrap();
    assert!(text.contains("Hosted on https://pds.coop.example"), "{text}");
    assert!(text.contains("mod@coop.example"), "{text}");

    // by handle and by at:// URI (handle authority): same account
    let (s, h) = get(&api, "/xrpc/dev.instancemap.lookup?subject=carol.example.net").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["did"], CAROL);
    assert_eq!(h["subjectType"], "handle");
    // carol's custom-domain handle: the registrant is an entity; her host
    // has no verified operator, so only hosting and registrant
    let roles: Vec<&str> = h["entities"].as_array().unwrap().iter().map(|e| e["roles"][0].as_str().unwrap()).collect();
    assert_eq!(roles, ["hosting", "registrant"]);
    assert_eq!(h["entities"][1]["domain"], "example.net");
    let uri = format!("/xrpc/dev.instancemap.lookup?subject=at://{CAROL}/app.bsky.feed.post/3l3qo2vuowo2b");
    let (s, u) = get(&api, &uri).await;
    assert_eq!((s, u["subjectType"].as_str(), u["did"].as_str()), (200, Some("at-uri"), Some(CAROL)));
    assert_eq!(u["record"]["collection"], "app.bsky.feed.post");

    // a deleted account: its state, no entities
    let (s, g) = get(&api, &format!("/xrpc/dev.instancemap.lookup?subject={GONE}")).await;
    assert_eq!((s, g["state"].as_str()), (200, Some("deleted")));
    assert!(g["entities"].as_array().unwrap().is_empty());

    // unknown: 404 with the reason; invalid: 400 with the rule
    let (s, e) = get(&api, "/xrpc/dev.instancemap.lookup?subject=did:plc:zzzzzzzzzzzzzzzzzzzzzzzz").await;
    assert_eq!((s, e["error"].as_str()), (404, Some("AccountNotFound")));
    let (s, e) = get(&api, "/xrpc/dev.instancemap.lookup?subject=nobody.example.org").await;
    assert_eq!((s, e["error"].as_str()), (404, Some("HandleNotFound")));
    for (bad, rule) in [
        ("did:PLC:x", "DID"),
        ("not a handle", "handle"),
        ("at://did:plc:x/not..nsid/x", "collection"),
        ("at://did:plc:aaaa/app.bsky.feed.post/bad%20key", "record key"),
    ] {
        let (s, e) = get(&api, &format!("/xrpc/dev.instancemap.lookup?subject={}", bad.replace(' ', "%20"))).await;
        assert_eq!((s, e["error"].as_str()), (400, Some("InvalidRequest")), "{bad}: {e}");
        assert!(e["message"].as_str().unwrap().contains(rule), "{bad}: {e}");
    }
    let (s, e) = get(&api, "/xrpc/dev.instancemap.lookup").await;
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("subject"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_members_hosts_history_summary() {
    let api = start(Limits::default(), None).await;
    let (s, list) = get(&api, "/xrpc/dev.instancemap.listInstances").await;
    assert_eq!(s, 200, "{list}");
    let all = list["instances"].as_array().unwrap();
    assert_eq!(all.len(), 2, "the big provider and the co-op (the corpus' accounts never resolved)");
    let n = |i: &serde_json::Value| i["members"]["registered"].as_u64().unwrap_or(0);
    assert!(all.windows(2).all(|w| n(&w[0]) >= n(&w[1])), "largest first");
    let coop = all.iter().find(|i| i["name"] == "Example Co-op").unwrap();
    let coop_id = coop["id"].as_str().unwrap().to_owned();
    assert_eq!(coop["declared"], true);
    let (_, declared) = get(&api, "/xrpc/dev.instancemap.listInstances?hasDeclaration=true").await;
    assert_eq!(declared["instances"].as_array().unwrap().len(), 1);
    let (_, big) = get(&api, "/xrpc/dev.instancemap.listInstances?minMembers=1000000").await;
    assert!(big["instances"].as_array().unwrap().is_empty());
    // pagination: pages of one cover the list once
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (s, p) = get(&api, &format!("/xrpc/dev.instancemap.listInstances?limit=1{q}")).await;
        assert_eq!(s, 200);
        seen.extend(p["instances"].as_array().unwrap().iter().map(|i| i["id"].clone()));
        match p["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, all.iter().map(|i| i["id"].clone()).collect::<Vec<_>>());

    let (s, inst) = get(&api, &format!("/xrpc/dev.instancemap.getInstance?id={coop_id}")).await;
    assert_eq!(s, 200, "{inst}");
    assert_eq!(inst["hosts"], serde_json::json!(["https://pds.coop.example"]));
    assert_eq!(inst["governance"]["abuseContact"], "abuse@coop.example");
    assert!(inst["evidence"].as_array().unwrap().iter().any(|e| e["kind"] == "declaration"));
    assert_eq!(inst["declarations"][0]["operator"], OP);

    // members: every account on its hosts, paged
    let (_, m1) = get(&api, &format!("/xrpc/dev.instancemap.listMembers?id={coop_id}&limit=1")).await;
    let (_, m2) = get(
        &api,
        &format!("/xrpc/dev.instancemap.listMembers?id={coop_id}&limit=1&cursor={}", m1["cursor"].as_str().unwrap()),
    )
    .await;
    let (_, all_m) = get(&api, &format!("/xrpc/dev.instancemap.listMembers?id={coop_id}")).await;
    let dids: Vec<&str> = all_m["members"].as_array().unwrap().iter().map(|m| m["did"].as_str().unwrap()).collect();
    assert_eq!(dids, [ALICE, OP], "by host, then DID");
    assert_eq!(m1["members"][0]["did"], ALICE);
    assert_eq!(m2["members"][0]["did"], OP);
    assert!(m2["cursor"].is_null());
    // the claim on the provider's host did not verify: shown there, with why
    let bsky = all.iter().find(|i| i["name"] == "bsky.social").unwrap();
    let (_, b) = get(&api, &format!("/xrpc/dev.instancemap.getInstance?id={}", bsky["id"].as_str().unwrap())).await;
    assert!(b["operator"].is_null());
    let unverified = &b["declarations"][0]["unverified"][0];
    assert_eq!(unverified[0], "https://b.host.bsky.network");
    assert!(unverified[1].as_str().unwrap().contains("registrable domain"), "{unverified}");

    let (s, hosts) = get(&api, &format!("/xrpc/dev.instancemap.listHosts?instance={coop_id}")).await;
    assert_eq!(s, 200);
    assert_eq!(hosts["total"], 1);
    let (_, online) = get(&api, "/xrpc/dev.instancemap.listHosts?status=offline").await;
    assert_eq!(online["total"], 0);

    // history: alice moved on 2025-01-05 from the big provider to the co-op
    let (_, flows) = get(&api, "/xrpc/dev.instancemap.getFlows?from=2025-01-01&to=2025-01-31").await;
    let f = &flows["flows"][0];
    assert_eq!(
        (f["day"].as_str(), f["to"].as_str(), f["accounts"].as_i64()),
        (Some("2025-01-05"), Some(coop_id.as_str()), Some(1))
    );
    let (_, matrix) = get(&api, "/xrpc/dev.instancemap.getFlows?from=2025-01-01&format=matrix").await;
    assert_eq!(matrix["instances"].as_array().unwrap().len(), 2);
    let (_, growth) = get(&api, &format!("/xrpc/dev.instancemap.getGrowth?id={coop_id}&to=2025-12-31")).await;
    let days: Vec<(&str, i64)> = growth["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["day"].as_str().unwrap(), d["total"].as_i64().unwrap()))
        .collect();
    assert_eq!(days, [("2025-01-01", 1), ("2025-01-05", 2)]);
    let (_, asof) = get(&api, "/xrpc/dev.instancemap.getMapAsOf?at=2025-01-04").await;
    let coop_then = asof["instances"].as_array().unwrap().iter().find(|i| i["instance"] == coop_id.as_str()).unwrap();
    assert_eq!(coop_then["accounts"], 1, "the operator only: alice had not arrived");
    let bsky_then = asof["instances"].as_array().unwrap().iter().find(|i| i["instance"] == bsky["id"]).unwrap();
    assert_eq!(bsky_then["accounts"], 3, "alice, bob, carol (gone left that day)");
    let (_, hist) = get(&api, &format!("/xrpc/dev.instancemap.getAccountHistory?did={ALICE}&at=2025-01-03")).await;
    assert_eq!(hist["timeline"].as_array().unwrap().len(), 2);
    assert_eq!(hist["asOf"]["host"], "https://a.host.bsky.network");

    // summary and concentration
    let (s, sum) = get(&api, "/xrpc/dev.instancemap.getSummary").await;
    assert_eq!(s, 200, "{sum}");
    let c = &sum["concentration"]["instances"];
    let hhi = c["hhi"].as_f64().unwrap();
    assert!(hhi > 0.0 && hhi <= 1.0);
    assert!(c["top1_share"].as_f64().unwrap() >= c["hhi"].as_f64().unwrap().sqrt() - 1e-9 || hhi < 1.0);
    assert_eq!(sum["accounts"]["unassigned"]["deleted"], 1);
    assert_eq!(sum["declarations"]["verified"], 1);
}

/// Regression: every route cost one token, so a client's budget bought
/// as many whole-map flow matrices as point lookups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_routes_weigh_more_in_the_rate_limit() {
    assert_eq!(api::route_cost("/xrpc/dev.instancemap.getFlows"), 4);
    assert_eq!(api::route_cost("/xrpc/dev.instancemap.lookup"), 1);
    // a burst of 10: two flow matrices (8), then a third is refused while
    // a lookup (1) still fits
    let api = start(Limits { rate_per_client: 5, ..Limits::default() }, None).await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(http_get(api.addr, "/xrpc/dev.instancemap.getFlows?from=2025-01-01").await.unwrap().0);
    }
    let (s, body) = http_get(api.addr, "/xrpc/dev.instancemap.getFlows?from=2025-01-01").await.unwrap();
    assert_eq!(codes, [200, 200, 429]);
    assert_eq!(s, 429);
    assert!(body.contains("this route counts as 4"), "{body}");
    let (s, _) = http_get(api.addr, &format!("/xrpc/dev.instancemap.lookup?subject={ALICE}")).await.unwrap();
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_limits_and_documents() {
    let api = start(Limits { rate_per_client: 5, ..Limits::default() }, Some("s3cret")).await;
    for (path, status, error) in [
        ("/xrpc/dev.instancemap.listInstances?limit=0", 400, "InvalidRequest"),
        ("/xrpc/dev.instancemap.listInstances?limit=1001", 400, "InvalidRequest"),
        ("/xrpc/dev.instancemap.listInstances?cursor=zz", 400, "InvalidRequest"),
        ("/xrpc/dev.instancemap.listInstances?bogus=1", 400, "InvalidRequest"),
        ("/xrpc/dev.instancemap.getInstance?id=inst_000000000000", 404, "InstanceNotFound"),
    ] {
        let (s, e) = get(&api, path).await;
        assert_eq!((s, e["error"].as_str()), (status, Some(error)), "{path}: {e}");
        assert!(e["message"].is_string());
    }
    // rate limit: a burst of 10 (twice the rate), then 429 with Retry-After
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(http_get(api.addr, "/healthz").await.unwrap().0);
    }
    assert!(codes.contains(&429), "{codes:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    let api = start(Limits::default(), Some("s3cret")).await;
    let (s, e) = get(&api, "/xrpc/dev.instancemap.nope").await;
    assert_eq!((s, e["error"].as_str()), (501, Some("MethodNotImplemented")));
    let (s, _) = get(&api, "/nothing").await;
    assert_eq!(s, 404);
    let long = format!("/xrpc/dev.instancemap.lookup?subject={}", "a".repeat(5000));
    assert_eq!(http_get(api.addr, &long).await.unwrap().0, 414);

    // admin: a token is needed; the right one marks and checkpoints
    let post = |path: String, token: Option<&'static str>| {
        let addr = api.addr;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
            let req =
                format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out.split(' ').nth(1).unwrap().parse::<u16>().unwrap()
        }
    };
    let mark = format!("/xrpc/dev.instancemap.admin.refreshAccount?did={ALICE}");
    assert_eq!(post(mark.clone(), None).await, 401);
    assert_eq!(post(mark.clone(), Some("wrong!")).await, 401);
    assert_eq!(post(mark, Some("s3cret")).await, 200);
    let cp = tempfile::tempdir().unwrap();
    let target = cp.path().join("copy");
    let path = format!("/xrpc/dev.instancemap.admin.createCheckpoint?dir={}", target.display());
    assert_eq!(post(path.clone(), Some("s3cret")).await, 200);
    assert_eq!(post(path, Some("s3cret")).await, 400, "the directory exists now");
    // not inside the live database, not through `..`, not on another
    // filesystem (a RAM-backed tmpfs would not hold the hard links)
    let checkpoint =
        |d: std::path::PathBuf| format!("/xrpc/dev.instancemap.admin.createCheckpoint?dir={}", d.display());
    assert_eq!(post(checkpoint(api._dir.path().join("inside")), Some("s3cret")).await, 400, "inside the database");
    assert_eq!(post(checkpoint(cp.path().join("a/../b")), Some("s3cret")).await, 400, "a path with ..");
    if std::path::Path::new("/dev/shm").is_dir() {
        let shm = std::path::PathBuf::from(format!("/dev/shm/instancemap-cp-{}", std::process::id()));
        assert_eq!(post(checkpoint(shm.clone()), Some("s3cret")).await, 400, "another filesystem (tmpfs)");
        assert!(!shm.exists());
    }
    let copy = Store::open_read_only(&target).unwrap();
    assert!(map::assignment(&copy, ALICE).unwrap().is_some(), "the checkpoint holds the map");
    let no_admin = start(Limits::default(), None).await;
    let no_admin_post = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(no_admin.addr).await.unwrap();
        let req = format!("POST /xrpc/dev.instancemap.admin.refreshAccount?did={ALICE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(no_admin_post.starts_with("HTTP/1.1 404"), "no admin routes without a token: {no_admin_post}");
    assert!(no_admin_post.contains("AdminDisabled"));

    // the OpenAPI document names every method; the lexicons agree with it
    let (s, doc) = get(&api, "/openapi.json").await;
    assert_eq!(s, 200);
    for m in openapi::METHODS {
        let path = format!("/xrpc/dev.instancemap.{}", m.name);
        assert!(doc["paths"][&path].is_object(), "{path} missing from openapi.json");
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("lexicons/dev/instancemap")
            .join(format!("{}.json", m.name));
        let want = openapi::lexicon(m);
        if std::env::var_os("INSTANCEMAP_WRITE_LEXICONS").is_some() {
            std::fs::write(&file, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
        }
        let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            got,
            want,
            "{} differs from the API table (INSTANCEMAP_WRITE_LEXICONS=1 rewrites it)",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_one_consistent_snapshot() {
    use instancemap::config::ExportFormat;
    let dir = tempfile::tempdir().unwrap();
    let store = network(dir.path());
    let out = tempfile::tempdir().unwrap();
    let files = instancemap::export::export(&store, ExportFormat::Ndjson, out.path()).unwrap();
    let rows: std::collections::BTreeMap<String, u64> = files.into_iter().collect();
    let accounts = std::fs::read_to_string(out.path().join("accounts.ndjson")).unwrap();
    assert_eq!(accounts.lines().count() as u64, rows["accounts"]);
    let alice: serde_json::Value = accounts
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["did"] == ALICE)
        .unwrap();
    assert_eq!(alice["host"], "https://pds.coop.example");
    assert_eq!(alice["state"], "assigned");
    assert_eq!(rows["moves"], 1);
    for f in [ExportFormat::Csv, ExportFormat::Parquet] {
        let out = tempfile::tempdir().unwrap();
        let again: std::collections::BTreeMap<String, u64> =
            instancemap::export::export(&store, f, out.path()).unwrap().into_iter().collect();
        assert_eq!(again, rows);
    }
    let out = tempfile::tempdir().unwrap();
    instancemap::export::export(&store, ExportFormat::Csv, out.path()).unwrap();
    let csv = std::fs::read_to_string(out.path().join("moves.csv")).unwrap();
    assert!(csv.starts_with("did,at,from_host,to_host,from_instance,to_instance\n"));
}

/// The flow matrix is bounded: `top` instances by accounts moved (50 unless
/// asked, at most 200), the rest summed as `(other)`. (On a 20k-instance map
/// it answered 40 MB, 435 KB even with `limit=1`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_matrix_is_bounded_by_top() {
    let api = start(Limits::default(), None).await;
    let (s, m) = get(&api, "/xrpc/dev.instancemap.getFlows?from=2025-01-01&format=matrix&top=1").await;
    assert_eq!(s, 200, "{m}");
    let names: Vec<&str> = m["instances"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{m}");
    assert!(names.contains(&"(other)"), "{m}");
    let total: i64 =
        m["matrix"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(total, 1, "the one migration, kept in the sum");
    for bad in ["0", "201", "x"] {
        let (s, e) =
            get(&api, &format!("/xrpc/dev.instancemap.getFlows?from=2025-01-01&format=matrix&top={bad}")).await;
        assert_eq!((s, e["error"].as_str()), (400, Some("InvalidRequest")), "{bad}: {e}");
    }
}

/// Reads from memory alone (`store::deadline::cached_only`, how the API
/// serves a request on its async worker): on a store just opened nothing
/// is cached, so the read misses and says so; once the blocks are cached
/// the same read answers the same from memory; a snapshot read, which
/// cannot be limited to memory, is always refused there. The API answers
/// the same with inline reads on and off. (RocksDB's MultiGet ignores the
/// block-cache tier: `account_view`'s one multi-get read the files from an
/// async worker until it made point reads there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_memory_alone_miss_on_a_cold_store_and_answer_the_same_when_warm() {
    use instancemap::store::{deadline, StoreReader};
    let dir = tempfile::tempdir().unwrap();
    // enough accounts that their blocks are not all read when the files
    // are opened
    const FILLER: u64 = 60_000;
    let filler = |n: u64| format!("did:plc:zz{n:022}");
    tokio::task::block_in_place(|| {
        let store = network(dir.path());
        let mut l = Loader::new(&store).unwrap();
        for n in 0..FILLER {
            l.apply(op(
                100 + n,
                &filler(n),
                Some("https://b.host.bsky.network"),
                &format!("f{n}.bsky.social"),
                7,
                false,
            ))
            .unwrap();
        }
        l.flush().unwrap();
        drop(l);
        instancemap::cluster::map::recompute(&store, &Default::default()).unwrap();
        store.flush().unwrap();
    });
    let store = Store::open_read_only(dir.path()).unwrap();
    let middle = filler(FILLER / 2);
    let (cold, missed) = deadline::cached_only(|| store.account_view(&middle));
    assert!(missed, "nothing is cached on a store just opened: {cold:?}");
    assert!(matches!(cold, Err(instancemap::store::StoreError::NotCached)), "{cold:?}");
    let plain = store.account_view(&middle).unwrap();
    assert!(plain.plc.is_some());
    let (warm, missed) = deadline::cached_only(|| store.account_view(&middle));
    assert!(!missed, "the blocks the plain read loaded are cached");
    assert_eq!(format!("{:?}", warm.unwrap()), format!("{plain:?}"));
    // a scan stops at its first block not in memory (or after INLINE_SCAN
    // entries): assignments are stored for every filler account
    let (scan, missed) = deadline::cached_only(|| {
        let mut n = 0u64;
        instancemap::store::map::MapReader::each_assignment(&store, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .map(|()| n)
    });
    assert!(missed && scan.is_err(), "a scan from memory alone over a cold family: {scan:?}");
    let (snap, missed) = deadline::cached_only(|| store.map_snapshot().hosts().map(|h| h.len()));
    assert!(missed && snap.is_err(), "a snapshot read is refused from memory alone: {snap:?}");
    assert!(!deadline::is_cached_only(), "the mode ends with the call");

    let mut answers = Vec::new();
    for inline_reads in [false, true] {
        let state = ApiState::new(store.clone(), true, None, Limits { inline_reads, ..Limits::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(api::serve(listener, state, tokio_util::sync::CancellationToken::new()));
        let mut got = Vec::new();
        for path in [
            format!("/xrpc/dev.instancemap.lookup?subject={ALICE}"),
            format!("/xrpc/dev.instancemap.lookup?subject={BOB}&reason=reasonSpam"),
            "/xrpc/dev.instancemap.listInstances".to_owned(),
            "/xrpc/dev.instancemap.getSummary".to_owned(),
        ] {
            // twice: the first may miss and go to the pool, the second is warm
            for _ in 0..2 {
                let (s, body) = http_get(addr, &path).await.unwrap();
                let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
                v.as_object_mut().map(|o| o.remove("map"));
                got.push((path.clone(), s, v));
            }
        }
        answers.push(got);
    }
    assert_eq!(answers[0], answers[1], "inline reads answer what the blocking pool answers");
}

/// The lookup keeps what it read about a host while the store takes no
/// write: a host's new contact, written after a lookup was answered, is in
/// the next answer (from the writer's own handle, and from a `serve
/// --follow` secondary once it has caught up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_never_answers_from_host_reads_older_than_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| network(dir.path()));
    let own = tempfile::tempdir().unwrap();
    let follower = Store::open_secondary(dir.path(), own.path()).unwrap();
    let host = "https://pds.coop.example";
    let path = format!("/xrpc/dev.instancemap.lookup?subject={ALICE}");
    let contact = |v: &serde_json::Value| {
        let hosting = v["entities"].as_array().unwrap().iter().find(|e| e["roles"][0] == "hosting").unwrap();
        hosting["contact"]["email"].as_str().unwrap_or_default().to_owned()
    };
    let primary =
        serve_store(ApiState::new(store.clone(), false, None, Limits::default()), tempfile::tempdir().unwrap()).await;
    let secondary =
        serve_store(ApiState::new(follower.clone(), true, None, Limits::default()), tempfile::tempdir().unwrap()).await;
    for api in [&primary, &secondary] {
        for _ in 0..2 {
            let (s, v) = get(api, &path).await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(contact(&v), "abuse@coop.example");
        }
    }
    let mut rec = hosts::get(&store, host).unwrap().unwrap();
    rec.describe.as_mut().unwrap().contact_email = Some("trust@coop.example".into());
    hosts::put(&store, host, &rec).unwrap();
    let (_, v) = get(&primary, &path).await;
    assert_eq!(contact(&v), "trust@coop.example", "the writer's handle answers from the new record");
    let (_, v) = get(&secondary, &path).await;
    assert_eq!(contact(&v), "abuse@coop.example", "a follower answers what it has caught up with");
    follower.catch_up().unwrap();
    let (_, v) = get(&secondary, &path).await;
    assert_eq!(contact(&v), "trust@coop.example", "and the new record once it has");
}

// ---------------------------------------------------------------- the explorer

/// A page: status, the header block, the body.
async fn page(api: &Api, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", api.addr).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_card_shows_host_instance_contacts_and_moves_in_html() {
    let api = start(Limits::default(), None).await;
    let (s, head, html) = page(&api, &format!("/?q={ALICE}")).await;
    assert_eq!(s, 200, "{html}");
    assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{head}");
    assert!(head.contains("server-timing: render;dur="), "{head}");
    for want in [
        "Who is responsible for <bdi>alice.bsky.social</bdi>",
        "https://pds.coop.example",
        "Example Co-op",
        "mod@coop.example",
        "href=\"mailto:abuse@coop.example\"",
        "did:plc:llllllllllllllllllllllll",
        // her move from the provider to the co-op, on the timeline
        "1 move(s), oldest first.",
        "https://a.host.bsky.network",
        "/xrpc/dev.instancemap.lookup?subject=did%3Aplc%3Aaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        assert!(html.contains(want), "{want:?} missing from the card:\n{html}");
    }
    // no inline script or style for the policy to refuse
    assert!(!html.contains("<script>") && !html.contains("style="), "{html}");

    // by handle (the registrant of a custom domain) and by at:// URI
    let (s, _, html) = page(&api, "/?q=carol.example.net").await;
    assert_eq!(s, 200);
    assert!(html.contains(CAROL) && html.contains("example.net"), "{html}");
    let (s, _, html) = page(&api, &format!("/?q=at://{CAROL}/app.bsky.feed.post/3l3qo2vuowo2b")).await;
    assert_eq!(s, 200);
    assert!(html.contains("app.bsky.feed.post/3l3qo2vuowo2b"), "{html}");
    // a host that publishes no contact: the explanation says so in words
    // (it read "notify first the hosting (none )")
    let (_, b) = get(&api, &format!("/xrpc/dev.instancemap.lookup?subject={BOB}")).await;
    let text = b["explanation"].as_str().unwrap();
    assert!(
        text.contains("notify first the hosting (https://b.host.bsky.network), which publishes no contact."),
        "{text}"
    );
    assert!(!text.contains("(none"), "{text}");
    // a report reason narrows the routes, as the API's reason does
    let (s, _, html) = page(&api, &format!("/?q={ALICE}&reason=reasonSpam")).await;
    assert_eq!(s, 200);
    assert!(html.contains("Who to tell about "), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_search_leads_hosts_and_names_to_instances_and_says_what_failed() {
    let api = start(Limits::default(), None).await;
    let (_, v) = get(&api, &format!("/xrpc/dev.instancemap.lookup?subject={ALICE}")).await;
    let id = v["instance"]["id"].as_str().unwrap().to_owned();
    for q in ["pds.coop.example", "https://pds.coop.example/", "Example%20Co-op", id.as_str()] {
        let (s, head, _) = page(&api, &format!("/?q={q}")).await;
        assert_eq!(s, 303, "{q}");
        assert!(head.contains(&format!("location: /instance/{id}")), "{q}: {head}");
    }
    let (s, _, html) = page(&api, "/?q=did:plc:zzzzzzzzzzzzzzzzzzzzzzzz").await;
    assert_eq!(s, 404);
    assert!(html.contains("This account is not known") && html.contains("not in the PLC export loaded"), "{html}");
    let (s, _, html) = page(&api, "/?q=nobody.example.org").await;
    assert_eq!(s, 404);
    assert!(html.contains("No account with this handle is known"), "{html}");
    // what was typed comes back in the search box, escaped
    let (s, _, html) = page(&api, "/?q=%22%3E%3Cscript%3Ealert(1)%3C/script%3E").await;
    assert_eq!(s, 400);
    assert!(html.contains("That cannot be looked up"), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    let (s, _, html) = page(&api, "/instance/inst_000000000000").await;
    assert_eq!(s, 404);
    assert!(html.contains("No such instance"), "{html}");
    let (s, _, _) = page(&api, "/assets/nothing.js").await;
    assert_eq!(s, 404);
    let (s, head, css) = page(&api, "/assets/style.css").await;
    assert_eq!(s, 200);
    assert!(head.contains("text/css") && css.contains("prefers-color-scheme"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_instance_page_list_and_glance_agree_with_the_api() {
    let api = start(Limits::default(), None).await;
    let (_, v) = get(&api, &format!("/xrpc/dev.instancemap.lookup?subject={ALICE}")).await;
    let id = v["instance"]["id"].as_str().unwrap().to_owned();
    let (s, _, html) = page(&api, &format!("/instance/{id}")).await;
    assert_eq!(s, 200, "{html}");
    let (_, inst) = get(&api, &format!("/xrpc/dev.instancemap.getInstance?id={id}")).await;
    for h in inst["hosts"].as_array().unwrap() {
        assert!(html.contains(&format!("<code>{}</code>", h.as_str().unwrap())), "{h} missing");
    }
    let (_, g) = get(&api, &format!("/xrpc/dev.instancemap.getGrowth?id={id}")).await;
    let days = g["days"].as_array().unwrap().len();
    assert!(days > 0);
    assert!(html.contains(&format!("data-points=\"{days}\"")), "{html}");
    assert_eq!(html.matches("<circle class=\"point\"").count(), days);
    assert!(html.contains("verified operator declaration") && html.contains("mod@coop.example"), "{html}");

    // the list, paged with the API's cursor, every instance once
    let (_, all) = get(&api, "/xrpc/dev.instancemap.listInstances?limit=1000").await;
    let total = all["total"].as_u64().unwrap() as usize;
    let (mut path, mut rows, mut pages) = ("/instances?limit=2".to_owned(), 0, 0);
    loop {
        let (s, _, html) = page(&api, &path).await;
        assert_eq!(s, 200, "{path}: {html}");
        pages += 1;
        rows += html.matches("<td><a href=\"/instance/inst_").count();
        match html
            .split("rel=\"next\"")
            .next()
            .and_then(|b| b.rsplit("href=\"").next())
            .filter(|_| html.contains("rel=\"next\""))
        {
            Some(next) => path = next.split('"').next().unwrap().replace("&amp;", "&"),
            None => break,
        }
        assert!(pages <= total, "paging does not end");
    }
    assert_eq!((rows, pages), (total, total.div_ceil(2)));

    // the glance: the totals and the concentration getSummary gives
    let (_, sum) = get(&api, "/xrpc/dev.instancemap.getSummary").await;
    assert!(sum["concentration"]["instances"]["lorenz"].as_array().unwrap().len() == 21, "{sum}");
    assert!(sum["ingest"]["plc"]["lastOperationAt"].as_str().unwrap().starts_with("2025-01-06"), "{sum}");
    let (s, _, html) = page(&api, "/").await;
    assert_eq!(s, 200);
    let share = sum["concentration"]["instances"]["top1_share"].as_f64().unwrap();
    assert!(html.contains(&format!("{:.1}%", share * 100.0)), "{html}");
    assert!(html.contains("class=\"curve\""), "{html}");
    let (s, _, html) = page(&api, "/flows?from=2025-01-01").await;
    assert_eq!(s, 200, "{html}");
    assert!(html.contains("account moves from 2025-01-01"), "{html}");
}

/// What an operator writes in its declaration reaches the page only as
/// text: a script in its name is escaped, a home page that tries to close
/// its attribute stays inside it, and a contact it marked confidential is
/// not shown at all. (A `javascript:` URL never gets this far: the
/// declaration's lexicon check refuses it; `page::safe_href` would too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_shows_what_an_operator_wrote_only_as_text_and_never_its_confidential_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| {
        let store = network(dir.path());
        let contact = |role: &str, email: &str, confidential: bool| {
            let mut c = vec![("role", text(role)), ("email", text(email))];
            if confidential {
                c.push(("confidential", Value::Bool(true)));
            }
            map(c)
        };
        let declaration = map(vec![
            ("$type", text("dev.instancemap.declaration")),
            ("name", text("Co-op <script>alert(1)</script>")),
            ("pdsHosts", Value::Array(vec![text("https://pds.coop.example"), text("https://b.host.bsky.network")])),
            ("moderationContact", text("mod@coop.example")),
            ("serviceName", text("<img src=x onerror=alert(2)>")),
            ("homeUrl", text("https://coop.example/\"><script>alert(3)</script>")),
            ("supportUrl", text("https://coop.example/help")),
            (
                "contacts",
                Value::Array(vec![
                    // the only abuse contact is confidential: the first route for a report
                    contact("abuse", "secret-abuse@coop.example", true),
                    contact("security", "secret-desk@coop.example", true),
                ]),
            ),
            ("createdAt", text("2026-11-27T00:00:00.000Z")),
        ]);
        let f = declaration_frame(2, "3mptbypluud2b", "update", declaration);
        let store = ingest_frames(store, "replay", &[f]);
        map::recompute(&store, &Default::default()).unwrap();
        store
    });
    let api = serve_store(ApiState::new(store, false, None, Limits::default()), dir).await;
    // the lookup has the new declaration, the confidential contact marked
    let (_, v) = get(&api, &format!("/xrpc/dev.instancemap.lookup?subject={ALICE}")).await;
    let op = v["entities"].as_array().unwrap().iter().find(|e| e["roles"][0] == "operator").unwrap().clone();
    assert_eq!(op["supportUrl"], "https://coop.example/help", "{v}");
    assert!(v.to_string().contains("secret-desk@coop.example"), "the API gives reporters the confidential contact");
    // marked where it is given, never in a field of one address
    assert_eq!(op["abuseContact"], serde_json::Value::Null, "{op}");
    let routes = v["routesByReason"].to_string() + &v["routes"].to_string();
    assert!(routes.contains("secret-abuse@coop.example") && routes.contains("\"confidential\":true"), "{routes}");
    // the explanation names the first route, confidential or not: the page
    // must take it out of the words it shows
    assert!(v["explanation"].as_str().unwrap().contains("secret-abuse@coop.example"), "{v}");
    let id = v["instance"]["id"].as_str().unwrap().to_owned();
    for path in [format!("/?q={ALICE}"), format!("/instance/{id}"), "/instances".to_owned(), "/".to_owned()] {
        let (s, _, html) = page(&api, &path).await;
        assert_eq!(s, 200, "{path}: {html}");
        assert!(!html.contains("<script>alert") && !html.contains("<img"), "{path}: markup from the operator: {html}");
        assert!(!html.contains("\"><script>"), "{path}: an attribute broken out of");
        assert!(!html.contains("secret-desk@coop.example"), "{path}: the confidential contact is shown");
        assert!(!html.contains("secret-abuse@coop.example"), "{path}: the confidential abuse contact is shown");
    }
    let (_, _, html) = page(&api, &format!("/?q={ALICE}")).await;
    assert!(html.contains("Co-op &lt;script&gt;alert(1)&lt;/script&gt;"), "the name is shown as text: {html}");
    assert!(html.contains("href=\"https://coop.example/help\""), "{html}");
    assert!(html.contains("https://coop.example/&quot;&gt;&lt;script&gt;"), "the home page is shown as text: {html}");
}

/// A map with work pending says so on every page, in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_says_when_the_map_is_not_current() {
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| {
        let store = network(dir.path());
        // bob moves to the co-op; the map has not taken it in
        let mut l = Loader::new(&store).unwrap();
        l.apply(op(9, BOB, Some("https://pds.coop.example"), "bob.bsky.social", 7, false)).unwrap();
        l.flush().unwrap();
        store
    });
    let api = serve_store(ApiState::new(store, true, None, Limits::default()), dir).await;
    for path in ["/".to_owned(), format!("/?q={BOB}"), "/instances".to_owned()] {
        let (s, _, html) = page(&api, &path).await;
        assert_eq!(s, 200, "{path}");
        assert!(html.contains("The map is not current."), "{path}: {html}");
    }
    let (_, _, html) = page(&api, "/").await;
    assert!(html.contains("catching up: 1 accounts waiting"), "{html}");
}
