//! The `instancemap` binary: parse the command line, start logging, run the
//! command ([`instancemap::cli::command`]), map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use instancemap::config::Cli;

/// mimalloc rather than glibc's malloc: an API lookup allocates and frees
/// a few hundred small objects, and glibc's allocator was a fifth of the
/// lookup's CPU (benches/README.md, "Query API load").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(instancemap::cli::command(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
