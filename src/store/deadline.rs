//! A deadline for the reads of one thread: the API sets it around a
//! request's store work, and every scan checks it every [`EVERY`] entries,
//! so a request that has already answered 503 stops reading instead of
//! running its scan to the end (and keeps its read permit only that long).
//! Point reads do not check it: they are short.

use std::cell::Cell;
use std::time::Instant;

use super::StoreError;

/// Entries a scan reads between two looks at the clock.
pub const EVERY: u32 = 1024;

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
        self.inner.next()
    }
}
