//! Handles, both ways, against a fake DNS server on loopback.

mod common;

use std::collections::HashMap;

use instancemap::identity::handle::HandleResolver;
use instancemap::net::Fetcher;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_verify_only_when_they_resolve_back() {
    let mut txt = HashMap::new();
    txt.insert("_atproto.alice.example.com".to_owned(), vec!["did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".to_owned()]);
    txt.insert("_atproto.bob.example.com".to_owned(), vec!["did=did:plc:cccccccccccccccccccccccc".to_owned()]);
    txt.insert(
        "_atproto.twice.example.com".to_owned(),
        vec!["did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".to_owned(), "did=did:plc:bbbbbbbbbbbbbbbbbbbbbbbb".to_owned()],
    );
    txt.insert("_atproto.junk.example.com".to_owned(), vec!["hello".to_owned()]);
    let dns = common::fake_dns(txt).await;
    let h = HandleResolver::new(Fetcher::with_dns(false, Some(dns)), Some(dns));

    let ok = h.verify("alice.example.com", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", 1).await;
    assert!(ok.verified);
    assert_eq!(ok.method.as_deref(), Some("dns"));

    let other = h.verify("bob.example.com", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", 1).await;
    assert_eq!((other.verified, other.reason.as_deref()), (false, Some("other_did")));

    let twice = h.verify("twice.example.com", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", 1).await;
    assert_eq!(twice.reason.as_deref(), Some("ambiguous_dns"));

    // no usable TXT record; the HTTPS fallback finds no address either
    for name in ["junk.example.com", "nobody.example.com"] {
        let none = h.verify(name, "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", 1).await;
        assert_eq!(none.reason.as_deref(), Some("no_record"), "{name}");
    }
    let bad = h.verify("not a handle", "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", 1).await;
    assert_eq!(bad.reason.as_deref(), Some("invalid_syntax"));
}
