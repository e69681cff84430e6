//! `instancemap stats`: what the database holds, as text or as one JSON
//! object (the shape is documented in the README and kept stable).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::event::STORED_COLLECTIONS;
use crate::store::{self, counter, Store};

/// The `stats --json` object.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Last seq applied, by source (relay endpoint or replay name).
    pub cursors: BTreeMap<String, i64>,
    /// Frames applied, by type (`#commit`, `#sync`, `#identity`, `#account`,
    /// `#info`, `error`, `deprecated`, `unknown`). Duplicates and rejected
    /// frames are not here (see `dropped` and `errors`).
    pub frames: BTreeMap<String, i64>,
    /// Record operations, by action.
    pub ops: BTreeMap<String, i64>,
    /// Record operations by collection, then action.
    pub collections: BTreeMap<String, BTreeMap<String, i64>>,
    pub accounts: Accounts,
    /// `#account` events, by status label.
    pub account_events: BTreeMap<String, i64>,
    /// Frames rejected by the decoder, by reason.
    pub errors: BTreeMap<String, i64>,
    /// Events not applied, by reason (`duplicate`, `rejected`, `deprecated`,
    /// `unknown_type`, `info`, `error_frame`).
    pub dropped: BTreeMap<String, i64>,
    /// Commit and `#sync` signature checks by result: `valid`,
    /// `valid_prior_key` (by a key since rotated away, the event claiming a
    /// time before the rotation), `no_key` (applied, unverified),
    /// `not_checked` (verification off), or the failure reason
    /// (`sig_invalid`, `sig_high_s`, `sig_length`, `sig_malformed`: not applied).
    pub signatures: BTreeMap<String, i64>,
    /// `#info` frames by name; error frames by error.
    pub info: BTreeMap<String, i64>,
    pub error_frames: BTreeMap<String, i64>,
    /// Create/update ops whose record block was missing from the slice.
    pub record_blocks_missing: i64,
    /// Kept records, by collection.
    pub records: BTreeMap<String, i64>,
    /// Records of the project's own collections refused by their lexicon,
    /// by `<collection>/<reason>` (not stored).
    pub invalid_records: BTreeMap<String, i64>,
    /// The instance map.
    pub map: MapStats,
}

/// The map in figures.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct MapStats {
    pub instances: u64,
    /// Known hosts by crawl state.
    pub hosts: BTreeMap<String, i64>,
    /// Accounts by map state: `assigned`, or `deleted`, `no_pds`, `unresolved`.
    pub accounts: BTreeMap<String, i64>,
    /// Accounts marked for the maintainer and not yet taken.
    pub pending: u64,
    /// Whether the map has taken in everything the database holds, and
    /// what it has yet to (`note` says it in words when it has not).
    pub current: bool,
    pub freshness: crate::cluster::map::Freshness,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Declarations by outcome (`verified`: at least one host verified).
    pub declarations: BTreeMap<String, i64>,
    /// Migrations recorded.
    pub moves: u64,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Accounts {
    pub total: i64,
    /// By current status label: `active`, `inactive`, `unknown` (no
    /// `#account` seen yet), or a lexicon status value.
    pub by_status: BTreeMap<String, i64>,
}

impl Stats {
    /// Reads the figures from the store.
    pub fn read(store: &Store) -> store::Result<Stats> {
        let mut s = Stats { cursors: store.cursors()?, ..Stats::default() };
        for (key, v) in store.counters()? {
            let Some((group, label)) = key.split_once('/') else { continue };
            let label = label.to_owned();
            match group {
                counter::FRAME => _ = s.frames.insert(label, v),
                counter::OP => _ = s.ops.insert(label, v),
                counter::COLLECTION => {
                    if let Some((coll, action)) = label.rsplit_once('/') {
                        s.collections.entry(coll.to_owned()).or_default().insert(action.to_owned(), v);
                    }
                }
                counter::ERROR => _ = s.errors.insert(label, v),
                counter::DROPPED => _ = s.dropped.insert(label, v),
                counter::STATUS if v != 0 => _ = s.accounts.by_status.insert(label, v),
                counter::ACCOUNT_EVENT => _ = s.account_events.insert(label, v),
                counter::INFO => _ = s.info.insert(label, v),
                counter::SIGNATURE => _ = s.signatures.insert(label, v),
                counter::INVALID_RECORD => _ = s.invalid_records.insert(label, v),
                counter::ERROR_FRAME => _ = s.error_frames.insert(label, v),
                counter::TOTAL => match label.as_str() {
                    "accounts" => s.accounts.total = v,
                    "record_blocks_missing" => s.record_blocks_missing = v,
                    _ => {}
                },
                _ => {}
            }
        }
        for c in STORED_COLLECTIONS {
            s.records.insert((*c).to_owned(), store.records(c)?.len() as i64);
        }
        s.map = MapStats::read(store)?;
        Ok(s)
    }

    /// Human-readable text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let section = |out: &mut String, title: &str, m: &BTreeMap<String, i64>| {
            let _ = writeln!(out, "{title}:");
            if m.is_empty() {
                let _ = writeln!(out, "  (none)");
            }
            for (k, v) in m {
                let _ = writeln!(out, "  {k:<40} {v:>14}");
            }
        };
        section(&mut out, "cursors", &self.cursors);
        section(&mut out, "frames by type", &self.frames);
        section(&mut out, "ops by action", &self.ops);
        let _ = writeln!(out, "accounts: {}", self.accounts.total);
        section(&mut out, "accounts by status", &self.accounts.by_status);
        section(&mut out, "#account events by status", &self.account_events);
        section(&mut out, "errors by reason", &self.errors);
        section(&mut out, "dropped by reason", &self.dropped);
        section(&mut out, "commit signatures", &self.signatures);
        section(&mut out, "#info by name", &self.info);
        section(&mut out, "error frames", &self.error_frames);
        let _ = writeln!(out, "record blocks missing: {}", self.record_blocks_missing);
        section(&mut out, "records kept", &self.records);
        let _ = writeln!(out, "ops by collection:");
        for (c, m) in &self.collections {
            let parts: Vec<String> = m.iter().map(|(a, n)| format!("{a} {n}")).collect();
            let _ = writeln!(out, "  {c:<40} {}", parts.join(", "));
        }
        let _ = writeln!(
            out,
            "map: {} instances, {} moves, {} accounts pending",
            self.map.instances, self.map.moves, self.map.pending
        );
        if let Some(n) = &self.map.note {
            let _ = writeln!(out, "map: {n}");
        }
        section(&mut out, "map accounts by state", &self.map.accounts);
        section(&mut out, "hosts by state", &self.map.hosts);
        section(&mut out, "declarations", &self.map.declarations);
        out
    }
}

impl MapStats {
    pub fn read(store: &Store) -> store::Result<MapStats> {
        use crate::store::map::MapReader;
        let mut m = MapStats { instances: store.instance_count()?, moves: store.move_count()?, ..MapStats::default() };
        m.freshness = crate::cluster::map::freshness(store)?;
        m.pending = m.freshness.pending_accounts;
        m.current = m.freshness.is_current();
        m.note = m.freshness.note();
        for (_, h) in crate::store::StoreReader::hosts(store)? {
            *m.hosts.entry(h.state).or_default() += 1;
        }
        let assigned: i64 = crate::cluster::map::host_members(store)?
            .values()
            .filter_map(|b| b.get(crate::cluster::assign::bucket::REGISTERED))
            .sum();
        if assigned > 0 {
            m.accounts.insert("assigned".into(), assigned);
        }
        m.accounts.extend(crate::cluster::map::unassigned(store)?);
        for d in store.declaration_statuses()? {
            let k = if d.verified_hosts.is_empty() { "unverified" } else { "verified" };
            *m.declarations.entry(k.into()).or_default() += 1;
        }
        Ok(m)
    }
}
