//! The PLC directory's export: JSON lines → per-DID identity state.
//!
//! Both export forms are read: the legacy one (`after=<createdAt>`, lines
//! carry `nullified`) and the sequence one (`after=<seq>`, `type:
//! sequenced_op`, no `nullified`). Every `plc_operation` (and legacy
//! `create`) carries the DID's whole state, so the current state is that of
//! the latest operation the directory accepted and did not nullify:
//! - legacy form: lines flagged `nullified` are skipped;
//! - sequence form: a recovery operation that forks an earlier one (its
//!   `prev` is not the current head) comes later in the sequence than the
//!   operations it nullifies, so applying operations in sequence order ends
//!   on the recovery's state, as the PLC spec resolves it. Forks are counted.
//!
//! A `plc_tombstone` marks the DID tombstoned (kept, not deleted).
//! `parse_line` is pure; `load` applies lines to the store.

pub mod load;
pub mod source;

use std::borrow::Cow;

use serde::Deserialize;

use crate::identity::crypto::PublicKey;
use crate::identity::did::normalize_endpoint;
use crate::types;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlcError {
    #[error("export line is not JSON of the expected shape: {0}")]
    Json(String),
    #[error("export line: {0}")]
    Invalid(&'static str),
    /// A position (`seq`, `createdAt`) that cannot be the directory's: one
    /// such line taken would make every later line look already applied.
    #[error("export line position: {0}")]
    Position(&'static str),
}

/// No PLC directory numbers this far (today's seqs are about 10^9).
pub const MAX_SEQ: u64 = 1 << 50;
/// A seq more than this above the position is refused (a corrupted or
/// hostile line), like a jump of the firehose's cursor.
pub const MAX_SEQ_JUMP: u64 = 100_000_000;
/// A `createdAt` more than this ahead of the clock is refused.
pub const MAX_CLOCK_AHEAD_US: i64 = 86_400_000_000;

impl PlcError {
    pub fn reason(&self) -> &'static str {
        match self {
            PlcError::Json(_) => "bad_json",
            PlcError::Invalid(_) => "invalid_op",
            PlcError::Position(_) => "bad_position",
        }
    }
    pub const REASONS: &'static [&'static str] = &["bad_json", "invalid_op", "bad_position"];
}

#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(borrow)]
    did: Cow<'a, str>,
    #[serde(borrow)]
    cid: Cow<'a, str>,
    #[serde(borrow, rename = "createdAt")]
    created_at: Cow<'a, str>,
    #[serde(default)]
    nullified: bool,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow)]
    operation: RawOp<'a>,
}

#[derive(Deserialize)]
struct RawOp<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    prev: Option<Cow<'a, str>>,
    // plc_operation
    #[serde(borrow, default, rename = "alsoKnownAs")]
    also_known_as: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default, rename = "verificationMethods")]
    verification_methods: Option<RawMethods<'a>>,
    #[serde(borrow, default)]
    services: Option<RawServices<'a>>,
    // legacy create
    #[serde(borrow, default, rename = "signingKey")]
    signing_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    handle: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    service: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawMethods<'a> {
    #[serde(borrow, default)]
    atproto: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawServices<'a> {
    #[serde(borrow, default)]
    atproto_pds: Option<RawService<'a>>,
}

#[derive(Deserialize)]
struct RawService<'a> {
    #[serde(borrow, default)]
    endpoint: Option<Cow<'a, str>>,
}

/// What one operation says about its DID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpState {
    /// A `plc_operation` or legacy `create`: the DID's whole state.
    Update {
        pds: Option<String>,
        handle: Option<String>,
        signing_key: Option<String>,
    },
    Tombstone,
}

/// One export line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOp {
    pub did: String,
    pub cid: String,
    pub created_at: String,
    /// Present in the sequence form.
    pub seq: Option<u64>,
    /// Legacy form only.
    pub nullified: bool,
    pub prev: Option<String>,
    pub state: OpState,
}

/// Parses one export line. Syntax is checked (DID, endpoint, key); the
/// operation's signature is not (the directory verified it).
pub fn parse_line(line: &[u8]) -> Result<ExportOp, PlcError> {
    // one UTF-8 check of the whole line: the string parser then skips its
    // own check of every string
    let line = std::str::from_utf8(line).map_err(|e| PlcError::Json(e.to_string()))?;
    let raw: RawLine<'_> = serde_json::from_str(line).map_err(|e| PlcError::Json(e.to_string()))?;
    if !raw.did.starts_with("did:plc:") || !types::is_did(&raw.did) {
        return Err(PlcError::Invalid("did is not a did:plc"));
    }
    if raw.seq.is_some_and(|s| s > MAX_SEQ) {
        return Err(PlcError::Position("seq beyond any directory's numbering"));
    }
    match crate::clock::parse_time_us(&raw.created_at) {
        None => return Err(PlcError::Position("createdAt is not an RFC 3339 time")),
        Some(t) if t > crate::clock::now_ms().saturating_mul(1000).saturating_add(MAX_CLOCK_AHEAD_US) => {
            return Err(PlcError::Position("createdAt is in the future"))
        }
        Some(_) => {}
    }
    let op = raw.operation;
    let state = match op.kind.as_ref() {
        "plc_tombstone" => OpState::Tombstone,
        "plc_operation" => {
            let handle = op
                .also_known_as
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.strip_prefix("at://"))
                .find(|h| types::is_handle(h))
                .map(str::to_ascii_lowercase);
            let signing_key = op.verification_methods.and_then(|m| m.atproto).and_then(|k| multikey(&k));
            let pds = op.services.and_then(|s| s.atproto_pds).and_then(|s| s.endpoint).and_then(|e| endpoint(&e));
            OpState::Update { pds, handle, signing_key }
        }
        "create" => OpState::Update {
            pds: op.service.and_then(|e| endpoint(&e)),
            handle: op.handle.filter(|h| types::is_handle(h)).map(|h| h.to_ascii_lowercase()),
            signing_key: op.signing_key.and_then(|k| multikey(&k)),
        },
        _ => return Err(PlcError::Invalid("unknown operation type")),
    };
    Ok(ExportOp {
        did: raw.did.into_owned(),
        cid: raw.cid.into_owned(),
        created_at: raw.created_at.into_owned(),
        seq: raw.seq,
        nullified: raw.nullified,
        prev: op.prev.map(Cow::into_owned),
        state,
    })
}

/// Endpoints normalised by this thread, by their text in the export (a few
/// hundred hosts carry most operations; the URL parse is a fifth of a
/// line's cost). Cleared when full.
const MAX_ENDPOINTS: usize = 16_384;
/// Longer endpoint texts are normalised every time, never kept: a hostile
/// export's megabyte endpoints must not fill the memory 16,384 times over
/// (a host name is at most 253 characters).
const MAX_KEPT_ENDPOINT: usize = 300;

thread_local! {
    static ENDPOINTS: std::cell::RefCell<std::collections::HashMap<Box<str>, Option<Box<str>>>> =
        Default::default();
}

/// [`normalize_endpoint`], remembered per thread: `None` for an endpoint
/// that is not one.
fn endpoint(raw: &str) -> Option<String> {
    ENDPOINTS.with_borrow_mut(|known| {
        if let Some(e) = known.get(raw) {
            return e.as_deref().map(str::to_owned);
        }
        let e = normalize_endpoint(raw).ok();
        if raw.len() > MAX_KEPT_ENDPOINT {
            return e;
        }
        if known.len() >= MAX_ENDPOINTS {
            known.clear();
        }
        known.insert(raw.into(), e.as_deref().map(Into::into));
        e
    })
}

/// A `did:key:` as its Multikey, if it is a valid k256/p256 key. Checked by
/// prefix only (decoding the point costs microseconds per line); the point
/// is validated when the key is used.
fn multikey(did_key: &str) -> Option<String> {
    let mk = did_key.strip_prefix("did:key:")?;
    (mk.starts_with("zQ3s") || mk.starts_with("zDna")).then(|| mk.to_owned())
}

/// Verifies a stored Multikey fully (used when a key is put to use).
pub fn key_is_valid(multikey: &str) -> bool {
    PublicKey::from_multikey(multikey).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> (usize, usize) {
        ENDPOINTS.with_borrow(|k| (k.len(), k.keys().map(|e| e.len()).sum()))
    }

    #[test]
    fn the_endpoints_kept_are_bounded_in_number_and_length() {
        let long = format!("https://{}.example.com", "a".repeat(1 << 20));
        for _ in 0..3 {
            assert_eq!(endpoint(&long), None);
        }
        assert_eq!(kept(), (0, 0), "a megabyte endpoint is not kept");
        for i in 0..MAX_ENDPOINTS + 10 {
            assert_eq!(endpoint(&format!("https://h{i}.example.com")), Some(format!("https://h{i}.example.com")));
        }
        let (n, bytes) = kept();
        assert!(n <= MAX_ENDPOINTS, "{n} kept");
        assert!(bytes <= MAX_ENDPOINTS * MAX_KEPT_ENDPOINT, "{bytes} bytes kept");
    }
}
