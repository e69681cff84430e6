//! DID documents are parsed off the async runtime: a host serving 1 MiB
//! documents (the fetch limit) for every DID it names must not hold the
//! runtime's sockets and API for a parse each. In a test binary of its own,
//! so no other test competes for the two cores while the runtime's gaps are
//! measured.

mod common;

use instancemap::store::Store;

/// The `i`th of a run of valid did:plc identifiers.
fn plc_did(i: usize) -> String {
    const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut s = String::from("did:plc:");
    for k in (0..24).rev() {
        s.push(B32[(i >> (5 * k.min(12))) & 31] as char);
    }
    s
}

/// A directory on its own thread serving, for every DID, a document of
/// 1 MiB (the fetch limit) of services: the costliest body to parse.
fn huge_document_directory() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().route(
                "/{did}",
                axum::routing::get(|axum::extract::Path(did): axum::extract::Path<String>| async move {
                    huge_document(&did)
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn huge_document(did: &str) -> Vec<u8> {
    let item = serde_json::json!({"id": "#x", "type": "X", "serviceEndpoint": "y"});
    let n = (1 << 20) / (serde_json::to_vec(&item).unwrap().len() + 1) - 8;
    serde_json::to_vec(&serde_json::json!({"id": did, "service": vec![item; n]})).unwrap()
}

/// Regression: DID documents were parsed on the async runtime, so a host
/// serving 1 MiB documents held the runtime (its sockets, the API) for the
/// parse of each one.
#[test]
fn a_huge_did_document_is_parsed_off_the_runtime() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let addr = huge_document_directory();
    let dids: Vec<String> = (0..4).map(plc_did).collect();
    // what one parse costs here, on this thread
    let doc = huge_document(&dids[0]);
    let t = Instant::now();
    instancemap::identity::did::parse(&dids[0], &doc).unwrap();
    let one = t.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let longest_gap = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let resolver = instancemap::identity::resolve::Resolver::new(store, &format!("http://{addr}"), true, None);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let (gap, done) = (longest_gap.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    gap.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
            })
        };
        let all = dids.iter().map(|d| resolver.resolve(d));
        for r in futures_util::future::join_all(all).await {
            let doc = r.expect("the document parses");
            assert!(doc.problems.contains(&"no #atproto_pds service"));
        }
        done.store(true, Ordering::Relaxed);
        ticker.await.unwrap();
    });
    let gap = Duration::from_micros(longest_gap.load(Ordering::Relaxed));
    assert!(gap < one / 2, "the runtime was held {gap:?}; one parse takes {one:?}");
}
