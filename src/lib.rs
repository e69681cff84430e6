//! instancemap: maps the ATProto network into instances by observation.
//!
//! Data flow:
//!
//! ```text
//!  relay firehose (WebSocket) ─┐                                 identity::verify pool (signatures,
//!  frame files (replay)       ─┴─► event::from_frame_bytes ─► app::Checker ─► queue ─┐   key in force)
//!                                  (firehose::frame, repo)                           ▼
//!  PLC export (HTTP or file) ─► plc::load ─┐                                  ingest, on the writer
//!  DID / handle resolution ─► identity ────┼─► store::Writer ─► source batches ─► thread: the single
//!  host crawls ─► hosts ───────────────────┤                                  writer (store::Batch,
//!  API admin routes ───────────────────────┘                                  cursor in the batch)
//!                                                                                    │ marks
//!                                             cluster::maintain::Maintainer ◄─────────┤ (map_dirty)
//!                                                  (the map's own families)          ▼
//!  api (XRPC, explorer, /metrics), export, stats ◄── StoreReader, MapReader ◄── store (RocksDB; MemStore)
//! ```
//!
//! The seams: every source hands typed changes (a [`store::Batch`]) to the
//! single writer, never writing on its own (`run` refuses writes from any
//! other thread); the map maintainer is the one other writer, of the map's
//! families (through the same batch's map operations); readers use
//! [`store::StoreReader`] and [`store::map::MapReader`]. No file outside
//! `store/` names a column family, a key layout or a codec. The module graph has no
//! circle (`tests/imports.rs`): the floor is [`clock`], [`types`],
//! [`metrics`], [`repo`] and [`store`]; the sources use the floor; the map
//! uses the sources' record types through the store; the app wires it all.
//!
//! Layout, one module per stage:
//! - [`clock`]: time helpers (ms, RFC 3339, days), importing nothing.
//! - [`types`]: syntax of DIDs, handles, NSIDs, record keys, TIDs and
//!   endpoints (one host, one key: the `url` crate and IDNA).
//! - [`metrics`]: every metric name, in one catalogue; a leaf (the app hands
//!   it the stages' label sets).
//! - [`repo`]: pure DAG-CBOR, CID and CAR reading.
//! - [`store`]: RocksDB column families, the reader and writer traits, the
//!   typed batch, the stored record types (`store::records`), the map's
//!   families (`store::map`) and an in-memory twin (`store::mem`).
//! - [`firehose`]: the relay subscription (`subscribe`), pure frame decoding
//!   (`frame`), recorded frame files (`framelog`).
//! - [`event`]: the one event type from the firehose sources to the writer.
//! - [`plc`]: the PLC directory export → PLC operations.
//! - [`identity`]: keys, DID documents, handles, resolution, signature checks.
//! - [`hosts`]: the host crawler (describeServer, _health, listRepos; the
//!   relay's listHosts).
//! - [`net`]: guarded outbound HTTP to hosts named by network data (SSRF).
//! - [`cluster`]: evidence and instances (`mod`), assignment (`assign`),
//!   declarations and their verification (`declaration`), the structure
//!   refresh (`structure`), the incremental maintainer (`maintain`), the
//!   full recompute (`recompute`), concentration, the shared readers
//!   (`map`), explanations and history.
//! - [`ingest`]: the single writer: batches, exactly-once by cursor.
//! - [`api`]: the HTTP endpoint (XRPC, OpenAPI, /metrics, /healthz) and the
//!   explorer's web pages (`api::explorer`, made from the XRPC answers).
//! - [`export`]: Parquet, NDJSON and CSV snapshots.
//! - [`inspect`]: one account's record, for `instancemap account`.
//! - [`stats`]: what the database holds, for `instancemap stats`.
//! - [`config`]: command line and `INSTANCEMAP_*` variables → validated settings.
//! - [`app`]: wires the stages for each command: channels, writer thread,
//!   maintainer, one shutdown token.
//! - [`cli`]: the one-shot commands' output and exit codes (`main` is glue).

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod event;
pub mod export;
pub mod firehose;
pub mod hosts;
pub mod identity;
pub mod ingest;
pub mod inspect;
pub mod metrics;
pub mod net;
pub mod plc;
pub mod repo;
pub mod stats;
pub mod store;
pub mod types;
