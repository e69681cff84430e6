//! instancemap: maps the ATProto network into instances by observation.
//!
//! Data flow (built so far: the ingest core and the first part of identity;
//! resolution on demand, hosts, clustering and the query API build on it):
//!
//! ```text
//!  relay firehose (WebSocket)  ─┐                                   identity::verify pool
//!  frame files (replay)        ─┴─► event::from_frame_bytes ─► app::Checker ─► queue ─► ingest (single writer) ─► store (RocksDB)
//!                                   (firehose::frame, repo)    (signature checks)                                   ▲   │
//!  PLC export (HTTP or file) ─► plc::source ─► plc::load (merge operands) ──────────────────────────────────────────┘   ├─► stats, account
//!                                                       api: /metrics, /healthz ◄─ metrics                              │
//! ```
//!
//! Layout, one module per stage:
//! - [`config`]: command line and `INSTANCEMAP_*` variables → validated settings.
//! - [`app`]: wires the stages for each command; one shutdown token.
//! - [`firehose`]: the relay subscription (`subscribe`), pure frame decoding
//!   (`frame`), recorded frame files (`framelog`).
//! - [`repo`]: pure DAG-CBOR, CID and CAR reading.
//! - [`identity`]: keys, DID documents, commit signature checks (resolution
//!   on demand and handle verification to come).
//! - [`cluster`]: evidence and instance assignment, pure (the start of the
//!   instance map; not yet wired to the store).
//! - [`hosts`]: the host table and its crawler (describeServer, _health,
//!   listRepos; the relay's listHosts).
//! - [`plc`]: the PLC directory export → per-DID identity state.
//! - [`net`]: guarded outbound HTTP to hosts named by network data (SSRF).
//! - [`event`]: the one event type from sources to the writer, and the
//!   collections whose records are stored.
//! - [`ingest`]: the single writer: batches, exactly-once by cursor.
//! - [`store`]: RocksDB column families.
//! - [`inspect`]: one account's record, for `instancemap account`.
//! - [`stats`]: what the database holds, for `instancemap stats`.
//! - [`metrics`]: every metric name, in one catalogue.
//! - [`api`]: the HTTP endpoint.
//! - [`types`]: syntax of DIDs, handles, NSIDs, record keys, TIDs.

pub mod api;
pub mod app;
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
