//! Activity and openness per instance: distinct accounts active on the
//! firehose in the last 1 / 7 / 30 days, accounts created per day from
//! PLC genesis operations, open registration from describeServer, and the
//! sign-up spike signal; the maintainer keeps them as the recompute does.

mod common;

use ciborium::Value;
use common::*;
use instancemap::cluster::{activity, maintain::Maintainer, map};
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::Store;

const HOST: &str = "https://pds.open.example";
const DAY: i64 = 86_400_000;

fn did(i: usize) -> String {
    format!("did:plc:{:a>24}", format!("{}", i).chars().map(|c| (b'a' + (c as u8 - b'0')) as char).collect::<String>())
}

fn rfc3339(ms: i64) -> String {
    instancemap::clock::rfc3339_ms(ms).unwrap()
}

fn account_event(seq: i64, did: &str, at_ms: i64) -> Vec<u8> {
    frame(
        1,
        Some("#account"),
        &map(vec![
            ("seq", Value::Integer(seq.into())),
            ("did", text(did)),
            ("time", text(&rfc3339(at_ms))),
            ("active", Value::Bool(true)),
        ]),
    )
}

#[test]
fn an_instance_shows_who_is_active_who_joined_and_whether_it_is_open() {
    let now = instancemap::clock::now_ms();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // 3 accounts created 40, 20 and 1 days ago, and 30 created today (a spike)
    let created: Vec<(String, i64)> = [40, 20, 1]
        .iter()
        .map(|d| now - d * DAY)
        .chain((0..30).map(|_| now))
        .enumerate()
        .map(|(i, at)| (did(i), at))
        .collect();
    {
        let mut l = Loader::new(&store).unwrap();
        for (i, (d, at)) in created.iter().enumerate() {
            l.apply(ExportOp {
                did: d.clone(),
                cid: format!("bafy{i}"),
                created_at: rfc3339(*at),
                seq: Some(i as u64 + 1),
                nullified: false,
                prev: None,
                state: OpState::Update { pds: Some(HOST.into()), handle: None, signing_key: None },
            })
            .unwrap();
        }
        l.flush().unwrap();
    }
    let rec = HostRecord {
        state: "online".into(),
        describe: Some(Describe { invite_code_required: Some(false), ..Describe::default() }),
        ..HostRecord::default()
    };
    hosts::put(&store, HOST, &rec).unwrap();
    // on the firehose: #0 today, #1 five days ago, #2 twenty days ago
    let frames = vec![
        account_event(1, &created[0].0, now),
        account_event(2, &created[1].0, now - 5 * DAY),
        account_event(3, &created[2].0, now - 20 * DAY),
    ];
    let store = ingest_frames(store, "wss://relay.example", &frames);
    map::recompute(&store, &Default::default()).unwrap();
    let inst = map::instance_of_host(&store, HOST).unwrap().unwrap();
    let a = activity::of(&store, &inst, now).unwrap();
    assert_eq!((a.active1d, a.active7d, a.active30d), (1, 2, 3), "{a:?}");
    assert_eq!(a.created_per_day.values().sum::<i64>(), 32, "the last 30 days: {:?}", a.created_per_day);
    assert!(a.open_registration && a.open_hosts == 1);
    let spike = a.signup_spike.expect("a latest day");
    assert_eq!((spike.created, spike.baseline, spike.spike), (30, 0, true));

    // the maintainer follows: #2 active today moves it into the last day,
    // and the map equals a recompute's
    let mut m = Maintainer::new(store.clone(), Default::default());
    let store = ingest_frames(store, "wss://relay.example", &[account_event(4, &created[2].0, now)]);
    m.run_until_idle().unwrap();
    let a = activity::of(&store, &inst, now).unwrap();
    assert_eq!((a.active1d, a.active7d, a.active30d), (2, 3, 3), "{a:?}");
    let before = format!("{:?}", activity::of(&store, &inst, now).unwrap());
    let s = map::recompute(&store, &Default::default()).unwrap();
    assert_eq!(s.changed, 0, "the maintainer missed an activity change");
    assert_eq!(format!("{:?}", activity::of(&store, &inst, now).unwrap()), before);
}
