//! Accounts → hosts, and the history that follows from it.
//!
//! An account's *assignment* is a pure function of what the store knows of
//! its DID (PLC state, last resolution, firehose state): its current PDS
//! host (or the reason it has none), the status buckets it is counted in,
//! and its *timeline*, the dated hosts it has been on (genesis, then every
//! PDS change the PLC log or the resolutions recorded, then its end if it
//! was deleted). Because the timeline comes from the records and not from
//! the order events were seen in, the incremental path and a full
//! recompute agree exactly, history included.
//!
//! Everything the map counts is a sum of per-account *contributions*:
//! current members per host and bucket (`h`), accounts in an explicit
//! state (`s`), joins minus leaves per host per day (`d`, growth curves),
//! migrations per day between hosts (`f`, flows), and one `moves` row per
//! migration. A change of an account subtracts its old contributions and
//! adds its new ones; instances are summed from their hosts at read time,
//! so a host changing instance needs no account rewritten.

pub use crate::store::records::{Assignment, MoveRow};

use crate::identity::resolve::IdentityRecord;
use crate::plc::load::PlcRecord;
use crate::store::AccountState;

pub use crate::store::records::bucket;

fn ms_of(s: &str) -> Option<i64> {
    crate::clock::parse_time_ms(s)
}

/// Each account's current PDS: from the newer of its PLC state and its
/// last resolution; `Err(reason)` when it has none.
pub fn current_pds(plc: Option<&PlcRecord>, res: Option<&IdentityRecord>) -> Result<String, &'static str> {
    if plc.is_some_and(|p| p.tombstoned) || res.is_some_and(|r| r.tombstoned) {
        return Err("deleted");
    }
    let pds = if crate::identity::resolve::resolution_is_current(plc, res) {
        res.and_then(|r| r.pds.clone())
    } else {
        plc.and_then(|p| p.pds.clone())
    };
    match (pds, plc, res) {
        (Some(p), _, _) => Ok(p),
        (None, None, None) => Err("unresolved"),
        (None, None, Some(r)) if r.unresolved.is_some() && r.resolved_at_ms.is_none() => Err("unresolved"),
        _ => Err("no_pds"),
    }
}

/// The assignment the records call for.
pub fn desired(plc: Option<&PlcRecord>, res: Option<&IdentityRecord>, acct: Option<&AccountState>) -> Assignment {
    let current = current_pds(plc, res);
    let from_resolution = crate::identity::resolve::resolution_is_current(plc, res);
    let mut a = Assignment::default();
    match &current {
        Ok(h) => {
            a.host = Some(h.clone());
            a.source = Some(if from_resolution { "resolution" } else { "plc" }.to_owned());
            a.buckets.push(bucket::REGISTERED.to_owned());
            if plc.and_then(|p| p.pds.as_ref()) == Some(h) {
                a.buckets.push(bucket::IN_PLC.to_owned());
            }
            if res.is_some_and(|r| r.unresolved.is_none() && r.resolved_at_ms.is_some()) {
                a.buckets.push(bucket::RESOLVABLE.to_owned());
            }
            if let Some(s) = acct {
                a.buckets.push(bucket::SEEN.to_owned());
                a.buckets.push(s.status_label().to_owned());
            }
        }
        Err(r) => a.reason = Some((*r).to_owned()),
    }
    let verified = res.and_then(|r| r.handle_check.as_ref()).filter(|c| c.verified).map(|c| c.handle.clone());
    a.handle_verified = verified.is_some();
    a.handle = verified
        .or_else(|| {
            if from_resolution {
                res.and_then(|r| r.handle.clone())
            } else {
                plc.and_then(|p| p.handle.clone()).or_else(|| res.and_then(|r| r.handle.clone()))
            }
        })
        .map(|h| h.to_ascii_lowercase())
        .filter(|h| crate::types::is_handle(h));
    a.timeline = timeline(plc, res, current.as_ref().ok().map(String::as_str));
    a.born = plc.and_then(|p| p.genesis_pds.clone());
    a.born_day = plc
        .filter(|p| p.genesis_pds.is_some())
        .and_then(|p| p.created_at.as_deref())
        .and_then(ms_of)
        .map(crate::store::records::day_number);
    a.active_day = acct.filter(|_| a.host.is_some()).and_then(AccountState::active_day);
    a
}

/// The dated hosts of an account: the PLC log's genesis and moves, then the
/// resolutions' moves after it (or, without PLC state, the resolutions'
/// alone), then its end when it has no current host.
fn timeline(
    plc: Option<&PlcRecord>,
    res: Option<&IdentityRecord>,
    current: Option<&str>,
) -> Vec<(i64, Option<String>)> {
    let mut t: Vec<(i64, Option<String>)> = Vec::new();
    let push = |t: &mut Vec<(i64, Option<String>)>, at: i64, host: Option<&str>| {
        if t.last().map(|(_, h)| h.as_deref()) != Some(host) {
            let at = t.last().map_or(at, |(prev, _)| at.max(*prev));
            t.push((at, host.map(str::to_owned)));
        }
    };
    // the PLC log
    if let Some(p) = plc {
        let start = p.created_at.as_deref().and_then(ms_of).or_else(|| ms_of(&p.updated_at)).unwrap_or(0);
        let first = p.moves.first().map(|m| m.from.as_str()).or(p.pds.as_deref());
        if let Some(first) = first {
            push(&mut t, start, Some(first));
        }
        for m in &p.moves {
            push(&mut t, ms_of(&m.at).unwrap_or(start), Some(&m.to));
        }
    }
    // resolutions: moves seen after the PLC state (or all of them)
    if let Some(r) = res {
        let start = r.first_resolved_ms.or(r.resolved_at_ms).unwrap_or(r.checked_at_ms);
        let after = t.last().map_or(i64::MIN, |(at, _)| *at);
        if t.is_empty() {
            if let Some(first) = r.moves.first().map(|m| m.from.as_str()).or(r.pds.as_deref()) {
                push(&mut t, start, Some(first));
            }
        }
        for m in &r.moves {
            let at = ms_of(&m.at).unwrap_or(start);
            if at > after {
                push(&mut t, at, Some(&m.to));
            }
        }
    }
    match current {
        Some(h) => {
            // the current host wins (the newer of PLC and resolution)
            let at = match (plc, res) {
                (_, Some(r)) if crate::identity::resolve::resolution_is_current(plc, res) => {
                    r.resolved_at_ms.unwrap_or(r.checked_at_ms)
                }
                (Some(p), _) => ms_of(&p.updated_at).unwrap_or(0),
                _ => 0,
            };
            push(&mut t, at, Some(h));
        }
        None if !t.is_empty() => {
            let at = match (plc, res) {
                (Some(p), _) if p.tombstoned || p.pds.is_none() => ms_of(&p.updated_at).unwrap_or(0),
                (_, Some(r)) => r.resolved_at_ms.unwrap_or(r.checked_at_ms),
                (Some(p), None) => ms_of(&p.updated_at).unwrap_or(0),
                (None, None) => 0,
            };
            push(&mut t, at, None);
        }
        None => {}
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::day;

    fn plc(pds: &str, created: &str, moves: &[(&str, &str, &str)]) -> PlcRecord {
        PlcRecord {
            pds: Some(pds.into()),
            created_at: Some(created.into()),
            updated_at: moves.last().map_or(created, |m| m.0).into(),
            ops: 1 + moves.len() as u32,
            moves: moves
                .iter()
                .map(|(at, f, t)| crate::plc::load::Move { at: (*at).into(), from: (*f).into(), to: (*t).into() })
                .collect(),
            ..PlcRecord::default()
        }
    }

    #[test]
    fn timeline_from_plc_log() {
        let p = plc(
            "https://b.example",
            "2024-01-01T00:00:00Z",
            &[("2024-03-01T00:00:00Z", "https://a.example", "https://b.example")],
        );
        let a = desired(Some(&p), None, None);
        assert_eq!(a.host.as_deref(), Some("https://b.example"));
        assert_eq!(a.timeline.len(), 2);
        assert_eq!(a.timeline[0].1.as_deref(), Some("https://a.example"));
        assert_eq!(day(a.timeline[1].0), "2024-03-01");
        // what the assignment contributes, through the store's batch
        use crate::store::map::MapReader;
        use crate::store::StoreWriter;
        let store = crate::store::mem::MemStore::new();
        let mut b = crate::store::Batch::default();
        b.assign("did:plc:x", None, a.clone());
        store.commit(b).unwrap();
        let (mut days, mut flows) = (Vec::new(), Vec::new());
        store.day_counts("", "9999", &mut |d, h, n| days.push((d.to_owned(), h.to_owned(), n))).unwrap();
        store
            .flow_counts("", "9999", &mut |d, f, t, n| flows.push((d.to_owned(), f.to_owned(), t.to_owned(), n)))
            .unwrap();
        let s = |v: &str| v.to_owned();
        assert_eq!(
            days,
            [
                (s("2024-01-01"), s("https://a.example"), 1),
                (s("2024-03-01"), s("https://a.example"), -1),
                (s("2024-03-01"), s("https://b.example"), 1)
            ]
        );
        assert_eq!(flows, [(s("2024-03-01"), s("https://a.example"), s("https://b.example"), 1)]);
        assert_eq!(store.moves_of("did:plc:x").unwrap().len(), 1);
        // taking the assignment back gives nothing back
        let mut b = crate::store::Batch::default();
        b.assign("did:plc:x", Some(a), Assignment::default());
        store.commit(b).unwrap();
        days.clear();
        store.day_counts("", "9999", &mut |d, h, n| days.push((d.to_owned(), h.to_owned(), n))).unwrap();
        assert!(days.is_empty(), "{days:?}");
        assert!(store.moves_of("did:plc:x").unwrap().is_empty());
    }

    #[test]
    fn tombstone_ends_the_timeline() {
        let mut p = plc("https://a.example", "2024-01-01T00:00:00Z", &[]);
        p.tombstoned = true;
        p.updated_at = "2024-02-02T00:00:00Z".into();
        let a = desired(Some(&p), None, None);
        assert_eq!(a.reason.as_deref(), Some("deleted"));
        assert_eq!(a.timeline.last().map(|(t, h)| (day(*t), h.clone())), Some(("2024-02-02".into(), None)));
    }

    #[test]
    fn the_epoch_is_its_first_day() {
        assert_eq!(day(0), "1970-01-01");
    }

    #[test]
    fn day_as_format_writes_it() {
        let reference = |ms: i64| {
            let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let d = t.date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        };
        let year_ms = 31_556_952_000i64;
        let mut ms = -3000 * year_ms;
        while ms < 9000 * year_ms {
            assert_eq!(day(ms), reference(ms), "{ms}");
            ms += 86_400_000 * 37 + 12_345;
        }
        for ms in [i64::MIN, i64::MAX, -1, -62_167_219_200_000 - 1, 253_402_300_799_999, 253_402_300_800_000] {
            assert_eq!(day(ms), reference(ms), "{ms}");
        }
    }
}
