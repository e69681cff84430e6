//! One `subscribeRepos` binary frame → a typed [`Frame`] borrowed from its
//! bytes. Pure: no I/O, metrics or logging, so benches and fuzzers call
//! [`decode`] directly and callers count and log the [`FrameError`].
//!
//! A frame is a DAG-CBOR header `{op, t}` followed by a DAG-CBOR body. The
//! decoder reads only the fields instancemap uses and skips the rest (unknown
//! fields are allowed by the protocol). For `#commit` it indexes the CAR slice
//! without copying, checks the commit block against its CID, and, for each
//! create/update op, finds the record block by the op's CID. Which blocks are
//! hashed is the [`Verify`] mode's choice: the ingest path hashes only the
//! blocks it uses (commit block, kept records); [`Verify::All`] hashes every
//! block and validates every record as DAG-CBOR.

use crate::repo::car::{self, CarError, CarSlice};
use crate::repo::cbor::{self, CborError, Reader};
use crate::repo::cid;
use crate::types;

/// Largest frame accepted: the protocol's hard limit for firehose frames is
/// 5 MB; 5 MiB leaves room for the header and encoding overhead.
pub const MAX_FRAME_BYTES: usize = 5 * 1024 * 1024;

/// Why a frame was rejected. Each variant maps to one bounded label
/// ([`FrameError::reason`]) used in metrics and in the store's error counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("header: {0}")]
    Header(CborError),
    #[error("header has no valid op/t: {0}")]
    HeaderShape(&'static str),
    #[error("{t} body: {err}")]
    Body { t: &'static str, err: CborError },
    #[error("{t} body: missing field {field}")]
    MissingField { t: &'static str, field: &'static str },
    #[error("{t} body: bad field {field}: {why}")]
    BadField { t: &'static str, field: &'static str, why: &'static str },
    #[error("bytes after the body")]
    TrailingBytes,
    #[error("CAR slice: {0}")]
    Car(CarError),
    #[error("commit block is not in the CAR slice")]
    CommitBlockMissing,
    #[error("block does not hash to its CID ({what})")]
    CidMismatch { what: &'static str },
    #[error("commit object: {0}")]
    CommitObject(&'static str),
    #[error("record block is not valid DAG-CBOR: {0}")]
    Record(CborError),
}

impl FrameError {
    /// The metric and stats label of this error (a small fixed set).
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLarge(_) => "frame_too_large",
            FrameError::Empty => "empty_frame",
            FrameError::Header(e) | FrameError::Body { err: e, .. } => e.reason(),
            FrameError::HeaderShape(_) => "bad_header",
            FrameError::MissingField { .. } => "missing_field",
            FrameError::BadField { .. } => "bad_field",
            FrameError::TrailingBytes => "trailing_bytes",
            FrameError::Car(_) => "bad_car",
            FrameError::CommitBlockMissing => "commit_block_missing",
            FrameError::CidMismatch { .. } => "cid_mismatch",
            FrameError::CommitObject(_) => "bad_commit_object",
            FrameError::Record(_) => "bad_record",
        }
    }

    /// Every label [`reason`](Self::reason) can return, for pre-registering
    /// metrics and documenting `stats`.
    pub const REASONS: &'static [&'static str] = &[
        "frame_too_large",
        "empty_frame",
        "truncated",
        "length_too_large",
        "too_deep",
        "invalid_cbor",
        "bad_header",
        "missing_field",
        "bad_field",
        "trailing_bytes",
        "bad_car",
        "commit_block_missing",
        "cid_mismatch",
        "bad_commit_object",
        "bad_record",
    ];
}

/// Which blocks the decoder hashes against their CIDs.
#[derive(Debug, Clone, Copy)]
pub enum Verify<'k> {
    /// The ingest path: the commit block, and the record blocks of the
    /// collections listed (which are also validated as DAG-CBOR).
    Used { kept: &'k [&'k str] },
    /// Every block of the slice is hashed and every record block validated.
    All,
}

/// A record operation of a `#commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
    pub const ALL: [Action; 3] = [Action::Create, Action::Update, Action::Delete];
    /// [`Action::as_str`] of each of [`Action::ALL`] (a metric label set).
    pub const LABELS: &'static [&'static str] = &["create", "update", "delete"];
}

/// One `#repoOp`, with its record block when the slice has it.
#[derive(Debug, Clone)]
pub struct Op<'a> {
    pub action: Action,
    pub collection: &'a str,
    pub rkey: &'a str,
    /// New record CID (binary) for create/update; `None` for delete.
    pub cid: Option<&'a [u8]>,
    /// Previous record CID (sync 1.1) for update/delete.
    pub prev: Option<&'a [u8]>,
    /// The record block for create/update, if present in the slice. Hashed
    /// and validated only when the [`Verify`] mode says so (see `verified`).
    pub block: Option<&'a [u8]>,
    /// Whether `block` was hashed against `cid` and validated.
    pub verified: bool,
}

impl Op<'_> {
    /// A create/update whose record block is not in the slice.
    pub fn block_missing(&self) -> bool {
        self.action != Action::Delete && self.block.is_none()
    }
}

/// The signed commit object inside the slice.
#[derive(Debug, Clone, Copy)]
pub struct CommitObject<'a> {
    pub did: &'a str,
    pub version: u64,
    pub rev: Option<&'a str>,
    /// MST root (binary CID).
    pub data: &'a [u8],
    pub sig: &'a [u8],
}

#[derive(Debug, Clone)]
pub struct Commit<'a> {
    pub seq: i64,
    pub repo: &'a str,
    pub commit: &'a [u8],
    pub rev: &'a str,
    pub since: Option<&'a str>,
    pub prev_data: Option<&'a [u8]>,
    pub time: &'a str,
    pub ops: Vec<Op<'a>>,
    pub blocks: CarSlice<'a>,
    pub object: CommitObject<'a>,
}

#[derive(Debug, Clone)]
pub struct Sync<'a> {
    pub seq: i64,
    pub did: &'a str,
    pub rev: &'a str,
    pub time: &'a str,
    /// The commit's CID (the CAR's root) and the CAR, which holds its block.
    pub commit: &'a [u8],
    pub blocks: CarSlice<'a>,
    pub object: CommitObject<'a>,
}

#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub seq: i64,
    pub did: &'a str,
    pub time: &'a str,
    pub handle: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct Account<'a> {
    pub seq: i64,
    pub did: &'a str,
    pub time: &'a str,
    pub active: bool,
    pub status: Option<&'a str>,
}

/// A frame of a type instancemap does not apply: the removed `#handle`,
/// `#migrate`, `#tombstone`, or an unknown `t`/`op`. Its `seq` (if any) still
/// moves the cursor.
#[derive(Debug, Clone)]
pub struct Skipped<'a> {
    pub t: &'a str,
    pub seq: Option<i64>,
    pub did: Option<&'a str>,
    pub deprecated: bool,
}

/// A decoded frame.
#[derive(Debug, Clone)]
pub enum Frame<'a> {
    Commit(Commit<'a>),
    Sync(Sync<'a>),
    Identity(Identity<'a>),
    Account(Account<'a>),
    /// `#info` (e.g. `OutdatedCursor`); carries no seq.
    Info {
        name: &'a str,
        message: Option<&'a str>,
    },
    /// An error frame (`op = -1`); the server closes the stream after it.
    Error {
        error: &'a str,
        message: Option<&'a str>,
    },
    Skipped(Skipped<'a>),
}

impl Frame<'_> {
    /// The header type label: `#commit`, …, `error`, or `deprecated` /
    /// `unknown` for skipped frames (bounded, for metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Commit(_) => "#commit",
            Frame::Sync(_) => "#sync",
            Frame::Identity(_) => "#identity",
            Frame::Account(_) => "#account",
            Frame::Info { .. } => "#info",
            Frame::Error { .. } => "error",
            Frame::Skipped(s) if s.deprecated => "deprecated",
            Frame::Skipped(_) => "unknown",
        }
    }

    /// The frame's sequence number, where it has one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Frame::Commit(c) => Some(c.seq),
            Frame::Sync(s) => Some(s.seq),
            Frame::Identity(i) => Some(i.seq),
            Frame::Account(a) => Some(a.seq),
            Frame::Skipped(s) => s.seq,
            Frame::Info { .. } | Frame::Error { .. } => None,
        }
    }

    /// The frame's `time` field, where it has one.
    pub fn time(&self) -> Option<&str> {
        match self {
            Frame::Commit(c) => Some(c.time),
            Frame::Sync(s) => Some(s.time),
            Frame::Identity(i) => Some(i.time),
            Frame::Account(a) => Some(a.time),
            _ => None,
        }
    }
}

/// Every frame kind label, for pre-registering metrics.
pub const KINDS: &[&str] = &["#commit", "#sync", "#identity", "#account", "#info", "error", "deprecated", "unknown"];

/// Decodes one frame. See the module docs for what is checked.
pub fn decode<'a>(buf: &'a [u8], verify: Verify<'_>) -> Result<Frame<'a>, FrameError> {
    if buf.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(buf.len()));
    }
    if buf.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut r = Reader::new(buf);
    let (op, t) = header(&mut r)?;
    let frame = match (op, t) {
        (1, Some("#commit")) => Frame::Commit(commit(&mut r, verify)?),
        (1, Some("#sync")) => Frame::Sync(sync(&mut r)?),
        (1, Some("#identity")) => Frame::Identity(identity(&mut r)?),
        (1, Some("#account")) => Frame::Account(account(&mut r)?),
        (1, Some("#info")) => info(&mut r)?,
        (-1, _) => error(&mut r)?,
        (_, t) => {
            let t = t.unwrap_or("");
            let deprecated = op == 1 && matches!(t, "#handle" | "#migrate" | "#tombstone");
            Frame::Skipped(skipped(&mut r, t, deprecated)?)
        }
    };
    if !r.is_empty() {
        return Err(FrameError::TrailingBytes);
    }
    Ok(frame)
}

fn header<'a>(r: &mut Reader<'a>) -> Result<(i64, Option<&'a str>), FrameError> {
    let n = r.map().map_err(FrameError::Header)?;
    let mut op = None;
    let mut t = None;
    for _ in 0..n {
        match r.key().map_err(FrameError::Header)? {
            b"op" => op = Some(r.int().map_err(|_| FrameError::HeaderShape("op is not an integer"))?),
            b"t" => t = Some(r.text().map_err(|_| FrameError::HeaderShape("t is not a string"))?),
            _ => r.skip().map_err(FrameError::Header)?,
        }
    }
    let op = op.ok_or(FrameError::HeaderShape("no op"))?;
    if op == 1 && t.is_none() {
        return Err(FrameError::HeaderShape("op 1 without t"));
    }
    Ok((op, t))
}

/// Per-body-type error helpers.
struct Body {
    t: &'static str,
}

impl Body {
    fn cbor(&self) -> impl Fn(CborError) -> FrameError + '_ {
        move |err| FrameError::Body { t: self.t, err }
    }
    fn bad(&self, field: &'static str, why: &'static str) -> FrameError {
        FrameError::BadField { t: self.t, field, why }
    }
    fn need<T>(&self, v: Option<T>, field: &'static str) -> Result<T, FrameError> {
        v.ok_or(FrameError::MissingField { t: self.t, field })
    }
    /// Reads a field's value with `f`, mapping a wrong type to `BadField`
    /// while keeping truncation and bombs as CBOR errors.
    fn field<'a, T>(
        &self,
        r: &mut Reader<'a>,
        field: &'static str,
        f: impl FnOnce(&mut Reader<'a>) -> cbor::Result<T>,
    ) -> Result<T, FrameError> {
        f(r).map_err(|e| match e {
            CborError::Invalid(why) => self.bad(field, why),
            e => (self.cbor())(e),
        })
    }
    fn seq(&self, r: &mut Reader<'_>) -> Result<i64, FrameError> {
        let s = self.field(r, "seq", Reader::int)?;
        if s < 0 {
            return Err(self.bad("seq", "negative"));
        }
        Ok(s)
    }
    fn did<'a>(&self, r: &mut Reader<'a>, field: &'static str) -> Result<&'a str, FrameError> {
        let d = self.field(r, field, Reader::text)?;
        if !types::is_did(d) {
            return Err(self.bad(field, "not a DID"));
        }
        Ok(d)
    }
}

fn commit<'a>(r: &mut Reader<'a>, verify: Verify<'_>) -> Result<Commit<'a>, FrameError> {
    let b = Body { t: "#commit" };
    let n = r.map().map_err(b.cbor())?;
    let (mut seq, mut repo, mut cid_, mut rev, mut since, mut time) = (None, None, None, None, None, None);
    let (mut blocks, mut prev_data, mut ops_at) = (None, None, None);
    for _ in 0..n {
        match r.key().map_err(b.cbor())? {
            b"seq" => seq = Some(b.seq(r)?),
            b"repo" => repo = Some(b.did(r, "repo")?),
            b"commit" => cid_ = Some(b.field(r, "commit", Reader::cid)?),
            b"rev" => rev = Some(b.field(r, "rev", Reader::text)?),
            b"since" => since = Some(b.field(r, "since", Reader::text_or_null)?),
            b"time" => time = Some(b.field(r, "time", Reader::text)?),
            b"blocks" => blocks = Some(b.field(r, "blocks", Reader::bytes)?),
            b"prevData" => prev_data = b.field(r, "prevData", Reader::cid_or_null)?,
            b"ops" => {
                // Ops refer to blocks, which may come later in the map: note
                // where the array is and read it once the slice is indexed.
                ops_at = Some(r.clone());
                r.skip().map_err(b.cbor())?;
            }
            _ => r.skip().map_err(b.cbor())?,
        }
    }
    let seq = b.need(seq, "seq")?;
    let repo = b.need(repo, "repo")?;
    let commit_cid = b.need(cid_, "commit")?;
    let rev = b.need(rev, "rev")?;
    if !types::is_tid(rev) {
        return Err(b.bad("rev", "not a TID"));
    }
    let time = b.need(time, "time")?;
    let blocks = car::index(b.need(blocks, "blocks")?).map_err(FrameError::Car)?;
    let mut ops_r = b.need(ops_at, "ops")?;
    let object = commit_object(&blocks, commit_cid, repo, Some(rev))?;

    let count = b.field(&mut ops_r, "ops", Reader::array)?;
    if count > MAX_OPS {
        return Err(b.bad("ops", "more than 200 ops (the lexicon's maximum)"));
    }
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        ops.push(op(&b, &mut ops_r, &blocks, verify)?);
    }
    if let Verify::All = verify {
        for (c, block) in &blocks.blocks {
            if !cid::verify(c, block) {
                return Err(FrameError::CidMismatch { what: "slice block" });
            }
        }
        for o in ops.iter_mut() {
            if let Some(block) = o.block {
                cbor::validate(block).map_err(FrameError::Record)?;
                o.verified = true;
            }
        }
    }
    Ok(Commit { seq, repo, commit: commit_cid, rev, since: since.flatten(), prev_data, time, ops, blocks, object })
}

fn op<'a>(b: &Body, r: &mut Reader<'a>, blocks: &CarSlice<'a>, verify: Verify<'_>) -> Result<Op<'a>, FrameError> {
    let n = b.field(r, "ops", Reader::map)?;
    let (mut action, mut path, mut cid_, mut prev) = (None, None, None, None);
    for _ in 0..n {
        match r.key().map_err(b.cbor())? {
            b"action" => {
                action = Some(match b.field(r, "ops.action", Reader::text)? {
                    "create" => Action::Create,
                    "update" => Action::Update,
                    "delete" => Action::Delete,
                    _ => return Err(b.bad("ops.action", "not create, update or delete")),
                })
            }
            b"path" => path = Some(b.field(r, "ops.path", Reader::text)?),
            b"cid" => cid_ = b.field(r, "ops.cid", Reader::cid_or_null)?,
            b"prev" => prev = b.field(r, "ops.prev", Reader::cid_or_null)?,
            _ => r.skip().map_err(b.cbor())?,
        }
    }
    let action = b.need(action, "ops.action")?;
    let path = b.need(path, "ops.path")?;
    let (collection, rkey) = types::split_repo_path(path).ok_or(b.bad("ops.path", "not collection/rkey"))?;
    let mut block = None;
    let mut verified = false;
    if action != Action::Delete {
        let c = cid_.ok_or(b.bad("ops.cid", "null for create/update"))?;
        block = blocks.get(c);
        if let (Some(bytes), Verify::Used { kept }) = (block, verify) {
            if kept.contains(&collection) {
                if !cid::verify(c, bytes) {
                    return Err(FrameError::CidMismatch { what: "record block" });
                }
                cbor::validate(bytes).map_err(FrameError::Record)?;
                verified = true;
            }
        }
    }
    Ok(Op { action, collection, rkey, cid: cid_, prev, block, verified })
}

/// Most ops a `#commit` may carry (`com.atproto.sync.subscribeRepos#commit`:
/// `ops` maxLength 200); a frame with more is refused, so the work per
/// frame is bounded.
pub const MAX_OPS: usize = 200;

/// Finds, hashes and reads the commit block; checks it against the frame.
fn commit_object<'a>(
    blocks: &CarSlice<'a>,
    commit_cid: &[u8],
    did: &str,
    rev: Option<&str>,
) -> Result<CommitObject<'a>, FrameError> {
    let block = blocks.get(commit_cid).ok_or(FrameError::CommitBlockMissing)?;
    if !cid::verify(commit_cid, block) {
        return Err(FrameError::CidMismatch { what: "commit block" });
    }
    let bad = |_| FrameError::CommitObject("not a commit map");
    let mut r = Reader::new(block);
    let n = r.map().map_err(bad)?;
    let (mut odid, mut version, mut orev, mut data, mut sig) = (None, None, None, None, None);
    for _ in 0..n {
        match r.key().map_err(bad)? {
            b"did" => odid = Some(r.text().map_err(bad)?),
            b"version" => version = Some(r.uint().map_err(bad)?),
            b"rev" => orev = Some(r.text().map_err(bad)?),
            b"data" => data = Some(r.cid().map_err(bad)?),
            b"sig" => sig = Some(r.bytes().map_err(bad)?),
            _ => r.skip().map_err(bad)?,
        }
    }
    let object = CommitObject {
        did: odid.ok_or(FrameError::CommitObject("no did"))?,
        version: version.ok_or(FrameError::CommitObject("no version"))?,
        rev: orev,
        data: data.ok_or(FrameError::CommitObject("no data"))?,
        sig: sig.ok_or(FrameError::CommitObject("no sig"))?,
    };
    if object.did != did {
        return Err(FrameError::CommitObject("did differs from the frame's"));
    }
    if let (Some(want), Some(got)) = (rev, object.rev) {
        if want != got {
            return Err(FrameError::CommitObject("rev differs from the frame's"));
        }
    }
    Ok(object)
}

fn sync<'a>(r: &mut Reader<'a>) -> Result<Sync<'a>, FrameError> {
    let b = Body { t: "#sync" };
    let n = r.map().map_err(b.cbor())?;
    let (mut seq, mut did, mut rev, mut time, mut blocks) = (None, None, None, None, None);
    for _ in 0..n {
        match r.key().map_err(b.cbor())? {
            b"seq" => seq = Some(b.seq(r)?),
            b"did" => did = Some(b.did(r, "did")?),
            b"rev" => rev = Some(b.field(r, "rev", Reader::text)?),
            b"time" => time = Some(b.field(r, "time", Reader::text)?),
            b"blocks" => blocks = Some(b.field(r, "blocks", Reader::bytes)?),
            _ => r.skip().map_err(b.cbor())?,
        }
    }
    let (seq, did, rev, time) = (b.need(seq, "seq")?, b.need(did, "did")?, b.need(rev, "rev")?, b.need(time, "time")?);
    if !types::is_tid(rev) {
        return Err(b.bad("rev", "not a TID"));
    }
    let slice = car::index(b.need(blocks, "blocks")?).map_err(FrameError::Car)?;
    let root = slice.root.ok_or(FrameError::Car(CarError::Header("no root")))?;
    // The rev is not compared here: the reference PDS emits `#sync` frames
    // whose `rev` is newer than the commit block's (seen in its recorded
    // frames), and the frame's rev is the one the lexicon defines.
    let object = commit_object(&slice, root, did, None)?;
    Ok(Sync { seq, did, rev, time, commit: root, blocks: slice, object })
}

fn identity<'a>(r: &mut Reader<'a>) -> Result<Identity<'a>, FrameError> {
    let b = Body { t: "#identity" };
    let n = r.map().map_err(b.cbor())?;
    let (mut seq, mut did, mut time, mut handle) = (None, None, None, None);
    for _ in 0..n {
        match r.key().map_err(b.cbor())? {
            b"seq" => seq = Some(b.seq(r)?),
            b"did" => did = Some(b.did(r, "did")?),
            b"time" => time = Some(b.field(r, "time", Reader::text)?),
            b"handle" => handle = b.field(r, "handle", Reader::text_or_null)?,
            _ => r.skip().map_err(b.cbor())?,
        }
    }
    Ok(Identity { seq: b.need(seq, "seq")?, did: b.need(did, "did")?, time: b.need(time, "time")?, handle })
}

fn account<'a>(r: &mut Reader<'a>) -> Result<Account<'a>, FrameError> {
    let b = Body { t: "#account" };
    let n = r.map().map_err(b.cbor())?;
    let (mut seq, mut did, mut time, mut active, mut status) = (None, None, None, None, None);
    for _ in 0..n {
        match r.key().map_err(b.cbor())? {
            b"seq" => seq = Some(b.seq(r)?),
            b"did" => did = Some(b.did(r, "did")?),
            b"time" => time = Some(b.field(r, "time", Reader::text)?),
            b"active" => active = Some(b.field(r, "active", Reader::bool)?),
            b"status" => status = b.field(r, "status", Reader::text_or_null)?,
            _ => r.skip().map_err(b.cbor())?,
        }
    }
    if status.is_some_and(|s| s.is_empty() || s.len() > 64) {
        return Err(b.bad("status", "empty or longer than 64 bytes"));
    }
    Ok(Account {
        seq: b.need(seq, "seq")?,
        did: b.need(did, "did")?,
        time: b.need(time, "time")?,
        active: b.need(active, "active")?,
        status,
    })
}

/// `#info` `{name, message?}` and error `{error, message?}` bodies: a
/// required text under `key` and an optional `message`.
fn text_and_message<'a>(
    r: &mut Reader<'a>,
    t: &'static str,
    key: &'static str,
) -> Result<(&'a str, Option<&'a str>), FrameError> {
    let b = Body { t };
    let n = r.map().map_err(b.cbor())?;
    let (mut value, mut message) = (None, None);
    for _ in 0..n {
        match r.key().map_err(b.cbor())? {
            k if k == key.as_bytes() => value = Some(b.field(r, key, Reader::text)?),
            b"message" => message = b.field(r, "message", Reader::text_or_null)?,
            _ => r.skip().map_err(b.cbor())?,
        }
    }
    Ok((b.need(value, key)?, message))
}

fn info<'a>(r: &mut Reader<'a>) -> Result<Frame<'a>, FrameError> {
    let (name, message) = text_and_message(r, "#info", "name")?;
    Ok(Frame::Info { name, message })
}

fn error<'a>(r: &mut Reader<'a>) -> Result<Frame<'a>, FrameError> {
    let (error, message) = text_and_message(r, "error", "error")?;
    Ok(Frame::Error { error, message })
}

fn skipped<'a>(r: &mut Reader<'a>, t: &'a str, deprecated: bool) -> Result<Skipped<'a>, FrameError> {
    let b = Body { t: "skipped" };
    let mut out = Skipped { t, seq: None, did: None, deprecated };
    // An unknown body need not be a map; skip it whole if it is not.
    if r.peek().map(|h| h >> 5) != Some(cbor::MAP) {
        r.skip().map_err(b.cbor())?;
        return Ok(out);
    }
    let n = r.map().map_err(b.cbor())?;
    for _ in 0..n {
        let key = if r.peek().map(|h| h >> 5) == Some(cbor::TEXT) {
            Some(r.text().map_err(b.cbor())?)
        } else {
            r.skip().map_err(b.cbor())?;
            None
        };
        let mut value = r.clone();
        r.skip().map_err(b.cbor())?;
        match key {
            Some("seq") => out.seq = value.int().ok().filter(|s| *s >= 0),
            Some("did") => out.did = value.text().ok().filter(|d| types::is_did(d)),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_labels_are_the_actions_names() {
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names, Action::LABELS);
    }
}
