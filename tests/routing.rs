//! Responsibility routing end to end: an operator publishing the second
//! declaration (contacts by role, a delegated moderation service, the
//! abuse-notice authorities it accepts, routes per reason), the service it
//! delegates to confirming it, a route to a service that never confirmed,
//! and a labeler whose service record takes only spam. The lookup answers,
//! per reason, who to notify first and who after.

mod common;

use ciborium::Value;
use common::*;
use instancemap::cluster::map;
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::identity::handle::HandleCheck;
use instancemap::identity::resolve::IdentityRecord;
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::{self, Store};

const HOST: &str = "https://pds.coop.example";
const OP: &str = "did:plc:oooooooooooooooooooooooo";
const ALICE: &str = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const MOD: &str = "did:plc:mmmmmmmmmmmmmmmmmmmmmmmm";
const STRANGER: &str = "did:plc:ssssssssssssssssssssssss";
const LABELER: &str = "did:plc:llllllllllllllllllllllll";
const AUTHORITY: &str = "did:plc:uuuuuuuuuuuuuuuuuuuuuuuu";

fn seed(did: &str) -> u8 {
    did.as_bytes()[8] - b'a' + 1
}

fn genesis(l: &mut Loader<'_>, seq: u64, did: &str) {
    l.apply(ExportOp {
        did: did.into(),
        cid: format!("bafy{}", &did[8..]),
        created_at: "2025-02-01T00:00:00.000Z".into(),
        seq: Some(seq),
        nullified: false,
        prev: None,
        state: OpState::Update { pds: Some(HOST.into()), handle: None, signing_key: Some(test_key(seed(did)).1) },
    })
    .unwrap();
}

fn resolved(store: &Store, did: &str, handle: &str) {
    let ident = IdentityRecord {
        pds: Some(HOST.into()),
        handle: Some(handle.into()),
        resolved_at_ms: Some(1),
        checked_at_ms: 1,
        signing_key: Some(test_key(seed(did)).1),
        handle_check: Some(HandleCheck {
            handle: handle.into(),
            verified: true,
            method: Some("https".into()),
            reason: None,
            checked_at_ms: 1_760_000_000_000,
        }),
        ..IdentityRecord::default()
    };
    let mut b = store::Batch::default();
    b.put_identity(did, ident);
    b.mark(did);
    store::StoreWriter::commit(store, b).unwrap();
}

fn record(store: Store, seq: i64, did: &str, path: &str, record: serde_json::Value) -> Store {
    let f = signed_commit_frame(
        seq,
        did,
        &format!("3mptbypluud2{}", (b'a' + seq as u8) as char),
        &[TestOp { action: "create", path, record: Some(json_to_cbor(&record)), omit_block: false }],
        Some(&test_key(seed(did)).0),
    );
    ingest_frames(store, "replay", &[f])
}

fn json_to_cbor(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Integer(n.as_i64().unwrap().into()),
        serde_json::Value::String(s) => text(s),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(json_to_cbor).collect()),
        serde_json::Value::Object(o) => Value::Map(o.iter().map(|(k, v)| (text(k), json_to_cbor(v))).collect()),
    }
}

fn network(dir: &std::path::Path) -> Store {
    let store = Store::open(dir).unwrap();
    {
        let mut l = Loader::new(&store).unwrap();
        for (i, d) in [OP, ALICE, BOB, MOD, STRANGER, LABELER].iter().enumerate() {
            genesis(&mut l, i as u64 + 1, d);
        }
        l.flush().unwrap();
    }
    resolved(&store, OP, "op.coop.example");
    resolved(&store, ALICE, "alice.coop.example");
    resolved(&store, BOB, "bob.example.org");
    let rec = HostRecord {
        state: "online".into(),
        describe: Some(Describe {
            did: Some(OP.into()),
            contact_email: Some("admin@coop.example".into()),
            available_user_domains: vec![".coop.example".into()],
            ..Describe::default()
        }),
        last_ok_ms: Some(1_760_000_000_000),
        last_checked_ms: Some(1_760_000_000_000),
        ..hosts::get(&store, HOST).unwrap().unwrap_or_default()
    };
    hosts::put(&store, HOST, &rec).unwrap();
    let store = record(
        store,
        1,
        OP,
        "dev.instancemap.declaration/self",
        serde_json::json!({
            "$type": "dev.instancemap.declaration",
            "name": "Example Co-op",
            "pdsHosts": [HOST],
            "serviceName": "Co-op PDS",
            "supportUrl": "https://coop.example/help",
            "contacts": [
                {"role": "abuse", "email": "abuse@coop.example"},
                {"role": "security", "email": "security@coop.example", "confidential": true},
            ],
            "moderationService": format!("{MOD}#atproto_labeler"),
            "abuseNoticeAuthorities": [AUTHORITY],
            "routes": [
                {"reasonTypes": ["tools.ozone.report.defs#reasonRuleSiteSecurity"], "contact": "security"},
                {"reasonTypes": ["com.atproto.moderation.defs#reasonSpam"], "service": format!("{STRANGER}#atproto_labeler")},
            ],
            "labelers": [LABELER],
            "createdAt": "2026-11-26T00:00:00.000Z",
        }),
    );
    // the delegated service confirms; the stranger never does
    let store = record(
        store,
        2,
        MOD,
        "dev.instancemap.declaration/self",
        serde_json::json!({"$type": "dev.instancemap.declaration", "name": "Co-op Moderation",
            "moderatesFor": [OP], "createdAt": "2026-11-26T00:00:00.000Z"}),
    );
    let store = record(
        store,
        3,
        LABELER,
        "app.bsky.labeler.service/self",
        serde_json::json!({"$type": "app.bsky.labeler.service", "policies": {"labelValues": ["spam"]},
            "reasonTypes": ["com.atproto.moderation.defs#reasonSpam"], "createdAt": "2026-11-26T00:00:00.000Z"}),
    );
    map::recompute(&store, &Default::default()).unwrap();
    store
}

async fn lookup(addr: std::net::SocketAddr, query: &str) -> (u16, serde_json::Value) {
    let (s, body) = http_get(addr, &format!("/xrpc/dev.instancemap.lookup?{query}")).await.unwrap();
    (s, serde_json::from_str(&body).unwrap_or_else(|_| panic!("{query}: {body}")))
}

fn order(v: &serde_json::Value) -> Vec<(String, String)> {
    v["routes"]
        .as_array()
        .unwrap_or_else(|| panic!("no routes: {v}"))
        .iter()
        .map(|r| (r["party"].as_str().unwrap().to_owned(), r["address"].as_str().unwrap().to_owned()))
        .collect()
}

fn pairs(want: &[(&str, &str)]) -> Vec<(String, String)> {
    want.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_routes_each_reason_to_the_right_party_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| network(dir.path()));
    // the delegation counts (the service confirmed); the stranger's route does not
    let st = map::declaration_status(&store, OP).unwrap().unwrap();
    assert_eq!(st.verified_hosts, vec![HOST.to_owned()]);
    assert_eq!(st.confirmed.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), [format!("{MOD}#atproto_labeler")]);
    assert!(st.unverified.iter().any(|(c, why)| c.starts_with(STRANGER) && why.contains("moderatesFor")), "{st:?}");
    let state = instancemap::api::ApiState::new(store, true, None, Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(instancemap::api::serve(listener, state, tokio_util::sync::CancellationToken::new()));

    let notice = format!("{HOST}/xrpc/com.atproto.moderation.sendAbuseNotice");
    let service = format!("{MOD}#atproto_labeler");
    let labeler = format!("{LABELER}#atproto_labeler");
    // spam: the route to the stranger's service never confirmed, so the
    // delegated service first; the spam labeler last
    let (s, v) = lookup(addr, &format!("subject={ALICE}&reason=com.atproto.moderation.defs%23reasonSpam")).await;
    assert_eq!(s, 200, "{v}");
    let explanation = v["explanation"].as_str().unwrap();
    assert!(explanation.contains("abuse contact abuse@coop.example"), "{explanation}");
    assert!(explanation.contains("notify first the moderation service (service did:plc:mmmm"), "{explanation}");
    assert_eq!(v["reason"], "tools.ozone.report.defs#reasonMisleadingSpam");
    assert_eq!(
        order(&v),
        pairs(&[
            ("moderation_service", &service),
            ("operator_contact", "abuse@coop.example"),
            ("abuse_notice", &notice),
            ("hosting", "admin@coop.example"),
            ("labeler", &labeler),
        ])
    );
    let r = &v["routes"][0];
    assert_eq!((r["rank"].as_i64(), r["channel"].as_str()), (Some(1), Some("service")));
    assert!(r["lastChecked"].is_string(), "{r}");
    assert!(v["routes"][2]["evidence"].as_str().unwrap().contains("abuseType spam"));
    assert!(!v.to_string().contains(STRANGER), "an unconfirmed service is never a route");

    // site security: the declared route to the security contact first,
    // marked confidential; the spam-only labeler is not asked
    let (_, v) = lookup(addr, &format!("subject={ALICE}&reason=reasonRuleSiteSecurity")).await;
    assert_eq!(
        order(&v),
        pairs(&[
            ("operator_route", "security@coop.example"),
            ("moderation_service", &service),
            ("abuse_notice", &notice),
            ("hosting", "admin@coop.example"),
        ])
    );
    assert_eq!(v["routes"][0]["confidential"], true);
    assert_eq!(v["routes"][0]["role"], "security");

    // child sexual abuse material in a record: moderation authorities
    // only, never a labeler; the notice says media
    let (_, v) =
        lookup(addr, &format!("subject=at://{ALICE}/app.bsky.feed.post/3l2s5xxv2ze2c&reason=reasonChildSafetyCSAM"))
            .await;
    assert_eq!(v["reasonAuthoritiesOnly"], true);
    assert!(!order(&v).iter().any(|(p, _)| p == "labeler"), "{v}");
    let n = v["routes"].as_array().unwrap().iter().find(|r| r["party"] == "abuse_notice").unwrap();
    assert!(
        n["evidence"].as_str().unwrap().contains("abuseType media")
            && n["evidence"].as_str().unwrap().contains(AUTHORITY)
    );

    // a custom-domain handle: its registrant is a route too
    let (_, v) = lookup(addr, &format!("subject={BOB}&reason=reasonMisleadingImpersonation")).await;
    assert!(order(&v).contains(&("registrant".to_owned(), "example.org".to_owned())), "{v}");

    // without a reason: the generic routes, and the routes of every reason
    // the operator names, grouped
    let (_, v) = lookup(addr, &format!("subject={ALICE}")).await;
    assert_eq!(order(&v)[0], ("moderation_service".to_owned(), service.clone()));
    let by = v["routesByReason"].as_object().unwrap();
    let mut keys: Vec<&str> = by.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["tools.ozone.report.defs#reasonMisleadingSpam", "tools.ozone.report.defs#reasonRuleSiteSecurity"]
    );
    assert_eq!(by["tools.ozone.report.defs#reasonRuleSiteSecurity"][0]["address"], "security@coop.example");

    // an unknown reason is a clear 400
    let (s, v) = lookup(addr, &format!("subject={ALICE}&reason=reasonNope")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("InvalidRequest")));
    assert!(v["message"].as_str().unwrap().contains("reasonNope"));
}

/// The exports carry the operator's face, its public abuse contact,
/// activity and openness per instance, and each host's registration
/// policy, contact and addresses; a contact the operator marked
/// confidential is for reporters and appears nowhere in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_show_the_operators_face_and_withhold_confidential_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let store = tokio::task::block_in_place(|| network(dir.path()));
    let out = tempfile::tempdir().unwrap();
    instancemap::export::export(&store, instancemap::config::ExportFormat::Ndjson, out.path()).unwrap();
    let rows = |f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.path().join(f)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let inst = rows("instances.ndjson");
    let coop = inst.iter().find(|i| i["operator"] == OP).unwrap_or_else(|| panic!("{inst:?}"));
    assert_eq!(coop["service_name"], "Co-op PDS");
    assert_eq!(coop["support_url"], "https://coop.example/help");
    assert_eq!(coop["abuse_contact"], "abuse@coop.example");
    assert_eq!(coop["moderation_service"], format!("{MOD}#atproto_labeler"));
    for k in ["active_1d", "active_7d", "active_30d"] {
        assert!(coop[k].is_i64(), "{k}: {coop}");
    }
    assert!(coop["open_registration"].is_boolean(), "{coop}");
    let hosts = rows("hosts.ndjson");
    let h = hosts.iter().find(|h| h["host"] == HOST).unwrap();
    assert_eq!(h["contact_email"], "admin@coop.example");
    for f in ["instances.ndjson", "hosts.ndjson", "accounts.ndjson", "moves.ndjson"] {
        let text = std::fs::read_to_string(out.path().join(f)).unwrap();
        assert!(!text.contains("security@coop.example"), "{f} shows the confidential contact");
    }
}

/// The CLI's `lookup` answers what the API's does (JSON), and as text
/// ranks the routes with the confidential contact marked; `instance`
/// shows the activity and labelers getInstance adds.
#[test]
fn the_cli_lookup_and_instance_show_routes_and_activity() {
    let dir = tempfile::tempdir().unwrap();
    drop(network(dir.path()));
    let bin = env!("CARGO_BIN_EXE_instancemap");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).arg("--db").arg(dir.path()).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["lookup", "alice.coop.example", "--reason", "reasonRuleSiteSecurity", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["did"], ALICE);
    assert_eq!(v["subjectType"], "handle");
    let first = &v["routes"][0];
    assert_eq!(
        (first["party"].as_str(), first["address"].as_str()),
        (Some("operator_route"), Some("security@coop.example"))
    );
    assert_eq!(first["confidential"], true);
    assert!(first["check"].is_object(), "an email route carries its contact check: {first}");
    let (code, text, err) = run(&["lookup", ALICE, "--reason", "reasonRuleSiteSecurity"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains("routes for tools.ozone.report.defs#reasonRuleSiteSecurity:"), "{text}");
    assert!(text.contains("1. operator route"), "{text}");
    assert!(text.contains("security@coop.example (confidential: not for display) [not checked yet]"), "{text}");
    assert!(text.contains("status by observer:"), "{text}");
    // without a reason: every declared reason's routes
    let (_, out, _) = run(&["lookup", ALICE, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["routesByReason"]["tools.ozone.report.defs#reasonRuleSiteSecurity"].is_array(), "{v}");
    let (code, _, err) = run(&["lookup", "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz"]);
    assert_eq!(code, Some(2), "an unknown DID: {err}");
    assert!(err.contains("is not known"), "{err}");
    let (code, _, err) = run(&["lookup", ALICE, "--reason", "reasonNonsense"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--reason"), "{err}");
    let (code, out, err) = run(&["instance", HOST]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["activity"]["active30d"].is_i64(), "{v}");
    assert_eq!(v["labelers"][0]["did"], LABELER, "{v}");
    assert!(v["statusDisagreements"].is_object(), "{v}");
}
