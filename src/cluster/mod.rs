//! Evidence and instance assignment, pure and deterministic: hosts (with
//! what they advertise) in, instances out. No I/O; the store and the
//! incremental path build on this.
//!
//! Evidence, strongest first (DESIGN.md, "Instances: the clustering model"):
//! verified declarations (to come with the declaration lexicon), hosts
//! advertising a common `availableUserDomains` suffix, hosts under one
//! registrable domain (eTLD+1 by the Public Suffix List, private section
//! included, so `a.fly.dev` and `b.fly.dev` stay apart), and the host
//! alone. IP addresses and `localhost:port` stand alone.
//!
//! **Instance ids.** An instance's id is derived from its *anchor*: the
//! smallest (byte-wise) of its evidence keys (`decl:<operator DID>`,
//! `host:<endpoint>`, `rd:<registrable domain>`, `ud:<user domain>`; a
//! verified declaration therefore anchors the instance it covers). A host that is not
//! connected to an instance by evidence never changes that instance's keys,
//! so unrelated hosts joining or leaving never change its id; only a merge
//! with another instance can, and then the merged instance keeps the
//! smaller anchor (one of the two ids survives).

pub mod assign;
pub mod declaration;
pub mod explain;
pub mod history;
pub mod map;
pub mod overrides;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// What is known about one host for clustering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Normalised endpoint (`https://host[:port]`).
    pub endpoint: String,
    /// `availableUserDomains` from `describeServer`, as advertised.
    pub user_domains: Vec<String>,
    /// When the facts were last observed (ms since the epoch).
    pub observed_at_ms: i64,
    /// A verified declaration claims this host: `(operator DID, name)`.
    pub declared_by: Option<(String, String)>,
}

/// Why hosts are grouped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EvidenceKind {
    /// The operator's overrides file pins or splits the host (the text says which).
    Override(String),
    /// A verified declaration by this operator (DID) claims the host.
    Declaration(String),
    /// The host advertises this user-domain suffix.
    UserDomain(String),
    /// The host is under this registrable domain.
    RegistrableDomain(String),
    /// Nothing links the host to others.
    HostAlone,
}

/// One piece of evidence: a host, what links it, and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub host: String,
    pub kind: EvidenceKind,
    pub observed_at_ms: i64,
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// The evidence key the id derives from.
    pub anchor: String,
    pub name: String,
    pub hosts: Vec<String>,
    pub user_domains: Vec<String>,
    pub registrable_domains: Vec<String>,
    pub evidence: Vec<Evidence>,
}

/// The host name of an endpoint and whether it stands alone (an IP
/// address, `localhost`, or anything with an explicit port).
pub fn host_name(endpoint: &str) -> (&str, bool) {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    if rest.starts_with('[') {
        return (rest, true); // IPv6 literal
    }
    let (name, port) = match rest.rsplit_once(':') {
        Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (n, true),
        _ => (rest, false),
    };
    let ip = name.parse::<std::net::IpAddr>().is_ok();
    (name, port || ip || name == "localhost")
}

/// The registrable domain (eTLD+1) of a host name, by the Public Suffix
/// List with its private section; `None` for names that are themselves a
/// public suffix or have no known suffix.
pub fn registrable_domain(name: &str) -> Option<String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let d = psl::domain(lower.as_bytes())?;
    if !d.suffix().is_known() {
        return None;
    }
    std::str::from_utf8(d.as_bytes()).ok().map(str::to_owned)
}

/// A user-domain suffix as a key: lower-cased, without leading or trailing
/// dots; `None` when it is not a plausible domain.
pub fn user_domain_key(d: &str) -> Option<String> {
    let d = d.trim().trim_matches('.').to_ascii_lowercase();
    crate::types::is_handle(&d).then_some(d)
}

struct Dsu {
    parent: Vec<usize>,
}

impl Dsu {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// The id of an anchor: `inst_` and 12 hex digits of its SHA-256.
pub fn instance_id(anchor: &str) -> String {
    let h = Sha256::digest(anchor.as_bytes());
    let hex: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("inst_{hex}")
}

/// Groups hosts into instances with no overrides.
pub fn cluster(hosts: &[HostFacts]) -> Vec<Instance> {
    cluster_with(hosts, &overrides::Overrides::default())
}

/// Groups hosts into instances. Deterministic: the same facts in any order
/// give the same instances, sorted by id. `overrides` pins hosts together
/// (joining their groups, and naming the result) or splits a host from
/// everything its evidence links it to; each shows as evidence.
pub fn cluster_with(hosts: &[HostFacts], overrides: &overrides::Overrides) -> Vec<Instance> {
    let mut hosts: Vec<&HostFacts> = hosts.iter().collect();
    hosts.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    hosts.dedup_by(|a, b| a.endpoint == b.endpoint);
    // evidence per host, and the keys that link hosts
    let mut keys: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut evidence: Vec<Vec<Evidence>> = Vec::with_capacity(hosts.len());
    let mut pin_names: BTreeMap<usize, String> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        let (name, alone) = host_name(&h.endpoint);
        let mut ev = Vec::new();
        let now = h.observed_at_ms;
        if let Some((n, pin)) = overrides.pin_of(&h.endpoint) {
            keys.entry(format!("pin:{n:04}")).or_default().push(i);
            if let Some(pn) = &pin.name {
                pin_names.insert(i, pn.clone());
            }
            let what = format!(
                "pinned with {} host(s){}",
                pin.hosts.len(),
                pin.name.as_ref().map(|n| format!(" as {n}")).unwrap_or_default()
            );
            ev.push(Evidence { host: h.endpoint.clone(), kind: EvidenceKind::Override(what), observed_at_ms: now });
        }
        if overrides.is_split(&h.endpoint) {
            ev.push(Evidence {
                host: h.endpoint.clone(),
                kind: EvidenceKind::Override("split: stands alone".into()),
                observed_at_ms: now,
            });
            evidence.push(ev);
            continue;
        }
        if let Some((op, _)) = &h.declared_by {
            keys.entry(format!("decl:{op}")).or_default().push(i);
            ev.push(Evidence {
                host: h.endpoint.clone(),
                kind: EvidenceKind::Declaration(op.clone()),
                observed_at_ms: h.observed_at_ms,
            });
        }
        let ud: BTreeSet<String> = h.user_domains.iter().filter_map(|d| user_domain_key(d)).collect();
        for d in ud {
            keys.entry(format!("ud:{d}")).or_default().push(i);
            ev.push(Evidence {
                host: h.endpoint.clone(),
                kind: EvidenceKind::UserDomain(d),
                observed_at_ms: h.observed_at_ms,
            });
        }
        if !alone {
            if let Some(rd) = registrable_domain(name) {
                keys.entry(format!("rd:{rd}")).or_default().push(i);
                ev.push(Evidence {
                    host: h.endpoint.clone(),
                    kind: EvidenceKind::RegistrableDomain(rd),
                    observed_at_ms: h.observed_at_ms,
                });
            }
        }
        if ev.is_empty() {
            ev.push(Evidence {
                host: h.endpoint.clone(),
                kind: EvidenceKind::HostAlone,
                observed_at_ms: h.observed_at_ms,
            });
        }
        evidence.push(ev);
    }
    let mut dsu = Dsu { parent: (0..hosts.len()).collect() };
    for members in keys.values() {
        for w in members.windows(2) {
            dsu.union(w[0], w[1]);
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..hosts.len() {
        let root = dsu.find(i);
        groups.entry(root).or_default().push(i);
    }
    let mut out: Vec<Instance> = groups
        .into_values()
        .map(|members| {
            let mut ud_count: BTreeMap<String, usize> = BTreeMap::new();
            let mut rd_count: BTreeMap<String, usize> = BTreeMap::new();
            let mut anchors = BTreeSet::new();
            let mut ev = Vec::new();
            let mut declared: Option<&(String, String)> = None;
            for &i in &members {
                if let Some(d) = &hosts[i].declared_by {
                    if declared.is_none_or(|cur| d.0 < cur.0) {
                        declared = Some(d);
                    }
                }
                for e in &evidence[i] {
                    match &e.kind {
                        EvidenceKind::UserDomain(d) => {
                            *ud_count.entry(d.clone()).or_default() += 1;
                            anchors.insert(format!("ud:{d}"));
                        }
                        EvidenceKind::RegistrableDomain(d) => {
                            *rd_count.entry(d.clone()).or_default() += 1;
                            anchors.insert(format!("rd:{d}"));
                        }
                        EvidenceKind::HostAlone => _ = anchors.insert(format!("host:{}", e.host)),
                        EvidenceKind::Declaration(op) => _ = anchors.insert(format!("decl:{op}")),
                        EvidenceKind::Override(_) => {
                            let key = match overrides.pin_of(&e.host) {
                                Some((n, _)) => format!("pin:{n:04}"),
                                None => format!("host:{}", e.host),
                            };
                            anchors.insert(key);
                        }
                    }
                    ev.push(e.clone());
                }
            }
            let anchor = anchors.into_iter().next().expect("every host has evidence");
            // most common advertised user domain, else registrable domain,
            // else the host; ties go to the smallest name
            let most = |m: &BTreeMap<String, usize>| {
                m.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(k, _)| k.clone())
            };
            let pinned = members.iter().find_map(|i| pin_names.get(i).cloned());
            let name = pinned
                .or_else(|| declared.map(|d| d.1.clone()))
                .or_else(|| most(&ud_count))
                .or_else(|| most(&rd_count))
                .unwrap_or_else(|| host_name(&hosts[members[0]].endpoint).0.to_owned());
            Instance {
                id: instance_id(&anchor),
                anchor,
                name,
                hosts: members.iter().map(|&i| hosts[i].endpoint.clone()).collect(),
                user_domains: ud_count.into_keys().collect(),
                registrable_domains: rd_count.into_keys().collect(),
                evidence: ev,
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(endpoint: &str, ud: &[&str]) -> HostFacts {
        HostFacts {
            endpoint: endpoint.into(),
            user_domains: ud.iter().map(|s| (*s).to_owned()).collect(),
            observed_at_ms: 1,
            declared_by: None,
        }
    }

    #[test]
    fn registrable_domains_use_the_private_section() {
        assert_eq!(registrable_domain("elfcup.us-east.host.bsky.network").as_deref(), Some("bsky.network"));
        assert_eq!(registrable_domain("pds.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(registrable_domain("alice.github.io").as_deref(), Some("alice.github.io"));
        assert_eq!(registrable_domain("github.io"), None);
        assert_eq!(host_name("http://localhost:2583"), ("localhost", true));
        assert_eq!(host_name("https://203.0.113.5"), ("203.0.113.5", true));
        assert_eq!(host_name("https://pds.example.com"), ("pds.example.com", false));
    }

    #[test]
    fn a_small_network() {
        let hosts = vec![
            h("https://elfcup.us-east.host.bsky.network", &[".bsky.social"]),
            h("https://morel.us-east.host.bsky.network", &[".bsky.social"]),
            h("https://bsky.social", &[".bsky.social"]),
            h("https://blacksky.app", &[".blacksky.app"]),
            h("https://pds.robocracy.org", &[]),
            h("https://alice.github.io", &[]),
            h("https://bob.github.io", &[]),
            h("https://203.0.113.5", &[".bsky.social"]),
            h("http://localhost:2583", &[]),
            h("http://localhost:2584", &[]),
        ];
        let out = cluster(&hosts);
        let by_name: BTreeMap<&str, &Instance> = out.iter().map(|i| (i.name.as_str(), i)).collect();
        let bsky = by_name["bsky.social"];
        // shared user domain and registrable domain join them; the IP host
        // advertising .bsky.social joins by user domain too
        assert_eq!(bsky.hosts.len(), 4, "{:?}", bsky.hosts);
        assert!(bsky.registrable_domains.contains(&"bsky.network".to_owned()));
        assert_eq!(by_name["blacksky.app"].hosts, vec!["https://blacksky.app"]);
        assert_eq!(by_name["robocracy.org"].hosts.len(), 1);
        assert!(by_name.contains_key("alice.github.io") && by_name.contains_key("bob.github.io"));
        assert!(by_name.contains_key("localhost"), "{:?}", by_name.keys());
        assert_eq!(out.iter().filter(|i| i.name == "localhost").count(), 2, "each localhost port stands alone");
        // deterministic in any order
        let mut rev = hosts.clone();
        rev.reverse();
        assert_eq!(cluster(&rev), out);
    }

    #[test]
    fn a_verified_declaration_joins_its_hosts_and_names_the_instance() {
        let mut a = h("https://pds.one.example", &[]);
        let mut b = h("https://pds.two.example", &[]);
        a.declared_by = Some(("did:plc:oooooooooooooooooooooooo".into(), "Example Co-op".into()));
        b.declared_by = a.declared_by.clone();
        let out = cluster(&[a, b, h("https://pds.three.example", &[])]);
        assert_eq!(out.len(), 2);
        let coop = out.iter().find(|i| i.name == "Example Co-op").unwrap();
        assert_eq!(coop.hosts.len(), 2);
        assert_eq!(coop.anchor, "decl:did:plc:oooooooooooooooooooooooo");
    }

    #[test]
    fn overrides_pin_and_split_and_show_as_evidence() {
        let o = overrides::Overrides::parse(
            r#"
            [[pin]]
            name = "Example Network"
            hosts = ["pds.example.com", "https://PDS.example-cdn.net/"]
            [[split]]
            host = "https://b.host.bsky.network"
            "#,
        )
        .unwrap();
        let hosts = vec![
            h("https://pds.example.com", &[]),
            h("https://pds.example-cdn.net", &[]),
            h("https://a.host.bsky.network", &[".bsky.social"]),
            h("https://b.host.bsky.network", &[".bsky.social"]),
        ];
        let out = cluster_with(&hosts, &o);
        let by_name: BTreeMap<&str, &Instance> = out.iter().map(|i| (i.name.as_str(), i)).collect();
        assert_eq!(by_name["Example Network"].hosts.len(), 2);
        assert!(by_name["Example Network"].evidence.iter().any(|e| matches!(e.kind, EvidenceKind::Override(_))));
        assert_eq!(by_name["bsky.social"].hosts, vec!["https://a.host.bsky.network"], "b was split off");
        assert_eq!(out.len(), 3);
        assert!(overrides::Overrides::parse("[[split]]\nhost = \"ftp://x\"").is_err());
        assert!(overrides::Overrides::parse("pin = 3").is_err());
    }

    #[test]
    fn ids_do_not_move_when_unrelated_hosts_come_and_go() {
        let base = vec![h("https://a.host.bsky.network", &[".bsky.social"]), h("https://pds.example.com", &[])];
        let ids = |hs: &[HostFacts]| -> BTreeMap<String, String> {
            cluster(hs).into_iter().map(|i| (i.name.clone(), i.id)).collect()
        };
        let before = ids(&base);
        let mut more = base.clone();
        more.push(h("https://zzz.example.net", &[]));
        more.push(h("https://b.host.bsky.network", &[".bsky.social"]));
        let after = ids(&more);
        assert_eq!(before["bsky.social"], after["bsky.social"]);
        assert_eq!(before["example.com"], after["example.com"]);
    }
}
