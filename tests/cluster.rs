//! The full recompute over a small hand-built network in a real store.

mod common;

use ciborium::Value;
use common::*;
use instancemap::cluster::map;
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::Store;

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
            OpState::Update { pds: pds.map(str::to_owned), handle: None, signing_key: None }
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

    let s = map::recompute(&store).unwrap();
    assert_eq!((s.instances, s.hosts, s.accounts), (2, 3, 5));
    assert_eq!(s.unassigned.get("deleted"), Some(&1));
    assert_eq!(s.unassigned.get("no_pds"), Some(&1));
    let list = map::instances(&store).unwrap();
    assert_eq!(list[0].name, "bsky.social");
    assert_eq!(list[0].hosts.len(), 2);
    assert_eq!(list[0].members.get("registered"), Some(&2));
    assert_eq!(list[0].members.get("active"), Some(&1));
    assert_eq!(list[1].name, "example.com");
    assert_eq!(list[1].members.get("registered"), Some(&1));
    assert!(list[0].evidence.iter().any(|e| e.1 == "user_domain" && e.2 == "bsky.social"));

    let first = map::instance_of_account(&store, dids[0]).unwrap().unwrap();
    assert_eq!(first.id, list[0].id);
    assert_eq!(map::instance_of_account(&store, dids[3]).unwrap().unwrap_err(), "deleted");

    // a second recompute gives the same map
    map::recompute(&store).unwrap();
    let again = map::instances(&store).unwrap();
    let ids = |l: &[map::InstanceRecord]| l.iter().map(|i| (i.id.clone(), i.hosts.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&list));
}
