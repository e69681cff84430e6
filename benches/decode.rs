//! Frame decoding, one thread, on the real frames of both corpora:
//! - `ingest`: instancemap's ingest path (header, body, ops, CAR index over
//!   the frame's bytes; the commit block and kept records hashed);
//! - `full`: every block hashed against its CID, every record validated;
//! - `peer_straightforward`: the assembly the issue names as the Rust peer:
//!   ciborium header, serde_ipld_dagcbor body, iroh-car blocks into a map,
//!   every record decoded to `Ipld`;
//! - `peer_chosen_crates`: the project's chosen crates doing only the ingest
//!   path's work: ciborium header and body to `Value`, iroh-car index.
//!
//! Figures and the machine are in `benches/README.md`.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use instancemap::event::STORED_COLLECTIONS;
use instancemap::firehose::frame::{self, Verify};
use instancemap::firehose::framelog;

fn corpora() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    vec![
        ("reference-pds", framelog::read_all(&dir.join("reference-pds.frames")).unwrap()),
        ("jetstream", framelog::read_all(&dir.join("jetstream/frames.bin.zst")).unwrap()),
    ]
}

/// Polls a future that never waits (iroh-car over a byte slice) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("reading from a slice never waits"),
    }
}

fn peer_straightforward(bytes: &[u8]) -> usize {
    use ipld_core::ipld::Ipld;
    let mut cursor = std::io::Cursor::new(bytes);
    let header: ciborium::Value = ciborium::from_reader(&mut cursor).unwrap();
    let body: Ipld = serde_ipld_dagcbor::from_slice(&bytes[cursor.position() as usize..]).unwrap();
    let mut n = usize::from(header.is_map());
    if let Ipld::Map(m) = &body {
        if let Some(Ipld::Bytes(car)) = m.get("blocks") {
            let blocks: HashMap<cid::Cid, Vec<u8>> = ready(async {
                let mut r = iroh_car::CarReader::new(car.as_slice()).await.unwrap();
                let mut out = HashMap::new();
                while let Some((c, b)) = r.next_block().await.unwrap() {
                    out.insert(c, b);
                }
                out
            });
            if let Some(Ipld::List(ops)) = m.get("ops") {
                for op in ops {
                    if let Ipld::Map(op) = op {
                        if let Some(Ipld::Link(c)) = op.get("cid") {
                            let c = cid::Cid::try_from(c.to_bytes().as_slice()).unwrap();
                            if let Some(b) = blocks.get(&c) {
                                let rec: Ipld = serde_ipld_dagcbor::from_slice(b).unwrap();
                                n += matches!(rec, Ipld::Map(_)) as usize;
                            }
                        }
                    }
                }
            }
            n += blocks.len();
        }
    }
    n
}

fn peer_chosen_crates(bytes: &[u8]) -> usize {
    let mut cursor = std::io::Cursor::new(bytes);
    let header: ciborium::Value = ciborium::from_reader(&mut cursor).unwrap();
    let body: ciborium::Value = ciborium::from_reader(&mut cursor).unwrap();
    let mut n = usize::from(header.is_map());
    if let Some(m) = body.as_map() {
        for (k, v) in m {
            if k.as_text() == Some("blocks") {
                let car = v.as_bytes().unwrap();
                n += ready(async {
                    let mut r = iroh_car::CarReader::new(car.as_slice()).await.unwrap();
                    let mut count = 0;
                    while let Some((_c, _b)) = r.next_block().await.unwrap() {
                        count += 1;
                    }
                    count
                });
            }
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    for (name, frames) in corpora() {
        let mut g = c.benchmark_group(format!("decode/{name}"));
        g.throughput(Throughput::Elements(frames.len() as u64));
        g.bench_function(BenchmarkId::from_parameter("ingest"), |b| {
            b.iter(|| {
                let mut ops = 0;
                for f in &frames {
                    let fr = frame::decode(f, Verify::Used { kept: STORED_COLLECTIONS }).unwrap();
                    if let frame::Frame::Commit(c) = &fr {
                        ops += c.ops.len();
                    }
                }
                ops
            })
        });
        g.bench_function(BenchmarkId::from_parameter("full"), |b| {
            b.iter(|| frames.iter().map(|f| frame::decode(f, Verify::All).unwrap().seq().unwrap_or(0)).sum::<i64>())
        });
        g.bench_function(BenchmarkId::from_parameter("peer_straightforward"), |b| {
            b.iter(|| frames.iter().map(|f| peer_straightforward(f)).sum::<usize>())
        });
        g.bench_function(BenchmarkId::from_parameter("peer_chosen_crates"), |b| {
            b.iter(|| frames.iter().map(|f| peer_chosen_crates(f)).sum::<usize>())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
