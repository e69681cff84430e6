//! A bounded fuzz run in CI: real frames (the reference PDS's and the
//! production relay's), mutated (bits flipped, bytes set, cut, spliced,
//! duplicated), go through the decoder and the writer. Nothing panics;
//! every frame is applied or counted with a reason; the cursor only moves
//! to a plausible seq; the store reopens. `INSTANCEMAP_FUZZ_CASES` sets how
//! many sequences run (default 64 of up to 24 frames: a few seconds).

mod common;

use common::*;
use instancemap::event;
use instancemap::ingest::{Ingest, MAX_SEQ};
use instancemap::store::{Store, StoreReader};
use proptest::prelude::*;
use std::sync::OnceLock;

fn corpus() -> &'static Vec<Vec<u8>> {
    static C: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    C.get_or_init(|| {
        let mut v = reference_frames();
        v.extend(jetstream_frames().into_iter().take(400));
        v
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Cut { at: usize },
    Splice { at: usize, from: usize, len: usize },
    Repeat { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        1 => any::<usize>().prop_map(|at| Mutation::Cut { at }),
        1 => (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(at, from, len)| Mutation::Splice { at, from, len }),
        1 => (any::<usize>(), 1usize..4096).prop_map(|(at, len)| Mutation::Repeat { at, len }),
    ]
}

fn apply(mut f: Vec<u8>, m: &Mutation, other: &[u8]) -> Vec<u8> {
    if f.is_empty() {
        return f;
    }
    let n = f.len();
    match *m {
        Mutation::Flip { at, bit } => f[at % n] ^= 1 << bit,
        Mutation::Set { at, byte } => f[at % n] = byte,
        Mutation::Cut { at } => f.truncate(at % n),
        Mutation::Splice { at, from, len } => {
            if !other.is_empty() {
                let from = from % other.len();
                let piece = &other[from..(from + len).min(other.len())];
                let at = at % n;
                f.splice(at..(at + piece.len()).min(n), piece.iter().copied());
            }
        }
        Mutation::Repeat { at, len } => {
            let at = at % n;
            let piece: Vec<u8> = f[at..(at + len).min(n)].to_vec();
            f.splice(at..at, piece);
        }
    }
    f
}

fn cases() -> u32 {
    std::env::var("INSTANCEMAP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_frames_never_panic_and_never_poison_the_cursor(
        picks in proptest::collection::vec((any::<usize>(), any::<usize>(), proptest::collection::vec(mutation(), 0..4)), 1..24)
    ) {
        let c = corpus();
        let dir = tempfile::tempdir().unwrap();
        let mut ingest = Ingest::new(Store::open(dir.path()).unwrap(), "fuzz").unwrap();
        let mut applied_seqs = Vec::new();
        for (pick, other, muts) in &picks {
            let base = c[pick % c.len()].clone();
            let other = &c[other % c.len()];
            let f = muts.iter().fold(base, |f, m| apply(f, m, other));
            let ev = event::from_frame_bytes(&f);
            if let Some(s) = ev.seq {
                applied_seqs.push(s);
            }
            ingest.apply(ev).unwrap();
        }
        let store = ingest.finish().unwrap();
        let cursor = store.source_cursor("fuzz").unwrap();
        if let Some(c) = cursor {
            prop_assert!((0..=MAX_SEQ).contains(&c), "cursor {c}");
            prop_assert!(applied_seqs.contains(&c), "the cursor is a seq a frame carried");
        }
        // every frame is accounted for: applied, or dropped with a reason
        let counters = store.all_counters().unwrap();
        let frames: i64 = counters.iter().filter(|(k, _)| k.starts_with("frame/")).map(|(_, v)| v).sum();
        let dropped: i64 = counters.iter().filter(|(k, _)| k.starts_with("dropped/")).map(|(_, v)| v).sum();
        prop_assert!(frames + dropped >= picks.len() as i64, "{counters:?}");
        drop(store);
        prop_assert!(Store::open(dir.path()).is_ok(), "the store reopens");
    }
}
