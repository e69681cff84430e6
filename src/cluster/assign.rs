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

use std::collections::BTreeMap;

pub use crate::store::records::{Assignment, MoveRow};

use crate::identity::resolve::IdentityRecord;
use crate::plc::load::PlcRecord;
use crate::store::AccountState;

/// Key prefixes in the `map_counts` family.
pub mod key {
    /// `h\0<host>\0<bucket>`: current members of a host, by bucket.
    pub const HOST: u8 = b'h';
    /// `s\0<reason>`: accounts in an explicit state.
    pub const STATE: u8 = b's';
    /// `d\0<YYYY-MM-DD>\0<host>`: joins minus leaves that day.
    pub const DAY: u8 = b'd';
    /// `f\0<YYYY-MM-DD>\0<from>\0<to>`: migrations that day.
    pub const FLOW: u8 = b'f';

    pub fn host(host: &str, bucket: &str) -> Vec<u8> {
        join(HOST, &[host, bucket])
    }
    pub fn state(reason: &str) -> Vec<u8> {
        join(STATE, &[reason])
    }
    pub fn day(day: &str, host: &str) -> Vec<u8> {
        join(DAY, &[day, host])
    }
    pub fn flow(day: &str, from: &str, to: &str) -> Vec<u8> {
        join(FLOW, &[day, from, to])
    }
    pub fn prefix(kind: u8) -> [u8; 2] {
        [kind, 0]
    }
    fn join(kind: u8, parts: &[&str]) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
        join_into(&mut k, kind, parts.iter().map(|p| p.as_bytes()));
        k
    }
    /// Writes the key of `kind` and `parts` into `k` (cleared first).
    pub(crate) fn join_into<'a>(k: &mut Vec<u8>, kind: u8, parts: impl IntoIterator<Item = &'a [u8]>) {
        k.clear();
        k.push(kind);
        for p in parts {
            k.push(0);
            k.extend_from_slice(p);
        }
    }
    /// The parts of a key after its prefix.
    pub fn parts(k: &[u8]) -> Vec<&str> {
        k.get(2..).unwrap_or_default().split(|b| *b == 0).map(|p| std::str::from_utf8(p).unwrap_or("")).collect()
    }
}

/// Buckets a member of a host is counted in.
pub mod bucket {
    /// Every account whose current DID document names the host.
    pub const REGISTERED: &str = "registered";
    /// ... whose PLC directory state names it.
    pub const IN_PLC: &str = "in_plc";
    /// ... whose DID document resolved.
    pub const RESOLVABLE: &str = "resolvable";
    /// ... seen on the firehose (then also counted by its status label).
    pub const SEEN: &str = "seen_on_firehose";
}

impl Assignment {
    /// The `host_accounts` key of this assignment (`host 0x00 did`).
    pub fn host_key(&self, did: &str) -> Option<Vec<u8>> {
        self.host.as_ref().map(|h| [h.as_bytes(), &[0], did.as_bytes()].concat())
    }
    /// The `handles` key of this assignment (`handle 0x00 did`).
    pub fn handle_key(&self, did: &str) -> Option<Vec<u8>> {
        self.handle.as_ref().map(|h| [h.as_bytes(), &[0], did.as_bytes()].concat())
    }
}

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

/// One `map_counts` key, by parts (see [`key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountKey<'a> {
    /// `h`: members of a host in a bucket.
    Host { host: &'a str, bucket: &'a str },
    /// `s`: accounts in an explicit state.
    State(&'a str),
    /// `d`: joins minus leaves of a host that day.
    Day { day: time::Date, host: &'a str },
    /// `f`: migrations that day.
    Flow { day: time::Date, from: &'a str, to: &'a str },
}

impl CountKey<'_> {
    /// Writes the stored key into `k` (cleared first).
    pub fn write(&self, k: &mut Vec<u8>) {
        match *self {
            CountKey::Host { host, bucket } => key::join_into(k, key::HOST, [host.as_bytes(), bucket.as_bytes()]),
            CountKey::State(reason) => key::join_into(k, key::STATE, [reason.as_bytes()]),
            CountKey::Day { day, host } => {
                k.clear();
                k.extend_from_slice(&[key::DAY, 0]);
                crate::clock::date_into(k, day);
                k.push(0);
                k.extend_from_slice(host.as_bytes());
            }
            CountKey::Flow { day, from, to } => {
                k.clear();
                k.extend_from_slice(&[key::FLOW, 0]);
                crate::clock::date_into(k, day);
                for p in [from, to] {
                    k.push(0);
                    k.extend_from_slice(p.as_bytes());
                }
            }
        }
    }
}

/// Key of a `moves` row: `<did>\0<ms, big-endian, sign-flipped>`.
pub fn move_key(did: &str, at_ms: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(did.len() + 9);
    k.extend_from_slice(did.as_bytes());
    k.push(0);
    k.extend_from_slice(&((at_ms as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// The time of a `moves` key.
pub fn move_key_time(k: &[u8]) -> Option<i64> {
    let t: [u8; 8] = k.get(k.len().checked_sub(8)?..)?.try_into().ok()?;
    Some((u64::from_be_bytes(t) ^ (1 << 63)) as i64)
}

/// What one assignment adds to the map.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Contributions {
    /// `map_counts` keys and amounts.
    pub counts: BTreeMap<Vec<u8>, i64>,
    /// `moves` rows.
    pub moves: BTreeMap<Vec<u8>, MoveRow>,
}

impl Contributions {
    /// Adds `sign` × the contributions of `a` (for the DID `did`).
    pub fn add(&mut self, did: &str, a: &Assignment, sign: i64) {
        let mut k = Vec::with_capacity(128);
        Self::for_each_count(a, |ck, n| {
            ck.write(&mut k);
            match self.counts.get_mut(&k) {
                Some(v) => *v += n * sign,
                None => {
                    self.counts.insert(k.clone(), n * sign);
                }
            }
        });
        Self::add_moves(&mut self.moves, did, a, sign);
    }

    /// Calls `f(key, n)` for every `map_counts` contribution of `a` (a key
    /// may come more than once; the amounts add up).
    pub fn for_each_count<'a>(a: &'a Assignment, mut f: impl FnMut(CountKey<'a>, i64)) {
        match (&a.host, &a.reason) {
            (Some(h), _) => {
                for b in &a.buckets {
                    f(CountKey::Host { host: h, bucket: b }, 1);
                }
            }
            (None, Some(r)) => f(CountKey::State(r), 1),
            (None, None) => {}
        }
        let mut prev: Option<&str> = None;
        for (at, host) in &a.timeline {
            let day = crate::clock::date_of(*at);
            if let Some(p) = prev {
                f(CountKey::Day { day, host: p }, -1);
            }
            if let Some(h) = host {
                f(CountKey::Day { day, host: h }, 1);
                if let Some(p) = prev {
                    f(CountKey::Flow { day, from: p, to: h }, 1);
                }
            }
            prev = host.as_deref();
        }
    }

    /// Adds (`sign` > 0) or removes the `moves` rows of `a` in `moves`.
    fn add_moves(moves: &mut BTreeMap<Vec<u8>, MoveRow>, did: &str, a: &Assignment, sign: i64) {
        let mut prev: Option<&str> = None;
        for (at, host) in &a.timeline {
            if let (Some(p), Some(h)) = (prev, host) {
                let k = move_key(did, *at);
                if sign > 0 {
                    moves.insert(k, MoveRow { from: p.to_owned(), to: h.clone() });
                } else {
                    moves.remove(&k);
                }
            }
            prev = host.as_deref();
        }
    }

    /// The `moves` rows of an assignment, by key.
    pub fn moves_of(did: &str, a: &Assignment) -> BTreeMap<Vec<u8>, MoveRow> {
        let mut moves = BTreeMap::new();
        Self::add_moves(&mut moves, did, a, 1);
        moves
    }

    /// The `moves` keys of an assignment.
    pub fn move_keys(did: &str, a: &Assignment) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut prev: Option<&str> = None;
        for (at, host) in &a.timeline {
            if prev.is_some() && host.is_some() {
                out.push(move_key(did, *at));
            }
            prev = host.as_deref();
        }
        out
    }
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
        let mut c = Contributions::default();
        c.add("did:plc:x", &a, 1);
        assert_eq!(c.counts[&key::day("2024-01-01", "https://a.example")], 1);
        assert_eq!(c.counts[&key::day("2024-03-01", "https://a.example")], -1);
        assert_eq!(c.counts[&key::day("2024-03-01", "https://b.example")], 1);
        assert_eq!(c.counts[&key::flow("2024-03-01", "https://a.example", "https://b.example")], 1);
        assert_eq!(c.moves.len(), 1);
        // subtracting gives nothing back
        c.add("did:plc:x", &a, -1);
        assert!(c.counts.values().all(|v| *v == 0));
        assert!(c.moves.is_empty());
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
    fn keys_round_trip() {
        assert_eq!(key::parts(&key::flow("2024-01-01", "a", "b")), ["2024-01-01", "a", "b"]);
        for t in [-5i64, 0, 1_700_000_000_000] {
            assert_eq!(move_key_time(&move_key("did:plc:x", t)), Some(t));
        }
        assert!(move_key("d", -1) < move_key("d", 0));
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
