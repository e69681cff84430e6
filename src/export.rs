//! `instancemap export`: a consistent snapshot of the map (every table read
//! from one RocksDB snapshot) as Parquet (zstd), NDJSON or CSV files:
//! `accounts`, `instances`, `hosts`, `moves`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use crate::clock::rfc3339_ms;
use crate::cluster::assign;
use crate::config::ExportFormat;
use crate::store::map::MapReader;
use crate::store::Store;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Str(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

/// A row written, or its error kept in `failed` and the scan stopped.
fn kept(failed: &mut Option<anyhow::Error>, r: anyhow::Result<()>) -> crate::store::Result<()> {
    r.map_err(|e| {
        *failed = Some(e);
        crate::store::StoreError::ScanStopped
    })
}

fn s(v: impl Into<Option<String>>) -> Cell {
    Cell::Str(v.into())
}

/// Rows per Parquet row group.
const ROW_GROUP: usize = 100_000;

/// Writes one table in the chosen format.
struct Sink {
    columns: &'static [(&'static str, Kind)],
    format: ExportFormat,
    rows: u64,
    out: SinkOut,
    /// Parquet: buffered columns of the current row group.
    buf: Vec<Vec<Cell>>,
}

enum SinkOut {
    Parquet(SerializedFileWriter<File>),
    Ndjson(BufWriter<File>),
    Csv(csv::Writer<File>),
}

impl Sink {
    fn create(
        dir: &Path,
        name: &str,
        columns: &'static [(&'static str, Kind)],
        format: ExportFormat,
    ) -> anyhow::Result<Sink> {
        let ext = match format {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        };
        let file = File::create(dir.join(format!("{name}.{ext}")))?;
        let out = match format {
            ExportFormat::Parquet => {
                let fields: Vec<String> = columns
                    .iter()
                    .map(|(n, k)| match k {
                        Kind::Str => format!("OPTIONAL BYTE_ARRAY {n} (UTF8);"),
                        Kind::Int => format!("OPTIONAL INT64 {n};"),
                        Kind::Bool => format!("OPTIONAL BOOLEAN {n};"),
                    })
                    .collect();
                let schema =
                    parquet::schema::parser::parse_message_type(&format!("message {name} {{ {} }}", fields.join(" ")))?;
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_created_by(format!("instancemap {}", env!("CARGO_PKG_VERSION")))
                    .build();
                SinkOut::Parquet(SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))?)
            }
            ExportFormat::Ndjson => SinkOut::Ndjson(BufWriter::new(file)),
            ExportFormat::Csv => {
                let mut w = csv::Writer::from_writer(file);
                w.write_record(columns.iter().map(|c| c.0))?;
                SinkOut::Csv(w)
            }
        };
        Ok(Sink { columns, format, rows: 0, out, buf: vec![Vec::new(); columns.len()] })
    }

    fn row(&mut self, row: Vec<Cell>) -> anyhow::Result<()> {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows += 1;
        match &mut self.out {
            SinkOut::Parquet(_) => {
                for (i, c) in row.into_iter().enumerate() {
                    self.buf[i].push(c);
                }
                if self.buf[0].len() >= ROW_GROUP {
                    self.flush_group()?;
                }
            }
            SinkOut::Ndjson(w) => {
                let obj: serde_json::Map<String, serde_json::Value> = self
                    .columns
                    .iter()
                    .zip(row)
                    .map(|((n, _), c)| {
                        let v = match c {
                            Cell::Str(v) => serde_json::json!(v),
                            Cell::Int(v) => serde_json::json!(v),
                            Cell::Bool(v) => serde_json::json!(v),
                        };
                        ((*n).to_owned(), v)
                    })
                    .collect();
                serde_json::to_writer(&mut *w, &obj)?;
                w.write_all(b"\n")?;
            }
            SinkOut::Csv(w) => {
                let fields: Vec<String> = row
                    .into_iter()
                    .map(|c| match c {
                        Cell::Str(v) => v.unwrap_or_default(),
                        Cell::Int(v) => v.map(|n| n.to_string()).unwrap_or_default(),
                        Cell::Bool(v) => v.map(|b| b.to_string()).unwrap_or_default(),
                    })
                    .collect();
                w.write_record(&fields)?;
            }
        }
        Ok(())
    }

    fn flush_group(&mut self) -> anyhow::Result<()> {
        let SinkOut::Parquet(w) = &mut self.out else { return Ok(()) };
        if self.buf[0].is_empty() {
            return Ok(());
        }
        let mut rg = w.next_row_group()?;
        for col in &mut self.buf {
            let mut cw = rg.next_column()?.ok_or_else(|| anyhow::anyhow!("schema has fewer columns"))?;
            let defs: Vec<i16> = col
                .iter()
                .map(|c| i16::from(!matches!(c, Cell::Str(None) | Cell::Int(None) | Cell::Bool(None))))
                .collect();
            match col.first() {
                Some(Cell::Str(_)) => {
                    let vals: Vec<ByteArray> = col
                        .iter()
                        .filter_map(|c| match c {
                            Cell::Str(Some(v)) => Some(ByteArray::from(v.as_str())),
                            _ => None,
                        })
                        .collect();
                    cw.typed::<ByteArrayType>().write_batch(&vals, Some(&defs), None)?;
                }
                Some(Cell::Int(_)) => {
                    let vals: Vec<i64> =
                        col.iter().filter_map(|c| if let Cell::Int(v) = c { *v } else { None }).collect();
                    cw.typed::<Int64Type>().write_batch(&vals, Some(&defs), None)?;
                }
                Some(Cell::Bool(_)) => {
                    let vals: Vec<bool> =
                        col.iter().filter_map(|c| if let Cell::Bool(v) = c { *v } else { None }).collect();
                    cw.typed::<BoolType>().write_batch(&vals, Some(&defs), None)?;
                }
                None => {}
            }
            cw.close()?;
            col.clear();
        }
        rg.close()?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<u64> {
        if self.format == ExportFormat::Parquet {
            if self.rows == 0 {
                // an empty row group keeps the file readable with its schema
                self.buf.iter_mut().for_each(Vec::clear);
            }
            self.flush_group()?;
        }
        match self.out {
            SinkOut::Parquet(w) => {
                w.close()?;
            }
            SinkOut::Ndjson(mut w) => w.flush()?,
            SinkOut::Csv(mut w) => w.flush()?,
        }
        Ok(self.rows)
    }
}

const ACCOUNTS: &[(&str, Kind)] = &[
    ("did", Kind::Str),
    ("instance", Kind::Str),
    ("host", Kind::Str),
    ("handle", Kind::Str),
    ("handle_domain", Kind::Str),
    ("handle_verified", Kind::Bool),
    ("state", Kind::Str),
    ("firehose_status", Kind::Str),
    ("since", Kind::Str),
];
const INSTANCES: &[(&str, Kind)] = &[
    ("id", Kind::Str),
    ("name", Kind::Str),
    ("anchor", Kind::Str),
    ("operator", Kind::Str),
    ("hosts", Kind::Int),
    ("registered", Kind::Int),
    ("seen_on_firehose", Kind::Int),
    ("active", Kind::Int),
    ("user_domains", Kind::Str),
    ("evidence_kinds", Kind::Str),
    ("service_name", Kind::Str),
    ("home_url", Kind::Str),
    ("support_url", Kind::Str),
    ("abuse_contact", Kind::Str),
    ("moderation_service", Kind::Str),
    ("jurisdiction", Kind::Str),
    ("active_1d", Kind::Int),
    ("active_7d", Kind::Int),
    ("active_30d", Kind::Int),
    ("open_registration", Kind::Bool),
    ("signup_spike", Kind::Bool),
];
const HOSTS: &[(&str, Kind)] = &[
    ("host", Kind::Str),
    ("instance", Kind::Str),
    ("state", Kind::Str),
    ("registered", Kind::Int),
    ("user_domains", Kind::Str),
    ("version", Kind::Str),
    ("last_checked", Kind::Str),
    ("invite_code_required", Kind::Bool),
    ("phone_verification_required", Kind::Bool),
    ("contact_email", Kind::Str),
    ("addresses", Kind::Str),
];
const MOVES: &[(&str, Kind)] = &[
    ("did", Kind::Str),
    ("at", Kind::Str),
    ("from_host", Kind::Str),
    ("to_host", Kind::Str),
    ("from_instance", Kind::Str),
    ("to_instance", Kind::Str),
];

/// Writes the four tables into `dir`; returns `(file, rows)` per table.
pub fn export(store: &Store, format: ExportFormat, dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    std::fs::create_dir_all(dir)?;
    // one snapshot: the four tables agree with each other
    let snap = store.map_snapshot();
    // the small tables first, in memory
    let host_instance: HashMap<String, String> = snap.host_instances()?;
    let members: BTreeMap<String, BTreeMap<String, i64>> = snap.host_members()?;
    let count = |h: &str, b: &str| members.get(h).and_then(|m| m.get(b)).copied().unwrap_or(0);
    let mut files = Vec::new();

    let hosts = snap.hosts()?;
    let host_records: HashMap<&str, &crate::store::records::HostRecord> =
        hosts.iter().map(|(h, r)| (h.as_str(), r)).collect();
    let now = crate::clock::now_ms();

    let mut out = Sink::create(dir, "instances", INSTANCES, format)?;
    for i in snap.instance_records()? {
        let sum = |b: &str| i.hosts.iter().map(|h| count(h, b)).sum::<i64>();
        let kinds: std::collections::BTreeSet<&str> = i.evidence.iter().map(|e| e.1.as_str()).collect();
        let act = crate::cluster::activity::of_with(&snap, &i, now, |h| Ok(host_records.get(h).map(|r| (*r).clone())))?;
        let g = i.governance.as_ref();
        // a confidential contact is for reporters, not for a published table
        let abuse = g.and_then(|g| g.abuse_contact.clone().or_else(|| g.first_contact("abuse")));
        out.row(vec![
            s(i.id.clone()),
            s(i.name.clone()),
            s(i.anchor.clone()),
            s(i.operator.clone()),
            Cell::Int(Some(i.hosts.len() as i64)),
            Cell::Int(Some(sum(assign::bucket::REGISTERED))),
            Cell::Int(Some(sum(assign::bucket::SEEN))),
            Cell::Int(Some(sum("active"))),
            s(i.user_domains.join(" ")),
            s(kinds.into_iter().collect::<Vec<_>>().join(" ")),
            s(g.and_then(|g| g.service_name.clone())),
            s(g.and_then(|g| g.home_url.clone())),
            s(g.and_then(|g| g.support_url.clone())),
            s(abuse),
            s(g.and_then(|g| g.moderation_service.clone())),
            s(g.and_then(|g| g.jurisdiction.clone())),
            Cell::Int(Some(act.active1d)),
            Cell::Int(Some(act.active7d)),
            Cell::Int(Some(act.active30d)),
            Cell::Bool(Some(act.open_registration)),
            Cell::Bool(act.signup_spike.map(|sp| sp.spike)),
        ])?;
    }
    files.push(("instances".to_owned(), out.finish()?));

    let mut out = Sink::create(dir, "hosts", HOSTS, format)?;
    let mut seen = std::collections::BTreeSet::new();
    for (h, r) in &hosts {
        let d = r.describe.as_ref();
        out.row(vec![
            s(h.clone()),
            s(host_instance.get(h).cloned()),
            s(r.state.clone()),
            Cell::Int(Some(count(h, assign::bucket::REGISTERED))),
            s(d.map(|d| d.available_user_domains.join(" "))),
            s(r.version.clone()),
            s(r.last_checked_ms.and_then(rfc3339_ms)),
            Cell::Bool(d.and_then(|d| d.invite_code_required)),
            Cell::Bool(d.and_then(|d| d.phone_verification_required)),
            s(d.and_then(|d| d.contact_email.clone())),
            s(r.addresses.join(" ")),
        ])?;
        seen.insert(h.clone());
    }
    // hosts known only through their accounts
    for (h, inst) in &host_instance {
        if !seen.contains(h) {
            out.row(vec![
                s(h.clone()),
                s(inst.clone()),
                s("unknown".to_owned()),
                Cell::Int(Some(count(h, assign::bucket::REGISTERED))),
                s(None),
                s(None),
                s(None),
                Cell::Bool(None),
                Cell::Bool(None),
                s(None),
                s(None),
            ])?;
        }
    }
    files.push(("hosts".to_owned(), out.finish()?));

    let mut out = Sink::create(dir, "accounts", ACCOUNTS, format)?;
    // a row that cannot be written stops the scan; its error is kept here
    let mut failed: Option<anyhow::Error> = None;
    let scanned = snap.each_assignment(&mut |did, a| {
        let status =
            a.buckets.iter().position(|b| b == assign::bucket::SEEN).and_then(|i| a.buckets.get(i + 1)).cloned();
        let since = a.timeline.last().filter(|(_, h)| h.is_some()).and_then(|(t, _)| rfc3339_ms(*t));
        let state = match (&a.host, &a.reason) {
            (Some(h), _) if host_instance.contains_key(h) => "assigned".to_owned(),
            (Some(_), _) => "unclustered".to_owned(),
            (None, r) => r.clone().unwrap_or_else(|| "unresolved".into()),
        };
        kept(
            &mut failed,
            out.row(vec![
                s(did.to_owned()),
                s(a.host.as_ref().and_then(|h| host_instance.get(h).cloned())),
                s(a.host.clone()),
                s(a.handle.clone()),
                s(a.handle.as_deref().and_then(crate::cluster::registrable_domain)),
                Cell::Bool(a.handle.as_ref().map(|_| a.handle_verified)),
                s(state),
                s(status),
                s(since),
            ]),
        )
    });
    if let Some(e) = failed.take() {
        return Err(e);
    }
    scanned?;
    files.push(("accounts".to_owned(), out.finish()?));

    let mut out = Sink::create(dir, "moves", MOVES, format)?;
    let scanned = snap.each_move(&mut |did, at, m| {
        kept(
            &mut failed,
            out.row(vec![
                s(did.to_owned()),
                s(rfc3339_ms(at)),
                s(m.from.clone()),
                s(m.to.clone()),
                s(host_instance.get(&m.from).cloned()),
                s(host_instance.get(&m.to).cloned()),
            ]),
        )
    });
    if let Some(e) = failed.take() {
        return Err(e);
    }
    scanned?;
    files.push(("moves".to_owned(), out.finish()?));
    Ok(files)
}
