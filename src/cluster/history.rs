//! History queries over the map's dated contributions: where an account was
//! as of a time, instance sizes as of a day, migration flows between
//! instances per day, and growth per instance per day.
//!
//! Accounts' hosts are dated by the data (PLC operation times, resolution
//! times); hosts are grouped into instances by the *current* map, so a
//! growth curve is that of the instance as it is defined today. Host
//! regroupings themselves are dated rows in `host_moves`.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::store::map::MapReader;
use crate::store::records::HostMove;
use crate::store::{self};

/// Host → instance id under the current map.
pub fn host_instances(store: &impl MapReader) -> store::Result<HashMap<String, String>> {
    store.host_instances()
}

/// Where an account was at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountAt {
    pub did: String,
    pub at: String,
    /// Its host then (`None`: not yet created, or gone).
    pub host: Option<String>,
    /// That host's instance under the current map.
    pub instance: Option<String>,
}

/// An account's host and instance as of `at_ms`.
pub fn account_as_of(store: &impl MapReader, did: &str, at_ms: i64) -> store::Result<Option<AccountAt>> {
    let Some(a) = store.assignment(did)? else { return Ok(None) };
    let host = a.timeline.iter().take_while(|(t, _)| *t <= at_ms).last().and_then(|(_, h)| h.clone());
    let instance = match &host {
        Some(h) => store.instance_id_of_host(h)?,
        None => None,
    };
    Ok(Some(AccountAt { did: did.to_owned(), at: crate::clock::rfc3339_ms(at_ms).unwrap_or_default(), host, instance }))
}

/// Registered accounts per instance at the end of `day` (`YYYY-MM-DD`),
/// from the dated joins and leaves; hosts not in the map count under "".
pub fn sizes_as_of(store: &impl MapReader, day: &str) -> store::Result<BTreeMap<String, i64>> {
    let hi = store.host_instances()?;
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    store.day_counts("", day, &mut |_, host, n| {
        *out.entry(hi.get(host).cloned().unwrap_or_default()).or_default() += n;
    })?;
    out.retain(|_, n| *n != 0);
    Ok(out)
}

/// One migration flow: accounts moving between two instances on a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    pub day: String,
    pub from: String,
    pub to: String,
    pub accounts: i64,
}

/// Migration flows between instances on the days `from..=to` (moves
/// between hosts of one instance are left out; hosts not in the map show
/// as "").
pub fn flows(store: &impl MapReader, from: &str, to: &str) -> store::Result<Vec<Flow>> {
    let hi = store.host_instances()?;
    let mut agg: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    store.flow_counts(from, to, &mut |d, a, b, n| {
        let (ia, ib) = (hi.get(a).cloned().unwrap_or_default(), hi.get(b).cloned().unwrap_or_default());
        if ia != ib {
            *agg.entry((d.to_owned(), ia, ib)).or_default() += n;
        }
    })?;
    Ok(agg
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|((day, from, to), accounts)| Flow { day, from, to, accounts })
        .collect())
}

/// One day of an instance's growth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrowthDay {
    pub day: String,
    /// Joins minus leaves that day.
    pub net: i64,
    /// Registered accounts at the end of the day.
    pub total: i64,
}

/// Growth per day of one instance (days with a change only), up to `to`.
pub fn growth(store: &impl MapReader, instance: &str, to: &str) -> store::Result<Vec<GrowthDay>> {
    let hi = store.host_instances()?;
    let mut days: BTreeMap<String, i64> = BTreeMap::new();
    store.day_counts("", to, &mut |d, host, n| {
        if hi.get(host).map(String::as_str) == Some(instance) {
            *days.entry(d.to_owned()).or_default() += n;
        }
    })?;
    let mut total = 0;
    Ok(days
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|(day, net)| {
            total += net;
            GrowthDay { day, net, total }
        })
        .collect())
}

/// Hosts regrouped between instances since `since_ms`, oldest first.
pub fn host_moves(store: &impl MapReader, since_ms: i64) -> store::Result<Vec<(String, HostMove)>> {
    Ok(store
        .host_moves_since(since_ms)?
        .into_iter()
        .map(|(at, mv)| (crate::clock::rfc3339_ms(at).unwrap_or_default(), mv))
        .collect())
}
