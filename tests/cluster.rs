//! The full recompute over a small hand-built network in a real store.

mod common;

use ciborium::Value;
use common::*;
use instancemap::cluster::map;
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::Store;

/// Each DID's signing key (seeded by a letter of the DID).
fn key_of(did: &str) -> (k256::ecdsa::SigningKey, String) {
    test_key(did.as_bytes()[8])
}

fn plc_op(seq: u64, did: &str, pds: Option<&str>, tombstone: bool) -> ExportOp {
    ExportOp {
        did: did.into(),
        cid: format!("bafy{seq}"),
        created_at: "2024-01-01T00:00:00.000Z".into(),
        seq: Some(seq),
        nullified: false,
        prev: None,
        state: if tombstone {
            OpState::Tombstone
        } else {
            OpState::Update { pds: pds.map(str::to_owned), handle: None, signing_key: Some(key_of(did).1) }
        },
    }
}

#[test]
fn recluster_assigns_every_account_an_instance_or_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let dids = [
        "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
        "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb",
        "did:plc:cccccccccccccccccccccccc",
        "did:plc:dddddddddddddddddddddddd",
        "did:plc:eeeeeeeeeeeeeeeeeeeeeeee",
    ];
    {
        let mut l = Loader::new(&store).unwrap();
        l.apply(plc_op(1, dids[0], Some("https://a.host.bsky.network"), false)).unwrap();
        l.apply(plc_op(2, dids[1], Some("https://b.host.bsky.network"), false)).unwrap();
        l.apply(plc_op(3, dids[2], Some("https://pds.example.com"), false)).unwrap();
        l.apply(plc_op(4, dids[3], Some("https://pds.example.com"), false)).unwrap();
        l.apply(plc_op(5, dids[3], None, true)).unwrap();
        l.apply(plc_op(6, dids[4], None, false)).unwrap();
        l.flush().unwrap();
    }
    for h in ["https://a.host.bsky.network", "https://b.host.bsky.network"] {
        let rec = HostRecord {
            state: "online".into(),
            describe: Some(Describe { available_user_domains: vec![".bsky.social".into()], ..Describe::default() }),
            ..hosts::get(&store, h).unwrap().unwrap()
        };
        hosts::put(&store, h, &rec).unwrap();
    }
    // the first account is active on the firehose
    let account = frame(
        1,
        Some("#account"),
        &map(vec![
            ("seq", Value::Integer(1.into())),
            ("did", text(dids[0])),
            ("time", text("2026-07-04T14:38:07.517Z")),
            ("active", Value::Bool(true)),
        ]),
    );
    let store = ingest_frames(store, "replay", &[account]);

    let s = map::recompute(&store, &Default::default()).unwrap();
    assert_eq!((s.instances, s.hosts, s.accounts), (2, 3, 5));
    assert_eq!(s.unassigned.get("deleted"), Some(&1));
    assert_eq!(s.unassigned.get("no_pds"), Some(&1));
    let list = map::instances(&store).unwrap();
    // the two hosts share their registrable domain; the user domain they
    // advertise links nothing until accounts created on them prove it
    assert_eq!(list[0].name, "bsky.network");
    assert_eq!(list[0].hosts.len(), 2);
    assert_eq!(list[0].members.get("registered"), Some(&2));
    assert_eq!(list[0].members.get("active"), Some(&1));
    assert_eq!(list[1].name, "example.com");
    assert_eq!(list[1].members.get("registered"), Some(&1));
    assert!(list[0].evidence.iter().any(|e| e.1 == "registrable_domain" && e.2 == "bsky.network"));
    assert!(!list[0].evidence.iter().any(|e| e.1 == "user_domain"));
    assert_eq!(list[0].unproven_domains.len(), 2, "{:?}", list[0].unproven_domains);
    assert!(list[0].unproven_domains.iter().all(|(_, d, why)| d == "bsky.social" && why.contains("not proven")));

    let first = map::instance_of_account(&store, dids[0]).unwrap().unwrap();
    assert_eq!(first.id, list[0].id);
    assert_eq!(map::instance_of_account(&store, dids[3]).unwrap().unwrap_err(), "deleted");

    // a second recompute gives the same map
    map::recompute(&store, &Default::default()).unwrap();
    let again = map::instances(&store).unwrap();
    let ids = |l: &[map::InstanceRecord]| l.iter().map(|i| (i.id.clone(), i.hosts.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&list));
}

#[test]
fn declarations_count_only_for_what_the_operator_controls() {
    use instancemap::identity::handle::HandleCheck;
    use instancemap::identity::resolve::IdentityRecord;
    let op = "did:plc:oooooooooooooooooooooooo";
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    {
        let mut l = Loader::new(&store).unwrap();
        l.apply(plc_op(1, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", Some("https://pds.one-coop.org"), false)).unwrap();
        l.apply(plc_op(2, "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", Some("https://pds.two-coop.org"), false)).unwrap();
        l.apply(plc_op(3, "did:plc:cccccccccccccccccccccccc", Some("https://pds.stranger.org"), false)).unwrap();
        l.apply(plc_op(4, op, Some("https://pds.one-coop.org"), false)).unwrap();
        l.flush().unwrap();
    }
    let describe = |did: Option<&str>| Describe { did: did.map(str::to_owned), ..Describe::default() };
    for (h, did) in [
        ("https://pds.one-coop.org", Some(op)), // names the operator
        ("https://pds.two-coop.org", None),     // under the operator's apex handle's domain
        ("https://pds.stranger.org", Some("did:web:stranger.org")),
    ] {
        let rec = HostRecord {
            state: "online".into(),
            describe: Some(describe(did)),
            ..hosts::get(&store, h).unwrap().unwrap()
        };
        hosts::put(&store, h, &rec).unwrap();
    }
    // the operator's verified handle: the domain itself (an apex handle
    // proves control of the domain; a handle under it would not)
    let ident = IdentityRecord {
        handle: Some("two-coop.org".into()),
        resolved_at_ms: Some(1),
        handle_check: Some(HandleCheck {
            handle: "two-coop.org".into(),
            verified: true,
            method: Some("dns".into()),
            reason: None,
            checked_at_ms: 1,
        }),
        ..IdentityRecord::default()
    };
    let mut b = instancemap::store::Batch::default();
    b.put_identity(op, ident);
    instancemap::store::StoreWriter::commit(&store, b).unwrap();
    let declaration = map(vec![
        ("$type", text("dev.instancemap.declaration")),
        ("name", text("Example Co-op")),
        (
            "pdsHosts",
            Value::Array(vec![
                text("https://pds.one-coop.org"),
                text("https://pds.two-coop.org/"),
                text("https://pds.stranger.org"),
            ]),
        ),
        ("accountDomains", Value::Array(vec![text(".two-coop.org"), text(".elsewhere.org")])),
        ("createdAt", text("2026-11-26T00:00:00.000Z")),
    ]);
    let f = signed_commit_frame(
        9,
        op,
        "3mptbypluud2a",
        &[TestOp {
            action: "create",
            path: "dev.instancemap.declaration/self",
            record: Some(declaration),
            omit_block: false,
        }],
        Some(&key_of(op).0),
    );
    // memberships: one from an account on a verified host, one from an
    // account on the stranger's host (the declaration does not cover it)
    let member = |seq: i64, did: &str| {
        signed_commit_frame(
            seq,
            did,
            "3mptbypluud2a",
            &[TestOp {
                action: "create",
                path: "dev.instancemap.membership/self",
                record: Some(map(vec![("operator", text(op)), ("createdAt", text("2026-11-26T00:00:00.000Z"))])),
                omit_block: false,
            }],
            Some(&key_of(did).0),
        )
    };
    let store = ingest_frames(
        store,
        "replay",
        &[f, member(10, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"), member(11, "did:plc:cccccccccccccccccccccccc")],
    );

    let s = map::recompute(&store, &Default::default()).unwrap();
    assert_eq!((s.declarations, s.verified_declarations), (1, 1));
    assert_eq!((s.memberships, s.verified_memberships), (2, 1), "two-sided: only the covered member counts");
    let list = map::instances(&store).unwrap();
    let coop = list.iter().find(|i| i.name == "Example Co-op").expect("declared instance");
    assert_eq!(coop.hosts, vec!["https://pds.one-coop.org", "https://pds.two-coop.org"]);
    assert!(coop.evidence.iter().any(|e| e.1 == "declaration" && e.2 == op));
    assert_eq!(coop.operator.as_deref(), Some(op));
    assert_eq!(coop.members.get("declared_members"), Some(&1));
    assert_eq!(coop.governance.as_ref().map(|g| g.name.as_str()), Some("Example Co-op"));
    let stranger = map::instance_of_account(&store, "did:plc:cccccccccccccccccccccccc").unwrap().unwrap();
    assert_ne!(stranger.id, coop.id, "an unverified claim moves no account");

    let st = map::declaration_status(&store, op).unwrap().unwrap();
    assert_eq!(st.verified_hosts.len(), 2);
    assert_eq!(st.verified_domains, vec!["two-coop.org"]);
    let unverified: Vec<&str> = st.unverified.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(unverified, vec!["https://pds.stranger.org", ".elsewhere.org"]);
}
