//! Full recompute of the instance map (`recluster`) over a synthetic
//! network: ACCOUNTS accounts (PLC state; env INSTANCEMAP_BENCH_ACCOUNTS,
//! default 1,000,000) over 30,000 hosts, a third of which advertise one of
//! 300 shared user domains and the rest stand on their own domains.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::Store;

const HOSTS: usize = 30_000;

fn host(i: usize) -> String {
    if i % 3 == 0 {
        format!("https://pds{i}.provider{}.net", i % 300)
    } else {
        format!("https://pds.self{i}.org")
    }
}

fn build(dir: &std::path::Path, accounts: usize) {
    let store = Store::open(dir).unwrap();
    let mut l = Loader::new(&store).unwrap();
    for n in 0..accounts {
        l.apply(ExportOp {
            did: format!("did:plc:{:0>24}", n),
            cid: format!("bafy{n}"),
            created_at: "2024-01-01T00:00:00.000Z".into(),
            seq: Some(n as u64 + 1),
            nullified: false,
            prev: None,
            state: OpState::Update { pds: Some(host(n % HOSTS)), handle: None, signing_key: None },
        })
        .unwrap();
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
}

fn bench(c: &mut Criterion) {
    let accounts: usize =
        std::env::var("INSTANCEMAP_BENCH_ACCOUNTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), accounts);
    let store = Store::open(dir.path()).unwrap();
    let mut g = c.benchmark_group("recluster");
    g.sample_size(10);
    g.throughput(Throughput::Elements(accounts as u64));
    g.bench_function(format!("{accounts}_accounts_{HOSTS}_hosts"), |b| {
        b.iter(|| {
            let s = instancemap::cluster::map::recompute(&store, &Default::default()).unwrap();
            assert_eq!(s.accounts, accounts as u64);
            s.instances
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
