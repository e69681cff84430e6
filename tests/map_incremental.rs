//! The incremental map equals the full recompute: random sequences of what
//! changes an account's place (PLC operations and tombstones, resolutions,
//! firehose statuses, host crawls changing user domains or naming an
//! operator, declarations and memberships) go into two stores through the
//! same writers; one runs the maintainer as it goes, the other only
//! `recompute` at the end. Every derived family must be equal, history
//! included. Plus: ids stay put when unrelated hosts come and go.

mod common;

use std::collections::BTreeMap;

use ciborium::Value;
use common::*;
use instancemap::cluster::map::{self, Maintainer};
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::identity::handle::HandleCheck;
use instancemap::identity::resolve::IdentityRecord;
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::{self, Store};
use proptest::prelude::*;

const DIDS: [&str; 6] = [
    "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
    "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb",
    "did:plc:cccccccccccccccccccccccc",
    "did:plc:dddddddddddddddddddddddd",
    "did:plc:eeeeeeeeeeeeeeeeeeeeeeee",
    "did:plc:ffffffffffffffffffffffff",
];
const HOSTS: [&str; 5] = [
    "https://a.host.bsky.network",
    "https://b.host.bsky.network",
    "https://pds.example.com",
    "https://pds2.example.com",
    "http://localhost:2583",
];
const DOMAINS: [&str; 3] = [".bsky.social", ".example.social", ".other.social"];

#[derive(Debug, Clone)]
enum Change {
    /// A PLC operation moving the DID to a host (or tombstoning it).
    Plc { did: usize, host: Option<usize>, tombstone: bool },
    /// A resolution of the DID naming a host (later than every PLC op).
    Resolve { did: usize, host: usize, handle: Option<usize> },
    /// `#account` on the firehose.
    Status { did: usize, active: bool },
    /// A crawl: the host's advertised domains and describeServer DID.
    Crawl { host: usize, domains: Vec<usize>, names: Option<usize> },
    /// A declaration by the DID claiming hosts.
    Declare { did: usize, hosts: Vec<usize> },
    /// A membership of the DID pointing at an operator.
    Member { did: usize, operator: usize },
    /// The maintainer takes what is marked (incremental store only).
    Step,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0..DIDS.len(), proptest::option::weighted(0.85, 0..HOSTS.len()), proptest::bool::weighted(0.1))
            .prop_map(|(did, host, tombstone)| Change::Plc { did, host, tombstone }),
        2 => (0..DIDS.len(), 0..HOSTS.len(), proptest::option::of(0..DOMAINS.len()))
            .prop_map(|(did, host, handle)| Change::Resolve { did, host, handle }),
        2 => (0..DIDS.len(), any::<bool>()).prop_map(|(did, active)| Change::Status { did, active }),
        2 => (0..HOSTS.len(), proptest::collection::vec(0..DOMAINS.len(), 0..2), proptest::option::of(0..DIDS.len()))
            .prop_map(|(host, domains, names)| Change::Crawl { host, domains, names }),
        1 => (0..DIDS.len(), proptest::collection::vec(0..HOSTS.len(), 1..3))
            .prop_map(|(did, hosts)| Change::Declare { did, hosts }),
        1 => (0..DIDS.len(), 0..DIDS.len()).prop_map(|(did, operator)| Change::Member { did, operator }),
        3 => Just(Change::Step),
    ]
}

/// Applies changes through the project's writers.
struct Net {
    store: Option<Store>,
    seq: u64,
    fseq: i64,
}

impl Net {
    fn new(dir: &std::path::Path) -> Net {
        Net { store: Some(Store::open(dir).unwrap()), seq: 0, fseq: 0 }
    }
    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }
    /// Time of the n-th change: a day apart, so history has days.
    fn at(n: u64) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(1_700_000_000 + n as i64 * 86_400).unwrap();
        t.format(&time::format_description::well_known::Rfc3339).unwrap()
    }
    fn frames(&mut self, f: Vec<u8>) {
        let store = self.store.take().unwrap();
        self.store = Some(ingest_frames(store, "replay", &[f]));
    }
    fn apply(&mut self, c: &Change) {
        self.seq += 1;
        let n = self.seq;
        match c {
            Change::Plc { did, host, tombstone } => {
                let mut l = Loader::new(self.store()).unwrap();
                l.apply(ExportOp {
                    did: DIDS[*did].into(),
                    cid: format!("bafyop{n}"),
                    created_at: Self::at(n),
                    seq: Some(n),
                    nullified: false,
                    prev: None,
                    state: if *tombstone {
                        OpState::Tombstone
                    } else {
                        OpState::Update {
                            pds: host.map(|h| HOSTS[h].to_owned()),
                            handle: None,
                            signing_key: Some(test_key(*did as u8 + 1).1),
                        }
                    },
                })
                .unwrap();
                l.flush().unwrap();
            }
            Change::Resolve { did, host, handle } => {
                let mut rec: IdentityRecord =
                    store::StoreReader::identity(self.store(), DIDS[*did]).unwrap().unwrap_or_default();
                // resolutions come after every PLC op so far (later times)
                let ms = (1_700_000_000 + n as i64 * 86_400) * 1000 + 1;
                let at = Self::at(n);
                instancemap::plc::load::note_move(
                    &mut rec.moves,
                    &at,
                    rec.pds.as_ref(),
                    Some(&HOSTS[*host].to_owned()),
                );
                rec.pds = Some(HOSTS[*host].into());
                rec.resolved_at_ms = Some(ms);
                rec.first_resolved_ms = rec.first_resolved_ms.or(Some(ms));
                rec.checked_at_ms = ms;
                rec.handle_check = handle.map(|d| {
                    let h = format!("u{did}{}", DOMAINS[d]);
                    HandleCheck {
                        handle: h,
                        verified: true,
                        method: Some("dns".into()),
                        reason: None,
                        checked_at_ms: ms,
                    }
                });
                let mut b = store::Batch::default();
                b.put_identity(DIDS[*did], rec);
                b.mark(DIDS[*did]);
                store::StoreWriter::commit(self.store(), b).unwrap();
            }
            Change::Status { did, active } => {
                self.fseq += 1;
                let mut body = vec![
                    ("seq", Value::Integer(self.fseq.into())),
                    ("did", text(DIDS[*did])),
                    ("time", text("2026-07-04T14:38:07.517Z")),
                    ("active", Value::Bool(*active)),
                ];
                if !active {
                    body.push(("status", text("deactivated")));
                }
                let f = frame(1, Some("#account"), &map(body));
                self.frames(f);
            }
            Change::Crawl { host, domains, names } => {
                let h = HOSTS[*host];
                let rec = HostRecord {
                    state: "online".into(),
                    first_seen_ms: 1,
                    last_ok_ms: Some(1),
                    describe: Some(Describe {
                        did: names.map(|d| DIDS[d].to_owned()),
                        available_user_domains: domains.iter().map(|d| DOMAINS[*d].to_owned()).collect(),
                        ..Describe::default()
                    }),
                    ..HostRecord::default()
                };
                hosts::put(self.store(), h, &rec).unwrap();
            }
            Change::Declare { did, hosts } => {
                self.fseq += 1;
                let record = map(vec![
                    ("$type", text("dev.instancemap.declaration")),
                    ("name", text(&format!("Operator {did}"))),
                    ("pdsHosts", Value::Array(hosts.iter().map(|h| text(HOSTS[*h])).collect())),
                    ("createdAt", text("2026-11-26T00:00:00.000Z")),
                ]);
                // signed with the DID's key (known once a PLC op named it)
                let f = signed_commit_frame(
                    self.fseq,
                    DIDS[*did],
                    "3mptbypluud2a",
                    &[TestOp {
                        action: "update",
                        path: "dev.instancemap.declaration/self",
                        record: Some(record),
                        omit_block: false,
                    }],
                    Some(&test_key(*did as u8 + 1).0),
                );
                self.frames(f);
            }
            Change::Member { did, operator } => {
                self.fseq += 1;
                let record = map(vec![
                    ("$type", text("dev.instancemap.membership")),
                    ("operator", text(DIDS[*operator])),
                    ("createdAt", text("2026-11-26T00:00:00.000Z")),
                ]);
                let f = signed_commit_frame(
                    self.fseq,
                    DIDS[*did],
                    "3mptbypluud2a",
                    &[TestOp {
                        action: "update",
                        path: "dev.instancemap.membership/self",
                        record: Some(record),
                        omit_block: false,
                    }],
                    Some(&test_key(*did as u8 + 1).0),
                );
                self.frames(f);
            }
            Change::Step => {}
        }
    }
}

/// Everything the map derives, readable, normalised where the time of
/// computing (not of the data) shows.
fn dump(store: &Store) -> BTreeMap<&'static str, Vec<String>> {
    use instancemap::store::map::{Fam, MapReader, RawMap};
    let raw = |fam: Fam| {
        let mut rows = Vec::new();
        store
            .map_scan(fam, &[], &mut |k, v| {
                let v = match std::str::from_utf8(v) {
                    Ok(t) => t.to_owned(),
                    Err(_) => format!("{v:?}"),
                };
                rows.push(format!("{} = {v}", String::from_utf8_lossy(k)));
                true
            })
            .unwrap();
        rows
    };
    let mut out = BTreeMap::new();
    for (name, fam) in [
        ("moves", Fam::Moves),
        ("host_instance", Fam::HostInstance),
        ("declarations", Fam::Declarations),
        ("host_accounts", Fam::HostAccounts),
        ("handles", Fam::Handles),
    ] {
        out.insert(name, raw(fam));
    }
    let mut assign = Vec::new();
    store
        .each_assignment(&mut |did, a| {
            assign.push(format!("{did} = {a:?}"));
            Ok(())
        })
        .unwrap();
    out.insert("assign", assign);
    let mut counts = Vec::new();
    store
        .map_scan(Fam::Counts, &[], &mut |k, v| {
            let n = i64::from_le_bytes(v.try_into().unwrap());
            if n != 0 {
                counts.push(format!("{} = {n}", String::from_utf8_lossy(k).replace('\0', "|")));
            }
            true
        })
        .unwrap();
    out.insert("map_counts", counts);
    // ids depend on the map's history (an instance keeps its id through
    // merges and splits), so two stores that reached one map by different
    // paths may name an instance differently: each id is replaced by the
    // instance's first host
    let list = map::instances(store).unwrap();
    let canonical: BTreeMap<String, String> = list.iter().map(|i| (i.id.clone(), i.hosts[0].clone())).collect();
    let canon = |text: String| canonical.iter().fold(text, |t, (id, host)| t.replace(id, &format!("<{host}>")));
    let instances = list
        .into_iter()
        .map(|mut i| {
            i.computed_at_ms = 0;
            for e in &mut i.evidence {
                e.3 = 0; // when the host was first seen: wall clock
            }
            for p in &mut i.domain_proofs {
                p.at_ms = 0;
                p.examples.clear(); // illustrative: a sample of the proving accounts
            }
            canon(format!("{i:?}"))
        })
        .collect();
    out.insert("instances", instances);
    let hi = out.get_mut("host_instance").unwrap();
    *hi = std::mem::take(hi).into_iter().map(canon).collect();
    out
}

fn check(changes: &[Change]) {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut inc = Net::new(da.path());
    let mut full = Net::new(db.path());
    let mut m = Maintainer::new(inc.store().clone(), Default::default());
    for c in changes {
        inc.apply(c);
        full.apply(c);
        if matches!(c, Change::Step) {
            m.run_until_idle().unwrap();
        }
    }
    m.run_until_idle().unwrap();
    assert_eq!(map::pending(inc.store()).unwrap(), 0, "every mark taken");
    map::recompute(full.store(), &Default::default()).unwrap();
    let (a, b) = (dump(inc.store()), dump(full.store()));
    for (cf, rows) in &a {
        assert_eq!(rows, &b[cf], "family {cf} differs between incremental and recompute");
    }
    // and a recompute over the incremental store changes nothing
    let s = map::recompute(inc.store(), &Default::default()).unwrap();
    assert_eq!(s.changed, 0, "recompute found assignments the incremental path missed");
    assert_eq!(dump(inc.store()), a);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn incremental_equals_recompute(changes in proptest::collection::vec(change(), 1..40)) {
        check(&changes);
    }
}

#[test]
fn a_migration_is_one_dated_move_and_one_flow() {
    let changes = [
        Change::Crawl { host: 0, domains: vec![0], names: None },
        Change::Crawl { host: 2, domains: vec![1], names: None },
        Change::Plc { did: 0, host: Some(0), tombstone: false },
        Change::Step,
        Change::Plc { did: 0, host: Some(2), tombstone: false },
        Change::Step,
    ];
    check(&changes);
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::new(dir.path());
    for c in &changes {
        net.apply(c);
    }
    map::recompute(net.store(), &Default::default()).unwrap();
    let moves = map::moves_of(net.store(), DIDS[0]).unwrap();
    assert_eq!(moves.len(), 1);
    assert_eq!((moves[0].1.from.as_str(), moves[0].1.to.as_str()), (HOSTS[0], HOSTS[2]));
    assert_eq!(instancemap::clock::day(moves[0].0), Net::at(5)[..10]);

    // history: as of, flows, growth, sizes
    use instancemap::cluster::history;
    let st = net.store();
    let (i0, i2) = (
        map::instance_id_of_host(st, HOSTS[0]).unwrap().unwrap(),
        map::instance_id_of_host(st, HOSTS[2]).unwrap().unwrap(),
    );
    assert_ne!(i0, i2);
    let day = |n: u64| Net::at(n)[..10].to_owned();
    let at = |n: u64| instancemap::clock::parse_day_or_time(&day(n)).unwrap();
    let then = history::account_as_of(st, DIDS[0], at(4)).unwrap().unwrap();
    assert_eq!((then.host.as_deref(), then.instance.as_ref()), (Some(HOSTS[0]), Some(&i0)));
    let now = history::account_as_of(st, DIDS[0], at(5)).unwrap().unwrap();
    assert_eq!(now.instance.as_ref(), Some(&i2));
    assert_eq!(history::account_as_of(st, DIDS[0], at(1)).unwrap().unwrap().host, None, "not created yet");
    let flows = history::flows(st, &day(1), &day(9)).unwrap();
    assert_eq!(flows, vec![history::Flow { day: day(5), from: i0.clone(), to: i2.clone(), accounts: 1 }]);
    assert!(history::flows(st, &day(6), &day(9)).unwrap().is_empty());
    let g = history::growth(st, &i2, &day(9)).unwrap();
    assert_eq!(g, vec![history::GrowthDay { day: day(5), net: 1, total: 1 }]);
    let g0 = history::growth(st, &i0, &day(9)).unwrap();
    assert_eq!(g0.iter().map(|d| d.total).collect::<Vec<_>>(), vec![1, 0]);
    assert_eq!(history::sizes_as_of(st, &day(4)).unwrap().get(&i0), Some(&1));
    assert_eq!(history::sizes_as_of(st, &day(5)).unwrap().get(&i0), None);
}

#[test]
fn ids_stay_when_unrelated_hosts_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::new(dir.path());
    for c in [
        Change::Crawl { host: 0, domains: vec![0], names: None },
        Change::Crawl { host: 1, domains: vec![0], names: None },
        Change::Plc { did: 0, host: Some(0), tombstone: false },
        Change::Plc { did: 1, host: Some(2), tombstone: false },
    ] {
        net.apply(&c);
    }
    let mut m = Maintainer::new(net.store().clone(), Default::default());
    m.run_until_idle().unwrap();
    let before = map::instance_id_of_host(net.store(), HOSTS[0]).unwrap().unwrap();
    // an unrelated host joins (with accounts), then a host of the example domain
    for c in [
        Change::Plc { did: 2, host: Some(4), tombstone: false },
        Change::Crawl { host: 4, domains: vec![2], names: None },
        Change::Plc { did: 3, host: Some(3), tombstone: false },
    ] {
        net.apply(&c);
    }
    m.run_until_idle().unwrap();
    assert_eq!(map::instance_id_of_host(net.store(), HOSTS[0]).unwrap().unwrap(), before);
    assert_eq!(map::instance_id_of_host(net.store(), HOSTS[1]).unwrap().unwrap(), before);
}

/// A user domain links two hosts once accounts created on each vouch for
/// it, and a declaration that arrived before its signer's key counts once
/// the key does: both taken in by the maintainer as they happen, equal to
/// the recompute.
#[test]
fn proofs_and_keys_that_arrive_later_are_taken_in_incrementally() {
    let (d2, d4) = (2usize, 4usize); // pds.example.com, localhost:2583
    let changes = vec![
        Change::Crawl { host: d2, domains: vec![1], names: None },
        // the operator declares host 4 before any key of its is known
        Change::Declare { did: 5, hosts: vec![d4] },
        Change::Crawl { host: d4, domains: vec![1], names: Some(5) },
        Change::Plc { did: 0, host: Some(d2), tombstone: false },
        Change::Plc { did: 1, host: Some(d2), tombstone: false },
        Change::Plc { did: 2, host: Some(d4), tombstone: false },
        Change::Plc { did: 3, host: Some(d4), tombstone: false },
        Change::Resolve { did: 0, host: d2, handle: Some(1) },
        Change::Resolve { did: 1, host: d2, handle: Some(1) },
        Change::Resolve { did: 2, host: d4, handle: Some(1) },
        Change::Step,
    ];
    check(&changes);
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::new(dir.path());
    let mut m = Maintainer::new(net.store().clone(), Default::default());
    let id = |net: &Net, h: usize| map::instance_id_of_host(net.store(), HOSTS[h]).unwrap().unwrap();
    for c in &changes {
        net.apply(c);
    }
    m.run_until_idle().unwrap();
    // host 2 is proven (two accounts created there vouch), host 4 not yet (one)
    assert_ne!(id(&net, d2), id(&net, d4));
    let i4 = map::instance_of_host(net.store(), HOSTS[d4]).unwrap().unwrap();
    assert_eq!(i4.operator, None, "the declaration's signer had no key yet");
    // a second account vouches for host 4, and the operator's key arrives
    for c in [
        Change::Resolve { did: 3, host: d4, handle: Some(1) },
        Change::Plc { did: 5, host: Some(d4), tombstone: false },
    ] {
        net.apply(&c);
    }
    m.run_until_idle().unwrap();
    assert_eq!(id(&net, d2), id(&net, d4), "the proven user domain links them");
    let inst = map::instance_of_host(net.store(), HOSTS[d4]).unwrap().unwrap();
    assert_eq!(inst.operator.as_deref(), Some(DIDS[5]), "signed, and the host names the operator");
    assert!(inst
        .domain_proofs
        .iter()
        .any(|p| p.domain == "example.social" && p.accounts == 2 && p.examples.len() == 2));
    let mut all = changes.clone();
    all.extend([
        Change::Resolve { did: 3, host: d4, handle: Some(1) },
        Change::Plc { did: 5, host: Some(d4), tombstone: false },
        Change::Step,
    ]);
    check(&all);
}
