//! The single writer: applies [`Event`]s to the store in batches, with the
//! cursor of their source in the same atomic write batch, so the store never
//! holds an effect without its cursor or a cursor without its effects.
//!
//! Exactly-once: an event whose `seq` is not above the source's cursor has
//! already been applied (relays replay `seq > cursor` on reconnect, and a
//! restart resumes from the committed cursor) and is dropped as
//! `duplicate`, so applying the same event twice changes nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::event::{Event, EventKind, LABELER_SERVICE};
use crate::firehose::frame::Action;
use crate::identity::verify::SigStatus;
use crate::metrics;
use crate::store::{self, counter, AccountState, Batch as StoreBatch, Store, StoreWriter, StoredRecord};

/// Events per write batch. Large enough that the commit cost (one WAL
/// write, ~100 µs) is spread thin at full replay speed; small enough that a
/// batch commits in a few milliseconds and a crash replays little.
pub const BATCH_EVENTS: usize = 2_000;

/// Longest an applied event waits in memory before its batch commits, so a
/// slow live stream still reaches the disk (and `stats`) promptly.
pub const BATCH_MAX_AGE: Duration = Duration::from_millis(250);

/// Accounts kept in memory between batches (clean ones are dropped all at
/// once past this, after a commit). Each is ~200 bytes: ~100 MB at the cap.
/// Most events touch an account seen recently, so this saves a RocksDB read
/// and a decode per event.
pub const ACCOUNT_CACHE: usize = 500_000;

/// Pending effects of the current batch.
#[derive(Default)]
struct Batch {
    /// Accounts changed in this batch (their current state is in `cache`),
    /// each with its last active day when the batch first touched it: an
    /// account active on a new day is marked for the map.
    dirty: HashMap<String, Option<i32>>,
    /// Accounts whose place in the map may have changed (new, status).
    map: std::collections::HashSet<String>,
    /// A declaration or membership record changed.
    map_structure: bool,
    counters: HashMap<Vec<u8>, i64>,
    records: StoreBatch,
    events: usize,
    started: Option<Instant>,
}

/// The writer.
pub struct Ingest {
    store: Store,
    source: String,
    /// Last seq applied (committed or pending).
    cursor: Option<i64>,
    committed: Option<i64>,
    batch: Batch,
    /// Account states: the committed state, or the pending one for dirty
    /// accounts.
    cache: HashMap<String, AccountState>,
    /// Reused buffer for counter keys.
    key: Vec<u8>,
    /// Where DIDs go to be resolved (never waited on).
    resolve: Option<crate::identity::resolve::ResolveQueue>,
    /// What this writer did so far.
    totals: Totals,
    /// The relay said the cursor asked for was older than it keeps: the
    /// next seq may jump (to its oldest event) once.
    outdated_cursor: bool,
    /// Collections with a counter of their own.
    collections: std::collections::HashSet<String>,
    /// For a replayed file: frames consumed so far, and how many a
    /// previous run of the file had consumed (those are skipped whole, so
    /// a rerun after a kill counts no frame twice, with a seq or without).
    frames: Option<(i64, i64)>,
}

/// Collections counted one by one (`coll/<nsid>/<action>`); the ops of
/// others are counted under `coll/other/<action>`.
pub const MAX_COLLECTIONS: usize = 1_000;

/// A seq more than this above the last applied one is refused as
/// implausible (a corrupted or hostile frame: one such frame would move the
/// cursor past every later event), unless the relay has just said the
/// cursor was outdated (`#info OutdatedCursor`), when it resumes from its
/// oldest event. About an hour of the whole network's events.
pub const MAX_SEQ_JUMP: i64 = 10_000_000;
/// No relay numbers this far (today's are about 10^10): a seq above is
/// refused whatever the cursor.
pub const MAX_SEQ: i64 = 1 << 50;

/// What one writer did: events applied, and events dropped because the
/// source's cursor had already passed them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub applied: u64,
    pub duplicates: u64,
}

impl Ingest {
    /// A writer for events of `source` (a relay URL, or a replay's name);
    /// resumes from that source's stored cursor.
    pub fn new(store: Store, source: &str) -> store::Result<Ingest> {
        let cursor = store.cursor(source)?;
        let collections = store
            .counters()?
            .keys()
            .filter_map(|k| k.strip_prefix("coll/")?.rsplit_once('/').map(|(c, _)| c.to_owned()))
            .filter(|c| c != "other")
            .collect();
        if let Some(c) = cursor {
            metrics::CURSOR.set(c);
            metrics::CURSOR_COMMITTED.set(c);
        }
        Ok(Ingest {
            store,
            source: source.to_owned(),
            cursor,
            committed: cursor,
            batch: Batch::default(),
            cache: HashMap::new(),
            key: Vec::with_capacity(128),
            resolve: None,
            totals: Totals::default(),
            outdated_cursor: false,
            collections,
            frames: None,
        })
    }

    /// Keeps the count of frames consumed with the cursor (for a file
    /// replayed from its start): a rerun skips what a previous run took.
    pub fn counting_frames(mut self) -> store::Result<Ingest> {
        let done = self.store.frame_position(&self.source)?.unwrap_or(0);
        self.frames = Some((0, done));
        Ok(self)
    }

    /// Asks `queue` to resolve each account the first time this process
    /// sees it, and again after each `#identity`.
    pub fn with_resolver(mut self, queue: crate::identity::resolve::ResolveQueue) -> Ingest {
        self.resolve = Some(queue);
        self
    }

    /// The last seq applied (committed or pending): where a reconnect resumes.
    pub fn cursor(&self) -> Option<i64> {
        self.cursor
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The cursor's name (a relay URL, or a replay's source).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// What this writer did so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Whether the current batch should be committed now.
    pub fn due(&self) -> bool {
        self.batch.events >= BATCH_EVENTS || self.batch.started.is_some_and(|t| t.elapsed() >= BATCH_MAX_AGE)
    }

    /// How long until the current batch is due by age (`None`: empty batch).
    pub fn due_in(&self) -> Option<Duration> {
        self.batch.started.map(|t| BATCH_MAX_AGE.saturating_sub(t.elapsed()))
    }

    fn count(&mut self, group: &str, label: &str, n: i64) {
        self.count_parts(group, &[label], n);
    }

    /// Counts under `group/part0part1…`, allocating only for a key not yet
    /// in this batch.
    fn count_parts(&mut self, group: &str, parts: &[&str], n: i64) {
        self.key.clear();
        self.key.extend_from_slice(group.as_bytes());
        self.key.push(b'/');
        for p in parts {
            self.key.extend_from_slice(p.as_bytes());
        }
        match self.batch.counters.get_mut(self.key.as_slice()) {
            Some(v) => *v += n,
            None => _ = self.batch.counters.insert(self.key.clone(), n),
        }
    }

    fn drop_event(&mut self, reason: &'static str) {
        metrics::DROPPED.with_label_values(&[reason]).inc();
        self.count(counter::DROPPED, reason, 1);
    }

    /// The account's state, loaded into the batch on first touch.
    fn account(&mut self, did: &str, seq: i64) -> store::Result<&mut AccountState> {
        if !self.cache.contains_key(did) {
            if let Some(q) = &self.resolve {
                q.request(did, false);
            }
            let state = match self.store.account(did)? {
                Some(s) => s,
                None => {
                    self.batch.map.insert(did.to_owned());
                    self.count(counter::TOTAL, "accounts", 1);
                    self.count(counter::STATUS, "unknown", 1);
                    AccountState { first_seq: seq, ..AccountState::default() }
                }
            };
            self.cache.insert(did.to_owned(), state);
        }
        let state = self.cache.get_mut(did).expect("inserted above");
        if !self.batch.dirty.contains_key(did) {
            self.batch.dirty.insert(did.to_owned(), state.active_day());
        }
        Ok(state)
    }

    /// Applies one event to the pending batch (commit with [`flush`](Self::flush)).
    pub fn apply(&mut self, ev: Event) -> store::Result<()> {
        if let Some((n, done)) = &mut self.frames {
            *n += 1;
            if *n <= *done {
                // consumed by a previous run of this file
                self.totals.duplicates += 1;
                return Ok(());
            }
        }
        if self.batch.started.is_none() {
            self.batch.started = Some(Instant::now());
        }
        self.batch.events += 1;
        if let Some(seq) = ev.seq {
            if self.cursor.is_some_and(|c| seq <= c) {
                self.totals.duplicates += 1;
                self.drop_event("duplicate");
                return Ok(());
            }
            let jump = self.cursor.is_some_and(|c| seq.saturating_sub(c) > MAX_SEQ_JUMP) && !self.outdated_cursor;
            let implausible = !(0..=MAX_SEQ).contains(&seq);
            if implausible || jump {
                let reason = if implausible { "seq_implausible" } else { "seq_jump" };
                metrics::SEQ_REFUSED.with_label_values(&[reason]).inc();
                self.drop_event(reason);
                tracing::warn!(
                    seq,
                    cursor = self.cursor,
                    max_jump = MAX_SEQ_JUMP,
                    reason,
                    "frame refused: its seq is implausible over the cursor (not applied; the cursor stays)"
                );
                return Ok(());
            }
        }
        self.totals.applied += 1;
        let label = ev.kind_label();
        if label != "rejected" {
            self.count(counter::FRAME, label, 1);
        }
        let now_ms = now_ms();
        let seq = ev.seq.unwrap_or(0);
        let touch = |a: &mut AccountState| {
            a.last_seq = seq;
            a.seen_at_ms = now_ms;
            if ev.time_us.is_some() {
                a.last_time_us = ev.time_us;
            }
        };
        // only an event applied moves the cursor: a skipped, rejected or
        // refused frame's seq is not taken
        let mut applied = true;
        match &ev.kind {
            EventKind::Commit { signature: SigStatus::Invalid(reason), did, .. }
            | EventKind::Sync { signature: SigStatus::Invalid(reason), did, .. } => {
                applied = false;
                metrics::SIGNATURES.with_label_values(&[reason]).inc();
                self.count(counter::SIGNATURE, reason, 1);
                self.drop_event("bad_signature");
                tracing::warn!(did, seq, reason, kind = label, "commit signature does not verify; not applied");
            }
            EventKind::Commit { did, rev, ops, records, blocks_missing, signature, sig } => {
                metrics::SIGNATURES.with_label_values(&[signature.label()]).inc();
                self.count(counter::SIGNATURE, signature.label(), 1);
                let a = self.account(did, seq)?;
                touch(a);
                a.rev = Some(rev.clone());
                a.commits += 1;
                for (action, collection) in ops {
                    metrics::OPS.with_label_values(&[action.as_str()]).inc();
                    self.count(counter::OP, action.as_str(), 1);
                    // one counter per collection, up to MAX_COLLECTIONS of
                    // them; later ones are counted together (anyone can
                    // write records of any NSID)
                    let known = self.collections.contains(collection.as_str());
                    let c = if known || self.collections.len() < MAX_COLLECTIONS {
                        if !known {
                            self.collections.insert(collection.clone());
                        }
                        collection.as_str()
                    } else {
                        "other"
                    };
                    self.count_parts(counter::COLLECTION, &[c, "/", action.as_str()], 1);
                }
                if *blocks_missing > 0 {
                    metrics::BLOCKS_MISSING.inc_by(u64::from(*blocks_missing));
                    self.count(counter::TOTAL, "record_blocks_missing", i64::from(*blocks_missing));
                }
                for w in records {
                    if let (Some(record), Action::Create | Action::Update) = (&w.record, w.action) {
                        if let Err(reason) = check_record(&w.collection, &w.rkey, record) {
                            tracing::warn!(did, collection = %w.collection, reason, "record does not match its lexicon; not stored");
                            self.count_parts(counter::INVALID_RECORD, &[&w.collection, "/", reason], 1);
                            continue;
                        }
                    }
                    let project = [crate::cluster::declaration::DECLARATION, crate::cluster::declaration::MEMBERSHIP]
                        .contains(&w.collection.as_str());
                    if project {
                        self.batch.map_structure = true;
                    }
                    match (w.action, &w.record, &w.cid) {
                        (Action::Delete, _, _) => self.batch.records.delete_record(&w.collection, did, &w.rkey),
                        (_, Some(record), Some(cid)) => {
                            // a project record keeps its signature: it
                            // counts only once that is known to be valid
                            let sig = sig.as_ref().filter(|_| project).map(|s| store::RecordSig {
                                status: signature.label().to_owned(),
                                digest: s.digest.to_vec(),
                                sig: s.sig.clone(),
                                claimed_us: s.claimed_us,
                            });
                            if project && sig.as_ref().is_none_or(|s| !s.verified_on_arrival()) {
                                // its key is not known yet: ask for it
                                if let Some(q) = &self.resolve {
                                    q.request(did, false);
                                }
                            }
                            if w.collection == LABELER_SERVICE {
                                // a labeler's endpoint and label key are in
                                // its DID document, not in the PLC state a
                                // routine resolution reads: fetch it
                                if let Some(q) = &self.resolve {
                                    q.request(did, true);
                                }
                            }
                            let v =
                                StoredRecord { cid: cid.clone(), record: record.clone(), seq, rev: rev.clone(), sig };
                            self.batch.records.put_record(&w.collection, did, &w.rkey, v);
                        }
                        // Block missing: already counted; the old version
                        // (if any) stays rather than being lost.
                        _ => {}
                    }
                }
            }
            EventKind::Sync { did, rev, signature, .. } => {
                metrics::SIGNATURES.with_label_values(&[signature.label()]).inc();
                self.count(counter::SIGNATURE, signature.label(), 1);
                let a = self.account(did, seq)?;
                touch(a);
                a.rev = Some(rev.clone());
            }
            EventKind::Identity { did, handle } => {
                if let Some(q) = &self.resolve {
                    q.request(did, true);
                }
                let a = self.account(did, seq)?;
                touch(a);
                if handle.is_some() {
                    a.handle = handle.clone();
                }
            }
            EventKind::Account { did, active, status } => {
                let a = self.account(did, seq)?;
                let before = a.status_label();
                touch(a);
                a.active = Some(*active);
                a.status = status.clone();
                let after = a.status_label();
                self.count(counter::ACCOUNT_EVENT, store::status_label(Some(*active), status.as_deref()), 1);
                if before != after {
                    self.count(counter::STATUS, before, -1);
                    self.count(counter::STATUS, after, 1);
                    self.batch.map.insert(did.clone());
                }
            }
            EventKind::Info { name, .. } => {
                applied = false;
                if name == "OutdatedCursor" {
                    self.outdated_cursor = true;
                }
                let l = metrics::info_label(name);
                metrics::INFO.with_label_values(&[l]).inc();
                self.count(counter::INFO, l, 1);
                self.drop_event("info");
            }
            EventKind::StreamError { error, .. } => {
                applied = false;
                let l = metrics::error_label(error);
                metrics::ERROR_FRAMES.with_label_values(&[l]).inc();
                self.count(counter::ERROR_FRAME, l, 1);
                self.drop_event("error_frame");
            }
            EventKind::Skipped { deprecated } => {
                applied = false;
                self.drop_event(if *deprecated { "deprecated" } else { "unknown_type" });
            }
            EventKind::Rejected { reason } => {
                applied = false;
                self.count(counter::ERROR, reason, 1);
                self.drop_event("rejected");
            }
        }
        if let Some(s) = ev.seq.filter(|_| applied) {
            self.cursor = Some(s);
            self.outdated_cursor = false;
            metrics::CURSOR.set(s);
        }
        if let Some(t) = ev.time_us {
            metrics::LAG_MS.set((now_ms.saturating_mul(1000).saturating_sub(t)) / 1000);
        }
        Ok(())
    }

    /// Commits the pending batch (effects, counters and cursor at once).
    pub fn flush(&mut self) -> store::Result<()> {
        if self.batch.events == 0 {
            return Ok(());
        }
        let start = Instant::now();
        let batch = std::mem::take(&mut self.batch);
        let mut wb = batch.records;
        let mut map = batch.map;
        for (did, active_before) in &batch.dirty {
            if let Some(state) = self.cache.get(did) {
                wb.put_account(did, state.clone());
                // active on a day it was not: its activity count moves
                if *active_before != state.active_day() {
                    map.insert(did.clone());
                }
            }
        }
        for did in &map {
            wb.mark(did);
        }
        if batch.map_structure {
            wb.mark_structure();
        }
        for (k, v) in batch.counters {
            wb.count_key(k, v);
        }
        if self.cursor != self.committed {
            if let Some(c) = self.cursor {
                wb.cursor(&self.source, c);
            }
        }
        if let Some((n, _)) = self.frames {
            wb.frame_position(&self.source, n);
        }
        self.store.commit(wb)?;
        if self.cache.len() > ACCOUNT_CACHE {
            self.cache.clear();
        }
        self.committed = self.cursor;
        if let Some(c) = self.committed {
            metrics::CURSOR_COMMITTED.set(c);
        }
        metrics::BATCH_EVENTS.observe(batch.events as f64);
        metrics::BATCH_COMMIT_SECONDS.observe(start.elapsed().as_secs_f64());
        Ok(())
    }

    /// Flushes and gives the store back.
    pub fn finish(mut self) -> store::Result<Store> {
        self.flush()?;
        Ok(self.store)
    }
}

/// Checks a kept record against the project's own lexicons (other stored
/// collections pass as they are).
fn check_record(collection: &str, rkey: &str, record: &[u8]) -> Result<(), &'static str> {
    use crate::cluster::declaration;
    if collection != declaration::DECLARATION && collection != declaration::MEMBERSHIP {
        return Ok(());
    }
    let json = crate::repo::cbor::to_json(record).map_err(|_| "shape")?;
    declaration::validate(collection, rkey, &json)
}
