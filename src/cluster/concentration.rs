//! How concentrated the map is: the Herfindahl–Hirschman index and the
//! top shares, over instances and over hosts; the map's gauges.

use std::collections::HashMap;

use serde::Serialize;

use super::assign;
use crate::store::{self, map::MapReader};

/// How concentrated accounts are over a set of groups.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Concentration {
    pub groups: usize,
    pub accounts: i64,
    /// Herfindahl–Hirschman index, 0..1 (×10,000 for the antitrust scale).
    pub hhi: f64,
    /// Share of accounts in the largest 1, 5 and 10 groups.
    pub top1_share: f64,
    pub top5_share: f64,
    pub top10_share: f64,
    /// Accounts of the 10 largest groups, largest first.
    pub top: Vec<i64>,
}

/// The concentration of `sizes`.
pub fn concentration(mut sizes: Vec<i64>) -> Concentration {
    sizes.retain(|n| *n > 0);
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let total: i64 = sizes.iter().sum();
    let share = |n: usize| if total == 0 { 0.0 } else { sizes.iter().take(n).sum::<i64>() as f64 / total as f64 };
    let hhi = if total == 0 { 0.0 } else { sizes.iter().map(|n| (*n as f64 / total as f64).powi(2)).sum() };
    Concentration {
        groups: sizes.len(),
        accounts: total,
        hhi,
        top1_share: share(1),
        top5_share: share(5),
        top10_share: share(10),
        top: sizes.iter().take(10).copied().collect(),
    }
}

/// Concentration over instances and over hosts (registered members).
pub fn concentrations(store: &impl MapReader) -> store::Result<(Concentration, Concentration)> {
    let members = store.host_members()?;
    let host_instance = store.host_instances()?;
    let mut by_instance: HashMap<&str, i64> = HashMap::new();
    let mut by_host = Vec::new();
    for (h, m) in &members {
        let n = m.get(assign::bucket::REGISTERED).copied().unwrap_or(0);
        by_host.push(n);
        let inst = host_instance.get(h).map_or("", String::as_str);
        *by_instance.entry(inst).or_default() += n;
    }
    Ok((concentration(by_instance.into_values().collect()), concentration(by_host)))
}

/// Sets the map's gauges from the store.
pub fn publish_gauges(store: &impl MapReader) -> store::Result<()> {
    use crate::metrics as m;
    let (inst, host) = concentrations(store)?;
    m::MAP_INSTANCES.set(store.instance_count()? as i64);
    m::MAP_ACCOUNTS.with_label_values(&["assigned"]).set(inst.accounts);
    let states = store.unassigned()?;
    for st in ["deleted", "no_pds", "unresolved"] {
        m::MAP_ACCOUNTS.with_label_values(&[st]).set(states.get(st).copied().unwrap_or(0));
    }
    let unclustered = {
        let members = store.host_members()?;
        let host_instance = store.host_instances()?;
        let mut n = 0;
        for (h, b) in members {
            if !host_instance.contains_key(&h) {
                n += b.get(assign::bucket::REGISTERED).copied().unwrap_or(0);
            }
        }
        n
    };
    m::MAP_ACCOUNTS.with_label_values(&["unclustered"]).set(unclustered);
    for r in 1..=10usize {
        m::MAP_TOP_ACCOUNTS.with_label_values(&[&r.to_string()]).set(inst.top.get(r - 1).copied().unwrap_or(0));
    }
    for (over, c) in [("instances", &inst), ("hosts", &host)] {
        m::MAP_HHI.with_label_values(&[over]).set(c.hhi);
        for (n, v) in [("1", c.top1_share), ("5", c.top5_share), ("10", c.top10_share)] {
            m::MAP_TOP_SHARE.with_label_values(&[over, n]).set(v);
        }
    }
    Ok(())
}
