//! One table of the XRPC methods, from which both the OpenAPI document
//! (`/openapi.json`) and the lexicons (`lexicons/dev/instancemap/*.json`,
//! checked by a test) come.

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{json, Value};

/// A parameter's type.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Str,
    /// A string matching a pattern.
    Pattern(&'static str),
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// An integer in a range.
    Int(i64, i64),
    Bool,
}

/// One parameter: name, type, required, description.
pub type Param = (&'static str, Ty, bool, &'static str);

/// One XRPC method.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    pub name: &'static str,
    /// `query` (GET) or `procedure` (POST).
    pub kind: &'static str,
    pub description: &'static str,
    pub params: &'static [Param],
    /// Properties the output object always has.
    pub output: &'static [&'static str],
}

const LIMIT: Param = ("limit", Ty::Int(1, super::MAX_LIMIT as i64), false, "Page size (default 100).");
const CURSOR: Param = ("cursor", Ty::Str, false, "Opaque cursor from the previous page.");
const ID: Param = ("id", Ty::Pattern("^inst_[0-9a-f]{12}$"), true, "Instance id.");
const DAY: &str = "Date (YYYY-MM-DD) or RFC 3339 time.";

/// Every method.
pub const METHODS: &[Method] = &[
    Method {
        name: "lookup",
        kind: "query",
        description: "Who is responsible for an account, handle or record: the account's state and instance, and role-typed entities (hosting operator, declared operator with moderation and abuse contacts, handle registrant, labelers), each with evidence, source and when it was last checked; routes: who to notify for a report reason, first one first, each with channel, evidence and when it was last checked (without reason, routesByReason too); and a plain-words explanation.",
        params: &[
            ("subject", Ty::Str, true, "A DID, a handle, or an at:// URI."),
            ("reason", Ty::Str, false, "A report reason code (tools.ozone.report.defs#… or com.atproto.moderation.defs#…, or its name alone): routes for that reason only."),
        ],
        output: &["subject", "subjectType", "did", "state", "entities", "routes", "explanation", "map"],
    },
    Method {
        name: "listInstances",
        kind: "query",
        description: "Instances, largest first (or by 30-day growth), with member counts by status and an evidence summary.",
        params: &[
            LIMIT,
            CURSOR,
            ("minMembers", Ty::Int(0, i64::MAX), false, "Only instances with at least this many registered accounts."),
            ("hasDeclaration", Ty::Bool, false, "Only instances with (true) or without (false) a verified operator declaration."),
            ("hostStatus", Ty::Enum(&["pending", "online", "offline"]), false, "Only instances with a host in this crawl state."),
            ("sort", Ty::Enum(&["members", "growth"]), false, "Order: registered members (default) or growth over the last 30 days."),
        ],
        output: &["instances", "total", "map"],
    },
    Method {
        name: "getInstance",
        kind: "query",
        description: "One instance: hosts, account domains, evidence with timestamps, governance, member counts by status, and every declaration claiming its hosts with what verified.",
        params: &[ID],
        output: &["id", "name", "hosts", "members", "evidence", "map"],
    },
    Method {
        name: "listMembers",
        kind: "query",
        description: "Accounts whose current PDS is one of the instance's hosts.",
        params: &[ID, LIMIT, CURSOR],
        output: &["instance", "members"],
    },
    Method {
        name: "listHosts",
        kind: "query",
        description: "Hosts of the map (or of one instance) with crawl state, members and advertised user domains.",
        params: &[
            ("instance", Ty::Pattern("^inst_[0-9a-f]{12}$"), false, "Only this instance's hosts."),
            ("status", Ty::Enum(&["pending", "online", "offline"]), false, "Only hosts in this crawl state."),
            LIMIT,
            CURSOR,
        ],
        output: &["hosts", "total"],
    },
    Method {
        name: "getMapAsOf",
        kind: "query",
        description: "Registered accounts per instance at the end of a day (hosts grouped by today's map).",
        params: &[("at", Ty::Str, true, DAY), LIMIT, CURSOR],
        output: &["day", "accounts", "instances"],
    },
    Method {
        name: "getFlows",
        kind: "query",
        description: "Accounts migrating between instances per day over a period, as an edge list or a matrix summed over the period.",
        params: &[
            ("from", Ty::Str, true, DAY),
            ("to", Ty::Str, false, "Last day (default today). Date or RFC 3339 time."),
            ("format", Ty::Enum(&["edges", "matrix"]), false, "edges (default) or matrix."),
            (
                "top",
                Ty::Int(1, super::query::MAX_MATRIX_TOP as i64),
                false,
                "matrix: the instances kept by accounts moved in or out (default 50); the rest are summed as (other).",
            ),
            LIMIT,
            CURSOR,
        ],
        output: &["from", "to"],
    },
    Method {
        name: "getGrowth",
        kind: "query",
        description: "One instance's registered accounts per day (days with a change).",
        params: &[ID, ("from", Ty::Str, false, DAY), ("to", Ty::Str, false, DAY), LIMIT, CURSOR],
        output: &["instance", "days"],
    },
    Method {
        name: "getSummary",
        kind: "query",
        description: "Network totals and concentration: share of accounts in the largest instance, top-5 and top-10 shares, and the Herfindahl-Hirschman index over instances and over hosts; with --mmdb, over network operators and countries (network), else network.enabled is false. Each concentration also has its Gini coefficient and Lorenz curve (lorenz: [share of groups, share of accounts] at every twentieth of the groups, smallest first). ingest: every firehose cursor stored, the PLC export's position (seq, lastOperationAt), and in the process following a relay whether it is connected and its lag.",
        params: &[],
        output: &["accounts", "instances", "hosts", "declarations", "concentration", "network", "map", "ingest"],
    },
    Method {
        name: "getAccountHistory",
        kind: "query",
        description: "An account's dated hosts (and their instances), and where it was at a time.",
        params: &[("did", Ty::Str, true, "The account's DID."), ("at", Ty::Str, false, DAY)],
        output: &["did", "timeline"],
    },
    Method {
        name: "admin.refreshAccount",
        kind: "procedure",
        description: "Admin (bearer token; only served when one is configured): marks a DID for the map to re-evaluate.",
        params: &[("did", Ty::Str, true, "The account's DID.")],
        output: &["did", "marked"],
    },
    Method {
        name: "admin.createCheckpoint",
        kind: "procedure",
        description: "Admin (bearer token; only served when one is configured): writes a consistent RocksDB checkpoint of the live database to a new directory on the server (a backup, or a copy for read-only `serve`).",
        params: &[("dir", Ty::Str, true, "Absolute path of a directory that does not exist yet, on the database's filesystem.")],
        output: &["dir", "seconds"],
    },
];

fn schema(t: Ty) -> Value {
    match t {
        Ty::Str => json!({"type": "string", "maxLength": 2048}),
        Ty::Pattern(p) => json!({"type": "string", "pattern": p}),
        Ty::Enum(v) => json!({"type": "string", "enum": v}),
        Ty::Int(lo, hi) => json!({"type": "integer", "minimum": lo, "maximum": hi}),
        Ty::Bool => json!({"type": "boolean"}),
    }
}

fn lexicon_type(t: Ty) -> Value {
    match t {
        Ty::Str | Ty::Pattern(_) => json!({"type": "string"}),
        Ty::Enum(v) => json!({"type": "string", "knownValues": v}),
        Ty::Int(lo, hi) if hi == i64::MAX => json!({"type": "integer", "minimum": lo}),
        Ty::Int(lo, hi) => json!({"type": "integer", "minimum": lo, "maximum": hi}),
        Ty::Bool => json!({"type": "boolean"}),
    }
}

/// The method's lexicon document.
pub fn lexicon(m: &Method) -> Value {
    let props: serde_json::Map<String, Value> = m
        .params
        .iter()
        .map(|(n, t, _, d)| {
            let mut v = lexicon_type(*t);
            v["description"] = json!(d);
            ((*n).to_owned(), v)
        })
        .collect();
    let required: Vec<&str> = m.params.iter().filter(|p| p.2).map(|p| p.0).collect();
    let mut params = json!({"type": "params", "properties": props});
    if !required.is_empty() {
        params["required"] = json!(required);
    }
    json!({
        "lexicon": 1,
        "id": format!("dev.instancemap.{}", m.name),
        "defs": {"main": {
            "type": m.kind,
            "description": m.description,
            "parameters": params,
            "output": {"encoding": "application/json", "schema": {
                "type": "object",
                "required": m.output,
                "properties": m.output.iter().map(|o| ((*o).to_owned(), json!({"type": "unknown"}))).collect::<serde_json::Map<_, _>>(),
            }},
            "errors": [{"name": "InvalidRequest"}, {"name": "NotFound"}, {"name": "RateLimitExceeded"}],
        }},
    })
}

/// The OpenAPI 3.0 document.
pub fn document() -> Value {
    let error = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut paths = serde_json::Map::new();
    for m in METHODS {
        let params: Vec<Value> = m
            .params
            .iter()
            .map(|(n, t, req, d)| json!({"name": n, "in": "query", "required": req, "description": d, "schema": schema(*t)}))
            .collect();
        let mut op = json!({
            "operationId": m.name,
            "summary": m.description,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {
                    "type": "object", "required": m.output}}}},
                "400": error("Invalid request: the message says which rule failed."),
                "404": error("Not found, with the reason."),
                "414": error("URI longer than 4,096 bytes."),
                "429": error("Rate limit exceeded (Retry-After)."),
                "503": error("Timed out or shutting down."),
            },
        });
        let verb = if m.kind == "procedure" {
            op["security"] = json!([{"bearer": []}]);
            op["responses"]["401"] = error("Missing or wrong admin token.");
            op["responses"]["403"] = error("Read-only server (serve).");
            op["responses"]["404"] = error("Admin routes are off (no admin token configured), or not found.");
            "post"
        } else {
            "get"
        };
        paths.insert(format!("/xrpc/dev.instancemap.{}", m.name), json!({ verb: op }));
    }
    paths.insert(
        "/healthz".into(),
        json!({"get": {"operationId": "healthz", "summary": "Liveness and progress.", "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object", "required": ["status"]}}}}}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "instancemap",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The ATProto network mapped into instances: responsibility lookup, the instance map, its history and concentration. XRPC queries; lexicons in lexicons/dev/instancemap/.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error", "message"], "properties": {
                "error": {"type": "string"}, "message": {"type": "string"}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    static DOC: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], DOC.as_str())
}
