//! Labeler conformance: for a labeler linked to an instance, whether its
//! `app.bsky.labeler.service` record is known, its DID document names an
//! `#atproto_labeler` endpoint, `com.atproto.label.queryLabels` answers
//! there, and the labels it serves are signed with its document's
//! `#atproto_label` key (each label's DAG-CBOR encoding without `sig`,
//! SHA-256, ECDSA low-S). A verdict with its date, kept as the labeler's
//! check (`labeler:<did>` in the contacts family).

use base64::Engine;
use ciborium::Value;
use sha2::{Digest, Sha256};

use crate::net::Fetcher;
use crate::store::records::LabelerConformance;
use crate::store::StoreReader;

/// Labels asked for in the sample query.
const SAMPLE: usize = 5;

/// The DAG-CBOR bytes a label's signature covers: its fields but `sig`,
/// keys in DAG-CBOR order (shorter first, then bytewise).
pub fn label_signing_bytes(label: &serde_json::Value) -> Option<Vec<u8>> {
    let obj = label.as_object()?;
    let mut entries: Vec<(&String, Value)> = Vec::new();
    for (k, v) in obj {
        if k == "sig" {
            continue;
        }
        let v = match v {
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Integer(n.as_i64()?.into()),
            _ => return None,
        };
        entries.push((k, v));
    }
    entries.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.0.cmp(b.0)));
    let map = Value::Map(entries.into_iter().map(|(k, v)| (Value::Text(k.clone()), v)).collect());
    let mut out = Vec::new();
    ciborium::into_writer(&map, &mut out).ok()?;
    Some(out)
}

/// Whether `label`'s signature verifies with `key` (a Multikey); `None`
/// when it carries no signature in the `{"$bytes": …}` form.
pub fn label_signed_by(label: &serde_json::Value, key: &crate::identity::crypto::PublicKey) -> Option<bool> {
    let sig = label.get("sig")?.get("$bytes")?.as_str()?;
    let sig = base64::engine::general_purpose::STANDARD_NO_PAD.decode(sig.trim_end_matches('=')).ok()?;
    let bytes = label_signing_bytes(label)?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    Some(key.verify_prehash(&digest, &sig).is_ok())
}

/// Checks the labeler `did`.
pub async fn conformance(store: &impl StoreReader, fetcher: &Fetcher, did: &str) -> LabelerConformance {
    let service_record = store.stored_record(crate::event::LABELER_SERVICE, did, "self").ok().flatten().is_some();
    let mut c = LabelerConformance { service_record, ..LabelerConformance::default() };
    if !c.service_record {
        c.problems.push("no app.bsky.labeler.service record seen on the firehose".into());
    }
    let ident = store.identity(did).ok().flatten();
    c.endpoint = ident.as_ref().and_then(|i| i.labeler.clone());
    let key = ident
        .as_ref()
        .and_then(|i| i.label_key.as_deref())
        .and_then(|k| crate::identity::crypto::PublicKey::from_multikey(k).ok());
    if key.is_none() {
        c.problems.push("no #atproto_label key in its resolved DID document".into());
    }
    match &c.endpoint {
        None => c.problems.push("no #atproto_labeler endpoint in its resolved DID document".into()),
        Some(e) => {
            let url = format!("{e}/xrpc/com.atproto.label.queryLabels?uriPatterns=*&limit={SAMPLE}");
            match fetcher.get(&url).await.map(|b| serde_json::from_slice::<serde_json::Value>(&b)) {
                Ok(Ok(v)) if v.get("labels").is_some_and(serde_json::Value::is_array) => {
                    c.answers = Some(true);
                    let labels = v["labels"].as_array().cloned().unwrap_or_default();
                    c.labels_seen = labels.len();
                    if let Some(k) = &key {
                        let checked: Vec<bool> = labels
                            .iter()
                            .filter(|l| l.get("src").and_then(|s| s.as_str()) == Some(did))
                            .filter_map(|l| label_signed_by(l, k))
                            .collect();
                        if !checked.is_empty() {
                            c.key_matches = Some(checked.iter().all(|ok| *ok));
                            if c.key_matches == Some(false) {
                                c.problems
                                    .push("a label's signature does not verify with its #atproto_label key".into());
                            }
                        }
                    }
                }
                Ok(_) => {
                    c.answers = Some(false);
                    c.problems.push("queryLabels did not answer with labels JSON".into());
                }
                Err(e) => {
                    c.answers = Some(false);
                    c.problems.push(format!("queryLabels: {} ({e})", e.reason()));
                }
            }
        }
    }
    c.verdict = if c.key_matches == Some(false) || c.answers != Some(true) {
        "failing"
    } else if c.service_record && c.key_matches == Some(true) {
        "conformant"
    } else {
        "partial"
    }
    .into();
    c
}
