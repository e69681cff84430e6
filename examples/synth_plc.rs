//! A synthetic PLC export shaped like the network, for the scale test
//! (`benches/scale.sh`): sequence-form lines with real field lengths
//! (rotation keys, verification method, service, handle, signature).
//!
//! DIDS accounts over HOSTS hosts (at least 1,000): 80 % on a provider's
//! 100 hosts under one domain, 15 % on 30 providers of 10 hosts, 5 % over
//! every other host (self-hosted PDSes, one account at least each, the rest
//! log-uniform: most hold a handful). 5 % of the accounts migrate once (a
//! second operation, to a self-hosted host), 1 % are tombstoned. The DIDs
//! are `benches/api_load.rs`'s (`did:plc:aaaaaaaaaaaa` and the account's
//! number in 12 base32 characters), so its client can look them up.
//!
//! ```text
//! cargo run --release --example synth_plc -- DIDS HOSTS OUT.jsonl[.zst]
//! ```

use std::io::Write;

const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn did(n: u64) -> String {
    let mut s = *b"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    for i in 0..12 {
        s[s.len() - 1 - i] = B32[((n >> (5 * i)) & 31) as usize];
    }
    String::from_utf8(s.to_vec()).expect("ascii")
}

fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The host of account `n`.
fn host_of(n: u64, hosts: u64) -> u64 {
    let r = mix(n);
    let tail = hosts - 400;
    match r % 100 {
        0..80 => r / 100 % 100,
        80..95 => 100 + r / 100 % 300,
        // every self-hosted host gets one account first, then log-uniform
        _ if n / 20 < tail => 400 + n / 20,
        _ => {
            let u = (r >> 16) as f64 / (1u64 << 48) as f64;
            400 + ((tail as f64).powf(u) as u64).min(tail - 1)
        }
    }
}

fn host(i: u64) -> String {
    match i {
        0..100 => format!("https://pds{i}.us-east.host.bigsky.network"),
        100..400 => format!("https://pds{}.provider{}.net", i % 10, (i - 100) / 10),
        _ => format!("https://pds.self{i}.org"),
    }
}

fn handle(n: u64, h: u64) -> String {
    match h {
        0..100 => format!("user{n}.bigsky.social"),
        100..400 => format!("user{n}.provider{}.net", (h - 100) / 10),
        _ => format!("user{n}.self{h}.org"),
    }
}

fn key(n: u64, salt: u64) -> String {
    let mut s = String::from("did:key:zQ3sh");
    let mut x = mix(n ^ salt);
    for _ in 0..44 {
        s.push(B32[(x & 31) as usize] as char);
        x = x.rotate_right(5) ^ 0x5DEECE66D;
    }
    s
}

fn line(out: &mut String, seq: u64, n: u64, host_i: u64, prev: Option<&str>, tombstone: bool, cid: &str) {
    let d = did(n);
    let created = format!("2024-{:02}-{:02}T{:02}:00:00.000Z", 1 + n % 12, 1 + n % 28, n % 24);
    let sig = "c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2ln";
    let v = if tombstone {
        serde_json::json!({"did": d, "cid": cid, "seq": seq, "type": "sequenced_op", "createdAt": created,
            "operation": {"type": "plc_tombstone", "prev": prev, "sig": sig}})
    } else {
        serde_json::json!({"did": d, "cid": cid, "seq": seq, "type": "sequenced_op", "createdAt": created,
            "operation": {"type": "plc_operation", "prev": prev, "sig": sig,
                "rotationKeys": [key(n, 1), key(n, 2)],
                "verificationMethods": {"atproto": key(n, 3)},
                "alsoKnownAs": [format!("at://{}", handle(n, host_i))],
                "services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": host(host_i)}}}})
    };
    out.push_str(&v.to_string());
    out.push('\n');
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dids, hosts, path] = &args[..] else {
        eprintln!("usage: synth_plc DIDS HOSTS OUT.jsonl[.zst]");
        std::process::exit(2);
    };
    let dids: u64 = dids.parse().expect("DIDS");
    let hosts: u64 = hosts.parse::<u64>().expect("HOSTS").max(1_000);
    let file = std::fs::File::create(path).expect("creating the file");
    let mut w: Box<dyn Write> = if path.ends_with(".zst") {
        Box::new(zstd::Encoder::new(file, 3).expect("zstd").auto_finish())
    } else {
        Box::new(std::io::BufWriter::with_capacity(1 << 20, file))
    };
    let started = std::time::Instant::now();
    let (mut seq, mut buf) = (0u64, String::with_capacity(1 << 22));
    // in export order: the genesis operations, with every 20th account's
    // second operation (a migration or a tombstone) a little later
    let mut later: Vec<u64> = Vec::new();
    for n in 0..dids {
        seq += 1;
        let h = host_of(n, hosts);
        line(&mut buf, seq, n, h, None, false, &format!("bafyreig{n:0>51}"));
        let r = mix(n ^ 0xABCD) % 100;
        if r < 6 {
            later.push(n);
        }
        if later.len() >= 1000 || n + 1 == dids {
            for m in later.drain(..) {
                seq += 1;
                let prev = format!("bafyreig{m:0>51}");
                let tomb = mix(m ^ 0xABCD) % 100 == 5;
                let to = 400 + mix(m ^ 7) % (hosts - 400);
                line(&mut buf, seq, m, to, Some(&prev), tomb, &format!("bafyreim{m:0>51}"));
            }
        }
        if buf.len() > (1 << 22) - 4096 {
            w.write_all(buf.as_bytes()).expect("writing");
            buf.clear();
        }
        if n % 1_000_000 == 999_999 {
            eprintln!("synth_plc: {} accounts, {seq} operations, {:.0} s", n + 1, started.elapsed().as_secs_f64());
        }
    }
    w.write_all(buf.as_bytes()).expect("writing");
    drop(w);
    eprintln!(
        "synth_plc: {dids} accounts, {seq} operations over {hosts} hosts in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
