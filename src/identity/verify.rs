//! Commit signature checks, off the writer thread: a pool of workers
//! verifies each `#commit`'s (and `#sync`'s) signature against the
//! account's signing key while the writer waits, in order, only for the
//! event at the head of its queue. Keys come from a [`KeySource`] (the
//! store's identity state, with the PLC log's key history) through a small
//! cache of parsed keys.
//!
//! Which key is accepted: the current key first. Only when it fails, a key
//! the account has rotated away from, if every time the event claims (its
//! rev's TID, the signed commit's rev, the frame's `time`) is before that
//! key was rotated away; such an event is counted `valid_prior_key`. Those
//! times are the PDS's word, so this is a limitation, not a proof: whoever
//! holds an old key (leaked, or a former PDS) can still sign a commit that
//! claims an old time and have it accepted. What it cannot do is pass off
//! a commit claiming a time after the rotation, and a commit refused by the
//! current key is visible under its own label.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::crypto::PublicKey;
use super::resolve::IdentityRecord;
use crate::store::records::PlcRecord;
use crate::store::{self, Store, StoreReader};

/// What a commit's signature is checked over: the SHA-256 of the unsigned
/// commit, and the signature bytes; and when the event claims it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigInput {
    pub digest: [u8; 32],
    pub sig: Vec<u8>,
    /// The latest of the times the event claims (µs since the epoch): the
    /// revs' TIDs and the frame's `time`; `None` when any of them is
    /// missing or does not parse (then only the current key can pass).
    pub claimed_us: Option<i64>,
}

impl SigInput {
    /// The latest of `times`, or `None` if any is `None`.
    pub fn latest(times: &[Option<i64>]) -> Option<i64> {
        times.iter().try_fold(i64::MIN, |m, t| t.map(|t| m.max(t)))
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigStatus {
    /// Verification is off, or the event is not a commit.
    NotChecked,
    /// Verified by the account's current key.
    Valid,
    /// Verified by a key the account has rotated away from, claiming a
    /// time before the rotation (see the module docs): applied, counted.
    ValidPriorKey,
    /// No signing key is known for the account yet: applied, counted.
    NoKey,
    /// The signature does not verify against the known key: not applied.
    Invalid(&'static str),
}

impl SigStatus {
    /// The bounded label counted in the store and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SigStatus::NotChecked => "not_checked",
            SigStatus::Valid => "valid",
            SigStatus::ValidPriorKey => "valid_prior_key",
            SigStatus::NoKey => "no_key",
            SigStatus::Invalid(reason) => reason,
        }
    }
}

/// An account's keys as Multikeys: the current one, and the ones it has
/// rotated away from, each with the time (µs) it stopped being in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHistory {
    pub current: Option<String>,
    pub retired: Vec<(String, i64)>,
}

/// Where signing keys come from.
pub trait KeySource: Send + Sync {
    /// The account's current `#atproto` key as a Multikey, if known.
    fn signing_key(&self, did: &str) -> store::Result<Option<String>>;

    /// The current key and the retired ones. By default the current key
    /// only (a source without history).
    fn key_history(&self, did: &str) -> store::Result<KeyHistory> {
        Ok(KeyHistory { current: self.signing_key(did)?, retired: Vec::new() })
    }
}

/// The store's keys: the PLC state and the last resolution, whichever is
/// newer (a resolution reflects the directory at its time; a PLC operation
/// created after it supersedes it). The history is the PLC log's: a
/// resolved DID document has only the current key, and did:web has none.
impl KeySource for Store {
    fn signing_key(&self, did: &str) -> store::Result<Option<String>> {
        Ok(self.key_history(did)?.current)
    }

    fn key_history(&self, did: &str) -> store::Result<KeyHistory> {
        let plc: Option<PlcRecord> = StoreReader::plc(self, did)?;
        let resolved: Option<IdentityRecord> = StoreReader::identity(self, did)?;
        let plc_key = plc.as_ref().and_then(|p| p.signing_key.clone().filter(|_| !p.tombstoned));
        let current = if super::resolve::resolution_is_current(plc.as_ref(), resolved.as_ref()) {
            resolved.and_then(|r| r.signing_key)
        } else {
            plc_key.clone()
        };
        let Some(plc) = plc else {
            return Ok(KeyHistory { current, retired: Vec::new() });
        };
        let mut retired: Vec<(String, i64)> = plc
            .retired_keys
            .iter()
            .filter_map(|r| Some((r.key.clone(), crate::clock::parse_time_us(&r.until)?)))
            .collect();
        // A newer resolution names another key: the PLC state's key was
        // rotated away by an operation not loaded yet, at an unknown time
        // after the last one loaded, which is the safe bound.
        if let Some(k) = plc_key.filter(|k| current.as_ref() != Some(k)) {
            if let Some(until) = crate::clock::parse_time_us(&plc.updated_at) {
                retired.push((k, until));
            }
        }
        retired.retain(|(k, _)| current.as_ref() != Some(k));
        Ok(KeyHistory { current, retired })
    }
}

impl KeySource for HashMap<String, String> {
    fn signing_key(&self, did: &str) -> store::Result<Option<String>> {
        Ok(self.get(did).cloned())
    }
}

/// [`KeyHistory`] parsed (keys that do not parse are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub current: Option<PublicKey>,
    pub retired: Vec<(PublicKey, i64)>,
}

impl Keys {
    pub fn parse(h: KeyHistory) -> Keys {
        Keys {
            current: h.current.and_then(|mk| PublicKey::from_multikey(&mk).ok()),
            retired: h
                .retired
                .into_iter()
                .filter_map(|(mk, t)| Some((PublicKey::from_multikey(&mk).ok()?, t)))
                .collect(),
        }
    }

    /// No key to check against.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.retired.is_empty()
    }

    /// Checks `input`: the current key, then (only if it fails) the retired
    /// keys, newest first, that were rotated away after every time the
    /// event claims. There is no lower bound (a key's `from`): a PDS that an
    /// account moves to signs with its new key before the PLC operation
    /// naming that key, and an old key claiming an earlier time is the
    /// accepted limitation anyway. The outcome of a failure is the current
    /// key's reason.
    pub fn check(&self, input: &SigInput) -> SigStatus {
        let mut status = SigStatus::Invalid("sig_invalid");
        if let Some(k) = &self.current {
            status = verify(k, input);
            if status == SigStatus::Valid {
                return status;
            }
        }
        let Some(claimed) = input.claimed_us else { return status };
        for (k, until) in self.retired.iter().rev() {
            if claimed < *until && verify(k, input) == SigStatus::Valid {
                return SigStatus::ValidPriorKey;
            }
        }
        status
    }
}

/// Whether a record's kept commit signature holds: it verified when the
/// record arrived, or it verifies now against the signer's keys (the one
/// in force when it was signed; see [`Keys::check`]).
pub fn record_signature_holds(source: &impl KeySource, did: &str, s: &store::RecordSig) -> store::Result<bool> {
    if s.verified_on_arrival() {
        return Ok(true);
    }
    let Ok(digest) = <[u8; 32]>::try_from(&s.digest[..]) else { return Ok(false) };
    let keys = Keys::parse(source.key_history(did)?);
    if keys.is_empty() {
        return Ok(false);
    }
    let input = SigInput { digest, sig: s.sig.clone(), claimed_us: s.claimed_us };
    Ok(matches!(keys.check(&input), SigStatus::Valid | SigStatus::ValidPriorKey))
}

/// How long a looked-up key (or its absence) is trusted before the source
/// is asked again. Short, because the store's identity state moves.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most keys cached; the cache is cleared when it grows past this.
pub const KEY_CACHE_MAX: usize = 200_000;

/// Parsed keys by DID (shared, so a hit copies a pointer, not the history).
pub struct KeyCache {
    source: Arc<dyn KeySource>,
    map: Mutex<HashMap<String, (Instant, Arc<Keys>)>>,
}

impl KeyCache {
    pub fn new(source: Arc<dyn KeySource>) -> KeyCache {
        KeyCache { source, map: Mutex::new(HashMap::new()) }
    }

    /// The account's current parsed key (cached), if one is known.
    pub fn key(&self, did: &str) -> Option<PublicKey> {
        self.keys(did).current.clone()
    }

    /// The account's parsed keys, current and retired (cached).
    pub fn keys(&self, did: &str) -> Arc<Keys> {
        if let Some((at, k)) = self.map.lock().expect("key cache lock").get(did) {
            if at.elapsed() < KEY_CACHE_TTL {
                return k.clone();
            }
        }
        let keys = Arc::new(match self.source.key_history(did) {
            Ok(h) => Keys::parse(h),
            Err(e) => {
                tracing::warn!(error = %e, "reading a signing key");
                Keys::default()
            }
        });
        let mut map = self.map.lock().expect("key cache lock");
        if map.len() >= KEY_CACHE_MAX {
            map.clear();
        }
        map.insert(did.to_owned(), (Instant::now(), keys.clone()));
        keys
    }

    /// Drops a DID's cached key (its identity changed).
    pub fn forget(&self, did: &str) {
        self.map.lock().expect("key cache lock").remove(did);
    }
}

struct Job {
    did: String,
    keys: Arc<Keys>,
    input: SigInput,
    /// The account announced an identity change (`#identity`) recently: on
    /// failure, re-resolve and try the fresh key before failing.
    changed: bool,
    reply: crossbeam_channel::Sender<SigStatus>,
}

/// Re-resolves a DID now and returns its current key (runs on a verify
/// worker, so it may block).
pub type Refresh = Arc<dyn Fn(&str) -> Option<PublicKey> + Send + Sync>;

/// How long after an `#identity` a failing signature triggers a re-resolve.
pub const CHANGE_WINDOW: Duration = Duration::from_secs(600);

fn verify(key: &PublicKey, input: &SigInput) -> SigStatus {
    match key.verify_prehash(&input.digest, &input.sig) {
        Ok(()) => SigStatus::Valid,
        Err(e) => SigStatus::Invalid(e.reason()),
    }
}

/// A pending check: the writer waits on it when the event reaches the head
/// of its queue.
pub type Pending = crossbeam_channel::Receiver<SigStatus>;

/// The worker pool. Its job queue is unbounded, but every job belongs to an
/// event in the writer's bounded queue, so jobs in flight never exceed that
/// queue's capacity.
pub struct VerifyPool {
    jobs: crossbeam_channel::Sender<Job>,
    pub cache: Arc<KeyCache>,
    changed: Mutex<HashMap<String, Instant>>,
}

impl VerifyPool {
    /// Starts `workers` threads (they end when the pool is dropped).
    pub fn new(workers: usize, source: Arc<dyn KeySource>, refresh: Option<Refresh>) -> VerifyPool {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let cache = Arc::new(KeyCache::new(source));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let refresh = refresh.clone();
            let cache = cache.clone();
            std::thread::Builder::new()
                .name(format!("verify-{i}"))
                .spawn(move || {
                    for job in rx {
                        let mut status = job.keys.check(&job.input);
                        if let (SigStatus::Invalid(_), true, Some(refresh)) = (status, job.changed, &refresh) {
                            cache.forget(&job.did);
                            if let Some(fresh) = refresh(&job.did) {
                                if job.keys.current.as_ref() != Some(&fresh) {
                                    status = verify(&fresh, &job.input);
                                }
                            }
                        }
                        let _ = job.reply.send(status);
                    }
                })
                .expect("spawning a verify worker");
        }
        VerifyPool { jobs: tx, cache, changed: Mutex::new(HashMap::new()) }
    }

    /// Notes that `did` announced an identity change (and drops its key).
    pub fn identity_changed(&self, did: &str) {
        self.cache.forget(did);
        let mut changed = self.changed.lock().expect("changed lock");
        if changed.len() > 100_000 {
            changed.retain(|_, t| t.elapsed() < CHANGE_WINDOW);
        }
        changed.insert(did.to_owned(), Instant::now());
    }

    /// Starts the check of one commit (or `#sync`): `Err` with the outcome
    /// at once when no key is known (nothing to wait for), else the pending
    /// check. An account whose only keys are retired (tombstoned) is
    /// checked against them.
    pub fn submit(&self, did: &str, input: SigInput) -> Result<Pending, SigStatus> {
        let keys = self.cache.keys(did);
        if keys.is_empty() {
            return Err(SigStatus::NoKey);
        }
        let changed = self.changed.lock().expect("changed lock").get(did).is_some_and(|t| t.elapsed() < CHANGE_WINDOW);
        let (reply, pending) = crossbeam_channel::bounded(1);
        if self.jobs.send(Job { did: did.to_owned(), keys, input, changed, reply }).is_err() {
            // no workers left: the pending check reads as disconnected
            tracing::error!("signature workers are gone");
        }
        Ok(pending)
    }
}

/// The number of verify workers for this machine: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}
