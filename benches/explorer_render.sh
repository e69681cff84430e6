#!/usr/bin/env bash
# Server time of the explorer's pages (the `Server-Timing: render;dur=`
# each page carries), on the api_load bench's store: `instancemap serve`
# (release) on it, then, one request at a time from one client:
# - the first card after the start (nothing in the cache but what `serve`
#   warmed), then a card for each of N accounts sampled over the hosts;
# - the glance (/), the instance list, the largest instance's page and
#   /flows, a few times each.
# Prints p50, p95, p99 and max per page, in ms.
#
#   benches/explorer_render.sh [DB] [N]
# DB defaults to /var/tmp/apiload-1m (built by the api_load bench with
# INSTANCEMAP_BENCH_ACCOUNTS=1000000 INSTANCEMAP_BENCH_DB=DB when missing);
# N defaults to 2,000.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/instancemap-target}"
db="${1:-/var/tmp/apiload-1m}"
n="${2:-2000}"
scripts/setup.sh
cargo build --quiet --release --bin instancemap
if [ ! -d "$db" ]; then
    echo "explorer_render: building the 1M-account store in $db (api_load bench)" >&2
    INSTANCEMAP_BENCH_ACCOUNTS=1000000 INSTANCEMAP_BENCH_DB="$db" INSTANCEMAP_BENCH_SECONDS=1 \
        INSTANCEMAP_BENCH_CONNECTIONS=1 cargo bench --quiet --bench api_load >/dev/null
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp)"
RUST_LOG=warn "$CARGO_TARGET_DIR/release/instancemap" serve --db "$db" --listen "127.0.0.1:$port" --rate-limit 0 \
    >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
python3 - "$port" "$n" <<'PY'
import http.client, json, random, sys, time, urllib.parse
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(600):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60); c.request("GET", "/healthz"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.1)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def get(path):
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    st = r.getheader("server-timing") or ""
    dur = float(st.split("dur=")[1]) if "dur=" in st else None
    return r.status, body, dur
def api(m, **q):
    s, b, _ = get(f"/xrpc/dev.instancemap.{m}?{urllib.parse.urlencode(q)}")
    return json.loads(b)
def report(name, ds):
    ds = sorted(ds)
    pick = lambda p: ds[min(len(ds) - 1, int(p * len(ds)))]
    print(f"{name:<28} n={len(ds):<6} p50 {pick(0.5):7.2f}  p95 {pick(0.95):7.2f}  p99 {pick(0.99):7.2f}  max {ds[-1]:7.2f} ms")
# accounts sampled over the hosts: members of the largest instances and of the long tail
insts = api("listInstances", limit=1000)["instances"]
random.seed(1)
dids = []
for i in insts[:5] + random.sample(insts, min(40, len(insts))):
    dids += [m["did"] for m in api("listMembers", id=i["id"], limit=100)["members"]]
random.shuffle(dids)
dids = dids[:n]
s, _, first = get("/?" + urllib.parse.urlencode({"q": dids[0]}))
print(f"first card after start: {first:.2f} ms (status {s})")
cards = []
for d in dids:
    s, _, t = get("/?" + urllib.parse.urlencode({"q": d}))
    assert s == 200, (d, s)
    cards.append(t)
report("card (/?q=DID)", cards)
for name, path in [("glance (/)", "/"), ("instances", "/instances"), (f"instance {insts[0]['name']}", f"/instance/{insts[0]['id']}"),
                   ("flows (last 365 days)", "/flows")]:
    ts = []
    for _ in range(20):
        s, _, t = get(path)
        assert s == 200, (path, s)
        ts.append(t)
    report(name, ts)
PY
