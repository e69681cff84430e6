//! Handles, both ways: a handle counts as verified only when the DID
//! document claims it and the handle resolves back to the same DID, by DNS
//! TXT `_atproto.<handle>` (`did=…`) or HTTPS
//! `https://<handle>/.well-known/atproto-did`. Anything else is stored as
//! not verified (`handle.invalid` semantics) with the reason and time.

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;

use crate::net::Fetcher;
use crate::types;

pub use crate::store::records::HandleCheck;

/// Resolves handles to DIDs.
pub struct HandleResolver {
    dns: TokioResolver,
    fetcher: Fetcher,
}

impl HandleResolver {
    /// `nameserver`: a DNS server to ask instead of the system's (local test
    /// networks); HTTPS goes through `fetcher` (so the address guard holds).
    pub fn new(fetcher: Fetcher, nameserver: Option<SocketAddr>) -> HandleResolver {
        let dns = crate::net::resolver(nameserver);
        HandleResolver { dns, fetcher }
    }

    /// The DIDs `_atproto.<handle>` names.
    async fn dns(&self, handle: &str) -> Vec<String> {
        let Ok(lookup) = self.dns.txt_lookup(format!("_atproto.{handle}.")).await else {
            return Vec::new();
        };
        let mut dids: Vec<String> = lookup
            .iter()
            .map(|txt| txt.txt_data().iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<String>())
            .filter_map(|t| t.trim().strip_prefix("did=").map(str::to_owned))
            .filter(|d| types::is_did(d))
            .collect();
        dids.sort();
        dids.dedup();
        dids
    }

    /// The DID `https://<handle>/.well-known/atproto-did` names.
    async fn https(&self, handle: &str) -> Option<String> {
        let body = self.fetcher.get(&format!("https://{handle}/.well-known/atproto-did")).await.ok()?;
        let text = String::from_utf8(body).ok()?;
        let did = text.lines().next()?.trim().to_owned();
        types::is_did(&did).then_some(did)
    }

    /// Resolves a handle to its DID: DNS first, then HTTPS.
    pub async fn resolve(&self, handle: &str) -> Result<(String, &'static str), &'static str> {
        let dns = self.dns(handle).await;
        match dns.len() {
            1 => return Ok((dns[0].clone(), "dns")),
            0 => {}
            _ => return Err("ambiguous_dns"),
        }
        match self.https(handle).await {
            Some(d) => Ok((d, "https")),
            None => Err("no_record"),
        }
    }

    /// Verifies that `handle` (claimed by `did`'s document) resolves to `did`.
    pub async fn verify(&self, handle: &str, did: &str, now_ms: i64) -> HandleCheck {
        let mut check = HandleCheck { handle: handle.to_owned(), checked_at_ms: now_ms, ..HandleCheck::default() };
        if !types::is_handle(handle) {
            check.reason = Some("invalid_syntax".into());
            return check;
        }
        match self.resolve(handle).await {
            Ok((d, method)) if d == did => {
                check.verified = true;
                check.method = Some(method.into());
            }
            Ok(_) => check.reason = Some("other_did".into()),
            Err(reason) => check.reason = Some(reason.into()),
        }
        check
    }
}
