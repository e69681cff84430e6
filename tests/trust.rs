//! Evidence is proven, never self-asserted: an attacker who runs a PDS,
//! controls its describeServer, publishes records from its own repo and
//! signs them with its own key cannot join, rename or speak for another
//! operator's instance. The scenario runs against fake PDSes on loopback
//! (crawled through the real crawler); the Bluesky-shaped cases and the
//! conflict run over the store.

mod common;

use ciborium::Value;
use common::*;
use instancemap::cluster::map;
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::identity::handle::HandleCheck;
use instancemap::identity::resolve::IdentityRecord;
use instancemap::net::Fetcher;
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::{self, Store};
use serde_json::json;

const ATTACKER: &str = "did:plc:mmmmmmmmmmmmmmmmmmmmmmmm";

/// A DID from a short name (24 base32 characters after `did:plc:`).
fn did(name: &str) -> String {
    let mut s: String = name.chars().filter(|c| c.is_ascii_lowercase()).collect();
    while s.len() < 24 {
        s.push('a');
    }
    format!("did:plc:{}", &s[..24])
}

fn key_of(did: &str) -> (k256::ecdsa::SigningKey, String) {
    test_key(did.bytes().skip(8).fold(1u8, |a, b| a.wrapping_mul(31).wrapping_add(b)) % 200 + 1)
}

/// PLC operations: genesis on `born` (at `day`), then a move to each of `then`.
fn plc(l: &mut Loader<'_>, seq: &mut u64, did: &str, born: &str, then: &[&str]) {
    let mut prev: Option<String> = None;
    for (i, pds) in std::iter::once(born).chain(then.iter().copied()).enumerate() {
        *seq += 1;
        let cid = format!("bafy{}{i}", &did[8..]);
        l.apply(ExportOp {
            did: did.into(),
            cid: cid.clone(),
            created_at: format!("2025-02-{:02}T00:00:00.000Z", i + 1),
            seq: Some(*seq),
            nullified: false,
            prev: prev.replace(cid),
            state: OpState::Update { pds: Some(pds.into()), handle: None, signing_key: Some(key_of(did).1) },
        })
        .unwrap();
    }
}

/// What the resolver would have found: `handle` checked both ways.
fn resolved(store: &Store, did: &str, pds: &str, handle: &str, verified: bool) {
    let ident = IdentityRecord {
        pds: Some(pds.into()),
        handle: Some(handle.into()),
        resolved_at_ms: Some(1),
        checked_at_ms: 1,
        signing_key: Some(key_of(did).1),
        handle_check: Some(HandleCheck {
            handle: handle.into(),
            verified,
            method: verified.then(|| "https".into()),
            reason: (!verified).then(|| "other_did".into()),
            checked_at_ms: 1_760_000_000_000,
        }),
        ..IdentityRecord::default()
    };
    let mut b = store::Batch::default();
    b.put_identity(did, ident);
    b.mark(did);
    store::StoreWriter::commit(store, b).unwrap();
}

async fn fake_pds(describe: serde_json::Value) -> String {
    let app = axum::Router::new()
        .route(
            "/xrpc/com.atproto.server.describeServer",
            axum::routing::get(move || {
                let d = describe.clone();
                async move { axum::Json(d) }
            }),
        )
        .route("/xrpc/_health", axum::routing::get(|| async { axum::Json(json!({"version": "0.4.999"})) }))
        .route("/xrpc/com.atproto.sync.listRepos", axum::routing::get(|| async { axum::Json(json!({"repos": []})) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://localhost:{port}")
}

fn declaration(name: &str, hosts: &[&str], domains: &[&str]) -> Value {
    map(vec![
        ("$type", text("dev.instancemap.declaration")),
        ("name", text(name)),
        ("pdsHosts", Value::Array(hosts.iter().map(|h| text(h)).collect())),
        ("accountDomains", Value::Array(domains.iter().map(|d| text(d)).collect())),
        ("abuseContact", text("abuse@attacker.example")),
        ("moderationContact", text("mod@attacker.example")),
        ("labelers", Value::Array(vec![text(ATTACKER)])),
        ("createdAt", text("2026-11-26T00:00:00.000Z")),
    ])
}

fn declare(store: Store, seq: i64, operator: &str, record: Value) -> Store {
    let f = signed_commit_frame(
        seq,
        operator,
        "3mptbypluud2a",
        &[TestOp {
            action: "create",
            path: "dev.instancemap.declaration/self",
            record: Some(record),
            omit_block: false,
        }],
        Some(&key_of(operator).0),
    );
    ingest_frames(store, "replay", &[f])
}

fn instance_of(store: &Store, host: &str) -> map::InstanceRecord {
    map::instance_of_host(store, host).unwrap().unwrap_or_else(|| panic!("{host} has no instance"))
}

/// The takeover: a PDS advertising the victim's user domain (and an
/// unrelated instance's), naming its own DID, with migrated accounts that
/// keep verified handles under the victim's domain, and a signed
/// declaration "Victim Social (official)" claiming every host and both
/// domains with its own contacts. Before the rules, the two instances
/// merged into the attacker's, with its operator, contacts and labeler,
/// and a new id; every victim account's lookup named the attacker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pds_advertising_a_victims_domain_cannot_take_over_its_instance() {
    let v1 = fake_pds(json!({"did": "did:web:victim.social", "availableUserDomains": [".victim.social"]})).await;
    let v2 = fake_pds(json!({"did": "did:web:victim.social", "availableUserDomains": [".victim.social"]})).await;
    let other =
        fake_pds(json!({"availableUserDomains": [".other.social"], "contact": {"email": "abuse@other.social"}})).await;
    let evil = fake_pds(json!({"did": ATTACKER, "availableUserDomains": [".victim.social", ".other.social"],
        "contact": {"email": "abuse@attacker.example"}}))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let fetcher = Fetcher::new(true);
    // the victim's and the other instance's accounts, created on their hosts
    let victims: Vec<(String, &str, String)> = ["vaa", "vab", "vba", "vbb"]
        .iter()
        .enumerate()
        .map(|(i, n)| (did(n), if i < 2 { v1.as_str() } else { v2.as_str() }, format!("{n}.victim.social")))
        .collect();
    let others: Vec<(String, &str, String)> =
        ["oaa", "oab"].iter().map(|n| (did(n), other.as_str(), format!("{n}.other.social"))).collect();
    let mut seq = 0;
    {
        let mut l = Loader::new(&store).unwrap();
        for (d, h, _) in victims.iter().chain(&others) {
            plc(&mut l, &mut seq, d, h, &[]);
        }
        l.flush().unwrap();
    }
    for (d, h, handle) in victims.iter().chain(&others) {
        resolved(&store, d, h, handle, true);
    }
    for h in [&v1, &v2, &other] {
        hosts::crawl(&store, &fetcher, h).await.unwrap();
    }
    map::recompute(&store, &Default::default()).unwrap();
    let victim = instance_of(&store, &v1);
    assert_eq!(victim.hosts, {
        let mut h = vec![v1.clone(), v2.clone()];
        h.sort();
        h
    });
    assert_eq!(victim.name, "victim.social");
    let other_before = instance_of(&store, &other);
    assert_eq!(other_before.name, "other.social");

    // the attacker arrives: its host, its own account, accounts that
    // migrated from the victim keeping their verified handles, accounts
    // claiming handles under the victim's domain that do not verify
    let migrated = [did("mva"), did("mvb"), did("mvc")];
    let claimers = [did("mca"), did("mcb")];
    {
        let mut l = Loader::new(&store).unwrap();
        plc(&mut l, &mut seq, ATTACKER, &evil, &[]);
        for d in &migrated {
            plc(&mut l, &mut seq, d, &v1, &[&evil]);
        }
        for d in &claimers {
            plc(&mut l, &mut seq, d, &evil, &[]);
        }
        l.flush().unwrap();
    }
    resolved(&store, ATTACKER, &evil, "attacker.example.net", true);
    for (i, d) in migrated.iter().enumerate() {
        resolved(&store, d, &evil, &format!("moved{i}.victim.social"), true);
    }
    for (i, d) in claimers.iter().enumerate() {
        resolved(&store, d, &evil, &format!("fake{i}.victim.social"), false);
    }
    hosts::crawl(&store, &fetcher, &evil).await.unwrap();
    let store = declare(
        store,
        1,
        ATTACKER,
        declaration("Victim Social (official)", &[&v1, &v2, &other, &evil], &[".victim.social", ".other.social"]),
    );
    map::recompute(&store, &Default::default()).unwrap();

    // the victim's instance: same hosts, name and id; no operator
    let after = instance_of(&store, &v1);
    assert_eq!((after.id.as_str(), after.name.as_str()), (victim.id.as_str(), "victim.social"));
    assert_eq!(after.hosts, victim.hosts, "the attacker's host did not join");
    assert_eq!(after.operator, None);
    assert!(after.governance.is_none());
    assert_eq!(after.claimed_by, vec![ATTACKER.to_owned()], "the claim is shown, refused");
    // the unrelated instance too
    let other_after = instance_of(&store, &other);
    assert_eq!((other_after.id.as_str(), other_after.hosts.clone()), (other_before.id.as_str(), vec![other.clone()]));
    assert_eq!(other_after.operator, None);
    // the attacker's host stands alone, its advertised domains refused with why
    let own = instance_of(&store, &evil);
    assert_eq!(own.hosts, vec![evil.clone()]);
    assert!(own.user_domains.is_empty(), "{:?}", own.user_domains);
    let refused: Vec<&str> = own.unproven_domains.iter().map(|(_, d, _)| d.as_str()).collect();
    assert_eq!(refused, ["other.social", "victim.social"]);
    assert!(own.unproven_domains.iter().all(|(_, _, why)| why.contains("0 account(s) created on the host")));
    // its declaration proves its own host and nothing else
    let st = map::declaration_status(&store, ATTACKER).unwrap().unwrap();
    assert_eq!(st.verified_hosts, vec![evil.clone()]);
    assert!(st.verified_domains.is_empty(), "{:?}", st.verified_domains);
    assert_eq!(st.unverified.len(), 5, "{:?}", st.unverified);
    // and its instance is not called "Victim Social (official)": a declared
    // name reading as another instance's domain is refused, with why
    assert_eq!(own.operator.as_deref(), Some(ATTACKER));
    assert_ne!(own.name, "Victim Social (official)");
    let (name, why) = own.name_refused.clone().expect("the imitating name is refused");
    assert_eq!(name, "Victim Social (official)");
    assert!(why.contains("victim.social"), "{why}");
    // every victim account's lookup names the victim's hosting, never the attacker
    let state = instancemap::api::ApiState::new(store.clone(), true, None, Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(instancemap::api::serve(listener, state, tokio_util::sync::CancellationToken::new()));
    for (d, h, _) in &victims {
        let (s, body) = http_get(addr, &format!("/xrpc/dev.instancemap.lookup?subject={d}")).await.unwrap();
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["host"], *h);
        assert_eq!(v["instance"]["id"], victim.id.as_str());
        assert!(!body.contains(ATTACKER) && !body.contains("attacker.example"), "{d}: {body}");
    }
    // the attacker's own account: its operator is named, the refused name
    // is not repeated as the operator's
    let (s, body) = http_get(addr, &format!("/xrpc/dev.instancemap.lookup?subject={ATTACKER}")).await.unwrap();
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(v["instance"]["name"], "Victim Social (official)");
    let op = v["entities"].as_array().unwrap().iter().find(|e| e["roles"][0] == "operator").expect("operator");
    assert_eq!((op["did"].as_str(), op["name"].is_null()), (Some(ATTACKER), true), "{op}");
    assert_eq!(op["declaredNameRefused"]["name"], "Victim Social (official)");
}

fn host(store: &Store, endpoint: &str, describe: Describe) {
    let rec = HostRecord {
        state: "online".into(),
        describe: Some(describe),
        last_ok_ms: Some(1),
        ..hosts::get(store, endpoint).unwrap().unwrap_or_default()
    };
    hosts::put(store, endpoint, &rec).unwrap();
}

const A_HOST: &str = "https://amanita.us-east.host.bsky.network";
const B_HOST: &str = "https://boletus.us-west.host.bsky.network";
const STRANGER: &str = "https://pds.stranger.example.org";

/// Bluesky's hosts come out as one instance named as users know it; a
/// stranger's PDS advertising `.bsky.social` (with accounts that moved to
/// it from Bluesky, keeping their handles) neither joins nor renames it,
/// and its declaration naming itself Bluesky speaks for its own host only.
#[test]
fn a_strangers_pds_advertising_bsky_social_does_not_join_or_rename_bluesky() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stranger_op = did("stranger");
    let bsky_users: Vec<(String, &str)> = ["baa", "bab", "bba", "bbb"]
        .iter()
        .enumerate()
        .map(|(i, n)| (did(n), if i < 2 { A_HOST } else { B_HOST }))
        .collect();
    let moved = [did("mover"), did("movers"), did("movest")];
    let mut seq = 0;
    {
        let mut l = Loader::new(&store).unwrap();
        for (d, h) in &bsky_users {
            plc(&mut l, &mut seq, d, h, &[]);
        }
        for d in &moved {
            plc(&mut l, &mut seq, d, A_HOST, &[STRANGER]);
        }
        plc(&mut l, &mut seq, &stranger_op, STRANGER, &[]);
        l.flush().unwrap();
    }
    for (i, (d, h)) in bsky_users.iter().enumerate() {
        resolved(&store, d, h, &format!("user{i}.bsky.social"), true);
    }
    for (i, d) in moved.iter().enumerate() {
        resolved(&store, d, STRANGER, &format!("moved{i}.bsky.social"), true);
    }
    let bsky = || Describe { available_user_domains: vec![".bsky.social".into()], ..Describe::default() };
    host(&store, A_HOST, bsky());
    host(&store, B_HOST, bsky());
    map::recompute(&store, &Default::default()).unwrap();
    let before = instance_of(&store, A_HOST);
    assert_eq!(before.name, "bsky.social");
    assert_eq!(before.hosts, vec![A_HOST.to_owned(), B_HOST.to_owned()]);
    assert!(
        before.domain_proofs.iter().all(|p| p.accounts == 2 && p.examples.len() == 2),
        "{:?}",
        before.domain_proofs
    );

    host(
        &store,
        STRANGER,
        Describe {
            did: Some(stranger_op.clone()),
            available_user_domains: vec![".bsky.social".into()],
            ..Describe::default()
        },
    );
    let store = declare(
        store,
        1,
        &stranger_op,
        declaration("Bluesky", &[A_HOST, B_HOST, STRANGER, "https://bsky.social"], &[".bsky.social"]),
    );
    map::recompute(&store, &Default::default()).unwrap();
    let after = instance_of(&store, A_HOST);
    assert_eq!((after.id.as_str(), after.name.as_str()), (before.id.as_str(), "bsky.social"));
    assert_eq!(after.hosts, before.hosts);
    assert_eq!(after.operator, None);
    let s = instance_of(&store, STRANGER);
    assert_eq!(s.hosts, vec![STRANGER.to_owned()]);
    // "Bluesky" reads as no domain of the map, so it stands beside its
    // operator's DID and its own host; once the map's operator pins the
    // name for Bluesky's hosts, the stranger's copy of it is refused
    assert_eq!(s.name, "Bluesky");
    let pins = instancemap::cluster::overrides::Overrides::parse(&format!(
        "[[pin]]\nname = \"Bluesky\"\nhosts = [\"{A_HOST}\", \"{B_HOST}\"]\n"
    ))
    .unwrap();
    map::recompute(&store, &pins).unwrap();
    assert_eq!(instance_of(&store, A_HOST).name, "Bluesky");
    let s = instance_of(&store, STRANGER);
    assert_eq!(s.name, "example.org", "the name its own domain gives");
    assert!(
        s.name_refused.as_ref().is_some_and(|(n, why)| n == "Bluesky" && why.contains("Bluesky")),
        "{:?}",
        s.name_refused
    );
    assert!(s.unproven_domains.iter().any(|(_, d, _)| d == "bsky.social"), "migrated accounts prove nothing");
    let st = map::declaration_status(&store, &stranger_op).unwrap().unwrap();
    assert_eq!(st.verified_hosts, vec![STRANGER.to_owned()]);
    assert!(st.verified_domains.is_empty());
}

/// Two operators whose verified declarations meet in one instance: a
/// conflict shown with both sides, no operator, no declared name (whatever
/// the order of their DIDs).
#[test]
fn two_verified_declarations_in_one_instance_are_a_conflict_with_no_operator() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (one, two) = ("https://pds.one.shared-coop.org", "https://pds.two.shared-coop.org");
    let (a, z) = (did("aoperator"), did("zoperator"));
    let mut seq = 0;
    {
        let mut l = Loader::new(&store).unwrap();
        plc(&mut l, &mut seq, &a, one, &[]);
        plc(&mut l, &mut seq, &z, two, &[]);
        l.flush().unwrap();
    }
    host(&store, one, Describe { did: Some(a.clone()), ..Describe::default() });
    host(&store, two, Describe { did: Some(z.clone()), ..Describe::default() });
    let store = declare(store, 1, &a, declaration("A's Co-op", &[one], &[]));
    let store = declare(store, 2, &z, declaration("Z's Co-op", &[two], &[]));
    map::recompute(&store, &Default::default()).unwrap();
    let inst = instance_of(&store, one);
    assert_eq!(inst.hosts, vec![one.to_owned(), two.to_owned()], "one registrable domain");
    assert_eq!(inst.operator, None);
    assert!(inst.governance.is_none());
    assert_eq!(inst.conflict, {
        let mut c = vec![a.clone(), z.clone()];
        c.sort();
        c
    });
    assert_eq!(inst.name, "shared-coop.org");
    // both declarations verified their own host: each is shown
    for op in [&a, &z] {
        assert_eq!(map::declaration_status(&store, op).unwrap().unwrap().verified_hosts.len(), 1);
    }
}

/// A declaration counts only once its signature is known to be valid: one
/// signed by a key that is not the operator's never does.
#[test]
fn a_declaration_signed_by_another_key_does_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = did("forged");
    let h = "https://pds.forged-coop.org";
    let mut seq = 0;
    {
        let mut l = Loader::new(&store).unwrap();
        plc(&mut l, &mut seq, &op, h, &[]);
        l.flush().unwrap();
    }
    host(&store, h, Describe { did: Some(op.clone()), ..Describe::default() });
    let f = signed_commit_frame(
        1,
        &op,
        "3mptbypluud2a",
        &[TestOp {
            action: "create",
            path: "dev.instancemap.declaration/self",
            record: Some(declaration("Forged", &[h], &[])),
            omit_block: false,
        }],
        Some(&test_key(250).0),
    );
    let store = ingest_frames(store, "replay", &[f]);
    map::recompute(&store, &Default::default()).unwrap();
    assert_eq!(instance_of(&store, h).operator, None);
    let st = map::declaration_status(&store, &op).unwrap().unwrap();
    assert!(st.verified_hosts.is_empty());
    assert!(st.unverified[0].1.contains("signature"), "{:?}", st.unverified);
}

/// Through the verify pool, as `run` and `replay` check commits: a
/// declaration whose signature verified on arrival counts; one that arrived
/// before its operator's key was known (no_key) counts once the key is, and
/// not before. (The pool used to consume what the signature covers, so the
/// record was kept without it and never counted.)
#[test]
fn declarations_checked_by_the_verify_pool_count_once_their_key_is_known() {
    use instancemap::app::{settle, Checker};
    use instancemap::event;
    use instancemap::ingest::Ingest;
    let replay = |store: Store, f: &[u8]| {
        let checker = Checker::new(true, &store);
        let mut ingest = Ingest::new(store, "replay").unwrap();
        ingest.apply(settle(checker.queue(event::from_frame_bytes(f)))).unwrap();
        ingest.finish().unwrap()
    };
    let frame_of = |op: &str, h: &str| {
        signed_commit_frame(
            1,
            op,
            "3mptbypluud2a",
            &[TestOp {
                action: "create",
                path: "dev.instancemap.declaration/self",
                record: Some(declaration("Checked Co-op", &[h], &[])),
                omit_block: false,
            }],
            Some(&key_of(op).0),
        )
    };
    // known key: valid on arrival
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (op, h) = (did("checked"), "https://pds.checked-coop.org");
    {
        let mut l = Loader::new(&store).unwrap();
        plc(&mut l, &mut 0, &op, h, &[]);
        l.flush().unwrap();
    }
    host(&store, h, Describe { did: Some(op.clone()), ..Describe::default() });
    let store = replay(store, &frame_of(&op, h));
    map::recompute(&store, &Default::default()).unwrap();
    assert_eq!(instance_of(&store, h).operator.as_deref(), Some(op.as_str()));

    // unknown key on arrival: kept, not counted; counted once the key is known
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (op, h) = (did("latekey"), "https://pds.latekey-coop.org");
    host(&store, h, Describe { did: Some(op.clone()), ..Describe::default() });
    let store = replay(store, &frame_of(&op, h));
    assert_eq!(stats(&store).signatures.get("no_key"), Some(&1));
    map::recompute(&store, &Default::default()).unwrap();
    let st = map::declaration_status(&store, &op).unwrap().unwrap();
    assert!(st.verified_hosts.is_empty());
    assert_eq!(st.unverified, vec![(h.to_owned(), st.unverified[0].1.clone())], "the claim, normalised, with why");
    {
        let mut l = Loader::new(&store).unwrap();
        plc(&mut l, &mut 0, &op, h, &[]);
        l.flush().unwrap();
    }
    let mut m = instancemap::cluster::map::Maintainer::new(store.clone(), Default::default());
    m.run_until_idle().unwrap();
    assert_eq!(instance_of(&store, h).operator.as_deref(), Some(op.as_str()), "the maintainer took the key in");
}
