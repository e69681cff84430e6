//! A recompute that does not finish: `recluster` killed with SIGKILL (or
//! stopped by SIGTERM) part way. The bug: a recompute rewrites assignments
//! in batches and the counts only at its end, so after a kill `run`'s
//! maintainer applied deltas to counts that disagreed with the assignments
//! (100,000 of 300,000 accounts counted as assigned) until another full
//! recompute. Now the recompute leaves a marker until its last batch, and
//! the maintainer recomputes first when it finds one.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use instancemap::cluster::map;
use instancemap::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_instancemap");

/// Accounts in the synthetic export: five recompute batches.
const ACCOUNTS: usize = 100_000;
const HOSTS: usize = 40;

fn did(i: usize) -> String {
    // 24 base32 characters
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut s = String::from("did:plc:");
    let mut n = i as u64 * 2_654_435_761 + 7;
    for _ in 0..24 {
        s.push(alphabet[(n % 32) as usize] as char);
        n /= 32;
        if n == 0 {
            n = i as u64 + 11;
        }
    }
    s
}

/// A database with every account loaded from a PLC export and the map not
/// yet built (the library loader marks; only the commands bring the map
/// current).
fn loaded_db(dir: &Path) -> std::path::PathBuf {
    let export = dir.join("export.jsonl");
    let mut text = String::with_capacity(ACCOUNTS * 400);
    for i in 0..ACCOUNTS {
        let line = common::plc_create_line(
            i,
            &did(i),
            &format!("u{i}.pds{}.example.com", i % HOSTS),
            &format!("https://pds{}.example.com", i % HOSTS),
        );
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(&export, text).unwrap();
    let db = dir.join("db");
    let store = Store::open(&db).unwrap();
    let stats = instancemap::plc::source::load_file(&store, &export).unwrap();
    assert_eq!(stats.applied, ACCOUNTS as u64);
    store.flush().unwrap();
    db
}

/// Starts `recluster` and sends `signal` once it has committed its first
/// batch of assignments; returns its exit status and stderr.
fn recluster_until_first_batch(db: &Path, signal: &str) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(["recluster", "--db"])
        .arg(db)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "recluster ended before its first batch: {seen}");
        seen.push_str(&line);
        if line.starts_with("recompute: ") {
            break;
        }
    }
    let ok = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    seen.push_str(&rest);
    (child.wait().unwrap(), seen)
}

fn registered(store: &Store) -> i64 {
    map::host_members(store)
        .unwrap()
        .values()
        .filter_map(|b| b.get(instancemap::cluster::assign::bucket::REGISTERED))
        .sum()
}

#[test]
fn recluster_killed_mid_way_leaves_counts_the_maintainer_rebuilds_before_any_delta() {
    let dir = tempfile::tempdir().unwrap();
    let db = loaded_db(dir.path());
    let (status, err) = recluster_until_first_batch(&db, "-KILL");
    assert!(!status.success(), "recluster was killed: {err}");
    let store = Store::open(&db).unwrap();
    assert!(map::recompute_interrupted(&store).unwrap().is_some(), "the kill landed mid-recompute: the marker says so");
    let f = map::freshness(&store).unwrap();
    assert!(!f.is_current() && f.note().unwrap().contains("did not finish"), "{f:?}");
    // what `run`'s maintainer does first
    let mut m = map::Maintainer::new(store.clone(), Default::default());
    m.run_until_idle().unwrap();
    assert_eq!(registered(&store), ACCOUNTS as i64, "every account counted once");
    assert!(map::freshness(&store).unwrap().is_current());
    // and a full recompute finds nothing to change
    let s = map::recompute(&store, &Default::default()).unwrap();
    assert_eq!((s.accounts, s.changed), (ACCOUNTS as u64, 0));
    assert_eq!(registered(&store), ACCOUNTS as i64);
    assert_eq!(s.hosts, HOSTS);
}

#[test]
fn recluster_stopped_by_sigterm_says_so_and_the_next_recluster_completes() {
    let dir = tempfile::tempdir().unwrap();
    let db = loaded_db(dir.path());
    let (status, err) = recluster_until_first_batch(&db, "-TERM");
    assert!(!status.success(), "a stopped recluster does not exit 0: {err}");
    assert!(err.contains("stopped after"), "{err}");
    {
        let store = Store::open_read_only(&db).unwrap();
        assert!(map::recompute_interrupted(&store).unwrap().is_some());
    }
    // `stats` and `instances` say the map is being rebuilt
    let out = Command::new(BIN).args(["stats", "--json", "--db"]).arg(&db).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["map"]["current"], false, "{v}");
    let out = Command::new(BIN).args(["instances", "--db"]).arg(&db).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("being rebuilt"));
    let out = Command::new(BIN).args(["recluster", "--db"]).arg(&db).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = Store::open_read_only(&db).unwrap();
    assert_eq!(registered(&store), ACCOUNTS as i64);
    assert!(map::freshness(&store).unwrap().is_current());
}
