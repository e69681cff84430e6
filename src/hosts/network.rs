//! Where hosts run: each host's addresses (kept by the crawler) mapped to
//! its network operator (ASN and organisation), its country, and whether a
//! CDN fronts it, from MaxMind-format databases the user supplies
//! (`--mmdb PATH`, repeatable: GeoLite2 or DB-IP lite ASN and country
//! files, or IPinfo lite, which has both). Without a database the feature
//! is off and says so.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Networks whose ASN marks a host as fronted by a CDN (the address is the
/// CDN's, not the operator's): a small built-in list.
pub const CDNS: &[(u32, &str)] = &[
    (13335, "Cloudflare"),
    (209242, "Cloudflare"),
    (54113, "Fastly"),
    (20940, "Akamai"),
    (16625, "Akamai"),
    (12222, "Akamai"),
    (60068, "CDN77"),
    (15133, "Edgio"),
    (22822, "Edgio"),
    (30081, "CacheNetworks"),
];

/// One database's record, read leniently: the fields of the GeoLite2 /
/// DB-IP ASN and country layouts and of IPinfo lite's flat one.
#[derive(Debug, Default, Deserialize)]
struct AnyRecord {
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<String>,
    country: Option<Country>,
    registered_country: Option<Country>,
    /// IPinfo lite: `AS13335`.
    asn: Option<String>,
    as_name: Option<String>,
    country_code: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Country {
    iso_code: Option<String>,
}

/// Where one address is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub asn: Option<u32>,
    pub organisation: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// The CDN fronting it, when its network is one of [`CDNS`].
    pub cdn: Option<&'static str>,
}

impl Placement {
    /// The network operator as one label: `AS64500 Example Hosting Ltd`.
    pub fn network(&self) -> Option<String> {
        match (self.asn, &self.organisation) {
            (Some(n), Some(o)) => Some(format!("AS{n} {o}")),
            (Some(n), None) => Some(format!("AS{n}")),
            (None, Some(o)) => Some(o.clone()),
            (None, None) => None,
        }
    }
}

/// The opened databases.
pub struct Networks {
    readers: Vec<(PathBuf, String, maxminddb::Reader<Vec<u8>>)>,
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.readers.iter().map(|(p, t, _)| (p, t))).finish()
    }
}

impl Networks {
    /// Opens every database; an error names the file that failed.
    pub fn open(paths: &[PathBuf]) -> Result<Networks, String> {
        let mut readers = Vec::new();
        for p in paths {
            let r = maxminddb::Reader::open_readfile(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let kind = r.metadata.database_type.clone();
            readers.push((p.clone(), kind, r));
        }
        Ok(Networks { readers })
    }

    /// The databases: `(path, database type)`.
    pub fn databases(&self) -> Vec<(&Path, &str)> {
        self.readers.iter().map(|(p, t, _)| (p.as_path(), t.as_str())).collect()
    }

    /// Where `ip` is, by every database (the first to answer each field).
    pub fn place(&self, ip: IpAddr) -> Placement {
        let mut out = Placement::default();
        for (_, _, r) in &self.readers {
            let Ok(Some(rec)) = r.lookup::<AnyRecord>(ip) else { continue };
            let asn = rec
                .autonomous_system_number
                .or_else(|| rec.asn.as_deref().and_then(|a| a.trim_start_matches("AS").parse().ok()));
            out.asn = out.asn.or(asn);
            out.organisation = out.organisation.or(rec.autonomous_system_organization.or(rec.as_name));
            let cc = rec
                .country
                .and_then(|c| c.iso_code)
                .or(rec.country_code)
                .or_else(|| rec.registered_country.and_then(|c| c.iso_code));
            out.country = out.country.or(cc.filter(|c| c.len() <= 8));
        }
        out.organisation = out.organisation.map(|o| o.chars().take(128).collect());
        out.cdn = out.asn.and_then(|n| CDNS.iter().find(|(a, _)| *a == n).map(|(_, name)| *name));
        out
    }

    /// Where a host is: its first address that a database knows.
    pub fn place_host(&self, addresses: &[String]) -> Option<Placement> {
        addresses
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .map(|ip| self.place(ip))
            .find(|p| p.asn.is_some() || p.country.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mmdb").join(name)
    }

    #[test]
    fn the_three_layouts_place_an_address_alike() {
        let split = Networks::open(&[fixture("test-asn.mmdb"), fixture("test-country.mmdb")]).unwrap();
        let lite = Networks::open(&[fixture("test-ipinfo-lite.mmdb")]).unwrap();
        for n in [&split, &lite] {
            let p = n.place("192.0.2.7".parse().unwrap());
            assert_eq!(p.network().as_deref(), Some("AS64500 Example Hosting Ltd"), "{n:?}");
            assert_eq!(p.country.as_deref(), Some("NZ"));
            assert_eq!(p.cdn, None);
            let p = n.place("198.51.100.1".parse().unwrap());
            assert_eq!((p.asn, p.cdn, p.country.as_deref()), (Some(13335), Some("Cloudflare"), Some("US")));
            assert_eq!(n.place("2001:db8::5".parse().unwrap()).asn, Some(64500));
            assert_eq!(n.place("10.0.0.1".parse().unwrap()), Placement::default());
        }
        assert_eq!(split.databases()[0].1, "GeoLite2-ASN");
        let err = Networks::open(&[fixture("README.md")]).unwrap_err();
        assert!(err.contains("README.md"), "{err}");
    }
}
