//! A deadline for the reads of one thread: the API sets it around a
//! request's store work, and every scan checks it every [`EVERY`] entries,
//! so a request that has already answered 503 stops reading instead of
//! running its scan to the end (and keeps its read permit only that long).
//! Point reads do not check it: they are short.
//!
//! Also per thread: [`cached_only`], reads answered from memory alone, so
//! the API can serve a request on its async worker when every block it
//! needs is cached and hand it to the blocking pool only on a miss.

use std::cell::Cell;
use std::time::Instant;

use super::StoreError;

/// Entries a scan reads between two looks at the clock.
pub const EVERY: u32 = 1024;

/// Entries a scan may read inside [`cached_only`] (on an async worker)
/// before it is refused and left to the blocking pool.
pub const INLINE_SCAN: u32 = 4096;

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with reads on this thread bounded by `until` (the earlier of
/// it and any deadline already set).
pub fn within<T>(until: Instant, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let before = DEADLINE.with(Cell::get);
    let _restore = Restore(before);
    DEADLINE.with(|d| d.set(Some(before.map_or(until, |b| b.min(until)))));
    f()
}

/// Whether this thread's deadline has passed.
pub fn passed() -> bool {
    DEADLINE.with(Cell::get).is_some_and(|d| Instant::now() >= d)
}

/// A scan's entries, ending in [`StoreError::DeadlinePassed`] once the
/// thread's deadline passes.
pub(super) struct Bounded<I> {
    inner: I,
    seen: u32,
    done: bool,
}

impl<I> Bounded<I> {
    pub(super) fn new(inner: I) -> Bounded<I> {
        Bounded { inner, seen: 0, done: false }
    }
}

impl<T, I: Iterator<Item = Result<T, StoreError>>> Iterator for Bounded<I> {
    type Item = Result<T, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.seen = self.seen.wrapping_add(1);
        if self.seen % EVERY == 0 && passed() {
            self.done = true;
            return Some(Err(StoreError::DeadlinePassed));
        }
        if self.seen == INLINE_SCAN && is_cached_only() {
            // a long scan is no work for an async worker, cached or not
            self.done = true;
            MISSED.with(|m| m.set(true));
            return Some(Err(StoreError::NotCached));
        }
        self.inner.next()
    }
}

// ------------------------------------------------------------ cached-only

thread_local! {
    static CACHED_ONLY: Cell<bool> = const { Cell::new(false) };
    static MISSED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's reads answered from memory only (the
/// memtables and the block cache, RocksDB's `ReadTier::BlockCache`): a
/// read that would touch a file ends in [`StoreError::NotCached`]
/// instead, and so does every read that cannot be limited that way
/// (snapshot reads). Returns `f`'s result and whether any read missed;
/// after a miss the result must be thrown away (the caller may have
/// swallowed the error) and `f` run again where blocking is allowed.
pub fn cached_only<T>(f: impl FnOnce() -> T) -> (T, bool) {
    struct Restore(bool, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CACHED_ONLY.with(|c| c.set(self.0));
            MISSED.with(|m| m.set(self.1));
        }
    }
    let before = (CACHED_ONLY.with(Cell::get), MISSED.with(Cell::get));
    let _restore = Restore(before.0, before.1);
    CACHED_ONLY.with(|c| c.set(true));
    MISSED.with(|m| m.set(false));
    let out = f();
    (out, MISSED.with(Cell::get))
}

/// Whether this thread reads from memory only (inside [`cached_only`]).
pub fn is_cached_only() -> bool {
    CACHED_ONLY.with(Cell::get)
}

/// Whether a read inside the current [`cached_only`] has missed (a cache
/// filled from such a run must not keep what it computed).
pub fn has_missed() -> bool {
    MISSED.with(Cell::get)
}

/// Read options for this thread: `None` normally, the block-cache tier
/// inside [`cached_only`].
pub(super) fn read_options() -> Option<rocksdb::ReadOptions> {
    is_cached_only().then(|| {
        let mut o = rocksdb::ReadOptions::default();
        o.set_read_tier(rocksdb::ReadTier::BlockCache);
        o
    })
}

thread_local! {
    /// Point reads' options, made once per thread (each is a C++ object
    /// RocksDB allocates): the default, and the block-cache tier.
    static POINT_READ: (rocksdb::ReadOptions, rocksdb::ReadOptions) = {
        let mut memory = rocksdb::ReadOptions::default();
        memory.set_read_tier(rocksdb::ReadTier::BlockCache);
        (rocksdb::ReadOptions::default(), memory)
    };
}

/// `f` with this thread's options for a point read (its tier as
/// [`read_options`]).
pub(super) fn with_point_read<T>(f: impl FnOnce(&rocksdb::ReadOptions) -> T) -> T {
    POINT_READ.with(|(plain, memory)| f(if is_cached_only() { memory } else { plain }))
}

/// A RocksDB result under this thread's tier: an incomplete read (the
/// block cache did not have it) is [`StoreError::NotCached`], noted.
pub(super) fn tiered<T>(r: std::result::Result<T, rocksdb::Error>) -> Result<T, StoreError> {
    r.map_err(|e| {
        if is_cached_only() && e.kind() == rocksdb::ErrorKind::Incomplete {
            MISSED.with(|m| m.set(true));
            StoreError::NotCached
        } else {
            StoreError::Rocks(e)
        }
    })
}

/// For a read that cannot be limited to memory: inside [`cached_only`]
/// it is refused (noted as a miss), so it runs only where blocking is
/// allowed.
pub(super) fn refuse_if_cached_only() -> Result<(), StoreError> {
    if is_cached_only() {
        MISSED.with(|m| m.set(true));
        return Err(StoreError::NotCached);
    }
    Ok(())
}
