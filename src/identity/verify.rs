//! Commit signature checks, off the writer thread: a pool of workers
//! verifies each `#commit`'s signature against the account's current
//! signing key while the writer waits, in order, only for the event at the
//! head of its queue. Keys come from a [`KeySource`] (the store's identity
//! state) through a small cache of parsed keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::crypto::PublicKey;
use super::resolve::IdentityRecord;
use crate::plc::load::PlcRecord;
use crate::store::{self, Store, CF_IDENTITY, CF_PLC};

/// What a commit's signature is checked over: the SHA-256 of the unsigned
/// commit, and the signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigInput {
    pub digest: [u8; 32],
    pub sig: Vec<u8>,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigStatus {
    /// Verification is off, or the event is not a commit.
    NotChecked,
    Valid,
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
            SigStatus::NoKey => "no_key",
            SigStatus::Invalid(reason) => reason,
        }
    }
}

/// Where signing keys come from.
pub trait KeySource: Send + Sync {
    /// The account's current `#atproto` key as a Multikey, if known.
    fn signing_key(&self, did: &str) -> store::Result<Option<String>>;
}

/// The store's keys: the PLC state and the last resolution, whichever is
/// newer (a resolution reflects the directory at its time; a PLC operation
/// created after it supersedes it).
impl KeySource for Store {
    fn signing_key(&self, did: &str) -> store::Result<Option<String>> {
        let plc: Option<PlcRecord> = match self.get_cf(CF_PLC, did.as_bytes())? {
            Some(b) => Some(store::from_cbor(CF_PLC, &b)?),
            None => None,
        };
        let resolved: Option<IdentityRecord> = match self.get_cf(CF_IDENTITY, did.as_bytes())? {
            Some(b) => Some(store::from_cbor(CF_IDENTITY, &b)?),
            None => None,
        };
        Ok(if super::resolve::resolution_is_current(plc.as_ref(), resolved.as_ref()) {
            resolved.and_then(|r| r.signing_key)
        } else {
            plc.and_then(|p| p.signing_key.filter(|_| !p.tombstoned))
        })
    }
}

impl KeySource for HashMap<String, String> {
    fn signing_key(&self, did: &str) -> store::Result<Option<String>> {
        Ok(self.get(did).cloned())
    }
}

/// How long a looked-up key (or its absence) is trusted before the source
/// is asked again. Short, because the store's identity state moves.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most keys cached; the cache is cleared when it grows past this.
pub const KEY_CACHE_MAX: usize = 200_000;

/// Parsed keys by DID.
pub struct KeyCache {
    source: Arc<dyn KeySource>,
    map: Mutex<HashMap<String, (Instant, Option<PublicKey>)>>,
}

impl KeyCache {
    pub fn new(source: Arc<dyn KeySource>) -> KeyCache {
        KeyCache { source, map: Mutex::new(HashMap::new()) }
    }

    /// The account's parsed key (cached), if one is known.
    pub fn key(&self, did: &str) -> Option<PublicKey> {
        if let Some((at, k)) = self.map.lock().expect("key cache lock").get(did) {
            if at.elapsed() < KEY_CACHE_TTL {
                return k.clone();
            }
        }
        let key = match self.source.signing_key(did) {
            Ok(Some(mk)) => PublicKey::from_multikey(&mk).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "reading a signing key");
                None
            }
        };
        let mut map = self.map.lock().expect("key cache lock");
        if map.len() >= KEY_CACHE_MAX {
            map.clear();
        }
        map.insert(did.to_owned(), (Instant::now(), key.clone()));
        key
    }

    /// Drops a DID's cached key (its identity changed).
    pub fn forget(&self, did: &str) {
        self.map.lock().expect("key cache lock").remove(did);
    }
}

struct Job {
    did: String,
    key: PublicKey,
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
                        let mut status = verify(&job.key, &job.input);
                        if let (SigStatus::Invalid(_), true, Some(refresh)) = (status, job.changed, &refresh) {
                            cache.forget(&job.did);
                            if let Some(fresh) = refresh(&job.did) {
                                if fresh != job.key {
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

    /// Starts the check of one commit: `Err` with the outcome at once when
    /// no key is known (nothing to wait for), else the pending check.
    pub fn submit(&self, did: &str, input: SigInput) -> Result<Pending, SigStatus> {
        let Some(key) = self.cache.key(did) else {
            return Err(SigStatus::NoKey);
        };
        let changed = self.changed.lock().expect("changed lock").get(did).is_some_and(|t| t.elapsed() < CHANGE_WINDOW);
        let (reply, pending) = crossbeam_channel::bounded(1);
        if self.jobs.send(Job { did: did.to_owned(), key, input, changed, reply }).is_err() {
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
