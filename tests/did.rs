//! DID documents: real ones from plc.directory (the jetstream capture) and
//! indigo's test documents.

mod common;

use instancemap::identity::did::{self, DocError};

#[test]
fn real_plc_documents() {
    let docs = common::json("jetstream/did_docs.json");
    let mut hosts = std::collections::BTreeSet::new();
    for (d, doc) in docs.as_object().unwrap() {
        let parsed = did::parse(d, &serde_json::to_vec(doc).unwrap()).unwrap();
        assert!(parsed.signing_key.as_deref().unwrap().starts_with("zQ3s"), "{d}");
        let pds = parsed.pds.clone().unwrap();
        assert!(pds.starts_with("https://") && !pds.ends_with('/'), "{pds}");
        hosts.insert(pds);
        assert!(parsed.handle.is_some() || !parsed.problems.is_empty(), "{d}");
    }
    assert!(hosts.iter().any(|h| h.ends_with(".host.bsky.network")));
    assert!(hosts.contains("https://blacksky.app"));
}

#[test]
fn legacy_and_current_key_forms_agree() {
    let cur = std::fs::read(common::fixture("did-docs/did_plc_doc.json")).unwrap();
    let leg = std::fs::read(common::fixture("did-docs/did_plc_doc_legacy.json")).unwrap();
    let a = did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz", &cur).unwrap();
    let b = did::parse("did:plc:ewvi7nxzyoun6zhxrhs64oiz", &leg).unwrap();
    assert_eq!(a.signing_key, b.signing_key);
    assert_eq!(a.signing_key.as_deref(), Some("zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"));
    assert_eq!(a.handle.as_deref(), Some("atproto.com"));
    assert_eq!(b.pds.as_deref(), Some("https://bsky.social"));
}

#[test]
fn did_web_feed_generator_has_no_pds() {
    let web = std::fs::read(common::fixture("did-docs/did_web_doc.json")).unwrap();
    let d = did::parse("did:web:discover.bsky.social", &web).unwrap();
    assert_eq!((d.pds, d.signing_key, d.handle), (None, None, None));
    assert!(d.problems.contains(&"no #atproto_pds service"));
}

#[test]
fn a_document_for_another_did_is_refused() {
    let cur = std::fs::read(common::fixture("did-docs/did_plc_doc.json")).unwrap();
    assert!(matches!(did::parse("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", &cur), Err(DocError::IdMismatch { .. })));
    assert!(matches!(did::parse("did:plc:x", b"{not json"), Err(DocError::Json(_))));
}
