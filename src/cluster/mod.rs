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
//!
//! **Names.** A pin's name, else the verified declaration's, else the most
//! common advertised user domain, else the registrable domain, else the
//! label of its smallest host ([`host_label`]: `localhost:2583`,
//! `203.0.113.5 (http)`). Names are unique across the map; see
//! `unique_names` for what sets apart two that would be the same.

pub mod activity;
pub mod assign;
pub mod concentration;
pub mod declaration;
pub mod explain;
pub mod history;
pub mod maintain;
pub mod map;
pub mod overrides;
pub mod recompute;
pub mod routes;
pub mod structure;

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
    /// Verified declarations claiming this host: `(operator DID, name)`
    /// (more than one is a conflict).
    pub declared_by: Vec<(String, String)>,
}

/// The map before a refresh, so instances keep their ids: each host's
/// instance id, and its registered members (the weight that decides which
/// id a merge keeps).
#[derive(Debug, Clone, Default)]
pub struct Previous {
    pub ids: std::collections::HashMap<String, String>,
    pub weight: std::collections::HashMap<String, i64>,
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
    /// The operators whose verified declarations claim its hosts, with
    /// their declared names: one is its operator; two or more are a
    /// conflict (no operator, no declared name).
    pub operators: Vec<(String, String)>,
    /// A declared name not used, and why: it reads as another instance's
    /// proven domain or pinned name (see [`refuse_imitations`]).
    pub name_refused: Option<(String, String)>,
}

/// The parts of a normalised endpoint (see
/// [`normalize_endpoint`](crate::identity::did::normalize_endpoint)), read
/// by the URL parser: whether it is https, its host (a name, dotted IPv4,
/// or bracketed IPv6) and its port when not the scheme's default. `None`
/// for what does not parse as an http(s) URL with a host.
fn endpoint_parts(endpoint: &str) -> Option<(bool, String, Option<u16>)> {
    let u = url::Url::parse(endpoint).ok()?;
    let https = match u.scheme() {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let host = match u.host()? {
        url::Host::Domain(d) => d.strip_suffix('.').unwrap_or(d).to_owned(),
        ip => ip.to_string(),
    };
    Some((https, host, u.port()))
}

/// The host name of an endpoint and whether it stands alone (an IP
/// address, `localhost`, or anything with an explicit port). An IPv6
/// address keeps its brackets: `https://[2001:db8::1]:8443` is
/// `[2001:db8::1]`, alone. What does not parse is its own name, alone.
pub fn host_name(endpoint: &str) -> (String, bool) {
    let Some((_, name, port)) = endpoint_parts(endpoint) else {
        return (endpoint.to_owned(), true);
    };
    let ip = name.starts_with('[') || name.parse::<std::net::Ipv4Addr>().is_ok();
    let alone = port.is_some() || ip || name == "localhost";
    (name, alone)
}

/// How people read an endpoint: `host[:port]` (the port when not the
/// scheme's default), and ` (http)` for plain http on its default port,
/// so `https://203.0.113.5`, `http://203.0.113.5` and
/// `https://203.0.113.5:8443` read `203.0.113.5`, `203.0.113.5 (http)`
/// and `203.0.113.5:8443`. Host names stay in their ASCII (punycode) form:
/// a Unicode form can look like another name.
pub fn host_label(endpoint: &str) -> String {
    match endpoint_parts(endpoint) {
        Some((_, host, Some(p))) => format!("{host}:{p}"),
        Some((true, host, None)) => host,
        Some((false, host, None)) => format!("{host} (http)"),
        None => endpoint.to_owned(),
    }
}

pub use crate::types::registrable_domain;

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

/// Groups hosts into instances, as a first map (no ids to keep).
pub fn cluster_with(hosts: &[HostFacts], overrides: &overrides::Overrides) -> Vec<Instance> {
    cluster_keeping(hosts, overrides, &Previous::default())
}

/// Groups hosts into instances. Deterministic: the same facts (and the
/// same previous map) in any order give the same instances, sorted by id.
/// `overrides` pins hosts together (joining their groups, and naming the
/// result) or splits a host from everything its evidence links it to; each
/// shows as evidence. Instances keep their ids from `previous` (see
/// [`keep_ids`]).
pub fn cluster_keeping(hosts: &[HostFacts], overrides: &overrides::Overrides, previous: &Previous) -> Vec<Instance> {
    let mut hosts: Vec<&HostFacts> = hosts.iter().collect();
    hosts.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    hosts.dedup_by(|a, b| a.endpoint == b.endpoint);
    // evidence per host, and the keys that link hosts
    let mut keys: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut evidence: Vec<Vec<Evidence>> = Vec::with_capacity(hosts.len());
    let mut pin_names: BTreeMap<usize, String> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        let (name, alone) = host_name(&h.endpoint);
        let name = name.as_str();
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
        for (op, _) in &h.declared_by {
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
    let groups: Vec<Vec<usize>> = groups.into_values().collect();
    let ids = keep_ids(&groups, &hosts, &evidence, overrides, previous);
    let named: Vec<(Instance, NameSource, (String, NameSource))> = groups
        .into_iter()
        .zip(ids)
        .map(|(members, (id, anchor))| {
            let mut ud_count: BTreeMap<String, usize> = BTreeMap::new();
            let mut rd_count: BTreeMap<String, usize> = BTreeMap::new();
            let mut ev = Vec::new();
            let mut operators: BTreeSet<(String, String)> = BTreeSet::new();
            for &i in &members {
                operators.extend(hosts[i].declared_by.iter().cloned());
                for e in &evidence[i] {
                    match &e.kind {
                        EvidenceKind::UserDomain(d) => *ud_count.entry(d.clone()).or_default() += 1,
                        EvidenceKind::RegistrableDomain(d) => *rd_count.entry(d.clone()).or_default() += 1,
                        _ => {}
                    }
                    ev.push(e.clone());
                }
            }
            // one operator names the instance; two or more are a conflict
            let operators: Vec<(String, String)> = operators.into_iter().collect();
            let distinct: BTreeSet<&str> = operators.iter().map(|(op, _)| op.as_str()).collect();
            let declared = (distinct.len() == 1).then(|| &operators[0]);
            // most common advertised user domain, else registrable domain,
            // else the host; ties go to the smallest name
            let most = |m: &BTreeMap<String, usize>| {
                m.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(k, _)| k.clone())
            };
            let first = &hosts[members[0]].endpoint;
            let pinned = members.iter().find_map(|i| pin_names.get(i).cloned());
            // the name its proven evidence gives (what a refused declared
            // name falls back to)
            let proven = if let Some(d) = most(&ud_count) {
                (d, NameSource::UserDomain)
            } else if let Some(d) = most(&rd_count) {
                (d, NameSource::RegistrableDomain)
            } else {
                let scheme = url::Url::parse(first).map(|u| u.scheme().to_owned()).unwrap_or_default();
                (host_label(first), NameSource::Host(scheme))
            };
            let (name, source) = if let Some(n) = pinned {
                (n, NameSource::Pin)
            } else if let Some((op, n)) = declared {
                (n.clone(), NameSource::Declaration(op.clone()))
            } else {
                proven.clone()
            };
            let inst = Instance {
                id,
                anchor,
                name,
                hosts: members.iter().map(|&i| hosts[i].endpoint.clone()).collect(),
                user_domains: ud_count.into_keys().collect(),
                registrable_domains: rd_count.into_keys().collect(),
                evidence: ev,
                operators,
                name_refused: None,
            };
            (inst, source, proven)
        })
        .collect();
    let named = refuse_imitations(named);
    let mut out = unique_names(named);
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The anchor of a group: the smallest of its hosts' evidence keys
/// (`host:`, `pin:`, `rd:`, `ud:`). A declaration is not an anchor: what
/// its operator publishes does not decide an id.
fn anchor_of(members: &[usize], evidence: &[Vec<Evidence>], overrides: &overrides::Overrides) -> String {
    let mut anchors = BTreeSet::new();
    for &i in members {
        let mut named = false;
        let mut host = None;
        for e in &evidence[i] {
            host = Some(&e.host);
            named |= !matches!(e.kind, EvidenceKind::HostAlone | EvidenceKind::Declaration(_));
            match &e.kind {
                EvidenceKind::UserDomain(d) => _ = anchors.insert(format!("ud:{d}")),
                EvidenceKind::RegistrableDomain(d) => _ = anchors.insert(format!("rd:{d}")),
                EvidenceKind::HostAlone | EvidenceKind::Declaration(_) => {}
                EvidenceKind::Override(_) => {
                    let key = match overrides.pin_of(&e.host) {
                        Some((n, _)) => format!("pin:{n:04}"),
                        None => format!("host:{}", e.host),
                    };
                    anchors.insert(key);
                }
            }
        }
        // a host nothing but itself (or a declaration) names
        if !named {
            if let Some(h) = host {
                anchors.insert(format!("host:{h}"));
            }
        }
    }
    anchors.into_iter().next().expect("every host has evidence")
}

/// Each group's id and anchor. A group with hosts that were in the map
/// keeps an id they had: the one whose hosts bring the most registered
/// members (so when instances merge, the one with more members keeps its
/// id; when one splits, the part with more of its members keeps it),
/// smallest id on a tie; an id goes to one group only, the one bringing it
/// the most members (smallest anchor on a tie). Any other group's id
/// derives from its anchor. So ids never move because of evidence that
/// links a stranger's host: that host brings no members of the instance.
fn keep_ids(
    groups: &[Vec<usize>],
    hosts: &[&HostFacts],
    evidence: &[Vec<Evidence>],
    overrides: &overrides::Overrides,
    previous: &Previous,
) -> Vec<(String, String)> {
    let anchors: Vec<String> = groups.iter().map(|m| anchor_of(m, evidence, overrides)).collect();
    // each group's best previous id, and its weight there
    let mut claims: BTreeMap<&str, Vec<(i64, &str, usize)>> = BTreeMap::new();
    for (g, members) in groups.iter().enumerate() {
        let mut by_id: BTreeMap<&str, i64> = BTreeMap::new();
        for &i in members {
            let h = &hosts[i].endpoint;
            if let Some(id) = previous.ids.get(h) {
                // a host without members still counts a little
                *by_id.entry(id.as_str()).or_default() += 1 + previous.weight.get(h).copied().unwrap_or(0).max(0);
            }
        }
        if let Some((id, w)) = by_id.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0))) {
            claims.entry(id).or_default().push((w, anchors[g].as_str(), g));
        }
    }
    let mut ids: Vec<Option<String>> = vec![None; groups.len()];
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (id, mut cands) in claims {
        cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        ids[cands[0].2] = Some(id.to_owned());
        taken.insert(id.to_owned());
    }
    ids.into_iter()
        .zip(anchors)
        .map(|(id, anchor)| {
            let id = id.unwrap_or_else(|| {
                let mut id = instance_id(&anchor);
                let mut n = 1;
                while taken.contains(&id) {
                    n += 1;
                    id = instance_id(&format!("{anchor}#{n}"));
                }
                taken.insert(id.clone());
                id
            });
            (id, anchor)
        })
        .collect()
}

/// Where an instance's name came from; the order is who keeps a name that
/// two instances would share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum NameSource {
    /// The overrides file's pin (the map's operator's word).
    Pin,
    /// The label of its host (an instance of hosts nothing else names); the
    /// scheme.
    Host(String),
    /// The registrable domain of its hosts: the domain's owner runs them.
    RegistrableDomain,
    /// The user domain its hosts advertise.
    UserDomain,
    /// A verified declaration's name, free text its operator chose; the
    /// operator's DID.
    Declaration(String),
}

impl NameSource {
    fn rank(&self) -> u8 {
        match self {
            NameSource::Pin => 0,
            NameSource::Host(_) => 1,
            NameSource::RegistrableDomain => 2,
            NameSource::UserDomain => 3,
            NameSource::Declaration(_) => 4,
        }
    }
}

/// A name's words as people read them: confusable characters folded to
/// their UTS 39 skeleton (Cyrillic `і` reads as `i`, `0` as `O`), case
/// folded, split on what is not a letter or digit. At most 32 words.
fn words(name: &str) -> Vec<String> {
    let lower = name.to_lowercase();
    let skeleton: String = unicode_security::confusable_detection::skeleton(&lower).collect::<String>().to_lowercase();
    skeleton.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).take(32).map(str::to_owned).collect()
}

/// Joined forms shorter than this are matched only as whole words (`xyz.com`
/// is not found inside "Coolxyzcommunity").
const MIN_JOINED: usize = 8;

/// Declared names are the operator's free text, so a stranger's verified
/// declaration could name its own instance "Victim Social (official)". A
/// declared name is refused when its words contain, in order, the words
/// of another instance's proven domain (`victim.social` in "Victim Social
/// (official)" or "victimsocial"; `pds-a.test` in "Totally PDS A": without
/// its suffix when what is left is two words or eight letters), or of
/// another instance's pinned name;
/// the instance then takes the name its own evidence gives, and the
/// refusal is kept (`name_refused`) with the imitated mark. An instance's
/// own domains never refuse its name.
fn refuse_imitations(named: Vec<(Instance, NameSource, (String, NameSource))>) -> Vec<(Instance, NameSource)> {
    use std::collections::HashMap;
    // each proven mark: its words, its joined form, and whose it is
    let mut by_words: HashMap<Vec<String>, (usize, String)> = HashMap::new();
    let mut by_joined: HashMap<String, (usize, String)> = HashMap::new();
    let mut longest = 1;
    for (idx, (inst, src, _)) in named.iter().enumerate() {
        let pin = matches!(src, NameSource::Pin).then(|| inst.name.clone());
        let domains = inst.user_domains.iter().chain(&inst.registrable_domains);
        // a domain reads as itself, and without its public suffix when that
        // is still distinctive ("PDS A" for `pds-a.test`, "Blacksky" for
        // `blacksky.app`; not "Victim" alone for `victim.social`)
        let bare = domains.clone().filter_map(|d| {
            let suffix = psl::suffix(d.as_bytes()).map_or(0, |s| s.as_bytes().len());
            let bare = d.get(..d.len().saturating_sub(suffix + 1)).filter(|b| !b.is_empty())?;
            // counted as written (a skeleton can be longer: `m` is `rn`)
            let parts = bare.split(|c: char| !c.is_alphanumeric()).filter(|p| !p.is_empty()).count();
            let letters = bare.chars().filter(|c| c.is_alphanumeric()).count();
            (parts >= 2 || letters >= MIN_JOINED).then(|| (bare.to_owned(), d.clone()))
        });
        let marks = domains.map(|d| (d.clone(), d.clone())).chain(bare).chain(pin.map(|p| (p.clone(), p)));
        for (text, mark) in marks.collect::<Vec<_>>() {
            let w = words(&text);
            if w.is_empty() {
                continue;
            }
            longest = longest.max(w.len());
            let joined = w.concat();
            if text.chars().filter(|c| c.is_alphanumeric()).count() >= MIN_JOINED {
                by_joined.entry(joined).or_insert((idx, mark.clone()));
            }
            by_words.entry(w).or_insert((idx, mark));
        }
    }
    named
        .into_iter()
        .enumerate()
        .map(|(idx, (mut inst, src, proven))| {
            if !matches!(src, NameSource::Declaration(_)) {
                return (inst, src);
            }
            let w = words(&inst.name);
            let others = |hit: Option<&(usize, String)>| hit.filter(|(owner, _)| *owner != idx).map(|(_, m)| m.clone());
            let mut imitated = None;
            'runs: for len in 1..=longest.min(w.len()) {
                for run in w.windows(len) {
                    if let Some(m) = others(by_words.get(run)) {
                        imitated = Some(m);
                        break 'runs;
                    }
                }
            }
            if imitated.is_none() {
                let joined: Vec<char> = w.concat().chars().collect();
                'sub: for a in 0..joined.len() {
                    for b in (a + MIN_JOINED)..=joined.len() {
                        if let Some(m) = others(by_joined.get(&joined[a..b].iter().collect::<String>())) {
                            imitated = Some(m);
                            break 'sub;
                        }
                    }
                }
            }
            match imitated {
                Some(mark) => {
                    let why = format!("reads as {mark}, which is another instance's");
                    inst.name_refused = Some((std::mem::replace(&mut inst.name, proven.0), why));
                    (inst, proven.1)
                }
                None => (inst, src),
            }
        })
        .collect()
}

/// The key two names collide on: people do not tell case or surrounding
/// spaces apart.
fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Makes every name unique across the map, whatever order the instances
/// come in. A name only one instance has is kept. Where several would
/// share one, the one whose name has the strongest source (a pin, then a
/// host, a registrable domain, a user domain, a declaration) keeps it if it
/// is the only one of that source, and every other gets what sets it
/// apart: a declaration its operator's DID, a host its scheme, any other
/// the value of its anchor (`example.com (other.net)`), or its id when
/// that is the name itself. A declaration therefore never takes a name
/// from the hosts or domains it resembles. What is still shared after
/// that (a name chosen to look like a suffixed one) gets the id appended,
/// strongest source and smallest id first.
fn unique_names(named: Vec<(Instance, NameSource)>) -> Vec<Instance> {
    let mut groups: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (inst, src) in &named {
        groups.entry(name_key(&inst.name)).or_default().push(src.rank());
    }
    let mut named: Vec<(Instance, u8)> = named
        .into_iter()
        .map(|(mut inst, src)| {
            let ranks = &groups[&name_key(&inst.name)];
            let best = ranks.iter().min().copied().unwrap_or(0);
            let keeps = ranks.len() == 1 || (src.rank() == best && ranks.iter().filter(|&&r| r == best).count() == 1);
            if !keeps {
                let part = match &src {
                    NameSource::Declaration(op) => op.clone(),
                    NameSource::Host(scheme) => scheme.clone(),
                    _ => anchor_part(&inst.anchor),
                };
                let part = if name_key(&part) == name_key(&inst.name) { inst.id.clone() } else { part };
                inst.name = format!("{} ({part})", inst.name);
            }
            let rank = src.rank();
            (inst, rank)
        })
        .collect();
    named.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.id.cmp(&b.0.id)));
    let mut taken = BTreeSet::new();
    named
        .into_iter()
        .map(|(mut inst, _)| {
            while !taken.insert(name_key(&inst.name)) {
                inst.name = format!("{} ({})", inst.name, inst.id);
            }
            inst
        })
        .collect()
}

/// What an anchor says, for people: the DID, domain or host label of
/// `decl:`, `rd:`, `ud:` and `host:` keys; `pin #N` for the overrides
/// file's Nth pin.
fn anchor_part(anchor: &str) -> String {
    match anchor.split_once(':') {
        Some(("host", e)) => host_label(e),
        Some(("pin", n)) => n.parse::<u32>().map_or_else(|_| anchor.to_owned(), |n| format!("pin #{}", n + 1)),
        Some((_, v)) => v.to_owned(),
        None => anchor.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(endpoint: &str, ud: &[&str]) -> HostFacts {
        HostFacts {
            endpoint: endpoint.into(),
            user_domains: ud.iter().map(|s| (*s).to_owned()).collect(),
            observed_at_ms: 1,
            declared_by: Vec::new(),
        }
    }

    #[test]
    fn registrable_domains_use_the_private_section() {
        assert_eq!(registrable_domain("elfcup.us-east.host.bsky.network").as_deref(), Some("bsky.network"));
        assert_eq!(registrable_domain("pds.example.co.uk").as_deref(), Some("example.co.uk"));
        assert_eq!(registrable_domain("alice.github.io").as_deref(), Some("alice.github.io"));
        assert_eq!(registrable_domain("github.io"), None);
        assert_eq!(host_name("http://localhost:2583"), ("localhost".to_owned(), true));
        assert_eq!(host_name("https://203.0.113.5"), ("203.0.113.5".to_owned(), true));
        assert_eq!(host_name("https://pds.example.com"), ("pds.example.com".to_owned(), false));
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
        // each localhost port stands alone, and says which it is
        assert_eq!(by_name["localhost:2583"].hosts, vec!["http://localhost:2583"]);
        assert_eq!(by_name["localhost:2584"].hosts, vec!["http://localhost:2584"]);
        assert_eq!(by_name.len(), out.len(), "names are unique");
        // deterministic in any order
        let mut rev = hosts.clone();
        rev.reverse();
        assert_eq!(cluster(&rev), out);
    }

    #[test]
    fn a_verified_declaration_joins_its_hosts_and_names_the_instance() {
        let mut a = h("https://pds.one.example", &[]);
        let mut b = h("https://pds.two.example", &[]);
        a.declared_by = vec![("did:plc:oooooooooooooooooooooooo".into(), "Example Co-op".into())];
        b.declared_by = a.declared_by.clone();
        let out = cluster(&[a, b, h("https://pds.three.example", &[])]);
        assert_eq!(out.len(), 2);
        let coop = out.iter().find(|i| i.name == "Example Co-op").unwrap();
        assert_eq!(coop.hosts.len(), 2);
        // a declaration is not an anchor: what its operator publishes does not decide the id
        assert_eq!(coop.anchor, "host:https://pds.one.example");
        assert_eq!(coop.operators, vec![("did:plc:oooooooooooooooooooooooo".to_owned(), "Example Co-op".to_owned())]);
    }

    #[test]
    fn a_declared_name_that_reads_as_another_instances_domain_is_refused() {
        let op = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
        let declared = |endpoint: &str, name: &str| {
            let mut x = h(endpoint, &[]);
            x.declared_by = vec![(op.into(), name.into())];
            x
        };
        for (name, imitates) in [
            ("Victim Social (official)", Some("victim.social")),
            ("victimsocial HQ", Some("victim.social")),
            // Cyrillic і and a zero, folded to their skeletons
            ("V\u{456}ctim S0cial", Some("victim.social")),
            ("Official bsky.social support", Some("bsky.social")),
            ("Cool Social", None),
            ("Totally Victim Sites", None),
            ("Totally PDS A", Some("pds-a.test")),
            ("Blacksky Official", Some("blacksky.app")),
            // its own domain never refuses its name
            ("Attacker Net Community", None),
        ] {
            let hosts = vec![
                h("https://pds.victim.social", &[".victim.social"]),
                h("https://bsky.social", &[".bsky.social"]),
                h("https://pds-a.test", &[".pds-a.test"]),
                h("https://blacksky.app", &[".blacksky.app"]),
                declared("https://pds.attacker.net", name),
            ];
            let out = cluster(&hosts);
            let mine = out.iter().find(|i| i.hosts == ["https://pds.attacker.net"]).unwrap();
            match imitates {
                Some(mark) => {
                    assert_eq!(mine.name, "attacker.net", "{name}: falls back to its proven name");
                    let (refused, why) = mine.name_refused.clone().expect(name);
                    assert_eq!(refused, name);
                    assert!(why.contains(mark), "{name}: {why}");
                }
                None => assert_eq!((mine.name.as_str(), &mine.name_refused), (name, &None), "{name}"),
            }
            // the operator is still named beside it: the name is refused, not the declaration
            assert_eq!(mine.operators[0].0, op);
        }
        // a pinned name is imitated too
        let o =
            overrides::Overrides::parse("[[pin]]\nname = \"Bluesky\"\nhosts = [\"https://bsky.social\"]\n").unwrap();
        let out =
            cluster_with(&[h("https://bsky.social", &[]), declared("https://pds.attacker.net", "Bluesky Support")], &o);
        let mine = out.iter().find(|i| i.hosts == ["https://pds.attacker.net"]).unwrap();
        assert_eq!(mine.name, "attacker.net");
    }

    #[test]
    fn two_operators_declaring_one_instance_are_a_conflict_with_no_declared_name() {
        let mut a = h("https://pds.one.example", &[".shared.example"]);
        let mut b = h("https://pds.two.example", &[".shared.example"]);
        a.declared_by = vec![("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into(), "A's Instance".into())];
        b.declared_by = vec![("did:plc:zzzzzzzzzzzzzzzzzzzzzzzz".into(), "Z's Instance".into())];
        let out = cluster(&[a, b]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].operators.len(), 2, "both sides shown");
        // no order of DIDs breaks the tie: neither name is taken
        assert_eq!(out[0].name, "shared.example");
    }

    #[test]
    fn a_merge_keeps_the_id_of_the_instance_with_more_members_and_a_split_the_larger_part() {
        let big = "https://pds.big.example";
        let small = "https://pds.small.example";
        let previous = Previous {
            ids: [(big.to_owned(), "inst_big".to_owned()), (small.to_owned(), "inst_small".to_owned())].into(),
            weight: [(big.to_owned(), 1000), (small.to_owned(), 3)].into(),
        };
        // a user domain now links them: the merged instance keeps the larger's id
        let linked = [h(big, &[".z.example"]), h(small, &[".z.example"])];
        let out = cluster_keeping(&linked, &Default::default(), &previous);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, "inst_big");
        // whichever host sorts first, and whatever the anchor says
        let previous = Previous {
            ids: [(big.to_owned(), "inst_m".to_owned()), (small.to_owned(), "inst_m".to_owned())].into(),
            weight: [(big.to_owned(), 1000), (small.to_owned(), 3)].into(),
        };
        // the link goes: the part with more of its members keeps the id, the other gets a new one
        let out = cluster_keeping(&[h(big, &[]), h(small, &[])], &Default::default(), &previous);
        let id_of = |host: &str| out.iter().find(|i| i.hosts.contains(&host.to_owned())).unwrap().id.clone();
        assert_eq!(id_of(big), "inst_m");
        assert_ne!(id_of(small), "inst_m");
        assert_eq!(id_of(small), instance_id("host:https://pds.small.example"));
        // a stranger's host joining brings no members: the id stays
        let previous =
            Previous { ids: [(big.to_owned(), "inst_big".to_owned())].into(), weight: [(big.to_owned(), 1000)].into() };
        let out = cluster_keeping(
            &[h(big, &[".z.example"]), h("https://a.stranger.example", &[".z.example"])],
            &Default::default(),
            &previous,
        );
        assert_eq!(out[0].id, "inst_big");
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

    #[test]
    fn host_name_of_an_ipv6_endpoint_is_its_address() {
        let name = |e: &str| {
            let (n, alone) = host_name(e);
            (n.to_string(), alone)
        };
        assert_eq!(name("https://[2001:db8::1]"), ("[2001:db8::1]".to_owned(), true));
        assert_eq!(name("https://[2001:db8::1]:8443"), ("[2001:db8::1]".to_owned(), true));
        assert_eq!(name("https://pds.example.com:8443"), ("pds.example.com".to_owned(), true));
    }

    #[test]
    fn instance_names_are_unique_across_ports_and_schemes() {
        let hosts = vec![
            h("http://localhost:2583", &[]),
            h("http://localhost:2584", &[]),
            h("https://localhost:2583", &[]),
            h("https://203.0.113.5", &[]),
            h("http://203.0.113.5", &[]),
            h("https://203.0.113.5:8443", &[]),
            h("https://[2001:db8::1]", &[]),
            h("https://[2001:db8::1]:8443", &[]),
        ];
        let out = cluster(&hosts);
        let names: BTreeMap<&str, &str> = out.iter().map(|i| (i.hosts[0].as_str(), i.name.as_str())).collect();
        assert_eq!(
            names,
            BTreeMap::from([
                ("http://localhost:2583", "localhost:2583 (http)"),
                ("https://localhost:2583", "localhost:2583 (https)"),
                ("http://localhost:2584", "localhost:2584"),
                ("https://203.0.113.5", "203.0.113.5"),
                ("http://203.0.113.5", "203.0.113.5 (http)"),
                ("https://203.0.113.5:8443", "203.0.113.5:8443"),
                ("https://[2001:db8::1]", "[2001:db8::1]"),
                ("https://[2001:db8::1]:8443", "[2001:db8::1]:8443"),
            ])
        );
    }

    #[test]
    fn instance_names_are_unique_when_declarations_or_domains_share_one() {
        let decl = |e: &str, op: &str, name: &str| HostFacts {
            declared_by: vec![(op.to_owned(), name.to_owned())],
            ..h(e, &[])
        };
        let hosts = vec![
            decl("https://pds.one.example", "did:plc:oooooooooooooooooooooooo", "Example Co-op"),
            decl("https://pds.two.example", "did:plc:tttttttttttttttttttttttt", "Example Co-op"),
            // a declaration naming itself after someone else's domain does
            // not take it, nor keep it with its DID beside: it is refused
            decl("https://pds.evil.example", "did:plc:eeeeeeeeeeeeeeeeeeeeeeee", "bsky.social"),
            h("https://a.host.bsky.network", &[".bsky.social"]),
            // hosts under one domain, and hosts elsewhere offering handles under it
            h("https://pds.example.com", &[]),
            h("https://pds.other.net", &[".example.com"]),
        ];
        let out = cluster(&hosts);
        let names: BTreeMap<&str, &str> = out.iter().map(|i| (i.hosts[0].as_str(), i.name.as_str())).collect();
        assert_eq!(
            names,
            BTreeMap::from([
                ("https://pds.one.example", "Example Co-op (did:plc:oooooooooooooooooooooooo)"),
                ("https://pds.two.example", "Example Co-op (did:plc:tttttttttttttttttttttttt)"),
                ("https://pds.evil.example", "pds.evil.example"),
                ("https://a.host.bsky.network", "bsky.social"),
                ("https://pds.example.com", "example.com"),
                ("https://pds.other.net", "example.com (other.net)"),
            ])
        );
        let mut rev = hosts.clone();
        rev.reverse();
        assert_eq!(cluster(&rev), out, "names do not depend on the order of the facts");
    }
}
