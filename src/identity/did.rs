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
    match raw.verification_method.unwrap_or_default().iter().find(|m| fragment_is(&m.id, did, "#atproto")) {
        Some(m) => {
            let key: Result<PublicKey, KeyError> = match (m.kind.as_str(), &m.public_key_multibase) {
                (_, None) => Err(KeyError::Multibase),
                ("Multikey", Some(k)) => PublicKey::from_multikey(k),
                (kind, Some(k)) => PublicKey::from_legacy(kind, k),
            };
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

/// Normalises a service endpoint to `scheme://host[:port]`: scheme and host
/// lower-cased, default ports (443, 80) and a trailing slash or dot dropped,
/// so `https://Host.example/` and `https://host.example` are one host.
/// Anything with a path, query, user info or a non-http(s) scheme is refused.
pub fn normalize_endpoint(url: &str) -> Result<String, &'static str> {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    let (scheme, rest) = if let Some(r) = lower.strip_prefix("https://") {
        ("https", r)
    } else if let Some(r) = lower.strip_prefix("http://") {
        ("http", r)
    } else {
        return Err("endpoint is not http(s)");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
        return Err("endpoint has a path, query or user info");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h, Some(p)),
            Err(_) => return Err("endpoint port is not a number"),
        },
        _ => (rest, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return Err("endpoint host is empty or too long");
    }
    let default = if scheme == "https" { 443 } else { 80 };
    Ok(match port {
        Some(p) if p != default => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
