//! How fast hosts no source has named before may join the host table from
//! DID documents. Anyone can publish DID documents naming hosts (a did:web
//! costs nothing, a PLC operation little), and every new host is a record,
//! a crawl (an outbound request the crawler makes on an attacker's say-so)
//! and an instance. So new hosts are admitted through two token buckets:
//! one per registrable domain (an attacker's wildcard DNS gives unlimited
//! hosts under one domain) and one for the network (free subdomain services
//! under the Public Suffix List give many domains). A host refused is not
//! lost: the account still names it, and the host is offered again the
//! next time a document naming it is read (a re-resolution, the next PLC
//! operation). Refusals are counted by limit
//! (`instancemap_hosts_deferred_total`) and logged once each time a bucket
//! runs dry. The buckets live in memory, one set per opened store (a
//! restart starts them full).

use std::collections::HashMap;
use std::time::Instant;

/// The admission's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// New hosts admitted at once over the whole network.
    pub burst: f64,
    /// And per hour after that.
    pub per_hour: f64,
    /// New hosts admitted at once under one registrable domain.
    pub domain_burst: f64,
    /// And per hour after that.
    pub domain_per_hour: f64,
}

impl Default for Limits {
    /// Generous for the real network (about 30,000 hosts were ever named in
    /// the PLC directory's history, a few dozen join a day; Bluesky's
    /// largest domain has about a hundred), tight for a flood.
    fn default() -> Limits {
        Limits { burst: 50_000.0, per_hour: 5_000.0, domain_burst: 500.0, domain_per_hour: 50.0 }
    }
}

/// Which limit refused a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The network's bucket is dry.
    Network,
    /// The bucket of this registrable domain is dry.
    Domain(String),
}

impl Refused {
    pub fn label(&self) -> &'static str {
        match self {
            Refused::Network => "network",
            Refused::Domain(_) => "domain",
        }
    }
}

/// Domains whose buckets are kept at most (full ones are dropped past it).
const MAX_DOMAINS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Dry since its last refusal was logged.
    dry: bool,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, at: now, dry: false }
    }
    fn refill(&mut self, burst: f64, per_hour: f64, now: Instant) {
        let hours = now.saturating_duration_since(self.at).as_secs_f64() / 3600.0;
        self.tokens = (self.tokens + hours * per_hour).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.dry = false;
        }
    }
}

/// The buckets.
#[derive(Debug)]
pub struct HostAdmission {
    limits: Limits,
    network: Bucket,
    domains: HashMap<String, Bucket>,
}

impl Default for HostAdmission {
    fn default() -> HostAdmission {
        HostAdmission::new(Limits::default())
    }
}

impl HostAdmission {
    pub fn new(limits: Limits) -> HostAdmission {
        let now = Instant::now();
        HostAdmission { limits, network: Bucket::full(limits.burst, now), domains: HashMap::new() }
    }

    /// Takes a token for a new host under `domain` (its registrable domain,
    /// or its address), or says which limit refused it. `Err` with `true`
    /// the first refusal since the bucket ran dry (the one to log).
    pub fn admit(&mut self, domain: &str, now: Instant) -> Result<(), (Refused, bool)> {
        let l = self.limits;
        self.network.refill(l.burst, l.per_hour, now);
        if self.domains.len() >= MAX_DOMAINS && !self.domains.contains_key(domain) {
            self.domains.retain(|_, b| {
                b.refill(l.domain_burst, l.domain_per_hour, now);
                b.tokens < l.domain_burst
            });
        }
        let d = self.domains.entry(domain.to_owned()).or_insert_with(|| Bucket::full(l.domain_burst, now));
        d.refill(l.domain_burst, l.domain_per_hour, now);
        if d.tokens < 1.0 {
            let first = !std::mem::replace(&mut d.dry, true);
            return Err((Refused::Domain(domain.to_owned()), first));
        }
        if self.network.tokens < 1.0 {
            let first = !std::mem::replace(&mut self.network.dry, true);
            return Err((Refused::Network, first));
        }
        d.tokens -= 1.0;
        self.network.tokens -= 1.0;
        Ok(())
    }
}

/// What a host's bucket is keyed by: the registrable domain of its name
/// (its last two labels when its suffix is not on the Public Suffix List),
/// or the address itself.
pub fn domain_of(endpoint: &str) -> String {
    match url::Url::parse(endpoint).ok().as_ref().and_then(url::Url::host) {
        Some(url::Host::Domain(name)) => crate::types::registrable_domain(name).unwrap_or_else(|| {
            let labels: Vec<&str> = name.trim_end_matches('.').rsplitn(3, '.').collect();
            labels.iter().take(2).rev().copied().collect::<Vec<_>>().join(".")
        }),
        Some(ip) => ip.to_string(),
        None => endpoint.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_domain_and_the_network_have_a_bucket_that_refills() {
        let limits = Limits { burst: 5.0, per_hour: 3600.0, domain_burst: 2.0, domain_per_hour: 3600.0 };
        let mut a = HostAdmission::new(limits);
        let t = Instant::now();
        assert!(a.admit("evil.example", t).is_ok());
        assert!(a.admit("evil.example", t).is_ok());
        assert_eq!(a.admit("evil.example", t), Err((Refused::Domain("evil.example".into()), true)));
        assert_eq!(a.admit("evil.example", t), Err((Refused::Domain("evil.example".into()), false)), "logged once");
        assert!(a.admit("b.example", t).is_ok());
        assert!(a.admit("c.example", t).is_ok());
        assert!(a.admit("d.example", t).is_ok());
        assert_eq!(a.admit("e.example", t), Err((Refused::Network, true)));
        // a second later, one token each again
        let t = t + Duration::from_secs(1);
        assert!(a.admit("evil.example", t).is_ok());
        assert!(a.admit("e.example", t).is_err(), "the network's one token went to evil.example");
    }

    #[test]
    fn a_hosts_bucket_is_its_registrable_domain_or_its_address() {
        assert_eq!(domain_of("https://x1.evil.example.com"), "example.com");
        assert_eq!(domain_of("https://pds.host.bsky.network"), "bsky.network");
        assert_eq!(domain_of("http://127.0.0.1:2583"), "127.0.0.1");
        assert_eq!(domain_of("http://[::1]:2583"), "[::1]");
        assert_eq!(domain_of("https://x1.evil.test"), "evil.test");
    }
}
