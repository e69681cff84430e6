//! Signature verification, one thread: k256 on the 148 real commit
//! signatures of the relay corpus (keys from their DID documents), through
//! instancemap's `PublicKey` (libsecp256k1) and through the pure-Rust `k256`
//! crate for comparison; and p256 on as many signatures made here over the
//! same digests.

use std::collections::HashMap;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use instancemap::firehose::frame::{self, Frame, Verify};
use instancemap::firehose::framelog;
use instancemap::identity::crypto::PublicKey;
use instancemap::identity::did;
use instancemap::repo::commit::unsigned_digest;
use p256::ecdsa::signature::hazmat::PrehashSigner;

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jetstream");
    let docs: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("did_docs.json")).unwrap()).unwrap();
    let keys: HashMap<String, PublicKey> = docs
        .as_object()
        .unwrap()
        .iter()
        .map(|(d, doc)| {
            let mk = did::parse(d, &serde_json::to_vec(doc).unwrap()).unwrap().signing_key.unwrap();
            (d.clone(), PublicKey::from_multikey(&mk).unwrap())
        })
        .collect();
    let mut k256_cases = Vec::new();
    for f in framelog::read_all(&dir.join("frames.bin.zst")).unwrap() {
        if let Ok(Frame::Commit(c)) = frame::decode(&f, Verify::All) {
            let (digest, sig) = unsigned_digest(c.blocks.get(c.commit).unwrap()).unwrap();
            k256_cases.push((keys[c.repo].clone(), digest, sig.to_vec()));
        }
    }
    let sk = p256::ecdsa::SigningKey::from_bytes(&[9u8; 32].into()).unwrap();
    let pk = PublicKey::P256(*sk.verifying_key());
    let p256_cases: Vec<_> = k256_cases
        .iter()
        .map(|(_, digest, _)| {
            let s: p256::ecdsa::Signature = sk.sign_prehash(digest).unwrap();
            let s = s.normalize_s().unwrap_or(s);
            (pk.clone(), *digest, s.to_bytes().to_vec())
        })
        .collect();
    let k256_crate: Vec<_> = k256_cases
        .iter()
        .map(|(k, d, s)| {
            let PublicKey::K256(pk) = k else { unreachable!("k256 keys") };
            let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk.serialize()).unwrap();
            (vk, *d, k256::ecdsa::Signature::from_slice(s).unwrap())
        })
        .collect();
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(k256_crate.len() as u64));
    g.bench_function("k256_real_commits_pure_rust_k256_crate", |b| {
        use k256::ecdsa::signature::hazmat::PrehashVerifier;
        b.iter(|| {
            for (k, d, s) in k256_crate.iter() {
                k.verify_prehash(d, s).unwrap();
            }
        })
    });
    for (name, cases) in [("k256_real_commits_libsecp256k1", &k256_cases), ("p256", &p256_cases)] {
        g.throughput(Throughput::Elements(cases.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                for (k, d, s) in cases.iter() {
                    k.verify_prehash(d, s).unwrap();
                }
            })
        });
    }
    g.finish();
}

/// DID document parsing: a real document, and the worst a 1 MiB body
/// (the fetch limit) can hold, to size the work the resolver hands to the
/// blocking pool.
fn documents(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jetstream");
    let docs: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("did_docs.json")).unwrap()).unwrap();
    let (real_did, real) = docs.as_object().unwrap().iter().next().unwrap();
    let real = serde_json::to_vec(real).unwrap();
    let did = "did:web:hostile.example";
    let pad = |doc: serde_json::Value, field: &str, item: serde_json::Value| {
        let mut doc = doc;
        let one = serde_json::to_vec(&item).unwrap().len() + 1;
        doc[field] = serde_json::Value::Array(vec![item; (1 << 20) / one - 8]);
        serde_json::to_vec(&doc).unwrap()
    };
    let base = serde_json::json!({"id": did});
    let handles = pad(base.clone(), "alsoKnownAs", serde_json::json!("at://not a handle"));
    let methods = pad(
        base.clone(),
        "verificationMethod",
        serde_json::json!({"id": "#x", "type": "Multikey", "publicKeyMultibase": "z".repeat(40)}),
    );
    let services = pad(base.clone(), "service", serde_json::json!({"id": "#x", "type": "X", "serviceEndpoint": "y"}));
    let long_key = serde_json::to_vec(&serde_json::json!({"id": did, "verificationMethod": [
        {"id": "#atproto", "type": "EcdsaSecp256k1VerificationKey2019", "publicKeyMultibase": format!("z{}", "2".repeat(127))}
    ]}))
    .unwrap();
    let mut g = c.benchmark_group("did_document");
    g.bench_function("real_document", |b| b.iter(|| did::parse(real_did, &real).unwrap()));
    for (name, body, d) in [
        ("1MiB_of_alsoKnownAs", &handles, did),
        ("1MiB_of_verificationMethod", &methods, did),
        ("1MiB_of_service", &services, did),
        ("longest_key_allowed", &long_key, did),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| did::parse(d, body)));
    }
    g.finish();
}

criterion_group!(benches, bench, documents);
criterion_main!(benches);
