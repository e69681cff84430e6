//! Rewrites every file of a store, so the whole of it takes this version's
//! table options (the benches' stores are built once and kept; after a
//! change of the options, `benches/README.md` measures them rewritten).
//!
//! ```text
//! cargo run --release --example compact -- DB
//! ```

fn main() -> std::process::ExitCode {
    let Some(db) = std::env::args().nth(1) else {
        eprintln!("usage: compact DB");
        return std::process::ExitCode::from(2);
    };
    let store = match instancemap::store::Store::open(std::path::Path::new(&db)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("compact: opening {db}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let t = std::time::Instant::now();
    store.rewrite_all();
    eprintln!("compact: {db} rewritten in {:.1} s", t.elapsed().as_secs_f64());
    std::process::ExitCode::SUCCESS
}
