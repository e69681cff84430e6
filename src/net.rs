//! Outbound HTTP to hosts named by network data (PDS endpoints, did:web
//! hosts, handle domains), guarded: only http(s); no private, loopback,
//! link-local, multicast or otherwise special addresses, checked on the
//! addresses DNS returns (the connection uses exactly those, so DNS
//! rebinding cannot slip a private address in) and on IP-literal URLs and
//! redirects; bounded response size and time. `allow_loopback` admits
//! 127.0.0.0/8 and ::1 (and `localhost`) for local test networks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Largest response body read (DID documents are a few KB; describeServer
/// and listRepos pages are well under this).
pub const MAX_BODY: usize = 1024 * 1024;
/// Whole-request time limit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("URL refused: {0}")]
    Refused(&'static str),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response over {MAX_BODY} bytes")]
    TooLarge,
    #[error("request failed: {0}")]
    Transport(String),
}

/// Every label [`FetchError::reason`] can return.
pub const FETCH_REASONS: &[&str] =
    &["refused_address", "not_found", "rate_limited", "server_error", "http_error", "too_large", "unreachable"];

impl FetchError {
    /// The bounded label of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Refused(_) => "refused_address",
            FetchError::Status(404) | FetchError::Status(410) => "not_found",
            FetchError::Status(429) => "rate_limited",
            FetchError::Status(s) if *s >= 500 => "server_error",
            FetchError::Status(_) => "http_error",
            FetchError::TooLarge => "too_large",
            FetchError::Transport(_) => "unreachable",
        }
    }
}

/// The DNS guard's error when a name resolves only to refused addresses.
const NO_ADDRESS: &str = "no address that may be contacted";

/// Whether an address may be contacted.
pub fn ip_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_allowed(v4, allow_loopback),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_allowed(v4, allow_loopback);
            }
            if v6.is_loopback() {
                return allow_loopback;
            }
            let seg = v6.segments();
            let seg0 = seg[0];
            // forms that carry an IPv4 address to be reached through it:
            // IPv4-compatible (::a.b.c.d, deprecated), 6to4 (2002:a.b.c.d::/16)
            // and Teredo (2001:0::/32, the client address inverted)
            let embedded = if seg[..6] == [0; 6] {
                Some(Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8))
            } else if seg0 == 0x2002 {
                Some(Ipv4Addr::new((seg[1] >> 8) as u8, seg[1] as u8, (seg[2] >> 8) as u8, seg[2] as u8))
            } else if seg0 == 0x2001 && seg[1] == 0 {
                let (a, b) = (!seg[6], !seg[7]);
                Some(Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8))
            } else {
                None
            };
            if let Some(v4) = embedded {
                // an embedded loopback is never allowed: it is not how a test reaches loopback
                return !v4.is_loopback() && v4_allowed(v4, false);
            }
            !(v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || (seg0 == 0x0064 && v6.segments()[1] == 0xff9b)) // NAT64 into anything
        }
    }
}

fn v4_allowed(v4: Ipv4Addr, allow_loopback: bool) -> bool {
    if v4.is_loopback() {
        return allow_loopback;
    }
    let o = v4.octets();
    !(v4.is_private()
        || v4.is_link_local()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_unspecified()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || o[0] >= 240) // reserved
}

/// A DNS resolver for reqwest that drops refused addresses (and fails when
/// none is left). With a nameserver set, names are asked of it (hickory)
/// instead of the system; `localhost` is always 127.0.0.1 / ::1.
struct GuardedDns {
    allow_loopback: bool,
    dns: Option<hickory_resolver::TokioResolver>,
}

/// The addresses of `host` the guard allows (see [`GuardedDns`]).
async fn guarded_lookup(
    host: String,
    allow: bool,
    dns: Option<hickory_resolver::TokioResolver>,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let addrs: Vec<SocketAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![SocketAddr::from(([127, 0, 0, 1], 0)), SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))]
    } else if let Some(dns) = dns {
        dns.lookup_ip(format!("{host}.")).await?.iter().map(|ip| SocketAddr::new(ip, 0)).collect()
    } else {
        tokio::net::lookup_host((host.as_str(), 0)).await?.collect()
    };
    let ok: Vec<SocketAddr> = addrs.into_iter().filter(|a| ip_allowed(a.ip(), allow)).collect();
    if ok.is_empty() {
        return Err(format!("{host}: {NO_ADDRESS}").into());
    }
    Ok(ok)
}

impl reqwest::dns::Resolve for GuardedDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (host, allow, dns) = (name.as_str().to_owned(), self.allow_loopback, self.dns.clone());
        Box::pin(async move {
            let ok = guarded_lookup(host, allow, dns).await?;
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks a URL's scheme and, for IP literals, its address.
pub fn url_allowed(url: &reqwest::Url, allow_loopback: bool) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Refused("scheme is not http(s)"));
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) if !ip_allowed(IpAddr::V4(ip), allow_loopback) => {
            Err(FetchError::Refused("address is private, loopback or special"))
        }
        Some(url::Host::Ipv6(ip)) if !ip_allowed(IpAddr::V6(ip), allow_loopback) => {
            Err(FetchError::Refused("address is private, loopback or special"))
        }
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") && !allow_loopback => {
            Err(FetchError::Refused("localhost"))
        }
        None => Err(FetchError::Refused("no host")),
        _ => Ok(()),
    }
}

/// An HTTP client for network-named hosts.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    allow_loopback: bool,
    dns: Option<hickory_resolver::TokioResolver>,
}

/// A hickory resolver asking only `ns` (local test networks).
pub fn dns_resolver(ns: SocketAddr) -> hickory_resolver::TokioResolver {
    use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
    let group = NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true);
    hickory_resolver::TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], group),
        hickory_resolver::name_server::TokioConnectionProvider::default(),
    )
    .build()
}

/// A resolver asking `ns` when set (local test networks), else the
/// system's configuration (defaults when there is none).
pub fn resolver(ns: Option<SocketAddr>) -> hickory_resolver::TokioResolver {
    use hickory_resolver::config::ResolverConfig;
    use hickory_resolver::name_server::TokioConnectionProvider;
    match ns {
        Some(ns) => dns_resolver(ns),
        None => hickory_resolver::TokioResolver::builder_tokio()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no system DNS configuration; using defaults");
                hickory_resolver::TokioResolver::builder_with_config(
                    ResolverConfig::default(),
                    TokioConnectionProvider::default(),
                )
            })
            .build(),
    }
}

impl Fetcher {
    pub fn new(allow_loopback: bool) -> Fetcher {
        Fetcher::with_dns(allow_loopback, None)
    }

    /// As [`Fetcher::new`], resolving names with the DNS server `dns` when set.
    pub fn with_dns(allow_loopback: bool, dns: Option<SocketAddr>) -> Fetcher {
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 3 {
                attempt.error("too many redirects")
            } else if url_allowed(attempt.url(), allow_loopback).is_err() {
                attempt.error("redirect to a refused address")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            // never an environment proxy: a proxy resolves the name itself,
            // so the address guard would never see where a request goes
            .no_proxy()
            .user_agent(concat!("instancemap/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(policy)
            .dns_resolver(Arc::new(GuardedDns { allow_loopback, dns: dns.map(dns_resolver) }))
            .build()
            .expect("building the HTTP client");
        Fetcher { client, allow_loopback, dns: dns.map(dns_resolver) }
    }

    /// The addresses a request to the host of `endpoint` would go to (as
    /// the guard allows them), at most 8; empty when none.
    pub async fn addresses(&self, endpoint: &str) -> Vec<IpAddr> {
        let Ok(url) = reqwest::Url::parse(endpoint) else { return Vec::new() };
        let mut out: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            Some(url::Host::Domain(d)) => guarded_lookup(d.to_owned(), self.allow_loopback, self.dns.clone())
                .await
                .map(|a| a.into_iter().map(|a| a.ip()).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        out.retain(|ip| ip_allowed(*ip, self.allow_loopback));
        out.sort();
        out.dedup();
        out.truncate(8);
        out
    }

    /// GETs `url` and returns its body (at most [`MAX_BODY`] bytes).
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::Refused("not a URL"))?;
        url_allowed(&parsed, self.allow_loopback)?;
        let mut resp = self.client.get(parsed).send().await.map_err(|e| {
            // the DNS guard's refusal, through reqwest: a refused address
            let mut cause: Option<&dyn std::error::Error> = Some(&e);
            while let Some(c) = cause {
                if c.to_string().contains(NO_ADDRESS) {
                    return FetchError::Refused("the name resolves only to refused addresses");
                }
                cause = c.source();
            }
            FetchError::Transport(e.to_string())
        })?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| FetchError::Transport(e.to_string()))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused() {
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "198.18.0.1",
            // IPv4-compatible, 6to4 and Teredo forms of private and loopback addresses
            "::10.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo client 10.0.0.1
        ] {
            assert!(!ip_allowed(ip.parse().unwrap(), true), "{ip}");
        }
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(!ip_allowed(ip.parse().unwrap(), false), "{ip}");
            assert!(ip_allowed(ip.parse().unwrap(), true), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700::1111", "8.8.8.8", "2002:0808:0808::1"] {
            assert!(ip_allowed(ip.parse().unwrap(), false), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(url_allowed(&u("https://pds.example.com"), false).is_ok());
        assert!(url_allowed(&u("ftp://pds.example.com"), false).is_err());
        assert!(url_allowed(&u("http://169.254.169.254/latest"), true).is_err());
        assert!(url_allowed(&u("http://localhost:2583"), false).is_err());
        assert!(url_allowed(&u("http://localhost:2583"), true).is_ok());
        assert!(url_allowed(&u("http://[::1]:80"), false).is_err());
    }
}
