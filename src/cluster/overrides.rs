//! Operator overrides for the cases evidence gets wrong, from a TOML file:
//!
//! ```toml
//! # join these hosts into one instance (and name it)
//! [[pin]]
//! name = "Example Network"
//! hosts = ["https://pds.example.com", "https://pds.example-cdn.net"]
//!
//! # this host stands alone, whatever links it to others
//! [[split]]
//! host = "https://pds.shared-hosting.example"
//! ```
//!
//! Hosts are normalised like every endpoint. Each override shows in the
//! instance's evidence.

use serde::{Deserialize, Serialize};

/// One pin: hosts to join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    #[serde(default)]
    pub name: Option<String>,
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub host: String,
}

/// The overrides file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default)]
    pub pin: Vec<Pin>,
    #[serde(default)]
    pub split: Vec<Split>,
}

#[derive(Debug, thiserror::Error)]
pub enum OverridesError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{host:?}: {why}")]
    Host { host: String, why: &'static str },
}

impl Overrides {
    /// Parses and normalises an overrides file's text.
    pub fn parse(text: &str) -> Result<Overrides, OverridesError> {
        let mut o: Overrides = toml::from_str(text)?;
        let norm = |h: &str| {
            let url = if h.contains("://") { h.to_owned() } else { format!("https://{h}") };
            crate::identity::did::normalize_endpoint(&url)
                .map_err(|why| OverridesError::Host { host: h.to_owned(), why })
        };
        for p in &mut o.pin {
            for h in &mut p.hosts {
                *h = norm(h)?;
            }
        }
        for s in &mut o.split {
            s.host = norm(&s.host)?;
        }
        Ok(o)
    }

    /// The pin (and its index) a host is in, if any.
    pub fn pin_of(&self, host: &str) -> Option<(usize, &Pin)> {
        self.pin.iter().enumerate().find(|(_, p)| p.hosts.iter().any(|h| h == host))
    }

    pub fn is_split(&self, host: &str) -> bool {
        self.split.iter().any(|s| s.host == host)
    }
}

/// Where the overrides in force are kept (`meta`, CBOR).
const KEY: crate::store::MetaKey = crate::store::MetaKey::Overrides;

/// The overrides the map is built with: `given` (a file named on this
/// command's line, kept in the store from now on), else the ones last given
/// to any command, so a command that updates the map without `--overrides`
/// (replay, backfill-plc, crawl-hosts) does not undo an operator's pins.
/// An empty file clears them.
pub fn in_force(store: &impl crate::store::StoreWriter, given: Option<Overrides>) -> crate::store::Result<Overrides> {
    match given {
        Some(o) => {
            let mut b = crate::store::Batch::default();
            b.put_meta(KEY, crate::store::to_cbor(&o));
            store.commit(b)?;
            Ok(o)
        }
        None => match store.meta(KEY)? {
            Some(b) => crate::store::from_cbor("meta", &b),
            None => Ok(Overrides::default()),
        },
    }
}
