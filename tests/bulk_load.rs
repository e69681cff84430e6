//! A bulk PLC load (`backfill-plc`): past `plc::load::BULK_OPS` operations
//! that outweigh the store it began with, the loader marks no account (half
//! its writes) and asks the map for a full recompute instead; the map it
//! brings current is the one a marking load gives. A small load into a
//! large store keeps marking (the incremental map stays cheaper).

mod common;

use instancemap::cluster::{maintain, map};
use instancemap::plc::source;
use instancemap::store::{map::RawMap, Store};

const HOSTS: usize = 12;

fn export(path: &std::path::Path, from: usize, to: usize) {
    let mut text = String::new();
    for i in from..to {
        let line = common::plc_create_line(
            i,
            &format!("did:plc:{i:0>24}"),
            &format!("u{i}.pds{}.example.com", i % HOSTS),
            &format!("https://pds{}.example.com", i % HOSTS),
        );
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn load(store: &Store, file: &std::path::Path, bulk: Option<u64>) {
    source::load_file_until(store, file, bulk, &Default::default()).unwrap();
}

/// (hosts, registered members) of every instance, in order.
fn shape(store: &Store) -> Vec<(Vec<String>, u64)> {
    let mut v: Vec<_> = map::instances(store)
        .unwrap()
        .into_iter()
        .map(|i| (i.hosts.clone(), i.members.get("registered").copied().unwrap_or(0)))
        .collect();
    v.sort();
    v
}

#[test]
fn a_bulk_load_marks_no_account_and_the_map_it_brings_current_is_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    export(&file, 0, 40_000);

    let bulk = Store::open(&dir.path().join("bulk")).unwrap();
    load(&bulk, &file, Some(bulk.estimate_accounts()));
    let (marks, _) = bulk.pending_marks().unwrap();
    assert!(marks <= 20_000, "the accounts past the threshold are not marked: {marks}");
    let f = map::freshness(&bulk).unwrap();
    assert!(f.rebuild_wanted_ms.is_some() && !f.is_current(), "{f:?}");
    assert!(f.note().unwrap().contains("bulk PLC load"), "{:?}", f.note());
    let update = maintain::bring_current(&bulk, &Default::default(), None).unwrap();
    assert!(matches!(update, maintain::Update::Recomputed(_)), "{update:?}");
    let f = map::freshness(&bulk).unwrap();
    assert!(f.is_current() && f.rebuild_wanted_ms.is_none(), "{f:?}");

    let marking = Store::open(&dir.path().join("marking")).unwrap();
    load(&marking, &file, None);
    assert_eq!(marking.pending_marks().unwrap().0, 40_000, "without bulk every account is marked");
    maintain::bring_current(&marking, &Default::default(), None).unwrap();
    assert_eq!(shape(&bulk), shape(&marking));
    assert_eq!(shape(&bulk).iter().map(|s| s.1).sum::<u64>(), 40_000);

    // a small load into the large store: marked, taken incrementally
    let more = dir.path().join("more.jsonl");
    export(&more, 40_000, 40_500);
    load(&bulk, &more, Some(bulk.estimate_accounts()));
    assert_eq!(bulk.pending_marks().unwrap().0, 500);
    assert!(map::freshness(&bulk).unwrap().rebuild_wanted_ms.is_none());
    let update = maintain::bring_current(&bulk, &Default::default(), None).unwrap();
    assert!(matches!(update, maintain::Update::Incremental(_)), "{update:?}");
    assert_eq!(shape(&bulk).iter().map(|s| s.1).sum::<u64>(), 40_500);
}

/// `backfill-plc` stops RocksDB's automatic compactions while it loads
/// (the load's files are compacted once at its end): level-0 files pile up
/// meanwhile, and once compactions are back on they are merged without
/// being asked, so a load that ends without its full compaction (a small
/// one, or a stop) does not leave the store with them.
#[test]
fn paused_compactions_let_level_0_files_pile_up_and_resume_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let l0 = || store.property_sum("rocksdb.num-files-at-level0");
    store.set_auto_compactions(false).unwrap();
    for round in 0..8 {
        let f = dir.path().join(format!("export-{round}.jsonl"));
        export(&f, round * 100, round * 100 + 100);
        load(&store, &f, None);
        store.flush().unwrap();
    }
    // each flush left its files (the plc family's, the counters', the
    // position's ...): well over the trigger of 4 in the plc family alone
    assert!(l0() >= 8 * 3, "level-0 files while paused: {}", l0());
    store.set_auto_compactions(true).unwrap();
    let t = std::time::Instant::now();
    while l0() >= 8 * 3 && t.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(l0() < 8 * 3, "level-0 files a minute after compactions resumed: {}", l0());
    // nothing lost in either
    let did = format!("did:plc:{:0>24}", 799);
    assert!(instancemap::store::StoreReader::plc(&store, &did).unwrap().is_some());
}
