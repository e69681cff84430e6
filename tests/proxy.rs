//! The address guard under a proxy: with `HTTP_PROXY` (and friends) set, a
//! guarded request went to the proxy, which resolved the name itself, so the
//! guard never saw the address. Guarded clients never use an environment
//! proxy. (Its own test binary: it sets process-wide variables.)

use instancemap::net::Fetcher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_requests_never_go_through_an_environment_proxy() {
    // a "proxy" that counts the connections it gets and answers 200 "proxied"
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = proxy.accept().await.unwrap();
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nproxied").await;
        }
    });
    // the real server
    let app = axum::Router::new().route("/x", axum::routing::get(|| async { "direct" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    for var in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        // SAFETY: this test binary has this one test; nothing else reads the environment meanwhile
        unsafe { std::env::set_var(var, format!("http://{proxy_addr}")) };
    }
    unsafe {
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let f = Fetcher::new(true);
    let body = f.get(&format!("http://localhost:{port}/x")).await.unwrap();
    assert_eq!(body, b"direct");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the proxy was used");
}
