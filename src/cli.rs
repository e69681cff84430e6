//! The one-shot commands' glue: each command of the CLI run against the
//! library, its output on stdout (JSON or text) and its notes on stderr,
//! and the exit code it maps to (2: the thing asked for is not known).

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config::{relay_endpoint, Command};
use crate::firehose::subscribe::SubscribeConfig;
use crate::stats::Stats;
use crate::store::Store;

/// Runs one command to its end.
pub async fn command(cmd: Command) -> anyhow::Result<ExitCode> {
    let cancel = CancellationToken::new();
    if let Some(mb) = cmd.db().and_then(|d| d.block_cache_mb) {
        crate::store::set_block_cache_bytes(mb.max(8) << 20);
    }
    match cmd {
        Command::Run(a) => {
            let endpoint = relay_endpoint(&a.relay)?;
            app::cancel_on_signal(cancel.clone());
            let opts = app::RunOptions {
                subscribe: SubscribeConfig::new(endpoint),
                db: a.db.db,
                listen: a.listen,
                verify: !a.verify.no_verify,
                plc: a.plc,
                follow_plc: (!a.no_plc).then_some(crate::plc::source::FOLLOW_INTERVAL),
                resolve: !a.no_resolve,
                allow_loopback: a.allow_loopback,
                dns: a.dns,
                crawl: (!a.no_crawl).then_some(crate::hosts::CRAWL_EVERY),
                overrides: a.overrides.load()?,
                api: a.api.limits(),
                admin_token: a.api.admin_token.clone(),
                networks: a.api.networks()?,
            };
            app::run(opts, cancel).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Record(a) => {
            let endpoint = relay_endpoint(&a.relay)?;
            app::cancel_on_signal(cancel.clone());
            let n = app::record(&SubscribeConfig::new(endpoint), &a.out, a.cursor, a.max_frames, cancel).await?;
            eprintln!("recorded {n} frames to {}", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(a) => {
            app::cancel_on_signal(cancel.clone());
            let s = app::replay(&a.db.db, a.source.as_deref(), &a.files, !a.verify.no_verify, cancel).await?;
            for f in &s.per_file {
                eprintln!(
                    "{}: {} frames, {} applied, {} already applied (cursor {})",
                    f.path.display(),
                    f.frames,
                    f.applied,
                    f.duplicates,
                    f.source
                );
            }
            eprintln!("replayed {} frames from {} file(s) into {}", s.frames, s.files, a.db.db.display());
            if let Some(m) = &s.map {
                eprintln!("{m}");
            }
            match s.error {
                Some(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Command::BackfillPlc(a) => {
            app::cancel_on_signal(cancel.clone());
            let store = Store::open(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            // a bulk load: the map is recomputed once at the end rather
            // than each account marked, once the load outweighs the store
            let bulk = Some(store.estimate_accounts());
            let started = std::time::Instant::now();
            // the load's files are compacted once at its end (below), or by
            // the next open if it stops
            store.set_auto_compactions(false)?;
            let stats = match &a.file {
                Some(f) => {
                    tokio::task::block_in_place(|| crate::plc::source::load_file_until(&store, f, bulk, &cancel))?
                }
                None => crate::plc::source::load_http(&store, &a.plc, true, bulk, &cancel).await?,
            };
            // flushed while compactions are still paused: with them on, the
            // load's pile of level-0 files stalls writes, and a flush waits
            // for it to be compacted
            store.flush()?;
            let took = started.elapsed().as_secs_f64();
            let summary = format!(
                "PLC export: {} lines, {} operations applied ({} tombstones), {} already applied, {} nullified skipped, {} rejected, in {took:.1} s ({:.0} lines/s)",
                stats.lines,
                stats.applied,
                stats.tombstones,
                stats.already_applied,
                stats.nullified_skipped,
                stats.rejected.values().sum::<u64>(),
                stats.lines as f64 / took.max(1e-9),
            );
            if stats.stopped || cancel.is_cancelled() {
                // the map keeps its marks: the next command that writes
                // (or `run`) takes them
                eprintln!("{summary}");
                eprintln!(
                    "stopped by a signal: the next backfill-plc resumes where this one stopped (the map is brought \
                     current then)"
                );
                return Ok(ExitCode::from(130));
            }
            eprintln!("{summary}");
            if stats.bulk {
                // one operand per operation: folded once here rather than
                // by every read after (the recompute's first)
                let t = std::time::Instant::now();
                tokio::task::block_in_place(|| store.compact_all());
                eprintln!("compacted after the bulk load in {:.1} s", t.elapsed().as_secs_f64());
            }
            store.set_auto_compactions(true)?;
            let t = std::time::Instant::now();
            let map = app::bring_map_current(&store, &cancel).await?;
            eprintln!("{map} (in {:.1} s)", t.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Account(a) => {
            if !crate::types::is_did(&a.did) {
                anyhow::bail!("{:?} is not a DID", a.did);
            }
            let store =
                Store::open_read_only(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            match crate::inspect::AccountView::read(&store, &a.did)? {
                Some(v) if a.json => out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?,
                Some(v) => out(&v.to_text())?,
                None => {
                    eprintln!("{}: not in the database", a.did);
                    return Ok(ExitCode::from(2));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CrawlHosts(a) => {
            let store = Store::open(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            let fetcher = crate::net::Fetcher::with_dns(a.allow_loopback, a.dns);
            if !a.no_list_hosts {
                let relay = crate::hosts::relay_http_base(&relay_endpoint(&a.relay)?);
                match crate::hosts::list_hosts(&store, &fetcher, &relay).await {
                    Ok(n) => eprintln!("relay listHosts: {n} hosts"),
                    Err(e) => eprintln!("relay listHosts failed: {e}"),
                }
            }
            let n = crate::hosts::crawl_due(&store, &fetcher, true).await?;
            store.flush()?;
            eprintln!("crawled {n} hosts");
            app::cancel_on_signal(cancel.clone());
            eprintln!("{}", app::bring_map_current(&store, &cancel).await?);
            // after the map: the contacts are those of the operators it verifies
            if !a.no_contacts {
                let checker = crate::hosts::contacts::Checker::new(fetcher.clone(), a.dns);
                let n = crate::hosts::contacts::check_due(&store, &store, &checker).await?;
                store.flush()?;
                eprintln!("checked {n} contacts");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Host(a) => {
            let host = crate::identity::did::normalize_endpoint(&if a.host.contains("://") {
                a.host.clone()
            } else {
                format!("https://{}", a.host)
            })
            .map_err(|why| anyhow::anyhow!("{:?}: {why}", a.host))?;
            let store =
                Store::open_read_only(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            match crate::hosts::get(&store, &host)? {
                Some(h) if a.json => out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&serde_json::json!({"host": host, "record": h}))?
                ))?,
                Some(h) => out(&format!("{host}\n{}\n", serde_json::to_string_pretty(&h)?))?,
                None => {
                    eprintln!("{host}: not in the database");
                    return Ok(ExitCode::from(2));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Recluster(a) => {
            use crate::cluster::map;
            let given = a.overrides.load()?;
            let db = &a.db;
            let store = Store::open(&db.db).with_context(|| format!("opening database {}", db.db.display()))?;
            let overrides = crate::cluster::overrides::in_force(&store, given)?;
            app::cancel_on_signal(cancel.clone());
            let stop = app::stop_flag(&cancel);
            let s = tokio::task::block_in_place(|| {
                let progress = |n: u64| eprintln!("recompute: {n} accounts read");
                let opts = map::RecomputeOptions { clear_marks: true, stop: Some(&stop), progress: Some(&progress) };
                map::recompute_with(&store, &overrides, &opts)
            });
            store.flush()?;
            let s = s?;
            eprintln!(
                "{} instances over {} hosts; {} accounts, unassigned: {:?}",
                s.instances, s.hosts, s.accounts, s.unassigned
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Instances(a) => {
            let store =
                Store::open_read_only(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            let list = crate::cluster::map::instances(&store)?;
            if let Some(n) = crate::cluster::map::freshness(&store)?.note() {
                eprintln!("note: {n}");
            }
            if a.json {
                let v: Vec<serde_json::Value> = list
                    .iter()
                    .map(|i| {
                        serde_json::json!({"id": i.id, "name": i.name, "anchor": i.anchor, "hosts": i.hosts,
                            "user_domains": i.user_domains, "registrable_domains": i.registrable_domains,
                            "members": i.members, "evidence": i.evidence.len(), "operator": i.operator,
                            "claimed_by": i.claimed_by})
                    })
                    .collect();
                out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                let mut text = String::new();
                for i in &list {
                    let n = i.members.get("registered").copied().unwrap_or(0);
                    text.push_str(&format!("{:<18} {:>10}  {:<30} {} host(s)\n", i.id, n, i.name, i.hosts.len()));
                }
                out(&text)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Instance(a) => {
            let store =
                Store::open_read_only(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            let found = if a.id.starts_with("inst_") {
                crate::cluster::map::instance(&store, &a.id)?
            } else {
                let host = crate::identity::did::normalize_endpoint(&if a.id.contains("://") {
                    a.id.clone()
                } else {
                    format!("https://{}", a.id)
                })
                .map_err(|why| anyhow::anyhow!("{:?}: {why}", a.id))?;
                crate::cluster::map::instance_of_host(&store, &host)?
            };
            if let Some(n) = crate::cluster::map::freshness(&store)?.note() {
                eprintln!("note: {n}");
            }
            let Some(i) = found else {
                eprintln!("{}: no such instance", a.id);
                return Ok(ExitCode::from(2));
            };
            let status = match &i.operator {
                Some(op) => crate::cluster::map::declaration_status(&store, op)?,
                None => None,
            };
            let networks = crate::config::open_networks(&a.mmdb)?;
            // what the API's getInstance adds to the record, with every
            // declaration claiming one of its hosts, verified or not
            let view = crate::api::query::instance_view(&store, &Default::default(), networks.as_deref(), &i.id)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let mut v = serde_json::json!({"instance": i, "declaration": status, "claims": view["declarations"]});
            for k in ["activity", "statusDisagreements", "labelers", "network"] {
                if let Some(x) = view.get(k) {
                    v[k] = x.clone();
                }
            }
            out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lookup(a) => {
            use crate::api::query;
            let parsed =
                query::parse_subject(&a.subject).map_err(|why| anyhow::anyhow!("subject {:?}: {why}", a.subject))?;
            let reason = a
                .reason
                .as_deref()
                .map(crate::cluster::routes::Reason::parse)
                .transpose()
                .map_err(|why| anyhow::anyhow!("--reason: {why}"))?;
            let store =
                Store::open_read_only(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            let v = match query::lookup_answer(&store, &Default::default(), &a.subject, &parsed, reason.as_ref()) {
                Ok(v) => v,
                Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                    eprintln!("{}: {}", a.subject, e.message);
                    return Ok(ExitCode::from(2));
                }
                Err(e) => anyhow::bail!("{}", e.message),
            };
            if a.json {
                out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            } else {
                out(&crate::inspect::lookup_text(&v))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History(a) => {
            use crate::cluster::history;
            use crate::config::HistoryWhat;
            let store =
                Store::open_read_only(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            let day = |s: &str| -> anyhow::Result<String> {
                let ms = crate::clock::parse_day_or_time(s)
                    .ok_or_else(|| anyhow::anyhow!("{s:?}: not YYYY-MM-DD or RFC 3339"))?;
                Ok(crate::clock::day(ms))
            };
            let v = match a.what {
                HistoryWhat::Flows { from, to } => {
                    serde_json::to_value(history::flows(&store, &day(&from)?, &day(&to)?)?)?
                }
                HistoryWhat::Growth { id, to } => {
                    let to = match to {
                        Some(t) => day(&t)?,
                        None => crate::clock::today(),
                    };
                    serde_json::to_value(history::growth(&store, &id, &to)?)?
                }
                HistoryWhat::AsOf { at, did: Some(did) } => {
                    let ms =
                        crate::clock::parse_day_or_time(&at).ok_or_else(|| anyhow::anyhow!("{at:?}: not a time"))?;
                    match history::account_as_of(&store, &did, ms)? {
                        Some(x) => serde_json::to_value(x)?,
                        None => {
                            eprintln!("{did}: not in the map");
                            return Ok(ExitCode::from(2));
                        }
                    }
                }
                HistoryWhat::AsOf { at, did: None } => serde_json::to_value(history::sizes_as_of(&store, &day(&at)?)?)?,
            };
            out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => {
            crate::metrics::init(&app::metric_labels());
            app::cancel_on_signal(cancel.clone());
            let store = match &a.follow {
                Some(own) => Store::open_secondary(&a.db.db, own),
                None => Store::open_read_only(&a.db.db),
            }
            .with_context(|| format!("opening database {}", a.db.db.display()))?;
            if a.follow.is_some() {
                let (s, c) = (store.clone(), cancel.clone());
                tokio::spawn(async move {
                    while !c.is_cancelled() {
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        let s = s.clone();
                        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.catch_up()).await {
                            tracing::warn!(error = %e, "catching up with the primary failed");
                        }
                    }
                });
            }
            let listener =
                tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("binding {}", a.listen))?;
            tracing::info!(addr = %listener.local_addr()?, db = %a.db.db.display(), "serving the API read-only");
            eprintln!(
                "instancemap: the explorer is at {} (the API under /xrpc/)",
                crate::api::explorer::address(listener.local_addr()?)
            );
            // the lookup's families into the block cache, meanwhile
            let (s, stop) = (store.clone(), app::stop_flag(&cancel));
            tokio::task::spawn_blocking(move || {
                let t = std::time::Instant::now();
                match s.warm_cache(&stop) {
                    Ok(0) => tracing::info!("block cache not warmed: the families do not fit in it"),
                    Ok(n) => tracing::info!(mb = n >> 20, seconds = t.elapsed().as_secs_f64(), "block cache warmed"),
                    Err(e) => tracing::warn!(error = %e, "warming the block cache"),
                }
            });
            let state = crate::api::ApiState::new(store, true, a.api.admin_token.clone(), a.api.limits())
                .with_networks(a.api.networks()?);
            crate::api::serve(listener, state, cancel).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(a) => {
            let store =
                Store::open_read_only(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            let files = crate::export::export(&store, a.format, &a.out)?;
            for (name, rows) in files {
                eprintln!("{name}: {rows} rows");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoint(a) => {
            let store = Store::open(&a.db.db).with_context(|| {
                format!(
                    "opening database {} (a running `run` holds it: use its admin.createCheckpoint)",
                    a.db.db.display()
                )
            })?;
            store.checkpoint(&a.out).with_context(|| format!("checkpoint to {}", a.out.display()))?;
            eprintln!("checkpoint written to {}", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Cursor(a) => {
            let store = Store::open(&a.db.db)
                .with_context(|| format!("opening database {} (stop `run` first)", a.db.db.display()))?;
            use crate::store::{StoreReader, StoreWriter};
            if let Some(src) = &a.source {
                let before = store.source_cursor(src)?;
                let mut b = crate::store::Batch::default();
                if let Some(n) = a.set {
                    anyhow::ensure!(n >= 0, "a cursor is a seq, 0 or more");
                    b.cursor(src, n);
                } else if a.delete {
                    b.delete_cursor(src);
                }
                if !b.is_empty() {
                    store.commit(b)?;
                    let after = store.source_cursor(src)?;
                    tracing::info!(source = %src, ?before, ?after, "cursor changed by the operator");
                    eprintln!("{src}: {} -> {}", show(before), show(after));
                } else {
                    out(&format!("{src}\t{}\n", show(before)))?;
                }
            } else {
                let mut text = String::new();
                for (src, seq) in store.all_cursors()? {
                    text.push_str(&format!("{src}\t{seq}\n"));
                }
                out(&text)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats(a) => {
            let store =
                Store::open_read_only(&a.db.db).with_context(|| format!("opening database {}", a.db.db.display()))?;
            let stats = Stats::read(&store)?;
            if a.json {
                out(&format!("{}\n", serde_json::to_string_pretty(&stats)?))?;
            } else {
                out(&stats.to_text())?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn show(c: Option<i64>) -> String {
    c.map_or_else(|| "none".to_owned(), |n| n.to_string())
}

/// Writes command output to stdout; a reader that went away (`| head`) is
/// not an error.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
