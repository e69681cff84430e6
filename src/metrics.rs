//! Every metric instancemap exports, in one catalogue. Names follow
//! `instancemap_<stage>_<name>_<unit>[_total]`; labels come from small fixed
//! sets (frame types, reasons, actions), never a DID, handle or hostname.
//! Dashboards may use only the names in [`NAMES`]; a test checks it.

use std::sync::LazyLock;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The registry `/metrics` serves.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    REGISTRY.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    REGISTRY.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    REGISTRY.register(Box::new(g.clone())).expect("metric registered once");
    g
}

/// Frames decoded, by type (`#commit`, `#sync`, `#identity`, `#account`,
/// `#info`, `error`, `deprecated`, `unknown`).
pub static FRAMES: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("instancemap_firehose_frames_total", "Frames decoded, by type.", &["type"]));

/// Frames rejected by the decoder, by reason (`FrameError::reason`).
pub static DECODE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec("instancemap_firehose_decode_errors_total", "Frames rejected by the decoder, by reason.", &["reason"])
});

/// Events not applied, by reason (`duplicate`, `deprecated`, `unknown_type`,
/// `rejected`, `info`, `error_frame`).
pub static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec("instancemap_ingest_events_dropped_total", "Events not applied to the store, by reason.", &["reason"])
});

/// Frames refused for an implausible seq (`seq_jump`: more than
/// `ingest::MAX_SEQ_JUMP` over the cursor; `seq_implausible`: negative or
/// beyond any relay's numbering). Each is a corrupted or hostile frame the
/// cursor did not follow.
pub static SEQ_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "instancemap_ingest_seq_refused_total",
        "Frames refused because their seq is implausible over the cursor, by reason.",
        &["reason"],
    )
});

/// API connections closed at once because a limit was reached (`total`:
/// open connections; `per_client`: open connections from one address).
pub static API_CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "instancemap_api_connections_refused_total",
        "API connections closed at once because a connection limit was reached, by limit.",
        &["limit"],
    )
});

/// API reads stopped mid-scan because their request's deadline passed
/// (the client had its 503 already; the scan stops rather than runs on).
pub static API_READS_STOPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "instancemap_api_reads_stopped_total",
        "API store reads stopped mid-scan because the request's deadline passed.",
    )
});

/// API store reads by where they ran: `inline` (on the async worker, from
/// memory alone), `missed_inline` (tried there, a read needed a file),
/// `blocking` (on the blocking pool: after a miss, or inline reads off).
pub static API_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "instancemap_api_reads_total",
        "API store reads by where they ran: inline (from memory on the async worker), missed_inline, blocking.",
        &["path"],
    )
});

/// New hosts named by DID documents and not yet admitted to the host
/// table, by the limit that refused them (`domain`: too many new hosts under
/// one registrable domain; `network`: too many at all).
pub static HOSTS_DEFERRED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "instancemap_hosts_deferred_total",
        "New hosts named by DID documents not yet admitted to the host table, by the limit that refused them.",
        &["limit"],
    )
});

/// Contact checks made, by result (`ok`, `failed`).
pub static CONTACT_CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "instancemap_contact_checks_total",
        "Contact checks made (security.txt, mail domains, URLs), by result.",
        &["result"],
    )
});

/// Age of the oldest contact check, in seconds (the objective: under 7
/// days, 604,800 s).
pub static CONTACT_CHECK_OLDEST: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "instancemap_contact_check_oldest_seconds",
        "Age of the oldest check among the contacts the lookup may route to (objective: under 604800).",
    )
});

/// Contacts the lookup may route to, by state (`checked`: all of them;
/// `stale`: past the 7-day objective or never checked; `expired`: an
/// expired security.txt; `failing`: the last check failed).
pub static CONTACTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    int_gauge_vec(
        "instancemap_contacts",
        "Contacts the lookup may route to, by state (checked, stale, expired, failing).",
        &["state"],
    )
});

/// Record operations applied, by action.
pub static OPS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("instancemap_ingest_ops_total", "Record operations applied, by action.", &["action"]));

/// Create/update ops whose record block was missing from the CAR slice.
pub static BLOCKS_MISSING: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "instancemap_ingest_record_blocks_missing_total",
        "Create/update ops whose record block was not in the slice.",
    )
});

/// Commit and `#sync` signature checks, by result (`valid`,
/// `valid_prior_key`, `no_key`, `not_checked`, or a failure reason:
/// `sig_invalid`, `sig_high_s`, `sig_length`, `sig_malformed`).
pub static SIGNATURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "instancemap_identity_signature_checks_total",
        "Commit and #sync signature checks, by result.",
        &["result"],
    )
});

/// PLC export lines, by outcome (`applied`, `already_applied`,
/// `nullified_skipped`, or a rejection reason: `bad_json`, `invalid_op`).
pub static PLC_OPS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("instancemap_plc_ops_total", "PLC export lines read, by outcome.", &["result"]));

/// Last PLC export sequence number applied (sequence form).
pub static PLC_POSITION: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("instancemap_plc_position", "Last PLC export sequence number applied."));

/// DID resolutions, by result (`resolved`, `queue_full`, or a failure
/// reason: `not_found`, `unreachable`, `refused_address`, `server_error`,
/// `rate_limited`, `http_error`, `too_large`, `bad_did_document`,
/// `did_document_id_mismatch`, `unsupported_method`, `bad_did_web`).
pub static RESOLUTIONS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("instancemap_identity_resolutions_total", "DID resolutions, by result.", &["result"]));

/// DIDs waiting for resolution.
pub static RESOLVE_QUEUE: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("instancemap_identity_resolve_queue_depth", "DIDs waiting to be resolved."));

/// Handle checks, by outcome (`verified`, `invalid_syntax`, `no_record`,
/// `ambiguous_dns`, `other_did`).
pub static HANDLES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec("instancemap_identity_handle_checks_total", "Bidirectional handle checks, by outcome.", &["result"])
});

/// Host crawls, by outcome (`online`, or a failure reason as for
/// resolutions; `relay_host_refused`: a relay's `listHosts` entry that is
/// not a host, skipped).
pub static HOST_CRAWLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec("instancemap_hosts_crawls_total", "Host crawls (describeServer), by outcome.", &["result"])
});

/// `#info` frames, by name (`OutdatedCursor` or `other`).
pub static INFO: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec("instancemap_firehose_info_total", "#info frames from the relay, by name.", &["name"])
});

/// Error frames, by error (`FutureCursor`, `ConsumerTooSlow` or `other`).
pub static ERROR_FRAMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec("instancemap_firehose_error_frames_total", "Error frames from the relay, by error.", &["error"])
});

/// Last sequence number applied (committed or pending in the current batch).
pub static CURSOR: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("instancemap_firehose_cursor", "Sequence number of the last event applied."));

/// Last sequence number committed to the store.
pub static CURSOR_COMMITTED: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge("instancemap_ingest_cursor_committed", "Sequence number of the last event committed to the store.")
});

/// Now minus the `time` of the last frame, in milliseconds.
pub static LAG_MS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge("instancemap_firehose_lag_milliseconds", "Wall-clock time minus the time field of the last event applied.")
});

/// Reconnects to the relay, by cause (`closed`, `error`, `idle`, `connect`).
pub static RECONNECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec("instancemap_firehose_reconnects_total", "Reconnections to the relay, by cause.", &["cause"])
});

/// 1 while connected to the relay.
pub static CONNECTED: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("instancemap_firehose_connected", "1 while the relay connection is open."));

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
    REGISTRY.register(Box::new(h.clone())).expect("metric registered once");
    h
}

/// Seconds to commit one write batch (100 µs to ~3 s).
pub static BATCH_COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "instancemap_ingest_batch_commit_seconds",
        "Time to commit one write batch.",
        prometheus::exponential_buckets(0.0001, 2.0, 16).expect("valid buckets"),
    )
});

/// Events per committed batch (1 to ~16,000).
pub static BATCH_EVENTS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "instancemap_ingest_batch_events",
        "Events per committed write batch.",
        prometheus::exponential_buckets(1.0, 4.0, 8).expect("valid buckets"),
    )
});

/// Events waiting in the queue between the source and the writer.
pub static QUEUE_DEPTH: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("instancemap_ingest_queue_depth", "Events queued between the source and the writer."));

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    REGISTRY.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    REGISTRY.register(Box::new(g.clone())).expect("metric registered once");
    g
}

/// Seconds to resolve one DID (document fetch and handle check).
pub static RESOLVE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "instancemap_identity_resolve_seconds",
        "Time to resolve one DID (document and handle check).",
        prometheus::exponential_buckets(0.001, 2.0, 15).expect("valid buckets"),
    )
});

/// Instances in the map.
pub static MAP_INSTANCES: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("instancemap_map_instances", "Instances in the map."));

/// Accounts by map state: `assigned` (in an instance) or the reason they
/// are not (`deleted`, `no_pds`, `unresolved`, `unclustered`).
pub static MAP_ACCOUNTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    int_gauge_vec("instancemap_map_accounts", "Accounts by map state (assigned, or why not).", &["state"])
});

/// Accounts in the N-th largest instance (rank 1..=10), never a name.
pub static MAP_TOP_ACCOUNTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    int_gauge_vec("instancemap_map_top_instance_accounts", "Accounts in the instance of this size rank.", &["rank"])
});

/// Herfindahl–Hirschman index (0..1) of accounts over instances or hosts.
pub static MAP_HHI: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec("instancemap_map_concentration_hhi", "Herfindahl-Hirschman index of accounts (0..1).", &["over"])
});

/// Share of accounts in the largest 1, 5 or 10 instances or hosts.
pub static MAP_TOP_SHARE: LazyLock<GaugeVec> = LazyLock::new(|| {
    gauge_vec("instancemap_map_top_share", "Share of accounts in the N largest instances or hosts.", &["over", "n"])
});

/// Account moves between instances recorded, by cause (`migration`: the
/// account changed host; `recluster`: its host changed instance).
pub static MAP_MOVES: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("instancemap_map_moves_total", "Instance changes recorded, by cause.", &["cause"]));

/// Map updates applied, by kind (`account`, `structure`, `recompute`).
pub static MAP_UPDATES: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("instancemap_map_updates_total", "Map updates applied, by kind.", &["kind"]));

/// DIDs waiting for the map to take in their change.
pub static MAP_PENDING: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("instancemap_map_pending", "Accounts waiting for an incremental map update."));

/// Hosts by crawl state (`pending`, `online`, `offline`).
pub static HOSTS_BY_STATE: LazyLock<IntGaugeVec> =
    LazyLock::new(|| int_gauge_vec("instancemap_hosts", "Known hosts by crawl state.", &["state"]));

/// Declarations by outcome (`verified`: at least one claim verified).
pub static DECLARATIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    int_gauge_vec("instancemap_map_declarations", "Instance declarations by verification outcome.", &["status"])
});

/// API requests, by route template and status class.
pub static API_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec("instancemap_api_requests_total", "API requests, by route and status code class.", &["route", "status"])
});

/// API request latency by route (50 µs to ~1.6 s).
pub static API_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new("instancemap_api_request_seconds", "API request latency, by route.")
            .buckets(prometheus::exponential_buckets(0.00005, 2.0, 16).expect("valid buckets")),
        &["route"],
    )
    .expect("valid metric");
    REGISTRY.register(Box::new(h.clone())).expect("metric registered once");
    h
});

/// RocksDB figures, by property (sampled on scrape).
pub static STORE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    int_gauge_vec("instancemap_store_rocksdb", "RocksDB properties summed over column families.", &["property"])
});

/// Every metric name exported (histograms add `_bucket`, `_sum`, `_count`).
pub const NAMES: &[&str] = &[
    "instancemap_firehose_frames_total",
    "instancemap_firehose_decode_errors_total",
    "instancemap_ingest_events_dropped_total",
    "instancemap_ingest_ops_total",
    "instancemap_ingest_record_blocks_missing_total",
    "instancemap_identity_signature_checks_total",
    "instancemap_identity_resolutions_total",
    "instancemap_identity_resolve_queue_depth",
    "instancemap_identity_handle_checks_total",
    "instancemap_hosts_crawls_total",
    "instancemap_plc_ops_total",
    "instancemap_plc_position",
    "instancemap_firehose_info_total",
    "instancemap_firehose_error_frames_total",
    "instancemap_firehose_cursor",
    "instancemap_ingest_cursor_committed",
    "instancemap_firehose_lag_milliseconds",
    "instancemap_firehose_reconnects_total",
    "instancemap_firehose_connected",
    "instancemap_ingest_batch_commit_seconds",
    "instancemap_ingest_batch_events",
    "instancemap_ingest_queue_depth",
    "instancemap_identity_resolve_seconds",
    "instancemap_map_instances",
    "instancemap_map_accounts",
    "instancemap_map_top_instance_accounts",
    "instancemap_map_concentration_hhi",
    "instancemap_map_top_share",
    "instancemap_map_moves_total",
    "instancemap_map_updates_total",
    "instancemap_map_pending",
    "instancemap_hosts",
    "instancemap_map_declarations",
    "instancemap_api_requests_total",
    "instancemap_api_request_seconds",
    "instancemap_store_rocksdb",
    "instancemap_hosts_deferred_total",
    "instancemap_contact_checks_total",
    "instancemap_contact_check_oldest_seconds",
    "instancemap_contacts",
    "instancemap_api_reads_stopped_total",
    "instancemap_api_reads_total",
    // from the process collector (Linux)
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
];

/// RocksDB properties exported as `instancemap_store_rocksdb{property}`.
pub const STORE_PROPERTIES: &[&str] = &[
    "rocksdb.estimate-num-keys",
    "rocksdb.total-sst-files-size",
    "rocksdb.live-sst-files-size",
    "rocksdb.cur-size-all-mem-tables",
    "rocksdb.estimate-pending-compaction-bytes",
    "rocksdb.num-running-compactions",
    "rocksdb.num-running-flushes",
    "rocksdb.compaction-pending",
    "rocksdb.block-cache-usage",
    "rocksdb.num-immutable-mem-table",
    "rocksdb.actual-delayed-write-rate",
    "rocksdb.is-write-stopped",
];

/// The `property` label of a RocksDB property (`rocksdb.` dropped, `-` → `_`).
pub fn store_label(property: &str) -> String {
    property.trim_start_matches("rocksdb.").replace('-', "_")
}

/// Drop reasons, for pre-registering.
pub const DROP_REASONS: &[&str] = &[
    "duplicate",
    "deprecated",
    "unknown_type",
    "rejected",
    "info",
    "error_frame",
    "bad_signature",
    "seq_jump",
    "seq_implausible",
];

/// Signature check results, for pre-registering.
pub const SIGNATURE_RESULTS: &[&str] =
    &["valid", "valid_prior_key", "no_key", "not_checked", "sig_invalid", "sig_high_s", "sig_length", "sig_malformed"];

/// The label sets that belong to the stages (frame kinds, decode errors,
/// fetch outcomes, op actions, API routes), handed in by the app so this
/// module imports nothing of the crate: every stage uses metrics, metrics
/// uses no stage.
#[derive(Debug, Clone, Copy)]
pub struct Labels {
    pub frame_kinds: &'static [&'static str],
    pub decode_errors: &'static [&'static str],
    pub fetch_reasons: &'static [&'static str],
    pub actions: &'static [&'static str],
    pub routes: &'static [&'static str],
}

/// Touches every metric and label set so `/metrics` lists all series from
/// the start (a dashboard shows 0 rather than "no data").
pub fn init(labels: &Labels) {
    for k in labels.frame_kinds {
        FRAMES.with_label_values(&[k]);
    }
    for r in labels.decode_errors {
        DECODE_ERRORS.with_label_values(&[r]);
    }
    for r in DROP_REASONS {
        DROPPED.with_label_values(&[r]);
    }
    for r in ["seq_jump", "seq_implausible"] {
        SEQ_REFUSED.with_label_values(&[r]);
    }
    for l in ["total", "per_client"] {
        API_CONNECTIONS_REFUSED.with_label_values(&[l]);
    }
    for l in ["network", "domain"] {
        HOSTS_DEFERRED.with_label_values(&[l]);
    }
    for r in ["ok", "failed"] {
        CONTACT_CHECKS.with_label_values(&[r]);
    }
    for s in ["checked", "stale", "expired", "failing"] {
        CONTACTS.with_label_values(&[s]);
    }
    LazyLock::force(&CONTACT_CHECK_OLDEST);
    LazyLock::force(&API_READS_STOPPED);
    for p in ["inline", "missed_inline", "blocking"] {
        API_READS.with_label_values(&[p]);
    }
    for r in SIGNATURE_RESULTS {
        SIGNATURES.with_label_values(&[r]);
    }
    for r in ["applied", "already_applied", "nullified_skipped", "bad_json", "invalid_op", "bad_position"] {
        PLC_OPS.with_label_values(&[r]);
    }
    LazyLock::force(&PLC_POSITION);
    let fetch = labels.fetch_reasons.iter();
    let doc =
        ["resolved", "queue_full", "bad_did_document", "did_document_id_mismatch", "unsupported_method", "bad_did_web"];
    for r in fetch.clone().chain(doc.iter()) {
        RESOLUTIONS.with_label_values(&[r]);
    }
    LazyLock::force(&RESOLVE_QUEUE);
    for r in ["verified", "invalid_syntax", "no_record", "ambiguous_dns", "other_did"] {
        HANDLES.with_label_values(&[r]);
    }
    for r in fetch.chain(["online", "relay_host_refused"].iter()) {
        HOST_CRAWLS.with_label_values(&[r]);
    }
    for a in labels.actions {
        OPS.with_label_values(&[a]);
    }
    for n in ["OutdatedCursor", "other"] {
        INFO.with_label_values(&[n]);
    }
    for e in ["FutureCursor", "ConsumerTooSlow", "other"] {
        ERROR_FRAMES.with_label_values(&[e]);
    }
    for c in ["closed", "error", "idle", "connect"] {
        RECONNECTS.with_label_values(&[c]);
    }
    LazyLock::force(&BLOCKS_MISSING);
    LazyLock::force(&CURSOR);
    LazyLock::force(&CURSOR_COMMITTED);
    LazyLock::force(&LAG_MS);
    LazyLock::force(&CONNECTED);
    LazyLock::force(&BATCH_COMMIT_SECONDS);
    LazyLock::force(&BATCH_EVENTS);
    LazyLock::force(&QUEUE_DEPTH);
    LazyLock::force(&RESOLVE_SECONDS);
    LazyLock::force(&MAP_INSTANCES);
    for st in ["assigned", "deleted", "no_pds", "unresolved", "unclustered"] {
        MAP_ACCOUNTS.with_label_values(&[st]);
    }
    for over in ["instances", "hosts"] {
        MAP_HHI.with_label_values(&[over]);
        for n in ["1", "5", "10"] {
            MAP_TOP_SHARE.with_label_values(&[over, n]);
        }
    }
    for r in 1..=10 {
        MAP_TOP_ACCOUNTS.with_label_values(&[&r.to_string()]);
    }
    for c in ["migration", "recluster"] {
        MAP_MOVES.with_label_values(&[c]);
    }
    for k in ["account", "structure", "recompute"] {
        MAP_UPDATES.with_label_values(&[k]);
    }
    LazyLock::force(&MAP_PENDING);
    for st in ["pending", "online", "offline"] {
        HOSTS_BY_STATE.with_label_values(&[st]);
    }
    for st in ["verified", "unverified"] {
        DECLARATIONS.with_label_values(&[st]);
    }
    for r in labels.routes {
        API_SECONDS.with_label_values(&[r]);
        for class in ["2xx", "4xx", "5xx"] {
            API_REQUESTS.with_label_values(&[r, class]);
        }
    }
    for p in STORE_PROPERTIES {
        STORE.with_label_values(&[&store_label(p)]);
    }
    #[cfg(target_os = "linux")]
    {
        static PROCESS: std::sync::Once = std::sync::Once::new();
        PROCESS.call_once(|| {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            REGISTRY.register(Box::new(pc)).expect("process collector registered once");
        });
    }
}

/// The text exposition of every metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&REGISTRY.gather(), &mut buf).expect("text encoding never fails");
    String::from_utf8(buf).expect("exposition is UTF-8")
}

/// The bounded label of an `#info` name.
pub fn info_label(name: &str) -> &'static str {
    if name == "OutdatedCursor" {
        "OutdatedCursor"
    } else {
        "other"
    }
}

/// The bounded label of an error frame's error.
pub fn error_label(error: &str) -> &'static str {
    match error {
        "FutureCursor" => "FutureCursor",
        "ConsumerTooSlow" => "ConsumerTooSlow",
        _ => "other",
    }
}
