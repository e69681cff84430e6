//! The storage contract, one suite run on every store: each case is a
//! function over `StoreReader + StoreWriter`, and `test_each_storage!` turns
//! it into one test per store (`mem::<case>` on the in-memory `MemStore`,
//! `rocks::<case>` on the RocksDB `Store` in a temporary directory, and
//! `rocks_flushed::<case>` on the same with every commit flushed to SST
//! files, so the merge operators also run across files rather than only in
//! the memtable). What a case pins holds for every store; the last test
//! applies one mixed sequence of batches to all of them and compares
//! everything their readers return.

use std::collections::BTreeMap;

use instancemap::store::map::{CountTotals, Fam, MapReader, RawMap, Structure};
use instancemap::store::mem::MemStore;
use instancemap::store::records::{
    Assignment, CrawlOutcome, DeclarationStatus, Describe, HandleCheck, HostMove, HostOp, HostRecord, IdentityRecord,
    InstanceRecord, Move, MoveRow, PlcOperand, PlcRecord, RelayView, Repos,
};
use instancemap::store::{
    self, AccountState, AccountView, Batch, MetaKey, Store, StoreReader, StoreWriter, StoredRecord,
};

// ---------------------------------------------------------------- the stores

/// The RocksDB store with each commit flushed: reads then fold merge
/// operands that sit in SST files (and any base value beneath them).
struct Flushed(Store);

impl StoreReader for Flushed {
    fn account_view(&self, did: &str) -> store::Result<AccountView> {
        self.0.account_view(did)
    }
    fn account_state(&self, did: &str) -> store::Result<Option<AccountState>> {
        self.0.account_state(did)
    }
    fn plc(&self, did: &str) -> store::Result<Option<PlcRecord>> {
        self.0.plc(did)
    }
    fn identity(&self, did: &str) -> store::Result<Option<IdentityRecord>> {
        self.0.identity(did)
    }
    fn host(&self, endpoint: &str) -> store::Result<Option<HostRecord>> {
        self.0.host(endpoint)
    }
    fn pds_view(&self, did: &str) -> store::Result<Option<instancemap::store::records::PdsView>> {
        self.0.pds_view(did)
    }
    fn contact_check(&self, key: &str) -> store::Result<Option<instancemap::store::records::ContactCheck>> {
        self.0.contact_check(key)
    }
    fn contact_checks(&self) -> store::Result<Vec<(String, instancemap::store::records::ContactCheck)>> {
        self.0.contact_checks()
    }
    fn hosts(&self) -> store::Result<Vec<(String, HostRecord)>> {
        self.0.hosts()
    }
    fn stored_record(&self, collection: &str, did: &str, rkey: &str) -> store::Result<Option<StoredRecord>> {
        self.0.stored_record(collection, did, rkey)
    }
    fn stored_records(&self, collection: &str) -> store::Result<Vec<(String, String, StoredRecord)>> {
        self.0.stored_records(collection)
    }
    fn source_cursor(&self, source: &str) -> store::Result<Option<i64>> {
        self.0.source_cursor(source)
    }
    fn all_cursors(&self) -> store::Result<BTreeMap<String, i64>> {
        self.0.all_cursors()
    }
    fn all_counters(&self) -> store::Result<BTreeMap<String, i64>> {
        self.0.all_counters()
    }
    fn meta(&self, key: MetaKey) -> store::Result<Option<Vec<u8>>> {
        self.0.meta(key)
    }
    fn retries_due(&self, until_ms: i64, limit: usize) -> store::Result<Vec<(i64, String)>> {
        self.0.retries_due(until_ms, limit)
    }
    fn marks(&self, limit: usize) -> store::Result<(Vec<(String, i64)>, i64)> {
        self.0.marks(limit)
    }
}

impl RawMap for Flushed {
    fn map_get(&self, fam: Fam, key: &[u8]) -> store::Result<Option<Box<[u8]>>> {
        self.0.map_get(fam, key)
    }
    fn map_scan(&self, fam: Fam, start: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> store::Result<()> {
        self.0.map_scan(fam, start, f)
    }
    fn pending_marks(&self) -> store::Result<(u64, bool)> {
        self.0.pending_marks()
    }
}

impl StoreWriter for Flushed {
    fn commit(&self, batch: Batch) -> store::Result<()> {
        self.0.commit(batch)?;
        self.0.flush()
    }
}

/// A RocksDB store in a fresh temporary directory (kept alive beside it).
fn rocks() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Runs each named case (a `fn case<S: StoreWriter>(store: &S)`) on every
/// store: `mem::case`, `rocks::case` and `rocks_flushed::case`.
macro_rules! test_each_storage {
    ($($case:ident),* $(,)?) => {
        mod mem {
            $(
                #[test]
                fn $case() {
                    super::$case(&instancemap::store::mem::MemStore::new());
                }
            )*
        }
        mod rocks {
            $(
                #[test]
                fn $case() {
                    let (_dir, store) = super::rocks();
                    super::$case(&store);
                }
            )*
        }
        mod rocks_flushed {
            $(
                #[test]
                fn $case() {
                    let (_dir, store) = super::rocks();
                    super::$case(&super::Flushed(store));
                }
            )*
        }
    };
}

test_each_storage!(
    account_state_round_trips_and_the_last_put_wins,
    account_view_joins_plc_identity_and_firehose_state,
    unknown_did_has_an_empty_view_and_is_not_known,
    stored_records_lists_one_collection_in_did_rkey_order,
    counters_add_across_and_within_batches,
    cursors_keep_the_last_written_seq_per_source,
    meta_puts_gets_and_deletes,
    plc_operands_fold_in_batch_order_like_plc_record_apply,
    plc_fork_and_tombstone_fold_across_batches,
    identity_record_round_trips,
    retries_due_in_time_order_up_to_the_time_and_limit,
    host_ops_fold_like_host_record_apply,
    first_host_op_makes_a_pending_record_listed_in_endpoint_order,
    marks_count_per_did_and_structure_and_unmark_takes_them_back,
    a_batch_is_applied_whole,
    retry_times_before_the_epoch_are_due_first,
    the_stores_own_meta_keys_cannot_be_written_by_a_stage,
    an_assignment_brings_its_counts_rows_and_index_entries_and_takes_them_when_it_changes,
    a_recompute_assignment_leaves_the_counts_and_replaced_counts_are_all_there_is,
    unassign_removes_the_assignment_its_rows_and_index_entries,
    clearing_the_marks_takes_every_mark_the_structures_too,
    a_structure_replaces_the_instances_the_host_index_and_the_declarations,
);

// ---------------------------------------------------------------- fixtures

const DAY1: i64 = 1_735_689_600_000; // 2025-01-01
const DAY2: i64 = 1_735_776_000_000; // 2025-01-02

/// On `HOST_A` since day 1, then `HOST_B` from day 2 (one migration).
fn migrated(handle: &str) -> Assignment {
    Assignment {
        host: Some(HOST_B.into()),
        reason: None,
        source: Some("plc".into()),
        buckets: vec!["registered".into(), "in_plc".into()],
        timeline: vec![(DAY1, Some(HOST_A.into())), (DAY2, Some(HOST_B.into()))],
        handle: Some(handle.into()),
        handle_verified: true,
        born: Some(HOST_A.into()),
        born_day: Some(instancemap::store::records::day_number(DAY1)),
        active_day: Some(instancemap::store::records::day_number(DAY2)),
    }
}

/// On `HOST_A` since day 1.
fn settled(handle: &str) -> Assignment {
    Assignment {
        host: Some(HOST_A.into()),
        buckets: vec!["registered".into()],
        timeline: vec![(DAY1, Some(HOST_A.into()))],
        handle: Some(handle.into()),
        ..Assignment::default()
    }
}

fn gone() -> Assignment {
    Assignment { reason: Some("deleted".into()), timeline: vec![(DAY1, None)], ..Assignment::default() }
}

fn days<S: MapReader>(store: &S) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    store.day_counts("", "9999-12-31", &mut |d, h, n| out.push((d.to_owned(), h.to_owned(), n))).unwrap();
    out
}

fn flows<S: MapReader>(store: &S) -> Vec<(String, String, String, i64)> {
    let mut out = Vec::new();
    store
        .flow_counts("", "9999-12-31", &mut |d, a, b, n| out.push((d.to_owned(), a.to_owned(), b.to_owned(), n)))
        .unwrap();
    out
}

fn instance(id: &str, hosts: &[&str]) -> InstanceRecord {
    InstanceRecord {
        id: id.into(),
        name: id.into(),
        anchor: hosts[0].into(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        ..InstanceRecord::default()
    }
}

/// DIDs in sort order: `DID_A < DID_B < DID_C < DID_D`.
const DID_A: &str = "did:plc:44ybard66vv44zksje25o7dz";
const DID_B: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const DID_C: &str = "did:plc:vwzwgnygau7ed7b7wt5ux7y2";
const DID_D: &str = "did:plc:z72i7hdynmk6r22z27h6tvur";

/// Endpoints in sort order.
const HOST_A: &str = "https://morel.us-east.host.bsky.network";
const HOST_B: &str = "https://pds.example.com";
const HOST_C: &str = "https://pds.example.net";

const POST: &str = "app.bsky.feed.post";
/// An NSID the `POST` NSID is a byte prefix of.
const POSTGATE: &str = "app.bsky.feed.postgate";
const LIKE: &str = "app.bsky.feed.like";

const RELAY: &str = "wss://bsky.network";
const REPLAY: &str = "replay-2025-06";

fn account(seq: i64, handle: &str) -> AccountState {
    AccountState {
        first_seq: 1,
        last_seq: seq,
        rev: Some(format!("3lcj{seq:09}")),
        last_time_us: Some(1_735_000_000_000_000 + seq),
        seen_at_ms: 1_735_000_000_000 + seq,
        active: Some(true),
        status: None,
        handle: Some(handle.to_owned()),
        commits: seq as u64,
    }
}

fn record(n: u8) -> StoredRecord {
    StoredRecord {
        cid: vec![0x01, 0x71, 0x12, 0x20, n],
        record: vec![0xa1, 0x64, b't', b'e', b'x', b't', 0x61, b'a' + n],
        seq: 100 + i64::from(n),
        rev: format!("3lcjrev{n}"),
        sig: None,
    }
}

fn plc_op(cid: &str, prev: Option<&str>, at: &str, pds: &str, key: &str) -> PlcOperand {
    PlcOperand {
        cid: cid.to_owned(),
        prev: prev.map(str::to_owned),
        created_at: at.to_owned(),
        tombstone: false,
        pds: Some(pds.to_owned()),
        handle: Some("alice.example.com".to_owned()),
        signing_key: Some(key.to_owned()),
    }
}

fn tombstone(cid: &str, prev: &str, at: &str) -> PlcOperand {
    PlcOperand {
        cid: cid.to_owned(),
        prev: Some(prev.to_owned()),
        created_at: at.to_owned(),
        tombstone: true,
        pds: None,
        handle: None,
        signing_key: None,
    }
}

/// The pure fold: what the store must hold after these operands.
fn fold_plc(ops: &[PlcOperand]) -> PlcRecord {
    let mut rec = PlcRecord::default();
    for op in ops {
        rec.apply(op.clone());
    }
    rec
}

/// The pure fold of host ops, the first one making the record.
fn fold_host(ops: &[HostOp]) -> HostRecord {
    let mut rec: Option<HostRecord> = None;
    for op in ops {
        rec.get_or_insert_with(|| HostRecord::new_at(op.at_ms())).apply(op.clone());
    }
    rec.expect("at least one op")
}

fn identity(pds: &str, at_ms: i64) -> IdentityRecord {
    IdentityRecord {
        pds: Some(pds.to_owned()),
        handle: Some("bob.example.com".to_owned()),
        signing_key: Some("zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF".to_owned()),
        labeler: None,
        label_key: None,
        problems: vec!["no_handle_verification".to_owned()],
        resolved_at_ms: Some(at_ms),
        first_resolved_ms: Some(at_ms - 10_000),
        checked_at_ms: at_ms,
        unresolved: None,
        tombstoned: false,
        failures: 0,
        moves: vec![Move { at: "2025-01-02T00:00:00.000Z".into(), from: HOST_A.into(), to: pds.into() }],
        handle_check: Some(HandleCheck {
            handle: "bob.example.com".to_owned(),
            verified: true,
            method: Some("dns".to_owned()),
            reason: None,
            checked_at_ms: at_ms,
        }),
    }
}

fn describe(did: &str) -> Describe {
    Describe {
        did: Some(did.to_owned()),
        available_user_domains: vec![".example.com".to_owned()],
        invite_code_required: Some(true),
        phone_verification_required: None,
        privacy_policy: None,
        terms_of_service: Some("https://example.com/tos".to_owned()),
        contact_email: None,
    }
}

fn reached(at_ms: i64) -> HostOp {
    HostOp::Crawled {
        at_ms,
        outcome: CrawlOutcome::Reached {
            describe: Box::new(describe("did:web:pds.example.com")),
            version: Some("0.4.107".to_owned()),
            repos: Some(Repos {
                total: 3,
                active: 2,
                inactive: BTreeMap::from([("deactivated".to_owned(), 1)]),
                complete: true,
                disagreements: BTreeMap::new(),
            }),
            addresses: vec!["192.0.2.1".to_owned()],
        },
    }
}

fn failed(at_ms: i64) -> HostOp {
    HostOp::Crawled { at_ms, outcome: CrawlOutcome::Failed { reason: "connect".to_owned() } }
}

fn noted(source: &str, at_ms: i64) -> HostOp {
    HostOp::Noted { source: source.to_owned(), at_ms }
}

fn relay_view(seen_at_ms: i64) -> RelayView {
    RelayView { status: Some("active".to_owned()), account_count: Some(3), seq: Some(42), seen_at_ms }
}

fn commit<S: StoreWriter>(store: &S, build: impl FnOnce(&mut Batch)) {
    let mut batch = Batch::default();
    build(&mut batch);
    store.commit(batch).unwrap();
}

// ---------------------------------------------------------------- the cases

/// Found by this suite: RocksDB's schedule keys sorted a negative time
/// after every positive one (and a due entry could be missed); times
/// before the epoch now count as the epoch on both stores.
fn retry_times_before_the_epoch_are_due_first<S: StoreWriter>(store: &S) {
    commit(store, |b| {
        b.retry(10, DID_B);
        b.retry(-5, DID_A);
    });
    assert_eq!(store.retries_due(100, 10).unwrap(), vec![(0, DID_A.to_owned()), (10, DID_B.to_owned())]);
    commit(store, |b| b.unretry(-5, DID_A));
    assert_eq!(store.retries_due(100, 10).unwrap(), vec![(10, DID_B.to_owned())]);
}

/// Found by this suite: `meta` by raw key reached the RocksDB store's own
/// keys (the schema version, the cursors). Stages now name a [`MetaKey`],
/// none of which is the store's: a cursor is only what `Batch::cursor` wrote.
fn the_stores_own_meta_keys_cannot_be_written_by_a_stage<S: StoreWriter>(store: &S) {
    commit(store, |b| {
        b.cursor("wss://relay.example", 9);
        for k in [MetaKey::PlcPosition, MetaKey::Overrides, MetaKey::RecomputeStarted] {
            b.put_meta(k, b"x".to_vec());
        }
    });
    assert_eq!(
        store.all_cursors().unwrap().into_iter().collect::<Vec<_>>(),
        vec![("wss://relay.example".to_owned(), 9)]
    );
    for k in [MetaKey::PlcPosition, MetaKey::Overrides, MetaKey::RecomputeStarted] {
        assert_eq!(store.meta(k).unwrap(), Some(b"x".to_vec()), "{k:?}");
    }
}

fn account_state_round_trips_and_the_last_put_wins<S: StoreWriter>(store: &S) {
    commit(store, |b| b.put_account(DID_A, account(5, "alice.example.com")));
    assert_eq!(store.account_state(DID_A).unwrap(), Some(account(5, "alice.example.com")));

    // a later batch replaces it, and so does a later put in one batch
    commit(store, |b| b.put_account(DID_A, account(9, "alice.example.com")));
    assert_eq!(store.account_state(DID_A).unwrap(), Some(account(9, "alice.example.com")));
    commit(store, |b| {
        b.put_account(DID_A, account(10, "old.example.com"));
        b.put_account(DID_A, account(11, "new.example.com"));
    });
    assert_eq!(store.account_state(DID_A).unwrap(), Some(account(11, "new.example.com")));
    assert_eq!(store.account_state(DID_B).unwrap(), None);
}

fn account_view_joins_plc_identity_and_firehose_state<S: StoreWriter>(store: &S) {
    let genesis = plc_op("bafyreigenesis", None, "2025-01-01T00:00:00.000Z", HOST_A, "zQ3shkey1");
    commit(store, |b| {
        b.plc(DID_A, genesis.clone());
        b.put_identity(DID_A, identity(HOST_B, 1_736_000_000_000));
        b.put_account(DID_A, account(7, "alice.example.com"));
        // another DID's state must not leak into DID_A's view
        b.put_account(DID_B, account(8, "bob.example.com"));
    });
    let view = store.account_view(DID_A).unwrap();
    assert_eq!(
        view,
        AccountView {
            plc: Some(fold_plc(&[genesis])),
            identity: Some(identity(HOST_B, 1_736_000_000_000)),
            firehose: Some(account(7, "alice.example.com")),
            assignment: None,
        }
    );
    assert!(view.is_known());
    // the view is the single getters in one call
    assert_eq!(view.plc, store.plc(DID_A).unwrap());
    assert_eq!(view.identity, store.identity(DID_A).unwrap());
    assert_eq!(view.firehose, store.account_state(DID_A).unwrap());

    // any one source makes a DID known
    let b_view = store.account_view(DID_B).unwrap();
    assert_eq!((b_view.plc, b_view.identity), (None, None));
    assert_eq!(b_view.firehose, Some(account(8, "bob.example.com")));
    commit(store, |b| b.put_identity(DID_C, identity(HOST_C, 1_736_000_000_000)));
    let c_view = store.account_view(DID_C).unwrap();
    assert!(c_view.is_known());
    assert_eq!((c_view.plc.is_none(), c_view.firehose.is_none(), c_view.assignment), (true, true, None));
}

fn unknown_did_has_an_empty_view_and_is_not_known<S: StoreWriter>(store: &S) {
    assert_eq!(store.account_view(DID_D).unwrap(), AccountView::default());
    commit(store, |b| {
        b.put_account(DID_A, account(1, "alice.example.com"));
        b.plc(DID_C, plc_op("bafyreigenesis", None, "2025-01-01T00:00:00.000Z", HOST_A, "zQ3shkey1"));
        // a mark is not knowledge of the DID
        b.mark(DID_D);
    });
    let view = store.account_view(DID_D).unwrap();
    assert_eq!(view, AccountView::default());
    assert!(!view.is_known());
    assert_eq!(store.account_state(DID_D).unwrap(), None);
    assert_eq!(store.plc(DID_D).unwrap(), None);
    assert_eq!(store.identity(DID_D).unwrap(), None);
}

fn stored_records_lists_one_collection_in_did_rkey_order<S: StoreWriter>(store: &S) {
    // written out of order, and across two batches
    commit(store, |b| {
        b.put_record(POST, DID_B, "3lcjaaaaaaa2a", record(1));
        b.put_record(LIKE, DID_A, "3lcjaaaaaaa2b", record(2));
        b.put_record(POST, DID_A, "3lcjaaaaaaa2c", record(3));
    });
    commit(store, |b| {
        b.put_record(POST, DID_A, "3lcjaaaaaaa2b", record(4));
        b.put_record(POSTGATE, DID_A, "3lcjaaaaaaa2a", record(5));
    });
    let s = |did: &str, rkey: &str, r: StoredRecord| (did.to_owned(), rkey.to_owned(), r);
    assert_eq!(
        store.stored_records(POST).unwrap(),
        vec![
            s(DID_A, "3lcjaaaaaaa2b", record(4)),
            s(DID_A, "3lcjaaaaaaa2c", record(3)),
            s(DID_B, "3lcjaaaaaaa2a", record(1))
        ]
    );
    assert_eq!(store.stored_records(LIKE).unwrap(), vec![s(DID_A, "3lcjaaaaaaa2b", record(2))]);
    assert_eq!(store.stored_records(POSTGATE).unwrap(), vec![s(DID_A, "3lcjaaaaaaa2a", record(5))]);
    assert_eq!(store.stored_records("app.bsky.graph.follow").unwrap(), vec![]);
    assert_eq!(store.stored_record(POST, DID_B, "3lcjaaaaaaa2a").unwrap(), Some(record(1)));

    // a put replaces, a delete removes one and only one
    commit(store, |b| {
        b.put_record(POST, DID_B, "3lcjaaaaaaa2a", record(6));
        b.delete_record(POST, DID_A, "3lcjaaaaaaa2c");
        b.delete_record(POST, DID_C, "3lcjaaaaaaa2c"); // never written: no effect
    });
    assert_eq!(
        store.stored_records(POST).unwrap(),
        vec![s(DID_A, "3lcjaaaaaaa2b", record(4)), s(DID_B, "3lcjaaaaaaa2a", record(6))]
    );
    assert_eq!(store.stored_record(POST, DID_A, "3lcjaaaaaaa2c").unwrap(), None);
    assert_eq!(store.stored_record(POST, DID_C, "3lcjaaaaaaa2a").unwrap(), None);
    assert_eq!(store.stored_record(LIKE, DID_A, "3lcjaaaaaaa2b").unwrap(), Some(record(2)));
}

fn counters_add_across_and_within_batches<S: StoreWriter>(store: &S) {
    assert_eq!(store.all_counters().unwrap(), BTreeMap::new());
    let coll_key = store::counter::key(store::counter::COLLECTION, "app.bsky.feed.post/create");
    commit(store, |b| {
        b.count(store::counter::OP, "create", 2);
        b.count(store::counter::OP, "create", 3);
        b.count(store::counter::FRAME, "commit", 1);
        b.count_key(coll_key.clone(), 4);
    });
    commit(store, |b| {
        b.count(store::counter::OP, "create", -1);
        b.count(store::counter::OP, "delete", 1);
        b.count_key(coll_key.clone(), 2);
        b.count(store::counter::STATUS, "active", -3);
    });
    let want = |pairs: &[(&str, i64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>();
    assert_eq!(
        store.all_counters().unwrap(),
        want(&[
            ("coll/app.bsky.feed.post/create", 6),
            ("frame/commit", 1),
            ("op/create", 4),
            ("op/delete", 1),
            ("status/active", -3),
        ])
    );

    // a zero delta is no op at all
    let mut empty = Batch::default();
    empty.count(store::counter::OP, "update", 0);
    assert!(empty.is_empty());
    store.commit(empty).unwrap();
    assert!(!store.all_counters().unwrap().contains_key("op/update"));
}

fn cursors_keep_the_last_written_seq_per_source<S: StoreWriter>(store: &S) {
    assert_eq!(store.source_cursor(RELAY).unwrap(), None);
    commit(store, |b| {
        b.cursor(RELAY, 10);
        b.cursor(REPLAY, 5);
    });
    assert_eq!(store.source_cursor(RELAY).unwrap(), Some(10));
    // the last write wins, even when lower (a rewind); in one batch too
    commit(store, |b| {
        b.cursor(RELAY, 7);
        b.cursor(REPLAY, 8);
        b.cursor(REPLAY, 6);
    });
    assert_eq!(store.source_cursor(RELAY).unwrap(), Some(7));
    assert_eq!(store.source_cursor(REPLAY).unwrap(), Some(6));
    assert_eq!(store.source_cursor("wss://relay.example.com").unwrap(), None);
    assert_eq!(store.all_cursors().unwrap(), BTreeMap::from([(RELAY.to_owned(), 7), (REPLAY.to_owned(), 6)]));
}

fn meta_puts_gets_and_deletes<S: StoreWriter>(store: &S) {
    assert_eq!(store.meta(MetaKey::PlcPosition).unwrap(), None);
    commit(store, |b| {
        b.put_meta(MetaKey::PlcPosition, b"first".to_vec());
        b.put_meta(MetaKey::Overrides, vec![0xa0]);
    });
    assert_eq!(store.meta(MetaKey::PlcPosition).unwrap(), Some(b"first".to_vec()));
    commit(store, |b| b.put_meta(MetaKey::PlcPosition, b"second".to_vec()));
    assert_eq!(store.meta(MetaKey::PlcPosition).unwrap(), Some(b"second".to_vec()));
    commit(store, |b| {
        b.delete_meta(MetaKey::PlcPosition);
        b.delete_meta(MetaKey::RecomputeStarted); // never written: no effect
    });
    assert_eq!(store.meta(MetaKey::PlcPosition).unwrap(), None);
    assert_eq!(store.meta(MetaKey::Overrides).unwrap(), Some(vec![0xa0]));
    // a delete then a put in one batch leaves the put
    commit(store, |b| {
        b.delete_meta(MetaKey::Overrides);
        b.put_meta(MetaKey::Overrides, vec![0xa1]);
    });
    assert_eq!(store.meta(MetaKey::Overrides).unwrap(), Some(vec![0xa1]));
}

fn plc_operands_fold_in_batch_order_like_plc_record_apply<S: StoreWriter>(store: &S) {
    let ops = [
        plc_op("bafyreigenesis", None, "2025-01-01T00:00:00.000Z", HOST_A, "zQ3shkey1"),
        plc_op("bafyreisecond", Some("bafyreigenesis"), "2025-02-01T00:00:00.000Z", HOST_B, "zQ3shkey2"),
    ];
    commit(store, |b| {
        for op in &ops {
            b.plc(DID_A, op.clone());
        }
    });
    let rec = store.plc(DID_A).unwrap().expect("a PLC record");
    assert_eq!(rec.ops, 2);
    assert_eq!(rec.forks, 0);
    assert_eq!(rec.pds.as_deref(), Some(HOST_B));
    assert_eq!(rec.head, "bafyreisecond");
    assert_eq!(rec.updated_at, "2025-02-01T00:00:00.000Z");
    assert_eq!(rec.created_at.as_deref(), Some("2025-01-01T00:00:00.000Z"));
    assert_eq!(rec.moves, vec![Move { at: "2025-02-01T00:00:00.000Z".into(), from: HOST_A.into(), to: HOST_B.into() }]);
    assert_eq!(rec.signing_key.as_deref(), Some("zQ3shkey2"));
    assert_eq!(rec.retired_keys.len(), 1);
    assert!(!rec.tombstoned);
    assert_eq!(rec, fold_plc(&ops));
    // another DID's operands are folded apart
    assert_eq!(store.plc(DID_B).unwrap(), None);
}

fn plc_fork_and_tombstone_fold_across_batches<S: StoreWriter>(store: &S) {
    let ops = [
        plc_op("bafyreigenesis", None, "2025-01-01T00:00:00.000Z", HOST_A, "zQ3shkey1"),
        plc_op("bafyreisecond", Some("bafyreigenesis"), "2025-01-02T00:00:00.000Z", HOST_B, "zQ3shkey2"),
        // a recovery: its prev is the genesis, not the head
        plc_op("bafyreirecover", Some("bafyreigenesis"), "2025-01-03T00:00:00.000Z", HOST_A, "zQ3shkey1"),
        tombstone("bafyreitomb", "bafyreirecover", "2025-03-01T00:00:00.000Z"),
    ];
    commit(store, |b| b.plc(DID_A, ops[0].clone()));
    commit(store, |b| {
        b.plc(DID_A, ops[1].clone());
        b.plc(DID_A, ops[2].clone());
    });
    let forked = store.plc(DID_A).unwrap().unwrap();
    assert_eq!((forked.ops, forked.forks), (3, 1));
    assert_eq!(forked.head, "bafyreirecover");
    assert_eq!(forked.pds.as_deref(), Some(HOST_A));
    assert!(!forked.tombstoned);
    assert_eq!(forked, fold_plc(&ops[..3]));

    commit(store, |b| b.plc(DID_A, ops[3].clone()));
    let tombstoned = store.plc(DID_A).unwrap().unwrap();
    assert!(tombstoned.tombstoned);
    assert_eq!((tombstoned.ops, tombstoned.forks), (4, 1));
    assert_eq!(tombstoned.head, "bafyreitomb");
    // a tombstone keeps the last state's PDS
    assert_eq!(tombstoned.pds.as_deref(), Some(HOST_A));
    assert_eq!(tombstoned, fold_plc(&ops));
}

fn identity_record_round_trips<S: StoreWriter>(store: &S) {
    let rec = identity(HOST_B, 1_736_000_000_000);
    commit(store, |b| b.put_identity(DID_B, rec.clone()));
    assert_eq!(store.identity(DID_B).unwrap(), Some(rec));

    // a failed resolution replaces the record whole
    let failed = IdentityRecord {
        checked_at_ms: 1_737_000_000_000,
        unresolved: Some("timeout".into()),
        failures: 1,
        ..Default::default()
    };
    commit(store, |b| b.put_identity(DID_B, failed.clone()));
    assert_eq!(store.identity(DID_B).unwrap(), Some(failed));
    assert_eq!(store.identity(DID_A).unwrap(), None);
}

fn retries_due_in_time_order_up_to_the_time_and_limit<S: StoreWriter>(store: &S) {
    commit(store, |b| {
        b.retry(3_000, DID_C);
        b.retry(1_000, DID_D);
        b.retry(2_000, DID_B);
        b.retry(2_000, DID_A);
        b.retry(5_000, DID_A);
    });
    let due = |pairs: &[(i64, &str)]| pairs.iter().map(|(t, d)| (*t, d.to_string())).collect::<Vec<_>>();
    assert_eq!(store.retries_due(999, 10).unwrap(), vec![]);
    assert_eq!(store.retries_due(2_500, 10).unwrap(), due(&[(1_000, DID_D), (2_000, DID_A), (2_000, DID_B)]));
    // at the time itself is due
    assert_eq!(
        store.retries_due(3_000, 10).unwrap(),
        due(&[(1_000, DID_D), (2_000, DID_A), (2_000, DID_B), (3_000, DID_C)])
    );
    assert_eq!(store.retries_due(i64::MAX, 2).unwrap(), due(&[(1_000, DID_D), (2_000, DID_A)]));
    assert_eq!(store.retries_due(i64::MAX, 0).unwrap(), vec![]);

    // unretry takes the one entry at that time; at another time, nothing
    commit(store, |b| {
        b.unretry(2_000, DID_A);
        b.unretry(4_000, DID_C);
    });
    assert_eq!(
        store.retries_due(i64::MAX, 10).unwrap(),
        due(&[(1_000, DID_D), (2_000, DID_B), (3_000, DID_C), (5_000, DID_A)])
    );
}

fn host_ops_fold_like_host_record_apply<S: StoreWriter>(store: &S) {
    let ops = [
        noted("did_document", 1_000),
        noted("plc", 1_500),
        noted("did_document", 2_000),
        reached(3_000),
        failed(4_000),
        HostOp::Relay(relay_view(5_000)),
    ];
    commit(store, |b| {
        b.host(HOST_B, ops[0].clone());
        b.host(HOST_B, ops[1].clone());
    });
    commit(store, |b| b.host(HOST_B, ops[2].clone()));
    let noted_twice = store.host(HOST_B).unwrap().unwrap();
    assert_eq!(noted_twice.sources, vec!["did_document".to_owned(), "plc".to_owned()]);
    assert_eq!(noted_twice.first_seen_ms, 1_000);
    assert_eq!(noted_twice.state, "pending");

    commit(store, |b| b.host(HOST_B, ops[3].clone()));
    let online = store.host(HOST_B).unwrap().unwrap();
    assert_eq!(online.state, "online");
    assert_eq!(online.describe, Some(describe("did:web:pds.example.com")));
    assert_eq!(online.version.as_deref(), Some("0.4.107"));
    assert_eq!(online.last_ok_ms, Some(3_000));
    assert_eq!(online.failures, 0);

    commit(store, |b| b.host(HOST_B, ops[4].clone()));
    let offline = store.host(HOST_B).unwrap().unwrap();
    assert_eq!(offline.state, "offline");
    assert_eq!(offline.failures, 1);
    assert_eq!(offline.offline_since_ms, Some(4_000));
    assert_eq!(offline.last_error.as_deref(), Some("connect"));
    assert_eq!(offline.last_ok_ms, Some(3_000));
    // what the last reach found stays
    assert_eq!(offline.describe, Some(describe("did:web:pds.example.com")));

    commit(store, |b| b.host(HOST_B, ops[5].clone()));
    let relayed = store.host(HOST_B).unwrap().unwrap();
    assert_eq!(relayed.relay, Some(relay_view(5_000)));
    assert_eq!(relayed.sources, vec!["did_document".to_owned(), "plc".to_owned(), "relay".to_owned()]);
    assert_eq!(relayed.first_seen_ms, 1_000);
    assert_eq!(relayed, fold_host(&ops));

    // Replace sets the record whole
    let replacement = HostRecord { sources: vec!["import".into()], ..HostRecord::new_at(9_000) };
    commit(store, |b| b.host(HOST_B, HostOp::Replace(Box::new(replacement.clone()))));
    assert_eq!(store.host(HOST_B).unwrap(), Some(replacement));
}

fn first_host_op_makes_a_pending_record_listed_in_endpoint_order<S: StoreWriter>(store: &S) {
    assert_eq!(store.host(HOST_C).unwrap(), None);
    assert_eq!(store.hosts().unwrap(), vec![]);
    commit(store, |b| {
        b.host(HOST_C, noted("did_document", 7_000));
        b.host(HOST_A, HostOp::Relay(relay_view(6_000)));
    });
    commit(store, |b| b.host(HOST_B, failed(8_000)));

    let mut pending = HostRecord::new_at(7_000);
    pending.sources = vec!["did_document".into()];
    assert_eq!(store.host(HOST_C).unwrap(), Some(pending.clone()));
    let from_relay = store.host(HOST_A).unwrap().unwrap();
    assert_eq!((from_relay.first_seen_ms, from_relay.state.as_str()), (6_000, "pending"));
    assert_eq!(from_relay.sources, vec!["relay".to_owned()]);
    // a crawl first: first seen at the crawl
    let crawled = store.host(HOST_B).unwrap().unwrap();
    assert_eq!((crawled.first_seen_ms, crawled.state.as_str(), crawled.failures), (8_000, "offline", 1));
    assert_eq!(crawled.offline_since_ms, Some(8_000));
    assert!(crawled.sources.is_empty());

    let listed = store.hosts().unwrap();
    let endpoints: Vec<&str> = listed.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(endpoints, vec![HOST_A, HOST_B, HOST_C]);
    assert_eq!(listed[2].1, pending);
    // each Batch::host also marked the structure, and no DID
    assert_eq!(store.marks(10).unwrap(), (vec![], 3));
}

fn marks_count_per_did_and_structure_and_unmark_takes_them_back<S: StoreWriter>(store: &S) {
    assert_eq!(store.marks(10).unwrap(), (vec![], 0));
    commit(store, |b| {
        b.mark(DID_C);
        b.mark(DID_A);
        b.mark_structure();
    });
    commit(store, |b| {
        b.mark(DID_A);
        b.mark_structure();
    });
    let m = |pairs: &[(&str, i64)]| pairs.iter().map(|(d, n)| (d.to_string(), *n)).collect::<Vec<_>>();
    assert_eq!(store.marks(10).unwrap(), (m(&[(DID_A, 2), (DID_C, 1)]), 2));
    // the limit caps the DIDs, not the structure count
    assert_eq!(store.marks(1).unwrap(), (m(&[(DID_A, 2)]), 2));
    assert_eq!(store.marks(0).unwrap(), (vec![], 2));

    // taking part of a mark leaves the rest
    commit(store, |b| {
        b.unmark(DID_A, 1);
        b.unmark_structure(1);
    });
    assert_eq!(store.marks(10).unwrap(), (m(&[(DID_A, 1), (DID_C, 1)]), 1));
    // taken back to zero: no longer listed, and the limit skips it
    commit(store, |b| {
        b.unmark(DID_A, 1);
        b.mark(DID_D);
        b.unmark_structure(1);
    });
    assert_eq!(store.marks(1).unwrap(), (m(&[(DID_C, 1)]), 0));
    assert_eq!(store.marks(10).unwrap(), (m(&[(DID_C, 1), (DID_D, 1)]), 0));
    // marked again after being taken: counts from zero
    commit(store, |b| {
        b.unmark(DID_C, 1);
        b.unmark(DID_D, 1);
        b.mark(DID_A);
    });
    assert_eq!(store.marks(10).unwrap(), (m(&[(DID_A, 1)]), 0));
}

fn a_batch_is_applied_whole<S: StoreWriter>(store: &S) {
    let genesis = plc_op("bafyreigenesis", None, "2025-01-01T00:00:00.000Z", HOST_A, "zQ3shkey1");
    let mut b = Batch::default();
    b.put_account(DID_A, account(3, "alice.example.com"));
    b.put_record(POST, DID_A, "3lcjaaaaaaa2a", record(1));
    b.count(store::counter::OP, "create", 1);
    b.cursor(RELAY, 3);
    b.put_meta(MetaKey::PlcPosition, b"p".to_vec());
    b.plc(DID_A, genesis.clone());
    b.put_identity(DID_A, identity(HOST_A, 1_736_000_000_000));
    b.retry(1_000, DID_B);
    b.host(HOST_A, noted("did_document", 1_000));
    b.mark(DID_A);
    assert_eq!(b.len(), 11); // the host op brings its structure mark

    // nothing is visible before the commit
    assert_eq!(store.account_view(DID_A).unwrap(), AccountView::default());
    store.commit(b).unwrap();

    let view = store.account_view(DID_A).unwrap();
    assert_eq!(view.firehose, Some(account(3, "alice.example.com")));
    assert_eq!(view.plc, Some(fold_plc(&[genesis])));
    assert_eq!(view.identity, Some(identity(HOST_A, 1_736_000_000_000)));
    assert_eq!(store.stored_record(POST, DID_A, "3lcjaaaaaaa2a").unwrap(), Some(record(1)));
    assert_eq!(store.all_counters().unwrap(), BTreeMap::from([("op/create".to_owned(), 1)]));
    assert_eq!(store.source_cursor(RELAY).unwrap(), Some(3));
    assert_eq!(store.meta(MetaKey::PlcPosition).unwrap(), Some(b"p".to_vec()));
    assert_eq!(store.retries_due(i64::MAX, 10).unwrap(), vec![(1_000, DID_B.to_owned())]);
    assert_eq!(store.host(HOST_A).unwrap().map(|h| h.sources), Some(vec!["did_document".to_owned()]));
    assert_eq!(store.marks(10).unwrap(), (vec![(DID_A.to_owned(), 1)], 1));

    // an empty batch commits and changes nothing
    store.commit(Batch::default()).unwrap();
    assert_eq!(store.source_cursor(RELAY).unwrap(), Some(3));
}

// ---------------------------------------------------------------- the stores agree

/// Everything the readers say about these DIDs, hosts and collections.
#[derive(Debug, PartialEq)]
struct Digest {
    views: Vec<AccountView>,
    hosts: Vec<(String, HostRecord)>,
    host_gets: Vec<Option<HostRecord>>,
    records: Vec<Vec<(String, String, StoredRecord)>>,
    record_gets: Vec<Option<StoredRecord>>,
    cursors: BTreeMap<String, i64>,
    source_cursors: Vec<Option<i64>>,
    counters: BTreeMap<String, i64>,
    meta: Vec<Option<Vec<u8>>>,
    retries: Vec<Vec<(i64, String)>>,
    marks: Vec<(Vec<(String, i64)>, i64)>,
}

fn digest<S: StoreReader>(s: &S, dids: &[&str], hosts: &[&str], collections: &[&str]) -> Digest {
    let mut record_gets = Vec::new();
    for c in collections {
        for d in dids {
            for rkey in ["3lcjaaaaaaa2a", "3lcjaaaaaaa2b", "3lcjaaaaaaa2c"] {
                record_gets.push(s.stored_record(c, d, rkey).unwrap());
            }
        }
    }
    let views = dids.iter().map(|d| s.account_view(d).unwrap()).collect::<Vec<_>>();
    for (d, v) in dids.iter().zip(&views) {
        assert_eq!(v.firehose, s.account_state(d).unwrap());
        assert_eq!(v.plc, s.plc(d).unwrap());
        assert_eq!(v.identity, s.identity(d).unwrap());
    }
    Digest {
        views,
        hosts: s.hosts().unwrap(),
        host_gets: hosts.iter().map(|h| s.host(h).unwrap()).collect(),
        records: collections.iter().map(|c| s.stored_records(c).unwrap()).collect(),
        record_gets,
        cursors: s.all_cursors().unwrap(),
        source_cursors: [RELAY, REPLAY, "wss://relay.example.com"]
            .iter()
            .map(|c| s.source_cursor(c).unwrap())
            .collect(),
        counters: s.all_counters().unwrap(),
        meta: [MetaKey::PlcPosition, MetaKey::Overrides, MetaKey::RecomputeStarted]
            .iter()
            .map(|k| s.meta(*k).unwrap())
            .collect(),
        retries: [0, 1_500, 2_000, i64::MAX].iter().map(|t| s.retries_due(*t, 3).unwrap()).collect(),
        marks: [0, 1, 2, 100].iter().map(|n| s.marks(*n).unwrap()).collect(),
    }
}

/// One mixed sequence of batches, every kind of op, keys overwritten,
/// deleted and folded across batches.
fn mixed_batches() -> Vec<Batch> {
    let mut out = Vec::new();
    let mut b = Batch::default();
    b.put_account(DID_A, account(1, "alice.example.com"));
    b.put_account(DID_B, account(2, "bob.example.com"));
    b.put_record(POST, DID_B, "3lcjaaaaaaa2a", record(1));
    b.put_record(POST, DID_A, "3lcjaaaaaaa2b", record(2));
    b.put_record(POSTGATE, DID_A, "3lcjaaaaaaa2a", record(3));
    b.count(store::counter::OP, "create", 3);
    b.count(store::counter::FRAME, "commit", 2);
    b.cursor(RELAY, 2);
    b.plc(DID_A, plc_op("bafyreigenesis", None, "2025-01-01T00:00:00.000Z", HOST_A, "zQ3shkey1"));
    b.plc(DID_C, plc_op("bafyreicgenesis", None, "2025-01-05T00:00:00.000Z", HOST_C, "zQ3shkeyc"));
    b.retry(2_000, DID_C);
    b.retry(1_000, DID_D);
    b.host(HOST_B, noted("did_document", 1_000));
    b.mark(DID_A);
    b.mark(DID_B);
    out.push(b);

    let mut b = Batch::default();
    b.put_account(DID_A, account(5, "alice.example.com"));
    b.delete_record(POST, DID_B, "3lcjaaaaaaa2a");
    b.put_record(LIKE, DID_C, "3lcjaaaaaaa2c", record(4));
    b.count(store::counter::OP, "create", -1);
    b.count(store::counter::OP, "delete", 1);
    b.cursor(RELAY, 5);
    b.cursor(REPLAY, 9);
    b.put_meta(MetaKey::PlcPosition, b"pos1".to_vec());
    b.put_meta(MetaKey::Overrides, vec![0xa0]);
    b.plc(DID_A, plc_op("bafyreisecond", Some("bafyreigenesis"), "2025-01-02T00:00:00.000Z", HOST_B, "zQ3shkey2"));
    b.plc(DID_A, plc_op("bafyreirecover", Some("bafyreigenesis"), "2025-01-03T00:00:00.000Z", HOST_A, "zQ3shkey1"));
    b.put_identity(DID_B, identity(HOST_B, 1_736_000_000_000));
    b.host(HOST_B, reached(3_000));
    b.host(HOST_A, HostOp::Relay(relay_view(2_500)));
    b.host(HOST_C, failed(2_600));
    b.mark(DID_A);
    b.unmark(DID_B, 1);
    b.unretry(1_000, DID_D);
    b.retry(1_500, DID_D);
    out.push(b);

    let mut b = Batch::default();
    b.put_account(DID_D, account(6, "dee.example.com"));
    b.count(store::counter::STATUS, "active", 2);
    b.count(store::counter::STATUS, "active", -2);
    b.delete_meta(MetaKey::PlcPosition);
    b.plc(DID_C, tombstone("bafyreictomb", "bafyreicgenesis", "2025-02-01T00:00:00.000Z"));
    b.host(HOST_B, failed(4_000));
    b.host(HOST_B, noted("relay", 4_100));
    b.host(HOST_C, failed(5_000));
    b.unmark_structure(2);
    b.mark(DID_D);
    b.retry(1_500, DID_A);
    out.push(b);
    out
}

#[test]
fn stores_agree_on_the_map_after_one_sequence_of_map_batches() {
    let mem = MemStore::new();
    let (_dir, disk) = rocks();
    let (_flushed_dir, flushed) = rocks();
    let flushed = Flushed(flushed);
    let mut batches = Vec::new();
    let mut b = Batch::default();
    b.assign(DID_A, None, settled("alice.example.com"));
    b.assign(DID_B, None, migrated("bob.example.com"));
    b.assign(DID_C, None, gone());
    b.mark(DID_D);
    b.mark_structure();
    batches.push(b);
    let mut b = Batch::default();
    b.assign(DID_A, Some(settled("alice.example.com")), migrated("alice.example.net"));
    b.replace_structure(Structure {
        instances: vec![instance("i-a", &[HOST_A]), instance("i-b", &[HOST_B, HOST_C])],
        declarations: vec![DeclarationStatus { operator: DID_D.into(), name: "D".into(), ..Default::default() }],
        host_moves: vec![(DAY1, HostMove { host: HOST_A.into(), from: String::new(), to: "i-a".into(), accounts: 1 })],
    });
    batches.push(b);
    let mut b = Batch::default();
    b.unassign(DID_C, Some(gone()));
    b.reassign(DID_B, Some(migrated("bob.example.com")), settled("bob.example.com"));
    let mut totals = CountTotals::default();
    for a in [migrated("alice.example.net"), settled("bob.example.com")] {
        totals.add_assignment(DID_A, &a);
    }
    b.replace_counts(totals);
    b.clear_marks();
    batches.push(b);
    for (i, batch) in batches.into_iter().enumerate() {
        mem.commit(batch.clone()).unwrap();
        disk.commit(batch.clone()).unwrap();
        flushed.commit(batch).unwrap();
        let want = map_digest(&mem);
        assert_eq!(map_digest(&disk), want, "rocks after batch {i}");
        assert_eq!(map_digest(&flushed), want, "rocks flushed after batch {i}");
    }
    let d = map_digest(&mem);
    assert_eq!(d.assigned.len(), 2, "{d:?}");
    assert!(!d.members.is_empty() && !d.days.is_empty() && !d.flows.is_empty() && !d.instances.is_empty(), "{d:?}");
    assert_eq!(d.marks, (0, false));
}

/// Everything the map's readers return.
#[derive(Debug, PartialEq)]
struct MapDigest {
    assigned: Vec<Option<Assignment>>,
    members: BTreeMap<String, BTreeMap<String, i64>>,
    states: BTreeMap<String, i64>,
    days: Vec<(String, String, i64)>,
    flows: Vec<(String, String, String, i64)>,
    moves: Vec<Vec<(i64, MoveRow)>>,
    instances: Vec<InstanceRecord>,
    host_instance: Vec<(String, String)>,
    declarations: Vec<DeclarationStatus>,
    host_moves: Vec<(i64, HostMove)>,
    on_host: Vec<Vec<String>>,
    handles: Vec<Vec<(String, bool)>>,
    marks: (u64, bool),
}

fn map_digest<S: MapReader>(s: &S) -> MapDigest {
    let dids = [DID_A, DID_B, DID_C, DID_D];
    let mut assigned = Vec::new();
    s.each_assignment(&mut |_, a| {
        assigned.push(Some(a));
        Ok(())
    })
    .unwrap();
    let mut hi: Vec<(String, String)> = s.host_instances().unwrap().into_iter().collect();
    hi.sort();
    MapDigest {
        assigned,
        members: s.host_members().unwrap(),
        states: s.unassigned().unwrap(),
        days: days(s),
        flows: flows(s),
        moves: dids.iter().map(|d| s.moves_of(d).unwrap()).collect(),
        instances: s.instance_records().unwrap(),
        host_instance: hi,
        declarations: s.declaration_statuses().unwrap(),
        host_moves: s.host_moves_since(0).unwrap(),
        on_host: [HOST_A, HOST_B, HOST_C].iter().map(|h| s.accounts_on_host(h, None, 10).unwrap()).collect(),
        handles: ["alice.example.com", "alice.example.net", "bob.example.com"]
            .iter()
            .map(|h| s.dids_of_handle(h).unwrap())
            .collect(),
        marks: s.pending_marks().unwrap(),
    }
}

#[test]
fn stores_agree_after_one_mixed_batch_sequence() {
    let mem = MemStore::new();
    let (_dir, disk) = rocks();
    let (_flushed_dir, flushed) = rocks();
    let flushed = Flushed(flushed);
    let dids = [DID_A, DID_B, DID_C, DID_D];
    let hosts = [HOST_A, HOST_B, HOST_C, "https://pds.example.org"];
    let collections = [POST, POSTGATE, LIKE, "app.bsky.graph.follow"];

    for (i, batch) in mixed_batches().into_iter().enumerate() {
        mem.commit(batch.clone()).unwrap();
        disk.commit(batch.clone()).unwrap();
        flushed.commit(batch).unwrap();
        let want = digest(&mem, &dids, &hosts, &collections);
        assert_eq!(digest(&disk, &dids, &hosts, &collections), want, "rocks after batch {i}");
        assert_eq!(digest(&flushed, &dids, &hosts, &collections), want, "rocks flushed after batch {i}");
    }

    // and the digest is not vacuous: the sequence left something everywhere
    let d = digest(&mem, &dids, &hosts, &collections);
    assert!(d.views.iter().all(AccountView::is_known));
    assert_eq!(d.hosts.len(), 3);
    assert_eq!(d.records.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1, 0]);
    assert_eq!(d.counters.get("op/create"), Some(&2));
    assert_eq!(d.cursors, BTreeMap::from([(RELAY.to_owned(), 5), (REPLAY.to_owned(), 9)]));
    assert_eq!(d.meta, vec![None, Some(vec![0xa0]), None]);
    assert_eq!(d.retries[3], vec![(1_500, DID_A.to_owned()), (1_500, DID_D.to_owned()), (2_000, DID_C.to_owned())]);
    assert_eq!(d.marks[3], (vec![(DID_A.to_owned(), 2), (DID_D.to_owned(), 1)], 5));
    assert!(d.views[2].plc.as_ref().is_some_and(|p| p.tombstoned));
    assert_eq!(d.host_gets[1].as_ref().map(|h| (h.state.as_str(), h.failures)), Some(("offline", 1)));
}

/// `run` names its writers: once it does, a write from any other thread
/// through the store (a source that wrote on its own, racing the writer)
/// is refused, and a source's batch through `store::Writer` lands from the
/// writer's thread.
#[test]
fn once_run_names_its_writers_no_other_thread_writes() {
    let (_dir, store) = rocks();
    store.only_writers(&["writer", "map"]);
    let mut b = Batch::default();
    b.cursor("wss://relay.example", 1);
    let err = store.commit(b.clone()).unwrap_err();
    assert!(matches!(err, store::StoreError::NotTheWriter { .. }), "{err}");
    assert_eq!(store.source_cursor("wss://relay.example").unwrap(), None);
    let s = store.clone();
    std::thread::Builder::new().name("writer".into()).spawn(move || s.commit(b).unwrap()).unwrap().join().unwrap();
    assert_eq!(store.source_cursor("wss://relay.example").unwrap(), Some(1));
    // a source's Writer queues to the writer thread, which commits
    let (tx, mut rx) = tokio::sync::mpsc::channel::<store::Queued>(1);
    let s = store.clone();
    let writer_thread = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            while let Some((batch, ack)) = rx.blocking_recv() {
                ack.send(s.commit(batch)).unwrap();
            }
        })
        .unwrap();
    let w = store::Writer::queued(store.clone(), tx);
    let mut b = Batch::default();
    b.cursor("wss://relay.example", 2);
    w.commit(b).unwrap();
    assert_eq!(w.source_cursor("wss://relay.example").unwrap(), Some(2));
    drop(w);
    writer_thread.join().unwrap();
}

// ---------------------------------------------------------------- the map's families

fn an_assignment_brings_its_counts_rows_and_index_entries_and_takes_them_when_it_changes<S: StoreWriter + MapReader>(
    store: &S,
) {
    commit(store, |b| b.assign(DID_A, None, migrated("alice.example.com")));
    assert_eq!(store.assignment(DID_A).unwrap(), Some(migrated("alice.example.com")));
    assert_eq!(store.account_view(DID_A).unwrap().assignment, Some(migrated("alice.example.com")));
    assert_eq!(store.registered_on(HOST_B).unwrap(), 1);
    assert_eq!(
        store.members_of_host(HOST_B).unwrap(),
        BTreeMap::from([("in_plc".to_owned(), 1), ("registered".to_owned(), 1)])
    );
    assert_eq!(store.moves_of(DID_A).unwrap(), vec![(DAY2, MoveRow { from: HOST_A.into(), to: HOST_B.into() })]);
    assert_eq!(store.accounts_on_host(HOST_B, None, 10).unwrap(), vec![DID_A.to_owned()]);
    assert_eq!(store.dids_of_handle("alice.example.com").unwrap(), vec![(DID_A.to_owned(), true)]);
    let day = |d: &str, h: &str, n: i64| (d.to_owned(), h.to_owned(), n);
    assert_eq!(
        days(store),
        vec![day("2025-01-01", HOST_A, 1), day("2025-01-02", HOST_A, -1), day("2025-01-02", HOST_B, 1)]
    );
    assert_eq!(flows(store), vec![("2025-01-02".to_owned(), HOST_A.to_owned(), HOST_B.to_owned(), 1)]);

    // a second account, and the first changes: the old contributions go
    commit(store, |b| {
        b.assign(DID_B, None, settled("bob.example.com"));
        b.assign(DID_A, Some(migrated("alice.example.com")), settled("alice.example.net"));
    });
    assert_eq!(store.registered_on(HOST_B).unwrap(), 0);
    assert_eq!(store.registered_on(HOST_A).unwrap(), 2);
    assert!(store.members_of_host(HOST_B).unwrap().is_empty(), "zero counts are left out");
    assert!(store.moves_of(DID_A).unwrap().is_empty());
    assert!(store.accounts_on_host(HOST_B, None, 10).unwrap().is_empty());
    assert_eq!(store.accounts_on_host(HOST_A, None, 10).unwrap(), vec![DID_A.to_owned(), DID_B.to_owned()]);
    assert_eq!(store.accounts_on_host(HOST_A, Some(DID_A), 10).unwrap(), vec![DID_B.to_owned()]);
    assert_eq!(store.accounts_on_host(HOST_A, None, 1).unwrap(), vec![DID_A.to_owned()]);
    assert!(store.dids_of_handle("alice.example.com").unwrap().is_empty());
    assert_eq!(store.dids_of_handle("alice.example.net").unwrap(), vec![(DID_A.to_owned(), false)]);
    assert_eq!(days(store), vec![day("2025-01-01", HOST_A, 2)]);
    assert!(flows(store).is_empty());
}

fn a_recompute_assignment_leaves_the_counts_and_replaced_counts_are_all_there_is<S: StoreWriter + MapReader>(
    store: &S,
) {
    commit(store, |b| {
        b.assign(DID_A, None, migrated("alice.example.com"));
        b.assign(DID_C, None, gone());
    });
    assert_eq!(store.unassigned().unwrap(), BTreeMap::from([("deleted".to_owned(), 1)]));
    commit(store, |b| b.reassign(DID_B, None, settled("bob.example.com")));
    assert_eq!(store.registered_on(HOST_A).unwrap(), 0, "reassign leaves the counts to the recompute");
    assert_eq!(store.accounts_on_host(HOST_A, None, 10).unwrap(), vec![DID_B.to_owned()]);
    let mut totals = CountTotals::default();
    totals.add_assignment(DID_B, &settled("bob.example.com"));
    totals.add_assignment(DID_C, &settled("carol.example.com"));
    commit(store, |b| b.replace_counts(totals));
    assert_eq!(store.registered_on(HOST_A).unwrap(), 2);
    assert_eq!(store.registered_on(HOST_B).unwrap(), 0);
    assert!(store.unassigned().unwrap().is_empty(), "every count not in the totals is gone");
    assert!(flows(store).is_empty());
    assert_eq!(days(store), vec![("2025-01-01".to_owned(), HOST_A.to_owned(), 2)]);
}

fn unassign_removes_the_assignment_its_rows_and_index_entries<S: StoreWriter + MapReader>(store: &S) {
    commit(store, |b| b.assign(DID_A, None, migrated("alice.example.com")));
    commit(store, |b| b.unassign(DID_A, Some(migrated("alice.example.com"))));
    assert_eq!(store.assignment(DID_A).unwrap(), None);
    assert!(store.moves_of(DID_A).unwrap().is_empty());
    assert!(store.accounts_on_host(HOST_B, None, 10).unwrap().is_empty());
    assert!(store.dids_of_handle("alice.example.com").unwrap().is_empty());
    assert_eq!(store.move_count().unwrap(), 0);
}

fn clearing_the_marks_takes_every_mark_the_structures_too<S: StoreWriter + MapReader>(store: &S) {
    commit(store, |b| {
        b.mark(DID_A);
        b.mark(DID_A);
        b.mark(DID_D);
        b.mark_structure();
    });
    assert_eq!(store.pending_marks().unwrap(), (2, true));
    commit(store, |b| b.clear_marks());
    assert_eq!(store.pending_marks().unwrap(), (0, false));
    assert_eq!(store.marks(10).unwrap(), (vec![], 0));
    // marks after the clear count again
    commit(store, |b| b.mark(DID_B));
    assert_eq!(store.marks(10).unwrap(), (vec![(DID_B.to_owned(), 1)], 0));
}

fn a_structure_replaces_the_instances_the_host_index_and_the_declarations<S: StoreWriter + MapReader>(store: &S) {
    let decl = |op: &str| DeclarationStatus { operator: op.into(), name: op.into(), ..Default::default() };
    let mv = |host: &str, to: &str| HostMove { host: host.into(), from: String::new(), to: to.into(), accounts: 0 };
    commit(store, |b| {
        b.replace_structure(Structure {
            instances: vec![instance("i-b", &[HOST_B, HOST_C]), instance("i-a", &[HOST_A])],
            declarations: vec![decl(DID_A), decl(DID_B)],
            host_moves: vec![(DAY1, mv(HOST_A, "i-a")), (DAY1, mv(HOST_B, "i-b"))],
        })
    });
    assert_eq!(store.instance_count().unwrap(), 2);
    assert_eq!(
        store.instance_records().unwrap().iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["i-a", "i-b"],
        "in id order"
    );
    assert_eq!(store.instance_id_of_host(HOST_C).unwrap().as_deref(), Some("i-b"));
    assert_eq!(store.instance_encoded("i-a").unwrap().unwrap().decode().unwrap(), instance("i-a", &[HOST_A]));
    assert_eq!(store.declaration_status(DID_B).unwrap(), Some(decl(DID_B)));
    commit(store, |b| {
        b.replace_structure(Structure {
            instances: vec![instance("i-ab", &[HOST_A, HOST_B])],
            declarations: vec![decl(DID_C)],
            host_moves: vec![(DAY2, mv(HOST_B, "i-ab"))],
        })
    });
    assert_eq!(store.instance_count().unwrap(), 1);
    assert_eq!(store.instance_id_of_host(HOST_C).unwrap(), None, "a host left out has no instance");
    assert_eq!(store.instance_id_of_host(HOST_A).unwrap().as_deref(), Some("i-ab"));
    assert!(store.instance_encoded("i-a").unwrap().is_none());
    assert_eq!(store.declaration_statuses().unwrap(), vec![decl(DID_C)]);
    // host moves accumulate, in time order, and are read from a time on
    assert_eq!(store.host_moves_since(0).unwrap().len(), 3);
    assert_eq!(store.host_moves_since(DAY2).unwrap(), vec![(DAY2, mv(HOST_B, "i-ab"))]);
    // an unchanged instance is recognised without decoding
    let a = store.instance_encoded("i-ab").unwrap().unwrap();
    assert!(a == store::map::Encoded::of(&instance("i-ab", &[HOST_A, HOST_B])));
}
