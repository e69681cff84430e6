//! The map's families, typed: what the map maintainer writes (an
//! assignment's change with its counts, rows and indexes; the counts
//! replaced whole; the marks cleared; the structure replaced) and what its
//! readers ask (members per host, states, days, flows, moves, instances,
//! declarations, indexes). Keys and codecs stay here: no caller names a
//! family or builds a key.
//!
//! The readers are written once ([`MapReader`], over the raw primitives of
//! [`RawMap`]) and run on the RocksDB store, on a snapshot of it (the
//! exports) and on the in-memory store; the writes are expanded once
//! ([`expand`], into a [`Sink`]) and land in a RocksDB write batch or in
//! memory.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::records::{bucket, Assignment, DeclarationStatus, HostMove, InstanceRecord, MoveRow};
use super::{from_cbor, to_cbor, Result};

/// The map's families (named by the store's own implementations only:
/// `tests/imports.rs` holds every other file to that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fam {
    Assign,
    Counts,
    Moves,
    HostAccounts,
    Handles,
    Instances,
    HostInstance,
    Declarations,
    HostMoves,
}

impl Fam {
    pub(super) fn cf(self) -> &'static str {
        match self {
            Fam::Assign => super::CF_ASSIGN,
            Fam::Counts => super::CF_MAP_COUNTS,
            Fam::Moves => super::CF_MOVES,
            Fam::HostAccounts => super::CF_HOST_ACCOUNTS,
            Fam::Handles => super::CF_HANDLES,
            Fam::Instances => super::CF_INSTANCES,
            Fam::HostInstance => super::CF_HOST_INSTANCE,
            Fam::Declarations => super::CF_DECLARATIONS,
            Fam::HostMoves => super::CF_HOST_MOVES,
        }
    }
}

// ---------------------------------------------------------------- keys

/// Key prefixes in the `map_counts` family.
mod key {
    /// `h\0<host>\0<bucket>`: current members of a host, by bucket.
    pub const HOST: u8 = b'h';
    /// `s\0<reason>`: accounts in an explicit state.
    pub const STATE: u8 = b's';
    /// `d\0<YYYY-MM-DD>\0<host>`: joins minus leaves that day.
    pub const DAY: u8 = b'd';
    /// `f\0<YYYY-MM-DD>\0<from>\0<to>`: migrations that day.
    pub const FLOW: u8 = b'f';
    /// `v\0<host>\0<domain>`: accounts created on the host whose handle
    /// under the domain verifies both ways (see
    /// `Assignment::proves_domains`).
    pub const VOUCHED: u8 = b'v';
    /// `a\0<host>\0<YYYY-MM-DD>`: accounts on the host whose last firehose
    /// event was that day (so the accounts active since a day are the sum
    /// over the days from it: distinct, exact).
    pub const ACTIVE: u8 = b'a';
    /// `b\0<host>\0<YYYY-MM-DD>`: accounts created on the host that day
    /// (their PLC genesis operation named it).
    pub const BORN: u8 = b'b';

    pub fn prefix(kind: u8) -> [u8; 2] {
        [kind, 0]
    }
    /// Writes the key of `kind` and `parts` into `k` (cleared first).
    pub fn join_into<'a>(k: &mut Vec<u8>, kind: u8, parts: impl IntoIterator<Item = &'a [u8]>) {
        k.clear();
        k.push(kind);
        for p in parts {
            k.push(0);
            k.extend_from_slice(p);
        }
    }
    /// The parts of a key after its prefix.
    pub fn parts(k: &[u8]) -> Vec<&str> {
        k.get(2..).unwrap_or_default().split(|b| *b == 0).map(|p| std::str::from_utf8(p).unwrap_or("")).collect()
    }
}

/// One `map_counts` entry, by parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountKey<'a> {
    /// Members of a host in a bucket.
    Host { host: &'a str, bucket: &'a str },
    /// Accounts in an explicit state.
    State(&'a str),
    /// Joins minus leaves of a host that day.
    Day { day: time::Date, host: &'a str },
    /// Migrations that day.
    Flow { day: time::Date, from: &'a str, to: &'a str },
    /// Accounts created on a host whose handle under the domain verifies.
    Vouched { host: &'a str, domain: &'a str },
    /// Accounts on a host whose last firehose event was that day.
    Active { host: &'a str, day: time::Date },
    /// Accounts created on a host that day.
    Born { host: &'a str, day: time::Date },
}

impl CountKey<'_> {
    /// Writes the stored key into `k` (cleared first).
    fn write(&self, k: &mut Vec<u8>) {
        match *self {
            CountKey::Host { host, bucket } => key::join_into(k, key::HOST, [host.as_bytes(), bucket.as_bytes()]),
            CountKey::State(reason) => key::join_into(k, key::STATE, [reason.as_bytes()]),
            CountKey::Vouched { host, domain } => key::join_into(k, key::VOUCHED, [host.as_bytes(), domain.as_bytes()]),
            CountKey::Day { day, host } => {
                k.clear();
                k.extend_from_slice(&[key::DAY, 0]);
                crate::clock::date_into(k, day);
                k.push(0);
                k.extend_from_slice(host.as_bytes());
            }
            CountKey::Active { host, day } | CountKey::Born { host, day } => {
                let kind = if matches!(self, CountKey::Active { .. }) { key::ACTIVE } else { key::BORN };
                k.clear();
                k.extend_from_slice(&[kind, 0]);
                k.extend_from_slice(host.as_bytes());
                k.push(0);
                crate::clock::date_into(k, day);
            }
            CountKey::Flow { day, from, to } => {
                k.clear();
                k.extend_from_slice(&[key::FLOW, 0]);
                crate::clock::date_into(k, day);
                for p in [from, to] {
                    k.push(0);
                    k.extend_from_slice(p.as_bytes());
                }
            }
        }
    }

    /// The stored key.
    fn bytes(&self) -> Vec<u8> {
        let mut k = Vec::new();
        self.write(&mut k);
        k
    }
}

/// Calls `f(key, n)` for every count an assignment of `did` contributes (a
/// key may come more than once; the amounts add up): its host's buckets
/// (or its state), the domains it vouches for its host under, and per
/// dated change of host a leave, a join and a flow.
pub fn for_each_count<'a>(did: &str, a: &'a Assignment, mut f: impl FnMut(CountKey<'a>, i64)) {
    match (&a.host, &a.reason) {
        (Some(h), _) => {
            for b in &a.buckets {
                f(CountKey::Host { host: h, bucket: b }, 1);
            }
            for domain in a.proves_domains(did) {
                f(CountKey::Vouched { host: h, domain }, 1);
            }
            if let Some(d) = a.active_day {
                f(CountKey::Active { host: h, day: super::records::date_of_day(d) }, 1);
            }
        }
        (None, Some(r)) => f(CountKey::State(r), 1),
        (None, None) => {}
    }
    if let (Some(b), Some(d)) = (&a.born, a.born_day) {
        f(CountKey::Born { host: b, day: super::records::date_of_day(d) }, 1);
    }
    let mut prev: Option<&str> = None;
    for (at, host) in &a.timeline {
        let day = crate::clock::date_of(*at);
        if let Some(p) = prev {
            f(CountKey::Day { day, host: p }, -1);
        }
        if let Some(h) = host {
            f(CountKey::Day { day, host: h }, 1);
            if let Some(p) = prev {
                f(CountKey::Flow { day, from: p, to: h }, 1);
            }
        }
        prev = host.as_deref();
    }
}

/// Key of a `moves` row: `<did>\0<ms, big-endian, sign-flipped>`.
fn move_key(did: &str, at_ms: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(did.len() + 9);
    k.extend_from_slice(did.as_bytes());
    k.push(0);
    k.extend_from_slice(&time_key(at_ms));
    k
}

/// A time as a key part that sorts in time order (sign-flipped big-endian).
fn time_key(at_ms: i64) -> [u8; 8] {
    ((at_ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_of_key(t: &[u8]) -> Option<i64> {
    let t: [u8; 8] = t.try_into().ok()?;
    Some((u64::from_be_bytes(t) ^ (1 << 63)) as i64)
}

/// The `moves` rows of an assignment: a row per arrival on a host straight
/// from another.
fn moves_of_assignment(did: &str, a: &Assignment) -> Vec<(Vec<u8>, MoveRow)> {
    let mut out = Vec::new();
    let mut prev: Option<&str> = None;
    for (at, host) in &a.timeline {
        if let (Some(p), Some(h)) = (prev, host) {
            out.push((move_key(did, *at), MoveRow { from: p.to_owned(), to: h.clone() }));
        }
        prev = host.as_deref();
    }
    out
}

/// Key of a `host_moves` row: time, then host.
fn host_move_key(at_ms: i64, host: &str) -> Vec<u8> {
    [&time_key(at_ms)[..], host.as_bytes()].concat()
}

/// An index key: `<a> 0x00 <b>`.
fn pair_key(a: &str, b: &str) -> Vec<u8> {
    [a.as_bytes(), &[0], b.as_bytes()].concat()
}

fn read_i64(b: &[u8]) -> i64 {
    b.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

// ---------------------------------------------------------------- encoded values

/// A stored value not yet decoded: equal to another when the bytes are
/// (an unchanged assignment or instance is recognised without decoding).
pub struct Encoded<T> {
    bytes: Box<[u8]>,
    family: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Encoded<T> {
    fn clone(&self) -> Self {
        Encoded { bytes: self.bytes.clone(), family: self.family, _t: PhantomData }
    }
}

impl<T> PartialEq for Encoded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> std::fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes of {})", self.bytes.len(), self.family)
    }
}

impl<T: Serialize + for<'de> Deserialize<'de>> Encoded<T> {
    pub(super) fn raw(family: &'static str, bytes: Box<[u8]>) -> Encoded<T> {
        Encoded { bytes, family, _t: PhantomData }
    }
    /// `v` as it would be stored.
    pub fn of(v: &T) -> Encoded<T> {
        Encoded { bytes: to_cbor(v).into_boxed_slice(), family: "", _t: PhantomData }
    }
    pub fn decode(&self) -> Result<T> {
        from_cbor(self.family, &self.bytes)
    }
}

// ---------------------------------------------------------------- writes

/// The recompute's counts, summed under compact keys (no allocation per
/// contribution, one hash probe): names (hosts, buckets, reasons) interned,
/// days as Julian day numbers.
///
/// Hashed with aHash, randomly keyed like the standard library's SipHash
/// (host names come from the network) and several times cheaper per probe.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CountTotals {
    ids: HashMap<String, u32, ahash::RandomState>,
    names: Vec<String>,
    counts: HashMap<(u8, i32, u32, u32), i64, ahash::RandomState>,
}

impl CountTotals {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(i) = self.ids.get(name) {
            return *i;
        }
        let i = u32::try_from(self.names.len()).expect("fewer than 2^32 names");
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), i);
        i
    }

    pub fn add(&mut self, k: CountKey<'_>, n: i64) {
        let k = match k {
            CountKey::Host { host, bucket } => (key::HOST, 0, self.id(host), self.id(bucket)),
            CountKey::State(reason) => (key::STATE, 0, self.id(reason), 0),
            CountKey::Vouched { host, domain } => (key::VOUCHED, 0, self.id(host), self.id(domain)),
            CountKey::Day { day, host } => (key::DAY, day.to_julian_day(), self.id(host), 0),
            CountKey::Flow { day, from, to } => (key::FLOW, day.to_julian_day(), self.id(from), self.id(to)),
            CountKey::Active { host, day } => (key::ACTIVE, day.to_julian_day(), self.id(host), 0),
            CountKey::Born { host, day } => (key::BORN, day.to_julian_day(), self.id(host), 0),
        };
        *self.counts.entry(k).or_default() += n;
    }

    /// Adds every count of `did`'s assignment `a`.
    pub fn add_assignment(&mut self, did: &str, a: &Assignment) {
        for_each_count(did, a, |k, n| self.add(k, n));
    }

    /// Adds `other`'s counts (another part of the key space, counted on
    /// another thread).
    pub fn merge(&mut self, other: CountTotals) {
        let names = other.names;
        for ((kind, jd, a, b), n) in other.counts {
            let a = self.id(&names[a as usize]);
            // the second field is a name for these kinds, else unused (0)
            let b = match kind {
                key::HOST | key::VOUCHED | key::FLOW => self.id(&names[b as usize]),
                _ => b,
            };
            *self.counts.entry((kind, jd, a, b)).or_default() += n;
        }
    }

    /// The counts under their stored keys, in key order (amounts of equal
    /// keys summed, zeros left out).
    fn into_keys(self) -> Vec<(Vec<u8>, i64)> {
        let name = |i: u32| self.names[i as usize].as_str();
        let date = |jd: i32| time::Date::from_julian_day(jd).expect("the Julian day of a date");
        let mut out: Vec<(Vec<u8>, i64)> = self
            .counts
            .iter()
            .map(|(&(kind, jd, a, b), &n)| {
                let k = match kind {
                    key::HOST => CountKey::Host { host: name(a), bucket: name(b) },
                    key::STATE => CountKey::State(name(a)),
                    key::VOUCHED => CountKey::Vouched { host: name(a), domain: name(b) },
                    key::DAY => CountKey::Day { day: date(jd), host: name(a) },
                    key::ACTIVE => CountKey::Active { host: name(a), day: date(jd) },
                    key::BORN => CountKey::Born { host: name(a), day: date(jd) },
                    _ => CountKey::Flow { day: date(jd), from: name(a), to: name(b) },
                };
                (k.bytes(), n)
            })
            .collect();
        out.sort_unstable();
        out.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 += later.1;
            }
            same
        });
        out.retain(|(_, n)| *n != 0);
        out
    }
}

/// The map's structure as a structure refresh leaves it: every instance
/// (its hosts are the `host_instance` index), every declaration's status,
/// and the hosts that changed instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Structure {
    pub instances: Vec<InstanceRecord>,
    pub declarations: Vec<DeclarationStatus>,
    /// `(at_ms, move)`.
    pub host_moves: Vec<(i64, HostMove)>,
}

/// One change of the map's own families (see [`super::Batch`]).
#[derive(Debug, Clone, PartialEq)]
pub enum MapOp {
    /// An account's assignment changed from `old` to `new`: its `moves`
    /// rows, its index entries and (with `deltas`) its counts follow. The
    /// full recompute rewrites the counts whole instead.
    Assign { did: String, old: Option<Assignment>, new: Assignment, deltas: bool },
    /// An assignment whose records are gone: removed with its rows and
    /// index entries (its counts go with the recompute's replacement).
    Unassign { did: String, old: Option<Assignment> },
    /// Every count replaced by these.
    ReplaceCounts(CountTotals),
    /// Every mark, the structure's too, taken.
    ClearMarks,
    /// The structure replaced whole.
    ReplaceStructure(Structure),
}

/// Where expanded map writes land.
pub(super) trait Sink {
    fn put(&mut self, fam: Fam, k: Vec<u8>, v: Vec<u8>);
    fn delete(&mut self, fam: Fam, k: Vec<u8>);
    /// Adds to a count.
    fn add(&mut self, k: Vec<u8>, n: i64);
    /// Deletes every entry of a family.
    fn clear(&mut self, fam: Fam);
    /// Takes every mark.
    fn clear_marks(&mut self);
}

fn remove_rows(sink: &mut impl Sink, did: &str, old: &Assignment) {
    for (k, _) in moves_of_assignment(did, old) {
        sink.delete(Fam::Moves, k);
    }
    if let Some(h) = &old.host {
        sink.delete(Fam::HostAccounts, pair_key(h, did));
    }
    if let Some(h) = &old.handle {
        sink.delete(Fam::Handles, pair_key(h, did));
    }
}

/// Expands one map change into the writes of its families.
pub(super) fn expand(op: MapOp, sink: &mut impl Sink) {
    match op {
        MapOp::Assign { did, old, new, deltas } => {
            if let Some(o) = &old {
                remove_rows(sink, &did, o);
            }
            if deltas {
                let mut c: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
                let mut k = Vec::with_capacity(128);
                let mut add = |a: &Assignment, sign: i64| {
                    for_each_count(&did, a, |ck, n| {
                        ck.write(&mut k);
                        match c.get_mut(&k) {
                            Some(v) => *v += n * sign,
                            None => _ = c.insert(k.clone(), n * sign),
                        }
                    })
                };
                if let Some(o) = &old {
                    add(o, -1);
                }
                add(&new, 1);
                for (k, v) in c {
                    if v != 0 {
                        sink.add(k, v);
                    }
                }
            }
            for (k, row) in moves_of_assignment(&did, &new) {
                sink.put(Fam::Moves, k, to_cbor(&row));
            }
            if let Some(h) = &new.host {
                sink.put(Fam::HostAccounts, pair_key(h, &did), Vec::new());
            }
            if let Some(h) = &new.handle {
                sink.put(Fam::Handles, pair_key(h, &did), vec![u8::from(new.handle_verified)]);
            }
            sink.put(Fam::Assign, did.into_bytes(), to_cbor(&new));
        }
        MapOp::Unassign { did, old } => {
            if let Some(o) = &old {
                remove_rows(sink, &did, o);
            }
            sink.delete(Fam::Assign, did.into_bytes());
        }
        MapOp::ReplaceCounts(totals) => {
            sink.clear(Fam::Counts);
            for (k, n) in totals.into_keys() {
                sink.put(Fam::Counts, k, n.to_le_bytes().to_vec());
            }
        }
        MapOp::ClearMarks => sink.clear_marks(),
        MapOp::ReplaceStructure(st) => {
            for f in [Fam::Instances, Fam::HostInstance, Fam::Declarations] {
                sink.clear(f);
            }
            for inst in &st.instances {
                for h in &inst.hosts {
                    sink.put(Fam::HostInstance, h.as_bytes().to_vec(), inst.id.as_bytes().to_vec());
                }
                sink.put(Fam::Instances, inst.id.as_bytes().to_vec(), to_cbor(inst));
            }
            for d in &st.declarations {
                sink.put(Fam::Declarations, d.operator.as_bytes().to_vec(), to_cbor(d));
            }
            for (at, mv) in &st.host_moves {
                sink.put(Fam::HostMoves, host_move_key(*at, &mv.host), to_cbor(mv));
            }
        }
    }
}

// ---------------------------------------------------------------- reads

/// The raw reads the map's readers are written over.
pub trait RawMap {
    #[doc(hidden)]
    fn map_get(&self, fam: Fam, key: &[u8]) -> Result<Option<Box<[u8]>>>;
    /// Calls `f` on each entry from `start` on, in key order, until it
    /// returns `false`.
    #[doc(hidden)]
    fn map_scan(&self, fam: Fam, start: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>;
    /// Accounts marked, and whether the structure is.
    #[doc(hidden)]
    fn pending_marks(&self) -> Result<(u64, bool)>;
}

/// What the map's readers ask, typed. Counts of zero are left out.
pub trait MapReader: RawMap {
    fn assignment(&self, did: &str) -> Result<Option<Assignment>> {
        self.map_get(Fam::Assign, did.as_bytes())?.map(|b| from_cbor(super::CF_ASSIGN, &b)).transpose()
    }

    /// Whether any account has an assignment.
    fn has_assignments(&self) -> Result<bool> {
        let mut any = false;
        self.map_scan(Fam::Assign, &[], &mut |_, _| {
            any = true;
            false
        })?;
        Ok(any)
    }

    /// Every assignment, in DID order.
    fn each_assignment(&self, f: &mut dyn FnMut(&str, Assignment) -> Result<()>) -> Result<()> {
        scan_all(self, Fam::Assign, &[], &mut |k, v| {
            f(&String::from_utf8_lossy(k), from_cbor(super::CF_ASSIGN, v)?)?;
            Ok(true)
        })
    }

    /// Per host: members by bucket.
    fn host_members(&self) -> Result<BTreeMap<String, BTreeMap<String, i64>>> {
        let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        counts_under(self, &key::prefix(key::HOST), &[], &mut |parts, n| {
            if let [host, bucket] = parts {
                out.entry((*host).to_owned()).or_default().insert((*bucket).to_owned(), n);
            }
            true
        })?;
        Ok(out)
    }

    /// One host's members by bucket.
    fn members_of_host(&self, host: &str) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        let mut prefix = Vec::new();
        key::join_into(&mut prefix, key::HOST, [host.as_bytes(), b""]);
        counts_under(self, &prefix, &[], &mut |parts, n| {
            if let [_, bucket] = parts {
                out.insert((*bucket).to_owned(), n);
            }
            true
        })?;
        Ok(out)
    }

    /// Accounts on `host` whose last firehose event was on `from` or later
    /// (distinct: each account counts at its last active day only).
    fn active_since(&self, host: &str, from: time::Date) -> Result<i64> {
        let mut prefix = vec![key::ACTIVE, 0];
        prefix.extend_from_slice(host.as_bytes());
        prefix.push(0);
        let mut start = Vec::new();
        crate::clock::date_into(&mut start, from);
        let mut n = 0;
        counts_under(self, &prefix, &start, &mut |_, c| {
            n += c;
            true
        })?;
        Ok(n)
    }

    /// Accounts created on `host` per day (`YYYY-MM-DD`), from `from` on.
    fn born_per_day(&self, host: &str, from: time::Date) -> Result<BTreeMap<String, i64>> {
        let mut prefix = vec![key::BORN, 0];
        prefix.extend_from_slice(host.as_bytes());
        prefix.push(0);
        let mut start = Vec::new();
        crate::clock::date_into(&mut start, from);
        let mut out = BTreeMap::new();
        counts_under(self, &prefix, &start, &mut |parts, c| {
            if let Some(day) = parts.last() {
                out.insert((*day).to_owned(), c);
            }
            true
        })?;
        Ok(out)
    }

    /// A host's registered members.
    fn registered_on(&self, host: &str) -> Result<i64> {
        let k = CountKey::Host { host, bucket: bucket::REGISTERED }.bytes();
        Ok(self.map_get(Fam::Counts, &k)?.map_or(0, |v| read_i64(&v)))
    }

    /// Accounts created on `host` whose handle under `domain` verifies
    /// both ways.
    fn vouched(&self, host: &str, domain: &str) -> Result<i64> {
        let k = CountKey::Vouched { host, domain }.bytes();
        Ok(self.map_get(Fam::Counts, &k)?.map_or(0, |v| read_i64(&v)))
    }

    /// Accounts in an explicit state, by reason.
    fn unassigned(&self) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        counts_under(self, &key::prefix(key::STATE), &[], &mut |parts, n| {
            if let [reason] = parts {
                out.insert((*reason).to_owned(), n);
            }
            true
        })?;
        Ok(out)
    }

    /// Joins minus leaves per host and day, for the days `from..=to`
    /// (`YYYY-MM-DD`; `""` from the first): `f(day, host, n)`.
    fn day_counts(&self, from: &str, to: &str, f: &mut dyn FnMut(&str, &str, i64)) -> Result<()> {
        counts_under(self, &key::prefix(key::DAY), from.as_bytes(), &mut |parts, n| match parts {
            [d, _] if *d > to => false,
            [d, host] => {
                f(d, host, n);
                true
            }
            _ => true,
        })
    }

    /// Migrations between hosts per day, for the days `from..=to`:
    /// `f(day, from_host, to_host, n)`.
    fn flow_counts(&self, from: &str, to: &str, f: &mut dyn FnMut(&str, &str, &str, i64)) -> Result<()> {
        counts_under(self, &key::prefix(key::FLOW), from.as_bytes(), &mut |parts, n| match parts {
            [d, ..] if *d > to => false,
            [d, a, b] => {
                f(d, a, b, n);
                true
            }
            _ => true,
        })
    }

    /// An account's migrations, oldest first: `(at_ms, row)`.
    fn moves_of(&self, did: &str) -> Result<Vec<(i64, MoveRow)>> {
        let prefix = [did.as_bytes(), &[0]].concat();
        let mut out = Vec::new();
        scan_all(self, Fam::Moves, &prefix, &mut |k, v| {
            if !k.starts_with(&prefix) {
                return Ok(false);
            }
            if let Some(at) = k.get(prefix.len()..).and_then(time_of_key) {
                out.push((at, from_cbor(super::CF_MOVES, v)?));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every migration, by DID then time: `f(did, at_ms, row)`.
    fn each_move(&self, f: &mut dyn FnMut(&str, i64, MoveRow) -> Result<()>) -> Result<()> {
        scan_all(self, Fam::Moves, &[], &mut |k, v| {
            let cut = k.len().saturating_sub(9);
            let did = String::from_utf8_lossy(&k[..cut]);
            let at = k.get(cut + 1..).and_then(time_of_key).unwrap_or(0);
            f(&did, at, from_cbor(super::CF_MOVES, v)?)?;
            Ok(true)
        })
    }

    /// Migrations stored.
    fn move_count(&self) -> Result<u64> {
        count_entries(self, Fam::Moves)
    }

    /// Every stored instance (members not summed in), in id order.
    fn instance_records(&self) -> Result<Vec<InstanceRecord>> {
        let mut out = Vec::new();
        scan_all(self, Fam::Instances, &[], &mut |_, v| {
            out.push(from_cbor(super::CF_INSTANCES, v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// One stored instance, still encoded (members not summed in).
    fn instance_encoded(&self, id: &str) -> Result<Option<Encoded<InstanceRecord>>> {
        Ok(self.map_get(Fam::Instances, id.as_bytes())?.map(|b| Encoded::raw(super::CF_INSTANCES, b)))
    }

    fn instance_count(&self) -> Result<u64> {
        count_entries(self, Fam::Instances)
    }

    /// The instance id of a host, if the map has it.
    fn instance_id_of_host(&self, host: &str) -> Result<Option<String>> {
        Ok(self.map_get(Fam::HostInstance, host.as_bytes())?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Host → instance id under the current map.
    fn host_instances(&self) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        scan_all(self, Fam::HostInstance, &[], &mut |k, v| {
            out.insert(String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned());
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every declaration's status, by operator.
    fn declaration_statuses(&self) -> Result<Vec<DeclarationStatus>> {
        let mut out = Vec::new();
        scan_all(self, Fam::Declarations, &[], &mut |_, v| {
            out.push(from_cbor(super::CF_DECLARATIONS, v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    fn declaration_status(&self, operator: &str) -> Result<Option<DeclarationStatus>> {
        self.map_get(Fam::Declarations, operator.as_bytes())?.map(|b| from_cbor(super::CF_DECLARATIONS, &b)).transpose()
    }

    /// Hosts regrouped between instances since `since_ms`, oldest first.
    fn host_moves_since(&self, since_ms: i64) -> Result<Vec<(i64, HostMove)>> {
        let mut out = Vec::new();
        scan_all(self, Fam::HostMoves, &time_key(since_ms), &mut |k, v| {
            out.push((k.get(..8).and_then(time_of_key).unwrap_or(0), from_cbor(super::CF_HOST_MOVES, v)?));
            Ok(true)
        })?;
        Ok(out)
    }

    /// The DIDs a handle points at: verified ones first. At most
    /// [`MAX_CLAIMANTS`] are looked at (anyone can claim any handle in their
    /// DID document; only one can verify), and the scan ends at the first
    /// verified one.
    fn dids_of_handle(&self, handle: &str) -> Result<Vec<(String, bool)>> {
        let prefix = [handle.as_bytes(), &[0]].concat();
        let mut out = Vec::new();
        self.map_scan(Fam::Handles, &prefix, &mut |k, v| {
            let Some(did) = k.strip_prefix(&prefix[..]) else { return false };
            let verified = v.first() == Some(&1);
            out.push((String::from_utf8_lossy(did).into_owned(), verified));
            !verified && out.len() < MAX_CLAIMANTS
        })?;
        out.sort_by_key(|(_, verified)| !verified);
        Ok(out)
    }

    /// Accounts on `host` after `after` (a DID; `None`: from the first), up
    /// to `limit`.
    fn accounts_on_host(&self, host: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let prefix = [host.as_bytes(), &[0]].concat();
        let start = match after {
            Some(d) => [&prefix[..], d.as_bytes(), &[0]].concat(),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        self.map_scan(Fam::HostAccounts, &start, &mut |k, _| {
            let Some(did) = k.strip_prefix(&prefix[..]).filter(|_| out.len() < limit) else { return false };
            out.push(String::from_utf8_lossy(did).into_owned());
            true
        })?;
        Ok(out)
    }
}

impl<T: RawMap + ?Sized> MapReader for T {}

/// Claimants of a handle looked at, at most (see `dids_of_handle`).
pub const MAX_CLAIMANTS: usize = 1_000;

/// A fallible scan callback: `Ok(false)` ends the scan.
type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// Scans a family from `start` with a fallible callback.
fn scan_all<M: RawMap + ?Sized>(m: &M, fam: Fam, start: &[u8], f: &mut Visit<'_>) -> Result<()> {
    let mut err = None;
    m.map_scan(fam, start, &mut |k, v| match f(k, v) {
        Ok(go_on) => go_on,
        Err(e) => {
            err = Some(e);
            false
        }
    })?;
    err.map_or(Ok(()), Err)
}

fn count_entries<M: RawMap + ?Sized>(m: &M, fam: Fam) -> Result<u64> {
    let mut n = 0;
    m.map_scan(fam, &[], &mut |_, _| {
        n += 1;
        true
    })?;
    Ok(n)
}

/// The non-zero counts whose key starts with `prefix`, from `prefix ‖
/// start` on, as key parts: `f(parts, n)` until it returns `false`.
fn counts_under<M: RawMap + ?Sized>(
    m: &M,
    prefix: &[u8],
    start: &[u8],
    f: &mut dyn FnMut(&[&str], i64) -> bool,
) -> Result<()> {
    let from = [prefix, start].concat();
    m.map_scan(Fam::Counts, &from, &mut |k, v| {
        if !k.starts_with(prefix) {
            return false;
        }
        let n = read_i64(v);
        if n == 0 {
            return true;
        }
        let parts = key::parts(k);
        f(&parts, n)
    })
}

// ---------------------------------------------------------------- RocksDB

impl RawMap for super::Store {
    fn map_get(&self, fam: Fam, key: &[u8]) -> Result<Option<Box<[u8]>>> {
        Ok(self.get_cf(fam.cf(), key)?.map(|v| Box::from(&v[..])))
    }
    fn map_scan(&self, fam: Fam, start: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        for item in self.iter_from(fam.cf(), start) {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
    fn pending_marks(&self) -> Result<(u64, bool)> {
        let (mut accounts, mut structure) = (0, false);
        for item in self.iter_cf(super::CF_MAP_DIRTY) {
            let (k, v) = item?;
            if read_i64(&v) == 0 {
                continue;
            }
            if &*k == super::STRUCTURE {
                structure = true;
            } else {
                accounts += 1;
            }
        }
        Ok((accounts, structure))
    }
}

impl super::Store {
    /// Calls `f` once per DID known to any of the account families (PLC
    /// state, resolution, firehose, stored assignment), in DID order,
    /// streaming them side by side (a merge join on the key): memory stays
    /// constant however many accounts there are. The stored assignment is
    /// passed encoded.
    pub fn for_each_account<E: From<super::StoreError>>(
        &self,
        f: impl FnMut(&str, super::AccountView, Option<Encoded<Assignment>>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.for_each_account_in(&[], None, f)
    }

    /// Keys that split the account families into `parts` ranges of about
    /// equal size (`parts - 1` keys, ascending; fewer when the store is
    /// small): the DIDs of the PLC family are spread evenly over their key
    /// space (random base32), so the split is taken between its first and
    /// last `did:plc:` key; every other DID (did:web) falls in the last.
    pub fn account_splits(&self, parts: usize) -> Result<Vec<Vec<u8>>> {
        let plc = b"did:plc:";
        let first = self.iter_from(super::CF_PLC, plc).next().transpose()?.map(|(k, _)| k);
        let last = self.at_or_before(super::CF_PLC, b"did:plc:\xff")?.map(|(k, _)| k);
        let (Some(first), Some(last)) = (first, last) else { return Ok(Vec::new()) };
        if !first.starts_with(plc) || !last.starts_with(plc) || first >= last {
            return Ok(Vec::new());
        }
        // the keys as base-256 fractions past the common prefix
        let common = first.iter().zip(last.iter()).take_while(|(a, b)| a == b).count();
        let num = |k: &[u8]| -> f64 {
            k[common..].iter().take(6).enumerate().map(|(i, b)| f64::from(*b) / 256f64.powi(i as i32 + 1)).sum()
        };
        let (lo, hi) = (num(&first), num(&last));
        let mut out = Vec::new();
        for p in 1..parts {
            let mut x = lo + (hi - lo) * p as f64 / parts as f64;
            let mut key = first[..common].to_vec();
            for _ in 0..6 {
                x *= 256.0;
                let b = x.floor().clamp(0.0, 255.0);
                key.push(b as u8);
                x -= b;
            }
            if out.last().is_none_or(|l: &Vec<u8>| *l < key) && key[..] > first[..] && key[..] <= last[..] {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// [`Store::for_each_account`] over the DIDs from `from` (inclusive)
    /// to `to` (exclusive; `None`: to the end).
    pub fn for_each_account_in<E: From<super::StoreError>>(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
        mut f: impl FnMut(&str, super::AccountView, Option<Encoded<Assignment>>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        use super::{CF_ACCOUNTS, CF_IDENTITY, CF_PLC};
        type It<'a> = std::iter::Peekable<Box<dyn Iterator<Item = Result<super::KeyValue>> + 'a>>;
        let end: Option<Vec<u8>> = to.map(<[u8]>::to_vec);
        let mut its: [It<'_>; 4] = [CF_PLC, CF_IDENTITY, CF_ACCOUNTS, super::CF_ASSIGN].map(|cf| {
            let it = self.iter_from(cf, from);
            match end.clone() {
                None => it.peekable(),
                Some(end) => {
                    let it: Box<dyn Iterator<Item = Result<super::KeyValue>> + '_> =
                        Box::new(it.take_while(move |r| r.as_ref().map_or(true, |(k, _)| **k < *end)));
                    it.peekable()
                }
            }
        });
        loop {
            for it in its.iter_mut() {
                if let Some(Err(_)) = it.peek() {
                    return Err(it.next().expect("peeked").expect_err("peeked an error").into());
                }
            }
            let Some(min) =
                its.iter_mut().filter_map(|it| it.peek().and_then(|r| r.as_ref().ok())).map(|(k, _)| k).min()
            else {
                return Ok(());
            };
            let min = min.clone();
            let mut take = |i: usize| -> Result<Option<Box<[u8]>>> {
                match its[i].peek() {
                    Some(Ok((k, _))) if *k == min => Ok(Some(its[i].next().expect("peeked")?.1)),
                    _ => Ok(None),
                }
            };
            let view = super::AccountView {
                plc: take(0)?.map(|v| from_cbor(CF_PLC, &v)).transpose()?,
                identity: take(1)?.map(|v| from_cbor(CF_IDENTITY, &v)).transpose()?,
                firehose: take(2)?.map(|v| from_cbor(CF_ACCOUNTS, &v)).transpose()?,
                assignment: None,
            };
            let stored = take(3)?.map(|b| Encoded::raw(super::CF_ASSIGN, b));
            f(std::str::from_utf8(&min).unwrap_or_default(), view, stored)?;
        }
    }
}

/// A point-in-time view of the map (and the hosts), for reads that must
/// agree with each other (the exports).
pub struct MapSnapshot<'a> {
    store: &'a super::Store,
    snap: rocksdb::Snapshot<'a>,
}

impl super::Store {
    pub fn map_snapshot(&self) -> MapSnapshot<'_> {
        MapSnapshot { store: self, snap: self.snapshot() }
    }
}

impl MapSnapshot<'_> {
    /// Every host as of the snapshot, in endpoint order.
    pub fn hosts(&self) -> Result<Vec<(String, super::records::HostRecord)>> {
        let mut out = Vec::new();
        for item in self.store.snapshot_iter(&self.snap, super::CF_HOSTS) {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), from_cbor(super::CF_HOSTS, &v)?));
        }
        Ok(out)
    }
}

impl RawMap for MapSnapshot<'_> {
    fn map_get(&self, fam: Fam, key: &[u8]) -> Result<Option<Box<[u8]>>> {
        super::deadline::refuse_if_cached_only()?;
        Ok(self.snap.get_cf(self.store.cf(fam.cf()), key)?.map(Vec::into_boxed_slice))
    }
    fn map_scan(&self, fam: Fam, start: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        super::deadline::refuse_if_cached_only()?;
        let it = self
            .snap
            .iterator_cf(self.store.cf(fam.cf()), rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward))
            .map(|r| r.map_err(super::StoreError::from));
        for item in super::deadline::Bounded::new(it) {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }
    fn pending_marks(&self) -> Result<(u64, bool)> {
        self.store.pending_marks()
    }
}

/// Expands map writes into a RocksDB write batch.
pub(super) struct RocksSink<'a> {
    pub store: &'a super::Store,
    pub wb: &'a mut rocksdb::WriteBatch,
}

impl Sink for RocksSink<'_> {
    fn put(&mut self, fam: Fam, k: Vec<u8>, v: Vec<u8>) {
        self.wb.put_cf(self.store.cf(fam.cf()), k, v);
    }
    fn delete(&mut self, fam: Fam, k: Vec<u8>) {
        self.wb.delete_cf(self.store.cf(fam.cf()), k);
    }
    fn add(&mut self, k: Vec<u8>, n: i64) {
        self.wb.merge_cf(self.store.cf(super::CF_MAP_COUNTS), k, n.to_le_bytes());
    }
    fn clear(&mut self, fam: Fam) {
        // the map's keys are hosts, DIDs, ids and count keys: all below
        // 0xff, so one range deletion covers the family, plus any key at or
        // above it (none expected) one by one
        let cf = self.store.cf(fam.cf());
        self.wb.delete_range_cf(cf, &[][..], &[0xff][..]);
        for (k, _) in self.store.iter_from(fam.cf(), &[0xff]).flatten() {
            self.wb.delete_cf(cf, k);
        }
    }
    fn clear_marks(&mut self) {
        // one range deletion up to the last mark (DIDs are ASCII, so below
        // 0xff) rather than a tombstone per mark, which every later scan of
        // the family (each maintainer step) would step over until
        // compaction
        let dirty = self.store.cf(super::CF_MAP_DIRTY);
        let cut: &[u8] = &[0xff];
        if let Ok(Some((last, _))) = self.store.at_or_before(super::CF_MAP_DIRTY, cut) {
            self.wb.delete_range_cf(dirty, &[][..], &*last);
            self.wb.delete_cf(dirty, &*last);
        }
        for (k, _) in self.store.iter_from(super::CF_MAP_DIRTY, cut).flatten() {
            self.wb.delete_cf(dirty, k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let day = time::Date::from_calendar_date(2024, time::Month::March, 5).unwrap();
        let k = CountKey::Flow { day, from: "https://a", to: "https://b" }.bytes();
        assert_eq!(key::parts(&k), vec!["2024-03-05", "https://a", "https://b"]);
        let k = CountKey::Host { host: "https://a", bucket: "registered" }.bytes();
        assert_eq!(key::parts(&k), vec!["https://a", "registered"]);
        assert_eq!(time_of_key(&time_key(-5)), Some(-5));
        let mk = move_key("did:plc:x", 1_700_000_000_000);
        assert_eq!(time_of_key(&mk[mk.len() - 8..]), Some(1_700_000_000_000));
        for t in [-5i64, 0, 1_700_000_000_000] {
            let k = move_key("did:plc:x", t);
            assert_eq!(time_of_key(&k[k.len() - 8..]), Some(t));
        }
        assert!(move_key("d", -1) < move_key("d", 0));
    }

    /// Counts made in two parts (a recompute's threads) and merged are
    /// the counts made in one: names are renumbered, second fields that
    /// are no names (a state's, a day's) left alone.
    #[test]
    fn totals_merged_from_parts_equal_totals_made_at_once() {
        let day = |d: u8| time::Date::from_calendar_date(2025, time::Month::March, d).unwrap();
        let keys = |i: usize| -> Vec<(CountKey<'static>, i64)> {
            let hosts = ["https://a", "https://b", "https://c"];
            let h = hosts[i % 3];
            let other = hosts[(i + 1) % 3];
            vec![
                (CountKey::Host { host: h, bucket: if i % 2 == 0 { "registered" } else { "in_plc" } }, 1),
                (CountKey::State(if i % 4 == 0 { "tombstoned" } else { "unresolved" }), 1),
                (CountKey::Vouched { host: h, domain: "example.com" }, 1),
                (CountKey::Day { day: day(1 + (i % 5) as u8), host: h }, 1),
                (CountKey::Flow { day: day(2), from: h, to: other }, 1),
                (CountKey::Active { host: other, day: day(3) }, 1),
                (CountKey::Born { host: h, day: day(4) }, 1),
            ]
        };
        let mut all = CountTotals::default();
        let (mut first, mut second) = (CountTotals::default(), CountTotals::default());
        for i in 0..40 {
            for (k, n) in keys(i) {
                all.add(k, n);
            }
        }
        // the second part sees the names in another order
        for i in (20..40).rev() {
            for (k, n) in keys(i) {
                second.add(k, n);
            }
        }
        for i in 0..20 {
            for (k, n) in keys(i) {
                first.add(k, n);
            }
        }
        first.merge(second);
        assert_eq!(first.into_keys(), all.into_keys());
    }

    #[test]
    fn day_as_format_writes_it() {
        let day = time::Date::from_calendar_date(2023, time::Month::January, 9).unwrap();
        let k = CountKey::Day { day, host: "h" }.bytes();
        assert_eq!(key::parts(&k), vec!["2023-01-09", "h"]);
    }
}
