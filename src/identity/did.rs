//! DID documents → what instancemap needs of them: the handle claimed, the
//! atproto signing key, the PDS endpoint (normalised), and the labeler
//! endpoint if any. Pure; parsing follows the atproto DID spec's rules.

use serde::Deserialize;

use super::crypto::{KeyError, PublicKey};
use crate::types;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("not a DID document: {0}")]
    Json(String),
    #[error("document id {found:?} is not the DID resolved ({want})")]
    IdMismatch { want: String, found: String },
}

impl DocError {
    pub fn reason(&self) -> &'static str {
        match self {
            DocError::Json(_) => "bad_did_document",
            DocError::IdMismatch { .. } => "did_document_id_mismatch",
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawDoc {
    id: String,
    #[serde(default, rename = "alsoKnownAs")]
    also_known_as: Option<Vec<serde_json::Value>>,
    #[serde(default, rename = "verificationMethod")]
    verification_method: Option<Vec<RawMethod>>,
    #[serde(default)]
    service: Option<Vec<RawService>>,
}

#[derive(Debug, Deserialize)]
struct RawMethod {
    #[serde(default)]
    id: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    controller: Option<String>,
    #[serde(default, rename = "publicKeyMultibase")]
    public_key_multibase: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawService {
    #[serde(default)]
    id: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default, rename = "serviceEndpoint")]
    endpoint: serde_json::Value,
}

/// The parts of a DID document instancemap uses. Fields that are absent or
/// malformed are `None` with the reason in `problems`, so a half-broken
/// document still yields what it can.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DidDoc {
    pub did: String,
    /// First syntactically valid `at://` handle in `alsoKnownAs` (lower-cased).
    pub handle: Option<String>,
    /// The `#atproto` key, as a Multikey string.
    pub signing_key: Option<String>,
    /// The `#atproto_label` key (a labeler's label-signing key), as a
    /// Multikey string.
    pub label_key: Option<String>,
    /// The `#atproto_pds` endpoint, normalised (see [`normalize_endpoint`]).
    pub pds: Option<String>,
    /// The `#atproto_labeler` endpoint, normalised.
    pub labeler: Option<String>,
    /// What was wrong, each a short fixed phrase.
    pub problems: Vec<&'static str>,
}

fn fragment_is(id: &str, did: &str, frag: &str) -> bool {
    id == frag || id.strip_prefix(did).is_some_and(|rest| rest == frag)
}

/// A verification method's key: Multikey, or a legacy key type.
fn method_key(m: &RawMethod) -> Result<PublicKey, KeyError> {
    match (m.kind.as_str(), &m.public_key_multibase) {
        (_, None) => Err(KeyError::Multibase),
        ("Multikey", Some(k)) => PublicKey::from_multikey(k),
        (kind, Some(k)) => PublicKey::from_legacy(kind, k),
    }
}

/// Parses a DID document fetched for `did`.
pub fn parse(did: &str, json: &[u8]) -> Result<DidDoc, DocError> {
    let raw: RawDoc = serde_json::from_slice(json).map_err(|e| DocError::Json(e.to_string()))?;
    if raw.id != did {
        return Err(DocError::IdMismatch { want: did.to_owned(), found: raw.id });
    }
    let mut doc = DidDoc { did: did.to_owned(), ..DidDoc::default() };
    for aka in raw.also_known_as.unwrap_or_default() {
        if let Some(h) = aka.as_str().and_then(|s| s.strip_prefix("at://")) {
            if types::is_handle(h) {
                doc.handle = Some(h.to_ascii_lowercase());
                break;
            }
        }
    }
    if doc.handle.is_none() {
        doc.problems.push("no valid at:// handle in alsoKnownAs");
    }
    let methods = raw.verification_method.unwrap_or_default();
    match methods.iter().find(|m| fragment_is(&m.id, did, "#atproto")) {
        Some(m) => {
            let key = method_key(m);
            if m.controller.as_deref().is_some_and(|c| c != did) {
                doc.problems.push("#atproto key controller is another DID");
            }
            match key {
                Ok(k) => doc.signing_key = Some(k.to_multikey()),
                Err(_) => doc.problems.push("#atproto key does not parse"),
            }
        }
        None => doc.problems.push("no #atproto verification method"),
    }
    if let Some(m) = methods.iter().find(|m| fragment_is(&m.id, did, "#atproto_label")) {
        match method_key(m) {
            Ok(k) => doc.label_key = Some(k.to_multikey()),
            Err(_) => doc.problems.push("#atproto_label key does not parse"),
        }
    }
    let services = raw.service.unwrap_or_default();
    let endpoint = |frag: &str, kind: &str| -> Option<Result<String, &'static str>> {
        let s = services.iter().find(|s| fragment_is(&s.id, did, frag) && s.kind == kind)?;
        Some(s.endpoint.as_str().ok_or("endpoint is not a string").and_then(normalize_endpoint))
    };
    match endpoint("#atproto_pds", "AtprotoPersonalDataServer") {
        Some(Ok(e)) => doc.pds = Some(e),
        Some(Err(why)) => doc.problems.push(why),
        None => doc.problems.push("no #atproto_pds service"),
    }
    if let Some(Ok(e)) = endpoint("#atproto_labeler", "AtprotoLabeler") {
        doc.labeler = Some(e);
    }
    Ok(doc)
}

pub use crate::types::normalize_endpoint;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_labelers_label_key_and_endpoint_are_read() {
        let did = "did:plc:llllllllllllllllllllllll";
        let key = "zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ";
        let doc = serde_json::json!({
            "id": did,
            "verificationMethod": [
                {"id": format!("{did}#atproto"), "type": "Multikey", "publicKeyMultibase": key},
                {"id": "#atproto_label", "type": "Multikey", "publicKeyMultibase": key},
            ],
            "service": [{"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": "https://mod.example.com"}],
        });
        let d = parse(did, &serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(d.label_key.as_deref(), Some(key));
        assert_eq!(d.labeler.as_deref(), Some("https://mod.example.com"));
        let mut bad = doc.clone();
        bad["verificationMethod"][1]["publicKeyMultibase"] = serde_json::json!("zNope");
        let d = parse(did, &serde_json::to_vec(&bad).unwrap()).unwrap();
        assert!(d.label_key.is_none() && d.problems.contains(&"#atproto_label key does not parse"));
    }

    #[test]
    fn endpoints_normalise_to_one_host() {
        for u in [
            "https://pds.example.com",
            "https://PDS.example.com/",
            "https://pds.example.com:443",
            "https://pds.example.com./",
        ] {
            assert_eq!(normalize_endpoint(u).unwrap(), "https://pds.example.com", "{u}");
        }
        assert_eq!(normalize_endpoint("http://localhost:2583").unwrap(), "http://localhost:2583");
        assert!(normalize_endpoint("https://h.example/xrpc").is_err());
        assert!(normalize_endpoint("ftp://h.example").is_err());
        assert!(normalize_endpoint("https://u@h.example").is_err());
    }

    #[test]
    fn ipv6_literal_endpoint_is_one_host() {
        for u in ["https://[2001:db8::1]", "https://[2001:DB8:0:0:0:0:0:1]/", "https://[2001:db8::1]:443"] {
            assert_eq!(normalize_endpoint(u), Ok("https://[2001:db8::1]".to_owned()), "{u}");
        }
        assert_eq!(normalize_endpoint("https://[2001:db8::1]:8443"), Ok("https://[2001:db8::1]:8443".to_owned()));
        assert!(normalize_endpoint("https://[2001:db8::g]").is_err());
        assert!(normalize_endpoint("https://2001:db8::1").is_err(), "an IPv6 literal needs its brackets");
        // the account whose document names it has a PDS
        let doc = serde_json::json!({
            "id": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                         "serviceEndpoint": "https://[2001:db8::1]:2583"}],
        });
        let d = parse("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", &serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(d.pds.as_deref(), Some("https://[2001:db8::1]:2583"), "{:?}", d.problems);
    }

    #[test]
    fn idna_forms_of_one_host_are_one_key() {
        for u in [
            "https://pds.bücher.de",
            "https://pds.xn--bcher-kva.de",
            "https://pds.BÜCHER.de",
            "https://PDS.Bücher.DE./",
        ] {
            assert_eq!(normalize_endpoint(u), Ok("https://pds.xn--bcher-kva.de".to_owned()), "{u}");
        }
        // full-width dots and letters map to their ASCII forms (UTS-46)
        assert_eq!(
            normalize_endpoint("https://pds\u{ff0e}example\u{3002}com"),
            Ok("https://pds.example.com".to_owned())
        );
    }

    #[test]
    fn ipv4_endpoints_are_dotted() {
        assert_eq!(normalize_endpoint("http://203.0.113.5:80/"), Ok("http://203.0.113.5".to_owned()));
        assert_eq!(normalize_endpoint("https://203.0.113.5."), Ok("https://203.0.113.5".to_owned()));
        assert_eq!(normalize_endpoint("http://0x7f.1:2583"), Ok("http://127.0.0.1:2583".to_owned()));
        assert!(normalize_endpoint("https://203.0.113.256").is_err());
    }

    #[test]
    fn nul_or_space_in_endpoint_is_refused_with_its_reason() {
        for u in [
            "https://pds.exa\0mple.com",
            "https://pds.exa mple.com",
            "https://pds.example.com\0",
            "https://pds\t.example.com",
        ] {
            assert_eq!(normalize_endpoint(u), Err("endpoint has a space or control character"), "{u:?}");
        }
        // surrounding whitespace is not part of the endpoint
        assert_eq!(normalize_endpoint(" https://pds.example.com\n"), Ok("https://pds.example.com".to_owned()));
    }

    #[test]
    fn what_is_not_one_host_is_refused_with_its_reason() {
        let cases = [
            ("ftp://h.example", "endpoint is not http(s)"),
            ("h.example", "endpoint is not http(s)"),
            ("https:h.example", "endpoint is not http(s)"),
            ("https://h.example/xrpc", "endpoint has a path"),
            ("https://h.example//", "endpoint has a path"),
            ("https://h.example\\xrpc", "endpoint has a path"),
            ("https://h.example/?x=1", "endpoint has a query or fragment"),
            ("https://h.example#top", "endpoint has a query or fragment"),
            ("https://u@h.example", "endpoint has user info"),
            ("https://u:p@h.example", "endpoint has user info"),
            ("https://h.example:99999", "endpoint port is not a port number"),
            ("https://h.example:x", "endpoint port is not a port number"),
            ("https://h.example:0", "endpoint port is not a port number"),
            ("https://", "endpoint host is empty"),
            ("https://:443", "endpoint host is empty"),
            ("https://h..example", "endpoint host is not a host name"),
            ("https://h.example..", "endpoint host is not a host name"),
            ("https://-h.example", "endpoint host is not a host name"),
            ("https://h$.example", "endpoint host is not a host name"),
            ("https://h<.example", "endpoint host is not a host name"),
            ("https://xn--a.example", "endpoint host is not a valid international domain name"),
            ("https://[::1", "endpoint host is not a valid IP address"),
        ];
        for (u, why) in cases {
            assert_eq!(normalize_endpoint(u), Err(why), "{u:?}");
        }
        let long = format!("https://{}.example", vec!["a".repeat(63); 4].join("."));
        assert_eq!(normalize_endpoint(&long), Err("endpoint host is not a host name"));
        let label = format!("https://{}.example", "a".repeat(64));
        assert_eq!(normalize_endpoint(&label), Err("endpoint host is not a host name"));
    }
}
