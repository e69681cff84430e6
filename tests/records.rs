//! Records of the stored collections are kept, replaced and deleted with
//! their ops; other collections are only counted.

mod common;

use common::*;
use instancemap::repo::cbor;
use instancemap::store::Store;

const DID: &str = "did:plc:cccccccccccccccccccccccc";

fn op<'a>(action: &'a str, path: &'a str, record: Option<ciborium::Value>) -> TestOp<'a> {
    TestOp { action, path, record, omit_block: false }
}

#[test]
fn labeler_service_records_are_kept_updated_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = "app.bsky.labeler.service/self";
    let create = commit_frame(
        1,
        DID,
        "3mptbypluud2a",
        &[
            op("create", path, Some(labeler_record("2026-01-01T00:00:00Z"))),
            op("create", "app.bsky.feed.post/3mptbypluud2a", Some(map(vec![("text", text("hi"))]))),
        ],
    );
    let store = ingest_frames(Store::open(dir.path()).unwrap(), "replay", &[create]);
    let r = store.record("app.bsky.labeler.service", DID, "self").unwrap().expect("kept");
    assert_eq!(r.seq, 1);
    assert_eq!(r.rev, "3mptbypluud2a");
    let json = cbor::to_json(&r.record).unwrap();
    assert_eq!(json["createdAt"], "2026-01-01T00:00:00Z");
    assert_eq!(store.records("app.bsky.feed.post").unwrap().len(), 0, "other collections are counted, not kept");

    let update =
        commit_frame(2, DID, "3mptbypluud2b", &[op("update", path, Some(labeler_record("2026-02-02T00:00:00Z")))]);
    let store = ingest_frames(store, "replay", &[update]);
    let r = store.record("app.bsky.labeler.service", DID, "self").unwrap().unwrap();
    assert_eq!(cbor::to_json(&r.record).unwrap()["createdAt"], "2026-02-02T00:00:00Z");

    let delete = commit_frame(3, DID, "3mptbypluud2c", &[op("delete", path, None)]);
    let store = ingest_frames(store, "replay", &[delete]);
    assert!(store.record("app.bsky.labeler.service", DID, "self").unwrap().is_none());
    let s = stats(&store);
    assert_eq!(s.collections["app.bsky.labeler.service"]["create"], 1);
    assert_eq!(s.collections["app.bsky.labeler.service"]["update"], 1);
    assert_eq!(s.collections["app.bsky.labeler.service"]["delete"], 1);
    assert_eq!(s.records["app.bsky.labeler.service"], 0);
    let a = store.account(DID).unwrap().unwrap();
    assert_eq!((a.first_seq, a.last_seq, a.commits, a.rev.as_deref()), (1, 3, 3, Some("3mptbypluud2c")));
}
