//! The in-memory twin of the RocksDB store: the same [`StoreReader`] and
//! [`StoreWriter`], with the merges (PLC operations, host changes, counters,
//! marks) applied as the batch commits rather than when read. For tests of
//! the stages above the store, and to hold the RocksDB store to the same
//! contract: one storage suite (`tests/storage.rs`) runs on both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::map::{Fam, RawMap};
use super::records::{HostRecord, IdentityRecord, PlcRecord};
use super::{AccountState, AccountView, Batch, MetaKey, Op, Result, StoreReader, StoreWriter, StoredRecord};

#[derive(Default)]
struct Families {
    accounts: BTreeMap<String, AccountState>,
    records: BTreeMap<(String, String, String), StoredRecord>,
    counters: BTreeMap<Vec<u8>, i64>,
    cursors: BTreeMap<String, i64>,
    frame_positions: BTreeMap<String, i64>,
    meta: BTreeMap<MetaKey, Vec<u8>>,
    plc: BTreeMap<String, PlcRecord>,
    identity: BTreeMap<String, IdentityRecord>,
    contacts: BTreeMap<String, super::records::ContactCheck>,
    pds_status: BTreeMap<String, super::records::PdsView>,
    retry: BTreeSet<(i64, String)>,
    hosts: BTreeMap<String, HostRecord>,
    marks: BTreeMap<String, i64>,
    structure: i64,
    /// The map's families, as the RocksDB store keeps them (keys and
    /// values encoded the same way).
    map: BTreeMap<Fam, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl super::map::Sink for Families {
    fn put(&mut self, fam: Fam, k: Vec<u8>, v: Vec<u8>) {
        self.map.entry(fam).or_default().insert(k, v);
    }
    fn delete(&mut self, fam: Fam, k: Vec<u8>) {
        self.map.entry(fam).or_default().remove(&k);
    }
    fn add(&mut self, k: Vec<u8>, n: i64) {
        let counts = self.map.entry(Fam::Counts).or_default();
        let v = counts.get(&k).and_then(|v| <[u8; 8]>::try_from(&v[..]).ok()).map_or(0, i64::from_le_bytes);
        counts.insert(k, v.wrapping_add(n).to_le_bytes().to_vec());
    }
    fn clear(&mut self, fam: Fam) {
        self.map.remove(&fam);
    }
    fn clear_marks(&mut self) {
        self.marks.clear();
        self.structure = 0;
    }
}

/// The store in memory. A batch commits under one lock: readers see all of
/// it or none.
#[derive(Default)]
pub struct MemStore {
    f: Mutex<Families>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn read<T>(&self, f: impl FnOnce(&Families) -> T) -> T {
        f(&self.f.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl StoreReader for MemStore {
    fn account_view(&self, did: &str) -> Result<AccountView> {
        Ok(self.read(|f| AccountView {
            plc: f.plc.get(did).cloned(),
            identity: f.identity.get(did).cloned(),
            firehose: f.accounts.get(did).cloned(),
            assignment: f
                .map
                .get(&Fam::Assign)
                .and_then(|a| a.get(did.as_bytes()))
                .and_then(|b| super::from_cbor(super::CF_ASSIGN, b).ok()),
        }))
    }
    fn account_state(&self, did: &str) -> Result<Option<AccountState>> {
        Ok(self.read(|f| f.accounts.get(did).cloned()))
    }
    fn plc(&self, did: &str) -> Result<Option<PlcRecord>> {
        Ok(self.read(|f| f.plc.get(did).cloned()))
    }
    fn identity(&self, did: &str) -> Result<Option<IdentityRecord>> {
        Ok(self.read(|f| f.identity.get(did).cloned()))
    }
    fn host(&self, endpoint: &str) -> Result<Option<HostRecord>> {
        Ok(self.read(|f| f.hosts.get(endpoint).cloned()))
    }
    fn pds_view(&self, did: &str) -> Result<Option<super::records::PdsView>> {
        Ok(self.read(|f| f.pds_status.get(did).cloned()))
    }
    fn contact_check(&self, key: &str) -> Result<Option<super::records::ContactCheck>> {
        Ok(self.read(|f| f.contacts.get(key).cloned()))
    }
    fn contact_checks(&self) -> Result<Vec<(String, super::records::ContactCheck)>> {
        Ok(self.read(|f| f.contacts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }
    fn hosts(&self) -> Result<Vec<(String, HostRecord)>> {
        Ok(self.read(|f| f.hosts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }
    fn stored_record(&self, collection: &str, did: &str, rkey: &str) -> Result<Option<StoredRecord>> {
        Ok(self.read(|f| f.records.get(&(collection.into(), did.into(), rkey.into())).cloned()))
    }
    fn stored_records(&self, collection: &str) -> Result<Vec<(String, String, StoredRecord)>> {
        Ok(self.read(|f| {
            f.records
                .iter()
                .filter(|((c, _, _), _)| c == collection)
                .map(|((_, d, r), v)| (d.clone(), r.clone(), v.clone()))
                .collect()
        }))
    }
    fn source_cursor(&self, source: &str) -> Result<Option<i64>> {
        Ok(self.read(|f| f.cursors.get(source).copied()))
    }
    fn all_cursors(&self) -> Result<BTreeMap<String, i64>> {
        Ok(self.read(|f| f.cursors.clone()))
    }
    fn all_counters(&self) -> Result<BTreeMap<String, i64>> {
        Ok(self.read(|f| f.counters.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), *v)).collect()))
    }
    fn meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>> {
        Ok(self.read(|f| f.meta.get(&key).cloned()))
    }
    fn retries_due(&self, until_ms: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        Ok(self.read(|f| f.retry.iter().take_while(|(at, _)| *at <= until_ms).take(limit).cloned().collect()))
    }
    fn marks(&self, limit: usize) -> Result<(Vec<(String, i64)>, i64)> {
        Ok(self.read(|f| {
            let marks = f.marks.iter().filter(|(_, n)| **n != 0).take(limit).map(|(d, n)| (d.clone(), *n)).collect();
            (marks, f.structure)
        }))
    }
}

impl StoreWriter for MemStore {
    fn commit(&self, batch: Batch) -> Result<()> {
        let mut f = self.f.lock().unwrap_or_else(|p| p.into_inner());
        for op in batch.ops {
            match op {
                Op::Account(did, st) => _ = f.accounts.insert(did, st),
                Op::PutRecord { collection, did, rkey, record } => {
                    _ = f.records.insert((collection, did, rkey), record)
                }
                Op::DeleteRecord { collection, did, rkey } => _ = f.records.remove(&(collection, did, rkey)),
                Op::Count(k, n) => *f.counters.entry(k).or_default() += n,
                Op::Cursor(src, seq) => _ = f.cursors.insert(src, seq),
                Op::DeleteCursor(src) => {
                    f.cursors.remove(&src);
                    f.frame_positions.remove(&src);
                }
                Op::FramePosition(src, n) => _ = f.frame_positions.insert(src, n),
                Op::PutMeta(k, v) => _ = f.meta.insert(k, v),
                Op::DeleteMeta(k) => _ = f.meta.remove(&k),
                Op::Plc(did, o) => f.plc.entry(did).or_default().apply(o),
                Op::Identity(did, r) => _ = f.identity.insert(did, r),
                Op::Contact(k, c) => _ = f.contacts.insert(k, c),
                Op::PdsView(did, v) => _ = f.pds_status.insert(did, v),
                Op::Retry { at_ms, did } => _ = f.retry.insert((at_ms, did)),
                Op::Unretry { at_ms, did } => _ = f.retry.remove(&(at_ms, did)),
                Op::Host(h, o) => {
                    let at = o.at_ms();
                    f.hosts.entry(h).or_insert_with(|| HostRecord::new_at(at)).apply(o);
                }
                Op::Mark(did, n) => {
                    let v = f.marks.entry(did.clone()).or_default();
                    *v += n;
                    if *v == 0 {
                        f.marks.remove(&did);
                    }
                }
                Op::MarkStructure(n) => f.structure += n,
                Op::Map(op) => super::map::expand(op, &mut *f),
            }
        }
        Ok(())
    }
}

impl RawMap for MemStore {
    fn map_get(&self, fam: Fam, key: &[u8]) -> Result<Option<Box<[u8]>>> {
        Ok(self.read(|f| f.map.get(&fam).and_then(|m| m.get(key)).map(|v| v[..].into())))
    }
    fn map_scan(&self, fam: Fam, start: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        // a copy of the range, so the callback runs without the lock
        let entries: Vec<(Vec<u8>, Vec<u8>)> = self.read(|fs| {
            fs.map
                .get(&fam)
                .map(|m| m.range(start.to_vec()..).map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        });
        for (k, v) in entries {
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
    fn pending_marks(&self) -> Result<(u64, bool)> {
        Ok(self.read(|f| (f.marks.values().filter(|n| **n != 0).count() as u64, f.structure != 0)))
    }
}
