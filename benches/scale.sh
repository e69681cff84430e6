#!/usr/bin/env bash
# The whole network on one node (benches/README.md, "Scale"): a synthetic PLC
# export of DIDS accounts over HOSTS hosts, network-shaped
# (examples/synth_plc.rs), then each step a user runs, timed with its peak
# RSS and the database's size after it:
#   1. backfill-plc --file   (the bulk load, then the map built once)
#   2. recluster             (a second full recompute: nothing changed)
#   3. export --format parquet
#   4. serve + lookups by random DID (the api_load client, closed loop)
#
# Usage: benches/scale.sh
# Env:   DIDS (default 20000000), HOSTS (default 30000),
#        SCALE_DIR (default /var/tmp/instancemap-scale; the export is kept
#        there and reused, the database is rebuilt), CARGO_TARGET_DIR.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
dids="${DIDS:-20000000}"
hosts="${HOSTS:-30000}"
dir="${SCALE_DIR:-/var/tmp/instancemap-scale}"
target="${CARGO_TARGET_DIR:-$repo/target}"
log() { echo "scale: $*" >&2; }
mkdir -p "$dir"
cd "$repo"
cargo build --release --bin instancemap --example synth_plc -q
cargo bench --bench api_load --no-run -q 2>/dev/null
load="$(ls -t "$target"/release/deps/api_load-* | grep -v '\.d$' | head -n 1)"
bin="$target/release/instancemap"

# uncompressed, as the directory's export pages arrive (a .zst name would
# be read through zstd)
export_file="$dir/export-$dids-$hosts.jsonl"
if [ ! -s "$export_file" ]; then
    log "writing $export_file"
    "$target/release/examples/synth_plc" "$dids" "$hosts" "$export_file.tmp"
    mv "$export_file.tmp" "$export_file"
fi
rm -rf "$dir/db" "$dir/parquet"

echo "scale: $dids accounts over $hosts hosts; $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%FT%TZ)"
echo "export: $(du -h "$export_file" | cut -f1), $(wc -l <"$export_file") lines"
printf '%-28s %10s %12s %10s\n' step "wall s" "peak RSS MB" "db GB"
step() { # name command...
    local name="$1"; shift
    /usr/bin/time -f '%e %M' -o "$dir/time.txt" "$@" >"$dir/$name.out" 2>"$dir/$name.err" \
        || { log "$name failed:"; tail -n 5 "$dir/$name.err" >&2; exit 1; }
    read -r wall rss <"$dir/time.txt"
    printf '%-28s %10.1f %12.0f %10.2f\n' "$name" "$wall" "$((rss / 1024))" \
        "$(du -sb "$dir/db" | awk '{print $1 / 1e9}')"
}
RUST_LOG=warn step backfill-plc "$bin" backfill-plc --db "$dir/db" --file "$export_file"
RUST_LOG=warn step recluster "$bin" recluster --db "$dir/db"
RUST_LOG=warn step export-parquet "$bin" export --db "$dir/db" --format parquet --out "$dir/parquet"
grep -h "rows\|map:" "$dir/backfill-plc.err" "$dir/export-parquet.err" | sed 's/^/  /'

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn "$bin" serve --db "$dir/db" --listen "127.0.0.1:$port" --rate-limit 0 >"$dir/serve.log" 2>&1 &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
INSTANCEMAP_BENCH_TARGET="127.0.0.1:$port" INSTANCEMAP_BENCH_ACCOUNTS="$dids" INSTANCEMAP_BENCH_CONNECTIONS=8 \
    INSTANCEMAP_BENCH_SECONDS=10 "$load" --bench
echo "serve peak RSS: $(awk '/VmHWM/ {print $2 / 1024 " MB"}' "/proc/$serve/status")"
