//! PLC export bulk load from a local file: parse (one thread) → loader
//! (another) → RocksDB, into a fresh database each run. The input is
//! synthetic but shaped like the real export: 1,000,000 sequence-form lines
//! of ~600 bytes over 700,000 DIDs (most DIDs have one operation, some
//! several), with a tombstone every 1,000 lines.

use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use instancemap::plc::{self, source};
use instancemap::store::Store;

const LINES: u64 = 1_000_000;
const DIDS: u64 = 700_000;

fn did(i: u64) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
    let mut s = String::from("did:plc:");
    for _ in 0..24 {
        s.push(A[(x % 32) as usize] as char);
        x = x / 32 + 11;
    }
    s
}

fn write_export(path: &std::path::Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for n in 0..LINES {
        let d = did(n % DIDS);
        let cid = format!("bafyreib{:0>51}", n);
        let line = if n % 1000 == 999 {
            serde_json::json!({"did": d, "cid": cid, "seq": n + 1, "type": "sequenced_op",
                "createdAt": "2024-03-01T12:00:00.000Z",
                "operation": {"type": "plc_tombstone", "prev": "bafyreiprev", "sig": "c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl"}})
        } else {
            serde_json::json!({"did": d, "cid": cid, "seq": n + 1, "type": "sequenced_op",
                "createdAt": "2024-03-01T12:00:00.000Z",
                "operation": {"type": "plc_operation", "prev": if n >= DIDS { serde_json::Value::from("bafyreiprev") } else { serde_json::Value::Null },
                    "sig": "c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl",
                    "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": format!("https://host{}.us-east.host.bsky.network", n % 97)}},
                    "alsoKnownAs": [format!("at://user{n}.bsky.social")],
                    "rotationKeys": ["did:key:zQ3shhCGUqDKjStzuDxPkTxN6ujddP4RkEKJJouJGRRkaLGbg", "did:key:zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ"],
                    "verificationMethods": {"atproto": "did:key:zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ"}}})
        };
        writeln!(f, "{line}").unwrap();
    }
    f.flush().unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.jsonl");
    write_export(&export);
    let mut g = c.benchmark_group("plc");
    g.sample_size(10);
    g.throughput(Throughput::Elements(LINES));
    // the parse alone, on one thread (the loader runs one per core)
    let text = std::fs::read_to_string(&export).unwrap();
    g.bench_function("parse_line_1m_ops", |b| {
        b.iter(|| {
            let ok = text.lines().filter(|l| plc::parse_line(l.as_bytes()).is_ok()).count();
            assert_eq!(ok as u64, LINES);
        })
    });
    g.bench_function("load_file_1m_ops_700k_dids", |b| {
        b.iter_with_setup(
            || tempfile::tempdir().unwrap(),
            |db| {
                let store = Store::open(db.path()).unwrap();
                let s = source::load_file(&store, &export).unwrap();
                assert_eq!(s.applied, LINES);
                drop(store);
                db
            },
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
