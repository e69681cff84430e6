//! The project's own records: lexicon files, validation, and ingest
//! (valid ones kept, malformed ones counted and not stored).

mod common;

use ciborium::Value;
use common::*;
use instancemap::cluster::declaration::{self, DECLARATION, MEMBERSHIP};
use instancemap::repo::cbor;
use instancemap::store::Store;

const OP: &str = "did:plc:oooooooooooooooooooooooo";

fn decl(name: &str) -> Value {
    map(vec![
        ("$type", text(DECLARATION)),
        ("name", text(name)),
        ("pdsHosts", Value::Array(vec![text("https://pds.example.com")])),
        ("accountDomains", Value::Array(vec![text(".example.social")])),
        ("moderationContact", text("mod@example.com")),
        ("policies", map(vec![("termsOfService", text("https://example.com/tos"))])),
        ("labelers", Value::Array(vec![text("did:plc:llllllllllllllllllllllll")])),
        ("createdAt", text("2026-11-26T00:00:00.000Z")),
    ])
}

#[test]
fn lexicon_files_name_the_collections() {
    for (file, nsid) in [("declaration.json", DECLARATION), ("membership.json", MEMBERSHIP)] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lexicons/dev/instancemap").join(file);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(v["id"], nsid);
        assert_eq!(v["defs"]["main"]["type"], "record");
        assert_eq!(v["defs"]["main"]["key"], "literal:self");
    }
}

#[test]
fn validation_reasons() {
    let ok = cbor::to_json(&cbor_bytes(&decl("Example Social"))).unwrap();
    assert_eq!(declaration::validate(DECLARATION, "self", &ok), Ok(()));
    assert_eq!(declaration::validate(DECLARATION, "other", &ok), Err("rkey_not_self"));
    let mut bad = ok.clone();
    bad["pdsHosts"] = serde_json::json!(["ftp://x"]);
    assert_eq!(declaration::validate(DECLARATION, "self", &bad), Err("pds_hosts"));
    let mut bad = ok.clone();
    bad.as_object_mut().unwrap().remove("name");
    assert_eq!(declaration::validate(DECLARATION, "self", &bad), Err("shape"));
    let m = serde_json::json!({"operator": "not a did", "createdAt": "2026-11-26T00:00:00Z"});
    assert_eq!(declaration::validate(MEMBERSHIP, "self", &m), Err("operator"));
}

/// The second version: the operator's face, contacts by role, delegation,
/// abuse-notice authorities and routes per reason; each malformed part is
/// its own reason, and a first-version record still reads.
#[test]
fn second_version_validation_reasons() {
    let mut v2 = cbor::to_json(&cbor_bytes(&decl("Example Social"))).unwrap();
    v2["serviceName"] = serde_json::json!("Example");
    v2["homeUrl"] = serde_json::json!("https://example.com");
    v2["supportUrl"] = serde_json::json!("https://example.com/help");
    v2["logoUrl"] = serde_json::json!("https://example.com/logo.png");
    v2["contacts"] = serde_json::json!([
        {"role": "abuse", "email": "abuse@example.com"},
        {"role": "admin", "url": "https://example.com/contact", "confidential": true},
        {"role": "security", "account": "security.example.com"},
    ]);
    v2["moderationService"] = serde_json::json!("did:plc:mmmmmmmmmmmmmmmmmmmmmmmm#atproto_labeler");
    v2["moderatesFor"] = serde_json::json!(["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"]);
    v2["abuseNoticeAuthorities"] =
        serde_json::json!(["did:plc:bbbbbbbbbbbbbbbbbbbbbbbb", "did:web:mod.example#atproto_labeler"]);
    v2["routes"] = serde_json::json!([
        {"reasonTypes": ["tools.ozone.report.defs#reasonRuleSiteSecurity"], "contact": "security"},
        {"reasonTypes": ["com.atproto.moderation.defs#reasonSpam"], "subjectTypes": ["record"],
         "subjectCollections": ["app.bsky.feed.post"], "service": "did:plc:mmmmmmmmmmmmmmmmmmmmmmmm#atproto_labeler"},
    ]);
    assert_eq!(declaration::validate(DECLARATION, "self", &v2), Ok(()));
    let parsed: declaration::Declaration = serde_json::from_value(v2.clone()).unwrap();
    assert_eq!((parsed.contacts.len(), parsed.routes.len()), (3, 2));
    assert!(parsed.contacts[1].confidential);
    for (field, value, reason) in [
        ("serviceName", serde_json::json!(""), "service_name"),
        ("logoUrl", serde_json::json!("javascript:alert(1)"), "links"),
        ("contacts", serde_json::json!([{"role": "overlord", "email": "x@example.com"}]), "contacts"),
        ("contacts", serde_json::json!([{"role": "abuse"}]), "contacts"),
        ("contacts", serde_json::json!([{"role": "abuse", "email": "not an email"}]), "contacts"),
        ("moderationService", serde_json::json!("did:plc:mmmmmmmmmmmmmmmmmmmmmmmm"), "moderation_service"),
        ("moderatesFor", serde_json::json!(["example.com"]), "moderates_for"),
        ("abuseNoticeAuthorities", serde_json::json!(["mod.example"]), "authorities"),
        ("routes", serde_json::json!([{"reasonTypes": ["spam"], "contact": "abuse"}]), "routes"),
        ("routes", serde_json::json!([{"contact": "legal"}]), "routes"),
        ("routes", serde_json::json!([{"contact": "abuse", "service": "did:plc:x#y"}]), "routes"),
    ] {
        let mut bad = v2.clone();
        bad[field] = value.clone();
        assert_eq!(declaration::validate(DECLARATION, "self", &bad), Err(reason), "{field}: {value}");
    }
}

fn cbor_bytes(v: &Value) -> Vec<u8> {
    cbor(v)
}

#[test]
fn valid_records_are_kept_and_malformed_ones_counted() {
    let dir = tempfile::tempdir().unwrap();
    let frames = vec![
        commit_frame(
            1,
            OP,
            "3mptbypluud2a",
            &[TestOp {
                action: "create",
                path: "dev.instancemap.declaration/self",
                record: Some(decl("Example Social")),
                omit_block: false,
            }],
        ),
        commit_frame(
            2,
            OP,
            "3mptbypluud2b",
            &[TestOp {
                action: "create",
                path: "dev.instancemap.membership/self",
                record: Some(map(vec![("operator", text("nope")), ("createdAt", text("2026-11-26T00:00:00Z"))])),
                omit_block: false,
            }],
        ),
    ];
    let store = ingest_frames(Store::open(dir.path()).unwrap(), "replay", &frames);
    let kept = store.record(DECLARATION, OP, "self").unwrap().expect("valid declaration kept");
    assert_eq!(cbor::to_json(&kept.record).unwrap()["name"], "Example Social");
    assert!(store.record(MEMBERSHIP, OP, "self").unwrap().is_none());
    let s = stats(&store);
    assert_eq!(s.invalid_records.get("dev.instancemap.membership/operator"), Some(&1));
    assert_eq!(s.records[DECLARATION], 1);
}

#[test]
fn the_free_form_probes_of_the_reference_corpus_are_refused() {
    // The corpus's dev.instancemap.declaration records predate the lexicon
    // (no `name`): every one is counted, none stored.
    let dir = tempfile::tempdir().unwrap();
    let store = ingest_frames(Store::open(dir.path()).unwrap(), "replay", &reference_frames());
    let s = stats(&store);
    let writes: i64 = ["create", "update"].iter().filter_map(|a| s.collections[DECLARATION].get(*a)).sum();
    let refused: i64 = s.invalid_records.iter().filter(|(k, _)| k.starts_with(DECLARATION)).map(|(_, v)| v).sum();
    assert!(writes > 0);
    assert_eq!(refused, writes, "{:?}", s.invalid_records);
    assert_eq!(s.records[DECLARATION], 0);
}
