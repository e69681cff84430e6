//! Is an instance alive, and open to anyone? Accounts active on the
//! firehose in the last 1, 7 and 30 days (distinct and exact: each account
//! is counted at the day of its last event, see `store::map::CountKey::Active`),
//! accounts created per day (their PLC genesis operation named one of its
//! hosts), whether its hosts take sign-ups without an invite code or a
//! phone number (`describeServer`), and a sign-up spike signal: open
//! third-party PDSes have been spam targets (bluesky-social/pds#333).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::map::MapReader;
use crate::store::records::InstanceRecord;
use crate::store::{self, StoreReader};

/// Accounts created on a day at least this many, and
pub const SPIKE_MIN: i64 = 20;
/// at least this many times the median day of the 28 before, are a spike.
pub const SPIKE_FACTOR: i64 = 5;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// Distinct accounts with a firehose event today (UTC), in the last 7
    /// days, in the last 30 days.
    pub active1d: i64,
    pub active7d: i64,
    pub active30d: i64,
    /// Accounts created per day over the last 30 days (`YYYY-MM-DD`; days
    /// without any left out).
    pub created_per_day: BTreeMap<String, i64>,
    /// Hosts taking sign-ups with no invite code (`inviteCodeRequired`
    /// false), of those whose `describeServer` says.
    pub open_hosts: usize,
    pub invite_only_hosts: usize,
    /// Hosts requiring phone verification.
    pub phone_verified_hosts: usize,
    /// Any host open to anyone.
    pub open_registration: bool,
    pub signup_spike: Option<Spike>,
}

/// The latest day's sign-ups against the usual.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spike {
    pub day: String,
    pub created: i64,
    /// The median day of the 28 before.
    pub baseline: i64,
    pub spike: bool,
}

fn day_str(d: time::Date) -> String {
    let mut v = Vec::new();
    crate::clock::date_into(&mut v, d);
    String::from_utf8(v).unwrap_or_default()
}

/// `inst`'s activity as of `now_ms`.
pub fn of(store: &(impl StoreReader + MapReader), inst: &InstanceRecord, now_ms: i64) -> store::Result<Activity> {
    of_with(store, inst, now_ms, |h| store.host(h))
}

/// [`of`] over a map and a way to read host records (an export's snapshot).
pub fn of_with(
    store: &impl MapReader,
    inst: &InstanceRecord,
    now_ms: i64,
    host: impl Fn(&str) -> store::Result<Option<crate::store::records::HostRecord>>,
) -> store::Result<Activity> {
    let today = crate::clock::date_of(now_ms);
    let back = |n: i64| today - time::Duration::days(n);
    let mut a = Activity::default();
    let mut created: BTreeMap<String, i64> = BTreeMap::new();
    for h in &inst.hosts {
        a.active1d += store.active_since(h, today)?;
        a.active7d += store.active_since(h, back(6))?;
        a.active30d += store.active_since(h, back(29))?;
        for (day, n) in store.born_per_day(h, back(29 + 28))? {
            *created.entry(day).or_default() += n;
        }
        if let Some(d) = host(h)?.and_then(|r| r.describe) {
            match d.invite_code_required {
                Some(false) => a.open_hosts += 1,
                Some(true) => a.invite_only_hosts += 1,
                None => {}
            }
            if d.phone_verification_required == Some(true) {
                a.phone_verified_hosts += 1;
            }
        }
    }
    a.open_registration = a.open_hosts > 0;
    // the latest of today and yesterday with sign-ups, against the 28 days
    // before it
    let latest = [today, back(1)].into_iter().find(|d| created.get(&day_str(*d)).is_some_and(|n| *n > 0));
    if let Some(day) = latest {
        let mut before: Vec<i64> =
            (1..=28).map(|i| created.get(&day_str(day - time::Duration::days(i))).copied().unwrap_or(0)).collect();
        before.sort_unstable();
        let baseline = (before[13] + before[14]) / 2;
        let n = created[&day_str(day)];
        a.signup_spike = Some(Spike {
            day: day_str(day),
            created: n,
            baseline,
            spike: n >= SPIKE_MIN && n >= SPIKE_FACTOR * baseline.max(1),
        });
    }
    let from = day_str(back(29));
    a.created_per_day = created.into_iter().filter(|(d, _)| *d >= from).collect();
    Ok(a)
}
