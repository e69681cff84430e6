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
    /// The Gini coefficient of the sizes, 0 (all equal) to nearly 1.
    pub gini: f64,
    /// The Lorenz curve: `[share of groups, share of accounts]`, groups
    /// smallest first, at every twentieth of the groups (21 points from
    /// `[0, 0]` to `[1, 1]`; empty without accounts).
    pub lorenz: Vec<[f64; 2]>,
}

/// Points of the Lorenz curve past `[0, 0]`.
pub const LORENZ_STEPS: usize = 20;

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
        gini: gini(&sizes, total),
        lorenz: lorenz(&sizes, total),
    }
}

/// The Gini coefficient of `sizes` (largest first) summing to `total`.
fn gini(sizes: &[i64], total: i64) -> f64 {
    let n = sizes.len();
    if n == 0 || total == 0 {
        return 0.0;
    }
    // ascending rank i (1-based): G = (2 Σ i·x_i) / (n Σ x) − (n + 1) / n
    let weighted: f64 = sizes.iter().rev().enumerate().map(|(i, x)| (i as f64 + 1.0) * *x as f64).sum();
    (2.0 * weighted) / (n as f64 * total as f64) - (n as f64 + 1.0) / n as f64
}

/// The Lorenz curve of `sizes` (largest first) at every
/// 1/[`LORENZ_STEPS`] of the groups.
fn lorenz(sizes: &[i64], total: i64) -> Vec<[f64; 2]> {
    let n = sizes.len();
    if n == 0 || total == 0 {
        return Vec::new();
    }
    // cumulative sums, smallest first
    let mut cum = Vec::with_capacity(n + 1);
    cum.push(0i64);
    for x in sizes.iter().rev() {
        cum.push(cum.last().copied().unwrap_or(0) + x);
    }
    (0..=LORENZ_STEPS)
        .map(|k| {
            let x = k as f64 / LORENZ_STEPS as f64;
            // the curve between whole groups is linear
            let pos = x * n as f64;
            let (i, frac) = (pos.floor() as usize, pos.fract());
            let lo = cum[i.min(n)] as f64;
            let hi = cum[(i + 1).min(n)] as f64;
            [x, (lo + (hi - lo) * frac) / total as f64]
        })
        .collect()
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

/// Accounts by where their hosts run: network operator and country, from
/// the `--mmdb` databases.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkView {
    pub networks: Concentration,
    pub countries: Concentration,
    /// The largest network operators and countries: `(name, accounts)`.
    pub top_networks: Vec<(String, i64)>,
    pub top_countries: Vec<(String, i64)>,
    /// Accounts on hosts a CDN fronts (their address is the CDN's), by CDN.
    pub cdn_fronted: std::collections::BTreeMap<String, i64>,
    /// Accounts on hosts no database places (no address known yet, or
    /// none the databases know).
    pub unplaced: i64,
}

/// Concentration over network operators and countries (registered members
/// of each host, placed by its first known address); sets the gauges
/// (`over` = `networks`, `countries`).
pub fn by_network(
    store: &(impl MapReader + crate::store::StoreReader),
    networks: &crate::hosts::network::Networks,
) -> store::Result<NetworkView> {
    let members = store.host_members()?;
    let hosts: HashMap<String, Vec<String>> = store.hosts()?.into_iter().map(|(h, r)| (h, r.addresses)).collect();
    let (mut by_net, mut by_country): (HashMap<String, i64>, HashMap<String, i64>) = Default::default();
    let mut view = NetworkView::default();
    for (h, m) in &members {
        let n = m.get(assign::bucket::REGISTERED).copied().unwrap_or(0);
        if n <= 0 {
            continue;
        }
        let Some(p) = hosts.get(h).and_then(|a| networks.place_host(a)) else {
            view.unplaced += n;
            continue;
        };
        *by_net.entry(p.network().unwrap_or_else(|| "(unknown network)".into())).or_default() += n;
        *by_country.entry(p.country.clone().unwrap_or_else(|| "(unknown country)".into())).or_default() += n;
        if let Some(cdn) = p.cdn {
            *view.cdn_fronted.entry(cdn.to_owned()).or_default() += n;
        }
    }
    let top = |m: &HashMap<String, i64>| {
        let mut v: Vec<(String, i64)> = m.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(10);
        v
    };
    view.top_networks = top(&by_net);
    view.top_countries = top(&by_country);
    view.networks = concentration(by_net.into_values().collect());
    view.countries = concentration(by_country.into_values().collect());
    use crate::metrics as m;
    for (over, c) in [("networks", &view.networks), ("countries", &view.countries)] {
        m::MAP_HHI.with_label_values(&[over]).set(c.hhi);
        for (n, v) in [("1", c.top1_share), ("5", c.top5_share), ("10", c.top10_share)] {
            m::MAP_TOP_SHARE.with_label_values(&[over, n]).set(v);
        }
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_groups_have_no_inequality_and_a_straight_lorenz_curve() {
        let c = concentration(vec![5; 40]);
        assert!(c.gini.abs() < 1e-9, "{}", c.gini);
        assert_eq!(c.lorenz.len(), LORENZ_STEPS + 1);
        for [x, y] in &c.lorenz {
            assert!((x - y).abs() < 1e-9, "{x} {y}");
        }
    }

    #[test]
    fn gini_and_lorenz_of_two_unequal_groups() {
        let c = concentration(vec![3, 1, 0]);
        assert!((c.gini - 0.25).abs() < 1e-9, "{}", c.gini);
        // halfway through the groups (the smaller one): a quarter of the accounts
        let mid = c.lorenz[LORENZ_STEPS / 2];
        assert!((mid[0] - 0.5).abs() < 1e-9 && (mid[1] - 0.25).abs() < 1e-9, "{mid:?}");
        assert_eq!(c.lorenz.first(), Some(&[0.0, 0.0]));
        assert_eq!(c.lorenz.last(), Some(&[1.0, 1.0]));
        // never above the diagonal, never falling
        for w in c.lorenz.windows(2) {
            assert!(w[1][1] >= w[0][1] && w[1][1] <= w[1][0] + 1e-9, "{w:?}");
        }
    }

    #[test]
    fn no_accounts_no_curve() {
        let c = concentration(vec![0, 0]);
        assert!(c.lorenz.is_empty());
        assert_eq!(c.gini, 0.0);
    }
}
