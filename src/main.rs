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
    let code = match rt.block_on(instancemap::cli::command(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The command is done and has flushed what it wrote. The runtime's
    // threads get a moment to end; then the process ends without running
    // C++ static destructors: a detached thread still holding the store (a
    // signature-check worker) would otherwise have RocksDB's background
    // threads lock mutexes those destructors had destroyed ("pthread lock:
    // Invalid argument" and an abort after a command that succeeded, seen
    // once in CI after `replay`). The store is crash-safe by design, so not
    // closing it at exit loses nothing.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let value = (0..=255u8).find(|c| ExitCode::from(*c) == code).map_or(1, i32::from);
    // SAFETY: _exit only ends the process; nothing runs after it.
    unsafe { libc::_exit(value) }
}
