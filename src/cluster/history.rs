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

use super::assign::key;
use super::map;
use crate::store::{self, Store, CF_HOST_INSTANCE, CF_HOST_MOVES, CF_MAP_COUNTS};

fn read_i64(b: &[u8]) -> i64 {
    b.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

/// Host → instance id under the current map.
pub fn host_instances(store: &Store) -> store::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for item in store.iter_cf(CF_HOST_INSTANCE) {
        let (k, v) = item?;
        out.insert(String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned());
    }
    Ok(out)
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
pub fn account_as_of(store: &Store, did: &str, at_ms: i64) -> store::Result<Option<AccountAt>> {
    let Some(a) = map::assignment(store, did)? else { return Ok(None) };
    let host = a.timeline.iter().take_while(|(t, _)| *t <= at_ms).last().and_then(|(_, h)| h.clone());
    let instance = match &host {
        Some(h) => map::instance_id_of_host(store, h)?,
        None => None,
    };
    Ok(Some(AccountAt { did: did.to_owned(), at: crate::clock::rfc3339_ms(at_ms).unwrap_or_default(), host, instance }))
}

/// Registered accounts per instance at the end of `day` (`YYYY-MM-DD`),
/// from the dated joins and leaves; hosts not in the map count under "".
pub fn sizes_as_of(store: &Store, day: &str) -> store::Result<BTreeMap<String, i64>> {
    let hi = host_instances(store)?;
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    for item in store.iter_prefix(CF_MAP_COUNTS, &key::prefix(key::DAY)) {
        let (k, v) = item?;
        let [d, host] = key::parts(&k)[..] else { continue };
        if d > day {
            break;
        }
        *out.entry(hi.get(host).cloned().unwrap_or_default()).or_default() += read_i64(&v);
    }
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
pub fn flows(store: &Store, from: &str, to: &str) -> store::Result<Vec<Flow>> {
    let hi = host_instances(store)?;
    let mut agg: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let start = [&key::prefix(key::FLOW)[..], from.as_bytes()].concat();
    let prefix = key::prefix(key::FLOW);
    for item in store.iter_from(CF_MAP_COUNTS, &start) {
        let (k, v) = item?;
        if !k.starts_with(&prefix) {
            break;
        }
        let [d, a, b] = key::parts(&k)[..] else { continue };
        if d > to {
            break;
        }
        let (ia, ib) = (hi.get(a).cloned().unwrap_or_default(), hi.get(b).cloned().unwrap_or_default());
        if ia != ib {
            *agg.entry((d.to_owned(), ia, ib)).or_default() += read_i64(&v);
        }
    }
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
pub fn growth(store: &Store, instance: &str, to: &str) -> store::Result<Vec<GrowthDay>> {
    let hi = host_instances(store)?;
    let mut days: BTreeMap<String, i64> = BTreeMap::new();
    for item in store.iter_prefix(CF_MAP_COUNTS, &key::prefix(key::DAY)) {
        let (k, v) = item?;
        let [d, host] = key::parts(&k)[..] else { continue };
        if d > to {
            break;
        }
        if hi.get(host).map(String::as_str) == Some(instance) {
            *days.entry(d.to_owned()).or_default() += read_i64(&v);
        }
    }
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
pub fn host_moves(store: &Store, since_ms: i64) -> store::Result<Vec<(String, map::HostMove)>> {
    let start = map::host_move_key(since_ms, "");
    let mut out = Vec::new();
    for item in store.iter_from(CF_HOST_MOVES, &start) {
        let (k, v) = item?;
        let t: [u8; 8] = k[..8].try_into().unwrap_or_default();
        let at = (u64::from_be_bytes(t) ^ (1 << 63)) as i64;
        out.push((crate::clock::rfc3339_ms(at).unwrap_or_default(), store::from_cbor(CF_HOST_MOVES, &v)?));
    }
    Ok(out)
}
