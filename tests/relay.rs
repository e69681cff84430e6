//! `run` against a fake relay on 127.0.0.1:0 that serves the recorded
//! reference frames, honours `?cursor=`, drops and closes the connection
//! mid-stream, re-sends an already-delivered event, and sends `#info` and
//! error frames: the store must end with every event exactly once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use instancemap::app::{self, RunOptions};
use instancemap::firehose::frame::{self, Verify};
use instancemap::firehose::subscribe::{SubscribeConfig, SUBSCRIBE_PATH};
use instancemap::metrics;
use instancemap::store::Store;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn seq_of(f: &[u8]) -> i64 {
    frame::decode(f, Verify::Used { kept: &[] }).unwrap().seq().unwrap()
}

/// Serves `frames` per the script in the module docs; records the cursor of
/// every connection.
#[allow(clippy::result_large_err)] // the callback type is tungstenite's
async fn fake_relay(listener: TcpListener, frames: Arc<Vec<Vec<u8>>>, cursors: Arc<Mutex<Vec<Option<i64>>>>) {
    let mut conn = 0;
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let seen = Arc::new(Mutex::new(None));
        let seen2 = seen.clone();
        let cb = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            assert_eq!(req.uri().path(), SUBSCRIBE_PATH);
            let cursor = req.uri().query().and_then(|q| q.strip_prefix("cursor=")).map(|c| c.parse::<i64>().unwrap());
            *seen2.lock().unwrap() = cursor;
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, cb).await.unwrap();
        let cursor = *seen.lock().unwrap();
        cursors.lock().unwrap().push(cursor);
        let c = cursor.unwrap_or(0);
        let send = |f: &Vec<u8>| Message::Binary(f.clone().into());
        match conn {
            0 => {
                ws.send(Message::Binary(info_frame("OutdatedCursor").into())).await.unwrap();
                for f in frames.iter().filter(|f| seq_of(f) > c && seq_of(f) <= 400) {
                    ws.send(send(f)).await.unwrap();
                }
                // drop the TCP connection with no close frame
                drop(ws);
            }
            1 => {
                // an inclusive replay: the event at the cursor comes again
                for f in frames.iter().filter(|f| seq_of(f) >= c && seq_of(f) <= 900) {
                    ws.send(send(f)).await.unwrap();
                }
                ws.send(Message::Binary(error_frame("ConsumerTooSlow").into())).await.unwrap();
                ws.close(None).await.unwrap();
            }
            2 => {
                for f in frames.iter().filter(|f| seq_of(f) > c && seq_of(f) <= 1200) {
                    ws.send(send(f)).await.unwrap();
                }
                ws.send(Message::Binary(b"\x00garbage".to_vec().into())).await.unwrap();
                ws.close(None).await.unwrap();
            }
            _ => {
                for f in frames.iter().filter(|f| seq_of(f) > c) {
                    ws.send(send(f)).await.unwrap();
                }
                // stay open and quiet, as a caught-up relay does
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    drop(ws);
                });
            }
        }
        conn += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_survives_disconnects_with_every_event_exactly_once() {
    let frames = Arc::new(reference_frames());
    let last = seq_of(frames.last().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cursors = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(fake_relay(listener, frames.clone(), cursors.clone()));

    let dir = tempfile::tempdir().unwrap();
    let mut sub = SubscribeConfig::new(format!("ws://{addr}{SUBSCRIBE_PATH}"));
    sub.backoff_min = Duration::from_millis(10);
    sub.backoff_max = Duration::from_millis(50);
    let opts = RunOptions { subscribe: sub, ..run_options(addr, dir.path()) };
    let cancel = CancellationToken::new();
    let run = tokio::spawn(app::run(opts, cancel.clone()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metrics::CURSOR_COMMITTED.get() != last {
        assert!(tokio::time::Instant::now() < deadline, "cursor stuck at {}", metrics::CURSOR_COMMITTED.get());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    let store = run.await.unwrap().unwrap();

    assert_eq!(*cursors.lock().unwrap(), vec![None, Some(400), Some(900), Some(1200)]);
    let s = stats(&store);
    let endpoint = format!("ws://{addr}{SUBSCRIBE_PATH}");
    assert_eq!(s.cursors[&endpoint], last);
    assert_eq!(s.info["OutdatedCursor"], 1);
    assert_eq!(s.error_frames["ConsumerTooSlow"], 1);
    assert_eq!(s.dropped["duplicate"], 1);
    assert_eq!(s.errors.values().sum::<i64>(), 1, "the garbage frame: {:?}", s.errors);

    // exactly the store an uninterrupted replay builds
    let mut live = snapshot(&store);
    live.counters.retain(|k, _| !k.starts_with("error/") && k != "frame/#info" && k != "frame/error");
    let dir2 = tempfile::tempdir().unwrap();
    let reference = ingest_frames(Store::open(dir2.path()).unwrap(), "replay", &frames);
    assert_eq!(live, snapshot(&reference));
    assert!(metrics::RECONNECTS.with_label_values(&["closed"]).get() >= 2);
}
