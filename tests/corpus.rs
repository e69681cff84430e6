//! Decoding real frames: the production relay corpus against its index and
//! manifest, the reference-PDS corpus against its independent summary, and
//! both replayed into a store and read back with `stats`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use instancemap::firehose::frame::{self, Frame, Verify};
use instancemap::repo::cid;
use instancemap::store::Store;
use serde_json::Value;

fn cid_str(c: Option<&[u8]>) -> Value {
    c.map_or(Value::Null, |c| Value::String(cid::to_string(c)))
}

#[test]
fn jetstream_frames_match_their_index() {
    let frames = jetstream_frames();
    let index = json("jetstream/frames_index.json");
    let index = index.as_array().unwrap();
    assert_eq!(frames.len(), index.len());
    for (bytes, want) in frames.iter().zip(index) {
        let i = want["index"].as_u64().unwrap();
        assert_eq!(bytes.len() as u64, want["frame_len"].as_u64().unwrap(), "frame {i} length");
        let f = frame::decode(bytes, Verify::All).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        let body = &want["body"];
        assert_eq!(f.kind(), want["header"]["t"].as_str().unwrap(), "frame {i}");
        assert_eq!(f.seq(), body["seq"].as_i64(), "frame {i}");
        assert_eq!(f.time(), body["time"].as_str(), "frame {i}");
        match &f {
            Frame::Commit(c) => {
                assert_eq!(c.repo, body["repo"]);
                assert_eq!(c.rev, body["rev"]);
                assert_eq!(c.since.map(str::to_owned), body["since"].as_str().map(str::to_owned));
                assert_eq!(cid_str(Some(c.commit)), body["commit"]);
                assert_eq!(cid_str(c.prev_data), body["prevData"]);
                assert_eq!(c.object.did, c.repo);
                assert_eq!(c.object.version, 3);
                assert_eq!(c.object.sig.len(), 64);
                let ops = body["ops"].as_array().unwrap();
                assert_eq!(c.ops.len(), ops.len(), "frame {i}");
                for (op, w) in c.ops.iter().zip(ops) {
                    assert_eq!(op.action.as_str(), w["action"]);
                    assert_eq!(format!("{}/{}", op.collection, op.rkey), w["path"].as_str().unwrap());
                    assert_eq!(cid_str(op.cid), w["cid"]);
                    assert_eq!(cid_str(op.prev), w.get("prev").cloned().unwrap_or(Value::Null));
                    assert!(!op.block_missing(), "frame {i}: record block missing");
                    if op.block.is_some() {
                        assert!(op.verified, "Verify::All validates every record");
                    }
                }
            }
            Frame::Identity(id) => {
                assert_eq!(id.did, body["did"]);
                assert_eq!(id.handle, body["handle"].as_str());
            }
            Frame::Account(a) => {
                assert_eq!(a.did, body["did"]);
                assert_eq!(a.active, body["active"].as_bool().unwrap());
                assert_eq!(a.status, body["status"].as_str());
            }
            other => panic!("frame {i}: unexpected {}", other.kind()),
        }
    }
}

#[test]
fn jetstream_frames_match_the_manifest() {
    let m = json("jetstream/manifest.json");
    let frames = jetstream_frames();
    let mut by_type = BTreeMap::<&str, u64>::new();
    let mut actions = BTreeMap::<&str, u64>::new();
    let mut dids = BTreeSet::new();
    let mut seqs = Vec::new();
    for bytes in &frames {
        // the ingest path (hash only what is used) must agree with Verify::All
        let f = frame::decode(bytes, Verify::Used { kept: instancemap::event::STORED_COLLECTIONS }).unwrap();
        *by_type.entry(f.kind()).or_default() += 1;
        seqs.push(f.seq().unwrap());
        if let Frame::Commit(c) = &f {
            dids.insert(c.repo.to_owned());
            for op in &c.ops {
                *actions.entry(op.action.as_str()).or_default() += 1;
            }
        }
    }
    assert_eq!(frames.len() as u64, m["frames"].as_u64().unwrap());
    assert_eq!(by_type["#commit"], m["commit_frames"].as_u64().unwrap());
    assert_eq!(by_type["#identity"], m["identity"].as_u64().unwrap());
    assert_eq!(by_type["#account"], m["account"].as_u64().unwrap());
    assert_eq!(actions["create"], m["creates"].as_u64().unwrap());
    assert_eq!(actions["update"], m["updates"].as_u64().unwrap());
    assert_eq!(actions["delete"], m["deletes"].as_u64().unwrap());
    let want_dids: BTreeSet<String> =
        m["commit_dids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()).collect();
    assert_eq!(dids, want_dids);
    assert_eq!(seqs.first().copied(), m["seq_first"].as_i64());
    assert_eq!(seqs.last().copied(), m["seq_last"].as_i64());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs strictly increase (and exceed 2^31)");
}

#[test]
fn reference_pds_frames_match_the_independent_summary() {
    let want = json("reference-pds.frames.json");
    let frames = reference_frames();
    assert_eq!(frames.len() as u64, want["frames"].as_u64().unwrap());
    let mut by_type = BTreeMap::<String, u64>::new();
    let mut ops = BTreeMap::<String, u64>::new();
    let mut colls = BTreeMap::<String, u64>::new();
    let mut statuses = BTreeMap::<String, u64>::new();
    let mut dids = BTreeSet::new();
    let mut missing = 0;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for (i, bytes) in frames.iter().enumerate() {
        let f = frame::decode(bytes, Verify::All).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        *by_type.entry(f.kind().to_owned()).or_default() += 1;
        let seq = f.seq().unwrap();
        first = first.min(seq);
        last = last.max(seq);
        match &f {
            Frame::Commit(c) => {
                dids.insert(c.repo.to_owned());
                for op in &c.ops {
                    *ops.entry(op.action.as_str().to_owned()).or_default() += 1;
                    *colls.entry(op.collection.to_owned()).or_default() += 1;
                    missing += u64::from(op.block_missing());
                }
            }
            Frame::Sync(s) => _ = dids.insert(s.did.to_owned()),
            Frame::Identity(id) => _ = dids.insert(id.did.to_owned()),
            Frame::Account(a) => {
                dids.insert(a.did.to_owned());
                let label = a.status.unwrap_or(if a.active { "active" } else { "inactive" });
                *statuses.entry(label.to_owned()).or_default() += 1;
            }
            _ => {}
        }
    }
    let as_map = |v: &Value| -> BTreeMap<String, u64> {
        v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect()
    };
    assert_eq!(by_type, as_map(&want["by_type"]));
    assert_eq!(ops, as_map(&want["ops"]));
    assert_eq!(colls, as_map(&want["collections"]));
    assert_eq!(statuses, as_map(&want["account_events"]));
    assert_eq!(dids.len() as u64, want["dids"].as_u64().unwrap());
    assert_eq!(missing, want["record_blocks_missing"].as_u64().unwrap());
    assert_eq!(first, want["first_seq"].as_i64().unwrap());
    assert_eq!(last, want["last_seq"].as_i64().unwrap());
}

#[test]
fn replayed_reference_corpus_is_reported_by_stats() {
    let want = json("reference-pds.frames.json");
    let dir = tempfile::tempdir().unwrap();
    let store = ingest_frames(Store::open(dir.path()).unwrap(), "replay", &reference_frames());
    let s = stats(&store);
    assert_eq!(s.cursors["replay"], want["last_seq"].as_i64().unwrap());
    for (t, n) in want["by_type"].as_object().unwrap() {
        assert_eq!(s.frames[t], n.as_i64().unwrap(), "{t}");
    }
    for (a, n) in want["ops"].as_object().unwrap() {
        assert_eq!(s.ops[a], n.as_i64().unwrap(), "{a}");
    }
    for (c, n) in want["collections"].as_object().unwrap() {
        assert_eq!(s.collections[c].values().sum::<i64>(), n.as_i64().unwrap(), "{c}");
    }
    for (st, n) in want["account_events"].as_object().unwrap() {
        assert_eq!(s.account_events[st], n.as_i64().unwrap(), "{st}");
    }
    assert_eq!(s.accounts.total, want["dids"].as_i64().unwrap());
    assert_eq!(s.accounts.by_status.values().sum::<i64>(), s.accounts.total);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.record_blocks_missing, 0);
}

#[test]
fn replayed_jetstream_corpus_is_reported_by_stats() {
    let m = json("jetstream/manifest.json");
    let dir = tempfile::tempdir().unwrap();
    let store = ingest_frames(Store::open(dir.path()).unwrap(), "replay", &jetstream_frames());
    let s = stats(&store);
    assert_eq!(s.cursors["replay"], m["seq_last"].as_i64().unwrap());
    assert_eq!(s.frames["#commit"], m["commit_frames"].as_i64().unwrap());
    assert_eq!(s.ops["create"], m["creates"].as_i64().unwrap());
    assert_eq!(s.ops["update"], m["updates"].as_i64().unwrap());
    assert_eq!(s.ops["delete"], m["deletes"].as_i64().unwrap());
    assert_eq!(s.frames.values().sum::<i64>(), m["frames"].as_i64().unwrap());
    // the one #account made its DID active
    assert_eq!(s.accounts.by_status["active"], 1);
    let a = store.account("did:plc:hqvhxrowqbemo5e4wjnj6zao").unwrap().unwrap();
    assert_eq!(a.active, Some(true));
}

#[test]
fn the_same_frames_twice_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let frames = reference_frames();
    let store = ingest_frames(Store::open(dir.path()).unwrap(), "replay", &frames);
    let once = snapshot(&store);
    let store = ingest_frames(store, "replay", &frames);
    assert_eq!(snapshot(&store), once);
    assert_eq!(stats(&store).dropped["duplicate"], frames.len() as i64);
}
