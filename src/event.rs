//! The one event type between sources and the writer: what a frame means
//! for the store, owned, so it can cross from the socket (or file) stage to
//! the writer thread. [`from_frame_bytes`] is the step every source shares:
//! decode, count, log, and turn the outcome into an [`Event`].

use crate::firehose::frame::{self, Action, Frame, Verify};
use crate::identity::verify::{SigInput, SigStatus};
use crate::metrics;

/// The collections whose records are stored (the instance map reads them).
/// The one place to add a collection: ingest hashes, validates and keeps the
/// records of exactly these.
pub const STORED_COLLECTIONS: &[&str] = &[LABELER_SERVICE, "dev.instancemap.declaration", "dev.instancemap.membership"];

/// A labeler's service record (its report scope, its label values).
pub const LABELER_SERVICE: &str = "app.bsky.labeler.service";

/// A record write of a stored collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordWrite {
    pub action: Action,
    pub collection: String,
    pub rkey: String,
    /// Record CID (binary), `None` for delete.
    pub cid: Option<Vec<u8>>,
    /// Verified DAG-CBOR record bytes; `None` for delete or a missing block.
    pub record: Option<Vec<u8>>,
}

/// What happened, for the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Commit {
        did: String,
        rev: String,
        /// `(action, collection)` of every op.
        ops: Vec<(Action, String)>,
        /// Writes to stored collections.
        records: Vec<RecordWrite>,
        /// Create/update ops whose record block was not in the slice.
        blocks_missing: u32,
        /// What the signature check covers (`None`: the commit block had no
        /// signature to cut out, which the decoder already refuses).
        sig: Option<SigInput>,
        /// The check's outcome, filled in before the writer applies it.
        signature: SigStatus,
    },
    Sync {
        did: String,
        rev: String,
        /// What the signature check of its commit block covers, as for
        /// `Commit`.
        sig: Option<SigInput>,
        signature: SigStatus,
    },
    Identity {
        did: String,
        handle: Option<String>,
    },
    Account {
        did: String,
        active: bool,
        status: Option<String>,
    },
    /// `#info`; `name` is the server's text (logged), counted under a
    /// bounded label.
    Info {
        name: String,
        message: Option<String>,
    },
    /// An error frame from the server.
    StreamError {
        error: String,
        message: Option<String>,
    },
    /// A deprecated (`#handle`, `#migrate`, `#tombstone`) or unknown frame:
    /// counted and skipped.
    Skipped {
        deprecated: bool,
    },
    /// A frame that did not decode; `reason` is [`frame::FrameError::reason`].
    Rejected {
        reason: &'static str,
    },
}

/// One event. `seq` moves the cursor; `time_us` is the frame's `time`
/// (microseconds since the epoch) where it parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: Option<i64>,
    pub time_us: Option<i64>,
    pub kind: EventKind,
}

impl Event {
    /// The bounded label of this event's frame type.
    pub fn kind_label(&self) -> &'static str {
        match &self.kind {
            EventKind::Commit { .. } => "#commit",
            EventKind::Sync { .. } => "#sync",
            EventKind::Identity { .. } => "#identity",
            EventKind::Account { .. } => "#account",
            EventKind::Info { .. } => "#info",
            EventKind::StreamError { .. } => "error",
            EventKind::Skipped { deprecated: true } => "deprecated",
            EventKind::Skipped { deprecated: false } => "unknown",
            EventKind::Rejected { .. } => "rejected",
        }
    }
}

/// Decodes one raw frame into an event, counting it in the metrics and
/// logging a rejection once. Never fails: a bad frame is a `Rejected` event.
pub fn from_frame_bytes(bytes: &[u8]) -> Event {
    match frame::decode(bytes, Verify::Used { kept: STORED_COLLECTIONS }) {
        Ok(f) => {
            metrics::FRAMES.with_label_values(&[f.kind()]).inc();
            from_frame(&f)
        }
        Err(e) => {
            let reason = e.reason();
            metrics::DECODE_ERRORS.with_label_values(&[reason]).inc();
            tracing::warn!(reason, len = bytes.len(), error = %e, "frame rejected");
            Event { seq: None, time_us: None, kind: EventKind::Rejected { reason } }
        }
    }
}

/// What the signature check of a commit block covers; `claimed`: the
/// times the event claims (see [`SigInput::claimed_us`]).
fn sig_input(commit_block: Option<&[u8]>, claimed: &[Option<i64>]) -> Option<SigInput> {
    let (digest, sig) = crate::repo::commit::unsigned_digest(commit_block?).ok()?;
    Some(SigInput { digest, sig: sig.to_vec(), claimed_us: SigInput::latest(claimed) })
}

/// Turns a decoded frame into an owned event.
pub fn from_frame(f: &Frame<'_>) -> Event {
    let seq = f.seq();
    let time_us = f.time().and_then(crate::clock::parse_time_us);
    let kind = match f {
        Frame::Commit(c) => {
            let mut records = Vec::new();
            let mut blocks_missing = 0;
            let mut ops = Vec::with_capacity(c.ops.len());
            for op in &c.ops {
                ops.push((op.action, op.collection.to_owned()));
                if op.block_missing() {
                    blocks_missing += 1;
                }
                if STORED_COLLECTIONS.contains(&op.collection) {
                    records.push(RecordWrite {
                        action: op.action,
                        collection: op.collection.to_owned(),
                        rkey: op.rkey.to_owned(),
                        cid: op.cid.map(<[u8]>::to_vec),
                        record: op.block.filter(|_| op.verified).map(<[u8]>::to_vec),
                    });
                }
            }
            // the frame's rev is the commit object's (the decoder checks)
            let claimed = [crate::types::tid_time_us(c.rev), time_us];
            let sig = sig_input(c.blocks.get(c.commit), &claimed);
            EventKind::Commit {
                did: c.repo.to_owned(),
                rev: c.rev.to_owned(),
                ops,
                records,
                blocks_missing,
                sig,
                signature: SigStatus::NotChecked,
            }
        }
        Frame::Sync(s) => {
            // A #sync re-announces a repo's current commit, which may have
            // been made (and signed) long before: a migrated account's
            // imported repo is signed by its old key, and the new PDS
            // announces it after the rotation (the reference PDS does, on
            // activation). The time that counts is the signed commit's own
            // rev; the frame's rev and time say when it was announced.
            let claimed = [s.object.rev.and_then(crate::types::tid_time_us)];
            EventKind::Sync {
                did: s.did.to_owned(),
                rev: s.rev.to_owned(),
                sig: sig_input(s.blocks.get(s.commit), &claimed),
                signature: SigStatus::NotChecked,
            }
        }
        Frame::Identity(i) => EventKind::Identity {
            did: i.did.to_owned(),
            // A syntactically invalid handle is recorded as `handle.invalid`,
            // the protocol's own marker, rather than stored verbatim.
            handle: i.handle.map(|h| {
                if crate::types::is_handle(h) {
                    h.to_ascii_lowercase()
                } else {
                    "handle.invalid".to_owned()
                }
            }),
        },
        Frame::Account(a) => {
            EventKind::Account { did: a.did.to_owned(), active: a.active, status: a.status.map(str::to_owned) }
        }
        Frame::Info { name, message } => {
            let hint = if *name == "OutdatedCursor" {
                "the cursor is older than the relay's replay window: events in between are missed"
            } else {
                ""
            };
            tracing::warn!(name, message = message.unwrap_or(""), hint, "#info from the relay");
            EventKind::Info { name: (*name).to_owned(), message: message.map(str::to_owned) }
        }
        Frame::Error { error, message } => {
            let hint = match *error {
                "FutureCursor" => "the stored cursor is ahead of this relay (was it reset, or is it another relay?); operator action needed",
                "ConsumerTooSlow" => "the relay dropped us for reading too slowly; reconnecting from the cursor",
                _ => "reconnecting from the cursor",
            };
            tracing::error!(error, message = message.unwrap_or(""), hint, "error frame from the relay");
            EventKind::StreamError { error: (*error).to_owned(), message: message.map(str::to_owned) }
        }
        Frame::Skipped(s) => {
            tracing::warn!(t = s.t, seq = s.seq, deprecated = s.deprecated, "frame type skipped");
            EventKind::Skipped { deprecated: s.deprecated }
        }
    };
    Event { seq, time_us, kind }
}
