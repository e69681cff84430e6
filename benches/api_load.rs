//! Query API under load: `dev.instancemap.lookup?subject=<random known DID>`
//! over N concurrent keep-alive HTTP/1.1 connections, against `api::serve`
//! in this process on loopback (rate limit off), for a fixed time.
//!
//! The store: ACCOUNTS accounts (PLC state through the PLC loader; env
//! INSTANCEMAP_BENCH_ACCOUNTS, default 1,000,000) over 3,000 hosts, shaped
//! like the network: a large provider (100 hosts under one registrable
//! domain, one user domain, 80 % of the accounts), 30 providers of 10 hosts
//! (15 %) and 2,600 self-hosted PDSes (5 %); every host online with a
//! describeServer answer; then `map::recompute`. INSTANCEMAP_BENCH_DB=DIR
//! keeps the store there and reuses it (for `instancemap serve` and wrk).
//!
//! The server runs on its own 2-worker runtime (what `serve` has on 2
//! cores), the clients on another (INSTANCEMAP_BENCH_CLIENT_THREADS, default
//! 1): both share the machine's cores. Each client writes a minimal request
//! and reads the whole response (Content-Length or chunked), timing each;
//! the first WARMUP of each run is not counted. Env:
//! INSTANCEMAP_BENCH_CONNECTIONS (default "8,32,64"),
//! INSTANCEMAP_BENCH_SECONDS (default 10), INSTANCEMAP_BENCH_RATE (requests
//! per second offered in all, on a fixed schedule per connection; default
//! 0: each connection sends its next request when the answer is in),
//! INSTANCEMAP_BENCH_READS (the
//! read concurrency limit, default the server's), INSTANCEMAP_BENCH_INLINE
//! (1, the default: reads served from memory on the async worker when they
//! can be; 0: always on the blocking pool). INSTANCEMAP_BENCH_TARGET=IP:PORT
//! measures another server with the same client instead (`instancemap
//! serve` on the bench's store, or with INSTANCEMAP_BENCH_PATH=/path one
//! fixed path: nginx serving an answer as a static file, the ceiling in
//! `benches/lookup_ceiling.sh`). Each run also prints the
//! CPU this process used and what the rest of the machine used meanwhile
//! (cores, from /proc), to show contention.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use instancemap::api::{self, ApiState, Limits};
use instancemap::hosts::{self, Describe, HostRecord};
use instancemap::plc::load::Loader;
use instancemap::plc::{ExportOp, OpState};
use instancemap::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOSTS: usize = 3_000;
const WARMUP: Duration = Duration::from_secs(2);
const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn env<T: std::str::FromStr>(k: &str, default: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The n-th account's DID: `did:plc:` and 24 base32 characters.
fn did(n: u64) -> String {
    let mut s = *b"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    for i in 0..12 {
        s[s.len() - 1 - i] = B32[((n >> (5 * i)) & 31) as usize];
    }
    String::from_utf8(s.to_vec()).expect("ascii")
}

/// Host index for account n: 80 % on the large provider's 100 hosts, 15 %
/// on 30 providers' 10 hosts each, 5 % self-hosted.
fn host_of(n: u64) -> usize {
    let r = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    match r % 100 {
        0..80 => (r / 100 % 100) as usize,
        80..95 => 100 + (r / 100 % 300) as usize,
        _ => 400 + (r / 100 % 2_600) as usize,
    }
}

fn host(i: usize) -> String {
    match i {
        0..100 => format!("https://pds{i}.us-east.host.bigsky.network"),
        100..400 => format!("https://pds{}.provider{}.net", i % 10, (i - 100) / 10),
        _ => format!("https://pds.self{i}.org"),
    }
}

fn user_domain(i: usize) -> String {
    match i {
        0..100 => ".bigsky.social".into(),
        100..400 => format!(".provider{}.net", (i - 100) / 10),
        _ => format!(".self{i}.org"),
    }
}

fn build(dir: &std::path::Path, accounts: u64) {
    let t = Instant::now();
    let store = Store::open(dir).unwrap();
    let mut l = Loader::new(&store).unwrap();
    for n in 0..accounts {
        let h = host_of(n);
        l.apply(ExportOp {
            did: did(n),
            cid: format!("bafy{n}"),
            created_at: "2025-01-01T00:00:00.000Z".into(),
            seq: Some(n + 1),
            nullified: false,
            prev: None,
            state: OpState::Update {
                pds: Some(host(h)),
                handle: Some(format!("u{n}{}", user_domain(h))),
                signing_key: None,
            },
        })
        .unwrap();
    }
    l.flush().unwrap();
    for i in 0..HOSTS {
        let h = host(i);
        let rec = HostRecord {
            state: "online".into(),
            last_checked_ms: Some(1_760_000_000_000),
            describe: Some(Describe {
                available_user_domains: vec![user_domain(i)],
                contact_email: Some(format!("admin@{}", user_domain(i).trim_start_matches('.'))),
                privacy_policy: Some("https://example.org/privacy".into()),
                ..Describe::default()
            }),
            ..hosts::get(&store, &h).unwrap().unwrap_or_default()
        };
        hosts::put(&store, &h, &rec).unwrap();
    }
    let s = instancemap::cluster::map::recompute(&store, &Default::default()).unwrap();
    store.flush().unwrap();
    // as a store is some while after its load: operands folded
    store.compact_all();
    eprintln!(
        "built {accounts} accounts, {} hosts, {} instances in {:.1} s",
        s.hosts,
        s.instances,
        t.elapsed().as_secs_f64()
    );
}

/// xorshift64*: cheap and good enough to pick accounts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Reads one whole response; returns its status. `buf` keeps bytes past it.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-response");
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if s.read_buf(buf).await? == 0 {
            return Err(eof());
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|e| std::io::Error::other(e.to_string()))?;
    let status: u16 = head.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("status"))?;
    let mut length = None;
    let mut chunked = false;
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let end = if chunked {
        // chunks: size line, data, CRLF; a zero size ends it (no trailers)
        let mut at = head_end;
        loop {
            let line_end = loop {
                if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + i;
                }
                if s.read_buf(buf).await? == 0 {
                    return Err(eof());
                }
            };
            let size = std::str::from_utf8(&buf[at..line_end])
                .ok()
                .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok())
                .ok_or_else(|| std::io::Error::other("chunk size"))?;
            let next = line_end + 2 + size + 2;
            while buf.len() < next {
                if s.read_buf(buf).await? == 0 {
                    return Err(eof());
                }
            }
            at = next;
            if size == 0 {
                break at;
            }
        }
    } else {
        let end = head_end + length.ok_or_else(|| std::io::Error::other("no length"))?;
        while buf.len() < end {
            if s.read_buf(buf).await? == 0 {
                return Err(eof());
            }
        }
        end
    };
    buf.drain(..end);
    Ok(status)
}

struct ConnResult {
    latencies_us: Vec<u32>,
    errors: u64,
}

/// One connection: requests back to back (`every` is `None`), or one per
/// `every` on a fixed schedule. On a schedule, a request sent late because
/// the previous answer came after its time is timed from its scheduled time
/// (no coordinated omission); one sent late only by the timer (tokio's are
/// 1 ms coarse) from when it was sent.
async fn client(
    addr: SocketAddr,
    path: Option<std::sync::Arc<str>>,
    accounts: u64,
    seed: u64,
    count_from: Instant,
    until: Instant,
    every: Option<Duration>,
) -> ConnResult {
    let mut out = ConnResult { latencies_us: Vec::with_capacity(1 << 16), errors: 0 };
    let mut rng = Rng(seed | 1);
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut req = String::with_capacity(128);
    // a random phase, so the connections do not send in step
    let mut next = Instant::now() + every.map_or(Duration::ZERO, |e| e.mul_f64((rng.next() % 1000) as f64 / 1000.0));
    let mut done = Instant::now();
    loop {
        let start = match every {
            None => Instant::now(),
            Some(e) => {
                let due = next;
                next += e;
                if done > due {
                    due
                } else {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                }
            }
        };
        if start >= until {
            break;
        }
        req.clear();
        match &path {
            Some(p) => {
                req.push_str("GET ");
                req.push_str(p);
            }
            None => {
                req.push_str("GET /xrpc/dev.instancemap.lookup?subject=");
                req.push_str(&did(rng.next() % accounts));
            }
        }
        req.push_str(" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let status = match s.write_all(req.as_bytes()).await {
            Ok(()) => read_response(&mut s, &mut buf).await,
            Err(e) => Err(e),
        };
        done = Instant::now();
        let took = done - start;
        match status {
            Ok(200) if start >= count_from => out.latencies_us.push(took.as_micros().min(u32::MAX as u128) as u32),
            Ok(200) => {}
            Ok(_) => out.errors += 1,
            Err(e) => {
                eprintln!("connection failed: {e}");
                out.errors += 1;
                break;
            }
        }
    }
    out
}

/// CPU time so far in clock ticks: the whole machine's busy time (from
/// /proc/stat) and this process's (from /proc/self/stat); zeros elsewhere.
fn cpu_ticks() -> (u64, u64) {
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<u64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal
            Some(f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?)
        })
        .unwrap_or(0);
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            // fields 14 and 15 (utime, stime); the first after the name is field 3
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    (machine, own)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn main() {
    let accounts: u64 = env("INSTANCEMAP_BENCH_ACCOUNTS", 1_000_000);
    let seconds: u64 = env("INSTANCEMAP_BENCH_SECONDS", 10);
    let client_threads: usize = env("INSTANCEMAP_BENCH_CLIENT_THREADS", 1);
    let rate: f64 = env("INSTANCEMAP_BENCH_RATE", 0.0);
    let conns: Vec<usize> = env("INSTANCEMAP_BENCH_CONNECTIONS", "8,32,64".to_owned())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    // another server (`instancemap serve`, or nginx serving one answer as
    // a file: benches/lookup_ceiling.sh) measured by the same client
    let target: Option<SocketAddr> =
        std::env::var("INSTANCEMAP_BENCH_TARGET").ok().map(|t| t.parse().expect("TARGET: ip:port"));
    let path: Option<std::sync::Arc<str>> = std::env::var("INSTANCEMAP_BENCH_PATH").ok().map(Into::into);
    let server = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let tmp = tempfile::tempdir().unwrap();
    let addr = match target {
        Some(a) => a,
        None => {
            let dir = std::env::var_os("INSTANCEMAP_BENCH_DB").map_or_else(|| tmp.path().to_path_buf(), Into::into);
            let marker = dir.join(format!("api-load-bench-{accounts}"));
            if !marker.exists() {
                if dir.exists() && dir != tmp.path() {
                    std::fs::remove_dir_all(&dir).unwrap();
                }
                build(&dir, accounts);
                std::fs::write(&marker, b"").unwrap();
            }
            let store = Store::open_read_only(&dir).unwrap();
            // a sanity look at one answer
            let one = instancemap::api::query::responsibility(
                &store,
                &Default::default(),
                &did(0),
                None,
                &instancemap::cluster::routes::Subject::Account,
            )
            .unwrap();
            assert_eq!(one["state"], "assigned", "{one}");
            let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
            let addr = listener.local_addr().unwrap();
            let limits = Limits {
                rate_per_client: 0,
                concurrency: env("INSTANCEMAP_BENCH_READS", Limits::default().concurrency),
                inline_reads: env("INSTANCEMAP_BENCH_INLINE", 1u8) == 1,
                ..Limits::default()
            };
            server.spawn(api::serve(listener, ApiState::new(store, true, None, limits), cancel.clone()));
            addr
        }
    };

    let clients =
        tokio::runtime::Builder::new_multi_thread().worker_threads(client_threads).enable_all().build().unwrap();
    println!(
        "api_load: {} {accounts} accounts, {HOSTS} hosts; {seconds} s per run after {} s warm-up; \
         server 2 workers, clients {client_threads} thread(s), same machine; {}",
        match (&target, &path) {
            (Some(t), Some(p)) => format!("GET {p} from {t};"),
            (Some(t), None) => format!("lookup by DID from {t},"),
            _ => "lookup by DID,".to_owned(),
        },
        WARMUP.as_secs(),
        if rate > 0.0 { format!("open loop, {rate} requests/s offered in all") } else { "closed loop".into() }
    );
    println!(
        "{:>11} {:>12} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10} {:>12}",
        "connections", "requests/s", "p50 ms", "p99 ms", "p999 ms", "max ms", "errors", "cpu here", "cpu others"
    );
    for &n in &conns {
        let count_from = Instant::now() + WARMUP;
        let until = count_from + Duration::from_secs(seconds);
        let mut cpu_from = None;
        let results: Vec<ConnResult> = clients.block_on(async {
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let every = (rate > 0.0).then(|| Duration::from_secs_f64(n as f64 / rate));
                    tokio::spawn(client(
                        addr,
                        path.clone(),
                        accounts,
                        0x5EED + i as u64 * 7919,
                        count_from,
                        until,
                        every,
                    ))
                })
                .collect();
            tokio::time::sleep_until(count_from.into()).await;
            cpu_from = Some(cpu_ticks());
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        let ((m0, o0), (m1, o1)) = (cpu_from.unwrap_or_default(), cpu_ticks());
        // clock ticks are 1/100 s on Linux
        let cores = |t: u64| t as f64 / 100.0 / seconds as f64;
        let mut all: Vec<u32> = results.iter().flat_map(|r| r.latencies_us.iter().copied()).collect();
        let errors: u64 = results.iter().map(|r| r.errors).sum();
        all.sort_unstable();
        println!(
            "{:>11} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7} {:>10.2} {:>12.2}",
            n,
            all.len() as f64 / seconds as f64,
            pct(&all, 0.50),
            pct(&all, 0.99),
            pct(&all, 0.999),
            all.last().map_or(f64::NAN, |m| f64::from(*m) / 1000.0),
            errors,
            cores(o1 - o0),
            cores((m1 - m0).saturating_sub(o1 - o0)),
        );
    }
    cancel.cancel();
}
