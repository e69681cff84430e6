//! The instance map over a synthetic network, one thread, timed single runs
//! (criterion's repeated samples are too slow at 10M accounts).
//!
//! The network: ACCOUNTS accounts (env INSTANCEMAP_BENCH_ACCOUNTS, default
//! 1,000,000) loaded through the PLC [`Loader`] over 30,000 hosts, a third
//! of which advertise one of 300 shared user domains and the rest stand on
//! their own domains. Accounts are spread like the real network's: 90 % on
//! 100 large hosts of one provider, 10 % over all 30,000 hosts with a
//! long tail (log-uniform, so most small hosts hold a handful); every host
//! holds at least one. Creation dates are spread over two years (so the
//! per-day history keys are realistic); 5 % of the accounts migrated once
//! (a second PLC operation, mostly to a small host), 1 % were tombstoned.
//! DIDs, CIDs, handles and keys have their real lengths.
//!
//! Measured, in order, on one database:
//! 1. **cold recompute**: the first `recompute` (no map yet; every
//!    assignment written, the loader's marks cleared);
//! 2. **warm recompute**: a second `recompute`, nothing changed;
//! 3. a firehose-like **batch** of PLC operations through the `Loader` for
//!    50,000 DIDs (20,000 new accounts, 25,000 migrations, 5,000
//!    tombstones), each leaving a `map_dirty` mark; then the **incremental
//!    maintainer** taking them (`Maintainer::run_until_idle`);
//! 4. a **structure refresh** (a new host crawled: re-cluster the hosts);
//! 5. a **check recompute**: a full recompute after the maintainer must
//!    change no assignment (incremental == full at scale).
//!
//! Each phase prints its wall-clock time; the main thread's time on a CPU
//! and time runnable but waiting for one (`/proc/thread-self/schedstat`:
//! on a shared machine, the wait is other processes' doing); the process's
//! CPU time (RocksDB's flushes and compactions included); peak RSS (VmHWM,
//! reset before each phase through `/proc/self/clear_refs`); and, after
//! the cold recompute and at the end, the database's size on disk and a
//! digest of `map_counts` (to compare two builds of the code by).
//!
//! The network is built through the loader, then every family compacted
//! (as a store is some while after its bulk load: PLC operands folded into
//! records). Right after a bulk load, the first read of each record also
//! folds its operands, which the cold recompute would pay for.
//!
//! Building the network takes minutes at 10M. With INSTANCEMAP_BENCH_DIR
//! set, it is built once into `$DIR/base` (a marker file records what was
//! built) and every run works on a fresh copy (`$DIR/work`: SST files
//! hard-linked, they are immutable; the rest copied), so the cold recompute
//! always starts with no map:
//!
//! ```text
//! INSTANCEMAP_BENCH_ACCOUNTS=10000000 INSTANCEMAP_BENCH_DIR=/var/tmp/imbench-10m \
//!     cargo bench --bench recluster
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use instancemap::cluster::map::{self, Maintainer};
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::Store;

const HOSTS: usize = 30_000;
/// Hosts of the large provider (90 % of the accounts): `host(300 k)`.
const BIG: usize = 100;
const DAY_MS: i64 = 86_400_000;
/// 2023-03-01T00:00:00Z, and two years on.
const START_MS: i64 = 1_677_628_800_000;
const SPAN_MS: i64 = 730 * DAY_MS;
const END_MS: i64 = START_MS + SPAN_MS;
/// The firehose-like batch.
const NEW: usize = 20_000;
const MIGRATE: usize = 25_000;
const DELETE: usize = 5_000;
/// What the base directory holds (bump when the network changes).
const NETWORK: &str = "recluster-network-v2";

fn host(i: usize) -> String {
    if i % 3 == 0 {
        format!("https://pds{i}.provider{}.net", i % 300)
    } else {
        format!("https://pds.self{i}.org")
    }
}

/// splitmix64: a cheap, well-mixed hash of an index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn h(n: usize, salt: u64) -> u64 {
    mix((n as u64) ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d))
}

/// `len` base32 characters from hashes of `(n, salt)`.
fn b32(n: usize, salt: u64, len: usize) -> String {
    const A: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut s = String::with_capacity(len);
    let mut i = 0u64;
    while s.len() < len {
        let mut x = h(n, salt.wrapping_add(i));
        for _ in 0..12 {
            if s.len() == len {
                break;
            }
            s.push(A[(x & 31) as usize] as char);
            x >>= 5;
        }
        i += 1;
    }
    s
}

/// A did:plc: 24 base32 characters, random-looking (keys are not in
/// creation order, as on the network).
fn did(n: usize) -> String {
    format!("did:plc:{}", b32(n, 1, 24))
}

fn cid(n: usize, op: u64) -> String {
    format!("bafyrei{}", b32(n, 100 + op, 52))
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms.rem_euclid(1000)
    )
}

/// A host drawn from the long tail: log-uniform over all hosts.
fn tail_host(x: u64) -> usize {
    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
    ((HOSTS as f64).powf(u) as usize).saturating_sub(1).min(HOSTS - 1)
}

/// An account's first host.
fn first_host(n: usize) -> usize {
    if n < HOSTS {
        return n; // every host holds at least one account
    }
    let x = h(n, 2);
    if x % 10 < 9 {
        300 * ((x >> 8) as usize % BIG)
    } else {
        tail_host(h(n, 3))
    }
}

fn created_ms(n: usize) -> i64 {
    START_MS + (h(n, 4) % SPAN_MS as u64) as i64
}

fn migrates(n: usize) -> bool {
    h(n, 5) % 100 < 5
}

fn tombstoned(n: usize) -> bool {
    h(n, 6) % 100 == 7
}

/// The host an account migrates to (mostly from the large provider to a
/// small host), and when.
fn migration(n: usize) -> (usize, i64) {
    let from = first_host(n);
    let mut to = if from % 300 == 0 && from < 300 * BIG { tail_host(h(n, 7)) } else { 300 * (h(n, 8) as usize % BIG) };
    if to == from {
        to = (to + 1) % HOSTS;
    }
    let c = created_ms(n);
    (to, c + (h(n, 9) % (END_MS - c).max(1) as u64) as i64)
}

fn update(n: usize, op: u64, seq: u64, at: i64, prev: Option<String>, pds: usize) -> ExportOp {
    ExportOp {
        did: did(n),
        cid: cid(n, op),
        created_at: rfc3339(at),
        seq: Some(seq),
        nullified: false,
        prev,
        state: OpState::Update {
            pds: Some(host(pds)),
            handle: Some(format!("{}.bsky.social", b32(n, 10, 10))),
            signing_key: Some(format!("did:key:zQ3sh{}", b32(n, 11, 44))),
        },
    }
}

fn tombstone(n: usize, op: u64, seq: u64, at: i64, prev: String) -> ExportOp {
    ExportOp {
        did: did(n),
        cid: cid(n, op),
        created_at: rfc3339(at),
        seq: Some(seq),
        nullified: false,
        prev: Some(prev),
        state: OpState::Tombstone,
    }
}

/// Counts of the built network.
#[derive(Default, Debug)]
struct Built {
    migrated: usize,
    tombstoned: usize,
}

fn build(dir: &Path, accounts: usize) -> Built {
    let store = Store::open(dir).unwrap();
    let mut l = Loader::new(&store).unwrap();
    let mut seq = 0u64;
    let mut next = || {
        seq += 1;
        seq
    };
    for n in 0..accounts {
        l.apply(update(n, 0, next(), created_ms(n), None, first_host(n))).unwrap();
    }
    let mut b = Built::default();
    for n in (0..accounts).filter(|n| migrates(*n)) {
        let (to, at) = migration(n);
        l.apply(update(n, 1, next(), at, Some(cid(n, 0)), to)).unwrap();
        b.migrated += 1;
    }
    for n in (0..accounts).filter(|n| tombstoned(*n)) {
        let (prev, after) = if migrates(n) { (cid(n, 1), migration(n).1) } else { (cid(n, 0), created_ms(n)) };
        let at = after + (h(n, 12) % (END_MS - after).max(1) as u64) as i64;
        l.apply(tombstone(n, 2, next(), at, prev)).unwrap();
        b.tombstoned += 1;
    }
    l.flush().unwrap();
    for i in (0..HOSTS).step_by(3) {
        let h = host(i);
        let rec = HostRecord {
            state: "online".into(),
            describe: Some(Describe {
                available_user_domains: vec![format!(".social{}.net", i % 300)],
                ..Describe::default()
            }),
            ..hosts::get(&store, &h).unwrap().unwrap_or_default()
        };
        hosts::put(&store, &h, &rec).unwrap();
    }
    store.flush().unwrap();
    drop(store);
    compact(dir);
    b
}

/// Compacts every family of a closed database, as a store is some time
/// after its bulk load: the PLC merge operands folded into records, the
/// marks into values. The families are opened as [`Store`] opens them
/// (merge operators, LZ4, bloom filters), so the files keep their format.
fn compact(dir: &Path) {
    use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, MergeOperands, Options, DB};
    fn add(_: &[u8], existing: Option<&[u8]>, ops: &MergeOperands) -> Option<Vec<u8>> {
        let n = |b: &[u8]| b.try_into().map(i64::from_le_bytes).unwrap_or(0);
        let mut v = existing.map_or(0, n);
        for op in ops {
            v = v.wrapping_add(n(op));
        }
        Some(v.to_le_bytes().to_vec())
    }
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.increase_parallelism(2);
    let names = DB::list_cf(&opts, dir).unwrap();
    let cfs = names.iter().map(|name| {
        let mut o = Options::default();
        o.set_compression_type(DBCompressionType::Lz4);
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        o.set_block_based_table_factory(&table);
        match name.as_str() {
            "counters" | "map_counts" | "map_dirty" => o.set_merge_operator_associative("add_i64", add),
            "plc" => o.set_merge_operator("plc_apply", instancemap::plc::load::merge, |_, _, _| None),
            _ => {}
        }
        ColumnFamilyDescriptor::new(name, o)
    });
    let db = DB::open_cf_descriptors(&opts, dir, cfs).unwrap();
    for name in &names {
        db.compact_range_cf(db.cf_handle(name).unwrap(), None::<&[u8]>, None::<&[u8]>);
    }
}

/// The firehose-like batch: PLC operations for 50,000 DIDs through the
/// loader (each DID marked once). Returns the DIDs touched.
fn batch(store: &Store, accounts: usize) -> usize {
    let mut l = Loader::new(store).unwrap();
    let mut seq = l.position.seq.unwrap_or(0);
    let mut next = || {
        seq += 1;
        seq
    };
    let now = END_MS + DAY_MS;
    for k in 0..NEW {
        let n = accounts + k;
        l.apply(update(n, 0, next(), now + k as i64, None, first_host(n))).unwrap();
    }
    // existing accounts, distinct (7919 is prime to any power of ten), alive
    let mut picked = (0..accounts).map(|k| (k * 7919 + 1) % accounts).filter(|n| !tombstoned(*n));
    for k in 0..MIGRATE + DELETE {
        let n = picked.next().unwrap();
        let head = if migrates(n) { cid(n, 1) } else { cid(n, 0) };
        let from = if migrates(n) { migration(n).0 } else { first_host(n) };
        let at = now + 60_000 + k as i64;
        if k < MIGRATE {
            let to = if from % 300 == 0 && from < 300 * BIG { tail_host(h(n, 13)) } else { 300 * (n % BIG) };
            let to = if to == from { (to + 1) % HOSTS } else { to };
            l.apply(update(n, 3, next(), at, Some(head), to)).unwrap();
        } else {
            l.apply(tombstone(n, 3, next(), at, head)).unwrap();
        }
    }
    l.flush().unwrap();
    NEW + MIGRATE + DELETE
}

// ---------------------------------------------------------------- measuring

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux: `5` to `clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    n
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn rate(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The calling thread's time on a CPU and time runnable but waiting for
/// one (`/proc/thread-self/schedstat`, ns): on a shared machine the wait
/// shows how much of a wall-clock figure was other processes' doing.
fn thread_sched() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0) / 1e9);
    (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0))
}

/// CPU time of the whole process (every thread, RocksDB's included), s.
fn process_cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

struct Phase {
    start: Instant,
    sched: (f64, f64),
    cpu: f64,
}

impl Phase {
    fn start() -> Phase {
        reset_peak();
        Phase { start: Instant::now(), sched: thread_sched(), cpu: process_cpu() }
    }

    /// Prints one row: name, time, rate, the main thread's CPU time and
    /// wait for a CPU, the process's CPU time, peak and current RSS.
    fn end(self, name: &str, items: u64, unit: &str, note: &str) -> f64 {
        let t = self.start.elapsed().as_secs_f64();
        let (run, wait) = thread_sched();
        println!(
            "| {name} | {t:.2} s | {} {unit}/s | {:.2} s / {:.2} s | {:.2} s | {} | {} | {note} |",
            rate(items as f64 / t),
            run - self.sched.0,
            wait - self.sched.1,
            process_cpu() - self.cpu,
            mib(status_kb("VmHWM:")),
            mib(status_kb("VmRSS:")),
        );
        t
    }
}

/// A copy of a closed database: SST files hard-linked (RocksDB never
/// rewrites one), the rest copied.
fn clone_db(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let (src, dst) = (e.path(), to.join(&name));
        if name.to_string_lossy().ends_with(".sst") {
            std::fs::hard_link(&src, &dst).unwrap();
        } else if e.metadata().unwrap().is_file() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `map_counts` keys by kind (`h`, `s`, `d`, `f`), and a digest of the
/// family (keys and amounts) to compare builds by.
fn count_keys(store: &Store) -> String {
    let mut by: std::collections::BTreeMap<char, u64> = Default::default();
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    use instancemap::store::map::{Fam, RawMap};
    store
        .map_scan(Fam::Counts, &[], &mut |k, v| {
            *by.entry(k[0] as char).or_default() += 1;
            for b in k.iter().chain([0xff].iter()).chain(v.iter()) {
                digest = (digest ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
            true
        })
        .unwrap();
    let keys = by.iter().map(|(k, n)| format!("{k}: {}", rate(*n as f64))).collect::<Vec<_>>().join(", ");
    format!("{keys} (digest {digest:016x})")
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that does not name
    // this bench skips it
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"recluster".contains(a.as_str())) {
        return;
    }
    let accounts: usize =
        std::env::var("INSTANCEMAP_BENCH_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let keep = std::env::var_os("INSTANCEMAP_BENCH_DIR").map(PathBuf::from);
    let _tmp;
    let root = match &keep {
        Some(d) => d.clone(),
        None => {
            _tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
            _tmp.path().to_path_buf()
        }
    };
    let (base, work) = (root.join("base"), root.join("work"));
    let marker = base.join("BENCH_NETWORK");
    let want = format!("{NETWORK} accounts={accounts} hosts={HOSTS}");

    println!("recluster bench: {accounts} accounts, {HOSTS} hosts");
    println!("| phase | time | rate | main thread: on CPU / waiting | process CPU | peak RSS | RSS after | notes |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(want.as_str()) {
        let _ = std::fs::remove_dir_all(&base);
        let p = Phase::start();
        let b = build(&base, accounts);
        let n = (accounts + b.migrated + b.tombstoned) as u64;
        p.end(
            "build (PLC loader, then compaction)",
            n,
            "ops",
            &format!("{} migrated, {} tombstoned; {} on disk", b.migrated, b.tombstoned, gib(dir_bytes(&base))),
        );
        std::fs::write(&marker, &want).unwrap();
    } else {
        println!("| build | reused | | | | | | {} ({} on disk) |", base.display(), gib(dir_bytes(&base)));
    }
    clone_db(&base, &work);
    let store = Store::open(&work).unwrap();
    let before = dir_bytes(&work);

    let p = Phase::start();
    let s = map::recompute(&store, &Default::default()).unwrap();
    assert_eq!(s.accounts, accounts as u64);
    assert_eq!(s.changed, accounts as u64, "the cold recompute writes every assignment");
    p.end(
        "cold recompute",
        s.accounts,
        "accounts",
        &format!("{} instances, {} changed, unassigned {:?}; {} hosts", s.instances, s.changed, s.unassigned, s.hosts),
    );
    store.flush().unwrap();
    println!(
        "| | | | | | | | on disk: {} before, {} after (flushed); map_counts keys {} |",
        gib(before),
        gib(dir_bytes(&work)),
        count_keys(&store)
    );

    let p = Phase::start();
    let s = map::recompute(&store, &Default::default()).unwrap();
    assert_eq!(s.changed, 0, "nothing changed");
    p.end("warm recompute", s.accounts, "accounts", "0 changed");

    let p = Phase::start();
    let dids = batch(&store, accounts);
    p.end(
        "batch through the loader",
        dids as u64,
        "DIDs",
        &format!(
            "{NEW} new, {MIGRATE} migrations, {DELETE} tombstones; marks pending {}",
            map::pending(&store).unwrap()
        ),
    );

    let p = Phase::start();
    let step = Maintainer::new(store.clone(), Default::default()).run_until_idle().unwrap();
    assert_eq!(step.accounts, dids);
    p.end(
        "incremental maintainer",
        step.accounts as u64,
        "marks",
        &format!("{} changed, structure refreshed: {}", step.changed, step.structure),
    );

    // a new host crawled: the structure mark
    let p = Phase::start();
    hosts::put(&store, "https://pds.new-host.example", &HostRecord { state: "online".into(), ..HostRecord::default() })
        .unwrap();
    let step = Maintainer::new(store.clone(), Default::default()).run_until_idle().unwrap();
    assert!(step.structure);
    p.end("structure refresh", HOSTS as u64, "hosts", "a host crawled: re-cluster, rewrite instances");

    let p = Phase::start();
    let s = map::recompute(&store, &Default::default()).unwrap();
    assert_eq!(s.changed, 0, "the maintainer left the map a full recompute would build");
    assert_eq!(s.accounts, (accounts + NEW) as u64);
    p.end("check recompute", s.accounts, "accounts", "after the maintainer: 0 changed (incremental == full)");
    store.flush().unwrap();
    println!("| | | | | | | | on disk at the end: {}; map_counts keys {} |", gib(dir_bytes(&work)), count_keys(&store));
    drop(store);
    let _ = std::fs::remove_dir_all(&work);
}
